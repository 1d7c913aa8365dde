//! Integration tests (the real binary): the administration commands — `check-config` reports
//! every problem of a file in one run, in line order, and `hash-password` prints the line to
//! paste into config.toml, read from a pipe or asked twice, unseen, on a terminal (a
//! pseudo-terminal made by the test).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use switchboard::config::Config;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run switchboard");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

fn check_config(path: &Path) -> Output {
    run(&["check-config", path.to_str().expect("utf-8 path")], b"")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Three syntax-level mistakes and two broken rules, interleaved.
const FIVE_MISTAKES: &str = r#"[server]
http_listen = "127.0.0.1:8080"
data_dir = "./data"

[resilience]
grace = "90s"
heartbeat_interval = "5s"
heartbeat_timeout = "5s"

[sip]
realm = 42

[limits]
max_body_bytes = 0

[[queues]]
id = "support"
name = "Support"
channel = "fax"
"#;

#[test]
fn check_config_reports_every_problem_of_a_file_in_one_run_in_line_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, FIVE_MISTAKES).expect("write");

    let out = check_config(&path);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "switchboard: {}: invalid configuration (5 problems):",
            path.display()
        ),
        "{err}"
    );
    let expected = [
        "line 6, column 1: resilience.grace: unknown field `grace`",
        "line 8: resilience.heartbeat_timeout (5s) must be greater than resilience.heartbeat_interval (5s)",
        "line 11, column 9: sip.realm: invalid type: integer `42`, expected a string",
        "line 14: limits.max_body_bytes must be greater than zero",
        "line 19, column 11: queues[0].channel: unknown variant `fax`",
    ];
    assert_eq!(lines.len(), 1 + expected.len(), "{err}");
    for (line, start) in lines[1..].iter().zip(expected) {
        assert!(
            line.starts_with(start),
            "{line:?} should start with {start:?}\n{err}"
        );
    }
}

#[test]
fn check_config_after_fixing_everything_it_reported_finds_the_file_valid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    let fixed = FIVE_MISTAKES
        .replace("grace = \"90s\"", "session_grace = \"90s\"")
        .replace("heartbeat_timeout = \"5s\"", "heartbeat_timeout = \"15s\"")
        .replace("realm = 42", "realm = \"acme\"")
        .replace("max_body_bytes = 0", "max_body_bytes = 65536")
        .replace("channel = \"fax\"", "channel = \"chat\"");
    std::fs::write(&path, fixed).expect("write");
    let out = check_config(&path);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{}: valid\n", path.display()));
}

#[test]
fn check_config_of_a_missing_file_states_the_reason_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("missing.toml");
    let out = check_config(&path);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("missing.toml"), "{err}");
    assert_eq!(
        err.matches("No such file or directory").count(),
        1,
        "the OS reason once: {err}"
    );
}

#[test]
fn check_config_of_a_file_that_is_not_toml_lists_the_syntax_errors_with_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "[server\nhttp_listen = \"127.0.0.1:8080\"\n").expect("write");
    let out = check_config(&path);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.lines()
            .any(|l| l.starts_with("line 1, column 8: not valid TOML: ")),
        "{err}"
    );
}

/// The hash from the line `hash-password` printed (panics unless it is exactly that line).
fn printed_hash(out: &Output) -> String {
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let line = stdout.strip_suffix('\n').expect("one line");
    assert!(!line.contains('\n'), "one line: {stdout:?}");
    line.strip_prefix("password_hash = \"")
        .and_then(|l| l.strip_suffix('"'))
        .unwrap_or_else(|| panic!("not a password_hash line: {stdout:?}"))
        .to_owned()
}

#[test]
fn hash_password_from_a_pipe_prints_the_line_to_paste_and_the_hash_verifies() {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    let out = run(&["hash-password"], b"correct horse\n");
    assert!(
        out.stderr.is_empty(),
        "no prompt on a pipe: {}",
        text(&out.stderr)
    );
    let hash = printed_hash(&out);
    let parsed = PasswordHash::new(&hash).expect("PHC string");
    assert_eq!(parsed.algorithm.as_str(), "argon2id");
    let argon2 = argon2::Argon2::default();
    assert!(argon2.verify_password(b"correct horse", &parsed).is_ok());
    assert!(argon2.verify_password(b"correct horse\n", &parsed).is_err());

    // Pasted into an agent block, the line is a valid configuration.
    let line = text(&out.stdout);
    let toml = format!(
        "[[queues]]\nid = \"q\"\nname = \"Q\"\nchannel = \"chat\"\n\n\
         [[agents]]\nid = \"a\"\nname = \"A\"\n{line}sip_password = \"s\"\nqueues = [\"q\"]\n"
    );
    let cfg = Config::from_toml_str(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    assert_eq!(cfg.agents[0].password_hash, hash);
}

#[test]
fn hash_password_from_a_pipe_reads_only_the_first_line_and_keeps_inner_spaces() {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    let out = run(&["hash-password"], b" two words \r\nsecond line\n");
    let hash = printed_hash(&out);
    let parsed = PasswordHash::new(&hash).expect("PHC string");
    assert!(
        argon2::Argon2::default()
            .verify_password(b" two words ", &parsed)
            .is_ok()
    );
}

#[test]
fn hash_password_refuses_an_empty_password_and_prints_nothing() {
    for input in [&b""[..], b"\n"] {
        let out = run(&["hash-password"], input);
        assert_eq!(out.status.code(), Some(1));
        assert!(out.stdout.is_empty());
        assert!(
            text(&out.stderr).contains("empty password"),
            "{}",
            text(&out.stderr)
        );
    }
}

/// `hash-password` on a terminal: the test's end of a pseudo-terminal whose other end is the
/// command's standard input and standard error (standard output stays a pipe).
struct Terminal {
    child: std::process::Child,
    master: std::fs::File,
    /// Everything the terminal showed so far, filled by a reader thread.
    shown: std::sync::mpsc::Receiver<Vec<u8>>,
    screen: Vec<u8>,
}

impl Terminal {
    fn start() -> Terminal {
        use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("openpt");
        grantpt(&master).expect("grantpt");
        unlockpt(&master).expect("unlockpt");
        let name = ptsname(&master, Vec::new()).expect("ptsname");
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(name.to_str().expect("utf-8 pts name"))
            .expect("open pts");
        let child = Command::new(BIN)
            .arg("hash-password")
            .stdin(slave.try_clone().expect("clone"))
            .stderr(slave)
            .stdout(Stdio::piped())
            .spawn()
            .expect("run switchboard");
        let master = std::fs::File::from(master);
        let mut reader = master.try_clone().expect("clone master");
        let (tx, shown) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::Read as _;
            let mut buf = [0u8; 1024];
            // Ends with an error (EIO) once the command has exited.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Terminal {
            child,
            master,
            shown,
            screen: Vec::new(),
        }
    }

    /// Waits until the terminal shows `text` (after what was waited for before).
    fn wait_for(&mut self, text: &str) {
        let timeout = std::time::Duration::from_secs(30);
        while !String::from_utf8_lossy(&self.screen).contains(text) {
            match self.shown.recv_timeout(timeout) {
                Ok(bytes) => self.screen.extend(bytes),
                Err(_) => panic!(
                    "the terminal never showed {text:?}; it shows {:?}",
                    String::from_utf8_lossy(&self.screen)
                ),
            }
        }
    }

    fn type_line(&mut self, line: &str) {
        self.master
            .write_all(format!("{line}\n").as_bytes())
            .expect("type");
    }

    /// Waits for the command to exit; its output and everything the terminal showed.
    fn finish(mut self) -> (Output, String) {
        let output = self.child.wait_with_output().expect("wait");
        while let Ok(bytes) = self
            .shown
            .recv_timeout(std::time::Duration::from_millis(200))
        {
            self.screen.extend(bytes);
        }
        (output, String::from_utf8_lossy(&self.screen).into_owned())
    }
}

#[test]
fn hash_password_on_a_terminal_asks_twice_without_showing_the_password() {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    let mut terminal = Terminal::start();
    terminal.wait_for("password: ");
    terminal.type_line("tr0ub4dor&3");
    terminal.wait_for("again: ");
    terminal.type_line("tr0ub4dor&3");
    let (out, screen) = terminal.finish();
    assert!(
        !screen.contains("tr0ub4dor"),
        "the typing is not shown: {screen:?}"
    );
    let hash = printed_hash(&out);
    let parsed = PasswordHash::new(&hash).expect("PHC string");
    assert!(
        argon2::Argon2::default()
            .verify_password(b"tr0ub4dor&3", &parsed)
            .is_ok()
    );
}

#[test]
fn hash_password_on_a_terminal_refuses_two_different_entries_and_prints_nothing() {
    let mut terminal = Terminal::start();
    terminal.wait_for("password: ");
    terminal.type_line("first try");
    terminal.wait_for("again: ");
    terminal.type_line("first tri");
    let (out, screen) = terminal.finish();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(screen.contains("the two passwords differ"), "{screen:?}");
    assert!(
        !screen.contains("first tr"),
        "the typing is not shown: {screen:?}"
    );
}

#[test]
fn the_binary_allocates_with_one_jemalloc_arena_returning_freed_memory_from_a_background_thread() {
    // jemalloc prints its statistics, options included, when the process exits with
    // `stats_print` set in its environment variable (prefixed for the embedded copy).
    let out = Command::new(BIN)
        .arg("--version")
        .env("_RJEM_MALLOC_CONF", "stats_print:true")
        .output()
        .expect("run switchboard");
    assert!(out.status.success());
    let stats = text(&out.stderr);
    for option in [
        "opt.background_thread: true",
        "opt.dirty_decay_ms: 1000",
        "opt.muzzy_decay_ms: 0",
        "opt.narenas: 1",
        "opt.tcache: false",
    ] {
        assert!(
            stats.contains(option),
            "{option} missing from jemalloc's statistics: {stats}"
        );
    }
}
