//! Top-up refunds asked for through Tally (`POST …/top-ups/{id}/refunds`, admin).
//!
//! The flow is a top-up attempt's, in reverse:
//! 1. under the tenant's ledger lock, the refund is decided (never more than what is left of
//!    the top-up, its bonus share fixed) and committed as a `pending` row with its provider
//!    key and a lease — or the key's pending refund is taken up again, or its stored answer
//!    replayed;
//! 2. the provider refunds the payment with that key (no lock held);
//! 3. its answer is recorded: accepted → the clawback ([`clawback`]), the event and the 201
//!    stored under the client's key, in one transaction; declined → the row fails and the
//!    402 is stored, nothing is taken back; no answer → the row stays pending, the client
//!    gets 503 and its retry (or the sweep) calls the provider again with the same key.
//!
//! A refund is never closed without the provider's final answer: an unknown answer may
//! hide a refund already made. The clawback happens after the provider accepted, so a
//! refund the provider declines takes nothing back; credit spent in between is shortfall.

use std::time::Duration;

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::clawback::{self, NewRefund, Plan, RefundKind, RefundOrigin, RefundRow, RefundView, COLUMNS};
use super::MoneyIn;
use crate::error::{AppError, AppResult};
use crate::frame::{Books, Movement, Response, Staged};
use crate::idempotency::{self, Claim, Claimed, IdempotencyKey, Side, Stored};
use crate::money::Money;
use crate::payments::{self, ChargeOutcome, RefundRequest};
use crate::vocab::TopUpStatus;

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopUpRefundRequest {
    /// What goes back to the card. Default: what is left of the top-up.
    pub amount: Option<Money>,
    pub reason: String,
}

pub async fn create(
    mi: &MoneyIn,
    tenant: Uuid,
    top_up: Uuid,
    (side, key): (Side, IdempotencyKey),
    req: TopUpRefundRequest,
    actor: String,
) -> AppResult<Stored> {
    let reason = req.reason.trim().to_string();
    if reason.is_empty() || reason.len() > 1000 {
        return Err(AppError::invalid("reason is required (1-1000 characters)"));
    }
    if let Some(amount) = req.amount {
        if !amount.is_positive() {
            return Err(AppError::invalid("amount must be positive"));
        }
    }
    let fp = idempotency::fingerprint(&format!("top_up_refund:{top_up}"), &req);
    let claim = Claim { tenant, side, key, fp };
    let start = Start { claim: claim.clone(), top_up, amount: req.amount, reason, actor, mi: mi.clone(), begun: None };
    let row = match mi.frame.run(start).await? {
        Begun::Replay(stored) => return Ok(stored),
        Begun::Run(row) => *row,
    };
    let id = row.id;
    match run(mi, row).await? {
        Settled::Done { stored: Some(s), .. } | Settled::Declined { stored: Some(s), .. } => Ok(s),
        Settled::Done { view, stored: None } => idempotency::json(StatusCode::CREATED, &view),
        Settled::Declined { view, stored: None } => Err(declined_error(&view)),
        Settled::NoAnswer => Err(AppError::PaymentProviderUnavailable),
        Settled::AlreadySettled => settled_elsewhere(mi, &claim, tenant, id).await,
    }
}

enum Begun {
    Replay(Stored),
    Run(Box<RefundRow>),
}

/// Step 1: commits the refund to make (a new one, or this key's pending one), or finds a
/// replay. The key's advisory lock is held until it commits.
struct Start {
    claim: Claim,
    top_up: Uuid,
    amount: Option<Money>,
    reason: String,
    actor: String,
    mi: MoneyIn,
    begun: Option<Begun>,
}

impl Movement for Start {
    type Output = Begun;

    fn tenants(&self) -> Vec<Uuid> {
        vec![self.claim.tenant]
    }

    fn claims(&self) -> Vec<&Claim> {
        vec![&self.claim]
    }

    fn claimed(&mut self, results: Vec<Claimed>) -> AppResult<bool> {
        if let Some(replay) = results.into_iter().next().transpose()?.flatten() {
            self.begun = Some(Begun::Replay(replay));
        }
        Ok(self.begun.is_none())
    }

    async fn decide(&mut self, tx: &mut PgConnection, books: &mut Books) -> AppResult<()> {
        let c = &self.claim;
        books.locked(c.tenant)?;
        let lease = lease(&self.mi);
        let pending: Option<RefundRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM top_up_refunds WHERE tenant_id = $1 AND idempotency_key = $2 \
               AND idempotency_side = $3 AND status = 'pending' FOR UPDATE"
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
            let claimed = claim(tx, c.tenant, row.id, lease).await?.ok_or(AppError::RequestInProgress)?;
            self.begun = Some(Begun::Run(Box::new(claimed)));
            return Ok(());
        }
        let r = clawback::refundable(tx, c.tenant, self.top_up, None).await?;
        if r.status != TopUpStatus::Succeeded {
            return Err(AppError::Conflict(format!(
                "only a succeeded top-up can be refunded; this one is {}",
                r.status
            )));
        }
        let left = r.left();
        let amount = match self.amount {
            Some(a) => a,
            None if left.is_zero() => return Err(AppError::Conflict("the top-up is already fully refunded".into())),
            None => left,
        };
        if amount > left {
            return Err(AppError::unprocessable(format!(
                "cannot refund {amount}: {left} of the top-up's {} is left to refund",
                r.amount
            )));
        }
        self.mi.provider.check_amount(amount, &r.currency).map_err(AppError::invalid)?;
        if r.provider_ref.is_none() {
            return Err(AppError::internal("a succeeded top-up without its provider payment"));
        }
        let new = NewRefund {
            tenant: c.tenant,
            top_up: self.top_up,
            kind: RefundKind::Refund,
            origin: RefundOrigin::Tally,
            amount,
            share: r.share_of(amount)?,
            currency: &r.currency,
            reason: &self.reason,
            provider_ref: None,
            claim: Some(c),
            actor: &self.actor,
            lease: Some(lease),
        };
        let row = clawback::insert(tx, new).await?.ok_or_else(|| AppError::internal("refund insert conflicted"))?;
        self.begun = Some(Begun::Run(Box::new(row)));
        Ok(())
    }

    fn finish(self, _: Vec<Response>) -> AppResult<Begun> {
        self.begun.ok_or_else(|| AppError::internal("refund not started"))
    }
}

/// A lease covers the provider call and the recording after it.
fn lease(mi: &MoneyIn) -> Duration {
    mi.config.payment_timeout * 2
}

/// Takes the lease of a pending refund whose previous call is over (or presumed dead). A
/// lease still set ran out without its call recording anything: the outcome is unknown.
pub async fn claim(conn: &mut PgConnection, tenant: Uuid, id: Uuid, lease: Duration) -> AppResult<Option<RefundRow>> {
    Ok(sqlx::query_as(&format!(
        "UPDATE top_up_refunds SET lease_until = now() + make_interval(secs => $3), \
           retry_at = now() + make_interval(secs => $3), attempts = attempts + 1, \
           outcome_unknown = outcome_unknown OR lease_until IS NOT NULL \
         WHERE tenant_id = $1 AND id = $2 AND status = 'pending' AND (lease_until IS NULL OR lease_until <= now()) \
         RETURNING {COLUMNS}"
    ))
    .bind(tenant)
    .bind(id)
    .bind(lease.as_secs_f64())
    .fetch_optional(conn)
    .await?)
}

/// How one refund call ended, as far as this caller is concerned.
#[derive(Debug)]
pub enum Settled {
    Done { view: RefundView, stored: Option<Stored> },
    Declined { view: RefundView, stored: Option<Stored> },
    NoAnswer,
    AlreadySettled,
}

/// Steps 2 and 3 for a leased pending refund, on a task of its own (a client that goes away
/// does not leave the provider's answer unrecorded).
pub async fn run(mi: &MoneyIn, row: RefundRow) -> AppResult<Settled> {
    let mi = mi.clone();
    tokio::spawn(async move { drive(&mi, row).await }).await.map_err(AppError::internal)?
}

async fn drive(mi: &MoneyIn, row: RefundRow) -> AppResult<Settled> {
    let payment_ref: Option<String> =
        sqlx::query_scalar("SELECT provider_ref FROM top_ups WHERE tenant_id = $1 AND id = $2")
            .bind(row.tenant_id)
            .bind(row.top_up_id)
            .fetch_one(&mi.frame.pool)
            .await?;
    let req = RefundRequest {
        idempotency_key: row.provider_key.clone(),
        refund_id: row.id,
        top_up_id: row.top_up_id,
        tenant_id: row.tenant_id,
        payment_ref: payment_ref.ok_or_else(|| AppError::internal("the refunded top-up has no provider payment"))?,
        amount: Money::from_db(row.amount),
        currency: row.currency.clone(),
        reason: row.reason.clone(),
        try_no: row.attempts,
    };
    let outcome = payments::refund_within(&*mi.provider, req, mi.config.payment_timeout).await;
    settle(mi, row, outcome).await
}

/// Records the provider's answer for a pending refund (from a call, or from a provider event
/// that lists the refund).
pub async fn settle(mi: &MoneyIn, row: RefundRow, outcome: ChargeOutcome) -> AppResult<Settled> {
    match outcome {
        ChargeOutcome::Succeeded { provider_ref } => {
            mi.frame.run(Accepted { row, provider_ref, taken: None, settled: None }).await
        }
        ChargeOutcome::Declined { reason, .. } => mi.frame.run(Refused { row, reason, settled: None }).await,
        ChargeOutcome::Unavailable { reason } => no_answer(mi, &row, &reason, false).await,
        ChargeOutcome::Unknown { reason } => no_answer(mi, &row, &reason, true).await,
    }
}

/// Locks the refund row if it is still pending; false when someone settled it first.
async fn lock_pending(tx: &mut PgConnection, row: &RefundRow) -> AppResult<bool> {
    let status: Option<TopUpStatus> =
        sqlx::query_scalar("SELECT status FROM top_up_refunds WHERE tenant_id = $1 AND id = $2 FOR UPDATE")
            .bind(row.tenant_id)
            .bind(row.id)
            .fetch_optional(tx)
            .await?;
    Ok(status == Some(TopUpStatus::Pending))
}

/// The provider accepted: the clawback, the row, the event and the stored 201.
struct Accepted {
    row: RefundRow,
    provider_ref: String,
    taken: Option<(Plan, Option<Staged>)>,
    settled: Option<Settled>,
}

impl Movement for Accepted {
    type Output = Settled;

    fn tenants(&self) -> Vec<Uuid> {
        vec![self.row.tenant_id]
    }

    async fn decide(&mut self, tx: &mut PgConnection, books: &mut Books) -> AppResult<()> {
        books.locked(self.row.tenant_id)?;
        if !lock_pending(tx, &self.row).await? {
            self.settled = Some(Settled::AlreadySettled);
            return Ok(());
        }
        let r = clawback::refundable(tx, self.row.tenant_id, self.row.top_up_id, Some(self.row.id)).await?;
        self.row.provider_ref = Some(self.provider_ref.clone());
        self.taken = Some(clawback::take_back(books, &self.row, r.lot)?);
        Ok(())
    }

    async fn write(&mut self, tx: &mut PgConnection, books: &Books) -> AppResult<Vec<Response>> {
        let Some((plan, staged)) = self.taken else { return Ok(Vec::new()) };
        let view = clawback::finish(tx, books, &self.row, plan, staged, Some(&self.provider_ref)).await?;
        let stored = store(tx, &self.row, idempotency::json(StatusCode::CREATED, &view)?).await?;
        self.settled = Some(Settled::Done { view, stored });
        Ok(Vec::new())
    }

    fn finish(self, _: Vec<Response>) -> AppResult<Settled> {
        self.settled.ok_or_else(|| AppError::internal("refund not recorded"))
    }
}

/// The provider declined: the row fails (its amount is free again), the 402 is stored,
/// nothing is taken back.
struct Refused {
    row: RefundRow,
    reason: String,
    settled: Option<Settled>,
}

impl Movement for Refused {
    type Output = Settled;

    async fn decide(&mut self, tx: &mut PgConnection, _books: &mut Books) -> AppResult<()> {
        if !lock_pending(tx, &self.row).await? {
            self.settled = Some(Settled::AlreadySettled);
        }
        Ok(())
    }

    async fn write(&mut self, tx: &mut PgConnection, books: &Books) -> AppResult<Vec<Response>> {
        if self.settled.is_some() {
            return Ok(Vec::new());
        }
        let done: RefundRow = sqlx::query_as(&format!(
            "UPDATE top_up_refunds SET status = 'failed', error = $3, completed_at = $4, lease_until = NULL, \
               retry_at = NULL WHERE tenant_id = $1 AND id = $2 RETURNING {COLUMNS}"
        ))
        .bind(self.row.tenant_id)
        .bind(self.row.id)
        .bind(&self.reason)
        .bind(books.now)
        .fetch_one(&mut *tx)
        .await?;
        let view = RefundView::from(done);
        let stored =
            store(tx, &self.row, idempotency::json(StatusCode::PAYMENT_REQUIRED, &declined_error(&view).body())?)
                .await?;
        self.settled = Some(Settled::Declined { view, stored });
        Ok(Vec::new())
    }

    fn finish(self, _: Vec<Response>) -> AppResult<Settled> {
        self.settled.ok_or_else(|| AppError::internal("refund decline not recorded"))
    }
}

/// The 402 a declined refund answers (and stores under its key).
pub fn declined_error(view: &RefundView) -> AppError {
    let mut extra = Map::new();
    extra.insert("refund_id".into(), Value::String(view.id.to_string()));
    extra.insert("top_up_id".into(), Value::String(view.top_up_id.to_string()));
    let reason = view.error.clone().unwrap_or_default();
    extra.insert("decline_reason".into(), Value::String(reason.clone()));
    AppError::PaymentDeclined(format!("the payment provider declined the refund: {reason}"), extra)
}

/// Stores the refund's response under its client's key, unless something is stored there
/// already (the key was claimed when the refund started; its outcome is stored only now).
async fn store(tx: &mut PgConnection, row: &RefundRow, response: Stored) -> AppResult<Option<Stored>> {
    let Some(claim) = row.claim()? else { return Ok(None) };
    if idempotency::stored(tx, &claim).await?.ok().flatten().is_some() {
        return Ok(None);
    }
    idempotency::store_all(tx, &[(&claim, &response)]).await?;
    Ok(Some(response))
}

/// No final answer: the row stays pending, its lease ends, and the sweep calls the provider
/// again with the same key after a back-off (an admin's refund stands until the provider
/// answers; the client's retry with its key may come first).
async fn no_answer(mi: &MoneyIn, row: &RefundRow, reason: &str, unknown: bool) -> AppResult<Settled> {
    let delay = super::attempts::retry_delay(mi.config.payment_retry, row.attempts);
    sqlx::query(
        "UPDATE top_up_refunds SET lease_until = NULL, error = $3, outcome_unknown = outcome_unknown OR $5, \
           retry_at = now() + make_interval(secs => $4) \
         WHERE tenant_id = $1 AND id = $2 AND status = 'pending'",
    )
    .bind(row.tenant_id)
    .bind(row.id)
    .bind(reason)
    .bind(delay.as_secs_f64())
    .bind(unknown)
    .execute(&mi.frame.pool)
    .await?;
    tracing::warn!(tenant = %row.tenant_id, refund = %row.id, attempts = row.attempts, reason, "the payment provider gave no final answer to a refund");
    Ok(Settled::NoAnswer)
}

/// The answer when another caller (the sweep, a provider event) recorded the outcome.
async fn settled_elsewhere(mi: &MoneyIn, claim: &Claim, tenant: Uuid, id: Uuid) -> AppResult<Stored> {
    let mut conn = mi.frame.pool.acquire().await?;
    if let Some(stored) = idempotency::stored(&mut conn, claim).await?? {
        return Ok(stored);
    }
    let view = RefundView::from(row(&mi.frame.pool, tenant, id).await?);
    match view.status {
        TopUpStatus::Succeeded => idempotency::json(StatusCode::CREATED, &view),
        TopUpStatus::Failed => Err(declined_error(&view)),
        TopUpStatus::Pending => Err(AppError::PaymentProviderUnavailable),
    }
}

pub async fn row(pool: &PgPool, tenant: Uuid, id: Uuid) -> AppResult<RefundRow> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM top_up_refunds WHERE tenant_id = $1 AND id = $2"))
        .bind(tenant)
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or(AppError::NotFound)
}

/// Pending refunds through Tally whose next provider call is due, oldest first.
pub async fn due(pool: &PgPool, limit: i64) -> AppResult<Vec<(Uuid, Uuid)>> {
    Ok(sqlx::query_as(
        "SELECT tenant_id, id FROM top_up_refunds WHERE status = 'pending' AND retry_at <= now() \
           AND (lease_until IS NULL OR lease_until <= now()) ORDER BY retry_at LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Re-drives one due refund (the sweep): takes its lease, calls the provider with its key.
pub async fn redrive(mi: &MoneyIn, tenant: Uuid, id: Uuid) -> AppResult<Option<Settled>> {
    let mut conn = mi.frame.pool.acquire().await?;
    let Some(row) = claim(&mut conn, tenant, id, lease(mi)).await? else { return Ok(None) };
    drop(conn);
    Ok(Some(run(mi, row).await?))
}

/// A top-up's refunds and reversals, oldest first.
pub async fn list(pool: &PgPool, tenant: Uuid, top_up: Uuid) -> AppResult<Vec<RefundView>> {
    super::records::row(pool, tenant, top_up).await?;
    list_for_top_ups(pool, tenant, &[top_up]).await
}

/// The refunds and reversals of several of the tenant's top-ups (a page of history), in
/// one read, oldest first; ids of other tenants' top-ups match nothing.
pub async fn list_for_top_ups(pool: &PgPool, tenant: Uuid, top_ups: &[Uuid]) -> AppResult<Vec<RefundView>> {
    let rows: Vec<RefundRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM top_up_refunds WHERE tenant_id = $1 AND top_up_id = ANY($2) ORDER BY id"
    ))
    .bind(tenant)
    .bind(top_ups)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(RefundView::from).collect())
}
