//! Adapter layer: the SIP registrar's UDP listener. Receive → parse → registrar (pure) →
//! core (bindings, via the driver) → send. Garbage is dropped and counted; a user that keeps
//! failing authentication from one address (answering nonces sent to that address) is
//! throttled there. REGISTERs are committed concurrently so many
//! phones share one store transaction. A retransmitted request is absorbed by its server
//! transaction (RFC 3261 §17.2.2): it gets the response already sent, or nothing while the
//! first copy is still being committed, and never a second pass through the registrar.

use crate::config::{Config, SharedConfig};
use crate::core::{BindingUpdate, Command, Rejection, Reply};
use crate::driver::{CallError, Handle};
use crate::metrics::SipMetrics;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use switchboard_core::sip::message::{ParseError, Request, SipMessage, parse, response_to};
use switchboard_core::sip::registrar::{
    BindingChange, Outcome, Registrar, RegistrarConfig, registered_ok,
};
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;

/// How long a server transaction absorbs retransmissions: Timer J, 64 × T1 for UDP.
const TRANSACTION_LIFETIME_MS: u64 = 32_000;
/// Most server transactions remembered at once; beyond it the oldest is forgotten first.
const TRANSACTION_CAPACITY: usize = 32_768;
/// Most authenticated REGISTERs waiting for the core at once. Beyond it a REGISTER is dropped
/// unanswered (and counted): the phone retransmits it.
const MAX_IN_FLIGHT: usize = 4_096;
/// Datagrams read per wake-up before the listener checks for shutdown again.
const RECV_BATCH: usize = 64;
/// Receive buffer asked of the kernel (it grants at most `net.core.rmem_max`): at 20k
/// datagrams/s the default ~208 KiB overflows after a 20 ms pause of the listener thread, and
/// every datagram lost there costs the phone a retransmission timeout.
const RECV_BUFFER_BYTES: usize = 4 << 20;

/// The registrar settings from the configuration.
pub fn registrar_config(cfg: &Config) -> RegistrarConfig {
    RegistrarConfig {
        realm: cfg.sip.realm.clone(),
        min_expires: cfg.sip.min_expires.as_secs() as u32,
        max_expires: cfg.sip.max_expires.as_secs() as u32,
        default_expires: cfg.sip.default_expires.as_secs() as u32,
        nonce_ttl_secs: cfg.sip.nonce_ttl.as_secs().max(1) as u32,
    }
}

/// agent id → SIP password.
pub fn credentials(cfg: &Config) -> HashMap<String, String> {
    cfg.agents
        .iter()
        .map(|a| (a.id.clone(), a.sip_password.clone()))
        .collect()
}

/// Most (address, user) pairs whose failures are counted at once within one minute.
const THROTTLE_CAPACITY: usize = 65_536;
/// Failures allowed per address (all users together) per minute, as a multiple of the
/// per-user limit.
const ADDRESS_FACTOR: u32 = 10;

/// Failed authentications in the current minute, per (source address, user) and per address.
/// Only failures over a nonce issued to that address count (see
/// [`Registrar::take_wrong_digest`]), so packets with a forged source cannot block anyone,
/// and one user's failures do not block the other agents behind the same address.
#[derive(Debug, Default)]
struct Throttle {
    window_start: i64,
    failures: HashMap<(IpAddr, String), u32>,
    per_address: HashMap<IpAddr, u32>,
}

impl Throttle {
    fn roll(&mut self, now_ms: i64) {
        if now_ms - self.window_start >= 60_000 {
            self.window_start = now_ms;
            self.failures.clear();
            self.per_address.clear();
        }
    }

    /// Whether credentials for `user` from `ip` are refused unchecked this minute.
    fn blocked(&mut self, now_ms: i64, ip: IpAddr, user: &str, limit: u32) -> bool {
        self.roll(now_ms);
        let address = self.per_address.get(&ip).copied().unwrap_or(0);
        address >= limit.saturating_mul(ADDRESS_FACTOR)
            || self
                .failures
                .get(&(ip, user.to_owned()))
                .is_some_and(|n| *n >= limit)
    }

    fn failed(&mut self, now_ms: i64, ip: IpAddr, user: String) {
        self.roll(now_ms);
        *self.per_address.entry(ip).or_default() += 1;
        let key = (ip, user);
        if self.failures.len() < THROTTLE_CAPACITY || self.failures.contains_key(&key) {
            *self.failures.entry(key).or_default() += 1;
        }
    }
}

/// Identifies a server transaction (RFC 3261 §17.2.3: the top Via's branch with the magic
/// cookie, the source it came from and the method) as a 128-bit keyed hash: fixed size, no
/// allocation per request. The keys are random per process, so a collision cannot be aimed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct TxKey(u128);

/// Makes [`TxKey`]s.
#[derive(Debug, Default)]
struct TxKeys {
    high: RandomState,
    low: RandomState,
}

impl TxKeys {
    /// `None` for a request that cannot be matched (no RFC 3261 branch) or is an ACK.
    fn of(&self, req: &Request, source: SocketAddr) -> Option<TxKey> {
        if req.method == "ACK" {
            return None;
        }
        let branch = top_branch(req.header("Via")?)?;
        if !branch.starts_with("z9hG4bK") {
            return None;
        }
        let hash = |state: &RandomState| {
            let mut h = state.build_hasher();
            source.hash(&mut h);
            branch.hash(&mut h);
            req.method.hash(&mut h);
            h.finish()
        };
        Some(TxKey(
            (u128::from(hash(&self.high)) << 64) | u128::from(hash(&self.low)),
        ))
    }
}

/// The `branch` parameter of the first via-parm of a Via header value. A quoted comma before
/// it hides it: the request is then simply not matched to a transaction.
fn top_branch(via: &str) -> Option<&str> {
    let first = via.split(',').next()?;
    first.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("branch")
            .then(|| value.trim())
    })
}

#[derive(Debug)]
enum TxState {
    /// The request is being processed (an authenticated REGISTER waiting for its commit).
    Proceeding,
    /// The final response, as sent.
    Completed(Vec<u8>),
}

/// What a request is, with respect to the transactions already seen.
#[derive(Debug)]
enum Seen {
    New,
    InProgress,
    Answered(Vec<u8>),
}

/// Non-INVITE server transactions, oldest first, bounded in time and number.
#[derive(Debug, Default)]
struct Transactions {
    /// key → (sequence number, state).
    states: HashMap<TxKey, (u64, TxState)>,
    /// (created at in monotonic ms, sequence number, key), in creation order.
    order: VecDeque<(u64, u64, TxKey)>,
    next_seq: u64,
}

impl Transactions {
    /// Looks `key` up; a new one is recorded as proceeding.
    fn begin(&mut self, now_mono: u64, key: &TxKey) -> Seen {
        self.expire(now_mono);
        match self.states.get(key) {
            Some((_, TxState::Proceeding)) => Seen::InProgress,
            Some((_, TxState::Completed(bytes))) => Seen::Answered(bytes.clone()),
            None => {
                while self.order.len() >= TRANSACTION_CAPACITY {
                    self.forget_oldest();
                }
                let seq = self.next_seq;
                self.next_seq += 1;
                self.states.insert(*key, (seq, TxState::Proceeding));
                self.order.push_back((now_mono, seq, *key));
                Seen::New
            }
        }
    }

    /// Records the final response of a transaction still remembered.
    fn complete(&mut self, key: &TxKey, response: Vec<u8>) {
        if let Some((_, state)) = self.states.get_mut(key) {
            *state = TxState::Completed(response);
        }
    }

    /// Forgets a transaction whose request was dropped unprocessed, so that its retransmission
    /// is processed.
    fn abandon(&mut self, key: &TxKey) {
        if let Some((_, TxState::Proceeding)) = self.states.get(key) {
            self.states.remove(key);
        }
    }

    fn expire(&mut self, now_mono: u64) {
        while let Some((at, _, _)) = self.order.front() {
            if now_mono.saturating_sub(*at) < TRANSACTION_LIFETIME_MS {
                break;
            }
            self.forget_oldest();
        }
    }

    /// Drops the oldest entry; its state goes with it unless the key was abandoned and begun
    /// again since (then the state belongs to the newer entry).
    fn forget_oldest(&mut self) {
        if let Some((_, seq, key)) = self.order.pop_front() {
            if self.states.get(&key).is_some_and(|(s, _)| *s == seq) {
                self.states.remove(&key);
            }
        }
    }
}

type SharedTransactions = Arc<Mutex<Transactions>>;

fn lock(t: &SharedTransactions) -> MutexGuard<'_, Transactions> {
    t.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The listener's state between datagrams.
struct Listener {
    sock: Arc<UdpSocket>,
    handle: Handle,
    config: SharedConfig,
    metrics: SipMetrics,
    generation: u64,
    registrar: Registrar,
    limit: u32,
    throttle: Throttle,
    transactions: SharedTransactions,
    keys: TxKeys,
    in_flight: Arc<Semaphore>,
}

/// Serves SIP on `sock` until `stop` resolves.
pub async fn serve(
    sock: UdpSocket,
    handle: Handle,
    config: SharedConfig,
    metrics: SipMetrics,
    stop: impl std::future::Future<Output = ()>,
) {
    let cfg = config.get();
    let sock_ref = socket2::SockRef::from(&sock);
    if let Err(e) = sock_ref.set_recv_buffer_size(RECV_BUFFER_BYTES) {
        tracing::warn!(error = %e, "could not enlarge the SIP receive buffer");
    }
    tracing::debug!(
        bytes = sock_ref.recv_buffer_size().unwrap_or_default(),
        "SIP receive buffer"
    );
    let secret: [u8; 32] = rand::random();
    let mut listener = Listener {
        sock: Arc::new(sock),
        handle,
        generation: config.generation(),
        registrar: Registrar::new(registrar_config(&cfg), secret, credentials(&cfg)),
        limit: cfg.sip.max_failed_auth_per_minute,
        config,
        metrics,
        throttle: Throttle::default(),
        transactions: SharedTransactions::default(),
        keys: TxKeys::default(),
        in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
    };
    // The proxy's Via and Record-Route name this socket; the core's datagrams leave from it.
    if let Ok(addr) = listener.sock.local_addr() {
        let _ = listener.handle.call(Command::SipListening { addr }).await;
    }
    if let Some(mut outgoing) = listener.handle.take_sip_outgoing() {
        let sock = listener.sock.clone();
        tokio::spawn(async move {
            while let Some((to, bytes)) = outgoing.recv().await {
                if let Err(e) = sock.send_to(&bytes, to).await {
                    tracing::debug!(%to, error = %e, "SIP send failed");
                }
            }
        });
    }
    let mut buf = vec![0u8; 65_536];
    tokio::pin!(stop);
    loop {
        let first = tokio::select! {
            _ = &mut stop => return,
            r = listener.sock.recv_from(&mut buf) => r,
        };
        let mut next = Some(first);
        let mut read = 0;
        // Everything already queued on the socket, up to a batch, in this wake-up.
        while let Some(received) = next.take() {
            match received {
                Ok((n, src)) => {
                    listener
                        .datagram(buf.get(..n).unwrap_or_default(), src)
                        .await
                }
                // ICMP errors from earlier sends surface here on some systems: keep going.
                Err(e) => tracing::debug!(error = %e, "sip recv error"),
            }
            read += 1;
            if read < RECV_BATCH {
                match listener.sock.try_recv_from(&mut buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    r => next = Some(r),
                }
            }
        }
    }
}

impl Listener {
    async fn datagram(&mut self, bytes: &[u8], src: SocketAddr) {
        self.metrics.datagrams.inc();
        if self.config.generation() != self.generation {
            // Reloaded: new agents and SIP passwords apply to the next request.
            self.generation = self.config.generation();
            let cfg = self.config.get();
            self.registrar.set_credentials(credentials(&cfg));
            self.limit = cfg.sip.max_failed_auth_per_minute;
        }
        let req = match parse(bytes) {
            Ok(SipMessage::Request(r))
                if r.method == "REGISTER"
                    || (!matches!(r.method.as_str(), "INVITE" | "ACK" | "CANCEL" | "BYE")
                        && !r.header("To").is_some_and(|to| to.contains("tag="))) =>
            {
                r
            }
            // Calls: everything else goes to the core's proxy, in arrival order.
            Ok(message) => {
                self.metrics.call_messages.inc();
                let cmd = Command::Sip {
                    from: src,
                    message: Box::new(message),
                };
                if !self.handle.sip(cmd) {
                    self.metrics.overloaded.inc();
                }
                return;
            }
            Err(ParseError::Empty) => {
                self.metrics.keepalives.inc();
                return;
            }
            Err(e) => {
                self.metrics.garbage.inc();
                tracing::debug!(%src, error = %e, "dropped malformed SIP datagram");
                return;
            }
        };
        let now = self.handle.now();
        if let Some(user) = self.registrar.claimed_user(&req) {
            if self.throttle.blocked(now.wall, src.ip(), &user, self.limit) {
                self.metrics.throttled.inc();
                return;
            }
        }
        let key = self.keys.of(&req, src);
        if let Some(key) = &key {
            let seen = lock(&self.transactions).begin(now.mono, key);
            match seen {
                Seen::New => {}
                Seen::InProgress => {
                    self.metrics.retransmissions.inc();
                    return;
                }
                Seen::Answered(response) => {
                    self.metrics.retransmissions.inc();
                    let _ = self.sock.send_to(&response, src).await;
                    return;
                }
            }
        }
        let had_credentials = req.header("Authorization").is_some();
        // An authenticated REGISTER will wait for the core: reserve its place first, so that
        // under overload it is dropped before the registrar consumes its nonce count.
        let permit = if had_credentials && req.method == "REGISTER" {
            match self.in_flight.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    self.metrics.overloaded.inc();
                    if let Some(key) = &key {
                        lock(&self.transactions).abandon(key);
                    }
                    return;
                }
            }
        } else {
            None
        };
        let outcome = self.registrar.handle(now.wall, &req, src);
        if let Some(user) = self.registrar.take_wrong_digest() {
            self.metrics.auth_failures.inc();
            self.throttle.failed(now.wall, src.ip(), user);
        }
        match outcome {
            Outcome::NoReply => {}
            Outcome::Reply(resp) => {
                if resp.code == 401 {
                    self.metrics.challenges.inc();
                }
                let bytes = resp.serialize();
                let _ = self.sock.send_to(&bytes, src).await;
                if let Some(key) = &key {
                    lock(&self.transactions).complete(key, bytes);
                }
            }
            Outcome::Register(rr) => {
                let update = match rr.change {
                    BindingChange::Fetch => BindingUpdate::Fetch,
                    BindingChange::RemoveAll => BindingUpdate::RemoveAll,
                    BindingChange::Update(list) => BindingUpdate::Set(
                        list.into_iter().map(|c| (c.uri, c.expires_secs)).collect(),
                    ),
                };
                let (sock, handle) = (self.sock.clone(), self.handle.clone());
                let transactions = self.transactions.clone();
                let registers_ok = self.metrics.registers_ok.clone();
                tokio::spawn(async move {
                    let resp = match handle
                        .call(Command::SipRegister {
                            agent: rr.agent_id,
                            update,
                        })
                        .await
                    {
                        Ok(Reply::Bindings(b)) => {
                            registers_ok.inc();
                            registered_ok(&req, src, &b)
                        }
                        Ok(_) | Err(CallError::Unavailable) => {
                            response_to(&req, 500, "Server Internal Error")
                        }
                        Err(CallError::Rejected(Rejection::Conflict { message, .. })) => {
                            response_to(&req, 403, "Too Many Registered Contacts")
                                .with_header("Warning", format!("399 switchboard \"{message}\""))
                        }
                        Err(CallError::Rejected(_)) => response_to(&req, 404, "Not Found"),
                    };
                    drop(permit);
                    let bytes = resp.serialize();
                    let _ = sock.send_to(&bytes, src).await;
                    if let Some(key) = &key {
                        lock(&transactions).complete(key, bytes);
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(branch: &str) -> TxKey {
        let text = format!(
            "REGISTER sip:sb SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch={branch}\r\n\
             From: <sip:a@sb>;tag=1\r\nTo: <sip:a@sb>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n\r\n"
        );
        let Ok(SipMessage::Request(req)) = parse(text.as_bytes()) else {
            panic!("request");
        };
        KEYS.with(|k| k.of(&req, "192.0.2.1:5060".parse().unwrap()))
            .expect("matchable")
    }

    thread_local! {
        static KEYS: TxKeys = TxKeys::default();
    }

    #[test]
    fn a_retransmission_is_in_progress_then_answered_with_the_same_bytes() {
        let mut t = Transactions::default();
        let k = key("z9hG4bK1");
        assert!(matches!(t.begin(0, &k), Seen::New));
        assert!(matches!(t.begin(500, &k), Seen::InProgress));
        t.complete(&k, b"SIP/2.0 200 OK".to_vec());
        match t.begin(1_500, &k) {
            Seen::Answered(b) => assert_eq!(&b[..], b"SIP/2.0 200 OK"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(t.begin(0, &key("z9hG4bK2")), Seen::New));
    }

    #[test]
    fn transactions_are_forgotten_after_timer_j_and_beyond_capacity() {
        let mut t = Transactions::default();
        let k = key("z9hG4bK1");
        t.begin(0, &k);
        t.complete(&k, b"x".to_vec());
        assert!(matches!(t.begin(TRANSACTION_LIFETIME_MS, &k), Seen::New));
        for i in 0..TRANSACTION_CAPACITY {
            t.begin(TRANSACTION_LIFETIME_MS, &key(&format!("z9hG4bK-{i}")));
        }
        assert_eq!(t.states.len(), TRANSACTION_CAPACITY);
        assert_eq!(t.order.len(), TRANSACTION_CAPACITY);
        assert!(matches!(t.begin(TRANSACTION_LIFETIME_MS, &k), Seen::New));
    }

    #[test]
    fn an_abandoned_request_is_processed_when_retransmitted() {
        let mut t = Transactions::default();
        let k = key("z9hG4bK1");
        t.begin(0, &k);
        t.abandon(&k);
        assert!(matches!(t.begin(1, &k), Seen::New));
        // The abandoned entry's expiry does not take the new one with it.
        t.forget_oldest();
        assert!(matches!(t.begin(2, &k), Seen::InProgress));
    }

    #[test]
    fn the_key_depends_on_branch_source_and_method_only() {
        let keys = TxKeys::default();
        let req = |method: &str, via: &str, call_id: &str| {
            let text = format!(
                "{method} sip:sb SIP/2.0\r\nVia: {via}\r\nFrom: <sip:a@sb>;tag=1\r\n\
                 To: <sip:a@sb>\r\nCall-ID: {call_id}\r\nCSeq: 1 {method}\r\n\r\n"
            );
            match parse(text.as_bytes()) {
                Ok(SipMessage::Request(r)) => r,
                other => panic!("{other:?}"),
            }
        };
        let a: SocketAddr = "192.0.2.1:5060".parse().unwrap();
        let b: SocketAddr = "192.0.2.1:5061".parse().unwrap();
        let via = "SIP/2.0/UDP h;rport;BRANCH=z9hG4bKx, SIP/2.0/UDP p;branch=z9hG4bKy";
        let k = keys.of(&req("REGISTER", via, "1"), a);
        assert!(k.is_some());
        assert_eq!(k, keys.of(&req("REGISTER", via, "2"), a));
        assert_ne!(k, keys.of(&req("REGISTER", via, "1"), b));
        assert_ne!(k, keys.of(&req("OPTIONS", via, "1"), a));
        let other = "SIP/2.0/UDP h;branch=z9hG4bKz";
        assert_ne!(k, keys.of(&req("REGISTER", other, "1"), a));
        // No magic cookie, or an ACK: not matched.
        let old = "SIP/2.0/UDP h;branch=1234";
        assert_eq!(keys.of(&req("REGISTER", old, "1"), a), None);
        assert_eq!(keys.of(&req("ACK", via, "1"), a), None);
    }
}
