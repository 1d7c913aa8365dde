//! Core layer: who may read what of the stored history. The adapters fetch the records; the
//! rules of access are decided here, with the rest of the domain's rules.

use super::command::{Principal, Rejection};
use super::model::AgentId;

/// Someone allowed to read conversation history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryReader {
    /// Reads every conversation.
    Supervisor,
    /// Reads the groups this agent worked in.
    Agent(AgentId),
}

impl HistoryReader {
    /// Supervisors and agents may read history; customers may not.
    pub fn of(principal: Principal) -> Result<HistoryReader, Rejection> {
        match principal {
            Principal::Supervisor { .. } => Ok(HistoryReader::Supervisor),
            Principal::Agent { agent, .. } => Ok(HistoryReader::Agent(agent)),
            Principal::Customer { .. } => Err(Rejection::Forbidden(
                "conversation history is for supervisors and the agents who worked on it".into(),
            )),
        }
    }

    /// The agent whose work limits what this reader sees (`None`: everything).
    pub fn agent(&self) -> Option<&str> {
        match self {
            HistoryReader::Supervisor => None,
            HistoryReader::Agent(a) => Some(a),
        }
    }

    /// Searching all history is for supervisors.
    pub fn may_search(&self) -> Result<(), Rejection> {
        match self {
            HistoryReader::Supervisor => Ok(()),
            HistoryReader::Agent(_) => {
                Err(Rejection::Forbidden("search is for supervisors".into()))
            }
        }
    }

    /// Whether a group may be read, given whether this reader's agent worked in it.
    pub fn may_read_group(&self, worked_in_group: bool) -> Result<(), Rejection> {
        match self {
            HistoryReader::Supervisor => Ok(()),
            HistoryReader::Agent(_) if worked_in_group => Ok(()),
            HistoryReader::Agent(_) => Err(Rejection::Forbidden(
                "you did not work on any conversation of this group".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn customers_may_not_read_history() {
        let customer = Principal::Customer {
            thread: Uuid::nil(),
            conversation: Uuid::nil(),
        };
        assert!(matches!(
            HistoryReader::of(customer),
            Err(Rejection::Forbidden(_))
        ));
    }

    #[test]
    fn agents_read_only_groups_they_worked_in_and_supervisors_read_all() {
        let agent = HistoryReader::of(Principal::Agent {
            agent: "alice".into(),
            session: Uuid::nil(),
        })
        .unwrap();
        assert!(agent.may_read_group(true).is_ok());
        assert!(agent.may_read_group(false).is_err());
        let sup = HistoryReader::of(Principal::Supervisor {
            supervisor: "sam".into(),
            session: Uuid::nil(),
        })
        .unwrap();
        assert!(sup.may_read_group(false).is_ok());
        assert!(sup.may_search().is_ok());
        assert!(agent.may_search().is_err());
        assert_eq!(sup.agent(), None);
    }
}
