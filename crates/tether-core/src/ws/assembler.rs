//! Receive side, sans-IO: turns bytes in one caller buffer into messages.
//!
//! The buffer holds, in order, the message being reassembled from fragments
//! and the bytes not yet decoded:
//!
//! ```text
//! 0            message_len        start                end          len
//! | assembled  |  (free: consumed  | undecoded input   |  free space |
//! | fragments  |   frames)         | (partial frames)  |  (read here)|
//! ```
//!
//! A frame is decoded only once it is complete, so a frame that arrives in
//! pieces decodes exactly like one that arrives whole. Unfragmented messages
//! are returned in place (zero copy); fragments are unmasked in place and
//! moved down to `message_len`. Control frames may arrive between fragments.

use super::Status;
use super::close::CloseFrame;
use super::config::Config;
use super::error::ProtocolError;
use super::frame::{FrameHeader, OpCode};
use super::mask::apply_mask;
use super::message::Message;
use super::utf8::Utf8Validator;

/// Reassembles messages from frames in a caller-provided receive buffer,
/// enforcing the fragmentation, UTF-8, close-payload and size rules of RFC
/// 6455. Pass the same buffer to every call.
///
/// ```
/// use tether_core::ws::{Assembler, Config, Message, Status};
/// let mut buf = [0u8; 64];
/// let mut assembler = Assembler::new(Config::client());
/// // A text message in two fragments, delivered one byte at a time.
/// let wire = [0x01, 0x02, b'h', b'e', 0x80, 0x01, b'y'];
/// for (i, byte) in wire.iter().enumerate() {
///     assert_eq!(assembler.poll(&mut buf).unwrap(), Status::Partial);
///     assembler.space(&mut buf)[0] = *byte;
///     assembler.filled(1);
/// }
/// assert!(matches!(assembler.poll(&mut buf), Ok(Status::Complete(_))));
/// assert_eq!(assembler.message(&buf), Some(Message::Text("hey")));
/// ```
#[derive(Debug, Clone)]
pub struct Assembler {
    config: Config,
    message_len: usize,
    start: usize,
    end: usize,
    fragmented: Option<OpCode>,
    utf8: Utf8Validator,
    ready: Option<Ready>,
}

#[derive(Debug, Clone, Copy)]
struct Ready {
    opcode: OpCode,
    start: usize,
    end: usize,
    assembled: bool,
}

impl Assembler {
    /// An assembler with an empty buffer.
    pub const fn new(config: Config) -> Self {
        Self {
            config,
            message_len: 0,
            start: 0,
            end: 0,
            fragmented: None,
            utf8: Utf8Validator::new(),
            ready: None,
        }
    }

    /// The configuration in use.
    pub const fn config(&self) -> &Config {
        &self.config
    }

    /// Free space at the end of `buf` to read transport bytes into; report
    /// how many were read with [`Assembler::filled`]. Moves undecoded bytes
    /// down first when that makes room, which invalidates the message of the
    /// last [`Assembler::poll`]. Empty only when a frame is too big for the
    /// buffer, which `poll` reports as an error first.
    pub fn space<'b>(&mut self, buf: &'b mut [u8]) -> &'b mut [u8] {
        self.release(buf.len());
        if self.start > self.message_len {
            buf.copy_within(self.start..self.end, self.message_len);
            self.end = self.end.saturating_sub(self.start - self.message_len);
            self.start = self.message_len;
        }
        buf.get_mut(self.end..).unwrap_or_default()
    }

    /// Records that `n` bytes were written to the start of the last
    /// [`Assembler::space`].
    pub fn filled(&mut self, n: usize) {
        self.end = self.end.saturating_add(n);
    }

    /// Decodes buffered frames until a message is complete (its opcode is
    /// returned; read it with [`Assembler::message`]) or more bytes are
    /// needed (`Partial`). Pings, pongs and closes are messages too, and may
    /// arrive between the fragments of a data message.
    pub fn poll(&mut self, buf: &mut [u8]) -> Result<Status<OpCode>, ProtocolError> {
        self.release(buf.len());
        loop {
            let Some(input) = buf.get(self.start..self.end) else {
                return Ok(Status::Partial);
            };
            let (header, header_len) = match FrameHeader::parse(input)? {
                Status::Complete(parsed) => parsed,
                Status::Partial => return Ok(Status::Partial),
            };
            let payload_len = header.validate(&self.config)?;
            self.check_sequence(&header, payload_len)?;
            let frame_len = header_len
                .checked_add(payload_len)
                .ok_or(ProtocolError::FrameTooBig)?;
            // After compaction the frame starts at `message_len`: if it
            // cannot fit then, it never will.
            if self
                .message_len
                .checked_add(frame_len)
                .is_none_or(|needed| needed > buf.len())
            {
                return Err(ProtocolError::MessageTooBig);
            }
            if input.len() < frame_len {
                return Ok(Status::Partial);
            }
            // Both within `end`: `input.len() >= frame_len` was checked.
            let payload_start = self.start.saturating_add(header_len);
            let payload_end = self.start.saturating_add(frame_len);
            self.start = payload_end;
            let Some(payload) = buf.get_mut(payload_start..payload_end) else {
                return Ok(Status::Partial);
            };
            if let Some(key) = header.mask {
                apply_mask(payload, key);
            }
            match (header.opcode, header.fin) {
                (OpCode::Continuation, fin) => {
                    self.append(buf, payload_start, payload_end)?;
                    if fin {
                        let opcode = self.fragmented.take().unwrap_or(OpCode::Binary);
                        if opcode == OpCode::Text {
                            self.utf8.finish()?;
                        }
                        return Ok(self.make_ready(opcode, 0, self.message_len, true));
                    }
                }
                (OpCode::Text | OpCode::Binary, false) => {
                    self.fragmented = Some(header.opcode);
                    self.utf8 = Utf8Validator::new();
                    self.append(buf, payload_start, payload_end)?;
                }
                // Whole messages: unfragmented data, and control frames
                // (which `FrameHeader::parse` guarantees are final).
                (opcode, _) => {
                    match opcode {
                        OpCode::Close => {
                            CloseFrame::parse(payload)?;
                        }
                        OpCode::Text => {
                            core::str::from_utf8(payload)
                                .map_err(|_| ProtocolError::InvalidUtf8)?;
                        }
                        _ => {}
                    }
                    return Ok(self.make_ready(opcode, payload_start, payload_end, false));
                }
            }
        }
    }

    /// The message made complete by the last [`Assembler::poll`], borrowed
    /// from `buf`; `None` when there is none.
    pub fn message<'b>(&self, buf: &'b [u8]) -> Option<Message<'b>> {
        let ready = self.ready?;
        let payload = buf.get(ready.start..ready.end)?;
        Some(match ready.opcode {
            OpCode::Text => Message::Text(core::str::from_utf8(payload).ok()?),
            OpCode::Binary | OpCode::Continuation => Message::Binary(payload),
            OpCode::Ping => Message::Ping(payload),
            OpCode::Pong => Message::Pong(payload),
            OpCode::Close => Message::Close(CloseFrame::parse(payload).ok()?),
        })
    }

    fn make_ready(
        &mut self,
        opcode: OpCode,
        start: usize,
        end: usize,
        assembled: bool,
    ) -> Status<OpCode> {
        self.ready = Some(Ready {
            opcode,
            start,
            end,
            assembled,
        });
        Status::Complete(opcode)
    }

    /// Forgets the last message, and rewinds an empty input region.
    fn release(&mut self, capacity: usize) {
        if let Some(ready) = self.ready.take()
            && ready.assembled
        {
            self.message_len = 0;
        }
        // Keep the indexes within the buffer whatever the caller did.
        self.end = self.end.min(capacity);
        self.start = self.start.min(self.end);
        self.message_len = self.message_len.min(self.start);
        if self.start == self.end {
            self.start = self.message_len;
            self.end = self.message_len;
        }
    }

    /// Rejects frames out of sequence and messages over the limit before
    /// waiting for their payload.
    fn check_sequence(
        &self,
        header: &FrameHeader,
        payload_len: usize,
    ) -> Result<(), ProtocolError> {
        let message_len = match (header.opcode, self.fragmented) {
            (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Continuation, Some(_)) => self.message_len,
            (OpCode::Text | OpCode::Binary, Some(_)) => {
                return Err(ProtocolError::ExpectedContinuation);
            }
            (OpCode::Text | OpCode::Binary, None) => 0,
            (OpCode::Close | OpCode::Ping | OpCode::Pong, _) => return Ok(()),
        };
        if message_len
            .checked_add(payload_len)
            .is_none_or(|total| total > self.config.max_message_size())
        {
            return Err(ProtocolError::MessageTooBig);
        }
        Ok(())
    }

    /// Moves a fragment's payload down to the end of the assembled message.
    fn append(&mut self, buf: &mut [u8], start: usize, end: usize) -> Result<(), ProtocolError> {
        buf.copy_within(start..end, self.message_len);
        let new_len = self.message_len.saturating_add(end.saturating_sub(start));
        if self.fragmented == Some(OpCode::Text) {
            let fragment = buf.get(self.message_len..new_len).unwrap_or_default();
            self.utf8.feed(fragment)?;
        }
        self.message_len = new_len;
        Ok(())
    }
}
