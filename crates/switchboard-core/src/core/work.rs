//! Core layer: what an agent (or a supervisor) does with a conversation (docs/routing.md) —
//! messages, drafts and saved metadata, end and complete, transfer, consultation, callback,
//! reassignment.

use super::Core;
use super::command::{Rejection, Reply, Target};
use super::effect::Write;
use super::model::{
    AgentId, Conversation, Customer, DisconnectReason, EventKind, Medium, Metadata, Origin,
    OriginKind, Sender, Status, TokenHash,
};
use super::time::{Now, Timestamp};
use crate::policy::Channel;
use uuid::Uuid;

/// What a new conversation of an existing group starts from.
pub(super) struct Segment {
    pub medium: Medium,
    pub queue: String,
    pub customer: Customer,
    pub subject: Option<String>,
    pub origin: Origin,
    pub group_id: Uuid,
    pub thread: Option<Uuid>,
}

impl Core {
    /// Creates a conversation (not yet queued or assigned) and returns its id.
    pub(super) fn create(&mut self, now: Now, seg: Segment, arrival: Timestamp) -> Uuid {
        let id = self.new_id(now);
        let c = Conversation {
            id,
            group_id: seg.group_id,
            medium: seg.medium,
            queue: seg.queue,
            status: Status::InQueue,
            agent: None,
            last_agent: None,
            customer: seg.customer,
            subject: seg.subject,
            origin: seg.origin,
            queue_arrival_time: arrival,
            queue_rank: arrival.0,
            created_at: now.ts(),
            ended_at: None,
            disconnect_party: None,
            disconnect_reason: None,
            metadata: Metadata::default(),
            thread: seg.thread,
            offer_expires_at: None,
            declined_by: Vec::new(),
            event_count: 0,
        };
        self.work.conversations.insert(id, c);
        self.touch(id);
        id
    }

    /// The conversation, if this token's agent holds it in one of `statuses`.
    fn held(
        &self,
        token: &TokenHash,
        now: Now,
        id: Uuid,
        statuses: &[Status],
    ) -> Result<(AgentId, Uuid), Rejection> {
        let (agent, session) = self.agent_of(token, now)?;
        let c = self.conv(id)?;
        if c.agent.as_deref() != Some(agent.as_str()) {
            return Err(Rejection::Forbidden(
                "this conversation is not yours".into(),
            ));
        }
        if !statuses.contains(&c.status) {
            return Err(Rejection::invalid_state(format!(
                "conversation {id} is {}",
                c.status.as_str()
            )));
        }
        Ok((agent, session))
    }

    pub(super) fn agent_message(
        &mut self,
        now: Now,
        token: &TokenHash,
        id: Uuid,
        text: String,
    ) -> Result<Reply, Rejection> {
        let (agent, _) = self.held(token, now, id, &[Status::InProcess])?;
        let text = self.message_text(&text)?;
        let c = self.conv(id)?;
        let (medium, thread, to, subject) = (
            c.medium,
            c.thread,
            c.customer.address.clone(),
            c.subject.clone(),
        );
        let Some(thread) = thread else {
            return Err(Rejection::invalid_state(
                "voice conversations carry no messages",
            ));
        };
        self.room_in_thread(thread)?;
        let outbound = matches!(medium, Medium::Sms | Medium::Social | Medium::Email);
        let msg = self.append_message(now, thread, Sender::Agent, text.clone(), outbound);
        if let (true, Some(msg)) = (outbound, msg) {
            self.deliver_out(now, msg, id, thread, medium, to, subject, text, agent);
        }
        Ok(Reply::Done)
    }

    pub(super) fn save_draft(
        &mut self,
        now: Now,
        token: &TokenHash,
        id: Uuid,
        draft: Metadata,
    ) -> Result<Reply, Rejection> {
        let (_, session) = self.held(
            token,
            now,
            id,
            &[Status::Offered, Status::InProcess, Status::WrapUp],
        )?;
        if let Some(s) = self.auth.sessions.get_mut(&session) {
            s.drafts.insert(id, draft.clone());
        }
        self.batch.writes.push(Write::Draft {
            session,
            conversation: id,
            draft: Some(draft),
        });
        Ok(Reply::Done)
    }

    pub(super) fn save_metadata(
        &mut self,
        now: Now,
        token: &TokenHash,
        id: Uuid,
        metadata: Metadata,
    ) -> Result<Reply, Rejection> {
        let (agent, session) = self.held(token, now, id, &[Status::InProcess, Status::WrapUp])?;
        self.touch(id);
        if let Some(c) = self.work.conversations.get_mut(&id) {
            c.metadata = metadata;
        }
        self.drop_draft(session, id);
        self.event(now, id, EventKind::MetadataSaved, Some(&agent), None);
        Ok(Reply::Conversation(Box::new(self.view_of(id)?)))
    }

    pub(super) fn end(
        &mut self,
        now: Now,
        token: &TokenHash,
        id: Uuid,
    ) -> Result<Reply, Rejection> {
        let (agent, _) = self.held(token, now, id, &[Status::InProcess])?;
        self.close_segment(now, id, Status::WrapUp, DisconnectReason::AgentEnded);
        self.event(now, id, EventKind::Ended, Some(&agent), None);
        self.close_thread_of(id);
        Ok(Reply::Conversation(Box::new(self.view_of(id)?)))
    }

    pub(super) fn complete(
        &mut self,
        now: Now,
        token: &TokenHash,
        id: Uuid,
    ) -> Result<Reply, Rejection> {
        let (agent, _) = self.held(token, now, id, &[Status::WrapUp])?;
        self.event(now, id, EventKind::WrapUpCompleted, Some(&agent), None);
        let view = {
            self.set_status(id, Status::Handled);
            self.release_closed(id);
            self.view_of(id)?
        };
        Ok(Reply::Conversation(Box::new(view)))
    }

    /// The queue a target names, checked against the conversation's channel.
    fn target_queue(&self, queue: &str, channel: Channel) -> Result<(), Rejection> {
        let q = self
            .queue_cfg(queue)
            .ok_or_else(|| Rejection::NotFound(format!("no queue {queue:?}")))?;
        if q.channel != channel {
            return Err(Rejection::Invalid(format!(
                "queue {queue:?} is a {} queue; this is a {} conversation",
                q.channel.as_str(),
                channel.as_str()
            )));
        }
        Ok(())
    }

    /// The agent a target names, if it can take an offer on `channel` now.
    fn target_agent(&self, agent: &str, channel: Channel) -> Result<(), Rejection> {
        let a = self
            .org
            .agents
            .get(agent)
            .ok_or_else(|| Rejection::NotFound(format!("no agent {agent:?}")))?;
        if !self.session_connected(a) {
            return Err(Rejection::invalid_state(format!(
                "agent {agent:?} is not connected"
            )));
        }
        if channel == Channel::Voice && a.rec.bindings.is_empty() {
            return Err(Rejection::invalid_state(format!(
                "agent {agent:?} has no registered phone"
            )));
        }
        if self.load(a, channel) >= self.capacity(agent, channel) {
            return Err(Rejection::conflict(
                "capacity_reached",
                format!("agent {agent:?} is at capacity"),
            ));
        }
        Ok(())
    }

    /// Sends the work on in a new conversation of the group (transfer and reassign).
    fn continue_elsewhere(
        &mut self,
        now: Now,
        id: Uuid,
        target: &Target,
        origin: OriginKind,
    ) -> Result<Uuid, Rejection> {
        let c = self.conv(id)?.clone();
        let queue = match target {
            Target::Queue(q) => q.clone(),
            Target::Agent(_) => c.queue.clone(),
        };
        let seg = Segment {
            medium: c.medium,
            queue,
            customer: c.customer.clone(),
            subject: c.subject.clone(),
            origin: Origin {
                kind: origin,
                previous: Some(id),
            },
            group_id: c.group_id,
            thread: c.thread,
        };
        let new = {
            let arrival = self.arrival(now);
            self.create(now, seg, arrival)
        };
        if let Some(t) = c.thread {
            self.move_thread(t, new);
        }
        match target {
            Target::Queue(_) => {
                self.event(
                    now,
                    new,
                    EventKind::Queued,
                    None,
                    Some(format!("from {id}")),
                );
                self.enqueue(new);
            }
            Target::Agent(a) => {
                self.dequeue(new);
                self.offer(now, new, a);
            }
        }
        Ok(new)
    }

    pub(super) fn transfer(
        &mut self,
        now: Now,
        token: &TokenHash,
        id: Uuid,
        target: Target,
    ) -> Result<Reply, Rejection> {
        let (agent, _) = self.held(token, now, id, &[Status::InProcess])?;
        let channel = self.conv(id)?.channel();
        match &target {
            Target::Queue(q) => self.target_queue(q, channel)?,
            Target::Agent(a) if *a == agent => {
                return Err(Rejection::Invalid("cannot transfer to yourself".into()));
            }
            Target::Agent(a) => self.target_agent(a, channel)?,
        }
        let detail = match &target {
            Target::Queue(q) => format!("to queue {q}"),
            Target::Agent(a) => format!("to agent {a}"),
        };
        self.event(now, id, EventKind::Transferred, Some(&agent), Some(detail));
        self.close_segment(now, id, Status::WrapUp, DisconnectReason::Transferred);
        let new = self.continue_elsewhere(now, id, &target, OriginKind::Transfer)?;
        Ok(Reply::Conversation(Box::new(self.view_of(new)?)))
    }

    pub(super) fn consult(
        &mut self,
        now: Now,
        token: &TokenHash,
        id: Uuid,
        other: AgentId,
    ) -> Result<Reply, Rejection> {
        let (agent, _) = self.held(token, now, id, &[Status::InProcess])?;
        if other == agent {
            return Err(Rejection::Invalid("cannot consult yourself".into()));
        }
        let c = self.conv(id)?.clone();
        self.target_agent(&other, c.channel())?;
        let seg = Segment {
            medium: c.medium,
            queue: c.queue.clone(),
            customer: c.customer.clone(),
            subject: c.subject.clone(),
            origin: Origin {
                kind: OriginKind::Consultation,
                previous: Some(id),
            },
            group_id: c.group_id,
            thread: None,
        };
        let new = {
            let arrival = self.arrival(now);
            self.create(now, seg, arrival)
        };
        self.event(
            now,
            id,
            EventKind::ConsultationStarted,
            Some(&agent),
            Some(format!("with {other} as {new}")),
        );
        self.event(
            now,
            new,
            EventKind::ConsultationStarted,
            Some(&agent),
            Some(format!("from {id}")),
        );
        self.offer(now, new, &other);
        Ok(Reply::Conversation(Box::new(self.view_of(new)?)))
    }

    pub(super) fn callback(
        &mut self,
        now: Now,
        token: &TokenHash,
        id: Uuid,
    ) -> Result<Reply, Rejection> {
        let (agent, _) = self.agent_of(token, now)?;
        let c = self.conv(id)?.clone();
        if c.last_agent.as_deref() != Some(agent.as_str()) {
            return Err(Rejection::Forbidden(
                "only the conversation's last agent can call back".into(),
            ));
        }
        if c.channel() != Channel::Voice || !matches!(c.status, Status::WrapUp | Status::Handled) {
            return Err(Rejection::invalid_state(
                "callback needs a voice conversation that has ended",
            ));
        }
        let a = self.org.agents.get(&agent).ok_or(Rejection::Unauthorized)?;
        if !self.capabilities(a).voice {
            return Err(Rejection::invalid_state(
                "voice is unavailable: your phone is not registered or your panel is offline",
            ));
        }
        // The call being called back (in wrap-up) is replaced by the callback: not counted.
        let own =
            u32::from(c.status == Status::WrapUp && c.agent.as_deref() == Some(agent.as_str()));
        if self.load(a, Channel::Voice).saturating_sub(own) >= self.capacity(&agent, Channel::Voice)
        {
            return Err(Rejection::conflict(
                "capacity_reached",
                "you are at your voice capacity",
            ));
        }
        let seg = Segment {
            medium: Medium::Voice,
            queue: c.queue.clone(),
            customer: c.customer.clone(),
            subject: None,
            origin: Origin {
                kind: OriginKind::Callback,
                previous: Some(id),
            },
            group_id: c.group_id,
            thread: None,
        };
        let new = {
            let arrival = self.arrival(now);
            self.create(now, seg, arrival)
        };
        self.set_agent(new, Some(agent.clone()));
        // A real call rings the agent's phone first: the conversation is offered to them
        // until the customer answers. Without an outbound proxy it is only a record.
        let dial = self.dials_out();
        self.set_status(
            new,
            if dial {
                Status::Offered
            } else {
                Status::InProcess
            },
        );
        self.event(
            now,
            id,
            EventKind::CallbackStarted,
            Some(&agent),
            Some(format!("as {new}")),
        );
        self.event(
            now,
            new,
            EventKind::CallbackStarted,
            Some(&agent),
            Some(format!("calling {}", c.customer.address)),
        );
        if dial {
            self.start_dial(now, new, &agent, &c.customer.address);
        }
        Ok(Reply::Conversation(Box::new(self.view_of(new)?)))
    }

    pub(super) fn reassign(
        &mut self,
        now: Now,
        token: &TokenHash,
        id: Uuid,
        target: Target,
    ) -> Result<Reply, Rejection> {
        let supervisor = self.supervisor_of(token, now)?;
        let c = self.conv(id)?;
        if c.status.is_closed() {
            return Err(Rejection::invalid_state(format!(
                "conversation {id} is {}",
                c.status.as_str()
            )));
        }
        let channel = c.channel();
        match &target {
            Target::Queue(q) => self.target_queue(q, channel)?,
            Target::Agent(a) => self.target_agent(a, channel)?,
        }
        let detail = match &target {
            Target::Queue(q) => format!("by {supervisor} to queue {q}"),
            Target::Agent(a) => format!("by {supervisor} to agent {a}"),
        };
        let agent = c.agent.clone();
        self.dequeue(id);
        self.event(
            now,
            id,
            EventKind::Reassigned,
            agent.as_deref(),
            Some(detail),
        );
        self.close_segment(now, id, Status::Handled, DisconnectReason::Reassigned);
        let new = self.continue_elsewhere(now, id, &target, OriginKind::Transfer)?;
        Ok(Reply::Conversation(Box::new(self.view_of(new)?)))
    }
}
