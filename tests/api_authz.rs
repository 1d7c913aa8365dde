//! Authorization matrix of the REST API (docs/api.md#authentication): every route × every kind of
//! caller, each row in a fresh world where agent A holds a chat, has one offered, has a call in
//! wrap-up, and a customer chat exists; the exact status is asserted for every cell.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use common::{API_KEY, TestServer, test_config};
use serde_json::{Value, json};
use switchboard::config::{Channel, QueueConfig, RequeuePosition};
use switchboard::core::{BindingUpdate, Command};
use switchboard::driver::FrameRx;
use switchboard::http::extract::token_hash;

/// Columns of the matrix, in display order.
const CALLERS: [&str; 7] = [
    "anonymous",
    "agent A",
    "agent B",
    "supervisor",
    "customer",
    "API key",
    "bad token",
];
/// The order the callers act in within a row: the one most often allowed (A) goes last, so
/// that a refused caller never sees the world changed by an allowed one before it.
const EXEC_ORDER: [usize; 7] = [0, 6, 5, 4, 2, 3, 1];

/// A world: alice (A) holds chat `c1` of customer `customer` and has `c2` offered and call
/// `v1` in wrap-up; bob (B) is connected but not ready; `v2` waits in `phones`; `c3` waits in
/// `vip`, a chat queue only alice belongs to.
struct World {
    server: TestServer,
    tokens: [Option<String>; 7],
    c1: String,
    c2: String,
    c3: String,
    v1: String,
    v2: String,
    group1: String,
    _panels: Vec<FrameRx>,
}

fn id_of(v: &Value) -> String {
    v["id"]
        .as_str()
        .or_else(|| v["conversation_id"].as_str())
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_string()
}

async fn world() -> World {
    let mut cfg = test_config();
    cfg.queues.push(QueueConfig {
        id: "vip".into(),
        name: "VIP chat".into(),
        channel: Channel::Chat,
        offer_timeout: None,
        not_ready_after_no_response: false,
        session_lost_prompt: None,
        reconnecting_prompt: None,
        requeue_position: RequeuePosition::Original,
        sticky_agent: std::time::Duration::ZERO,
    });
    cfg.agents[0].queues.push("vip".into());
    cfg.limits.login_per_minute = 1000;
    cfg.limits.chats_per_minute = 1000;
    let server = TestServer::start_with(cfg).await;
    let http = server.http.clone();
    let alice = server.token("alice").await;
    let bob = server.token("bob").await;
    let sam = server.token("sam").await;
    let mut panels = Vec::new();
    for t in [&alice, &bob] {
        let (_, _, rx) = server.handle.attach_panel(token_hash(t)).await.unwrap();
        panels.push(rx);
    }
    let (s, _) = http
        .put(
            "/api/v1/agent/presence",
            Some(&bob),
            &json!({"presence": "not_ready"}),
        )
        .await;
    assert_eq!(s, 200);
    server
        .handle
        .call(Command::SipRegister {
            agent: "alice".into(),
            update: BindingUpdate::Set(vec![("sip:alice@127.0.0.1:5070".into(), 3600)]),
        })
        .await
        .unwrap();

    let (s, chat) = http
        .post(
            "/api/v1/chats",
            None,
            &json!({"queue": "support", "name": "Carla", "text": "hello"}),
        )
        .await;
    assert_eq!(s, 201, "{chat}");
    let customer = chat["token"].as_str().unwrap().to_string();
    let c1 = id_of(&chat);
    let group1 = chat["group_id"].as_str().unwrap().to_string();
    let (s, v) = http
        .post(
            &format!("/api/v1/conversations/{c1}/accept"),
            Some(&alice),
            &json!({}),
        )
        .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("in_process")), "{v}");

    let (s, chat2) = http
        .post(
            "/api/v1/chats",
            None,
            &json!({"queue": "support", "name": "Dan"}),
        )
        .await;
    assert_eq!(s, 201);
    let c2 = id_of(&chat2);

    let (s, call) = http
        .post(
            "/api/v1/inbound/calls",
            Some(API_KEY),
            &json!({"from": "+15550001", "queue": "phones"}),
        )
        .await;
    assert_eq!(s, 201, "{call}");
    let v1 = id_of(&call);
    let (s, _) = http
        .post(
            &format!("/api/v1/conversations/{v1}/accept"),
            Some(&alice),
            &json!({}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, v) = http
        .post(
            &format!("/api/v1/inbound/calls/{v1}/hangup"),
            Some(API_KEY),
            &json!({}),
        )
        .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("wrap_up")), "{v}");

    let (s, _) = http
        .put(
            "/api/v1/agent/presence",
            Some(&alice),
            &json!({"presence": "not_ready"}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, call2) = http
        .post(
            "/api/v1/inbound/calls",
            Some(API_KEY),
            &json!({"from": "+15550002", "queue": "phones"}),
        )
        .await;
    assert_eq!(s, 201, "{call2}");
    let v2 = id_of(&call2);
    let (s, chat3) = http
        .post(
            "/api/v1/chats",
            None,
            &json!({"queue": "vip", "name": "Eve"}),
        )
        .await;
    assert_eq!(s, 201);
    let c3 = id_of(&chat3);

    let (s, state) = http.get("/api/v1/agent/state", Some(&alice)).await;
    assert_eq!(s, 200);
    let status_of = |id: &str| {
        state["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .map(|c| c["status"].as_str().unwrap().to_string())
    };
    assert_eq!(status_of(&c1).as_deref(), Some("in_process"));
    assert_eq!(status_of(&c2).as_deref(), Some("offered"));
    assert_eq!(status_of(&v1).as_deref(), Some("wrap_up"));

    World {
        server,
        tokens: [
            None,
            Some(alice),
            Some(bob),
            Some(sam),
            Some(customer),
            Some(API_KEY.to_string()),
            Some("0000000000000000000000000000000000000000000000000000000000000000".into()),
        ],
        c1,
        c2,
        c3,
        v1,
        v2,
        group1,
        _panels: panels,
    }
}

/// One request of a row, made from the world's ids.
struct Req {
    method: &'static str,
    path: String,
    body: Option<Value>,
}

fn req(method: &'static str, path: impl Into<String>, body: Option<Value>) -> Req {
    Req {
        method,
        path: path.into(),
        body,
    }
}

type Row = (&'static str, fn(&World) -> Req, [u16; 7]);

#[rustfmt::skip]
fn rows() -> Vec<Row> {
    //                        anon   A    B   sup  cust key  bad
    const AGENT: [u16; 7] =      [401, 200, 200, 403, 403, 401, 401];
    const ITS_AGENT: [u16; 7] =  [401, 200, 403, 403, 403, 401, 401];
    const OFFERED: [u16; 7] =    [401, 200, 409, 403, 403, 401, 401];
    const SUPERVISOR: [u16; 7] = [401, 403, 403, 200, 403, 401, 401];
    const READERS: [u16; 7] =    [401, 200, 403, 200, 403, 401, 401];
    const CUSTOMER: [u16; 7] =   [401, 403, 403, 403, 200, 401, 401];
    const KEY_200: [u16; 7] =    [401, 401, 401, 401, 401, 200, 401];
    const KEY_201: [u16; 7] =    [401, 401, 401, 401, 401, 201, 401];
    const ANYONE: [u16; 7] = [200; 7];
    vec![
        ("POST /login", |_| req("POST", "/api/v1/login", Some(json!({"username": "carol", "password": "carol-pw"}))), ANYONE),
        ("POST /logout", |_| req("POST", "/api/v1/logout", None), [401, 409, 200, 200, 403, 401, 401]),
        ("GET /agent/state", |_| req("GET", "/api/v1/agent/state", None), AGENT),
        ("PUT /agent/presence", |_| req("PUT", "/api/v1/agent/presence", Some(json!({"presence": "ready"}))), AGENT),
        ("POST /conversations/{id}/accept", |w| req("POST", format!("/api/v1/conversations/{}/accept", w.c2), None), OFFERED),
        ("POST /conversations/{id}/reject", |w| req("POST", format!("/api/v1/conversations/{}/reject", w.c2), None), OFFERED),
        ("POST /conversations/{id}/messages", |w| req("POST", format!("/api/v1/conversations/{}/messages", w.c1), Some(json!({"text": "hi"}))), ITS_AGENT),
        ("PUT /conversations/{id}/draft", |w| req("PUT", format!("/api/v1/conversations/{}/draft", w.c1), Some(json!({"script": {"a": "b"}, "memo": "m"}))), ITS_AGENT),
        ("POST /conversations/{id}/metadata", |w| req("POST", format!("/api/v1/conversations/{}/metadata", w.c1), Some(json!({"script": {"a": "b"}, "memo": "m"}))), ITS_AGENT),
        ("POST /conversations/{id}/end", |w| req("POST", format!("/api/v1/conversations/{}/end", w.c1), None), ITS_AGENT),
        ("POST /conversations/{id}/complete", |w| req("POST", format!("/api/v1/conversations/{}/complete", w.v1), None), ITS_AGENT),
        ("POST /conversations/{id}/transfer", |w| req("POST", format!("/api/v1/conversations/{}/transfer", w.c1), Some(json!({"queue": "support"}))), ITS_AGENT),
        ("POST /conversations/{id}/consult", |w| req("POST", format!("/api/v1/conversations/{}/consult", w.c1), Some(json!({"agent": "bob"}))), ITS_AGENT),
        ("POST /conversations/{id}/callback", |w| req("POST", format!("/api/v1/conversations/{}/callback", w.v1), None), [401, 201, 403, 403, 403, 401, 401]),
        ("POST /conversations/{id}/reassign", |w| req("POST", format!("/api/v1/conversations/{}/reassign", w.c1), Some(json!({"queue": "support"}))), SUPERVISOR),
        ("GET /queues/{id}/conversations", |_| req("GET", "/api/v1/queues/vip/conversations", None), READERS),
        ("POST /queues/{id}/pick", |w| req("POST", "/api/v1/queues/vip/pick", Some(json!({"conversation_id": w.c3}))), ITS_AGENT),
        ("GET /conversations/{id}", |w| req("GET", format!("/api/v1/conversations/{}", w.c1), None), READERS),
        ("GET /groups/{group_id}", |w| req("GET", format!("/api/v1/groups/{}", w.group1), None), READERS),
        ("GET /conversations?status=", |_| req("GET", "/api/v1/conversations?status=in_process", None), SUPERVISOR),
        ("GET /agents", |_| req("GET", "/api/v1/agents", None), SUPERVISOR),
        ("GET /queues", |_| req("GET", "/api/v1/queues", None), SUPERVISOR),
        ("POST /chats", |_| req("POST", "/api/v1/chats", Some(json!({"queue": "support", "name": "Fay"}))), [201; 7]),
        ("GET /chat", |_| req("GET", "/api/v1/chat", None), CUSTOMER),
        ("POST /chat/messages", |_| req("POST", "/api/v1/chat/messages", Some(json!({"text": "still there?"}))), CUSTOMER),
        ("POST /chat/end", |_| req("POST", "/api/v1/chat/end", None), CUSTOMER),
        ("POST /inbound/messages", |_| req("POST", "/api/v1/inbound/messages", Some(json!({"medium": "sms", "from": "+15550003", "text": "hi", "queue": "support"}))), KEY_200),
        ("POST /inbound/emails", |_| req("POST", "/api/v1/inbound/emails", Some(json!({"from": "a@example.com", "subject": "s", "text": "t", "queue": "mail"}))), KEY_201),
        ("POST /inbound/calls", |_| req("POST", "/api/v1/inbound/calls", Some(json!({"from": "+15550004", "queue": "phones"}))), KEY_201),
        ("POST /inbound/calls/{id}/hangup", |w| req("POST", format!("/api/v1/inbound/calls/{}/hangup", w.v2), None), KEY_200),
        ("GET /backup", |_| req("GET", "/api/v1/backup", None), SUPERVISOR),
        ("GET /openapi.json", |_| req("GET", "/api/v1/openapi.json", None), ANYONE),
        ("GET /healthz", |_| req("GET", "/healthz", None), ANYONE),
        ("GET /readyz", |_| req("GET", "/readyz", None), ANYONE),
        ("GET /metrics (loopback)", |_| req("GET", "/metrics", None), ANYONE),
        ("GET /api/v1/unknown", |_| req("GET", "/api/v1/unknown", None), [404; 7]),
    ]
}

#[tokio::test]
async fn every_route_answers_each_kind_of_caller_with_the_exact_status() {
    let rows = rows();
    println!(
        "authorization matrix: {} routes x {} callers = {} cells",
        rows.len(),
        CALLERS.len(),
        rows.len() * CALLERS.len()
    );
    println!("{:<36} {CALLERS:?}", "route");
    let mut wrong = Vec::new();
    for (name, make, expected) in &rows {
        let w = world().await;
        let mut got = [0u16; 7];
        for &who in &EXEC_ORDER {
            let r = make(&w);
            let (body, ct) = match &r.body {
                Some(b) => (b.to_string().into_bytes(), Some("application/json")),
                None => (Vec::new(), None),
            };
            let (status, resp) = w
                .server
                .http
                .raw(r.method, &r.path, w.tokens[who].as_deref(), ct, body)
                .await;
            assert!(status < 500, "{name} as {}: {status} {resp}", CALLERS[who]);
            if status >= 400 && r.path.starts_with("/api/") {
                assert!(
                    resp["error"].is_string() && resp["message"].is_string(),
                    "{name} as {}: error body {resp}",
                    CALLERS[who]
                );
            }
            got[who] = status;
        }
        println!("{name:<36} {got:?}");
        if got != *expected {
            wrong.push(format!("{name}: expected {expected:?}, got {got:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "columns {CALLERS:?}\n{}",
        wrong.join("\n")
    );
}
