//! Pricing: pure functions from a price rule, a tenant's deal and a usage record to a cost.
//!
//! Nothing here does I/O, touches the database or awaits: the estimate endpoint and the
//! charge path call the same [`quote`] with the same inputs, so they cannot disagree.
//!
//! Invariants every part of this module keeps:
//! - arithmetic is exact: every intermediate value is a `Decimal` computed without any
//!   rounding, and a value that cannot be held exactly is a [`PricingError`], never a
//!   silently rounded number and never a panic;
//! - rounding happens once, at the very end, through [`Money::round_cost`](crate::money::Money::round_cost);
//! - every problem a client or operator can cause is a [`PricingError`] whose `Display`
//!   is a sentence fit to show them, naming the offending field.
//!
//! Layout: [`rule`] is the stored price-rule format and its validation, [`deal`] the
//! per-tenant custom pricing, [`quote`](mod@quote) the engine, [`book`] the built-in
//! price book; `dec`, `exact` and `usage` are private helpers.

pub mod book;
pub mod deal;
mod dec;
mod exact;
pub mod quote;
pub mod rule;
mod usage;

pub use book::{default_price_book, parse_price_book, validate_model_name};
pub use deal::{ModelDeal, TenantPricing};
pub use quote::{quote, CostLine, Quote};
pub use rule::{Component, ImageTier, PriceRule};

use rust_decimal::Decimal;

/// Everything that can stop a quote, a rule or a deal from being accepted.
///
/// Usage errors (`Usage*`, `UnknownFeature`, `UnknownResolution`, `ImageTooLarge`) are the
/// caller's fault and map to HTTP 400; `InvalidRule`/`InvalidDeal`/`InvalidPriceBook` are
/// refused configuration (400 on the admin endpoints); `Overflow`/`AmountTooLarge` mean the
/// usage asks for an absurd amount and are also best answered with 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    #[error("usage must be a JSON object")]
    UsageNotObject,
    #[error("usage field `{field}` is not known to model `{model}`")]
    UnknownUsageField { model: String, field: String },
    #[error("usage field `{field}` is required by model `{model}`")]
    MissingUsageField { model: String, field: String },
    #[error("usage field `{field}` must be {expected}")]
    InvalidUsageValue { field: String, expected: &'static str },
    #[error("usage field `features` lists `{feature}`, which model `{model}` does not offer")]
    UnknownFeature { model: String, feature: String },
    #[error("usage field `features` lists `{feature}` more than once")]
    DuplicateFeature { feature: String },
    #[error("usage field `resolution` is `{resolution}`, which model `{model}` does not offer (it offers: {offered})")]
    UnknownResolution { model: String, resolution: String, offered: String },
    #[error(
        "usage fields `width` and `height` make a {megapixels}-megapixel image, \
         larger than the largest size model `{model}` prices ({max_megapixels} megapixels)"
    )]
    ImageTooLarge { model: String, megapixels: Decimal, max_megapixels: Decimal },
    #[error("price rule field `{field}` {problem}")]
    InvalidRule { field: String, problem: String },
    #[error("tenant pricing field `{field}` {problem}")]
    InvalidDeal { field: String, problem: String },
    #[error("the cost of component `{component}` cannot be computed exactly: its numbers are too large or have too many decimals")]
    Overflow { component: String },
    #[error("the cost {exact} is larger than the largest amount that can be charged")]
    AmountTooLarge { exact: Decimal },
    #[error("model name `{model}` {problem}")]
    InvalidModelName { model: String, problem: String },
    #[error("price book {problem}")]
    InvalidPriceBook { problem: String },
}

impl PricingError {
    pub(crate) fn rule(field: impl Into<String>, problem: impl Into<String>) -> Self {
        PricingError::InvalidRule { field: field.into(), problem: problem.into() }
    }
    pub(crate) fn deal(field: impl Into<String>, problem: impl Into<String>) -> Self {
        PricingError::InvalidDeal { field: field.into(), problem: problem.into() }
    }
    pub(crate) fn usage(field: impl Into<String>, expected: &'static str) -> Self {
        PricingError::InvalidUsageValue { field: field.into(), expected }
    }
}
