//! Close frames: status codes (RFC 6455 7.4) and the code-plus-reason payload
//! (5.5.1).

use core::fmt;

use super::error::{EncodeError, ProtocolError};

/// A close status code (RFC 6455 7.4). Any `u16` can be held; use
/// [`CloseCode::is_sendable`] to know whether it may appear in a close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct CloseCode(u16);

impl CloseCode {
    /// 1000: the purpose of the connection has been fulfilled.
    pub const NORMAL: Self = Self(1000);
    /// 1001: the endpoint is going away (server shutdown, page left).
    pub const GOING_AWAY: Self = Self(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: Self = Self(1002);
    /// 1003: the endpoint cannot accept this type of data.
    pub const UNSUPPORTED_DATA: Self = Self(1003);
    /// 1005: reserved, means "no status code was present". Never sent.
    pub const NO_STATUS: Self = Self(1005);
    /// 1006: reserved, means "closed without a close frame". Never sent.
    pub const ABNORMAL: Self = Self(1006);
    /// 1007: a message's data did not match its type (e.g. invalid UTF-8).
    pub const INVALID_PAYLOAD: Self = Self(1007);
    /// 1008: the message violates the endpoint's policy.
    pub const POLICY_VIOLATION: Self = Self(1008);
    /// 1009: a message is too big to process.
    pub const MESSAGE_TOO_BIG: Self = Self(1009);
    /// 1010: the client expected the server to negotiate an extension.
    pub const MANDATORY_EXTENSION: Self = Self(1010);
    /// 1011: the server met an unexpected condition.
    pub const INTERNAL_ERROR: Self = Self(1011);

    /// Wraps a raw code.
    pub const fn new(code: u16) -> Self {
        Self(code)
    }

    /// The raw code.
    pub const fn as_u16(self) -> u16 {
        self.0
    }

    /// Whether the code may appear in a close frame: 1000-1003, 1007-1014
    /// (defined by RFC 6455 and registered with IANA), and 3000-4999
    /// (libraries and applications). 1004-1006, 1015, and everything else are
    /// reserved or invalid.
    pub const fn is_sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The payload of a close frame: a status code and a UTF-8 reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct CloseFrame<'a> {
    /// Why the connection is closing.
    pub code: CloseCode,
    /// Human-readable reason, at most 123 bytes on the wire.
    pub reason: &'a str,
}

impl<'a> CloseFrame<'a> {
    /// Longest reason that fits a control frame next to the code.
    pub const MAX_REASON_LEN: usize = 123;

    /// Parses a received close payload. `Ok(None)` means the peer sent no
    /// status code (the empty payload, reported as 1005 to applications).
    pub fn parse(payload: &'a [u8]) -> Result<Option<Self>, ProtocolError> {
        match payload {
            [] => Ok(None),
            [_] => Err(ProtocolError::InvalidClosePayload),
            [high, low, reason @ ..] => {
                let code = CloseCode(u16::from_be_bytes([*high, *low]));
                if !code.is_sendable() {
                    return Err(ProtocolError::InvalidCloseCode);
                }
                if reason.len() > Self::MAX_REASON_LEN {
                    return Err(ProtocolError::ControlFrameTooLong);
                }
                let reason =
                    core::str::from_utf8(reason).map_err(|_| ProtocolError::InvalidUtf8)?;
                Ok(Some(Self { code, reason }))
            }
        }
    }

    /// Writes the close payload into `out` and returns its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        if !self.code.is_sendable() {
            return Err(EncodeError::InvalidCloseCode);
        }
        let reason = self.reason.as_bytes();
        if reason.len() > Self::MAX_REASON_LEN {
            return Err(EncodeError::ControlFrameTooLong);
        }
        let len = reason.len() + 2;
        let Some(dst) = out.get_mut(..len) else {
            return Err(EncodeError::BufferTooSmall);
        };
        let (code, text) = dst.split_at_mut(2);
        code.copy_from_slice(&self.code.0.to_be_bytes());
        text.copy_from_slice(reason);
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sendable_codes_follow_section_7_4() {
        for code in 0..=u16::MAX {
            let expected = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            assert_eq!(CloseCode::new(code).is_sendable(), expected, "{code}");
        }
        assert!(!CloseCode::NO_STATUS.is_sendable());
        assert!(!CloseCode::ABNORMAL.is_sendable());
    }

    #[test]
    fn parse_and_encode_round_trip() {
        let frame = CloseFrame {
            code: CloseCode::GOING_AWAY,
            reason: "bye ✓",
        };
        let mut buf = [0u8; 125];
        let n = frame.encode(&mut buf).unwrap();
        assert_eq!(&buf[..2], &[0x03, 0xE9]);
        assert_eq!(CloseFrame::parse(&buf[..n]), Ok(Some(frame)));
    }

    #[test]
    fn parse_rejects_bad_payloads() {
        assert_eq!(CloseFrame::parse(&[]), Ok(None));
        assert_eq!(
            CloseFrame::parse(&[0x03]),
            Err(ProtocolError::InvalidClosePayload)
        );
        assert_eq!(
            CloseFrame::parse(&[0x03, 0xED]),
            Err(ProtocolError::InvalidCloseCode)
        );
        assert_eq!(
            CloseFrame::parse(&[0x03, 0xE8, 0xFF]),
            Err(ProtocolError::InvalidUtf8)
        );
    }

    #[test]
    fn encode_rejects_reserved_codes_and_long_reasons() {
        let mut buf = [0u8; 200];
        let reserved = CloseFrame {
            code: CloseCode::NO_STATUS,
            reason: "",
        };
        assert_eq!(
            reserved.encode(&mut buf),
            Err(EncodeError::InvalidCloseCode)
        );
        let long = [b'a'; 124];
        let long = CloseFrame {
            code: CloseCode::NORMAL,
            reason: core::str::from_utf8(&long).unwrap(),
        };
        assert_eq!(long.encode(&mut buf), Err(EncodeError::ControlFrameTooLong));
        let ok = CloseFrame {
            code: CloseCode::NORMAL,
            reason: "x",
        };
        assert_eq!(ok.encode(&mut buf[..2]), Err(EncodeError::BufferTooSmall));
    }
}
