//! The receiver protocol: what browsers and programs and the server say to
//! each other (text frames, JSON).

use serde::{Deserialize, Serialize};

use crate::describe::Description;
use crate::device::{CommandStatus, validate_payload};
use crate::error::{ErrorCode, Field, FieldError};
use crate::limits::{MAX_MESSAGE_LEN, validate_channel, validate_device_id, validate_text};
use crate::payload::Payload;

/// Receiver → server: deliver a channel's events, optionally replaying
/// stored ones first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Subscribe<'a> {
    /// The channel.
    pub channel: &'a str,
    /// `None` (JSON `null` or absent): only events stored from now on.
    /// `Some(n)`: every stored event with `offset >= n` first (clamped to the
    /// oldest one kept), then live ones. To resume after the last event seen,
    /// send its offset + 1; `Some(0)` replays everything kept.
    pub from: Option<u64>,
    /// Extension field: chosen by the receiver, echoed in the `Subscribed`
    /// or `Error` that answers this request.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::extension"
    )]
    pub request_id: Option<u32>,
}

/// Receiver → server: stop delivering a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Unsubscribe<'a> {
    /// The channel.
    pub channel: &'a str,
}

/// Receiver → server: send a command to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SendCommand<'a> {
    /// Chosen by the receiver; echoed in the `CommandResult` or `Error` that
    /// answers this request.
    pub request_id: u32,
    /// The device's id.
    pub device: &'a str,
    /// The command's channel.
    pub channel: &'a str,
    /// Arguments, as JSON.
    #[serde(borrow)]
    pub payload: Payload<'a>,
}

/// Receiver → server: are you there? The server answers [`Pong`] at once.
///
/// Devices use WebSocket ping frames; receivers need this because the
/// browser WebSocket API can neither send pings nor see them, so a browser
/// cannot otherwise notice a half-open connection (after sleep, a network
/// change) until TCP gives up minutes later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Ping {
    /// Any number; echoed in `Pong.id`.
    pub id: u32,
}

/// Server → receiver: the answer to [`Ping`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Pong {
    /// `Ping.id`.
    pub id: u32,
}

/// Server → receiver: the answer to `Subscribe`; events follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Subscribed<'a> {
    /// The channel.
    pub channel: &'a str,
    /// Offset of the oldest event still stored (equal to `next_offset` if
    /// none is). A `from` below it means events were lost to retention.
    pub first_offset: u64,
    /// The offset the next new event on the channel will get.
    pub next_offset: u64,
    /// Extension field: `Subscribe.request_id`, if it had one.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::extension"
    )]
    pub request_id: Option<u32>,
}

/// Server → receiver: one record a device published, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Event<'a> {
    /// The channel.
    pub channel: &'a str,
    /// Assigned by the server: 1, 2, 3, … per channel, in storage order;
    /// never reused.
    pub offset: u64,
    /// The publishing device's id.
    pub device: &'a str,
    /// `Publish.time_ms`: the device's clock, if it had one (unix ms).
    pub device_time_ms: Option<u64>,
    /// When the server stored the record (unix ms).
    pub server_time_ms: u64,
    /// The record, as JSON.
    #[serde(borrow)]
    pub payload: Payload<'a>,
}

/// Server → receiver: a device answered a `SendCommand`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct CommandResult<'a> {
    /// `SendCommand.request_id`.
    pub request_id: u32,
    /// `CommandAck.status`.
    pub status: CommandStatus,
    /// `CommandAck.result`.
    #[serde(borrow)]
    pub result: Payload<'a>,
}

/// Server → receiver: a request failed, or the server is about to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ErrorMessage<'a> {
    /// What went wrong.
    pub code: ErrorCode,
    /// The `request_id` of the `SendCommand` or `Subscribe` this answers, if
    /// it answers one that had one.
    pub request_id: Option<u32>,
    /// For humans: 0 to [`MAX_MESSAGE_LEN`](crate::MAX_MESSAGE_LEN) bytes of
    /// printable ASCII except `"` and `\`.
    pub message: &'a str,
    /// Extension field: the channel of the `Subscribe` this refuses (or of
    /// a subscription that failed later).
    #[serde(
        borrow,
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::extension"
    )]
    pub channel: Option<&'a str>,
}

/// Every message a receiver sends (a text frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[serde(rename_all = "snake_case")]
pub enum ReceiverToServer<'a> {
    /// Discriminant 0.
    #[serde(borrow)]
    Subscribe(Subscribe<'a>),
    /// Discriminant 1.
    #[serde(borrow)]
    Unsubscribe(Unsubscribe<'a>),
    /// Discriminant 2.
    #[serde(borrow)]
    SendCommand(SendCommand<'a>),
    /// Discriminant 3.
    Ping(Ping),
}

/// Every message the server sends a receiver (a text frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[serde(rename_all = "snake_case")]
pub enum ServerToReceiver<'a> {
    /// Discriminant 0.
    #[serde(borrow)]
    Subscribed(Subscribed<'a>),
    /// Discriminant 1.
    #[serde(borrow)]
    Event(Event<'a>),
    /// Discriminant 2.
    #[serde(borrow)]
    CommandResult(CommandResult<'a>),
    /// Discriminant 3.
    #[serde(borrow)]
    Error(ErrorMessage<'a>),
    /// Discriminant 4.
    Pong(Pong),
    /// Discriminant 5 (an addition, `docs/protocol.md` section 8): only to
    /// receivers that asked, see [`Description`].
    #[serde(borrow)]
    Description(Description<'a>),
}

impl ReceiverToServer<'_> {
    /// Checks every field against its documented bounds.
    pub fn validate(&self) -> Result<(), FieldError> {
        match self {
            ReceiverToServer::Subscribe(Subscribe { channel, .. })
            | ReceiverToServer::Unsubscribe(Unsubscribe { channel }) => validate_channel(channel),
            ReceiverToServer::SendCommand(command) => {
                validate_device_id(command.device)?;
                validate_channel(command.channel)?;
                validate_payload(&command.payload)
            }
            ReceiverToServer::Ping(_) => Ok(()),
        }
    }
}

impl ServerToReceiver<'_> {
    /// Checks every field against its documented bounds.
    pub fn validate(&self) -> Result<(), FieldError> {
        match self {
            ServerToReceiver::Subscribed(subscribed) => validate_channel(subscribed.channel),
            ServerToReceiver::Event(event) => {
                validate_channel(event.channel)?;
                validate_device_id(event.device)?;
                validate_payload(&event.payload)
            }
            ServerToReceiver::CommandResult(result) => validate_payload(&result.result),
            ServerToReceiver::Error(error) => {
                validate_text(error.message, MAX_MESSAGE_LEN, false, Field::Message)?;
                error.channel.map_or(Ok(()), validate_channel)
            }
            ServerToReceiver::Pong(_) => Ok(()),
            ServerToReceiver::Description(description) => description.validate(),
        }
    }
}

/// Reads the extension fields after a binary message's first-version
/// fields: `Subscribe.request_id`.
pub(crate) fn decode_receiver_extension<'a>(
    message: &mut ReceiverToServer<'a>,
    rest: &'a [u8],
) -> Result<(), crate::DecodeError> {
    match message {
        ReceiverToServer::Subscribe(subscribe) => {
            crate::extension::read(rest, &mut subscribe.request_id)
        }
        _ => crate::extension::none(rest),
    }
}

/// Reads the extension fields after a binary message's first-version
/// fields: `Subscribed.request_id`, `Error.channel`.
pub(crate) fn decode_server_extension<'a>(
    message: &mut ServerToReceiver<'a>,
    rest: &'a [u8],
) -> Result<(), crate::DecodeError> {
    match message {
        ServerToReceiver::Subscribed(subscribed) => {
            crate::extension::read(rest, &mut subscribed.request_id)
        }
        ServerToReceiver::Error(error) => crate::extension::read(rest, &mut error.channel),
        _ => crate::extension::none(rest),
    }
}
