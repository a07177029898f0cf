//! Manual top-ups (`POST …/top-ups`).
//!
//! A manual top-up with an `Idempotency-Key` stores its response only with its final
//! outcome (201, or 402 for a declined card), in the transaction that records it; a 503 is
//! not stored. A retry with the same key therefore either replays that outcome or finds the
//! same `pending` attempt and re-drives it with the same provider key: the card is never
//! charged twice for one key. While a call for that attempt is in progress, a retry gets
//! 409 `request_in_progress` rather than a second call.
//!
//! A pending attempt stays the key's attempt until the provider gives its final answer
//! (see `attempts`: no attempt is ever closed without one), and that answer is stored under
//! the client's key, so a retry replays it, or, still pending, re-drives the same attempt.
//! A client's key never leads to a second provider key while the first may have charged.
//!
//! A suspended tenant starts no new top-up (403); an attempt already pending may still be
//! driven to its outcome, since its card may already have been charged.

use axum::http::StatusCode;
use sqlx::PgConnection;
use uuid::Uuid;

use super::attempts::{self, NewAttempt, Settled};
use super::payment_methods;
use super::records::{self, TopUpRow, TopUpView, COLUMNS};
use super::MoneyIn;
use crate::error::{AppError, AppResult};
use crate::frame::{Books, Movement, Response};
use crate::idempotency::{self, Claim, Claimed, IdempotencyKey, Side, Stored};
use crate::money::Money;
use crate::vocab::{TenantStatus, TopUpSource, TopUpStatus};

#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopUpRequest {
    #[schema(schema_with = crate::money::Money::positive_schema)]
    pub amount: Money,
}

pub async fn create(
    mi: &MoneyIn,
    tenant: Uuid,
    (side, key): (Side, IdempotencyKey),
    req: TopUpRequest,
    actor: String,
) -> AppResult<Stored> {
    let claim = Claim { tenant, side, key, fp: idempotency::fingerprint("top_up", &req) };
    let start = Start { claim: claim.clone(), amount: req.amount, actor, mi: mi.clone(), begun: None };
    let row = match mi.frame.run(start).await? {
        Begun::Replay(stored) => return Ok(stored),
        Begun::Run(row) => *row,
    };
    let id = row.id;
    match attempts::run(mi, row).await? {
        Settled::Succeeded { stored: Some(s), .. } | Settled::Declined { stored: Some(s), .. } => Ok(s),
        Settled::Succeeded { view, stored: None } => idempotency::json(StatusCode::CREATED, &view),
        Settled::Declined { view, reason, stored: None } => Err(attempts::declined_error(&view, &reason)),
        Settled::NoAnswer => Err(AppError::PaymentProviderUnavailable),
        Settled::AlreadySettled => settled_elsewhere(mi, &claim, id).await,
    }
}

enum Begun {
    Replay(Stored),
    Run(Box<TopUpRow>),
}

/// Commits the attempt to make (a new one, or this key's pending one), or finds a replay.
/// The key's advisory lock is held until it commits: attempts for one key start one at a
/// time.
struct Start {
    claim: Claim,
    amount: Money,
    actor: String,
    mi: MoneyIn,
    begun: Option<Begun>,
}

impl Movement for Start {
    type Output = Begun;

    fn claims(&self) -> Vec<&Claim> {
        vec![&self.claim]
    }

    fn claimed(&mut self, results: Vec<Claimed>) -> AppResult<bool> {
        if let Some(replay) = results.into_iter().next().transpose()?.flatten() {
            self.begun = Some(Begun::Replay(replay));
        }
        Ok(self.begun.is_none())
    }

    async fn decide(&mut self, tx: &mut PgConnection, _books: &mut Books) -> AppResult<()> {
        let (c, lease) = (&self.claim, attempts::lease(&self.mi.config));
        let pending: Option<TopUpRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM top_ups WHERE tenant_id = $1 AND idempotency_key = $2 AND idempotency_side = $3 \
               AND status = 'pending' FOR UPDATE"
        ))
        .bind(c.tenant)
        .bind(&c.key.0)
        .bind(c.side)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = pending {
            if row.fingerprint.as_deref() != Some(&c.fp[..]) {
                return Err(AppError::IdempotencyKeyReused);
            }
            let claimed = attempts::claim(tx, c.tenant, row.id, lease).await?.ok_or(AppError::RequestInProgress)?;
            self.begun = Some(Begun::Run(Box::new(claimed)));
            return Ok(());
        }
        // An outcome may have been committed after the claim read the keys: look again.
        if let Some(replay) = idempotency::stored(tx, c).await?? {
            self.begun = Some(Begun::Replay(replay));
            return Ok(());
        }
        let (currency, status): (String, TenantStatus) =
            sqlx::query_as("SELECT currency, status FROM tenants WHERE id = $1")
                .bind(c.tenant)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(AppError::NotFound)?;
        if status == TenantStatus::Suspended {
            return Err(AppError::Forbidden("the tenant is suspended".into()));
        }
        let config = &self.mi.config;
        records::check_amount(config, self.amount)?;
        self.mi.provider.check_amount(self.amount, &currency).map_err(AppError::invalid)?;
        let card = payment_methods::card(tx, c.tenant).await?.ok_or_else(|| {
            AppError::unprocessable(
                "no payment method on file: set one with PUT /v1/tenants/{tenant_id}/payment-method",
            )
        })?;
        let new = NewAttempt {
            tenant: c.tenant,
            source: TopUpSource::Manual,
            amount: self.amount,
            bonus: records::bonus_for(config, self.amount)?,
            currency: &currency,
            card: &card,
            claim: Some(c),
            actor: &self.actor,
        };
        let row =
            attempts::insert(tx, new, lease).await?.ok_or_else(|| AppError::internal("top-up insert conflicted"))?;
        self.begun = Some(Begun::Run(Box::new(row)));
        Ok(())
    }

    fn finish(self, _: Vec<Response>) -> AppResult<Begun> {
        self.begun.ok_or_else(|| AppError::internal("top-up not started"))
    }
}

/// The answer when another caller (the sweep, a concurrent retry) recorded the outcome:
/// the response it stored under the key, or else the outcome itself.
async fn settled_elsewhere(mi: &MoneyIn, claim: &Claim, id: Uuid) -> AppResult<Stored> {
    let mut conn = mi.frame.pool.acquire().await?;
    if let Some(stored) = idempotency::stored(&mut conn, claim).await?? {
        return Ok(stored);
    }
    let view = TopUpView::from(records::row(&mi.frame.pool, claim.tenant, id).await?);
    match view.status {
        TopUpStatus::Succeeded => idempotency::json(StatusCode::CREATED, &view),
        TopUpStatus::Failed => {
            let reason = view.error.clone().unwrap_or_default();
            Err(attempts::declined_error(&view, &reason))
        }
        TopUpStatus::Pending => Err(AppError::PaymentProviderUnavailable),
    }
}
