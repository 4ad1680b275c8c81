//! WebSocket (RFC 6455), sans-IO, with no allocation.
//!
//! | layer | what it does |
//! |---|---|
//! | [`ClientHandshake`], [`Request`] | opening handshake over caller buffers |
//! | [`FrameHeader`], [`Frame`] | parse/emit one frame; [`apply_mask`] |
//! | [`Fragments`], [`Assembler`] | fragmentation on send, reassembly and UTF-8 checks on receive |
//! | [`CloseFrame`], [`CloseCode`] | close payloads and status codes |
//! | [`Context`] | one connection after the handshake: frames in and out, the close handshake |
//! | [`WebSocket`] | async adapter over `embedded_io_async::{Read, Write}` |
//!
//! Everything but [`WebSocket`] works on byte slices and never touches a
//! socket; [`WebSocket`] runs them over a transport with caller-provided
//! receive and transmit buffers.

mod assembler;
mod close;
mod config;
mod connection;
mod context;
mod error;
mod frame;
mod handshake;
mod mask;
mod message;
mod utf8;

pub use assembler::Assembler;
pub use close::{CloseCode, CloseFrame};
pub use config::{Config, Role};
pub use connection::WebSocket;
pub use context::Context;
pub use error::{EncodeError, Error, HandshakeError, ProtocolError};
pub use frame::{Frame, FrameHeader, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN, OpCode};
pub use handshake::{
    ClientHandshake, ClientRequest, Key, MAX_HEADERS, Request, Response, accept_key,
};
pub use mask::{apply_mask, mask_into};
pub use message::{Fragments, Message};
pub use utf8::Utf8Validator;

/// Result of a parser that may need more bytes (the `httparse` convention):
/// needing more input is a status, not an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Status<T> {
    /// Not enough bytes yet; call again with more.
    Partial,
    /// Parsed.
    Complete(T),
}
