//! HTTP adapter: the supervisor's REST routes (docs/api.md#supervisor-routes) — reassign,
//! Conversation Details, groups, search, the agent and queue lists. History is read from the store
//! (everything is committed before any reply); who may read it is decided here from the core's
//! principal.

use super::agent::TargetBody;
use crate::config::Channel;
use crate::core::access::HistoryReader;
use crate::core::model::{Conversation, Status};
use crate::core::view::{AgentView, AlertView, QueueView};
use crate::core::view::{ConversationView, MessageView};
use crate::core::{Command, Reply};
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::Bearer;
use crate::http::extract::{ApiQuery, Body, IdPath, QueuePath};
use crate::http::reply::Done;
use crate::http::reply::ok;
use crate::http::state::AppState;
use crate::store::{SearchQuery, Store};
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::openapi::schema::{
    AnyOfBuilder, KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type,
};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// POST /api/v1/conversations/{id}/reassign — `{queue}` or `{agent}`: a supervisor closes the
/// conversation (`Reassigned`) and sends the work on; answers the new conversation.
#[utoipa::path(
    post,
    path = "/api/v1/conversations/{id}/reassign",
    tag = "supervisor",
    params(("id" = Uuid, Path, description = "Conversation id")),
    request_body = TargetBody,
    responses((status = 200, description = "The new conversation.", body = ConversationView)),
    security(("sessionToken" = []))
)]
pub async fn reassign(
    State(state): State<AppState>,
    Bearer(token): Bearer,
    IdPath(conversation): IdPath,
    Body(body): Body<TargetBody>,
) -> ApiResult<Response> {
    let cmd = Command::Reassign {
        token,
        conversation,
        target: body.target()?,
    };
    Ok(ok(state.handle.call(cmd).await?))
}

/// Who is asking for history (the rule is the core's [`HistoryReader`]).
async fn reader(state: &AppState, token: [u8; 32]) -> ApiResult<HistoryReader> {
    match state.handle.call(Command::Authenticate { token }).await? {
        Reply::Principal(p) => Ok(HistoryReader::of(p)?),
        _ => Err(ApiError::unavailable()),
    }
}

/// A store read off the async threads.
async fn read<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&Store) -> Result<T, crate::store::StoreError> + Send + 'static,
) -> ApiResult<T> {
    let store: Arc<Store> = state.store.clone();
    match tokio::task::spawn_blocking(move || f(&store)).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(ApiError::unavailable()),
    }
}

/// Agents may read the groups they worked in (the store answers whether they did).
async fn may_read_group(
    state: &AppState,
    reader: &HistoryReader,
    group: uuid::Uuid,
) -> ApiResult<()> {
    let worked = match reader.agent() {
        None => true,
        Some(agent) => {
            let agent = agent.to_string();
            read(state, move |s| s.agent_worked_in_group(&agent, group)).await?
        }
    };
    Ok(reader.may_read_group(worked)?)
}

/// GET /api/v1/conversations/{id} — Conversation Details: every field, the `events`
/// timeline and (chat, email) the transcript. Supervisors; agents for groups they worked in.
#[utoipa::path(
    get,
    path = "/api/v1/conversations/{id}",
    tag = "history",
    params(("id" = Uuid, Path, description = "Conversation id")),
    responses((status = 200, description = "The conversation with its `messages` and `events`.", body = ConversationView)),
    security(("sessionToken" = []))
)]
pub async fn details(
    State(state): State<AppState>,
    Bearer(token): Bearer,
    IdPath(id): IdPath,
) -> ApiResult<Response> {
    let reader = reader(&state, token).await?;
    let Some((c, events)) = read(&state, move |s| s.conversation(id)).await? else {
        return Err(ApiError::not_found(format!("no conversation {id}")));
    };
    may_read_group(&state, &reader, c.group_id).await?;
    let mut view = ConversationView::with_timeline(&c, &events);
    view.events = Some(events);
    if let Some(thread) = c.thread {
        let messages = read(&state, move |s| s.messages(thread)).await?;
        view.messages = Some(messages.iter().map(MessageView::of).collect());
    }
    Ok(Json(view).into_response())
}

/// GET /api/v1/groups/{group_id} — `{group_id, conversations}`: every conversation of the
/// group, oldest first. Same readers as the details.
#[utoipa::path(
    get,
    path = "/api/v1/groups/{group_id}",
    tag = "history",
    params(("group_id" = Uuid, Path, description = "Group id")),
    responses((status = 200, description = "The group.", body = Group)),
    security(("sessionToken" = []))
)]
pub async fn group(
    State(state): State<AppState>,
    Bearer(token): Bearer,
    IdPath(group_id): IdPath,
) -> ApiResult<Response> {
    let reader = reader(&state, token).await?;
    let members: Vec<Conversation> = read(&state, move |s| s.group(group_id)).await?;
    if members.is_empty() {
        return Err(ApiError::not_found(format!("no group {group_id}")));
    }
    may_read_group(&state, &reader, group_id).await?;
    let conversations: Vec<ConversationView> = members.iter().map(ConversationView::of).collect();
    Ok(Json(Group {
        group_id,
        conversations,
    })
    .into_response())
}

/// A group: the conversations that share one customer contact, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct Group {
    pub group_id: Uuid,
    pub conversations: Vec<ConversationView>,
}

/// The filters of `GET /api/v1/conversations` as its query string gives them; an unknown
/// parameter or a bad value is a 400 and an empty value is absent (see [`ApiQuery`]).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    #[param(schema_with = status_or_empty)]
    status: Option<Status>,
    queue: Option<String>,
    agent: Option<String>,
    #[param(schema_with = channel_or_empty)]
    channel: Option<Channel>,
    /// Only conversations older than this one: the next page.
    #[param(schema_with = uuid_or_empty)]
    before: Option<Uuid>,
    /// Default 100; anything above 1000 counts as 1000.
    #[param(schema_with = count_or_empty)]
    limit: Option<usize>,
}

/// A query value's schema that also admits the empty value, which counts as absent.
fn or_empty(schema: impl Into<RefOr<Schema>>) -> Schema {
    let empty = ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(0));
    Schema::AnyOf(AnyOfBuilder::new().item(schema).item(empty).build())
}

fn status_or_empty() -> Schema {
    or_empty(Ref::from_schema_name("Status"))
}

fn channel_or_empty() -> Schema {
    or_empty(Ref::from_schema_name("Channel"))
}

fn uuid_or_empty() -> Schema {
    or_empty(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
    )
}

fn count_or_empty() -> Schema {
    or_empty(
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0)),
    )
}

impl From<SearchParams> for SearchQuery {
    fn from(p: SearchParams) -> SearchQuery {
        SearchQuery {
            status: p.status,
            queue: p.queue,
            agent: p.agent,
            channel: p.channel,
            before: p.before,
            limit: p
                .limit
                .unwrap_or(SearchQuery::DEFAULT_LIMIT)
                .min(SearchQuery::MAX_LIMIT),
        }
    }
}

/// GET /api/v1/conversations?status=&queue=&agent=&channel=&limit=&before= — supervisors
/// search every stored conversation, newest first (`limit` default 100, at most 1000);
/// `before=<id>` gives the page of older ones (docs/rescue.md#search-pages).
#[utoipa::path(
    get,
    path = "/api/v1/conversations",
    tag = "history",
    params(SearchParams),
    responses((status = 200, description = "The conversations found, newest first.", body = [ConversationView])),
    security(("sessionToken" = []))
)]
pub async fn search(
    State(state): State<AppState>,
    Bearer(token): Bearer,
    ApiQuery(params): ApiQuery<SearchParams>,
) -> ApiResult<Response> {
    reader(&state, token).await?.may_search()?;
    let q = SearchQuery::from(params);
    let found = read(&state, move |s| s.search(&q)).await?;
    let views: Vec<ConversationView> = found.iter().map(ConversationView::of).collect();
    Ok(Json(views).into_response())
}

/// GET /api/v1/agents — every agent: session, presence, capabilities, SIP, open work.
#[utoipa::path(
    get,
    path = "/api/v1/agents",
    tag = "supervisor",
    responses((status = 200, description = "Every configured agent.", body = [AgentView])),
    security(("sessionToken" = []))
)]
pub async fn agents(State(state): State<AppState>, Bearer(token): Bearer) -> ApiResult<Response> {
    Ok(ok(state.handle.call(Command::Agents { token }).await?))
}

/// GET /api/v1/alerts — the standing supervisor alerts, oldest first (docs/rescue.md#alerts).
#[utoipa::path(
    get,
    path = "/api/v1/alerts",
    tag = "supervisor",
    responses((status = 200, description = "The standing alerts, oldest first.", body = [AlertView])),
    security(("sessionToken" = []))
)]
pub async fn alerts(State(state): State<AppState>, Bearer(token): Bearer) -> ApiResult<Response> {
    Ok(ok(state.handle.call(Command::Alerts { token }).await?))
}

/// POST /api/v1/agents/{agent_id}/release — a supervisor ends the agent's session now, as if
/// its grace period had run out (docs/rescue.md#release); `409 invalid_state` without one.
#[utoipa::path(
    post,
    path = "/api/v1/agents/{agent_id}/release",
    tag = "supervisor",
    params(("agent_id" = String, Path, description = "Agent id")),
    responses((status = 200, description = "Done.", body = Done)),
    security(("sessionToken" = []))
)]
pub async fn release(
    State(state): State<AppState>,
    Bearer(token): Bearer,
    QueuePath(agent): QueuePath,
) -> ApiResult<Response> {
    Ok(ok(state
        .handle
        .call(Command::Release { token, agent })
        .await?))
}

/// GET /api/v1/queues — every queue: channel, waiting count, oldest arrival.
#[utoipa::path(
    get,
    path = "/api/v1/queues",
    tag = "supervisor",
    responses((status = 200, description = "Every configured queue.", body = [QueueView])),
    security(("sessionToken" = []))
)]
pub async fn queues(State(state): State<AppState>, Bearer(token): Bearer) -> ApiResult<Response> {
    Ok(ok(state.handle.call(Command::Queues { token }).await?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::extract::decode_query;

    fn search_query(raw: Option<&str>) -> ApiResult<SearchQuery> {
        decode_query::<SearchParams>(raw).map(SearchQuery::from)
    }

    #[test]
    fn search_query_parses_filters_and_caps_the_limit() {
        let q = search_query(Some(
            "status=in_queue&queue=sup%20port&channel=chat&limit=5000",
        ))
        .unwrap();
        assert_eq!(q.status, Some(Status::InQueue));
        assert_eq!(q.queue.as_deref(), Some("sup port"));
        assert_eq!(q.channel, Some(Channel::Chat));
        assert_eq!(q.limit, SearchQuery::MAX_LIMIT);
    }

    #[test]
    fn search_query_treats_empty_values_as_absent() {
        let q = search_query(Some("status=&queue=&agent=&channel=&limit=")).unwrap();
        assert_eq!(q, SearchQuery::default());
        assert_eq!(search_query(None).unwrap(), SearchQuery::default());
    }

    #[test]
    fn search_query_rejects_bad_values_and_unknown_parameters() {
        for raw in [
            "status=lost",
            "channel=fax",
            "limit=-1",
            "limit=ten",
            "stauts=in_queue",
            "queue=%zz",
            "queue=%ff",
            "before=yesterday",
        ] {
            let e = search_query(Some(raw)).unwrap_err();
            assert_eq!(e.code, "invalid_request", "{raw}");
        }
    }
}
