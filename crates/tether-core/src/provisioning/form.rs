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

fn is_special(byte: &u8) -> bool {
    matches!(byte, b'%' | b'+')
}

/// Decodes one name or value into `out`; returns the UTF-8 text written.
pub fn decode_into<'o>(input: &[u8], out: &'o mut [u8]) -> Result<&'o str, FormError> {
    let mut written = 0;
    let mut rest = input;
    loop {
        // Copy the run of plain bytes up to the next `%` or `+` in one go.
        let run = rest.iter().position(is_special).unwrap_or(rest.len());
        let (plain, tail) = rest.split_at(run);
        let end = written + plain.len();
        out.get_mut(written..end)
            .ok_or(FormError::TooLong)?
            .copy_from_slice(plain);
        written = end;
        let Some((&special, tail)) = tail.split_first() else {
            break;
        };
        let decoded = if special == b'+' {
            rest = tail;
            b' '
        } else {
            let high = tail.first().copied().and_then(hex);
            let low = tail.get(1).copied().and_then(hex);
            let (Some(h), Some(l)) = (high, low) else {
                return Err(FormError::BadPercentEncoding);
            };
            rest = tail.get(2..).unwrap_or(&[]);
            (h << 4) | l
        };
        *out.get_mut(written).ok_or(FormError::TooLong)? = decoded;
        written += 1;
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
        for (name, value) in self.pairs() {
            check(name)?;
            check(value)?;
        }
        Ok(())
    }

    /// The raw (still encoded) values of the first fields called `names`,
    /// found in one pass over the body. Every name and every value *not*
    /// returned is checked as [`validate`](Self::validate) would; the
    /// returned values are checked when the caller decodes them with
    /// [`decode_into`] (so no byte is checked twice).
    pub fn lookup<const N: usize>(
        &self,
        names: [&str; N],
    ) -> Result<[Option<&'a [u8]>; N], FormError> {
        let mut found = [None; N];
        for (raw_name, raw_value) in self.pairs() {
            check(raw_name)?;
            let mut wanted = false;
            for (slot, name) in found.iter_mut().zip(names) {
                if slot.is_none() && name_matches(raw_name, name)? {
                    *slot = Some(raw_value);
                    wanted = true;
                    break;
                }
            }
            if !wanted {
                check(raw_value)?;
            }
        }
        Ok(found)
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

/// Checks that `input` decodes (percent-encoding) to UTF-8, in one pass
/// and without a buffer: plain bytes go to `from_utf8` in runs, decoded
/// multi-byte sequences are collected (at most 4 bytes) and checked as
/// they complete, so the answer is exactly that of [`decode_into`].
fn check(input: &[u8]) -> Result<(), FormError> {
    if !input.contains(&b'%') {
        // `+` decodes to an ASCII space, so UTF-8 validity is unchanged.
        return core::str::from_utf8(input)
            .map(|_| ())
            .map_err(|_| FormError::NotUtf8);
    }
    let mut sequence = [0u8; 4];
    let mut have = 0usize;
    let mut need = 0usize;
    let mut i = 0;
    while let Some(&b) = input.get(i) {
        let byte = if b == b'%' {
            let high = input.get(i + 1).copied().and_then(hex);
            let low = input.get(i + 2).copied().and_then(hex);
            let (Some(h), Some(l)) = (high, low) else {
                return Err(FormError::BadPercentEncoding);
            };
            i += 3;
            (h << 4) | l
        } else {
            i += 1;
            if b == b'+' { b' ' } else { b }
        };
        if need == 0 {
            need = match byte {
                0x00..=0x7f => continue,
                0xc2..=0xdf => 2,
                0xe0..=0xef => 3,
                0xf0..=0xf4 => 4,
                _ => return Err(FormError::NotUtf8),
            };
            have = 0;
        }
        *sequence.get_mut(have).ok_or(FormError::NotUtf8)? = byte;
        have += 1;
        if have == need {
            let complete = sequence.get(..need).unwrap_or(&[]);
            core::str::from_utf8(complete).map_err(|_| FormError::NotUtf8)?;
            need = 0;
        }
    }
    if need == 0 {
        Ok(())
    } else {
        Err(FormError::NotUtf8)
    }
}

fn name_matches(raw: &[u8], wanted: &str) -> Result<bool, FormError> {
    if !raw.iter().any(is_special) {
        return Ok(raw == wanted.as_bytes());
    }
    if raw.len() < wanted.len() {
        // Decoding never makes a name longer.
        return Ok(false);
    }
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
        assert_eq!(
            form.lookup(["c_", "a", "zz", "b"]),
            Ok([Some(&b"x%26y"[..]), Some(&b"1"[..]), None, Some(&b""[..])])
        );
        assert_eq!(
            Form::new(b"a=1&junk=%zz").lookup(["a"]),
            Err(FormError::BadPercentEncoding)
        );
        assert_eq!(form.validate(), Ok(()));
        assert_eq!(
            Form::new(b"a=1&b=%G0").validate(),
            Err(FormError::BadPercentEncoding)
        );
        assert_eq!(Form::new(b"a=%C3").validate(), Err(FormError::NotUtf8));
        // Long values, and characters split over several escapes.
        let long = alloc::format!("v={}", "a%C3%A9%E2%82%AC".repeat(40));
        assert_eq!(Form::new(long.as_bytes()).validate(), Ok(()));
        let broken = alloc::format!("v={}%C3", "a%C3%A9".repeat(60));
        assert_eq!(
            Form::new(broken.as_bytes()).validate(),
            Err(FormError::NotUtf8)
        );
        // Literal multi-byte characters.
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
        fn prop_check_is_exactly_utf8_validity(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            // Every byte escaped, or some left literal: the verdict must be
            // that of `str::from_utf8` on the decoded bytes.
            let mut encoded = String::new();
            for (i, b) in bytes.iter().enumerate() {
                if i % 3 == 0 {
                    encoded.push_str(&alloc::format!("%{b:02x}"));
                } else {
                    encoded.push_str(&alloc::format!("%{b:02X}"));
                }
            }
            let expected = core::str::from_utf8(&bytes).is_ok();
            prop_assert_eq!(check(encoded.as_bytes()).is_ok(), expected);
            // And with literal bytes where allowed.
            let mut mixed = alloc::vec::Vec::new();
            for (i, b) in bytes.iter().enumerate() {
                if i % 2 == 0 && !matches!(*b, b'%' | b'+') {
                    mixed.push(*b);
                } else {
                    mixed.extend_from_slice(alloc::format!("%{b:02X}").as_bytes());
                }
            }
            mixed.extend_from_slice(b"%41");
            prop_assert_eq!(check(&mixed).is_ok(), expected);
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
            // `lookup` plus decoding what it returns agrees with `validate`.
            let looked_up = form.lookup(["ssid", "a"]).and_then(|values| {
                let mut buf = [0u8; 256];
                for raw in values.into_iter().flatten() {
                    decode_into(raw, &mut buf)?;
                }
                Ok(())
            });
            prop_assert_eq!(looked_up.is_ok(), valid.is_ok());
            let _ = form.get("ssid", &mut [0u8; 8]);
            let _: Vec<_> = form.pairs().collect();
        }
    }
}
