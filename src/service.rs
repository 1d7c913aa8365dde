//! Service layer (process): runs a built [`App`] as a daemon under a service manager — systemd
//! readiness and watchdog notifications over `$NOTIFY_SOCKET`, SIGTERM/SIGINT for a graceful
//! stop, SIGHUP to reload the configuration file. Above [`app`](crate::app); nothing imports it
//! but `main`. No crate beyond std and tokio: the notify protocol is one datagram per message.

use crate::app::{App, AppError};
use crate::config::{Config, ConfigError};
use crate::driver::Handle;
use crate::http::AppState;
use crate::tls::{TlsError, TlsSettings};
use std::collections::BTreeSet;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// sd_notify
// ---------------------------------------------------------------------------------------------

/// Sends state changes to the service manager (`sd_notify(3)` protocol): one datagram per
/// message to the socket named by `$NOTIFY_SOCKET` (a path, or an abstract name starting with
/// `@`). Without that variable every call does nothing.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
}

impl Notifier {
    /// The notifier for `$NOTIFY_SOCKET`, or a silent one when it is unset or unusable.
    pub fn from_env() -> Notifier {
        match std::env::var("NOTIFY_SOCKET") {
            Ok(name) if !name.is_empty() => match Notifier::connect(&name) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(socket = %name, error = %e, "NOTIFY_SOCKET is unusable; not notifying the service manager");
                    Notifier::disabled()
                }
            },
            _ => Notifier::disabled(),
        }
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier { target: None }
    }

    /// A notifier for the socket `name`: `/path/to/socket` or `@abstract-name`.
    pub fn connect(name: &str) -> std::io::Result<Notifier> {
        let addr = if let Some(abstract_name) = name.strip_prefix('@') {
            abstract_addr(abstract_name)?
        } else if name.starts_with('/') {
            std::os::unix::net::SocketAddr::from_pathname(name)?
        } else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "only path and abstract (@) notify sockets are supported",
            ));
        };
        let sock = UnixDatagram::unbound()?;
        Ok(Notifier {
            target: Some((sock, addr)),
        })
    }

    /// Whether a service manager is listening.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `state` (newline-separated `KEY=value` assignments, e.g. `READY=1`).
    pub fn notify(&self, state: &str) {
        if let Some((sock, addr)) = &self.target {
            if let Err(e) = sock.send_to_addr(state.as_bytes(), addr) {
                tracing::debug!(error = %e, state, "sd_notify failed");
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn abstract_addr(name: &str) -> std::io::Result<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
}

#[cfg(not(target_os = "linux"))]
fn abstract_addr(_name: &str) -> std::io::Result<std::os::unix::net::SocketAddr> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "abstract sockets exist on Linux only",
    ))
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, when the watchdog is enabled
/// for this process (`$WATCHDOG_PID` unset or ours).
pub fn watchdog_interval_from_env() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Sends `WATCHDOG=1` every `every`, but only after the driver has answered a probe within
/// that time: a wedged driver stops the pings and the service manager restarts the process.
/// Runs until the driver is gone.
pub async fn watchdog(handle: Handle, notifier: Arc<Notifier>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match tokio::time::timeout(every, handle.inspect(|_| ())).await {
            Ok(Ok(())) => notifier.notify("WATCHDOG=1"),
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::warn!(
                    waited_ms = every.as_millis() as u64,
                    "the driver did not answer the watchdog probe; not pinging the service manager"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reload
// ---------------------------------------------------------------------------------------------

/// Why a reload was refused (the configuration in force stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no configuration file was given at start (--config); nothing to reload")]
    NoFile,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("the driver is not running")]
    Driver,
}

/// What a reload changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    pub agents_added: Vec<String>,
    pub agents_removed: Vec<String>,
    pub queues_added: Vec<String>,
    pub queues_removed: Vec<String>,
    /// Sections that changed and are in force now (`agents`, `queues`, `supervisors`,
    /// `api_keys`, `limits`, `server.tls` certificate files).
    pub applied: Vec<&'static str>,
    /// Keys that changed in the file but take effect only after a restart; the running
    /// server keeps their old values.
    pub needs_restart: Vec<&'static str>,
}

impl ReloadReport {
    /// Whether the file changed nothing.
    pub fn is_empty(&self) -> bool {
        self.applied.is_empty() && self.needs_restart.is_empty()
    }
}

fn ids_diff<T>(old: &[T], new: &[T], id: impl Fn(&T) -> &str) -> (Vec<String>, Vec<String>) {
    let old: BTreeSet<&str> = old.iter().map(&id).collect();
    let new: BTreeSet<&str> = new.iter().map(&id).collect();
    (
        new.difference(&old).map(|s| s.to_string()).collect(),
        old.difference(&new).map(|s| s.to_string()).collect(),
    )
}

/// The configuration to run with after reading `new` while `old` is in force: agents, queues
/// (with their prompts), supervisors, API keys and limits come from `new`; everything else
/// (listen addresses, data directory, SIP listener, resilience timings, log, outbound) keeps
/// its old value until a restart. The TLS certificate and key paths follow `new` while TLS
/// stays on. Pure.
pub fn merge(old: &Config, new: &Config) -> (Config, ReloadReport) {
    let mut report = ReloadReport::default();
    (report.agents_added, report.agents_removed) =
        ids_diff(&old.agents, &new.agents, |a| a.id.as_str());
    (report.queues_added, report.queues_removed) =
        ids_diff(&old.queues, &new.queues, |q| q.id.as_str());
    let mut merged = old.clone();
    if old.agents != new.agents {
        report.applied.push("agents");
        merged.agents = new.agents.clone();
    }
    if old.queues != new.queues {
        report.applied.push("queues");
        merged.queues = new.queues.clone();
    }
    if old.supervisors != new.supervisors {
        report.applied.push("supervisors");
        merged.supervisors = new.supervisors.clone();
    }
    if old.api_keys != new.api_keys {
        report.applied.push("api_keys");
        merged.api_keys = new.api_keys.clone();
    }
    if old.limits != new.limits {
        report.applied.push("limits");
        merged.limits = new.limits.clone();
    }
    match (&old.server.tls, &new.server.tls) {
        (Some(_), Some(n)) => {
            // Certificate files are read again on every reload (renewals keep their paths).
            report.applied.push("server.tls");
            merged.server.tls = Some(n.clone());
        }
        (None, None) => {}
        _ => report.needs_restart.push("server.tls"),
    }
    let restart_only: [(&'static str, bool); 8] = [
        (
            "server.http_listen",
            old.server.http_listen != new.server.http_listen,
        ),
        (
            "server.data_dir",
            old.server.data_dir != new.server.data_dir,
        ),
        ("sip.enabled", old.sip.enabled != new.sip.enabled),
        ("sip.listen", old.sip.listen != new.sip.listen),
        (
            "sip",
            old.sip != new.sip
                && old.sip.enabled == new.sip.enabled
                && old.sip.listen == new.sip.listen,
        ),
        ("resilience", old.resilience != new.resilience),
        ("log", old.log != new.log),
        ("outbound", old.outbound != new.outbound),
    ];
    report.needs_restart.extend(
        restart_only
            .into_iter()
            .filter(|(_, changed)| *changed)
            .map(|(k, _)| k),
    );
    (merged, report)
}

/// Reads and validates the configuration file at `path` and installs what can change at run
/// time (see [`merge`]) in the HTTP state, the SIP listener and the core. On any error
/// nothing changes.
pub async fn reload(
    path: &Path,
    state: &AppState,
    handle: &Handle,
    tls: Option<&TlsSettings>,
) -> Result<ReloadReport, ReloadError> {
    let new = Config::load_resolved(path)?;
    let old = state.config();
    let (merged, report) = merge(&old, &new);
    merged.validate()?;
    if let (Some(settings), Some(files)) = (tls, &merged.server.tls) {
        settings.reload(files)?;
    }
    let merged = Arc::new(merged);
    state.shared_config().set(merged.clone());
    handle
        .reload(merged)
        .await
        .map_err(|_| ReloadError::Driver)?;
    // Returns once the core has applied it.
    handle
        .inspect(|_| ())
        .await
        .map_err(|_| ReloadError::Driver)?;
    Ok(report)
}

fn log_report(path: &Path, report: &ReloadReport) {
    if report.is_empty() {
        tracing::info!(config = %path.display(), "configuration reloaded: nothing changed");
        return;
    }
    tracing::info!(
        config = %path.display(),
        applied = ?report.applied,
        agents_added = ?report.agents_added,
        agents_removed = ?report.agents_removed,
        queues_added = ?report.queues_added,
        queues_removed = ?report.queues_removed,
        "configuration reloaded"
    );
    if !report.needs_restart.is_empty() {
        tracing::warn!(
            keys = ?report.needs_restart,
            "these settings changed in the file but apply only after a restart; the old values stay in force"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The daemon
// ---------------------------------------------------------------------------------------------

/// Why the service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    App(#[from] AppError),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Runs `app` as a daemon until SIGTERM or SIGINT: `READY=1` once the listeners are bound and
/// the driver answers, `WATCHDOG=1` while the driver keeps answering, SIGHUP reloads
/// `config_path` (`RELOADING=1` … `READY=1`), `STOPPING=1` when the graceful stop begins.
pub async fn run(app: App, config_path: Option<PathBuf>) -> Result<(), ServiceError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(ServiceError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ServiceError::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(ServiceError::Signals)?;
    let notifier = Arc::new(Notifier::from_env());
    let handle = app.handle.clone();
    let state = app.state.clone();
    let tls = app.tls();
    let http = app.http_addr().ok();
    let sip = app.sip_addr();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();

    let control = tokio::spawn(async move {
        // The driver starts with `App::run`; its first answer means the core is loaded and
        // every listener is being served.
        if handle.inspect(|_| ()).await.is_err() {
            return;
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        let show = |a: Option<std::net::SocketAddr>| a.map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(
            http = %show(http),
            sip = %show(sip),
            scheme,
            "switchboard ready"
        );
        notifier.notify(&match http {
            Some(a) => format!("READY=1\nSTATUS=serving {scheme}://{a}"),
            None => "READY=1".to_owned(),
        });
        let watchdog_task = watchdog_interval_from_env()
            .map(|every| tokio::spawn(watchdog(handle.clone(), notifier.clone(), every)));
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    notifier.notify("RELOADING=1\nSTATUS=reloading the configuration");
                    match &config_path {
                        Some(path) => match reload(path, &state, &handle, tls.as_ref()).await {
                            Ok(report) => log_report(path, &report),
                            Err(e) => tracing::error!(
                                config = %path.display(),
                                "reload refused, the configuration in force stays: {e}"
                            ),
                        },
                        None => tracing::warn!("{}", ReloadError::NoFile),
                    }
                    notifier.notify("READY=1\nSTATUS=serving");
                }
            }
        }
        tracing::info!("stopping: finishing the current batch and closing connections");
        notifier.notify("STOPPING=1\nSTATUS=stopping");
        if let Some(t) = watchdog_task {
            t.abort();
        }
        let _ = stop_tx.send(());
    });

    let result = app
        .run(async move {
            let _ = stop_rx.await;
        })
        .await;
    control.abort();
    result.map_err(ServiceError::from)
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C): for commands that run until stopped without the
/// service plumbing (`switchboard demo`).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ApiKeyConfig, QueueConfig, SupervisorConfig};

    fn queue(id: &str) -> QueueConfig {
        QueueConfig {
            id: id.into(),
            name: id.into(),
            channel: crate::config::Channel::Chat,
            offer_timeout: None,
            not_ready_after_no_response: false,
            session_lost_prompt: None,
            reconnecting_prompt: None,
            requeue_position: Default::default(),
            sticky_agent: std::time::Duration::ZERO,
        }
    }

    #[test]
    fn merge_takes_queues_and_keys_but_keeps_listen_addresses_and_data_dir() {
        let old = Config {
            queues: vec![queue("a"), queue("b")],
            ..Config::default()
        };
        let mut new = old.clone();
        new.queues = vec![queue("b"), queue("c")];
        new.queues[0].session_lost_prompt = Some("sorry".into());
        new.supervisors = vec![SupervisorConfig {
            id: "sam".into(),
            name: "Sam".into(),
            password_hash: "x".into(),
        }];
        new.api_keys = vec![ApiKeyConfig {
            id: "crm".into(),
            key_sha256: "00".repeat(32),
        }];
        new.limits.chats_per_minute += 1;
        new.server.http_listen = "0.0.0.0:9999".parse().unwrap_or(old.server.http_listen);
        new.server.data_dir = "/elsewhere".into();
        new.resilience.session_grace = Duration::from_secs(5);

        let (merged, report) = merge(&old, &new);

        assert_eq!(merged.queues, new.queues);
        assert_eq!(merged.supervisors, new.supervisors);
        assert_eq!(merged.api_keys, new.api_keys);
        assert_eq!(merged.limits, new.limits);
        assert_eq!(merged.server, old.server);
        assert_eq!(merged.resilience, old.resilience);
        assert_eq!(report.queues_added, vec!["c".to_string()]);
        assert_eq!(report.queues_removed, vec!["a".to_string()]);
        assert_eq!(
            report.applied,
            vec!["queues", "supervisors", "api_keys", "limits"]
        );
        assert_eq!(
            report.needs_restart,
            vec!["server.http_listen", "server.data_dir", "resilience"]
        );
    }

    #[test]
    fn merge_of_an_identical_file_changes_nothing() {
        let old = Config::default();
        let (merged, report) = merge(&old, &old.clone());
        assert_eq!(merged, old);
        assert!(report.is_empty());
    }

    #[test]
    fn merge_reports_tls_switched_on_as_needing_a_restart() {
        let old = Config::default();
        let mut new = old.clone();
        new.server.tls = Some(crate::config::TlsConfig {
            cert: "/c.pem".into(),
            key: "/k.pem".into(),
        });
        let (merged, report) = merge(&old, &new);
        assert_eq!(merged.server.tls, None);
        assert_eq!(report.needs_restart, vec!["server.tls"]);
    }

    #[test]
    fn notifier_refuses_a_relative_socket_name() {
        assert!(Notifier::connect("relative/socket").is_err());
        assert!(!Notifier::disabled().enabled());
    }
}
