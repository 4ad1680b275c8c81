//! The device's half of the binary codec, written out by hand: encoding
//! [`Hello`], [`Publish`] and [`CommandAck`] (and the announcements
//! [`DescribeChannel`], [`DescribeCommand`] and [`Status`]), decoding
//! [`ServerToDevice`].
//!
//! The bytes are postcard's, exactly: the generic codec (`codec.rs`, serde
//! and postcard) stays the reference, used by the server and by every other
//! message, and the tests hold the two to the same output and the same
//! errors on any input. Written out because a device links only these four
//! paths, and serde's derived visitors, postcard's serializer and the
//! re-encoding that refuses non-canonical input took 4 KB of `.text` on the
//! ESP32-C3 where these take under one (`cargo xtask size`; see "Code
//! size" in `docs/performance.md`). The canonical check happens in place:
//! a varint of more than one byte that ends in a zero byte is over-long,
//! the only way a postcard encoding of these messages can differ from the
//! canonical one.
//!
//! Layout (postcard): the version byte, the message kind as a varint, then
//! the fields in declaration order; integers above `u8` as LEB128 varints,
//! strings and byte strings as a varint length and the bytes, `Option` as a
//! tag byte (0 or 1) and the value.

use crate::codec::PROTOCOL_VERSION;
use crate::describe::{DescribeChannel, DescribeCommand, Status};
use crate::device::{Ack, Command, CommandAck, Hello, Publish, ServerToDevice};
use crate::device::{CommandStatus, Welcome};
use crate::error::{DecodeError, EncodeError};
use crate::payload::Payload;

/// Appends to a caller buffer.
struct Writer<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl<'b> Writer<'b> {
    /// A writer that starts with the version byte and the message kind.
    fn new(buf: &'b mut [u8], kind: u8) -> Result<Self, EncodeError> {
        let header = buf.get_mut(..2).ok_or(EncodeError::BufferTooSmall)?;
        header.copy_from_slice(&[PROTOCOL_VERSION, kind]);
        Ok(Self { buf, len: 2 })
    }

    fn byte(&mut self, byte: u8) -> Result<(), EncodeError> {
        let slot = self
            .buf
            .get_mut(self.len)
            .ok_or(EncodeError::BufferTooSmall)?;
        *slot = byte;
        self.len += 1;
        Ok(())
    }

    #[inline(never)]
    fn varint(&mut self, mut value: u64) -> Result<(), EncodeError> {
        while value >= 0x80 {
            self.byte(value as u8 | 0x80)?;
            value >>= 7;
        }
        self.byte(value as u8)
    }

    #[inline(never)]
    fn bytes(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        self.varint(bytes.len() as u64)?;
        let end = self.len + bytes.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(EncodeError::BufferTooSmall)?
            .copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    fn finish(self) -> &'b [u8] {
        let Self { buf, len } = self;
        buf.get(..len).unwrap_or_default()
    }
}

impl Hello<'_> {
    /// Encodes the message as `DeviceToServer::Hello` into `buf` (the same
    /// bytes as [`DeviceToServer::encode`](crate::DeviceToServer::encode), without the generic codec).
    ///
    /// # Errors
    /// A field breaks its bounds, or `buf` is too small.
    pub fn encode<'b>(&self, buf: &'b mut [u8]) -> Result<&'b [u8], EncodeError> {
        crate::device::validate_hello(self)?;
        let mut w = Writer::new(buf, 0)?;
        w.bytes(self.device_id.as_bytes())?;
        w.bytes(self.firmware_version.as_bytes())?;
        w.varint(self.boot_id)?;
        w.varint(u64::from(self.last_acked_seq))?;
        // An extension field (`docs/protocol.md` section 8): a bare varint,
        // nothing when absent.
        if let Some(len) = self.max_downlink_len {
            w.varint(u64::from(len))?;
        }
        Ok(w.finish())
    }
}

impl Publish<'_> {
    /// Encodes the message as `DeviceToServer::Publish` into `buf` (the
    /// same bytes as [`DeviceToServer::encode`](crate::DeviceToServer::encode), without the generic codec).
    ///
    /// # Errors
    /// A field breaks its bounds, or `buf` is too small.
    pub fn encode<'b>(&self, buf: &'b mut [u8]) -> Result<&'b [u8], EncodeError> {
        crate::device::validate_publish(self)?;
        let mut w = Writer::new(buf, 1)?;
        w.varint(u64::from(self.seq))?;
        w.bytes(self.channel.as_bytes())?;
        match self.time_ms {
            None => w.byte(0)?,
            Some(time) => {
                w.byte(1)?;
                w.varint(time)?;
            }
        }
        w.bytes(self.payload.0)?;
        Ok(w.finish())
    }
}

impl CommandAck<'_> {
    /// Encodes the message as `DeviceToServer::CommandAck` into `buf` (the
    /// same bytes as [`DeviceToServer::encode`](crate::DeviceToServer::encode), without the generic codec).
    ///
    /// # Errors
    /// The result is too long, or `buf` is too small.
    pub fn encode<'b>(&self, buf: &'b mut [u8]) -> Result<&'b [u8], EncodeError> {
        crate::device::validate_payload(&self.result)?;
        let mut w = Writer::new(buf, 2)?;
        w.varint(u64::from(self.id))?;
        w.byte(match self.status {
            CommandStatus::Ok => 0,
            CommandStatus::Rejected => 1,
            CommandStatus::Failed => 2,
            CommandStatus::Unsupported => 3,
        })?;
        w.bytes(self.result.0)?;
        Ok(w.finish())
    }
}

/// The bytes of a varint length and `len` bytes.
const fn prefixed_len(len: usize) -> usize {
    let mut bytes = 1;
    let mut rest = len >> 7;
    while rest > 0 {
        bytes += 1;
        rest >>= 7;
    }
    len.saturating_add(bytes)
}

impl DescribeChannel<'_> {
    /// The length of [`encode`](Self::encode)'s output (for a valid
    /// message), without encoding it.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        2 + prefixed_len(self.channel.len()) + prefixed_len(self.fields.json_len())
    }

    /// Encodes the message as `DeviceToServer::DescribeChannel` into `buf`
    /// (the same bytes as [`DeviceToServer::encode`](crate::DeviceToServer::encode), without the generic
    /// codec): the field list's JSON text streams into `buf` as it is
    /// written.
    ///
    /// # Errors
    /// A field breaks its bounds, or `buf` is too small.
    pub fn encode<'b>(&self, buf: &'b mut [u8]) -> Result<&'b [u8], EncodeError> {
        self.validate()?;
        let mut w = Writer::new(buf, 3)?;
        w.bytes(self.channel.as_bytes())?;
        // `validate` refused a list whose text cannot be written.
        w.varint(self.fields.json_len() as u64)?;
        let mut failed = None;
        let _ = self.fields.for_each_byte(|b| match w.byte(b) {
            Ok(()) => true,
            Err(error) => {
                failed = Some(error);
                false
            }
        });
        match failed {
            Some(error) => Err(error),
            None => Ok(w.finish()),
        }
    }
}

impl DescribeCommand<'_> {
    /// The length of [`encode`](Self::encode)'s output (for a valid
    /// message), without encoding it.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        2 + prefixed_len(self.channel.len())
            + prefixed_len(self.label.len())
            + prefixed_len(self.example.0.len())
    }

    /// Encodes the message as `DeviceToServer::DescribeCommand` into `buf`
    /// (the same bytes as [`DeviceToServer::encode`](crate::DeviceToServer::encode), without the generic
    /// codec).
    ///
    /// # Errors
    /// A field breaks its bounds, or `buf` is too small.
    pub fn encode<'b>(&self, buf: &'b mut [u8]) -> Result<&'b [u8], EncodeError> {
        self.validate()?;
        let mut w = Writer::new(buf, 4)?;
        w.bytes(self.channel.as_bytes())?;
        w.bytes(self.label.as_bytes())?;
        w.bytes(self.example.0)?;
        Ok(w.finish())
    }
}

impl Status {
    /// Encodes the message as `DeviceToServer::Status` into `buf` (the
    /// same bytes as [`DeviceToServer::encode`](crate::DeviceToServer::encode), without the generic
    /// codec): `rssi_dbm` as postcard's zigzag varint.
    ///
    /// # Errors
    /// The strength is out of range, or `buf` is too small.
    pub fn encode<'b>(&self, buf: &'b mut [u8]) -> Result<&'b [u8], EncodeError> {
        self.validate()?;
        let mut w = Writer::new(buf, 5)?;
        match self.rssi_dbm {
            None => w.byte(0)?,
            Some(rssi) => {
                w.byte(1)?;
                w.varint(u64::from(((rssi << 1) ^ (rssi >> 15)) as u16))?;
            }
        }
        Ok(w.finish())
    }
}

/// Reads postcard's encoding, with postcard's errors: running out of bytes
/// is [`DecodeError::Truncated`], anything else that cannot be read
/// [`DecodeError::Malformed`].
struct Reader<'a> {
    bytes: &'a [u8],
    /// An over-long varint was read: the input is not canonical. Reported
    /// after the whole message parsed, where re-encoding would notice it.
    overlong: bool,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, DecodeError> {
        let (&first, rest) = self.bytes.split_first().ok_or(DecodeError::Truncated)?;
        self.bytes = rest;
        Ok(first)
    }

    /// A varint of a `bits`-bit integer (`bits` not a multiple of 7): at
    /// most `ceil(bits / 7)` bytes, the last of which may only carry the
    /// bits that are left.
    #[inline(never)]
    fn varint(&mut self, bits: u32) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        let mut shift = 0u32;
        loop {
            let byte = self.byte()?;
            let group = u64::from(byte & 0x7F);
            if byte & 0x80 == 0 {
                // `shift < bits`: the bits left are `bits - shift`.
                if shift + 7 > bits && group >> (bits - shift) != 0 {
                    return Err(DecodeError::Malformed);
                }
                if shift > 0 && byte == 0 {
                    self.overlong = true;
                }
                return Ok(value | group << shift);
            }
            value |= group << shift;
            shift += 7;
            if shift >= bits {
                return Err(DecodeError::Malformed);
            }
        }
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        self.varint(u16::BITS).map(|v| v as u16)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.varint(u32::BITS).map(|v| v as u32)
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.varint(u64::BITS)
    }

    /// A length-prefixed byte string (postcard's lengths are `usize`).
    #[inline(never)]
    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.varint(usize::BITS)? as usize;
        if len > self.bytes.len() {
            return Err(DecodeError::Truncated);
        }
        let (taken, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(taken)
    }

    fn str(&mut self) -> Result<&'a str, DecodeError> {
        core::str::from_utf8(self.bytes()?).map_err(|_| DecodeError::Malformed)
    }
}

/// [`ServerToDevice::decode`]: postcard's decoding and the codec's
/// canonical check, written out.
pub(crate) fn decode_server_to_device(bytes: &[u8]) -> Result<ServerToDevice<'_>, DecodeError> {
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Truncated)?;
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion { found: version });
    }
    let mut r = Reader {
        bytes: body,
        overlong: false,
    };
    let message = match r.u32()? {
        0 => ServerToDevice::Welcome(Welcome {
            session_id: r.u64()?,
            server_time_ms: r.u64()?,
            last_stored_seq: r.u32()?,
            max_in_flight: r.u16()?,
        }),
        1 => ServerToDevice::Ack(Ack { seq: r.u32()? }),
        2 => ServerToDevice::Command(Command {
            id: r.u32()?,
            channel: r.str()?,
            payload: Payload(r.bytes()?),
        }),
        _ => return Err(DecodeError::UnknownMessage),
    };
    if !r.bytes.is_empty() {
        return Err(DecodeError::TrailingBytes);
    }
    if r.overlong {
        return Err(DecodeError::Malformed);
    }
    message.validate()?;
    Ok(message)
}

#[cfg(test)]
mod tests {
    extern crate alloc;

    use alloc::string::String;
    use alloc::vec;
    use alloc::vec::Vec;

    use proptest::collection;
    use proptest::prelude::*;

    use super::*;
    use crate::codec;
    use crate::device::DeviceToServer;

    /// The generic codec's decoding, the reference.
    fn reference(bytes: &[u8]) -> Result<ServerToDevice<'_>, DecodeError> {
        codec::decode::<ServerToDevice<'_>>(bytes)
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[A-Za-z0-9_.:/-]{1,16}",
            "[a-z]{64,66}",
            ".{0,8}",
            Just(String::new()),
        ]
    }

    fn number() -> impl Strategy<Value = u64> {
        prop_oneof![0..300u64, any::<u64>(), Just(u64::MAX)]
    }

    /// Valid and invalid server messages, encoded by the generic codec
    /// (which does not validate on the way in for these tests: the fields
    /// are written as postcard would).
    fn server_message() -> impl Strategy<Value = Vec<u8>> {
        (
            0u8..4,
            number(),
            number(),
            number(),
            number(),
            text(),
            collection::vec(any::<u8>(), 0..20),
        )
            .prop_map(|(kind, a, b, c, d, channel, payload)| {
                let mut out = vec![PROTOCOL_VERSION, kind];
                let varint = |out: &mut Vec<u8>, mut v: u64| {
                    while v >= 0x80 {
                        out.push(v as u8 | 0x80);
                        v >>= 7;
                    }
                    out.push(v as u8);
                };
                match kind {
                    0 => {
                        varint(&mut out, a);
                        varint(&mut out, b);
                        varint(&mut out, c & u64::from(u32::MAX));
                        varint(&mut out, d & u64::from(u16::MAX));
                    }
                    1 => varint(&mut out, a & u64::from(u32::MAX)),
                    _ => {
                        varint(&mut out, a & u64::from(u32::MAX));
                        varint(&mut out, channel.len() as u64);
                        out.extend_from_slice(channel.as_bytes());
                        varint(&mut out, payload.len() as u64);
                        out.extend_from_slice(&payload);
                    }
                }
                out
            })
    }

    /// A change to a valid encoding: cut, flip, insert or extend a varint.
    #[derive(Debug, Clone)]
    enum Mutation {
        None,
        Cut(prop::sample::Index),
        Set(prop::sample::Index, u8),
        Insert(prop::sample::Index, u8),
        Overlong(prop::sample::Index),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            Just(Mutation::None),
            any::<prop::sample::Index>().prop_map(Mutation::Cut),
            (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
            (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
            any::<prop::sample::Index>().prop_map(Mutation::Overlong),
        ]
    }

    /// The varint rule as first written (byte count first, then the last
    /// byte's bits), the oracle for `Reader::varint`.
    fn varint_oracle(bytes: &[u8], bits: u32) -> (Result<u64, DecodeError>, usize, bool) {
        let max_bytes = bits.div_ceil(7) as usize;
        let mut value = 0u64;
        for index in 0..max_bytes {
            let Some(&byte) = bytes.get(index) else {
                return (Err(DecodeError::Truncated), index, false);
            };
            value |= u64::from(byte & 0x7F) << (7 * index);
            if byte & 0x80 == 0 {
                if index + 1 == max_bytes && u32::from(byte) >= 1 << (bits % 7) {
                    return (Err(DecodeError::Malformed), index + 1, false);
                }
                return (Ok(value), index + 1, index > 0 && byte == 0);
            }
        }
        (Err(DecodeError::Malformed), max_bytes, false)
    }

    proptest! {
        #[test]
        fn varints_read_as_the_rule_says(
            bytes in collection::vec(
                prop_oneof![
                    Just(0x00u8), Just(0x01), Just(0x02), Just(0x03), Just(0x04),
                    Just(0x0F), Just(0x10), Just(0x7F), Just(0x80), Just(0x81), Just(0xFF),
                    any::<u8>(),
                ],
                0..12,
            ),
            bits in prop_oneof![Just(16u32), Just(32), Just(64)],
        ) {
            let mut reader = Reader { bytes: &bytes, overlong: false };
            let result = reader.varint(bits);
            let (expected, used, overlong) = varint_oracle(&bytes, bits);
            prop_assert_eq!(result, expected);
            if result.is_ok() {
                prop_assert_eq!(bytes.len() - reader.bytes.len(), used);
                prop_assert_eq!(reader.overlong, overlong);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// Same message or same error as the generic codec, on mutated
        /// encodings of valid and invalid messages.
        #[test]
        fn decoding_matches_the_generic_codec(
            mut bytes in server_message(),
            mutations in collection::vec(mutation(), 0..3),
        ) {
            for mutation in mutations {
                match mutation {
                    Mutation::None => {}
                    Mutation::Cut(i) => bytes.truncate(i.index(bytes.len() + 1)),
                    Mutation::Set(i, b) if !bytes.is_empty() => {
                        let at = i.index(bytes.len());
                        bytes[at] = b;
                    }
                    Mutation::Insert(i, b) => bytes.insert(i.index(bytes.len() + 1), b),
                    // A byte whose varint now runs on into a zero byte.
                    Mutation::Overlong(i) if !bytes.is_empty() => {
                        let at = i.index(bytes.len());
                        if bytes[at] & 0x80 == 0 {
                            bytes[at] |= 0x80;
                            bytes.insert(at + 1, 0);
                        }
                    }
                    _ => {}
                }
            }
            prop_assert_eq!(decode_server_to_device(&bytes), reference(&bytes));
        }

        /// Same on arbitrary bytes.
        #[test]
        fn decoding_arbitrary_bytes_matches_the_generic_codec(
            version in prop_oneof![Just(PROTOCOL_VERSION), any::<u8>()],
            body in collection::vec(any::<u8>(), 0..24),
        ) {
            let mut bytes = vec![version];
            bytes.extend_from_slice(&body);
            prop_assert_eq!(decode_server_to_device(&bytes), reference(&bytes));
        }

        /// The same bytes, or the same error, as `DeviceToServer::encode`,
        /// for valid and invalid messages and buffers of any size.
        #[test]
        fn encoding_matches_the_generic_codec(
            kind in 0u8..6,
            (a, b) in (number(), number()),
            (first, second) in (text(), text()),
            time in proptest::option::of(number()),
            downlink in proptest::option::of(prop_oneof![0..100u32, any::<u32>()]),
            payload in collection::vec(any::<u8>(), 0..24),
            status in 0u8..4,
            room in 0usize..120,
        ) {
            let mut ours = vec![0u8; room];
            let mut theirs = vec![0u8; room];
            let status = [
                CommandStatus::Ok,
                CommandStatus::Rejected,
                CommandStatus::Failed,
                CommandStatus::Unsupported,
            ][usize::from(status)];
            let (compact, generic) = match kind {
                0 => {
                    let hello = Hello {
                        device_id: &first,
                        firmware_version: &second,
                        boot_id: a,
                        last_acked_seq: b as u32,
                        max_downlink_len: downlink,
                    };
                    (hello.encode(&mut ours), DeviceToServer::Hello(hello).encode(&mut theirs))
                }
                1 => {
                    let publish = Publish {
                        seq: a as u32,
                        channel: &first,
                        time_ms: time,
                        payload: Payload(&payload),
                    };
                    (
                        publish.encode(&mut ours),
                        DeviceToServer::Publish(publish).encode(&mut theirs),
                    )
                }
                2 => {
                    let ack = CommandAck {
                        id: a as u32,
                        status,
                        result: Payload(&payload),
                    };
                    (ack.encode(&mut ours), DeviceToServer::CommandAck(ack).encode(&mut theirs))
                }
                3 => {
                    let describe = DescribeChannel {
                        channel: &first,
                        fields: crate::Fields::from_json(&payload),
                    };
                    let compact = describe.encode(&mut ours);
                    if let Ok(bytes) = compact {
                        prop_assert_eq!(bytes.len(), describe.encoded_len());
                    }
                    (compact, DeviceToServer::DescribeChannel(describe).encode(&mut theirs))
                }
                4 => {
                    let describe = DescribeCommand {
                        channel: &first,
                        label: &second,
                        example: Payload(&payload),
                    };
                    let compact = describe.encode(&mut ours);
                    if let Ok(bytes) = compact {
                        prop_assert_eq!(bytes.len(), describe.encoded_len());
                    }
                    (compact, DeviceToServer::DescribeCommand(describe).encode(&mut theirs))
                }
                _ => {
                    let status = Status {
                        rssi_dbm: time.map(|t| (t % 400) as i16 - 200),
                    };
                    (status.encode(&mut ours), DeviceToServer::Status(status).encode(&mut theirs))
                }
            };
            prop_assert_eq!(compact, generic);
        }
    }

    #[test]
    fn a_described_field_list_streams_the_same_bytes() {
        let fields = [crate::FieldDescription::new("centi_celsius")
            .with_label("Temperature")
            .with_unit("°C")
            .with_scale(0.01)];
        let describe = DescribeChannel::new("kitchen/climate", crate::Fields::new(&fields));
        for room in [
            0,
            10,
            describe.encoded_len() - 1,
            describe.encoded_len(),
            200,
        ] {
            let mut ours = vec![0u8; room];
            let mut theirs = vec![0u8; room];
            assert_eq!(
                describe.encode(&mut ours),
                DeviceToServer::DescribeChannel(describe).encode(&mut theirs),
                "room {room}"
            );
        }
    }

    #[test]
    fn varints_follow_postcard() {
        let read = |bytes: &[u8], bits| {
            let mut r = Reader {
                bytes,
                overlong: false,
            };
            r.varint(bits).map(|v| (v, r.overlong, r.bytes.len()))
        };
        assert_eq!(read(&[0x00], 32), Ok((0, false, 0)));
        assert_eq!(read(&[0xac, 0x02, 9], 32), Ok((300, false, 1)));
        assert_eq!(read(&[0x80, 0x00], 32), Ok((0, true, 0)), "over-long");
        assert_eq!(read(&[0x80], 32), Err(DecodeError::Truncated));
        assert_eq!(read(&[], 32), Err(DecodeError::Truncated));
        assert_eq!(
            read(&[0xff, 0xff, 0xff, 0xff, 0x0f], 32),
            Ok((u64::from(u32::MAX), false, 0))
        );
        assert_eq!(
            read(&[0xff, 0xff, 0xff, 0xff, 0x10], 32),
            Err(DecodeError::Malformed),
            "past 32 bits"
        );
        assert_eq!(
            read(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01], 32),
            Err(DecodeError::Malformed),
            "six bytes"
        );
        assert_eq!(read(&[0xff, 0xff, 0x03], 16), Ok((65535, false, 0)));
        assert_eq!(read(&[0xff, 0xff, 0x04], 16), Err(DecodeError::Malformed));
        let mut max = [0xffu8; 10];
        max[9] = 0x01;
        assert_eq!(read(&max, 64), Ok((u64::MAX, false, 0)));
        max[9] = 0x02;
        assert_eq!(read(&max, 64), Err(DecodeError::Malformed));
    }
}
