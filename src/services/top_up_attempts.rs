//! One top-up attempt, manual or automatic, from a committed `pending` row to exactly one
//! outcome.
//!
//! The flow, with no database lock or transaction held across the provider call:
//! 1. a transaction commits the `pending` row with its provider idempotency key and a
//!    lease (`lease_until`): while the lease runs, nobody else calls the provider for it;
//! 2. the provider is called with that key (at most `TALLY_PAYMENT_TIMEOUT_MS`);
//! 3. one transaction records the outcome: for a success the paid credit, the bonus lot,
//!    the row's new status, the event and (manual) the idempotent response, together.
//!
//! Exactly once: step 3 only acts on a row still `pending`, locked in its transaction, so
//! a second settlement (another replica re-driving the same row) changes nothing; and
//! every call for a row uses the same provider key, so the card is charged at most once
//! whatever the number of calls. A row left `pending` (crash, timeout, provider
//! unavailable) is re-driven with the same key: by the sweep once `retry_at` passes, or by
//! the client's retry of a manual top-up.
//!
//! Unknown outcomes are sticky. Once any call for a row may have charged the card without
//! the service learning the answer — it timed out, or its caller died and the lease ran
//! out with the row still pending ([`claim`] notices the stale lease) — the row is marked
//! `outcome_unknown` for good. From then on every call that gives no final answer
//! (`Unavailable` included) schedules another re-drive by the sweep, and
//! [`abandon_stale`] never closes the row: only the provider's final answer does
//! (`Succeeded` credits it, `Declined` fails it). Deciding this from the latest call alone
//! would let a later `Unavailable` hide an earlier possible charge: the row would be
//! closed as failed, the charge never credited, and the client's retry would charge again
//! under a new provider key. Only a manual attempt whose every call was refused by the
//! provider (which then did not process it) waits for its client and may be abandoned.
//!
//! Lock order, everywhere: the tenant's ledger lock, then its `auto_top_up` row, then the
//! `top_ups` row.

use std::time::Duration;

use axum::http::StatusCode;
use chrono::Utc;
use serde_json::{json, Map, Value};
use sqlx::PgConnection;
use uuid::Uuid;

use super::balance::BalanceSummary;
use super::events::{self, EventType};
use super::top_ups::{TopUpRow, TopUpView, COLUMNS};
use crate::error::{AppError, AppResult};
use crate::idempotency::{self, IdempotencyKey, Stored};
use crate::ledger::{self, Account, Draft, TxnKind};
use crate::money::Money;
use crate::payments::{self, Answer, ChargeOutcome, ChargeRequest};
use crate::state::App;

/// After this many declines in a row, auto top-up turns itself off.
pub const MAX_DECLINES: i32 = 3;

/// What a new attempt charges, decided by its caller.
pub struct NewAttempt<'a> {
    pub tenant: Uuid,
    pub source: &'a str,
    pub amount: Money,
    pub bonus: Money,
    pub currency: &'a str,
    pub card: &'a super::payment_methods::Card,
    pub idempotency: Option<(&'a IdempotencyKey, &'a idempotency::Fingerprint)>,
    pub actor: &'a str,
}

/// A lease covers the provider call and the recording after it.
pub fn lease(app: &App) -> Duration {
    app.config.payment_timeout * 2
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Inserts a new attempt, already leased, in the caller's transaction. `None`: a unique
/// index refused it (an automatic attempt is already in flight for the tenant).
pub async fn insert(conn: &mut PgConnection, new: NewAttempt<'_>, lease: Duration) -> AppResult<Option<TopUpRow>> {
    let id = crate::ids::new_id();
    let (key, fp) = new.idempotency.map(|(k, f)| (Some(k.0.as_str()), Some(&f[..]))).unwrap_or((None, None));
    Ok(sqlx::query_as(&format!(
        "INSERT INTO top_ups (tenant_id, id, source, status, amount, bonus_amount, currency, payment_token, card_brand, \
           card_last4, provider_key, idempotency_key, fingerprint, actor, attempts, lease_until, retry_at, last_attempt_at, \
           created_at) \
         VALUES ($1, $2, $3, 'pending', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 1, \
           now() + make_interval(secs => $14), now() + make_interval(secs => $14), now(), $15) \
         ON CONFLICT DO NOTHING RETURNING {COLUMNS}"
    ))
    .bind(new.tenant)
    .bind(id)
    .bind(new.source)
    .bind(new.amount.as_decimal())
    .bind(new.bonus.as_decimal())
    .bind(new.currency)
    .bind(&new.card.token)
    .bind(&new.card.brand)
    .bind(&new.card.last4)
    .bind(format!("tally_top_up_{id}"))
    .bind(key)
    .bind(fp)
    .bind(new.actor)
    .bind(secs(lease))
    .bind(Utc::now())
    .fetch_optional(conn)
    .await?)
}

/// Takes the lease of a pending row whose previous call is over (or presumed dead).
/// `None`: settled meanwhile, or another call holds the lease.
///
/// A lease still set here ran out without its call recording anything (every recording
/// clears it): that caller died or gave up after the provider may have charged, so the row's
/// outcome becomes unknown.
pub async fn claim(conn: &mut PgConnection, tenant: Uuid, id: Uuid, lease: Duration) -> AppResult<Option<TopUpRow>> {
    Ok(sqlx::query_as(&format!(
        "UPDATE top_ups SET lease_until = now() + make_interval(secs => $3), retry_at = now() + make_interval(secs => $3), \
           attempts = attempts + 1, last_attempt_at = now(), outcome_unknown = outcome_unknown OR lease_until IS NOT NULL \
         WHERE tenant_id = $1 AND id = $2 AND status = 'pending' AND (lease_until IS NULL OR lease_until <= now()) \
         RETURNING {COLUMNS}"
    ))
    .bind(tenant)
    .bind(id)
    .bind(secs(lease))
    .fetch_optional(conn)
    .await?)
}

/// How one attempt ended, as far as this caller is concerned.
#[derive(Debug)]
pub enum Settled {
    Succeeded {
        view: TopUpView,
        stored: Option<Stored>,
    },
    Declined {
        view: TopUpView,
        reason: String,
        stored: Option<Stored>,
    },
    /// No outcome yet: the row stays pending for a retry with the same key.
    NoAnswer,
    /// Someone else recorded the outcome first.
    AlreadySettled,
}

fn charge_request(row: &TopUpRow) -> ChargeRequest {
    ChargeRequest {
        idempotency_key: row.provider_key.clone(),
        token: row.payment_token.clone(),
        amount: Money::from_db(row.amount),
        currency: row.currency.clone(),
        description: format!("Tally top-up {}", row.id),
    }
}

/// Calls the provider for a leased row and records the outcome.
pub async fn run(app: &App, row: TopUpRow) -> AppResult<Settled> {
    let answer = payments::charge_within(&*app.provider, charge_request(&row), app.config.payment_timeout).await;
    if app.faults.stopped_after_charge() {
        return Err(AppError::internal("stopped between the provider call and recording it (fault injection)"));
    }
    match answer {
        Answer::Outcome(ChargeOutcome::Succeeded { provider_ref }) => credit(app, &row, &provider_ref).await,
        Answer::Outcome(ChargeOutcome::Declined { reason }) => decline(app, &row, &reason).await,
        Answer::Outcome(ChargeOutcome::Unavailable { reason }) => no_answer(app, &row, &reason, false).await,
        Answer::TimedOut => no_answer(app, &row, "the payment provider did not answer in time", true).await,
    }
}

/// Locks the row if it is still pending; false when someone settled it first.
async fn lock_pending(conn: &mut PgConnection, row: &TopUpRow) -> AppResult<bool> {
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM top_ups WHERE tenant_id = $1 AND id = $2 FOR UPDATE")
            .bind(row.tenant_id)
            .bind(row.id)
            .fetch_optional(conn)
            .await?;
    Ok(status.as_deref() == Some("pending"))
}

async fn lock_auto(conn: &mut PgConnection, row: &TopUpRow) -> AppResult<()> {
    if row.source == "auto" {
        sqlx::query("SELECT 1 FROM auto_top_up WHERE tenant_id = $1 FOR UPDATE")
            .bind(row.tenant_id)
            .execute(conn)
            .await?;
    }
    Ok(())
}

async fn credit(app: &App, row: &TopUpRow, provider_ref: &str) -> AppResult<Settled> {
    let now = Utc::now();
    let mut tx = app.pool.begin().await?;
    let mut locked = ledger::lock(&mut tx, row.tenant_id, now).await?.ok_or(AppError::NotFound)?;
    lock_auto(&mut tx, row).await?;
    if !lock_pending(&mut tx, row).await? {
        tx.rollback().await?;
        return Ok(Settled::AlreadySettled);
    }
    let (amount, bonus) = (Money::from_db(row.amount), Money::from_db(row.bonus_amount));
    let bonus_expires_at = app
        .config
        .top_up_bonus_expires_days
        .filter(|_| bonus.is_positive())
        .map(|d| now + chrono::Duration::days(d.into()));
    let reference = json!({ "top_up_id": row.id, "provider_ref": provider_ref, "source": row.source });
    let mut drafts = vec![Draft::new(TxnKind::TopUp, now)
        .description(Some(format!("Top-up, {} ending {}", row.card_brand, row.card_last4)))
        .reference(reference.clone())
        .actor(&row.actor)
        .entry(Account::Paid, amount)
        .entry(Account::Clearing, -amount)];
    if bonus.is_positive() {
        drafts.push(
            Draft::new(TxnKind::Bonus, now)
                .description(Some("Top-up bonus".into()))
                .reference(reference)
                .actor(&row.actor)
                .grant_lot(Account::Promotions, TxnKind::Bonus, bonus, bonus_expires_at),
        );
    }
    let posted = ledger::post(&mut tx, &mut locked, &drafts).await?;
    let done: TopUpRow = sqlx::query_as(&format!(
        "UPDATE top_ups SET status = 'succeeded', provider_ref = $3, bonus_expires_at = $4, transaction_id = $5, \
           completed_at = $6, lease_until = NULL, retry_at = NULL, error = NULL \
         WHERE tenant_id = $1 AND id = $2 RETURNING {COLUMNS}"
    ))
    .bind(row.tenant_id)
    .bind(row.id)
    .bind(provider_ref)
    .bind(bonus_expires_at)
    .bind(drafts[0].id)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    if row.source == "auto" {
        sqlx::query("UPDATE auto_top_up SET consecutive_failures = 0, next_attempt_at = NULL, updated_at = $2 WHERE tenant_id = $1")
            .bind(row.tenant_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
    }
    let mut view = TopUpView::from(done);
    events::emit(
        &mut tx,
        row.tenant_id,
        EventType::TopUpSucceeded,
        serde_json::to_value(&view).map_err(AppError::internal)?,
    )
    .await?;
    let available = Money::checked_sum([locked.funds.available(), amount, bonus])
        .ok_or_else(|| AppError::internal("balance overflow"))?;
    view.balance = Some(BalanceSummary { total: posted.last().expect("one draft at least").total_after, available });
    let body = serde_json::to_vec(&view).map_err(AppError::internal)?;
    let stored = store(&mut tx, row, StatusCode::CREATED, body).await?;
    tx.commit().await?;
    Ok(Settled::Succeeded { view, stored })
}

async fn decline(app: &App, row: &TopUpRow, reason: &str) -> AppResult<Settled> {
    let now = Utc::now();
    let mut tx = app.pool.begin().await?;
    lock_auto(&mut tx, row).await?;
    if !lock_pending(&mut tx, row).await? {
        tx.rollback().await?;
        return Ok(Settled::AlreadySettled);
    }
    let done: TopUpRow = sqlx::query_as(&format!(
        "UPDATE top_ups SET status = 'failed', error = $3, completed_at = $4, lease_until = NULL, retry_at = NULL \
         WHERE tenant_id = $1 AND id = $2 RETURNING {COLUMNS}"
    ))
    .bind(row.tenant_id)
    .bind(row.id)
    .bind(reason)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    let view = TopUpView::from(done);
    events::emit(
        &mut tx,
        row.tenant_id,
        EventType::TopUpFailed,
        serde_json::to_value(&view).map_err(AppError::internal)?,
    )
    .await?;
    if row.source == "auto" {
        record_auto_decline(&mut tx, app, row, reason).await?;
    }
    let problem = declined_error(&view, reason).body();
    let stored =
        store(&mut tx, row, StatusCode::PAYMENT_REQUIRED, serde_json::to_vec(&problem).map_err(AppError::internal)?)
            .await?;
    tx.commit().await?;
    Ok(Settled::Declined { view, reason: reason.to_string(), stored })
}

/// The 402 a declined manual top-up answers (and stores under its key).
pub fn declined_error(view: &TopUpView, reason: &str) -> AppError {
    let mut extra = Map::new();
    extra.insert("top_up_id".into(), Value::String(view.id.to_string()));
    extra.insert("decline_reason".into(), Value::String(reason.to_string()));
    AppError::PaymentDeclined(format!("the payment was declined: {reason}"), extra)
}

/// Counts a declined automatic attempt: back off, or turn auto top-up off after
/// [`MAX_DECLINES`] in a row, with a reason and an `auto_top_up.disabled` event.
async fn record_auto_decline(conn: &mut PgConnection, app: &App, row: &TopUpRow, reason: &str) -> AppResult<()> {
    let failures: i32 = sqlx::query_scalar(
        "UPDATE auto_top_up SET consecutive_failures = consecutive_failures + 1, updated_at = now() \
         WHERE tenant_id = $1 RETURNING consecutive_failures",
    )
    .bind(row.tenant_id)
    .fetch_one(&mut *conn)
    .await?;
    if failures >= MAX_DECLINES {
        let why = format!("disabled after {failures} consecutive declined payments; last: {reason}");
        sqlx::query(
            "UPDATE auto_top_up SET enabled = false, disabled_reason = $2, next_attempt_at = NULL WHERE tenant_id = $1",
        )
        .bind(row.tenant_id)
        .bind(&why)
        .execute(&mut *conn)
        .await?;
        let data = json!({ "reason": why, "consecutive_failures": failures, "last_top_up_id": row.id });
        events::emit(&mut *conn, row.tenant_id, EventType::AutoTopUpDisabled, data).await?;
        super::low_balance::announce(conn, row.tenant_id).await?;
        super::low_balance::forget(row.tenant_id);
    } else {
        let wait = decline_backoff(app.config.auto_top_up_backoff, failures);
        sqlx::query("UPDATE auto_top_up SET next_attempt_at = now() + make_interval(secs => $2) WHERE tenant_id = $1")
            .bind(row.tenant_id)
            .bind(secs(wait))
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// No outcome: the row stays pending and its lease ends. Automatic attempts, and manual
/// ones whose outcome is unknown — this call timed out, or any earlier call on the row did
/// (`outcome_unknown`, decided in the update from the row itself, never from this call
/// alone) — are re-driven by the sweep; a manual one the provider has only ever refused to
/// process waits for the client's retry with the same key.
async fn no_answer(app: &App, row: &TopUpRow, reason: &str, unknown: bool) -> AppResult<Settled> {
    let delay = retry_delay(app.config.payment_retry, row.attempts);
    sqlx::query(
        "UPDATE top_ups SET lease_until = NULL, error = $3, outcome_unknown = outcome_unknown OR $5, \
           retry_at = CASE WHEN source = 'auto' OR outcome_unknown OR $5 THEN now() + make_interval(secs => $4) END \
         WHERE tenant_id = $1 AND id = $2 AND status = 'pending'",
    )
    .bind(row.tenant_id)
    .bind(row.id)
    .bind(reason)
    .bind(secs(delay))
    .bind(unknown)
    .execute(&app.pool)
    .await?;
    tracing::warn!(tenant = %row.tenant_id, top_up = %row.id, attempts = row.attempts, reason, "payment provider gave no outcome");
    Ok(Settled::NoAnswer)
}

/// Stores a manual top-up's response under its key, unless the key already names a
/// stored response (of another operation that used the same key meanwhile).
async fn store(
    conn: &mut PgConnection,
    row: &TopUpRow,
    status: StatusCode,
    body: Vec<u8>,
) -> AppResult<Option<Stored>> {
    let (Some(key), Some(fp)) = (&row.idempotency_key, &row.fingerprint) else { return Ok(None) };
    let key = IdempotencyKey(key.clone());
    let fp: idempotency::Fingerprint = fp.as_slice().try_into().map_err(AppError::internal)?;
    let taken: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM idempotency_keys WHERE tenant_id = $1 AND key = $2)")
            .bind(row.tenant_id)
            .bind(&key.0)
            .fetch_one(&mut *conn)
            .await?;
    if taken {
        return Ok(None);
    }
    Ok(Some(idempotency::finish(conn, row.tenant_id, &key, &fp, status, body).await?))
}

/// Re-drive delay after the n-th call without an outcome: base × 2^(n-1), at most 10 minutes.
pub fn retry_delay(base: Duration, attempts: i32) -> Duration {
    let factor = 2u32.saturating_pow(attempts.clamp(1, 31) as u32 - 1);
    base.saturating_mul(factor).min(Duration::from_secs(600))
}

/// Back-off after the n-th declined automatic attempt in a row: base × 4^(n-1), at most a day.
pub fn decline_backoff(base: Duration, failures: i32) -> Duration {
    let factor = 4u32.saturating_pow(failures.clamp(1, 16) as u32 - 1);
    base.saturating_mul(factor).min(Duration::from_secs(86_400))
}

/// A manual attempt the provider refused to process, and that the client has not retried
/// for this long, is closed as failed (its key stores nothing: a later retry runs again).
pub const ABANDON_AFTER: Duration = Duration::from_secs(86_400);

/// Closes abandoned manual attempts: those whose last call is older than `after`, that the
/// provider only ever refused (never `outcome_unknown`: a possible charge is re-driven until
/// the provider answers, never abandoned), and that nobody is calling for or will re-drive.
/// The conditions are checked in the update itself, so a client's retry that takes the
/// lease first wins, and this one changes nothing.
pub async fn abandon_stale(pool: &sqlx::PgPool, after: Duration, limit: i64) -> AppResult<usize> {
    let mut tx = pool.begin().await?;
    let rows: Vec<TopUpRow> = sqlx::query_as(&format!(
        "UPDATE top_ups SET status = 'failed', completed_at = now(), \
           error = 'abandoned: the payment provider was unavailable and the request was not retried' \
         WHERE (tenant_id, id) IN (SELECT tenant_id, id FROM top_ups WHERE status = 'pending' AND source = 'manual' \
             AND NOT outcome_unknown AND retry_at IS NULL AND lease_until IS NULL \
             AND last_attempt_at < now() - make_interval(secs => $1) \
             LIMIT $2 FOR UPDATE SKIP LOCKED) \
           AND status = 'pending' AND NOT outcome_unknown AND retry_at IS NULL AND lease_until IS NULL \
         RETURNING {COLUMNS}"
    ))
    .bind(secs(after))
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    for row in &rows {
        let view = TopUpView::from(row.clone());
        events::emit(
            &mut tx,
            row.tenant_id,
            EventType::TopUpFailed,
            serde_json::to_value(&view).map_err(AppError::internal)?,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(rows.len())
}

/// Pending rows whose re-drive is due, oldest first.
pub async fn due(pool: &sqlx::PgPool, limit: i64) -> AppResult<Vec<(Uuid, Uuid)>> {
    Ok(sqlx::query_as(
        "SELECT tenant_id, id FROM top_ups WHERE status = 'pending' AND retry_at <= now() \
           AND (lease_until IS NULL OR lease_until <= now()) ORDER BY retry_at LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_grows_and_is_capped() {
        let s = Duration::from_secs;
        assert_eq!(decline_backoff(s(30), 1), s(30));
        assert_eq!(decline_backoff(s(30), 2), s(120));
        assert_eq!(decline_backoff(s(30), 3), s(480));
        assert_eq!(decline_backoff(s(30), 99), s(86_400));
        assert_eq!(retry_delay(s(5), 1), s(5));
        assert_eq!(retry_delay(s(5), 3), s(20));
        assert_eq!(retry_delay(s(5), 1000), s(600));
        assert_eq!(retry_delay(s(5), 0), s(5));
    }
}
