//! Taking a tenant's ledger lock and reading its funds under it.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Funds, Lot};
use crate::money::Money;

/// Proof that this transaction holds the tenant's ledger lock, with what was read under it.
#[derive(Debug, Clone)]
pub struct Locked {
    pub tenant_id: Uuid,
    pub currency: String,
    pub active: bool,
    pub funds: Funds,
    /// Bonus that is past expiry but not yet swept by the expiry worker.
    pub expired_unswept: Money,
    /// The cached `paid + bonus + held` as the row stands in this transaction; [`post`]
    /// keeps it current, so it can compute each transaction's `total_after` itself.
    ///
    /// [`post`]: super::post
    pub total: Money,
}

/// Opens a new tenant's accounts (paid, bonus, held), all at zero, in the caller's
/// transaction: the row [`lock`] takes from then on.
pub async fn open_accounts(conn: &mut PgConnection, tenant_id: Uuid, currency: &str) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO balances (tenant_id, currency) VALUES ($1, $2)")
        .bind(tenant_id)
        .bind(currency)
        .execute(conn)
        .await?;
    Ok(())
}

/// Locks the tenant's balances row (`FOR UPDATE`) and reads its spendable funds.
/// `None`: no such tenant. Lots need no lock of their own: they are only written under
/// this one.
pub async fn lock(conn: &mut PgConnection, tenant_id: Uuid, now: DateTime<Utc>) -> Result<Option<Locked>, sqlx::Error> {
    let row: Option<(Decimal, Decimal, Decimal, String, String)> = sqlx::query_as(
        "SELECT b.paid, b.bonus, b.held, b.currency, t.status \
         FROM balances b JOIN tenants t ON t.id = b.tenant_id \
         WHERE b.tenant_id = $1 FOR UPDATE OF b",
    )
    .bind(tenant_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((paid, bonus, held, currency, status)) = row else { return Ok(None) };
    let bonus = Money::from_db(bonus);
    let lots = if bonus.is_zero() { Vec::new() } else { load_lots(conn, tenant_id).await? };
    let funds = Funds::new(Money::from_db(paid), Money::from_db(held), lots, now);
    let expired_unswept = bonus.checked_sub(funds.bonus()).unwrap_or(Money::ZERO);
    let total = Money::from_db(paid + held).checked_add(bonus).expect("balances fit NUMERIC(20,6)");
    Ok(Some(Locked { tenant_id, currency, active: status == "active", funds, expired_unswept, total }))
}

async fn load_lots(conn: &mut PgConnection, tenant_id: Uuid) -> Result<Vec<Lot>, sqlx::Error> {
    let rows: Vec<(Uuid, Decimal, Option<DateTime<Utc>>)> =
        sqlx::query_as("SELECT id, remaining, expires_at FROM bonus_lots WHERE tenant_id = $1 AND remaining > 0")
            .bind(tenant_id)
            .fetch_all(conn)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(id, remaining, expires_at)| Lot { id, remaining: Money::from_db(remaining), expires_at })
        .collect())
}
