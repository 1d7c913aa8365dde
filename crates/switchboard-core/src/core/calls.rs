//! Core layer: real phone calls (docs/sip-calls.md). The core is a stateful SIP proxy for
//! calls: an INVITE from a trunk queues a voice conversation; an offer rings the agent's
//! registered phones; the phone's answer is the accept; BYEs map to the disconnect reasons;
//! whatever ends a call on the core's side (panel end, connection or registration lost)
//! hangs up both phones. After every command the calls are brought in line with their
//! conversations ([`Core::sync_calls`]), so routing rules stay where they are and this module
//! only turns their outcome into SIP. Transactions are the pure machines of
//! `crate::sip::transaction`, their timers deadlines in the core's wheel; messages go out as
//! [`Effect::SipSend`]. No I/O, no clock.

use super::command::{Rejection, Reply};
use super::effect::{Effect, Write};
use super::model::{Dialog, DisconnectReason, EventKind, Medium, Status};
use super::time::Now;
use super::{Core, Timer};
use crate::sip::message::{Request, Response, SipMessage, response_to};
use crate::sip::proxy;
use crate::sip::transaction::{Action, ClientTx, ServerTx, TimerName, TimerValues};
use std::collections::HashMap;
use std::net::SocketAddr;
use uuid::Uuid;

const ALL_TIMERS: [TimerName; 11] = [
    TimerName::A,
    TimerName::B,
    TimerName::C,
    TimerName::D,
    TimerName::E,
    TimerName::F,
    TimerName::G,
    TimerName::H,
    TimerName::I,
    TimerName::J,
    TimerName::K,
];

/// Most transactions alive at once (a bound on what strangers can make the proxy keep).
const MAX_TRANSACTIONS: usize = 65_536;

/// Who gets a client transaction's responses.
#[derive(Debug, Clone, Copy)]
enum Owner {
    /// An INVITE ringing a phone for this call.
    Branch(Uuid),
    /// A request relayed for a server transaction: responses go back through it.
    Relay(u64),
    /// A request of our own (CANCEL, BYE): responses are only absorbed.
    Own,
}

enum Machine {
    Client(ClientTx, Owner),
    Server(ServerTx),
}

struct Tx {
    machine: Machine,
    peer: SocketAddr,
    /// The key it is found under (client: our branch; server: branch, source, method).
    key: TxKey,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum TxKey {
    Client(String),
    Server(String, SocketAddr, String),
}

/// One ringing phone contact.
struct Branch {
    tx: u64,
    /// The INVITE as sent (for its CANCEL).
    sent: Request,
    done: bool,
}

/// A call the proxy holds: queued, ringing or answered.
struct Call {
    /// The caller's INVITE as received.
    invite: Request,
    caller: SocketAddr,
    /// The caller's INVITE server transaction, until it has a final response.
    server: Option<u64>,
    /// The agent whose phones ring, and the branches.
    ringing: Option<(String, Vec<Branch>)>,
    dialog: Option<Dialog>,
}

/// The proxy's state inside the core.
#[derive(Default)]
pub(super) struct Calls {
    local: Option<SocketAddr>,
    next_tx: u64,
    txs: HashMap<u64, Tx>,
    keys: HashMap<TxKey, u64>,
    calls: HashMap<Uuid, Call>,
    by_call_id: HashMap<String, Uuid>,
    /// Callbacks placed by third-party call control, by conversation.
    dials: HashMap<Uuid, Dial>,
    /// Branches no longer wanted: their INVITE transaction → whether a CANCEL was sent.
    stale: HashMap<u64, (Request, bool)>,
    timers: TimerValues,
}

impl Calls {
    /// Whether this conversation is a SIP call (answered on the phone, not on the panel).
    pub(super) fn is_call(&self, conv: &Uuid) -> bool {
        self.calls.contains_key(conv) || self.dials.contains_key(conv)
    }

    /// Calls by state, for the Dashboard: (queued, ringing, talking).
    pub(super) fn counts(&self) -> (u64, u64, u64) {
        let mut c = (0, 0, 0);
        for call in self.calls.values() {
            if call.dialog.is_some() {
                c.2 += 1;
            } else if call.ringing.is_some() {
                c.1 += 1;
            } else {
                c.0 += 1;
            }
        }
        for dial in self.dials.values() {
            if dial.customer.is_some() {
                c.2 += 1;
            } else {
                c.1 += 1;
            }
        }
        c
    }
}

fn server_key(req: &Request, from: SocketAddr, method: &str) -> Option<TxKey> {
    let branch = proxy::top_branch(&req.headers)?;
    Some(TxKey::Server(branch, from, method.to_owned()))
}

impl Core {
    pub(super) fn sip_listening(&mut self, addr: SocketAddr) -> Result<Reply, Rejection> {
        self.calls.local = Some(addr);
        Ok(Reply::Done)
    }

    /// Dialogs read back at boot: answered calls go on.
    pub(super) fn restore_dialogs(&mut self, dialogs: Vec<Dialog>) {
        for d in dialogs {
            let invite = Request {
                method: "INVITE".into(),
                uri: d.phone_target.clone(),
                headers: Vec::new(),
                body: Vec::new(),
            };
            self.calls
                .by_call_id
                .insert(d.call_id.clone(), d.conversation);
            self.calls.calls.insert(
                d.conversation,
                Call {
                    invite,
                    caller: d.caller_addr,
                    server: None,
                    ringing: None,
                    dialog: Some(d),
                },
            );
        }
    }

    fn send(&mut self, to: SocketAddr, bytes: Vec<u8>) {
        self.batch.effects.push_back(Effect::SipSend { to, bytes });
    }

    fn new_branch_id(&mut self) -> String {
        use rand::RngCore;
        format!("{}{:016x}", proxy::COOKIE, self.ids.rng.next_u64())
    }

    /// Starts the server transaction of a request received from `from` (keyed by its top
    /// branch and `method`); `None` if it has no branch or the transaction table is full.
    fn server_tx(&mut self, req: &Request, from: SocketAddr, method: &str) -> Option<u64> {
        let key = server_key(req, from, method)?;
        self.add_tx(
            Machine::Server(ServerTx::new(req, self.calls.timers)),
            from,
            key,
        )
    }

    fn add_tx(&mut self, machine: Machine, peer: SocketAddr, key: TxKey) -> Option<u64> {
        if self.calls.txs.len() >= MAX_TRANSACTIONS {
            return None;
        }
        self.calls.next_tx += 1;
        let id = self.calls.next_tx;
        self.calls.keys.insert(key.clone(), id);
        self.calls.txs.insert(id, Tx { machine, peer, key });
        Some(id)
    }

    /// Starts a client transaction for `req` to `peer`.
    fn client(&mut self, now: Now, req: Request, peer: SocketAddr, owner: Owner) -> Option<u64> {
        let branch = proxy::top_branch(&req.headers)?;
        let proxy_branch = matches!(owner, Owner::Branch(_));
        let (tx, actions) = ClientTx::start(req, now.mono, self.calls.timers, proxy_branch);
        let id = self.add_tx(Machine::Client(tx, owner), peer, TxKey::Client(branch))?;
        self.run(now, id, actions);
        Some(id)
    }

    /// Sends a response through a server transaction.
    fn respond(&mut self, now: Now, tx: u64, resp: &Response) {
        let actions = match self.calls.txs.get_mut(&tx) {
            Some(Tx {
                machine: Machine::Server(s),
                ..
            }) => s.respond(resp, now.mono),
            _ => return,
        };
        self.run(now, tx, actions);
    }

    /// Carries out a transaction's actions; what is for the user is handled last.
    fn run(&mut self, now: Now, tx: u64, actions: Vec<Action>) {
        let mut up = Vec::new();
        for a in actions {
            match a {
                Action::Send(bytes) => {
                    if let Some(peer) = self.calls.txs.get(&tx).map(|t| t.peer) {
                        self.send(peer, bytes);
                    }
                }
                Action::Arm(name, at) => {
                    self.wheel.insert(at, Timer::Sip(tx, name));
                }
                Action::Disarm(name) => {
                    self.wheel.cancel(&Timer::Sip(tx, name));
                }
                other => up.push(other),
            }
        }
        let owner = match self.calls.txs.get(&tx) {
            Some(Tx {
                machine: Machine::Client(_, o),
                ..
            }) => Some(*o),
            _ => None,
        };
        for a in up {
            match a {
                Action::Terminated => self.forget_tx(tx),
                Action::Response(r) => {
                    if let Some(o) = owner {
                        self.client_response(now, tx, o, r);
                    }
                }
                Action::Timeout | Action::BranchTimeout => {
                    if let Some(o) = owner {
                        self.client_failed(now, tx, o);
                    }
                }
                _ => {}
            }
        }
    }

    fn forget_tx(&mut self, tx: u64) {
        if let Some(t) = self.calls.txs.remove(&tx) {
            if self.calls.keys.get(&t.key) == Some(&tx) {
                self.calls.keys.remove(&t.key);
            }
        }
        for name in ALL_TIMERS {
            self.wheel.cancel(&Timer::Sip(tx, name));
        }
        self.calls.stale.remove(&tx);
    }

    pub(super) fn sip_timer(&mut self, now: Now, tx: u64, name: TimerName) {
        let actions = match self.calls.txs.get_mut(&tx) {
            Some(Tx {
                machine: Machine::Client(c, _),
                ..
            }) => c.on_timer(name, now.mono),
            Some(Tx {
                machine: Machine::Server(s),
                ..
            }) => s.on_timer(name, now.mono),
            None => return,
        };
        self.run(now, tx, actions);
    }

    /// A SIP message for the proxy arrives from `from`.
    pub(super) fn sip_message(
        &mut self,
        now: Now,
        from: SocketAddr,
        msg: SipMessage,
    ) -> Result<Reply, Rejection> {
        match msg {
            SipMessage::Response(r) => self.sip_response(now, from, r),
            SipMessage::Request(r) => self.sip_request(now, from, r),
        }
        Ok(Reply::Done)
    }

    fn sip_response(&mut self, now: Now, from: SocketAddr, resp: Response) {
        let Some(branch) = proxy::top_branch(&resp.headers) else {
            return;
        };
        let is_cancel = proxy::cseq(&resp.headers).is_some_and(|(_, m)| m == "CANCEL");
        let key = if is_cancel {
            TxKey::Client(format!("{branch}/CANCEL"))
        } else {
            TxKey::Client(branch)
        };
        if let Some(&tx) = self.calls.keys.get(&key) {
            let actions = match self.calls.txs.get_mut(&tx) {
                Some(Tx {
                    machine: Machine::Client(c, _),
                    ..
                }) => c.on_response(resp, now.mono),
                _ => return,
            };
            self.run(now, tx, actions);
            return;
        }
        // A 2xx retransmitted after its transaction ended: relayed along the dialog.
        if !(200..300).contains(&resp.code) {
            return;
        }
        let call_id = resp.header("Call-ID").unwrap_or_default();
        let Some(&conv) = self.calls.by_call_id.get(call_id) else {
            return;
        };
        if self.calls.dials.contains_key(&conv) {
            self.dial_retransmitted_ok(conv, &resp);
            return;
        }
        let Some(d) = self.calls.calls.get(&conv).and_then(|c| c.dialog.clone()) else {
            return;
        };
        let to = if from == d.phone_addr {
            d.caller_addr
        } else {
            d.phone_addr
        };
        self.send(to, proxy::strip_top_via(&resp).serialize());
    }

    fn sip_request(&mut self, now: Now, from: SocketAddr, req: Request) {
        let method = req.method.clone();
        // Retransmissions, and the ACK of a non-2xx final, belong to their server transaction.
        let lookup = if method == "ACK" { "INVITE" } else { &method };
        if let Some(key) = server_key(&req, from, lookup) {
            if let Some(&tx) = self.calls.keys.get(&key) {
                let actions = match self.calls.txs.get_mut(&tx) {
                    Some(Tx {
                        machine: Machine::Server(s),
                        ..
                    }) => s.on_request(&req, now.mono),
                    _ => Vec::new(),
                };
                self.run(now, tx, actions);
                return;
            }
        }
        let to_tag = req.header("To").and_then(proxy::tag_of);
        match (method.as_str(), to_tag) {
            ("CANCEL", _) => self.caller_cancel(now, from, req),
            ("INVITE", None) => self.new_call(now, from, req),
            ("ACK", None) => {}
            (_, _) => {
                let call_id = req.header("Call-ID").unwrap_or_default();
                match self.calls.by_call_id.get(call_id).copied() {
                    Some(id) if self.calls.dials.contains_key(&id) => {
                        self.dial_request(now, from, id, req)
                    }
                    _ => self.in_dialog(now, from, req),
                }
            }
        }
    }

    /// An INVITE starting a call: trunk check, queue, limit; then queued and ringing back.
    fn new_call(&mut self, now: Now, from: SocketAddr, req: Request) {
        let call_id = req.header("Call-ID").unwrap_or_default().to_owned();
        if self.calls.by_call_id.contains_key(&call_id) {
            // A retransmission that outlived its transaction (the call is answered).
            return;
        }
        let Some(tx) = self.server_tx(&req, from, "INVITE") else {
            return;
        };
        let calls = self.policy.calls.clone();
        if !calls.is_trunk(from.ip()) {
            self.respond(now, tx, &response_to(&req, 403, "Forbidden"));
            return;
        }
        let queue = crate::sip::message::parse_sip_uri(&req.uri)
            .ok()
            .and_then(|u| u.user)
            .unwrap_or_default();
        let is_voice_queue = self
            .queue_cfg(&queue)
            .is_some_and(|q| q.channel == crate::policy::Channel::Voice);
        if !is_voice_queue {
            self.respond(now, tx, &response_to(&req, 404, "Not Found"));
            return;
        }
        let held = self.calls.calls.len() + self.calls.dials.len();
        if held >= calls.max_calls as usize || self.calls.local.is_none() {
            let busy =
                response_to(&req, 503, "Service Unavailable").with_header("Retry-After", "30");
            self.respond(now, tx, &busy);
            return;
        }
        self.respond(now, tx, &response_to(&req, 100, "Trying"));
        let from_header = req.header("From").unwrap_or_default();
        let number = proxy::user_of(from_header).unwrap_or_else(|| "unknown".into());
        let conv = match self.inbound(now, Medium::Voice, number, queue, None, None) {
            Ok(Reply::Conversation(v)) => v.id,
            _ => {
                self.respond(now, tx, &response_to(&req, 500, "Server Internal Error"));
                return;
            }
        };
        if let Some(name) = proxy::display_of(from_header) {
            if let Some(c) = self.work.conversations.get_mut(&conv) {
                c.customer.name = name;
            }
        }
        self.respond(now, tx, &response_to(&req, 180, "Ringing"));
        self.calls.by_call_id.insert(call_id, conv);
        self.calls.calls.insert(
            conv,
            Call {
                invite: req,
                caller: from,
                server: Some(tx),
                ringing: None,
                dialog: None,
            },
        );
        self.batch.touched.entry(conv).or_default();
    }

    /// The caller gives up before an answer: 200 to the CANCEL, 487 to the INVITE, abandoned.
    fn caller_cancel(&mut self, now: Now, from: SocketAddr, req: Request) {
        let invite_tx =
            server_key(&req, from, "INVITE").and_then(|k| self.calls.keys.get(&k).copied());
        let Some(tx) = self.server_tx(&req, from, "CANCEL") else {
            return;
        };
        let Some(invite_tx) = invite_tx else {
            self.respond(
                now,
                tx,
                &response_to(&req, 481, "Call/Transaction Does Not Exist"),
            );
            return;
        };
        self.respond(now, tx, &response_to(&req, 200, "OK"));
        let call_id = req.header("Call-ID").unwrap_or_default();
        let Some(&conv) = self.calls.by_call_id.get(call_id) else {
            return;
        };
        if let Some(call) = self.calls.calls.get(&conv) {
            if call.dialog.is_some() {
                return;
            }
            let resp = response_to(&call.invite, 487, "Request Terminated");
            self.respond(now, invite_tx, &resp);
        }
        if let Some(call) = self.calls.calls.get_mut(&conv) {
            call.server = None;
        }
        let _ = self.customer_left(now, conv);
        self.batch.touched.entry(conv).or_default();
    }

    /// A request inside an answered call: relayed to the other side; a BYE ends the call.
    fn in_dialog(&mut self, now: Now, from: SocketAddr, req: Request) {
        let call_id = req.header("Call-ID").unwrap_or_default();
        let conv = self.calls.by_call_id.get(call_id).copied();
        let dialog = conv.and_then(|c| self.calls.calls.get(&c).and_then(|c| c.dialog.clone()));
        let Some((conv, mut d)) = conv.zip(dialog) else {
            if req.method != "ACK" {
                if let Some(tx) = self.server_tx(&req, from, &req.method) {
                    let r = response_to(&req, 481, "Call/Transaction Does Not Exist");
                    self.respond(now, tx, &r);
                }
            }
            return;
        };
        let Some(local) = self.calls.local else {
            return;
        };
        let from_tag = req.header("From").and_then(proxy::tag_of);
        let from_caller = from_tag.is_some() && from_tag == proxy::tag_of(&d.caller_header);
        let (to, seq_slot) = if from_caller {
            (d.phone_addr, &mut d.caller_cseq)
        } else {
            (d.caller_addr, &mut d.phone_cseq)
        };
        if let Some((n, _)) = proxy::cseq(&req.headers) {
            *seq_slot = (*seq_slot).max(n);
        }
        let branch = self.new_branch_id();
        let out = proxy::forward(&req, None, local, &branch, false);
        if req.method == "ACK" {
            self.send(to, out.serialize());
            return;
        }
        let Some(server) = self.server_tx(&req, from, &req.method) else {
            return;
        };
        self.client(now, out, to, Owner::Relay(server));
        if req.method == "BYE" {
            self.end_dialog(conv);
            let c = self.work.conversations.get(&conv);
            if c.is_some_and(|c| c.status == Status::InProcess) {
                if from_caller {
                    let _ = self.customer_left(now, conv);
                } else {
                    let agent = d.agent.clone();
                    self.close_segment(now, conv, Status::WrapUp, DisconnectReason::AgentEnded);
                    self.event(
                        now,
                        conv,
                        EventKind::Ended,
                        Some(&agent),
                        Some("hung up the phone".into()),
                    );
                }
            }
        } else if let Some(call) = self.calls.calls.get_mut(&conv) {
            call.dialog = Some(d.clone());
            self.batch.writes.push(Write::Dialog(Box::new(d)));
        }
    }

    fn end_dialog(&mut self, conv: Uuid) {
        if let Some(call) = self.calls.calls.remove(&conv) {
            if let Some(d) = &call.dialog {
                self.calls.by_call_id.remove(&d.call_id);
                self.batch
                    .writes
                    .push(Write::DialogEnded { conversation: conv });
            } else if let Some(id) = call.invite.header("Call-ID") {
                self.calls.by_call_id.remove(id);
            }
        }
    }

    /// A response to a client transaction, for its owner.
    fn client_response(&mut self, now: Now, tx: u64, owner: Owner, resp: Response) {
        match owner {
            Owner::Own => {}
            Owner::Relay(server) => {
                let back = proxy::strip_top_via(&resp);
                self.respond(now, server, &back);
            }
            Owner::Branch(conv) => {
                if let Some((sent, cancelled)) = self.calls.stale.get(&tx).cloned() {
                    self.stale_branch_response(now, tx, sent, cancelled, resp);
                    return;
                }
                if self.calls.dials.contains_key(&conv) {
                    self.dial_response(now, conv, tx, resp);
                    return;
                }
                match resp.code {
                    100..=199 => {}
                    200..=299 => self.answered(now, conv, tx, resp),
                    code => {
                        let decline = code == 486 || code == 603 || code == 600;
                        self.branch_failed(now, conv, tx, decline);
                    }
                }
            }
        }
    }

    fn client_failed(&mut self, now: Now, tx: u64, owner: Owner) {
        match owner {
            Owner::Own => {}
            // The relayed request's server transaction ends by itself (Timer J or H); the
            // other side retransmits or gives up on its own.
            Owner::Relay(_) => {}
            Owner::Branch(conv) => {
                if self.calls.stale.contains_key(&tx) {
                    return;
                }
                if self.calls.dials.contains_key(&conv) {
                    self.dial_tx_failed(now, conv, tx);
                    return;
                }
                self.branch_failed(now, conv, tx, false);
            }
        }
    }

    /// A phone answered: the offer is accepted, the 200 goes to the caller, the other phones
    /// stop ringing.
    fn answered(&mut self, now: Now, conv: Uuid, tx: u64, ok: Response) {
        let Some(call) = self.calls.calls.get_mut(&conv) else {
            return;
        };
        let Some((agent, branches)) = call.ringing.take() else {
            return;
        };
        let Some(phone_addr) = self.calls.txs.get(&tx).map(|t| t.peer) else {
            return;
        };
        let offered = self
            .work
            .conversations
            .get(&conv)
            .is_some_and(|c| c.status == Status::Offered && c.agent.as_deref() == Some(&agent));
        let invite = call.invite.clone();
        let caller = call.caller;
        let server = call.server.take();
        for b in branches {
            if b.tx != tx && !b.done {
                self.cancel_branch(now, b);
            }
        }
        if !offered {
            return;
        }
        let d = Dialog {
            conversation: conv,
            agent: agent.clone(),
            call_id: invite.header("Call-ID").unwrap_or_default().to_owned(),
            caller_addr: caller,
            phone_addr,
            caller_header: invite.header("From").unwrap_or_default().to_owned(),
            phone_header: ok.header("To").unwrap_or_default().to_owned(),
            caller_target: proxy::contact_uri(&invite.headers)
                .unwrap_or_else(|| format!("sip:{}", proxy::host_port(caller))),
            phone_target: proxy::contact_uri(&ok.headers)
                .unwrap_or_else(|| format!("sip:{}", proxy::host_port(phone_addr))),
            caller_cseq: proxy::cseq(&invite.headers).map(|c| c.0).unwrap_or(1),
            phone_cseq: 0,
        };
        if let Some(call) = self.calls.calls.get_mut(&conv) {
            call.dialog = Some(d.clone());
        }
        self.batch.writes.push(Write::Dialog(Box::new(d)));
        let back = proxy::strip_top_via(&ok);
        match server {
            Some(s) => self.respond(now, s, &back),
            None => self.send(caller, back.serialize()),
        }
        self.set_status(conv, Status::InProcess);
        self.event(
            now,
            conv,
            EventKind::Accepted,
            Some(&agent),
            Some("answered on the phone".into()),
        );
    }

    /// One phone declined or failed. A decline (486/603), or the last branch failing, sends
    /// the call back to the queue (`offer_rejected`).
    fn branch_failed(&mut self, now: Now, conv: Uuid, tx: u64, decline: bool) {
        let Some(call) = self.calls.calls.get_mut(&conv) else {
            return;
        };
        let Some((agent, branches)) = call.ringing.as_mut() else {
            return;
        };
        for b in branches.iter_mut() {
            if b.tx == tx {
                b.done = true;
            }
        }
        let all_done = branches.iter().all(|b| b.done);
        let agent = agent.clone();
        if !(decline || all_done) {
            return;
        }
        let offered = self
            .work
            .conversations
            .get(&conv)
            .is_some_and(|c| c.status == Status::Offered && c.agent.as_deref() == Some(&agent));
        if offered {
            self.event(
                now,
                conv,
                EventKind::OfferRejected,
                Some(&agent),
                Some("declined on the phone".into()),
            );
            if let Some(c) = self.work.conversations.get_mut(&conv) {
                c.declined_by.push(agent);
            }
            self.enqueue(conv);
        }
    }

    fn cancel_branch(&mut self, now: Now, b: Branch) {
        let proceeding = matches!(
            self.calls.txs.get(&b.tx),
            Some(Tx { machine: Machine::Client(c, _), .. }) if c.proceeding()
        );
        let peer = self.calls.txs.get(&b.tx).map(|t| t.peer);
        if proceeding {
            if let Some(peer) = peer {
                let cancel = proxy::cancel(&b.sent);
                // CANCEL shares the INVITE's branch: it is found by its own key.
                self.own_request(now, cancel, peer, true);
            }
        }
        self.calls.stale.insert(b.tx, (b.sent, proceeding));
    }

    /// Sends a request on our own account (CANCEL, BYE): retransmitted, responses absorbed.
    fn own_request(&mut self, now: Now, req: Request, peer: SocketAddr, cancel: bool) {
        let Some(branch) = proxy::top_branch(&req.headers) else {
            return;
        };
        let key = if cancel {
            TxKey::Client(format!("{branch}/CANCEL"))
        } else {
            TxKey::Client(branch)
        };
        let (tx, actions) = ClientTx::start(req, now.mono, self.calls.timers, false);
        if let Some(id) = self.add_tx(Machine::Client(tx, Owner::Own), peer, key) {
            self.run(now, id, actions);
        }
    }

    /// A response on a branch no longer wanted: CANCEL once it rings; hang up an answer.
    fn stale_branch_response(
        &mut self,
        now: Now,
        tx: u64,
        sent: Request,
        cancelled: bool,
        resp: Response,
    ) {
        let Some(peer) = self.calls.txs.get(&tx).map(|t| t.peer) else {
            return;
        };
        match resp.code {
            100..=199 if !cancelled => {
                self.own_request(now, proxy::cancel(&sent), peer, true);
                self.calls.stale.insert(tx, (sent, true));
            }
            200..=299 => {
                let Some(local) = self.calls.local else {
                    return;
                };
                let branches = [self.new_branch_id(), self.new_branch_id()];
                if let Some([(ack, to), (bye, _)]) =
                    proxy::ack_and_bye(&resp, local, [&branches[0], &branches[1]])
                {
                    self.send(to, ack.serialize());
                    self.own_request(now, bye, to, false);
                }
            }
            _ => {}
        }
    }

    /// Rings every reachable contact of the agent's live bindings.
    fn ring(&mut self, now: Now, conv: Uuid, agent: &str) {
        let Some(local) = self.calls.local else {
            return;
        };
        let contacts: Vec<String> = self
            .org
            .agents
            .get(agent)
            .map(|a| a.rec.bindings.iter().map(|b| b.contact.clone()).collect())
            .unwrap_or_default();
        let Some(invite) = self.calls.calls.get(&conv).map(|c| c.invite.clone()) else {
            return;
        };
        let mut branches = Vec::new();
        for contact in contacts {
            let uri = crate::sip::message::parse_name_addr(&contact)
                .map(|n| n.uri)
                .unwrap_or(contact);
            let Some(addr) = proxy::uri_addr(&uri) else {
                continue;
            };
            let branch = self.new_branch_id();
            let out = proxy::forward(&invite, Some(&uri), local, &branch, true);
            if let Some(tx) = self.client(now, out.clone(), addr, Owner::Branch(conv)) {
                branches.push(Branch {
                    tx,
                    sent: out,
                    done: false,
                });
            }
        }
        if let Some(call) = self.calls.calls.get_mut(&conv) {
            call.ringing = Some((agent.to_owned(), branches));
        }
    }

    /// BYE to both sides of an answered call the core ended.
    fn hang_up_both(&mut self, now: Now, d: &Dialog) {
        let Some(local) = self.calls.local else {
            return;
        };
        let b1 = self.new_branch_id();
        let leg = proxy::Leg {
            uri: &d.caller_target,
            from: &d.phone_header,
            to: &d.caller_header,
            call_id: &d.call_id,
        };
        let to_caller = proxy::in_dialog("BYE", leg, d.phone_cseq.saturating_add(1), local, &b1);
        self.own_request(now, to_caller, d.caller_addr, false);
        let b2 = self.new_branch_id();
        let leg = proxy::Leg {
            uri: &d.phone_target,
            from: &d.caller_header,
            to: &d.phone_header,
            call_id: &d.call_id,
        };
        let to_phone = proxy::in_dialog("BYE", leg, d.caller_cseq.saturating_add(1), local, &b2);
        self.own_request(now, to_phone, d.phone_addr, false);
    }

    /// Brings the calls of the conversations this command changed in line with them.
    pub(super) fn sync_calls(&mut self, now: Now) {
        if self.calls.calls.is_empty() && self.calls.dials.is_empty() {
            return;
        }
        let ids: Vec<Uuid> = self
            .batch
            .touched
            .keys()
            .filter(|id| self.calls.calls.contains_key(id) || self.calls.dials.contains_key(id))
            .copied()
            .collect();
        for id in ids {
            if self.calls.dials.contains_key(&id) {
                self.sync_dial(now, id);
            } else {
                self.sync_call(now, id);
            }
        }
    }

    fn sync_call(&mut self, now: Now, id: Uuid) {
        let (status, agent) = match self.work.conversations.get(&id) {
            Some(c) => (c.status, c.agent.clone()),
            None => (Status::Handled, None),
        };
        let Some(call) = self.calls.calls.get_mut(&id) else {
            return;
        };
        if let Some(d) = call.dialog.clone() {
            if status != Status::InProcess {
                self.hang_up_both(now, &d);
                self.end_dialog(id);
            }
            return;
        }
        if let Some((ringing_agent, _)) = &call.ringing {
            let still = status == Status::Offered && agent.as_deref() == Some(ringing_agent);
            if still {
                return;
            }
            if let Some((_, branches)) = call.ringing.take() {
                for b in branches {
                    if !b.done {
                        self.cancel_branch(now, b);
                    }
                }
            }
        }
        match (status, agent) {
            (Status::Offered, Some(agent)) => self.ring(now, id, &agent),
            (Status::InQueue, _) => {}
            _ => {
                // The call left the queue without an answer on the phone (abandoned,
                // reassigned, picked): the caller is told and the call is over.
                let call = self.calls.calls.get(&id);
                let pending = call.and_then(|c| c.server.map(|s| (s, c.invite.clone())));
                if let Some((server, invite)) = pending {
                    let r = response_to(&invite, 480, "Temporarily Unavailable");
                    self.respond(now, server, &r);
                }
                self.end_dialog(id);
            }
        }
    }
}

/// How long a callback waits for the agent's phone, then for the customer, to answer.
pub(super) const DIAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// One answered side of a callback: where it is, its dialog header, its Contact.
#[derive(Debug, Clone)]
struct Side {
    addr: SocketAddr,
    /// Its To header (with its tag), the remote party of our requests.
    header: String,
    target: String,
    /// The Route set from the Record-Route of its answer (our requests carry it).
    routes: Vec<String>,
    /// The ACK sent for its 200 (sent again if the 200 is retransmitted).
    ack: Vec<u8>,
}

/// A callback placed by third-party call control: the agent's phone is called first
/// (INVITE without SDP); its answer's SDP offer goes to the customer through the outbound
/// proxy; the customer's answer completes both exchanges in the ACKs. switchboard is the
/// user agent of both legs, which share one Call-ID and our From header.
pub(super) struct Dial {
    agent: String,
    call_id: String,
    /// Our From header toward the phone (the customer's number, our tag).
    phone_from: String,
    /// Our From header toward the customer (the queue, the same tag).
    customer_from: String,
    number: String,
    /// The INVITEs ringing the agent's phones.
    ringing: Vec<Branch>,
    /// The phone's 200 (its SDP offer) and the phone as a dialog side.
    phone: Option<(Response, Side)>,
    /// The INVITE to the customer, while it has no answer.
    customer_invite: Option<Branch>,
    customer: Option<Side>,
}

fn side_of(ok: &Response, addr: SocketAddr) -> Side {
    let mut routes: Vec<String> = ok
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Record-Route"))
        .flat_map(|(_, v)| {
            crate::sip::message::split_list(v)
                .map(|l| l.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap_or_default()
        })
        .collect();
    routes.reverse();
    Side {
        addr,
        header: ok.header("To").unwrap_or_default().to_owned(),
        target: proxy::contact_uri(&ok.headers)
            .unwrap_or_else(|| format!("sip:{}", proxy::host_port(addr))),
        routes,
        ack: Vec::new(),
    }
}

impl Core {
    /// Whether a callback is placed as a real call: an outbound proxy and a SIP socket.
    pub(super) fn dials_out(&self) -> bool {
        self.calls.local.is_some() && self.policy.calls.outbound_proxy.is_some()
    }

    /// Whether this conversation is a callback still being dialled (offered to its agent).
    pub(super) fn is_dialling(&self, id: &Uuid) -> bool {
        self.work.conversations.get(id).is_some_and(|c| {
            c.status == Status::Offered && c.origin.kind == super::model::OriginKind::Callback
        })
    }

    /// A callback's attempt ends without a conversation: `handled`, no reason.
    pub(super) fn dial_failed(&mut self, now: Now, id: Uuid, why: &str) {
        if !self.is_dialling(&id) {
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
            EventKind::Ended,
            agent.as_deref(),
            Some(why.to_owned()),
        );
        self.set_status(id, Status::Handled);
        if let Some(c) = self.work.conversations.get_mut(&id) {
            c.ended_at = Some(now.ts());
        }
        self.release_closed(id);
    }

    pub(super) fn dial_timed_out(&mut self, now: Now, id: Uuid) {
        let what = match self.calls.dials.get(&id) {
            Some(d) if d.phone.is_some() => "the customer did not answer",
            Some(_) => "the agent's phone did not answer",
            None => "no answer",
        };
        self.dial_failed(now, id, what);
    }

    /// Starts a callback: the agent's phones ring with an INVITE without SDP.
    pub(super) fn start_dial(&mut self, now: Now, id: Uuid, agent: &str, number: &str) {
        let Some(local) = self.calls.local else {
            return;
        };
        use rand::RngCore;
        let call_id = format!("{:016x}@{}", self.ids.rng.next_u64(), local.ip());
        let tag = format!("{:016x}", self.ids.rng.next_u64());
        let ours = proxy::host_port(local);
        let phone_from = format!("\"{number}\" <sip:{number}@{ours}>;tag={tag}");
        let contacts: Vec<String> = self
            .org
            .agents
            .get(agent)
            .map(|a| a.rec.bindings.iter().map(|b| b.contact.clone()).collect())
            .unwrap_or_default();
        let mut ringing = Vec::new();
        for contact in contacts {
            let uri = crate::sip::message::parse_name_addr(&contact)
                .map(|n| n.uri)
                .unwrap_or(contact);
            let Some(addr) = proxy::uri_addr(&uri) else {
                continue;
            };
            let branch = self.new_branch_id();
            let leg = proxy::Leg {
                uri: &uri,
                from: &phone_from,
                to: &format!("<{uri}>"),
                call_id: &call_id,
            };
            let mut invite = proxy::in_dialog("INVITE", leg, 1, local, &branch);
            invite
                .headers
                .push(("Contact".into(), format!("<sip:{ours}>")));
            if let Some(tx) = self.client(now, invite.clone(), addr, Owner::Branch(id)) {
                ringing.push(Branch {
                    tx,
                    sent: invite,
                    done: false,
                });
            }
        }
        self.calls.by_call_id.insert(call_id.clone(), id);
        self.calls.dials.insert(
            id,
            Dial {
                agent: agent.to_owned(),
                call_id,
                phone_from,
                customer_from: String::new(),
                number: number.to_owned(),
                ringing,
                phone: None,
                customer_invite: None,
                customer: None,
            },
        );
        self.arm(Timer::Dial(id), now.after(DIAL_TIMEOUT));
        if self
            .calls
            .dials
            .get(&id)
            .is_some_and(|d| d.ringing.is_empty())
        {
            self.dial_failed(now, id, "the agent's phone cannot be reached");
        }
    }

    /// A response on one of a callback's INVITEs.
    fn dial_response(&mut self, now: Now, id: Uuid, tx: u64, resp: Response) {
        let Some(dial) = self.calls.dials.get(&id) else {
            return;
        };
        let is_customer = dial.customer_invite.as_ref().is_some_and(|b| b.tx == tx);
        match (resp.code, is_customer) {
            (100..=199, _) => {}
            (200..=299, false) => self.dial_phone_answered(now, id, tx, resp),
            (200..=299, true) => self.dial_customer_answered(now, id, tx, resp),
            (_, false) => self.dial_phone_failed(now, id, tx),
            (_, true) => {
                if let Some(d) = self.calls.dials.get_mut(&id) {
                    d.customer_invite = None;
                }
                self.dial_failed(now, id, "the customer's line did not answer");
            }
        }
    }

    /// A callback INVITE's transaction timed out.
    fn dial_tx_failed(&mut self, now: Now, id: Uuid, tx: u64) {
        let is_customer = self
            .calls
            .dials
            .get(&id)
            .and_then(|d| d.customer_invite.as_ref())
            .is_some_and(|b| b.tx == tx);
        if is_customer {
            if let Some(d) = self.calls.dials.get_mut(&id) {
                d.customer_invite = None;
            }
            self.dial_failed(now, id, "the customer's line did not answer");
        } else {
            self.dial_phone_failed(now, id, tx);
        }
    }

    fn dial_phone_failed(&mut self, now: Now, id: Uuid, tx: u64) {
        let Some(d) = self.calls.dials.get_mut(&id) else {
            return;
        };
        for b in d.ringing.iter_mut() {
            if b.tx == tx {
                b.done = true;
            }
        }
        if d.phone.is_none() && d.ringing.iter().all(|b| b.done) {
            self.dial_failed(now, id, "the agent's phone did not answer");
        }
    }

    /// The agent's phone answered with its SDP offer: the customer is called with it.
    fn dial_phone_answered(&mut self, now: Now, id: Uuid, tx: u64, ok: Response) {
        let (Some(local), Some(proxy_addr)) = (self.calls.local, self.policy.calls.outbound_proxy)
        else {
            return;
        };
        let Some(addr) = self.calls.txs.get(&tx).map(|t| t.peer) else {
            return;
        };
        let Some(d) = self.calls.dials.get_mut(&id) else {
            return;
        };
        if d.phone.is_some() {
            return;
        }
        let others: Vec<Branch> = d
            .ringing
            .drain(..)
            .filter(|b| b.tx != tx && !b.done)
            .collect();
        d.phone = Some((ok.clone(), side_of(&ok, addr)));
        let queue = self
            .work
            .conversations
            .get(&id)
            .map(|c| c.queue.clone())
            .unwrap_or_default();
        let ours = proxy::host_port(local);
        let there = proxy::host_port(proxy_addr);
        let uri = format!("sip:{}@{there}", d.number);
        let tag = proxy::tag_of(&d.phone_from).unwrap_or_default();
        let from = format!("<sip:{queue}@{ours}>;tag={tag}");
        let call_id = d.call_id.clone();
        // Our From toward the customer names the queue; the phone knows us as the customer.
        let branch = self.new_branch_id();
        let leg = proxy::Leg {
            uri: &uri,
            from: &from,
            to: &format!("<{uri}>"),
            call_id: &call_id,
        };
        let mut invite = proxy::in_dialog("INVITE", leg, 1, local, &branch);
        invite
            .headers
            .push(("Contact".into(), format!("<sip:{ours}>")));
        if let Some(ct) = ok.header("Content-Type") {
            invite.headers.push(("Content-Type".into(), ct.to_owned()));
        }
        invite.body = ok.body.clone();
        for b in others {
            self.cancel_branch(now, b);
        }
        let customer = self.client(now, invite.clone(), proxy_addr, Owner::Branch(id));
        if let Some(d) = self.calls.dials.get_mut(&id) {
            d.customer_from = from;
            d.customer_invite = customer.map(|tx| Branch {
                tx,
                sent: invite,
                done: false,
            });
        }
        self.wheel.cancel(&Timer::Dial(id));
        self.arm(Timer::Dial(id), now.after(DIAL_TIMEOUT));
        if customer.is_none() {
            self.dial_failed(now, id, "the customer's line did not answer");
        }
    }

    /// The customer answered: ACK to them, ACK with their SDP answer to the phone; the
    /// conversation is in process.
    fn dial_customer_answered(&mut self, now: Now, id: Uuid, tx: u64, ok: Response) {
        let Some(local) = self.calls.local else {
            return;
        };
        let Some(addr) = self.calls.txs.get(&tx).map(|t| t.peer) else {
            return;
        };
        if !self.is_dialling(&id) {
            return;
        }
        let Some(d) = self.calls.dials.get_mut(&id) else {
            return;
        };
        let Some((_, mut phone)) = d.phone.clone() else {
            return;
        };
        d.customer_invite = None;
        let mut customer = side_of(&ok, addr);
        let (call_id, from) = (d.call_id.clone(), d.customer_from.clone());
        let phone_from = d.phone_from.clone();
        let b1 = self.new_branch_id();
        let ack = dial_request("ACK", &customer, &from, &call_id, 1, local, &b1);
        customer.ack = ack.serialize();
        let b2 = self.new_branch_id();
        let mut ack = dial_request("ACK", &phone, &phone_from, &call_id, 1, local, &b2);
        if let Some(ct) = ok.header("Content-Type") {
            ack.headers.push(("Content-Type".into(), ct.to_owned()));
        }
        ack.body = ok.body.clone();
        phone.ack = ack.serialize();
        self.send(customer.addr, customer.ack.clone());
        self.send(phone.addr, phone.ack.clone());
        if let Some(d) = self.calls.dials.get_mut(&id) {
            if let Some((_, p)) = d.phone.as_mut() {
                *p = phone;
            }
            d.customer = Some(customer);
        }
        self.wheel.cancel(&Timer::Dial(id));
        let agent = self
            .calls
            .dials
            .get(&id)
            .map(|d| d.agent.clone())
            .unwrap_or_default();
        self.set_status(id, Status::InProcess);
        self.event(
            now,
            id,
            EventKind::Accepted,
            Some(&agent),
            Some("the customer answered".into()),
        );
    }

    /// A 2xx retransmitted on a callback leg: its ACK goes again.
    fn dial_retransmitted_ok(&mut self, id: Uuid, resp: &Response) {
        let Some(d) = self.calls.dials.get(&id) else {
            return;
        };
        let to_tag = resp.header("To").and_then(proxy::tag_of);
        let sides = [d.phone.as_ref().map(|(_, s)| s), d.customer.as_ref()];
        let again = sides
            .into_iter()
            .flatten()
            .find(|side| !side.ack.is_empty() && proxy::tag_of(&side.header) == to_tag)
            .map(|side| (side.addr, side.ack.clone()));
        if let Some((addr, ack)) = again {
            self.send(addr, ack);
        }
    }

    /// A request inside a callback's dialogs: a BYE from one side is answered and passed on
    /// as our BYE to the other side.
    fn dial_request(&mut self, now: Now, from: SocketAddr, id: Uuid, req: Request) {
        if req.method == "ACK" {
            return;
        }
        let Some(server) = self.server_tx(&req, from, &req.method) else {
            return;
        };
        let up = self
            .calls
            .dials
            .get(&id)
            .and_then(|d| d.customer.as_ref().map(|c| (d, c)))
            .map(|(d, c)| (proxy::tag_of(&c.header), d.agent.clone()));
        let Some((customer_tag, agent)) = up else {
            self.respond(
                now,
                server,
                &response_to(&req, 481, "Call/Transaction Does Not Exist"),
            );
            return;
        };
        if req.method != "BYE" {
            self.respond(now, server, &response_to(&req, 501, "Not Implemented"));
            return;
        }
        self.respond(now, server, &response_to(&req, 200, "OK"));
        let from_customer = req.header("From").and_then(proxy::tag_of) == customer_tag;
        self.end_dial_legs(now, id, Some(from_customer));
        if self
            .work
            .conversations
            .get(&id)
            .is_some_and(|c| c.status == Status::InProcess)
        {
            if from_customer {
                let _ = self.customer_left(now, id);
            } else {
                self.close_segment(now, id, Status::WrapUp, DisconnectReason::AgentEnded);
                self.event(
                    now,
                    id,
                    EventKind::Ended,
                    Some(&agent),
                    Some("hung up the phone".into()),
                );
            }
        }
    }

    /// Hangs up what is left of a callback and forgets it. `hung_up`: the side that already
    /// sent its BYE (`Some(true)`: the customer), if any.
    fn end_dial_legs(&mut self, now: Now, id: Uuid, hung_up: Option<bool>) {
        let Some(local) = self.calls.local else {
            return;
        };
        let Some(d) = self.calls.dials.remove(&id) else {
            return;
        };
        self.calls.by_call_id.remove(&d.call_id);
        self.wheel.cancel(&Timer::Dial(id));
        for b in d.ringing {
            if !b.done {
                self.cancel_branch(now, b);
            }
        }
        if let Some(b) = d.customer_invite {
            self.cancel_branch(now, b);
        }
        match (d.phone, d.customer) {
            (Some((_, phone)), Some(customer)) => {
                if hung_up != Some(true) {
                    let b = self.new_branch_id();
                    let bye =
                        dial_request("BYE", &customer, &d.customer_from, &d.call_id, 2, local, &b);
                    self.own_request(now, bye, customer.addr, false);
                }
                if hung_up != Some(false) {
                    let b = self.new_branch_id();
                    let bye = dial_request("BYE", &phone, &d.phone_from, &d.call_id, 2, local, &b);
                    self.own_request(now, bye, phone.addr, false);
                }
            }
            (Some((ok, _)), None) => {
                // The phone answered and waits for our ACK: ACK, then BYE.
                let branches = [self.new_branch_id(), self.new_branch_id()];
                if let Some([(ack, to), (bye, _)]) =
                    proxy::ack_and_bye(&ok, local, [&branches[0], &branches[1]])
                {
                    self.send(to, ack.serialize());
                    self.own_request(now, bye, to, false);
                }
            }
            _ => {}
        }
    }

    /// Brings a callback in line with its conversation.
    fn sync_dial(&mut self, now: Now, id: Uuid) {
        let status = self.work.conversations.get(&id).map(|c| c.status);
        if matches!(status, Some(Status::Offered | Status::InProcess)) {
            return;
        }
        self.end_dial_legs(now, id, None);
    }
}

/// A request of ours inside a callback leg toward `side`.
fn dial_request(
    method: &str,
    side: &Side,
    from: &str,
    call_id: &str,
    seq: u32,
    local: SocketAddr,
    branch: &str,
) -> Request {
    let leg = proxy::Leg {
        uri: &side.target,
        from,
        to: &side.header,
        call_id,
    };
    let mut req = proxy::in_dialog(method, leg, seq, local, branch);
    for r in &side.routes {
        req.headers.push(("Route".into(), r.clone()));
    }
    req
}
