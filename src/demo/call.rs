//! Demo layer: what the simulated phones and the simulated trunk say in a call (RFC 3261 user
//! agents) — a small SDP offer and its answer, the responses of a called party, the INVITE of
//! a caller, and the requests either side sends inside a dialog (ACK, BYE) or to give up
//! (CANCEL, the ACK of a failure). Pure: no sockets, no clock; [`super::answer`],
//! [`super::dial`] and the socket loops of [`super::phone`] and [`super::trunk`] use it.

use crate::sip::message::{Request, Response, response_to, split_list};
use std::net::{IpAddr, SocketAddr};
use switchboard_core::sip::proxy;

/// The media type of the bodies.
pub(crate) const SDP: &str = "application/sdp";

/// The RTP payload types the simulated parties speak: PCMU and PCMA.
const CODECS: &[(&str, &str)] = &[("0", "PCMU/8000"), ("8", "PCMA/8000")];

/// A fresh RFC 3261 branch.
pub(crate) fn new_branch() -> String {
    format!(
        "{}{}",
        proxy::COOKIE,
        hex::encode(rand::random::<[u8; 8]>())
    )
}

/// A fresh tag or Call-ID part.
pub(crate) fn new_id() -> String {
    hex::encode(rand::random::<[u8; 6]>())
}

fn ip_kind(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "IP4" } else { "IP6" }
}

fn sdp_with(owner: &str, media: SocketAddr, codecs: &[(&str, &str)]) -> String {
    let kind = ip_kind(media.ip());
    let ip = media.ip();
    let types: Vec<&str> = codecs.iter().map(|(pt, _)| *pt).collect();
    let mut s = format!(
        "v=0\r\no={owner} 1 1 IN {kind} {ip}\r\ns=switchboard demo\r\nc=IN {kind} {ip}\r\n\
         t=0 0\r\nm=audio {port} RTP/AVP {types}\r\n",
        port = media.port(),
        types = types.join(" "),
    );
    for (pt, name) in codecs {
        s.push_str(&format!("a=rtpmap:{pt} {name}\r\n"));
    }
    s
}

/// An SDP offer for audio at `media` (no RTP is ever sent: the demo only signals).
pub(crate) fn sdp_offer(owner: &str, media: SocketAddr) -> String {
    sdp_with(owner, media, CODECS)
}

/// The answer to `offer`: the offered audio codecs this party speaks, in the offer's order;
/// `None` without an audio line or a codec in common.
pub(crate) fn sdp_answer(offer: &[u8], owner: &str, media: SocketAddr) -> Option<String> {
    let offer = std::str::from_utf8(offer).ok()?;
    let line = offer
        .lines()
        .find_map(|l| l.trim().strip_prefix("m=audio "))?;
    let common: Vec<(&str, &str)> = line
        .split_whitespace()
        .skip(2)
        .filter_map(|pt| CODECS.iter().find(|(ours, _)| *ours == pt).copied())
        .collect();
    (!common.is_empty()).then(|| sdp_with(owner, media, &common))
}

/// A response of the called party to `req`: the request's Via, From, To (tagged), Call-ID and
/// CSeq; to an INVITE also its Record-Route and our `contact`; `sdp` as the body.
pub(crate) fn reply(
    req: &Request,
    code: u16,
    reason: &str,
    contact: Option<&str>,
    sdp: Option<&str>,
) -> Response {
    let mut resp = response_to(req, code, reason);
    if req.method == "INVITE" && (101..300).contains(&code) {
        for rr in req.headers_named("Record-Route") {
            resp.push_header("Record-Route", rr);
        }
        if let Some(c) = contact {
            resp.push_header("Contact", format!("<{c}>"));
        }
    }
    match sdp {
        Some(body) => resp.with_body(SDP, body.as_bytes().to_vec()),
        None => resp,
    }
}

/// A caller's INVITE, sent from `local`: `uri` is who is called, `from` our From header (with
/// our tag), `contact` our Contact URI, `sdp` the offer.
pub(crate) fn invite(
    uri: &str,
    from: &str,
    call_id: &str,
    local: SocketAddr,
    contact: &str,
    sdp: &str,
) -> Request {
    let leg = proxy::Leg {
        uri,
        from,
        to: &format!("<{uri}>"),
        call_id,
    };
    let mut req = proxy::in_dialog("INVITE", leg, 1, local, &new_branch());
    req.headers.push(("Contact".into(), format!("<{contact}>")));
    req.headers.push(("Content-Type".into(), SDP.into()));
    req.body = sdp.as_bytes().to_vec();
    req
}

/// The ACK of a non-2xx final response to our `invite` (RFC 3261 §17.1.1.3): the INVITE's
/// Request-URI, Via and CSeq number, the response's To.
pub(crate) fn ack_failure(invite: &Request, resp: &Response) -> Request {
    let mut ack = proxy::cancel(invite);
    ack.method = "ACK".into();
    for (name, value) in ack.headers.iter_mut() {
        if name == "To" {
            if let Some(to) = resp.header("To") {
                *value = to.to_owned();
            }
        } else if name == "CSeq" {
            *value = value.replace("CANCEL", "ACK");
        }
    }
    ack
}

/// The CANCEL of our `invite` (RFC 3261 §9.1).
pub(crate) fn cancel(invite: &Request) -> Request {
    proxy::cancel(invite)
}

/// Every value of every `name` line, comma lists split, in order.
fn list(headers: &[(String, String)], name: &str) -> Vec<String> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| {
            split_list(v)
                .map(|l| l.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap_or_default()
        })
        .collect()
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// One party's view of a dialog (RFC 3261 §12).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dialog {
    pub call_id: String,
    /// Our From/To header, with our tag: the From of our requests.
    pub local: String,
    /// The other party's, with its tag: the To of our requests.
    pub remote: String,
    /// The other party's Contact: the Request-URI of our requests.
    pub target: String,
    /// The route set: the Route headers of our requests.
    pub routes: Vec<String>,
    /// Our last CSeq number.
    pub cseq: u32,
}

impl Dialog {
    /// The called party's dialog, from the INVITE it received and its 2xx to it.
    pub fn callee(invite: &Request, ok: &Response) -> Option<Dialog> {
        let remote = invite.header("From")?;
        proxy::tag_of(remote)?;
        Some(Dialog {
            call_id: invite.header("Call-ID")?.to_owned(),
            local: ok.header("To")?.to_owned(),
            remote: remote.to_owned(),
            target: proxy::contact_uri(&invite.headers)?,
            routes: list(&invite.headers, "Record-Route"),
            cseq: 0,
        })
    }

    /// The calling party's dialog, from its INVITE and the 2xx it got.
    pub fn caller(invite: &Request, ok: &Response) -> Option<Dialog> {
        let remote = header(&ok.headers, "To")?;
        proxy::tag_of(remote)?;
        let mut routes = list(&ok.headers, "Record-Route");
        routes.reverse();
        Some(Dialog {
            call_id: invite.header("Call-ID")?.to_owned(),
            local: invite.header("From")?.to_owned(),
            remote: remote.to_owned(),
            target: proxy::contact_uri(&ok.headers)?,
            routes,
            cseq: proxy::cseq(&invite.headers).map(|c| c.0).unwrap_or(1),
        })
    }

    fn build(&self, method: &str, seq: u32, local: SocketAddr) -> Request {
        let leg = proxy::Leg {
            uri: &self.target,
            from: &self.local,
            to: &self.remote,
            call_id: &self.call_id,
        };
        let mut req = proxy::in_dialog(method, leg, seq, local, &new_branch());
        for r in &self.routes {
            req.headers.push(("Route".into(), r.clone()));
        }
        req
    }

    /// A new request in the dialog (a BYE), with the next CSeq.
    pub fn request(&mut self, method: &str, local: SocketAddr) -> Request {
        self.cseq += 1;
        self.build(method, self.cseq, local)
    }

    /// The ACK of the 2xx to our INVITE of CSeq `seq`, carrying `sdp` when given.
    pub fn ack(&self, seq: u32, local: SocketAddr, sdp: Option<&str>) -> Request {
        let mut ack = self.build("ACK", seq, local);
        if let Some(body) = sdp {
            ack.headers.push(("Content-Type".into(), SDP.into()));
            ack.body = body.as_bytes().to_vec();
        }
        ack
    }
}

/// The CSeq number and method of a message's headers.
pub(crate) fn cseq_of(headers: &[(String, String)]) -> Option<(u32, String)> {
    proxy::cseq(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{SipMessage, parse};

    fn local() -> SocketAddr {
        "127.0.0.1:5070".parse().expect("addr")
    }

    fn reparse_request(r: &Request) -> Request {
        match parse(&r.serialize()).expect("parses") {
            SipMessage::Request(r) => r,
            SipMessage::Response(_) => panic!("a request"),
        }
    }

    #[test]
    fn answer_keeps_the_offered_codecs_it_speaks_and_refuses_an_offer_without_audio() {
        let media: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
        let offer = "v=0\r\nc=IN IP4 192.0.2.7\r\nm=audio 4000 RTP/AVP 8 18 0\r\n";
        let answer = sdp_answer(offer.as_bytes(), "phone", media).expect("answer");
        assert!(answer.contains("m=audio 40000 RTP/AVP 8 0\r\n"), "{answer}");
        assert!(answer.contains("c=IN IP4 127.0.0.1"), "{answer}");
        assert!(sdp_answer(b"v=0\r\nm=audio 4000 RTP/AVP 18\r\n", "p", media).is_none());
        assert!(sdp_answer(b"v=0\r\nm=video 4000 RTP/AVP 96\r\n", "p", media).is_none());
        let ours = sdp_offer("trunk", media);
        assert!(sdp_answer(ours.as_bytes(), "p", media).is_some());
    }

    #[test]
    fn caller_and_callee_build_matching_dialogs_through_a_record_routing_proxy() {
        let sdp = sdp_offer("trunk", local());
        let mut inv = invite(
            "sip:phones@127.0.0.1:5060",
            "\"Ann\" <sip:+15550001@127.0.0.1:5070>;tag=t1",
            "c1",
            local(),
            "sip:+15550001@127.0.0.1:5070",
            &sdp,
        );
        // What the phone gets: the proxy's Record-Route added.
        inv.headers
            .push(("Record-Route".into(), "<sip:127.0.0.1:5060;lr>".into()));
        let inv = reparse_request(&inv);
        let ok = reply(
            &inv,
            200,
            "OK",
            Some("sip:maria@127.0.0.1:6000"),
            Some("v=0"),
        );
        let callee = Dialog::callee(&inv, &ok).expect("callee dialog");
        let caller = Dialog::caller(&inv, &ok).expect("caller dialog");
        assert_eq!(callee.local, caller.remote);
        assert_eq!(callee.remote, caller.local);
        assert_eq!(callee.target, "sip:+15550001@127.0.0.1:5070");
        assert_eq!(caller.target, "sip:maria@127.0.0.1:6000");
        assert_eq!(callee.routes, vec!["<sip:127.0.0.1:5060;lr>".to_string()]);
        assert_eq!(caller.routes, callee.routes);

        let mut caller = caller;
        let ack = reparse_request(&caller.ack(1, local(), None));
        assert_eq!(ack.header("CSeq"), Some("1 ACK"));
        let bye = reparse_request(&caller.request("BYE", local()));
        assert_eq!(bye.uri, "sip:maria@127.0.0.1:6000");
        assert_eq!(bye.header("CSeq"), Some("2 BYE"));
        assert_eq!(bye.header("Route"), Some("<sip:127.0.0.1:5060;lr>"));
        assert_eq!(bye.header("To"), ok.header("To"));
    }

    #[test]
    fn cancel_and_failure_ack_share_the_invites_branch() {
        let inv = invite(
            "sip:phones@127.0.0.1:5060",
            "<sip:+1@127.0.0.1:5070>;tag=t1",
            "c2",
            local(),
            "sip:+1@127.0.0.1:5070",
            "v=0",
        );
        let busy = reply(&inv, 487, "Request Terminated", None, None);
        let ack = ack_failure(&inv, &busy);
        let cancel = cancel(&inv);
        assert_eq!(ack.method, "ACK");
        assert_eq!(ack.uri, inv.uri);
        assert_eq!(ack.header("CSeq"), Some("1 ACK"));
        assert_eq!(ack.header("To"), busy.header("To"));
        assert!(proxy::tag_of(ack.header("To").unwrap_or_default()).is_some());
        assert_eq!(cancel.header("CSeq"), Some("1 CANCEL"));
        let branch = proxy::top_branch(&inv.headers);
        assert_eq!(proxy::top_branch(&ack.headers), branch);
        assert_eq!(proxy::top_branch(&cancel.headers), branch);
    }
}
