//! Core layer: the customer side (docs/domain.md#threads, docs/routing.md) — web chats, inbound
//! sms/social messages threaded by (medium, sender), emails, calls and hang-ups, threads and their
//! transcripts, prompts, and the customer leaving.

use super::command::{Rejection, Reply};
use super::effect::{Effect, Write};
use super::model::{
    AgentId, Customer, Delivery, DisconnectReason, EventKind, Medium, Message, Origin, OriginKind,
    OutboxItem, Sender, Status, Thread, TokenHash,
};
use super::time::Now;
use super::view::{ChatEvent, ChatSnapshot, MessageView, PanelEvent};
use super::work::Segment;
use super::{Core, ThreadRt, Timer, TokenOwner};
use crate::policy::Channel;
use uuid::Uuid;

impl Core {
    fn inbound_queue(&self, queue: &str, channel: Channel) -> Result<(), Rejection> {
        let q = self
            .queue_cfg(queue)
            .ok_or_else(|| Rejection::NotFound(format!("no queue {queue:?}")))?;
        if q.channel != channel {
            return Err(Rejection::Invalid(format!(
                "queue {queue:?} is a {} queue, not {}",
                q.channel.as_str(),
                channel.as_str()
            )));
        }
        Ok(())
    }

    /// A new inbound conversation in a new group, queued now.
    fn new_inbound(
        &mut self,
        now: Now,
        medium: Medium,
        queue: String,
        customer: Customer,
        subject: Option<String>,
        token: Option<TokenHash>,
    ) -> (Uuid, Uuid, Option<Uuid>) {
        let group_id = self.new_id(now);
        let with_thread = medium != Medium::Voice;
        let thread_id = with_thread.then(|| self.new_id(now));
        let seg = Segment {
            medium,
            queue,
            customer: customer.clone(),
            subject,
            origin: Origin {
                kind: OriginKind::Inbound,
                previous: None,
            },
            group_id,
            thread: thread_id,
        };
        let id = {
            let arrival = self.arrival(now);
            self.create(now, seg, arrival)
        };
        if let Some(t) = thread_id {
            let rec = Thread {
                id: t,
                group_id,
                medium,
                customer,
                token_hash: token,
                current: id,
                open: true,
                message_count: 0,
            };
            if matches!(medium, Medium::Sms | Medium::Social) {
                self.work
                    .open_threads
                    .insert((medium, rec.customer.address.clone()), t);
            }
            if let Some(h) = token {
                self.auth.tokens.insert(h, TokenOwner::Thread(t));
            }
            self.work.threads.insert(
                t,
                ThreadRt {
                    rec,
                    messages: Vec::new(),
                    sent: (0, 0),
                },
            );
            self.batch.dirty_threads.insert(t);
        }
        self.event(now, id, EventKind::Queued, None, None);
        self.enqueue(id);
        (id, group_id, thread_id)
    }

    pub(super) fn start_chat(
        &mut self,
        now: Now,
        queue: String,
        name: String,
        text: Option<String>,
        token: TokenHash,
    ) -> Result<Reply, Rejection> {
        self.inbound_queue(&queue, Channel::Chat)?;
        let name = name.trim().to_string();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(Rejection::Invalid(
                "name must be 1 to 100 characters".into(),
            ));
        }
        let text = match text.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(t) => Some(self.message_text(t)?),
        };
        let customer = Customer {
            name: name.clone(),
            address: name,
        };
        let (id, group_id, thread) =
            self.new_inbound(now, Medium::Webchat, queue, customer, None, Some(token));
        if let (Some(t), Some(text)) = (thread, text) {
            self.append_message(now, t, Sender::Customer, text, false);
        }
        Ok(Reply::ChatStarted {
            conversation_id: id,
            group_id,
        })
    }

    pub(super) fn thread_of(&self, token: &TokenHash) -> Result<Uuid, Rejection> {
        match self.auth.tokens.get(token) {
            Some(TokenOwner::Thread(t)) if self.work.threads.contains_key(t) => Ok(*t),
            Some(TokenOwner::Session(_)) => Err(Rejection::Forbidden(
                "this needs a customer chat token".into(),
            )),
            _ => Err(Rejection::Unauthorized),
        }
    }

    /// Status, queue position (1 = next) and agent name of a thread's current conversation.
    pub(super) fn thread_status(
        &self,
        thread: Uuid,
    ) -> Option<(Status, Option<u32>, Option<String>)> {
        let t = self.work.threads.get(&thread)?;
        let c = self.work.conversations.get(&t.rec.current)?;
        let position = (c.status == Status::InQueue)
            .then(|| {
                self.org.queues.get(&c.queue).and_then(|q| {
                    q.waiting
                        .iter()
                        .position(|(_, id)| *id == c.id)
                        .map(|p| p as u32 + 1)
                })
            })
            .flatten();
        let agent_name = match c.status {
            Status::InProcess | Status::WrapUp => c.agent.as_deref().map(|a| self.agent_name(a)),
            _ => None,
        };
        Some((c.status, position, agent_name))
    }

    /// Whether the agent of this in-process conversation has been away for the prompt delay.
    fn agent_reconnecting(&self, conv: Uuid) -> bool {
        self.work
            .conversations
            .get(&conv)
            .filter(|c| c.status == Status::InProcess)
            .and_then(|c| c.agent.as_deref())
            .and_then(|a| self.org.agents.get(a))
            .and_then(|a| a.session)
            .and_then(|s| self.auth.sessions.get(&s))
            .is_some_and(|s| s.away_announced)
    }

    pub(super) fn chat_snapshot(&self, thread: Uuid) -> Result<ChatSnapshot, Rejection> {
        let t = self
            .work
            .threads
            .get(&thread)
            .ok_or(Rejection::Unauthorized)?;
        let (status, position, agent_name) =
            self.thread_status(thread).ok_or(Rejection::Unauthorized)?;
        Ok(ChatSnapshot {
            conversation_id: t.rec.current,
            group_id: t.rec.group_id,
            messages: self.recent_messages(t),
            status,
            position,
            agent_name,
            agent_reconnecting: self.agent_reconnecting(t.rec.current),
        })
    }

    /// The latest `limits.snapshot_messages` messages of a thread, oldest first: snapshots stay
    /// small however long the transcript (the whole of it is in the conversation's record).
    pub(super) fn recent_messages(&self, t: &ThreadRt) -> Vec<MessageView> {
        let keep = self.policy.limits.snapshot_messages;
        let skip = t.messages.len().saturating_sub(keep);
        t.messages[skip..].iter().map(MessageView::of).collect()
    }

    /// Refuses a message to a thread that already holds `limits.max_messages_per_thread`.
    pub(super) fn room_in_thread(&self, thread: Uuid) -> Result<(), Rejection> {
        let max = self.policy.limits.max_messages_per_thread;
        match self.work.threads.get(&thread) {
            Some(t) if t.messages.len() >= max => Err(Rejection::conflict(
                "transcript_full",
                format!(
                    "this conversation already holds {max} messages (limits.max_messages_per_thread); no more can be added to it"
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Counts one customer message against `limits.customer_messages_per_minute`.
    fn customer_rate(&mut self, now: Now, thread: Uuid) -> Result<(), Rejection> {
        let per_minute = self.policy.limits.customer_messages_per_minute;
        let minute = now.mono / 60_000;
        let Some(t) = self.work.threads.get_mut(&thread) else {
            return Ok(());
        };
        if t.sent.0 != minute {
            t.sent = (minute, 0);
        }
        if t.sent.1 >= per_minute {
            return Err(Rejection::RateLimited(format!(
                "more than {per_minute} messages in a minute (limits.customer_messages_per_minute); wait a moment and send again"
            )));
        }
        t.sent.1 += 1;
        Ok(())
    }

    /// Adds a message to a thread's transcript and tells the customer and the agent.
    pub(super) fn append_message(
        &mut self,
        now: Now,
        thread: Uuid,
        from: Sender,
        text: String,
        outbound: bool,
    ) -> Option<Uuid> {
        let id = self.new_id(now);
        let t = self.work.threads.get_mut(&thread)?;
        let msg = Message {
            id,
            from,
            text,
            at: now.ts(),
            delivery: outbound.then_some(Delivery::Pending),
        };
        let seq = t.rec.message_count;
        t.rec.message_count += 1;
        t.messages.push(msg.clone());
        let current = t.rec.current;
        self.batch.dirty_threads.insert(thread);
        self.batch.writes.push(Write::Message {
            thread,
            seq,
            message: msg.clone(),
        });
        let view = MessageView::of(&msg);
        if let Some(agent) = self
            .work
            .conversations
            .get(&current)
            .and_then(|c| c.agent.clone())
        {
            self.batch.effects.push_back(Effect::Panel {
                agent,
                event: PanelEvent::Message {
                    conversation_id: current,
                    message: view.clone(),
                },
            });
        }
        self.batch.effects.push_back(Effect::Chat {
            thread,
            event: ChatEvent::Message { message: view },
        });
        Some(id)
    }

    /// A configured prompt to the customer, as a system message. On sms and social it goes
    /// out through the medium's webhook like an agent reply, with no agent
    /// (docs/rescue.md#prompts-on-every-medium).
    pub(super) fn send_prompt(&mut self, now: Now, conv: Uuid, text: String) {
        let Some(c) = self.work.conversations.get(&conv) else {
            return;
        };
        let Some(thread) = c.thread else {
            return;
        };
        let (medium, to) = (c.medium, c.customer.address.clone());
        let outbound = matches!(medium, Medium::Sms | Medium::Social);
        let msg = self.append_message(now, thread, Sender::System, text.clone(), outbound);
        if let (true, Some(msg)) = (outbound, msg) {
            self.deliver_out(
                now,
                msg,
                conv,
                thread,
                medium,
                to,
                None,
                text.clone(),
                String::new(),
            );
        }
        self.event(now, conv, EventKind::PromptSent, None, Some(text));
    }

    /// Queues a message for webhook delivery (`agent` empty for a system message).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn deliver_out(
        &mut self,
        now: Now,
        msg: Uuid,
        conv: Uuid,
        thread: Uuid,
        medium: Medium,
        to: String,
        subject: Option<String>,
        text: String,
        agent: AgentId,
    ) {
        let item = OutboxItem {
            message_id: msg,
            conversation_id: conv,
            thread_id: thread,
            medium,
            to,
            subject: subject.map(|s| format!("Re: {s}")),
            text,
            agent,
            created_at: now.ts(),
            attempts: 0,
            next_attempt_at: now.ts(),
        };
        self.batch
            .writes
            .push(Write::Outbox(Box::new(item.clone())));
        self.batch
            .effects
            .push_back(Effect::Deliver(Box::new(item.clone())));
        self.work.outbox.insert(msg, item);
    }

    /// The thread now follows conversation `to` (requeue, transfer).
    pub(super) fn move_thread(&mut self, thread: Uuid, to: Uuid) {
        if let Some(t) = self.work.threads.get_mut(&thread) {
            t.rec.current = to;
            self.batch.dirty_threads.insert(thread);
        }
    }

    /// The conversation's thread is over (the chat ended): no more customer messages.
    pub(super) fn close_thread_of(&mut self, conv: Uuid) {
        let Some(thread) = self.work.conversations.get(&conv).and_then(|c| c.thread) else {
            return;
        };
        let Some(t) = self.work.threads.get_mut(&thread) else {
            return;
        };
        if t.rec.current != conv || !t.rec.open {
            return;
        }
        t.rec.open = false;
        self.work
            .open_threads
            .remove(&(t.rec.medium, t.rec.customer.address.clone()));
        self.batch.dirty_threads.insert(thread);
    }

    pub(super) fn customer_message(
        &mut self,
        now: Now,
        token: &TokenHash,
        text: String,
    ) -> Result<Reply, Rejection> {
        let thread = self.thread_of(token)?;
        let text = self.message_text(&text)?;
        if !self.work.threads.get(&thread).is_some_and(|t| t.rec.open) {
            return Err(Rejection::invalid_state("this chat has ended"));
        }
        self.room_in_thread(thread)?;
        self.customer_rate(now, thread)?;
        self.append_message(now, thread, Sender::Customer, text, false);
        Ok(Reply::Done)
    }

    /// The customer left: abandoned while waiting, `CustomerEnded` while in process.
    pub(super) fn customer_left(&mut self, now: Now, conv: Uuid) -> Result<(), Rejection> {
        let c = self.conv(conv)?;
        let agent = c.agent.clone();
        match c.status {
            Status::InQueue | Status::Offered => {
                self.dequeue(conv);
                self.event(now, conv, EventKind::Abandoned, agent.as_deref(), None);
                self.close_segment(
                    now,
                    conv,
                    Status::Abandoned,
                    DisconnectReason::CustomerAbandoned,
                );
            }
            Status::InProcess => {
                self.close_segment(now, conv, Status::WrapUp, DisconnectReason::CustomerEnded);
                self.event(
                    now,
                    conv,
                    EventKind::Ended,
                    agent.as_deref(),
                    Some("customer left".into()),
                );
            }
            _ => {
                return Err(Rejection::invalid_state(format!(
                    "conversation {conv} has already ended"
                )));
            }
        }
        self.close_thread_of(conv);
        Ok(())
    }

    pub(super) fn customer_end(&mut self, now: Now, token: &TokenHash) -> Result<Reply, Rejection> {
        let thread = self.thread_of(token)?;
        let current = self
            .work
            .threads
            .get(&thread)
            .map(|t| t.rec.current)
            .ok_or(Rejection::Unauthorized)?;
        self.customer_left(now, current)?;
        Ok(Reply::Done)
    }

    /// A new inbound conversation from `from` (a phone number, an address or a handle) with
    /// its first customer message, if any.
    pub(super) fn inbound(
        &mut self,
        now: Now,
        medium: Medium,
        from: String,
        queue: String,
        subject: Option<String>,
        first: Option<String>,
    ) -> Result<Reply, Rejection> {
        if from.trim().is_empty() {
            return Err(Rejection::Invalid("from must not be empty".into()));
        }
        self.inbound_queue(&queue, medium.channel())?;
        let customer = Customer {
            name: from.clone(),
            address: from,
        };
        let (id, _, thread) = self.new_inbound(now, medium, queue, customer, subject, None);
        if let (Some(t), Some(text)) = (thread, first) {
            self.append_message(now, t, Sender::Customer, text, false);
        }
        Ok(Reply::Conversation(Box::new(self.view_of(id)?)))
    }

    pub(super) fn inbound_message(
        &mut self,
        now: Now,
        medium: Medium,
        from: String,
        text: String,
        queue: String,
    ) -> Result<Reply, Rejection> {
        if !matches!(medium, Medium::Sms | Medium::Social) {
            return Err(Rejection::Invalid("medium must be sms or social".into()));
        }
        let text = self.message_text(&text)?;
        if from.trim().is_empty() {
            return Err(Rejection::Invalid("from must not be empty".into()));
        }
        if let Some(&t) = self.work.open_threads.get(&(medium, from.clone())) {
            if self.work.threads.contains_key(&t) {
                self.room_in_thread(t)?;
                self.append_message(now, t, Sender::Customer, text, false);
                let current = self
                    .work
                    .threads
                    .get(&t)
                    .map(|t| t.rec.current)
                    .unwrap_or_default();
                return Ok(Reply::Conversation(Box::new(self.view_of(current)?)));
            }
        }
        self.inbound(now, medium, from, queue, None, Some(text))
    }

    pub(super) fn inbound_email(
        &mut self,
        now: Now,
        from: String,
        subject: String,
        text: String,
        queue: String,
    ) -> Result<Reply, Rejection> {
        let max = self.policy.limits.max_email_bytes;
        if subject.len() + text.len() > max {
            return Err(Rejection::TooLarge(format!(
                "subject and text are larger than {max} bytes (limits.max_email_bytes)"
            )));
        }
        self.inbound(now, Medium::Email, from, queue, Some(subject), Some(text))
    }

    pub(super) fn inbound_call(
        &mut self,
        now: Now,
        from: String,
        queue: String,
    ) -> Result<Reply, Rejection> {
        self.inbound(now, Medium::Voice, from, queue, None, None)
    }

    pub(super) fn hangup(&mut self, now: Now, conv: Uuid) -> Result<Reply, Rejection> {
        if self.conv(conv)?.medium != Medium::Voice {
            return Err(Rejection::Invalid(format!(
                "conversation {conv} is not a call"
            )));
        }
        self.customer_left(now, conv)?;
        Ok(Reply::Conversation(Box::new(self.view_of(conv)?)))
    }

    /// Result of one webhook delivery attempt: done, or retried with exponential backoff.
    pub(super) fn outbox_attempt(
        &mut self,
        now: Now,
        message: Uuid,
        delivered: bool,
        error: Option<String>,
    ) -> Result<Reply, Rejection> {
        let Some(mut item) = self.work.outbox.remove(&message) else {
            return Ok(Reply::Done);
        };
        item.attempts += 1;
        let max = self.policy.outbound.max_attempts;
        let outcome = if delivered {
            Some(Delivery::Delivered)
        } else if item.attempts >= max {
            Some(Delivery::Failed)
        } else {
            None
        };
        match outcome {
            Some(state) => {
                self.batch.writes.push(Write::OutboxDone { message });
                self.wheel.cancel(&Timer::Outbox(message));
                self.set_delivery(item.thread_id, message, state);
                let _ = error;
            }
            None => {
                let retry = &self.policy.outbound;
                let delay = retry
                    .initial_backoff
                    .saturating_mul(1u32 << item.attempts.min(20))
                    .min(retry.max_backoff);
                item.next_attempt_at = self.arm(Timer::Outbox(message), now.after(delay));
                self.batch
                    .writes
                    .push(Write::Outbox(Box::new(item.clone())));
                self.work.outbox.insert(message, item);
            }
        }
        Ok(Reply::Done)
    }

    /// Records a reply's delivery state and shows it on the agent's panel (a `message` frame
    /// with the same id).
    fn set_delivery(&mut self, thread: Uuid, message: Uuid, state: Delivery) {
        let Some(t) = self.work.threads.get_mut(&thread) else {
            return;
        };
        let Some((seq, m)) = t
            .messages
            .iter_mut()
            .enumerate()
            .find(|(_, m)| m.id == message)
        else {
            return;
        };
        m.delivery = Some(state);
        let msg = m.clone();
        let current = t.rec.current;
        self.batch.writes.push(Write::Message {
            thread,
            seq: seq as u32,
            message: msg.clone(),
        });
        if let Some(agent) = self
            .work
            .conversations
            .get(&current)
            .and_then(|c| c.agent.clone())
        {
            self.batch.effects.push_back(Effect::Panel {
                agent,
                event: PanelEvent::Message {
                    conversation_id: current,
                    message: MessageView::of(&msg),
                },
            });
        }
    }

    /// An outbox item's retry time came.
    pub(super) fn outbox_due(&mut self, _now: Now, message: Uuid) {
        if let Some(item) = self.work.outbox.get(&message) {
            self.batch
                .effects
                .push_back(Effect::Deliver(Box::new(item.clone())));
        }
    }
}
