//! Payment providers: the one narrow interface the service moves card money through.
//!
//! Contract every implementation keeps (the exactly-once flows depend on it):
//! - `charge` is idempotent by the attempt: every call for one attempt carries the same
//!   `idempotency_key`, and whatever the number of calls, at most one charge results; a
//!   repeated call returns the first final outcome;
//! - `Succeeded` and `Declined` are final for the attempt;
//! - `Unavailable` means the provider definitely did not charge in this call (a 429, a
//!   connection that never opened, a step that cannot charge): the attempt may be retried;
//! - `Unknown` means the call may have charged and the answer was lost (a 5xx after the
//!   request was sent, a timeout, a network error): the attempt is re-driven until the
//!   provider gives a final answer, and is never closed or re-created before that;
//! - a provider whose payments take several steps records its payment object through the
//!   [`Journal`] (committed) before the step that can charge, so a lost answer is settled by
//!   looking that object up, never by creating a second one;
//! - `refund` follows the same four answers, idempotent by its own key.
//!
//! Implementations: [`mock`] (ships in the binary, for development and tests) and
//! [`stripe`] (PaymentIntents over Stripe's HTTP API). Both share everything above them:
//! attempts, refunds, reversals and the clawback live in `services::money_in`.
//!
//! The service never holds a database lock or transaction across a provider call.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use crate::config::Config;
use crate::money::Money;

pub mod mock;
pub mod stripe;

pub use mock::MockProvider;
pub use stripe::StripeProvider;

/// One call for one top-up attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeRequest {
    /// The attempt's provider key, committed with the attempt and re-used by every call.
    pub idempotency_key: String,
    pub attempt_id: Uuid,
    pub tenant_id: Uuid,
    /// Which call for the attempt this is (1, 2, …): a step that may be repeated safely
    /// but must not replay an earlier call's stored answer uses it in its key.
    pub try_no: i32,
    pub token: String,
    /// The tenant's customer at the provider (Stripe), the card is attached to it.
    pub customer: Option<String>,
    /// The provider's payment object recorded by an earlier call (Stripe: a PaymentIntent).
    pub intent: Option<String>,
    pub amount: Money,
    pub currency: String,
    pub description: String,
}

/// The four answers of a provider call (charges and refunds alike).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// Done; `provider_ref` names the payment (or refund) at the provider.
    Succeeded { provider_ref: String },
    /// Final no. `code` is the machine-readable reason (Stripe's `decline_code`, or
    /// `authentication_required` for a card that needs 3-D Secure).
    Declined { reason: String, code: Option<String> },
    /// Definitely not done in this call: retry later.
    Unavailable { reason: String },
    /// Maybe done: look it up (or wait for the provider's webhook) until a final answer.
    Unknown { reason: String },
}

/// A refund's answers are a charge's.
pub type RefundOutcome = ChargeOutcome;

/// The reason code of a card that needs authentication an off-session payment cannot give.
pub const AUTHENTICATION_REQUIRED: &str = "authentication_required";

/// Where a provider records the payment object it created for an attempt, before the step
/// that can charge: a committed write, so a crash or a lost answer never loses it.
#[async_trait]
pub trait Journal: Send + Sync {
    async fn record_intent(&self, intent: &str) -> Result<(), String>;
}

/// A journal that records nothing, for a provider whose charge is one step (the mock).
pub struct NoJournal;

#[async_trait]
impl Journal for NoJournal {
    async fn record_intent(&self, _intent: &str) -> Result<(), String> {
        Ok(())
    }
}

/// One refund of (part of) a top-up's payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRequest {
    pub idempotency_key: String,
    pub refund_id: Uuid,
    pub top_up_id: Uuid,
    pub tenant_id: Uuid,
    /// The top-up's payment at the provider (its `provider_ref`).
    pub payment_ref: String,
    pub amount: Money,
    pub currency: String,
    pub reason: String,
    pub try_no: i32,
}

/// A refund as the provider lists it for a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRefund {
    pub id: String,
    pub amount: Money,
    /// Accepted by the provider (the money is on its way back to the card).
    pub accepted: bool,
    /// Set when the refund was made through Tally (its `top_up_refunds` id).
    pub tally_refund_id: Option<Uuid>,
}

/// What may be shown of a payment method, and the token to charge: the provider may hand
/// back another id than the one given (Stripe's test tokens make a new PaymentMethod).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodInfo {
    pub token: String,
    pub brand: String,
    pub last4: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MethodError {
    #[error("{0}")]
    Invalid(String),
    /// The payment method belongs to another customer: never charge it for this tenant.
    #[error("{0}")]
    OtherCustomer(String),
    #[error("the payment provider is unavailable: {0}")]
    Unavailable(String),
}

/// Something a provider reported on its own (a verified webhook event), in the service's
/// words. Amounts are already in money, not the provider's minor units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderEvent {
    PaymentSucceeded {
        intent: String,
        tenant: Option<Uuid>,
        top_up: Option<Uuid>,
        amount: Money,
        currency: String,
    },
    PaymentFailed {
        intent: String,
        tenant: Option<Uuid>,
        top_up: Option<Uuid>,
        reason: String,
        code: Option<String>,
    },
    /// Refunds were made on a payment (through Tally or at the provider): list them.
    Refunded {
        intent: String,
    },
    /// A dispute (chargeback) took money back.
    Disputed {
        dispute: String,
        intent: String,
        amount: Money,
        currency: String,
        reason: String,
    },
    /// Verified, but nothing the service acts on.
    Ignored,
}

/// A verified event: its provider id (for de-duplication), type and meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: String,
    pub kind: String,
    pub body: ProviderEvent,
}

#[async_trait]
pub trait PaymentProvider: Send + Sync {
    /// `mock` or `stripe`, as `payment_customers.provider` spells it.
    fn name(&self) -> &'static str;

    /// Refuses an amount the provider cannot charge or refund exactly (Stripe: sub-cent).
    fn check_amount(&self, _amount: Money, _currency: &str) -> Result<(), String> {
        Ok(())
    }

    /// Creates the tenant's customer at the provider; `None` when the provider has none.
    /// Called once per tenant: the service stores the id.
    async fn create_customer(&self, tenant: Uuid) -> Result<Option<String>, MethodError>;

    /// Checks a payment method token and binds it to the tenant's customer: a method that
    /// belongs to another customer is refused ([`MethodError::OtherCustomer`]).
    async fn attach(&self, tenant: Uuid, customer: Option<&str>, token: &str) -> Result<MethodInfo, MethodError>;

    /// Charges `req.amount` once per attempt, recording its payment object in `journal`
    /// before the step that can charge.
    async fn charge(&self, req: ChargeRequest, journal: &dyn Journal) -> ChargeOutcome;

    /// Refunds (part of) a payment, idempotently by `req.idempotency_key`.
    async fn refund(&self, req: RefundRequest) -> RefundOutcome;

    /// The refunds made on a payment, for an event that says some were.
    async fn refunds_of(&self, _payment_ref: &str) -> Result<Vec<ProviderRefund>, String> {
        Ok(Vec::new())
    }
}

/// The answer to one provider call as the service sees it: the provider's outcome, or no
/// answer within the time limit (the charge may or may not have happened).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Outcome(ChargeOutcome),
    TimedOut,
}

/// Calls the provider with a time limit.
pub async fn charge_within(
    provider: &dyn PaymentProvider,
    req: ChargeRequest,
    journal: &dyn Journal,
    limit: Duration,
) -> Answer {
    match tokio::time::timeout(limit, provider.charge(req, journal)).await {
        Ok(outcome) => Answer::Outcome(outcome),
        Err(_) => Answer::TimedOut,
    }
}

/// Refunds with a time limit; no answer in time is an unknown outcome.
pub async fn refund_within(provider: &dyn PaymentProvider, req: RefundRequest, limit: Duration) -> RefundOutcome {
    tokio::time::timeout(limit, provider.refund(req)).await.unwrap_or_else(|_| ChargeOutcome::Unknown {
        reason: "the payment provider did not answer the refund in time".into(),
    })
}

/// The configured provider, and the concrete one when tests or routes need it.
pub struct Selected {
    pub provider: Arc<dyn PaymentProvider>,
    /// The mock, when it is the provider (tests read its calls; the simulated reversal
    /// endpoint exists only then).
    pub mock: Option<Arc<MockProvider>>,
    /// Stripe, when it is the provider (its webhook endpoint verifies with its secret).
    pub stripe: Option<Arc<StripeProvider>>,
}

/// The provider `TALLY_PAYMENT_PROVIDER` selects. `mock`: a mock to use instead of a fresh
/// one, so that several instances in one process share one provider the way replicas share
/// a real one.
pub fn select(config: &Config, mock: Option<Arc<MockProvider>>) -> Result<Selected, String> {
    match (config.payment_provider.as_str(), &config.stripe) {
        ("mock", _) => {
            let mock = mock.unwrap_or_else(|| Arc::new(MockProvider::new(config.mock_slow_delay)));
            Ok(Selected { provider: mock.clone(), mock: Some(mock), stripe: None })
        }
        ("stripe", Some(sc)) => {
            // Each Stripe request gets a third of a call's time, so that a lost answer can
            // still be settled by a retrieve within the same call.
            let stripe = Arc::new(StripeProvider::new(sc, config.payment_timeout / 3)?);
            Ok(Selected { provider: stripe.clone(), mock: None, stripe: Some(stripe) })
        }
        ("stripe", None) => Err("TALLY_PAYMENT_PROVIDER=stripe needs STRIPE_SECRET_KEY".into()),
        (other, _) => Err(format!("TALLY_PAYMENT_PROVIDER: unknown provider {other:?} (known: mock, stripe)")),
    }
}
