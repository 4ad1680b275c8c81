//! The sans-IO frame core (`ws::Context`, what the device client's link
//! and `ws::WebSocket` run on) on arbitrary bytes from the peer, fed whole
//! and in pieces: must never panic, must agree with itself, and after a
//! protocol error must owe exactly one close frame that encodes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_core::ws::{Config, Context, Error, Message, OpCode, Status};

/// Feeds `data` in pieces of `chunk` bytes, answering every message with
/// a frame of its own; returns what came out.
fn run(config: Config, data: &[u8], chunk: usize, capacity: usize) -> (usize, usize, Option<Error>) {
    let mut rx = vec![0u8; capacity];
    let mut tx = [0u8; 160];
    let mut context = Context::new(config);
    let (mut messages, mut bytes) = (0, 0);
    let mut rest = data;
    let error = loop {
        match context.poll(&mut rx) {
            Ok(Status::Complete(opcode)) => {
                let message = context.message(&rx).expect("poll made a message ready");
                messages += 1;
                bytes += match message {
                    Message::Text(t) => t.len(),
                    Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b.len(),
                    Message::Close(c) => c.map_or(0, |c| c.reason.len() + 2),
                };
                if opcode == OpCode::Ping && context.is_open() {
                    let mut offset = 0;
                    let payload = [0u8; 4];
                    context
                        .encode(OpCode::Pong, &payload, &mut offset, [1, 2, 3, 4], &mut tx)
                        .expect("a short pong always encodes");
                }
                continue;
            }
            Ok(Status::Partial) => {}
            Err(e) => break Some(e),
        }
        if rest.is_empty() {
            break None;
        }
        let space = match context.space(&mut rx) {
            Ok(space) => space,
            Err(e) => break Some(e),
        };
        let n = space.len().min(rest.len()).min(chunk);
        space[..n].copy_from_slice(&rest[..n]);
        context.filled(n);
        rest = &rest[n..];
    };
    if let Some(Error::Protocol(_)) = error {
        assert!(context.is_closed());
        assert!(context.owes_close(), "a protocol error on an open connection owes its code");
        let len = context.encode_owed_close([9, 9, 9, 9], &mut tx).expect("owed once");
        assert!(len <= 2 + 4 + 2);
        assert!(!context.owes_close());
    }
    (messages, bytes, error)
}

fuzz_target!(|input: &[u8]| {
    let Some((&control, data)) = input.split_first() else {
        return;
    };
    let chunk = usize::from(control & 0x1F) + 1;
    let capacity = data.len().max(usize::from(control) * 4).max(16);
    for config in [Config::client(), Config::server().with_max_message_size(300)] {
        let whole = run(config, data, usize::MAX, capacity);
        let pieces = run(config, data, chunk, capacity);
        assert_eq!(whole, pieces, "split input decoded differently");
    }
});
