//! Auto top-up: its settings (`PUT/GET/DELETE …/auto-top-up`), the state other services
//! read, and the decision to start an attempt. What wakes it (every movement that takes a
//! tenant below its threshold) is the posting frame's, through `notify::low_balance`.
//!
//! Rules (see `attempts` for how an attempt runs):
//! - when `available` is below `threshold`, one attempt charges `n × amount` for the
//!   smallest whole `n ≥ 1` with `available + n × amount ≥ threshold` (the bonus it earns
//!   does not count), but never more than the top-up maximum (`TALLY_TOP_UP_MAX`, the same
//!   bound a manual top-up has): at most the largest whole multiple of `amount` under it,
//!   which is at least one `amount` since PUT refuses an `amount` above the maximum (were
//!   the maximum lowered below a saved `amount` later, no attempt is made, with a warning).
//!   With a `monthly_limit`, also at most the largest whole multiple that still fits this
//!   month's remaining room, and nothing when not even one `amount` fits;
//! - a gap larger than one attempt may charge is closed by successive attempts: after a
//!   success the tenant is looked at again (at once on this replica, and by every sweep),
//!   and while `available` is still below `threshold` the next attempt follows;
//! - `threshold` is not bounded above by PUT beyond what any amount is (`Money`'s range):
//!   it is the balance the tenant wants kept, not a charge. What one charge may be is
//!   bounded by the top-up maximum above, and what the card is charged over a month by
//!   `monthly_limit`, which may well be below the threshold (each month then tops up as far
//!   as the limit allows). A bound tied to neither would refuse legitimate settings of a
//!   large account without protecting anything those two do not already protect;
//! - at most one attempt in flight per tenant: decisions for a tenant are serialised by its
//!   locked `auto_top_up` row, and the unique partial index on pending automatic top-ups
//!   has the last word across replicas;
//! - declines back off (`TALLY_AUTO_TOP_UP_BACKOFF_MS`, ×4 per decline) and the third in a
//!   row turns auto top-up off with a reason; no answer from the provider is retried with
//!   the same key and is not a decline.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use super::attempts::{self, NewAttempt};
use super::payment_methods;
use super::records::{self, TopUpRow};
use super::MoneyIn;
use crate::error::{AppError, AppResult, AutoTopUpHint};
use crate::frame::{self, Books, Movement, Response};
use crate::money::Money;
use crate::services::notify::low_balance::{self, Setting};
use crate::vocab::{TenantStatus, TopUpSource, TopUpStatus};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AutoTopUpSummary {
    pub enabled: bool,
    pub threshold: Option<Money>,
    pub amount: Option<Money>,
    /// `idle`, `in_flight`, `backing_off` or `disabled`.
    pub state: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AutoTopUpRequest {
    pub enabled: bool,
    /// Top up when `available` falls below this.
    #[schema(schema_with = crate::money::Money::positive_schema)]
    pub threshold: Money,
    /// The unit charged; must satisfy the top-up limits.
    #[schema(schema_with = crate::money::Money::positive_schema)]
    pub amount: Money,
    /// At most this much auto top-up per calendar month (UTC).
    #[schema(schema_with = crate::money::Money::positive_or_null_schema)]
    pub monthly_limit: Option<Money>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LastAttempt {
    pub id: Uuid,
    pub status: TopUpStatus,
    pub amount: Money,
    pub error: Option<String>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AutoTopUpView {
    pub enabled: bool,
    pub threshold: Option<Money>,
    pub amount: Option<Money>,
    pub monthly_limit: Option<Money>,
    /// `idle`, `in_flight`, `backing_off` or `disabled`.
    pub state: String,
    pub consecutive_failures: i32,
    pub disabled_reason: Option<String>,
    pub last_attempt: Option<LastAttempt>,
    pub spent_this_month: Money,
}

fn state_of(enabled: bool, in_flight: bool, backing_off: bool) -> &'static str {
    match (enabled, in_flight, backing_off) {
        (false, ..) => "disabled",
        (true, true, _) => "in_flight",
        (true, false, true) => "backing_off",
        _ => "idle",
    }
}

type StateRow = (bool, Decimal, Decimal, Option<Decimal>, i32, Option<String>, bool, bool);

async fn state_row(conn: impl PgExecutor<'_>, tenant: Uuid) -> AppResult<Option<StateRow>> {
    Ok(sqlx::query_as(
        "SELECT a.enabled, a.threshold, a.amount, a.monthly_limit, a.consecutive_failures, a.disabled_reason, \
           EXISTS (SELECT 1 FROM top_ups p WHERE p.tenant_id = a.tenant_id AND p.source = 'auto' AND p.status = 'pending'), \
           COALESCE(a.next_attempt_at > now(), false) \
         FROM auto_top_up a WHERE a.tenant_id = $1",
    )
    .bind(tenant)
    .fetch_optional(conn)
    .await?)
}

pub async fn summary(conn: impl PgExecutor<'_>, tenant_id: Uuid) -> AppResult<AutoTopUpSummary> {
    Ok(match state_row(conn, tenant_id).await? {
        None => AutoTopUpSummary { enabled: false, threshold: None, amount: None, state: "disabled".into() },
        Some((enabled, threshold, amount, _, _, _, in_flight, backing_off)) => AutoTopUpSummary {
            enabled,
            threshold: Some(Money::from_db(threshold)),
            amount: Some(Money::from_db(amount)),
            state: state_of(enabled, in_flight, backing_off).into(),
        },
    })
}

/// What a refused charge says about auto top-up (read in the charge's transaction).
pub async fn hint(conn: &mut PgConnection, tenant_id: Uuid) -> AppResult<AutoTopUpHint> {
    let s = summary(conn, tenant_id).await?;
    Ok(AutoTopUpHint { enabled: s.enabled, in_flight: s.state == "in_flight" })
}

pub async fn get(pool: &PgPool, tenant: Uuid) -> AppResult<AutoTopUpView> {
    tenant_exists(pool, tenant).await?;
    let last: Option<(Uuid, TopUpStatus, Decimal, Option<String>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT id, status, amount, error, COALESCE(completed_at, last_attempt_at, created_at) FROM top_ups \
         WHERE tenant_id = $1 AND source = 'auto' ORDER BY id DESC LIMIT 1",
    )
    .bind(tenant)
    .fetch_optional(pool)
    .await?;
    let spent = spent_this_month(pool, tenant).await?;
    let last_attempt = last.map(|(id, status, amount, error, at)| LastAttempt {
        id,
        status,
        amount: Money::from_db(amount),
        error,
        at,
    });
    Ok(match state_row(pool, tenant).await? {
        None => AutoTopUpView {
            enabled: false,
            threshold: None,
            amount: None,
            monthly_limit: None,
            state: "disabled".into(),
            consecutive_failures: 0,
            disabled_reason: None,
            last_attempt,
            spent_this_month: spent,
        },
        Some((enabled, threshold, amount, limit, failures, reason, in_flight, backing_off)) => AutoTopUpView {
            enabled,
            threshold: Some(Money::from_db(threshold)),
            amount: Some(Money::from_db(amount)),
            monthly_limit: limit.map(Money::from_db),
            state: state_of(enabled, in_flight, backing_off).into(),
            consecutive_failures: failures,
            disabled_reason: reason,
            last_attempt,
            spent_this_month: spent,
        },
    })
}

/// Automatic top-ups this calendar month (UTC) that succeeded or are in flight.
async fn spent_this_month<'e>(conn: impl sqlx::PgExecutor<'e>, tenant: Uuid) -> AppResult<Money> {
    let spent: Decimal = sqlx::query_scalar(
        "SELECT COALESCE(sum(amount), 0) FROM top_ups WHERE tenant_id = $1 AND source = 'auto' \
           AND status IN ('succeeded', 'pending') AND created_at >= date_trunc('month', now())",
    )
    .bind(tenant)
    .fetch_one(conn)
    .await?;
    Ok(Money::from_db(spent))
}

/// Creates or replaces the settings. Enabling clears the failure count and back-off, and
/// wakes the worker: a tenant already below the threshold gets an attempt at once.
pub async fn put(mi: &MoneyIn, tenant: Uuid, req: AutoTopUpRequest) -> AppResult<AutoTopUpView> {
    if !req.threshold.is_positive() {
        return Err(AppError::invalid("threshold must be positive"));
    }
    records::check_amount(&mi.config, req.amount)?;
    // Every attempt charges a whole multiple of `amount`: the provider must take `amount` exactly.
    let currency: Option<String> = sqlx::query_scalar("SELECT currency FROM tenants WHERE id = $1")
        .bind(tenant)
        .fetch_optional(&mi.frame.pool)
        .await?;
    mi.provider.check_amount(req.amount, &currency.ok_or(AppError::NotFound)?).map_err(AppError::invalid)?;
    if req.monthly_limit.is_some_and(|l| l < req.amount) {
        return Err(AppError::invalid("monthly_limit must be at least amount"));
    }
    let (threshold, enabled) = (req.threshold, req.enabled);
    frame::transaction(&mi.frame.pool, move |tx| {
        Box::pin(async move {
            tenant_exists(&mut *tx, tenant).await?;
            if req.enabled && payment_methods::card(tx, tenant).await?.is_none() {
                return Err(AppError::unprocessable(
                    "no payment method on file: set one with PUT /v1/tenants/{tenant_id}/payment-method",
                ));
            }
            sqlx::query(
                "INSERT INTO auto_top_up (tenant_id, enabled, threshold, amount, monthly_limit, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, now()) \
                 ON CONFLICT (tenant_id) DO UPDATE SET enabled = $2, threshold = $3, amount = $4, monthly_limit = $5, updated_at = now(), \
                   consecutive_failures = CASE WHEN $2 THEN 0 ELSE auto_top_up.consecutive_failures END, \
                   disabled_reason = CASE WHEN $2 THEN NULL ELSE auto_top_up.disabled_reason END, \
                   next_attempt_at = CASE WHEN $2 THEN NULL ELSE auto_top_up.next_attempt_at END",
            )
            .bind(tenant)
            .bind(req.enabled)
            .bind(req.threshold.as_decimal())
            .bind(req.amount.as_decimal())
            .bind(req.monthly_limit.map(Money::as_decimal))
            .execute(&mut *tx)
            .await?;
            low_balance::announce(tx, tenant).await
        })
    })
    .await?;
    mi.low.remember(tenant, Some(Setting { threshold, enabled }));
    if enabled {
        mi.low.signal.nudge(tenant);
    }
    get(&mi.frame.pool, tenant).await
}

async fn tenant_exists(conn: impl PgExecutor<'_>, tenant: Uuid) -> AppResult<()> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenants WHERE id = $1)").bind(tenant).fetch_one(conn).await?;
    exists.then_some(()).ok_or(AppError::NotFound)
}

pub async fn delete(mi: &MoneyIn, tenant: Uuid) -> AppResult<()> {
    tenant_exists(&mi.frame.pool, tenant).await?;
    frame::transaction(&mi.frame.pool, move |tx| {
        Box::pin(async move {
            sqlx::query("UPDATE auto_top_up SET enabled = false, updated_at = now() WHERE tenant_id = $1")
                .bind(tenant)
                .execute(&mut *tx)
                .await?;
            low_balance::announce(tx, tenant).await
        })
    })
    .await?;
    mi.low.forget(tenant);
    Ok(())
}

/// What one attempt charges: see the module rules. Never above `max` (the top-up
/// maximum) nor, with a `limit`, above `limit - spent`; always a whole multiple of `amount`.
/// `None`: not even one `amount` fits (the monthly limit is reached, or `amount` is above
/// `max`).
pub fn attempt_amount(
    available: Money,
    threshold: Money,
    amount: Money,
    max: Money,
    limit: Option<Money>,
    spent: Money,
) -> Option<Money> {
    let (gap, step) = (threshold.as_decimal() - available.as_decimal(), amount.as_decimal());
    if step <= Decimal::ZERO {
        return None;
    }
    let mut n = (gap / step).ceil().max(Decimal::ONE);
    n = n.min((max.as_decimal() / step).floor());
    if let Some(limit) = limit {
        let room = ((limit.as_decimal() - spent.as_decimal()) / step).floor();
        n = n.min(room);
    }
    if n < Decimal::ONE {
        return None;
    }
    Money::from_decimal(n * step).ok()
}

/// Decides, under the tenant's `auto_top_up` row lock, whether an attempt is due, and
/// commits it (pending, leased, with its provider key). `None`: nothing to do now.
pub async fn begin_attempt(mi: &MoneyIn, tenant: Uuid) -> AppResult<Option<TopUpRow>> {
    mi.frame.run(Begin { tenant, mi: mi.clone(), row: None }).await
}

/// The decision to start an automatic attempt. It moves no money and locks no ledger:
/// the `auto_top_up` row lock serialises decisions for the tenant.
struct Begin {
    tenant: Uuid,
    mi: MoneyIn,
    row: Option<TopUpRow>,
}

impl Movement for Begin {
    type Output = Option<TopUpRow>;

    async fn decide(&mut self, tx: &mut PgConnection, _books: &mut Books) -> AppResult<()> {
        let tenant = self.tenant;
        let setting: Option<(Decimal, Decimal, Option<Decimal>)> = sqlx::query_as(
            "SELECT threshold, amount, monthly_limit FROM auto_top_up a WHERE tenant_id = $1 AND enabled \
               AND (next_attempt_at IS NULL OR next_attempt_at <= now()) \
               AND NOT EXISTS (SELECT 1 FROM top_ups p WHERE p.tenant_id = a.tenant_id AND p.source = 'auto' AND p.status = 'pending') \
             FOR UPDATE",
        )
        .bind(tenant)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((threshold, step, limit)) = setting else { return Ok(()) };
        // Read after taking the lock, so a credit committed meanwhile is seen.
        let (status, currency, available): (TenantStatus, String, Decimal) = sqlx::query_as(
            "SELECT t.status, b.currency, b.paid + COALESCE((SELECT sum(remaining) FROM bonus_lots l WHERE l.tenant_id = $1 \
               AND l.remaining > 0 AND (l.expires_at IS NULL OR l.expires_at > now())), 0) \
             FROM balances b JOIN tenants t ON t.id = b.tenant_id WHERE b.tenant_id = $1",
        )
        .bind(tenant)
        .fetch_one(&mut *tx)
        .await?;
        let (threshold, step) = (Money::from_db(threshold), Money::from_db(step));
        let available = Money::from_db(available);
        // A suspended tenant gets no automatic top-up either.
        if status != TenantStatus::Active || available >= threshold {
            return Ok(());
        }
        let config = &self.mi.config;
        let max = config.top_up_max;
        if step > max {
            tracing::warn!(%tenant, amount = %step, %max, "auto top-up skipped: its amount is above the top-up maximum");
            return Ok(());
        }
        let spent = spent_this_month(&mut *tx, tenant).await?;
        let Some(amount) = attempt_amount(available, threshold, step, max, limit.map(Money::from_db), spent) else {
            tracing::info!(%tenant, %spent, "auto top-up skipped: the monthly limit is reached");
            return Ok(());
        };
        let Some(card) = payment_methods::card(&mut *tx, tenant).await? else {
            tracing::warn!(%tenant, "auto top-up skipped: no payment method on file");
            return Ok(());
        };
        let new = NewAttempt {
            tenant,
            source: TopUpSource::Auto,
            amount,
            bonus: records::bonus_for(config, amount)?,
            currency: &currency,
            card: &card,
            claim: None,
            actor: "system:auto_top_up",
        };
        self.row = attempts::insert(tx, new, attempts::lease(config)).await?;
        Ok(())
    }

    fn finish(self, _: Vec<Response>) -> AppResult<Option<TopUpRow>> {
        Ok(self.row)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn m(s: &str) -> Money {
        s.parse().unwrap()
    }

    /// The default top-up maximum.
    fn max() -> Money {
        m("10000")
    }

    #[test]
    fn one_charge_closes_the_whole_gap_in_whole_units() {
        assert_eq!(attempt_amount(m("3"), m("10"), m("20"), max(), None, Money::ZERO), Some(m("20")));
        assert_eq!(attempt_amount(m("3"), m("50"), m("20"), max(), None, Money::ZERO), Some(m("60")));
        assert_eq!(
            attempt_amount(m("10"), m("50"), m("20"), max(), None, Money::ZERO),
            Some(m("40")),
            "exactly reaches it"
        );
        assert_eq!(
            attempt_amount(m("0"), m("0.5"), m("20"), max(), None, Money::ZERO),
            Some(m("20")),
            "n is at least 1"
        );
    }

    #[test]
    fn the_monthly_limit_caps_in_whole_units() {
        assert_eq!(attempt_amount(m("0"), m("60"), m("20"), max(), Some(m("100")), m("60")), Some(m("40")));
        assert_eq!(attempt_amount(m("0"), m("60"), m("20"), max(), Some(m("100")), m("90")), None);
        assert_eq!(attempt_amount(m("0"), m("10"), m("20"), max(), Some(m("20")), Money::ZERO), Some(m("20")));
    }

    #[test]
    fn the_top_up_maximum_caps_one_attempt_in_whole_units() {
        // The reviewer's case: a threshold far above the maximum is not one huge charge.
        assert_eq!(attempt_amount(m("0"), m("500000"), m("10"), max(), None, Money::ZERO), Some(m("10000")));
        assert_eq!(attempt_amount(m("0"), m("500000"), m("30"), max(), None, Money::ZERO), Some(m("9990")));
        assert_eq!(attempt_amount(m("0"), m("1000"), m("30"), m("100"), None, Money::ZERO), Some(m("90")));
        assert_eq!(attempt_amount(m("0"), m("1000"), m("100"), m("100"), None, Money::ZERO), Some(m("100")));
        // The next attempt, still below the threshold, continues; the last one only closes the gap.
        assert_eq!(attempt_amount(m("990"), m("1000"), m("30"), m("100"), None, Money::ZERO), Some(m("30")));
        // Both caps: the smaller wins.
        assert_eq!(attempt_amount(m("0"), m("1000"), m("30"), m("100"), Some(m("250")), m("180")), Some(m("60")));
        assert_eq!(attempt_amount(m("0"), m("1000"), m("30"), m("100"), Some(m("1000")), m("0")), Some(m("90")));
        // A maximum lowered below a saved amount: no attempt rather than one above it.
        assert_eq!(attempt_amount(m("0"), m("1000"), m("200"), m("100"), None, Money::ZERO), None);
    }

    proptest! {
        #[test]
        fn an_attempt_is_whole_units_within_every_bound_and_as_large_as_they_allow(
            available in 0i64..2_000_000,
            threshold in 1i64..100_000_000,
            amount in 1i64..20_000,
            max in 1i64..20_000,
            limit in proptest::option::of(1i64..200_000),
            spent in 0i64..200_000,
        ) {
            let d = |cents: i64| Money::from_decimal(Decimal::new(cents, 2)).unwrap();
            let (available, threshold, amount, max) = (d(available), d(threshold), d(amount), d(max));
            let (limit, spent) = (limit.map(d), d(spent));
            let room = limit.map(|l| l.as_decimal() - spent.as_decimal());
            let got = attempt_amount(available, threshold, amount, max, limit, spent);
            let fits = |x: Decimal| x <= max.as_decimal() && room.is_none_or(|r| x <= r);
            match got {
                None => prop_assert!(!fits(amount.as_decimal()), "one amount fits, yet no attempt"),
                Some(got) => {
                    let (g, a) = (got.as_decimal(), amount.as_decimal());
                    let n = g / a;
                    prop_assert!(n >= Decimal::ONE && n.fract().is_zero(), "{g} is not a whole multiple of {a}");
                    prop_assert!(fits(g), "{g} exceeds the maximum {max} or the month's room {room:?}");
                    let reached = available.as_decimal() + g >= threshold.as_decimal();
                    // Smallest that reaches the threshold, or else the largest that fits.
                    if reached {
                        prop_assert!(
                            n == Decimal::ONE || available.as_decimal() + g - a < threshold.as_decimal(),
                            "{g} is more than the gap needs"
                        );
                    } else {
                        prop_assert!(!fits(g + a), "{g} stops short although one more amount fits");
                    }
                }
            }
        }
    }

    #[test]
    fn states() {
        assert_eq!(state_of(false, true, true), "disabled");
        assert_eq!(state_of(true, true, true), "in_flight");
        assert_eq!(state_of(true, false, true), "backing_off");
        assert_eq!(state_of(true, false, false), "idle");
    }
}
