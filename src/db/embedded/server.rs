//! PostgreSQL programs: which binaries, which user, and how they are started on a cluster.
//!
//! Invariants:
//! - when we run as root, every PostgreSQL program runs as the `postgres` system user, with
//!   no supplementary groups (PostgreSQL refuses root; `nobody` is not used: files owned by
//!   `nobody` are shared with every other daemon that runs as it);
//! - a program reaches its cluster through a descriptor we open and hand down
//!   (`-D /proc/self/fd/N`), with `/` as its working directory: the server's user never has
//!   to traverse the data directory's parents (a checkout under `/root`, a `mktemp -d`), so
//!   the cluster can always live inside the data directory and its place never depends on
//!   permissions. Only that descriptor is handed down: every other one is close-on-exec;
//! - a program dies with the thread that started it (PR_SET_PDEATHSIG, set after the
//!   change of user, which would clear it) and runs in its own session, so a terminal's
//!   Ctrl-C reaches us, and we stop it in order.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::EmbeddedError;

/// The user the server runs as when we are root.
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
}

/// Who must own the cluster: the server's user.
pub struct Owner {
    pub uid: u32,
    /// For messages: `postgres`, or "uid N" when we run the server as ourselves.
    pub name: String,
    pub root: bool,
}

impl Owner {
    pub fn of(run_as: Option<&RunAs>) -> Owner {
        match run_as {
            Some(u) => Owner { uid: u.uid, name: u.name.clone(), root: true },
            None => {
                // SAFETY: geteuid has no preconditions.
                let uid = unsafe { libc::geteuid() };
                Owner { uid, name: format!("uid {uid}"), root: false }
            }
        }
    }
}

/// `postgres` when we run as root; `None` (run as ourselves) otherwise.
pub fn server_user() -> Result<Option<RunAs>, EmbeddedError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    lookup_user("postgres").map(Some).ok_or_else(|| {
        EmbeddedError::Refused(
            "tally runs as root, and PostgreSQL refuses to run as root, so the embedded server runs as the \
             `postgres` system user, which does not exist here. Create it (Debian: installing the \
             `postgresql` package does; or `useradd --system --user-group --home-dir /var/lib/postgresql \
             postgres`), or run tally as an ordinary user, or set DATABASE_URL."
                .into(),
        )
    })
}

fn lookup_user(name: &str) -> Option<RunAs> {
    let cname = CString::new(name).ok()?;
    // SAFETY: getpwnam_r writes only into `pwd` and `buf`, both owned here and large enough
    // (it reports ERANGE otherwise); `result` is null or points at `pwd`.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwnam_r(cname.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result);
        if rc != 0 || result.is_null() {
            return None;
        }
        Some(RunAs { uid: pwd.pw_uid, gid: pwd.pw_gid, name: name.into() })
    }
}

/// An open descriptor on a cluster directory, handed to the programs that work on it.
pub struct ClusterFd(File);

impl ClusterFd {
    pub fn open(path: &Path) -> std::io::Result<ClusterFd> {
        OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY).open(path).map(ClusterFd)
    }

    /// The `-D` argument: the directory as the child sees it through the inherited descriptor.
    pub fn data_arg(&self) -> String {
        format!("/proc/self/fd/{}", self.0.as_raw_fd())
    }

    pub fn file(&self) -> &File {
        &self.0
    }
}

/// `bin/program`, to run on `cluster` (which it gets as `ClusterFd::data_arg`).
pub fn command(bin: &Path, program: &str, run_as: Option<&RunAs>, cluster: &ClusterFd) -> Command {
    let mut cmd = Command::new(bin.join(program));
    cmd.current_dir("/").stdin(Stdio::null());
    if let Some(u) = run_as {
        cmd.uid(u.uid).gid(u.gid);
    }
    let fd = cluster.0.as_raw_fd();
    // SAFETY: fcntl, setsid and prctl are async-signal-safe; this runs in the forked child
    // only, after the change of user.
    unsafe {
        cmd.pre_exec(move || {
            // The descriptor was opened close-on-exec; this child, and only it, keeps it.
            if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::setsid();
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// The major version of the server binaries (`15`; `9.6` for the old scheme), as it
/// appears in a cluster's `PG_VERSION`.
pub fn major_version(bin: &Path) -> Result<String, EmbeddedError> {
    let out = Command::new(bin.join("postgres"))
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| EmbeddedError::Io(format!("running {} --version: {e}", bin.join("postgres").display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().find(|w| w.starts_with(|c: char| c.is_ascii_digit()));
    let parts: Vec<&str> = version.unwrap_or_default().split('.').collect();
    let first: String = parts[0].chars().take_while(char::is_ascii_digit).collect();
    match first.parse::<u32>() {
        Ok(n) if n >= 10 => Ok(n.to_string()),
        Ok(n) if parts.len() > 1 => Ok(format!("{n}.{}", parts[1])),
        _ => Err(EmbeddedError::Io(format!("cannot read the version of {}: {text:?}", bin.display()))),
    }
}

pub fn find_bin_dir() -> Option<PathBuf> {
    let has_server = |d: &Path| d.join("postgres").is_file() && d.join("initdb").is_file();
    if let Some(d) = std::env::var_os("TALLY_PG_BIN_DIR").map(PathBuf::from) {
        return has_server(&d).then_some(d);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_server(&d) {
            return Some(d);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(d) = std::env::split_paths(&path).find(|d| has_server(d)) {
            return Some(d);
        }
    }
    let mut versions: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|d| has_server(d))
        .collect();
    versions.sort_by_key(|d| {
        d.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok())
    });
    versions.pop()
}
