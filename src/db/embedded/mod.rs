//! Embedded Postgres: runs the machine's own PostgreSQL binaries as a child process, with
//! its cluster kept inside the data directory.
//!
//! Invariants (each submodule says how it keeps its part):
//! - nothing is deleted, emptied or replaced unless the same call created it: a cluster that
//!   exists but looks damaged, or a recorded cluster that is missing, stops start-up with a
//!   message saying what is wrong and how to recover, and is left as it was (`location`);
//! - one process per data directory: an exclusive lock on `<data>/tally.lock` for the life
//!   of the handle; a second process fails at once and names the holder (`lock`);
//! - the cluster is `<data>/pg` (clusters that earlier versions put elsewhere are honoured
//!   where `<data>/CLUSTER_LOCATION` says), and the server reaches it through a descriptor
//!   we hand it, whatever the permissions of the data directory's parents (`server`);
//! - the server listens only on a Unix socket in its own 0700 cluster directory, or in a
//!   fresh `mkdtemp` directory when that path is too long for a socket; never on TCP
//!   (`socket`);
//! - password (scram-sha-256) authentication with a generated password kept in
//!   `<data>/db_password` (0600), never `trust` (`auth`);
//! - when we run as root, the server runs as the `postgres` system user;
//! - the server cannot outlive us (PR_SET_PDEATHSIG), and only our own, not yet reaped
//!   child is ever signalled (`child`);
//! - an ephemeral cluster (tests, benchmarks) lives in a directory that `start` creates and
//!   `stop` removes (`ephemeral`).

mod auth;
mod child;
mod ephemeral;
mod init;
mod location;
mod lock;
mod server;
mod socket;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::{ConnectOptions, Connection};

pub use ephemeral::{ephemeral_dir, reap_abandoned};
pub use server::find_bin_dir;

use child::Supervised;
use location::State;
use lock::DirLock;
use server::ClusterFd;
use socket::{Socket, PORT};

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
    /// Start-up refused on purpose: the message says what is wrong and how to recover.
    #[error("{0}")]
    Refused(String),
}

fn io(context: &str) -> impl FnOnce(std::io::Error) -> EmbeddedError + '_ {
    move |e| EmbeddedError::Io(format!("{context}: {e}"))
}

pub struct EmbeddedOptions {
    /// The data directory: holds the cluster (`<dir>/pg`), its password and its log.
    pub dir: PathBuf,
    /// A throwaway cluster (tests): `dir` must not exist; it is created, and removed on stop.
    pub ephemeral: bool,
    /// Durable commits. Off only for throwaway test clusters.
    pub fsync: bool,
    pub max_connections: u32,
    /// `shared_preload_libraries` (e.g. `pg_stat_statements` for a profiling bench run).
    pub preload: Option<&'static str>,
}

pub struct EmbeddedPostgres {
    server: Option<Supervised>,
    socket: Socket,
    data: PathBuf,
    password: String,
    ephemeral: bool,
    lock: Option<DirLock>,
}

impl EmbeddedPostgres {
    pub fn start(opts: EmbeddedOptions) -> Result<EmbeddedPostgres, EmbeddedError> {
        let bin = find_bin_dir().ok_or(EmbeddedError::NoBinaries)?;
        let run_as = server::server_user()?;
        let data = if opts.ephemeral { ephemeral::create(&opts.dir)? } else { open_data_dir(&opts.dir)? };
        let started = start_in(&bin, &data, run_as.as_ref(), &opts);
        if started.is_err() && opts.ephemeral {
            // Created by this call, just above.
            let _ = fs::remove_dir_all(&data);
        }
        started
    }

    /// Connection options for `database` on this cluster.
    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new_without_pgpass()
            .socket(&self.socket.dir)
            .port(PORT)
            .ssl_mode(PgSslMode::Disable)
            .username(ROLE)
            .password(&self.password)
            .database(database)
            .log_statements(tracing::log::LevelFilter::Trace)
    }

    /// A `postgres://` URL for `database`, for another process (the socket directory as
    /// `host`, the password included).
    pub fn database_url(&self, database: &str) -> String {
        let host: String =
            url::form_urlencoded::byte_serialize(self.socket.dir.as_os_str().as_encoded_bytes()).collect();
        format!("postgres://{ROLE}:{}@localhost:{PORT}/{database}?host={host}&sslmode=disable", self.password)
    }

    /// The cluster's password (also in `<data>/db_password`).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The data directory, as resolved at start.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Creates `name` if it is missing and returns options for it.
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

    fn wait_ready(&self) -> Result<(), EmbeddedError> {
        let log = self.data.join("postgres.log");
        let deadline = Instant::now() + Duration::from_secs(60);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(io("runtime"))?;
        let opts = self.connect_options("postgres");
        loop {
            if !self.server.as_ref().is_some_and(Supervised::running) {
                return Err(EmbeddedError::Start(format!(
                    "the server exited; see {}:\n{}",
                    log.display(),
                    log_tail(&log)
                )));
            }
            match rt.block_on(async { sqlx::PgConnection::connect_with(&opts).await?.close().await }) {
                Ok(()) => return Ok(()),
                Err(sqlx::Error::Database(e)) if matches!(e.code().as_deref(), Some("28P01" | "28000")) => {
                    return Err(EmbeddedError::Refused(format!(
                        "the embedded database refused tally's password from {}: {}. If that file was \
                         replaced or restored from another copy, put back the one that belongs to this cluster \
                         (see \"When the embedded database refuses to start\" in the README).",
                        self.data.join(auth::PASSWORD_FILE).display(),
                        e.message()
                    )));
                }
                Err(_) => {}
            }
            if Instant::now() > deadline {
                return Err(EmbeddedError::Start(format!("not ready after 60 s; see {}", log.display())));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Fast shutdown (SIGINT), escalating to immediate (SIGQUIT); removes what this handle
    /// created: a socket directory in /tmp, and an ephemeral data directory.
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            if server.signal(libc::SIGINT) && !server.wait_exit(Duration::from_secs(20)) {
                server.signal(libc::SIGQUIT);
                server.wait_exit(Duration::from_secs(10));
            }
        }
        self.socket.remove();
        if std::mem::take(&mut self.ephemeral) {
            // Created by `start` (ephemeral::create); removed while we still hold its lock.
            let _ = fs::remove_dir_all(&self.data);
        }
        self.lock = None;
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Everything after the data directory exists: lock, cluster, password, socket, server.
fn start_in(
    bin: &Path,
    data: &Path,
    run_as: Option<&server::RunAs>,
    opts: &EmbeddedOptions,
) -> Result<EmbeddedPostgres, EmbeddedError> {
    let lock = DirLock::acquire(data)?;
    if opts.ephemeral {
        ephemeral::mark(data)?;
    }
    let major = server::major_version(bin)?;
    let loc = location::locate(data)?;
    let owner = server::Owner::of(run_as);
    let cluster = match location::examine(data, &loc, &major, &owner)? {
        State::Missing => init::create(bin, data, &loc.cluster, run_as, opts.fsync)?,
        State::Empty => init::create_in_place(bin, data, &loc.cluster, run_as, opts.fsync)?,
        State::Ready => ClusterFd::open(&loc.cluster).map_err(io("opening the cluster directory"))?,
    };
    if !loc.recorded {
        location::record(data)?;
    }
    if !loc.cluster.starts_with(data) {
        tracing::warn!("{}", location::outside_note(data, &loc.cluster));
    }
    let password = auth::secure(bin, data, &loc.cluster, &cluster, run_as)?;
    let socket = Socket::create(&loc.cluster, run_as)?;

    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(data.join("postgres.log"))
        .map_err(io("opening postgres.log"))?;
    let mut cmd = server::command(bin, "postgres", run_as, &cluster);
    cmd.arg("-D").arg(cluster.data_arg()).arg("-k").arg(&socket.server_arg).arg("-p").arg(PORT.to_string());
    for (k, v) in server_settings(opts) {
        cmd.arg("-c").arg(format!("{k}={v}"));
    }
    cmd.stdout(log.try_clone().map_err(io("postgres.log"))?).stderr(Stdio::from(log));
    let mut pg = EmbeddedPostgres {
        server: None,
        socket,
        data: data.to_path_buf(),
        password,
        // `start` removes an ephemeral directory itself if this call fails.
        ephemeral: false,
        lock: Some(lock),
    };
    pg.server = Some(Supervised::spawn(cmd).map_err(io("starting postgres"))?);
    pg.wait_ready()?;
    pg.ephemeral = opts.ephemeral;
    Ok(pg)
}

/// Creates the data directory if it is missing (0700: it holds the database password)
/// and resolves its path.
fn open_data_dir(dir: &Path) -> Result<PathBuf, EmbeddedError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| EmbeddedError::Io(format!("creating the data directory {}: {e}", dir.display())))?;
    fs::canonicalize(dir).map_err(io("resolving the data directory"))
}

fn server_settings(opts: &EmbeddedOptions) -> Vec<(&'static str, String)> {
    let mut s = vec![
        ("listen_addresses", String::new()),
        ("unix_socket_permissions", "0700".into()),
        ("max_connections", opts.max_connections.to_string()),
        ("shared_buffers", "128MB".into()),
        ("logging_collector", "off".into()),
    ];
    if let Some(libs) = opts.preload {
        s.push(("shared_preload_libraries", libs.into()));
    }
    if !opts.fsync {
        s.extend([("fsync", "off".into()), ("synchronous_commit", "off".into()), ("full_page_writes", "off".into())]);
    }
    s
}

/// Creates `path` holding `contents`, failing if it exists. Written under a temporary name
/// and linked into place, so a reader sees the whole file or none.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}", random_hex(6)));
    let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
    let written = f.write_all(contents).and_then(|_| f.sync_all()).and_then(|_| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    written?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

fn log_tail(p: &Path) -> String {
    let text = fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
