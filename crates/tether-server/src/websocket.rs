//! What both WebSocket endpoints share: the standard close codes the server
//! uses, what a failed read means, and closing with deadlines (a peer that
//! stops reading cannot hold a closing connection open).
//!
//! A failed read is either a connection that is gone, or a peer that broke
//! RFC 6455 and is owed a close frame with the RFC's code (1002 protocol
//! error, 1007 invalid data, 1009 too big), a log line with its address and
//! a count in `tether_rejected_total`. tungstenite detects the violations
//! (unmasked client frame, fragmented or oversized control frame, RSV bits,
//! reserved opcode, invalid UTF-8, bad close payload) and returns an error
//! without answering; axum wraps the error, so [`classify`] downcasts it to
//! the tungstenite version axum uses.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use tether_proto::ErrorCode;
use tungstenite_axum::error::{Error as WsError, ProtocolError};

use crate::metrics::Metrics;

/// Close code for a session ended by the server going away.
pub(crate) const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code for the handshake and idle timeouts (policy violation).
pub(crate) const CLOSE_POLICY: u16 = 1008;
/// Close code for a frame that breaks RFC 6455.
pub(crate) const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// Close code for a data frame of a type the connection does not take
/// (binary to the receiver endpoint, the other encoding in a device
/// session).
pub(crate) const CLOSE_UNSUPPORTED_DATA: u16 = 1003;
/// Close code for a text frame (or close reason) that is not UTF-8.
pub(crate) const CLOSE_INVALID_DATA: u16 = 1007;
/// Close code for a frame or message over the size limit.
pub(crate) const CLOSE_TOO_BIG: u16 = 1009;
/// Close code for "the server is at a connection limit, retry later" when
/// the limit is found only after the upgrade (a receiver that
/// authenticated with its first message).
pub(crate) const CLOSE_TRY_AGAIN_LATER: u16 = 1013;

/// How long a closing connection waits for the peer's close frame, and at
/// most for its own close frame to be taken.
pub(crate) const CLOSE_LINGER: Duration = Duration::from_millis(500);

/// The close reason (and receiver error message) for a decoding failure
/// (`docs/protocol.md` section 8 asks for the supported versions on 4002).
pub(crate) fn decode_reason(error: tether_proto::DecodeError) -> &'static str {
    match error {
        tether_proto::DecodeError::UnsupportedVersion { .. } => "supported versions: 1",
        tether_proto::DecodeError::UnknownMessage => "unknown message kind",
        tether_proto::DecodeError::TooLong { .. } => "a field is too long",
        tether_proto::DecodeError::InvalidField { .. } => "a field is invalid",
        _ => "malformed message",
    }
}

/// Why a read from a WebSocket failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadFailure {
    /// The connection ended (reset, closed): nobody to answer.
    Gone,
    /// The peer broke the protocol: close with `code` and `reason`.
    Violation {
        /// The RFC 6455 close code.
        code: u16,
        /// The close reason, for the peer's developer.
        reason: &'static str,
        /// The `tether_rejected_total` kind.
        metric: &'static str,
    },
}

/// Classifies a read error of axum's WebSocket.
pub(crate) fn classify(error: &axum::Error) -> ReadFailure {
    let source = std::error::Error::source(error);
    let Some(error) = source.and_then(|source| source.downcast_ref::<WsError>()) else {
        return ReadFailure::Gone;
    };
    let violation = |code, reason, metric| ReadFailure::Violation {
        code,
        reason,
        metric,
    };
    match error {
        WsError::Capacity(_) => violation(CLOSE_TOO_BIG, "message too large", "too_large"),
        WsError::Utf8(_) => violation(
            CLOSE_INVALID_DATA,
            "text is not UTF-8",
            "websocket_invalid_utf8",
        ),
        WsError::Protocol(protocol) => match protocol_reason(protocol) {
            Some(reason) => violation(CLOSE_PROTOCOL_ERROR, reason, "websocket_protocol_error"),
            None => ReadFailure::Gone,
        },
        _ => ReadFailure::Gone,
    }
}

/// The close reason for a protocol error of the peer; `None` for errors
/// that only mean the connection is gone.
fn protocol_reason(error: &ProtocolError) -> Option<&'static str> {
    Some(match error {
        ProtocolError::UnmaskedFrameFromClient => "unmasked frame from a client",
        ProtocolError::NonZeroReservedBits => "reserved bits set",
        ProtocolError::FragmentedControlFrame => "fragmented control frame",
        ProtocolError::ControlFrameTooBig => "control frame longer than 125 bytes",
        ProtocolError::UnknownControlFrameType(_)
        | ProtocolError::UnknownDataFrameType(_)
        | ProtocolError::InvalidOpcode(_) => "reserved opcode",
        ProtocolError::UnexpectedContinueFrame | ProtocolError::ExpectedFragment(_) => {
            "fragments out of order"
        }
        ProtocolError::InvalidCloseSequence => "invalid close frame",
        ProtocolError::ReceivedAfterClosing => "data after a close frame",
        _ => return None,
    })
}

/// Whether a received close frame is tungstenite's stand-in for one whose
/// code may not be sent (RFC 6455 7.4: e.g. 999, 1005, 1006): tungstenite
/// replaces it with 1002 and queues its 1002 answer, which goes out when the
/// socket is next flushed.
pub(crate) fn is_invalid_close(frame: Option<&CloseFrame>) -> bool {
    frame.is_some_and(|frame| {
        frame.code == CLOSE_PROTOCOL_ERROR && frame.reason.as_str() == "Protocol violation"
    })
}

/// Logs and counts a violation by `peer` on `endpoint` (`device`,
/// `receiver`).
pub(crate) fn record_violation(
    metrics: &Metrics,
    endpoint: &str,
    peer: SocketAddr,
    code: u16,
    reason: &str,
    metric: &str,
) {
    if code == CLOSE_TOO_BIG {
        tracing::warn!(%peer, endpoint, "message too large: closing");
    } else {
        tracing::info!(%peer, endpoint, code, reason, "WebSocket protocol violation: closing");
    }
    metrics.rejected(metric);
}

/// Records a close frame whose code may not be sent (see
/// [`is_invalid_close`]).
pub(crate) fn record_invalid_close(metrics: &Metrics, endpoint: &str, peer: SocketAddr) {
    record_violation(
        metrics,
        endpoint,
        peer,
        CLOSE_PROTOCOL_ERROR,
        "invalid close code",
        "websocket_protocol_error",
    );
}

/// A close frame.
pub(crate) fn close_frame(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// The close code of a protocol error (`4000 + code`).
pub(crate) fn error_close_code(code: ErrorCode) -> u16 {
    code.close_code().unwrap_or(4000 + ErrorCode::INTERNAL.0)
}

/// Sends a close frame (giving up after [`CLOSE_LINGER`] if the peer does
/// not take it) and waits (briefly) for the peer's answer, so the close
/// frame is read before the TCP connection goes away: closing a socket with
/// unread input makes the kernel send a reset, and a reset makes the peer
/// drop data it has not read yet, close frame included.
pub(crate) async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    match tokio::time::timeout(CLOSE_LINGER, socket.send(close_frame(code, reason))).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) | Err(_) => return,
    }
    await_close(socket).await;
}

/// Reads (and drops) what the peer still sends until its close frame, for
/// at most [`CLOSE_LINGER`]; if the connection fails first, waits out the
/// linger so the peer can read what was sent.
pub(crate) async fn await_close<S, E>(stream: &mut S)
where
    S: futures_util::Stream<Item = Result<Message, E>> + Unpin,
{
    use futures_util::StreamExt;
    let deadline = tokio::time::Instant::now() + CLOSE_LINGER;
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(Message::Close(_)))) | Err(_) => return,
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => {
                tokio::time::sleep_until(deadline).await;
                return;
            }
        }
    }
}

/// [`close`] with a protocol error's close code.
pub(crate) async fn close_error(socket: &mut WebSocket, code: ErrorCode, reason: &str) {
    close(socket, error_close_code(code), reason).await;
}

/// Why a message was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendError {
    /// The peer did not take it within the write timeout.
    TimedOut,
    /// The socket failed or is closed.
    Gone,
}

/// Sends one message within `timeout`.
pub(crate) async fn send_within<S>(
    sink: &mut S,
    message: Message,
    timeout: Duration,
) -> Result<(), SendError>
where
    S: futures_util::Sink<Message> + Unpin,
{
    use futures_util::SinkExt;
    match tokio::time::timeout(timeout, sink.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(SendError::Gone),
        Err(_) => Err(SendError::TimedOut),
    }
}
