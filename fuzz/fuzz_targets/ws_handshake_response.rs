//! The client's handshake response parser on arbitrary bytes: never panics,
//! any prefix of an accepted response is `Partial`, and it decides exactly
//! as the same checks over `httparse` (the oracle of its hand-written head
//! scan) decide: the same `Partial`, head length, subprotocol or error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_core::ws::{ClientHandshake, ClientRequest, HandshakeError, Key, Response, Status};

const OFFERED: &[&str] = &["tether.v1", "chat"];

/// The response checks of `ClientHandshake::parse_response` over httparse.
fn oracle(key: &Key, buf: &[u8]) -> Result<Status<Response<'static>>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let header_len = match response.parse(buf) {
        Ok(httparse::Status::Partial) => return Ok(Status::Partial),
        Ok(httparse::Status::Complete(n)) => n,
        Err(httparse::Error::TooManyHeaders) => return Err(HandshakeError::TooManyHeaders),
        Err(_) => return Err(HandshakeError::Malformed),
    };
    let code = response.code.unwrap_or(0);
    if code != 101 {
        return Err(HandshakeError::Status(code));
    }
    if response.version != Some(1) {
        return Err(HandshakeError::Malformed);
    }
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.trim_ascii())
    };
    let has = |value: &[u8], token: &str| {
        value
            .split(|&b| b == b',')
            .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    };
    if !header("Upgrade").is_some_and(|v| has(v, "websocket")) {
        return Err(HandshakeError::MissingUpgrade);
    }
    if !header("Connection").is_some_and(|v| has(v, "upgrade")) {
        return Err(HandshakeError::MissingConnection);
    }
    let accept = header("Sec-WebSocket-Accept").ok_or(HandshakeError::MissingAccept)?;
    if accept != key.accept() {
        return Err(HandshakeError::BadAccept);
    }
    if header("Sec-WebSocket-Extensions").is_some_and(|v| !v.is_empty()) {
        return Err(HandshakeError::UnexpectedExtension);
    }
    let subprotocol = match header("Sec-WebSocket-Protocol") {
        None => None,
        Some(chosen) => Some(
            *OFFERED
                .iter()
                .find(|offered| offered.as_bytes() == chosen)
                .ok_or(HandshakeError::UnexpectedSubprotocol)?,
        ),
    };
    Ok(Status::Complete(Response {
        subprotocol,
        header_len,
    }))
}

fuzz_target!(|data: &[u8]| {
    let key = Key::from_nonce(*b"the sample nonce");
    let request = ClientRequest::new("h", "/").with_subprotocols(OFFERED);
    let handshake = ClientHandshake::with_key(request, key);
    let result = handshake.parse_response(data);
    assert_eq!(result, oracle(&key, data));
    if let Ok(Status::Complete(response)) = result {
        assert!(response.header_len <= data.len());
        let head = &data[..response.header_len];
        assert!(matches!(handshake.parse_response(head), Ok(Status::Complete(_))));
        if let Some(cut) = response.header_len.checked_sub(1) {
            assert!(matches!(handshake.parse_response(&data[..cut]), Ok(Status::Partial)));
        }
    }
});
