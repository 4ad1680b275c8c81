//! Every decoding and encoding error path, in both encodings.

use tether_proto::{
    Ack, Command, CommandAck, CommandResult, CommandStatus, DecodeError, DeviceToServer,
    EncodeError, ErrorCode, ErrorMessage, Event, Field, Hello, MAX_CHANNEL_LEN, MAX_DEVICE_ID_LEN,
    MAX_FIRMWARE_VERSION_LEN, MAX_MESSAGE_LEN, MAX_PAYLOAD_LEN, Payload, Publish, ReceiverToServer,
    SendCommand, ServerToDevice, ServerToReceiver, Subscribe, Subscribed, Unsubscribe, Welcome,
};

const TOO_LONG_CHANNEL: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

fn publish(channel: &str) -> DeviceToServer<'_> {
    DeviceToServer::Publish(Publish {
        seq: 1,
        channel,
        time_ms: None,
        payload: Payload::from_json_str("1"),
    })
}

/// Encodes without validation, to produce frames a correct peer never
/// sends: the valid frame, then a byte-level edit of it.
fn frame_of(message: &DeviceToServer<'_>) -> Vec<u8> {
    message.encode_to_vec().expect("valid message")
}

// ---------------------------------------------------------------- binary

#[test]
fn binary_truncated() {
    assert_eq!(DeviceToServer::decode(&[]), Err(DecodeError::Truncated));
    assert_eq!(DeviceToServer::decode(&[1]), Err(DecodeError::Truncated));
    let frame = frame_of(&publish("temp"));
    assert_eq!(
        DeviceToServer::decode(&frame[..frame.len() - 1]),
        Err(DecodeError::Truncated)
    );
    // A string whose length prefix promises more than the frame has.
    assert_eq!(
        DeviceToServer::decode(&[1, 1, 1, 0x20, b't']),
        Err(DecodeError::Truncated)
    );
}

#[test]
fn binary_unsupported_version() {
    let mut frame = frame_of(&publish("temp"));
    for version in [0, 2, 0xff] {
        frame[0] = version;
        assert_eq!(
            DeviceToServer::decode(&frame),
            Err(DecodeError::UnsupportedVersion { found: version })
        );
    }
}

#[test]
fn binary_unknown_message() {
    // DeviceToServer has kinds 0..=5, ServerToDevice 0..=2,
    // ReceiverToServer 0..=3, ServerToReceiver 0..=5.
    assert_eq!(
        DeviceToServer::decode(&[1, 6]),
        Err(DecodeError::UnknownMessage)
    );
    assert_eq!(
        ServerToDevice::decode(&[1, 3]),
        Err(DecodeError::UnknownMessage)
    );
    assert_eq!(
        ReceiverToServer::decode(&[1, 4]),
        Err(DecodeError::UnknownMessage)
    );
    assert_eq!(
        ServerToReceiver::decode(&[1, 6]),
        Err(DecodeError::UnknownMessage)
    );
    // A large discriminant as a 5-byte varint.
    assert_eq!(
        DeviceToServer::decode(&[1, 0xff, 0xff, 0xff, 0xff, 0x0f]),
        Err(DecodeError::UnknownMessage)
    );
}

#[test]
fn binary_malformed() {
    // Discriminant varint longer than a u32 allows.
    assert_eq!(
        DeviceToServer::decode(&[1, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
        Err(DecodeError::Malformed)
    );
    // Over-long (non-minimal) varint: Ack { seq: 0 } as `80 00`.
    assert_eq!(
        ServerToDevice::decode(&[1, 1, 0x00]),
        Ok(ServerToDevice::Ack(Ack { seq: 0 }))
    );
    assert_eq!(
        ServerToDevice::decode(&[1, 1, 0x80, 0x00]),
        Err(DecodeError::Malformed)
    );
    // Over-long discriminant: `81 00` for kind 1.
    assert_eq!(
        ServerToDevice::decode(&[1, 0x81, 0x00, 0x00]),
        Err(DecodeError::Malformed)
    );
    // Invalid UTF-8 in the channel.
    let mut frame = frame_of(&publish("temp"));
    // version, kind, seq, channel length, then the channel bytes.
    frame[4] = 0xff;
    assert_eq!(DeviceToServer::decode(&frame), Err(DecodeError::Malformed));
    // Option tag other than 0 or 1 (the `time_ms` tag follows the channel).
    let mut frame = frame_of(&publish("temp"));
    frame[8] = 2;
    assert_eq!(DeviceToServer::decode(&frame), Err(DecodeError::Malformed));
    // Unknown CommandStatus (kind 2, id 5, status 4).
    let ack = DeviceToServer::CommandAck(CommandAck {
        id: 5,
        status: CommandStatus::Ok,
        result: Payload::NULL,
    });
    let mut frame = frame_of(&ack);
    assert_eq!(&frame[..4], &[1, 2, 5, 0]);
    frame[3] = 4;
    assert_eq!(DeviceToServer::decode(&frame), Err(DecodeError::Malformed));
}

#[test]
fn binary_trailing_bytes() {
    let mut frame = frame_of(&publish("temp"));
    frame.push(0);
    assert_eq!(
        DeviceToServer::decode(&frame),
        Err(DecodeError::TrailingBytes)
    );
}

/// Frames that break a bound are written by hand (postcard of the same shape,
/// no validation).
fn string(out: &mut Vec<u8>, text: &[u8]) {
    varint(out, text.len() as u64);
    out.extend_from_slice(text);
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn hand_publish(seq: u64, channel: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = vec![1, 1];
    varint(&mut out, seq);
    string(&mut out, channel);
    out.push(0);
    string(&mut out, payload);
    out
}

fn hand_hello(device_id: &[u8], firmware: &[u8]) -> Vec<u8> {
    let mut out = vec![1, 0];
    string(&mut out, device_id);
    string(&mut out, firmware);
    out.extend_from_slice(&[1, 0]);
    out
}

#[test]
fn binary_too_long_and_invalid_fields() {
    let long_payload = vec![b'1'; MAX_PAYLOAD_LEN + 1];
    let ok_payload = vec![b'1'; MAX_PAYLOAD_LEN];
    let long_channel = vec![b'c'; MAX_CHANNEL_LEN + 1];
    let long_id = vec![b'd'; MAX_DEVICE_ID_LEN + 1];
    let long_firmware = vec![b'f'; MAX_FIRMWARE_VERSION_LEN + 1];

    let frame = hand_publish(1, b"temp", &ok_payload);
    assert!(DeviceToServer::decode(&frame).is_ok());
    let cases: Vec<(Vec<u8>, DecodeError)> = vec![
        (
            hand_publish(1, b"temp", &long_payload),
            DecodeError::TooLong {
                field: Field::Payload,
            },
        ),
        (
            hand_publish(1, &long_channel, b"1"),
            DecodeError::TooLong {
                field: Field::Channel,
            },
        ),
        (
            hand_publish(1, b"", b"1"),
            DecodeError::InvalidField {
                field: Field::Channel,
            },
        ),
        (
            hand_publish(1, b"a b", b"1"),
            DecodeError::InvalidField {
                field: Field::Channel,
            },
        ),
        (
            hand_publish(0, b"temp", b"1"),
            DecodeError::InvalidField { field: Field::Seq },
        ),
        (
            hand_hello(&long_id, b"1.0"),
            DecodeError::TooLong {
                field: Field::DeviceId,
            },
        ),
        (
            hand_hello(b"", b"1.0"),
            DecodeError::InvalidField {
                field: Field::DeviceId,
            },
        ),
        (
            hand_hello(b"dev", &long_firmware),
            DecodeError::TooLong {
                field: Field::FirmwareVersion,
            },
        ),
        (
            hand_hello(b"dev", b""),
            DecodeError::InvalidField {
                field: Field::FirmwareVersion,
            },
        ),
        (
            hand_hello(b"dev", b"1.0\""),
            DecodeError::InvalidField {
                field: Field::FirmwareVersion,
            },
        ),
    ];
    for (frame, expected) in cases {
        assert_eq!(
            DeviceToServer::decode(&frame),
            Err(expected),
            "{frame:02x?}"
        );
    }

    // CommandAck result (kind 2, id 1, status 0, result).
    let mut frame = vec![1, 2, 1, 0];
    string(&mut frame, &long_payload);
    assert_eq!(
        DeviceToServer::decode(&frame),
        Err(DecodeError::TooLong {
            field: Field::Payload
        })
    );

    // Server → device: Welcome with max_in_flight 0, Command bounds.
    assert_eq!(
        ServerToDevice::decode(&[1, 0, 1, 1, 0, 0]),
        Err(DecodeError::InvalidField {
            field: Field::MaxInFlight
        })
    );
    let mut frame = vec![1, 2, 1];
    string(&mut frame, &long_channel);
    string(&mut frame, b"1");
    assert_eq!(
        ServerToDevice::decode(&frame),
        Err(DecodeError::TooLong {
            field: Field::Channel
        })
    );
    let mut frame = vec![1, 2, 1];
    string(&mut frame, b"reboot");
    string(&mut frame, &long_payload);
    assert_eq!(
        ServerToDevice::decode(&frame),
        Err(DecodeError::TooLong {
            field: Field::Payload
        })
    );

    // Receiver messages in binary: the same checks.
    let mut frame = vec![1, 2, 1];
    string(&mut frame, &long_id);
    string(&mut frame, b"reboot");
    string(&mut frame, b"1");
    assert_eq!(
        ReceiverToServer::decode(&frame),
        Err(DecodeError::TooLong {
            field: Field::DeviceId
        })
    );
    let mut frame = vec![1, 3, 7, 0];
    string(&mut frame, &vec![b'm'; MAX_MESSAGE_LEN + 1]);
    assert_eq!(
        ServerToReceiver::decode(&frame),
        Err(DecodeError::TooLong {
            field: Field::Message
        })
    );
}

// ------------------------------------------------------------------ JSON

#[test]
fn json_errors() {
    let d = DeviceToServer::from_json;
    let cases: &[(&str, DecodeError)] = &[
        ("", DecodeError::Truncated),
        (r#"{"v":1,"publish":{"seq":1"#, DecodeError::Truncated),
        ("[]", DecodeError::Malformed),
        ("1", DecodeError::Malformed),
        ("{}", DecodeError::Malformed),
        (r#"{"v":1}"#, DecodeError::Malformed),
        (r#"{"ack":{"seq":1}}"#, DecodeError::Malformed),
        (r#"{"v":"1","ack":{"seq":1}}"#, DecodeError::Malformed),
        (r#"{"v":1,"v":1,"hello":{}}"#, DecodeError::Malformed),
        (
            r#"{"v":1,"publish":{"seq":1,"channel":"t","time_ms":null,"payload":1},"hello":{}}"#,
            DecodeError::Malformed,
        ),
        (r#"{"v":1,"publish":{"seq":1}}"#, DecodeError::Malformed),
        (
            r#"{"v":1,"publish":{"seq":-1,"channel":"t","time_ms":null,"payload":1}}"#,
            DecodeError::Malformed,
        ),
        // Escapes are never needed (every string is plain ASCII) and not
        // accepted: strings borrow from the frame.
        (
            r#"{"v":1,"publish":{"seq":1,"channel":"te\u0073t","time_ms":null,"payload":1}}"#,
            DecodeError::Malformed,
        ),
        (
            r#"{"v":1,"publish":{"seq":1,"channel":"t","time_ms":null,"payload":1}} x"#,
            DecodeError::Malformed,
        ),
        (
            r#"{"v":2,"ack":{"seq":1}}"#,
            DecodeError::UnsupportedVersion { found: 2 },
        ),
        (
            r#"{"v":0,"hello":{}}"#,
            DecodeError::UnsupportedVersion { found: 0 },
        ),
        (
            r#"{"v":1000,"hello":{}}"#,
            DecodeError::UnsupportedVersion { found: 255 },
        ),
        (r#"{"v":1,"ack":{"seq":1}}"#, DecodeError::UnknownMessage),
        (r#"{"v":1,"Publish":{}}"#, DecodeError::UnknownMessage),
        (
            r#"{"v":1,"publish":{"seq":0,"channel":"t","time_ms":null,"payload":1}}"#,
            DecodeError::InvalidField { field: Field::Seq },
        ),
        (
            r#"{"v":1,"publish":{"seq":1,"channel":"a//b","time_ms":null,"payload":1}}"#,
            DecodeError::InvalidField {
                field: Field::Channel,
            },
        ),
        (
            r#"{"v":1,"hello":{"device_id":"d","firmware_version":"","boot_id":1,"last_acked_seq":0}}"#,
            DecodeError::InvalidField {
                field: Field::FirmwareVersion,
            },
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(d(text), Err(*expected), "{text}");
    }

    let long_channel = format!(
        r#"{{"v":1,"publish":{{"seq":1,"channel":"{TOO_LONG_CHANNEL}","time_ms":null,"payload":1}}}}"#
    );
    assert_eq!(
        d(&long_channel),
        Err(DecodeError::TooLong {
            field: Field::Channel
        })
    );
    let long_payload = format!(
        r#"{{"v":1,"send_command":{{"request_id":1,"device":"d","channel":"c","payload":"{}"}}}}"#,
        "x".repeat(MAX_PAYLOAD_LEN - 1)
    );
    assert_eq!(
        ReceiverToServer::from_json(&long_payload),
        Err(DecodeError::TooLong {
            field: Field::Payload
        })
    );
    let unknown_subscribe_field = r#"{"v":1,"subscribe":{"channel":"t","later":true}}"#;
    assert_eq!(
        ReceiverToServer::from_json(unknown_subscribe_field),
        Ok(ReceiverToServer::Subscribe(Subscribe {
            channel: "t",
            from: None,
            request_id: None,
        })),
        "unknown members are ignored; a missing `from` is null"
    );
    let message = r#"{"v":1,"error":{"code":1,"request_id":null,"message":"bad \"quote\""}}"#;
    assert_eq!(
        ServerToReceiver::from_json(message),
        Err(DecodeError::Malformed)
    );
}

// -------------------------------------------------------------- encoding

#[test]
fn encode_errors() {
    let message = publish("temp");
    let len = message.encoded_len();
    let mut buf = vec![0u8; len];
    assert_eq!(message.encode(&mut buf).map(<[u8]>::len), Ok(len));
    assert_eq!(
        message.encode(&mut buf[..len - 1]),
        Err(EncodeError::BufferTooSmall)
    );
    assert_eq!(message.encode(&mut []), Err(EncodeError::BufferTooSmall));

    let mut buf = [0u8; 64];
    assert_eq!(
        publish(TOO_LONG_CHANNEL).encode(&mut buf),
        Err(EncodeError::TooLong {
            field: Field::Channel
        })
    );
    assert_eq!(
        publish(TOO_LONG_CHANNEL).to_json(),
        Err(EncodeError::TooLong {
            field: Field::Channel
        })
    );
    assert_eq!(
        publish("bad channel").encode(&mut buf),
        Err(EncodeError::InvalidField {
            field: Field::Channel
        })
    );
    let hello = DeviceToServer::Hello(Hello {
        device_id: "dev",
        firmware_version: "",
        boot_id: 1,
        last_acked_seq: 0,
        max_downlink_len: None,
    });
    assert_eq!(
        hello.encode(&mut buf),
        Err(EncodeError::InvalidField {
            field: Field::FirmwareVersion
        })
    );
    let small = DeviceToServer::Hello(Hello {
        device_id: "dev",
        firmware_version: "1",
        boot_id: 1,
        last_acked_seq: 0,
        max_downlink_len: Some(tether_proto::MIN_DOWNLINK_LEN - 1),
    });
    assert_eq!(
        small.encode(&mut buf),
        Err(EncodeError::InvalidField {
            field: Field::MaxDownlinkLen
        })
    );

    // Binary carries any payload bytes; JSON only JSON values.
    for not_json in ["", "{", "nul", " 1", "1 ", "[1] [2]", "\"\u{1}\""] {
        let message = DeviceToServer::Publish(Publish {
            seq: 1,
            channel: "t",
            time_ms: None,
            payload: Payload::from_json_str(not_json),
        });
        assert!(message.encode(&mut buf).is_ok(), "{not_json:?}");
        assert_eq!(
            message.to_json(),
            Err(EncodeError::PayloadNotJson),
            "{not_json:?}"
        );
        assert_eq!(
            Payload::from_json_str(not_json).check_json(),
            Err(EncodeError::PayloadNotJson)
        );
    }
    let bytes = DeviceToServer::Publish(Publish {
        seq: 1,
        channel: "t",
        time_ms: None,
        payload: Payload(&[0xff, 0xfe]),
    });
    assert_eq!(bytes.to_json(), Err(EncodeError::PayloadNotJson));
    assert_eq!(
        Payload::from_json_str(r#"{"a":[1,2.5,null]}"#).check_json(),
        Ok(())
    );
    // Deep nesting is checked without recursion (no stack overflow), and
    // refused past the limit strict readers have.
    let deep = format!("{}{}", "[".repeat(2000), "]".repeat(2000));
    assert_eq!(
        Payload::from_json_str(&deep).check_json(),
        Err(EncodeError::PayloadNotJson)
    );
    let unbalanced = format!("{}{}", "[".repeat(2000), "]".repeat(1999));
    assert_eq!(
        Payload::from_json_str(&unbalanced).check_json(),
        Err(EncodeError::PayloadNotJson)
    );

    let error = ServerToReceiver::Error(ErrorMessage {
        code: ErrorCode::INTERNAL,
        request_id: None,
        message: "tab\there",
        channel: None,
    });
    assert_eq!(
        error.to_json(),
        Err(EncodeError::InvalidField {
            field: Field::Message
        })
    );
    let welcome = ServerToDevice::Welcome(Welcome {
        session_id: 1,
        server_time_ms: 1,
        last_stored_seq: 0,
        max_in_flight: 0,
    });
    assert_eq!(
        welcome.encode(&mut buf),
        Err(EncodeError::InvalidField {
            field: Field::MaxInFlight
        })
    );
}

/// Every validated field of every message, in both encoders.
#[test]
fn every_message_validates_its_fields() {
    let long_payload = "1".repeat(MAX_PAYLOAD_LEN + 1);
    let payload = Payload::from_json_str(&long_payload);
    let too_long = Err(EncodeError::TooLong {
        field: Field::Payload,
    });
    let mut buf = vec![0u8; 8192];

    let device = [
        DeviceToServer::CommandAck(CommandAck {
            id: 1,
            status: CommandStatus::Failed,
            result: payload,
        }),
        DeviceToServer::Publish(Publish {
            seq: 1,
            channel: "t",
            time_ms: None,
            payload,
        }),
    ];
    for message in device {
        assert_eq!(message.encode(&mut buf).map(|_| ()), too_long);
        assert_eq!(message.to_json().map(|_| ()), too_long);
    }
    let command = ServerToDevice::Command(Command {
        id: 1,
        channel: "t",
        payload,
    });
    assert_eq!(command.encode(&mut buf).map(|_| ()), too_long);
    let send = ReceiverToServer::SendCommand(SendCommand {
        request_id: 1,
        device: "d",
        channel: "t",
        payload,
    });
    assert_eq!(send.encode(&mut buf).map(|_| ()), too_long);
    let receiver = [
        ServerToReceiver::Event(Event {
            channel: "t",
            offset: 1,
            device: "d",
            device_time_ms: None,
            server_time_ms: 1,
            payload,
        }),
        ServerToReceiver::CommandResult(CommandResult {
            request_id: 1,
            status: CommandStatus::Ok,
            result: payload,
        }),
    ];
    for message in receiver {
        assert_eq!(message.encode(&mut buf).map(|_| ()), too_long);
    }
    let bad_channel = Err(EncodeError::InvalidField {
        field: Field::Channel,
    });
    assert_eq!(
        ReceiverToServer::Unsubscribe(Unsubscribe { channel: "/" })
            .encode(&mut buf)
            .map(|_| ()),
        bad_channel
    );
    assert_eq!(
        ReceiverToServer::Subscribe(Subscribe {
            channel: "",
            from: None,
            request_id: None,
        })
        .encode(&mut buf)
        .map(|_| ()),
        bad_channel
    );
    assert_eq!(
        ServerToReceiver::Subscribed(Subscribed {
            channel: "a b",
            first_offset: 1,
            next_offset: 1,
            request_id: None,
        })
        .encode(&mut buf)
        .map(|_| ()),
        bad_channel
    );
    assert_eq!(
        ServerToReceiver::Event(Event {
            channel: "t",
            offset: 1,
            device: "no/slash",
            device_time_ms: None,
            server_time_ms: 1,
            payload: Payload::NULL,
        })
        .encode(&mut buf)
        .map(|_| ()),
        Err(EncodeError::InvalidField {
            field: Field::DeviceId
        })
    );
}

#[test]
fn error_codes() {
    for (index, code) in ErrorCode::ALL.iter().enumerate() {
        assert_eq!(usize::from(code.0), index + 1, "codes are dense from 1");
        assert!(code.name().is_some());
        let close = code.close_code().expect("fits 4000..=4999");
        assert_eq!(ErrorCode::from_close_code(close), Some(*code));
    }
    assert_eq!(ErrorCode::DEVICE_OFFLINE.close_code(), Some(4010));
    assert_eq!(ErrorCode::DRAINING.close_code(), Some(4017));
    assert_eq!(ErrorCode::DRAINING.name(), Some("draining"));
    assert_eq!(ErrorCode(1000).close_code(), None);
    assert_eq!(ErrorCode::from_close_code(1000), None);
    assert_eq!(ErrorCode(77).name(), None);
    assert_eq!(ErrorCode(77).to_string(), "77 (unknown)");
    assert_eq!(ErrorCode::TOO_LARGE.to_string(), "8 (too_large)");
    assert_eq!(DecodeError::Truncated.error_code(), ErrorCode::MALFORMED);
    assert_eq!(
        DecodeError::UnsupportedVersion { found: 9 }.error_code(),
        ErrorCode::UNSUPPORTED_VERSION
    );
    assert_eq!(
        DecodeError::TooLong {
            field: Field::Payload
        }
        .error_code(),
        ErrorCode::TOO_LARGE
    );
    assert_eq!(
        DecodeError::UnknownMessage.to_string(),
        "unknown message kind"
    );
    assert_eq!(
        EncodeError::TooLong {
            field: Field::Channel
        }
        .to_string(),
        "channel is longer than its maximum"
    );
}

#[test]
fn reconnect_hints_are_read_from_the_close_reason() {
    use tether_proto::{MAX_RECONNECT_HINT_MS, reconnect_hint_ms};
    assert_eq!(reconnect_hint_ms("250 draining"), Some(250));
    assert_eq!(reconnect_hint_ms("0"), Some(0));
    assert_eq!(reconnect_hint_ms("1200"), Some(1200));
    assert_eq!(reconnect_hint_ms("draining"), None);
    assert_eq!(reconnect_hint_ms(""), None);
    assert_eq!(reconnect_hint_ms(" 250"), None);
    assert_eq!(
        reconnect_hint_ms("99999999999999999999999 draining"),
        Some(MAX_RECONNECT_HINT_MS)
    );
}

proptest::proptest! {
    /// Any reason: no panic, never above the cap; a number that leads the
    /// reason is read exactly when it is within the cap.
    #[test]
    fn any_close_reason_gives_a_bounded_hint(reason in ".{0,40}", number in 0u64..200_000) {
        use tether_proto::{MAX_RECONNECT_HINT_MS, reconnect_hint_ms};
        if let Some(ms) = reconnect_hint_ms(&reason) {
            proptest::prop_assert!(ms <= MAX_RECONNECT_HINT_MS);
        }
        let led = format!("{number} {reason}");
        let expected = u32::try_from(number.min(u64::from(MAX_RECONNECT_HINT_MS))).unwrap_or(0);
        proptest::prop_assert_eq!(reconnect_hint_ms(&led), Some(expected));
    }
}
/// The `Hello` extension field: only a minimal varint of at least
/// `MIN_DOWNLINK_LEN`, and nothing after it; no other message has one.
#[test]
fn hello_extension_errors() {
    // hello "d", firmware "1", boot 1, last acked 0: the first version.
    let base: &[u8] = &[0x01, 0x00, 0x01, b'd', 0x01, b'1', 0x01, 0x00];
    let with = |tail: &[u8]| [base, tail].concat();
    let bytes = with(&[0xf2, 0x07]);
    let decoded = DeviceToServer::decode(&bytes);
    assert!(
        matches!(
            decoded,
            Ok(DeviceToServer::Hello(Hello {
                max_downlink_len: Some(1010),
                ..
            }))
        ),
        "{decoded:?}"
    );
    assert_eq!(
        DeviceToServer::decode(&with(&[0x3f])),
        Err(DecodeError::InvalidField {
            field: Field::MaxDownlinkLen
        })
    );
    assert_eq!(
        DeviceToServer::decode(&with(&[0xf2])),
        Err(DecodeError::Truncated)
    );
    assert_eq!(
        DeviceToServer::decode(&with(&[0xf2, 0x87, 0x00])),
        Err(DecodeError::Malformed)
    );
    assert_eq!(
        DeviceToServer::decode(&with(&[0xf2, 0x07, 0x00])),
        Err(DecodeError::TrailingBytes)
    );
    assert_eq!(
        DeviceToServer::decode(&with(&[0xff, 0xff, 0xff, 0xff, 0xff])),
        Err(DecodeError::Malformed)
    );
    // Other messages have no extension: a byte after them is trailing.
    assert_eq!(
        ServerToDevice::decode(&[0x01, 0x01, 0x2a, 0x40]),
        Err(DecodeError::TrailingBytes)
    );
    assert_eq!(
        DeviceToServer::decode(&[0x01, 0x02, 0x03, 0x00, 0x01, b'1', 0x40]),
        Err(DecodeError::TrailingBytes)
    );
}
