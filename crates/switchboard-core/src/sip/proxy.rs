//! Pure layer: how the call proxy rewrites and builds SIP messages (RFC 3261 §16) — forwarding
//! an INVITE to a phone with a Via and a Record-Route of its own, relaying responses and
//! in-dialog requests, and the CANCEL, ACK and BYE it sends on its own account. No sockets, no
//! clock: the core decides when; this module only says what the message is.

use super::message::{
    Request, Response, SipUri, parse_cseq, parse_name_addr, parse_sip_uri, split_list,
};
use std::net::{IpAddr, SocketAddr};

/// The magic cookie every RFC 3261 branch starts with.
pub const COOKIE: &str = "z9hG4bK";

/// Our Via for a request sent from `local` with this branch.
pub fn via(local: SocketAddr, branch: &str) -> String {
    format!("SIP/2.0/UDP {};branch={branch};rport", host_port(local))
}

/// `host:port` as it appears in a Via or a URI (IPv6 in brackets).
pub fn host_port(addr: SocketAddr) -> String {
    match addr.ip() {
        IpAddr::V4(ip) => format!("{ip}:{}", addr.port()),
        IpAddr::V6(ip) => format!("[{ip}]:{}", addr.port()),
    }
}

/// The Record-Route (and Route) value naming this proxy.
pub fn record_route(local: SocketAddr) -> String {
    format!("<sip:{};lr>", host_port(local))
}

/// The address a SIP URI names, when its host is an IP address (port 5060 by default).
pub fn uri_addr(uri: &str) -> Option<SocketAddr> {
    let u: SipUri = parse_sip_uri(uri).ok()?;
    let ip: IpAddr = u.host.trim_matches(['[', ']']).parse().ok()?;
    Some(SocketAddr::new(ip, u.port.unwrap_or(5060)))
}

/// The user part of a header's URI (From: the caller's number).
pub fn user_of(header: &str) -> Option<String> {
    let na = parse_name_addr(header).ok()?;
    parse_sip_uri(&na.uri).ok()?.user
}

/// The display name of a From/To header, if any.
pub fn display_of(header: &str) -> Option<String> {
    parse_name_addr(header)
        .ok()?
        .display
        .filter(|d| !d.trim().is_empty())
}

/// The `tag` parameter of a From/To header.
pub fn tag_of(header: &str) -> Option<String> {
    parse_name_addr(header)
        .ok()?
        .param("tag")
        .map(str::to_owned)
}

/// The URI of the first Contact.
pub fn contact_uri(headers: &[(String, String)]) -> Option<String> {
    let line = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("Contact"))?;
    let first = split_list(&line.1).ok()?.into_iter().next()?;
    Some(parse_name_addr(first).ok()?.uri)
}

/// The branch of the topmost Via.
pub fn top_branch(headers: &[(String, String)]) -> Option<String> {
    let line = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("Via"))?;
    let first = split_list(&line.1).ok()?.into_iter().next()?;
    super::message::parse_via(first)
        .ok()?
        .param("branch")
        .map(str::to_owned)
}

/// The CSeq number and method.
pub fn cseq(headers: &[(String, String)]) -> Option<(u32, String)> {
    let v = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("CSeq"))?;
    parse_cseq(&v.1).ok().map(|(n, m)| (n, m.to_owned()))
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Removes the topmost Via value (the one this proxy added) from a response.
pub fn strip_top_via(resp: &Response) -> Response {
    let mut out = resp.clone();
    if let Some(i) = out
        .headers
        .iter()
        .position(|(n, _)| n.eq_ignore_ascii_case("Via"))
    {
        let rest: Vec<String> = split_list(&out.headers[i].1)
            .map(|v| v.iter().skip(1).map(|s| s.to_string()).collect())
            .unwrap_or_default();
        if rest.is_empty() {
            out.headers.remove(i);
        } else {
            out.headers[i].1 = rest.join(", ");
        }
    }
    out
}

/// A request forwarded by the proxy (RFC 3261 §16.6): our Via on top, Max-Forwards lowered,
/// a Route naming us removed; `uri` replaces the Request-URI when given; `record_route` adds
/// ours (dialog-creating requests).
pub fn forward(
    req: &Request,
    uri: Option<&str>,
    local: SocketAddr,
    branch: &str,
    record: bool,
) -> Request {
    let mut out = req.clone();
    if let Some(u) = uri {
        out.uri = u.to_owned();
    }
    let ours = host_port(local);
    let mut headers = Vec::with_capacity(out.headers.len() + 2);
    headers.push(("Via".to_owned(), via(local, branch)));
    let mut first_route = true;
    for (n, v) in out.headers.drain(..) {
        if n.eq_ignore_ascii_case("Max-Forwards") {
            let left = v.trim().parse::<u32>().unwrap_or(70).saturating_sub(1);
            headers.push((n, left.to_string()));
            continue;
        }
        if n.eq_ignore_ascii_case("Route") && first_route {
            first_route = false;
            let items: Vec<String> = split_list(&v)
                .map(|l| l.iter().map(|s| s.to_string()).collect())
                .unwrap_or_else(|_| vec![v.clone()]);
            let kept: Vec<String> = items
                .into_iter()
                .enumerate()
                .filter(|(i, r)| !(*i == 0 && r.contains(&ours)))
                .map(|(_, r)| r)
                .collect();
            if !kept.is_empty() {
                headers.push((n, kept.join(", ")));
            }
            continue;
        }
        headers.push((n, v));
    }
    if record {
        let at = headers
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case("Record-Route"))
            .unwrap_or(1);
        headers.insert(at, ("Record-Route".to_owned(), record_route(local)));
    }
    out.headers = headers;
    out
}

/// The CANCEL for an INVITE this proxy sent (RFC 3261 §9.1): same Request-URI, top Via,
/// From, To, Call-ID and CSeq number.
pub fn cancel(invite: &Request) -> Request {
    let mut headers = Vec::new();
    for name in ["Via", "Max-Forwards", "From", "To", "Call-ID"] {
        if let Some(v) = invite.header(name) {
            let v = if name == "Via" {
                split_list(v)
                    .ok()
                    .and_then(|l| l.first().map(|s| s.to_string()))
                    .unwrap_or_else(|| v.to_owned())
            } else {
                v.to_owned()
            };
            headers.push((name.to_owned(), v));
        }
    }
    let n = cseq(&invite.headers).map(|(n, _)| n).unwrap_or(1);
    headers.push(("CSeq".to_owned(), format!("{n} CANCEL")));
    Request {
        method: "CANCEL".into(),
        uri: invite.uri.clone(),
        headers,
        body: Vec::new(),
    }
}

/// One direction of a dialog: where a request goes and the headers that name the dialog.
#[derive(Debug, Clone, Copy)]
pub struct Leg<'a> {
    /// The remote target (Request-URI).
    pub uri: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    pub call_id: &'a str,
}

/// A request this proxy sends inside a dialog on one side's behalf (ACK or BYE).
pub fn in_dialog(method: &str, leg: Leg<'_>, seq: u32, local: SocketAddr, branch: &str) -> Request {
    let Leg {
        uri,
        from,
        to,
        call_id,
    } = leg;
    Request {
        method: method.into(),
        uri: uri.into(),
        headers: vec![
            ("Via".into(), via(local, branch)),
            ("Max-Forwards".into(), "70".into()),
            ("From".into(), from.into()),
            ("To".into(), to.into()),
            ("Call-ID".into(), call_id.into()),
            ("CSeq".into(), format!("{seq} {method}")),
        ],
        body: Vec::new(),
    }
}

/// The ACK and BYE for a 2xx from a branch that was no longer wanted (another phone answered
/// first, or the offer ended while it rang): the phone is hung up at once.
pub fn ack_and_bye(
    ok: &Response,
    local: SocketAddr,
    branches: [&str; 2],
) -> Option<[(Request, SocketAddr); 2]> {
    let uri = contact_uri(&ok.headers)?;
    let addr = uri_addr(&uri)?;
    let from = header(&ok.headers, "From")?;
    let to = header(&ok.headers, "To")?;
    let call_id = header(&ok.headers, "Call-ID")?;
    let (n, _) = cseq(&ok.headers)?;
    let leg = Leg {
        uri: &uri,
        from,
        to,
        call_id,
    };
    let ack = in_dialog("ACK", leg, n, local, branches[0]);
    let bye = in_dialog("BYE", leg, n + 1, local, branches[1]);
    Some([(ack, addr), (bye, addr)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{SipMessage, parse};

    fn invite() -> Request {
        let text = "INVITE sip:support@192.0.2.9 SIP/2.0\r\n\
            Via: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKa\r\nMax-Forwards: 70\r\n\
            From: \"Ann\" <sip:+15551234@trunk>;tag=f1\r\nTo: <sip:support@sb>\r\n\
            Call-ID: call-1\r\nCSeq: 1 INVITE\r\nContact: <sip:+15551234@192.0.2.1:5070>\r\n\
            Content-Type: application/sdp\r\n\r\nv=0\r\n";
        match parse(text.as_bytes()) {
            Ok(SipMessage::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_forwarded_invite_carries_our_via_and_record_route_and_the_body_untouched() {
        let local: SocketAddr = "192.0.2.9:5060".parse().unwrap();
        let f = forward(
            &invite(),
            Some("sip:alice@192.0.2.50:5062"),
            local,
            "z9hG4bKb",
            true,
        );
        let text = String::from_utf8(f.serialize()).unwrap();
        assert!(text.starts_with("INVITE sip:alice@192.0.2.50:5062 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bKb;rport\r\n"), "{text}");
        assert!(text.contains("Record-Route: <sip:192.0.2.9:5060;lr>"));
        assert!(text.contains("Max-Forwards: 69"));
        assert!(text.ends_with("\r\n\r\nv=0\r\n"));
        assert_eq!(
            user_of(f.header("From").unwrap()).as_deref(),
            Some("+15551234")
        );
        assert_eq!(
            display_of(f.header("From").unwrap()).as_deref(),
            Some("Ann")
        );
    }

    #[test]
    fn a_route_naming_us_is_removed_and_our_via_is_stripped_from_responses() {
        let local: SocketAddr = "192.0.2.9:5060".parse().unwrap();
        let mut bye = invite();
        bye.method = "BYE".into();
        bye.headers
            .push(("Route".into(), "<sip:192.0.2.9:5060;lr>".into()));
        let f = forward(&bye, None, local, "z9hG4bKc", false);
        assert!(f.header("Route").is_none());
        assert!(f.header("Record-Route").is_none());
        let resp = crate::sip::message::response_to(&f, 200, "OK");
        let back = strip_top_via(&resp);
        assert_eq!(
            back.header("Via"),
            Some("SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKa")
        );
        let c = cancel(&f);
        assert_eq!(c.header("CSeq"), Some("1 CANCEL"));
        assert_eq!(top_branch(&c.headers).as_deref(), Some("z9hG4bKc"));
    }
}
