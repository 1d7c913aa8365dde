//! Driver layer: the only place that reads the clock. It owns the [`Core`], takes commands
//! from a channel in batches, writes every change of a batch in one store transaction (group
//! commit), and only then replies and fans the effects out to subscribed sockets. While one
//! batch commits, the core already works on the next one (deadlines come due on time during
//! a long commit); that batch's replies and frames wait for its own commit, which starts only
//! after the previous one succeeded. One sleep waits for the core's next deadline.

use crate::config::Config;
use crate::core::model::{OutboxItem, TokenHash};
use crate::core::view::{AgentSnapshot, ChatSnapshot, DashboardEvent};
use crate::core::{Command, Core, Effect, LossCause, Now, Rejection, Reply, Restored};
use crate::store::Store;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use switchboard_core::room::shrink_map;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use uuid::Uuid;

/// Largest number of commands committed in one transaction.
const MAX_BATCH: usize = 1024;
/// Frames without an entity key (messages, session ends) buffered per socket before a slow
/// socket is dropped (it resumes with a snapshot). State frames replace their entity's
/// queued frame instead of adding one ([`crate::fanout`]).
const SOCKET_QUEUE: usize = 1024;

use crate::core::view::{ChatEvent, PanelEvent};
use crate::fanout::{FrameKey, FrameTx};
pub use crate::fanout::{FrameRx, Outgoing};

/// Why a call did not get an answer from the core.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error("the server is shutting down or its store failed")]
    Unavailable,
}

/// Both clocks. Production follows the system wall clock. A manual clock (tests, demos of
/// deadlines) derives wall time from the monotonic clock and can be moved forward with
/// [`Handle::advance`], so a test passes a 60 s grace period without waiting for it.
#[derive(Debug, Clone)]
pub struct Clock {
    start: Instant,
    start_wall: i64,
    follow_system_wall: bool,
    /// Milliseconds added to the monotonic reading (manual clocks only).
    skew: Arc<AtomicU64>,
}

impl Clock {
    #[allow(clippy::disallowed_methods)]
    pub fn system() -> Clock {
        Clock {
            start: Instant::now(),
            start_wall: system_wall_ms(),
            follow_system_wall: false,
            skew: Arc::new(AtomicU64::new(0)),
        }
        .following_system_wall()
    }

    fn following_system_wall(mut self) -> Clock {
        self.follow_system_wall = true;
        self
    }

    /// A clock whose wall time starts at `start_wall` and then follows the monotonic clock
    /// plus every [`Clock::advance`].
    #[allow(clippy::disallowed_methods)]
    pub fn manual(start_wall: i64) -> Clock {
        Clock {
            start: Instant::now(),
            start_wall,
            follow_system_wall: false,
            skew: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Moves a manual clock forward (both readings).
    pub fn advance(&self, by: std::time::Duration) {
        self.skew.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }

    #[allow(clippy::disallowed_methods)]
    pub fn now(&self) -> Now {
        let real = Instant::now()
            .saturating_duration_since(self.start)
            .as_millis() as u64;
        let mono = real + self.skew.load(Ordering::SeqCst);
        let wall = if self.follow_system_wall {
            system_wall_ms()
        } else {
            self.start_wall + mono as i64
        };
        Now { mono, wall }
    }

    /// The tokio instant at which the monotonic reading will be `mono`.
    pub fn instant_at(&self, mono: u64) -> Instant {
        let real = mono.saturating_sub(self.skew.load(Ordering::SeqCst));
        self.start + std::time::Duration::from_millis(real)
    }
}

#[allow(clippy::disallowed_methods)]
fn system_wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Counters the driver keeps for `/metrics`.
#[derive(Debug, Default)]
pub struct DriverMetrics {
    pub commands: AtomicU64,
    pub batches: AtomicU64,
    pub commits: AtomicU64,
    pub writes: AtomicU64,
    pub commit_micros_total: AtomicU64,
    pub commit_micros_max: AtomicU64,
    pub sockets_dropped_slow: AtomicU64,
}

type Attached<T> = Result<(u64, T, FrameRx), Rejection>;

enum Request {
    Call {
        cmd: Command,
        reply: oneshot::Sender<Result<Reply, Rejection>>,
    },
    AttachPanel {
        token: TokenHash,
        reply: oneshot::Sender<Attached<Box<AgentSnapshot>>>,
    },
    AttachChat {
        token: TokenHash,
        reply: oneshot::Sender<Attached<Box<ChatSnapshot>>>,
    },
    AttachDashboard {
        token: TokenHash,
        reply: oneshot::Sender<Attached<DashboardEvent>>,
    },
    Detach {
        socket: u64,
        cause: LossCause,
    },
    /// Re-read the clock and fire what is due (after a manual clock moved).
    Tick,
    Reload {
        cfg: Arc<Config>,
    },
    Inspect {
        f: Box<dyn FnOnce(&Core) + Send>,
    },
}

impl Request {
    /// Whether handling it reads the store (a callback on a conversation that may be closed
    /// and no longer in memory).
    fn reads_the_store(&self) -> bool {
        matches!(
            self,
            Request::Call {
                cmd: Command::Callback { .. },
                ..
            }
        )
    }
}

/// SIP datagrams the core asked to send (destination, bytes), in order, after their commit.
pub type SipOutgoing = mpsc::UnboundedReceiver<(std::net::SocketAddr, Vec<u8>)>;

/// The adapters' way in: cheap to clone.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Request>,
    /// Taken once by the SIP adapter.
    sip_out: Arc<std::sync::Mutex<Option<SipOutgoing>>>,
    pub metrics: Arc<DriverMetrics>,
    pub clock: Clock,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("driver::Handle")
    }
}

impl Handle {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> Result<T, CallError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| CallError::Unavailable)?;
        rx.await.map_err(|_| CallError::Unavailable)
    }

    /// Hands a SIP message to the core without waiting for it, keeping the arrival order;
    /// false when the driver's queue is full (the datagram is dropped; the peer retransmits).
    pub fn sip(&self, cmd: Command) -> bool {
        let (reply, _) = oneshot::channel();
        self.tx.try_send(Request::Call { cmd, reply }).is_ok()
    }

    /// The stream of SIP datagrams to send (once: the SIP adapter takes it).
    pub fn take_sip_outgoing(&self) -> Option<SipOutgoing> {
        self.sip_out
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Runs one command; the reply comes after its batch is on disk.
    pub async fn call(&self, cmd: Command) -> Result<Reply, CallError> {
        Ok(self.ask(|reply| Request::Call { cmd, reply }).await??)
    }

    /// Attaches a panel socket: returns its id, the snapshot and the stream of later frames.
    pub async fn attach_panel(
        &self,
        token: TokenHash,
    ) -> Result<(u64, Box<AgentSnapshot>, FrameRx), CallError> {
        Ok(self
            .ask(|reply| Request::AttachPanel { token, reply })
            .await??)
    }

    pub async fn attach_chat(
        &self,
        token: TokenHash,
    ) -> Result<(u64, Box<ChatSnapshot>, FrameRx), CallError> {
        Ok(self
            .ask(|reply| Request::AttachChat { token, reply })
            .await??)
    }

    pub async fn attach_dashboard(
        &self,
        token: TokenHash,
    ) -> Result<(u64, DashboardEvent, FrameRx), CallError> {
        Ok(self
            .ask(|reply| Request::AttachDashboard { token, reply })
            .await??)
    }

    /// A socket closed (or went silent): unsubscribes it; for a panel this is connection loss,
    /// and `cause` says whether the client closed it politely (docs/rescue.md#flap-damping).
    pub async fn detach(&self, socket: u64, cause: LossCause) {
        let _ = self.tx.send(Request::Detach { socket, cause }).await;
    }

    /// Moves a manual clock forward and lets the driver fire what became due; returns once
    /// that batch is committed.
    pub async fn advance(&self, by: std::time::Duration) -> Result<(), CallError> {
        self.clock.advance(by);
        self.tx
            .send(Request::Tick)
            .await
            .map_err(|_| CallError::Unavailable)?;
        self.inspect(|_| ()).await
    }

    /// The current reading of the driver's clock.
    pub fn now(&self) -> Now {
        self.clock.now()
    }

    /// Installs a new configuration (agents, queues, limits).
    pub async fn reload(&self, cfg: Arc<Config>) -> Result<(), CallError> {
        self.tx
            .send(Request::Reload { cfg })
            .await
            .map_err(|_| CallError::Unavailable)
    }

    /// Reads the live core (tests, metrics).
    pub async fn inspect<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Core) -> T + Send + 'static,
    ) -> Result<T, CallError> {
        let (tx, rx) = oneshot::channel();
        let f = Box::new(move |core: &Core| {
            let _ = tx.send(f(core));
        });
        self.tx
            .send(Request::Inspect { f })
            .await
            .map_err(|_| CallError::Unavailable)?;
        rx.await.map_err(|_| CallError::Unavailable)
    }
}

/// Which stream a socket is subscribed to.
#[derive(Debug, Clone)]
enum Sub {
    Panel(String),
    Chat(Uuid),
    Dashboard,
}

/// Subscribed sockets.
#[derive(Default)]
struct Hub {
    panels: HashMap<String, HashMap<u64, FrameTx>>,
    chats: HashMap<Uuid, HashMap<u64, FrameTx>>,
    dashboards: HashMap<u64, FrameTx>,
    subs: HashMap<u64, Sub>,
    next_socket: u64,
}

impl Hub {
    fn add(&mut self, sub: Sub) -> (u64, FrameRx) {
        self.next_socket += 1;
        let id = self.next_socket;
        let (tx, rx) = crate::fanout::channel(SOCKET_QUEUE);
        match &sub {
            Sub::Panel(a) => {
                self.panels.entry(a.clone()).or_default().insert(id, tx);
            }
            Sub::Chat(t) => {
                self.chats.entry(*t).or_default().insert(id, tx);
            }
            Sub::Dashboard => {
                self.dashboards.insert(id, tx);
            }
        }
        self.subs.insert(id, sub);
        (id, rx)
    }

    fn remove(&mut self, socket: u64) -> Option<Sub> {
        let sub = self.subs.remove(&socket)?;
        match &sub {
            Sub::Panel(a) => {
                if let Some(m) = self.panels.get_mut(a) {
                    m.remove(&socket);
                    if m.is_empty() {
                        self.panels.remove(a);
                    }
                }
            }
            Sub::Chat(t) => {
                if let Some(m) = self.chats.get_mut(t) {
                    m.remove(&socket);
                    if m.is_empty() {
                        self.chats.remove(t);
                    }
                }
            }
            Sub::Dashboard => {
                self.dashboards.remove(&socket);
            }
        }
        shrink_map(&mut self.subs);
        shrink_map(&mut self.panels);
        shrink_map(&mut self.chats);
        shrink_map(&mut self.dashboards);
        Some(sub)
    }

    fn sender(&self, socket: u64) -> Option<FrameTx> {
        match self.subs.get(&socket)? {
            Sub::Panel(a) => self.panels.get(a)?.get(&socket).cloned(),
            Sub::Chat(t) => self.chats.get(t)?.get(&socket).cloned(),
            Sub::Dashboard => self.dashboards.get(&socket).cloned(),
        }
    }
}

fn json<T: serde::Serialize>(v: &T) -> Arc<str> {
    serde_json::to_string(v)
        .map(Arc::from)
        .unwrap_or_else(|_| Arc::from("{}"))
}

/// Where a batch's frames go once it is committed.
type Pending = Vec<(u64, FrameTx, Option<FrameKey>, Outgoing)>;

/// The entity whose latest state a Dashboard frame carries (the snapshot has none and is
/// delivered as it is).
fn dashboard_key(event: &DashboardEvent) -> Option<FrameKey> {
    match event {
        DashboardEvent::Agent { agent } => Some(FrameKey::Agent(agent.agent_id.clone())),
        DashboardEvent::Queue { queue } => Some(FrameKey::Queue(queue.id.clone())),
        DashboardEvent::Conversation { conversation } => {
            Some(FrameKey::Conversation(conversation.id))
        }
        // A storm raises and clears an alert per agent: keyed, so a Dashboard behind gets
        // each alert's latest state instead of overflowing on thousands of them.
        DashboardEvent::Alert { alert } => Some(FrameKey::Alert(alert.id)),
        DashboardEvent::AlertCleared { id } => Some(FrameKey::Alert(*id)),
        DashboardEvent::Snapshot { .. } => None,
    }
}

fn panel_key(event: &PanelEvent) -> Option<FrameKey> {
    match event {
        PanelEvent::Conversation { conversation } => Some(FrameKey::Conversation(conversation.id)),
        PanelEvent::Capabilities { .. } => Some(FrameKey::Kind("capabilities")),
        PanelEvent::Banners { .. } => Some(FrameKey::Kind("banners")),
        PanelEvent::Presence { .. } => Some(FrameKey::Kind("presence")),
        _ => None,
    }
}

fn chat_key(event: &ChatEvent) -> Option<FrameKey> {
    match event {
        ChatEvent::Status { .. } => Some(FrameKey::Kind("status")),
        _ => None,
    }
}

/// The driver task's state.
pub struct Driver {
    core: Core,
    store: Arc<Store>,
    clock: Clock,
    rx: mpsc::Receiver<Request>,
    hub: Hub,
    outbound: Option<mpsc::UnboundedSender<OutboxItem>>,
    metrics: Arc<DriverMetrics>,
    sip_tx: mpsc::UnboundedSender<(std::net::SocketAddr, Vec<u8>)>,
    /// SIP datagrams of the current batch, sent after its commit.
    sip_pending: Vec<(std::net::SocketAddr, Vec<u8>)>,
    /// The previous batch, while its commit runs (see [`Driver::step`]).
    committing: Option<Committing>,
}

/// What a batch tells the world once its writes are committed, in this order: replies,
/// SIP datagrams, frames.
struct Outputs {
    replies: Vec<Box<dyn FnOnce() + Send>>,
    sip: Vec<(std::net::SocketAddr, Vec<u8>)>,
    frames: Pending,
    /// Requests in the batch (for the metrics).
    requests: u64,
}

/// A batch whose commit is running on the blocking pool.
struct Committing {
    commit: tokio::task::JoinHandle<Result<u64, crate::store::StoreError>>,
    writes: u64,
    outputs: Outputs,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").field("core", &self.core).finish()
    }
}

/// Errors that stop the driver.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("store task failed: {0}")]
    Join(String),
}

impl Driver {
    /// Builds the core from the store's state (applying the restart rule) and returns the
    /// driver with its handle. `outbound` receives agent replies to deliver to webhooks.
    pub fn start(
        cfg: Arc<Config>,
        store: Arc<Store>,
        clock: Clock,
        outbound: Option<mpsc::UnboundedSender<OutboxItem>>,
    ) -> Result<(Driver, Handle), DriverError> {
        let now = clock.now();
        let seed = rand::random::<u64>();
        let mut core = Core::new(Arc::new(cfg.policy()), seed, now);
        let restored: Restored = store.load()?;
        core.restore(restored, now);
        store.apply(&core.take_writes())?;
        let (tx, rx) = mpsc::channel(4096);
        let metrics = Arc::new(DriverMetrics::default());
        let (sip_tx, sip_rx) = mpsc::unbounded_channel();
        let handle = Handle {
            tx,
            sip_out: Arc::new(std::sync::Mutex::new(Some(sip_rx))),
            metrics: metrics.clone(),
            clock: clock.clone(),
        };
        let driver = Driver {
            core,
            store,
            clock,
            rx,
            hub: Hub::default(),
            outbound,
            metrics,
            sip_tx,
            sip_pending: Vec::new(),
            committing: None,
        };
        Ok((driver, handle))
    }

    /// The loop: until `shutdown` resolves or every handle is dropped.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), DriverError> {
        tokio::pin!(shutdown);
        // Deadlines restored from the store may already be due.
        self.step(Vec::new()).await?;
        loop {
            let deadline = self.core.poll_timeout().map(|m| self.clock.instant_at(m));
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                req = self.rx.recv() => {
                    let Some(first) = req else { break };
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match self.rx.try_recv() {
                            Ok(r) => batch.push(r),
                            Err(_) => break,
                        }
                    }
                    self.step(batch).await?;
                }
                _ = sleep => self.step(Vec::new()).await?,
                done = async {
                    match self.committing.as_mut() {
                        Some(c) => (&mut c.commit).await,
                        None => std::future::pending().await,
                    }
                } => self.committed(done)?,
            }
        }
        self.finish_commit().await?;
        // Tell panels to come back after the restart (close 1001 = going away).
        for (_, tx) in self.hub.panels.values().flat_map(|m| m.iter()) {
            let _ = tx.push(None, Outgoing::Close(1001, "server restarting"));
        }
        for (_, tx) in self.hub.chats.values().flat_map(|m| m.iter()) {
            let _ = tx.push(None, Outgoing::Close(1001, "server restarting"));
        }
        for tx in self.hub.dashboards.values() {
            let _ = tx.push(None, Outgoing::Close(1001, "server restarting"));
        }
        Ok(())
    }

    /// One batch: due deadlines, then the requests in order; then its commit starts, once
    /// the previous batch's commit is done and that batch's replies and frames are out. Its
    /// own replies and frames go out when its commit is done ([`Driver::committed`]).
    async fn step(&mut self, batch: Vec<Request>) -> Result<(), DriverError> {
        if batch.iter().any(Request::reads_the_store) {
            // The store must hold every earlier batch before it is read.
            self.finish_commit().await?;
        }
        let now = self.clock.now();
        let mut pending: Pending = Vec::new();
        let mut replies: Vec<Box<dyn FnOnce() + Send>> = Vec::new();
        self.core.handle_timeout(now);
        self.route_effects(&mut pending);
        let n = batch.len() as u64;
        for req in batch {
            match req {
                Request::Call { cmd, reply } => {
                    let cmd = self.preload(cmd);
                    let r = self.core.handle(now, cmd);
                    self.route_effects(&mut pending);
                    replies.push(Box::new(move || {
                        let _ = reply.send(r);
                    }));
                }
                Request::AttachPanel { token, reply } => {
                    let r = self
                        .attach(now, Sub::Panel(String::new()), token, &mut pending)
                        .and_then(|(id, rx, r)| match r {
                            Reply::Snapshot(s) => Ok((id, s, rx)),
                            _ => Err(Rejection::Unauthorized),
                        });
                    replies.push(Box::new(move || {
                        let _ = reply.send(r);
                    }));
                }
                Request::AttachChat { token, reply } => {
                    let r = self
                        .attach(now, Sub::Chat(Uuid::nil()), token, &mut pending)
                        .and_then(|(id, rx, r)| match r {
                            Reply::Chat(s) => Ok((id, s, rx)),
                            _ => Err(Rejection::Unauthorized),
                        });
                    replies.push(Box::new(move || {
                        let _ = reply.send(r);
                    }));
                }
                Request::AttachDashboard { token, reply } => {
                    let r = self.core.handle(now, Command::Queues { token }).map(|_| {
                        let (id, rx) = self.hub.add(Sub::Dashboard);
                        (id, self.core.dashboard_snapshot(), rx)
                    });
                    self.route_effects(&mut pending);
                    replies.push(Box::new(move || {
                        let _ = reply.send(r);
                    }));
                }
                Request::Detach { socket, cause } => {
                    if let Some(Sub::Panel(_)) = self.hub.remove(socket) {
                        let _ = self
                            .core
                            .handle(now, Command::DetachPanel { socket, cause });
                        self.route_effects(&mut pending);
                    }
                }
                Request::Reload { cfg } => {
                    self.core.apply_policy(&Arc::new(cfg.policy()), now);
                    self.route_effects(&mut pending);
                }
                Request::Inspect { f } => f(&self.core),
                Request::Tick => {}
            }
        }
        let writes = self.core.take_writes();
        // The end of a batch tells queue rows and positions once.
        self.route_effects(&mut pending);
        let outputs = Outputs {
            replies,
            sip: std::mem::take(&mut self.sip_pending),
            frames: pending,
            requests: n,
        };
        // Batches commit one after the other, and each tells its outcome only after its
        // own commit and every earlier one.
        self.finish_commit().await?;
        if writes.is_empty() {
            self.release(outputs);
            return Ok(());
        }
        let store = self.store.clone();
        let count = writes.len() as u64;
        let commit = tokio::task::spawn_blocking(move || {
            // Commit latency is a metric, measured on the real clock.
            #[allow(clippy::disallowed_methods)]
            let started = std::time::Instant::now();
            store
                .apply(&writes)
                .map(|()| started.elapsed().as_micros() as u64)
        });
        self.committing = Some(Committing {
            commit,
            writes: count,
            outputs,
        });
        Ok(())
    }

    /// Waits for the running commit, if any, and sends what its batch tells.
    async fn finish_commit(&mut self) -> Result<(), DriverError> {
        let Some(c) = self.committing.as_mut() else {
            return Ok(());
        };
        let done = (&mut c.commit).await;
        self.committed(done)
    }

    /// The running commit ended: an error stops the driver (nothing of the batch was told);
    /// success sends the batch's replies, datagrams and frames.
    fn committed(
        &mut self,
        done: Result<Result<u64, crate::store::StoreError>, tokio::task::JoinError>,
    ) -> Result<(), DriverError> {
        let Some(c) = self.committing.take() else {
            return Ok(());
        };
        let micros = done.map_err(|e| DriverError::Join(e.to_string()))??;
        self.metrics.commits.fetch_add(1, Ordering::Relaxed);
        self.metrics.writes.fetch_add(c.writes, Ordering::Relaxed);
        self.metrics
            .commit_micros_total
            .fetch_add(micros, Ordering::Relaxed);
        self.metrics
            .commit_micros_max
            .fetch_max(micros, Ordering::Relaxed);
        self.release(c.outputs);
        Ok(())
    }

    /// Sends a committed batch's replies, SIP datagrams and frames. A socket whose queue is
    /// full or gone is dropped; a panel's loss goes to the core with the next batch.
    fn release(&mut self, outputs: Outputs) {
        let Outputs {
            replies,
            sip,
            frames,
            requests,
        } = outputs;
        if requests > 0 {
            self.metrics.batches.fetch_add(1, Ordering::Relaxed);
            self.metrics.commands.fetch_add(requests, Ordering::Relaxed);
        }
        for reply in replies {
            reply();
        }
        for datagram in sip {
            let _ = self.sip_tx.send(datagram);
        }
        let mut dropped = Vec::new();
        for (socket, tx, key, frame) in frames {
            if let Err(e) = tx.push(key, frame) {
                dropped.push((socket, e));
            }
        }
        for (socket, why) in dropped {
            // Full (a client that reads nothing) or gone: drop the subscription, which
            // closes a live socket with 1013; a panel resumes with a fresh snapshot.
            let sub = self.hub.remove(socket);
            if sub.is_some() && why == crate::fanout::PushError::Full {
                self.metrics
                    .sockets_dropped_slow
                    .fetch_add(1, Ordering::Relaxed);
            }
            if let Some(Sub::Panel(_)) = sub {
                // Its writes and frames go with the next batch.
                // Full means too slow; gone means the socket went away without a word.
                let cause = if why == crate::fanout::PushError::Full {
                    LossCause::TooSlow
                } else {
                    LossCause::Dropped
                };
                let now = self.clock.now();
                let _ = self
                    .core
                    .handle(now, Command::DetachPanel { socket, cause });
            }
        }
    }

    /// Subscribes a socket and runs its attach command in the batch's order, so it receives
    /// exactly the frames that follow its snapshot.
    fn attach(
        &mut self,
        now: Now,
        kind: Sub,
        token: TokenHash,
        pending: &mut Pending,
    ) -> Result<(u64, FrameRx, Reply), Rejection> {
        let next = self.hub.next_socket + 1;
        let (cmd, sub) = match kind {
            Sub::Panel(_) => {
                let agent = match self.core.handle(now, Command::Authenticate { token })? {
                    Reply::Principal(crate::core::Principal::Agent { agent, .. }) => agent,
                    _ => {
                        return Err(Rejection::Forbidden(
                            "this socket needs an agent token".into(),
                        ));
                    }
                };
                (
                    Command::AttachPanel {
                        token,
                        socket: next,
                    },
                    Sub::Panel(agent),
                )
            }
            Sub::Chat(_) => {
                let thread = match self.core.handle(now, Command::Authenticate { token })? {
                    Reply::Principal(crate::core::Principal::Customer { thread, .. }) => thread,
                    _ => {
                        return Err(Rejection::Forbidden(
                            "this socket needs a customer chat token".into(),
                        ));
                    }
                };
                let max = self.core.policy().limits.max_sockets_per_chat;
                if self.hub.chats.get(&thread).is_some_and(|s| s.len() >= max) {
                    return Err(Rejection::conflict(
                        "too_many_sockets",
                        format!(
                            "this chat already has {max} connections (limits.max_sockets_per_chat)"
                        ),
                    ));
                }
                (Command::AttachChat { token }, Sub::Chat(thread))
            }
            Sub::Dashboard => return Err(Rejection::Unauthorized),
        };
        let (id, rx) = self.hub.add(sub);
        match self.core.handle(now, cmd) {
            Ok(reply) => {
                // Frames caused by the attach itself (e.g. an offer) follow the snapshot,
                // which already shows them: skip them for the new socket only.
                self.route_effects_except(pending, Some(id));
                Ok((id, rx, reply))
            }
            Err(e) => {
                self.hub.remove(id);
                self.route_effects(pending);
                Err(e)
            }
        }
    }

    /// Turns a callback on a conversation no longer in memory into one the core can serve.
    fn preload(&mut self, cmd: Command) -> Command {
        if let Command::Callback { conversation, .. } = &cmd {
            if self.core.conversation(conversation).is_none() {
                if let Ok(Some((c, _))) = self.store.conversation(*conversation) {
                    self.core.adopt_closed(c);
                }
            }
        }
        cmd
    }

    fn route_effects(&mut self, pending: &mut Pending) {
        self.route_effects_except(pending, None);
    }

    /// Resolves the core's effects to sockets now (so a socket subscribed later in the batch
    /// does not get frames from before its snapshot).
    fn route_effects_except(&mut self, pending: &mut Pending, skip: Option<u64>) {
        while let Some(effect) = self.core.poll_effect() {
            match effect {
                Effect::Panel { agent, event } => {
                    if let Some(socks) = self.hub.panels.get(&agent) {
                        let frame = json(&event);
                        let key = panel_key(&event);
                        for (id, tx) in socks {
                            if Some(*id) != skip {
                                let text = Outgoing::Text(frame.clone());
                                pending.push((*id, tx.clone(), key.clone(), text));
                            }
                        }
                    }
                }
                Effect::Chat { thread, event } => {
                    if let Some(socks) = self.hub.chats.get(&thread) {
                        let frame = json(&event);
                        let key = chat_key(&event);
                        for (id, tx) in socks {
                            if Some(*id) != skip {
                                let text = Outgoing::Text(frame.clone());
                                pending.push((*id, tx.clone(), key.clone(), text));
                            }
                        }
                    }
                }
                Effect::Dashboard(event) => {
                    if !self.hub.dashboards.is_empty() {
                        let frame = json(&event);
                        let key = dashboard_key(&event);
                        for (id, tx) in &self.hub.dashboards {
                            let text = Outgoing::Text(frame.clone());
                            pending.push((*id, tx.clone(), key.clone(), text));
                        }
                    }
                }
                Effect::ClosePanels { sockets, code } => {
                    for s in sockets {
                        if let Some(tx) = self.hub.sender(s) {
                            let reason = if code == 4001 {
                                "session taken over"
                            } else {
                                "session ended"
                            };
                            pending.push((s, tx, None, Outgoing::Close(code, reason)));
                        }
                        self.hub.remove(s);
                    }
                }
                Effect::CloseChat { thread } => {
                    if let Some(socks) = self.hub.chats.get(&thread) {
                        for (id, tx) in socks {
                            let close = Outgoing::Close(1000, "chat ended");
                            pending.push((*id, tx.clone(), None, close));
                        }
                    }
                }
                Effect::Deliver(item) => {
                    if let Some(out) = &self.outbound {
                        let _ = out.send(*item);
                    }
                }
                Effect::SipSend { to, bytes } => self.sip_pending.push((to, bytes)),
            }
        }
    }
}
