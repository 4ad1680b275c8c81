//! The portal's DNS responder over an embassy-net UDP socket: every `A`
//! query is answered with the access point's address (tether-core
//! `dns::respond`), so the phone's connectivity probe lands on the portal.

use core::net::Ipv4Addr;

use embassy_net::Stack;
use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_time::{Duration, Timer};
use tether_core::provisioning::dns;

/// Answers' time to live: short, so phones forget them after the portal.
const TTL_SECONDS: u32 = 10;

#[derive(Debug)]
pub(super) struct DnsBuffers {
    rx_meta: [PacketMetadata; 4],
    tx_meta: [PacketMetadata; 4],
    rx: [u8; 1024],
    tx: [u8; 1024],
    query: [u8; 512],
    reply: [u8; 512],
}

impl DnsBuffers {
    pub(super) const fn new() -> Self {
        Self {
            rx_meta: [PacketMetadata::EMPTY; 4],
            tx_meta: [PacketMetadata::EMPTY; 4],
            rx: [0; 1024],
            tx: [0; 1024],
            query: [0; 512],
            reply: [0; 512],
        }
    }
}

pub(super) async fn serve(stack: Stack<'_>, address: Ipv4Addr, buffers: &mut DnsBuffers) -> ! {
    let DnsBuffers {
        rx_meta,
        tx_meta,
        rx,
        tx,
        query,
        reply,
    } = buffers;
    let mut socket = UdpSocket::new(stack, rx_meta, rx, tx_meta, tx);
    while socket.bind(53).is_err() {
        warn!("portal: DNS port busy");
        Timer::after(Duration::from_secs(1)).await;
    }
    loop {
        let Ok((n, from)) = socket.recv_from(query).await else {
            continue; // truncated datagram: dropped
        };
        let Some(datagram) = query.get(..n) else {
            continue;
        };
        match dns::respond(datagram, address.octets(), TTL_SECONDS, reply) {
            Ok(answer) => {
                if let Some(bytes) = reply.get(..answer.len) {
                    let _ = socket.send_to(bytes, from.endpoint).await;
                }
            }
            Err(e) => debug!("portal: DNS query dropped: {:?}", e),
        }
    }
}
