//! The server's handshake request parser on arbitrary bytes: never panics,
//! and every accepted request gets a response the client side accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_core::ws::{Request, Status};

fuzz_target!(|data: &[u8]| {
    if let Ok(Status::Complete(request)) = Request::parse(data) {
        assert!(request.header_len <= data.len());
        let chosen = request.subprotocols().next();
        let mut out = [0u8; 512];
        // A chosen protocol that is not a token is refused, not panicked on.
        let _ = request.encode_response(chosen, &mut out);
        let _ = request.encode_response(None, &mut out).expect("a bare 101 fits in 512 bytes");
    }
});
