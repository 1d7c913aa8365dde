//! Cluster layer (adapter): two or more nodes on one PostgreSQL database, exactly one
//! `active` at a time (docs/high-availability.md). It owns the lease row's statements and
//! the node's life cycle; it may import the app's parts (driver, HTTP router, SIP adapter,
//! store), never the other way round.
//!
//! The lease is one row `(term, holder, holder_url, expires_at)`; its times are the
//! database's clock, so the nodes' clocks never have to agree and this module reads none.
//! A standby polls; once the row has expired it takes it over in one `UPDATE` that adds one to
//! the term. The active node renews it a few times per lease. The term is also the store's
//! fence: every commit locks the row and checks the term in its own transaction, so a node
//! that lost the lease (frozen, partitioned) can never commit again. Losing the lease — a
//! renewal refused, renewals failing for a whole lease, or a commit fenced — closes the
//! node's sockets with 1001, stops its SIP listener and turns it standby at once.
//!
//! Taking over is a restart in the core's sense: a new driver loads the open work from the
//! store and applies the restart rule at the moment of takeover.

use crate::config::Config;
use crate::config::SharedConfig;
use crate::driver::{Clock, Driver};
use crate::http::server::ConnectionLimits;
use crate::http::{AppState, router};
use crate::store::{Fence, PostgresOptions, Store, StoreError};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tower::ServiceExt;

/// Why the node stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("the cluster needs store.backend = \"postgres\"")]
    NotPostgres,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// What every node knows about the cluster, for `/api/v1/cluster`, `/readyz` and `/metrics`.
#[derive(Debug)]
pub struct ClusterView {
    node_id: String,
    nodes: Vec<String>,
    active: AtomicBool,
    term: AtomicI64,
    active_url: RwLock<Option<String>>,
    /// The active role's router; `None` on a standby.
    inner: RwLock<Option<Router>>,
}

impl ClusterView {
    pub fn new(cfg: &Config) -> Arc<ClusterView> {
        let c = &cfg.cluster;
        let mut nodes: Vec<String> = c.advertise_url.iter().cloned().collect();
        for p in &c.peers {
            if !nodes.contains(p) {
                nodes.push(p.clone());
            }
        }
        Arc::new(ClusterView {
            node_id: c.node_id.clone(),
            nodes,
            active: AtomicBool::new(false),
            term: AtomicI64::new(0),
            active_url: RwLock::new(None),
            inner: RwLock::new(None),
        })
    }

    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::SeqCst)
    }

    pub fn term(&self) -> i64 {
        self.term.load(Ordering::SeqCst)
    }

    fn active_url(&self) -> Option<String> {
        match self.active_url.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn set_active_url(&self, url: Option<String>) {
        match self.active_url.write() {
            Ok(mut g) => *g = url,
            Err(p) => *p.into_inner() = url,
        }
    }

    fn inner(&self) -> Option<Router> {
        match self.inner.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn set_inner(&self, r: Option<Router>) {
        match self.inner.write() {
            Ok(mut g) => *g = r,
            Err(p) => *p.into_inner() = r,
        }
    }

    /// `GET /api/v1/cluster`
    pub fn describe(&self) -> serde_json::Value {
        json!({
            "node_id": self.node_id,
            "role": if self.is_active() { "active" } else { "standby" },
            "term": self.term(),
            "active": self.active_url(),
            "nodes": self.nodes,
        })
    }

    fn metrics(&self) -> String {
        format!(
            "# HELP switchboard_cluster_active 1 on the active node, 0 on a standby.\n\
             # TYPE switchboard_cluster_active gauge\n\
             switchboard_cluster_active {}\n\
             # HELP switchboard_cluster_term The lease term this node last saw.\n\
             # TYPE switchboard_cluster_term gauge\n\
             switchboard_cluster_term {}\n",
            u8::from(self.is_active()),
            self.term()
        )
    }
}

/// The node's HTTP surface: cluster routes here, everything else to the active role's router,
/// or `503 standby` (the pages and `/healthz` are served in both roles).
pub fn node_router(view: Arc<ClusterView>) -> Router {
    // The pages may ask the other nodes which one is active (their CSP names them).
    let nodes = view.nodes.join(" ");
    let pages = crate::http::pages::routes().layer(axum::middleware::map_response(
        move |mut resp: Response| {
            let nodes = nodes.clone();
            async move {
                let csp = axum::http::header::CONTENT_SECURITY_POLICY;
                let widened = resp
                    .headers()
                    .get(&csp)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| {
                        v.replacen(
                            "connect-src 'self'",
                            &format!("connect-src 'self' {nodes}"),
                            1,
                        )
                    })
                    .and_then(|v| axum::http::HeaderValue::from_str(&v).ok());
                if let Some(v) = widened {
                    resp.headers_mut().insert(csp, v);
                }
                resp
            }
        },
    ));
    // Every reply names the nodes, so a page learns where to look if this node goes away.
    let named = axum::http::HeaderValue::from_str(&view.nodes.join(" ")).ok();
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/cluster", get(cluster_info))
        .merge(pages)
        .fallback(forward)
        .with_state(view)
        .layer(axum::middleware::map_response(move |mut resp: Response| {
            let named = named.clone();
            async move {
                if let Some(v) = named {
                    resp.headers_mut().insert(NODES_HEADER, v);
                }
                resp
            }
        }))
}

/// The response header through which a clustered node names every node's URL.
pub const NODES_HEADER: &str = "x-switchboard-nodes";

/// `GET /api/v1/cluster` — `{node_id, role, term, active, nodes}` (no credentials; readable
/// from the other nodes' pages).
async fn cluster_info(State(view): State<Arc<ClusterView>>) -> Response {
    (
        [(axum::http::header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")],
        axum::Json(view.describe()),
    )
        .into_response()
}

/// `GET /readyz` — the active node's readiness; `503 {"role":"standby","active":URL|null}`.
async fn readyz(State(view): State<Arc<ClusterView>>, req: Request) -> Response {
    match view.inner() {
        Some(inner) => call(inner, req).await,
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"role": "standby", "active": view.active_url()})),
        )
            .into_response(),
    }
}

/// `GET /metrics` — the active node's metrics (or none on a standby) plus the cluster gauges.
async fn metrics(State(view): State<Arc<ClusterView>>, req: Request) -> Response {
    let mut text = String::new();
    if let Some(inner) = view.inner() {
        let resp = call(inner, req).await;
        if let Ok(bytes) = axum::body::to_bytes(resp.into_body(), 16 * 1024 * 1024).await {
            text.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    text.push_str(&view.metrics());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn forward(State(view): State<Arc<ClusterView>>, req: Request) -> Response {
    match view.inner() {
        Some(inner) => call(inner, req).await,
        None if req.uri().path().starts_with("/api/") => standby(&view),
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

/// `503 {"error":"standby","message":…,"active":URL|null}`
fn standby(view: &ClusterView) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(axum::http::header::RETRY_AFTER, "1")],
        axum::Json(json!({
            "error": "standby",
            "message": "this node is a standby; use the active node",
            "active": view.active_url(),
        })),
    )
        .into_response()
}

async fn call(inner: Router, req: Request<Body>) -> Response {
    match inner.oneshot(req).await {
        Ok(r) => r,
        Err(e) => match e {},
    }
}

/// The lease statements on a connection of the cluster's own.
struct Lease {
    options: PostgresOptions,
    client: Option<tokio_postgres::Client>,
    node: String,
    url: Option<String>,
    lease_secs: f64,
}

impl Lease {
    async fn client(&mut self) -> Result<&tokio_postgres::Client, ClusterError> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = Some(self.options.connect_async().await?);
        }
        match &self.client {
            Some(c) => Ok(c),
            None => Err(StoreError::Connect("no connection".into()).into()),
        }
    }

    /// Takes the lease over if it has expired: the new term.
    async fn try_acquire(&mut self) -> Result<Option<i64>, ClusterError> {
        let (node, url, secs) = (self.node.clone(), self.url.clone(), self.lease_secs);
        let row = self
            .client()
            .await?
            .query_opt(
                "UPDATE cluster_lease SET term = term + 1, holder = $1, holder_url = $2, \
                 expires_at = now() + make_interval(secs => $3) \
                 WHERE id = 1 AND expires_at < now() RETURNING term",
                &[&node, &url, &secs],
            )
            .await;
        self.forget_on_error(row).map(|r| r.map(|r| r.get(0)))
    }

    /// Renews the lease under `term`: false when it is no longer ours.
    async fn renew(&mut self, term: i64) -> Result<bool, ClusterError> {
        let (node, secs) = (self.node.clone(), self.lease_secs);
        let row = self
            .client()
            .await?
            .query_opt(
                "UPDATE cluster_lease SET expires_at = now() + make_interval(secs => $3) \
                 WHERE id = 1 AND term = $1 AND holder = $2 RETURNING term",
                &[&term, &node, &secs],
            )
            .await;
        self.forget_on_error(row).map(|r| r.is_some())
    }

    /// Lets a standby take over at once (clean shutdown).
    async fn release(&mut self, term: i64) -> Result<(), ClusterError> {
        let node = self.node.clone();
        let r = self
            .client()
            .await?
            .execute(
                "UPDATE cluster_lease SET expires_at = now() WHERE id = 1 AND term = $1 AND holder = $2",
                &[&term, &node],
            )
            .await;
        self.forget_on_error(r).map(|_| ())
    }

    /// The current term and the active node's URL while its lease runs.
    async fn observe(&mut self) -> Result<(i64, Option<String>), ClusterError> {
        let row = self
            .client()
            .await?
            .query_one(
                "SELECT term, holder_url, expires_at > now() FROM cluster_lease WHERE id = 1",
                &[],
            )
            .await;
        let row = self.forget_on_error(row)?;
        let live: bool = row.get(2);
        Ok((row.get(0), if live { row.get(1) } else { None }))
    }

    fn forget_on_error<T>(
        &mut self,
        r: Result<T, tokio_postgres::Error>,
    ) -> Result<T, ClusterError> {
        if r.is_err() {
            self.client = None;
        }
        Ok(r?)
    }
}

/// Runs a node until `shutdown`: standby until it holds the lease, then active until it loses
/// it (or shuts down, releasing the lease so a standby takes over at once), and so on.
pub async fn run(
    cfg: Arc<Config>,
    store: Arc<Store>,
    http: TcpListener,
    view: Arc<ClusterView>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ClusterError> {
    let options = store
        .as_postgres()
        .ok_or(ClusterError::NotPostgres)?
        .options()
        .clone();
    let tls = cfg
        .server
        .tls
        .as_ref()
        .map(crate::tls::TlsSettings::load)
        .transpose()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let server = tokio::spawn(crate::http::server::serve(
        http,
        tls,
        node_router(view.clone()),
        ConnectionLimits::from_config(&cfg.limits),
        stopped(stop_rx.clone()),
    ));
    let lease = cfg.cluster.lease;
    let mut lease_row = Lease {
        options,
        client: None,
        node: cfg.cluster.node_id.clone(),
        url: cfg.cluster.advertise_url.clone(),
        lease_secs: lease.as_secs_f64(),
    };
    let poll = (lease / 5).min(Duration::from_millis(500));
    let renew_every = lease / 3;
    let mut shutdown = std::pin::pin!(shutdown);
    let result = loop {
        // Standby: watch the lease until it expires, then take it.
        let term = loop {
            match lease_row.try_acquire().await {
                Ok(Some(term)) => break Some(term),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot reach the lease"),
            }
            if let Ok((term, url)) = lease_row.observe().await {
                view.term.store(term, Ordering::SeqCst);
                view.set_active_url(url);
            }
            tokio::select! {
                _ = &mut shutdown => break None,
                _ = tokio::time::sleep(poll) => {}
            }
        };
        let Some(term) = term else { break Ok(()) };
        tracing::info!(term, node = %cfg.cluster.node_id, "took over the lease: active");
        let active = match Active::start(&cfg, &store, term).await {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the active role; standing by");
                let _ = lease_row.release(term).await;
                tokio::time::sleep(lease).await;
                continue;
            }
        };
        view.term.store(term, Ordering::SeqCst);
        view.set_active_url(cfg.cluster.advertise_url.clone());
        view.set_inner(Some(active.router.clone()));
        view.active.store(true, Ordering::SeqCst);

        // Active: renew until the lease is lost, the driver ends (a fenced commit) or shutdown.
        let mut failures = 0u32;
        let mut driver_done = active.driver_done.clone();
        let shutting_down = loop {
            tokio::select! {
                _ = &mut shutdown => break true,
                _ = driver_done.wait_for(|d| *d) => {
                    tracing::warn!(term, "the driver stopped (its commit was refused or failed): standby");
                    break false;
                }
                _ = tokio::time::sleep(renew_every) => {}
            }
            match tokio::time::timeout(renew_every, lease_row.renew(term)).await {
                Ok(Ok(true)) => failures = 0,
                Ok(Ok(false)) => {
                    tracing::warn!(term, "the lease was taken over: standby");
                    break false;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot renew the lease");
                    failures += 1;
                }
                Err(_) => {
                    tracing::warn!("renewing the lease timed out");
                    failures += 1;
                }
            }
            if failures >= 3 {
                tracing::warn!(term, "no renewal for a whole lease: standby");
                break false;
            }
        };
        view.active.store(false, Ordering::SeqCst);
        view.set_inner(None);
        view.set_active_url(None);
        active.stop().await;
        if shutting_down {
            let _ = lease_row.release(term).await;
            break Ok(());
        }
    };
    let _ = stop_tx.send(true);
    let _ = server.await;
    result
}

/// The active role: a driver restored from the store at takeover, its router, SIP and
/// outbound delivery.
struct Active {
    router: Router,
    stop_tx: watch::Sender<bool>,
    driver_done: watch::Receiver<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Active {
    async fn start(
        cfg: &Arc<Config>,
        store: &Arc<Store>,
        term: i64,
    ) -> Result<Active, ClusterError> {
        if let Some(pg) = store.as_postgres() {
            pg.set_fence(Some(Fence {
                term,
                node: cfg.cluster.node_id.clone(),
            }));
        }
        let (outbound_tx, outbound_rx) = tokio::sync::mpsc::unbounded_channel();
        let (cfg2, store2) = (cfg.clone(), store.clone());
        let (driver, handle) = tokio::task::spawn_blocking(move || {
            Driver::start(cfg2, store2, Clock::system(), Some(outbound_tx))
        })
        .await
        .map_err(|e| StoreError::Connect(e.to_string()))?
        .map_err(|e| StoreError::Connect(e.to_string()))?;
        let metrics = Arc::new(crate::metrics::Metrics::new(handle.metrics.clone()));
        let state = AppState::new(
            handle.clone(),
            store.clone(),
            SharedConfig::new(cfg.clone()),
            metrics,
        );
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|v| *v).await;
        };
        let (done_tx, driver_done) = watch::channel(false);
        let mut tasks = Vec::new();
        let run = driver.run(stopped(stop_rx.clone()));
        tasks.push(tokio::spawn(async move {
            if let Err(e) = run.await {
                tracing::warn!(error = %e, "driver ended");
            }
            let _ = done_tx.send(true);
        }));
        tasks.push(tokio::spawn(crate::outbound::run(
            handle.clone(),
            state.config(),
            outbound_rx,
            stopped(stop_rx.clone()),
        )));
        if cfg.sip.enabled {
            match UdpSocket::bind(cfg.sip.listen).await {
                Ok(sock) => {
                    let sip = crate::sip::serve(
                        sock,
                        handle.clone(),
                        state.shared_config(),
                        state.metrics.sip.clone(),
                        stopped(stop_rx.clone()),
                    );
                    tasks.push(tokio::spawn(async move {
                        let _ = sip.await;
                    }));
                }
                Err(e) => tracing::error!(error = %e, "cannot bind the SIP listener"),
            }
        }
        Ok(Active {
            router: router(state),
            stop_tx,
            driver_done,
            tasks,
        })
    }

    /// Stops the role: the driver closes every socket with 1001, SIP stops, delivery stops.
    async fn stop(self) {
        let _ = self.stop_tx.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}
