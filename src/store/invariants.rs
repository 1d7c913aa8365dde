//! Store layer: the invariant check behind [`RedbStore::check_invariants`], for tests and for a
//! debug-build check at boot. Reads everything in one read transaction; it never repairs.

use super::codec;
use super::error::StoreError;
use super::redb::{RedbStore, pair, seq_key, uuid};
use super::tables::*;
use crate::core::model::{
    AgentRecord, Conversation, Event, Message, Metadata, OriginKind, OutboxItem, Session, Status,
    Thread,
};
use redb::{ReadableDatabase, ReadableMultimapTable, ReadableTable};
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

impl RedbStore {
    /// Every broken invariant, one line each (empty when all hold).
    pub(super) fn invariant_problems(&self) -> Result<Vec<String>, StoreError> {
        let txn = self.db.begin_read()?;
        let mut p = Vec::new();

        let mut convs = BTreeMap::new();
        for entry in txn.open_table(CONVERSATIONS)?.iter()? {
            let (k, v) = entry?;
            let key = k.value();
            match codec::decode::<Conversation>(v.value()) {
                Ok(c) if c.id.as_u128() == key => {
                    convs.insert(key, c);
                }
                Ok(c) => p.push(format!(
                    "conversations: key {} holds record {}",
                    uuid(key),
                    c.id
                )),
                Err(e) => p.push(format!("conversations: {}: {e}", uuid(key))),
            }
        }

        let mut want_queue = BTreeSet::new();
        let mut want_open = BTreeSet::new();
        let mut want_groups = BTreeSet::new();
        let mut requeues: BTreeMap<Uuid, Vec<Uuid>> = BTreeMap::new();
        for c in convs.values() {
            let key = c.id.as_u128();
            if c.status == Status::InQueue {
                want_queue.insert((c.queue.clone(), c.queue_rank, key));
            }
            if !c.status.is_closed() {
                want_open.insert(key);
            }
            if !c.status.is_closed() && c.status.is_assigned() != c.agent.is_some() {
                p.push(format!(
                    "conversation {}: status {} with agent {:?}",
                    c.id,
                    c.status.as_str(),
                    c.agent
                ));
            }
            want_groups.insert((c.group_id.as_u128(), key));
            if let (OriginKind::Requeue, Some(prev)) = (c.origin.kind, c.origin.previous) {
                requeues.entry(prev).or_default().push(c.id);
            }
        }
        for (prev, ids) in &requeues {
            if ids.len() > 1 {
                p.push(format!(
                    "conversation {prev} was requeued {} times: {ids:?}",
                    ids.len()
                ));
            }
        }

        let mut have_queue = BTreeSet::new();
        for entry in txn.open_table(QUEUE_INDEX)?.iter()? {
            let (k, _) = entry?;
            let (queue, rank, id) = k.value();
            have_queue.insert((queue.to_string(), rank, id));
        }
        for (q, rank, id) in want_queue.difference(&have_queue) {
            p.push(format!(
                "queue_index lacks in_queue conversation {} ({q}, {rank})",
                uuid(*id)
            ));
        }
        for (q, rank, id) in have_queue.difference(&want_queue) {
            p.push(format!(
                "queue_index has ({q}, {rank}, {}), which is not an in_queue conversation there",
                uuid(*id)
            ));
        }

        let mut have_open = BTreeSet::new();
        for entry in txn.open_table(OPEN_CONVERSATIONS)?.iter()? {
            have_open.insert(entry?.0.value());
        }
        for id in want_open.difference(&have_open) {
            p.push(format!(
                "open_conversations lacks open conversation {}",
                uuid(*id)
            ));
        }
        for id in have_open.difference(&want_open) {
            p.push(format!(
                "open_conversations has {}, which is not an open conversation",
                uuid(*id)
            ));
        }

        let mut have_groups = BTreeSet::new();
        for entry in txn.open_multimap_table(GROUPS)?.iter()? {
            let (g, ids) = entry?;
            let g = g.value();
            for id in ids {
                have_groups.insert((g, id?.value()));
            }
        }
        for (g, id) in want_groups.difference(&have_groups) {
            p.push(format!(
                "groups lacks conversation {} in group {}",
                uuid(*id),
                uuid(*g)
            ));
        }
        for (g, id) in have_groups.difference(&want_groups) {
            p.push(format!(
                "groups has {} in group {}, which is no such conversation",
                uuid(*id),
                uuid(*g)
            ));
        }

        super::search_index::problems(&txn, &convs, &mut p)?;

        let mut event_seqs: BTreeMap<u128, Vec<u32>> = BTreeMap::new();
        for entry in txn.open_table(EVENTS)?.iter()? {
            let (k, v) = entry?;
            let (id, seq) = k.value();
            if let Err(e) = codec::decode::<Event>(v.value()) {
                p.push(format!("events: {}: {e}", seq_key(id, seq)));
            }
            event_seqs.entry(id).or_default().push(seq);
        }
        for c in convs.values() {
            let seqs = event_seqs.remove(&c.id.as_u128()).unwrap_or_default();
            if !numbered(&seqs, c.event_count) {
                p.push(format!(
                    "conversation {}: event_count {} but events {seqs:?}",
                    c.id, c.event_count
                ));
            }
        }
        for id in event_seqs.keys() {
            p.push(format!(
                "events of {}, which is no such conversation",
                uuid(*id)
            ));
        }

        let mut threads = BTreeMap::new();
        for entry in txn.open_table(THREADS)?.iter()? {
            let (k, v) = entry?;
            let key = k.value();
            match codec::decode::<Thread>(v.value()) {
                Ok(t) if t.id.as_u128() == key => {
                    if !convs.contains_key(&t.current.as_u128()) {
                        p.push(format!(
                            "thread {}: current conversation {} is missing",
                            t.id, t.current
                        ));
                    }
                    threads.insert(key, t);
                }
                Ok(t) => p.push(format!("threads: key {} holds record {}", uuid(key), t.id)),
                Err(e) => p.push(format!("threads: {}: {e}", uuid(key))),
            }
        }
        let mut have_open_threads = BTreeSet::new();
        for entry in txn.open_table(OPEN_THREADS)?.iter()? {
            have_open_threads.insert(entry?.0.value());
        }
        let want_open_threads: BTreeSet<u128> = threads
            .values()
            .filter(|t| t.open)
            .map(|t| t.id.as_u128())
            .collect();
        if have_open_threads != want_open_threads {
            p.push("open_threads does not match the open threads".to_string());
        }
        let mut message_seqs: BTreeMap<u128, Vec<u32>> = BTreeMap::new();
        for entry in txn.open_table(MESSAGES)?.iter()? {
            let (k, v) = entry?;
            let (id, seq) = k.value();
            if let Err(e) = codec::decode::<Message>(v.value()) {
                p.push(format!("messages: {}: {e}", seq_key(id, seq)));
            }
            message_seqs.entry(id).or_default().push(seq);
        }
        for t in threads.values() {
            let seqs = message_seqs.remove(&t.id.as_u128()).unwrap_or_default();
            if !numbered(&seqs, t.message_count) {
                p.push(format!(
                    "thread {}: message_count {} but messages {seqs:?}",
                    t.id, t.message_count
                ));
            }
        }
        for id in message_seqs.keys() {
            p.push(format!(
                "messages of {}, which is no such thread",
                uuid(*id)
            ));
        }

        let mut sessions = BTreeMap::new();
        for entry in txn.open_table(SESSIONS)?.iter()? {
            let (k, v) = entry?;
            let key = k.value();
            match codec::decode::<Session>(v.value()) {
                Ok(s) if s.id.as_u128() == key => {
                    sessions.insert(key, s);
                }
                Ok(s) => p.push(format!("sessions: key {} holds record {}", uuid(key), s.id)),
                Err(e) => p.push(format!("sessions: {}: {e}", uuid(key))),
            }
        }
        let mut tokens = BTreeMap::new();
        for entry in txn.open_table(SESSION_TOKENS)?.iter()? {
            let (k, v) = entry?;
            tokens.insert(k.value(), v.value());
        }
        for s in sessions.values() {
            if tokens.get(&s.token_hash) != Some(&s.id.as_u128()) {
                p.push(format!(
                    "session {}: its token is not in session_tokens",
                    s.id
                ));
            }
        }
        for (token, id) in &tokens {
            if sessions.get(id).is_none_or(|s| &s.token_hash != token) {
                p.push(format!(
                    "session_tokens: a token names session {}, which does not hold it",
                    uuid(*id)
                ));
            }
        }
        for entry in txn.open_table(DRAFTS)?.iter()? {
            let (k, v) = entry?;
            let (session, conversation) = k.value();
            if let Err(e) = codec::decode::<Metadata>(v.value()) {
                p.push(format!("drafts: {}: {e}", pair(session, conversation)));
            }
            if !sessions.contains_key(&session) {
                p.push(format!(
                    "drafts: {} belongs to no stored session",
                    pair(session, conversation)
                ));
            }
        }
        for entry in txn.open_table(AGENTS)?.iter()? {
            let (k, v) = entry?;
            match codec::decode::<AgentRecord>(v.value()) {
                Ok(a) if a.id == k.value() => {}
                Ok(a) => p.push(format!("agents: key {} holds record {}", k.value(), a.id)),
                Err(e) => p.push(format!("agents: {}: {e}", k.value())),
            }
        }
        for entry in txn.open_table(OUTBOX)?.iter()? {
            let (k, v) = entry?;
            match codec::decode::<OutboxItem>(v.value()) {
                Ok(o) if o.message_id.as_u128() == k.value() => {}
                Ok(o) => p.push(format!(
                    "outbox: key {} holds record {}",
                    uuid(k.value()),
                    o.message_id
                )),
                Err(e) => p.push(format!("outbox: {}: {e}", uuid(k.value()))),
            }
        }
        Ok(p)
    }
}

/// Whether `seqs` (ascending) is exactly `0..count`.
fn numbered(seqs: &[u32], count: u32) -> bool {
    seqs.len() as u64 == u64::from(count)
        && seqs
            .iter()
            .enumerate()
            .all(|(i, s)| i as u64 == u64::from(*s))
}
