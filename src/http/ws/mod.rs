//! HTTP adapter: the three WebSockets of docs/api.md#websockets — the agent panel
//! (`/api/v1/agent/ws`), the customer chat (`/api/v1/chat/ws`) and the supervisor Dashboard
//! (`/api/v1/dashboard/ws`). Each authenticates before the upgrade, attaches to the driver,
//! sends its snapshot and then runs the generic loop of [`conn`]. No rule lives here: the
//! core decides, the driver fans frames out; this layer translates frames.

pub mod conn;

use super::error::ApiError;
use super::extract::WsBearer;
use super::state::AppState;
use crate::config::{Config, LimitsConfig};
use crate::core::model::TokenHash;
use crate::core::view::{ChatEvent, PanelEvent};
use crate::core::{Command, LossCause, Principal, Rejection, Reply};
use crate::driver::{CallError, FrameRx, Handle};
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use conn::{ClientFrames, End, Heartbeat, PONG, error_frame};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Close code: the token is unknown or revoked (final for clients).
pub const CLOSE_UNAUTHORIZED: u16 = 4401;
/// Close code: the token belongs to the wrong kind of user.
pub const CLOSE_FORBIDDEN: u16 = 4403;
/// Close code: the session already has `limits.max_sockets_per_session` panel sockets.
pub const CLOSE_TOO_MANY_SOCKETS: u16 = 4409;
/// Close code: the server cannot serve the socket now (shutting down, store failure).
pub const CLOSE_UNAVAILABLE: u16 = 1011;

/// The WebSocket routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(agent_ws))
        .routes(routes!(chat_ws))
        .routes(routes!(dashboard_ws))
}

/// Which socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Panel,
    Chat,
    Dashboard,
}

/// GET /api/v1/agent/ws?token= — the agent panel socket: the snapshot, then panel events;
/// the socket is the session's connection (its loss starts the grace period).
#[utoipa::path(
    get,
    path = "/api/v1/agent/ws",
    tag = "agent",
    params(("token" = Option<String>, Query, description = "The session token, where `Authorization: Bearer` cannot be sent.")),
    responses((status = 101, description = "Switching Protocols: the WebSocket is open.")),
    security(("tokenQuery" = []), ("sessionToken" = []))
)]
async fn agent_ws(
    State(state): State<AppState>,
    WsBearer(token): WsBearer,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    open(state, token, Kind::Panel, upgrade).await
}

/// GET /api/v1/chat/ws?token= — the customer's chat socket: the chat snapshot, then
/// `message` and `status` frames; takes `{"type":"message","text"}` and `{"type":"end"}`.
#[utoipa::path(
    get,
    path = "/api/v1/chat/ws",
    tag = "customer",
    params(("token" = Option<String>, Query, description = "The customer token, where `Authorization: Bearer` cannot be sent.")),
    responses((status = 101, description = "Switching Protocols: the WebSocket is open.")),
    security(("tokenQuery" = []), ("customerToken" = []))
)]
async fn chat_ws(
    State(state): State<AppState>,
    WsBearer(token): WsBearer,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    open(state, token, Kind::Chat, upgrade).await
}

/// GET /api/v1/dashboard/ws?token= — the supervisor Dashboard stream: a snapshot of agents
/// and queues, then `agent`, `queue` and `conversation` frames.
#[utoipa::path(
    get,
    path = "/api/v1/dashboard/ws",
    tag = "supervisor",
    params(("token" = Option<String>, Query, description = "The session token, where `Authorization: Bearer` cannot be sent.")),
    responses((status = 101, description = "Switching Protocols: the WebSocket is open.")),
    security(("tokenQuery" = []), ("sessionToken" = []))
)]
async fn dashboard_ws(
    State(state): State<AppState>,
    WsBearer(token): WsBearer,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    open(state, token, Kind::Dashboard, upgrade).await
}

/// Authenticates (401 / 403 as JSON, no upgrade), then upgrades with the `[limits]` sizes.
async fn open(
    state: AppState,
    token: TokenHash,
    kind: Kind,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let principal = match state.handle.call(Command::Authenticate { token }).await? {
        Reply::Principal(p) => p,
        _ => return Err(ApiError::unauthorized()),
    };
    match (kind, principal) {
        (Kind::Panel, Principal::Agent { .. })
        | (Kind::Chat, Principal::Customer { .. })
        | (Kind::Dashboard, Principal::Supervisor { .. }) => {}
        (Kind::Panel, _) => {
            return Err(ApiError::forbidden("the panel socket needs an agent token"));
        }
        (Kind::Chat, _) => {
            return Err(ApiError::forbidden(
                "the chat socket needs a customer chat token",
            ));
        }
        (Kind::Dashboard, _) => {
            return Err(ApiError::forbidden(
                "the dashboard socket needs a supervisor token",
            ));
        }
    }
    let upgrade =
        upgrade.map_err(|r| ApiError::new(r.status(), "invalid_request", r.body_text()))?;
    // The socket task keeps only the handle and the config: not the store, which a restart
    // must be able to reopen while old sockets are still closing.
    let (handle, cfg) = (state.handle.clone(), state.config());
    Ok(sized(upgrade, &cfg.limits)
        .on_upgrade(move |socket| serve(handle, cfg, token, kind, socket)))
}

/// Frame, message and buffer sizes from `[limits]`: small buffers keep idle sockets cheap.
fn sized(upgrade: WebSocketUpgrade, limits: &LimitsConfig) -> WebSocketUpgrade {
    upgrade
        .max_frame_size(limits.ws_max_frame_bytes)
        .max_message_size(limits.ws_max_message_bytes)
        .read_buffer_size(limits.ws_read_buffer_bytes)
        .write_buffer_size(limits.ws_write_buffer_bytes)
}

/// One upgraded socket: attach, snapshot, loop, detach (exactly once, whatever the end).
async fn serve(handle: Handle, cfg: Arc<Config>, token: TokenHash, kind: Kind, socket: WebSocket) {
    let (mut sink, stream) = socket.split();
    let heartbeat = Heartbeat {
        interval: cfg.resilience.heartbeat_interval,
        timeout: cfg.resilience.heartbeat_timeout,
    };
    let attached = attach(&handle, token, kind, &heartbeat).await;
    let (socket_id, first, frames) = match attached {
        Ok(a) => a,
        Err(e) => {
            let (code, reason) = refusal(&e);
            tracing::debug!(?kind, code, reason, "websocket attach refused");
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            let _ = tokio::time::timeout(heartbeat.timeout, sink.send(Message::Close(Some(frame))))
                .await;
            return;
        }
    };
    let clock = handle.clone();
    let now_ms = move || clock.now().mono;
    let end = match kind {
        Kind::Panel | Kind::Dashboard => {
            conn::run(sink, stream, first, frames, PingOnly, now_ms, heartbeat).await
        }
        Kind::Chat => {
            let input = Customer {
                handle: handle.clone(),
                token,
                max_chars: cfg.limits.max_message_chars,
            };
            conn::run(sink, stream, first, frames, input, now_ms, heartbeat).await
        }
    };
    let cause = match end {
        End::ClientClosed => LossCause::Closed,
        End::HeartbeatTimeout => LossCause::HeartbeatTimeout,
        End::Closed(conn::CLOSE_TOO_SLOW) => LossCause::TooSlow,
        // Closed by the server on the driver's request: the core has already let go of it.
        End::Closed(_) => LossCause::Closed,
        End::ClientGone | End::SendFailed => LossCause::Dropped,
    };
    handle.detach(socket_id, cause).await;
    match end {
        End::HeartbeatTimeout => tracing::info!(?kind, socket_id, "websocket heartbeat timeout"),
        _ => tracing::debug!(?kind, socket_id, ?end, "websocket ended"),
    }
}

/// Subscribes the socket; returns its id, the snapshot frame and the stream of later frames.
/// The panel's snapshot frame also carries the server's `heartbeat` (`interval_ms`,
/// `timeout_ms`), so the page can notice a dead link within the same timeout.
async fn attach(
    handle: &Handle,
    token: TokenHash,
    kind: Kind,
    heartbeat: &Heartbeat,
) -> Result<(u64, String, FrameRx), CallError> {
    Ok(match kind {
        Kind::Panel => {
            let (id, snapshot, rx) = handle.attach_panel(token).await?;
            let mut frame = serde_json::to_value(PanelEvent::Snapshot(snapshot))
                .unwrap_or(serde_json::Value::Null);
            if let Some(obj) = frame.as_object_mut() {
                obj.insert(
                    "heartbeat".into(),
                    serde_json::json!({
                        "interval_ms": heartbeat.interval.as_millis() as u64,
                        "timeout_ms": heartbeat.timeout.as_millis() as u64,
                    }),
                );
            }
            (id, frame.to_string(), rx)
        }
        Kind::Chat => {
            let (id, snapshot, rx) = handle.attach_chat(token).await?;
            (id, to_json(&ChatEvent::Snapshot(snapshot)), rx)
        }
        Kind::Dashboard => {
            let (id, snapshot, rx) = handle.attach_dashboard(token).await?;
            (id, to_json(&snapshot), rx)
        }
    })
}

/// The close code and reason for an attach the driver refused after the upgrade (the token
/// was revoked in between, or the session has too many panel sockets).
fn refusal(e: &CallError) -> (u16, &'static str) {
    match e {
        CallError::Rejected(Rejection::Conflict {
            code: "too_many_sockets",
            ..
        }) => (CLOSE_TOO_MANY_SOCKETS, "too many sockets for this session"),
        CallError::Rejected(Rejection::Forbidden(_)) => (CLOSE_FORBIDDEN, "wrong kind of token"),
        CallError::Rejected(_) => (CLOSE_UNAUTHORIZED, "token unknown or revoked"),
        CallError::Unavailable => (CLOSE_UNAVAILABLE, "server unavailable"),
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| String::from("{}"))
}

/// A text frame from a client (unknown extra fields are ignored).
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    Ping,
    Message { text: String },
    End,
}

/// Reads a client's text frame; the error is the message sent back in an `error` frame.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, String> {
    parse(text)
}

fn parse(text: &str) -> Result<ClientFrame, String> {
    let trimmed = text.trim();
    serde_json::from_str(trimmed).map_err(|e| {
        format!(r#"not a client frame ({e}); expected {{"type":"ping"}}, {{"type":"message","text":…}} or {{"type":"end"}}"#)
    })
}

fn api_error_frame(e: &ApiError) -> String {
    error_frame(e.code, &e.message)
}

/// Panel and Dashboard clients may only ping.
struct PingOnly;

impl ClientFrames for PingOnly {
    async fn on_text(&mut self, text: &str) -> Option<String> {
        Some(match parse(text) {
            Ok(ClientFrame::Ping) => PONG.to_string(),
            Ok(_) => error_frame(
                "invalid_request",
                r#"this socket only takes {"type":"ping"}; actions go through the REST API"#,
            ),
            Err(m) => error_frame("invalid_request", &m),
        })
    }
}

/// The customer's frames become core commands with the chat token.
struct Customer {
    handle: Handle,
    token: TokenHash,
    max_chars: usize,
}

impl ClientFrames for Customer {
    async fn on_text(&mut self, text: &str) -> Option<String> {
        let cmd = match parse(text) {
            Ok(ClientFrame::Ping) => return Some(PONG.to_string()),
            Ok(ClientFrame::Message { text }) => {
                if text.chars().count() > self.max_chars {
                    return Some(api_error_frame(&ApiError::too_large(format!(
                        "a message has at most {} characters (limits.max_message_chars)",
                        self.max_chars
                    ))));
                }
                Command::CustomerMessage {
                    token: self.token,
                    text,
                }
            }
            Ok(ClientFrame::End) => Command::CustomerEnd { token: self.token },
            Err(m) => return Some(error_frame("invalid_request", &m)),
        };
        // Success shows up as the frames the driver sends (the message, the new status).
        match self.handle.call(cmd).await {
            Ok(_) => None,
            Err(e) => Some(api_error_frame(&ApiError::from(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(text: &str) -> serde_json::Value {
        let reply = PingOnly.on_text(text).await.expect("an answer");
        serde_json::from_str(&reply).expect("json")
    }

    #[tokio::test]
    async fn panel_and_dashboard_frames_other_than_ping_get_an_error_frame() {
        assert_eq!(
            answer(r#"{"type":"ping"}"#).await,
            serde_json::json!({"type": "pong"})
        );
        assert_eq!(answer(r#" {"type":"ping"} "#).await["type"], "pong");
        for bad in [
            "",
            "null",
            "[]",
            "{}",
            r#"{"type":"end"}"#,
            r#"{"type":"message","text":"hi"}"#,
            r#"{"type":7}"#,
        ] {
            let v = answer(bad).await;
            assert_eq!(v["type"], "error", "{bad:?}");
            assert_eq!(v["error"], "invalid_request", "{bad:?}");
        }
    }

    #[test]
    fn refused_attach_maps_to_close_codes() {
        let code = |e: CallError| refusal(&e).0;
        assert_eq!(
            code(CallError::Rejected(Rejection::conflict(
                "too_many_sockets",
                "x"
            ))),
            CLOSE_TOO_MANY_SOCKETS
        );
        assert_eq!(
            code(CallError::Rejected(Rejection::Unauthorized)),
            CLOSE_UNAUTHORIZED
        );
        assert_eq!(
            code(CallError::Rejected(Rejection::Forbidden("x".into()))),
            CLOSE_FORBIDDEN
        );
        assert_eq!(code(CallError::Unavailable), CLOSE_UNAVAILABLE);
    }
}
