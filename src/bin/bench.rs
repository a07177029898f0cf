//! `tally-bench`: a load benchmark of the real `tally` service over real HTTP, on a
//! throwaway embedded PostgreSQL with fsync ON (durable commits, as in production).
//!
//! What it measures, in one run on one machine:
//! 1. it starts one ephemeral embedded PostgreSQL cluster (fsync on) and creates a database;
//! 2. for each configuration, `TALLY_CHARGE_BATCHING=off` (one locked transaction per charge)
//!    and then `on` (group commit) unless `--order on,off`, it spawns the release `tally` binary found next to this
//!    executable on that same database, waits for `/readyz`, runs the scenarios below, and
//!    stops it with SIGTERM;
//! 3. scenarios (each `--seconds` long, 10 s by default, 3 s with `--quick`):
//!    - warm-up: 1 s of charges at 64 clients on a tenant of its own (opens the connections);
//!    - hot tenant: charges of 0.01 on ONE tenant at 1, 8 and 64 concurrent clients;
//!    - hot key, hot key+limit: the same at 64 clients, every charge naming one API key,
//!      without and with a spend limit on it (never reached), in adjacent pairs of
//!      third-length segments (ABBA three times): what a limit costs;
//!    - 10,000 tenants: each charge on a random tenant out of 10,000, 64 clients;
//!    - estimates: `POST /v1/estimates` (pure pricing, no database write), 64 clients;
//!    - exhaustion: 800 charges of 0.01 by 64 clients against exactly 5.00;
//!    - limit exhaust: 800 charges of 0.01 by 64 clients naming a key limited to 5.00
//!      (lifetime), on a tenant that could pay for all of them;
//!    - mixed 80/20: 80% of the charges on 10 busy tenants, 20% spread over the 10,000;
//!    - two replicas: the same mix at 64 clients, half of them on a second `tally` process
//!      (same configuration, same database): both batch the same tenants at once.
//!
//! After each scenario it also prints the WAL written per acknowledged charge, and with
//! `--profile-db` the top statements of `pg_stat_statements`, per commit and per charge.
//!
//! Each client is a task on a separate multi-thread runtime sending one request at a time
//! over a keep-alive connection, each with its own `Idempotency-Key`. Latency is measured
//! from sending the request to having read the whole response body.
//!
//! After every scenario it checks, and prints `verified` or a `FAILED` line: the service's
//! ledger check (`GET /v1/admin/ledger/check`); that every acknowledged charge (id from a
//! 201) exists exactly once in the database and that the scenario's tenants gained no charge
//! without an acknowledgement (transport errors and 5xx, whose outcome the client cannot
//! know, are counted and allowed for, and reported); that the tenants' balances plus their
//! charges are unchanged (money only moved, 0.01 per new charge) and no balance is below
//! zero; for the exhaustion scenario, exactly 500 × 201, 300 × 402 `insufficient_funds`
//! and a final balance of 0.00; for the limit exhaustion, exactly 500 × 201, 300 × 402
//! `spend_limit_exceeded` and the key's window at exactly 5.00.
//!
//! Each row also shows where the CPU went during the load (whole machine, service,
//! PostgreSQL, the bench, other processes) and, per second, how many responses completed;
//! a scenario whose rate falls markedly is flagged `DRIFT` (a per-request cost growing with
//! the data written is not a steady state, and makes the second configuration's figures
//! depend on what the first one wrote: `--order on,off` shows whether it matters).
//!
//! Timing figures are reported, never judged: the exit status is non-zero only when a
//! correctness check fails or the benchmark cannot run. Ctrl-C stops the service and
//! removes the cluster.
//!
//! `--soak N` runs a different measurement instead (see `bench/soak.rs`): N consecutive
//! segments of `--seconds` each, charges on one hot tenant at 64 clients with batching on
//! (`--order off,on` for off), nothing scraping `/metrics`; per segment it prints the rate and
//! the service's RSS, then compares the last segment with the first.
//!
//! Run:
//! ```text
//! cargo build --release --bin tally --bin tally-bench     # or scripts/bench.sh [options]
//! target/release/tally-bench [--seconds 10] [--quick] [--tenants 10000] [--order off,on] [--profile-db]
//! target/release/tally-bench --soak 12 --seconds 15
//! ```
//! The service inherits the environment (so `TALLY_DB_POOL_SIZE`, `TALLY_CHARGE_BATCH_MAX`
//! … can be varied); the bench sets `DATABASE_URL`, `TALLY_ADDR`, `TALLY_ADMIN_TOKEN`,
//! `TALLY_CHARGE_BATCHING`, `TALLY_DATA_DIR` and `RUST_LOG=warn` itself, and runs it in the
//! temporary directory so that no `.env` file changes what is measured.

#[path = "bench/api.rs"]
mod api;
#[path = "bench/cluster.rs"]
mod cluster;
#[path = "bench/cpu.rs"]
mod cpu;
#[path = "bench/history.rs"]
mod history;
#[path = "bench/load.rs"]
mod load;
#[path = "bench/profile.rs"]
mod profile;
#[path = "bench/report.rs"]
mod report;
#[path = "bench/scenarios.rs"]
mod scenarios;
#[path = "bench/service.rs"]
mod service;
#[path = "bench/soak.rs"]
mod soak;
#[path = "bench/verify.rs"]
mod verify;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use tally::db::embedded::EmbeddedPostgres;

use report::Row;
use scenarios::{Batching, Shared};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

const USAGE: &str =
    "usage: tally-bench [--seconds N] [--quick] [--tenants N] [--order off,on|on,off] [--soak N] [--profile-db]
  --seconds N   length of each timed scenario, or soak segment (default 10)
  --quick       3-second scenarios: a smoke run
  --tenants N   tenants in the spread scenario (default 10000)
  --order O     which configuration runs first (default off,on); the second one inherits
                the first one's data, so run both orders to see whether that matters
  --soak N      instead: N consecutive segments on one hot tenant, no /metrics scrape, printing
                the rate and the service's RSS per segment (batching on; --order off,on for off)
  --history N   instead: seed one tenant with N transactions of history, then time the
                balance, breakdown, usage and transactions reads (median of 25, over HTTP)
  --profile-db  start PostgreSQL with pg_stat_statements and print, after each scenario, its
                top statements by total time, per commit and per charge";

/// Command-line options.
#[derive(Debug, Clone)]
pub struct Args {
    pub seconds: u64,
    pub tenants: usize,
    pub order: [Batching; 2],
    /// `--soak N`: this many segments instead of the scenarios.
    pub soak: Option<usize>,
    /// `--history N`: time the reads on a tenant with N transactions instead.
    pub history: Option<i64>,
    /// `--profile-db`: `pg_stat_statements` figures after each scenario.
    pub profile_db: bool,
}

impl Args {
    fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut args = Args {
            seconds: 10,
            tenants: 10_000,
            order: [Batching::Off, Batching::On],
            soak: None,
            history: None,
            profile_db: false,
        };
        let mut order_given = false;
        while let Some(a) = it.next() {
            match a.as_str() {
                "--quick" => args.seconds = 3,
                "--profile-db" => args.profile_db = true,
                "--seconds" => args.seconds = number(it.next(), "--seconds")?,
                "--tenants" => args.tenants = number(it.next(), "--tenants")?,
                "--soak" => args.soak = Some(number(it.next(), "--soak")?),
                "--history" => args.history = Some(number(it.next(), "--history")?),
                "--order" => {
                    order_given = true;
                    args.order = match it.next().as_deref() {
                        Some("off,on") => [Batching::Off, Batching::On],
                        Some("on,off") => [Batching::On, Batching::Off],
                        _ => return Err("--order takes off,on or on,off".into()),
                    }
                }
                "-h" | "--help" => return Err(String::new()),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        if args.soak.is_some() && !order_given {
            // The soak measures the production default first: group commit on.
            args.order = [Batching::On, Batching::Off];
        }
        Ok(args)
    }
}

fn number<T: std::str::FromStr>(v: Option<String>, name: &str) -> Result<T, String> {
    v.and_then(|v| v.parse().ok()).ok_or_else(|| format!("{name} needs a positive number"))
}

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(a) if a.seconds > 0 && a.tenants > 0 && a.soak != Some(0) && a.history.is_none_or(|n| n > 0) => a,
        Ok(_) => return usage_error("--seconds, --tenants, --soak and --history must be positive"),
        Err(msg) => return usage_error(&msg),
    };
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            println!("\nFAILED: at least one correctness check failed (see the FAILED lines above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("tally-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage_error(msg: &str) -> ExitCode {
    if !msg.is_empty() {
        eprintln!("tally-bench: {msg}");
    }
    eprintln!("{USAGE}");
    ExitCode::from(2)
}

/// Starts the cluster (outside any async runtime: its start-up blocks), runs everything,
/// and removes the cluster. Returns whether every check passed.
fn run(args: &Args) -> Result<bool, BoxError> {
    let tally = service_binary()?;
    let busy_before = cpu::machine_load(Duration::from_secs(1));
    let dir = std::env::temp_dir().join(format!("tally-bench-{}-{:08x}", std::process::id(), rand::random::<u32>()));
    let pg = cluster::start(&dir, args.profile_db)?;
    let control = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let load = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("bench-load").build()?;
    let result = control.block_on(async {
        tokio::select! {
            r = bench(args, &pg, &dir, &tally, load.handle(), busy_before) => r,
            // Dropping `bench` kills the service; returning drops the cluster and its files.
            signal = interrupted() => Err(format!("interrupted by {signal}: cleaning up").into()),
        }
    });
    drop(control);
    load.shutdown_timeout(Duration::from_secs(5));
    cluster::print_log_summary(&dir);
    drop(pg); // stops PostgreSQL and removes its directory
    result
}

/// Ctrl-C or SIGTERM.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// `tally`, next to this executable.
fn service_binary() -> Result<PathBuf, BoxError> {
    let path = std::env::current_exe()?.with_file_name("tally");
    if !path.is_file() {
        return Err(format!(
            "{} not found: build it with `cargo build --release --bin tally --bin tally-bench`",
            path.display()
        )
        .into());
    }
    Ok(path)
}

async fn bench(
    args: &Args,
    pg: &EmbeddedPostgres,
    dir: &Path,
    tally: &Path,
    load: &tokio::runtime::Handle,
    busy_before: f64,
) -> Result<bool, BoxError> {
    let db = cluster::Database::create(pg, "tally_bench").await?;
    if let Some(segments) = args.soak {
        report::print_machine(&cluster::Machine::detect(&db.pool, busy_before).await?, tally);
        let passed = soak::run(args, segments, tally, &db, dir, load).await;
        db.pool.close().await;
        return passed;
    }
    if let Some(n) = args.history {
        report::print_machine(&cluster::Machine::detect(&db.pool, busy_before).await?, tally);
        let svc = service::Service::start(tally, Batching::On, &db.url, dir).await?;
        let passed = history::run(n, &svc, &db).await;
        svc.stop().await?.print();
        db.pool.close().await;
        return passed;
    }
    report::print_header(&cluster::Machine::detect(&db.pool, busy_before).await?, args, tally);
    if args.profile_db {
        profile::enable(&db.pool).await?;
    }
    let mut shared: Option<Shared> = None;
    let mut rows: Vec<Row> = Vec::new();
    for batching in args.order {
        let svc = service::Service::start(tally, batching, &db.url, dir).await?;
        let result = scenarios::run_all(args, (tally, dir), &svc, &db, load, &mut shared).await;
        let stopped = svc.stop().await;
        rows.extend(result?);
        stopped?.print();
    }
    report::print_summary(&rows);
    db.pool.close().await;
    Ok(rows.iter().all(|r| r.verdict.passed()))
}
