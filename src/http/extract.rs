//! HTTP adapter: request extractors that turn every malformed input into an error of
//! docs/api.md#errors (`ApiJson` and the size-limited `Body` for JSON bodies, `IdPath` and
//! `QueuePath` for path segments, `ApiQuery` for query strings, `Bearer` for the Authorization
//! header, `WsBearer` for WebSocket routes, which also take `?token=`, `ClientIp`).

use super::error::ApiError;
use super::state::AppState;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri, header};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::net::{IpAddr, SocketAddr};
use uuid::Uuid;

/// A JSON body; bad JSON, wrong types and oversized bodies become API errors.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(JsonRejection::BytesRejection(e))
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(ApiError::too_large(
                    "the request body is larger than limits.max_body_bytes",
                ))
            }
            Err(JsonRejection::BytesRejection(e)) if caused_by_body_timeout(&e) => {
                Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    "the request body was not received within limits.http_body_timeout",
                ))
            }
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::invalid(
                "expected a JSON body with Content-Type: application/json",
            )),
            Err(e) => Err(ApiError::invalid(e.body_text())),
        }
    }
}

/// A JSON body of at most `limits.max_body_bytes` (413 `payload_too_large` beyond, whether
/// announced by `Content-Length` or streamed); otherwise exactly [`ApiJson`]. The router's
/// own limit is the larger one inbound emails need.
#[derive(Debug, Clone)]
pub struct Body<T>(pub T);

impl<T: serde::de::DeserializeOwned> FromRequest<AppState> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let max = state.config().limits.max_body_bytes;
        let too_large =
            || ApiError::too_large("the request body is larger than limits.max_body_bytes");
        let announced = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if announced.is_some_and(|n| n > max as u64) {
            return Err(too_large());
        }
        let (parts, body) = req.into_parts();
        let limited = axum::body::Body::new(http_body_util::Limited::new(body, max));
        let ApiJson(v) =
            ApiJson::<T>::from_request(Request::from_parts(parts, limited), state).await?;
        Ok(Body(v))
    }
}

/// A UUID path segment (`{id}`, `{group_id}`); anything else is a 400 `invalid_request`.
#[derive(Debug, Clone, Copy)]
pub struct IdPath(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::invalid(e.body_text()))?;
        Uuid::parse_str(&raw)
            .map(IdPath)
            .map_err(|_| ApiError::invalid(format!("{raw:?} is not a UUID")))
    }
}

/// A queue id path segment.
#[derive(Debug, Clone)]
pub struct QueuePath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for QueuePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(q)| QueuePath(q))
            .map_err(|e| ApiError::invalid(e.body_text()))
    }
}

/// Whether reading the body failed because its deadline passed.
fn caused_by_body_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<super::server::BodyTimeout>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The SHA-256 of a bearer token: tokens are stored and compared only as hashes.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A new 256-bit random token, hex encoded.
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

/// The hash of the request's `Authorization: Bearer` token. REST routes take the token only
/// from the header (a token in a URL ends up in logs and browser history).
#[derive(Debug, Clone, Copy)]
pub struct Bearer(pub [u8; 32]);

impl<S: Send + Sync> FromRequestParts<S> for Bearer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match header_token(parts)? {
            Some(hash) => Ok(Bearer(hash)),
            None => Err(ApiError::unauthorized()),
        }
    }
}

/// The hash of a WebSocket route's token: `Authorization: Bearer`, or `?token=` (browsers
/// cannot set headers on a WebSocket).
#[derive(Debug, Clone, Copy)]
pub struct WsBearer(pub [u8; 32]);

impl<S: Send + Sync> FromRequestParts<S> for WsBearer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        if let Some(hash) = header_token(parts)? {
            return Ok(WsBearer(hash));
        }
        match query_token(&parts.uri) {
            Some(t) if !t.is_empty() => Ok(WsBearer(token_hash(&t))),
            _ => Err(ApiError::unauthorized()),
        }
    }
}

/// The token of `Authorization: Bearer`, hashed; `None` without the header.
fn header_token(parts: &Parts) -> Result<Option<[u8; 32]>, ApiError> {
    let Some(v) = parts.headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let v = v.to_str().map_err(|_| ApiError::unauthorized())?;
    let token = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .ok_or_else(ApiError::unauthorized)?;
    Ok(Some(token_hash(token.trim())))
}

/// The value of the first `token` parameter of the request's query string, if there is one
/// (`?token` alone counts, with an empty value).
pub fn query_token(uri: &Uri) -> Option<String> {
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri).ok()?;
    pairs
        .into_iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v)
}

/// A query string decoded into `T` with serde (axum's [`Query`]). A parameter with an empty
/// value counts as absent; malformed percent-encoding, a query that is not UTF-8, an unknown
/// parameter (where `T` denies them) or a bad value is a 400 `invalid_request`.
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        decode_query(parts.uri.query()).map(ApiQuery)
    }
}

/// The decoding of [`ApiQuery`], for a raw query string.
pub fn decode_query<T: DeserializeOwned>(raw: Option<&str>) -> Result<T, ApiError> {
    let raw = raw.unwrap_or("");
    check_encoding(raw)?;
    let given: Vec<&str> = raw
        .split('&')
        .filter(|pair| pair.split_once('=').is_some_and(|(_, v)| !v.is_empty()))
        .collect();
    let uri: Uri = format!("/?{}", given.join("&"))
        .parse()
        .map_err(|_| ApiError::invalid("malformed query string"))?;
    Query::<T>::try_from_uri(&uri)
        .map(|Query(v)| v)
        .map_err(|e| ApiError::invalid(e.body_text()))
}

/// Refuses a `%` not followed by two hex digits and escapes that do not decode to UTF-8,
/// which the form decoding would otherwise pass through or replace.
fn check_encoding(raw: &str) -> Result<(), ApiError> {
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| ApiError::invalid("malformed percent-encoding in query"))?;
            decoded.push(hex);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(decoded)
        .map(drop)
        .map_err(|_| ApiError::invalid("query is not UTF-8"))
}

/// The refusal of a REST request carrying `?token=`, whether or not it also has a header.
pub fn query_token_refused() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "tokens in the query string are accepted only on WebSocket routes; send Authorization: Bearer <token>",
    )
}

/// The peer's address (for rate limits and the loopback-only endpoints).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        Ok(ClientIp(ip))
    }
}
