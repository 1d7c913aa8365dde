//! Demo layer: a stand-in for the SMS gateway, the social network and the mail server. The
//! demo points the server's `[outbound]` webhooks here; each agent reply that arrives is
//! handed to the simulation so the simulated customer can answer it.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use tokio::sync::mpsc;
use uuid::Uuid;

/// One agent reply, as the webhook received it.
#[derive(Debug, Clone, serde::Deserialize)]
pub(crate) struct Delivered {
    pub conversation_id: Uuid,
    pub medium: String,
    pub to: String,
    pub text: String,
}

/// The webhook receiver: `POST /outbound/{medium}`.
pub(crate) fn router(tx: mpsc::UnboundedSender<Delivered>) -> Router {
    Router::new()
        .route("/outbound/{medium}", post(receive))
        .with_state(tx)
}

/// POST /outbound/{medium} — an agent reply delivered by the server's outbound worker:
/// accepted (`204`) and passed on to the simulated customer.
async fn receive(
    State(tx): State<mpsc::UnboundedSender<Delivered>>,
    Path(_medium): Path<String>,
    axum::Json(item): axum::Json<Delivered>,
) -> StatusCode {
    let _ = tx.send(item);
    StatusCode::NO_CONTENT
}
