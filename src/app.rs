//! Application layer: wires the store, the driver, the HTTP router and the SIP listener
//! together on listeners bound by the caller (port 0 in tests), and runs them until shutdown.

use crate::config::{Config, SharedConfig};
use crate::driver::{Clock, Driver, Handle};
use crate::http::{AppState, router};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::tls::TlsSettings;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

/// Sockets bound before the application starts.
#[derive(Debug)]
pub struct Listeners {
    pub http: TcpListener,
    pub sip: Option<UdpSocket>,
}

impl Listeners {
    /// Binds the configured addresses.
    pub async fn bind(cfg: &Config) -> std::io::Result<Listeners> {
        let http = TcpListener::bind(cfg.server.http_listen).await?;
        let sip = if cfg.sip.enabled {
            Some(UdpSocket::bind(cfg.sip.listen).await?)
        } else {
            None
        };
        Ok(Listeners { http, sip })
    }
}

/// A built application, ready to run.
pub struct App {
    pub handle: Handle,
    pub state: AppState,
    driver: Driver,
    listeners: Listeners,
    tls: Option<TlsSettings>,
    outbound_rx: tokio::sync::mpsc::UnboundedReceiver<crate::core::model::OutboxItem>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("listeners", &self.listeners)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Why the application stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Driver(#[from] crate::driver::DriverError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

impl App {
    /// Loads the store's state into a new core (applying the restart rule), and the TLS
    /// certificate when `[server.tls]` is set (the HTTP listener then serves HTTPS).
    pub fn build(
        cfg: Arc<Config>,
        listeners: Listeners,
        store: Arc<Store>,
        clock: Clock,
    ) -> Result<App, AppError> {
        let tls = cfg.server.tls.as_ref().map(TlsSettings::load).transpose()?;
        let (outbound_tx, outbound_rx) = tokio::sync::mpsc::unbounded_channel();
        let (driver, handle) = Driver::start(cfg.clone(), store.clone(), clock, Some(outbound_tx))?;
        let metrics = Arc::new(Metrics::new(handle.metrics.clone()));
        let state = AppState::new(handle.clone(), store, SharedConfig::new(cfg), metrics);
        Ok(App {
            handle,
            state,
            driver,
            listeners,
            tls,
            outbound_rx,
        })
    }

    /// The TLS settings when the HTTP listener serves HTTPS (reloadable: certificate renewal).
    pub fn tls(&self) -> Option<TlsSettings> {
        self.tls.clone()
    }

    pub fn http_addr(&self) -> std::io::Result<SocketAddr> {
        self.listeners.http.local_addr()
    }

    pub fn sip_addr(&self) -> Option<SocketAddr> {
        self.listeners
            .sip
            .as_ref()
            .and_then(|s| s.local_addr().ok())
    }

    /// Serves until `shutdown` resolves: then stops accepting, lets the driver finish its
    /// batch and close every socket with 1001 so panels resume after the restart.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), AppError> {
        let App {
            handle,
            state,
            driver,
            listeners,
            tls,
            outbound_rx,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|v| *v).await;
        };
        let driver_task = tokio::spawn(driver.run(stopped(stop_rx.clone())));
        let outbound_task = tokio::spawn(crate::outbound::run(
            handle.clone(),
            state.config(),
            outbound_rx,
            stopped(stop_rx.clone()),
        ));
        let sip_task = listeners.sip.map(|sock| {
            tokio::spawn(crate::sip::serve(
                sock,
                handle.clone(),
                state.shared_config(),
                state.metrics.sip.clone(),
                stopped(stop_rx.clone()),
            ))
        });
        let limits = crate::http::server::ConnectionLimits::from_config(&state.config().limits);
        let app = router(state);
        let server_task = tokio::spawn(crate::http::server::serve(
            listeners.http,
            tls,
            app,
            limits,
            stopped(stop_rx.clone()),
        ));
        // Stop on the caller's signal, or at once if the driver ends by itself (its store
        // failed): serving on without a core would only answer 503, so the process exits with
        // the error and the service manager restarts it from the store.
        let mut driver_task = driver_task;
        let ended_early = tokio::select! {
            _ = shutdown => None,
            r = &mut driver_task => Some(r),
        };
        if ended_early.is_some() {
            tracing::error!("the core's driver stopped; shutting down");
        }
        let _ = stop_tx.send(true);
        let driver_result = match ended_early {
            Some(r) => r,
            None => driver_task.await,
        };
        let _ = server_task.await;
        outbound_task.abort();
        if let Some(t) = sip_task {
            let _ = t.await;
        }
        match driver_result {
            Ok(r) => r.map_err(AppError::from),
            Err(e) => Err(AppError::Io(std::io::Error::other(e.to_string()))),
        }
    }
}
