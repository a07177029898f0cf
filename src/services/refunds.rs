//! Refunds: money back to the lots and paid credit a charge came from, never more than
//! the charge in total. Decided under the tenant's ledger lock, so concurrent refunds of
//! one charge cannot together exceed it.

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::types::Json;
use sqlx::PgPool;
use uuid::Uuid;

use super::balance::BalanceSummary;
use super::expiry;
use super::in_transaction;
use crate::error::{AppError, AppResult};
use crate::idempotency::{self, IdempotencyKey, Stored};
use crate::ids::new_id;
use crate::ledger::{self, Account, Draft, Funding, LotPart, TxnKind};
use crate::money::Money;

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundRequest {
    /// Default: what is left of the charge.
    pub amount: Option<Money>,
    pub reason: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RefundView {
    pub id: Uuid,
    pub charge_id: Uuid,
    pub tenant_id: Uuid,
    pub amount: Money,
    pub currency: String,
    pub reason: String,
    /// Where the money went back to.
    pub to_bonus: Money,
    pub to_paid: Money,
    /// Part of `to_bonus` that went back to lots already expired, and so expired again.
    pub expired: Money,
    pub balance: BalanceSummary,
    pub created_at: DateTime<Utc>,
}

pub async fn tenant_of_charge(pool: &PgPool, charge_id: Uuid) -> AppResult<Uuid> {
    sqlx::query_scalar("SELECT tenant_id FROM charges WHERE id = $1")
        .bind(charge_id)
        .fetch_optional(pool)
        .await?
        .ok_or(AppError::NotFound)
}

pub async fn refund(
    pool: PgPool,
    tenant: Uuid,
    charge_id: Uuid,
    key: IdempotencyKey,
    req: RefundRequest,
    actor: String,
) -> AppResult<Stored> {
    let reason = req.reason.trim().to_string();
    if reason.is_empty() || reason.len() > 1000 {
        return Err(AppError::invalid("reason is required (1-1000 characters)"));
    }
    if req.amount.is_some_and(|a| !a.is_positive()) {
        return Err(AppError::invalid("amount must be positive"));
    }
    let fp = idempotency::fingerprint(&format!("refund:{charge_id}"), &req);
    let now = Utc::now();
    in_transaction(&pool, move |tx| {
        Box::pin(async move {
            if let Some(replay) = idempotency::begin(tx, tenant, &key, &fp).await? {
                return Ok(replay);
            }
            let mut locked = expiry::lock(tx, tenant, now).await?.ok_or(AppError::NotFound)?;
            let charge: Option<(Decimal, Decimal, Json<Vec<LotPart>>)> =
                sqlx::query_as("SELECT amount, funded_paid, lots FROM charges WHERE tenant_id = $1 AND id = $2")
                    .bind(tenant)
                    .bind(charge_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let (_, paid, lots) = charge.ok_or(AppError::NotFound)?;
            let charged = Funding { lots: lots.0, paid: Money::from_db(paid) };
            let earlier: Vec<(Decimal, Json<Vec<LotPart>>)> =
                sqlx::query_as("SELECT to_paid, lots FROM refunds WHERE tenant_id = $1 AND charge_id = $2")
                    .bind(tenant)
                    .bind(charge_id)
                    .fetch_all(&mut *tx)
                    .await?;
            let earlier: Vec<Funding> =
                earlier.into_iter().map(|(p, l)| Funding { lots: l.0, paid: Money::from_db(p) }).collect();
            let left = charged.minus(&earlier);
            let refundable = left.total();
            let amount = req.amount.unwrap_or(refundable);
            if refundable.is_zero() {
                return Err(AppError::Conflict("the charge is already fully refunded".into()));
            }
            if amount > refundable {
                return Err(AppError::unprocessable(format!(
                    "cannot refund {amount}: {refundable} of the charge's {} is left to refund",
                    charged.total()
                )));
            }
            let back = left.take_for_refund(amount);
            let refund_id = new_id();
            let draft = Draft::new(TxnKind::Refund, now)
                .description(Some(reason.clone()))
                .reference(json!({ "refund_id": refund_id, "charge_id": charge_id, "reason": reason, "actor": actor }))
                .actor(&actor)
                .entry(Account::Revenue, -amount);
            let (draft, expiry) = ledger::give_back(tx, tenant, draft, &back, now).await?;
            let expired = expiry
                .as_ref()
                .and_then(|e| Money::checked_sum(e.entries.iter().filter(|x| x.account == Account::Expired).map(|x| x.amount)))
                .unwrap_or_default();
            let drafts: Vec<Draft> = std::iter::once(draft).chain(expiry).collect();
            let posted = ledger::post(tx, &mut locked, &drafts).await?;
            let total_after = posted.last().expect("the refund").total_after;
            sqlx::query(
                "INSERT INTO refunds (tenant_id, id, charge_id, transaction_id, amount, to_bonus, to_paid, lots, reason, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(tenant)
            .bind(refund_id)
            .bind(charge_id)
            .bind(drafts[0].id)
            .bind(amount.as_decimal())
            .bind(back.bonus().as_decimal())
            .bind(back.paid.as_decimal())
            .bind(Json(&back.lots))
            .bind(&reason)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let view = RefundView {
                id: refund_id,
                charge_id,
                tenant_id: tenant,
                amount,
                currency: locked.currency.clone(),
                reason,
                to_bonus: back.bonus(),
                to_paid: back.paid,
                expired,
                balance: BalanceSummary {
                    total: total_after,
                    available: total_after.checked_sub(locked.funds.held).unwrap_or_default(),
                },
                created_at: now,
            };
            let stored = idempotency::finish_json(tx, tenant, &key, &fp, StatusCode::CREATED, &view).await?;
            Ok(stored)
        })
    })
    .await
}
