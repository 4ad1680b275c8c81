//! Frame header parse and emit (RFC 6455 5.2), and whole-frame encode and
//! decode over caller buffers.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! |     Extended payload length continued, if payload len == 127  |
//! + - - - - - - - - - - - - - - - +-------------------------------+
//! |                               |Masking-key, if MASK set to 1  |
//! +-------------------------------+-------------------------------+
//! | Masking-key (continued)       |          Payload Data         |
//! +-------------------------------- - - - - - - - - - - - - - - - +
//! ```

use super::Status;
use super::config::{Config, Role};
use super::error::{EncodeError, ProtocolError};
use super::mask::{apply_mask, mask_into};

/// Longest possible frame header: 2 + 8 length bytes + 4 mask bytes.
pub const MAX_HEADER_LEN: usize = 14;

/// Longest payload of a control frame (5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// A frame opcode (5.2). Reserved opcodes do not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum OpCode {
    /// 0x0: a later fragment of a message.
    Continuation,
    /// 0x1: UTF-8 text.
    Text,
    /// 0x2: binary data.
    Binary,
    /// 0x8: close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl OpCode {
    /// Parses the 4-bit opcode.
    #[inline]
    pub const fn from_bits(bits: u8) -> Result<Self, ProtocolError> {
        Ok(match bits {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            _ => return Err(ProtocolError::ReservedOpcode),
        })
    }

    /// The 4-bit wire value.
    #[inline]
    pub const fn bits(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    /// Close, ping and pong.
    #[inline]
    pub const fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// A parsed frame header. [`FrameHeader::parse`] enforces the rules every
/// frame must obey; [`FrameHeader::validate`] adds those of one endpoint
/// (masking direction, RSV bits, size limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FrameHeader {
    /// Final fragment of a message.
    pub fin: bool,
    /// RSV1-RSV3 as the low three bits.
    pub rsv: u8,
    /// What the frame carries.
    pub opcode: OpCode,
    /// Masking key, present on frames sent by clients.
    pub mask: Option<[u8; 4]>,
    /// Payload length as on the wire (never truncated, even on 32-bit).
    pub payload_len: u64,
}

impl FrameHeader {
    /// Parses a header from the start of `buf`. `Complete(n)` also gives the
    /// header length; `Partial` means more bytes are needed. Rejects reserved
    /// opcodes, non-minimal lengths, a 64-bit length with its top bit set,
    /// and control frames that are fragmented or longer than 125 bytes.
    #[inline]
    pub fn parse(buf: &[u8]) -> Result<Status<(Self, usize)>, ProtocolError> {
        let [first, second, rest @ ..] = buf else {
            return Ok(Status::Partial);
        };
        let fin = first & 0x80 != 0;
        let rsv = (first >> 4) & 0b111;
        let opcode = OpCode::from_bits(first & 0x0F)?;
        let masked = second & 0x80 != 0;
        let short_len = second & 0x7F;
        if opcode.is_control() {
            if !fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
            if usize::from(short_len) > MAX_CONTROL_PAYLOAD {
                return Err(ProtocolError::ControlFrameTooLong);
            }
        }
        let (payload_len, rest, extended) = match short_len {
            126 => {
                let [a, b, rest @ ..] = rest else {
                    return Ok(Status::Partial);
                };
                let len = u16::from_be_bytes([*a, *b]);
                if len < 126 {
                    return Err(ProtocolError::NonMinimalLength);
                }
                (u64::from(len), rest, 2)
            }
            127 => {
                let Some((bytes, rest)) = rest.split_first_chunk::<8>() else {
                    return Ok(Status::Partial);
                };
                let len = u64::from_be_bytes(*bytes);
                if len & (1 << 63) != 0 {
                    return Err(ProtocolError::LengthOverflow);
                }
                if len <= u64::from(u16::MAX) {
                    return Err(ProtocolError::NonMinimalLength);
                }
                (len, rest, 8)
            }
            len => (u64::from(len), rest, 0),
        };
        let mask = if masked {
            let Some((key, _)) = rest.split_first_chunk::<4>() else {
                return Ok(Status::Partial);
            };
            Some(*key)
        } else {
            None
        };
        let header_len = 2 + extended + if masked { 4 } else { 0 };
        Ok(Status::Complete((
            Self {
                fin,
                rsv,
                opcode,
                mask,
                payload_len,
            },
            header_len,
        )))
    }

    /// Checks the header against one endpoint's rules and limits, and
    /// returns the payload length as a `usize` (checked, never truncated).
    #[inline]
    pub fn validate(&self, config: &Config) -> Result<usize, ProtocolError> {
        if self.rsv & !config.reserved_bits() != 0 {
            return Err(ProtocolError::ReservedBitsSet);
        }
        match (config.role(), self.mask.is_some()) {
            (Role::Client, true) => return Err(ProtocolError::MaskedFrame),
            (Role::Server, false) => return Err(ProtocolError::UnmaskedFrame),
            _ => {}
        }
        let len = usize::try_from(self.payload_len).map_err(|_| ProtocolError::FrameTooBig)?;
        if len > config.max_frame_size() {
            return Err(ProtocolError::FrameTooBig);
        }
        Ok(len)
    }

    /// Length of this header on the wire.
    #[inline]
    pub const fn encoded_len(&self) -> usize {
        let extended = if self.payload_len < 126 {
            0
        } else if self.payload_len <= 0xFFFF {
            2
        } else {
            8
        };
        2 + extended + if self.mask.is_some() { 4 } else { 0 }
    }

    /// Writes the header (minimal length encoding) to the start of `out` and
    /// returns its length.
    #[inline]
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let len = self.encoded_len();
        let Some(out) = out.get_mut(..len) else {
            return Err(EncodeError::BufferTooSmall);
        };
        let first = u8::from(self.fin) << 7 | (self.rsv & 0b111) << 4 | self.opcode.bits();
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let rest = match out {
            [a, b, rest @ ..] => {
                *a = first;
                match self.payload_len {
                    // The match arm bounds make each cast lossless.
                    0..=125 => {
                        *b = mask_bit | self.payload_len as u8;
                        rest
                    }
                    126..=0xFFFF => {
                        *b = mask_bit | 126;
                        let (ext, rest) = rest
                            .split_first_chunk_mut::<2>()
                            .ok_or(EncodeError::BufferTooSmall)?;
                        *ext = (self.payload_len as u16).to_be_bytes();
                        rest
                    }
                    _ => {
                        *b = mask_bit | 127;
                        let (ext, rest) = rest
                            .split_first_chunk_mut::<8>()
                            .ok_or(EncodeError::BufferTooSmall)?;
                        *ext = self.payload_len.to_be_bytes();
                        rest
                    }
                }
            }
            _ => return Err(EncodeError::BufferTooSmall),
        };
        if let Some(key) = self.mask {
            let (dst, _) = rest
                .split_first_chunk_mut::<4>()
                .ok_or(EncodeError::BufferTooSmall)?;
            *dst = key;
        }
        Ok(len)
    }
}

/// A frame whose payload has been unmasked: the typed view of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Frame<'a> {
    /// Final fragment of a message.
    pub fin: bool,
    /// RSV1-RSV3 as the low three bits (zero unless an extension uses them).
    pub rsv: u8,
    /// What the frame carries.
    pub opcode: OpCode,
    /// Unmasked payload.
    pub payload: &'a [u8],
}

impl<'a> Frame<'a> {
    /// A final frame with no RSV bits.
    #[inline]
    pub const fn new(opcode: OpCode, payload: &'a [u8]) -> Self {
        Self {
            fin: true,
            rsv: 0,
            opcode,
            payload,
        }
    }

    /// Length of the encoded frame with or without a mask.
    pub const fn encoded_len(&self, masked: bool) -> usize {
        self.header(if masked { Some([0; 4]) } else { None })
            .encoded_len()
            + self.payload.len()
    }

    #[inline]
    const fn header(&self, mask: Option<[u8; 4]>) -> FrameHeader {
        FrameHeader {
            fin: self.fin,
            rsv: self.rsv,
            opcode: self.opcode,
            mask,
            // usize is at most 64 bits on every Rust target.
            payload_len: self.payload.len() as u64,
        }
    }

    /// Writes the frame to `out`, masking the payload with `mask` when given
    /// (clients must pass a fresh unpredictable key for every frame, RFC 6455
    /// 5.3). Returns the number of bytes written.
    #[inline]
    pub fn encode(&self, mask: Option<[u8; 4]>, out: &mut [u8]) -> Result<usize, EncodeError> {
        if self.opcode.is_control() {
            if !self.fin {
                return Err(EncodeError::FragmentedControlFrame);
            }
            if self.payload.len() > MAX_CONTROL_PAYLOAD {
                return Err(EncodeError::ControlFrameTooLong);
            }
        }
        let header = self.header(mask);
        let header_len = header.emit(out)?;
        let total = header_len
            .checked_add(self.payload.len())
            .ok_or(EncodeError::BufferTooSmall)?;
        let Some(body) = out.get_mut(header_len..total) else {
            return Err(EncodeError::BufferTooSmall);
        };
        match mask {
            Some(key) => mask_into(body, self.payload, key),
            None => body.copy_from_slice(self.payload),
        }
        Ok(total)
    }

    /// Decodes one frame from the start of `buf`, checking it against
    /// `config`, and unmasks its payload in place. `Complete` gives the frame
    /// and the number of bytes it used; `Partial` means the frame is not all
    /// there yet (nothing is modified then).
    #[inline]
    pub fn decode(
        buf: &'a mut [u8],
        config: &Config,
    ) -> Result<Status<(Self, usize)>, ProtocolError> {
        let (header, header_len) = match FrameHeader::parse(buf)? {
            Status::Complete(parsed) => parsed,
            Status::Partial => return Ok(Status::Partial),
        };
        let payload_len = header.validate(config)?;
        let total = header_len
            .checked_add(payload_len)
            .ok_or(ProtocolError::FrameTooBig)?;
        let Some(payload) = buf.get_mut(header_len..total) else {
            return Ok(Status::Partial);
        };
        if let Some(key) = header.mask {
            apply_mask(payload, key);
        }
        Ok(Status::Complete((
            Self {
                fin: header.fin,
                rsv: header.rsv,
                opcode: header.opcode,
                payload,
            },
            total,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(buf: &[u8]) -> Result<Status<(FrameHeader, usize)>, ProtocolError> {
        FrameHeader::parse(buf)
    }

    #[test]
    fn rfc_examples_decode() {
        // RFC 6455 5.7.
        let mut unmasked = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        let Status::Complete((frame, used)) =
            Frame::decode(&mut unmasked, &Config::client()).unwrap()
        else {
            panic!("partial");
        };
        assert_eq!(used, 7);
        assert_eq!(frame, Frame::new(OpCode::Text, b"Hello"));

        let mut masked = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let Status::Complete((frame, used)) =
            Frame::decode(&mut masked, &Config::server()).unwrap()
        else {
            panic!("partial");
        };
        assert_eq!(used, 11);
        assert_eq!(frame.payload, b"Hello");

        let mut fragment = [0x01, 0x03, 0x48, 0x65, 0x6c];
        let Status::Complete((frame, _)) = Frame::decode(&mut fragment, &Config::client()).unwrap()
        else {
            panic!("partial");
        };
        assert!(!frame.fin);
        assert_eq!(frame.opcode, OpCode::Text);
    }

    #[test]
    fn encodes_rfc_masked_example() {
        let mut out = [0u8; 16];
        let n = Frame::new(OpCode::Text, b"Hello")
            .encode(Some([0x37, 0xfa, 0x21, 0x3d]), &mut out)
            .unwrap();
        assert_eq!(
            &out[..n],
            &[
                0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
            ]
        );
    }

    #[test]
    fn lengths_use_all_three_forms() {
        for (len, header_len) in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let header = FrameHeader {
                fin: true,
                rsv: 0,
                opcode: OpCode::Binary,
                mask: None,
                payload_len: len,
            };
            let mut out = [0u8; 14];
            assert_eq!(header.emit(&mut out), Ok(header_len));
            assert_eq!(
                parse(&out[..header_len]),
                Ok(Status::Complete((header, header_len)))
            );
            for short in 0..header_len {
                assert_eq!(parse(&out[..short]), Ok(Status::Partial));
            }
        }
    }

    #[test]
    fn rejects_non_minimal_and_overflowing_lengths() {
        assert_eq!(
            parse(&[0x82, 126, 0x00, 0x7D]),
            Err(ProtocolError::NonMinimalLength)
        );
        assert_eq!(
            parse(&[0x82, 127, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF]),
            Err(ProtocolError::NonMinimalLength)
        );
        assert_eq!(
            parse(&[0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            Err(ProtocolError::LengthOverflow)
        );
    }

    #[test]
    fn huge_lengths_are_never_truncated() {
        // 2^32 + 1 bytes: would wrap to 1 if cast to u32.
        let buf = [0x82, 127, 0, 0, 0, 1, 0, 0, 0, 1];
        let Ok(Status::Complete((header, 10))) = parse(&buf) else {
            panic!("parse failed");
        };
        assert_eq!(header.payload_len, (1 << 32) + 1);
        let config = Config::client().with_max_frame_size(1 << 20);
        assert_eq!(header.validate(&config), Err(ProtocolError::FrameTooBig));
    }

    #[test]
    fn rejects_reserved_opcodes_and_bad_control_frames() {
        for opcode in [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            assert_eq!(
                parse(&[0x80 | opcode, 0]),
                Err(ProtocolError::ReservedOpcode)
            );
        }
        assert_eq!(
            parse(&[0x09, 0]),
            Err(ProtocolError::FragmentedControlFrame)
        );
        assert_eq!(
            parse(&[0x89, 126, 0, 126]),
            Err(ProtocolError::ControlFrameTooLong)
        );
        let mut out = [0u8; 200];
        let long = [0u8; 126];
        assert_eq!(
            Frame::new(OpCode::Ping, &long).encode(None, &mut out),
            Err(EncodeError::ControlFrameTooLong)
        );
    }

    #[test]
    fn validate_checks_mask_direction_and_rsv() {
        let mut masked = [0x82, 0x80, 1, 2, 3, 4];
        let mut unmasked = [0x82, 0x00];
        assert_eq!(
            Frame::decode(&mut masked, &Config::client()),
            Err(ProtocolError::MaskedFrame)
        );
        assert_eq!(
            Frame::decode(&mut unmasked, &Config::server()),
            Err(ProtocolError::UnmaskedFrame)
        );
        let mut rsv1 = [0xC2, 0x00];
        assert_eq!(
            Frame::decode(&mut rsv1, &Config::client()),
            Err(ProtocolError::ReservedBitsSet)
        );
        let config = Config::client().with_reserved_bits(0b100);
        let mut rsv1 = [0xC2, 0x00];
        assert!(matches!(
            Frame::decode(&mut rsv1, &config),
            Ok(Status::Complete((Frame { rsv: 0b100, .. }, 2)))
        ));
    }

    #[test]
    fn encode_reports_small_buffers() {
        let mut out = [0u8; 6];
        assert_eq!(
            Frame::new(OpCode::Binary, b"12345").encode(None, &mut out),
            Err(EncodeError::BufferTooSmall)
        );
        assert_eq!(
            Frame::new(OpCode::Binary, b"").encode(Some([1; 4]), &mut out[..5]),
            Err(EncodeError::BufferTooSmall)
        );
    }
}
