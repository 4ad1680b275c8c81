//! The portal's DHCP server: edge-dhcp's sans-IO server over an embassy-net
//! UDP socket on port 67. Leases from `.50` to `.200` of the access
//! point's /24, with the access point as router and DNS server, so the
//! phone sends every lookup to the portal's DNS responder.

use core::net::Ipv4Addr;

use edge_dhcp::server::{Server, ServerOptions};
use edge_dhcp::{Options, Packet};
use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::{IpAddress, IpEndpoint, Stack};
use embassy_time::{Duration, Timer};

const SERVER_PORT: u16 = 67;
const CLIENT_PORT: u16 = 68;
/// Phones served at once (leases kept).
const LEASES: usize = 8;
/// Lease time: short, a phone stays only for the set-up.
const LEASE_SECONDS: u32 = 600;

#[derive(Debug)]
pub(super) struct DhcpBuffers {
    rx_meta: [PacketMetadata; 4],
    tx_meta: [PacketMetadata; 4],
    rx: [u8; 1200],
    tx: [u8; 1200],
    packet: [u8; 600],
}

impl DhcpBuffers {
    pub(super) const fn new() -> Self {
        Self {
            rx_meta: [PacketMetadata::EMPTY; 4],
            tx_meta: [PacketMetadata::EMPTY; 4],
            rx: [0; 1200],
            tx: [0; 1200],
            packet: [0; 600],
        }
    }
}

pub(super) async fn serve(stack: Stack<'_>, address: Ipv4Addr, buffers: &mut DhcpBuffers) -> ! {
    let DhcpBuffers {
        rx_meta,
        tx_meta,
        rx,
        tx,
        packet,
    } = buffers;
    let mut socket = UdpSocket::new(stack, rx_meta, rx, tx_meta, tx);
    while socket.bind(SERVER_PORT).is_err() {
        warn!("portal: DHCP port busy");
        Timer::after(Duration::from_secs(1)).await;
    }
    let mut router = [address; 1];
    let dns = [address];
    let mut options = ServerOptions::new(address, Some(&mut router));
    options.dns = &dns;
    options.lease_duration_secs = LEASE_SECONDS;
    let mut server: Server<_, LEASES> =
        Server::new(|| embassy_time::Instant::now().as_secs(), address);
    loop {
        let Ok((n, _from)) = socket.recv_from(packet).await else {
            continue;
        };
        let Some(datagram) = packet.get(..n) else {
            continue;
        };
        let request = match Packet::decode(datagram) {
            Ok(request) => request,
            Err(e) => {
                debug!("portal: DHCP packet dropped: {:?}", e);
                continue;
            }
        };
        // RFC 2131 4.1: a relay gets it on 67; a client with an address
        // that did not ask for broadcast gets it unicast; else broadcast.
        let (to, port) = if !request.giaddr.is_unspecified() {
            (request.giaddr, SERVER_PORT)
        } else if !request.ciaddr.is_unspecified() && !request.broadcast {
            (request.ciaddr, CLIENT_PORT)
        } else {
            (Ipv4Addr::BROADCAST, CLIENT_PORT)
        };
        let mut reply_buffer = [0u8; 600];
        let mut option_buffer = Options::buf();
        let Some(reply) = server.handle_request(&mut option_buffer, &options, &request) else {
            continue;
        };
        match reply.encode(&mut reply_buffer) {
            Ok(bytes) => {
                debug!("portal: DHCP reply to {}", to);
                let _ = socket
                    .send_to(bytes, IpEndpoint::new(IpAddress::Ipv4(to), port))
                    .await;
            }
            Err(e) => warn!("portal: DHCP reply not encoded: {:?}", e),
        }
    }
}
