//! Core layer: read-only views of the live state — the agent snapshot, Dashboard rows,
//! conversation views with transcripts.

use super::command::Rejection;
use super::model::{Conversation, Presence, SessionState, Status};
use super::view::{
    AgentSnapshot, AgentView, Capabilities, ConversationView, DashboardEvent, QueueView,
    SessionRef, SessionSummary, SipSummary,
};
use super::{AgentRt, Core, QueueRt};
use uuid::Uuid;

impl Core {
    /// A conversation's view; with `transcript`, its messages too (agent-facing).
    pub(super) fn conversation_view(&self, c: &Conversation, transcript: bool) -> ConversationView {
        let mut v = ConversationView::with_timeline(c, self.timeline(&c.id));
        if transcript {
            v.messages = Some(
                c.thread
                    .and_then(|t| self.work.threads.get(&t))
                    .map(|t| self.recent_messages(t))
                    .unwrap_or_default(),
            );
        }
        v
    }

    pub(super) fn view_of(&self, id: Uuid) -> Result<ConversationView, Rejection> {
        Ok(self.conversation_view(self.conv(id)?, true))
    }

    /// Every conversation assigned or offered to the agent and not handled, with transcripts.
    pub(super) fn snapshot(&self, agent: &str) -> AgentSnapshot {
        let Some(a) = self.org.agents.get(agent) else {
            return AgentSnapshot {
                session: SessionRef {
                    id: Uuid::nil(),
                    state: SessionState::Disconnected,
                    agent_id: agent.into(),
                },
                presence: Presence::NotReady,
                capabilities: Capabilities::default(),
                banners: Vec::new(),
                conversations: Vec::new(),
                drafts: Default::default(),
            };
        };
        let session = a.session.and_then(|s| self.auth.sessions.get(&s));
        let mut conversations: Vec<ConversationView> = self
            .work
            .conversations
            .values()
            .filter(|c| c.agent.as_deref() == Some(agent) && c.status != Status::Handled)
            .filter(|c| c.status != Status::Abandoned)
            .map(|c| self.conversation_view(c, true))
            .collect();
        conversations.sort_by_key(|c| c.id);
        AgentSnapshot {
            session: SessionRef {
                id: session.map(|s| s.rec.id).unwrap_or_default(),
                state: session
                    .map(|s| s.rec.state)
                    .unwrap_or(SessionState::Disconnected),
                agent_id: agent.into(),
            },
            presence: a.rec.presence,
            capabilities: self.capabilities(a),
            banners: self.banners(a),
            conversations,
            drafts: session.map(|s| s.drafts.clone()).unwrap_or_default(),
        }
    }

    pub(super) fn agent_view(&self, a: &AgentRt) -> AgentView {
        let session = a
            .session
            .and_then(|s| self.auth.sessions.get(&s))
            .map(|s| SessionSummary {
                id: s.rec.id,
                state: s.rec.state,
                disconnected_at: s.rec.disconnected_at,
                deadline: s.rec.deadline,
            });
        // Open work is what the agent holds: counted from its own index, not by a scan.
        let open = a
            .assigned
            .iter()
            .filter_map(|id| self.work.conversations.get(id))
            .filter(|c| c.agent.as_deref() == Some(a.rec.id.as_str()) && !c.status.is_closed())
            .count() as u32;
        AgentView {
            agent_id: a.rec.id.clone(),
            name: match a.configured_queues {
                Some(_) => a.name.clone(),
                None => a.rec.id.clone(),
            },
            queues: a.configured_queues.clone().unwrap_or_default(),
            // Logged out is never "ready".
            presence: if session.is_some() {
                a.rec.presence
            } else {
                Presence::NotReady
            },
            session,
            capabilities: self.capabilities(a),
            banners: self.banners(a),
            sip: SipSummary {
                registered: !a.rec.bindings.is_empty(),
                expires_at: a.rec.bindings.iter().map(|b| b.expires_at).max(),
            },
            open_conversations: open,
        }
    }

    pub(super) fn agent_views(&self) -> Vec<AgentView> {
        self.policy
            .agents
            .iter()
            .filter_map(|c| self.org.agents.get(&c.id))
            .map(|a| self.agent_view(a))
            .collect()
    }

    pub(super) fn queue_view(&self, q: &QueueRt) -> QueueView {
        let oldest = q
            .waiting
            .iter()
            .filter_map(|(_, id)| self.work.conversations.get(id))
            .map(|c| c.queue_arrival_time)
            .min();
        QueueView {
            id: q.cfg.id.clone(),
            name: q.cfg.name.clone(),
            channel: q.cfg.channel,
            waiting: q.waiting.len() as u32,
            oldest_arrival: oldest,
        }
    }

    pub(super) fn queue_views(&self) -> Vec<QueueView> {
        self.org
            .queues
            .values()
            .map(|q| self.queue_view(q))
            .collect()
    }

    /// Snapshot for a new Dashboard socket.
    pub fn dashboard_snapshot(&self) -> DashboardEvent {
        DashboardEvent::Snapshot {
            agents: self.agent_views(),
            queues: self.queue_views(),
            alerts: self.alert_views(),
        }
    }
}
