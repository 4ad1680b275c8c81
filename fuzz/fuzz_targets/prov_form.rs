//! The form decoder: no panic, and `validate` agrees with decoding each
//! piece.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_core::provisioning::form::{Form, decode_into};

fuzz_target!(|data: &[u8]| {
    let form = Form::new(data);
    let valid = form.validate().is_ok();
    let mut every_piece_decodes = true;
    let mut buf = [0u8; 4096];
    for (name, value) in form.pairs() {
        for part in [name, value] {
            if decode_into(part, &mut buf).is_err() {
                every_piece_decodes = false;
            }
        }
    }
    assert_eq!(valid, every_piece_decodes);
    let mut small = [0u8; 8];
    let _ = form.get("ssid", &mut small);
});
