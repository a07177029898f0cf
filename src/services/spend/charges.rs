//! Charges and holds: the requests generation backends send on every job, their views,
//! and the entry point that hands them to the group-commit [`Charger`].
//!
//! Rules: a charge is priced by the engine (model + usage) or names an amount; it is paid
//! from bonus lots first (soonest-expiring first), then paid credit; one that does not fit
//! `available` is refused with 402 and records nothing. A hold moves the amount from
//! `available` to `held` until it is captured, released or expires.

use std::future::Future;
use std::sync::Arc;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::batch::{Price, Spend, SpendKind};
use super::charger::Charger;
use super::records::{Charge, ChargeRow, ChargeView, CHARGE_COLUMNS};
use crate::error::{AppError, AppResult};
use crate::idempotency::{self, Claim, IdempotencyKey, Side, Stored};
use crate::meters;
use crate::money::Money;
use crate::pricing;
use crate::services::accounts::prices::PriceCache;

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChargeRequest {
    pub tenant_id: Uuid,
    /// With `usage`: priced by the price book (and the tenant's deal).
    pub model: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub usage: Option<Value>,
    /// Instead of `model` + `usage`: an explicit amount.
    pub amount: Option<Money>,
    pub description: Option<String>,
    pub api_key_id: Option<Uuid>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldRequest {
    pub tenant_id: Uuid,
    pub amount: Option<Money>,
    pub model: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub usage: Option<Value>,
    /// 1 to 604800 (7 days); default 900.
    pub expires_in_seconds: Option<i64>,
    pub api_key_id: Option<Uuid>,
    pub description: Option<String>,
}

fn check_description(d: &Option<String>) -> AppResult<()> {
    if d.as_ref().is_some_and(|d| d.len() > 1000) {
        return Err(AppError::invalid("description must be at most 1000 characters"));
    }
    Ok(())
}

/// Resolves `model`+`usage` or `amount` into a [`Price`], refusing bad input up front
/// (unknown model, usage the rule does not know, a zero or negative amount).
pub fn resolve_price(
    prices: &PriceCache,
    model: Option<String>,
    usage: Option<Value>,
    amount: Option<Money>,
) -> AppResult<Price> {
    match (model, usage, amount) {
        (None, None, Some(a)) => {
            if !a.is_positive() {
                return Err(AppError::invalid("amount must be positive"));
            }
            Ok(Price::Amount(a))
        }
        (Some(model), Some(usage), None) => {
            let (version, rule) = prices.latest(&model)?;
            // List price first: usage errors are the caller's, whatever the tenant's deal.
            pricing::quote(&model, &rule, None, &usage)?;
            Ok(Price::Model { model, version, rule, usage })
        }
        (Some(_), None, _) => Err(AppError::invalid("`model` needs `usage`")),
        (None, Some(_), _) => Err(AppError::invalid("`usage` needs `model`")),
        _ => Err(AppError::invalid("give either `model` and `usage`, or `amount`")),
    }
}

/// Validates, prices and submits a charge; its answer is counted (`crate::meters`).
pub async fn charge(
    charger: &Arc<Charger>,
    prices: &PriceCache,
    side: Side,
    key: IdempotencyKey,
    req: ChargeRequest,
) -> AppResult<Stored> {
    counted(meters::Spend::Charge, async move {
        check_description(&req.description)?;
        if let Some(m) = &req.metadata {
            if !m.is_object() || m.to_string().len() > 4096 {
                return Err(AppError::invalid("metadata must be a JSON object of at most 4 KiB"));
            }
        }
        let claim = Claim { tenant: req.tenant_id, side, key, fp: idempotency::fingerprint("charge", &req) };
        let price = resolve_price(prices, req.model, req.usage, req.amount)?;
        let spend = Spend {
            tenant_id: req.tenant_id,
            kind: SpendKind::Charge { metadata: req.metadata },
            price,
            description: req.description,
            api_key_id: req.api_key_id,
        };
        charger.submit(spend, claim).await
    })
    .await
}

/// Validates, prices and submits a hold; its answer is counted (`crate::meters`).
pub async fn hold(
    charger: &Arc<Charger>,
    prices: &PriceCache,
    side: Side,
    key: IdempotencyKey,
    req: HoldRequest,
) -> AppResult<Stored> {
    counted(meters::Spend::Hold, async move {
        check_description(&req.description)?;
        let secs = req.expires_in_seconds.unwrap_or(900);
        if !(1..=604_800).contains(&secs) {
            return Err(AppError::invalid("expires_in_seconds must be between 1 and 604800"));
        }
        let claim = Claim { tenant: req.tenant_id, side, key, fp: idempotency::fingerprint("hold", &req) };
        let price = resolve_price(prices, req.model, req.usage, req.amount)?;
        let spend = Spend {
            tenant_id: req.tenant_id,
            kind: SpendKind::Hold { expires_at: charger.clock().now() + chrono::Duration::seconds(secs) },
            price,
            description: req.description,
            api_key_id: req.api_key_id,
        };
        charger.submit(spend, claim).await
    })
    .await
}

/// Runs a charge's or hold's request and counts its answer, whatever it is.
async fn counted(kind: meters::Spend, answer: impl Future<Output = AppResult<Stored>>) -> AppResult<Stored> {
    let answer = answer.await;
    meters::spend(kind, &answer);
    answer
}

/// A charge by id; the caller checks the tenant scope on the returned tenant id.
pub async fn get(pool: &PgPool, credits_per_usd: Decimal, id: Uuid) -> AppResult<ChargeView> {
    let row: Option<ChargeRow> = sqlx::query_as(&format!("SELECT {CHARGE_COLUMNS} FROM charges WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    let charge = Charge::from(row.ok_or(AppError::NotFound)?);
    let (currency, refunded): (String, Decimal) = sqlx::query_as(
        "SELECT t.currency, COALESCE((SELECT sum(amount) FROM refunds WHERE tenant_id = $1 AND charge_id = $2), 0) \
         FROM tenants t WHERE t.id = $1",
    )
    .bind(charge.tenant_id)
    .bind(id)
    .fetch_one(pool)
    .await?;
    Ok(charge.view(&currency, credits_per_usd, Money::from_db(refunded)))
}
