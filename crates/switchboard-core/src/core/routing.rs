//! Core layer: queues and allocation (docs/routing.md) — queue order, eligibility, automatic offers
//! to the longest-idle agent, offer answers and timeouts, manual picking, and the requeue of
//! a chat whose agent's session was lost (docs/policy.md#deadline).

use super::command::{Principal, Rejection, Reply};
use super::model::{
    AgentId, Conversation, DisconnectReason, EventKind, Metadata, Origin, OriginKind, Presence,
    Status, TokenHash, channel_index,
};
use super::time::{Now, Timestamp};
use super::{AgentRt, Core, QueueRt, Timer};
use crate::policy::{Channel, RequeuePosition};
use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Unbounded};
use uuid::Uuid;

impl Core {
    /// Puts a conversation in its queue (`in_queue`) at its rank.
    pub(super) fn enqueue(&mut self, id: Uuid) {
        self.set_agent(id, None);
        self.set_status(id, Status::InQueue);
        let Some(c) = self.work.conversations.get(&id) else {
            return;
        };
        let (rank, queue) = (c.queue_rank, c.queue.clone());
        if let Some(q) = self.org.queues.get_mut(&queue) {
            q.waiting.insert((rank, id));
        }
        self.batch.dirty_queues.insert(queue);
        self.batch.alloc_needed = true;
    }

    /// Takes a conversation out of its queue's waiting list.
    pub(super) fn dequeue(&mut self, id: Uuid) {
        let Some(c) = self.work.conversations.get(&id) else {
            return;
        };
        let (rank, queue) = (c.queue_rank, c.queue.clone());
        if let Some(q) = self.org.queues.get_mut(&queue) {
            q.waiting.remove(&(rank, id));
        }
        self.batch.dirty_queues.insert(queue);
    }

    /// Whether `agent` may be offered work on `channel` right now (ignoring queue membership).
    pub(super) fn eligible(&self, agent: &AgentRt, channel: Channel) -> bool {
        agent.rec.presence == Presence::Ready
            && self.session_connected(agent)
            && self.load(agent, channel) < self.capacity(&agent.rec.id, channel)
            && (channel != Channel::Voice || !agent.rec.bindings.is_empty())
    }

    /// Offers waiting work to eligible agents, queue by queue, oldest first, each to the
    /// eligible member idle longest on that channel who has not declined it. The eligible
    /// members come from the queue's `ready` index: O(log n) per offer.
    pub(super) fn allocate(&mut self, now: Now) {
        // Each queue is walked oldest first; across queues the oldest waiting conversation
        // goes first, so an agent in several queues of a channel takes the customer who has
        // waited longest, whichever queue they are in (docs/routing.md#allocation).
        let mut after: BTreeMap<String, Option<(i64, Uuid)>> = self
            .org
            .queues
            .iter()
            .filter(|(_, q)| !q.waiting.is_empty() && !q.ready.is_empty())
            .map(|(k, _)| (k.clone(), None))
            .collect();
        loop {
            let mut best: Option<((i64, Uuid), String)> = None;
            let mut done: Vec<String> = Vec::new();
            for (qid, cursor) in &after {
                let next = self.org.queues.get(qid).and_then(|q| {
                    if q.ready.is_empty() {
                        return None;
                    }
                    match cursor {
                        None => q.waiting.first(),
                        Some(k) => q.waiting.range((Excluded(*k), Unbounded)).next(),
                    }
                });
                match next {
                    None => done.push(qid.clone()),
                    Some(&key) => {
                        if best.as_ref().is_none_or(|(b, _)| key < *b) {
                            best = Some((key, qid.clone()));
                        }
                    }
                }
            }
            for qid in done {
                after.remove(&qid);
            }
            let Some((key, qid)) = best else {
                break;
            };
            after.insert(qid.clone(), Some(key));
            let Some(c) = self.work.conversations.get(&key.1) else {
                continue;
            };
            let Some(q) = self.org.queues.get(&qid) else {
                continue;
            };
            // A chat reserved for its previous agent goes only to them
            // (docs/rescue.md#sticky-return).
            let reserved = self.reserved_for(key.1);
            let Some(agent) = q
                .ready
                .iter()
                .find(|(_, a)| !c.declined_by.contains(a) && reserved.is_none_or(|r| r == a))
                .map(|(_, a)| a.clone())
            else {
                continue;
            };
            self.offer(now, key.1, &agent);
            self.reindex(&agent);
        }
    }

    /// Brings `agent`'s entries in the `ready` index up to date: on each channel it is
    /// listed in its queues of that channel exactly while eligible, keyed by its idle-since
    /// time on that channel.
    pub(super) fn reindex(&mut self, agent: &str) {
        let Some(a) = self.org.agents.get(agent) else {
            return;
        };
        let mut want = [None; 3];
        for channel in [Channel::Voice, Channel::Chat, Channel::Email] {
            let i = channel_index(channel);
            if self.eligible(a, channel) {
                want[i] = Some(a.rec.idle_since[i]);
            }
        }
        let had = a.indexed;
        if want == had {
            return;
        }
        let queues = a.queues.clone();
        let id: AgentId = agent.to_string();
        for q in &queues {
            let Some(rt) = self.org.queues.get_mut(q) else {
                continue;
            };
            let i = channel_index(rt.cfg.channel);
            if had[i] == want[i] {
                continue;
            }
            if let Some(t) = had[i] {
                rt.ready.remove(&(t, id.clone()));
            }
            if let Some(t) = want[i] {
                rt.ready.insert((t, id.clone()));
            }
        }
        if let Some(a) = self.org.agents.get_mut(agent) {
            a.indexed = want;
        }
    }

    /// Rebuilds the `ready` index from scratch (after a configuration change or a restore).
    pub(super) fn rebuild_ready(&mut self) {
        let org = &mut self.org;
        for a in org.agents.values_mut() {
            a.queues.clear();
            a.indexed = [None; 3];
        }
        for (qid, q) in org.queues.iter_mut() {
            q.ready.clear();
            for m in &q.members {
                if let Some(a) = org.agents.get_mut(m) {
                    a.queues.push(qid.clone());
                }
            }
        }
        let ids: Vec<AgentId> = self.org.agents.keys().cloned().collect();
        for id in ids {
            self.reindex(&id);
        }
    }

    /// Debug builds check the `ready` index against a full recomputation after every command.
    #[cfg(debug_assertions)]
    pub(super) fn check_ready_index(&self) {
        for q in self.org.queues.values() {
            let channel = q.cfg.channel;
            let want: std::collections::BTreeSet<(Timestamp, AgentId)> = q
                .members
                .iter()
                .filter_map(|m| self.org.agents.get(m))
                .filter(|a| self.eligible(a, channel))
                .map(|a| (a.rec.idle_since[channel_index(channel)], a.rec.id.clone()))
                .collect();
            assert_eq!(q.ready, want, "ready index of queue {}", q.cfg.id);
        }
    }

    /// Offers a conversation to an agent (from the queue, or directly for transfers).
    pub(super) fn offer(&mut self, now: Now, id: Uuid, agent: &str) {
        self.dequeue(id);
        let Some(c) = self.work.conversations.get(&id) else {
            return;
        };
        let timeout = self
            .queue_cfg(&c.queue)
            .map(|q| q.effective_offer_timeout())
            .unwrap_or(std::time::Duration::from_secs(120));
        let channel = c.channel();
        self.set_agent(id, Some(agent.to_string()));
        self.set_status(id, Status::Offered);
        let expires = self.arm(Timer::Offer(id), now.after(timeout));
        if let Some(c) = self.work.conversations.get_mut(&id) {
            c.offer_expires_at = Some(expires);
        }
        if let Some(a) = self.org.agents.get_mut(agent) {
            a.rec.idle_since[channel_index(channel)] = now.ts();
        }
        self.counters.offers += 1;
        self.event(now, id, EventKind::Offered, Some(agent), None);
    }

    /// An offer goes back to the queue, keeping its arrival time.
    pub(super) fn withdraw_offer(&mut self, now: Now, id: Uuid, why: &str) {
        if self.is_dialling(&id) {
            // A callback being dialled has no queue to go back to: the attempt ends.
            self.dial_failed(now, id, why);
            return;
        }
        let agent = self
            .work
            .conversations
            .get(&id)
            .and_then(|c| c.agent.clone());
        self.event(
            now,
            id,
            EventKind::OfferWithdrawn,
            agent.as_deref(),
            Some(why.to_string()),
        );
        self.enqueue(id);
    }

    pub(super) fn withdraw_offers_of(&mut self, now: Now, agent: &str, why: &str) {
        let offered: Vec<Uuid> = self
            .org
            .agents
            .get(agent)
            .map(|a| {
                a.assigned
                    .iter()
                    .filter(|id| {
                        self.work
                            .conversations
                            .get(id)
                            .is_some_and(|c| c.status == Status::Offered)
                    })
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        for id in offered {
            self.withdraw_offer(now, id, why);
        }
    }

    pub(super) fn offer_timed_out(&mut self, now: Now, id: Uuid) {
        let Some(c) = self.work.conversations.get(&id) else {
            return;
        };
        if c.status != Status::Offered {
            return;
        }
        let Some(agent) = c.agent.clone() else { return };
        let not_ready = self
            .queue_cfg(&c.queue)
            .is_some_and(|q| q.not_ready_after_no_response);
        self.counters.offer_timeouts += 1;
        self.event(now, id, EventKind::OfferTimeout, Some(&agent), None);
        if let Some(c) = self.work.conversations.get_mut(&id) {
            c.declined_by.push(agent.clone());
        }
        self.enqueue(id);
        if not_ready {
            self.change_presence(&agent, Presence::NotReady);
        }
    }

    /// The conversation offered to this token's agent, or why not.
    fn offered_to(&self, token: &TokenHash, now: Now, id: Uuid) -> Result<AgentId, Rejection> {
        let (agent, _) = self.agent_of(token, now)?;
        let c = self.conv(id)?;
        if c.status != Status::Offered || c.agent.as_deref() != Some(agent.as_str()) {
            return Err(Rejection::conflict(
                "not_offered_to_you",
                "this conversation is not offered to you",
            ));
        }
        Ok(agent)
    }

    pub(super) fn accept(
        &mut self,
        now: Now,
        token: &TokenHash,
        id: Uuid,
    ) -> Result<Reply, Rejection> {
        let agent = self.offered_to(token, now, id)?;
        if self.calls.is_call(&id) {
            return Err(Rejection::conflict(
                "answer_on_phone",
                "this call is ringing on your phone: answer it there",
            ));
        }
        self.set_status(id, Status::InProcess);
        self.event(now, id, EventKind::Accepted, Some(&agent), None);
        Ok(Reply::Conversation(Box::new(self.view_of(id)?)))
    }

    pub(super) fn reject(
        &mut self,
        now: Now,
        token: &TokenHash,
        id: Uuid,
    ) -> Result<Reply, Rejection> {
        let agent = self.offered_to(token, now, id)?;
        if self.is_dialling(&id) {
            self.dial_failed(now, id, "the agent hung up before the customer answered");
            return Ok(Reply::Conversation(Box::new(self.view_of(id)?)));
        }
        self.event(now, id, EventKind::OfferRejected, Some(&agent), None);
        if let Some(c) = self.work.conversations.get_mut(&id) {
            c.declined_by.push(agent);
        }
        self.enqueue(id);
        Ok(Reply::Conversation(Box::new(self.view_of(id)?)))
    }

    /// The `in_queue` conversations of a queue, next to be served first.
    pub(super) fn queue_conversations(
        &self,
        now: Now,
        token: &TokenHash,
        queue: &str,
    ) -> Result<Reply, Rejection> {
        let q = self.member_queue(token, now, queue)?;
        let list = q
            .waiting
            .iter()
            .filter_map(|(_, id)| self.work.conversations.get(id))
            .map(|c| self.conversation_view(c, false))
            .collect();
        Ok(Reply::Conversations(list))
    }

    /// The queue, if the token is a supervisor's or a member agent's.
    fn member_queue(
        &self,
        token: &TokenHash,
        now: Now,
        queue: &str,
    ) -> Result<&QueueRt, Rejection> {
        let q = self
            .org
            .queues
            .get(queue)
            .ok_or_else(|| Rejection::NotFound(format!("no queue {queue:?}")))?;
        match self.principal(token, now)? {
            Principal::Supervisor { .. } => Ok(q),
            Principal::Agent { agent, .. } if q.members.contains(&agent) => Ok(q),
            _ => Err(Rejection::Forbidden(format!(
                "you are not a member of queue {queue:?}"
            ))),
        }
    }

    pub(super) fn pick(
        &mut self,
        now: Now,
        token: &TokenHash,
        queue: &str,
        id: Uuid,
    ) -> Result<Reply, Rejection> {
        let (agent, _) = self.agent_of(token, now)?;
        let q = self.member_queue(token, now, queue)?;
        let channel = q.cfg.channel;
        let c = self.conv(id)?;
        if c.queue != queue || c.status != Status::InQueue {
            return Err(Rejection::invalid_state(format!(
                "conversation {id} is not waiting in queue {queue:?}"
            )));
        }
        let a = self.org.agents.get(&agent).ok_or(Rejection::Unauthorized)?;
        if self.load(a, channel) >= self.capacity(&agent, channel) {
            return Err(Rejection::conflict(
                "capacity_reached",
                format!("you are at your {} capacity", channel.as_str()),
            ));
        }
        if channel == Channel::Voice && !self.capabilities(a).voice {
            return Err(Rejection::invalid_state(
                "voice is unavailable: your phone is not registered or your panel is offline",
            ));
        }
        if self.calls.is_call(&id) {
            return Err(Rejection::conflict(
                "answer_on_phone",
                "a phone call is answered on the phone when it rings there",
            ));
        }
        self.dequeue(id);
        self.set_agent(id, Some(agent.clone()));
        self.set_status(id, Status::InProcess);
        if let Some(a) = self.org.agents.get_mut(&agent) {
            a.rec.idle_since[channel_index(channel)] = now.ts();
        }
        self.event(now, id, EventKind::Picked, Some(&agent), None);
        Ok(Reply::Conversation(Box::new(self.view_of(id)?)))
    }

    /// At the grace deadline: the chat's original is closed `handled`/`AgentSessionLost` and a
    /// new conversation of the same group, thread and queue waits for the next agent — with
    /// the original arrival time unless the queue says otherwise.
    pub(super) fn requeue_lost_chat(
        &mut self,
        now: Now,
        deadline: Timestamp,
        id: Uuid,
        agent: &str,
    ) -> Option<Uuid> {
        self.event(
            now,
            id,
            EventKind::SessionLost,
            Some(agent),
            Some("grace period expired".into()),
        );
        self.close_segment_at(
            deadline,
            id,
            Status::Handled,
            DisconnectReason::AgentSessionLost,
        );
        let orig = self.work.conversations.get(&id).cloned()?;
        let position = self
            .queue_cfg(&orig.queue)
            .map(|q| q.requeue_position)
            .unwrap_or_default();
        let (arrival, rank) = match position {
            RequeuePosition::Original => (orig.queue_arrival_time, orig.queue_arrival_time.0),
            RequeuePosition::Back => {
                let at = self.arrival(now);
                (at, at.0)
            }
            RequeuePosition::Front => {
                let head = self
                    .org
                    .queues
                    .get(&orig.queue)
                    .and_then(|q| q.waiting.first().map(|(r, _)| *r))
                    .unwrap_or(i64::MAX);
                (
                    orig.queue_arrival_time,
                    head.min(orig.queue_arrival_time.0).saturating_sub(1),
                )
            }
        };
        self.counters.chats_requeued += 1;
        let new_id = self.new_id(now);
        let new = Conversation {
            id: new_id,
            group_id: orig.group_id,
            medium: orig.medium,
            queue: orig.queue.clone(),
            status: Status::InQueue,
            agent: None,
            last_agent: None,
            customer: orig.customer.clone(),
            subject: orig.subject.clone(),
            origin: Origin {
                kind: OriginKind::Requeue,
                previous: Some(id),
            },
            queue_arrival_time: arrival,
            queue_rank: rank,
            created_at: now.ts(),
            ended_at: None,
            disconnect_party: None,
            disconnect_reason: None,
            metadata: Metadata::default(),
            thread: orig.thread,
            offer_expires_at: None,
            declined_by: Vec::new(),
            event_count: 0,
        };
        self.work.conversations.insert(new_id, new);
        self.touch(new_id);
        self.event(
            now,
            id,
            EventKind::Requeued,
            Some(agent),
            Some(format!("continued as {new_id}")),
        );
        self.event(
            now,
            new_id,
            EventKind::Requeued,
            None,
            Some(format!("requeued from {id} (AgentSessionLost)")),
        );
        self.event(now, new_id, EventKind::Queued, None, None);
        self.enqueue(new_id);
        if let Some(t) = orig.thread {
            self.move_thread(t, new_id);
        }
        let prompt = self
            .queue_cfg(&orig.queue)
            .and_then(|q| q.session_lost_prompt.clone());
        if let Some(text) = prompt {
            self.send_prompt(now, new_id, text);
        }
        Some(new_id)
    }
}
