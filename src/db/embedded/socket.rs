//! Where the server's Unix socket lives.
//!
//! Invariants:
//! - in the cluster directory itself when the socket's path fits the Unix socket limit: a
//!   directory the server's user owns, mode 0700, under the locked data directory, so no
//!   other account can reach or pre-create it (the server binds `./.s.PGSQL.5432` after it
//!   has changed to that directory);
//! - otherwise in a directory created fresh by `mkdtemp` (an unpredictable name that
//!   `mkdir` creates or fails: nothing another user made first is ever used), handed to the
//!   server's user through a descriptor opened without following symlinks, and removed
//!   when the server stops;
//! - a fixed port number (the socket's name), whatever `PGPORT` says.

use std::ffi::{CString, OsString};
use std::fs::{self, OpenOptions};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::server::RunAs;
use super::EmbeddedError;

pub const PORT: u16 = 5432;
/// `sun_path` holds 108 bytes, the terminating NUL included.
const SOCKET_PATH_MAX: usize = 107;

pub struct Socket {
    /// The directory clients connect through.
    pub dir: PathBuf,
    /// What the server is given (`-k`).
    pub server_arg: OsString,
    /// A directory this handle created, to remove on stop.
    created: Option<PathBuf>,
}

impl Socket {
    pub fn create(cluster: &Path, run_as: Option<&RunAs>) -> Result<Socket, EmbeddedError> {
        let in_cluster = cluster.join(format!(".s.PGSQL.{PORT}"));
        if in_cluster.as_os_str().len() <= SOCKET_PATH_MAX {
            return Ok(Socket { dir: cluster.to_path_buf(), server_arg: ".".into(), created: None });
        }
        let dir = mkdtemp("/tmp/tally-pg-XXXXXX")
            .map_err(|e| EmbeddedError::Io(format!("creating a socket directory in /tmp: {e}")))?;
        if let Some(u) = run_as {
            let handed = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
                .open(&dir)
                .and_then(|d| std::os::unix::fs::fchown(&d, Some(u.uid), Some(u.gid)));
            if let Err(e) = handed {
                let _ = fs::remove_dir(&dir);
                return Err(EmbeddedError::Io(format!("handing {} to {}: {e}", dir.display(), u.name)));
            }
        }
        Ok(Socket { dir: dir.clone(), server_arg: dir.clone().into(), created: Some(dir) })
    }

    /// Removes the directory if this handle created it.
    pub fn remove(&mut self) {
        if let Some(dir) = self.created.take() {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// mkdtemp(3): a new directory, mode 0700, with a random name.
fn mkdtemp(template: &str) -> std::io::Result<PathBuf> {
    let mut buf = CString::new(template).map_err(std::io::Error::other)?.into_bytes_with_nul();
    // SAFETY: `buf` is a writable NUL-terminated template, as mkdtemp requires.
    let p = unsafe { libc::mkdtemp(buf.as_mut_ptr().cast()) };
    if p.is_null() {
        return Err(std::io::Error::last_os_error());
    }
    buf.pop();
    Ok(PathBuf::from(OsString::from_vec(buf)))
}
