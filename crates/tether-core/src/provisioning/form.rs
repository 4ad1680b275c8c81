//! `application/x-www-form-urlencoded` decoding (WHATWG URL standard,
//! section 5.1) into caller buffers: `+` is a space, `%XX` a byte, and a `%`
//! that is not followed by two hex digits is an error rather than passed
//! through, so a broken form cannot save a mangled password.
//!
//! ```
//! use tether_core::provisioning::form::{Form, FormError};
//!
//! let form = Form::new(b"ssid=My+Wi-Fi&passphrase=p%40ss%20word");
//! let mut buf = [0u8; 64];
//! assert_eq!(form.get("ssid", &mut buf)?, Some("My Wi-Fi"));
//! assert_eq!(form.get("passphrase", &mut buf)?, Some("p@ss word"));
//! assert_eq!(form.get("token", &mut buf)?, None);
//! # Ok::<(), FormError>(())
//! ```

use core::fmt;

/// Why a form value could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum FormError {
    /// A `%` not followed by two hexadecimal digits.
    BadPercentEncoding,
    /// The decoded bytes are not UTF-8.
    NotUtf8,
    /// The decoded value does not fit the caller's buffer.
    TooLong,
}

impl fmt::Display for FormError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BadPercentEncoding => {
                "the form data has a broken percent-encoding (a % not followed by two hex digits)"
            }
            Self::NotUtf8 => "the form data is not valid UTF-8",
            Self::TooLong => "a form value is too long",
        })
    }
}

impl core::error::Error for FormError {}

fn hex(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Decodes one name or value into `out`; returns the UTF-8 text written.
pub fn decode_into<'o>(input: &[u8], out: &'o mut [u8]) -> Result<&'o str, FormError> {
    let mut written = 0;
    let mut i = 0;
    while let Some(&byte) = input.get(i) {
        let (decoded, used) = match byte {
            b'+' => (b' ', 1),
            b'%' => {
                let high = input.get(i + 1).copied().and_then(hex);
                let low = input.get(i + 2).copied().and_then(hex);
                match (high, low) {
                    (Some(h), Some(l)) => ((h << 4) | l, 3),
                    _ => return Err(FormError::BadPercentEncoding),
                }
            }
            other => (other, 1),
        };
        let slot = out.get_mut(written).ok_or(FormError::TooLong)?;
        *slot = decoded;
        written += 1;
        i += used;
    }
    let bytes = out.get(..written).unwrap_or(&[]);
    core::str::from_utf8(bytes).map_err(|_| FormError::NotUtf8)
}

/// A form body, borrowed; values are decoded on demand into caller buffers.
#[derive(Debug, Clone, Copy)]
pub struct Form<'a> {
    body: &'a [u8],
}

impl<'a> Form<'a> {
    /// Wraps an `application/x-www-form-urlencoded` body.
    pub const fn new(body: &'a [u8]) -> Self {
        Self { body }
    }

    /// The raw (still encoded) `name=value` pairs, in order; empty pieces
    /// (`a=1&&b=2`) are skipped and a piece without `=` has an empty value.
    pub fn pairs(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        self.body
            .split(|b| *b == b'&')
            .filter(|piece| !piece.is_empty())
            .map(|piece| match piece.iter().position(|b| *b == b'=') {
                Some(eq) => (
                    piece.get(..eq).unwrap_or(&[]),
                    piece.get(eq + 1..).unwrap_or(&[]),
                ),
                None => (piece, &[][..]),
            })
    }

    /// Checks every name and value decodes, without keeping the results:
    /// one call tells the portal whether the body is well-formed at all.
    pub fn validate(&self) -> Result<(), FormError> {
        let mut scratch = [0u8; 16];
        for (name, value) in self.pairs() {
            for part in [name, value] {
                check(part, &mut scratch)?;
            }
        }
        Ok(())
    }

    /// The decoded value of the first field called `name`, `None` when
    /// absent. Names are compared after decoding.
    pub fn get<'o>(&self, name: &str, out: &'o mut [u8]) -> Result<Option<&'o str>, FormError> {
        for (raw_name, raw_value) in self.pairs() {
            if name_matches(raw_name, name)? {
                return decode_into(raw_value, out).map(Some);
            }
        }
        Ok(None)
    }
}

/// Decodes `input` in chunks through `scratch` to validate percent-encoding
/// and UTF-8 of a value of any length without a buffer that large.
fn check(input: &[u8], scratch: &mut [u8; 16]) -> Result<(), FormError> {
    // Percent-encoding first.
    let mut i = 0;
    while let Some(&b) = input.get(i) {
        if b == b'%' {
            let ok = input.get(i + 1).copied().and_then(hex).is_some()
                && input.get(i + 2).copied().and_then(hex).is_some();
            if !ok {
                return Err(FormError::BadPercentEncoding);
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    // Then UTF-8, decoding a few bytes at a time and carrying an incomplete
    // sequence over to the next chunk.
    let mut carried = 0usize;
    let mut i = 0;
    loop {
        let mut n = carried;
        while n < scratch.len() {
            let Some(&b) = input.get(i) else { break };
            let (decoded, used) = match b {
                b'+' => (b' ', 1),
                b'%' => {
                    let h = input.get(i + 1).copied().and_then(hex).unwrap_or(0);
                    let l = input.get(i + 2).copied().and_then(hex).unwrap_or(0);
                    ((h << 4) | l, 3)
                }
                other => (other, 1),
            };
            if let Some(slot) = scratch.get_mut(n) {
                *slot = decoded;
            }
            n += 1;
            i += used;
        }
        let chunk = scratch.get(..n).unwrap_or(&[]);
        let done = i >= input.len();
        match core::str::from_utf8(chunk) {
            Ok(_) => carried = 0,
            Err(e) if e.error_len().is_none() && !done => {
                // Incomplete sequence at the end: move it to the front.
                let valid = e.valid_up_to();
                carried = n - valid;
                scratch.copy_within(valid..n, 0);
            }
            Err(_) => return Err(FormError::NotUtf8),
        }
        if done {
            return Ok(());
        }
    }
}

fn name_matches(raw: &[u8], wanted: &str) -> Result<bool, FormError> {
    // Field names of the portal are short; anything longer cannot match.
    let mut buf = [0u8; 32];
    match decode_into(raw, &mut buf) {
        Ok(name) => Ok(name == wanted),
        Err(FormError::TooLong | FormError::NotUtf8) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    extern crate alloc;

    use alloc::string::String;
    use alloc::vec::Vec;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn decodes_plus_percent_and_utf8() {
        let mut buf = [0u8; 64];
        assert_eq!(decode_into(b"a+b%2Bc%2fd", &mut buf), Ok("a b+c/d"));
        assert_eq!(decode_into(b"caf%C3%A9", &mut buf), Ok("café"));
        assert_eq!(decode_into(b"", &mut buf), Ok(""));
        assert_eq!(
            decode_into(b"100%", &mut buf),
            Err(FormError::BadPercentEncoding)
        );
        assert_eq!(
            decode_into(b"%4", &mut buf),
            Err(FormError::BadPercentEncoding)
        );
        assert_eq!(
            decode_into(b"%zz", &mut buf),
            Err(FormError::BadPercentEncoding)
        );
        assert_eq!(decode_into(b"%FF", &mut buf), Err(FormError::NotUtf8));
        assert_eq!(
            decode_into(b"abcdef", &mut [0u8; 5]),
            Err(FormError::TooLong)
        );
    }

    #[test]
    fn form_lookup() {
        let form = Form::new(b"&a=1&&b&c%5F=x%26y&a=2");
        let mut buf = [0u8; 16];
        assert_eq!(form.get("a", &mut buf), Ok(Some("1")));
        assert_eq!(form.get("b", &mut buf), Ok(Some("")));
        assert_eq!(form.get("c_", &mut buf), Ok(Some("x&y")));
        assert_eq!(form.get("d", &mut buf), Ok(None));
        assert_eq!(form.validate(), Ok(()));
        assert_eq!(
            Form::new(b"a=1&b=%G0").validate(),
            Err(FormError::BadPercentEncoding)
        );
        assert_eq!(Form::new(b"a=%C3").validate(), Err(FormError::NotUtf8));
        // A multi-byte character split across the 16-byte scratch chunks.
        assert_eq!(
            Form::new("v=123456789012345é€😀".as_bytes()).validate(),
            Ok(())
        );
    }

    /// Encodes like a browser does.
    fn encode(text: &str) -> String {
        let mut out = String::new();
        for b in text.bytes() {
            match b {
                b' ' => out.push('+'),
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                    out.push(char::from(b))
                }
                _ => out.push_str(&alloc::format!("%{b:02X}")),
            }
        }
        out
    }

    proptest! {
        #[test]
        fn prop_round_trip(name in "[a-z_]{1,12}", value in "\\PC{0,40}") {
            let body = alloc::format!("x=1&{}={}&y=2", encode(&name), encode(&value));
            let form = Form::new(body.as_bytes());
            prop_assert_eq!(form.validate(), Ok(()));
            let mut buf = [0u8; 256];
            let got = form.get(&name, &mut buf).unwrap();
            // The first field wins when `name` is `x` or `y`.
            if name != "x" && name != "y" {
                prop_assert_eq!(got, Some(value.as_str()));
            }
        }

        #[test]
        fn prop_never_panics_and_validate_agrees(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let form = Form::new(&body);
            let valid = form.validate();
            let mut all_ok = Ok(());
            for (name, value) in form.pairs() {
                let mut buf = [0u8; 256];
                for part in [name, value] {
                    if let Err(e) = decode_into(part, &mut buf) {
                        all_ok = all_ok.and(Err(e));
                    }
                }
            }
            prop_assert_eq!(valid.is_ok(), all_ok.is_ok());
            let _ = form.get("ssid", &mut [0u8; 8]);
            let _: Vec<_> = form.pairs().collect();
        }
    }
}
