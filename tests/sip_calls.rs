//! Integration tests of real phone calls over UDP (docs/sip-calls.md): a trunk and an agent's
//! phone, each a plain UDP socket speaking SIP by hand, call through a TestServer's SIP port.
//! Nothing waits for a deadline: replies that must come are awaited with a bound.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::{TestServer, test_config};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use switchboard::core::{BindingUpdate, Command};
use switchboard::sip::message::{Request, Response, SipMessage, parse};
use tokio::net::UdpSocket;

const ANSWER: Duration = Duration::from_secs(5);
const SDP_OFFER: &str = "v=0\r\no=caller 1 1 IN IP4 192.0.2.7\r\ns=-\r\nc=IN IP4 192.0.2.7\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n";
const SDP_ANSWER: &str = "v=0\r\no=phone 2 2 IN IP4 192.0.2.8\r\ns=-\r\nc=IN IP4 192.0.2.8\r\nt=0 0\r\nm=audio 50000 RTP/AVP 0\r\n";

/// One SIP endpoint: a socket and what it received but nobody asked for yet.
struct Peer {
    sock: UdpSocket,
    server: SocketAddr,
    inbox: Vec<(SipMessage, SocketAddr)>,
}

impl Peer {
    async fn new(server: &TestServer) -> Peer {
        Peer {
            sock: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            server: server.sip_addr.unwrap(),
            inbox: Vec::new(),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    async fn send(&self, text: &str) {
        self.send_to(text.as_bytes(), self.server).await;
    }

    async fn send_to(&self, bytes: &[u8], to: SocketAddr) {
        self.sock.send_to(bytes, to).await.unwrap();
    }

    /// The first message (kept or new) that `pred` accepts; others are kept.
    async fn expect(&mut self, what: &str, pred: impl Fn(&SipMessage) -> bool) -> SipMessage {
        if let Some(i) = self.inbox.iter().position(|(m, _)| pred(m)) {
            return self.inbox.remove(i).0;
        }
        let mut buf = vec![0u8; 65_536];
        let found = tokio::time::timeout(ANSWER, async {
            loop {
                let (n, src) = self.sock.recv_from(&mut buf).await.unwrap();
                let Ok(m) = parse(&buf[..n]) else { continue };
                if pred(&m) {
                    return m;
                }
                self.inbox.push((m, src));
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("no {what} within {ANSWER:?}; kept {:?}", self.inbox))
    }

    async fn response(&mut self, code: u16, method: &str) -> Response {
        let m = self
            .expect(&format!("{code} to {method}"), |m| {
                matches!(m, SipMessage::Response(r) if r.code == code
                    && r.header("CSeq").is_some_and(|c| c.ends_with(method)))
            })
            .await;
        match m {
            SipMessage::Response(r) => r,
            _ => unreachable!(),
        }
    }

    async fn request(&mut self, method: &str) -> Request {
        let m = self
            .expect(
                method,
                |m| matches!(m, SipMessage::Request(r) if r.method == method),
            )
            .await;
        match m {
            SipMessage::Request(r) => r,
            _ => unreachable!(),
        }
    }

    /// Answers a request with `code`, adding `extra` header lines and a body.
    async fn reply(&self, req: &Request, code: u16, extra: &[String], body: &str) {
        self.reply_tagged(req, code, extra, body, "phone1").await;
    }

    /// [`Peer::reply`] with our own To tag `tag`.
    async fn reply_tagged(
        &self,
        req: &Request,
        code: u16,
        extra: &[String],
        body: &str,
        tag: &str,
    ) {
        let mut resp = switchboard::sip::message::response_to(req, code, "X");
        for (n, v) in &req.headers {
            if n.eq_ignore_ascii_case("Record-Route") {
                resp.push_header("Record-Route", v.clone());
            }
        }
        if code > 100 {
            // A stable tag of our own.
            if let Some((_, to)) = resp.headers.iter_mut().find(|(n, _)| n == "To") {
                if let Some(i) = to.find(";tag=") {
                    to.truncate(i);
                }
                to.push_str(";tag=");
                to.push_str(tag);
            }
        }
        for line in extra {
            let (n, v) = line.split_once(": ").unwrap();
            resp.push_header(n, v.to_string());
        }
        if !body.is_empty() {
            resp = resp.with_body("application/sdp", body.as_bytes().to_vec());
        }
        self.send_to(&resp.serialize(), self.server).await;
    }
}

fn invite(trunk: &Peer, queue: &str, call_id: &str) -> String {
    format!(
        "INVITE sip:{queue}@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-{call_id}-1;rport\r\n\
         Max-Forwards: 70\r\nFrom: \"Ann\" <sip:+15551234@{me}>;tag=trunk1\r\nTo: <sip:{queue}@{server}>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:+15551234@{me}>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{SDP_OFFER}",
        server = trunk.server,
        me = trunk.addr(),
        len = SDP_OFFER.len(),
    )
}

fn trunk_config() -> switchboard::config::Config {
    let mut cfg = test_config();
    cfg.sip.trunks = vec!["127.0.0.1".into()];
    cfg.resilience.heartbeat_interval = Duration::from_secs(3600);
    cfg.resilience.heartbeat_timeout = Duration::from_secs(7200);
    cfg
}

async fn register_phone(server: &TestServer, agent: &str, phone: &Peer) {
    let contact = format!("sip:{agent}@{}", phone.addr());
    common::call(
        server,
        Command::SipRegister {
            agent: agent.into(),
            update: BindingUpdate::Set(vec![(contact, 30)]),
        },
    )
    .await;
}

async fn voice_conversations(server: &TestServer) -> Vec<Value> {
    let sam = server.token("sam").await;
    let (status, body) = server
        .http
        .get("/api/v1/conversations?channel=voice", Some(&sam))
        .await;
    assert_eq!(status, 200, "{body}");
    body.as_array().cloned().unwrap_or_default()
}

async fn wait_conversation(server: &TestServer, pred: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..200 {
        if let Some(c) = voice_conversations(server).await.into_iter().find(&pred) {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "no such conversation: {:?}",
        voice_conversations(server).await
    );
}

/// Alice logged in with her panel open and her phone registered.
async fn alice_ready(server: &TestServer, phone: &Peer) -> (String, common::Ws) {
    let token = server.token("alice").await;
    let (ws, _) = server.panel(&token).await;
    register_phone(server, "alice", phone).await;
    (token, ws)
}

/// A call from the trunk answered on alice's phone; returns the INVITE the phone got.
async fn answered_call(trunk: &mut Peer, phone: &mut Peer, call_id: &str) -> Request {
    trunk.send(&invite(trunk, "phones", call_id)).await;
    trunk.response(100, "INVITE").await;
    trunk.response(180, "INVITE").await;
    let ring = phone.request("INVITE").await;
    phone.reply(&ring, 180, &[], "").await;
    let contact = format!("Contact: <sip:alice@{}>", phone.addr());
    phone.reply(&ring, 200, &[contact], SDP_ANSWER).await;
    let ok = trunk.response(200, "INVITE").await;
    assert_eq!(String::from_utf8_lossy(&ok.body), SDP_ANSWER);
    ring
}

#[tokio::test]
async fn a_trunk_call_rings_the_agents_phone_and_connects_with_sdp_untouched() {
    let server = TestServer::start_with(trunk_config()).await;
    let mut trunk = Peer::new(&server).await;
    let mut phone = Peer::new(&server).await;
    let (_token, _ws) = alice_ready(&server, &phone).await;

    let ring = answered_call(&mut trunk, &mut phone, "call-a").await;
    assert_eq!(
        String::from_utf8_lossy(&ring.body),
        SDP_OFFER,
        "the caller's SDP"
    );
    assert!(ring.uri.contains(&phone.addr().to_string()), "{}", ring.uri);
    let rr = ring.header("Record-Route").expect("record-routed");
    assert!(rr.contains(&server.sip_addr.unwrap().to_string()), "{rr}");
    let c = wait_conversation(&server, |c| c["status"] == "in_process").await;
    assert_eq!(c["agent"], "alice");
    assert_eq!(c["customer"]["address"], "+15551234");

    // The caller's ACK and BYE go through switchboard to the phone.
    let route = format!("Route: {rr}");
    let ack = format!(
        "ACK sip:alice@{phone} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-ack;rport\r\n{route}\r\n\
         Max-Forwards: 70\r\nFrom: \"Ann\" <sip:+15551234@{me}>;tag=trunk1\r\n\
         To: <sip:phones@x>;tag=phone1\r\nCall-ID: call-a\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        phone = phone.addr(),
        me = trunk.addr()
    );
    trunk.send(&ack).await;
    phone.request("ACK").await;
    let bye = ack
        .replace("ACK sip", "BYE sip")
        .replace("1 ACK", "2 BYE")
        .replace("z9hG4bK-ack", "z9hG4bK-bye");
    trunk.send(&bye).await;
    let bye_at_phone = phone.request("BYE").await;
    phone.reply(&bye_at_phone, 200, &[], "").await;
    trunk.response(200, "BYE").await;
    let c = wait_conversation(&server, |c| c["status"] == "wrap_up").await;
    assert_eq!(c["disconnect_reason"], "CustomerEnded");
    assert_eq!(c["disconnect_party"], "customer");
}

#[tokio::test]
async fn a_caller_who_cancels_while_queued_gets_487_and_is_abandoned() {
    let server = TestServer::start_with(trunk_config()).await;
    let mut trunk = Peer::new(&server).await;
    trunk.send(&invite(&trunk, "phones", "call-c")).await;
    trunk.response(180, "INVITE").await;
    wait_conversation(&server, |c| c["status"] == "in_queue").await;
    let cancel = format!(
        "CANCEL sip:phones@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-call-c-1;rport\r\n\
         Max-Forwards: 70\r\nFrom: \"Ann\" <sip:+15551234@{me}>;tag=trunk1\r\nTo: <sip:phones@{server}>\r\n\
         Call-ID: call-c\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n",
        server = trunk.server,
        me = trunk.addr()
    );
    trunk.send(&cancel).await;
    trunk.response(200, "CANCEL").await;
    trunk.response(487, "INVITE").await;
    let c = wait_conversation(&server, |c| c["status"] == "abandoned").await;
    assert_eq!(c["disconnect_reason"], "CustomerAbandoned");
}

#[tokio::test]
async fn calls_from_strangers_and_to_unknown_queues_are_refused() {
    let mut cfg = trunk_config();
    cfg.sip.trunks = vec!["192.0.2.0/24".into()];
    let server = TestServer::start_with(cfg).await;
    let mut stranger = Peer::new(&server).await;
    stranger.send(&invite(&stranger, "phones", "call-s")).await;
    stranger.response(403, "INVITE").await;

    let server = TestServer::start_with(trunk_config()).await;
    let mut trunk = Peer::new(&server).await;
    trunk.send(&invite(&trunk, "nowhere", "call-n")).await;
    trunk.response(404, "INVITE").await;
    trunk.send(&invite(&trunk, "support", "call-n2")).await;
    trunk.response(404, "INVITE").await;
    assert!(voice_conversations(&server).await.is_empty());
}

#[tokio::test]
async fn a_busy_phone_sends_the_call_back_to_the_queue_and_the_panel_cannot_accept_it() {
    let server = TestServer::start_with(trunk_config()).await;
    let trunk = Peer::new(&server).await;
    let mut phone = Peer::new(&server).await;
    let (token, _ws) = alice_ready(&server, &phone).await;
    trunk.send(&invite(&trunk, "phones", "call-b")).await;
    let ring = phone.request("INVITE").await;
    phone.reply(&ring, 180, &[], "").await;
    let c = wait_conversation(&server, |c| c["status"] == "offered").await;
    let id = c["id"].as_str().unwrap().to_string();
    let (status, body) = server
        .http
        .post(
            &format!("/api/v1/conversations/{id}/accept"),
            Some(&token),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "answer_on_phone");
    phone.reply(&ring, 486, &[], "").await;
    phone.request("ACK").await;
    let c = wait_conversation(&server, |c| c["status"] == "in_queue").await;
    assert_eq!(c["agent"], Value::Null);
}

#[tokio::test]
async fn a_lost_panel_hangs_up_both_sides_of_the_call() {
    let server = TestServer::start_with(trunk_config()).await;
    let mut trunk = Peer::new(&server).await;
    let mut phone = Peer::new(&server).await;
    let (_token, ws) = alice_ready(&server, &phone).await;
    answered_call(&mut trunk, &mut phone, "call-l").await;
    wait_conversation(&server, |c| c["status"] == "in_process").await;
    drop(ws);
    let to_caller = trunk.request("BYE").await;
    let to_phone = phone.request("BYE").await;
    assert_eq!(to_caller.header("Call-ID"), Some("call-l"));
    assert!(to_phone.header("To").unwrap().contains("tag=phone1"));
    let c = wait_conversation(&server, |c| c["status"] == "wrap_up").await;
    assert_eq!(c["disconnect_reason"], "AgentConnectionLost");
}

#[tokio::test]
async fn a_call_survives_a_restart_and_a_later_bye_reaches_the_caller() {
    let server = TestServer::start_with(trunk_config()).await;
    let mut trunk = Peer::new(&server).await;
    let mut phone = Peer::new(&server).await;
    let (_token, _ws) = alice_ready(&server, &phone).await;
    answered_call(&mut trunk, &mut phone, "call-r").await;
    wait_conversation(&server, |c| c["status"] == "in_process").await;

    let server = server.restart(Duration::from_secs(1)).await;
    // The phones keep their addresses; the server has a new port in this test.
    phone.server = server.sip_addr.unwrap();
    trunk.server = server.sip_addr.unwrap();
    let bye = format!(
        "BYE sip:+15551234@{trunk} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-pbye;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:phones@x>;tag=phone1\r\nTo: \"Ann\" <sip:+15551234@{trunk}>;tag=trunk1\r\n\
         Call-ID: call-r\r\nCSeq: 5 BYE\r\nContent-Length: 0\r\n\r\n",
        trunk = trunk.addr(),
        me = phone.addr()
    );
    phone.send(&bye).await;
    let at_caller = trunk.request("BYE").await;
    trunk.reply(&at_caller, 200, &[], "").await;
    phone.response(200, "BYE").await;
    let c = wait_conversation(&server, |c| c["status"] == "wrap_up").await;
    assert_eq!(c["disconnect_reason"], "AgentEnded");
}

#[tokio::test]
async fn a_callback_rings_the_phone_then_the_customer_through_the_outbound_proxy() {
    let customer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = trunk_config();
    cfg.sip.outbound_proxy = Some(format!("sip:{}", customer.local_addr().unwrap()));
    let server = TestServer::start_with(cfg).await;
    let mut customer = Peer {
        sock: customer,
        server: server.sip_addr.unwrap(),
        inbox: Vec::new(),
    };
    let mut trunk = Peer::new(&server).await;
    let mut phone = Peer::new(&server).await;
    let (token, _ws) = alice_ready(&server, &phone).await;
    answered_call(&mut trunk, &mut phone, "call-cb").await;
    let c = wait_conversation(&server, |c| c["status"] == "in_process").await;
    let id = c["id"].as_str().unwrap().to_string();
    let (status, body) = server
        .http
        .post(
            &format!("/api/v1/conversations/{id}/end"),
            Some(&token),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let bye = phone.request("BYE").await;
    phone.reply(&bye, 200, &[], "").await;

    let (status, body) = server
        .http
        .post(
            &format!("/api/v1/conversations/{id}/callback"),
            Some(&token),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "offered", "dialling: {body}");
    let new = body["id"].as_str().unwrap().to_string();

    // The agent's phone first, without SDP; its answer carries the offer.
    let ring = phone.request("INVITE").await;
    assert!(ring.body.is_empty(), "{ring:?}");
    assert!(ring.header("From").unwrap().contains("+15551234"));
    let contact = format!("Contact: <sip:alice@{}>", phone.addr());
    phone.reply(&ring, 200, &[contact], SDP_ANSWER).await;

    // Then the customer, through the outbound proxy, with the phone's offer.
    let out = customer.request("INVITE").await;
    assert!(out.uri.starts_with("sip:+15551234@"), "{}", out.uri);
    assert_eq!(String::from_utf8_lossy(&out.body), SDP_ANSWER);
    let contact = format!("Contact: <sip:+15551234@{}>", customer.addr());
    customer
        .reply_tagged(&out, 200, &[contact], SDP_OFFER, "cust1")
        .await;
    customer.request("ACK").await;
    let ack = phone.request("ACK").await;
    assert_eq!(
        String::from_utf8_lossy(&ack.body),
        SDP_OFFER,
        "the customer's answer"
    );
    let c = wait_conversation(&server, |c| {
        c["id"] == new.as_str() && c["status"] == "in_process"
    })
    .await;
    assert_eq!(c["agent"], "alice");

    // The customer hangs up: the phone gets a BYE, the conversation goes to wrap-up.
    let bye = format!(
        "BYE sip:{server} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-cbye;rport\r\n\
         Max-Forwards: 70\r\nFrom: {to};tag=cust1\r\nTo: {from}\r\nCall-ID: {call_id}\r\nCSeq: 7 BYE\r\n\
         Content-Length: 0\r\n\r\n",
        server = customer.server,
        me = customer.addr(),
        to = out.header("To").unwrap(),
        from = out.header("From").unwrap(),
        call_id = out.header("Call-ID").unwrap(),
    );
    customer.send(&bye).await;
    customer.response(200, "BYE").await;
    let at_phone = phone.request("BYE").await;
    phone.reply(&at_phone, 200, &[], "").await;
    let c = wait_conversation(&server, |c| {
        c["id"] == new.as_str() && c["status"] == "wrap_up"
    })
    .await;
    assert_eq!(c["disconnect_reason"], "CustomerEnded");
}

/// How much real time a test step may take on top of the simulated clock's steps.
const PACE_MS: i64 = 3_000;

fn ms(v: &Value) -> i64 {
    let s = v.as_str().unwrap_or_else(|| panic!("a time: {v}"));
    switchboard::core::Timestamp::parse_rfc3339(s)
        .expect("RFC 3339")
        .0
}

#[tokio::test]
async fn the_panel_learns_when_the_phone_answered_and_the_calls_length_after_it_ends() {
    let server = TestServer::start_with(trunk_config()).await;
    let mut trunk = Peer::new(&server).await;
    let mut phone = Peer::new(&server).await;
    let (token, mut ws) = alice_ready(&server, &phone).await;
    trunk.send(&invite(&trunk, "phones", "call-t")).await;
    let ring = phone.request("INVITE").await;
    phone.reply(&ring, 180, &[], "").await;
    let offered = common::wait_for(&mut ws, |f| {
        f["type"] == "conversation" && f["conversation"]["status"] == "offered"
    })
    .await;
    assert_eq!(offered["conversation"]["answered_at"], Value::Null);
    let id = offered["conversation"]["id"].as_str().unwrap().to_string();
    let created = ms(&offered["conversation"]["created_at"]);

    // The phone rings for 4 s (simulated), then is picked up.
    server.advance(Duration::from_secs(4)).await;
    let contact = format!("Contact: <sip:alice@{}>", phone.addr());
    phone.reply(&ring, 200, &[contact], SDP_ANSWER).await;
    trunk.response(200, "INVITE").await;
    let talking = common::wait_for(&mut ws, |f| {
        f["type"] == "conversation" && f["conversation"]["status"] == "in_process"
    })
    .await;
    let answered = ms(&talking["conversation"]["answered_at"]);
    // The test clock also runs with real time: allow for the test's own pace.
    let rang = answered - created;
    assert!(
        (4_000..4_000 + PACE_MS).contains(&rang),
        "answered when the phone picked up, {rang} ms after the call came in"
    );

    // A reload (the snapshot) and Conversation Details say the same.
    let (status, snap) = server.http.get("/api/v1/agent/state", Some(&token)).await;
    assert_eq!(status, 200, "{snap}");
    let held = snap["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id.as_str())
        .expect("the call in the snapshot");
    assert_eq!(ms(&held["answered_at"]), answered);
    let sam = server.token("sam").await;
    let (status, details) = server
        .http
        .get(&format!("/api/v1/conversations/{id}"), Some(&sam))
        .await;
    assert_eq!(status, 200, "{details}");
    assert_eq!(ms(&details["answered_at"]), answered);
    let accepted = details["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "accepted")
        .expect("accepted event");
    assert_eq!(ms(&accepted["at"]), answered);

    // Three minutes and seven seconds later (the phone refreshing its registration) the agent
    // ends the call.
    for step in [20; 9].into_iter().chain([7]) {
        register_phone(&server, "alice", &phone).await;
        server.advance(Duration::from_secs(step)).await;
    }
    let (status, body) = server
        .http
        .post(
            &format!("/api/v1/conversations/{id}/end"),
            Some(&token),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let ended = common::wait_for(&mut ws, |f| {
        f["type"] == "conversation" && f["conversation"]["status"] == "wrap_up"
    })
    .await;
    let c = &ended["conversation"];
    assert_eq!(ms(&c["answered_at"]), answered, "kept after the call");
    let length = ms(&c["ended_at"]) - answered;
    assert!(
        (187_000..187_000 + PACE_MS).contains(&length),
        "the call lasted {length} ms"
    );
}
