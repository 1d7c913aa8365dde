//! HTTP adapter: the accept loop for plain HTTP and HTTPS. Every connection a stranger can
//! open has a bound: at most `limits.max_connections` at once (WebSockets included, until
//! they close; beyond, new connections wait in the kernel's backlog until one ends), the
//! request head within `limits.http_header_timeout`, each request body within
//! `limits.http_body_timeout`, and a connection on which no byte moves for
//! `limits.http_idle_timeout` is closed. No rule lives here; it imports the router and TLS.

use crate::config::LimitsConfig;
use crate::tls::TlsSettings;
use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::extract::connect_info::IntoMakeServiceWithConnectInfo;
use hyper::body::{Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::Service as _;

/// Longest a client may take to finish the TLS handshake before its connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest the server waits for open requests to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The idle watch looks at a connection this many times per idle timeout.
const IDLE_CHECKS: u32 = 4;

/// The connection bounds of one listener (from `[limits]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
}

impl ConnectionLimits {
    pub fn from_config(l: &LimitsConfig) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: l.max_connections,
            header_timeout: l.http_header_timeout,
            body_timeout: l.http_body_timeout,
            idle_timeout: l.http_idle_timeout,
        }
    }
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits::from_config(&LimitsConfig::default())
    }
}

/// Serves `app` on `listener` (over TLS when `tls` is set) until `stop` resolves; then stops
/// accepting and waits (at most a few seconds) for requests in flight. WebSocket connections
/// are upgraded off the HTTP connection and end when the driver closes them (1001).
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsSettings>,
    app: Router,
    limits: ConnectionLimits,
    stop: impl Future<Output = ()>,
) {
    let body_timeout = limits.body_timeout;
    let app =
        app.layer(axum::middleware::map_request(
            move |req: Request| async move {
                req.map(|b| Body::new(DeadlineBody::new(b, body_timeout)))
            },
        ));
    let make: IntoMakeServiceWithConnectInfo<Router, SocketAddr> =
        app.into_make_service_with_connect_info::<SocketAddr>();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        // At the cap, stop accepting until a connection ends (idle ones are closed by the
        // idle watch): new clients wait in the backlog instead of taking file descriptors.
        let permit = tokio::select! {
            _ = &mut stop => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = &mut stop => break,
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let Ok(svc) = make.clone().call(peer).await;
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let activity = Arc::new(AtomicU64::new(0));
            let io = Watched {
                inner: tcp,
                activity: activity.clone(),
                _slot: permit,
            };
            let svc = TowerToHyperService::new(svc);
            match tls {
                None => {
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(io), svc)
                        .into_owned();
                    watch_idle(watcher.watch(conn), &activity, limits.idle_timeout, peer).await;
                }
                Some(tls) => {
                    let accept = tls.acceptor().accept(io);
                    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .into_owned();
                    watch_idle(watcher.watch(conn), &activity, limits.idle_timeout, peer).await;
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open after the shutdown grace; closing them");
    }
}

/// Runs `conn` until it ends (or hands its socket to a WebSocket), closing it when no byte
/// has moved in either direction for `idle` (checked without reading the clock: the byte
/// counter must stand still for [`IDLE_CHECKS`] periods of `idle / IDLE_CHECKS`).
async fn watch_idle<F, E>(conn: F, activity: &AtomicU64, idle: Duration, peer: SocketAddr)
where
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    tokio::pin!(conn);
    let period = (idle / IDLE_CHECKS).max(Duration::from_millis(1));
    let mut seen = activity.load(Ordering::Relaxed);
    let mut still = 0;
    loop {
        tokio::select! {
            r = &mut conn => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            _ = tokio::time::sleep(period) => {
                let now = activity.load(Ordering::Relaxed);
                if now == seen {
                    still += 1;
                    if still >= IDLE_CHECKS {
                        tracing::debug!(%peer, "idle HTTP connection closed");
                        return;
                    }
                } else {
                    seen = now;
                    still = 0;
                }
            }
        }
    }
}

/// A connection's socket that counts the bytes moved and holds its connection slot until it
/// is dropped (after the WebSocket it may have become closes).
struct Watched<I> {
    inner: I,
    activity: Arc<AtomicU64>,
    _slot: OwnedSemaphorePermit,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.activity.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.activity.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &r {
            self.activity.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The error of a request body not received within `limits.http_body_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not received within limits.http_body_timeout")]
pub struct BodyTimeout;

/// A request body that fails with [`BodyTimeout`] once its deadline passes.
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl DeadlineBody {
    fn new(inner: Body, timeout: Duration) -> DeadlineBody {
        DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimeout))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
