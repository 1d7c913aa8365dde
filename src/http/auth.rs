//! HTTP adapter: who is calling — password login and logout (SPEC §2), integration API keys,
//! and the per-address rate limits (`limits.login_per_minute`, `limits.chats_per_minute`).
//! Passwords are checked here (argon2id, off the async threads); sessions live in the core.

use super::error::{ApiError, ApiResult};
use super::extract::{Bearer, Body, ClientIp, new_token, token_hash};
use super::state::AppState;
use crate::core::Command;
use crate::core::Reply;
use crate::core::model::Role;
use axum::extract::{FromRequestParts, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::Response;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use subtle::ConstantTimeEq;

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

/// The rate limiters of one router (what they refuse is counted in the state's metrics).
#[derive(Debug, Default)]
pub struct Guard {
    pub logins: RateLimiter,
    pub chats: RateLimiter,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    username: String,
    password: String,
}

/// Whether `password` matches the argon2 PHC string `phc` (false on a malformed hash).
fn verify_password(phc: &str, password: &str) -> bool {
    use argon2::{Argon2, PasswordHash, PasswordVerifier};
    match PasswordHash::new(phc) {
        Ok(hash) => Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok(),
        Err(_) => false,
    }
}

/// POST /api/v1/login — checks `{username, password}` against the configured agents, then
/// supervisors, and opens (or takes over) the session: `{token, role, agent_id, session_id}`.
/// Unknown users cost the same verification and get the same 401; limited per address.
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
        Some(phc) => tokio::task::spawn_blocking(move || verify_password(&phc, &password))
            .await
            .unwrap_or(false),
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
    let role = match role {
        Role::Agent => "agent",
        Role::Supervisor => "supervisor",
    };
    Ok(axum::response::IntoResponse::into_response(Json(json!({
        "token": token,
        "role": role,
        "agent_id": user,
        "session_id": session_id,
    }))))
}

/// POST /api/v1/logout — ends the caller's session (agents: refused with 409
/// `conversations_open` while voice or chat work is open).
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

    #[test]
    fn malformed_password_hash_never_verifies() {
        assert!(!verify_password("not a phc string", "x"));
    }
}
