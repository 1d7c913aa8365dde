//! Store layer (redb backend): the covering index behind the conversation search, how it is
//! kept in step with the records, and how a search is answered from it.
//!
//! [`SEARCH_INDEX`] holds, for every closed conversation (`handled` or `abandoned`), one
//! entry per filter field (status, queue, channel, and agent when it has one), keyed (field
//! code, value, id). A conversation is indexed once, when it closes: an open one changes
//! status and agent many times (offered, declined, accepted, wrapped up) and would move its
//! entries at each change, which a storm's tens of thousands of writes could not afford.
//! The few open conversations are found through the open index at search time (see
//! `RedbStore::search`) and merged with the closed ones, newest first. Each entry's
//! value carries the conversation's status, channel, queue and agent, so a combined filter
//! is decided from the entry without decoding the record ("covering"). [`SEARCH_COUNTS`]
//! counts the entries under each (field, value) and [`SEARCH_MIX`] counts the closed
//! conversations per (queue, status, channel).
//!
//! A search of the closed conversations with at least one filter:
//! 1. looks up the count of each filter's value; any 0 answers empty at once (an unknown
//!    queue or agent is simply a value with no entries);
//! 2. when two or more of status, queue and channel are given, sums the matching
//!    [`SEARCH_MIX`] rows: the exact number of conversations matching those filters (0
//!    answers empty at once, e.g. a voice queue with `channel=email`);
//! 3. walks the entries of the filter with the smallest count, newest first from the
//!    cursor, keeps the entries whose carried fields match every filter, and decodes only
//!    those records; it stops at the limit, or once it has found as many as step 2 and
//!    the counts allow.
//!
//! So the work is bounded by the smallest filter's entry count (cheap key/value reads, no
//! record decode), plus one record decode per result. The remaining slow case is a rare
//! combination involving an agent (or two of status/queue/channel plus an agent) whose few
//! matches are old: it walks the smallest of the filters' entries, never the records.
//!
//! Everything here runs inside the caller's transaction: [`SearchTables::put`] inside the
//! batch's write transaction (so the index changes with the record), [`search`] inside one
//! read transaction.

use super::error::{StoreError, decode};
use super::query::SearchQuery;
use super::redb::uuid;
use super::tables::{SEARCH_COUNTS, SEARCH_INDEX, SEARCH_MIX, SearchCover, SearchKey};
use crate::config::Channel;
use crate::core::model::{Conversation, Status};
use redb::{ReadTransaction, ReadableTable, Table, WriteTransaction};
use std::collections::{BTreeMap, BTreeSet};

/// Field code of the status entries (value: the status' wire name).
pub(super) const FIELD_STATUS: u8 = 0;
/// Field code of the queue entries (value: the queue id).
pub(super) const FIELD_QUEUE: u8 = 1;
/// Field code of the agent entries (value: the agent id; only conversations with an agent).
pub(super) const FIELD_AGENT: u8 = 2;
/// Field code of the channel entries (value: the channel's wire name).
pub(super) const FIELD_CHANNEL: u8 = 3;

/// The stored code of a status in an entry's value. Stored: never renumber.
pub(super) fn status_code(s: Status) -> u8 {
    match s {
        Status::InQueue => 0,
        Status::Offered => 1,
        Status::InProcess => 2,
        Status::WrapUp => 3,
        Status::Handled => 4,
        Status::Abandoned => 5,
    }
}

/// The stored code of a channel in an entry's value. Stored: never renumber.
pub(super) fn channel_code(c: Channel) -> u8 {
    match c {
        Channel::Voice => 0,
        Channel::Chat => 1,
        Channel::Email => 2,
    }
}

/// The four fields the search filters on, as one conversation holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Fields {
    status: Status,
    channel: Channel,
    queue: String,
    agent: Option<String>,
}

impl Fields {
    /// The fields a conversation is indexed under: `None` while it is open.
    pub(super) fn indexed(c: &Conversation) -> Option<Fields> {
        c.status.is_closed().then(|| Fields {
            status: c.status,
            channel: c.channel(),
            queue: c.queue.clone(),
            agent: c.agent.clone(),
        })
    }

    /// The (field, value) of each index entry this conversation has.
    pub(super) fn keys(&self) -> impl Iterator<Item = (u8, &str)> {
        [
            Some((FIELD_STATUS, self.status.as_str())),
            Some((FIELD_QUEUE, self.queue.as_str())),
            self.agent.as_deref().map(|a| (FIELD_AGENT, a)),
            Some((FIELD_CHANNEL, self.channel.as_str())),
        ]
        .into_iter()
        .flatten()
    }

    /// The value every one of its entries carries.
    fn cover(&self) -> (u8, u8, &str, Option<&str>) {
        (
            status_code(self.status),
            channel_code(self.channel),
            self.queue.as_str(),
            self.agent.as_deref(),
        )
    }

    /// Its [`SEARCH_MIX`] key.
    fn mix(&self) -> (&str, u8, u8) {
        (
            self.queue.as_str(),
            status_code(self.status),
            channel_code(self.channel),
        )
    }
}

/// The search tables of one write transaction.
pub(super) struct SearchTables<'txn> {
    index: Table<'txn, SearchKey, SearchCover>,
    counts: Table<'txn, (u8, &'static str), u64>,
    mix: Table<'txn, (&'static str, u8, u8), u64>,
}

impl<'txn> SearchTables<'txn> {
    pub(super) fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        Ok(SearchTables {
            index: txn.open_table(SEARCH_INDEX)?,
            counts: txn.open_table(SEARCH_COUNTS)?,
            mix: txn.open_table(SEARCH_MIX)?,
        })
    }

    /// Moves conversation `key`'s entries from its previous indexed fields to its new ones
    /// (`None`: not indexed, i.e. new or open). Nothing is written when they are the same,
    /// which is every write of an open conversation.
    pub(super) fn put(
        &mut self,
        key: u128,
        old: Option<&Fields>,
        new: Option<&Fields>,
    ) -> Result<(), StoreError> {
        if old == new {
            return Ok(());
        }
        let new_keys: Vec<(u8, &str)> = new.map(|n| n.keys().collect()).unwrap_or_default();
        let old_keys: Vec<(u8, &str)> = old.map(|o| o.keys().collect()).unwrap_or_default();
        let (old_mix, new_mix) = (old.map(Fields::mix), new.map(Fields::mix));
        for &(field, value) in &old_keys {
            if !new_keys.contains(&(field, value)) {
                self.index.remove((field, value, key))?;
                add(&mut self.counts, (field, value), -1)?;
            }
        }
        if let Some(m) = old_mix.filter(|m| Some(*m) != new_mix) {
            add(&mut self.mix, m, -1)?;
        }
        if let Some(new) = new {
            for &(field, value) in &new_keys {
                self.index.insert((field, value, key), new.cover())?;
                if !old_keys.contains(&(field, value)) {
                    add(&mut self.counts, (field, value), 1)?;
                }
            }
        }
        if let Some(m) = new_mix.filter(|m| Some(*m) != old_mix) {
            add(&mut self.mix, m, 1)?;
        }
        Ok(())
    }

    /// Removes every entry of conversation `key` when its previous record cannot be read
    /// (the slow way: a scan of the whole index), with their counts.
    pub(super) fn forget(&mut self, key: u128) -> Result<(), StoreError> {
        let mut found: Vec<(u8, String)> = Vec::new();
        let mut mix: Option<(String, u8, u8)> = None;
        for entry in self.index.iter()? {
            let (k, v) = entry?;
            let (field, value, id) = k.value();
            if id == key {
                let (status, channel, queue, _) = v.value();
                found.push((field, value.to_string()));
                mix = Some((queue.to_string(), status, channel));
            }
        }
        for (field, value) in &found {
            self.index.remove((*field, value.as_str(), key))?;
            add(&mut self.counts, (*field, value.as_str()), -1)?;
        }
        if let Some((queue, status, channel)) = &mix {
            add(&mut self.mix, (queue.as_str(), *status, *channel), -1)?;
        }
        Ok(())
    }
}

/// Adds `by` (±1) to a count row; a row reaching 0 is removed, and a missing row is never
/// taken below 0 (the invariant check reports such a disagreement).
fn add<K: redb::Key + 'static>(
    table: &mut Table<'_, K, u64>,
    key: K::SelfType<'_>,
    by: i64,
) -> Result<(), StoreError>
where
    for<'a> K::SelfType<'a>: Clone,
{
    let now = table.get(key.clone())?.map_or(0, |g| g.value());
    let next = now.saturating_add_signed(by);
    if next == 0 {
        table.remove(key)?;
    } else {
        table.insert(key, next)?;
    }
    Ok(())
}

/// Answers a search that has at least one filter from the index (`None`: no filter, the
/// caller walks the records themselves, every one matching). `below` is the exclusive upper
/// end of the ids (the cursor); `limit` is at least 1.
pub(super) fn search(
    txn: &ReadTransaction,
    conversations: &impl ReadableTable<u128, &'static [u8]>,
    q: &SearchQuery,
    below: u128,
    limit: usize,
) -> Result<Option<Vec<Conversation>>, StoreError> {
    let filters: Vec<(u8, &str)> = [
        q.status.map(|s| (FIELD_STATUS, s.as_str())),
        q.queue.as_deref().map(|v| (FIELD_QUEUE, v)),
        q.agent.as_deref().map(|v| (FIELD_AGENT, v)),
        q.channel.map(|c| (FIELD_CHANNEL, c.as_str())),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut out = Vec::new();
    let counts = txn.open_table(SEARCH_COUNTS)?;
    let mut driver: Option<(u64, u8, &str)> = None;
    for &(field, value) in &filters {
        let n = counts.get((field, value))?.map_or(0, |g| g.value());
        if n == 0 {
            return Ok(Some(out));
        }
        if driver.is_none_or(|(least, _, _)| n < least) {
            driver = Some((n, field, value));
        }
    }
    let Some((mut most, field, value)) = driver else {
        return Ok(None);
    };
    let small = [q.status.is_some(), q.queue.is_some(), q.channel.is_some()];
    if small.iter().filter(|given| **given).count() >= 2 {
        let exact = mix_total(&txn.open_table(SEARCH_MIX)?, q)?;
        if exact == 0 {
            return Ok(Some(out));
        }
        most = most.min(exact);
    }
    let want_status = q.status.map(status_code);
    let want_channel = q.channel.map(channel_code);
    let index = txn.open_table(SEARCH_INDEX)?;
    let mut matched = 0u64;
    for entry in index
        .range((field, value, 0u128)..(field, value, below))?
        .rev()
    {
        let (k, v) = entry?;
        let (status, channel, queue, agent) = v.value();
        let hit = want_status.is_none_or(|s| s == status)
            && want_channel.is_none_or(|c| c == channel)
            && q.queue.as_deref().is_none_or(|want| want == queue)
            && q.agent.as_deref().is_none_or(|want| Some(want) == agent);
        if !hit {
            continue;
        }
        matched += 1;
        let key = k.value().2;
        let Some(bytes) = conversations.get(key)? else {
            return Err(StoreError::Dangling {
                index: "search_index",
                table: "conversations",
                key: uuid(key),
            });
        };
        let c: Conversation = decode("conversations", || uuid(key), bytes.value())?;
        // The record decides: an entry that disagrees with it is reported by the
        // invariant check, never returned.
        if q.matches(&c) {
            out.push(c);
            if out.len() == limit {
                break;
            }
        }
        if matched == most {
            break;
        }
    }
    Ok(Some(out))
}

/// How many conversations match the query's status, queue and channel filters (the given
/// ones), from [`SEARCH_MIX`]: the rows of the queue, or every row without a queue filter
/// (at most 18 per queue ever used).
fn mix_total(
    mix: &impl ReadableTable<(&'static str, u8, u8), u64>,
    q: &SearchQuery,
) -> Result<u64, StoreError> {
    let want_status = q.status.map(status_code);
    let want_channel = q.channel.map(channel_code);
    let rows = match q.queue.as_deref() {
        Some(queue) => mix.range((queue, 0u8, 0u8)..=(queue, u8::MAX, u8::MAX))?,
        None => mix.range::<(&str, u8, u8)>(..)?,
    };
    let mut total = 0u64;
    for row in rows {
        let (k, v) = row?;
        let (_, status, channel) = k.value();
        if want_status.is_none_or(|s| s == status) && want_channel.is_none_or(|c| c == channel) {
            total = total.saturating_add(v.value());
        }
    }
    Ok(total)
}

/// Builds the search tables from every conversation record, in the caller's write
/// transaction (the migration of a file written before they existed). The counts are
/// tallied in memory and written once at the end. A record that does not decode is a
/// [`StoreError::Corrupt`] and nothing is committed.
pub(super) fn build(txn: &WriteTransaction) -> Result<u64, StoreError> {
    let conversations = txn.open_table(super::tables::CONVERSATIONS)?;
    let mut index = txn.open_table(SEARCH_INDEX)?;
    let mut counts: BTreeMap<(u8, String), u64> = BTreeMap::new();
    let mut mix: BTreeMap<(String, u8, u8), u64> = BTreeMap::new();
    let mut n = 0u64;
    for entry in conversations.iter()? {
        let (k, v) = entry?;
        let key = k.value();
        let c: Conversation = decode("conversations", || uuid(key), v.value())?;
        let Some(fields) = Fields::indexed(&c) else {
            continue;
        };
        for (field, value) in fields.keys() {
            index.insert((field, value, key), fields.cover())?;
            *counts.entry((field, value.to_string())).or_default() += 1;
        }
        let (queue, status, channel) = fields.mix();
        *mix.entry((queue.to_string(), status, channel)).or_default() += 1;
        n += 1;
    }
    let mut count_table = txn.open_table(SEARCH_COUNTS)?;
    for ((field, value), n) in &counts {
        count_table.insert((*field, value.as_str()), *n)?;
    }
    let mut mix_table = txn.open_table(SEARCH_MIX)?;
    for ((queue, status, channel), n) in &mix {
        mix_table.insert((queue.as_str(), *status, *channel), *n)?;
    }
    Ok(n)
}

/// Every disagreement between the search tables and the records `convs` (id → record),
/// one line each, appended to `p`.
pub(super) fn problems(
    txn: &ReadTransaction,
    convs: &BTreeMap<u128, Conversation>,
    p: &mut Vec<String>,
) -> Result<(), StoreError> {
    type Entry = (u8, String, u128, (u8, u8, String, Option<String>));
    let mut want: BTreeSet<Entry> = BTreeSet::new();
    let mut want_counts: BTreeMap<(u8, String), u64> = BTreeMap::new();
    let mut want_mix: BTreeMap<(String, u8, u8), u64> = BTreeMap::new();
    for (key, fields) in convs
        .iter()
        .filter_map(|(key, c)| Fields::indexed(c).map(|f| (key, f)))
    {
        let (s, ch, q, a) = fields.cover();
        for (field, value) in fields.keys() {
            want.insert((
                field,
                value.to_string(),
                *key,
                (s, ch, q.to_string(), a.map(String::from)),
            ));
            *want_counts.entry((field, value.to_string())).or_default() += 1;
        }
        let (q, s, ch) = fields.mix();
        *want_mix.entry((q.to_string(), s, ch)).or_default() += 1;
    }
    let mut have = BTreeSet::new();
    for entry in txn.open_table(SEARCH_INDEX)?.iter()? {
        let (k, v) = entry?;
        let (field, value, id) = k.value();
        let (s, ch, q, a) = v.value();
        have.insert((
            field,
            value.to_string(),
            id,
            (s, ch, q.to_string(), a.map(String::from)),
        ));
    }
    for (field, value, id, _) in want.difference(&have) {
        p.push(format!(
            "search_index lacks or misstates the entry ({field}, {value}) of conversation {}",
            uuid(*id)
        ));
    }
    for (field, value, id, _) in have.difference(&want) {
        p.push(format!(
            "search_index has ({field}, {value}, {}), which does not match that conversation",
            uuid(*id)
        ));
    }
    let mut have_counts = BTreeMap::new();
    for entry in txn.open_table(SEARCH_COUNTS)?.iter()? {
        let (k, v) = entry?;
        let (field, value) = k.value();
        have_counts.insert((field, value.to_string()), v.value());
    }
    differences("search_counts", &have_counts, &want_counts, p);
    let mut have_mix = BTreeMap::new();
    for entry in txn.open_table(SEARCH_MIX)?.iter()? {
        let (k, v) = entry?;
        let (q, s, ch) = k.value();
        have_mix.insert((q.to_string(), s, ch), v.value());
    }
    differences("search_mix", &have_mix, &want_mix, p);
    Ok(())
}

/// One line per key whose stored count differs from the records' count.
fn differences<K: Ord + std::fmt::Debug>(
    table: &str,
    have: &BTreeMap<K, u64>,
    want: &BTreeMap<K, u64>,
    p: &mut Vec<String>,
) {
    let keys: BTreeSet<&K> = have.keys().chain(want.keys()).collect();
    for k in keys {
        let (h, w) = (have.get(k).copied(), want.get(k).copied());
        if h != w {
            p.push(format!(
                "{table} {k:?}: {h:?} stored, the conversations count {w:?}"
            ));
        }
    }
}
