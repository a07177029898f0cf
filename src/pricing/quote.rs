//! The engine: (model, price rule, tenant deal, usage) → [`Quote`].
//!
//! Invariants:
//! - every [`CostLine::amount`] is exactly `quantity × unit_price`, where `unit_price` is the
//!   effective price after the tenant's deal; nothing is rounded per line;
//! - [`Quote::exact`] is exactly the sum of the line amounts and [`Quote::amount`] is
//!   `Money::round_cost(exact)`: the service's one rounding, applied once;
//! - the function is pure and deterministic: lines come out in rule order, and the same
//!   inputs always give the same quote, so an estimate and a later charge agree;
//! - usage is checked completely (unknown, missing or malformed fields are errors) before
//!   a cost is reported, and no input can make it panic.
//!
//! Add-on components (`image_feature`, `image_steps`) produce a line only when they apply
//! (feature listed, steps above the included number); every other component always
//! produces one, even at quantity 0, so a client sees what each part cost.

use rust_decimal::Decimal;
use serde::Serialize;
use utoipa::ToSchema;

use super::rule::{per_exponent, COUNT, FEATURES, HEIGHT, RESOLUTION, SECONDS, STEPS, WIDTH};
use super::usage::Usage;
use super::{deal, exact, Component, PriceRule, PricingError, TenantPricing};
use crate::money::Money;

/// The priced usage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quote {
    /// One line per component that applies, in rule order.
    pub lines: Vec<CostLine>,
    /// Exact sum of the line amounts; may carry more than 6 decimals.
    pub exact: Decimal,
    /// `Money::round_cost(exact)`: what is charged.
    pub amount: Money,
}

/// One component's share of a quote. Decimals are JSON strings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct CostLine {
    /// The component's name, e.g. `input_tokens`.
    pub component: String,
    /// Units charged: tokens, images, extra steps × images, or seconds.
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "1200")]
    pub quantity: Decimal,
    /// Effective price of one unit, after the tenant's deal.
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "0.00000015")]
    pub unit_price: Decimal,
    /// `quantity × unit_price`, exact (not rounded).
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "0.00018")]
    pub amount: Decimal,
}

/// Prices `usage` (a JSON object) for `model` under `rule`, with the tenant's `deal`
/// (`None` = list price).
pub fn quote(
    model: &str,
    rule: &PriceRule,
    deal: Option<&TenantPricing>,
    usage: &serde_json::Value,
) -> Result<Quote, PricingError> {
    // Rules are validated when stored; checking again keeps the engine's assumptions
    // (sorted tiers, one reader per field) true even for a rule that bypassed that.
    rule.validate()?;
    let eff = deal::effective(model, rule, deal)?;
    let usage = Usage::new(model, usage, &rule.usage_fields())?;

    let count = usage.count(COUNT)?.unwrap_or(1);
    let features = usage.string_set(FEATURES)?;
    if let Some(unknown) = features
        .iter()
        .find(|f| !eff.components.iter().any(|c| matches!(c, Component::ImageFeature { name, .. } if name == *f)))
    {
        return Err(PricingError::UnknownFeature { model: model.into(), feature: (*unknown).into() });
    }

    let mut lines = Vec::with_capacity(eff.components.len());
    for c in &eff.components {
        if let Some(line) = price_component(c, &usage, count, &features, eff.factor)? {
            lines.push(line);
        }
    }
    let mut total = Decimal::ZERO;
    for line in &lines {
        total = exact::add(total, line.amount)
            .ok_or_else(|| PricingError::Overflow { component: line.component.clone() })?;
    }
    let total = total.normalize();
    let amount = Money::round_cost(total).map_err(|_| PricingError::AmountTooLarge { exact: total })?;
    Ok(Quote { lines, exact: total, amount })
}

fn price_component(
    c: &Component,
    usage: &Usage<'_>,
    count: u64,
    features: &[&str],
    factor: Decimal,
) -> Result<Option<CostLine>, PricingError> {
    let name = c.name();
    let overflow = || PricingError::Overflow { component: name.into() };
    let line = match c {
        Component::PerUnit { field, unit_price, per, .. } => {
            // Required-ness was enforced by `Usage::new`; an absent optional field is 0.
            let quantity = usage.count(field)?.unwrap_or(0);
            let k = per_exponent(*per).ok_or_else(overflow)?;
            let unit = exact::shift_down(*unit_price, k).ok_or_else(overflow)?;
            line(name, Decimal::from(quantity), unit, factor)?
        }
        Component::Image { tiers, .. } => {
            let width = usage.dimension(WIDTH)?;
            let height = usage.dimension(HEIGHT)?;
            // Both are at most 10^6, so the product fits a u64 and the shift is exact.
            let megapixels = exact::shift_down(Decimal::from(width * height), 6).ok_or_else(overflow)?;
            let Some(tier) = tiers.iter().find(|t| megapixels <= t.up_to_megapixels) else {
                return Err(PricingError::ImageTooLarge {
                    model: usage.model().into(),
                    megapixels: megapixels.normalize(),
                    max_megapixels: tiers.last().map(|t| t.up_to_megapixels.normalize()).unwrap_or_default(),
                });
            };
            line(name, Decimal::from(count), tier.unit_price, factor)?
        }
        Component::ImageFeature { unit_price, .. } => {
            if !features.contains(&name) {
                return Ok(None);
            }
            line(name, Decimal::from(count), *unit_price, factor)?
        }
        Component::ImageSteps { included_steps, unit_price, .. } => {
            let extra = match usage.count(STEPS)? {
                Some(steps) if steps > *included_steps => steps - included_steps,
                _ => return Ok(None),
            };
            let quantity = exact::mul(Decimal::from(extra), Decimal::from(count)).ok_or_else(overflow)?;
            line(name, quantity, *unit_price, factor)?
        }
        Component::Video { unit_price, resolution_multipliers, .. } => {
            let seconds = usage.seconds(SECONDS)?;
            let resolution = usage.string(RESOLUTION)?;
            let Some(multiplier) = resolution_multipliers.get(resolution) else {
                return Err(PricingError::UnknownResolution {
                    model: usage.model().into(),
                    resolution: resolution.into(),
                    offered: resolution_multipliers.keys().map(String::as_str).collect::<Vec<_>>().join(", "),
                });
            };
            let unit = exact::mul(*unit_price, *multiplier).ok_or_else(overflow)?;
            line(name, seconds, unit, factor)?
        }
    };
    Ok(Some(line))
}

fn line(
    component: &str,
    quantity: Decimal,
    list_unit_price: Decimal,
    factor: Decimal,
) -> Result<CostLine, PricingError> {
    let overflow = || PricingError::Overflow { component: component.into() };
    // Normalised so `0.60 × 0.9` reads `0.54`, not `0.540`, and `-0` never shows.
    let unit_price = exact::mul(list_unit_price, factor).ok_or_else(overflow)?.normalize();
    let amount = exact::mul(quantity, unit_price).ok_or_else(overflow)?.normalize();
    Ok(CostLine { component: component.into(), quantity: quantity.normalize(), unit_price, amount })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }
    fn m(s: &str) -> Money {
        Money::parse(s).unwrap()
    }
    fn rule(v: Value) -> PriceRule {
        let r: PriceRule = serde_json::from_value(v).unwrap();
        r.validate().unwrap();
        r
    }
    fn deal(v: Value) -> TenantPricing {
        let t: TenantPricing = serde_json::from_value(v).unwrap();
        t.validate().unwrap();
        t
    }

    fn text() -> PriceRule {
        rule(json!({"description": "text", "components": [
            {"type": "per_unit", "name": "input_tokens", "field": "input_tokens", "unit_price": "0.15", "per": 1000000},
            {"type": "per_unit", "name": "cached_input_tokens", "field": "cached_input_tokens", "unit_price": "0.075", "per": 1000000, "optional": true},
            {"type": "per_unit", "name": "output_tokens", "field": "output_tokens", "unit_price": "0.60", "per": 1000000}
        ]}))
    }
    fn flux() -> PriceRule {
        rule(json!({"description": "image", "components": [
            {"type": "image", "name": "image", "tiers": [
                {"up_to_megapixels": "1.05", "unit_price": "0.04"},
                {"up_to_megapixels": "2.1", "unit_price": "0.06"},
                {"up_to_megapixels": "4.2", "unit_price": "0.08"}]},
            {"type": "image_feature", "name": "upscale", "unit_price": "0.02"},
            {"type": "image_feature", "name": "hd", "unit_price": "0.01"},
            {"type": "image_steps", "name": "extra_steps", "included_steps": 28, "unit_price": "0.0005"}
        ]}))
    }
    fn video() -> PriceRule {
        rule(json!({"description": "video", "components": [
            {"type": "video", "name": "video_seconds", "unit_price": "0.10",
             "resolution_multipliers": {"480p": "0.5", "720p": "1", "1080p": "1.5", "4k": "3"}}
        ]}))
    }

    fn q(r: &PriceRule, usage: Value) -> Quote {
        quote("m", r, None, &usage).unwrap()
    }
    fn err(r: &PriceRule, usage: Value) -> String {
        quote("m", r, None, &usage).unwrap_err().to_string()
    }
    fn cl(component: &str, quantity: &str, unit_price: &str, amount: &str) -> CostLine {
        CostLine { component: component.into(), quantity: d(quantity), unit_price: d(unit_price), amount: d(amount) }
    }

    #[test]
    fn text_tokens_are_priced_exactly() {
        let got = q(&text(), json!({"input_tokens": 1234, "output_tokens": 567}));
        // 1234 × 0.00000015 = 0.0001851; 567 × 0.0000006 = 0.0003402.
        assert_eq!(
            got.lines,
            vec![
                cl("input_tokens", "1234", "0.00000015", "0.0001851"),
                cl("cached_input_tokens", "0", "0.000000075", "0"),
                cl("output_tokens", "567", "0.0000006", "0.0003402"),
            ]
        );
        assert_eq!(got.exact, d("0.0005253"));
        assert_eq!(got.amount, m("0.000525"));

        let got = q(
            &text(),
            json!({"input_tokens": 1_000_000, "cached_input_tokens": 2_000_000, "output_tokens": 1_000_000}),
        );
        assert_eq!(got.exact, d("0.9"));
        assert_eq!(got.amount, m("0.90"));
    }

    #[test]
    fn per_defaults_to_one_unit() {
        let r = rule(json!({"components": [
            {"type": "per_unit", "name": "requests", "field": "requests", "unit_price": "0.0025"}]}));
        let got = q(&r, json!({"requests": 3}));
        assert_eq!(got.lines, vec![cl("requests", "3", "0.0025", "0.0075")]);
        assert_eq!(got.amount, m("0.0075"));
    }

    #[test]
    fn images_are_priced_by_tier_count_features_and_steps() {
        let got = q(&flux(), json!({"width": 1024, "height": 1024, "count": 2, "features": ["upscale"], "steps": 40}));
        // 1.048576 MP → first tier; 12 extra steps on each of 2 images.
        assert_eq!(
            got.lines,
            vec![
                cl("image", "2", "0.04", "0.08"),
                cl("upscale", "2", "0.02", "0.04"),
                cl("extra_steps", "24", "0.0005", "0.012"),
            ]
        );
        assert_eq!(got.exact, d("0.132"));
        assert_eq!(got.amount, m("0.132"));

        // Defaults: one image, no features, included steps cost nothing extra.
        let got = q(&flux(), json!({"width": 512, "height": 512, "steps": 28}));
        assert_eq!(got.lines, vec![cl("image", "1", "0.04", "0.04")]);
        let got = q(&flux(), json!({"width": 1920, "height": 1080, "features": ["hd", "upscale"], "steps": 29}));
        assert_eq!(
            got.lines,
            vec![
                cl("image", "1", "0.06", "0.06"),
                cl("upscale", "1", "0.02", "0.02"),
                cl("hd", "1", "0.01", "0.01"),
                cl("extra_steps", "1", "0.0005", "0.0005"),
            ]
        );
        assert_eq!(got.amount, m("0.0905"));
        // Zero images cost nothing, features included.
        let got = q(&flux(), json!({"width": 1024, "height": 1024, "count": 0, "features": ["hd"], "steps": 50}));
        assert_eq!(got.exact, Decimal::ZERO);
        assert_eq!(got.amount, Money::ZERO);
    }

    #[test]
    fn tier_boundaries_are_inclusive() {
        let price = |w: u64, h: u64| q(&flux(), json!({"width": w, "height": h})).lines[0].unit_price;
        assert_eq!(price(1, 1), d("0.04"));
        assert_eq!(price(1050, 1000), d("0.04")); // exactly 1.05 MP
        assert_eq!(price(1051, 1000), d("0.06")); // 1.051 MP
        assert_eq!(price(2100, 1000), d("0.06")); // exactly 2.1 MP
        assert_eq!(price(2100, 1001), d("0.08"));
        assert_eq!(price(2100, 2000), d("0.08")); // exactly 4.2 MP, the largest tier
        assert_eq!(
            err(&flux(), json!({"width": 2101, "height": 2000})),
            "usage fields `width` and `height` make a 4.202-megapixel image, larger than the largest size model `m` prices (4.2 megapixels)"
        );
    }

    #[test]
    fn video_is_priced_per_second_with_a_resolution_multiplier() {
        let got = q(&video(), json!({"seconds": 8, "resolution": "1080p"}));
        assert_eq!(got.lines, vec![cl("video_seconds", "8", "0.15", "1.2")]);
        assert_eq!(got.amount, m("1.20"));
        let got = q(&video(), json!({"seconds": "7.5", "resolution": "4k"}));
        assert_eq!(got.lines, vec![cl("video_seconds", "7.5", "0.3", "2.25")]);
        let got = q(&video(), json!({"seconds": "0.333", "resolution": "480p"}));
        assert_eq!(got.exact, d("0.01665"));
        assert_eq!(got.amount, m("0.01665"));
        let got = q(&video(), json!({"seconds": "12.345", "resolution": "1080p"}));
        assert_eq!(got.exact, d("1.85175"));
        assert_eq!(got.amount, m("1.85175"));
    }

    #[test]
    fn rounding_happens_once_at_the_end() {
        let r = rule(json!({"components": [
            {"type": "per_unit", "name": "a", "field": "a", "unit_price": "0.0000004"},
            {"type": "per_unit", "name": "b", "field": "b", "unit_price": "0.0000004"},
            {"type": "per_unit", "name": "c", "field": "c", "unit_price": "0.0000004"}]}));
        let got = q(&r, json!({"a": 1, "b": 1, "c": 1}));
        // Each line would round to 0 on its own; the sum rounds to one micro-dollar.
        assert!(got.lines.iter().all(|l| l.amount == d("0.0000004")));
        assert_eq!(got.exact, d("0.0000012"));
        assert_eq!(got.amount, m("0.000001"));
        // Half a micro-dollar rounds up; just under does not.
        assert_eq!(
            q(&text(), json!({"input_tokens": 0, "output_tokens": 0, "cached_input_tokens": 0})).amount,
            Money::ZERO
        );
        let r =
            rule(json!({"components": [{"type": "per_unit", "name": "a", "field": "a", "unit_price": "0.0000005"}]}));
        assert_eq!(q(&r, json!({"a": 1})).amount, m("0.000001"));
        let r = rule(
            json!({"components": [{"type": "per_unit", "name": "a", "field": "a", "unit_price": "0.00000049999"}]}),
        );
        assert_eq!(q(&r, json!({"a": 1})).amount, Money::ZERO);
        assert_eq!(q(&r, json!({"a": 2})).amount, m("0.000001"));
    }

    #[test]
    fn zero_usage_costs_zero() {
        let got = q(&text(), json!({"input_tokens": 0, "output_tokens": 0}));
        assert_eq!(got.lines.len(), 3);
        assert!(got.lines.iter().all(|l| l.amount.is_zero() && l.quantity.is_zero()));
        assert_eq!(got.exact, Decimal::ZERO);
        assert_eq!(got.amount, Money::ZERO);
    }

    #[test]
    fn tenant_wide_discount_applies_to_every_unit_price() {
        let t = deal(json!({"discount_percent": "10"}));
        let got = quote("m", &text(), Some(&t), &json!({"input_tokens": 1000, "output_tokens": 1000})).unwrap();
        assert_eq!(
            got.lines,
            vec![
                cl("input_tokens", "1000", "0.000000135", "0.000135"),
                cl("cached_input_tokens", "0", "0.0000000675", "0"),
                cl("output_tokens", "1000", "0.00000054", "0.00054"),
            ]
        );
        assert_eq!(got.exact, d("0.000675"));
        let got = quote("m", &flux(), Some(&t), &json!({"width": 1024, "height": 1024, "features": ["hd"]})).unwrap();
        assert_eq!(got.lines, vec![cl("image", "1", "0.036", "0.036"), cl("hd", "1", "0.009", "0.009")]);
        let got = quote("m", &video(), Some(&t), &json!({"seconds": 10, "resolution": "1080p"})).unwrap();
        assert_eq!(got.lines, vec![cl("video_seconds", "10", "0.135", "1.35")]);
        // 100% off is free; an empty deal is list price.
        let free = deal(json!({"discount_percent": "100"}));
        assert_eq!(
            quote("m", &video(), Some(&free), &json!({"seconds": 10, "resolution": "4k"})).unwrap().amount,
            Money::ZERO
        );
        let empty = TenantPricing::default();
        assert_eq!(
            quote("m", &video(), Some(&empty), &json!({"seconds": 10, "resolution": "4k"})).unwrap(),
            q(&video(), json!({"seconds": 10, "resolution": "4k"}))
        );
    }

    #[test]
    fn model_discount_replaces_the_tenant_wide_one() {
        let t = deal(
            json!({"discount_percent": "10", "models": {"m": {"discount_percent": "25"}, "other": {"discount_percent": "50"}}}),
        );
        let got = quote("m", &video(), Some(&t), &json!({"seconds": 4, "resolution": "720p"})).unwrap();
        assert_eq!(got.lines, vec![cl("video_seconds", "4", "0.075", "0.3")]);
        // A model the deal does not list gets the tenant-wide discount.
        let got = quote("unlisted", &video(), Some(&t), &json!({"seconds": 4, "resolution": "720p"})).unwrap();
        assert_eq!(got.lines, vec![cl("video_seconds", "4", "0.09", "0.36")]);
        // A model discount without a tenant-wide one.
        let t = deal(json!({"models": {"m": {"discount_percent": "12.5"}}}));
        let got = quote("m", &text(), Some(&t), &json!({"input_tokens": 1_000_000, "output_tokens": 0})).unwrap();
        assert_eq!(got.exact, d("0.13125"));
        assert_eq!(got.amount, m("0.13125"));
        let got = quote("n", &text(), Some(&t), &json!({"input_tokens": 1_000_000, "output_tokens": 0})).unwrap();
        assert_eq!(got.exact, d("0.15"));
    }

    #[test]
    fn component_override_replaces_prices_and_disables_discounts() {
        let t = deal(json!({"discount_percent": "10", "models": {"m": {"components": [
            {"type": "per_unit", "name": "input_tokens", "field": "input_tokens", "unit_price": "0.10", "per": 1000000}]}}}));
        let got = quote("m", &text(), Some(&t), &json!({"input_tokens": 1000, "output_tokens": 1000})).unwrap();
        assert_eq!(
            got.lines,
            vec![
                cl("input_tokens", "1000", "0.0000001", "0.0001"),
                cl("cached_input_tokens", "0", "0.000000075", "0"),
                cl("output_tokens", "1000", "0.0000006", "0.0006"),
            ]
        );
        assert_eq!(got.amount, m("0.0007"));

        let t = deal(json!({"models": {"m": {"components": [
            {"type": "image", "name": "image", "tiers": [{"up_to_megapixels": "8", "unit_price": "0.03"}]},
            {"type": "image_steps", "name": "extra_steps", "included_steps": 50, "unit_price": "0.001"}]}}}));
        let got = quote(
            "m",
            &flux(),
            Some(&t),
            &json!({"width": 2500, "height": 2500, "steps": 60, "features": ["upscale"]}),
        )
        .unwrap();
        assert_eq!(
            got.lines,
            vec![
                cl("image", "1", "0.03", "0.03"),
                cl("upscale", "1", "0.02", "0.02"),
                cl("extra_steps", "10", "0.001", "0.01"),
            ]
        );
    }

    #[test]
    fn component_overrides_must_match_the_rule() {
        let cases = [
            (
                json!([{"type": "per_unit", "name": "reasoning_tokens", "field": "reasoning_tokens", "unit_price": "1"}]),
                "tenant pricing field `models.m.components[0].name` names `reasoning_tokens`, which model `m` does not have",
            ),
            (
                json!([{"type": "image_feature", "name": "input_tokens", "unit_price": "1"}]),
                "tenant pricing field `models.m.components[0].type` is `image_feature`, but component `input_tokens` of model `m` is `per_unit`",
            ),
            (
                json!([{"type": "per_unit", "name": "input_tokens", "field": "prompt_tokens", "unit_price": "1"}]),
                "tenant pricing field `models.m.components[0]` must read the same usage field as component `input_tokens` of model `m` (same `field` and `optional`)",
            ),
            (
                json!([{"type": "per_unit", "name": "output_tokens", "field": "output_tokens", "unit_price": "1", "optional": true}]),
                "tenant pricing field `models.m.components[0]` must read the same usage field as component `output_tokens` of model `m` (same `field` and `optional`)",
            ),
        ];
        for (components, expected) in cases {
            let t: TenantPricing =
                serde_json::from_value(json!({"models": {"m": {"components": components}}})).unwrap();
            t.validate().unwrap();
            let e = quote("m", &text(), Some(&t), &json!({"input_tokens": 1, "output_tokens": 1})).unwrap_err();
            assert_eq!(e.to_string(), expected);
        }
        // An invalid deal is refused at quote time too, not silently ignored.
        let t: TenantPricing = serde_json::from_value(json!({"models": {"m": {}}})).unwrap();
        assert!(matches!(
            quote("m", &text(), Some(&t), &json!({"input_tokens": 1, "output_tokens": 1})),
            Err(PricingError::InvalidDeal { .. })
        ));
        let t: TenantPricing = serde_json::from_value(json!({"discount_percent": "150"})).unwrap();
        assert_eq!(
            quote("m", &text(), Some(&t), &json!({"input_tokens": 1, "output_tokens": 1})).unwrap_err().to_string(),
            "tenant pricing field `discount_percent` must be a percentage between 0 and 100"
        );
    }

    #[test]
    fn usage_errors() {
        let t = text();
        let f = flux();
        let v = video();
        let cases: Vec<(&PriceRule, Value, &str)> = vec![
            (&t, json!([1, 2]), "usage must be a JSON object"),
            (&t, Value::Null, "usage must be a JSON object"),
            (&t, json!(5), "usage must be a JSON object"),
            (&t, json!({"input_tokens": 1, "output_tokens": 1, "foo": 1}), "usage field `foo` is not known to model `m`"),
            (&t, json!({"input_tokens": 1, "output_tokens": 1, "count": 1}), "usage field `count` is not known to model `m`"),
            (&t, json!({"input_tokens": 1}), "usage field `output_tokens` is required by model `m`"),
            (&t, json!({}), "usage field `input_tokens` is required by model `m`"),
            (&t, json!({"input_tokens": -1, "output_tokens": 1}), "usage field `input_tokens` must be a non-negative whole number"),
            (&t, json!({"input_tokens": 1.5, "output_tokens": 1}), "usage field `input_tokens` must be a non-negative whole number"),
            (&t, json!({"input_tokens": 1.0, "output_tokens": 1}), "usage field `input_tokens` must be a non-negative whole number"),
            (&t, json!({"input_tokens": "100", "output_tokens": 1}), "usage field `input_tokens` must be a non-negative whole number"),
            (&t, json!({"input_tokens": null, "output_tokens": 1}), "usage field `input_tokens` must be a non-negative whole number"),
            (&t, json!({"input_tokens": 1, "output_tokens": 1e30}), "usage field `output_tokens` must be a non-negative whole number"),
            (&t, json!({"input_tokens": 1, "output_tokens": 1, "cached_input_tokens": -5}), "usage field `cached_input_tokens` must be a non-negative whole number"),
            (&f, json!({"height": 10}), "usage field `width` is required by model `m`"),
            (&f, json!({"width": 0, "height": 10}), "usage field `width` must be a positive whole number of pixels, at most 1000000"),
            (&f, json!({"width": 10, "height": -10}), "usage field `height` must be a positive whole number of pixels, at most 1000000"),
            (&f, json!({"width": 10.5, "height": 10}), "usage field `width` must be a positive whole number of pixels, at most 1000000"),
            (&f, json!({"width": 1_000_001, "height": 1}), "usage field `width` must be a positive whole number of pixels, at most 1000000"),
            (&f, json!({"width": 10, "height": 10, "count": -1}), "usage field `count` must be a non-negative whole number"),
            (&f, json!({"width": 10, "height": 10, "count": 1.5}), "usage field `count` must be a non-negative whole number"),
            (&f, json!({"width": 10, "height": 10, "steps": 30.5}), "usage field `steps` must be a non-negative whole number"),
            (&f, json!({"width": 10, "height": 10, "features": "hd"}), "usage field `features` must be a list of feature names"),
            (&f, json!({"width": 10, "height": 10, "features": [1]}), "usage field `features` must be a list of feature names"),
            (&f, json!({"width": 10, "height": 10, "features": ["hd", "sparkles"]}), "usage field `features` lists `sparkles`, which model `m` does not offer"),
            (&f, json!({"width": 10, "height": 10, "features": ["image"]}), "usage field `features` lists `image`, which model `m` does not offer"),
            (&f, json!({"width": 10, "height": 10, "features": ["hd", "hd"]}), "usage field `features` lists `hd` more than once"),
            (&f, json!({"width": 10, "height": 10, "seconds": 1}), "usage field `seconds` is not known to model `m`"),
            (&v, json!({"seconds": 5}), "usage field `resolution` is required by model `m`"),
            (&v, json!({"seconds": 5, "resolution": "8k"}), "usage field `resolution` is `8k`, which model `m` does not offer (it offers: 1080p, 480p, 4k, 720p)"),
            (&v, json!({"seconds": 5, "resolution": 720}), "usage field `resolution` must be a string"),
            (&v, json!({"seconds": 0, "resolution": "720p"}), "usage field `seconds` must be a positive number of seconds: a whole number, or a decimal string such as \"7.5\" with at most 3 decimals"),
            (&v, json!({"seconds": "0", "resolution": "720p"}), "usage field `seconds` must be a positive number of seconds: a whole number, or a decimal string such as \"7.5\" with at most 3 decimals"),
            (&v, json!({"seconds": -5, "resolution": "720p"}), "usage field `seconds` must be a positive number of seconds: a whole number, or a decimal string such as \"7.5\" with at most 3 decimals"),
            (&v, json!({"seconds": "-5", "resolution": "720p"}), "usage field `seconds` must be a positive number of seconds: a whole number, or a decimal string such as \"7.5\" with at most 3 decimals"),
            (&v, json!({"seconds": 7.5, "resolution": "720p"}), "usage field `seconds` must be a positive number of seconds: a whole number, or a decimal string such as \"7.5\" with at most 3 decimals"),
            (&v, json!({"seconds": "7.5s", "resolution": "720p"}), "usage field `seconds` must be a positive number of seconds: a whole number, or a decimal string such as \"7.5\" with at most 3 decimals"),
            (&v, json!({"seconds": "1.0001", "resolution": "720p"}), "usage field `seconds` must be a positive number of seconds: a whole number, or a decimal string such as \"7.5\" with at most 3 decimals"),
            (&v, json!({"seconds": "1e3", "resolution": "720p"}), "usage field `seconds` must be a positive number of seconds: a whole number, or a decimal string such as \"7.5\" with at most 3 decimals"),
            (&v, json!({"seconds": null, "resolution": "720p"}), "usage field `seconds` must be a positive number of seconds: a whole number, or a decimal string such as \"7.5\" with at most 3 decimals"),
        ];
        for (r, usage, expected) in cases {
            let e = quote("m", r, None, &usage).unwrap_err();
            assert_eq!(e.to_string(), expected, "for {usage}");
        }
    }

    #[test]
    fn absurd_usage_is_an_error_not_a_panic() {
        let r = rule(json!({"components": [
            {"type": "per_unit", "name": "a", "field": "a", "unit_price": "1000000"},
            {"type": "per_unit", "name": "b", "field": "b", "unit_price": "0.00000000001"},
            {"type": "per_unit", "name": "c", "field": "c", "unit_price": "0.12345678901"}]}));
        let e = quote("m", &r, None, &json!({"a": u64::MAX, "b": 0, "c": 0})).unwrap_err();
        assert!(matches!(e, PricingError::AmountTooLarge { .. }), "{e:?}");
        assert!(e.to_string().starts_with("the cost 18446744073709551615000000 is larger than"));
        // The finest prices and discounts a rule and deal may hold still quote exactly,
        // up to the largest chargeable amounts...
        let t = deal(json!({"discount_percent": "12.34"}));
        let got = quote("m", &r, Some(&t), &json!({"a": 0, "b": 3, "c": 0})).unwrap();
        assert_eq!(got.exact, d("0.000000000026298"));
        let usage = json!({"a": 0, "b": 1_000_000_000_000_000_007u64, "c": 8_000_000_000_001u64});
        let got = quote("m", &r, Some(&t), &usage).unwrap();
        assert_eq!(got.exact, d("865786535969.436222221307528"));
        assert_eq!(got.amount, m("865786535969.436222"));
        let got = quote("m", &video(), Some(&t), &json!({"seconds": "0.001", "resolution": "1080p"})).unwrap();
        assert_eq!(got.exact, d("0.00013149"));
        // ...and only an absurd quantity can exceed what a Decimal holds exactly.
        let e = quote("m", &r, Some(&t), &json!({"a": 0, "b": 0, "c": u64::MAX})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the cost of component `c` cannot be computed exactly: its numbers are too large or have too many decimals"
        );
        let f = flux();
        let e =
            quote("m", &f, None, &json!({"width": 1, "height": 1, "count": u64::MAX, "steps": u64::MAX})).unwrap_err();
        assert_eq!(e, PricingError::Overflow { component: "extra_steps".into() });
        let e = quote("m", &f, None, &json!({"width": 1, "height": 1, "count": u64::MAX})).unwrap_err();
        assert!(matches!(e, PricingError::AmountTooLarge { .. }), "{e:?}");
        let v = video();
        let e =
            quote("m", &v, None, &json!({"seconds": "9999999999999999999999999999", "resolution": "4k"})).unwrap_err();
        assert!(matches!(e, PricingError::Overflow { .. } | PricingError::AmountTooLarge { .. }), "{e:?}");
    }

    #[test]
    fn an_invalid_rule_is_refused() {
        let r = PriceRule { description: String::new(), components: vec![] };
        assert_eq!(
            quote("m", &r, None, &json!({})).unwrap_err().to_string(),
            "price rule field `components` must list at least one component"
        );
    }

    #[test]
    fn cost_lines_serialize_decimals_as_strings() {
        let got = q(&text(), json!({"input_tokens": 1200, "output_tokens": 0}));
        assert_eq!(
            serde_json::to_value(&got.lines[0]).unwrap(),
            json!({"component": "input_tokens", "quantity": "1200", "unit_price": "0.00000015", "amount": "0.00018"})
        );
    }

    #[test]
    fn deterministic() {
        let usage = json!({"width": 1500, "height": 1000, "count": 3, "features": ["hd", "upscale"], "steps": 35});
        let t = deal(json!({"discount_percent": "7.5"}));
        let a = quote("m", &flux(), Some(&t), &usage).unwrap();
        let b = quote("m", &flux(), Some(&t), &usage).unwrap();
        assert_eq!(a, b);
        // Feature order in usage does not change the lines' order (rule order).
        let c = quote(
            "m",
            &flux(),
            Some(&t),
            &json!({"width": 1500, "height": 1000, "count": 3, "features": ["upscale", "hd"], "steps": 35}),
        )
        .unwrap();
        assert_eq!(a, c);
    }

    fn text_usage(input: u64, output: u64, cached: u64) -> Value {
        json!({"input_tokens": input, "output_tokens": output, "cached_input_tokens": cached})
    }

    /// Any percentage a deal may hold: [0, 100] with up to 2 decimals.
    fn percent() -> impl Strategy<Value = Decimal> {
        (0i64..=10_000).prop_map(|n| Decimal::new(n, 2))
    }

    /// A price below $100 with 2 to 5 decimals: with `per` up to 10^6 that reaches the
    /// 11-decimal limit a rule allows.
    fn price() -> impl Strategy<Value = Decimal> {
        (0i64..10_000_000, 2u32..=5).prop_map(|(n, s)| Decimal::new(n, s))
    }

    const TOKENS: u64 = 10_000_000_000;
    const RES: [&str; 4] = ["480p", "720p", "1080p", "4k"];

    proptest! {
        #[test]
        fn amount_is_the_sum_rounded_once(
            input in 0..TOKENS / 10, output in 0..TOKENS / 10, cached in 0..TOKENS / 10,
            p1 in price(), p2 in price(), per in 0u32..=6, pct in proptest::option::of(percent()),
        ) {
            let r = rule(json!({"components": [
                {"type": "per_unit", "name": "in", "field": "input_tokens", "unit_price": p1.to_string(), "per": 10u64.pow(per)},
                {"type": "per_unit", "name": "cached", "field": "cached_input_tokens", "unit_price": p2.to_string(), "optional": true},
                {"type": "per_unit", "name": "out", "field": "output_tokens", "unit_price": "0.6", "per": 1000000}]}));
            let t = TenantPricing { discount_percent: pct, ..Default::default() };
            // A valid rule and deal always quote unless the amount is too large to charge:
            // the decimal budget holds.
            let got = match quote("m", &r, Some(&t), &text_usage(input, output, cached)) {
                Err(PricingError::AmountTooLarge { exact }) => {
                    prop_assert!(exact > Money::MAX.as_decimal());
                    return Ok(());
                }
                other => other.unwrap(),
            };
            let sum = got.lines.iter().map(|l| l.amount).sum::<Decimal>();
            prop_assert_eq!(got.exact, sum);
            for l in &got.lines {
                prop_assert_eq!(l.amount, l.quantity * l.unit_price);
            }
            prop_assert_eq!(got.amount, Money::round_cost(sum).unwrap());
            prop_assert!((got.amount.as_decimal() - got.exact).abs() <= d("0.0000005"));
        }

        #[test]
        fn monotone_in_token_counts(
            input in 0..TOKENS, output in 0..TOKENS, cached in 0..TOKENS,
            di in 0..TOKENS, dout in 0..TOKENS, dc in 0..TOKENS,
        ) {
            let r = text();
            let base = quote("m", &r, None, &text_usage(input, output, cached)).unwrap();
            let more = quote("m", &r, None, &text_usage(input + di, output + dout, cached + dc)).unwrap();
            prop_assert!(more.exact >= base.exact);
            prop_assert!(more.amount >= base.amount);
        }

        #[test]
        fn discounts_never_raise_the_price(
            input in 0..TOKENS, output in 0..TOKENS,
            w in 1u64..=2000, h in 1u64..=2000, count in 0u64..100, steps in 0u64..100, hd: bool,
            seconds in 1u64..1000, res in 0usize..4,
            pct in percent(), model_pct in proptest::option::of(percent()),
        ) {
            let mut models = std::collections::BTreeMap::new();
            if let Some(p) = model_pct {
                models.insert("m".to_string(), crate::pricing::ModelDeal { discount_percent: Some(p), components: None });
            }
            let t = TenantPricing { discount_percent: Some(pct), models };
            let features: Vec<&str> = if hd { vec!["hd"] } else { vec![] };
            let cases = [
                (text(), json!({"input_tokens": input, "output_tokens": output})),
                (flux(), json!({"width": w, "height": h, "count": count, "steps": steps, "features": features})),
                (video(), json!({"seconds": seconds, "resolution": RES[res]})),
            ];
            for (r, usage) in cases {
                let list = quote("m", &r, None, &usage).unwrap();
                let discounted = quote("m", &r, Some(&t), &usage).unwrap();
                prop_assert!(discounted.exact <= list.exact);
                prop_assert!(discounted.amount <= list.amount);
                prop_assert_eq!(list.lines.len(), discounted.lines.len());
            }
        }
    }
}
