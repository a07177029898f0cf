//! Expiry of bonus lots and holds, run by the workers in every replica.
//!
//! Safe with many replicas: each tenant's work happens under its ledger lock and
//! re-reads what is due under it, so a lot or hold is expired exactly once.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::holds;
use crate::error::{AppError, AppResult};
use crate::ledger::{self, Account, Draft, Entry, Locked, TxnKind};
use crate::money::Money;

/// Expires every due lot of up to `limit` tenants. Returns how many lots expired.
pub async fn expire_lots(pool: &PgPool, limit: i64) -> AppResult<usize> {
    let tenants: Vec<Uuid> = sqlx::query_scalar(
        "SELECT DISTINCT tenant_id FROM bonus_lots WHERE remaining > 0 AND expires_at <= now() LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let mut n = 0;
    for tenant in tenants {
        n += expire_tenant_lots(pool, tenant).await?;
    }
    Ok(n)
}

async fn expire_tenant_lots(pool: &PgPool, tenant: Uuid) -> AppResult<usize> {
    let now = Utc::now();
    let mut tx = pool.begin().await?;
    let mut locked = ledger::lock(&mut tx, tenant, now).await?.ok_or(AppError::NotFound)?;
    let n = expire_due(&mut tx, &mut locked, now).await?;
    tx.commit().await?;
    Ok(n)
}

/// Locks the tenant's ledger (see [`ledger::lock`]) and first expires any bonus lot already
/// past its expiry that the worker has not swept yet, so every figure computed under the
/// lock (totals, `balance_after`) leaves expired credit out. Spending paths lock through here.
pub async fn lock(conn: &mut PgConnection, tenant: Uuid, now: DateTime<Utc>) -> AppResult<Option<Locked>> {
    let Some(mut locked) = ledger::lock(conn, tenant, now).await? else { return Ok(None) };
    if locked.expired_unswept.is_positive() {
        expire_due(conn, &mut locked, now).await?;
        locked.expired_unswept = Money::ZERO;
    }
    Ok(Some(locked))
}

/// Posts the expiry of every due lot of a locked tenant, with its `credits.expired` event.
async fn expire_due(conn: &mut PgConnection, locked: &mut Locked, now: DateTime<Utc>) -> AppResult<usize> {
    let tenant = locked.tenant_id;
    let due: Vec<(Uuid, Decimal, DateTime<Utc>)> = sqlx::query_as(
        "SELECT id, remaining, expires_at FROM bonus_lots WHERE tenant_id = $1 AND remaining > 0 AND expires_at <= $2",
    )
    .bind(tenant)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    if due.is_empty() {
        return Ok(0);
    }
    let drafts: Vec<Draft> = due
        .iter()
        .map(|(lot, remaining, expires_at)| {
            let amount = Money::from_db(*remaining);
            let mut d = Draft::new(TxnKind::Expiry, now)
                .description(Some("Bonus credit expired".into()))
                .reference(json!({ "lot_id": lot, "expires_at": expires_at }))
                .actor("system");
            d.entries.push(Entry { account: Account::Bonus, amount: -amount, lot: Some(*lot) });
            d.entry(Account::Expired, amount)
        })
        .collect();
    ledger::post(conn, locked, &drafts).await?;
    let amount = Money::checked_sum(due.iter().map(|(_, r, _)| Money::from_db(*r)))
        .ok_or_else(|| AppError::internal("expiry sum overflow"))?;
    let lots: Vec<_> =
        due.iter().map(|(lot, r, e)| json!({ "lot_id": lot, "amount": Money::from_db(*r), "expires_at": e })).collect();
    let data = json!({ "amount": amount, "currency": locked.currency, "lots": lots });
    super::events::emit(conn, tenant, super::events::EventType::CreditsExpired, data).await?;
    Ok(drafts.len())
}

/// Expires overdue holds (up to `limit`). Returns how many expired.
pub async fn expire_holds(pool: &PgPool, limit: i64) -> AppResult<usize> {
    let mut n = 0;
    for (tenant, hold) in holds::overdue(pool, limit).await? {
        match holds::release(pool.clone(), tenant, hold, true).await {
            Ok(_) => n += 1,
            // Captured or released meanwhile (by a request or another replica).
            Err(AppError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
