//! What both WebSocket endpoints share: the standard close codes the server
//! uses, and closing with deadlines (a peer that stops reading cannot hold a
//! closing connection open).

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use tether_proto::ErrorCode;

/// Close code for a session ended by the server going away.
pub(crate) const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code for the handshake and idle timeouts (policy violation).
pub(crate) const CLOSE_POLICY: u16 = 1008;
/// Close code for a frame or message over the size limit.
pub(crate) const CLOSE_TOO_BIG: u16 = 1009;
/// Close code for "the server is at a connection limit, retry later" when
/// the limit is found only after the upgrade (a receiver that
/// authenticated with its first message).
pub(crate) const CLOSE_TRY_AGAIN_LATER: u16 = 1013;

/// How long a closing connection waits for the peer's close frame, and at
/// most for its own close frame to be taken.
pub(crate) const CLOSE_LINGER: Duration = Duration::from_millis(500);

/// Whether a WebSocket read error is tungstenite's size limit
/// (`Error::Capacity`; axum hides the type, not the text).
pub(crate) fn is_too_large(error: &str) -> bool {
    error.contains("Space limit exceeded")
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
