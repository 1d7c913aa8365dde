//! HTTP adapter: the axum router for docs/api.md and docs/pages.md — REST handlers, WebSocket
//! loops, embedded pages. Thin: every rule lives in the core; handlers authenticate, translate JSON
//! to a [`Command`](crate::core::Command), and map the answer back.

pub mod auth;
pub mod error;
pub mod extract;
pub mod openapi;
pub mod ops;
pub mod server;

use crate::app::SharedConfig;
use crate::config::Config;
use crate::driver::Handle;
use crate::store::Store;
use std::sync::Arc;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub handle: Handle,
    pub store: Arc<Store>,
    config: SharedConfig,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppState")
    }
}

impl AppState {
    pub fn new(handle: Handle, store: Arc<Store>, config: SharedConfig) -> AppState {
        AppState {
            handle,
            store,
            config,
        }
    }

    /// The configuration in force (it changes on reload).
    pub fn config(&self) -> Arc<Config> {
        self.config.get()
    }

    /// The replaceable configuration itself (for reloads and long-lived readers).
    pub fn shared_config(&self) -> SharedConfig {
        self.config.clone()
    }
}

pub mod pages;
pub mod rest;
pub mod ws;

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
