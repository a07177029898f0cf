//! The runway in the balance: how fast the tenant spends and how long `available` lasts
//! at that pace.
//!
//! `daily_burn` is the net usage (charges minus refunds) of the last [`BASIS_DAYS`] days
//! divided by that many days, as money (rounded once, half-up, to 6 decimals);
//! `days_left` is `available / daily_burn` rounded DOWN to one decimal, a JSON number, or
//! `null` when there was no net usage. Pure, over a net-usage figure read by
//! [`net_usage`].

use chrono::{DateTime, Duration, Utc};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Serialize, Serializer};
use sqlx::PgPool;
use uuid::Uuid;

use super::days;
use crate::error::AppResult;
use crate::money::Money;

pub const BASIS_DAYS: u32 = 7;

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Runway {
    pub daily_burn: Money,
    /// Days `available` lasts at `daily_burn`, rounded down to one decimal; `null` with
    /// no usage in the basis window.
    #[serde(serialize_with = "one_decimal_number")]
    #[schema(value_type = Option<f64>)]
    pub days_left: Option<Decimal>,
    pub basis_days: u32,
}

/// A JSON number with one decimal. Not money: a count of days, printed as the number it is
/// (`12.3`); the value itself was computed exactly.
fn one_decimal_number<S: Serializer>(d: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
    match d.and_then(|d| d.to_f64()) {
        Some(f) => s.serialize_f64(f),
        None => s.serialize_none(),
    }
}

/// The runway of a tenant with `available` that used `net_usage` over the basis window.
pub fn runway(available: Money, net_usage: Money) -> Runway {
    let burn = if net_usage.is_positive() {
        Money::round_cost(net_usage.as_decimal() / Decimal::from(BASIS_DAYS)).unwrap_or(Money::ZERO)
    } else {
        Money::ZERO
    };
    let days_left = burn
        .is_positive()
        .then(|| (available.as_decimal() / burn.as_decimal()).round_dp_with_strategy(1, RoundingStrategy::ToZero));
    Runway { daily_burn: burn, days_left, basis_days: BASIS_DAYS }
}

/// Net usage (charges minus refunds) in the basis window that ends at `now`: from
/// `now - BASIS_DAYS` (excluded) to `now` (included).
///
/// Whole days from `usage_rollups`, the two partial edge days from the charges and refunds
/// by time: the same few rows whatever the length of the history. Each edge is its own
/// subquery (LATERAL, aggregated), so it is always an index range scan of that edge, never
/// a join against the tenant's whole history.
pub async fn net_usage(pool: &PgPool, tenant: Uuid, now: DateTime<Utc>) -> AppResult<Money> {
    // (since, now] is [since + 1 µs, now + 1 µs) at the database's microsecond precision.
    let tick = Duration::microseconds(1);
    let split = days::split(Some(now - Duration::days(i64::from(BASIS_DAYS)) + tick), Some(now + tick));
    let net: Decimal = sqlx::query_scalar(
        "SELECT COALESCE((SELECT sum(amount) FROM usage_rollups WHERE tenant_id = $1 AND dim = 'model' AND $2 \
                          AND day >= $3 AND day < $4), 0) \
              + COALESCE((SELECT sum(x.net) FROM unnest($5::timestamptz[], $6::timestamptz[]) AS w(s, e) \
                          CROSS JOIN LATERAL ( \
                            SELECT COALESCE((SELECT sum(amount) FROM charges WHERE tenant_id = $1 \
                                               AND created_at >= w.s AND created_at < w.e), 0) \
                                 - COALESCE((SELECT sum(amount) FROM refunds WHERE tenant_id = $1 \
                                               AND created_at >= w.s AND created_at < w.e), 0) AS net) x), 0)",
    )
    .bind(tenant)
    .bind(split.has_days())
    .bind(split.first_day())
    .bind(split.end_day())
    .bind(split.edge_starts())
    .bind(split.edge_ends())
    .fetch_one(pool)
    .await?;
    Ok(Money::from_db(net))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(s: &str) -> Money {
        s.parse().unwrap()
    }

    #[test]
    fn burn_and_days_left() {
        let r = runway(m("100"), m("70"));
        assert_eq!((r.daily_burn, r.days_left, r.basis_days), (m("10"), Some(Decimal::new(100, 1)), 7));
        assert_eq!(serde_json::to_value(&r).unwrap()["days_left"], serde_json::json!(10.0));
        // 50 / (10/7 = 1.428571) = 35.0000...: rounded down, never up.
        let r = runway(m("50"), m("10"));
        assert_eq!(r.daily_burn, m("1.428571"));
        assert_eq!(r.days_left, Some(Decimal::new(350, 1)));
        assert_eq!(runway(m("1"), m("21")).days_left, Some(Decimal::new(3, 1)), "1/3 = 0.33 → 0.3");
        assert_eq!(
            serde_json::to_string(&runway(m("1"), m("21"))).unwrap(),
            r#"{"daily_burn":"3.00","days_left":0.3,"basis_days":7}"#
        );
        assert_eq!(runway(m("0"), m("7")).days_left, Some(Decimal::ZERO));
    }

    #[test]
    fn no_usage_no_days_left() {
        for net in ["0", "-5", "0.000001"] {
            let r = runway(m("100"), m(net));
            assert_eq!(r.days_left, None, "{net}");
            assert_eq!(serde_json::to_value(&r).unwrap()["days_left"], serde_json::Value::Null);
        }
    }

    proptest! {
        #[test]
        fn days_left_is_floored_to_a_tenth(avail in 0i64..10_000_000_000, net in 1i64..10_000_000_000) {
            let (a, n) = (Money::from_decimal(Decimal::new(avail, 2)).unwrap(), Money::from_decimal(Decimal::new(net, 2)).unwrap());
            let r = runway(a, n);
            let d = r.days_left.unwrap();
            let exact = a.as_decimal() / r.daily_burn.as_decimal();
            prop_assert!(d <= exact && exact - d < Decimal::new(1, 1));
            prop_assert!(d.scale() <= 1);
            let printed = serde_json::to_value(&r).unwrap()["days_left"].as_f64().unwrap();
            prop_assert_eq!(Decimal::from_f64_retain(printed).unwrap().round_dp(1), d);
        }
    }
}
