//! What a failed WebSocket read means, for both endpoints: the peer went
//! away, or it broke RFC 6455 and is owed a close frame with the RFC's code
//! (1002 protocol error, 1007 invalid data, 1009 too big), a log line with
//! its address and a count in `tether_rejected_total`.
//!
//! tungstenite detects the violations (unmasked client frame, fragmented
//! or oversized control frame, RSV bits, reserved opcode, invalid UTF-8,
//! bad close payload) and returns an error without answering; axum wraps
//! the error, so it is downcast here to the tungstenite version axum uses.

use std::net::SocketAddr;

use axum::extract::ws::{CloseFrame, Message};
use tungstenite_axum::error::{Error as WsError, ProtocolError};

use crate::metrics::Metrics;

/// RFC 6455 7.4.1: the peer broke the protocol.
pub(crate) const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// RFC 6455 7.4.1: a text message that is not UTF-8 (or a close reason).
pub(crate) const CLOSE_INVALID_DATA: u16 = 1007;
/// RFC 6455 7.4.1: a frame or message over the size limit.
pub(crate) const CLOSE_TOO_BIG: u16 = 1009;

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

/// Logs and counts a violation by `peer` on `endpoint`.
pub(crate) fn record(
    metrics: &Metrics,
    endpoint: &str,
    peer: SocketAddr,
    code: u16,
    reason: &str,
    metric: &str,
) {
    metrics.rejected(metric);
    tracing::info!(%peer, endpoint, code, reason, "WebSocket protocol violation: closing");
}

/// The close frame for a violation.
pub(crate) fn close_message(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}
