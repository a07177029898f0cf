//! Spending order, as pure functions over a tenant's locked funds.
//!
//! Order: bonus lots soonest-expiring first (never-expiring last, then oldest first),
//! then paid credit. Refunds and releases return money to the parts it came from:
//! paid first, then lots in reverse spending order (the latest-expiring lot first), so
//! the customer gets back the credit that lasts longest.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::money::Money;

#[derive(Debug, Clone, PartialEq)]
pub struct Lot {
    pub id: Uuid,
    pub remaining: Money,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A tenant's spendable funds, as read under the tenant's ledger lock.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Funds {
    pub paid: Money,
    pub held: Money,
    /// Spendable lots (remaining > 0, not past expiry), in spending order.
    pub lots: Vec<Lot>,
}

/// One lot's part of a funding.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LotPart {
    pub lot: Uuid,
    pub amount: Money,
}

/// Where an amount came from: parts of lots (in spending order) and paid credit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Funding {
    pub lots: Vec<LotPart>,
    pub paid: Money,
}

impl Funds {
    /// Sorts lots into spending order and drops empty or expired ones.
    pub fn new(paid: Money, held: Money, mut lots: Vec<Lot>, now: DateTime<Utc>) -> Funds {
        lots.retain(|l| l.remaining.is_positive() && l.expires_at.is_none_or(|e| e > now));
        lots.sort_by(|a, b| match (a.expires_at, b.expires_at) {
            (Some(x), Some(y)) => x.cmp(&y).then(a.id.cmp(&b.id)),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.id.cmp(&b.id),
        });
        Funds { paid, held, lots }
    }

    pub fn bonus(&self) -> Money {
        Money::checked_sum(self.lots.iter().map(|l| l.remaining)).expect("lot sums fit NUMERIC(20,6)")
    }

    pub fn available(&self) -> Money {
        self.bonus().checked_add(self.paid).expect("balances fit NUMERIC(20,6)")
    }

    /// Takes `amount` in spending order, or refuses with what is available; on refusal
    /// nothing changes.
    pub fn spend(&mut self, amount: Money) -> Result<Funding, Money> {
        let available = self.available();
        if amount > available || !amount.is_positive() {
            return Err(available);
        }
        let mut left = amount;
        let mut funding = Funding::default();
        for lot in &mut self.lots {
            if left.is_zero() {
                break;
            }
            let take = lot.remaining.min(left);
            if take.is_positive() {
                lot.remaining = lot.remaining.checked_sub(take).expect("take <= remaining");
                left = left.checked_sub(take).expect("take <= left");
                funding.lots.push(LotPart { lot: lot.id, amount: take });
            }
        }
        self.lots.retain(|l| l.remaining.is_positive());
        self.paid = self.paid.checked_sub(left).expect("amount <= available");
        funding.paid = left;
        Ok(funding)
    }
}

impl Funding {
    pub fn bonus(&self) -> Money {
        Money::checked_sum(self.lots.iter().map(|p| p.amount)).expect("parts of a valid amount")
    }

    pub fn total(&self) -> Money {
        self.bonus().checked_add(self.paid).expect("parts of a valid amount")
    }

    /// Splits `amount` off in spending order (lots first, then paid): `(taken, rest)`.
    /// Used when a hold is captured: the capture consumes what would have been spent first.
    pub fn split_spending(&self, amount: Money) -> (Funding, Funding) {
        let mut left = amount;
        let mut taken = Funding::default();
        let mut rest = Funding::default();
        for part in &self.lots {
            let take = part.amount.min(left);
            left = left.checked_sub(take).expect("take <= left");
            if take.is_positive() {
                taken.lots.push(LotPart { lot: part.lot, amount: take });
            }
            let keep = part.amount.checked_sub(take).expect("take <= part");
            if keep.is_positive() {
                rest.lots.push(LotPart { lot: part.lot, amount: keep });
            }
        }
        taken.paid = self.paid.min(left);
        rest.paid = self.paid.checked_sub(taken.paid).expect("taken <= paid");
        (taken, rest)
    }

    /// The part to give back for a refund of `amount`: paid first, then lots from the last
    /// spent (latest-expiring) backwards. `amount` must not exceed `self.total()`.
    pub fn take_for_refund(&self, amount: Money) -> Funding {
        let mut left = amount;
        let paid = self.paid.min(left);
        left = left.checked_sub(paid).expect("paid <= left");
        let mut lots = Vec::new();
        for part in self.lots.iter().rev() {
            if left.is_zero() {
                break;
            }
            let take = part.amount.min(left);
            left = left.checked_sub(take).expect("take <= left");
            lots.push(LotPart { lot: part.lot, amount: take });
        }
        lots.reverse();
        Funding { lots, paid }
    }

    /// What is left of `self` after the parts in `given_back` were returned.
    pub fn minus(&self, given_back: &[Funding]) -> Funding {
        let mut out = self.clone();
        for g in given_back {
            out.paid = out.paid.checked_sub(g.paid).expect("never return more than was taken");
            for gp in &g.lots {
                if let Some(p) = out.lots.iter_mut().find(|p| p.lot == gp.lot) {
                    p.amount = p.amount.checked_sub(gp.amount).expect("never return more than was taken");
                }
            }
        }
        out.lots.retain(|p| p.amount.is_positive());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use proptest::prelude::*;

    fn m(s: &str) -> Money {
        s.parse().unwrap()
    }

    fn funds(paid: &str, lots: &[(&str, Option<i64>)]) -> Funds {
        let now = Utc::now();
        let lots = lots
            .iter()
            .enumerate()
            .map(|(i, (amt, days))| Lot {
                id: Uuid::from_u128(i as u128 + 1),
                remaining: m(amt),
                expires_at: days.map(|d| now + Duration::days(d)),
            })
            .collect();
        Funds::new(m(paid), Money::ZERO, lots, now)
    }

    #[test]
    fn bonus_first_soonest_expiry_first_then_paid() {
        let mut f = funds("10", &[("5", None), ("2", Some(30)), ("1", Some(1)), ("9", Some(-1))]);
        assert_eq!(f.available(), m("18"), "an expired lot is not spendable");
        let got = f.spend(m("4")).unwrap();
        assert_eq!(
            got.lots.iter().map(|p| (p.lot.as_u128(), p.amount)).collect::<Vec<_>>(),
            vec![(3, m("1")), (2, m("2")), (1, m("1"))]
        );
        assert_eq!(got.paid, Money::ZERO);
        let got = f.spend(m("6")).unwrap();
        assert_eq!((got.bonus(), got.paid), (m("4"), m("2")));
        assert_eq!(f.available(), m("8"));
    }

    #[test]
    fn refusal_changes_nothing() {
        let mut f = funds("1", &[("1", None)]);
        let before = f.clone();
        assert_eq!(f.spend(m("2.000001")), Err(m("2")));
        assert_eq!(f, before);
        assert!(f.spend(Money::ZERO).is_err());
    }

    #[test]
    fn refunds_go_to_paid_first_then_latest_lot() {
        let mut f = funds("10", &[("1", Some(1)), ("2", Some(2))]);
        let spent = f.spend(m("5")).unwrap();
        let r1 = spent.take_for_refund(m("2.5"));
        assert_eq!(r1.paid, m("2"));
        assert_eq!(r1.lots, vec![LotPart { lot: Uuid::from_u128(2), amount: m("0.5") }]);
        let rest = spent.minus(std::slice::from_ref(&r1));
        assert_eq!(rest.total(), m("2.5"));
        assert_eq!(rest.take_for_refund(m("2.5")), rest);
    }

    #[test]
    fn capture_split_consumes_in_spending_order() {
        let mut f = funds("10", &[("1", Some(1))]);
        let held = f.spend(m("4")).unwrap();
        let (taken, rest) = held.split_spending(m("2"));
        assert_eq!((taken.bonus(), taken.paid), (m("1"), m("1")));
        assert_eq!((rest.bonus(), rest.paid), (Money::ZERO, m("2")));
    }

    proptest! {
        #[test]
        fn spending_conserves_money(
            paid in 0i64..10_000_000,
            lots in proptest::collection::vec((1i64..5_000_000, proptest::option::of(-3i64..30)), 0..6),
            spends in proptest::collection::vec(1i64..8_000_000, 1..12),
        ) {
            let now = Utc::now();
            let lots: Vec<Lot> = lots.iter().enumerate().map(|(i, (a, d))| Lot {
                id: Uuid::from_u128(i as u128 + 1),
                remaining: Money::from_decimal(rust_decimal::Decimal::new(*a, 6)).unwrap(),
                expires_at: d.map(|d| now + Duration::days(d)),
            }).collect();
            let mut f = Funds::new(Money::from_decimal(rust_decimal::Decimal::new(paid, 6)).unwrap(), Money::ZERO, lots, now);
            for s in spends {
                let amount = Money::from_decimal(rust_decimal::Decimal::new(s, 6)).unwrap();
                let before = f.available();
                match f.spend(amount) {
                    Ok(funding) => {
                        prop_assert_eq!(funding.total(), amount);
                        prop_assert_eq!(f.available(), before.checked_sub(amount).unwrap());
                        // paid is only touched once the bonus is exhausted
                        prop_assert!(funding.paid.is_zero() || f.bonus().is_zero());
                        let back = funding.take_for_refund(amount);
                        prop_assert_eq!(&back, &funding);
                    }
                    Err(avail) => {
                        prop_assert_eq!(avail, before);
                        prop_assert!(amount > before);
                    }
                }
                prop_assert!(!f.paid.is_negative());
                prop_assert!(f.lots.iter().all(|l| l.remaining.is_positive()));
            }
        }
    }
}
