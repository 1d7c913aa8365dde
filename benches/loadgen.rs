//! Load generator (socket level, outside the server): the "whole office drops at once" storm.
//!
//! It starts the release `switchboard` binary on a generated configuration (A agents, chat
//! queues of 100 agents, a supervisor, an API key; cheap argon2 parameters so logins measure
//! the server, not the hash), then drives it over real sockets:
//!
//! 1. `login`: every agent logs in and opens its panel socket;
//! 2. `inbound`: C chats per agent arrive — web chat customers on real chat sockets (up to
//!    `--web`), the rest as SMS through the integration API — and agents accept every offer;
//! 3. `steady`: customers write at `--msg-rate` messages per second and agents answer each;
//! 4. `storm`: every panel drops at once, half closed, half silently abandoned (only the
//!    heartbeat notices); every chat is requeued at its agent's grace deadline;
//! 5. `recovery`: agents log back in (not ready), open panels, then all turn ready at once
//!    and accept every requeued chat, end it and complete the wrap-up; customers leave;
//! 6. `settle`: nothing connected; RSS `--settle` seconds later, then a restart on the same
//!    data directory for the RSS of a fresh process.
//!
//! Per phase it prints throughput, REST and login latency, server CPU and RSS, Dashboard
//! frames and closes; for the storm the requeue lateness after each deadline (server
//! timestamps and as seen on the customer sockets) and the time until every requeued chat is
//! offered again.
//!
//! `cargo bench --bench loadgen -- --agents 2000` (options: `--chats 3 --web 2000
//! --msg-rate 200 --steady 5 --settle 20 --grace 8`, `--server BIN` for another binary or a
//! wrapper script that `exec`s it, `--hold SECS` to keep the settled server running for a
//! look at its heap, `--handle-ms MS` for agents who work on each recovered chat that long
//! before ending it); `cargo test --bench loadgen` runs a smoke size of a few seconds
//! against the debug binary.

// A load generator measures real time: it reads the clocks the server itself may not.
#![allow(clippy::disallowed_methods)]

use axum::body::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
#[allow(dead_code)] // each benchmark uses part of it
#[path = "support/server.rs"]
mod server;
use server::{Res, Server, cheap_password_hash, free_port, proc_field};

const API_KEY: &str = "loadgen-integration-key-0123456789abcdef";
const PASSWORD: &str = "loadgen-password";
const PHASES: [&str; 6] = ["login", "inbound", "steady", "storm", "recovery", "settle"];
const STORM: usize = 3;

#[derive(Debug, Clone)]
struct Args {
    agents: usize,
    chats: usize,
    web: usize,
    msg_rate: u64,
    steady_secs: u64,
    settle_secs: u64,
    grace_secs: u64,
    server: PathBuf,
    /// Leave out the `[limits]` keys older binaries do not know (for baseline runs).
    old_limits: bool,
    /// Seconds to keep the settled server running (pid printed) before the restart, so its
    /// heap can be inspected from outside.
    hold_secs: u64,
    /// Milliseconds an agent works on each chat picked up in the recovery before ending and
    /// completing it (0: at once).
    handle_ms: u64,
}

impl Args {
    fn parse() -> Args {
        let argv: Vec<String> = std::env::args().collect();
        // `cargo bench` passes `--bench`; `cargo test --bench loadgen` does not: smoke size.
        let smoke = !argv.iter().any(|a| a == "--bench");
        let mut a = Args {
            agents: if smoke { 20 } else { 500 },
            chats: 3,
            web: if smoke { 20 } else { 2000 },
            msg_rate: if smoke { 20 } else { 200 },
            steady_secs: if smoke { 1 } else { 5 },
            settle_secs: if smoke { 1 } else { 20 },
            grace_secs: if smoke { 2 } else { 8 },
            server: PathBuf::from(env!("CARGO_BIN_EXE_switchboard")),
            old_limits: false,
            hold_secs: 0,
            handle_ms: 0,
        };
        let mut it = argv.iter().skip(1);
        while let Some(flag) = it.next() {
            let mut num = || it.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            match flag.as_str() {
                "--agents" => a.agents = num().max(1) as usize,
                "--chats" => a.chats = num().max(1) as usize,
                "--web" => a.web = num() as usize,
                "--msg-rate" => a.msg_rate = num(),
                "--steady" => a.steady_secs = num(),
                "--settle" => a.settle_secs = num(),
                "--grace" => a.grace_secs = num().max(1),
                "--old-limits" => a.old_limits = true,
                "--hold" => a.hold_secs = num(),
                "--handle-ms" => a.handle_ms = num(),
                "--server" => {
                    if let Some(p) = it.next() {
                        a.server = PathBuf::from(p);
                    }
                }
                _ => {}
            }
        }
        a
    }
}

/// Latencies and counters per phase.
#[derive(Default)]
struct Recorder {
    phase: AtomicUsize,
    rest: Mutex<HashMap<(usize, &'static str), Vec<u64>>>,
    errors: Mutex<HashMap<(usize, String), u64>>,
    dash_frames: [AtomicU64; 6],
}

impl Recorder {
    fn phase(&self) -> usize {
        self.phase.load(Ordering::Relaxed)
    }
    fn lat(&self, kind: &'static str, micros: u64) {
        let p = self.phase();
        if let Ok(mut m) = self.rest.lock() {
            m.entry((p, kind)).or_default().push(micros);
        }
    }
    fn error(&self, what: String) {
        let p = self.phase();
        if let Ok(mut m) = self.errors.lock() {
            *m.entry((p, what)).or_default() += 1;
        }
    }
    fn take(&self, p: usize, kind: &'static str) -> Vec<u64> {
        self.rest
            .lock()
            .map(|m| m.get(&(p, kind)).cloned().unwrap_or_default())
            .unwrap_or_default()
    }
}

/// The REST side: one pooled HTTP/1.1 client, at most `inflight` requests at once.
struct Api {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    limit: Semaphore,
    rec: Arc<Recorder>,
}

impl Api {
    async fn call(
        &self,
        kind: &'static str,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Res<(u16, Value)> {
        let _permit = self.limit.acquire().await?;
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
        let started = Instant::now();
        let resp = self.client.request(req.body(body)?).await?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        self.rec.lat(kind, started.elapsed().as_micros() as u64);
        if status >= 400 {
            self.rec.error(format!("{kind} {status}"));
        }
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, v))
    }

    async fn login(&self, user: &str) -> Res<String> {
        let (s, v) = self
            .call(
                "login",
                "POST",
                "/api/v1/login",
                None,
                Some(json!({"username": user, "password": PASSWORD})),
            )
            .await?;
        match v["token"].as_str() {
            Some(t) if s == 200 => Ok(t.to_string()),
            _ => Err(format!("login {user}: {s} {v}").into()),
        }
    }
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(4096)
}

async fn ws_connect(base_ws: &str, path: &str, token: &str) -> Res<Ws> {
    let url = format!("{base_ws}{path}?token={token}");
    let (ws, _) =
        tokio_tungstenite::connect_async_with_config(url, Some(ws_config()), true).await?;
    Ok(ws)
}

fn wall_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn ts_ms(v: &Value) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(v.as_str()?)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// What the panels, customers and the storm share.
struct World {
    api: Api,
    base_ws: String,
    rec: Arc<Recorder>,
    /// conversation id → agent index, for chats an agent accepted.
    holder: Mutex<HashMap<String, usize>>,
    accepted: AtomicU64,
    /// Requeued chats offered again: (new id, previous id, created_at ms, seen at).
    reoffers: Mutex<Vec<(String, String, i64, Instant)>>,
    /// Agent index → grace deadline (wall ms) as the server reported it.
    deadlines: Mutex<HashMap<usize, i64>>,
    /// Previous conversation id → wall ms the customer saw `in_queue` after the storm.
    customer_seen: Mutex<HashMap<String, i64>>,
    storm_started: AtomicBool,
    /// Finish recovered conversations (end + complete) once accepted and worked on.
    finish: AtomicBool,
    /// How long an agent works on a recovered conversation before ending it.
    handle: Duration,
    finished: AtomicU64,
    replies: AtomicU64,
    customer_msgs: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctl {
    Run,
    Close,
    Abandon,
    Release,
}

/// One agent panel: accepts its offers, answers customers, and obeys the storm.
async fn panel(
    w: Arc<World>,
    idx: usize,
    token: String,
    mut ws: Ws,
    mut ctl: watch::Receiver<Ctl>,
) {
    let me = format!("a{idx}");
    loop {
        tokio::select! {
            changed = ctl.changed() => {
                if changed.is_err() { return; }
                let now = *ctl.borrow();
                match now {
                    Ctl::Run => {}
                    Ctl::Close | Ctl::Release => {
                        let _ = ws.close(None).await;
                        return;
                    }
                    Ctl::Abandon => break,
                }
            }
            msg = ws.next() => {
                let Some(Ok(msg)) = msg else { return };
                let Message::Text(text) = msg else { continue };
                let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                on_panel_frame(&w, idx, &me, &token, &v);
            }
        }
    }
    // Abandoned: hold the socket without reading until released.
    loop {
        let gone = ctl.changed().await.is_err();
        let now = *ctl.borrow();
        if gone || now == Ctl::Release {
            drop(ws);
            return;
        }
    }
}

fn on_panel_frame(w: &Arc<World>, idx: usize, me: &str, token: &str, v: &Value) {
    match v["type"].as_str() {
        Some("conversation") => {
            let c = &v["conversation"];
            if c["status"] != "offered" || c["agent"] != me {
                return;
            }
            let Some(id) = c["id"].as_str().map(str::to_string) else {
                return;
            };
            if c["origin"]["kind"] == "requeue" {
                let prev = c["origin"]["previous"].as_str().unwrap_or("").to_string();
                let created = ts_ms(&c["created_at"]).unwrap_or(0);
                if let Ok(mut r) = w.reoffers.lock() {
                    r.push((id.clone(), prev, created, Instant::now()));
                }
            }
            let (w, token) = (w.clone(), token.to_string());
            tokio::spawn(async move {
                let path = format!("/api/v1/conversations/{id}/accept");
                if let Ok((200, _)) = w.api.call("rest", "POST", &path, Some(&token), None).await {
                    if let Ok(mut h) = w.holder.lock() {
                        h.insert(id.clone(), idx);
                    }
                    w.accepted.fetch_add(1, Ordering::Relaxed);
                    if w.finish.load(Ordering::Relaxed) {
                        tokio::time::sleep(w.handle).await;
                        for step in ["end", "complete"] {
                            let path = format!("/api/v1/conversations/{id}/{step}");
                            let _ = w.api.call("rest", "POST", &path, Some(&token), None).await;
                        }
                        w.finished.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        Some("message") if v["message"]["from"] == "customer" => {
            let Some(id) = v["conversation_id"].as_str().map(str::to_string) else {
                return;
            };
            let (w, token) = (w.clone(), token.to_string());
            tokio::spawn(async move {
                let path = format!("/api/v1/conversations/{id}/messages");
                let body = json!({"text": "On it."});
                if let Ok((200, _)) = w
                    .api
                    .call("rest", "POST", &path, Some(&token), Some(body))
                    .await
                {
                    w.replies.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        _ => {}
    }
}

/// A web chat customer's socket: notes when its chat goes back to the queue after the storm.
async fn customer(w: Arc<World>, first_id: String, mut ws: Ws, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.changed() => {
                let _ = ws.close(None).await;
                return;
            }
            msg = ws.next() => {
                let Some(Ok(msg)) = msg else { return };
                let Message::Text(text) = msg else { continue };
                let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                if v["type"] == "status"
                    && v["status"] == "in_queue"
                    && w.storm_started.load(Ordering::Relaxed)
                {
                    if let Ok(mut m) = w.customer_seen.lock() {
                        m.entry(first_id.clone()).or_insert_with(wall_ms);
                    }
                }
            }
        }
    }
}

/// A supervisor's Dashboard: counts frames per phase; reports how it ended.
async fn dashboard(w: Arc<World>, mut ws: Ws, mut stop: watch::Receiver<bool>) -> String {
    loop {
        tokio::select! {
            _ = stop.changed() => {
                let _ = ws.close(None).await;
                return "open".into();
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(_))) => {
                    w.rec.dash_frames[w.rec.phase()].fetch_add(1, Ordering::Relaxed);
                }
                Some(Ok(Message::Close(f))) => {
                    return format!("closed {}", f.map(|f| u16::from(f.code)).unwrap_or(0));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return format!("failed: {e}"),
                None => return "closed (no frame)".into(),
            }
        }
    }
}

fn write_config(dir: &Path, port: u16, a: &Args) -> Res<PathBuf> {
    let hash = cheap_password_hash(PASSWORD, b"loadgen-salt-16b")?;
    let key_sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(API_KEY.as_bytes()));
    let queues = a.agents.div_ceil(100);
    let mut s = format!(
        "[server]\nhttp_listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n\n\
         [resilience]\nsession_grace = \"{}s\"\nheartbeat_interval = \"1s\"\nheartbeat_timeout = \"3s\"\n\n\
         [sip]\nenabled = false\n\n\
         [limits]\nlogin_per_minute = 100000000\nchats_per_minute = 100000000\n{}\n\
         [log]\nlevel = \"warn\"\n\n",
        dir.join("data").display(),
        a.grace_secs,
        if a.old_limits {
            ""
        } else {
            "customer_messages_per_minute = 6000\nmax_connections = 18000\n"
        }
    );
    for q in 0..queues {
        s += &format!("[[queues]]\nid = \"q{q}\"\nname = \"Queue {q}\"\nchannel = \"chat\"\n\n");
    }
    for i in 0..a.agents {
        s += &format!(
            "[[agents]]\nid = \"a{i}\"\nname = \"Agent {i}\"\npassword_hash = \"{hash}\"\n\
             sip_password = \"loadgen-sip-{i}\"\nqueues = [\"q{}\"]\ncapacity = {{ voice = 0, chat = {}, email = 0 }}\n\n",
            i % queues,
            a.chats
        );
    }
    for p in 0..10 {
        s += &format!(
            "[[agents]]\nid = \"probe{p}\"\nname = \"Probe {p}\"\npassword_hash = \"{hash}\"\n\
             sip_password = \"loadgen-sip-probe-{p}\"\nqueues = [\"q0\"]\ncapacity = {{ voice = 0, chat = 0, email = 0 }}\n\n"
        );
    }
    s += &format!(
        "[[supervisors]]\nid = \"sup\"\nname = \"Supervisor\"\npassword_hash = \"{hash}\"\n\n\
         [[api_keys]]\nid = \"loadgen\"\nkey_sha256 = \"{key_sha}\"\n"
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, s)?;
    Ok(path)
}

async fn wait_ready(api: &Api) -> Res<()> {
    for _ in 0..600 {
        if let Ok((200, _)) = api.call("ready", "GET", "/readyz", None, None).await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("server not ready within 60 s".into())
}

/// Percentile of sorted values.
fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(micros: u64) -> String {
    format!("{:.1}", micros as f64 / 1000.0)
}

/// Waits until `done()` or `limit` passes; returns the time taken.
async fn until(limit: Duration, done: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !done() && start.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}

struct PhaseStat {
    secs: f64,
    work: u64,
    cpu_secs: f64,
    rss_end: u64,
    rss_peak: u64,
}

struct Meter {
    started: Instant,
    cpu: u64,
}

fn begin(rec: &Recorder, srv: &Server, p: usize, peak: &AtomicU64) -> Meter {
    rec.phase.store(p, Ordering::Relaxed);
    peak.store(srv.rss_kib(), Ordering::Relaxed);
    Meter {
        started: Instant::now(),
        cpu: srv.cpu_ticks(),
    }
}

fn end(m: Meter, srv: &Server, work: u64, peak: &AtomicU64) -> PhaseStat {
    PhaseStat {
        secs: m.started.elapsed().as_secs_f64(),
        work,
        cpu_secs: srv.cpu_ticks().saturating_sub(m.cpu) as f64 / 100.0,
        rss_end: srv.rss_kib(),
        rss_peak: peak.load(Ordering::Relaxed).max(srv.rss_kib()),
    }
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
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let config = write_config(dir.path(), port, &a)?;
    let log = dir.path().join("server.log");
    let mut srv = Server::start(&a.server, &config, &log)?;
    let rec = Arc::new(Recorder::default());
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build(http);
    let w = Arc::new(World {
        api: Api {
            client,
            base: format!("http://127.0.0.1:{port}"),
            limit: Semaphore::new(128),
            rec: rec.clone(),
        },
        base_ws: format!("ws://127.0.0.1:{port}"),
        rec: rec.clone(),
        holder: Mutex::default(),
        accepted: AtomicU64::new(0),
        reoffers: Mutex::default(),
        deadlines: Mutex::default(),
        customer_seen: Mutex::default(),
        storm_started: AtomicBool::new(false),
        finish: AtomicBool::new(false),
        handle: Duration::from_millis(a.handle_ms),
        finished: AtomicU64::new(0),
        replies: AtomicU64::new(0),
        customer_msgs: AtomicU64::new(0),
    });
    let result = scenario(&a, &w, &mut srv, dir.path(), &config).await;
    srv.stop();
    if result.is_err() {
        if let Ok(text) = std::fs::read_to_string(&log) {
            eprintln!("server log (tail):\n{}", tail(&text, 40));
        }
    }
    result
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs `f` over `items` with at most `n` at once.
async fn each<T, F, Fut>(items: Vec<T>, n: usize, f: F)
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    futures_util::stream::iter(items.into_iter().map(f))
        .buffer_unordered(n)
        .collect::<Vec<()>>()
        .await;
}

#[allow(clippy::too_many_lines)]
async fn scenario(
    a: &Args,
    w: &Arc<World>,
    srv: &mut Server,
    dir: &Path,
    config: &Path,
) -> Res<()> {
    let rec = w.rec.clone();
    wait_ready(&w.api).await?;
    let total = (a.agents * a.chats) as u64;
    let web = a.web.min(total as usize);
    println!(
        "# loadgen: {} agents, {} chats ({} web chat sockets, {} SMS), grace {} s, heartbeat 1 s / 3 s",
        a.agents,
        total,
        web,
        total as usize - web,
        a.grace_secs
    );
    let rss_start = srv.rss_kib();

    // RSS sampler for per-phase peaks.
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (peak, pid) = (peak.clone(), srv.pid);
        tokio::spawn(async move {
            loop {
                peak.fetch_max(proc_field(pid, "VmRSS:"), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let mut stats: Vec<PhaseStat> = Vec::new();

    // Dashboards.
    let sup = w.api.login("sup").await?;
    let (dash_stop_tx, dash_stop) = watch::channel(false);
    let mut dashes = Vec::new();
    for _ in 0..2 {
        let ws = ws_connect(&w.base_ws, "/api/v1/dashboard/ws", &sup).await?;
        dashes.push(tokio::spawn(dashboard(w.clone(), ws, dash_stop.clone())));
    }

    // Probes: a login and a supervisor read every 100 ms, in every phase.
    let probe_stop = Arc::new(AtomicBool::new(false));
    let probe = {
        let (w, stop, sup) = (w.clone(), probe_stop.clone(), sup.clone());
        tokio::spawn(async move {
            let mut k = 0usize;
            while !stop.load(Ordering::Relaxed) {
                k += 1;
                let _ = w.api.login(&format!("probe{}", k % 10)).await;
                let _ = w
                    .api
                    .call("rest", "GET", "/api/v1/queues", Some(&sup), None)
                    .await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // 1. login + panels.
    let m = begin(&rec, srv, 0, &peak);
    let (ctl_even, ctl_e) = watch::channel(Ctl::Run);
    let (ctl_odd, ctl_o) = watch::channel(Ctl::Run);
    let tokens: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(vec![String::new(); a.agents]));
    each((0..a.agents).collect(), 64, |i| {
        let ctl = if i % 2 == 0 {
            ctl_e.clone()
        } else {
            ctl_o.clone()
        };
        let (w, tokens) = (w.clone(), tokens.clone());
        async move {
            let Ok(token) = w.api.login(&format!("a{i}")).await else {
                return;
            };
            match ws_connect(&w.base_ws, "/api/v1/agent/ws", &token).await {
                Ok(ws) => {
                    tokio::spawn(panel(w.clone(), i, token.clone(), ws, ctl));
                }
                Err(e) => w.rec.error(format!("panel ws: {e}")),
            }
            if let Ok(mut t) = tokens.lock() {
                t[i] = token;
            }
        }
    })
    .await;
    stats.push(end(m, srv, a.agents as u64, &peak));

    // 2. inbound chats, accepted by the agents.
    let m = begin(&rec, srv, 1, &peak);
    let queues = a.agents.div_ceil(100);
    let (cust_stop_tx, cust_stop) = watch::channel(false);
    let web_tokens: Arc<Mutex<Vec<String>>> = Arc::default();
    each((0..total as usize).collect(), 64, |k| {
        let (w, cust_stop, web_tokens) = (w.clone(), cust_stop.clone(), web_tokens.clone());
        async move {
            let queue = format!("q{}", k % queues);
            if k < web {
                let body = json!({"queue": queue, "name": format!("Customer {k}"), "text": "Hello"});
                let Ok((201, v)) = w.api.call("rest", "POST", "/api/v1/chats", None, Some(body)).await
                else {
                    return;
                };
                let (Some(token), Some(id)) = (v["token"].as_str(), v["conversation_id"].as_str())
                else {
                    return;
                };
                if let Ok(mut t) = web_tokens.lock() {
                    t.push(token.to_string());
                }
                match ws_connect(&w.base_ws, "/api/v1/chat/ws", token).await {
                    Ok(ws) => {
                        tokio::spawn(customer(w.clone(), id.to_string(), ws, cust_stop));
                    }
                    Err(e) => w.rec.error(format!("chat ws: {e}")),
                }
            } else {
                let body = json!({"medium": "sms", "from": format!("+1555{k:07}"), "text": "Hello", "queue": queue});
                let _ = w
                    .api
                    .call("rest", "POST", "/api/v1/inbound/messages", Some(API_KEY), Some(body))
                    .await;
            }
        }
    })
    .await;
    until(Duration::from_secs(120), || {
        w.accepted.load(Ordering::Relaxed) >= total
    })
    .await;
    stats.push(end(m, srv, w.accepted.load(Ordering::Relaxed), &peak));

    // 3. steady messages both ways.
    let m = begin(&rec, srv, 2, &peak);
    let web_list: Vec<String> = web_tokens.lock().map(|t| t.clone()).unwrap_or_default();
    if a.msg_rate > 0 && a.steady_secs > 0 {
        let n = a.msg_rate * a.steady_secs;
        let gap = Duration::from_micros(1_000_000 / a.msg_rate);
        let mut tick = tokio::time::interval(gap);
        for k in 0..n as usize {
            tick.tick().await;
            let w = w.clone();
            let web_token = web_list.get(k % total as usize).cloned();
            tokio::spawn(async move {
                let ok = match web_token {
                    Some(t) => {
                        w.api
                            .call(
                                "rest",
                                "POST",
                                "/api/v1/chat/messages",
                                Some(&t),
                                Some(json!({"text": "Still there?"})),
                            )
                            .await
                    }
                    None => {
                        let body = json!({"medium": "sms", "from": format!("+1555{:07}", k % total as usize), "text": "Still there?", "queue": "q0"});
                        w.api
                            .call(
                                "rest",
                                "POST",
                                "/api/v1/inbound/messages",
                                Some(API_KEY),
                                Some(body),
                            )
                            .await
                    }
                };
                if matches!(ok, Ok((200 | 201, _))) {
                    w.customer_msgs.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        let sent = w.customer_msgs.load(Ordering::Relaxed);
        let _ = sent;
        until(Duration::from_secs(10), || {
            w.replies.load(Ordering::Relaxed) >= w.customer_msgs.load(Ordering::Relaxed)
        })
        .await;
    }
    stats.push(end(
        m,
        srv,
        w.customer_msgs.load(Ordering::Relaxed) + w.replies.load(Ordering::Relaxed),
        &peak,
    ));

    // 4. the storm: every panel drops at once, half closed, half silently abandoned.
    let m = begin(&rec, srv, STORM, &peak);
    w.storm_started.store(true, Ordering::Relaxed);
    let _ = ctl_even.send(Ctl::Close);
    let _ = ctl_odd.send(Ctl::Abandon);
    let grace_ms = a.grace_secs * 1000;
    let deadline_poll = {
        let (w, sup, agents) = (w.clone(), sup.clone(), a.agents);
        tokio::spawn(async move {
            let start = Instant::now();
            while start.elapsed() < Duration::from_millis(grace_ms + 10_000) {
                if let Ok((200, v)) = w
                    .api
                    .call("rest", "GET", "/api/v1/agents", Some(&sup), None)
                    .await
                {
                    let rows = v.as_array().cloned().unwrap_or_default();
                    let known = match w.deadlines.lock() {
                        Ok(mut d) => {
                            for r in &rows {
                                let id = r["agent_id"].as_str().and_then(|s| s.strip_prefix('a'));
                                let idx = id.and_then(|n| n.parse::<usize>().ok());
                                if let (Some(i), Some(dl)) = (idx, ts_ms(&r["session"]["deadline"]))
                                {
                                    d.entry(i).or_insert(dl);
                                }
                            }
                            d.len()
                        }
                        Err(_) => 0,
                    };
                    if known >= agents {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let storm_limit = Duration::from_millis(grace_ms + 180_000);
    let started = Instant::now();
    while started.elapsed() < storm_limit && queue_waiting(w, &sup).await < total {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let storm_secs = started.elapsed().as_secs_f64();
    let _ = deadline_poll.await;
    stats.push(end(m, srv, total, &peak));

    // 5. recovery: log back in (not ready), open panels, then everyone ready at once.
    let m = begin(&rec, srv, 4, &peak);
    let _ = ctl_odd.send(Ctl::Release);
    w.finish.store(true, Ordering::Relaxed);
    let accepted_before = w.accepted.load(Ordering::Relaxed);
    let (ctl2_tx, ctl2) = watch::channel(Ctl::Run);
    each((0..a.agents).collect(), 64, |i| {
        let (w, ctl, tokens) = (w.clone(), ctl2.clone(), tokens.clone());
        async move {
            let Ok(token) = w.api.login(&format!("a{i}")).await else {
                return;
            };
            let body = json!({"presence": "not_ready"});
            let _ = w
                .api
                .call(
                    "rest",
                    "PUT",
                    "/api/v1/agent/presence",
                    Some(&token),
                    Some(body),
                )
                .await;
            match ws_connect(&w.base_ws, "/api/v1/agent/ws", &token).await {
                Ok(ws) => {
                    tokio::spawn(panel(w.clone(), i, token.clone(), ws, ctl));
                }
                Err(e) => w.rec.error(format!("panel ws: {e}")),
            }
            if let Ok(mut t) = tokens.lock() {
                t[i] = token;
            }
        }
    })
    .await;
    let ready_at = Instant::now();
    let all_tokens: Vec<String> = tokens.lock().map(|t| t.clone()).unwrap_or_default();
    each(all_tokens.clone(), 128, |t| {
        let w = w.clone();
        async move {
            let body = json!({"presence": "ready"});
            let _ = w
                .api
                .call(
                    "rest",
                    "PUT",
                    "/api/v1/agent/presence",
                    Some(&t),
                    Some(body),
                )
                .await;
        }
    })
    .await;
    let reoffered = || w.reoffers.lock().map(|r| r.len() as u64).unwrap_or(0);
    until(Duration::from_secs(120), || reoffered() >= total).await;
    let last_offer = w
        .reoffers
        .lock()
        .map(|r| r.iter().map(|x| x.3).max())
        .ok()
        .flatten();
    let offered_all = last_offer.map(|t| t.saturating_duration_since(ready_at).as_secs_f64());
    // Every requeued chat in process again (accepted), polled every 5 ms.
    let all_taken = || w.accepted.load(Ordering::Relaxed) - accepted_before >= total;
    until(Duration::from_secs(120), all_taken).await;
    let accepted_all = all_taken().then(|| ready_at.elapsed().as_secs_f64());
    until(Duration::from_secs(180), || {
        w.finished.load(Ordering::Relaxed) >= total
    })
    .await;
    stats.push(end(
        m,
        srv,
        w.accepted.load(Ordering::Relaxed) - accepted_before,
        &peak,
    ));

    // 6. settle: everyone leaves; nothing connected.
    let m = begin(&rec, srv, 5, &peak);
    let _ = cust_stop_tx.send(true);
    each(all_tokens, 64, |t| {
        let w = w.clone();
        async move {
            let _ = w
                .api
                .call("rest", "POST", "/api/v1/logout", Some(&t), None)
                .await;
        }
    })
    .await;
    let _ = ctl2_tx.send(Ctl::Release);
    let _ = dash_stop_tx.send(true);
    let mut dash_ends = Vec::new();
    for d in dashes {
        dash_ends.push(d.await.unwrap_or_else(|_| "task failed".into()));
    }
    probe_stop.store(true, Ordering::Relaxed);
    let _ = probe.await;
    let _ = w
        .api
        .call("rest", "POST", "/api/v1/logout", Some(&sup), None)
        .await;
    tokio::time::sleep(Duration::from_secs(a.settle_secs)).await;
    stats.push(end(m, srv, 0, &peak));
    sampler.abort();
    let rss_after = srv.rss_kib();
    let (anon_after, file_after) = srv.rss_split_kib();
    let hwm = proc_field(srv.pid, "VmHWM:");
    if a.hold_secs > 0 {
        println!("# holding server pid {} for {} s", srv.pid, a.hold_secs);
        tokio::time::sleep(Duration::from_secs(a.hold_secs)).await;
    }
    srv.stop();
    *srv = Server::start(&a.server, config, &dir.join("server-restart.log"))?;
    wait_ready(&w.api).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_fresh = srv.rss_kib();
    let (anon_fresh, file_fresh) = srv.rss_split_kib();

    report(
        a,
        w,
        &stats,
        storm_secs,
        (offered_all, accepted_all),
        &dash_ends,
    );
    println!();
    println!("| RSS | MiB |");
    println!("|---|---:|");
    println!(
        "| at start (ready, nothing connected) | {:.1} |",
        rss_start as f64 / 1024.0
    );
    println!(
        "| before the storm (end of steady) | {:.1} |",
        stats[STORM - 1].rss_end as f64 / 1024.0
    );
    println!("| peak (VmHWM) | {:.1} |", hwm as f64 / 1024.0);
    println!(
        "| {} s after everything ended | {:.1} |",
        a.settle_secs,
        rss_after as f64 / 1024.0
    );
    println!(
        "| fresh restart on the same data | {:.1} |",
        rss_fresh as f64 / 1024.0
    );
    println!(
        "| ratio after / fresh | {:.2} |",
        rss_after as f64 / rss_fresh.max(1) as f64
    );
    println!();
    let mib = |k: u64| k as f64 / 1024.0;
    println!("| RSS split (MiB) | anonymous (heap, stacks) | mapped from the program file |");
    println!("|---|---:|---:|");
    println!(
        "| {} s after everything ended | {:.1} | {:.1} |",
        a.settle_secs,
        mib(anon_after),
        mib(file_after)
    );
    println!(
        "| fresh restart on the same data | {:.1} | {:.1} |",
        mib(anon_fresh),
        mib(file_fresh)
    );
    println!(
        "| ratio after / fresh | {:.2} | {:.2} |",
        anon_after as f64 / anon_fresh.max(1) as f64,
        file_after as f64 / file_fresh.max(1) as f64
    );
    Ok(())
}

fn report(
    a: &Args,
    w: &World,
    stats: &[PhaseStat],
    storm_secs: f64,
    (offered_all, accepted_all): (Option<f64>, Option<f64>),
    dash_ends: &[String],
) {
    let rec = &w.rec;
    println!();
    println!(
        "| phase | secs | work | work/s | REST p50 / p99 ms | login p50 / p99 ms | server CPU s | RSS end / peak MiB | Dashboard frames |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (p, s) in stats.iter().enumerate() {
        let mut r = rec.take(p, "rest");
        let mut l = rec.take(p, "login");
        r.sort_unstable();
        l.sort_unstable();
        println!(
            "| {} | {:.2} | {} | {:.0} | {} / {} | {} / {} | {:.2} | {:.1} / {:.1} | {} |",
            PHASES[p],
            s.secs,
            s.work,
            s.work as f64 / s.secs.max(1e-9),
            ms(pct(&r, 0.5)),
            ms(pct(&r, 0.99)),
            ms(pct(&l, 0.5)),
            ms(pct(&l, 0.99)),
            s.cpu_secs,
            s.rss_end as f64 / 1024.0,
            s.rss_peak as f64 / 1024.0,
            rec.dash_frames[p].load(Ordering::Relaxed),
        );
    }
    let deadlines = w.deadlines.lock().map(|d| d.clone()).unwrap_or_default();
    let holder = w.holder.lock().map(|h| h.clone()).unwrap_or_default();
    let reoffers = w.reoffers.lock().map(|r| r.clone()).unwrap_or_default();
    let seen = w
        .customer_seen
        .lock()
        .map(|s| s.clone())
        .unwrap_or_default();
    let deadline_of = |prev: &str| holder.get(prev).and_then(|i| deadlines.get(i)).copied();
    let mut server: Vec<u64> = reoffers
        .iter()
        .filter_map(|(_, prev, created, _)| {
            deadline_of(prev).map(|d| (created - d).max(0) as u64 * 1000)
        })
        .collect();
    let mut customer: Vec<u64> = seen
        .iter()
        .filter_map(|(prev, at)| deadline_of(prev).map(|d| (at - d).max(0) as u64 * 1000))
        .collect();
    server.sort_unstable();
    customer.sort_unstable();
    println!();
    println!("| requeue lateness after the deadline | chats | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|");
    for (name, v) in [
        ("server (created_at)", &server),
        ("customer socket", &customer),
    ] {
        println!(
            "| {name} | {} | {} | {} | {} |",
            v.len(),
            ms(pct(v, 0.5)),
            ms(pct(v, 0.99)),
            ms(v.last().copied().unwrap_or(0))
        );
    }
    println!();
    println!(
        "storm: all {} chats waiting {:.2} s after the drop; every requeued chat offered again {} and in process {} after the agents turned ready",
        a.agents * a.chats,
        storm_secs,
        offered_all
            .map(|s| format!("{s:.2} s"))
            .unwrap_or_else(|| "never".into()),
        accepted_all
            .map(|s| format!("{s:.2} s"))
            .unwrap_or_else(|| "never".into())
    );
    println!("dashboards: {}", dash_ends.join(", "));
    let errors = rec.errors.lock().map(|e| e.clone()).unwrap_or_default();
    let mut errors: Vec<_> = errors.into_iter().collect();
    errors.sort();
    for ((p, what), n) in errors {
        println!("errors in {}: {what} × {n}", PHASES[p]);
    }
}

async fn queue_waiting(w: &World, sup: &str) -> u64 {
    match w
        .api
        .call("rest", "GET", "/api/v1/queues", Some(sup), None)
        .await
    {
        Ok((200, v)) => v
            .as_array()
            .map(|r| r.iter().filter_map(|q| q["waiting"].as_u64()).sum())
            .unwrap_or(0),
        _ => 0,
    }
}
