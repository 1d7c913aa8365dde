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

use axum::Router;
use axum::extract::DefaultBodyLimit;

/// The whole HTTP surface: `/api/v1` (REST and WebSockets), the pages, health and metrics.
pub fn router(state: AppState) -> Router {
    let limits = state.config().limits.clone();
    Router::new()
        .merge(rest::routes())
        .merge(ws::routes())
        .merge(pages::routes())
        .layer(DefaultBodyLimit::max(
            limits.max_body_bytes.max(limits.max_email_bytes + 4096),
        ))
        .with_state(state)
}
