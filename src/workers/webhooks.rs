//! Webhook delivery from the outbox, in every replica.
//!
//! At least once: a delivery is claimed by moving its `next_attempt_at` past the HTTP
//! timeout (rows picked with `FOR UPDATE SKIP LOCKED`, in a statement that commits at
//! once), sent with no lock held, then marked delivered, or rescheduled with exponential
//! back-off (`TALLY_WEBHOOK_BACKOFF_MS` ×4 per failure, at most 10 hours) until
//! `TALLY_WEBHOOK_MAX_ATTEMPTS`, after which it is marked failed. A replica that dies
//! mid-send leaves the claim to expire, and the event is sent again with the same
//! `webhook-id`. Deliveries are not ordered.
//!
//! A slow or dead endpoint delays only its own events:
//! - each send runs on its own task, and the loop claims again as soon as one finishes
//!   (and every `TALLY_WORKER_INTERVAL_MS` for new events): no round waits for its slowest send;
//! - at most `TALLY_WEBHOOK_ENDPOINT_IN_FLIGHT` sends per endpoint (tenant) are in flight in
//!   this replica, and a claim takes at most that many of a tenant's due deliveries minus
//!   those in flight, oldest due first across tenants; at most `TALLY_WEBHOOK_MAX_IN_FLIGHT`
//!   sends in flight in all.
//!
//! Each request is signed per the Standard Webhooks spec: `webhook-id` (the event id),
//! `webhook-timestamp` (Unix seconds) and `webhook-signature` (`v1,<base64 HMAC-SHA256>`),
//! computed afresh for every attempt over the same body.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::{Id, JoinHandle, JoinSet};
use uuid::Uuid;

use crate::error::AppResult;
use crate::meters::{self, Delivery};
use crate::services::notify::events::EventView;
use crate::services::notify::webhooks;
use crate::state::{App, AppState};

/// Claims follow one another at least this far apart: a claim walks every tenant with
/// pending deliveries, and sends finishing one by one must not each pay for a walk.
const MIN_CLAIM_GAP: Duration = Duration::from_millis(20);

pub fn spawn(state: AppState, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut sends = Sends::default();
        let mut last_claim = Instant::now() - MIN_CLAIM_GAP;
        loop {
            let room = state.config.webhook_max_in_flight.saturating_sub(sends.tasks.len());
            let mut full = false;
            if room > 0 {
                if let Some(wait) = MIN_CLAIM_GAP.checked_sub(last_claim.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
                last_claim = Instant::now();
                match claim(&state, &sends.per_tenant, room).await {
                    Ok(claimed) => {
                        full = claimed.len() == room;
                        for c in claimed {
                            sends.start(&state, c);
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "claiming webhook deliveries failed"),
                }
            }
            tokio::select! {
                // A slot is free: claim again at once (that tenant's next due delivery, or another's).
                done = sends.tasks.join_next_with_id(), if !sends.tasks.is_empty() => {
                    sends.finished(done);
                    while let Some(done) = sends.tasks.try_join_next_with_id() {
                        sends.finished(Some(done));
                    }
                }
                _ = tokio::time::sleep(state.config.worker_interval), if !full => {}
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        break;
                    }
                }
            }
        }
        sends.drain(state.config.webhook_timeout.min(Duration::from_secs(5))).await;
    })
}

/// The sends in flight in this replica, and how many per tenant.
#[derive(Default)]
struct Sends {
    tasks: JoinSet<()>,
    tenant_of: HashMap<Id, Uuid>,
    per_tenant: HashMap<Uuid, usize>,
}

impl Sends {
    fn start(&mut self, state: &AppState, c: Claimed) {
        let tenant = c.event.tenant_id;
        let app = state.clone();
        let task = self.tasks.spawn(async move {
            if let Err(e) = deliver(&app, c).await {
                tracing::error!(error = %e, "recording a webhook delivery failed");
            }
        });
        self.tenant_of.insert(task.id(), tenant);
        *self.per_tenant.entry(tenant).or_default() += 1;
    }

    fn finished(&mut self, done: Option<Result<(Id, ()), tokio::task::JoinError>>) {
        let id = match done {
            Some(Ok((id, ()))) => id,
            Some(Err(e)) => {
                tracing::error!(error = %e, "a webhook send task failed");
                e.id()
            }
            None => return,
        };
        if let Some(tenant) = self.tenant_of.remove(&id) {
            if let Some(n) = self.per_tenant.get_mut(&tenant) {
                *n -= 1;
                if *n == 0 {
                    self.per_tenant.remove(&tenant);
                }
            }
        }
    }

    /// On shutdown: lets the sends in flight finish for up to `grace`, then drops the rest.
    /// Their claims expire and another replica (or the next start) sends them again.
    async fn drain(mut self, grace: Duration) {
        let all = async {
            while let Some(done) = self.tasks.join_next_with_id().await {
                self.finished(Some(done));
            }
        };
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!("shutting down with webhook sends in flight: they will be sent again");
        }
    }
}

struct Claimed {
    event: EventView,
    attempts: i32,
    url: String,
    secret: String,
}

/// Claims up to `room` due deliveries: for each tenant with pending deliveries (walked one
/// index probe per tenant), its oldest due ones up to the per-endpoint cap minus its sends
/// already in flight here; then the oldest due first across tenants.
async fn claim(app: &App, in_flight: &HashMap<Uuid, usize>, room: usize) -> AppResult<Vec<Claimed>> {
    let lease = app.config.webhook_timeout * 2;
    let (busy, counts): (Vec<Uuid>, Vec<i32>) = in_flight.iter().map(|(t, n)| (*t, *n as i32)).unzip();
    type Row = (Uuid, Uuid, i32, String, Value, DateTime<Utc>, String, String);
    let rows: Vec<Row> = sqlx::query_as(
        "WITH RECURSIVE owners AS ( \
           (SELECT tenant_id FROM webhook_deliveries WHERE status = 'pending' ORDER BY tenant_id LIMIT 1) \
           UNION ALL \
           SELECT (SELECT d.tenant_id FROM webhook_deliveries d \
                   WHERE d.status = 'pending' AND d.tenant_id > o.tenant_id ORDER BY d.tenant_id LIMIT 1) \
           FROM owners o WHERE o.tenant_id IS NOT NULL), \
         busy AS (SELECT * FROM unnest($1::uuid[], $2::int[]) AS b (tenant_id, in_flight)), \
         due AS ( \
           SELECT x.tenant_id, x.event_id FROM owners o \
           LEFT JOIN busy b ON b.tenant_id = o.tenant_id \
           CROSS JOIN LATERAL ( \
             SELECT d.tenant_id, d.event_id, d.next_attempt_at FROM webhook_deliveries d \
             WHERE d.tenant_id = o.tenant_id AND d.status = 'pending' AND d.next_attempt_at <= now() \
             ORDER BY d.next_attempt_at \
             LIMIT GREATEST($3 - COALESCE(b.in_flight, 0), 0) \
             FOR UPDATE SKIP LOCKED) x \
           WHERE o.tenant_id IS NOT NULL \
             AND EXISTS (SELECT 1 FROM webhook_endpoints w WHERE w.tenant_id = o.tenant_id) \
           ORDER BY x.next_attempt_at LIMIT $4) \
         UPDATE webhook_deliveries d SET attempts = d.attempts + 1, last_attempt_at = now(), \
           next_attempt_at = now() + make_interval(secs => $5) \
         FROM due, events e, webhook_endpoints w \
         WHERE d.tenant_id = due.tenant_id AND d.event_id = due.event_id \
           AND e.tenant_id = d.tenant_id AND e.id = d.event_id AND w.tenant_id = d.tenant_id \
         RETURNING d.tenant_id, d.event_id, d.attempts, e.type, e.data, e.created_at, w.url, w.secret",
    )
    .bind(&busy)
    .bind(&counts)
    .bind(app.config.webhook_endpoint_in_flight as i32)
    .bind(room as i64)
    .bind(lease.as_secs_f64())
    .fetch_all(&app.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(tenant_id, id, attempts, kind, data, created_at, url, secret)| Claimed {
            event: EventView { id, kind, tenant_id, created_at, data },
            attempts,
            url,
            secret,
        })
        .collect())
}

async fn deliver(app: &App, c: Claimed) -> AppResult<()> {
    let (tenant, id) = (c.event.tenant_id, c.event.id);
    let result = send(app, &c).await;
    match result {
        Ok(status) => {
            // The event's time may be the application's (settable) clock: never negative.
            let lag = (Utc::now() - c.event.created_at).to_std().unwrap_or_default();
            meters::webhook_delivery(Delivery::Delivered { lag });
            sqlx::query(
                "UPDATE webhook_deliveries SET status = 'delivered', delivered_at = now(), last_status = $3, last_error = NULL \
                 WHERE tenant_id = $1 AND event_id = $2 AND status = 'pending'",
            )
            .bind(tenant)
            .bind(id)
            .bind(status as i16)
            .execute(&app.pool)
            .await?;
        }
        Err((status, error)) => {
            tracing::warn!(%tenant, event = %id, attempts = c.attempts, error, "webhook delivery failed");
            let last = c.attempts >= app.config.webhook_max_attempts as i32;
            meters::webhook_delivery(if last { Delivery::Failed } else { Delivery::Retrying });
            let wait = backoff(app.config.webhook_backoff, c.attempts);
            sqlx::query(
                "UPDATE webhook_deliveries SET last_status = $3, last_error = $4, \
                   status = CASE WHEN attempts >= $5 THEN 'failed' ELSE 'pending' END, \
                   next_attempt_at = now() + make_interval(secs => $6) \
                 WHERE tenant_id = $1 AND event_id = $2 AND status = 'pending'",
            )
            .bind(tenant)
            .bind(id)
            .bind(status.map(|s| s as i16))
            .bind(error.chars().take(500).collect::<String>())
            .bind(app.config.webhook_max_attempts as i32)
            .bind(wait.as_secs_f64())
            .execute(&app.pool)
            .await?;
        }
    }
    Ok(())
}

/// One signed POST. `Ok(status)` for a 2xx answer; otherwise the status (if any) and why.
async fn send(app: &App, c: &Claimed) -> Result<u16, (Option<u16>, String)> {
    let url = url::Url::parse(&c.url).map_err(|e| (None, format!("bad url: {e}")))?;
    if !webhooks::literal_host_allowed(&url, app.config.allow_private_webhooks) {
        return Err((None, "the webhook URL points at a private address".into()));
    }
    let body = serde_json::to_vec(&c.event).map_err(|e| (None, e.to_string()))?;
    let timestamp = Utc::now().timestamp();
    let msg_id = c.event.id.to_string();
    let signature = webhooks::sign(&c.secret, &msg_id, timestamp, &body).map_err(|e| (None, e))?;
    let resp = app
        .webhook_client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", &msg_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await
        .map_err(|e| (None, e.to_string()))?;
    let status = resp.status().as_u16();
    if resp.status().is_success() {
        Ok(status)
    } else {
        Err((Some(status), format!("HTTP {status}")))
    }
}

/// Wait after the n-th failed attempt: base × 4^(n-1), at most 10 hours.
pub fn backoff(base: Duration, attempts: i32) -> Duration {
    let factor = 4u32.saturating_pow(attempts.clamp(1, 16) as u32 - 1);
    base.saturating_mul(factor).min(Duration::from_secs(36_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_by_four_and_is_capped() {
        let s = Duration::from_secs;
        assert_eq!(backoff(s(5), 1), s(5));
        assert_eq!(backoff(s(5), 2), s(20));
        assert_eq!(backoff(s(5), 4), s(320));
        assert_eq!(backoff(s(5), 40), s(36_000));
    }
}
