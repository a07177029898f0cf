//! The `top_ups` table: its rows, views and reads, and the limits and bonus of one top-up.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::config::Config;
use crate::error::{AppError, AppResult};
use crate::idempotency::{Claim, IdempotencyKey, Side};
use crate::ledger::BalanceSummary;
use crate::money::Money;
use crate::services::{Page, PageParams};
use crate::vocab::{TopUpSource, TopUpStatus};

/// A `top_ups` row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TopUpRow {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub source: TopUpSource,
    pub status: TopUpStatus,
    pub amount: Decimal,
    pub bonus_amount: Decimal,
    pub bonus_expires_at: Option<DateTime<Utc>>,
    pub currency: String,
    pub payment_token: String,
    pub card_brand: String,
    pub card_last4: String,
    pub provider_key: String,
    pub provider_ref: Option<String>,
    pub error: Option<String>,
    pub idempotency_key: Option<String>,
    pub idempotency_side: Option<Side>,
    pub fingerprint: Option<Vec<u8>>,
    pub actor: String,
    pub attempts: i32,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    /// The tenant's customer at the provider, as it was when the attempt began.
    pub provider_customer: Option<String>,
    /// The provider's payment object (a Stripe PaymentIntent), recorded before it is confirmed.
    pub provider_intent: Option<String>,
    pub decline_code: Option<String>,
    /// The bonus lot the success granted (a refund takes bonus back from it alone).
    pub bonus_lot_id: Option<Uuid>,
}

pub const COLUMNS: &str =
    "tenant_id, id, source, status, amount, bonus_amount, bonus_expires_at, currency, payment_token, \
     card_brand, card_last4, provider_key, provider_ref, error, idempotency_key, idempotency_side, fingerprint, \
     actor, attempts, last_attempt_at, created_at, completed_at, provider_customer, provider_intent, decline_code, \
     bonus_lot_id";

impl TopUpRow {
    /// The client's key of a manual top-up, whose response the outcome is stored under.
    pub fn claim(&self) -> AppResult<Option<Claim>> {
        let (Some(key), Some(side), Some(fp)) = (&self.idempotency_key, self.idempotency_side, &self.fingerprint)
        else {
            return Ok(None);
        };
        let fp = fp.as_slice().try_into().map_err(AppError::internal)?;
        Ok(Some(Claim { tenant: self.tenant_id, side, key: IdempotencyKey(key.clone()), fp }))
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CardView {
    pub brand: String,
    pub last4: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TopUpView {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub status: TopUpStatus,
    pub source: TopUpSource,
    pub amount: Money,
    pub bonus_amount: Money,
    pub bonus_expires_at: Option<DateTime<Utc>>,
    pub currency: String,
    pub payment_method: CardView,
    pub provider_ref: Option<String>,
    pub error: Option<String>,
    /// A failed top-up's machine-readable reason: the card's decline code, or
    /// `authentication_required` for a card that needs 3-D Secure.
    pub decline_code: Option<String>,
    /// Provider calls made for this top-up (all with the same provider idempotency key).
    pub attempts: i32,
    /// The balance right after the credit (in the response that made it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance: Option<BalanceSummary>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

impl From<TopUpRow> for TopUpView {
    fn from(r: TopUpRow) -> TopUpView {
        TopUpView {
            id: r.id,
            tenant_id: r.tenant_id,
            status: r.status,
            source: r.source,
            amount: Money::from_db(r.amount),
            bonus_amount: Money::from_db(r.bonus_amount),
            bonus_expires_at: r.bonus_expires_at,
            currency: r.currency,
            payment_method: CardView { brand: r.card_brand, last4: r.card_last4 },
            provider_ref: r.provider_ref,
            error: r.error,
            decline_code: r.decline_code,
            attempts: r.attempts,
            balance: None,
            created_at: r.created_at,
            completed_at: r.completed_at,
        }
    }
}

/// The configured limits on one top-up's amount (manual, and auto top-up's `amount`).
pub fn check_amount(config: &Config, amount: Money) -> AppResult<()> {
    if amount < config.top_up_min {
        return Err(AppError::invalid(format!("amount must be at least {}", config.top_up_min)));
    }
    if amount > config.top_up_max {
        return Err(AppError::invalid(format!("amount must be at most {}", config.top_up_max)));
    }
    if config.top_up_whole_dollars && !amount.as_decimal().fract().is_zero() {
        return Err(AppError::invalid("amount must be a whole number of dollars"));
    }
    Ok(())
}

/// The bonus a top-up of `amount` earns: the configured percentage, rounded half-up to
/// the micro-dollar like every computed amount.
pub fn bonus_for(config: &Config, amount: Money) -> AppResult<Money> {
    let exact = amount.as_decimal() * config.top_up_bonus_percent / Decimal::ONE_HUNDRED;
    Ok(Money::round_cost(exact)?)
}

async fn tenant_exists(pool: &PgPool, tenant: Uuid) -> AppResult<()> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenants WHERE id = $1)").bind(tenant).fetch_one(pool).await?;
    exists.then_some(()).ok_or(AppError::NotFound)
}

/// Newest first, manual and automatic.
pub async fn list(pool: &PgPool, tenant: Uuid, page: &PageParams) -> AppResult<Page<TopUpView>> {
    let limit = page.limit()?;
    tenant_exists(pool, tenant).await?;
    let rows: Vec<TopUpRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM top_ups WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
    ))
    .bind(tenant)
    .bind(page.cursor()?)
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    Ok(Page::from_rows(rows.into_iter().map(TopUpView::from).collect(), limit, |t| t.id))
}

pub async fn row(pool: &PgPool, tenant: Uuid, id: Uuid) -> AppResult<TopUpRow> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM top_ups WHERE tenant_id = $1 AND id = $2"))
        .bind(tenant)
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or(AppError::NotFound)
}

pub async fn get(pool: &PgPool, tenant: Uuid, id: Uuid) -> AppResult<TopUpView> {
    Ok(row(pool, tenant, id).await?.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let mut c = Config::from_lookup(|_| None).unwrap();
        c.top_up_bonus_percent = Decimal::new(125, 1);
        c
    }

    #[test]
    fn limits_and_whole_dollars() {
        let c = config();
        let m = |s: &str| s.parse::<Money>().unwrap();
        assert!(check_amount(&c, m("5")).is_ok());
        assert!(check_amount(&c, m("10000")).is_ok());
        assert_eq!(check_amount(&c, m("4")).unwrap_err().code(), "invalid_request");
        assert!(check_amount(&c, m("10001")).is_err());
        assert!(check_amount(&c, m("12.50")).is_err());
        let mut cents = config();
        cents.top_up_whole_dollars = false;
        assert!(check_amount(&cents, m("12.50")).is_ok());
    }

    #[test]
    fn bonus_is_a_rounded_percentage() {
        let c = config();
        assert_eq!(bonus_for(&c, "100".parse().unwrap()).unwrap().to_string(), "12.50");
        assert_eq!(bonus_for(&c, "0.000004".parse().unwrap()).unwrap().to_string(), "0.000001", "half-up");
    }
}
