//! Core layer: what adapters ask of the core ([`Command`]), what it answers ([`Reply`]) or
//! refuses ([`Rejection`]). Plain data; no I/O.

use super::model::{AgentId, Medium, Metadata, Presence, Role, TokenHash};
use super::view::{AgentSnapshot, AgentView, AlertView, ChatSnapshot, ConversationView, QueueView};
use uuid::Uuid;

/// Where a transfer or a reassignment sends the work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Queue(String),
    Agent(AgentId),
}

/// A change to an agent's SIP bindings, already authenticated by the registrar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindingUpdate {
    /// No Contact: just list the bindings.
    Fetch,
    /// Each contact with its granted expiry in seconds (0 removes it).
    Set(Vec<(String, u32)>),
    /// `Contact: *` with `Expires: 0`.
    RemoveAll,
}

#[derive(Debug, Clone)]
pub enum Command {
    /// A verified login (the adapter checked the password and made the token).
    Login {
        user: String,
        role: Role,
        token: TokenHash,
    },
    Logout {
        token: TokenHash,
    },
    /// Resolve a bearer token to who it is.
    Authenticate {
        token: TokenHash,
    },
    /// A panel socket opened with this token; answered with the snapshot.
    AttachPanel {
        token: TokenHash,
        socket: u64,
    },
    /// A panel socket closed or went silent, and how.
    DetachPanel {
        socket: u64,
        cause: LossCause,
    },
    /// The standing supervisor alerts.
    Alerts {
        token: TokenHash,
    },
    /// A supervisor ends an agent's session now, as if its grace period ran out.
    Release {
        token: TokenHash,
        agent: AgentId,
    },
    AgentState {
        token: TokenHash,
    },
    SetPresence {
        token: TokenHash,
        presence: Presence,
    },
    Accept {
        token: TokenHash,
        conversation: Uuid,
    },
    Reject {
        token: TokenHash,
        conversation: Uuid,
    },
    AgentMessage {
        token: TokenHash,
        conversation: Uuid,
        text: String,
    },
    SaveDraft {
        token: TokenHash,
        conversation: Uuid,
        draft: Metadata,
    },
    SaveMetadata {
        token: TokenHash,
        conversation: Uuid,
        metadata: Metadata,
    },
    End {
        token: TokenHash,
        conversation: Uuid,
    },
    Complete {
        token: TokenHash,
        conversation: Uuid,
    },
    Transfer {
        token: TokenHash,
        conversation: Uuid,
        target: Target,
    },
    Consult {
        token: TokenHash,
        conversation: Uuid,
        agent: AgentId,
    },
    Callback {
        token: TokenHash,
        conversation: Uuid,
    },
    Reassign {
        token: TokenHash,
        conversation: Uuid,
        target: Target,
    },
    QueueConversations {
        token: TokenHash,
        queue: String,
    },
    Pick {
        token: TokenHash,
        queue: String,
        conversation: Uuid,
    },
    Agents {
        token: TokenHash,
    },
    Queues {
        token: TokenHash,
    },
    /// A customer starts a web chat (the adapter made the customer token).
    StartChat {
        queue: String,
        name: String,
        text: Option<String>,
        token: TokenHash,
    },
    ChatState {
        token: TokenHash,
    },
    /// A customer chat socket opened; answered with the chat snapshot.
    AttachChat {
        token: TokenHash,
    },
    CustomerMessage {
        token: TokenHash,
        text: String,
    },
    CustomerEnd {
        token: TokenHash,
    },
    /// An sms or social message from an integration (API key already checked).
    InboundMessage {
        medium: Medium,
        from: String,
        text: String,
        queue: String,
    },
    InboundEmail {
        from: String,
        subject: String,
        text: String,
        queue: String,
    },
    InboundCall {
        from: String,
        queue: String,
    },
    Hangup {
        conversation: Uuid,
    },
    /// An authenticated REGISTER.
    SipRegister {
        agent: AgentId,
        update: BindingUpdate,
    },
    /// A SIP message for the call proxy (anything but REGISTER and OPTIONS), from `from`.
    Sip {
        from: std::net::SocketAddr,
        message: Box<crate::sip::message::SipMessage>,
    },
    /// The SIP socket's address (the proxy's Via and Record-Route).
    SipListening {
        addr: std::net::SocketAddr,
    },
    /// Outcome of one delivery attempt of an outbox item.
    OutboxAttempt {
        message: Uuid,
        delivered: bool,
        error: Option<String>,
    },
}

/// How a panel socket ended, as its adapter saw it. Only a close frame from the client is
/// polite; everything else counts towards flap damping (docs/rescue.md#flap-damping).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossCause {
    /// The client sent a WebSocket close frame (reload, closed tab, logout).
    Closed,
    /// The connection ended without a close frame (network drop, TCP reset, write failure).
    Dropped,
    /// Nothing arrived for `heartbeat_timeout`.
    HeartbeatTimeout,
    /// The server dropped a socket that read its frames too slowly.
    TooSlow,
}

impl LossCause {
    pub fn abrupt(self) -> bool {
        self != LossCause::Closed
    }
    pub fn as_str(self) -> &'static str {
        match self {
            LossCause::Closed => "closed",
            LossCause::Dropped => "network_drop",
            LossCause::HeartbeatTimeout => "heartbeat_timeout",
            LossCause::TooSlow => "too_slow",
        }
    }
}

/// Who a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Agent { agent: AgentId, session: Uuid },
    Supervisor { supervisor: String, session: Uuid },
    Customer { thread: Uuid, conversation: Uuid },
}

#[derive(Debug, Clone)]
pub enum Reply {
    Done,
    LoggedIn {
        session_id: Uuid,
        user: String,
        role: Role,
    },
    Principal(Principal),
    Snapshot(Box<AgentSnapshot>),
    Conversation(Box<ConversationView>),
    Conversations(Vec<ConversationView>),
    Agents(Vec<AgentView>),
    Queues(Vec<QueueView>),
    Alerts(Vec<AlertView>),
    ChatStarted {
        conversation_id: Uuid,
        group_id: Uuid,
    },
    Chat(Box<ChatSnapshot>),
    /// Current bindings with their remaining seconds.
    Bindings(Vec<(String, u32)>),
}

/// Why the core refused a command. Mapped to HTTP in one place (docs/api.md#errors).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("missing, unknown or revoked token")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("{0}")]
    Invalid(String),
    /// A text over a configured size limit.
    #[error("{0}")]
    TooLarge(String),
    /// More requests than a configured rate allows; try again later.
    #[error("{0}")]
    RateLimited(String),
}

impl Rejection {
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Rejection::Conflict {
            code,
            message: message.into(),
        }
    }
    pub fn invalid_state(message: impl Into<String>) -> Self {
        Self::conflict("invalid_state", message)
    }
}
