//! Protocol messages in and out of the runner's message buffer, and the
//! mapping of WebSocket errors to [`LinkError`]s.

use tether_proto::{CommandAck, Hello, Payload, Publish, Status};

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
    let encoded = match transmit {
        Transmit::Hello {
            boot_id,
            last_acked_seq,
        } => Hello {
            device_id: config.device_id,
            firmware_version: config.firmware_version,
            boot_id,
            last_acked_seq,
            max_downlink_len: Some(max_downlink),
        }
        .encode(out),
        Transmit::CommandAck { id, status, result } => CommandAck {
            id,
            status,
            result: if result.is_empty() {
                Payload::NULL
            } else {
                Payload(result)
            },
        }
        .encode(out),
        Transmit::Announce { index } => (config.announcer?.encode)(config, index, out)?,
        Transmit::Status { rssi_dbm } => Status {
            rssi_dbm: Some(rssi_dbm),
        }
        .encode(out),
        Transmit::Ping { nonce } => return Some(Outgoing::Ping(nonce)),
        Transmit::Pong(payload) => {
            out.get_mut(..payload.len())?.copy_from_slice(payload);
            return Some(Outgoing::Pong(payload.len()));
        }
        // Read from the outbox by the runner, then `publish`.
        Transmit::Publish { .. } => return None,
    };
    binary(encoded)
}

/// Encodes announcement `index`: the channel descriptions, then the
/// command descriptions, in the order the configuration lists them; `None`
/// past the last.
pub(super) fn announcement<'b>(
    config: &ClientConfig<'_>,
    index: u16,
    out: &'b mut [u8],
) -> Option<Result<&'b [u8], tether_proto::EncodeError>> {
    let index = usize::from(index);
    match config.descriptions.get(index) {
        Some(description) => Some(description.encode(out)),
        None => index
            .checked_sub(config.descriptions.len())
            .and_then(|index| config.commands.get(index))
            .map(|command| command.encode(out)),
    }
}

/// Encodes a stored message as a `Publish` with its send-time stamp
/// `time_ms`; `None` if it does not fit `out` (an entry stored by a
/// firmware with a larger payload capacity).
pub(super) fn publish(entry: &Entry<'_>, time_ms: Option<u64>, out: &mut [u8]) -> Option<Outgoing> {
    let encoded = Publish {
        seq: entry.seq,
        channel: entry.channel,
        time_ms,
        payload: Payload(entry.payload),
    }
    .encode(out);
    binary(encoded)
}

/// The device messages are encoded by tether-proto's compact encoders
/// (`Hello::encode` and friends: the same bytes as
/// `DeviceToServer::encode`, without the serde machinery on the device).
fn binary(encoded: Result<&[u8], tether_proto::EncodeError>) -> Option<Outgoing> {
    encoded.ok().map(|bytes| Outgoing::Binary(bytes.len()))
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
