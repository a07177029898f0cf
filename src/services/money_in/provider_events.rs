//! What the service does with a payment provider's verified events (Stripe's webhooks):
//! - a payment succeeded or failed: settle the pending attempt it belongs to (sooner than
//!   the re-drive would), through the same movements as a provider call's answer;
//! - refunds were made on a payment: a refund made through Tally and still pending is
//!   settled; one made at the provider is recorded and clawed back (`top_up.refunded`);
//! - a dispute was opened: the payment is reversed and clawed back (`payment.reversed`);
//! - anything else, or an event already seen: acknowledged and ignored.
//!
//! Duplicates: the ids of handled events are kept (`provider_events`) and a known id is
//! ignored. That only saves work: every effect is idempotent by itself (only a pending row
//! is settled; one row per provider refund or dispute), so an event handled twice by two
//! replicas at once, or re-delivered after a crash between its effect and its record,
//! changes nothing the second time. An event whose handling fails is not recorded, and
//! the provider delivers it again.
//!
//! Only an event about the attempt's own payment object is used: a payment event must name
//! the PaymentIntent the attempt recorded (one recorded nowhere yet is adopted, after its
//! metadata named the attempt), and its amount and currency must be the attempt's.

use sqlx::PgPool;
use uuid::Uuid;

use super::attempts::{self, RowJournal};
use super::clawback::{RefundKind, RefundRow, COLUMNS as REFUND_COLUMNS};
use super::records::{TopUpRow, COLUMNS};
use super::refunds;
use super::reversals::{self, ProviderMoved};
use super::MoneyIn;
use crate::error::AppResult;
use crate::money::Money;
use crate::payments::{ChargeOutcome, Event, Journal, ProviderEvent};
use crate::vocab::TopUpStatus;

/// Handles one verified event; says what became of it (for logs and the acknowledgement).
pub async fn handle(mi: &MoneyIn, provider: &str, event: Event) -> AppResult<&'static str> {
    let pool = &mi.frame.pool;
    let seen: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM provider_events WHERE provider = $1 AND id = $2)")
            .bind(provider)
            .bind(&event.id)
            .fetch_one(pool)
            .await?;
    if seen {
        return Ok("duplicate");
    }
    let outcome = match &event.body {
        ProviderEvent::PaymentSucceeded { intent, tenant, top_up, amount, currency } => {
            match attempt(pool, intent, *tenant, *top_up).await? {
                None => "unknown_payment",
                Some(row) if Money::from_db(row.amount) != *amount || !row.currency.eq_ignore_ascii_case(currency) => {
                    tracing::error!(top_up = %row.id, intent, %amount, currency, "a payment event whose amount is not the attempt's: ignored");
                    "mismatch"
                }
                Some(row) => {
                    payment(mi, row, intent, ChargeOutcome::Succeeded { provider_ref: intent.clone() }).await?
                }
            }
        }
        ProviderEvent::PaymentFailed { intent, tenant, top_up, reason, code } => {
            match attempt(pool, intent, *tenant, *top_up).await? {
                None => "unknown_payment",
                Some(row) => {
                    let outcome = ChargeOutcome::Declined { reason: reason.clone(), code: code.clone() };
                    payment(mi, row, intent, outcome).await?
                }
            }
        }
        ProviderEvent::Refunded { intent } => refunded(mi, intent).await?,
        ProviderEvent::Disputed { dispute, intent, amount, currency, reason } => {
            match attempt(pool, intent, None, None).await? {
                None => "unknown_payment",
                Some(row) if !row.currency.eq_ignore_ascii_case(currency) => "mismatch",
                Some(row) => {
                    let moved = ProviderMoved {
                        tenant: row.tenant_id,
                        top_up: row.id,
                        kind: RefundKind::Reversal,
                        provider_ref: dispute.clone(),
                        amount: Some(*amount),
                        reason: format!("dispute: {reason}"),
                        actor: format!("{provider}:dispute"),
                    };
                    match reversals::record(&mi.frame, moved).await? {
                        reversals::Reversed::Done(_) => "reversed",
                        reversals::Reversed::Known(_) => "already_recorded",
                        reversals::Reversed::Nothing => "nothing_left",
                    }
                }
            }
        }
        ProviderEvent::Ignored => "ignored",
    };
    remember(pool, provider, &event, outcome).await
}

async fn remember(pool: &PgPool, provider: &str, event: &Event, outcome: &'static str) -> AppResult<&'static str> {
    sqlx::query(
        "INSERT INTO provider_events (provider, id, type, outcome, received_at) VALUES ($1, $2, $3, $4, now()) \
         ON CONFLICT DO NOTHING",
    )
    .bind(provider)
    .bind(&event.id)
    .bind(&event.kind)
    .bind(outcome)
    .execute(pool)
    .await?;
    tracing::info!(provider, event = event.id, kind = event.kind, outcome, "provider event");
    Ok(outcome)
}

/// The top-up attempt a payment event is about: by the tenant and attempt its metadata
/// names, else by the PaymentIntent it recorded.
async fn attempt(
    pool: &PgPool,
    intent: &str,
    tenant: Option<Uuid>,
    top_up: Option<Uuid>,
) -> AppResult<Option<TopUpRow>> {
    if let (Some(tenant), Some(top_up)) = (tenant, top_up) {
        let row: Option<TopUpRow> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM top_ups WHERE tenant_id = $1 AND id = $2"))
                .bind(tenant)
                .bind(top_up)
                .fetch_optional(pool)
                .await?;
        if row.is_some() {
            return Ok(row);
        }
    }
    Ok(sqlx::query_as(&format!("SELECT {COLUMNS} FROM top_ups WHERE provider_intent = $1 LIMIT 1"))
        .bind(intent)
        .fetch_optional(pool)
        .await?)
}

/// Settles a pending attempt with a payment event's outcome.
async fn payment(mi: &MoneyIn, mut row: TopUpRow, intent: &str, outcome: ChargeOutcome) -> AppResult<&'static str> {
    match row.provider_intent.as_deref() {
        Some(recorded) if recorded != intent => {
            tracing::error!(top_up = %row.id, recorded, intent, "a payment event for another PaymentIntent than the attempt's: ignored");
            return Ok("other_intent");
        }
        Some(_) => {}
        None => {
            // Created by a call whose answer was lost: the event's metadata named this attempt.
            let journal = RowJournal { pool: mi.frame.pool.clone(), tenant: row.tenant_id, id: row.id };
            if journal.record_intent(intent).await.is_err() {
                return Ok("already_settled");
            }
            row.provider_intent = Some(intent.to_string());
        }
    }
    if row.status != TopUpStatus::Pending {
        if row.status == TopUpStatus::Failed && matches!(outcome, ChargeOutcome::Succeeded { .. }) {
            tracing::error!(tenant = %row.tenant_id, top_up = %row.id, intent, "a payment succeeded for an attempt recorded as failed: refund it at the provider");
        }
        return Ok("already_settled");
    }
    Ok(match attempts::settle(mi, row, outcome).await? {
        attempts::Settled::Succeeded { .. } => "credited",
        attempts::Settled::Declined { .. } => "declined",
        attempts::Settled::NoAnswer => "pending",
        attempts::Settled::AlreadySettled => "already_settled",
    })
}

/// Refunds listed for a payment: Tally's own pending ones are settled, the provider's own
/// are recorded and clawed back.
async fn refunded(mi: &MoneyIn, intent: &str) -> AppResult<&'static str> {
    let Some(row) = attempt(&mi.frame.pool, intent, None, None).await? else { return Ok("unknown_payment") };
    let listed = match mi.provider.refunds_of(intent).await {
        Ok(l) => l,
        Err(e) => {
            // Not acknowledged as handled: the provider delivers the event again later.
            tracing::warn!(intent, error = e, "listing a payment's refunds failed");
            return Err(crate::error::AppError::PaymentProviderUnavailable);
        }
    };
    let mut outcome = "nothing_new";
    for r in listed.into_iter().filter(|r| r.accepted) {
        if let Some(id) = r.tally_refund_id {
            let mine: Option<RefundRow> = sqlx::query_as(&format!(
                "SELECT {REFUND_COLUMNS} FROM top_up_refunds WHERE tenant_id = $1 AND id = $2 AND status = 'pending'"
            ))
            .bind(row.tenant_id)
            .bind(id)
            .fetch_optional(&mi.frame.pool)
            .await?;
            if let Some(mine) = mine {
                refunds::settle(mi, mine, ChargeOutcome::Succeeded { provider_ref: r.id.clone() }).await?;
                outcome = "refund_settled";
            }
            continue;
        }
        let moved = ProviderMoved {
            tenant: row.tenant_id,
            top_up: row.id,
            kind: RefundKind::Refund,
            provider_ref: r.id.clone(),
            amount: Some(r.amount),
            reason: "refunded at the payment provider".into(),
            actor: format!("{}:refund", mi.provider.name()),
        };
        if let reversals::Reversed::Done(_) = reversals::record(&mi.frame, moved).await? {
            outcome = "refund_recorded";
        }
    }
    Ok(outcome)
}
