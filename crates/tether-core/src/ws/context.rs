//! The frame core, sans-IO: one WebSocket connection's state after the
//! opening handshake, over caller buffers, never touching a socket (the
//! shape of tungstenite's `WebSocketContext`).
//!
//! ```text
//!  transport bytes ──► space()/filled() ──► poll() ──► message()   (frames in)
//!  payload + key   ──► encode() ──► tx bytes ──► transport          (frames out)
//! ```
//!
//! [`Context`] owns the receive side (the [`Assembler`]), the close
//! handshake's state and the close frame the peer is owed (the echo of its
//! close, or the code of a protocol error). It encodes frames, fragmenting
//! data messages to the transmit buffer and the configured fragment size,
//! masking them with a key the caller draws from its random source (RFC
//! 6455 5.3). It is compiled once: the async [`WebSocket`](super::WebSocket)
//! and the device client's link both run on it.

use super::Status;
use super::assembler::Assembler;
use super::config::{Config, Role};
use super::error::{EncodeError, Error, ProtocolError};
use super::frame::{Frame, MAX_HEADER_LEN, OpCode};
use super::message::Message;

/// Where the close handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// We sent a close frame and wait for the peer's.
    CloseSent,
    Closed,
}

/// One WebSocket connection's protocol state, sans-IO: frames in through
/// [`Context::space`], [`Context::filled`], [`Context::poll`] and
/// [`Context::message`]; frames out through [`Context::encode`] and
/// [`Context::encode_owed_close`]. Pass the same receive buffer to every
/// call.
///
/// ```
/// use tether_core::ws::{Config, Context, Message, OpCode, Status};
/// let (mut rx, mut tx) = ([0u8; 64], [0u8; 64]);
/// let mut context = Context::new(Config::client());
/// // Frames out: a masked text frame with the caller's key.
/// let mut offset = 0;
/// let n = context
///     .encode(OpCode::Text, b"hi", &mut offset, [1, 2, 3, 4], &mut tx)
///     .unwrap();
/// assert_eq!((n, offset), (8, 2));
/// // Frames in: a server's ping.
/// let space = context.space(&mut rx).unwrap();
/// space[..3].copy_from_slice(&[0x89, 0x01, b'!']);
/// context.filled(3);
/// assert_eq!(context.poll(&mut rx), Ok(Status::Complete(OpCode::Ping)));
/// assert_eq!(context.message(&rx), Ok(Message::Ping(b"!")));
/// ```
#[derive(Debug, Clone)]
pub struct Context {
    assembler: Assembler,
    state: State,
    /// The close frame owed to the peer: `Some(0)` echoes a close without
    /// code, `Some(code)` sends `code`.
    owed_close: Option<u16>,
}

impl Context {
    /// An open connection with an empty receive buffer.
    pub const fn new(config: Config) -> Self {
        Self {
            assembler: Assembler::new(config),
            state: State::Open,
            owed_close: None,
        }
    }

    /// An open connection whose receive buffer already holds `buffered`
    /// bytes at its start (what followed the handshake's reply).
    pub fn with_buffered(config: Config, buffered: usize) -> Self {
        let mut context = Self::new(config);
        context.assembler.filled(buffered);
        context
    }

    /// The configuration in use.
    pub const fn config(&self) -> &Config {
        self.assembler.config()
    }

    /// Free space at the end of `rx` to read transport bytes into (report
    /// them with [`Context::filled`]). Invalidates the last message.
    ///
    /// # Errors
    /// [`ProtocolError::MessageTooBig`] when a frame does not fit the
    /// buffer: the connection is closed and owes the peer 1009.
    pub fn space<'b>(&mut self, rx: &'b mut [u8]) -> Result<&'b mut [u8], Error> {
        let space = self.assembler.space(rx);
        if space.is_empty() {
            return Err(self.fail(ProtocolError::MessageTooBig));
        }
        Ok(space)
    }

    /// Records that `n` bytes were read into the start of the last
    /// [`Context::space`].
    pub fn filled(&mut self, n: usize) {
        self.assembler.filled(n);
    }

    /// Decodes buffered frames until a message is complete (read it with
    /// [`Context::message`]) or more bytes are needed. A close from the
    /// peer closes the connection; on an open one it owes the echo.
    ///
    /// # Errors
    /// [`Error::Closed`] once the close handshake is over;
    /// [`Error::Protocol`] when the peer broke the protocol: the connection
    /// is closed and owes the peer the error's close code.
    pub fn poll(&mut self, rx: &mut [u8]) -> Result<Status<OpCode>, Error> {
        if self.state == State::Closed {
            return Err(Error::Closed);
        }
        let opcode = match self.assembler.poll(rx) {
            Ok(Status::Complete(opcode)) => opcode,
            Ok(Status::Partial) => return Ok(Status::Partial),
            Err(e) => return Err(self.fail(e)),
        };
        if opcode == OpCode::Close {
            if self.state == State::Open {
                self.owed_close = Some(match self.assembler.message(rx) {
                    Some(Message::Close(Some(frame))) => frame.code.as_u16(),
                    _ => 0,
                });
            }
            self.state = State::Closed;
        }
        Ok(Status::Complete(opcode))
    }

    /// The message of the last complete [`Context::poll`], borrowed from
    /// `rx`.
    ///
    /// # Errors
    /// [`ProtocolError::InvalidUtf8`] when there is none (`poll` validated
    /// every message it completed).
    pub fn message<'b>(&self, rx: &'b [u8]) -> Result<Message<'b>, Error> {
        self.assembler
            .message(rx)
            .ok_or(Error::Protocol(ProtocolError::InvalidUtf8))
    }

    /// Encodes the frame of a message that starts at `*offset` of
    /// `payload` into `tx` and moves `*offset` past it; the message is sent
    /// when `*offset` reaches `payload.len()` (an empty message is one
    /// frame). Data messages are cut to the configured fragment size and to
    /// what `tx` holds; control frames are never cut. Clients mask with
    /// `key`, which must be fresh and unpredictable for every frame;
    /// servers ignore it. The final frame of a close closes our side.
    ///
    /// # Errors
    /// [`Error::Closed`] after a close was sent or the connection closed;
    /// [`Error::Encode`] when the frame does not fit `tx` or is not a legal
    /// control frame (nothing was encoded).
    pub fn encode(
        &mut self,
        opcode: OpCode,
        payload: &[u8],
        offset: &mut usize,
        key: [u8; 4],
        tx: &mut [u8],
    ) -> Result<usize, Error> {
        if self.state != State::Open {
            return Err(Error::Closed);
        }
        let rest = payload.get(*offset..).unwrap_or_default();
        let (first, take) = if opcode.is_control() {
            (true, rest.len())
        } else {
            let room = tx.len().saturating_sub(MAX_HEADER_LEN);
            if room == 0 {
                return Err(Error::Encode(EncodeError::BufferTooSmall));
            }
            let size = self.config().fragment_size().min(room);
            (*offset == 0, rest.len().min(size))
        };
        let fin = take == rest.len();
        let frame = Frame {
            fin,
            rsv: 0,
            opcode: if first { opcode } else { OpCode::Continuation },
            payload: rest.get(..take).unwrap_or_default(),
        };
        let mask = match self.config().role() {
            Role::Client => Some(key),
            Role::Server => None,
        };
        let len = frame.encode(mask, tx)?;
        *offset = offset.saturating_add(take);
        if fin && opcode == OpCode::Close {
            self.state = State::CloseSent;
        }
        Ok(len)
    }

    /// Encodes the close frame the peer is owed (the echo of its close, or
    /// the code of a protocol error) into `tx`, masked with `key` for a
    /// client; `None` if none is owed. Owed only once.
    pub fn encode_owed_close(&mut self, key: [u8; 4], tx: &mut [u8]) -> Option<usize> {
        let code = self.owed_close.take()?;
        let bytes = code.to_be_bytes();
        let payload = if code == 0 { &[][..] } else { &bytes[..] };
        let mask = match self.config().role() {
            Role::Client => Some(key),
            Role::Server => None,
        };
        Frame::new(OpCode::Close, payload).encode(mask, tx).ok()
    }

    /// Whether a close frame is owed to the peer.
    pub const fn owes_close(&self) -> bool {
        self.owed_close.is_some()
    }

    /// Whether the close handshake has finished or the connection failed.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Whether data may still be sent (no close sent or received).
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// Closes the connection without a close handshake (the transport
    /// failed, or a frame was cut short); nothing more is owed.
    pub fn abort(&mut self) {
        self.state = State::Closed;
        self.owed_close = None;
    }

    /// Closes the connection after a protocol error; the close frame with
    /// the error's code is owed.
    fn fail(&mut self, error: ProtocolError) -> Error {
        warn!(
            "ws: protocol error, closing with {}",
            error.close_code().as_u16()
        );
        if self.state == State::Open {
            self.owed_close = Some(error.close_code().as_u16());
        }
        self.state = State::Closed;
        Error::Protocol(error)
    }
}

#[cfg(test)]
#[allow(clippy::std_instead_of_alloc, clippy::std_instead_of_core)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;
    use crate::ws::{CloseFrame, apply_mask};

    /// Feeds `bytes` to `context` and polls once.
    fn feed(context: &mut Context, rx: &mut [u8], bytes: &[u8]) -> Result<Status<OpCode>, Error> {
        let space = context.space(rx)?;
        space[..bytes.len()].copy_from_slice(bytes);
        context.filled(bytes.len());
        context.poll(rx)
    }

    /// Decodes a client's frame: (fin, opcode bits, unmasked payload).
    fn unmask(frame: &[u8]) -> (bool, u8, Vec<u8>) {
        let len = usize::from(frame[1] & 0x7F);
        assert!(len < 126);
        let key = [frame[2], frame[3], frame[4], frame[5]];
        let mut payload = frame[6..6 + len].to_vec();
        apply_mask(&mut payload, key);
        (frame[0] & 0x80 != 0, frame[0] & 0x0F, payload)
    }

    #[test]
    fn data_messages_are_fragmented_to_the_transmit_buffer() {
        let mut context = Context::new(Config::client().with_fragment_size(4));
        let mut tx = [0u8; 32];
        let payload = b"0123456789";
        let mut offset = 0;
        let mut frames = Vec::new();
        loop {
            let n = context
                .encode(OpCode::Binary, payload, &mut offset, [9, 8, 7, 6], &mut tx)
                .unwrap();
            frames.push(unmask(&tx[..n]));
            if offset == payload.len() {
                break;
            }
        }
        assert_eq!(
            frames,
            [
                (false, 2, b"0123".to_vec()),
                (false, 0, b"4567".to_vec()),
                (true, 0, b"89".to_vec()),
            ]
        );
        // An empty message is one frame.
        let mut offset = 0;
        let n = context
            .encode(OpCode::Text, b"", &mut offset, [1; 4], &mut tx)
            .unwrap();
        assert_eq!(unmask(&tx[..n]), (true, 1, Vec::new()));
    }

    #[test]
    fn control_frames_are_never_cut_and_a_close_ends_sending() {
        let mut context = Context::new(Config::client().with_fragment_size(1));
        let mut tx = [0u8; 16];
        let mut offset = 0;
        let n = context
            .encode(OpCode::Ping, b"abcd", &mut offset, [0; 4], &mut tx)
            .unwrap();
        assert_eq!(unmask(&tx[..n]), (true, 9, b"abcd".to_vec()));
        // Too long for the buffer: an error, nothing encoded.
        let mut offset = 0;
        assert_eq!(
            context.encode(OpCode::Pong, &[0; 20], &mut offset, [0; 4], &mut tx),
            Err(Error::Encode(EncodeError::BufferTooSmall))
        );
        assert_eq!(offset, 0);
        let mut offset = 0;
        context
            .encode(OpCode::Close, &[3, 232], &mut offset, [0; 4], &mut tx)
            .unwrap();
        assert!(!context.is_open());
        let mut offset = 0;
        assert_eq!(
            context.encode(OpCode::Binary, b"x", &mut offset, [0; 4], &mut tx),
            Err(Error::Closed)
        );
    }

    #[test]
    fn a_transmit_buffer_without_room_for_a_header_is_refused() {
        let mut context = Context::new(Config::client());
        let mut tx = [0u8; MAX_HEADER_LEN];
        let mut offset = 0;
        assert_eq!(
            context.encode(OpCode::Binary, b"x", &mut offset, [0; 4], &mut tx),
            Err(Error::Encode(EncodeError::BufferTooSmall))
        );
    }

    #[test]
    fn a_peer_close_is_owed_its_echo_once() {
        let mut context = Context::new(Config::client());
        let mut rx = [0u8; 64];
        let close = [0x88, 0x04, 0x0F, 0xA5, b'o', b'k'];
        assert_eq!(
            feed(&mut context, &mut rx, &close),
            Ok(Status::Complete(OpCode::Close))
        );
        assert_eq!(
            context.message(&rx),
            Ok(Message::Close(Some(CloseFrame {
                code: crate::ws::CloseCode::new(4005),
                reason: "ok"
            })))
        );
        assert!(context.is_closed() && context.owes_close());
        let mut tx = [0u8; 16];
        let n = context.encode_owed_close([5; 4], &mut tx).unwrap();
        assert_eq!(unmask(&tx[..n]), (true, 8, 4005u16.to_be_bytes().to_vec()));
        assert_eq!(context.encode_owed_close([5; 4], &mut tx), None);
        assert_eq!(context.poll(&mut rx), Err(Error::Closed));
        // A close without a code is echoed without one.
        let mut context = Context::new(Config::client());
        feed(&mut context, &mut rx, &[0x88, 0x00]).unwrap();
        let n = context.encode_owed_close([5; 4], &mut tx).unwrap();
        assert_eq!(unmask(&tx[..n]), (true, 8, Vec::new()));
    }

    #[test]
    fn the_reply_to_our_close_owes_nothing() {
        let mut context = Context::new(Config::client());
        let (mut rx, mut tx) = ([0u8; 64], [0u8; 16]);
        let mut offset = 0;
        context
            .encode(OpCode::Close, &[3, 232], &mut offset, [0; 4], &mut tx)
            .unwrap();
        // Data may still arrive before the reply.
        assert_eq!(
            feed(&mut context, &mut rx, &[0x82, 0x01, 7]),
            Ok(Status::Complete(OpCode::Binary))
        );
        assert_eq!(
            feed(&mut context, &mut rx, &[0x88, 0x02, 3, 232]),
            Ok(Status::Complete(OpCode::Close))
        );
        assert!(context.is_closed() && !context.owes_close());
    }

    #[test]
    fn protocol_errors_owe_their_close_code() {
        // (input, expected error, close code)
        let cases: [(&[u8], ProtocolError, u16); 4] = [
            // A masked frame from a server.
            (
                &[0x82, 0x81, 1, 2, 3, 4, 5],
                ProtocolError::MaskedFrame,
                1002,
            ),
            // Invalid UTF-8 in a text message.
            (&[0x81, 0x01, 0xFF], ProtocolError::InvalidUtf8, 1007),
            // A continuation with nothing to continue.
            (&[0x80, 0x00], ProtocolError::UnexpectedContinuation, 1002),
            // A frame larger than the whole buffer.
            (
                &[0x82, 0x7E, 0x01, 0x00],
                ProtocolError::MessageTooBig,
                1009,
            ),
        ];
        for (input, error, code) in cases {
            let mut context = Context::new(Config::client());
            let mut rx = [0u8; 64];
            assert_eq!(
                feed(&mut context, &mut rx, input),
                Err(Error::Protocol(error))
            );
            assert!(context.is_closed());
            let mut tx = [0u8; 16];
            let n = context.encode_owed_close([0; 4], &mut tx).unwrap();
            assert_eq!(unmask(&tx[..n]), (true, 8, code.to_be_bytes().to_vec()));
        }
    }

    #[test]
    fn a_partial_header_with_no_room_left_is_too_big() {
        // Fragments fill the buffer; the next header cannot fit.
        let mut context = Context::new(Config::client());
        let mut rx = [0u8; 16];
        assert_eq!(
            feed(
                &mut context,
                &mut rx,
                &[0x02, 0x0C, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
            ),
            Ok(Status::Partial)
        );
        // The continuation's header announces a 64-bit length: it needs
        // ten bytes, four are left.
        assert_eq!(
            feed(&mut context, &mut rx, &[0x80, 0x7F, 0, 0]),
            Ok(Status::Partial)
        );
        assert_eq!(
            context.space(&mut rx),
            Err(Error::Protocol(ProtocolError::MessageTooBig))
        );
        assert!(context.owes_close());
    }

    #[test]
    fn a_server_context_sends_unmasked_frames() {
        let mut context = Context::new(Config::server());
        let mut tx = [0u8; 16];
        let mut offset = 0;
        let n = context
            .encode(OpCode::Binary, b"ab", &mut offset, [1, 2, 3, 4], &mut tx)
            .unwrap();
        assert_eq!(&tx[..n], &[0x82, 0x02, b'a', b'b']);
    }

    #[test]
    fn abort_owes_nothing() {
        let mut context = Context::new(Config::client());
        let mut rx = [0u8; 16];
        let _ = feed(&mut context, &mut rx, &[0x88, 0x00]);
        context.abort();
        assert!(!context.owes_close());
        assert_eq!(context.poll(&mut rx), Err(Error::Closed));
    }
}
