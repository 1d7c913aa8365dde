//! HTTP adapter: pages routes.
use super::AppState;
use axum::Router;

/// The pages routes.
pub fn routes() -> Router<AppState> {
    Router::new()
}
