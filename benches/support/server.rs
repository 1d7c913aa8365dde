//! Shared by the benchmarks that drive the real binary (`loadgen`, `history`): the server
//! process under test (start, stop, resident memory and CPU read from `/proc`), a free
//! loopback port, and the cheap password hash their generated configurations use.

use argon2::password_hash::{PasswordHasher, SaltString};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The server process under test.
pub struct Server {
    pub child: Child,
    pub pid: u32,
}

impl Server {
    /// Runs `bin serve --config config`, standard error to `log`, with the soft descriptor
    /// limit raised to the hard one.
    pub fn start(bin: &Path, config: &Path, log: &Path) -> Res<Server> {
        let log = std::fs::File::create(log)?;
        let child = Command::new("sh")
            .arg("-c")
            .arg("ulimit -n \"$(ulimit -Hn)\" 2>/dev/null; exec \"$0\" serve --config \"$1\"")
            .arg(bin)
            .arg(config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let pid = child.id();
        Ok(Server { child, pid })
    }

    /// SIGTERM, then up to 30 s for a clean stop before SIGKILL.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status();
        for _ in 0..300 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGKILL: no clean stop.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        proc_field(self.pid, "VmRSS:")
    }

    /// Resident anonymous memory (heap, stacks) and resident pages mapped from files (the
    /// program's own code and data), in KiB.
    pub fn rss_split_kib(&self) -> (u64, u64) {
        (
            proc_field(self.pid, "RssAnon:"),
            proc_field(self.pid, "RssFile:"),
        )
    }

    /// User + system CPU time in clock ticks (1/100 s).
    pub fn cpu_ticks(&self) -> u64 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) else {
            return 0;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return 0;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        n(11) + n(12)
    }
}

/// A numeric field of `/proc/<pid>/status` (0 when unreadable).
pub fn proc_field(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

pub fn free_port() -> Res<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// An argon2id hash with cheap parameters (`m=8,t=1,p=1`), so that logins measure the
/// server and not the hash. `salt` must be 16 bytes.
pub fn cheap_password_hash(password: &str, salt: &[u8; 16]) -> Res<String> {
    let salt = SaltString::encode_b64(salt)?;
    let params = argon2::Params::new(8, 1, 1, None)?;
    Ok(
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password(password.as_bytes(), &salt)?
            .to_string(),
    )
}
