//! Store layer: the clean-close seal of the redb file, so a restart after a clean stop does
//! not read the whole file again.
//!
//! Opening a file with every page's checksum verified reads all of it (about 0.9 s per GB),
//! and that check is only needed for a file that may have changed outside the server: one
//! left by a crash, or touched by something else while the server was stopped. So when the
//! store is dropped, after redb has closed the file, a small seal file next to it records the
//! file's identity and timestamps (device, inode, length, modification and change times). At
//! the next open, a seal that still describes the file exactly means nothing has written to
//! it since the clean close, and the check is skipped; no seal (a crash, a `kill -9`, a copy
//! restored from a backup) or a seal that differs in anything (any write, `touch`, `chmod`,
//! a replaced file) means the full check. The seal is removed as soon as the store is open,
//! so it never outlives the close it describes.
//!
//! A change of the file's bytes with no change of its metadata (a failing disk) is not seen
//! by the seal; deleting the seal file makes the next start verify every page.

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How many times, 1 ms apart, the close looks for the file system's clock to have moved
/// past the file's last change (see [`Seal::write`]); on a file system with coarser
/// timestamps no seal is written and the next open verifies the file.
const TICK_ATTEMPTS: u32 = 50;

/// The seal file of the store file at `store`: the same name with `.clean` appended.
pub fn seal_path(store: &Path) -> PathBuf {
    let mut name = store.as_os_str().to_os_string();
    name.push(".clean");
    PathBuf::from(name)
}

/// What the seal records about the store file.
fn fingerprint(m: &std::fs::Metadata) -> String {
    format!(
        "switchboard store seal 1\ndev {}\nino {}\nlen {}\nmtime {}.{:09}\nctime {}.{:09}\n",
        m.dev(),
        m.ino(),
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec()
    )
}

/// Whether the store file at `store` is exactly as its last clean close left it. Any doubt
/// (no seal, an unreadable one, a different file) is `false`.
pub fn is_sealed(store: &Path) -> bool {
    let (Ok(seal), Ok(meta)) = (
        std::fs::read_to_string(seal_path(store)),
        std::fs::metadata(store),
    ) else {
        return false;
    };
    seal == fingerprint(&meta)
}

/// Removes the seal of `store` (the file is about to be written again).
pub fn remove(store: &Path) {
    match std::fs::remove_file(seal_path(store)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(error = %e, "removing the store's clean-close seal"),
    }
}

/// Writes the seal of `store` when dropped. Declared after the database in the store so it
/// is dropped after it, when redb has written the file for the last time and closed it.
#[derive(Debug)]
pub struct Seal {
    store: PathBuf,
}

impl Seal {
    /// A seal to write for the store file at `store` when the store is dropped.
    pub fn new(store: &Path) -> Seal {
        Seal {
            store: store.to_path_buf(),
        }
    }

    /// Writes the seal through a temporary file renamed into place. File timestamps come from
    /// a coarse clock (a few milliseconds), so a write to the store in the same tick as its
    /// last change would leave its timestamps unchanged: the temporary seal is rewritten until
    /// its own modification time is past the store's change time, which makes every later
    /// write to the store visible in its timestamps.
    fn write(&self) -> std::io::Result<bool> {
        let meta = std::fs::metadata(&self.store)?;
        let changed = (meta.ctime(), meta.ctime_nsec());
        let seal = seal_path(&self.store);
        let mut partial = seal.clone().into_os_string();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let mut attempts = 0;
        loop {
            let mut f = File::create(&partial)?;
            f.write_all(fingerprint(&meta).as_bytes())?;
            f.sync_all()?;
            let written = f.metadata()?;
            if (written.mtime(), written.mtime_nsec()) > changed {
                break;
            }
            attempts += 1;
            if attempts == TICK_ATTEMPTS {
                std::fs::remove_file(&partial)?;
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        std::fs::rename(&partial, &seal)?;
        if let Some(dir) = seal.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        Ok(true)
    }
}

impl Drop for Seal {
    fn drop(&mut self) {
        if let Err(e) = self.write() {
            tracing::warn!(error = %e, "writing the store's clean-close seal; the next start verifies the whole file");
        }
    }
}
