//! The scenarios, run against one service configuration.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use serde_json::json;
use sqlx::PgPool;
use tokio::runtime::Handle;
use uuid::Uuid;

use crate::api::Admin;
use crate::cluster::Database;
use crate::cpu;
use crate::load::{self, Plan, Request, Until};
use crate::profile;
use crate::report::Row;
use crate::service::Service;
use crate::verify::{Check, Expect, Snapshot};
use crate::{Args, BoxError};

/// Every charge of the benchmark.
const CHARGE: &str = "0.01";
/// A hot tenant's funding: enough never to run out.
const HOT_FUNDING: &str = "1000000.00";
/// Each tenant of the spread scenario.
const SPREAD_FUNDING: &str = "1000.00";
/// The exhaustion scenario: this many charges against this much.
const EXHAUSTION_FUNDING: &str = "5.00";
const EXHAUSTION_REQUESTS: usize = 800;
/// The hot-key scenarios' limit: far above what a run spends, so it never refuses, but
/// every charge is decided against it and counted.
const HOT_KEY_LIMIT: &str = "1000000.00";
/// The limit-exhaustion scenario: EXHAUSTION_REQUESTS charges against a key limited to this.
const KEY_LIMIT: &str = "5.00";
/// Cores used by unrelated processes above which a scenario's figures are flagged.
const DISTURBED: f64 = 0.25;
/// A scenario whose last full second is below this share of its best early second is flagged.
const DRIFT: f64 = 0.6;
/// The mixed scenario: this many busy tenants take this share of the charges (the rest is
/// spread over the shared tenants).
const BUSY_TENANTS: usize = 10;
const BUSY_SHARE: f64 = 0.8;
/// Tenants are created this many at a time.
const SETUP_CONCURRENCY: usize = 32;

/// The hot-key scenarios' names (the report compares them).
pub const HOT_KEY: &str = "hot key";
pub const HOT_KEY_LIMITED: &str = "hot key+limit";

/// `TALLY_CHARGE_BATCHING`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batching {
    Off,
    On,
}

impl Batching {
    pub fn name(self) -> &'static str {
        match self {
            Batching::Off => "off",
            Batching::On => "on",
        }
    }
}

/// Created once, under the first configuration, and reused by the second.
pub struct Shared {
    token: String,
    tenants: Vec<Uuid>,
    bodies: Arc<Vec<String>>,
    /// The mixed scenario's tenants (busy ones first, then the shared ones) and its bodies,
    /// weighted: a uniform pick lands on a busy tenant `BUSY_SHARE` of the time.
    mixed_tenants: Vec<Uuid>,
    mixed_bodies: Arc<Vec<String>>,
}

async fn setup(admin: &Admin, tenants: usize) -> Result<Shared, BoxError> {
    let started = Instant::now();
    let token = admin.service_token("bench").await?;
    let tenants = admin.funded_tenants(tenants, SPREAD_FUNDING, SETUP_CONCURRENCY).await?;
    let bodies: Vec<String> = tenants.iter().map(|t| charge_body(*t)).collect();
    let busy = admin.funded_tenants(BUSY_TENANTS, HOT_FUNDING, SETUP_CONCURRENCY).await?;
    // Each busy body appears `copies` times among the spread ones: busy / all = BUSY_SHARE.
    let copies = ((BUSY_SHARE / (1.0 - BUSY_SHARE)) * tenants.len() as f64 / busy.len() as f64).round() as usize;
    let mut mixed_bodies: Vec<String> =
        busy.iter().flat_map(|t| std::iter::repeat_n(charge_body(*t), copies)).collect();
    mixed_bodies.extend(bodies.iter().cloned());
    let mixed_tenants = busy.iter().chain(&tenants).copied().collect();
    let (bodies, mixed_bodies) = (Arc::new(bodies), Arc::new(mixed_bodies));
    eprintln!(
        "[bench] setup: a service token and {} tenants funded with {SPREAD_FUNDING} each in {:.1} s",
        tenants.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(Shared { token, tenants, bodies, mixed_tenants, mixed_bodies })
}

fn charge_body(tenant: Uuid) -> String {
    json!({ "tenant_id": tenant, "amount": CHARGE }).to_string()
}

fn key_charge_body(tenant: Uuid, key: Uuid) -> String {
    json!({ "tenant_id": tenant, "amount": CHARGE, "api_key_id": key }).to_string()
}

fn decimal(s: &str) -> Decimal {
    s.parse().expect("a decimal constant")
}

/// Runs every scenario against `svc`, creating the shared tenants on first use.
pub async fn run_all(
    args: &Args,
    (tally, dir): (&Path, &Path),
    svc: &Service,
    db: &Database,
    load: &Handle,
    shared: &mut Option<Shared>,
) -> Result<Vec<Row>, BoxError> {
    let admin = Admin::new(&svc.base)?;
    if shared.is_none() {
        *shared = Some(setup(&admin, args.tenants).await?);
    }
    let shared = shared.as_ref().expect("set above");
    settle(&db.pool).await?;
    let run = Runner {
        svc,
        db: &db.pool,
        postmaster_pid: db.postmaster_pid,
        load,
        admin: &admin,
        shared,
        http: load::http_client(64),
        profile: args.profile_db,
    };
    let timed = Duration::from_secs(args.seconds);
    let mut rows = vec![run.hot_tenant("warm-up", 64, Duration::from_secs(1)).await?];
    for clients in [1, 8, 64] {
        rows.push(run.hot_tenant("hot tenant", clients, timed).await?);
    }
    // Without and with a limit, in adjacent pairs of short segments (ABBA ABBA ABBA): a
    // machine whose load drifts affects both alike, and each pair is compared on its own.
    for limited in [false, true, true, false].repeat(3) {
        rows.push(run.hot_key(limited, 64, timed / 3).await?);
    }
    rows.push(run.spread(64, timed).await?);
    rows.push(run.estimates(64, timed).await?);
    rows.push(run.exhaustion(64).await?);
    rows.push(run.limit_exhaustion(64).await?);
    rows.push(run.mixed(64, timed, None).await?);
    let other = Service::start_replica(tally, svc.batching, &db.url, dir, "-replica").await?;
    let two = run.mixed(64, timed, Some(&other)).await;
    let stopped = other.stop().await;
    rows.push(two?);
    stopped?.print();
    Ok(rows)
}

/// Starts each configuration from the same state: no vacuum or analyze left for autovacuum
/// to do in the middle of a scenario (after the setup's inserts, or the other
/// configuration's charges), no dirty buffers left for the checkpointer.
async fn settle(db: &PgPool) -> Result<(), BoxError> {
    let started = Instant::now();
    sqlx::raw_sql("VACUUM ANALYZE").execute(db).await?;
    sqlx::raw_sql("CHECKPOINT").execute(db).await?;
    eprintln!("[bench] VACUUM ANALYZE and CHECKPOINT in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

struct Runner<'a> {
    svc: &'a Service,
    db: &'a PgPool,
    postmaster_pid: u32,
    load: &'a Handle,
    admin: &'a Admin,
    shared: &'a Shared,
    /// The load client, reused across scenarios (its connections stay open).
    http: reqwest::Client,
    /// `--profile-db`: print `pg_stat_statements` after each scenario.
    profile: bool,
}

/// One scenario: what to send, for how long, and what to check on which tenants.
struct Scenario<'t> {
    name: String,
    clients: usize,
    request: Request,
    until: Until,
    tenants: &'t [Uuid],
    expect: Expect,
    /// A second replica taking half the clients.
    replica: Option<&'t Service>,
}

impl Runner<'_> {
    /// (a) charges on one tenant funded never to run out.
    async fn hot_tenant(&self, name: &str, clients: usize, d: Duration) -> Result<Row, BoxError> {
        let tenant = self.admin.funded_tenant("bench-hot", HOT_FUNDING).await?;
        self.measure(Scenario {
            name: name.into(),
            clients,
            request: Request::Charge(Arc::new(vec![charge_body(tenant)])),
            until: Until::Elapsed(d),
            tenants: &[tenant],
            expect: Expect::All("201"),
            replica: None,
        })
        .await
    }

    /// (a') the hot tenant's charges naming one API key, with or without a spend limit on
    /// it (a limit never reached: each charge is checked and counted, none refused).
    async fn hot_key(&self, limited: bool, clients: usize, d: Duration) -> Result<Row, BoxError> {
        let tenant = self.admin.funded_tenant("bench-hot-key", HOT_FUNDING).await?;
        let key = self.admin.api_key(tenant, limited.then_some((HOT_KEY_LIMIT, "day"))).await?;
        self.measure(Scenario {
            name: if limited { HOT_KEY_LIMITED } else { HOT_KEY }.into(),
            clients,
            request: Request::Charge(Arc::new(vec![key_charge_body(tenant, key)])),
            until: Until::Elapsed(d),
            tenants: &[tenant],
            expect: Expect::All("201"),
            replica: None,
        })
        .await
    }

    /// (b) each charge on a random tenant out of the shared ones.
    async fn spread(&self, clients: usize, d: Duration) -> Result<Row, BoxError> {
        self.measure(Scenario {
            name: format!("{} tenants", self.shared.tenants.len()),
            clients,
            request: Request::Charge(self.shared.bodies.clone()),
            until: Until::Elapsed(d),
            tenants: &self.shared.tenants,
            expect: Expect::All("201"),
            replica: None,
        })
        .await
    }

    /// (b') 80% of the charges on a few busy tenants, 20% spread over the shared ones; with
    /// `replica`, half the clients send to that second process on the same database, so
    /// both batch the same tenants at once (lock order: they wait, never deadlock).
    async fn mixed(&self, clients: usize, d: Duration, replica: Option<&Service>) -> Result<Row, BoxError> {
        self.measure(Scenario {
            name: if replica.is_some() { "two replicas" } else { "mixed 80/20" }.into(),
            clients,
            request: Request::Charge(self.shared.mixed_bodies.clone()),
            until: Until::Elapsed(d),
            tenants: &self.shared.mixed_tenants,
            expect: Expect::All("201"),
            replica,
        })
        .await
    }

    /// (c) estimates: pricing only, no database write.
    async fn estimates(&self, clients: usize, d: Duration) -> Result<Row, BoxError> {
        let body = json!({
            "model": "gpt-4o-mini",
            "usage": { "input_tokens": 1200, "output_tokens": 350 },
        });
        self.measure(Scenario {
            name: "estimates".into(),
            clients,
            request: Request::Estimate(Arc::new(body.to_string())),
            until: Until::Elapsed(d),
            tenants: &[],
            expect: Expect::All("200"),
            replica: None,
        })
        .await
    }

    /// (d) more charges than the balance allows, all at once.
    async fn exhaustion(&self, clients: usize) -> Result<Row, BoxError> {
        let tenant = self.admin.funded_tenant("bench-exhaustion", EXHAUSTION_FUNDING).await?;
        self.measure(Scenario {
            name: "exhaustion".into(),
            clients,
            request: Request::Charge(Arc::new(vec![charge_body(tenant)])),
            until: Until::Total(EXHAUSTION_REQUESTS),
            tenants: &[tenant],
            expect: Expect::Exhaustion {
                funded: decimal(EXHAUSTION_FUNDING),
                amount: decimal(CHARGE),
                requests: EXHAUSTION_REQUESTS as u64,
            },
            replica: None,
        })
        .await
    }

    /// (d') more charges than a key's spend limit allows, all at once, on a tenant whose
    /// balance covers them all.
    async fn limit_exhaustion(&self, clients: usize) -> Result<Row, BoxError> {
        let tenant = self.admin.funded_tenant("bench-limit", HOT_FUNDING).await?;
        let key = self.admin.api_key(tenant, Some((KEY_LIMIT, "lifetime"))).await?;
        self.measure(Scenario {
            name: "limit exhaust".into(),
            clients,
            request: Request::Charge(Arc::new(vec![key_charge_body(tenant, key)])),
            until: Until::Total(EXHAUSTION_REQUESTS),
            tenants: &[tenant],
            expect: Expect::LimitExhaustion {
                tenant,
                key,
                limit: decimal(KEY_LIMIT),
                amount: decimal(CHARGE),
                requests: EXHAUSTION_REQUESTS as u64,
            },
            replica: None,
        })
        .await
    }

    /// Snapshot, load (on the load runtime), checks; prints the row.
    async fn measure(&self, s: Scenario<'_>) -> Result<Row, BoxError> {
        let before = Snapshot::take(self.db, s.tenants).await?;
        let mut bases = vec![self.svc.base.clone()];
        bases.extend(s.replica.map(|r| r.base.clone()));
        let plan = Plan {
            bases,
            token: self.shared.token.clone(),
            clients: s.clients,
            request: s.request,
            until: s.until,
            key_prefix: format!("bench-{}-{}", self.svc.batching.name(), Uuid::new_v4().simple()),
        };
        if self.profile {
            profile::reset(self.db).await?;
        }
        let wal_before = profile::wal_position(self.db).await?;
        let cpu_before = cpu::Sample::take(self.svc.pid(), self.postmaster_pid);
        let outcome = self.load.spawn(load::run(self.http.clone(), plan)).await?;
        let cpu = cpu_before.until(&cpu::Sample::take(self.svc.pid(), self.postmaster_pid));
        let wal = profile::wal_position(self.db).await? - wal_before;
        if self.profile {
            profile::print_top(self.db, outcome.acked.len(), 10).await?;
        }
        let check = Check {
            db: self.db,
            admin: self.admin,
            tenants: s.tenants,
            amount: decimal(CHARGE),
            before,
            expect: s.expect,
        };
        let mut verdict = check.run(&outcome).await?;
        if !outcome.acked.is_empty() {
            let per = wal as f64 / outcome.acked.len() as f64;
            verdict.notes.push(format!("WAL: {per:.0} bytes per acknowledged charge ({:.1} MB)", wal as f64 / 1e6));
        }
        if s.replica.is_some() {
            verdict.notes.push("the second replica's CPU is counted under `other`".into());
        }
        if let Some(drift) = drift(&outcome.per_second) {
            verdict.notes.push(drift);
        }
        if cpu.others() > DISTURBED {
            verdict.notes.push(format!(
                "other processes kept {:.2} cores busy during this scenario: its figures are disturbed",
                cpu.others()
            ));
        }
        let row = Row { batching: self.svc.batching, scenario: s.name, clients: s.clients, outcome, cpu, verdict };
        row.progress();
        row.print();
        Ok(row)
    }
}

/// A note when the response rate fell markedly during the scenario: per-request cost that
/// grows with the data written so far, not a steady state.
fn drift(per_second: &[u64]) -> Option<String> {
    // Whole seconds only: the last bucket is partly the tail of in-flight requests.
    let full = &per_second[..per_second.len().saturating_sub(1)];
    if full.len() < 3 {
        return None;
    }
    let early = full[0].max(full[1]);
    let last = full[full.len() - 1];
    ((last as f64) < DRIFT * early as f64)
        .then(|| format!("DRIFT: the rate fell from {early}/s (early) to {last}/s (last second): not a steady state"))
}
