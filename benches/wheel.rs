//! Timer churn: `switchboard::wheel::Wheel` against tokio-util's `DelayQueue` and a
//! `BTreeMap` + `HashMap` baseline, on the same workload and the same random sequence.
//!
//! N live timers (deadlines spread over 60 s); each op is 90% reset of a random live timer to
//! now + 1..60 000 ms, 5% cancel of a random live timer, 5% insert of a new one. Every 100 ops
//! time advances 1 ms, due timers are expired and re-armed (so N stays about constant). The
//! reported time per element is per op, expiry and re-arming included.
//!
//! `DelayQueue` runs in a current-thread runtime with paused time; its clock moves by
//! `tokio::time::advance`. Every row runs inside `Runtime::block_on`, one call per batch of
//! 10 000 ops. Extra rows: the wheel with std's SipHash (`RandomState`) instead of its default
//! Fx-style hasher, and the driver alone with no timers (its cost is part of every row).

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::future::poll_fn;
use std::hash::BuildHasher;
use std::hint::black_box;
use std::task::Poll;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use switchboard::wheel::Wheel;
use tokio::runtime::Runtime;
use tokio_util::time::{DelayQueue, delay_queue::Key};

/// Ops per measured iteration (100 ms of simulated time).
const BATCH: usize = 10_000;
/// Ops between two 1 ms clock ticks.
const OPS_PER_TICK: u32 = 100;
/// Deadlines are spread over this many ms ahead of now.
const SPREAD: u64 = 60_000;

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the workload needs from a timer implementation; ids are dense `u64`s.
trait Timers {
    fn insert(&mut self, id: u64, at: u64);
    fn reset(&mut self, id: u64, at: u64);
    fn cancel(&mut self, id: u64);
    /// Moves time to `now` (one tick later) and appends the ids of due timers.
    async fn advance_to(&mut self, now: u64, due: &mut Vec<u64>);
}

struct OurWheel<S> {
    wheel: Wheel<u64, S>,
    out: Vec<(u64, u64)>,
}

impl<S: BuildHasher> Timers for OurWheel<S> {
    fn insert(&mut self, id: u64, at: u64) {
        self.wheel.insert(at, id);
    }
    fn reset(&mut self, id: u64, at: u64) {
        self.wheel.insert(at, id);
    }
    fn cancel(&mut self, id: u64) {
        self.wheel.cancel(&id);
    }
    async fn advance_to(&mut self, now: u64, due: &mut Vec<u64>) {
        self.wheel.expire(now, &mut self.out);
        due.extend(self.out.drain(..).map(|(_, id)| id));
    }
}

/// `DelayQueue` with the cheapest possible id → `Key` map, a vector indexed by id.
struct Dq {
    queue: DelayQueue<u64>,
    keys: Vec<Option<Key>>,
    now: u64,
}

impl Dq {
    fn set_key(&mut self, id: u64, key: Option<Key>) {
        let i = id as usize;
        if i >= self.keys.len() {
            self.keys.resize(i + 1, None);
        }
        self.keys[i] = key;
    }
}

impl Timers for Dq {
    fn insert(&mut self, id: u64, at: u64) {
        // The runtime's paused clock reads exactly `self.now`, so relative == absolute.
        let key = self.queue.insert(id, Duration::from_millis(at - self.now));
        self.set_key(id, Some(key));
    }
    fn reset(&mut self, id: u64, at: u64) {
        if let Some(key) = self.keys[id as usize] {
            self.queue.reset(&key, Duration::from_millis(at - self.now));
        }
    }
    fn cancel(&mut self, id: u64) {
        if let Some(key) = self.keys[id as usize].take() {
            self.queue.remove(&key);
        }
    }
    async fn advance_to(&mut self, now: u64, due: &mut Vec<u64>) {
        tokio::time::advance(Duration::from_millis(now - self.now)).await;
        self.now = now;
        let queue = &mut self.queue;
        let keys = &mut self.keys;
        poll_fn(|cx| {
            while let Poll::Ready(Some(expired)) = queue.poll_expired(cx) {
                let id = expired.into_inner();
                keys[id as usize] = None;
                due.push(id);
            }
            Poll::Ready(())
        })
        .await;
    }
}

/// The straightforward ordered-map solution, default (SipHash) hasher.
#[derive(Default)]
struct Baseline {
    by_time: BTreeMap<(u64, u64), u64>,
    by_id: HashMap<u64, (u64, u64)>,
    seq: u64,
}

impl Timers for Baseline {
    fn insert(&mut self, id: u64, at: u64) {
        self.seq += 1;
        self.by_time.insert((at, self.seq), id);
        self.by_id.insert(id, (at, self.seq));
    }
    fn reset(&mut self, id: u64, at: u64) {
        self.seq += 1;
        if let Some(slot) = self.by_id.get_mut(&id) {
            self.by_time.remove(slot);
            *slot = (at, self.seq);
            self.by_time.insert(*slot, id);
        }
    }
    fn cancel(&mut self, id: u64) {
        if let Some(slot) = self.by_id.remove(&id) {
            self.by_time.remove(&slot);
        }
    }
    async fn advance_to(&mut self, now: u64, due: &mut Vec<u64>) {
        while let Some(entry) = self.by_time.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let id = entry.remove();
            self.by_id.remove(&id);
            due.push(id);
        }
    }
}

/// No timers at all: what the workload driver itself costs (random picks, live-set upkeep,
/// the runtime's `block_on`). Every other row includes this.
struct HarnessOnly;

impl Timers for HarnessOnly {
    fn insert(&mut self, _: u64, _: u64) {}
    fn reset(&mut self, _: u64, _: u64) {}
    fn cancel(&mut self, _: u64) {}
    async fn advance_to(&mut self, _: u64, _: &mut Vec<u64>) {}
}

/// The workload driver, identical for every implementation.
struct Churn<T> {
    timers: T,
    rng: XorShift,
    now: u64,
    /// Live ids, for picking one at random.
    live: Vec<u64>,
    /// Position of each id in `live`, `u32::MAX` when not live.
    pos: Vec<u32>,
    next_id: u64,
    ops_in_tick: u32,
    due: Vec<u64>,
    expired_total: u64,
}

impl<T: Timers> Churn<T> {
    fn new(mut timers: T, n: usize) -> Self {
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        for id in 0..n as u64 {
            timers.insert(id, 1 + rng.below(SPREAD));
        }
        Churn {
            timers,
            rng,
            now: 0,
            live: (0..n as u64).collect(),
            pos: (0..n as u32).collect(),
            next_id: n as u64,
            ops_in_tick: 0,
            due: Vec::new(),
            expired_total: 0,
        }
    }

    fn deadline(&mut self) -> u64 {
        self.now + 1 + self.rng.below(SPREAD)
    }

    fn random_live(&mut self) -> u64 {
        self.live[self.rng.below(self.live.len() as u64) as usize]
    }

    async fn run(&mut self, ops: usize) {
        for _ in 0..ops {
            let dice = self.rng.below(100);
            if dice < 90 {
                let id = self.random_live();
                let at = self.deadline();
                self.timers.reset(id, at);
            } else if dice < 95 {
                let id = self.random_live();
                self.timers.cancel(id);
                let i = self.pos[id as usize] as usize;
                self.live.swap_remove(i);
                if let Some(&moved) = self.live.get(i) {
                    self.pos[moved as usize] = i as u32;
                }
                self.pos[id as usize] = u32::MAX;
            } else {
                let id = self.next_id;
                self.next_id += 1;
                let at = self.deadline();
                self.timers.insert(id, at);
                self.pos.push(self.live.len() as u32);
                self.live.push(id);
            }
            self.ops_in_tick += 1;
            if self.ops_in_tick == OPS_PER_TICK {
                self.ops_in_tick = 0;
                self.now += 1;
                let mut due = std::mem::take(&mut self.due);
                self.timers.advance_to(self.now, &mut due).await;
                self.expired_total += due.len() as u64;
                for id in due.drain(..) {
                    let at = self.deadline();
                    self.timers.insert(id, at);
                }
                self.due = due;
            }
        }
    }
}

fn paused_runtime() -> Runtime {
    match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
    {
        Ok(rt) => rt,
        Err(err) => panic!("tokio runtime: {err}"),
    }
}

fn bench_one<T: Timers>(
    c: &mut Criterion,
    n: usize,
    name: &str,
    make: impl FnOnce() -> T,
    report: impl FnOnce(&Churn<T>),
) {
    let rt = paused_runtime();
    let mut make = Some(make);
    // Filled on first use, so a benchmark filtered out on the command line costs nothing.
    let mut state: Option<Churn<T>> = None;
    let mut group = c.benchmark_group(format!("churn/{n}"));
    group.throughput(Throughput::Elements(BATCH as u64));
    group.warm_up_time(Duration::from_secs(2));
    if n >= 1_000_000 {
        group.sample_size(10);
        group.measurement_time(Duration::from_secs(8));
    } else {
        group.sample_size(30);
        group.measurement_time(Duration::from_secs(6));
    }
    group.bench_function(BenchmarkId::from_parameter(name), |b| {
        if state.is_none() {
            if let Some(make) = make.take() {
                let _guard = rt.enter();
                state = Some(Churn::new(make(), n));
            }
        }
        if let Some(churn) = state.as_mut() {
            b.iter(|| rt.block_on(churn.run(black_box(BATCH))));
        }
    });
    group.finish();
    if let Some(churn) = state {
        report(&churn);
        eprintln!(
            "{name} n={n}: live {} after {} simulated ms, {} expired",
            churn.live.len(),
            churn.now,
            churn.expired_total
        );
    }
}

fn churn(c: &mut Criterion) {
    for n in [100_000, 1_000_000] {
        bench_one(
            c,
            n,
            "wheel",
            || OurWheel {
                wheel: Wheel::new(0),
                out: Vec::new(),
            },
            |churn| {
                let wheel = &churn.timers.wheel;
                eprintln!(
                    "wheel n={n}: ~{} heap bytes per live timer (from capacities)",
                    wheel.heap_bytes() / wheel.len().max(1)
                );
            },
        );
        bench_one(
            c,
            n,
            "wheel_siphash",
            || OurWheel {
                wheel: Wheel::with_hasher(0, RandomState::new()),
                out: Vec::new(),
            },
            |_| {},
        );
        bench_one(
            c,
            n,
            "delay_queue",
            || Dq {
                queue: DelayQueue::new(),
                keys: Vec::new(),
                now: 0,
            },
            |_| {},
        );
        bench_one(c, n, "btreemap", Baseline::default, |_| {});
        bench_one(c, n, "harness_only", || HarnessOnly, |_| {});
    }
}

criterion_group!(benches, churn);
criterion_main!(benches);
