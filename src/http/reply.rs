//! HTTP adapter: the core's replies as JSON responses, and the one rule for message texts
//! every handler that takes a text applies.

use super::error::{ApiError, ApiResult};
use crate::core::Reply;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

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
