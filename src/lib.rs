//! switchboard: contact-center routing that loses no customer to a lost agent connection.
//!
//! Layers (a module may import only from the layers below it):
//! - pure: [`config`], [`wheel`], [`core`] (the domain state machine), `sip::message` and
//!   `sip::registrar` — no tokio, axum, redb or sockets, no clock reads;
//! - [`store`]: redb tables and the record codec;
//! - [`driver`]: the one loop that reads the clock, owns the core and commits batches;
//!   [`fanout`]: its per-socket frame queues, coalesced per entity;
//! - [`metrics`]: the Prometheus registry, built at start-up and handed to the adapters;
//! - adapters: [`http`] (REST, WebSockets, pages), the SIP UDP listener;
//! - adapters: [`tls`] (HTTPS on the HTTP listener);
//! - [`app`]: wires listeners, store, driver and adapters together;
//! - [`service`]: the process under a service manager (systemd notify and watchdog, signals,
//!   configuration reload).
//! - `demo` (the default-on cargo feature `demo`): `switchboard demo`, a simulation driving a
//!   real [`app`] in-process.

pub mod app;
pub mod cluster;
pub mod config;
pub use switchboard_core::core;
#[cfg(feature = "demo")]
pub mod demo;
pub mod driver;
pub mod fanout;
pub mod http;
pub mod metrics;
pub mod outbound;
pub mod service;
pub mod sip;
pub mod store;
pub mod tls;
pub use switchboard_core::wheel;
