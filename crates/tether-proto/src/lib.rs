//! The typed messages that tether devices, relay servers and receivers speak.
//!
//! ```text
//!   device (no_std)              relay server (std)             receiver
//!  ┌───────────────┐  binary  ┌──────────────────────┐  text  ┌──────────┐
//!  │ DeviceToServer│─────────▶│ decode · store · fan │───────▶│ browser, │
//!  │ Hello Publish │ postcard │ out on channels      │  JSON  │ script   │
//!  │ CommandAck    │◀─────────│ ServerToDevice       │◀───────│ Receiver │
//!  └───────────────┘ Welcome  └──────────────────────┘ Event  │ ToServer │
//!                    Ack Command    ServerToReceiver          └──────────┘
//! ```
//!
//! Four message enums, one per direction: [`DeviceToServer`],
//! [`ServerToDevice`] (the device protocol, WebSocket binary frames) and
//! [`ReceiverToServer`], [`ServerToReceiver`] (the receiver protocol,
//! WebSocket text frames). Each has the same methods:
//!
//! - `encode(&self, &mut [u8]) -> Result<&[u8], EncodeError>` and
//!   `decode(&[u8]) -> Result<Self, DecodeError>`: the binary envelope, one
//!   version byte ([`PROTOCOL_VERSION`]) then the message in
//!   [postcard](https://postcard.jamesmunns.com/wire-format). No allocation;
//!   decoding borrows every string and payload from the input.
//! - `to_json(&self) -> Result<String, EncodeError>` and
//!   `from_json(&str) -> Result<Self, DecodeError>` (feature `std`): the JSON
//!   envelope `{"v":1,"<kind>":{…}}`.
//! - `validate(&self)`: every bound both encoders and decoders enforce
//!   (lengths in the `MAX_*` constants, the character sets of
//!   [`validate_channel`] and [`validate_device_id`]).
//!
//! The user's data travels as a [`Payload`]: JSON text, carried as bytes in
//! the binary encoding and embedded as a JSON value in the text encoding, so
//! a browser reads it without the server knowing its Rust type.
//! `docs/protocol.md` in the repository is the full wire specification.
//!
//! # Example: a device's side of a session
//!
//! ```
//! use tether_proto::{
//!     Ack, DeviceToServer, Hello, MAX_DEVICE_TO_SERVER_LEN, Payload, Publish, ServerToDevice,
//!     Welcome,
//! };
//!
//! let mut frame = [0u8; MAX_DEVICE_TO_SERVER_LEN];
//!
//! // 1. The first frame on a new connection.
//! let hello = DeviceToServer::Hello(Hello {
//!     device_id: "kitchen-1",
//!     firmware_version: "1.4.2",
//!     boot_id: 0x5eed_cafe_f00d_0001,
//!     last_acked_seq: 0,
//!     // What the receive buffer holds: the server sends nothing longer.
//!     max_downlink_len: Some(1010),
//! });
//! let bytes = hello.encode(&mut frame)?;
//! assert_eq!(bytes[0], tether_proto::PROTOCOL_VERSION);
//!
//! // 2. The server answers (here: the bytes it would send).
//! let mut server_buf = [0u8; 64];
//! let welcome = ServerToDevice::Welcome(Welcome {
//!     session_id: 7,
//!     server_time_ms: 1_764_094_000_000,
//!     last_stored_seq: 0,
//!     max_in_flight: 8,
//! });
//! let received = welcome.encode(&mut server_buf)?;
//! let ServerToDevice::Welcome(welcome) = ServerToDevice::decode(received)? else {
//!     unreachable!("the server sent Welcome");
//! };
//!
//! // 3. Publish records, numbered from 1 after `last_stored_seq`.
//! let publish = DeviceToServer::Publish(Publish {
//!     seq: welcome.last_stored_seq + 1,
//!     channel: "temp",
//!     time_ms: Some(welcome.server_time_ms),
//!     payload: Payload::from_json_str(r#"{"celsius":21.5}"#),
//! });
//! let bytes = publish.encode(&mut frame)?;
//! assert_eq!(bytes.len(), publish.encoded_len());
//!
//! // 4. The server acknowledges everything up to seq 1.
//! let ack = ServerToDevice::Ack(Ack { seq: 1 }).encode(&mut server_buf)?;
//! assert_eq!(ServerToDevice::decode(ack)?, ServerToDevice::Ack(Ack { seq: 1 }));
//! # Ok::<(), Box<dyn core::error::Error>>(())
//! ```
//!
//! # Features
//!
//! - `alloc`: `encode_to_vec` on every message.
//! - `std`: the JSON encoding (`to_json`, `from_json`), through
//!   `serde_json`.
//! - `defmt`: `defmt::Format` on every message and error.
#![no_std]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

#[cfg(feature = "alloc")]
extern crate alloc;

mod codec;
mod compact;
mod decimal;
mod describe;
mod device;
mod error;
mod extension;
mod json_check;
mod limits;
mod payload;
mod receiver;

pub use codec::PROTOCOL_VERSION;
pub use decimal::MAX_FRACTION_DIGITS;
pub use describe::{
    DescribeChannel, DescribeCommand, Description, FieldDescription, Fields, MAX_DECIMALS,
    MAX_EXAMPLE_LEN, MAX_FIELDS, MAX_FIELDS_LEN, MAX_KEY_LEN, MAX_LABEL_LEN, MAX_MAGNITUDE,
    MAX_UNIT_LEN, MIN_RSSI_DBM, MIN_SCALE, Status,
};
pub use device::{
    Ack, Command, CommandAck, CommandStatus, DEFAULT_MAX_DOWNLINK_LEN, DeviceToServer, Hello,
    MIN_DOWNLINK_LEN, Publish, ServerToDevice, Welcome,
};
pub use error::{
    DecodeError, EncodeError, ErrorCode, Field, FieldError, MAX_RECONNECT_HINT_MS,
    reconnect_hint_ms,
};
pub use json_check::{MAX_PAYLOAD_DEPTH, PayloadError};
pub use limits::{
    MAX_CHANNEL_LEN, MAX_DEVICE_ID_LEN, MAX_FIRMWARE_VERSION_LEN, MAX_MESSAGE_LEN, MAX_PAYLOAD_LEN,
    validate_channel, validate_device_id, validate_firmware_version,
};
pub use payload::Payload;
pub use receiver::{
    CommandResult, ErrorMessage, Event, Ping, Pong, ReceiverToServer, SendCommand,
    ServerToReceiver, Subscribe, Subscribed, Unsubscribe,
};

use limits::varint_len;

/// Bytes of a length-prefixed field of at most `max` bytes.
const fn prefixed(max: usize) -> usize {
    varint_len(max as u64) + max
}

const U16: usize = varint_len(u16::MAX as u64);
const U32: usize = varint_len(u32::MAX as u64);
const U64: usize = varint_len(u64::MAX);
const fn max(a: usize, b: usize) -> usize {
    if a > b { a } else { b }
}

/// The longest binary frame a device can send: a buffer this large encodes
/// every valid [`DeviceToServer`] (4181 bytes, the largest `Publish`).
pub const MAX_DEVICE_TO_SERVER_LEN: usize = 2 + max(
    // Publish: seq, channel, Some(time), payload.
    U32 + prefixed(MAX_CHANNEL_LEN) + 1 + U64 + prefixed(MAX_PAYLOAD_LEN),
    max(
        // Hello: device_id, firmware_version, boot_id, last_acked_seq,
        // max_downlink_len.
        prefixed(MAX_DEVICE_ID_LEN) + prefixed(MAX_FIRMWARE_VERSION_LEN) + U64 + U32 + U32,
        max(
            // CommandAck: id, status, result.
            U32 + 1 + prefixed(MAX_PAYLOAD_LEN),
            // DescribeChannel: channel, fields (DescribeCommand and Status
            // are shorter).
            prefixed(MAX_CHANNEL_LEN) + prefixed(MAX_FIELDS_LEN),
        ),
    ),
);

/// The longest binary frame a server sends a device: a buffer this large
/// holds every valid [`ServerToDevice`] (4170 bytes, the largest `Command`).
pub const MAX_SERVER_TO_DEVICE_LEN: usize = 2 + max(
    // Command: id, channel, payload.
    U32 + prefixed(MAX_CHANNEL_LEN) + prefixed(MAX_PAYLOAD_LEN),
    // Welcome: session_id, server_time_ms, last_stored_seq, max_in_flight.
    U64 + U64 + U32 + U16,
);
