//! Demo layer (above [`crate::app`], used only by `switchboard demo`): a built-in
//! configuration, a temporary data directory, and a simulation of customers on every medium,
//! agents, their SIP phones and a SIP trunk driving a real server in the same process.
//!
//! [`run`] is the whole command. Tests use [`Demo::build`] (with [`DemoClock::Manual`] under a
//! paused tokio clock, the story runs at full speed) and then [`Demo::run`].

mod answer;
mod call;
mod dial;
mod phone;
mod sim;
mod sink;
mod text;
mod trunk;

pub use trunk::TrunkCounts;

use crate::app::{App, AppError, Listeners};
use crate::config::{
    AgentConfig, ApiKeyConfig, Capacity, Channel, Config, ConfigError, QueueConfig,
    RequeuePosition, SupervisorConfig,
};
use crate::driver::{Clock, Handle};
use crate::http::AppState;
use crate::store::{Store, StoreError};
use sim::{AgentPlan, EMAIL_QUEUE, MESSAGING_QUEUE, VOICE_QUEUE, WEBCHAT_QUEUE};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};

/// Where the demo listens unless told otherwise (a free port is used if these are taken).
pub const DEFAULT_HTTP: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
pub const DEFAULT_SIP: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 5060);

/// The human agent's login (username = password).
pub const AGENT_LOGIN: &str = "agent";
/// The supervisor's login (username = password).
pub const SUPERVISOR_LOGIN: &str = "supervisor";
/// The human agent's SIP password, for a softphone.
pub const AGENT_SIP_PASSWORD: &str = "agent";
/// The integration API key of the demo (`Authorization: Bearer …` on `/api/v1/inbound/*`).
pub const API_KEY: &str = "demo-integration-key";
/// The simulated agent whose connection fails now and then.
pub const FLAKY_AGENT: &str = "tomas";

/// `switchboard demo` options.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DemoArgs {
    /// HTTP address [default: 127.0.0.1:8080, or a free port if it is taken]
    #[arg(long, value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// SIP (UDP) address [default: 127.0.0.1:5060, or a free port if it is taken]
    #[arg(long, value_name = "ADDR")]
    pub sip: Option<SocketAddr>,
    /// Seed of the simulation's random choices [default: random]
    #[arg(long)]
    pub seed: Option<u64>,
}

/// Which clock the demo's server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoClock {
    /// The system clock: the live demo.
    System,
    /// A manual clock starting at this wall time (Unix ms). Its readings follow tokio's clock,
    /// so under `tokio::time::pause()` the whole demo runs on simulated time.
    Manual { start_wall: i64 },
}

/// Everything [`Demo::build`] needs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// `None`: [`DEFAULT_HTTP`], or a free loopback port if it is taken.
    pub http: Option<SocketAddr>,
    /// `None`: [`DEFAULT_SIP`], or a free loopback port if it is taken.
    pub sip: Option<SocketAddr>,
    pub seed: Option<u64>,
    pub clock: DemoClock,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            http: None,
            sip: None,
            seed: None,
            clock: DemoClock::System,
        }
    }
}

impl From<DemoArgs> for DemoOptions {
    fn from(a: DemoArgs) -> Self {
        DemoOptions {
            http: a.http,
            sip: a.sip,
            seed: a.seed,
            clock: DemoClock::System,
        }
    }
}

/// Why the demo could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("temporary data directory {}: {source}", path.display())]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("hashing the demo passwords: {0}")]
    Hash(String),
    #[error("the built-in configuration is invalid: {0}")]
    Config(#[from] ConfigError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    App(#[from] AppError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// A temporary data directory, removed when dropped.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn create() -> Result<TempDir, DemoError> {
        let name = format!(
            "switchboard-demo-{}-{}",
            std::process::id(),
            hex::encode(rand::random::<[u8; 4]>())
        );
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).map_err(|source| DemoError::DataDir {
            path: path.clone(),
            source,
        })?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A demo ready to run: listeners bound, store opened, server built.
pub struct Demo {
    app: App,
    dir: TempDir,
    sink: TcpListener,
    setup: sim::Setup,
    delivered_tx: mpsc::UnboundedSender<sink::Delivered>,
    trunk: TrunkParts,
}

/// The simulated trunk, bound and waiting for [`Demo::run`].
struct TrunkParts {
    sock: UdpSocket,
    server: SocketAddr,
    calls: mpsc::UnboundedReceiver<dial::Placed>,
    counts: Arc<TrunkCounts>,
    seed: u64,
}

impl std::fmt::Debug for Demo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Demo").field("dir", &self.dir).finish()
    }
}

/// Binds `explicit`, or `default` falling back to a free loopback port.
async fn bind_tcp(
    explicit: Option<SocketAddr>,
    default: SocketAddr,
) -> Result<TcpListener, DemoError> {
    let addr = explicit.unwrap_or(default);
    match TcpListener::bind(addr).await {
        Ok(l) => Ok(l),
        Err(_) if explicit.is_none() => {
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .await
                .map_err(|source| DemoError::Bind {
                    what: "HTTP",
                    addr,
                    source,
                })
        }
        Err(source) => Err(DemoError::Bind {
            what: "HTTP",
            addr,
            source,
        }),
    }
}

async fn bind_udp(
    explicit: Option<SocketAddr>,
    default: SocketAddr,
) -> Result<UdpSocket, DemoError> {
    let addr = explicit.unwrap_or(default);
    match UdpSocket::bind(addr).await {
        Ok(s) => Ok(s),
        Err(_) if explicit.is_none() => {
            UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
                .await
                .map_err(|source| DemoError::Bind {
                    what: "SIP",
                    addr,
                    source,
                })
        }
        Err(source) => Err(DemoError::Bind {
            what: "SIP",
            addr,
            source,
        }),
    }
}

/// The address the simulated parties send to: the SIP listen address, or loopback when it
/// listens on every interface.
fn reachable(sip: SocketAddr) -> SocketAddr {
    if sip.ip().is_unspecified() {
        SocketAddr::new(loopback_like(sip), sip.port())
    } else {
        sip
    }
}

/// The loopback address of `addr`'s family.
fn loopback_like(addr: SocketAddr) -> std::net::IpAddr {
    if addr.is_ipv6() {
        std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
    } else {
        std::net::IpAddr::V4(Ipv4Addr::LOCALHOST)
    }
}

/// An argon2id PHC string for `password`. The demo uses light parameters: its passwords are
/// printed on the screen anyway.
fn hash_password(password: &str) -> Result<String, DemoError> {
    use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
    let params =
        argon2::Params::new(8 * 1024, 1, 1, None).map_err(|e| DemoError::Hash(e.to_string()))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::generate(&mut OsRng);
    argon
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| DemoError::Hash(e.to_string()))
}

/// The simulated agents: (id, name, flaky, takes breaks).
const SIMULATED: &[(&str, &str, bool, bool)] = &[
    (FLAKY_AGENT, "Tomás Novak", true, false),
    ("maria", "Maria Santos", false, false),
    ("james", "James Okafor", false, false),
    ("priya", "Priya Nair", false, false),
    ("chen", "Chen Wei", false, false),
    ("olivia", "Olivia Brown", false, true),
];

/// The simulated agents who answer the phone.
const VOICE_AGENTS: &[&str] = &[FLAKY_AGENT, "maria"];

fn queue(id: &str, name: &str, channel: Channel) -> QueueConfig {
    QueueConfig {
        id: id.into(),
        name: name.into(),
        channel,
        offer_timeout: None,
        not_ready_after_no_response: true,
        session_lost_prompt: None,
        reconnecting_prompt: None,
        requeue_position: RequeuePosition::Original,
        sticky_agent: std::time::Duration::ZERO,
    }
}

/// The built-in configuration: four queues (web chat, sms + social, voice, email), the
/// simulated agents, the human agent `agent` and the supervisor `supervisor`. Grace and
/// heartbeats are the product defaults.
/// The demo's grace period (deployments default to 60 s).
pub const DEMO_GRACE: Duration = Duration::from_secs(40);

fn demo_config(
    http: SocketAddr,
    sip: SocketAddr,
    trunk: SocketAddr,
    data_dir: &Path,
    sink: SocketAddr,
    agents: &[AgentPlan],
) -> Result<Config, DemoError> {
    let mut cfg = Config::default();
    cfg.server.http_listen = http;
    cfg.server.data_dir = data_dir.to_path_buf();
    cfg.sip.listen = sip;
    // The simulated trunk sends the customers' calls in and receives the callbacks.
    cfg.sip.trunks = vec![trunk.ip().to_string()];
    cfg.sip.outbound_proxy = Some(format!(
        "sip:{}",
        switchboard_core::sip::proxy::host_port(trunk)
    ));
    // A shorter grace period than the product's 60 s, so a visitor sees the whole story
    // (loss, grace, requeue) within the first minute.
    cfg.resilience.session_grace = DEMO_GRACE;
    let mut support = queue(WEBCHAT_QUEUE, "Web chat support", Channel::Chat);
    support.reconnecting_prompt = Some(
        "Your agent's connection dropped for a moment. Please stay with us: they will be right back."
            .into(),
    );
    support.session_lost_prompt = Some(
        "Sorry, your agent was disconnected. You keep your place in the queue and the next agent will continue with you."
            .into(),
    );
    let mut messaging = queue(MESSAGING_QUEUE, "SMS and social", Channel::Chat);
    messaging.reconnecting_prompt = support.reconnecting_prompt.clone();
    messaging.session_lost_prompt = support.session_lost_prompt.clone();
    cfg.queues = vec![
        support,
        messaging,
        queue(VOICE_QUEUE, "Phone line", Channel::Voice),
        queue(EMAIL_QUEUE, "Email", Channel::Email),
    ];
    let all_queues: Vec<String> = cfg.queues.iter().map(|q| q.id.clone()).collect();
    let mut list = Vec::new();
    for a in agents {
        // The simulated agents take one chat at a time and only two of them answer the
        // phone, so they are busy: work that arrives finds the human agent when they are
        // ready, and a customer in the browser sees their place in the queue.
        let queues = all_queues
            .iter()
            .filter(|q| q.as_str() != sim::VOICE_QUEUE || VOICE_AGENTS.contains(&a.id.as_str()))
            .cloned()
            .collect();
        list.push(AgentConfig {
            id: a.id.clone(),
            name: a.name.clone(),
            // Nobody logs in as a simulated agent: a random password nobody knows.
            password_hash: hash_password(&crate::http::extract::new_token())?,
            sip_password: a.sip_password.clone(),
            queues,
            capacity: Capacity {
                voice: 1,
                chat: 1,
                email: 2,
            },
        });
    }
    list.push(AgentConfig {
        id: AGENT_LOGIN.into(),
        name: "You (demo agent)".into(),
        password_hash: hash_password(AGENT_LOGIN)?,
        sip_password: AGENT_SIP_PASSWORD.into(),
        queues: all_queues,
        capacity: Capacity::default(),
    });
    cfg.agents = list;
    cfg.supervisors = vec![SupervisorConfig {
        id: SUPERVISOR_LOGIN.into(),
        name: "Demo Supervisor".into(),
        password_hash: hash_password(SUPERVISOR_LOGIN)?,
    }];
    use sha2::Digest;
    cfg.api_keys = vec![ApiKeyConfig {
        id: "demo".into(),
        key_sha256: hex::encode(sha2::Sha256::digest(API_KEY.as_bytes())),
    }];
    let hook = |medium: &str| Some(format!("http://{sink}/outbound/{medium}"));
    cfg.outbound.sms = hook("sms");
    cfg.outbound.social = hook("social");
    cfg.outbound.email = hook("email");
    cfg.validate()?;
    Ok(cfg)
}

impl Demo {
    /// Creates the temporary data directory, binds the listeners and builds the server.
    pub async fn build(options: DemoOptions) -> Result<Demo, DemoError> {
        let dir = TempDir::create()?;
        let http = bind_tcp(options.http, DEFAULT_HTTP).await?;
        let sip = bind_udp(options.sip, DEFAULT_SIP).await?;
        let sink = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|source| DemoError::Bind {
                what: "the outbound webhook receiver",
                addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                source,
            })?;
        let (http_addr, sip_addr, sink_addr) =
            (http.local_addr()?, sip.local_addr()?, sink.local_addr()?);
        let sip_server = reachable(sip_addr);
        let trunk_sock = UdpSocket::bind(SocketAddr::new(loopback_like(sip_server), 0))
            .await
            .map_err(|source| DemoError::Bind {
                what: "the simulated trunk",
                addr: SocketAddr::new(loopback_like(sip_server), 0),
                source,
            })?;
        let trunk_addr = trunk_sock.local_addr()?;
        let agents: Vec<AgentPlan> = SIMULATED
            .iter()
            .map(|(id, name, flaky, breaks)| AgentPlan {
                id: (*id).to_string(),
                name: (*name).to_string(),
                sip_password: crate::http::extract::new_token(),
                flaky: *flaky,
                takes_breaks: *breaks,
            })
            .collect();
        let cfg = Arc::new(demo_config(
            http_addr, sip_addr, trunk_addr, &dir.0, sink_addr, &agents,
        )?);
        let store = Arc::new(Store::open(&Store::file_in(&dir.0))?);
        let clock = match options.clock {
            DemoClock::System => Clock::system(),
            DemoClock::Manual { start_wall } => Clock::manual(start_wall),
        };
        let app = App::build(
            cfg.clone(),
            Listeners {
                http,
                sip: Some(sip),
            },
            store,
            clock,
        )?;
        let (delivered_tx, delivered_rx) = mpsc::unbounded_channel();
        let (trunk_tx, trunk_rx) = mpsc::unbounded_channel();
        let seed = options.seed.unwrap_or_else(rand::random);
        let setup = sim::Setup {
            handle: app.handle.clone(),
            sip: Some(sip_addr),
            trunk: trunk_tx,
            agents,
            seed,
            grace: cfg.resilience.session_grace,
            delivered: delivered_rx,
        };
        let trunk = TrunkParts {
            sock: trunk_sock,
            server: sip_server,
            calls: trunk_rx,
            counts: Arc::default(),
            seed: seed.rotate_left(17),
        };
        Ok(Demo {
            app,
            dir,
            sink,
            setup,
            delivered_tx,
            trunk,
        })
    }

    /// The driver handle (tests: inspect the core, read the clock).
    pub fn handle(&self) -> Handle {
        self.app.handle.clone()
    }

    /// The server's state (tests: the store).
    pub fn state(&self) -> AppState {
        self.app.state.clone()
    }

    pub fn http_addr(&self) -> std::io::Result<SocketAddr> {
        self.app.http_addr()
    }

    pub fn sip_addr(&self) -> Option<SocketAddr> {
        self.app.sip_addr()
    }

    /// What the simulated trunk has seen (tests: calls placed, answered, called back).
    pub fn trunk_counts(&self) -> Arc<TrunkCounts> {
        self.trunk.counts.clone()
    }

    /// The temporary data directory (removed when the demo ends).
    pub fn data_dir(&self) -> &Path {
        &self.dir.0
    }

    /// What the demo prints at start: where to go, the logins, what to watch for.
    pub fn banner(&self) -> String {
        let http = self
            .http_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| DEFAULT_HTTP.to_string());
        let sip = self
            .sip_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "off".into());
        let trunk = self
            .trunk
            .sock
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "loopback".into());
        format!(
            "\
switchboard demo: a real server with simulated customers and agents, all in this process.
Data lives in {dir} and is deleted when you stop the demo (Ctrl-C).

  Open            http://{http}/
  Agent login     {agent} / {agent}            (the Communication Panel: offers come to you too)
  Supervisor      {sup} / {sup}  (the Dashboard)
  Customer chat   http://{http}/chat?queue={support}
  Softphone       SIP over UDP to {sip}, user {agent}, password {agent_sip} (to take calls)
  Integration     API key {api_key} on /api/v1/inbound/messages, /emails, /calls

Simulated: customers on web chat, SMS, social, email and phone; 6 agents answer them.
Phone calls are real SIP calls over UDP, signalling only (no audio):
  Trunk           {trunk} (the customers' phone network) calls sip:{voice}@{sip}
switchboard rings the phone of an agent who takes calls (Tomás, Maria, and you once your
softphone is registered); the phone rings, is picked up, and the call ends with a BYE from
the caller or the agent's phone.
What to watch for on the Dashboard:
  * About 10 s in, Tomás Novak ({flaky}) loses his connection while he holds a chat and a
    call. The call ends at once: BYE to his phone and to the caller (disconnect party agent,
    reason AgentConnectionLost); the chat stays his during the 40 s grace period of the demo
    (60 s by default), and the customer is told he is reconnecting.
  * He does not come back in time: at the deadline the chat is closed with AgentSessionLost
    and a new conversation of the same group is queued with the original arrival time. Click
    its Group ID to see both, and who picked it up.
  * Later he sometimes returns within the grace period and carries on. A call that dropped
    meanwhile he calls back: his phone rings first, then switchboard calls the customer
    through the trunk (its outbound proxy), who answers. Now and then his phone stops
    refreshing its SIP registration (banner in his panel, voice off) and registers again a
    minute later.
",
            dir = self.dir.0.display(),
            agent = AGENT_LOGIN,
            sup = SUPERVISOR_LOGIN,
            support = WEBCHAT_QUEUE,
            agent_sip = AGENT_SIP_PASSWORD,
            api_key = API_KEY,
            flaky = FLAKY_AGENT,
            voice = VOICE_QUEUE,
        )
    }

    /// Runs the server and the simulation until `shutdown` resolves; then stops the
    /// simulation, shuts the server down gracefully and removes the data directory.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), DemoError> {
        let Demo {
            app,
            dir,
            sink,
            setup,
            delivered_tx,
            trunk,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let sink_stop = {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        let sink_task = tokio::spawn(async move {
            let _ = axum::serve(sink, sink::router(delivered_tx))
                .with_graceful_shutdown(sink_stop)
                .await;
        });
        tokio::spawn(trunk::run(
            trunk.sock,
            trunk.server,
            app.handle.clock.clone(),
            trunk.seed,
            trunk.calls,
            trunk.counts,
            stop_rx.clone(),
        ));
        let sim_task = tokio::spawn(sim::run(setup, stop_rx));
        let result = app
            .run(async move {
                shutdown.await;
                let _ = stop_tx.send(true);
                // Let the simulated parties notice before the server goes away.
                let _ = tokio::time::timeout(Duration::from_secs(5), sim_task).await;
            })
            .await;
        let _ = tokio::time::timeout(Duration::from_secs(5), sink_task).await;
        drop(dir);
        result.map_err(DemoError::from)
    }
}

/// `switchboard demo`: builds the demo, prints where to go, runs until `shutdown`.
pub async fn run(
    options: DemoOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), DemoError> {
    let demo = Demo::build(options).await?;
    println!("{}", demo.banner());
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    demo.run(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn taken_default_port_falls_back_to_a_free_one_but_an_explicit_one_is_an_error() {
        let taken = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = taken.local_addr().expect("addr");
        let fallback = bind_tcp(None, addr).await.expect("fallback");
        assert_ne!(fallback.local_addr().expect("addr").port(), addr.port());
        assert!(matches!(
            bind_tcp(Some(addr), DEFAULT_HTTP).await,
            Err(DemoError::Bind { what: "HTTP", .. })
        ));

        let taken = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = taken.local_addr().expect("addr");
        let fallback = bind_udp(None, addr).await.expect("fallback");
        assert_ne!(fallback.local_addr().expect("addr").port(), addr.port());
        assert!(bind_udp(Some(addr), DEFAULT_SIP).await.is_err());
    }

    #[test]
    fn built_in_configuration_is_valid_and_covers_every_channel() {
        let agents = vec![AgentPlan {
            id: FLAKY_AGENT.into(),
            name: "Tomás Novak".into(),
            sip_password: "x".into(),
            flaky: true,
            takes_breaks: false,
        }];
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let cfg = demo_config(addr, addr, addr, Path::new("/tmp/x"), addr, &agents).expect("valid");
        let channels: Vec<Channel> = cfg.queues.iter().map(|q| q.channel).collect();
        for c in Channel::ALL {
            assert!(channels.contains(&c), "a queue for {c}");
        }
        assert_eq!(cfg.resilience.session_grace, DEMO_GRACE);
        assert!(cfg.agents.iter().any(|a| a.id == AGENT_LOGIN));
        assert!(cfg.supervisors.iter().any(|s| s.id == SUPERVISOR_LOGIN));
        let hash = &cfg
            .agents
            .iter()
            .find(|a| a.id == AGENT_LOGIN)
            .expect("agent")
            .password_hash;
        let parsed = argon2::PasswordHash::new(hash).expect("phc");
        use argon2::PasswordVerifier;
        assert!(
            argon2::Argon2::default()
                .verify_password(AGENT_LOGIN.as_bytes(), &parsed)
                .is_ok()
        );
    }

    #[test]
    fn temporary_data_directory_is_removed_on_drop() {
        let dir = TempDir::create().expect("create");
        let path = dir.0.clone();
        std::fs::write(path.join("f"), b"x").expect("write");
        assert!(path.is_dir());
        drop(dir);
        assert!(!path.exists());
    }
}
