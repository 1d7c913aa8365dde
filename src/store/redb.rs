//! Store layer (adapter): the embedded redb backend, the default. One file holds everything
//! that must survive a restart; this module and its helpers (`invariants`, `search_index`,
//! `migrate`) are the only ones that touch redb. It may import the core's records and
//! [`Write`]s, never the driver, HTTP or SIP adapters.
//!
//! [`RedbStore::apply`] writes one batch in one durable transaction (group commit). The
//! indexes (`open_conversations`, `queue_index`, `groups`, the search tables, `open_threads`,
//! `session_tokens`) are kept in step with the records inside that same transaction, so a
//! crash leaves either all of a batch or none of it. Reads take their own read transaction
//! and run beside the writer. Stored bytes are never trusted: a record that does not decode
//! is a [`StoreError::Corrupt`] naming its table and key.

use super::codec;
use super::error::{StoreError, decode, encode};
use super::query::SearchQuery;
use super::seal::{self, Seal};
use super::search_index::{self, Fields, SearchTables};
use super::tables::*;
use crate::core::model::{Conversation, Event, Message, Metadata, Session, Status, Thread};
use crate::core::view::ConversationView;
use crate::core::{Restored, Write};
use redb::{
    Database, Durability, Key, MultimapTable, MultimapTableDefinition, ReadTransaction,
    ReadableDatabase, ReadableMultimapTable, ReadableTable, Table, TableDefinition, Value,
    WriteTransaction,
};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// The store file's name inside the data directory.
pub const FILE_NAME: &str = "switchboard.redb";

/// Most bytes of store pages kept in memory. redb's own default (1 GiB) keeps every page
/// written or read until it is reached, so memory grew with the history on disk and never
/// fell back (a storm's 20 MB of pages stayed resident after it). Pages beyond this are read
/// again from the file, which the kernel's page cache holds outside the process; 2 MiB holds
/// the tables' upper levels and the pages of the batch being written.
pub const PAGE_CACHE_BYTES: usize = 2 << 20;

/// The redb store.
#[derive(Debug)]
pub struct RedbStore {
    pub(super) db: Database,
    /// Written when the store is dropped, after `db` (fields drop in order): see
    /// [`super::seal`]. `None` for a store in memory.
    seal: Option<Seal>,
    /// Whether the open verified every page of the file.
    verified_at_open: bool,
}

impl RedbStore {
    /// Opens (creating the directories and the file if missing) the store at `path`, checks
    /// its schema version and creates any missing table. An existing file is verified first
    /// (every page's checksum), so a damaged file is a [`StoreError::Damaged`] with the way
    /// out, never a panic while reading it; an empty one is [`StoreError::EmptyFile`], never
    /// taken for a new store. The check is skipped for a file that nothing has written since
    /// this store closed it cleanly (its seal still matches, see [`super::seal`]).
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() && m.len() == 0 => {
                return Err(StoreError::EmptyFile {
                    path: path.to_path_buf(),
                });
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let damaged = |detail: String| StoreError::Damaged {
            path: path.to_path_buf(),
            detail,
        };
        let verify = path.exists() && !seal::is_sealed(path);
        let db = Database::builder()
            .set_check_integrity_on_open(verify)
            .set_cache_size(PAGE_CACHE_BYTES)
            .create(path)
            .map_err(|e| match e {
                redb::DatabaseError::Storage(redb::StorageError::Corrupted(d)) => damaged(d),
                redb::DatabaseError::Storage(redb::StorageError::Io(io))
                    if io.kind() == std::io::ErrorKind::InvalidData
                        || io.kind() == std::io::ErrorKind::UnexpectedEof =>
                {
                    damaged(io.to_string())
                }
                other => StoreError::from(redb::Error::from(other)),
            })?;
        let mut store = RedbStore::init(db).map_err(|e| match e {
            StoreError::Db(redb::Error::Corrupted(d)) => damaged(d),
            other => other,
        })?;
        seal::remove(path);
        store.seal = Some(Seal::new(path));
        store.verified_at_open = verify;
        Ok(store)
    }

    /// Whether the open read and verified every page of the file: true unless the file was
    /// left by a clean close and not written since.
    pub fn verified_at_open(&self) -> bool {
        self.verified_at_open
    }

    /// Bytes of pages in redb's cache (counted only where redb's `cache_metrics` feature
    /// is on, as in this crate's tests; 0 otherwise).
    pub fn cached_bytes(&self) -> usize {
        self.db.cache_stats().used_bytes()
    }

    /// A store in memory (redb's `InMemoryBackend`), for tests.
    pub fn in_memory() -> Result<RedbStore, StoreError> {
        RedbStore::init(
            Database::builder().create_with_backend(redb::backends::InMemoryBackend::new())?,
        )
    }

    /// The store file inside a data directory.
    pub fn file_in(data_dir: &Path) -> PathBuf {
        data_dir.join(FILE_NAME)
    }

    /// Checks the schema version (a newer one is refused, an older one migrated: see
    /// [`super::migrate`]) and creates any missing table, in one write transaction.
    fn init(db: Database) -> Result<RedbStore, StoreError> {
        let txn = db.begin_write()?;
        let mut older = None;
        {
            // The version is checked before any other table is opened: a newer schema may
            // have changed their types.
            let mut meta = txn.open_table(META)?;
            let found = meta.get(SCHEMA_VERSION_KEY)?.map(|v| v.value());
            match found {
                None => {
                    meta.insert(SCHEMA_VERSION_KEY, SCHEMA_VERSION)?;
                }
                Some(found) if found > SCHEMA_VERSION => {
                    return Err(StoreError::NewerSchema {
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
                Some(found) if found < SCHEMA_VERSION => older = Some(found),
                Some(_) => {}
            }
        }
        // Creates every table, so read transactions always find them.
        drop(WriteTables::open(&txn)?);
        if let Some(found) = older {
            super::migrate::migrate(&txn, found)?;
        }
        txn.commit()?;
        Ok(RedbStore {
            db,
            seal: None,
            verified_at_open: false,
        })
    }

    /// Writes one batch in ONE write transaction with `Durability::Immediate` (fsync): group
    /// commit. Returns after the commit; on error nothing of the batch is written.
    pub fn apply(&self, writes: &[Write]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut tables = WriteTables::open(&txn)?;
            for w in writes {
                tables.apply(w)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// What boot needs back: open conversations with their events; threads that are open or
    /// that an open conversation carries, with their messages; every session, draft, agent
    /// record and outbox item.
    pub fn load(&self) -> Result<Restored, StoreError> {
        let txn = self.db.begin_read()?;
        let conversations = txn.open_table(CONVERSATIONS)?;
        let open = txn.open_table(OPEN_CONVERSATIONS)?;
        let events = txn.open_table(EVENTS)?;
        let threads = txn.open_table(THREADS)?;
        let open_threads = txn.open_table(OPEN_THREADS)?;
        let messages = txn.open_table(MESSAGES)?;
        let mut out = Restored::default();
        let mut thread_ids = BTreeSet::new();
        for entry in open.iter()? {
            let key = entry?.0.value();
            let c = get_conversation(&conversations, key)?
                .ok_or_else(|| dangling("open_conversations", "conversations", uuid(key)))?;
            thread_ids.extend(c.thread.map(|t| t.as_u128()));
            out.events.push((c.id, events_of(&events, key)?));
            out.conversations.push(c);
        }
        for entry in open_threads.iter()? {
            thread_ids.insert(entry?.0.value());
        }
        for key in thread_ids {
            let Some(bytes) = threads.get(key)? else {
                return Err(dangling(
                    "open_threads or conversations",
                    "threads",
                    uuid(key),
                ));
            };
            let thread: Thread = decode("threads", || uuid(key), bytes.value())?;
            out.threads.push((thread, messages_of(&messages, key)?));
        }
        for entry in txn.open_table(SESSIONS)?.iter()? {
            let (k, v) = entry?;
            out.sessions
                .push(decode("sessions", || uuid(k.value()), v.value())?);
        }
        for entry in txn.open_table(DRAFTS)?.iter()? {
            let (k, v) = entry?;
            let (session, conversation) = k.value();
            let draft: Metadata = decode("drafts", || pair(session, conversation), v.value())?;
            out.drafts.push((
                Uuid::from_u128(session),
                Uuid::from_u128(conversation),
                draft,
            ));
        }
        for entry in txn.open_table(AGENTS)?.iter()? {
            let (k, v) = entry?;
            out.agents
                .push(decode("agents", || k.value().to_string(), v.value())?);
        }
        for entry in txn.open_table(OUTBOX)?.iter()? {
            let (k, v) = entry?;
            out.outbox
                .push(decode("outbox", || uuid(k.value()), v.value())?);
        }
        for entry in txn.open_table(DIALOGS)?.iter()? {
            let (k, v) = entry?;
            out.dialogs
                .push(decode("dialogs", || uuid(k.value()), v.value())?);
        }
        Ok(out)
    }

    /// Conversation Details: the record and its event timeline.
    pub fn conversation(&self, id: Uuid) -> Result<Option<(Conversation, Vec<Event>)>, StoreError> {
        let txn = self.db.begin_read()?;
        let Some(c) = get_conversation(&txn.open_table(CONVERSATIONS)?, id.as_u128())? else {
            return Ok(None);
        };
        let events = events_of(&txn.open_table(EVENTS)?, id.as_u128())?;
        Ok(Some((c, events)))
    }

    /// Every conversation of a group, oldest first (by `created_at`, then id).
    pub fn group(&self, group_id: Uuid) -> Result<Vec<Conversation>, StoreError> {
        let txn = self.db.begin_read()?;
        group_members(&txn, group_id)
    }

    /// Whether `agent` ever had a conversation of this group: as its `agent` or `last_agent`,
    /// or named in one of its events.
    pub fn agent_worked_in_group(&self, agent: &str, group_id: Uuid) -> Result<bool, StoreError> {
        let txn = self.db.begin_read()?;
        let members = group_members(&txn, group_id)?;
        let named = |a: &Option<String>| a.as_deref() == Some(agent);
        if members
            .iter()
            .any(|c| named(&c.agent) || named(&c.last_agent))
        {
            return Ok(true);
        }
        let events = txn.open_table(EVENTS)?;
        for c in &members {
            if events_of(&events, c.id.as_u128())?
                .iter()
                .any(|e| named(&e.agent))
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Conversation search, newest first (reverse id order), at most `q.limit` (capped at
    /// [`SearchQuery::MAX_LIMIT`]). Without a filter it reads the newest records from the
    /// cursor down. With one, the closed conversations come from the search index (see
    /// [`super::search_index`]: empty at once when a filter's value has none, otherwise a
    /// walk of the smallest filter's entries that decodes only the matching records) and
    /// the open ones from the open index; the two are merged newest first. A status filter
    /// reads only the side it names.
    pub fn search(&self, q: &SearchQuery) -> Result<Vec<Conversation>, StoreError> {
        let limit = q.limit.min(SearchQuery::MAX_LIMIT);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let txn = self.db.begin_read()?;
        let conversations = txn.open_table(CONVERSATIONS)?;
        // Ids sort in creation order: `before` is the upper end of the key range.
        let below = q.before.map_or(u128::MAX, |b| b.as_u128());
        let filtered =
            q.status.is_some() || q.queue.is_some() || q.agent.is_some() || q.channel.is_some();
        if !filtered {
            let mut out = Vec::new();
            for entry in conversations.range(..below)?.rev() {
                let (k, v) = entry?;
                out.push(decode("conversations", || uuid(k.value()), v.value())?);
                if out.len() == limit {
                    break;
                }
            }
            return Ok(out);
        }
        let mut open = Vec::new();
        if q.status.is_none_or(|s| !s.is_closed()) {
            for entry in txn.open_table(OPEN_CONVERSATIONS)?.range(..below)?.rev() {
                let key = entry?.0.value();
                let c = get_conversation(&conversations, key)?
                    .ok_or_else(|| dangling("open_conversations", "conversations", uuid(key)))?;
                if q.matches(&c) {
                    open.push(c);
                    if open.len() == limit {
                        break;
                    }
                }
            }
        }
        let closed = if q.status.is_none_or(|s| s.is_closed()) {
            search_index::search(&txn, &conversations, q, below, limit)?.unwrap_or_default()
        } else {
            Vec::new()
        };
        Ok(newest_first(open, closed, limit))
    }

    /// The transcript of a thread, in order.
    pub fn messages(&self, thread: Uuid) -> Result<Vec<Message>, StoreError> {
        let txn = self.db.begin_read()?;
        messages_of(&txn.open_table(MESSAGES)?, thread.as_u128())
    }

    /// Writes a consistent snapshot of the whole store to a new redb file at `dest` (for an
    /// online backup): every table is copied inside ONE read transaction, so writes that
    /// commit meanwhile are either wholly in the copy or not at all. The copy is built at
    /// `dest` + `.partial`, made durable, then renamed into place; an existing `dest` is
    /// refused. The result opens with [`RedbStore::open`].
    pub fn backup_to(&self, dest: &Path) -> Result<(), StoreError> {
        if dest.exists() {
            return Err(StoreError::BackupExists(dest.to_path_buf()));
        }
        let dir = dest.parent().filter(|d| !d.as_os_str().is_empty());
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let mut partial = dest.as_os_str().to_os_string();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        if partial.exists() {
            // Left over from an interrupted backup.
            std::fs::remove_file(&partial)?;
        }
        let src = self.db.begin_read()?;
        {
            let copy = Database::builder().create(&partial)?;
            let mut dst = copy.begin_write()?;
            dst.set_durability(Durability::Immediate)?;
            copy_table(&src, &dst, META)?;
            copy_table(&src, &dst, CONVERSATIONS)?;
            copy_table(&src, &dst, OPEN_CONVERSATIONS)?;
            copy_table(&src, &dst, QUEUE_INDEX)?;
            copy_multimap(&src, &dst, GROUPS)?;
            copy_table(&src, &dst, EVENTS)?;
            copy_table(&src, &dst, THREADS)?;
            copy_table(&src, &dst, OPEN_THREADS)?;
            copy_table(&src, &dst, MESSAGES)?;
            copy_table(&src, &dst, SESSIONS)?;
            copy_table(&src, &dst, SESSION_TOKENS)?;
            copy_table(&src, &dst, DRAFTS)?;
            copy_table(&src, &dst, AGENTS)?;
            copy_table(&src, &dst, OUTBOX)?;
            copy_table(&src, &dst, DIALOGS)?;
            copy_table(&src, &dst, SEARCH_INDEX)?;
            copy_table(&src, &dst, SEARCH_COUNTS)?;
            copy_table(&src, &dst, SEARCH_MIX)?;
            dst.commit()?;
        }
        drop(src);
        std::fs::rename(&partial, dest)?;
        if let Some(dir) = dir {
            // Make the rename itself durable.
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Every conversation, oldest id first, as one JSON object per line (the conversation's
    /// fields plus `"events": [...]`), all from one read transaction. Returns the count.
    pub fn export_jsonl(&self, out: &mut dyn std::io::Write) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let events = txn.open_table(EVENTS)?;
        let mut n = 0;
        for entry in txn.open_table(CONVERSATIONS)?.iter()? {
            let (k, v) = entry?;
            let key = k.value();
            let c: Conversation = decode("conversations", || uuid(key), v.value())?;
            let timeline = events_of(&events, key)?;
            let mut view = ConversationView::with_timeline(&c, &timeline);
            view.events = Some(timeline);
            serde_json::to_writer(&mut *out, &view)?;
            out.write_all(b"\n")?;
            n += 1;
        }
        out.flush()?;
        Ok(n)
    }

    /// Checks the store's invariants; `Err` lists what is wrong (one problem per line).
    ///
    /// Each conversation decodes under its own key and is in exactly one state: in
    /// `queue_index` (under its queue and rank) iff `in_queue`, in `open_conversations` iff
    /// not closed, with an agent iff offered/in process/in wrap-up; `groups` holds every
    /// conversation under its group and nothing else; no two `requeue` conversations share
    /// an `origin.previous`; timelines and transcripts are numbered `0..count` without gaps;
    /// `open_threads` matches the threads' `open` flags; `session_tokens` and the sessions
    /// agree; every draft belongs to a stored session; the search tables hold exactly each
    /// conversation's entries, and their counts are the records' counts.
    pub fn check_invariants(&self) -> Result<(), String> {
        let problems = self.invariant_problems().map_err(|e| e.to_string())?;
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    }
}

/// The tables of one write transaction.
struct WriteTables<'txn> {
    conversations: Table<'txn, u128, &'static [u8]>,
    open: Table<'txn, u128, ()>,
    queue_index: Table<'txn, (&'static str, i64, u128), ()>,
    groups: MultimapTable<'txn, u128, u128>,
    events: Table<'txn, (u128, u32), &'static [u8]>,
    threads: Table<'txn, u128, &'static [u8]>,
    open_threads: Table<'txn, u128, ()>,
    messages: Table<'txn, (u128, u32), &'static [u8]>,
    sessions: Table<'txn, u128, &'static [u8]>,
    session_tokens: Table<'txn, [u8; 32], u128>,
    drafts: Table<'txn, (u128, u128), &'static [u8]>,
    agents: Table<'txn, &'static str, &'static [u8]>,
    outbox: Table<'txn, u128, &'static [u8]>,
    dialogs: Table<'txn, u128, &'static [u8]>,
    search: SearchTables<'txn>,
}

impl<'txn> WriteTables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        Ok(WriteTables {
            conversations: txn.open_table(CONVERSATIONS)?,
            open: txn.open_table(OPEN_CONVERSATIONS)?,
            queue_index: txn.open_table(QUEUE_INDEX)?,
            groups: txn.open_multimap_table(GROUPS)?,
            events: txn.open_table(EVENTS)?,
            threads: txn.open_table(THREADS)?,
            open_threads: txn.open_table(OPEN_THREADS)?,
            messages: txn.open_table(MESSAGES)?,
            sessions: txn.open_table(SESSIONS)?,
            session_tokens: txn.open_table(SESSION_TOKENS)?,
            drafts: txn.open_table(DRAFTS)?,
            agents: txn.open_table(AGENTS)?,
            outbox: txn.open_table(OUTBOX)?,
            dialogs: txn.open_table(DIALOGS)?,
            search: SearchTables::open(txn)?,
        })
    }

    fn apply(&mut self, w: &Write) -> Result<(), StoreError> {
        match w {
            Write::Conversation(c) => self.put_conversation(c),
            Write::Event {
                conversation,
                seq,
                event,
            } => {
                let key = conversation.as_u128();
                let bytes = encode("events", || seq_key(key, *seq), event)?;
                self.events.insert((key, *seq), bytes.as_slice())?;
                Ok(())
            }
            Write::Thread(t) => {
                let key = t.id.as_u128();
                let bytes = encode("threads", || uuid(key), t)?;
                self.threads.insert(key, bytes.as_slice())?;
                if t.open {
                    self.open_threads.insert(key, ())?;
                } else {
                    self.open_threads.remove(key)?;
                }
                Ok(())
            }
            Write::Message {
                thread,
                seq,
                message,
            } => {
                let key = thread.as_u128();
                let bytes = encode("messages", || seq_key(key, *seq), message)?;
                self.messages.insert((key, *seq), bytes.as_slice())?;
                Ok(())
            }
            Write::Session(s) => self.put_session(s),
            Write::SessionEnded { id, token_hash } => {
                let key = id.as_u128();
                let old = self
                    .sessions
                    .remove(key)?
                    .map(|g| codec::decode::<Session>(g.value()));
                self.drop_token(token_hash, key)?;
                if let Some(Ok(old)) = old {
                    self.drop_token(&old.token_hash, key)?;
                }
                self.clear_drafts(key)
            }
            Write::Draft {
                session,
                conversation,
                draft,
            } => {
                let key = (session.as_u128(), conversation.as_u128());
                match draft {
                    Some(d) => {
                        let bytes = encode("drafts", || pair(key.0, key.1), d)?;
                        self.drafts.insert(key, bytes.as_slice())?;
                    }
                    None => {
                        self.drafts.remove(key)?;
                    }
                }
                Ok(())
            }
            Write::DraftsCleared { session } => self.clear_drafts(session.as_u128()),
            Write::Agent(a) => {
                let bytes = encode("agents", || a.id.clone(), a)?;
                self.agents.insert(a.id.as_str(), bytes.as_slice())?;
                Ok(())
            }
            Write::Outbox(item) => {
                let key = item.message_id.as_u128();
                let bytes = encode("outbox", || uuid(key), item)?;
                self.outbox.insert(key, bytes.as_slice())?;
                Ok(())
            }
            Write::OutboxDone { message } => {
                self.outbox.remove(message.as_u128())?;
                Ok(())
            }
            Write::Dialog(d) => {
                let key = d.conversation.as_u128();
                let bytes = encode("dialogs", || uuid(key), d)?;
                self.dialogs.insert(key, bytes.as_slice())?;
                Ok(())
            }
            Write::DialogEnded { conversation } => {
                self.dialogs.remove(conversation.as_u128())?;
                Ok(())
            }
        }
    }

    /// Inserts or replaces a conversation and moves its index entries from the old record's
    /// state to the new one's.
    fn put_conversation(&mut self, c: &Conversation) -> Result<(), StoreError> {
        let key = c.id.as_u128();
        let bytes = encode("conversations", || uuid(key), c)?;
        let old = self
            .conversations
            .insert(key, bytes.as_slice())?
            .map(|g| codec::decode::<Conversation>(g.value()));
        let fields = Fields::indexed(c);
        match old {
            Some(Ok(old)) => {
                if old.status == Status::InQueue {
                    self.queue_index
                        .remove((old.queue.as_str(), old.queue_rank, key))?;
                }
                if old.group_id != c.group_id {
                    self.groups.remove(old.group_id.as_u128(), key)?;
                }
                self.search
                    .put(key, Fields::indexed(&old).as_ref(), fields.as_ref())?;
            }
            Some(Err(e)) => {
                // The replaced record was unreadable: find its entries the slow way.
                tracing::warn!(conversation = %c.id, error = %e, "replacing a corrupt conversation record");
                self.queue_index.retain(|(_, _, id), ()| id != key)?;
                self.search.forget(key)?;
                self.search.put(key, None, fields.as_ref())?;
            }
            None => self.search.put(key, None, fields.as_ref())?,
        }
        if c.status == Status::InQueue {
            self.queue_index
                .insert((c.queue.as_str(), c.queue_rank, key), ())?;
        }
        if c.status.is_closed() {
            self.open.remove(key)?;
        } else {
            self.open.insert(key, ())?;
        }
        self.groups.insert(c.group_id.as_u128(), key)?;
        Ok(())
    }

    /// Inserts or replaces a session; a changed token replaces the old token's entry.
    fn put_session(&mut self, s: &Session) -> Result<(), StoreError> {
        let key = s.id.as_u128();
        let bytes = encode("sessions", || uuid(key), s)?;
        let old = self
            .sessions
            .insert(key, bytes.as_slice())?
            .map(|g| codec::decode::<Session>(g.value()));
        match old {
            Some(Ok(old)) if old.token_hash != s.token_hash => {
                self.drop_token(&old.token_hash, key)?
            }
            Some(Err(e)) => {
                tracing::warn!(session = %s.id, error = %e, "replacing a corrupt session record");
                self.session_tokens.retain(|_, id| id != key)?;
            }
            _ => {}
        }
        self.session_tokens.insert(s.token_hash, key)?;
        Ok(())
    }

    /// Removes a token entry if it names this session.
    fn drop_token(&mut self, token: &[u8; 32], session: u128) -> Result<(), StoreError> {
        let ours = self
            .session_tokens
            .get(token)?
            .is_some_and(|g| g.value() == session);
        if ours {
            self.session_tokens.remove(token)?;
        }
        Ok(())
    }

    fn clear_drafts(&mut self, session: u128) -> Result<(), StoreError> {
        self.drafts
            .retain_in((session, 0u128)..=(session, u128::MAX), |_, _| false)?;
        Ok(())
    }
}

/// Two lists each newest first (descending ids) merged into one, at most `limit` long.
fn newest_first(a: Vec<Conversation>, b: Vec<Conversation>, limit: usize) -> Vec<Conversation> {
    let mut out = Vec::with_capacity(limit.min(a.len() + b.len()));
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    while out.len() < limit {
        let take_a = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => x.id >= y.id,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        out.extend(if take_a { a.next() } else { b.next() });
    }
    out
}

pub(super) fn uuid(key: u128) -> String {
    Uuid::from_u128(key).to_string()
}

pub(super) fn seq_key(id: u128, seq: u32) -> String {
    format!("({}, {seq})", uuid(id))
}

pub(super) fn pair(a: u128, b: u128) -> String {
    format!("({}, {})", uuid(a), uuid(b))
}

fn dangling(index: &'static str, table: &'static str, key: String) -> StoreError {
    StoreError::Dangling { index, table, key }
}

fn get_conversation(
    table: &impl ReadableTable<u128, &'static [u8]>,
    key: u128,
) -> Result<Option<Conversation>, StoreError> {
    match table.get(key)? {
        Some(v) => decode("conversations", || uuid(key), v.value()).map(Some),
        None => Ok(None),
    }
}

fn events_of(
    table: &impl ReadableTable<(u128, u32), &'static [u8]>,
    id: u128,
) -> Result<Vec<Event>, StoreError> {
    let mut out = Vec::new();
    for entry in table.range((id, 0u32)..=(id, u32::MAX))? {
        let (k, v) = entry?;
        out.push(decode("events", || seq_key(id, k.value().1), v.value())?);
    }
    Ok(out)
}

fn messages_of(
    table: &impl ReadableTable<(u128, u32), &'static [u8]>,
    thread: u128,
) -> Result<Vec<Message>, StoreError> {
    let mut out = Vec::new();
    for entry in table.range((thread, 0u32)..=(thread, u32::MAX))? {
        let (k, v) = entry?;
        out.push(decode(
            "messages",
            || seq_key(thread, k.value().1),
            v.value(),
        )?);
    }
    Ok(out)
}

fn group_members(txn: &ReadTransaction, group_id: Uuid) -> Result<Vec<Conversation>, StoreError> {
    let conversations = txn.open_table(CONVERSATIONS)?;
    let mut out = Vec::new();
    for id in txn.open_multimap_table(GROUPS)?.get(group_id.as_u128())? {
        let key = id?.value();
        let c = get_conversation(&conversations, key)?
            .ok_or_else(|| dangling("groups", "conversations", uuid(key)))?;
        out.push(c);
    }
    out.sort_by_key(|c| (c.created_at, c.id));
    Ok(out)
}

fn copy_table<K: Key + 'static, V: Value + 'static>(
    src: &ReadTransaction,
    dst: &WriteTransaction,
    def: TableDefinition<K, V>,
) -> Result<(), StoreError> {
    let from = src.open_table(def)?;
    let mut to = dst.open_table(def)?;
    for entry in from.iter()? {
        let (k, v) = entry?;
        to.insert(k.value(), v.value())?;
    }
    Ok(())
}

fn copy_multimap<K: Key + 'static, V: Key + 'static>(
    src: &ReadTransaction,
    dst: &WriteTransaction,
    def: MultimapTableDefinition<K, V>,
) -> Result<(), StoreError> {
    let from = src.open_multimap_table(def)?;
    let mut to = dst.open_multimap_table(def)?;
    for entry in from.iter()? {
        let (k, values) = entry?;
        for v in values {
            to.insert(k.value(), v?.value())?;
        }
    }
    Ok(())
}
