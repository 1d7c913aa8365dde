//! Integration tests of the SIP registrar over real UDP (docs/sip.md): a minimal user agent client
//! built here talks to a TestServer's SIP socket; binding expiry runs on the manual clock.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::{START_WALL, TestServer};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use switchboard::core::model::{Presence, Role};
use switchboard::core::{Command, Reply};
use switchboard::driver::{FrameRx, Outgoing};
use switchboard::sip::message::{Response, SipMessage, parse};
use switchboard::sip::registrar::{digest_ha1, digest_response};
use tokio::net::UdpSocket;

/// How long to wait for an answer that must come.
const ANSWER: Duration = Duration::from_secs(5);
/// How long to listen for an answer that must not come.
const SILENCE: Duration = Duration::from_millis(300);

/// A minimal SIP user agent client: one UDP socket, one Call-ID, CSeq counting up, digest
/// credentials computed from the last challenge.
struct Uac {
    sock: UdpSocket,
    server: SocketAddr,
    user: String,
    password: String,
    call_id: String,
    cseq: u32,
    /// (nonce, opaque, nonce count) from the last 401.
    challenge: Option<(String, String, u32)>,
}

impl Uac {
    async fn new(server: &TestServer, user: &str, password: &str) -> Uac {
        let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind uac");
        let local = sock.local_addr().expect("local addr");
        Uac {
            sock,
            server: server.sip_addr.expect("sip enabled"),
            user: user.into(),
            password: password.into(),
            call_id: format!("{user}-{}@127.0.0.1", local.port()),
            cseq: 0,
            challenge: None,
        }
    }

    fn local(&self) -> SocketAddr {
        self.sock.local_addr().expect("local addr")
    }

    /// This UAC's own contact URI.
    fn contact(&self) -> String {
        format!("sip:{}@{}", self.user, self.local())
    }

    fn request_uri(&self) -> String {
        format!("sip:{}", self.server)
    }

    /// A request text with the next CSeq; `extra` are more header lines.
    fn request(&mut self, method: &str, extra: &[String]) -> String {
        self.cseq += 1;
        let mut text = format!(
            "{method} {uri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK-{port}-{cseq};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{user}@{server}>;tag=uac-{port}\r\n\
             To: <sip:{user}@{server}>\r\n\
             Call-ID: {cid}\r\n\
             CSeq: {cseq} {method}\r\n",
            uri = self.request_uri(),
            local = self.local(),
            port = self.local().port(),
            cid = self.call_id,
            cseq = self.cseq,
            user = self.user,
            server = self.server,
        );
        for line in extra {
            text.push_str(line);
            text.push_str("\r\n");
        }
        text.push_str("Content-Length: 0\r\n\r\n");
        text
    }

    /// The Authorization header answering the last challenge (next nonce count).
    fn authorization(&mut self, method: &str) -> String {
        let uri = self.request_uri();
        let (nonce, opaque, nc) = self.challenge.as_mut().expect("challenged before");
        *nc += 1;
        let nc = format!("{nc:08x}");
        let cnonce = format!("c{}", self.cseq);
        let realm = "switchboard";
        let ha1 = digest_ha1(&self.user, realm, &self.password);
        let response = digest_response(&ha1, nonce, &nc, &cnonce, "auth", method, &uri);
        format!(
            "Authorization: Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", \
             uri=\"{uri}\", response=\"{response}\", algorithm=MD5, cnonce=\"{cnonce}\", \
             opaque=\"{opaque}\", qop=auth, nc={nc}",
            user = self.user,
        )
    }

    async fn send(&self, bytes: &[u8]) {
        self.sock.send_to(bytes, self.server).await.expect("send");
    }

    /// The next response to this UAC's current CSeq, within `wait`.
    async fn answer_within(&mut self, wait: Duration) -> Option<Response> {
        let mut buf = vec![0u8; 65_536];
        let want = format!("{} ", self.cseq);
        let resp = tokio::time::timeout(wait, async {
            loop {
                let (n, _) = self.sock.recv_from(&mut buf).await.expect("recv");
                let Ok(SipMessage::Response(resp)) = parse(&buf[..n]) else {
                    panic!(
                        "the server sent something that is not a SIP response: {:?}",
                        String::from_utf8_lossy(&buf[..n])
                    );
                };
                if resp.header("CSeq").unwrap_or_default().starts_with(&want) {
                    return resp;
                }
            }
        })
        .await
        .ok()?;
        if resp.code == 401 {
            self.remember_challenge(&resp);
        }
        Some(resp)
    }

    async fn answer(&mut self) -> Response {
        self.answer_within(ANSWER)
            .await
            .expect("a SIP response within 5 s")
    }

    fn remember_challenge(&mut self, resp: &Response) {
        let h = resp
            .header("WWW-Authenticate")
            .expect("401 has a challenge");
        self.challenge = Some((
            param(h, "nonce").expect("nonce").to_string(),
            param(h, "opaque").unwrap_or_default().to_string(),
            0,
        ));
    }

    /// Sends a request (without credentials) and returns the answer.
    async fn call(&mut self, method: &str, extra: &[String]) -> Response {
        let text = self.request(method, extra);
        self.send(text.as_bytes()).await;
        self.answer().await
    }

    /// Sends a REGISTER with credentials for the last challenge and returns the answer.
    async fn register_with_credentials(&mut self, extra: &[String]) -> Response {
        let mut lines = extra.to_vec();
        lines.push(self.authorization("REGISTER"));
        self.call("REGISTER", &lines).await
    }

    /// REGISTER: first without credentials (must be challenged), then with them.
    async fn register(&mut self, extra: &[String]) -> Response {
        let first = self.call("REGISTER", extra).await;
        assert_eq!(first.code, 401, "unauthenticated REGISTER is challenged");
        self.register_with_credentials(extra).await
    }

    /// Registers this UAC's own contact for `secs`; asserts the 200.
    async fn register_for(&mut self, secs: u32) -> Response {
        let contact = format!("Contact: <{}>", self.contact());
        let resp = self.register(&[contact, format!("Expires: {secs}")]).await;
        assert_eq!(resp.code, 200, "REGISTER accepted: {resp:?}");
        resp
    }
}

/// A `name=value` or `name="value"` parameter of a challenge header.
fn param<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(',').find_map(|part| {
        let part = part.trim();
        let part = part.strip_prefix("Digest ").unwrap_or(part).trim();
        let (n, v) = part.split_once('=')?;
        (n.trim().eq_ignore_ascii_case(name)).then(|| v.trim().trim_matches('"'))
    })
}

/// The bindings a 200 lists: (contact URI, expires).
fn bindings(resp: &Response) -> Vec<(String, u32)> {
    resp.headers_named("Contact")
        .map(|c| {
            let (uri, rest) = c.split_once('>').expect("Contact <uri>");
            let secs = rest
                .split(';')
                .find_map(|p| p.trim().strip_prefix("expires="))
                .expect("expires param")
                .parse()
                .expect("expires number");
            (uri.trim_start_matches('<').to_string(), secs)
        })
        .collect()
}

/// Logs an agent in directly through the core (the password check is the HTTP adapter's) and
/// returns its token hash.
async fn log_in(server: &TestServer, agent: &str) -> [u8; 32] {
    let token = switchboard::http::extract::token_hash(&format!("{agent}-token"));
    let reply = server
        .handle
        .call(Command::Login {
            user: agent.into(),
            role: Role::Agent,
            token,
        })
        .await
        .expect("login");
    assert!(matches!(reply, Reply::LoggedIn { .. }));
    token
}

/// The next panel frame as JSON, within 5 s.
async fn next_frame(rx: &mut FrameRx) -> Value {
    match tokio::time::timeout(ANSWER, rx.recv())
        .await
        .expect("panel frame within 5 s")
        .expect("panel stream open")
    {
        Outgoing::Text(t) => serde_json::from_str(&t).expect("json frame"),
        Outgoing::Close(code, reason) => panic!("panel closed: {code} {reason}"),
    }
}

/// Panel frames until one matches `pred`.
async fn frame_where(rx: &mut FrameRx, mut pred: impl FnMut(&Value) -> bool) -> Value {
    loop {
        let f = next_frame(rx).await;
        if pred(&f) {
            return f;
        }
    }
}

fn is_capabilities(f: &Value) -> bool {
    f["type"] == "capabilities"
}

fn is_banners(f: &Value) -> bool {
    f["type"] == "banners"
}

#[tokio::test]
async fn register_is_challenged_then_accepted_listing_the_binding_with_its_expiry() {
    let server = TestServer::start().await;
    let mut uac = Uac::new(&server, "alice", "alice-sip").await;
    let contact = format!("Contact: <{}>", uac.contact());

    let challenge = uac
        .call("REGISTER", &[contact.clone(), "Expires: 30".into()])
        .await;
    assert_eq!(challenge.code, 401);
    let www = challenge.header("WWW-Authenticate").expect("challenge");
    assert!(www.starts_with("Digest "), "{www}");
    assert_eq!(param(www, "realm"), Some("switchboard"));
    assert_eq!(param(www, "qop"), Some("auth"));
    assert_eq!(param(www, "algorithm"), Some("MD5"));
    // The top Via is stamped with where the request really came from.
    let via = challenge.header("Via").expect("Via");
    assert!(via.contains("received=127.0.0.1"), "{via}");
    assert!(
        via.contains(&format!("rport={}", uac.local().port())),
        "{via}"
    );

    let ok = uac
        .register_with_credentials(&[contact, "Expires: 30".into()])
        .await;
    assert_eq!(ok.code, 200);
    assert_eq!(bindings(&ok), vec![(uac.contact(), 30)]);

    // A REGISTER without Contact fetches the bindings.
    let fetched = uac.register_with_credentials(&[]).await;
    assert_eq!(fetched.code, 200);
    assert_eq!(bindings(&fetched), vec![(uac.contact(), 30)]);
}

#[tokio::test]
async fn a_retransmitted_request_gets_the_same_answer_again() {
    let server = TestServer::start().await;
    let before = server.metrics.sip.retransmissions.get();
    let mut uac = Uac::new(&server, "alice", "alice-sip").await;
    let contact = format!("Contact: <{}>", uac.contact());

    // The challenge is repeated, not renewed.
    let unauthenticated = uac.request("REGISTER", std::slice::from_ref(&contact));
    uac.send(unauthenticated.as_bytes()).await;
    let challenge = uac.answer().await;
    uac.send(unauthenticated.as_bytes()).await;
    assert_eq!(uac.answer().await, challenge);

    // A REGISTER whose 200 was lost is retransmitted with the same nonce count: it gets the
    // same 200 again, not a stale challenge (the nonce count was already used).
    let credentials = uac.authorization("REGISTER");
    let authenticated = uac.request("REGISTER", &[contact, credentials]);
    uac.send(authenticated.as_bytes()).await;
    let ok = uac.answer().await;
    assert_eq!(ok.code, 200);
    uac.send(authenticated.as_bytes()).await;
    assert_eq!(uac.answer().await, ok);
    assert!(server.metrics.sip.retransmissions.get() >= before + 2);
}

#[tokio::test]
async fn refresh_renews_the_same_binding_with_the_nonce_already_received() {
    let server = TestServer::start().await;
    let mut uac = Uac::new(&server, "bob", "bob-sip").await;
    let contact = format!("Contact: <{}>", uac.contact());
    uac.register_for(30).await;

    server.advance(Duration::from_secs(20)).await;
    let fetched = uac.register_with_credentials(&[]).await;
    assert_eq!(bindings(&fetched), vec![(uac.contact(), 10)]);

    // Same Call-ID, next CSeq, same nonce with the next nonce count: no new challenge.
    let refreshed = uac
        .register_with_credentials(&[contact, "Expires: 30".into()])
        .await;
    assert_eq!(refreshed.code, 200);
    assert_eq!(bindings(&refreshed), vec![(uac.contact(), 30)]);

    // 25 s after the refresh the binding is still there (it would have expired without it).
    server.advance(Duration::from_secs(25)).await;
    let fetched = uac.register_with_credentials(&[]).await;
    assert_eq!(bindings(&fetched), vec![(uac.contact(), 5)]);
}

#[tokio::test]
async fn expires_zero_removes_one_binding_and_contact_star_removes_all() {
    let server = TestServer::start().await;
    let mut uac = Uac::new(&server, "alice", "alice-sip").await;
    let desk = "sip:alice@192.0.2.1:5060".to_string();
    let soft = "sip:alice@192.0.2.2:5070".to_string();
    let both = uac
        .register(&[
            format!("Contact: <{desk}>, <{soft}>;expires=20"),
            "Expires: 30".into(),
        ])
        .await;
    assert_eq!(both.code, 200);
    let mut listed = bindings(&both);
    listed.sort();
    assert_eq!(listed, vec![(desk.clone(), 30), (soft.clone(), 20)]);

    let one = uac
        .register_with_credentials(&[format!("Contact: <{desk}>"), "Expires: 0".into()])
        .await;
    assert_eq!(one.code, 200);
    assert_eq!(bindings(&one), vec![(soft.clone(), 20)]);

    // Put the first one back, then remove everything at once.
    let again = uac
        .register_with_credentials(&[format!("Contact: <{desk}>;expires=30")])
        .await;
    assert_eq!(bindings(&again).len(), 2);
    let none = uac
        .register_with_credentials(&["Contact: *".into(), "Expires: 0".into()])
        .await;
    assert_eq!(none.code, 200);
    assert!(bindings(&none).is_empty(), "{none:?}");

    // `Contact: *` without `Expires: 0` is malformed.
    let bad = uac
        .register_with_credentials(&["Contact: *".into(), "Expires: 30".into()])
        .await;
    assert_eq!(bad.code, 400);
}

#[tokio::test]
async fn wrong_password_gets_401_with_a_fresh_nonce_and_registers_nothing() {
    let server = TestServer::start().await;
    let before = server.metrics.sip.auth_failures.get();
    let mut intruder = Uac::new(&server, "alice", "guessed").await;
    let contact = format!("Contact: <{}>", intruder.contact());
    let first = intruder
        .call("REGISTER", std::slice::from_ref(&contact))
        .await;
    assert_eq!(first.code, 401);
    let first_nonce = intruder.challenge.clone().expect("nonce").0;

    let refused = intruder
        .register_with_credentials(std::slice::from_ref(&contact))
        .await;
    assert_eq!(refused.code, 401);
    let www = refused.header("WWW-Authenticate").expect("new challenge");
    assert_ne!(param(www, "nonce"), Some(first_nonce.as_str()));
    assert!(
        !www.contains("stale"),
        "a wrong password is not stale: {www}"
    );
    assert!(server.metrics.sip.auth_failures.get() > before);

    // An unknown agent looks exactly like a wrong password.
    let mut stranger = Uac::new(&server, "mallory", "x").await;
    assert_eq!(stranger.register(&[contact]).await.code, 401);

    // Nothing was bound: alice's own fetch lists no contact.
    let mut alice = Uac::new(&server, "alice", "alice-sip").await;
    let fetched = alice.register(&[]).await;
    assert_eq!(fetched.code, 200);
    assert!(bindings(&fetched).is_empty());
}

#[tokio::test]
async fn repeated_auth_failures_throttle_the_user_at_that_source_for_a_minute() {
    let mut cfg = common::test_config();
    cfg.sip.max_failed_auth_per_minute = 3;
    let server = TestServer::start_with(cfg).await;
    let mut intruder = Uac::new(&server, "alice", "guessed").await;
    assert_eq!(intruder.call("REGISTER", &[]).await.code, 401);
    for _ in 0..3 {
        assert_eq!(intruder.register_with_credentials(&[]).await.code, 401);
    }
    let throttled = server.metrics.sip.throttled.get();
    let auth = intruder.authorization("REGISTER");
    let text = intruder.request("REGISTER", &[auth]);
    intruder.send(text.as_bytes()).await;
    assert!(
        intruder.answer_within(SILENCE).await.is_none(),
        "a throttled user at that source gets no answer"
    );
    assert!(server.metrics.sip.throttled.get() > throttled);
    // Another agent behind the same address is not locked out.
    let mut bob = Uac::new(&server, "bob", "bob-sip").await;
    assert_eq!(bob.register(&[]).await.code, 200);

    server.advance(Duration::from_secs(61)).await;
    let mut alice = Uac::new(&server, "alice", "alice-sip").await;
    assert_eq!(
        alice.register(&[]).await.code,
        200,
        "served again a minute later"
    );
}

/// A REGISTER for `user` with a digest over `nonce` that is wrong in any case.
fn forged_register(uac: &mut Uac, user: &str, nonce: &str) -> String {
    let auth = format!(
        "Authorization: Digest username=\"{user}\", realm=\"switchboard\", nonce=\"{nonce}\", \
         uri=\"{uri}\", response=\"00000000000000000000000000000000\", algorithm=MD5, \
         cnonce=\"x\", qop=auth, nc=00000001",
        uri = uac.request_uri(),
    );
    uac.request("REGISTER", &[auth])
}

#[tokio::test]
async fn forged_registers_from_a_phones_address_never_lock_the_phone_out() {
    let mut cfg = common::test_config();
    cfg.sip.max_failed_auth_per_minute = 3;
    let server = TestServer::start_with(cfg).await;
    let mut phone = Uac::new(&server, "alice", "alice-sip").await;
    // A nonce obtained by the attacker from its own address (another loopback address).
    let attacker_sock = UdpSocket::bind("127.0.0.2:0")
        .await
        .expect("bind 127.0.0.2");
    let mut attacker = Uac {
        sock: attacker_sock,
        server: server.sip_addr.expect("sip"),
        user: "alice".into(),
        password: "guessed".into(),
        call_id: "attacker@127.0.0.2".into(),
        cseq: 0,
        challenge: None,
    };
    assert_eq!(attacker.call("REGISTER", &[]).await.code, 401);
    let stolen = attacker.challenge.clone().expect("challenge").0;
    // Forged from the phone's address (same IP, any port): made-up nonces, and a real nonce
    // issued to another address. Each only gets a fresh challenge; none counts.
    let mut forger = Uac::new(&server, "alice", "x").await;
    for i in 0..40 {
        let nonce = if i % 2 == 0 {
            format!("{i:064x}")
        } else {
            stolen.clone()
        };
        let text = forged_register(&mut forger, "alice", &nonce);
        forger.send(text.as_bytes()).await;
        let resp = forger.answer().await;
        assert_eq!(resp.code, 401, "a forged REGISTER gets a challenge");
    }
    let contact = format!("Contact: <{}>", phone.contact());
    let ok = phone.register(&[contact, "Expires: 30".into()]).await;
    assert_eq!(ok.code, 200, "the real phone still registers: {ok:?}");
    // The stolen nonce is no good to the attacker from the phone's address even with the
    // right password.
    let mut wrong_place = Uac::new(&server, "alice", "alice-sip").await;
    wrong_place.challenge = Some((stolen, String::new(), 0));
    let refused = wrong_place.register_with_credentials(&[]).await;
    assert_eq!(refused.code, 401);
}

#[tokio::test]
async fn expiry_below_min_is_refused_423_and_above_max_is_lowered() {
    let server = TestServer::start().await;
    let mut uac = Uac::new(&server, "alice", "alice-sip").await;
    let contact = format!("Contact: <{}>", uac.contact());
    let brief = uac.register(&[contact.clone(), "Expires: 5".into()]).await;
    assert_eq!(brief.code, 423);
    assert_eq!(brief.header("Min-Expires"), Some("10"));

    let long = uac
        .register_with_credentials(&[format!("{contact};expires=3600")])
        .await;
    assert_eq!(long.code, 200);
    assert_eq!(bindings(&long), vec![(uac.contact(), 30)]);

    // Without any expiry the default applies.
    let default = uac.register_with_credentials(&[contact]).await;
    assert_eq!(bindings(&default), vec![(uac.contact(), 30)]);
}

#[tokio::test]
async fn options_is_answered_200_and_methods_outside_calls_405_with_allow() {
    let server = TestServer::start().await;
    let mut uac = Uac::new(&server, "alice", "alice-sip").await;
    let options = uac.call("OPTIONS", &[]).await;
    assert_eq!(options.code, 200);
    assert!(
        options
            .header("Allow")
            .is_some_and(|a| a.contains("REGISTER"))
    );

    for method in ["SUBSCRIBE", "MESSAGE", "NOTIFY"] {
        let resp = uac.call(method, &[]).await;
        assert_eq!(resp.code, 405, "{method}");
        assert_eq!(
            resp.header("Allow"),
            Some("REGISTER, OPTIONS, INVITE, ACK, CANCEL, BYE"),
            "{method}"
        );
    }
    // Calls are the proxy's: an INVITE from outside sip.trunks is forbidden, a BYE outside
    // any call does not exist.
    assert_eq!(uac.call("INVITE", &[]).await.code, 403);
    assert_eq!(uac.call("BYE", &[]).await.code, 481);

    // ACK is never answered.
    let ack = uac.request("ACK", &[]);
    uac.send(ack.as_bytes()).await;
    assert!(uac.answer_within(SILENCE).await.is_none());
}

/// A few kilobytes of deterministic noise.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[tokio::test]
async fn garbage_is_dropped_and_counted_and_the_listener_keeps_serving() {
    let server = TestServer::start().await;
    let mut uac = Uac::new(&server, "alice", "alice-sip").await;
    let before = server.metrics.sip.garbage.get();
    let register = uac.request("REGISTER", &[format!("Contact: <{}>", uac.contact())]);
    let mut garbage: Vec<Vec<u8>> = (0..20)
        .map(|i| noise(i + 1, 16 + 97 * i as usize))
        .collect();
    // Truncated messages: cut inside the start line, inside a header, before the blank line.
    for cut in [5, 30, register.len() / 2, register.len() - 3] {
        garbage.push(register.as_bytes()[..cut].to_vec());
    }
    garbage.push(b"REGISTER sip:x SIP/2.0\r\nVia: \xff\xfe\r\n\r\n".to_vec());
    garbage.push(b"NOT SIP AT ALL\r\n\r\n".to_vec());
    garbage.push(vec![0u8; 60_000]);
    // A declared body longer than the datagram.
    garbage.push(
        register
            .replace("Content-Length: 0", "Content-Length: 500")
            .into_bytes(),
    );
    for g in &garbage {
        uac.send(g).await;
    }
    // Keep-alives are neither garbage nor answered.
    uac.send(b"\r\n\r\n").await;
    assert!(
        uac.answer_within(SILENCE).await.is_none(),
        "garbage gets no answer"
    );

    let ok = uac.register_for(30).await;
    assert_eq!(bindings(&ok), vec![(uac.contact(), 30)]);
    // Other tests in this process may add garbage of their own, never remove any.
    let counted = server.metrics.sip.garbage.get() - before;
    assert!(
        counted >= garbage.len() as u64,
        "{counted} of {} garbage datagrams counted",
        garbage.len()
    );
}

#[tokio::test]
async fn binding_expiry_drops_voice_and_a_new_register_restores_it() {
    let server = TestServer::start().await;
    let mut phone = Uac::new(&server, "alice", "alice-sip").await;
    phone.register_for(10).await;
    let token = log_in(&server, "alice").await;
    let (_socket, snapshot, mut frames) = server.handle.attach_panel(token).await.expect("panel");
    assert!(
        snapshot.capabilities.voice,
        "registered and connected: voice on"
    );
    assert!(snapshot.banners.is_empty());

    // A call in process with alice.
    server
        .handle
        .call(Command::SetPresence {
            token,
            presence: Presence::Ready,
        })
        .await
        .expect("ready");
    server
        .handle
        .call(Command::InboundCall {
            from: "+15550100".into(),
            queue: "phones".into(),
        })
        .await
        .expect("inbound call");
    let offered = frame_where(&mut frames, |f| {
        f["type"] == "conversation" && f["conversation"]["status"] == "offered"
    })
    .await;
    let call = offered["conversation"]["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid");
    server
        .handle
        .call(Command::Accept {
            token,
            conversation: call,
        })
        .await
        .expect("accept");

    server.advance(Duration::from_secs(11)).await;
    let caps = frame_where(&mut frames, is_capabilities).await;
    assert_eq!(
        caps["capabilities"],
        serde_json::json!({"voice": false, "chat": true, "email": true})
    );
    let banners = frame_where(&mut frames, is_banners).await;
    assert_eq!(banners["banners"][0]["code"], "sip_registration_lost");
    assert_eq!(banners["banners"].as_array().map(Vec::len), Some(1));
    let dropped = server
        .handle
        .inspect(move |core| core.conversation(&call).map(|c| c.status))
        .await
        .expect("inspect");
    assert_eq!(
        dropped.map(|s| format!("{s:?}")),
        Some("WrapUp".to_string())
    );
    let state = server
        .handle
        .call(Command::AgentState { token })
        .await
        .expect("state");
    let Reply::Snapshot(snap) = state else {
        panic!("snapshot expected");
    };
    let conv = snap
        .conversations
        .iter()
        .find(|c| c.id == call)
        .expect("dropped call still with alice in wrap-up");
    let conv = serde_json::to_value(conv).expect("json");
    assert_eq!(conv["disconnect_reason"], "SipRegistrationLost");
    assert_eq!(conv["disconnect_party"], "agent");

    // Registering again brings voice back and clears the banner.
    phone.register_for(30).await;
    let caps = frame_where(&mut frames, is_capabilities).await;
    assert_eq!(caps["capabilities"]["voice"], true);
    let banners = frame_where(&mut frames, is_banners).await;
    assert_eq!(banners["banners"], serde_json::json!([]));
}

#[tokio::test]
async fn unregister_of_the_last_binding_is_a_registration_loss() {
    let server = TestServer::start().await;
    let mut phone = Uac::new(&server, "bob", "bob-sip").await;
    phone.register_for(30).await;
    let token = log_in(&server, "bob").await;
    let (_socket, snapshot, mut frames) = server.handle.attach_panel(token).await.expect("panel");
    assert!(snapshot.capabilities.voice);

    let gone = phone
        .register_with_credentials(&["Contact: *".into(), "Expires: 0".into()])
        .await;
    assert_eq!(gone.code, 200);
    let caps = frame_where(&mut frames, is_capabilities).await;
    assert_eq!(caps["capabilities"]["voice"], false);
    let banners = frame_where(&mut frames, is_banners).await;
    assert_eq!(banners["banners"][0]["code"], "sip_registration_lost");
}

#[tokio::test]
async fn restart_keeps_a_live_binding_and_drops_one_that_expired_meanwhile() {
    let server = TestServer::start().await;
    let alice_token = log_in(&server, "alice").await;
    let bob_token = log_in(&server, "bob").await;
    let mut alice_phone = Uac::new(&server, "alice", "alice-sip").await;
    alice_phone.register_for(30).await;
    let mut bob_phone = Uac::new(&server, "bob", "bob-sip").await;
    bob_phone.register_for(10).await;

    // Down for 15 s: alice's binding has 15 s left, bob's expired during the downtime.
    let server = server.restart(Duration::from_secs(15)).await;
    assert!(server.handle.now().wall >= START_WALL + 15_000);

    let (_a, alice, _alice_frames) = server
        .handle
        .attach_panel(alice_token)
        .await
        .expect("alice's panel after the restart");
    assert!(
        alice.capabilities.voice,
        "alice's binding survived the restart"
    );
    assert!(alice.banners.is_empty());
    let (_b, bob, _bob_frames) = server
        .handle
        .attach_panel(bob_token)
        .await
        .expect("bob's panel after the restart");
    assert!(!bob.capabilities.voice, "bob's binding expired while down");
    assert_eq!(
        bob.banners.first().map(|b| b.code.as_str()),
        Some("sip_registration_lost")
    );

    // Over the wire: the new listener reports what is left (the old nonces are void).
    let mut alice_phone = Uac::new(&server, "alice", "alice-sip").await;
    let fetched = alice_phone.register(&[]).await;
    let left = bindings(&fetched);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!((14..=15).contains(&left[0].1), "{left:?}");
    let mut bob_phone = Uac::new(&server, "bob", "bob-sip").await;
    assert!(bindings(&bob_phone.register(&[]).await).is_empty());

    // And alice's binding still expires at its stored time.
    server.advance(Duration::from_secs(16)).await;
    let fetched = alice_phone.register_with_credentials(&[]).await;
    assert!(bindings(&fetched).is_empty());
}

#[tokio::test]
async fn an_agent_registers_at_most_max_bindings_per_agent_contacts() {
    let mut cfg = common::test_config();
    cfg.sip.max_bindings_per_agent = 3;
    let server = TestServer::start_with(cfg).await;
    let mut phone = Uac::new(&server, "alice", "alice-sip").await;
    let contact = |i: u32| format!("Contact: <sip:alice@10.0.0.{i}:5060>");
    let ok = phone
        .register(&[contact(1), contact(2), contact(3), "Expires: 30".into()])
        .await;
    assert_eq!(ok.code, 200, "{ok:?}");
    assert_eq!(bindings(&ok).len(), 3);
    let refused = phone
        .register_with_credentials(&[contact(4), "Expires: 30".into()])
        .await;
    assert_eq!(refused.code, 403, "{refused:?}");
    assert!(
        refused
            .header("Warning")
            .is_some_and(|w| w.contains("sip.max_bindings_per_agent"))
    );
    // Nothing changed; refreshing or replacing within the cap still works.
    let ok = phone
        .register_with_credentials(&[
            "Contact: <sip:alice@10.0.0.1:5060>;expires=0".into(),
            contact(4),
            "Expires: 30".into(),
        ])
        .await;
    assert_eq!(ok.code, 200, "{ok:?}");
    let mut listed: Vec<String> = bindings(&ok).into_iter().map(|(u, _)| u).collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            "sip:alice@10.0.0.2:5060",
            "sip:alice@10.0.0.3:5060",
            "sip:alice@10.0.0.4:5060"
        ]
    );
}
