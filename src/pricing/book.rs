//! Price books: a file of price rules, one per model.
//!
//! Format (the same for the built-in `prices/default.json` and for an operator's own file):
//!
//! ```json
//! {"models": {"<model>": <PriceRule>, "<model>": <PriceRule>, ...}}
//! ```
//!
//! Invariants of a parsed book: at least one model; every model name passes
//! [`validate_model_name`]; no model appears twice (a JSON object with a repeated key
//! would otherwise silently keep the last one, hiding an operator's mistake); every rule
//! passes [`PriceRule::validate`]. Models come back in file order.

use std::fmt;
use std::sync::OnceLock;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::{PriceRule, PricingError};

const DEFAULT_BOOK: &str = include_str!("../../prices/default.json");
const MAX_MODEL_NAME_LEN: usize = 128;

/// The built-in price book.
pub fn default_price_book() -> Vec<(String, PriceRule)> {
    static BOOK: OnceLock<Vec<(String, PriceRule)>> = OnceLock::new();
    BOOK.get_or_init(|| {
        // The file is compiled in and a unit test parses it, so this cannot fail in a
        // build that passed its tests.
        parse_price_book(DEFAULT_BOOK).unwrap_or_else(|e| panic!("prices/default.json is invalid: {e}"))
    })
    .clone()
}

/// Parses and validates a price-book file.
pub fn parse_price_book(json: &str) -> Result<Vec<(String, PriceRule)>, PricingError> {
    let file: BookFile = serde_json::from_str(json)
        .map_err(|e| PricingError::InvalidPriceBook { problem: format!("is not valid: {e}") })?;
    let models = file.models.0;
    if models.is_empty() {
        return Err(PricingError::InvalidPriceBook { problem: "lists no models".into() });
    }
    for (model, rule) in &models {
        validate_model_name(model)
            .map_err(|e| PricingError::InvalidPriceBook { problem: format!("is not valid: {e}") })?;
        rule.validate().map_err(|e| PricingError::InvalidPriceBook { problem: format!("model `{model}`: {e}") })?;
    }
    Ok(models)
}

/// Model names appear in URLs (`/v1/admin/prices/{model}`), logs and CSV exports, so they
/// are kept to 1–128 printable ASCII characters: letters, digits and `-._:/@`, not
/// starting or ending with `/`.
pub fn validate_model_name(model: &str) -> Result<(), PricingError> {
    let problem = if model.is_empty() {
        "must not be empty"
    } else if model.len() > MAX_MODEL_NAME_LEN {
        "must be at most 128 characters"
    } else if !model.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:/@".contains(&b)) {
        "may only contain letters, digits and `-._:/@`"
    } else if model.starts_with('/') || model.ends_with('/') {
        "must not start or end with `/`"
    } else {
        return Ok(());
    };
    Err(PricingError::InvalidModelName { model: model.into(), problem: problem.into() })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BookFile {
    models: Models,
}

/// The `models` object, in file order, refusing repeated keys.
struct Models(Vec<(String, PriceRule)>);

impl<'de> Deserialize<'de> for Models {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Models;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object mapping model names to price rules")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Models, A::Error> {
                let mut out: Vec<(String, PriceRule)> = Vec::new();
                while let Some(model) = map.next_key::<String>()? {
                    if out.iter().any(|(m, _)| *m == model) {
                        return Err(de::Error::custom(format!("model `{model}` is listed twice")));
                    }
                    let rule = map.next_value::<PriceRule>()?;
                    out.push((model, rule));
                }
                Ok(Models(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Money;
    use crate::pricing::{quote, Component};
    use serde_json::{json, Map, Value};

    /// A plausible usage record exercising every component of `rule`.
    fn sample_usage(rule: &PriceRule) -> Value {
        let mut u = Map::new();
        for c in &rule.components {
            match c {
                Component::PerUnit { field, .. } => {
                    u.insert(field.clone(), json!(1500));
                }
                Component::Image { .. } => {
                    u.insert("width".into(), json!(1024));
                    u.insert("height".into(), json!(1024));
                    u.insert("count".into(), json!(2));
                }
                Component::ImageFeature { name, .. } => {
                    u.entry("features").or_insert_with(|| json!([])).as_array_mut().unwrap().push(json!(name));
                }
                Component::ImageSteps { included_steps, .. } => {
                    u.insert("steps".into(), json!(included_steps + 10));
                }
                Component::Video { resolution_multipliers, .. } => {
                    u.insert("seconds".into(), json!("5.5"));
                    u.insert("resolution".into(), json!(resolution_multipliers.keys().next().unwrap()));
                }
            }
        }
        Value::Object(u)
    }

    #[test]
    fn default_book_parses_and_every_model_quotes() {
        let book = parse_price_book(DEFAULT_BOOK).unwrap();
        assert_eq!(book, default_price_book());
        assert!(book.len() >= 9);
        let kinds: Vec<&str> = book.iter().flat_map(|(_, r)| r.components.iter().map(Component::kind)).collect();
        for kind in ["per_unit", "image", "image_feature", "image_steps", "video"] {
            assert!(kinds.contains(&kind), "default book has no `{kind}` component");
        }
        for (model, rule) in &book {
            assert!(!rule.description.is_empty(), "{model} has no description");
            let usage = sample_usage(rule);
            let q = quote(model, rule, None, &usage).unwrap_or_else(|e| panic!("{model}: {e}"));
            assert!(q.amount > Money::ZERO, "{model} quoted zero for {usage}");
            assert_eq!(q.lines.len(), rule.components.len(), "{model}: every component applies to the sample");
        }
    }

    #[test]
    fn default_book_has_the_expected_prices() {
        let book = default_price_book();
        let get = |m: &str| &book.iter().find(|(n, _)| n == m).unwrap_or_else(|| panic!("no {m}")).1;
        let q = |m: &str, u: Value| quote(m, get(m), None, &u).unwrap().amount.to_string();
        assert_eq!(q("gpt-4o-mini", json!({"input_tokens": 1_000_000, "output_tokens": 1_000_000})), "0.75");
        assert_eq!(q("claude-sonnet", json!({"input_tokens": 1_000_000, "output_tokens": 1_000_000})), "18.00");
        assert_eq!(q("claude-sonnet", json!({"input_tokens": 1000, "output_tokens": 500})), "0.0105");
        assert_eq!(
            q(
                "flux-pro",
                json!({"width": 1024, "height": 1024, "count": 2, "features": ["upscale", "hd"], "steps": 30})
            ),
            "0.142"
        );
        assert_eq!(q("flux-pro", json!({"width": 2048, "height": 2048})), "0.08");
        assert_eq!(q("veo-fast", json!({"seconds": 8, "resolution": "1080p"})), "1.20");
        assert_eq!(q("veo-fast", json!({"seconds": 8, "resolution": "480p"})), "0.40");
        assert_eq!(q("veo-fast", json!({"seconds": "2.5", "resolution": "4k"})), "0.75");
    }

    #[test]
    fn operator_books_are_checked() {
        let ok = r#"{"models": {"my-model": {"description": "d", "components": [
            {"type": "per_unit", "name": "calls", "field": "calls", "unit_price": "0.01"}]}}}"#;
        let book = parse_price_book(ok).unwrap();
        assert_eq!(book.len(), 1);
        assert_eq!(book[0].0, "my-model");

        let err = |s: &str| parse_price_book(s).unwrap_err().to_string();
        assert_eq!(err(r#"{"models": {}}"#), "price book lists no models");
        assert!(err("not json").starts_with("price book is not valid: "));
        assert!(err(r#"{"models": {}, "version": 2}"#).contains("unknown field `version`"));
        let twice = r#"{"models": {
            "a": {"components": [{"type": "per_unit", "name": "c", "field": "c", "unit_price": "1"}]},
            "a": {"components": [{"type": "per_unit", "name": "c", "field": "c", "unit_price": "2"}]}}}"#;
        assert!(err(twice).contains("model `a` is listed twice"), "{}", err(twice));
        let bad_rule = r#"{"models": {"a": {"components": []}}}"#;
        assert_eq!(
            err(bad_rule),
            "price book model `a`: price rule field `components` must list at least one component"
        );
        let bad_name = r#"{"models": {"a b": {"components": [{"type": "per_unit", "name": "c", "field": "c", "unit_price": "1"}]}}}"#;
        assert_eq!(
            err(bad_name),
            "price book is not valid: model name `a b` may only contain letters, digits and `-._:/@`"
        );
        // File order is kept.
        let order = r#"{"models": {
            "z": {"components": [{"type": "per_unit", "name": "c", "field": "c", "unit_price": "1"}]},
            "a": {"components": [{"type": "per_unit", "name": "c", "field": "c", "unit_price": "1"}]}}}"#;
        let names: Vec<String> = parse_price_book(order).unwrap().into_iter().map(|(m, _)| m).collect();
        assert_eq!(names, ["z", "a"]);
    }

    #[test]
    fn model_names() {
        for ok in ["gpt-4o-mini", "claude-3.5-sonnet", "openai/gpt-4o", "model:v2@2024", "a"] {
            validate_model_name(ok).unwrap();
        }
        for bad in ["", "a b", "/a", "a/", "é", "a\nb", &"x".repeat(129)] {
            assert!(validate_model_name(bad).is_err(), "{bad:?}");
        }
    }
}
