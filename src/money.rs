//! Money: the one type every amount of dollars passes through.
//!
//! Invariants:
//! - a `Money` never holds more than [`SCALE`] decimal places and never exceeds
//!   [`Money::MAX`] in magnitude, so every value fits the ledger's `NUMERIC(20,6)`;
//! - parsing refuses, never rounds: `"1.0000001"` is an error, not `"1.000000"`;
//! - arithmetic is checked: an overflow is an `Option::None`, never a wrap or a panic;
//! - JSON carries money only as strings (`"12.50"`); a JSON number is refused.
//!
//! The single rounding rule of the service lives here too: [`Money::round_cost`]
//! turns an exact price (which may carry many decimals) into money, half-up.

use std::fmt;
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// Decimal places the ledger stores: micro-dollars.
pub const SCALE: u32 = 6;

/// An amount of money in the tenant's currency, at most 6 decimals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Money(Decimal);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("not a decimal number: write it as a string such as \"12.50\"")]
    Syntax,
    #[error("at most {SCALE} decimal places are allowed")]
    TooManyDecimals,
    #[error("amount is out of range")]
    OutOfRange,
}

impl Money {
    pub const ZERO: Money = Money(Decimal::ZERO);
    /// One trillion dollars: far above any real balance, far below NUMERIC(20,6)'s limit,
    /// so sums of many maximal amounts still fit the database column.
    pub const MAX: Money = Money(Decimal::from_parts(0xD4A5_1000, 0xE8, 0, false, 0));

    /// Accepts a decimal with at most [`SCALE`] places within ±[`Money::MAX`].
    pub fn from_decimal(d: Decimal) -> Result<Money, MoneyError> {
        let d = d.normalize();
        if d.scale() > SCALE {
            return Err(MoneyError::TooManyDecimals);
        }
        if d.abs() > Self::MAX.0 {
            return Err(MoneyError::OutOfRange);
        }
        Ok(Money(d))
    }

    /// Parses the strict textual form: optional `-`, digits, optional `.` and digits.
    /// No exponent, no `+`, no spaces, no thousands separators.
    pub fn parse(s: &str) -> Result<Money, MoneyError> {
        let digits = s.strip_prefix('-').unwrap_or(s);
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty() || !all_digits(int) || !all_digits(frac) || (digits.contains('.') && frac.is_empty()) {
            return Err(MoneyError::Syntax);
        }
        // Reject before Decimal parsing so a long fraction cannot be rounded silently by it.
        if frac.trim_end_matches('0').len() > SCALE as usize {
            return Err(MoneyError::TooManyDecimals);
        }
        if int.trim_start_matches('0').len() > 13 {
            return Err(MoneyError::OutOfRange);
        }
        let d = Decimal::from_str(s).map_err(|_| MoneyError::Syntax)?;
        Self::from_decimal(d)
    }

    /// The service's one rounding rule for costs: exact value rounded to 6 decimals,
    /// half away from zero (half-up for the positive amounts prices produce).
    pub fn round_cost(exact: Decimal) -> Result<Money, MoneyError> {
        Self::from_decimal(exact.round_dp_with_strategy(SCALE, RoundingStrategy::MidpointAwayFromZero))
    }

    /// A database value: `NUMERIC(20,6)` always fits; anything else is a corrupt row.
    pub fn from_db(d: Decimal) -> Money {
        Money(d.normalize())
    }

    pub fn as_decimal(self) -> Decimal {
        self.0
    }
    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }
    pub fn is_positive(self) -> bool {
        self.0 > Decimal::ZERO
    }
    pub fn is_negative(self) -> bool {
        self.0 < Decimal::ZERO
    }
    pub fn abs(self) -> Money {
        Money(self.0.abs())
    }

    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).and_then(|d| Self::from_decimal(d).ok())
    }
    pub fn checked_sub(self, other: Money) -> Option<Money> {
        self.0.checked_sub(other.0).and_then(|d| Self::from_decimal(d).ok())
    }
    /// Sums money; `None` when the total leaves the allowed range.
    pub fn checked_sum<I: IntoIterator<Item = Money>>(items: I) -> Option<Money> {
        items.into_iter().try_fold(Money::ZERO, Money::checked_add)
    }
    pub fn min(self, other: Money) -> Money {
        if self <= other {
            self
        } else {
            other
        }
    }
}

impl std::ops::Neg for Money {
    type Output = Money;
    fn neg(self) -> Money {
        Money(-self.0)
    }
}

impl FromStr for Money {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Money::parse(s)
    }
}

/// At least two decimal places, no trailing zeros beyond them: `12.50`, `0.000185`, `3.00`.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = self.0.normalize();
        if d.scale() < 2 {
            d.rescale(2);
        }
        if d.is_zero() {
            // Decimal keeps the sign of a negative zero; money does not.
            return f.write_str("0.00");
        }
        write!(f, "{d}")
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Money;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a decimal amount as a JSON string, such as \"12.50\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Money, E> {
                Money::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// The documented forms: [`Money::parse`] accepts these (and also leading zeros and
/// trailing zeros past the sixth decimal, and exactly `1000000000000`, which the document
/// leaves out to keep the patterns simple).
const MONEY_PATTERN: &str = r"^-?[0-9]{1,12}(\.[0-9]{1,6})?$";
/// The same, above zero: what every amount a client sends must be, except an adjustment.
/// (Without look-ahead, which not every regex engine reading the document has: the fraction
/// of `0.x` is one to six digits, not all zero, spelled out by where its first non-zero is.)
const POSITIVE_PATTERN: &str = r"^([1-9][0-9]{0,11}(\.[0-9]{1,6})?|0\.([1-9][0-9]{0,5}|0[1-9][0-9]{0,4}|00[1-9][0-9]{0,3}|000[1-9][0-9]{0,2}|0000[1-9][0-9]?|00000[1-9]))$";

fn money_schema(pattern: &str, description: &str, nullable: bool) -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{SchemaType, Type};
    let ty = if nullable { SchemaType::from_iter([Type::String, Type::Null]) } else { SchemaType::new(Type::String) };
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(ty)
        .pattern(Some(pattern))
        .description(Some(description))
        .examples([serde_json::json!("12.50")])
        .build()
}

impl utoipa::PartialSchema for Money {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        money_schema(MONEY_PATTERN, "Decimal amount as a string, at most 6 decimal places", false).into()
    }
}
impl utoipa::ToSchema for Money {}

impl Money {
    /// The schema of a request field that must be above zero (`#[schema(schema_with = …)]`).
    pub fn positive_schema() -> utoipa::openapi::schema::Object {
        money_schema(POSITIVE_PATTERN, "Positive decimal amount as a string, at most 6 decimal places", false)
    }
    /// [`Money::positive_schema`], or `null`.
    pub fn positive_or_null_schema() -> utoipa::openapi::schema::Object {
        money_schema(POSITIVE_PATTERN, "Positive decimal amount as a string, at most 6 decimal places; or null", true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(s: &str) -> Money {
        Money::parse(s).unwrap()
    }

    #[test]
    fn parses_and_refuses() {
        assert_eq!(m("12.5").to_string(), "12.50");
        assert_eq!(m("0.000185").to_string(), "0.000185");
        assert_eq!(m("3").to_string(), "3.00");
        assert_eq!(m("-5.00").to_string(), "-5.00");
        assert_eq!(m("1.100000").to_string(), "1.10");
        assert_eq!(m("-0").to_string(), "0.00");
        assert_eq!(Money::parse("1.0000001"), Err(MoneyError::TooManyDecimals));
        assert_eq!(Money::parse("1.12345670"), Err(MoneyError::TooManyDecimals));
        for bad in ["", "-", ".5", "5.", "1e3", "1e30", "+1", " 1", "1,000", "abc", "0x10", "1.2.3", "NaN"] {
            assert!(Money::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(Money::parse("10000000000000"), Err(MoneyError::OutOfRange));
        assert_eq!(Money::parse("1000000000000").unwrap(), Money::MAX);
        assert_eq!(Money::parse("99999999999999999999999999999"), Err(MoneyError::OutOfRange));
    }

    #[test]
    fn json_is_strings_only() {
        let ok: Money = serde_json::from_str("\"12.50\"").unwrap();
        assert_eq!(ok, m("12.5"));
        assert!(serde_json::from_str::<Money>("12.5").is_err());
        assert!(serde_json::from_str::<Money>("\"1.0000001\"").is_err());
        assert_eq!(serde_json::to_string(&m("0.1")).unwrap(), "\"0.10\"");
    }

    #[test]
    fn rounds_costs_half_up_once() {
        let d = |s: &str| Decimal::from_str(s).unwrap();
        assert_eq!(Money::round_cost(d("0.0000005")).unwrap(), m("0.000001"));
        assert_eq!(Money::round_cost(d("0.00000049999")).unwrap(), m("0"));
        assert_eq!(Money::round_cost(d("1.2345675")).unwrap(), m("1.234568"));
        assert_eq!(Money::round_cost(d("0.00000015")).unwrap(), m("0"));
    }

    #[test]
    fn arithmetic_is_checked() {
        assert_eq!(Money::MAX.checked_add(m("0.000001")), None);
        assert_eq!((-Money::MAX).checked_sub(m("1")), None);
        assert_eq!(m("1.10").checked_sub(m("0.10")), Some(m("1")));
    }

    fn any_money() -> impl Strategy<Value = Money> {
        (-1_000_000_000_000_000_000i64..=1_000_000_000_000_000_000i64)
            .prop_map(|micros| Money::from_decimal(Decimal::new(micros, SCALE)).unwrap())
    }

    proptest! {
        #[test]
        fn display_round_trips(a in any_money()) {
            let s = a.to_string();
            prop_assert_eq!(Money::parse(&s).unwrap(), a);
            let frac = s.split('.').nth(1).unwrap();
            prop_assert!(frac.len() >= 2 && frac.len() <= 6);
            prop_assert!(frac.len() == 2 || !frac.ends_with('0'));
        }

        #[test]
        fn json_round_trips(a in any_money()) {
            let j = serde_json::to_string(&a).unwrap();
            prop_assert_eq!(serde_json::from_str::<Money>(&j).unwrap(), a);
        }

        #[test]
        fn add_sub_inverse(a in any_money(), b in any_money()) {
            if let Some(s) = a.checked_add(b) {
                prop_assert_eq!(s.checked_sub(b), Some(a));
                prop_assert!(s.abs() <= Money::MAX);
            }
        }

        #[test]
        fn rounding_is_within_half_a_micro(micros in 0i64..1_000_000_000_000, extra in 0u32..10_000) {
            let exact = Decimal::new(micros, SCALE) + Decimal::new(extra as i64, SCALE + 4);
            let r = Money::round_cost(exact).unwrap().as_decimal();
            prop_assert!((r - exact).abs() <= Decimal::new(5, SCALE + 1));
        }

        #[test]
        fn too_many_decimals_refused(micros in 1i64..1_000_000, d in 1u32..9) {
            let s = format!("{}.{:06}{}", micros, micros % 1_000_000, d);
            prop_assert_eq!(Money::parse(&s), Err(MoneyError::TooManyDecimals));
        }
    }
}
