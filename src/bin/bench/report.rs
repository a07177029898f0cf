//! Printing: the header, one row per scenario, and the comparison of the configurations.

use std::path::Path;
use std::time::Duration;

use crate::cluster::Machine;
use crate::cpu::Usage;
use crate::load::Outcome;
use crate::scenarios::{Batching, HOT_KEY, HOT_KEY_LIMITED};
use crate::verify::Verdict;
use crate::Args;

/// One measured scenario.
pub struct Row {
    pub batching: Batching,
    pub scenario: String,
    pub clients: usize,
    pub outcome: Outcome,
    /// Cores busy during the load: the whole machine, the service, the bench.
    pub cpu: Usage,
    pub verdict: Verdict,
}

/// Latency figures of one scenario.
struct Figures {
    requests: usize,
    per_second: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl Row {
    fn figures(&self) -> Figures {
        let o = &self.outcome;
        let secs = o.elapsed.as_secs_f64().max(1e-9);
        Figures {
            requests: o.answered(),
            per_second: o.answered() as f64 / secs,
            p50: percentile(&o.latencies, 0.50),
            p99: percentile(&o.latencies, 0.99),
            max: o.latencies.last().copied().unwrap_or_default(),
        }
    }

    fn statuses(&self) -> String {
        let s = &self.outcome.statuses;
        s.iter().map(|(k, n)| format!("{k}={n}")).collect::<Vec<_>>().join(" ")
    }

    /// The table row, then any FAILED, note and sample lines under it.
    pub fn print(&self) {
        let f = self.figures();
        let check = if self.verdict.passed() { "verified" } else { "FAILED" };
        println!(
            "{:<4} {:<13} {:>7} {:>9} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>5.2} {:>5.2} {:>5.2} {:>5.2} {:>5.2}  {:<8}  {}",
            self.batching.name(),
            self.scenario,
            self.clients,
            f.requests,
            f.per_second,
            ms(f.p50),
            ms(f.p99),
            ms(f.max),
            self.cpu.busy,
            self.cpu.service,
            self.cpu.postgres,
            self.cpu.bench,
            self.cpu.others(),
            check,
            self.statuses()
        );
        // Whole seconds only: the last one is partly the tail of in-flight requests.
        let full = &self.outcome.per_second[..self.outcome.per_second.len().saturating_sub(1)];
        if full.len() >= 3 {
            let rates: Vec<String> = full.iter().map(|n| n.to_string()).collect();
            println!("     responses per second: {}", rates.join(" "));
        }
        for p in &self.verdict.problems {
            println!("     FAILED: {p}");
        }
        for n in &self.verdict.notes {
            println!("     note: {n}");
        }
        for s in &self.outcome.samples {
            println!("     sample: {}", truncate(s, 300));
        }
    }

    /// The same row with how long the ledger check took (progress, on stderr).
    pub fn progress(&self) {
        eprintln!(
            "[bench] {} {} @{}: {} requests in {:.1} s; ledger check took {:.2} s",
            self.batching.name(),
            self.scenario,
            self.clients,
            self.outcome.answered(),
            self.outcome.elapsed.as_secs_f64(),
            self.verdict.ledger_check.as_secs_f64()
        );
    }
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((at, _)) => &s[..at],
        None => s,
    }
}

/// The machine and service lines of the header (the soak's whole header).
pub fn print_machine(m: &Machine, tally: &Path) {
    let pool = std::env::var("TALLY_DB_POOL_SIZE").unwrap_or_else(|_| "16 (default)".into());
    println!("machine:     {} CPUs, {}, {} RAM", m.cpus, m.model, m.memory);
    println!(
        "busy:        {:.2} of {} cores busy just before the run (other work on the machine disturbs the figures)",
        m.busy_before, m.cpus
    );
    println!("postgres:    {} (embedded, fsync on, Unix socket)", m.postgres);
    println!("service:     {} (TALLY_DB_POOL_SIZE={pool})", tally.display());
    println!("rate limits: {}", rate_limits());
}

/// The rate-limit settings the service runs with (it inherits this process's environment),
/// as the contract's defaults fill them in. The load is sent with service tokens.
fn rate_limits() -> String {
    let var = |name: &str, default: u32| -> u32 {
        std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
    };
    let service = tally::rate_limit::Rate {
        per_second: var("TALLY_RATE_LIMIT_SERVICE_RPS", 0),
        burst: var("TALLY_RATE_LIMIT_SERVICE_BURST", 0),
    };
    let tenant = tally::rate_limit::Rate {
        per_second: var("TALLY_RATE_LIMIT_TENANT_RPS", 50),
        burst: var("TALLY_RATE_LIMIT_TENANT_BURST", 200),
    };
    format!(
        "service tokens {} (TALLY_RATE_LIMIT_SERVICE_RPS; the load uses service tokens), tenant API keys {}",
        service.describe(),
        tenant.describe()
    )
}

pub fn print_header(m: &Machine, args: &Args, tally: &Path) {
    let pool = std::env::var("TALLY_DB_POOL_SIZE").unwrap_or_else(|_| "16 (default)".into());
    let batch_max = std::env::var("TALLY_CHARGE_BATCH_MAX").unwrap_or_else(|_| "256 (default)".into());
    let lanes = std::env::var("TALLY_CHARGE_LANES").unwrap_or_else(|_| "2 (default)".into());
    println!(
        "tally-bench: {} s per timed scenario, {} tenants in the spread scenario, batching {} first",
        args.seconds,
        args.tenants,
        args.order[0].name()
    );
    println!("machine:     {} CPUs, {}, {} RAM", m.cpus, m.model, m.memory);
    println!(
        "busy:        {:.2} of {} cores busy just before the run (other work on the machine disturbs the figures)",
        m.busy_before, m.cpus
    );
    println!("postgres:    {} (embedded, fsync on, Unix socket)", m.postgres);
    println!(
        "service:     {} (TALLY_DB_POOL_SIZE={pool}, TALLY_CHARGE_BATCH_MAX={batch_max}, TALLY_CHARGE_LANES={lanes})",
        tally.display()
    );
    println!("rate limits: {}", rate_limits());
    println!("load:        client tasks on their own multi-thread runtime, one request at a time each, keep-alive; latency = send to last body byte");
    println!("note:        service, PostgreSQL and load generator share this machine's CPUs;");
    println!(
        "             cpu tally pg bench other = cores busy during the load: whole machine, service, PostgreSQL, this bench, other processes"
    );
    println!();
    print_table_head();
}

pub fn print_table_head() {
    println!(
        "{:<4} {:<13} {:>7} {:>9} {:>9} {:>8} {:>8} {:>8} {:>5} {:>5} {:>5} {:>5} {:>5}  {:<8}  statuses",
        "cfg",
        "scenario",
        "clients",
        "requests",
        "req/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "cpu",
        "tally",
        "pg",
        "bench",
        "other",
        "check"
    );
}

/// The table again, then batching on vs off.
pub fn print_summary(rows: &[Row]) {
    println!("\nsummary");
    print_table_head();
    for r in rows {
        r.print();
    }
    println!();
    compare(rows, "hot tenant", 64);
    compare(rows, "hot tenant", 8);
    if let Some(spread) = rows.iter().find(|r| r.scenario.ends_with(" tenants")) {
        compare(rows, &spread.scenario.clone(), 64);
    }
    compare(rows, "mixed 80/20", 64);
    compare(rows, "two replicas", 64);
    one_client_latency(rows);
    limit_cost(rows);
    if rows.iter().any(|r| r.verdict.notes.iter().any(|n| n.starts_with("DRIFT"))) {
        println!(
            "caution: some scenarios drifted (see DRIFT notes): their rates depend on how much data the run \
             had written, so the on/off ratios depend on the order of the configurations; compare with --order"
        );
    }
    let failed = rows.iter().filter(|r| !r.verdict.passed()).count();
    if failed == 0 {
        println!("all {} scenarios verified: ledger check ok, every acknowledged charge exists exactly once, none unacknowledged, money conserved, no negative balance", rows.len());
    } else {
        println!("FAILED: {failed} of {} scenarios failed verification", rows.len());
    }
}

fn find<'a>(rows: &'a [Row], b: Batching, scenario: &str, clients: usize) -> Option<&'a Row> {
    rows.iter().find(|r| r.batching == b && r.scenario == scenario && r.clients == clients)
}

fn compare(rows: &[Row], scenario: &str, clients: usize) {
    let (Some(off), Some(on)) =
        (find(rows, Batching::Off, scenario, clients), find(rows, Batching::On, scenario, clients))
    else {
        return;
    };
    let (off, on) = (off.figures(), on.figures());
    println!(
        "{scenario} @{clients} clients: batching on / off = {:.2}× ({:.0} vs {:.0} req/s; p50 {:.2} vs {:.2} ms; p99 {:.2} vs {:.2} ms)",
        on.per_second / off.per_second.max(1e-9),
        on.per_second,
        off.per_second,
        ms(on.p50),
        ms(off.p50),
        ms(on.p99),
        ms(off.p99)
    );
}

/// What a spend limit on the key costs the hot path: the same hot tenant's charges naming
/// one key, with and without a limit on it, in adjacent pairs of segments of the same run
/// (target: within 10%): the median of the pairs' ratios, and the ratio of the totals.
fn limit_cost(rows: &[Row]) {
    for b in [Batching::On, Batching::Off] {
        let segs: Vec<&Row> = rows
            .iter()
            .filter(|r| r.batching == b && (r.scenario == HOT_KEY || r.scenario == HOT_KEY_LIMITED))
            .collect();
        let rate = |r: &Row| r.outcome.answered() as f64 / r.outcome.elapsed.as_secs_f64().max(1e-9);
        let mut ratios: Vec<f64> = segs
            .chunks(2)
            .filter_map(|pair| match pair {
                [x, y] if x.scenario != y.scenario => {
                    let (plain, limited) = if x.scenario == HOT_KEY { (x, y) } else { (y, x) };
                    Some(rate(limited) / rate(plain).max(1e-9))
                }
                _ => None,
            })
            .collect();
        if ratios.is_empty() {
            continue;
        }
        ratios.sort_by(f64::total_cmp);
        let total = |name: &str| {
            let of: Vec<&&Row> = segs.iter().filter(|r| r.scenario == name).collect();
            let n: usize = of.iter().map(|r| r.outcome.answered()).sum();
            n as f64 / of.iter().map(|r| r.outcome.elapsed.as_secs_f64()).sum::<f64>().max(1e-9)
        };
        // CPU (service + PostgreSQL) per charge: less sensitive to other work on the machine.
        let cpu = |name: &str| {
            let of: Vec<&&Row> = segs.iter().filter(|r| r.scenario == name).collect();
            let core_secs: f64 =
                of.iter().map(|r| (r.cpu.service + r.cpu.postgres) * r.outcome.elapsed.as_secs_f64()).sum();
            core_secs * 1e6 / of.iter().map(|r| r.outcome.answered()).sum::<usize>().max(1) as f64
        };
        let (plain, limited) = (total(HOT_KEY), total(HOT_KEY_LIMITED));
        let pct = |x: f64| (x - 1.0) * 100.0;
        let each: Vec<String> = ratios.iter().map(|r| format!("{:+.1}%", pct(*r))).collect();
        println!(
            "spend limit on the key, batching {} @64: median of {} pairs {:+.1}% (pairs, sorted: {}); totals {:.0} vs {:.0} req/s = {:+.1}%; \
             CPU per charge {:.1} vs {:.1} µs",
            b.name(),
            ratios.len(),
            pct(ratios[ratios.len() / 2]),
            each.join(" "),
            limited,
            plain,
            pct(limited / plain.max(1e-9)),
            cpu(HOT_KEY_LIMITED),
            cpu(HOT_KEY)
        );
    }
}

fn one_client_latency(rows: &[Row]) {
    let (Some(off), Some(on)) = (find(rows, Batching::Off, "hot tenant", 1), find(rows, Batching::On, "hot tenant", 1))
    else {
        return;
    };
    let (off, on) = (off.figures(), on.figures());
    println!(
        "hot tenant @1 client: p50 on − off = {:+.2} ms ({:.2} vs {:.2} ms); p99 on − off = {:+.2} ms",
        ms(on.p50) - ms(off.p50),
        ms(on.p50),
        ms(off.p50),
        ms(on.p99) - ms(off.p99)
    );
}
