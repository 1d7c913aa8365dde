//! End-to-end stories over real sockets on a manual clock (docs/sessions.md, docs/policy.md): the
//! connection-loss story of a chat that survives its agent's lost connection and is requeued to
//! another agent; voice, email and the Dashboard around a connection loss; resume and expiry across
//! restarts; and the latency of the requeue as the customer sees it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use switchboard::core::model::{
    DisconnectParty, DisconnectReason, EventKind, Metadata, OriginKind, Presence, Role,
    SessionState, Status,
};
use switchboard::core::view::ConversationView;
use switchboard::core::{BindingUpdate, Command, Rejection, Reply, Timestamp};
use switchboard::driver::CallError;
use switchboard::http::extract::token_hash;
use switchboard::store::Store;
use uuid::Uuid;

const GRACE_PASSED: Duration = Duration::from_secs(61);

fn reconnecting_prompt(server: &TestServer) -> String {
    server.cfg.queues[0].reconnecting_prompt.clone().unwrap()
}

fn session_lost_prompt(server: &TestServer) -> String {
    server.cfg.queues[0].session_lost_prompt.clone().unwrap()
}

/// A panel or Dashboard `conversation` frame about `id` with `status`.
fn conv_is(v: &Value, id: Uuid, status: &str) -> bool {
    v["type"] == "conversation"
        && v["conversation"]["id"] == id.to_string()
        && v["conversation"]["status"] == status
}

/// The grace deadline of an agent's session, as the supervisor sees it.
async fn deadline_of(server: &TestServer, supervisor: &str, agent: &str) -> Timestamp {
    match call(
        server,
        Command::Agents {
            token: token_hash(supervisor),
        },
    )
    .await
    {
        Reply::Agents(rows) => rows
            .into_iter()
            .find(|a| a.agent_id == agent)
            .and_then(|a| a.session)
            .and_then(|s| s.deadline)
            .expect("a session with a deadline"),
        other => panic!("expected agents, got {other:?}"),
    }
}

async fn waiting(server: &TestServer, agent: &str, queue: &str) -> Vec<ConversationView> {
    match call(
        server,
        Command::QueueConversations {
            token: token_hash(agent),
            queue: queue.into(),
        },
    )
    .await
    {
        Reply::Conversations(v) => v,
        other => panic!("expected conversations, got {other:?}"),
    }
}

/// Opens the store of a stopped server.
fn open_store(server: &TestServer) -> Store {
    Store::open(&server.dir.path().join("switchboard.redb")).expect("store reopens after stop")
}

fn draft(memo: &str) -> Metadata {
    Metadata {
        script: BTreeMap::from([("reason".to_string(), "late delivery".to_string())]),
        memo: memo.into(),
    }
}

/// Reads chat frames until every predicate has matched once; returns the matching frames.
async fn collect(ws: &mut Ws, preds: &[&dyn Fn(&Value) -> bool]) -> Vec<Value> {
    let mut found: Vec<Option<Value>> = vec![None; preds.len()];
    while found.iter().any(Option::is_none) {
        let v = next_json(ws).await;
        for (i, p) in preds.iter().enumerate() {
            if found[i].is_none() && p(&v) {
                found[i] = Some(v.clone());
            }
        }
    }
    found.into_iter().map(Option::unwrap).collect()
}

#[tokio::test]
async fn seed_story_chat_survives_the_lost_agent_and_is_requeued_to_bob() {
    let mut server = TestServer::start_with(quiet()).await;
    let sam = login(&server, "sam", Role::Supervisor).await;

    // Alice opens her panel; a customer starts a chat and it is offered to her.
    let alice = login(&server, "alice", Role::Agent).await;
    let (mut aws, snap) = server.panel(&alice).await;
    assert_eq!(snap["conversations"], json!([]));
    let (customer, c1) = start_chat(&server, "Dana", Some("Hi, my order is late")).await;
    let offer = wait_for(&mut aws, |v| conv_is(v, c1, "offered")).await;
    let arrival = offer["conversation"]["queue_arrival_time"].clone();
    let group_id: Uuid = offer["conversation"]["group_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let (mut cws, csnap) = chat(&server, &customer).await;
    assert_eq!(csnap["status"], "offered");

    accept(&server, &alice, c1).await;
    wait_for(&mut aws, |v| conv_is(v, c1, "in_process")).await;
    let st = wait_for(&mut cws, |v| is_status(v, "in_process")).await;
    assert_eq!(st["agent_name"], "Alice");

    // Messages both ways arrive on both sockets.
    send_json(&mut cws, &json!({"type": "message", "text": "Order 1234"})).await;
    wait_for(&mut cws, |v| is_message(v, "customer", "Order 1234")).await;
    let m = wait_for(&mut aws, |v| is_message(v, "customer", "Order 1234")).await;
    assert_eq!(m["conversation_id"], c1.to_string());
    call(
        &server,
        Command::AgentMessage {
            token: token_hash(&alice),
            conversation: c1,
            text: "Let me check that for you".into(),
        },
    )
    .await;
    wait_for(&mut cws, |v| {
        is_message(v, "agent", "Let me check that for you")
    })
    .await;
    wait_for(&mut aws, |v| {
        is_message(v, "agent", "Let me check that for you")
    })
    .await;

    // Alice types a memo (an unsaved draft) and takes no new work; a second customer waits.
    call(
        &server,
        Command::SaveDraft {
            token: token_hash(&alice),
            conversation: c1,
            draft: draft("order 1234, carrier delayed"),
        },
    )
    .await;
    set_presence(&server, &alice, Presence::NotReady).await;
    wait_for(&mut aws, |v| v["type"] == "presence").await;
    let (_eve, c2) = start_chat(&server, "Eve", Some("hello")).await;
    // Bob is logged in but not ready.
    let bob = login(&server, "bob", Role::Agent).await;
    set_presence(&server, &bob, Presence::NotReady).await;
    let (mut bws, _) = server.panel(&bob).await;

    // Alice closes her tab: the customer is told the agent is reconnecting.
    aws.close(None).await.unwrap();
    wait_for(&mut cws, |v| {
        is_message(v, "system", &reconnecting_prompt(&server))
    })
    .await;
    assert_eq!(
        session_state(&server, &alice).await,
        SessionState::Disconnected
    );
    // A customer message arrives meanwhile.
    send_json(
        &mut cws,
        &json!({"type": "message", "text": "Are you there?"}),
    )
    .await;
    wait_for(&mut cws, |v| is_message(v, "customer", "Are you there?")).await;

    // Alice resumes within the grace period with the same token: nothing is lost.
    let (aws2, snap) = server.panel(&alice).await;
    assert_eq!(snap["session"]["state"], "connected");
    let convs = snap["conversations"].as_array().unwrap();
    let mine = convs
        .iter()
        .find(|c| c["id"] == c1.to_string())
        .expect("the chat is still Alice's");
    assert_eq!(mine["status"], "in_process");
    let texts: Vec<&str> = mine["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert!(texts.contains(&"Are you there?"), "{texts:?}");
    assert!(texts.contains(&"Order 1234"), "{texts:?}");
    assert_eq!(
        snap["drafts"][c1.to_string()],
        json!({"script": {"reason": "late delivery"}, "memo": "order 1234, carrier delayed"})
    );

    // The connection drops again (no close frame) and the grace period passes.
    drop(aws2);
    wait_for(&mut cws, |v| {
        is_message(v, "system", &reconnecting_prompt(&server))
    })
    .await;
    let deadline = deadline_of(&server, &sam, "alice").await;
    server.advance(GRACE_PASSED).await;

    // Same customer socket: the session-lost prompt, and first in the queue.
    let lost_prompt = session_lost_prompt(&server);
    let got = collect(
        &mut cws,
        &[&|v| is_message(v, "system", &lost_prompt), &|v| {
            is_status(v, "in_queue")
        }],
    )
    .await;
    assert_eq!(got[1]["position"], 1);
    assert_eq!(got[1]["agent_name"], Value::Null);

    // A new conversation of the same group, with the original arrival time, ahead of Eve.
    let queue = waiting(&server, &bob, "support").await;
    assert_eq!(queue.len(), 2);
    let requeued = &queue[0];
    let r1 = requeued.id;
    assert_ne!(r1, c1);
    assert_eq!(requeued.group_id, group_id);
    assert_eq!(requeued.origin.kind, OriginKind::Requeue);
    assert_eq!(requeued.origin.previous, Some(c1));
    assert_eq!(requeued.status, Status::InQueue);
    assert_eq!(requeued.medium, "webchat");
    assert_eq!(requeued.customer.name, "Dana");
    assert_eq!(
        serde_json::to_value(requeued.queue_arrival_time).unwrap(),
        arrival
    );
    assert_eq!(queue[1].id, c2);
    // Alice's session ended with the deadline; her token is revoked.
    assert!(matches!(
        server
            .handle
            .call(Command::Authenticate {
                token: token_hash(&alice)
            })
            .await,
        Err(CallError::Rejected(Rejection::Unauthorized))
    ));

    // Bob gets ready: he is offered the requeued chat, accepts, and the customer's next
    // message reaches him.
    set_presence(&server, &bob, Presence::Ready).await;
    wait_for(&mut bws, |v| conv_is(v, r1, "offered")).await;
    accept(&server, &bob, r1).await;
    let st = wait_for(&mut cws, |v| is_status(v, "in_process")).await;
    assert_eq!(st["agent_name"], "Bob");
    send_json(
        &mut cws,
        &json!({"type": "message", "text": "Still about order 1234"}),
    )
    .await;
    let m = wait_for(&mut bws, |v| {
        is_message(v, "customer", "Still about order 1234")
    })
    .await;
    assert_eq!(m["conversation_id"], r1.to_string());

    // The store: the original was handled at the deadline, blamed on the agent.
    server.stop().await;
    let store = open_store(&server);
    let (orig, events) = store.conversation(c1).unwrap().expect("original stored");
    assert_eq!(orig.status, Status::Handled);
    assert_eq!(
        orig.disconnect_reason,
        Some(DisconnectReason::AgentSessionLost)
    );
    assert_eq!(orig.disconnect_party, Some(DisconnectParty::Agent));
    assert_eq!(orig.ended_at, Some(deadline));
    let kinds: Vec<EventKind> = events.iter().map(|e| e.event).collect();
    assert!(kinds.contains(&EventKind::AgentConnectionLost), "{kinds:?}");
    assert!(kinds.contains(&EventKind::AgentReconnected), "{kinds:?}");
    assert!(kinds.contains(&EventKind::SessionLost), "{kinds:?}");
    assert!(kinds.contains(&EventKind::Requeued), "{kinds:?}");
    let group = store.group(group_id).unwrap();
    let ids: Vec<Uuid> = group.iter().map(|c| c.id).collect();
    assert_eq!(ids, [c1, r1]);
    assert_eq!(group[1].agent.as_deref(), Some("bob"));
}

/// Time from the `advance` that crosses the grace deadline to the requeued chat's
/// `status in_queue` frame on the customer socket, over 25 runs (printed, not asserted).
#[tokio::test]
async fn requeue_reaches_the_customer_socket_quickly_after_the_deadline() {
    const RUNS: usize = 25;
    let server = TestServer::start_with(quiet()).await;
    let mut samples = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let alice = login(&server, "alice", Role::Agent).await;
        let (mut aws, _) = server.panel(&alice).await;
        let (customer, conv) = start_chat(&server, "Dana", Some("hello")).await;
        wait_for(&mut aws, |v| conv_is(v, conv, "offered")).await;
        accept(&server, &alice, conv).await;
        let (mut cws, _) = chat(&server, &customer).await;
        drop(aws);
        wait_for(&mut cws, |v| {
            is_message(v, "system", &reconnecting_prompt(&server))
        })
        .await;

        let started = real_now();
        server.advance(GRACE_PASSED).await;
        let st = wait_for(&mut cws, |v| is_status(v, "in_queue")).await;
        samples.push(started.elapsed());
        assert_eq!(st["position"], 1);

        // Clear the queue for the next run.
        send_json(&mut cws, &json!({"type": "end"})).await;
        wait_for(&mut cws, |v| is_status(v, "abandoned")).await;
    }
    samples.sort();
    eprintln!(
        "requeue latency (advance past the deadline -> customer `status in_queue` frame) over {RUNS} runs: p50 {:?}, p90 {:?}, max {:?}",
        samples[RUNS / 2],
        samples[RUNS * 9 / 10],
        samples[RUNS - 1]
    );
}

/// The real clock, for measuring only (deadlines use the manual clock).
#[allow(clippy::disallowed_methods)]
fn real_now() -> std::time::Instant {
    std::time::Instant::now()
}

#[tokio::test]
async fn voice_call_drops_at_once_on_loss_then_wrap_up_and_callback_after_resume() {
    let server = TestServer::start_with(quiet()).await;
    let alice = login(&server, "alice", Role::Agent).await;
    call(
        &server,
        Command::SipRegister {
            agent: "alice".into(),
            update: BindingUpdate::Set(vec![("sip:alice@127.0.0.1:5070".into(), 300)]),
        },
    )
    .await;
    let (mut aws, snap) = server.panel(&alice).await;
    assert_eq!(snap["capabilities"]["voice"], true);
    let call_id = conversation_of(
        call(
            &server,
            Command::InboundCall {
                from: "+15550100".into(),
                queue: "phones".into(),
            },
        )
        .await,
    )
    .id;
    wait_for(&mut aws, |v| conv_is(v, call_id, "offered")).await;
    accept(&server, &alice, call_id).await;
    wait_for(&mut aws, |v| conv_is(v, call_id, "in_process")).await;

    // The panel connection is lost: the call ends at once, blamed on the agent.
    drop(aws);
    wait_state(&server, &alice, SessionState::Disconnected).await;
    let (status, party, reason, ended) = server
        .handle
        .inspect(move |core| {
            let c = core.conversation(&call_id).expect("open");
            (
                c.status,
                c.disconnect_party,
                c.disconnect_reason,
                c.ended_at,
            )
        })
        .await
        .unwrap();
    assert_eq!(status, Status::WrapUp);
    assert_eq!(party, Some(DisconnectParty::Agent));
    assert_eq!(reason, Some(DisconnectReason::AgentConnectionLost));
    assert!(ended.is_some());

    // Alice resumes: the dropped call is there in wrap-up; she saves the script and memo,
    // calls the customer back and completes the dropped call.
    let (mut aws, snap) = server.panel(&alice).await;
    assert_eq!(snap["capabilities"]["voice"], true);
    let dropped = snap["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == call_id.to_string())
        .expect("the dropped call is on the panel")
        .clone();
    assert_eq!(dropped["status"], "wrap_up");
    assert_eq!(dropped["disconnect_reason"], "AgentConnectionLost");
    call(
        &server,
        Command::SaveMetadata {
            token: token_hash(&alice),
            conversation: call_id,
            metadata: draft("line dropped, calling back"),
        },
    )
    .await;
    let back = conversation_of(
        call(
            &server,
            Command::Callback {
                token: token_hash(&alice),
                conversation: call_id,
            },
        )
        .await,
    );
    assert_eq!(back.origin.kind, OriginKind::Callback);
    assert_eq!(back.origin.previous, Some(call_id));
    assert_eq!(back.status, Status::InProcess);
    assert_eq!(back.agent.as_deref(), Some("alice"));
    assert_eq!(back.customer.address, "+15550100");
    wait_for(&mut aws, |v| conv_is(v, back.id, "in_process")).await;
    call(
        &server,
        Command::Complete {
            token: token_hash(&alice),
            conversation: call_id,
        },
    )
    .await;
    let done = wait_for(&mut aws, |v| conv_is(v, call_id, "handled")).await;
    assert_eq!(
        done["conversation"]["metadata"]["memo"],
        "line dropped, calling back"
    );
    assert_eq!(done["conversation"]["group_id"], back.group_id.to_string());
}

#[tokio::test]
async fn email_stays_assigned_after_the_grace_period_and_is_there_at_next_login() {
    let server = TestServer::start_with(quiet()).await;
    let alice = login(&server, "alice", Role::Agent).await;
    let (mut aws, _) = server.panel(&alice).await;
    let email = conversation_of(
        call(
            &server,
            Command::InboundEmail {
                from: "carl@example.com".into(),
                subject: "Invoice 77".into(),
                text: "Please resend the invoice.".into(),
                queue: "mail".into(),
            },
        )
        .await,
    )
    .id;
    wait_for(&mut aws, |v| conv_is(v, email, "offered")).await;
    accept(&server, &alice, email).await;
    wait_for(&mut aws, |v| conv_is(v, email, "in_process")).await;

    drop(aws);
    wait_state(&server, &alice, SessionState::Disconnected).await;
    server.advance(GRACE_PASSED).await;
    // The session is over, the email is still Alice's and in process.
    assert!(
        server
            .handle
            .call(Command::AgentState {
                token: token_hash(&alice)
            })
            .await
            .is_err()
    );
    let (status, agent) = server
        .handle
        .inspect(move |core| {
            let c = core.conversation(&email).expect("still open");
            (c.status, c.agent.clone())
        })
        .await
        .unwrap();
    assert_eq!(status, Status::InProcess);
    assert_eq!(agent.as_deref(), Some("alice"));

    let alice = login(&server, "alice", Role::Agent).await;
    let (_aws, snap) = server.panel(&alice).await;
    let mine = snap["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == email.to_string())
        .expect("the email is on the new panel")
        .clone();
    assert_eq!(mine["status"], "in_process");
    assert_eq!(mine["channel"], "email");
}

#[tokio::test]
async fn dashboard_shows_the_disconnected_agent_with_a_deadline_and_the_requeue() {
    let server = TestServer::start_with(quiet()).await;
    let sam = login(&server, "sam", Role::Supervisor).await;
    let mut dws = server.ws("/api/v1/dashboard/ws", &sam).await;
    assert_eq!(next_json(&mut dws).await["type"], "snapshot");

    let alice = login(&server, "alice", Role::Agent).await;
    let (mut aws, _) = server.panel(&alice).await;
    wait_for(&mut dws, |v| {
        v["type"] == "agent"
            && v["agent"]["agent_id"] == "alice"
            && v["agent"]["session"]["state"] == "connected"
    })
    .await;
    let (_customer, c1) = start_chat(&server, "Dana", Some("hi")).await;
    wait_for(&mut aws, |v| conv_is(v, c1, "offered")).await;
    accept(&server, &alice, c1).await;
    wait_for(&mut dws, |v| conv_is(v, c1, "in_process")).await;

    drop(aws);
    let row = wait_for(&mut dws, |v| {
        v["type"] == "agent"
            && v["agent"]["agent_id"] == "alice"
            && v["agent"]["session"]["state"] == "disconnected"
    })
    .await;
    let session = &row["agent"]["session"];
    let lost = Timestamp::parse_rfc3339(session["disconnected_at"].as_str().unwrap()).unwrap();
    let deadline = Timestamp::parse_rfc3339(session["deadline"].as_str().unwrap()).unwrap();
    assert_eq!(
        deadline.0 - lost.0,
        60_000,
        "deadline = loss + session_grace"
    );

    server.advance(GRACE_PASSED).await;
    let got = collect(
        &mut dws,
        &[
            &|v| conv_is(v, c1, "handled"),
            &|v| {
                v["type"] == "conversation"
                    && v["conversation"]["origin"]["kind"] == "requeue"
                    && v["conversation"]["origin"]["previous"] == c1.to_string()
                    && v["conversation"]["status"] == "in_queue"
            },
            &|v| {
                v["type"] == "agent"
                    && v["agent"]["agent_id"] == "alice"
                    && v["agent"]["session"].is_null()
            },
        ],
    )
    .await;
    assert_eq!(
        got[0]["conversation"]["disconnect_reason"],
        "AgentSessionLost"
    );
    assert_eq!(got[0]["conversation"]["disconnect_party"], "agent");
    assert_eq!(
        got[0]["conversation"]["ended_at"], session["deadline"],
        "the original ends at the deadline"
    );
    assert_eq!(
        got[1]["conversation"]["queue_arrival_time"],
        got[0]["conversation"]["queue_arrival_time"]
    );
    assert_eq!(
        got[1]["conversation"]["group_id"],
        got[0]["conversation"]["group_id"]
    );
}

#[tokio::test]
async fn session_resumes_with_the_old_token_after_a_restart_within_grace() {
    let server = TestServer::start_with(quiet()).await;
    let alice = login(&server, "alice", Role::Agent).await;
    let (mut aws, snap) = server.panel(&alice).await;
    let session_id = snap["session"]["id"].clone();
    let (customer, c1) = start_chat(&server, "Dana", Some("hi")).await;
    wait_for(&mut aws, |v| conv_is(v, c1, "offered")).await;
    accept(&server, &alice, c1).await;
    call(
        &server,
        Command::SaveDraft {
            token: token_hash(&alice),
            conversation: c1,
            draft: draft("typed before the restart"),
        },
    )
    .await;
    let (mut cws, _) = chat(&server, &customer).await;

    let server = server.restart(Duration::from_secs(5)).await;
    assert_eq!(close_code(&mut aws).await, Some(1001));
    assert_eq!(close_code(&mut cws).await, Some(1001));
    // At boot the session waits for its panel with a full grace period.
    assert_eq!(
        session_state(&server, &alice).await,
        SessionState::Disconnected
    );

    let (_aws, snap) = server.panel(&alice).await;
    assert_eq!(snap["session"]["id"], session_id);
    assert_eq!(snap["session"]["state"], "connected");
    let mine = snap["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == c1.to_string())
        .expect("the chat survived the restart")
        .clone();
    assert_eq!(mine["status"], "in_process");
    assert_eq!(
        snap["drafts"][c1.to_string()]["memo"],
        "typed before the restart"
    );
    let (_cws, csnap) = chat(&server, &customer).await;
    assert_eq!(csnap["status"], "in_process");
    assert_eq!(csnap["agent_name"], "Alice");

    // The grace period from the boot passes with the panel attached: nothing happens.
    server.advance(GRACE_PASSED).await;
    assert_eq!(
        session_state(&server, &alice).await,
        SessionState::Connected
    );
}

/// Restarts, then checks the customer's chat socket shows the requeued chat, with the
/// session-lost prompt exactly once.
async fn assert_requeued_once(server: &TestServer, customer: &str, c1: Uuid) -> Uuid {
    let (_cws, snap) = chat(server, customer).await;
    assert_eq!(snap["status"], "in_queue");
    assert_eq!(snap["position"], 1);
    let current: Uuid = snap["conversation_id"].as_str().unwrap().parse().unwrap();
    assert_ne!(current, c1);
    let prompts = snap["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["text"] == session_lost_prompt(server))
        .count();
    assert_eq!(prompts, 1);
    current
}

#[tokio::test]
async fn expiry_after_a_restart_requeues_exactly_once() {
    let server = TestServer::start_with(quiet()).await;
    let alice = login(&server, "alice", Role::Agent).await;
    let (mut aws, _) = server.panel(&alice).await;
    let (customer, c1) = start_chat(&server, "Dana", Some("hi")).await;
    wait_for(&mut aws, |v| conv_is(v, c1, "offered")).await;
    accept(&server, &alice, c1).await;

    // Restart while connected; Alice never comes back.
    let server = server.restart(Duration::from_secs(5)).await;
    let (mut cws, snap) = chat(&server, &customer).await;
    assert_eq!(snap["status"], "in_process");
    server.advance(GRACE_PASSED).await;
    let st = wait_for(&mut cws, |v| is_status(v, "in_queue")).await;
    assert_eq!(st["position"], 1);
    let r1 = assert_requeued_once(&server, &customer, c1).await;

    // Restart again, and let time pass: no second requeue.
    let mut server = server.restart(Duration::from_secs(5)).await;
    server.advance(GRACE_PASSED).await;
    assert_eq!(assert_requeued_once(&server, &customer, c1).await, r1);
    let in_queue = server
        .handle
        .inspect(|core| core.gauges().conversations.get("in_queue").copied())
        .await
        .unwrap();
    assert_eq!(in_queue, Some(1));

    server.stop().await;
    let store = open_store(&server);
    let (orig, _) = store.conversation(c1).unwrap().unwrap();
    assert_eq!(orig.status, Status::Handled);
    let group = store.group(orig.group_id).unwrap();
    assert_eq!(group.iter().map(|c| c.id).collect::<Vec<_>>(), [c1, r1]);
}

#[tokio::test]
async fn a_deadline_that_passed_while_the_server_was_down_fires_once_at_boot() {
    let server = TestServer::start_with(quiet()).await;
    let alice = login(&server, "alice", Role::Agent).await;
    let (mut aws, _) = server.panel(&alice).await;
    let (customer, c1) = start_chat(&server, "Dana", Some("hi")).await;
    wait_for(&mut aws, |v| conv_is(v, c1, "offered")).await;
    accept(&server, &alice, c1).await;
    drop(aws);
    wait_state(&server, &alice, SessionState::Disconnected).await;

    // Down for longer than the grace period: the stored deadline fires at boot.
    let server = server.restart(Duration::from_secs(90)).await;
    let r1 = assert_requeued_once(&server, &customer, c1).await;
    let mut server = server.restart(Duration::from_secs(90)).await;
    assert_eq!(assert_requeued_once(&server, &customer, c1).await, r1);

    server.stop().await;
    let store = open_store(&server);
    let (orig, _) = store.conversation(c1).unwrap().unwrap();
    assert_eq!(
        orig.disconnect_reason,
        Some(DisconnectReason::AgentSessionLost)
    );
    assert_eq!(store.group(orig.group_id).unwrap().len(), 2);
}
