//! Pure layer: the routing policy the core enforces — channels, queues and their settings,
//! agents' capacities and memberships, the grace period and the limits on what customers and
//! agents may send. The configuration file is parsed elsewhere; it hands the core a [`Policy`]
//! built from it, so the core never sees listen addresses, password hashes or keys.

use crate::duration::option_duration_str;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// Everything the core needs to know from the configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    pub resilience: ResiliencePolicy,
    pub limits: LimitsPolicy,
    pub outbound: RetryPolicy,
    pub queues: Vec<QueueConfig>,
    pub agents: Vec<AgentPolicy>,
    pub supervisors: Vec<SupervisorPolicy>,
    pub calls: CallPolicy,
}

/// How SIP calls are let in and sent out.
#[derive(Debug, Clone, PartialEq)]
pub struct CallPolicy {
    /// Sources allowed to send calls in.
    pub trunks: Vec<Cidr>,
    /// Where callbacks to customers go (none: no callbacks over SIP).
    pub outbound_proxy: Option<std::net::SocketAddr>,
    /// Most calls in progress at once.
    pub max_calls: u32,
}

impl Default for CallPolicy {
    fn default() -> Self {
        CallPolicy {
            trunks: Vec::new(),
            outbound_proxy: None,
            max_calls: 500,
        }
    }
}

impl CallPolicy {
    /// Whether calls from `ip` are accepted.
    pub fn is_trunk(&self, ip: std::net::IpAddr) -> bool {
        self.trunks.iter().any(|c| c.contains(ip))
    }
}

/// An address block: an IP address with a prefix length (a single address has the full one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: std::net::IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Parses `192.0.2.1`, `203.0.113.0/24`, `2001:db8::/32`.
    pub fn parse(s: &str) -> Option<Cidr> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: std::net::IpAddr = addr.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
            Some(_) => return None,
            None => max,
        };
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// How long a disconnected agent's session is kept, when its customers hear about it, and
/// when a connection that keeps failing takes the agent out of routing (docs/rescue.md).
#[derive(Debug, Clone, PartialEq)]
pub struct ResiliencePolicy {
    pub session_grace: Duration,
    /// The reconnecting prompt (and the `agent_in_grace` alert) wait this long after a loss.
    pub reconnecting_prompt_delay: Duration,
    /// Abrupt losses within `flap_window` that switch the agent to `not_ready`; 0 = off.
    pub flap_limit: u32,
    pub flap_window: Duration,
}

impl Default for ResiliencePolicy {
    fn default() -> Self {
        Self {
            session_grace: Duration::from_secs(60),
            reconnecting_prompt_delay: Duration::from_secs(10),
            flap_limit: 3,
            flap_window: Duration::from_secs(600),
        }
    }
}

/// Size limits the core checks on what it stores.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitsPolicy {
    pub max_message_chars: usize,
    pub max_email_bytes: usize,
    pub max_sockets_per_session: usize,
    /// Chat sockets one customer token may hold at once.
    pub max_sockets_per_chat: usize,
    /// Messages one thread (chat, SMS or social conversation) may hold.
    pub max_messages_per_thread: usize,
    /// Messages one web chat customer may send per minute.
    pub customer_messages_per_minute: u32,
    /// Most recent messages carried by a snapshot (chat, panel, conversation views).
    pub snapshot_messages: usize,
    /// SIP contacts one agent may have registered at once.
    pub max_bindings_per_agent: usize,
    /// The longest registration granted (a stored binding never outlives it after a restart).
    pub max_binding_expires: Duration,
}

impl Default for LimitsPolicy {
    fn default() -> Self {
        Self {
            max_message_chars: 4000,
            max_email_bytes: 262_144,
            max_sockets_per_session: 4,
            max_sockets_per_chat: 4,
            max_messages_per_thread: 1000,
            customer_messages_per_minute: 30,
            snapshot_messages: 100,
            max_bindings_per_agent: 10,
            max_binding_expires: Duration::from_secs(30),
        }
    }
}

/// Retries of outbound deliveries (replies to SMS, social and email customers).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(5 * 60),
        }
    }
}

/// An agent as routing sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentPolicy {
    pub id: String,
    pub name: String,
    /// Queue ids.
    pub queues: Vec<String>,
    pub capacity: Capacity,
}

/// A supervisor as the core sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SupervisorPolicy {
    pub id: String,
    pub name: String,
}

/// A communication channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub enum Channel {
    Voice,
    Chat,
    Email,
}

impl Channel {
    /// All channels, in declaration order.
    pub const ALL: [Channel; 3] = [Channel::Voice, Channel::Chat, Channel::Email];

    /// The wire name: `voice`, `chat`, `email`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Channel::Voice => "voice",
            Channel::Chat => "chat",
            Channel::Email => "email",
        }
    }

    /// Offer timeout of a queue on this channel that sets none: voice 60s, chat and email 120s.
    pub fn default_offer_timeout(&self) -> Duration {
        match self {
            Channel::Voice => Duration::from_secs(60),
            Channel::Chat | Channel::Email => Duration::from_secs(120),
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a chat requeued after its agent's session was lost goes in the queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequeuePosition {
    /// Keep the original `queue_arrival_time`.
    #[default]
    Original,
    /// Ahead of everything waiting.
    Front,
    /// Arrival time = now.
    Back,
}

/// `[[queues]]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    pub id: String,
    pub name: String,
    pub channel: Channel,
    /// `None` means the channel's default; see [`QueueConfig::effective_offer_timeout`].
    #[serde(
        default,
        with = "option_duration_str",
        skip_serializing_if = "Option::is_none"
    )]
    pub offer_timeout: Option<Duration>,
    #[serde(default)]
    pub not_ready_after_no_response: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_lost_prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnecting_prompt: Option<String>,
    #[serde(default)]
    pub requeue_position: RequeuePosition,
    /// How long a chat requeued for `AgentSessionLost` is reserved for its previous agent
    /// (zero: not at all).
    #[serde(default, with = "crate::duration::duration_str")]
    pub sticky_agent: Duration,
}

impl QueueConfig {
    /// The configured `offer_timeout`, or the channel default (voice 60s, chat/email 120s).
    pub fn effective_offer_timeout(&self) -> Duration {
        self.offer_timeout
            .unwrap_or_else(|| self.channel.default_offer_timeout())
    }
}

/// How many conversations of each channel an agent may have at once (offered work counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Capacity {
    pub voice: u32,
    pub chat: u32,
    pub email: u32,
}

impl Default for Capacity {
    fn default() -> Self {
        Self {
            voice: 1,
            chat: 3,
            email: 5,
        }
    }
}

impl Capacity {
    pub fn for_channel(&self, channel: Channel) -> u32 {
        match channel {
            Channel::Voice => self.voice,
            Channel::Chat => self.chat,
            Channel::Email => self.email,
        }
    }
}

#[cfg(test)]
mod cidr_tests {
    use super::Cidr;

    #[test]
    fn trunk_blocks_match_addresses_inside_them_only() {
        let net = Cidr::parse("203.0.113.0/24").unwrap();
        assert!(net.contains("203.0.113.77".parse().unwrap()));
        assert!(!net.contains("203.0.114.1".parse().unwrap()));
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(one.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(
            Cidr::parse("2001:db8::/32")
                .unwrap()
                .contains("2001:db8::1".parse().unwrap())
        );
        for bad in [
            "",
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0/8",
            "host",
            "10.0.0.0/-1",
        ] {
            assert_eq!(Cidr::parse(bad), None, "{bad}");
        }
    }
}
