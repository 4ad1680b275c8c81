//! WebSocket frame throughput: tether vs tungstenite vs embedded-websocket,
//! with a memcpy baseline, on the same payload buffers.
//!
//! - `encode_masked/<size>`: build one masked client binary frame (header +
//!   masked payload) into a preallocated output buffer. Every library draws
//!   a fresh masking key per frame, inside the timed loop, from a real RNG
//!   (`StdRng`, ChaCha12 seeded from the OS; tungstenite's `WebSocket` uses
//!   its own thread-local RNG): the key is never a constant the compiler can
//!   fold into the masking loop.
//! - `decode_server/<size>`: decode one unmasked server binary frame. Every
//!   library reads the very same wire buffer. The plain names use each
//!   library's fastest public API (tether and tungstenite's header parser
//!   hand out the payload in place; embedded-websocket always copies it into
//!   a caller buffer); the `_copy` variants copy the payload into the same
//!   caller buffer too, for a like-for-like comparison with
//!   embedded-websocket.
//!
//! Each library is used through its fastest public API with no allocation in
//! the timed loop where the library permits it (tungstenite's `Frame::format`
//! allocates a copy of a masked payload; its `WebSocket::write` path does
//! not, and is measured too). Run: `cargo bench -p tether-benches --bench
//! frame_throughput`, then `cargo xtask bench-report` for the tables
//! (medians with their spread). The run records the load average before and
//! after in `<target>/criterion/frame_throughput-load.txt`, which the report
//! prints.
#![allow(missing_docs)]
// Benchmark code is std code; the no_std import lints do not apply.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use core::hint::black_box;
use std::io::{Cursor, Read, Write};
use std::path::PathBuf;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use embedded_websocket as ews;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_core::RngCore;
use tether_core::ws::{Config, Frame, OpCode, Status};
use tungstenite::Bytes;
use tungstenite::protocol::frame::coding::{Data, OpCode as TOpCode};
use tungstenite::protocol::frame::{Frame as TFrame, FrameHeader as THeader};

const SIZES: [usize; 5] = [16, 125, 1024, 16 * 1024, 64 * 1024];

/// The RNG every library draws its masking keys from.
fn key_rng() -> StdRng {
    StdRng::from_os_rng()
}

/// `StdRng` (rand_core 0.9) behind embedded-websocket's RNG trait
/// (rand_core 0.6).
struct Rng06(StdRng);

impl rand_core_06::RngCore for Rng06 {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        self.0.fill_bytes(dst);
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), rand_core_06::Error> {
        self.0.fill_bytes(dst);
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
            let mut rng = key_rng();
            b.iter(|| {
                let key = rng.next_u32().to_ne_bytes();
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
                let mut ws = ews::WebSocketClient::new_client(Rng06(key_rng()));
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
                let mut rng = key_rng();
                b.iter(|| {
                    sink.clear();
                    let mut frame =
                        TFrame::message(bytes.clone(), TOpCode::Data(Data::Binary), true);
                    frame.header_mut().mask = Some(rng.next_u32().to_ne_bytes());
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

        // Every function below reads `wire` itself (tether through `&mut`,
        // because it unmasks in place; an unmasked frame is left as it is)
        // and copies into `to`: no function gets a buffer of its own whose
        // placement could make it look faster.
        group.bench_function(BenchmarkId::new("memcpy", size), |b| {
            b.iter(|| {
                let payload = &black_box(&wire[..])[wire.len() - size..];
                to.copy_from_slice(payload);
                black_box(&to);
            })
        });

        // Each library's fastest public API: tether and tungstenite hand out
        // the payload where it lies; embedded-websocket always copies it.
        group.bench_function(BenchmarkId::new("tether", size), |b| {
            b.iter(|| {
                let Ok(Status::Complete((frame, used))) =
                    Frame::decode(black_box(&mut wire[..]), &config)
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
            let mut ws = ews::WebSocketClient::new_client(Rng06(key_rng()));
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
            b.iter(|| {
                let Ok(Status::Complete((frame, used))) =
                    Frame::decode(black_box(&mut wire[..]), &config)
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

/// `criterion_main!`, with the load average recorded during the run: the
/// report says how busy the machine was.
fn main() {
    let start = load_average();
    let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sampler = {
        let samples = std::sync::Arc::clone(&samples);
        std::thread::spawn(move || {
            loop {
                if let Some(one_minute) = load_average().split_whitespace().next()
                    && let Ok(value) = one_minute.parse::<f64>()
                    && let Ok(mut samples) = samples.lock()
                {
                    samples.push(value);
                }
                std::thread::sleep(core::time::Duration::from_secs(5));
            }
        })
    };
    benches();
    Criterion::default().configure_from_args().final_summary();
    drop(sampler);
    // `cargo test --all-targets` runs each benchmark once, without
    // `--bench`: that run measures nothing and must not replace the record.
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    let samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
    let min = samples.iter().copied().reduce(f64::min).unwrap_or(f64::NAN);
    let max = samples.iter().copied().reduce(f64::max).unwrap_or(f64::NAN);
    let record = format!(
        "start {start}\nend {}\n1-minute load average every 5 s during the run: min {min:.2}, max {max:.2}\n",
        load_average()
    );
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("criterion");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("frame_throughput-load.txt"), record);
}

/// The first three fields of `/proc/loadavg` (1, 5 and 15 minutes).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}
