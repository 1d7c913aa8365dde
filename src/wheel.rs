//! Pure timing wheel (placeholder shape; replaced by the hierarchical wheel).
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

#[derive(Debug)]
pub struct Wheel<K> {
    by_time: BTreeMap<(u64, u64), K>,
    by_key: HashMap<K, (u64, u64)>,
    seq: u64,
}
impl<K: Hash + Eq + Clone> Wheel<K> {
    pub fn new(_now: u64) -> Self {
        Self {
            by_time: BTreeMap::new(),
            by_key: HashMap::new(),
            seq: 0,
        }
    }
    pub fn insert(&mut self, at: u64, key: K) {
        self.cancel(&key);
        self.seq += 1;
        self.by_time.insert((at, self.seq), key.clone());
        self.by_key.insert(key, (at, self.seq));
    }
    pub fn cancel(&mut self, key: &K) -> bool {
        match self.by_key.remove(key) {
            Some(k) => self.by_time.remove(&k).is_some(),
            None => false,
        }
    }
    pub fn deadline(&self, key: &K) -> Option<u64> {
        self.by_key.get(key).map(|k| k.0)
    }
    pub fn contains(&self, key: &K) -> bool {
        self.by_key.contains_key(key)
    }
    pub fn next_expiry(&self) -> Option<u64> {
        self.by_time.keys().next().map(|k| k.0)
    }
    pub fn expire(&mut self, now: u64, out: &mut Vec<(u64, K)>) {
        while let Some(entry) = self.by_time.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ((at, _), key) = entry.remove_entry();
            self.by_key.remove(&key);
            out.push((at, key));
        }
    }
    pub fn len(&self) -> usize {
        self.by_key.len()
    }
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}
