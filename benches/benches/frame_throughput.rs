//! WebSocket frame throughput: tether vs tungstenite vs embedded-websocket,
//! with a memcpy baseline, on the same payloads and the same masking keys.
//!
//! - `encode_masked/<size>`: build one masked client binary frame (header +
//!   masked payload) into a preallocated output buffer.
//! - `decode_server/<size>`: decode one unmasked server binary frame. The
//!   plain names use each library's fastest public API (tether and
//!   tungstenite's header parser hand out the payload in place;
//!   embedded-websocket always copies it into a caller buffer); the `_copy`
//!   variants copy the payload into a caller buffer too, for a like-for-like
//!   comparison with embedded-websocket.
//!
//! Each library is used through its fastest public API with no allocation in
//! the timed loop where the library permits it (tungstenite's `Frame::format`
//! allocates a copy of a masked payload; its `WebSocket::write` path does
//! not, and is measured too). Run: `cargo bench -p tether-benches --bench
//! frame_throughput`.
#![allow(missing_docs)]

use core::hint::black_box;
use std::io::{Cursor, Read, Write};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use embedded_websocket as ews;
use tether_core::ws::{Config, Frame, OpCode, Status};
use tungstenite::Bytes;
use tungstenite::protocol::frame::coding::{Data, OpCode as TOpCode};
use tungstenite::protocol::frame::{Frame as TFrame, FrameHeader as THeader};

const SIZES: [usize; 5] = [16, 125, 1024, 16 * 1024, 64 * 1024];
const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// An RNG that always yields `KEY`: every library masks with the same key,
/// and drawing it costs the same small call for each.
struct FixedKey;

impl rand_core::RngCore for FixedKey {
    fn next_u32(&mut self) -> u32 {
        u32::from_ne_bytes(KEY)
    }
    fn next_u64(&mut self) -> u64 {
        u64::from(self.next_u32())
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for (d, k) in dst.iter_mut().zip(KEY.iter().cycle()) {
            *d = *k;
        }
    }
}

impl rand_core_06::RngCore for FixedKey {
    fn next_u32(&mut self) -> u32 {
        u32::from_ne_bytes(KEY)
    }
    fn next_u64(&mut self) -> u64 {
        u64::from(rand_core_06::RngCore::next_u32(self))
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        rand_core::RngCore::fill_bytes(self, dst);
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), rand_core_06::Error> {
        rand_core::RngCore::fill_bytes(self, dst);
        Ok(())
    }
}

/// A transport for tungstenite's `WebSocket` that accepts and drops bytes.
struct Discard;

impl Read for Discard {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(std::io::ErrorKind::WouldBlock.into())
    }
}

impl Write for Discard {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        black_box(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i * 31 % 251) as u8).collect()
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_masked");
    for size in SIZES {
        let data = payload(size);
        let bytes = Bytes::from(data.clone());
        let mut out = vec![0u8; size + 14];
        group.throughput(Throughput::Bytes(size as u64));

        group.bench_with_input(BenchmarkId::new("memcpy", size), &data, |b, data| {
            b.iter(|| {
                out[..data.len()].copy_from_slice(black_box(data));
                black_box(&out);
            })
        });

        group.bench_with_input(BenchmarkId::new("tether", size), &data, |b, data| {
            let mut rng = FixedKey;
            b.iter(|| {
                let key = rand_core::RngCore::next_u32(&mut rng).to_ne_bytes();
                let n = Frame::new(OpCode::Binary, black_box(data))
                    .encode(Some(key), &mut out)
                    .unwrap();
                black_box(&out[..n]);
            })
        });

        group.bench_with_input(
            BenchmarkId::new("embedded_websocket", size),
            &data,
            |b, data| {
                let mut ws = ews::WebSocketClient::new_client(FixedKey);
                ws.state = ews::WebSocketState::Open;
                b.iter(|| {
                    let n = ws
                        .write(
                            ews::WebSocketSendMessageType::Binary,
                            true,
                            black_box(data),
                            &mut out,
                        )
                        .unwrap();
                    black_box(&out[..n]);
                })
            },
        );

        group.bench_with_input(
            BenchmarkId::new("tungstenite_frame", size),
            &bytes,
            |b, bytes| {
                let mut sink = Vec::with_capacity(size + 14);
                b.iter(|| {
                    sink.clear();
                    let mut frame =
                        TFrame::message(bytes.clone(), TOpCode::Data(Data::Binary), true);
                    frame.header_mut().mask = Some(KEY);
                    frame.format(&mut sink).unwrap();
                    black_box(&sink);
                })
            },
        );

        group.bench_with_input(
            BenchmarkId::new("tungstenite_websocket", size),
            &bytes,
            |b, bytes| {
                let config = tungstenite::protocol::WebSocketConfig::default()
                    .write_buffer_size(0)
                    .max_write_buffer_size(usize::MAX);
                let mut ws = tungstenite::WebSocket::from_raw_socket(
                    Discard,
                    tungstenite::protocol::Role::Client,
                    Some(config),
                );
                b.iter(|| {
                    ws.write(tungstenite::Message::Binary(black_box(bytes).clone()))
                        .unwrap();
                    ws.flush().unwrap();
                })
            },
        );
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_server");
    let config = Config::client();
    for size in SIZES {
        let data = payload(size);
        let mut wire = vec![0u8; size + 14];
        let n = Frame::new(OpCode::Binary, &data)
            .encode(None, &mut wire)
            .unwrap();
        wire.truncate(n);
        let mut to = vec![0u8; size];
        group.throughput(Throughput::Bytes(size as u64));

        group.bench_with_input(BenchmarkId::new("memcpy", size), &data, |b, data| {
            b.iter(|| {
                to.copy_from_slice(black_box(data));
                black_box(&to);
            })
        });

        // Each library's fastest public API: tether and tungstenite hand out
        // the payload where it lies; embedded-websocket always copies it.
        group.bench_function(BenchmarkId::new("tether", size), |b| {
            let mut input = wire.clone();
            b.iter(|| {
                let Ok(Status::Complete((frame, used))) =
                    Frame::decode(black_box(&mut input), &config)
                else {
                    unreachable!()
                };
                black_box(frame.payload);
                black_box(used);
            })
        });

        group.bench_function(BenchmarkId::new("tungstenite", size), |b| {
            b.iter(|| {
                let input = black_box(&wire[..]);
                let mut cursor = Cursor::new(input);
                let (header, len) = THeader::parse(&mut cursor).unwrap().unwrap();
                let start = cursor.position() as usize;
                let payload = &input[start..start + usize::try_from(len).unwrap()];
                black_box((header, payload));
            })
        });

        group.bench_function(BenchmarkId::new("embedded_websocket", size), |b| {
            let mut ws = ews::WebSocketClient::new_client(FixedKey);
            ws.state = ews::WebSocketState::Open;
            b.iter(|| {
                let result = ws.read(black_box(&wire), &mut to).unwrap();
                assert!(result.end_of_message);
                black_box((&to, result.len_to));
            })
        });

        // The same, with the payload copied into a caller buffer, like
        // embedded-websocket does.
        group.bench_function(BenchmarkId::new("tether_copy", size), |b| {
            let mut input = wire.clone();
            b.iter(|| {
                let Ok(Status::Complete((frame, used))) =
                    Frame::decode(black_box(&mut input), &config)
                else {
                    unreachable!()
                };
                to[..frame.payload.len()].copy_from_slice(frame.payload);
                black_box((&to, used));
            })
        });

        group.bench_function(BenchmarkId::new("tungstenite_copy", size), |b| {
            b.iter(|| {
                let input = black_box(&wire[..]);
                let mut cursor = Cursor::new(input);
                let (header, len) = THeader::parse(&mut cursor).unwrap().unwrap();
                let start = cursor.position() as usize;
                let len = usize::try_from(len).unwrap();
                to[..len].copy_from_slice(&input[start..start + len]);
                black_box((header, &to));
            })
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(core::time::Duration::from_millis(700))
        .measurement_time(core::time::Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = encode, decode
}
criterion_main!(benches);
