//! Incremental UTF-8 validation of text split across fragments (RFC 6455
//! 8.1): `core::str::from_utf8` on each piece, carrying an unfinished code
//! point (at most three bytes) to the next piece.

use super::error::ProtocolError;

/// Validates UTF-8 fed in arbitrary pieces, failing as soon as a piece
/// cannot be the start of valid text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Utf8Validator {
    carry: [u8; 4],
    carry_len: usize,
}

impl Utf8Validator {
    /// A validator at the start of a message.
    pub const fn new() -> Self {
        Self {
            carry: [0; 4],
            carry_len: 0,
        }
    }

    /// Validates the next piece.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), ProtocolError> {
        // Finish the code point carried over from the last piece first.
        while self.carry_len > 0 {
            let Some((first, rest)) = bytes.split_first() else {
                return Ok(());
            };
            let Some(slot) = self.carry.get_mut(self.carry_len) else {
                return Err(ProtocolError::InvalidUtf8);
            };
            *slot = *first;
            self.carry_len += 1;
            bytes = rest;
            let carried = self.carry.get(..self.carry_len).unwrap_or_default();
            match core::str::from_utf8(carried) {
                Ok(_) => self.carry_len = 0,
                Err(e) if e.error_len().is_some() => return Err(ProtocolError::InvalidUtf8),
                Err(_) => {}
            }
        }
        match core::str::from_utf8(bytes) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(ProtocolError::InvalidUtf8),
            Err(e) => {
                // An unfinished code point at the end: at most three bytes.
                let tail = bytes.get(e.valid_up_to()..).unwrap_or_default();
                let Some(dst) = self.carry.get_mut(..tail.len()) else {
                    return Err(ProtocolError::InvalidUtf8);
                };
                dst.copy_from_slice(tail);
                self.carry_len = tail.len();
                Ok(())
            }
        }
    }

    /// Checks that the text does not end inside a code point.
    pub fn finish(&self) -> Result<(), ProtocolError> {
        if self.carry_len == 0 {
            Ok(())
        } else {
            Err(ProtocolError::InvalidUtf8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn validate_in_pieces(bytes: &[u8], cuts: &[usize]) -> Result<(), ProtocolError> {
        let mut validator = Utf8Validator::new();
        let mut start = 0;
        for &cut in cuts {
            let cut = cut.clamp(start, bytes.len());
            validator.feed(&bytes[start..cut])?;
            start = cut;
        }
        validator.feed(&bytes[start..])?;
        validator.finish()
    }

    #[test]
    fn splits_inside_code_points() {
        let text = "aé€😀z".as_bytes();
        for a in 0..=text.len() {
            for b in a..=text.len() {
                assert_eq!(validate_in_pieces(text, &[a, b]), Ok(()), "{a} {b}");
            }
        }
    }

    #[test]
    fn rejects_invalid_and_truncated_text() {
        assert_eq!(
            validate_in_pieces(&[0xE2, 0x82], &[1]),
            Err(ProtocolError::InvalidUtf8)
        );
        assert_eq!(
            validate_in_pieces(&[0xE2, 0x28, 0xA1], &[1]),
            Err(ProtocolError::InvalidUtf8)
        );
        // Surrogates and overlong forms are invalid even when split.
        assert_eq!(
            validate_in_pieces(&[0xED, 0xA0, 0x80], &[1, 2]),
            Err(ProtocolError::InvalidUtf8)
        );
        assert_eq!(
            validate_in_pieces(&[0xC0, 0x80], &[1]),
            Err(ProtocolError::InvalidUtf8)
        );
        // Fails fast: the first bad piece is reported before the end.
        let mut validator = Utf8Validator::new();
        assert_eq!(validator.feed(&[0xF0, 0x9F]), Ok(()));
        assert_eq!(validator.feed(&[0x41]), Err(ProtocolError::InvalidUtf8));
    }

    proptest! {
        #[test]
        fn agrees_with_from_utf8(
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
            cuts in proptest::collection::vec(0usize..64, 0..6),
        ) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let expected = core::str::from_utf8(&bytes).is_ok();
            prop_assert_eq!(validate_in_pieces(&bytes, &cuts).is_ok(), expected);
        }

        #[test]
        fn accepts_any_split_text(text in "\\PC{0,24}", cuts in proptest::collection::vec(0usize..100, 0..6)) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            prop_assert_eq!(validate_in_pieces(text.as_bytes(), &cuts), Ok(()));
        }
    }
}
