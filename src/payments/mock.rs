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
//!
//! Refunds: immediate, idempotent by key, never more than the charge in total (more is
//! declined, as a real provider does); [`MockProvider::decline_next_refunds`] scripts a
//! provider that refuses. The mock has no customers: a token is not bound to a tenant, which
//! is harmless only because its tokens are test tokens that charge nothing real.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use uuid::Uuid;

use super::{
    ChargeOutcome, ChargeRequest, Journal, MethodError, MethodInfo, PaymentProvider, RefundOutcome, RefundRequest,
};
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

/// One refund made (at most one per idempotency key).
#[derive(Debug, Clone)]
pub struct MockRefund {
    pub idempotency_key: String,
    pub payment_ref: String,
    pub amount: Money,
    pub provider_ref: String,
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<MockCall>,
    charges: Vec<MockCharge>,
    refunds: Vec<MockRefund>,
    /// Final refund outcomes by idempotency key.
    refunds_settled: HashMap<String, RefundOutcome>,
    /// How many more refunds are declined.
    refund_declines: u32,
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

    /// Every refund made (distinct idempotency keys that succeeded), in order.
    pub fn refunds(&self) -> Vec<MockRefund> {
        self.lock().refunds.clone()
    }

    /// The next `n` new refunds are declined.
    pub fn decline_next_refunds(&self, n: u32) {
        self.lock().refund_declines = n;
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
                return ChargeOutcome::Declined {
                    reason: "idempotency key re-used with different parameters".into(),
                    code: None,
                };
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
            DECLINED => ChargeOutcome::Declined {
                reason: "card_declined: insufficient funds".into(),
                code: Some("insufficient_funds".into()),
            },
            UNAVAILABLE => return ChargeOutcome::Unavailable { reason: "provider error (test token)".into() },
            _ => ChargeOutcome::Declined { reason: "unknown payment method".into(), code: None },
        };
        s.settled.insert(req.idempotency_key.clone(), (req.clone(), outcome.clone()));
        outcome
    }

    fn refund_now(&self, req: &RefundRequest) -> RefundOutcome {
        let mut s = self.lock();
        if let Some(outcome) = s.refunds_settled.get(&req.idempotency_key) {
            return outcome.clone();
        }
        let charged = s.charges.iter().find(|c| c.provider_ref == req.payment_ref).map(|c| c.amount);
        let refunded =
            Money::checked_sum(s.refunds.iter().filter(|r| r.payment_ref == req.payment_ref).map(|r| r.amount))
                .unwrap_or(Money::MAX);
        let outcome = match charged {
            _ if s.refund_declines > 0 => {
                s.refund_declines -= 1;
                ChargeOutcome::Declined { reason: "refund declined (scripted)".into(), code: None }
            }
            None => ChargeOutcome::Declined { reason: "no such charge".into(), code: None },
            Some(c) if refunded.checked_add(req.amount).is_none_or(|total| total > c) => ChargeOutcome::Declined {
                reason: format!("refunds would exceed the charge of {c}"),
                code: Some("charge_already_refunded".into()),
            },
            Some(_) => {
                let provider_ref = format!("re_mock_{}", Uuid::new_v4().simple());
                s.refunds.push(MockRefund {
                    idempotency_key: req.idempotency_key.clone(),
                    payment_ref: req.payment_ref.clone(),
                    amount: req.amount,
                    provider_ref: provider_ref.clone(),
                });
                ChargeOutcome::Succeeded { provider_ref }
            }
        };
        s.refunds_settled.insert(req.idempotency_key.clone(), outcome.clone());
        outcome
    }

    /// What the mock shows of its test tokens.
    fn describe(token: &str) -> Result<MethodInfo, MethodError> {
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
        Ok(MethodInfo { token: token.into(), brand: brand.into(), last4: last4.into() })
    }
}

#[async_trait]
impl PaymentProvider for MockProvider {
    fn name(&self) -> &'static str {
        "mock"
    }

    async fn create_customer(&self, _tenant: Uuid) -> Result<Option<String>, MethodError> {
        Ok(None)
    }

    async fn attach(&self, _tenant: Uuid, _customer: Option<&str>, token: &str) -> Result<MethodInfo, MethodError> {
        Self::describe(token)
    }

    async fn charge(&self, req: ChargeRequest, _journal: &dyn Journal) -> ChargeOutcome {
        let replay = self.lock().settled.contains_key(&req.idempotency_key);
        let outcome = self.receive(&req);
        // Slow only the first time: a provider answers a known key from its records.
        if req.token == SLOW && !replay {
            tokio::time::sleep(self.slow_delay).await;
        }
        outcome
    }

    async fn refund(&self, req: RefundRequest) -> RefundOutcome {
        self.refund_now(&req)
    }
}

#[cfg(test)]
mod tests {
    use super::super::NoJournal;
    use super::*;

    fn req(key: &str, token: &str) -> ChargeRequest {
        ChargeRequest {
            idempotency_key: key.into(),
            attempt_id: Uuid::nil(),
            tenant_id: Uuid::nil(),
            try_no: 1,
            token: token.into(),
            customer: None,
            intent: None,
            amount: "10".parse().unwrap(),
            currency: "USD".into(),
            description: "test".into(),
        }
    }

    fn refund(key: &str, payment: &str, amount: &str) -> RefundRequest {
        RefundRequest {
            idempotency_key: key.into(),
            refund_id: Uuid::nil(),
            top_up_id: Uuid::nil(),
            tenant_id: Uuid::nil(),
            payment_ref: payment.into(),
            amount: amount.parse().unwrap(),
            currency: "USD".into(),
            reason: "test".into(),
            try_no: 1,
        }
    }

    #[tokio::test]
    async fn refunds_are_idempotent_and_never_exceed_the_charge() {
        let m = MockProvider::new(Duration::ZERO);
        let ChargeOutcome::Succeeded { provider_ref } = m.charge(req("k", OK), &NoJournal).await else {
            panic!("charged")
        };
        let a = m.refund(refund("r1", &provider_ref, "6")).await;
        assert!(matches!(a, ChargeOutcome::Succeeded { .. }));
        assert_eq!(m.refund(refund("r1", &provider_ref, "6")).await, a, "a key answers its first outcome");
        assert!(matches!(m.refund(refund("r2", &provider_ref, "4.01")).await, ChargeOutcome::Declined { .. }));
        assert!(matches!(m.refund(refund("r3", &provider_ref, "4")).await, ChargeOutcome::Succeeded { .. }));
        assert!(matches!(m.refund(refund("r4", "ch_none", "1")).await, ChargeOutcome::Declined { .. }));
        m.decline_next_refunds(1);
        assert!(matches!(m.refund(refund("r5", &provider_ref, "1")).await, ChargeOutcome::Declined { .. }));
        assert_eq!(m.refunds().len(), 2);
    }

    #[tokio::test]
    async fn a_repeated_key_never_charges_twice() {
        let m = MockProvider::new(Duration::ZERO);
        let a = m.charge(req("k1", OK), &NoJournal).await;
        let b = m.charge(req("k1", OK), &NoJournal).await;
        assert!(matches!(a, ChargeOutcome::Succeeded { .. }));
        assert_eq!(a, b);
        assert_eq!(m.calls().len(), 2);
        assert_eq!(m.charges().len(), 1);
        let mut other = req("k1", OK);
        other.amount = "11".parse().unwrap();
        assert!(matches!(m.charge(other, &NoJournal).await, ChargeOutcome::Declined { .. }));
        assert_eq!(m.charges().len(), 1);
    }

    #[tokio::test]
    async fn outages_are_not_remembered_and_end() {
        let m = MockProvider::new(Duration::ZERO);
        m.fail_next(OK, 2);
        assert!(matches!(m.charge(req("k", OK), &NoJournal).await, ChargeOutcome::Unavailable { .. }));
        assert!(matches!(m.charge(req("k", OK), &NoJournal).await, ChargeOutcome::Unavailable { .. }));
        assert!(matches!(m.charge(req("k", OK), &NoJournal).await, ChargeOutcome::Succeeded { .. }));
        assert!(matches!(m.charge(req("u", UNAVAILABLE), &NoJournal).await, ChargeOutcome::Unavailable { .. }));
        assert!(matches!(m.charge(req("d", DECLINED), &NoJournal).await, ChargeOutcome::Declined { .. }));
        assert_eq!(m.charges().len(), 1);
    }

    #[tokio::test]
    async fn a_slow_charge_happens_even_if_the_caller_gives_up() {
        let m = MockProvider::new(Duration::from_secs(60));
        let gave_up = tokio::time::timeout(Duration::from_millis(20), m.charge(req("s", SLOW), &NoJournal)).await;
        assert!(gave_up.is_err());
        assert_eq!(m.charges().len(), 1, "charged when the call arrived");
        let again = tokio::time::timeout(Duration::from_millis(500), m.charge(req("s", SLOW), &NoJournal)).await;
        assert!(matches!(again, Ok(ChargeOutcome::Succeeded { .. })), "a known key answers at once");
        assert_eq!(m.charges().len(), 1);
    }

    #[tokio::test]
    async fn describes_test_tokens_only() {
        let m = MockProvider::new(Duration::ZERO);
        let t = Uuid::nil();
        assert_eq!(m.attach(t, None, OK).await.unwrap().last4, "4242");
        assert_eq!(m.attach(t, None, OK).await.unwrap().token, OK, "the token is charged as given");
        assert!(matches!(m.attach(t, None, "pm_mock_nope").await, Err(MethodError::Invalid(_))));
    }
}
