//! The `switchboard` command: thin — parse arguments, load configuration, run the library.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use switchboard::app::{App, Listeners};
use switchboard::config::{Config, LogFormat, StoreBackend};
use switchboard::driver::Clock;
use switchboard::store::Store;

/// The process's allocator is jemalloc: with one arena and a background thread (settings
/// compiled in from `.cargo/config.toml`) memory freed after a burst — a whole office
/// reconnecting at once — goes back to the system within seconds, where glibc's per-thread
/// arenas kept most of it for the life of the process (docs/cli.md#memory).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Contact-center routing (voice, chat, email) that loses no customer when an agent's
/// connection drops.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Configuration file for `serve` when no subcommand is given (default: the embedded
    /// loopback-only configuration).
    #[arg(long, short, env = "SWITCHBOARD_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the server (the default).
    Serve {
        /// Configuration file (default: the embedded loopback-only configuration).
        #[arg(long, short, env = "SWITCHBOARD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Check a configuration file and print every problem; exit 0 when valid.
    CheckConfig {
        /// The file to check.
        path: PathBuf,
    },
    /// Run the offline demo: built-in configuration, temporary data directory, simulated
    /// customers on every channel and simulated agents; prints the URL and the logins.
    #[cfg(feature = "demo")]
    Demo(switchboard::demo::DemoArgs),
    /// Hash a password for config.toml: asks twice without echo on a terminal, otherwise
    /// reads the first line of standard input; prints the `password_hash = "…"` line to paste.
    HashPassword,
    /// Write every stored conversation as JSON lines to standard output (server stopped).
    Export {
        /// The data directory (server.data_dir).
        #[arg(long)]
        data_dir: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchboard: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command.unwrap_or(Cmd::Serve { config: None }) {
        Cmd::Serve { config } => {
            let path = config.or(cli.config);
            let cfg = match &path {
                Some(p) => Config::load_resolved(p)?,
                None => Config::default(),
            };
            serve(cfg, path)
        }
        Cmd::CheckConfig { path } => {
            Config::load(&path)?;
            println!("{}: valid", path.display());
            Ok(())
        }
        Cmd::HashPassword => hash_password(),
        #[cfg(feature = "demo")]
        Cmd::Demo(args) => {
            init_logging(&Config::default());
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            Ok(rt.block_on(switchboard::demo::run(
                args.into(),
                switchboard::service::shutdown_signal(),
            ))?)
        }
        Cmd::Export { data_dir } => {
            let path = Store::file_in(&data_dir);
            anyhow::ensure!(
                path.is_file(),
                "no store at {} (is --data-dir the server's data_dir?)",
                path.display()
            );
            let store = open_store(&path)?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let n = store.export_jsonl(&mut out)?;
            out.flush()?;
            eprintln!("exported {n} conversations");
            Ok(())
        }
    }
}

fn init_logging(cfg: &Config) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
    let under_journald = stderr_is_journal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match (cfg.log.format, under_journald) {
        (LogFormat::Json, _) => builder.json().try_init(),
        // journald stamps every line itself.
        (LogFormat::Human, true) => builder.without_time().try_init(),
        (LogFormat::Human, false) => builder.try_init(),
    };
}

/// Whether standard error is the journal: `$JOURNAL_STREAM` (`device:inode`, set by systemd)
/// names the file standard error is (a child that inherited the variable may have another).
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let stream = stream.to_string_lossy();
    let Some((dev, ino)) = stream.split_once(':') else {
        return false;
    };
    match std::fs::metadata("/proc/self/fd/2") {
        Ok(m) => dev.parse() == Ok(m.dev()) && ino.parse() == Ok(m.ino()),
        // No /proc: trust the variable.
        Err(_) => true,
    }
}

fn serve(cfg: Config, config_path: Option<PathBuf>) -> Result<()> {
    init_logging(&cfg);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let cfg = Arc::new(cfg);
        std::fs::create_dir_all(&cfg.server.data_dir).map_err(|e| {
            let hint = match e.kind() {
                std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied => {
                    "\nserver.data_dir must be writable by the service (under the packaged systemd unit: /var/lib/switchboard)"
                }
                _ => "",
            };
            anyhow::anyhow!(
                "creating data_dir {}: {e}{hint}",
                cfg.server.data_dir.display()
            )
        })?;
        let store = Arc::new(match cfg.store.backend {
            StoreBackend::Redb => open_store(&Store::file_in(&cfg.server.data_dir))?,
            StoreBackend::Postgres => open_postgres(&cfg)?,
        });
        if cfg.store.backend == StoreBackend::Postgres {
            // A cluster node: the SIP listener is bound only while this node is active.
            let http = tokio::net::TcpListener::bind(cfg.server.http_listen)
                .await
                .context("binding the HTTP listener")?;
            let view = switchboard::cluster::ClusterView::new(&cfg);
            switchboard::cluster::run(
                cfg.clone(),
                store,
                http,
                view,
                switchboard::service::shutdown_signal(),
            )
            .await?;
            tracing::info!("switchboard stopped");
            return Ok(());
        }
        let listeners = Listeners::bind(&cfg)
            .await
            .context("binding the listeners")?;
        let app = App::build(cfg.clone(), listeners, store, Clock::system())?;
        switchboard::service::run(app, config_path).await?;
        tracing::info!("switchboard stopped");
        Ok(())
    })
}

/// Opens the store, explaining a schema version this build cannot use.
fn open_store(path: &std::path::Path) -> Result<Store> {
    use switchboard::store::StoreError;
    let store = Store::open(path).map_err(|e| {
        let hint = match &e {
            StoreError::NewerSchema { .. } => {
                "\nthis switchboard is older than the one that last used the store: install that newer version again, or restore a backup taken with this one"
            }
            StoreError::OlderSchema { .. } => {
                "\nupgrade through the intermediate switchboard releases, or restore a backup taken with this one"
            }
            _ => "",
        };
        anyhow::anyhow!("cannot open the store {}: {e}{hint}", path.display())
    })?;
    if let Store::Redb(redb) = &store {
        tracing::info!(
            path = %path.display(),
            verified_every_page = redb.verified_at_open(),
            "store opened"
        );
    }
    Ok(store)
}

/// Connects to the configured PostgreSQL database (the password may come from
/// `SWITCHBOARD_POSTGRES_PASSWORD`), creating or upgrading its tables.
fn open_postgres(cfg: &Config) -> Result<Store> {
    let options = switchboard::store::PostgresOptions::from_config(
        &cfg.store,
        std::env::var("SWITCHBOARD_POSTGRES_PASSWORD").ok(),
    )?;
    Store::postgres(&options).map_err(|e| {
        let hint = match &e {
            switchboard::store::StoreError::NewerSchema { .. } => {
                "\na newer switchboard has upgraded this database: run that version on every node"
            }
            _ => "",
        };
        anyhow::anyhow!("cannot open the PostgreSQL store: {e}{hint}")
    })
}

/// `hash-password`. On a terminal: asks twice with the typing hidden and refuses a mismatch.
/// Otherwise (a pipe, a file, a script): the first line of standard input, asked once.
/// Prints the `password_hash = "…"` line to paste into an `[[agents]]` or `[[supervisors]]`
/// block.
fn hash_password() -> Result<()> {
    use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
    use std::io::{BufRead as _, IsTerminal as _};
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        let first = read_hidden("password: ")?;
        anyhow::ensure!(!first.is_empty(), "empty password");
        let again = read_hidden("the same password again: ")?;
        anyhow::ensure!(first == again, "the two passwords differ; nothing printed");
        first
    } else {
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        strip_line_end(line)
    };
    anyhow::ensure!(!password.is_empty(), "empty password");
    let salt = SaltString::generate(&mut OsRng);
    let hash = argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))?;
    // A PHC string holds no quote or backslash: it is a valid TOML string as it is.
    println!("password_hash = \"{hash}\"");
    Ok(())
}

/// Reads one line from the terminal on standard input with echo off (the newline is still
/// shown), then puts the terminal back as it was, also when the read fails.
fn read_hidden(prompt: &str) -> Result<String> {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    use std::io::BufRead as _;
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).context("reading the terminal settings")?;
    let mut hidden = saved.clone();
    hidden.local_modes.remove(LocalModes::ECHO);
    hidden.local_modes.insert(LocalModes::ECHONL);
    // Flush: nothing typed before the prompt is taken as the password. The prompt comes
    // after, so whatever is typed once it shows is hidden.
    tcsetattr(&stdin, OptionalActions::Flush, &hidden).context("turning echo off")?;
    let mut line = String::new();
    let read = write!(std::io::stderr(), "{prompt}")
        .and_then(|()| std::io::stderr().flush())
        .and_then(|()| stdin.lock().read_line(&mut line));
    let restored = tcsetattr(&stdin, OptionalActions::Now, &saved);
    let n = read?;
    restored.context("turning echo back on")?;
    anyhow::ensure!(n > 0, "no password given");
    Ok(strip_line_end(line))
}

/// The line without its line ending (`\n` or `\r\n`).
fn strip_line_end(mut line: String) -> String {
    if line.ends_with('\n') {
        line.pop();
        if line.ends_with('\r') {
            line.pop();
        }
    }
    line
}
