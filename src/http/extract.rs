//! HTTP adapter: request extractors that turn every malformed input into an error of
//! docs/api.md#errors (`ApiJson` for bodies, `Bearer` for the Authorization header, `ClientIp`).

use super::error::ApiError;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::net::{IpAddr, SocketAddr};

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
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::invalid(
                "expected a JSON body with Content-Type: application/json",
            )),
            Err(e) => Err(ApiError::invalid(e.body_text())),
        }
    }
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

/// The hash of the request's `Authorization: Bearer` token (or `?token=` for WebSockets).
#[derive(Debug, Clone, Copy)]
pub struct Bearer(pub [u8; 32]);

impl<S: Send + Sync> FromRequestParts<S> for Bearer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        if let Some(v) = parts.headers.get(header::AUTHORIZATION) {
            let v = v.to_str().map_err(|_| ApiError::unauthorized())?;
            let token = v
                .strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
                .ok_or_else(ApiError::unauthorized)?;
            return Ok(Bearer(token_hash(token.trim())));
        }
        let query = parts.uri.query().unwrap_or("");
        for pair in query.split('&') {
            if let Some(t) = pair.strip_prefix("token=") {
                if !t.is_empty() {
                    return Ok(Bearer(token_hash(t)));
                }
            }
        }
        Err(ApiError::unauthorized())
    }
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
