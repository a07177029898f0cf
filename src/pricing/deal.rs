//! Per-tenant custom pricing ("deals") and how a deal changes a model's price rule.
//!
//! A tenant either pays list price, or has a [`TenantPricing`]:
//! - `discount_percent` applies to every model the deal does not mention;
//! - `models.<model>.discount_percent` replaces it for that model;
//! - `models.<model>.components` replaces the rule's components of the same names with
//!   the tenant's own prices, and then *no* percentage discount applies to that model:
//!   a negotiated price list is the whole deal, discounting it again would double-count.
//!
//! Invariants: percentages are in [0, 100] with at most 2 decimals, so the price factor
//! `1 − d/100` is exact and never above 1 (a deal can only lower prices by percentage). An override
//! names an existing component, has the same `type` and, for `per_unit`, reads the same
//! usage field, so a tenant's deal never changes which usage records are valid — it only
//! changes prices. Those last checks need the rule and happen at quote time.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{book, dec, exact, Component, PriceRule, PricingError};

/// Per-tenant deal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "discount_percent": "10",
    "models": {
        "claude-sonnet": {"discount_percent": "25"},
        "gpt-4o-mini": {"components": [
            {"type": "per_unit", "name": "input_tokens", "field": "input_tokens", "unit_price": "0.10", "per": 1000000}
        ]}
    }
}))]
pub struct TenantPricing {
    /// Percentage off list price for every model without its own entry, e.g. `"10"`.
    #[serde(default, with = "dec::opt", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "10")]
    pub discount_percent: Option<Decimal>,
    /// Model name → that model's deal.
    #[serde(default)]
    pub models: BTreeMap<String, ModelDeal>,
}

/// One model's deal: exactly one of `discount_percent` or `components`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelDeal {
    /// Percentage off this model's list price, replacing the tenant-wide one.
    #[serde(default, with = "dec::opt", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "25")]
    pub discount_percent: Option<Decimal>,
    /// Replacements for the rule's components of the same names (same `type`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub components: Option<Vec<Component>>,
}

/// Two places (`12.25`) keeps `1 − d/100` at four, which the rule's decimal budget assumes.
const MAX_PERCENT_DECIMALS: u32 = 2;

fn check_percent(field: &str, d: Decimal) -> Result<(), PricingError> {
    if d < Decimal::ZERO || d > Decimal::ONE_HUNDRED {
        return Err(PricingError::deal(field, "must be a percentage between 0 and 100"));
    }
    if d.normalize().scale() > MAX_PERCENT_DECIMALS {
        return Err(PricingError::deal(field, format!("must have at most {MAX_PERCENT_DECIMALS} decimal places")));
    }
    Ok(())
}

/// `1 − d/100`; exact for any percentage [`check_percent`] accepts.
fn factor(field: &str, d: Decimal) -> Result<Decimal, PricingError> {
    check_percent(field, d)?;
    exact::shift_down(d, 2)
        .and_then(|f| exact::add(Decimal::ONE, -f))
        .ok_or_else(|| PricingError::deal(field, "cannot be applied exactly"))
}

impl ModelDeal {
    fn validate_at(&self, path: &str) -> Result<(), PricingError> {
        match (&self.discount_percent, &self.components) {
            (Some(_), Some(_)) => Err(PricingError::deal(
                path,
                "sets both `discount_percent` and `components`; a model deal has one or the other",
            )),
            (None, None) => Err(PricingError::deal(path, "must set `discount_percent` or `components`")),
            (Some(d), None) => check_percent(&format!("{path}.discount_percent"), *d),
            (None, Some(components)) => {
                if components.is_empty() {
                    return Err(PricingError::deal(format!("{path}.components"), "must list at least one component"));
                }
                for (i, c) in components.iter().enumerate() {
                    let at = format!("{path}.components[{i}]");
                    // Reuse the rule checks, but report them as deal fields.
                    c.validate_at(&at).map_err(|e| match e {
                        PricingError::InvalidRule { field, problem } => PricingError::InvalidDeal { field, problem },
                        other => other,
                    })?;
                    if components[..i].iter().any(|o| o.name() == c.name()) {
                        return Err(PricingError::deal(
                            format!("{at}.name"),
                            format!("`{}` is overridden twice", c.name()),
                        ));
                    }
                }
                Ok(())
            }
        }
    }
}

impl TenantPricing {
    /// Checks what can be checked without the price rules: percentage ranges, one-or-the-other
    /// model entries, well-formed override components.
    pub fn validate(&self) -> Result<(), PricingError> {
        if let Some(d) = self.discount_percent {
            check_percent("discount_percent", d)?;
        }
        for (model, deal) in &self.models {
            if let Err(e) = book::validate_model_name(model) {
                return Err(PricingError::deal("models", e.to_string()));
            }
            deal.validate_at(&format!("models.{model}"))?;
        }
        Ok(())
    }
}

/// A rule as one tenant pays for it.
pub(crate) struct Effective<'a> {
    /// Multiplies every unit price: `1 − discount/100`, or exactly 1.
    pub factor: Decimal,
    /// The rule's components in rule order, overrides swapped in.
    pub components: Vec<&'a Component>,
}

/// Applies `deal` to `rule`. Only the parts of the deal that matter for `model` are checked,
/// so a quote stays cheap however many models a deal lists.
pub(crate) fn effective<'a>(
    model: &str,
    rule: &'a PriceRule,
    deal: Option<&'a TenantPricing>,
) -> Result<Effective<'a>, PricingError> {
    let list = || rule.components.iter().collect();
    let Some(deal) = deal else {
        return Ok(Effective { factor: Decimal::ONE, components: list() });
    };
    let Some(model_deal) = deal.models.get(model) else {
        let factor = match deal.discount_percent {
            Some(d) => factor("discount_percent", d)?,
            None => Decimal::ONE,
        };
        return Ok(Effective { factor, components: list() });
    };
    let path = format!("models.{model}");
    model_deal.validate_at(&path)?;
    if let Some(d) = model_deal.discount_percent {
        return Ok(Effective { factor: factor(&format!("{path}.discount_percent"), d)?, components: list() });
    }
    let overrides = model_deal.components.as_deref().unwrap_or_default();
    for (i, o) in overrides.iter().enumerate() {
        let at = format!("{path}.components[{i}]");
        let Some(base) = rule.components.iter().find(|c| c.name() == o.name()) else {
            return Err(PricingError::deal(
                format!("{at}.name"),
                format!("names `{}`, which model `{model}` does not have", o.name()),
            ));
        };
        if base.kind() != o.kind() {
            return Err(PricingError::deal(
                format!("{at}.type"),
                format!("is `{}`, but component `{}` of model `{model}` is `{}`", o.kind(), o.name(), base.kind()),
            ));
        }
        if !base.same_binding(o) {
            return Err(PricingError::deal(
                at,
                format!(
                    "must read the same usage field as component `{}` of model `{model}` (same `field` and `optional`)",
                    o.name()
                ),
            ));
        }
    }
    let components =
        rule.components.iter().map(|c| overrides.iter().find(|o| o.name() == c.name()).unwrap_or(c)).collect();
    Ok(Effective { factor: Decimal::ONE, components })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::str::FromStr;

    fn deal(v: serde_json::Value) -> TenantPricing {
        serde_json::from_value(v).unwrap()
    }

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn json_shape() {
        let v = json!({
            "discount_percent": "10",
            "models": {
                "a": {"discount_percent": "25.5"},
                "b": {"components": [{"type": "per_unit", "name": "in", "field": "in", "unit_price": "0.1", "per": 1000}]}
            }
        });
        let t = deal(v.clone());
        t.validate().unwrap();
        assert_eq!(t.discount_percent, Some(d("10")));
        assert_eq!(t.models["a"].discount_percent, Some(d("25.5")));
        assert_eq!(serde_json::to_value(&t).unwrap(), v);
        // Everything is optional: `{}` is list price.
        assert_eq!(deal(json!({})), TenantPricing::default());
        TenantPricing::default().validate().unwrap();
        for bad in [
            json!({"discount_percent": 10}),
            json!({"discount": "10"}),
            json!({"models": {"a": {"discount_percent": "1", "extra": true}}}),
            json!({"models": {"a": {"discount_percent": 25}}}),
        ] {
            assert!(serde_json::from_value::<TenantPricing>(bad.clone()).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn validate_refuses_bad_deals() {
        let cases = [
            (json!({"discount_percent": "-1"}), "tenant pricing field `discount_percent` must be a percentage between 0 and 100"),
            (json!({"discount_percent": "100.01"}), "tenant pricing field `discount_percent` must be a percentage between 0 and 100"),
            (json!({"discount_percent": "10.001"}), "tenant pricing field `discount_percent` must have at most 2 decimal places"),
            (
                json!({"models": {"m": {"discount_percent": "101"}}}),
                "tenant pricing field `models.m.discount_percent` must be a percentage between 0 and 100",
            ),
            (
                json!({"models": {"m": {}}}),
                "tenant pricing field `models.m` must set `discount_percent` or `components`",
            ),
            (
                json!({"models": {"m": {"discount_percent": "5", "components": [
                    {"type": "per_unit", "name": "a", "field": "a", "unit_price": "1"}]}}}),
                "tenant pricing field `models.m` sets both `discount_percent` and `components`; a model deal has one or the other",
            ),
            (
                json!({"models": {"m": {"components": []}}}),
                "tenant pricing field `models.m.components` must list at least one component",
            ),
            (
                json!({"models": {"m": {"components": [{"type": "per_unit", "name": "a", "field": "a", "unit_price": "-1"}]}}}),
                "tenant pricing field `models.m.components[0].unit_price` must not be negative",
            ),
            (
                json!({"models": {"m": {"components": [
                    {"type": "per_unit", "name": "a", "field": "a", "unit_price": "1"},
                    {"type": "per_unit", "name": "a", "field": "a", "unit_price": "2"}]}}}),
                "tenant pricing field `models.m.components[1].name` `a` is overridden twice",
            ),
            (
                json!({"models": {"": {"discount_percent": "1"}}}),
                "tenant pricing field `models` model name `` must not be empty",
            ),
        ];
        for (v, expected) in cases {
            assert_eq!(deal(v.clone()).validate().unwrap_err().to_string(), expected, "for {v}");
        }
        // The bounds themselves are fine.
        deal(json!({"discount_percent": "0", "models": {"m": {"discount_percent": "100"}}})).validate().unwrap();
    }

    #[test]
    fn factors() {
        assert_eq!(factor("x", d("10")).unwrap(), d("0.9"));
        assert_eq!(factor("x", d("12.34")).unwrap(), d("0.8766"));
        assert_eq!(factor("x", d("100")).unwrap(), Decimal::ZERO);
        assert_eq!(factor("x", d("0")).unwrap(), Decimal::ONE);
    }
}
