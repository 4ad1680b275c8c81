//! `ServerUrl::parse` on arbitrary text: never panics, and what it accepts
//! is consistent with the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_core::url::ServerUrl;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = core::str::from_utf8(data) else {
        return;
    };
    if let Ok(url) = ServerUrl::parse(text) {
        assert!(!url.endpoint.host.is_empty());
        assert_ne!(url.endpoint.port, 0);
        assert!(url.path.starts_with('/'));
        assert!(text.ends_with(url.path) || url.path == "/");
        assert!(text.contains(url.authority));
    }
});
