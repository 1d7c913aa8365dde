//! HTTP adapter: ws routes.
use super::AppState;
use axum::Router;

/// The ws routes.
pub fn routes() -> Router<AppState> {
    Router::new()
}
