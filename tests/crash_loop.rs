//! Crash loop (real binary, real sockets, redb store): `switchboard serve` is killed with
//! SIGKILL at random moments under mixed traffic — web chats with customer messages, SMS
//! through the integration API, emails, SIP REGISTERs over UDP, an agent accepting chats and
//! a supervisor releasing that agent (which requeues the chats) — and restarted on the same
//! data directory each time. After every restart:
//!
//! - every acknowledged message (2xx reply) is in its conversation's transcript;
//! - no chat was requeued twice, and every requeue kept the original's `queue_arrival_time`;
//! - the agent session left in its grace period resumes with the token it had;
//! - every acknowledged SIP registration that has not expired is restored.
//!
//! `SWITCHBOARD_CRASH_KILLS` sets the number of kills (default 5), `SWITCHBOARD_CRASH_SEED`
//! the seed of the moments (default 12). The figures are printed as `crash_loop ...`.
// The test waits on real processes (start, traffic until the kill, exit) with deadlines;
// no deadline of the server needs a real wait.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use common::{API_KEY, password, test_config};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchboard::sip::message::{SipMessage, parse};
use switchboard::sip::registrar::{digest_ha1, digest_response};
use tokio::net::UdpSocket;
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
/// Lifetime asked for by the phones' REGISTERs.
const SIP_EXPIRES_SECS: u64 = 600;

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `switchboard serve` on one data directory, restartable.
struct Server {
    config: PathBuf,
    log: PathBuf,
    port: u16,
    sip: SocketAddr,
    child: Option<Child>,
}

impl Server {
    fn new(dir: &Path) -> Server {
        let port = free_tcp_port();
        let sip: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
        let mut cfg = test_config();
        cfg.server.http_listen = format!("127.0.0.1:{port}").parse().unwrap();
        cfg.server.data_dir = dir.join("data");
        cfg.sip.enabled = true;
        cfg.sip.listen = sip;
        cfg.sip.max_expires = Duration::from_secs(3600);
        cfg.limits.customer_messages_per_minute = 100_000;
        cfg.limits.chats_per_minute = 100_000;
        cfg.limits.login_per_minute = 100_000;
        cfg.limits.max_messages_per_thread = 100_000;
        // Long enough that the agent left in grace is still there after every restart.
        cfg.resilience.session_grace = Duration::from_secs(600);
        let config = dir.join("switchboard.toml");
        std::fs::write(&config, cfg.to_toml_string().unwrap()).unwrap();
        Server {
            config,
            log: dir.join("switchboard.log"),
            port,
            sip,
            child: None,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .env("RUST_LOG", "warn")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `/readyz` answers 200; fails with the log if the process exits first.
    async fn wait_ready(&mut self, http: &Http) {
        let start = Instant::now();
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "switchboard exited ({status}) while starting; log:\n{}",
                    self.log_text()
                );
            }
            if let Some((200, _)) = http
                .call("GET", &format!("{}/readyz", self.url()), None, None)
                .await
            {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "not ready within 30 s; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Clone)]
struct Http(Client<HttpConnector, Full<Bytes>>);

impl Http {
    fn new() -> Http {
        let mut c = HttpConnector::new();
        c.set_connect_timeout(Some(Duration::from_millis(500)));
        Http(Client::builder(TokioExecutor::new()).build(c))
    }

    /// `None` when the server cannot be reached or does not answer within 5 s.
    async fn call(
        &self,
        method: &str,
        url: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Option<(u16, Value)> {
        let mut req = hyper::Request::builder().method(method).uri(url);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let bytes = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                b.to_string().into_bytes()
            }
            None => Vec::new(),
        };
        let fut = self
            .0
            .request(req.body(Full::new(Bytes::from(bytes))).unwrap());
        let resp = tokio::time::timeout(Duration::from_secs(5), fut)
            .await
            .ok()?
            .ok()?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        Some((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }

    /// A call that must succeed with `want`; its body.
    async fn expect(
        &self,
        want: u16,
        method: &str,
        url: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Value {
        let (status, v) = self
            .call(method, url, token, body)
            .await
            .unwrap_or_else(|| panic!("{method} {url}: no answer"));
        assert_eq!(status, want, "{method} {url}: {v}");
        v
    }

    async fn login(&self, base: &str, user: &str) -> String {
        let v = self
            .expect(
                200,
                "POST",
                &format!("{base}/api/v1/login"),
                None,
                Some(&json!({"username": user, "password": password(user)})),
            )
            .await;
        v["token"].as_str().expect("token").to_string()
    }
}

/// A phone registering one contact for an agent over UDP with digest credentials.
struct Phone {
    sock: UdpSocket,
    user: String,
    cseq: u32,
}

impl Phone {
    async fn new(user: &str) -> Phone {
        Phone {
            sock: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            user: user.into(),
            cseq: 0,
        }
    }

    fn request(&mut self, server: SocketAddr, auth: Option<String>) -> String {
        self.cseq += 1;
        let local = self.sock.local_addr().unwrap();
        let mut text = format!(
            "REGISTER sip:{server} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK-crash-{port}-{cseq};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{user}@{server}>;tag=phone-{port}\r\n\
             To: <sip:{user}@{server}>\r\n\
             Call-ID: crash-{user}-{port}@127.0.0.1\r\n\
             CSeq: {cseq} REGISTER\r\n\
             Contact: <sip:{user}@{local}>\r\n\
             Expires: {SIP_EXPIRES_SECS}\r\n",
            port = local.port(),
            cseq = self.cseq,
            user = self.user,
        );
        if let Some(a) = auth {
            text.push_str(&a);
            text.push_str("\r\n");
        }
        text.push_str("Content-Length: 0\r\n\r\n");
        text
    }

    /// The status code answering the current CSeq, and the nonce of a 401; `None` on silence.
    async fn answer(&self) -> Option<(u16, Option<String>)> {
        let want = format!("{} ", self.cseq);
        let mut buf = vec![0u8; 65_536];
        tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                let (n, _) = self.sock.recv_from(&mut buf).await.ok()?;
                let Ok(SipMessage::Response(resp)) = parse(&buf[..n]) else {
                    continue;
                };
                if !resp.header("CSeq").unwrap_or_default().starts_with(&want) {
                    continue;
                }
                let nonce = resp.header("WWW-Authenticate").and_then(|h| {
                    h.split(',').find_map(|p| {
                        let p = p.trim().trim_start_matches("Digest ").trim();
                        let (k, v) = p.split_once('=')?;
                        (k.trim() == "nonce").then(|| v.trim().trim_matches('"').to_string())
                    })
                });
                return Some((resp.code, nonce));
            }
        })
        .await
        .ok()
        .flatten()
    }

    /// Challenge, then credentials; true when the registrar answered 200.
    async fn register(&mut self, server: SocketAddr) -> bool {
        let text = self.request(server, None);
        let _ = self.sock.send_to(text.as_bytes(), server).await;
        let Some((401, Some(nonce))) = self.answer().await else {
            return false;
        };
        let uri = format!("sip:{server}");
        let ha1 = digest_ha1(&self.user, "switchboard", &format!("{}-sip", self.user));
        let cnonce = format!("c{}", self.cseq);
        let response = digest_response(&ha1, &nonce, "00000001", &cnonce, "auth", "REGISTER", &uri);
        let auth = format!(
            "Authorization: Digest username=\"{user}\", realm=\"switchboard\", \
             nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm=MD5, \
             cnonce=\"{cnonce}\", qop=auth, nc=00000001",
            user = self.user
        );
        let text = self.request(server, Some(auth));
        let _ = self.sock.send_to(text.as_bytes(), server).await;
        matches!(self.answer().await, Some((200, _)))
    }
}

/// Everything the server acknowledged, for the checks after each restart.
#[derive(Default)]
struct Acked {
    /// Conversation id → texts acknowledged into its transcript.
    messages: BTreeMap<String, BTreeSet<String>>,
    /// Agent → wall time (ms) when its last acknowledged registration expires.
    registered_until: BTreeMap<String, i64>,
    count: usize,
}

impl Acked {
    fn message(&mut self, conversation: &str, text: String) {
        self.count += 1;
        self.messages
            .entry(conversation.to_string())
            .or_default()
            .insert(text);
    }
}

type Shared = Arc<Mutex<Acked>>;

/// Customers of web chats: (conversation id, chat token).
type Chats = Arc<Mutex<Vec<(String, String)>>>;

/// Web chat traffic: a new chat now and then, customer messages to random chats.
async fn chat_traffic(http: Http, base: String, chats: Chats, acked: Shared, round: usize) {
    let mut rng = StdRng::seed_from_u64(round as u64);
    for k in 0.. {
        if k % 10 == 0 {
            let r = http
                .call(
                    "POST",
                    &format!("{base}/api/v1/chats"),
                    None,
                    Some(&json!({"queue": "support", "name": format!("web {round}.{k}")})),
                )
                .await;
            match r {
                Some((201, v)) => chats.lock().unwrap().push((
                    v["conversation_id"].as_str().unwrap().to_string(),
                    v["token"].as_str().unwrap().to_string(),
                )),
                Some(_) => {}
                None => return,
            }
        }
        let pick = {
            let c = chats.lock().unwrap();
            (!c.is_empty()).then(|| c[rng.gen_range(0..c.len())].clone())
        };
        let Some((conversation, token)) = pick else {
            continue;
        };
        let text = format!("chat r{round} m{k}");
        match http
            .call(
                "POST",
                &format!("{base}/api/v1/chat/messages"),
                Some(&token),
                Some(&json!({"text": text})),
            )
            .await
        {
            Some((s, _)) if (200..300).contains(&s) => {
                acked.lock().unwrap().message(&conversation, text);
            }
            Some(_) => {}
            None => return,
        }
    }
}

/// SMS from a handful of senders through the integration API.
async fn sms_traffic(http: Http, base: String, acked: Shared, round: usize) {
    for k in 0.. {
        let text = format!("sms r{round} m{k}");
        let body = json!({"medium": "sms", "from": format!("+1555000{:02}", k % 12),
                          "text": text, "queue": "support"});
        match http
            .call(
                "POST",
                &format!("{base}/api/v1/inbound/messages"),
                Some(API_KEY),
                Some(&body),
            )
            .await
        {
            Some((s, v)) if (200..300).contains(&s) => {
                acked
                    .lock()
                    .unwrap()
                    .message(v["id"].as_str().expect("conversation id"), text);
            }
            Some(_) => {}
            None => return,
        }
    }
}

/// Emails through the integration API, a few per round.
async fn email_traffic(http: Http, base: String, acked: Shared, round: usize) {
    for k in 0.. {
        let text = format!("email r{round} m{k}");
        let body = json!({"from": format!("customer{k}@example.com"),
                          "subject": format!("case {round}.{k}"), "text": text, "queue": "mail"});
        match http
            .call(
                "POST",
                &format!("{base}/api/v1/inbound/emails"),
                Some(API_KEY),
                Some(&body),
            )
            .await
        {
            Some((s, v)) if (200..300).contains(&s) => {
                acked
                    .lock()
                    .unwrap()
                    .message(v["id"].as_str().expect("conversation id"), text);
            }
            Some(_) => {}
            None => return,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Both phones register again and again; each 200 is remembered with its expiry.
async fn sip_traffic(mut phones: Vec<Phone>, sip: SocketAddr, acked: Shared) -> Vec<Phone> {
    for _ in 0..20 {
        for p in &mut phones {
            let asked_at = now_ms();
            if p.register(sip).await {
                acked
                    .lock()
                    .unwrap()
                    .registered_until
                    .insert(p.user.clone(), asked_at + SIP_EXPIRES_SECS as i64 * 1000);
            } else {
                return phones;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    phones
}

/// Bob's panel: accepts every chat offered to him until the socket goes away.
async fn bob_accepts(http: Http, base: String, port: u16, token: String) {
    let url = format!("ws://127.0.0.1:{port}/api/v1/agent/ws?token={token}");
    let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url).await else {
        return;
    };
    use futures_util::StreamExt;
    while let Some(Ok(msg)) = ws.next().await {
        let Message::Text(t) = msg else { continue };
        let Ok(v) = serde_json::from_str::<Value>(&t) else {
            continue;
        };
        let mut offered = Vec::new();
        if v["type"] == "conversation" {
            offered.push(v["conversation"].clone());
        } else if v["type"] == "snapshot" {
            offered.extend(v["conversations"].as_array().cloned().unwrap_or_default());
        }
        for c in offered {
            if c["status"] == "offered" && c["agent"] == "bob" {
                let id = c["id"].as_str().unwrap_or_default();
                let _ = http
                    .call(
                        "POST",
                        &format!("{base}/api/v1/conversations/{id}/accept"),
                        Some(&token),
                        None,
                    )
                    .await;
            }
        }
    }
}

/// Every conversation of `channel`, newest first, page by page.
async fn all_conversations(http: &Http, base: &str, sup: &str, channel: &str) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    loop {
        let mut url = format!("{base}/api/v1/conversations?channel={channel}&limit=1000");
        if let Some(last) = out.last() {
            url.push_str(&format!("&before={}", last["id"].as_str().unwrap()));
        }
        let page = http.expect(200, "GET", &url, Some(sup), None).await;
        let page = page.as_array().expect("array").clone();
        let done = page.len() < 1000;
        out.extend(page);
        if done {
            return out;
        }
    }
}

/// The checks after a restart; returns the number of requeued chats seen.
async fn check_invariants(
    http: &Http,
    server: &Server,
    acked: &Shared,
    alice: &str,
    after_kill: usize,
) -> usize {
    let base = server.url();
    let sup = http.login(&base, "sam").await;

    // Every acknowledged message is in its conversation's transcript.
    let expected: Vec<(String, BTreeSet<String>)> = acked
        .lock()
        .unwrap()
        .messages
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (conversation, texts) in expected {
        let details = http
            .expect(
                200,
                "GET",
                &format!("{base}/api/v1/conversations/{conversation}"),
                Some(&sup),
                None,
            )
            .await;
        let stored: BTreeSet<&str> = details["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .filter_map(|m| m["text"].as_str())
            .collect();
        for t in &texts {
            assert!(
                stored.contains(t.as_str()),
                "after kill {after_kill}: {t:?} was acknowledged but is not in conversation \
                 {conversation}"
            );
        }
    }

    // No chat requeued twice; every requeue kept the original's arrival time.
    let chats = all_conversations(http, &base, &sup, "chat").await;
    let by_id: BTreeMap<&str, &Value> = chats
        .iter()
        .map(|c| (c["id"].as_str().unwrap(), c))
        .collect();
    let mut requeued_from: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &chats {
        if c["origin"]["kind"] == "requeue" {
            let previous = c["origin"]["previous"].as_str().expect("previous");
            *requeued_from.entry(previous).or_default() += 1;
            let original = by_id
                .get(previous)
                .unwrap_or_else(|| panic!("requeued from a missing conversation: {c}"));
            assert_eq!(
                c["queue_arrival_time"], original["queue_arrival_time"],
                "after kill {after_kill}: the requeue {} lost the arrival time of {previous}",
                c["id"]
            );
            assert_eq!(
                original["status"], "handled",
                "after kill {after_kill}: the original of a requeue is still open: {original}"
            );
        }
    }
    for (previous, n) in &requeued_from {
        assert_eq!(
            *n, 1,
            "after kill {after_kill}: {previous} requeued {n} times"
        );
    }

    // The agent left in grace resumes with her token.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://127.0.0.1:{}/api/v1/agent/ws?token={alice}",
        server.port
    ))
    .await
    .unwrap_or_else(|e| panic!("after kill {after_kill}: alice cannot resume: {e}"));
    let snap = common::next_json(&mut ws).await;
    assert_eq!(snap["type"], "snapshot", "after kill {after_kill}: {snap}");
    assert_eq!(snap["session"]["agent_id"], "alice", "{snap}");
    drop(ws);

    // Acknowledged registrations that have not expired are restored.
    let agents = http
        .expect(
            200,
            "GET",
            &format!("{base}/api/v1/agents"),
            Some(&sup),
            None,
        )
        .await;
    let until = acked.lock().unwrap().registered_until.clone();
    for (agent, until) in until {
        if until > now_ms() + 5_000 {
            let row = agents
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["agent_id"] == agent.as_str())
                .expect("agent row");
            assert_eq!(
                row["sip"]["registered"], true,
                "after kill {after_kill}: {agent}'s registration was not restored: {row}"
            );
        }
    }
    requeued_from.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_mixed_traffic_loses_nothing_acknowledged() {
    let kills: usize = std::env::var("SWITCHBOARD_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let seed: u64 = std::env::var("SWITCHBOARD_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::new(dir.path());
    let http = Http::new();
    let acked: Shared = Arc::default();
    let chats: Chats = Arc::default();
    let mut phones = vec![Phone::new("alice").await, Phone::new("bob").await];

    server.start();
    server.wait_ready(&http).await;
    let base = server.url();
    // Alice logs in, stays out of routing, opens her panel and loses it: she is in grace.
    let alice = http.login(&base, "alice").await;
    http.expect(
        200,
        "PUT",
        &format!("{base}/api/v1/agent/presence"),
        Some(&alice),
        Some(&json!({"presence": "not_ready"})),
    )
    .await;
    let (ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://127.0.0.1:{}/api/v1/agent/ws?token={alice}",
        server.port
    ))
    .await
    .unwrap();
    drop(ws);

    let started = Instant::now();
    let mut requeues = 0;
    let mut releases = 0;
    for round in 1..=kills {
        let base = server.url();
        let sup = http.login(&base, "sam").await;
        let bob = http.login(&base, "bob").await;
        let bob_panel = tokio::spawn(bob_accepts(
            http.clone(),
            base.clone(),
            server.port,
            bob.clone(),
        ));
        let traffic = vec![
            tokio::spawn(chat_traffic(
                http.clone(),
                base.clone(),
                chats.clone(),
                acked.clone(),
                round,
            )),
            tokio::spawn(sms_traffic(
                http.clone(),
                base.clone(),
                acked.clone(),
                round,
            )),
            tokio::spawn(email_traffic(
                http.clone(),
                base.clone(),
                acked.clone(),
                round,
            )),
        ];
        let sip = tokio::spawn(sip_traffic(phones, server.sip, acked.clone()));

        // At a random moment the supervisor releases Bob (his chats are requeued); at
        // another, independent one, the process is killed.
        let kill_ms = rng.gen_range(200..1500);
        let kill_at = Duration::from_millis(kill_ms);
        let release_at = Duration::from_millis(rng.gen_range(kill_ms / 3..kill_ms + 100));
        let release = {
            let (http, base, sup) = (http.clone(), base.clone(), sup.clone());
            tokio::spawn(async move {
                tokio::time::sleep(release_at).await;
                http.call(
                    "POST",
                    &format!("{base}/api/v1/agents/bob/release"),
                    Some(&sup),
                    None,
                )
                .await
            })
        };
        tokio::time::sleep(kill_at).await;
        server.kill();
        for t in traffic {
            t.await.unwrap();
        }
        phones = sip.await.unwrap();
        bob_panel.await.unwrap();
        if let Some((200, _)) = release.await.unwrap() {
            releases += 1;
        }

        server.start();
        server.wait_ready(&http).await;
        requeues = check_invariants(&http, &server, &acked, &alice, round).await;
    }
    let acked = acked.lock().unwrap();
    println!(
        "crash_loop kills={kills} seed={seed} acknowledged_messages={} conversations={} \
         chats={} releases={releases} requeued_chats={requeues} secs={:.1}",
        acked.count,
        acked.messages.len(),
        chats.lock().unwrap().len(),
        started.elapsed().as_secs_f64()
    );
    assert!(acked.count > 0, "no message was acknowledged");
    assert_eq!(
        acked.registered_until.len(),
        2,
        "both phones registered at least once"
    );
}
