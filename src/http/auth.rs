//! HTTP adapter: who is calling — password login and logout (docs/sessions.md#login), integration
//! API keys, and the per-address rate limits (`limits.login_per_minute`,
//! `limits.chats_per_minute`). Passwords are checked here (argon2id, off the async threads, a
//! bounded number at once);
//! sessions live in the core.

use super::error::{ApiError, ApiResult};
use super::extract::{Bearer, Body, ClientIp, new_token, token_hash};
use super::reply::Done;
use super::state::AppState;
use crate::core::Command;
use crate::core::Reply;
use crate::core::model::Role;
use axum::extract::{FromRequestParts, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::Response;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;
use utoipa::ToSchema;
use uuid::Uuid;

/// Addresses tracked per limiter; beyond this, new addresses are refused until the minute
/// turns (an attacker cannot grow the map without bound, nor reset others' counts).
const MAX_TRACKED: usize = 65_536;
/// The longest username or password looked at.
const MAX_CREDENTIAL_CHARS: usize = 1024;

/// A fixed one-minute window per client address (IPv6 by /64 prefix).
#[derive(Debug, Default)]
pub struct RateLimiter {
    windows: Mutex<HashMap<IpAddr, (u64, u32)>>,
}

impl RateLimiter {
    /// Counts one request from `ip` at monotonic time `now_ms`; false when over `per_minute`.
    pub fn allow(&self, ip: IpAddr, now_ms: u64, per_minute: u32) -> bool {
        let key = match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => {
                let mut o = v6.octets();
                o[8..].fill(0);
                IpAddr::from(o)
            }
        };
        let window = now_ms / 60_000;
        let mut map = match self.windows.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        if map.len() >= MAX_TRACKED && !map.contains_key(&key) {
            map.retain(|_, (w, _)| *w == window);
            if map.len() >= MAX_TRACKED {
                return false;
            }
        }
        let entry = map.entry(key).or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        if entry.1 >= per_minute {
            return false;
        }
        entry.1 += 1;
        true
    }
}

/// How long a login waits for a free password check before it is refused with 503.
const PASSWORD_CHECK_WAIT: Duration = Duration::from_secs(2);
/// Logins allowed to wait for a password check, per check slot; beyond, refused at once.
const WAITING_PER_SLOT: usize = 32;

/// Password checks (argon2, ~19 MiB each with the default parameters) run at most
/// `slots` at a time, one per core: a login waits briefly for a free slot, then is refused
/// with 503 `overloaded`. Memory for password checks is therefore bounded by the core count,
/// whatever the number of clients.
#[derive(Debug)]
pub struct PasswordChecks {
    slots: Arc<Semaphore>,
    capacity: usize,
    wait: Duration,
    waiting: AtomicUsize,
    running: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    /// Logins refused because every slot stayed busy.
    pub refused: AtomicU64,
}

impl Default for PasswordChecks {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        PasswordChecks::new(cores, PASSWORD_CHECK_WAIT)
    }
}

impl PasswordChecks {
    /// At most `slots` checks at once; a login waits at most `wait` for one.
    pub fn new(slots: usize, wait: Duration) -> PasswordChecks {
        let slots = slots.max(1);
        PasswordChecks {
            slots: Arc::new(Semaphore::new(slots)),
            capacity: slots,
            wait,
            waiting: AtomicUsize::new(0),
            running: Arc::new(AtomicUsize::new(0)),
            peak: Arc::new(AtomicUsize::new(0)),
            refused: AtomicU64::new(0),
        }
    }

    /// The most checks that ever ran at the same time.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    /// Whether `password` matches `phc`, checked on a blocking thread once a slot is free;
    /// 503 `overloaded` when none frees up in time. The slot is held until the check itself
    /// ends, even if the client goes away meanwhile.
    pub async fn verify(&self, phc: String, password: String) -> ApiResult<bool> {
        let refuse = || {
            self.refused.fetch_add(1, Ordering::Relaxed);
            Err(ApiError::overloaded(
                "too many password checks in progress; try again in a few seconds",
            ))
        };
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.capacity * WAITING_PER_SLOT {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return refuse();
        }
        let permit = tokio::time::timeout(self.wait, self.slots.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        let Ok(Ok(permit)) = permit else {
            return refuse();
        };
        let (running, peak) = (self.running.clone(), self.peak.clone());
        let checked = tokio::task::spawn_blocking(move || {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            let ok = verify_password(&phc, &password);
            running.fetch_sub(1, Ordering::SeqCst);
            drop(permit);
            ok
        })
        .await;
        Ok(checked.unwrap_or(false))
    }
}

/// The rate limiters of one router (what they refuse is counted in the state's metrics).
#[derive(Debug, Default)]
pub struct Guard {
    pub logins: RateLimiter,
    pub chats: RateLimiter,
    pub passwords: PasswordChecks,
}

impl Guard {
    /// Applies `limits.login_per_minute` to `ip`.
    pub fn check_login(&self, state: &AppState, ip: IpAddr) -> ApiResult<()> {
        let per_minute = state.config().limits.login_per_minute;
        if self.logins.allow(ip, state.handle.now().mono, per_minute) {
            Ok(())
        } else {
            state.metrics.http.login_rate_limited.inc();
            Err(ApiError::rate_limited())
        }
    }

    /// Applies `limits.chats_per_minute` to `ip`.
    pub fn check_chat(&self, state: &AppState, ip: IpAddr) -> ApiResult<()> {
        let per_minute = state.config().limits.chats_per_minute;
        if self.chats.allow(ip, state.handle.now().mono, per_minute) {
            Ok(())
        } else {
            state.metrics.http.chats_rate_limited.inc();
            Err(ApiError::rate_limited())
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    username: String,
    password: String,
}

/// The least memory reserved for one password check, in argon2 blocks of 1 KiB: above the
/// allocator's largest mmap threshold (glibc: 32 MiB), so the block memory is mapped for the
/// check and unmapped right after it. A smaller reservation (19 MiB with argon2's default
/// parameters) would raise glibc's threshold and then stay cached in a per-thread arena after
/// every check: hundreds of MiB held after a burst of logins. Only the blocks used are touched,
/// so the resident cost is the hash's own memory cost.
const CHECK_RESERVATION_BLOCKS: usize = 33 * 1024;

/// Whether `password` matches the argon2 PHC string `phc` (false on a malformed hash).
fn verify_password(phc: &str, password: &str) -> bool {
    use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version};
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(hash.algorithm) else {
        return false;
    };
    let version = match hash.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let Ok(params) = Params::try_from(&hash) else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let count = params.block_count();
    let mut blocks: Vec<Block> = Vec::with_capacity(count.max(CHECK_RESERVATION_BLOCKS));
    blocks.resize(count, Block::default());
    let mut out = vec![0u8; expected.len()];
    let computed = Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password.as_bytes(), salt, &mut out, &mut blocks[..])
        .is_ok();
    computed && bool::from(out.as_slice().ct_eq(expected.as_bytes()))
}

/// POST /api/v1/login — checks `{username, password}` against the configured agents, then
/// supervisors, and opens (or takes over) the session: `{token, role, agent_id, session_id}`.
/// Unknown users cost the same verification and get the same 401; limited per address.
#[utoipa::path(
    post,
    path = "/api/v1/login",
    tag = "sessions",
    request_body = LoginBody,
    responses((status = 200, description = "Logged in.", body = LoginResponse))
)]
pub async fn login(
    State(state): State<AppState>,
    Extension(guard): Extension<Arc<Guard>>,
    ClientIp(ip): ClientIp,
    body: Result<Body<LoginBody>, ApiError>,
) -> ApiResult<Response> {
    guard.check_login(&state, ip)?;
    let Body(LoginBody { username, password }) = body?;
    if username.chars().count() > MAX_CREDENTIAL_CHARS
        || password.chars().count() > MAX_CREDENTIAL_CHARS
    {
        state.metrics.http.failed_logins.inc();
        return Err(ApiError::unauthorized());
    }
    let cfg = state.config();
    let found = cfg
        .agents
        .iter()
        .find(|a| a.id == username)
        .map(|a| (a.password_hash.clone(), Role::Agent))
        .or_else(|| {
            cfg.supervisors
                .iter()
                .find(|s| s.id == username)
                .map(|s| (s.password_hash.clone(), Role::Supervisor))
        });
    // An unknown user is checked against a real hash (same parameters, same cost); the
    // result is ignored.
    let decoy = cfg
        .agents
        .first()
        .map(|a| a.password_hash.clone())
        .or_else(|| cfg.supervisors.first().map(|s| s.password_hash.clone()));
    let (phc, role) = match (found, decoy) {
        (Some((phc, role)), _) => (Some(phc), Some(role)),
        (None, decoy) => (decoy, None),
    };
    let verified = match phc {
        Some(phc) => guard.passwords.verify(phc, password).await?,
        None => false,
    };
    let Some(role) = role.filter(|_| verified) else {
        state.metrics.http.failed_logins.inc();
        return Err(ApiError::unauthorized());
    };
    let token = new_token();
    let reply = state
        .handle
        .call(Command::Login {
            user: username,
            role,
            token: token_hash(&token),
        })
        .await?;
    let Reply::LoggedIn {
        session_id,
        user,
        role,
    } = reply
    else {
        return Err(ApiError::unauthorized());
    };
    Ok(axum::response::IntoResponse::into_response(Json(
        LoginResponse {
            token,
            role,
            agent_id: user,
            session_id,
        },
    )))
}

/// A new session: its token (for `Authorization: Bearer` and the WebSockets' `?token=`),
/// the role and the user's id.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    pub token: String,
    pub role: Role,
    pub agent_id: String,
    pub session_id: Uuid,
}

/// POST /api/v1/logout — ends the caller's session (agents: refused with 409
/// `conversations_open` while voice or chat work is open).
#[utoipa::path(
    post,
    path = "/api/v1/logout",
    tag = "sessions",
    responses((status = 200, description = "Done.", body = Done)),
    security(("sessionToken" = []))
)]
pub async fn logout(State(state): State<AppState>, Bearer(token): Bearer) -> ApiResult<Response> {
    let reply = state.handle.call(Command::Logout { token }).await?;
    Ok(super::reply::ok(reply))
}

/// An integration authenticated by `Authorization: Bearer <key>` against `[[api_keys]]`;
/// holds the key's id.
#[derive(Debug, Clone)]
pub struct ApiKey(pub String);

impl FromRequestParts<AppState> for ApiKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(ApiError::unauthorized)?;
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let cfg = state.config();
        // Every configured key is compared, in constant time, whichever matches.
        let mut matched: Option<String> = None;
        for k in &cfg.api_keys {
            let Ok(expected) = hex::decode(k.key_sha256.trim()) else {
                continue;
            };
            if expected.len() == digest.len() && bool::from(expected.ct_eq(&digest)) {
                matched = Some(k.id.clone());
            }
        }
        matched.map(ApiKey).ok_or_else(ApiError::unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limiter_counts_per_address_and_resets_each_minute() {
        let l = RateLimiter::default();
        let a = IpAddr::from([10, 0, 0, 1]);
        let b = IpAddr::from([10, 0, 0, 2]);
        assert!(l.allow(a, 0, 2));
        assert!(l.allow(a, 1_000, 2));
        assert!(!l.allow(a, 2_000, 2));
        assert!(l.allow(b, 2_000, 2));
        assert!(l.allow(a, 60_000, 2));
    }

    #[test]
    fn rate_limiter_groups_ipv6_by_slash_64() {
        let l = RateLimiter::default();
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        assert!(l.allow(a, 0, 1));
        assert!(!l.allow(b, 0, 1));
    }

    fn cheap_hash(password: &str) -> String {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let params = argon2::Params::new(4096, 1, 1, None).unwrap();
        let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt = SaltString::encode_b64(b"switchboard-test").unwrap();
        a.hash_password(password.as_bytes(), &salt)
            .unwrap()
            .to_string()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_logins_run_at_most_one_password_check_per_slot() {
        let checks = Arc::new(PasswordChecks::new(2, Duration::from_secs(60)));
        let phc = cheap_hash("right");
        let tasks: Vec<_> = (0..48)
            .map(|i| {
                let (checks, phc) = (checks.clone(), phc.clone());
                tokio::spawn(async move { checks.verify(phc, format!("wrong-{i}")).await })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), Ok(false));
        }
        assert!(checks.peak() >= 1);
        assert!(checks.peak() <= 2, "peak {} checks at once", checks.peak());
        assert_eq!(
            checks.verify(phc, "right".into()).await,
            Ok(true),
            "a right password still verifies"
        );
    }

    #[tokio::test]
    async fn a_login_waiting_too_long_for_a_password_check_is_refused_with_503() {
        let checks = PasswordChecks::new(1, Duration::from_millis(50));
        let held = checks.slots.clone().acquire_owned().await.unwrap();
        let err = checks
            .verify(cheap_hash("x"), "x".into())
            .await
            .unwrap_err();
        assert_eq!(err.status.as_u16(), 503);
        assert_eq!(err.code, "overloaded");
        assert_eq!(checks.refused.load(Ordering::Relaxed), 1);
        drop(held);
        assert_eq!(checks.verify(cheap_hash("x"), "x".into()).await, Ok(true));
    }

    #[tokio::test]
    async fn logins_beyond_the_waiting_room_are_refused_at_once() {
        let checks = Arc::new(PasswordChecks::new(1, Duration::from_secs(3600)));
        let held = checks.slots.clone().acquire_owned().await.unwrap();
        let waiters: Vec<_> = (0..WAITING_PER_SLOT)
            .map(|_| {
                let c = checks.clone();
                tokio::spawn(async move { c.verify(cheap_hash("x"), "x".into()).await })
            })
            .collect();
        while checks.waiting.load(Ordering::SeqCst) < WAITING_PER_SLOT {
            tokio::task::yield_now().await;
        }
        let err = checks
            .verify(cheap_hash("x"), "x".into())
            .await
            .unwrap_err();
        assert_eq!(err.code, "overloaded");
        drop(held);
        for w in waiters {
            assert_eq!(w.await.unwrap(), Ok(true));
        }
    }

    #[test]
    fn password_check_agrees_with_argon2_for_every_variant() {
        use argon2::password_hash::{PasswordHasher, SaltString};
        for (alg, ver) in [
            (argon2::Algorithm::Argon2id, argon2::Version::V0x13),
            (argon2::Algorithm::Argon2i, argon2::Version::V0x13),
            (argon2::Algorithm::Argon2d, argon2::Version::V0x10),
        ] {
            let params = argon2::Params::new(2048, 2, 2, Some(24)).unwrap();
            let salt = SaltString::encode_b64(b"another-salt-value").unwrap();
            let phc = argon2::Argon2::new(alg, ver, params)
                .hash_password(b"s3cret", &salt)
                .unwrap()
                .to_string();
            assert!(verify_password(&phc, "s3cret"), "{phc}");
            assert!(!verify_password(&phc, "s3cret "), "{phc}");
        }
    }

    #[test]
    fn malformed_password_hash_never_verifies() {
        assert!(!verify_password("not a phc string", "x"));
    }
}
