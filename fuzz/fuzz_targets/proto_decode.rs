//! Every tether-proto decoder on arbitrary input: binary frames and JSON
//! text. Decoding never panics; whatever decodes re-encodes to the same
//! binary bytes (the encoding is canonical) and survives a trip through the
//! other encoding unchanged. Close reasons' reconnect hints parse too. A
//! described field list also goes through the server's parser
//! (`Fields::parse`).
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

/// The server's parser of a field list (`Fields::parse`) on whatever a
/// decoder let through: never panics, and a list it accepts re-encodes to
/// a canonical text that parses to the same list.
fn check_fields(fields: tether_proto::Fields<'_>) {
    if let Ok(parsed) = fields.parse() {
        let canonical = tether_proto::Fields::new(&parsed).to_json_string();
        let again = tether_proto::Fields::from_json(canonical.as_bytes())
            .parse()
            .expect("a canonical field list parses");
        assert_eq!(again, parsed);
    }
}

fuzz_target!(|data: &[u8]| {
    check!(DeviceToServer, data);
    if let Ok(DeviceToServer::DescribeChannel(describe)) = DeviceToServer::decode(data) {
        check_fields(describe.fields);
    }
    if let Ok(text) = core::str::from_utf8(data) {
        if let Ok(DeviceToServer::DescribeChannel(describe)) = DeviceToServer::from_json(text) {
            check_fields(describe.fields);
        }
    }
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
