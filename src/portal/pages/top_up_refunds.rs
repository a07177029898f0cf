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
