//! Store layer (redb backend): brings a file written by an older schema version up to
//! [`SCHEMA_VERSION`] when it is opened, inside the open's write transaction, so a file is
//! either wholly migrated (and marked with the new version) or left as it was.
//!
//! - 1 → 2: builds the search tables (`search_index`, `search_counts`, `search_mix`) from
//!   every conversation record, in one pass over the `conversations` table (see
//!   [`super::search_index::build`]). A record that does not decode stops the migration with
//!   [`StoreError::Corrupt`] naming it, and the file stays at version 1.
//!
//! Anything older than version 1 never existed and is refused with
//! [`StoreError::OlderSchema`].

use super::error::StoreError;
use super::search_index;
use super::tables::{META, SCHEMA_VERSION, SCHEMA_VERSION_KEY};
use redb::WriteTransaction;

/// Migrates from schema version `found` (older than [`SCHEMA_VERSION`]) and records the new
/// version; the caller commits.
pub(super) fn migrate(txn: &WriteTransaction, found: u64) -> Result<(), StoreError> {
    if found != 1 {
        return Err(StoreError::OlderSchema {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    let n = search_index::build(txn)?;
    tracing::info!(
        conversations = n,
        "store file migrated from schema version 1 to 2: search index built"
    );
    txn.open_table(META)?
        .insert(SCHEMA_VERSION_KEY, SCHEMA_VERSION)?;
    Ok(())
}
