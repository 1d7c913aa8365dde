//! Configuration types (placeholder shape; replaced by the validated loader).
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub struct Config {
    pub server: ServerConfig,
    pub resilience: ResilienceConfig,
    pub sip: SipConfig,
    pub limits: LimitsConfig,
    pub outbound: OutboundConfig,
    pub queues: Vec<QueueConfig>,
    pub agents: Vec<AgentConfig>,
    pub supervisors: Vec<SupervisorConfig>,
    pub api_keys: Vec<ApiKeyConfig>,
}
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub http_listen: SocketAddr,
    pub data_dir: PathBuf,
}
impl Default for ServerConfig {
    fn default() -> Self {
        Self { http_listen: ([127, 0, 0, 1], 8080).into(), data_dir: "./data".into() }
    }
}
#[derive(Debug, Clone)]
pub struct ResilienceConfig {
    pub session_grace: Duration,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
}
impl Default for ResilienceConfig {
    fn default() -> Self {
        Self {
            session_grace: Duration::from_secs(60),
            heartbeat_interval: Duration::from_secs(5),
            heartbeat_timeout: Duration::from_secs(15),
        }
    }
}
#[derive(Debug, Clone, Default)]
pub struct SipConfig {
    pub realm: String,
}
#[derive(Debug, Clone, Default)]
pub struct LimitsConfig {
    pub max_message_chars: usize,
}
#[derive(Debug, Clone, Default)]
pub struct OutboundConfig {
    pub sms: Option<String>,
    pub social: Option<String>,
    pub email: Option<String>,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Voice,
    Chat,
    Email,
}
impl Channel {
    pub fn as_str(&self) -> &'static str {
        match self {
            Channel::Voice => "voice",
            Channel::Chat => "chat",
            Channel::Email => "email",
        }
    }
}
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequeuePosition {
    #[default]
    Original,
    Front,
    Back,
}
#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub id: String,
    pub name: String,
    pub channel: Channel,
    pub offer_timeout: Option<Duration>,
    pub not_ready_after_no_response: bool,
    pub session_lost_prompt: Option<String>,
    pub reconnecting_prompt: Option<String>,
    pub requeue_position: RequeuePosition,
}
impl QueueConfig {
    pub fn effective_offer_timeout(&self) -> Duration {
        self.offer_timeout.unwrap_or(match self.channel {
            Channel::Voice => Duration::from_secs(60),
            _ => Duration::from_secs(120),
        })
    }
}
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub id: String,
    pub name: String,
    pub password_hash: String,
    pub sip_password: String,
    pub queues: Vec<String>,
    pub capacity: Capacity,
}
#[derive(Debug, Clone, Copy)]
pub struct Capacity {
    pub voice: u32,
    pub chat: u32,
    pub email: u32,
}
impl Default for Capacity {
    fn default() -> Self {
        Self { voice: 1, chat: 3, email: 5 }
    }
}
impl Capacity {
    pub fn for_channel(&self, c: Channel) -> u32 {
        match c {
            Channel::Voice => self.voice,
            Channel::Chat => self.chat,
            Channel::Email => self.email,
        }
    }
}
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    pub id: String,
    pub name: String,
    pub password_hash: String,
}
#[derive(Debug, Clone)]
pub struct ApiKeyConfig {
    pub id: String,
    pub key_sha256: String,
}
