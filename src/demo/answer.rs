//! Demo layer: the called party of the simulated phones and of the simulated trunk — an
//! INVITE rings (`180`), then is answered (`200` with SDP), declined (`486`) or left ringing
//! until it is cancelled (`487`); an INVITE without SDP (switchboard's callback, third-party
//! call control) is answered with an SDP offer whose answer arrives in the ACK; a BYE in
//! either direction ends the call. Pure: every input carries `now` (the driver's monotonic
//! milliseconds) and every output is a datagram for switchboard, the only party the
//! simulated user agents talk to.

use super::call::{self, Dialog};
use crate::sip::message::{Request, Response};
use std::collections::HashMap;
use std::net::SocketAddr;

/// Most calls one simulated party keeps at once (ringing, talking or just ended); an INVITE
/// beyond it is answered `486`.
const MAX_CALLS: usize = 16;
/// How long an ended call is remembered, to answer retransmissions (64 × T1).
const LINGER_MS: u64 = 32_000;
/// Our 200 is sent again until its ACK comes (RFC 3261 §13.3.1.4): first after T1, then at
/// doubling intervals up to T2.
const T1_MS: u64 = 500;
const T2_MS: u64 = 4_000;
/// How long an answered call waits for its ACK before it is given up. switchboard's callback
/// acknowledges the phone's answer only once the customer answers (up to a minute later).
const ACK_WAIT_MS: u64 = 90_000;

/// What the party does with a new call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pickup {
    /// Picks up after `after` ms; hangs up itself after `talk` ms of conversation, if given.
    Answer { after: u64, talk: Option<u64> },
    /// Turns the call down (`486`) after `after` ms of ringing.
    Decline { after: u64 },
    /// Lets it ring until it is cancelled.
    Ignore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Ringing,
    /// Our 200 is sent; its ACK has not come yet.
    Answered,
    Talking,
    /// Over; remembered until `forget_at` to answer retransmissions.
    Ended,
}

#[derive(Debug)]
struct Incoming {
    invite: Request,
    state: State,
    /// The last response to the INVITE, sent again if the INVITE is retransmitted.
    last: Vec<u8>,
    dialog: Option<Dialog>,
    /// Our 200 carried the offer (an INVITE without SDP): the answer comes in the ACK.
    offered: bool,
    pickup: Pickup,
    /// When the next step (answer, decline, hang up, forget) is due.
    due: Option<u64>,
    /// While our 200 waits for its ACK: when it is sent again, the interval, the last moment.
    resend: Option<(u64, u64, u64)>,
}

/// What happened, for the owner's narration and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Note {
    Answered {
        call_id: String,
        offered: bool,
    },
    /// The ACK completed the call (with the SDP answer when we made the offer).
    Connected {
        call_id: String,
        sdp_answer: bool,
    },
    Declined {
        call_id: String,
    },
    Cancelled {
        call_id: String,
    },
    /// The other side hung up.
    HungUp {
        call_id: String,
    },
    /// We hung up.
    Ended {
        call_id: String,
    },
}

/// Every call ringing or answered at one simulated party.
#[derive(Debug)]
pub(crate) struct Answerer {
    /// Our address (Via of our requests) and Contact URI.
    local: SocketAddr,
    contact: String,
    owner: String,
    calls: HashMap<String, Incoming>,
}

/// What one input produced: datagrams for switchboard and notes for the owner.
#[derive(Debug, Default)]
pub(crate) struct Output {
    pub send: Vec<Vec<u8>>,
    pub notes: Vec<Note>,
}

impl Answerer {
    /// A party at `local` known as `user` (its Contact is `sip:user@local`).
    pub fn new(user: &str, local: SocketAddr) -> Answerer {
        Answerer {
            local,
            contact: format!(
                "sip:{user}@{}",
                switchboard_core::sip::proxy::host_port(local)
            ),
            owner: user.to_owned(),
            calls: HashMap::new(),
        }
    }

    /// Whether a call is in conversation.
    #[cfg(test)]
    pub fn talking(&self) -> bool {
        self.calls.values().any(|c| c.state == State::Talking)
    }

    /// Whether this Call-ID is one of ours.
    #[cfg(test)]
    pub fn knows(&self, call_id: &str) -> bool {
        self.calls.contains_key(call_id)
    }

    /// The earliest due step.
    pub fn next_due(&self) -> Option<u64> {
        self.calls
            .values()
            .flat_map(|c| [c.due, c.resend.map(|r| r.0)])
            .flatten()
            .min()
    }

    /// A request from switchboard. `pick` chooses what to do with a new call.
    pub fn on_request(
        &mut self,
        now: u64,
        req: &Request,
        pick: impl FnOnce(&Request) -> Pickup,
    ) -> Output {
        let mut out = Output::default();
        let call_id = req.header("Call-ID").unwrap_or_default().to_owned();
        match req.method.as_str() {
            "INVITE" => self.invite(now, call_id, req, pick, &mut out),
            "ACK" => {
                if let Some(c) = self.calls.get_mut(&call_id) {
                    match c.state {
                        State::Answered => {
                            c.state = State::Talking;
                            c.resend = None;
                            let sdp_answer = c.offered && !req.body.is_empty();
                            c.due = match c.pickup {
                                Pickup::Answer { talk: Some(t), .. } => Some(now + t),
                                _ => None,
                            };
                            out.notes.push(Note::Connected {
                                call_id,
                                sdp_answer,
                            });
                        }
                        // The ACK of our 486 or 487.
                        State::Ringing | State::Talking | State::Ended => {}
                    }
                }
            }
            "BYE" => match self.calls.get_mut(&call_id) {
                Some(c) => {
                    out.send
                        .push(call::reply(req, 200, "OK", None, None).serialize());
                    if c.state != State::Ended {
                        c.state = State::Ended;
                        c.due = Some(now + LINGER_MS);
                        c.resend = None;
                        out.notes.push(Note::HungUp { call_id });
                    }
                }
                None => out.send.push(
                    call::reply(req, 481, "Call/Transaction Does Not Exist", None, None)
                        .serialize(),
                ),
            },
            "CANCEL" => match self.calls.get_mut(&call_id) {
                Some(c) => {
                    out.send
                        .push(call::reply(req, 200, "OK", None, None).serialize());
                    if c.state == State::Ringing {
                        let terminated =
                            call::reply(&c.invite, 487, "Request Terminated", None, None);
                        c.last = terminated.serialize();
                        out.send.push(c.last.clone());
                        c.state = State::Ended;
                        c.due = Some(now + LINGER_MS);
                        out.notes.push(Note::Cancelled { call_id });
                    }
                }
                None => out.send.push(
                    call::reply(req, 481, "Call/Transaction Does Not Exist", None, None)
                        .serialize(),
                ),
            },
            "OPTIONS" => out
                .send
                .push(call::reply(req, 200, "OK", None, None).serialize()),
            _ => out
                .send
                .push(call::reply(req, 501, "Not Implemented", None, None).serialize()),
        }
        out
    }

    fn invite(
        &mut self,
        now: u64,
        call_id: String,
        req: &Request,
        pick: impl FnOnce(&Request) -> Pickup,
        out: &mut Output,
    ) {
        if let Some(c) = self.calls.get(&call_id) {
            let same = call::cseq_of(&c.invite.headers) == call::cseq_of(&req.headers);
            if same {
                // A retransmission: the last response again.
                if !c.last.is_empty() {
                    out.send.push(c.last.clone());
                }
            } else {
                // A re-INVITE: the demo keeps the session as it is.
                out.send
                    .push(call::reply(req, 488, "Not Acceptable Here", None, None).serialize());
            }
            return;
        }
        if self.calls.len() >= MAX_CALLS {
            out.send
                .push(call::reply(req, 486, "Busy Here", None, None).serialize());
            return;
        }
        if !req.body.is_empty() && call::sdp_answer(&req.body, &self.owner, self.local).is_none() {
            out.send
                .push(call::reply(req, 488, "Not Acceptable Here", None, None).serialize());
            return;
        }
        let pickup = pick(req);
        let ringing = call::reply(req, 180, "Ringing", Some(&self.contact), None);
        let last = ringing.serialize();
        out.send.push(last.clone());
        let due = match pickup {
            Pickup::Answer { after, .. } | Pickup::Decline { after } => Some(now + after),
            Pickup::Ignore => None,
        };
        self.calls.insert(
            call_id,
            Incoming {
                invite: req.clone(),
                state: State::Ringing,
                last,
                dialog: None,
                offered: req.body.is_empty(),
                pickup,
                due,
                resend: None,
            },
        );
    }

    /// Steps that are due at `now`: answers, declines, hang-ups, and forgetting ended calls.
    pub fn on_time(&mut self, now: u64) -> Output {
        let mut out = Output::default();
        for c in self.calls.values_mut() {
            let Some((at, every, until)) = c.resend.filter(|r| r.0 <= now) else {
                continue;
            };
            if at > until || c.state != State::Answered {
                // No ACK ever came: the call is given up.
                c.resend = None;
                c.state = State::Ended;
                c.due = Some(now + LINGER_MS);
            } else {
                out.send.push(c.last.clone());
                let every = (every * 2).min(T2_MS);
                c.resend = Some((at + every, every, until));
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
            match (c.state, c.pickup) {
                (State::Ringing, Pickup::Answer { .. }) => {
                    let sdp = if c.offered {
                        call::sdp_offer(&self.owner, self.local)
                    } else {
                        call::sdp_answer(&c.invite.body, &self.owner, self.local)
                            .unwrap_or_default()
                    };
                    let ok = call::reply(&c.invite, 200, "OK", Some(&self.contact), Some(&sdp));
                    c.dialog = Dialog::callee(&c.invite, &ok);
                    c.last = ok.serialize();
                    c.state = State::Answered;
                    c.resend = Some((now + T1_MS, T1_MS, now + ACK_WAIT_MS));
                    out.send.push(c.last.clone());
                    out.notes.push(Note::Answered {
                        call_id,
                        offered: c.offered,
                    });
                }
                (State::Ringing, _) => {
                    let busy = call::reply(&c.invite, 486, "Busy Here", None, None);
                    c.last = busy.serialize();
                    c.state = State::Ended;
                    c.due = Some(now + LINGER_MS);
                    out.send.push(c.last.clone());
                    out.notes.push(Note::Declined { call_id });
                }
                (State::Talking, _) => {
                    if let Some(bye) = c.dialog.as_mut().map(|d| d.request("BYE", self.local)) {
                        out.send.push(bye.serialize());
                    }
                    c.state = State::Ended;
                    c.due = Some(now + LINGER_MS);
                    out.notes.push(Note::Ended { call_id });
                }
                (State::Answered, _) => {}
                (State::Ended, _) => {
                    self.calls.remove(&call_id);
                }
            }
        }
        out
    }

    /// Hangs up every call in conversation (BYE); `false` if there was none.
    pub fn hang_up(&mut self, now: u64) -> (bool, Output) {
        let mut any = false;
        for c in self.calls.values_mut() {
            if c.state == State::Talking {
                c.due = Some(now);
                any = true;
            }
        }
        (any, self.on_time(now))
    }

    /// A response to one of our requests (a BYE): nothing more to do.
    pub fn on_response(&mut self, _resp: &Response) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{SipMessage, parse};

    fn server() -> SocketAddr {
        "127.0.0.1:5060".parse().expect("addr")
    }

    fn phone() -> Answerer {
        Answerer::new("maria", "127.0.0.1:6000".parse().expect("addr"))
    }

    fn msg(bytes: &[u8]) -> SipMessage {
        parse(bytes).expect("parses")
    }

    fn response(bytes: &[u8]) -> Response {
        match msg(bytes) {
            SipMessage::Response(r) => r,
            SipMessage::Request(r) => panic!("a response, got {r:?}"),
        }
    }

    fn request(bytes: &[u8]) -> Request {
        match msg(bytes) {
            SipMessage::Request(r) => r,
            SipMessage::Response(r) => panic!("a request, got {r:?}"),
        }
    }

    /// The INVITE switchboard sends to a phone: the trunk's, with the proxy's Via and
    /// Record-Route on top.
    fn ringing_invite(call_id: &str, sdp: bool) -> Request {
        let trunk: SocketAddr = "127.0.0.1:5070".parse().expect("addr");
        let body = if sdp {
            call::sdp_offer("trunk", trunk)
        } else {
            String::new()
        };
        let inv = call::invite(
            "sip:maria@127.0.0.1:6000",
            "\"Ann\" <sip:+15550001@127.0.0.1:5070>;tag=t1",
            call_id,
            trunk,
            "sip:+15550001@127.0.0.1:5070",
            &body,
        );
        let mut fwd =
            switchboard_core::sip::proxy::forward(&inv, None, server(), &call::new_branch(), true);
        if !sdp {
            fwd.body.clear();
        }
        request(&fwd.serialize())
    }

    #[test]
    fn a_call_rings_is_answered_with_an_sdp_answer_and_ends_with_the_callers_bye() {
        let mut p = phone();
        let inv = ringing_invite("c1", true);
        let out = p.on_request(1_000, &inv, |_| Pickup::Answer {
            after: 2_000,
            talk: None,
        });
        assert_eq!(response(&out.send[0]).code, 180);
        // The INVITE retransmitted: the same 180, no second call.
        let again = p.on_request(1_500, &inv, |_| panic!("not a new call"));
        assert_eq!(again.send, out.send);
        assert_eq!(p.next_due(), Some(3_000));
        assert!(p.on_time(2_999).send.is_empty());
        let out = p.on_time(3_000);
        let ok = response(&out.send[0]);
        assert_eq!(ok.code, 200);
        assert!(
            String::from_utf8_lossy(&ok.body).contains("m=audio 6000 RTP/AVP 0 8"),
            "{ok:?}"
        );
        assert_eq!(ok.header("Record-Route"), inv.header("Record-Route"));
        assert!(ok.header("Contact").unwrap_or_default().contains("maria@"));
        let mut caller = Dialog::caller(&inv, &ok).expect("dialog");
        let ack = request(&caller.ack(1, server(), None).serialize());
        let out = p.on_request(3_100, &ack, |_| Pickup::Ignore);
        assert_eq!(
            out.notes,
            vec![Note::Connected {
                call_id: "c1".into(),
                sdp_answer: false
            }]
        );
        assert!(p.talking());
        let bye = request(&caller.request("BYE", server()).serialize());
        let out = p.on_request(9_000, &bye, |_| Pickup::Ignore);
        assert_eq!(response(&out.send[0]).code, 200);
        assert_eq!(
            out.notes,
            vec![Note::HungUp {
                call_id: "c1".into()
            }]
        );
        assert!(!p.talking());
        // Forgotten once retransmissions are over.
        p.on_time(9_000 + LINGER_MS);
        assert!(!p.knows("c1"));
    }

    #[test]
    fn a_callback_invite_without_sdp_is_answered_with_an_offer_and_the_ack_brings_the_answer() {
        let mut p = phone();
        let inv = ringing_invite("c2", false);
        p.on_request(0, &inv, |r| {
            assert!(r.body.is_empty());
            Pickup::Answer {
                after: 500,
                talk: Some(10_000),
            }
        });
        let out = p.on_time(500);
        let ok = response(&out.send[0]);
        assert_eq!(ok.code, 200);
        // No ACK yet (the customer is still ringing): the 200 again after T1, then 2 × T1.
        assert_eq!(p.next_due(), Some(1_000));
        assert_eq!(p.on_time(1_000).send, out.send);
        assert_eq!(p.next_due(), Some(2_000));
        let offer = String::from_utf8_lossy(&ok.body).to_string();
        assert!(offer.contains("m=audio 6000 RTP/AVP 0 8"), "{offer}");
        let caller = Dialog::caller(&inv, &ok).expect("dialog");
        let answer = call::sdp_answer(offer.as_bytes(), "customer", server()).expect("answer");
        let ack = request(&caller.ack(1, server(), Some(&answer)).serialize());
        let out = p.on_request(2_000, &ack, |_| Pickup::Ignore);
        assert_eq!(
            out.notes,
            vec![Note::Connected {
                call_id: "c2".into(),
                sdp_answer: true
            }]
        );
        // The talk time over: our BYE, in the dialog, toward switchboard's route.
        assert_eq!(p.next_due(), Some(12_000));
        let out = p.on_time(12_000);
        let bye = request(&out.send[0]);
        assert_eq!(bye.method, "BYE");
        assert_eq!(bye.header("To"), inv.header("From"));
        assert_eq!(bye.header("From"), ok.header("To"));
        assert_eq!(bye.header("Route"), inv.header("Record-Route"));
        assert_eq!(
            out.notes,
            vec![Note::Ended {
                call_id: "c2".into()
            }]
        );
    }

    #[test]
    fn a_declined_call_gets_486_and_a_cancelled_one_487() {
        let mut p = phone();
        let inv = ringing_invite("c3", true);
        p.on_request(0, &inv, |_| Pickup::Decline { after: 1_000 });
        let out = p.on_time(1_000);
        assert_eq!(response(&out.send[0]).code, 486);
        assert_eq!(
            out.notes,
            vec![Note::Declined {
                call_id: "c3".into()
            }]
        );

        let inv = ringing_invite("c4", true);
        p.on_request(0, &inv, |_| Pickup::Ignore);
        assert_eq!(p.next_due(), Some(1_000 + LINGER_MS));
        let cancel = request(&call::cancel(&inv).serialize());
        let out = p.on_request(5_000, &cancel, |_| Pickup::Ignore);
        let codes: Vec<u16> = out.send.iter().map(|b| response(b).code).collect();
        assert_eq!(codes, vec![200, 487]);
        assert_eq!(
            out.notes,
            vec![Note::Cancelled {
                call_id: "c4".into()
            }]
        );
        // A BYE for an unknown call.
        let mut stray = ringing_invite("c5", true);
        stray.method = "BYE".into();
        let out = p.on_request(6_000, &stray, |_| Pickup::Ignore);
        assert_eq!(response(&out.send[0]).code, 481);
    }

    #[test]
    fn hang_up_sends_a_bye_only_for_a_call_in_conversation() {
        let mut p = phone();
        assert!(!p.hang_up(0).0);
        let inv = ringing_invite("c6", true);
        p.on_request(0, &inv, |_| Pickup::Answer {
            after: 0,
            talk: None,
        });
        let ok = response(&p.on_time(0).send[0]);
        assert!(!p.hang_up(10).0, "not before the ACK");
        let caller = Dialog::caller(&inv, &ok).expect("dialog");
        p.on_request(
            20,
            &request(&caller.ack(1, server(), None).serialize()),
            |_| Pickup::Ignore,
        );
        let (any, out) = p.hang_up(30);
        assert!(any);
        assert_eq!(request(&out.send[0]).method, "BYE");
    }
}
