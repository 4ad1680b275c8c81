//! The frame decoder and message assembler on arbitrary bytes, both roles,
//! fed whole and in pieces: must never panic, and must agree with itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_core::ws::{Assembler, Config, Frame, FrameHeader, Message, Status};

/// Feeds `data` in pieces of `chunk` bytes; returns a summary of what came out.
fn run(config: Config, data: &[u8], chunk: usize, capacity: usize) -> (usize, usize, Option<tether_core::ws::ProtocolError>) {
    let mut buf = vec![0u8; capacity];
    let mut assembler = Assembler::new(config);
    let (mut messages, mut bytes) = (0, 0);
    let mut rest = data;
    loop {
        loop {
            match assembler.poll(&mut buf) {
                Ok(Status::Complete(_)) => {
                    let message = assembler.message(&buf).expect("poll made a message ready");
                    messages += 1;
                    bytes += match message {
                        Message::Text(t) => t.len(),
                        Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b.len(),
                        Message::Close(c) => c.map_or(0, |c| c.reason.len() + 2),
                    };
                }
                Ok(Status::Partial) => break,
                Err(e) => return (messages, bytes, Some(e)),
            }
        }
        if rest.is_empty() {
            return (messages, bytes, None);
        }
        let space = assembler.space(&mut buf);
        if space.is_empty() {
            return (messages, bytes, Some(tether_core::ws::ProtocolError::MessageTooBig));
        }
        let n = space.len().min(rest.len()).min(chunk);
        space[..n].copy_from_slice(&rest[..n]);
        assembler.filled(n);
        rest = &rest[n..];
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&control, data)) = input.split_first() else {
        return;
    };
    let chunk = usize::from(control & 0x1F) + 1;
    let capacity = data.len().max(usize::from(control) * 4);
    for config in [Config::client(), Config::server(), Config::server().with_reserved_bits(0b111).with_max_message_size(300)] {
        let whole = run(config, data, usize::MAX, capacity);
        let pieces = run(config, data, chunk, capacity);
        assert_eq!(whole, pieces, "split input decoded differently");
        let mut copy = data.to_vec();
        let _ = Frame::decode(&mut copy, &config);
    }
    if let Ok(Status::Complete((header, len))) = FrameHeader::parse(data) {
        let mut out = [0u8; 14];
        let written = header.emit(&mut out).expect("14 bytes hold any header");
        assert_eq!(written, len);
        assert_eq!(&out[..written], &data[..len], "minimal header must re-encode identically");
    }
});
