//! HTTP adapter: rest routes.
use super::AppState;
use axum::Router;

/// The rest routes.
pub fn routes() -> Router<AppState> {
    Router::new()
}
