//! The throwaway PostgreSQL cluster, the database the services share, and the machine.

use std::collections::BTreeMap;
use std::path::Path;

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tally::db::embedded::{EmbeddedOptions, EmbeddedPostgres};

use crate::BoxError;

/// An ephemeral cluster in `dir` (created here, removed on drop), fsync ON: commits are as
/// durable as in production. `profile`: with `pg_stat_statements` loaded.
pub fn start(dir: &Path, profile: bool) -> Result<EmbeddedPostgres, BoxError> {
    Ok(EmbeddedPostgres::start(EmbeddedOptions {
        dir: dir.to_path_buf(),
        ephemeral: true,
        fsync: true,
        max_connections: 200,
        preload: profile.then_some("pg_stat_statements"),
    })?)
}

/// The benchmark database: a URL for the service and a small pool for the checks.
pub struct Database {
    pub url: String,
    pub pool: PgPool,
    /// For the CPU figures.
    pub postmaster_pid: u32,
}

impl Database {
    pub async fn create(pg: &EmbeddedPostgres, name: &str) -> Result<Database, BoxError> {
        let opts = pg.ensure_database(name).await?;
        let url = pg.database_url(name);
        let pool = PgPoolOptions::new().max_connections(4).connect_with(opts).await?;
        warm_wal(&pool).await?;
        let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&pool).await?;
        let postmaster_pid = crate::cpu::parent_of(backend as u32).ok_or("cannot find the postmaster's pid")?;
        Ok(Database { url, pool, postmaster_pid })
    }
}

/// WAL segment files made ready before the load (16 MB each).
const WAL_SEGMENTS: usize = 64;

/// A server in steady state writes its WAL into segment files its checkpoints recycled; a
/// new cluster has none, so every 16 MB of WAL the transaction that crosses into the next
/// segment first creates and zero-fills its file, holding its locks meanwhile (measured
/// with `perf` under `--soak`: 2.5% of PostgreSQL's time in `XLogFileInit`, and stalls
/// that made the p99). So the bench creates `WAL_SEGMENTS` segments (1 GB) up front and
/// lets a checkpoint recycle them (`min_wal_size` keeps them), as a long-running server's
/// would be.
async fn warm_wal(pool: &PgPool) -> Result<(), BoxError> {
    let started = std::time::Instant::now();
    for sql in ["ALTER SYSTEM SET min_wal_size = '1GB'", "SELECT pg_reload_conf()"] {
        sqlx::raw_sql(sql).execute(pool).await?;
    }
    for _ in 0..WAL_SEGMENTS {
        // A switch needs WAL written since the last one.
        sqlx::raw_sql("SELECT pg_logical_emit_message(false, 'tally-bench', 'warm'); SELECT pg_switch_wal()")
            .execute(pool)
            .await?;
    }
    sqlx::raw_sql("CHECKPOINT").execute(pool).await?;
    let ready: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_ls_waldir()").fetch_one(pool).await?;
    eprintln!(
        "[bench] {ready} WAL segment files ready, recycled by a checkpoint, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// What the figures were measured on.
pub struct Machine {
    pub cpus: usize,
    pub model: String,
    pub memory: String,
    pub postgres: String,
    /// Cores busy on the machine just before the run (other work disturbs the figures).
    pub busy_before: f64,
}

impl Machine {
    pub async fn detect(pool: &PgPool, busy_before: f64) -> Result<Machine, BoxError> {
        let postgres: String = sqlx::query_scalar("SELECT version()").fetch_one(pool).await?;
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Ok(Machine {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            model: field(&cpuinfo, "model name").unwrap_or_else(|| "unknown".into()),
            memory: field(&meminfo, "MemTotal").unwrap_or_else(|| "unknown".into()),
            postgres,
            busy_before,
        })
    }
}

/// The value of the first `name: value` line.
fn field(text: &str, name: &str) -> Option<String> {
    text.lines().filter_map(|l| l.split_once(':')).find(|(k, _)| k.trim() == name).map(|(_, v)| v.trim().to_string())
}

/// Warnings and errors PostgreSQL logged during the run, grouped by message.
pub fn print_log_summary(dir: &Path) {
    let text = std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for line in text.lines() {
        if let Some(at) = ["WARNING:", "ERROR:", "FATAL:", "PANIC:"].iter().find_map(|level| line.find(level)) {
            *counts.entry(line[at..].to_string()).or_default() += 1;
        }
    }
    let total: usize = counts.values().sum();
    println!("\nPostgreSQL log: {total} warning/error lines");
    let mut top: Vec<_> = counts.into_iter().collect();
    top.sort_by_key(|e| std::cmp::Reverse(e.1));
    for (msg, n) in top.iter().take(10) {
        println!("  {n:>7} × {msg}");
    }
}
