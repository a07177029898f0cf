//! How the portal writes money, dates and names for people. Pure functions.

use chrono::{DateTime, Utc};

use crate::money::Money;

/// `$1,212.50` (USD), `1,212.50 EUR` otherwise; negative with a real minus sign. The
/// digits are the API's (at least 2 decimals, up to 6, never rounded).
pub fn money(m: Money, currency: &str) -> String {
    let digits = grouped(&m.abs().to_string());
    let body = if currency == "USD" { format!("${digits}") } else { format!("{digits} {currency}") };
    if m.is_negative() {
        format!("\u{2212}{body}")
    } else {
        body
    }
}

/// Thousands separators in the whole part: `10000.00` → `10,000.00`.
fn grouped(plain: &str) -> String {
    let (whole, frac) = plain.split_once('.').unwrap_or((plain, ""));
    let mut out = String::with_capacity(plain.len() + whole.len() / 3);
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    out
}

/// `+$5.00` for a credit, `−$5.00` for a debit.
pub fn signed(m: Money, direction: &str, currency: &str) -> String {
    let sign = if direction == "debit" { '\u{2212}' } else { '+' };
    format!("{sign}{}", money(m.abs(), currency))
}

pub fn date_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

pub fn date(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

/// The machine-readable form for `<time datetime>`.
pub fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A transaction kind in words.
pub fn kind(k: &str) -> &'static str {
    match k {
        "top_up" => "Top-up",
        "top_up_refund" => "Top-up refund",
        "bonus" => "Top-up bonus",
        "signup" => "Signup credit",
        "gift" => "Gift",
        "referral" => "Referral credit",
        "compensation" => "Compensation",
        "adjustment" => "Adjustment",
        "conversion" => "Credit conversion",
        "usage" => "Usage",
        "hold" => "Hold",
        "hold_release" => "Hold released",
        "refund" => "Usage refund",
        "expiry" => "Expired credit",
        _ => "Other",
    }
}

/// Auto top-up states in words.
pub fn auto_state(s: &str) -> &'static str {
    match s {
        "idle" => "On, waiting for the balance to fall below the threshold",
        "in_flight" => "On, a top-up is being charged now",
        "backing_off" => "On, waiting before retrying after a declined payment",
        _ => "Off",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_reads_naturally() {
        let m = |s: &str| s.parse::<Money>().unwrap();
        assert_eq!(money(m("12.5"), "USD"), "$12.50");
        assert_eq!(money(m("-5"), "USD"), "\u{2212}$5.00");
        assert_eq!(money(m("0.000185"), "USD"), "$0.000185");
        assert_eq!(money(m("3"), "EUR"), "3.00 EUR");
        assert_eq!(money(m("10000"), "USD"), "$10,000.00");
        assert_eq!(money(m("-1234567.000001"), "USD"), "\u{2212}$1,234,567.000001");
        assert_eq!(money(m("999.5"), "USD"), "$999.50");
        assert_eq!(signed(m("5"), "debit", "USD"), "\u{2212}$5.00");
        assert_eq!(signed(m("5"), "credit", "USD"), "+$5.00");
    }

    #[test]
    fn every_kind_has_words() {
        for k in crate::ledger::TxnKind::ALL {
            assert_ne!(kind(k.as_str()), "Other", "{}", k.as_str());
        }
    }
}
