//! Events: the transactional outbox tenants poll (`GET …/events`) and webhooks deliver.
//!
//! Invariant: an event is written in the database transaction of the change it reports
//! (the caller's connection), together with a pending delivery for the tenant's webhook
//! when it is subscribed to that type: one statement, so an event never exists without
//! its delivery or the other way round, and a rolled-back change reports nothing.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::ids::new_id;
use crate::services::{Page, PageParams};
use crate::vocab::text_enum;

text_enum! {
    /// `events.type`.
    pub enum EventType {
        BalanceLow = "balance.low", BalanceDepleted = "balance.depleted", TopUpSucceeded = "top_up.succeeded",
        TopUpFailed = "top_up.failed", AutoTopUpDisabled = "auto_top_up.disabled",
        CreditsExpiring = "credits.expiring", CreditsExpired = "credits.expired", HoldExpired = "hold.expired",
        SpendLimitWarning = "spend_limit.warning", SpendLimitReached = "spend_limit.reached",
        TopUpRefunded = "top_up.refunded", PaymentReversed = "payment.reversed",
    }
}

/// The tail of every event-writing statement: given a CTE `ev (tenant_id, id, type,
/// created_at)` of inserted events, queue a delivery for each one the tenant's webhook
/// subscribes to (`events` NULL: all types).
pub const QUEUE_DELIVERIES: &str = "INSERT INTO webhook_deliveries (tenant_id, event_id, next_attempt_at, created_at) \
     SELECT ev.tenant_id, ev.id, ev.created_at, ev.created_at FROM ev \
     JOIN webhook_endpoints w ON w.tenant_id = ev.tenant_id \
     WHERE w.events IS NULL OR ev.type = ANY (w.events)";

/// Writes an event (and its webhook delivery, if any) in the caller's transaction.
pub async fn emit(conn: &mut PgConnection, tenant: Uuid, kind: EventType, data: Value) -> AppResult<Uuid> {
    let id = new_id();
    sqlx::query(&format!(
        "WITH ev AS (INSERT INTO events (tenant_id, id, type, data, created_at) VALUES ($1, $2, $3, $4, $5) \
           RETURNING tenant_id, id, type, created_at) {QUEUE_DELIVERIES}"
    ))
    .bind(tenant)
    .bind(id)
    .bind(kind)
    .bind(&data)
    .bind(Utc::now())
    .execute(conn)
    .await?;
    Ok(id)
}

/// An event as it is listed and as webhooks deliver it (the webhook body).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct EventView {
    pub id: Uuid,
    #[sqlx(rename = "type")]
    #[serde(rename = "type")]
    pub kind: String,
    pub tenant_id: Uuid,
    pub created_at: DateTime<Utc>,
    #[schema(value_type = Object)]
    pub data: Value,
}

/// Newest first.
pub async fn list(pool: &PgPool, tenant: Uuid, page: &PageParams) -> AppResult<Page<EventView>> {
    let limit = page.limit()?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenants WHERE id = $1)").bind(tenant).fetch_one(pool).await?;
    if !exists {
        return Err(AppError::NotFound);
    }
    let rows: Vec<EventView> = sqlx::query_as(
        "SELECT id, type, tenant_id, created_at, data FROM events \
         WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
    )
    .bind(tenant)
    .bind(page.cursor()?)
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    Ok(Page::from_rows(rows, limit, |e| e.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for t in EventType::ALL.iter().copied() {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
        }
        assert_eq!(EventType::parse("balance.lowish"), None);
    }
}
