//! Hierarchical hashed timing wheel holding every deadline of the server.
//!
//! Layer: pure data structure. It imports no tokio, reads no clock and does no I/O. Time is a
//! `u64` count of milliseconds on a monotonic scale chosen by the caller, handed in as an
//! argument; one tick is one millisecond.
//!
//! # Layout
//!
//! * Six levels of 64 slots. A slot of level `L` spans `64^L` ms, so level 0 holds the next
//!   64 ms one millisecond per slot and level 5 reaches `64^6` ms (about 795 days) ahead.
//!   Deadlines further out than that wait in an overflow list.
//! * A timer sits on the level given by the highest bit in which its deadline differs from the
//!   wheel's current time (as in tokio's and Linux's wheels). As time reaches a slot of a higher
//!   level, the slot is cascaded: its timers move down to lower levels. A timer is thus moved at
//!   most once per level.
//! * Timers live in a slab (`Vec` plus free list) and are chained into per-slot intrusive
//!   doubly-linked lists by index, so a timer is unlinked in O(1). A `HashMap` from key to slab
//!   index makes `cancel` and reset O(1).
//! * Every level has a 64-bit occupancy bitmap; the next non-empty slot is a `trailing_zeros`.
//! * Every list keeps a lower bound of the deadlines in it, which makes [`Wheel::next_expiry`]
//!   exact in the common case without scanning a slot.
//! * A deadline at or before the wheel's current time goes to a "ready" list that the next
//!   [`Wheel::expire`] drains first.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};

/// Slots per level, as a power of two.
const SLOT_BITS: u32 = 6;
/// Slots per level.
const SLOTS: usize = 1 << SLOT_BITS;
/// Number of levels; deadlines further than `64^LEVELS` ms out go to the overflow list.
const LEVELS: usize = 6;
/// Bits of time covered by all the levels together.
const WHEEL_BITS: u32 = SLOT_BITS * LEVELS as u32;
/// Bits of a slab index; the 3 bits above them in [`Link`] hold the entry's [`Place`].
const INDEX_BITS: u32 = 29;
/// "No entry" in the index-linked lists; also the mask of an index.
const NIL: u32 = (1 << INDEX_BITS) - 1;

/// Which list an entry is linked into (3 bits).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Place {
    L0 = 0,
    L1,
    L2,
    L3,
    L4,
    L5,
    /// Deadline already reached when armed: due at the next `expire`.
    Ready = 6,
    /// Deadline beyond the range of the top level.
    Overflow = 7,
}

const LEVEL_PLACES: [Place; LEVELS] = [
    Place::L0,
    Place::L1,
    Place::L2,
    Place::L3,
    Place::L4,
    Place::L5,
];

impl Place {
    fn level(self) -> Option<usize> {
        match self {
            Place::L0 => Some(0),
            Place::L1 => Some(1),
            Place::L2 => Some(2),
            Place::L3 => Some(3),
            Place::L4 => Some(4),
            Place::L5 => Some(5),
            Place::Ready | Place::Overflow => None,
        }
    }

    fn from_bits(bits: u32) -> Place {
        match bits {
            6 => Place::Ready,
            7 => Place::Overflow,
            level => LEVEL_PLACES
                .get(level as usize)
                .copied()
                .unwrap_or(Place::Overflow),
        }
    }

    fn bits(self) -> u32 {
        self as u32
    }

    /// Where a deadline `at` belongs when the wheel's current time is `now`.
    fn for_deadline(at: u64, now: u64) -> Place {
        if at < now {
            return Place::Ready;
        }
        // Highest bit in which `at` differs from `now` (0 when equal).
        let msb = 63 - ((at ^ now) | 1).leading_zeros();
        let level = (msb / SLOT_BITS) as usize;
        LEVEL_PLACES.get(level).copied().unwrap_or(Place::Overflow)
    }
}

/// Slot index of deadline `at` on `level`.
fn slot_of(at: u64, level: usize) -> usize {
    ((at >> (SLOT_BITS as usize * level)) & (SLOTS as u64 - 1)) as usize
}

/// One slab entry's scheduling state, 16 bytes: four to a cache line. Keys are kept in a
/// separate vector so that resets, which touch only this part, walk less memory. A free entry's
/// `next` chains the free list and its other fields mean nothing.
#[derive(Clone, Copy, Debug)]
struct Link {
    at: u64,
    next: u32,
    /// Previous entry's index in the low [`INDEX_BITS`], [`Place`] above.
    prev_place: u32,
}

impl Link {
    fn new(at: u64, next: u32, prev: u32, place: Place) -> Link {
        Link {
            at,
            next,
            prev_place: prev | (place.bits() << INDEX_BITS),
        }
    }
    fn prev(&self) -> u32 {
        self.prev_place & NIL
    }
    fn set_prev(&mut self, prev: u32) {
        self.prev_place = (self.prev_place & !NIL) | prev;
    }
    fn place(&self) -> Place {
        Place::from_bits(self.prev_place >> INDEX_BITS)
    }
}

/// Head of one intrusive list.
#[derive(Clone, Copy, Debug)]
struct Head {
    first: u32,
    /// A lower bound of the deadlines in the list (exact unless its earliest entry left);
    /// `u64::MAX` when the list is empty.
    min: u64,
}

const EMPTY: Head = Head {
    first: NIL,
    min: u64::MAX,
};

/// Everything but the key index: the slab and the lists. Split from [`Wheel`] so the index can
/// be borrowed at the same time.
struct Lists<K> {
    links: Vec<Link>,
    keys: Vec<Option<K>>,
    free: u32,
    heads: [[Head; SLOTS]; LEVELS],
    occupied: [u64; LEVELS],
    ready: Head,
    overflow: Head,
    /// The wheel's current time.
    now: u64,
}

impl<K> Lists<K> {
    fn new(now: u64) -> Self {
        Lists {
            links: Vec::new(),
            keys: Vec::new(),
            free: NIL,
            heads: [[EMPTY; SLOTS]; LEVELS],
            occupied: [0; LEVELS],
            ready: EMPTY,
            overflow: EMPTY,
            now,
        }
    }

    fn head_mut(&mut self, place: Place, at: u64) -> &mut Head {
        match place.level() {
            Some(level) => &mut self.heads[level][slot_of(at, level)],
            None if place == Place::Ready => &mut self.ready,
            None => &mut self.overflow,
        }
    }

    /// Takes a free slab slot (or a new one) for `key` due at `at`; the entry is not linked yet.
    ///
    /// # Panics
    /// When more than `2^29 - 1` (536 million) timers are armed at once, which would take over
    /// 30 GiB.
    fn alloc(&mut self, key: K, at: u64) -> u32 {
        let link = Link::new(at, NIL, NIL, Place::Ready);
        if self.free != NIL {
            let idx = self.free;
            let i = idx as usize;
            self.free = self.links[i].next;
            self.links[i] = link;
            self.keys[i] = Some(key);
            idx
        } else {
            let idx = match u32::try_from(self.links.len()) {
                Ok(idx) if idx < NIL => idx,
                _ => panic!("timing wheel: more than 2^29 - 1 timers armed"),
            };
            self.links.push(link);
            self.keys.push(Some(key));
            idx
        }
    }

    /// Returns an unlinked entry's slot to the free list, giving back its deadline and key.
    fn release(&mut self, idx: u32) -> (u64, Option<K>) {
        let i = idx as usize;
        let at = self.links[i].at;
        self.links[i] = Link::new(0, self.free, NIL, Place::Ready);
        self.free = idx;
        (at, self.keys[i].take())
    }

    /// Links entry `idx` into the list its deadline belongs to at the current time.
    fn link(&mut self, idx: u32) {
        let at = self.links[idx as usize].at;
        let place = Place::for_deadline(at, self.now);
        let head = self.head_mut(place, at);
        let old_first = head.first;
        head.first = idx;
        head.min = head.min.min(at);
        self.links[idx as usize] = Link::new(at, old_first, NIL, place);
        if old_first != NIL {
            self.links[old_first as usize].set_prev(idx);
        } else if let Some(level) = place.level() {
            self.occupied[level] |= 1 << slot_of(at, level);
        }
    }

    /// Removes entry `idx` from the list it is in.
    fn unlink(&mut self, idx: u32) {
        let link = self.links[idx as usize];
        let (at, prev, next, place) = (link.at, link.prev(), link.next, link.place());
        if next != NIL {
            self.links[next as usize].set_prev(prev);
        }
        if prev != NIL {
            self.links[prev as usize].next = next;
            return;
        }
        let head = self.head_mut(place, at);
        head.first = next;
        if next == NIL {
            head.min = u64::MAX;
            if let Some(level) = place.level() {
                self.occupied[level] &= !(1 << slot_of(at, level));
            }
        }
    }

    /// Moves armed entry `idx` to deadline `at`.
    fn reset(&mut self, idx: u32, at: u64) {
        let link = self.links[idx as usize];
        let place = Place::for_deadline(at, self.now);
        let same_list = place == link.place()
            && place
                .level()
                .is_none_or(|level| slot_of(at, level) == slot_of(link.at, level));
        if same_list {
            self.links[idx as usize].at = at;
            let head = self.head_mut(place, at);
            head.min = head.min.min(at);
        } else {
            self.unlink(idx);
            self.links[idx as usize].at = at;
            self.link(idx);
        }
    }

    /// The earliest non-empty list of the levels or the overflow, with the time at which it
    /// must be processed. Lower levels always come before higher ones, and all levels before the
    /// overflow: a level-`L` timer shares every bit above level `L` with the current time.
    fn next_list(&self) -> Option<(Place, usize, u64)> {
        for (level, &bits) in self.occupied.iter().enumerate() {
            if bits != 0 {
                let slot = bits.trailing_zeros() as usize;
                let shift = SLOT_BITS as usize * level;
                let span_mask = (1u64 << (shift + SLOT_BITS as usize)) - 1;
                let start = (self.now & !span_mask) | ((slot as u64) << shift);
                return Some((LEVEL_PLACES[level], slot, start));
            }
        }
        if self.overflow.first != NIL {
            let block = (1u64 << WHEEL_BITS) - 1;
            return Some((Place::Overflow, 0, self.overflow.min & !block));
        }
        None
    }

    fn next_expiry(&self) -> Option<u64> {
        if self.ready.first != NIL {
            return Some(self.ready.min);
        }
        self.next_list()
            .map(|(place, slot, _)| match place.level() {
                Some(level) => self.heads[level][slot].min,
                None => self.overflow.min,
            })
    }

    /// Detaches a whole list, returning its first entry.
    fn take_list(&mut self, place: Place, slot: usize) -> u32 {
        let head = match place.level() {
            Some(level) => {
                self.occupied[level] &= !(1 << slot);
                &mut self.heads[level][slot]
            }
            None if place == Place::Ready => &mut self.ready,
            None => &mut self.overflow,
        };
        std::mem::replace(head, EMPTY).first
    }

    /// Releases every entry of a detached list into `out`.
    fn drain_due(&mut self, mut cur: u32, out: &mut Vec<(u64, K)>) {
        while cur != NIL {
            let next = self.links[cur as usize].next;
            if let (at, Some(key)) = self.release(cur) {
                out.push((at, key));
            }
            cur = next;
        }
    }

    /// Advances to `now` and pushes every entry with a deadline `<= now`, in deadline order.
    fn expire(&mut self, now: u64, out: &mut Vec<(u64, K)>) {
        if now < self.now {
            return;
        }
        let first = out.len();
        if self.ready.first != NIL {
            let list = self.take_list(Place::Ready, 0);
            self.drain_due(list, out);
            // Only the ready list can be out of order: everything after it is pushed one
            // level-0 slot (one exact deadline) at a time, in time order.
            out[first..].sort_by_key(|&(at, _)| at);
        }
        while let Some((place, slot, start)) = self.next_list() {
            if start > now {
                break;
            }
            self.now = start;
            let mut cur = self.take_list(place, slot);
            if place == Place::L0 {
                self.drain_due(cur, out);
                continue;
            }
            while cur != NIL {
                let next = self.links[cur as usize].next;
                self.link(cur);
                cur = next;
            }
        }
        self.now = now;
    }
}

/// Multiplicative hasher in the style of rustc's FxHasher: a few cycles per word, against
/// SipHash's few dozen. Not resistant to collision flooding; see [`Wheel`].
#[derive(Clone, Copy, Default, Debug)]
pub struct FxHasher {
    hash: u64,
}

const FX_SEED: u64 = 0xf135_7aea_2e62_a9c5;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = self.hash.wrapping_add(word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
        self.add(bytes.len() as u64);
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_u128(&mut self, i: u128) {
        self.add(i as u64);
        self.add((i >> 64) as u64);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        // The multiply leaves its best-mixed bits at the top; hashbrown takes the bucket from
        // the low bits, so rotate them down.
        self.hash.rotate_left(26)
    }
}

/// [`BuildHasher`] for [`FxHasher`].
#[derive(Clone, Copy, Default, Debug)]
pub struct FxBuildHasher;

impl BuildHasher for FxBuildHasher {
    type Hasher = FxHasher;
    #[inline]
    fn build_hasher(&self) -> FxHasher {
        FxHasher::default()
    }
}

/// [`BuildHasher`] for SipHash-1-3 with secret keys: for keys an outsider can choose (SIP
/// contact strings), so colliding keys cannot be computed from outside. The keys are handed
/// in (drawn from the caller's seed); this module reads no randomness itself.
#[derive(Clone, Copy, Debug)]
pub struct KeyedBuildHasher {
    k0: u64,
    k1: u64,
}

impl KeyedBuildHasher {
    pub fn new(k0: u64, k1: u64) -> KeyedBuildHasher {
        KeyedBuildHasher { k0, k1 }
    }
}

impl BuildHasher for KeyedBuildHasher {
    type Hasher = siphasher::sip::SipHasher13;
    #[inline]
    fn build_hasher(&self) -> Self::Hasher {
        siphasher::sip::SipHasher13::new_with_keys(self.k0, self.k1)
    }
}

/// A hierarchical hashed timing wheel of timers named by keys of type `K`.
///
/// At most one timer per key: arming an armed key moves it. All operations but
/// [`expire`](Self::expire) are O(1); `expire` costs O(due timers + slots crossed), each timer
/// being cascaded at most once per level over its life.
///
/// Keys are hashed with [`FxHasher`] by default, which is fast but predictable: for keys an
/// outsider chooses freely (user-supplied strings), build the wheel with
/// `std::collections::hash_map::RandomState` through [`with_hasher`](Self::with_hasher).
pub struct Wheel<K, S = FxBuildHasher> {
    index: HashMap<K, u32, S>,
    lists: Lists<K>,
}

impl<K: Hash + Eq + Clone> Wheel<K> {
    /// An empty wheel whose current time is `now`.
    pub fn new(now: u64) -> Self {
        Self::with_hasher(now, FxBuildHasher)
    }
}

impl<K: Hash + Eq + Clone, S: BuildHasher> Wheel<K, S> {
    /// An empty wheel whose current time is `now`, hashing keys with `hasher`.
    pub fn with_hasher(now: u64, hasher: S) -> Self {
        Wheel {
            index: HashMap::with_hasher(hasher),
            lists: Lists::new(now),
        }
    }

    /// Arms the timer `key` to fire at `at`. If `key` is already armed, moves it to `at`.
    /// A deadline at or before the wheel's current time fires at the next [`expire`](Self::expire).
    pub fn insert(&mut self, at: u64, key: K) {
        if let Some(&idx) = self.index.get(&key) {
            self.lists.reset(idx, at);
            return;
        }
        let idx = self.lists.alloc(key.clone(), at);
        self.lists.link(idx);
        self.index.insert(key, idx);
    }

    /// Disarms `key`. Returns whether it was armed.
    pub fn cancel(&mut self, key: &K) -> bool {
        match self.index.remove(key) {
            Some(idx) => {
                self.lists.unlink(idx);
                self.lists.release(idx);
                true
            }
            None => false,
        }
    }

    /// The deadline `key` is armed for, if it is armed.
    pub fn deadline(&self, key: &K) -> Option<u64> {
        let idx = *self.index.get(key)?;
        self.lists.links.get(idx as usize).map(|link| link.at)
    }

    /// Whether `key` is armed.
    pub fn contains(&self, key: &K) -> bool {
        self.index.contains_key(key)
    }

    /// When [`expire`](Self::expire) must next be called: never later than the earliest armed
    /// deadline, and equal to it unless the earliest timer of a coarse (level > 0) slot has since
    /// been cancelled or moved, in which case it is that timer's old deadline; the `expire` at that
    /// time makes the hint exact again. Right after `expire(now)` it is later than `now`, so a
    /// driver that sleeps until the hint never spins. `None` when no timer is armed.
    pub fn next_expiry(&self) -> Option<u64> {
        self.lists.next_expiry()
    }

    /// Advances the wheel's time to `now` and appends to `out` every timer whose deadline is
    /// `<= now`, as `(deadline, key)`, in deadline order (timers with equal deadlines in an
    /// unspecified order). Those timers are disarmed. A `now` earlier than the wheel's current
    /// time does nothing.
    pub fn expire(&mut self, now: u64, out: &mut Vec<(u64, K)>) {
        let first = out.len();
        self.lists.expire(now, out);
        for (_, key) in &out[first..] {
            self.index.remove(key);
        }
    }

    /// Number of armed timers.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no timer is armed.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The wheel's current time: the latest `now` given to [`new`](Self::new) or
    /// [`expire`](Self::expire).
    pub fn now(&self) -> u64 {
        self.lists.now
    }

    /// Estimated heap bytes held, from capacities (slab, keys, hash table with its control
    /// bytes); excludes anything the keys themselves own.
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        let table_buckets = if self.index.capacity() == 0 {
            0
        } else {
            // hashbrown keeps at most 7/8 of a power-of-two bucket count full.
            (self.index.capacity() * 8 / 7).next_power_of_two()
        };
        self.lists.links.capacity() * size_of::<Link>()
            + self.lists.keys.capacity() * size_of::<Option<K>>()
            + table_buckets * (size_of::<(K, u32)>() + 1)
    }
}

impl<K: Hash + Eq + Clone> Default for Wheel<K> {
    fn default() -> Self {
        Self::new(0)
    }
}

impl<K, S> fmt::Debug for Wheel<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wheel")
            .field("now", &self.lists.now)
            .field("len", &self.index.len())
            .field("next_expiry", &self.lists.next_expiry())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, HashMap};

    fn drain(wheel: &mut Wheel<u64>, now: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        wheel.expire(now, &mut out);
        out
    }

    /// A small deterministic generator for the unit tests.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn link_entry_stays_small() {
        assert_eq!(std::mem::size_of::<Link>(), 16);
        for place in [LEVEL_PLACES.as_slice(), &[Place::Ready, Place::Overflow]].concat() {
            let mut link = Link::new(7, 9, NIL, place);
            assert_eq!((link.place(), link.prev(), link.next), (place, NIL, 9));
            link.set_prev(NIL - 1);
            assert_eq!((link.place(), link.prev()), (place, NIL - 1));
        }
    }

    #[test]
    fn never_fires_before_its_deadline() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut wheel = Wheel::new(1_000);
        for key in 0..2_000 {
            wheel.insert(1_000 + 1 + rng.next() % 300_000, key);
        }
        let mut now = 1_000;
        while !wheel.is_empty() {
            now += 1 + rng.next() % 97;
            for (at, key) in drain(&mut wheel, now) {
                assert!(at <= now, "key {key} due at {at} fired at {now}");
            }
        }
    }

    #[test]
    fn fires_on_the_tick_of_its_deadline_when_polled_every_tick() {
        let mut rng = XorShift(42);
        let mut wheel = Wheel::new(0);
        let mut deadlines = HashMap::new();
        for key in 0..5_000u64 {
            let at = 1 + rng.next() % 20_000;
            wheel.insert(at, key);
            deadlines.insert(key, at);
        }
        for now in 1..=20_000 {
            for (at, key) in drain(&mut wheel, now) {
                assert_eq!(at, deadlines[&key]);
                // Not even one tick late when expire runs every tick.
                assert_eq!(at, now, "key {key} due at {at} fired at {now}");
            }
        }
        assert!(wheel.is_empty());
    }

    #[test]
    fn fires_at_most_one_tick_late_when_polled_at_the_hint() {
        let mut rng = XorShift(7);
        let mut wheel = Wheel::new(0);
        for key in 0..3_000u64 {
            wheel.insert(rng.next() % 5_000_000, key);
        }
        // A driver that sleeps until next_expiry() and then calls expire.
        while let Some(hint) = wheel.next_expiry() {
            let now = hint.max(wheel.now());
            for (at, _) in drain(&mut wheel, now) {
                assert!(at <= now && now <= at + 1, "due at {at}, fired at {now}");
            }
        }
    }

    #[test]
    fn reset_moves_a_timer_later_and_earlier() {
        let mut wheel = Wheel::new(0);
        wheel.insert(100, 1u64);
        wheel.insert(5_000, 1);
        assert_eq!(wheel.len(), 1);
        assert_eq!(wheel.deadline(&1), Some(5_000));
        assert!(drain(&mut wheel, 4_999).is_empty());
        wheel.insert(6_000, 1);
        assert!(drain(&mut wheel, 5_999).is_empty());
        wheel.insert(6_010, 1);
        wheel.insert(6_005, 1);
        assert_eq!(drain(&mut wheel, 6_004), vec![]);
        assert_eq!(drain(&mut wheel, 6_005), vec![(6_005, 1)]);
        assert!(wheel.is_empty());
    }

    #[test]
    fn reset_to_the_past_fires_at_next_expire() {
        let mut wheel = Wheel::new(1_000);
        wheel.insert(90_000, 3u64);
        wheel.insert(10, 3);
        assert_eq!(wheel.next_expiry(), Some(10));
        assert_eq!(drain(&mut wheel, 1_000), vec![(10, 3)]);
    }

    #[test]
    fn insert_at_current_time_fires_at_next_expire() {
        let mut wheel = Wheel::new(500);
        wheel.insert(500, 1u64);
        wheel.insert(499, 2);
        assert_eq!(wheel.next_expiry(), Some(499));
        assert_eq!(drain(&mut wheel, 500), vec![(499, 2), (500, 1)]);
    }

    #[test]
    fn cancel_disarms_and_reports_whether_armed() {
        let mut wheel = Wheel::new(0);
        wheel.insert(10, 1u64);
        wheel.insert(20, 2);
        assert!(wheel.cancel(&1));
        assert!(!wheel.cancel(&1));
        assert!(!wheel.cancel(&99));
        assert!(!wheel.contains(&1));
        assert!(wheel.contains(&2));
        assert_eq!(wheel.deadline(&1), None);
        assert_eq!(wheel.len(), 1);
        assert_eq!(drain(&mut wheel, 100), vec![(20, 2)]);
        assert!(!wheel.cancel(&2));
        assert_eq!(wheel.next_expiry(), None);
    }

    #[test]
    fn cancelled_slots_are_reused() {
        let mut wheel = Wheel::new(0);
        for round in 0..10u64 {
            for key in 0..100u64 {
                wheel.insert(1_000 + key, key + round * 100);
            }
            for key in 0..100u64 {
                assert!(wheel.cancel(&(key + round * 100)));
            }
        }
        assert!(wheel.lists.links.len() <= 100);
        assert!(wheel.is_empty());
        assert_eq!(wheel.next_expiry(), None);
    }

    #[test]
    fn far_future_timers_beyond_the_top_level_fire_exactly() {
        let top = 1u64 << WHEEL_BITS;
        let mut wheel = Wheel::new(123);
        let deadlines = [top + 5, 3 * top + 17, top * 1000, u64::MAX - 1, u64::MAX];
        for (key, &at) in deadlines.iter().enumerate() {
            wheel.insert(at, key as u64);
        }
        for (key, &at) in deadlines.iter().enumerate() {
            assert_eq!(wheel.next_expiry(), Some(at));
            assert!(drain(&mut wheel, at - 1).is_empty());
            assert_eq!(drain(&mut wheel, at), vec![(at, key as u64)]);
        }
        assert!(wheel.is_empty());
        // Time is now at the very end of the scale and everything still works.
        wheel.insert(u64::MAX, 9);
        assert_eq!(drain(&mut wheel, u64::MAX), vec![(u64::MAX, 9)]);
    }

    #[test]
    fn overflow_timer_cancelled_leaves_a_harmless_early_hint() {
        let top = 1u64 << WHEEL_BITS;
        let mut wheel = Wheel::new(0);
        wheel.insert(2 * top, 1u64);
        wheel.insert(5 * top, 2);
        assert!(wheel.cancel(&1));
        let hint = wheel.next_expiry().unwrap();
        assert!(hint <= 5 * top);
        assert!(drain(&mut wheel, hint).is_empty());
        assert_eq!(wheel.next_expiry(), Some(5 * top));
        assert_eq!(drain(&mut wheel, 5 * top), vec![(5 * top, 2)]);
    }

    #[test]
    fn expire_with_now_going_backwards_does_nothing() {
        let mut wheel = Wheel::new(10_000);
        wheel.insert(9_000, 1u64);
        wheel.insert(10_500, 2);
        let mut out = Vec::new();
        wheel.expire(9_999, &mut out);
        wheel.expire(0, &mut out);
        assert!(out.is_empty());
        assert_eq!(wheel.now(), 10_000);
        assert_eq!(wheel.len(), 2);
        assert_eq!(drain(&mut wheel, 10_600), vec![(9_000, 1), (10_500, 2)]);
        assert!(drain(&mut wheel, 5).is_empty());
        assert_eq!(wheel.now(), 10_600);
    }

    #[test]
    fn timers_with_equal_deadlines_fire_together() {
        let mut wheel = Wheel::new(0);
        for key in 0..50u64 {
            wheel.insert(70_000, key);
        }
        wheel.insert(69_999, 100);
        wheel.insert(70_001, 101);
        let out = drain(&mut wheel, 70_000);
        assert_eq!(out.len(), 51);
        assert_eq!(out[0], (69_999, 100));
        let mut keys: Vec<u64> = out[1..]
            .iter()
            .map(|&(at, key)| {
                assert_eq!(at, 70_000);
                key
            })
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, (0..50).collect::<Vec<_>>());
        assert_eq!(wheel.next_expiry(), Some(70_001));
    }

    #[test]
    fn ten_day_jump_delivers_everything_in_deadline_order() {
        const TEN_DAYS: u64 = 10 * 24 * 3_600 * 1_000;
        let mut rng = XorShift(0xdead_beef);
        let start = 1_700_000_000_000;
        let mut wheel = Wheel::new(start);
        for key in 0..20_000u64 {
            wheel.insert(start + rng.next() % (2 * TEN_DAYS), key);
        }
        let out = drain(&mut wheel, start + TEN_DAYS);
        assert!(out.windows(2).all(|w| w[0].0 <= w[1].0));
        assert!(out.iter().all(|&(at, _)| at <= start + TEN_DAYS));
        let rest = drain(&mut wheel, u64::MAX);
        assert!(rest.iter().all(|&(at, _)| at > start + TEN_DAYS));
        assert!(rest.windows(2).all(|w| w[0].0 <= w[1].0));
        assert_eq!(out.len() + rest.len(), 20_000);
        assert!(wheel.is_empty());
    }

    #[test]
    fn next_expiry_is_exact_after_expire_and_later_than_now() {
        let mut wheel = Wheel::new(0);
        wheel.insert(300_000, 1u64);
        wheel.insert(300_007, 2);
        assert_eq!(wheel.next_expiry(), Some(300_000));
        wheel.cancel(&1);
        // The cancelled timer may leave an early hint; it is never later than the truth.
        let hint = wheel.next_expiry().unwrap();
        assert!(hint <= 300_007);
        assert!(drain(&mut wheel, hint).is_empty());
        assert_eq!(wheel.next_expiry(), Some(300_007));
    }

    #[test]
    fn works_with_owned_string_keys() {
        let mut wheel: Wheel<String> = Wheel::default();
        wheel.insert(5, "alice".to_owned());
        wheel.insert(3, "bob".to_owned());
        assert_eq!(wheel.deadline(&"alice".to_owned()), Some(5));
        let mut out = Vec::new();
        wheel.expire(10, &mut out);
        assert_eq!(out, vec![(3, "bob".to_owned()), (5, "alice".to_owned())]);
        let debug = format!("{wheel:?}");
        assert!(debug.contains("now: 10"), "{debug}");
    }

    // ---- model-based property test -------------------------------------------------------

    /// The obviously-correct reference: deadlines ordered in a BTreeMap.
    #[derive(Default)]
    struct Model {
        by_time: BTreeMap<(u64, u64), u64>,
        by_key: HashMap<u64, (u64, u64)>,
        seq: u64,
        now: u64,
    }

    impl Model {
        fn insert(&mut self, at: u64, key: u64) {
            if let Some(old) = self.by_key.remove(&key) {
                self.by_time.remove(&old);
            }
            self.seq += 1;
            self.by_time.insert((at, self.seq), key);
            self.by_key.insert(key, (at, self.seq));
        }
        fn cancel(&mut self, key: u64) -> bool {
            match self.by_key.remove(&key) {
                Some(slot) => {
                    self.by_time.remove(&slot);
                    true
                }
                None => false,
            }
        }
        fn expire(&mut self, now: u64) -> Vec<(u64, u64)> {
            if now < self.now {
                return Vec::new();
            }
            self.now = now;
            let mut out = Vec::new();
            while let Some(entry) = self.by_time.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                let ((at, _), key) = entry.remove_entry();
                self.by_key.remove(&key);
                out.push((at, key));
            }
            out
        }
        fn earliest(&self) -> Option<u64> {
            self.by_time.keys().next().map(|&(at, _)| at)
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// Arm or reset `key` at `now + delta` (delta may be negative: already due).
        Insert {
            key: u64,
            delta: i64,
        },
        Cancel {
            key: u64,
        },
        /// Advance time by `step` and expire.
        Advance {
            step: u64,
        },
        /// Call expire with a time before the wheel's current time.
        Backwards {
            step: u64,
        },
    }

    fn delta() -> impl Strategy<Value = i64> {
        prop_oneof![
            3 => -100i64..=0,
            10 => 1i64..200,
            10 => 1i64..70_000,
            4 => 1i64..(1 << 30),
            2 => (1i64 << 35)..(1 << 40),
            1 => Just(i64::MAX),
        ]
    }

    fn step() -> impl Strategy<Value = u64> {
        prop_oneof![
            10 => 0u64..3,
            10 => 0u64..100,
            6 => 0u64..10_000,
            3 => 0u64..5_000_000,
            1 => (1u64 << 36)..(1 << 42),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            10 => (0u64..40, delta()).prop_map(|(key, delta)| Op::Insert { key, delta }),
            3 => (0u64..40).prop_map(|key| Op::Cancel { key }),
            6 => step().prop_map(|step| Op::Advance { step }),
            1 => (1u64..1_000).prop_map(|step| Op::Backwards { step }),
        ]
    }

    /// Equal deadlines may come out in any order: compare sorted within equal deadlines.
    fn canonical(mut out: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
        out.sort_unstable();
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn wheel_behaves_like_an_ordered_map(
            start in prop_oneof![Just(0u64), 0u64..(1 << 45)],
            ops in prop::collection::vec(op(), 1..300),
        ) {
            let mut wheel = Wheel::new(start);
            let mut model = Model { now: start, ..Model::default() };
            for op in ops {
                match op {
                    Op::Insert { key, delta } => {
                        let at = model.now.saturating_add_signed(delta);
                        wheel.insert(at, key);
                        model.insert(at, key);
                    }
                    Op::Cancel { key } => {
                        prop_assert_eq!(wheel.cancel(&key), model.cancel(key));
                    }
                    Op::Advance { step } => {
                        let now = model.now.saturating_add(step);
                        let mut out = Vec::new();
                        wheel.expire(now, &mut out);
                        let expected = model.expire(now);
                        // Deadline order, exactly the same timers.
                        prop_assert!(out.windows(2).all(|w| w[0].0 <= w[1].0), "{:?}", out);
                        let times: Vec<u64> = out.iter().map(|e| e.0).collect();
                        let model_times: Vec<u64> = expected.iter().map(|e| e.0).collect();
                        prop_assert_eq!(times, model_times);
                        prop_assert_eq!(canonical(out), canonical(expected));
                        // Right after expire the hint is in the future: a driver never spins.
                        if let Some(hint) = wheel.next_expiry() {
                            prop_assert!(hint > now);
                        }
                    }
                    Op::Backwards { step } => {
                        let mut out = Vec::new();
                        wheel.expire(model.now.saturating_sub(step), &mut out);
                        prop_assert!(out.is_empty() || step > model.now);
                        prop_assert_eq!(canonical(out), canonical(model.expire(model.now.saturating_sub(step))));
                    }
                }
                prop_assert_eq!(wheel.len(), model.by_key.len());
                prop_assert_eq!(wheel.is_empty(), model.by_key.is_empty());
                match (wheel.next_expiry(), model.earliest()) {
                    (None, None) => {}
                    (Some(hint), Some(earliest)) => prop_assert!(hint <= earliest, "hint {} > earliest {}", hint, earliest),
                    (hint, earliest) => prop_assert!(false, "hint {:?} vs earliest {:?}", hint, earliest),
                }
                for key in 0..40 {
                    let expected = model.by_key.get(&key).map(|&(at, _)| at);
                    prop_assert_eq!(wheel.deadline(&key), expected);
                    prop_assert_eq!(wheel.contains(&key), expected.is_some());
                }
            }
        }
    }
}
