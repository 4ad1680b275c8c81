//! The documented bounds of every string and byte field, and the character
//! sets of names. Both encoders and both decoders enforce them.
//!
//! Every string field is ASCII without control characters, `"` or `\`, so it
//! never needs escaping in JSON and borrows straight out of the frame.

use crate::error::{Field, FieldError};

/// Maximum length of a device id, in bytes.
pub const MAX_DEVICE_ID_LEN: usize = 64;
/// Maximum length of a channel name, in bytes.
pub const MAX_CHANNEL_LEN: usize = 64;
/// Maximum length of `Hello.firmware_version`, in bytes.
pub const MAX_FIRMWARE_VERSION_LEN: usize = 32;
/// Maximum length of a payload or command result (JSON text), in bytes.
pub const MAX_PAYLOAD_LEN: usize = 4096;
/// Maximum length of `Error.message`, in bytes.
pub const MAX_MESSAGE_LEN: usize = 256;

/// Checks a channel name: 1 to [`MAX_CHANNEL_LEN`] bytes of ASCII letters,
/// digits, `_`, `-`, `.` and `/`, where `/` separates non-empty segments (no
/// leading, trailing or doubled `/`). Example: `sensors/kitchen.temp`.
pub fn validate_channel(name: &str) -> Result<(), FieldError> {
    let field = Field::Channel;
    check_len(name, MAX_CHANNEL_LEN, field)?;
    // One pass: a `/` only after a byte that is not one, starting as if
    // after one (no leading `/`) and ending on a byte that is not one (no
    // trailing `/`, not empty). Five passes (`starts_with`, `ends_with`,
    // `windows`, `all`) were 146 B on the ESP32-C3.
    let mut previous = b'/';
    for b in name.bytes() {
        let segment_byte = b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.');
        if !segment_byte && (b != b'/' || previous == b'/') {
            return Err(FieldError::Invalid(field));
        }
        previous = b;
    }
    if previous == b'/' {
        return Err(FieldError::Invalid(field));
    }
    Ok(())
}

/// Checks a device id: 1 to [`MAX_DEVICE_ID_LEN`] bytes of ASCII letters,
/// digits, `_`, `-`, `.` and `:` (so a MAC address such as `a4:cf:12:05:9e:01`
/// is a valid id).
pub fn validate_device_id(id: &str) -> Result<(), FieldError> {
    let field = Field::DeviceId;
    check_len(id, MAX_DEVICE_ID_LEN, field)?;
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
    {
        return Err(FieldError::Invalid(field));
    }
    Ok(())
}

/// Checks a firmware version: 1 to [`MAX_FIRMWARE_VERSION_LEN`] bytes of
/// printable ASCII (0x20..=0x7E) except `"` and `\`. One copy of the check
/// for `Hello` and for a device's configuration.
pub fn validate_firmware_version(version: &str) -> Result<(), FieldError> {
    validate_text(
        version,
        MAX_FIRMWARE_VERSION_LEN,
        true,
        Field::FirmwareVersion,
    )
}

/// Checks free text (`firmware_version`, `Error.message`): printable ASCII
/// (0x20..=0x7E) except `"` and `\`, at most `max` bytes, and not empty when
/// `required`.
pub(crate) fn validate_text(
    text: &str,
    max: usize,
    required: bool,
    field: Field,
) -> Result<(), FieldError> {
    check_len(text, max, field)?;
    if (required && text.is_empty())
        || !text
            .bytes()
            .all(|b| matches!(b, 0x20..=0x7E) && b != b'"' && b != b'\\')
    {
        return Err(FieldError::Invalid(field));
    }
    Ok(())
}

fn check_len(text: &str, max: usize, field: Field) -> Result<(), FieldError> {
    if text.len() > max {
        Err(FieldError::TooLong(field))
    } else {
        Ok(())
    }
}

/// Bytes a postcard varint of `value` takes.
pub(crate) const fn varint_len(mut value: u64) -> usize {
    let mut len = 1;
    while value >= 0x80 {
        value >>= 7;
        len += 1;
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The channel rule as written in its documentation.
    fn channel_rule(name: &str) -> bool {
        !name.is_empty()
            && !name.starts_with('/')
            && !name.ends_with('/')
            && !name.contains("//")
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'))
    }

    proptest! {
        #[test]
        fn channel_check_is_the_documented_rule(name in "[a-z/._:#-]{0,12}|\\PC{0,6}") {
            let expected = if name.len() > MAX_CHANNEL_LEN {
                Err(FieldError::TooLong(Field::Channel))
            } else if channel_rule(&name) {
                Ok(())
            } else {
                Err(FieldError::Invalid(Field::Channel))
            };
            prop_assert_eq!(validate_channel(&name), expected);
        }
    }

    #[test]
    fn channel_names() {
        for good in ["t", "temp", "sensors/kitchen.temp", "a-b_c.d/e", "X9"] {
            assert_eq!(validate_channel(good), Ok(()), "{good}");
        }
        let long = "a".repeat(MAX_CHANNEL_LEN + 1);
        assert_eq!(
            validate_channel(&long),
            Err(FieldError::TooLong(Field::Channel))
        );
        assert_eq!(validate_channel(&long[1..]), Ok(()));
        for bad in ["", "/a", "a/", "a//b", "a b", "ä", "a\"", "a\\b", "a\n"] {
            assert_eq!(
                validate_channel(bad),
                Err(FieldError::Invalid(Field::Channel)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn device_ids() {
        for good in ["kitchen-1", "a4:cf:12:05:9e:01", "dev_1.2"] {
            assert_eq!(validate_device_id(good), Ok(()), "{good}");
        }
        for bad in ["", "a/b", "a b", "é"] {
            assert_eq!(
                validate_device_id(bad),
                Err(FieldError::Invalid(Field::DeviceId)),
                "{bad:?}"
            );
        }
        let long = "a".repeat(MAX_DEVICE_ID_LEN + 1);
        assert_eq!(
            validate_device_id(&long),
            Err(FieldError::TooLong(Field::DeviceId))
        );
    }

    #[test]
    fn text() {
        let f = Field::Message;
        assert_eq!(validate_text("", 4, false, f), Ok(()));
        assert_eq!(validate_text("", 4, true, f), Err(FieldError::Invalid(f)));
        assert_eq!(validate_text("1.0 (x)", 8, true, f), Ok(()));
        assert_eq!(
            validate_text("12345", 4, true, f),
            Err(FieldError::TooLong(f))
        );
        for bad in ["\"", "\\", "\u{7f}", "\t", "é"] {
            assert_eq!(validate_text(bad, 4, true, f), Err(FieldError::Invalid(f)));
        }
    }

    #[test]
    fn varint_lengths() {
        assert_eq!(varint_len(0), 1);
        assert_eq!(varint_len(127), 1);
        assert_eq!(varint_len(128), 2);
        assert_eq!(varint_len(u64::from(u32::MAX)), 5);
        assert_eq!(varint_len(u64::MAX), 10);
    }
}
