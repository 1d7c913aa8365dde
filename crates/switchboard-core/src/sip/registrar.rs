//! SIP registrar logic (RFC 3261 §10) with digest authentication (RFC 3261 §22, RFC 2617 /
//! RFC 8760 MD5, `qop=auth`): decides what a request means and what to answer.
//!
//! Pure SIP protocol logic: no tokio, no sockets, no clock (time is an argument). The bindings
//! themselves live in the core: an authenticated REGISTER comes out as a [`RegisterRequest`],
//! the core applies it and answers with [`registered_ok`].
//!
//! Choices where the RFCs leave room:
//! - The AOR is the To URI; its user part is the agent id. The digest `username` must equal it
//!   (`403` otherwise): an agent registers only itself. The AOR host is not checked (phones
//!   address the server by IP or by name).
//! - An unknown agent gets `401`, exactly like a wrong password (no user enumeration).
//! - `qop=auth` is required: the challenge offers it, and RFC 2617 §3.2.2 obliges a client that
//!   is offered qop to use it. RFC 2069-style credentials (no qop, no nonce count) are answered
//!   with a fresh challenge, because without `nc` a captured request could be replayed for the
//!   whole nonce lifetime.
//! - Nonces are stateless: `hex(issued_ms ‖ counter ‖ HMAC-SHA256(secret, issued_ms ‖ counter ‖
//!   realm ‖ source IP)[..16])`; the counter keeps nonces issued in one millisecond apart. A
//!   nonce is valid only from the address it was sent to, so only a client that receives
//!   packets there can answer it; a wrong digest over such a nonce is the one failure the
//!   adapter may count ([`Registrar::take_wrong_digest`]). Only the highest
//!   nonce count per nonce is kept, in a map bounded by [`NONCE_TRACK_CAPACITY`]; a nonce
//!   evicted from it (or older than any evicted one) counts as stale, so eviction can never
//!   reopen a replay.
//! - A correct digest with an expired nonce, or with a nonce count not above the last one seen,
//!   gets `401` with `stale=true`: the client already proved the password, and a retransmitted
//!   REGISTER then recovers with a new nonce without asking the user. A wrong digest always gets a
//!   plain `401`.
//! - Problems visible without credentials are answered before authentication: `400` (syntax),
//!   `404` (a To URI without a user part), `416` (Request-URI not sip/sips), `420` (any
//!   `Require`); `423` comes after it, as in RFC 3261 §10.3.
//! - `ACK` is never answered ([`Outcome::NoReply`]); every other method but REGISTER and OPTIONS
//!   gets `405`.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};

use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::message::{
    ContactValue, ParseError, Request, Response, parse_cseq, parse_delta_seconds, parse_name_addr,
    parse_sip_uri, parse_via, quote, response_to, split_list, unquote,
};

/// The methods this server answers, for `Allow`.
pub const ALLOW: &str = "REGISTER, OPTIONS, INVITE, ACK, CANCEL, BYE";
/// Most nonces whose nonce count is remembered at once.
pub const NONCE_TRACK_CAPACITY: usize = 10_000;

type HmacSha256 = Hmac<Sha256>;

/// Registrar settings; durations in seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrarConfig {
    pub realm: String,
    pub min_expires: u32,
    pub max_expires: u32,
    /// Used when a contact has no `expires` parameter and the request no `Expires` header;
    /// brought into `min_expires..=max_expires`.
    pub default_expires: u32,
    /// How long a nonce stays fresh (conventionally 300).
    pub nonce_ttl_secs: u32,
}

/// The registrar: configuration, the nonce secret, the agents' digest credentials and the
/// bounded nonce-count memory.
pub struct Registrar {
    cfg: RegistrarConfig,
    /// HMAC-SHA256 keyed with the secret, cloned for each use.
    mac: HmacSha256,
    /// agent id → hex MD5(agent id ":" realm ":" sip password).
    ha1: HashMap<String, String>,
    /// Compared against for unknown agents, so that they take as long as known ones.
    dummy_ha1: String,
    opaque: String,
    next_nonce: u64,
    counts: NonceCounts,
    /// Set by [`Registrar::handle`] when the request answered one of our challenges (a
    /// nonce issued to its source address) with a wrong digest: the user it claimed.
    wrong_digest: Option<String>,
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Send this response as it is (to the packet's source).
    Reply(Response),
    /// An authenticated REGISTER: the core applies it, then answers with [`registered_ok`].
    Register(RegisterRequest),
    /// Send nothing (`ACK`: a response to it is never allowed).
    NoReply,
}

/// An authenticated REGISTER, validated: every expiry already granted (clamped to
/// `max_expires`, never below `min_expires` unless 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterRequest {
    pub agent_id: String,
    pub change: BindingChange,
    /// With `cseq`, lets the core ignore an out-of-order REGISTER (RFC 3261 §10.3 step 7).
    pub call_id: String,
    pub cseq: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindingChange {
    /// No Contact: report the current bindings.
    Fetch,
    /// Add, refresh or (with 0) remove these bindings, in request order.
    Update(Vec<ContactUpdate>),
    /// `Contact: *` with `Expires: 0`: remove every binding of the agent.
    RemoveAll,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactUpdate {
    /// The contact URI as the client wrote it (without angle brackets); compare bindings by it.
    pub uri: String,
    /// Granted expiry; 0 removes the binding.
    pub expires_secs: u32,
}

impl Registrar {
    pub fn new(
        cfg: RegistrarConfig,
        secret: [u8; 32],
        credentials: HashMap<String, String>,
    ) -> Self {
        // HMAC pads a key shorter than the block to the block size with zeros, so this is
        // HMAC keyed with `secret`, built without the fallible slice constructor.
        let mut key = hmac::digest::Key::<HmacSha256>::default();
        for (k, s) in key.iter_mut().zip(secret) {
            *k = s;
        }
        let mac = <HmacSha256 as hmac::digest::KeyInit>::new(&key);
        let mut opaque_mac = mac.clone();
        opaque_mac.update(b"opaque:");
        opaque_mac.update(cfg.realm.as_bytes());
        let opaque = hex::encode(
            opaque_mac
                .finalize()
                .into_bytes()
                .get(..8)
                .unwrap_or_default(),
        );
        let dummy_ha1 = digest_ha1("", &cfg.realm, &hex::encode(secret));
        let mut registrar = Self {
            cfg,
            mac,
            ha1: HashMap::new(),
            dummy_ha1,
            opaque,
            next_nonce: 0,
            wrong_digest: None,
            counts: NonceCounts::new(NONCE_TRACK_CAPACITY),
        };
        registrar.set_credentials(credentials);
        registrar
    }

    /// Replaces the agents' SIP passwords (agent id → password), e.g. on a config reload.
    /// Outstanding nonces stay valid.
    pub fn set_credentials(&mut self, credentials: HashMap<String, String>) {
        self.ha1 = credentials
            .into_iter()
            .map(|(agent, password)| {
                let ha1 = digest_ha1(&agent, &self.cfg.realm, &password);
                (agent, ha1)
            })
            .collect();
    }

    /// Decides the answer to `req`, which arrived from `source` at wall-clock `now_ms` (Unix
    /// milliseconds). Every reply has the top Via stamped with `received`/`rport`.
    pub fn handle(&mut self, now_ms: i64, req: &Request, source: SocketAddr) -> Outcome {
        self.wrong_digest = None;
        if req.method == "ACK" {
            return Outcome::NoReply;
        }
        let top_via_ok = req
            .header("Via")
            .and_then(|v| split_list(v).ok())
            .and_then(|vias| vias.first().map(|v| parse_via(v).is_ok()))
            .unwrap_or(false);
        if !top_via_ok {
            return Outcome::Reply(bad_request(req, source, "malformed Via"));
        }
        let cseq_ok = req
            .header("CSeq")
            .and_then(|c| parse_cseq(c).ok())
            .is_some_and(|(_, method)| method == req.method);
        if !cseq_ok {
            return Outcome::Reply(bad_request(req, source, "malformed CSeq"));
        }
        match req.method.as_str() {
            "REGISTER" => self.register(now_ms, req, source),
            "OPTIONS" => Outcome::Reply(
                reply(req, source, 200, "OK")
                    .with_header("Allow", ALLOW)
                    .with_header("Accept", "application/sdp"),
            ),
            _ => Outcome::Reply(
                reply(req, source, 405, "Method Not Allowed").with_header("Allow", ALLOW),
            ),
        }
    }

    /// After [`Registrar::handle`]: the user whose password the request got wrong, counted
    /// only when it answered a nonce this registrar issued to the request's own address. A
    /// made-up nonce, or one issued to another address (what a packet with a forged source
    /// would carry), only gets a fresh challenge: it cannot count against anyone.
    pub fn take_wrong_digest(&mut self) -> Option<String> {
        self.wrong_digest.take()
    }

    /// The user named by the request's credentials for this realm, if any (for throttling
    /// before the digest is checked).
    pub fn claimed_user(&self, req: &Request) -> Option<String> {
        req.headers_named("Authorization")
            .find_map(|v| match parse_credentials(v) {
                Ok(Some(c)) if c.realm == self.cfg.realm => Some(c.username),
                _ => None,
            })
    }

    fn register(&mut self, now_ms: i64, req: &Request, source: SocketAddr) -> Outcome {
        let checked = match check_register(req, &self.cfg) {
            Ok(checked) => checked,
            Err(resp) => return Outcome::Reply(finish(resp, source)),
        };
        let agent_id = match self.authenticate(now_ms, req, source.ip(), &checked.aor_user) {
            Ok(agent_id) => agent_id,
            Err(resp) => return Outcome::Reply(finish(resp, source)),
        };
        let change = match checked.contacts {
            Requested::Fetch => BindingChange::Fetch,
            Requested::RemoveAll => BindingChange::RemoveAll,
            Requested::Update(contacts) => {
                let too_brief = contacts
                    .iter()
                    .any(|(_, secs)| *secs != 0 && *secs < self.cfg.min_expires);
                if too_brief {
                    return Outcome::Reply(
                        reply(req, source, 423, "Interval Too Brief")
                            .with_header("Min-Expires", self.cfg.min_expires.to_string()),
                    );
                }
                BindingChange::Update(
                    contacts
                        .into_iter()
                        .map(|(uri, secs)| ContactUpdate {
                            uri,
                            expires_secs: secs.min(self.cfg.max_expires),
                        })
                        .collect(),
                )
            }
        };
        Outcome::Register(RegisterRequest {
            agent_id,
            change,
            call_id: checked.call_id,
            cseq: checked.cseq,
        })
    }

    /// Checks the digest credentials; the agent id, or the response to send.
    fn authenticate(
        &mut self,
        now_ms: i64,
        req: &Request,
        ip: IpAddr,
        aor_user: &str,
    ) -> Result<String, Response> {
        let mut found = None;
        for value in req.headers_named("Authorization") {
            match parse_credentials(value) {
                Ok(Some(c)) if c.realm == self.cfg.realm => {
                    found = Some(c);
                    break;
                }
                Ok(_) => {}
                Err(_) => return Err(bad_request_unstamped(req, "malformed Authorization")),
            }
        }
        let Some(creds) = found else {
            return Err(self.challenge(now_ms, req, ip, false));
        };
        if creds.username != aor_user {
            return Err(response_to(req, 403, "Forbidden"));
        }
        if creds.uri != req.uri {
            return Err(bad_request_unstamped(
                req,
                "digest uri differs from the Request-URI",
            ));
        }
        let algorithm_ok = creds
            .algorithm
            .as_deref()
            .is_none_or(|a| a.eq_ignore_ascii_case("MD5"));
        let opaque_ok = creds.opaque.as_deref().is_none_or(|o| o == self.opaque);
        let (Some(qop), Some(nc), Some(cnonce)) = (&creds.qop, &creds.nc, &creds.cnonce) else {
            return Err(self.challenge(now_ms, req, ip, false));
        };
        if !qop.eq_ignore_ascii_case("auth") || !algorithm_ok || !opaque_ok {
            return Err(self.challenge(now_ms, req, ip, false));
        }
        let nc_value = (nc.len() == 8 && nc.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| u32::from_str_radix(nc, 16).ok())
            .flatten();
        let Some(nc_value) = nc_value else {
            return Err(bad_request_unstamped(req, "malformed nc"));
        };
        let Some(nonce) = self.open_nonce(&creds.nonce, ip) else {
            return Err(self.challenge(now_ms, req, ip, false));
        };
        let (ha1, known) = match self.ha1.get(&creds.username) {
            Some(ha1) => (ha1.as_str(), true),
            None => (self.dummy_ha1.as_str(), false),
        };
        let expected = digest_response(ha1, &creds.nonce, nc, cnonce, qop, &req.method, &creds.uri);
        let given = creds.response.to_ascii_lowercase();
        let matches: bool = expected.as_bytes().ct_eq(given.as_bytes()).into();
        if !(matches && known) {
            self.wrong_digest = Some(creds.username.clone());
            return Err(self.challenge(now_ms, req, ip, false));
        }
        let ttl_ms = i64::from(self.cfg.nonce_ttl_secs).saturating_mul(1000);
        let age_ms = now_ms.saturating_sub(nonce.issued_ms);
        if age_ms > ttl_ms || age_ms < -ttl_ms {
            return Err(self.challenge(now_ms, req, ip, true));
        }
        if !self
            .counts
            .advance(nonce, nc_value, now_ms.saturating_sub(ttl_ms))
        {
            return Err(self.challenge(now_ms, req, ip, true));
        }
        Ok(creds.username)
    }

    /// A `401` with a fresh nonce.
    fn challenge(&mut self, now_ms: i64, req: &Request, ip: IpAddr, stale: bool) -> Response {
        let nonce = self.issue_nonce(now_ms, ip);
        let mut value = format!(
            "Digest realm={}, nonce=\"{nonce}\", opaque=\"{}\", algorithm=MD5, qop=\"auth\"",
            quote(&self.cfg.realm),
            self.opaque
        );
        if stale {
            value.push_str(", stale=true");
        }
        response_to(req, 401, "Unauthorized").with_header("WWW-Authenticate", value)
    }

    /// The nonce's tag binds it to the realm and to the address it was sent to.
    fn nonce_tag(&self, id: &[u8; 16], ip: IpAddr) -> [u8; 16] {
        let mut mac = self.mac.clone();
        mac.update(id);
        mac.update(self.cfg.realm.as_bytes());
        match ip {
            IpAddr::V4(v4) => mac.update(&v4.octets()),
            IpAddr::V6(v6) => mac.update(&v6.octets()),
        }
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; 16];
        for (t, f) in tag.iter_mut().zip(full) {
            *t = f;
        }
        tag
    }

    fn issue_nonce(&mut self, now_ms: i64, ip: IpAddr) -> String {
        let counter = self.next_nonce;
        self.next_nonce = self.next_nonce.wrapping_add(1);
        let id = NonceId {
            issued_ms: now_ms,
            counter,
        };
        let bytes = id.to_bytes();
        let mut out = hex::encode(bytes);
        out.push_str(&hex::encode(self.nonce_tag(&bytes, ip)));
        out
    }

    /// The nonce's identity if this registrar issued it (for this realm, to this address).
    fn open_nonce(&self, nonce: &str, ip: IpAddr) -> Option<NonceId> {
        let mut raw = [0u8; 32];
        hex::decode_to_slice(nonce, &mut raw).ok()?;
        let (id, tag) = raw.split_at(16);
        let id: [u8; 16] = id.try_into().ok()?;
        let ok: bool = self.nonce_tag(&id, ip).ct_eq(tag).into();
        ok.then(|| NonceId::from_bytes(id))
    }
}

/// Builds a reply to `req` with its top Via stamped.
fn reply(req: &Request, source: SocketAddr, code: u16, reason: &str) -> Response {
    finish(response_to(req, code, reason), source)
}

fn finish(mut resp: Response, source: SocketAddr) -> Response {
    resp.stamp_via(source);
    resp
}

fn bad_request_unstamped(req: &Request, why: &str) -> Response {
    response_to(req, 400, "Bad Request")
        .with_header("Warning", format!("399 switchboard {}", quote(why)))
}

fn bad_request(req: &Request, source: SocketAddr, why: &str) -> Response {
    finish(bad_request_unstamped(req, why), source)
}

/// The `200 OK` to an applied REGISTER: one `Contact: <uri>;expires=N` line per current binding
/// of the agent (N = seconds left), none when it has no binding left.
pub fn registered_ok(req: &Request, source: SocketAddr, bindings: &[(String, u32)]) -> Response {
    let mut resp = reply(req, source, 200, "OK");
    for (uri, secs) in bindings {
        resp.push_header("Contact", format!("<{uri}>;expires={secs}"));
    }
    resp
}

// ---------------------------------------------------------------------------------------------
// REGISTER syntax

struct CheckedRegister {
    aor_user: String,
    call_id: String,
    cseq: u32,
    contacts: Requested,
}

/// Contacts with their requested expiry (before the minimum and maximum apply).
enum Requested {
    Fetch,
    Update(Vec<(String, u32)>),
    RemoveAll,
}

/// Everything about a REGISTER that needs no credentials: the AOR, the contacts and their
/// requested expiry. Errors are the (unstamped) response to send.
fn check_register(req: &Request, cfg: &RegistrarConfig) -> Result<CheckedRegister, Response> {
    let bad = |why: &str| bad_request_unstamped(req, why);
    let required: Vec<&str> = req
        .headers_named("Require")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    if !required.is_empty() {
        return Err(
            response_to(req, 420, "Bad Extension").with_header("Unsupported", required.join(", "))
        );
    }
    match parse_sip_uri(&req.uri) {
        Ok(_) => {}
        Err(ParseError::UnsupportedScheme) => {
            return Err(response_to(req, 416, "Unsupported URI Scheme"));
        }
        Err(_) => return Err(bad("malformed Request-URI")),
    }
    let to = req
        .header("To")
        .and_then(|t| parse_name_addr(t).ok())
        .ok_or_else(|| bad("malformed To"))?;
    let aor_user = match parse_sip_uri(&to.uri) {
        Ok(uri) => uri.user,
        Err(ParseError::UnsupportedScheme) => None,
        Err(_) => return Err(bad("malformed To URI")),
    };
    let Some(aor_user) = aor_user else {
        return Err(response_to(req, 404, "Not Found"));
    };
    let call_id = req.header("Call-ID").unwrap_or_default().to_owned();
    let (cseq, _) = req
        .header("CSeq")
        .and_then(|c| parse_cseq(c).ok())
        .ok_or_else(|| bad("malformed CSeq"))?;
    let expires_header = match req.header("Expires") {
        None => None,
        Some(v) => Some(parse_delta_seconds(v).ok_or_else(|| bad("malformed Expires"))?),
    };
    let contacts = req.contacts().map_err(|_| bad("malformed Contact"))?;
    let contacts = if contacts.is_empty() {
        Requested::Fetch
    } else if contacts.contains(&ContactValue::Star) {
        if contacts.len() != 1 || expires_header != Some(0) {
            return Err(bad("Contact: * needs Expires: 0 and no other Contact"));
        }
        Requested::RemoveAll
    } else {
        let default = cfg
            .default_expires
            .max(cfg.min_expires)
            .min(cfg.max_expires);
        let mut updates = Vec::with_capacity(contacts.len());
        for contact in contacts {
            let ContactValue::Address(addr) = contact else {
                continue;
            };
            let secs = match addr.param("expires") {
                Some(v) => parse_delta_seconds(v).ok_or_else(|| bad("malformed expires"))?,
                None => expires_header.unwrap_or(default),
            };
            updates.push((addr.uri, secs));
        }
        Requested::Update(updates)
    };
    Ok(CheckedRegister {
        aor_user,
        call_id,
        cseq,
        contacts,
    })
}

// ---------------------------------------------------------------------------------------------
// Digest

/// HA1 = MD5(username ":" realm ":" password), lower-case hex (RFC 2617 §3.2.2.2).
pub fn digest_ha1(username: &str, realm: &str, password: &str) -> String {
    md5_hex(&[username, realm, password])
}

/// The `response` for `qop=auth` (RFC 2617 §3.2.2.1): MD5(HA1 ":" nonce ":" nc ":" cnonce ":"
/// qop ":" MD5(method ":" uri)), lower-case hex.
pub fn digest_response(
    ha1: &str,
    nonce: &str,
    nc: &str,
    cnonce: &str,
    qop: &str,
    method: &str,
    uri: &str,
) -> String {
    let ha2 = md5_hex(&[method, uri]);
    md5_hex(&[ha1, nonce, nc, cnonce, qop, &ha2])
}

fn md5_hex(parts: &[&str]) -> String {
    let mut h = Md5::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            h.update(b":");
        }
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// The fields of a `Digest` Authorization header.
#[derive(Debug, Default)]
struct Credentials {
    username: String,
    realm: String,
    nonce: String,
    uri: String,
    response: String,
    algorithm: Option<String>,
    cnonce: Option<String>,
    opaque: Option<String>,
    qop: Option<String>,
    nc: Option<String>,
}

/// `Ok(None)` for another scheme; `Err` for a Digest header that breaks the grammar or lacks
/// username, realm, nonce, uri or response.
fn parse_credentials(value: &str) -> Result<Option<Credentials>, ParseError> {
    let err = || ParseError::Value("Authorization");
    let value = value.trim_start_matches([' ', '\t']);
    let end = value.find([' ', '\t']).unwrap_or(value.len());
    let (scheme, rest) = value.split_at(end);
    if !scheme.eq_ignore_ascii_case("Digest") {
        return Ok(None);
    }
    let mut c = Credentials::default();
    let mut seen: Vec<String> = Vec::new();
    for item in split_list(rest)? {
        let (name, raw) = item.split_once('=').ok_or_else(err)?;
        let name = name.trim_matches([' ', '\t']).to_ascii_lowercase();
        let raw = raw.trim_matches([' ', '\t']);
        let text = if raw.starts_with('"') {
            unquote(raw)?
        } else if !raw.is_empty() && !raw.contains([' ', '\t', '"']) {
            raw.to_owned()
        } else {
            return Err(err());
        };
        if seen.contains(&name) {
            return Err(err());
        }
        let field = match name.as_str() {
            "username" => &mut c.username,
            "realm" => &mut c.realm,
            "nonce" => &mut c.nonce,
            "uri" => &mut c.uri,
            "response" => &mut c.response,
            "algorithm" => c.algorithm.get_or_insert_default(),
            "cnonce" => c.cnonce.get_or_insert_default(),
            "opaque" => c.opaque.get_or_insert_default(),
            "qop" => c.qop.get_or_insert_default(),
            "nc" => c.nc.get_or_insert_default(),
            _ => continue,
        };
        *field = text;
        seen.push(name);
    }
    let required = ["username", "realm", "nonce", "uri", "response"];
    if !required.iter().all(|r| seen.iter().any(|s| s == r)) {
        return Err(err());
    }
    Ok(Some(c))
}

// ---------------------------------------------------------------------------------------------
// Nonces

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct NonceId {
    issued_ms: i64,
    counter: u64,
}

impl NonceId {
    fn to_bytes(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        let (a, b) = out.split_at_mut(8);
        a.copy_from_slice(&self.issued_ms.to_be_bytes());
        b.copy_from_slice(&self.counter.to_be_bytes());
        out
    }

    fn from_bytes(bytes: [u8; 16]) -> Self {
        let mut issued = [0u8; 8];
        let mut counter = [0u8; 8];
        issued.copy_from_slice(&bytes[..8]);
        counter.copy_from_slice(&bytes[8..]);
        Self {
            issued_ms: i64::from_be_bytes(issued),
            counter: u64::from_be_bytes(counter),
        }
    }
}

/// The highest nonce count seen per nonce, for at most `capacity` nonces; the oldest entry goes
/// first. `floor_ms` is the latest issue time of an evicted nonce: a nonce issued at or before it
/// and no longer in the map may have been used already, so it is refused.
struct NonceCounts {
    highest: HashMap<NonceId, u32>,
    order: VecDeque<NonceId>,
    capacity: usize,
    floor_ms: i64,
}

impl NonceCounts {
    fn new(capacity: usize) -> Self {
        Self {
            highest: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            floor_ms: i64::MIN,
        }
    }

    /// Records `nc` for `nonce` if it is above every count seen for it; false for a replay.
    /// Entries of nonces issued before `expired_before_ms` are dropped from the front (they are
    /// refused as stale anyway).
    fn advance(&mut self, nonce: NonceId, nc: u32, expired_before_ms: i64) -> bool {
        while let Some(front) = self.order.front().copied() {
            if front.issued_ms >= expired_before_ms {
                break;
            }
            self.order.pop_front();
            self.highest.remove(&front);
        }
        if let Some(highest) = self.highest.get_mut(&nonce) {
            if nc <= *highest {
                return false;
            }
            *highest = nc;
            return true;
        }
        if nc == 0 || nonce.issued_ms <= self.floor_ms {
            return false;
        }
        if self.order.len() >= self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.highest.remove(&old);
                self.floor_ms = self.floor_ms.max(old.issued_ms);
            }
        }
        self.highest.insert(nonce, nc);
        self.order.push_back(nonce);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{SipMessage, parse, parse_contacts};
    use proptest::prelude::*;

    const REALM: &str = "switchboard";
    const T0: i64 = 1_790_000_000_000;

    fn src() -> SocketAddr {
        "192.0.2.10:5062".parse().unwrap()
    }

    fn registrar() -> Registrar {
        let cfg = RegistrarConfig {
            realm: REALM.into(),
            min_expires: 10,
            max_expires: 30,
            default_expires: 30,
            nonce_ttl_secs: 300,
        };
        let creds = HashMap::from([
            ("alice".to_owned(), "alice-sip".to_owned()),
            ("bob".to_owned(), "bob-sip".to_owned()),
        ]);
        Registrar::new(cfg, [7u8; 32], creds)
    }

    /// A REGISTER for `user`; `extra` are more header lines.
    fn register(user: &str, extra: &[&str]) -> Request {
        let mut text = format!(
            "REGISTER sip:127.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 10.0.0.2:5062;branch=z9hG4bK-r1;rport\r\n\
             From: <sip:{user}@127.0.0.1>;tag=f1\r\n\
             To: <sip:{user}@127.0.0.1>\r\n\
             Call-ID: reg-{user}@10.0.0.2\r\n\
             CSeq: 2 REGISTER\r\n\
             Max-Forwards: 70\r\n"
        );
        for line in extra {
            text.push_str(line);
            text.push_str("\r\n");
        }
        text.push_str("Content-Length: 0\r\n\r\n");
        match parse(text.as_bytes()) {
            Ok(SipMessage::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn method(method: &str) -> Request {
        let text = format!(
            "{method} sip:alice@127.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 10.0.0.2:5062;branch=z9hG4bK-m1\r\n\
             From: <sip:bob@127.0.0.1>;tag=f9\r\n\
             To: <sip:alice@127.0.0.1>\r\n\
             Call-ID: m-1\r\n\
             CSeq: 1 {method}\r\n\r\n"
        );
        match parse(text.as_bytes()) {
            Ok(SipMessage::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn reply_of(outcome: Outcome) -> Response {
        match outcome {
            Outcome::Reply(r) => r,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn challenge_params(resp: &Response) -> HashMap<String, String> {
        assert_eq!(resp.code, 401);
        let value = resp.header("WWW-Authenticate").unwrap();
        let rest = value.strip_prefix("Digest ").unwrap();
        split_list(rest)
            .unwrap()
            .into_iter()
            .map(|item| {
                let (n, v) = item.split_once('=').unwrap();
                let v = if v.starts_with('"') {
                    unquote(v).unwrap()
                } else {
                    v.to_owned()
                };
                (n.to_owned(), v)
            })
            .collect()
    }

    fn authorization(user: &str, password: &str, nonce: &str, nc: &str, uri: &str) -> String {
        let ha1 = digest_ha1(user, REALM, password);
        let response = digest_response(&ha1, nonce, nc, "c0ffee", "auth", "REGISTER", uri);
        format!(
            "Authorization: Digest username=\"{user}\", realm=\"{REALM}\", nonce=\"{nonce}\", \
             uri=\"{uri}\", response=\"{response}\", algorithm=MD5, cnonce=\"c0ffee\", qop=auth, nc={nc}"
        )
    }

    /// Sends `extra` unauthenticated, then again with credentials for the nonce it got.
    fn authenticated(r: &mut Registrar, user: &str, password: &str, extra: &[&str]) -> Outcome {
        let first = reply_of(r.handle(T0, &register(user, extra), src()));
        let nonce = challenge_params(&first)["nonce"].clone();
        let auth = authorization(user, password, &nonce, "00000001", "sip:127.0.0.1");
        let mut lines = extra.to_vec();
        lines.push(&auth);
        r.handle(T0 + 50, &register(user, &lines), src())
    }

    fn update_of(outcome: Outcome) -> Vec<ContactUpdate> {
        match outcome {
            Outcome::Register(RegisterRequest {
                change: BindingChange::Update(u),
                ..
            }) => u,
            other => panic!("expected an update, got {other:?}"),
        }
    }

    #[test]
    fn rfc2617_example_vector() {
        let ha1 = digest_ha1("Mufasa", "testrealm@host.com", "Circle Of Life");
        let response = digest_response(
            &ha1,
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            "00000001",
            "0a4f113b",
            "auth",
            "GET",
            "/dir/index.html",
        );
        assert_eq!(response, "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn padded_key_equals_the_secret_as_hmac_key() {
        let r = registrar();
        let mut reference = HmacSha256::new_from_slice(&[7u8; 32]).unwrap();
        reference.update(b"x");
        let mut ours = r.mac.clone();
        ours.update(b"x");
        assert_eq!(
            ours.finalize().into_bytes(),
            reference.finalize().into_bytes()
        );
    }

    #[test]
    fn register_without_credentials_is_challenged() {
        let mut r = registrar();
        let resp = reply_of(r.handle(
            T0,
            &register("alice", &["Contact: <sip:alice@10.0.0.2:5062>"]),
            src(),
        ));
        let p = challenge_params(&resp);
        assert_eq!(p["realm"], REALM);
        assert_eq!(p["algorithm"], "MD5");
        assert_eq!(p["qop"], "auth");
        assert_eq!(p["nonce"].len(), 64);
        assert!(!p["opaque"].is_empty());
        assert!(!p.contains_key("stale"));
        assert_eq!(
            resp.header("Via"),
            Some("SIP/2.0/UDP 10.0.0.2:5062;branch=z9hG4bK-r1;rport=5062;received=192.0.2.10")
        );
        assert!(
            parse_name_addr(resp.header("To").unwrap())
                .unwrap()
                .param("tag")
                .is_some()
        );
        let second = reply_of(r.handle(T0, &register("alice", &[]), src()));
        assert_ne!(
            challenge_params(&second)["nonce"],
            p["nonce"],
            "fresh nonce each time"
        );
    }

    #[test]
    fn correct_credentials_register_the_contact() {
        let mut r = registrar();
        let outcome = authenticated(
            &mut r,
            "alice",
            "alice-sip",
            &["Contact: <sip:alice@10.0.0.2:5062>", "Expires: 20"],
        );
        assert_eq!(
            outcome,
            Outcome::Register(RegisterRequest {
                agent_id: "alice".into(),
                change: BindingChange::Update(vec![ContactUpdate {
                    uri: "sip:alice@10.0.0.2:5062".into(),
                    expires_secs: 20
                }]),
                call_id: "reg-alice@10.0.0.2".into(),
                cseq: 2,
            })
        );
    }

    #[test]
    fn wrong_password_is_challenged_again() {
        let mut r = registrar();
        let resp = reply_of(authenticated(
            &mut r,
            "alice",
            "bob-sip",
            &["Contact: <sip:alice@h>"],
        ));
        assert!(!challenge_params(&resp).contains_key("stale"));
    }

    #[test]
    fn unknown_agent_is_challenged_like_a_wrong_password() {
        let mut r = registrar();
        let resp = reply_of(authenticated(
            &mut r,
            "mallory",
            "x",
            &["Contact: <sip:m@h>"],
        ));
        assert!(!challenge_params(&resp).contains_key("stale"));
    }

    #[test]
    fn digest_username_other_than_the_aor_is_forbidden() {
        let mut r = registrar();
        let first = reply_of(r.handle(T0, &register("alice", &[]), src()));
        let nonce = challenge_params(&first)["nonce"].clone();
        let auth = authorization("bob", "bob-sip", &nonce, "00000001", "sip:127.0.0.1");
        let resp = reply_of(r.handle(T0, &register("alice", &[&auth]), src()));
        assert_eq!(resp.code, 403);
    }

    #[test]
    fn digest_uri_must_be_the_request_uri() {
        let mut r = registrar();
        let first = reply_of(r.handle(T0, &register("alice", &[]), src()));
        let nonce = challenge_params(&first)["nonce"].clone();
        let auth = authorization("alice", "alice-sip", &nonce, "00000001", "sip:elsewhere");
        let resp = reply_of(r.handle(T0, &register("alice", &[&auth]), src()));
        assert_eq!(resp.code, 400);
    }

    #[test]
    fn forged_or_foreign_nonce_is_not_stale() {
        let mut r = registrar();
        let mut other = Registrar::new(r.cfg.clone(), [8u8; 32], HashMap::new());
        let foreign = challenge_params(&reply_of(other.handle(T0, &register("alice", &[]), src())))
            ["nonce"]
            .clone();
        for nonce in [foreign.as_str(), "00", "zz", &"0".repeat(64)] {
            let auth = authorization("alice", "alice-sip", nonce, "00000001", "sip:127.0.0.1");
            let resp = reply_of(r.handle(T0, &register("alice", &[&auth]), src()));
            assert!(!challenge_params(&resp).contains_key("stale"), "{nonce}");
        }
    }

    #[test]
    fn expired_nonce_with_correct_digest_is_stale() {
        let mut r = registrar();
        let first = reply_of(r.handle(T0, &register("alice", &[]), src()));
        let nonce = challenge_params(&first)["nonce"].clone();
        let auth = authorization("alice", "alice-sip", &nonce, "00000001", "sip:127.0.0.1");
        let late = T0 + 300_001;
        let resp = reply_of(r.handle(late, &register("alice", &[&auth]), src()));
        assert_eq!(challenge_params(&resp)["stale"], "true");
        let wrong = authorization("alice", "nope", &nonce, "00000001", "sip:127.0.0.1");
        let resp = reply_of(r.handle(late, &register("alice", &[&wrong]), src()));
        assert!(
            !challenge_params(&resp).contains_key("stale"),
            "wrong digest is never stale"
        );
        let in_time = r.handle(T0 + 300_000, &register("alice", &[&auth]), src());
        assert!(matches!(in_time, Outcome::Register(_)));
    }

    #[test]
    fn replayed_or_lower_nonce_count_is_refused() {
        let mut r = registrar();
        let first = reply_of(r.handle(T0, &register("alice", &[]), src()));
        let nonce = challenge_params(&first)["nonce"].clone();
        let nc = |n: &str| authorization("alice", "alice-sip", &nonce, n, "sip:127.0.0.1");
        let ok = |o: &Outcome| matches!(o, Outcome::Register(_));
        assert!(ok(&r.handle(
            T0,
            &register("alice", &[&nc("00000001")]),
            src()
        )));
        let replay = reply_of(r.handle(T0, &register("alice", &[&nc("00000001")]), src()));
        assert_eq!(challenge_params(&replay)["stale"], "true");
        assert!(ok(&r.handle(
            T0,
            &register("alice", &[&nc("00000003")]),
            src()
        )));
        let lower = reply_of(r.handle(T0, &register("alice", &[&nc("00000002")]), src()));
        assert_eq!(lower.code, 401);
        assert!(ok(&r.handle(
            T0,
            &register("alice", &[&nc("0000000a")]),
            src()
        )));
    }

    #[test]
    fn credentials_without_qop_are_challenged() {
        let mut r = registrar();
        let first = reply_of(r.handle(T0, &register("alice", &[]), src()));
        let nonce = challenge_params(&first)["nonce"].clone();
        let ha1 = digest_ha1("alice", REALM, "alice-sip");
        let ha2 = md5_hex(&["REGISTER", "sip:127.0.0.1"]);
        let response = md5_hex(&[&ha1, &nonce, &ha2]);
        let auth = format!(
            "Authorization: Digest username=\"alice\", realm=\"{REALM}\", nonce=\"{nonce}\", uri=\"sip:127.0.0.1\", response=\"{response}\""
        );
        let resp = reply_of(r.handle(T0, &register("alice", &[&auth]), src()));
        assert_eq!(resp.code, 401);
    }

    #[test]
    fn malformed_authorization_is_a_bad_request() {
        let mut r = registrar();
        for auth in [
            "Authorization: Digest username=\"alice\"",
            "Authorization: Digest username=\"alice, realm=x",
            "Authorization: Digest username=alice, username=bob, realm=x, nonce=1, uri=x, response=y",
        ] {
            let resp = reply_of(r.handle(T0, &register("alice", &[auth]), src()));
            assert_eq!(resp.code, 400, "{auth}");
        }
        let basic = reply_of(r.handle(
            T0,
            &register("alice", &["Authorization: Basic YWxpY2U6eA=="]),
            src(),
        ));
        assert_eq!(basic.code, 401);
    }

    #[test]
    fn expiry_above_max_is_lowered() {
        let mut r = registrar();
        let u = update_of(authenticated(
            &mut r,
            "alice",
            "alice-sip",
            &["Contact: <sip:a@h>;expires=3600", "Expires: 15"],
        ));
        assert_eq!(u[0].expires_secs, 30);
        let u = update_of(authenticated(
            &mut r,
            "alice",
            "alice-sip",
            &["Contact: <sip:a@h>", "Expires: 4294967296"],
        ));
        assert_eq!(u[0].expires_secs, 30);
    }

    #[test]
    fn contact_expires_wins_over_header_and_default_applies_last() {
        let mut r = registrar();
        let u = update_of(authenticated(
            &mut r,
            "alice",
            "alice-sip",
            &[
                "Contact: <sip:a@h>;expires=12, <sip:b@h>",
                "Contact: sip:c@h;expires=0",
                "Expires: 25",
            ],
        ));
        let got: Vec<(&str, u32)> = u.iter().map(|c| (c.uri.as_str(), c.expires_secs)).collect();
        assert_eq!(got, [("sip:a@h", 12), ("sip:b@h", 25), ("sip:c@h", 0)]);
        let u = update_of(authenticated(
            &mut r,
            "alice",
            "alice-sip",
            &["Contact: <sip:a@h>"],
        ));
        assert_eq!(u[0].expires_secs, 30);
    }

    #[test]
    fn expiry_below_min_is_interval_too_brief() {
        let mut r = registrar();
        let resp = reply_of(authenticated(
            &mut r,
            "alice",
            "alice-sip",
            &["Contact: <sip:a@h>", "Expires: 5"],
        ));
        assert_eq!(resp.code, 423);
        assert_eq!(resp.reason, "Interval Too Brief");
        assert_eq!(resp.header("Min-Expires"), Some("10"));
        let unauthenticated = reply_of(r.handle(
            T0,
            &register("alice", &["Contact: <sip:a@h>;expires=1"]),
            src(),
        ));
        assert_eq!(unauthenticated.code, 401, "423 only after authentication");
    }

    #[test]
    fn expires_zero_removes_the_binding() {
        let mut r = registrar();
        let u = update_of(authenticated(
            &mut r,
            "alice",
            "alice-sip",
            &["Contact: <sip:a@h>", "Expires: 0"],
        ));
        assert_eq!(
            u,
            [ContactUpdate {
                uri: "sip:a@h".into(),
                expires_secs: 0
            }]
        );
    }

    #[test]
    fn star_contact_with_expires_zero_removes_all() {
        let mut r = registrar();
        let outcome = authenticated(&mut r, "bob", "bob-sip", &["Contact: *", "Expires: 0"]);
        let Outcome::Register(req) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(req.agent_id, "bob");
        assert_eq!(req.change, BindingChange::RemoveAll);
    }

    #[test]
    fn star_contact_otherwise_is_a_bad_request() {
        let mut r = registrar();
        for extra in [
            &["Contact: *"][..],
            &["Contact: *", "Expires: 30"],
            &["Contact: *, <sip:a@h>", "Expires: 0"],
            &["Contact: *", "Contact: <sip:a@h>", "Expires: 0"],
        ] {
            let resp = reply_of(r.handle(T0, &register("alice", extra), src()));
            assert_eq!(resp.code, 400, "{extra:?}");
        }
    }

    #[test]
    fn register_without_contact_fetches() {
        let mut r = registrar();
        let outcome = authenticated(&mut r, "alice", "alice-sip", &[]);
        assert!(matches!(
            outcome,
            Outcome::Register(RegisterRequest {
                change: BindingChange::Fetch,
                ..
            })
        ));
    }

    #[test]
    fn malformed_register_fields_are_bad_requests() {
        let mut r = registrar();
        for extra in [
            "Expires: soon",
            "Contact: <sip:a@h>;expires=never",
            "Contact: <sip:a@h",
        ] {
            let resp = reply_of(r.handle(T0, &register("alice", &[extra]), src()));
            assert_eq!(resp.code, 400, "{extra}");
            assert!(resp.header("Warning").is_some());
        }
    }

    #[test]
    fn required_extension_is_refused() {
        let mut r = registrar();
        let resp = reply_of(r.handle(T0, &register("alice", &["Require: path, gruu"]), src()));
        assert_eq!(resp.code, 420);
        assert_eq!(resp.header("Unsupported"), Some("path, gruu"));
    }

    #[test]
    fn to_without_user_is_not_found() {
        let mut r = registrar();
        let mut req = register("alice", &[]);
        for (n, v) in &mut req.headers {
            if n == "To" {
                *v = "<sip:127.0.0.1>".into();
            }
        }
        assert_eq!(reply_of(r.handle(T0, &req, src())).code, 404);
        req.uri = "tel:+123".into();
        assert_eq!(reply_of(r.handle(T0, &req, src())).code, 416);
    }

    #[test]
    fn set_credentials_replaces_passwords() {
        let mut r = registrar();
        r.set_credentials(HashMap::from([("alice".to_owned(), "new-pass".to_owned())]));
        assert_eq!(
            reply_of(authenticated(&mut r, "alice", "alice-sip", &[])).code,
            401
        );
        assert!(matches!(
            authenticated(&mut r, "alice", "new-pass", &[]),
            Outcome::Register(_)
        ));
        assert_eq!(
            reply_of(authenticated(&mut r, "bob", "bob-sip", &[])).code,
            401
        );
    }

    #[test]
    fn other_methods_get_405_with_allow() {
        let mut r = registrar();
        for m in ["INVITE", "BYE", "SUBSCRIBE", "CANCEL"] {
            let resp = reply_of(r.handle(T0, &method(m), src()));
            assert_eq!(resp.code, 405, "{m}");
            assert_eq!(resp.header("Allow"), Some(ALLOW));
        }
        assert_eq!(r.handle(T0, &method("ACK"), src()), Outcome::NoReply);
    }

    #[test]
    fn options_gets_200_with_allow_and_accept() {
        let mut r = registrar();
        let resp = reply_of(r.handle(T0, &method("OPTIONS"), src()));
        assert_eq!(resp.code, 200);
        assert_eq!(resp.header("Allow"), Some(ALLOW));
        assert_eq!(resp.header("Accept"), Some("application/sdp"));
        assert_eq!(resp.header("Call-ID"), Some("m-1"));
        assert_eq!(resp.header("CSeq"), Some("1 OPTIONS"));
    }

    #[test]
    fn cseq_method_mismatch_is_a_bad_request() {
        let mut r = registrar();
        let mut req = method("OPTIONS");
        for (n, v) in &mut req.headers {
            if n == "CSeq" {
                *v = "1 INVITE".into();
            }
        }
        assert_eq!(reply_of(r.handle(T0, &req, src())).code, 400);
    }

    #[test]
    fn registered_ok_lists_every_binding() {
        let req = register("alice", &["Contact: <sip:alice@10.0.0.2:5062>"]);
        let resp = registered_ok(
            &req,
            src(),
            &[
                ("sip:alice@10.0.0.2:5062".into(), 30),
                ("sip:alice@10.0.0.3".into(), 7),
            ],
        );
        assert_eq!(resp.code, 200);
        let contacts: Vec<ContactValue> = resp
            .headers_named("Contact")
            .flat_map(|c| parse_contacts(c).unwrap())
            .collect();
        assert_eq!(contacts.len(), 2);
        let ContactValue::Address(first) = &contacts[0] else {
            panic!()
        };
        assert_eq!(first.uri, "sip:alice@10.0.0.2:5062");
        assert_eq!(first.param("expires"), Some("30"));
        assert!(resp.header("Via").unwrap().contains("received=192.0.2.10"));
        let text = String::from_utf8(resp.serialize()).unwrap();
        assert!(text.contains("Content-Length: 0\r\n"));
        assert_eq!(
            registered_ok(&req, src(), &[])
                .headers_named("Contact")
                .count(),
            0
        );
    }

    #[test]
    fn evicted_nonce_counts_as_used() {
        let id = |ms, counter| NonceId {
            issued_ms: ms,
            counter,
        };
        let mut counts = NonceCounts::new(2);
        assert!(counts.advance(id(1, 0), 1, 0));
        assert!(counts.advance(id(2, 1), 1, 0));
        assert!(counts.advance(id(3, 2), 1, 0), "evicts the first");
        assert_eq!(counts.highest.len(), 2);
        assert!(
            !counts.advance(id(1, 0), 2, 0),
            "evicted: refused even with a higher nc"
        );
        assert!(
            !counts.advance(id(1, 9), 1, 0),
            "issued before the eviction floor"
        );
        assert!(counts.advance(id(4, 3), 1, 0));
        assert!(!counts.advance(id(5, 4), 0, 0), "nc starts at 1");
        assert!(
            counts.advance(id(9, 5), 1, 8),
            "expired entries are dropped first"
        );
        assert_eq!(counts.highest.len(), 1);
    }

    proptest! {
        #[test]
        fn mutated_requests_never_panic_the_registrar(
            bytes in crate::sip::message::tests::mutated_sample(),
            now in any::<i64>(),
        ) {
            let mut r = registrar();
            if let Ok(SipMessage::Request(req)) = parse(&bytes) {
                let _ = r.handle(now, &req, src());
                let _ = registered_ok(&req, src(), &[("sip:a@b".into(), 1)]);
            }
        }
    }
}
