//! Property tests: every message survives both encodings unchanged, and the
//! binary encoding is canonical (decode ∘ encode is the identity on bytes).

extern crate alloc;

use proptest::prelude::*;
use tether_proto::{
    Ack, Command, CommandAck, CommandResult, CommandStatus, DescribeChannel, DescribeCommand,
    Description, DeviceToServer, ErrorCode, ErrorMessage, Event, FieldDescription, Fields, Hello,
    MAX_CHANNEL_LEN, MAX_DEVICE_ID_LEN, MAX_DEVICE_TO_SERVER_LEN, MAX_FIELDS_LEN,
    MAX_FIRMWARE_VERSION_LEN, MAX_MESSAGE_LEN, MAX_PAYLOAD_LEN, MAX_SERVER_TO_DEVICE_LEN,
    MIN_DOWNLINK_LEN, Payload, Ping, Pong, Publish, ReceiverToServer, SendCommand, ServerToDevice,
    ServerToReceiver, Status, Subscribe, Subscribed, Unsubscribe, Welcome,
};

// ---- strategies for the owned parts; messages borrow from them ----

fn channel() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_.-]{1,12}(/[A-Za-z0-9_.-]{1,12}){0,3}",
        "[a-z]{64}",
    ]
}

fn device_id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.:-]{1,64}"
}

/// Printable ASCII without `"` and `\`.
fn text(min: usize, max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[ !#-\\[\\]-~]{{{min},{max}}}")).expect("valid regex")
}

/// One JSON value, as compact or spaced text, at most `MAX_PAYLOAD_LEN`.
fn json_payload() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        ".{0,20}".prop_map(serde_json::Value::from),
    ];
    let value = leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
            prop::collection::btree_map(".{0,10}", inner, 0..8)
                .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    });
    (value, any::<bool>())
        .prop_map(|(value, pretty)| {
            if pretty {
                serde_json::to_string_pretty(&value)
            } else {
                serde_json::to_string(&value)
            }
            .expect("a Value serializes")
        })
        .prop_filter("fits MAX_PAYLOAD_LEN", |text| text.len() <= MAX_PAYLOAD_LEN)
}

/// Label text: UTF-8 without control characters, `"` or `\`, at most
/// `max` bytes.
fn label(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex("[^\"\\\\\\p{Cc}]{0,12}")
        .expect("valid regex")
        .prop_map(move |mut text| {
            while text.len() > max {
                text.pop();
            }
            text
        })
}

/// A valid number for a scale or a range bound.
fn number() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.01),
        Just(1.0),
        Just(-40.0),
        // A decimal of at most 12 fraction digits, as firmware writes
        // them: ±n × 10^-d.
        (1..1_000_000_000_000_i64, 0..=12u32, any::<bool>()).prop_map(|(n, d, negative)| {
            let n = if negative { -n } else { n };
            format!("{n}e-{d}").parse::<f64>().expect("a decimal")
        }),
    ]
}

/// The owned parts of a field description.
type OwnedField = (
    String,
    String,
    String,
    f64,
    Option<u8>,
    Option<f64>,
    Option<f64>,
);

fn field() -> impl Strategy<Value = OwnedField> {
    (
        "[A-Za-z0-9_.-]{0,32}",
        label(32),
        label(16),
        number(),
        prop::option::of(0..=9u8),
        prop::option::of(number()),
        prop::option::of(number()),
    )
        .prop_map(|(key, label, unit, scale, decimals, min, max)| {
            // A range goes from low to high.
            let (min, max) = match (min, max) {
                (Some(a), Some(b)) if a < b => (Some(a), Some(b)),
                (Some(a), Some(b)) if b < a => (Some(b), Some(a)),
                (Some(a), Some(_)) => (Some(a), None),
                other => other,
            };
            (key, label, unit, scale, decimals, min, max)
        })
}

/// 1 to 6 fields with distinct keys.
fn fields() -> impl Strategy<Value = Vec<OwnedField>> {
    prop::collection::vec(field(), 1..=6).prop_map(|mut fields| {
        let mut seen = alloc::collections::BTreeSet::new();
        fields.retain(|field| seen.insert(field.0.clone()));
        fields
    })
}

fn borrow(fields: &[OwnedField]) -> Vec<FieldDescription<'_>> {
    fields
        .iter()
        .map(
            |(key, label, unit, scale, decimals, min, max)| FieldDescription {
                key,
                label,
                unit,
                scale: *scale,
                decimals: *decimals,
                min: *min,
                max: *max,
            },
        )
        .collect()
}

fn status() -> impl Strategy<Value = CommandStatus> {
    prop_oneof![
        Just(CommandStatus::Ok),
        Just(CommandStatus::Rejected),
        Just(CommandStatus::Failed),
        Just(CommandStatus::Unsupported),
    ]
}

/// Checks one message in both encodings, and that the binary encoding is
/// canonical and fits the documented buffer sizes.
macro_rules! check_both {
    ($ty:ident, $message:expr, $max_len:expr) => {{
        let message: $ty<'_> = $message;
        let mut buf = vec![0u8; $max_len];
        let bytes = message.encode(&mut buf).expect("valid message encodes");
        prop_assert_eq!(bytes.len(), message.encoded_len());
        prop_assert!(bytes.len() <= $max_len);
        let decoded = $ty::decode(bytes).expect("own output decodes");
        prop_assert_eq!(decoded, message);
        let mut again = vec![0u8; bytes.len()];
        prop_assert_eq!(decoded.encode(&mut again).expect("re-encodes"), bytes);
        prop_assert_eq!(message.encode_to_vec().expect("encodes to vec"), bytes);

        let json = message.to_json().expect("JSON payloads encode");
        let from_json = $ty::from_json(&json).expect("own JSON decodes");
        prop_assert_eq!(from_json, message);
        prop_assert_eq!(from_json.to_json().expect("re-encodes"), json.clone());
        // The receiver-facing text is plain JSON any parser reads.
        let value: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        prop_assert_eq!(value["v"].as_u64(), Some(1));
    }};
}

/// Receiver messages have no documented buffer bound; 16 KiB holds any.
const RECEIVER_BUF: usize = 16 * 1024;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn hello(
        id in device_id(),
        firmware in text(1, MAX_FIRMWARE_VERSION_LEN),
        boot_id in any::<u64>(),
        last_acked_seq in any::<u32>(),
        max_downlink_len in prop::option::of(MIN_DOWNLINK_LEN..=u32::MAX),
    ) {
        check_both!(DeviceToServer, DeviceToServer::Hello(Hello {
            device_id: &id,
            firmware_version: &firmware,
            boot_id,
            last_acked_seq,
            max_downlink_len,
        }), MAX_DEVICE_TO_SERVER_LEN);
    }

    /// A `Hello` with the extension is the `Hello` without it plus one
    /// varint; without it, it is exactly the first version's bytes.
    #[test]
    fn hello_extension_is_a_trailing_varint(
        boot_id in any::<u64>(),
        max_downlink_len in MIN_DOWNLINK_LEN..=u32::MAX,
    ) {
        let old = Hello {
            device_id: "dev-1",
            firmware_version: "1.0",
            boot_id,
            last_acked_seq: 7,
            max_downlink_len: None,
        };
        let new = Hello { max_downlink_len: Some(max_downlink_len), ..old };
        let old_bytes = DeviceToServer::Hello(old).encode_to_vec().expect("encodes");
        let new_bytes = DeviceToServer::Hello(new).encode_to_vec().expect("encodes");
        prop_assert!(new_bytes.starts_with(&old_bytes));
        let mut varint = [0u8; 5];
        let tail = postcard::to_slice(&max_downlink_len, &mut varint).expect("fits");
        prop_assert_eq!(&new_bytes[old_bytes.len()..], &*tail);
        prop_assert_eq!(DeviceToServer::decode(&old_bytes), Ok(DeviceToServer::Hello(old)));
        prop_assert_eq!(DeviceToServer::decode(&new_bytes), Ok(DeviceToServer::Hello(new)));
        prop_assert_eq!(old.downlink_limit(), tether_proto::DEFAULT_MAX_DOWNLINK_LEN);
        prop_assert_eq!(new.downlink_limit(), max_downlink_len);
    }

    #[test]
    fn publish(
        seq in 1..=u32::MAX,
        channel in channel(),
        time_ms in any::<Option<u64>>(),
        payload in json_payload(),
    ) {
        check_both!(DeviceToServer, DeviceToServer::Publish(Publish {
            seq,
            channel: &channel,
            time_ms,
            payload: Payload::from_json_str(&payload),
        }), MAX_DEVICE_TO_SERVER_LEN);
    }

    #[test]
    fn command_ack(id in any::<u32>(), status in status(), result in json_payload()) {
        check_both!(DeviceToServer, DeviceToServer::CommandAck(CommandAck {
            id,
            status,
            result: Payload::from_json_str(&result),
        }), MAX_DEVICE_TO_SERVER_LEN);
    }

    #[test]
    fn welcome(
        session_id in any::<u64>(),
        server_time_ms in any::<u64>(),
        last_stored_seq in any::<u32>(),
        max_in_flight in 1..=u16::MAX,
    ) {
        check_both!(ServerToDevice, ServerToDevice::Welcome(Welcome {
            session_id,
            server_time_ms,
            last_stored_seq,
            max_in_flight,
        }), MAX_SERVER_TO_DEVICE_LEN);
    }

    #[test]
    fn describe_channel(channel in channel(), owned in fields()) {
        let described = borrow(&owned);
        let fields = Fields::new(&described);
        prop_assert!(fields.json_len() <= MAX_FIELDS_LEN);
        check_both!(DeviceToServer, DeviceToServer::DescribeChannel(DescribeChannel::new(
            &channel,
            fields,
        )), MAX_DEVICE_TO_SERVER_LEN);
        // What a server reads back is what the device described, and its
        // canonical text is the device's text.
        let bytes = DeviceToServer::DescribeChannel(DescribeChannel::new(&channel, fields))
            .encode_to_vec()
            .expect("encodes");
        let Ok(DeviceToServer::DescribeChannel(decoded)) = DeviceToServer::decode(&bytes) else {
            panic!("decodes as DescribeChannel");
        };
        let parsed = decoded.fields.parse().expect("a valid field list");
        prop_assert_eq!(&parsed, &described);
        prop_assert_eq!(Fields::new(&parsed).to_json_string(), fields.to_json_string());
    }

    #[test]
    fn describe_command(channel in channel(), label in label(32), example in json_payload()) {
        prop_assume!(example.len() <= tether_proto::MAX_EXAMPLE_LEN);
        check_both!(DeviceToServer, DeviceToServer::DescribeCommand(
            DescribeCommand::new(&channel).with_label(&label).with_example(&example)
        ), MAX_DEVICE_TO_SERVER_LEN);
    }

    #[test]
    fn status_message(rssi_dbm in prop::option::of(tether_proto::MIN_RSSI_DBM..=0)) {
        check_both!(DeviceToServer, DeviceToServer::Status(Status { rssi_dbm }), MAX_DEVICE_TO_SERVER_LEN);
    }

    #[test]
    fn description(channel in channel(), device in device_id(), owned in fields()) {
        let described = borrow(&owned);
        check_both!(ServerToReceiver, ServerToReceiver::Description(Description {
            channel: &channel,
            device: &device,
            fields: Fields::new(&described),
        }), RECEIVER_BUF);
    }

    #[test]
    fn ack(seq in any::<u32>()) {
        check_both!(ServerToDevice, ServerToDevice::Ack(Ack { seq }), MAX_SERVER_TO_DEVICE_LEN);
    }

    #[test]
    fn command(id in any::<u32>(), channel in channel(), payload in json_payload()) {
        check_both!(ServerToDevice, ServerToDevice::Command(Command {
            id,
            channel: &channel,
            payload: Payload::from_json_str(&payload),
        }), MAX_SERVER_TO_DEVICE_LEN);
    }

    #[test]
    fn subscribe(
        channel in channel(),
        from in any::<Option<u64>>(),
        request_id in any::<Option<u32>>(),
    ) {
        check_both!(ReceiverToServer, ReceiverToServer::Subscribe(Subscribe {
            channel: &channel,
            from,
            request_id,
        }), RECEIVER_BUF);
    }

    #[test]
    fn unsubscribe(channel in channel()) {
        check_both!(ReceiverToServer, ReceiverToServer::Unsubscribe(Unsubscribe {
            channel: &channel,
        }), RECEIVER_BUF);
    }

    #[test]
    fn send_command(
        request_id in any::<u32>(),
        device in device_id(),
        channel in channel(),
        payload in json_payload(),
    ) {
        check_both!(ReceiverToServer, ReceiverToServer::SendCommand(SendCommand {
            request_id,
            device: &device,
            channel: &channel,
            payload: Payload::from_json_str(&payload),
        }), RECEIVER_BUF);
    }

    #[test]
    fn ping(id in any::<u32>()) {
        check_both!(ReceiverToServer, ReceiverToServer::Ping(Ping { id }), RECEIVER_BUF);
    }

    #[test]
    fn pong(id in any::<u32>()) {
        check_both!(ServerToReceiver, ServerToReceiver::Pong(Pong { id }), RECEIVER_BUF);
    }

    #[test]
    fn subscribed(
        channel in channel(),
        first_offset in any::<u64>(),
        next_offset in any::<u64>(),
        request_id in any::<Option<u32>>(),
    ) {
        check_both!(ServerToReceiver, ServerToReceiver::Subscribed(Subscribed {
            channel: &channel,
            first_offset,
            next_offset,
            request_id,
        }), RECEIVER_BUF);
    }

    #[test]
    fn event(
        channel in channel(),
        offset in any::<u64>(),
        device in device_id(),
        device_time_ms in any::<Option<u64>>(),
        server_time_ms in any::<u64>(),
        payload in json_payload(),
    ) {
        check_both!(ServerToReceiver, ServerToReceiver::Event(Event {
            channel: &channel,
            offset,
            device: &device,
            device_time_ms,
            server_time_ms,
            payload: Payload::from_json_str(&payload),
        }), RECEIVER_BUF);
    }

    #[test]
    fn command_result(
        request_id in any::<u32>(),
        status in status(),
        result in json_payload(),
    ) {
        check_both!(ServerToReceiver, ServerToReceiver::CommandResult(CommandResult {
            request_id,
            status,
            result: Payload::from_json_str(&result),
        }), RECEIVER_BUF);
    }

    #[test]
    fn error(
        code in any::<u16>(),
        request_id in any::<Option<u32>>(),
        message in text(0, MAX_MESSAGE_LEN),
        channel in prop::option::of(channel()),
    ) {
        check_both!(ServerToReceiver, ServerToReceiver::Error(ErrorMessage {
            code: ErrorCode(code),
            request_id,
            message: &message,
            channel: channel.as_deref(),
        }), RECEIVER_BUF);
    }

    /// The binary encoding carries any bytes as a payload (the JSON check is
    /// the server's, see `Payload::check_json`).
    #[test]
    fn binary_payload_is_opaque(
        seq in 1..=u32::MAX,
        payload in prop::collection::vec(any::<u8>(), 0..=MAX_PAYLOAD_LEN),
    ) {
        let message = DeviceToServer::Publish(Publish {
            seq,
            channel: "raw",
            time_ms: None,
            payload: Payload(&payload),
        });
        let bytes = message.encode_to_vec().expect("encodes");
        prop_assert_eq!(DeviceToServer::decode(&bytes), Ok(message));
    }

    /// Every proper prefix of a valid frame is `Truncated`, never a message.
    #[test]
    fn prefixes_are_truncated(
        channel in channel(),
        payload in json_payload(),
        time_ms in any::<Option<u64>>(),
    ) {
        let message = DeviceToServer::Publish(Publish {
            seq: 300,
            channel: &channel,
            time_ms,
            payload: Payload::from_json_str(&payload),
        });
        let bytes = message.encode_to_vec().expect("encodes");
        for end in 0..bytes.len() {
            prop_assert_eq!(
                DeviceToServer::decode(&bytes[..end]),
                Err(tether_proto::DecodeError::Truncated),
                "prefix of {} bytes", end
            );
        }
    }

    /// Arbitrary bytes never panic a decoder; what decodes re-encodes to the
    /// same bytes.
    #[test]
    fn arbitrary_bytes(mut bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Some(first) = bytes.first_mut() {
            *first = tether_proto::PROTOCOL_VERSION;
        }
        if let Ok(message) = DeviceToServer::decode(&bytes) {
            prop_assert_eq!(message.encode_to_vec().expect("re-encodes"), bytes.clone());
        }
        if let Ok(message) = ServerToDevice::decode(&bytes) {
            prop_assert_eq!(message.encode_to_vec().expect("re-encodes"), bytes.clone());
        }
        if let Ok(message) = ReceiverToServer::decode(&bytes) {
            prop_assert_eq!(message.encode_to_vec().expect("re-encodes"), bytes.clone());
        }
        if let Ok(message) = ServerToReceiver::decode(&bytes) {
            prop_assert_eq!(message.encode_to_vec().expect("re-encodes"), bytes.clone());
        }
    }
}

/// The documented buffer sizes are exact: the largest valid message fills
/// them, to the byte.
#[test]
fn max_lengths_are_exact() {
    let channel = "c".repeat(MAX_CHANNEL_LEN);
    let payload = "7".repeat(MAX_PAYLOAD_LEN);
    let publish = DeviceToServer::Publish(Publish {
        seq: u32::MAX,
        channel: &channel,
        time_ms: Some(u64::MAX),
        payload: Payload::from_json_str(&payload),
    });
    assert_eq!(publish.encoded_len(), MAX_DEVICE_TO_SERVER_LEN);
    assert_eq!(MAX_DEVICE_TO_SERVER_LEN, 4181);
    let mut buf = [0u8; MAX_DEVICE_TO_SERVER_LEN];
    assert_eq!(
        publish.encode(&mut buf).map(<[u8]>::len),
        Ok(MAX_DEVICE_TO_SERVER_LEN)
    );

    let id = "d".repeat(MAX_DEVICE_ID_LEN);
    let firmware = "f".repeat(MAX_FIRMWARE_VERSION_LEN);
    let hello = DeviceToServer::Hello(Hello {
        device_id: &id,
        firmware_version: &firmware,
        boot_id: u64::MAX,
        last_acked_seq: u32::MAX,
        max_downlink_len: Some(u32::MAX),
    });
    assert!(hello.encoded_len() <= MAX_DEVICE_TO_SERVER_LEN);

    let command = ServerToDevice::Command(Command {
        id: u32::MAX,
        channel: &channel,
        payload: Payload::from_json_str(&payload),
    });
    assert_eq!(command.encoded_len(), MAX_SERVER_TO_DEVICE_LEN);
    assert_eq!(MAX_SERVER_TO_DEVICE_LEN, 4170);
    let welcome = ServerToDevice::Welcome(Welcome {
        session_id: u64::MAX,
        server_time_ms: u64::MAX,
        last_stored_seq: u32::MAX,
        max_in_flight: u16::MAX,
    });
    assert!(welcome.encoded_len() <= MAX_SERVER_TO_DEVICE_LEN);
}
