//! Server side of the opening handshake (RFC 6455 4.2).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::{MAX_HEADERS, Writer, accept_key, has_token, header, is_token, map_httparse};
use crate::ws::Status;
use crate::ws::error::HandshakeError;

/// Most `Sec-WebSocket-Protocol` header lines kept from a request.
const MAX_PROTOCOL_LINES: usize = 4;

/// A valid WebSocket upgrade request, borrowed from the receive buffer.
///
/// ```
/// use tether_core::ws::{Request, Status};
/// let wire = b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
///     Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
///     Sec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n";
/// let Ok(Status::Complete(request)) = Request::parse(wire) else { panic!() };
/// assert_eq!(request.path, "/chat");
/// let chosen = request.subprotocols().find(|p| *p == "chat");
/// let mut out = [0u8; 256];
/// let n = request.encode_response(chosen, &mut out).unwrap();
/// assert!(out[..n].starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Request<'b> {
    /// Path and query.
    pub path: &'b str,
    /// The `Host` header.
    pub host: &'b str,
    /// The `Authorization` header, if any.
    pub authorization: Option<&'b str>,
    /// Length of the HTTP head; bytes after it are WebSocket frames.
    pub header_len: usize,
    key: &'b [u8],
    protocols: [&'b [u8]; MAX_PROTOCOL_LINES],
}

impl<'b> Request<'b> {
    /// Parses and checks an upgrade request from the start of `buf`, which
    /// may hold any prefix of it (`Partial`: read more and call again).
    pub fn parse(buf: &'b [u8]) -> Result<Status<Self>, HandshakeError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        let header_len = match request.parse(buf).map_err(map_httparse)? {
            httparse::Status::Partial => return Ok(Status::Partial),
            httparse::Status::Complete(n) => n,
        };
        if request.method != Some("GET") {
            return Err(HandshakeError::BadMethod);
        }
        if request.version != Some(1) {
            return Err(HandshakeError::Malformed);
        }
        let path = request.path.ok_or(HandshakeError::Malformed)?;
        let headers = request.headers;
        let host = header(headers, "Host").ok_or(HandshakeError::MissingHost)?;
        let host = core::str::from_utf8(host).map_err(|_| HandshakeError::Malformed)?;
        if !header(headers, "Upgrade").is_some_and(|v| has_token(v, "websocket")) {
            return Err(HandshakeError::MissingUpgrade);
        }
        if !header(headers, "Connection").is_some_and(|v| has_token(v, "upgrade")) {
            return Err(HandshakeError::MissingConnection);
        }
        if header(headers, "Sec-WebSocket-Version") != Some(b"13") {
            return Err(HandshakeError::UnsupportedVersion);
        }
        let key = header(headers, "Sec-WebSocket-Key").ok_or(HandshakeError::MissingKey)?;
        let mut nonce = [0u8; 18];
        if STANDARD.decode_slice(key, &mut nonce) != Ok(16) {
            return Err(HandshakeError::BadKey);
        }
        let authorization = header(headers, "Authorization")
            .map(|v| core::str::from_utf8(v).map_err(|_| HandshakeError::Malformed))
            .transpose()?;
        let mut protocols: [&[u8]; MAX_PROTOCOL_LINES] = [&[]; MAX_PROTOCOL_LINES];
        let lines = headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("Sec-WebSocket-Protocol"));
        for (slot, line) in protocols.iter_mut().zip(lines) {
            *slot = line.value;
        }
        Ok(Status::Complete(Self {
            path,
            host,
            authorization,
            header_len,
            key,
            protocols,
        }))
    }

    /// The subprotocols the client offered, in its order of preference
    /// (from at most four `Sec-WebSocket-Protocol` lines).
    pub fn subprotocols(&self) -> impl Iterator<Item = &'b str> + 'b {
        let protocols = self.protocols;
        protocols.into_iter().flat_map(|line| {
            line.split(|&b| b == b',')
                .filter_map(|p| core::str::from_utf8(p.trim_ascii()).ok())
                .filter(|p| !p.is_empty())
        })
    }

    /// Writes the `101 Switching Protocols` response into `out`, choosing
    /// `subprotocol` (which should be one the client offered), and returns
    /// its length.
    pub fn encode_response(
        &self,
        subprotocol: Option<&str>,
        out: &mut [u8],
    ) -> Result<usize, HandshakeError> {
        if subprotocol.is_some_and(|p| !is_token(p)) {
            return Err(HandshakeError::InvalidHeaderValue);
        }
        let mut w = Writer::new(out);
        w.put(b"HTTP/1.1 101 Switching Protocols\r\n")?
            .header("Upgrade", b"websocket")?
            .header("Connection", b"Upgrade")?
            .header("Sec-WebSocket-Accept", &accept_key(self.key))?;
        if let Some(protocol) = subprotocol {
            w.header("Sec-WebSocket-Protocol", protocol.as_bytes())?;
        }
        w.put(b"\r\n")?;
        Ok(w.len)
    }
}

#[cfg(test)]
#[allow(clippy::std_instead_of_alloc, clippy::std_instead_of_core)]
mod tests {
    use super::*;
    use crate::ws::handshake::{ClientHandshake, ClientRequest, Key};
    use std::vec::Vec;

    #[test]
    fn client_request_is_accepted_and_response_checks_out() {
        let request = ClientRequest::new("localhost:9001", "/ws?x=1")
            .with_subprotocols(&["b", "a"])
            .with_authorization("Bearer t");
        let client = ClientHandshake::with_key(request, Key::from_nonce([7; 16]));
        let mut wire = [0u8; 512];
        let n = client.encode(&mut wire).unwrap();
        for cut in 0..n {
            assert!(matches!(Request::parse(&wire[..cut]), Ok(Status::Partial)));
        }
        let Ok(Status::Complete(parsed)) = Request::parse(&wire[..n]) else {
            panic!("request did not parse");
        };
        assert_eq!(parsed.path, "/ws?x=1");
        assert_eq!(parsed.host, "localhost:9001");
        assert_eq!(parsed.authorization, Some("Bearer t"));
        assert_eq!(parsed.header_len, n);
        let offered: Vec<&str> = parsed.subprotocols().collect();
        assert_eq!(offered, ["b", "a"]);
        let mut out = [0u8; 256];
        let m = parsed.encode_response(Some("a"), &mut out).unwrap();
        let Ok(Status::Complete(response)) = client.parse_response(&out[..m]) else {
            panic!("response did not parse");
        };
        assert_eq!(response.subprotocol, Some("a"));
    }

    #[test]
    fn bad_requests_are_typed() {
        let base = [
            "Host: h",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version: 13",
        ];
        let build = |method: &str, skip: usize, replace: Option<&str>| {
            let mut s = std::format!("{method} / HTTP/1.1\r\n");
            for (i, line) in base.iter().enumerate() {
                if i == skip {
                    if let Some(r) = replace {
                        s.push_str(r);
                        s.push_str("\r\n");
                    }
                } else {
                    s.push_str(line);
                    s.push_str("\r\n");
                }
            }
            s.push_str("\r\n");
            s
        };
        let cases = [
            (build("POST", 99, None), HandshakeError::BadMethod),
            (build("GET", 0, None), HandshakeError::MissingHost),
            (build("GET", 1, None), HandshakeError::MissingUpgrade),
            (
                build("GET", 2, Some("Connection: close")),
                HandshakeError::MissingConnection,
            ),
            (build("GET", 3, None), HandshakeError::MissingKey),
            (
                build("GET", 3, Some("Sec-WebSocket-Key: c2hvcnQ=")),
                HandshakeError::BadKey,
            ),
            (
                build("GET", 4, Some("Sec-WebSocket-Version: 8")),
                HandshakeError::UnsupportedVersion,
            ),
            (
                std::string::String::from("GET / HTTP/1.1\r\nBad Header\r\n\r\n"),
                HandshakeError::Malformed,
            ),
        ];
        for (wire, expected) in cases {
            assert!(
                matches!(Request::parse(wire.as_bytes()), Err(e) if e == expected),
                "{wire:?} -> {expected:?}"
            );
        }
    }
}
