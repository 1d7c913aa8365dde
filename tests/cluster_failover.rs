//! Two real switchboard processes on one PostgreSQL database (docs/high-availability.md):
//! the active one is killed with SIGKILL (or frozen with SIGSTOP) under chat traffic; the
//! standby takes over, nothing acknowledged is lost, the agent's token keeps working on the
//! new node, and a frozen former leader steps down without committing.
//!
//! Needs `SWITCHBOARD_TEST_POSTGRES_URL` (tests/postgres/start.sh prints one); skipped with a
//! message without it, a failure under CI. `SWITCHBOARD_FAILOVER_ROUNDS` sets the number of
//! kills (default 3). Each failover's time (kill → first successful API call on the new active
//! node) is printed as `failover_ms ...`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use common::{password, test_config};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn postgres_url() -> Option<String> {
    match std::env::var("SWITCHBOARD_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but SWITCHBOARD_TEST_POSTGRES_URL is not set")
        }
        _ => {
            eprintln!("skipped: set SWITCHBOARD_TEST_POSTGRES_URL to run the failover tests");
            None
        }
    }
}

/// A fresh schema of its own, and the URL that puts the nodes in it.
async fn fresh_schema(url: &str, schema: &str) -> String {
    let options = switchboard::store::PostgresOptions::new(url);
    let client = options.connect_async().await.unwrap();
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ))
        .await
        .unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20search_path%3D{schema}")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Node {
    name: String,
    port: u16,
    config: std::path::PathBuf,
    child: Option<Child>,
}

impl Node {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn start(&mut self) {
        let log = std::fs::File::create(self.config.with_extension("log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .env("RUST_LOG", "info")
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

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id();
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} {pid}");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(c.id().to_string())
                .status();
        }
        self.kill();
    }
}

/// Two nodes sharing `url`, in a temporary directory.
fn cluster(dir: &std::path::Path, url: &str, lease: Duration) -> Vec<Node> {
    let ports = [free_port(), free_port()];
    let names = ["node-a", "node-b"];
    let urls: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    (0..2)
        .map(|i| {
            let mut cfg = test_config();
            cfg.server.http_listen = format!("127.0.0.1:{}", ports[i]).parse().unwrap();
            cfg.server.data_dir = dir.join(names[i]);
            cfg.sip.enabled = false;
            cfg.limits.customer_messages_per_minute = 100_000;
            cfg.limits.chats_per_minute = 1_000;
            cfg.store.backend = switchboard::config::StoreBackend::Postgres;
            cfg.store.postgres_url = Some(url.to_string());
            cfg.cluster.node_id = names[i].into();
            cfg.cluster.lease = lease;
            cfg.cluster.advertise_url = Some(urls[i].clone());
            cfg.cluster.peers = vec![urls[1 - i].clone()];
            let text = cfg.to_toml_string().unwrap();
            let config = dir.join(format!("{}.toml", names[i]));
            std::fs::write(&config, text).unwrap();
            Node {
                name: names[i].into(),
                port: ports[i],
                config,
                child: None,
            }
        })
        .collect()
}

#[derive(Clone)]
struct Http(Client<HttpConnector, Full<Bytes>>);

impl Http {
    fn new() -> Http {
        let mut c = HttpConnector::new();
        c.set_connect_timeout(Some(Duration::from_millis(500)));
        Http(Client::builder(TokioExecutor::new()).build(c))
    }

    /// `None` when the node cannot be reached at all.
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

    /// One header of a `GET url` reply.
    async fn header(&self, url: &str, name: &str) -> Option<String> {
        let req = hyper::Request::builder()
            .uri(url)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(5), self.0.request(req))
            .await
            .ok()?
            .ok()?;
        Some(resp.headers().get(name)?.to_str().ok()?.to_string())
    }

    async fn role(&self, node: &Node) -> Option<String> {
        let (_, v) = self
            .call("GET", &format!("{}/api/v1/cluster", node.url()), None, None)
            .await?;
        v["role"].as_str().map(String::from)
    }
}

/// Waits (polling) until one of `nodes` answers `/readyz` 200; its index.
async fn wait_active(http: &Http, nodes: &[Node], within: Duration) -> usize {
    let start = Instant::now();
    loop {
        for (i, n) in nodes.iter().enumerate() {
            if n.child.is_some()
                && let Some((200, _)) = http
                    .call("GET", &format!("{}/readyz", n.url()), None, None)
                    .await
            {
                return i;
            }
        }
        assert!(
            start.elapsed() < within,
            "no node became active within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_role(http: &Http, node: &Node, role: &str, within: Duration) {
    let start = Instant::now();
    while http.role(node).await.as_deref() != Some(role) {
        assert!(
            start.elapsed() < within,
            "{} is not {role} within {within:?}",
            node.name
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_active_node_under_chat_traffic_loses_nothing_acknowledged() {
    let Some(url) = postgres_url() else { return };
    let rounds: usize = std::env::var("SWITCHBOARD_FAILOVER_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let url = fresh_schema(&url, "t_failover").await;
    let dir = tempfile::tempdir().unwrap();
    let lease = Duration::from_secs(2);
    let mut nodes = cluster(dir.path(), &url, lease);
    let http = Http::new();
    nodes[0].start();
    let mut active = wait_active(&http, &nodes, Duration::from_secs(30)).await;
    nodes[1].start();
    wait_role(&http, &nodes[1], "standby", Duration::from_secs(30)).await;
    // The standby names the active node once it has read the lease.
    let start = Instant::now();
    let body = loop {
        let (status, body) = http
            .call(
                "GET",
                &format!("{}/api/v1/queues", nodes[1].url()),
                None,
                None,
            )
            .await
            .unwrap();
        assert_eq!((status, body["error"].as_str()), (503, Some("standby")));
        if body["active"] == nodes[active].url() || start.elapsed() > Duration::from_secs(5) {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(body["active"], nodes[active].url());
    // Every reply, the standby's 503 and the active node's alike, names all the nodes: the
    // pages remember them to find the active node when theirs goes away.
    for n in &nodes {
        let named = http
            .header(&format!("{}/api/v1/queues", n.url()), "x-switchboard-nodes")
            .await
            .unwrap_or_default();
        for m in &nodes {
            assert!(
                named.split(' ').any(|u| u == m.url()),
                "{} does not name {} in {named:?}",
                n.url(),
                m.url()
            );
        }
    }

    let (_, login) = http
        .call(
            "POST",
            &format!("{}/api/v1/login", nodes[active].url()),
            None,
            Some(&json!({"username": "alice", "password": password("alice")})),
        )
        .await
        .unwrap();
    let agent_token = login["token"].as_str().expect("token").to_string();

    let mut customers = Vec::new();
    for i in 0..4 {
        let (status, chat) = http
            .call(
                "POST",
                &format!("{}/api/v1/chats", nodes[active].url()),
                None,
                Some(&json!({"queue": "support", "name": format!("customer {i}")})),
            )
            .await
            .unwrap();
        assert_eq!(status, 201, "{chat}");
        customers.push(chat["token"].as_str().unwrap().to_string());
    }

    let mut acked: Vec<BTreeSet<String>> = vec![BTreeSet::new(); customers.len()];
    let mut failovers = Vec::new();
    for round in 0..rounds {
        // Traffic, then the kill while messages are still being sent.
        let base = nodes[active].url();
        let mut sends = Vec::new();
        for (c, token) in customers.iter().enumerate() {
            let (http, base, token) = (http.clone(), base.clone(), token.clone());
            sends.push(tokio::spawn(async move {
                let mut ok = Vec::new();
                for k in 0..15 {
                    let text = format!("round {round} customer {c} message {k}");
                    let r = http
                        .call(
                            "POST",
                            &format!("{base}/api/v1/chat/messages"),
                            Some(&token),
                            Some(&json!({"text": text})),
                        )
                        .await;
                    if matches!(r, Some((200, _)) | Some((201, _))) {
                        ok.push(text);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                ok
            }));
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        nodes[active].kill();
        let killed_at = Instant::now();
        for (c, s) in sends.into_iter().enumerate() {
            acked[c].extend(s.await.unwrap());
        }
        let next = wait_active(&http, &nodes, lease + Duration::from_secs(10)).await;
        failovers.push(killed_at.elapsed().as_secs_f64() * 1000.0);
        assert_ne!(next, active);
        // The agent's token works on the new node: the panel resumes there.
        let ws_url = format!(
            "ws://127.0.0.1:{}/api/v1/agent/ws?token={agent_token}",
            nodes[next].port
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(ws_url)
            .await
            .expect("panel on the new node");
        let snap = common::next_json(&mut ws).await;
        assert_eq!(snap["type"], "snapshot", "{snap}");
        drop(ws);
        nodes[active].start();
        wait_role(&http, &nodes[active], "standby", Duration::from_secs(30)).await;
        active = next;
    }

    // Every acknowledged message is in the transcript, once.
    for (c, token) in customers.iter().enumerate() {
        let (status, chat) = http
            .call(
                "GET",
                &format!("{}/api/v1/chat", nodes[active].url()),
                Some(token),
                None,
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{chat}");
        let texts: Vec<&str> = chat["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .filter_map(|m| m["text"].as_str())
            .collect();
        for want in &acked[c] {
            assert_eq!(
                texts.iter().filter(|t| *t == want).count(),
                1,
                "customer {c}: {want:?} acknowledged but not stored exactly once"
            );
        }
        assert!(!acked[c].is_empty());
    }

    failovers.sort_by(f64::total_cmp);
    println!(
        "failover_ms n={} p50={:.0} p99={:.0} max={:.0} (lease {} ms)",
        failovers.len(),
        percentile(&failovers, 0.5),
        percentile(&failovers, 0.99),
        failovers.last().unwrap(),
        lease.as_millis()
    );
    assert!(
        percentile(&failovers, 0.99) <= (lease + Duration::from_secs(2)).as_secs_f64() * 1000.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_active_node_steps_down_when_resumed_and_commits_nothing() {
    let Some(url) = postgres_url() else { return };
    let url = fresh_schema(&url, "t_split_brain").await;
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(dir.path(), &url, Duration::from_secs(1));
    let http = Http::new();
    nodes[0].start();
    wait_active(&http, &nodes, Duration::from_secs(30)).await;
    nodes[1].start();
    wait_role(&http, &nodes[1], "standby", Duration::from_secs(30)).await;
    let (status, chat) = http
        .call(
            "POST",
            &format!("{}/api/v1/chats", nodes[0].url()),
            None,
            Some(&json!({"queue": "support", "name": "Ann"})),
        )
        .await
        .unwrap();
    assert_eq!(status, 201);
    let token = chat["token"].as_str().unwrap().to_string();

    // Freeze the active node until the standby has taken over.
    nodes[0].signal("STOP");
    wait_role(&http, &nodes[1], "active", Duration::from_secs(10)).await;
    let (status, _) = http
        .call(
            "POST",
            &format!("{}/api/v1/chat/messages", nodes[1].url()),
            Some(&token),
            Some(&json!({"text": "after takeover"})),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);

    // Resumed, the old node steps down; whatever it tries to commit is refused.
    nodes[0].signal("CONT");
    let from_old = {
        let http = http.clone();
        let (url, token) = (nodes[0].url(), token.clone());
        tokio::spawn(async move {
            http.call(
                "POST",
                &format!("{url}/api/v1/chat/messages"),
                Some(&token),
                Some(&json!({"text": "from the old node"})),
            )
            .await
        })
    };
    wait_role(&http, &nodes[0], "standby", Duration::from_secs(5)).await;
    let answered = from_old.await.unwrap();
    assert!(
        !matches!(answered, Some((200, _))),
        "the old node acknowledged a write: {answered:?}"
    );
    let (_, transcript) = http
        .call(
            "GET",
            &format!("{}/api/v1/chat", nodes[1].url()),
            Some(&token),
            None,
        )
        .await
        .unwrap();
    let texts: Vec<&str> = transcript["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert!(texts.contains(&"after takeover"));
    assert!(!texts.contains(&"from the old node"), "{texts:?}");
    assert_eq!(http.role(&nodes[1]).await.as_deref(), Some("active"));
}
