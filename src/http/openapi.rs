//! HTTP adapter: the OpenAPI 3.0 description of the whole HTTP surface (docs/api.md), written
//! by hand, served at `GET /api/v1/openapi.json`, and the list of every route the server
//! serves ([`ROUTES`]), which a test holds against both the document and the router.

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// Every route the server serves (method, path as written in the OpenAPI document).
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/v1/login"),
    ("POST", "/api/v1/logout"),
    ("GET", "/api/v1/agent/state"),
    ("PUT", "/api/v1/agent/presence"),
    ("GET", "/api/v1/agent/ws"),
    ("POST", "/api/v1/conversations/{id}/accept"),
    ("POST", "/api/v1/conversations/{id}/reject"),
    ("POST", "/api/v1/conversations/{id}/messages"),
    ("PUT", "/api/v1/conversations/{id}/draft"),
    ("POST", "/api/v1/conversations/{id}/metadata"),
    ("POST", "/api/v1/conversations/{id}/end"),
    ("POST", "/api/v1/conversations/{id}/complete"),
    ("POST", "/api/v1/conversations/{id}/transfer"),
    ("POST", "/api/v1/conversations/{id}/consult"),
    ("POST", "/api/v1/conversations/{id}/callback"),
    ("POST", "/api/v1/conversations/{id}/reassign"),
    ("GET", "/api/v1/queues/{id}/conversations"),
    ("POST", "/api/v1/queues/{id}/pick"),
    ("GET", "/api/v1/conversations/{id}"),
    ("GET", "/api/v1/groups/{group_id}"),
    ("GET", "/api/v1/conversations"),
    ("GET", "/api/v1/agents"),
    ("POST", "/api/v1/agents/{agent_id}/release"),
    ("GET", "/api/v1/alerts"),
    ("GET", "/api/v1/queues"),
    ("GET", "/api/v1/dashboard/ws"),
    ("POST", "/api/v1/chats"),
    ("GET", "/api/v1/chat"),
    ("POST", "/api/v1/chat/messages"),
    ("POST", "/api/v1/chat/end"),
    ("GET", "/api/v1/chat/ws"),
    ("POST", "/api/v1/inbound/messages"),
    ("POST", "/api/v1/inbound/emails"),
    ("POST", "/api/v1/inbound/calls"),
    ("POST", "/api/v1/inbound/calls/{id}/hangup"),
    ("GET", "/api/v1/backup"),
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
];

/// GET /api/v1/openapi.json — this document.
pub async fn document() -> Response {
    Json(spec()).into_response()
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn array_of(name: &str) -> Value {
    json!({ "type": "array", "items": schema_ref(name) })
}

fn json_content(schema: Value) -> Value {
    json!({ "application/json": { "schema": schema } })
}

/// Who may call an operation.
#[derive(Clone, Copy)]
enum Auth {
    Anyone,
    Session,
    Customer,
    ApiKey,
}

/// One operation: tag, summary, description, caller, request body schema, success status and
/// body, and the error statuses it can answer.
#[allow(clippy::too_many_arguments)]
fn op(
    tag: &str,
    id: &str,
    summary: &str,
    description: &str,
    auth: Auth,
    body: Option<Value>,
    ok: (u16, &str, Option<Value>),
    errors: &[u16],
) -> Value {
    let mut o = Map::new();
    o.insert("tags".into(), json!([tag]));
    o.insert("operationId".into(), json!(id));
    o.insert("summary".into(), json!(summary));
    o.insert("description".into(), json!(description));
    let security = match auth {
        Auth::Anyone => json!([]),
        Auth::Session => json!([{ "sessionToken": [] }]),
        Auth::Customer => json!([{ "customerToken": [] }]),
        Auth::ApiKey => json!([{ "apiKey": [] }]),
    };
    o.insert("security".into(), security);
    if let Some(schema) = body {
        o.insert(
            "requestBody".into(),
            json!({ "required": true, "content": json_content(schema) }),
        );
    }
    let mut responses = Map::new();
    let (status, text, schema) = ok;
    let mut success = Map::new();
    success.insert("description".into(), json!(text));
    if let Some(schema) = schema {
        success.insert("content".into(), json_content(schema));
    }
    responses.insert(status.to_string(), Value::Object(success));
    for e in errors {
        let name = match e {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            405 => "MethodNotAllowed",
            409 => "Conflict",
            413 => "PayloadTooLarge",
            429 => "RateLimited",
            _ => "Unavailable",
        };
        responses.insert(
            e.to_string(),
            json!({ "$ref": format!("#/components/responses/{name}") }),
        );
    }
    o.insert("responses".into(), Value::Object(responses));
    Value::Object(o)
}

fn path_param(name: &str, description: &str, uuid: bool) -> Value {
    let schema = if uuid {
        json!({ "type": "string", "format": "uuid" })
    } else {
        json!({ "type": "string" })
    };
    json!({ "name": name, "in": "path", "required": true, "description": description, "schema": schema })
}

/// A path item with one conversation `{id}` parameter and one operation.
fn conversation_action(method: &str, operation: Value) -> Value {
    json!({
        "parameters": [path_param("id", "Conversation id (UUID).", true)],
        method: operation,
    })
}

/// Standard errors of an authenticated action on a conversation.
const ACTION_ERRORS: &[u16] = &[400, 401, 403, 404, 409, 503];

fn websocket(tag: &str, id: &str, summary: &str, description: &str) -> Value {
    json!({ "get": {
        "tags": [tag],
        "operationId": id,
        "summary": summary,
        "description": description,
        "security": [{ "tokenQuery": [] }],
        "parameters": [{
            "name": "token", "in": "query", "required": true,
            "description": "The session or customer token.",
            "schema": { "type": "string" }
        }],
        "responses": {
            "101": { "description": "Switching Protocols: the WebSocket is open." },
            "400": { "$ref": "#/components/responses/BadRequest" },
            "401": { "$ref": "#/components/responses/Unauthorized" },
            "403": { "$ref": "#/components/responses/Forbidden" },
            "429": { "$ref": "#/components/responses/RateLimited" }
        }
    }})
}

fn paths() -> Value {
    let conv = || Some(schema_ref("Conversation"));
    let okay = || Some(schema_ref("Ok"));
    let entries: Vec<(&str, Value)> = vec![
        (
            "/api/v1/login",
            json!({ "post": op("sessions", "login", "Log in",
            "Checks the password of an agent or supervisor and opens a session. An agent with a live session (connected or in its grace period) takes it over: same session id, new token, the old token is revoked and an old panel socket is closed with code 4001. Limited per client address (`limits.login_per_minute`).",
            Auth::Anyone, Some(schema_ref("LoginRequest")),
            (200, "Logged in.", Some(schema_ref("LoginResponse"))), &[400, 401, 413, 429, 503]) }),
        ),
        (
            "/api/v1/logout",
            json!({ "post": op("sessions", "logout", "Log out",
            "Ends the caller's session at once. An agent is refused with 409 `conversations_open` while it has voice or chat conversations offered, in process or in wrap-up (email may stay assigned).",
            Auth::Session, None, (200, "Logged out.", okay()), &[401, 403, 409, 503]) }),
        ),
        (
            "/api/v1/agent/state",
            json!({ "get": op("agent", "agentState", "The agent snapshot",
            "Session, presence, capabilities, banners, every conversation assigned or offered to the agent and not handled (with chat transcripts) and the unsaved drafts.",
            Auth::Session, None, (200, "The snapshot.", Some(schema_ref("AgentSnapshot"))), &[401, 403, 503]) }),
        ),
        (
            "/api/v1/agent/presence",
            json!({ "put": op("agent", "setPresence", "Set presence",
            "`ready` makes the agent eligible for offers; `not_ready` stops new offers.",
            Auth::Session, Some(schema_ref("PresenceBody")),
            (200, "The presence now in force.", Some(schema_ref("PresenceBody"))), &[400, 401, 403, 503]) }),
        ),
        (
            "/api/v1/agent/ws",
            json!(websocket(
                "agent",
                "agentSocket",
                "The agent panel WebSocket",
                "The panel connection (docs/sessions.md). First frame `{\"type\":\"snapshot\", ...AgentSnapshot}`, then panel events, one JSON object per text frame: `conversation` `{conversation}`, `message` `{conversation_id, message}`, `capabilities` `{capabilities}`, `banners` `{banners}`, `presence` `{presence}`, `session` `{state, reason}`. The client may send `{\"type\":\"ping\"}` (answered `{\"type\":\"pong\"}`). The server pings every `resilience.heartbeat_interval`; a socket silent for `resilience.heartbeat_timeout` is lost, which starts the session's grace period. Close code 4001: the session was taken over by a new login."
            )),
        ),
        (
            "/api/v1/conversations/{id}/accept",
            json!(conversation_action(
                "post",
                op(
                    "conversations",
                    "accept",
                    "Accept an offer",
                    "The agent the conversation is offered to takes it: `in_process`. Anyone else gets 409 `not_offered_to_you`.",
                    Auth::Session,
                    None,
                    (200, "The conversation.", conv()),
                    ACTION_ERRORS
                )
            )),
        ),
        (
            "/api/v1/conversations/{id}/reject",
            json!(conversation_action(
                "post",
                op(
                    "conversations",
                    "reject",
                    "Reject an offer",
                    "The offer goes back to the queue, keeping its arrival time; it is not offered to this agent again automatically.",
                    Auth::Session,
                    None,
                    (200, "The conversation.", conv()),
                    ACTION_ERRORS
                )
            )),
        ),
        (
            "/api/v1/conversations/{id}/messages",
            json!(conversation_action(
                "post",
                op(
                    "conversations",
                    "sendMessage",
                    "Send a message",
                    "Its agent writes to the customer: a chat message, or an email/sms/social reply delivered through the outbound webhook. Text is trimmed; empty is 400, longer than `limits.max_message_chars` is 413.",
                    Auth::Session,
                    Some(schema_ref("TextBody")),
                    (200, "Sent.", okay()),
                    &[400, 401, 403, 404, 409, 413, 503]
                )
            )),
        ),
        (
            "/api/v1/conversations/{id}/draft",
            json!(conversation_action(
                "put",
                op(
                    "conversations",
                    "saveDraft",
                    "Save a draft",
                    "Unsaved script answers and memo, kept in the agent's session through a connection loss and a restart, discarded when the session ends.",
                    Auth::Session,
                    Some(schema_ref("Metadata")),
                    (200, "Stored.", okay()),
                    &[400, 401, 403, 404, 409, 413, 503]
                )
            )),
        ),
        (
            "/api/v1/conversations/{id}/metadata",
            json!(conversation_action(
                "post",
                op(
                    "conversations",
                    "saveMetadata",
                    "Save metadata",
                    "Copies script answers and memo into the conversation's `metadata` and clears the draft.",
                    Auth::Session,
                    Some(schema_ref("Metadata")),
                    (200, "The conversation.", conv()),
                    &[400, 401, 403, 404, 409, 413, 503]
                )
            )),
        ),
        (
            "/api/v1/conversations/{id}/end",
            json!(conversation_action(
                "post",
                op(
                    "conversations",
                    "end",
                    "End",
                    "Its agent ends the conversation: `wrap_up`, party `agent`, reason `AgentEnded`.",
                    Auth::Session,
                    None,
                    (200, "The conversation.", conv()),
                    ACTION_ERRORS
                )
            )),
        ),
        (
            "/api/v1/conversations/{id}/complete",
            json!(conversation_action(
                "post",
                op(
                    "conversations",
                    "complete",
                    "Complete the wrap-up",
                    "Its agent completes the wrap-up: `handled`.",
                    Auth::Session,
                    None,
                    (200, "The conversation.", conv()),
                    ACTION_ERRORS
                )
            )),
        ),
        (
            "/api/v1/conversations/{id}/transfer",
            json!(conversation_action(
                "post",
                op(
                    "conversations",
                    "transfer",
                    "Transfer",
                    "Exactly one of `queue` or `agent`. The original goes to `wrap_up` (`Transferred`); a new conversation of the same group is queued (arrival now) or offered to the agent. The customer thread follows.",
                    Auth::Session,
                    Some(schema_ref("Target")),
                    (200, "The new conversation.", conv()),
                    ACTION_ERRORS
                )
            )),
        ),
        (
            "/api/v1/conversations/{id}/consult",
            json!(conversation_action(
                "post",
                op(
                    "conversations",
                    "consult",
                    "Consult another agent",
                    "A new conversation of the same group (`consultation`) is offered to the agent; the original stays `in_process`.",
                    Auth::Session,
                    Some(schema_ref("ConsultBody")),
                    (200, "The consultation.", conv()),
                    ACTION_ERRORS
                )
            )),
        ),
        (
            "/api/v1/conversations/{id}/callback",
            json!(conversation_action(
                "post",
                op(
                    "conversations",
                    "callback",
                    "Call the customer back",
                    "After a dropped or ended call, its last agent starts an outbound voice conversation of the same group (`callback`), `in_process` at once. Needs voice capability.",
                    Auth::Session,
                    None,
                    (201, "The new conversation.", conv()),
                    ACTION_ERRORS
                )
            )),
        ),
        (
            "/api/v1/conversations/{id}/reassign",
            json!(conversation_action(
                "post",
                op(
                    "supervisor",
                    "reassign",
                    "Reassign (supervisor)",
                    "Exactly one of `queue` or `agent`. The original is closed (`handled`, party `system`, `Reassigned`); a new conversation of the group goes to the queue or is offered to the agent.",
                    Auth::Session,
                    Some(schema_ref("Target")),
                    (200, "The new conversation.", conv()),
                    ACTION_ERRORS
                )
            )),
        ),
        (
            "/api/v1/queues/{id}/conversations",
            json!({
                "parameters": [path_param("id", "Queue id.", false)],
                "get": op("queues", "queueConversations", "Waiting conversations of a queue",
                    "The `in_queue` conversations, first = next to be served. Member agents and supervisors.",
                    Auth::Session, None, (200, "The waiting conversations.", Some(array_of("Conversation"))), &[401, 403, 404, 503])
            }),
        ),
        (
            "/api/v1/queues/{id}/pick",
            json!({
                "parameters": [path_param("id", "Queue id.", false)],
                "post": op("queues", "pick", "Pick a waiting conversation",
                    "A member agent takes a waiting conversation of the queue within its capacity: `in_process` (`picked`).",
                    Auth::Session, Some(schema_ref("PickBody")), (200, "The conversation.", conv()), ACTION_ERRORS)
            }),
        ),
        (
            "/api/v1/conversations/{id}",
            json!({
                "parameters": [path_param("id", "Conversation id (UUID).", true)],
                "get": op("history", "conversationDetails", "Conversation Details",
                    "Every field, the `events` timeline and, for chat and email, the transcript in `messages`. Supervisors; an agent for conversations of groups it worked in.",
                    Auth::Session, None, (200, "The conversation with `events`.", conv()), &[400, 401, 403, 404, 503])
            }),
        ),
        (
            "/api/v1/groups/{group_id}",
            json!({
                "parameters": [path_param("group_id", "Group id (UUID).", true)],
                "get": op("history", "group", "A group",
                    "All conversations of the group (the first, transfers, consultations, requeues, callbacks), oldest first. Same readers as Conversation Details.",
                    Auth::Session, None, (200, "The group.", Some(schema_ref("Group"))), &[400, 401, 403, 404, 503])
            }),
        ),
        (
            "/api/v1/conversations",
            json!({ "get": {
                "tags": ["history"],
                "operationId": "search",
                "summary": "Search conversations (supervisor)",
                "description": "Every stored conversation matching all given filters, newest first. Empty parameters are ignored; unknown parameters and bad values are 400.",
                "security": [{ "sessionToken": [] }],
                "parameters": [
                    { "name": "status", "in": "query", "schema": schema_ref("Status") },
                    { "name": "queue", "in": "query", "schema": { "type": "string" } },
                    { "name": "agent", "in": "query", "description": "The conversation's current agent.", "schema": { "type": "string" } },
                    { "name": "channel", "in": "query", "schema": schema_ref("Channel") },
                    { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 0, "maximum": 1000, "default": 100 } },
                    { "name": "before", "in": "query", "description": "A conversation id: only older conversations (the next page; pass the last id of a page).", "schema": { "type": "string", "format": "uuid" } }
                ],
                "responses": {
                    "200": { "description": "Matches, newest first.", "content": json_content(array_of("Conversation")) },
                    "400": { "$ref": "#/components/responses/BadRequest" },
                    "401": { "$ref": "#/components/responses/Unauthorized" },
                    "403": { "$ref": "#/components/responses/Forbidden" },
                    "503": { "$ref": "#/components/responses/Unavailable" }
                }
            }}),
        ),
        (
            "/api/v1/agents",
            json!({ "get": op("supervisor", "agents", "Agents (supervisor)",
            "Each agent: session (with grace deadline), presence, capabilities, SIP registration, open conversation count.",
            Auth::Session, None, (200, "Every configured agent.", Some(array_of("Agent"))), &[401, 403, 503]) }),
        ),
        (
            "/api/v1/agents/{agent_id}/release",
            json!({
                "parameters": [path_param("agent_id", "Agent id.", false)],
                "post": op("supervisor", "releaseAgent", "Release an agent (supervisor)",
                    "Ends the agent's session at once, as if its grace period had just run out: chats are requeued keeping their arrival time (`AgentSessionLost`), wrap-ups completed, drafts dropped; emails stay. 409 `invalid_state` if the agent has no session.",
                    Auth::Session, None, (200, "Released.", okay()), &[401, 403, 404, 409, 503])
            }),
        ),
        (
            "/api/v1/alerts",
            json!({ "get": op("supervisor", "alerts", "Standing alerts (supervisor)",
            "The supervisor alerts that still hold, oldest first: `agent_in_grace`, `connection_unstable`, `session_lost`. The Dashboard stream sends `alert` and `alert_cleared` frames as they change.",
            Auth::Session, None, (200, "The standing alerts.", Some(array_of("Alert"))), &[401, 403, 503]) }),
        ),
        (
            "/api/v1/queues",
            json!({ "get": op("supervisor", "queues", "Queues (supervisor)",
            "Each queue: channel, waiting count, oldest arrival.",
            Auth::Session, None, (200, "Every configured queue.", Some(array_of("Queue"))), &[401, 403, 503]) }),
        ),
        (
            "/api/v1/dashboard/ws",
            json!(websocket(
                "supervisor",
                "dashboardSocket",
                "The Dashboard WebSocket",
                "Supervisors. First frame `{\"type\":\"snapshot\",\"agents\":[Agent],\"queues\":[Queue],\"alerts\":[Alert]}`, then `{\"type\":\"agent\",\"agent\":Agent}`, `{\"type\":\"queue\",\"queue\":Queue}` and `{\"type\":\"conversation\",\"conversation\":Conversation}` on every change, `{\"type\":\"alert\",\"alert\":Alert}` when an alert is raised and `{\"type\":\"alert_cleared\",\"id\":…}` when it no longer holds."
            )),
        ),
        (
            "/api/v1/chats",
            json!({ "post": op("customer", "startChat", "Start a web chat",
            "Anyone; limited per client address (`limits.chats_per_minute`). Returns the customer token for `/chat` and `/chat/ws`.",
            Auth::Anyone, Some(schema_ref("StartChatRequest")),
            (201, "The chat started.", Some(schema_ref("ChatStarted"))), &[400, 404, 413, 429, 503]) }),
        ),
        (
            "/api/v1/chat",
            json!({ "get": op("customer", "chatState", "The customer's chat",
            "Transcript, status, queue position (1 = next) and agent name.",
            Auth::Customer, None, (200, "The chat.", Some(schema_ref("ChatSnapshot"))), &[401, 403, 503]) }),
        ),
        (
            "/api/v1/chat/messages",
            json!({ "post": op("customer", "chatMessage", "Write in the chat",
            "Text is trimmed; empty is 400, longer than `limits.max_message_chars` is 413.",
            Auth::Customer, Some(schema_ref("TextBody")), (200, "Sent.", okay()), &[400, 401, 403, 409, 413, 503]) }),
        ),
        (
            "/api/v1/chat/end",
            json!({ "post": op("customer", "chatEnd", "Leave the chat",
            "In process: `wrap_up` (`CustomerEnded`); still waiting or offered: `abandoned` (`CustomerAbandoned`).",
            Auth::Customer, None, (200, "Left.", okay()), &[401, 403, 409, 503]) }),
        ),
        (
            "/api/v1/chat/ws",
            json!(websocket(
                "customer",
                "chatSocket",
                "The customer chat WebSocket",
                "First frame `{\"type\":\"snapshot\", ...ChatSnapshot}`, then `{\"type\":\"message\",\"message\":Message}` and `{\"type\":\"status\",\"status\",\"position\",\"agent_name\"}`. The customer sends `{\"type\":\"message\",\"text\"}` or `{\"type\":\"end\"}`. A requeued or transferred chat keeps the same token and socket."
            )),
        ),
        (
            "/api/v1/inbound/messages",
            json!({ "post": op("integrations", "inboundMessage", "Inbound sms or social message",
            "Appended to the open thread of (`medium`, `from`), or a new chat conversation in `queue` (a chat queue).",
            Auth::ApiKey, Some(schema_ref("InboundMessage")), (200, "The conversation carrying the thread.", conv()), &[400, 401, 404, 413, 503]) }),
        ),
        (
            "/api/v1/inbound/emails",
            json!({ "post": op("integrations", "inboundEmail", "Inbound email",
            "A new email conversation in `queue` (an email queue). Subject and text together are limited to `limits.max_email_bytes`.",
            Auth::ApiKey, Some(schema_ref("InboundEmail")), (201, "The new conversation.", conv()), &[400, 401, 404, 413, 503]) }),
        ),
        (
            "/api/v1/inbound/calls",
            json!({ "post": op("integrations", "inboundCall", "Inbound call",
            "A call waiting in `queue` (a voice queue), offered to an eligible agent with a live SIP registration. Its `id` is what hangup takes.",
            Auth::ApiKey, Some(schema_ref("InboundCall")), (201, "The new conversation.", conv()), &[400, 401, 404, 503]) }),
        ),
        (
            "/api/v1/inbound/calls/{id}/hangup",
            json!(conversation_action(
                "post",
                op(
                    "integrations",
                    "hangup",
                    "The caller hung up",
                    "In process: `wrap_up` (`CustomerEnded`); waiting or offered: `abandoned` (`CustomerAbandoned`).",
                    Auth::ApiKey,
                    None,
                    (200, "The conversation.", conv()),
                    &[400, 401, 404, 409, 503]
                )
            )),
        ),
        (
            "/api/v1/backup",
            json!({ "get": {
                "tags": ["operations"],
                "operationId": "backup",
                "summary": "Download a backup (supervisor)",
                "description": "A consistent copy of the whole store as a redb file. Restore: stop the service, replace `<data_dir>/switchboard.redb` with the file, start.",
                "security": [{ "sessionToken": [] }],
                "responses": {
                    "200": {
                        "description": "The redb file (`Content-Disposition: attachment; filename=\"switchboard-<time>.redb\"`).",
                        "content": { "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } }
                    },
                    "401": { "$ref": "#/components/responses/Unauthorized" },
                    "403": { "$ref": "#/components/responses/Forbidden" },
                    "503": { "$ref": "#/components/responses/Unavailable" }
                }
            }}),
        ),
        (
            "/api/v1/openapi.json",
            json!({ "get": op("operations", "openapi", "This document",
            "The OpenAPI 3.0 description of the HTTP API.",
            Auth::Anyone, None, (200, "The document.", Some(json!({ "type": "object" }))), &[]) }),
        ),
        (
            "/healthz",
            json!({ "get": op("operations", "healthz", "Liveness",
            "The process is up.", Auth::Anyone, None,
            (200, "Alive.", Some(json!({ "type": "object", "properties": { "status": { "type": "string", "enum": ["ok"] } } }))), &[]) }),
        ),
        (
            "/readyz",
            json!({ "get": op("operations", "readyz", "Readiness",
            "The core answers within one second.", Auth::Anyone, None,
            (200, "Ready.", Some(json!({ "type": "object", "properties": { "status": { "type": "string", "enum": ["ready"] } } }))), &[503]) }),
        ),
        (
            "/metrics",
            json!({ "get": {
                "tags": ["operations"],
                "operationId": "metrics",
                "summary": "Prometheus metrics",
                "description": "Text exposition of every `switchboard_` counter and gauge. Loopback clients only.",
                "security": [],
                "responses": {
                    "200": { "description": "Metrics.", "content": { "text/plain": { "schema": { "type": "string" } } } },
                    "403": { "$ref": "#/components/responses/Forbidden" },
                    "503": { "$ref": "#/components/responses/Unavailable" }
                }
            }}),
        ),
    ];
    Value::Object(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

fn nullable(mut schema: Value) -> Value {
    if let Some(o) = schema.as_object_mut() {
        o.insert("nullable".into(), json!(true));
    }
    schema
}

fn timestamp() -> Value {
    json!({ "type": "string", "format": "date-time", "description": "RFC 3339 UTC with milliseconds, e.g. 2026-11-23T10:15:02.120Z." })
}

fn uuid() -> Value {
    json!({ "type": "string", "format": "uuid" })
}

fn schemas() -> Value {
    let entries: Vec<(&str, Value)> = vec![
        (
            "Error",
            json!({
                "type": "object",
                "required": ["error", "message"],
                "properties": {
                    "error": { "type": "string", "description": "snake_case code: invalid_request, unauthorized, forbidden, not_found, conversations_open, not_offered_to_you, capacity_reached, invalid_state, payload_too_large, rate_limited, unavailable, method_not_allowed." },
                    "message": { "type": "string" }
                }
            }),
        ),
        (
            "Ok",
            json!({ "type": "object", "required": ["ok"], "properties": { "ok": { "type": "boolean", "enum": [true] } } }),
        ),
        (
            "Channel",
            json!({ "type": "string", "enum": ["voice", "chat", "email"] }),
        ),
        (
            "Medium",
            json!({ "type": "string", "enum": ["voice", "email", "webchat", "sms", "social"] }),
        ),
        (
            "Status",
            json!({ "type": "string", "enum": ["in_queue", "offered", "in_process", "wrap_up", "handled", "abandoned"] }),
        ),
        (
            "Presence",
            json!({ "type": "string", "enum": ["ready", "not_ready"] }),
        ),
        (
            "SessionState",
            json!({ "type": "string", "enum": ["connected", "disconnected"] }),
        ),
        (
            "DisconnectParty",
            json!({ "type": "string", "enum": ["agent", "customer", "system"] }),
        ),
        (
            "DisconnectReason",
            json!({ "type": "string", "enum": ["CustomerEnded", "CustomerAbandoned", "AgentEnded", "AgentConnectionLost", "SipRegistrationLost", "AgentSessionLost", "Transferred", "Reassigned"] }),
        ),
        (
            "Customer",
            json!({
                "type": "object",
                "required": ["name", "address"],
                "properties": {
                    "name": { "type": "string" },
                    "address": { "type": "string", "description": "Phone number, email address or web chat name." }
                }
            }),
        ),
        (
            "Origin",
            json!({
                "type": "object",
                "required": ["kind", "previous"],
                "properties": {
                    "kind": { "type": "string", "enum": ["inbound", "requeue", "transfer", "consultation", "callback"] },
                    "previous": nullable(uuid())
                }
            }),
        ),
        (
            "Metadata",
            json!({
                "type": "object",
                "required": ["script", "memo"],
                "properties": {
                    "script": { "type": "object", "additionalProperties": { "type": "string" }, "description": "Script answers by field." },
                    "memo": { "type": "string" }
                }
            }),
        ),
        (
            "Message",
            json!({
                "type": "object",
                "required": ["id", "from", "text", "at"],
                "properties": {
                    "id": uuid(),
                    "from": { "type": "string", "enum": ["agent", "customer", "system"] },
                    "text": { "type": "string" },
                    "at": timestamp(),
                    "delivery": { "type": "string", "enum": ["pending", "delivered", "failed"], "description": "Agent replies sent through an outbound webhook." }
                }
            }),
        ),
        (
            "Event",
            json!({
                "type": "object",
                "required": ["at", "event", "agent", "detail"],
                "properties": {
                    "at": timestamp(),
                    "event": { "type": "string", "enum": ["queued", "offered", "offer_rejected", "offer_timeout", "offer_withdrawn", "accepted", "picked", "agent_connection_lost", "agent_reconnected", "ended", "metadata_saved", "wrap_up_completed", "session_lost", "requeued", "transferred", "consultation_started", "callback_started", "reassigned", "abandoned", "prompt_sent"] },
                    "agent": nullable(json!({ "type": "string" })),
                    "detail": nullable(json!({ "type": "string" }))
                }
            }),
        ),
        (
            "Conversation",
            json!({
                "type": "object",
                "required": ["id", "group_id", "channel", "medium", "queue", "status", "agent", "customer", "origin", "queue_arrival_time", "created_at", "ended_at", "disconnect_party", "disconnect_reason", "metadata", "subject", "offer_expires_at"],
                "properties": {
                    "id": uuid(),
                    "group_id": uuid(),
                    "channel": schema_ref("Channel"),
                    "medium": schema_ref("Medium"),
                    "queue": { "type": "string" },
                    "status": schema_ref("Status"),
                    "agent": nullable(json!({ "type": "string" })),
                    "customer": schema_ref("Customer"),
                    "origin": schema_ref("Origin"),
                    "queue_arrival_time": timestamp(),
                    "created_at": timestamp(),
                    "ended_at": nullable(timestamp()),
                    "disconnect_party": nullable(schema_ref("DisconnectParty")),
                    "disconnect_reason": nullable(schema_ref("DisconnectReason")),
                    "metadata": schema_ref("Metadata"),
                    "subject": nullable(json!({ "type": "string", "description": "Email subject." })),
                    "offer_expires_at": nullable(timestamp()),
                    "messages": { "type": "array", "items": schema_ref("Message"), "description": "The transcript (chat and email), in agent-facing views and Conversation Details." },
                    "events": { "type": "array", "items": schema_ref("Event"), "description": "The event timeline, in Conversation Details." }
                }
            }),
        ),
        (
            "Group",
            json!({
                "type": "object",
                "required": ["group_id", "conversations"],
                "properties": { "group_id": uuid(), "conversations": array_of("Conversation") }
            }),
        ),
        (
            "Capabilities",
            json!({
                "type": "object",
                "required": ["voice", "chat", "email"],
                "properties": { "voice": { "type": "boolean" }, "chat": { "type": "boolean" }, "email": { "type": "boolean" } }
            }),
        ),
        (
            "Banner",
            json!({
                "type": "object",
                "required": ["code", "text"],
                "properties": { "code": { "type": "string", "example": "sip_registration_lost" }, "text": { "type": "string" } }
            }),
        ),
        (
            "AgentSnapshot",
            json!({
                "type": "object",
                "required": ["session", "presence", "capabilities", "banners", "conversations", "drafts"],
                "properties": {
                    "session": {
                        "type": "object",
                        "required": ["id", "state", "agent_id"],
                        "properties": { "id": uuid(), "state": schema_ref("SessionState"), "agent_id": { "type": "string" } }
                    },
                    "presence": schema_ref("Presence"),
                    "capabilities": schema_ref("Capabilities"),
                    "banners": array_of("Banner"),
                    "conversations": array_of("Conversation"),
                    "drafts": { "type": "object", "additionalProperties": schema_ref("Metadata"), "description": "Unsaved metadata by conversation id." }
                }
            }),
        ),
        (
            "ChatSnapshot",
            json!({
                "type": "object",
                "required": ["conversation_id", "group_id", "messages", "status", "position", "agent_name"],
                "properties": {
                    "conversation_id": uuid(),
                    "group_id": uuid(),
                    "messages": array_of("Message"),
                    "status": schema_ref("Status"),
                    "position": nullable(json!({ "type": "integer", "minimum": 1, "description": "1 = next to be served; null unless waiting." })),
                    "agent_name": nullable(json!({ "type": "string" }))
                }
            }),
        ),
        (
            "Agent",
            json!({
                "type": "object",
                "required": ["agent_id", "name", "queues", "session", "presence", "capabilities", "banners", "sip", "open_conversations"],
                "properties": {
                    "agent_id": { "type": "string" },
                    "name": { "type": "string" },
                    "queues": { "type": "array", "items": { "type": "string" } },
                    "session": nullable(json!({
                        "type": "object",
                        "required": ["id", "state", "disconnected_at", "deadline"],
                        "properties": {
                            "id": uuid(),
                            "state": schema_ref("SessionState"),
                            "disconnected_at": nullable(timestamp()),
                            "deadline": nullable(timestamp())
                        }
                    })),
                    "presence": schema_ref("Presence"),
                    "capabilities": schema_ref("Capabilities"),
                    "banners": array_of("Banner"),
                    "sip": {
                        "type": "object",
                        "required": ["registered", "expires_at"],
                        "properties": { "registered": { "type": "boolean" }, "expires_at": nullable(timestamp()) }
                    },
                    "open_conversations": { "type": "integer", "minimum": 0 }
                }
            }),
        ),
        (
            "Alert",
            json!({
                "type": "object",
                "required": ["id", "kind", "agent", "at", "text", "conversations"],
                "properties": {
                    "id": { "type": "string", "format": "uuid" },
                    "kind": { "type": "string", "enum": ["agent_in_grace", "connection_unstable", "session_lost"] },
                    "agent": { "type": "string" },
                    "at": timestamp(),
                    "text": { "type": "string" },
                    "conversations": { "type": "array", "items": { "type": "string", "format": "uuid" } }
                }
            }),
        ),
        (
            "Queue",
            json!({
                "type": "object",
                "required": ["id", "name", "channel", "waiting", "oldest_arrival"],
                "properties": {
                    "id": { "type": "string" },
                    "name": { "type": "string" },
                    "channel": schema_ref("Channel"),
                    "waiting": { "type": "integer", "minimum": 0 },
                    "oldest_arrival": nullable(timestamp())
                }
            }),
        ),
        (
            "LoginRequest",
            json!({
                "type": "object",
                "required": ["username", "password"],
                "additionalProperties": false,
                "properties": { "username": { "type": "string" }, "password": { "type": "string", "format": "password" } }
            }),
        ),
        (
            "LoginResponse",
            json!({
                "type": "object",
                "required": ["token", "role", "agent_id", "session_id"],
                "properties": {
                    "token": { "type": "string", "description": "Bearer token (256-bit, hex)." },
                    "role": { "type": "string", "enum": ["agent", "supervisor"] },
                    "agent_id": { "type": "string", "description": "The user's id." },
                    "session_id": uuid()
                }
            }),
        ),
        (
            "PresenceBody",
            json!({
                "type": "object",
                "required": ["presence"],
                "additionalProperties": false,
                "properties": { "presence": schema_ref("Presence") }
            }),
        ),
        (
            "TextBody",
            json!({
                "type": "object",
                "required": ["text"],
                "additionalProperties": false,
                "properties": { "text": { "type": "string", "minLength": 1 } }
            }),
        ),
        (
            "Target",
            json!({
                "type": "object",
                "description": "Exactly one of `queue` or `agent`.",
                "additionalProperties": false,
                "properties": { "queue": { "type": "string" }, "agent": { "type": "string" } },
                "oneOf": [ { "required": ["queue"] }, { "required": ["agent"] } ]
            }),
        ),
        (
            "ConsultBody",
            json!({
                "type": "object",
                "required": ["agent"],
                "additionalProperties": false,
                "properties": { "agent": { "type": "string" } }
            }),
        ),
        (
            "PickBody",
            json!({
                "type": "object",
                "required": ["conversation_id"],
                "additionalProperties": false,
                "properties": { "conversation_id": uuid() }
            }),
        ),
        (
            "StartChatRequest",
            json!({
                "type": "object",
                "required": ["queue", "name"],
                "additionalProperties": false,
                "properties": {
                    "queue": { "type": "string", "description": "A chat queue." },
                    "name": { "type": "string", "minLength": 1, "maxLength": 100 },
                    "text": { "type": "string", "description": "An optional first message." }
                }
            }),
        ),
        (
            "ChatStarted",
            json!({
                "type": "object",
                "required": ["conversation_id", "group_id", "token"],
                "properties": {
                    "conversation_id": uuid(),
                    "group_id": uuid(),
                    "token": { "type": "string", "description": "The customer token." }
                }
            }),
        ),
        (
            "InboundMessage",
            json!({
                "type": "object",
                "required": ["medium", "from", "text", "queue"],
                "additionalProperties": false,
                "properties": {
                    "medium": { "type": "string", "enum": ["sms", "social"] },
                    "from": { "type": "string", "description": "Phone number or social handle." },
                    "text": { "type": "string" },
                    "queue": { "type": "string" }
                }
            }),
        ),
        (
            "InboundEmail",
            json!({
                "type": "object",
                "required": ["from", "subject", "text", "queue"],
                "additionalProperties": false,
                "properties": {
                    "from": { "type": "string", "format": "email" },
                    "subject": { "type": "string" },
                    "text": { "type": "string" },
                    "queue": { "type": "string" }
                }
            }),
        ),
        (
            "InboundCall",
            json!({
                "type": "object",
                "required": ["from", "queue"],
                "additionalProperties": false,
                "properties": { "from": { "type": "string", "description": "Caller number." }, "queue": { "type": "string" } }
            }),
        ),
    ];
    Value::Object(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

fn error_response(description: &str) -> Value {
    json!({ "description": description, "content": json_content(schema_ref("Error")) })
}

/// The whole document.
pub fn spec() -> Value {
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "switchboard",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Contact-center routing (voice, chat, email) that loses no customer when an agent's connection drops. Errors are `{\"error\": \"<snake_case_code>\", \"message\": \"<text>\"}`; never a 500 for bad input. Times are RFC 3339 UTC strings with millisecond precision."
        },
        "servers": [{ "url": "/" }],
        "tags": [
            { "name": "sessions" }, { "name": "agent" }, { "name": "conversations" },
            { "name": "queues" }, { "name": "history" }, { "name": "supervisor" },
            { "name": "customer" }, { "name": "integrations" }, { "name": "operations" }
        ],
        "paths": paths(),
        "components": {
            "securitySchemes": {
                "sessionToken": { "type": "http", "scheme": "bearer", "description": "The token from `POST /api/v1/login` (agent or supervisor)." },
                "customerToken": { "type": "http", "scheme": "bearer", "description": "The customer token from `POST /api/v1/chats`." },
                "apiKey": { "type": "http", "scheme": "bearer", "description": "An integration key; the server stores only its SHA-256 (`[[api_keys]] key_sha256`)." },
                "tokenQuery": { "type": "apiKey", "in": "query", "name": "token", "description": "WebSockets take the session or customer token as `?token=`." }
            },
            "responses": {
                "BadRequest": error_response("`invalid_request`: malformed JSON, wrong types, missing fields, bad ids or values."),
                "Unauthorized": error_response("`unauthorized`: missing, unknown or revoked credentials."),
                "Forbidden": error_response("`forbidden`: the caller may not do this."),
                "NotFound": error_response("`not_found`: no such conversation, group, queue or agent."),
                "MethodNotAllowed": error_response("`method_not_allowed`."),
                "Conflict": error_response("`conversations_open`, `not_offered_to_you`, `capacity_reached`, `invalid_state`: not possible in the current state."),
                "PayloadTooLarge": error_response("`payload_too_large`: the body or a text is over its limit."),
                "RateLimited": error_response("`rate_limited`: too many requests from this address."),
                "Unavailable": error_response("`unavailable`: shutting down, or the store cannot be written.")
            },
            "schemas": schemas()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::driver::{Clock, Driver};
    use crate::http::{AppState, router};
    use crate::store::Store;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use std::sync::Arc;
    use tower::ServiceExt;

    fn state() -> AppState {
        let cfg = Arc::new(Config::default());
        let store = Arc::new(Store::in_memory().unwrap());
        let (driver, handle) =
            Driver::start(cfg.clone(), store.clone(), Clock::manual(0), None).unwrap();
        tokio::spawn(driver.run(std::future::pending::<()>()));
        let metrics = Arc::new(crate::metrics::Metrics::new(handle.metrics.clone()));
        AppState::new(
            handle,
            store,
            crate::config::SharedConfig::new(cfg),
            metrics,
        )
    }

    #[test]
    fn every_route_is_documented_with_its_method() {
        let doc = spec();
        assert_eq!(doc["openapi"], "3.0.3");
        for (method, path) in ROUTES {
            let item = &doc["paths"][*path];
            assert!(item.is_object(), "{path} is not in the OpenAPI paths");
            let op = &item[method.to_lowercase()];
            assert!(op.is_object(), "{method} {path} is not documented");
            assert!(
                op["responses"].is_object(),
                "{method} {path} has no responses"
            );
        }
        let documented: usize = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|item| {
                ["get", "put", "post", "delete", "patch"]
                    .iter()
                    .filter(|m| item.get(**m).is_some())
                    .count()
            })
            .sum();
        assert_eq!(
            documented,
            ROUTES.len(),
            "the document has operations ROUTES lacks"
        );
    }

    #[test]
    fn every_schema_reference_resolves() {
        let doc = spec();
        let text = doc.to_string();
        for part in text.split("\"$ref\":\"#/components/").skip(1) {
            let target = part.split('"').next().unwrap();
            let mut node = &doc["components"];
            for seg in target.split('/') {
                node = &node[seg];
            }
            assert!(node.is_object(), "dangling $ref #/components/{target}");
        }
    }

    #[tokio::test]
    async fn router_serves_every_listed_route() {
        let app = router(state());
        let id = "0190d5a0-0000-7000-8000-000000000000";
        let mut wrong = Vec::new();
        for (method, path) in ROUTES {
            let uri = path.replace("{id}", id).replace("{group_id}", id);
            let req = Request::builder()
                .method(*method)
                .uri(&uri)
                .body(Body::empty())
                .unwrap();
            let status = app.clone().oneshot(req).await.unwrap().status();
            if status == StatusCode::NOT_FOUND
                || status == StatusCode::METHOD_NOT_ALLOWED
                || status.is_server_error()
            {
                wrong.push(format!("{method} {uri} answered {status}"));
            }
        }
        assert!(wrong.is_empty(), "routes not served: {wrong:#?}");
    }

    #[tokio::test]
    async fn unknown_api_paths_and_wrong_methods_answer_json_errors() {
        let app = router(state());
        for (method, uri, code) in [
            ("GET", "/api/v1/nope", 404),
            ("DELETE", "/api/v1/agents", 405),
        ] {
            let req = Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::empty())
                .unwrap();
            let resp = app.clone().oneshot(req).await.unwrap();
            assert_eq!(resp.status().as_u16(), code, "{method} {uri}");
            let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
                .await
                .unwrap();
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            assert!(v["error"].is_string() && v["message"].is_string(), "{v}");
        }
    }
}
