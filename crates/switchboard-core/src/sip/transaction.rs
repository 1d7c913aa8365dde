//! Pure layer: the four SIP transaction state machines of RFC 3261 §17 over an unreliable
//! transport (UDP) — INVITE client (timers A, B, D and the proxy's C), non-INVITE client
//! (E, F, K), INVITE server (G, H, I) and non-INVITE server (J).
//!
//! A machine never reads a clock and owns no timer: every input carries `now` (monotonic
//! milliseconds) and every output is an [`Action`] — bytes to send to the peer, a timer to arm
//! at an absolute time (the caller puts it in the timing wheel) or to disarm, a response for
//! the transaction user, a timeout. Retransmissions, absorbed duplicates and the ACK of a
//! non-2xx final response are the machines' business; the 2xx ACK is end to end (the
//! transaction user's).

use super::message::{Request, Response, parse_cseq};

/// The timer base values of RFC 3261 §17.1.1.1 (milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerValues {
    /// Round-trip estimate (default 500 ms).
    pub t1: u64,
    /// Longest retransmit interval for non-INVITE requests and INVITE responses (4 s).
    pub t2: u64,
    /// Longest time a message stays in the network (5 s).
    pub t4: u64,
    /// Timer C: how long a proxy lets an INVITE branch ring without any response (> 3 min).
    pub c: u64,
}

impl Default for TimerValues {
    fn default() -> Self {
        TimerValues {
            t1: 500,
            t2: 4_000,
            t4: 5_000,
            c: 180_000,
        }
    }
}

/// The timers of RFC 3261 §17 (and the proxy's Timer C, §16.6 step 11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimerName {
    /// INVITE request retransmission (client).
    A,
    /// INVITE transaction timeout (client).
    B,
    /// Proxy INVITE branch timeout.
    C,
    /// Wait for response retransmissions after a non-2xx final (INVITE client).
    D,
    /// Non-INVITE request retransmission (client).
    E,
    /// Non-INVITE transaction timeout (client).
    F,
    /// INVITE final response retransmission (server).
    G,
    /// Wait for the ACK (INVITE server).
    H,
    /// Wait for ACK retransmissions (INVITE server).
    I,
    /// Wait for request retransmissions (non-INVITE server).
    J,
    /// Wait for response retransmissions (non-INVITE client).
    K,
}

/// What a transaction asks its caller to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send these bytes to the transaction's peer.
    Send(Vec<u8>),
    /// Arm this timer (replacing an armed one of the same name) at this monotonic time.
    Arm(TimerName, u64),
    Disarm(TimerName),
    /// A response for the transaction user (client transactions): every provisional, the
    /// first final, and each 2xx (they are the user's to handle, RFC 3261 §17.1.1.2).
    Response(Response),
    /// No final response in time (Timer B or F): the user treats it as a 408.
    Timeout,
    /// Timer C fired on a ringing branch: the proxy cancels it (or, without a provisional,
    /// treats it as a 408).
    BranchTimeout,
    /// A server transaction never got its ACK (Timer H).
    NoAck,
    /// The transaction is over: forget it (and disarm all its timers).
    Terminated,
}

/// The states of RFC 3261 §17 (each machine uses its own subset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Calling,
    Trying,
    Proceeding,
    Completed,
    Confirmed,
    Terminated,
}

/// A client transaction: INVITE (§17.1.1) or non-INVITE (§17.1.2).
#[derive(Debug, Clone)]
pub struct ClientTx {
    invite: bool,
    /// Timer C runs (a proxy's INVITE branch).
    proxy: bool,
    state: State,
    request: Request,
    bytes: Vec<u8>,
    /// Current retransmission interval (A or E).
    interval: u64,
    /// The ACK sent for a non-2xx final (resent on its retransmissions).
    ack: Option<Vec<u8>>,
    timers: TimerValues,
}

impl ClientTx {
    /// Starts a client transaction: the request is sent and its timers armed. `proxy` arms
    /// Timer C on an INVITE.
    pub fn start(
        request: Request,
        now: u64,
        timers: TimerValues,
        proxy: bool,
    ) -> (ClientTx, Vec<Action>) {
        let invite = request.method == "INVITE";
        let bytes = request.serialize();
        let mut actions = vec![Action::Send(bytes.clone())];
        if invite {
            actions.push(Action::Arm(TimerName::A, now + timers.t1));
            actions.push(Action::Arm(TimerName::B, now + 64 * timers.t1));
            if proxy {
                actions.push(Action::Arm(TimerName::C, now + timers.c));
            }
        } else {
            actions.push(Action::Arm(TimerName::E, now + timers.t1));
            actions.push(Action::Arm(TimerName::F, now + 64 * timers.t1));
        }
        let tx = ClientTx {
            invite,
            proxy,
            state: if invite {
                State::Calling
            } else {
                State::Trying
            },
            request,
            bytes,
            interval: timers.t1,
            ack: None,
            timers,
        };
        (tx, actions)
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn request(&self) -> &Request {
        &self.request
    }

    /// Whether a provisional response has arrived (a CANCEL may be sent only then).
    pub fn proceeding(&self) -> bool {
        self.state == State::Proceeding
    }

    /// A response matched to this transaction arrives.
    pub fn on_response(&mut self, resp: Response, now: u64) -> Vec<Action> {
        if self.invite {
            self.invite_response(resp, now)
        } else {
            self.non_invite_response(resp, now)
        }
    }

    fn invite_response(&mut self, resp: Response, now: u64) -> Vec<Action> {
        let code = resp.code;
        match (self.state, code) {
            (State::Calling | State::Proceeding, 100..=199) => {
                let mut a = Vec::new();
                if self.state == State::Calling {
                    a.push(Action::Disarm(TimerName::A));
                    a.push(Action::Disarm(TimerName::B));
                }
                self.state = State::Proceeding;
                if self.proxy && code > 100 {
                    a.push(Action::Arm(TimerName::C, now + self.timers.c));
                }
                a.push(Action::Response(resp));
                a
            }
            (State::Calling | State::Proceeding, 200..=299) => {
                self.state = State::Terminated;
                vec![Action::Response(resp), Action::Terminated]
            }
            (State::Calling | State::Proceeding, _) => {
                self.state = State::Completed;
                let ack = non_2xx_ack(&self.request, &resp).serialize();
                self.ack = Some(ack.clone());
                vec![
                    Action::Disarm(TimerName::A),
                    Action::Disarm(TimerName::B),
                    Action::Disarm(TimerName::C),
                    Action::Send(ack),
                    Action::Arm(TimerName::D, now + 64 * self.timers.t1.max(500)),
                    Action::Response(resp),
                ]
            }
            (State::Completed, 300..) => match &self.ack {
                Some(ack) => vec![Action::Send(ack.clone())],
                None => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    fn non_invite_response(&mut self, resp: Response, now: u64) -> Vec<Action> {
        match (self.state, resp.code) {
            (State::Trying | State::Proceeding, 100..=199) => {
                self.state = State::Proceeding;
                vec![Action::Response(resp)]
            }
            (State::Trying | State::Proceeding, _) => {
                self.state = State::Completed;
                vec![
                    Action::Disarm(TimerName::E),
                    Action::Disarm(TimerName::F),
                    Action::Arm(TimerName::K, now + self.timers.t4),
                    Action::Response(resp),
                ]
            }
            _ => Vec::new(),
        }
    }

    /// One of this transaction's timers fired.
    pub fn on_timer(&mut self, timer: TimerName, now: u64) -> Vec<Action> {
        match (timer, self.state) {
            (TimerName::A, State::Calling) => {
                self.interval *= 2;
                vec![
                    Action::Send(self.bytes.clone()),
                    Action::Arm(TimerName::A, now + self.interval),
                ]
            }
            (TimerName::B, State::Calling) => {
                self.state = State::Terminated;
                vec![Action::Timeout, Action::Terminated]
            }
            (TimerName::C, State::Calling | State::Proceeding) => {
                vec![Action::BranchTimeout]
            }
            (TimerName::D, State::Completed) | (TimerName::K, State::Completed) => {
                self.state = State::Terminated;
                vec![Action::Terminated]
            }
            (TimerName::E, State::Trying | State::Proceeding) => {
                self.interval = if self.state == State::Trying {
                    (self.interval * 2).min(self.timers.t2)
                } else {
                    self.timers.t2
                };
                vec![
                    Action::Send(self.bytes.clone()),
                    Action::Arm(TimerName::E, now + self.interval),
                ]
            }
            (TimerName::F, State::Trying | State::Proceeding) => {
                self.state = State::Terminated;
                vec![Action::Timeout, Action::Terminated]
            }
            _ => Vec::new(),
        }
    }

    /// The transaction user gives up on it (e.g. its call ended): it ends silently.
    pub fn abandon(&mut self) -> Vec<Action> {
        self.state = State::Terminated;
        vec![Action::Terminated]
    }
}

/// The ACK for a non-2xx final response (RFC 3261 §17.1.1.3): the INVITE's Request-URI,
/// top Via, From, Call-ID, CSeq number and Route set; To from the response.
pub fn non_2xx_ack(invite: &Request, resp: &Response) -> Request {
    let mut headers = Vec::new();
    if let Some(via) = invite.header("Via") {
        let top = super::message::split_list(via)
            .ok()
            .and_then(|v| v.first().map(|s| s.to_string()))
            .unwrap_or_else(|| via.to_string());
        headers.push(("Via".to_string(), top));
    }
    headers.push(("Max-Forwards".to_string(), "70".to_string()));
    for name in ["From", "Call-ID"] {
        if let Some(v) = invite.header(name) {
            headers.push((name.to_string(), v.to_string()));
        }
    }
    if let Some(to) = resp.header("To").or(invite.header("To")) {
        headers.push(("To".to_string(), to.to_string()));
    }
    let seq = invite
        .header("CSeq")
        .and_then(|c| parse_cseq(c).ok())
        .map(|(n, _)| n)
        .unwrap_or(1);
    headers.push(("CSeq".to_string(), format!("{seq} ACK")));
    for route in invite.headers_named("Route") {
        headers.push(("Route".to_string(), route.to_string()));
    }
    Request {
        method: "ACK".to_string(),
        uri: invite.uri.clone(),
        headers,
        body: Vec::new(),
    }
}

/// A server transaction: INVITE (§17.2.1) or non-INVITE (§17.2.2).
#[derive(Debug, Clone)]
pub struct ServerTx {
    invite: bool,
    state: State,
    /// The last response sent (resent on request retransmissions, and by Timer G).
    last: Option<Vec<u8>>,
    interval: u64,
    timers: TimerValues,
}

impl ServerTx {
    /// A server transaction for a request just received (nothing is sent yet: an INVITE's
    /// `100 Trying` is the user's first [`ServerTx::respond`]).
    pub fn new(request: &Request, timers: TimerValues) -> ServerTx {
        let invite = request.method == "INVITE";
        ServerTx {
            invite,
            state: if invite {
                State::Proceeding
            } else {
                State::Trying
            },
            last: None,
            interval: timers.t1,
            timers,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Whether a final response has been sent.
    pub fn answered(&self) -> bool {
        !matches!(self.state, State::Trying | State::Proceeding)
    }

    /// The user sends a response through the transaction.
    pub fn respond(&mut self, resp: &Response, now: u64) -> Vec<Action> {
        if self.answered() {
            return Vec::new();
        }
        let bytes = resp.serialize();
        let mut a = vec![Action::Send(bytes.clone())];
        self.last = Some(bytes);
        match (self.invite, resp.code) {
            (_, 100..=199) => {
                self.state = State::Proceeding;
            }
            (true, 200..=299) => {
                // The 2xx and its retransmissions are the user's (and the ACK is end to end).
                self.state = State::Terminated;
                a.push(Action::Terminated);
            }
            (true, _) => {
                self.state = State::Completed;
                a.push(Action::Arm(TimerName::G, now + self.timers.t1));
                a.push(Action::Arm(TimerName::H, now + 64 * self.timers.t1));
            }
            (false, _) => {
                self.state = State::Completed;
                a.push(Action::Arm(TimerName::J, now + 64 * self.timers.t1));
            }
        }
        a
    }

    /// A retransmission of the request (or, for an INVITE, its ACK) arrives.
    pub fn on_request(&mut self, req: &Request, now: u64) -> Vec<Action> {
        if self.invite && req.method == "ACK" {
            if self.state == State::Completed {
                self.state = State::Confirmed;
                return vec![
                    Action::Disarm(TimerName::G),
                    Action::Disarm(TimerName::H),
                    Action::Arm(TimerName::I, now + self.timers.t4),
                ];
            }
            return Vec::new();
        }
        match (self.state, &self.last) {
            (State::Proceeding | State::Completed, Some(last)) => vec![Action::Send(last.clone())],
            _ => Vec::new(),
        }
    }

    /// One of this transaction's timers fired.
    pub fn on_timer(&mut self, timer: TimerName, now: u64) -> Vec<Action> {
        match (timer, self.state) {
            (TimerName::G, State::Completed) => {
                self.interval = (self.interval * 2).min(self.timers.t2);
                let mut a = Vec::new();
                if let Some(last) = &self.last {
                    a.push(Action::Send(last.clone()));
                }
                a.push(Action::Arm(TimerName::G, now + self.interval));
                a
            }
            (TimerName::H, State::Completed) => {
                self.state = State::Terminated;
                vec![Action::NoAck, Action::Terminated]
            }
            (TimerName::I, State::Confirmed) | (TimerName::J, State::Completed) => {
                self.state = State::Terminated;
                vec![Action::Terminated]
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{SipMessage, parse, response_to};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn request(method: &str) -> Request {
        let text = format!(
            "{method} sip:alice@192.0.2.5 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx\r\n\
             Max-Forwards: 70\r\nFrom: <sip:bob@sb>;tag=1\r\nTo: <sip:alice@sb>\r\nCall-ID: c1\r\n\
             CSeq: 7 {method}\r\nRoute: <sip:proxy;lr>\r\n\r\n"
        );
        match parse(text.as_bytes()) {
            Ok(SipMessage::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    /// A simulated caller of one transaction: keeps the armed timers and what was sent.
    #[derive(Default)]
    struct Harness {
        timers: BTreeMap<TimerName, u64>,
        sent: Vec<(u64, Vec<u8>)>,
        to_user: Vec<Action>,
        terminated: bool,
    }

    impl Harness {
        fn apply(&mut self, now: u64, actions: Vec<Action>) {
            for a in actions {
                match a {
                    Action::Send(b) => self.sent.push((now, b)),
                    Action::Arm(t, at) => {
                        assert!(at >= now, "timer {t:?} armed in the past");
                        self.timers.insert(t, at);
                    }
                    Action::Disarm(t) => {
                        self.timers.remove(&t);
                    }
                    Action::Terminated => {
                        self.terminated = true;
                        self.timers.clear();
                    }
                    other => self.to_user.push(other),
                }
            }
        }

        /// The next timer due, removed from the armed set.
        fn next_timer(&mut self) -> Option<(TimerName, u64)> {
            let (&t, &at) = self.timers.iter().min_by_key(|(_, at)| **at)?;
            self.timers.remove(&t);
            Some((t, at))
        }

        fn run_client(&mut self, tx: &mut ClientTx, until: u64) {
            while let Some((t, at)) = self.next_timer() {
                if at > until {
                    self.timers.insert(t, at);
                    break;
                }
                let actions = tx.on_timer(t, at);
                self.apply(at, actions);
            }
        }
    }

    #[test]
    fn invite_client_retransmits_at_doubling_intervals_until_timer_b() {
        let mut h = Harness::default();
        let (mut tx, a) = ClientTx::start(request("INVITE"), 0, TimerValues::default(), false);
        h.apply(0, a);
        h.run_client(&mut tx, 100_000);
        let times: Vec<u64> = h.sent.iter().map(|(t, _)| *t).collect();
        assert_eq!(times, vec![0, 500, 1500, 3500, 7500, 15500, 31500]);
        assert_eq!(h.to_user, vec![Action::Timeout]);
        assert!(h.terminated);
    }

    #[test]
    fn invite_client_stops_retransmitting_on_a_provisional_and_passes_2xx_up() {
        let mut h = Harness::default();
        let req = request("INVITE");
        let (mut tx, a) = ClientTx::start(req.clone(), 0, TimerValues::default(), false);
        h.apply(0, a);
        let a = tx.on_response(response_to(&req, 180, "Ringing"), 200);
        h.apply(200, a);
        assert!(!h.timers.contains_key(&TimerName::A));
        assert!(tx.proceeding());
        let a = tx.on_response(response_to(&req, 200, "OK"), 5_000);
        h.apply(5_000, a);
        assert!(h.terminated);
        assert_eq!(h.sent.len(), 1, "no ACK for a 2xx from the transaction");
        assert!(
            matches!(&h.to_user[..], [Action::Response(r1), Action::Response(r2)]
            if r1.code == 180 && r2.code == 200)
        );
    }

    #[test]
    fn invite_client_acks_a_busy_and_absorbs_its_retransmissions_until_timer_d() {
        let mut h = Harness::default();
        let req = request("INVITE");
        let (mut tx, a) = ClientTx::start(req.clone(), 0, TimerValues::default(), false);
        h.apply(0, a);
        let busy = response_to(&req, 486, "Busy Here");
        let a = tx.on_response(busy.clone(), 100);
        h.apply(100, a);
        assert_eq!(tx.state(), State::Completed);
        let ack = String::from_utf8_lossy(&h.sent[1].1).to_string();
        assert!(ack.starts_with("ACK sip:alice@192.0.2.5 SIP/2.0"), "{ack}");
        assert!(ack.contains("CSeq: 7 ACK"));
        assert!(ack.contains("Route: <sip:proxy;lr>"));
        assert!(
            ack.contains(";tag="),
            "To carries the response's tag: {ack}"
        );
        let a = tx.on_response(busy, 600);
        h.apply(600, a);
        assert_eq!(
            h.sent.len(),
            3,
            "the ACK is resent for a retransmitted final"
        );
        assert_eq!(h.sent[2].1, h.sent[1].1);
        assert_eq!(h.to_user.len(), 1, "the retransmission is not passed up");
        h.run_client(&mut tx, 100_000);
        assert!(h.terminated);
        assert_eq!(h.sent.len(), 3);
    }

    #[test]
    fn proxy_branch_timer_c_fires_while_ringing_and_is_reset_by_provisionals() {
        let mut h = Harness::default();
        let req = request("INVITE");
        let v = TimerValues::default();
        let (mut tx, a) = ClientTx::start(req.clone(), 0, v, true);
        h.apply(0, a);
        let a = tx.on_response(response_to(&req, 180, "Ringing"), 10_000);
        h.apply(10_000, a);
        assert_eq!(h.timers.get(&TimerName::C), Some(&(10_000 + v.c)));
        h.run_client(&mut tx, 10_000 + v.c);
        assert_eq!(h.to_user.last(), Some(&Action::BranchTimeout));
        assert!(
            !h.terminated,
            "a proceeding branch waits for its user to cancel it"
        );
    }

    #[test]
    fn non_invite_client_caps_retransmissions_at_t2_and_times_out_with_timer_f() {
        let mut h = Harness::default();
        let (mut tx, a) = ClientTx::start(request("BYE"), 0, TimerValues::default(), false);
        h.apply(0, a);
        h.run_client(&mut tx, 100_000);
        let times: Vec<u64> = h.sent.iter().map(|(t, _)| *t).collect();
        assert_eq!(
            times,
            vec![
                0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
            ]
        );
        assert_eq!(h.to_user, vec![Action::Timeout]);
    }

    #[test]
    fn non_invite_client_completes_and_lingers_for_timer_k() {
        let mut h = Harness::default();
        let req = request("BYE");
        let (mut tx, a) = ClientTx::start(req.clone(), 0, TimerValues::default(), false);
        h.apply(0, a);
        let a = tx.on_response(response_to(&req, 200, "OK"), 700);
        h.apply(700, a);
        assert_eq!(h.timers.get(&TimerName::K), Some(&5_700));
        assert!(tx.on_response(response_to(&req, 200, "OK"), 800).is_empty());
        h.run_client(&mut tx, 10_000);
        assert!(h.terminated);
        assert_eq!(h.sent.len(), 1);
    }

    #[test]
    fn invite_server_resends_the_final_with_timer_g_until_the_ack_then_waits_timer_i() {
        let mut h = Harness::default();
        let req = request("INVITE");
        let mut tx = ServerTx::new(&req, TimerValues::default());
        let a = tx.respond(&response_to(&req, 100, "Trying"), 0);
        h.apply(0, a);
        let a = tx.on_request(&req, 300);
        h.apply(300, a);
        assert_eq!(
            h.sent.len(),
            2,
            "a retransmitted INVITE gets the provisional again"
        );
        let a = tx.respond(&response_to(&req, 487, "Request Terminated"), 1_000);
        h.apply(1_000, a);
        // G at 1.5 s, 2.5 s, 4.5 s, then the ACK.
        for _ in 0..3 {
            let (t, at) = h.next_timer().unwrap();
            assert_eq!(t, TimerName::G);
            let a = tx.on_timer(t, at);
            h.apply(at, a);
        }
        let times: Vec<u64> = h.sent.iter().map(|(t, _)| *t).collect();
        assert_eq!(times, vec![0, 300, 1_000, 1_500, 2_500, 4_500]);
        let a = tx.on_request(&non_2xx_ack(&req, &response_to(&req, 487, "x")), 5_000);
        h.apply(5_000, a);
        assert_eq!(tx.state(), State::Confirmed);
        assert_eq!(
            h.timers.keys().copied().collect::<Vec<_>>(),
            vec![TimerName::I]
        );
        let (t, at) = h.next_timer().unwrap();
        let a = tx.on_timer(t, at);
        h.apply(at, a);
        assert!(h.terminated);
    }

    #[test]
    fn invite_server_gives_up_at_timer_h_without_an_ack() {
        let mut h = Harness::default();
        let req = request("INVITE");
        let mut tx = ServerTx::new(&req, TimerValues::default());
        let a = tx.respond(&response_to(&req, 404, "Not Found"), 0);
        h.apply(0, a);
        while let Some((t, at)) = h.next_timer() {
            let a = tx.on_timer(t, at);
            h.apply(at, a);
        }
        assert_eq!(h.to_user, vec![Action::NoAck]);
        assert!(h.terminated);
        assert!(h.sent.iter().all(|(t, _)| *t < 32_000));
        let gaps: Vec<u64> = h.sent.windows(2).map(|w| w[1].0 - w[0].0).collect();
        assert!(gaps.iter().all(|g| *g <= 4_000));
    }

    #[test]
    fn invite_server_hands_a_2xx_to_the_user_and_ends() {
        let req = request("INVITE");
        let mut tx = ServerTx::new(&req, TimerValues::default());
        let a = tx.respond(&response_to(&req, 200, "OK"), 0);
        assert!(a.contains(&Action::Terminated));
        assert!(tx.respond(&response_to(&req, 500, "x"), 1).is_empty());
    }

    #[test]
    fn non_invite_server_answers_retransmissions_until_timer_j() {
        let mut h = Harness::default();
        let req = request("BYE");
        let mut tx = ServerTx::new(&req, TimerValues::default());
        assert!(tx.on_request(&req, 0).is_empty(), "nothing to resend yet");
        let a = tx.respond(&response_to(&req, 200, "OK"), 10);
        h.apply(10, a);
        let a = tx.on_request(&req, 20);
        h.apply(20, a);
        assert_eq!(h.sent.len(), 2);
        assert_eq!(h.sent[0].1, h.sent[1].1);
        assert_eq!(h.timers.get(&TimerName::J), Some(&32_010));
        let (t, at) = h.next_timer().unwrap();
        let a = tx.on_timer(t, at);
        h.apply(at, a);
        assert!(h.terminated);
    }

    proptest! {
        /// Whatever the arrival times of responses, a client transaction terminates (or, an
        /// INVITE that got a provisional, waits for its user), never sends after it terminated, never arms a
        /// timer in the past, and passes at most one final response up.
        #[test]
        fn client_transactions_always_end_and_pass_one_final_up(
            invite in any::<bool>(),
            responses in proptest::collection::vec((0u64..40_000, 100u16..700), 0..8),
        ) {
            let req = request(if invite { "INVITE" } else { "OPTIONS" });
            let mut h = Harness::default();
            let (mut tx, a) = ClientTx::start(req.clone(), 0, TimerValues::default(), false);
            h.apply(0, a);
            let mut responses = responses;
            responses.sort();
            for (at, code) in responses {
                h.run_client(&mut tx, at);
                if h.terminated { break; }
                let a = tx.on_response(response_to(&req, code, "x"), at);
                h.apply(at, a);
            }
            h.run_client(&mut tx, u64::MAX);
            // Only a ringing INVITE waits on (for its user's CANCEL); all else has ended.
            prop_assert!(h.terminated || (invite && tx.proceeding()));
            let finals = h.to_user.iter().filter(|a| match a {
                Action::Response(r) => r.code >= 300 || (!invite && r.code >= 200),
                Action::Timeout => true,
                _ => false,
            }).count();
            prop_assert!(finals <= 1);
            let last_send = h.sent.iter().map(|(t, _)| *t).max().unwrap_or(0);
            prop_assert!(last_send <= 64 * 500 + 40_000);
        }
    }
}
