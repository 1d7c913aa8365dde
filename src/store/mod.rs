//! Store layer (adapter): everything that must survive a restart, behind one interface with
//! two implementations: [`RedbStore`] (one embedded file, the default) and [`PostgresStore`]
//! (a shared PostgreSQL database, for two or more nodes). It may import the core's records
//! and [`Write`]s, never the driver, HTTP or SIP adapters.
//!
//! The core says what to persist ([`Write`]); [`Store::apply`] writes one batch in one durable
//! transaction (group commit) and returns only after the commit. Both backends store each
//! record as the same [`codec`] bytes, so a new record kind is one more arm in each backend's
//! `apply` and nothing else. Stored bytes are never trusted: a record that does not decode is
//! a [`StoreError::Corrupt`] naming its table and key.

pub mod codec;
mod error;
mod invariants;
mod migrate;
pub mod postgres;
mod query;
pub mod redb;
mod seal;
mod search_index;
mod tables;

#[cfg(test)]
mod tests;

pub use codec::CodecError;
pub use error::StoreError;
pub use postgres::{Fence, PostgresOptions, PostgresStore};
pub use query::SearchQuery;
pub use redb::{FILE_NAME, RedbStore};
pub use tables::SCHEMA_VERSION;

use crate::core::model::{Conversation, Event, Message};
use crate::core::{Restored, Write};
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// The store: one interface over the two backends. Every method means the same on both;
/// the few that only make sense for a file (`backup_to`) say so with
/// [`StoreError::Unsupported`] on PostgreSQL.
#[derive(Debug)]
pub enum Store {
    Redb(RedbStore),
    Postgres(Box<PostgresStore>),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Redb($s) => $e,
            Store::Postgres($s) => $e,
        }
    };
}

impl Store {
    /// Opens (creating the directories and the file if missing) the redb store at `path`; a
    /// damaged or empty file is refused (see [`RedbStore::open`]).
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        RedbStore::open(path).map(Store::Redb)
    }

    /// A redb store in memory, for tests.
    pub fn in_memory() -> Result<Store, StoreError> {
        RedbStore::in_memory().map(Store::Redb)
    }

    /// The redb store file inside a data directory.
    pub fn file_in(data_dir: &Path) -> PathBuf {
        RedbStore::file_in(data_dir)
    }

    /// Connects to PostgreSQL, creating or migrating the schema.
    pub fn postgres(options: &PostgresOptions) -> Result<Store, StoreError> {
        PostgresStore::connect(options).map(|s| Store::Postgres(Box::new(s)))
    }

    /// The PostgreSQL backend, when this store is one (the cluster's lease lives there).
    pub fn as_postgres(&self) -> Option<&PostgresStore> {
        match self {
            Store::Postgres(p) => Some(p),
            Store::Redb(_) => None,
        }
    }

    /// Writes one batch in ONE durable transaction: group commit. Returns after the commit;
    /// on error nothing of the batch is written.
    pub fn apply(&self, writes: &[Write]) -> Result<(), StoreError> {
        dispatch!(self, s => s.apply(writes))
    }

    /// What boot needs back: open conversations with their events; threads that are open or
    /// that an open conversation carries, with their messages; every session, draft, agent
    /// record and outbox item.
    pub fn load(&self) -> Result<Restored, StoreError> {
        dispatch!(self, s => s.load())
    }

    /// Conversation Details: the record and its event timeline.
    pub fn conversation(&self, id: Uuid) -> Result<Option<(Conversation, Vec<Event>)>, StoreError> {
        dispatch!(self, s => s.conversation(id))
    }

    /// Every conversation of a group, oldest first (by `created_at`, then id).
    pub fn group(&self, group_id: Uuid) -> Result<Vec<Conversation>, StoreError> {
        dispatch!(self, s => s.group(group_id))
    }

    /// Whether `agent` ever had a conversation of this group: as its `agent` or `last_agent`,
    /// or named in one of its events.
    pub fn agent_worked_in_group(&self, agent: &str, group_id: Uuid) -> Result<bool, StoreError> {
        dispatch!(self, s => s.agent_worked_in_group(agent, group_id))
    }

    /// Conversation search, newest first (reverse id order), at most `q.limit` (capped at
    /// [`SearchQuery::MAX_LIMIT`]).
    pub fn search(&self, q: &SearchQuery) -> Result<Vec<Conversation>, StoreError> {
        dispatch!(self, s => s.search(q))
    }

    /// The transcript of a thread, in order.
    pub fn messages(&self, thread: Uuid) -> Result<Vec<Message>, StoreError> {
        dispatch!(self, s => s.messages(thread))
    }

    /// Writes a consistent snapshot to a new redb file at `dest` (online backup). PostgreSQL
    /// is backed up with its own tools (`pg_dump`, base backups).
    pub fn backup_to(&self, dest: &Path) -> Result<(), StoreError> {
        match self {
            Store::Redb(s) => s.backup_to(dest),
            Store::Postgres(_) => Err(StoreError::Unsupported(
                "an online backup to a file",
                "back PostgreSQL up with pg_dump or pg_basebackup",
            )),
        }
    }

    /// Every conversation, oldest id first, as one JSON object per line (the conversation's
    /// fields plus `"events": [...]`). Returns the count.
    pub fn export_jsonl(&self, out: &mut dyn std::io::Write) -> Result<u64, StoreError> {
        dispatch!(self, s => s.export_jsonl(out))
    }

    /// Checks the store's invariants; `Err` lists what is wrong (one problem per line).
    pub fn check_invariants(&self) -> Result<(), String> {
        dispatch!(self, s => s.check_invariants())
    }
}
