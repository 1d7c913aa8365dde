//! HTTP adapter: the embedded web pages of docs/pages.md (`/`, `/panel`, `/dashboard`, `/chat`) and
//! their assets under `/assets/`, served from the binary with strict security headers.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));
}

/// The embedded file at `path` (relative to `web/`).
pub fn file(path: &str) -> Option<&'static [u8]> {
    embedded::FILES
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, b)| *b)
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") | Some("mjs") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

fn serve(path: &str) -> Response {
    let Some(bytes) = file(path) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let mut resp = bytes.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
        ),
    );
    resp
}

/// `GET /` — the login page.
async fn index() -> Response {
    serve("index.html")
}

/// `GET /panel` — the agent Communication Panel.
async fn panel() -> Response {
    serve("panel.html")
}

/// `GET /dashboard` — the supervisor Dashboard.
async fn dashboard() -> Response {
    serve("dashboard.html")
}

/// `GET /chat?queue=ID` — the customer web chat.
async fn chat() -> Response {
    serve("chat.html")
}

/// `GET /assets/{file}` — shared CSS and JavaScript.
async fn asset(Path(name): Path<String>) -> Response {
    if name.contains("..") || name.contains('/') {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    }
    serve(&format!("assets/{name}"))
}

/// The page routes.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/panel", get(panel))
        .route("/dashboard", get(dashboard))
        .route("/chat", get(chat))
        .route("/assets/{name}", get(asset))
}
