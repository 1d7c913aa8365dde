//! HTTP adapter: the integration routes (docs/api.md#integration), authenticated by an API key —
//! inbound sms and social messages (threaded by medium and sender), emails, calls and hang-ups.

use crate::core::Command;
use crate::core::model::Medium;
use crate::core::view::ConversationView;
use crate::http::auth::ApiKey;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::ApiJson;
use crate::http::extract::{Body, IdPath};
use crate::http::reply::NonBlankText;
use crate::http::reply::{message_text, ok, respond};
use crate::http::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use utoipa::ToSchema;

/// Longest sender address (phone number, handle, email address).
const MAX_FROM_CHARS: usize = 320;

/// The media an integration may deliver messages on.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InboundMedium {
    Sms,
    Social,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageBody {
    medium: InboundMedium,
    #[schema(value_type = NonBlankText)]
    from: String,
    #[schema(value_type = NonBlankText)]
    text: String,
    queue: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailBody {
    #[schema(value_type = NonBlankText)]
    from: String,
    subject: String,
    text: String,
    queue: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallBody {
    #[schema(value_type = NonBlankText)]
    from: String,
    queue: String,
}

/// The sender, trimmed, not empty and not absurdly long (400).
fn sender(from: &str) -> ApiResult<String> {
    let f = from.trim();
    if f.is_empty() {
        return Err(ApiError::invalid("from must not be empty"));
    }
    if f.chars().count() > MAX_FROM_CHARS {
        return Err(ApiError::invalid(format!(
            "from is longer than {MAX_FROM_CHARS} characters"
        )));
    }
    Ok(f.to_string())
}

/// POST /api/v1/inbound/messages — `{medium: sms|social, from, text, queue}`: appended to
/// the open thread of (`medium`, `from`), or a new chat conversation; `200` with it.
#[utoipa::path(
    post,
    path = "/api/v1/inbound/messages",
    tag = "integrations",
    request_body = MessageBody,
    responses((status = 200, description = "The conversation carrying the thread.", body = ConversationView)),
    security(("apiKey" = []))
)]
pub async fn message(
    State(state): State<AppState>,
    _key: ApiKey,
    Body(body): Body<MessageBody>,
) -> ApiResult<Response> {
    let max = state.config().limits.max_message_chars;
    let text = message_text(&body.text, max, "text")?;
    let medium = match body.medium {
        InboundMedium::Sms => Medium::Sms,
        InboundMedium::Social => Medium::Social,
    };
    let cmd = Command::InboundMessage {
        medium,
        from: sender(&body.from)?,
        text,
        queue: body.queue,
    };
    Ok(ok(state.handle.call(cmd).await?))
}

/// POST /api/v1/inbound/emails — `{from, subject, text, queue}`: a new email conversation;
/// `201` with it. Subject and text together are limited to `limits.max_email_bytes` (the body
/// may exceed `limits.max_body_bytes` by that much).
#[utoipa::path(
    post,
    path = "/api/v1/inbound/emails",
    tag = "integrations",
    request_body = EmailBody,
    responses((status = 201, description = "The new conversation.", body = ConversationView)),
    security(("apiKey" = []))
)]
pub async fn email(
    State(state): State<AppState>,
    _key: ApiKey,
    ApiJson(body): ApiJson<EmailBody>,
) -> ApiResult<Response> {
    let max = state.config().limits.max_email_bytes;
    if body.subject.len() + body.text.len() > max {
        return Err(ApiError::too_large(format!(
            "subject and text are larger than limits.max_email_bytes ({max} bytes)"
        )));
    }
    let cmd = Command::InboundEmail {
        from: sender(&body.from)?,
        subject: body.subject.trim().to_string(),
        text: body.text,
        queue: body.queue,
    };
    Ok(respond(StatusCode::CREATED, state.handle.call(cmd).await?))
}

/// POST /api/v1/inbound/calls — `{from, queue}`: a call waiting in a voice queue; `201` with
/// the conversation (its `id` is what hangup takes).
#[utoipa::path(
    post,
    path = "/api/v1/inbound/calls",
    tag = "integrations",
    request_body = CallBody,
    responses((status = 201, description = "The new conversation.", body = ConversationView)),
    security(("apiKey" = []))
)]
pub async fn call(
    State(state): State<AppState>,
    _key: ApiKey,
    Body(body): Body<CallBody>,
) -> ApiResult<Response> {
    let cmd = Command::InboundCall {
        from: sender(&body.from)?,
        queue: body.queue,
    };
    Ok(respond(StatusCode::CREATED, state.handle.call(cmd).await?))
}

/// POST /api/v1/inbound/calls/{id}/hangup — the caller hung up (`wrap_up`/`CustomerEnded`
/// in process, `abandoned` before); `200` with the conversation.
#[utoipa::path(
    post,
    path = "/api/v1/inbound/calls/{id}/hangup",
    tag = "integrations",
    params(("id" = Uuid, Path, description = "Conversation id")),
    responses((status = 200, description = "The conversation.", body = ConversationView)),
    security(("apiKey" = []))
)]
pub async fn hangup(
    State(state): State<AppState>,
    _key: ApiKey,
    IdPath(conversation): IdPath,
) -> ApiResult<Response> {
    Ok(ok(state
        .handle
        .call(Command::Hangup { conversation })
        .await?))
}
