//! The payload rule (`Payload::check`) against serde_json on arbitrary
//! bytes: it accepts exactly what serde_json reads as one `Value` (default
//! recursion limit, correctly rounded numbers) without whitespace around
//! it, and never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_proto::Payload;

fuzz_target!(|data: &[u8]| {
    let ours = Payload(data).check();
    let surrounded = |byte: Option<&u8>| matches!(byte, Some(b' ' | b'\t' | b'\n' | b'\r'));
    let theirs = serde_json::from_slice::<serde_json::Value>(data).is_ok()
        && !surrounded(data.first())
        && !surrounded(data.last());
    assert_eq!(
        ours.is_ok(),
        theirs,
        "{:?}: ours {ours:?}",
        String::from_utf8_lossy(data)
    );
});
