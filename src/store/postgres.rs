//! Store layer (adapter): the PostgreSQL backend, for two or more nodes sharing one database.
//! The only module that speaks SQL for records (the cluster's lease statements live in
//! `cluster.rs`). It may import the core's records and [`Write`]s, never the driver, HTTP or
//! SIP adapters.
//!
//! Layout: conversations have their own table with real, indexed columns for the history
//! queries (status, queue, agent, channel, group, open flag, creation time, the conversation a
//! requeue replaces — unique, so the database itself refuses a second requeue); every other
//! record kind lives in one generic `records (kind, key) → value` table with an optional
//! `parent` (the conversation of an event, the thread of a message, the session of a draft)
//! and an `is_open` flag (open threads). Values are the same [`super::codec`] bytes as in
//! redb, so a new record kind is a new `kind` string and no schema change.
//!
//! One batch is one transaction (group commit): the batch is folded in memory to its final
//! effect per key, then written with a handful of array statements sent in one pipeline, and
//! the caller gets its answer only after `COMMIT`. When this node works under a cluster lease
//! ([`PostgresStore::set_fence`]), the same transaction first locks the lease row and checks
//! the term: a node that lost the lease can never commit.
//!
//! The interface is synchronous like redb's: the connections are driven by a small runtime of
//! the store's own, and a caller's thread waits for its statements (the driver calls the store
//! from a blocking task).

use super::error::{StoreError, decode, encode};
use super::query::SearchQuery;
use crate::config::redact_url as redact;
use crate::core::model::{
    AgentRecord, Conversation, Dialog, Event, Message, Metadata, OriginKind, OutboxItem, Session,
    Thread,
};
use crate::core::view::ConversationView;
use crate::core::{Restored, Write};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, IsolationLevel, Statement};
use uuid::Uuid;

/// The schema versions this build knows: migration `i` brings the schema to version `i + 1`.
/// Each runs in the same transaction as the version update.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE conversations (
    id uuid PRIMARY KEY,
    status text NOT NULL,
    queue text NOT NULL,
    agent text,
    channel text NOT NULL,
    group_id uuid NOT NULL,
    is_open boolean NOT NULL,
    created_at bigint NOT NULL,
    requeue_of uuid,
    value bytea NOT NULL
);
CREATE INDEX conversations_open ON conversations (id) WHERE is_open;
CREATE INDEX conversations_status ON conversations (status, id);
CREATE INDEX conversations_queue ON conversations (queue, id);
CREATE INDEX conversations_agent ON conversations (agent, id);
CREATE INDEX conversations_channel ON conversations (channel, id);
CREATE INDEX conversations_group ON conversations (group_id);
CREATE INDEX conversations_created ON conversations (created_at);
CREATE UNIQUE INDEX conversations_requeued_once ON conversations (requeue_of);
CREATE TABLE records (
    kind text NOT NULL,
    key bytea NOT NULL,
    parent uuid,
    is_open boolean NOT NULL DEFAULT false,
    value bytea NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX records_parent ON records (kind, parent, key) WHERE parent IS NOT NULL;
CREATE INDEX records_open ON records (kind, key) WHERE is_open;
CREATE TABLE cluster_lease (
    id integer PRIMARY KEY CHECK (id = 1),
    term bigint NOT NULL,
    holder text,
    holder_url text,
    expires_at timestamptz NOT NULL
);
INSERT INTO cluster_lease (id, term, expires_at) VALUES (1, 0, '-infinity');
"#];

/// The schema version this build writes (the number of [`MIGRATIONS`]).
pub const PG_SCHEMA_VERSION: u64 = MIGRATIONS.len() as u64;

/// Serialises schema creation between nodes starting at the same time.
const MIGRATION_LOCK: i64 = 0x5357_4244_0001;

const KIND_EVENT: &str = "event";
const KIND_THREAD: &str = "thread";
const KIND_MESSAGE: &str = "message";
const KIND_SESSION: &str = "session";
const KIND_DRAFT: &str = "draft";
const KIND_AGENT: &str = "agent";
const KIND_OUTBOX: &str = "outbox";
const KIND_DIALOG: &str = "dialog";

/// How to reach the database.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    /// `postgres://user@host:port/db?sslmode=...` (a key/value string also works).
    pub url: String,
    /// Overrides any password in the URL.
    pub password: Option<String>,
    /// Work in this schema (created if missing) instead of the user's default; tests use one
    /// schema each.
    pub schema: Option<String>,
    /// Connections for reads beside the one that writes.
    pub readers: usize,
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("url", &redact(&self.url))
            .field("password", &self.password.as_ref().map(|_| "…"))
            .field("schema", &self.schema)
            .field("readers", &self.readers)
            .finish()
    }
}

impl PostgresOptions {
    pub fn new(url: impl Into<String>) -> PostgresOptions {
        PostgresOptions {
            url: url.into(),
            password: None,
            schema: None,
            readers: 4,
        }
    }

    /// From `[store]`, with the password from the environment when given there.
    pub fn from_config(
        cfg: &crate::config::StoreConfig,
        env_password: Option<String>,
    ) -> Result<PostgresOptions, StoreError> {
        let url = cfg
            .postgres_url
            .clone()
            .ok_or_else(|| StoreError::Connect("store.postgres_url is not set".into()))?;
        let mut options = PostgresOptions::new(url);
        options.password = env_password.filter(|p| !p.is_empty());
        Ok(options)
    }

    /// The driver configuration: the URL, the password, the schema, and timeouts so that a
    /// database that vanishes turns into errors instead of a hang.
    pub fn pg_config(&self) -> Result<tokio_postgres::Config, StoreError> {
        let mut cfg: tokio_postgres::Config = self.url.parse().map_err(|e| {
            StoreError::Connect(format!("store.postgres_url {}: {e}", redact(&self.url)))
        })?;
        if let Some(p) = &self.password {
            cfg.password(p.as_bytes());
        }
        if let Some(schema) = &self.schema {
            check_schema_name(schema)?;
            cfg.options(format!("-c search_path={schema}"));
        }
        cfg.application_name("switchboard")
            .connect_timeout(Duration::from_secs(5))
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .tcp_user_timeout(Duration::from_secs(10));
        Ok(cfg)
    }

    /// Opens one connection on the current tokio runtime (its connection task is spawned
    /// there). TLS, when the URL's `sslmode` asks for it, is rustls with the system's roots.
    pub async fn connect_async(&self) -> Result<Client, StoreError> {
        let cfg = self.pg_config()?;
        let tls = tls_connector()?;
        let (client, connection) = cfg
            .connect(tls)
            .await
            .map_err(|e| StoreError::Connect(format!("{}: {e}", redact(&self.url))))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "PostgreSQL connection ended");
            }
        });
        Ok(client)
    }
}

fn check_schema_name(schema: &str) -> Result<(), StoreError> {
    let ok = !schema.is_empty()
        && schema.len() < 64
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !schema.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(StoreError::Connect(format!(
            "schema name {schema:?}: use lowercase letters, digits and _"
        )))
    }
}

fn tls_connector() -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    for path in [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
    ] {
        if let Ok(iter) = CertificateDer::pem_file_iter(path) {
            for cert in iter.flatten() {
                let _ = roots.add(cert);
            }
            break;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Connect(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// The term under which this node commits (set while it holds the cluster lease).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub term: i64,
    pub node: String,
}

/// One connection with the write path's statements prepared.
struct Conn {
    client: Client,
    clear_drafts: Statement,
    delete: Statement,
    put: Statement,
    put_conversations: Statement,
    fence: Statement,
}

/// The PostgreSQL store.
pub struct PostgresStore {
    options: PostgresOptions,
    runtime: Option<tokio::runtime::Runtime>,
    writer: Mutex<Option<Conn>>,
    readers: Vec<Mutex<Option<Conn>>>,
    next_reader: AtomicUsize,
    fence: Mutex<Option<Fence>>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("options", &self.options)
            .finish()
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Waits on the calling thread for a future whose I/O is driven elsewhere (the store's
/// runtime drives the connections; statements only talk to them through channels).
fn block_on<F: Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let mut f = std::pin::pin!(f);
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl PostgresStore {
    /// Connects, creates or migrates the schema (a newer schema is refused), and opens the
    /// writer's connection. Readers connect on first use.
    pub fn connect(options: &PostgresOptions) -> Result<PostgresStore, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("switchboard-postgres")
            .enable_all()
            .build()?;
        let store = PostgresStore {
            options: options.clone(),
            runtime: Some(runtime),
            writer: Mutex::new(None),
            readers: (0..options.readers.max(1))
                .map(|_| Mutex::new(None))
                .collect(),
            next_reader: AtomicUsize::new(0),
            fence: Mutex::new(None),
        };
        store.migrate()?;
        let conn = store.open_conn()?;
        *lock(&store.writer) = Some(conn);
        Ok(store)
    }

    /// Commits from now on only while the lease row still carries this term and holder
    /// (`None`: no check, a single node without a cluster).
    pub fn set_fence(&self, fence: Option<Fence>) {
        *lock(&self.fence) = fence;
    }

    pub fn options(&self) -> &PostgresOptions {
        &self.options
    }

    fn spawn<T: Send + 'static>(
        &self,
        f: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let Some(rt) = &self.runtime else {
            return Err(StoreError::Connect("the store is closed".into()));
        };
        block_on(rt.spawn(f)).map_err(|e| StoreError::Connect(e.to_string()))
    }

    fn raw_client(&self) -> Result<Client, StoreError> {
        let options = self.options.clone();
        let handle = self
            .runtime
            .as_ref()
            .map(|r| r.handle().clone())
            .ok_or_else(|| StoreError::Connect("the store is closed".into()))?;
        self.spawn(async move {
            let cfg = options.pg_config()?;
            let tls = tls_connector()?;
            let (client, connection) = cfg
                .connect(tls)
                .await
                .map_err(|e| StoreError::Connect(format!("{}: {e}", redact(&options.url))))?;
            handle.spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %e, "PostgreSQL connection ended");
                }
            });
            Ok::<_, StoreError>(client)
        })?
    }

    fn open_conn(&self) -> Result<Conn, StoreError> {
        let client = self.raw_client()?;
        block_on(async move {
            let clear_drafts = client
                .prepare("DELETE FROM records WHERE kind = 'draft' AND parent = ANY($1::uuid[])")
                .await?;
            let delete = client
                .prepare(
                    "DELETE FROM records r USING unnest($1::text[], $2::bytea[]) AS d(kind, key) \
                     WHERE r.kind = d.kind AND r.key = d.key",
                )
                .await?;
            let put = client
                .prepare(
                    "INSERT INTO records (kind, key, parent, is_open, value) \
                     SELECT * FROM unnest($1::text[], $2::bytea[], $3::uuid[], $4::bool[], $5::bytea[]) \
                     ON CONFLICT (kind, key) DO UPDATE SET parent = EXCLUDED.parent, \
                     is_open = EXCLUDED.is_open, value = EXCLUDED.value",
                )
                .await?;
            let put_conversations = client
                .prepare(
                    "INSERT INTO conversations (id, status, queue, agent, channel, group_id, is_open, \
                     created_at, requeue_of, value) \
                     SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], \
                     $6::uuid[], $7::bool[], $8::int8[], $9::uuid[], $10::bytea[]) \
                     ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, queue = EXCLUDED.queue, \
                     agent = EXCLUDED.agent, channel = EXCLUDED.channel, group_id = EXCLUDED.group_id, \
                     is_open = EXCLUDED.is_open, created_at = EXCLUDED.created_at, \
                     requeue_of = EXCLUDED.requeue_of, value = EXCLUDED.value",
                )
                .await?;
            let fence = client
                .prepare("SELECT term, holder FROM cluster_lease WHERE id = 1 FOR SHARE")
                .await?;
            Ok(Conn {
                client,
                clear_drafts,
                delete,
                put,
                put_conversations,
                fence,
            })
        })
    }

    /// Creates the schema on an empty database, runs the missing migrations, refuses a newer
    /// schema. Nodes starting together take turns on an advisory lock.
    fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.raw_client()?;
        let schema = self.options.schema.clone();
        block_on(async move {
            if let Some(schema) = &schema {
                client
                    .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                    .await?;
            }
            let tx = client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS switchboard_meta (key text PRIMARY KEY, value bigint NOT NULL)",
            )
            .await?;
            let found: Option<i64> = tx
                .query_opt(
                    "SELECT value FROM switchboard_meta WHERE key = 'schema_version'",
                    &[],
                )
                .await?
                .map(|r| r.get(0));
            let found = found.unwrap_or(0).max(0) as u64;
            if found > PG_SCHEMA_VERSION {
                return Err(StoreError::NewerSchema {
                    found,
                    supported: PG_SCHEMA_VERSION,
                });
            }
            for sql in &MIGRATIONS[found as usize..] {
                tx.batch_execute(sql).await?;
            }
            if found < PG_SCHEMA_VERSION {
                tx.execute(
                    "INSERT INTO switchboard_meta (key, value) VALUES ('schema_version', $1) \
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    &[&(PG_SCHEMA_VERSION as i64)],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Runs `f` on the writer's connection, reconnecting first if it was lost.
    fn with_writer<T>(
        &self,
        f: impl FnOnce(&mut Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut guard = lock(&self.writer);
        self.use_conn(&mut guard, f)
    }

    /// Runs `f` on a reader's connection (a free one if any).
    fn with_reader<T>(
        &self,
        f: impl FnOnce(&mut Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let n = self.readers.len();
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            if let Ok(mut guard) = self.readers[(start + i) % n].try_lock() {
                return self.use_conn(&mut guard, f);
            }
        }
        let mut guard = lock(&self.readers[start % n]);
        self.use_conn(&mut guard, f)
    }

    fn use_conn<T>(
        &self,
        slot: &mut Option<Conn>,
        f: impl FnOnce(&mut Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if slot.as_ref().is_none_or(|c| c.client.is_closed()) {
            *slot = None;
            *slot = Some(self.open_conn()?);
        }
        match slot.as_mut() {
            Some(conn) => f(conn),
            None => Err(StoreError::Connect("no connection".into())),
        }
    }

    /// Writes one batch in ONE transaction; returns after `COMMIT`.
    pub fn apply(&self, writes: &[Write]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let batch = Batch::fold(writes)?;
        let fence = lock(&self.fence).clone();
        self.with_writer(|conn| block_on(batch.commit(conn, fence.as_ref())))
    }

    /// What boot needs back (open work only), read in one snapshot.
    pub fn load(&self) -> Result<Restored, StoreError> {
        self.with_writer(|conn| {
            block_on(async {
                let tx = conn
                    .client
                    .build_transaction()
                    .isolation_level(IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()
                    .await?;
                let mut out = Restored::default();
                let rows = tx
                    .query(
                        "SELECT id, value FROM conversations WHERE is_open ORDER BY id",
                        &[],
                    )
                    .await?;
                let mut ids = Vec::with_capacity(rows.len());
                let mut thread_ids = BTreeSet::new();
                for r in rows {
                    let id: Uuid = r.get(0);
                    let c: Conversation = decode("conversations", || id.to_string(), r.get(1))?;
                    thread_ids.extend(c.thread);
                    ids.push(id);
                    out.conversations.push(c);
                }
                let mut events = children(&tx, KIND_EVENT, &ids, "events").await?;
                out.events = ids
                    .iter()
                    .map(|id| (*id, events.remove(id).unwrap_or_default()))
                    .collect();
                for r in tx
                    .query(
                        "SELECT key FROM records WHERE kind = 'thread' AND is_open",
                        &[],
                    )
                    .await?
                {
                    thread_ids.insert(key_uuid(r.get(0), "threads")?);
                }
                let thread_ids: Vec<Uuid> = thread_ids.into_iter().collect();
                let keys: Vec<&[u8]> = thread_ids.iter().map(|t| t.as_bytes().as_slice()).collect();
                let mut threads = BTreeMap::new();
                for r in tx
                    .query(
                        "SELECT key, value FROM records WHERE kind = 'thread' AND key = ANY($1::bytea[])",
                        &[&keys],
                    )
                    .await?
                {
                    let id = key_uuid(r.get(0), "threads")?;
                    let t: Thread = decode("threads", || id.to_string(), r.get(1))?;
                    threads.insert(id, t);
                }
                let mut messages = children(&tx, KIND_MESSAGE, &thread_ids, "messages").await?;
                for id in &thread_ids {
                    let t = threads.remove(id).ok_or_else(|| StoreError::Dangling {
                        index: "open threads or conversations",
                        table: "threads",
                        key: id.to_string(),
                    })?;
                    out.threads
                        .push((t, messages.remove(id).unwrap_or_default()));
                }
                for (key, value) in all_of(&tx, KIND_SESSION).await? {
                    out.sessions
                        .push(decode("sessions", || hex::encode(&key), &value)?);
                }
                for r in tx
                    .query(
                        "SELECT key, value FROM records WHERE kind = 'draft' ORDER BY key",
                        &[],
                    )
                    .await?
                {
                    let key: &[u8] = r.get(0);
                    let (Some(s), Some(c)) = (
                        key.get(..16).and_then(|b| Uuid::from_slice(b).ok()),
                        key.get(16..).and_then(|b| Uuid::from_slice(b).ok()),
                    ) else {
                        return Err(bad_key("drafts", key));
                    };
                    let d: Metadata = decode("drafts", || format!("({s}, {c})"), r.get(1))?;
                    out.drafts.push((s, c, d));
                }
                for (key, value) in all_of(&tx, KIND_AGENT).await? {
                    out.agents.push(decode::<AgentRecord>(
                        "agents",
                        || String::from_utf8_lossy(&key).into_owned(),
                        &value,
                    )?);
                }
                for (key, value) in all_of(&tx, KIND_OUTBOX).await? {
                    out.outbox
                        .push(decode::<OutboxItem>("outbox", || hex::encode(&key), &value)?);
                }
                for (key, value) in all_of(&tx, KIND_DIALOG).await? {
                    out.dialogs
                        .push(decode::<Dialog>("dialogs", || hex::encode(&key), &value)?);
                }
                tx.commit().await?;
                Ok(out)
            })
        })
    }

    /// Conversation Details: the record and its event timeline (one statement, one snapshot).
    pub fn conversation(&self, id: Uuid) -> Result<Option<(Conversation, Vec<Event>)>, StoreError> {
        self.with_reader(|conn| {
            block_on(async {
                let row = conn
                    .client
                    .query_opt(
                        "SELECT c.value, ARRAY(SELECT r.value FROM records r WHERE r.kind = 'event' \
                         AND r.parent = c.id ORDER BY r.key) FROM conversations c WHERE c.id = $1",
                        &[&id],
                    )
                    .await?;
                let Some(row) = row else { return Ok(None) };
                let c: Conversation = decode("conversations", || id.to_string(), row.get(0))?;
                let values: Vec<&[u8]> = row.get(1);
                let events = values
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| decode("events", || format!("({id}, {i})"), v))
                    .collect::<Result<Vec<Event>, _>>()?;
                Ok(Some((c, events)))
            })
        })
    }

    /// Every conversation of a group, oldest first (by `created_at`, then id).
    pub fn group(&self, group_id: Uuid) -> Result<Vec<Conversation>, StoreError> {
        self.with_reader(|conn| block_on(group_members(&conn.client, group_id)))
    }

    /// Whether `agent` ever had a conversation of this group.
    pub fn agent_worked_in_group(&self, agent: &str, group_id: Uuid) -> Result<bool, StoreError> {
        self.with_reader(|conn| {
            block_on(async {
                let members = group_members(&conn.client, group_id).await?;
                let named = |a: &Option<String>| a.as_deref() == Some(agent);
                if members
                    .iter()
                    .any(|c| named(&c.agent) || named(&c.last_agent))
                {
                    return Ok(true);
                }
                let ids: Vec<Uuid> = members.iter().map(|c| c.id).collect();
                let events = children(&conn.client, KIND_EVENT, &ids, "events").await?;
                Ok(events.values().flatten().any(|e: &Event| named(&e.agent)))
            })
        })
    }

    /// Conversation search, newest first, served by the indexed columns.
    pub fn search(&self, q: &SearchQuery) -> Result<Vec<Conversation>, StoreError> {
        let limit = q.limit.min(SearchQuery::MAX_LIMIT);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let status = q.status.map(|s| s.as_str());
        let channel = q.channel.map(|c| c.as_str());
        let limit = limit as i64;
        let mut sql = String::from("SELECT id, value FROM conversations WHERE true");
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
        if let Some(s) = &status {
            params.push(s);
            sql.push_str(&format!(" AND status = ${}", params.len()));
            if q.status.is_some_and(|s| !s.is_closed()) {
                sql.push_str(" AND is_open");
            }
        }
        if let Some(v) = &q.queue {
            params.push(v);
            sql.push_str(&format!(" AND queue = ${}", params.len()));
        }
        if let Some(v) = &q.agent {
            params.push(v);
            sql.push_str(&format!(" AND agent = ${}", params.len()));
        }
        if let Some(v) = &channel {
            params.push(v);
            sql.push_str(&format!(" AND channel = ${}", params.len()));
        }
        // UUIDs compare bytewise, which is creation order for these ids.
        if let Some(v) = &q.before {
            params.push(v);
            sql.push_str(&format!(" AND id < ${}", params.len()));
        }
        params.push(&limit);
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", params.len()));
        self.with_reader(|conn| {
            block_on(async {
                let rows = conn.client.query(sql.as_str(), &params).await?;
                rows.iter()
                    .map(|r| {
                        let id: Uuid = r.get(0);
                        decode("conversations", || id.to_string(), r.get(1))
                    })
                    .collect()
            })
        })
    }

    /// The transcript of a thread, in order.
    pub fn messages(&self, thread: Uuid) -> Result<Vec<Message>, StoreError> {
        self.with_reader(|conn| {
            block_on(async {
                let mut m = children(&conn.client, KIND_MESSAGE, &[thread], "messages").await?;
                Ok(m.remove(&thread).unwrap_or_default())
            })
        })
    }

    /// Every conversation, oldest id first, one JSON object per line, from one snapshot.
    pub fn export_jsonl(&self, out: &mut dyn std::io::Write) -> Result<u64, StoreError> {
        self.with_reader(|conn| {
            block_on(async {
                let tx = conn
                    .client
                    .build_transaction()
                    .isolation_level(IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()
                    .await?;
                let mut n = 0;
                let mut after = Uuid::nil();
                loop {
                    let rows = tx
                        .query(
                            "SELECT id, value FROM conversations WHERE id > $1 ORDER BY id LIMIT 500",
                            &[&after],
                        )
                        .await?;
                    if rows.is_empty() {
                        break;
                    }
                    let mut page = Vec::with_capacity(rows.len());
                    for r in &rows {
                        let id: Uuid = r.get(0);
                        page.push(decode::<Conversation>(
                            "conversations",
                            || id.to_string(),
                            r.get(1),
                        )?);
                        after = id;
                    }
                    let ids: Vec<Uuid> = page.iter().map(|c| c.id).collect();
                    let mut events = children(&tx, KIND_EVENT, &ids, "events").await?;
                    for c in &page {
                        let timeline = events.remove(&c.id).unwrap_or_default();
                        let mut view = ConversationView::with_timeline(c, &timeline);
                        view.events = Some(timeline);
                        serde_json::to_writer(&mut *out, &view)?;
                        out.write_all(b"\n")?;
                        n += 1;
                    }
                }
                tx.commit().await?;
                out.flush()?;
                Ok(n)
            })
        })
    }

    /// Checks the store's invariants; `Err` lists what is wrong (one problem per line).
    pub fn check_invariants(&self) -> Result<(), String> {
        let problems = self
            .with_reader(|conn| block_on(invariant_problems(&conn.client)))
            .map_err(|e| e.to_string())?;
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    }

    /// Runs one SQL statement with no result on the writer's connection (tests break records
    /// on purpose with it).
    #[doc(hidden)]
    pub fn execute_for_tests(&self, sql: &str) -> Result<u64, StoreError> {
        self.with_writer(|conn| block_on(async { Ok(conn.client.execute(sql, &[]).await?) }))
    }
}

/// A record put in the generic table.
struct Put {
    parent: Option<Uuid>,
    open: bool,
    value: Vec<u8>,
}

/// A conversation put with its indexed columns.
struct ConversationRow {
    status: &'static str,
    queue: String,
    agent: Option<String>,
    channel: &'static str,
    group_id: Uuid,
    open: bool,
    created_at: i64,
    requeue_of: Option<Uuid>,
    value: Vec<u8>,
}

/// One batch folded to its final effect per key (later writes win; a drafts-clear drops the
/// session's earlier draft puts and deletes what is stored before the batch's puts land).
#[derive(Default)]
struct Batch {
    conversations: BTreeMap<Uuid, ConversationRow>,
    puts: BTreeMap<(&'static str, Vec<u8>), Put>,
    deletes: BTreeSet<(&'static str, Vec<u8>)>,
    clear_drafts: BTreeSet<Uuid>,
}

fn seq_key(id: Uuid, seq: u32) -> Vec<u8> {
    let mut k = id.as_bytes().to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn pair_key(a: Uuid, b: Uuid) -> Vec<u8> {
    let mut k = a.as_bytes().to_vec();
    k.extend_from_slice(b.as_bytes());
    k
}

impl Batch {
    fn fold(writes: &[Write]) -> Result<Batch, StoreError> {
        let mut b = Batch::default();
        for w in writes {
            match w {
                Write::Conversation(c) => {
                    let value = encode("conversations", || c.id.to_string(), c)?;
                    let requeue_of = match c.origin.kind {
                        OriginKind::Requeue => c.origin.previous,
                        _ => None,
                    };
                    b.conversations.insert(
                        c.id,
                        ConversationRow {
                            status: c.status.as_str(),
                            queue: c.queue.clone(),
                            agent: c.agent.clone(),
                            channel: c.channel().as_str(),
                            group_id: c.group_id,
                            open: !c.status.is_closed(),
                            created_at: c.created_at.0,
                            requeue_of,
                            value,
                        },
                    );
                }
                Write::Event {
                    conversation,
                    seq,
                    event,
                } => {
                    let value = encode("events", || format!("({conversation}, {seq})"), event)?;
                    b.put(
                        KIND_EVENT,
                        seq_key(*conversation, *seq),
                        Some(*conversation),
                        false,
                        value,
                    );
                }
                Write::Thread(t) => {
                    let value = encode("threads", || t.id.to_string(), t)?;
                    b.put(KIND_THREAD, t.id.as_bytes().to_vec(), None, t.open, value);
                }
                Write::Message {
                    thread,
                    seq,
                    message,
                } => {
                    let value = encode("messages", || format!("({thread}, {seq})"), message)?;
                    b.put(
                        KIND_MESSAGE,
                        seq_key(*thread, *seq),
                        Some(*thread),
                        false,
                        value,
                    );
                }
                Write::Session(s) => {
                    let value = encode("sessions", || s.id.to_string(), s)?;
                    b.put(KIND_SESSION, s.id.as_bytes().to_vec(), None, false, value);
                }
                Write::SessionEnded { id, .. } => {
                    b.delete(KIND_SESSION, id.as_bytes().to_vec());
                    b.clear(*id);
                }
                Write::Draft {
                    session,
                    conversation,
                    draft,
                } => {
                    let key = pair_key(*session, *conversation);
                    match draft {
                        Some(d) => {
                            let value =
                                encode("drafts", || format!("({session}, {conversation})"), d)?;
                            b.put(KIND_DRAFT, key, Some(*session), false, value);
                        }
                        None => b.delete(KIND_DRAFT, key),
                    }
                }
                Write::DraftsCleared { session } => b.clear(*session),
                Write::Agent(a) => {
                    let value = encode("agents", || a.id.clone(), a)?;
                    b.put(KIND_AGENT, a.id.as_bytes().to_vec(), None, false, value);
                }
                Write::Outbox(item) => {
                    let value = encode("outbox", || item.message_id.to_string(), item)?;
                    b.put(
                        KIND_OUTBOX,
                        item.message_id.as_bytes().to_vec(),
                        None,
                        false,
                        value,
                    );
                }
                Write::OutboxDone { message } => {
                    b.delete(KIND_OUTBOX, message.as_bytes().to_vec());
                }
                Write::Dialog(d) => {
                    let value = encode("dialogs", || d.conversation.to_string(), d)?;
                    b.put(
                        KIND_DIALOG,
                        d.conversation.as_bytes().to_vec(),
                        None,
                        false,
                        value,
                    );
                }
                Write::DialogEnded { conversation } => {
                    b.delete(KIND_DIALOG, conversation.as_bytes().to_vec());
                }
            }
        }
        Ok(b)
    }

    fn put(
        &mut self,
        kind: &'static str,
        key: Vec<u8>,
        parent: Option<Uuid>,
        open: bool,
        value: Vec<u8>,
    ) {
        self.deletes.remove(&(kind, key.clone()));
        self.puts.insert(
            (kind, key),
            Put {
                parent,
                open,
                value,
            },
        );
    }

    fn delete(&mut self, kind: &'static str, key: Vec<u8>) {
        self.puts.remove(&(kind, key.clone()));
        self.deletes.insert((kind, key));
    }

    fn clear(&mut self, session: Uuid) {
        self.puts
            .retain(|(kind, _), p| !(*kind == KIND_DRAFT && p.parent == Some(session)));
        self.deletes
            .retain(|(kind, key)| !(*kind == KIND_DRAFT && key.starts_with(session.as_bytes())));
        self.clear_drafts.insert(session);
    }

    /// One transaction: the fence check, the clears, deletes and puts pipelined, then COMMIT
    /// (or ROLLBACK when the fence no longer holds).
    async fn commit(self, conn: &mut Conn, fence: Option<&Fence>) -> Result<(), StoreError> {
        let clears: Vec<Uuid> = self.clear_drafts.into_iter().collect();
        let (del_kinds, del_keys): (Vec<&str>, Vec<Vec<u8>>) = self.deletes.into_iter().unzip();
        let mut kinds = Vec::with_capacity(self.puts.len());
        let mut keys = Vec::with_capacity(self.puts.len());
        let mut parents = Vec::with_capacity(self.puts.len());
        let mut opens = Vec::with_capacity(self.puts.len());
        let mut values = Vec::with_capacity(self.puts.len());
        for ((kind, key), p) in self.puts {
            kinds.push(kind);
            keys.push(key);
            parents.push(p.parent);
            opens.push(p.open);
            values.push(p.value);
        }
        let n = self.conversations.len();
        let mut c_ids = Vec::with_capacity(n);
        let mut c_status = Vec::with_capacity(n);
        let mut c_queue = Vec::with_capacity(n);
        let mut c_agent = Vec::with_capacity(n);
        let mut c_channel = Vec::with_capacity(n);
        let mut c_group = Vec::with_capacity(n);
        let mut c_open = Vec::with_capacity(n);
        let mut c_created = Vec::with_capacity(n);
        let mut c_requeue = Vec::with_capacity(n);
        let mut c_value = Vec::with_capacity(n);
        for (id, c) in self.conversations {
            c_ids.push(id);
            c_status.push(c.status);
            c_queue.push(c.queue);
            c_agent.push(c.agent);
            c_channel.push(c.channel);
            c_group.push(c.group_id);
            c_open.push(c.open);
            c_created.push(c.created_at);
            c_requeue.push(c.requeue_of);
            c_value.push(c.value);
        }
        let Conn {
            client,
            clear_drafts,
            delete,
            put,
            put_conversations,
            fence: fence_stmt,
        } = conn;
        let tx = client.transaction().await?;
        let check = async {
            match fence {
                Some(_) => tx.query_opt(&*fence_stmt, &[]).await,
                None => Ok(None),
            }
        };
        let clear = async {
            if clears.is_empty() {
                Ok(0)
            } else {
                tx.execute(&*clear_drafts, &[&clears]).await
            }
        };
        let del = async {
            if del_kinds.is_empty() {
                Ok(0)
            } else {
                tx.execute(&*delete, &[&del_kinds, &del_keys]).await
            }
        };
        let ins = async {
            if kinds.is_empty() {
                Ok(0)
            } else {
                tx.execute(&*put, &[&kinds, &keys, &parents, &opens, &values])
                    .await
            }
        };
        let convs = async {
            if c_ids.is_empty() {
                Ok(0)
            } else {
                tx.execute(
                    &*put_conversations,
                    &[
                        &c_ids, &c_status, &c_queue, &c_agent, &c_channel, &c_group, &c_open,
                        &c_created, &c_requeue, &c_value,
                    ],
                )
                .await
            }
        };
        // Sent as one pipeline; the server runs them in this order.
        let (check, clear, del, ins, convs) =
            futures_util::future::join5(check, clear, del, ins, convs).await;
        if let (Some(f), Ok(row)) = (fence, &check) {
            let current = row
                .as_ref()
                .map(|r| (r.get::<_, i64>(0), r.get::<_, Option<String>>(1)));
            let holds = current.as_ref().is_some_and(|(term, holder)| {
                *term == f.term && holder.as_deref() == Some(f.node.as_str())
            });
            if !holds {
                let _ = tx.rollback().await;
                return Err(StoreError::Fenced {
                    ours: f.term,
                    current: current.map(|(t, _)| t),
                });
            }
        }
        check?;
        clear?;
        del?;
        ins?;
        convs?;
        tx.commit().await?;
        Ok(())
    }
}

fn key_uuid(key: &[u8], table: &'static str) -> Result<Uuid, StoreError> {
    Uuid::from_slice(key).map_err(|_| bad_key(table, key))
}

fn bad_key(table: &'static str, key: &[u8]) -> StoreError {
    StoreError::Dangling {
        index: "records key",
        table,
        key: hex::encode(key),
    }
}

/// The records of `kind` under each parent, in key (sequence) order.
async fn children<T: serde::de::DeserializeOwned>(
    client: &impl tokio_postgres::GenericClient,
    kind: &'static str,
    parents: &[Uuid],
    table: &'static str,
) -> Result<BTreeMap<Uuid, Vec<T>>, StoreError> {
    let mut out: BTreeMap<Uuid, Vec<T>> = BTreeMap::new();
    if parents.is_empty() {
        return Ok(out);
    }
    let rows = client
        .query(
            "SELECT parent, key, value FROM records WHERE kind = $1 AND parent = ANY($2::uuid[]) \
             ORDER BY key",
            &[&kind, &parents],
        )
        .await?;
    for r in rows {
        let parent: Uuid = r.get(0);
        let key: &[u8] = r.get(1);
        let v = decode(table, || hex::encode(key), r.get(2))?;
        out.entry(parent).or_default().push(v);
    }
    Ok(out)
}

async fn all_of(
    client: &impl tokio_postgres::GenericClient,
    kind: &'static str,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
    Ok(client
        .query(
            "SELECT key, value FROM records WHERE kind = $1 ORDER BY key",
            &[&kind],
        )
        .await?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

async fn group_members(client: &Client, group_id: Uuid) -> Result<Vec<Conversation>, StoreError> {
    let rows = client
        .query(
            "SELECT id, value FROM conversations WHERE group_id = $1",
            &[&group_id],
        )
        .await?;
    let mut out = rows
        .iter()
        .map(|r| {
            let id: Uuid = r.get(0);
            decode::<Conversation>("conversations", || id.to_string(), r.get(1))
        })
        .collect::<Result<Vec<_>, _>>()?;
    out.sort_by_key(|c| (c.created_at, c.id));
    Ok(out)
}

/// The same checks as redb's where they apply: every record decodes under its key, the
/// indexed columns agree with the record, assigned work has an agent, timelines and
/// transcripts are numbered without gaps, drafts belong to stored sessions.
async fn invariant_problems(client: &Client) -> Result<Vec<String>, StoreError> {
    let mut p = Vec::new();
    let mut convs = BTreeMap::new();
    for r in client
        .query(
            "SELECT id, status, queue, agent, channel, group_id, is_open, created_at, requeue_of, value \
             FROM conversations",
            &[],
        )
        .await?
    {
        let id: Uuid = r.get(0);
        let c: Conversation = match crate::store::codec::decode(r.get(9)) {
            Ok(c) => c,
            Err(e) => {
                p.push(format!("conversations: {id}: {e}"));
                continue;
            }
        };
        let requeue_of = match c.origin.kind {
            OriginKind::Requeue => c.origin.previous,
            _ => None,
        };
        let columns_agree = c.id == id
            && r.get::<_, &str>(1) == c.status.as_str()
            && r.get::<_, &str>(2) == c.queue
            && r.get::<_, Option<String>>(3) == c.agent
            && r.get::<_, &str>(4) == c.channel().as_str()
            && r.get::<_, Uuid>(5) == c.group_id
            && r.get::<_, bool>(6) != c.status.is_closed()
            && r.get::<_, i64>(7) == c.created_at.0
            && r.get::<_, Option<Uuid>>(8) == requeue_of;
        if !columns_agree {
            p.push(format!("conversation {id}: indexed columns differ from the record"));
        }
        if !c.status.is_closed() && c.status.is_assigned() != c.agent.is_some() {
            p.push(format!(
                "conversation {}: status {} with agent {:?}",
                c.id,
                c.status.as_str(),
                c.agent
            ));
        }
        convs.insert(id, c);
    }
    let mut sessions = BTreeSet::new();
    let mut seqs: BTreeMap<(String, Uuid), Vec<u32>> = BTreeMap::new();
    for r in client
        .query(
            "SELECT kind, key, parent, is_open, value FROM records ORDER BY kind, key",
            &[],
        )
        .await?
    {
        let kind: String = r.get(0);
        let key: &[u8] = r.get(1);
        let parent: Option<Uuid> = r.get(2);
        let value: &[u8] = r.get(4);
        let shown = hex::encode(key);
        let problem = match kind.as_str() {
            KIND_EVENT | KIND_MESSAGE => {
                let ok = key.len() == 20 && parent.is_some_and(|pa| key[..16] == *pa.as_bytes());
                if let (true, Some(pa)) = (ok, parent) {
                    let seq = u32::from_be_bytes([key[16], key[17], key[18], key[19]]);
                    seqs.entry((kind.clone(), pa)).or_default().push(seq);
                }
                let decoded = if kind == KIND_EVENT {
                    crate::store::codec::decode::<Event>(value).err()
                } else {
                    crate::store::codec::decode::<Message>(value).err()
                };
                (!ok)
                    .then(|| "key does not match its parent".to_string())
                    .or(decoded.map(|e| e.to_string()))
            }
            KIND_THREAD => match crate::store::codec::decode::<Thread>(value) {
                Ok(t) if key == t.id.as_bytes() && r.get::<_, bool>(3) == t.open => None,
                Ok(t) => Some(format!("holds thread {} (open flag {})", t.id, t.open)),
                Err(e) => Some(e.to_string()),
            },
            KIND_SESSION => match crate::store::codec::decode::<Session>(value) {
                Ok(s) if key == s.id.as_bytes() => {
                    sessions.insert(s.id);
                    None
                }
                Ok(s) => Some(format!("holds session {}", s.id)),
                Err(e) => Some(e.to_string()),
            },
            KIND_DRAFT => crate::store::codec::decode::<Metadata>(value)
                .err()
                .map(|e| e.to_string()),
            KIND_AGENT => match crate::store::codec::decode::<AgentRecord>(value) {
                Ok(a) if key == a.id.as_bytes() => None,
                Ok(a) => Some(format!("holds agent {}", a.id)),
                Err(e) => Some(e.to_string()),
            },
            KIND_DIALOG => match crate::store::codec::decode::<Dialog>(value) {
                Ok(d) if key == d.conversation.as_bytes() => None,
                Ok(d) => Some(format!("holds dialog {}", d.conversation)),
                Err(e) => Some(e.to_string()),
            },
            KIND_OUTBOX => match crate::store::codec::decode::<OutboxItem>(value) {
                Ok(o) if key == o.message_id.as_bytes() => None,
                Ok(o) => Some(format!("holds outbox item {}", o.message_id)),
                Err(e) => Some(e.to_string()),
            },
            _ => None,
        };
        if let Some(problem) = problem {
            p.push(format!("{kind} {shown}: {problem}"));
        }
        if kind == KIND_DRAFT && parent.is_none() {
            p.push(format!("draft {shown}: no session"));
        }
    }
    for r in client
        .query("SELECT key, parent FROM records WHERE kind = 'draft'", &[])
        .await?
    {
        let parent: Option<Uuid> = r.get(1);
        if parent.is_some_and(|s| !sessions.contains(&s)) {
            p.push(format!(
                "draft {}: its session is not stored",
                hex::encode(r.get::<_, &[u8]>(0))
            ));
        }
    }
    for ((kind, parent), seqs) in seqs {
        if seqs.iter().enumerate().any(|(i, s)| *s as usize != i) {
            p.push(format!("{kind}s of {parent}: numbered with a gap"));
        }
    }
    let _ = convs;
    Ok(p)
}
