//! Behaviour tests of the core on a simulated clock: one test per rule of docs/sessions.md,
//! docs/policy.md, docs/routing.md and docs/sip.md.

use super::model::*;
use super::view::{ChatEvent, PanelEvent};
use super::*;
use crate::policy::{
    AgentPolicy, Capacity, Channel, Policy, QueueConfig, RequeuePosition, SupervisorPolicy,
};
use std::time::Duration;

const START: i64 = 1_795_000_000_000;
const GRACE: u64 = 60_000;

fn queue(id: &str, channel: Channel) -> QueueConfig {
    QueueConfig {
        id: id.into(),
        name: id.to_uppercase(),
        channel,
        offer_timeout: None,
        not_ready_after_no_response: false,
        session_lost_prompt: None,
        reconnecting_prompt: None,
        requeue_position: RequeuePosition::Original,
        sticky_agent: std::time::Duration::ZERO,
    }
}

fn agent(id: &str, queues: &[&str]) -> AgentPolicy {
    AgentPolicy {
        id: id.into(),
        name: format!("Agent {id}"),
        queues: queues.iter().map(|q| q.to_string()).collect(),
        capacity: Capacity::default(),
    }
}

fn config() -> Policy {
    let mut cfg = Policy::default();
    let mut support = queue("support", Channel::Chat);
    support.session_lost_prompt =
        Some("Sorry, your agent was disconnected. You keep your place.".into());
    support.reconnecting_prompt = Some("Your agent is reconnecting…".into());
    cfg.queues = vec![
        support,
        queue("front", Channel::Chat),
        queue("back", Channel::Chat),
        queue("phones", Channel::Voice),
        queue("mail", Channel::Email),
    ];
    cfg.queues[1].requeue_position = RequeuePosition::Front;
    cfg.queues[2].requeue_position = RequeuePosition::Back;
    cfg.agents = vec![
        agent("alice", &["support", "front", "back", "phones", "mail"]),
        agent("bob", &["support", "front", "back", "phones", "mail"]),
        agent("carol", &["support"]),
    ];
    cfg.supervisors = vec![SupervisorPolicy {
        id: "sam".into(),
        name: "Sam".into(),
    }];
    cfg
}

/// The core plus a model of the disk built from its writes.
struct Sim {
    core: Core,
    now: Now,
    disk_convs: HashMap<Uuid, Conversation>,
    disk_events: HashMap<Uuid, Vec<Event>>,
    disk_sessions: HashMap<Uuid, Session>,
    disk_drafts: HashMap<(Uuid, Uuid), Metadata>,
    disk_agents: HashMap<String, AgentRecord>,
    disk_threads: HashMap<Uuid, Thread>,
    disk_messages: HashMap<Uuid, BTreeMap<u32, Message>>,
    disk_dialogs: HashMap<Uuid, Dialog>,
    effects: Vec<Effect>,
    next_token: u8,
}

impl Sim {
    fn new() -> Sim {
        Sim::with(config())
    }

    fn with(cfg: Policy) -> Sim {
        let now = Now {
            mono: 1_000,
            wall: START,
        };
        let core = Core::new(Arc::new(cfg), 7, now);
        let mut sim = Sim {
            core,
            now,
            disk_convs: HashMap::new(),
            disk_events: HashMap::new(),
            disk_sessions: HashMap::new(),
            disk_drafts: HashMap::new(),
            disk_agents: HashMap::new(),
            disk_threads: HashMap::new(),
            disk_messages: HashMap::new(),
            disk_dialogs: HashMap::new(),
            effects: Vec::new(),
            next_token: 0,
        };
        sim.flush();
        sim
    }

    fn flush(&mut self) {
        for w in self.core.take_writes() {
            match w {
                Write::Conversation(c) => {
                    self.disk_convs.insert(c.id, *c);
                }
                Write::Event {
                    conversation,
                    seq,
                    event,
                } => {
                    let v = self.disk_events.entry(conversation).or_default();
                    assert_eq!(v.len() as u32, seq, "events are appended in order");
                    v.push(event);
                }
                Write::Thread(t) => {
                    self.disk_threads.insert(t.id, *t);
                }
                Write::Message {
                    thread,
                    seq,
                    message,
                } => {
                    self.disk_messages
                        .entry(thread)
                        .or_default()
                        .insert(seq, message);
                }
                Write::Session(s) => {
                    self.disk_sessions.insert(s.id, *s);
                }
                Write::SessionEnded { id, .. } => {
                    self.disk_sessions.remove(&id);
                    self.disk_drafts.retain(|(s, _), _| *s != id);
                }
                Write::Draft {
                    session,
                    conversation,
                    draft,
                } => match draft {
                    Some(d) => {
                        self.disk_drafts.insert((session, conversation), d);
                    }
                    None => {
                        self.disk_drafts.remove(&(session, conversation));
                    }
                },
                Write::DraftsCleared { session } => {
                    self.disk_drafts.retain(|(s, _), _| *s != session)
                }
                Write::Agent(a) => {
                    self.disk_agents.insert(a.id.clone(), *a);
                }
                Write::Dialog(d) => {
                    self.disk_dialogs.insert(d.conversation, *d);
                }
                Write::DialogEnded { conversation } => {
                    self.disk_dialogs.remove(&conversation);
                }
                Write::Outbox(_) | Write::OutboxDone { .. } => {}
            }
        }
        while let Some(e) = self.core.poll_effect() {
            self.effects.push(e);
        }
    }

    fn cmd(&mut self, c: Command) -> Result<Reply, Rejection> {
        let r = self.core.handle(self.now, c);
        self.flush();
        r
    }

    fn ok(&mut self, c: Command) -> Reply {
        match self.cmd(c.clone()) {
            Ok(r) => r,
            Err(e) => panic!("{c:?} was refused: {e:?}"),
        }
    }

    fn advance(&mut self, ms: u64) {
        self.now = self.now.plus_ms(ms);
        self.core.handle_timeout(self.now);
        self.flush();
    }

    fn token(&mut self) -> TokenHash {
        self.next_token += 1;
        [self.next_token; 32]
    }

    fn login(&mut self, user: &str) -> TokenHash {
        let t = self.token();
        self.ok(Command::Login {
            user: user.into(),
            role: Role::Agent,
            token: t,
        });
        t
    }

    /// Login + panel socket attached.
    fn online(&mut self, user: &str) -> (TokenHash, u64) {
        let t = self.login(user);
        let s = self.attach(t);
        (t, s)
    }

    fn attach(&mut self, token: TokenHash) -> u64 {
        let socket = 1000 + u64::from(self.next_token) * 10 + self.effects.len() as u64;
        self.ok(Command::AttachPanel { token, socket });
        socket
    }

    /// The panel closes politely (a reload, a closed tab).
    fn detach(&mut self, socket: u64) {
        self.ok(Command::DetachPanel {
            socket,
            cause: LossCause::Closed,
        });
    }

    /// The panel's connection dies without a close frame (network drop).
    fn drop_link(&mut self, socket: u64) {
        self.ok(Command::DetachPanel {
            socket,
            cause: LossCause::Dropped,
        });
    }

    fn supervisor(&mut self) -> TokenHash {
        let t = self.token();
        self.ok(Command::Login {
            user: "sam".into(),
            role: Role::Supervisor,
            token: t,
        });
        t
    }

    fn conv(&self, id: Uuid) -> Conversation {
        self.core
            .conversation(&id)
            .cloned()
            .or_else(|| self.disk_convs.get(&id).cloned())
            .expect("known conversation")
    }

    fn events(&self, id: Uuid) -> Vec<EventKind> {
        self.disk_events
            .get(&id)
            .map(|v| v.iter().map(|e| e.event).collect())
            .unwrap_or_default()
    }

    fn group(&self, group: Uuid) -> Vec<Conversation> {
        let mut v: Vec<Conversation> = self
            .disk_convs
            .values()
            .filter(|c| c.group_id == group)
            .cloned()
            .collect();
        v.sort_by_key(|c| (c.created_at, c.id));
        v
    }

    fn chat(&mut self, queue: &str, name: &str) -> (Uuid, TokenHash) {
        let t = self.token();
        match self.ok(Command::StartChat {
            queue: queue.into(),
            name: name.into(),
            text: Some("hello".into()),
            token: t,
        }) {
            Reply::ChatStarted {
                conversation_id, ..
            } => (conversation_id, t),
            r => panic!("unexpected {r:?}"),
        }
    }

    fn call(&mut self, from: &str) -> Uuid {
        match self.ok(Command::InboundCall {
            from: from.into(),
            queue: "phones".into(),
        }) {
            Reply::Conversation(c) => c.id,
            r => panic!("unexpected {r:?}"),
        }
    }

    fn email(&mut self, from: &str) -> Uuid {
        match self.ok(Command::InboundEmail {
            from: from.into(),
            subject: "Invoice".into(),
            text: "Hi".into(),
            queue: "mail".into(),
        }) {
            Reply::Conversation(c) => c.id,
            r => panic!("unexpected {r:?}"),
        }
    }

    fn register_phone(&mut self, agent: &str, secs: u32) {
        self.ok(Command::SipRegister {
            agent: agent.into(),
            update: BindingUpdate::Set(vec![(format!("sip:{agent}@10.0.0.5:5060"), secs)]),
        });
    }

    fn accept(&mut self, token: TokenHash, id: Uuid) {
        self.ok(Command::Accept {
            token,
            conversation: id,
        });
    }

    fn waiting(&self, queue: &str) -> Vec<Uuid> {
        self.core
            .org
            .queues
            .get(queue)
            .map(|q| q.waiting.iter().map(|(_, id)| *id).collect())
            .unwrap_or_default()
    }

    fn chat_frames(&self, token_thread: Uuid) -> Vec<ChatEvent> {
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Chat { thread, event } if *thread == token_thread => Some(event.clone()),
                _ => None,
            })
            .collect()
    }

    fn panel_frames(&self, who: &str) -> Vec<PanelEvent> {
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Panel { agent, event } if agent == who => Some(event.clone()),
                _ => None,
            })
            .collect()
    }

    fn snapshot(&mut self, token: TokenHash) -> view::AgentSnapshot {
        match self.ok(Command::AgentState { token }) {
            Reply::Snapshot(s) => *s,
            r => panic!("unexpected {r:?}"),
        }
    }

    /// What the store would hand back at boot.
    fn restored(&self) -> Restored {
        let open: Vec<Conversation> = self
            .disk_convs
            .values()
            .filter(|c| !c.status.is_closed())
            .cloned()
            .collect();
        let threads = self
            .disk_threads
            .values()
            .filter(|t| t.open || open.iter().any(|c| c.id == t.current))
            .map(|t| {
                (
                    t.clone(),
                    self.disk_messages
                        .get(&t.id)
                        .map(|m| m.values().cloned().collect())
                        .unwrap_or_default(),
                )
            })
            .collect();
        Restored {
            events: open
                .iter()
                .map(|c| {
                    (
                        c.id,
                        self.disk_events.get(&c.id).cloned().unwrap_or_default(),
                    )
                })
                .collect(),
            conversations: open,
            threads,
            sessions: self.disk_sessions.values().cloned().collect(),
            drafts: self
                .disk_drafts
                .iter()
                .map(|((s, c), d)| (*s, *c, d.clone()))
                .collect(),
            agents: self.disk_agents.values().cloned().collect(),
            outbox: Vec::new(),
            dialogs: self.disk_dialogs.values().cloned().collect(),
        }
    }

    /// A new core booted from the disk model with the wall clock stepped by `wall_step_ms`
    /// (negative: behind) and the monotonic clock at a new epoch one second on.
    fn restart_with_wall_step(&mut self, wall_step_ms: i64) {
        let restored = self.restored();
        self.now = Now {
            mono: self.now.mono + 1_000,
            wall: self.now.wall + wall_step_ms,
        };
        self.core = Core::new(self.core.policy().clone(), 8, self.now);
        self.core.restore(restored, self.now);
        self.flush();
    }

    /// A new core booted at `now + gap` from the disk model.
    fn restart(&mut self, gap_ms: u64) {
        let restored = self.restored();
        self.now = Now {
            mono: self.now.mono + gap_ms,
            wall: self.now.wall + gap_ms as i64,
        };
        self.core = Core::new(self.core.policy().clone(), 8, self.now);
        self.core.restore(restored, self.now);
        self.flush();
    }
}

fn draft(memo: &str) -> Metadata {
    Metadata {
        script: [("reason".to_string(), "billing".to_string())].into(),
        memo: memo.into(),
    }
}

#[test]
fn chat_requeued_after_grace_keeps_arrival_time_group_and_thread() {
    let mut sim = Sim::new();
    let (a, sock) = sim.online("alice");
    let (chat, _) = sim.chat("support", "Dana");
    let original = sim.conv(chat);
    assert_eq!(original.status, Status::Offered);
    sim.accept(a, chat);
    sim.advance(5_000);
    sim.detach(sock);
    sim.advance(GRACE - 1);
    assert_eq!(sim.conv(chat).status, Status::InProcess, "never early");
    sim.advance(1);
    let old = sim.conv(chat);
    assert_eq!(old.status, Status::Handled);
    assert_eq!(old.disconnect_party, Some(DisconnectParty::Agent));
    assert_eq!(
        old.disconnect_reason,
        Some(DisconnectReason::AgentSessionLost)
    );
    let deadline = Timestamp(START + 5_000 + GRACE as i64);
    assert_eq!(old.ended_at, Some(deadline));
    let group = sim.group(original.group_id);
    assert_eq!(group.len(), 2);
    let new = &group[1];
    assert_eq!(
        new.origin,
        Origin {
            kind: OriginKind::Requeue,
            previous: Some(chat)
        }
    );
    assert_eq!(new.status, Status::InQueue);
    assert_eq!(new.queue, "support");
    assert_eq!(new.queue_arrival_time, original.queue_arrival_time);
    assert_eq!(new.thread, original.thread);
    assert_eq!(new.customer, original.customer);
    assert_eq!(new.medium, Medium::Webchat);
    assert_eq!(sim.waiting("support"), vec![new.id]);
    assert!(sim.events(chat).contains(&EventKind::SessionLost));
    assert!(sim.events(new.id).contains(&EventKind::Requeued));
}

#[test]
fn requeued_chat_is_served_before_later_arrivals_and_customer_gets_the_prompt() {
    let mut sim = Sim::new();
    let (a, sock) = sim.online("alice");
    let (chat, ct) = sim.chat("support", "Dana");
    sim.accept(a, chat);
    sim.ok(Command::SetPresence {
        token: a,
        presence: Presence::NotReady,
    });
    sim.advance(1_000);
    let (later, _) = sim.chat("support", "Eve");
    sim.detach(sock);
    sim.advance(GRACE);
    let thread = sim.conv(chat).thread.expect("chat thread");
    let waiting = sim.waiting("support");
    assert_eq!(waiting.len(), 2);
    assert_ne!(
        waiting[0], later,
        "the requeued chat keeps its place ahead of later arrivals"
    );
    let prompts: Vec<String> = sim
        .chat_frames(thread)
        .into_iter()
        .filter_map(|e| match e {
            ChatEvent::Message { message } if message.from == Sender::System => Some(message.text),
            _ => None,
        })
        .collect();
    assert_eq!(
        prompts.len(),
        2,
        "reconnecting prompt at loss, session-lost prompt at the deadline"
    );
    assert!(prompts[1].starts_with("Sorry"));
    // The customer keeps the same token, and their next message reaches the next agent.
    let (b, _) = sim.online("bob");
    let requeued = waiting[0];
    assert_eq!(sim.conv(requeued).status, Status::Offered);
    sim.accept(b, requeued);
    sim.ok(Command::CustomerMessage {
        token: ct,
        text: "still there?".into(),
    });
    let got = sim.panel_frames("bob").into_iter().any(
        |e| matches!(e, PanelEvent::Message { conversation_id, .. } if conversation_id == requeued),
    );
    assert!(got);
}

#[test]
fn voice_call_dropped_at_connection_loss_blames_the_agent() {
    let mut sim = Sim::new();
    let (a, sock) = sim.online("alice");
    sim.register_phone("alice", 30);
    let call = sim.call("+15550100");
    sim.accept(a, call);
    sim.detach(sock);
    let c = sim.conv(call);
    assert_eq!(c.status, Status::WrapUp);
    assert_eq!(c.disconnect_party, Some(DisconnectParty::Agent));
    assert_eq!(
        c.disconnect_reason,
        Some(DisconnectReason::AgentConnectionLost)
    );
    assert_eq!(c.ended_at, Some(sim.now.ts()));
    assert!(sim.events(call).contains(&EventKind::AgentConnectionLost));
}

#[test]
fn agent_resuming_within_grace_finishes_wrap_up_and_calls_back() {
    let mut sim = Sim::new();
    let (a, sock) = sim.online("alice");
    sim.register_phone("alice", 30);
    let call = sim.call("+15550100");
    sim.accept(a, call);
    sim.ok(Command::SaveDraft {
        token: a,
        conversation: call,
        draft: draft("angry"),
    });
    sim.detach(sock);
    sim.advance(20_000);
    sim.register_phone("alice", 30);
    sim.attach(a);
    let snap = sim.snapshot(a);
    assert_eq!(snap.drafts.get(&call), Some(&draft("angry")));
    assert!(
        snap.conversations
            .iter()
            .any(|c| c.id == call && c.status == Status::WrapUp)
    );
    sim.ok(Command::SaveMetadata {
        token: a,
        conversation: call,
        metadata: draft("angry, called back"),
    });
    let cb = match sim.ok(Command::Callback {
        token: a,
        conversation: call,
    }) {
        Reply::Conversation(c) => *c,
        r => panic!("{r:?}"),
    };
    assert_eq!(
        cb.origin,
        Origin {
            kind: OriginKind::Callback,
            previous: Some(call)
        }
    );
    assert_eq!(cb.status, Status::InProcess);
    assert_eq!(cb.group_id, sim.conv(call).group_id);
    assert_eq!(cb.agent.as_deref(), Some("alice"));
    sim.ok(Command::Complete {
        token: a,
        conversation: call,
    });
    assert_eq!(sim.conv(call).status, Status::Handled);
    assert_eq!(sim.conv(call).metadata, draft("angry, called back"));
}

#[test]
fn chat_stays_with_agent_during_grace_and_messages_wait_for_the_resume() {
    let mut sim = Sim::new();
    let (a, sock) = sim.online("alice");
    let (chat, ct) = sim.chat("support", "Dana");
    sim.accept(a, chat);
    sim.ok(Command::SaveDraft {
        token: a,
        conversation: chat,
        draft: draft("vip"),
    });
    sim.detach(sock);
    sim.advance(10_000);
    sim.ok(Command::CustomerMessage {
        token: ct,
        text: "are you there?".into(),
    });
    assert_eq!(sim.conv(chat).status, Status::InProcess);
    assert_eq!(sim.conv(chat).agent.as_deref(), Some("alice"));
    sim.advance(40_000);
    sim.attach(a);
    let snap = sim.snapshot(a);
    let c = snap
        .conversations
        .iter()
        .find(|c| c.id == chat)
        .expect("still hers");
    let texts: Vec<&str> = c
        .messages
        .as_ref()
        .expect("transcript")
        .iter()
        .map(|m| m.text.as_str())
        .collect();
    assert!(texts.contains(&"are you there?"));
    assert!(texts.contains(&"Your agent is reconnecting…"));
    assert_eq!(snap.drafts.get(&chat), Some(&draft("vip")));
    assert!(sim.events(chat).contains(&EventKind::AgentReconnected));
    // The old deadline is gone: nothing happens when it passes.
    sim.advance(GRACE);
    assert_eq!(sim.conv(chat).status, Status::InProcess);
}

#[test]
fn email_stays_assigned_after_the_grace_period() {
    let mut sim = Sim::new();
    let (a, sock) = sim.online("alice");
    let mail = sim.email("customer@example.com");
    sim.accept(a, mail);
    sim.detach(sock);
    sim.advance(GRACE + 1);
    let c = sim.conv(mail);
    assert_eq!(c.status, Status::InProcess);
    assert_eq!(c.agent.as_deref(), Some("alice"));
    assert_eq!(c.disconnect_reason, None);
    // Visible at the next login.
    let a2 = sim.login("alice");
    let snap = sim.snapshot(a2);
    assert!(snap.conversations.iter().any(|c| c.id == mail));
}

#[test]
fn offers_are_withdrawn_at_connection_loss_keeping_arrival_time() {
    let mut sim = Sim::new();
    let (_, sock) = sim.online("alice");
    let (chat, _) = sim.chat("support", "Dana");
    let arrival = sim.conv(chat).queue_arrival_time;
    assert_eq!(sim.conv(chat).status, Status::Offered);
    sim.advance(3_000);
    sim.detach(sock);
    let c = sim.conv(chat);
    assert_eq!(c.status, Status::InQueue);
    assert_eq!(c.agent, None);
    assert_eq!(c.queue_arrival_time, arrival);
    assert!(sim.events(chat).contains(&EventKind::OfferWithdrawn));
}

#[test]
fn drafts_are_discarded_and_wrap_up_calls_completed_when_the_session_is_lost() {
    let mut sim = Sim::new();
    let (a, sock) = sim.online("alice");
    sim.register_phone("alice", 30);
    let call = sim.call("+15550100");
    sim.accept(a, call);
    sim.ok(Command::SaveDraft {
        token: a,
        conversation: call,
        draft: draft("x"),
    });
    sim.detach(sock);
    assert_eq!(
        sim.disk_drafts.len(),
        1,
        "drafts persist through the grace period"
    );
    sim.advance(GRACE);
    let c = sim.conv(call);
    assert_eq!(c.status, Status::Handled);
    assert_eq!(
        c.disconnect_reason,
        Some(DisconnectReason::AgentConnectionLost)
    );
    assert!(sim.events(call).contains(&EventKind::WrapUpCompleted));
    assert!(sim.disk_drafts.is_empty());
    assert!(sim.disk_sessions.is_empty());
    assert_eq!(
        sim.cmd(Command::AgentState { token: a }).err(),
        Some(Rejection::Unauthorized),
        "token revoked"
    );
}

#[test]
fn requeue_position_front_goes_ahead_of_everything_waiting() {
    let mut sim = Sim::new();
    let (a, sock) = sim.online("alice");
    sim.advance(1_000);
    let (chat, _) = sim.chat("front", "Dana");
    sim.accept(a, chat);
    sim.ok(Command::SetPresence {
        token: a,
        presence: Presence::NotReady,
    });
    sim.advance(1_000);
    let (_waiting1, _) = sim.chat("front", "Eve");
    let (_waiting2, _) = sim.chat("front", "Fay");
    sim.detach(sock);
    sim.advance(GRACE);
    let requeued = sim.group(sim.conv(chat).group_id)[1].clone();
    assert_eq!(sim.waiting("front")[0], requeued.id);
    assert_eq!(
        requeued.queue_arrival_time,
        sim.conv(chat).queue_arrival_time
    );
}

#[test]
fn requeue_position_back_takes_the_current_time() {
    let mut sim = Sim::new();
    let (a, sock) = sim.online("alice");
    let (chat, _) = sim.chat("back", "Dana");
    sim.accept(a, chat);
    sim.ok(Command::SetPresence {
        token: a,
        presence: Presence::NotReady,
    });
    sim.advance(1_000);
    let (waiting, _) = sim.chat("back", "Eve");
    sim.detach(sock);
    sim.advance(GRACE);
    let requeued = sim.group(sim.conv(chat).group_id)[1].clone();
    assert_eq!(requeued.queue_arrival_time, sim.now.ts());
    assert_eq!(sim.waiting("back"), vec![waiting, requeued.id]);
}

#[test]
fn allocation_offers_the_oldest_conversation_to_the_longest_idle_agent() {
    let mut sim = Sim::new();
    let (_, _) = sim.online("alice");
    sim.advance(1_000);
    let (_, _) = sim.online("bob");
    sim.advance(1_000);
    let (first, _) = sim.chat("support", "Dana");
    assert_eq!(
        sim.conv(first).agent.as_deref(),
        Some("alice"),
        "alice has been idle longer"
    );
    let (second, _) = sim.chat("support", "Eve");
    assert_eq!(sim.conv(second).agent.as_deref(), Some("bob"));
}

#[test]
fn across_queues_the_customer_waiting_longest_is_offered_first() {
    let mut cfg = config();
    for a in &mut cfg.agents {
        a.capacity.chat = 1;
    }
    let mut sim = Sim::with(cfg);
    // Nobody is online: a chat waits in `support`, then a newer one in `back` (a queue
    // whose id sorts first).
    let (older, _) = sim.chat("support", "Dana");
    sim.advance(1_000);
    let (newer, _) = sim.chat("back", "Eve");
    sim.advance(1_000);
    let (_, _) = sim.online("alice");
    assert_eq!(sim.conv(older).status, Status::Offered);
    assert_eq!(sim.conv(older).agent.as_deref(), Some("alice"));
    assert_eq!(
        sim.conv(newer).status,
        Status::InQueue,
        "alice has room for one chat"
    );
}

#[test]
fn no_offers_to_disconnected_not_ready_full_or_unregistered_agents() {
    let mut sim = Sim::new();
    // Logged in, no panel attached: not connected.
    let a = sim.login("alice");
    let (c1, _) = sim.chat("support", "Dana");
    assert_eq!(sim.conv(c1).status, Status::InQueue);
    // Connected but not ready.
    sim.attach(a);
    assert_eq!(sim.conv(c1).status, Status::Offered);
    sim.ok(Command::Reject {
        token: a,
        conversation: c1,
    });
    sim.ok(Command::SetPresence {
        token: a,
        presence: Presence::NotReady,
    });
    let (c2, _) = sim.chat("support", "Eve");
    assert_eq!(sim.conv(c2).status, Status::InQueue);
    // Ready, voice without a phone registration: no voice offer.
    sim.ok(Command::SetPresence {
        token: a,
        presence: Presence::Ready,
    });
    let call = sim.call("+1555");
    assert_eq!(sim.conv(call).status, Status::InQueue);
    sim.register_phone("alice", 30);
    assert_eq!(sim.conv(call).status, Status::Offered);
    // Capacity: chat capacity 3, offered counts.
    let more: Vec<Uuid> = (0..4)
        .map(|i| sim.chat("support", &format!("c{i}")).0)
        .collect();
    let offered = more
        .iter()
        .chain([c2].iter())
        .filter(|id| sim.conv(**id).status == Status::Offered)
        .count();
    assert_eq!(offered, 3);
}

#[test]
fn offer_timeout_returns_to_queue_with_arrival_kept_and_optional_not_ready() {
    let mut cfg = config();
    cfg.queues[0].offer_timeout = Some(Duration::from_secs(10));
    cfg.queues[0].not_ready_after_no_response = true;
    let mut sim = Sim::with(cfg);
    let (a, _) = sim.online("alice");
    let (chat, _) = sim.chat("support", "Dana");
    let arrival = sim.conv(chat).queue_arrival_time;
    sim.advance(9_999);
    assert_eq!(sim.conv(chat).status, Status::Offered);
    sim.advance(1);
    let c = sim.conv(chat);
    assert_eq!(c.status, Status::InQueue);
    assert_eq!(c.queue_arrival_time, arrival);
    assert!(sim.events(chat).contains(&EventKind::OfferTimeout));
    assert_eq!(sim.snapshot(a).presence, Presence::NotReady);
}

#[test]
fn logout_is_refused_with_open_voice_or_chat_but_not_email() {
    let mut sim = Sim::new();
    let (a, _) = sim.online("alice");
    let mail = sim.email("x@example.com");
    sim.accept(a, mail);
    let (chat, _) = sim.chat("support", "Dana");
    sim.accept(a, chat);
    let err = sim.cmd(Command::Logout { token: a }).err();
    assert!(matches!(
        err,
        Some(Rejection::Conflict {
            code: "conversations_open",
            ..
        })
    ));
    sim.ok(Command::End {
        token: a,
        conversation: chat,
    });
    assert!(
        matches!(
            sim.cmd(Command::Logout { token: a }).err(),
            Some(Rejection::Conflict {
                code: "conversations_open",
                ..
            })
        ),
        "wrap-up counts"
    );
    sim.ok(Command::Complete {
        token: a,
        conversation: chat,
    });
    sim.ok(Command::Logout { token: a });
    assert_eq!(
        sim.conv(mail).agent.as_deref(),
        Some("alice"),
        "email stays assigned"
    );
}

#[test]
fn second_login_takes_over_the_session_and_closes_old_sockets_with_4001() {
    let mut sim = Sim::new();
    let (a1, sock) = sim.online("alice");
    let sid = sim.snapshot(a1).session.id;
    let a2 = sim.login("alice");
    assert_eq!(
        sim.cmd(Command::AgentState { token: a1 }).err(),
        Some(Rejection::Unauthorized)
    );
    assert_eq!(sim.snapshot(a2).session.id, sid, "same session id");
    assert!(sim.effects.iter().any(
        |e| matches!(e, Effect::ClosePanels { sockets, code: 4001 } if sockets == &vec![sock])
    ));
    // The closed socket's late detach does not count as a loss of the new panel.
    sim.attach(a2);
    sim.detach(sock);
    assert_eq!(sim.snapshot(a2).session.state, SessionState::Connected);
}

#[test]
fn sip_registration_loss_drops_calls_raises_the_banner_and_re_registering_clears_it() {
    let mut sim = Sim::new();
    let (a, _) = sim.online("alice");
    sim.register_phone("alice", 30);
    assert!(sim.snapshot(a).capabilities.voice);
    let call = sim.call("+1555");
    sim.accept(a, call);
    sim.advance(29_999);
    assert_eq!(sim.conv(call).status, Status::InProcess);
    sim.advance(1);
    let snap = sim.snapshot(a);
    assert!(!snap.capabilities.voice);
    assert_eq!(snap.banners[0].code, "sip_registration_lost");
    let c = sim.conv(call);
    assert_eq!(c.status, Status::WrapUp);
    assert_eq!(
        c.disconnect_reason,
        Some(DisconnectReason::SipRegistrationLost)
    );
    assert_eq!(c.disconnect_party, Some(DisconnectParty::Agent));
    let frames = sim.panel_frames("alice");
    assert!(
        frames
            .iter()
            .any(|f| matches!(f, PanelEvent::Capabilities { capabilities } if !capabilities.voice))
    );
    assert!(
        frames
            .iter()
            .any(|f| matches!(f, PanelEvent::Banners { banners } if banners.len() == 1))
    );
    // No voice offers while unregistered.
    let call2 = sim.call("+1666");
    assert_eq!(sim.conv(call2).status, Status::InQueue);
    sim.register_phone("alice", 30);
    let snap = sim.snapshot(a);
    assert!(snap.capabilities.voice);
    assert!(snap.banners.is_empty());
}

#[test]
fn unregister_with_expires_zero_removes_the_binding_at_once() {
    let mut sim = Sim::new();
    let (a, _) = sim.online("alice");
    sim.register_phone("alice", 30);
    sim.ok(Command::SipRegister {
        agent: "alice".into(),
        update: BindingUpdate::RemoveAll,
    });
    assert!(!sim.snapshot(a).capabilities.voice);
    assert_eq!(sim.snapshot(a).banners.len(), 1);
}

#[test]
fn restart_gives_connected_sessions_a_full_grace_and_keeps_calls_up() {
    let mut sim = Sim::new();
    let (a, _) = sim.online("alice");
    sim.register_phone("alice", 30);
    let call = sim.call("+1555");
    sim.accept(a, call);
    let (chat, _) = sim.chat("support", "Dana");
    sim.accept(a, chat);
    sim.ok(Command::SaveDraft {
        token: a,
        conversation: chat,
        draft: draft("kept"),
    });
    sim.restart(5_000);
    assert_eq!(
        sim.conv(call).status,
        Status::InProcess,
        "a restart does not drop calls"
    );
    let snap = sim.snapshot(a);
    assert_eq!(snap.session.state, SessionState::Disconnected);
    assert_eq!(
        snap.drafts.get(&chat),
        Some(&draft("kept")),
        "drafts survive a restart"
    );
    let sid = snap.session.id;
    assert_eq!(
        sim.disk_sessions[&sid].deadline,
        Some(sim.now.ts().plus(Duration::from_millis(GRACE)))
    );
    // Resume with the old token after the restart.
    sim.advance(GRACE - 1);
    sim.register_phone("alice", 30);
    sim.attach(a);
    assert_eq!(sim.snapshot(a).session.state, SessionState::Connected);
    assert_eq!(sim.conv(chat).status, Status::InProcess);
}

#[test]
fn restart_after_the_deadline_passed_requeues_the_chat_once() {
    let mut sim = Sim::new();
    let (a, sock) = sim.online("alice");
    let (chat, _) = sim.chat("support", "Dana");
    sim.accept(a, chat);
    sim.detach(sock);
    sim.restart(GRACE + 30_000);
    sim.advance(0);
    let group = sim.group(sim.conv(chat).group_id);
    assert_eq!(group.len(), 2);
    assert_eq!(sim.conv(chat).status, Status::Handled);
    // Restart again: nothing happens twice.
    sim.restart(1_000);
    sim.advance(GRACE * 3);
    assert_eq!(sim.group(sim.conv(chat).group_id).len(), 2);
}

#[test]
fn wall_clock_step_never_fires_a_grace_period_early() {
    let mut sim = Sim::new();
    let (a, sock) = sim.online("alice");
    let (chat, _) = sim.chat("support", "Dana");
    sim.accept(a, chat);
    sim.detach(sock);
    sim.now = Now {
        mono: sim.now.mono + 1_000,
        wall: sim.now.wall + 3_600_000,
    };
    sim.core.handle_timeout(sim.now);
    sim.flush();
    assert_eq!(sim.conv(chat).status, Status::InProcess);
}

#[test]
fn transfer_to_a_queue_continues_the_work_in_a_new_conversation_of_the_group() {
    let mut sim = Sim::new();
    let (a, _) = sim.online("alice");
    let (chat, ct) = sim.chat("support", "Dana");
    sim.accept(a, chat);
    sim.ok(Command::SetPresence {
        token: a,
        presence: Presence::NotReady,
    });
    let new = match sim.ok(Command::Transfer {
        token: a,
        conversation: chat,
        target: Target::Queue("back".into()),
    }) {
        Reply::Conversation(c) => *c,
        r => panic!("{r:?}"),
    };
    let old = sim.conv(chat);
    assert_eq!(old.status, Status::WrapUp);
    assert_eq!(old.disconnect_reason, Some(DisconnectReason::Transferred));
    assert_eq!(new.origin.kind, OriginKind::Transfer);
    assert_eq!(new.group_id, old.group_id);
    assert_eq!(new.status, Status::InQueue);
    // The customer's token follows the thread.
    match sim.ok(Command::ChatState { token: ct }) {
        Reply::Chat(s) => {
            assert_eq!(s.conversation_id, new.id);
            assert_eq!(s.position, Some(1));
        }
        r => panic!("{r:?}"),
    }
}

#[test]
fn consultation_and_reassignment_stay_in_the_group() {
    let mut sim = Sim::new();
    let (a, _) = sim.online("alice");
    let (b, _) = sim.online("bob");
    let (chat, _) = sim.chat("support", "Dana");
    let holder = if sim.conv(chat).agent.as_deref() == Some("alice") {
        a
    } else {
        b
    };
    let other = if holder == a { "bob" } else { "alice" };
    sim.accept(holder, chat);
    let consult = match sim.ok(Command::Consult {
        token: holder,
        conversation: chat,
        agent: other.into(),
    }) {
        Reply::Conversation(c) => *c,
        r => panic!("{r:?}"),
    };
    assert_eq!(consult.origin.kind, OriginKind::Consultation);
    assert_eq!(consult.status, Status::Offered);
    assert_eq!(sim.conv(chat).status, Status::InProcess);
    let sup = sim.supervisor();
    let moved = match sim.ok(Command::Reassign {
        token: sup,
        conversation: chat,
        target: Target::Queue("support".into()),
    }) {
        Reply::Conversation(c) => *c,
        r => panic!("{r:?}"),
    };
    let old = sim.conv(chat);
    assert_eq!(old.status, Status::Handled);
    assert_eq!(old.disconnect_party, Some(DisconnectParty::System));
    assert_eq!(old.disconnect_reason, Some(DisconnectReason::Reassigned));
    assert_eq!(sim.group(old.group_id).len(), 3);
    assert_eq!(moved.group_id, old.group_id);
    assert_eq!(
        sim.cmd(Command::Reassign {
            token: a,
            conversation: moved.id,
            target: Target::Queue("support".into())
        })
        .err()
        .map(|e| matches!(e, Rejection::Forbidden(_))),
        Some(true)
    );
}

#[test]
fn customer_leaving_abandons_waiting_work_and_ends_work_in_process() {
    let mut sim = Sim::new();
    let (_, ct) = sim.chat("support", "Dana");
    let chat = match sim.ok(Command::ChatState { token: ct }) {
        Reply::Chat(s) => s.conversation_id,
        r => panic!("{r:?}"),
    };
    sim.ok(Command::CustomerEnd { token: ct });
    let c = sim.conv(chat);
    assert_eq!(c.status, Status::Abandoned);
    assert_eq!(
        c.disconnect_reason,
        Some(DisconnectReason::CustomerAbandoned)
    );
    assert_eq!(c.disconnect_party, Some(DisconnectParty::Customer));
    assert!(sim.waiting("support").is_empty());
    let (a, _) = sim.online("alice");
    sim.register_phone("alice", 30);
    let call = sim.call("+1555");
    sim.accept(a, call);
    sim.ok(Command::Hangup { conversation: call });
    let c = sim.conv(call);
    assert_eq!(c.status, Status::WrapUp);
    assert_eq!(c.disconnect_reason, Some(DisconnectReason::CustomerEnded));
}

#[test]
fn sms_messages_from_one_sender_share_an_open_thread() {
    let mut sim = Sim::new();
    let first = match sim.ok(Command::InboundMessage {
        medium: Medium::Sms,
        from: "+1555".into(),
        text: "hi".into(),
        queue: "support".into(),
    }) {
        Reply::Conversation(c) => c.id,
        r => panic!("{r:?}"),
    };
    let second = match sim.ok(Command::InboundMessage {
        medium: Medium::Sms,
        from: "+1555".into(),
        text: "hello?".into(),
        queue: "support".into(),
    }) {
        Reply::Conversation(c) => c.id,
        r => panic!("{r:?}"),
    };
    assert_eq!(first, second);
    let other = match sim.ok(Command::InboundMessage {
        medium: Medium::Social,
        from: "+1555".into(),
        text: "hey".into(),
        queue: "support".into(),
    }) {
        Reply::Conversation(c) => c.id,
        r => panic!("{r:?}"),
    };
    assert_ne!(first, other, "threads are per medium");
}

#[test]
fn manual_pick_respects_membership_and_capacity() {
    let mut sim = Sim::new();
    let (c, _) = sim.online("carol");
    sim.ok(Command::SetPresence {
        token: c,
        presence: Presence::NotReady,
    });
    let chats: Vec<Uuid> = (0..4)
        .map(|i| sim.chat("support", &format!("c{i}")).0)
        .collect();
    for id in &chats[..3] {
        sim.ok(Command::Pick {
            token: c,
            queue: "support".into(),
            conversation: *id,
        });
    }
    assert!(matches!(
        sim.cmd(Command::Pick {
            token: c,
            queue: "support".into(),
            conversation: chats[3]
        })
        .err(),
        Some(Rejection::Conflict {
            code: "capacity_reached",
            ..
        })
    ));
    let call = sim.call("+1");
    assert!(matches!(
        sim.cmd(Command::Pick {
            token: c,
            queue: "phones".into(),
            conversation: call
        })
        .err(),
        Some(Rejection::Forbidden(_))
    ));
    assert!(sim.events(chats[0]).contains(&EventKind::Picked));
}

#[test]
fn agents_cannot_touch_other_agents_conversations() {
    let mut sim = Sim::new();
    let (a, _) = sim.online("alice");
    let (b, _) = sim.online("bob");
    let (chat, _) = sim.chat("support", "Dana");
    let (holder, other) = if sim.conv(chat).agent.as_deref() == Some("alice") {
        (a, b)
    } else {
        (b, a)
    };
    assert!(matches!(
        sim.cmd(Command::Accept {
            token: other,
            conversation: chat
        })
        .err(),
        Some(Rejection::Conflict {
            code: "not_offered_to_you",
            ..
        })
    ));
    sim.accept(holder, chat);
    assert!(matches!(
        sim.cmd(Command::End {
            token: other,
            conversation: chat
        })
        .err(),
        Some(Rejection::Forbidden(_))
    ));
    assert!(matches!(
        sim.cmd(Command::AgentMessage {
            token: other,
            conversation: chat,
            text: "x".into()
        })
        .err(),
        Some(Rejection::Forbidden(_))
    ));
}

#[test]
fn supervisor_sessions_expire_after_twelve_hours() {
    let mut sim = Sim::new();
    let sup = sim.supervisor();
    assert!(sim.cmd(Command::Agents { token: sup }).is_ok());
    sim.advance(SUPERVISOR_SESSION.as_millis() as u64 - 1);
    assert!(sim.cmd(Command::Agents { token: sup }).is_ok());
    sim.advance(1);
    assert_eq!(
        sim.cmd(Command::Agents { token: sup }).err(),
        Some(Rejection::Unauthorized)
    );
    assert!(sim.disk_sessions.is_empty());
}

#[test]
fn sessions_of_agents_removed_from_the_configuration_end_at_boot() {
    let mut sim = Sim::new();
    let (_, _) = sim.online("carol");
    sim.supervisor();
    let mut cfg = config();
    cfg.agents.retain(|a| a.id != "carol");
    cfg.supervisors.clear();
    let restored = sim.restored();
    sim.core = Core::new(Arc::new(cfg), 9, sim.now);
    sim.core.restore(restored, sim.now);
    sim.flush();
    assert!(
        sim.disk_sessions.is_empty(),
        "both the agent's and the supervisor's sessions end"
    );
}

#[test]
fn messages_over_the_size_limit_are_refused_and_change_nothing() {
    let mut sim = Sim::new();
    let (_, ct) = sim.chat("support", "Dana");
    let max = sim.core.policy().limits.max_message_chars;
    let long = "x".repeat(max + 1);
    assert!(matches!(
        sim.cmd(Command::CustomerMessage {
            token: ct,
            text: long.clone()
        })
        .err(),
        Some(Rejection::TooLarge(_))
    ));
    assert!(matches!(
        sim.cmd(Command::InboundMessage {
            medium: Medium::Sms,
            from: "+1".into(),
            text: long,
            queue: "support".into()
        })
        .err(),
        Some(Rejection::TooLarge(_))
    ));
    assert_eq!(
        sim.disk_messages.values().map(|m| m.len()).sum::<usize>(),
        1,
        "only the chat's first message exists"
    );
}

#[test]
fn a_chat_that_ends_closes_the_customer_socket_after_the_final_status() {
    let mut sim = Sim::new();
    let (chat, ct) = sim.chat("support", "Dana");
    let thread = sim.conv(chat).thread.expect("thread");
    sim.ok(Command::CustomerEnd { token: ct });
    let pos_status = sim.effects.iter().rposition(|e| matches!(e, Effect::Chat { thread: t, event: ChatEvent::Status { status: Status::Abandoned, .. } } if *t == thread));
    let pos_close = sim
        .effects
        .iter()
        .position(|e| matches!(e, Effect::CloseChat { thread: t } if *t == thread));
    assert!(pos_status.is_some() && pos_close.is_some());
    assert!(pos_status < pos_close);
}

#[test]
fn ids_made_in_the_same_millisecond_sort_in_creation_order() {
    let mut sim = Sim::new();
    let ids: Vec<Uuid> = (0..50).map(|i| sim.call(&format!("+1{i}"))).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
}

#[test]
fn a_reply_shows_the_offer_the_same_command_made() {
    let mut sim = Sim::new();
    let (_, _) = sim.online("alice");
    let reply = sim.ok(Command::InboundEmail {
        from: "x@example.com".into(),
        subject: "s".into(),
        text: "t".into(),
        queue: "mail".into(),
    });
    match reply {
        Reply::Conversation(c) => assert_eq!(c.status, Status::Offered),
        r => panic!("{r:?}"),
    }
}

const DAY: i64 = 86_400_000;

#[test]
fn a_restart_with_the_wall_clock_a_day_behind_ends_grace_within_its_duration() {
    let mut sim = Sim::new();
    let (a, sock) = sim.online("alice");
    let (chat, _) = sim.chat("support", "Dana");
    sim.accept(a, chat);
    sim.detach(sock);
    sim.restart_with_wall_step(-DAY);
    sim.advance(GRACE);
    assert_eq!(
        sim.conv(chat).status,
        Status::Handled,
        "the grace period ends at most session_grace after the boot"
    );
    assert_eq!(sim.group(sim.conv(chat).group_id).len(), 2, "requeued once");
}

#[test]
fn a_restart_with_the_wall_clock_behind_lets_a_binding_expire_within_max_expires() {
    let mut sim = Sim::new();
    sim.online("alice");
    sim.register_phone("alice", 30);
    sim.restart_with_wall_step(-DAY);
    let bindings = |sim: &Sim| {
        sim.core
            .org
            .agents
            .get("alice")
            .map(|a| a.rec.bindings.len())
    };
    assert_eq!(bindings(&sim), Some(1));
    sim.advance(30_000);
    assert_eq!(bindings(&sim), Some(0), "expired within sip.max_expires");
}

#[test]
fn a_chat_arriving_after_the_wall_clock_stepped_back_never_overtakes_an_older_one() {
    let mut sim = Sim::new();
    let (first, _) = sim.chat("support", "First");
    sim.now = Now {
        mono: sim.now.mono + 1_000,
        wall: sim.now.wall - 3_600_000,
    };
    let (second, _) = sim.chat("support", "Second");
    assert_eq!(sim.waiting("support"), vec![first, second]);
    assert!(sim.conv(second).queue_arrival_time >= sim.conv(first).queue_arrival_time);
    // Across a restart with the clock a day behind too.
    sim.restart_with_wall_step(-DAY);
    let (third, _) = sim.chat("support", "Third");
    assert_eq!(sim.waiting("support"), vec![first, second, third]);
}

/// A chat queue `big` with `n` members `m00`, `m01`, … (chat capacity 3).
fn big_queue(n: usize) -> Policy {
    let mut cfg = config();
    cfg.queues.push(queue("big", Channel::Chat));
    for i in 0..n {
        cfg.agents.push(agent(&format!("m{i:02}"), &["big"]));
    }
    cfg
}

#[test]
fn offers_go_to_the_longest_idle_eligible_member_among_many() {
    let mut sim = Sim::with(big_queue(12));
    let mut online = Vec::new();
    for i in 0..12 {
        online.push(sim.online(&format!("m{i:02}")));
        sim.advance(1_000);
    }
    sim.ok(Command::SetPresence {
        token: online[3].0,
        presence: Presence::NotReady,
    });
    sim.detach(online[5].1);
    let mut offered_to = Vec::new();
    for k in 0..11 {
        sim.advance(10);
        let (c, _) = sim.chat("big", &format!("C{k}"));
        offered_to.push(sim.conv(c).agent.expect("offered"));
    }
    assert_eq!(
        offered_to,
        [
            "m00", "m01", "m02", "m04", "m06", "m07", "m08", "m09", "m10", "m11",
            // An offer makes its agent the most recently busy one.
            "m00",
        ]
    );
    // Readiness changes move agents in and out without touching their idle time.
    sim.ok(Command::SetPresence {
        token: online[1].0,
        presence: Presence::NotReady,
    });
    sim.ok(Command::SetPresence {
        token: online[3].0,
        presence: Presence::Ready,
    });
    sim.advance(10);
    let (c, _) = sim.chat("big", "D");
    assert_eq!(
        sim.conv(c).agent.as_deref(),
        Some("m03"),
        "idle since login"
    );
    sim.advance(10);
    let (c, _) = sim.chat("big", "E");
    assert_eq!(
        sim.conv(c).agent.as_deref(),
        Some("m02"),
        "m01 is not ready"
    );
}

#[test]
fn an_agent_who_declined_is_skipped_for_that_chat_only() {
    let mut sim = Sim::with(big_queue(3));
    let mut online = Vec::new();
    for i in 0..3 {
        online.push(sim.online(&format!("m{i:02}")));
        sim.advance(1_000);
    }
    let (c, _) = sim.chat("big", "A");
    assert_eq!(sim.conv(c).agent.as_deref(), Some("m00"));
    sim.advance(10);
    sim.ok(Command::Reject {
        token: online[0].0,
        conversation: c,
    });
    assert_eq!(
        sim.conv(c).agent.as_deref(),
        Some("m01"),
        "next longest idle"
    );
    sim.advance(10);
    let (d, _) = sim.chat("big", "B");
    assert_eq!(
        sim.conv(d).agent.as_deref(),
        Some("m02"),
        "idle since login"
    );
    sim.advance(10);
    let (e, _) = sim.chat("big", "C");
    assert_eq!(
        sim.conv(e).agent.as_deref(),
        Some("m00"),
        "m00 may take others"
    );
}

#[test]
fn waiting_customers_are_told_their_position_only_when_it_moves() {
    let mut sim = Sim::new();
    let mut threads = Vec::new();
    for name in ["A", "B", "C", "D"] {
        let (c, _) = sim.chat("support", name);
        threads.push(sim.conv(c).thread.expect("web chat thread"));
    }
    let positions = |sim: &Sim, t: Uuid| -> Vec<Option<u32>> {
        sim.chat_frames(t)
            .into_iter()
            .filter_map(|e| match e {
                ChatEvent::Status { position, .. } => Some(position),
                _ => None,
            })
            .collect()
    };
    assert_eq!(positions(&sim, threads[3]), [Some(4)]);
    assert_eq!(
        positions(&sim, threads[0]),
        [Some(1)],
        "later arrivals behind do not move the first"
    );
    sim.effects.clear();
    sim.online("carol");
    // carol takes three chats: the fourth moves to the front.
    assert_eq!(positions(&sim, threads[3]), [Some(1)]);
    assert_eq!(positions(&sim, threads[0]), [None], "offered: no position");
}

#[test]
fn the_ready_index_follows_every_change_of_eligibility() {
    // Debug builds compare the index with a full recomputation after every command
    // (`check_ready_index`); this walks it through logins, losses, presence, offers,
    // answers and endings, and checks that no chat waits while an eligible member who has
    // not declined it exists.
    let mut sim = Sim::with(big_queue(8));
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |n: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n as u64) as usize
    };
    let mut sessions: Vec<Option<(TokenHash, u64)>> = vec![None; 8];
    let mut chats = 0;
    for _ in 0..400 {
        let i = next(8);
        let name = format!("m{i:02}");
        match next(7) {
            0 if sessions[i].is_none() && sim.next_token < 200 => {
                sessions[i] = Some(sim.online(&name));
            }
            1 => {
                if let Some((_, s)) = sessions[i] {
                    sim.detach(s);
                    let t = sessions[i].map(|(t, _)| t).expect("session");
                    sessions[i] = Some((t, sim.attach(t)));
                }
            }
            2 => {
                if let Some((t, _)) = sessions[i] {
                    let presence = if next(2) == 0 {
                        Presence::Ready
                    } else {
                        Presence::NotReady
                    };
                    sim.ok(Command::SetPresence { token: t, presence });
                }
            }
            3 if chats < 60 && sim.next_token < 250 => {
                chats += 1;
                sim.chat("big", &format!("C{chats}"));
            }
            4 | 5 => {
                let Some((t, _)) = sessions[i] else { continue };
                let mine: Vec<(Uuid, Status)> = sim
                    .core
                    .work
                    .conversations
                    .values()
                    .filter(|c| c.agent.as_deref() == Some(name.as_str()))
                    .map(|c| (c.id, c.status))
                    .collect();
                for (id, status) in mine {
                    let conversation = id;
                    let _ = match status {
                        Status::Offered if next(3) == 0 => sim.cmd(Command::Reject {
                            token: t,
                            conversation,
                        }),
                        Status::Offered => sim.cmd(Command::Accept {
                            token: t,
                            conversation,
                        }),
                        Status::InProcess => sim.cmd(Command::End {
                            token: t,
                            conversation,
                        }),
                        Status::WrapUp => sim.cmd(Command::Complete {
                            token: t,
                            conversation,
                        }),
                        _ => continue,
                    };
                }
            }
            _ => sim.advance(500),
        }
        let core = &sim.core;
        for q in core.org.queues.values() {
            for (_, id) in &q.waiting {
                let c = &core.work.conversations[id];
                for m in &q.members {
                    let a = &core.org.agents[m];
                    assert!(
                        !core.eligible(a, q.cfg.channel) || c.declined_by.contains(m),
                        "{id} waits while {m} is eligible"
                    );
                }
            }
        }
    }
}

// ----- docs/rescue.md: prompt delay, flap damping, alerts, release, sticky return -----

const DELAY: u64 = 10_000;

impl Sim {
    fn system_texts(&self, thread: Uuid) -> Vec<String> {
        self.chat_frames(thread)
            .into_iter()
            .filter_map(|e| match e {
                ChatEvent::Message { message } if message.from == Sender::System => {
                    Some(message.text)
                }
                _ => None,
            })
            .collect()
    }

    /// Alerts raised and cleared on the Dashboard stream so far.
    fn alert_frames(&self) -> Vec<view::DashboardEvent> {
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Dashboard(
                    ev @ (view::DashboardEvent::Alert { .. }
                    | view::DashboardEvent::AlertCleared { .. }),
                ) => Some(ev.clone()),
                _ => None,
            })
            .collect()
    }

    fn standing(&self) -> Vec<(view::AlertKind, String, Vec<Uuid>)> {
        self.core
            .alert_views()
            .into_iter()
            .map(|a| (a.kind, a.agent, a.conversations))
            .collect()
    }

    fn banner_codes(&mut self, token: TokenHash) -> Vec<String> {
        self.snapshot(token)
            .banners
            .into_iter()
            .map(|b| b.code)
            .collect()
    }

    fn presence(&self, agent: &str) -> Presence {
        self.core.org.agents[agent].rec.presence
    }

    /// Alice online with one accepted web chat; returns her token, socket, chat and thread.
    fn alice_with_chat(&mut self) -> (TokenHash, u64, Uuid, Uuid) {
        let (a, sock) = self.online("alice");
        let (chat, _) = self.chat("support", "Dana");
        self.accept(a, chat);
        let thread = self.conv(chat).thread.expect("chat thread");
        (a, sock, chat, thread)
    }
}

fn sticky_config(secs: u64) -> Policy {
    let mut cfg = config();
    cfg.queues[0].sticky_agent = Duration::from_secs(secs);
    cfg
}

#[test]
fn a_reload_within_the_prompt_delay_sends_the_customer_nothing() {
    let mut sim = Sim::new();
    let (a, sock, chat, thread) = sim.alice_with_chat();
    sim.detach(sock);
    sim.advance(60);
    sim.attach(a);
    sim.advance(GRACE);
    assert!(sim.system_texts(thread).is_empty());
    assert!(!sim.events(chat).contains(&EventKind::PromptSent));
    assert!(sim.alert_frames().is_empty(), "no alert for a reload");
}

#[test]
fn the_reconnecting_prompt_goes_out_once_when_the_agent_stays_away_for_the_delay() {
    let mut sim = Sim::new();
    let (_, sock, chat, thread) = sim.alice_with_chat();
    sim.drop_link(sock);
    sim.advance(DELAY - 1);
    assert!(sim.system_texts(thread).is_empty(), "never early");
    sim.advance(1);
    assert_eq!(
        sim.system_texts(thread),
        vec!["Your agent is reconnecting…"]
    );
    sim.advance(GRACE - DELAY - 1);
    assert_eq!(sim.system_texts(thread).len(), 1, "at most once per loss");
    let prompts = sim
        .events(chat)
        .iter()
        .filter(|e| **e == EventKind::PromptSent)
        .count();
    assert_eq!(prompts, 1);
}

#[test]
fn each_new_loss_that_lasts_the_delay_gets_its_own_prompt() {
    let mut sim = Sim::new();
    let (a, sock, _, thread) = sim.alice_with_chat();
    sim.detach(sock);
    sim.advance(DELAY);
    let sock = sim.attach(a);
    sim.advance(1_000);
    sim.detach(sock);
    sim.advance(DELAY);
    assert_eq!(sim.system_texts(thread).len(), 2);
}

#[test]
fn the_customer_chat_learns_the_agent_is_reconnecting_and_back() {
    let mut sim = Sim::new();
    let (a, sock, _, thread) = sim.alice_with_chat();
    sim.drop_link(sock);
    sim.advance(DELAY);
    let states: Vec<&str> = sim
        .chat_frames(thread)
        .into_iter()
        .filter_map(|e| match e {
            ChatEvent::AgentConnection { state } => Some(state),
            _ => None,
        })
        .collect();
    assert_eq!(states, vec!["reconnecting"]);
    let snap = sim.core.chat_snapshot(thread).expect("snapshot");
    assert!(snap.agent_reconnecting);
    sim.attach(a);
    let last = sim
        .chat_frames(thread)
        .into_iter()
        .rev()
        .find_map(|e| match e {
            ChatEvent::AgentConnection { state } => Some(state),
            _ => None,
        });
    assert_eq!(last, Some("connected"));
    assert!(
        !sim.core
            .chat_snapshot(thread)
            .expect("snapshot")
            .agent_reconnecting
    );
}

#[test]
fn prompts_on_sms_go_out_through_the_webhook_with_no_agent_and_a_delivery_state() {
    let mut sim = Sim::new();
    let (a, sock) = sim.online("alice");
    let sms = match sim.ok(Command::InboundMessage {
        medium: Medium::Sms,
        from: "+1555".into(),
        text: "hi".into(),
        queue: "support".into(),
    }) {
        Reply::Conversation(c) => c.id,
        r => panic!("{r:?}"),
    };
    sim.accept(a, sms);
    sim.drop_link(sock);
    sim.advance(DELAY);
    let delivered: Vec<OutboxItem> = sim
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Deliver(item) => Some((**item).clone()),
            _ => None,
        })
        .collect();
    assert_eq!(delivered.len(), 1, "the reconnecting prompt");
    assert_eq!(delivered[0].text, "Your agent is reconnecting…");
    assert_eq!(delivered[0].agent, "", "no agent: a system message");
    assert_eq!(delivered[0].to, "+1555");
    let thread = sim.conv(sms).thread.expect("thread");
    let msg = sim.disk_messages[&thread]
        .values()
        .find(|m| m.from == Sender::System)
        .expect("in the transcript")
        .clone();
    assert_eq!(msg.delivery, Some(Delivery::Pending));
    sim.ok(Command::OutboxAttempt {
        message: msg.id,
        delivered: true,
        error: None,
    });
    let msg = sim.disk_messages[&thread]
        .values()
        .find(|m| m.id == msg.id)
        .expect("still there")
        .clone();
    assert_eq!(msg.delivery, Some(Delivery::Delivered));
}

#[test]
fn the_third_abrupt_loss_within_the_window_sets_not_ready_with_the_unstable_banner() {
    let mut sim = Sim::new();
    let (a, sock) = sim.online("alice");
    sim.drop_link(sock);
    sim.advance(30_000); // resumes inside the grace period
    let sock = sim.attach(a);
    sim.advance(1_000);
    sim.drop_link(sock);
    sim.advance(1_000);
    let sock = sim.attach(a);
    assert_eq!(sim.presence("alice"), Presence::Ready);
    sim.advance(4 * 60_000);
    sim.drop_link(sock);
    assert_eq!(sim.presence("alice"), Presence::NotReady);
    let a2 = sim.login("alice");
    assert_eq!(sim.banner_codes(a2), vec!["connection_unstable"]);
    assert_eq!(sim.standing()[0].0, view::AlertKind::ConnectionUnstable);
    // No new work while unstable, even once back.
    sim.attach(a2);
    let (chat, _) = sim.chat("support", "Dana");
    assert_eq!(sim.conv(chat).status, Status::InQueue);
    // Choosing ready clears the banner and the alert; work flows again.
    sim.ok(Command::SetPresence {
        token: a2,
        presence: Presence::Ready,
    });
    assert!(sim.banner_codes(a2).is_empty());
    assert!(sim.standing().is_empty());
    assert!(matches!(
        sim.alert_frames().last(),
        Some(view::DashboardEvent::AlertCleared { .. })
    ));
    assert_eq!(sim.conv(chat).status, Status::Offered);
}

#[test]
fn polite_closes_never_count_as_flaps() {
    let mut sim = Sim::new();
    let (a, mut sock) = sim.online("alice");
    for _ in 0..5 {
        sim.detach(sock);
        sim.advance(100);
        sock = sim.attach(a);
    }
    assert_eq!(sim.presence("alice"), Presence::Ready);
    assert!(sim.banner_codes(a).is_empty());
}

#[test]
fn abrupt_losses_spread_wider_than_the_window_do_not_trip_flap_damping() {
    let mut sim = Sim::new();
    let (a, mut sock) = sim.online("alice");
    for _ in 0..4 {
        sim.drop_link(sock);
        sim.advance(1_000);
        sock = sim.attach(a);
        sim.advance(5 * 60_000);
    }
    assert_eq!(sim.presence("alice"), Presence::Ready);
}

#[test]
fn flap_limit_zero_switches_flap_damping_off() {
    let mut cfg = config();
    cfg.resilience.flap_limit = 0;
    let mut sim = Sim::with(cfg);
    let (a, mut sock) = sim.online("alice");
    for _ in 0..5 {
        sim.drop_link(sock);
        sim.advance(100);
        sock = sim.attach(a);
    }
    assert_eq!(sim.presence("alice"), Presence::Ready);
}

#[test]
fn an_agent_away_for_the_delay_with_open_chats_raises_agent_in_grace_cleared_on_resume() {
    let mut sim = Sim::new();
    let (a, sock, chat, _) = sim.alice_with_chat();
    sim.drop_link(sock);
    sim.advance(DELAY - 1);
    assert!(sim.standing().is_empty());
    sim.advance(1);
    assert_eq!(
        sim.standing(),
        vec![(view::AlertKind::AgentInGrace, "alice".into(), vec![chat])]
    );
    let raised = sim.core.alert_views()[0].clone();
    assert!(raised.text.contains("Agent alice"), "{}", raised.text);
    sim.attach(a);
    assert!(sim.standing().is_empty());
    assert_eq!(
        sim.alert_frames().last(),
        Some(&view::DashboardEvent::AlertCleared { id: raised.id })
    );
}

#[test]
fn an_agent_away_with_nothing_open_raises_no_grace_alert() {
    let mut sim = Sim::new();
    let (_, sock) = sim.online("alice");
    sim.drop_link(sock);
    sim.advance(DELAY);
    assert!(sim.standing().is_empty());
}

#[test]
fn session_lost_alert_names_the_requeued_chats_and_clears_once_they_are_taken() {
    let mut sim = Sim::new();
    let (_, sock, chat, _) = sim.alice_with_chat();
    sim.drop_link(sock);
    sim.advance(GRACE);
    let requeued = sim.waiting("support");
    assert_eq!(requeued.len(), 1);
    assert_eq!(
        sim.standing(),
        vec![(
            view::AlertKind::SessionLost,
            "alice".into(),
            requeued.clone()
        )],
        "the grace alert gives way to the session-lost alert"
    );
    assert_ne!(requeued[0], chat);
    let (b, _) = sim.online("bob");
    assert_eq!(
        sim.standing().len(),
        1,
        "an offer is not yet taken: the alert holds until someone accepts"
    );
    sim.accept(b, requeued[0]);
    assert!(sim.standing().is_empty());
}

#[test]
fn release_ends_the_session_at_once_with_the_deadline_policy() {
    let mut sim = Sim::new();
    let (a, sock, chat, _) = sim.alice_with_chat();
    let mail = sim.email("x@example.com");
    sim.accept(a, mail);
    sim.ok(Command::SaveDraft {
        token: a,
        conversation: chat,
        draft: draft("half typed"),
    });
    sim.drop_link(sock);
    sim.advance(DELAY);
    let sup = sim.supervisor();
    sim.ok(Command::Release {
        token: sup,
        agent: "alice".into(),
    });
    let old = sim.conv(chat);
    assert_eq!(old.status, Status::Handled);
    assert_eq!(
        old.disconnect_reason,
        Some(DisconnectReason::AgentSessionLost)
    );
    assert_eq!(
        old.ended_at,
        Some(sim.now.ts()),
        "ended now, not at the deadline"
    );
    let requeued = sim.waiting("support");
    assert_eq!(requeued.len(), 1);
    assert_eq!(
        sim.conv(requeued[0]).queue_arrival_time,
        old.queue_arrival_time
    );
    assert_eq!(sim.conv(mail).status, Status::InProcess, "email stays");
    assert!(sim.disk_drafts.is_empty(), "drafts dropped");
    assert!(sim.disk_sessions.values().all(|s| s.user != "alice"));
    assert_eq!(
        sim.cmd(Command::AgentState { token: a }).unwrap_err(),
        Rejection::Unauthorized
    );
    assert_eq!(sim.standing()[0].0, view::AlertKind::SessionLost);
    // The old deadline has nothing left to do.
    sim.advance(GRACE);
    assert_eq!(sim.waiting("support"), requeued);
}

#[test]
fn release_without_a_session_is_refused_and_changes_nothing() {
    let mut sim = Sim::new();
    let sup = sim.supervisor();
    let r = sim.cmd(Command::Release {
        token: sup,
        agent: "alice".into(),
    });
    assert!(
        matches!(
            r,
            Err(Rejection::Conflict {
                code: "invalid_state",
                ..
            })
        ),
        "{r:?}"
    );
    let (a, _) = sim.online("bob");
    let r = sim.cmd(Command::Release {
        token: a,
        agent: "bob".into(),
    });
    assert!(matches!(r, Err(Rejection::Forbidden(_))), "agents may not");
    let r = sim.cmd(Command::Release {
        token: sup,
        agent: "nobody".into(),
    });
    assert!(matches!(r, Err(Rejection::NotFound(_))));
}

#[test]
fn a_sticky_requeued_chat_waits_for_its_previous_agent_then_goes_to_anyone() {
    let mut sim = Sim::with(sticky_config(120));
    let (_, sock, _, _) = sim.alice_with_chat();
    let (_b, _) = sim.online("bob");
    sim.drop_link(sock);
    sim.advance(GRACE);
    let requeued = sim.waiting("support");
    assert_eq!(requeued.len(), 1, "not offered to bob while reserved");
    // Alice logs in again and gets it back.
    let (_, _) = sim.online("alice");
    let c = sim.conv(requeued[0]);
    assert_eq!(c.status, Status::Offered);
    assert_eq!(c.agent.as_deref(), Some("alice"));
}

#[test]
fn a_sticky_reservation_ends_after_its_time_or_when_the_agent_rejects() {
    let mut sim = Sim::with(sticky_config(120));
    let (_, sock, _, _) = sim.alice_with_chat();
    let (b, _) = sim.online("bob");
    sim.ok(Command::SetPresence {
        token: b,
        presence: Presence::Ready,
    });
    sim.drop_link(sock);
    sim.advance(GRACE);
    let requeued = sim.waiting("support")[0];
    sim.advance(120_000 - 1);
    assert_eq!(sim.conv(requeued).status, Status::InQueue);
    sim.advance(1);
    assert_eq!(sim.conv(requeued).agent.as_deref(), Some("bob"));

    // Rejecting ends the reservation at once.
    let mut sim = Sim::with(sticky_config(120));
    let (_, sock, _, _) = sim.alice_with_chat();
    sim.online("bob");
    sim.drop_link(sock);
    sim.advance(GRACE);
    let requeued = sim.waiting("support")[0];
    let (a, _) = sim.online("alice");
    sim.ok(Command::Reject {
        token: a,
        conversation: requeued,
    });
    assert_eq!(sim.conv(requeued).agent.as_deref(), Some("bob"));
}

#[test]
fn anyone_may_pick_a_reserved_chat_by_hand() {
    let mut sim = Sim::with(sticky_config(120));
    let (_, sock, _, _) = sim.alice_with_chat();
    let (b, _) = sim.online("bob");
    sim.drop_link(sock);
    sim.advance(GRACE);
    let requeued = sim.waiting("support")[0];
    sim.ok(Command::Pick {
        token: b,
        queue: "support".into(),
        conversation: requeued,
    });
    assert_eq!(sim.conv(requeued).status, Status::InProcess);
    assert_eq!(sim.conv(requeued).agent.as_deref(), Some("bob"));
}

// --- callbacks by third-party call control (docs/sip-calls.md#callback) ---------------------

const PROXY: &str = "192.0.2.10:5060";
const PHONE: &str = "10.0.0.5:5060";
const PHONE_SDP: &str = "v=0\r\no=phone 1 1 IN IP4 10.0.0.5\r\ns=-\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n";
const CUSTOMER_SDP: &str = "v=0\r\no=gw 2 2 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\nt=0 0\r\nm=audio 50000 RTP/AVP 0\r\n";

impl Sim {
    /// The SIP requests sent so far (taken), with where they went.
    fn sip_sent(&mut self) -> Vec<(std::net::SocketAddr, crate::sip::message::Request)> {
        let mut out = Vec::new();
        self.effects.retain(|e| match e {
            Effect::SipSend { to, bytes } => {
                if let Ok(crate::sip::message::SipMessage::Request(r)) =
                    crate::sip::message::parse(bytes)
                {
                    out.push((*to, r));
                }
                false
            }
            _ => true,
        });
        out
    }

    /// `peer` answers `req` with `code` (a To tag, a Contact and an optional SDP body).
    fn sip_answer(&mut self, peer: &str, req: &crate::sip::message::Request, code: u16, sdp: &str) {
        let mut resp = crate::sip::message::response_to(req, code, "X");
        if let Some((_, to)) = resp.headers.iter_mut().find(|(n, _)| n == "To") {
            to.push_str(";tag=them");
        }
        resp.push_header("Contact", format!("<sip:x@{peer}>"));
        if !sdp.is_empty() {
            resp = resp.with_body("application/sdp", sdp.as_bytes().to_vec());
        }
        self.ok(Command::Sip {
            from: peer.parse().expect("address"),
            message: Box::new(crate::sip::message::SipMessage::Response(resp)),
        });
    }
}

/// Alice online with her phone registered, a voice call of hers ended in wrap-up, and the
/// SIP socket up with an outbound proxy: ready to call back.
fn dropped_call_with_outbound_proxy() -> (Sim, TokenHash, Uuid) {
    let mut cfg = config();
    cfg.calls.outbound_proxy = Some(PROXY.parse().expect("address"));
    let mut sim = Sim::with(cfg);
    sim.ok(Command::SipListening {
        addr: "198.51.100.1:5060".parse().expect("address"),
    });
    let (a, _) = sim.online("alice");
    sim.register_phone("alice", 3600);
    let call = sim.call("+15551234");
    sim.accept(a, call);
    sim.ok(Command::End {
        token: a,
        conversation: call,
    });
    assert_eq!(sim.conv(call).status, Status::WrapUp);
    (sim, a, call)
}

fn callback(sim: &mut Sim, token: TokenHash, id: Uuid) -> Uuid {
    match sim.ok(Command::Callback {
        token,
        conversation: id,
    }) {
        Reply::Conversation(c) => c.id,
        r => panic!("unexpected {r:?}"),
    }
}

#[test]
fn a_callback_rings_the_agents_phone_first_then_the_customer_with_the_phones_offer() {
    let (mut sim, a, call) = dropped_call_with_outbound_proxy();
    let new = callback(&mut sim, a, call);
    assert_eq!(sim.conv(new).status, Status::Offered, "dialling");
    let sent = sim.sip_sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let (to, ring) = &sent[0];
    assert_eq!(to.to_string(), PHONE);
    assert_eq!(ring.method, "INVITE");
    assert!(ring.body.is_empty(), "the phone is called without SDP");
    assert!(ring.header("From").expect("From").contains("+15551234"));
    // The panel cannot answer it: the phone does.
    let r = sim.cmd(Command::Accept {
        token: a,
        conversation: new,
    });
    assert!(
        matches!(r, Err(Rejection::Conflict { code, .. }) if code == "answer_on_phone"),
        "{r:?}"
    );

    let ring = ring.clone();
    sim.sip_answer(PHONE, &ring, 200, PHONE_SDP);
    let sent = sim.sip_sent();
    let (to, out) = sent
        .iter()
        .find(|(_, r)| r.method == "INVITE")
        .expect("the customer is called");
    assert_eq!(to.to_string(), PROXY);
    assert!(out.uri.starts_with("sip:+15551234@"), "{}", out.uri);
    assert_eq!(
        String::from_utf8_lossy(&out.body),
        PHONE_SDP,
        "the phone's offer"
    );
    assert_eq!(
        sim.conv(new).status,
        Status::Offered,
        "until the customer answers"
    );

    let out = out.clone();
    sim.sip_answer(PROXY, &out, 200, CUSTOMER_SDP);
    let sent = sim.sip_sent();
    let acks: Vec<_> = sent.iter().filter(|(_, r)| r.method == "ACK").collect();
    assert_eq!(acks.len(), 2, "{sent:?}");
    let to_phone = acks
        .iter()
        .find(|(to, _)| to.to_string() == PHONE)
        .expect("ACK to the phone");
    assert_eq!(
        String::from_utf8_lossy(&to_phone.1.body),
        CUSTOMER_SDP,
        "the customer's answer"
    );
    let to_customer = acks
        .iter()
        .find(|(to, _)| to.to_string() == PROXY)
        .expect("ACK to the customer");
    assert!(to_customer.1.body.is_empty());
    let c = sim.conv(new);
    assert_eq!(c.status, Status::InProcess);
    assert_eq!(c.agent.as_deref(), Some("alice"));

    // The agent ends it on the panel: BYE to both sides.
    sim.ok(Command::End {
        token: a,
        conversation: new,
    });
    let byes: Vec<String> = sim
        .sip_sent()
        .iter()
        .filter(|(_, r)| r.method == "BYE")
        .map(|(to, _)| to.to_string())
        .collect();
    assert!(
        byes.contains(&PHONE.to_string()) && byes.contains(&PROXY.to_string()),
        "{byes:?}"
    );
    assert_eq!(sim.conv(new).status, Status::WrapUp);
}

#[test]
fn a_callback_the_customer_does_not_answer_within_60_s_ends_handled_without_a_reason() {
    let (mut sim, a, call) = dropped_call_with_outbound_proxy();
    let new = callback(&mut sim, a, call);
    let ring = sim.sip_sent().remove(0).1;
    sim.advance(30_000);
    sim.sip_answer(PHONE, &ring, 200, PHONE_SDP);
    let out = sim
        .sip_sent()
        .into_iter()
        .find(|(to, r)| r.method == "INVITE" && to.to_string() == PROXY)
        .expect("the customer is called")
        .1;
    let mut ringing = crate::sip::message::response_to(&out, 180, "Ringing");
    ringing.push_header("Contact", format!("<sip:x@{PROXY}>"));
    sim.ok(Command::Sip {
        from: PROXY.parse().expect("address"),
        message: Box::new(crate::sip::message::SipMessage::Response(ringing)),
    });
    sim.advance(59_999);
    assert_eq!(sim.conv(new).status, Status::Offered);
    sim.advance(1);
    let c = sim.conv(new);
    assert_eq!(c.status, Status::Handled);
    assert_eq!(c.disconnect_reason, None);
    let sent = sim.sip_sent();
    assert!(
        sent.iter()
            .any(|(to, r)| r.method == "CANCEL" && to.to_string() == PROXY),
        "{sent:?}"
    );
    assert!(
        sent.iter()
            .any(|(to, r)| r.method == "ACK" && to.to_string() == PHONE)
            && sent
                .iter()
                .any(|(to, r)| r.method == "BYE" && to.to_string() == PHONE),
        "the phone's answer is acknowledged, then hung up: {sent:?}"
    );
    // The agent can call back again.
    callback(&mut sim, a, call);
}

#[test]
fn a_callback_without_an_outbound_proxy_is_only_a_record_in_process() {
    let mut sim = Sim::new();
    let (a, _) = sim.online("alice");
    sim.register_phone("alice", 3600);
    let call = sim.call("+15551234");
    sim.accept(a, call);
    sim.ok(Command::End {
        token: a,
        conversation: call,
    });
    let new = callback(&mut sim, a, call);
    assert_eq!(sim.conv(new).status, Status::InProcess);
    assert!(sim.sip_sent().is_empty());
}

// ----- memory: what a storm leaves behind -----

impl Sim {
    /// Accepts every conversation offered to one of `tokens`' agents (`a{i}` holds `tokens[i]`).
    fn accept_all_offers(&mut self, tokens: &[TokenHash]) {
        let offered: Vec<(Uuid, usize)> = self
            .core
            .work
            .conversations
            .values()
            .filter(|c| c.status == Status::Offered)
            .filter_map(|c| {
                let i = c.agent.as_deref()?.strip_prefix('a')?.parse().ok()?;
                Some((c.id, i))
            })
            .collect();
        for (id, i) in offered {
            self.accept(tokens[i], id);
        }
    }
}

#[test]
fn a_storm_leaves_no_more_entries_in_memory_than_a_restart_on_the_same_data() {
    const AGENTS: usize = 30;
    let mut cfg = config();
    cfg.agents = (0..AGENTS)
        .map(|i| agent(&format!("a{i}"), &["support"]))
        .collect();
    let mut sim = Sim::with(cfg);
    let sup = sim.supervisor();
    let links: Vec<(TokenHash, u64)> = (0..AGENTS).map(|i| sim.online(&format!("a{i}"))).collect();
    let tokens: Vec<TokenHash> = links.iter().map(|(t, _)| *t).collect();
    let customers: Vec<TokenHash> = (0..AGENTS * 3)
        .map(|i| sim.chat("support", &format!("C{i}")).1)
        .collect();
    sim.accept_all_offers(&tokens);
    assert_eq!(sim.core.footprint().conversations, AGENTS * 3);

    // Every panel drops; a grace period later every chat is requeued.
    for (_, socket) in &links {
        sim.drop_link(*socket);
    }
    sim.advance(GRACE + 1_000);
    assert_eq!(sim.waiting("support").len(), AGENTS * 3);

    // The agents come back, take the work, finish it and leave; so do the customers.
    let tokens: Vec<TokenHash> = (0..AGENTS)
        .map(|i| sim.online(&format!("a{i}")).0)
        .collect();
    sim.accept_all_offers(&tokens);
    let held: Vec<(Uuid, TokenHash)> = sim
        .core
        .work
        .conversations
        .values()
        .filter(|c| c.status == Status::InProcess)
        .filter_map(|c| {
            let i: usize = c.agent.as_deref()?.strip_prefix('a')?.parse().ok()?;
            Some((c.id, tokens[i]))
        })
        .collect();
    assert_eq!(held.len(), AGENTS * 3);
    for (conversation, token) in held {
        sim.ok(Command::End {
            token,
            conversation,
        });
        sim.ok(Command::Complete {
            token,
            conversation,
        });
    }
    for token in customers {
        let _ = sim.cmd(Command::CustomerEnd { token });
    }
    for token in tokens.into_iter().chain([sup]) {
        sim.ok(Command::Logout { token });
    }
    sim.flush();
    let after = sim.core.footprint();

    sim.restart(1_000);
    let fresh = sim.core.footprint();
    assert_eq!(
        Footprint {
            capacity: 0,
            effect_room: 0,
            ..after
        },
        Footprint {
            capacity: 0,
            effect_room: 0,
            ..fresh
        },
        "entries left behind by the storm"
    );
    assert_eq!(after.tokens, 0, "no token outlives its session or chat");
    // Maps that held the storm's hundreds of entries gave their room back.
    assert!(after.capacity <= 64 * 10, "room kept: {after:?}");
    assert!(
        after.effect_room <= EFFECT_ROOM_KEPT,
        "room kept: {after:?}"
    );
}

#[test]
fn the_effect_queue_gives_back_the_room_of_a_storm_once_drained() {
    let mut sim = Sim::new();
    for i in 0..20_000u128 {
        let thread = Uuid::from_u128(i);
        sim.core
            .batch
            .effects
            .push_back(Effect::CloseChat { thread });
    }
    assert!(sim.core.footprint().effect_room >= 20_000);
    let mut drained = 0;
    while sim.core.poll_effect().is_some() {
        drained += 1;
    }
    assert_eq!(drained, 20_000);
    assert!(sim.core.footprint().effect_room <= EFFECT_ROOM_KEPT);
}

// --- when a conversation was answered (`answered_at`, docs/domain.md#conversation-fields) ---

impl Sim {
    /// The last conversation frame the agent's panel got for `id`.
    fn last_panel_view(&self, who: &str, id: Uuid) -> view::ConversationView {
        self.panel_frames(who)
            .into_iter()
            .rev()
            .find_map(|f| match f {
                PanelEvent::Conversation { conversation } if conversation.id == id => {
                    Some(*conversation)
                }
                _ => None,
            })
            .expect("a conversation frame")
    }

    /// The conversation as Conversation Details shows it, from the disk model.
    fn details_view(&self, id: Uuid) -> view::ConversationView {
        let events = self.disk_events.get(&id).cloned().unwrap_or_default();
        view::ConversationView::with_timeline(&self.disk_convs[&id], &events)
    }
}

#[test]
fn a_call_is_answered_when_the_agent_accepts_not_when_it_arrived_or_rang() {
    let mut sim = Sim::new();
    let (a, _) = sim.online("alice");
    sim.register_phone("alice", 3600);
    let call = sim.call("+15550100");
    let ringing = sim.last_panel_view("alice", call);
    assert_eq!(ringing.status, Status::Offered);
    assert_eq!(ringing.answered_at, None, "not answered while ringing");

    sim.advance(7_250);
    let answered = sim.now.ts();
    sim.accept(a, call);
    let view = sim.last_panel_view("alice", call);
    assert_eq!(view.status, Status::InProcess);
    assert_eq!(view.answered_at, Some(answered));
    assert_eq!(view.created_at.0 + 7_250, answered.0);
    let snap = sim.snapshot(a);
    let in_snapshot = snap.conversations.iter().find(|c| c.id == call);
    assert_eq!(
        in_snapshot.and_then(|c| c.answered_at),
        Some(answered),
        "a reload shows the same start"
    );
    assert_eq!(sim.details_view(call).answered_at, Some(answered));
}

#[test]
fn an_ended_call_keeps_its_answer_time_so_its_length_is_ended_minus_answered() {
    let mut sim = Sim::new();
    let (a, _) = sim.online("alice");
    sim.register_phone("alice", 3600);
    let call = sim.call("+15550100");
    sim.advance(2_000);
    sim.accept(a, call);
    let answered = sim.now.ts();
    sim.advance(187_000);
    sim.ok(Command::End {
        token: a,
        conversation: call,
    });
    let view = sim.last_panel_view("alice", call);
    assert_eq!(view.status, Status::WrapUp);
    assert_eq!(view.answered_at, Some(answered));
    let ended = view.ended_at.expect("ended");
    assert_eq!(ended.0 - answered.0, 187_000, "3:07 on the call");
    sim.ok(Command::Complete {
        token: a,
        conversation: call,
    });
    let handled = sim.details_view(call);
    assert_eq!(handled.status, Status::Handled);
    assert_eq!(handled.answered_at, Some(answered));
}

#[test]
fn the_answer_time_survives_a_restart() {
    let mut sim = Sim::new();
    let (a, _) = sim.online("alice");
    sim.register_phone("alice", 3600);
    let call = sim.call("+15550100");
    sim.advance(1_500);
    sim.accept(a, call);
    let answered = sim.now.ts();
    sim.restart(30_000);
    let snap = sim.snapshot(a);
    let c = snap
        .conversations
        .iter()
        .find(|c| c.id == call)
        .expect("still held");
    assert_eq!(c.status, Status::InProcess);
    assert_eq!(c.answered_at, Some(answered));
}

#[test]
fn a_picked_chat_is_answered_when_picked() {
    let mut sim = Sim::new();
    let (a, _) = sim.online("alice");
    sim.ok(Command::SetPresence {
        token: a,
        presence: Presence::NotReady,
    });
    let (chat, _) = sim.chat("support", "Dana");
    sim.advance(4_000);
    sim.ok(Command::Pick {
        token: a,
        queue: "support".into(),
        conversation: chat,
    });
    assert_eq!(
        sim.last_panel_view("alice", chat).answered_at,
        Some(sim.now.ts())
    );
}

#[test]
fn a_callback_without_dialling_counts_from_its_start_and_a_dialled_one_from_the_customer_answering()
{
    // Only a record (no outbound proxy): in process at once.
    let mut sim = Sim::new();
    let (a, _) = sim.online("alice");
    sim.register_phone("alice", 3600);
    let call = sim.call("+15550100");
    sim.accept(a, call);
    sim.ok(Command::End {
        token: a,
        conversation: call,
    });
    sim.advance(9_000);
    let new = callback(&mut sim, a, call);
    assert_eq!(
        sim.last_panel_view("alice", new).answered_at,
        Some(sim.now.ts())
    );

    // Dialled: not answered while the phone and the customer ring.
    let (mut sim, a, call) = dropped_call_with_outbound_proxy();
    let new = callback(&mut sim, a, call);
    assert_eq!(sim.last_panel_view("alice", new).answered_at, None);
    let ring = sim.sip_sent().remove(0).1;
    sim.sip_answer(PHONE, &ring, 200, PHONE_SDP);
    let out = sim
        .sip_sent()
        .into_iter()
        .find(|(_, r)| r.method == "INVITE")
        .expect("the customer is called")
        .1;
    assert_eq!(sim.last_panel_view("alice", new).answered_at, None);
    sim.advance(6_000);
    sim.sip_answer(PROXY, &out, 200, CUSTOMER_SDP);
    let view = sim.last_panel_view("alice", new);
    assert_eq!(view.status, Status::InProcess);
    assert_eq!(view.answered_at, Some(sim.now.ts()));
}

#[test]
fn a_dialled_callback_nobody_answered_was_never_answered() {
    let (mut sim, a, call) = dropped_call_with_outbound_proxy();
    let new = callback(&mut sim, a, call);
    sim.advance(61_000);
    sim.advance(61_000);
    let view = sim.details_view(new);
    assert_eq!(view.status, Status::Handled);
    assert_eq!(view.disconnect_reason, None);
    assert_eq!(view.answered_at, None);
}
