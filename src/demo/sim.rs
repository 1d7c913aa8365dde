//! Demo layer: the simulation. Customers arrive on every medium (callers through the
//! simulated trunk, as real SIP calls); simulated agents log in, keep a panel attached,
//! accept offers (calls by answering on their phone), chat, type notes, end and complete
//! their work; one of them loses its connection now and then. Everything goes through the
//! driver [`Handle`] exactly as the HTTP adapter would, and all pacing is tokio timers
//! measured on the driver's clock (so a paused tokio clock runs the whole story at full
//! speed).

use super::dial::Placed;
use super::phone::{self, Habits, Link, Phone, PhoneCmd};
use super::sink::Delivered;
use super::text::{self, Person, Topic};
use crate::config::Channel;
use crate::core::model::{
    DisconnectReason, Medium, Metadata, Presence, Role, Sender, Status, TokenHash,
};
use crate::core::view::{AgentSnapshot, ConversationView};
use crate::core::{Command, LossCause, Rejection, Reply};
use crate::driver::{CallError, FrameRx, Handle, Outgoing};
use crate::http::extract::{new_token, token_hash};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use uuid::Uuid;

/// The queues of the built-in configuration.
pub(crate) const WEBCHAT_QUEUE: &str = "support";
pub(crate) const MESSAGING_QUEUE: &str = "messaging";
pub(crate) const VOICE_QUEUE: &str = "phones";
pub(crate) const EMAIL_QUEUE: &str = "mail";

/// A simulated agent of the built-in configuration.
#[derive(Debug, Clone)]
pub(crate) struct AgentPlan {
    pub id: String,
    pub name: String,
    pub sip_password: String,
    /// Loses its panel connection now and then, and its phone's registration.
    pub flaky: bool,
    /// Goes `not_ready` for a break now and then.
    pub takes_breaks: bool,
}

/// What the simulation needs from the demo.
pub(crate) struct Setup {
    pub handle: Handle,
    pub sip: Option<SocketAddr>,
    /// The simulated trunk: each customer's call is placed through it.
    pub trunk: mpsc::UnboundedSender<Placed>,
    pub agents: Vec<AgentPlan>,
    pub seed: u64,
    /// `resilience.session_grace`.
    pub grace: Duration,
    pub delivered: mpsc::UnboundedReceiver<Delivered>,
}

/// The simulation stopped (shutdown, or the server went away).
#[derive(Debug)]
struct Stopped;

/// What every simulated party shares.
#[derive(Clone)]
struct Ctx {
    handle: Handle,
    grace: Duration,
    stop: watch::Receiver<bool>,
    customers: Arc<AtomicU64>,
    trunk: mpsc::UnboundedSender<Placed>,
}

impl Ctx {
    /// The driver's monotonic clock, in milliseconds.
    fn now(&self) -> u64 {
        self.handle.now().mono
    }

    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sleeps; `false` when the simulation stopped meanwhile.
    async fn sleep(&self, d: Duration) -> bool {
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = stop.wait_for(|s| *s) => false,
            _ = tokio::time::sleep(d) => true,
        }
    }

    /// Sleeps until the driver's clock reads `at` (or forever for `None`).
    async fn until(&self, at: Option<u64>) {
        match at {
            Some(at) => tokio::time::sleep_until(self.handle.clock.instant_at(at)).await,
            None => std::future::pending().await,
        }
    }

    async fn call(&self, cmd: Command) -> Result<Result<Reply, Rejection>, Stopped> {
        match self.handle.call(cmd).await {
            Ok(r) => Ok(Ok(r)),
            Err(CallError::Rejected(r)) => Ok(Err(r)),
            Err(CallError::Unavailable) => Err(Stopped),
        }
    }

    /// The status of an open conversation (`None` once it is closed).
    async fn status_of(&self, id: Uuid) -> Option<Status> {
        self.handle
            .inspect(move |core| core.conversation(&id).map(|c| c.status))
            .await
            .ok()
            .flatten()
    }

    fn next_customer(&self) -> u64 {
        self.customers.fetch_add(1, Ordering::Relaxed)
    }
}

/// How long a customer stays silent before a simulated agent closes their chat.
const QUIET_BEFORE_END: Duration = Duration::from_secs(40);
/// A simulated agent closes a chat after this long even if the customer keeps writing.
const LONGEST_CHAT: Duration = Duration::from_secs(15 * 60);

/// A random duration between `lo` and `hi` seconds, in milliseconds.
fn random_ms(rng: &mut StdRng, lo: u64, hi: u64) -> u64 {
    rng.gen_range(lo * 1000..=hi * 1000)
}

/// Runs the simulation until `stop` turns true.
pub(crate) async fn run(setup: Setup, stop: watch::Receiver<bool>) {
    let ctx = Ctx {
        handle: setup.handle,
        grace: setup.grace,
        stop: stop.clone(),
        customers: Arc::new(AtomicU64::new(1)),
        trunk: setup.trunk,
    };
    let mut rng = StdRng::seed_from_u64(setup.seed);
    let mut tasks = JoinSet::new();
    let (flaky, steady): (Vec<_>, Vec<_>) = setup.agents.into_iter().partition(|a| a.flaky);
    // The flaky agent starts first: being idle longest, it is offered the first chat and the
    // first call, so its first connection loss (about ten seconds in) catches both.
    for plan in flaky {
        let ready = start_agent(&ctx, &mut tasks, plan, setup.sip, rng.r#gen());
        let _ = ready.await;
    }
    if !ctx.sleep(Duration::from_millis(500)).await {
        return;
    }
    let readies: Vec<_> = steady
        .into_iter()
        .map(|plan| start_agent(&ctx, &mut tasks, plan, setup.sip, rng.r#gen()))
        .collect();
    for r in readies {
        let _ = r.await;
    }
    let (new_tx, new_rx) = mpsc::unbounded_channel();
    // Per stream: the first arrival (ms), the pace while someone waits (s), and how much work
    // of the stream's channel may wait at once; with nothing waiting, the next customer comes
    // within a few seconds.
    let streams = [
        (Stream::Voice, 1000, (20, 40), 1),
        (Stream::Webchat, 1500, (15, 35), 1),
        (Stream::Sms, 2000, (20, 45), 1),
        (Stream::Social, 2500, (30, 60), 1),
        (Stream::Email, 3000, (30, 60), 2),
    ];
    for (stream, first_ms, every, max_waiting) in streams {
        tasks.spawn(arrivals(
            ctx.clone(),
            StdRng::seed_from_u64(rng.r#gen()),
            Pace {
                stream,
                first: Duration::from_millis(first_ms),
                every,
                max_waiting,
            },
            new_tx.clone(),
        ));
    }
    tasks.spawn(messaging_customers(
        ctx.clone(),
        StdRng::seed_from_u64(rng.r#gen()),
        new_rx,
        setup.delivered,
    ));
    let mut stop = stop;
    let _ = stop.wait_for(|s| *s).await;
    tasks.shutdown().await;
}

/// Starts an agent's phone and the agent; the receiver fires once it is logged in with a
/// panel attached and its phone has tried to register.
fn start_agent(
    ctx: &Ctx,
    tasks: &mut JoinSet<()>,
    plan: AgentPlan,
    sip: Option<SocketAddr>,
    seed: u64,
) -> oneshot::Receiver<()> {
    let (ready_tx, ready_rx) = oneshot::channel();
    let (online_tx, online_rx) = watch::channel(true);
    let ctx2 = ctx.clone();
    tasks.spawn(async move {
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        let habits = Habits {
            always_answers: plan.flaky,
        };
        let phone_ready = match sip {
            Some(server) => match Phone::bind(&plan.id, &plan.sip_password, server).await {
                Ok(p) => {
                    let (tx, rx) = oneshot::channel();
                    let link = Link {
                        online: online_rx,
                        commands: commands_rx,
                        stop: ctx2.stop.clone(),
                        ready: Some(tx),
                    };
                    let clock = ctx2.handle.clock.clone();
                    tokio::spawn(phone::run(p, clock, seed ^ 0x5eed, habits, link));
                    Some(rx)
                }
                Err(e) => {
                    tracing::warn!(agent = %plan.id, error = %e, "demo phone could not bind");
                    None
                }
            },
            None => None,
        };
        let phone = phone_ready.is_some().then_some(commands_tx);
        if let Some(rx) = phone_ready {
            let _ = rx.await;
        }
        let mut agent = Agent::new(ctx2, plan, seed, online_tx, phone);
        let _ = agent.run(ready_tx).await;
    });
    ready_rx
}

// ---------------------------------------------------------------------------------------------
// Agents

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Accept(Uuid),
    Reply(Uuid),
    Draft(Uuid),
    End(Uuid),
    Save(Uuid),
    Complete(Uuid),
    Callback(Uuid),
    /// The flaky agent's next connection loss, waited for since `since` (ms).
    MaybeLoseConnection {
        since: u64,
    },
    /// Back within the grace period: the same token attaches a new panel.
    Return,
    /// Back after the session was lost: a new login.
    Relogin,
    /// The grace period of an `Away` episode ends (narration only: the server acts).
    GraceOver,
    PhoneOff,
    PhoneOn,
    Break,
    BackToWork,
    /// Ready again after a call rang out unanswered made the agent `not_ready`.
    ReadyAgain,
}

impl Action {
    fn conversation(self) -> Option<Uuid> {
        match self {
            Action::Accept(id)
            | Action::Reply(id)
            | Action::Draft(id)
            | Action::End(id)
            | Action::Save(id)
            | Action::Complete(id)
            | Action::Callback(id) => Some(id),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Episode {
    /// Comes back within the grace period.
    Short,
    /// Stays away past the grace period: the session is lost.
    Away,
}

/// An agent's view of one conversation it holds.
#[derive(Debug)]
struct Work {
    medium: Medium,
    status: Status,
    customer: String,
    topic: &'static Topic,
    greeted: bool,
    answers: usize,
    memo_parts: usize,
    accept_scheduled: bool,
    started: bool,
    wrap_scheduled: bool,
    reply_scheduled: bool,
    /// The call dropped with the agent's connection (a callback candidate).
    dropped: bool,
    callback: bool,
    /// When the agent took it, and when the customer last wrote (driver ms).
    taken_at: u64,
    customer_wrote_at: u64,
    /// The customer wrote since the agent's last answer.
    unanswered: bool,
    /// Short answers given after the topic's own.
    more: usize,
}

impl Work {
    fn new(seen: &Seen, topic: &'static Topic, now: u64) -> Work {
        Work {
            medium: seen.medium,
            status: seen.status,
            customer: seen.customer.clone(),
            topic,
            greeted: false,
            answers: 0,
            memo_parts: 0,
            accept_scheduled: false,
            started: false,
            wrap_scheduled: false,
            reply_scheduled: false,
            dropped: false,
            callback: false,
            taken_at: now,
            customer_wrote_at: now,
            unanswered: true,
            more: 0,
        }
    }

    fn is_chat(&self) -> bool {
        matches!(self.medium, Medium::Webchat | Medium::Sms | Medium::Social)
    }

    fn memo(&self) -> String {
        if self.callback {
            return text::CALLBACK_MEMO.to_string();
        }
        let parts = if self.medium == Medium::Voice {
            text::CALL_MEMO
        } else {
            self.topic.memo
        };
        parts.iter().take(self.memo_parts.max(1)).copied().collect()
    }

    fn metadata(&self, done: bool) -> Metadata {
        let mut script = BTreeMap::new();
        if self.medium != Medium::Voice {
            script.insert("reason".to_string(), self.topic.reason.to_string());
        }
        if done {
            script.insert(
                "outcome".to_string(),
                if self.dropped {
                    "follow-up"
                } else {
                    "resolved"
                }
                .to_string(),
            );
        }
        Metadata {
            script,
            memo: self.memo(),
        }
    }
}

/// A conversation as seen in a panel frame, a snapshot or a reply.
struct Seen {
    id: Uuid,
    status: Status,
    agent: Option<String>,
    medium: Medium,
    customer: String,
    dropped: bool,
    /// The customer's latest words, when the frame carries the transcript.
    said: Option<String>,
}

fn medium_of(s: &str) -> Option<Medium> {
    Some(match s {
        "voice" => Medium::Voice,
        "email" => Medium::Email,
        "webchat" => Medium::Webchat,
        "sms" => Medium::Sms,
        "social" => Medium::Social,
        _ => return None,
    })
}

impl Seen {
    fn of_view(v: &ConversationView) -> Option<Seen> {
        Some(Seen {
            id: v.id,
            status: v.status,
            agent: v.agent.clone(),
            medium: medium_of(v.medium)?,
            customer: v.customer.name.clone(),
            dropped: v.disconnect_reason == Some(DisconnectReason::AgentConnectionLost),
            said: v.messages.as_ref().and_then(|m| {
                m.iter()
                    .rev()
                    .find(|m| m.from == Sender::Customer)
                    .map(|m| m.text.clone())
            }),
        })
    }

    fn of_json(v: &Value) -> Option<Seen> {
        Some(Seen {
            id: v.get("id")?.as_str()?.parse().ok()?,
            status: Status::parse(v.get("status")?.as_str()?)?,
            agent: v.get("agent").and_then(Value::as_str).map(str::to_string),
            medium: medium_of(v.get("medium")?.as_str()?)?,
            customer: v
                .pointer("/customer/name")
                .and_then(Value::as_str)
                .unwrap_or("there")
                .to_string(),
            dropped: v.get("disconnect_reason").and_then(Value::as_str)
                == Some("AgentConnectionLost"),
            said: v
                .get("messages")
                .and_then(Value::as_array)
                .and_then(|m| {
                    m.iter()
                        .rev()
                        .find(|m| m.get("from").and_then(Value::as_str) == Some("customer"))
                })
                .and_then(|m| m.get("text"))
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }
}

enum Wake {
    Stop,
    Frame(Option<Outgoing>),
    Timer,
}

struct Agent {
    ctx: Ctx,
    plan: AgentPlan,
    first_name: String,
    rng: StdRng,
    token: Option<TokenHash>,
    panel: Option<(u64, FrameRx)>,
    work: HashMap<Uuid, Work>,
    timers: BTreeMap<(u64, u64), Action>,
    seq: u64,
    phone_online: watch::Sender<bool>,
    /// The agent's phone, which answers their calls.
    phone: Option<mpsc::UnboundedSender<PhoneCmd>>,
    offline: Option<Episode>,
    episodes: u32,
    relogin_scheduled: bool,
    /// Not ready by choice (a break), not because a call rang out.
    on_break: bool,
    ready_again_scheduled: bool,
}

impl Agent {
    fn new(
        ctx: Ctx,
        plan: AgentPlan,
        seed: u64,
        phone_online: watch::Sender<bool>,
        phone: Option<mpsc::UnboundedSender<PhoneCmd>>,
    ) -> Agent {
        let first_name = plan
            .name
            .split_whitespace()
            .next()
            .unwrap_or(&plan.id)
            .to_string();
        Agent {
            ctx,
            plan,
            first_name,
            rng: StdRng::seed_from_u64(seed),
            token: None,
            panel: None,
            work: HashMap::new(),
            timers: BTreeMap::new(),
            seq: 0,
            phone_online,
            phone,
            offline: None,
            episodes: 0,
            relogin_scheduled: false,
            on_break: false,
            ready_again_scheduled: false,
        }
    }

    fn at(&mut self, delay_ms: u64, action: Action) {
        self.seq += 1;
        let at = self.ctx.now() + delay_ms;
        self.timers.insert((at, self.seq), action);
    }

    fn after(&mut self, lo: u64, hi: u64, action: Action) {
        let d = random_ms(&mut self.rng, lo, hi);
        self.at(d, action);
    }

    async fn run(&mut self, ready: oneshot::Sender<()>) -> Result<(), Stopped> {
        let logged_in = self.login().await?;
        let _ = ready.send(());
        if !logged_in {
            tracing::warn!(agent = %self.plan.id, "demo agent could not log in");
            return Ok(());
        }
        if self.plan.flaky {
            let now = self.ctx.now();
            self.at(8_000, Action::MaybeLoseConnection { since: now });
            self.after(150, 200, Action::PhoneOff);
        }
        if self.plan.takes_breaks {
            self.after(200, 300, Action::Break);
        }
        loop {
            let next = self.timers.first_key_value().map(|((at, _), _)| *at);
            let wake = {
                let ctx = &self.ctx;
                let panel = &mut self.panel;
                let mut stop = ctx.stop.clone();
                let frame = async {
                    match panel.as_mut() {
                        Some((_, rx)) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => Wake::Stop,
                    f = frame => Wake::Frame(f),
                    _ = ctx.until(next) => Wake::Timer,
                }
            };
            match wake {
                Wake::Stop => return Ok(()),
                Wake::Frame(f) => self.on_frame(f).await?,
                Wake::Timer => {
                    if let Some((_, action)) = self.timers.pop_first() {
                        self.act(action).await?;
                    }
                }
            }
        }
    }

    // ----- session -----

    async fn login(&mut self) -> Result<bool, Stopped> {
        let token = token_hash(&new_token());
        let cmd = Command::Login {
            user: self.plan.id.clone(),
            role: Role::Agent,
            token,
        };
        match self.ctx.call(cmd).await? {
            Ok(_) => {
                self.token = Some(token);
                self.attach().await
            }
            Err(e) => {
                tracing::debug!(agent = %self.plan.id, error = %e, "demo login refused");
                Ok(false)
            }
        }
    }

    async fn attach(&mut self) -> Result<bool, Stopped> {
        let Some(token) = self.token else {
            return Ok(false);
        };
        match self.ctx.handle.attach_panel(token).await {
            Ok((socket, snapshot, rx)) => {
                self.panel = Some((socket, rx));
                self.reconcile(&snapshot);
                Ok(true)
            }
            Err(CallError::Rejected(_)) => {
                self.token = None;
                Ok(false)
            }
            Err(CallError::Unavailable) => Err(Stopped),
        }
    }

    async fn detach(&mut self) {
        if let Some((socket, _)) = self.panel.take() {
            self.ctx.handle.detach(socket, LossCause::Dropped).await;
        }
    }

    fn reconcile(&mut self, snapshot: &AgentSnapshot) {
        let ids: HashSet<Uuid> = snapshot.conversations.iter().map(|c| c.id).collect();
        self.work.retain(|id, _| ids.contains(id));
        for c in &snapshot.conversations {
            if let Some(seen) = Seen::of_view(c) {
                self.track(seen);
            }
        }
    }

    fn schedule_relogin(&mut self, lo: u64, hi: u64) {
        if !self.relogin_scheduled {
            self.relogin_scheduled = true;
            self.after(lo, hi, Action::Relogin);
        }
    }

    // ----- panel frames -----

    async fn on_frame(&mut self, frame: Option<Outgoing>) -> Result<(), Stopped> {
        match frame {
            // The driver dropped this socket (too slow): attach again, as a panel would.
            None => {
                self.detach().await;
                if !self.attach().await? && self.offline.is_none() {
                    self.schedule_relogin(2, 5);
                }
            }
            Some(Outgoing::Close(code, _)) => {
                self.detach().await;
                match code {
                    1001 => return Err(Stopped),
                    _ => {
                        // Session ended or taken over: log in again shortly.
                        self.token = None;
                        if self.offline.is_none() {
                            self.schedule_relogin(5, 10);
                        }
                    }
                }
            }
            Some(Outgoing::Text(t)) => {
                let Ok(v) = serde_json::from_str::<Value>(&t) else {
                    return Ok(());
                };
                match v.get("type").and_then(Value::as_str) {
                    Some("conversation") => {
                        if let Some(seen) = v.get("conversation").and_then(Seen::of_json) {
                            self.track(seen);
                        }
                    }
                    Some("message") => {
                        let id = v
                            .get("conversation_id")
                            .and_then(Value::as_str)
                            .and_then(|s| s.parse::<Uuid>().ok());
                        let from_customer =
                            v.pointer("/message/from").and_then(Value::as_str) == Some("customer");
                        let said = v.pointer("/message/text").and_then(Value::as_str);
                        if let (Some(id), true) = (id, from_customer) {
                            self.customer_wrote(id, said.unwrap_or(""));
                        }
                    }
                    // A call that rang out unanswered made the agent not ready
                    // (`not_ready_after_no_response`): they notice and get ready again.
                    Some("presence")
                        if v.get("presence").and_then(Value::as_str) == Some("not_ready")
                            && !self.on_break
                            && !self.ready_again_scheduled =>
                    {
                        self.ready_again_scheduled = true;
                        tracing::info!(agent = %self.plan.id,
                            "demo: {} let a call ring out and is set not ready; ready again in a moment",
                            self.first_name);
                        self.after(8, 15, Action::ReadyAgain);
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Keeps the local view of a conversation and schedules what the agent does next.
    fn track(&mut self, seen: Seen) {
        let mine = seen.agent.as_deref() == Some(self.plan.id.as_str());
        if !mine || seen.status.is_closed() || seen.status == Status::InQueue {
            self.work.remove(&seen.id);
            return;
        }
        // The agent answers what the customer asked about (anything else gets general help).
        let topic = seen
            .said
            .as_deref()
            .and_then(text::topic_for)
            .unwrap_or(&text::GENERAL);
        let id = seen.id;
        let now = self.ctx.now();
        let w = self
            .work
            .entry(id)
            .or_insert_with(|| Work::new(&seen, topic, now));
        w.status = seen.status;
        w.dropped |= seen.dropped;
        let mut next: Vec<(u64, u64, Action)> = Vec::new();
        match seen.status {
            // A call is answered on the phone, which rings by itself.
            Status::Offered if w.medium == Medium::Voice => {}
            Status::Offered if !w.accept_scheduled => {
                w.accept_scheduled = true;
                next.push((1, 4, Action::Accept(id)));
            }
            Status::InProcess if !w.started => {
                w.started = true;
                match w.medium {
                    Medium::Webchat | Medium::Sms | Medium::Social => {
                        w.reply_scheduled = true;
                        next.push((2, 5, Action::Reply(id)));
                        next.push((8, 15, Action::Draft(id)));
                        // Ends once the customer has gone quiet (see `end`).
                        next.push((60, 120, Action::End(id)));
                    }
                    Medium::Voice if w.callback => {
                        next.push((5, 10, Action::Draft(id)));
                        next.push((15, 40, Action::End(id)));
                    }
                    Medium::Voice => {
                        next.push((8, 15, Action::Draft(id)));
                        next.push((20, 30, Action::Draft(id)));
                        next.push((35, 90, Action::End(id)));
                    }
                    Medium::Email => {
                        next.push((5, 12, Action::Draft(id)));
                        next.push((15, 40, Action::Reply(id)));
                    }
                }
            }
            Status::WrapUp if !w.wrap_scheduled => {
                w.wrap_scheduled = true;
                let call_back = w.dropped && w.medium == Medium::Voice;
                if call_back {
                    next.push((3, 6, Action::Callback(id)));
                } else {
                    next.push((4, 10, Action::Save(id)));
                }
            }
            _ => {}
        }
        for (lo, hi, action) in next {
            self.after(lo, hi, action);
        }
    }

    fn customer_wrote(&mut self, id: Uuid, said: &str) {
        let now = self.ctx.now();
        let Some(w) = self.work.get_mut(&id) else {
            return;
        };
        w.customer_wrote_at = now;
        w.unanswered = true;
        // A customer who had not said what it was about yet now has.
        if std::ptr::eq(w.topic, &text::GENERAL)
            && let Some(t) = text::topic_for(said)
        {
            w.topic = t;
            w.answers = 0;
        }
        if w.status == Status::InProcess && w.is_chat() && !w.reply_scheduled {
            w.reply_scheduled = true;
            self.after(4, 10, Action::Reply(id));
        }
    }

    // ----- actions -----

    async fn act(&mut self, action: Action) -> Result<(), Stopped> {
        if let Some(id) = action.conversation() {
            if !self.work.contains_key(&id) {
                return Ok(());
            }
            if self.panel.is_none() || self.token.is_none() {
                // Nobody at the panel: the work waits.
                self.at(3_000, action);
                return Ok(());
            }
        }
        match action {
            Action::Accept(id) => self.accept(id).await,
            Action::Reply(id) => self.reply(id).await,
            Action::Draft(id) => self.draft(id).await,
            Action::End(id) => self.end(id).await,
            Action::Save(id) => self.save(id).await,
            Action::Complete(id) => self.complete(id).await,
            Action::Callback(id) => self.callback(id).await,
            Action::MaybeLoseConnection { since } => self.maybe_lose_connection(since).await,
            Action::Return => self.come_back().await,
            Action::Relogin => self.relogin().await,
            Action::GraceOver => {
                if self.offline == Some(Episode::Away) {
                    tracing::info!(agent = %self.plan.id,
                        "demo: {}'s grace period is over: his session ends, his chats go back to their queue with their original arrival time (AgentSessionLost)",
                        self.first_name);
                }
                Ok(())
            }
            Action::PhoneOff => {
                if self.offline.is_some() {
                    self.after(20, 30, Action::PhoneOff);
                } else {
                    tracing::info!(agent = %self.plan.id,
                        "demo: {}'s phone stops refreshing its SIP registration (it lapses within 30 s: banner, voice off)",
                        self.first_name);
                    let _ = self.phone_online.send(false);
                    self.after(45, 60, Action::PhoneOn);
                }
                Ok(())
            }
            Action::PhoneOn => {
                if self.offline != Some(Episode::Away) {
                    tracing::info!(agent = %self.plan.id,
                        "demo: {}'s phone registers again", self.first_name);
                    let _ = self.phone_online.send(true);
                }
                self.after(180, 300, Action::PhoneOff);
                Ok(())
            }
            Action::Break => self.presence(Presence::NotReady, Action::BackToWork).await,
            Action::BackToWork => self.presence(Presence::Ready, Action::Break).await,
            Action::ReadyAgain => {
                self.ready_again_scheduled = false;
                if self.panel.is_some() && !self.on_break {
                    let token = self.token();
                    let presence = Presence::Ready;
                    if let Err(e) = self
                        .ctx
                        .call(Command::SetPresence { token, presence })
                        .await?
                    {
                        tracing::debug!(agent = %self.plan.id, error = %e, "demo presence refused");
                    }
                }
                Ok(())
            }
        }
    }

    fn token(&self) -> TokenHash {
        self.token.unwrap_or_default()
    }

    /// Runs a command for a conversation; a reply carrying the conversation updates the view.
    async fn conv_call(&mut self, cmd: Command) -> Result<bool, Stopped> {
        match self.ctx.call(cmd).await? {
            Ok(Reply::Conversation(v)) => {
                if let Some(seen) = Seen::of_view(&v) {
                    self.track(seen);
                }
                Ok(true)
            }
            Ok(_) => Ok(true),
            Err(Rejection::Unauthorized) => {
                self.token = None;
                if self.offline.is_none() {
                    self.detach().await;
                    self.schedule_relogin(2, 5);
                }
                Ok(false)
            }
            Err(e) => {
                tracing::debug!(agent = %self.plan.id, error = %e, "demo agent command refused");
                Ok(false)
            }
        }
    }

    fn status(&self, id: Uuid) -> Option<Status> {
        self.work.get(&id).map(|w| w.status)
    }

    async fn accept(&mut self, id: Uuid) -> Result<(), Stopped> {
        if self.status(id) != Some(Status::Offered) {
            return Ok(());
        }
        let token = self.token();
        // Now and then a steady agent turns an offer down; the flaky one takes everything.
        let cmd = if !self.plan.flaky && self.rng.gen_bool(0.03) {
            Command::Reject {
                token,
                conversation: id,
            }
        } else {
            Command::Accept {
                token,
                conversation: id,
            }
        };
        if !self.conv_call(cmd).await? {
            if let Some(w) = self.work.get_mut(&id) {
                w.accept_scheduled = false;
            }
        }
        Ok(())
    }

    async fn reply(&mut self, id: Uuid) -> Result<(), Stopped> {
        let agent_first = self.first_name.clone();
        let Some(w) = self.work.get_mut(&id) else {
            return Ok(());
        };
        w.reply_scheduled = false;
        if w.status != Status::InProcess {
            return Ok(());
        }
        let (text, then_end) = if w.medium == Medium::Email {
            let first = text::capitalized(w.customer.split(['.', '@']).next().unwrap_or(""));
            let body = w.topic.answers.join(" ");
            (
                format!(
                    "Hello {first},\n\nThank you for your message. {body}\n\n{}",
                    text::EMAIL_SIGNATURE
                ),
                true,
            )
        } else if !w.greeted {
            // The greeting says the agent reads the message; the answer follows by itself.
            w.greeted = true;
            w.reply_scheduled = true;
            self.after(4, 8, Action::Reply(id));
            let Some(w) = self.work.get(&id) else {
                return Ok(());
            };
            (text::greeting(&agent_first, &w.customer), false)
        } else if !w.unanswered {
            return Ok(());
        } else if let Some(a) = w.topic.answers.get(w.answers) {
            w.answers += 1;
            w.unanswered = false;
            (a.to_string(), false)
        } else if let Some(a) = text::MORE_ANSWERS.get(w.more) {
            w.more += 1;
            w.unanswered = false;
            (a.to_string(), false)
        } else {
            // Said all there is to say: the chat ends once the customer is quiet.
            w.unanswered = false;
            return Ok(());
        };
        let token = self.token();
        self.conv_call(Command::AgentMessage {
            token,
            conversation: id,
            text,
        })
        .await?;
        if then_end {
            self.after(2, 4, Action::End(id));
        }
        Ok(())
    }

    async fn draft(&mut self, id: Uuid) -> Result<(), Stopped> {
        let Some(w) = self.work.get_mut(&id) else {
            return Ok(());
        };
        if !matches!(w.status, Status::InProcess | Status::WrapUp) {
            return Ok(());
        }
        w.memo_parts = w.memo_parts.saturating_add(1);
        let draft = w.metadata(false);
        let token = self.token();
        self.conv_call(Command::SaveDraft {
            token,
            conversation: id,
            draft,
        })
        .await?;
        Ok(())
    }

    async fn end(&mut self, id: Uuid) -> Result<(), Stopped> {
        let now = self.ctx.now();
        let Some(w) = self.work.get(&id) else {
            return Ok(());
        };
        if w.status != Status::InProcess {
            return Ok(());
        }
        // A chat ends once the customer has had their answers and gone quiet: never while
        // they are still writing or waiting for an answer (up to a quarter of an hour).
        let talking = now.saturating_sub(w.customer_wrote_at) < QUIET_BEFORE_END.as_millis() as u64
            || w.unanswered
            || w.reply_scheduled;
        if w.is_chat()
            && talking
            && now.saturating_sub(w.taken_at) < LONGEST_CHAT.as_millis() as u64
        {
            self.after(15, 30, Action::End(id));
            return Ok(());
        }
        if w.medium == Medium::Voice && self.hang_up_phone().await {
            return Ok(());
        }
        let token = self.token();
        if w.is_chat() {
            self.conv_call(Command::AgentMessage {
                token,
                conversation: id,
                text: text::CHAT_CLOSING.to_string(),
            })
            .await?;
        }
        self.conv_call(Command::End {
            token,
            conversation: id,
        })
        .await?;
        Ok(())
    }

    /// Hangs up the call on the phone (its BYE ends the call, `AgentEnded`); `false` when the
    /// phone has no call in conversation.
    async fn hang_up_phone(&self) -> bool {
        let Some(phone) = &self.phone else {
            return false;
        };
        let (tx, rx) = oneshot::channel();
        if phone.send(PhoneCmd::HangUp(tx)).is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    async fn save(&mut self, id: Uuid) -> Result<(), Stopped> {
        let Some(w) = self.work.get_mut(&id) else {
            return Ok(());
        };
        if w.status != Status::WrapUp {
            return Ok(());
        }
        w.memo_parts = usize::MAX;
        let metadata = w.metadata(true);
        let token = self.token();
        self.conv_call(Command::SaveMetadata {
            token,
            conversation: id,
            metadata,
        })
        .await?;
        self.after(2, 4, Action::Complete(id));
        Ok(())
    }

    async fn complete(&mut self, id: Uuid) -> Result<(), Stopped> {
        if self.status(id) != Some(Status::WrapUp) {
            return Ok(());
        }
        let token = self.token();
        self.conv_call(Command::Complete {
            token,
            conversation: id,
        })
        .await?;
        Ok(())
    }

    /// Calls back the customer of a call that dropped with the connection: switchboard rings
    /// the agent's phone, then the customer through the trunk. Then the dropped call's
    /// wrap-up is finished.
    async fn callback(&mut self, id: Uuid) -> Result<(), Stopped> {
        if self.status(id) != Some(Status::WrapUp) {
            return Ok(());
        }
        let token = self.token();
        match self
            .ctx
            .call(Command::Callback {
                token,
                conversation: id,
            })
            .await?
        {
            Ok(Reply::Conversation(v)) => {
                tracing::info!(agent = %self.plan.id, customer = %v.customer.address,
                    "demo: {} calls back the customer whose call dropped", self.first_name);
                if let Some(seen) = Seen::of_view(&v) {
                    let now = self.ctx.now();
                    self.work
                        .entry(seen.id)
                        .or_insert_with(|| Work::new(&seen, &text::GENERAL, now))
                        .callback = true;
                    self.track(seen);
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(agent = %self.plan.id, error = %e, "demo callback refused")
            }
        }
        self.after(3, 8, Action::Save(id));
        Ok(())
    }

    async fn presence(&mut self, presence: Presence, next: Action) -> Result<(), Stopped> {
        if self.panel.is_none() || self.token.is_none() {
            self.after(
                30,
                60,
                if next == Action::Break {
                    Action::BackToWork
                } else {
                    Action::Break
                },
            );
            return Ok(());
        }
        let token = self.token();
        self.on_break = presence == Presence::NotReady;
        if let Err(e) = self
            .ctx
            .call(Command::SetPresence { token, presence })
            .await?
        {
            tracing::debug!(agent = %self.plan.id, error = %e, "demo presence refused");
        }
        match next {
            Action::BackToWork => self.after(60, 90, next),
            _ => self.after(240, 360, next),
        }
        Ok(())
    }

    // ----- the flaky connection -----

    async fn maybe_lose_connection(&mut self, since: u64) -> Result<(), Stopped> {
        if self.offline.is_some() || self.panel.is_none() {
            self.at(5_000, Action::MaybeLoseConnection { since });
            return Ok(());
        }
        let held = |w: &Work, chat: bool| {
            w.status == Status::InProcess && (w.is_chat() == chat) && w.medium != Medium::Email
        };
        let chats = self.work.values().filter(|w| held(w, true)).count();
        let calls = self.work.values().filter(|w| held(w, false)).count();
        let waited = self.ctx.now().saturating_sub(since);
        // Ideally a chat and a call are held; the first loss waits less, so that the
        // Dashboard shows its requeue about a minute after the demo starts.
        let patience = if self.episodes == 0 { 12_000 } else { 45_000 };
        let go = (chats > 0 && (calls > 0 || waited > patience)) || waited > 90_000;
        if !go {
            self.at(1_000, Action::MaybeLoseConnection { since });
            return Ok(());
        }
        let episode = match self.episodes {
            0 => Episode::Away,
            1 => Episode::Short,
            _ if self.rng.gen_bool(0.5) => Episode::Short,
            _ => Episode::Away,
        };
        self.episodes += 1;
        self.detach().await;
        self.offline = Some(episode);
        match episode {
            Episode::Short => {
                tracing::info!(agent = %self.plan.id, chats, calls,
                    "demo: {}'s panel lost its connection (calls drop, chats wait); back within the grace period",
                    self.first_name);
                self.after(10, 40, Action::Return);
            }
            Episode::Away => {
                tracing::info!(agent = %self.plan.id, chats, calls,
                    "demo: {}'s panel lost its connection (calls drop, chats wait); not back before the grace period ends, so the chats will be requeued",
                    self.first_name);
                let _ = self.phone_online.send(false);
                let grace = self.ctx.grace.as_millis() as u64;
                self.at(grace, Action::GraceOver);
                self.relogin_scheduled = true;
                self.after(75, 95, Action::Relogin);
            }
        }
        Ok(())
    }

    fn next_loss(&mut self) {
        let now = self.ctx.now();
        let d = random_ms(&mut self.rng, 90, 150);
        self.at(d, Action::MaybeLoseConnection { since: now + d });
    }

    async fn come_back(&mut self) -> Result<(), Stopped> {
        self.offline = None;
        if self.attach().await? {
            tracing::info!(agent = %self.plan.id,
                "demo: {} is back within the grace period and carries on", self.first_name);
            self.next_loss();
        } else {
            self.relogin_scheduled = false;
            self.relogin().await?;
        }
        Ok(())
    }

    async fn relogin(&mut self) -> Result<(), Stopped> {
        self.relogin_scheduled = false;
        let was_away = self.offline == Some(Episode::Away);
        self.offline = None;
        let _ = self.phone_online.send(true);
        self.detach().await;
        if self.login().await? {
            if was_away {
                tracing::info!(agent = %self.plan.id,
                    "demo: {} logs in again after the session was lost", self.first_name);
            }
            if self.plan.flaky {
                self.next_loss();
            }
        } else {
            self.schedule_relogin(10, 20);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Customers

#[derive(Debug, Clone, Copy)]
enum Stream {
    Voice,
    Webchat,
    Sms,
    Social,
    Email,
}

/// A messaging customer, known by (medium, address) to the webhook responder.
struct NewMessaging {
    medium: Medium,
    address: String,
    topic: &'static Topic,
    follow_ups: usize,
}

/// How one stream of customers arrives.
struct Pace {
    stream: Stream,
    first: Duration,
    /// Seconds between arrivals while someone is waiting.
    every: (u64, u64),
    /// No new customer while this much work of the stream's channel waits (in any queue,
    /// a customer from the browser included).
    max_waiting: usize,
}

impl Stream {
    fn channel(self) -> Channel {
        match self {
            Stream::Voice => Channel::Voice,
            Stream::Webchat | Stream::Sms | Stream::Social => Channel::Chat,
            Stream::Email => Channel::Email,
        }
    }
}

/// Customers of one stream: the first after `pace.first`; then, like a real line, a steady
/// trickle — soon when nothing is waiting, at `pace.every` while some are, none while
/// `pace.max_waiting` are — so a ready agent gets work within seconds and the queue stays
/// short.
async fn arrivals(
    ctx: Ctx,
    mut rng: StdRng,
    pace: Pace,
    messaging: mpsc::UnboundedSender<NewMessaging>,
) {
    let stream = pace.stream;
    let channel = stream.channel();
    let mut wait = pace.first;
    loop {
        if !ctx.sleep(wait).await {
            return;
        }
        let Ok(waiting) = ctx
            .handle
            .inspect(move |core| {
                core.conversations()
                    .filter(|c| {
                        c.channel() == channel
                            && matches!(c.status, Status::InQueue | Status::Offered)
                    })
                    .count()
            })
            .await
        else {
            return;
        };
        if waiting >= pace.max_waiting {
            wait = Duration::from_secs(3);
            continue;
        }
        let seed = rng.r#gen();
        let n = ctx.next_customer();
        let ctx2 = ctx.clone();
        match stream {
            Stream::Voice => caller(&ctx2, StdRng::seed_from_u64(seed), n),
            Stream::Webchat => {
                tokio::spawn(webchat_customer(ctx2, StdRng::seed_from_u64(seed)));
            }
            Stream::Sms | Stream::Social => {
                let medium = if matches!(stream, Stream::Sms) {
                    Medium::Sms
                } else {
                    Medium::Social
                };
                let mut crng = StdRng::seed_from_u64(seed);
                let person = Person::random(&mut crng);
                let topic = text::topic(&mut crng);
                let address = match medium {
                    Medium::Sms => person.phone(n),
                    _ => person.social_handle(n),
                };
                let sent = ctx
                    .call(Command::InboundMessage {
                        medium,
                        from: address.clone(),
                        text: topic.opening.to_string(),
                        queue: MESSAGING_QUEUE.to_string(),
                    })
                    .await;
                match sent {
                    Err(Stopped) => return,
                    Ok(Ok(_)) => {
                        let _ = messaging.send(NewMessaging {
                            medium,
                            address,
                            topic,
                            follow_ups: crng.gen_range(1..=topic.follow_ups.len()),
                        });
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "demo inbound message refused"),
                }
            }
            Stream::Email => {
                let mut crng = StdRng::seed_from_u64(seed);
                let person = Person::random(&mut crng);
                let topic = text::topic(&mut crng);
                let text = format!(
                    "{}\n\n{}\n\nBest,\n{}",
                    topic.opening,
                    topic.follow_ups.first().copied().unwrap_or(""),
                    person.full_name()
                );
                let sent = ctx
                    .call(Command::InboundEmail {
                        from: person.email(n),
                        subject: topic.subject.to_string(),
                        text,
                        queue: EMAIL_QUEUE.to_string(),
                    })
                    .await;
                if sent.is_err() {
                    return;
                }
            }
        }
        wait = if waiting == 0 {
            Duration::from_millis(random_ms(&mut rng, 4, 10))
        } else {
            Duration::from_millis(random_ms(&mut rng, pace.every.0, pace.every.1))
        };
    }
}

/// SMS and social customers answer the agent replies the webhook receiver passes on, while
/// their conversation is being handled.
async fn messaging_customers(
    ctx: Ctx,
    mut rng: StdRng,
    mut new: mpsc::UnboundedReceiver<NewMessaging>,
    mut delivered: mpsc::UnboundedReceiver<Delivered>,
) {
    struct Customer {
        topic: &'static Topic,
        left: usize,
        said: usize,
    }
    let mut customers: HashMap<(Medium, String), Customer> = HashMap::new();
    let mut stop = ctx.stop.clone();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            n = new.recv() => {
                let Some(n) = n else { return };
                customers.insert((n.medium, n.address), Customer {
                    topic: n.topic,
                    left: n.follow_ups,
                    said: 0,
                });
            }
            d = delivered.recv() => {
                let Some(d) = d else { return };
                let Some(medium) = medium_of(&d.medium) else { continue };
                let key = (medium, d.to.clone());
                let Some(c) = customers.get_mut(&key) else { continue };
                if d.text == text::CHAT_CLOSING || c.left == 0 {
                    continue;
                }
                let line = c.topic.follow_ups.get(c.said).copied().unwrap_or(text::CUSTOMER_BYE);
                c.said += 1;
                c.left -= 1;
                if c.left == 0 {
                    customers.remove(&key);
                }
                let delay = Duration::from_millis(random_ms(&mut rng, 5, 20));
                let ctx2 = ctx.clone();
                let conversation = d.conversation_id;
                tokio::spawn(async move {
                    if !ctx2.sleep(delay).await {
                        return;
                    }
                    if ctx2.status_of(conversation).await == Some(Status::InProcess) {
                        let _ = ctx2.call(Command::InboundMessage {
                            medium,
                            from: d.to,
                            text: line.to_string(),
                            queue: MESSAGING_QUEUE.to_string(),
                        }).await;
                    }
                });
            }
        }
    }
}

/// A caller: the simulated trunk calls the voice queue; the customer waits (hanging up if it
/// takes too long), talks once an agent's phone answers, and hangs up — unless the agent
/// hangs up first or the call drops.
fn caller(ctx: &Ctx, mut rng: StdRng, n: u64) {
    let person = Person::random(&mut rng);
    let _ = ctx.trunk.send(Placed {
        number: person.phone(n),
        name: person.full_name(),
        queue: VOICE_QUEUE.to_string(),
        patience: random_ms(&mut rng, 90, 200),
        talk: random_ms(&mut rng, 30, 120),
    });
}

/// A web chat customer: opens the chat, follows it on the customer socket, answers the
/// agent a few times, sometimes says goodbye and leaves, and leaves the queue if the wait is
/// too long.
async fn webchat_customer(ctx: Ctx, mut rng: StdRng) {
    let person = Person::random(&mut rng);
    let topic = text::topic(&mut rng);
    let token = token_hash(&new_token());
    let cmd = Command::StartChat {
        queue: WEBCHAT_QUEUE.to_string(),
        name: person.full_name(),
        text: Some(topic.opening.to_string()),
        token,
    };
    if !matches!(ctx.call(cmd).await, Ok(Ok(_))) {
        return;
    }
    let Ok((socket, snapshot, mut rx)) = ctx.handle.attach_chat(token).await else {
        return;
    };
    let patience = random_ms(&mut rng, 150, 300);
    let follow_ups = rng.gen_range(1..=topic.follow_ups.len());
    let says_bye = rng.gen_bool(0.3);
    let mut waiting_since =
        Some(ctx.now()).filter(|_| matches!(snapshot.status, Status::InQueue | Status::Offered));
    let mut said = 0usize;
    let mut reply_at: Option<u64> = None;
    // Agent messages received, and whether the latest message was the agent's (a system
    // prompt such as "your agent is reconnecting" makes the customer wait, not leave).
    let mut answers = 0usize;
    let mut agent_present = false;
    let mut stop = ctx.stop.clone();
    loop {
        let give_up_at = waiting_since.map(|t| t + patience);
        let next = match (reply_at, give_up_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let frame = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            f = rx.recv() => Some(f),
            _ = ctx.until(next) => None,
        };
        match frame {
            Some(None | Some(Outgoing::Close(..))) => break,
            Some(Some(Outgoing::Text(t))) => {
                let Ok(v) = serde_json::from_str::<Value>(&t) else {
                    continue;
                };
                match v.get("type").and_then(Value::as_str) {
                    Some("status") => {
                        let status = v
                            .get("status")
                            .and_then(Value::as_str)
                            .and_then(Status::parse);
                        match status {
                            Some(Status::InQueue | Status::Offered) => {
                                waiting_since.get_or_insert(ctx.now());
                            }
                            Some(Status::InProcess) => waiting_since = None,
                            _ => break,
                        }
                    }
                    Some("message") => {
                        let from = v.pointer("/message/from").and_then(Value::as_str);
                        let from_agent = from == Some("agent");
                        let closing = v.pointer("/message/text").and_then(Value::as_str)
                            == Some(text::CHAT_CLOSING);
                        match from {
                            Some("agent") => agent_present = true,
                            Some("system") => agent_present = false,
                            _ => {}
                        }
                        answers += usize::from(from_agent);
                        if from_agent && !closing && reply_at.is_none() && said < follow_ups {
                            reply_at = Some(ctx.now() + random_ms(&mut rng, 5, 15));
                        }
                    }
                    _ => {}
                }
            }
            None => {
                let now = ctx.now();
                if give_up_at.is_some_and(|t| now >= t) {
                    // Waited too long: leaves the queue (abandoned).
                    let _ = ctx.call(Command::CustomerEnd { token }).await;
                    break;
                }
                if reply_at.is_some_and(|t| now >= t) {
                    reply_at = None;
                    let line = topic
                        .follow_ups
                        .get(said)
                        .copied()
                        .unwrap_or(text::CUSTOMER_BYE);
                    said += 1;
                    let _ = ctx
                        .call(Command::CustomerMessage {
                            token,
                            text: line.to_string(),
                        })
                        .await;
                    if said >= follow_ups && says_bye && agent_present && answers >= 2 {
                        let _ = ctx
                            .call(Command::CustomerMessage {
                                token,
                                text: text::CUSTOMER_BYE.to_string(),
                            })
                            .await;
                        let _ = ctx.call(Command::CustomerEnd { token }).await;
                        break;
                    }
                }
            }
        }
    }
    if !ctx.stopped() {
        ctx.handle.detach(socket, LossCause::Closed).await;
    }
}
