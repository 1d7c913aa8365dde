//! HTTP adapter: the agent's REST routes (docs/api.md#agent-routes) — state, presence, the
//! conversation actions, queue lists and manual picking. Ownership and state rules are the core's.

use crate::core::model::{Metadata, Presence};
use crate::core::view::{AgentSnapshot, ConversationView};
use crate::core::{Command, Target};
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::Bearer;
use crate::http::extract::{Body, IdPath, QueuePath};
use crate::http::reply::{Done, NonBlankText};
use crate::http::reply::{message_text, ok, respond};
use crate::http::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Schema};
use utoipa::{PartialSchema, ToSchema};
use uuid::Uuid;

/// Script entries accepted in one draft or metadata save.
const MAX_SCRIPT_FIELDS: usize = 100;
/// Longest script field name.
const MAX_SCRIPT_KEY_CHARS: usize = 100;

/// `{"presence": "ready"}` or `{"presence": "not_ready"}`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PresenceBody {
    presence: Presence,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TextBody {
    #[schema(value_type = NonBlankText)]
    pub text: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MetadataBody {
    script: BTreeMap<String, String>,
    memo: String,
}

impl MetadataBody {
    /// The metadata, within the size limits (413 beyond them).
    fn checked(self, max_chars: usize) -> ApiResult<Metadata> {
        if self.script.len() > MAX_SCRIPT_FIELDS {
            return Err(ApiError::too_large(format!(
                "script has more than {MAX_SCRIPT_FIELDS} fields"
            )));
        }
        let too_long = |s: &str, max: usize| s.chars().count() > max;
        if self
            .script
            .iter()
            .any(|(k, v)| too_long(k, MAX_SCRIPT_KEY_CHARS) || too_long(v, max_chars))
            || too_long(&self.memo, max_chars)
        {
            return Err(ApiError::too_large(format!(
                "script fields and memo are limited to limits.max_message_chars ({max_chars} characters)"
            )));
        }
        Ok(Metadata {
            script: self.script,
            memo: self.memo,
        })
    }
}

/// `{"queue": id}` or `{"agent": id}`, exactly one of them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetBody {
    queue: Option<String>,
    agent: Option<String>,
}

/// Written out: the derive cannot say "exactly one property" (`minProperties`).
impl PartialSchema for TargetBody {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .description(Some(
                "`{\"queue\": id}` or `{\"agent\": id}`, exactly one of them.",
            ))
            .property("queue", NonBlankText::schema())
            .property("agent", NonBlankText::schema())
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
            .min_properties(Some(1))
            .max_properties(Some(1))
            .into()
    }
}

impl ToSchema for TargetBody {}

impl TargetBody {
    pub fn target(self) -> ApiResult<Target> {
        match (self.queue, self.agent) {
            (Some(q), None) if !q.trim().is_empty() => Ok(Target::Queue(q)),
            (None, Some(a)) if !a.trim().is_empty() => Ok(Target::Agent(a)),
            _ => Err(ApiError::invalid(
                "give exactly one of \"queue\" or \"agent\" (a non-empty id)",
            )),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsultBody {
    #[schema(value_type = NonBlankText)]
    agent: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PickBody {
    conversation_id: Uuid,
}

/// GET /api/v1/agent/state — the agent snapshot (session, presence, capabilities, banners,
/// conversations with transcripts, drafts).
#[utoipa::path(
    get,
    path = "/api/v1/agent/state",
    tag = "agent",
    responses((status = 200, description = "The snapshot.", body = AgentSnapshot)),
    security(("sessionToken" = []))
)]
pub async fn state(State(state): State<AppState>, Bearer(token): Bearer) -> ApiResult<Response> {
    Ok(ok(state.handle.call(Command::AgentState { token }).await?))
}

/// PUT /api/v1/agent/presence — `{presence: ready|not_ready}`; answers `{presence}`.
#[utoipa::path(
    put,
    path = "/api/v1/agent/presence",
    tag = "agent",
    request_body = PresenceBody,
    responses((status = 200, description = "The presence now in force.", body = PresenceBody)),
    security(("sessionToken" = []))
)]
pub async fn presence(
    State(state): State<AppState>,
    Bearer(token): Bearer,
    Body(body): Body<PresenceBody>,
) -> ApiResult<Response> {
    state
        .handle
        .call(Command::SetPresence {
            token,
            presence: body.presence,
        })
        .await?;
    Ok(Json(body).into_response())
}

/// POST /api/v1/conversations/{id}/accept — the agent it is offered to takes it.
#[utoipa::path(
    post,
    path = "/api/v1/conversations/{id}/accept",
    tag = "conversations",
    params(("id" = Uuid, Path, description = "Conversation id")),
    responses((status = 200, description = "The conversation.", body = ConversationView)),
    security(("sessionToken" = []))
)]
pub async fn accept(
    State(state): State<AppState>,
    Bearer(token): Bearer,
    IdPath(conversation): IdPath,
) -> ApiResult<Response> {
    let cmd = Command::Accept {
        token,
        conversation,
    };
    Ok(ok(state.handle.call(cmd).await?))
}

/// POST /api/v1/conversations/{id}/reject — the agent it is offered to declines it.
#[utoipa::path(
    post,
    path = "/api/v1/conversations/{id}/reject",
    tag = "conversations",
    params(("id" = Uuid, Path, description = "Conversation id")),
    responses((status = 200, description = "The conversation.", body = ConversationView)),
    security(("sessionToken" = []))
)]
pub async fn reject(
    State(state): State<AppState>,
    Bearer(token): Bearer,
    IdPath(conversation): IdPath,
) -> ApiResult<Response> {
    let cmd = Command::Reject {
        token,
        conversation,
    };
    Ok(ok(state.handle.call(cmd).await?))
}

/// POST /api/v1/conversations/{id}/messages — `{text}`: a chat message or email reply
/// from its agent.
#[utoipa::path(
    post,
    path = "/api/v1/conversations/{id}/messages",
    tag = "conversations",
    params(("id" = Uuid, Path, description = "Conversation id")),
    request_body = TextBody,
    responses((status = 200, description = "Done.", body = Done)),
    security(("sessionToken" = []))
)]
pub async fn message(
    State(state): State<AppState>,
    Bearer(token): Bearer,
    IdPath(conversation): IdPath,
    Body(body): Body<TextBody>,
) -> ApiResult<Response> {
    let max = state.config().limits.max_message_chars;
    let text = message_text(&body.text, max, "text")?;
    let cmd = Command::AgentMessage {
        token,
        conversation,
        text,
    };
    Ok(ok(state.handle.call(cmd).await?))
}

/// PUT /api/v1/conversations/{id}/draft — `{script, memo}`: unsaved metadata, kept in the
/// session through a connection loss.
#[utoipa::path(
    put,
    path = "/api/v1/conversations/{id}/draft",
    tag = "conversations",
    params(("id" = Uuid, Path, description = "Conversation id")),
    request_body = MetadataBody,
    responses((status = 200, description = "Done.", body = Done)),
    security(("sessionToken" = []))
)]
pub async fn draft(
    State(state): State<AppState>,
    Bearer(token): Bearer,
    IdPath(conversation): IdPath,
    Body(body): Body<MetadataBody>,
) -> ApiResult<Response> {
    let draft = body.checked(state.config().limits.max_message_chars)?;
    let cmd = Command::SaveDraft {
        token,
        conversation,
        draft,
    };
    Ok(ok(state.handle.call(cmd).await?))
}

/// POST /api/v1/conversations/{id}/metadata — `{script, memo}`: saves the metadata into the
/// conversation (and clears the draft).
#[utoipa::path(
    post,
    path = "/api/v1/conversations/{id}/metadata",
    tag = "conversations",
    params(("id" = Uuid, Path, description = "Conversation id")),
    request_body = MetadataBody,
    responses((status = 200, description = "The conversation.", body = ConversationView)),
    security(("sessionToken" = []))
)]
pub async fn metadata(
    State(state): State<AppState>,
    Bearer(token): Bearer,
    IdPath(conversation): IdPath,
    Body(body): Body<MetadataBody>,
) -> ApiResult<Response> {
    let metadata = body.checked(state.config().limits.max_message_chars)?;
    let cmd = Command::SaveMetadata {
        token,
        conversation,
        metadata,
    };
    Ok(ok(state.handle.call(cmd).await?))
}

/// POST /api/v1/conversations/{id}/end — its agent ends it (`wrap_up`, `AgentEnded`).
#[utoipa::path(
    post,
    path = "/api/v1/conversations/{id}/end",
    tag = "conversations",
    params(("id" = Uuid, Path, description = "Conversation id")),
    responses((status = 200, description = "The conversation.", body = ConversationView)),
    security(("sessionToken" = []))
)]
pub async fn end(
    State(state): State<AppState>,
    Bearer(token): Bearer,
    IdPath(conversation): IdPath,
) -> ApiResult<Response> {
    let cmd = Command::End {
        token,
        conversation,
    };
    Ok(ok(state.handle.call(cmd).await?))
}

/// POST /api/v1/conversations/{id}/complete — its agent completes the wrap-up (`handled`).
#[utoipa::path(
    post,
    path = "/api/v1/conversations/{id}/complete",
    tag = "conversations",
    params(("id" = Uuid, Path, description = "Conversation id")),
    responses((status = 200, description = "The conversation.", body = ConversationView)),
    security(("sessionToken" = []))
)]
pub async fn complete(
    State(state): State<AppState>,
    Bearer(token): Bearer,
    IdPath(conversation): IdPath,
) -> ApiResult<Response> {
    let cmd = Command::Complete {
        token,
        conversation,
    };
    Ok(ok(state.handle.call(cmd).await?))
}

/// POST /api/v1/conversations/{id}/transfer — `{queue}` or `{agent}`; answers the new
/// conversation of the group.
#[utoipa::path(
    post,
    path = "/api/v1/conversations/{id}/transfer",
    tag = "conversations",
    params(("id" = Uuid, Path, description = "Conversation id")),
    request_body = TargetBody,
    responses((status = 200, description = "The new conversation.", body = ConversationView)),
    security(("sessionToken" = []))
)]
pub async fn transfer(
    State(state): State<AppState>,
    Bearer(token): Bearer,
    IdPath(conversation): IdPath,
    Body(body): Body<TargetBody>,
) -> ApiResult<Response> {
    let cmd = Command::Transfer {
        token,
        conversation,
        target: body.target()?,
    };
    Ok(ok(state.handle.call(cmd).await?))
}

/// POST /api/v1/conversations/{id}/consult — `{agent}`; answers the consultation offered to
/// that agent.
#[utoipa::path(
    post,
    path = "/api/v1/conversations/{id}/consult",
    tag = "conversations",
    params(("id" = Uuid, Path, description = "Conversation id")),
    request_body = ConsultBody,
    responses((status = 200, description = "The consultation.", body = ConversationView)),
    security(("sessionToken" = []))
)]
pub async fn consult(
    State(state): State<AppState>,
    Bearer(token): Bearer,
    IdPath(conversation): IdPath,
    Body(body): Body<ConsultBody>,
) -> ApiResult<Response> {
    if body.agent.trim().is_empty() {
        return Err(ApiError::invalid("agent must not be empty"));
    }
    let cmd = Command::Consult {
        token,
        conversation,
        agent: body.agent,
    };
    Ok(ok(state.handle.call(cmd).await?))
}

/// POST /api/v1/conversations/{id}/callback — its last agent calls the customer back:
/// `201` with the new outbound voice conversation.
#[utoipa::path(
    post,
    path = "/api/v1/conversations/{id}/callback",
    tag = "conversations",
    params(("id" = Uuid, Path, description = "Conversation id")),
    responses((status = 201, description = "The new outbound voice conversation.", body = ConversationView)),
    security(("sessionToken" = []))
)]
pub async fn callback(
    State(state): State<AppState>,
    Bearer(token): Bearer,
    IdPath(conversation): IdPath,
) -> ApiResult<Response> {
    let cmd = Command::Callback {
        token,
        conversation,
    };
    Ok(respond(StatusCode::CREATED, state.handle.call(cmd).await?))
}

/// GET /api/v1/queues/{id}/conversations — the waiting conversations, next first (member
/// agents and supervisors).
#[utoipa::path(
    get,
    path = "/api/v1/queues/{id}/conversations",
    tag = "queues",
    params(("id" = String, Path, description = "Queue id")),
    responses((status = 200, description = "The waiting conversations, next first.", body = [ConversationView])),
    security(("sessionToken" = []))
)]
pub async fn queue_conversations(
    State(state): State<AppState>,
    Bearer(token): Bearer,
    QueuePath(queue): QueuePath,
) -> ApiResult<Response> {
    let cmd = Command::QueueConversations { token, queue };
    Ok(ok(state.handle.call(cmd).await?))
}

/// POST /api/v1/queues/{id}/pick — `{conversation_id}`: a member agent takes a waiting
/// conversation (`in_process`, `picked`).
#[utoipa::path(
    post,
    path = "/api/v1/queues/{id}/pick",
    tag = "queues",
    params(("id" = String, Path, description = "Queue id")),
    request_body = PickBody,
    responses((status = 200, description = "The conversation.", body = ConversationView)),
    security(("sessionToken" = []))
)]
pub async fn pick(
    State(state): State<AppState>,
    Bearer(token): Bearer,
    QueuePath(queue): QueuePath,
    Body(body): Body<PickBody>,
) -> ApiResult<Response> {
    let cmd = Command::Pick {
        token,
        queue,
        conversation: body.conversation_id,
    };
    Ok(ok(state.handle.call(cmd).await?))
}
