//! The device protocol: what a device and the server say to each other
//! (binary frames, postcard).

use serde::{Deserialize, Serialize};

use crate::describe::{DescribeChannel, DescribeCommand, Status};
use crate::error::{Field, FieldError};
use crate::limits::{
    MAX_PAYLOAD_LEN, validate_channel, validate_device_id, validate_firmware_version,
};
use crate::payload::Payload;

/// Device → server: the first message on every connection.
///
/// `max_downlink_len` is an *extension field* (`docs/protocol.md` section 8):
/// in the binary encoding a bare varint after `last_acked_seq`, in JSON a
/// member; when absent (every device older than the field) the message is
/// exactly the first version's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Hello<'a> {
    /// The device's id (see [`validate_device_id`](crate::validate_device_id)).
    pub device_id: &'a str,
    /// Free text, e.g. `"1.4.2"`: 1 to
    /// [`MAX_FIRMWARE_VERSION_LEN`](crate::MAX_FIRMWARE_VERSION_LEN) bytes of
    /// printable ASCII except `"` and `\`.
    pub firmware_version: &'a str,
    /// A random number the device draws at every boot (no flash needed). With
    /// the device id it names the sequence space of `Publish.seq`.
    pub boot_id: u64,
    /// The highest `seq` the device has seen acknowledged in this boot (0 if
    /// none). Informational: the server's answer is `Welcome.last_stored_seq`.
    pub last_acked_seq: u32,
    /// The largest message, in bytes of the session's encoding, the device
    /// can receive (what its receive buffer holds): the server never sends
    /// it a longer `Command`, and refuses such a command to its sender. At
    /// least [`MIN_DOWNLINK_LEN`]; `None` (a device older than the field)
    /// means [`DEFAULT_MAX_DOWNLINK_LEN`].
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::extension"
    )]
    pub max_downlink_len: Option<u32>,
}

/// The smallest `Hello.max_downlink_len`: every `Welcome` and `Ack` fits
/// (binary, at most 30 bytes), and a short command.
pub const MIN_DOWNLINK_LEN: u32 = 64;

/// The downlink limit of a device whose `Hello` has no `max_downlink_len`
/// (every device older than the field): what tether-core's default receive
/// buffer (1024 bytes) holds after the largest WebSocket frame header.
pub const DEFAULT_MAX_DOWNLINK_LEN: u32 = 1010;

impl Hello<'_> {
    /// `max_downlink_len`, or [`DEFAULT_MAX_DOWNLINK_LEN`] when the device
    /// did not say.
    pub fn downlink_limit(&self) -> u32 {
        self.max_downlink_len.unwrap_or(DEFAULT_MAX_DOWNLINK_LEN)
    }
}

/// Device → server: one record on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Publish<'a> {
    /// Sequence number: 1 for the first record after boot, then +1 per
    /// record, per `(device_id, boot_id)`. The server stores each
    /// `(device, boot_id, seq)` at most once.
    pub seq: u32,
    /// Channel name (see [`validate_channel`](crate::validate_channel)).
    pub channel: &'a str,
    /// When the device made the record (unix ms), or `None` if the device
    /// did not know the time then (e.g. before its first `Welcome`).
    pub time_ms: Option<u64>,
    /// The record, as JSON.
    #[serde(borrow)]
    pub payload: Payload<'a>,
}

/// What a device did with a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[serde(rename_all = "snake_case")]
pub enum CommandStatus {
    /// Done.
    Ok,
    /// Refused: the payload was not acceptable (e.g. would not parse).
    Rejected,
    /// Accepted but failed while carried out.
    Failed,
    /// The device has no handler for the command's channel.
    Unsupported,
}

/// Device → server: the answer to a [`Command`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct CommandAck<'a> {
    /// The `Command.id` answered.
    pub id: u32,
    /// What happened.
    pub status: CommandStatus,
    /// Result data, as JSON; [`Payload::NULL`] when there is none.
    #[serde(borrow)]
    pub result: Payload<'a>,
}

/// Server → device: the answer to `Hello`; the session is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Welcome {
    /// The server's id for this connection (for logs).
    pub session_id: u64,
    /// The server's clock (unix ms) when it sent `Welcome`.
    pub server_time_ms: u64,
    /// The server's contiguous stored watermark of this `(device_id,
    /// boot_id)`: every record the device sent in that boot with a `seq` up
    /// to it is stored (0 for a boot the server has not seen). Never below
    /// an `Ack` the server sent. The device drops queued records up to it
    /// and sends the rest.
    pub last_stored_seq: u32,
    /// How many `Publish` the device may have sent but not seen acknowledged
    /// at any time (at least 1).
    pub max_in_flight: u16,
}

/// Server → device: every `Publish` with `seq` up to this one (of the
/// current boot) that the device sent is stored durably. Cumulative: a
/// later `Ack` covers earlier ones. Never sent past a record whose write
/// failed (the server closes with
/// [`ErrorCode::WRITE_FAILED`](crate::ErrorCode::WRITE_FAILED) instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Ack {
    /// Everything the device sent up to this `seq` is stored.
    pub seq: u32,
}

/// Server → device: a command from a receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Command<'a> {
    /// Chosen by the server, unique within the connection; echoed in
    /// [`CommandAck`].
    pub id: u32,
    /// The command's channel (what to do).
    pub channel: &'a str,
    /// Arguments, as JSON.
    #[serde(borrow)]
    pub payload: Payload<'a>,
}

/// Every message a device sends (a binary frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[serde(rename_all = "snake_case")]
pub enum DeviceToServer<'a> {
    /// Discriminant 0.
    #[serde(borrow)]
    Hello(Hello<'a>),
    /// Discriminant 1.
    #[serde(borrow)]
    Publish(Publish<'a>),
    /// Discriminant 2.
    #[serde(borrow)]
    CommandAck(CommandAck<'a>),
    /// Discriminant 3 (an addition, `docs/protocol.md` section 8).
    #[serde(borrow)]
    DescribeChannel(DescribeChannel<'a>),
    /// Discriminant 4 (an addition).
    #[serde(borrow)]
    DescribeCommand(DescribeCommand<'a>),
    /// Discriminant 5 (an addition).
    Status(Status),
}

/// Every message the server sends a device (a binary frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[serde(rename_all = "snake_case")]
pub enum ServerToDevice<'a> {
    /// Discriminant 0.
    Welcome(Welcome),
    /// Discriminant 1.
    Ack(Ack),
    /// Discriminant 2.
    #[serde(borrow)]
    Command(Command<'a>),
}

pub(crate) fn validate_payload(payload: &Payload<'_>) -> Result<(), FieldError> {
    if payload.len() > MAX_PAYLOAD_LEN {
        Err(FieldError::TooLong(Field::Payload))
    } else {
        Ok(())
    }
}

/// Checks a `Hello` (the compact encoder calls this one alone, so a device
/// links no other message's checks).
pub(crate) fn validate_hello(hello: &Hello<'_>) -> Result<(), FieldError> {
    validate_device_id(hello.device_id)?;
    validate_firmware_version(hello.firmware_version)?;
    match hello.max_downlink_len {
        Some(len) if len < MIN_DOWNLINK_LEN => Err(FieldError::Invalid(Field::MaxDownlinkLen)),
        _ => Ok(()),
    }
}

/// Checks a `Publish`.
pub(crate) fn validate_publish(publish: &Publish<'_>) -> Result<(), FieldError> {
    if publish.seq == 0 {
        return Err(FieldError::Invalid(Field::Seq));
    }
    validate_channel(publish.channel)?;
    validate_payload(&publish.payload)
}

impl DeviceToServer<'_> {
    /// Checks every field against its documented bounds.
    pub fn validate(&self) -> Result<(), FieldError> {
        match self {
            DeviceToServer::Hello(hello) => validate_hello(hello),
            DeviceToServer::Publish(publish) => validate_publish(publish),
            DeviceToServer::CommandAck(ack) => validate_payload(&ack.result),
            DeviceToServer::DescribeChannel(describe) => describe.validate(),
            DeviceToServer::DescribeCommand(describe) => describe.validate(),
            DeviceToServer::Status(status) => status.validate(),
        }
    }
}

impl ServerToDevice<'_> {
    /// Checks every field against its documented bounds.
    pub fn validate(&self) -> Result<(), FieldError> {
        match self {
            ServerToDevice::Welcome(welcome) => {
                if welcome.max_in_flight == 0 {
                    Err(FieldError::Invalid(Field::MaxInFlight))
                } else {
                    Ok(())
                }
            }
            ServerToDevice::Ack(_) => Ok(()),
            ServerToDevice::Command(command) => {
                validate_channel(command.channel)?;
                validate_payload(&command.payload)
            }
        }
    }
}

/// Reads the extension fields after a binary message's first-version
/// fields: `Hello.max_downlink_len`.
pub(crate) fn decode_extension<'a>(
    message: &mut DeviceToServer<'a>,
    rest: &'a [u8],
) -> Result<(), crate::DecodeError> {
    match message {
        DeviceToServer::Hello(hello) => crate::extension::read(rest, &mut hello.max_downlink_len),
        _ => crate::extension::none(rest),
    }
}
