//! HTTP adapter: what every handler can reach — the driver's handle, the store, the
//! configuration in force and the metrics. Imports nothing from the other HTTP modules.

use crate::config::{Config, SharedConfig};
use crate::driver::Handle;
use crate::metrics::Metrics;
use crate::store::Store;
use std::sync::Arc;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub handle: Handle,
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    config: SharedConfig,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppState")
    }
}

impl AppState {
    pub fn new(
        handle: Handle,
        store: Arc<Store>,
        config: SharedConfig,
        metrics: Arc<Metrics>,
    ) -> AppState {
        AppState {
            handle,
            store,
            metrics,
            config,
        }
    }

    /// The configuration in force (it changes on reload).
    pub fn config(&self) -> Arc<Config> {
        self.config.get()
    }

    /// The replaceable configuration itself (for reloads and long-lived readers).
    pub fn shared_config(&self) -> SharedConfig {
        self.config.clone()
    }
}
