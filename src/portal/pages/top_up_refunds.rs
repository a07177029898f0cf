//! A top-up's refunds and reversals in the top-up history: how much of it went back to the
//! card (refunded through the platform, or reversed by the card's bank), what is still
//! pending, and each one's details (including credit that could not be taken back because
//! it was already spent).

use maud::{html, Markup};

use crate::money::Money;
use crate::portal::backend::{RefundKind, RefundView, TopUpView};
use crate::portal::format;
use crate::vocab::TopUpStatus;

/// The sums of a top-up's refunds and reversals, by outcome.
#[derive(Debug, Default, PartialEq)]
pub struct Returned {
    pub refunded: Money,
    pub reversed: Money,
    pub pending: Money,
}

impl Returned {
    pub fn of(refunds: &[RefundView]) -> Returned {
        let mut r = Returned::default();
        for f in refunds {
            let sum = match (f.status, f.kind) {
                (TopUpStatus::Succeeded, RefundKind::Refund) => &mut r.refunded,
                (TopUpStatus::Succeeded, RefundKind::Reversal) => &mut r.reversed,
                (TopUpStatus::Pending, _) => &mut r.pending,
                (TopUpStatus::Failed, _) => continue,
            };
            // Never more than the top-up in total, which is a `Money`: the sum fits.
            *sum = sum.checked_add(f.amount).unwrap_or(Money::MAX);
        }
        r
    }

    fn back(&self) -> Money {
        self.refunded.checked_add(self.reversed).unwrap_or(Money::MAX)
    }
}

/// The status pill of a succeeded top-up with money gone back, `None` without any.
pub fn status(t: &TopUpView, refunds: &[RefundView]) -> Option<(&'static str, &'static str)> {
    let r = Returned::of(refunds);
    if t.status != TopUpStatus::Succeeded || r.back().is_zero() {
        return None;
    }
    let whole = r.back() >= t.amount;
    Some(match (whole, r.refunded.is_zero()) {
        (true, true) => ("reversed", "Reversed"),
        (true, false) => ("refunded", "Refunded"),
        (false, true) => ("refunded", "Partly reversed"),
        (false, false) => ("refunded", "Partly refunded"),
    })
}

fn kind(f: &RefundView) -> &'static str {
    match f.kind {
        RefundKind::Refund => "Refund",
        RefundKind::Reversal => "Reversal by the card's bank",
    }
}

fn outcome(f: &RefundView) -> String {
    match f.status {
        TopUpStatus::Succeeded => "done".into(),
        TopUpStatus::Pending => "pending".into(),
        TopUpStatus::Failed => format!("declined{}", f.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()),
    }
}

/// The sums under the status, then each refund or reversal, oldest first.
pub fn details(refunds: &[RefundView], cur: &str) -> Markup {
    let r = Returned::of(refunds);
    let m = |v: Money| format::money(v, cur);
    html! {
        @if !r.refunded.is_zero() { br; span.small { (m(r.refunded)) " refunded" } }
        @if !r.reversed.is_zero() { br; span.small { (m(r.reversed)) " reversed" } }
        @if !r.pending.is_zero() { br; span.small { (m(r.pending)) " refund pending" } }
        @if !refunds.is_empty() {
            details.refunds {
                summary { "Refunds and reversals" }
                ul {
                    @for f in refunds {
                        li {
                            time datetime=(format::iso(f.created_at)) { (format::date(f.created_at)) } ": "
                            (kind(f)) ", " strong { (m(f.amount)) } " (" (outcome(f)) ")"
                            @if !f.reason.is_empty() { " — " (f.reason) }
                            @if f.status == TopUpStatus::Succeeded {
                                br;
                                span.small.muted {
                                    "Credit taken back: " (m(f.clawed_back.paid)) " paid, " (m(f.clawed_back.bonus)) " bonus"
                                    @if f.shortfall.is_positive() { "; " (m(f.shortfall)) " had already been spent" }
                                    "."
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::portal::backend::TopUpView;
    use crate::services::money_in::clawback::{ClawedBack, RefundOrigin};
    use crate::services::money_in::records::CardView;
    use crate::vocab::TopUpSource;
    use uuid::Uuid;

    fn m(s: &str) -> Money {
        s.parse().unwrap()
    }

    fn back(kind: RefundKind, status: TopUpStatus, amount: &str) -> RefundView {
        RefundView {
            id: Uuid::nil(),
            top_up_id: Uuid::nil(),
            tenant_id: Uuid::nil(),
            kind,
            origin: RefundOrigin::Tally,
            status,
            amount: m(amount),
            currency: "USD".into(),
            reason: String::new(),
            clawed_back: ClawedBack { paid: Money::ZERO, bonus: Money::ZERO },
            shortfall: Money::ZERO,
            provider_ref: None,
            error: None,
            balance: None,
            created_at: chrono::Utc::now(),
            completed_at: None,
        }
    }

    fn top_up(status: TopUpStatus, amount: &str) -> TopUpView {
        TopUpView {
            id: Uuid::nil(),
            tenant_id: Uuid::nil(),
            status,
            source: TopUpSource::Manual,
            amount: m(amount),
            bonus_amount: Money::ZERO,
            bonus_expires_at: None,
            currency: "USD".into(),
            payment_method: CardView { brand: "visa".into(), last4: "4242".into() },
            provider_ref: None,
            error: None,
            decline_code: None,
            attempts: 1,
            balance: None,
            created_at: chrono::Utc::now(),
            completed_at: None,
        }
    }

    #[test]
    fn sums_by_outcome_and_the_status_they_make() {
        use RefundKind::{Refund, Reversal};
        use TopUpStatus::{Failed, Pending, Succeeded};
        let all = [
            back(Refund, Succeeded, "20"),
            back(Refund, Failed, "5"),
            back(Refund, Pending, "3"),
            back(Reversal, Succeeded, "10"),
        ];
        assert_eq!(Returned::of(&all), Returned { refunded: m("20"), reversed: m("10"), pending: m("3") });
        let t = top_up(Succeeded, "50");
        assert_eq!(status(&t, &[]), None);
        assert_eq!(status(&t, &all[1..3]), None, "declined and pending: nothing went back yet");
        assert_eq!(status(&t, &all), Some(("refunded", "Partly refunded")));
        assert_eq!(status(&t, &[back(Reversal, Succeeded, "50")]), Some(("reversed", "Reversed")));
        assert_eq!(status(&t, &[back(Reversal, Succeeded, "1")]), Some(("refunded", "Partly reversed")));
        let whole = [back(Refund, Succeeded, "30"), back(Reversal, Succeeded, "20")];
        assert_eq!(status(&t, &whole), Some(("refunded", "Refunded")));
        assert_eq!(status(&top_up(Failed, "50"), &whole), None, "only a succeeded top-up has money to give back");
    }
}
