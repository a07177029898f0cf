//! Refunds: money back to the lots and paid credit a charge came from, never more than
//! the charge in total. One posting-frame movement, decided under the tenant's ledger
//! lock, so concurrent refunds of one charge cannot together exceed it. A refund gives
//! back to the spend limits' windows the charge counted in, if they are still current.

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::frame::{Books, Frame, Movement, OneKey, Response, Staged};
use crate::idempotency::{self, Claim, Claimed, IdempotencyKey, Side, Stored};
use crate::ids::new_id;
use crate::ledger::{self, Account, BalanceSummary, Draft, Funding, LotPart, TxnKind};
use crate::money::Money;
use crate::services::limits::store as limits;

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundRequest {
    /// Default: what is left of the charge.
    #[schema(schema_with = crate::money::Money::positive_or_null_schema)]
    pub amount: Option<Money>,
    #[schema(min_length = 1, max_length = 1000, pattern = r"\S")]
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
    frame: &Frame,
    tenant: Uuid,
    charge_id: Uuid,
    (side, key): (Side, IdempotencyKey),
    req: RefundRequest,
    actor: String,
) -> AppResult<Stored> {
    let reason = req.reason.trim().to_string();
    if reason.is_empty() || reason.chars().count() > 1000 {
        return Err(AppError::invalid("reason is required (1-1000 characters)"));
    }
    if req.amount.is_some_and(|a| !a.is_positive()) {
        return Err(AppError::invalid("amount must be positive"));
    }
    let fp = idempotency::fingerprint(&format!("refund:{charge_id}"), &req);
    let claim = Claim { tenant, side, key, fp };
    frame.run(Refund { key: OneKey::new(claim), charge_id, amount: req.amount, reason, actor, decided: None }).await
}

struct Refund {
    key: OneKey,
    charge_id: Uuid,
    amount: Option<Money>,
    reason: String,
    actor: String,
    decided: Option<Decided>,
}

struct Decided {
    id: Uuid,
    amount: Money,
    back: Funding,
    expired: Money,
    /// The refund, then the expiry of what went back to expired lots (if any).
    staged: Vec<Staged>,
}

/// What is left to refund of a charge: its funding less the refunds before.
async fn refundable(conn: &mut PgConnection, tenant: Uuid, charge_id: Uuid) -> AppResult<(Funding, Funding)> {
    let charge: Option<(Decimal, Json<Vec<LotPart>>)> =
        sqlx::query_as("SELECT funded_paid, lots FROM charges WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(charge_id)
            .fetch_optional(&mut *conn)
            .await?;
    let (paid, lots) = charge.ok_or(AppError::NotFound)?;
    let charged = Funding { lots: lots.0, paid: Money::from_db(paid) };
    let earlier: Vec<(Decimal, Json<Vec<LotPart>>)> =
        sqlx::query_as("SELECT to_paid, lots FROM refunds WHERE tenant_id = $1 AND charge_id = $2")
            .bind(tenant)
            .bind(charge_id)
            .fetch_all(conn)
            .await?;
    let earlier: Vec<Funding> =
        earlier.into_iter().map(|(p, l)| Funding { lots: l.0, paid: Money::from_db(p) }).collect();
    let left = charged.minus(&earlier);
    Ok((charged, left))
}

impl Movement for Refund {
    type Output = Stored;

    fn tenants(&self) -> Vec<Uuid> {
        vec![self.key.claim.tenant]
    }
    fn claims(&self) -> Vec<&Claim> {
        self.key.claims()
    }
    fn claimed(&mut self, results: Vec<Claimed>) -> AppResult<bool> {
        self.key.claimed(results)
    }

    async fn decide(&mut self, tx: &mut PgConnection, books: &mut Books) -> AppResult<()> {
        let (tenant, now) = (self.key.claim.tenant, books.now);
        books.locked(tenant)?;
        let (charged, left) = refundable(tx, tenant, self.charge_id).await?;
        let refundable = left.total();
        let amount = self.amount.unwrap_or(refundable);
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
        let id = new_id();
        let reference =
            json!({ "refund_id": id, "charge_id": self.charge_id, "reason": self.reason, "actor": self.actor });
        let draft = Draft::new(TxnKind::Refund, now)
            .description(Some(self.reason.clone()))
            .reference(reference)
            .actor(&self.actor)
            .entry(Account::Revenue, -amount);
        let (draft, expiry) = ledger::give_back(tx, tenant, draft, &back, now).await?;
        let expired = match &expiry {
            None => Money::ZERO,
            Some(e) => Money::checked_sum(e.entries.iter().filter(|x| x.account == Account::Expired).map(|x| x.amount))
                .ok_or_else(|| AppError::internal("expiry sum overflow"))?,
        };
        let staged = std::iter::once(draft).chain(expiry).map(|d| books.stage(tenant, d)).collect::<AppResult<_>>()?;
        let (api_key, counted_at) = limits::charge_counted(tx, tenant, self.charge_id).await?;
        limits::give_back(tx, tenant, api_key, counted_at, amount, now).await?;
        self.decided = Some(Decided { id, amount, back, expired, staged });
        Ok(())
    }

    async fn write(&mut self, tx: &mut PgConnection, books: &Books) -> AppResult<Vec<Response>> {
        let d = self.decided.as_ref().ok_or_else(|| AppError::internal("refund not decided"))?;
        let tenant = self.key.claim.tenant;
        let (first, last) = match (d.staged.first(), d.staged.last()) {
            (Some(f), Some(l)) => (*f, *l),
            _ => return Err(AppError::internal("refund not staged")),
        };
        let created_at = books.draft(first).created_at;
        sqlx::query(
            "INSERT INTO refunds (tenant_id, id, charge_id, transaction_id, amount, to_bonus, to_paid, lots, reason, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(tenant)
        .bind(d.id)
        .bind(self.charge_id)
        .bind(books.draft(first).id)
        .bind(d.amount.as_decimal())
        .bind(d.back.bonus().as_decimal())
        .bind(d.back.paid.as_decimal())
        .bind(Json(&d.back.lots))
        .bind(&self.reason)
        .bind(created_at)
        .execute(&mut *tx)
        .await?;
        let view = RefundView {
            id: d.id,
            charge_id: self.charge_id,
            tenant_id: tenant,
            amount: d.amount,
            currency: books.locked(tenant)?.currency.clone(),
            reason: self.reason.clone(),
            to_bonus: d.back.bonus(),
            to_paid: d.back.paid,
            expired: d.expired,
            balance: books.posted(last)?.after,
            created_at,
        };
        OneKey::respond(StatusCode::CREATED, &view)
    }
    fn finish(self, stored: Vec<Response>) -> AppResult<Stored> {
        self.key.finish(stored)
    }
}
