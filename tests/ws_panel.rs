//! The agent panel WebSocket over real sockets (docs/sessions.md, docs/api.md#close-codes):
//! authentication before the upgrade, the snapshot first, ping/pong, the heartbeat, takeover
//! (4001), logout (4401), too many sockets (4409) and shutdown (1001).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use switchboard::core::Command;
use switchboard::core::model::{Role, SessionState};
use switchboard::http::extract::token_hash;
use tokio_tungstenite::tungstenite::{self, Message};

/// A WebSocket connection the server refused before the upgrade: status and JSON body.
async fn refused(server: &TestServer, path: &str, token: &str) -> (u16, Value) {
    match tokio_tungstenite::connect_async(server.ws_url(path, token)).await {
        Ok(_) => panic!("{path}: the upgrade was accepted"),
        Err(tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| serde_json::from_slice(b).expect("JSON error body"))
                .unwrap_or(Value::Null);
            (resp.status().as_u16(), body)
        }
        Err(e) => panic!("{path}: unexpected error {e}"),
    }
}

#[tokio::test]
async fn panel_socket_refuses_unknown_tokens_with_401_and_other_roles_with_403() {
    let server = TestServer::start_with(quiet()).await;
    let (status, body) = refused(&server, "/api/v1/agent/ws", "not-a-token").await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "unauthorized");
    assert!(body["message"].is_string());

    let sam = login(&server, "sam", Role::Supervisor).await;
    let (status, body) = refused(&server, "/api/v1/agent/ws", &sam).await;
    assert_eq!(status, 403);
    assert_eq!(body["error"], "forbidden");

    let alice = login(&server, "alice", Role::Agent).await;
    let (status, body) = refused(&server, "/api/v1/dashboard/ws", &alice).await;
    assert_eq!(status, 403);
    assert_eq!(body["error"], "forbidden");

    // No token at all.
    let (status, body) = server.http.get("/api/v1/agent/ws", None).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "unauthorized");
    // A valid token on a plain GET (no upgrade headers): a JSON client error, not a 500.
    let (status, body) = server.http.get("/api/v1/agent/ws", Some(&alice)).await;
    assert!((400..500).contains(&status), "status {status}");
    assert_eq!(body["error"], "invalid_request");
    // Nothing of this connected the session.
    assert_eq!(
        session_state(&server, &alice).await,
        SessionState::Disconnected
    );
}

#[tokio::test]
async fn panel_sends_the_snapshot_first_and_answers_ping_with_pong() {
    let server = TestServer::start_with(quiet()).await;
    let alice = login(&server, "alice", Role::Agent).await;
    let (mut ws, snap) = server.panel(&alice).await;
    assert_eq!(snap["session"]["agent_id"], "alice");
    assert_eq!(snap["session"]["state"], "connected");
    assert_eq!(snap["presence"], "ready");
    assert_eq!(
        snap["capabilities"],
        json!({"voice": false, "chat": true, "email": true})
    );
    assert_eq!(snap["conversations"], json!([]));
    assert_eq!(snap["drafts"], json!({}));
    assert_eq!(
        session_state(&server, &alice).await,
        SessionState::Connected
    );

    send_json(&mut ws, &json!({"type": "ping"})).await;
    assert_eq!(next_json(&mut ws).await, json!({"type": "pong"}));

    // Garbage and unknown frames are answered with an error frame; the socket stays open.
    ws.send(Message::Text("{{{".into())).await.unwrap();
    let err = next_json(&mut ws).await;
    assert_eq!(err["type"], "error");
    assert_eq!(err["error"], "invalid_request");
    send_json(&mut ws, &json!({"type": "end"})).await;
    assert_eq!(next_json(&mut ws).await["type"], "error");
    ws.send(Message::Binary(vec![0u8, 159, 146, 150].into()))
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "error");
    send_json(&mut ws, &json!({"type": "ping"})).await;
    assert_eq!(next_json(&mut ws).await["type"], "pong");
    assert_eq!(
        session_state(&server, &alice).await,
        SessionState::Connected
    );

    // Panel events follow the snapshot.
    call(
        &server,
        Command::SetPresence {
            token: token_hash(&alice),
            presence: switchboard::core::model::Presence::NotReady,
        },
    )
    .await;
    let ev = wait_for(&mut ws, |v| v["type"] == "presence").await;
    assert_eq!(ev, json!({"type": "presence", "presence": "not_ready"}));
}

#[tokio::test]
async fn closing_the_panel_disconnects_the_session_and_the_same_token_resumes_it() {
    let server = TestServer::start_with(quiet()).await;
    let alice = login(&server, "alice", Role::Agent).await;
    let (mut ws, snap) = server.panel(&alice).await;
    let session_id = snap["session"]["id"].clone();
    ws.close(None).await.unwrap();
    wait_state(&server, &alice, SessionState::Disconnected).await;

    let (ws2, snap) = server.panel(&alice).await;
    assert_eq!(snap["session"]["id"], session_id);
    assert_eq!(snap["session"]["state"], "connected");
    // A dropped TCP connection (no close frame) is the same event.
    drop(ws2);
    wait_state(&server, &alice, SessionState::Disconnected).await;
}

#[tokio::test]
async fn silent_panel_is_lost_after_the_heartbeat_timeout_without_a_close_handshake() {
    let mut cfg = test_config();
    cfg.resilience.heartbeat_interval = Duration::from_millis(100);
    cfg.resilience.heartbeat_timeout = Duration::from_secs(15);
    let server = TestServer::start_with(cfg).await;
    let alice = login(&server, "alice", Role::Agent).await;
    // Read the snapshot, then never read again: the client answers no ping.
    let (mut ws, _) = server.panel(&alice).await;
    assert_eq!(
        session_state(&server, &alice).await,
        SessionState::Connected
    );

    server.advance(Duration::from_secs(14)).await;
    // Not yet: a few ticks pass without the timeout being reached.
    let mut ticks = 0;
    while ticks < 3 {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Ping(_)))) => ticks += 1,
            Ok(Some(Ok(Message::Text(_)))) => {}
            other => panic!("expected pings, got {other:?}"),
        }
    }
    assert_eq!(
        session_state(&server, &alice).await,
        SessionState::Connected
    );
    // (Reading answered those pings.) Stop reading and pass the timeout.
    server.advance(Duration::from_secs(16)).await;
    wait_state(&server, &alice, SessionState::Disconnected).await;

    // The server dropped the connection without a close frame.
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("the connection ends within 5 s")
        {
            Some(Ok(Message::Ping(_))) | Some(Ok(Message::Pong(_))) => continue,
            Some(Ok(Message::Close(c))) => panic!("no close handshake expected, got {c:?}"),
            Some(Ok(other)) => panic!("unexpected frame {other:?}"),
            Some(Err(_)) | None => break,
        }
    }
}

#[tokio::test]
async fn panel_that_answers_pings_survives_a_clock_jump_past_the_timeout() {
    let mut cfg = test_config();
    cfg.resilience.heartbeat_interval = Duration::from_millis(100);
    cfg.resilience.heartbeat_timeout = Duration::from_secs(15);
    let server = TestServer::start_with(cfg).await;
    let alice = login(&server, "alice", Role::Agent).await;
    let (ws, _) = server.panel(&alice).await;
    // A reader that keeps reading (so tungstenite answers every ping) and counts pings.
    let (pings_tx, mut pings) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        let mut ws = ws;
        while let Some(Ok(msg)) = ws.next().await {
            if matches!(msg, Message::Ping(_)) {
                let _ = pings_tx.send(());
            }
        }
    });
    pings.recv().await.expect("a first ping");
    server.advance(Duration::from_secs(20)).await;
    for _ in 0..5 {
        tokio::time::timeout(Duration::from_secs(5), pings.recv())
            .await
            .expect("pings keep coming")
            .expect("socket open");
    }
    assert_eq!(
        session_state(&server, &alice).await,
        SessionState::Connected
    );
    reader.abort();
}

#[tokio::test]
async fn second_login_closes_the_old_panel_with_4001_and_the_new_token_works() {
    let server = TestServer::start_with(quiet()).await;
    let first = login(&server, "alice", Role::Agent).await;
    let (mut old, snap) = server.panel(&first).await;
    let session_id = snap["session"]["id"].clone();

    let second = login(&server, "alice", Role::Agent).await;
    let ended = wait_for(&mut old, |v| v["type"] == "session").await;
    assert_eq!(
        ended,
        json!({"type": "session", "state": "ended", "reason": "taken_over"})
    );
    assert_eq!(close_code(&mut old).await, Some(4001));

    // The old token is revoked: refused before the upgrade.
    let (status, _) = refused(&server, "/api/v1/agent/ws", &first).await;
    assert_eq!(status, 401);

    let (mut new, snap) = server.panel(&second).await;
    assert_eq!(snap["session"]["id"], session_id, "same session");
    assert_eq!(snap["session"]["state"], "connected");
    send_json(&mut new, &json!({"type": "ping"})).await;
    assert_eq!(next_json(&mut new).await["type"], "pong");
}

#[tokio::test]
async fn logout_closes_the_panel_with_4401() {
    let server = TestServer::start_with(quiet()).await;
    let alice = login(&server, "alice", Role::Agent).await;
    let (mut ws, _) = server.panel(&alice).await;
    call(
        &server,
        Command::Logout {
            token: token_hash(&alice),
        },
    )
    .await;
    let ended = wait_for(&mut ws, |v| v["type"] == "session").await;
    assert_eq!(ended["reason"], "logged_out");
    assert_eq!(close_code(&mut ws).await, Some(4401));
}

#[tokio::test]
async fn a_panel_socket_beyond_the_session_limit_is_closed_with_4409() {
    let mut cfg = quiet();
    cfg.limits.max_sockets_per_session = 1;
    let server = TestServer::start_with(cfg).await;
    let alice = login(&server, "alice", Role::Agent).await;
    let (mut first, _) = server.panel(&alice).await;
    let mut second = server.ws("/api/v1/agent/ws", &alice).await;
    assert_eq!(close_code(&mut second).await, Some(4409));
    // The first one is unaffected.
    send_json(&mut first, &json!({"type": "ping"})).await;
    assert_eq!(next_json(&mut first).await["type"], "pong");
    assert_eq!(
        session_state(&server, &alice).await,
        SessionState::Connected
    );
}

#[tokio::test]
async fn server_shutdown_closes_sockets_with_1001() {
    let mut server = TestServer::start_with(quiet()).await;
    let alice = login(&server, "alice", Role::Agent).await;
    let sam = login(&server, "sam", Role::Supervisor).await;
    let (mut panel, _) = server.panel(&alice).await;
    let mut dashboard = server.ws("/api/v1/dashboard/ws", &sam).await;
    assert_eq!(next_json(&mut dashboard).await["type"], "snapshot");
    server.stop().await;
    assert_eq!(close_code(&mut panel).await, Some(1001));
    assert_eq!(close_code(&mut dashboard).await, Some(1001));
}

#[tokio::test]
async fn dashboard_socket_sends_a_snapshot_and_answers_ping() {
    let server = TestServer::start_with(quiet()).await;
    let sam = login(&server, "sam", Role::Supervisor).await;
    let mut ws = server.ws("/api/v1/dashboard/ws", &sam).await;
    let snap = next_json(&mut ws).await;
    assert_eq!(snap["type"], "snapshot");
    let agents: Vec<&str> = snap["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["agent_id"].as_str().unwrap())
        .collect();
    assert_eq!(agents, ["alice", "bob", "carol"]);
    assert_eq!(snap["queues"].as_array().unwrap().len(), 3);
    send_json(&mut ws, &json!({"type": "ping"})).await;
    assert_eq!(next_json(&mut ws).await["type"], "pong");
}
