//! Fuzz target: any datagram through the SIP parser, then every header value through the
//! header parsers the registrar and the call proxy use. Nothing may panic; a message that
//! parses must serialize to bytes that parse again and serialize to the same bytes (what the
//! proxy forwards is stable; serializing always writes Content-Length).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_core::sip::message::{
    self, ParseError, SipMessage, parse_contacts, parse_cseq, parse_delta_seconds, parse_name_addr,
    parse_sip_uri, parse_via, split_list,
};

fuzz_target!(|data: &[u8]| {
    let Ok(parsed) = message::parse(data) else {
        return;
    };
    let (headers, bytes) = match &parsed {
        SipMessage::Request(r) => {
            let _ = parse_sip_uri(&r.uri);
            let _ = r.contacts();
            (&r.headers, r.serialize())
        }
        SipMessage::Response(r) => (&r.headers, r.serialize()),
    };
    for (_, value) in headers {
        let _ = parse_name_addr(value);
        let _ = parse_contacts(value);
        let _ = parse_via(value);
        let _ = parse_cseq(value);
        let _ = parse_delta_seconds(value);
        if let Ok(items) = split_list(value) {
            for item in items {
                let _ = parse_sip_uri(item.trim());
            }
        }
    }
    let again = match message::parse(&bytes) {
        Ok(SipMessage::Request(r)) => r.serialize(),
        Ok(SipMessage::Response(r)) => r.serialize(),
        // A message at the header limit without Content-Length grows by that line.
        Err(ParseError::TooManyHeaders) => return,
        Err(e) => panic!("a serialized message does not parse: {e}"),
    };
    assert_eq!(again, bytes, "serializing is stable across a parse");
});
