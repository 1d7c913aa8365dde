//! Durable throughput of the driver against the disk's raw fsync rate, measured in one run.
//!
//! 1. raw: write 256 bytes + `fdatasync` to a file, N times (the disk's ceiling for
//!    one-at-a-time durability);
//! 2. redb: one `Durability::Immediate` commit per insert (what a naive store would do);
//! 3. driver: C concurrent clients each sending inbound SMS messages through the real driver
//!    (every reply comes only after its batch is committed), for C = 1, 16, 256.
//!
//! Run: `cargo bench --bench durable_commit` (prints a table; numbers go to BENCHMARKS.md).
#![allow(
    clippy::expect_used,
    clippy::disallowed_methods,
    clippy::field_reassign_with_default
)]

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard::config::{Channel, Config, QueueConfig, RequeuePosition};
use switchboard::core::Command;
use switchboard::core::model::Medium;
use switchboard::driver::{Clock, Driver};
use switchboard::store::{PostgresOptions, Store};

const RAW_SYNCS: usize = 2_000;
const DRIVER_SECONDS: f64 = 4.0;

fn raw_fsync_rate(dir: &std::path::Path) -> f64 {
    let mut f = std::fs::File::create(dir.join("raw.bin")).expect("file");
    let buf = [7u8; 256];
    let start = Instant::now();
    for _ in 0..RAW_SYNCS {
        f.write_all(&buf).expect("write");
        f.sync_data().expect("fdatasync");
    }
    RAW_SYNCS as f64 / start.elapsed().as_secs_f64()
}

fn redb_single_commit_rate(dir: &std::path::Path) -> f64 {
    const T: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("t");
    let db = redb::Database::create(dir.join("single.redb")).expect("db");
    let n = 1_000u64;
    let start = Instant::now();
    for i in 0..n {
        let tx = db.begin_write().expect("tx");
        {
            let mut t = tx.open_table(T).expect("table");
            t.insert(i, &[1u8; 200][..]).expect("insert");
        }
        tx.commit().expect("commit");
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn config() -> Config {
    let mut cfg = Config::default();
    cfg.queues = vec![QueueConfig {
        id: "sms".into(),
        name: "SMS".into(),
        channel: Channel::Chat,
        offer_timeout: None,
        not_ready_after_no_response: false,
        session_lost_prompt: None,
        reconnecting_prompt: None,
        requeue_position: RequeuePosition::Original,
        sticky_agent: std::time::Duration::ZERO,
    }];
    // One customer thread takes every message a client sends in the run.
    cfg.limits.max_messages_per_thread = usize::MAX;
    cfg.limits.customer_messages_per_minute = u32::MAX;
    cfg
}

/// Commands per second through the driver with `clients` concurrent senders.
async fn driver_rate(store: Store, clients: usize) -> (f64, f64) {
    let store = Arc::new(store);
    let (driver, handle) =
        Driver::start(Arc::new(config()), store, Clock::system(), None).expect("driver");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(driver.run(async move {
        let _ = stop_rx.await;
    }));
    let deadline = Instant::now() + Duration::from_secs_f64(DRIVER_SECONDS);
    let start = Instant::now();
    let mut joins = Vec::new();
    for c in 0..clients {
        let h = handle.clone();
        joins.push(tokio::spawn(async move {
            let mut n = 0u64;
            // Each client is one customer writing into its own thread.
            while Instant::now() < deadline {
                h.call(Command::InboundMessage {
                    medium: Medium::Sms,
                    from: format!("+1555{c:06}"),
                    text: format!("message {n}"),
                    queue: "sms".into(),
                })
                .await
                .expect("command");
                n += 1;
            }
            n
        }));
    }
    let mut total = 0u64;
    for j in joins {
        total += j.await.expect("client");
    }
    let secs = start.elapsed().as_secs_f64();
    let commits = handle
        .metrics
        .commits
        .load(std::sync::atomic::Ordering::Relaxed) as f64;
    let _ = stop_tx.send(());
    let _ = task.await;
    (total as f64 / secs, total as f64 / commits.max(1.0))
}

fn main() {
    let dir = tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| ".".into()))
        .expect("tempdir");
    let raw = raw_fsync_rate(dir.path());
    let single = redb_single_commit_rate(dir.path());
    println!("| measurement | per second | vs raw fsync |");
    println!("|---|---:|---:|");
    println!("| raw write+fdatasync (256 B) | {raw:.0} | 1.00 |");
    println!(
        "| redb: one Immediate commit per insert | {single:.0} | {:.2} |",
        single / raw
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // With SWITCHBOARD_TEST_POSTGRES_URL set, the same driver on PostgreSQL (one transaction
    // per batch, synchronous commit) beside redb, as a ratio in the same run.
    let postgres = std::env::var("SWITCHBOARD_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty());
    for clients in [1usize, 16, 256] {
        let redb = Store::open(&dir.path().join(format!("driver-{clients}.redb"))).expect("store");
        let (rate, per_commit) = rt.block_on(driver_rate(redb, clients));
        println!(
            "| driver on redb: durable commands, {clients} concurrent clients (avg {per_commit:.1} commands/commit) | {rate:.0} | {:.2} |",
            rate / raw
        );
        if let Some(url) = &postgres {
            let schema = format!("bench_durable_{clients}");
            let admin = PostgresOptions::new(url.clone());
            rt.block_on(async {
                let client = admin.connect_async().await.expect("postgres");
                client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .await
                    .expect("drop schema");
            });
            let mut options = PostgresOptions::new(url.clone());
            options.schema = Some(schema);
            let pg = Store::postgres(&options).expect("postgres store");
            let (pg_rate, per_commit) = rt.block_on(driver_rate(pg, clients));
            println!(
                "| driver on PostgreSQL: durable commands, {clients} concurrent clients (avg {per_commit:.1} commands/commit) | {pg_rate:.0} | {:.2} (PostgreSQL / redb = {:.2}) |",
                pg_rate / raw,
                pg_rate / rate
            );
        }
    }
}
