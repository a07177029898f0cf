//! Throwaway clusters (tests, benchmarks), and the removal of those whose owner died.
//!
//! Invariants:
//! - an ephemeral data directory is created by `EmbeddedPostgres::start` with `mkdir`,
//!   which fails on anything already there (a symlink included), under an unpredictable
//!   name; `stop` removes it;
//! - its owner takes the directory's lock before it writes the marker file, and keeps the
//!   lock until the directory is gone. So a marker whose lock is free proves the owner has
//!   died (the kernel releases the lock with the process, `kill -9` included);
//! - `reap_abandoned` removes only that: a real directory (not a symlink) named
//!   `tally-test-*` in the temporary directory, owned by us, holding our marker, whose lock
//!   it can take. It removes it while holding that lock.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::lock::DirLock;
use super::{random_hex, write_new, EmbeddedError};

const MARKER: &str = "tally-ephemeral";
const PREFIX: &str = "tally-test-";

/// A new, unused path for a test process's ephemeral cluster.
pub fn ephemeral_dir() -> PathBuf {
    std::env::temp_dir().join(format!("{PREFIX}{}-{}", std::process::id(), random_hex(8)))
}

/// Creates `dir` (it must not exist) and resolves its path.
pub(super) fn create(dir: &Path) -> Result<PathBuf, EmbeddedError> {
    fs::DirBuilder::new().mode(0o700).create(dir).map_err(|e| {
        EmbeddedError::Io(format!("creating the ephemeral directory {} (it must not exist): {e}", dir.display()))
    })?;
    fs::canonicalize(dir).map_err(|e| EmbeddedError::Io(format!("resolving {}: {e}", dir.display())))
}

/// Marks `dir`, whose lock we hold, as an ephemeral cluster of this process.
pub(super) fn mark(dir: &Path) -> Result<(), EmbeddedError> {
    let text = format!("ephemeral cluster of pid {}: removed when that process stops or dies\n", std::process::id());
    write_new(&dir.join(MARKER), text.as_bytes(), 0o600)
        .map_err(|e| EmbeddedError::Io(format!("marking {}: {e}", dir.display())))
}

/// Removes ephemeral clusters whose owner died before it could clean up (their server died
/// with it).
pub fn reap_abandoned() {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else { return };
    for e in entries.flatten() {
        if !e.file_name().to_str().is_some_and(|n| n.starts_with(PREFIX)) {
            continue;
        }
        let dir = e.path();
        let ours = |p: &Path, dir: bool| {
            fs::symlink_metadata(p).is_ok_and(|m| m.uid() == me && if dir { m.is_dir() } else { m.is_file() })
        };
        if !ours(&dir, true) || !ours(&dir.join(MARKER), false) {
            continue;
        }
        let Some(_lock) = DirLock::try_free(&dir) else { continue };
        let _ = fs::remove_dir_all(&dir);
    }
}
