//! [`Payload`]: the user's data, as JSON text, borrowed from the frame.

use core::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::json_check::PayloadError;

/// The user's data: one JSON value as UTF-8 text, at most
/// [`MAX_PAYLOAD_LEN`](crate::MAX_PAYLOAD_LEN) bytes, borrowed (never copied)
/// from the frame it was decoded from.
///
/// Devices fill it with `serde_json_core::to_slice(&value, &mut buf)` (no
/// allocation) and read commands with `serde_json_core::from_slice`. In the
/// binary encoding it travels as a byte string; in the JSON encoding it is
/// embedded as the JSON value itself (not quoted, not base64), so the server
/// forwards it to browsers without knowing its Rust type.
///
/// The decoders check only the length (and the JSON decoder the syntax): a
/// server must call [`check`](Self::check) before storing or forwarding a
/// payload it got from a device or a receiver. The JSON encoder refuses
/// payloads that are not one JSON value
/// ([`EncodeError::PayloadNotJson`](crate::EncodeError::PayloadNotJson)).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Payload<'a>(pub &'a [u8]);

impl<'a> Payload<'a> {
    /// JSON `null`: the result of a command that has nothing to report.
    pub const NULL: Payload<'static> = Payload(b"null");

    /// A payload holding this JSON text.
    pub const fn from_json_str(json: &'a str) -> Self {
        Payload(json.as_bytes())
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &'a [u8] {
        self.0
    }

    /// The text, if it is UTF-8 (which every JSON payload is).
    pub fn as_str(&self) -> Option<&'a str> {
        core::str::from_utf8(self.0).ok()
    }

    /// Length in bytes.
    pub const fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the payload is empty (an empty payload is not JSON).
    pub const fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Checks the payload rule of `docs/protocol.md` section 2: exactly one
    /// JSON value (UTF-8, RFC 8259), nothing before or after it, not even
    /// whitespace, nested at most [`MAX_PAYLOAD_DEPTH`](crate::MAX_PAYLOAD_DEPTH)
    /// deep, no unpaired surrogate escape (`"\ud800"`), no number that
    /// overflows a double (`1e400`): what every strict JSON reader accepts.
    ///
    /// One pass, no recursion (deep nesting cannot overflow the stack), no
    /// allocation, no floating point: devices can use it too.
    ///
    /// ```
    /// use tether_proto::{Payload, PayloadError};
    /// assert_eq!(Payload::from_json_str(r#"{"celsius":21.5}"#).check(), Ok(()));
    /// assert_eq!(Payload::from_json_str("1e400").check(), Err(PayloadError::NumberOutOfRange));
    /// assert_eq!(Payload::from_json_str(r#""\ud800""#).check(), Err(PayloadError::UnpairedSurrogate));
    /// ```
    pub fn check(&self) -> Result<(), PayloadError> {
        crate::json_check::check(self.0)
    }

    /// [`check`](Self::check), with the encoders' error.
    pub fn check_json(&self) -> Result<(), crate::EncodeError> {
        self.check().map_err(|_| crate::EncodeError::PayloadNotJson)
    }

    #[cfg(feature = "std")]
    fn raw_json(&self) -> Option<&'a serde_json::value::RawValue> {
        let raw: &serde_json::value::RawValue = serde_json::from_slice(self.0).ok()?;
        // `RawValue` leaves out surrounding whitespace; refuse it so the bytes
        // survive a trip through JSON unchanged.
        (raw.get().len() == self.0.len()).then_some(raw)
    }
}

impl fmt::Debug for Payload<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_str() {
            Some(text) => write!(f, "Payload({text})"),
            None => write!(f, "Payload({:02x?})", self.0),
        }
    }
}

impl Serialize for Payload<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serialize_json(self, serializer)
        } else {
            serializer.serialize_bytes(self.0)
        }
    }
}

#[cfg(feature = "std")]
fn serialize_json<S: Serializer>(payload: &Payload<'_>, serializer: S) -> Result<S::Ok, S::Error> {
    match payload.raw_json() {
        Some(raw) => raw.serialize(serializer),
        None => Err(serde::ser::Error::custom("payload is not one JSON value")),
    }
}

#[cfg(not(feature = "std"))]
fn serialize_json<S: Serializer>(_: &Payload<'_>, _: S) -> Result<S::Ok, S::Error> {
    Err(serde::ser::Error::custom(
        "tether-proto: JSON payloads need the `std` feature",
    ))
}

impl<'de: 'a, 'a> Deserialize<'de> for Payload<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            deserialize_json(deserializer)
        } else {
            <&'de [u8]>::deserialize(deserializer).map(Payload)
        }
    }
}

#[cfg(feature = "std")]
fn deserialize_json<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Payload<'de>, D::Error> {
    <&'de serde_json::value::RawValue>::deserialize(deserializer)
        .map(|raw| Payload(raw.get().as_bytes()))
}

#[cfg(not(feature = "std"))]
fn deserialize_json<'de, D: Deserializer<'de>>(_: D) -> Result<Payload<'de>, D::Error> {
    Err(serde::de::Error::custom(
        "tether-proto: JSON payloads need the `std` feature",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors() {
        let payload = Payload::from_json_str("[1,2]");
        assert_eq!(payload.as_bytes(), b"[1,2]");
        assert_eq!(payload.as_str(), Some("[1,2]"));
        assert_eq!(payload.len(), 5);
        assert!(!payload.is_empty());
        assert_eq!(Payload(&[0xff]).as_str(), None);
        assert_eq!(Payload::NULL.as_str(), Some("null"));
    }

    #[test]
    fn debug_shows_text_or_bytes() {
        extern crate alloc;
        use alloc::format;
        assert_eq!(format!("{:?}", Payload::NULL), "Payload(null)");
        assert_eq!(format!("{:?}", Payload(&[0xff, 1])), "Payload([ff, 01])");
    }
}
