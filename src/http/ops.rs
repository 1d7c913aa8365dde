//! HTTP adapter: operations endpoints — liveness (`/healthz`), readiness (`/readyz`),
//! Prometheus metrics (`/metrics`, loopback clients only) and the online store backup
//! (`/api/v1/backup`, supervisors).

use super::AppState;
use super::auth::Guard;
use super::error::{ApiError, ApiResult};
use super::extract::{Bearer, ClientIp};
use crate::core::Gauges;
use crate::core::{Command, Counters, Principal, Reply};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// How long the driver may take to answer a readiness probe.
const READY_TIMEOUT: Duration = Duration::from_secs(1);
/// Chunk size of the backup download.
const BACKUP_CHUNK: usize = 64 * 1024;

/// GET /healthz — the process is up: `{"status": "ok"}`.
pub async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// GET /readyz — `200 {"status": "ready"}` when the driver answers within 1 s, else `503`.
pub async fn readyz(State(state): State<AppState>) -> Response {
    match tokio::time::timeout(READY_TIMEOUT, state.handle.inspect(|_| ())).await {
        Ok(Ok(())) => Json(json!({ "status": "ready" })).into_response(),
        _ => ApiError::unavailable().into_response(),
    }
}

/// Prometheus text exposition, one family at a time.
struct Exposition(String);

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP switchboard_{name} {help}");
        let _ = writeln!(self.0, "# TYPE switchboard_{name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let _ = write!(self.0, "switchboard_{name}");
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let v = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.0, "{k}=\"{v}\"");
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    fn counter(&mut self, name: &str, help: &str, value: &AtomicU64) {
        self.one(name, "counter", help, value.load(Ordering::Relaxed));
    }
}

/// The whole exposition from the core's counters and gauges and the adapters' counters.
fn exposition(state: &AppState, guard: &Guard, counters: Counters, gauges: Gauges) -> String {
    let mut e = Exposition(String::with_capacity(8 * 1024));
    let c = counters;
    for (name, help, v) in [
        (
            "logins_total",
            "Successful logins (agents, including takeovers).",
            c.logins,
        ),
        (
            "connection_losses_total",
            "Agent sessions that lost their last panel connection.",
            c.connection_losses,
        ),
        (
            "resumes_total",
            "Agent sessions resumed within the grace period.",
            c.resumes,
        ),
        (
            "sessions_lost_total",
            "Agent sessions ended by the grace deadline.",
            c.sessions_lost,
        ),
        (
            "chats_requeued_total",
            "Chats requeued because their agent's session was lost.",
            c.chats_requeued,
        ),
        (
            "calls_dropped_total",
            "Voice calls dropped by a lost panel connection or SIP registration.",
            c.calls_dropped,
        ),
        ("offers_total", "Conversations offered to agents.", c.offers),
        (
            "offer_timeouts_total",
            "Offers that timed out unanswered.",
            c.offer_timeouts,
        ),
        (
            "sip_registrations_lost_total",
            "Agents whose last SIP binding expired or was removed.",
            c.sip_registrations_lost,
        ),
    ] {
        e.one(name, "counter", help, v);
    }
    e.counter(
        "failed_logins_total",
        "Login attempts refused (unknown user or wrong password).",
        &guard.failed_logins,
    );
    e.family(
        "rate_limited_total",
        "counter",
        "Requests refused by a per-address rate limit.",
    );
    e.sample(
        "rate_limited_total",
        &[("limit", "login")],
        guard.login_rate_limited.load(Ordering::Relaxed),
    );
    e.sample(
        "rate_limited_total",
        &[("limit", "chats")],
        guard.chats_rate_limited.load(Ordering::Relaxed),
    );

    let g = gauges;
    e.family("agent_sessions", "gauge", "Agent sessions by state.");
    e.sample(
        "agent_sessions",
        &[("state", "connected")],
        g.sessions_connected,
    );
    e.sample(
        "agent_sessions",
        &[("state", "disconnected")],
        g.sessions_disconnected,
    );
    e.one(
        "supervisor_sessions",
        "gauge",
        "Supervisor sessions.",
        g.supervisor_sessions,
    );
    e.family(
        "open_conversations",
        "gauge",
        "Conversations not yet handled or abandoned, by status.",
    );
    for status in ["in_queue", "offered", "in_process", "wrap_up"] {
        let n = g.conversations.get(status).copied().unwrap_or(0);
        e.sample("open_conversations", &[("status", status)], n);
    }
    e.family(
        "queue_waiting",
        "gauge",
        "Conversations waiting in each queue.",
    );
    for (queue, n) in &g.queue_waiting {
        e.sample("queue_waiting", &[("queue", queue)], n);
    }
    e.one(
        "sip_bindings",
        "gauge",
        "Live SIP contact bindings.",
        g.sip_bindings,
    );
    e.one(
        "sip_agents_registered",
        "gauge",
        "Agents with at least one live SIP binding.",
        g.agents_registered,
    );
    e.one(
        "timers",
        "gauge",
        "Deadlines in the timing wheel.",
        g.timers,
    );
    e.one(
        "outbox_pending",
        "gauge",
        "Agent replies waiting for webhook delivery.",
        g.outbox_pending,
    );

    let d = &state.handle.metrics;
    e.counter("commands_total", "Commands run by the driver.", &d.commands);
    e.counter(
        "batches_total",
        "Command batches run by the driver.",
        &d.batches,
    );
    e.counter("commits_total", "Store transactions committed.", &d.commits);
    e.counter(
        "store_writes_total",
        "Records written to the store.",
        &d.writes,
    );
    let secs = |micros: u64| micros as f64 / 1_000_000.0;
    e.one(
        "commit_seconds_total",
        "counter",
        "Time spent committing store transactions.",
        secs(d.commit_micros_total.load(Ordering::Relaxed)),
    );
    e.one(
        "commit_seconds_max",
        "gauge",
        "Longest store commit since start.",
        secs(d.commit_micros_max.load(Ordering::Relaxed)),
    );
    e.counter(
        "sockets_dropped_slow_total",
        "Sockets dropped because they did not keep up with their frames.",
        &d.sockets_dropped_slow,
    );

    let s = &crate::sip::udp::METRICS;
    e.counter(
        "sip_datagrams_total",
        "SIP datagrams received.",
        &s.datagrams,
    );
    e.counter(
        "sip_garbage_total",
        "SIP datagrams dropped as unparseable.",
        &s.garbage,
    );
    e.counter(
        "sip_keepalives_total",
        "SIP keep-alive datagrams received.",
        &s.keepalives,
    );
    e.counter(
        "sip_registers_ok_total",
        "SIP REGISTER requests answered 200 OK.",
        &s.registers_ok,
    );
    e.counter(
        "sip_challenges_total",
        "SIP digest challenges sent (401).",
        &s.challenges,
    );
    e.counter(
        "sip_auth_failures_total",
        "SIP REGISTER requests with wrong credentials.",
        &s.auth_failures,
    );
    e.counter(
        "sip_throttled_total",
        "SIP requests dropped from sources that keep failing authentication.",
        &s.throttled,
    );
    e.counter(
        "sip_retransmissions_total",
        "SIP request retransmissions answered from the transaction cache.",
        &s.retransmissions,
    );
    e.counter(
        "sip_overloaded_total",
        "Authenticated REGISTERs dropped because too many were waiting for the store (the phone retransmits).",
        &s.overloaded,
    );
    e.0
}

/// GET /metrics — Prometheus text exposition of every `switchboard_` counter and gauge;
/// only for clients on a loopback address.
pub async fn metrics(
    State(state): State<AppState>,
    Extension(guard): Extension<Arc<Guard>>,
    ClientIp(ip): ClientIp,
) -> ApiResult<Response> {
    if !ip.is_loopback() {
        return Err(ApiError::forbidden(
            "/metrics is served to loopback clients only",
        ));
    }
    let (counters, gauges) = state.handle.inspect(|c| (c.counters(), c.gauges())).await?;
    let text = exposition(&state, &guard, counters, gauges);
    let mut resp = text.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(resp)
}

/// GET /api/v1/backup — a consistent copy of the store as a redb file download
/// (supervisors). Restore: stop the service, replace `<data_dir>/switchboard.redb` with it,
/// start.
pub async fn backup(State(state): State<AppState>, Bearer(token): Bearer) -> ApiResult<Response> {
    match state.handle.call(Command::Authenticate { token }).await? {
        Reply::Principal(Principal::Supervisor { .. }) => {}
        _ => return Err(ApiError::forbidden("backups are for supervisors")),
    }
    let dir = state.config().server.data_dir.clone();
    let path = dir.join(format!(".backup-{:016x}.redb", rand::random::<u64>()));
    let store = state.store.clone();
    let dest = path.clone();
    let made = tokio::task::spawn_blocking(move || store.backup_to(&dest)).await;
    let failed = |what: &str| {
        tracing::error!(path = %path.display(), "{what}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the backup could not be written",
        )
    };
    match made {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(failed(&format!("backup failed: {e}")));
        }
        Err(_) => return Err(failed("backup task failed")),
    }
    let file = tokio::fs::File::open(&path).await;
    // The open handle keeps the data readable; the name goes at once.
    let _ = tokio::fs::remove_file(&path).await;
    let file = file.map_err(|e| failed(&format!("backup unreadable: {e}")))?;
    let len = file.metadata().await.ok().map(|m| m.len());
    let chunks = futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; BACKUP_CHUNK];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    let stamp: String = state
        .handle
        .now()
        .ts()
        .to_rfc3339()
        .chars()
        .take(19)
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .collect();
    let mut resp = Body::from_stream(chunks).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"switchboard-{stamp}Z.redb\""
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Some(len) = len {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::driver::{Clock, Driver};
    use crate::http::router;
    use crate::store::Store;
    use axum::extract::ConnectInfo;
    use axum::http::Request;
    use std::net::SocketAddr;
    use tower::ServiceExt;

    /// A state with its driver, not yet running.
    fn stopped() -> (AppState, Driver) {
        let cfg = Arc::new(Config::default());
        let store = Arc::new(Store::in_memory().unwrap());
        let (driver, handle) =
            Driver::start(cfg.clone(), store.clone(), Clock::manual(0), None).unwrap();
        (
            AppState::new(handle, store, crate::app::SharedConfig::new(cfg)),
            driver,
        )
    }

    /// A state whose driver runs.
    fn running() -> AppState {
        let (state, driver) = stopped();
        tokio::spawn(driver.run(std::future::pending::<()>()));
        state
    }

    async fn get(state: AppState, uri: &str, from: &str) -> StatusCode {
        let mut req = Request::get(uri).body(Body::empty()).unwrap();
        let addr: SocketAddr = from.parse().unwrap();
        req.extensions_mut().insert(ConnectInfo(addr));
        router(state).oneshot(req).await.unwrap().status()
    }

    #[tokio::test]
    async fn metrics_are_served_to_loopback_clients_only() {
        let s = running();
        assert_eq!(
            get(s.clone(), "/metrics", "127.0.0.1:5000").await,
            StatusCode::OK
        );
        assert_eq!(
            get(s.clone(), "/metrics", "[::1]:5000").await,
            StatusCode::OK
        );
        assert_eq!(
            get(s, "/metrics", "192.0.2.7:5000").await,
            StatusCode::FORBIDDEN
        );
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_fails_when_the_driver_does_not_answer_within_a_second() {
        assert_eq!(
            get(running(), "/readyz", "127.0.0.1:1").await,
            StatusCode::OK
        );
        // A driver that is not running never answers (its queue stays open).
        let (stuck, _driver) = stopped();
        assert_eq!(
            get(stuck.clone(), "/readyz", "127.0.0.1:1").await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(get(stuck, "/healthz", "127.0.0.1:1").await, StatusCode::OK);
    }

    #[test]
    fn exposition_escapes_label_values() {
        let mut e = Exposition(String::new());
        e.sample("queue_waiting", &[("queue", "a\"b\\c\nd")], 1);
        assert_eq!(
            e.0,
            "switchboard_queue_waiting{queue=\"a\\\"b\\\\c\\nd\"} 1\n"
        );
    }
}
