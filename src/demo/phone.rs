//! Demo layer: the simulated agents' SIP phones — a minimal user agent client that REGISTERs
//! over UDP with digest authentication (RFC 3261 §10 and §22, MD5 with `qop=auth`) and
//! refreshes its binding before it expires. It reuses the server's own message parser and
//! digest functions; building requests is pure, the socket work is in [`Phone::register`].

use crate::sip::message::{
    ContactValue, SipMessage, parse, parse_contacts, parse_cseq, split_list, unquote,
};
use crate::sip::registrar::{digest_ha1, digest_response};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::{oneshot, watch};

/// How long the phone waits for each response.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The expiry every simulated phone asks for.
pub(crate) const EXPIRES: u32 = 30;

/// Why a registration attempt failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PhoneError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("no response within {RESPONSE_TIMEOUT:?}")]
    Timeout,
    #[error("registrar answered {0}")]
    Refused(u16),
    #[error("the challenge could not be answered")]
    BadChallenge,
}

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

    /// Registers (or refreshes) the binding; answers a `401` with the digest and tries again.
    /// Returns the granted expiry in seconds.
    pub async fn register(&mut self, expires: u32) -> Result<u32, PhoneError> {
        for _ in 0..3 {
            let req = self.next_request(expires);
            self.sock.send_to(&req, self.server).await?;
            let (code, challenge, granted) = self.response(self.cseq).await?;
            match code {
                200 => return Ok(granted.unwrap_or(expires)),
                401 | 407 => {
                    // A fresh nonce (first contact, or the old one went stale).
                    self.challenge = Some(challenge.ok_or(PhoneError::BadChallenge)?);
                    self.nc = 0;
                }
                code => return Err(PhoneError::Refused(code)),
            }
        }
        Err(PhoneError::BadChallenge)
    }

    /// Waits for the response to CSeq `cseq`: its code, its challenge and the expiry granted
    /// to this phone's contact.
    async fn response(
        &self,
        cseq: u32,
    ) -> Result<(u16, Option<Challenge>, Option<u32>), PhoneError> {
        let mut buf = vec![0u8; 8192];
        let deadline = tokio::time::sleep(RESPONSE_TIMEOUT);
        tokio::pin!(deadline);
        loop {
            let n = tokio::select! {
                _ = &mut deadline => return Err(PhoneError::Timeout),
                r = self.sock.recv_from(&mut buf) => match r {
                    Ok((n, from)) if from == self.server => n,
                    Ok(_) => continue,
                    // ICMP port unreachable from an earlier send: keep waiting.
                    Err(_) => continue,
                },
            };
            let Ok(SipMessage::Response(resp)) = parse(buf.get(..n).unwrap_or_default()) else {
                continue;
            };
            let ours = resp.header("Call-ID") == Some(self.call_id.as_str())
                && resp
                    .header("CSeq")
                    .and_then(|c| parse_cseq(c).ok())
                    .is_some_and(|(n, _)| n == cseq);
            if !ours || resp.code < 200 {
                continue;
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
            return Ok((resp.code, challenge, granted));
        }
    }
}

/// Keeps `phone` registered while `online` is true (refreshing at two thirds of the granted
/// expiry), lets the binding lapse while it is false, until `stop`. `ready` learns whether
/// the first attempt succeeded.
pub(crate) async fn run(
    mut phone: Phone,
    mut online: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
    mut ready: Option<oneshot::Sender<bool>>,
) {
    loop {
        let wait = if *online.borrow_and_update() {
            let result = phone.register(EXPIRES).await;
            if let Some(tx) = ready.take() {
                let _ = tx.send(result.is_ok());
            }
            match result {
                Ok(granted) => Some(Duration::from_secs(u64::from(granted.max(3)) * 2 / 3)),
                Err(e) => {
                    tracing::debug!(agent = %phone.agent, error = %e, "demo phone: REGISTER failed");
                    Some(Duration::from_secs(3))
                }
            }
        } else {
            None
        };
        let sleep = async {
            match wait {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            changed = online.changed() => if changed.is_err() { return },
            _ = sleep => {}
        }
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
