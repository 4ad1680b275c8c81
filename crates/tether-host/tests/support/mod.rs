//! A scripted relay peer for client tests: the server side of the device
//! protocol on tokio-tungstenite (an independent WebSocket implementation),
//! with a store that de-duplicates on (boot id, seq) the way the reference
//! server does, and per-connection misbehaviour on demand.
#![allow(dead_code, unreachable_pub)]

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use std::sync::Mutex;

use futures_util::{SinkExt, StreamExt};
use tether_proto::{Ack, Command, CommandStatus, DeviceToServer, Payload, ServerToDevice, Welcome};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// How the peer treats one connection.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// Never acknowledge publishes.
    pub never_ack: bool,
    /// `Welcome.max_in_flight` (0: 16).
    pub max_in_flight: u16,
    /// Store this many publishes, then drop the TCP connection without acking.
    pub drop_after_publishes: Option<usize>,
    /// Right after `Welcome`, close with this code.
    pub close_with: Option<u16>,
    /// Right after `Welcome`, send a binary message that is not a protocol message.
    pub send_garbage: bool,
    /// After `Welcome`, stop reading (so pings go unanswered).
    pub stop_reading: bool,
    /// After `Welcome`, send this command.
    pub command: Option<(u32, &'static str, &'static str)>,
    /// This long after `Welcome`, send a WebSocket ping with this payload.
    pub ping_after: Option<(core::time::Duration, &'static [u8])>,
}

/// What one boot of the device got stored.
#[derive(Debug, Default, Clone)]
pub struct Boot {
    pub stored_through: u32,
    /// `(seq, channel, payload JSON)` in arrival order.
    pub records: Vec<(u32, String, String)>,
    /// `Publish.time_ms` of each record.
    pub times: Vec<Option<u64>>,
}

/// The relay's clock reads this Unix time (ms) when the test starts, and
/// runs on tokio's (virtual) time from there.
pub const UNIX_AT_START: u64 = 1_764_000_000_000;

/// Everything the peer saw, across connections.
#[derive(Debug, Default)]
pub struct Relay {
    pub boots: BTreeMap<u64, Boot>,
    pub hellos: Vec<(String, u64, u32)>,
    pub deliveries: usize,
    pub duplicates: usize,
    pub connections: usize,
    pub command_acks: Vec<(u32, CommandStatus, String)>,
    pub behaviours: VecDeque<Behaviour>,
    /// Gaps: a publish whose seq skipped past the next expected one.
    pub gaps: usize,
    /// Payloads of the WebSocket pongs received.
    pub pongs: Vec<Vec<u8>>,
    /// When the test started.
    pub started: Option<tokio::time::Instant>,
}

pub type Shared = Arc<Mutex<Relay>>;

impl Relay {
    pub fn shared(behaviours: impl IntoIterator<Item = Behaviour>) -> Shared {
        Arc::new(Mutex::new(Relay {
            behaviours: behaviours.into_iter().collect(),
            started: Some(tokio::time::Instant::now()),
            ..Relay::default()
        }))
    }
}

/// Serves one connection until it ends.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(stream: S, relay: Shared) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let behaviour = {
        let mut relay = relay.lock().unwrap();
        relay.connections += 1;
        relay.behaviours.pop_front().unwrap_or_default()
    };
    let mut boot_id = None;
    let mut published_here = 0usize;
    let mut ping_at = None;
    loop {
        let message = tokio::select! {
            message = ws.next() => message,
            () = async {
                match ping_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => core::future::pending().await,
                }
            } => {
                ping_at = None;
                if let Some((_, payload)) = behaviour.ping_after {
                    let _ = ws.send(Message::Ping(payload.to_vec().into())).await;
                }
                continue;
            }
        };
        let Some(Ok(message)) = message else {
            return;
        };
        if let Message::Pong(payload) = &message {
            relay.lock().unwrap().pongs.push(payload.to_vec());
        }
        let Message::Binary(bytes) = message else {
            continue;
        };
        let Ok(decoded) = DeviceToServer::decode(&bytes) else {
            let _ = ws
                .close(Some(CloseFrame {
                    code: CloseCode::from(4001),
                    reason: "malformed".into(),
                }))
                .await;
            return;
        };
        match decoded {
            DeviceToServer::Hello(hello) => {
                let (stored, now) = {
                    let mut relay = relay.lock().unwrap();
                    let elapsed = relay.started.map_or(0, |s| s.elapsed().as_millis() as u64);
                    relay.hellos.push((
                        hello.device_id.to_owned(),
                        hello.boot_id,
                        hello.last_acked_seq,
                    ));
                    let stored = relay.boots.entry(hello.boot_id).or_default().stored_through;
                    (stored, UNIX_AT_START + elapsed)
                };
                boot_id = Some(hello.boot_id);
                let welcome = ServerToDevice::Welcome(Welcome {
                    session_id: 1,
                    server_time_ms: now,
                    last_stored_seq: stored,
                    max_in_flight: if behaviour.max_in_flight == 0 {
                        16
                    } else {
                        behaviour.max_in_flight
                    },
                });
                send(&mut ws, &welcome).await;
                if let Some((after, _)) = behaviour.ping_after {
                    ping_at = Some(tokio::time::Instant::now() + after);
                }
                if let Some(code) = behaviour.close_with {
                    let _ = ws
                        .close(Some(CloseFrame {
                            code: CloseCode::from(code),
                            reason: "scripted".into(),
                        }))
                        .await;
                    // Drain until the client answers the close.
                    while let Some(Ok(_)) = ws.next().await {}
                    return;
                }
                if behaviour.send_garbage {
                    let _ = ws
                        .send(Message::Binary(vec![0xff, 0x00, 0x13].into()))
                        .await;
                }
                if let Some((id, channel, payload)) = behaviour.command {
                    let command = ServerToDevice::Command(Command {
                        id,
                        channel,
                        payload: Payload::from_json_str(payload),
                    });
                    send(&mut ws, &command).await;
                }
                if behaviour.stop_reading {
                    core::future::pending::<()>().await;
                }
            }
            DeviceToServer::Publish(publish) => {
                let Some(boot_id) = boot_id else { return };
                let ack = {
                    let mut relay = relay.lock().unwrap();
                    relay.deliveries += 1;
                    let boot = relay.boots.entry(boot_id).or_default();
                    if publish.seq <= boot.stored_through {
                        relay.duplicates += 1;
                    } else {
                        let gap = publish.seq != boot.stored_through + 1;
                        boot.stored_through = publish.seq;
                        boot.records.push((
                            publish.seq,
                            publish.channel.to_owned(),
                            publish.payload.as_str().unwrap_or_default().to_owned(),
                        ));
                        boot.times.push(publish.time_ms);
                        if gap {
                            relay.gaps += 1;
                        }
                    }
                    relay.boots[&boot_id].stored_through
                };
                published_here += 1;
                if behaviour.drop_after_publishes == Some(published_here) {
                    // Abrupt: no close frame, no ack.
                    return;
                }
                if !behaviour.never_ack {
                    send(&mut ws, &ServerToDevice::Ack(Ack { seq: ack })).await;
                }
            }
            DeviceToServer::CommandAck(ack) => {
                relay.lock().unwrap().command_acks.push((
                    ack.id,
                    ack.status,
                    ack.result.as_str().unwrap_or_default().to_owned(),
                ));
            }
            // Descriptions and status: this relay keeps only records and
            // acknowledgements (tether-server's tests cover the rest).
            DeviceToServer::DescribeChannel(_)
            | DeviceToServer::DescribeCommand(_)
            | DeviceToServer::Status(_) => {}
        }
    }
}

async fn send<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    message: &ServerToDevice<'_>,
) {
    let mut buf = [0u8; 512];
    let bytes = message.encode(&mut buf).unwrap();
    let _ = ws.send(Message::Binary(bytes.to_vec().into())).await;
}
