//! The payload rule: exactly one JSON value that every strict JSON reader
//! accepts, checked in one pass over the bytes, without recursion, without
//! allocation and without floating point (so devices can run it too).
//!
//! Beyond RFC 8259 syntax the rule refuses what strict readers (serde_json,
//! the server's own) refuse although the grammar allows it:
//!
//! - nesting deeper than [`MAX_PAYLOAD_DEPTH`] arrays and objects;
//! - a `\u` escape of an unpaired UTF-16 surrogate (`"\ud800"`);
//! - a number whose magnitude rounds to infinity as an IEEE 754 double
//!   (`1e400`): at or above 2^1024 − 2^970, the halfway point between
//!   `f64::MAX` and 2^1024;
//!
//! and, for the payload as a whole, whitespace before or after the value
//! (so the bytes survive a trip through the JSON encoding unchanged).

use core::fmt;

/// Deepest nesting of arrays and objects a payload may have: `[[1]]` nests
/// 2 deep, a scalar 0. Strict readers stop there (serde_json's recursion
/// limit), so the server refuses deeper payloads when they arrive rather
/// than store what nobody can read.
pub const MAX_PAYLOAD_DEPTH: usize = 127;

/// Why a payload is not one acceptable JSON value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum PayloadError {
    /// Not UTF-8.
    NotUtf8,
    /// Not one JSON value: a syntax error, nothing, more than one value, or
    /// whitespace before or after it.
    Syntax,
    /// Arrays and objects nest deeper than [`MAX_PAYLOAD_DEPTH`].
    TooDeep,
    /// A `\u` escape of a UTF-16 surrogate that is not part of a pair.
    UnpairedSurrogate,
    /// A number too large for an IEEE 754 double (it would read as infinity).
    NumberOutOfRange,
}

impl PayloadError {
    /// A short explanation for humans (close reasons, error messages).
    pub const fn reason(self) -> &'static str {
        match self {
            PayloadError::NotUtf8 => "payload is not UTF-8",
            PayloadError::Syntax => "payload is not one JSON value",
            PayloadError::TooDeep => "payload nests arrays and objects deeper than 127",
            PayloadError::UnpairedSurrogate => "payload has an unpaired surrogate escape",
            PayloadError::NumberOutOfRange => "payload has a number out of the double range",
        }
    }
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl core::error::Error for PayloadError {}

/// The significant digits of 2^1024 − 2^970 (309 of them): a number whose
/// significant digits, scaled to the same power of ten, are at least these
/// rounds to infinity.
const OVERFLOW_DIGITS: &[u8; 309] = b"179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174497792";

/// Checks `bytes` against the payload rule (module docs).
pub(crate) fn check(bytes: &[u8]) -> Result<(), PayloadError> {
    if core::str::from_utf8(bytes).is_err() {
        return Err(PayloadError::NotUtf8);
    }
    let mut reader = Reader { bytes, pos: 0 };
    // Bit `n` of `objects` tells whether the container at depth `n + 1` is
    // an object (else an array); `depth` counts the open containers.
    let mut objects: u128 = 0;
    let mut depth: usize = 0;
    'value: loop {
        // At the start of a value.
        match reader.next().ok_or(PayloadError::Syntax)? {
            open @ (b'[' | b'{') => {
                if depth >= MAX_PAYLOAD_DEPTH {
                    return Err(PayloadError::TooDeep);
                }
                let object = open == b'{';
                let bit = u32::try_from(depth)
                    .ok()
                    .and_then(|shift| 1u128.checked_shl(shift))
                    .ok_or(PayloadError::TooDeep)?;
                if object {
                    objects |= bit;
                } else {
                    objects &= !bit;
                }
                depth += 1;
                reader.skip_whitespace();
                let close = if object { b'}' } else { b']' };
                if reader.peek() == Some(close) {
                    reader.pos += 1;
                    depth -= 1;
                } else {
                    if object {
                        reader.member_name()?;
                    }
                    continue 'value;
                }
            }
            b'"' => reader.string()?,
            b'-' => reader.number()?,
            b'0'..=b'9' => {
                reader.pos -= 1;
                reader.number()?;
            }
            b't' => reader.literal(b"rue")?,
            b'f' => reader.literal(b"alse")?,
            b'n' => reader.literal(b"ull")?,
            _ => return Err(PayloadError::Syntax),
        }
        // After a value: close containers, or go on to the next element.
        loop {
            if depth == 0 {
                return if reader.pos == bytes.len() {
                    Ok(())
                } else {
                    Err(PayloadError::Syntax)
                };
            }
            let in_object = (objects >> (depth - 1)) & 1 == 1;
            reader.skip_whitespace();
            match (reader.next(), in_object) {
                (Some(b','), _) => {
                    reader.skip_whitespace();
                    if in_object {
                        reader.member_name()?;
                    }
                    continue 'value;
                }
                (Some(b']'), false) | (Some(b'}'), true) => depth -= 1,
                _ => return Err(PayloadError::Syntax),
            }
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.pos += 1;
        Some(byte)
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), PayloadError> {
        if self.next() == Some(byte) {
            Ok(())
        } else {
            Err(PayloadError::Syntax)
        }
    }

    fn literal(&mut self, rest: &[u8]) -> Result<(), PayloadError> {
        rest.iter().try_for_each(|&byte| self.expect(byte))
    }

    /// `"name"`, whitespace, `:` and whitespace, up to the member's value.
    fn member_name(&mut self) -> Result<(), PayloadError> {
        self.expect(b'"')?;
        self.string()?;
        self.skip_whitespace();
        self.expect(b':')?;
        self.skip_whitespace();
        Ok(())
    }

    /// The rest of a string after its opening quote.
    fn string(&mut self) -> Result<(), PayloadError> {
        loop {
            match self.next().ok_or(PayloadError::Syntax)? {
                b'"' => return Ok(()),
                b'\\' => match self.next().ok_or(PayloadError::Syntax)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                    b'u' => self.unicode_escape()?,
                    _ => return Err(PayloadError::Syntax),
                },
                0x00..=0x1f => return Err(PayloadError::Syntax),
                _ => {}
            }
        }
    }

    /// The rest of a `\u` escape; a leading surrogate must be followed by
    /// a `\u` escape of a trailing one.
    fn unicode_escape(&mut self) -> Result<(), PayloadError> {
        let unit = self.hex4()?;
        match unit {
            0xdc00..=0xdfff => Err(PayloadError::UnpairedSurrogate),
            0xd800..=0xdbff => {
                if self.next() != Some(b'\\') || self.next() != Some(b'u') {
                    return Err(PayloadError::UnpairedSurrogate);
                }
                match self.hex4()? {
                    0xdc00..=0xdfff => Ok(()),
                    _ => Err(PayloadError::UnpairedSurrogate),
                }
            }
            _ => Ok(()),
        }
    }

    fn hex4(&mut self) -> Result<u16, PayloadError> {
        let mut value: u16 = 0;
        for _ in 0..4 {
            let digit = match self.next().ok_or(PayloadError::Syntax)? {
                byte @ b'0'..=b'9' => byte - b'0',
                byte @ b'a'..=b'f' => byte - b'a' + 10,
                byte @ b'A'..=b'F' => byte - b'A' + 10,
                _ => return Err(PayloadError::Syntax),
            };
            value = (value << 4) | u16::from(digit);
        }
        Ok(value)
    }

    /// A number after its sign, if it has one:
    /// `(0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`, whose magnitude
    /// must round to a finite double.
    fn number(&mut self) -> Result<(), PayloadError> {
        let int_start = self.pos;
        match self.next() {
            Some(b'0') => {}
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(PayloadError::Syntax),
        }
        let int_end = self.pos;
        let mut frac = int_end..int_end;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            let start = self.pos;
            self.digits();
            if self.pos == start {
                return Err(PayloadError::Syntax);
            }
            frac = start..self.pos;
        }
        let mut exponent: i64 = 0;
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            let negative = match self.peek() {
                Some(b'-') => {
                    self.pos += 1;
                    true
                }
                Some(b'+') => {
                    self.pos += 1;
                    false
                }
                _ => false,
            };
            let start = self.pos;
            while let Some(digit @ b'0'..=b'9') = self.peek() {
                // Saturate far beyond any exponent that matters (±10^7).
                exponent = (exponent * 10 + i64::from(digit - b'0')).min(10_000_000);
                self.pos += 1;
            }
            if self.pos == start {
                return Err(PayloadError::Syntax);
            }
            if negative {
                exponent = -exponent;
            }
        }
        let int = self.bytes.get(int_start..int_end).unwrap_or_default();
        let frac = self.bytes.get(frac).unwrap_or_default();
        if overflows(int, frac, exponent) {
            Err(PayloadError::NumberOutOfRange)
        } else {
            Ok(())
        }
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
    }
}

/// Whether `int.frac × 10^exponent` (decimal digits) rounds to infinity as
/// a double.
fn overflows(int: &[u8], frac: &[u8], exponent: i64) -> bool {
    // The value is 0.D × 10^scale, D the digits without leading zeros.
    let leading_zeros = int
        .iter()
        .chain(frac)
        .take_while(|&&digit| digit == b'0')
        .count();
    if leading_zeros == int.len() + frac.len() {
        return false; // zero
    }
    // Lengths are below the 4 KiB payload limit: no overflow in i64.
    let int_len = i64::try_from(int.len()).unwrap_or(i64::MAX);
    let zeros = i64::try_from(leading_zeros).unwrap_or(i64::MAX);
    let scale = int_len.saturating_sub(zeros).saturating_add(exponent);
    let limit = i64::try_from(OVERFLOW_DIGITS.len()).unwrap_or(i64::MAX);
    if scale != limit {
        return scale > limit;
    }
    // Same power of ten: compare the digit strings.
    let mut digits = int.iter().chain(frac).skip(leading_zeros);
    for &limit_digit in OVERFLOW_DIGITS {
        match digits.next() {
            // Shorter: the rest are zeros, and the limit's last digit is not.
            None => return false,
            Some(&digit) if digit != limit_digit => return digit > limit_digit,
            Some(_) => {}
        }
    }
    // Every digit of the limit matched: at or above it.
    true
}

#[cfg(test)]
mod tests {
    extern crate alloc;
    use alloc::format;

    use super::*;

    fn ok(text: &str) {
        assert_eq!(check(text.as_bytes()), Ok(()), "{text:?}");
    }

    fn err(text: &str, error: PayloadError) {
        assert_eq!(check(text.as_bytes()), Err(error), "{text:?}");
    }

    #[test]
    fn values() {
        for text in [
            "0",
            "-0",
            "1.5e-3",
            "12E+2",
            "true",
            "false",
            "null",
            "\"\"",
            "\"a\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\uD83D\\uDE00\"",
            "[]",
            "{}",
            "[ 1 , [ ] , { } ]",
            "{ \"a\" : [ 1 , 2 ] , \"b\" : { \"c\" : null } }",
            "\"é\u{1F600}\"",
        ] {
            ok(text);
        }
        for text in [
            "",
            " 1",
            "1 ",
            "01",
            "1.",
            ".5",
            "+1",
            "1e",
            "1e+",
            "-",
            "[1,]",
            "[,1]",
            "{\"a\"}",
            "{\"a\":}",
            "{1:2}",
            "[1 2]",
            "{\"a\":1,}",
            "tru",
            "nul",
            "\"\\x\"",
            "\"\\u12\"",
            "\"\u{1}\"",
            "\"",
            "[",
            "]",
            "1 2",
            "\"\\u00G0\"",
        ] {
            err(text, PayloadError::Syntax);
        }
        assert_eq!(check(&[b'"', 0xff, b'"']), Err(PayloadError::NotUtf8));
    }

    #[test]
    fn nesting_limit() {
        let nested = |depth: usize| {
            let mut text = "[".repeat(depth);
            text.push_str(&"]".repeat(depth));
            text
        };
        ok(&nested(MAX_PAYLOAD_DEPTH));
        err(&nested(MAX_PAYLOAD_DEPTH + 1), PayloadError::TooDeep);
        err(&nested(5000), PayloadError::TooDeep);
        let objects = format!(
            "{}1{}",
            "{\"a\":".repeat(MAX_PAYLOAD_DEPTH),
            "}".repeat(MAX_PAYLOAD_DEPTH)
        );
        ok(&objects);
        // Mixed containers close with their own bracket.
        ok("[{\"a\":[{}]}]");
        err("[{\"a\":[{}]]}", PayloadError::Syntax);
    }

    #[test]
    fn surrogates() {
        err("\"\\ud800\"", PayloadError::UnpairedSurrogate);
        err("\"\\udc00\"", PayloadError::UnpairedSurrogate);
        err("\"\\ud800\\u0041\"", PayloadError::UnpairedSurrogate);
        err("\"\\ud800\\ud800\\udc00\"", PayloadError::UnpairedSurrogate);
        err("\"\\ud800x\"", PayloadError::UnpairedSurrogate);
        ok("\"\\ud800\\udc00\"");
        ok("\"\\uDBFF\\uDFFF\"");
    }

    #[test]
    fn number_range() {
        ok("1e308");
        ok("1.7976931348623157e308");
        ok("-1.7976931348623157e308");
        // Just below the halfway point rounds down to f64::MAX; at it, up
        // to infinity.
        let halfway = core::str::from_utf8(OVERFLOW_DIGITS).unwrap();
        let (head, last) = halfway.split_at(halfway.len() - 1);
        let below = format!("{head}{}", char::from(last.as_bytes()[0] - 1));
        ok(&format!("{}.{}e308", &below[..1], &below[1..]));
        ok(&below);
        err(
            &format!("{}.{}e308", &halfway[..1], &halfway[1..]),
            PayloadError::NumberOutOfRange,
        );
        err(halfway, PayloadError::NumberOutOfRange);
        err(&format!("{halfway}.0"), PayloadError::NumberOutOfRange);
        ok(&format!("0.{below}e309"));
        err("1.8e308", PayloadError::NumberOutOfRange);
        err("1e400", PayloadError::NumberOutOfRange);
        err("-1e400", PayloadError::NumberOutOfRange);
        err("1e99999999999999999999", PayloadError::NumberOutOfRange);
        ok("0e99999999999999999999");
        ok("0.000e400");
        ok("1e-400");
        ok("1e-99999999999999999999");
        ok("0.0001e312");
        err("0.0001e313", PayloadError::NumberOutOfRange);
        let digits = format!("1{}", "0".repeat(308));
        ok(&digits);
        err(&format!("{digits}0"), PayloadError::NumberOutOfRange);
        err(
            &format!("2{}", "0".repeat(308)),
            PayloadError::NumberOutOfRange,
        );
    }
}
