//! Taking credit back when a top-up's money goes back to the card: the code every refund
//! and reversal shares, whichever provider and whoever started it (a refund through Tally,
//! a refund made at the provider, a dispute).
//!
//! Rules (decided under the tenant's ledger lock, so concurrent refunds, reversals and
//! spends of one tenant are decided one after the other):
//! - never more than the top-up in total: the amounts of its refunds and reversals that are
//!   not failed (pending ones included) add up to at most the top-up's amount;
//! - a refund of `amount` takes `amount` back from `paid`, and the top-up's bonus in the
//!   same proportion ([`bonus_share`]) from that top-up's OWN lot — rounded cumulatively, so
//!   partial refunds that add up to the whole top-up take back exactly the whole bonus;
//! - credit already spent (or expired) is not taken: no balance goes below zero. What could
//!   not be taken is recorded as `shortfall`, so
//!   `amount + bonus_share = clawed paid + clawed bonus + shortfall` (a CHECK on the row);
//! - the ledger: one `top_up_refund` transaction, paid → clearing (the money left through
//!   the provider, as it came in) and lot → promotions (the bonus goes back where it came
//!   from); none when nothing can be taken.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::frame::{Books, Staged};
use crate::idempotency::{Claim, IdempotencyKey, Side};
use crate::ledger::{Account, BalanceSummary, Draft, Funding, LotPart, TxnKind};
use crate::money::Money;
use crate::services::notify::events::{self, EventType};
use crate::vocab::{text_enum, TopUpStatus};

text_enum! {
    /// `top_up_refunds.kind`: money given back (`refund`) or taken back by the card's bank (`reversal`).
    pub enum RefundKind { Refund = "refund", Reversal = "reversal" }
}

text_enum! {
    /// `top_up_refunds.origin`: asked for through Tally, or started at the provider.
    pub enum RefundOrigin { Tally = "tally", Provider = "provider" }
}

/// A `top_up_refunds` row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RefundRow {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub top_up_id: Uuid,
    pub kind: RefundKind,
    pub origin: RefundOrigin,
    pub status: TopUpStatus,
    pub amount: Decimal,
    pub bonus_share: Decimal,
    pub clawed_paid: Decimal,
    pub clawed_bonus: Decimal,
    pub shortfall: Decimal,
    pub currency: String,
    pub reason: String,
    pub provider_key: String,
    pub provider_ref: Option<String>,
    pub error: Option<String>,
    pub idempotency_key: Option<String>,
    pub idempotency_side: Option<Side>,
    pub fingerprint: Option<Vec<u8>>,
    pub actor: String,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

pub const COLUMNS: &str = "tenant_id, id, top_up_id, kind, origin, status, amount, bonus_share, clawed_paid, \
     clawed_bonus, shortfall, currency, reason, provider_key, provider_ref, error, idempotency_key, idempotency_side, \
     fingerprint, actor, attempts, created_at, completed_at";

impl RefundRow {
    /// The client's key of a refund asked for through Tally, whose response the outcome is
    /// stored under.
    pub fn claim(&self) -> AppResult<Option<Claim>> {
        let (Some(key), Some(side), Some(fp)) = (&self.idempotency_key, self.idempotency_side, &self.fingerprint)
        else {
            return Ok(None);
        };
        let fp = fp.as_slice().try_into().map_err(AppError::internal)?;
        Ok(Some(Claim { tenant: self.tenant_id, side, key: IdempotencyKey(key.clone()), fp }))
    }
}

#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct ClawedBack {
    pub paid: Money,
    pub bonus: Money,
}

/// A top-up refund or reversal as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RefundView {
    pub id: Uuid,
    pub top_up_id: Uuid,
    pub tenant_id: Uuid,
    pub kind: RefundKind,
    pub origin: RefundOrigin,
    pub status: TopUpStatus,
    /// What goes back to the card.
    pub amount: Money,
    pub currency: String,
    pub reason: String,
    /// What came back out of the tenant: from `paid`, and from the top-up's own bonus lot.
    pub clawed_back: ClawedBack,
    /// Credit this refund should have taken back but could not, because it was already spent
    /// (or had expired): no balance is taken below zero.
    pub shortfall: Money,
    pub provider_ref: Option<String>,
    pub error: Option<String>,
    /// The balance right after the clawback (in the response that made it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance: Option<BalanceSummary>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

impl From<RefundRow> for RefundView {
    fn from(r: RefundRow) -> RefundView {
        RefundView {
            id: r.id,
            top_up_id: r.top_up_id,
            tenant_id: r.tenant_id,
            kind: r.kind,
            origin: r.origin,
            status: r.status,
            amount: Money::from_db(r.amount),
            currency: r.currency,
            reason: r.reason,
            clawed_back: ClawedBack { paid: Money::from_db(r.clawed_paid), bonus: Money::from_db(r.clawed_bonus) },
            shortfall: Money::from_db(r.shortfall),
            provider_ref: r.provider_ref,
            error: r.error,
            balance: None,
            created_at: r.created_at,
            completed_at: r.completed_at,
        }
    }
}

/// The part of a top-up's `bonus` that follows a refund of `amount` of its `paid`, after
/// earlier refunds of `before` that took `before_share`: the bonus in proportion to all
/// refunded so far, rounded half-up, less what earlier refunds took. The whole top-up
/// refunded takes exactly the whole bonus.
pub fn bonus_share(paid: Money, bonus: Money, before: Money, before_share: Money, amount: Money) -> AppResult<Money> {
    if bonus.is_zero() || !paid.is_positive() {
        return Ok(Money::ZERO);
    }
    let after = before.checked_add(amount).ok_or_else(|| AppError::internal("refund sum overflow"))?;
    let target = if after >= paid {
        bonus
    } else {
        Money::round_cost(bonus.as_decimal() * after.as_decimal() / paid.as_decimal())?.min(bonus)
    };
    Ok(target.checked_sub(before_share).filter(|s| !s.is_negative()).unwrap_or(Money::ZERO))
}

/// What one clawback takes and what it cannot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub paid: Money,
    pub bonus: Money,
    pub shortfall: Money,
}

/// Takes `amount` from `paid` and `share` from the lot's `lot_remaining`, each as far as
/// it goes.
pub fn plan(amount: Money, share: Money, paid: Money, lot_remaining: Money) -> Plan {
    let (p, b) = (amount.min(paid).max(Money::ZERO), share.min(lot_remaining).max(Money::ZERO));
    let short = |want: Money, got: Money| want.checked_sub(got).expect("got <= want");
    let shortfall = short(amount, p).checked_add(short(share, b)).expect("parts of valid amounts");
    Plan { paid: p, bonus: b, shortfall }
}

/// A top-up as a refund sees it, read under the tenant's lock, with what its refunds and
/// reversals (not failed) already take.
#[derive(Debug, Clone)]
pub struct Refundable {
    pub status: TopUpStatus,
    pub amount: Money,
    pub bonus: Money,
    pub lot: Option<Uuid>,
    pub currency: String,
    pub provider_ref: Option<String>,
    pub refunded: Money,
    pub shared: Money,
}

impl Refundable {
    /// What may still go back to the card.
    pub fn left(&self) -> Money {
        self.amount.checked_sub(self.refunded).filter(|m| !m.is_negative()).unwrap_or(Money::ZERO)
    }

    pub fn share_of(&self, amount: Money) -> AppResult<Money> {
        bonus_share(self.amount, self.bonus, self.refunded, self.shared, amount)
    }
}

/// Reads the tenant's top-up and its refunds so far (leaving out `except`). 404: no such
/// top-up for this tenant. The caller holds the tenant's ledger lock.
pub async fn refundable(
    tx: &mut PgConnection,
    tenant: Uuid,
    top_up: Uuid,
    except: Option<Uuid>,
) -> AppResult<Refundable> {
    type Row = (TopUpStatus, Decimal, Decimal, Option<Uuid>, String, Option<String>, Decimal, Decimal);
    let row: Option<Row> = sqlx::query_as(
        "SELECT u.status, u.amount, u.bonus_amount, u.bonus_lot_id, u.currency, u.provider_ref, \
           COALESCE(sum(r.amount), 0), COALESCE(sum(r.bonus_share), 0) \
         FROM top_ups u LEFT JOIN top_up_refunds r ON r.tenant_id = u.tenant_id AND r.top_up_id = u.id \
           AND r.status <> 'failed' AND r.id IS DISTINCT FROM $3 \
         WHERE u.tenant_id = $1 AND u.id = $2 GROUP BY u.tenant_id, u.id",
    )
    .bind(tenant)
    .bind(top_up)
    .bind(except)
    .fetch_optional(tx)
    .await?;
    let (status, amount, bonus, lot, currency, provider_ref, refunded, shared) = row.ok_or(AppError::NotFound)?;
    Ok(Refundable {
        status,
        amount: Money::from_db(amount),
        bonus: Money::from_db(bonus),
        lot,
        currency,
        provider_ref,
        refunded: Money::from_db(refunded),
        shared: Money::from_db(shared),
    })
}

/// A new `top_up_refunds` row.
pub struct NewRefund<'a> {
    pub tenant: Uuid,
    pub top_up: Uuid,
    pub kind: RefundKind,
    pub origin: RefundOrigin,
    pub amount: Money,
    pub share: Money,
    pub currency: &'a str,
    pub reason: &'a str,
    pub provider_ref: Option<&'a str>,
    pub claim: Option<&'a Claim>,
    pub actor: &'a str,
    /// A refund through Tally is leased for its first provider call (and the sweep takes
    /// it up when the lease ends without an answer recorded).
    pub lease: Option<std::time::Duration>,
}

/// Inserts a pending row in the caller's transaction (under the tenant's lock). `None`: a
/// row for the same provider object exists already.
pub async fn insert(tx: &mut PgConnection, n: NewRefund<'_>) -> AppResult<Option<RefundRow>> {
    let id = crate::ids::new_id();
    let key_prefix = match n.origin {
        RefundOrigin::Tally => "tally_refund",
        RefundOrigin::Provider => "tally_reversal",
    };
    let lease = n.lease.map(|d| d.as_secs_f64());
    Ok(sqlx::query_as(&format!(
        "INSERT INTO top_up_refunds (tenant_id, id, top_up_id, kind, origin, status, amount, bonus_share, currency, \
           reason, provider_key, provider_ref, idempotency_key, idempotency_side, fingerprint, actor, attempts, \
           lease_until, retry_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
           CASE WHEN $16::float8 IS NULL THEN 0 ELSE 1 END, now() + make_interval(secs => $16), \
           now() + make_interval(secs => $16), now()) \
         ON CONFLICT DO NOTHING RETURNING {COLUMNS}"
    ))
    .bind(n.tenant)
    .bind(id)
    .bind(n.top_up)
    .bind(n.kind)
    .bind(n.origin)
    .bind(n.amount.as_decimal())
    .bind(n.share.as_decimal())
    .bind(n.currency)
    .bind(n.reason)
    .bind(format!("{key_prefix}_{id}"))
    .bind(n.provider_ref)
    .bind(n.claim.map(|c| c.key.0.as_str()))
    .bind(n.claim.map(|c| c.side))
    .bind(n.claim.map(|c| &c.fp[..]))
    .bind(n.actor)
    .bind(lease)
    .fetch_optional(tx)
    .await?)
}

/// Decides and stages the clawback of a row under the tenant's lock: its amount from the
/// tenant's paid credit, its bonus share from the top-up's own lot (if still spendable).
pub fn take_back(books: &mut Books, row: &RefundRow, lot: Option<Uuid>) -> AppResult<(Plan, Option<Staged>)> {
    let (tenant, now) = (row.tenant_id, books.now);
    let locked = books.locked(tenant)?;
    let lot_remaining =
        lot.and_then(|id| locked.funds.lots.iter().find(|l| l.id == id)).map_or(Money::ZERO, |l| l.remaining);
    let plan = plan(Money::from_db(row.amount), Money::from_db(row.bonus_share), locked.funds.paid, lot_remaining);
    if plan.paid.is_zero() && plan.bonus.is_zero() {
        return Ok((plan, None));
    }
    let lots = match lot {
        Some(lot) if plan.bonus.is_positive() => vec![LotPart { lot, amount: plan.bonus }],
        _ => Vec::new(),
    };
    let what = match row.kind {
        RefundKind::Refund => "Top-up refunded",
        RefundKind::Reversal => "Top-up payment reversed",
    };
    let draft = Draft::new(TxnKind::TopUpRefund, now)
        .description(Some(format!("{what}: {}", row.reason)))
        .reference(json!({
            "top_up_id": row.top_up_id, "refund_id": row.id, "kind": row.kind, "origin": row.origin,
            "provider_ref": row.provider_ref,
        }))
        .actor(&row.actor)
        .debit_funding(&Funding { lots, paid: plan.paid })
        .entry(Account::Clearing, plan.paid)
        .entry(Account::Promotions, plan.bonus);
    Ok((plan, Some(books.stage(tenant, draft)?)))
}

/// Records a row's success in the movement's transaction: what was taken, its transaction,
/// the event (`top_up.refunded`, or `payment.reversed` for a reversal), and the view with
/// the balance after.
pub async fn finish(
    tx: &mut PgConnection,
    books: &Books,
    row: &RefundRow,
    plan: Plan,
    staged: Option<Staged>,
    provider_ref: Option<&str>,
) -> AppResult<RefundView> {
    let done: RefundRow = sqlx::query_as(&format!(
        "UPDATE top_up_refunds SET status = 'succeeded', clawed_paid = $3, clawed_bonus = $4, shortfall = $5, \
           transaction_id = $6, provider_ref = COALESCE($7, provider_ref), completed_at = $8, lease_until = NULL, \
           retry_at = NULL, error = NULL \
         WHERE tenant_id = $1 AND id = $2 RETURNING {COLUMNS}"
    ))
    .bind(row.tenant_id)
    .bind(row.id)
    .bind(plan.paid.as_decimal())
    .bind(plan.bonus.as_decimal())
    .bind(plan.shortfall.as_decimal())
    .bind(staged.map(|s| books.draft(s).id))
    .bind(provider_ref)
    .bind(books.now)
    .fetch_one(&mut *tx)
    .await?;
    let mut view = RefundView::from(done);
    let event = match view.kind {
        RefundKind::Refund => EventType::TopUpRefunded,
        RefundKind::Reversal => EventType::PaymentReversed,
    };
    events::emit(tx, row.tenant_id, event, serde_json::to_value(&view).map_err(AppError::internal)?).await?;
    view.balance = Some(match staged {
        Some(s) => books.posted(s)?.after,
        None => books.locked(row.tenant_id)?.balances.summary()?,
    });
    Ok(view)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn m(s: &str) -> Money {
        s.parse().unwrap()
    }

    #[test]
    fn the_bonus_follows_in_proportion_and_adds_up() {
        // $100 top-up with a $10 bonus: $30 refunded takes $3 of it.
        assert_eq!(bonus_share(m("100"), m("10"), Money::ZERO, Money::ZERO, m("30")).unwrap(), m("3"));
        // Thirds of $10 with a $1 bonus: 0.333333, 0.333334 (cumulative rounding), 0.333333.
        let (p, b) = (m("10"), m("1"));
        let third = m("3.333333");
        let s1 = bonus_share(p, b, Money::ZERO, Money::ZERO, third).unwrap();
        let s2 = bonus_share(p, b, third, s1, third).unwrap();
        let s3 = bonus_share(p, b, m("6.666666"), s1.checked_add(s2).unwrap(), m("3.333334")).unwrap();
        assert_eq!(Money::checked_sum([s1, s2, s3]).unwrap(), b, "{s1} {s2} {s3}");
        assert_eq!(bonus_share(m("100"), Money::ZERO, Money::ZERO, Money::ZERO, m("50")).unwrap(), Money::ZERO);
    }

    #[test]
    fn spent_credit_is_a_shortfall_never_a_negative_balance() {
        assert_eq!(
            plan(m("50"), m("5"), m("80"), m("5")),
            Plan { paid: m("50"), bonus: m("5"), shortfall: Money::ZERO }
        );
        assert_eq!(plan(m("50"), m("5"), m("20"), m("1")), Plan { paid: m("20"), bonus: m("1"), shortfall: m("34") });
        assert_eq!(
            plan(m("50"), m("5"), Money::ZERO, Money::ZERO),
            Plan { paid: Money::ZERO, bonus: Money::ZERO, shortfall: m("55") }
        );
    }

    proptest! {
        #[test]
        fn partial_refunds_take_exactly_the_bonus_and_never_more(
            paid_cents in 100i64..1_000_000,
            bonus_pct in 0i64..100,
            cuts in proptest::collection::vec(1i64..1_000_000, 1..8),
            spendable in 0i64..2_000_000,
        ) {
            let d = |c: i64| Money::from_decimal(Decimal::new(c, 2)).unwrap();
            let paid = d(paid_cents);
            let bonus = Money::round_cost(paid.as_decimal() * Decimal::new(bonus_pct, 2)).unwrap();
            let (mut before, mut shared) = (Money::ZERO, Money::ZERO);
            let mut left_cents = paid_cents;
            for (i, c) in cuts.iter().enumerate() {
                let take = if i + 1 == cuts.len() { left_cents } else { (*c).min(left_cents) };
                if take == 0 { break; }
                left_cents -= take;
                let amount = d(take);
                let share = bonus_share(paid, bonus, before, shared, amount).unwrap();
                prop_assert!(!share.is_negative());
                before = before.checked_add(amount).unwrap();
                shared = shared.checked_add(share).unwrap();
                prop_assert!(shared <= bonus);
                let p = plan(amount, share, d(spendable), share);
                prop_assert!(p.paid <= amount && p.bonus <= share && !p.shortfall.is_negative());
                prop_assert_eq!(
                    p.paid.checked_add(p.bonus).unwrap().checked_add(p.shortfall).unwrap(),
                    amount.checked_add(share).unwrap()
                );
            }
            prop_assert_eq!(before, paid);
            prop_assert_eq!(shared, bonus, "refunds of the whole top-up take the whole bonus");
        }
    }
}
