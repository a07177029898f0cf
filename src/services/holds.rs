//! Holds for long jobs: capture (at most the held amount; the rest released), release,
//! and expiry. Each hold is resolved exactly once: the hold row is locked and its status
//! checked under the tenant's ledger lock, so a concurrent capture and release cannot both win.

use std::sync::Arc;

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::balance::BalanceSummary;
use super::charges::{ChargeView, Cost, FundedBy};
use super::expiry;
use super::in_transaction;
use super::prices;
use crate::error::{AppError, AppResult};
use crate::idempotency::{self, IdempotencyKey, Stored};
use crate::ids::new_id;
use crate::ledger::{self, Account, Draft, Funding, Locked, LotPart, TxnKind};
use crate::money::Money;
use crate::pricing;
use crate::state::App;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HoldView {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub amount: Money,
    pub currency: String,
    /// `active`, `captured`, `released` or `expired`.
    pub status: String,
    pub funded_by: FundedBy,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub captured: Option<Money>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub charge_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price_version: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureRequest {
    /// At most the held amount; without `amount` or `usage`, the whole hold.
    pub amount: Option<Money>,
    /// Final usage, priced with the price version the hold was placed at.
    #[schema(value_type = Option<Object>)]
    pub usage: Option<Value>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct HoldRow {
    tenant_id: Uuid,
    id: Uuid,
    amount: Decimal,
    funded_bonus: Decimal,
    funded_paid: Decimal,
    lots: Json<Vec<LotPart>>,
    status: String,
    model: Option<String>,
    price_version: Option<i32>,
    description: Option<String>,
    api_key_id: Option<Uuid>,
    expires_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    resolved_at: Option<DateTime<Utc>>,
    charge_id: Option<Uuid>,
}

const HOLD_COLUMNS: &str = "tenant_id, id, amount, funded_bonus, funded_paid, lots, status, model, price_version, \
     description, api_key_id, expires_at, created_at, resolved_at, charge_id";

impl HoldRow {
    fn funding(&self) -> Funding {
        Funding { lots: self.lots.0.clone(), paid: Money::from_db(self.funded_paid) }
    }

    fn view(self, currency: &str, captured: Option<Money>) -> HoldView {
        HoldView {
            id: self.id,
            tenant_id: self.tenant_id,
            amount: Money::from_db(self.amount),
            currency: currency.into(),
            status: self.status,
            funded_by: FundedBy { bonus: Money::from_db(self.funded_bonus), paid: Money::from_db(self.funded_paid) },
            captured,
            charge_id: self.charge_id,
            model: self.model,
            price_version: self.price_version,
            api_key_id: self.api_key_id,
            description: self.description,
            expires_at: self.expires_at,
            created_at: self.created_at,
            resolved_at: self.resolved_at,
        }
    }
}

/// The tenant a hold belongs to (no lock), for scoping before anything else.
pub async fn tenant_of(pool: &PgPool, hold_id: Uuid) -> AppResult<Uuid> {
    sqlx::query_scalar("SELECT tenant_id FROM holds WHERE id = $1")
        .bind(hold_id)
        .fetch_optional(pool)
        .await?
        .ok_or(AppError::NotFound)
}

pub async fn get(pool: &PgPool, tenant: Uuid, hold_id: Uuid) -> AppResult<HoldView> {
    let row: HoldRow = sqlx::query_as(&format!("SELECT {HOLD_COLUMNS} FROM holds WHERE tenant_id = $1 AND id = $2"))
        .bind(tenant)
        .bind(hold_id)
        .fetch_optional(pool)
        .await?
        .ok_or(AppError::NotFound)?;
    let (currency, captured): (String, Option<Decimal>) = sqlx::query_as(
        "SELECT t.currency, (SELECT amount FROM charges c WHERE c.tenant_id = $1 AND c.id = $2) FROM tenants t WHERE t.id = $1",
    )
    .bind(tenant)
    .bind(row.charge_id)
    .fetch_one(pool)
    .await?;
    Ok(row.view(&currency, captured.map(Money::from_db)))
}

/// Locks the tenant's ledger, then the hold row (always in that order: no deadlocks).
async fn lock_hold(
    conn: &mut PgConnection,
    tenant: Uuid,
    hold_id: Uuid,
    now: DateTime<Utc>,
) -> AppResult<(Locked, HoldRow)> {
    let locked = expiry::lock(conn, tenant, now).await?.ok_or(AppError::NotFound)?;
    let row: HoldRow =
        sqlx::query_as(&format!("SELECT {HOLD_COLUMNS} FROM holds WHERE tenant_id = $1 AND id = $2 FOR UPDATE"))
            .bind(tenant)
            .bind(hold_id)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or(AppError::NotFound)?;
    Ok((locked, row))
}

fn ensure_active(row: &HoldRow, now: DateTime<Utc>) -> AppResult<()> {
    if row.status != "active" {
        return Err(AppError::Conflict(format!("the hold is already {}", row.status)));
    }
    if row.expires_at <= now {
        return Err(AppError::Conflict("the hold has expired".into()));
    }
    Ok(())
}

pub async fn capture(
    app: Arc<App>,
    tenant: Uuid,
    hold_id: Uuid,
    key: IdempotencyKey,
    req: CaptureRequest,
) -> AppResult<Stored> {
    let fp = idempotency::fingerprint(&format!("capture:{hold_id}"), &req);
    let now = Utc::now();
    let pool = app.pool.clone();
    in_transaction(&pool, move |tx| {
        Box::pin(async move {
            if let Some(replay) = idempotency::begin(tx, tenant, &key, &fp).await? {
                return Ok(replay);
            }
            let (mut locked, row) = lock_hold(tx, tenant, hold_id, now).await?;
            if !locked.active {
                return Err(AppError::Forbidden("the tenant is suspended".into()));
            }
            // The time after the lock wait, not before it: a hold that expired meanwhile is not active.
            ensure_active(&row, Utc::now())?;
            let held = Money::from_db(row.amount);
            let amount = match (&req.amount, &req.usage) {
                (Some(_), Some(_)) => return Err(AppError::invalid("give `amount` or `usage`, not both")),
                (Some(a), None) => *a,
                (None, None) => held,
                (None, Some(usage)) => {
                    let (Some(model), Some(version)) = (&row.model, row.price_version) else {
                        return Err(AppError::invalid("this hold names an amount, not a model: capture an `amount`"));
                    };
                    let rule = prices::rule_version(tx, model, version).await?;
                    let deal = prices::deal(tx, tenant).await?;
                    pricing::quote(model, &rule, deal.as_ref(), usage)?.amount
                }
            };
            if !amount.is_positive() {
                return Err(AppError::invalid("the captured amount must be positive; release the hold instead"));
            }
            if amount > held {
                return Err(AppError::unprocessable(format!("cannot capture {amount}: the hold is for {held}")));
            }
            let (taken, rest) = row.funding().split_spending(amount);
            let charge_id = new_id();
            let capture = Draft::new(TxnKind::Usage, now)
                .description(row.description.clone().or_else(|| row.model.as_ref().map(|m| format!("Usage: {m}"))))
                .reference(json!({ "charge_id": charge_id, "hold_id": hold_id, "model": row.model }))
                .api_key(row.api_key_id)
                .entry(Account::Held, -amount)
                .entry(Account::Revenue, amount);
            let mut drafts = vec![capture];
            if rest.total().is_positive() {
                drafts.extend(release_drafts(tx, tenant, hold_id, &rest, "captured", now).await?);
            }
            let posted = ledger::post(tx, &mut locked, &drafts).await?;
            let total_after = posted.last().expect("at least the capture").total_after;
            let available_after =
                total_after.checked_sub(locked.funds.held.checked_sub(held).unwrap_or_default()).unwrap_or_default();
            sqlx::query(
                "INSERT INTO charges (tenant_id, id, transaction_id, amount, funded_bonus, funded_paid, lots, model, price_version, \
                   usage, description, api_key_id, hold_id, total_after, available_after, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
            )
            .bind(tenant)
            .bind(charge_id)
            .bind(drafts[0].id)
            .bind(amount.as_decimal())
            .bind(taken.bonus().as_decimal())
            .bind(taken.paid.as_decimal())
            .bind(Json(&taken.lots))
            .bind(&row.model)
            .bind(row.price_version)
            .bind(&req.usage)
            .bind(&drafts[0].description)
            .bind(row.api_key_id)
            .bind(hold_id)
            .bind(total_after.as_decimal())
            .bind(available_after.as_decimal())
            .bind(now)
            .execute(&mut *tx)
            .await?;
            resolve(tx, tenant, hold_id, "captured", Some(charge_id), now).await?;
            let view = ChargeView {
                id: charge_id,
                tenant_id: tenant,
                status: "succeeded",
                cost: Cost::new(amount, &locked.currency, app.config.credits_per_usd),
                funded_by: FundedBy { bonus: taken.bonus(), paid: taken.paid },
                balance: BalanceSummary { total: total_after, available: available_after },
                refunded: Money::ZERO,
                model: row.model.clone(),
                price_version: row.price_version,
                api_key_id: row.api_key_id,
                hold_id: Some(hold_id),
                description: drafts[0].description.clone(),
                metadata: None,
                created_at: now,
            };
            let stored = idempotency::finish_json(tx, tenant, &key, &fp, StatusCode::CREATED, &view).await?;
            Ok(stored)
        })
    })
    .await
}

/// The drafts that move `funding` from held back to where it came from.
async fn release_drafts(
    conn: &mut PgConnection,
    tenant: Uuid,
    hold_id: Uuid,
    funding: &Funding,
    why: &str,
    now: DateTime<Utc>,
) -> AppResult<Vec<Draft>> {
    let draft = Draft::new(TxnKind::HoldRelease, now)
        .description(Some(format!("Hold {why}: unused amount released")))
        .reference(json!({ "hold_id": hold_id, "reason": why }))
        .entry(Account::Held, -funding.total());
    let (draft, expiry) = ledger::give_back(conn, tenant, draft, funding, now).await?;
    Ok(std::iter::once(draft).chain(expiry).collect())
}

async fn resolve(
    conn: &mut PgConnection,
    tenant: Uuid,
    hold_id: Uuid,
    status: &str,
    charge: Option<Uuid>,
    now: DateTime<Utc>,
) -> AppResult<()> {
    sqlx::query("UPDATE holds SET status = $3, charge_id = $4, resolved_at = $5 WHERE tenant_id = $1 AND id = $2")
        .bind(tenant)
        .bind(hold_id)
        .bind(status)
        .bind(charge)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

/// Releases an active hold (`released`), or an overdue one (`expired`, by the worker).
pub async fn release(pool: PgPool, tenant: Uuid, hold_id: Uuid, expire: bool) -> AppResult<HoldView> {
    let now = Utc::now();
    in_transaction(&pool, move |tx| {
        Box::pin(async move {
            let (mut locked, row) = lock_hold(tx, tenant, hold_id, now).await?;
            if expire {
                if row.status != "active" || row.expires_at > now {
                    return Err(AppError::Conflict("the hold is not overdue".into()));
                }
            } else {
                // The time after the lock wait, not before it: a hold that expired meanwhile is not active.
                ensure_active(&row, Utc::now())?;
            }
            let status = if expire { "expired" } else { "released" };
            let drafts = release_drafts(tx, tenant, hold_id, &row.funding(), status, now).await?;
            ledger::post(tx, &mut locked, &drafts).await?;
            resolve(tx, tenant, hold_id, status, None, now).await?;
            if expire {
                let data = json!({
                    "hold_id": hold_id,
                    "amount": Money::from_db(row.amount),
                    "currency": locked.currency,
                    "expires_at": row.expires_at,
                });
                super::events::emit(tx, tenant, super::events::EventType::HoldExpired, data).await?;
            }
            let currency = locked.currency.clone();
            let mut row = row;
            row.status = status.into();
            row.resolved_at = Some(now);
            Ok(row.view(&currency, None))
        })
    })
    .await
}

/// Overdue holds, for the expiry worker.
pub async fn overdue(pool: &PgPool, limit: i64) -> AppResult<Vec<(Uuid, Uuid)>> {
    Ok(sqlx::query_as("SELECT tenant_id, id FROM holds WHERE status = 'active' AND expires_at <= now() LIMIT $1")
        .bind(limit)
        .fetch_all(pool)
        .await?)
}
