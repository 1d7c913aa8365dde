//! SIP message syntax (RFC 3261 §7, §20, §25): parse a datagram into a request or a response,
//! read the header values the registrar needs, build and serialize responses.
//!
//! Pure SIP protocol logic: no tokio, no sockets, no clock. Input is untrusted bytes; every
//! defect is a [`ParseError`] value, never a panic.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use sha2::{Digest, Sha256};

/// Largest datagram accepted: the largest UDP payload.
pub const MAX_MESSAGE_BYTES: usize = 65_535;
/// Most header lines (after unfolding) accepted in one message.
pub const MAX_HEADERS: usize = 128;

/// Linear white space inside a header line (folds are already joined).
const LWS: [char; 2] = [' ', '\t'];

/// Why a datagram or a header value is not acceptable SIP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Only CR/LF bytes: a keep-alive (RFC 5626 §4.4.1), not a message.
    #[error("empty datagram (keep-alive)")]
    Empty,
    #[error("message of {0} bytes exceeds the limit of {MAX_MESSAGE_BYTES}")]
    TooLarge(usize),
    #[error("no blank line ends the header section")]
    Unterminated,
    #[error("header section is not UTF-8")]
    NotUtf8,
    #[error("malformed start line")]
    StartLine,
    #[error("unsupported protocol version (only SIP/2.0)")]
    Version,
    #[error("malformed header line")]
    HeaderLine,
    #[error("more than {MAX_HEADERS} headers")]
    TooManyHeaders,
    #[error("request without a {0} header")]
    MissingHeader(&'static str),
    #[error("{0} header appears more than once")]
    DuplicateHeader(&'static str),
    #[error("invalid Content-Length")]
    ContentLength,
    #[error("body of {actual} bytes is shorter than its Content-Length {declared}")]
    BodyTruncated { declared: usize, actual: usize },
    /// A header value (named) does not follow its grammar.
    #[error("malformed {0}")]
    Value(&'static str),
    #[error("URI scheme is not sip or sips")]
    UnsupportedScheme,
}

/// A parsed datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipMessage {
    Request(Request),
    Response(Response),
}

/// A SIP request. Header names are canonical (compact forms expanded, known names in their RFC
/// spelling, unknown names as received); one entry per header line, in arrival order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A SIP response; built with [`Response::new`] / [`response_to`] or parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub code: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// One `;name[=value]` parameter. `value` is kept as written (a quoted-string keeps its quotes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub value: Option<String>,
}

/// A `name-addr` or `addr-spec` with its header parameters (From, To, Contact).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// Display name, unquoted.
    pub display: Option<String>,
    /// The URI, without angle brackets.
    pub uri: String,
    /// Header parameters (`tag`, `expires`, `q`, …), not the URI's own parameters.
    pub params: Vec<Param>,
}

/// One element of a Contact header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactValue {
    /// `Contact: *` (all bindings; only valid alone with `Expires: 0`).
    Star,
    Address(NameAddr),
}

/// The parts of a `sip:`/`sips:` URI the registrar uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    /// `sip` or `sips`, lower case.
    pub scheme: String,
    /// The user part, percent-decoded (the AOR user: an agent id).
    pub user: Option<String>,
    /// Host name or address; an IPv6 reference keeps its brackets.
    pub host: String,
    pub port: Option<u16>,
    pub params: Vec<Param>,
}

/// One `via-parm` (a Via header may hold several, comma-separated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// `SIP/2.0/UDP`, without inner white space.
    pub protocol: String,
    /// sent-by host; an IPv6 reference keeps its brackets.
    pub host: String,
    pub port: Option<u16>,
    pub params: Vec<Param>,
}

// ---------------------------------------------------------------------------------------------
// Parsing a datagram

/// Parses one datagram. Leading CR/LF are skipped (RFC 3261 §7.5); lines may end in CRLF or a
/// bare LF; folded lines are joined with one space. A request must carry Via, From, To, Call-ID
/// and CSeq (From, To, Call-ID, CSeq and Content-Length at most once each): without them it
/// cannot be answered and is dropped. A body longer than Content-Length is cut to it; a shorter
/// one is an error; without Content-Length the body runs to the end of the datagram (§18.3).
pub fn parse(bytes: &[u8]) -> Result<SipMessage, ParseError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(ParseError::TooLarge(bytes.len()));
    }
    let skip = bytes
        .iter()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .count();
    let (_, rest) = bytes.split_at(skip);
    if rest.is_empty() {
        return Err(ParseError::Empty);
    }
    let (head, body) = split_head(rest).ok_or(ParseError::Unterminated)?;
    let head = std::str::from_utf8(head).map_err(|_| ParseError::NotUtf8)?;
    let mut lines = head.lines();
    let start = lines.next().ok_or(ParseError::StartLine)?;
    if has_control_chars(start) {
        return Err(ParseError::StartLine);
    }
    let start = parse_start_line(start)?;

    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        if has_control_chars(line) {
            return Err(ParseError::HeaderLine);
        }
        if line.starts_with(LWS) {
            let (_, value) = headers.last_mut().ok_or(ParseError::HeaderLine)?;
            let more = line.trim_matches(LWS);
            if !more.is_empty() {
                if !value.is_empty() {
                    value.push(' ');
                }
                value.push_str(more);
            }
            continue;
        }
        if headers.len() >= MAX_HEADERS {
            return Err(ParseError::TooManyHeaders);
        }
        let (name, value) = line.split_once(':').ok_or(ParseError::HeaderLine)?;
        let name = name.trim_end_matches(LWS);
        if name.is_empty() || !name.chars().all(is_token_char) {
            return Err(ParseError::HeaderLine);
        }
        headers.push((
            canonical_header_name(name).to_owned(),
            value.trim_matches(LWS).to_owned(),
        ));
    }

    let body = match content_length(&headers)? {
        Some(declared) if declared > body.len() => {
            return Err(ParseError::BodyTruncated {
                declared,
                actual: body.len(),
            });
        }
        Some(declared) => body.get(..declared).unwrap_or(body).to_vec(),
        None => body.to_vec(),
    };

    Ok(match start {
        StartLine::Request { method, uri } => {
            check_request_headers(&headers)?;
            SipMessage::Request(Request {
                method,
                uri,
                headers,
                body,
            })
        }
        StartLine::Response { code, reason } => SipMessage::Response(Response {
            code,
            reason,
            headers,
            body,
        }),
    })
}

/// Splits at the first empty line: (header lines with their line ends, body).
fn split_head(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut line_start = 0;
    for (i, &b) in buf.iter().enumerate() {
        if b != b'\n' {
            continue;
        }
        let line = buf.get(line_start..i)?;
        if line.is_empty() || line == b"\r" {
            return Some((buf.get(..line_start)?, buf.get(i + 1..)?));
        }
        line_start = i + 1;
    }
    None
}

/// Control characters other than HTAB (a lone CR included) have no place in a header section.
fn has_control_chars(line: &str) -> bool {
    line.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
}

enum StartLine {
    Request { method: String, uri: String },
    Response { code: u16, reason: String },
}

fn parse_start_line(line: &str) -> Result<StartLine, ParseError> {
    if line
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
    {
        let mut parts = line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        let code = parts.next().unwrap_or_default();
        let reason = parts.next().unwrap_or_default();
        if !version.eq_ignore_ascii_case("SIP/2.0") {
            return Err(ParseError::Version);
        }
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError::StartLine);
        }
        let code: u16 = code.parse().map_err(|_| ParseError::StartLine)?;
        if !(100..=699).contains(&code) {
            return Err(ParseError::StartLine);
        }
        return Ok(StartLine::Response {
            code,
            reason: reason.to_owned(),
        });
    }
    let mut parts = line.split_ascii_whitespace();
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::StartLine);
    };
    if !method.chars().all(is_token_char) || !uri.contains(':') {
        return Err(ParseError::StartLine);
    }
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        return Err(ParseError::Version);
    }
    Ok(StartLine::Request {
        method: method.to_owned(),
        uri: uri.to_owned(),
    })
}

fn content_length(headers: &[(String, String)]) -> Result<Option<usize>, ParseError> {
    let mut values = headers
        .iter()
        .filter(|(n, _)| n == "Content-Length")
        .map(|(_, v)| v);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ParseError::DuplicateHeader("Content-Length"));
    }
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::ContentLength);
    }
    value
        .parse()
        .map(Some)
        .map_err(|_| ParseError::ContentLength)
}

fn check_request_headers(headers: &[(String, String)]) -> Result<(), ParseError> {
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        let count = headers.iter().filter(|(n, _)| n == name).count();
        if count == 0 {
            return Err(ParseError::MissingHeader(name));
        }
        if count > 1 && name != "Via" {
            return Err(ParseError::DuplicateHeader(name));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Header names

/// RFC 3261 §7.3.3 compact forms and those registered since (RFC 3515, 3841, 3892, 4028, 4474,
/// 6665).
fn expand_compact(name: &str) -> Option<&'static str> {
    let [c] = name.as_bytes() else {
        return None;
    };
    Some(match c.to_ascii_lowercase() {
        b'a' => "Accept-Contact",
        b'b' => "Referred-By",
        b'c' => "Content-Type",
        b'd' => "Request-Disposition",
        b'e' => "Content-Encoding",
        b'f' => "From",
        b'i' => "Call-ID",
        b'j' => "Reject-Contact",
        b'k' => "Supported",
        b'l' => "Content-Length",
        b'm' => "Contact",
        b'n' => "Identity-Info",
        b'o' => "Event",
        b'r' => "Refer-To",
        b's' => "Subject",
        b't' => "To",
        b'u' => "Allow-Events",
        b'v' => "Via",
        b'x' => "Session-Expires",
        b'y' => "Identity",
        _ => return None,
    })
}

/// Header names in their usual spelling; a received name matching one case-insensitively is
/// stored in this spelling.
const KNOWN_HEADERS: &[&str] = &[
    "Via",
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "Contact",
    "Content-Length",
    "Content-Type",
    "Expires",
    "Max-Forwards",
    "User-Agent",
    "Authorization",
    "WWW-Authenticate",
    "Allow",
    "Supported",
    "Require",
    "Accept",
    "Accept-Encoding",
    "Accept-Language",
    "Allow-Events",
    "Authentication-Info",
    "Call-Info",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Date",
    "Error-Info",
    "Event",
    "In-Reply-To",
    "Min-Expires",
    "MIME-Version",
    "Organization",
    "Path",
    "Priority",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "Record-Route",
    "Reply-To",
    "Retry-After",
    "Route",
    "Server",
    "Subject",
    "Timestamp",
    "Unsupported",
    "Warning",
];

/// The canonical name for `name`: compact forms expanded, known names in their usual spelling,
/// anything else unchanged. Lookups compare names case-insensitively after this.
pub fn canonical_header_name(name: &str) -> &str {
    if let Some(full) = expand_compact(name) {
        return full;
    }
    KNOWN_HEADERS
        .iter()
        .copied()
        .find(|k| k.eq_ignore_ascii_case(name))
        .unwrap_or(name)
}

fn header_values<'h>(headers: &'h [(String, String)], name: &str) -> impl Iterator<Item = &'h str> {
    let want = canonical_header_name(name);
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(want))
        .map(|(_, v)| v.as_str())
}

impl Request {
    /// The first header line named `name` (case-insensitive; compact forms accepted).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_values(&self.headers, name).next()
    }

    /// Every header line named `name`, in order. A line may itself hold a comma-separated list:
    /// see [`split_list`].
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        header_values(&self.headers, name)
    }

    /// All Contact values of all Contact lines, in order.
    pub fn contacts(&self) -> Result<Vec<ContactValue>, ParseError> {
        let mut all = Vec::new();
        for line in self.headers_named("Contact") {
            all.extend(parse_contacts(line)?);
        }
        Ok(all)
    }

    /// Serializes the request (Content-Length computed from the body).
    pub fn serialize(&self) -> Vec<u8> {
        let start = format!("{} {} SIP/2.0", self.method, self.uri);
        serialize_message(&start, &self.headers, &self.body)
    }
}

// ---------------------------------------------------------------------------------------------
// Header values

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '-' | '.' | '!' | '%' | '*' | '_' | '+' | '`' | '\'' | '~'
        )
}

/// Splits a header value at the commas that separate list elements: not inside a quoted-string,
/// not inside `<…>`. Elements are trimmed; an empty element or an unbalanced quote or bracket is
/// an error.
pub fn split_list(value: &str) -> Result<Vec<&str>, ParseError> {
    const WHAT: ParseError = ParseError::Value("list");
    let mut items = Vec::new();
    let (mut in_quotes, mut escaped, mut in_angle) = (false, false, false);
    let mut start = 0;
    for (i, c) in value.char_indices() {
        if in_quotes {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_quotes = false;
            }
            continue;
        }
        if in_angle {
            match c {
                '>' => in_angle = false,
                '<' => return Err(WHAT),
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_quotes = true,
            '<' => in_angle = true,
            '>' => return Err(WHAT),
            ',' => {
                let item = value.get(start..i).ok_or(WHAT)?.trim_matches(LWS);
                if item.is_empty() {
                    return Err(WHAT);
                }
                items.push(item);
                start = i + 1;
            }
            _ => {}
        }
    }
    if in_quotes || in_angle {
        return Err(WHAT);
    }
    let last = value.get(start..).ok_or(WHAT)?.trim_matches(LWS);
    if last.is_empty() {
        return Err(WHAT);
    }
    items.push(last);
    Ok(items)
}

/// Reads the quoted-string at the start of `s`: (unescaped content, raw text with its quotes,
/// what follows the closing quote).
fn take_quoted<'a>(
    s: &'a str,
    what: &'static str,
) -> Result<(String, &'a str, &'a str), ParseError> {
    let err = ParseError::Value(what);
    let inner = s.strip_prefix('"').ok_or(err.clone())?;
    let mut content = String::new();
    let mut escaped = false;
    for (i, c) in inner.char_indices() {
        if escaped {
            content.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            let raw = s.get(..i + 2).ok_or(err.clone())?;
            let rest = inner.get(i + 1..).ok_or(err)?;
            return Ok((content, raw, rest));
        } else {
            content.push(c);
        }
    }
    Err(err)
}

/// The content of a value that is exactly one quoted-string (`"a\"b"` → `a"b`).
pub fn unquote(value: &str) -> Result<String, ParseError> {
    let (content, _, rest) = take_quoted(value.trim_matches(LWS), "quoted-string")?;
    if !rest.trim_matches(LWS).is_empty() {
        return Err(ParseError::Value("quoted-string"));
    }
    Ok(content)
}

/// `value` as a quoted-string, escaping `"` and `\`.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Parses `;name[=value]` parameters up to the end of `s`.
fn parse_params(mut s: &str, what: &'static str) -> Result<Vec<Param>, ParseError> {
    let err = || ParseError::Value(what);
    let mut params = Vec::new();
    loop {
        s = s.trim_start_matches(LWS);
        if s.is_empty() {
            return Ok(params);
        }
        s = s.strip_prefix(';').ok_or_else(err)?.trim_start_matches(LWS);
        let end = s.find(|c| !is_token_char(c)).unwrap_or(s.len());
        let (name, rest) = s.split_at(end);
        if name.is_empty() {
            return Err(err());
        }
        s = rest.trim_start_matches(LWS);
        let value = match s.strip_prefix('=') {
            None => None,
            Some(r) => {
                let r = r.trim_start_matches(LWS);
                if r.starts_with('"') {
                    let (_, raw, rest) = take_quoted(r, what)?;
                    s = rest;
                    Some(raw.to_owned())
                } else {
                    let end = r
                        .find(|c| !(is_token_char(c) || matches!(c, ':' | '[' | ']')))
                        .unwrap_or(r.len());
                    let (value, rest) = r.split_at(end);
                    if value.is_empty() {
                        return Err(err());
                    }
                    s = rest;
                    Some(value.to_owned())
                }
            }
        };
        params.push(Param {
            name: name.to_owned(),
            value,
        });
    }
}

fn find_param<'a>(params: &'a [Param], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|p| p.name.eq_ignore_ascii_case(name))
        .map(|p| p.value.as_deref().unwrap_or(""))
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, ";{}={v}", self.name),
            None => write!(f, ";{}", self.name),
        }
    }
}

/// A URI as it may appear in a header: a scheme, a colon, no white space or delimiters.
fn check_uri(uri: &str) -> Result<(), ParseError> {
    let err = ParseError::Value("URI");
    let (scheme, rest) = uri.split_once(':').ok_or(err.clone())?;
    let mut chars = scheme.chars();
    let scheme_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok
        || rest.is_empty()
        || uri.contains(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"'))
    {
        return Err(err);
    }
    Ok(())
}

/// Parses a `name-addr` (`"Alice" <sip:alice@host>;tag=x`) or an `addr-spec`
/// (`sip:alice@host;tag=x`, where the parameters belong to the header, RFC 3261 §20).
pub fn parse_name_addr(value: &str) -> Result<NameAddr, ParseError> {
    const WHAT: &str = "name-addr";
    let err = || ParseError::Value(WHAT);
    let v = value.trim_matches(LWS);
    let (display, rest) = if v.starts_with('"') {
        let (display, _, rest) = take_quoted(v, WHAT)?;
        (Some(display), rest.trim_start_matches(LWS))
    } else if let Some(lt) = v.find('<') {
        let (display, rest) = v.split_at(lt);
        let display = display.trim_matches(LWS);
        if display.contains(['"', '>']) {
            return Err(err());
        }
        ((!display.is_empty()).then(|| display.to_owned()), rest)
    } else {
        let end = v.find(';').unwrap_or(v.len());
        let (uri, params) = v.split_at(end);
        let uri = uri.trim_matches(LWS);
        check_uri(uri)?;
        return Ok(NameAddr {
            display: None,
            uri: uri.to_owned(),
            params: parse_params(params, WHAT)?,
        });
    };
    let inner = rest.strip_prefix('<').ok_or_else(err)?;
    let (uri, params) = inner.split_once('>').ok_or_else(err)?;
    let uri = uri.trim_matches(LWS);
    check_uri(uri)?;
    Ok(NameAddr {
        display,
        uri: uri.to_owned(),
        params: parse_params(params, WHAT)?,
    })
}

impl NameAddr {
    /// The value of header parameter `name` (case-insensitive); `Some("")` for a flag.
    pub fn param(&self, name: &str) -> Option<&str> {
        find_param(&self.params, name)
    }
}

/// Parses one Contact header value: `*` or a comma-separated list of addresses (commas inside a
/// quoted display name or inside `<…>` do not separate).
pub fn parse_contacts(value: &str) -> Result<Vec<ContactValue>, ParseError> {
    split_list(value)?
        .into_iter()
        .map(|item| {
            if item == "*" {
                Ok(ContactValue::Star)
            } else {
                parse_name_addr(item).map(ContactValue::Address)
            }
        })
        .collect()
}

fn percent_decode(s: &str) -> Result<String, ParseError> {
    let err = || ParseError::Value("escaped URI user");
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = bytes.next().and_then(|h| (h as char).to_digit(16));
            let lo = bytes.next().and_then(|l| (l as char).to_digit(16));
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(err());
            };
            out.push(u8::try_from(hi * 16 + lo).map_err(|_| err())?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).map_err(|_| err())
}

/// `host[:port]`, the host a name, an IPv4 address or a bracketed IPv6 reference.
fn split_host_port(s: &str, what: &'static str) -> Result<(String, Option<u16>), ParseError> {
    let err = || ParseError::Value(what);
    let s = s.trim_matches(LWS);
    let (host, port) = if let Some(r) = s.strip_prefix('[') {
        let (addr, after) = r.split_once(']').ok_or_else(err)?;
        if addr.is_empty()
            || !addr
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return Err(err());
        }
        let after = after.trim_start_matches(LWS);
        let port = if after.is_empty() {
            None
        } else {
            Some(after.strip_prefix(':').ok_or_else(err)?)
        };
        (format!("[{addr}]"), port)
    } else {
        let (host, port) = match s.split_once(':') {
            Some((h, p)) => (h.trim_end_matches(LWS), Some(p)),
            None => (s, None),
        };
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(err());
        }
        (host.to_owned(), port)
    };
    let port = match port.map(|p| p.trim_matches(LWS)) {
        None => None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse().map_err(|_| err())?)
        }
        Some(_) => return Err(err()),
    };
    Ok((host, port))
}

/// Parses a `sip:` or `sips:` URI (`sip:user:password@host:port;params?headers`). Another
/// scheme is [`ParseError::UnsupportedScheme`].
pub fn parse_sip_uri(uri: &str) -> Result<SipUri, ParseError> {
    const WHAT: &str = "SIP URI";
    let err = || ParseError::Value(WHAT);
    let (scheme, rest) = uri.trim_matches(LWS).split_once(':').ok_or_else(err)?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "sip" && scheme != "sips" {
        return Err(ParseError::UnsupportedScheme);
    }
    let (user, rest) = match rest.split_once('@') {
        Some((userinfo, rest)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            if user.is_empty() {
                return Err(err());
            }
            (Some(percent_decode(user)?), rest)
        }
        None => (None, rest),
    };
    let rest = rest.split_once('?').map_or(rest, |(r, _)| r);
    let end = rest.find(';').unwrap_or(rest.len());
    let (hostport, params) = rest.split_at(end);
    let (host, port) = split_host_port(hostport, WHAT)?;
    Ok(SipUri {
        scheme,
        user,
        host,
        port,
        params: parse_params(params, WHAT)?,
    })
}

/// Parses one `via-parm`: `SIP/2.0/UDP host:port;branch=…;rport`.
pub fn parse_via(value: &str) -> Result<Via, ParseError> {
    const WHAT: &str = "Via";
    let err = || ParseError::Value(WHAT);
    let mut rest = value.trim_matches(LWS);
    let mut protocol = String::new();
    for i in 0..3 {
        rest = rest.trim_start_matches(LWS);
        let end = rest.find(|c| !is_token_char(c)).unwrap_or(rest.len());
        let (token, r) = rest.split_at(end);
        if token.is_empty() {
            return Err(err());
        }
        protocol.push_str(token);
        rest = r;
        if i < 2 {
            rest = rest
                .trim_start_matches(LWS)
                .strip_prefix('/')
                .ok_or_else(err)?;
            protocol.push('/');
        }
    }
    if !rest.starts_with(LWS) {
        return Err(err());
    }
    let rest = rest.trim_start_matches(LWS);
    let end = rest.find(';').unwrap_or(rest.len());
    let (sent_by, params) = rest.split_at(end);
    let (host, port) = split_host_port(sent_by, WHAT)?;
    Ok(Via {
        protocol,
        host,
        port,
        params: parse_params(params, WHAT)?,
    })
}

impl Via {
    pub fn param(&self, name: &str) -> Option<&str> {
        find_param(&self.params, name)
    }

    /// Records where the request really came from (RFC 3261 §18.2.1, RFC 3581 §4): `received`
    /// when the sent-by host is not the source address (or when `rport` asks), and the source
    /// port in an `rport` the client sent.
    pub fn stamp(&mut self, source: SocketAddr) {
        let ip = source.ip().to_canonical();
        let sent_by_ip = self
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok()
            .map(|a| a.to_canonical());
        let mut has_rport = false;
        for p in &mut self.params {
            if p.name.eq_ignore_ascii_case("rport") {
                p.value = Some(source.port().to_string());
                has_rport = true;
            }
        }
        if has_rport || sent_by_ip != Some(ip) {
            let received = ip.to_string();
            match self
                .params
                .iter_mut()
                .find(|p| p.name.eq_ignore_ascii_case("received"))
            {
                Some(p) => p.value = Some(received),
                None => self.params.push(Param {
                    name: "received".to_owned(),
                    value: Some(received),
                }),
            }
        }
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.protocol, self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        self.params.iter().try_for_each(|p| write!(f, "{p}"))
    }
}

/// Parses a CSeq value: (sequence number, method).
pub fn parse_cseq(value: &str) -> Result<(u32, &str), ParseError> {
    let err = || ParseError::Value("CSeq");
    let mut parts = value.split_ascii_whitespace();
    let (Some(number), Some(method), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(err());
    };
    if !number.bytes().all(|b| b.is_ascii_digit()) || !method.chars().all(is_token_char) {
        return Err(err());
    }
    Ok((number.parse().map_err(|_| err())?, method))
}

/// Parses `delta-seconds` (digits only); a value beyond `u32::MAX` saturates (RFC 3261 §20.19
/// allows clients any size; the registrar lowers it anyway).
pub fn parse_delta_seconds(value: &str) -> Option<u32> {
    let value = value.trim_matches(LWS);
    if value.is_empty() {
        return None;
    }
    value.bytes().try_fold(0u32, |acc, b| {
        b.is_ascii_digit()
            .then(|| acc.saturating_mul(10).saturating_add(u32::from(b - b'0')))
    })
}

// ---------------------------------------------------------------------------------------------
// Responses

impl Response {
    pub fn new(code: u16, reason: &str) -> Self {
        Self {
            code,
            reason: reason.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Appends a header line (the name is canonicalized).
    pub fn push_header(&mut self, name: &str, value: impl Into<String>) {
        self.headers
            .push((canonical_header_name(name).to_owned(), value.into()));
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.push_header(name, value);
        self
    }

    pub fn with_body(mut self, content_type: &str, body: Vec<u8>) -> Self {
        self.push_header("Content-Type", content_type);
        self.body = body;
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        header_values(&self.headers, name).next()
    }

    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        header_values(&self.headers, name)
    }

    /// Stamps the top Via with `received`/`rport` for a request that came from `source`
    /// (see [`Via::stamp`]). A top Via that does not parse is left as it is.
    pub fn stamp_via(&mut self, source: SocketAddr) {
        let Some((_, value)) = self
            .headers
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case("Via"))
        else {
            return;
        };
        let Ok(items) = split_list(value) else {
            return;
        };
        let Some((first, others)) = items.split_first() else {
            return;
        };
        let Ok(mut via) = parse_via(first) else {
            return;
        };
        via.stamp(source);
        let mut stamped = via.to_string();
        for other in others {
            stamped.push_str(", ");
            stamped.push_str(other);
        }
        *value = stamped;
    }

    /// Serializes the response; `Content-Length` is always written, from the body.
    pub fn serialize(&self) -> Vec<u8> {
        let start = format!("SIP/2.0 {} {}", self.code, self.reason);
        serialize_message(&start, &self.headers, &self.body)
    }
}

/// Writes a message; CR and LF inside names and values become spaces, so a value can never
/// inject a header line.
fn serialize_message(start: &str, headers: &[(String, String)], body: &[u8]) -> Vec<u8> {
    fn push_clean(out: &mut Vec<u8>, s: &str) {
        out.extend(
            s.bytes()
                .map(|b| if matches!(b, b'\r' | b'\n') { b' ' } else { b }),
        );
    }
    let size = start.len()
        + headers
            .iter()
            .map(|(n, v)| n.len() + v.len() + 4)
            .sum::<usize>()
        + 32
        + body.len();
    let mut out = Vec::with_capacity(size);
    push_clean(&mut out, start);
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if canonical_header_name(name).eq_ignore_ascii_case("Content-Length") {
            continue;
        }
        push_clean(&mut out, name);
        out.extend_from_slice(b": ");
        push_clean(&mut out, value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out
}

/// A response to `req` per RFC 3261 §8.2.6: every Via (in order), From, To, Call-ID and CSeq
/// copied; a To without a tag gets one (except on 100), derived from Call-ID and the From tag so
/// that every response to one request carries the same tag.
pub fn response_to(req: &Request, code: u16, reason: &str) -> Response {
    let mut resp = Response::new(code, reason);
    for (name, value) in &req.headers {
        if ["Via", "From", "Call-ID", "CSeq"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
        {
            resp.headers.push((name.clone(), value.clone()));
        } else if name.eq_ignore_ascii_case("To") {
            let needs_tag =
                code > 100 && parse_name_addr(value).is_ok_and(|to| to.param("tag").is_none());
            let to = if needs_tag {
                format!("{value};tag={}", local_tag(req))
            } else {
                value.clone()
            };
            resp.headers.push((name.clone(), to));
        }
    }
    resp
}

fn local_tag(req: &Request) -> String {
    let from_tag = req
        .header("From")
        .and_then(|f| parse_name_addr(f).ok())
        .and_then(|f| f.param("tag").map(str::to_owned))
        .unwrap_or_default();
    let mut h = Sha256::new();
    h.update(req.header("Call-ID").unwrap_or_default().as_bytes());
    h.update(b"\0");
    h.update(from_tag.as_bytes());
    let digest = h.finalize();
    hex::encode(digest.get(..8).unwrap_or_default())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn crlf(text: &str) -> Vec<u8> {
        text.replace('\n', "\r\n").into_bytes()
    }

    fn request(bytes: &[u8]) -> Request {
        match parse(bytes) {
            Ok(SipMessage::Request(r)) => r,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    const LINPHONE_REGISTER: &str = "REGISTER sip:sip.example.com SIP/2.0
Via: SIP/2.0/UDP 192.168.1.23:5060;branch=z9hG4bK.fBn3LpOb9;rport
From: <sip:alice@sip.example.com>;tag=~yk0GZc9X
To: sip:alice@sip.example.com
CSeq: 20 REGISTER
Call-ID: h6SAVoYQp5
Max-Forwards: 70
Supported: replaces, outbound, gruu, path
Accept: application/sdp
Accept: text/plain
Contact: <sip:alice@192.168.1.23:5060;transport=udp>;expires=3600;+sip.instance=\"<urn:uuid:1e5f2a3c-1a2b-4c5d-8e9f-0a1b2c3d4e5f>\";+org.linphone.specs=\"lime,ephemeral\"
Expires: 3600
User-Agent: Linphone Desktop/5.2.0 (Ubuntu 22.04.3 LTS) Linphone/5.3.0 (belle-sip/5.3.0)
Content-Length: 0

";

    const ZOIPER_COMPACT_REGISTER: &str = "REGISTER sip:10.0.0.1;transport=UDP SIP/2.0
v: SIP/2.0/UDP 10.0.0.55:49152;branch=z9hG4bK-524287-1---6b8e5ec9e13b04e4;rport
Max-Forwards: 70
m: <sip:bob@10.0.0.55:49152;rinstance=3a7f5d2e9c1b0a44;transport=UDP>
t: <sip:bob@10.0.0.1;transport=UDP>
f: <sip:bob@10.0.0.1;transport=UDP>;tag=8f1c2a9e
i: ZDg2NjE0ZWJjYzQ0ZWJhNmUxMzMzNzc4NjI1ZTA4NTM
CSeq: 1 REGISTER
Expires: 60
Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE
k: replaces, norefersub, extended-refer, timer, outbound, path, X-cisco-serviceuri
User-Agent: Z 5.6.1 v2.10.19.9
u: presence, kpml, talk
l: 0

";

    /// Bare LF line ends, a folded Contact list, a comma inside a quoted display name.
    const YEALINK_MULTI_CONTACT: &str = "REGISTER sip:pbx.example.org SIP/2.0
Via: SIP/2.0/UDP 172.16.0.40:5060;branch=z9hG4bK9a3c1f7e;rport
From: \"Alice Agent\" <sip:alice@pbx.example.org>;tag=1c7a2b3d4e
To: \"Alice Agent\" <sip:alice@pbx.example.org>
Call-ID: 5f2c8a1b-0d3e-4f6a-9b7c@172.16.0.40
CSeq: 42 REGISTER
Contact: \"Desk, Phone\" <sip:alice@172.16.0.40:5060>;q=0.8;expires=600,
 <sip:alice@172.16.0.41:5062>;q=0.5
Contact: sip:alice@10.1.1.7;expires=0
User-Agent: Yealink SIP-T46U 108.86.0.45
Expires: 3600
Allow: INVITE, INFO, PRACK, ACK, BYE, CANCEL, OPTIONS, NOTIFY, REGISTER, SUBSCRIBE, REFER
Max-Forwards: 70
Supported:
\t100rel, replaces
Content-Length: 0

";

    const SIPP_REGISTER: &str = "REGISTER sip:127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-4242-1-0
From: <sip:alice@127.0.0.1:5060>;tag=4242SIPpTag001
To: <sip:alice@127.0.0.1:5060>
Call-ID: 1-4242@127.0.0.1
CSeq: 1 REGISTER
Contact: sip:alice@127.0.0.1:5061
Max-Forwards: 70
Subject: Performance Test
Expires: 30
Content-Length: 0

";

    const OPTIONS_WITH_BODY: &str = "OPTIONS sip:127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP 10.0.0.9:5070;branch=z9hG4bKopt1
From: sip:probe@10.0.0.9;tag=p1
To: sip:127.0.0.1:5060
Call-ID: opt-1@10.0.0.9
CSeq: 7 OPTIONS
Accept: application/sdp
Content-Type: text/plain
Content-Length: 5

hello";

    #[test]
    fn linphone_register_keeps_quoted_instance_in_one_contact() {
        let req = request(&crlf(LINPHONE_REGISTER));
        assert_eq!(req.method, "REGISTER");
        assert_eq!(req.uri, "sip:sip.example.com");
        assert_eq!(req.headers_named("Accept").count(), 2);
        let contacts = req.contacts().unwrap();
        assert_eq!(contacts.len(), 1);
        let ContactValue::Address(c) = &contacts[0] else {
            panic!("star")
        };
        assert_eq!(c.uri, "sip:alice@192.168.1.23:5060;transport=udp");
        assert_eq!(c.param("expires"), Some("3600"));
        assert_eq!(
            c.param("+sip.instance"),
            Some("\"<urn:uuid:1e5f2a3c-1a2b-4c5d-8e9f-0a1b2c3d4e5f>\"")
        );
        let to = parse_name_addr(req.header("To").unwrap()).unwrap();
        let uri = parse_sip_uri(&to.uri).unwrap();
        assert_eq!(uri.user.as_deref(), Some("alice"));
        assert_eq!(uri.host, "sip.example.com");
        assert!(req.body.is_empty());
    }

    #[test]
    fn compact_header_names_are_expanded() {
        let req = request(&crlf(ZOIPER_COMPACT_REGISTER));
        let names: Vec<&str> = req.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "Via",
                "Max-Forwards",
                "Contact",
                "To",
                "From",
                "Call-ID",
                "CSeq",
                "Expires",
                "Allow",
                "Supported",
                "User-Agent",
                "Allow-Events",
                "Content-Length"
            ]
        );
        assert_eq!(
            req.header("call-id"),
            Some("ZDg2NjE0ZWJjYzQ0ZWJhNmUxMzMzNzc4NjI1ZTA4NTM")
        );
        assert_eq!(req.header("i"), req.header("Call-ID"));
        let from = parse_name_addr(req.header("f").unwrap()).unwrap();
        assert_eq!(from.param("tag"), Some("8f1c2a9e"));
        let via = parse_via(req.header("Via").unwrap()).unwrap();
        assert_eq!(via.protocol, "SIP/2.0/UDP");
        assert_eq!(via.host, "10.0.0.55");
        assert_eq!(via.port, Some(49152));
        assert_eq!(via.param("rport"), Some(""));
    }

    #[test]
    fn folded_multi_contact_register_with_bare_lf() {
        let req = request(YEALINK_MULTI_CONTACT.as_bytes());
        assert_eq!(req.header("Supported"), Some("100rel, replaces"));
        let contacts = req.contacts().unwrap();
        let addrs: Vec<&NameAddr> = contacts
            .iter()
            .map(|c| match c {
                ContactValue::Address(a) => a,
                ContactValue::Star => panic!("star"),
            })
            .collect();
        assert_eq!(addrs.len(), 3);
        assert_eq!(addrs[0].display.as_deref(), Some("Desk, Phone"));
        assert_eq!(addrs[0].uri, "sip:alice@172.16.0.40:5060");
        assert_eq!(addrs[0].param("q"), Some("0.8"));
        assert_eq!(addrs[0].param("expires"), Some("600"));
        assert_eq!(addrs[1].uri, "sip:alice@172.16.0.41:5062");
        assert_eq!(addrs[1].param("expires"), None);
        assert_eq!(addrs[2].uri, "sip:alice@10.1.1.7");
        assert_eq!(addrs[2].param("expires"), Some("0"));
        let to = parse_name_addr(req.header("To").unwrap()).unwrap();
        assert_eq!(to.display.as_deref(), Some("Alice Agent"));
    }

    #[test]
    fn sipp_register_with_addr_spec_contact() {
        let req = request(&crlf(SIPP_REGISTER));
        let contacts = req.contacts().unwrap();
        assert_eq!(
            contacts,
            [ContactValue::Address(NameAddr {
                display: None,
                uri: "sip:alice@127.0.0.1:5061".into(),
                params: vec![]
            })]
        );
        assert_eq!(parse_cseq(req.header("CSeq").unwrap()), Ok((1, "REGISTER")));
        assert_eq!(
            req.header("Expires").and_then(parse_delta_seconds),
            Some(30)
        );
    }

    #[test]
    fn options_body_is_cut_to_content_length() {
        let mut bytes = crlf(OPTIONS_WITH_BODY);
        bytes.extend_from_slice(b" trailing garbage");
        let req = request(&bytes);
        assert_eq!(req.method, "OPTIONS");
        assert_eq!(req.body, b"hello");
    }

    #[test]
    fn leading_crlf_is_skipped_and_missing_content_length_takes_rest() {
        let mut text = SIPP_REGISTER.replace("Content-Length: 0\n", "");
        text.insert_str(0, "\n\n");
        text.push_str("xyz");
        let req = request(&crlf(&text));
        assert_eq!(req.body, b"xyz");
    }

    #[test]
    fn star_contact_is_recognized() {
        assert_eq!(parse_contacts(" * "), Ok(vec![ContactValue::Star]));
        assert_eq!(
            parse_contacts("*, <sip:a@b>").map(|c| c.len()),
            Ok(2),
            "a star in a list is reported, the registrar rejects it"
        );
    }

    #[test]
    fn name_addr_forms() {
        let a = parse_name_addr("Bob Smith <sip:bob@h>;tag=1").unwrap();
        assert_eq!(a.display.as_deref(), Some("Bob Smith"));
        assert_eq!(a.uri, "sip:bob@h");
        let a = parse_name_addr("\"q\\\"uote\" <sips:bob@h:5061>").unwrap();
        assert_eq!(a.display.as_deref(), Some("q\"uote"));
        let a = parse_name_addr("sip:bob@h;tag=9 ; lr").unwrap();
        assert_eq!(a.uri, "sip:bob@h");
        assert_eq!(a.param("TAG"), Some("9"));
        assert_eq!(a.param("lr"), Some(""));
        for bad in [
            "",
            "<sip:a@b",
            "\"x <sip:a@b>",
            "<nocolon>",
            "<sip:a b>",
            "sip:a;=1",
        ] {
            assert!(parse_name_addr(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sip_uri_user_is_percent_decoded_and_other_schemes_refused() {
        let u = parse_sip_uri("sip:ag%65nt.1:secret@[2001:db8::1]:5070;transport=udp?x=y").unwrap();
        assert_eq!(u.user.as_deref(), Some("agent.1"));
        assert_eq!(u.host, "[2001:db8::1]");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.params[0].name, "transport");
        assert_eq!(
            parse_sip_uri("tel:+15551234"),
            Err(ParseError::UnsupportedScheme)
        );
        assert!(parse_sip_uri("sip:@host").is_err());
        assert!(parse_sip_uri("sip:a%zz@host").is_err());
        assert!(parse_sip_uri("sip:a@host:99999").is_err());
        assert_eq!(parse_sip_uri("SIP:host").unwrap().user, None);
    }

    #[test]
    fn via_stamp_adds_received_and_fills_rport() {
        let src: SocketAddr = "203.0.113.7:40000".parse().unwrap();
        let mut via = parse_via("SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKx;rport").unwrap();
        via.stamp(src);
        assert_eq!(
            via.to_string(),
            "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKx;rport=40000;received=203.0.113.7"
        );
        let mut same = parse_via("SIP / 2.0 / UDP 203.0.113.7;branch=z9hG4bKy").unwrap();
        same.stamp(src);
        assert_eq!(same.to_string(), "SIP/2.0/UDP 203.0.113.7;branch=z9hG4bKy");
        let mut v6 = parse_via("SIP/2.0/UDP [2001:db8::9]:5060;branch=z9hG4bKz").unwrap();
        v6.stamp("[2001:db8::1]:5060".parse().unwrap());
        assert_eq!(v6.param("received"), Some("2001:db8::1"));
        assert!(parse_via("SIP/2.0/UDP").is_err());
        assert!(parse_via("SIP/2.0/UDPhost").is_err());
    }

    #[test]
    fn response_to_copies_dialog_headers_and_tags_to() {
        let mut text = SIPP_REGISTER.replace(
            "Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-4242-1-0\n",
            "Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-4242-1-0;rport\nVia: SIP/2.0/UDP 10.9.9.9;branch=z9hG4bKup1, SIP/2.0/TCP 10.9.9.8;branch=z9hG4bKup2\n",
        );
        text = text.replace("Subject: Performance Test\n", "");
        let req = request(&crlf(&text));
        let mut resp = response_to(&req, 200, "OK");
        resp.stamp_via("127.0.0.1:5061".parse().unwrap());
        let names: Vec<&str> = resp.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["Via", "Via", "From", "To", "Call-ID", "CSeq"]);
        assert_eq!(
            resp.headers[0].1,
            "SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-4242-1-0;rport=5061;received=127.0.0.1"
        );
        assert_eq!(
            resp.headers[1].1,
            "SIP/2.0/UDP 10.9.9.9;branch=z9hG4bKup1, SIP/2.0/TCP 10.9.9.8;branch=z9hG4bKup2"
        );
        let to = parse_name_addr(resp.header("To").unwrap()).unwrap();
        let tag = to.param("tag").unwrap().to_owned();
        assert_eq!(tag.len(), 16);
        let again = response_to(&req, 401, "Unauthorized");
        assert_eq!(again.header("To"), resp.header("To"), "same tag every time");
        let trying = response_to(&req, 100, "Trying");
        assert_eq!(trying.header("To"), req.header("To"));
    }

    #[test]
    fn response_to_keeps_an_existing_to_tag() {
        let text = SIPP_REGISTER.replace(
            "To: <sip:alice@127.0.0.1:5060>",
            "To: <sip:alice@127.0.0.1:5060>;tag=abc",
        );
        let req = request(&crlf(&text));
        let resp = response_to(&req, 200, "OK");
        assert_eq!(
            resp.header("To"),
            Some("<sip:alice@127.0.0.1:5060>;tag=abc")
        );
    }

    #[test]
    fn serialize_always_writes_content_length_and_round_trips() {
        let req = request(&crlf(OPTIONS_WITH_BODY));
        let resp = response_to(&req, 200, "OK")
            .with_header("Allow", "REGISTER, OPTIONS")
            .with_header("Content-Length", "999")
            .with_body("text/plain", b"pong".to_vec());
        let bytes = resp.serialize();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with("SIP/2.0 200 OK\r\n"));
        assert!(text.ends_with("Content-Length: 4\r\n\r\npong"));
        assert_eq!(text.matches("Content-Length").count(), 1);
        let Ok(SipMessage::Response(back)) = parse(&bytes) else {
            panic!("did not parse back")
        };
        assert_eq!(back.serialize(), bytes);
        assert_eq!(back.body, b"pong");
        assert_eq!(back.header("Allow"), Some("REGISTER, OPTIONS"));
        // and a request
        assert_eq!(request(&req.serialize()), req);
    }

    #[test]
    fn serialize_neutralizes_line_breaks_in_values() {
        let resp = Response::new(400, "Bad\r\nX-Evil: 1").with_header("Warning", "a\r\nX-Evil: 2");
        let text = String::from_utf8(resp.serialize()).unwrap();
        assert_eq!(text.matches("\r\n").count(), 4);
        assert!(!text.contains("\nX-Evil"));
    }

    #[test]
    fn malformed_datagrams_are_errors() {
        let valid = crlf(SIPP_REGISTER);
        let cases: Vec<(&str, Vec<u8>, ParseError)> = vec![
            ("empty", vec![], ParseError::Empty),
            ("keep-alive", b"\r\n\r\n".to_vec(), ParseError::Empty),
            (
                "truncated",
                valid[..valid.len() - 30].to_vec(),
                ParseError::Unterminated,
            ),
            (
                "huge",
                vec![b'a'; MAX_MESSAGE_BYTES + 1],
                ParseError::TooLarge(MAX_MESSAGE_BYTES + 1),
            ),
            (
                "bad start line",
                crlf("REGISTER sip:x\nVia: x\n\n"),
                ParseError::StartLine,
            ),
            (
                "wrong version",
                crlf(&SIPP_REGISTER.replace("SIP/2.0\n", "SIP/3.0\n")),
                ParseError::Version,
            ),
            (
                "http",
                crlf("GET / HTTP/1.1\nHost: x\n\n"),
                ParseError::StartLine,
            ),
            (
                "bad status code",
                crlf("SIP/2.0 20 OK\n\n"),
                ParseError::StartLine,
            ),
            (
                "header without colon",
                crlf(&SIPP_REGISTER.replace("Max-Forwards: 70", "Max-Forwards 70")),
                ParseError::HeaderLine,
            ),
            (
                "continuation first",
                crlf("OPTIONS sip:a SIP/2.0\n folded\n\n"),
                ParseError::HeaderLine,
            ),
            (
                "bare CR in a value",
                crlf(&SIPP_REGISTER.replace("Performance Test", "Perf\rTest")),
                ParseError::HeaderLine,
            ),
            (
                "content-length not a number",
                crlf(&SIPP_REGISTER.replace("Content-Length: 0", "Content-Length: abc")),
                ParseError::ContentLength,
            ),
            (
                "negative content-length",
                crlf(&SIPP_REGISTER.replace("Content-Length: 0", "Content-Length: -1")),
                ParseError::ContentLength,
            ),
            (
                "content-length overflow",
                crlf(&SIPP_REGISTER.replace(
                    "Content-Length: 0",
                    "Content-Length: 99999999999999999999999",
                )),
                ParseError::ContentLength,
            ),
            (
                "body shorter than content-length",
                crlf(&SIPP_REGISTER.replace("Content-Length: 0", "Content-Length: 10")),
                ParseError::BodyTruncated {
                    declared: 10,
                    actual: 0,
                },
            ),
            (
                "two content-lengths",
                crlf(&SIPP_REGISTER.replace("Content-Length: 0", "Content-Length: 0\nl: 5")),
                ParseError::DuplicateHeader("Content-Length"),
            ),
            (
                "no via",
                crlf(&SIPP_REGISTER.replace(
                    "Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-4242-1-0\n",
                    "",
                )),
                ParseError::MissingHeader("Via"),
            ),
            (
                "two call-ids",
                crlf(&SIPP_REGISTER.replace("CSeq: 1", "i: other\nCSeq: 1")),
                ParseError::DuplicateHeader("Call-ID"),
            ),
        ];
        for (what, bytes, want) in cases {
            assert_eq!(parse(&bytes), Err(want), "{what}");
        }
        let mut non_utf8 = valid.clone();
        non_utf8[40] = 0xff;
        assert_eq!(parse(&non_utf8), Err(ParseError::NotUtf8));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-H{i}: v\n")).collect();
        let too_many = crlf(&format!("OPTIONS sip:a SIP/2.0\n{many}\n"));
        assert_eq!(parse(&too_many), Err(ParseError::TooManyHeaders));
    }

    #[test]
    fn non_utf8_body_is_fine() {
        let mut bytes = crlf(&SIPP_REGISTER.replace("Content-Length: 0", "Content-Length: 2"));
        bytes.extend_from_slice(&[0xff, 0xfe]);
        assert_eq!(request(&bytes).body, [0xff, 0xfe]);
    }

    #[test]
    fn list_split_respects_quotes_and_brackets() {
        assert_eq!(
            split_list(r#""a,\"b" <sip:x@y;p=1,2>;q=1 , <sip:z@w>"#).unwrap(),
            [r#""a,\"b" <sip:x@y;p=1,2>;q=1"#, "<sip:z@w>"]
        );
        for bad in ["a,,b", "\"open", "<sip:a", "a>", ","] {
            assert!(split_list(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn delta_seconds_saturate_and_reject_junk() {
        assert_eq!(parse_delta_seconds("3600"), Some(3600));
        assert_eq!(parse_delta_seconds("99999999999999"), Some(u32::MAX));
        assert_eq!(parse_delta_seconds(""), None);
        assert_eq!(parse_delta_seconds("-1"), None);
        assert_eq!(parse_delta_seconds("1h"), None);
    }

    pub(crate) fn samples() -> Vec<Vec<u8>> {
        vec![
            crlf(LINPHONE_REGISTER),
            crlf(ZOIPER_COMPACT_REGISTER),
            YEALINK_MULTI_CONTACT.as_bytes().to_vec(),
            crlf(SIPP_REGISTER),
            crlf(OPTIONS_WITH_BODY),
        ]
    }

    #[derive(Debug, Clone)]
    enum Mutation {
        Flip(usize, u8),
        Insert(usize, u8),
        Remove(usize),
        Truncate(usize),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
            (
                any::<usize>(),
                prop::sample::select(b"\r\n \t:;,<>\"\\@=*%\xff\x00".to_vec())
            )
                .prop_map(|(i, b)| Mutation::Insert(i, b)),
            any::<usize>().prop_map(Mutation::Remove),
            any::<usize>().prop_map(Mutation::Truncate),
        ]
    }

    pub(crate) fn mutated_sample() -> impl Strategy<Value = Vec<u8>> {
        (
            prop::sample::select(samples()),
            prop::collection::vec(mutation(), 1..4),
        )
            .prop_map(|(mut bytes, mutations)| {
                for m in mutations {
                    let len = bytes.len().max(1);
                    match m {
                        Mutation::Flip(i, b) => {
                            if let Some(x) = bytes.get_mut(i % len) {
                                *x = b;
                            }
                        }
                        Mutation::Insert(i, b) => bytes.insert(i % (bytes.len() + 1), b),
                        Mutation::Remove(i) => {
                            if !bytes.is_empty() {
                                bytes.remove(i % len);
                            }
                        }
                        Mutation::Truncate(i) => bytes.truncate(i % len),
                    }
                }
                bytes
            })
    }

    fn exercise_helpers(msg: &SipMessage) {
        if let SipMessage::Request(req) = msg {
            let _ = req.contacts();
            for (_, value) in &req.headers {
                let _ = parse_name_addr(value);
                let _ = parse_via(value);
                let _ = parse_cseq(value);
                let _ = split_list(value);
                let _ = unquote(value);
                let _ = parse_sip_uri(value);
            }
            let mut resp = response_to(req, 200, "OK");
            resp.stamp_via("192.0.2.1:5060".parse().unwrap());
            let _ = parse(&resp.serialize());
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            if let Ok(msg) = parse(&bytes) {
                exercise_helpers(&msg);
            }
        }

        #[test]
        fn mutated_messages_never_panic(bytes in mutated_sample()) {
            if let Ok(msg) = parse(&bytes) {
                exercise_helpers(&msg);
            }
        }

        #[test]
        fn header_value_parsers_never_panic(s in "\\PC{0,80}") {
            let _ = parse_contacts(&s);
            let _ = parse_via(&s);
            let _ = parse_sip_uri(&s);
            let _ = unquote(&s);
            let _ = parse_cseq(&s);
        }

        #[test]
        fn response_round_trips(
            code in 100u16..700,
            reason in "[A-Za-z][A-Za-z ]{0,20}",
            headers in prop::collection::vec(
                (
                    prop_oneof![
                        prop::sample::select(vec!["Via", "To", "From", "Contact", "Warning", "Allow"])
                            .prop_map(str::to_owned),
                        "X-[A-Za-z0-9]{1,10}",
                    ],
                    "[!-~]{1,20}( [!-~]{1,20}){0,3}",
                ),
                0..12,
            ),
            body in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut resp = Response::new(code, &reason);
            for (n, v) in &headers {
                resp.push_header(n, v.clone());
            }
            resp.body = body;
            let bytes = resp.serialize();
            let parsed = parse(&bytes);
            let Ok(SipMessage::Response(back)) = parsed else {
                panic!("{parsed:?}");
            };
            prop_assert_eq!(back.code, resp.code);
            prop_assert_eq!(&back.reason, &resp.reason);
            prop_assert_eq!(&back.body, &resp.body);
            let mut expected = resp.headers.clone();
            expected.push(("Content-Length".to_owned(), resp.body.len().to_string()));
            prop_assert_eq!(back.headers, expected);
        }
    }
}
