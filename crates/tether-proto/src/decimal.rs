//! Plain decimals for the numbers of a description (`scale`, `min`, `max`)
//! without `core::fmt`'s float code.
//!
//! `f64`'s `Display` links core's float formatting (Grisu and Dragon with
//! their tables, about 10 KB of `.text` on an ESP32-C3), which a device
//! client must not pay for to print `0.01` or `-40`. A description's
//! numbers are decimal literals with at most [`MAX_FRACTION_DIGITS`]
//! fraction digits, so exact integer arithmetic finds them: for `d = 0, 1,
//! …` the integer `n` nearest to `value × 10^d`, until `n / 10^d` reads
//! back as `value`. The first such `n` is the shortest decimal that reads
//! back (the one `Display` prints: fewest digits, then nearest), so the
//! text is byte for byte `Display`'s (held to it by the property test
//! below).

use core::fmt::{self, Write};

/// Fraction digits of a description's number, at most (`1e-12` is the
/// smallest scale).
pub const MAX_FRACTION_DIGITS: u32 = 12;

/// Magnitudes below this have no decimal of [`MAX_FRACTION_DIGITS`]
/// fraction digits other than 0 (and their exponents would not fit the
/// arithmetic below).
const TINY: f64 = 1e-13;
/// Magnitudes above this are refused.
const HUGE: f64 = crate::describe::MAX_MAGNITUDE;

/// `value` as `±n / 10^digits`, the shortest decimal that reads back as
/// `value` (`n` without trailing zeros in the fraction).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Decimal {
    negative: bool,
    n: u128,
    digits: u32,
}

impl Decimal {
    /// The decimal of `value`, if it is finite, of magnitude at most 1e15
    /// and has at most [`MAX_FRACTION_DIGITS`] fraction digits.
    pub(crate) fn of(value: f64) -> Option<Decimal> {
        let bits = value.to_bits();
        let negative = bits >> 63 == 1;
        if value == 0.0 {
            return Some(Decimal {
                negative,
                n: 0,
                digits: 0,
            });
        }
        let magnitude = f64::from_bits(bits & !(1 << 63));
        // Also refuses NaN and the infinities.
        if !(TINY..=HUGE).contains(&magnitude) {
            return None;
        }
        // magnitude = m × 2^-shift exactly, m with its implicit bit (a
        // normal number: TINY is far above the subnormals).
        let biased = (bits >> 52) & 0x7ff;
        let m = u128::from((bits & ((1 << 52) - 1)) | (1 << 52));
        // biased <= 1023 + 49 (HUGE < 2^50): shift >= 3; biased >= 1023 -
        // 44 (TINY > 2^-44): shift <= 96, so 2^shift fits.
        let shift = u32::try_from(1075_u64.checked_sub(biased)?).ok()?;
        let lower_gap_halved = m == 1 << 52 && biased > 1;
        let mut power: u128 = 1;
        for digits in 0..=MAX_FRACTION_DIGITS {
            // exact = m × 10^digits (< 2^53 × 2^40), value × 10^digits =
            // exact / 2^shift.
            let exact = m * power;
            let quotient = exact >> shift;
            let rest = exact - (quotient << shift);
            let half = 1_u128 << (shift - 1);
            // A tie rounds up, as `Display`'s digit generation does.
            let n = if rest >= half { quotient + 1 } else { quotient };
            // n / 10^d reads back as value when it lies within half a gap
            // to the neighbouring doubles (ties go to the even mantissa):
            // |n × 2^shift − exact| against 10^d / 2 (times 2 below).
            let scaled = n << shift;
            let even = m & 1 == 0;
            let reads_back = if scaled >= exact {
                let twice = 2 * (scaled - exact);
                twice < power || (even && twice == power)
            } else {
                // Below a power of two the gap to the next lower double
                // is half as wide.
                let factor = if lower_gap_halved { 4 } else { 2 };
                let twice = factor * (exact - scaled);
                twice < power || (even && twice == power)
            };
            if reads_back {
                return Some(Decimal {
                    negative,
                    n,
                    digits,
                });
            }
            power *= 10;
        }
        None
    }

    /// The decimal as `Display` writes the `f64` (`-0`, `40`, `0.01`,
    /// `-1000000000000000`, `0.000000000001`), in `text` (not generic over
    /// the writer, so one copy serves every writer).
    fn text(self, text: &mut [u8; 32]) -> &str {
        // At most 28 digits (n < 1e15 × 1e12 × 10), a sign and a point.
        let mut at = text.len();
        let mut n = self.n;
        let mut written = 0;
        while n > 0 || written <= self.digits {
            if written == self.digits && self.digits > 0 {
                at -= 1;
                text[at] = b'.';
            }
            at -= 1;
            // n % 10 < 10.
            text[at] = b'0' + (n % 10) as u8;
            n /= 10;
            written += 1;
        }
        if self.negative {
            at -= 1;
            text[at] = b'-';
        }
        // ASCII digits, '.' and '-'.
        core::str::from_utf8(&text[at..]).unwrap_or("")
    }
}

/// `value` as a plain decimal (see [`Decimal::of`]) in `buf`; `None` for
/// a number a description may not hold.
fn number_text(value: f64, buf: &mut [u8; 32]) -> Option<&str> {
    Decimal::of(value).map(|decimal| decimal.text(buf))
}

/// Writes `value` as a plain decimal (see [`Decimal::of`]); an error for
/// a number a description may not hold.
pub(crate) fn write_number<W: Write + ?Sized>(value: f64, out: &mut W) -> fmt::Result {
    let mut buf = [0; 32];
    match number_text(value, &mut buf) {
        Some(text) => out.write_str(text),
        None => Err(fmt::Error),
    }
}

#[cfg(test)]
mod tests {
    extern crate alloc;
    use alloc::format;
    use alloc::string::String;

    use proptest::prelude::*;

    use super::*;

    fn text(value: f64) -> Option<String> {
        let mut out = String::new();
        write_number(value, &mut out).ok().map(|()| out)
    }

    /// The oracle: std's shortest round-trip `Display`, when it has at
    /// most 12 fraction digits and the magnitude is in range.
    fn oracle(value: f64) -> Option<String> {
        if !value.is_finite() || value.abs() > HUGE {
            return None;
        }
        let shown = format!("{value}");
        let fraction = shown.split_once('.').map_or(0, |(_, f)| f.len());
        (fraction <= MAX_FRACTION_DIGITS as usize).then_some(shown)
    }

    #[test]
    fn prints_what_display_prints() {
        for value in [
            0.0,
            -0.0,
            1.0,
            -40.0,
            100.0,
            0.01,
            0.1,
            0.3,
            1e-12,
            -1e-12,
            1e15,
            -1e15,
            2.5,
            0.5,
            1e-13,
            123456789012345.67,
            0.000_000_000_015,
            9.999_999_999_999,
            4503599627370496.0,
        ] {
            assert_eq!(text(value), oracle(value), "{value}");
        }
        for refused in [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e16,
            1.0 / 3.0,
            1e-300,
        ] {
            assert_eq!(text(refused), None, "{refused}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        /// Any double: the same text as `Display`, or refused exactly when
        /// `Display` needs more than 12 fraction digits.
        #[test]
        fn any_double_matches_display(bits in any::<u64>()) {
            let value = f64::from_bits(bits);
            prop_assert_eq!(text(value), oracle(value));
        }

        /// Decimal literals, the numbers firmware writes.
        #[test]
        fn decimal_literals_match_display(
            n in -1_000_000_000_000_000_i64..=1_000_000_000_000_000,
            digits in 0_u32..=12,
        ) {
            let literal = format!("{n}e-{digits}");
            let value: f64 = literal.parse().unwrap();
            prop_assert_eq!(text(value), oracle(value));
        }

        /// Doubles next to powers of two and near the range ends (the
        /// narrow lower gap, the largest shifts).
        #[test]
        fn edges_match_display(exponent in -44_i32..=50, step in -3_i64..=3, sign: bool) {
            let base = 2_f64.powi(exponent);
            let bits = base.to_bits().wrapping_add_signed(step);
            let value = f64::from_bits(bits) * if sign { -1.0 } else { 1.0 };
            prop_assert_eq!(text(value), oracle(value));
        }
    }
}
