//! HTTP adapter: the REST API (docs/api.md) under `/api/v1` (plus `/healthz`, `/readyz`,
//! `/metrics`). Handlers are thin: authenticate, validate the JSON, turn it into a
//! [`Command`](crate::core::Command), and map the core's reply back to JSON. Every rule
//! (roles, ownership, states) lives in the core; every error goes through [`ApiError`].
//! The handlers in `rest/*.rs` import nothing from this module: it only routes to them.

mod agent;
mod customer;
mod integration;
mod supervisor;

use super::auth::{self, Guard};
use super::error::ApiError;
use super::state::AppState;
use super::{openapi, ops};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use std::sync::Arc;
use utoipa::OpenApi;
use utoipa::openapi::OpenApi as Document;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Every REST route, the health and metrics endpoints and the OpenAPI document, with the
/// per-router rate limiters (one [`Guard`] per router). Each route is registered once, with
/// the `#[utoipa::path]` of its handler: the router and the paths of the OpenAPI document
/// come from this one list.
pub fn routes() -> (Router<AppState>, Document) {
    let guard = Arc::new(Guard::default());
    let (router, doc) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(auth::login))
        .routes(routes!(auth::logout))
        .routes(routes!(agent::state))
        .routes(routes!(agent::presence))
        .routes(routes!(agent::accept))
        .routes(routes!(agent::reject))
        .routes(routes!(agent::message))
        .routes(routes!(agent::draft))
        .routes(routes!(agent::metadata))
        .routes(routes!(agent::end))
        .routes(routes!(agent::complete))
        .routes(routes!(agent::transfer))
        .routes(routes!(agent::consult))
        .routes(routes!(agent::callback))
        .routes(routes!(supervisor::reassign))
        .routes(routes!(agent::queue_conversations))
        .routes(routes!(agent::pick))
        .routes(routes!(supervisor::details))
        .routes(routes!(supervisor::group))
        .routes(routes!(supervisor::search))
        .routes(routes!(supervisor::agents))
        .routes(routes!(supervisor::release))
        .routes(routes!(supervisor::alerts))
        .routes(routes!(supervisor::queues))
        .routes(routes!(customer::start))
        .routes(routes!(customer::state))
        .routes(routes!(customer::message))
        .routes(routes!(customer::end))
        .routes(routes!(integration::message))
        .routes(routes!(integration::email))
        .routes(routes!(integration::call))
        .routes(routes!(integration::hangup))
        .routes(routes!(ops::backup))
        .routes(routes!(openapi::document))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .split_for_parts();
    let router = router
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(Extension(guard))
        .layer(axum::middleware::from_fn(refuse_query_token));
    (router, doc)
}

/// Refuses every REST request with `?token=` (401): only WebSocket routes take a token in
/// the URL, where browsers cannot send a header.
async fn refuse_query_token(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if super::extract::query_token(req.uri()).is_some() {
        return super::extract::query_token_refused().into_response();
    }
    next.run(req).await
}

/// Any unknown path: a JSON `not_found` under `/api/`, a plain 404 elsewhere.
async fn not_found(uri: Uri) -> Response {
    if uri.path().starts_with("/api/") || uri.path() == "/api" {
        ApiError::not_found(format!("no such endpoint: {}", uri.path())).into_response()
    } else {
        (StatusCode::NOT_FOUND, "not found").into_response()
    }
}

/// A known path with a method it does not serve.
async fn method_not_allowed() -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not accept that method; see /api/v1/openapi.json",
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, SharedConfig};
    use crate::driver::{Clock, Driver};
    use crate::http::{AppState, router};
    use crate::store::Store;
    use axum::http::Request;
    use std::sync::Arc;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_streamed_body_over_max_body_bytes_is_413_without_content_length() {
        let cfg = Arc::new(Config::default());
        let max = cfg.limits.max_body_bytes;
        let store = Arc::new(Store::in_memory().unwrap());
        let (driver, handle) =
            Driver::start(cfg.clone(), store.clone(), Clock::manual(0), None).unwrap();
        tokio::spawn(driver.run(std::future::pending::<()>()));
        let metrics = Arc::new(crate::metrics::Metrics::new(handle.metrics.clone()));
        let app = router(AppState::new(
            handle,
            store,
            SharedConfig::new(cfg),
            metrics,
        ));
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
            Ok(br#"{"queue": "support", "name": ""#.to_vec()),
            Ok(vec![b'a'; max]),
            Ok(br#""}"#.to_vec()),
        ];
        let body = axum::body::Body::from_stream(futures_util::stream::iter(chunks));
        let req = Request::post("/api/v1/chats")
            .header("content-type", "application/json")
            .body(body)
            .unwrap();
        let resp = app.oneshot(req).await.unwrap();
        assert_eq!(resp.status().as_u16(), 413);
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["error"], "payload_too_large");
    }
}
