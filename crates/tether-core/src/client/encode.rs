//! Protocol messages in and out of the runner's message buffer, and the
//! mapping of WebSocket errors to [`LinkError`]s.

use tether_proto::{CommandAck, DeviceToServer, Hello, Payload, Publish, Status};

use super::ClientConfig;
use crate::outbox::Entry;
use crate::session::{LinkError, Transmit};
use crate::ws;

/// What the runner sends for one transmission.
pub(super) enum Outgoing {
    /// A protocol message of this length in the message buffer.
    Binary(usize),
    /// A WebSocket ping with this nonce.
    Ping(u32),
    /// A WebSocket pong with this many payload bytes in the message buffer.
    Pong(usize),
}

/// Encodes one transmission other than a `Publish` into `out`; `None` if it
/// does not fit (the buffers are checked against the limits, so it always
/// fits). `max_downlink` goes in `Hello` (what the receive buffer holds).
pub(super) fn control(
    transmit: Transmit<'_>,
    config: &ClientConfig<'_>,
    max_downlink: u32,
    out: &mut [u8],
) -> Option<Outgoing> {
    let message = match transmit {
        Transmit::Hello {
            boot_id,
            last_acked_seq,
        } => DeviceToServer::Hello(Hello {
            device_id: config.device_id,
            firmware_version: config.firmware_version,
            boot_id,
            last_acked_seq,
            max_downlink_len: Some(max_downlink),
        }),
        Transmit::CommandAck { id, status, result } => DeviceToServer::CommandAck(CommandAck {
            id,
            status,
            result: if result.is_empty() {
                Payload::NULL
            } else {
                Payload(result)
            },
        }),
        Transmit::Announce { index } => announcement(config, index)?,
        Transmit::Status { rssi_dbm } => DeviceToServer::Status(Status {
            rssi_dbm: Some(rssi_dbm),
        }),
        Transmit::Ping { nonce } => return Some(Outgoing::Ping(nonce)),
        Transmit::Pong(payload) => {
            out.get_mut(..payload.len())?.copy_from_slice(payload);
            return Some(Outgoing::Pong(payload.len()));
        }
        // Read from the outbox by the runner, then `publish`.
        Transmit::Publish { .. } => return None,
    };
    binary(&message, out)
}

/// Announcement `index`: the channel descriptions, then the command
/// descriptions, in the order the configuration lists them.
pub(super) fn announcement<'a>(
    config: &ClientConfig<'a>,
    index: u16,
) -> Option<DeviceToServer<'a>> {
    let index = usize::from(index);
    match config.descriptions.get(index) {
        Some(description) => Some(DeviceToServer::DescribeChannel(*description)),
        None => index
            .checked_sub(config.descriptions.len())
            .and_then(|index| config.commands.get(index))
            .map(|command| DeviceToServer::DescribeCommand(*command)),
    }
}

/// Encodes a stored message as a `Publish` with its send-time stamp
/// `time_ms`; `None` if it does not fit `out` (an entry stored by a
/// firmware with a larger payload capacity).
pub(super) fn publish(entry: &Entry<'_>, time_ms: Option<u64>, out: &mut [u8]) -> Option<Outgoing> {
    let message = DeviceToServer::Publish(Publish {
        seq: entry.seq,
        channel: entry.channel,
        time_ms,
        payload: Payload(entry.payload),
    });
    binary(&message, out)
}

fn binary(message: &DeviceToServer<'_>, out: &mut [u8]) -> Option<Outgoing> {
    message
        .encode(out)
        .ok()
        .map(|bytes| Outgoing::Binary(bytes.len()))
}

/// Why a link failed, from the WebSocket error that failed it.
pub(super) fn link_error(error: ws::Error) -> LinkError {
    match error {
        ws::Error::Protocol(_) => LinkError::Protocol,
        ws::Error::Handshake(ws::HandshakeError::Status(status)) => LinkError::Refused { status },
        ws::Error::Handshake(_) => LinkError::HandshakeFailed,
        ws::Error::TransportClosed | ws::Error::Closed => LinkError::EndOfStream,
        _ => LinkError::Io,
    }
}
