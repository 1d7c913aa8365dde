//! HTTP adapter: the customer's web chat routes (docs/api.md#customer-routes) — start a chat
//! (anyone, limited per address), read it, send, leave. The customer token opens only its own
//! thread.

use super::agent::TextBody;
use crate::core::Command;
use crate::core::view::ChatSnapshot;
use crate::http::auth::Guard;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::Body;
use crate::http::extract::{Bearer, ClientIp, new_token, token_hash};
use crate::http::reply::{ChatName, ChatStarted, Done, MAX_NAME_CHARS};
use crate::http::reply::{message_text, ok, respond};
use crate::http::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use std::sync::Arc;
use utoipa::ToSchema;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartBody {
    queue: String,
    #[schema(value_type = ChatName)]
    name: String,
    #[serde(default)]
    text: Option<String>,
}

/// POST /api/v1/chats — `{queue, name, text?}`: starts a web chat; `201` with
/// `{conversation_id, group_id, token}` (the customer token for `/chat` and `/chat/ws`).
#[utoipa::path(
    post,
    path = "/api/v1/chats",
    tag = "customer",
    request_body = StartBody,
    responses((status = 201, description = "The chat started, with the customer token.", body = ChatStarted))
)]
pub async fn start(
    State(state): State<AppState>,
    Extension(guard): Extension<Arc<Guard>>,
    ClientIp(ip): ClientIp,
    body: Result<Body<StartBody>, ApiError>,
) -> ApiResult<Response> {
    guard.check_chat(&state, ip)?;
    let Body(body) = body?;
    let name = body.name.trim().to_string();
    if name.is_empty() {
        return Err(ApiError::invalid("name must not be empty"));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "name must not contain control characters (NUL, line breaks, escapes and the like)",
        ));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::invalid(format!(
            "name is longer than {MAX_NAME_CHARS} characters"
        )));
    }
    let max = state.config().limits.max_message_chars;
    let text = match body.text.as_deref().map(str::trim) {
        Some(t) if !t.is_empty() => Some(message_text(t, max, "text")?),
        _ => None,
    };
    let token = new_token();
    let reply = state
        .handle
        .call(Command::StartChat {
            queue: body.queue,
            name,
            text,
            token: token_hash(&token),
        })
        .await?;
    let crate::core::Reply::ChatStarted {
        conversation_id,
        group_id,
    } = reply
    else {
        return Ok(respond(StatusCode::CREATED, reply));
    };
    Ok((
        StatusCode::CREATED,
        Json(ChatStarted {
            conversation_id,
            group_id,
            token: Some(token),
        }),
    )
        .into_response())
}

/// GET /api/v1/chat — the customer's chat: transcript, status, queue position, agent name.
#[utoipa::path(
    get,
    path = "/api/v1/chat",
    tag = "customer",
    responses((status = 200, description = "The chat.", body = ChatSnapshot)),
    security(("customerToken" = []))
)]
pub async fn state(State(state): State<AppState>, Bearer(token): Bearer) -> ApiResult<Response> {
    Ok(ok(state.handle.call(Command::ChatState { token }).await?))
}

/// POST /api/v1/chat/messages — `{text}`: the customer writes.
#[utoipa::path(
    post,
    path = "/api/v1/chat/messages",
    tag = "customer",
    request_body = TextBody,
    responses((status = 200, description = "Done.", body = Done)),
    security(("customerToken" = []))
)]
pub async fn message(
    State(state): State<AppState>,
    Bearer(token): Bearer,
    Body(body): Body<TextBody>,
) -> ApiResult<Response> {
    let max = state.config().limits.max_message_chars;
    let text = message_text(&body.text, max, "text")?;
    Ok(ok(state
        .handle
        .call(Command::CustomerMessage { token, text })
        .await?))
}

/// POST /api/v1/chat/end — the customer leaves (`wrap_up`/`CustomerEnded` in process,
/// `abandoned` before).
#[utoipa::path(
    post,
    path = "/api/v1/chat/end",
    tag = "customer",
    responses((status = 200, description = "Done.", body = Done)),
    security(("customerToken" = []))
)]
pub async fn end(State(state): State<AppState>, Bearer(token): Bearer) -> ApiResult<Response> {
    Ok(ok(state
        .handle
        .call(Command::CustomerEnd { token })
        .await?))
}
