//! Store layer: every redb table of the store, in this one file, and the schema version.
//!
//! Keys use redb's native types; a `u128` id is `Uuid::as_u128()`, which sorts by creation
//! time for UUID v7. Values named "record" are [`super::codec`] records.

use redb::{MultimapTableDefinition, TableDefinition};

/// The layout of the tables below. Stored in [`META`] under [`SCHEMA_VERSION_KEY`]; a file
/// with a newer version is refused, an older one is migrated at open (see
/// [`super::migrate`]). Version 2 added [`SEARCH_INDEX`], [`SEARCH_COUNTS`] and
/// [`SEARCH_MIX`].
pub const SCHEMA_VERSION: u64 = 2;

/// The [`META`] key holding the schema version.
pub const SCHEMA_VERSION_KEY: &str = "schema_version";

/// Store-wide settings: name → value.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Conversation id → Conversation record.
pub const CONVERSATIONS: TableDefinition<u128, &[u8]> = TableDefinition::new("conversations");

/// Ids of the conversations that are not `handled` or `abandoned` (maintained on every put).
pub const OPEN_CONVERSATIONS: TableDefinition<u128, ()> =
    TableDefinition::new("open_conversations");

/// (queue, queue rank, conversation id) of exactly the `in_queue` conversations.
pub const QUEUE_INDEX: TableDefinition<(&str, i64, u128), ()> = TableDefinition::new("queue_index");

/// Group id → the ids of its conversations.
pub const GROUPS: MultimapTableDefinition<u128, u128> = MultimapTableDefinition::new("groups");

/// (conversation id, sequence number) → Event record: the timeline.
pub const EVENTS: TableDefinition<(u128, u32), &[u8]> = TableDefinition::new("events");

/// Thread id → Thread record.
pub const THREADS: TableDefinition<u128, &[u8]> = TableDefinition::new("threads");

/// Ids of the threads whose `open` flag is set (maintained on every thread put), so boot
/// does not scan every thread ever written.
pub const OPEN_THREADS: TableDefinition<u128, ()> = TableDefinition::new("open_threads");

/// (thread id, sequence number) → Message record: the transcript.
pub const MESSAGES: TableDefinition<(u128, u32), &[u8]> = TableDefinition::new("messages");

/// Session id → Session record.
pub const SESSIONS: TableDefinition<u128, &[u8]> = TableDefinition::new("sessions");

/// Token hash → session id (maintained from session puts and ends).
pub const SESSION_TOKENS: TableDefinition<[u8; 32], u128> = TableDefinition::new("session_tokens");

/// (session id, conversation id) → Metadata record: unsaved drafts.
pub const DRAFTS: TableDefinition<(u128, u128), &[u8]> = TableDefinition::new("drafts");

/// Agent id → AgentRecord record (presence, idle times, SIP bindings with absolute expiry).
pub const AGENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("agents");

/// Message id → OutboxItem record: replies waiting for webhook delivery.
pub const OUTBOX: TableDefinition<u128, &[u8]> = TableDefinition::new("outbox");

/// Conversation id → Dialog record: answered SIP calls (removed when the call ends).
pub const DIALOGS: TableDefinition<u128, &[u8]> = TableDefinition::new("dialogs");

/// The conversation search's covering index (see [`super::search_index`]): one entry per
/// closed conversation for each of its status, queue, channel and (when it has one) agent, keyed
/// (field code, value, conversation id); the value holds the conversation's status code,
/// channel code, queue and agent, so a combined filter is decided from the entry alone.
pub const SEARCH_INDEX: TableDefinition<SearchKey, SearchCover> =
    TableDefinition::new("search_index");

/// A [`SEARCH_INDEX`] key: (field code, value, conversation id).
pub type SearchKey = (u8, &'static str, u128);

/// A [`SEARCH_INDEX`] value: (status code, channel code, queue, agent).
pub type SearchCover = (u8, u8, &'static str, Option<&'static str>);

/// (field code, value) → how many closed conversations [`SEARCH_INDEX`] holds under it (rows at 0
/// are removed).
pub const SEARCH_COUNTS: TableDefinition<(u8, &str), u64> = TableDefinition::new("search_counts");

/// (queue, status code, channel code) → how many closed conversations have exactly these three
/// (rows at 0 are removed): the exact size of any combination of those filters.
pub const SEARCH_MIX: TableDefinition<(&str, u8, u8), u64> = TableDefinition::new("search_mix");
