//! `credits.expiring`: one event per bonus lot, when its expiry comes within
//! `TALLY_CREDITS_EXPIRING_DAYS`.
//!
//! Exactly once per lot across replicas: the notice row and the event are written in one
//! transaction, and the notice's primary key refuses a second one (`ON CONFLICT DO NOTHING`
//! waits for a concurrent insert of the same lot and then skips it).

use std::time::Duration;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::events::{self, EventType};
use crate::error::AppResult;
use crate::frame::transaction;
use crate::money::Money;

/// Announces up to `limit` lots expiring within `window`. Returns how many.
pub async fn notify_expiring(pool: &PgPool, window: Duration, limit: i64) -> AppResult<usize> {
    transaction(pool, move |tx| Box::pin(notify_in(tx, window, limit))).await
}

async fn notify_in(tx: &mut PgConnection, window: Duration, limit: i64) -> AppResult<usize> {
    let due: Vec<(Uuid, Uuid, Decimal, DateTime<Utc>, String)> = sqlx::query_as(
        "WITH due AS ( \
           SELECT l.tenant_id, l.id, l.remaining, l.expires_at FROM bonus_lots l \
           WHERE l.remaining > 0 AND l.expires_at > now() AND l.expires_at <= now() + make_interval(secs => $1) \
             AND NOT EXISTS (SELECT 1 FROM credit_expiry_notices n WHERE n.tenant_id = l.tenant_id AND n.lot_id = l.id) \
           ORDER BY l.expires_at LIMIT $2), \
         noted AS ( \
           INSERT INTO credit_expiry_notices (tenant_id, lot_id, created_at) SELECT tenant_id, id, now() FROM due \
           ON CONFLICT DO NOTHING RETURNING tenant_id, lot_id) \
         SELECT d.tenant_id, d.id, d.remaining, d.expires_at, b.currency FROM due d \
         JOIN noted n ON n.tenant_id = d.tenant_id AND n.lot_id = d.id \
         JOIN balances b ON b.tenant_id = d.tenant_id",
    )
    .bind(window.as_secs_f64())
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    for (tenant, lot, remaining, expires_at, currency) in &due {
        let data = json!({
            "lot_id": lot,
            "amount": Money::from_db(*remaining),
            "currency": currency,
            "expires_at": expires_at,
        });
        events::emit(tx, *tenant, EventType::CreditsExpiring, data).await?;
    }
    Ok(due.len())
}
