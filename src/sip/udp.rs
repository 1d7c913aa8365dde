//! Adapter layer: the SIP registrar's UDP listener. Receive → parse → registrar (pure) →
//! core (bindings, via the driver) → send. Garbage is dropped and counted; a source that
//! keeps failing authentication is throttled. REGISTERs are committed concurrently so many
//! phones share one store transaction.

use super::message::{ParseError, SipMessage, parse, response_to};
use super::registrar::{BindingChange, Outcome, Registrar, RegistrarConfig, registered_ok};
use crate::app::SharedConfig;
use crate::config::Config;
use crate::core::{BindingUpdate, Command, Reply};
use crate::driver::{CallError, Handle};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::net::UdpSocket;

/// Counters of the SIP listener (for `/metrics`).
#[derive(Debug, Default)]
pub struct SipMetrics {
    pub datagrams: AtomicU64,
    pub garbage: AtomicU64,
    pub keepalives: AtomicU64,
    pub registers_ok: AtomicU64,
    pub challenges: AtomicU64,
    pub auth_failures: AtomicU64,
    pub throttled: AtomicU64,
}

/// The process-wide SIP counters.
pub static METRICS: SipMetrics = SipMetrics {
    datagrams: AtomicU64::new(0),
    garbage: AtomicU64::new(0),
    keepalives: AtomicU64::new(0),
    registers_ok: AtomicU64::new(0),
    challenges: AtomicU64::new(0),
    auth_failures: AtomicU64::new(0),
    throttled: AtomicU64::new(0),
};

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

/// Failed authentications per source address in the current minute.
#[derive(Debug, Default)]
struct Throttle {
    window_start: i64,
    failures: HashMap<IpAddr, u32>,
}

impl Throttle {
    fn blocked(&mut self, now_ms: i64, ip: IpAddr, limit: u32) -> bool {
        if now_ms - self.window_start >= 60_000 {
            self.window_start = now_ms;
            self.failures.clear();
        }
        self.failures.get(&ip).is_some_and(|n| *n >= limit)
    }

    fn failed(&mut self, ip: IpAddr) {
        *self.failures.entry(ip).or_default() += 1;
    }
}

/// Serves SIP on `sock` until `stop` resolves.
pub async fn serve(
    sock: UdpSocket,
    handle: Handle,
    config: SharedConfig,
    stop: impl std::future::Future<Output = ()>,
) {
    let cfg = config.get();
    let mut generation = config.generation();
    let sock = Arc::new(sock);
    let secret: [u8; 32] = rand::random();
    let mut registrar = Registrar::new(registrar_config(&cfg), secret, credentials(&cfg));
    let mut limit = cfg.sip.max_failed_auth_per_minute;
    let mut throttle = Throttle::default();
    let mut buf = vec![0u8; 65_536];
    tokio::pin!(stop);
    loop {
        let (n, src) = tokio::select! {
            _ = &mut stop => return,
            r = sock.recv_from(&mut buf) => match r {
                Ok(v) => v,
                Err(e) => {
                    // ICMP errors from earlier sends surface here on some systems: keep going.
                    tracing::debug!(error = %e, "sip recv error");
                    continue;
                }
            },
        };
        METRICS.datagrams.fetch_add(1, Ordering::Relaxed);
        if config.generation() != generation {
            // Reloaded: new agents and SIP passwords apply to the next request.
            generation = config.generation();
            let cfg = config.get();
            registrar.set_credentials(credentials(&cfg));
            limit = cfg.sip.max_failed_auth_per_minute;
        }
        let req = match parse(&buf[..n]) {
            Ok(SipMessage::Request(r)) => r,
            Ok(SipMessage::Response(_)) => continue,
            Err(ParseError::Empty) => {
                METRICS.keepalives.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Err(e) => {
                METRICS.garbage.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%src, error = %e, "dropped malformed SIP datagram");
                continue;
            }
        };
        let now = handle.now().wall;
        if throttle.blocked(now, src.ip(), limit) {
            METRICS.throttled.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let had_credentials = req.header("Authorization").is_some();
        match registrar.handle(now, &req, src) {
            Outcome::NoReply => {}
            Outcome::Reply(resp) => {
                if resp.code == 401 {
                    METRICS.challenges.fetch_add(1, Ordering::Relaxed);
                    let stale = resp
                        .header("WWW-Authenticate")
                        .is_some_and(|h| h.contains("stale=true"));
                    if had_credentials && !stale {
                        METRICS.auth_failures.fetch_add(1, Ordering::Relaxed);
                        throttle.failed(src.ip());
                    }
                }
                let _ = sock.send_to(&resp.serialize(), src).await;
            }
            Outcome::Register(rr) => {
                let update = match rr.change {
                    BindingChange::Fetch => BindingUpdate::Fetch,
                    BindingChange::RemoveAll => BindingUpdate::RemoveAll,
                    BindingChange::Update(list) => BindingUpdate::Set(
                        list.into_iter().map(|c| (c.uri, c.expires_secs)).collect(),
                    ),
                };
                let (sock, handle) = (sock.clone(), handle.clone());
                tokio::spawn(async move {
                    let resp = match handle
                        .call(Command::SipRegister {
                            agent: rr.agent_id,
                            update,
                        })
                        .await
                    {
                        Ok(Reply::Bindings(b)) => {
                            METRICS.registers_ok.fetch_add(1, Ordering::Relaxed);
                            registered_ok(&req, src, &b)
                        }
                        Ok(_) | Err(CallError::Unavailable) => {
                            response_to(&req, 500, "Server Internal Error")
                        }
                        Err(CallError::Rejected(_)) => response_to(&req, 404, "Not Found"),
                    };
                    let _ = sock.send_to(&resp.serialize(), src).await;
                });
            }
        }
    }
}
