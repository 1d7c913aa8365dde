//! Giving back the room of maps that emptied: after a burst (a whole office reconnecting at
//! once) a map keeps the capacity of its largest moment unless it is shrunk, and that memory
//! would stay with the process for its whole life.

use std::collections::HashMap;

/// Halves the room of a map that is at most a quarter full (and not small): each shrink
/// at least halves it, so the cost stays proportional to the removals that made room.
pub fn shrink_map<K: std::hash::Hash + Eq, V, S: std::hash::BuildHasher>(
    map: &mut HashMap<K, V, S>,
) {
    let cap = map.capacity();
    if cap > 64 && map.len() * 4 <= cap {
        map.shrink_to(map.len() * 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_emptied_after_a_burst_gives_back_most_of_its_room() {
        let mut map: HashMap<u32, u32> = (0..10_000).map(|i| (i, i)).collect();
        let peak = map.capacity();
        for i in 100..10_000 {
            map.remove(&i);
            shrink_map(&mut map);
        }
        assert_eq!(map.len(), 100);
        assert!(map.capacity() <= 512, "room kept: {}", map.capacity());
        assert!(map.capacity() * 16 < peak);
    }

    #[test]
    fn a_small_or_well_filled_map_keeps_its_room() {
        let mut small: HashMap<u32, u32> = (0..10).map(|i| (i, i)).collect();
        small.remove(&0);
        let before = small.capacity();
        shrink_map(&mut small);
        assert_eq!(small.capacity(), before);

        let mut full: HashMap<u32, u32> = (0..1_000).map(|i| (i, i)).collect();
        let before = full.capacity();
        full.remove(&0);
        shrink_map(&mut full);
        assert_eq!(full.capacity(), before);
    }
}
