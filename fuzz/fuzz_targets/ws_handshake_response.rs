//! The client's handshake response parser on arbitrary bytes: never panics,
//! and any prefix of an accepted response is `Partial`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_core::ws::{ClientHandshake, ClientRequest, Key, Status};

fuzz_target!(|data: &[u8]| {
    let request = ClientRequest::new("h", "/").with_subprotocols(&["tether.v1", "chat"]);
    let handshake = ClientHandshake::with_key(request, Key::from_nonce(*b"the sample nonce"));
    if let Ok(Status::Complete(response)) = handshake.parse_response(data) {
        assert!(response.header_len <= data.len());
        let head = &data[..response.header_len];
        assert!(matches!(handshake.parse_response(head), Ok(Status::Complete(_))));
        if let Some(cut) = response.header_len.checked_sub(1) {
            assert!(matches!(handshake.parse_response(&data[..cut]), Ok(Status::Partial)));
        }
    }
});
