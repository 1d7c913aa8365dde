//! Demo layer: the calling side of the simulated trunk — a customer's call is an INVITE with
//! a small SDP offer to a voice queue; `1xx` ring, a `200` is acknowledged and the customer
//! talks, then hangs up (BYE) after their talk time; a customer who waits past their
//! patience gives up (CANCEL); a BYE from switchboard ends the call; a failure is
//! acknowledged. Pure: every input carries `now` (the driver's monotonic milliseconds) and
//! every output is a datagram for switchboard.

use super::call::{self, Dialog};
use crate::sip::message::{Request, Response};
use std::collections::HashMap;
use std::net::SocketAddr;
use switchboard_core::sip::proxy;

/// How long an ended call is remembered, to answer retransmissions (64 × T1).
const LINGER_MS: u64 = 32_000;
/// Most calls the trunk keeps at once; a call beyond it is not placed.
pub(crate) const MAX_CALLS: usize = 256;
/// The first interval at which an unanswered INVITE is sent again (T1); it doubles each time.
const T1_MS: u64 = 500;
/// How many times an INVITE without any response is sent again (up to 64 × T1 in all).
const RETRANSMISSIONS: u32 = 6;

/// A customer's call to place.
#[derive(Debug, Clone)]
pub(crate) struct Placed {
    /// The customer's number (the From user part).
    pub number: String,
    pub name: String,
    /// The voice queue's id (the Request-URI user part).
    pub queue: String,
    /// How long they wait for an answer before hanging up (ms).
    pub patience: u64,
    /// How long they talk once answered before hanging up (ms).
    pub talk: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The INVITE is out; no final response yet.
    Calling,
    /// We sent a CANCEL; the INVITE's final response has not come yet.
    Cancelling,
    Talking,
    Ended,
}

#[derive(Debug)]
struct Outgoing {
    invite: Request,
    state: State,
    dialog: Option<Dialog>,
    /// The ACK of the 200, sent again if the 200 is retransmitted.
    ack: Vec<u8>,
    talk: u64,
    due: Option<u64>,
    /// While the INVITE has no response at all: when it is sent again, and how often it
    /// has been (RFC 3261 §17.1.1.2, timer A).
    resend: Option<(u64, u32)>,
}

/// How a call went, for the owner's narration and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Note {
    Answered {
        call_id: String,
    },
    /// The customer gave up waiting.
    GaveUp {
        call_id: String,
    },
    /// The customer hung up after talking.
    HungUp {
        call_id: String,
    },
    /// switchboard hung up (the agent, or a drop).
    HungUpOnUs {
        call_id: String,
    },
    /// The call failed with this final response.
    Failed {
        call_id: String,
        code: u16,
    },
}

/// What one input produced: datagrams for switchboard and notes for the owner.
#[derive(Debug, Default)]
pub(crate) struct Output {
    pub send: Vec<Vec<u8>>,
    pub notes: Vec<Note>,
}

/// Every call the trunk placed that is not over.
#[derive(Debug)]
pub(crate) struct Dialer {
    local: SocketAddr,
    server: SocketAddr,
    calls: HashMap<String, Outgoing>,
}

impl Dialer {
    /// A trunk at `local` placing calls to switchboard at `server`.
    pub fn new(local: SocketAddr, server: SocketAddr) -> Dialer {
        Dialer {
            local,
            server,
            calls: HashMap::new(),
        }
    }

    #[cfg(test)]
    pub fn knows(&self, call_id: &str) -> bool {
        self.calls.contains_key(call_id)
    }

    pub fn next_due(&self) -> Option<u64> {
        self.calls
            .values()
            .flat_map(|c| [c.due, c.resend.map(|r| r.0)])
            .flatten()
            .min()
    }

    /// Places a call: its Call-ID and INVITE; `None` when the trunk is full.
    pub fn place(&mut self, now: u64, p: &Placed) -> Option<(String, Vec<u8>)> {
        if self.calls.len() >= MAX_CALLS {
            return None;
        }
        let here = proxy::host_port(self.local);
        let call_id = format!("{}@{}", call::new_id(), self.local.ip());
        let from = format!(
            "{} <sip:{}@{here}>;tag={}",
            crate::sip::message::quote(&p.name),
            p.number,
            call::new_id()
        );
        let uri = format!("sip:{}@{}", p.queue, proxy::host_port(self.server));
        let contact = format!("sip:{}@{here}", p.number);
        let sdp = call::sdp_offer(&p.number, self.local);
        let invite = call::invite(&uri, &from, &call_id, self.local, &contact, &sdp);
        let bytes = invite.serialize();
        self.calls.insert(
            call_id.clone(),
            Outgoing {
                invite,
                state: State::Calling,
                dialog: None,
                ack: Vec::new(),
                talk: p.talk,
                due: Some(now + p.patience),
                resend: Some((now + T1_MS, 0)),
            },
        );
        Some((call_id, bytes))
    }

    /// A response from switchboard to one of our requests.
    pub fn on_response(&mut self, now: u64, resp: &Response) -> Output {
        let mut out = Output::default();
        let call_id = resp.header("Call-ID").unwrap_or_default().to_owned();
        let Some(c) = self.calls.get_mut(&call_id) else {
            return out;
        };
        let is_invite = call::cseq_of(&resp.headers).is_some_and(|(_, m)| m == "INVITE");
        if !is_invite {
            return out;
        }
        c.resend = None;
        if resp.code < 200 {
            return out;
        }
        if resp.code >= 300 {
            if matches!(c.state, State::Calling | State::Cancelling) {
                out.send
                    .push(call::ack_failure(&c.invite, resp).serialize());
                let note = if c.state == State::Cancelling {
                    Note::GaveUp {
                        call_id: call_id.clone(),
                    }
                } else {
                    Note::Failed {
                        call_id: call_id.clone(),
                        code: resp.code,
                    }
                };
                out.notes.push(note);
                c.state = State::Ended;
                c.due = Some(now + LINGER_MS);
            }
            return out;
        }
        match c.state {
            State::Calling | State::Cancelling => {
                let Some(mut dialog) = Dialog::caller(&c.invite, resp) else {
                    return out;
                };
                let seq = call::cseq_of(&c.invite.headers).map(|s| s.0).unwrap_or(1);
                c.ack = dialog.ack(seq, self.local, None).serialize();
                out.send.push(c.ack.clone());
                if c.state == State::Cancelling {
                    // Answered just as the customer gave up: hung up at once.
                    out.send.push(dialog.request("BYE", self.local).serialize());
                    c.state = State::Ended;
                    c.due = Some(now + LINGER_MS);
                    out.notes.push(Note::GaveUp { call_id });
                } else {
                    c.state = State::Talking;
                    c.due = Some(now + c.talk);
                    out.notes.push(Note::Answered { call_id });
                }
                c.dialog = Some(dialog);
            }
            // A retransmitted 200: our ACK again.
            State::Talking | State::Ended => {
                if !c.ack.is_empty() {
                    out.send.push(c.ack.clone());
                }
            }
        }
        out
    }

    /// A request from switchboard: `None` if it is not about one of our calls.
    pub fn on_request(&mut self, now: u64, req: &Request) -> Option<Output> {
        let call_id = req.header("Call-ID").unwrap_or_default().to_owned();
        let c = self.calls.get_mut(&call_id)?;
        let mut out = Output::default();
        match req.method.as_str() {
            "BYE" => {
                out.send
                    .push(call::reply(req, 200, "OK", None, None).serialize());
                if c.state != State::Ended {
                    c.state = State::Ended;
                    c.due = Some(now + LINGER_MS);
                    out.notes.push(Note::HungUpOnUs { call_id });
                }
            }
            "ACK" => {}
            _ => out
                .send
                .push(call::reply(req, 501, "Not Implemented", None, None).serialize()),
        }
        Some(out)
    }

    /// Steps due at `now`: sending an unanswered INVITE again, giving up, hanging up,
    /// forgetting ended calls.
    pub fn on_time(&mut self, now: u64) -> Output {
        let mut out = Output::default();
        for c in self.calls.values_mut() {
            if let Some((at, sent)) = c.resend.filter(|(at, _)| *at <= now) {
                let calling = c.state == State::Calling && sent < RETRANSMISSIONS;
                c.resend = calling.then(|| (at + (T1_MS << (sent + 1)), sent + 1));
                if calling {
                    out.send.push(c.invite.serialize());
                }
            }
        }
        let due: Vec<String> = self
            .calls
            .iter()
            .filter(|(_, c)| c.due.is_some_and(|d| d <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for call_id in due {
            let Some(c) = self.calls.get_mut(&call_id) else {
                continue;
            };
            c.due = None;
            match c.state {
                State::Calling => {
                    out.send.push(call::cancel(&c.invite).serialize());
                    c.state = State::Cancelling;
                    // If the INVITE's final response never comes, the call is forgotten.
                    c.due = Some(now + LINGER_MS);
                }
                State::Talking => {
                    if let Some(d) = c.dialog.as_mut() {
                        out.send.push(d.request("BYE", self.local).serialize());
                    }
                    c.state = State::Ended;
                    c.due = Some(now + LINGER_MS);
                    out.notes.push(Note::HungUp { call_id });
                }
                State::Cancelling | State::Ended => {
                    self.calls.remove(&call_id);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{SipMessage, parse, response_to};

    fn trunk() -> Dialer {
        Dialer::new(
            "127.0.0.1:5070".parse().expect("addr"),
            "127.0.0.1:5060".parse().expect("addr"),
        )
    }

    fn placed() -> Placed {
        Placed {
            number: "+15550001".into(),
            name: "Ann Berg".into(),
            queue: "phones".into(),
            patience: 60_000,
            talk: 30_000,
        }
    }

    fn request(bytes: &[u8]) -> Request {
        match parse(bytes).expect("parses") {
            SipMessage::Request(r) => r,
            SipMessage::Response(r) => panic!("a request, got {r:?}"),
        }
    }

    /// switchboard's answer to the trunk: the phone's 200 relayed, record-routed.
    fn ok_from_phone(invite: &Request) -> Response {
        let mut ok = response_to(invite, 200, "OK")
            .with_header("Record-Route", "<sip:127.0.0.1:5060;lr>")
            .with_header("Contact", "<sip:maria@127.0.0.1:6000>");
        ok.body = b"v=0\r\n".to_vec();
        ok
    }

    #[test]
    fn a_placed_call_names_the_queue_and_the_customer_and_offers_sdp() {
        let mut t = trunk();
        let (_, bytes) = t.place(0, &placed()).expect("placed");
        let inv = request(&bytes);
        assert_eq!(inv.uri, "sip:phones@127.0.0.1:5060");
        assert_eq!(
            proxy::user_of(inv.header("From").unwrap_or_default()).as_deref(),
            Some("+15550001")
        );
        assert_eq!(
            proxy::display_of(inv.header("From").unwrap_or_default()).as_deref(),
            Some("Ann Berg")
        );
        assert!(String::from_utf8_lossy(&inv.body).contains("m=audio 5070"));
    }

    #[test]
    fn an_answered_call_is_acknowledged_and_hung_up_after_the_talk_time() {
        let mut t = trunk();
        let (id, bytes) = t.place(0, &placed()).expect("placed");
        let inv = request(&bytes);
        // No response yet: the INVITE again after T1, then after 2 × T1.
        assert_eq!(t.next_due(), Some(500));
        assert_eq!(t.on_time(500).send, vec![bytes.clone()]);
        assert_eq!(t.next_due(), Some(1_500));
        let ringing = response_to(&inv, 180, "Ringing");
        assert!(t.on_response(1_000, &ringing).send.is_empty());
        assert_eq!(
            t.next_due(),
            Some(60_000),
            "a response stops the retransmissions"
        );
        let ok = ok_from_phone(&inv);
        let out = t.on_response(5_000, &ok);
        let ack = request(&out.send[0]);
        assert_eq!(ack.method, "ACK");
        assert_eq!(ack.uri, "sip:maria@127.0.0.1:6000");
        assert_eq!(ack.header("Route"), Some("<sip:127.0.0.1:5060;lr>"));
        assert_eq!(
            out.notes,
            vec![Note::Answered {
                call_id: id.clone()
            }]
        );
        // A retransmitted 200 gets the same ACK.
        assert_eq!(t.on_response(5_100, &ok).send, out.send);
        assert_eq!(t.next_due(), Some(35_000));
        let out = t.on_time(35_000);
        let bye = request(&out.send[0]);
        assert_eq!(bye.method, "BYE");
        assert_eq!(bye.header("CSeq"), Some("2 BYE"));
        assert_eq!(out.notes, vec![Note::HungUp { call_id: id }]);
    }

    #[test]
    fn a_customer_who_waits_too_long_cancels_and_acknowledges_the_487() {
        let mut t = trunk();
        let (id, bytes) = t.place(0, &placed()).expect("placed");
        let inv = request(&bytes);
        t.on_response(10, &response_to(&inv, 100, "Trying"));
        let out = t.on_time(60_000);
        let cancel = request(&out.send[0]);
        assert_eq!(cancel.method, "CANCEL");
        let terminated = response_to(&inv, 487, "Request Terminated");
        let out = t.on_response(60_010, &terminated);
        assert_eq!(request(&out.send[0]).method, "ACK");
        assert_eq!(
            out.notes,
            vec![Note::GaveUp {
                call_id: id.clone()
            }]
        );
        t.on_time(60_010 + LINGER_MS);
        assert!(!t.knows(&id));
    }

    #[test]
    fn a_bye_from_switchboard_is_answered_and_ends_the_call() {
        let mut t = trunk();
        let (id, bytes) = t.place(0, &placed()).expect("placed");
        let inv = request(&bytes);
        let ok = ok_from_phone(&inv);
        t.on_response(1_000, &ok);
        let mut phone_side = Dialog::callee(&inv, &ok).expect("dialog");
        let bye = request(
            &phone_side
                .request("BYE", "127.0.0.1:5060".parse().expect("a"))
                .serialize(),
        );
        let out = t.on_request(2_000, &bye).expect("ours");
        match parse(&out.send[0]).expect("parses") {
            SipMessage::Response(r) => assert_eq!(r.code, 200),
            other => panic!("{other:?}"),
        }
        assert_eq!(out.notes, vec![Note::HungUpOnUs { call_id: id }]);
        assert!(
            t.on_time(2_000 + 30_000).send.is_empty(),
            "no BYE of ours after"
        );
    }
}
