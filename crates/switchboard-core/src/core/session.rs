//! Core layer: user sessions (docs/sessions.md) — login and takeover, panel sockets, connection
//! loss, resume, the grace deadline with the per-channel loss policy (docs/policy.md), logout,
//! presence.

use super::command::{LossCause, Principal, Rejection, Reply};
use super::effect::{Effect, Write};
use super::model::{
    AgentId, DisconnectReason, EventKind, Presence, Role, Session, SessionState, Status, TokenHash,
};
use super::time::{Now, Timestamp};
use super::view::{AlertKind, PanelEvent};
use super::{Core, SUPERVISOR_SESSION, SessionRt, Timer, TokenOwner};
use crate::policy::Channel;
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

impl Core {
    /// Who a token belongs to, if it is live.
    pub(super) fn principal(&self, token: &TokenHash, _now: Now) -> Result<Principal, Rejection> {
        match self.auth.tokens.get(token) {
            Some(TokenOwner::Session(id)) => {
                let s = self.auth.sessions.get(id).ok_or(Rejection::Unauthorized)?;
                Ok(match s.rec.role {
                    Role::Agent => Principal::Agent {
                        agent: s.rec.user.clone(),
                        session: s.rec.id,
                    },
                    Role::Supervisor => Principal::Supervisor {
                        supervisor: s.rec.user.clone(),
                        session: s.rec.id,
                    },
                })
            }
            Some(TokenOwner::Thread(t)) => {
                let th = self.work.threads.get(t).ok_or(Rejection::Unauthorized)?;
                Ok(Principal::Customer {
                    thread: th.rec.id,
                    conversation: th.rec.current,
                })
            }
            None => Err(Rejection::Unauthorized),
        }
    }

    /// The agent and session behind an agent token.
    pub(super) fn agent_of(
        &self,
        token: &TokenHash,
        now: Now,
    ) -> Result<(AgentId, Uuid), Rejection> {
        match self.principal(token, now)? {
            Principal::Agent { agent, session } => Ok((agent, session)),
            _ => Err(Rejection::Forbidden("this needs an agent session".into())),
        }
    }

    pub(super) fn supervisor_of(&self, token: &TokenHash, now: Now) -> Result<String, Rejection> {
        match self.principal(token, now)? {
            Principal::Supervisor { supervisor, .. } => Ok(supervisor),
            _ => Err(Rejection::Forbidden(
                "this needs a supervisor session".into(),
            )),
        }
    }

    pub(super) fn login(
        &mut self,
        now: Now,
        user: String,
        role: Role,
        token: TokenHash,
    ) -> Result<Reply, Rejection> {
        if role == Role::Supervisor {
            if !self.org.supervisors.contains_key(&user) {
                return Err(Rejection::Unauthorized);
            }
            let id = self.open_session(now, &user, role, token, SUPERVISOR_SESSION);
            self.auth.tokens.insert(token, TokenOwner::Session(id));
            return Ok(Reply::LoggedIn {
                session_id: id,
                user,
                role,
            });
        }
        let Some(agent) = self.org.agents.get(&user) else {
            return Err(Rejection::Unauthorized);
        };
        let grace = self.policy.resilience.session_grace;
        let existing = agent.session.filter(|s| self.auth.sessions.contains_key(s));
        let id = match existing {
            Some(id) => {
                // Takeover: same session, new token, old token revoked, old sockets closed.
                let Some(s) = self.auth.sessions.get_mut(&id) else {
                    return Err(Rejection::Unauthorized);
                };
                self.auth.tokens.remove(&s.rec.token_hash);
                s.rec.token_hash = token;
                let sockets: Vec<u64> = std::mem::take(&mut s.sockets).into_iter().collect();
                let was_connected = s.rec.state == SessionState::Connected;
                s.rec.state = SessionState::Disconnected;
                if was_connected {
                    s.rec.disconnected_at = Some(now.ts());
                }
                // Logging in again is a sign of life: the grace period starts over.
                let deadline = now.after(grace);
                s.rec.deadline = Some(deadline.wall);
                self.batch
                    .writes
                    .push(Write::Session(Box::new(s.rec.clone())));
                for sock in &sockets {
                    self.auth.sockets.remove(sock);
                }
                if !sockets.is_empty() {
                    self.batch.effects.push_back(Effect::Panel {
                        agent: user.clone(),
                        event: PanelEvent::Session {
                            state: "ended",
                            reason: "taken_over",
                        },
                    });
                    self.batch.effects.push_back(Effect::ClosePanels {
                        sockets,
                        code: 4001,
                    });
                }
                self.arm(Timer::Grace(id), deadline);
                if was_connected {
                    // The panel moves to a new place; the phone is not affected, so calls
                    // stay up, but nothing may be offered until the new panel is attached.
                    self.withdraw_offers_of(now, &user, "agent logged in elsewhere");
                }
                id
            }
            None => {
                let id = self.open_session(now, &user, role, token, grace);
                if let Some(a) = self.org.agents.get_mut(&user) {
                    a.session = Some(id);
                    a.rec.presence = Presence::Ready;
                    a.rec.idle_since = [now.ts(); 3];
                }
                self.clear_unstable(&user);
                self.clear_alerts(&user, AlertKind::SessionLost);
                id
            }
        };
        tracing::info!(
            agent = %user,
            session = %id,
            takeover = existing.is_some(),
            "agent logged in"
        );
        self.auth.tokens.insert(token, TokenOwner::Session(id));
        self.counters.logins += 1;
        self.batch.dirty_agents.insert(user.clone());
        Ok(Reply::LoggedIn {
            session_id: id,
            user,
            role,
        })
    }

    pub(super) fn logout(&mut self, now: Now, token: &TokenHash) -> Result<Reply, Rejection> {
        match self.principal(token, now)? {
            Principal::Supervisor { session, .. } => {
                self.wheel.cancel(&Timer::Grace(session));
                if let Some(s) = self.auth.sessions.remove(&session) {
                    self.auth.tokens.remove(&s.rec.token_hash);
                    self.batch.writes.push(Write::SessionEnded {
                        id: session,
                        token_hash: s.rec.token_hash,
                    });
                }
                Ok(Reply::Done)
            }
            Principal::Agent { agent, session } => {
                let blocking = self.org.agents.get(&agent).map(|a| {
                    a.assigned
                        .iter()
                        .filter_map(|id| self.work.conversations.get(id))
                        .filter(|c| c.channel() != Channel::Email && c.status.is_assigned())
                        .count()
                });
                if let Some(n) = blocking.filter(|n| *n > 0) {
                    return Err(Rejection::conflict(
                        "conversations_open",
                        format!(
                            "{n} voice or chat conversation(s) are still open: end and complete them first"
                        ),
                    ));
                }
                self.withdraw_offers_of(now, &agent, "agent logged out");
                self.end_session(now, session, "logged_out");
                Ok(Reply::Done)
            }
            Principal::Customer { .. } => Err(Rejection::Forbidden(
                "customers end chats with /chat/end".into(),
            )),
        }
    }

    pub(super) fn attach_panel(
        &mut self,
        now: Now,
        token: &TokenHash,
        socket: u64,
    ) -> Result<Reply, Rejection> {
        let (agent, sid) = self.agent_of(token, now)?;
        let max = self.policy.limits.max_sockets_per_session;
        let Some(s) = self.auth.sessions.get_mut(&sid) else {
            return Err(Rejection::Unauthorized);
        };
        if s.sockets.len() >= max {
            return Err(Rejection::conflict(
                "too_many_sockets",
                format!(
                    "this session already has {max} panel connections (limits.max_sockets_per_session)"
                ),
            ));
        }
        s.sockets.insert(socket);
        self.auth.sockets.insert(socket, sid);
        if s.rec.state == SessionState::Disconnected {
            let was_lost = s.rec.disconnected_at.is_some();
            s.rec.state = SessionState::Connected;
            s.rec.disconnected_at = None;
            s.rec.deadline = None;
            self.batch
                .writes
                .push(Write::Session(Box::new(s.rec.clone())));
            self.wheel.cancel(&Timer::Grace(sid));
            if was_lost {
                self.counters.resumes += 1;
                tracing::info!(agent = %agent, session = %sid, "agent resumed the session");
                self.resumed(sid, &agent);
                let held = self.held_by(&agent);
                for id in held {
                    self.event(now, id, EventKind::AgentReconnected, Some(&agent), None);
                }
            }
            self.batch.dirty_agents.insert(agent.clone());
            self.batch.alloc_needed = true;
        }
        // Allocation may offer work as a consequence of this attach; the snapshot is taken
        // after it so the panel starts complete.
        self.finish_command(now);
        Ok(Reply::Snapshot(Box::new(self.snapshot(&agent))))
    }

    pub(super) fn detach_panel(&mut self, now: Now, socket: u64, cause: LossCause) {
        let Some(sid) = self.auth.sockets.remove(&socket) else {
            return;
        };
        let Some(s) = self.auth.sessions.get_mut(&sid) else {
            return;
        };
        s.sockets.remove(&socket);
        if s.sockets.is_empty() && s.rec.state == SessionState::Connected {
            self.connection_lost(now, sid, cause);
        }
    }

    /// The last panel socket of a session is gone (tab closed, network drop, heartbeat
    /// timeout: the same event for the work; only abrupt ones count as flaps). The
    /// reconnecting prompt waits for the prompt delay (docs/rescue.md#prompt-delay).
    fn connection_lost(&mut self, now: Now, sid: Uuid, cause: LossCause) {
        let deadline = now.after(self.policy.resilience.session_grace);
        if !self.auth.sessions.contains_key(&sid) {
            return;
        }
        let wall = self.arm(Timer::Grace(sid), deadline);
        let Some(s) = self.auth.sessions.get_mut(&sid) else {
            return;
        };
        s.rec.state = SessionState::Disconnected;
        s.rec.disconnected_at = Some(now.ts());
        s.rec.deadline = Some(wall);
        s.away_announced = false;
        self.batch
            .writes
            .push(Write::Session(Box::new(s.rec.clone())));
        let agent = s.rec.user.clone();
        self.counters.connection_losses += 1;
        tracing::info!(
            agent = %agent,
            session = %sid,
            cause = cause.as_str(),
            deadline = %wall.to_rfc3339(),
            "agent connection lost"
        );
        self.batch.dirty_agents.insert(agent.clone());
        let held = self.held_by(&agent);
        for id in held {
            let Some(c) = self.work.conversations.get(&id) else {
                continue;
            };
            let (status, channel) = (c.status, c.channel());
            match (status, channel) {
                (Status::Offered, _) => self.withdraw_offer(now, id, "agent connection lost"),
                (Status::InProcess, Channel::Voice) => {
                    self.event(now, id, EventKind::AgentConnectionLost, Some(&agent), None);
                    self.drop_call(now, id, &agent, DisconnectReason::AgentConnectionLost);
                }
                (Status::InProcess, Channel::Chat | Channel::Email) => {
                    self.event(now, id, EventKind::AgentConnectionLost, Some(&agent), None);
                }
                _ => {}
            }
        }
        self.note_loss(now, &agent, cause);
        self.start_prompt_delay(now, sid);
    }

    /// The grace period of a disconnected session ran out without a resume.
    pub(super) fn grace_expired(&mut self, now: Now, sid: Uuid) {
        let Some(s) = self.auth.sessions.get(&sid) else {
            return;
        };
        if s.rec.role == Role::Supervisor {
            if let Some(s) = self.auth.sessions.remove(&sid) {
                self.auth.tokens.remove(&s.rec.token_hash);
                self.batch.writes.push(Write::SessionEnded {
                    id: sid,
                    token_hash: s.rec.token_hash,
                });
            }
            return;
        }
        if s.rec.state != SessionState::Disconnected {
            return;
        }
        let deadline = s.rec.deadline.unwrap_or(now.ts());
        self.expire_session(now, sid, deadline);
    }

    /// The deadline policy for one agent session (grace expired, or released by a
    /// supervisor): chats requeued, wrap-ups completed, emails kept, the session ended.
    pub(super) fn expire_session(&mut self, now: Now, sid: Uuid, deadline: Timestamp) {
        let Some(agent) = self.auth.sessions.get(&sid).map(|s| s.rec.user.clone()) else {
            return;
        };
        let mut requeued = Vec::new();
        let held = self.held_by(&agent);
        for id in held {
            let Some(c) = self.work.conversations.get(&id) else {
                continue;
            };
            let (status, channel) = (c.status, c.channel());
            match (status, channel) {
                (Status::Offered, _) => self.withdraw_offer(now, id, "agent session lost"),
                (Status::InProcess, Channel::Chat) => {
                    if let Some(new) = self.requeue_lost_chat(now, deadline, id, &agent) {
                        tracing::info!(
                            agent = %agent,
                            conversation = %id,
                            requeued_as = %new,
                            "chat requeued (AgentSessionLost)"
                        );
                        self.reserve_for(now, new, &agent);
                        requeued.push(new);
                    }
                }
                (Status::InProcess, Channel::Email) => {
                    self.event(
                        now,
                        id,
                        EventKind::SessionLost,
                        Some(&agent),
                        Some("email stays assigned".into()),
                    );
                }
                (Status::InProcess, Channel::Voice) => {
                    // Only after a restart can a call still be up here; the agent is gone.
                    self.event(now, id, EventKind::SessionLost, Some(&agent), None);
                    self.close_segment_at(
                        deadline,
                        id,
                        Status::WrapUp,
                        DisconnectReason::AgentSessionLost,
                    );
                    self.auto_complete(now, id, &agent);
                }
                (Status::WrapUp, _) => {
                    self.event(now, id, EventKind::SessionLost, Some(&agent), None);
                    self.auto_complete(now, id, &agent);
                }
                _ => {}
            }
        }
        self.counters.sessions_lost += 1;
        tracing::info!(
            agent = %agent,
            session = %sid,
            requeued = requeued.len(),
            "agent session lost"
        );
        self.end_session(now, sid, "session_lost");
        let text = if requeued.is_empty() {
            format!(
                "{}'s session ended without a return",
                self.agent_name(&agent)
            )
        } else {
            format!(
                "{}'s session ended without a return: {} chat(s) requeued",
                self.agent_name(&agent),
                requeued.len()
            )
        };
        self.raise_alert(now, AlertKind::SessionLost, &agent, text, requeued);
    }

    /// Wrap-up finished by the system (the session ended): the work is `handled`.
    fn auto_complete(&mut self, now: Now, id: Uuid, agent: &str) {
        self.event(
            now,
            id,
            EventKind::WrapUpCompleted,
            Some(agent),
            Some("completed automatically: session ended".into()),
        );
        self.set_status(id, Status::Handled);
        self.release_closed(id);
    }

    /// Ends a session: drafts discarded, token revoked, the agent is logged out.
    pub(super) fn end_session(&mut self, now: Now, sid: Uuid, reason: &'static str) {
        let _ = now;
        self.wheel.cancel(&Timer::Grace(sid));
        self.wheel.cancel(&Timer::Prompt(sid));
        let Some(s) = self.auth.sessions.remove(&sid) else {
            return;
        };
        self.auth.tokens.remove(&s.rec.token_hash);
        if !s.drafts.is_empty() {
            self.batch
                .writes
                .push(Write::DraftsCleared { session: sid });
        }
        self.batch.writes.push(Write::SessionEnded {
            id: sid,
            token_hash: s.rec.token_hash,
        });
        let agent = s.rec.user.clone();
        if let Some(a) = self.org.agents.get_mut(&agent) {
            if a.session == Some(sid) {
                a.session = None;
            }
        }
        self.batch.effects.push_back(Effect::Panel {
            agent: agent.clone(),
            event: PanelEvent::Session {
                state: "ended",
                reason,
            },
        });
        if !s.sockets.is_empty() {
            for sock in &s.sockets {
                self.auth.sockets.remove(sock);
            }
            self.batch.effects.push_back(Effect::ClosePanels {
                sockets: s.sockets.into_iter().collect(),
                code: 4401,
            });
        }
        self.clear_alerts(&agent, AlertKind::AgentInGrace);
        self.clear_unstable(&agent);
        self.batch.dirty_agents.insert(agent);
    }

    pub(super) fn set_presence(
        &mut self,
        now: Now,
        token: &TokenHash,
        presence: Presence,
    ) -> Result<Reply, Rejection> {
        let (agent, _) = self.agent_of(token, now)?;
        self.change_presence(&agent, presence);
        self.presence_chosen(&agent, presence);
        Ok(Reply::Done)
    }

    pub(super) fn change_presence(&mut self, agent: &str, presence: Presence) {
        let Some(a) = self.org.agents.get_mut(agent) else {
            return;
        };
        if a.rec.presence != presence {
            a.rec.presence = presence;
            self.batch.effects.push_back(Effect::Panel {
                agent: agent.to_string(),
                event: PanelEvent::Presence { presence },
            });
            self.batch.dirty_agents.insert(agent.to_string());
            self.batch.alloc_needed = true;
        }
    }
}

impl Core {
    /// A new session for `user`, stored and armed to end `lasts` from now. Supervisors'
    /// sessions are connected from the start; an agent's counts as disconnected until its
    /// panel attaches.
    fn open_session(
        &mut self,
        now: Now,
        user: &str,
        role: Role,
        token: TokenHash,
        lasts: std::time::Duration,
    ) -> Uuid {
        let id = self.new_id(now);
        let state = match role {
            Role::Supervisor => SessionState::Connected,
            Role::Agent => SessionState::Disconnected,
        };
        let rec = Session {
            id,
            user: user.to_string(),
            role,
            token_hash: token,
            state,
            created_at: now.ts(),
            disconnected_at: None,
            deadline: Some(self.arm(Timer::Grace(id), now.after(lasts))),
        };
        self.batch
            .writes
            .push(Write::Session(Box::new(rec.clone())));
        self.auth.sessions.insert(
            id,
            SessionRt {
                rec,
                sockets: BTreeSet::new(),
                drafts: BTreeMap::new(),
                away_announced: false,
            },
        );
        id
    }
}
