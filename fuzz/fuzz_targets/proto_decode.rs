//! Every tether-proto decoder on arbitrary input: binary frames and JSON
//! text. Decoding never panics; whatever decodes re-encodes to the same
//! binary bytes (the encoding is canonical) and survives a trip through the
//! other encoding unchanged. Close reasons' reconnect hints parse too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_proto::{DeviceToServer, ReceiverToServer, ServerToDevice, ServerToReceiver};

macro_rules! check {
    ($ty:ident, $data:expr) => {{
        let data: &[u8] = $data;
        if let Ok(message) = $ty::decode(data) {
            // Binary: canonical, so re-encoding gives the input back.
            assert_eq!(message.encoded_len(), data.len());
            let mut buf = vec![0u8; data.len()];
            let bytes = message.encode(&mut buf).expect("a decoded message encodes");
            assert_eq!(bytes, data);
            // JSON: only payloads that are JSON have a text form.
            if let Ok(text) = message.to_json() {
                assert_eq!($ty::from_json(&text), Ok(message));
            } else {
                assert_eq!(message.to_json(), Err(tether_proto::EncodeError::PayloadNotJson));
            }
        }
        if let Ok(text) = core::str::from_utf8(data) {
            if let Ok(message) = $ty::from_json(text) {
                // Every payload decoded from JSON is JSON, so both encodings work.
                let again = message.to_json().expect("a decoded JSON message encodes");
                assert_eq!($ty::from_json(&again), Ok(message));
                let binary = message.encode_to_vec().expect("and encodes in binary");
                assert_eq!($ty::decode(&binary), Ok(message));
            }
        }
    }};
}

fuzz_target!(|data: &[u8]| {
    check!(DeviceToServer, data);
    check!(ServerToDevice, data);
    check!(ReceiverToServer, data);
    check!(ServerToReceiver, data);
    // A close reason's reconnect hint (4017 `draining`): never panics,
    // never above the cap.
    if let Ok(reason) = core::str::from_utf8(data) {
        if let Some(ms) = tether_proto::reconnect_hint_ms(reason) {
            assert!(ms <= tether_proto::MAX_RECONNECT_HINT_MS);
        }
    }
});
