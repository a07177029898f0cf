//! Reading a client's usage record (a JSON object) strictly.
//!
//! Invariants: once [`Usage::new`] succeeds the object has no field the rule does not
//! know and every required field is present; the typed getters then refuse any value of
//! the wrong shape. Counts are JSON integers only: a float such as `5.0`, a string or a
//! negative number is refused rather than truncated, because a billing record that needs
//! guessing is a bug upstream. The one exception is `seconds`, which may be fractional
//! and is then written as a decimal string so no binary float is ever involved.

use rust_decimal::Decimal;
use serde_json::{Map, Value};

use super::rule::MAX_SECONDS_DECIMALS;
use super::{dec, PricingError};

/// Widths and heights above this are refused outright: no model renders them, and the cap
/// keeps `width × height` exact.
pub(crate) const MAX_DIMENSION: u64 = 1_000_000;

pub(crate) struct Usage<'a> {
    model: &'a str,
    map: &'a Map<String, Value>,
}

impl<'a> Usage<'a> {
    /// `known` is the rule's `(field, required)` list.
    pub(crate) fn new(model: &'a str, usage: &'a Value, known: &[(&str, bool)]) -> Result<Self, PricingError> {
        let map = usage.as_object().ok_or(PricingError::UsageNotObject)?;
        if let Some(field) = map.keys().find(|k| !known.iter().any(|(f, _)| f == k)) {
            return Err(PricingError::UnknownUsageField { model: model.into(), field: field.clone() });
        }
        if let Some((field, _)) = known.iter().find(|(f, required)| *required && !map.contains_key(*f)) {
            return Err(PricingError::MissingUsageField { model: model.into(), field: (*field).into() });
        }
        Ok(Usage { model, map })
    }

    pub(crate) fn model(&self) -> &str {
        self.model
    }

    /// A non-negative JSON integer, or `None` when absent.
    pub(crate) fn count(&self, field: &str) -> Result<Option<u64>, PricingError> {
        match self.map.get(field) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| PricingError::usage(field, "a non-negative whole number")),
        }
    }

    /// An image dimension: a JSON integer from 1 to [`MAX_DIMENSION`].
    pub(crate) fn dimension(&self, field: &str) -> Result<u64, PricingError> {
        match self.map.get(field).and_then(Value::as_u64) {
            Some(n) if (1..=MAX_DIMENSION).contains(&n) => Ok(n),
            _ => Err(PricingError::usage(field, "a positive whole number of pixels, at most 1000000")),
        }
    }

    /// A positive duration: a JSON integer, or a decimal string such as `"7.5"`.
    pub(crate) fn seconds(&self, field: &str) -> Result<Decimal, PricingError> {
        const EXPECTED: &str =
            "a positive number of seconds: a whole number, or a decimal string such as \"7.5\" with at most 3 decimals";
        let d = match self.map.get(field) {
            Some(Value::Number(n)) => n.as_u64().map(Decimal::from),
            // Milliseconds: the precision the rule's decimal budget leaves.
            Some(Value::String(s)) => dec::parse_strict(s).filter(|d| d.normalize().scale() <= MAX_SECONDS_DECIMALS),
            _ => None,
        };
        match d {
            Some(d) if d > Decimal::ZERO => Ok(d),
            _ => Err(PricingError::usage(field, EXPECTED)),
        }
    }

    /// A JSON string.
    pub(crate) fn string(&self, field: &str) -> Result<&'a str, PricingError> {
        self.map.get(field).and_then(Value::as_str).ok_or_else(|| PricingError::usage(field, "a string"))
    }

    /// A list of distinct strings; absent means empty.
    pub(crate) fn string_set(&self, field: &str) -> Result<Vec<&'a str>, PricingError> {
        let Some(v) = self.map.get(field) else {
            return Ok(Vec::new());
        };
        let list = v.as_array().ok_or_else(|| PricingError::usage(field, "a list of feature names"))?;
        let mut out: Vec<&str> = Vec::with_capacity(list.len());
        for item in list {
            let s = item.as_str().ok_or_else(|| PricingError::usage(field, "a list of feature names"))?;
            if out.contains(&s) {
                return Err(PricingError::DuplicateFeature { feature: s.into() });
            }
            out.push(s);
        }
        Ok(out)
    }
}
