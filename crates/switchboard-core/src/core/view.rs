//! Core layer: the JSON shapes of docs/api.md (conversation, agent snapshot, panel events,
//! customer chat events, Dashboard rows). The wire contract lives here and only here.

use super::model::{
    AgentId, Conversation, DisconnectParty, DisconnectReason, Event, EventKind, Message, Metadata,
    Origin, OriginKind, Presence, SessionState, Status,
};
use super::time::Timestamp;
use crate::policy::Channel;
use serde::Serialize;
use std::collections::BTreeMap;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "utoipa", schema(as = Customer))]
pub struct CustomerView {
    pub name: String,
    pub address: String,
}

/// A conversation as every API shows it (every field of docs/domain.md#conversation-fields, `null`
/// where unknown).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "utoipa", schema(as = Conversation))]
pub struct ConversationView {
    pub id: Uuid,
    pub group_id: Uuid,
    pub channel: Channel,
    #[cfg_attr(feature = "utoipa", schema(value_type = super::model::Medium))]
    pub medium: &'static str,
    pub queue: String,
    pub status: Status,
    #[cfg_attr(feature = "utoipa", schema(required = true))]
    pub agent: Option<AgentId>,
    pub customer: CustomerView,
    pub origin: Origin,
    pub queue_arrival_time: Timestamp,
    pub created_at: Timestamp,
    #[cfg_attr(feature = "utoipa", schema(required = true))]
    pub ended_at: Option<Timestamp>,
    #[cfg_attr(feature = "utoipa", schema(required = true))]
    pub disconnect_party: Option<DisconnectParty>,
    #[cfg_attr(feature = "utoipa", schema(required = true))]
    pub disconnect_reason: Option<DisconnectReason>,
    pub metadata: Metadata,
    #[cfg_attr(feature = "utoipa", schema(required = true))]
    pub subject: Option<String>,
    #[cfg_attr(feature = "utoipa", schema(required = true))]
    pub offer_expires_at: Option<Timestamp>,
    /// When the agent took the conversation: the accept or pick (for a SIP call, the phone
    /// answering; for a dialled callback, the customer answering). `null` while it has not
    /// been taken, and in lists that show the stored record without its timeline (search,
    /// group). A call's running time is now minus this; its length, `ended_at` minus this.
    #[cfg_attr(feature = "utoipa", schema(required = true))]
    pub answered_at: Option<Timestamp>,
    /// The transcript (chat and email) in agent-facing views.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<MessageView>>,
    /// The event timeline in Conversation Details.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<Event>>,
}

impl ConversationView {
    pub fn of(c: &Conversation) -> Self {
        ConversationView {
            id: c.id,
            group_id: c.group_id,
            channel: c.channel(),
            medium: c.medium.as_str(),
            queue: c.queue.clone(),
            status: c.status,
            agent: c.agent.clone(),
            customer: CustomerView {
                name: c.customer.name.clone(),
                address: c.customer.address.clone(),
            },
            origin: c.origin,
            queue_arrival_time: c.queue_arrival_time,
            created_at: c.created_at,
            ended_at: c.ended_at,
            disconnect_party: c.disconnect_party,
            disconnect_reason: c.disconnect_reason,
            metadata: c.metadata.clone(),
            subject: c.subject.clone(),
            offer_expires_at: c.offer_expires_at,
            answered_at: None,
            messages: None,
            events: None,
        }
    }

    /// The view with `answered_at` taken from the conversation's timeline.
    pub fn with_timeline(c: &Conversation, events: &[Event]) -> Self {
        let mut v = ConversationView::of(c);
        v.answered_at = answered_at(c, events);
        v
    }
}

/// When the agent took `c`, from its timeline: the last `accepted` or `picked` event. A
/// callback that is only a record (no outbound dialling) goes straight to `in_process`
/// without either: it counts from its `callback_started`, unless it ended without ever
/// being in process (a dialled callback nobody answered: `handled` without a reason).
pub fn answered_at(c: &Conversation, events: &[Event]) -> Option<Timestamp> {
    if let Some(e) = events
        .iter()
        .rev()
        .find(|e| matches!(e.event, EventKind::Accepted | EventKind::Picked))
    {
        return Some(e.at);
    }
    let was_in_process = match c.status {
        Status::InProcess | Status::WrapUp => true,
        Status::Handled => c.disconnect_reason.is_some(),
        Status::InQueue | Status::Offered | Status::Abandoned => false,
    };
    if c.origin.kind != OriginKind::Callback || !was_in_process {
        return None;
    }
    events
        .iter()
        .find(|e| e.event == EventKind::CallbackStarted)
        .map(|e| e.at)
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "utoipa", schema(as = Message))]
pub struct MessageView {
    pub id: Uuid,
    pub from: super::model::Sender,
    pub text: String,
    pub at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<super::model::Delivery>,
}

impl MessageView {
    pub fn of(m: &Message) -> Self {
        MessageView {
            id: m.id,
            from: m.from,
            text: m.text.clone(),
            at: m.at,
            delivery: m.delivery,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, Default)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Capabilities {
    pub voice: bool,
    pub chat: bool,
    pub email: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Banner {
    pub code: String,
    pub text: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct SessionRef {
    pub id: Uuid,
    pub state: SessionState,
    pub agent_id: AgentId,
}

/// `GET /agent/state` and the first panel frame.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct AgentSnapshot {
    pub session: SessionRef,
    pub presence: Presence,
    pub capabilities: Capabilities,
    pub banners: Vec<Banner>,
    pub conversations: Vec<ConversationView>,
    pub drafts: BTreeMap<Uuid, Metadata>,
}

/// One frame on the agent panel socket.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PanelEvent {
    Snapshot(Box<AgentSnapshot>),
    Conversation {
        conversation: Box<ConversationView>,
    },
    Message {
        conversation_id: Uuid,
        message: MessageView,
    },
    Capabilities {
        capabilities: Capabilities,
    },
    Banners {
        banners: Vec<Banner>,
    },
    Presence {
        presence: Presence,
    },
    Session {
        state: &'static str,
        reason: &'static str,
    },
}

/// The customer's view of their chat.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ChatSnapshot {
    pub conversation_id: Uuid,
    pub group_id: Uuid,
    pub messages: Vec<MessageView>,
    pub status: Status,
    #[cfg_attr(feature = "utoipa", schema(required = true))]
    pub position: Option<u32>,
    #[cfg_attr(feature = "utoipa", schema(required = true))]
    pub agent_name: Option<String>,
    /// The agent has been disconnected for the prompt delay and may come back.
    pub agent_reconnecting: bool,
}

/// One frame on the customer chat socket.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChatEvent {
    Snapshot(Box<ChatSnapshot>),
    Message {
        message: MessageView,
    },
    Status {
        status: Status,
        position: Option<u32>,
        agent_name: Option<String>,
    },
    /// The agent's connection: `reconnecting` once they have been away for the prompt
    /// delay, `connected` when they are back.
    AgentConnection {
        state: &'static str,
    },
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct SessionSummary {
    pub id: Uuid,
    pub state: SessionState,
    #[cfg_attr(feature = "utoipa", schema(required = true))]
    pub disconnected_at: Option<Timestamp>,
    #[cfg_attr(feature = "utoipa", schema(required = true))]
    pub deadline: Option<Timestamp>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct SipSummary {
    pub registered: bool,
    #[cfg_attr(feature = "utoipa", schema(required = true))]
    pub expires_at: Option<Timestamp>,
}

/// One row of `GET /agents`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "utoipa", schema(as = Agent))]
pub struct AgentView {
    pub agent_id: AgentId,
    pub name: String,
    pub queues: Vec<String>,
    #[cfg_attr(feature = "utoipa", schema(required = true))]
    pub session: Option<SessionSummary>,
    pub presence: Presence,
    pub capabilities: Capabilities,
    pub banners: Vec<Banner>,
    pub sip: SipSummary,
    pub open_conversations: u32,
}

/// One row of `GET /queues`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "utoipa", schema(as = Queue))]
pub struct QueueView {
    pub id: String,
    pub name: String,
    pub channel: Channel,
    pub waiting: u32,
    #[cfg_attr(feature = "utoipa", schema(required = true))]
    pub oldest_arrival: Option<Timestamp>,
}

/// What a supervisor alert is about (docs/rescue.md#alerts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub enum AlertKind {
    /// An agent holding chats or calls has been disconnected for the prompt delay.
    AgentInGrace,
    /// Flap damping switched an agent to `not_ready`.
    ConnectionUnstable,
    /// An agent's grace period ran out (or a supervisor released them).
    SessionLost,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::AgentInGrace => "agent_in_grace",
            AlertKind::ConnectionUnstable => "connection_unstable",
            AlertKind::SessionLost => "session_lost",
        }
    }
}

/// One standing supervisor alert (`GET /alerts`, Dashboard `alert` frames).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "utoipa", schema(as = Alert))]
pub struct AlertView {
    pub id: Uuid,
    pub kind: AlertKind,
    pub agent: AgentId,
    pub at: Timestamp,
    pub text: String,
    /// The conversations at stake (held chats and calls, or the requeued chats).
    pub conversations: Vec<Uuid>,
}

/// One frame on the Dashboard socket.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DashboardEvent {
    Snapshot {
        agents: Vec<AgentView>,
        queues: Vec<QueueView>,
        /// The alerts standing when the Dashboard opened.
        alerts: Vec<AlertView>,
    },
    Alert {
        alert: AlertView,
    },
    AlertCleared {
        id: Uuid,
    },
    Agent {
        agent: Box<AgentView>,
    },
    Queue {
        queue: QueueView,
    },
    Conversation {
        conversation: Box<ConversationView>,
    },
}
