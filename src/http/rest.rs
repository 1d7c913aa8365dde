//! HTTP adapter: the REST API (docs/api.md) under `/api/v1` (plus `/healthz`, `/readyz`,
//! `/metrics`). Handlers are thin: authenticate, validate the JSON, turn it into a
//! [`Command`](crate::core::Command), and map the core's [`Reply`] back to JSON. Every rule
//! (roles, ownership, states) lives in the core; every error goes through [`ApiError`].

mod agent;
mod customer;
mod integration;
mod supervisor;

use super::AppState;
use super::auth::{self, Guard};
use super::error::{ApiError, ApiResult};
use super::extract::ApiJson;
use super::{openapi, ops};
use crate::core::Reply;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use serde_json::json;
use std::sync::Arc;
use uuid::Uuid;

/// Every REST route, the health and metrics endpoints and the OpenAPI document, with the
/// per-router rate limiters and their counters (one [`Guard`] per router).
pub fn routes() -> Router<AppState> {
    let guard = Arc::new(Guard::default());
    Router::new()
        .route("/api/v1/login", post(auth::login))
        .route("/api/v1/logout", post(auth::logout))
        .route("/api/v1/agent/state", get(agent::state))
        .route("/api/v1/agent/presence", put(agent::presence))
        .route("/api/v1/conversations/{id}/accept", post(agent::accept))
        .route("/api/v1/conversations/{id}/reject", post(agent::reject))
        .route("/api/v1/conversations/{id}/messages", post(agent::message))
        .route("/api/v1/conversations/{id}/draft", put(agent::draft))
        .route("/api/v1/conversations/{id}/metadata", post(agent::metadata))
        .route("/api/v1/conversations/{id}/end", post(agent::end))
        .route("/api/v1/conversations/{id}/complete", post(agent::complete))
        .route("/api/v1/conversations/{id}/transfer", post(agent::transfer))
        .route("/api/v1/conversations/{id}/consult", post(agent::consult))
        .route("/api/v1/conversations/{id}/callback", post(agent::callback))
        .route(
            "/api/v1/conversations/{id}/reassign",
            post(supervisor::reassign),
        )
        .route(
            "/api/v1/queues/{id}/conversations",
            get(agent::queue_conversations),
        )
        .route("/api/v1/queues/{id}/pick", post(agent::pick))
        .route("/api/v1/conversations/{id}", get(supervisor::details))
        .route("/api/v1/groups/{group_id}", get(supervisor::group))
        .route("/api/v1/conversations", get(supervisor::search))
        .route("/api/v1/agents", get(supervisor::agents))
        .route(
            "/api/v1/agents/{agent_id}/release",
            post(supervisor::release),
        )
        .route("/api/v1/alerts", get(supervisor::alerts))
        .route("/api/v1/queues", get(supervisor::queues))
        .route("/api/v1/chats", post(customer::start))
        .route("/api/v1/chat", get(customer::state))
        .route("/api/v1/chat/messages", post(customer::message))
        .route("/api/v1/chat/end", post(customer::end))
        .route("/api/v1/inbound/messages", post(integration::message))
        .route("/api/v1/inbound/emails", post(integration::email))
        .route("/api/v1/inbound/calls", post(integration::call))
        .route(
            "/api/v1/inbound/calls/{id}/hangup",
            post(integration::hangup),
        )
        .route("/api/v1/backup", get(ops::backup))
        .route("/api/v1/openapi.json", get(openapi::document))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(Extension(guard))
        .layer(axum::middleware::from_fn(refuse_query_token))
}

/// Refuses every REST request with `?token=` (401): only WebSocket routes take a token in
/// the URL, where browsers cannot send a header.
async fn refuse_query_token(req: Request, next: axum::middleware::Next) -> Response {
    if super::extract::query_token(req.uri().query()).is_some() {
        return super::extract::query_token_refused().into_response();
    }
    next.run(req).await
}

/// Any unknown path: a JSON `not_found` under `/api/`, a plain 404 elsewhere.
async fn not_found(uri: Uri) -> Response {
    if uri.path().starts_with("/api/") || uri.path() == "/api" {
        ApiError::not_found(format!("no such endpoint: {}", uri.path())).into_response()
    } else {
        (StatusCode::NOT_FOUND, "not found").into_response()
    }
}

/// A known path with a method it does not serve.
async fn method_not_allowed() -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not accept that method; see /api/v1/openapi.json",
    )
    .into_response()
}

/// A JSON body of at most `limits.max_body_bytes` (413 `payload_too_large` beyond, whether
/// announced by `Content-Length` or streamed); otherwise exactly [`ApiJson`]. The router's
/// own limit is the larger one inbound emails need.
#[derive(Debug, Clone)]
pub struct Body<T>(pub T);

impl<T: serde::de::DeserializeOwned> FromRequest<AppState> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let max = state.config().limits.max_body_bytes;
        let too_large =
            || ApiError::too_large("the request body is larger than limits.max_body_bytes");
        let announced = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if announced.is_some_and(|n| n > max as u64) {
            return Err(too_large());
        }
        let (parts, body) = req.into_parts();
        let limited = axum::body::Body::new(http_body_util::Limited::new(body, max));
        let ApiJson(v) =
            ApiJson::<T>::from_request(Request::from_parts(parts, limited), state).await?;
        Ok(Body(v))
    }
}

/// A UUID path segment (`{id}`, `{group_id}`); anything else is a 400 `invalid_request`.
#[derive(Debug, Clone, Copy)]
pub struct IdPath(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::invalid(e.body_text()))?;
        Uuid::parse_str(&raw)
            .map(IdPath)
            .map_err(|_| ApiError::invalid(format!("{raw:?} is not a UUID")))
    }
}

/// A queue id path segment.
#[derive(Debug, Clone)]
pub struct QueuePath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for QueuePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(q)| QueuePath(q))
            .map_err(|e| ApiError::invalid(e.body_text()))
    }
}

/// The core's answer as JSON with `status`: the view it carries, or `{"ok": true}`.
pub fn respond(status: StatusCode, reply: Reply) -> Response {
    match reply {
        Reply::Conversation(v) => (status, Json(v)).into_response(),
        Reply::Conversations(v) => (status, Json(v)).into_response(),
        Reply::Snapshot(s) => (status, Json(s)).into_response(),
        Reply::Agents(v) => (status, Json(v)).into_response(),
        Reply::Queues(v) => (status, Json(v)).into_response(),
        Reply::Alerts(v) => (status, Json(v)).into_response(),
        Reply::Chat(s) => (status, Json(s)).into_response(),
        Reply::ChatStarted {
            conversation_id,
            group_id,
        } => (
            status,
            Json(json!({ "conversation_id": conversation_id, "group_id": group_id })),
        )
            .into_response(),
        Reply::Done | Reply::LoggedIn { .. } | Reply::Principal(_) | Reply::Bindings(_) => {
            (status, Json(json!({ "ok": true }))).into_response()
        }
    }
}

/// `200` with the reply.
pub fn ok(reply: Reply) -> Response {
    respond(StatusCode::OK, reply)
}

/// A message text: trimmed, not empty (400), at most `max` characters (413).
pub fn message_text(text: &str, max: usize, field: &str) -> ApiResult<String> {
    let t = text.trim();
    if t.is_empty() {
        return Err(ApiError::invalid(format!("{field} must not be empty")));
    }
    if t.chars().count() > max {
        return Err(ApiError::too_large(format!(
            "{field} is longer than limits.max_message_chars ({max} characters)"
        )));
    }
    Ok(t.to_string())
}

#[cfg(test)]
mod tests {
    use crate::app::SharedConfig;
    use crate::config::Config;
    use crate::driver::{Clock, Driver};
    use crate::http::{AppState, router};
    use crate::store::Store;
    use axum::http::Request;
    use std::sync::Arc;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_streamed_body_over_max_body_bytes_is_413_without_content_length() {
        let cfg = Arc::new(Config::default());
        let max = cfg.limits.max_body_bytes;
        let store = Arc::new(Store::in_memory().unwrap());
        let (driver, handle) =
            Driver::start(cfg.clone(), store.clone(), Clock::manual(0), None).unwrap();
        tokio::spawn(driver.run(std::future::pending::<()>()));
        let app = router(AppState::new(handle, store, SharedConfig::new(cfg)));
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
            Ok(br#"{"queue": "support", "name": ""#.to_vec()),
            Ok(vec![b'a'; max]),
            Ok(br#""}"#.to_vec()),
        ];
        let body = axum::body::Body::from_stream(futures_util::stream::iter(chunks));
        let req = Request::post("/api/v1/chats")
            .header("content-type", "application/json")
            .body(body)
            .unwrap();
        let resp = app.oneshot(req).await.unwrap();
        assert_eq!(resp.status().as_u16(), 413);
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["error"], "payload_too_large");
    }
}
