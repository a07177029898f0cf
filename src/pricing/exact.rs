//! Exact decimal arithmetic: results are either exactly right or `None`.
//!
//! `rust_decimal`'s own `checked_mul`/`checked_add` only fail when a result cannot be
//! represented at all; when the exact result needs more than 28 decimal places (or a
//! mantissa wider than 96 bits) they quietly round it. A price engine that promises to
//! round once, at the end, cannot accept that, so these helpers work on the raw
//! mantissa/scale pair and refuse any result that would need rounding.

use rust_decimal::Decimal;

const MAX_SCALE: u32 = 28;
const MAX_MANTISSA: u128 = (1u128 << 96) - 1;

fn parts(d: Decimal) -> (i128, u32) {
    let n = d.normalize();
    (n.mantissa(), n.scale())
}

/// Builds `m × 10^-s`, dropping trailing zeros only while that is needed to fit.
fn build(mut m: i128, mut s: u32) -> Option<Decimal> {
    while (s > MAX_SCALE || m.unsigned_abs() > MAX_MANTISSA) && s > 0 && m % 10 == 0 {
        m /= 10;
        s -= 1;
    }
    if s > MAX_SCALE || m.unsigned_abs() > MAX_MANTISSA {
        return None;
    }
    Decimal::try_from_i128_with_scale(m, s).ok()
}

/// `a × b`, exactly.
pub(crate) fn mul(a: Decimal, b: Decimal) -> Option<Decimal> {
    let (ma, sa) = parts(a);
    let (mb, sb) = parts(b);
    build(ma.checked_mul(mb)?, sa + sb)
}

/// `a + b`, exactly.
pub(crate) fn add(a: Decimal, b: Decimal) -> Option<Decimal> {
    let (ma, sa) = parts(a);
    let (mb, sb) = parts(b);
    let s = sa.max(sb);
    let ma = ma.checked_mul(10i128.checked_pow(s - sa)?)?;
    let mb = mb.checked_mul(10i128.checked_pow(s - sb)?)?;
    build(ma.checked_add(mb)?, s)
}

/// `a / 10^k`, exactly (a shift of the decimal point).
pub(crate) fn shift_down(a: Decimal, k: u32) -> Option<Decimal> {
    let (m, s) = parts(a);
    build(m, s.checked_add(k)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn multiplies_and_adds_exactly() {
        assert_eq!(mul(d("0.00000015"), d("1234567")), Some(d("0.18518505")));
        assert_eq!(mul(d("0.2"), d("0.5")), Some(d("0.1")));
        assert_eq!(add(d("0.0000004"), d("0.0000008")), Some(d("0.0000012")));
        assert_eq!(add(d("1"), d("-0.25")), Some(d("0.75")));
        assert_eq!(shift_down(d("0.15"), 6), Some(d("0.00000015")));
        assert_eq!(shift_down(d("1500"), 2), Some(d("15")));
    }

    #[test]
    fn refuses_instead_of_rounding() {
        // 28 decimals times 1 decimal needs 29: rust_decimal would round, we refuse.
        let tiny = d("0.0000000000000000000000000001");
        assert_eq!(mul(tiny, d("0.3")), None);
        assert!(tiny.checked_mul(d("0.3")).is_some(), "rust_decimal rounds here; that is why this module exists");
        // 10^20 + 10^-20 needs 41 significant digits.
        assert_eq!(add(d("100000000000000000000"), d("0.00000000000000000001")), None);
        assert_eq!(mul(Decimal::MAX, d("2")), None);
        // Trailing zeros are dropped when that is what makes a result fit.
        assert_eq!(mul(d("0.00000000000000000000000002"), d("0.005")), Some(d("0.0000000000000000000000000001")));
    }
}
