//! Charts drawn on the server as inline SVG: no script, no image requests, readable by a
//! screen reader through `<title>`/`<desc>` (and every page puts the same numbers in a
//! table too).
//!
//! Geometry: horizontal positions are percentages of the chart's width, vertical ones
//! pixels, so a chart fills any screen width while its text keeps its real size (no
//! `viewBox` scaling that would shrink labels to nothing on a phone). Sizes are computed
//! with `Decimal`, like all money here; negative values (a day whose refunds exceed its
//! charges) are drawn as zero — the table shows them.
//!
//! Every SVG element is written with a closing tag: inside `<svg>` the HTML parser
//! treats `<rect>` without one as open, and would nest (and hide) what follows.

use maud::{html, Markup};
use rust_decimal::Decimal;

use super::format;
use crate::money::Money;

/// One bar: its label on the axis, its value, and the words of its tooltip.
#[derive(Debug, Clone)]
pub struct Point {
    pub label: String,
    pub value: Money,
    pub note: String,
}

const TOP: i64 = 22;
const PLOT: i64 = 160;

/// The smallest of 1, 2, 2.5, 5 × 10^k at or above `v` (1 for nothing to show).
pub fn nice_ceiling(v: Decimal) -> Decimal {
    if v <= Decimal::ZERO {
        return Decimal::ONE;
    }
    let mut p = Decimal::ONE;
    while p > v {
        p /= Decimal::TEN;
    }
    while p * Decimal::TEN <= v {
        p *= Decimal::TEN;
    }
    for m in [Decimal::ONE, Decimal::TWO, Decimal::new(25, 1), Decimal::new(5, 0), Decimal::TEN] {
        if m * p >= v {
            return m * p;
        }
    }
    Decimal::TEN * p
}

fn pct(d: Decimal) -> String {
    format!("{}%", d.round_dp(3).normalize())
}

fn px(d: Decimal) -> String {
    d.round_dp(1).normalize().to_string()
}

fn positive(m: Money) -> Decimal {
    m.as_decimal().max(Decimal::ZERO)
}

/// Vertical bars, one per point, in order (spend per day).
pub fn columns(id: &str, title: &str, desc: &str, currency: &str, points: &[Point]) -> Markup {
    let max = nice_ceiling(points.iter().map(|p| positive(p.value)).max().unwrap_or_default());
    let n = Decimal::from(points.len().max(1));
    let slot = Decimal::ONE_HUNDRED / n;
    let (gap, width) = (slot * Decimal::new(15, 2), slot * Decimal::new(70, 2));
    let plot = Decimal::from(PLOT);
    let grid = [Decimal::ONE, Decimal::new(5, 1), Decimal::ZERO];
    let height = TOP + PLOT + 30;
    let last = points.len().saturating_sub(1);
    let mid = points.len() / 2;
    html! {
        svg.chart width="100%" height=(height) role="img" aria-labelledby={ (id) "-t " (id) "-d" } {
            title id={ (id) "-t" } { (title) }
            desc id={ (id) "-d" } { (desc) }
            @for f in grid {
                @let y = Decimal::from(TOP) + plot * (Decimal::ONE - f);
                line.grid x1="0" x2="100%" y1=(px(y)) y2=(px(y)) {}
                @if !f.is_zero() {
                    text.axis x="0" y=(px(y - Decimal::from(5))) { (format::money(Money::round_cost(max * f).unwrap_or(Money::ZERO), currency)) }
                }
            }
            @for (i, p) in points.iter().enumerate() {
                @let h = (plot * positive(p.value) / max).max(if p.value.is_positive() { Decimal::ONE } else { Decimal::ZERO });
                @let x = slot * Decimal::from(i) + gap;
                rect.bar x=(pct(x)) y=(px(Decimal::from(TOP) + plot - h)) width=(pct(width)) height=(px(h)) {
                    title { (p.note) }
                }
                @if i == 0 || i == last || (i == mid && points.len() > 4) {
                    @let (anchor, at) = if i == 0 { ("start", x) } else if i == last { ("end", x + width) } else { ("middle", x + width / Decimal::TWO) };
                    text.axis x=(pct(at)) y=(TOP + PLOT + 20) text-anchor=(anchor) { (p.label) }
                }
            }
        }
    }
}

/// Horizontal bars with their label above each (spend per model).
pub fn rows(id: &str, title: &str, desc: &str, currency: &str, points: &[Point]) -> Markup {
    let max = points.iter().map(|p| positive(p.value)).max().unwrap_or_default().max(Decimal::new(1, 6));
    let row = 40i64;
    html! {
        svg.chart width="100%" height=(row * points.len().max(1) as i64) role="img" aria-labelledby={ (id) "-t " (id) "-d" } {
            title id={ (id) "-t" } { (title) }
            desc id={ (id) "-d" } { (desc) }
            @for (i, p) in points.iter().enumerate() {
                @let y = row * i as i64;
                @let w = (Decimal::ONE_HUNDRED * positive(p.value) / max).max(if p.value.is_positive() { Decimal::new(5, 1) } else { Decimal::ZERO });
                text.label x="0" y=(y + 14) { (p.label) " · " (format::money(p.value, currency)) }
                rect.track x="0" y=(y + 20) width="100%" height="12" rx="3" {}
                rect.bar x="0" y=(y + 20) width=(pct(w)) height="12" rx="3" { title { (p.note) } }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Money {
        s.parse().unwrap()
    }

    #[test]
    fn nice_ceilings() {
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        assert_eq!(nice_ceiling(d("0")), d("1"));
        assert_eq!(nice_ceiling(d("7.3")), d("10"));
        assert_eq!(nice_ceiling(d("1.2")), d("2"));
        assert_eq!(nice_ceiling(d("2.2")), d("2.5"));
        assert_eq!(nice_ceiling(d("0.034")), d("0.05"));
        assert_eq!(nice_ceiling(d("100")), d("100"));
        assert_eq!(nice_ceiling(d("4100")), d("5000"));
    }

    #[test]
    fn bars_scale_to_the_nice_maximum_and_escape_labels() {
        let pts = vec![
            Point { label: "<b>".into(), value: m("5"), note: "a & b".into() },
            Point { label: "d2".into(), value: m("10"), note: "n".into() },
            Point { label: "d3".into(), value: m("-1"), note: "n".into() },
        ];
        let svg = columns("c", "Spend", "desc", "USD", &pts).into_string();
        assert!(svg.contains("height=\"80\""), "half of the 160px plot: {svg}");
        assert!(svg.contains("height=\"160\""), "the maximum fills the plot");
        assert!(svg.contains("height=\"0\""), "negative is drawn as zero");
        assert!(svg.contains("&lt;b&gt;") && svg.contains("a &amp; b") && !svg.contains("<b>"));
        assert!(svg.contains("$10.00"), "axis label");
        let svg = rows("r", "Models", "desc", "USD", &pts).into_string();
        assert!(svg.contains("width=\"50%\"") && svg.contains("width=\"100%\""));
        // No element is left open (an unclosed `<rect>` would swallow the next bar).
        assert_eq!(svg.matches("<rect").count(), svg.matches("</rect>").count());
        let svg = columns("c", "Spend", "desc", "USD", &pts).into_string();
        assert_eq!(svg.matches("<line").count(), svg.matches("</line>").count());
    }
}
