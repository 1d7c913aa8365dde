//! Adapter layer: delivers agent replies on sms, social and email to the configured
//! `[outbound]` webhooks. The outbox is persisted by the core; this worker only makes the
//! HTTP POST and reports each attempt back, and the core schedules retries with backoff,
//! so a restart loses nothing.

use crate::config::Config;
use crate::core::Command;
use crate::core::model::{Medium, OutboxItem};
use crate::driver::Handle;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedReceiver;

/// The JSON body posted to the webhook.
#[derive(Debug, serde::Serialize)]
struct Payload<'a> {
    message_id: uuid::Uuid,
    conversation_id: uuid::Uuid,
    medium: &'static str,
    to: &'a str,
    subject: Option<&'a str>,
    text: &'a str,
    /// Null for a system message (a prompt).
    agent: Option<&'a str>,
    attempt: u32,
}

fn webhook(cfg: &Config, medium: Medium) -> Option<&str> {
    match medium {
        Medium::Sms => cfg.outbound.sms.as_deref(),
        Medium::Social => cfg.outbound.social.as_deref(),
        Medium::Email => cfg.outbound.email.as_deref(),
        _ => None,
    }
}

/// Runs until `stop` resolves.
pub async fn run(
    handle: Handle,
    cfg: Arc<Config>,
    mut rx: UnboundedReceiver<OutboxItem>,
    stop: impl std::future::Future<Output = ()>,
) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    tokio::pin!(stop);
    loop {
        let item = tokio::select! {
            _ = &mut stop => return,
            item = rx.recv() => match item { Some(i) => i, None => return },
        };
        let client = client.clone();
        let handle = handle.clone();
        let url = webhook(&cfg, item.medium).map(String::from);
        let timeout = cfg.outbound.timeout;
        tokio::spawn(async move {
            let result = match url {
                None => Err(format!(
                    "no [outbound] webhook configured for {}",
                    item.medium.as_str()
                )),
                Some(url) => {
                    match tokio::time::timeout(timeout, post(&client, &url, &item)).await {
                        Ok(r) => r,
                        Err(_) => Err("timed out".to_string()),
                    }
                }
            };
            if let Err(e) = &result {
                tracing::warn!(message = %item.message_id, error = %e, "outbound delivery failed");
            }
            let _ = handle
                .call(Command::OutboxAttempt {
                    message: item.message_id,
                    delivered: result.is_ok(),
                    error: result.err(),
                })
                .await;
        });
    }
}

async fn post<C>(
    client: &Client<C, Full<Bytes>>,
    url: &str,
    item: &OutboxItem,
) -> Result<(), String>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let body = serde_json::to_vec(&Payload {
        message_id: item.message_id,
        conversation_id: item.conversation_id,
        medium: item.medium.as_str(),
        to: &item.to,
        subject: item.subject.as_deref(),
        text: &item.text,
        agent: Some(item.agent.as_str()).filter(|a| !a.is_empty()),
        attempt: item.attempts + 1,
    })
    .map_err(|e| e.to_string())?;
    let req = hyper::Request::post(url)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header("idempotency-key", item.message_id.to_string())
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let _ = resp.into_body().collect().await;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("webhook answered {status}"))
    }
}
