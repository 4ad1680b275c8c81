//! Messages (what applications send and receive) and fragmentation on send.

use super::close::CloseFrame;
use super::frame::{Frame, OpCode};

/// A complete message, borrowed from a receive buffer or from the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Message<'a> {
    /// UTF-8 text (validated on receive).
    Text(&'a str),
    /// Binary data.
    Binary(&'a [u8]),
    /// A ping; the adapter has already answered it with a pong.
    Ping(&'a [u8]),
    /// A pong, solicited or not.
    Pong(&'a [u8]),
    /// The peer is closing; `None` when it sent no status code.
    Close(Option<CloseFrame<'a>>),
}

impl Message<'_> {
    /// The opcode of the message's first frame.
    pub const fn opcode(&self) -> OpCode {
        match self {
            Self::Text(_) => OpCode::Text,
            Self::Binary(_) => OpCode::Binary,
            Self::Ping(_) => OpCode::Ping,
            Self::Pong(_) => OpCode::Pong,
            Self::Close(_) => OpCode::Close,
        }
    }
}

/// Splits one data message into frames of at most `fragment_size` payload
/// bytes (RFC 6455 5.4): the first frame has the message's opcode, the others
/// are continuations, the last has FIN set. An empty message is one empty
/// frame. Control frames are never fragmented: give them to
/// [`Frame::new`] directly.
///
/// ```
/// use tether_core::ws::{Fragments, OpCode};
/// let frames: Vec<_> = Fragments::new(OpCode::Text, b"hello", 2).collect();
/// assert_eq!(frames.len(), 3);
/// assert_eq!((frames[0].opcode, frames[0].fin, frames[0].payload), (OpCode::Text, false, &b"he"[..]));
/// assert_eq!((frames[2].opcode, frames[2].fin, frames[2].payload), (OpCode::Continuation, true, &b"o"[..]));
/// ```
#[derive(Debug, Clone)]
pub struct Fragments<'a> {
    opcode: OpCode,
    rest: &'a [u8],
    fragment_size: usize,
    done: bool,
}

impl<'a> Fragments<'a> {
    /// Fragments `payload`; a `fragment_size` of zero is treated as one.
    pub const fn new(opcode: OpCode, payload: &'a [u8], fragment_size: usize) -> Self {
        Self {
            opcode,
            rest: payload,
            fragment_size: if fragment_size == 0 { 1 } else { fragment_size },
            done: false,
        }
    }
}

impl<'a> Iterator for Fragments<'a> {
    type Item = Frame<'a>;

    fn next(&mut self) -> Option<Frame<'a>> {
        if self.done {
            return None;
        }
        let take = self.rest.len().min(self.fragment_size);
        let (payload, rest) = self.rest.split_at(take);
        self.rest = rest;
        let fin = rest.is_empty();
        self.done = fin;
        let opcode = self.opcode;
        self.opcode = OpCode::Continuation;
        Some(Frame {
            fin,
            rsv: 0,
            opcode,
            payload,
        })
    }
}

#[cfg(test)]
#[allow(clippy::std_instead_of_alloc, clippy::std_instead_of_core)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn empty_message_is_one_frame() {
        let frames: Vec<Frame<'_>> = Fragments::new(OpCode::Binary, b"", 10).collect();
        assert_eq!(frames.as_slice(), &[Frame::new(OpCode::Binary, b"")]);
    }

    #[test]
    fn fragments_cover_the_payload_exactly() {
        let payload: [u8; 10] = core::array::from_fn(|i| i as u8);
        for size in 0..12 {
            let mut joined = Vec::new();
            let mut count = 0;
            for (i, frame) in Fragments::new(OpCode::Text, &payload, size).enumerate() {
                assert_eq!(
                    frame.opcode,
                    if i == 0 {
                        OpCode::Text
                    } else {
                        OpCode::Continuation
                    }
                );
                assert!(frame.payload.len() <= size.max(1));
                joined.extend_from_slice(frame.payload);
                count += 1;
                assert_eq!(frame.fin, joined.len() == payload.len());
            }
            assert_eq!(joined.as_slice(), &payload);
            assert_eq!(count, payload.len().div_ceil(size.max(1)));
        }
    }
}
