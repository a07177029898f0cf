//! The data directory's lock: one process per data directory, for the life of the process.
//!
//! Invariants:
//! - an exclusive `flock` on `<data>/tally.lock`, taken before anything else in the data
//!   directory is looked at or written, and held until the handle is dropped; the kernel
//!   releases it when the process dies, however it dies;
//! - the lock file is never truncated before the lock is ours (then it says our pid), so a
//!   process that is refused changes nothing; it is opened without following a symlink and
//!   close-on-exec, so no child inherits the lock.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use super::EmbeddedError;

pub const LOCK_FILE: &str = "tally.lock";

pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock, or fails at once naming the process that holds it.
    pub fn acquire(dir: &Path) -> Result<DirLock, EmbeddedError> {
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| EmbeddedError::Io(format!("opening {}: {e}", path.display())))?;
        if let Err(e) = try_lock(&file) {
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(EmbeddedError::Io(format!("locking {}: {e}", path.display())));
            }
            return Err(EmbeddedError::Refused(format!(
                "the data directory {} is in use by another process (pid {}), which holds {}. Two processes \
                 must not share one embedded database: stop that one first, or give this one its own \
                 TALLY_DATA_DIR (or a DATABASE_URL). Nothing was changed.",
                dir.display(),
                holder(&path),
                path.display()
            )));
        }
        let mut f = &file;
        f.set_len(0)
            .and_then(|_| f.write_all(format!("{}\n", std::process::id()).as_bytes()))
            .map_err(|e| EmbeddedError::Io(format!("writing {}: {e}", path.display())))?;
        Ok(DirLock { _file: file })
    }

    /// The lock of `dir`, if the lock file exists and nobody holds it.
    pub fn try_free(dir: &Path) -> Option<DirLock> {
        let file =
            OpenOptions::new().read(true).write(true).custom_flags(libc::O_NOFOLLOW).open(dir.join(LOCK_FILE)).ok()?;
        try_lock(&file).ok()?;
        Some(DirLock { _file: file })
    }
}

fn try_lock(file: &File) -> std::io::Result<()> {
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The holder's pid from the lock file. It writes it just after taking the lock, so give
/// a holder that is starting at this very moment a little time.
fn holder(path: &Path) -> String {
    for _ in 0..20 {
        if let Ok(text) = fs::read_to_string(path) {
            if let Ok(pid) = text.trim().parse::<u32>() {
                return pid.to_string();
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    "unknown".into()
}
