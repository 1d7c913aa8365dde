//! HTTP adapter: operations endpoints — liveness (`/healthz`), readiness (`/readyz`),
//! Prometheus metrics (`/metrics`, loopback clients only) and the online store backup
//! (`/api/v1/backup`, supervisors).

use super::error::{ApiError, ApiResult};
use super::extract::{Bearer, ClientIp};
use super::state::AppState;
use crate::core::{Command, Principal, Reply};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use utoipa::ToSchema;

/// How long the driver may take to answer a readiness probe.
const READY_TIMEOUT: Duration = Duration::from_secs(1);
/// Chunk size of the backup download.
const BACKUP_CHUNK: usize = 64 * 1024;

/// `{"status": "ok"}` (`/healthz`) or `{"status": "ready"}` (`/readyz`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// GET /healthz — the process is up: `{"status": "ok"}`.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The process is up.", body = Health))
)]
pub async fn healthz() -> Response {
    Json(Health { status: "ok" }).into_response()
}

/// GET /readyz — `200 {"status": "ready"}` when the driver answers within 1 s, else `503`.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses((status = 200, description = "The driver answers.", body = Health))
)]
pub async fn readyz(State(state): State<AppState>) -> Response {
    match tokio::time::timeout(READY_TIMEOUT, state.handle.inspect(|_| ())).await {
        Ok(Ok(())) => Json(Health { status: "ready" }).into_response(),
        _ => ApiError::unavailable().into_response(),
    }
}

/// GET /metrics — Prometheus text exposition of every `switchboard_` counter and gauge;
/// only for clients on a loopback address.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text exposition (loopback clients only).", body = String, content_type = "text/plain"))
)]
pub async fn metrics(State(state): State<AppState>, ClientIp(ip): ClientIp) -> ApiResult<Response> {
    if !ip.is_loopback() {
        return Err(ApiError::forbidden(
            "/metrics is served to loopback clients only",
        ));
    }
    let (counters, gauges) = state.handle.inspect(|c| (c.counters(), c.gauges())).await?;
    let text = state.metrics.render(counters, gauges);
    let mut resp = text.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    Ok(resp)
}

/// GET /api/v1/backup — a consistent copy of the store as a redb file download
/// (supervisors). Restore: stop the service, replace `<data_dir>/switchboard.redb` with it,
/// start.
#[utoipa::path(
    get,
    path = "/api/v1/backup",
    tag = "operations",
    responses((status = 200, description = "A consistent copy of the store as a redb file (supervisors).", body = Vec<u8>, content_type = "application/octet-stream")),
    security(("sessionToken" = []))
)]
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
    use crate::config::{Config, SharedConfig};
    use crate::driver::{Clock, Driver};
    use crate::http::router;
    use crate::metrics::Metrics;
    use crate::store::Store;
    use axum::extract::ConnectInfo;
    use axum::http::Request;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use tower::ServiceExt;

    /// A state with its driver, not yet running.
    fn stopped() -> (AppState, Driver) {
        let cfg = Arc::new(Config::default());
        let store = Arc::new(Store::in_memory().unwrap());
        let (driver, handle) =
            Driver::start(cfg.clone(), store.clone(), Clock::manual(0), None).unwrap();
        (
            AppState::new(
                handle.clone(),
                store,
                SharedConfig::new(cfg),
                Arc::new(Metrics::new(handle.metrics.clone())),
            ),
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
}
