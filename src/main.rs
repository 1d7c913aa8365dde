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
    Demo(switchboard::demo::DemoArgs),
    /// Read a password on standard input and print its argon2id hash for config.toml.
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
                Some(p) => Config::load(p)?,
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
        std::fs::create_dir_all(&cfg.server.data_dir)
            .with_context(|| format!("creating data_dir {}", cfg.server.data_dir.display()))?;
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
    Store::open(path).map_err(|e| {
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
    })
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

fn hash_password() -> Result<()> {
    use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
    let mut line = String::new();
    if atty_stdin() {
        eprint!("password: ");
    }
    std::io::stdin().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']);
    anyhow::ensure!(!password.is_empty(), "empty password");
    let salt = SaltString::generate(&mut OsRng);
    let hash = argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))?;
    println!("{hash}");
    Ok(())
}

fn atty_stdin() -> bool {
    use std::io::IsTerminal;
    std::io::stdin().is_terminal()
}
