//! ECMAScript's `Number.prototype.toString` for finite doubles (ES2015
//! 7.1.12.1), the number format of RFC 8785.
//!
//! The digits: the fewest that read back as `x`; among those, the nearest
//! to `x`; on an exact tie, the even one. Rust's `{:e}` gives the fewest and
//! nearest, but resolves exact ties upwards (2^-25 prints as
//! `2.9802322387695313e-8`, ECMAScript says `…312e-8`), so ties are
//! detected exactly and fixed here.

use std::fmt::Write as _;

/// Appends the ECMAScript string of the finite double `x` to `out`.
pub(crate) fn write_es_double(out: &mut String, x: f64) {
    if x == 0.0 {
        // Both +0 and -0.
        out.push('0');
        return;
    }
    if x < 0.0 {
        out.push('-');
    }
    let (s, e10) = shortest(x.abs());
    let digits = s.to_string();
    // x = s × 10^e10 = 0.digits × 10^n, with k digits.
    let k = i32::try_from(digits.len()).unwrap_or(i32::MAX);
    let n = k + e10;

    if k <= n && n <= 21 {
        out.push_str(&digits);
        for _ in k..n {
            out.push('0');
        }
    } else if 0 < n && n <= 21 {
        let (int, frac) = digits.split_at(n.unsigned_abs() as usize);
        out.push_str(int);
        out.push('.');
        out.push_str(frac);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        for _ in n..0 {
            out.push('0');
        }
        out.push_str(&digits);
    } else {
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        let sign = if n > 0 { '+' } else { '-' };
        // Writing into a String cannot fail.
        let _ = write!(out, "e{sign}{}", (n - 1).abs());
    }
}

/// The ECMAScript digits of a positive finite double as `(s, e10)` with
/// `x ≈ s × 10^e10` and `s` free of trailing zeros.
fn shortest(x: f64) -> (u64, i32) {
    // `{:e}` prints `d[.ddd]e<exp>` with at most 17 digits.
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let s: u64 = digits.parse().unwrap_or(0);
    let k = i32::try_from(digits.len()).unwrap_or(i32::MAX);
    let e10 = exp + 1 - k;

    if s % 2 == 1 {
        // Is x exactly halfway between s and a neighbour? Then take the even
        // neighbour, if it also reads back as x.
        for (twice, other) in [(2 * s - 1, s - 1), (2 * s + 1, s + 1)] {
            if is_exactly_half(x, twice, e10) && reads_back(other, e10, x) {
                return strip_zeros(other, e10);
            }
        }
    }
    (s, e10)
}

/// Whether `x == (odd / 2) × 10^e10` exactly, with `odd` odd.
fn is_exactly_half(x: f64, odd: u64, e10: i32) -> bool {
    // odd/2 × 10^e10 = odd × 5^e10 × 2^(e10−1); x = m_odd × 2^e2. Both sides
    // split into an odd part and a power of two, which must match.
    let bits = x.to_bits();
    let exp_bits = i32::try_from((bits >> 52) & 0x7ff).unwrap_or(0);
    let frac = bits & ((1 << 52) - 1);
    let (m, e) = if exp_bits == 0 {
        (frac, -1074)
    } else {
        (frac | (1 << 52), exp_bits - 1075)
    };
    if m == 0 {
        return false;
    }
    let tz = i32::try_from(m.trailing_zeros()).unwrap_or(0);
    let m_odd = u128::from(m >> tz);
    if tz + e != e10 - 1 {
        return false;
    }
    // Move the power of five to whichever side keeps it an integer.
    let (lhs, rhs) = if e10 >= 0 {
        (
            Some(m_odd),
            pow5(e10).and_then(|p| p.checked_mul(u128::from(odd))),
        )
    } else {
        (
            pow5(-e10).and_then(|p| p.checked_mul(m_odd)),
            Some(u128::from(odd)),
        )
    };
    matches!((lhs, rhs), (Some(a), Some(b)) if a == b)
}

fn pow5(e: i32) -> Option<u128> {
    5u128.checked_pow(u32::try_from(e).ok()?)
}

fn reads_back(s: u64, e10: i32, x: f64) -> bool {
    format!("{s}e{e10}").parse::<f64>() == Ok(x)
}

fn strip_zeros(mut s: u64, mut e10: i32) -> (u64, i32) {
    while s != 0 && s.is_multiple_of(10) {
        s /= 10;
        e10 += 1;
    }
    (s, e10)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn es(x: f64) -> String {
        let mut s = String::new();
        write_es_double(&mut s, x);
        s
    }

    #[test]
    fn exact_ties_go_to_the_even_digit() {
        // 2^-25 = 2.98023223876953125e-8 exactly: halfway between …312 and …313.
        assert_eq!(es(2f64.powi(-25)), "2.9802322387695312e-8");
        assert_eq!(es(-(2f64.powi(-25))), "-2.9802322387695312e-8");
        // 581487367.28515625 exactly: halfway between …562 and …563.
        assert_eq!(es(581_487_367.0 + 73.0 / 256.0), "581487367.2851562");
    }

    #[test]
    fn is_exactly_half_is_exact() {
        assert!(is_exactly_half(0.5, 1, 0)); // 1/2 × 10^0
        assert!(is_exactly_half(2.5, 5, 0));
        assert!(is_exactly_half(25.0, 5, 1));
        assert!(is_exactly_half(0.25, 5, -1)); // 5/2 × 10^-1
        assert!(!is_exactly_half(0.3, 3, -1)); // 0.3 is not 0.15 × 2
        assert!(!is_exactly_half(0.1, 1, -1)); // 0.1 is not exactly 0.05 × 2
        assert!(!is_exactly_half(f64::MIN_POSITIVE, 1, -308));
    }

    #[test]
    fn strip_zeros_moves_them_to_the_exponent() {
        assert_eq!(strip_zeros(1200, -5), (12, -3));
        assert_eq!(strip_zeros(7, 0), (7, 0));
    }
}
