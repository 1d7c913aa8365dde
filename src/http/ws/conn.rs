//! HTTP adapter: the life of one WebSocket after its snapshot, generic over any
//! `Sink<Message>` + `Stream<Item = Result<Message, E>>` so it is tested without a network.
//! No core types here beyond the driver's frames: what a client frame means is the
//! [`ClientFrames`] implementation's business.

use crate::driver::{FrameRx, Outgoing};
use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use std::future::Future;
use std::time::Duration;
use tokio::time::MissedTickBehavior;

/// Close code sent when the driver dropped the socket because it read too slowly.
pub const CLOSE_TOO_SLOW: u16 = 1013;

/// The answer to `{"type":"ping"}`.
pub const PONG: &str = r#"{"type":"pong"}"#;

/// Heartbeat settings (`[resilience]`).
#[derive(Debug, Clone, Copy)]
pub struct Heartbeat {
    /// How often the server sends a WebSocket Ping.
    pub interval: Duration,
    /// How long without any frame from the client makes the connection lost.
    pub timeout: Duration,
}

/// What a socket's client may send, in text frames.
pub trait ClientFrames: Send {
    /// Handles one text frame; returns the text frame to answer with, if any.
    fn on_text(&mut self, text: &str) -> impl Future<Output = Option<String>> + Send;
}

/// How a socket's loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client sent a close frame.
    ClientClosed,
    /// The stream ended or failed without a close frame (TCP close, protocol error,
    /// oversized frame).
    ClientGone,
    /// The server closed it with this code (driver request, or 1013 when too slow).
    Closed(u16),
    /// No frame arrived for `heartbeat.timeout` while a ping was unanswered.
    HeartbeatTimeout,
    /// A frame could not be written (peer gone, or stalled past the heartbeat timeout).
    SendFailed,
}

/// `{"type":"error","error":code,"message":message}`.
pub fn error_frame(code: &str, message: &str) -> String {
    serde_json::json!({ "type": "error", "error": code, "message": message }).to_string()
}

/// Sends one message; a peer that does not take it within `limit` counts as gone.
async fn send<S: Sink<Message> + Unpin>(sink: &mut S, msg: Message, limit: Duration) -> bool {
    matches!(
        tokio::time::timeout(limit, sink.send(msg)).await,
        Ok(Ok(()))
    )
}

/// Most frames written between two flushes.
const BURST: usize = 256;

/// Writes `first` and the text frames queued behind it (up to [`BURST`]) into the sink,
/// then flushes once: one write to the socket for a burst of changes instead of one per
/// frame. Stops at a close frame and returns it, to be sent after these. False when the
/// peer did not take them within `limit`.
async fn write_burst<S: Sink<Message> + Unpin>(
    sink: &mut S,
    first: std::sync::Arc<str>,
    frames: &mut FrameRx,
    limit: Duration,
) -> (bool, Option<(u16, &'static str)>) {
    let written = tokio::time::timeout(limit, async {
        sink.feed(Message::Text(first.as_ref().into())).await?;
        let mut close_next = None;
        for _ in 1..BURST {
            match frames.try_recv() {
                Some(Outgoing::Text(text)) => {
                    sink.feed(Message::Text(text.as_ref().into())).await?
                }
                Some(Outgoing::Close(code, reason)) => {
                    close_next = Some((code, reason));
                    break;
                }
                None => break,
            }
        }
        sink.flush().await?;
        Ok::<_, S::Error>(close_next)
    })
    .await;
    match written {
        Ok(Ok(close_next)) => (true, close_next),
        _ => (false, None),
    }
}

/// Sends a close frame (best effort: the peer may already be gone).
async fn close<S: Sink<Message> + Unpin>(sink: &mut S, code: u16, reason: &str, limit: Duration) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = send(sink, Message::Close(Some(frame)), limit).await;
}

/// Runs one socket until it ends: sends `first` (the snapshot), then in one `select!`
/// - forwards the driver's frames (`Outgoing::Close` becomes a close frame with its code;
///   the channel closing means the driver dropped the socket: close 1013);
/// - reads client frames, every one of them a sign of life; text goes to `input`, whose
///   answer is sent back; a binary frame gets an error frame; a close frame ends the loop;
/// - every `heartbeat.interval` sends a Ping, unless a ping is already unanswered and no
///   frame at all arrived for `heartbeat.timeout` on `now_ms` (the driver's monotonic clock):
///   then the connection is lost and the loop ends at once, without waiting on the peer.
///
/// Requiring an unanswered ping means a jump of the clock alone never cuts a client that
/// keeps answering; with a real clock it changes nothing, since a ping goes out every
/// interval. The caller detaches the socket whatever the [`End`].
pub async fn run<S, R, E, I, C>(
    mut sink: S,
    mut stream: R,
    first: String,
    mut frames: FrameRx,
    mut input: I,
    now_ms: C,
    heartbeat: Heartbeat,
) -> End
where
    S: Sink<Message> + Unpin + Send,
    R: Stream<Item = Result<Message, E>> + Unpin + Send,
    E: std::fmt::Display,
    I: ClientFrames,
    C: Fn() -> u64 + Send,
{
    let limit = heartbeat.timeout;
    let timeout_ms = heartbeat.timeout.as_millis() as u64;
    if !send(&mut sink, Message::Text(first.into()), limit).await {
        return End::SendFailed;
    }
    let mut last_seen = now_ms();
    let mut ping_unanswered = false;
    let mut tick = tokio::time::interval(heartbeat.interval.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The first tick completes at once; the heartbeat starts one interval from now.
    tick.tick().await;
    loop {
        tokio::select! {
            out = frames.recv() => match out {
                Some(Outgoing::Text(text)) => {
                    // Everything queued by now goes out with one flush; a close frame
                    // among them is sent after the texts before it.
                    let (written, close_next) = write_burst(&mut sink, text, &mut frames, limit).await;
                    if !written {
                        return End::SendFailed;
                    }
                    if let Some((code, reason)) = close_next {
                        close(&mut sink, code, reason, limit).await;
                        return End::Closed(code);
                    }
                }
                Some(Outgoing::Close(code, reason)) => {
                    close(&mut sink, code, reason, limit).await;
                    return End::Closed(code);
                }
                None => {
                    close(&mut sink, CLOSE_TOO_SLOW, "too slow", limit).await;
                    return End::Closed(CLOSE_TOO_SLOW);
                }
            },
            msg = stream.next() => {
                let msg = match msg {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "websocket read failed");
                        return End::ClientGone;
                    }
                    None => return End::ClientGone,
                };
                last_seen = now_ms();
                ping_unanswered = false;
                let answer = match msg {
                    Message::Text(text) => input.on_text(text.as_str()).await,
                    Message::Binary(_) => Some(error_frame(
                        "invalid_request",
                        "binary frames are not understood: send JSON text frames",
                    )),
                    Message::Ping(_) | Message::Pong(_) => None,
                    Message::Close(_) => {
                        // Flushes the close reply the protocol layer queued.
                        let _ = tokio::time::timeout(limit, sink.close()).await;
                        return End::ClientClosed;
                    }
                };
                if let Some(answer) = answer {
                    if !send(&mut sink, Message::Text(answer.into()), limit).await {
                        return End::SendFailed;
                    }
                }
            },
            _ = tick.tick() => {
                if ping_unanswered && now_ms().saturating_sub(last_seen) >= timeout_ms {
                    return End::HeartbeatTimeout;
                }
                if !send(&mut sink, Message::Ping(Bytes::new()), limit).await {
                    return End::SendFailed;
                }
                ping_unanswered = true;
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::sync::mpsc;

    /// Answers pings; everything else gets an error frame.
    struct PingOnly;

    impl ClientFrames for PingOnly {
        async fn on_text(&mut self, text: &str) -> Option<String> {
            match serde_json::from_str::<serde_json::Value>(text) {
                Ok(v) if v["type"] == "ping" => Some(PONG.to_string()),
                _ => Some(error_frame("invalid_request", "not a ping")),
            }
        }
    }

    struct Peer {
        /// What the loop sent.
        sent: mpsc::UnboundedReceiver<Message>,
        /// What the client sends (`None` = the stream ends).
        client: mpsc::UnboundedSender<Result<Message, String>>,
        /// The driver's side of the frame channel.
        driver: crate::fanout::FrameTx,
        clock: Arc<AtomicU64>,
        task: tokio::task::JoinHandle<End>,
    }

    /// Starts the loop on in-memory channels.
    fn start(heartbeat: Heartbeat) -> Peer {
        let (sent_tx, sent) = mpsc::unbounded_channel::<Message>();
        let sink = futures_util::sink::unfold(sent_tx, |tx, m: Message| async move {
            tx.send(m).map_err(|_| "closed")?;
            Ok::<_, &'static str>(tx)
        });
        let (client, mut client_rx) = mpsc::unbounded_channel::<Result<Message, String>>();
        let stream = futures_util::stream::poll_fn(move |cx| client_rx.poll_recv(cx));
        let (driver, frames) = crate::fanout::channel(16);
        let clock = Arc::new(AtomicU64::new(1_000));
        let c = clock.clone();
        let task = tokio::spawn(run(
            Box::pin(sink),
            stream,
            r#"{"type":"snapshot"}"#.to_string(),
            frames,
            PingOnly,
            move || c.load(Ordering::SeqCst),
            heartbeat,
        ));
        Peer {
            sent,
            client,
            driver,
            clock,
            task,
        }
    }

    const SLOW: Heartbeat = Heartbeat {
        interval: Duration::from_secs(3600),
        timeout: Duration::from_secs(7200),
    };

    async fn next(p: &mut Peer) -> Message {
        tokio::time::timeout(Duration::from_secs(5), p.sent.recv())
            .await
            .expect("a frame within 5 s")
            .expect("loop still sending")
    }

    async fn next_text(p: &mut Peer) -> serde_json::Value {
        loop {
            match next(p).await {
                Message::Text(t) => return serde_json::from_str(t.as_str()).expect("json"),
                Message::Ping(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    fn text(s: &str) -> Result<Message, String> {
        Ok(Message::Text(s.into()))
    }

    #[tokio::test]
    async fn snapshot_first_then_ping_is_answered_with_pong() {
        let mut p = start(SLOW);
        assert_eq!(next_text(&mut p).await["type"], "snapshot");
        p.client.send(text(r#"{"type":"ping"}"#)).unwrap();
        assert_eq!(next_text(&mut p).await, serde_json::json!({"type": "pong"}));
    }

    #[tokio::test]
    async fn frames_queued_in_a_burst_go_out_in_order_and_a_close_among_them_comes_after_them() {
        let mut p = start(SLOW);
        next_text(&mut p).await;
        for i in 0..5 {
            p.driver
                .push(None, Outgoing::Text(Arc::from(format!(r#"{{"n":{i}}}"#))))
                .unwrap();
        }
        p.driver
            .push(None, Outgoing::Close(4001, "session taken over"))
            .unwrap();
        p.driver
            .push(None, Outgoing::Text(Arc::from(r#"{"n":99}"#)))
            .unwrap();
        for i in 0..5 {
            assert_eq!(next_text(&mut p).await["n"], i);
        }
        match next(&mut p).await {
            Message::Close(Some(f)) => assert_eq!(f.code, 4001),
            other => panic!("expected the close frame, got {other:?}"),
        }
        assert_eq!(p.task.await.unwrap(), End::Closed(4001));
    }

    #[tokio::test]
    async fn garbage_frame_gets_an_error_frame_and_the_loop_continues() {
        let mut p = start(SLOW);
        next_text(&mut p).await;
        p.client.send(text("{not json")).unwrap();
        let err = next_text(&mut p).await;
        assert_eq!(err["type"], "error");
        assert_eq!(err["error"], "invalid_request");
        assert!(err["message"].is_string());
        p.client
            .send(Ok(Message::Binary(Bytes::from_static(b"\x00\x01"))))
            .unwrap();
        assert_eq!(next_text(&mut p).await["type"], "error");
        // Still alive: a ping is answered and driver frames are forwarded.
        p.client.send(text(r#"{"type":"ping"}"#)).unwrap();
        assert_eq!(next_text(&mut p).await["type"], "pong");
        p.driver
            .send(Outgoing::Text(Arc::from(r#"{"type":"presence"}"#)))
            .await
            .unwrap();
        assert_eq!(next_text(&mut p).await["type"], "presence");
        assert!(!p.task.is_finished());
    }

    #[tokio::test]
    async fn driver_close_becomes_a_close_frame_with_its_code() {
        let mut p = start(SLOW);
        next_text(&mut p).await;
        p.driver
            .send(Outgoing::Close(4001, "session taken over"))
            .await
            .unwrap();
        match next(&mut p).await {
            Message::Close(Some(f)) => {
                assert_eq!(f.code, 4001);
                assert_eq!(f.reason.as_str(), "session taken over");
            }
            other => panic!("expected a close frame, got {other:?}"),
        }
        assert_eq!(p.task.await.unwrap(), End::Closed(4001));
    }

    #[tokio::test]
    async fn dropped_by_the_driver_closes_with_1013() {
        let mut p = start(SLOW);
        next_text(&mut p).await;
        let Peer {
            mut sent,
            driver,
            task,
            ..
        } = p;
        drop(driver);
        let got = tokio::time::timeout(Duration::from_secs(5), sent.recv())
            .await
            .expect("a close frame within 5 s");
        match got.expect("loop still sending") {
            Message::Close(Some(f)) => assert_eq!(f.code, CLOSE_TOO_SLOW),
            other => panic!("expected a close frame, got {other:?}"),
        }
        assert_eq!(task.await.unwrap(), End::Closed(CLOSE_TOO_SLOW));
    }

    #[tokio::test]
    async fn client_close_or_stream_end_ends_the_loop() {
        let mut p = start(SLOW);
        next_text(&mut p).await;
        p.client.send(Ok(Message::Close(None))).unwrap();
        assert_eq!(p.task.await.unwrap(), End::ClientClosed);

        let mut p = start(SLOW);
        next_text(&mut p).await;
        p.client.send(Err("connection reset".into())).unwrap();
        assert_eq!(p.task.await.unwrap(), End::ClientGone);

        let mut p = start(SLOW);
        next_text(&mut p).await;
        drop(p.client);
        assert_eq!(p.task.await.unwrap(), End::ClientGone);
    }

    const FAST: Heartbeat = Heartbeat {
        interval: Duration::from_millis(20),
        timeout: Duration::from_secs(15),
    };

    #[tokio::test(start_paused = true)]
    async fn silent_client_is_lost_once_the_timeout_passes_with_a_ping_unanswered() {
        let mut p = start(FAST);
        next_text(&mut p).await;
        assert!(matches!(next(&mut p).await, Message::Ping(_)));
        assert!(matches!(next(&mut p).await, Message::Ping(_)));
        assert!(!p.task.is_finished(), "not lost before the timeout");
        p.clock.fetch_add(15_000, Ordering::SeqCst);
        let end = tokio::time::timeout(Duration::from_secs(5), p.task)
            .await
            .expect("lost within a few ticks")
            .unwrap();
        assert_eq!(end, End::HeartbeatTimeout);
    }

    #[tokio::test(start_paused = true)]
    async fn client_answering_pings_survives_a_clock_jump() {
        let mut p = start(FAST);
        next_text(&mut p).await;
        for _ in 0..5 {
            assert!(matches!(next(&mut p).await, Message::Ping(_)));
            p.client.send(Ok(Message::Pong(Bytes::new()))).unwrap();
            // Let the loop read the pong before the clock jumps.
            p.client.send(text(r#"{"type":"ping"}"#)).unwrap();
            assert_eq!(next_text(&mut p).await["type"], "pong");
            p.clock.fetch_add(60_000, Ordering::SeqCst);
        }
        assert!(!p.task.is_finished());
    }
}
