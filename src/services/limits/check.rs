//! The spend-limit decision, as pure functions over counters read under the tenant's lock.
//!
//! A [`Counter`] is one limit (of an API key or of the tenant) in the window current when
//! the movement decides: the limit, what the window has spent so far, and which events it
//! has sent. A batch decides its items one after another against the same counters, so
//! each sees what the ones before it counted ([`admit`]).
//!
//! Invariants (checked by the property tests below):
//! - a counter's `spent` never goes above its `limit` through [`admit`]: an amount that
//!   would take any counter over is refused as a whole and changes no counter;
//! - `spend_limit.warning` is due when `spent` first reaches 80% of the limit, and
//!   `spend_limit.reached` when it reaches the limit or a request is first refused by it;
//!   each at most once per counter (a window) and limit value.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::window::Window;
use crate::error::LimitExceeded;
use crate::money::Money;

/// Whose limit: an API key's, or the tenant's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    ApiKey(Uuid),
    Tenant,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::ApiKey(_) => "api_key",
            Scope::Tenant => "tenant",
        }
    }
    pub fn api_key_id(self) -> Option<Uuid> {
        match self {
            Scope::ApiKey(k) => Some(k),
            Scope::Tenant => None,
        }
    }
}

/// One limit in its current window.
#[derive(Debug, Clone, PartialEq)]
pub struct Counter {
    pub scope: Scope,
    pub window: Window,
    pub limit: Money,
    /// The current window's start (the counter row's key) and end.
    pub start: DateTime<Utc>,
    pub resets_at: Option<DateTime<Utc>>,
    pub spent: Money,
    /// The limit value at which each event was sent in this window, if it was.
    pub warned: Option<Money>,
    pub reached: Option<Money>,
    /// What this movement changed: the amount it added to `spent` (to write as a delta),
    /// and whether anything (an amount or an event flag) needs writing.
    pub added: Money,
    pub dirty: bool,
}

/// An event a decision made due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Warning,
    Reached,
}

impl Counter {
    pub fn new(scope: Scope, window: Window, limit: Money, now: DateTime<Utc>) -> Counter {
        Counter {
            scope,
            window,
            limit,
            start: window.start(now),
            resets_at: window.resets_at(now),
            spent: Money::ZERO,
            warned: None,
            reached: None,
            added: Money::ZERO,
            dirty: false,
        }
    }

    /// Whether `amount` more fits: reaching the limit exactly is allowed.
    pub fn fits(&self, amount: Money) -> bool {
        self.spent.checked_add(amount).is_some_and(|after| after <= self.limit)
    }

    /// 80% of the limit reached, exactly (no floating point): `5 × spent ≥ 4 × limit`.
    fn at_warning(&self) -> bool {
        self.spent.as_decimal() * Decimal::from(5) >= self.limit.as_decimal() * Decimal::from(4)
    }

    /// Counts `amount` (already known to fit) and returns the events now due.
    fn count(&mut self, amount: Money) -> Vec<Signal> {
        self.spent = self.spent.checked_add(amount).expect("fits() checked the sum");
        self.added = self.added.checked_add(amount).expect("a movement's sum fits");
        self.dirty = true;
        let mut due = Vec::new();
        if self.at_warning() && self.warned != Some(self.limit) {
            self.warned = Some(self.limit);
            due.push(Signal::Warning);
        }
        if self.spent >= self.limit && self.reached != Some(self.limit) {
            self.reached = Some(self.limit);
            due.push(Signal::Reached);
        }
        due
    }

    /// A request this counter refused: `reached` is due if it has not been sent.
    fn refuse(&mut self) -> Option<Signal> {
        if self.reached == Some(self.limit) {
            return None;
        }
        self.reached = Some(self.limit);
        self.dirty = true;
        Some(Signal::Reached)
    }

    /// The 402 body's fields for a request of `required` this counter refuses.
    pub fn exceeded(&self, required: Money, currency: &str) -> LimitExceeded {
        LimitExceeded {
            scope: self.scope.name(),
            api_key_id: self.scope.api_key_id(),
            window: self.window.as_str(),
            limit: self.limit,
            spent: self.spent,
            required,
            resets_at: self.resets_at,
            currency: currency.to_string(),
        }
    }
}

/// What [`admit`] decided, with the events it made due (counter index, event).
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// Counted on every counter named.
    Counted(Vec<(usize, Signal)>),
    /// Refused by `by` (the first, in the order named, that the amount would exceed);
    /// nothing was counted.
    Refused { by: usize, due: Vec<(usize, Signal)> },
}

/// Decides `amount` against the counters at `which` (in the order a refusal should name
/// them: the API key's, then the tenant's day and month), and counts it on all of them
/// when it fits every one.
pub fn admit(counters: &mut [Counter], which: &[usize], amount: Money) -> Admission {
    let over: Vec<usize> = which.iter().copied().filter(|i| !counters[*i].fits(amount)).collect();
    if let Some(&by) = over.first() {
        let due = over.iter().filter_map(|i| counters[*i].refuse().map(|s| (*i, s))).collect();
        return Admission::Refused { by, due };
    }
    let mut due = Vec::new();
    for i in which {
        due.extend(counters[*i].count(amount).into_iter().map(|s| (*i, s)));
    }
    Admission::Counted(due)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(s: &str) -> Money {
        s.parse().unwrap()
    }

    fn counter(limit: &str) -> Counter {
        Counter::new(Scope::Tenant, Window::Day, m(limit), Utc::now())
    }

    #[test]
    fn twenty_of_forty_halves_fit_ten() {
        let mut c = vec![counter("10")];
        let outcomes: Vec<bool> =
            (0..40).map(|_| matches!(admit(&mut c, &[0], m("0.5")), Admission::Counted(_))).collect();
        assert_eq!(outcomes.iter().filter(|ok| **ok).count(), 20);
        assert!(outcomes[..20].iter().all(|ok| *ok) && outcomes[20..].iter().all(|ok| !*ok));
        assert_eq!(c[0].spent, m("10"));
        assert_eq!(c[0].added, m("10"));
    }

    #[test]
    fn events_once_each_warning_first() {
        let mut c = vec![counter("10")];
        assert_eq!(admit(&mut c, &[0], m("7.99")), Admission::Counted(vec![]));
        assert_eq!(admit(&mut c, &[0], m("0.01")), Admission::Counted(vec![(0, Signal::Warning)]));
        assert_eq!(admit(&mut c, &[0], m("1")), Admission::Counted(vec![]));
        assert_eq!(admit(&mut c, &[0], m("1.01")), Admission::Refused { by: 0, due: vec![(0, Signal::Reached)] });
        assert_eq!(admit(&mut c, &[0], m("1.01")), Admission::Refused { by: 0, due: vec![] });
        assert_eq!(admit(&mut c, &[0], m("1")), Admission::Counted(vec![]), "reached was sent on the refusal");
        // One jump over both thresholds: both events, warning first.
        let mut d = vec![counter("10")];
        assert_eq!(admit(&mut d, &[0], m("10")), Admission::Counted(vec![(0, Signal::Warning), (0, Signal::Reached)]));
        // A new limit value is a new limit: its events may be sent again.
        d[0].limit = m("20");
        assert_eq!(admit(&mut d, &[0], m("6")), Admission::Counted(vec![(0, Signal::Warning)]));
    }

    #[test]
    fn a_refusal_names_the_first_limit_and_counts_nothing() {
        let key = Counter::new(Scope::ApiKey(Uuid::now_v7()), Window::Week, m("5"), Utc::now());
        let mut c = vec![key, counter("3"), counter("100")];
        let got = admit(&mut c, &[0, 1, 2], m("4"));
        assert_eq!(got, Admission::Refused { by: 1, due: vec![(1, Signal::Reached)] });
        assert!(c.iter().all(|x| x.spent.is_zero() && x.added.is_zero()));
        let e = c[1].exceeded(m("4"), "USD");
        assert_eq!((e.scope, e.limit, e.spent, e.required), ("tenant", m("3"), Money::ZERO, m("4")));
        assert_eq!(admit(&mut c, &[0, 2], m("4")), Admission::Counted(vec![(0, Signal::Warning)]));
        assert_eq!(c[2].spent, m("4"));
    }

    proptest! {
        /// Whatever the amounts and limits, no counter ever goes over, a refusal is
        /// always justified, and each event is sent at most once per counter.
        #[test]
        fn never_over_the_limit(
            limits in proptest::collection::vec(1i64..5_000, 1..4),
            amounts in proptest::collection::vec(1i64..2_000, 1..80),
        ) {
            let cents = |c: i64| Money::from_decimal(Decimal::new(c, 2)).unwrap();
            let mut cs: Vec<Counter> = limits.iter().map(|l| counter(&cents(*l).to_string())).collect();
            let which: Vec<usize> = (0..cs.len()).collect();
            let (mut warnings, mut reached) = (vec![0; cs.len()], vec![0; cs.len()]);
            for a in amounts {
                let before: Vec<Money> = cs.iter().map(|c| c.spent).collect();
                let due = match admit(&mut cs, &which, cents(a)) {
                    Admission::Counted(due) => {
                        for (c, b) in cs.iter().zip(&before) {
                            prop_assert_eq!(c.spent, b.checked_add(cents(a)).unwrap());
                        }
                        due
                    }
                    Admission::Refused { by, due } => {
                        prop_assert!(before[by].checked_add(cents(a)).unwrap() > cs[by].limit);
                        for (c, b) in cs.iter().zip(&before) {
                            prop_assert_eq!(c.spent, *b);
                        }
                        due
                    }
                };
                for (i, s) in due {
                    match s {
                        Signal::Warning => warnings[i] += 1,
                        Signal::Reached => reached[i] += 1,
                    }
                }
                for c in &cs {
                    prop_assert!(c.spent <= c.limit);
                }
            }
            prop_assert!(warnings.iter().chain(&reached).all(|n| *n <= 1));
            // Spend only grows here, so the warning was sent exactly when 80% was reached.
            for (c, w) in cs.iter().zip(&warnings) {
                prop_assert_eq!(*w == 1, c.at_warning());
            }
        }
    }
}
