//! Estimates: the price of a usage, computed by the same function a charge uses, with no
//! database write. Without a tenant this reads only the in-memory price book.

use chrono::Utc;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::PgPool;
use uuid::Uuid;

use super::records::Cost;
use crate::error::{AppError, AppResult};
use crate::money::Money;
use crate::pricing::{self, CostLine, TenantPricing};
use crate::services::accounts::prices::PriceCache;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EstimateRequest {
    pub model: String,
    #[schema(value_type = Object)]
    pub usage: Value,
    /// Apply this tenant's pricing and say whether its balance covers the cost.
    pub tenant_id: Option<Uuid>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Estimate {
    pub model: String,
    pub price_version: i32,
    pub cost: Cost,
    #[schema(value_type = Vec<Object>)]
    pub lines: Vec<CostLine>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affordable: Option<bool>,
}

pub async fn estimate(
    pool: &PgPool,
    prices: &PriceCache,
    credits_per_usd: Decimal,
    req: EstimateRequest,
) -> AppResult<Estimate> {
    let (version, rule) = prices.latest(&req.model)?;
    let (deal, available, currency) = match req.tenant_id {
        None => (None, None, "USD".to_string()),
        Some(t) => {
            let (d, a, c) = tenant_terms(pool, t).await?;
            (d, Some(a), c)
        }
    };
    let q = pricing::quote(&req.model, &rule, deal.as_ref(), &req.usage)?;
    Ok(Estimate {
        model: req.model,
        price_version: version,
        cost: Cost::new(q.amount, &currency, credits_per_usd),
        lines: q.lines,
        affordable: available.map(|a| q.amount <= a),
    })
}

/// The tenant's deal, what it may spend now, and its currency, in one query.
async fn tenant_terms(pool: &PgPool, tenant: Uuid) -> AppResult<(Option<TenantPricing>, Money, String)> {
    let row: Option<(Option<Json<TenantPricing>>, Decimal, String)> = sqlx::query_as(
        "SELECT p.deal, b.paid + b.bonus - COALESCE((SELECT sum(remaining) FROM bonus_lots l \
                 WHERE l.tenant_id = b.tenant_id AND l.remaining > 0 AND l.expires_at <= $2), 0), b.currency \
         FROM balances b LEFT JOIN tenant_pricing p ON p.tenant_id = b.tenant_id WHERE b.tenant_id = $1",
    )
    .bind(tenant)
    .bind(Utc::now())
    .fetch_optional(pool)
    .await?;
    let (deal, available, currency) = row.ok_or(AppError::NotFound)?;
    Ok((deal.map(|d| d.0), Money::from_db(available), currency))
}
