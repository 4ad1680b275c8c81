//! The captive-portal DNS responder: no panic, replies fit the buffer and
//! echo the query id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_core::provisioning::dns::{Query, respond};

fuzz_target!(|data: &[u8]| {
    let _ = Query::parse(data).map(|q| q.labels().count());
    let cap = usize::from(data.first().copied().unwrap_or(0)) * 2;
    let mut out = [0u8; 512];
    let out = &mut out[..cap.min(512)];
    if let Ok(reply) = respond(data, [192, 168, 4, 1], 60, out) {
        assert!(reply.len <= out.len());
        assert_eq!(&out[..2], &data[..2]);
    }
});
