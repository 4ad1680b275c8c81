//! The two encodings of the envelope: binary (a version byte, then postcard)
//! and JSON (`{"v":1,"<kind>":{…}}`).

use serde::{Deserialize, Serialize};

use crate::device::{DeviceToServer, ServerToDevice};
use crate::error::{DecodeError, EncodeError, FieldError};
use crate::receiver::{ReceiverToServer, ServerToReceiver};

/// The protocol version this crate speaks: the first byte of every binary
/// frame and the `"v"` member of every JSON message.
pub const PROTOCOL_VERSION: u8 = 1;

/// What the generic encode and decode functions need of a message enum.
pub(crate) trait Wire<'a>: Serialize + Deserialize<'a> {
    /// The JSON member names of the kinds, indexed by postcard discriminant.
    const KINDS: &'static [&'static str];
    fn check(&self) -> Result<(), FieldError>;
    /// Reads extension fields (`docs/protocol.md` section 8) from the bytes
    /// after the message's first-version fields; messages without any call
    /// them trailing bytes.
    fn extend(&mut self, rest: &'a [u8]) -> Result<(), DecodeError> {
        crate::extension::none(rest)
    }
}

pub(crate) fn encode<'b, M: Serialize>(
    message: &M,
    checked: Result<(), FieldError>,
    buf: &'b mut [u8],
) -> Result<&'b [u8], EncodeError> {
    checked?;
    let (version, body) = buf.split_first_mut().ok_or(EncodeError::BufferTooSmall)?;
    *version = PROTOCOL_VERSION;
    let len = postcard::to_slice(message, body)
        .map_err(|_| EncodeError::BufferTooSmall)?
        .len();
    buf.get(..len + 1).ok_or(EncodeError::BufferTooSmall)
}

pub(crate) fn encoded_len<M: Serialize>(message: &M) -> usize {
    // Counting cannot fail: `Size` never refuses a byte and every field
    // serializes.
    postcard::serialize_with_flavor(message, postcard::ser_flavors::Size::default())
        .map_or(0, |len| len + 1)
}

pub(crate) fn decode<'a, M: Wire<'a>>(bytes: &'a [u8]) -> Result<M, DecodeError> {
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Truncated)?;
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion { found: version });
    }
    let (kind, _) = postcard::take_from_bytes::<u32>(body).map_err(from_postcard)?;
    if usize::try_from(kind).map_or(true, |kind| kind >= M::KINDS.len()) {
        return Err(DecodeError::UnknownMessage);
    }
    let (mut message, rest) = postcard::take_from_bytes::<M>(body).map_err(from_postcard)?;
    message.extend(rest)?;
    // postcard accepts over-long varints (`80 00` for 0). Every message has
    // exactly one encoding: re-encode against the input, without a buffer.
    postcard::serialize_with_flavor(&message, Compare { expected: body })
        .map_err(|_| DecodeError::Malformed)?;
    message.check()?;
    Ok(message)
}

fn from_postcard(error: postcard::Error) -> DecodeError {
    match error {
        postcard::Error::DeserializeUnexpectedEnd => DecodeError::Truncated,
        _ => DecodeError::Malformed,
    }
}

/// A postcard "output" that checks each byte against the expected encoding.
struct Compare<'a> {
    expected: &'a [u8],
}

impl postcard::ser_flavors::Flavor for Compare<'_> {
    type Output = ();

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        match self.expected.split_first() {
            Some((&first, rest)) if first == byte => {
                self.expected = rest;
                Ok(())
            }
            _ => Err(postcard::Error::SerializeBufferFull),
        }
    }

    fn finalize(self) -> postcard::Result<()> {
        if self.expected.is_empty() {
            Ok(())
        } else {
            Err(postcard::Error::SerializeBufferFull)
        }
    }
}

#[cfg(feature = "std")]
pub(crate) mod json {
    //! The JSON envelope: `{"v":1,"<kind>":<body>}`, members in any order.

    use alloc::string::String;
    use core::fmt;

    use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
    use serde::{Deserialize, Deserializer, Serialize};
    use serde_json::value::RawValue;

    use super::{PROTOCOL_VERSION, Wire};
    use crate::error::{DecodeError, EncodeError, FieldError};

    pub(crate) fn encode<M: Serialize>(
        message: &M,
        checked: Result<(), FieldError>,
    ) -> Result<String, EncodeError> {
        checked?;
        // serde_json writes the externally tagged `{"kind":{…}}`; the only
        // way that fails is a payload that is not JSON.
        let body = serde_json::to_string(message).map_err(|_| EncodeError::PayloadNotJson)?;
        let inner = body.strip_prefix('{').ok_or(EncodeError::PayloadNotJson)?;
        Ok(alloc::format!("{{\"v\":{PROTOCOL_VERSION},{inner}"))
    }

    pub(crate) fn decode<'a, M: Wire<'a>>(text: &'a str) -> Result<M, DecodeError> {
        let envelope: Envelope<'a> = serde_json::from_str(text).map_err(from_json)?;
        let version = envelope.version.ok_or(DecodeError::Malformed)?;
        if version != u64::from(PROTOCOL_VERSION) {
            return Err(DecodeError::UnsupportedVersion {
                found: u8::try_from(version).unwrap_or(u8::MAX),
            });
        }
        let (kind, body) = envelope.message.ok_or(DecodeError::Malformed)?;
        if !M::KINDS.contains(&kind) {
            return Err(DecodeError::UnknownMessage);
        }
        let mut body = serde_json::Deserializer::from_str(body.get());
        let message = M::deserialize(KindDeserializer {
            kind,
            body: &mut body,
        })
        .map_err(from_json)?;
        message.check()?;
        Ok(message)
    }

    fn from_json(error: serde_json::Error) -> DecodeError {
        if error.is_eof() {
            DecodeError::Truncated
        } else {
            DecodeError::Malformed
        }
    }

    /// The envelope with the body left unparsed.
    struct Envelope<'a> {
        version: Option<u64>,
        message: Option<(&'a str, &'a RawValue)>,
    }

    impl<'de> Deserialize<'de> for Envelope<'de> {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_map(EnvelopeVisitor)
        }
    }

    struct EnvelopeVisitor;

    impl<'de> Visitor<'de> for EnvelopeVisitor {
        type Value = Envelope<'de>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a tether message object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope<'de>, A::Error> {
            let mut envelope = Envelope {
                version: None,
                message: None,
            };
            while let Some(key) = map.next_key::<&'de str>()? {
                if key == "v" {
                    if envelope.version.is_some() {
                        return Err(de::Error::duplicate_field("v"));
                    }
                    envelope.version = Some(map.next_value()?);
                } else {
                    if envelope.message.is_some() {
                        return Err(de::Error::custom("more than one message kind"));
                    }
                    envelope.message = Some((key, map.next_value()?));
                }
            }
            Ok(envelope)
        }
    }

    /// Presents `(kind, body)` to a derived externally tagged enum as if it
    /// were `{"kind": body}`.
    struct KindDeserializer<'a, 'de> {
        kind: &'de str,
        body: &'a mut serde_json::Deserializer<serde_json::de::StrRead<'de>>,
    }

    impl<'de> Deserializer<'de> for KindDeserializer<'_, 'de> {
        type Error = serde_json::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("expected a message enum"))
        }

        fn deserialize_enum<V: Visitor<'de>>(
            self,
            _name: &'static str,
            _variants: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, Self::Error> {
            visitor.visit_enum(self)
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map struct identifier ignored_any
        }
    }

    impl<'a, 'de> de::EnumAccess<'de> for KindDeserializer<'a, 'de> {
        type Error = serde_json::Error;
        type Variant = Self;

        fn variant_seed<S: DeserializeSeed<'de>>(
            self,
            seed: S,
        ) -> Result<(S::Value, Self), Self::Error> {
            let kind = seed.deserialize(de::value::BorrowedStrDeserializer::<Self::Error>::new(
                self.kind,
            ))?;
            Ok((kind, self))
        }
    }

    impl<'de> de::VariantAccess<'de> for KindDeserializer<'_, 'de> {
        type Error = serde_json::Error;

        fn unit_variant(self) -> Result<(), Self::Error> {
            IgnoredAny::deserialize(&mut *self.body).map(|_| ())
        }

        fn newtype_variant_seed<S: DeserializeSeed<'de>>(
            self,
            seed: S,
        ) -> Result<S::Value, Self::Error> {
            seed.deserialize(&mut *self.body)
        }

        fn tuple_variant<V: Visitor<'de>>(
            self,
            len: usize,
            visitor: V,
        ) -> Result<V::Value, Self::Error> {
            self.body.deserialize_tuple(len, visitor)
        }

        fn struct_variant<V: Visitor<'de>>(
            self,
            fields: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, Self::Error> {
            self.body.deserialize_struct("", fields, visitor)
        }
    }
}

/// Adds the codec methods to a message enum.
macro_rules! message_codec {
    ($message:ident, [$($kind:literal),+ $(,)?] $(, extension = $extension:path)?) => {
        message_codec!($message, [$($kind),+] $(, extension = $extension)?, decode = decode);
    };
    (
        $message:ident,
        [$($kind:literal),+ $(,)?]
        $(, extension = $extension:path)?,
        decode = $decode:path
    ) => {
        impl<'a> Wire<'a> for $message<'a> {
            const KINDS: &'static [&'static str] = &[$($kind),+];
            fn check(&self) -> Result<(), FieldError> {
                self.validate()
            }
            $(
                fn extend(&mut self, rest: &'a [u8]) -> Result<(), DecodeError> {
                    $extension(self, rest)
                }
            )?
        }

        impl<'a> $message<'a> {
            /// Encodes the message as a binary frame (the version byte, then
            /// postcard) into `buf`, and returns the bytes written.
            pub fn encode<'b>(&self, buf: &'b mut [u8]) -> Result<&'b [u8], EncodeError> {
                encode(self, self.validate(), buf)
            }

            /// The length of [`encode`](Self::encode)'s output, in bytes.
            pub fn encoded_len(&self) -> usize {
                encoded_len(self)
            }

            /// Decodes a binary frame, borrowing strings and payloads from
            /// `bytes`. Rejects anything [`encode`](Self::encode) would not
            /// produce.
            pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
                $decode(bytes)
            }

            /// Encodes the message as a binary frame into a new `Vec`.
            #[cfg(feature = "alloc")]
            pub fn encode_to_vec(&self) -> Result<alloc::vec::Vec<u8>, EncodeError> {
                let mut buf = alloc::vec![0; self.encoded_len()];
                let len = self.encode(&mut buf)?.len();
                buf.truncate(len);
                Ok(buf)
            }

            /// Encodes the message as a JSON text frame:
            /// `{"v":1,"<kind>":{…}}`.
            #[cfg(feature = "std")]
            pub fn to_json(&self) -> Result<alloc::string::String, EncodeError> {
                json::encode(self, self.validate())
            }

            /// Decodes a JSON text frame, borrowing strings and payloads from
            /// `text`. Members may come in any order; unknown members inside
            /// a message are ignored.
            #[cfg(feature = "std")]
            pub fn from_json(text: &'a str) -> Result<Self, DecodeError> {
                json::decode(text)
            }
        }
    };
}

message_codec!(
    DeviceToServer,
    [
        "hello",
        "publish",
        "command_ack",
        "describe_channel",
        "describe_command",
        "status"
    ],
    extension = crate::device::decode_extension
);
// What devices decode, written out for code size (same bytes, same errors).
message_codec!(
    ServerToDevice,
    ["welcome", "ack", "command"],
    decode = crate::compact::decode_server_to_device
);
message_codec!(
    ReceiverToServer,
    ["subscribe", "unsubscribe", "send_command", "ping"],
    extension = crate::receiver::decode_receiver_extension
);
message_codec!(
    ServerToReceiver,
    [
        "subscribed",
        "event",
        "command_result",
        "error",
        "pong",
        "description"
    ],
    extension = crate::receiver::decode_server_extension
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Ack, ServerToDevice};

    #[test]
    fn compare_flavor_accepts_only_the_exact_encoding() {
        let ack = ServerToDevice::Ack(Ack { seq: 300 });
        let exact = [1, 0xac, 0x02];
        let check =
            |expected: &[u8]| postcard::serialize_with_flavor(&ack, Compare { expected }).is_ok();
        assert!(check(&exact));
        assert!(!check(&exact[..2]), "too short");
        assert!(!check(&[1, 0xac, 0x02, 0]), "too long");
        assert!(!check(&[1, 0xac, 0x82, 0x00]), "non-minimal");
    }

    #[test]
    fn encoded_len_counts_the_version_byte() {
        let ack = ServerToDevice::Ack(Ack { seq: 300 });
        assert_eq!(ack.encoded_len(), 4);
        let mut buf = [0u8; 4];
        assert_eq!(ack.encode(&mut buf), Ok(&[1, 1, 0xac, 0x02][..]));
    }

    #[test]
    fn kinds_follow_the_discriminants() {
        // The JSON name table and the enums must agree; JSON round trips in
        // tests/roundtrip.rs cover every kind, this pins the count.
        assert_eq!(<ServerToDevice<'_> as Wire<'_>>::KINDS.len(), 3);
        assert_eq!(<crate::DeviceToServer<'_> as Wire<'_>>::KINDS.len(), 6);
        assert_eq!(<crate::ReceiverToServer<'_> as Wire<'_>>::KINDS.len(), 4);
        assert_eq!(<crate::ServerToReceiver<'_> as Wire<'_>>::KINDS.len(), 6);
    }
}
