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
//! (`Unavailable` included) schedules another re-drive by the sweep. Deciding this from
//! the latest call alone would let a later `Unavailable` hide an earlier possible charge.
//!
//! No attempt is closed without the provider's final answer (`Succeeded` credits it,
//! `Declined` fails it). A manual attempt whose every call was answered `Unavailable` waits
//! for its client's retry first; if the client does not come back within
//! [`HAND_OVER_AFTER`], [`hand_over_stale`] hands it to the sweep, which re-drives it with
//! its same provider key until the answer is final. With a real provider an unavailable
//! answer (a 5xx) may hide a charge: closing such an attempt would leave the charge
//! uncredited and let the client's retry charge again under a new provider key. So a
//! client's key always leads back to the same provider key until the outcome is final.
//!
//! An attempt, once started, runs to its record on a task of its own ([`run`]): a client
//! that disconnects during the provider call does not leave its outcome unrecorded.
//!
//! A provider whose payments take steps (Stripe: create a PaymentIntent, then confirm it)
//! records its payment object on the row through [`RowJournal`] — committed before the step
//! that can charge — so every later call for the row works on that one object. A provider
//! event (a verified webhook) may settle a pending row too ([`settle`]): the same movements,
//! acting only on a row still pending.
//!
//! Lock order, everywhere: the tenant's ledger lock, then its `auto_top_up` row, then the
//! `top_ups` row.

use std::time::Duration;

use axum::http::StatusCode;
use chrono::Utc;
use serde_json::{json, Map, Value};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::payment_methods::Card;
use super::records::{TopUpRow, TopUpView, COLUMNS};
use super::MoneyIn;
use crate::config::Config;
use crate::error::{AppError, AppResult};
use crate::frame::{Books, Movement, Response, Staged};
use crate::idempotency::{self, Claim, Stored};
use crate::ledger::{Account, Draft, TxnKind};
use crate::money::Money;
use crate::payments::{self, Answer, ChargeOutcome, ChargeRequest, Journal};
use crate::services::notify::events::{self, EventType};
use crate::services::notify::low_balance::{self, LowBalance};
use crate::vocab::{TopUpSource, TopUpStatus};

/// After this many declines in a row, auto top-up turns itself off.
pub const MAX_DECLINES: i32 = 3;

/// What a new attempt charges, decided by its caller.
pub struct NewAttempt<'a> {
    pub tenant: Uuid,
    pub source: TopUpSource,
    pub amount: Money,
    pub bonus: Money,
    pub currency: &'a str,
    pub card: &'a Card,
    /// A manual top-up's key: its outcome is stored under it.
    pub claim: Option<&'a Claim>,
    pub actor: &'a str,
}

/// A lease covers the provider call and the recording after it.
pub fn lease(config: &Config) -> Duration {
    config.payment_timeout * 2
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Inserts a new attempt, already leased, in the caller's transaction. `None`: a unique
/// index refused it (an automatic attempt is already in flight for the tenant).
pub async fn insert(conn: &mut PgConnection, new: NewAttempt<'_>, lease: Duration) -> AppResult<Option<TopUpRow>> {
    let id = crate::ids::new_id();
    let claim = new.claim;
    Ok(sqlx::query_as(&format!(
        "INSERT INTO top_ups (tenant_id, id, source, status, amount, bonus_amount, currency, payment_token, card_brand, \
           card_last4, provider_key, idempotency_key, idempotency_side, fingerprint, actor, attempts, lease_until, \
           retry_at, last_attempt_at, created_at, provider_customer) \
         VALUES ($1, $2, $3, 'pending', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 1, \
           now() + make_interval(secs => $15), now() + make_interval(secs => $15), now(), $16, $17) \
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
    .bind(claim.map(|c| c.key.0.as_str()))
    .bind(claim.map(|c| c.side))
    .bind(claim.map(|c| &c.fp[..]))
    .bind(new.actor)
    .bind(secs(lease))
    .bind(Utc::now())
    .bind(&new.card.customer)
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
        attempt_id: row.id,
        tenant_id: row.tenant_id,
        try_no: row.attempts,
        token: row.payment_token.clone(),
        customer: row.provider_customer.clone(),
        intent: row.provider_intent.clone(),
        amount: Money::from_db(row.amount),
        currency: row.currency.clone(),
        description: format!("Tally top-up {}", row.id),
    }
}

/// Calls the provider for a leased row and records the outcome, on a task of its own.
pub async fn run(mi: &MoneyIn, row: TopUpRow) -> AppResult<Settled> {
    let mi = mi.clone();
    tokio::spawn(async move { drive(&mi, row).await }).await.map_err(AppError::internal)?
}

async fn drive(mi: &MoneyIn, row: TopUpRow) -> AppResult<Settled> {
    let journal = RowJournal { pool: mi.frame.pool.clone(), tenant: row.tenant_id, id: row.id };
    let started = std::time::Instant::now();
    let answer =
        payments::charge_within(&*mi.provider, charge_request(&row), &journal, mi.config.payment_timeout).await;
    let outcome = match &answer {
        Answer::Outcome(ChargeOutcome::Succeeded { .. }) => "succeeded",
        Answer::Outcome(ChargeOutcome::Declined { .. }) => "declined",
        Answer::Outcome(ChargeOutcome::Unavailable { .. }) => "unavailable",
        Answer::Outcome(ChargeOutcome::Unknown { .. }) => "unknown",
        Answer::TimedOut => "timed_out",
    };
    crate::meters::top_up_attempt(row.source.as_str(), outcome, started.elapsed());
    if mi.faults.stopped_after_charge() {
        return Err(AppError::internal("stopped between the provider call and recording it (fault injection)"));
    }
    let outcome = match answer {
        Answer::Outcome(outcome) => outcome,
        Answer::TimedOut => ChargeOutcome::Unknown { reason: "the payment provider did not answer in time".into() },
    };
    settle(mi, row, outcome).await
}

/// Records a provider's outcome for a row (from a call, or from a verified provider event):
/// a success or a decline settles it if it is still pending; no final answer leaves it
/// pending for a re-drive with the same key.
pub async fn settle(mi: &MoneyIn, row: TopUpRow, outcome: ChargeOutcome) -> AppResult<Settled> {
    match outcome {
        ChargeOutcome::Succeeded { provider_ref } => {
            let bonus_days = mi.config.top_up_bonus_expires_days;
            mi.frame.run(Credit { row, provider_ref, bonus_days, settled: None, staged: Vec::new() }).await
        }
        ChargeOutcome::Declined { reason, code } => {
            let (low, backoff) = (mi.low.clone(), mi.config.auto_top_up_backoff);
            mi.frame.run(Decline { row, reason, code, low, backoff, settled: None }).await
        }
        ChargeOutcome::Unavailable { reason } => no_answer(mi, &row, &reason, false).await,
        ChargeOutcome::Unknown { reason } => no_answer(mi, &row, &reason, true).await,
    }
}

/// Records a row's payment object at the provider, committed at once (one statement), so
/// that every later call for the row — after a crash, a lost answer, on another replica —
/// works on this object and never creates a second one. Refuses a second, different one.
pub struct RowJournal {
    pub pool: PgPool,
    pub tenant: Uuid,
    pub id: Uuid,
}

#[async_trait::async_trait]
impl Journal for RowJournal {
    async fn record_intent(&self, intent: &str) -> Result<(), String> {
        let r = sqlx::query(
            "UPDATE top_ups SET provider_intent = $3 WHERE tenant_id = $1 AND id = $2 AND status = 'pending' \
               AND (provider_intent IS NULL OR provider_intent = $3)",
        )
        .bind(self.tenant)
        .bind(self.id)
        .bind(intent)
        .execute(&self.pool)
        .await
        .map_err(|e| e.to_string())?;
        if r.rows_affected() == 1 {
            Ok(())
        } else {
            Err("the attempt is settled, or already has another payment object".into())
        }
    }
}

/// Locks the row if it is still pending; false when someone settled it first.
async fn lock_pending(conn: &mut PgConnection, row: &TopUpRow) -> AppResult<bool> {
    let status: Option<TopUpStatus> =
        sqlx::query_scalar("SELECT status FROM top_ups WHERE tenant_id = $1 AND id = $2 FOR UPDATE")
            .bind(row.tenant_id)
            .bind(row.id)
            .fetch_optional(conn)
            .await?;
    Ok(status == Some(TopUpStatus::Pending))
}

/// Locks the tenant's auto top-up row (automatic attempts), then the top-up row.
async fn lock_rows(conn: &mut PgConnection, row: &TopUpRow) -> AppResult<bool> {
    if row.source == TopUpSource::Auto {
        sqlx::query("SELECT 1 FROM auto_top_up WHERE tenant_id = $1 FOR UPDATE")
            .bind(row.tenant_id)
            .execute(&mut *conn)
            .await?;
    }
    lock_pending(conn, row).await
}

/// The movement that records a success: the paid credit and the bonus lot, the row's
/// status, the event and (manual) the stored response.
struct Credit {
    row: TopUpRow,
    provider_ref: String,
    bonus_days: Option<u32>,
    settled: Option<Settled>,
    staged: Vec<Staged>,
}

impl Movement for Credit {
    type Output = Settled;

    fn tenants(&self) -> Vec<Uuid> {
        vec![self.row.tenant_id]
    }

    async fn decide(&mut self, tx: &mut PgConnection, books: &mut Books) -> AppResult<()> {
        let (row, now) = (&self.row, books.now);
        books.locked(row.tenant_id)?;
        if !lock_rows(tx, row).await? {
            self.settled = Some(Settled::AlreadySettled);
            return Ok(());
        }
        let (amount, bonus) = (Money::from_db(row.amount), Money::from_db(row.bonus_amount));
        let bonus_expires_at =
            self.bonus_days.filter(|_| bonus.is_positive()).map(|d| now + chrono::Duration::days(d.into()));
        let reference = json!({ "top_up_id": row.id, "provider_ref": self.provider_ref, "source": row.source });
        let credit = Draft::new(TxnKind::TopUp, now)
            .description(Some(format!("Top-up, {} ending {}", row.card_brand, row.card_last4)))
            .reference(reference.clone())
            .actor(&row.actor)
            .entry(Account::Paid, amount)
            .entry(Account::Clearing, -amount);
        self.staged.push(books.stage(row.tenant_id, credit)?);
        if bonus.is_positive() {
            let lot = Draft::new(TxnKind::Bonus, now)
                .description(Some("Top-up bonus".into()))
                .reference(reference)
                .actor(&row.actor)
                .grant_lot(Account::Promotions, TxnKind::Bonus, bonus, bonus_expires_at);
            self.staged.push(books.stage(row.tenant_id, lot)?);
        }
        Ok(())
    }

    async fn write(&mut self, tx: &mut PgConnection, books: &Books) -> AppResult<Vec<Response>> {
        let (Some(first), Some(last)) = (self.staged.first(), self.staged.last()) else { return Ok(Vec::new()) };
        let (row, now) = (&self.row, books.now);
        let lot = self.staged.get(1).and_then(|s| books.draft(*s).new_lots.first());
        let (bonus_expires_at, bonus_lot_id) = (lot.and_then(|l| l.expires_at), lot.map(|l| l.id));
        let done: TopUpRow = sqlx::query_as(&format!(
            "UPDATE top_ups SET status = 'succeeded', provider_ref = $3, bonus_expires_at = $4, transaction_id = $5, \
               completed_at = $6, lease_until = NULL, retry_at = NULL, error = NULL, decline_code = NULL, \
               bonus_lot_id = $7 \
             WHERE tenant_id = $1 AND id = $2 RETURNING {COLUMNS}"
        ))
        .bind(row.tenant_id)
        .bind(row.id)
        .bind(&self.provider_ref)
        .bind(bonus_expires_at)
        .bind(books.draft(*first).id)
        .bind(now)
        .bind(bonus_lot_id)
        .fetch_one(&mut *tx)
        .await?;
        if row.source == TopUpSource::Auto {
            sqlx::query(
                "UPDATE auto_top_up SET consecutive_failures = 0, next_attempt_at = NULL, updated_at = $2 \
                 WHERE tenant_id = $1",
            )
            .bind(row.tenant_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let mut view = TopUpView::from(done);
        let data = serde_json::to_value(&view).map_err(AppError::internal)?;
        events::emit(tx, row.tenant_id, EventType::TopUpSucceeded, data).await?;
        view.balance = Some(books.posted(*last)?.after);
        let stored = store(tx, row, idempotency::json(StatusCode::CREATED, &view)?).await?;
        self.settled = Some(Settled::Succeeded { view, stored });
        Ok(Vec::new())
    }

    fn finish(self, _: Vec<Response>) -> AppResult<Settled> {
        self.settled.ok_or_else(|| AppError::internal("credit not recorded"))
    }
}

/// The movement that records a decline: the row's status, the event, the auto top-up
/// back-off (or its end), and (manual) the stored 402.
struct Decline {
    row: TopUpRow,
    reason: String,
    code: Option<String>,
    low: std::sync::Arc<LowBalance>,
    backoff: Duration,
    settled: Option<Settled>,
}

impl Movement for Decline {
    type Output = Settled;

    async fn decide(&mut self, tx: &mut PgConnection, _books: &mut Books) -> AppResult<()> {
        if !lock_rows(tx, &self.row).await? {
            self.settled = Some(Settled::AlreadySettled);
        }
        Ok(())
    }

    async fn write(&mut self, tx: &mut PgConnection, books: &Books) -> AppResult<Vec<Response>> {
        if self.settled.is_some() {
            return Ok(Vec::new());
        }
        let row = &self.row;
        let done: TopUpRow = sqlx::query_as(&format!(
            "UPDATE top_ups SET status = 'failed', error = $3, completed_at = $4, lease_until = NULL, retry_at = NULL, \
               decline_code = $5 \
             WHERE tenant_id = $1 AND id = $2 RETURNING {COLUMNS}"
        ))
        .bind(row.tenant_id)
        .bind(row.id)
        .bind(&self.reason)
        .bind(books.now)
        .bind(&self.code)
        .fetch_one(&mut *tx)
        .await?;
        let view = TopUpView::from(done);
        let data = serde_json::to_value(&view).map_err(AppError::internal)?;
        events::emit(tx, row.tenant_id, EventType::TopUpFailed, data).await?;
        if row.source == TopUpSource::Auto {
            record_auto_decline(tx, &self.low, self.backoff, row, &self.reason).await?;
        }
        let problem = declined_error(&view, &self.reason).body();
        let stored = store(tx, row, idempotency::json(StatusCode::PAYMENT_REQUIRED, &problem)?).await?;
        self.settled = Some(Settled::Declined { view, reason: self.reason.clone(), stored });
        Ok(Vec::new())
    }

    fn finish(self, _: Vec<Response>) -> AppResult<Settled> {
        self.settled.ok_or_else(|| AppError::internal("decline not recorded"))
    }
}

/// The 402 a declined manual top-up answers (and stores under its key).
pub fn declined_error(view: &TopUpView, reason: &str) -> AppError {
    let mut extra = Map::new();
    extra.insert("top_up_id".into(), Value::String(view.id.to_string()));
    extra.insert("decline_reason".into(), Value::String(reason.to_string()));
    if let Some(code) = &view.decline_code {
        extra.insert("decline_code".into(), Value::String(code.clone()));
    }
    AppError::PaymentDeclined(format!("the payment was declined: {reason}"), extra)
}

/// Counts a declined automatic attempt: back off, or turn auto top-up off after
/// [`MAX_DECLINES`] in a row, with a reason and an `auto_top_up.disabled` event.
async fn record_auto_decline(
    conn: &mut PgConnection,
    low: &LowBalance,
    backoff: Duration,
    row: &TopUpRow,
    reason: &str,
) -> AppResult<()> {
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
        low_balance::announce(conn, row.tenant_id).await?;
        low.forget(row.tenant_id);
    } else {
        let wait = decline_backoff(backoff, failures);
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
/// alone) — are re-driven by the sweep; a manual one the provider has only ever answered
/// `Unavailable` waits for the client's retry with the same key, until [`hand_over_stale`]
/// gives it to the sweep.
async fn no_answer(mi: &MoneyIn, row: &TopUpRow, reason: &str, unknown: bool) -> AppResult<Settled> {
    let delay = retry_delay(mi.config.payment_retry, row.attempts);
    sqlx::query(
        "UPDATE top_ups SET lease_until = NULL, error = $3, outcome_unknown = outcome_unknown OR $5, \
           retry_at = CASE WHEN source = 'auto' OR outcome_unknown OR $5 OR handed_over \
             THEN now() + make_interval(secs => $4) END \
         WHERE tenant_id = $1 AND id = $2 AND status = 'pending'",
    )
    .bind(row.tenant_id)
    .bind(row.id)
    .bind(reason)
    .bind(secs(delay))
    .bind(unknown)
    .execute(&mi.frame.pool)
    .await?;
    tracing::warn!(tenant = %row.tenant_id, top_up = %row.id, attempts = row.attempts, reason, "payment provider gave no outcome");
    Ok(Settled::NoAnswer)
}

/// Stores a manual top-up's response under its key, unless the key already names a
/// stored response (of another operation that used the same key meanwhile). The key was
/// claimed when the attempt started; its outcome is stored only now.
async fn store(conn: &mut PgConnection, row: &TopUpRow, response: Stored) -> AppResult<Option<Stored>> {
    let Some(claim) = row.claim()? else { return Ok(None) };
    let taken: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM idempotency_keys WHERE key = $1 AND tenant_id = $2 AND side = $3)",
    )
    .bind(&claim.key.0)
    .bind(claim.tenant)
    .bind(claim.side)
    .fetch_one(&mut *conn)
    .await?;
    if taken {
        return Ok(None);
    }
    idempotency::store_all(conn, &[(&claim, &response)]).await?;
    Ok(Some(response))
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

/// How long a manual attempt the provider only ever answered `Unavailable` waits for its
/// client's retry before the sweep takes it over.
pub const HAND_OVER_AFTER: Duration = Duration::from_secs(86_400);

/// Hands manual attempts that their client has not retried for `after` (and that nobody is
/// calling for or re-driving) to the sweep: from then on they are re-driven with their
/// provider key until the provider gives a final answer. Never closes one. The conditions
/// are checked in the update itself, so a client's retry that takes the lease first wins.
/// Returns how many were handed over.
pub async fn hand_over_stale(pool: &PgPool, after: Duration, limit: i64) -> AppResult<usize> {
    let r = sqlx::query(
        "UPDATE top_ups SET handed_over = true, retry_at = now() \
         WHERE (tenant_id, id) IN (SELECT tenant_id, id FROM top_ups WHERE status = 'pending' AND source = 'manual' \
             AND retry_at IS NULL AND lease_until IS NULL AND last_attempt_at < now() - make_interval(secs => $1) \
             LIMIT $2 FOR UPDATE SKIP LOCKED) \
           AND status = 'pending' AND retry_at IS NULL AND lease_until IS NULL",
    )
    .bind(secs(after))
    .bind(limit)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() as usize)
}

/// Pending rows whose re-drive is due, oldest first.
pub async fn due(pool: &PgPool, limit: i64) -> AppResult<Vec<(Uuid, Uuid)>> {
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
