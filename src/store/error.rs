//! Store layer: why a store operation failed, and the record encoding and decoding every
//! backend uses, which name the table and key of a record that does not fit.

use super::codec::{self, CodecError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::PathBuf;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("database error: {0}")]
    Db(#[from] ::redb::Error),
    #[error("PostgreSQL error: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(String),
    #[error(
        "this node no longer holds the cluster lease (its term {ours}, the lease's {current:?}): nothing was committed"
    )]
    Fenced { ours: i64, current: Option<i64> },
    #[error("{0} is not supported by the PostgreSQL store ({1})")]
    Unsupported(&'static str, &'static str),
    #[error(
        "the store was written by a newer switchboard (schema version {found}; this build supports up to {supported})"
    )]
    NewerSchema { found: u64, supported: u64 },
    #[error("the store has schema version {found}, which this build cannot migrate to {supported}")]
    OlderSchema { found: u64, supported: u64 },
    #[error("corrupt record in table {table} at key {key}: {source}")]
    Corrupt {
        table: &'static str,
        key: String,
        #[source]
        source: CodecError,
    },
    #[error("cannot encode a record for table {table} at key {key}: {source}")]
    Encode {
        table: &'static str,
        key: String,
        #[source]
        source: CodecError,
    },
    #[error("index {index} names key {key}, which is missing from table {table}")]
    Dangling {
        index: &'static str,
        table: &'static str,
        key: String,
    },
    #[error(
        "the store file {} is empty (0 bytes), which is not a store: a failed copy or restore? Restore it from a backup (switchboard backup / GET /api/v1/backup), or delete the file to start with an empty store",
        path.display()
    )]
    EmptyFile { path: PathBuf },
    #[error(
        "the store file {} is damaged ({detail}); the server will not start on it. Restore the file from a backup (switchboard backup / GET /api/v1/backup) and start again; keep the damaged file aside for inspection",
        path.display()
    )]
    Damaged { path: PathBuf, detail: String },
    #[error("backup destination {0} already exists")]
    BackupExists(PathBuf),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot write JSON: {0}")]
    Json(#[from] serde_json::Error),
}

macro_rules! redb_error {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(::redb::Error::from(e))
            }
        }
    )*};
}
redb_error!(
    ::redb::DatabaseError,
    ::redb::TransactionError,
    ::redb::TableError,
    ::redb::StorageError,
    ::redb::CommitError,
    ::redb::SetDurabilityError
);

pub(super) fn encode<T: Serialize>(
    table: &'static str,
    key: impl FnOnce() -> String,
    value: &T,
) -> Result<Vec<u8>, StoreError> {
    codec::encode(value).map_err(|source| StoreError::Encode {
        table,
        key: key(),
        source,
    })
}

pub(super) fn decode<T: DeserializeOwned>(
    table: &'static str,
    key: impl FnOnce() -> String,
    bytes: &[u8],
) -> Result<T, StoreError> {
    codec::decode(bytes).map_err(|source| StoreError::Corrupt {
        table,
        key: key(),
        source,
    })
}
