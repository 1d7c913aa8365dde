//! HTTP adapter: the axum router for docs/api.md and docs/pages.md — REST handlers, WebSocket
//! loops, embedded pages. Thin: every rule lives in the core; handlers authenticate, translate JSON
//! to a [`Command`](crate::core::Command), and map the answer back.
//!
//! Module order (each imports only from those before it): `state`, `error`, `extract`,
//! `reply`, then the handlers (`auth`, `ops`, `rest`, `ws`, `pages`), then this router;
//! `server` serves it.

pub mod auth;
pub mod error;
pub mod extract;
pub mod openapi;
pub mod ops;
pub mod pages;
pub mod reply;
pub mod rest;
pub mod server;
pub mod state;
pub mod ws;

pub use state::AppState;

use axum::extract::DefaultBodyLimit;
use axum::{Extension, Router};
use utoipa::openapi::OpenApi as Document;

/// The API routes (REST and WebSockets) and the OpenAPI document of exactly those routes.
fn api() -> (Router<AppState>, Document) {
    let (rest, mut doc) = rest::routes();
    let (ws, ws_doc) = ws::routes().split_for_parts();
    doc.merge(ws_doc);
    (rest.merge(ws), openapi::complete(doc))
}

/// The OpenAPI document `GET /api/v1/openapi.json` serves.
pub fn openapi_document() -> Document {
    api().1
}

/// The whole HTTP surface: `/api/v1` (REST and WebSockets), the pages, health and metrics.
pub fn router(state: AppState) -> Router {
    let limits = state.config().limits.clone();
    let (api, doc) = api();
    let published = openapi::Published(
        serde_json::to_string(&doc)
            .unwrap_or_else(|_| "{}".to_owned())
            .into(),
    );
    Router::new()
        .merge(api)
        .merge(pages::routes())
        .layer(Extension(published))
        .layer(DefaultBodyLimit::max(
            limits.max_body_bytes.max(limits.max_email_bytes + 4096),
        ))
        .with_state(state)
}
