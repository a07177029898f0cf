//! Every metric the service exports: its name, its help text, its histogram buckets, and
//! the one function callers record it through. Nothing else names a metric.
//!
//! Names follow Prometheus conventions (`_total` counters, `_seconds` durations, base
//! units); `docs`/alert rules in `deploy/` rely on them, so a rename is a breaking change.
//! Label values are `&'static str` from small fixed sets (outcomes, error codes, ledger
//! kinds): no label is built from request data, so the series stay few. The common outcome
//! of each hot path (an accepted charge) uses a static key: no allocation to count it.

use std::time::Duration;

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder};

use crate::error::AppResult;
use crate::idempotency::Stored;

pub const HTTP_REQUESTS: &str = "http_requests_total";
pub const HTTP_DURATION: &str = "http_request_duration_seconds";
pub const CHARGES: &str = "tally_charges_total";
pub const HOLDS: &str = "tally_holds_total";
pub const BATCH_SIZE: &str = "tally_charge_batch_size";
pub const POSTINGS: &str = "tally_ledger_postings_total";
pub const TOP_UP_ATTEMPTS: &str = "tally_top_up_attempts_total";
pub const PROVIDER_DURATION: &str = "tally_payment_provider_duration_seconds";
pub const WEBHOOK_DELIVERIES: &str = "tally_webhook_deliveries_total";
pub const WEBHOOK_LAG: &str = "tally_webhook_delivery_lag_seconds";
pub const OUTBOX_BACKLOG: &str = "tally_outbox_backlog";
pub const OUTBOX_OLDEST: &str = "tally_outbox_oldest_pending_age_seconds";
pub const REPLAYS: &str = "tally_idempotent_replays_total";
pub const RATE_LIMITED: &str = "tally_rate_limited_requests_total";
pub const RATE_LIMIT_BUCKETS: &str = "tally_rate_limit_buckets";

/// Latency buckets (seconds) for every duration histogram but the webhook lag.
const LATENCY: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Items per charge batch (at most `TALLY_CHARGE_BATCH_MAX`, 256 by default).
const BATCH: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
/// Event to delivery: seconds when all is well, hours when an endpoint is down.
const LAG: &[f64] = &[0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 10800.0, 36000.0];

/// The exporter with every histogram's buckets.
pub fn buckets(b: PrometheusBuilder) -> Result<PrometheusBuilder, BuildError> {
    b.set_buckets(LATENCY)?
        .set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), BATCH)?
        .set_buckets_for_metric(Matcher::Full(WEBHOOK_LAG.into()), LAG)
}

/// The `# HELP` of every metric (to the recorder installed by then).
pub fn describe() {
    describe_counter!(HTTP_REQUESTS, "HTTP requests answered, by method, route template and status.");
    describe_histogram!(HTTP_DURATION, Unit::Seconds, "HTTP request latency, by method, route template and status.");
    describe_counter!("http_connections_refused_total", "Connections closed at once: TALLY_MAX_CONNECTIONS reached.");
    describe_gauge!("http_connections_open", "Open HTTP connections.");
    describe_gauge!("http_connections_max", "TALLY_MAX_CONNECTIONS: the most open connections.");
    describe_gauge!("db_pool_connections", "Database connections in the pool (busy and idle), at scrape.");
    describe_gauge!("db_pool_idle_connections", "Idle database connections in the pool, at scrape.");
    describe_gauge!("db_pool_max_connections", "TALLY_DB_POOL_SIZE: the pool's size limit.");
    describe_counter!(
        CHARGES,
        "Charge requests by outcome (accepted, replayed, refused, failed) and error code (none when accepted)."
    );
    describe_counter!(HOLDS, "Hold requests by outcome (accepted, replayed, refused, failed) and error code.");
    describe_histogram!(
        BATCH_SIZE,
        "Charges and holds decided together in one group-commit transaction (replays and refusals included)."
    );
    describe_counter!(POSTINGS, "Ledger transactions committed, by kind.");
    describe_counter!(
        TOP_UP_ATTEMPTS,
        "Payment provider calls for top-ups, by source (manual, auto) and outcome \
         (succeeded, declined, unavailable, unknown, timed_out)."
    );
    describe_histogram!(PROVIDER_DURATION, Unit::Seconds, "Payment provider call latency, by outcome.");
    describe_counter!(
        WEBHOOK_DELIVERIES,
        "Webhook delivery attempts by outcome: delivered, retrying (will be sent again), failed (gave up)."
    );
    describe_histogram!(WEBHOOK_LAG, Unit::Seconds, "Time from an event to its successful webhook delivery.");
    describe_gauge!(OUTBOX_BACKLOG, "Webhook deliveries pending in the outbox (all replicas), at scrape.");
    describe_gauge!(OUTBOX_OLDEST, "Age of the oldest pending webhook delivery (0 when none), at scrape.");
    describe_counter!(REPLAYS, "Responses replayed for a repeated Idempotency-Key.");
    describe_counter!(RATE_LIMITED, "Requests refused with 429 rate_limited, by credential class.");
    describe_gauge!(RATE_LIMIT_BUCKETS, "Rate-limit buckets held in this replica's memory, at scrape.");
}

/// What a charge or hold request is: the metric it counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spend {
    Charge,
    Hold,
}

/// Counts a charge's or hold's answer.
pub fn spend(kind: Spend, result: &AppResult<Stored>) {
    let name = match kind {
        Spend::Charge => CHARGES,
        Spend::Hold => HOLDS,
    };
    match result {
        Ok(s) if s.replayed => match kind {
            Spend::Charge => metrics::counter!(CHARGES, "outcome" => "replayed", "code" => "none").increment(1),
            Spend::Hold => metrics::counter!(HOLDS, "outcome" => "replayed", "code" => "none").increment(1),
        },
        Ok(_) => match kind {
            Spend::Charge => metrics::counter!(CHARGES, "outcome" => "accepted", "code" => "none").increment(1),
            Spend::Hold => metrics::counter!(HOLDS, "outcome" => "accepted", "code" => "none").increment(1),
        },
        Err(e) => {
            let outcome = if e.status().is_server_error() { "failed" } else { "refused" };
            metrics::counter!(name, "outcome" => outcome, "code" => e.code()).increment(1);
        }
    }
}

/// One group-commit batch of `size` charges and holds.
pub fn charge_batch(size: usize) {
    metrics::histogram!(BATCH_SIZE).record(size as f64);
}

/// Ledger transactions of one committed movement, by kind: `kinds` in any order.
pub fn postings(kinds: impl IntoIterator<Item = &'static str>) {
    // A batch posts many of one kind: one increment per run of equal kinds.
    let mut run: Option<(&'static str, u64)> = None;
    let flush = |r: Option<(&'static str, u64)>| {
        if let Some((kind, n)) = r {
            metrics::counter!(POSTINGS, "kind" => kind).increment(n);
        }
    };
    for kind in kinds {
        match &mut run {
            Some((k, n)) if *k == kind => *n += 1,
            _ => flush(run.replace((kind, 1))),
        }
    }
    flush(run);
}

/// One payment provider call for a top-up attempt, and how long it took.
pub fn top_up_attempt(source: &'static str, outcome: &'static str, took: Duration) {
    metrics::counter!(TOP_UP_ATTEMPTS, "source" => source, "outcome" => outcome).increment(1);
    metrics::histogram!(PROVIDER_DURATION, "outcome" => outcome).record(took.as_secs_f64());
}

/// A webhook delivery attempt's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Delivered, this long after its event.
    Delivered { lag: Duration },
    /// Failed; it will be sent again.
    Retrying,
    /// Failed for the last time.
    Failed,
}

pub fn webhook_delivery(d: Delivery) {
    match d {
        Delivery::Delivered { lag } => {
            metrics::counter!(WEBHOOK_DELIVERIES, "outcome" => "delivered").increment(1);
            metrics::histogram!(WEBHOOK_LAG).record(lag.as_secs_f64());
        }
        Delivery::Retrying => metrics::counter!(WEBHOOK_DELIVERIES, "outcome" => "retrying").increment(1),
        Delivery::Failed => metrics::counter!(WEBHOOK_DELIVERIES, "outcome" => "failed").increment(1),
    }
}

/// The outbox as a scrape found it.
pub fn outbox(pending: i64, oldest: Duration) {
    metrics::gauge!(OUTBOX_BACKLOG).set(pending as f64);
    metrics::gauge!(OUTBOX_OLDEST).set(oldest.as_secs_f64());
}

pub fn idempotent_replay() {
    metrics::counter!(REPLAYS).increment(1);
}

/// A request refused by its credential's rate limit (`api_key`, `portal`, `service_token`).
pub fn rate_limited(class: &'static str) {
    metrics::counter!(RATE_LIMITED, "credential" => class).increment(1);
}

pub fn rate_limit_buckets(n: usize) {
    metrics::gauge!(RATE_LIMIT_BUCKETS).set(n as f64);
}

/// Pool figures, at scrape.
pub fn pool(size: u32, idle: usize, max: u32) {
    metrics::gauge!("db_pool_connections").set(f64::from(size));
    metrics::gauge!("db_pool_idle_connections").set(idle as f64);
    metrics::gauge!("db_pool_max_connections").set(f64::from(max));
}

/// One HTTP request answered.
pub fn http_request(method: String, route: String, status: u16, took: Duration) {
    let labels = [("method", method), ("route", route), ("status", status.to_string())];
    metrics::counter!(HTTP_REQUESTS, &labels).increment(1);
    metrics::histogram!(HTTP_DURATION, &labels).record(took.as_secs_f64());
}
