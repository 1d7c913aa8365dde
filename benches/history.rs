//! History at scale (outside the server): search latency and restart time with a large store.
//!
//! 1. `fill`: writes N closed conversations (default 1,000,000; about 93% handled, the rest
//!    abandoned) into a fresh redb data directory through the store's own API
//!    ([`Store::apply`], 10,000 conversations per transaction), exactly the records the
//!    server writes: each conversation with its event timeline and, for chat and email, its
//!    closed thread and transcript. They are spread over 8 queues, 200 agents and every
//!    medium, one every few seconds over the past year.
//! 2. `restart`: times opening the file (the store's own open, which verifies every page,
//!    against a plain redb open), then starts the `switchboard` binary on that directory 5
//!    times and times spawn → `/readyz` 200 and spawn → a supervisor login answered; RSS
//!    once ready.
//! 3. `search`: as a supervisor, `GET /api/v1/conversations` per query kind (each filter,
//!    combinations, `limit=1000`, a `before=` cursor), up to `--requests` requests one after
//!    the other per kind (at most `--kind-secs` seconds per kind), p50/p99/max; then a deep
//!    walk following `before=` for 50 pages.
//!
//! `cargo bench --bench history` (options: `--conversations N`, `--requests N`,
//! `--kind-secs S`, `--server BIN`, `--data DIR` to fill DIR once and reuse it on later runs);
//! `cargo test --bench history` runs a smoke size (2,000 conversations) in seconds against
//! the debug binary.

// A benchmark measures real time: it reads the clocks the server itself may not.
#![allow(clippy::disallowed_methods)]

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use switchboard::core::Write;
use switchboard::core::model::{
    Conversation, Customer, DisconnectReason, Event, EventKind, Medium, Message, Metadata, Origin,
    OriginKind, Sender, Status, Thread,
};
use switchboard::core::time::Timestamp;
use switchboard::store::Store;
use uuid::Uuid;

#[allow(dead_code)] // each benchmark uses part of it
#[path = "support/server.rs"]
mod server;
use server::{Res, Server, cheap_password_hash, free_port};

const PASSWORD: &str = "history-password";
const AGENTS: usize = 200;
const BATCH: usize = 10_000;
const RESTARTS: usize = 5;
const DEEP_PAGES: usize = 50;
/// The history spans a year, up to a day ago.
const SPAN_MS: i64 = 365 * 86_400_000;
/// (queue id, channel, the media it carries).
const QUEUES: [(&str, &str, &[Medium]); 8] = [
    ("sales-phone", "voice", &[Medium::Voice]),
    ("support-phone", "voice", &[Medium::Voice]),
    ("billing-phone", "voice", &[Medium::Voice]),
    ("support-chat", "chat", &[Medium::Webchat, Medium::Sms]),
    ("sales-chat", "chat", &[Medium::Webchat]),
    ("social", "chat", &[Medium::Social, Medium::Sms]),
    ("support-email", "email", &[Medium::Email]),
    ("billing-email", "email", &[Medium::Email]),
];

#[derive(Debug, Clone)]
struct Args {
    conversations: usize,
    requests: usize,
    kind_secs: u64,
    server: PathBuf,
    data: Option<PathBuf>,
}

impl Args {
    fn parse() -> Args {
        let argv: Vec<String> = std::env::args().collect();
        // `cargo bench` passes `--bench`; `cargo test --bench history` does not: smoke size.
        let smoke = !argv.iter().any(|a| a == "--bench");
        let mut a = Args {
            conversations: if smoke { 2_000 } else { 1_000_000 },
            requests: if smoke { 10 } else { 200 },
            kind_secs: 30,
            server: PathBuf::from(env!("CARGO_BIN_EXE_switchboard")),
            data: None,
        };
        let mut it = argv.iter().skip(1);
        while let Some(flag) = it.next() {
            let mut num = || it.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            match flag.as_str() {
                "--conversations" => a.conversations = num().max(1) as usize,
                "--requests" => a.requests = num().max(1) as usize,
                "--kind-secs" => a.kind_secs = num().max(1),
                "--server" => a.server = it.next().map(PathBuf::from).unwrap_or(a.server),
                "--data" => a.data = it.next().map(PathBuf::from),
                _ => {}
            }
        }
        a
    }
}

// ---------------------------------------------------------------------------------------
// Fill

/// A UUID v7 for a moment (ids sort by creation, as the server's do).
fn id_at(ms: i64, rng: &mut StdRng) -> Uuid {
    let tail: [u8; 10] = rng.r#gen();
    uuid::Builder::from_unix_timestamp_millis(ms as u64, &tail).into_uuid()
}

fn agent_of(i: usize) -> String {
    format!("agent-{i:03}")
}

/// The writes of one closed conversation created at `t` (ms), as the server makes them.
fn closed_conversation(t: i64, rng: &mut StdRng, out: &mut Vec<Write>) {
    let (queue, _, media) = QUEUES[rng.gen_range(0..QUEUES.len())];
    let medium = media[rng.gen_range(0..media.len())];
    let id = id_at(t, rng);
    let group_id = id;
    let handled = rng.gen_bool(0.93);
    let agent = agent_of(rng.gen_range(0..AGENTS));
    let customer = Customer {
        name: format!("Customer {}", rng.gen_range(0..200_000)),
        address: format!("+3161{:07}", rng.gen_range(0..10_000_000)),
    };
    let wait = rng.gen_range(2_000..120_000);
    let talk = rng.gen_range(30_000..900_000);
    let wrap = rng.gen_range(5_000..60_000);
    let mut events = vec![(t, EventKind::Queued, None)];
    let ended_at;
    let (reason, last_agent) = if handled {
        let offered = t + wait;
        events.push((offered, EventKind::Offered, Some(agent.clone())));
        events.push((offered + 4_000, EventKind::Accepted, Some(agent.clone())));
        let end = offered + 4_000 + talk;
        events.push((end, EventKind::Ended, Some(agent.clone())));
        events.push((end + wrap, EventKind::WrapUpCompleted, Some(agent.clone())));
        ended_at = end;
        (DisconnectReason::AgentEnded, Some(agent))
    } else {
        ended_at = t + wait;
        events.push((ended_at, EventKind::Abandoned, None));
        (DisconnectReason::CustomerAbandoned, None)
    };
    let thread = (medium != Medium::Voice).then(|| id_at(t, rng));
    let mut metadata = Metadata::default();
    if handled {
        metadata.script.insert(
            "outcome".into(),
            ["solved", "callback", "sale"][t as usize % 3].into(),
        );
        metadata.memo = "Customer asked about their last invoice; explained the charges.".into();
    }
    let c = Conversation {
        id,
        group_id,
        medium,
        queue: queue.to_string(),
        status: if handled {
            Status::Handled
        } else {
            Status::Abandoned
        },
        agent: last_agent.clone(),
        last_agent: last_agent.clone(),
        customer: customer.clone(),
        subject: (medium == Medium::Email).then(|| "Question about my order".to_string()),
        origin: Origin {
            kind: OriginKind::Inbound,
            previous: None,
        },
        queue_arrival_time: Timestamp(t),
        queue_rank: t,
        created_at: Timestamp(t),
        ended_at: Some(Timestamp(ended_at)),
        disconnect_party: Some(reason.party()),
        disconnect_reason: Some(reason),
        metadata,
        thread,
        offer_expires_at: None,
        declined_by: Vec::new(),
        event_count: events.len() as u32,
    };
    out.push(Write::Conversation(Box::new(c)));
    for (seq, (at, event, agent)) in events.into_iter().enumerate() {
        out.push(Write::Event {
            conversation: id,
            seq: seq as u32,
            event: Event {
                at: Timestamp(at),
                event,
                agent,
                detail: None,
            },
        });
    }
    if let Some(thread) = thread {
        let lines: &[(Sender, &str)] = if handled {
            &[
                (Sender::Customer, "Hello, I have a question about my order."),
                (
                    Sender::Agent,
                    "Hi, happy to help. What is the order number?",
                ),
                (Sender::Customer, "It is 4711-2026, it has not arrived yet."),
                (
                    Sender::Agent,
                    "It left the warehouse today; you will have it tomorrow.",
                ),
            ]
        } else {
            &[(Sender::Customer, "Hello, is anyone there?")]
        };
        for (seq, (from, text)) in lines.iter().enumerate() {
            let at = t + seq as i64 * 20_000;
            out.push(Write::Message {
                thread,
                seq: seq as u32,
                message: Message {
                    id: id_at(at, rng),
                    from: *from,
                    text: text.to_string(),
                    at: Timestamp(at),
                    delivery: None,
                },
            });
        }
        out.push(Write::Thread(Box::new(Thread {
            id: thread,
            group_id,
            medium,
            customer,
            token_hash: None,
            current: id,
            open: false,
            message_count: lines.len() as u32,
        })));
    }
}

/// Writes `n` closed conversations, created one every few seconds up to a day ago; returns
/// the elapsed time.
fn fill(data_dir: &Path, n: usize) -> Res<Duration> {
    let started = Instant::now();
    let store = Store::open(&Store::file_in(data_dir))?;
    let mut rng = StdRng::seed_from_u64(7);
    let end = chrono::Utc::now().timestamp_millis() - 86_400_000;
    let step = (SPAN_MS / n as i64).max(1);
    let mut t = end - step * n as i64;
    let mut batch = Vec::new();
    for done in 0..n {
        t += rng.gen_range(1..=2 * step - 1);
        closed_conversation(t, &mut rng, &mut batch);
        if (done + 1) % BATCH == 0 || done + 1 == n {
            store.apply(&batch)?;
            batch.clear();
            if (done + 1) % 100_000 == 0 {
                eprintln!(
                    "  filled {} conversations ({:.0} s)",
                    done + 1,
                    started.elapsed().as_secs_f64()
                );
            }
        }
    }
    drop(store);
    Ok(started.elapsed())
}

// ---------------------------------------------------------------------------------------
// The server: its configuration and an HTTP client

fn write_config(dir: &Path, data: &Path, port: u16) -> Res<PathBuf> {
    let hash = cheap_password_hash(PASSWORD, b"history-salt-16b")?;
    let mut s = format!(
        "[server]\nhttp_listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n\n\
         [sip]\nenabled = false\n\n[limits]\nlogin_per_minute = 100000000\n\n\
         [log]\nlevel = \"warn\"\n\n",
        data.display(),
    );
    for (id, channel, _) in QUEUES {
        s += &format!("[[queues]]\nid = \"{id}\"\nname = \"{id}\"\nchannel = \"{channel}\"\n\n");
    }
    for i in 0..AGENTS {
        // Every agent takes one voice, one chat and one email queue.
        let queues = [QUEUES[i % 3].0, QUEUES[3 + i % 3].0, QUEUES[6 + i % 2].0];
        s += &format!(
            "[[agents]]\nid = \"{}\"\nname = \"Agent {i}\"\npassword_hash = \"{hash}\"\n\
             sip_password = \"history-sip-{i}\"\nqueues = {queues:?}\n\n",
            agent_of(i)
        );
    }
    s += &format!(
        "[[supervisors]]\nid = \"sup\"\nname = \"Supervisor\"\npassword_hash = \"{hash}\"\n"
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, s)?;
    Ok(path)
}

/// One pooled HTTP/1.1 client.
struct Api {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

impl Api {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Res<(u16, Value)> {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let body = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Full::new(Bytes::from(v.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let resp = self.client.request(req.body(body)?).await?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    async fn login(&self) -> Res<String> {
        let (s, v) = self
            .call(
                "POST",
                "/api/v1/login",
                None,
                Some(json!({"username": "sup", "password": PASSWORD})),
            )
            .await?;
        v["token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("login {s}: {v}").into())
    }
}

/// Starts the server and waits for `/readyz` 200, then for a supervisor login: (server,
/// time to ready, time to the login's answer, token).
async fn start_ready(
    a: &Args,
    api: &Api,
    config: &Path,
    log: &Path,
) -> Res<(Server, Duration, Duration, String)> {
    let started = Instant::now();
    let mut srv = Server::start(&a.server, config, log)?;
    loop {
        if let Ok((200, _)) = api.call("GET", "/readyz", None, None).await {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            srv.stop();
            return Err("server not ready within 300 s".into());
        }
        if let Ok(Some(exit)) = srv.child.try_wait() {
            return Err(format!("server exited: {exit}").into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let ready = started.elapsed();
    let token = api.login().await?;
    Ok((srv, ready, started.elapsed(), token))
}

// ---------------------------------------------------------------------------------------
// Measuring

/// Percentile of sorted values.
fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// One row of the search table.
struct Row {
    kind: String,
    lat: Vec<Duration>,
    found: usize,
}

impl Row {
    fn print(&mut self, target: Duration) {
        self.lat.sort();
        let p99 = pct(&self.lat, 0.99);
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            self.kind,
            self.lat.len(),
            self.found / self.lat.len().max(1),
            ms(pct(&self.lat, 0.5)),
            ms(p99),
            ms(self.lat.last().copied().unwrap_or_default()),
            if p99 <= target { "yes" } else { "no" }
        );
    }
}

/// `GET /api/v1/conversations?{query}` for each query in turn (cycling), until `requests`
/// or the kind's time is used up.
async fn search_kind(a: &Args, api: &Api, token: &str, kind: &str, queries: &[String]) -> Res<Row> {
    let mut row = Row {
        kind: kind.to_string(),
        lat: Vec::new(),
        found: 0,
    };
    let budget = Instant::now();
    for i in 0..a.requests {
        let q = &queries[i % queries.len()];
        let started = Instant::now();
        let (s, v) = api
            .call(
                "GET",
                &format!("/api/v1/conversations?{q}"),
                Some(token),
                None,
            )
            .await?;
        row.lat.push(started.elapsed());
        if s != 200 {
            return Err(format!("search {q}: {s} {v}").into());
        }
        row.found += v.as_array().map_or(0, Vec::len);
        if budget.elapsed() > Duration::from_secs(a.kind_secs) {
            break;
        }
    }
    Ok(row)
}

fn main() -> Res<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(a: Args) -> Res<()> {
    let tmp = tempfile::tempdir()?;
    let data = a.data.clone().unwrap_or_else(|| tmp.path().join("data"));
    println!(
        "history: {} conversations, server {}",
        a.conversations,
        a.server.display()
    );
    if Store::file_in(&data).exists() {
        println!("fill: reusing {}", data.display());
    } else {
        let took = fill(&data, a.conversations)?;
        println!(
            "fill: {} conversations in {:.1} s ({:.0}/s)",
            a.conversations,
            took.as_secs_f64(),
            a.conversations as f64 / took.as_secs_f64()
        );
    }
    let file_mb = std::fs::metadata(Store::file_in(&data))?.len() as f64 / 1e6;
    println!("store file: {file_mb:.0} MB");

    // The first open migrates a file an older schema version wrote (`--data` of an older
    // build's fill); otherwise it is one more open like those below.
    let started = Instant::now();
    drop(Store::open(&Store::file_in(&data))?);
    println!(
        "first Store::open (migrates an older file): {} ms; store file now {:.0} MB",
        ms(started.elapsed()),
        std::fs::metadata(Store::file_in(&data))?.len() as f64 / 1e6
    );

    // What opening the file costs: the store's own open after a clean close (the seal
    // matches, no page is verified), the same open without the seal (after a crash: every
    // page's checksum verified), and a plain redb open of the same file (the baseline).
    let file = Store::file_in(&data);
    let seal = file.with_file_name(format!("{}.clean", switchboard::store::FILE_NAME));
    let (mut sealed, mut verified, mut plain) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        drop(Store::open(&file)?);
        let started = Instant::now();
        drop(Store::open(&file)?);
        sealed.push(started.elapsed());
        let _ = std::fs::remove_file(&seal);
        let started = Instant::now();
        drop(Store::open(&file)?);
        verified.push(started.elapsed());
        let started = Instant::now();
        drop(
            redb::Database::builder()
                .set_cache_size(switchboard::store::redb::PAGE_CACHE_BYTES)
                .create(&file)?,
        );
        plain.push(started.elapsed());
    }
    drop(Store::open(&file)?);
    for v in [&mut sealed, &mut verified, &mut plain] {
        v.sort();
    }
    println!(
        "open the store file (median of 3): Store::open after a clean close {} ms, Store::open verifying every page {} ms, plain redb open {} ms",
        ms(pct(&sealed, 0.5)),
        ms(pct(&verified, 0.5)),
        ms(pct(&plain, 0.5))
    );

    let port = free_port()?;
    let config = write_config(tmp.path(), &data, port)?;
    let api = Api {
        client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
        base: format!("http://127.0.0.1:{port}"),
    };
    let log = tmp.path().join("server.log");
    let result = measure(&a, &api, &config, &log).await;
    if result.is_err() {
        if let Ok(text) = std::fs::read_to_string(&log) {
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "server log (tail):\n{}",
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
    }
    result
}

async fn measure(a: &Args, api: &Api, config: &Path, log: &Path) -> Res<()> {
    // Restart to ready.
    let mut ready = Vec::new();
    let mut answered = Vec::new();
    let mut rss = Vec::new();
    let mut running = None;
    for i in 0..RESTARTS {
        let (mut srv, r, l, token) = start_ready(a, api, config, log).await?;
        ready.push(r);
        answered.push(l);
        rss.push(srv.rss_kib());
        if i + 1 == RESTARTS {
            running = Some((srv, token));
        } else {
            srv.stop();
        }
    }
    // One start after a crash: the running server killed, so the next open verifies the
    // whole file (and redb recovers its allocator state).
    if let Some((mut srv, _)) = running.take() {
        srv.kill();
    }
    let (srv, after_crash, _, token) = start_ready(a, api, config, log).await?;
    running = Some((srv, token));
    ready.sort();
    answered.sort();
    let target = Duration::from_secs(1);
    println!("\n| restart ({RESTARTS}×) | p50 ms | max ms | ≤ 1 s |");
    println!("|---|---|---|---|");
    for (what, v) in [
        ("spawn → /readyz 200", &ready),
        ("spawn → supervisor login answered", &answered),
    ] {
        let max = v.last().copied().unwrap_or_default();
        println!(
            "| {what} | {} | {} | {} |",
            ms(pct(v, 0.5)),
            ms(max),
            if max <= target { "yes" } else { "no" }
        );
    }
    println!(
        "| spawn → `/readyz` 200 after a SIGKILL (verifies every page) | {} | {} | {} |",
        ms(after_crash),
        ms(after_crash),
        if after_crash <= target { "yes" } else { "no" }
    );
    println!(
        "RSS once ready: {} MiB (max of {RESTARTS})",
        rss.iter().max().copied().unwrap_or(0) / 1024
    );

    let Some((mut srv, token)) = running else {
        return Err("no server".into());
    };
    let result = searches(a, api, &token).await;
    println!("RSS after the searches: {} MiB", srv.rss_kib() / 1024);
    srv.stop();
    result
}

async fn searches(a: &Args, api: &Api, token: &str) -> Res<()> {
    // Cursors spread evenly over the year of history: UUID v7 ids at those moments (ids
    // sort by creation, so any id is a cursor).
    let newest = chrono::Utc::now().timestamp_millis() - 86_400_000;
    let cursors: Vec<String> = (0..20)
        .map(|k| {
            let ms = newest - SPAN_MS / 20 * k;
            uuid::Builder::from_unix_timestamp_millis(ms as u64, &[0; 10])
                .into_uuid()
                .to_string()
        })
        .collect();
    let queues: Vec<String> = QUEUES.iter().map(|(q, _, _)| q.to_string()).collect();
    let agents: Vec<String> = (0..AGENTS).map(agent_of).collect();
    let each = |f: &dyn Fn(&str) -> String, vals: &[String]| -> Vec<String> {
        vals.iter().map(|v| f(v)).collect()
    };
    let kinds: Vec<(&str, Vec<String>)> = vec![
        ("no filter (limit 100)", vec![String::new()]),
        ("status=handled", vec!["status=handled".into()]),
        ("status=abandoned", vec!["status=abandoned".into()]),
        ("queue=Q", each(&|q| format!("queue={q}"), &queues)),
        (
            "channel=C",
            ["voice", "chat", "email"]
                .iter()
                .map(|c| format!("channel={c}"))
                .collect(),
        ),
        ("agent=A", each(&|x| format!("agent={x}"), &agents)),
        (
            "status=handled&queue=Q&channel=C",
            QUEUES
                .iter()
                .map(|(q, c, _)| format!("status=handled&queue={q}&channel={c}"))
                .collect(),
        ),
        (
            "status=handled&agent=A&channel=chat",
            each(
                &|x| format!("status=handled&agent={x}&channel=chat"),
                &agents,
            ),
        ),
        ("limit=1000", vec!["limit=1000".into()]),
        (
            "before=ID (spread over history)",
            each(&|c| format!("before={c}"), &cursors),
        ),
        (
            "queue=Q&before=ID",
            cursors
                .iter()
                .zip(queues.iter().cycle())
                .map(|(c, q)| format!("queue={q}&before={c}"))
                .collect(),
        ),
        (
            "status=in_queue (open index, empty)",
            vec!["status=in_queue".into()],
        ),
        (
            "queue=Q&channel=wrong (matches nothing)",
            vec!["queue=sales-phone&channel=email".into()],
        ),
        (
            "status=abandoned&agent=A (matches nothing: abandoned ones have no agent)",
            each(&|x| format!("status=abandoned&agent={x}"), &agents),
        ),
    ];
    let target = Duration::from_millis(50);
    println!(
        "\n| search (sequential, {} requests per kind, at most {} s) | n | results | p50 ms | p99 ms | max ms | p99 ≤ 50 ms |",
        a.requests, a.kind_secs
    );
    println!("|---|---|---|---|---|---|---|");
    let mut failed = Vec::new();
    for (kind, queries) in kinds {
        if queries.is_empty() {
            continue;
        }
        let mut row = search_kind(a, api, token, kind, &queries).await?;
        row.print(target);
        if pct(&row.lat, 0.99) > target {
            failed.push(kind);
        }
    }

    // The deep walk: 50 pages following `before=`, for two filters.
    for (kind, filter) in [
        ("deep walk, no filter", ""),
        ("deep walk, queue=support-chat", "queue=support-chat&"),
    ] {
        let mut row = Row {
            kind: format!("{kind}: {DEEP_PAGES} pages of 100"),
            lat: Vec::new(),
            found: 0,
        };
        let mut before = String::new();
        let mut seen = BTreeMap::new();
        for _ in 0..DEEP_PAGES {
            let started = Instant::now();
            let (s, v) = api
                .call(
                    "GET",
                    &format!("/api/v1/conversations?{filter}before={before}"),
                    Some(token),
                    None,
                )
                .await?;
            row.lat.push(started.elapsed());
            let page = v.as_array().cloned().unwrap_or_default();
            if s != 200 {
                return Err(format!("deep walk: {s} {v}").into());
            }
            for c in &page {
                if seen
                    .insert(c["id"].as_str().unwrap_or_default().to_string(), ())
                    .is_some()
                {
                    return Err("deep walk: a conversation on two pages".into());
                }
            }
            row.found += page.len();
            let Some(last) = page.last().and_then(|c| c["id"].as_str()) else {
                break;
            };
            before = last.to_string();
        }
        row.print(target);
    }
    if failed.is_empty() {
        println!("\nevery search kind: p99 ≤ 50 ms");
    } else {
        println!("\nabove 50 ms at p99: {}", failed.join(", "));
    }
    Ok(())
}
