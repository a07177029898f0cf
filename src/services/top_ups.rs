//! Manual top-ups (`POST …/top-ups`), and the top-up views, list and reads.
//!
//! A manual top-up with an `Idempotency-Key` stores its response only with its final
//! outcome (201, or 402 for a declined card), in the transaction that records it; a 503 is
//! not stored. A retry with the same key therefore either replays that outcome or finds the
//! same `pending` attempt and re-drives it with the same provider key: the card is never
//! charged twice for one key. While a call for that attempt is in progress, a retry gets
//! 409 `request_in_progress` rather than a second call.
//!
//! A pending attempt that may have charged the card (a call timed out or its caller died:
//! `outcome_unknown`, see `top_up_attempts`) stays the key's attempt until the provider
//! gives its final answer: the sweep keeps re-driving it with its provider key and stores
//! that answer under the client's key, so a retry replays it (or, still pending, re-drives
//! the same attempt). Only an attempt the provider never processed may be closed as
//! abandoned, after which the same key starts a new attempt.

use std::sync::Arc;

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use super::balance::BalanceSummary;
use super::payment_methods;
use super::top_up_attempts::{self as attempts, NewAttempt, Settled};
use super::{Page, PageParams};
use crate::config::Config;
use crate::error::{AppError, AppResult};
use crate::idempotency::{self, Fingerprint, IdempotencyKey, Stored};
use crate::money::Money;
use crate::state::App;

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopUpRequest {
    pub amount: Money,
}

/// A `top_ups` row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TopUpRow {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub source: String,
    pub status: String,
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
    pub fingerprint: Option<Vec<u8>>,
    pub actor: String,
    pub attempts: i32,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

pub const COLUMNS: &str =
    "tenant_id, id, source, status, amount, bonus_amount, bonus_expires_at, currency, payment_token, \
     card_brand, card_last4, provider_key, provider_ref, error, idempotency_key, fingerprint, actor, attempts, \
     last_attempt_at, created_at, completed_at";

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CardView {
    pub brand: String,
    pub last4: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TopUpView {
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    /// `manual` or `auto`.
    pub source: String,
    pub amount: Money,
    pub bonus_amount: Money,
    pub bonus_expires_at: Option<DateTime<Utc>>,
    pub currency: String,
    pub payment_method: CardView,
    pub provider_ref: Option<String>,
    pub error: Option<String>,
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

enum Start {
    Replay(Stored),
    Run(Box<TopUpRow>),
}

pub async fn create(
    app: Arc<App>,
    tenant: Uuid,
    key: IdempotencyKey,
    req: TopUpRequest,
    actor: String,
) -> AppResult<Stored> {
    let fp = idempotency::fingerprint("top_up", &req);
    let row = match start(&app, tenant, &key, &fp, &req, &actor).await? {
        Start::Replay(stored) => return Ok(stored),
        Start::Run(row) => *row,
    };
    let id = row.id;
    match attempts::run(&app, row).await? {
        Settled::Succeeded { stored: Some(s), .. } | Settled::Declined { stored: Some(s), .. } => Ok(s),
        Settled::Succeeded { view, stored: None } => created(&view),
        Settled::Declined { view, reason, stored: None } => Err(attempts::declined_error(&view, &reason)),
        Settled::NoAnswer => Err(AppError::PaymentProviderUnavailable),
        Settled::AlreadySettled => settled_elsewhere(&app.pool, tenant, id, &key, &fp).await,
    }
}

fn created(view: &TopUpView) -> AppResult<Stored> {
    Ok(Stored {
        status: StatusCode::CREATED,
        body: serde_json::to_vec(view).map_err(AppError::internal)?,
        replayed: false,
    })
}

/// Commits the attempt to make (a new one, or this key's pending one), or a replay.
async fn start(
    app: &App,
    tenant: Uuid,
    key: &IdempotencyKey,
    fp: &Fingerprint,
    req: &TopUpRequest,
    actor: &str,
) -> AppResult<Start> {
    let mut tx = app.pool.begin().await?;
    let decided = decide(&mut tx, app, tenant, key, fp, req, actor).await;
    // Ended here, not left to the dropped transaction: the key's advisory lock must be free
    // when this answer reaches the client, or its next request would see 409.
    match decided {
        Ok(run @ Start::Run(_)) => {
            tx.commit().await?;
            Ok(run)
        }
        other => {
            tx.rollback().await?;
            other
        }
    }
}

/// The part of [`start`] inside its transaction.
async fn decide(
    tx: &mut sqlx::PgConnection,
    app: &App,
    tenant: Uuid,
    key: &IdempotencyKey,
    fp: &Fingerprint,
    req: &TopUpRequest,
    actor: &str,
) -> AppResult<Start> {
    // Holds this key's advisory lock until the transaction ends: attempts for one key start
    // one at a time.
    if let Some(replay) = idempotency::begin(&mut *tx, tenant, key, fp).await? {
        return Ok(Start::Replay(replay));
    }
    let pending: Option<TopUpRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM top_ups WHERE tenant_id = $1 AND idempotency_key = $2 AND status = 'pending' FOR UPDATE"
    ))
    .bind(tenant)
    .bind(&key.0)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(row) = pending {
        if row.fingerprint.as_deref() != Some(&fp[..]) {
            return Err(AppError::IdempotencyKeyReused);
        }
        let claimed = attempts::claim(&mut *tx, tenant, row.id, attempts::lease(app))
            .await?
            .ok_or(AppError::RequestInProgress)?;
        return Ok(Start::Run(Box::new(claimed)));
    }
    // An outcome may have been committed after `begin` read the keys: look again.
    if let Some(replay) = replay_in(&mut *tx, tenant, key, fp).await? {
        return Ok(Start::Replay(replay));
    }
    let currency: String = sqlx::query_scalar("SELECT currency FROM tenants WHERE id = $1")
        .bind(tenant)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(AppError::NotFound)?;
    check_amount(&app.config, req.amount)?;
    let card = payment_methods::card(&mut *tx, tenant).await?.ok_or_else(|| {
        AppError::unprocessable("no payment method on file: set one with PUT /v1/tenants/{tenant_id}/payment-method")
    })?;
    let new = NewAttempt {
        tenant,
        source: "manual",
        amount: req.amount,
        bonus: bonus_for(&app.config, req.amount)?,
        currency: &currency,
        card: &card,
        idempotency: Some((key, fp)),
        actor,
    };
    let row = attempts::insert(&mut *tx, new, attempts::lease(app))
        .await?
        .ok_or_else(|| AppError::internal("top-up insert conflicted"))?;
    Ok(Start::Run(Box::new(row)))
}

async fn replay_in(
    conn: &mut sqlx::PgConnection,
    tenant: Uuid,
    key: &IdempotencyKey,
    fp: &Fingerprint,
) -> AppResult<Option<Stored>> {
    let found: Option<(Vec<u8>, i16, Vec<u8>)> =
        sqlx::query_as("SELECT fingerprint, status, body FROM idempotency_keys WHERE tenant_id = $1 AND key = $2")
            .bind(tenant)
            .bind(&key.0)
            .fetch_optional(conn)
            .await?;
    idempotency::replay_or_refuse(found, fp)
}

/// The answer when another caller (the sweep, a concurrent retry) recorded the outcome:
/// the response it stored under the key, or else the outcome itself.
async fn settled_elsewhere(
    pool: &PgPool,
    tenant: Uuid,
    id: Uuid,
    key: &IdempotencyKey,
    fp: &Fingerprint,
) -> AppResult<Stored> {
    let mut conn = pool.acquire().await?;
    if let Some(stored) = replay_in(&mut conn, tenant, key, fp).await? {
        return Ok(stored);
    }
    let view = TopUpView::from(row(pool, tenant, id).await?);
    match view.status.as_str() {
        "succeeded" => created(&view),
        "failed" => {
            let reason = view.error.clone().unwrap_or_default();
            Err(attempts::declined_error(&view, &reason))
        }
        _ => Err(AppError::PaymentProviderUnavailable),
    }
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
