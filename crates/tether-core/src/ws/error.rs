//! One error enum per layer: [`ProtocolError`] for frames and messages (each
//! maps to the close code RFC 6455 asks for, the way rustls maps errors to TLS
//! alerts), [`HandshakeError`] for the opening handshake, [`EncodeError`] for
//! building frames, and [`Error`] for the async adapter, which adds I/O.

use core::fmt;

use super::close::CloseCode;

/// A peer broke a rule of RFC 6455 (or a configured limit) in a frame or
/// message. One variant per rule; [`ProtocolError::close_code`] gives the
/// status code to close the connection with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ProtocolError {
    /// An RSV bit is set but no extension that defines it was negotiated (5.2).
    ReservedBitsSet,
    /// The opcode is one of the reserved values 0x3-0x7 or 0xB-0xF (5.2).
    ReservedOpcode,
    /// A 16- or 64-bit length encodes a value that fits a shorter form (5.2).
    NonMinimalLength,
    /// The most significant bit of a 64-bit payload length is set (5.2).
    LengthOverflow,
    /// A control frame carries more than 125 bytes of payload (5.5).
    ControlFrameTooLong,
    /// A control frame has FIN clear (5.5).
    FragmentedControlFrame,
    /// A client sent an unmasked frame to a server (5.1).
    UnmaskedFrame,
    /// A server sent a masked frame to a client (5.1).
    MaskedFrame,
    /// A continuation frame arrived with no fragmented message in progress (5.4).
    UnexpectedContinuation,
    /// A new text or binary frame arrived while a fragmented message was in progress (5.4).
    ExpectedContinuation,
    /// A text message or close reason is not valid UTF-8 (8.1).
    InvalidUtf8,
    /// A close frame carries a one-byte payload (5.5.1).
    InvalidClosePayload,
    /// A close frame carries a status code that must not appear on the wire (7.4).
    InvalidCloseCode,
    /// A frame is larger than the configured maximum or the receive buffer.
    FrameTooBig,
    /// A message is larger than the configured maximum or the receive buffer.
    MessageTooBig,
}

impl ProtocolError {
    /// The close code to send to the peer for this error (RFC 6455 7.4.1).
    pub const fn close_code(self) -> CloseCode {
        match self {
            Self::InvalidUtf8 => CloseCode::INVALID_PAYLOAD,
            Self::FrameTooBig | Self::MessageTooBig => CloseCode::MESSAGE_TOO_BIG,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ReservedBitsSet => "reserved bits set without a negotiated extension",
            Self::ReservedOpcode => "reserved opcode",
            Self::NonMinimalLength => "payload length not minimally encoded",
            Self::LengthOverflow => "64-bit payload length has its top bit set",
            Self::ControlFrameTooLong => "control frame payload longer than 125 bytes",
            Self::FragmentedControlFrame => "fragmented control frame",
            Self::UnmaskedFrame => "unmasked frame from a client",
            Self::MaskedFrame => "masked frame from a server",
            Self::UnexpectedContinuation => "continuation frame without a message in progress",
            Self::ExpectedContinuation => "new message before the previous one finished",
            Self::InvalidUtf8 => "text is not valid UTF-8",
            Self::InvalidClosePayload => "close frame payload of one byte",
            Self::InvalidCloseCode => "close code not allowed on the wire",
            Self::FrameTooBig => "frame too big",
            Self::MessageTooBig => "message too big",
        })
    }
}

impl core::error::Error for ProtocolError {}

/// A frame could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum EncodeError {
    /// The output buffer cannot hold the frame.
    BufferTooSmall,
    /// A control frame payload (or close reason plus code) exceeds 125 bytes.
    ControlFrameTooLong,
    /// A control frame was given FIN clear.
    FragmentedControlFrame,
    /// The close code must not be sent (1005, 1006, 1015, reserved ranges).
    InvalidCloseCode,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BufferTooSmall => "output buffer too small",
            Self::ControlFrameTooLong => "control frame payload longer than 125 bytes",
            Self::FragmentedControlFrame => "control frames cannot be fragmented",
            Self::InvalidCloseCode => "close code not allowed on the wire",
        })
    }
}

impl core::error::Error for EncodeError {}

/// The opening handshake failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum HandshakeError {
    /// The HTTP head does not fit in the buffer.
    HeaderTooLong,
    /// The HTTP head has more header lines than the parser keeps.
    TooManyHeaders,
    /// The HTTP head is not valid HTTP/1.1 syntax.
    Malformed,
    /// The server answered with this status instead of `101`.
    Status(u16),
    /// No `Upgrade: websocket`.
    MissingUpgrade,
    /// No `Connection: upgrade`.
    MissingConnection,
    /// No `Sec-WebSocket-Accept`.
    MissingAccept,
    /// `Sec-WebSocket-Accept` does not match the key we sent.
    BadAccept,
    /// The server picked a subprotocol the client did not offer.
    UnexpectedSubprotocol,
    /// The server negotiated an extension the client did not offer.
    UnexpectedExtension,
    /// The request is not a `GET`.
    BadMethod,
    /// `Sec-WebSocket-Version` is missing or not `13`.
    UnsupportedVersion,
    /// No `Sec-WebSocket-Key`.
    MissingKey,
    /// `Sec-WebSocket-Key` is not 16 bytes in base64.
    BadKey,
    /// No `Host` header in the request.
    MissingHost,
    /// A value to send contains a byte that cannot appear in an HTTP head
    /// (CR, LF, other control characters, or a space in the path).
    InvalidHeaderValue,
    /// The output buffer cannot hold the HTTP head.
    BufferTooSmall,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status(code) => write!(f, "server answered HTTP {code} instead of 101"),
            other => f.write_str(match other {
                Self::HeaderTooLong => "HTTP head too long",
                Self::TooManyHeaders => "too many HTTP headers",
                Self::Malformed => "malformed HTTP head",
                Self::MissingUpgrade => "missing `Upgrade: websocket`",
                Self::MissingConnection => "missing `Connection: upgrade`",
                Self::MissingAccept => "missing Sec-WebSocket-Accept",
                Self::BadAccept => "Sec-WebSocket-Accept does not match the key",
                Self::UnexpectedSubprotocol => "server chose a subprotocol that was not offered",
                Self::UnexpectedExtension => "server negotiated an extension that was not offered",
                Self::BadMethod => "request method is not GET",
                Self::UnsupportedVersion => "Sec-WebSocket-Version is not 13",
                Self::MissingKey => "missing Sec-WebSocket-Key",
                Self::BadKey => "Sec-WebSocket-Key is not 16 bytes of base64",
                Self::MissingHost => "missing Host header",
                Self::InvalidHeaderValue => "value not allowed in an HTTP head",
                Self::BufferTooSmall => "output buffer too small",
                Self::Status(_) => "",
            }),
        }
    }
}

impl core::error::Error for HandshakeError {}

/// An error of the async [`WebSocket`](super::WebSocket) adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Error {
    /// The peer broke the protocol and the connection is closed; a close
    /// frame with [`ProtocolError::close_code`] has been sent
    /// ([`receive`](super::WebSocket::receive)) or is owed
    /// ([`read_message`](super::WebSocket::read_message), sent by
    /// [`flush`](super::WebSocket::flush)).
    Protocol(ProtocolError),
    /// The opening handshake failed.
    Handshake(HandshakeError),
    /// A message to send cannot be framed (too long for a control frame,
    /// invalid close code, transmit buffer too small).
    Encode(EncodeError),
    /// The transport failed.
    Io(embedded_io::ErrorKind),
    /// The transport reached end of stream before the close handshake.
    TransportClosed,
    /// The close handshake has finished (or a close frame was sent):
    /// no more messages can be sent or received.
    Closed,
    /// An earlier write was cancelled mid-frame: the stream holds a partial
    /// frame, so nothing more may be written. Drop the connection.
    WriteCancelled,
}

impl From<ProtocolError> for Error {
    fn from(e: ProtocolError) -> Self {
        Self::Protocol(e)
    }
}

impl From<HandshakeError> for Error {
    fn from(e: HandshakeError) -> Self {
        Self::Handshake(e)
    }
}

impl From<EncodeError> for Error {
    fn from(e: EncodeError) -> Self {
        Self::Encode(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Protocol(e) => write!(f, "protocol error: {e}"),
            Self::Handshake(e) => write!(f, "handshake failed: {e}"),
            Self::Encode(e) => write!(f, "cannot send: {e}"),
            Self::Io(kind) => write!(f, "transport error: {kind:?}"),
            Self::TransportClosed => f.write_str("transport closed before the close handshake"),
            Self::Closed => f.write_str("connection closed"),
            Self::WriteCancelled => f.write_str("a write was cancelled mid-frame"),
        }
    }
}

impl core::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_the_close_codes_of_rfc_6455() {
        assert_eq!(ProtocolError::InvalidUtf8.close_code().as_u16(), 1007);
        assert_eq!(ProtocolError::MessageTooBig.close_code().as_u16(), 1009);
        assert_eq!(ProtocolError::FrameTooBig.close_code().as_u16(), 1009);
        assert_eq!(ProtocolError::ReservedOpcode.close_code().as_u16(), 1002);
        assert_eq!(ProtocolError::MaskedFrame.close_code().as_u16(), 1002);
    }
}
