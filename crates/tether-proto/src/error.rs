//! Errors of encoding and decoding, and the stable error codes of the wire.

use core::fmt;

use serde::{Deserialize, Serialize};

/// A bounded field of a message, named in [`FieldError`], [`DecodeError`] and
/// [`EncodeError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Field {
    /// A device id (`Hello.device_id`, `SendCommand.device`, `Event.device`).
    DeviceId,
    /// `Hello.firmware_version`.
    FirmwareVersion,
    /// A channel name.
    Channel,
    /// A payload or a command result.
    Payload,
    /// `Error.message`.
    Message,
    /// `Publish.seq` (must be at least 1).
    Seq,
    /// `Welcome.max_in_flight` (must be at least 1).
    MaxInFlight,
    /// The field descriptions of `DescribeChannel` or `Description` (see
    /// [`Fields`](crate::Fields)).
    Fields,
    /// `DescribeCommand.label`.
    Label,
    /// `DescribeCommand.example`.
    Example,
    /// `Status.rssi_dbm` (from -150 to 0).
    RssiDbm,
    /// `Hello.max_downlink_len` (must be at least
    /// [`MIN_DOWNLINK_LEN`](crate::MIN_DOWNLINK_LEN)).
    MaxDownlinkLen,
}

impl Field {
    /// The field's name as `docs/protocol.md` spells it.
    pub const fn name(self) -> &'static str {
        match self {
            Field::DeviceId => "device id",
            Field::FirmwareVersion => "firmware_version",
            Field::Channel => "channel",
            Field::Payload => "payload",
            Field::Message => "message",
            Field::Seq => "seq",
            Field::MaxInFlight => "max_in_flight",
            Field::Fields => "fields",
            Field::Label => "label",
            Field::Example => "example",
            Field::RssiDbm => "rssi_dbm",
            Field::MaxDownlinkLen => "max_downlink_len",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A field value outside what the protocol allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum FieldError {
    /// Longer than the field's documented maximum (see the `MAX_*` constants).
    TooLong(Field),
    /// Empty where a value is required, a character outside the field's
    /// character set, or a number outside its range.
    Invalid(Field),
}

impl FieldError {
    /// The field at fault.
    pub const fn field(self) -> Field {
        match self {
            FieldError::TooLong(field) | FieldError::Invalid(field) => field,
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldError::TooLong(field) => write!(f, "{field} is longer than its maximum"),
            FieldError::Invalid(field) => {
                write!(f, "{field} is empty or has a forbidden character")
            }
        }
    }
}

impl core::error::Error for FieldError {}

/// Why bytes (or JSON text) are not a valid message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ends inside the message. WebSocket frames arrive whole, so
    /// this is a broken frame, not a reason to wait for more bytes.
    Truncated,
    /// The input is not a message: a bad varint, UTF-8, option or enum tag,
    /// a non-minimal encoding, a missing or duplicated JSON member, or JSON
    /// syntax.
    Malformed,
    /// Bytes follow a complete message.
    TrailingBytes,
    /// The envelope names a protocol version this crate does not speak.
    UnsupportedVersion {
        /// The version the peer sent (a JSON `"v"` above 255 reads as 255).
        found: u8,
    },
    /// The message kind (discriminant or JSON member name) is unknown to
    /// this version; a newer peer may have sent it.
    UnknownMessage,
    /// A string or byte field is longer than its documented maximum.
    TooLong {
        /// The field at fault.
        field: Field,
    },
    /// A field is empty, has a forbidden character or is out of range.
    InvalidField {
        /// The field at fault.
        field: Field,
    },
}

impl DecodeError {
    /// The wire error code a server reports for this decoding failure (in
    /// an `Error` message or, as [`ErrorCode::close_code`], when it closes
    /// the WebSocket).
    pub const fn error_code(self) -> ErrorCode {
        match self {
            DecodeError::Truncated | DecodeError::Malformed | DecodeError::TrailingBytes => {
                ErrorCode::MALFORMED
            }
            DecodeError::UnsupportedVersion { .. } => ErrorCode::UNSUPPORTED_VERSION,
            DecodeError::UnknownMessage => ErrorCode::UNKNOWN_MESSAGE,
            DecodeError::TooLong { .. } => ErrorCode::TOO_LARGE,
            DecodeError::InvalidField { .. } => ErrorCode::INVALID_FIELD,
        }
    }
}

impl From<FieldError> for DecodeError {
    fn from(error: FieldError) -> Self {
        match error {
            FieldError::TooLong(field) => DecodeError::TooLong { field },
            FieldError::Invalid(field) => DecodeError::InvalidField { field },
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("message is truncated"),
            DecodeError::Malformed => f.write_str("message is malformed"),
            DecodeError::TrailingBytes => f.write_str("bytes follow the message"),
            DecodeError::UnsupportedVersion { found } => {
                write!(f, "unsupported protocol version {found}")
            }
            DecodeError::UnknownMessage => f.write_str("unknown message kind"),
            DecodeError::TooLong { field } => write!(f, "{field} is longer than its maximum"),
            DecodeError::InvalidField { field } => write!(f, "{field} is invalid"),
        }
    }
}

impl core::error::Error for DecodeError {}

/// Why a message could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum EncodeError {
    /// The output buffer is too small; `encoded_len()` tells the size needed.
    BufferTooSmall,
    /// A string or byte field is longer than its documented maximum.
    TooLong {
        /// The field at fault.
        field: Field,
    },
    /// A field is empty, has a forbidden character or is out of range.
    InvalidField {
        /// The field at fault.
        field: Field,
    },
    /// JSON encoding only: a payload is not exactly one JSON value (UTF-8, no
    /// surrounding whitespace), so it cannot be embedded in a text message.
    PayloadNotJson,
}

impl From<FieldError> for EncodeError {
    fn from(error: FieldError) -> Self {
        match error {
            FieldError::TooLong(field) => EncodeError::TooLong { field },
            FieldError::Invalid(field) => EncodeError::InvalidField { field },
        }
    }
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::BufferTooSmall => f.write_str("output buffer is too small"),
            EncodeError::TooLong { field } => write!(f, "{field} is longer than its maximum"),
            EncodeError::InvalidField { field } => write!(f, "{field} is invalid"),
            EncodeError::PayloadNotJson => f.write_str("payload is not a single JSON value"),
        }
    }
}

impl core::error::Error for EncodeError {}

/// A stable, numbered error code of the wire protocol.
///
/// Servers send it in [`ErrorMessage`](crate::ErrorMessage) to receivers and,
/// as [`close_code`](Self::close_code) (`4000 + code`), as the WebSocket close
/// code when they end a connection (the only way a device hears of an error).
/// Codes are never renumbered; unknown codes from newer peers decode fine and
/// should be treated like [`INTERNAL`](Self::INTERNAL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[serde(transparent)]
pub struct ErrorCode(pub u16);

impl ErrorCode {
    /// A message could not be decoded (truncated, malformed, trailing bytes).
    pub const MALFORMED: ErrorCode = ErrorCode(1);
    /// The envelope's protocol version is not spoken by the server.
    pub const UNSUPPORTED_VERSION: ErrorCode = ErrorCode(2);
    /// The message kind is unknown.
    pub const UNKNOWN_MESSAGE: ErrorCode = ErrorCode(3);
    /// A valid message at the wrong time (e.g. `Publish` before `Hello`,
    /// a second `Hello`).
    pub const UNEXPECTED_MESSAGE: ErrorCode = ErrorCode(4);
    /// The connection's credentials were missing or wrong.
    pub const UNAUTHORIZED: ErrorCode = ErrorCode(5);
    /// Authenticated, but not allowed to do this (channel, device).
    pub const FORBIDDEN: ErrorCode = ErrorCode(6);
    /// A field is empty, has a forbidden character or is out of range.
    pub const INVALID_FIELD: ErrorCode = ErrorCode(7);
    /// A field or the whole message is larger than allowed.
    pub const TOO_LARGE: ErrorCode = ErrorCode(8);
    /// `SendCommand` names a device the server does not know.
    pub const UNKNOWN_DEVICE: ErrorCode = ErrorCode(9);
    /// `SendCommand` names a device that is not connected.
    pub const DEVICE_OFFLINE: ErrorCode = ErrorCode(10);
    /// The device did not answer a command in time.
    pub const COMMAND_TIMEOUT: ErrorCode = ErrorCode(11);
    /// Too many messages; slow down.
    pub const RATE_LIMITED: ErrorCode = ErrorCode(12);
    /// The server failed (e.g. its database); try again later.
    pub const INTERNAL: ErrorCode = ErrorCode(13);
    /// The same device connected again; this older session is closed.
    pub const SESSION_REPLACED: ErrorCode = ErrorCode(14);
    /// The server could not store one of the device's records. Nothing
    /// after it was acknowledged and the server refuses the rest of the
    /// connection: reconnect, and resend from `Welcome.last_stored_seq`.
    pub const WRITE_FAILED: ErrorCode = ErrorCode(15);
    /// The peer did not take what the server sent within the server's write
    /// timeout (it stopped reading); the server closed the connection.
    pub const SLOW_CONSUMER: ErrorCode = ErrorCode(16);
    /// The server is draining (shutting down to be replaced, or taken out
    /// of a cluster): reconnect, to another node when there is one, after
    /// the delay the close reason suggests ([`reconnect_hint_ms`]).
    pub const DRAINING: ErrorCode = ErrorCode(17);

    /// First WebSocket close code of the private-use range tether maps codes
    /// into: close code = `CLOSE_CODE_BASE + code`.
    pub const CLOSE_CODE_BASE: u16 = 4000;

    /// The WebSocket close code that carries this error (`4000 + code`), or
    /// `None` for codes that do not fit the private-use range 4000..=4999.
    pub const fn close_code(self) -> Option<u16> {
        if self.0 <= 999 {
            Some(Self::CLOSE_CODE_BASE + self.0)
        } else {
            None
        }
    }

    /// The error a WebSocket close code carries, if it is one of tether's
    /// (4000..=4999).
    pub const fn from_close_code(close_code: u16) -> Option<ErrorCode> {
        match close_code {
            4000..=4999 => Some(ErrorCode(close_code - Self::CLOSE_CODE_BASE)),
            _ => None,
        }
    }

    /// The code's name in `docs/protocol.md`, or `None` for a code this
    /// version does not know.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self {
            ErrorCode::MALFORMED => "malformed",
            ErrorCode::UNSUPPORTED_VERSION => "unsupported_version",
            ErrorCode::UNKNOWN_MESSAGE => "unknown_message",
            ErrorCode::UNEXPECTED_MESSAGE => "unexpected_message",
            ErrorCode::UNAUTHORIZED => "unauthorized",
            ErrorCode::FORBIDDEN => "forbidden",
            ErrorCode::INVALID_FIELD => "invalid_field",
            ErrorCode::TOO_LARGE => "too_large",
            ErrorCode::UNKNOWN_DEVICE => "unknown_device",
            ErrorCode::DEVICE_OFFLINE => "device_offline",
            ErrorCode::COMMAND_TIMEOUT => "command_timeout",
            ErrorCode::RATE_LIMITED => "rate_limited",
            ErrorCode::INTERNAL => "internal",
            ErrorCode::SESSION_REPLACED => "session_replaced",
            ErrorCode::WRITE_FAILED => "write_failed",
            ErrorCode::SLOW_CONSUMER => "slow_consumer",
            ErrorCode::DRAINING => "draining",
            _ => return None,
        })
    }

    /// Every code this version defines, in numeric order.
    pub const ALL: [ErrorCode; 17] = [
        ErrorCode::MALFORMED,
        ErrorCode::UNSUPPORTED_VERSION,
        ErrorCode::UNKNOWN_MESSAGE,
        ErrorCode::UNEXPECTED_MESSAGE,
        ErrorCode::UNAUTHORIZED,
        ErrorCode::FORBIDDEN,
        ErrorCode::INVALID_FIELD,
        ErrorCode::TOO_LARGE,
        ErrorCode::UNKNOWN_DEVICE,
        ErrorCode::DEVICE_OFFLINE,
        ErrorCode::COMMAND_TIMEOUT,
        ErrorCode::RATE_LIMITED,
        ErrorCode::INTERNAL,
        ErrorCode::SESSION_REPLACED,
        ErrorCode::WRITE_FAILED,
        ErrorCode::SLOW_CONSUMER,
        ErrorCode::DRAINING,
    ];
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{} ({name})", self.0),
            None => write!(f, "{} (unknown)", self.0),
        }
    }
}

/// The longest reconnect delay a close reason may suggest, in ms; larger
/// numbers are read as this.
pub const MAX_RECONNECT_HINT_MS: u32 = 60_000;

/// The reconnect delay a close reason suggests: the decimal number of
/// milliseconds it starts with (`"250 draining"` suggests 250 ms), capped
/// at [`MAX_RECONNECT_HINT_MS`]; `None` when it does not start with a
/// digit. A server closing with [`ErrorCode::DRAINING`] (4017) puts one
/// there, chosen at random per connection so that its clients do not all
/// come back at once.
pub fn reconnect_hint_ms(reason: &str) -> Option<u32> {
    let digits = reason.bytes().take_while(u8::is_ascii_digit);
    let mut value: u32 = 0;
    let mut any = false;
    for digit in digits {
        any = true;
        value = value
            .saturating_mul(10)
            .saturating_add(u32::from(digit - b'0'))
            .min(MAX_RECONNECT_HINT_MS);
    }
    any.then_some(value)
}
