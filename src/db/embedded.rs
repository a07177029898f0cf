//! Embedded Postgres: runs the machine's own PostgreSQL binaries as a child process.
//!
//! Invariants:
//! - the server listens only on a Unix socket in a private (0700) directory: never on TCP;
//! - when we run as root, the server runs as an unprivileged user (`postgres`, else `nobody`),
//!   because Postgres refuses to run as root;
//! - the server cannot outlive us: it is spawned from a thread that lives as long as the
//!   child, with `PR_SET_PDEATHSIG`, so even a `kill -9` of our process stops it;
//! - an ephemeral cluster (tests) removes its data and socket directories when stopped.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

/// The role and database the embedded cluster is created with.
const ROLE: &str = "tally";

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "no PostgreSQL server binaries found (looked at TALLY_PG_BIN_DIR, `pg_config --bindir`, PATH and \
         /usr/lib/postgresql/*/bin). Install PostgreSQL (Debian: `apt-get install postgresql`), or set \
         DATABASE_URL to an existing server, or run `docker compose up`"
    )]
    NoBinaries,
    #[error("embedded postgres: {0}")]
    Io(String),
    #[error("embedded postgres did not start: {0}")]
    Start(String),
}

fn io(context: &str) -> impl FnOnce(std::io::Error) -> EmbeddedError + '_ {
    move |e| EmbeddedError::Io(format!("{context}: {e}"))
}

pub struct EmbeddedOptions {
    /// Directory that holds the cluster (`<dir>/pg`) and its log.
    pub dir: PathBuf,
    /// Remove everything on stop (tests).
    pub ephemeral: bool,
    /// Durable commits. Off only for throwaway test clusters.
    pub fsync: bool,
    pub max_connections: u32,
}

pub struct EmbeddedPostgres {
    pid: i32,
    exited: mpsc::Receiver<()>,
    cluster: PathBuf,
    socket_dir: PathBuf,
    ephemeral: bool,
    stopped: bool,
}

struct RunAs {
    uid: u32,
    gid: u32,
    name: String,
}

impl EmbeddedPostgres {
    pub fn start(opts: EmbeddedOptions) -> Result<EmbeddedPostgres, EmbeddedError> {
        let bin = find_bin_dir().ok_or(EmbeddedError::NoBinaries)?;
        let run_as = unprivileged_user()?;
        fs::create_dir_all(&opts.dir).map_err(io("creating the data directory"))?;
        let dir = fs::canonicalize(&opts.dir).map_err(io("resolving the data directory"))?;
        let cluster = cluster_dir(&dir, run_as.as_ref())?;

        if !cluster.join("PG_VERSION").exists() {
            init_cluster(&bin, &cluster, run_as.as_ref())?;
        }
        let socket_dir = socket_dir_for(&cluster);
        fs::create_dir_all(&socket_dir).map_err(io("creating the socket directory"))?;
        fs::set_permissions(&socket_dir, fs::Permissions::from_mode(0o700)).map_err(io("socket dir"))?;
        chown(&socket_dir, run_as.as_ref())?;

        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("postgres.log"))
            .map_err(io("opening postgres.log"))?;
        let mut cmd = Command::new(bin.join("postgres"));
        cmd.arg("-D").arg(&cluster).arg("-k").arg(&socket_dir);
        for (k, v) in server_settings(&opts) {
            cmd.arg("-c").arg(format!("{k}={v}"));
        }
        cmd.stdin(Stdio::null()).stdout(log.try_clone().map_err(io("postgres.log"))?).stderr(log);
        if let Some(u) = &run_as {
            cmd.uid(u.uid).gid(u.gid);
        }
        // SAFETY: prctl and setsid are async-signal-safe; they run in the forked child only.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }

        let (pid_tx, pid_rx) = mpsc::channel();
        let (exit_tx, exited) = mpsc::channel();
        // The spawning thread must live as long as the server: PDEATHSIG fires when it ends.
        std::thread::Builder::new()
            .name("embedded-postgres".into())
            .spawn(move || match cmd.spawn() {
                Ok(mut child) => {
                    let _ = pid_tx.send(Ok(child.id() as i32));
                    let _ = child.wait();
                    let _ = exit_tx.send(());
                }
                Err(e) => {
                    let _ = pid_tx.send(Err(e));
                }
            })
            .map_err(io("spawning the postgres thread"))?;
        let pid = pid_rx
            .recv()
            .map_err(|_| EmbeddedError::Start("postgres thread died".into()))?
            .map_err(io("starting postgres"))?;

        let mut pg = EmbeddedPostgres { pid, exited, cluster, socket_dir, ephemeral: opts.ephemeral, stopped: false };
        if let Err(e) = pg.wait_ready(&dir) {
            pg.stop();
            return Err(e);
        }
        Ok(pg)
    }

    /// Connection options for `database` on this cluster.
    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(&self.socket_dir)
            .username(ROLE)
            .database(database)
            .log_statements(tracing::log::LevelFilter::Trace)
    }

    /// Creates `tally` if it is missing and returns options for it.
    pub async fn ensure_database(&self, name: &str) -> Result<PgConnectOptions, sqlx::Error> {
        let mut conn = sqlx::PgConnection::connect_with(&self.connect_options("postgres")).await?;
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut conn)
            .await?;
        if !exists {
            sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&mut conn).await?;
        }
        Ok(self.connect_options(name))
    }

    fn wait_ready(&mut self, dir: &Path) -> Result<(), EmbeddedError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(io("runtime"))?;
        loop {
            if self.exited.try_recv().is_ok() {
                self.stopped = true;
                return Err(EmbeddedError::Start(format!(
                    "the server exited; see {}:\n{}",
                    dir.join("postgres.log").display(),
                    log_tail(&dir.join("postgres.log"))
                )));
            }
            let opts = self.connect_options("postgres");
            if rt.block_on(async { sqlx::PgConnection::connect_with(&opts).await.map(|_| ()) }).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(EmbeddedError::Start("not ready after 60 s".into()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Fast shutdown (SIGINT), escalating to immediate (SIGQUIT); removes ephemeral data.
    pub fn stop(&mut self) {
        if !self.stopped {
            self.stopped = true;
            // SAFETY: plain kill(2) on the pid of our own child.
            unsafe { libc::kill(self.pid, libc::SIGINT) };
            if self.exited.recv_timeout(Duration::from_secs(20)).is_err() {
                unsafe { libc::kill(self.pid, libc::SIGQUIT) };
                let _ = self.exited.recv_timeout(Duration::from_secs(10));
            }
        }
        let _ = fs::remove_dir_all(&self.socket_dir);
        if self.ephemeral {
            let _ = fs::remove_dir_all(self.cluster.parent().unwrap_or(&self.cluster));
        }
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A directory for an ephemeral cluster owned by this process.
pub fn ephemeral_dir() -> PathBuf {
    std::env::temp_dir().join(format!("tally-test-{}", std::process::id()))
}

/// Removes ephemeral clusters whose owning process is gone (killed before it could clean
/// up; its server died with it). Their pid is in the directory name.
pub fn reap_abandoned() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("tally-test-")).and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let dir = e.path();
        let _ = fs::remove_dir_all(socket_dir_for(&dir.join("pg")));
        let _ = fs::remove_dir_all(&dir);
    }
}

fn server_settings(opts: &EmbeddedOptions) -> Vec<(&'static str, String)> {
    let mut s = vec![
        ("listen_addresses", String::new()),
        ("unix_socket_permissions", "0700".into()),
        ("max_connections", opts.max_connections.to_string()),
        ("shared_buffers", "128MB".into()),
        ("logging_collector", "off".into()),
    ];
    if !opts.fsync {
        s.extend([("fsync", "off".into()), ("synchronous_commit", "off".into()), ("full_page_writes", "off".into())]);
    }
    s
}

fn init_cluster(bin: &Path, cluster: &Path, run_as: Option<&RunAs>) -> Result<(), EmbeddedError> {
    fs::create_dir_all(cluster).map_err(io("creating the cluster directory"))?;
    fs::set_permissions(cluster, fs::Permissions::from_mode(0o700)).map_err(io("cluster dir"))?;
    chown(cluster, run_as)?;
    let mut cmd = Command::new(bin.join("initdb"));
    cmd.arg("-D")
        .arg(cluster)
        .args(["-U", ROLE, "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-instructions"])
        .stdin(Stdio::null());
    if let Some(u) = run_as {
        cmd.uid(u.uid).gid(u.gid);
    }
    let out = cmd.output().map_err(io("running initdb"))?;
    if !out.status.success() {
        let _ = fs::remove_dir_all(cluster);
        return Err(EmbeddedError::Start(format!("initdb failed: {}", String::from_utf8_lossy(&out.stderr))));
    }
    Ok(())
}

/// `<dir>/pg`, unless we run as root and the unprivileged server user cannot reach it
/// (a checkout under `/root`, say): then a directory it can reach, keyed by `<dir>`.
fn cluster_dir(dir: &Path, run_as: Option<&RunAs>) -> Result<PathBuf, EmbeddedError> {
    let local = dir.join("pg");
    let Some(u) = run_as else { return Ok(local) };
    if reachable_by(dir, u) {
        return Ok(local);
    }
    let elsewhere = PathBuf::from("/var/lib/tally-embedded").join(short_hash(dir));
    fs::create_dir_all(&elsewhere).map_err(io("creating /var/lib/tally-embedded"))?;
    tracing::warn!(
        "user {} cannot reach {}; the embedded cluster lives in {} instead",
        u.name,
        dir.display(),
        elsewhere.display()
    );
    let _ = fs::write(dir.join("CLUSTER_LOCATION"), elsewhere.display().to_string());
    Ok(elsewhere.join("pg"))
}

fn reachable_by(dir: &Path, u: &RunAs) -> bool {
    dir.ancestors().all(|p| match fs::metadata(p) {
        Ok(m) => {
            let mode = m.mode();
            mode & 0o001 != 0 || (m.uid() == u.uid && mode & 0o100 != 0) || (m.gid() == u.gid && mode & 0o010 != 0)
        }
        Err(_) => false,
    })
}

/// Unix socket paths are limited to ~107 bytes, so the socket lives in a short path.
fn socket_dir_for(cluster: &Path) -> PathBuf {
    PathBuf::from("/tmp").join(format!("tally-pg-{}", short_hash(cluster)))
}

fn short_hash(p: &Path) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(p.as_os_str().as_encoded_bytes())[..6])
}

fn chown(p: &Path, run_as: Option<&RunAs>) -> Result<(), EmbeddedError> {
    if let Some(u) = run_as {
        std::os::unix::fs::chown(p, Some(u.uid), Some(u.gid)).map_err(io("chown"))?;
    }
    Ok(())
}

fn unprivileged_user() -> Result<Option<RunAs>, EmbeddedError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    for name in ["postgres", "nobody"] {
        let cname = std::ffi::CString::new(name).expect("static name");
        // SAFETY: getpwnam returns a pointer into static storage or null; read immediately.
        let pw = unsafe { libc::getpwnam(cname.as_ptr()) };
        if !pw.is_null() {
            let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
            return Ok(Some(RunAs { uid, gid, name: name.into() }));
        }
    }
    Err(EmbeddedError::Start("running as root and no unprivileged user (postgres, nobody) exists".into()))
}

fn find_bin_dir() -> Option<PathBuf> {
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

fn log_tail(p: &Path) -> String {
    let text = fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
