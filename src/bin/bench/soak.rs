//! `--soak N`: N consecutive segments of charges on ONE hot tenant (one growing ledger), with
//! nothing scraping `/metrics`, printing per segment the rate, the latency and the service's
//! resident memory (VmRSS). A per-request cost or a per-request allocation that grows with
//! the work done shows as a falling rate or a climbing RSS; a steady state shows neither.
//!
//! The checks of every scenario run once at the end over all segments (ledger check, every
//! acknowledged charge stored exactly once, money conserved). The RSS and rate comparisons
//! are reported, never judged: the machine may be shared.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use serde_json::json;
use tokio::runtime::Handle;
use uuid::Uuid;

use crate::api::Admin;
use crate::cluster::Database;
use crate::cpu;
use crate::load::{self, Outcome, Plan, Request, Until};
use crate::report::{ms, percentile};
use crate::service::Service;
use crate::verify::{Check, Expect, Snapshot};
use crate::{Args, BoxError};

const CLIENTS: usize = 64;
const CHARGE: &str = "0.01";
/// Enough for 100 million charges of 0.01.
const FUNDING: &str = "1000000.00";
/// RSS growth from the first to the last segment below which memory counts as flat.
const FLAT_MB: f64 = 5.0;
/// Largest fall of the rate, last segment against the first, that counts as steady.
const STEADY: f64 = 0.15;
/// Cores used by unrelated processes above which a segment's rate is flagged as disturbed.
const DISTURBED: f64 = 0.25;

/// One segment's figures.
struct Segment {
    requests: usize,
    seconds: f64,
    p50: Duration,
    p99: Duration,
    rss_kb: u64,
    cpu: crate::cpu::Usage,
}

impl Segment {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }
}

/// Runs the soak against a fresh service; returns whether every check passed.
pub async fn run(
    args: &Args,
    segments: usize,
    tally: &std::path::Path,
    db: &Database,
    dir: &std::path::Path,
    load: &Handle,
) -> Result<bool, BoxError> {
    let batching = args.order[0];
    let svc = Service::start(tally, batching, &db.url, dir).await?;
    let result = soak(args, segments, &svc, db, load).await;
    let stopped = svc.stop().await;
    let passed = result?;
    stopped?.print();
    Ok(passed)
}

async fn soak(args: &Args, segments: usize, svc: &Service, db: &Database, load: &Handle) -> Result<bool, BoxError> {
    let admin = Admin::new(&svc.base)?;
    let token = admin.service_token("soak").await?;
    let tenant = admin.funded_tenant("soak-hot", FUNDING).await?;
    let body = Arc::new(vec![json!({ "tenant_id": tenant, "amount": CHARGE }).to_string()]);
    let http = load::http_client(CLIENTS);
    let before = Snapshot::take(&db.pool, &[tenant]).await?;
    let idle_rss = rss_kb(svc.pid())?;
    println!(
        "soak: {segments} segments of {} s, {CLIENTS} clients, charges of {CHARGE} on one tenant, batching {}, \
         no /metrics scrape",
        args.seconds,
        svc.batching.name()
    );
    println!("service RSS before the load: {:.1} MB", mb(idle_rss));
    println!(
        "{:>7} {:>9} {:>11} {:>9} {:>8} {:>8} {:>9} {:>9}",
        "segment", "charges", "cumulative", "req/s", "p50 ms", "p99 ms", "RSS MB", "Δ MB"
    );
    let mut all = Outcome::default();
    let mut rows: Vec<Segment> = Vec::with_capacity(segments);
    let mut cumulative = 0usize;
    for i in 0..segments {
        let plan = Plan {
            bases: vec![svc.base.clone()],
            token: token.clone(),
            clients: CLIENTS,
            request: Request::Charge(body.clone()),
            until: Until::Elapsed(Duration::from_secs(args.seconds)),
            key_prefix: format!("soak-{i}-{}", Uuid::new_v4().simple()),
        };
        let cpu_before = cpu::Sample::take(svc.pid(), db.postmaster_pid);
        let out = load.spawn(load::run(http.clone(), plan)).await?;
        let cpu = cpu_before.until(&cpu::Sample::take(svc.pid(), db.postmaster_pid));
        let seg = Segment {
            requests: out.answered(),
            seconds: out.elapsed.as_secs_f64(),
            p50: percentile(&out.latencies, 0.50),
            p99: percentile(&out.latencies, 0.99),
            rss_kb: rss_kb(svc.pid())?,
            cpu,
        };
        cumulative += seg.requests;
        let delta = rows.first().map(|f| mb(seg.rss_kb) - mb(f.rss_kb)).unwrap_or(0.0);
        println!(
            "{:>7} {:>9} {:>11} {:>9.0} {:>8.2} {:>8.2} {:>9.1} {:>+9.1} {:>5.2} {:>5.2} {:>5.2} {:>5.2}{}",
            i + 1,
            seg.requests,
            cumulative,
            seg.rate(),
            ms(seg.p50),
            ms(seg.p99),
            mb(seg.rss_kb),
            delta,
            seg.cpu.busy,
            seg.cpu.service,
            seg.cpu.postgres,
            seg.cpu.others(),
            if seg.cpu.others() > DISTURBED { "  disturbed" } else { "" }
        );
        rows.push(seg);
        all.merge(out);
    }
    summarize(&rows, cumulative);

    let started = Instant::now();
    let check = Check {
        db: &db.pool,
        admin: &admin,
        tenants: &[tenant],
        amount: CHARGE.parse::<Decimal>()?,
        before,
        expect: Expect::All("201"),
    };
    let verdict = check.run(&all).await?;
    println!(
        "checks over all {} charges ({:.1} s): {}",
        cumulative,
        started.elapsed().as_secs_f64(),
        if verdict.passed() { "verified" } else { "FAILED" }
    );
    for p in &verdict.problems {
        println!("     FAILED: {p}");
    }
    for n in &verdict.notes {
        println!("     note: {n}");
    }
    let statuses: Vec<String> = all.statuses.iter().map(|(k, n)| format!("{k}={n}")).collect();
    println!("statuses: {}", statuses.join(" "));
    Ok(verdict.passed())
}

/// First against last: RSS growth, and the rate's change.
fn summarize(rows: &[Segment], total: usize) {
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else { return };
    let min = rows.iter().map(|r| r.rss_kb).min().unwrap_or(0);
    let max = rows.iter().map(|r| r.rss_kb).max().unwrap_or(0);
    let growth = mb(last.rss_kb) - mb(first.rss_kb);
    let change = last.rate() / first.rate().max(1e-9) - 1.0;
    println!(
        "RSS: {:.1} MB after segment 1, {:.1} MB after segment {} ({:+.1} MB over {} charges; range {:.1}..{:.1} MB): {}",
        mb(first.rss_kb),
        mb(last.rss_kb),
        rows.len(),
        growth,
        total,
        mb(min),
        mb(max),
        if growth.abs() <= FLAT_MB { "flat" } else { "GROWING" }
    );
    println!(
        "rate: {:.0}/s in segment 1, {:.0}/s in segment {} ({:+.1}%): {}",
        first.rate(),
        last.rate(),
        rows.len(),
        change * 100.0,
        if change >= -STEADY { "steady" } else { "FALLING" }
    );
    let disturbed = rows.iter().filter(|r| r.cpu.others() > DISTURBED).count();
    if disturbed > 0 {
        println!(
            "caution: other processes kept more than {DISTURBED} cores busy in {disturbed} of {} segments \
             (\"disturbed\"): their rates say more about the machine than about the service",
            rows.len()
        );
    }
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// The resident set of a process, from /proc.
fn rss_kb(pid: u32) -> Result<u64, BoxError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no VmRSS for pid {pid}").into())
}
