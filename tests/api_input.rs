//! Bad input never reaches the core and never costs a 500 (docs/api.md#errors): malformed JSON,
//! wrong types, missing and unknown fields, unknown and malformed ids, oversized bodies and texts,
//! bad enum values, and the per-address rate limits — every error is `{"error", "message"}`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use common::{API_KEY, TestServer, test_config};
use serde_json::{Value, json};
use std::time::Duration;
use switchboard::config::Config;

const RANDOM_ID: &str = "0190d5a0-1234-7000-8000-00000000abcd";

fn relaxed() -> Config {
    let mut cfg = test_config();
    cfg.limits.login_per_minute = 1000;
    cfg.limits.chats_per_minute = 1000;
    cfg
}

/// Sends a request and asserts its status and error code, and the error body's shape.
async fn expect(
    server: &TestServer,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
    status: u16,
    code: &str,
) -> Value {
    let (ct, bytes) = match body {
        Some(b) => (Some("application/json"), b.to_vec()),
        None => (None, Vec::new()),
    };
    let (got, resp) = server.http.raw(method, path, token, ct, bytes).await;
    assert_eq!(
        (got, resp["error"].as_str()),
        (status, Some(code)),
        "{method} {path}: {resp}"
    );
    assert!(resp["message"].is_string(), "{method} {path}: {resp}");
    assert_eq!(resp.as_object().map(|o| o.len()), Some(2), "{resp}");
    resp
}

#[tokio::test]
async fn malformed_json_wrong_types_and_missing_or_unknown_fields_are_400() {
    let server = TestServer::start_with(relaxed()).await;
    let alice = server.token("alice").await;
    let sam = server.token("sam").await;
    let conv = |action: &str| format!("/api/v1/conversations/{RANDOM_ID}/{action}");
    let cases: Vec<(&str, String, Option<&str>, &str)> = vec![
        ("POST", "/api/v1/login".into(), None, "{bad json"),
        (
            "POST",
            "/api/v1/login".into(),
            None,
            r#"{"username": 5, "password": "x"}"#,
        ),
        (
            "POST",
            "/api/v1/login".into(),
            None,
            r#"{"username": "alice"}"#,
        ),
        ("POST", "/api/v1/login".into(), None, "[]"),
        (
            "POST",
            "/api/v1/login".into(),
            None,
            r#"{"username": "alice", "password": "alice-pw", "admin": true}"#,
        ),
        (
            "PUT",
            "/api/v1/agent/presence".into(),
            Some(&alice),
            r#"{"presence": 5}"#,
        ),
        ("PUT", "/api/v1/agent/presence".into(), Some(&alice), "{}"),
        ("POST", conv("messages"), Some(&alice), "{}"),
        ("POST", conv("messages"), Some(&alice), r#"{"text": 3}"#),
        ("POST", conv("messages"), Some(&alice), r#"{"text": "   "}"#),
        (
            "PUT",
            conv("draft"),
            Some(&alice),
            r#"{"script": "x", "memo": ""}"#,
        ),
        ("PUT", conv("draft"), Some(&alice), r#"{"memo": ""}"#),
        (
            "PUT",
            conv("draft"),
            Some(&alice),
            r#"{"script": {"a": 1}, "memo": ""}"#,
        ),
        ("POST", conv("metadata"), Some(&alice), r#"{"script": {}}"#),
        ("POST", conv("transfer"), Some(&alice), "{}"),
        (
            "POST",
            conv("transfer"),
            Some(&alice),
            r#"{"queue": "support", "agent": "bob"}"#,
        ),
        ("POST", conv("transfer"), Some(&alice), r#"{"queue": ""}"#),
        ("POST", conv("consult"), Some(&alice), "{}"),
        ("POST", conv("consult"), Some(&alice), r#"{"agent": ""}"#),
        (
            "POST",
            conv("reassign"),
            Some(&sam),
            r#"{"queue": null, "agent": null}"#,
        ),
        (
            "POST",
            "/api/v1/queues/support/pick".into(),
            Some(&alice),
            "{}",
        ),
        (
            "POST",
            "/api/v1/queues/support/pick".into(),
            Some(&alice),
            r#"{"conversation_id": "nope"}"#,
        ),
        (
            "POST",
            "/api/v1/chats".into(),
            None,
            r#"{"queue": "support"}"#,
        ),
        ("POST", "/api/v1/chats".into(), None, r#"{"name": "Zed"}"#),
        (
            "POST",
            "/api/v1/chats".into(),
            None,
            r#"{"queue": "support", "name": "   "}"#,
        ),
        (
            "POST",
            "/api/v1/chats".into(),
            None,
            r#"{"queue": "support", "name": 7}"#,
        ),
        (
            "POST",
            "/api/v1/inbound/messages".into(),
            Some(API_KEY),
            r#"{"medium": "sms", "from": "+1"}"#,
        ),
        (
            "POST",
            "/api/v1/inbound/messages".into(),
            Some(API_KEY),
            r#"{"medium": "sms", "from": " ", "text": "x", "queue": "support"}"#,
        ),
        (
            "POST",
            "/api/v1/inbound/emails".into(),
            Some(API_KEY),
            r#"{"from": "a@example.com"}"#,
        ),
        ("POST", "/api/v1/inbound/calls".into(), Some(API_KEY), "[]"),
        (
            "POST",
            "/api/v1/inbound/calls".into(),
            Some(API_KEY),
            r#"{"from": "+1", "queue": "mail"}"#,
        ),
    ];
    for (method, path, token, body) in &cases {
        expect(
            &server,
            method,
            path,
            *token,
            Some(body.as_bytes()),
            400,
            "invalid_request",
        )
        .await;
    }
    // A body that is not declared as JSON.
    let (s, v) = server
        .http
        .raw(
            "POST",
            "/api/v1/login",
            None,
            Some("text/plain"),
            br#"{"username": "alice", "password": "alice-pw"}"#.to_vec(),
        )
        .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("invalid_request")),
        "{v}"
    );
    println!("{} malformed requests answered 400", cases.len() + 1);
}

#[tokio::test]
async fn unknown_ids_and_queues_are_404_not_found() {
    let server = TestServer::start_with(relaxed()).await;
    let alice = server.token("alice").await;
    let sam = server.token("sam").await;
    let pick = json!({"conversation_id": RANDOM_ID}).to_string();
    let cases: Vec<(&str, String, &str, Option<String>)> = vec![
        (
            "POST",
            format!("/api/v1/conversations/{RANDOM_ID}/accept"),
            &alice,
            None,
        ),
        (
            "POST",
            format!("/api/v1/conversations/{RANDOM_ID}/end"),
            &alice,
            None,
        ),
        (
            "POST",
            format!("/api/v1/conversations/{RANDOM_ID}/callback"),
            &alice,
            None,
        ),
        (
            "POST",
            format!("/api/v1/conversations/{RANDOM_ID}/reassign"),
            &sam,
            Some(r#"{"queue": "support"}"#.into()),
        ),
        (
            "GET",
            format!("/api/v1/conversations/{RANDOM_ID}"),
            &sam,
            None,
        ),
        (
            "GET",
            format!("/api/v1/conversations/{RANDOM_ID}"),
            &alice,
            None,
        ),
        ("GET", format!("/api/v1/groups/{RANDOM_ID}"), &sam, None),
        (
            "GET",
            "/api/v1/queues/nope/conversations".into(),
            &alice,
            None,
        ),
        (
            "POST",
            "/api/v1/queues/nope/pick".into(),
            &alice,
            Some(pick.clone()),
        ),
        (
            "POST",
            "/api/v1/queues/support/pick".into(),
            &alice,
            Some(pick),
        ),
        (
            "POST",
            "/api/v1/inbound/calls".into(),
            API_KEY,
            Some(r#"{"from": "+1", "queue": "nope"}"#.into()),
        ),
        (
            "POST",
            "/api/v1/inbound/emails".into(),
            API_KEY,
            Some(r#"{"from": "a@b.c", "subject": "s", "text": "t", "queue": "nope"}"#.into()),
        ),
        (
            "POST",
            format!("/api/v1/inbound/calls/{RANDOM_ID}/hangup"),
            API_KEY,
            None,
        ),
        ("GET", "/api/v1/no/such/thing".into(), &alice, None),
    ];
    for (method, path, token, body) in &cases {
        expect(
            &server,
            method,
            path,
            Some(token),
            body.as_deref().map(str::as_bytes),
            404,
            "not_found",
        )
        .await;
    }
    expect(
        &server,
        "POST",
        "/api/v1/chats",
        None,
        Some(br#"{"queue": "nope", "name": "Zed"}"#),
        404,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn malformed_uuids_in_paths_are_400_invalid_request_not_404() {
    let server = TestServer::start_with(relaxed()).await;
    let alice = server.token("alice").await;
    let sam = server.token("sam").await;
    let mut n = 0;
    for bad in [
        "not-a-uuid",
        "123",
        "0190d5a0-1234-7000-8000-00000000abcg",
        "%20",
    ] {
        for (method, path, token, body) in [
            ("POST", "/api/v1/conversations/{}/accept", &alice, None),
            ("POST", "/api/v1/conversations/{}/reject", &alice, None),
            (
                "POST",
                "/api/v1/conversations/{}/messages",
                &alice,
                Some(r#"{"text": "x"}"#),
            ),
            (
                "PUT",
                "/api/v1/conversations/{}/draft",
                &alice,
                Some(r#"{"script": {}, "memo": ""}"#),
            ),
            (
                "POST",
                "/api/v1/conversations/{}/metadata",
                &alice,
                Some(r#"{"script": {}, "memo": ""}"#),
            ),
            ("POST", "/api/v1/conversations/{}/end", &alice, None),
            ("POST", "/api/v1/conversations/{}/complete", &alice, None),
            (
                "POST",
                "/api/v1/conversations/{}/transfer",
                &alice,
                Some(r#"{"queue": "support"}"#),
            ),
            (
                "POST",
                "/api/v1/conversations/{}/consult",
                &alice,
                Some(r#"{"agent": "bob"}"#),
            ),
            ("POST", "/api/v1/conversations/{}/callback", &alice, None),
            (
                "POST",
                "/api/v1/conversations/{}/reassign",
                &sam,
                Some(r#"{"queue": "support"}"#),
            ),
            ("GET", "/api/v1/conversations/{}", &sam, None),
            ("GET", "/api/v1/groups/{}", &sam, None),
            (
                "POST",
                "/api/v1/inbound/calls/{}/hangup",
                &API_KEY.to_string(),
                None,
            ),
        ] {
            let path = path.replace("{}", bad);
            expect(
                &server,
                method,
                &path,
                Some(token),
                body.map(str::as_bytes),
                400,
                "invalid_request",
            )
            .await;
            n += 1;
        }
    }
    println!("{n} malformed path ids answered 400");
}

#[tokio::test]
async fn oversized_bodies_are_413_payload_too_large() {
    let server = TestServer::start_with(relaxed()).await;
    let alice = server.token("alice").await;
    let limits = &server.cfg.limits;
    // Every body is limited to max_body_bytes, except an inbound email's, which may carry
    // max_email_bytes of subject and text.
    let over = |n: usize| json!({"text": "a".repeat(n + 1)}).to_string();
    let email_limit = limits.max_body_bytes.max(limits.max_email_bytes + 4096);
    let email = json!({"from": "a@b.c", "subject": "s", "text": "a".repeat(email_limit + 1), "queue": "mail"})
        .to_string();
    let conv = format!("/api/v1/conversations/{RANDOM_ID}/messages");
    let draft = format!("/api/v1/conversations/{RANDOM_ID}/draft");
    let body = over(limits.max_body_bytes);
    for (method, path, token, body) in [
        ("POST", "/api/v1/login", None, &body),
        ("POST", conv.as_str(), Some(alice.as_str()), &body),
        ("PUT", draft.as_str(), Some(alice.as_str()), &body),
        ("POST", "/api/v1/chats", None, &body),
        ("POST", "/api/v1/inbound/messages", Some(API_KEY), &body),
        ("POST", "/api/v1/inbound/emails", Some(API_KEY), &email),
    ] {
        expect(
            &server,
            method,
            path,
            token,
            Some(body.as_bytes()),
            413,
            "payload_too_large",
        )
        .await;
    }
}

#[tokio::test]
async fn texts_over_their_limits_are_413_and_the_limit_counts_characters() {
    let server = TestServer::start_with(relaxed()).await;
    let alice = server.token("alice").await;
    let max = server.cfg.limits.max_message_chars;
    let long = "é".repeat(max + 1);
    let conv = format!("/api/v1/conversations/{RANDOM_ID}");
    let (s, chat) = server
        .http
        .post(
            "/api/v1/chats",
            None,
            &json!({"queue": "support", "name": "Zed"}),
        )
        .await;
    assert_eq!(s, 201);
    let customer = chat["token"].as_str().unwrap().to_string();
    let meta = json!({"script": {"q": long}, "memo": ""}).to_string();
    let memo = json!({"script": {}, "memo": long}).to_string();
    let text = json!({"text": long}).to_string();
    let chat_body = json!({"queue": "support", "name": "Zed", "text": long}).to_string();
    let sms =
        json!({"medium": "sms", "from": "+1555", "text": long, "queue": "support"}).to_string();
    let max_email = server.cfg.limits.max_email_bytes;
    let email = json!({"from": "a@b.c", "subject": "subject", "text": "a".repeat(max_email - 3), "queue": "mail"})
        .to_string();
    for (method, path, token, body) in [
        (
            "POST",
            format!("{conv}/messages"),
            Some(alice.as_str()),
            &text,
        ),
        ("PUT", format!("{conv}/draft"), Some(alice.as_str()), &meta),
        (
            "POST",
            format!("{conv}/metadata"),
            Some(alice.as_str()),
            &memo,
        ),
        ("POST", "/api/v1/chats".into(), None, &chat_body),
        (
            "POST",
            "/api/v1/chat/messages".into(),
            Some(customer.as_str()),
            &text,
        ),
        (
            "POST",
            "/api/v1/inbound/messages".into(),
            Some(API_KEY),
            &sms,
        ),
        (
            "POST",
            "/api/v1/inbound/emails".into(),
            Some(API_KEY),
            &email,
        ),
    ] {
        expect(
            &server,
            method,
            &path,
            token,
            Some(body.as_bytes()),
            413,
            "payload_too_large",
        )
        .await;
    }
    // Exactly at the limit (in characters, not bytes) is accepted.
    let (s, v) = server
        .http
        .post(
            "/api/v1/inbound/messages",
            Some(API_KEY),
            &json!({"medium": "sms", "from": "+1555", "text": "é".repeat(max), "queue": "support"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = server
        .http
        .post(
            "/api/v1/inbound/emails",
            Some(API_KEY),
            &json!({"from": "a@b.c", "subject": "s", "text": "a".repeat(max_email - 1), "queue": "mail"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    // A name over 100 characters is refused.
    expect(
        &server,
        "POST",
        "/api/v1/chats",
        None,
        Some(
            json!({"queue": "support", "name": "n".repeat(101)})
                .to_string()
                .as_bytes(),
        ),
        400,
        "invalid_request",
    )
    .await;
}

#[tokio::test]
async fn bad_enum_values_are_400_invalid_request() {
    let server = TestServer::start_with(relaxed()).await;
    let alice = server.token("alice").await;
    let sam = server.token("sam").await;
    expect(
        &server,
        "PUT",
        "/api/v1/agent/presence",
        Some(&alice),
        Some(br#"{"presence": "away"}"#),
        400,
        "invalid_request",
    )
    .await;
    for q in [
        "status=lost",
        "channel=fax",
        "limit=-1",
        "limit=many",
        "colour=blue",
    ] {
        expect(
            &server,
            "GET",
            &format!("/api/v1/conversations?{q}"),
            Some(&sam),
            None,
            400,
            "invalid_request",
        )
        .await;
    }
    for medium in ["fax", "webchat", "voice", "email"] {
        let body =
            json!({"medium": medium, "from": "+1", "text": "x", "queue": "support"}).to_string();
        expect(
            &server,
            "POST",
            "/api/v1/inbound/messages",
            Some(API_KEY),
            Some(body.as_bytes()),
            400,
            "invalid_request",
        )
        .await;
    }
    // Good values still work.
    let (s, v) = server
        .http
        .get(
            "/api/v1/conversations?status=in_queue&channel=chat&limit=5&queue=&agent=",
            Some(&sam),
        )
        .await;
    assert_eq!((s, v.is_array()), (200, true), "{v}");
}

#[tokio::test]
async fn login_is_rate_limited_per_address_and_recovers_the_next_minute() {
    let mut cfg = test_config();
    cfg.limits.login_per_minute = 3;
    let server = TestServer::start_with(cfg).await;
    let wrong = br#"{"username": "alice", "password": "wrong"}"#;
    let unknown = br#"{"username": "mallory", "password": "x"}"#;
    expect(
        &server,
        "POST",
        "/api/v1/login",
        None,
        Some(wrong),
        401,
        "unauthorized",
    )
    .await;
    expect(
        &server,
        "POST",
        "/api/v1/login",
        None,
        Some(unknown),
        401,
        "unauthorized",
    )
    .await;
    expect(
        &server,
        "POST",
        "/api/v1/login",
        None,
        Some(wrong),
        401,
        "unauthorized",
    )
    .await;
    let right = br#"{"username": "alice", "password": "alice-pw"}"#;
    expect(
        &server,
        "POST",
        "/api/v1/login",
        None,
        Some(right),
        429,
        "rate_limited",
    )
    .await;
    server.advance(Duration::from_secs(61)).await;
    let (s, v) = server
        .http
        .raw(
            "POST",
            "/api/v1/login",
            None,
            Some("application/json"),
            right.to_vec(),
        )
        .await;
    assert_eq!((s, v["role"].as_str()), (200, Some("agent")), "{v}");
    let (s, metrics) = server.http.get("/metrics", None).await;
    assert_eq!(s, 200);
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains("switchboard_failed_logins_total 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchboard_rate_limited_total{limit=\"login\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn chat_starts_are_rate_limited_per_address() {
    let mut cfg = test_config();
    cfg.limits.chats_per_minute = 2;
    let server = TestServer::start_with(cfg).await;
    let body = br#"{"queue": "support", "name": "Zed"}"#;
    for _ in 0..2 {
        let (s, v) = server
            .http
            .raw(
                "POST",
                "/api/v1/chats",
                None,
                Some("application/json"),
                body.to_vec(),
            )
            .await;
        assert_eq!(s, 201, "{v}");
    }
    expect(
        &server,
        "POST",
        "/api/v1/chats",
        None,
        Some(body),
        429,
        "rate_limited",
    )
    .await;
    server.advance(Duration::from_secs(61)).await;
    let (s, _) = server
        .http
        .raw(
            "POST",
            "/api/v1/chats",
            None,
            Some("application/json"),
            body.to_vec(),
        )
        .await;
    assert_eq!(s, 201);
}

#[tokio::test]
async fn bad_credentials_wrong_methods_and_unknown_paths_answer_json_errors() {
    let server = TestServer::start_with(relaxed()).await;
    let alice = server.token("alice").await;
    let (s, v) = server
        .http
        .raw("GET", "/api/v1/agent/state", Some("nope"), None, Vec::new())
        .await;
    assert_eq!((s, v["error"].as_str()), (401, Some("unauthorized")), "{v}");
    // A scheme other than Bearer is no credential.
    let plain = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<hyper::body::Bytes>>();
    let req = hyper::Request::get(server.url("/api/v1/agent/state"))
        .header("authorization", format!("Basic {alice}"))
        .body(http_body_util::Full::default())
        .unwrap();
    assert_eq!(plain.request(req).await.unwrap().status().as_u16(), 401);
    expect(
        &server,
        "DELETE",
        "/api/v1/agents",
        Some(&alice),
        None,
        405,
        "method_not_allowed",
    )
    .await;
    expect(
        &server,
        "GET",
        "/api/v1/login",
        None,
        None,
        405,
        "method_not_allowed",
    )
    .await;
    expect(
        &server,
        "GET",
        "/api/v1/nothing/here",
        None,
        None,
        404,
        "not_found",
    )
    .await;
    expect(&server, "GET", "/api", None, None, 404, "not_found").await;
}

#[tokio::test]
async fn garbage_on_every_route_never_answers_500() {
    let server = TestServer::start_with(relaxed()).await;
    let alice = server.token("alice").await;
    let sam = server.token("sam").await;
    let bodies: [&[u8]; 7] = [
        b"",
        b"{",
        b"null",
        b"[1,2,3]",
        b"\"text\"",
        br#"{"text": {"nested": []}, "queue": 1, "name": null}"#,
        &[0xff, 0xfe, 0x00, 0x7b],
    ];
    let mut n = 0;
    let routes = switchboard::http::openapi::operations(&switchboard::http::openapi_document());
    for (method, path) in &routes {
        if path.ends_with("/ws") || path == "/api/v1/logout" {
            continue;
        }
        for id in [RANDOM_ID, "x"] {
            let path = path.replace("{id}", id).replace("{group_id}", id);
            for token in [
                None,
                Some(alice.as_str()),
                Some(sam.as_str()),
                Some(API_KEY),
            ] {
                for body in bodies {
                    let (s, v) = server
                        .http
                        .raw(
                            method,
                            &path,
                            token,
                            Some("application/json"),
                            body.to_vec(),
                        )
                        .await;
                    n += 1;
                    assert!(s < 500 || path == "/readyz", "{method} {path}: {s} {v}");
                    if s >= 400 && path.starts_with("/api/") {
                        assert!(
                            v["error"].is_string() && v["message"].is_string(),
                            "{method} {path}: {v}"
                        );
                    }
                }
            }
        }
    }
    println!("{n} garbage requests, none answered 5xx");
}
