//! Hostile-client cases: what a stranger can make the server hold or refuse (tokens in URLs,
//! chat floods, slow or idle connections, oversized registrations), each with its bound.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn rest_routes_refuse_a_token_in_the_query_string() {
    let server = TestServer::start().await;
    let token = server.token("alice").await;
    let (status, body) = server
        .http
        .get(&format!("/api/v1/agent/state?token={token}"), None)
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "unauthorized");
    assert!(
        body["message"].as_str().unwrap().contains("only on WebSocket routes"),
        "{body}"
    );
    // Even alongside a valid header.
    let (status, _) = server
        .http
        .get(&format!("/api/v1/agent/state?token={token}"), Some(&token))
        .await;
    assert_eq!(status, 401);
    let (status, _) = server
        .http
        .post(
            &format!("/api/v1/logout?limit=1&token={token}"),
            Some(&token),
            &json!({}),
        )
        .await;
    assert_eq!(status, 401);
    // A customer token in the URL of a customer route too.
    let (chat_token, _) = start_chat(&server, "Dana", Some("hello")).await;
    let (status, _) = server
        .http
        .get(&format!("/api/v1/chat?token={chat_token}"), None)
        .await;
    assert_eq!(status, 401);
    // The header still works, and so do the WebSockets with ?token=.
    let (status, _) = server.http.get("/api/v1/agent/state", Some(&token)).await;
    assert_eq!(status, 200);
    let (_ws, snap) = server.panel(&token).await;
    assert_eq!(snap["type"], "snapshot");
    let (_cws, snap) = chat(&server, &chat_token).await;
    assert_eq!(snap["type"], "snapshot");
}
