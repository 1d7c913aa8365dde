//! Core layer: what keeps an unreliable connection from hurting customers and tells
//! supervisors about work at risk (docs/rescue.md) — the delayed reconnecting prompt, flap
//! damping, supervisor alerts, release by a supervisor, and the sticky return of a chat
//! requeued after a lost session. Alerts, flap history and sticky reservations live in
//! memory only: a restart starts them afresh.

use super::command::{LossCause, Rejection, Reply};
use super::effect::Effect;
use super::model::{AgentId, Presence, SessionState, Status, TokenHash};
use super::time::Now;
use super::view::{AlertKind, AlertView, ChatEvent, DashboardEvent};
use super::{Core, Timer};
use crate::duration::format_duration;
use crate::policy::Channel;
use crate::room::shrink_map;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use uuid::Uuid;

/// Alerts standing and chats reserved for their previous agent.
#[derive(Default)]
pub(super) struct Rescue {
    /// Standing alerts by id (ids sort in the order they were raised); at most one per
    /// agent and kind. Changed only through [`Rescue::insert`] and [`Rescue::remove`],
    /// which keep the two indexes below in step.
    alerts: BTreeMap<Uuid, AlertView>,
    /// The standing alert of each agent and kind.
    by_agent: HashMap<(AgentId, AlertKind), Uuid>,
    /// The conversations a standing `session_lost` alert waits on, to its alert: a command
    /// re-examines only the alerts of the conversations it changed, so a storm's thousands
    /// of alerts cost nothing per command.
    by_conversation: HashMap<Uuid, Uuid>,
    /// Requeued chats reserved for their previous agent (until their `Timer::Sticky`).
    pub sticky: HashMap<Uuid, AgentId>,
}

impl Rescue {
    /// Standing alerts.
    pub fn len(&self) -> usize {
        self.alerts.len()
    }

    fn insert(&mut self, alert: AlertView) {
        self.by_agent
            .insert((alert.agent.clone(), alert.kind), alert.id);
        if alert.kind == AlertKind::SessionLost {
            for c in &alert.conversations {
                self.by_conversation.insert(*c, alert.id);
            }
        }
        self.alerts.insert(alert.id, alert);
    }

    fn remove(&mut self, id: Uuid) -> Option<AlertView> {
        let alert = self.alerts.remove(&id)?;
        let key = (alert.agent.clone(), alert.kind);
        if self.by_agent.get(&key) == Some(&id) {
            self.by_agent.remove(&key);
        }
        for c in &alert.conversations {
            if self.by_conversation.get(c) == Some(&id) {
                self.by_conversation.remove(c);
            }
        }
        Some(alert)
    }

    /// Gives back the room of the maps after a storm's alerts are gone.
    pub fn shrink(&mut self) {
        shrink_map(&mut self.by_agent);
        shrink_map(&mut self.by_conversation);
        shrink_map(&mut self.sticky);
    }

    /// Room held by the maps (entries they could hold without growing).
    pub fn capacity(&self) -> usize {
        self.by_agent.capacity() + self.by_conversation.capacity() + self.sticky.capacity()
    }
}

pub(super) const UNSTABLE_TEXT: &str = "Your connection keeps dropping, so you were set to Not ready and get no new work. Choose Ready once your connection is stable.";

impl Core {
    /// Arms the prompt delay of a loss, or runs it at once when the delay is zero.
    pub(super) fn start_prompt_delay(&mut self, now: Now, sid: Uuid) {
        let delay = self.policy.resilience.reconnecting_prompt_delay;
        if delay.is_zero() {
            self.prompt_due(now, sid);
        } else {
            self.arm(Timer::Prompt(sid), now.after(delay));
        }
    }

    /// The agent has been away for the whole prompt delay: their chat customers get the
    /// reconnecting prompt (once for this loss) and see that the agent is reconnecting, and
    /// supervisors get an `agent_in_grace` alert if chats or calls are at stake.
    pub(super) fn prompt_due(&mut self, now: Now, sid: Uuid) {
        let Some(s) = self.auth.sessions.get_mut(&sid) else {
            return;
        };
        if s.rec.state != SessionState::Disconnected || s.away_announced {
            return;
        }
        s.away_announced = true;
        let agent = s.rec.user.clone();
        let mut at_stake = Vec::new();
        for id in self.held_by(&agent) {
            let Some(c) = self.work.conversations.get(&id) else {
                continue;
            };
            let (status, channel, thread) = (c.status, c.channel(), c.thread);
            let prompt = self
                .queue_cfg(&c.queue)
                .and_then(|q| q.reconnecting_prompt.clone());
            match (status, channel) {
                (Status::InProcess, Channel::Chat) => {
                    at_stake.push(id);
                    if let Some(text) = prompt {
                        self.send_prompt(now, id, text);
                    }
                    if let Some(t) = thread {
                        self.batch.effects.push_back(Effect::Chat {
                            thread: t,
                            event: ChatEvent::AgentConnection {
                                state: "reconnecting",
                            },
                        });
                    }
                }
                (Status::InProcess | Status::WrapUp, Channel::Voice) => at_stake.push(id),
                _ => {}
            }
        }
        let delay = format_duration(self.policy.resilience.reconnecting_prompt_delay);
        tracing::info!(
            agent = %agent,
            session = %sid,
            open = at_stake.len(),
            "agent still disconnected after the prompt delay ({delay})"
        );
        if !at_stake.is_empty() {
            let text = format!(
                "{} has been disconnected for {delay} with {} open conversation(s)",
                self.agent_name(&agent),
                at_stake.len()
            );
            self.raise_alert(now, AlertKind::AgentInGrace, &agent, text, at_stake);
        }
    }

    /// The agent is back: no prompt for this loss any more; customers who were told the
    /// agent is reconnecting learn that they are back.
    pub(super) fn resumed(&mut self, sid: Uuid, agent: &str) {
        self.wheel.cancel(&Timer::Prompt(sid));
        self.clear_alerts(agent, AlertKind::AgentInGrace);
        let Some(s) = self.auth.sessions.get_mut(&sid) else {
            return;
        };
        if !std::mem::take(&mut s.away_announced) {
            return;
        }
        for id in self.held_by(agent) {
            let Some(c) = self.work.conversations.get(&id) else {
                continue;
            };
            if let (Status::InProcess, Some(t)) = (c.status, c.thread) {
                self.batch.effects.push_back(Effect::Chat {
                    thread: t,
                    event: ChatEvent::AgentConnection { state: "connected" },
                });
            }
        }
    }

    /// Counts an abrupt loss; the `flap_limit`-th within `flap_window` switches the agent to
    /// `not_ready` with the `connection_unstable` banner (docs/rescue.md#flap-damping).
    pub(super) fn note_loss(&mut self, now: Now, agent: &str, cause: LossCause) {
        let limit = self.policy.resilience.flap_limit as usize;
        if limit == 0 || !cause.abrupt() {
            return;
        }
        let window = self.policy.resilience.flap_window;
        let window_ms = window.as_millis().min(u128::from(u64::MAX)) as u64;
        let Some(a) = self.org.agents.get_mut(agent) else {
            return;
        };
        a.flaps.push_back(now.mono);
        while a
            .flaps
            .front()
            .is_some_and(|t| now.mono.saturating_sub(*t) >= window_ms)
        {
            a.flaps.pop_front();
        }
        while a.flaps.len() > limit {
            a.flaps.pop_front();
        }
        if a.flaps.len() < limit {
            return;
        }
        a.flaps.clear();
        a.unstable = true;
        self.batch.dirty_agents.insert(agent.to_string());
        self.change_presence(agent, Presence::NotReady);
        let window = format_duration(window);
        tracing::info!(
            agent = %agent,
            losses = limit,
            window = %window,
            "connection unstable: agent set to not ready"
        );
        let text = format!(
            "{}'s connection dropped {limit} times within {window}: set to not ready",
            self.agent_name(agent)
        );
        let held = self.held_by(agent);
        self.raise_alert(now, AlertKind::ConnectionUnstable, agent, text, held);
    }

    /// The agent chose a presence themselves: `ready` clears the instability.
    pub(super) fn presence_chosen(&mut self, agent: &str, presence: Presence) {
        if presence != Presence::Ready {
            return;
        }
        self.clear_unstable(agent);
    }

    pub(super) fn clear_unstable(&mut self, agent: &str) {
        if let Some(a) = self.org.agents.get_mut(agent) {
            if std::mem::take(&mut a.unstable) {
                self.batch.dirty_agents.insert(agent.to_string());
            }
            a.flaps.clear();
        }
        self.clear_alerts(agent, AlertKind::ConnectionUnstable);
    }

    /// Raises an alert, replacing a standing one of the same kind for the same agent.
    pub(super) fn raise_alert(
        &mut self,
        now: Now,
        kind: AlertKind,
        agent: &str,
        text: String,
        conversations: Vec<Uuid>,
    ) {
        self.clear_alerts(agent, kind);
        let id = self.new_id(now);
        let alert = AlertView {
            id,
            kind,
            agent: agent.to_string(),
            at: now.ts(),
            text,
            conversations,
        };
        self.rescue.insert(alert.clone());
        self.batch
            .effects
            .push_back(Effect::Dashboard(DashboardEvent::Alert { alert }));
    }

    pub(super) fn clear_alerts(&mut self, agent: &str, kind: AlertKind) {
        let Some(&id) = self.rescue.by_agent.get(&(agent.to_string(), kind)) else {
            return;
        };
        self.rescue.remove(id);
        self.batch
            .effects
            .push_back(Effect::Dashboard(DashboardEvent::AlertCleared { id }));
    }

    /// A `session_lost` alert stops holding once every chat it requeued has been taken.
    /// Only the alerts of the conversations this command changed can have settled.
    pub(super) fn settle_alerts(&mut self) {
        let candidates: BTreeSet<Uuid> = self
            .batch
            .touched
            .keys()
            .filter_map(|c| self.rescue.by_conversation.get(c).copied())
            .collect();
        for id in candidates {
            let settled = self
                .rescue
                .alerts
                .get(&id)
                .is_some_and(|a| self.alert_settled(a));
            if settled {
                self.rescue.remove(id);
                self.batch
                    .effects
                    .push_back(Effect::Dashboard(DashboardEvent::AlertCleared { id }));
            }
        }
        #[cfg(debug_assertions)]
        self.check_alert_index();
    }

    /// Every chat of a `session_lost` alert has been taken (or is no longer in memory).
    fn alert_settled(&self, a: &AlertView) -> bool {
        a.kind == AlertKind::SessionLost
            && !a.conversations.is_empty()
            && a.conversations.iter().all(|id| {
                self.work
                    .conversations
                    .get(id)
                    .is_none_or(|c| !matches!(c.status, Status::InQueue | Status::Offered))
            })
    }

    /// Debug builds: the indexes agree with the alerts, and no alert that has settled is
    /// still standing (a change of a conversation that bypassed the index would show here).
    #[cfg(debug_assertions)]
    fn check_alert_index(&self) {
        let r = &self.rescue;
        assert_eq!(
            r.by_agent.len(),
            r.alerts.len(),
            "one alert per agent and kind"
        );
        for a in r.alerts.values() {
            assert_eq!(r.by_agent.get(&(a.agent.clone(), a.kind)), Some(&a.id));
            assert!(
                !self.alert_settled(a),
                "alert {} settled but standing",
                a.id
            );
            if a.kind == AlertKind::SessionLost {
                for c in &a.conversations {
                    assert_eq!(r.by_conversation.get(c), Some(&a.id), "conversation {c}");
                }
            }
        }
        for (c, id) in &r.by_conversation {
            assert!(
                r.alerts
                    .get(id)
                    .is_some_and(|a| a.conversations.contains(c)),
                "index entry {c} → {id} without its alert"
            );
        }
    }

    /// The standing alerts, oldest first.
    pub fn alert_views(&self) -> Vec<AlertView> {
        self.rescue.alerts.values().cloned().collect()
    }

    pub(super) fn alerts(&self, token: &TokenHash, now: Now) -> Result<Reply, Rejection> {
        self.supervisor_of(token, now)?;
        Ok(Reply::Alerts(self.alert_views()))
    }

    /// `POST /agents/{id}/release`: the session ends now, as if its grace period had just
    /// run out (docs/rescue.md#release).
    pub(super) fn release(
        &mut self,
        now: Now,
        token: &TokenHash,
        agent: &str,
    ) -> Result<Reply, Rejection> {
        let supervisor = self.supervisor_of(token, now)?;
        let Some(a) = self.org.agents.get(agent) else {
            return Err(Rejection::NotFound(format!("no agent {agent}")));
        };
        let Some(sid) = a.session.filter(|s| self.auth.sessions.contains_key(s)) else {
            return Err(Rejection::invalid_state(format!(
                "agent {agent} has no session to release"
            )));
        };
        tracing::info!(
            agent = %agent,
            session = %sid,
            supervisor = %supervisor,
            "agent released by a supervisor"
        );
        self.expire_session(now, sid, now.ts());
        Ok(Reply::Done)
    }

    /// Reserves a requeued chat for its previous agent for the queue's `sticky_agent`.
    pub(super) fn reserve_for(&mut self, now: Now, conv: Uuid, agent: &str) {
        let Some(c) = self.work.conversations.get(&conv) else {
            return;
        };
        let sticky = self
            .queue_cfg(&c.queue)
            .map(|q| q.sticky_agent)
            .unwrap_or_default();
        if sticky.is_zero() {
            return;
        }
        self.rescue.sticky.insert(conv, agent.to_string());
        self.arm(Timer::Sticky(conv), now.after(sticky));
    }

    /// The reservation of a requeued chat ran out: anyone may be offered it now.
    pub(super) fn sticky_expired(&mut self, conv: Uuid) {
        if self.rescue.sticky.remove(&conv).is_some() {
            self.batch.alloc_needed = true;
        }
    }

    /// The only agent a waiting conversation may be offered to automatically, while it is
    /// reserved for them and they have not declined it.
    pub(super) fn reserved_for(&self, conv: Uuid) -> Option<&AgentId> {
        let agent = self.rescue.sticky.get(&conv)?;
        let declined = self
            .work
            .conversations
            .get(&conv)
            .is_some_and(|c| c.declined_by.contains(agent));
        (!declined).then_some(agent)
    }
}
