//! The opening handshake's `Sec-WebSocket-Accept` (`base64(SHA-1(key +
//! GUID))`), which tether computes with its own compact SHA-1 and base64
//! encoder (code size on the device: see "Code size" in
//! `docs/performance.md`), side by side with the crates they replace:
//!
//! - `tether`: `tether_core::ws::accept_key` (loop-based SHA-1, no
//!   allocation);
//! - `sha1+base64`: the `sha1` 0.10 and `base64` 0.22 crates, into a stack
//!   buffer, as tether-core did before;
//! - `tungstenite`: `tungstenite::handshake::derive_accept_key` (the same
//!   crates, into a `String`).
//!
//! Run: `cargo bench -p tether-benches --bench handshake_digest`

use core::hint::black_box;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use criterion::{Criterion, criterion_group, criterion_main};
use sha1::{Digest as _, Sha1};

const KEY: &[u8] = b"dGhlIHNhbXBsZSBub25jZQ==";
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const EXPECTED: &[u8] = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

fn crates(key: &[u8]) -> [u8; 28] {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(GUID);
    let mut accept = [0u8; 28];
    let _ = STANDARD.encode_slice(sha1.finalize(), &mut accept);
    accept
}

fn accept(c: &mut Criterion) {
    // All three compute the RFC 6455 1.3 example.
    assert_eq!(tether_core::ws::accept_key(KEY), EXPECTED);
    assert_eq!(crates(KEY), EXPECTED);
    assert_eq!(
        tungstenite::handshake::derive_accept_key(KEY).as_bytes(),
        EXPECTED
    );
    let mut group = c.benchmark_group("sec_websocket_accept");
    group.bench_function("tether", |b| {
        b.iter(|| tether_core::ws::accept_key(black_box(KEY)))
    });
    group.bench_function("sha1+base64", |b| b.iter(|| crates(black_box(KEY))));
    group.bench_function("tungstenite", |b| {
        b.iter(|| tungstenite::handshake::derive_accept_key(black_box(KEY)))
    });
    group.finish();
}

criterion_group!(benches, accept);
criterion_main!(benches);
