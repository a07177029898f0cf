//! `--history N`: the reads a dashboard makes, timed over HTTP against the release binary,
//! on one tenant with N transactions of history.
//!
//! The history is seeded with set-based SQL through the service's own tables (so the
//! rollup triggers of migration 0011 build the rollups as postings would): balanced ledger
//! transactions (a top-up every 1,000, usage charges with 8 models, none for some, and 12
//! API keys, none for some; partial refunds, holds released by the next transaction, a
//! debit adjustment every 1,000), spread evenly over the last 400 days up to now, with
//! time-ordered (UUIDv7-shaped) ids, each with its `total_after`. Then the service's
//! ledger check (which compares the rollups with a recomputation from the ledger) must pass,
//! and each read is requested `SAMPLES` times one at a time; the table shows the median,
//! p90 and max, and beside the rollup reads the median of the full-history scans they
//! replaced, run as SQL on the same data.

use std::time::{Duration, Instant};

use chrono::Utc;
use rust_decimal::Decimal;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::api::Admin;
use crate::cluster::Database;
use crate::service::{Service, ADMIN_TOKEN};
use crate::BoxError;

const SAMPLES: usize = 25;
const CHUNK: i64 = 100_000;
const DAYS: i64 = 400;

/// Seeds, checks and times. Returns whether the checks passed.
pub async fn run(n: i64, svc: &Service, db: &Database) -> Result<bool, BoxError> {
    let admin = Admin::new(&svc.base)?;
    let tenant = admin.create_tenant("history").await?;
    let mut keys = Vec::new();
    for _ in 0..12 {
        keys.push(admin.api_key(tenant, None).await?);
    }
    let started = Instant::now();
    seed(db, tenant, &keys, n).await?;
    println!(
        "seeded {n} transactions on one tenant in {:.1} s (set-based SQL, rollups by the triggers)",
        secs(started)
    );
    let started = Instant::now();
    let check = admin.ledger_check().await?;
    println!(
        "ledger check (rollups included) over {} transactions in {:.1} s: {}",
        check.transactions,
        secs(started),
        if check.ok { "verified".to_string() } else { format!("FAILED {:?}", check.violations) }
    );
    let http = reqwest::Client::builder().timeout(Duration::from_secs(120)).build()?;
    let base = format!("{}/v1/tenants/{tenant}", svc.base);
    // A window that cuts days at both ends: the last 30 days, from 13:37 UTC.
    let now = Utc::now();
    let from = (now - chrono::Duration::days(30)).date_naive().and_hms_opt(13, 37, 0).unwrap_or_default().and_utc();
    let window = format!("from={}&to={}", fmt(from), fmt(now - chrono::Duration::hours(5)));
    let reads: Vec<(String, String, Option<&str>)> = vec![
        ("balance (with runway)".into(), format!("{base}/balance"), None),
        ("balance/breakdown".into(), format!("{base}/balance/breakdown"), Some(SCAN_BREAKDOWN)),
        ("balance/breakdown, 30 days cut".into(), format!("{base}/balance/breakdown?{window}"), None),
        ("usage?group_by=day".into(), format!("{base}/usage?group_by=day"), Some(SCAN_USAGE_DAY)),
        ("usage?group_by=model".into(), format!("{base}/usage?group_by=model"), Some(SCAN_USAGE_MODEL)),
        ("usage?group_by=api_key".into(), format!("{base}/usage?group_by=api_key"), Some(SCAN_USAGE_KEY)),
        ("usage?group_by=model, 30 days cut".into(), format!("{base}/usage?group_by=model&{window}"), None),
        ("transactions (a page of 50)".into(), format!("{base}/transactions?limit=50"), None),
    ];
    println!(
        "\n{:<36} {:>9} {:>9} {:>9}   {:>22}",
        "read (HTTP, one at a time)", "median", "p90", "max", "full scan before (SQL)"
    );
    let mut all_fast = true;
    for (name, url, scan) in &reads {
        let mut times = Vec::with_capacity(SAMPLES);
        for i in 0..SAMPLES + 3 {
            let t0 = Instant::now();
            let resp = http.get(url).bearer_auth(ADMIN_TOKEN).send().await?;
            let status = resp.status();
            let body = resp.bytes().await?;
            if !status.is_success() {
                return Err(format!("{name}: {status}: {}", String::from_utf8_lossy(&body)).into());
            }
            if i >= 3 {
                times.push(t0.elapsed());
            }
        }
        times.sort();
        let median = times[times.len() / 2];
        all_fast &= median < Duration::from_millis(50);
        let scan = match scan {
            Some(sql) => format!("{:.1} ms", ms(scan_median(db, sql, tenant).await?)),
            None => String::new(),
        };
        println!(
            "{:<36} {:>6.1} ms {:>6.1} ms {:>6.1} ms   {:>22}",
            name,
            ms(median),
            ms(times[times.len() * 9 / 10]),
            ms(times[times.len() - 1]),
            scan
        );
    }
    println!("\nevery read's median under 50 ms: {}", if all_fast { "yes" } else { "NO" });
    Ok(check.ok)
}

fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn fmt(t: chrono::DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Median of three runs of a scan the reads did before the rollups.
async fn scan_median(db: &Database, sql: &str, tenant: Uuid) -> Result<Duration, BoxError> {
    let mut times = Vec::new();
    for _ in 0..3 {
        let t0 = Instant::now();
        sqlx::query(sql).bind(tenant).fetch_all(&db.pool).await?;
        times.push(t0.elapsed());
    }
    times.sort();
    Ok(times[1])
}

const SCAN_BREAKDOWN: &str = "WITH flows AS ( \
    SELECT t.kind, sum(e.amount) AS net FROM ledger_transactions t \
    JOIN ledger_entries e ON e.tenant_id = t.tenant_id AND e.transaction_id = t.id \
    WHERE t.tenant_id = $1 AND e.account IN ('paid', 'bonus', 'held') GROUP BY t.id, t.kind) \
  SELECT kind, COALESCE(sum(net) FILTER (WHERE net > 0), 0), COALESCE(-sum(net) FILTER (WHERE net < 0), 0) \
  FROM flows GROUP BY kind";

macro_rules! scan_usage {
    ($key:literal) => {
        concat!(
            "WITH items AS ( \
               SELECT c.created_at AS at, c.model, c.api_key_id, c.amount, 1 AS n FROM charges c WHERE c.tenant_id = $1 \
               UNION ALL \
               SELECT r.created_at, c.model, c.api_key_id, -r.amount, 0 FROM refunds r \
               JOIN charges c ON c.tenant_id = r.tenant_id AND c.id = r.charge_id WHERE r.tenant_id = $1) \
             SELECT key, sum(amount), sum(n)::int8 FROM (SELECT ",
            $key,
            " AS key, amount, n FROM items) x GROUP BY key ORDER BY key"
        )
    };
}
const SCAN_USAGE_DAY: &str = scan_usage!("to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD')");
const SCAN_USAGE_MODEL: &str = scan_usage!("COALESCE(model, 'amount')");
const SCAN_USAGE_KEY: &str = scan_usage!("COALESCE(api_key_id::text, 'none')");

/// One chunk's rows, computed once: i, time, kind, amount, the tenant's total after it.
/// Ids are UUIDv7-shaped (the time's milliseconds first), so pages come in time order.
const SEED_CHUNK: &str = "CREATE TEMP TABLE seed ON COMMIT DROP AS \
  WITH g AS ( \
    SELECT i, $1::timestamptz + (i * $2::bigint) * interval '1 microsecond' AS at, \
           CASE WHEN i % 1000 = 0 THEN 'top_up' WHEN i % 1000 = 500 THEN 'adjustment' \
                WHEN i % 100 = 3 THEN 'hold' WHEN i % 100 = 4 THEN 'hold_release' \
                WHEN i % 50 = 7 THEN 'refund' ELSE 'usage' END AS kind, \
           round(((i * 7919) % 1999 + 1)::numeric / 1000, 6) AS a, \
           round((((i - 1) * 7919) % 1999 + 1)::numeric / 1000, 6) AS prev_a \
    FROM generate_series($3::bigint, $4::bigint - 1) AS i), \
  d AS ( \
    SELECT g.*, CASE kind WHEN 'top_up' THEN 2000 WHEN 'adjustment' THEN -1 WHEN 'usage' THEN -a \
                  WHEN 'refund' THEN round(prev_a / 2, 6) ELSE 0 END AS delta, \
           CASE kind WHEN 'hold' THEN a WHEN 'hold_release' THEN prev_a END AS held_amount \
    FROM g) \
  SELECT d.*, $5::numeric + sum(delta) OVER (ORDER BY i) AS total_after, \
         pg_temp.seed_id(at, i, 't') AS txn_id, pg_temp.seed_id(at, i, 'c') AS charge_id, \
         pg_temp.seed_id($1::timestamptz + ((i - 1) * $2::bigint) * interval '1 microsecond', i - 1, 'c') AS prev_charge, \
         pg_temp.seed_id(at, i, 'r') AS refund_id, \
         (ARRAY['gpt-4o', 'gpt-4o-mini', 'claude-sonnet', 'claude-haiku', 'llama-70b', 'flux-pro', 'sdxl', 'veo', NULL]) \
           [1 + (i * 13) % 9] AS model, \
         ($6::uuid[])[1 + (i * 17) % 13] AS api_key_id \
  FROM d";

const SEED_ID: &str = "CREATE FUNCTION pg_temp.seed_id(ts timestamptz, i bigint, salt text) RETURNS uuid \
  LANGUAGE sql IMMUTABLE AS $$ \
    SELECT (lpad(to_hex((extract(epoch FROM ts) * 1000)::bigint), 12, '0') || '7' \
            || substr(md5(salt || i::text), 1, 3) || '8' || substr(md5(salt || i::text), 4, 15))::uuid $$";

/// The statements that write one chunk, in foreign-key order: $1 is the tenant.
const SEED_INSERTS: [&str; 4] = [
    "INSERT INTO ledger_transactions (tenant_id, id, kind, reference, actor, api_key_id, total_after, created_at) \
     SELECT $1, txn_id, kind, CASE kind WHEN 'usage' THEN jsonb_build_object('charge_id', charge_id, 'model', model) \
                                        WHEN 'refund' THEN jsonb_build_object('charge_id', prev_charge) ELSE '{}' END, \
            'bench', CASE kind WHEN 'usage' THEN api_key_id END, total_after, at FROM seed ORDER BY i",
    "INSERT INTO ledger_entries (tenant_id, transaction_id, line, account, amount) \
     SELECT $1, s.txn_id, e.line, e.account, e.amount FROM seed s CROSS JOIN LATERAL (VALUES \
       (0::int2, CASE s.kind WHEN 'hold_release' THEN 'held' ELSE 'paid' END, \
        CASE WHEN s.kind IN ('hold', 'hold_release') THEN -s.held_amount ELSE s.delta END), \
       (1::int2, CASE s.kind WHEN 'top_up' THEN 'clearing' WHEN 'adjustment' THEN 'adjustments' \
                  WHEN 'hold' THEN 'held' WHEN 'hold_release' THEN 'paid' ELSE 'revenue' END, \
        CASE WHEN s.kind IN ('hold', 'hold_release') THEN s.held_amount ELSE -s.delta END)) AS e(line, account, amount) \
     ORDER BY s.i, e.line",
    "INSERT INTO charges (tenant_id, id, transaction_id, amount, funded_bonus, funded_paid, lots, model, price_version, \
                          api_key_id, total_after, available_after, created_at) \
     SELECT $1, charge_id, txn_id, a, 0, a, '[]', model, CASE WHEN model IS NOT NULL THEN 1 END, api_key_id, \
            total_after, total_after, at FROM seed WHERE kind = 'usage' ORDER BY i",
    "INSERT INTO refunds (tenant_id, id, charge_id, transaction_id, amount, to_bonus, to_paid, lots, reason, created_at) \
     SELECT $1, refund_id, prev_charge, txn_id, delta, 0, delta, '[]', 'bench', at FROM seed WHERE kind = 'refund' \
     ORDER BY i",
];

/// Writes `n` transactions for `tenant` in chunks, one database transaction each, then
/// sets its cached balance to the sum of its entries.
async fn seed(db: &Database, tenant: Uuid, keys: &[Uuid], n: i64) -> Result<(), BoxError> {
    let mut conn = PgConnection::connect(&db.url).await?;
    sqlx::query(SEED_ID).execute(&mut conn).await?;
    let mut key_slots: Vec<Option<Uuid>> = keys.iter().map(|k| Some(*k)).collect();
    key_slots.push(None);
    let span = chrono::Duration::days(DAYS);
    let start = Utc::now() - span;
    let step_us = (span.num_microseconds().ok_or("span")? / n.max(1)).max(1);
    let mut total = Decimal::ZERO;
    let mut lo = 0;
    while lo < n {
        let hi = (lo + CHUNK).min(n);
        let mut tx = conn.begin().await?;
        sqlx::query(SEED_CHUNK)
            .bind(start)
            .bind(step_us)
            .bind(lo)
            .bind(hi)
            .bind(total)
            .bind(&key_slots)
            .execute(&mut *tx)
            .await?;
        for sql in SEED_INSERTS {
            sqlx::query(sql).bind(tenant).execute(&mut *tx).await?;
        }
        total = sqlx::query_scalar("SELECT total_after FROM seed ORDER BY i DESC LIMIT 1").fetch_one(&mut *tx).await?;
        tx.commit().await?;
        lo = hi;
        if lo % 200_000 == 0 || lo == n {
            println!("  {lo} transactions written");
        }
    }
    // Nothing reads the tenant while it is seeded: its cached balance is set once, from its entries.
    sqlx::query(
        "UPDATE balances b SET paid = s.paid, held = s.held, bonus = 0 FROM ( \
           SELECT COALESCE(sum(amount) FILTER (WHERE account = 'paid'), 0) AS paid, \
                  COALESCE(sum(amount) FILTER (WHERE account = 'held'), 0) AS held \
           FROM ledger_entries WHERE tenant_id = $1) s WHERE b.tenant_id = $1",
    )
    .bind(tenant)
    .execute(&mut conn)
    .await?;
    sqlx::query("ANALYZE").execute(&mut conn).await?;
    conn.close().await?;
    Ok(())
}
