//! The DNS responder task: one UDP socket, one datagram at a time.

use tether_core::provisioning::dns;
use tokio::net::UdpSocket;

/// Largest DNS message over UDP with EDNS (RFC 6891 suggests 4096).
const DATAGRAM_LEN: usize = 4096;

pub(super) async fn serve(socket: UdpSocket, answer: [u8; 4]) {
    let mut query = vec![0u8; DATAGRAM_LEN];
    let mut reply = vec![0u8; 512];
    loop {
        let (n, peer) = match socket.recv_from(&mut query).await {
            Ok(received) => received,
            Err(e) => {
                log::warn!("dns: receive failed: {e}");
                continue;
            }
        };
        let Some(datagram) = query.get(..n) else {
            continue;
        };
        match dns::respond(datagram, answer, 60, &mut reply) {
            Ok(r) => {
                let Some(bytes) = reply.get(..r.len) else {
                    continue;
                };
                if let Err(e) = socket.send_to(bytes, peer).await {
                    log::warn!("dns: send to {peer} failed: {e}");
                }
            }
            Err(e) => log::debug!("dns: dropped datagram from {peer}: {e}"),
        }
    }
}
