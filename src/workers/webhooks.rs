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
//! Each request is signed per the Standard Webhooks spec: `webhook-id` (the event id),
//! `webhook-timestamp` (Unix seconds) and `webhook-signature` (`v1,<base64 HMAC-SHA256>`),
//! computed afresh for every attempt over the same body.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::error::AppResult;
use crate::services::notify::events::EventView;
use crate::services::notify::webhooks;
use crate::state::{App, AppState};

/// Deliveries claimed per round.
const BATCH: i64 = 32;

pub fn spawn(state: AppState, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let busy = match deliver_due(&state).await {
                Ok(n) => n as i64 == BATCH,
                Err(e) => {
                    tracing::error!(error = %e, "webhook delivery round failed");
                    false
                }
            };
            if busy {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(state.config.worker_interval) => {}
                _ = stop.changed() => return,
            }
        }
    })
}

struct Claimed {
    event: EventView,
    attempts: i32,
    url: String,
    secret: String,
}

/// Sends every due delivery once. Returns how many were claimed.
pub async fn deliver_due(app: &App) -> AppResult<usize> {
    let lease = app.config.webhook_timeout * 2;
    type Row = (Uuid, Uuid, i32, String, Value, DateTime<Utc>, String, String);
    let rows: Vec<Row> = sqlx::query_as(
        "WITH due AS ( \
           SELECT tenant_id, event_id FROM webhook_deliveries \
           WHERE status = 'pending' AND next_attempt_at <= now() \
           ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
         UPDATE webhook_deliveries d SET attempts = d.attempts + 1, last_attempt_at = now(), \
           next_attempt_at = now() + make_interval(secs => $2) \
         FROM due, events e, webhook_endpoints w \
         WHERE d.tenant_id = due.tenant_id AND d.event_id = due.event_id \
           AND e.tenant_id = d.tenant_id AND e.id = d.event_id AND w.tenant_id = d.tenant_id \
         RETURNING d.tenant_id, d.event_id, d.attempts, e.type, e.data, e.created_at, w.url, w.secret",
    )
    .bind(BATCH)
    .bind(lease.as_secs_f64())
    .fetch_all(&app.pool)
    .await?;
    let n = rows.len();
    let sends = rows.into_iter().map(|(tenant_id, id, attempts, kind, data, created_at, url, secret)| {
        let event = EventView { id, kind, tenant_id, created_at, data };
        deliver(app, Claimed { event, attempts, url, secret })
    });
    for r in futures::future::join_all(sends).await {
        if let Err(e) = r {
            tracing::error!(error = %e, "recording a webhook delivery failed");
        }
    }
    Ok(n)
}

async fn deliver(app: &App, c: Claimed) -> AppResult<()> {
    let (tenant, id) = (c.event.tenant_id, c.event.id);
    let result = send(app, &c).await;
    match result {
        Ok(status) => {
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
