//! HTTP adapter: the core's replies as JSON responses, and the one rule for message texts
//! every handler that takes a text applies (with its schema for the OpenAPI document).

use super::error::{ApiError, ApiResult};
use crate::core::Reply;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};
use uuid::Uuid;

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
            Json(ChatStarted {
                conversation_id,
                group_id,
                token: None,
            }),
        )
            .into_response(),
        Reply::Done | Reply::LoggedIn { .. } | Reply::Principal(_) | Reply::Bindings(_) => {
            (status, Json(Done { ok: true })).into_response()
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

/// `{"ok": true}`: the change is committed.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Ok)]
pub struct Done {
    #[schema(example = true)]
    pub ok: bool,
}

/// A started web chat: its ids and, for the customer who started it, the customer token for
/// `/chat` and `/chat/ws`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChatStarted {
    pub conversation_id: Uuid,
    pub group_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// The characters `str::trim` removes (Unicode `White_Space`), as a regex class for schemas.
const WHITE_SPACE: &str = r"\t\n\x0B\f\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000";

/// In the OpenAPI document: a text [`message_text`] accepts, one with at least one character
/// that is not white space (`"\f"` alone is refused).
pub struct NonBlankText;

impl PartialSchema for NonBlankText {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(format!("[^{WHITE_SPACE}]")))
            .into()
    }
}

impl ToSchema for NonBlankText {}

/// Longest customer name of a web chat, in characters, once trimmed.
pub const MAX_NAME_CHARS: usize = 100;

/// In the OpenAPI document: a customer name — once trimmed, 1 to [`MAX_NAME_CHARS`]
/// characters, none of them a control character.
pub struct ChatName;

impl PartialSchema for ChatName {
    fn schema() -> RefOr<Schema> {
        let ws = format!("[{WHITE_SPACE}]");
        let visible = format!(r"[^{WHITE_SPACE}\x00-\x1F\x7F-\x9F]");
        let inner = r"[^\x00-\x1F\x7F-\x9F]";
        let between = MAX_NAME_CHARS - 2;
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(format!(
                "^{ws}*{visible}(?:{inner}{{0,{between}}}{visible})?{ws}*$"
            )))
            .into()
    }
}

impl ToSchema for ChatName {}
