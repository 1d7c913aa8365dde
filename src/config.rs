//! Configuration: the `config.toml` schema, its defaults, and validation.
//!
//! Pure: parsing and validation only, plus [`SharedConfig`], the configuration in force that a
//! reload replaces (handed to the adapters). The one piece of I/O is [`Config::load`], which
//! reads the file. No sockets, no clock, no tokio. Every section and key has a default, so an empty file
//! (or no file at all, via [`Config::default`]) is a valid configuration that listens on
//! loopback only. Unknown keys are rejected by name; validation reports every problem at once,
//! each prefixed with the key path it concerns (`agents[2].queues: ...`).

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod file;

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// One problem of a configuration, with its place in the file when it was read from one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line of the file.
    pub line: Option<usize>,
    /// 1-based column (in characters), for syntax and schema errors.
    pub column: Option<usize>,
    /// What is wrong, starting with the key path it concerns (`agents[2].queues: ...`).
    pub message: String,
}

impl Problem {
    /// A problem with no place in a file (a configuration built in code).
    pub(super) fn unplaced(message: String) -> Problem {
        Problem {
            line: None,
            column: None,
            message,
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(column)) => {
                write!(f, "line {line}, column {column}: {}", self.message)
            }
            (Some(line), None) => write!(f, "line {line}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read. (The reason is part of the message, not a separate source,
    /// so a printed error chain states it once.)
    #[error("cannot read config file {}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The text is not valid TOML, or does not match the schema (unknown key, wrong type,
    /// bad duration, missing required key). `problems` holds every such error, each naming
    /// the offending key with its line and column, and, unless the text is not TOML at all,
    /// the rules the rest of the file breaks, all in line order.
    #[error("{}{}", file_prefix(path.as_deref()), list(problems))]
    Parse {
        path: Option<PathBuf>,
        problems: Vec<Problem>,
    },
    /// The configuration breaks one or more rules. Every problem is listed, one per line, in
    /// line order when it was read from a file, each starting with the key path it concerns.
    #[error("{}{}", file_prefix(path.as_deref()), list(problems))]
    Invalid {
        path: Option<PathBuf>,
        problems: Vec<Problem>,
    },
}

fn file_prefix(path: Option<&Path>) -> String {
    match path {
        Some(p) => format!("{}: ", p.display()),
        None => String::new(),
    }
}

/// `invalid configuration (N problems):` and one problem per line.
fn list(problems: &[Problem]) -> String {
    let count = match problems.len() {
        1 => "1 problem".to_owned(),
        n => format!("{n} problems"),
    };
    let mut out = format!("invalid configuration ({count}):");
    for p in problems {
        out.push('\n');
        out.push_str(&p.to_string());
    }
    out
}

impl ConfigError {
    /// What is wrong, one message per problem, in the order reported (empty for I/O errors).
    pub fn problems(&self) -> Vec<&str> {
        self.located().iter().map(|p| p.message.as_str()).collect()
    }

    /// Every problem with its line and column in the file (empty for I/O errors).
    pub fn located(&self) -> &[Problem] {
        match self {
            ConfigError::Parse { problems, .. } | ConfigError::Invalid { problems, .. } => problems,
            ConfigError::Io { .. } => &[],
        }
    }

    fn with_path(self, file: &Path) -> Self {
        match self {
            ConfigError::Parse { problems, .. } => ConfigError::Parse {
                path: Some(file.to_path_buf()),
                problems,
            },
            ConfigError::Invalid { problems, .. } => ConfigError::Invalid {
                path: Some(file.to_path_buf()),
                problems,
            },
            io @ ConfigError::Io { .. } => io,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Durations
// ---------------------------------------------------------------------------------------------

pub use switchboard_core::duration::{
    duration_str, format_duration, option_duration_str, parse_duration,
};

// ---------------------------------------------------------------------------------------------
// Schema
// ---------------------------------------------------------------------------------------------

/// The most SIP contacts per agent `sip.max_bindings_per_agent` may allow: with contact URIs
/// up to a few hundred bytes, a `200 OK` listing them all stays within one UDP datagram.
pub const MAX_BINDINGS_PER_AGENT: usize = 100;

/// The whole configuration (`config.toml`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[server]`
    pub server: ServerConfig,
    /// `[resilience]`
    pub resilience: ResilienceConfig,
    /// `[sip]`
    pub sip: SipConfig,
    /// `[limits]`
    pub limits: LimitsConfig,
    /// `[log]`
    pub log: LogConfig,
    /// `[store]`
    pub store: StoreConfig,
    /// `[cluster]`
    pub cluster: ClusterConfig,
    /// `[outbound]`
    pub outbound: OutboundConfig,
    /// `[[queues]]`
    pub queues: Vec<QueueConfig>,
    /// `[[agents]]`
    pub agents: Vec<AgentConfig>,
    /// `[[supervisors]]`
    pub supervisors: Vec<SupervisorConfig>,
    /// `[[api_keys]]`
    pub api_keys: Vec<ApiKeyConfig>,
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// HTTP (and WebSocket) listen address.
    pub http_listen: SocketAddr,
    /// Directory of the redb store.
    pub data_dir: PathBuf,
    /// `[server.tls]`: serve HTTPS instead of HTTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            http_listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            data_dir: PathBuf::from("./data"),
            tls: None,
        }
    }
}

/// `[store]`: where the state lives.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `redb` (one embedded file in `server.data_dir`) or `postgres` (a shared database).
    pub backend: StoreBackend,
    /// `postgres://user@host:port/database?sslmode=...`; the password may instead come from
    /// the environment variable `SWITCHBOARD_POSTGRES_PASSWORD`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres_url: Option<String>,
}

/// `store.backend`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    #[default]
    Redb,
    Postgres,
}

/// `[cluster]`: two or more nodes on one PostgreSQL database, one active at a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Unique per node.
    pub node_id: String,
    /// A standby takes over this long after the active node stopped renewing its lease.
    #[serde(with = "duration_str")]
    pub lease: Duration,
    /// How browsers reach this node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_url: Option<String>,
    /// The other nodes' URLs, for the pages to fail over to.
    pub peers: Vec<String>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node_id: String::new(),
            lease: Duration::from_secs(5),
            advertise_url: None,
            peers: Vec::new(),
        }
    }
}

/// `[server.tls]`: PEM files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[resilience]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResilienceConfig {
    #[serde(with = "duration_str")]
    pub session_grace: Duration,
    #[serde(with = "duration_str")]
    pub heartbeat_interval: Duration,
    #[serde(with = "duration_str")]
    pub heartbeat_timeout: Duration,
    /// The reconnecting prompt goes out only when the agent is still away this long after
    /// the loss (docs/rescue.md#prompt-delay).
    #[serde(with = "duration_str")]
    pub reconnecting_prompt_delay: Duration,
    /// Abrupt losses within `flap_window` that switch the agent to not ready (0 = off).
    pub flap_limit: u32,
    #[serde(with = "duration_str")]
    pub flap_window: Duration,
}

/// The largest accepted `resilience.flap_limit`.
pub const MAX_FLAP_LIMIT: u32 = 100;

impl Default for ResilienceConfig {
    fn default() -> Self {
        Self {
            session_grace: Duration::from_secs(60),
            heartbeat_interval: Duration::from_secs(5),
            heartbeat_timeout: Duration::from_secs(15),
            reconnecting_prompt_delay: Duration::from_secs(10),
            flap_limit: 3,
            flap_window: Duration::from_secs(600),
        }
    }
}

/// `[sip]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipConfig {
    pub enabled: bool,
    /// UDP listen address.
    pub listen: SocketAddr,
    pub realm: String,
    #[serde(with = "duration_str")]
    pub min_expires: Duration,
    #[serde(with = "duration_str")]
    pub max_expires: Duration,
    #[serde(with = "duration_str")]
    pub default_expires: Duration,
    #[serde(with = "duration_str")]
    pub nonce_ttl: Duration,
    /// Per source IP.
    pub max_failed_auth_per_minute: u32,
    /// Contacts one agent may have registered at once.
    pub max_bindings_per_agent: usize,
    /// Sources allowed to send calls in (IP addresses or CIDR blocks).
    pub trunks: Vec<String>,
    /// Where callbacks to customers go, as `sip:IP:PORT`.
    pub outbound_proxy: Option<String>,
    /// Most calls in progress at once.
    pub max_calls: u32,
}

/// The address of `sip:IP[:PORT]` (port 5060 when absent).
pub fn outbound_proxy_addr(uri: &str) -> Option<SocketAddr> {
    let u = switchboard_core::sip::message::parse_sip_uri(uri.trim()).ok()?;
    let ip: std::net::IpAddr = u.host.trim_matches(['[', ']']).parse().ok()?;
    Some(SocketAddr::new(ip, u.port.unwrap_or(5060)))
}

impl Default for SipConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 5060)),
            realm: "switchboard".to_owned(),
            min_expires: Duration::from_secs(10),
            max_expires: Duration::from_secs(30),
            default_expires: Duration::from_secs(30),
            nonce_ttl: Duration::from_secs(5 * 60),
            max_failed_auth_per_minute: 30,
            max_bindings_per_agent: 10,
            trunks: Vec::new(),
            outbound_proxy: None,
            max_calls: 500,
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_body_bytes: usize,
    pub max_message_chars: usize,
    pub max_email_bytes: usize,
    pub ws_max_frame_bytes: usize,
    pub ws_max_message_bytes: usize,
    pub ws_read_buffer_bytes: usize,
    pub ws_write_buffer_bytes: usize,
    pub max_sockets_per_session: usize,
    /// Per client IP.
    pub login_per_minute: u32,
    /// Per client IP.
    pub chats_per_minute: u32,
    /// Chat sockets one customer token may hold at once.
    pub max_sockets_per_chat: usize,
    /// Messages one chat, SMS or social conversation may hold.
    pub max_messages_per_thread: usize,
    /// Messages one web chat customer may send per minute.
    pub customer_messages_per_minute: u32,
    /// Most recent messages carried by snapshots and conversation views.
    pub snapshot_messages: usize,
    /// Open HTTP connections (WebSockets included) at once.
    pub max_connections: usize,
    /// Longest a client may take to send a request's head.
    #[serde(with = "duration_str")]
    pub http_header_timeout: Duration,
    /// Longest a client may take to send a request's body.
    #[serde(with = "duration_str")]
    pub http_body_timeout: Duration,
    /// An HTTP connection on which nothing moves for this long is closed.
    #[serde(with = "duration_str")]
    pub http_idle_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 65536,
            max_message_chars: 4000,
            max_email_bytes: 262_144,
            ws_max_frame_bytes: 65536,
            ws_max_message_bytes: 65536,
            ws_read_buffer_bytes: 4096,
            ws_write_buffer_bytes: 4096,
            max_sockets_per_session: 4,
            login_per_minute: 10,
            chats_per_minute: 10,
            max_sockets_per_chat: 4,
            max_messages_per_thread: 1000,
            customer_messages_per_minute: 30,
            snapshot_messages: 100,
            max_connections: 10_000,
            http_header_timeout: Duration::from_secs(10),
            http_body_timeout: Duration::from_secs(30),
            http_idle_timeout: Duration::from_secs(60),
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// `error` | `warn` | `info` | `debug` | `trace` | `off`, or a comma-separated list of
    /// those and `target=level` directives (`"info,switchboard::sip=debug"`).
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info".to_owned(),
        }
    }
}

/// `[log] format`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// `[outbound]`: where agent replies on sms, social and email are delivered (webhooks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboundConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sms: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub social: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub max_attempts: u32,
    #[serde(with = "duration_str")]
    pub initial_backoff: Duration,
    #[serde(with = "duration_str")]
    pub max_backoff: Duration,
    #[serde(with = "duration_str")]
    pub timeout: Duration,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            sms: None,
            social: None,
            email: None,
            max_attempts: 10,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(5 * 60),
            timeout: Duration::from_secs(10),
        }
    }
}

pub use switchboard_core::policy::{Capacity, Channel, QueueConfig, RequeuePosition};

/// `[[agents]]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub id: String,
    pub name: String,
    /// argon2id PHC string (`switchboard hash-password`).
    pub password_hash: String,
    /// Plain SIP digest password (digest authentication needs the clear text).
    pub sip_password: String,
    /// Queue ids.
    #[serde(default)]
    pub queues: Vec<String>,
    #[serde(default)]
    pub capacity: Capacity,
}

/// `[[supervisors]]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisorConfig {
    pub id: String,
    pub name: String,
    /// argon2id PHC string (`switchboard hash-password`).
    pub password_hash: String,
}

/// `[[api_keys]]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    pub id: String,
    /// Hex SHA-256 of the key (64 hex characters; normalised to lower case on parse).
    pub key_sha256: String,
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

impl Config {
    /// What the core enforces of this configuration (queues, agents, grace, limits).
    pub fn policy(&self) -> switchboard_core::policy::Policy {
        use switchboard_core::policy::{
            AgentPolicy, LimitsPolicy, Policy, ResiliencePolicy, RetryPolicy, SupervisorPolicy,
        };
        Policy {
            resilience: ResiliencePolicy {
                session_grace: self.resilience.session_grace,
                reconnecting_prompt_delay: self.resilience.reconnecting_prompt_delay,
                flap_limit: self.resilience.flap_limit,
                flap_window: self.resilience.flap_window,
            },
            limits: LimitsPolicy {
                max_message_chars: self.limits.max_message_chars,
                max_email_bytes: self.limits.max_email_bytes,
                max_sockets_per_session: self.limits.max_sockets_per_session,
                max_sockets_per_chat: self.limits.max_sockets_per_chat,
                max_messages_per_thread: self.limits.max_messages_per_thread,
                customer_messages_per_minute: self.limits.customer_messages_per_minute,
                snapshot_messages: self.limits.snapshot_messages,
                max_bindings_per_agent: self.sip.max_bindings_per_agent,
                max_binding_expires: self.sip.max_expires,
            },
            outbound: RetryPolicy {
                max_attempts: self.outbound.max_attempts,
                initial_backoff: self.outbound.initial_backoff,
                max_backoff: self.outbound.max_backoff,
            },
            queues: self.queues.clone(),
            agents: self
                .agents
                .iter()
                .map(|a| AgentPolicy {
                    id: a.id.clone(),
                    name: a.name.clone(),
                    queues: a.queues.clone(),
                    capacity: a.capacity,
                })
                .collect(),
            supervisors: self
                .supervisors
                .iter()
                .map(|s| SupervisorPolicy {
                    id: s.id.clone(),
                    name: s.name.clone(),
                })
                .collect(),
            calls: switchboard_core::policy::CallPolicy {
                trunks: self
                    .sip
                    .trunks
                    .iter()
                    .filter_map(|t| switchboard_core::policy::Cidr::parse(t))
                    .collect(),
                outbound_proxy: self
                    .sip
                    .outbound_proxy
                    .as_deref()
                    .and_then(outbound_proxy_addr),
                max_calls: self.sip.max_calls,
            },
        }
    }

    /// Reads, parses and validates the file at `path`. Every error names the file. Paths in
    /// the result are as written in the file (see [`Config::load_resolved`]).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        Config::from_toml_str(&text).map_err(|e| e.with_path(path))
    }

    /// [`Config::load`], then a relative `server.data_dir` taken from the directory of the
    /// file rather than the working directory: what the server runs with.
    pub fn load_resolved(path: &Path) -> Result<Config, ConfigError> {
        let mut config = Config::load(path)?;
        config.server.data_dir = relative_to_file(path, &config.server.data_dir);
        Ok(config)
    }

    /// The configuration as TOML text (for printing the effective configuration).
    pub fn to_toml_string(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }

    /// A copy safe to print or log: passwords, password hashes and key digests replaced.
    pub fn redacted(&self) -> Config {
        const HIDDEN: &str = "<redacted>";
        let mut c = self.clone();
        for a in &mut c.agents {
            a.password_hash = HIDDEN.to_owned();
            a.sip_password = HIDDEN.to_owned();
        }
        for s in &mut c.supervisors {
            s.password_hash = HIDDEN.to_owned();
        }
        for k in &mut c.api_keys {
            k.key_sha256 = HIDDEN.to_owned();
        }
        if let Some(url) = &mut c.store.postgres_url {
            *url = redact_url(url);
        }
        c
    }

    /// Checks every rule and reports all broken ones, each prefixed with its key path.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let problems = self.rule_problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                path: None,
                problems: problems.into_iter().map(Problem::unplaced).collect(),
            })
        }
    }

    /// Every rule broken, each message starting with the key path it concerns.
    fn rule_problems(&self) -> Vec<String> {
        let mut v = Problems::default();
        self.validate_server(&mut v);
        self.validate_resilience(&mut v);
        self.validate_sip(&mut v);
        self.validate_limits(&mut v);
        self.validate_log(&mut v);
        self.validate_outbound(&mut v);
        self.validate_directory(&mut v);
        self.validate_store_and_cluster(&mut v);
        v.0
    }

    fn validate_store_and_cluster(&self, v: &mut Problems) {
        let postgres = self.store.backend == StoreBackend::Postgres;
        match self.store.postgres_url.as_deref() {
            Some(url) => {
                if let Err(e) = url.parse::<tokio_postgres::Config>() {
                    v.push(format!("store.postgres_url is not a PostgreSQL URL: {e}"));
                }
            }
            None if postgres => {
                v.push("store.postgres_url must be set when store.backend = \"postgres\"")
            }
            None => {}
        }
        let c = &self.cluster;
        if c.lease < Duration::from_millis(500) || c.lease > Duration::from_secs(600) {
            v.push(format!(
                "cluster.lease ({}) must be between 500ms and 10m",
                format_duration(c.lease)
            ));
        }
        if postgres && c.node_id.trim().is_empty() {
            v.push(
                "cluster.node_id must be set (unique per node) when store.backend = \"postgres\"",
            );
        }
        if c.node_id.len() > 64 || c.node_id.chars().any(|ch| ch.is_control()) {
            v.push("cluster.node_id must be at most 64 printable characters");
        }
        let urls = c.advertise_url.iter().map(|u| ("cluster.advertise_url", u));
        let peers = c.peers.iter().map(|u| ("cluster.peers", u));
        for (key, url) in urls.chain(peers) {
            let ok = (url.starts_with("http://") || url.starts_with("https://"))
                && url.len() > "https://".len()
                && !url
                    .chars()
                    .any(|ch| ch.is_whitespace() || ch == '"' || ch == '\'');
            if !ok {
                v.push(format!("{key}: {url:?} is not an http:// or https:// URL"));
            }
        }
    }

    fn validate_server(&self, v: &mut Problems) {
        let s = &self.server;
        if s.data_dir.as_os_str().is_empty() {
            v.push("server.data_dir must not be empty");
        }
        if let Some(tls) = &s.tls {
            if tls.cert.as_os_str().is_empty() {
                v.push("server.tls.cert must not be empty");
            }
            if tls.key.as_os_str().is_empty() {
                v.push("server.tls.key must not be empty");
            }
        }
    }

    fn validate_resilience(&self, v: &mut Problems) {
        let r = &self.resilience;
        v.positive_duration("resilience.session_grace", r.session_grace);
        v.positive_duration("resilience.heartbeat_interval", r.heartbeat_interval);
        if r.heartbeat_timeout <= r.heartbeat_interval {
            v.push(format!(
                "resilience.heartbeat_timeout ({}) must be greater than resilience.heartbeat_interval ({})",
                format_duration(r.heartbeat_timeout),
                format_duration(r.heartbeat_interval)
            ));
        }
        if r.flap_limit > MAX_FLAP_LIMIT {
            v.push(format!(
                "resilience.flap_limit ({}) must be at most {MAX_FLAP_LIMIT} (0 switches flap damping off)",
                r.flap_limit
            ));
        }
        if r.flap_limit > 0 {
            v.positive_duration("resilience.flap_window", r.flap_window);
        }
    }

    fn validate_sip(&self, v: &mut Problems) {
        let s = &self.sip;
        if s.realm.is_empty() {
            v.push("sip.realm must not be empty");
        } else if s
            .realm
            .chars()
            .any(|c| c == '"' || c == '\\' || c.is_control())
        {
            v.push("sip.realm must not contain quotes, backslashes or control characters");
        }
        // SIP expiry values travel as whole seconds.
        let mut whole = true;
        for (key, d) in [
            ("sip.min_expires", s.min_expires),
            ("sip.max_expires", s.max_expires),
            ("sip.default_expires", s.default_expires),
        ] {
            if d.is_zero() {
                v.push(format!("{key} must be greater than zero"));
                whole = false;
            } else if d.subsec_nanos() != 0 {
                v.push(format!(
                    "{key} ({}) must be a whole number of seconds",
                    format_duration(d)
                ));
                whole = false;
            }
        }
        if whole {
            if s.min_expires > s.max_expires {
                v.push(format!(
                    "sip.min_expires ({}) is greater than sip.max_expires ({})",
                    format_duration(s.min_expires),
                    format_duration(s.max_expires)
                ));
            } else if s.default_expires < s.min_expires || s.default_expires > s.max_expires {
                v.push(format!(
                    "sip.default_expires ({}) must be between sip.min_expires ({}) and sip.max_expires ({})",
                    format_duration(s.default_expires),
                    format_duration(s.min_expires),
                    format_duration(s.max_expires)
                ));
            }
        }
        v.positive_duration("sip.nonce_ttl", s.nonce_ttl);
        v.positive(
            "sip.max_failed_auth_per_minute",
            u64::from(s.max_failed_auth_per_minute),
        );
        v.positive(
            "sip.max_bindings_per_agent",
            s.max_bindings_per_agent as u64,
        );
        if s.max_bindings_per_agent > MAX_BINDINGS_PER_AGENT {
            v.push(format!(
                "sip.max_bindings_per_agent ({}) must be at most {MAX_BINDINGS_PER_AGENT}: the 200 OK listing every contact must fit in one UDP datagram",
                s.max_bindings_per_agent
            ));
        }
        for t in &s.trunks {
            if switchboard_core::policy::Cidr::parse(t).is_none() {
                v.push(format!(
                    "sip.trunks: {t:?} is not an IP address or a CIDR block (e.g. \"203.0.113.0/24\")"
                ));
            }
        }
        if let Some(p) = &s.outbound_proxy {
            if outbound_proxy_addr(p).is_none() {
                v.push(format!(
                    "sip.outbound_proxy: {p:?} is not a SIP URI with an IP address (e.g. \"sip:203.0.113.10:5060\")"
                ));
            }
        }
        v.positive("sip.max_calls", u64::from(s.max_calls));
    }

    fn validate_limits(&self, v: &mut Problems) {
        let l = &self.limits;
        for (key, n) in [
            ("limits.max_body_bytes", l.max_body_bytes),
            ("limits.max_message_chars", l.max_message_chars),
            ("limits.max_email_bytes", l.max_email_bytes),
            ("limits.ws_max_frame_bytes", l.ws_max_frame_bytes),
            ("limits.ws_max_message_bytes", l.ws_max_message_bytes),
            ("limits.ws_read_buffer_bytes", l.ws_read_buffer_bytes),
            ("limits.ws_write_buffer_bytes", l.ws_write_buffer_bytes),
            ("limits.max_sockets_per_session", l.max_sockets_per_session),
            ("limits.max_connections", l.max_connections),
            ("limits.max_sockets_per_chat", l.max_sockets_per_chat),
            ("limits.max_messages_per_thread", l.max_messages_per_thread),
            ("limits.snapshot_messages", l.snapshot_messages),
        ] {
            v.positive(key, n as u64);
        }
        v.positive("limits.login_per_minute", u64::from(l.login_per_minute));
        v.positive("limits.chats_per_minute", u64::from(l.chats_per_minute));
        v.positive(
            "limits.customer_messages_per_minute",
            u64::from(l.customer_messages_per_minute),
        );
        v.positive_duration("limits.http_header_timeout", l.http_header_timeout);
        v.positive_duration("limits.http_body_timeout", l.http_body_timeout);
        v.positive_duration("limits.http_idle_timeout", l.http_idle_timeout);
        if l.ws_max_frame_bytes > l.ws_max_message_bytes {
            v.push(format!(
                "limits.ws_max_frame_bytes ({}) is greater than limits.ws_max_message_bytes ({})",
                l.ws_max_frame_bytes, l.ws_max_message_bytes
            ));
        }
    }

    fn validate_log(&self, v: &mut Problems) {
        if let Err(e) = check_log_level(&self.log.level) {
            v.push(format!("log.level: {e}"));
        }
    }

    fn validate_outbound(&self, v: &mut Problems) {
        let o = &self.outbound;
        for (key, url) in [
            ("outbound.sms", &o.sms),
            ("outbound.social", &o.social),
            ("outbound.email", &o.email),
        ] {
            if let Some(url) = url {
                if url.starts_with("https://") {
                    v.push(format!(
                        "{key}: \"{url}\": https webhooks are not supported yet; use http:// to a receiver on a trusted network (e.g. a local relay)"
                    ));
                    continue;
                }
                match url.strip_prefix("http://") {
                    None => v.push(format!("{key}: \"{url}\" must start with http://")),
                    Some(r) if r.is_empty() || r.starts_with('/') => {
                        v.push(format!("{key}: \"{url}\" has no host"))
                    }
                    Some(r) if r.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                        v.push(format!("{key}: \"{url}\" must not contain spaces"))
                    }
                    Some(_) => {}
                }
            }
        }
        v.positive("outbound.max_attempts", u64::from(o.max_attempts));
        v.positive_duration("outbound.initial_backoff", o.initial_backoff);
        v.positive_duration("outbound.timeout", o.timeout);
        if o.max_backoff < o.initial_backoff {
            v.push(format!(
                "outbound.max_backoff ({}) is less than outbound.initial_backoff ({})",
                format_duration(o.max_backoff),
                format_duration(o.initial_backoff)
            ));
        }
    }

    /// Queues, agents, supervisors, API keys and the references between them.
    fn validate_directory(&self, v: &mut Problems) {
        let mut queue_ids: HashMap<&str, usize> = HashMap::new();
        for (i, q) in self.queues.iter().enumerate() {
            let at = format!("queues[{i}]");
            v.id(&at, &q.id);
            if let Some(first) = queue_ids.get(q.id.as_str()) {
                v.push(format!(
                    "{at}.id: duplicate id \"{}\" (first used by queues[{first}])",
                    q.id
                ));
            } else {
                queue_ids.insert(&q.id, i);
            }
            v.non_empty(&format!("{at}.name"), &q.name);
            if let Some(t) = q.offer_timeout {
                v.positive_duration(&format!("{at}.offer_timeout"), t);
            }
            for (key, prompt) in [
                ("session_lost_prompt", &q.session_lost_prompt),
                ("reconnecting_prompt", &q.reconnecting_prompt),
            ] {
                if prompt.as_deref().is_some_and(|p| p.trim().is_empty()) {
                    v.push(format!(
                        "{at}.{key} must not be empty (remove the key to send no prompt)"
                    ));
                }
            }
        }

        // Agents and supervisors share the login namespace.
        let mut logins: HashMap<&str, String> = HashMap::new();
        for (i, a) in self.agents.iter().enumerate() {
            let at = format!("agents[{i}]");
            v.id(&at, &a.id);
            if let Some(first) = logins.get(a.id.as_str()) {
                v.push(format!(
                    "{at}.id: duplicate id \"{}\" (first used by {first})",
                    a.id
                ));
            } else {
                logins.insert(&a.id, at.clone());
            }
            v.non_empty(&format!("{at}.name"), &a.name);
            v.password_hash(&format!("{at}.password_hash"), &a.password_hash);
            v.non_empty(&format!("{at}.sip_password"), &a.sip_password);
            let mut seen = HashSet::new();
            for q in &a.queues {
                if !queue_ids.contains_key(q.as_str()) {
                    v.push(format!("{at}.queues: unknown queue \"{q}\""));
                } else if !seen.insert(q.as_str()) {
                    v.push(format!("{at}.queues: queue \"{q}\" is listed twice"));
                }
            }
        }
        for (i, s) in self.supervisors.iter().enumerate() {
            let at = format!("supervisors[{i}]");
            v.id(&at, &s.id);
            if let Some(first) = logins.get(s.id.as_str()) {
                let why = if first.starts_with("agents") {
                    " (agents and supervisors share the login namespace)"
                } else {
                    ""
                };
                v.push(format!(
                    "{at}.id: duplicate id \"{}\" (first used by {first}){why}",
                    s.id
                ));
            } else {
                logins.insert(&s.id, at.clone());
            }
            v.non_empty(&format!("{at}.name"), &s.name);
            v.password_hash(&format!("{at}.password_hash"), &s.password_hash);
        }

        let mut key_ids: HashMap<&str, usize> = HashMap::new();
        let mut digests: HashMap<String, usize> = HashMap::new();
        for (i, k) in self.api_keys.iter().enumerate() {
            let at = format!("api_keys[{i}]");
            v.id(&at, &k.id);
            if let Some(first) = key_ids.get(k.id.as_str()) {
                v.push(format!(
                    "{at}.id: duplicate id \"{}\" (first used by api_keys[{first}])",
                    k.id
                ));
            } else {
                key_ids.insert(&k.id, i);
            }
            if k.key_sha256.len() != 64 || !k.key_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                v.push(format!("{at}.key_sha256: must be 64 hex characters"));
            } else if let Some(first) = digests.insert(k.key_sha256.to_ascii_lowercase(), i) {
                v.push(format!("{at}.key_sha256: same key as api_keys[{first}]"));
            }
        }
    }
}

/// `path` taken from the directory holding `file` when relative (an absolute path as is).
fn relative_to_file(file: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut out: PathBuf = dir
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect();
    out.extend(
        path.components()
            .filter(|c| !matches!(c, std::path::Component::CurDir)),
    );
    out
}

/// Accumulates validation problems.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn push(&mut self, msg: impl Into<String>) {
        self.0.push(msg.into());
    }

    fn positive(&mut self, key: &str, n: u64) {
        if n == 0 {
            self.push(format!("{key} must be greater than zero"));
        }
    }

    fn positive_duration(&mut self, key: &str, d: Duration) {
        if d.is_zero() {
            self.push(format!("{key} must be greater than zero"));
        }
    }

    fn non_empty(&mut self, key: &str, s: &str) {
        if s.trim().is_empty() {
            self.push(format!("{key} must not be empty"));
        }
    }

    /// Ids are SIP user parts and URL path segments: `[A-Za-z0-9._-]+`, not `.` or `..`.
    fn id(&mut self, at: &str, id: &str) {
        if id.is_empty() {
            self.push(format!("{at}.id must not be empty"));
        } else if !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            self.push(format!(
                "{at}.id: \"{id}\" may only contain letters, digits, '.', '_' and '-'"
            ));
        } else if id == "." || id == ".." {
            self.push(format!("{at}.id: \"{id}\" is not a valid id"));
        }
    }

    fn password_hash(&mut self, key: &str, hash: &str) {
        if !is_argon2id_phc(hash) {
            self.push(format!(
                "{key}: not an argon2id PHC string (make one with `switchboard hash-password`)"
            ));
        }
    }
}

/// Structure check of an argon2id PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`): the
/// algorithm, parameters, salt and hash are well-formed. Nothing is verified.
fn is_argon2id_phc(s: &str) -> bool {
    if !s.starts_with("$argon2id$") {
        return false;
    }
    let Ok(parsed) = argon2::PasswordHash::new(s) else {
        return false;
    };
    parsed.algorithm.as_str() == "argon2id"
        && parsed.salt.is_some()
        && parsed.hash.is_some()
        && parsed.version.is_none_or(|v| v == 0x10 || v == 0x13)
        && argon2::Params::try_from(&parsed).is_ok()
}

const LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// `info`, or `info,switchboard::sip=debug`: levels and `target=level` directives.
fn check_log_level(s: &str) -> Result<(), String> {
    let is_level = |l: &str| LOG_LEVELS.iter().any(|k| k.eq_ignore_ascii_case(l));
    if s.trim().is_empty() {
        return Err("must not be empty (use one of off, error, warn, info, debug, trace)".into());
    }
    for part in s.split(',').map(str::trim) {
        let ok = match part.split_once('=') {
            None => is_level(part),
            Some((target, level)) => {
                !target.is_empty()
                    && target
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'-'))
                    && is_level(level)
            }
        };
        if !ok {
            return Err(format!(
                "\"{part}\" is not a level (off, error, warn, info, debug, trace) or a target=level directive"
            ));
        }
    }
    Ok(())
}

/// The configuration in force, replaceable at run time (SIGHUP reload). Readers that cache
/// something derived from it compare [`SharedConfig::generation`].
#[derive(Debug, Clone)]
pub struct SharedConfig {
    current: Arc<std::sync::RwLock<Arc<Config>>>,
    generation: Arc<std::sync::atomic::AtomicU64>,
}

impl SharedConfig {
    pub fn new(cfg: Arc<Config>) -> SharedConfig {
        SharedConfig {
            current: Arc::new(std::sync::RwLock::new(cfg)),
            generation: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }
    }

    pub fn get(&self) -> Arc<Config> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Installs a new configuration (already validated).
    pub fn set(&self, cfg: Arc<Config>) {
        match self.current.write() {
            Ok(mut c) => *c = cfg,
            Err(p) => *p.into_inner() = cfg,
        }
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Bumped by every [`SharedConfig::set`].
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A database URL with any password replaced, for logs and errors.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => match rest[..at].find(':') {
            Some(colon) => format!(
                "{}{}:…{}",
                &url[..scheme_end + 3],
                &rest[..colon],
                &rest[at..]
            ),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = include_str!("../config.toml");
    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$azN2OVFtMnhacjh3THA0dA$WhLKbQr5TiCRoNgcjJhfVWsGYTl5m9l3YzigOK0b8yU";
    const DIGEST: &str = "daaf0e30617e6f1abe69f1a5ad9116a9e178694a81fc0ff9e71e7543a2b8a700";

    fn queue(id: &str, channel: Channel) -> QueueConfig {
        QueueConfig {
            id: id.into(),
            name: format!("{id} queue"),
            channel,
            offer_timeout: None,
            not_ready_after_no_response: false,
            session_lost_prompt: None,
            reconnecting_prompt: None,
            requeue_position: RequeuePosition::Original,
            sticky_agent: std::time::Duration::ZERO,
        }
    }

    fn agent(id: &str, queues: &[&str]) -> AgentConfig {
        AgentConfig {
            id: id.into(),
            name: format!("Agent {id}"),
            password_hash: HASH.into(),
            sip_password: "phone-secret".into(),
            queues: queues.iter().map(|q| q.to_string()).collect(),
            capacity: Capacity::default(),
        }
    }

    /// A valid configuration with some of everything.
    fn sample() -> Config {
        Config {
            queues: vec![
                queue("support", Channel::Chat),
                queue("sales", Channel::Voice),
                queue("mail", Channel::Email),
            ],
            agents: vec![
                agent("alice", &["support", "sales"]),
                agent("bob", &["mail"]),
            ],
            supervisors: vec![SupervisorConfig {
                id: "sam".into(),
                name: "Sam".into(),
                password_hash: HASH.into(),
            }],
            api_keys: vec![ApiKeyConfig {
                id: "gateway".into(),
                key_sha256: DIGEST.into(),
            }],
            ..Config::default()
        }
    }

    /// The validation problems of `c` (panics if it is valid).
    fn problems(c: &Config) -> Vec<String> {
        match c.validate() {
            Err(ConfigError::Invalid { problems, .. }) => {
                problems.into_iter().map(|p| p.message).collect()
            }
            other => panic!("expected validation errors, got {other:?}"),
        }
    }

    /// Asserts `c` is rejected with exactly one problem starting with `prefix`
    /// and containing `fragment`.
    fn rejects(c: &Config, prefix: &str, fragment: &str) {
        let p = problems(c);
        assert_eq!(p.len(), 1, "expected exactly one problem, got {p:#?}");
        assert!(
            p[0].starts_with(prefix) && p[0].contains(fragment),
            "problem {:?} should start with {prefix:?} and contain {fragment:?}",
            p[0]
        );
    }

    fn parse_error(toml: &str) -> String {
        match Config::from_toml_str(toml) {
            Err(e @ ConfigError::Parse { .. }) => e.to_string(),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    /// The shipped file with its example blocks uncommented: every commented line that is a
    /// table header or a `key = value` line.
    fn shipped_with_examples_uncommented() -> String {
        SHIPPED
            .lines()
            .map(|line| {
                let Some(rest) = line.strip_prefix("# ") else {
                    return line.to_owned();
                };
                let header = (rest.starts_with('[') && rest.ends_with(']'))
                    && rest
                        .trim_matches(|c| c == '[' || c == ']')
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'.');
                let key_value = rest.split_once(" = ").is_some_and(|(k, _)| {
                    !k.is_empty()
                        && k.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                });
                if header || key_value {
                    rest.to_owned()
                } else {
                    line.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    // --- the shipped file and defaults ---------------------------------------------------

    #[test]
    fn shipped_config_toml_equals_default() {
        let parsed = Config::from_toml_str(SHIPPED).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn shipped_config_examples_are_valid_when_uncommented() {
        let text = shipped_with_examples_uncommented();
        let c = Config::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}\n---\n{text}"));
        assert!(c.server.tls.is_some());
        assert!(c.outbound.sms.is_some() && c.outbound.social.is_some());
        assert!(c.outbound.email.is_some());
        assert_eq!(c.queues.len(), 2);
        assert_eq!(
            c.queues[0]
                .session_lost_prompt
                .as_deref()
                .map(str::is_empty),
            Some(false)
        );
        assert_eq!(c.agents.len(), 1);
        assert_eq!(c.agents[0].queues, ["support", "sales-phone"]);
        assert_eq!(c.supervisors.len(), 1);
        assert_eq!(c.api_keys.len(), 1);
    }

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(Config::from_toml_str("").unwrap(), Config::default());
    }

    #[test]
    fn default_listens_on_loopback_only_and_has_no_people() {
        let c = Config::default();
        assert_eq!(c.server.http_listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.sip.listen, "127.0.0.1:5060".parse().unwrap());
        assert!(c.server.http_listen.ip().is_loopback() && c.sip.listen.ip().is_loopback());
        assert!(c.queues.is_empty() && c.agents.is_empty());
        assert!(c.supervisors.is_empty() && c.api_keys.is_empty());
        assert!(c.validate().is_ok());
    }

    #[test]
    fn defaults_match_the_spec() {
        let c = Config::default();
        assert_eq!(c.server.data_dir, PathBuf::from("./data"));
        assert_eq!(c.resilience.session_grace, Duration::from_secs(60));
        assert_eq!(c.resilience.heartbeat_interval, Duration::from_secs(5));
        assert_eq!(c.resilience.heartbeat_timeout, Duration::from_secs(15));
        assert!(c.sip.enabled);
        assert_eq!(c.sip.realm, "switchboard");
        assert_eq!(c.sip.min_expires, Duration::from_secs(10));
        assert_eq!(c.sip.max_expires, Duration::from_secs(30));
        assert_eq!(c.sip.default_expires, Duration::from_secs(30));
        assert_eq!(c.sip.nonce_ttl, Duration::from_secs(300));
        assert_eq!(c.sip.max_failed_auth_per_minute, 30);
        assert_eq!(c.limits.max_body_bytes, 65536);
        assert_eq!(c.limits.max_sockets_per_session, 4);
        assert_eq!(c.log.format, LogFormat::Human);
        assert_eq!(c.log.level, "info");
        assert_eq!(c.outbound.max_attempts, 10);
        assert_eq!(c.outbound.max_backoff, Duration::from_secs(300));
        assert_eq!(
            Capacity::default(),
            Capacity {
                voice: 1,
                chat: 3,
                email: 5
            }
        );
    }

    #[test]
    fn sections_are_defaultable_key_by_key() {
        let c =
            Config::from_toml_str("[sip]\nrealm = \"acme\"\n[log]\nformat = \"json\"\n").unwrap();
        assert_eq!(c.sip.realm, "acme");
        assert_eq!(c.sip.max_expires, Duration::from_secs(30));
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.log.level, "info");
    }

    // --- unknown keys and parse errors ---------------------------------------------------

    #[test]
    fn unknown_top_level_key_is_rejected_by_name_and_line() {
        let e = parse_error("[server]\ndata_dir = \"/var/lib/sb\"\n\n[serverr]\nx = 1\n");
        assert!(e.contains("serverr"), "{e}");
        assert!(e.contains("line 4"), "{e}");
    }

    #[test]
    fn unknown_nested_key_is_rejected_by_name_and_line() {
        let e = parse_error("[resilience]\ngrace = \"1s\"\n");
        assert!(e.contains("grace"), "{e}");
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn unknown_agent_key_is_rejected_by_name() {
        let toml = format!(
            "[[queues]]\nid = \"q\"\nname = \"Q\"\nchannel = \"chat\"\n\n\
             [[agents]]\nid = \"a\"\nname = \"A\"\npassword_hash = \"{HASH}\"\n\
             sip_password = \"x\"\nqueue = [\"q\"]\n"
        );
        let e = parse_error(&toml);
        assert!(e.contains("unknown field `queue`"), "{e}");
        assert!(e.contains("line 11"), "{e}");
    }

    #[test]
    fn unknown_capacity_channel_is_rejected_by_name() {
        let toml = format!(
            "[[agents]]\nid = \"a\"\nname = \"A\"\npassword_hash = \"{HASH}\"\n\
             sip_password = \"x\"\ncapacity = {{ voice = 1, fax = 2 }}\n"
        );
        let e = parse_error(&toml);
        assert!(e.contains("fax"), "{e}");
    }

    #[test]
    fn unknown_tls_key_is_rejected_by_name() {
        let e = parse_error("[server.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\nchain = \"x\"\n");
        assert!(e.contains("chain"), "{e}");
    }

    #[test]
    fn missing_required_queue_key_is_named() {
        let e = parse_error("[[queues]]\nid = \"q\"\nname = \"Q\"\n");
        assert!(e.contains("channel"), "{e}");
    }

    #[test]
    fn unknown_enum_value_is_rejected_with_the_choices() {
        let e = parse_error("[[queues]]\nid = \"q\"\nname = \"Q\"\nchannel = \"fax\"\n");
        assert!(e.contains("fax") && e.contains("voice"), "{e}");
        let e = parse_error("[log]\nformat = \"xml\"\n");
        assert!(e.contains("xml") && e.contains("json"), "{e}");
    }

    #[test]
    fn bad_duration_in_file_is_reported_with_its_line() {
        let e = parse_error("[resilience]\nheartbeat_interval = \"5s\"\nsession_grace = \"60\"\n");
        assert!(e.contains("line 3") && e.contains("missing unit"), "{e}");
        let e = parse_error("[resilience]\nsession_grace = 60\n");
        assert!(e.contains("duration string"), "{e}");
        let e = parse_error(
            "[[queues]]\nid = \"q\"\nname = \"Q\"\nchannel = \"voice\"\noffer_timeout = \"1d\"\n",
        );
        assert!(e.contains("unknown unit \"d\""), "{e}");
    }

    #[test]
    fn bad_socket_address_is_a_parse_error() {
        let e = parse_error("[server]\nhttp_listen = \"localhost\"\n");
        assert!(e.contains("http_listen") || e.contains("line 2"), "{e}");
    }

    // --- durations ------------------------------------------------------------------------

    #[test]
    fn durations_parse_in_every_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("007s"), Ok(Duration::from_secs(7)));
    }

    #[test]
    fn malformed_durations_are_rejected_clearly() {
        for (input, expected) in [
            ("", "empty duration"),
            ("60", "missing unit"),
            ("s", "expected a whole number"),
            ("-5s", "expected a whole number"),
            (" 5s", "expected a whole number"),
            ("5 s", "unknown unit \" s\""),
            ("5s ", "unknown unit \"s \""),
            ("1.5s", "fractions are not supported"),
            ("3d", "unknown unit \"d\""),
            ("10S", "unknown unit \"S\""),
            ("5sec", "unknown unit \"sec\""),
            ("1us", "unknown unit \"us\""),
            ("99999999999999999999999s", "too large"),
            ("18446744073709551615h", "too large"),
            ("87601h", "too large"),
        ] {
            let e = parse_duration(input).unwrap_err();
            assert!(e.contains(expected), "{input:?}: {e}");
        }
        assert!(parse_duration("87600h").is_ok());
    }

    #[test]
    fn durations_print_in_the_largest_exact_unit() {
        for (d, s) in [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_secs(15), "15s"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(60), "1m"),
            (Duration::from_secs(300), "5m"),
            (Duration::from_secs(7200), "2h"),
        ] {
            assert_eq!(format_duration(d), s);
            assert_eq!(parse_duration(s), Ok(d));
        }
    }

    proptest::proptest! {
        #[test]
        fn duration_strings_round_trip(ms in 0u64..=switchboard_core::duration::MAX_DURATION.as_millis() as u64) {
            let d = Duration::from_millis(ms);
            proptest::prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }

    #[test]
    fn duration_fields_serialize_as_strings() {
        let text = toml::to_string(&Config::default()).unwrap();
        assert!(text.contains("session_grace = \"1m\""), "{text}");
        assert!(text.contains("heartbeat_interval = \"5s\""), "{text}");
        assert!(text.contains("nonce_ttl = \"5m\""), "{text}");
    }

    // --- round trips and derived values -----------------------------------------------------

    #[test]
    fn full_config_round_trips_through_toml() {
        let mut c = sample();
        c.server.http_listen = "[::]:8443".parse().unwrap();
        c.server.tls = Some(TlsConfig {
            cert: "/etc/sb/cert.pem".into(),
            key: "/etc/sb/key.pem".into(),
        });
        c.sip.enabled = false;
        c.log.format = LogFormat::Json;
        c.log.level = "info,switchboard::sip=debug".into();
        c.outbound.sms = Some("http://sms.example.com/hook".into());
        c.outbound.initial_backoff = Duration::from_millis(250);
        c.queues[0].offer_timeout = Some(Duration::from_millis(90_500));
        c.queues[0].not_ready_after_no_response = true;
        c.queues[0].session_lost_prompt = Some("Another agent will be with you.".into());
        c.queues[0].reconnecting_prompt = Some("Your agent is reconnecting.".into());
        c.queues[0].requeue_position = RequeuePosition::Front;
        c.queues[2].requeue_position = RequeuePosition::Back;
        c.agents[1].capacity = Capacity {
            voice: 0,
            chat: 0,
            email: 0,
        };
        let text = c.to_toml_string().unwrap();
        let back = Config::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}\n---\n{text}"));
        assert_eq!(back, c);
    }

    #[test]
    fn effective_offer_timeout_defaults_per_channel() {
        assert_eq!(
            queue("v", Channel::Voice).effective_offer_timeout(),
            Duration::from_secs(60)
        );
        assert_eq!(
            queue("c", Channel::Chat).effective_offer_timeout(),
            Duration::from_secs(120)
        );
        assert_eq!(
            queue("e", Channel::Email).effective_offer_timeout(),
            Duration::from_secs(120)
        );
        let mut q = queue("v", Channel::Voice);
        q.offer_timeout = Some(Duration::from_secs(20));
        assert_eq!(q.effective_offer_timeout(), Duration::from_secs(20));
    }

    #[test]
    fn capacity_keys_default_independently() {
        let toml = format!(
            "[[agents]]\nid = \"a\"\nname = \"A\"\npassword_hash = \"{HASH}\"\n\
             sip_password = \"x\"\ncapacity = {{ chat = 6 }}\n"
        );
        let c = Config::from_toml_str(&toml).unwrap();
        let cap = c.agents[0].capacity;
        assert_eq!(
            cap,
            Capacity {
                voice: 1,
                chat: 6,
                email: 5
            }
        );
        assert_eq!(cap.for_channel(Channel::Voice), 1);
        assert_eq!(cap.for_channel(Channel::Chat), 6);
        assert_eq!(cap.for_channel(Channel::Email), 5);
    }

    #[test]
    fn channel_names_match_their_serde_form() {
        for ch in Channel::ALL {
            assert_eq!(serde_json::to_value(ch).unwrap(), ch.as_str());
            assert_eq!(ch.to_string(), ch.as_str());
        }
        assert!(Channel::Voice < Channel::Chat && Channel::Chat < Channel::Email);
    }

    #[test]
    fn api_key_digest_is_normalised_to_lower_case() {
        let toml = format!(
            "[[api_keys]]\nid = \"gw\"\nkey_sha256 = \"{}\"\n",
            DIGEST.to_ascii_uppercase()
        );
        let c = Config::from_toml_str(&toml).unwrap();
        assert_eq!(c.api_keys[0].key_sha256, DIGEST);
    }

    #[test]
    fn redacted_copy_hides_every_secret() {
        let text = sample().redacted().to_toml_string().unwrap();
        assert!(!text.contains(HASH) && !text.contains("phone-secret") && !text.contains(DIGEST));
        assert!(text.contains("alice"));
    }

    // --- loading from a file ----------------------------------------------------------------

    #[test]
    fn load_reads_and_validates_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, SHIPPED).unwrap();
        assert_eq!(Config::load(&path).unwrap(), Config::default());
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.toml");
        let e = Config::load(&missing).unwrap_err();
        assert!(matches!(e, ConfigError::Io { .. }));
        assert!(e.to_string().contains("missing.toml"), "{e}");

        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "[sip]\nrelam = \"x\"\n").unwrap();
        let e = Config::load(&bad).unwrap_err().to_string();
        assert!(
            e.contains("bad.toml") && e.contains("relam") && e.contains("line 2"),
            "{e}"
        );

        let invalid = dir.path().join("invalid.toml");
        std::fs::write(&invalid, "[resilience]\nsession_grace = \"0s\"\n").unwrap();
        let e = Config::load(&invalid).unwrap_err();
        assert_eq!(
            e.problems(),
            ["resilience.session_grace must be greater than zero"]
        );
        assert!(
            e.to_string()
                .starts_with(&format!("{}: ", invalid.display())),
            "{e}"
        );
    }

    #[test]
    fn a_relative_data_dir_is_taken_from_the_config_files_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, SHIPPED).unwrap();
        assert_eq!(
            Config::load(&path).unwrap().server.data_dir,
            Path::new("./data")
        );
        let resolved = Config::load_resolved(&path).unwrap();
        assert_eq!(resolved.server.data_dir, dir.path().join("data"));
        let mut rest = resolved;
        rest.server.data_dir = "./data".into();
        assert_eq!(rest, Config::default(), "nothing else changes");

        std::fs::write(&path, "[server]\ndata_dir = \"state/../store\"\n").unwrap();
        assert_eq!(
            Config::load_resolved(&path).unwrap().server.data_dir,
            dir.path().join("state/../store")
        );
        std::fs::write(&path, "[server]\ndata_dir = \"/var/lib/switchboard\"\n").unwrap();
        assert_eq!(
            Config::load_resolved(&path).unwrap().server.data_dir,
            Path::new("/var/lib/switchboard")
        );
    }

    #[test]
    fn a_config_file_named_without_a_directory_is_in_the_working_directory() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            relative_to_file(Path::new("config.toml"), Path::new("./data")),
            cwd.join("data")
        );
        assert_eq!(
            relative_to_file(Path::new("./etc/config.toml"), Path::new("data")),
            cwd.join("etc/data")
        );
    }

    // --- validation rules -------------------------------------------------------------------

    #[test]
    fn sample_is_valid() {
        sample().validate().unwrap();
    }

    #[test]
    fn every_problem_is_reported_at_once_one_per_line() {
        let mut c = sample();
        c.resilience.session_grace = Duration::ZERO;
        c.sip.min_expires = Duration::from_secs(40);
        c.agents[0].queues.push("nope".into());
        c.api_keys[0].key_sha256 = "abc".into();
        let e = c.validate().unwrap_err();
        assert_eq!(e.problems().len(), 4, "{e}");
        let text = e.to_string();
        assert_eq!(text.lines().count(), 5, "{text}");
        for p in e.problems() {
            assert!(text.lines().any(|l| l == p), "{text}");
        }
    }

    #[test]
    fn zero_session_grace_is_rejected() {
        let mut c = sample();
        c.resilience.session_grace = Duration::ZERO;
        rejects(&c, "resilience.session_grace", "must be greater than zero");
    }

    #[test]
    fn heartbeat_timeout_must_exceed_interval() {
        let mut c = sample();
        c.resilience.heartbeat_timeout = Duration::from_secs(5);
        rejects(
            &c,
            "resilience.heartbeat_timeout (5s)",
            "must be greater than resilience.heartbeat_interval (5s)",
        );
        let mut c = sample();
        c.resilience.heartbeat_interval = Duration::ZERO;
        rejects(&c, "resilience.heartbeat_interval", "greater than zero");
    }

    #[test]
    fn sip_min_expires_above_max_is_rejected() {
        let mut c = sample();
        c.sip.min_expires = Duration::from_secs(40);
        rejects(
            &c,
            "sip.min_expires (40s)",
            "is greater than sip.max_expires (30s)",
        );
    }

    #[test]
    fn sip_default_expires_must_lie_within_bounds() {
        let mut c = sample();
        c.sip.default_expires = Duration::from_secs(5);
        rejects(
            &c,
            "sip.default_expires (5s)",
            "between sip.min_expires (10s)",
        );
        c.sip.default_expires = Duration::from_secs(31);
        rejects(&c, "sip.default_expires (31s)", "and sip.max_expires (30s)");
    }

    #[test]
    fn sip_expiry_values_are_whole_positive_seconds() {
        let mut c = sample();
        c.sip.min_expires = Duration::ZERO;
        rejects(&c, "sip.min_expires", "greater than zero");
        let mut c = sample();
        c.sip.max_expires = Duration::from_millis(30_500);
        rejects(&c, "sip.max_expires (30500ms)", "whole number of seconds");
    }

    #[test]
    fn sip_realm_must_be_quotable() {
        let mut c = sample();
        c.sip.realm = String::new();
        rejects(&c, "sip.realm", "must not be empty");
        c.sip.realm = "acme \"corp\"".into();
        rejects(&c, "sip.realm", "quotes");
    }

    #[test]
    fn sip_nonce_ttl_and_auth_limit_must_be_positive() {
        let mut c = sample();
        c.sip.nonce_ttl = Duration::ZERO;
        rejects(&c, "sip.nonce_ttl", "greater than zero");
        let mut c = sample();
        c.sip.max_failed_auth_per_minute = 0;
        rejects(&c, "sip.max_failed_auth_per_minute", "greater than zero");
    }

    #[test]
    fn limits_must_be_positive() {
        type Setter = fn(&mut LimitsConfig);
        let cases: [(&str, Setter); 10] = [
            ("limits.max_body_bytes", |l| l.max_body_bytes = 0),
            ("limits.max_message_chars", |l| l.max_message_chars = 0),
            ("limits.max_email_bytes", |l| l.max_email_bytes = 0),
            ("limits.ws_max_frame_bytes", |l| l.ws_max_frame_bytes = 0),
            ("limits.ws_max_message_bytes", |l| {
                l.ws_max_message_bytes = 0;
                l.ws_max_frame_bytes = 0;
            }),
            ("limits.ws_read_buffer_bytes", |l| {
                l.ws_read_buffer_bytes = 0
            }),
            ("limits.ws_write_buffer_bytes", |l| {
                l.ws_write_buffer_bytes = 0
            }),
            ("limits.max_sockets_per_session", |l| {
                l.max_sockets_per_session = 0
            }),
            ("limits.login_per_minute", |l| l.login_per_minute = 0),
            ("limits.chats_per_minute", |l| l.chats_per_minute = 0),
        ];
        for (key, set) in cases {
            let mut c = sample();
            set(&mut c.limits);
            let p = problems(&c);
            assert!(
                p.iter()
                    .any(|m| m == &format!("{key} must be greater than zero")),
                "{key}: {p:#?}"
            );
        }
    }

    #[test]
    fn websocket_frame_limit_must_not_exceed_message_limit() {
        let mut c = sample();
        c.limits.ws_max_frame_bytes = 65537;
        rejects(
            &c,
            "limits.ws_max_frame_bytes (65537)",
            "limits.ws_max_message_bytes (65536)",
        );
    }

    #[test]
    fn log_level_must_be_a_level_or_directives() {
        let mut c = sample();
        for ok in [
            "info",
            "DEBUG",
            "off",
            "warn,switchboard::sip=trace",
            "tower_http=debug",
        ] {
            c.log.level = ok.into();
            c.validate().unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["", "verbose", "info,", "switchboard=loud", "=debug"] {
            c.log.level = bad.into();
            rejects(&c, "log.level", "");
        }
    }

    #[test]
    fn outbound_urls_must_be_plain_http() {
        let mut c = sample();
        c.outbound.sms = Some("http://10.0.0.5:9000/sms".into());
        c.validate().unwrap();
        c.outbound.social = Some("https://hub.example.com/x".into());
        rejects(&c, "outbound.social", "https webhooks are not supported");
        c.outbound.social = None;
        c.outbound.email = Some("ftp://mail.example.com".into());
        rejects(&c, "outbound.email", "must start with http://");
        c.outbound.email = Some("http://".into());
        rejects(&c, "outbound.email", "no host");
        c.outbound.email = Some("mail.example.com/hook".into());
        rejects(&c, "outbound.email", "must start with http://");
    }

    #[test]
    fn outbound_retry_settings_must_be_consistent() {
        let mut c = sample();
        c.outbound.max_attempts = 0;
        rejects(&c, "outbound.max_attempts", "greater than zero");
        let mut c = sample();
        c.outbound.timeout = Duration::ZERO;
        rejects(&c, "outbound.timeout", "greater than zero");
        let mut c = sample();
        c.outbound.max_backoff = Duration::from_millis(500);
        rejects(
            &c,
            "outbound.max_backoff (500ms)",
            "outbound.initial_backoff (1s)",
        );
    }

    #[test]
    fn server_paths_must_not_be_empty() {
        let mut c = sample();
        c.server.data_dir = PathBuf::new();
        rejects(&c, "server.data_dir", "must not be empty");
        let mut c = sample();
        c.server.tls = Some(TlsConfig {
            cert: "cert.pem".into(),
            key: PathBuf::new(),
        });
        rejects(&c, "server.tls.key", "must not be empty");
    }

    #[test]
    fn duplicate_queue_id_is_rejected() {
        let mut c = sample();
        c.queues[1].id = "support".into();
        c.agents[0].queues = vec!["support".into()];
        rejects(&c, "queues[1].id: duplicate id \"support\"", "queues[0]");
    }

    #[test]
    fn agent_queue_must_exist() {
        let mut c = sample();
        c.agents[1].queues.push("billing".into());
        rejects(&c, "agents[1].queues: unknown queue \"billing\"", "");
    }

    #[test]
    fn agent_queue_listed_twice_is_rejected() {
        let mut c = sample();
        c.agents[0].queues.push("support".into());
        rejects(&c, "agents[0].queues", "listed twice");
    }

    #[test]
    fn ids_must_be_url_and_sip_safe() {
        for bad in ["al ice", "alice@example.com", "a/b", "é", "a:b", "..", "."] {
            let mut c = sample();
            c.agents[0].id = bad.into();
            rejects(&c, "agents[0].id", "");
        }
        let mut c = sample();
        c.agents[0].id = "a.b_c-D9".into();
        c.validate().unwrap();
        let mut c = sample();
        c.queues[0].id = "sup port".into();
        c.agents[0].queues = vec!["sales".into()];
        rejects(&c, "queues[0].id", "may only contain");
        let mut c = sample();
        c.supervisors[0].id = "sam!".into();
        rejects(&c, "supervisors[0].id", "may only contain");
        let mut c = sample();
        c.api_keys[0].id = "gate way".into();
        rejects(&c, "api_keys[0].id", "may only contain");
    }

    #[test]
    fn empty_ids_and_names_are_rejected() {
        let mut c = sample();
        c.agents[1].id = String::new();
        rejects(&c, "agents[1].id must not be empty", "");
        let mut c = sample();
        c.queues[2].name = " ".into();
        rejects(&c, "queues[2].name must not be empty", "");
        let mut c = sample();
        c.supervisors[0].name = String::new();
        rejects(&c, "supervisors[0].name must not be empty", "");
        let mut c = sample();
        c.agents[0].sip_password = String::new();
        rejects(&c, "agents[0].sip_password must not be empty", "");
    }

    #[test]
    fn duplicate_agent_id_is_rejected() {
        let mut c = sample();
        c.agents[1].id = "alice".into();
        rejects(&c, "agents[1].id: duplicate id \"alice\"", "agents[0]");
    }

    #[test]
    fn agent_and_supervisor_ids_must_not_collide() {
        let mut c = sample();
        c.supervisors[0].id = "bob".into();
        rejects(
            &c,
            "supervisors[0].id: duplicate id \"bob\"",
            "agents and supervisors share the login namespace",
        );
        let mut c = sample();
        c.supervisors.push(c.supervisors[0].clone());
        rejects(
            &c,
            "supervisors[1].id: duplicate id \"sam\"",
            "supervisors[0]",
        );
    }

    #[test]
    fn password_hash_must_be_argon2id_phc() {
        let argon2i = HASH.replacen("argon2id", "argon2i", 1);
        let bad_params = HASH.replacen("m=19456", "m=lots", 1);
        let no_hash = HASH.rsplit_once('$').unwrap().0.to_owned();
        for bad in [
            "",
            "hunter2",
            "$2b$12$abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNO",
            argon2i.as_str(),
            bad_params.as_str(),
            no_hash.as_str(),
            "$argon2id$v=19$m=19456,t=2,p=1$!!!$???",
        ] {
            let mut c = sample();
            c.agents[0].password_hash = bad.into();
            rejects(
                &c,
                "agents[0].password_hash: not an argon2id PHC string",
                "hash-password",
            );
            let mut c = sample();
            c.supervisors[0].password_hash = bad.into();
            rejects(
                &c,
                "supervisors[0].password_hash: not an argon2id PHC string",
                "",
            );
        }
    }

    #[test]
    fn api_key_digest_must_be_64_hex_characters() {
        for bad in [
            "",
            "abc",
            &DIGEST[..63],
            &format!("{DIGEST}0"),
            &DIGEST.replace('a', "g"),
        ] {
            let mut c = sample();
            c.api_keys[0].key_sha256 = bad.to_owned();
            rejects(&c, "api_keys[0].key_sha256: must be 64 hex characters", "");
        }
    }

    #[test]
    fn api_keys_must_be_distinct() {
        let mut c = sample();
        c.api_keys.push(ApiKeyConfig {
            id: "gateway".into(),
            key_sha256: "0".repeat(64),
        });
        rejects(&c, "api_keys[1].id: duplicate id \"gateway\"", "");
        let mut c = sample();
        c.api_keys.push(ApiKeyConfig {
            id: "other".into(),
            key_sha256: DIGEST.into(),
        });
        rejects(&c, "api_keys[1].key_sha256", "same key as api_keys[0]");
    }

    #[test]
    fn zero_capacity_on_every_channel_is_allowed() {
        let mut c = sample();
        c.agents[0].capacity = Capacity {
            voice: 0,
            chat: 0,
            email: 0,
        };
        c.validate().unwrap();
    }

    #[test]
    fn queue_offer_timeout_and_prompts_must_be_meaningful() {
        let mut c = sample();
        c.queues[0].offer_timeout = Some(Duration::ZERO);
        rejects(&c, "queues[0].offer_timeout", "greater than zero");
        let mut c = sample();
        c.queues[0].session_lost_prompt = Some(String::new());
        rejects(&c, "queues[0].session_lost_prompt", "must not be empty");
        let mut c = sample();
        c.queues[0].reconnecting_prompt = Some("  ".into());
        rejects(&c, "queues[0].reconnecting_prompt", "must not be empty");
    }

    #[test]
    fn validation_errors_from_toml_carry_key_paths() {
        let toml = format!(
            "[sip]\nmin_expires = \"40s\"\n\n\
             [[queues]]\nid = \"support\"\nname = \"S\"\nchannel = \"chat\"\n\n\
             [[queues]]\nid = \"support\"\nname = \"S2\"\nchannel = \"email\"\n\n\
             [[agents]]\nid = \"a\"\nname = \"A\"\npassword_hash = \"{HASH}\"\n\
             sip_password = \"x\"\nqueues = [\"sales\"]\n"
        );
        let e = Config::from_toml_str(&toml).unwrap_err();
        assert_eq!(
            e.problems(),
            [
                "sip.min_expires (40s) is greater than sip.max_expires (30s)",
                "queues[1].id: duplicate id \"support\" (first used by queues[0])",
                "agents[0].queues: unknown queue \"sales\"",
            ]
        );
    }
}
