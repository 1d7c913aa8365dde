//! The customer chat WebSocket over real sockets (docs/api.md#customer-chat-events): authentication
//! before the upgrade, the chat snapshot, messages both ways, `end`, error frames for bad input,
//! and one socket that stays open while the chat moves to another agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use futures_util::SinkExt;
use serde_json::{Value, json};
use switchboard::core::model::Role;
use switchboard::core::{Command, Reply, Target};
use switchboard::http::extract::token_hash;
use tokio_tungstenite::tungstenite::{self, Message};

#[tokio::test]
async fn chat_socket_refuses_unknown_tokens_with_401_and_agent_tokens_with_403() {
    let server = TestServer::start_with(quiet()).await;
    for (token, want) in [
        ("no-such-token".to_string(), 401),
        (login(&server, "alice", Role::Agent).await, 403),
    ] {
        match tokio_tungstenite::connect_async(server.ws_url("/api/v1/chat/ws", &token)).await {
            Err(tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status().as_u16(), want);
                let body: Value = serde_json::from_slice(resp.body().as_ref().unwrap()).unwrap();
                assert_eq!(
                    body["error"],
                    if want == 401 {
                        "unauthorized"
                    } else {
                        "forbidden"
                    }
                );
            }
            other => panic!("expected an HTTP refusal, got {:?}", other.map(|_| ())),
        }
    }
    // A customer token opens neither the panel nor the Dashboard.
    let (customer, _) = start_chat(&server, "Dana", None).await;
    for path in ["/api/v1/agent/ws", "/api/v1/dashboard/ws"] {
        match tokio_tungstenite::connect_async(server.ws_url(path, &customer)).await {
            Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 403),
            other => panic!("{path}: expected 403, got {:?}", other.map(|_| ())),
        }
    }
}

#[tokio::test]
async fn chat_snapshot_then_status_and_messages_both_ways() {
    let server = TestServer::start_with(quiet()).await;
    let (customer, conv) = start_chat(&server, "Dana", Some("Hi, my order is late")).await;
    let (mut cws, snap) = chat(&server, &customer).await;
    assert_eq!(snap["conversation_id"], conv.to_string());
    assert_eq!(snap["status"], "in_queue");
    assert_eq!(snap["position"], 1);
    assert_eq!(snap["agent_name"], Value::Null);
    assert_eq!(snap["messages"].as_array().unwrap().len(), 1);
    assert_eq!(snap["messages"][0]["from"], "customer");
    assert_eq!(snap["messages"][0]["text"], "Hi, my order is late");

    let alice = login(&server, "alice", Role::Agent).await;
    let (mut aws, asnap) = server.panel(&alice).await;
    assert_eq!(asnap["conversations"][0]["id"], conv.to_string());
    assert_eq!(asnap["conversations"][0]["status"], "offered");
    let st = wait_for(&mut cws, |v| v["type"] == "status").await;
    assert_eq!(
        st,
        json!({"type": "status", "status": "offered", "position": null, "agent_name": null})
    );

    accept(&server, &alice, conv).await;
    let st = wait_for(&mut cws, |v| is_status(v, "in_process")).await;
    assert_eq!(st["agent_name"], "Alice");

    send_json(&mut cws, &json!({"type": "message", "text": "Order 1234"})).await;
    wait_for(&mut cws, |v| is_message(v, "customer", "Order 1234")).await;
    let m = wait_for(&mut aws, |v| v["type"] == "message").await;
    assert_eq!(m["conversation_id"], conv.to_string());
    assert_eq!(m["message"]["from"], "customer");
    assert_eq!(m["message"]["text"], "Order 1234");

    call(
        &server,
        Command::AgentMessage {
            token: token_hash(&alice),
            conversation: conv,
            text: "Let me check".into(),
        },
    )
    .await;
    wait_for(&mut cws, |v| is_message(v, "agent", "Let me check")).await;
    wait_for(&mut aws, |v| is_message(v, "agent", "Let me check")).await;

    // A second socket of the same customer (another tab) resumes with the whole transcript.
    let (_second, snap) = chat(&server, &customer).await;
    let texts: Vec<&str> = snap["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        ["Hi, my order is late", "Order 1234", "Let me check"]
    );
    assert_eq!(snap["status"], "in_process");
    assert_eq!(snap["agent_name"], "Alice");
}

#[tokio::test]
async fn bad_customer_frames_get_error_frames_and_the_socket_stays_open() {
    let server = TestServer::start_with(quiet()).await;
    let (customer, _) = start_chat(&server, "Dana", None).await;
    let (mut ws, _) = chat(&server, &customer).await;

    let cases: [(Message, &str); 6] = [
        (Message::Text("garbage".into()), "invalid_request"),
        (
            Message::Text(r#"{"type":"dance"}"#.into()),
            "invalid_request",
        ),
        (
            Message::Text(r#"{"type":"message"}"#.into()),
            "invalid_request",
        ),
        (
            Message::Text(r#"{"type":"message","text":"   "}"#.into()),
            "invalid_request",
        ),
        (
            Message::Text(
                json!({"type": "message", "text": "x".repeat(4001)})
                    .to_string()
                    .into(),
            ),
            "payload_too_large",
        ),
        (Message::Binary(vec![1u8, 2, 3].into()), "invalid_request"),
    ];
    for (frame, code) in cases {
        ws.send(frame).await.unwrap();
        let err = next_json(&mut ws).await;
        assert_eq!(err["type"], "error", "{err}");
        assert_eq!(err["error"], code, "{err}");
        assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    send_json(&mut ws, &json!({"type": "ping"})).await;
    assert_eq!(next_json(&mut ws).await, json!({"type": "pong"}));
    send_json(&mut ws, &json!({"type": "message", "text": "still here"})).await;
    wait_for(&mut ws, |v| is_message(v, "customer", "still here")).await;
}

#[tokio::test]
async fn customer_end_abandons_a_waiting_chat_closes_its_socket_and_revokes_the_token() {
    let server = TestServer::start_with(quiet()).await;
    let (customer, _) = start_chat(&server, "Dana", Some("hello?")).await;
    let (mut ws, _) = chat(&server, &customer).await;
    send_json(&mut ws, &json!({"type": "end"})).await;
    wait_for(&mut ws, |v| is_status(v, "abandoned")).await;
    // The chat is over: after the final status the server closes the socket normally.
    assert_eq!(close_code(&mut ws).await, Some(1000));
    // The chat is over: its token no longer opens a socket.
    match tokio_tungstenite::connect_async(server.ws_url("/api/v1/chat/ws", &customer)).await {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 401),
        other => panic!("expected 401, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn customer_end_while_in_process_puts_the_agent_in_wrap_up() {
    let server = TestServer::start_with(quiet()).await;
    let alice = login(&server, "alice", Role::Agent).await;
    let (mut aws, _) = server.panel(&alice).await;
    let (customer, conv) = start_chat(&server, "Dana", None).await;
    wait_for(&mut aws, |v| v["type"] == "conversation").await;
    accept(&server, &alice, conv).await;
    let (mut ws, _) = chat(&server, &customer).await;
    send_json(&mut ws, &json!({"type": "end"})).await;
    wait_for(&mut ws, |v| is_status(v, "wrap_up")).await;
    let c = wait_for(&mut aws, |v| {
        v["type"] == "conversation" && v["conversation"]["status"] == "wrap_up"
    })
    .await;
    assert_eq!(c["conversation"]["disconnect_party"], "customer");
    assert_eq!(c["conversation"]["disconnect_reason"], "CustomerEnded");
}

#[tokio::test]
async fn chat_socket_stays_open_across_a_transfer_to_another_agent() {
    let server = TestServer::start_with(quiet()).await;
    let alice = login(&server, "alice", Role::Agent).await;
    let bob = login(&server, "bob", Role::Agent).await;
    let (mut aws, _) = server.panel(&alice).await;
    call(
        &server,
        Command::SetPresence {
            token: token_hash(&bob),
            presence: switchboard::core::model::Presence::NotReady,
        },
    )
    .await;
    let (mut bws, _) = server.panel(&bob).await;
    let (customer, conv) = start_chat(&server, "Dana", Some("billing question")).await;
    wait_for(&mut aws, |v| v["type"] == "conversation").await;
    accept(&server, &alice, conv).await;
    let (mut cws, _) = chat(&server, &customer).await;

    let moved = match call(
        &server,
        Command::Transfer {
            token: token_hash(&alice),
            conversation: conv,
            target: Target::Agent("bob".into()),
        },
    )
    .await
    {
        Reply::Conversation(c) => c.id,
        other => panic!("expected the new conversation, got {other:?}"),
    };
    let offer = wait_for(&mut bws, |v| {
        v["type"] == "conversation" && v["conversation"]["id"] == moved.to_string()
    })
    .await;
    assert_eq!(offer["conversation"]["status"], "offered");
    assert_eq!(offer["conversation"]["origin"]["kind"], "transfer");
    wait_for(&mut cws, |v| is_status(v, "offered")).await;
    accept(&server, &bob, moved).await;
    let st = wait_for(&mut cws, |v| is_status(v, "in_process")).await;
    assert_eq!(st["agent_name"], "Bob");

    // Same socket, same token: the next message reaches Bob on the new conversation.
    send_json(&mut cws, &json!({"type": "message", "text": "thanks Bob"})).await;
    let m = wait_for(&mut bws, |v| v["type"] == "message").await;
    assert_eq!(m["conversation_id"], moved.to_string());
    assert_eq!(m["message"]["text"], "thanks Bob");
    wait_for(&mut cws, |v| is_message(v, "customer", "thanks Bob")).await;
}
