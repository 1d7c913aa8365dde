//! HTTP adapter: the OpenAPI 3.1 description of the HTTP surface (docs/api.md), served at
//! `GET /api/v1/openapi.json`. It is generated, not written: the paths come from the
//! `#[utoipa::path]` of each handler as the routers register them (`rest::routes`,
//! `ws::routes`), the schemas from the types the handlers read and answer. This module adds
//! what every operation shares: the document's header, the security schemes and the error
//! answers.

use super::error::ErrorBody;
use axum::Extension;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

/// The document's header, security schemes and shared schemas; the routers add the paths.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "switchboard",
        description = "Contact-center routing (voice, chat, email) that loses no customer when an agent's connection drops. Errors are `{\"error\": \"<snake_case_code>\", \"message\": \"<text>\"}`; never a 500 for bad input. Times are RFC 3339 UTC strings with millisecond precision."
    ),
    tags(
        (name = "sessions"), (name = "agent"), (name = "conversations"), (name = "queues"),
        (name = "history"), (name = "supervisor"), (name = "customer"), (name = "integrations"),
        (name = "operations")
    ),
    components(schemas(ErrorBody)),
    modifiers(&SecuritySchemes)
)]
pub struct ApiDoc;

/// Who may call: the four ways to present a credential.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut Document) {
        let bearer = |description: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(description))
                    .build(),
            )
        };
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "sessionToken",
            bearer("The token from `POST /api/v1/login` (agent or supervisor)."),
        );
        components.add_security_scheme(
            "customerToken",
            bearer("The customer token from `POST /api/v1/chats`."),
        );
        components.add_security_scheme(
            "apiKey",
            bearer(
                "An integration key; the server stores only its SHA-256 (`[[api_keys]] key_sha256`).",
            ),
        );
        components.add_security_scheme(
            "tokenQuery",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "token",
                "WebSockets (only they) take the session or customer token as `?token=`.",
            ))),
        );
    }
}

/// The whole document: the routers' paths with the answers every operation may give besides
/// its own — `4XX` (bad input, credentials, rules; docs/api.md#errors) and `503` (shutting
/// down, a standby node, a store that cannot be written), both with an [`ErrorBody`].
pub fn complete(mut doc: Document) -> Document {
    let error = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Error")))
                    .build(),
            )
            .build()
    };
    for item in doc.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            let responses = &mut op.responses.responses;
            responses.entry("4XX".into()).or_insert_with(|| {
                error("Refused: `invalid_request`, `unauthorized`, `forbidden`, `not_found`, a state conflict, `payload_too_large` or `rate_limited`.").into()
            });
            responses.entry("503".into()).or_insert_with(|| {
                error(
                    "`unavailable`: shutting down, a standby node, or the store cannot be written.",
                )
                .into()
            });
        }
    }
    doc
}

/// The served document, serialized once when the router is built.
#[derive(Debug, Clone)]
pub struct Published(pub Arc<str>);

/// GET /api/v1/openapi.json — this document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "operations",
    responses((status = 200, description = "This document.", body = Object))
)]
pub async fn document(Extension(Published(doc)): Extension<Published>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.to_string(),
    )
        .into_response()
}

/// Every operation of the document as (method, path), in document order.
pub fn operations(doc: &Document) -> Vec<(&'static str, String)> {
    let mut ops = Vec::new();
    for (path, item) in &doc.paths.paths {
        for (method, op) in [
            ("GET", &item.get),
            ("PUT", &item.put),
            ("POST", &item.post),
            ("DELETE", &item.delete),
            ("PATCH", &item.patch),
        ] {
            if op.is_some() {
                ops.push((method, path.clone()));
            }
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::operations;
    use crate::config::{Config, SharedConfig};
    use crate::driver::{Clock, Driver};
    use crate::http::{AppState, openapi_document, router};
    use crate::store::Store;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use serde_json::Value;
    use std::sync::Arc;
    use tower::ServiceExt;

    const METHODS: [&str; 5] = ["GET", "PUT", "POST", "DELETE", "PATCH"];

    fn state() -> AppState {
        let cfg = Arc::new(Config::default());
        let store = Arc::new(Store::in_memory().unwrap());
        let (driver, handle) =
            Driver::start(cfg.clone(), store.clone(), Clock::manual(0), None).unwrap();
        tokio::spawn(driver.run(std::future::pending::<()>()));
        let metrics = Arc::new(crate::metrics::Metrics::new(handle.metrics.clone()));
        AppState::new(handle, store, SharedConfig::new(cfg), metrics)
    }

    /// A validator of `schema` that also checks `format` (uuid, date-time).
    fn validator(schema: &Value) -> jsonschema::Validator {
        jsonschema::options()
            .should_validate_formats(true)
            .build(schema)
            .unwrap()
    }

    fn doc() -> Value {
        serde_json::to_value(openapi_document()).unwrap()
    }

    /// The status and body of one request without credentials.
    async fn probe(app: &axum::Router, method: &str, uri: &str) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    #[tokio::test]
    async fn the_router_serves_exactly_the_documented_methods_of_every_documented_path() {
        let app = router(state());
        let documented = operations(&openapi_document());
        let paths: std::collections::BTreeSet<&String> =
            documented.iter().map(|(_, p)| p).collect();
        assert!(paths.len() >= 38, "{} paths", paths.len());
        let mut wrong = Vec::new();
        for path in paths {
            let uri = path
                .replace("{id}", "0190d5a0-0000-7000-8000-000000000000")
                .replace("{group_id}", "0190d5a0-0000-7000-8000-000000000000")
                .replace("{agent_id}", "alice");
            for method in METHODS {
                let is_documented = documented.iter().any(|(m, p)| *m == method && p == path);
                let (status, body) = probe(&app, method, &uri).await;
                let unrouted = status == StatusCode::METHOD_NOT_ALLOWED
                    || (status == StatusCode::NOT_FOUND
                        && body["message"]
                            .as_str()
                            .is_some_and(|m| m.starts_with("no such endpoint")));
                if is_documented == unrouted || status.is_server_error() {
                    wrong.push(format!("{method} {uri}: {status} {body}"));
                }
            }
        }
        assert!(wrong.is_empty(), "router and document disagree: {wrong:#?}");
    }

    #[test]
    fn every_api_route_is_registered_through_the_documented_route_list() {
        // The router's API routes come from `routes!` over `#[utoipa::path]` handlers; a path
        // added with axum's own routing call would be served but not documented. Only the
        // HTML pages are routed that way.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
        let mut files = vec![dir.clone()];
        let mut offenders = Vec::new();
        while let Some(p) = files.pop() {
            if p.is_dir() {
                files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            } else if p.extension().is_some_and(|e| e == "rs") && !p.ends_with("pages.rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                if text.contains(concat!(".route", "(")) {
                    offenders.push(p.display().to_string());
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "routes outside the list: {offenders:?}"
        );
    }

    #[test]
    #[ignore = "prints the document"]
    fn print_document() {
        println!("{}", serde_json::to_string_pretty(&doc()).unwrap());
    }

    #[test]
    fn every_schema_reference_resolves() {
        let doc = doc();
        let text = doc.to_string();
        for part in text.split("\"$ref\":\"#/components/").skip(1) {
            let target = part.split('"').next().unwrap();
            let mut node = &doc["components"];
            for seg in target.split('/') {
                node = &node[seg];
            }
            assert!(node.is_object(), "dangling $ref #/components/{target}");
        }
    }

    /// Every `example` and `examples` entry in `node` (recursively), with the schema it must
    /// satisfy: the schema object that carries it, or the `schema` of the media type.
    fn examples<'a>(node: &'a Value, out: &mut Vec<(&'a Value, &'a Value)>) {
        match node {
            Value::Object(map) => {
                let schema = map.get("schema").unwrap_or(node);
                if let Some(e) = map.get("example") {
                    out.push((schema, e));
                }
                match map.get("examples") {
                    Some(Value::Array(list)) => out.extend(list.iter().map(|e| (schema, e))),
                    Some(Value::Object(named)) => out.extend(
                        named
                            .values()
                            .filter_map(|e| e.get("value"))
                            .map(|e| (schema, e)),
                    ),
                    _ => {}
                }
                for v in map.values() {
                    examples(v, out);
                }
            }
            Value::Array(list) => list.iter().for_each(|v| examples(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_example_validates_against_its_schema() {
        let doc = doc();
        let mut found = Vec::new();
        examples(&doc, &mut found);
        assert!(found.len() >= 5, "only {} examples", found.len());
        for (schema, example) in found {
            let mut rooted = schema.clone();
            rooted["components"] = doc["components"].clone();
            let validator = validator(&rooted);
            let errors: Vec<String> = validator
                .iter_errors(example)
                .map(|e| e.to_string())
                .collect();
            assert!(errors.is_empty(), "{example} against {schema}: {errors:?}");
        }
    }

    #[test]
    fn schemas_state_what_the_server_enforces() {
        let doc = doc();
        let schemas = &doc["components"]["schemas"];
        let valid = |name: &str, v: Value| {
            let mut rooted = schemas[name].clone();
            rooted["components"] = doc["components"].clone();
            validator(&rooted).is_valid(&v)
        };
        assert!(valid("ConsultBody", serde_json::json!({"agent": "bob"})));
        assert!(!valid("ConsultBody", serde_json::json!({"agent": ""})));
        assert!(!valid("ConsultBody", serde_json::json!({"agent": " \t"})));
        assert!(!valid(
            "ConsultBody",
            serde_json::json!({"agent": "bob", "x": 1})
        ));
        assert!(valid("TextBody", serde_json::json!({"text": "hi\u{c}"})));
        assert!(!valid("TextBody", serde_json::json!({"text": "\u{c}"})));
        assert!(valid("TargetBody", serde_json::json!({"queue": "support"})));
        assert!(!valid("TargetBody", serde_json::json!({})));
        assert!(!valid(
            "TargetBody",
            serde_json::json!({"queue": "a", "agent": "b"})
        ));
        assert!(valid(
            "StartBody",
            serde_json::json!({"queue": "q", "name": " Ann \n"})
        ));
        assert!(!valid(
            "StartBody",
            serde_json::json!({"queue": "q", "name": "A\u{0}nn"})
        ));
        assert!(!valid(
            "StartBody",
            serde_json::json!({"queue": "q", "name": "a".repeat(101)})
        ));
        let limit = doc["paths"]["/api/v1/conversations"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "limit")
            .unwrap();
        assert!(!limit.to_string().contains("maximum"), "{limit}");
        let param = |name: &str, v: Value| {
            let schema = doc["paths"]["/api/v1/conversations"]["get"]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .unwrap()["schema"]
                .clone();
            let mut rooted = schema;
            rooted["components"] = doc["components"].clone();
            validator(&rooted).is_valid(&v)
        };
        // An empty value counts as absent.
        assert!(param("before", serde_json::json!("")));
        assert!(!param("before", serde_json::json!("yesterday")));
        assert!(param("limit", serde_json::json!(5000)));
        assert!(!param("limit", serde_json::json!(-1)));
        assert!(param("status", serde_json::json!("")));
        assert!(!param("status", serde_json::json!("lost")));
    }
}
