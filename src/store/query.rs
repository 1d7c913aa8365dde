//! Store layer: the filters of the conversation search, the same on both backends.

use crate::config::Channel;
use crate::core::model::{Conversation, Status};
use uuid::Uuid;

/// Filters of the conversation search (`GET /conversations`); `None` matches everything.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchQuery {
    pub status: Option<Status>,
    pub queue: Option<String>,
    /// Matches the conversation's current `agent` field.
    pub agent: Option<String>,
    pub channel: Option<Channel>,
    /// Only conversations older than this one (ids sort by creation): the next page.
    pub before: Option<Uuid>,
    /// At most this many results; capped at [`SearchQuery::MAX_LIMIT`]; `0` finds nothing.
    pub limit: usize,
}

impl SearchQuery {
    pub const DEFAULT_LIMIT: usize = 100;
    pub const MAX_LIMIT: usize = 1000;

    pub(super) fn matches(&self, c: &Conversation) -> bool {
        self.status.is_none_or(|s| c.status == s)
            && self.queue.as_deref().is_none_or(|q| c.queue == q)
            && self
                .agent
                .as_deref()
                .is_none_or(|a| c.agent.as_deref() == Some(a))
            && self.channel.is_none_or(|ch| c.channel() == ch)
    }
}

impl Default for SearchQuery {
    fn default() -> Self {
        SearchQuery {
            status: None,
            queue: None,
            agent: None,
            channel: None,
            before: None,
            limit: Self::DEFAULT_LIMIT,
        }
    }
}
