//! Taking a tenant's ledger lock and reading its funds under it.
//!
//! Only the posting frame (`crate::frame`) calls [`lock`]: it is the one lock entry point
//! of the service, and it sweeps expired lots right after taking the lock.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Balances, Funds, Lot};
use crate::money::Money;
use crate::vocab::TenantStatus;

/// Proof that this transaction holds the tenant's ledger lock, with what was read under it.
#[derive(Debug, Clone)]
pub struct Locked {
    pub tenant_id: Uuid,
    pub currency: String,
    pub status: TenantStatus,
    /// What a decision may spend: spendable lots and paid credit. Deciding code takes
    /// from it ([`Funds::spend`]) so each decision sees the ones before it.
    pub funds: Funds,
    /// Bonus that is past expiry but not yet swept.
    pub expired_unswept: Money,
    /// The tenant has spend limits of its own (`tenant_spend_limits`): a spend must read
    /// them. Read here, in the lock's own statement, so that a tenant without any costs
    /// its charges no extra round trip.
    pub spend_limited: bool,
    /// The cached balances as the row stands in this transaction: [`post`] moves them with
    /// every draft, and every "balance after" is read from them.
    ///
    /// [`post`]: super::post
    pub balances: Balances,
}

impl Locked {
    pub fn is_active(&self) -> bool {
        self.status == TenantStatus::Active
    }
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
    let row: Option<(Decimal, Decimal, Decimal, String, TenantStatus, bool)> = sqlx::query_as(
        "SELECT b.paid, b.bonus, b.held, b.currency, t.status, \
           EXISTS (SELECT 1 FROM tenant_spend_limits l WHERE l.tenant_id = b.tenant_id \
                   AND (l.day_limit IS NOT NULL OR l.month_limit IS NOT NULL)) \
         FROM balances b JOIN tenants t ON t.id = b.tenant_id \
         WHERE b.tenant_id = $1 FOR UPDATE OF b",
    )
    .bind(tenant_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((paid, bonus, held, currency, status, spend_limited)) = row else { return Ok(None) };
    let balances = Balances { paid: Money::from_db(paid), bonus: Money::from_db(bonus), held: Money::from_db(held) };
    let lots = if balances.bonus.is_zero() { Vec::new() } else { load_lots(conn, tenant_id).await? };
    let funds = Funds::new(balances.paid, balances.held, lots, now);
    // Lots adding up to more than the cached bonus is a broken invariant: refuse, never guess.
    let expired_unswept = balances.bonus.checked_sub(funds.bonus()).filter(|m| !m.is_negative()).ok_or_else(|| {
        sqlx::Error::Decode(format!("tenant {tenant_id}: bonus lots exceed the bonus balance").into())
    })?;
    Ok(Some(Locked { tenant_id, currency, status, funds, expired_unswept, spend_limited, balances }))
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
