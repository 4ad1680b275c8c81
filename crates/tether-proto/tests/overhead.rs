//! The bytes the protocol adds around a record's channel name and payload,
//! recorded in `docs/performance.md` ("Protocol overhead"). Run with
//! `cargo test -p tether-proto --test overhead -- --nocapture` to print the
//! table.

use tether_proto::{
    DeviceToServer, Event, MAX_CHANNEL_LEN, MAX_PAYLOAD_LEN, Payload, Publish, ServerToReceiver,
};

/// 2025-11-25 18:06:40 UTC, a realistic `time_ms` (a 6-byte varint).
const NOW_MS: u64 = 1_764_094_000_000;

struct Case {
    name: &'static str,
    seq: u32,
    channel_len: usize,
    time_ms: Option<u64>,
    payload_len: usize,
    /// The expected overhead in bytes; the figure `docs/performance.md` cites.
    overhead: usize,
}

const CASES: &[Case] = &[
    Case {
        name: "small record, no time (seq < 128, payload < 128 B)",
        seq: 1,
        channel_len: 4,
        time_ms: None,
        payload_len: 16,
        overhead: 6,
    },
    Case {
        name: "small record with time_ms",
        seq: 42,
        channel_len: 4,
        time_ms: Some(NOW_MS),
        payload_len: 16,
        overhead: 12,
    },
    Case {
        name: "seq 1000, time_ms, 200 B payload",
        seq: 1000,
        channel_len: 12,
        time_ms: Some(NOW_MS),
        payload_len: 200,
        overhead: 14,
    },
    Case {
        name: "worst case (every field at its maximum)",
        seq: u32::MAX,
        channel_len: MAX_CHANNEL_LEN,
        time_ms: Some(u64::MAX),
        payload_len: MAX_PAYLOAD_LEN,
        overhead: 21,
    },
];

#[test]
fn publish_header_overhead() {
    println!("Publish overhead (binary frame bytes besides channel and payload):");
    for case in CASES {
        let channel = "c".repeat(case.channel_len);
        let payload = "7".repeat(case.payload_len);
        let publish = DeviceToServer::Publish(Publish {
            seq: case.seq,
            channel: &channel,
            time_ms: case.time_ms,
            payload: Payload::from_json_str(&payload),
        });
        let frame = publish.encode_to_vec().expect("valid record");
        let overhead = frame.len() - channel.len() - payload.len();
        println!(
            "  {:<52} {:>2} B  (frame {} B)",
            case.name,
            overhead,
            frame.len()
        );
        assert_eq!(overhead, case.overhead, "{}", case.name);
    }
}

/// For comparison: the same small record as a receiver sees it, a JSON
/// `event` text frame.
#[test]
fn event_json_overhead() {
    let channel = "temp";
    let device = "kitchen-1";
    let payload = r#"{"celsius":21.5}"#;
    let event = ServerToReceiver::Event(Event {
        channel,
        offset: 1233,
        device,
        device_time_ms: Some(NOW_MS),
        server_time_ms: NOW_MS + 131,
        payload: Payload::from_json_str(payload),
    });
    let text = event.to_json().expect("valid event");
    let overhead = text.len() - channel.len() - device.len() - payload.len();
    println!("Event JSON overhead (text besides channel, device id and payload): {overhead} B");
    println!("  {text}");
    assert_eq!(overhead, 129);
}
