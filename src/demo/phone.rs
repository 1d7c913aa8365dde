//! Demo layer: the simulated agents' SIP phones — a minimal user agent that REGISTERs over UDP
//! with digest authentication (RFC 3261 §10 and §22, MD5 with `qop=auth`), refreshes its
//! binding before it expires, and answers the calls switchboard rings it with (the called
//! party of [`super::answer`]). It reuses the server's own message parser and digest
//! functions; building requests is pure, the socket work is in [`run`].

use super::answer::{Answerer, Pickup};
use crate::driver::Clock;
use crate::sip::message::{
    ContactValue, Request, Response, SipMessage, parse, parse_contacts, parse_cseq, split_list,
    unquote,
};
use crate::sip::registrar::{digest_ha1, digest_response};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};

/// How long the phone waits for the answer to a REGISTER (ms).
const RESPONSE_TIMEOUT_MS: u64 = 2_000;
/// How soon a failed registration is tried again (ms).
const RETRY_MS: u64 = 3_000;
/// The expiry every simulated phone asks for.
pub(crate) const EXPIRES: u32 = 30;

/// A digest challenge (`WWW-Authenticate: Digest …`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
}

/// Reads a `Digest` challenge; `None` for another scheme, a non-MD5 algorithm or one that does
/// not offer `qop=auth`.
pub(crate) fn parse_challenge(value: &str) -> Option<Challenge> {
    let rest = value.trim().strip_prefix("Digest")?.trim_start();
    let (mut realm, mut nonce, mut opaque, mut qop_auth) = (None, None, None, false);
    for item in split_list(rest).ok()? {
        let (name, raw) = item.split_once('=')?;
        let raw = raw.trim();
        let v = if raw.starts_with('"') {
            unquote(raw).ok()?
        } else {
            raw.to_string()
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "realm" => realm = Some(v),
            "nonce" => nonce = Some(v),
            "opaque" => opaque = Some(v),
            "qop" => qop_auth = v.split(',').any(|q| q.trim().eq_ignore_ascii_case("auth")),
            "algorithm" if !v.eq_ignore_ascii_case("MD5") => return None,
            _ => {}
        }
    }
    qop_auth.then_some(())?;
    Some(Challenge {
        realm: realm?,
        nonce: nonce?,
        opaque,
    })
}

/// One agent's phone.
#[derive(Debug)]
pub(crate) struct Phone {
    agent: String,
    password: String,
    server: SocketAddr,
    sock: UdpSocket,
    local: SocketAddr,
    call_id: String,
    tag: String,
    cseq: u32,
    challenge: Option<Challenge>,
    nc: u32,
}

impl Phone {
    /// A phone for `agent` talking to the registrar at `server` from a free loopback port.
    pub async fn bind(agent: &str, password: &str, server: SocketAddr) -> std::io::Result<Phone> {
        let server = if server.ip().is_unspecified() {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), server.port())
        } else {
            server
        };
        let bind_ip: IpAddr = if server.is_ipv6() {
            IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])
        } else {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        };
        let sock = UdpSocket::bind(SocketAddr::new(bind_ip, 0)).await?;
        let local = sock.local_addr()?;
        Ok(Phone {
            agent: agent.to_string(),
            password: password.to_string(),
            server,
            sock,
            local,
            call_id: format!("{}@demo-phone", hex::encode(rand::random::<[u8; 8]>())),
            tag: hex::encode(rand::random::<[u8; 4]>()),
            cseq: 0,
            challenge: None,
            nc: 0,
        })
    }

    fn request_uri(&self) -> String {
        format!("sip:{}", self.server)
    }

    fn contact_uri(&self) -> String {
        format!("sip:{}@{}", self.agent, self.local)
    }

    /// The next REGISTER (new CSeq and branch), answering the last challenge if there is one.
    pub fn next_request(&mut self, expires: u32) -> Vec<u8> {
        self.cseq += 1;
        let uri = self.request_uri();
        let host = self.server.ip();
        let mut msg = format!(
            "REGISTER {uri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK{branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{agent}@{host}>;tag={tag}\r\n\
             To: <sip:{agent}@{host}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} REGISTER\r\n\
             Contact: <{contact}>;expires={expires}\r\n\
             User-Agent: switchboard-demo-phone\r\n",
            local = self.local,
            branch = hex::encode(rand::random::<[u8; 8]>()),
            agent = self.agent,
            tag = self.tag,
            call_id = self.call_id,
            cseq = self.cseq,
            contact = self.contact_uri(),
        );
        if let Some(ch) = self.challenge.clone() {
            self.nc += 1;
            let nc = format!("{:08x}", self.nc);
            let cnonce = hex::encode(rand::random::<[u8; 8]>());
            let ha1 = digest_ha1(&self.agent, &ch.realm, &self.password);
            let response = digest_response(&ha1, &ch.nonce, &nc, &cnonce, "auth", "REGISTER", &uri);
            msg.push_str(&format!(
                "Authorization: Digest username=\"{agent}\", realm=\"{realm}\", nonce=\"{nonce}\", \
                 uri=\"{uri}\", response=\"{response}\", algorithm=MD5, cnonce=\"{cnonce}\", \
                 qop=auth, nc={nc}",
                agent = self.agent,
                realm = ch.realm,
                nonce = ch.nonce,
            ));
            if let Some(o) = &ch.opaque {
                msg.push_str(&format!(", opaque=\"{o}\""));
            }
            msg.push_str("\r\n");
        }
        msg.push_str("Content-Length: 0\r\n\r\n");
        msg.into_bytes()
    }

    /// What a response to our REGISTER of CSeq `cseq` says: its code, its challenge and the
    /// expiry granted to this phone's contact; `None` for another response or a provisional.
    fn registration_answer(
        &self,
        resp: &Response,
        cseq: u32,
    ) -> Option<(u16, Option<Challenge>, Option<u32>)> {
        let ours = resp.header("Call-ID") == Some(self.call_id.as_str())
            && resp
                .header("CSeq")
                .and_then(|c| parse_cseq(c).ok())
                .is_some_and(|(n, m)| n == cseq && m == "REGISTER");
        if !ours || resp.code < 200 {
            return None;
        }
        let challenge = resp
            .headers_named("WWW-Authenticate")
            .chain(resp.headers_named("Proxy-Authenticate"))
            .find_map(parse_challenge);
        let contact = self.contact_uri();
        let granted = resp
            .headers_named("Contact")
            .filter_map(|v| parse_contacts(v).ok())
            .flatten()
            .find_map(|c| match c {
                ContactValue::Address(a) if a.uri == contact => {
                    a.param("expires").and_then(|e| e.parse::<u32>().ok())
                }
                _ => None,
            });
        Some((resp.code, challenge, granted))
    }
}

/// The registration in progress: the REGISTER's CSeq, when it times out, the challenges
/// answered so far.
#[derive(Debug, Clone, Copy)]
struct Pending {
    cseq: u32,
    deadline: u64,
    challenges: u8,
}

/// What the agent asks of its phone.
#[derive(Debug)]
pub(crate) enum PhoneCmd {
    /// Hang up the call in conversation (BYE); answers whether there was one.
    HangUp(oneshot::Sender<bool>),
}

/// How the phone's owner picks up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Habits {
    /// Never declines nor lets a call ring out.
    pub always_answers: bool,
}

/// What a phone is connected to: whether it keeps its registration, the agent's requests,
/// the demo's stop, and who learns whether the first registration succeeded.
pub(crate) struct Link {
    pub online: watch::Receiver<bool>,
    pub commands: mpsc::UnboundedReceiver<PhoneCmd>,
    pub stop: watch::Receiver<bool>,
    pub ready: Option<oneshot::Sender<bool>>,
}

/// How the phone's owner handles a new call: a callback they placed (no SDP) is picked up
/// at once; others ring a few seconds, and now and then are declined or left ringing.
fn pick(rng: &mut StdRng, habits: Habits, invite: &Request) -> Pickup {
    if invite.body.is_empty() {
        return Pickup::Answer {
            after: rng.gen_range(500..=1_500),
            talk: None,
        };
    }
    let roll: f64 = rng.r#gen();
    if habits.always_answers || roll >= 0.06 {
        Pickup::Answer {
            after: rng.gen_range(1_500..=4_000),
            talk: None,
        }
    } else if roll < 0.04 {
        Pickup::Decline {
            after: rng.gen_range(2_000..=6_000),
        }
    } else {
        Pickup::Ignore
    }
}

/// Runs `phone`: keeps it registered while `link.online` is true (refreshing at two thirds of
/// the granted expiry, again after 3 s when an attempt fails), lets the binding lapse while it
/// is false, and answers the calls switchboard rings it with, until `link.stop`.
pub(crate) async fn run(mut phone: Phone, clock: Clock, seed: u64, habits: Habits, link: Link) {
    let Link {
        mut online,
        mut commands,
        mut stop,
        mut ready,
    } = link;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut calls = Answerer::new(&phone.agent, phone.local);
    let mut reg_due = online.borrow_and_update().then(|| clock.now().mono);
    let mut pending: Option<Pending> = None;
    let mut commands_open = true;
    let mut buf = vec![0u8; 65_536];
    loop {
        let next = [reg_due, pending.map(|p| p.deadline), calls.next_due()]
            .into_iter()
            .flatten()
            .min();
        let mut send: Vec<Vec<u8>> = Vec::new();
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            changed = online.changed() => {
                if changed.is_err() {
                    return;
                }
                if *online.borrow_and_update() {
                    reg_due = Some(clock.now().mono);
                } else {
                    reg_due = None;
                    pending = None;
                }
            }
            cmd = commands.recv(), if commands_open => match cmd {
                Some(PhoneCmd::HangUp(tx)) => {
                    let (any, out) = calls.hang_up(clock.now().mono);
                    send = out.send;
                    let _ = tx.send(any);
                }
                None => commands_open = false,
            },
            r = phone.sock.recv_from(&mut buf) => {
                // ICMP port unreachable from an earlier send shows up as an error: ignored.
                let Ok((n, from)) = r else { continue };
                if from != phone.server {
                    continue;
                }
                let now = clock.now().mono;
                match parse(buf.get(..n).unwrap_or_default()) {
                    Ok(SipMessage::Request(req)) => {
                        send = calls.on_request(now, &req, |inv| pick(&mut rng, habits, inv)).send;
                    }
                    Ok(SipMessage::Response(resp)) => {
                        let answer = pending.and_then(|p| phone.registration_answer(&resp, p.cseq));
                        match (answer, pending) {
                            (Some((200, _, granted)), _) => {
                                pending = None;
                                if let Some(tx) = ready.take() {
                                    let _ = tx.send(true);
                                }
                                let every = u64::from(granted.unwrap_or(EXPIRES).max(3)) * 2 / 3;
                                reg_due = Some(now + every * 1000);
                            }
                            (Some((401 | 407, Some(challenge), _)), Some(p)) if p.challenges < 2 => {
                                // A fresh nonce (first contact, or the old one went stale).
                                phone.challenge = Some(challenge);
                                phone.nc = 0;
                                send.push(phone.next_request(EXPIRES));
                                pending = Some(Pending {
                                    cseq: phone.cseq,
                                    deadline: now + RESPONSE_TIMEOUT_MS,
                                    challenges: p.challenges + 1,
                                });
                            }
                            (Some((code, _, _)), _) => {
                                tracing::debug!(agent = %phone.agent, code, "demo phone: REGISTER refused");
                                pending = None;
                                if let Some(tx) = ready.take() {
                                    let _ = tx.send(false);
                                }
                                reg_due = Some(now + RETRY_MS);
                            }
                            (None, _) => calls.on_response(&resp),
                        }
                    }
                    Err(_) => {}
                }
            }
            _ = until(&clock, next) => {
                let now = clock.now().mono;
                if reg_due.is_some_and(|d| d <= now) {
                    reg_due = None;
                    send.push(phone.next_request(EXPIRES));
                    pending = Some(Pending {
                        cseq: phone.cseq,
                        deadline: now + RESPONSE_TIMEOUT_MS,
                        challenges: 0,
                    });
                } else if pending.is_some_and(|p| p.deadline <= now) {
                    tracing::debug!(agent = %phone.agent, "demo phone: no answer to REGISTER");
                    pending = None;
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(false);
                    }
                    reg_due = Some(now + RETRY_MS);
                }
                send.extend(calls.on_time(now).send);
            }
        }
        for bytes in send {
            if let Err(e) = phone.sock.send_to(&bytes, phone.server).await {
                tracing::debug!(agent = %phone.agent, error = %e, "demo phone: send failed");
            }
        }
    }
}

/// Sleeps until the driver's clock reads `at` (or forever for `None`).
pub(crate) async fn until(clock: &Clock, at: Option<u64>) {
    match at {
        Some(at) => tokio::time::sleep_until(clock.instant_at(at)).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Request;
    use crate::sip::registrar::{BindingChange, Outcome, Registrar, RegistrarConfig};
    use std::collections::HashMap;

    fn registrar() -> Registrar {
        Registrar::new(
            RegistrarConfig {
                realm: "switchboard".into(),
                min_expires: 10,
                max_expires: 30,
                default_expires: 30,
                nonce_ttl_secs: 300,
            },
            [7; 32],
            HashMap::from([("tomas".to_string(), "s3cret".to_string())]),
        )
    }

    fn request(bytes: &[u8]) -> Request {
        match parse(bytes).expect("phone request parses") {
            SipMessage::Request(r) => r,
            SipMessage::Response(_) => panic!("expected a request"),
        }
    }

    #[tokio::test]
    async fn phone_answers_the_registrars_digest_challenge_and_refreshes_with_the_same_nonce() {
        let server: SocketAddr = "127.0.0.1:5060".parse().expect("addr");
        let mut phone = Phone::bind("tomas", "s3cret", server).await.expect("bind");
        let mut reg = registrar();
        let src = phone.local;

        let first = request(&phone.next_request(EXPIRES));
        let Outcome::Reply(challenge) = reg.handle(1_000, &first, src) else {
            panic!("an unauthenticated REGISTER is challenged");
        };
        assert_eq!(challenge.code, 401);
        let parsed = challenge
            .header("WWW-Authenticate")
            .and_then(parse_challenge)
            .expect("challenge parses");
        assert_eq!(parsed.realm, "switchboard");
        phone.challenge = Some(parsed);

        for at in [2_000, 22_000] {
            let authed = request(&phone.next_request(EXPIRES));
            match reg.handle(at, &authed, src) {
                Outcome::Register(rr) => {
                    assert_eq!(rr.agent_id, "tomas");
                    assert_eq!(
                        rr.change,
                        BindingChange::Update(vec![crate::sip::registrar::ContactUpdate {
                            uri: phone.contact_uri(),
                            expires_secs: EXPIRES,
                        }])
                    );
                }
                other => panic!("the digest is accepted, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn phone_with_a_wrong_password_is_challenged_again() {
        let server: SocketAddr = "127.0.0.1:5060".parse().expect("addr");
        let mut phone = Phone::bind("tomas", "wrong", server).await.expect("bind");
        let mut reg = registrar();
        let src = phone.local;
        let first = request(&phone.next_request(EXPIRES));
        let Outcome::Reply(challenge) = reg.handle(1_000, &first, src) else {
            panic!("challenged");
        };
        phone.challenge = challenge
            .header("WWW-Authenticate")
            .and_then(parse_challenge);
        let authed = request(&phone.next_request(EXPIRES));
        assert!(matches!(reg.handle(2_000, &authed, src), Outcome::Reply(r) if r.code == 401));
    }

    #[test]
    fn challenge_without_qop_auth_or_with_another_algorithm_is_refused() {
        assert!(parse_challenge("Digest realm=\"r\", nonce=\"n\"").is_none());
        assert!(
            parse_challenge("Digest realm=\"r\", nonce=\"n\", qop=\"auth\", algorithm=SHA-256")
                .is_none()
        );
        assert_eq!(
            parse_challenge("Digest realm=\"r\", nonce=\"n\", opaque=\"o\", qop=\"auth,auth-int\""),
            Some(Challenge {
                realm: "r".into(),
                nonce: "n".into(),
                opaque: Some("o".into())
            })
        );
        assert!(parse_challenge("Basic realm=\"r\"").is_none());
    }
}
