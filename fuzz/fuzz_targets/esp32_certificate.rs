//! tether-esp32's certificate reader (validity window, subjectAltName):
//! any bytes give a result or `Malformed`, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_esp32::tls::certificate;

fuzz_target!(|data: &[u8]| {
    if let Ok(facts) = certificate::parse(data) {
        let _ = facts.validity.not_before <= facts.validity.not_after;
        let _ = facts.matches_host("relay.example.com");
        let _ = facts.matches_host("a.relay.example.com");
    }
});
