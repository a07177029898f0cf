//! Admin adjustments (gifts, referrals, compensations, paid-credit corrections) and
//! conversions of legacy credits, each idempotent and recorded with the acting credential.
//! Each is one posting-frame movement whose decision is a pure function of the locked
//! ledger ([`PostOne`]): a negative correction lowers `available` like any spend, so the
//! frame emits `balance.low` and wakes auto top-up for it too.

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::history::TransactionView;
use crate::error::{AppError, AppResult};
use crate::frame::{Books, Frame, Movement, OneKey, Response, Staged};
use crate::idempotency::{self, Claim, Claimed, IdempotencyKey, Side, Stored};
use crate::ledger::{Account, Draft, Locked, TxnKind};
use crate::money::Money;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AdjustmentKind {
    Gift,
    Referral,
    Compensation,
    Adjustment,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustmentRequest {
    /// Positive for bonus kinds; `adjustment` may be negative (`"-5.00"`).
    pub amount: Money,
    pub kind: AdjustmentKind,
    #[schema(min_length = 1, max_length = 1000, pattern = r"\S")]
    pub reason: String,
    /// Bonus kinds only: when the granted lot expires.
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConversionRequest {
    /// Legacy credits, a decimal string.
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "1500", pattern = r"^[0-9]{1,20}(\.[0-9]{1,12})?$")]
    pub credits: Decimal,
}

/// The draft for an adjustment, decided under the tenant's lock.
fn adjustment_draft(req: &AdjustmentRequest, paid: Money, actor: &str, now: DateTime<Utc>) -> AppResult<Draft> {
    let reason = req.reason.trim();
    if reason.is_empty() || reason.chars().count() > 1000 {
        return Err(AppError::invalid("reason is required (1-1000 characters)"));
    }
    let reference = json!({ "reason": reason, "actor": actor });
    let base =
        |kind| Draft::new(kind, now).description(Some(reason.to_string())).reference(reference.clone()).actor(actor);
    match req.kind {
        AdjustmentKind::Adjustment => {
            if req.expires_at.is_some() {
                return Err(AppError::invalid("expires_at applies to bonus credit only; paid credit never expires"));
            }
            if req.amount.is_zero() {
                return Err(AppError::invalid("amount must not be zero"));
            }
            if req.amount.is_negative() && req.amount.abs() > paid {
                return Err(AppError::unprocessable(format!(
                    "a correction of {} would take paid credit ({paid}) below zero",
                    req.amount
                )));
            }
            Ok(base(TxnKind::Adjustment).entry(Account::Paid, req.amount).entry(Account::Adjustments, -req.amount))
        }
        bonus_kind => {
            if !req.amount.is_positive() {
                return Err(AppError::invalid("amount must be positive"));
            }
            if req.expires_at.is_some_and(|e| e <= now) {
                return Err(AppError::invalid("expires_at must be in the future"));
            }
            let kind = match bonus_kind {
                AdjustmentKind::Gift => TxnKind::Gift,
                AdjustmentKind::Referral => TxnKind::Referral,
                _ => TxnKind::Compensation,
            };
            Ok(base(kind).grant_lot(Account::Promotions, kind, req.amount, req.expires_at))
        }
    }
}

pub async fn adjust(
    frame: &Frame,
    tenant_id: Uuid,
    (side, key): (Side, IdempotencyKey),
    req: AdjustmentRequest,
    actor: String,
) -> AppResult<Stored> {
    let claim = Claim { tenant: tenant_id, side, key, fp: idempotency::fingerprint("adjustment", &req) };
    frame.run(PostOne::new(claim, move |locked, now| adjustment_draft(&req, locked.funds.paid, &actor, now))).await
}

pub async fn convert(
    frame: &Frame,
    tenant_id: Uuid,
    (side, key): (Side, IdempotencyKey),
    req: ConversionRequest,
    credits_per_usd: Decimal,
    actor: String,
) -> AppResult<Stored> {
    if req.credits <= Decimal::ZERO {
        return Err(AppError::invalid("credits must be positive"));
    }
    let dollars = req.credits.checked_div(credits_per_usd).ok_or_else(|| AppError::invalid("credits out of range"))?;
    // Refused, not rounded: a conversion that does not land on a micro-dollar is an input error.
    let amount = Money::from_decimal(dollars).map_err(|_| {
        AppError::invalid(format!(
            "{} credits at {credits_per_usd} per USD is not a whole number of micro-dollars",
            req.credits
        ))
    })?;
    let claim = Claim { tenant: tenant_id, side, key, fp: idempotency::fingerprint("credit_conversion", &req) };
    let credits = req.credits.normalize();
    frame
        .run(PostOne::new(claim, move |_, now| {
            Ok(Draft::new(TxnKind::Conversion, now)
                .description(Some(format!("Converted {credits} legacy credits")))
                .reference(json!({ "credits": credits.to_string(), "credits_per_usd": credits_per_usd.to_string(), "actor": actor }))
                .actor(&actor)
                .entry(Account::Paid, amount)
                .entry(Account::Conversion, -amount))
        }))
        .await
}

/// A movement of one idempotent ledger transaction, decided by `decide` (pure) under the
/// tenant's lock; the response is the transaction as the tenant sees it.
struct PostOne<F> {
    key: OneKey,
    decide: Option<F>,
    staged: Option<Staged>,
}

impl<F> PostOne<F>
where
    F: FnOnce(&Locked, DateTime<Utc>) -> AppResult<Draft>,
{
    fn new(claim: Claim, decide: F) -> PostOne<F> {
        PostOne { key: OneKey::new(claim), decide: Some(decide), staged: None }
    }
}

impl<F> Movement for PostOne<F>
where
    F: FnOnce(&Locked, DateTime<Utc>) -> AppResult<Draft> + Send + 'static,
{
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

    async fn decide(&mut self, _tx: &mut PgConnection, books: &mut Books) -> AppResult<()> {
        let decide = self.decide.take().ok_or_else(|| AppError::internal("decided twice"))?;
        let tenant = self.key.claim.tenant;
        let draft = decide(books.locked(tenant)?, books.now)?;
        self.staged = Some(books.stage(tenant, draft)?);
        Ok(())
    }

    async fn write(&mut self, _tx: &mut PgConnection, books: &Books) -> AppResult<Vec<Response>> {
        let staged = self.staged.ok_or_else(|| AppError::internal("nothing staged"))?;
        let view = TransactionView::from_draft(books.draft(staged), books.posted(staged)?.after.total)?;
        OneKey::respond(StatusCode::CREATED, &view)
    }
    fn finish(self, stored: Vec<Response>) -> AppResult<Stored> {
        self.key.finish(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(amount: &str, kind: AdjustmentKind) -> AdjustmentRequest {
        AdjustmentRequest { amount: amount.parse().unwrap(), kind, reason: "ticket 42".into(), expires_at: None }
    }

    #[test]
    fn negative_correction_never_below_zero() {
        let paid: Money = "5".parse().unwrap();
        let now = Utc::now();
        assert!(adjustment_draft(&req("-5", AdjustmentKind::Adjustment), paid, "admin", now).is_ok());
        let e = adjustment_draft(&req("-5.000001", AdjustmentKind::Adjustment), paid, "admin", now).unwrap_err();
        assert_eq!(e.code(), "unprocessable");
        assert_eq!(
            adjustment_draft(&req("-1", AdjustmentKind::Gift), paid, "admin", now).unwrap_err().code(),
            "invalid_request"
        );
        let mut no_reason = req("1", AdjustmentKind::Gift);
        no_reason.reason = "  ".into();
        assert!(adjustment_draft(&no_reason, paid, "admin", now).is_err());
    }

    #[test]
    fn gifts_are_new_lots() {
        let d = adjustment_draft(&req("2.5", AdjustmentKind::Gift), Money::ZERO, "admin", Utc::now()).unwrap();
        assert_eq!(d.new_lots.len(), 1);
        assert_eq!(d.tenant_delta(), "2.5".parse().unwrap());
    }
}
