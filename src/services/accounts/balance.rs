//! Balance reads: what a tenant owns now, and where it came from.
//!
//! Reads take no lock: they see the last committed state, so a top-up is visible on the
//! very next request. Bonus past its expiry is not spendable even before the expiry
//! worker sweeps it, so it is left out of `bonus` here exactly as the charge path does.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use super::days;
use super::runway::{self, Runway};
use crate::error::{AppError, AppResult};
use crate::ledger::TxnKind;
use crate::money::Money;
use crate::services::money_in::auto_top_up::{self, AutoTopUpSummary};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Balance {
    pub tenant_id: Uuid,
    pub currency: String,
    /// `available + held`: all the tenant owns.
    pub total: Money,
    /// `paid + bonus`: what a new charge may use.
    pub available: Money,
    pub held: Money,
    pub paid: Money,
    pub bonus: Money,
    /// Unexpired bonus lots with an expiry, soonest first, at most 10.
    pub expiring: Vec<Expiring>,
    pub auto_top_up: AutoTopUpSummary,
    /// Net usage per day over the last 7 days, and how long `available` lasts at it.
    pub runway: Runway,
    pub as_of: DateTime<Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Expiring {
    pub amount: Money,
    pub expires_at: DateTime<Utc>,
}

/// The balance as of `now` (the application clock's time).
pub async fn get(pool: &PgPool, tenant_id: Uuid, now: DateTime<Utc>) -> AppResult<Balance> {
    let row: Option<(String, Decimal, Decimal, Decimal, Decimal)> = sqlx::query_as(
        "SELECT b.currency, b.paid, b.bonus, b.held, \
                COALESCE((SELECT sum(remaining) FROM bonus_lots \
                          WHERE tenant_id = $1 AND remaining > 0 AND expires_at <= $2), 0) \
         FROM balances b WHERE b.tenant_id = $1",
    )
    .bind(tenant_id)
    .bind(now)
    .fetch_optional(pool)
    .await?;
    let (currency, paid, bonus, held, expired) = row.ok_or(AppError::NotFound)?;
    let expiring: Vec<(Decimal, DateTime<Utc>)> = sqlx::query_as(
        "SELECT remaining, expires_at FROM bonus_lots \
         WHERE tenant_id = $1 AND remaining > 0 AND expires_at > $2 ORDER BY expires_at, id LIMIT 10",
    )
    .bind(tenant_id)
    .bind(now)
    .fetch_all(pool)
    .await?;
    let (paid, held) = (Money::from_db(paid), Money::from_db(held));
    let bonus = Money::from_db(bonus - expired);
    let available = paid.checked_add(bonus).ok_or_else(|| AppError::internal("balance overflow"))?;
    let runway = runway::runway(available, runway::net_usage(pool, tenant_id, now).await?);
    Ok(Balance {
        tenant_id,
        currency,
        total: available.checked_add(held).ok_or_else(|| AppError::internal("balance overflow"))?,
        available,
        held,
        paid,
        bonus,
        expiring: expiring.into_iter().map(|(a, e)| Expiring { amount: Money::from_db(a), expires_at: e }).collect(),
        auto_top_up: auto_top_up::summary(pool, tenant_id).await?,
        runway,
        as_of: now,
    })
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct Window {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct Credited {
    pub top_up: Money,
    pub bonus: Money,
    pub signup: Money,
    pub gift: Money,
    pub referral: Money,
    pub compensation: Money,
    pub adjustment: Money,
    pub conversion: Money,
    pub refund: Money,
}

#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct Debited {
    pub usage: Money,
    pub expired: Money,
    pub adjustment: Money,
    /// Credit taken back when a top-up was refunded or its payment reversed.
    pub top_up_refund: Money,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Breakdown {
    pub currency: String,
    pub credited: Credited,
    pub debited: Debited,
    /// Credited minus debited over the window (lifetime: the tenant's total).
    pub total: Money,
}

/// Sums, per kind of transaction, the money that crossed between the tenant's accounts
/// and the system side. Holds move money between the tenant's own accounts and so do not
/// appear until captured (as usage).
///
/// Whole days of the window come from `flow_rollups`, its partial edge days from the
/// ledger rows (each transaction by its net, exactly as the rollup counts it): usage
/// transactions found through their charge (one each, at the same time), the others
/// through the partial time index of migration 0011.
pub async fn breakdown(pool: &PgPool, tenant_id: Uuid, w: &Window) -> AppResult<Breakdown> {
    let currency: String = sqlx::query_scalar("SELECT currency FROM tenants WHERE id = $1")
        .bind(tenant_id)
        .fetch_optional(pool)
        .await?
        .ok_or(AppError::NotFound)?;
    let split = days::split(w.from, w.to);
    let rows: Vec<(TxnKind, Decimal, Decimal)> = sqlx::query_as(
        "WITH flows AS ( \
           SELECT kind, credited, debited FROM flow_rollups \
           WHERE tenant_id = $1 AND $2 AND ($3::date IS NULL OR day >= $3) AND ($4::date IS NULL OR day < $4) \
           UNION ALL \
           SELECT kind, COALESCE(sum(net) FILTER (WHERE net > 0), 0), COALESCE(-sum(net) FILTER (WHERE net < 0), 0) \
           FROM (SELECT t.kind, n.net \
                 FROM unnest($5::timestamptz[], $6::timestamptz[]) AS w(s, e) CROSS JOIN LATERAL ( \
                   SELECT t.tenant_id, t.id, t.kind FROM ledger_transactions t \
                   WHERE t.tenant_id = $1 AND t.kind <> 'usage' AND t.created_at >= w.s AND t.created_at < w.e \
                   UNION ALL \
                   SELECT t.tenant_id, t.id, t.kind FROM charges c \
                   JOIN ledger_transactions t ON t.tenant_id = c.tenant_id AND t.id = c.transaction_id \
                     AND t.kind = 'usage' AND t.created_at >= w.s AND t.created_at < w.e \
                   WHERE c.tenant_id = $1 AND c.created_at >= w.s AND c.created_at < w.e \
                   OFFSET 0) t \
                 CROSS JOIN LATERAL ( \
                   SELECT sum(e.amount) AS net FROM ledger_entries e \
                   WHERE e.tenant_id = t.tenant_id AND e.transaction_id = t.id \
                     AND e.account IN ('paid', 'bonus', 'held')) n \
                 WHERE n.net IS NOT NULL) edge \
           GROUP BY kind) \
         SELECT kind, sum(credited), sum(debited) FROM flows GROUP BY kind",
    )
    .bind(tenant_id)
    .bind(split.has_days())
    .bind(split.first_day())
    .bind(split.end_day())
    .bind(split.edge_starts())
    .bind(split.edge_ends())
    .fetch_all(pool)
    .await?;
    let (mut c, mut d) = (Credited::default(), Debited::default());
    let mut total = Decimal::ZERO;
    for (kind, credit, debit) in rows {
        total += credit - debit;
        let (credit, debit) = (Money::from_db(credit), Money::from_db(debit));
        match kind {
            TxnKind::TopUp => c.top_up = credit,
            TxnKind::Bonus => c.bonus = credit,
            TxnKind::Signup => c.signup = credit,
            TxnKind::Gift => c.gift = credit,
            TxnKind::Referral => c.referral = credit,
            TxnKind::Compensation => c.compensation = credit,
            TxnKind::Conversion => c.conversion = credit,
            TxnKind::Refund => c.refund = credit,
            TxnKind::Adjustment => (c.adjustment, d.adjustment) = (credit, debit),
            TxnKind::Usage => d.usage = debit,
            TxnKind::TopUpRefund => d.top_up_refund = debit,
            TxnKind::Expiry => d.expired = debit,
            // Between the tenant's own accounts: nothing crosses to the system side.
            TxnKind::Hold | TxnKind::HoldRelease => {}
        }
    }
    Ok(Breakdown { currency, credited: c, debited: d, total: Money::from_db(total) })
}
