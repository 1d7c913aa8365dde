//! `switchboard demo` run in-process on simulated time (a paused tokio clock and the demo's
//! manual server clock): customers on every medium, real SIP registrations and calls over UDP
//! on loopback (the simulated trunk calls, the simulated phones answer), and the flaky agent's
//! lost session requeuing a chat — minutes of story in a few real seconds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;
use switchboard::core::model::{
    Conversation, DisconnectParty, DisconnectReason, EventKind, Medium, OriginKind, Presence, Role,
    Sender, Status,
};
use switchboard::core::{Command, Reply};
use switchboard::demo::{
    AGENT_LOGIN, Demo, DemoClock, DemoOptions, FLAKY_AGENT, SUPERVISOR_LOGIN, TrunkCounts,
};
use switchboard::driver::Handle;
use switchboard::store::{SearchQuery, Store};
use tokio::sync::oneshot;

/// 2026-11-23T10:00:00Z.
const START_WALL: i64 = 1_795_428_000_000;

fn options(seed: u64) -> DemoOptions {
    DemoOptions {
        http: Some("127.0.0.1:0".parse().expect("addr")),
        sip: Some("127.0.0.1:0".parse().expect("addr")),
        seed: Some(seed),
        clock: DemoClock::Manual {
            start_wall: START_WALL,
        },
    }
}

/// A demo running in the background; `stop` is its Ctrl-C.
struct Running {
    handle: Handle,
    store: std::sync::Arc<Store>,
    dir: PathBuf,
    trunk: std::sync::Arc<TrunkCounts>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), switchboard::demo::DemoError>>,
}

async fn start(seed: u64) -> Running {
    let demo = Demo::build(options(seed)).await.expect("demo builds");
    let handle = demo.handle();
    let store = demo.state().store.clone();
    let dir = demo.data_dir().to_path_buf();
    let trunk = demo.trunk_counts();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(demo.run(async move {
        let _ = rx.await;
    }));
    Running {
        handle,
        store,
        dir,
        trunk,
        stop: Some(tx),
        task,
    }
}

impl Running {
    fn elapsed_ms(&self, since: u64) -> u64 {
        self.handle.now().mono - since
    }

    fn all(&self) -> Vec<Conversation> {
        self.store
            .search(&SearchQuery {
                limit: SearchQuery::MAX_LIMIT,
                ..SearchQuery::default()
            })
            .expect("search")
    }

    /// Waits (on simulated time, one second at a time) until `done` holds, at most `limit`.
    async fn wait_until(&self, limit: Duration, mut done: impl FnMut(&[Conversation]) -> bool) {
        let start = self.handle.now().mono;
        loop {
            if done(&self.all()) {
                return;
            }
            assert!(
                self.elapsed_ms(start) < limit.as_millis() as u64,
                "not within {limit:?} of simulated time"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task
            .await
            .expect("demo task")
            .expect("demo stops cleanly");
        assert!(
            !self.dir.exists(),
            "the temporary data directory is removed"
        );
    }
}

fn media(all: &[Conversation]) -> BTreeSet<&'static str> {
    all.iter().map(|c| c.medium.as_str()).collect()
}

fn session_lost_requeue(
    store: &Store,
    all: &[Conversation],
) -> Option<(Conversation, Conversation)> {
    all.iter()
        .filter(|c| c.origin.kind == OriginKind::Requeue)
        .find_map(|c| {
            let (prev, _) = store.conversation(c.origin.previous?).ok()??;
            (prev.disconnect_reason == Some(DisconnectReason::AgentSessionLost))
                .then(|| (prev, c.clone()))
        })
}

#[tokio::test(start_paused = true)]
async fn demo_shows_every_medium_and_a_session_lost_requeue_within_a_simulated_minute() {
    let demo = start(7).await;
    let started = demo.handle.now().mono;

    demo.wait_until(Duration::from_secs(60), |all| {
        media(all).len() == 5 && session_lost_requeue(&demo.store, all).is_some()
    })
    .await;
    let all = demo.all();
    assert_eq!(
        media(&all),
        BTreeSet::from(["email", "sms", "social", "voice", "webchat"])
    );

    // The flaky agent's chat, closed at the grace deadline and queued again as a new
    // conversation of the same group, keeping its place (arrival time) in the queue.
    let (original, requeued) = session_lost_requeue(&demo.store, &all).expect("requeue");
    assert_eq!(original.agent.as_deref(), Some(FLAKY_AGENT));
    assert_eq!(original.status, Status::Handled);
    assert_eq!(original.disconnect_party, Some(DisconnectParty::Agent));
    assert!(matches!(
        original.medium,
        Medium::Webchat | Medium::Sms | Medium::Social
    ));
    assert_eq!(requeued.group_id, original.group_id);
    assert_eq!(requeued.queue, original.queue);
    assert_eq!(requeued.medium, original.medium);
    assert_eq!(requeued.thread, original.thread);
    assert_eq!(requeued.queue_arrival_time, original.queue_arrival_time);
    assert!(requeued.created_at > original.created_at);
    // The queue's session-lost prompt went to the customer.
    let thread = original.thread.expect("chat thread");
    let transcript = demo.store.messages(thread).expect("messages");
    assert!(
        transcript
            .iter()
            .any(|m| m.from == Sender::System && m.text.contains("disconnected")),
        "session_lost_prompt in the transcript: {transcript:?}"
    );

    // The same loss dropped the call it held.
    let dropped: Vec<&Conversation> = all
        .iter()
        .filter(|c| c.disconnect_reason == Some(DisconnectReason::AgentConnectionLost))
        .collect();
    assert!(
        dropped
            .iter()
            .any(|c| c.medium == Medium::Voice && c.agent.as_deref() == Some(FLAKY_AGENT)),
        "the flaky agent's call dropped with AgentConnectionLost"
    );
    assert!(
        demo.elapsed_ms(started) <= 60_000,
        "within a simulated minute"
    );

    // The simulated phones registered over real UDP with digest authentication.
    let token = [9u8; 32];
    demo.handle
        .call(Command::Login {
            user: SUPERVISOR_LOGIN.into(),
            role: Role::Supervisor,
            token,
        })
        .await
        .expect("supervisor session");
    let Ok(Reply::Agents(agents)) = demo.handle.call(Command::Agents { token }).await else {
        panic!("agents view");
    };
    let registered: Vec<&str> = agents
        .iter()
        .filter(|a| a.sip.registered)
        .map(|a| a.agent_id.as_str())
        .collect();
    for steady in ["maria", "james", "priya", "chen", "olivia"] {
        assert!(
            registered.contains(&steady),
            "{steady} registered: {registered:?}"
        );
    }
    assert!(
        !registered.contains(&AGENT_LOGIN),
        "the human agent has no phone until they register one"
    );

    demo.stop().await;
}

#[tokio::test(start_paused = true)]
async fn flaky_agent_later_resumes_within_grace_and_loses_its_phone_registration_for_a_while() {
    let demo = start(11).await;
    // The second connection loss is a short one: the agent comes back within the grace
    // period (the held conversations record `agent_reconnected`). Its phone also lapses.
    demo.wait_until(Duration::from_secs(420), |all| {
        all.iter().any(|c| {
            demo.store
                .conversation(c.id)
                .ok()
                .flatten()
                .is_some_and(|(_, events)| {
                    events.iter().any(|e| {
                        e.event == EventKind::AgentReconnected
                            && e.agent.as_deref() == Some(FLAKY_AGENT)
                    })
                })
        })
    })
    .await;
    let lapses = demo
        .handle
        .inspect(|core| core.counters().sip_registrations_lost)
        .await
        .expect("counters");
    assert!(
        lapses >= 1,
        "the flaky phone's registration lapsed at least once"
    );
    demo.stop().await;
}

#[tokio::test]
async fn banner_gives_the_url_the_logins_and_the_customer_chat() {
    let demo = Demo::build(options(1)).await.expect("demo builds");
    let addr = demo.http_addr().expect("addr");
    let dir = demo.data_dir().to_path_buf();
    let banner = demo.banner();
    assert!(banner.contains(&format!("http://{addr}/")), "{banner}");
    assert!(
        banner.contains(&format!("http://{addr}/chat?queue=support")),
        "{banner}"
    );
    assert!(banner.contains("agent / agent"), "{banner}");
    assert!(banner.contains("supervisor / supervisor"), "{banner}");
    assert!(banner.contains("AgentSessionLost"), "{banner}");
    let sip = demo.sip_addr().expect("sip");
    assert!(banner.contains(&format!("sip:phones@{sip}")), "{banner}");
    assert!(banner.contains("BYE"), "{banner}");
    assert!(dir.is_dir());
    drop(demo);
    assert!(!dir.exists(), "a demo that never ran leaves nothing behind");
}

/// The human agent signs in at `token`, attaches a panel and goes ready.
async fn human_goes_ready(demo: &Running, token: [u8; 32]) -> switchboard::driver::FrameRx {
    demo.handle
        .call(Command::Login {
            user: AGENT_LOGIN.into(),
            role: Role::Agent,
            token,
        })
        .await
        .expect("agent session");
    let (_, _, rx) = demo.handle.attach_panel(token).await.expect("panel");
    demo.handle
        .call(Command::SetPresence {
            token,
            presence: Presence::Ready,
        })
        .await
        .expect("ready");
    rx
}

#[tokio::test(start_paused = true)]
async fn the_human_agent_is_offered_work_within_seconds_of_going_ready() {
    let demo = start(3).await;
    // A busy minute first: the simulated agents have their hands full.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let token = [7u8; 32];
    let _panel = human_goes_ready(&demo, token).await;
    let ready_at = demo.handle.now().mono;
    loop {
        let offered = demo
            .handle
            .inspect(|core| {
                core.conversations()
                    .any(|c| c.agent.as_deref() == Some(AGENT_LOGIN))
            })
            .await
            .expect("core");
        if offered {
            break;
        }
        assert!(
            demo.elapsed_ms(ready_at) <= 12_000,
            "nothing offered to the human agent within 12 s of going ready"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    demo.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_customer_from_the_browser_waits_in_line_then_gets_answers_about_their_question() {
    let demo = start(4).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let token = [8u8; 32];
    let Ok(Reply::ChatStarted {
        conversation_id, ..
    }) = demo
        .handle
        .call(Command::StartChat {
            queue: "support".into(),
            name: "Visitor".into(),
            text: Some("Hello, my parcel still hasn't arrived".into()),
            token,
        })
        .await
    else {
        panic!("chat started");
    };
    let (_, snapshot, mut rx) = demo.handle.attach_chat(token).await.expect("chat socket");
    assert_eq!(
        snapshot.status,
        Status::InQueue,
        "the browser customer waits in line behind the simulated ones"
    );
    assert!(snapshot.position.is_some_and(|p| p >= 1), "{snapshot:?}");
    // Served in the end, with an answer about the parcel, not about something else.
    let mut answers: Vec<String> = Vec::new();
    let deadline = demo.handle.now().mono + 300_000;
    while demo.handle.now().mono < deadline {
        let frame = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        if let Ok(Some(switchboard::driver::Outgoing::Text(t))) = frame {
            let v: serde_json::Value = serde_json::from_str(&t).unwrap();
            if v.pointer("/message/from").and_then(|f| f.as_str()) == Some("agent") {
                answers.push(v.pointer("/message/text").unwrap().as_str().unwrap().into());
                if answers.len() >= 2 {
                    break;
                }
            }
        }
    }
    assert!(answers.len() >= 2, "greeting and an answer: {answers:?}");
    assert!(answers[0].contains("Visitor"), "{answers:?}");
    assert!(
        answers[1].contains("tracking"),
        "the answer is about the parcel: {answers:?}"
    );
    // Still open while the customer keeps writing.
    for line in ["It was due on Monday.", "Is there anything you can do?"] {
        demo.handle
            .call(Command::CustomerMessage {
                token,
                text: line.into(),
            })
            .await
            .expect("customer message");
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    let open = demo
        .handle
        .inspect(move |core| {
            core.conversations()
                .any(|c| c.customer.name == "Visitor" && !c.status.is_closed())
        })
        .await
        .expect("core");
    assert!(
        open,
        "the agent does not end a chat while the customer is writing"
    );
    let _ = conversation_id;
    demo.stop().await;
}

/// The conversation's events.
fn events(store: &Store, c: &Conversation) -> Vec<switchboard::core::model::Event> {
    store
        .conversation(c.id)
        .ok()
        .flatten()
        .map(|(_, e)| e)
        .unwrap_or_default()
}

fn has_event(store: &Store, c: &Conversation, kind: EventKind, detail: &str) -> bool {
    events(store, c)
        .iter()
        .any(|e| e.event == kind && e.detail.as_deref() == Some(detail))
}

#[tokio::test(start_paused = true)]
async fn trunk_calls_ring_the_simulated_phones_which_answer_and_hang_up_with_bye() {
    let demo = start(7).await;
    // A call from the simulated trunk, answered on a simulated agent's phone: in process.
    let mut talking = None;
    let started = demo.handle.now().mono;
    while talking.is_none() {
        assert!(
            demo.elapsed_ms(started) < 60_000,
            "no call answered on a phone"
        );
        talking = demo
            .handle
            .inspect(|core| {
                core.conversations()
                    .find(|c| {
                        c.medium == Medium::Voice
                            && c.status == Status::InProcess
                            && c.agent.as_deref().is_some_and(|a| a != AGENT_LOGIN)
                    })
                    .map(|c| c.id)
            })
            .await
            .expect("core");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let id = talking.expect("a call");
    // It came in over SIP: answered on the phone, not accepted on the panel.
    demo.wait_until(Duration::from_secs(5), |all| {
        all.iter().any(|c| {
            c.id == id && has_event(&demo.store, c, EventKind::Accepted, "answered on the phone")
        })
    })
    .await;

    // Sooner or later calls end with a BYE: the customer's (the trunk hangs up) or the
    // agent's (the phone hangs up).
    demo.wait_until(Duration::from_secs(300), |all| {
        let ended = |reason: DisconnectReason| {
            all.iter().any(|c| {
                c.medium == Medium::Voice
                    && c.disconnect_reason == Some(reason)
                    && has_event(&demo.store, c, EventKind::Accepted, "answered on the phone")
            })
        };
        ended(DisconnectReason::CustomerEnded) && ended(DisconnectReason::AgentEnded)
    })
    .await;
    let hung_up_by_phone = demo.all().into_iter().any(|c| {
        c.disconnect_reason == Some(DisconnectReason::AgentEnded)
            && has_event(&demo.store, &c, EventKind::Ended, "hung up the phone")
    });
    assert!(hung_up_by_phone, "a simulated agent hung up on the phone");
    let t = &demo.trunk;
    assert!(TrunkCounts::get(&t.placed) >= 2);
    assert!(TrunkCounts::get(&t.answered) >= 2);
    assert!(TrunkCounts::get(&t.customer_hung_up) >= 1);
    assert!(TrunkCounts::get(&t.hung_up_by_center) >= 1);
    demo.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_call_dropped_with_the_agents_connection_is_called_back_through_the_trunk() {
    let demo = start(11).await;
    // The flaky agent's first connection loss, about ten seconds in, drops the call he
    // answered a few seconds before: switchboard hangs up the caller with a BYE. Nothing
    // else hangs up a call that early (agents talk at least 35 s, callers 30 s).
    demo.wait_until(Duration::from_secs(30), |all| {
        all.iter().any(|c| {
            c.medium == Medium::Voice
                && c.disconnect_reason == Some(DisconnectReason::AgentConnectionLost)
        })
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        TrunkCounts::get(&demo.trunk.hung_up_by_center),
        1,
        "the drop's BYE reached the caller"
    );
    assert_eq!(TrunkCounts::get(&demo.trunk.customer_hung_up), 0);
    // Later, back within the grace period after another drop, he calls the customer back:
    // his phone first, then the customer through the outbound proxy — the simulated trunk
    // answers.
    demo.wait_until(Duration::from_secs(900), |all| {
        all.iter().any(|c| {
            c.origin.kind == OriginKind::Callback
                && has_event(&demo.store, c, EventKind::Accepted, "the customer answered")
        })
    })
    .await;
    let all = demo.all();
    let callback = all
        .iter()
        .find(|c| {
            c.origin.kind == OriginKind::Callback
                && has_event(&demo.store, c, EventKind::Accepted, "the customer answered")
        })
        .expect("callback");
    assert_eq!(callback.agent.as_deref(), Some(FLAKY_AGENT));
    assert_eq!(callback.medium, Medium::Voice);
    let dropped = all
        .iter()
        .find(|c| Some(c.id) == callback.origin.previous)
        .expect("the dropped call");
    assert_eq!(
        dropped.disconnect_reason,
        Some(DisconnectReason::AgentConnectionLost)
    );
    assert_eq!(dropped.customer.address, callback.customer.address);
    assert!(TrunkCounts::get(&demo.trunk.callbacks_answered) >= 1);
    assert!(TrunkCounts::get(&demo.trunk.callbacks_connected) >= 1);
    demo.stop().await;
}
