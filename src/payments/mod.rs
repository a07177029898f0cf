//! Payment providers: the one narrow interface the service charges cards through.
//!
//! Contract every implementation keeps (the exactly-once flows depend on it):
//! - `charge` is idempotent by `idempotency_key`: a repeated key never charges twice and
//!   returns the first final outcome (`Succeeded` or `Declined`);
//! - `Declined` is final for that key: the card said no;
//! - `Unavailable` is retryable: the same key may be sent again, and whether or not the
//!   first try reached the card network, at most one charge results.
//!
//! A real provider (Stripe) is one more implementation: `charge` maps to creating and
//! confirming a PaymentIntent with the `Idempotency-Key` header set to `idempotency_key`
//! (`succeeded` → `Succeeded`, `card_error` → `Declined`, network errors, 5xx and 429 →
//! `Unavailable`), and `describe` to retrieving the PaymentMethod for its brand and last4.
//!
//! The service never holds a database lock or transaction across [`charge_within`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::money::Money;

pub mod mock;

pub use mock::MockProvider;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeRequest {
    /// Derived from the top-up id and re-used for every try of that top-up.
    pub idempotency_key: String,
    pub token: String,
    pub amount: Money,
    pub currency: String,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    Succeeded { provider_ref: String },
    Declined { reason: String },
    Unavailable { reason: String },
}

/// What may be shown of a payment method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodInfo {
    pub brand: String,
    pub last4: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MethodError {
    #[error("{0}")]
    Invalid(String),
    #[error("the payment provider is unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait PaymentProvider: Send + Sync {
    /// Checks a payment method token and says what to show of it.
    async fn describe(&self, token: &str) -> Result<MethodInfo, MethodError>;
    /// Charges `amount` to the token, idempotently by `idempotency_key`.
    async fn charge(&self, req: ChargeRequest) -> ChargeOutcome;
}

/// The answer to one provider call as the service sees it: the provider's outcome, or no
/// answer within the time limit (the charge may or may not have happened).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Outcome(ChargeOutcome),
    TimedOut,
}

/// Calls the provider with a time limit.
pub async fn charge_within(provider: &dyn PaymentProvider, req: ChargeRequest, limit: Duration) -> Answer {
    match tokio::time::timeout(limit, provider.charge(req)).await {
        Ok(outcome) => Answer::Outcome(outcome),
        Err(_) => Answer::TimedOut,
    }
}

/// The provider `name` (`TALLY_PAYMENT_PROVIDER`) selects, and the mock itself when it is
/// the mock (tests read its calls). `mock`: a mock to use instead of a fresh one, so that
/// several instances in one process share one provider the way replicas share a real one.
pub fn select(
    name: &str,
    slow_delay: Duration,
    mock: Option<Arc<MockProvider>>,
) -> Result<(Arc<dyn PaymentProvider>, Option<Arc<MockProvider>>), String> {
    match name {
        "mock" => {
            let mock = mock.unwrap_or_else(|| Arc::new(MockProvider::new(slow_delay)));
            Ok((mock.clone(), Some(mock)))
        }
        other => Err(format!("TALLY_PAYMENT_PROVIDER: unknown provider {other:?} (known: mock)")),
    }
}
