//! Integration tests (real binary, real sockets): operations — the binary under a fake service
//! manager (notify socket, watchdog, SIGHUP reload, SIGTERM stop), store schema checks at the
//! command line, configuration reload in process, and HTTPS with a self-signed certificate
//! made by the test.
//!
//! Helpers beyond `tests/common` (kept here): a notify-socket listener, a child-process
//! wrapper that signals with `kill`, a raw HTTP/1.0 GET, and TLS clients on tokio-rustls.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use common::{START_WALL, test_config};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard::app::{App, Listeners};
use switchboard::config::{Channel, Config, QueueConfig, RequeuePosition, TlsConfig};
use switchboard::driver::{Clock, Handle};
use switchboard::http::AppState;
use switchboard::service::{self, Notifier};
use switchboard::store::Store;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

// ---------------------------------------------------------------------------------------------
// Helpers: a fake service manager
// ---------------------------------------------------------------------------------------------

/// The service manager's end of `$NOTIFY_SOCKET`.
struct NotifyListener {
    sock: UnixDatagram,
    /// The value for `$NOTIFY_SOCKET`.
    name: String,
    seen: Vec<String>,
}

impl NotifyListener {
    fn at_path(dir: &Path) -> NotifyListener {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind notify socket");
        NotifyListener {
            sock,
            name: path.to_string_lossy().into_owned(),
            seen: Vec::new(),
        }
    }

    fn abstract_named(name: &str) -> NotifyListener {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .expect("abstract name");
        let sock = UnixDatagram::bind_addr(&addr).expect("bind abstract notify socket");
        NotifyListener {
            sock,
            name: format!("@{name}"),
            seen: Vec::new(),
        }
    }

    /// The next message holding the assignment `wanted` (e.g. `READY=1`); panics after `within`.
    // Waits on a real process with a timeout (no deadline of the server is involved).
    #[allow(clippy::disallowed_methods)]
    fn expect(&mut self, wanted: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {wanted} within {within:?}; messages so far: {:?}",
                self.seen
            );
            self.sock.set_read_timeout(Some(left)).expect("timeout");
            let Ok(n) = self.sock.recv(&mut buf) else {
                continue;
            };
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            self.seen.push(msg.clone());
            if msg.lines().any(|l| l == wanted) {
                return msg;
            }
        }
    }

    /// Messages arriving within `window` (none is fine).
    // Waits on a real process with a timeout (no deadline of the server is involved).
    #[allow(clippy::disallowed_methods)]
    fn drain(&mut self, window: Duration) -> Vec<String> {
        let deadline = Instant::now() + window;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return out;
            }
            self.sock.set_read_timeout(Some(left)).expect("timeout");
            if let Ok(n) = self.sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.seen.push(msg.clone());
                out.push(msg);
            }
        }
    }
}

/// The address in `STATUS=serving http://ADDR` of a READY message.
fn serving_addr(ready: &str) -> SocketAddr {
    let status = ready
        .lines()
        .find_map(|l| l.strip_prefix("STATUS=serving "))
        .unwrap_or_else(|| panic!("READY without STATUS: {ready:?}"));
    let addr = status
        .trim_start_matches("http://")
        .trim_start_matches("https://");
    addr.parse().expect("serving address")
}

/// A running `switchboard serve`, killed if the test fails before it exits.
struct Server {
    child: Child,
    log: PathBuf,
}

impl Server {
    fn start(
        config: &Path,
        notify: &NotifyListener,
        log: PathBuf,
        watchdog_usec: Option<u64>,
    ) -> Server {
        Server::start_in(None, config, notify, log, watchdog_usec)
    }

    /// [`Server::start`] with `cwd` as the working directory when given.
    fn start_in(
        cwd: Option<&Path>,
        config: &Path,
        notify: &NotifyListener,
        log: PathBuf,
        watchdog_usec: Option<u64>,
    ) -> Server {
        let mut cmd = Command::new(BIN);
        if let Some(cwd) = cwd {
            cmd.current_dir(cwd);
        }
        cmd.args(["serve", "--config"])
            .arg(config)
            .env("NOTIFY_SOCKET", &notify.name)
            .env_remove("JOURNAL_STREAM")
            .env_remove("WATCHDOG_PID")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        match watchdog_usec {
            Some(us) => cmd.env("WATCHDOG_USEC", us.to_string()),
            None => cmd.env_remove("WATCHDOG_USEC"),
        };
        let child = cmd.spawn().expect("start switchboard");
        Server { child, log }
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {sig}");
    }

    /// Waits for the process to exit (at most `within`); returns its exit code.
    // Waits on a real process with a timeout (no deadline of the server is involved).
    #[allow(clippy::disallowed_methods)]
    fn wait(&mut self, within: Duration) -> i32 {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "switchboard did not exit within {within:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A config file for the binary: the test configuration on loopback port 0 in `dir`.
fn write_config(dir: &Path, cfg: &Config) -> PathBuf {
    let mut cfg = cfg.clone();
    cfg.server.data_dir = dir.join("data");
    let path = dir.join("config.toml");
    std::fs::write(&path, cfg.to_toml_string().expect("toml")).expect("write config");
    path
}

/// `GET path` over plain HTTP/1.0; returns the status code.
fn http_get_status(addr: SocketAddr, path: &str) -> u16 {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("write");
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {resp:?}"))
}

fn queue(id: &str) -> QueueConfig {
    QueueConfig {
        id: id.into(),
        name: format!("{id} queue"),
        channel: Channel::Chat,
        offer_timeout: None,
        not_ready_after_no_response: false,
        session_lost_prompt: None,
        reconnecting_prompt: None,
        requeue_position: RequeuePosition::Original,
        sticky_agent: std::time::Duration::ZERO,
    }
}

// ---------------------------------------------------------------------------------------------
// The binary as a service
// ---------------------------------------------------------------------------------------------

#[test]
fn binary_reports_ready_then_stops_on_sigterm_with_exit_code_0_and_the_store_reopens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &test_config());
    let mut notify = NotifyListener::at_path(dir.path());
    let mut server = Server::start(&config, &notify, dir.path().join("log"), None);

    let ready = notify.expect("READY=1", Duration::from_secs(30));
    let addr = serving_addr(&ready);
    assert_eq!(http_get_status(addr, "/"), 200);

    server.signal("-TERM");
    notify.expect("STOPPING=1", Duration::from_secs(10));
    assert_eq!(
        server.wait(Duration::from_secs(30)),
        0,
        "{}",
        server.log_text()
    );
    assert!(
        TcpStream::connect(addr).is_err(),
        "the listener is closed after exit"
    );

    // The store is closed cleanly: it opens again, in process and in a second server.
    let store = Store::open(&Store::file_in(&dir.path().join("data"))).expect("store reopens");
    drop(store);
    let mut again = Server::start(&config, &notify, dir.path().join("log2"), None);
    notify.expect("READY=1", Duration::from_secs(30));
    again.signal("-INT");
    assert_eq!(
        again.wait(Duration::from_secs(30)),
        0,
        "{}",
        again.log_text()
    );
}

#[test]
fn binary_pings_the_watchdog_and_brackets_a_sighup_reload_with_reloading_and_ready() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = test_config();
    let config = write_config(dir.path(), &cfg);
    // systemd passes abstract socket names ('@…'), as in a real unit.
    let mut notify =
        NotifyListener::abstract_named(&format!("switchboard-ops-test-{}", std::process::id()));
    let log = dir.path().join("log");
    let mut server = Server::start(&config, &notify, log, Some(200_000));

    notify.expect("READY=1", Duration::from_secs(30));
    notify.expect("WATCHDOG=1", Duration::from_secs(5));
    notify.expect("WATCHDOG=1", Duration::from_secs(5));

    // A new queue (and agent membership) in the file; a new listen address that needs a restart.
    let mut next = cfg.clone();
    next.queues.push(queue("vip"));
    next.agents[0].queues.push("vip".into());
    next.server.http_listen = "127.0.0.1:1".parse().expect("addr");
    write_config(dir.path(), &next);
    server.signal("-HUP");
    notify.expect("RELOADING=1", Duration::from_secs(10));
    notify.expect("READY=1", Duration::from_secs(10));

    server.signal("-TERM");
    notify.expect("STOPPING=1", Duration::from_secs(10));
    assert_eq!(server.wait(Duration::from_secs(30)), 0);
    let text = server.log_text();
    assert!(text.contains("configuration reloaded"), "{text}");
    assert!(text.contains("queues_added=[\"vip\"]"), "{text}");
    assert!(
        text.contains("server.http_listen"),
        "a changed listen address is reported as needing a restart: {text}"
    );
}

#[test]
fn sighup_with_an_invalid_file_keeps_serving_the_old_configuration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &test_config());
    let mut notify = NotifyListener::at_path(dir.path());
    let mut server = Server::start(&config, &notify, dir.path().join("log"), None);
    let addr = serving_addr(&notify.expect("READY=1", Duration::from_secs(30)));

    std::fs::write(&config, "[server]\nno_such_key = 1\n").expect("write");
    server.signal("-HUP");
    notify.expect("RELOADING=1", Duration::from_secs(10));
    notify.expect("READY=1", Duration::from_secs(10));
    assert_eq!(http_get_status(addr, "/"), 200, "still serving");

    server.signal("-TERM");
    assert_eq!(server.wait(Duration::from_secs(30)), 0);
    let text = server.log_text();
    assert!(text.contains("reload refused"), "{text}");
    assert!(
        text.contains("no_such_key"),
        "the error names the key: {text}"
    );
}

#[test]
fn a_relative_data_dir_is_in_the_config_files_directory_whatever_the_working_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etc = dir.path().join("etc");
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&etc).expect("etc");
    std::fs::create_dir_all(&elsewhere).expect("elsewhere");
    let mut cfg = test_config();
    cfg.server.data_dir = "./state".into();
    let config = etc.join("config.toml");
    std::fs::write(&config, cfg.to_toml_string().expect("toml")).expect("write config");

    let mut notify = NotifyListener::at_path(dir.path());
    let mut server = Server::start_in(
        Some(&elsewhere),
        &config,
        &notify,
        dir.path().join("log"),
        None,
    );
    notify.expect("READY=1", Duration::from_secs(30));
    // Reading the same file again sees the same directory: nothing waits for a restart.
    server.signal("-HUP");
    notify.expect("RELOADING=1", Duration::from_secs(10));
    notify.expect("READY=1", Duration::from_secs(10));
    server.signal("-TERM");
    assert_eq!(server.wait(Duration::from_secs(30)), 0);

    let text = server.log_text();
    assert!(Store::file_in(&etc.join("state")).is_file(), "{text}");
    assert!(!elsewhere.join("state").exists());
    assert!(!text.contains("server.data_dir"), "{text}");
}

/// Rewrites the stored schema version, as a newer switchboard would have left it.
fn store_with_schema(dir: &Path, version: u64) {
    let path = Store::file_in(dir);
    drop(Store::open(&path).expect("create store"));
    let db = redb::Database::create(&path).expect("open redb");
    let txn = db.begin_write().expect("write txn");
    {
        let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
        let mut t = txn.open_table(meta).expect("meta table");
        t.insert("schema_version", version).expect("insert");
    }
    txn.commit().expect("commit");
}

#[test]
fn export_and_serve_refuse_a_store_from_a_newer_schema_with_a_plain_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    store_with_schema(&data, switchboard::store::SCHEMA_VERSION + 1);

    let out = Command::new(BIN)
        .args(["export", "--data-dir"])
        .arg(&data)
        .output()
        .expect("run export");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "export must fail");
    assert!(err.contains("written by a newer switchboard"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.stdout.is_empty(), "nothing exported");

    let config = write_config(dir.path(), &test_config());
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("NOTIFY_SOCKET")
        .output()
        .expect("run serve");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "serve must refuse to start");
    assert!(err.contains("written by a newer switchboard"), "{err}");
    assert!(err.contains("restore a backup"), "with a hint: {err}");
}

#[test]
fn export_of_a_directory_without_a_store_fails_without_creating_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN)
        .args(["export", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run export");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no store at"));
    assert!(!Store::file_in(dir.path()).exists());
}

#[test]
fn serve_with_a_missing_tls_certificate_exits_non_zero_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = test_config();
    cfg.server.tls = Some(TlsConfig {
        cert: dir.path().join("missing-cert.pem"),
        key: dir.path().join("missing-key.pem"),
    });
    let config = write_config(dir.path(), &cfg);
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("NOTIFY_SOCKET")
        .output()
        .expect("run serve");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("server.tls.cert"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// In process: watchdog and reload
// ---------------------------------------------------------------------------------------------

/// A running app that keeps its state (for reloads) and its TLS settings.
struct Running {
    addr: SocketAddr,
    state: AppState,
    handle: Handle,
    tls: Option<switchboard::tls::TlsSettings>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn start(mut cfg: Config) -> Running {
        let dir = tempfile::tempdir().expect("tempdir");
        cfg.server.data_dir = dir.path().to_path_buf();
        let http = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let store = Arc::new(Store::open(&Store::file_in(dir.path())).expect("store"));
        let app = App::build(
            Arc::new(cfg),
            Listeners { http, sip: None },
            store,
            Clock::manual(START_WALL),
        )
        .expect("app");
        let addr = app.http_addr().expect("addr");
        let state = app.state.clone();
        let handle = app.handle.clone();
        let tls = app.tls();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = app
                .run(async move {
                    let _ = rx.await;
                })
                .await;
        });
        Running {
            addr,
            state,
            handle,
            tls,
            stop: Some(tx),
            task,
            _dir: dir,
        }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("server stops")
            .expect("server task");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_stays_silent_while_the_driver_is_wedged_and_resumes_after() {
    let mut cfg = test_config();
    cfg.sip.enabled = false;
    let app = Running::start(cfg).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = NotifyListener::at_path(dir.path());
    let notifier = Arc::new(Notifier::connect(&listener.name).expect("notifier"));
    let every = Duration::from_millis(50);
    let watchdog = tokio::spawn(service::watchdog(app.handle.clone(), notifier, every));
    let mut listener = tokio::task::spawn_blocking(move || {
        let mut l = listener;
        l.expect("WATCHDOG=1", Duration::from_secs(5));
        l
    })
    .await
    .expect("first ping");

    // Wedge the driver: it blocks inside a command until released.
    let (release, blocked) = std::sync::mpsc::channel::<()>();
    let wedged = tokio::spawn({
        let handle = app.handle.clone();
        async move {
            handle
                .inspect(move |_| {
                    let _ = blocked.recv();
                })
                .await
        }
    });
    listener = tokio::task::spawn_blocking(move || {
        // Pings already in flight may still land; after that, silence.
        listener.drain(Duration::from_millis(150));
        let late = listener.drain(Duration::from_millis(500));
        assert!(
            late.iter().all(|m| !m.contains("WATCHDOG=1")),
            "no watchdog ping while the driver is wedged: {late:?}"
        );
        listener
    })
    .await
    .expect("silence");

    release.send(()).expect("release the driver");
    wedged.await.expect("task").expect("driver answers again");
    tokio::task::spawn_blocking(move || {
        listener.expect("WATCHDOG=1", Duration::from_secs(5));
    })
    .await
    .expect("pings resume");
    watchdog.abort();
    app.stop().await;
}

#[tokio::test]
async fn reload_installs_new_queues_and_agents_in_the_core_and_keeps_the_listen_address() {
    let mut cfg = test_config();
    cfg.sip.enabled = false;
    let app = Running::start(cfg.clone()).await;
    let dir = tempfile::tempdir().expect("tempdir");

    let mut next = cfg.clone();
    next.queues.push(queue("vip"));
    next.agents.retain(|a| a.id != "carol");
    next.agents[0].queues.push("vip".into());
    next.limits.chats_per_minute = 7;
    next.server.http_listen = "127.0.0.1:1".parse().expect("addr");
    next.server.data_dir = app.state.config().server.data_dir.clone();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, next.to_toml_string().expect("toml")).expect("write config");

    let report = service::reload(&path, &app.state, &app.handle, None)
        .await
        .expect("reload");
    assert_eq!(report.queues_added, vec!["vip".to_string()]);
    assert_eq!(report.agents_removed, vec!["carol".to_string()]);
    assert!(report.applied.contains(&"limits"));
    assert_eq!(report.needs_restart, vec!["server.http_listen"]);

    let in_force = app.state.config();
    assert_eq!(in_force.limits.chats_per_minute, 7);
    assert!(in_force.queues.iter().any(|q| q.id == "vip"));
    assert_eq!(in_force.server.http_listen, cfg.server.http_listen);
    let (core_queues, core_agents) = app
        .handle
        .inspect(|core| {
            let c = core.policy();
            (
                c.queues.iter().map(|q| q.id.clone()).collect::<Vec<_>>(),
                c.agents.iter().map(|a| a.id.clone()).collect::<Vec<_>>(),
            )
        })
        .await
        .expect("inspect");
    assert!(core_queues.contains(&"vip".to_string()), "{core_queues:?}");
    assert!(
        !core_agents.contains(&"carol".to_string()),
        "{core_agents:?}"
    );
    assert_eq!(app.state.shared_config().generation(), 1);
    app.stop().await;
}

#[tokio::test]
async fn reload_of_an_invalid_file_changes_nothing() {
    let mut cfg = test_config();
    cfg.sip.enabled = false;
    let app = Running::start(cfg).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let before = app.state.config();

    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        "[[agents]]\nid = \"dave\"\nname = \"Dave\"\npassword_hash = \"x\"\nsip_password = \"y\"\nqueues = [\"nowhere\"]\n",
    )
    .expect("write");
    let err = service::reload(&path, &app.state, &app.handle, None)
        .await
        .expect_err("invalid file");
    assert!(err.to_string().contains("agents[0]"), "{err}");
    assert_eq!(*app.state.config(), *before);
    assert_eq!(app.state.shared_config().generation(), 0);

    let missing =
        service::reload(&dir.path().join("nope.toml"), &app.state, &app.handle, None).await;
    assert!(missing.is_err());
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------------

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_rustls::rustls;

struct TestCert {
    der: rustls::pki_types::CertificateDer<'static>,
    files: TlsConfig,
}

/// A self-signed certificate for `localhost` written as PEM files in `dir`.
fn self_signed(dir: &Path, tag: &str) -> TestCert {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen");
    let cert = dir.join(format!("{tag}-cert.pem"));
    let key = dir.join(format!("{tag}-key.pem"));
    std::fs::write(&cert, ck.cert.pem()).expect("write cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
    TestCert {
        der: ck.cert.der().clone(),
        files: TlsConfig { cert, key },
    }
}

/// A TLS client that trusts exactly `cert`, offering `alpn`.
fn connector(cert: &TestCert, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der.clone()).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

async fn tls_connect(
    addr: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    connector.connect(name, tcp).await
}

/// `GET path` over HTTPS/1.1; returns the status and the body.
async fn https_get(addr: SocketAddr, cert: &TestCert, path: &str) -> (u16, String) {
    let tls = tls_connect(addr, &connector(cert, &[b"http/1.1"]))
        .await
        .expect("TLS handshake");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("http1 handshake");
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = send.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn https_serves_the_pages_with_a_certificate_from_the_config_and_refuses_plain_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = self_signed(dir.path(), "a");
    let mut cfg = test_config();
    cfg.sip.enabled = false;
    cfg.server.tls = Some(cert.files.clone());
    let app = Running::start(cfg).await;
    assert!(app.tls.is_some());

    let (status, body) = https_get(app.addr, &cert, "/").await;
    assert_eq!(status, 200);
    assert!(body.contains("<html") || body.contains("<!doctype") || body.contains("<!DOCTYPE"));

    // Plain HTTP on the TLS port gets no HTTP answer.
    let addr = app.addr;
    let plain = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        buf
    })
    .await
    .expect("plain");
    assert!(
        !plain.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&plain)
    );
    app.stop().await;
}

#[tokio::test]
async fn https_negotiates_http2_when_the_client_offers_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = self_signed(dir.path(), "h2");
    let mut cfg = test_config();
    cfg.sip.enabled = false;
    cfg.server.tls = Some(cert.files.clone());
    let app = Running::start(cfg).await;

    let tls = tls_connect(app.addr, &connector(&cert, &[b"h2"]))
        .await
        .expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let req = hyper::Request::get(format!("https://localhost:{}/", app.addr.port()))
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = send.send_request(req).await.expect("response");
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn tls_certificate_reload_applies_to_new_connections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = self_signed(dir.path(), "first");
    let mut cfg = test_config();
    cfg.sip.enabled = false;
    cfg.server.tls = Some(first.files.clone());
    let app = Running::start(cfg.clone()).await;
    assert_eq!(https_get(app.addr, &first, "/").await.0, 200);

    // A renewal: new files at the same paths, then SIGHUP's reload.
    let second = self_signed(dir.path(), "second");
    std::fs::copy(&second.files.cert, &first.files.cert).expect("copy cert");
    std::fs::copy(&second.files.key, &first.files.key).expect("copy key");
    let path = write_config(dir.path(), &cfg);
    let report = service::reload(&path, &app.state, &app.handle, app.tls.as_ref())
        .await
        .expect("reload");
    assert!(report.applied.contains(&"server.tls"));

    assert_eq!(https_get(app.addr, &second, "/").await.0, 200);
    assert!(
        tls_connect(app.addr, &connector(&first, &[b"http/1.1"]))
            .await
            .is_err(),
        "the old certificate is no longer served"
    );

    // A broken file is refused and the current certificate stays.
    std::fs::write(&first.files.cert, "not a certificate").expect("write");
    assert!(
        service::reload(&path, &app.state, &app.handle, app.tls.as_ref())
            .await
            .is_err()
    );
    assert_eq!(https_get(app.addr, &second, "/").await.0, 200);
    app.stop().await;
}

#[tokio::test]
async fn tls_server_passes_the_client_address_and_upgrades_websockets() {
    use axum::extract::ConnectInfo;
    use axum::extract::ws::{Message as AxMessage, WebSocketUpgrade};
    use axum::routing::get;
    use futures_util::{SinkExt, StreamExt};

    let dir = tempfile::tempdir().expect("tempdir");
    let cert = self_signed(dir.path(), "ws");
    let settings = switchboard::tls::TlsSettings::load(&cert.files).expect("tls");
    let router = axum::Router::new()
        .route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        )
        .route(
            "/echo",
            get(|ws: WebSocketUpgrade| async move {
                ws.on_upgrade(|mut socket| async move {
                    while let Some(Ok(msg)) = socket.next().await {
                        if let AxMessage::Text(t) = msg {
                            if socket.send(AxMessage::Text(t)).await.is_err() {
                                break;
                            }
                        }
                    }
                })
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(switchboard::http::server::serve(
        listener,
        Some(settings),
        router,
        switchboard::http::server::ConnectionLimits::default(),
        async move {
            let _ = stop_rx.await;
        },
    ));

    let (status, peer) = https_get(addr, &cert, "/peer").await;
    assert_eq!(status, 200);
    let peer: SocketAddr = peer.parse().expect("peer address");
    assert_eq!(peer.ip(), addr.ip());

    let tls = tls_connect(addr, &connector(&cert, &[b"http/1.1"]))
        .await
        .expect("handshake");
    let (mut ws, _) = tokio_tungstenite::client_async("wss://localhost/echo", tls)
        .await
        .expect("websocket over TLS");
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        "hello".into(),
    ))
    .await
    .expect("send");
    let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("echo within 5 s")
        .expect("open")
        .expect("frame");
    assert_eq!(echoed.into_text().expect("text").as_str(), "hello");
    drop(ws);

    stop_tx.send(()).expect("stop");
    tokio::time::timeout(Duration::from_secs(15), server)
        .await
        .expect("TLS server stops")
        .expect("task");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
