//! Creating a cluster: `initdb` with password authentication from the first moment.
//!
//! Invariants:
//! - a new cluster is made in a directory this call creates under a temporary name, and
//!   moved to its place (`<data>/pg`) only once `initdb` has succeeded, with a rename that
//!   refuses to replace anything. So `<data>/pg` is either absent or a whole cluster, and
//!   on failure only the temporary directory this call made is removed;
//! - an existing empty directory (a mount point, say) is initialised in place and never
//!   removed; `initdb` cleans up only the files it wrote;
//! - the password reaches `initdb` through an already unlinked file that only the server's
//!   user can read, never through a path, an argument or the environment.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use super::server::{self, ClusterFd, RunAs};
use super::{auth, random_hex, sync_dir, EmbeddedError, ROLE};

/// A new cluster at `target` (which does not exist), in `data`.
pub fn create(
    bin: &Path,
    data: &Path,
    target: &Path,
    run_as: Option<&RunAs>,
    fsync: bool,
) -> Result<ClusterFd, EmbeddedError> {
    let password = auth::password_for_new_cluster(data)?;
    let tmp = data.join(format!("pg.initdb-{}", random_hex(6)));
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&tmp)
        .map_err(|e| EmbeddedError::Io(format!("creating {}: {e}", tmp.display())))?;
    let made = (|| {
        let fd = ClusterFd::open(&tmp).map_err(|e| EmbeddedError::Io(format!("opening {}: {e}", tmp.display())))?;
        if let Some(u) = run_as {
            std::os::unix::fs::fchown(fd.file(), Some(u.uid), Some(u.gid))
                .map_err(|e| EmbeddedError::Io(format!("handing {} to {}: {e}", tmp.display(), u.name)))?;
        }
        initdb(bin, data, &fd, run_as, fsync, &password)?;
        rename_noreplace(&tmp, target)
            .map_err(|e| EmbeddedError::Io(format!("moving the new cluster to {}: {e}", target.display())))?;
        sync_dir(data).map_err(|e| EmbeddedError::Io(format!("syncing {}: {e}", data.display())))?;
        Ok(fd)
    })();
    if made.is_err() {
        // Created by this call, above; never moved into place.
        let _ = fs::remove_dir_all(&tmp);
    }
    made
}

/// A new cluster in `cluster`, an existing empty directory the server's user owns.
pub fn create_in_place(
    bin: &Path,
    data: &Path,
    cluster: &Path,
    run_as: Option<&RunAs>,
    fsync: bool,
) -> Result<ClusterFd, EmbeddedError> {
    let password = auth::password_for_new_cluster(data)?;
    let fd = ClusterFd::open(cluster).map_err(|e| EmbeddedError::Io(format!("opening {}: {e}", cluster.display())))?;
    initdb(bin, data, &fd, run_as, fsync, &password)?;
    Ok(fd)
}

fn initdb(
    bin: &Path,
    data: &Path,
    fd: &ClusterFd,
    run_as: Option<&RunAs>,
    fsync: bool,
    password: &str,
) -> Result<(), EmbeddedError> {
    let mut cmd = server::command(bin, "initdb", run_as, fd);
    cmd.arg("-D").arg(fd.data_arg()).args([
        "-U",
        ROLE,
        "--auth-local=scram-sha-256",
        "--auth-host=reject",
        "--pwfile=/dev/stdin",
        "--encoding=UTF8",
        "--locale=C",
        "--no-instructions",
    ]);
    if !fsync {
        cmd.arg("--no-sync");
    }
    cmd.stdin(password_file(data, run_as, password)?);
    let out = cmd.output().map_err(|e| EmbeddedError::Io(format!("running initdb: {e}")))?;
    if !out.status.success() {
        return Err(EmbeddedError::Start(format!("initdb failed: {}", String::from_utf8_lossy(&out.stderr))));
    }
    Ok(())
}

/// An unlinked file holding the password, readable by the server's user only.
fn password_file(data: &Path, run_as: Option<&RunAs>, password: &str) -> Result<File, EmbeddedError> {
    let path = data.join(format!(".initdb-password-{}", random_hex(6)));
    let fail = |e: std::io::Error| EmbeddedError::Io(format!("preparing the password for initdb: {e}"));
    let mut f = OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path).map_err(fail)?;
    fs::remove_file(&path).map_err(fail)?;
    if let Some(u) = run_as {
        std::os::unix::fs::fchown(&f, Some(u.uid), Some(u.gid)).map_err(fail)?;
    }
    f.write_all(format!("{password}\n").as_bytes()).map_err(fail)?;
    Ok(f)
}

/// rename(2) that fails if `to` exists, even as an empty directory (which plain rename
/// would replace).
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other);
    let (from, to) = (c(from)?, c(to)?);
    // SAFETY: two NUL-terminated paths; renameat2 only reads them.
    let rc =
        unsafe { libc::renameat2(libc::AT_FDCWD, from.as_ptr(), libc::AT_FDCWD, to.as_ptr(), libc::RENAME_NOREPLACE) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
