//! Client side of the opening handshake (RFC 6455 4.1).

use rand_core::RngCore;

use super::head::{self, HeadError};
use super::{Key, MAX_HEADERS, Writer, has_token, is_field_value, is_token};
use crate::ws::Status;
use crate::ws::error::HandshakeError;

/// What the client asks for: where, with which subprotocols and credentials.
#[derive(Debug, Clone, Copy)]
pub struct ClientRequest<'a> {
    host: &'a str,
    path: &'a str,
    subprotocols: &'a [&'a str],
    authorization: Option<&'a str>,
    headers: &'a [(&'a str, &'a str)],
}

impl<'a> ClientRequest<'a> {
    /// A request for `path` (with any query, e.g. `/ws?device=7`) on `host`
    /// (`name` or `name:port`).
    pub const fn new(host: &'a str, path: &'a str) -> Self {
        Self {
            host,
            path,
            subprotocols: &[],
            authorization: None,
            headers: &[],
        }
    }

    /// Subprotocols to offer, most preferred first.
    #[must_use]
    pub const fn with_subprotocols(mut self, subprotocols: &'a [&'a str]) -> Self {
        self.subprotocols = subprotocols;
        self
    }

    /// An `Authorization` header value, e.g. `Bearer <token>`.
    #[must_use]
    pub const fn with_authorization(mut self, value: &'a str) -> Self {
        self.authorization = Some(value);
        self
    }

    /// Further headers as `(name, value)` pairs.
    #[must_use]
    pub const fn with_headers(mut self, headers: &'a [(&'a str, &'a str)]) -> Self {
        self.headers = headers;
        self
    }
}

/// One client handshake: holds the request and the key it was sent with, so
/// the response can be checked against it.
///
/// ```
/// use tether_core::ws::{ClientHandshake, ClientRequest, Key, Status};
/// let request = ClientRequest::new("example.com", "/chat").with_subprotocols(&["v1"]);
/// let handshake = ClientHandshake::with_key(request, Key::from_nonce(*b"the sample nonce"));
/// let mut out = [0u8; 256];
/// let n = handshake.encode(&mut out).unwrap();
/// assert!(out[..n].starts_with(b"GET /chat HTTP/1.1\r\nHost: example.com\r\n"));
///
/// let response = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
///     Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
///     Sec-WebSocket-Protocol: v1\r\n\r\n";
/// assert_eq!(handshake.parse_response(&response[..40]), Ok(Status::Partial));
/// let Ok(Status::Complete(accepted)) = handshake.parse_response(response) else { panic!() };
/// assert_eq!(accepted.subprotocol, Some("v1"));
/// assert_eq!(accepted.header_len, response.len());
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ClientHandshake<'a> {
    request: ClientRequest<'a>,
    key: Key,
}

/// A valid `101` response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Response<'a> {
    /// The subprotocol the server chose, one of those offered.
    pub subprotocol: Option<&'a str>,
    /// Length of the HTTP head; bytes after it are WebSocket frames.
    pub header_len: usize,
}

impl<'a> ClientHandshake<'a> {
    /// A handshake with a fresh key from `rng` (which must be unpredictable).
    pub fn new<R: RngCore + ?Sized>(request: ClientRequest<'a>, rng: &mut R) -> Self {
        Self::with_key(request, Key::generate(rng))
    }

    /// A handshake with a given key.
    pub const fn with_key(request: ClientRequest<'a>, key: Key) -> Self {
        Self { request, key }
    }

    /// The key sent in the request.
    pub const fn key(&self) -> &Key {
        &self.key
    }

    /// Writes the HTTP request into `out` and returns its length. Fails with
    /// [`HandshakeError::InvalidHeaderValue`] when a field would break the
    /// HTTP head (CR/LF injection, spaces in the path, empty host).
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, HandshakeError> {
        let r = &self.request;
        let path_ok = r.path.starts_with('/') && r.path.bytes().all(|b| b > 0x20 && b != 0x7F);
        let host_ok = !r.host.is_empty() && r.host.bytes().all(|b| b > 0x20 && b != 0x7F);
        let protocols_ok = r.subprotocols.iter().all(|p| is_token(p));
        let auth_ok = r.authorization.is_none_or(is_field_value);
        let headers_ok = r
            .headers
            .iter()
            .all(|(name, value)| is_token(name) && is_field_value(value));
        if !(path_ok && host_ok && protocols_ok && auth_ok && headers_ok) {
            return Err(HandshakeError::InvalidHeaderValue);
        }
        let mut w = Writer::new(out);
        w.put(b"GET ")?
            .put(r.path.as_bytes())?
            .put(b" HTTP/1.1\r\n")?
            .header("Host", r.host.as_bytes())?
            .header("Upgrade", b"websocket")?
            .header("Connection", b"Upgrade")?
            .header("Sec-WebSocket-Key", &self.key.0)?
            .header("Sec-WebSocket-Version", b"13")?;
        if let Some((first, rest)) = r.subprotocols.split_first() {
            w.put(b"Sec-WebSocket-Protocol: ")?.put(first.as_bytes())?;
            for protocol in rest {
                w.put(b", ")?.put(protocol.as_bytes())?;
            }
            w.put(b"\r\n")?;
        }
        if let Some(value) = r.authorization {
            w.header("Authorization", value.as_bytes())?;
        }
        for (name, value) in r.headers {
            w.header(name, value.as_bytes())?;
        }
        w.put(b"\r\n")?;
        Ok(w.len)
    }

    /// Parses and checks the server's response from the start of `buf`, which
    /// may hold any prefix of it (`Partial`: read more and call again with
    /// the longer prefix). The caller decides how long a head it accepts: if
    /// its buffer fills up while this says `Partial`, that is
    /// [`HandshakeError::HeaderTooLong`].
    pub fn parse_response(&self, buf: &[u8]) -> Result<Status<Response<'a>>, HandshakeError> {
        // The first of each header the handshake checks, trimmed.
        const NAMES: [&str; 5] = [
            "Upgrade",
            "Connection",
            "Sec-WebSocket-Accept",
            "Sec-WebSocket-Extensions",
            "Sec-WebSocket-Protocol",
        ];
        let mut found: [Option<&[u8]>; 5] = [None; 5];
        let head = head::parse_response(buf, MAX_HEADERS, &mut |name, value| {
            for (slot, wanted) in found.iter_mut().zip(NAMES) {
                if slot.is_none() && name.eq_ignore_ascii_case(wanted.as_bytes()) {
                    *slot = Some(value.trim_ascii());
                }
            }
        });
        let head = match head {
            Ok(Status::Partial) => return Ok(Status::Partial),
            Ok(Status::Complete(head)) => head,
            Err(HeadError::TooManyHeaders) => return Err(HandshakeError::TooManyHeaders),
            Err(HeadError::Malformed) => return Err(HandshakeError::Malformed),
        };
        let [upgrade, connection, accept, extensions, protocol] = found;
        if head.code != 101 {
            return Err(HandshakeError::Status(head.code));
        }
        if head.version != 1 {
            return Err(HandshakeError::Malformed);
        }
        if !upgrade.is_some_and(|v| has_token(v, "websocket")) {
            return Err(HandshakeError::MissingUpgrade);
        }
        if !connection.is_some_and(|v| has_token(v, "upgrade")) {
            return Err(HandshakeError::MissingConnection);
        }
        let accept = accept.ok_or(HandshakeError::MissingAccept)?;
        if accept != self.key.accept() {
            return Err(HandshakeError::BadAccept);
        }
        if extensions.is_some_and(|v| !v.is_empty()) {
            return Err(HandshakeError::UnexpectedExtension);
        }
        let subprotocol = match protocol {
            None => None,
            Some(chosen) => {
                // A loop, not `Iterator::find` (an out-of-line copy of 100 B
                // on the ESP32-C3).
                let mut offered = self.request.subprotocols.iter();
                loop {
                    match offered.next() {
                        Some(p) if p.as_bytes() == chosen => break Some(*p),
                        Some(_) => {}
                        None => return Err(HandshakeError::UnexpectedSubprotocol),
                    }
                }
            }
        };
        Ok(Status::Complete(Response {
            subprotocol,
            header_len: head.len,
        }))
    }
}

#[cfg(test)]
#[allow(clippy::std_instead_of_alloc, clippy::std_instead_of_core)]
mod tests {
    use super::*;
    use std::format;
    use std::string::String;

    const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    fn handshake(request: ClientRequest<'static>) -> ClientHandshake<'static> {
        ClientHandshake::with_key(request, Key::from_nonce(*b"the sample nonce"))
    }

    fn response(lines: &[&str]) -> String {
        let mut s = String::from("HTTP/1.1 101 Switching Protocols\r\n");
        for line in lines {
            s.push_str(line);
            s.push_str("\r\n");
        }
        s.push_str("\r\n");
        s
    }

    fn good() -> String {
        response(&[
            "upgrade: WebSocket",
            "connection: keep-alive, UPGRADE",
            &format!("sec-websocket-accept: {ACCEPT}"),
        ])
    }

    #[test]
    fn request_has_every_field() {
        let request = ClientRequest::new("relay.example:8443", "/v1/device?id=7")
            .with_subprotocols(&["tether.v1", "tether.v0"])
            .with_authorization("Bearer abc")
            .with_headers(&[("X-Device", "esp32c3")]);
        let mut out = [0u8; 512];
        let n = handshake(request).encode(&mut out).unwrap();
        let text = core::str::from_utf8(&out[..n]).unwrap();
        assert_eq!(
            text,
            "GET /v1/device?id=7 HTTP/1.1\r\n\
             Host: relay.example:8443\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: tether.v1, tether.v0\r\n\
             Authorization: Bearer abc\r\n\
             X-Device: esp32c3\r\n\r\n"
        );
        for short in 0..n {
            assert_eq!(
                handshake(request).encode(&mut out[..short]),
                Err(HandshakeError::BufferTooSmall)
            );
        }
    }

    #[test]
    fn request_rejects_header_injection() {
        let mut out = [0u8; 512];
        for request in [
            ClientRequest::new("host", "/a b"),
            ClientRequest::new("host", "no-slash"),
            ClientRequest::new("", "/"),
            ClientRequest::new("host\r\nEvil: 1", "/"),
            ClientRequest::new("host", "/").with_authorization("x\r\nEvil: 1"),
            ClientRequest::new("host", "/").with_headers(&[("Bad Name", "v")]),
            ClientRequest::new("host", "/").with_headers(&[("Name", "v\n")]),
            ClientRequest::new("host", "/").with_subprotocols(&["a b"]),
        ] {
            assert_eq!(
                handshake(request).encode(&mut out),
                Err(HandshakeError::InvalidHeaderValue)
            );
        }
    }

    #[test]
    fn response_in_any_split_parses_the_same() {
        let hs = handshake(ClientRequest::new("h", "/"));
        let mut wire = good().into_bytes();
        wire.extend_from_slice(&[0x81, 0x00]);
        let head = wire.len() - 2;
        for cut in 0..head {
            assert_eq!(
                hs.parse_response(&wire[..cut]),
                Ok(Status::Partial),
                "{cut}"
            );
        }
        for cut in head..=wire.len() {
            assert_eq!(
                hs.parse_response(&wire[..cut]),
                Ok(Status::Complete(Response {
                    subprotocol: None,
                    header_len: head
                }))
            );
        }
    }

    #[test]
    fn response_errors_are_typed() {
        let hs = handshake(ClientRequest::new("h", "/").with_subprotocols(&["a", "b"]));
        let accept = format!("Sec-WebSocket-Accept: {ACCEPT}");
        let cases: [(String, HandshakeError); 8] = [
            (
                String::from("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"),
                HandshakeError::Status(403),
            ),
            (
                response(&["Connection: Upgrade", &accept]),
                HandshakeError::MissingUpgrade,
            ),
            (
                response(&["Upgrade: websocket", &accept]),
                HandshakeError::MissingConnection,
            ),
            (
                response(&["Upgrade: websocket", "Connection: Upgrade"]),
                HandshakeError::MissingAccept,
            ),
            (
                response(&[
                    "Upgrade: websocket",
                    "Connection: Upgrade",
                    "Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                ]),
                HandshakeError::BadAccept,
            ),
            (
                response(&[
                    "Upgrade: websocket",
                    "Connection: Upgrade",
                    &accept,
                    "Sec-WebSocket-Protocol: c",
                ]),
                HandshakeError::UnexpectedSubprotocol,
            ),
            (
                response(&[
                    "Upgrade: websocket",
                    "Connection: Upgrade",
                    &accept,
                    "Sec-WebSocket-Extensions: permessage-deflate",
                ]),
                HandshakeError::UnexpectedExtension,
            ),
            (
                String::from("HTTP/1.1 1O1 Nope\r\n\r\n"),
                HandshakeError::Malformed,
            ),
        ];
        for (wire, expected) in cases {
            assert_eq!(hs.parse_response(wire.as_bytes()), Err(expected), "{wire}");
        }
        let chosen = response(&[
            "Upgrade: websocket",
            "Connection: Upgrade",
            &accept,
            "Sec-WebSocket-Protocol: b",
        ]);
        assert!(matches!(
            hs.parse_response(chosen.as_bytes()),
            Ok(Status::Complete(Response {
                subprotocol: Some("b"),
                ..
            }))
        ));
        let mut many = String::from("HTTP/1.1 101 OK\r\n");
        for i in 0..=MAX_HEADERS {
            many.push_str(&format!("X-{i}: y\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(
            hs.parse_response(many.as_bytes()),
            Err(HandshakeError::TooManyHeaders)
        );
    }
}
