//! Core layer: what the core asks the outside world to do. [`Write`]s go to the store, all of
//! one batch in one transaction (group commit); [`Effect`]s go to subscribers and workers
//! after that commit.

use super::model::{
    AgentId, AgentRecord, Conversation, Dialog, Event, Message, Metadata, OutboxItem, Session,
    Thread, TokenHash,
};
use super::view::{ChatEvent, DashboardEvent, PanelEvent};
use uuid::Uuid;

/// One change to persist.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Insert or replace a conversation (the store keeps its indexes in step).
    Conversation(Box<Conversation>),
    Event {
        conversation: Uuid,
        seq: u32,
        event: Event,
    },
    Thread(Box<Thread>),
    Message {
        thread: Uuid,
        seq: u32,
        message: Message,
    },
    Session(Box<Session>),
    SessionEnded {
        id: Uuid,
        token_hash: TokenHash,
    },
    Draft {
        session: Uuid,
        conversation: Uuid,
        draft: Option<Metadata>,
    },
    DraftsCleared {
        session: Uuid,
    },
    Agent(Box<AgentRecord>),
    Outbox(Box<OutboxItem>),
    OutboxDone {
        message: Uuid,
    },
    /// Insert or replace an answered SIP call's dialog.
    Dialog(Box<Dialog>),
    /// The call is over: its dialog is forgotten.
    DialogEnded {
        conversation: Uuid,
    },
}

/// One thing to tell or do after the batch is committed.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// A frame for every panel socket of this agent.
    Panel { agent: AgentId, event: PanelEvent },
    /// A frame for every chat socket of this customer thread.
    Chat { thread: Uuid, event: ChatEvent },
    /// A frame for every Dashboard socket.
    Dashboard(DashboardEvent),
    /// Close these panel sockets with this WebSocket close code (4001 taken over, 4401 ended).
    ClosePanels { sockets: Vec<u64>, code: u16 },
    /// Close the chat sockets of a thread (the chat is over).
    CloseChat { thread: Uuid },
    /// Deliver an agent reply to the medium's webhook.
    Deliver(Box<OutboxItem>),
    /// Send a SIP datagram.
    SipSend {
        to: std::net::SocketAddr,
        bytes: Vec<u8>,
    },
}
