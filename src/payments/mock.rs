//! The mock payment provider, shipped in the binary (`TALLY_PAYMENT_PROVIDER=mock`).
//!
//! It behaves like a real provider where the service's guarantees are at stake:
//! - test tokens: `pm_mock_ok` succeeds, `pm_mock_declined` declines,
//!   `pm_mock_unavailable` answers `Unavailable` (retryable), `pm_mock_slow` succeeds
//!   after `TALLY_MOCK_SLOW_MS`;
//! - a charge happens on the provider's side when the call arrives: a caller that gives up
//!   waiting (a slow charge) or dies before reading the answer has still charged the card;
//! - idempotency keys: a key whose charge succeeded or declined returns that first outcome
//!   and never charges again; `Unavailable` answers are not kept, so a retry runs again.
//!
//! Every call is recorded, so tests count calls and distinct charges; [`MockProvider::fail_next`]
//! makes a token answer `Unavailable` a number of times before it recovers.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{ChargeOutcome, ChargeRequest, MethodError, MethodInfo, PaymentProvider};
use crate::money::Money;

pub const OK: &str = "pm_mock_ok";
pub const DECLINED: &str = "pm_mock_declined";
pub const UNAVAILABLE: &str = "pm_mock_unavailable";
pub const SLOW: &str = "pm_mock_slow";

/// One call as the provider received it, with the outcome it gave.
#[derive(Debug, Clone)]
pub struct MockCall {
    pub request: ChargeRequest,
    pub outcome: ChargeOutcome,
    pub at: DateTime<Utc>,
}

/// One charge made to a card (at most one per idempotency key).
#[derive(Debug, Clone)]
pub struct MockCharge {
    pub idempotency_key: String,
    pub token: String,
    pub amount: Money,
    pub provider_ref: String,
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<MockCall>,
    charges: Vec<MockCharge>,
    /// Final outcomes by idempotency key, with the request that produced them.
    settled: HashMap<String, (ChargeRequest, ChargeOutcome)>,
    /// Token → how many more calls answer `Unavailable` (a scripted outage).
    outages: HashMap<String, u32>,
}

#[derive(Debug)]
pub struct MockProvider {
    slow_delay: Duration,
    state: Mutex<State>,
}

impl MockProvider {
    pub fn new(slow_delay: Duration) -> MockProvider {
        MockProvider { slow_delay, state: Mutex::new(State::default()) }
    }

    /// The next `n` calls with `token` answer `Unavailable`; then it recovers.
    pub fn fail_next(&self, token: &str, n: u32) {
        self.lock().outages.insert(token.to_string(), n);
    }

    /// Every call received, in order.
    pub fn calls(&self) -> Vec<MockCall> {
        self.lock().calls.clone()
    }

    /// Every charge made (distinct idempotency keys that succeeded), in order.
    pub fn charges(&self) -> Vec<MockCharge> {
        self.lock().charges.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panicking test thread must not hide the record from the others.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decides and records the outcome the moment the call arrives, as a provider would.
    fn receive(&self, req: &ChargeRequest) -> ChargeOutcome {
        let mut s = self.lock();
        let outcome = Self::decide(&mut s, req);
        s.calls.push(MockCall { request: req.clone(), outcome: outcome.clone(), at: Utc::now() });
        outcome
    }

    fn decide(s: &mut State, req: &ChargeRequest) -> ChargeOutcome {
        if let Some(left) = s.outages.get_mut(&req.token).filter(|n| **n > 0) {
            *left -= 1;
            return ChargeOutcome::Unavailable { reason: "scripted outage".into() };
        }
        if let Some((first, outcome)) = s.settled.get(&req.idempotency_key) {
            if first.amount != req.amount || first.token != req.token || first.currency != req.currency {
                // A real provider refuses a key re-used with other parameters.
                return ChargeOutcome::Declined { reason: "idempotency key re-used with different parameters".into() };
            }
            return outcome.clone();
        }
        let outcome = match req.token.as_str() {
            OK | SLOW => {
                let provider_ref = format!("ch_mock_{}", uuid::Uuid::new_v4().simple());
                s.charges.push(MockCharge {
                    idempotency_key: req.idempotency_key.clone(),
                    token: req.token.clone(),
                    amount: req.amount,
                    provider_ref: provider_ref.clone(),
                });
                ChargeOutcome::Succeeded { provider_ref }
            }
            DECLINED => ChargeOutcome::Declined { reason: "card_declined: insufficient funds".into() },
            UNAVAILABLE => return ChargeOutcome::Unavailable { reason: "provider error (test token)".into() },
            _ => ChargeOutcome::Declined { reason: "unknown payment method".into() },
        };
        s.settled.insert(req.idempotency_key.clone(), (req.clone(), outcome.clone()));
        outcome
    }
}

#[async_trait]
impl PaymentProvider for MockProvider {
    async fn describe(&self, token: &str) -> Result<MethodInfo, MethodError> {
        let (brand, last4) = match token {
            OK => ("visa", "4242"),
            DECLINED => ("visa", "0002"),
            UNAVAILABLE => ("mastercard", "4444"),
            SLOW => ("amex", "0005"),
            _ => {
                return Err(MethodError::Invalid(format!(
                    "unknown payment method token; the mock provider knows {OK}, {DECLINED}, {UNAVAILABLE} and {SLOW}"
                )))
            }
        };
        Ok(MethodInfo { brand: brand.into(), last4: last4.into() })
    }

    async fn charge(&self, req: ChargeRequest) -> ChargeOutcome {
        let replay = self.lock().settled.contains_key(&req.idempotency_key);
        let outcome = self.receive(&req);
        // Slow only the first time: a provider answers a known key from its records.
        if req.token == SLOW && !replay {
            tokio::time::sleep(self.slow_delay).await;
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(key: &str, token: &str) -> ChargeRequest {
        ChargeRequest {
            idempotency_key: key.into(),
            token: token.into(),
            amount: "10".parse().unwrap(),
            currency: "USD".into(),
            description: "test".into(),
        }
    }

    #[tokio::test]
    async fn a_repeated_key_never_charges_twice() {
        let m = MockProvider::new(Duration::ZERO);
        let a = m.charge(req("k1", OK)).await;
        let b = m.charge(req("k1", OK)).await;
        assert!(matches!(a, ChargeOutcome::Succeeded { .. }));
        assert_eq!(a, b);
        assert_eq!(m.calls().len(), 2);
        assert_eq!(m.charges().len(), 1);
        let mut other = req("k1", OK);
        other.amount = "11".parse().unwrap();
        assert!(matches!(m.charge(other).await, ChargeOutcome::Declined { .. }));
        assert_eq!(m.charges().len(), 1);
    }

    #[tokio::test]
    async fn outages_are_not_remembered_and_end() {
        let m = MockProvider::new(Duration::ZERO);
        m.fail_next(OK, 2);
        assert!(matches!(m.charge(req("k", OK)).await, ChargeOutcome::Unavailable { .. }));
        assert!(matches!(m.charge(req("k", OK)).await, ChargeOutcome::Unavailable { .. }));
        assert!(matches!(m.charge(req("k", OK)).await, ChargeOutcome::Succeeded { .. }));
        assert!(matches!(m.charge(req("u", UNAVAILABLE)).await, ChargeOutcome::Unavailable { .. }));
        assert!(matches!(m.charge(req("d", DECLINED)).await, ChargeOutcome::Declined { .. }));
        assert_eq!(m.charges().len(), 1);
    }

    #[tokio::test]
    async fn a_slow_charge_happens_even_if_the_caller_gives_up() {
        let m = MockProvider::new(Duration::from_secs(60));
        let gave_up = tokio::time::timeout(Duration::from_millis(20), m.charge(req("s", SLOW))).await;
        assert!(gave_up.is_err());
        assert_eq!(m.charges().len(), 1, "charged when the call arrived");
        let again = tokio::time::timeout(Duration::from_millis(500), m.charge(req("s", SLOW))).await;
        assert!(matches!(again, Ok(ChargeOutcome::Succeeded { .. })), "a known key answers at once");
        assert_eq!(m.charges().len(), 1);
    }

    #[tokio::test]
    async fn describes_test_tokens_only() {
        let m = MockProvider::new(Duration::ZERO);
        assert_eq!(m.describe(OK).await.unwrap().last4, "4242");
        assert!(matches!(m.describe("pm_mock_nope").await, Err(MethodError::Invalid(_))));
    }
}
