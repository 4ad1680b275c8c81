//! The opening handshake (RFC 6455 4): an HTTP/1.1 `GET` with `Upgrade:
//! websocket`, answered by `101 Switching Protocols`. Sans-IO: requests and
//! responses are written to and parsed from caller buffers. Requests (the
//! server role) are parsed by `httparse`, responses (the client role, on
//! the device) by `head.rs`, held to httparse by differential tests; the key proof uses a compact SHA-1 and base64
//! encoder of this crate's own (code size on the device, see `sha1.rs`), the
//! server's key check the `base64` crate's decoder.

mod base64;
mod client;
mod head;
mod server;
mod sha1;

pub use client::{ClientHandshake, ClientRequest, Response};
pub use server::Request;

use rand_core::RngCore;

use super::error::HandshakeError;

/// Most header lines a handshake head may have.
pub const MAX_HEADERS: usize = 32;

const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A `Sec-WebSocket-Key`: 16 random bytes in base64 (24 ASCII bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Key(
    /// Base64: ASCII (the request writes these bytes, no UTF-8 check).
    [u8; 24],
);

impl Key {
    /// A fresh key from `rng`, which must be unpredictable (RFC 6455 4.1).
    pub fn generate<R: RngCore + ?Sized>(rng: &mut R) -> Self {
        let mut nonce = [0u8; 16];
        rng.fill_bytes(&mut nonce);
        Self::from_nonce(nonce)
    }

    /// The key for a given 16-byte nonce.
    pub fn from_nonce(nonce: [u8; 16]) -> Self {
        let mut key = [0u8; 24];
        // 16 bytes always encode to exactly 24.
        self::base64::encode(&nonce, &mut key);
        Self(key)
    }

    /// The key as sent in the header.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The `Sec-WebSocket-Accept` value a server must answer with.
    pub fn accept(&self) -> [u8; 28] {
        accept_key(&self.0)
    }
}

/// `base64(SHA-1(key + GUID))`: the `Sec-WebSocket-Accept` for `key`.
pub fn accept_key(key: &[u8]) -> [u8; 28] {
    let digest = self::sha1::digest(&[key, GUID]);
    let mut accept = [0u8; 28];
    // 20 bytes always encode to exactly 28.
    self::base64::encode(&digest, &mut accept);
    accept
}

/// Whether a comma-separated header value contains `token`, ignoring ASCII
/// case and surrounding whitespace.
fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// The value of the first header called `name` (ASCII case-insensitive).
fn header<'h>(headers: &[httparse::Header<'h>], name: &str) -> Option<&'h [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.trim_ascii())
}

fn map_httparse(error: httparse::Error) -> HandshakeError {
    match error {
        httparse::Error::TooManyHeaders => HandshakeError::TooManyHeaders,
        _ => HandshakeError::Malformed,
    }
}

/// Bytes that may appear in an HTTP token (RFC 9110 5.6.2).
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(head::is_token_byte)
}

/// A header value without CR, LF or other control characters (HTAB allowed).
fn is_field_value(s: &str) -> bool {
    s.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7F))
}

/// Appends to a caller buffer, failing when it is full.
struct Writer<'o> {
    out: &'o mut [u8],
    len: usize,
}

impl<'o> Writer<'o> {
    fn new(out: &'o mut [u8]) -> Self {
        Self { out, len: 0 }
    }

    fn put(&mut self, bytes: &[u8]) -> Result<&mut Self, HandshakeError> {
        let end = self
            .len
            .checked_add(bytes.len())
            .ok_or(HandshakeError::BufferTooSmall)?;
        let dst = self
            .out
            .get_mut(self.len..end)
            .ok_or(HandshakeError::BufferTooSmall)?;
        dst.copy_from_slice(bytes);
        self.len = end;
        Ok(self)
    }

    fn header(&mut self, name: &str, value: &[u8]) -> Result<&mut Self, HandshakeError> {
        self.put(name.as_bytes())?
            .put(b": ")?
            .put(value)?
            .put(b"\r\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_accept_example() {
        // RFC 6455 1.3.
        assert_eq!(
            &accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let key = Key::from_nonce(*b"the sample nonce");
        assert_eq!(key.as_str(), "dGhlIHNhbXBsZSBub25jZQ==");
    }

    #[test]
    fn tokens_match_case_insensitively() {
        assert!(has_token(b"keep-alive, Upgrade", "upgrade"));
        assert!(has_token(b"WebSocket", "websocket"));
        assert!(!has_token(b"upgrades", "upgrade"));
        assert!(!has_token(b"", "upgrade"));
    }
}
