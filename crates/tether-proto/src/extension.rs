//! Extension fields (`docs/protocol.md` section 8): an optional field added
//! at the end of a message without a new protocol version.
//!
//! - Binary: the value follows the message's last field as it would
//!   anywhere else, but with no option tag; when absent the message simply
//!   ends there. So a message without it is byte for byte the older
//!   version's message, and a decoder that knows the field reads it from
//!   the bytes that would otherwise be trailing.
//! - JSON: a member, left out when absent (so again the older message), and
//!   `null` is read as absent.
//!
//! Fields use `#[serde(default, skip_serializing_if = "Option::is_none",
//! with = "crate::extension")]`; the derived binary deserializer then reads
//! nothing for them, and the codec calls [`read`] on the rest of the frame.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::DecodeError;

/// Writes the value bare (no option tag); `None` is skipped by the field's
/// `skip_serializing_if` and never gets here.
pub(crate) fn serialize<T: Serialize, S: Serializer>(
    value: &Option<T>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => value.serialize(serializer),
        None => serializer.serialize_none(),
    }
}

/// JSON: the member's value (`null`: absent). Binary: nothing is read here;
/// the codec reads the field after the message (see [`read`]).
pub(crate) fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    if deserializer.is_human_readable() {
        Option::<T>::deserialize(deserializer)
    } else {
        Ok(None)
    }
}

/// Reads one extension field from `rest`, the bytes after a binary
/// message's first-version fields: nothing there means absent; otherwise
/// the value must fill `rest` exactly.
pub(crate) fn read<'a, T: Deserialize<'a>>(
    rest: &'a [u8],
    field: &mut Option<T>,
) -> Result<(), DecodeError> {
    if rest.is_empty() {
        return Ok(());
    }
    let (value, after) = postcard::take_from_bytes::<T>(rest).map_err(|error| match error {
        postcard::Error::DeserializeUnexpectedEnd => DecodeError::Truncated,
        _ => DecodeError::Malformed,
    })?;
    if !after.is_empty() {
        return Err(DecodeError::TrailingBytes);
    }
    *field = Some(value);
    Ok(())
}

/// For messages without extension fields: any bytes after them are
/// trailing bytes.
pub(crate) fn none(rest: &[u8]) -> Result<(), DecodeError> {
    if rest.is_empty() {
        Ok(())
    } else {
        Err(DecodeError::TrailingBytes)
    }
}
