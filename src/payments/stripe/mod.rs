//! The Stripe provider (`TALLY_PAYMENT_PROVIDER=stripe`): off-session PaymentIntents on the
//! card attached to the tenant's own Customer, refunds, and Stripe's signed webhook events.
//!
//! Why plain HTTP (reqwest with rustls, already a dependency) rather than the async-stripe
//! crate: the exactly-once protocol depends on details a generated SDK hides or decides for
//! us — the exact Idempotency-Key of each step, whether an answer was replayed, the
//! difference between a 5xx, a 429, a timeout and a connection that never opened, and a
//! per-request timeout — and we use nine endpoints, whose form encoding is a few lines.
//! async-stripe would add hundreds of generated modules to a 2-core build for that.
//!
//! Invariants (see [`intents`] for the payment protocol):
//! - one PaymentIntent per attempt, created unconfirmed, recorded by the service before it
//!   is confirmed; a lost answer is settled by retrieving it, never by a second confirmed one;
//! - every POST carries an Idempotency-Key derived from the attempt's (or refund's) key
//!   committed before the call, so every retry of a step is the same request to Stripe;
//! - amounts are whole minor units (cents): anything finer is refused, never rounded;
//! - a webhook event is used only after its signature verifies ([`webhook`]).

use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use super::{
    ChargeOutcome, ChargeRequest, Event, Journal, MethodError, MethodInfo, PaymentProvider, ProviderRefund,
    RefundOutcome, RefundRequest,
};
use crate::config::StripeConfig;
use crate::money::Money;

pub mod api;
pub mod customers;
pub mod intents;
pub mod refunds;
pub mod webhook;

use api::Api;

/// How many keys of one step a call may walk: a key whose stored answer is a 5xx can never
/// say more, so once Stripe's records show that step left nothing behind, the next key of
/// the chain (`<key>-r1`, `-r2`, …) asks again.
const CHAIN: usize = 4;

/// The `n`-th key of a step: the step's own key first, then its successors.
fn chain_key(base: &str, n: usize) -> String {
    if n == 0 {
        base.to_string()
    } else {
        format!("{base}-r{n}")
    }
}

pub struct StripeProvider {
    api: Api,
    webhook_secret: String,
}

impl StripeProvider {
    /// `timeout`: the longest wait for one Stripe request.
    pub fn new(config: &StripeConfig, timeout: Duration) -> Result<StripeProvider, String> {
        Ok(StripeProvider {
            api: Api::new(&config.api_base, &config.secret_key, timeout)?,
            webhook_secret: config.webhook_secret.clone(),
        })
    }

    /// Verifies a webhook delivery (`Stripe-Signature`) and reads its event. `now`: unix
    /// seconds. Nothing in the payload is looked at before the signature verifies.
    pub fn verify_event(&self, signature: Option<&str>, payload: &[u8], now: i64) -> Result<Event, String> {
        let header = signature.ok_or("the Stripe-Signature header is missing")?;
        webhook::verify(&self.webhook_secret, header, payload, now).map_err(|e| e.to_string())?;
        webhook::parse(payload)
    }
}

#[async_trait]
impl PaymentProvider for StripeProvider {
    fn name(&self) -> &'static str {
        "stripe"
    }

    fn check_amount(&self, amount: Money, currency: &str) -> Result<(), String> {
        api::minor_units(amount, currency).map(|_| ())
    }

    async fn create_customer(&self, tenant: Uuid) -> Result<Option<String>, MethodError> {
        customers::create(&self.api, tenant).await.map(Some)
    }

    async fn attach(&self, tenant: Uuid, customer: Option<&str>, token: &str) -> Result<MethodInfo, MethodError> {
        let customer = customer.ok_or_else(|| MethodError::Unavailable("the tenant has no Stripe customer".into()))?;
        customers::attach(&self.api, tenant, customer, token).await
    }

    async fn charge(&self, req: ChargeRequest, journal: &dyn Journal) -> ChargeOutcome {
        intents::charge(&self.api, &req, journal).await
    }

    async fn refund(&self, req: RefundRequest) -> RefundOutcome {
        refunds::refund(&self.api, &req).await
    }

    async fn refunds_of(&self, payment_ref: &str) -> Result<Vec<ProviderRefund>, String> {
        refunds::list(&self.api, payment_ref).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_starts_with_the_steps_own_key() {
        assert_eq!(chain_key("tally_top_up_1", 0), "tally_top_up_1");
        assert_eq!(chain_key("tally_top_up_1", 2), "tally_top_up_1-r2");
    }
}
