//! Strict JSON form of decimals in price rules and deals: strings, never numbers.
//!
//! Like [`Money`](crate::money::Money), parsing refuses rather than rounds: an exponent,
//! a `+`, an underscore, a JSON number or more digits than a `Decimal` holds exactly is
//! an error, so the price an operator wrote is the price the engine uses, digit for digit.
//! Serialisation writes the value as given (`"0.60"` stays `"0.60"`).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// Digits a `Decimal` always holds exactly (its 96-bit mantissa exceeds 10^28).
const MAX_DIGITS: usize = 28;

/// Parses `-?digits(.digits)?`, refusing anything that would need rounding.
pub(crate) fn parse_strict(s: &str) -> Option<Decimal> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !all_digits(int) || !all_digits(frac) || (digits.contains('.') && frac.is_empty()) {
        return None;
    }
    if int.trim_start_matches('0').len() + frac.len() > MAX_DIGITS || frac.len() > MAX_DIGITS {
        return None;
    }
    Decimal::from_str(s).ok()
}

/// Newtype carrying the strict (de)serialisation, reused for options and maps.
struct Strict(Decimal);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Strict;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a decimal number as a JSON string, such as \"0.15\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Strict, E> {
                parse_strict(v).map(Strict).ok_or_else(|| {
                    E::custom(format!("`{v}` is not a decimal number such as \"0.15\" (at most {MAX_DIGITS} digits)"))
                })
            }
        }
        d.deserialize_str(V)
    }
}

impl Serialize for Strict {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// `#[serde(with = "dec::str")]` for `Decimal`.
pub(crate) mod str {
    use super::*;
    pub(crate) fn serialize<S: Serializer>(v: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        Strict(*v).serialize(s)
    }
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        Strict::deserialize(d).map(|x| x.0)
    }
}

/// `#[serde(default, with = "dec::opt")]` for `Option<Decimal>`.
pub(crate) mod opt {
    use super::*;
    pub(crate) fn serialize<S: Serializer>(v: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
        v.map(Strict).serialize(s)
    }
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
        Ok(Option::<Strict>::deserialize(d)?.map(|x| x.0))
    }
}

/// `#[serde(with = "dec::map")]` for `BTreeMap<String, Decimal>`.
pub(crate) mod map {
    use super::*;
    pub(crate) fn serialize<S: Serializer>(v: &BTreeMap<String, Decimal>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(v.iter().map(|(k, d)| (k, Strict(*d))))
    }
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Decimal>, D::Error> {
        Ok(BTreeMap::<String, Strict>::deserialize(d)?.into_iter().map(|(k, v)| (k, v.0)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_decimals_only() {
        assert_eq!(parse_strict("0.15"), Some(Decimal::new(15, 2)));
        assert_eq!(parse_strict("0.00000015"), Some(Decimal::new(15, 8)));
        assert_eq!(parse_strict("-1"), Some(Decimal::NEGATIVE_ONE));
        assert_eq!(parse_strict("0.0000000000000000000000000001"), Some(Decimal::new(1, 28)));
        for bad in [
            "",
            ".5",
            "5.",
            "1e3",
            "+1",
            "1_000",
            " 1",
            "1,5",
            "NaN",
            "0x1",
            "1.2.3",
            "-",
            "0.00000000000000000000000000001",
        ] {
            assert_eq!(parse_strict(bad), None, "{bad:?} should be refused");
        }
    }

    #[derive(Deserialize, Serialize)]
    struct T {
        #[serde(with = "super::str")]
        a: Decimal,
        #[serde(default, with = "super::opt")]
        b: Option<Decimal>,
        #[serde(default, with = "super::map")]
        c: BTreeMap<String, Decimal>,
    }

    #[test]
    fn json_is_strings_only() {
        let t: T = serde_json::from_str(r#"{"a": "0.60", "c": {"x": "1.5"}}"#).unwrap();
        assert_eq!(t.a, Decimal::new(60, 2));
        assert_eq!(t.b, None);
        assert_eq!(serde_json::to_string(&t).unwrap(), r#"{"a":"0.60","b":null,"c":{"x":"1.5"}}"#);
        assert!(serde_json::from_str::<T>(r#"{"a": 0.6}"#).is_err());
        assert!(serde_json::from_str::<T>(r#"{"a": "1e2"}"#).is_err());
        assert!(serde_json::from_str::<T>(r#"{"a": "1", "b": 5}"#).is_err());
        assert!(serde_json::from_str::<T>(r#"{"a": "1", "c": {"x": 1}}"#).is_err());
    }
}
