//! Core layer: the domain records (conversations, groups, threads, sessions, drafts, SIP
//! bindings, agent runtime state). Pure data: these are what the store persists (through the
//! codec) and what the views render. No I/O, no clock.

use super::time::Timestamp;
use crate::policy::Channel;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

pub type AgentId = String;
pub type TokenHash = [u8; 32];

/// The medium of a conversation: chat covers web chat, SMS and social media.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub enum Medium {
    Voice,
    Email,
    Webchat,
    Sms,
    Social,
}

impl Medium {
    pub fn channel(self) -> Channel {
        match self {
            Medium::Voice => Channel::Voice,
            Medium::Email => Channel::Email,
            Medium::Webchat | Medium::Sms | Medium::Social => Channel::Chat,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Medium::Voice => "voice",
            Medium::Email => "email",
            Medium::Webchat => "webchat",
            Medium::Sms => "sms",
            Medium::Social => "social",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub enum Status {
    InQueue,
    Offered,
    InProcess,
    WrapUp,
    Handled,
    Abandoned,
}

impl Status {
    /// Work that occupies the agent (counts against capacity, blocks logout on voice/chat).
    pub fn is_assigned(self) -> bool {
        matches!(self, Status::Offered | Status::InProcess | Status::WrapUp)
    }
    pub fn is_closed(self) -> bool {
        matches!(self, Status::Handled | Status::Abandoned)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Status::InQueue => "in_queue",
            Status::Offered => "offered",
            Status::InProcess => "in_process",
            Status::WrapUp => "wrap_up",
            Status::Handled => "handled",
            Status::Abandoned => "abandoned",
        }
    }
    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "in_queue" => Status::InQueue,
            "offered" => Status::Offered,
            "in_process" => Status::InProcess,
            "wrap_up" => Status::WrapUp,
            "handled" => Status::Handled,
            "abandoned" => Status::Abandoned,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub enum OriginKind {
    Inbound,
    Requeue,
    Transfer,
    Consultation,
    Callback,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Origin {
    pub kind: OriginKind,
    #[cfg_attr(feature = "utoipa", schema(required = true))]
    pub previous: Option<Uuid>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub enum DisconnectParty {
    Agent,
    Customer,
    System,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub enum DisconnectReason {
    CustomerEnded,
    CustomerAbandoned,
    AgentEnded,
    AgentConnectionLost,
    SipRegistrationLost,
    AgentSessionLost,
    Transferred,
    Reassigned,
}

impl DisconnectReason {
    pub fn party(self) -> DisconnectParty {
        match self {
            DisconnectReason::CustomerEnded | DisconnectReason::CustomerAbandoned => {
                DisconnectParty::Customer
            }
            DisconnectReason::Reassigned => DisconnectParty::System,
            _ => DisconnectParty::Agent,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    pub name: String,
    pub address: String,
}

/// Saved metadata (and, with the same shape, an unsaved draft).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Metadata {
    pub script: BTreeMap<String, String>,
    pub memo: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub enum EventKind {
    Queued,
    Offered,
    OfferRejected,
    OfferTimeout,
    OfferWithdrawn,
    Accepted,
    Picked,
    AgentConnectionLost,
    AgentReconnected,
    Ended,
    MetadataSaved,
    WrapUpCompleted,
    SessionLost,
    Requeued,
    Transferred,
    ConsultationStarted,
    CallbackStarted,
    Reassigned,
    Abandoned,
    PromptSent,
}

/// One row of a conversation's event timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Event {
    pub at: Timestamp,
    pub event: EventKind,
    #[cfg_attr(feature = "utoipa", schema(required = true))]
    pub agent: Option<AgentId>,
    #[cfg_attr(feature = "utoipa", schema(required = true))]
    pub detail: Option<String>,
}

/// One segment of work with one customer on one channel, in one queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub id: Uuid,
    pub group_id: Uuid,
    pub medium: Medium,
    pub queue: String,
    pub status: Status,
    pub agent: Option<AgentId>,
    /// The agent who last had it (kept after it leaves them; used for callback rights).
    pub last_agent: Option<AgentId>,
    pub customer: Customer,
    pub subject: Option<String>,
    pub origin: Origin,
    pub queue_arrival_time: Timestamp,
    /// Sort key inside the queue: the arrival time, or earlier for `requeue_position = front`.
    pub queue_rank: i64,
    pub created_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    pub disconnect_party: Option<DisconnectParty>,
    pub disconnect_reason: Option<DisconnectReason>,
    pub metadata: Metadata,
    pub thread: Option<Uuid>,
    pub offer_expires_at: Option<Timestamp>,
    /// Agents who rejected or let this conversation's offer time out; not offered it again
    /// automatically (they can still pick it).
    pub declined_by: Vec<AgentId>,
    /// Number of events in the timeline (the events themselves are stored separately).
    pub event_count: u32,
}

impl Conversation {
    pub fn channel(&self) -> Channel {
        self.medium.channel()
    }
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub enum Sender {
    Agent,
    Customer,
    System,
}

/// Delivery of an agent reply to an outbound webhook (sms, social, email).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub enum Delivery {
    Pending,
    Delivered,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: Uuid,
    pub from: Sender,
    pub text: String,
    pub at: Timestamp,
    /// Set on agent replies that go out through a webhook.
    pub delivery: Option<Delivery>,
}

/// The customer side of a conversation: one token, one transcript, following the group
/// across requeues and transfers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thread {
    pub id: Uuid,
    pub group_id: Uuid,
    pub medium: Medium,
    pub customer: Customer,
    /// Hash of the customer's token (web chat only).
    pub token_hash: Option<TokenHash>,
    /// The conversation currently carrying the thread.
    pub current: Uuid,
    pub open: bool,
    pub message_count: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub enum SessionState {
    Connected,
    Disconnected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub enum Role {
    Agent,
    Supervisor,
}

/// A logged-in user session (agent or supervisor). Survives connection loss for the grace
/// period (agents) and server restarts (both).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub id: Uuid,
    pub user: String,
    pub role: Role,
    pub token_hash: TokenHash,
    pub state: SessionState,
    pub created_at: Timestamp,
    pub disconnected_at: Option<Timestamp>,
    /// When the grace period ends (agents, while disconnected).
    pub deadline: Option<Timestamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub enum Presence {
    Ready,
    NotReady,
}

/// One SIP contact binding of an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub contact: String,
    pub expires_at: Timestamp,
}

/// What the core remembers about an agent across sessions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub id: AgentId,
    pub presence: Presence,
    /// Since when the agent has been free, per channel (voice, chat, email).
    pub idle_since: [Timestamp; 3],
    pub bindings: Vec<Binding>,
    /// The last binding expired or was removed and none has come back yet.
    pub sip_lost: bool,
}

pub fn channel_index(c: Channel) -> usize {
    match c {
        Channel::Voice => 0,
        Channel::Chat => 1,
        Channel::Email => 2,
    }
}

/// A message waiting to be delivered to an outbound webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxItem {
    pub message_id: Uuid,
    pub conversation_id: Uuid,
    pub thread_id: Uuid,
    pub medium: Medium,
    pub to: String,
    pub subject: Option<String>,
    pub text: String,
    /// The agent who wrote it; empty for a system message (a prompt), which the webhook
    /// receives with `agent` null.
    pub agent: AgentId,
    pub created_at: Timestamp,
    pub attempts: u32,
    pub next_attempt_at: Timestamp,
}

/// An answered SIP call as the proxy must remember it to route and end it (stored, so that a
/// restart drops no call and a later BYE still reaches the other side).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dialog {
    pub conversation: Uuid,
    pub agent: AgentId,
    pub call_id: String,
    /// Where the caller's side (the trunk) and the agent's phone are reached.
    pub caller_addr: std::net::SocketAddr,
    pub phone_addr: std::net::SocketAddr,
    /// The caller's From header (with its tag) and the To header of the phone's answer.
    pub caller_header: String,
    pub phone_header: String,
    /// The remote targets (Contact URIs) of both sides.
    pub caller_target: String,
    pub phone_target: String,
    /// Highest CSeq number each side has used (ours continue above it).
    pub caller_cseq: u32,
    pub phone_cseq: u32,
}
