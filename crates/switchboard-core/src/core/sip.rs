//! Core layer: SIP registration state (docs/sip.md) — an agent's bindings with absolute expiry
//! as timing-wheel deadlines, voice capability, the `sip_registration_lost` banner, and what a
//! lost registration does to calls and offers. The protocol itself lives in `crate::sip`.

use super::command::{BindingUpdate, Rejection, Reply};
use super::model::{Binding, DisconnectReason, Status};
use super::time::Now;
use super::{Core, Timer};
use crate::policy::Channel;
use uuid::Uuid;

impl Core {
    pub(super) fn sip_register(
        &mut self,
        now: Now,
        agent: &str,
        update: BindingUpdate,
    ) -> Result<Reply, Rejection> {
        if !self.org.agents.contains_key(agent) {
            return Err(Rejection::NotFound(format!("no agent {agent:?}")));
        }
        let had = self
            .org
            .agents
            .get(agent)
            .is_some_and(|a| !a.rec.bindings.is_empty());
        match update {
            BindingUpdate::Fetch => {}
            BindingUpdate::RemoveAll => {
                let contacts: Vec<String> = self
                    .org
                    .agents
                    .get(agent)
                    .map(|a| a.rec.bindings.iter().map(|b| b.contact.clone()).collect())
                    .unwrap_or_default();
                for c in contacts {
                    self.remove_binding(agent, &c);
                }
            }
            BindingUpdate::Set(list) => {
                let max = self.policy.limits.max_bindings_per_agent;
                let mut after: Vec<&str> = self
                    .org
                    .agents
                    .get(agent)
                    .map(|a| a.rec.bindings.iter().map(|b| b.contact.as_str()).collect())
                    .unwrap_or_default();
                for (contact, secs) in &list {
                    if *secs == 0 {
                        after.retain(|c| c != contact);
                    } else if !after.contains(&contact.as_str()) {
                        after.push(contact);
                    }
                }
                if after.len() > max {
                    return Err(Rejection::conflict(
                        "too_many_bindings",
                        format!("at most {max} contacts per agent (sip.max_bindings_per_agent)"),
                    ));
                }
                for (contact, secs) in list {
                    if secs == 0 {
                        self.remove_binding(agent, &contact);
                        continue;
                    }
                    let expires_at = self.arm(
                        Timer::Binding(agent.to_string(), contact.clone()),
                        now.after(std::time::Duration::from_secs(u64::from(secs))),
                    );
                    if let Some(a) = self.org.agents.get_mut(agent) {
                        match a.rec.bindings.iter_mut().find(|b| b.contact == contact) {
                            Some(b) => b.expires_at = expires_at,
                            None => a.rec.bindings.push(Binding {
                                contact,
                                expires_at,
                            }),
                        }
                    }
                }
            }
        }
        self.batch.dirty_agents.insert(agent.to_string());
        let has = self
            .org
            .agents
            .get(agent)
            .is_some_and(|a| !a.rec.bindings.is_empty());
        if has && !had {
            if let Some(a) = self.org.agents.get_mut(agent) {
                if a.rec.sip_lost {
                    tracing::info!(agent = %agent, "SIP registration restored");
                }
                a.rec.sip_lost = false;
            }
            self.batch.alloc_needed = true;
        } else if had && !has {
            self.registration_lost(now, agent);
        }
        let list = self
            .org
            .agents
            .get(agent)
            .map(|a| {
                a.rec
                    .bindings
                    .iter()
                    .map(|b| {
                        let left = (b.expires_at.0 - now.wall).max(0) as u64;
                        (b.contact.clone(), left.div_ceil(1000) as u32)
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Reply::Bindings(list))
    }

    fn remove_binding(&mut self, agent: &str, contact: &str) {
        self.wheel
            .cancel(&Timer::Binding(agent.to_string(), contact.to_string()));
        if let Some(a) = self.org.agents.get_mut(agent) {
            a.rec.bindings.retain(|b| b.contact != contact);
        }
    }

    pub(super) fn binding_expired(&mut self, now: Now, agent: &str, contact: &str) {
        let had = self
            .org
            .agents
            .get(agent)
            .is_some_and(|a| !a.rec.bindings.is_empty());
        self.remove_binding(agent, contact);
        self.batch.dirty_agents.insert(agent.to_string());
        let has = self
            .org
            .agents
            .get(agent)
            .is_some_and(|a| !a.rec.bindings.is_empty());
        if had && !has {
            self.registration_lost(now, agent);
        }
    }

    /// The agent's last binding is gone: calling off, banner on, calls dropped, voice offers
    /// withdrawn.
    fn registration_lost(&mut self, now: Now, agent: &str) {
        self.counters.sip_registrations_lost += 1;
        tracing::info!(agent = %agent, "SIP registration lost");
        if let Some(a) = self.org.agents.get_mut(agent) {
            a.rec.sip_lost = true;
        }
        self.batch.dirty_agents.insert(agent.to_string());
        let voice: Vec<(Uuid, Status)> = self
            .org
            .agents
            .get(agent)
            .map(|a| {
                a.assigned
                    .iter()
                    .filter_map(|id| self.work.conversations.get(id))
                    .filter(|c| c.channel() == Channel::Voice)
                    .map(|c| (c.id, c.status))
                    .collect()
            })
            .unwrap_or_default();
        for (id, status) in voice {
            match status {
                Status::Offered => self.withdraw_offer(now, id, "SIP registration lost"),
                Status::InProcess => {
                    self.drop_call(now, id, agent, DisconnectReason::SipRegistrationLost);
                }
                _ => {}
            }
        }
    }
}
