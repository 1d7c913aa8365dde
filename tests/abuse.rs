//! Hostile-client cases: what a stranger can make the server hold or refuse (tokens in URLs,
//! chat floods, slow or idle connections, oversized registrations), each with its bound.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn rest_routes_refuse_a_token_in_the_query_string() {
    let server = TestServer::start().await;
    let token = server.token("alice").await;
    let (status, body) = server
        .http
        .get(&format!("/api/v1/agent/state?token={token}"), None)
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "unauthorized");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("only on WebSocket routes"),
        "{body}"
    );
    // Even alongside a valid header.
    let (status, _) = server
        .http
        .get(&format!("/api/v1/agent/state?token={token}"), Some(&token))
        .await;
    assert_eq!(status, 401);
    let (status, _) = server
        .http
        .post(
            &format!("/api/v1/logout?limit=1&token={token}"),
            Some(&token),
            &json!({}),
        )
        .await;
    assert_eq!(status, 401);
    // A customer token in the URL of a customer route too.
    let (chat_token, _) = start_chat(&server, "Dana", Some("hello")).await;
    let (status, _) = server
        .http
        .get(&format!("/api/v1/chat?token={chat_token}"), None)
        .await;
    assert_eq!(status, 401);
    // The header still works, and so do the WebSockets with ?token=.
    let (status, _) = server.http.get("/api/v1/agent/state", Some(&token)).await;
    assert_eq!(status, 200);
    let (_ws, snap) = server.panel(&token).await;
    assert_eq!(snap["type"], "snapshot");
    let (_cws, snap) = chat(&server, &chat_token).await;
    assert_eq!(snap["type"], "snapshot");
}

/// A server whose HTTP connection limits are small enough to reach in a test.
fn tight_http() -> switchboard::config::Config {
    let mut cfg = test_config();
    cfg.limits.max_connections = 8;
    cfg.limits.http_header_timeout = Duration::from_secs(2);
    cfg.limits.http_body_timeout = Duration::from_secs(3);
    cfg.limits.http_idle_timeout = Duration::from_secs(4);
    cfg
}

/// Reads until the server closes the connection (`Ok(bytes)`), or `Err` after `within`.
async fn read_to_close(tcp: &mut TcpStream, within: Duration) -> Result<Vec<u8>, ()> {
    let mut all = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    };
    match tokio::time::timeout(within, read).await {
        Ok(()) => Ok(all),
        Err(_) => Err(()),
    }
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let server = TestServer::start_with(tight_http()).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    // A request, then nothing: the keep-alive connection is closed once idle.
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let got = read_to_close(&mut tcp, Duration::from_secs(30)).await;
    let got = got.expect("idle connection closed within 30 s");
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    // A connection that never sends anything.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    assert!(
        read_to_close(&mut silent, Duration::from_secs(30))
            .await
            .is_ok(),
        "silent connection closed"
    );
}

#[tokio::test(start_paused = true)]
async fn a_slowloris_head_is_cut_off_at_the_header_timeout() {
    let server = TestServer::start_with(tight_http()).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let drip = async {
        for i in 0..120 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if tcp
                .write_all(format!("X-Drip-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                return true;
            }
        }
        false
    };
    // 120 headers at 2/s would take a minute; the server gives the head 2 s.
    let cut = tokio::time::timeout(Duration::from_secs(30), drip).await;
    assert_eq!(cut, Ok(true), "the server stopped reading a dripping head");
}

#[tokio::test(start_paused = true)]
async fn a_body_sent_too_slowly_gets_408_and_the_connection_closes() {
    let server = TestServer::start_with(tight_http()).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(
        b"POST /api/v1/chats HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"queue\"",
    )
    .await
    .unwrap();
    let (mut rd, mut wr) = tcp.split();
    let drip = async {
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if wr.write_all(b" ").await.is_err() {
                break;
            }
        }
        std::future::pending::<()>().await;
    };
    let read = async {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return all,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    };
    let got = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::select! {
            r = read => r,
            _ = drip => unreachable!(),
        }
    })
    .await
    .expect("a dripping body is cut off");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn past_the_connection_cap_new_clients_are_served_once_idle_ones_are_reaped() {
    let server = TestServer::start_with(tight_http()).await;
    let mut idle = Vec::new();
    for _ in 0..8 {
        let tcp = TcpStream::connect(server.addr).await.unwrap();
        idle.push(tcp);
    }
    // Let the server accept all eight.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut late = TcpStream::connect(server.addr).await.unwrap();
    late.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    // Not served while the eight hold every slot...
    assert!(
        tokio::time::timeout(Duration::from_secs(1), late.read(&mut buf))
            .await
            .is_err(),
        "the ninth connection waits while eight are open"
    );
    // ...and served once they are closed as idle, with no help from their clients.
    let got = read_to_close(&mut late, Duration::from_secs(30))
        .await
        .expect("served within 30 s");
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    drop(idle);
}

/// Starts a web chat over HTTP; returns (customer token, conversation id).
async fn http_chat(server: &TestServer, name: &str, text: &str) -> (String, String) {
    let (s, chat) = server
        .http
        .post(
            "/api/v1/chats",
            None,
            &json!({"queue": "support", "name": name, "text": text}),
        )
        .await;
    assert_eq!(s, 201, "{chat}");
    (
        chat["token"].as_str().unwrap().to_string(),
        chat["conversation_id"].as_str().unwrap().to_string(),
    )
}

async fn customer_says(server: &TestServer, token: &str, text: &str) -> (u16, serde_json::Value) {
    server
        .http
        .post("/api/v1/chat/messages", Some(token), &json!({"text": text}))
        .await
}

#[tokio::test]
async fn a_chat_customer_may_send_only_so_many_messages_a_minute() {
    let mut cfg = test_config();
    cfg.limits.customer_messages_per_minute = 5;
    let server = TestServer::start_with(cfg).await;
    let (token, _) = http_chat(&server, "Flood", "hello").await;
    for i in 0..5 {
        assert_eq!(
            customer_says(&server, &token, &format!("m{i}")).await.0,
            200
        );
    }
    let (s, v) = customer_says(&server, &token, "one too many").await;
    assert_eq!((s, v["error"].as_str()), (429, Some("rate_limited")), "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("customer_messages_per_minute")
    );
    // The chat socket is held to the same rate.
    let (mut ws, _) = chat(&server, &token).await;
    send_json(&mut ws, &json!({"type": "message", "text": "via socket"})).await;
    let err = wait_for(&mut ws, |v| v["type"] == "error").await;
    assert_eq!(err["error"], "rate_limited");
    // Another customer is not affected; the first may write again a minute later.
    let (other, _) = http_chat(&server, "Calm", "hi").await;
    assert_eq!(customer_says(&server, &other, "fine").await.0, 200);
    server.advance(Duration::from_secs(61)).await;
    assert_eq!(customer_says(&server, &token, "later").await.0, 200);
}

#[tokio::test]
async fn a_thread_refuses_messages_past_its_transcript_cap() {
    let mut cfg = test_config();
    cfg.limits.max_messages_per_thread = 6;
    let server = TestServer::start_with(cfg).await;
    let (token, _) = http_chat(&server, "Long", "first").await;
    for i in 1..6 {
        assert_eq!(
            customer_says(&server, &token, &format!("m{i}")).await.0,
            200
        );
    }
    let (s, v) = customer_says(&server, &token, "seventh").await;
    assert_eq!(
        (s, v["error"].as_str()),
        (409, Some("transcript_full")),
        "{v}"
    );
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("limits.max_messages_per_thread")
    );
    let (s, v) = server.http.get("/api/v1/chat", Some(&token)).await;
    assert_eq!(s, 200);
    assert_eq!(v["messages"].as_array().unwrap().len(), 6);
}

#[tokio::test]
async fn snapshots_carry_only_the_latest_messages_and_details_keep_them_all() {
    let mut cfg = quiet();
    cfg.limits.snapshot_messages = 3;
    let server = TestServer::start_with(cfg).await;
    let agent = server.token("alice").await;
    let (_panel, _) = server.panel(&agent).await;
    let (token, id) = http_chat(&server, "Chatty", "m0").await;
    for i in 1..10 {
        assert_eq!(
            customer_says(&server, &token, &format!("m{i}")).await.0,
            200
        );
    }
    let texts = |v: &serde_json::Value| -> Vec<String> {
        v["messages"]
            .as_array()
            .unwrap_or_else(|| panic!("messages in {v}"))
            .iter()
            .map(|m| m["text"].as_str().unwrap().to_string())
            .collect()
    };
    let latest = vec!["m7".to_string(), "m8".into(), "m9".into()];
    let (s, v) = server.http.get("/api/v1/chat", Some(&token)).await;
    assert_eq!(s, 200);
    assert_eq!(texts(&v), latest, "GET /chat");
    let (_ws, snap) = chat(&server, &token).await;
    assert_eq!(texts(&snap), latest, "chat socket snapshot");
    let (s, v) = server
        .http
        .post(
            &format!("/api/v1/conversations/{id}/accept"),
            Some(&agent),
            &json!({}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(texts(&v), latest, "accept reply");
    let (s, v) = server.http.get("/api/v1/agent/state", Some(&agent)).await;
    assert_eq!(s, 200);
    assert_eq!(texts(&v["conversations"][0]), latest, "GET /agent/state");
    let (_p2, snap) = server.panel(&agent).await;
    assert_eq!(texts(&snap["conversations"][0]), latest, "panel snapshot");
    // The whole transcript stays readable in the conversation's details.
    let (s, v) = server
        .http
        .get(&format!("/api/v1/conversations/{id}"), Some(&agent))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(texts(&v).len(), 10, "details keep every message");
}

#[tokio::test]
async fn chat_names_with_control_characters_are_refused() {
    let server = TestServer::start().await;
    for name in ["a\u{0}b", "bell\u{7}", "esc\u{1b}[31m", "two\nlines"] {
        let (s, v) = server
            .http
            .post(
                "/api/v1/chats",
                None,
                &json!({"queue": "support", "name": name}),
            )
            .await;
        assert_eq!(
            (s, v["error"].as_str()),
            (400, Some("invalid_request")),
            "{name:?}: {v}"
        );
        assert!(
            v["message"]
                .as_str()
                .unwrap()
                .contains("control characters")
        );
    }
}

#[tokio::test]
async fn a_customer_token_holds_at_most_max_sockets_per_chat() {
    let mut cfg = test_config();
    cfg.limits.max_sockets_per_chat = 2;
    let server = TestServer::start_with(cfg).await;
    let (token, _) = http_chat(&server, "Tabs", "hi").await;
    let (_a, _) = chat(&server, &token).await;
    let (_b, _) = chat(&server, &token).await;
    let mut third = server.ws("/api/v1/chat/ws", &token).await;
    assert_eq!(close_code(&mut third).await, Some(4409));
}
