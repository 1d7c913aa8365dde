//! REST-level flows over real sockets (docs/sessions.md, docs/policy.md, docs/routing.md,
//! docs/api.md): login and logout, inbound sms threading, email kept through a lost session,
//! voice offered only with a live SIP binding, hang-up and callback, supervisor search, details
//! and groups, metrics, the OpenAPI document and the backup download.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use common::{API_KEY, TestServer};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::time::Duration;
use switchboard::core::{BindingUpdate, Command};
use switchboard::driver::FrameRx;
use switchboard::http::extract::token_hash;

/// Attaches a panel for `token` straight on the driver (the session becomes `connected`);
/// keep the receiver alive for as long as the panel should stay connected.
async fn connect(server: &TestServer, token: &str) -> FrameRx {
    let (_, _, rx) = server.handle.attach_panel(token_hash(token)).await.unwrap();
    rx
}

/// Gives `agent` a live SIP binding (as an authenticated REGISTER would).
async fn register_phone(server: &TestServer, agent: &str) {
    server
        .handle
        .call(Command::SipRegister {
            agent: agent.into(),
            update: BindingUpdate::Set(vec![(format!("sip:{agent}@127.0.0.1:5070"), 30)]),
        })
        .await
        .unwrap();
}

async fn post(server: &TestServer, path: &str, token: &str, body: Value) -> (u16, Value) {
    server.http.post(path, Some(token), &body).await
}

/// The agent's conversation `id` from `GET /agent/state`, if it is there.
async fn held(server: &TestServer, token: &str, id: &str) -> Option<Value> {
    let (s, state) = server.http.get("/api/v1/agent/state", Some(token)).await;
    assert_eq!(s, 200, "{state}");
    state["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .cloned()
}

fn str_of(v: &Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {v}"))
        .to_string()
}

#[tokio::test]
async fn logout_is_refused_while_a_chat_is_open_and_ends_the_session_after() {
    let server = TestServer::start().await;
    let login = server.login("alice").await;
    assert_eq!(login["role"], "agent");
    assert_eq!(login["agent_id"], "alice");
    let token = str_of(&login, "token");
    assert_eq!(token.len(), 64);
    assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
    let session = str_of(&login, "session_id");
    let _panel = connect(&server, &token).await;

    let (s, chat) = server
        .http
        .post(
            "/api/v1/chats",
            None,
            &json!({"queue": "support", "name": "Carla", "text": "my order is late"}),
        )
        .await;
    assert_eq!(s, 201, "{chat}");
    let id = str_of(&chat, "conversation_id");
    let (s, v) = post(
        &server,
        &format!("/api/v1/conversations/{id}/accept"),
        &token,
        json!({}),
    )
    .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("in_process")), "{v}");

    let (s, v) = post(&server, "/api/v1/logout", &token, json!({})).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (409, Some("conversations_open")),
        "{v}"
    );

    let (s, v) = post(
        &server,
        &format!("/api/v1/conversations/{id}/end"),
        &token,
        json!({}),
    )
    .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("wrap_up")), "{v}");
    assert_eq!(v["disconnect_reason"], "AgentEnded");
    let (s, _) = post(&server, "/api/v1/logout", &token, json!({})).await;
    assert_eq!(s, 409, "wrap-up still blocks logout");
    let (s, v) = post(
        &server,
        &format!("/api/v1/conversations/{id}/complete"),
        &token,
        json!({}),
    )
    .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("handled")), "{v}");

    // Logging in again while the session lives takes it over: same session, new token.
    let again = server.login("alice").await;
    assert_eq!(again["session_id"].as_str(), Some(session.as_str()));
    let (s, _) = server.http.get("/api/v1/agent/state", Some(&token)).await;
    assert_eq!(s, 401, "the old token is revoked by the takeover");
    let token = str_of(&again, "token");

    let (s, v) = post(&server, "/api/v1/logout", &token, json!({})).await;
    assert_eq!((s, v), (200, json!({"ok": true})));
    let (s, v) = server.http.get("/api/v1/agent/state", Some(&token)).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("unauthorized")));

    let sam = server.login("sam").await;
    assert_eq!(
        (sam["role"].as_str(), sam["agent_id"].as_str()),
        (Some("supervisor"), Some("sam"))
    );
    let sam = str_of(&sam, "token");
    let (s, _) = post(&server, "/api/v1/logout", &sam, json!({})).await;
    assert_eq!(s, 200);
    let (s, _) = server.http.get("/api/v1/agents", Some(&sam)).await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn wrong_passwords_and_unknown_users_get_the_same_401() {
    let server = TestServer::start().await;
    for body in [
        json!({"username": "alice", "password": "nope"}),
        json!({"username": "nobody", "password": "alice-pw"}),
        json!({"username": "sam", "password": "alice-pw"}),
    ] {
        let (s, v) = server.http.post("/api/v1/login", None, &body).await;
        assert_eq!(s, 401);
        assert_eq!(v["error"], "unauthorized");
        assert_eq!(v["message"], "missing, unknown or revoked credentials");
    }
}

#[tokio::test]
async fn inbound_sms_threads_by_medium_and_sender() {
    let server = TestServer::start().await;
    let sms = |from: &str, text: &str, medium: &str| json!({"medium": medium, "from": from, "text": text, "queue": "support"});
    let (s, first) = post(
        &server,
        "/api/v1/inbound/messages",
        API_KEY,
        sms("+15551234", "hi", "sms"),
    )
    .await;
    assert_eq!(s, 200, "{first}");
    assert_eq!(
        (first["channel"].as_str(), first["medium"].as_str()),
        (Some("chat"), Some("sms"))
    );
    assert_eq!(first["customer"]["address"], "+15551234");
    let id = str_of(&first, "id");

    let (s, second) = post(
        &server,
        "/api/v1/inbound/messages",
        API_KEY,
        sms("+15551234", "anyone?", "sms"),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        second["id"].as_str(),
        Some(id.as_str()),
        "same sender, same thread"
    );

    let (_, social) = post(
        &server,
        "/api/v1/inbound/messages",
        API_KEY,
        sms("+15551234", "hi", "social"),
    )
    .await;
    let (_, other) = post(
        &server,
        "/api/v1/inbound/messages",
        API_KEY,
        sms("+15559999", "hi", "sms"),
    )
    .await;
    assert_ne!(
        social["id"].as_str(),
        Some(id.as_str()),
        "another medium is another thread"
    );
    assert_ne!(
        other["id"].as_str(),
        Some(id.as_str()),
        "another sender is another thread"
    );
    assert_ne!(social["group_id"], other["group_id"]);

    let sam = server.token("sam").await;
    let (s, details) = server
        .http
        .get(&format!("/api/v1/conversations/{id}"), Some(&sam))
        .await;
    assert_eq!(s, 200, "{details}");
    let texts: Vec<&str> = details["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["hi", "anyone?"]);
    assert!(
        details["messages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["from"] == "customer")
    );
}

#[tokio::test]
async fn email_stays_assigned_to_its_agent_after_the_grace_period() {
    let server = TestServer::start().await;
    let alice = server.token("alice").await;
    let (s, email) = post(
        &server,
        "/api/v1/inbound/emails",
        API_KEY,
        json!({"from": "pat@example.com", "subject": "Invoice", "text": "Wrong amount.", "queue": "mail"}),
    )
    .await;
    assert_eq!(s, 201, "{email}");
    assert_eq!(
        (email["channel"].as_str(), email["subject"].as_str()),
        (Some("email"), Some("Invoice"))
    );
    let id = str_of(&email, "id");
    let (s, picked) = post(
        &server,
        "/api/v1/queues/mail/pick",
        &alice,
        json!({"conversation_id": id}),
    )
    .await;
    assert_eq!(
        (s, picked["status"].as_str()),
        (200, Some("in_process")),
        "{picked}"
    );

    // No panel ever attached: the grace period runs out and the session is lost.
    server.advance(Duration::from_secs(61)).await;
    let (s, _) = server.http.get("/api/v1/agent/state", Some(&alice)).await;
    assert_eq!(s, 401, "the session ended at the deadline");

    let sam = server.token("sam").await;
    let (s, details) = server
        .http
        .get(&format!("/api/v1/conversations/{id}"), Some(&sam))
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        (details["status"].as_str(), details["agent"].as_str()),
        (Some("in_process"), Some("alice"))
    );
    assert!(details["disconnect_reason"].is_null());

    let alice = server.token("alice").await;
    let email = held(&server, &alice, &id)
        .await
        .expect("the email is back at the next login");
    assert_eq!(email["status"], "in_process");
    let (s, v) = post(
        &server,
        &format!("/api/v1/conversations/{id}/messages"),
        &alice,
        json!({"text": "Fixed, sorry."}),
    )
    .await;
    assert_eq!((s, v), (200, json!({"ok": true})));
}

#[tokio::test]
async fn inbound_call_is_offered_only_to_an_agent_with_voice_capability_then_hangup_ends_it() {
    let server = TestServer::start().await;
    let alice = server.token("alice").await;
    let bob = server.token("bob").await;
    let _panels = (connect(&server, &alice).await, connect(&server, &bob).await);
    register_phone(&server, "bob").await;
    let (_, a) = server.http.get("/api/v1/agent/state", Some(&alice)).await;
    let (_, b) = server.http.get("/api/v1/agent/state", Some(&bob)).await;
    assert_eq!(
        a["capabilities"],
        json!({"voice": false, "chat": true, "email": true})
    );
    assert_eq!(
        b["capabilities"],
        json!({"voice": true, "chat": true, "email": true})
    );

    let (s, call) = post(
        &server,
        "/api/v1/inbound/calls",
        API_KEY,
        json!({"from": "+15550100", "queue": "phones"}),
    )
    .await;
    assert_eq!(s, 201, "{call}");
    assert_eq!(
        (call["channel"].as_str(), call["medium"].as_str()),
        (Some("voice"), Some("voice"))
    );
    let id = str_of(&call, "id");
    assert!(
        held(&server, &alice, &id).await.is_none(),
        "alice has no phone"
    );
    let offered = held(&server, &bob, &id).await.expect("offered to bob");
    assert_eq!(offered["status"], "offered");

    let (s, v) = post(
        &server,
        &format!("/api/v1/conversations/{id}/accept"),
        &alice,
        json!({}),
    )
    .await;
    assert_eq!((s, v["error"].as_str()), (409, Some("not_offered_to_you")));
    let (s, v) = post(
        &server,
        &format!("/api/v1/conversations/{id}/accept"),
        &bob,
        json!({}),
    )
    .await;
    assert_eq!(
        (s, v["status"].as_str(), v["agent"].as_str()),
        (200, Some("in_process"), Some("bob"))
    );

    let (s, v) = post(
        &server,
        &format!("/api/v1/inbound/calls/{id}/hangup"),
        API_KEY,
        json!({}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "wrap_up");
    assert_eq!(v["disconnect_party"], "customer");
    assert_eq!(v["disconnect_reason"], "CustomerEnded");
    assert!(v["ended_at"].is_string());

    let (s, v) = post(
        &server,
        &format!("/api/v1/conversations/{id}/complete"),
        &bob,
        json!({}),
    )
    .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("handled")));
}

#[tokio::test]
async fn callback_after_a_hangup_answers_201_with_a_new_call_of_the_group() {
    let server = TestServer::start().await;
    let bob = server.token("bob").await;
    let _panel = connect(&server, &bob).await;
    register_phone(&server, "bob").await;
    let (_, call) = post(
        &server,
        "/api/v1/inbound/calls",
        API_KEY,
        json!({"from": "+15550101", "queue": "phones"}),
    )
    .await;
    let id = str_of(&call, "id");
    post(
        &server,
        &format!("/api/v1/conversations/{id}/accept"),
        &bob,
        json!({}),
    )
    .await;
    post(
        &server,
        &format!("/api/v1/inbound/calls/{id}/hangup"),
        API_KEY,
        json!({}),
    )
    .await;
    server.advance(Duration::from_millis(10)).await;

    let (s, cb) = post(
        &server,
        &format!("/api/v1/conversations/{id}/callback"),
        &bob,
        json!({}),
    )
    .await;
    assert_eq!(s, 201, "{cb}");
    assert_ne!(cb["id"], call["id"]);
    assert_eq!(cb["group_id"], call["group_id"]);
    assert_eq!(cb["origin"], json!({"kind": "callback", "previous": id}));
    assert_eq!(
        (cb["status"].as_str(), cb["agent"].as_str()),
        (Some("in_process"), Some("bob"))
    );
    assert_eq!(cb["channel"], "voice");
    assert_eq!(cb["customer"]["address"], "+15550101");

    let sam = server.token("sam").await;
    let group = str_of(&call, "group_id");
    let (s, g) = server
        .http
        .get(&format!("/api/v1/groups/{group}"), Some(&sam))
        .await;
    assert_eq!(s, 200);
    let ids: Vec<&Value> = g["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["id"])
        .collect();
    assert_eq!(ids, [&call["id"], &cb["id"]]);
}

#[tokio::test]
async fn supervisor_searches_reads_details_and_follows_the_group() {
    let server = TestServer::start().await;
    let alice = server.token("alice").await;
    let bob = server.token("bob").await;
    let sam = server.token("sam").await;
    let _panel = connect(&server, &alice).await;
    let (_, chat) = server
        .http
        .post(
            "/api/v1/chats",
            None,
            &json!({"queue": "support", "name": "Carla", "text": "hello"}),
        )
        .await;
    let first = str_of(&chat, "conversation_id");
    let group = str_of(&chat, "group_id");
    // Conversations made in one millisecond have no defined order: keep them apart.
    server.advance(Duration::from_millis(10)).await;
    post(
        &server,
        &format!("/api/v1/conversations/{first}/accept"),
        &alice,
        json!({}),
    )
    .await;
    post(
        &server,
        &format!("/api/v1/conversations/{first}/messages"),
        &alice,
        json!({"text": "Let me check."}),
    )
    .await;
    let (s, moved) = post(
        &server,
        &format!("/api/v1/conversations/{first}/transfer"),
        &alice,
        json!({"queue": "support"}),
    )
    .await;
    assert_eq!(s, 200, "{moved}");
    let second = str_of(&moved, "id");
    assert_eq!(moved["group_id"].as_str(), Some(group.as_str()));
    assert_eq!(
        moved["origin"],
        json!({"kind": "transfer", "previous": first})
    );
    server.advance(Duration::from_millis(10)).await;
    let (s, _) = server
        .http
        .put(
            "/api/v1/agent/presence",
            Some(&alice),
            &json!({"presence": "not_ready"}),
        )
        .await;
    assert_eq!(s, 200);
    let (_, other) = post(
        &server,
        "/api/v1/inbound/emails",
        API_KEY,
        json!({"from": "x@example.com", "subject": "s", "text": "t", "queue": "mail"}),
    )
    .await;

    // Search: newest first, every filter applies.
    let search = |q: &'static str| {
        let server = &server;
        let sam = sam.clone();
        async move {
            let (s, v) = server
                .http
                .get(&format!("/api/v1/conversations{q}"), Some(&sam))
                .await;
            assert_eq!(s, 200, "{q}: {v}");
            v.as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        search("").await,
        [str_of(&other, "id"), second.clone(), first.clone()]
    );
    assert_eq!(
        search("?queue=support").await,
        [second.clone(), first.clone()]
    );
    assert_eq!(search("?status=wrap_up").await, [first.as_str()]);
    assert_eq!(
        search("?agent=alice&status=wrap_up").await,
        [first.as_str()]
    );
    assert_eq!(
        search("?channel=email").await,
        [other["id"].as_str().unwrap()]
    );
    assert_eq!(search("?channel=chat&limit=1").await, [second.as_str()]);
    assert_eq!(search("?limit=0").await, Vec::<String>::new());

    // Conversation Details: fields, disconnect party and reason, events, transcript.
    let (s, d) = server
        .http
        .get(&format!("/api/v1/conversations/{first}"), Some(&sam))
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        (d["status"].as_str(), d["disconnect_party"].as_str()),
        (Some("wrap_up"), Some("agent"))
    );
    assert_eq!(d["disconnect_reason"], "Transferred");
    let events: Vec<&str> = d["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    for e in ["queued", "offered", "accepted", "transferred"] {
        assert!(events.contains(&e), "{e} missing from {events:?}");
    }
    let texts: Vec<&str> = d["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["hello", "Let me check."]);
    for key in [
        "id",
        "group_id",
        "channel",
        "medium",
        "queue",
        "status",
        "agent",
        "customer",
        "origin",
        "queue_arrival_time",
        "created_at",
        "ended_at",
        "disconnect_party",
        "disconnect_reason",
        "metadata",
    ] {
        assert!(d.get(key).is_some(), "{key} missing from the details");
    }

    // The group, oldest first; an agent who worked in it may read it, another may not.
    let (s, g) = server
        .http
        .get(&format!("/api/v1/groups/{group}"), Some(&sam))
        .await;
    assert_eq!(s, 200);
    assert_eq!(g["group_id"].as_str(), Some(group.as_str()));
    let ids: Vec<&str> = g["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [first.as_str(), second.as_str()]);
    let (s, _) = server
        .http
        .get(&format!("/api/v1/groups/{group}"), Some(&alice))
        .await;
    assert_eq!(s, 200);
    let (s, _) = server
        .http
        .get(&format!("/api/v1/conversations/{second}"), Some(&alice))
        .await;
    assert_eq!(
        s, 200,
        "alice worked in the group, so she may read its later conversations"
    );
    let (s, v) = server
        .http
        .get(&format!("/api/v1/groups/{group}"), Some(&bob))
        .await;
    assert_eq!((s, v["error"].as_str()), (403, Some("forbidden")));

    // The agent and queue lists.
    let (s, agents) = server.http.get("/api/v1/agents", Some(&sam)).await;
    assert_eq!(s, 200);
    let a = agents
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent_id"] == "alice")
        .unwrap();
    assert_eq!(a["session"]["state"], "connected");
    let (s, queues) = server.http.get("/api/v1/queues", Some(&sam)).await;
    assert_eq!(s, 200);
    let mail = queues
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["id"] == "mail")
        .unwrap();
    assert_eq!(
        (mail["channel"].as_str(), mail["waiting"].as_u64()),
        (Some("email"), Some(1))
    );
    let (s, waiting) = server
        .http
        .get("/api/v1/queues/mail/conversations", Some(&bob))
        .await;
    assert_eq!(s, 200);
    assert_eq!(waiting[0]["id"], other["id"]);
}

#[tokio::test]
async fn reassign_and_consult_create_conversations_of_the_same_group() {
    let server = TestServer::start().await;
    let alice = server.token("alice").await;
    let bob = server.token("bob").await;
    let sam = server.token("sam").await;
    let _panels = (connect(&server, &alice).await, connect(&server, &bob).await);
    let (s, _) = server
        .http
        .put(
            "/api/v1/agent/presence",
            Some(&bob),
            &json!({"presence": "not_ready"}),
        )
        .await;
    assert_eq!(s, 200);
    let (_, chat) = server
        .http
        .post(
            "/api/v1/chats",
            None,
            &json!({"queue": "support", "name": "Ann"}),
        )
        .await;
    let id = str_of(&chat, "conversation_id");
    post(
        &server,
        &format!("/api/v1/conversations/{id}/accept"),
        &alice,
        json!({}),
    )
    .await;

    let (s, consult) = post(
        &server,
        &format!("/api/v1/conversations/{id}/consult"),
        &alice,
        json!({"agent": "bob"}),
    )
    .await;
    assert_eq!(s, 200, "{consult}");
    assert_eq!(consult["origin"]["kind"], "consultation");
    assert_eq!(consult["group_id"], chat["group_id"]);
    assert_eq!(
        held(&server, &bob, consult["id"].as_str().unwrap())
            .await
            .unwrap()["status"],
        "offered"
    );

    let (s, v) = post(
        &server,
        &format!("/api/v1/conversations/{id}/reassign"),
        &sam,
        json!({"agent": "bob"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["group_id"], chat["group_id"]);
    let (_, old) = server
        .http
        .get(&format!("/api/v1/conversations/{id}"), Some(&sam))
        .await;
    assert_eq!(
        (old["status"].as_str(), old["disconnect_party"].as_str()),
        (Some("handled"), Some("system"))
    );
    assert_eq!(old["disconnect_reason"], "Reassigned");
}

#[tokio::test]
async fn drafts_survive_in_the_snapshot_and_saved_metadata_lands_on_the_conversation() {
    let server = TestServer::start().await;
    let alice = server.token("alice").await;
    let _panel = connect(&server, &alice).await;
    let (_, chat) = server
        .http
        .post(
            "/api/v1/chats",
            None,
            &json!({"queue": "support", "name": "Ann"}),
        )
        .await;
    let id = str_of(&chat, "conversation_id");
    post(
        &server,
        &format!("/api/v1/conversations/{id}/accept"),
        &alice,
        json!({}),
    )
    .await;
    let draft = json!({"script": {"reason": "billing"}, "memo": "call back"});
    let (s, v) = server
        .http
        .put(
            &format!("/api/v1/conversations/{id}/draft"),
            Some(&alice),
            &draft,
        )
        .await;
    assert_eq!((s, v), (200, json!({"ok": true})));
    let (_, state) = server.http.get("/api/v1/agent/state", Some(&alice)).await;
    assert_eq!(state["drafts"][&id], draft);
    let (s, v) = post(
        &server,
        &format!("/api/v1/conversations/{id}/metadata"),
        &alice,
        draft.clone(),
    )
    .await;
    assert_eq!((s, &v["metadata"]), (200, &draft));
    let (_, state) = server.http.get("/api/v1/agent/state", Some(&alice)).await;
    assert!(
        state["drafts"].get(&id).is_none(),
        "saving clears the draft"
    );
}

#[tokio::test]
async fn customer_reads_writes_and_leaves_the_chat() {
    let server = TestServer::start().await;
    let (s, chat) = server
        .http
        .post(
            "/api/v1/chats",
            None,
            &json!({"queue": "support", "name": "Ann", "text": "  hi  "}),
        )
        .await;
    assert_eq!(s, 201);
    assert!(chat["group_id"].is_string() && chat["conversation_id"].is_string());
    let token = str_of(&chat, "token");
    let (s, v) = post(
        &server,
        "/api/v1/chat/messages",
        &token,
        json!({"text": "is anyone there?"}),
    )
    .await;
    assert_eq!((s, v), (200, json!({"ok": true})));
    let (s, snap) = server.http.get("/api/v1/chat", Some(&token)).await;
    assert_eq!(s, 200);
    assert_eq!(
        (snap["status"].as_str(), snap["position"].as_u64()),
        (Some("in_queue"), Some(1))
    );
    let texts: Vec<&str> = snap["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["hi", "is anyone there?"]);
    let (s, _) = post(&server, "/api/v1/chat/end", &token, json!({})).await;
    assert_eq!(s, 200);
    let (s, _) = server.http.get("/api/v1/chat", Some(&token)).await;
    assert_eq!(s, 401, "an abandoned chat's token opens nothing any more");
    let sam = server.token("sam").await;
    let id = str_of(&chat, "conversation_id");
    let (_, d) = server
        .http
        .get(&format!("/api/v1/conversations/{id}"), Some(&sam))
        .await;
    assert_eq!(
        (d["status"].as_str(), d["disconnect_reason"].as_str()),
        (Some("abandoned"), Some("CustomerAbandoned"))
    );
}

#[tokio::test]
async fn health_readiness_and_metrics_expose_the_expected_names() {
    let server = TestServer::start().await;
    assert_eq!(
        server.http.get("/healthz", None).await,
        (200, json!({"status": "ok"}))
    );
    assert_eq!(
        server.http.get("/readyz", None).await,
        (200, json!({"status": "ready"}))
    );
    server.token("alice").await;
    let (_, _) = server
        .http
        .post(
            "/api/v1/login",
            None,
            &json!({"username": "alice", "password": "x"}),
        )
        .await;
    post(
        &server,
        "/api/v1/inbound/calls",
        API_KEY,
        json!({"from": "+1555", "queue": "phones"}),
    )
    .await;

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<hyper::body::Bytes>>();
    let resp = client
        .request(
            hyper::Request::get(server.url("/metrics"))
                .body(Default::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    for name in [
        "logins_total",
        "connection_losses_total",
        "resumes_total",
        "sessions_lost_total",
        "chats_requeued_total",
        "calls_dropped_total",
        "offers_total",
        "offer_timeouts_total",
        "sip_registrations_lost_total",
        "failed_logins_total",
        "rate_limited_total",
        "agent_sessions",
        "supervisor_sessions",
        "open_conversations",
        "queue_waiting",
        "sip_bindings",
        "timers",
        "commands_total",
        "batches_total",
        "commits_total",
        "store_writes_total",
        "commit_seconds_total",
        "commit_seconds_max",
        "sip_datagrams_total",
        "sip_garbage_total",
        "sip_registers_ok_total",
        "sip_challenges_total",
        "sip_auth_failures_total",
        "sip_throttled_total",
    ] {
        assert!(
            text.contains(&format!("# HELP switchboard_{name} ")),
            "HELP for {name}"
        );
        assert!(
            text.contains(&format!("# TYPE switchboard_{name} ")),
            "TYPE for {name}"
        );
    }
    assert!(text.contains("switchboard_logins_total 1\n"), "{text}");
    assert!(
        text.contains("switchboard_failed_logins_total 1\n"),
        "{text}"
    );
    assert!(
        text.contains("switchboard_open_conversations{status=\"in_queue\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("switchboard_queue_waiting{queue=\"phones\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("switchboard_agent_sessions{state=\"disconnected\"} 1\n"),
        "{text}"
    );
    // Every sample line is `name{labels} value` with a numeric value.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
        assert!(line.starts_with("switchboard_"), "{line:?}");
    }
}

#[tokio::test]
async fn openapi_document_describes_every_route_and_the_shapes() {
    let server = TestServer::start().await;
    let (s, doc) = server.http.get("/api/v1/openapi.json", None).await;
    assert_eq!(s, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let routes = switchboard::http::openapi::operations(&switchboard::http::openapi_document());
    for (method, path) in &routes {
        assert!(
            doc["paths"][path.as_str()][method.to_lowercase()].is_object(),
            "{method} {path} is not documented"
        );
    }
    for schema in [
        "Conversation",
        "Event",
        "AgentSnapshot",
        "ChatSnapshot",
        "Agent",
        "Queue",
        "Error",
        "Message",
        "Metadata",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "schema {schema}"
        );
    }
    let conv = &doc["components"]["schemas"]["Conversation"]["required"];
    for field in [
        "id",
        "group_id",
        "channel",
        "medium",
        "queue",
        "status",
        "agent",
        "customer",
        "origin",
        "queue_arrival_time",
        "created_at",
        "ended_at",
        "disconnect_party",
        "disconnect_reason",
        "metadata",
    ] {
        assert!(
            conv.as_array().unwrap().iter().any(|f| f == field),
            "Conversation.{field}"
        );
    }
    for scheme in ["sessionToken", "customerToken", "apiKey", "tokenQuery"] {
        assert!(
            doc["components"]["securitySchemes"][scheme].is_object(),
            "{scheme}"
        );
    }
    for ws in [
        "/api/v1/agent/ws",
        "/api/v1/chat/ws",
        "/api/v1/dashboard/ws",
    ] {
        assert!(
            doc["paths"][ws]["get"]["responses"]["101"].is_object(),
            "{ws}"
        );
    }
    println!("{} routes documented", routes.len());
}

#[tokio::test]
async fn supervisor_downloads_a_backup_that_opens_as_a_store() {
    let server = TestServer::start().await;
    let (_, call) = post(
        &server,
        "/api/v1/inbound/calls",
        API_KEY,
        json!({"from": "+1555", "queue": "phones"}),
    )
    .await;
    let sam = server.token("sam").await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<hyper::body::Bytes>>();
    let req = hyper::Request::get(server.url("/api/v1/backup"))
        .header("authorization", format!("Bearer {sam}"))
        .body(Default::default())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/octet-stream");
    let disposition = resp.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        disposition.starts_with("attachment; filename=\"switchboard-20261123T10")
            && disposition.ends_with("Z.redb\"")
            && disposition.len()
                == "attachment; filename=\"switchboard-20261123T100000Z.redb\"".len(),
        "{disposition}"
    );
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(bytes.len() > 1000, "{} bytes", bytes.len());

    let leftovers: Vec<_> = std::fs::read_dir(server.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("backup"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    let copy = tempfile::tempdir().unwrap();
    let path = copy.path().join("switchboard.redb");
    std::fs::write(&path, &bytes).unwrap();
    let store = switchboard::store::Store::open(&path).unwrap();
    let id = uuid::Uuid::parse_str(call["id"].as_str().unwrap()).unwrap();
    let (c, events) = store
        .conversation(id)
        .unwrap()
        .expect("the call is in the backup");
    assert_eq!(c.queue, "phones");
    assert!(!events.is_empty());
}

#[tokio::test]
async fn a_supervisor_releases_an_agent_and_the_alert_lists_the_requeued_chat() {
    let server = TestServer::start().await;
    let alice = server.token("alice").await;
    let sam = server.token("sam").await;
    let panel = connect(&server, &alice).await;
    let (_, chat) = server
        .http
        .post(
            "/api/v1/chats",
            None,
            &json!({"queue": "support", "name": "Carla", "text": "hello"}),
        )
        .await;
    let id = str_of(&chat, "conversation_id");
    let (s, _) = post(
        &server,
        &format!("/api/v1/conversations/{id}/accept"),
        &alice,
        json!({}),
    )
    .await;
    assert_eq!(s, 200);
    let (s, v) = server.http.get("/api/v1/alerts", Some(&sam)).await;
    assert_eq!((s, v), (200, json!([])));
    let (s, v) = server.http.get("/api/v1/alerts", Some(&alice)).await;
    assert_eq!((s, v["error"].as_str()), (403, Some("forbidden")));
    let (s, v) = post(&server, "/api/v1/agents/alice/release", &alice, json!({})).await;
    assert_eq!((s, v["error"].as_str()), (403, Some("forbidden")), "{v}");

    let (s, v) = post(&server, "/api/v1/agents/alice/release", &sam, json!({})).await;
    assert_eq!(s, 200, "{v}");
    drop(panel);
    let (s, v) = server
        .http
        .get(&format!("/api/v1/conversations/{id}"), Some(&sam))
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["status"], "handled");
    assert_eq!(v["disconnect_reason"], "AgentSessionLost");
    let (_, alerts) = server.http.get("/api/v1/alerts", Some(&sam)).await;
    assert_eq!(alerts[0]["kind"], "session_lost", "{alerts}");
    assert_eq!(alerts[0]["agent"], "alice");
    let requeued = alerts[0]["conversations"][0].as_str().unwrap().to_string();
    assert_ne!(requeued, id);
    let (s, v) = server.http.get("/api/v1/agent/state", Some(&alice)).await;
    assert_eq!(s, 401, "the released session's token is revoked: {v}");

    let (s, v) = post(&server, "/api/v1/agents/alice/release", &sam, json!({})).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (409, Some("invalid_state")),
        "{v}"
    );
    let (s, _) = post(&server, "/api/v1/agents/nobody/release", &sam, json!({})).await;
    assert_eq!(s, 404);

    // The search walks back page by page with `before`.
    let (_, first) = server
        .http
        .get("/api/v1/conversations?limit=1", Some(&sam))
        .await;
    assert_eq!(first[0]["id"].as_str(), Some(requeued.as_str()));
    let (_, next) = server
        .http
        .get(
            &format!("/api/v1/conversations?limit=1&before={requeued}"),
            Some(&sam),
        )
        .await;
    assert_eq!(next[0]["id"].as_str(), Some(id.as_str()));
    let (_, last) = server
        .http
        .get(&format!("/api/v1/conversations?before={id}"), Some(&sam))
        .await;
    assert_eq!(last, json!([]));
    let (s, v) = server
        .http
        .get("/api/v1/conversations?before=yesterday", Some(&sam))
        .await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_request")));
}
