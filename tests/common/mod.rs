//! Test harness: a real switchboard on 127.0.0.1 port 0 with a temporary data directory and
//! a manual clock (deadlines are passed with `advance`, never by sleeping), restartable on the
//! same data directory; plus HTTP and WebSocket client helpers.
#![allow(
    dead_code,
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::field_reassign_with_default
)]

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use switchboard::app::{App, Listeners};
use switchboard::config::{
    AgentConfig, ApiKeyConfig, Capacity, Channel, Config, QueueConfig, RequeuePosition,
    SupervisorConfig,
};
use switchboard::driver::{Clock, Handle};
use switchboard::store::Store;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The integration API key every test config accepts.
pub const API_KEY: &str = "test-integration-key-0123456789abcdef0123456789abcdef";
/// Passwords: every agent's and supervisor's password is its id followed by "-pw".
pub fn password(user: &str) -> String {
    format!("{user}-pw")
}

/// Start time of the manual clock: 2026-11-23T10:00:00Z.
pub const START_WALL: i64 = 1_795_428_000_000;

fn argon2_hash(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    // Low-cost parameters keep the tests fast; production hashes use argon2's defaults.
    let params = argon2::Params::new(1024, 1, 1, None).expect("params");
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(b"switchboard-test").expect("salt");
    a.hash_password(password.as_bytes(), &salt)
        .expect("hash")
        .to_string()
}

fn queue(id: &str, channel: Channel) -> QueueConfig {
    QueueConfig {
        id: id.into(),
        name: format!("{id} queue"),
        channel,
        offer_timeout: None,
        not_ready_after_no_response: false,
        session_lost_prompt: None,
        reconnecting_prompt: None,
        requeue_position: RequeuePosition::Original,
        sticky_agent: std::time::Duration::ZERO,
    }
}

/// The test configuration: queues `support` (chat, with both prompts), `phones` (voice),
/// `mail` (email); agents `alice` and `bob` in all three, `carol` in `support` only;
/// supervisor `sam`; one API key ([`API_KEY`]). Grace 60 s, heartbeat 5 s / 15 s, reconnecting
/// prompt at the loss.
pub fn test_config() -> Config {
    let mut cfg = Config::default();
    let mut support = queue("support", Channel::Chat);
    support.session_lost_prompt = Some(
        "Sorry for the wait: your agent was disconnected. You keep your place in the queue.".into(),
    );
    support.reconnecting_prompt = Some("Your agent is reconnecting…".into());
    // Stories see the reconnecting prompt at the loss; the delay has its own tests.
    cfg.resilience.reconnecting_prompt_delay = Duration::ZERO;
    cfg.queues = vec![
        support,
        queue("phones", Channel::Voice),
        queue("mail", Channel::Email),
    ];
    let agent = |id: &str, name: &str, queues: &[&str]| AgentConfig {
        id: id.into(),
        name: name.into(),
        password_hash: argon2_hash(&password(id)),
        sip_password: format!("{id}-sip"),
        queues: queues.iter().map(|s| s.to_string()).collect(),
        capacity: Capacity::default(),
    };
    cfg.agents = vec![
        agent("alice", "Alice", &["support", "phones", "mail"]),
        agent("bob", "Bob", &["support", "phones", "mail"]),
        agent("carol", "Carol", &["support"]),
    ];
    cfg.supervisors = vec![SupervisorConfig {
        id: "sam".into(),
        name: "Sam".into(),
        password_hash: argon2_hash(&password("sam")),
    }];
    use sha2::Digest;
    cfg.api_keys = vec![ApiKeyConfig {
        id: "crm".into(),
        key_sha256: hex::encode(sha2::Sha256::digest(API_KEY.as_bytes())),
    }];
    cfg.sip.listen = "127.0.0.1:0".parse().expect("addr");
    cfg.server.http_listen = "127.0.0.1:0".parse().expect("addr");
    cfg
}

/// A running server.
pub struct TestServer {
    pub addr: SocketAddr,
    pub sip_addr: Option<SocketAddr>,
    pub handle: Handle,
    pub metrics: Arc<switchboard::metrics::Metrics>,
    pub cfg: Arc<Config>,
    pub dir: Arc<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    pub http: reqwest_lite::Client,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(test_config()).await
    }

    pub async fn start_with(cfg: Config) -> TestServer {
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        Self::start_in(cfg, dir, START_WALL).await
    }

    /// Starts on an existing data directory with the manual clock at `wall` ms.
    pub async fn start_in(mut cfg: Config, dir: Arc<tempfile::TempDir>, wall: i64) -> TestServer {
        cfg.server.data_dir = dir.path().to_path_buf();
        let cfg = Arc::new(cfg);
        let http = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
        let sip = if cfg.sip.enabled {
            Some(UdpSocket::bind("127.0.0.1:0").await.expect("bind sip"))
        } else {
            None
        };
        let store = Arc::new(Store::open(&dir.path().join("switchboard.redb")).expect("store"));
        let app = App::build(
            cfg.clone(),
            Listeners { http, sip },
            store,
            Clock::manual(wall),
        )
        .expect("app");
        let addr = app.http_addr().expect("addr");
        let sip_addr = app.sip_addr();
        let handle = app.handle.clone();
        let metrics = app.state.metrics.clone();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = app
                .run(async move {
                    let _ = rx.await;
                })
                .await;
        });
        TestServer {
            addr,
            sip_addr,
            handle,
            metrics,
            cfg,
            dir,
            stop: Some(tx),
            task: Some(task),
            http: reqwest_lite::Client::new(addr),
        }
    }

    /// Stops the server (as on SIGTERM) and waits for it to finish.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    /// Stops this server and starts a new one on the same data directory, `gap` later.
    pub async fn restart(mut self, gap: Duration) -> TestServer {
        let wall = self.handle.now().wall + gap.as_millis() as i64;
        self.stop().await;
        let cfg = (*self.cfg).clone();
        TestServer::start_in(cfg, self.dir.clone(), wall).await
    }

    /// Moves the clock forward and fires what became due.
    pub async fn advance(&self, by: Duration) {
        self.handle.advance(by).await.expect("advance");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, path: &str, token: &str) -> String {
        format!("ws://{}{}?token={}", self.addr, path, token)
    }

    /// Logs in; returns the login response (`token`, `role`, `agent_id`, `session_id`).
    pub async fn login(&self, user: &str) -> Value {
        let (status, body) = self
            .http
            .post(
                "/api/v1/login",
                None,
                &json!({"username": user, "password": password(user)}),
            )
            .await;
        assert_eq!(status, 200, "login {user}: {body}");
        body
    }

    pub async fn token(&self, user: &str) -> String {
        self.login(user).await["token"]
            .as_str()
            .expect("token")
            .to_string()
    }

    /// Opens the agent panel socket and returns it with its snapshot frame.
    pub async fn panel(&self, token: &str) -> (Ws, Value) {
        let mut ws = self.ws("/api/v1/agent/ws", token).await;
        let snap = next_json(&mut ws).await;
        assert_eq!(
            snap["type"], "snapshot",
            "first panel frame is the snapshot: {snap}"
        );
        (ws, snap)
    }

    pub async fn ws(&self, path: &str, token: &str) -> Ws {
        let (ws, _) = tokio_tungstenite::connect_async(self.ws_url(path, token))
            .await
            .expect("ws connect");
        ws
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// The next text frame as JSON (pings are answered by tungstenite); panics after 5 s.
pub async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("frame within 5 s")
            .expect("socket open")
            .expect("frame");
        match msg {
            Message::Text(t) => return serde_json::from_str(&t).expect("json frame"),
            Message::Close(c) => panic!("socket closed: {c:?}"),
            _ => continue,
        }
    }
}

/// Frames until one matches `pred` (returns it); panics after 5 s.
pub async fn wait_for(ws: &mut Ws, mut pred: impl FnMut(&Value) -> bool) -> Value {
    let search = async {
        loop {
            let msg = ws.next().await.expect("socket open").expect("frame");
            if let Message::Text(t) = msg {
                let v: Value = serde_json::from_str(&t).expect("json frame");
                if pred(&v) {
                    return v;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), search)
        .await
        .expect("expected frame within 5 s")
}

/// The close code the server sends next (skipping other frames); panics after 5 s.
pub async fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("close within 5 s")
        {
            Some(Ok(Message::Close(c))) => return c.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

pub async fn send_json(ws: &mut Ws, v: &Value) {
    ws.send(Message::Text(v.to_string().into()))
        .await
        .expect("send");
}

/// A minimal HTTP/1.1 JSON client on hyper (no extra dependencies).
pub mod reqwest_lite {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    use hyper_util::client::legacy::Client as HClient;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;
    use serde_json::Value;
    use std::net::SocketAddr;

    #[derive(Clone)]
    pub struct Client {
        addr: SocketAddr,
        inner: HClient<HttpConnector, Full<Bytes>>,
    }

    impl Client {
        pub fn new(addr: SocketAddr) -> Client {
            Client {
                addr,
                inner: HClient::builder(TokioExecutor::new()).build_http(),
            }
        }

        /// Any request; `body` is sent as-is with `content_type` when given.
        pub async fn raw(
            &self,
            method: &str,
            path: &str,
            token: Option<&str>,
            content_type: Option<&str>,
            body: Vec<u8>,
        ) -> (u16, Value) {
            let mut req = hyper::Request::builder()
                .method(method)
                .uri(format!("http://{}{}", self.addr, path));
            if let Some(t) = token {
                req = req.header("authorization", format!("Bearer {t}"));
            }
            if let Some(ct) = content_type {
                req = req.header("content-type", ct);
            }
            let resp = self
                .inner
                .request(req.body(Full::new(Bytes::from(body))).expect("request"))
                .await
                .expect("http");
            let status = resp.status().as_u16();
            let bytes = resp.into_body().collect().await.expect("body").to_bytes();
            let v = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
            };
            (status, v)
        }

        pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
            self.raw("GET", path, token, None, Vec::new()).await
        }

        pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
            self.raw(
                "POST",
                path,
                token,
                Some("application/json"),
                body.to_string().into_bytes(),
            )
            .await
        }

        pub async fn put(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
            self.raw(
                "PUT",
                path,
                token,
                Some("application/json"),
                body.to_string().into_bytes(),
            )
            .await
        }
    }
}

// ----- helpers for stories driven through the core directly -----

/// The test configuration with a heartbeat too slow to tick during a test: stories that jump
/// the manual clock by a whole grace period would otherwise see a ping the test client has not
/// read yet as unanswered for that long.
pub fn quiet() -> Config {
    let mut cfg = test_config();
    cfg.resilience.heartbeat_interval = Duration::from_secs(3600);
    cfg.resilience.heartbeat_timeout = Duration::from_secs(7200);
    cfg
}

pub async fn call(
    server: &TestServer,
    cmd: switchboard::core::Command,
) -> switchboard::core::Reply {
    server.handle.call(cmd).await.expect("command accepted")
}

/// Logs in through the core (as `POST /api/v1/login` does after checking the password).
pub async fn login(
    server: &TestServer,
    user: &str,
    role: switchboard::core::model::Role,
) -> String {
    let token = switchboard::http::extract::new_token();
    let hash = switchboard::http::extract::token_hash(&token);
    call(
        server,
        switchboard::core::Command::Login {
            user: user.into(),
            role,
            token: hash,
        },
    )
    .await;
    token
}

/// Starts a web chat in `support` (as `POST /api/v1/chats` does): the customer token and
/// the conversation id.
pub async fn start_chat(
    server: &TestServer,
    name: &str,
    text: Option<&str>,
) -> (String, uuid::Uuid) {
    let token = switchboard::http::extract::new_token();
    let cmd = switchboard::core::Command::StartChat {
        queue: "support".into(),
        name: name.into(),
        text: text.map(String::from),
        token: switchboard::http::extract::token_hash(&token),
    };
    match call(server, cmd).await {
        switchboard::core::Reply::ChatStarted {
            conversation_id, ..
        } => (token, conversation_id),
        other => panic!("expected ChatStarted, got {other:?}"),
    }
}

pub async fn accept(server: &TestServer, agent: &str, conversation: uuid::Uuid) {
    let token = switchboard::http::extract::token_hash(agent);
    call(
        server,
        switchboard::core::Command::Accept {
            token,
            conversation,
        },
    )
    .await;
}

pub async fn set_presence(
    server: &TestServer,
    agent: &str,
    presence: switchboard::core::model::Presence,
) {
    let token = switchboard::http::extract::token_hash(agent);
    call(
        server,
        switchboard::core::Command::SetPresence { token, presence },
    )
    .await;
}

pub fn conversation_of(
    reply: switchboard::core::Reply,
) -> Box<switchboard::core::view::ConversationView> {
    match reply {
        switchboard::core::Reply::Conversation(c) => c,
        other => panic!("expected a conversation, got {other:?}"),
    }
}

/// Opens the customer chat socket and returns it with its snapshot frame.
pub async fn chat(server: &TestServer, token: &str) -> (Ws, Value) {
    let mut ws = server.ws("/api/v1/chat/ws", token).await;
    let snap = next_json(&mut ws).await;
    assert_eq!(snap["type"], "snapshot", "first chat frame: {snap}");
    (ws, snap)
}

/// A customer `status` frame with this status.
pub fn is_status(v: &Value, status: &str) -> bool {
    v["type"] == "status" && v["status"] == status
}

/// A `message` frame from `from` with this text.
pub fn is_message(v: &Value, from: &str, text: &str) -> bool {
    v["type"] == "message" && v["message"]["from"] == from && v["message"]["text"] == text
}

/// The agent's session state as the core reports it.
pub async fn session_state(
    server: &TestServer,
    token: &str,
) -> switchboard::core::model::SessionState {
    let cmd = switchboard::core::Command::AgentState {
        token: switchboard::http::extract::token_hash(token),
    };
    match call(server, cmd).await {
        switchboard::core::Reply::Snapshot(s) => s.session.state,
        other => panic!("expected a snapshot, got {other:?}"),
    }
}

/// Polls the session state until it is `want` (a socket's end reaches the driver
/// asynchronously); panics after 5 s.
pub async fn wait_state(
    server: &TestServer,
    token: &str,
    want: switchboard::core::model::SessionState,
) {
    for _ in 0..500 {
        if session_state(server, token).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("session did not become {want:?} within 5 s");
}
