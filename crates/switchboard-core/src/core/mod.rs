//! Core layer: the pure, deterministic domain state machine of docs/domain.md, docs/sessions.md,
//! docs/policy.md, docs/routing.md and the SIP bindings of docs/sip.md.
//!
//! Commands go in with the time they happen at ([`Core::handle`]), deadlines fire through
//! [`Core::handle_timeout`], and everything the outside world must do comes out as data:
//! [`Write`]s for the store ([`Core::take_writes`], one transaction per batch) and
//! [`Effect`]s for subscribers ([`Core::poll_effect`]). It imports no tokio, axum, redb or
//! sockets and never reads a clock: the driver passes [`Now`] in.

pub mod access;
pub mod command;
pub mod effect;
pub mod model;
pub mod time;
pub mod view;

mod calls;
mod customer;
mod query;
mod rescue;
mod routing;
mod session;
mod sip;
mod work;

#[cfg(test)]
mod tests;

pub use command::{BindingUpdate, Command, LossCause, Principal, Rejection, Reply, Target};
pub use effect::{Effect, Write};
pub use time::{Deadline, Now, Timestamp};

use crate::policy::{Channel, Policy, QueueConfig};
use crate::room::shrink_map;
use crate::wheel::{KeyedBuildHasher, Wheel};
use model::{
    AgentId, AgentRecord, Conversation, DisconnectReason, Event, EventKind, Medium, Message,
    Metadata, OutboxItem, Presence, Role, Session, SessionState, Status, Thread, TokenHash,
};
use rand::{RngCore, SeedableRng, rngs::StdRng};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use uuid::Uuid;
use view::{Banner, Capabilities};

/// Every deadline the core keeps, as a timing-wheel key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Timer {
    /// A disconnected session's grace period ends.
    Grace(Uuid),
    /// An offer expires unanswered.
    Offer(Uuid),
    /// One SIP binding (agent, contact) expires.
    Binding(AgentId, String),
    /// An outbox item is due for another delivery attempt.
    Outbox(Uuid),
    /// A SIP transaction's timer.
    Sip(u64, crate::sip::transaction::TimerName),
    /// A disconnected session's reconnecting prompt delay ends.
    Prompt(Uuid),
    /// A requeued chat's reservation for its previous agent ends.
    Sticky(Uuid),
    /// A callback's phone or customer has not answered in time.
    Dial(Uuid),
}

/// What a bearer token opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenOwner {
    Session(Uuid),
    Thread(Uuid),
}

/// An agent's session as the core keeps it.
#[derive(Debug, Clone)]
pub(crate) struct SessionRt {
    pub rec: Session,
    /// Panel sockets attached right now (not persisted).
    pub sockets: BTreeSet<u64>,
    /// Unsaved metadata by conversation.
    pub drafts: BTreeMap<Uuid, Metadata>,
    /// This loss has passed the prompt delay (customers were told; not persisted).
    pub away_announced: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct AgentRt {
    pub rec: AgentRecord,
    pub session: Option<Uuid>,
    /// Conversations offered to or held by the agent (offered, in_process, wrap_up).
    pub assigned: BTreeSet<Uuid>,
    /// From the configuration in force (refreshed on reload).
    pub name: String,
    pub capacity: crate::policy::Capacity,
    /// What the panel was last told, to push only real changes.
    pub sent_caps: Capabilities,
    pub sent_banners: Vec<Banner>,
    /// Monotonic times of recent abrupt losses (at most `flap_limit`).
    pub flaps: VecDeque<u64>,
    /// Flap damping set the agent to not ready; cleared when they choose ready.
    pub unstable: bool,
    /// The agent's queues as configured; `None` once the agent left the configuration.
    pub configured_queues: Option<Vec<String>>,
    /// The queues whose `members` list this agent (kept with the ready index).
    pub queues: Vec<String>,
    /// Per channel, the idle-since key under which the agent is in the `ready` set of its
    /// queues of that channel (`None`: not eligible, not listed).
    pub indexed: [Option<Timestamp>; 3],
}

#[derive(Debug, Clone)]
pub(crate) struct QueueRt {
    pub cfg: QueueConfig,
    /// `in_queue` conversations by (rank, id): first = next to be served.
    pub waiting: BTreeSet<(i64, Uuid)>,
    pub members: Vec<AgentId>,
    /// Members eligible for an offer on the queue's channel right now, by (idle since, id):
    /// first = idle longest. Kept in step on every change of eligibility, so an offer costs
    /// O(log n) instead of a sort of every member.
    pub ready: BTreeSet<(Timestamp, AgentId)>,
}

#[derive(Debug, Clone)]
pub(crate) struct ThreadRt {
    pub rec: Thread,
    pub messages: Vec<Message>,
    /// The customer's messages in the current minute: (minute on the monotonic scale, count).
    pub sent: (u64, u32),
}

/// Event counters since start (for `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub logins: u64,
    pub connection_losses: u64,
    pub resumes: u64,
    pub sessions_lost: u64,
    pub chats_requeued: u64,
    pub calls_dropped: u64,
    pub offers: u64,
    pub offer_timeouts: u64,
    pub sip_registrations_lost: u64,
}

/// Current levels (for `/metrics`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gauges {
    pub sessions_connected: u64,
    pub sessions_disconnected: u64,
    pub supervisor_sessions: u64,
    /// Open conversations by status.
    pub conversations: BTreeMap<&'static str, u64>,
    /// Waiting conversations by queue.
    pub queue_waiting: BTreeMap<String, u64>,
    pub sip_bindings: u64,
    pub agents_registered: u64,
    pub timers: u64,
    pub outbox_pending: u64,
    /// SIP calls waiting in a queue, ringing a phone, and answered.
    pub calls_waiting: u64,
    pub calls_ringing: u64,
    pub calls_talking: u64,
}

/// Entries held by each of the core's maps, and the entries they have room for: what a
/// storm leaves behind once its sessions, sockets and chats have ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Footprint {
    pub sessions: usize,
    pub tokens: usize,
    pub sockets: usize,
    pub conversations: usize,
    pub timelines: usize,
    pub threads: usize,
    pub open_threads: usize,
    pub outbox: usize,
    pub sent_positions: usize,
    pub alerts: usize,
    pub sticky: usize,
    pub timers: usize,
    /// Entries the hash maps above have room for without growing.
    pub capacity: usize,
    /// Effects the (drained) effect queue has room for.
    pub effect_room: usize,
}

/// Room for effects kept between batches (an ordinary batch needs far less).
const EFFECT_ROOM_KEPT: usize = 1024;

/// Everything the store hands back at boot: open work and live sessions.
#[derive(Debug, Clone, Default)]
pub struct Restored {
    pub conversations: Vec<Conversation>,
    pub events: Vec<(Uuid, Vec<Event>)>,
    pub threads: Vec<(Thread, Vec<Message>)>,
    pub sessions: Vec<Session>,
    pub drafts: Vec<(Uuid, Uuid, Metadata)>,
    pub agents: Vec<AgentRecord>,
    pub outbox: Vec<OutboxItem>,
    /// Answered SIP calls.
    pub dialogs: Vec<model::Dialog>,
}

/// The state machine, in named parts.
pub struct Core {
    policy: Arc<Policy>,
    /// Who works here: queues with their waiting work, agents, supervisors.
    org: Org,
    /// Who is logged in: sessions, their tokens and their sockets.
    auth: Auth,
    /// The work itself: conversations, timelines, customer threads, deliveries.
    work: Work,
    /// Every deadline. Keyed with a secretly keyed hasher: SIP contact strings from the
    /// network are part of binding timer keys, so colliding keys must not be choosable from
    /// outside.
    wheel: Wheel<Timer, KeyedBuildHasher>,
    ids: Ids,
    /// Alerts for supervisors and chats reserved for their previous agent.
    rescue: rescue::Rescue,
    /// What the current command and batch changed: writes, effects, what to notify.
    batch: Batch,
    counters: Counters,
    /// The SIP call proxy's transactions and calls.
    calls: calls::Calls,
}

/// Queues, agents and supervisors.
#[derive(Default)]
struct Org {
    queues: BTreeMap<String, QueueRt>,
    agents: BTreeMap<AgentId, AgentRt>,
    /// Supervisor id → name.
    supervisors: BTreeMap<String, String>,
}

/// Sessions and what opens them.
#[derive(Default)]
struct Auth {
    sessions: HashMap<Uuid, SessionRt>,
    tokens: HashMap<TokenHash, TokenOwner>,
    /// Panel socket → session.
    sockets: HashMap<u64, Uuid>,
}

/// Conversations, their timelines, customer threads and pending deliveries.
#[derive(Default)]
struct Work {
    conversations: HashMap<Uuid, Conversation>,
    timelines: HashMap<Uuid, Vec<Event>>,
    threads: HashMap<Uuid, ThreadRt>,
    /// Open sms/social threads by (medium, customer address).
    open_threads: HashMap<(Medium, String), Uuid>,
    outbox: HashMap<Uuid, OutboxItem>,
    /// The queue position each waiting web chat was last told, so a change elsewhere in the
    /// queue tells only the customers whose position moved.
    sent_positions: HashMap<Uuid, u32>,
}

/// Where new ids come from: the seeded generator and the last id made.
struct Ids {
    rng: StdRng,
    /// Millisecond and counter of the last id made (ids sort in creation order).
    last_id: (i64, u16),
    /// The latest queue arrival time handed out (Unix ms): arrivals never go backwards, even
    /// when the wall clock does, so a later conversation never overtakes an earlier one.
    last_arrival: i64,
}

/// The output of the current command and batch.
#[derive(Default)]
struct Batch {
    writes: Vec<Write>,
    effects: VecDeque<Effect>,
    /// Conversations changed by the current command, with the agents they belonged to before.
    touched: BTreeMap<Uuid, BTreeSet<AgentId>>,
    /// Conversations changed in the current batch (written at [`Core::take_writes`]).
    dirty_convs: BTreeSet<Uuid>,
    dirty_threads: BTreeSet<Uuid>,
    /// Agents changed by the current command (notified at its end).
    dirty_agents: BTreeSet<AgentId>,
    /// Agents changed in the current batch (written at [`Core::take_writes`]).
    batch_agents: BTreeSet<AgentId>,
    dirty_queues: BTreeSet<String>,
    /// Queues changed in the current batch: their Dashboard row and the positions of their
    /// waiting chats are sent once, at the end of the batch ([`Core::take_writes`]).
    batch_queues: BTreeSet<String>,
    /// Something changed that may allow a new offer.
    alloc_needed: bool,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("conversations", &self.work.conversations.len())
            .field("sessions", &self.auth.sessions.len())
            .field("timers", &self.wheel.len())
            .finish()
    }
}

/// How long a supervisor session lasts (supervisors have no grace period: their token
/// simply expires, and the Dashboard asks them to log in again).
pub const SUPERVISOR_SESSION: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

const SIP_LOST_TEXT: &str =
    "Your phone lost its SIP registration: calling is disabled until it registers again.";

impl Core {
    /// A core with no state yet; `seed` is its only source of randomness (ids, the timer
    /// hasher's keys): the driver draws it from the OS, tests fix it.
    pub fn new(policy: Arc<Policy>, seed: u64, now: Now) -> Core {
        let mut rng = StdRng::seed_from_u64(seed);
        let hasher = KeyedBuildHasher::new(rng.next_u64(), rng.next_u64());
        let mut core = Core {
            policy: policy.clone(),
            org: Org::default(),
            auth: Auth::default(),
            work: Work::default(),
            wheel: Wheel::with_hasher(now.mono, hasher),
            ids: Ids {
                rng,
                last_id: (i64::MIN, 0),
                last_arrival: i64::MIN,
            },
            rescue: rescue::Rescue::default(),
            batch: Batch::default(),
            counters: Counters::default(),
            calls: calls::Calls::default(),
        };
        core.apply_policy(&policy, now);
        core
    }

    /// Installs queues, agents and supervisors from the configuration (at start and on reload).
    /// Work in queues that no longer exist stays where it is until handled.
    pub fn apply_policy(&mut self, policy: &Arc<Policy>, now: Now) {
        self.policy = policy.clone();
        let mut queues = BTreeMap::new();
        for q in &policy.queues {
            let waiting = self
                .org
                .queues
                .remove(&q.id)
                .map(|old| old.waiting)
                .unwrap_or_default();
            queues.insert(
                q.id.clone(),
                QueueRt {
                    cfg: q.clone(),
                    waiting,
                    members: Vec::new(),
                    ready: BTreeSet::new(),
                },
            );
        }
        for (id, old) in std::mem::take(&mut self.org.queues) {
            if !old.waiting.is_empty() {
                // Keep a removed queue's waiting work visible until it is handled.
                queues.insert(id, old);
            }
        }
        // Agents no longer in the configuration take no new work.
        for rt in self.org.agents.values_mut() {
            rt.configured_queues = None;
            rt.capacity = crate::policy::Capacity {
                voice: 0,
                chat: 0,
                email: 0,
            };
        }
        for a in &policy.agents {
            for q in &a.queues {
                if let Some(rt) = queues.get_mut(q) {
                    rt.members.push(a.id.clone());
                }
            }
            let rt = self
                .org
                .agents
                .entry(a.id.clone())
                .or_insert_with(|| AgentRt {
                    rec: AgentRecord {
                        id: a.id.clone(),
                        presence: Presence::Ready,
                        idle_since: [now.ts(); 3],
                        bindings: Vec::new(),
                        sip_lost: false,
                    },
                    session: None,
                    assigned: BTreeSet::new(),
                    name: a.name.clone(),
                    capacity: a.capacity,
                    sent_caps: Capabilities::default(),
                    sent_banners: Vec::new(),
                    flaps: VecDeque::new(),
                    unstable: false,
                    configured_queues: None,
                    queues: Vec::new(),
                    indexed: [None; 3],
                });
            rt.name = a.name.clone();
            rt.configured_queues = Some(a.queues.clone());
            rt.capacity = a.capacity;
        }
        self.org.queues = queues;
        self.org.supervisors = policy
            .supervisors
            .iter()
            .map(|s| (s.id.clone(), s.name.clone()))
            .collect();
        self.rebuild_ready();
        self.batch.alloc_needed = true;
        self.finish_command(now);
    }

    /// Loads the stored state at boot and applies the restart rule (docs/sessions.md#restart):
    /// connected sessions become disconnected with a full grace period; stored deadlines are
    /// re-armed (one already past fires at the next [`Core::handle_timeout`]); calls are not
    /// dropped.
    pub fn restore(&mut self, state: Restored, now: Now) {
        for rec in state.agents {
            let Some(a) = self.org.agents.get_mut(&rec.id) else {
                continue;
            };
            let timers: Vec<_> = rec
                .bindings
                .iter()
                .map(|b| {
                    let timer = Timer::Binding(rec.id.clone(), b.contact.clone());
                    let longest = self.policy.limits.max_binding_expires;
                    (timer, now.deadline_within(b.expires_at, longest))
                })
                .collect();
            a.rec = rec;
            for (timer, at) in timers {
                self.arm(timer, at);
            }
        }
        for (thread, messages) in state.threads {
            if thread.open && matches!(thread.medium, Medium::Sms | Medium::Social) {
                self.work
                    .open_threads
                    .insert((thread.medium, thread.customer.address.clone()), thread.id);
            }
            if let Some(h) = thread.token_hash {
                self.auth.tokens.insert(h, TokenOwner::Thread(thread.id));
            }
            self.work.threads.insert(
                thread.id,
                ThreadRt {
                    rec: thread,
                    messages,
                    sent: (0, 0),
                },
            );
        }
        for (id, events) in state.events {
            self.work.timelines.insert(id, events);
        }
        for c in state.conversations {
            let id = c.id;
            self.ids.last_arrival = self
                .ids
                .last_arrival
                .max(c.queue_arrival_time.0)
                .max(c.queue_rank);
            // New ids sort after every stored one (they break ties in queue order), even
            // when the wall clock is now behind the one that made them.
            let id_ms = (id.as_u128() >> 80) as i64;
            if id_ms >= self.ids.last_id.0 {
                self.ids.last_id = (id_ms, 0x0FFF);
            }
            if c.status == Status::InQueue {
                if let Some(q) = self.org.queues.get_mut(&c.queue) {
                    q.waiting.insert((c.queue_rank, id));
                }
            }
            if let (Some(agent), true) = (&c.agent, c.status.is_assigned()) {
                if let Some(a) = self.org.agents.get_mut(agent) {
                    a.assigned.insert(id);
                }
            }
            if let (Status::Offered, Some(at)) = (c.status, c.offer_expires_at) {
                self.arm(Timer::Offer(id), now.deadline_at(at));
            }
            self.work.conversations.insert(id, c);
        }
        for mut s in state.sessions {
            match s.role {
                Role::Supervisor if !self.org.supervisors.contains_key(&s.user) => {
                    self.batch.writes.push(Write::SessionEnded {
                        id: s.id,
                        token_hash: s.token_hash,
                    });
                    continue;
                }
                Role::Supervisor => {
                    self.auth
                        .tokens
                        .insert(s.token_hash, TokenOwner::Session(s.id));
                    if let Some(d) = s.deadline {
                        let grace = self.policy.resilience.session_grace;
                        self.arm(Timer::Grace(s.id), now.deadline_within(d, grace));
                    }
                }
                Role::Agent if !self.org.agents.contains_key(&s.user) => {
                    // The agent was removed from the configuration: the session ends.
                    self.batch.writes.push(Write::SessionEnded {
                        id: s.id,
                        token_hash: s.token_hash,
                    });
                    continue;
                }
                Role::Agent => {
                    let deadline = match s.deadline {
                        Some(d) if s.state != SessionState::Connected => {
                            now.deadline_within(d, self.policy.resilience.session_grace)
                        }
                        _ => {
                            s.state = SessionState::Disconnected;
                            s.disconnected_at = Some(now.ts());
                            now.after(self.policy.resilience.session_grace)
                        }
                    };
                    let stored = self.arm(Timer::Grace(s.id), deadline);
                    if s.deadline != Some(stored) {
                        s.deadline = Some(stored);
                        self.batch.writes.push(Write::Session(Box::new(s.clone())));
                    }
                    self.auth
                        .tokens
                        .insert(s.token_hash, TokenOwner::Session(s.id));
                    if let Some(a) = self.org.agents.get_mut(&s.user) {
                        a.session = Some(s.id);
                    }
                }
            }
            self.auth.sessions.insert(
                s.id,
                SessionRt {
                    rec: s,
                    sockets: BTreeSet::new(),
                    drafts: BTreeMap::new(),
                    away_announced: false,
                },
            );
        }
        for (session, conv, draft) in state.drafts {
            if let Some(s) = self.auth.sessions.get_mut(&session) {
                s.drafts.insert(conv, draft);
            }
        }
        self.restore_dialogs(state.dialogs);
        for item in state.outbox {
            self.arm(
                Timer::Outbox(item.message_id),
                now.deadline_within(item.next_attempt_at, self.policy.outbound.max_backoff),
            );
            self.work.outbox.insert(item.message_id, item);
        }
        // Offers to agents who are not connected (all of them, right after a boot) go back.
        let offered: Vec<Uuid> = self
            .work
            .conversations
            .values()
            .filter(|c| c.status == Status::Offered)
            .map(|c| c.id)
            .collect();
        for id in offered {
            self.withdraw_offer(now, id, "server restarted");
        }
        self.rebuild_ready();
        self.batch.alloc_needed = true;
        self.finish_command(now);
    }

    /// Applies one command at `now`.
    pub fn handle(&mut self, now: Now, cmd: Command) -> Result<Reply, Rejection> {
        let mut result = self.dispatch(now, cmd);
        self.finish_command(now);
        // A reply shows the conversation as the whole command left it (allocation included).
        if let Ok(Reply::Conversation(v)) = &mut result {
            if let Some(c) = self.work.conversations.get(&v.id) {
                **v = self.conversation_view(c, true);
            }
        }
        result
    }

    fn dispatch(&mut self, now: Now, cmd: Command) -> Result<Reply, Rejection> {
        match cmd {
            Command::Login { user, role, token } => self.login(now, user, role, token),
            Command::Logout { token } => self.logout(now, &token),
            Command::Authenticate { token } => self.principal(&token, now).map(Reply::Principal),
            Command::AttachPanel { token, socket } => self.attach_panel(now, &token, socket),
            Command::DetachPanel { socket, cause } => {
                self.detach_panel(now, socket, cause);
                Ok(Reply::Done)
            }
            Command::Alerts { token } => self.alerts(&token, now),
            Command::Release { token, agent } => self.release(now, &token, &agent),
            Command::AgentState { token } => {
                let (agent, _) = self.agent_of(&token, now)?;
                Ok(Reply::Snapshot(Box::new(self.snapshot(&agent))))
            }
            Command::SetPresence { token, presence } => self.set_presence(now, &token, presence),
            Command::Accept {
                token,
                conversation,
            } => self.accept(now, &token, conversation),
            Command::Reject {
                token,
                conversation,
            } => self.reject(now, &token, conversation),
            Command::AgentMessage {
                token,
                conversation,
                text,
            } => self.agent_message(now, &token, conversation, text),
            Command::SaveDraft {
                token,
                conversation,
                draft,
            } => self.save_draft(now, &token, conversation, draft),
            Command::SaveMetadata {
                token,
                conversation,
                metadata,
            } => self.save_metadata(now, &token, conversation, metadata),
            Command::End {
                token,
                conversation,
            } => self.end(now, &token, conversation),
            Command::Complete {
                token,
                conversation,
            } => self.complete(now, &token, conversation),
            Command::Transfer {
                token,
                conversation,
                target,
            } => self.transfer(now, &token, conversation, target),
            Command::Consult {
                token,
                conversation,
                agent,
            } => self.consult(now, &token, conversation, agent),
            Command::Callback {
                token,
                conversation,
            } => self.callback(now, &token, conversation),
            Command::Reassign {
                token,
                conversation,
                target,
            } => self.reassign(now, &token, conversation, target),
            Command::QueueConversations { token, queue } => {
                self.queue_conversations(now, &token, &queue)
            }
            Command::Pick {
                token,
                queue,
                conversation,
            } => self.pick(now, &token, &queue, conversation),
            Command::Agents { token } => {
                self.supervisor_of(&token, now)?;
                Ok(Reply::Agents(self.agent_views()))
            }
            Command::Queues { token } => {
                self.supervisor_of(&token, now)?;
                Ok(Reply::Queues(self.queue_views()))
            }
            Command::StartChat {
                queue,
                name,
                text,
                token,
            } => self.start_chat(now, queue, name, text, token),
            Command::ChatState { token } | Command::AttachChat { token } => {
                let thread = self.thread_of(&token)?;
                Ok(Reply::Chat(Box::new(self.chat_snapshot(thread)?)))
            }
            Command::CustomerMessage { token, text } => self.customer_message(now, &token, text),
            Command::CustomerEnd { token } => self.customer_end(now, &token),
            Command::InboundMessage {
                medium,
                from,
                text,
                queue,
            } => self.inbound_message(now, medium, from, text, queue),
            Command::InboundEmail {
                from,
                subject,
                text,
                queue,
            } => self.inbound_email(now, from, subject, text, queue),
            Command::InboundCall { from, queue } => self.inbound_call(now, from, queue),
            Command::Hangup { conversation } => self.hangup(now, conversation),
            Command::SipRegister { agent, update } => self.sip_register(now, &agent, update),
            Command::Sip { from, message } => self.sip_message(now, from, *message),
            Command::SipListening { addr } => self.sip_listening(addr),
            Command::OutboxAttempt {
                message,
                delivered,
                error,
            } => self.outbox_attempt(now, message, delivered, error),
        }
    }

    /// Fires every deadline due at `now`.
    pub fn handle_timeout(&mut self, now: Now) {
        let mut due = Vec::new();
        self.wheel.expire(now.mono, &mut due);
        for (_, timer) in due {
            match timer {
                Timer::Grace(session) => self.grace_expired(now, session),
                Timer::Offer(conv) => self.offer_timed_out(now, conv),
                Timer::Binding(agent, contact) => self.binding_expired(now, &agent, &contact),
                Timer::Outbox(message) => self.outbox_due(now, message),
                Timer::Sip(tx, name) => self.sip_timer(now, tx, name),
                Timer::Prompt(session) => self.prompt_due(now, session),
                Timer::Sticky(conv) => self.sticky_expired(conv),
                Timer::Dial(conv) => self.dial_timed_out(now, conv),
            }
            self.finish_command(now);
        }
        self.finish_command(now);
    }

    /// The monotonic time at which [`Core::handle_timeout`] must next run.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.wheel.next_expiry()
    }

    /// The changes of the batch so far, to be written in one transaction. Closed work is
    /// released from memory here: once written, the store is its home.
    pub fn take_writes(&mut self) -> Vec<Write> {
        self.notify_queues();
        let mut writes = std::mem::take(&mut self.batch.writes);
        for id in std::mem::take(&mut self.batch.dirty_threads) {
            if let Some(t) = self.work.threads.get(&id) {
                writes.push(Write::Thread(Box::new(t.rec.clone())));
                if !t.rec.open {
                    // The chat is over: its token opens nothing any more.
                    if let Some(h) = t.rec.token_hash {
                        self.auth.tokens.remove(&h);
                    }
                    self.work.threads.remove(&id);
                    self.work.sent_positions.remove(&id);
                }
            }
        }
        for id in std::mem::take(&mut self.batch.dirty_convs) {
            if let Some(c) = self.work.conversations.get(&id) {
                writes.push(Write::Conversation(Box::new(c.clone())));
                if c.status.is_closed() {
                    self.work.conversations.remove(&id);
                    self.work.timelines.remove(&id);
                }
            }
        }
        for id in std::mem::take(&mut self.batch.batch_agents) {
            if let Some(a) = self.org.agents.get(&id) {
                writes.push(Write::Agent(Box::new(a.rec.clone())));
            }
        }
        self.shrink_emptied();
        writes
    }

    /// The next thing to tell subscribers (after the batch's writes are committed).
    pub fn poll_effect(&mut self) -> Option<Effect> {
        let effect = self.batch.effects.pop_front();
        if effect.is_none() && self.batch.effects.capacity() > EFFECT_ROOM_KEPT {
            // A storm's batch queues tens of thousands of effects: do not keep their room.
            self.batch.effects.shrink_to(EFFECT_ROOM_KEPT);
        }
        effect
    }

    /// A conversation the core holds in memory (open work and work closed in this batch).
    pub fn conversation(&self, id: &Uuid) -> Option<&Conversation> {
        self.work.conversations.get(id)
    }

    /// Every conversation the core holds in memory (open work and work closed in this batch).
    pub fn conversations(&self) -> impl Iterator<Item = &Conversation> {
        self.work.conversations.values()
    }

    /// Puts a closed conversation read back from the store into memory for one command
    /// that needs it (a callback of a handled call); released again at the next write-out.
    pub fn adopt_closed(&mut self, c: Conversation) {
        if c.status.is_closed() && !self.work.conversations.contains_key(&c.id) {
            self.batch.dirty_convs.insert(c.id);
            self.work.conversations.insert(c.id, c);
        }
    }

    /// The timeline of an open conversation.
    pub fn timeline(&self, id: &Uuid) -> &[Event] {
        self.work
            .timelines
            .get(id)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Arms `timer` for `at` (replacing an earlier arming of the same timer) and returns the
    /// wall-clock time to store: the one way a deadline is set.
    fn arm(&mut self, timer: Timer, at: Deadline) -> Timestamp {
        self.wheel.insert(at.mono, timer);
        at.wall
    }

    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// How many entries each map holds now.
    pub fn footprint(&self) -> Footprint {
        let (a, w) = (&self.auth, &self.work);
        Footprint {
            sessions: a.sessions.len(),
            tokens: a.tokens.len(),
            sockets: a.sockets.len(),
            conversations: w.conversations.len(),
            timelines: w.timelines.len(),
            threads: w.threads.len(),
            open_threads: w.open_threads.len(),
            outbox: w.outbox.len(),
            sent_positions: w.sent_positions.len(),
            alerts: self.rescue.len(),
            sticky: self.rescue.sticky.len(),
            timers: self.wheel.len(),
            capacity: a.sessions.capacity()
                + a.tokens.capacity()
                + a.sockets.capacity()
                + w.conversations.capacity()
                + w.timelines.capacity()
                + w.threads.capacity()
                + w.open_threads.capacity()
                + w.outbox.capacity()
                + w.sent_positions.capacity()
                + self.rescue.capacity(),
            effect_room: self.batch.effects.capacity(),
        }
    }

    /// Gives back the room of maps that emptied after a burst (a storm's conversations,
    /// sessions and tokens), so the high mark is not kept for the life of the process.
    fn shrink_emptied(&mut self) {
        let (a, w) = (&mut self.auth, &mut self.work);
        shrink_map(&mut a.sessions);
        shrink_map(&mut a.tokens);
        shrink_map(&mut a.sockets);
        shrink_map(&mut w.conversations);
        shrink_map(&mut w.timelines);
        shrink_map(&mut w.threads);
        shrink_map(&mut w.open_threads);
        shrink_map(&mut w.outbox);
        shrink_map(&mut w.sent_positions);
        self.rescue.shrink();
    }

    pub fn gauges(&self) -> Gauges {
        let mut g = Gauges::default();
        for s in self.auth.sessions.values() {
            match (s.rec.role, s.rec.state) {
                (Role::Supervisor, _) => g.supervisor_sessions += 1,
                (Role::Agent, SessionState::Connected) => g.sessions_connected += 1,
                (Role::Agent, SessionState::Disconnected) => g.sessions_disconnected += 1,
            }
        }
        for c in self.work.conversations.values() {
            *g.conversations.entry(c.status.as_str()).or_default() += 1;
        }
        for (id, q) in &self.org.queues {
            g.queue_waiting.insert(id.clone(), q.waiting.len() as u64);
        }
        for a in self.org.agents.values() {
            g.sip_bindings += a.rec.bindings.len() as u64;
            g.agents_registered += u64::from(!a.rec.bindings.is_empty());
        }
        g.timers = self.wheel.len() as u64;
        g.outbox_pending = self.work.outbox.len() as u64;
        (g.calls_waiting, g.calls_ringing, g.calls_talking) = self.calls.counts();
        g
    }

    // ----- shared helpers used by the submodules -----

    /// A UUID v7 that sorts after every id made before it (RFC 9562 §6.2 method 1: a 12-bit
    /// counter in `rand_a` orders ids of the same millisecond).
    /// The queue arrival time of a conversation arriving now: the wall clock, but never
    /// before an arrival already handed out.
    pub(super) fn arrival(&mut self, now: Now) -> Timestamp {
        let at = now.wall.max(self.ids.last_arrival);
        self.ids.last_arrival = at;
        Timestamp(at)
    }

    fn new_id(&mut self, now: Now) -> Uuid {
        let (last_ms, last_seq) = self.ids.last_id;
        let mut ms = now.wall.max(0).max(last_ms);
        let seq = if ms == last_ms {
            if last_seq >= 0x0FFF {
                ms += 1;
                0
            } else {
                last_seq + 1
            }
        } else {
            0
        };
        self.ids.last_id = (ms, seq);
        let mut bytes = [0u8; 10];
        self.ids.rng.fill_bytes(&mut bytes[2..]);
        bytes[0] = (seq >> 8) as u8 & 0x0F;
        bytes[1] = (seq & 0xFF) as u8;
        uuid::Builder::from_unix_timestamp_millis(ms as u64, &bytes).into_uuid()
    }

    /// Marks a conversation as about to change (call before mutating it).
    fn touch(&mut self, id: Uuid) {
        let agent = self
            .work
            .conversations
            .get(&id)
            .and_then(|c| c.agent.clone());
        let entry = self.batch.touched.entry(id).or_default();
        if let Some(a) = agent {
            entry.insert(a);
        }
        self.batch.dirty_convs.insert(id);
    }

    /// A message text, trimmed, non-empty and within `limits.max_message_chars`.
    fn message_text(&self, text: &str) -> Result<String, Rejection> {
        let text = text.trim();
        if text.is_empty() {
            return Err(Rejection::Invalid("text must not be empty".into()));
        }
        let max = self.policy.limits.max_message_chars;
        if text.chars().count() > max {
            return Err(Rejection::TooLarge(format!(
                "text is longer than {max} characters (limits.max_message_chars)"
            )));
        }
        Ok(text.to_string())
    }

    fn conv(&self, id: Uuid) -> Result<&Conversation, Rejection> {
        self.work
            .conversations
            .get(&id)
            .ok_or_else(|| Rejection::NotFound(format!("conversation {id} is not open")))
    }

    fn queue_cfg(&self, queue: &str) -> Option<&QueueConfig> {
        self.org.queues.get(queue).map(|q| &q.cfg)
    }

    /// Appends an event to a conversation's timeline.
    fn event(
        &mut self,
        now: Now,
        id: Uuid,
        kind: EventKind,
        agent: Option<&str>,
        detail: Option<String>,
    ) {
        let Some(c) = self.work.conversations.get_mut(&id) else {
            return;
        };
        let event = Event {
            at: now.ts(),
            event: kind,
            agent: agent.map(String::from),
            detail,
        };
        let seq = c.event_count;
        c.event_count += 1;
        self.batch.dirty_convs.insert(id);
        self.work
            .timelines
            .entry(id)
            .or_default()
            .push(event.clone());
        self.batch.writes.push(Write::Event {
            conversation: id,
            seq,
            event,
        });
    }

    /// Sets (or clears) the agent of a conversation, keeping the per-agent index in step.
    fn set_agent(&mut self, id: Uuid, agent: Option<AgentId>) {
        self.touch(id);
        let Some(c) = self.work.conversations.get_mut(&id) else {
            return;
        };
        if let Some(old) = c.agent.take() {
            if let Some(a) = self.org.agents.get_mut(&old) {
                a.assigned.remove(&id);
                self.batch.dirty_agents.insert(old.clone());
            }
            self.batch.alloc_needed = true;
        }
        if let Some(new) = agent {
            if let Some(a) = self.org.agents.get_mut(&new) {
                a.assigned.insert(id);
            }
            self.batch.dirty_agents.insert(new.clone());
            c.last_agent = Some(new.clone());
            c.agent = Some(new);
        }
    }

    /// Sets a conversation's status, keeping the agent index in step with "assigned".
    fn set_status(&mut self, id: Uuid, status: Status) {
        self.touch(id);
        let Some(c) = self.work.conversations.get_mut(&id) else {
            return;
        };
        c.status = status;
        if status != Status::Offered {
            c.offer_expires_at = None;
            self.wheel.cancel(&Timer::Offer(id));
        }
        if let Some(agent) = c.agent.clone() {
            if !status.is_assigned() {
                if let Some(a) = self.org.agents.get_mut(&agent) {
                    a.assigned.remove(&id);
                }
                self.batch.dirty_agents.insert(agent);
                self.batch.alloc_needed = true;
            }
        }
    }

    /// Ends a conversation's live part: status, `ended_at`, party and reason.
    fn close_segment(&mut self, now: Now, id: Uuid, status: Status, reason: DisconnectReason) {
        self.close_segment_at(now.ts(), id, status, reason);
    }

    fn close_segment_at(
        &mut self,
        at: Timestamp,
        id: Uuid,
        status: Status,
        reason: DisconnectReason,
    ) {
        self.set_status(id, status);
        if let Some(c) = self.work.conversations.get_mut(&id) {
            c.ended_at = Some(at);
            c.disconnect_party = Some(reason.party());
            c.disconnect_reason = Some(reason);
        }
        if status.is_closed() {
            self.release_closed(id);
        }
    }

    /// A conversation reached `handled` or `abandoned`: it leaves the agent.
    fn release_closed(&mut self, id: Uuid) {
        let agent = self
            .work
            .conversations
            .get(&id)
            .and_then(|c| c.agent.clone());
        if let Some(agent) = agent {
            if let Some(a) = self.org.agents.get_mut(&agent) {
                a.assigned.remove(&id);
            }
            if let Some(s) = self.org.agents.get(&agent).and_then(|a| a.session) {
                self.drop_draft(s, id);
            }
            self.batch.dirty_agents.insert(agent);
        }
        self.batch.alloc_needed = true;
    }

    fn drop_draft(&mut self, session: Uuid, conv: Uuid) {
        if let Some(s) = self.auth.sessions.get_mut(&session) {
            if s.drafts.remove(&conv).is_some() {
                self.batch.writes.push(Write::Draft {
                    session,
                    conversation: conv,
                    draft: None,
                });
            }
        }
    }

    /// The conversations offered to or held by `agent`.
    fn held_by(&self, agent: &str) -> Vec<Uuid> {
        self.org
            .agents
            .get(agent)
            .map(|a| a.assigned.iter().copied().collect())
            .unwrap_or_default()
    }

    /// A call in process ends because the agent's side went away: wrap-up, blamed on the agent.
    fn drop_call(&mut self, now: Now, id: Uuid, agent: &str, reason: DisconnectReason) {
        self.counters.calls_dropped += 1;
        self.close_segment(now, id, Status::WrapUp, reason);
        let why = match reason {
            DisconnectReason::SipRegistrationLost => "call dropped: SIP registration lost",
            _ => "call dropped: agent connection lost",
        };
        self.event(now, id, EventKind::Ended, Some(agent), Some(why.into()));
    }

    /// Number of conversations on `channel` offered to or held by `agent`.
    fn load(&self, agent: &AgentRt, channel: Channel) -> u32 {
        agent
            .assigned
            .iter()
            .filter_map(|id| self.work.conversations.get(id))
            .filter(|c| c.channel() == channel && c.status.is_assigned())
            .count() as u32
    }

    fn capacity(&self, agent: &str, channel: Channel) -> u32 {
        self.org
            .agents
            .get(agent)
            .map(|a| a.capacity.for_channel(channel))
            .unwrap_or(0)
    }

    fn agent_name(&self, agent: &str) -> String {
        self.org
            .agents
            .get(agent)
            .map(|a| a.name.clone())
            .unwrap_or_else(|| agent.to_string())
    }

    fn session_connected(&self, agent: &AgentRt) -> bool {
        agent
            .session
            .and_then(|s| self.auth.sessions.get(&s))
            .is_some_and(|s| s.rec.state == SessionState::Connected)
    }

    fn capabilities(&self, agent: &AgentRt) -> Capabilities {
        let connected = self.session_connected(agent);
        Capabilities {
            voice: connected && !agent.rec.bindings.is_empty(),
            chat: connected,
            email: connected,
        }
    }

    fn banners(&self, agent: &AgentRt) -> Vec<Banner> {
        let mut banners = Vec::new();
        if agent.rec.sip_lost {
            banners.push(Banner {
                code: "sip_registration_lost".into(),
                text: SIP_LOST_TEXT.into(),
            });
        }
        if agent.unstable {
            banners.push(Banner {
                code: "connection_unstable".into(),
                text: rescue::UNSTABLE_TEXT.into(),
            });
        }
        banners
    }

    /// End of a command: allocate, then turn what changed into notifications.
    fn finish_command(&mut self, now: Now) {
        let changed: Vec<AgentId> = self.batch.dirty_agents.iter().cloned().collect();
        for agent in &changed {
            self.reindex(agent);
        }
        if self.batch.alloc_needed {
            self.batch.alloc_needed = false;
            self.allocate(now);
        }
        self.sync_calls(now);
        if self.batch.alloc_needed {
            self.batch.alloc_needed = false;
            self.allocate(now);
            self.sync_calls(now);
        }
        self.settle_alerts();
        self.notify_touched();
        #[cfg(debug_assertions)]
        self.check_ready_index();
    }

    fn notify_touched(&mut self) {
        let touched = std::mem::take(&mut self.batch.touched);
        let mut threads = BTreeSet::new();
        for (id, mut agents) in touched {
            let Some(c) = self.work.conversations.get(&id) else {
                continue;
            };
            if let Some(a) = &c.agent {
                agents.insert(a.clone());
            }
            if let Some(t) = c.thread {
                threads.insert(t);
            }
            self.batch.dirty_queues.insert(c.queue.clone());
            let view = self.conversation_view(c, true);
            for agent in agents {
                self.batch.effects.push_back(Effect::Panel {
                    agent,
                    event: view::PanelEvent::Conversation {
                        conversation: Box::new(view.clone()),
                    },
                });
            }
            let mut plain = view;
            plain.messages = None;
            self.batch
                .effects
                .push_back(Effect::Dashboard(view::DashboardEvent::Conversation {
                    conversation: Box::new(plain),
                }));
        }
        // Queue rows and positions are told once per batch (`notify_queues`).
        let queues = std::mem::take(&mut self.batch.dirty_queues);
        self.batch.batch_queues.extend(queues);
        for t in threads {
            // A chat waiting in a queue learns its status and position with the queue's
            // positions at the end of the batch.
            self.work.sent_positions.remove(&t);
            let waiting_in = self
                .work
                .threads
                .get(&t)
                .and_then(|th| self.work.conversations.get(&th.rec.current))
                .filter(|c| c.status == Status::InQueue)
                .map(|c| c.queue.clone());
            if let Some(q) = waiting_in {
                self.batch.batch_queues.insert(q);
                continue;
            }
            if let Some((status, position, agent_name)) = self.thread_status(t) {
                self.batch.effects.push_back(Effect::Chat {
                    thread: t,
                    event: view::ChatEvent::Status {
                        status,
                        position,
                        agent_name,
                    },
                });
            }
            if self.work.threads.get(&t).is_some_and(|th| !th.rec.open) {
                // The chat is over: its sockets close after the final status frame.
                self.batch
                    .effects
                    .push_back(Effect::CloseChat { thread: t });
            }
        }
        let agents = std::mem::take(&mut self.batch.dirty_agents);
        self.batch.batch_agents.extend(agents.iter().cloned());
        for id in agents {
            let Some(a) = self.org.agents.get(&id) else {
                continue;
            };
            let caps = self.capabilities(a);
            let banners = self.banners(a);
            let av = self.agent_view(a);
            let caps_changed = caps != a.sent_caps;
            let banners_changed = banners != a.sent_banners;
            if caps_changed {
                self.batch.effects.push_back(Effect::Panel {
                    agent: id.clone(),
                    event: view::PanelEvent::Capabilities { capabilities: caps },
                });
            }
            if banners_changed {
                self.batch.effects.push_back(Effect::Panel {
                    agent: id.clone(),
                    event: view::PanelEvent::Banners {
                        banners: banners.clone(),
                    },
                });
            }
            self.batch
                .effects
                .push_back(Effect::Dashboard(view::DashboardEvent::Agent {
                    agent: Box::new(av),
                }));
            if let Some(a) = self.org.agents.get_mut(&id) {
                a.sent_caps = caps;
                a.sent_banners = banners;
            }
        }
    }

    /// End of a batch: each changed queue's Dashboard row, and the new position of every web
    /// chat waiting in it whose position moved — one ordered pass per queue and batch.
    fn notify_queues(&mut self) {
        for q in std::mem::take(&mut self.batch.batch_queues) {
            let Some(rt) = self.org.queues.get(&q) else {
                continue;
            };
            let mut moved = Vec::new();
            for (i, (_, id)) in rt.waiting.iter().enumerate() {
                let Some(t) = self.work.conversations.get(id).and_then(|c| c.thread) else {
                    continue;
                };
                let position = i as u32 + 1;
                let current = self
                    .work
                    .threads
                    .get(&t)
                    .is_some_and(|th| th.rec.current == *id);
                if current && self.work.sent_positions.get(&t) != Some(&position) {
                    moved.push((t, position));
                }
            }
            let qv = self.queue_view(rt);
            self.batch
                .effects
                .push_back(Effect::Dashboard(view::DashboardEvent::Queue { queue: qv }));
            for (t, position) in moved {
                self.work.sent_positions.insert(t, position);
                self.batch.effects.push_back(Effect::Chat {
                    thread: t,
                    event: view::ChatEvent::Status {
                        status: Status::InQueue,
                        position: Some(position),
                        agent_name: None,
                    },
                });
            }
        }
    }
}
