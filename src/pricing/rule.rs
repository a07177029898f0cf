//! The price-rule format: what one version of one model's price looks like, and what
//! makes it acceptable.
//!
//! A rule is a list of components; each component prices one aspect of the usage and
//! produces at most one cost line. Five kinds exist (JSON `"type"`):
//!
//! | `type`          | usage fields it reads                       | line quantity                  | `unit_price` is per |
//! |-----------------|---------------------------------------------|--------------------------------|---------------------|
//! | `per_unit`      | its `field` (a non-negative integer)        | the field's value              | `per` units (default 1) |
//! | `image`         | `width`, `height`, `count` (default 1)      | `count`                        | image, by megapixel tier |
//! | `image_feature` | `features` (default `[]`), `count`          | `count` when the feature is listed | output image     |
//! | `image_steps`   | `steps` (optional), `count`                 | `(steps − included_steps) × count` when positive | step per image |
//! | `video`         | `seconds`, `resolution`                     | `seconds`                      | second, × the resolution's multiplier |
//!
//! `per` must be a power of ten (1, 1000, 1000000, …) so that the per-unit price
//! `unit_price / per` is exact: operators write `"0.15"` per 1M tokens, the cost line shows
//! `0.00000015` per token.
//!
//! Invariants [`PriceRule::validate`] establishes (the engine relies on them):
//! - at least one component; names unique, short, `[A-Za-z0-9_.-]`;
//! - every price and multiplier is non-negative, and prices fit the decimal budget (see
//!   [`MAX_UNIT_PRICE_DECIMALS`]): at most 11 decimals once divided by `per`, and for video
//!   at most 8 once multiplied by a resolution multiplier (multipliers: at most 6), so every
//!   quote of a chargeable amount is exact;
//! - image tiers are non-empty, positive and strictly increasing in `up_to_megapixels`,
//!   so the first tier that fits is the smallest;
//! - at most one `image`, one `image_steps` and one `video` component, and
//!   `image_feature`/`image_steps` only next to an `image` component;
//! - no usage field is read by two components unless both are image components
//!   (which share `count`), so one number is never charged twice by accident.

use std::collections::{BTreeMap, HashMap, HashSet};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{dec, PricingError};

/// A model's price rule as stored (one version).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "description": "Text model: $0.15 per 1M input tokens, $0.60 per 1M output tokens",
    "components": [
        {"type": "per_unit", "name": "input_tokens", "field": "input_tokens", "unit_price": "0.15", "per": 1000000},
        {"type": "per_unit", "name": "output_tokens", "field": "output_tokens", "unit_price": "0.60", "per": 1000000}
    ]
}))]
pub struct PriceRule {
    /// Human-readable summary shown in the price book.
    #[serde(default)]
    pub description: String,
    /// Priced in order; each contributes at most one cost line.
    pub components: Vec<Component>,
}

/// One priced aspect of a model's usage, chosen by `type`: `per_unit` (a counted usage field,
/// e.g. tokens), `image` (per image by megapixel tier), `image_feature` (per-image add-on),
/// `image_steps` (steps above an included number) or `video` (per second × resolution multiplier).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Component {
    /// `usage[field]` (a non-negative integer, e.g. tokens) × `unit_price / per`.
    PerUnit {
        name: String,
        /// The usage field counted, e.g. `input_tokens`.
        field: String,
        /// Price of `per` units, as a decimal string.
        #[serde(with = "dec::str")]
        #[schema(value_type = String, example = "0.15")]
        unit_price: Decimal,
        /// Units `unit_price` is quoted for: a power of ten from 1 to 10^12.
        #[serde(default = "one")]
        #[schema(default = 1, example = 1000000)]
        per: u64,
        /// When true the field may be omitted from usage (counts as 0).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        optional: bool,
    },
    /// Per output image; the price depends on the image size in megapixels
    /// (`width × height / 1,000,000`): the smallest tier that fits applies.
    Image { name: String, tiers: Vec<ImageTier> },
    /// Add-on per output image, charged when usage `features` lists this component's `name`.
    ImageFeature {
        name: String,
        #[serde(with = "dec::str")]
        #[schema(value_type = String, example = "0.02")]
        unit_price: Decimal,
    },
    /// Extra diffusion steps: each step above `included_steps`, per output image.
    ImageSteps {
        name: String,
        included_steps: u64,
        #[serde(with = "dec::str")]
        #[schema(value_type = String, example = "0.0005")]
        unit_price: Decimal,
    },
    /// Per second of output video, times the multiplier of usage `resolution`.
    Video {
        name: String,
        /// Price of one second at multiplier 1.
        #[serde(with = "dec::str")]
        #[schema(value_type = String, example = "0.10")]
        unit_price: Decimal,
        /// Resolution name (e.g. `720p`) → multiplier (e.g. `"1.5"`).
        #[serde(with = "dec::map")]
        #[schema(value_type = BTreeMap<String, String>)]
        resolution_multipliers: BTreeMap<String, Decimal>,
    },
}

/// One size tier of an [`Component::Image`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageTier {
    /// Largest image size (inclusive) this tier prices, in megapixels.
    #[serde(with = "dec::str")]
    #[schema(value_type = String, example = "1.05")]
    pub up_to_megapixels: Decimal,
    /// Price of one output image of this size.
    #[serde(with = "dec::str")]
    #[schema(value_type = String, example = "0.04")]
    pub unit_price: Decimal,
}

fn one() -> u64 {
    1
}

/// Usage field names read by the image components; they share `count`.
pub(crate) const WIDTH: &str = "width";
pub(crate) const HEIGHT: &str = "height";
pub(crate) const COUNT: &str = "count";
pub(crate) const FEATURES: &str = "features";
pub(crate) const STEPS: &str = "steps";
pub(crate) const SECONDS: &str = "seconds";
pub(crate) const RESOLUTION: &str = "resolution";

/// Largest `per`: 10^12 keeps `unit_price / per` well inside a `Decimal`'s 28 places.
const MAX_PER_EXPONENT: u32 = 12;
/// The decimal budget. A `Decimal` holds 28 significant digits exactly; a chargeable amount
/// (at most `Money::MAX`, 10^12) needs 13 integer digits, which leaves 15 decimals for every
/// line amount and every partial sum. A line amount's decimals are those of its unit price
/// (at most [`MAX_UNIT_PRICE_DECIMALS`] after `per`, or after a resolution multiplier and
/// fractional seconds) plus those of the discount factor (at most 4, as percentages have at
/// most 2). Staying within it means a valid rule and deal never fail a quote for lack of
/// precision: only an amount too large to charge is refused.
pub(crate) const MAX_UNIT_PRICE_DECIMALS: u32 = 11;
/// Decimals of fractional `seconds` in usage; counted in a video price's budget.
pub(crate) const MAX_SECONDS_DECIMALS: u32 = 3;
/// Decimal places of a resolution multiplier.
const MAX_MULTIPLIER_DECIMALS: u32 = 6;
const MAX_NAME_LEN: usize = 64;

/// `Some(k)` when `per == 10^k` with `k ≤ 12`.
pub(crate) fn per_exponent(per: u64) -> Option<u32> {
    (0..=MAX_PER_EXPONENT).find(|&k| 10u64.checked_pow(k) == Some(per))
}

fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        Some("must not be empty".into())
    } else if name.len() > MAX_NAME_LEN {
        Some(format!("must be at most {MAX_NAME_LEN} characters"))
    } else if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)) {
        Some(format!("`{name}` may only contain letters, digits, `_`, `.` and `-`"))
    } else {
        None
    }
}

fn check_price(path: String, price: Decimal) -> Result<(), PricingError> {
    check_price_scaled(path, price, 0)
}

/// Non-negative, and at most [`MAX_UNIT_PRICE_DECIMALS`] decimals once the price is divided
/// by `10^extra` (a `per`) or multiplied by a factor with `extra` decimals.
fn check_price_scaled(path: String, price: Decimal, extra: u32) -> Result<(), PricingError> {
    if price.is_sign_negative() && !price.is_zero() {
        return Err(PricingError::rule(path, "must not be negative"));
    }
    if price.normalize().scale() + extra > MAX_UNIT_PRICE_DECIMALS {
        let allowed = MAX_UNIT_PRICE_DECIMALS.saturating_sub(extra);
        return Err(PricingError::rule(path, format!("has too many decimal places (at most {allowed} here)")));
    }
    Ok(())
}

impl Component {
    /// The component's name, which is also the `component` of its cost line.
    pub fn name(&self) -> &str {
        match self {
            Component::PerUnit { name, .. }
            | Component::Image { name, .. }
            | Component::ImageFeature { name, .. }
            | Component::ImageSteps { name, .. }
            | Component::Video { name, .. } => name,
        }
    }

    /// The JSON `type` of the component.
    pub fn kind(&self) -> &'static str {
        match self {
            Component::PerUnit { .. } => "per_unit",
            Component::Image { .. } => "image",
            Component::ImageFeature { .. } => "image_feature",
            Component::ImageSteps { .. } => "image_steps",
            Component::Video { .. } => "video",
        }
    }

    fn is_image_family(&self) -> bool {
        matches!(self, Component::Image { .. } | Component::ImageFeature { .. } | Component::ImageSteps { .. })
    }

    /// Usage fields this component reads, with whether each is required.
    fn usage_fields(&self) -> Vec<(&str, bool)> {
        match self {
            Component::PerUnit { field, optional, .. } => vec![(field.as_str(), !optional)],
            Component::Image { .. } => vec![(WIDTH, true), (HEIGHT, true), (COUNT, false)],
            Component::ImageFeature { .. } => vec![(FEATURES, false), (COUNT, false)],
            Component::ImageSteps { .. } => vec![(STEPS, false), (COUNT, false)],
            Component::Video { .. } => vec![(SECONDS, true), (RESOLUTION, true)],
        }
    }

    /// True when `other` could replace `self` without changing which usage is valid:
    /// same kind, and for `per_unit` the same field and optionality. Tenant overrides
    /// must keep this, or one tenant's usage records would stop parsing for the model.
    pub(crate) fn same_binding(&self, other: &Component) -> bool {
        match (self, other) {
            (
                Component::PerUnit { field: f1, optional: o1, .. },
                Component::PerUnit { field: f2, optional: o2, .. },
            ) => f1 == f2 && o1 == o2,
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }

    /// Checks the component on its own (what a tenant override must satisfy too).
    /// `path` names it in errors, e.g. `components[2]`.
    pub(crate) fn validate_at(&self, path: &str) -> Result<(), PricingError> {
        if let Some(p) = name_problem(self.name()) {
            return Err(PricingError::rule(format!("{path}.name"), p));
        }
        match self {
            Component::PerUnit { field, unit_price, per, .. } => {
                if field.is_empty()
                    || field.len() > MAX_NAME_LEN
                    || !field.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                {
                    return Err(PricingError::rule(
                        format!("{path}.field"),
                        format!("must be 1 to {MAX_NAME_LEN} characters of `a-z`, `0-9` and `_`"),
                    ));
                }
                let Some(k) = per_exponent(*per) else {
                    return Err(PricingError::rule(
                        format!("{path}.per"),
                        "must be a power of ten from 1 to 1000000000000 (1, 1000, 1000000, ...)",
                    ));
                };
                check_price_scaled(format!("{path}.unit_price"), *unit_price, k)?;
            }
            Component::Image { tiers, .. } => {
                if tiers.is_empty() {
                    return Err(PricingError::rule(format!("{path}.tiers"), "must list at least one tier"));
                }
                let mut previous: Option<Decimal> = None;
                for (i, tier) in tiers.iter().enumerate() {
                    let at = format!("{path}.tiers[{i}]");
                    if tier.up_to_megapixels <= Decimal::ZERO {
                        return Err(PricingError::rule(format!("{at}.up_to_megapixels"), "must be positive"));
                    }
                    if let Some(prev) = previous {
                        if tier.up_to_megapixels <= prev {
                            return Err(PricingError::rule(
                                format!("{at}.up_to_megapixels"),
                                format!("must be larger than the previous tier's ({prev}): list tiers smallest first"),
                            ));
                        }
                    }
                    previous = Some(tier.up_to_megapixels);
                    check_price(format!("{at}.unit_price"), tier.unit_price)?;
                }
            }
            Component::ImageFeature { unit_price, .. } | Component::ImageSteps { unit_price, .. } => {
                check_price(format!("{path}.unit_price"), *unit_price)?;
            }
            Component::Video { unit_price, resolution_multipliers, .. } => {
                check_price(format!("{path}.unit_price"), *unit_price)?;
                if resolution_multipliers.is_empty() {
                    return Err(PricingError::rule(
                        format!("{path}.resolution_multipliers"),
                        "must list at least one resolution",
                    ));
                }
                for (res, m) in resolution_multipliers {
                    if let Some(p) = name_problem(res) {
                        return Err(PricingError::rule(format!("{path}.resolution_multipliers"), format!("key {p}")));
                    }
                    let at = format!("{path}.resolution_multipliers.{res}");
                    let m_scale = m.normalize().scale();
                    if m_scale > MAX_MULTIPLIER_DECIMALS {
                        return Err(PricingError::rule(
                            at,
                            format!("must have at most {MAX_MULTIPLIER_DECIMALS} decimal places"),
                        ));
                    }
                    check_price(at, *m)?;
                    check_price_scaled(format!("{path}.unit_price"), *unit_price, m_scale + MAX_SECONDS_DECIMALS)?;
                }
            }
        }
        Ok(())
    }
}

impl PriceRule {
    /// Refuses rules the engine could not price unambiguously; see the module invariants.
    pub fn validate(&self) -> Result<(), PricingError> {
        if self.components.is_empty() {
            return Err(PricingError::rule("components", "must list at least one component"));
        }
        let mut names = HashSet::new();
        let mut kinds: HashMap<&str, usize> = HashMap::new();
        // field -> index of the first component reading it
        let mut readers: HashMap<&str, usize> = HashMap::new();
        for (i, c) in self.components.iter().enumerate() {
            let path = format!("components[{i}]");
            c.validate_at(&path)?;
            if !names.insert(c.name()) {
                return Err(PricingError::rule(
                    format!("{path}.name"),
                    format!("`{}` is used by another component: names must be unique", c.name()),
                ));
            }
            if matches!(c, Component::Image { .. } | Component::ImageSteps { .. } | Component::Video { .. }) {
                if let Some(first) = kinds.insert(c.kind(), i) {
                    return Err(PricingError::rule(
                        format!("{path}.type"),
                        format!("`{}` already appears at components[{first}]; a rule has at most one", c.kind()),
                    ));
                }
            }
            for (field, _) in c.usage_fields() {
                match readers.get(field) {
                    Some(&j) if !(c.is_image_family() && self.components[j].is_image_family()) => {
                        let at = if matches!(c, Component::PerUnit { .. }) { format!("{path}.field") } else { path };
                        return Err(PricingError::rule(
                            at,
                            format!("reads usage field `{field}`, which components[{j}] already reads"),
                        ));
                    }
                    Some(_) => {}
                    None => {
                        readers.insert(field, i);
                    }
                }
            }
        }
        if !kinds.contains_key("image") {
            if let Some(i) = self
                .components
                .iter()
                .position(|c| matches!(c, Component::ImageFeature { .. } | Component::ImageSteps { .. }))
            {
                return Err(PricingError::rule(
                    format!("components[{i}].type"),
                    format!("`{}` needs an `image` component in the same rule", self.components[i].kind()),
                ));
            }
        }
        Ok(())
    }

    /// Usage fields this rule accepts, in component order, each once, with whether it is
    /// required. Anything else in a usage record is refused.
    pub fn usage_fields(&self) -> Vec<(&str, bool)> {
        let mut out: Vec<(&str, bool)> = Vec::new();
        for c in &self.components {
            for (field, required) in c.usage_fields() {
                match out.iter_mut().find(|(f, _)| *f == field) {
                    Some(seen) => seen.1 |= required,
                    None => out.push((field, required)),
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(v: serde_json::Value) -> PriceRule {
        serde_json::from_value(v).unwrap()
    }

    fn problem(v: serde_json::Value) -> String {
        rule(v).validate().unwrap_err().to_string()
    }

    fn image() -> serde_json::Value {
        json!({"type": "image", "name": "image", "tiers": [{"up_to_megapixels": "1", "unit_price": "0.04"}]})
    }

    #[test]
    fn every_kind_round_trips_through_json() {
        let v = json!({
            "description": "everything",
            "components": [
                {"type": "per_unit", "name": "input_tokens", "field": "input_tokens", "unit_price": "0.15", "per": 1000000},
                {"type": "per_unit", "name": "cached", "field": "cached_tokens", "unit_price": "0.075", "per": 1000000, "optional": true},
                {"type": "image", "name": "image", "tiers": [
                    {"up_to_megapixels": "1.05", "unit_price": "0.04"},
                    {"up_to_megapixels": "2.1", "unit_price": "0.06"}]},
                {"type": "image_feature", "name": "upscale", "unit_price": "0.02"},
                {"type": "image_steps", "name": "extra_steps", "included_steps": 28, "unit_price": "0.0005"},
                {"type": "video", "name": "video", "unit_price": "0.10", "resolution_multipliers": {"720p": "1", "1080p": "1.5"}}
            ]
        });
        let r = rule(v.clone());
        r.validate().unwrap();
        assert_eq!(serde_json::to_value(&r).unwrap(), v);
        assert_eq!(
            r.usage_fields(),
            vec![
                ("input_tokens", true),
                ("cached_tokens", false),
                ("width", true),
                ("height", true),
                ("count", false),
                ("features", false),
                ("steps", false),
                ("seconds", true),
                ("resolution", true),
            ]
        );
        // `per` defaults to 1 and is then written out.
        let r = rule(json!({"components": [{"type": "per_unit", "name": "n", "field": "n", "unit_price": "1"}]}));
        assert_eq!(
            r.components[0],
            Component::PerUnit {
                name: "n".into(),
                field: "n".into(),
                unit_price: Decimal::ONE,
                per: 1,
                optional: false
            }
        );
    }

    #[test]
    fn json_is_strict() {
        let bad = [
            json!({"components": [], "extra": 1}),
            json!({"components": [{"type": "per_unit", "name": "n", "field": "n", "unit_price": 0.15}]}),
            json!({"components": [{"type": "per_unit", "name": "n", "field": "n", "unit_price": "0.15", "colour": "red"}]}),
            json!({"components": [{"type": "per_token", "name": "n", "field": "n", "unit_price": "0.15"}]}),
            json!({"components": [{"name": "n", "field": "n", "unit_price": "0.15"}]}),
            json!({"components": [{"type": "image", "name": "i", "tiers": [{"up_to_megapixels": "1", "unit_price": "1", "x": 1}]}]}),
            json!({"components": [{"type": "per_unit", "name": "n", "field": "n", "unit_price": "1e-6"}]}),
        ];
        for v in bad {
            assert!(serde_json::from_value::<PriceRule>(v.clone()).is_err(), "{v} should not parse");
        }
    }

    #[test]
    fn validate_refuses_bad_rules() {
        let cases = [
            (json!({"components": []}), "price rule field `components` must list at least one component"),
            (
                json!({"components": [{"type": "per_unit", "name": "a", "field": "a", "unit_price": "-0.1"}]}),
                "price rule field `components[0].unit_price` must not be negative",
            ),
            (
                json!({"components": [
                    {"type": "per_unit", "name": "a", "field": "a", "unit_price": "1"},
                    {"type": "per_unit", "name": "a", "field": "b", "unit_price": "1"}]}),
                "price rule field `components[1].name` `a` is used by another component: names must be unique",
            ),
            (
                json!({"components": [
                    {"type": "per_unit", "name": "a", "field": "tokens", "unit_price": "1"},
                    {"type": "per_unit", "name": "b", "field": "tokens", "unit_price": "1"}]}),
                "price rule field `components[1].field` reads usage field `tokens`, which components[0] already reads",
            ),
            (
                json!({"components": [{"type": "per_unit", "name": "a", "field": "a", "unit_price": "1", "per": 1000001}]}),
                "price rule field `components[0].per` must be a power of ten from 1 to 1000000000000 (1, 1000, 1000000, ...)",
            ),
            (
                json!({"components": [{"type": "per_unit", "name": "a", "field": "a", "unit_price": "1", "per": 0}]}),
                "price rule field `components[0].per` must be a power of ten from 1 to 1000000000000 (1, 1000, 1000000, ...)",
            ),
            (
                json!({"components": [{"type": "per_unit", "name": "", "field": "a", "unit_price": "1"}]}),
                "price rule field `components[0].name` must not be empty",
            ),
            (
                json!({"components": [{"type": "per_unit", "name": "a b", "field": "a", "unit_price": "1"}]}),
                "price rule field `components[0].name` `a b` may only contain letters, digits, `_`, `.` and `-`",
            ),
            (
                json!({"components": [{"type": "per_unit", "name": "a", "field": "Input Tokens", "unit_price": "1"}]}),
                "price rule field `components[0].field` must be 1 to 64 characters of `a-z`, `0-9` and `_`",
            ),
            (
                json!({"components": [{"type": "image", "name": "i", "tiers": []}]}),
                "price rule field `components[0].tiers` must list at least one tier",
            ),
            (
                json!({"components": [{"type": "image", "name": "i", "tiers": [
                    {"up_to_megapixels": "2", "unit_price": "1"}, {"up_to_megapixels": "1", "unit_price": "1"}]}]}),
                "price rule field `components[0].tiers[1].up_to_megapixels` must be larger than the previous tier's (2): list tiers smallest first",
            ),
            (
                json!({"components": [{"type": "image", "name": "i", "tiers": [
                    {"up_to_megapixels": "1", "unit_price": "1"}, {"up_to_megapixels": "1", "unit_price": "2"}]}]}),
                "price rule field `components[0].tiers[1].up_to_megapixels` must be larger than the previous tier's (1): list tiers smallest first",
            ),
            (
                json!({"components": [{"type": "image", "name": "i", "tiers": [{"up_to_megapixels": "0", "unit_price": "1"}]}]}),
                "price rule field `components[0].tiers[0].up_to_megapixels` must be positive",
            ),
            (
                json!({"components": [{"type": "image", "name": "i", "tiers": [{"up_to_megapixels": "1", "unit_price": "-1"}]}]}),
                "price rule field `components[0].tiers[0].unit_price` must not be negative",
            ),
            (
                json!({"components": [{"type": "image_feature", "name": "hd", "unit_price": "0.01"}]}),
                "price rule field `components[0].type` `image_feature` needs an `image` component in the same rule",
            ),
            (
                json!({"components": [image(), {"type": "image_steps", "name": "s", "included_steps": 1, "unit_price": "-1"}]}),
                "price rule field `components[1].unit_price` must not be negative",
            ),
            (
                json!({"components": [image(), {"type": "image", "name": "i2", "tiers": [{"up_to_megapixels": "1", "unit_price": "1"}]}]}),
                "price rule field `components[1].type` `image` already appears at components[0]; a rule has at most one",
            ),
            (
                json!({"components": [image(), {"type": "per_unit", "name": "n", "field": "count", "unit_price": "1"}]}),
                "price rule field `components[1].field` reads usage field `count`, which components[0] already reads",
            ),
            (
                json!({"components": [{"type": "video", "name": "v", "unit_price": "0.1", "resolution_multipliers": {}}]}),
                "price rule field `components[0].resolution_multipliers` must list at least one resolution",
            ),
            (
                json!({"components": [{"type": "video", "name": "v", "unit_price": "0.1", "resolution_multipliers": {"720p": "-1"}}]}),
                "price rule field `components[0].resolution_multipliers.720p` must not be negative",
            ),
            (
                json!({"components": [{"type": "per_unit", "name": "a", "field": "a", "unit_price": "0.000001", "per": 1000000}]}),
                "price rule field `components[0].unit_price` has too many decimal places (at most 5 here)",
            ),
            (
                json!({"components": [{"type": "per_unit", "name": "a", "field": "a", "unit_price": "0.000000000001"}]}),
                "price rule field `components[0].unit_price` has too many decimal places (at most 11 here)",
            ),
            (
                json!({"components": [{"type": "image", "name": "i", "tiers": [{"up_to_megapixels": "1", "unit_price": "0.000000000001"}]}]}),
                "price rule field `components[0].tiers[0].unit_price` has too many decimal places (at most 11 here)",
            ),
            (
                json!({"components": [{"type": "video", "name": "v", "unit_price": "0.1", "resolution_multipliers": {"720p": "1.0000001"}}]}),
                "price rule field `components[0].resolution_multipliers.720p` must have at most 6 decimal places",
            ),
            (
                json!({"components": [{"type": "video", "name": "v", "unit_price": "0.00001", "resolution_multipliers": {"720p": "1.0001"}}]}),
                "price rule field `components[0].unit_price` has too many decimal places (at most 4 here)",
            ),
            (
                json!({"components": [{"type": "video", "name": "v", "unit_price": "-0.1", "resolution_multipliers": {"720p": "1"}}]}),
                "price rule field `components[0].unit_price` must not be negative",
            ),
        ];
        for (v, expected) in cases {
            assert_eq!(problem(v.clone()), expected, "for {v}");
        }
    }

    #[test]
    fn validate_accepts_edge_cases() {
        // Free components, zero multipliers and negative zero are all fine.
        rule(json!({"components": [
            {"type": "per_unit", "name": "a", "field": "a", "unit_price": "-0"},
            {"type": "video", "name": "v", "unit_price": "0", "resolution_multipliers": {"preview": "0"}}
        ]}))
        .validate()
        .unwrap();
        assert_eq!(per_exponent(1), Some(0));
        assert_eq!(per_exponent(1_000_000), Some(6));
        assert_eq!(per_exponent(1_000_000_000_000), Some(12));
        assert_eq!(per_exponent(10_000_000_000_000), None);
        assert_eq!(per_exponent(20), None);
    }
}
