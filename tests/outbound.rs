//! Agent replies on SMS, social and email reach the configured webhook
//! (docs/configuration.md#outbound): delivered with the reply's details, retried with backoff from
//! the persisted outbox while the receiver fails, marked failed after the last attempt, and not
//! lost across a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::*;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;
use switchboard::core::model::{Medium, Role};
use switchboard::core::{Command, Reply};
use switchboard::driver::{FrameRx, Outgoing};
use switchboard::http::extract::token_hash;
use tokio::sync::mpsc;

/// What the receiver records: each request's JSON body and its Idempotency-Key.
type Posts = mpsc::UnboundedSender<(Value, String)>;

/// A webhook receiver on 127.0.0.1:0 answering with the status in `status`; every request
/// body (with its Idempotency-Key) goes to the returned channel.
async fn receiver(status: Arc<AtomicU16>) -> (String, mpsc::UnboundedReceiver<(Value, String)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new()
        .route(
            "/hook",
            post(
                |State((status, tx)): State<(Arc<AtomicU16>, Posts)>,
                 headers: HeaderMap,
                 body: String| async move {
                    let key = headers
                        .get("idempotency-key")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    let _ = tx.send((serde_json::from_str(&body).unwrap_or(Value::Null), key));
                    StatusCode::from_u16(status.load(Ordering::SeqCst)).unwrap()
                },
            ),
        )
        .with_state((status, tx));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/hook"), rx)
}

async fn next_post(rx: &mut mpsc::UnboundedReceiver<(Value, String)>) -> (Value, String) {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a webhook call within 5 s")
        .expect("receiver open")
}

/// The next panel `message` frame whose delivery state is `state`.
async fn delivery(frames: &mut FrameRx, state: &str) -> Value {
    let search = async {
        loop {
            match frames.recv().await.expect("panel stream open") {
                Outgoing::Text(t) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v["type"] == "message" && v["message"]["delivery"] == state {
                        return v;
                    }
                }
                Outgoing::Close(..) => panic!("panel closed"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), search)
        .await
        .expect("delivery state within 5 s")
}

/// alice online with an SMS conversation from +15550100 accepted; returns her token, her
/// panel stream and the conversation id.
async fn sms_in_process(server: &TestServer) -> (String, FrameRx, uuid::Uuid) {
    let alice = login(server, "alice", Role::Agent).await;
    let (_, _, frames) = server
        .handle
        .attach_panel(token_hash(&alice))
        .await
        .unwrap();
    let reply = call(
        server,
        Command::InboundMessage {
            medium: Medium::Sms,
            from: "+15550100".into(),
            text: "where is my parcel?".into(),
            queue: "support".into(),
        },
    )
    .await;
    let id = match reply {
        Reply::Conversation(c) => c.id,
        r => panic!("{r:?}"),
    };
    accept(server, &alice, id).await;
    (alice, frames, id)
}

fn config_with(url: &str, attempts: u32) -> switchboard::config::Config {
    let mut cfg = quiet();
    cfg.outbound.sms = Some(url.to_string());
    cfg.outbound.max_attempts = attempts;
    cfg.outbound.initial_backoff = Duration::from_secs(1);
    cfg.outbound.max_backoff = Duration::from_secs(60);
    cfg
}

#[tokio::test]
async fn an_sms_reply_is_posted_to_the_webhook_and_marked_delivered() {
    let status = Arc::new(AtomicU16::new(200));
    let (url, mut posts) = receiver(status).await;
    let server = TestServer::start_with(config_with(&url, 3)).await;
    let (alice, mut frames, id) = sms_in_process(&server).await;
    call(
        &server,
        Command::AgentMessage {
            token: token_hash(&alice),
            conversation: id,
            text: "It left the depot today.".into(),
        },
    )
    .await;
    let (body, key) = next_post(&mut posts).await;
    assert_eq!(body["medium"], "sms");
    assert_eq!(body["to"], "+15550100");
    assert_eq!(body["text"], "It left the depot today.");
    assert_eq!(body["agent"], "alice");
    assert_eq!(body["conversation_id"], id.to_string());
    assert_eq!(body["attempt"], 1);
    assert_eq!(
        key,
        body["message_id"].as_str().unwrap(),
        "the idempotency key is the message id"
    );
    let frame = delivery(&mut frames, "delivered").await;
    assert_eq!(frame["message"]["id"], body["message_id"]);
}

#[tokio::test]
async fn a_failing_webhook_is_retried_with_backoff_then_marked_failed() {
    let status = Arc::new(AtomicU16::new(503));
    let (url, mut posts) = receiver(status).await;
    let server = TestServer::start_with(config_with(&url, 3)).await;
    let (alice, mut frames, id) = sms_in_process(&server).await;
    call(
        &server,
        Command::AgentMessage {
            token: token_hash(&alice),
            conversation: id,
            text: "hello".into(),
        },
    )
    .await;
    assert_eq!(next_post(&mut posts).await.0["attempt"], 1);
    // The retry waits for its backoff (2 s after the first failure): nothing before it.
    server.advance(Duration::from_millis(500)).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(200), posts.recv())
            .await
            .is_err(),
        "no retry before the backoff"
    );
    server.advance(Duration::from_secs(2)).await;
    assert_eq!(next_post(&mut posts).await.0["attempt"], 2);
    server.advance(Duration::from_secs(5)).await;
    assert_eq!(next_post(&mut posts).await.0["attempt"], 3);
    delivery(&mut frames, "failed").await;
    server.advance(Duration::from_secs(120)).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(200), posts.recv())
            .await
            .is_err(),
        "no attempt after the last one"
    );
}

#[tokio::test]
async fn a_pending_reply_survives_a_restart_and_is_delivered_after_it() {
    let status = Arc::new(AtomicU16::new(503));
    let (url, mut posts) = receiver(status.clone()).await;
    let server = TestServer::start_with(config_with(&url, 5)).await;
    let (alice, _frames, id) = sms_in_process(&server).await;
    call(
        &server,
        Command::AgentMessage {
            token: token_hash(&alice),
            conversation: id,
            text: "still pending".into(),
        },
    )
    .await;
    let (first, _) = next_post(&mut posts).await;
    // Wait until the failed attempt is recorded (its retry timer is armed) before stopping.
    let recorded = async {
        while server
            .handle
            .inspect(|c| c.gauges().outbox_pending)
            .await
            .unwrap()
            == 0
            || server.handle.metrics.commits.load(Ordering::Relaxed) == 0
        {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), recorded)
        .await
        .expect("outbox recorded");
    status.store(200, Ordering::SeqCst);
    let server = server.restart(Duration::from_secs(30)).await;
    server.advance(Duration::from_secs(1)).await;
    let (again, _) = next_post(&mut posts).await;
    assert_eq!(
        again["message_id"], first["message_id"],
        "the same reply, not a new one"
    );
    assert!(again["attempt"].as_u64().unwrap() >= 2);
}
