//! The portal's HTTP worker: accepts one connection on port 80, reads one
//! request (bounded by the portal's limits and a read timeout), answers it
//! with tether-core's `Portal`, closes gracefully, and accepts the next.

use embassy_net::tcp::TcpSocket;
use embassy_time::{Duration, with_timeout};
use tether_core::provisioning::http::{self, HttpError, Status};
use tether_core::provisioning::store::ConfigStore;

use super::CaptivePortal;
use crate::tcp::close_socket;

/// Socket buffer size of a worker, each way.
pub const SOCKET_LEN: usize = 1536;
/// Response buffer: the largest page is under 10 KB.
pub const RESPONSE_LEN: usize = 12 * 1024;
/// Request buffer: tether-core's default limits (2 KiB head, 1 KiB body).
const REQUEST_LEN: usize = 3 * 1024;
/// A client that sends nothing for this long is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub(super) struct WorkerBuffers {
    rx: [u8; SOCKET_LEN],
    tx: [u8; SOCKET_LEN],
    request: [u8; REQUEST_LEN],
    response: [u8; RESPONSE_LEN],
}

impl WorkerBuffers {
    pub(super) const fn new() -> Self {
        Self {
            rx: [0; SOCKET_LEN],
            tx: [0; SOCKET_LEN],
            request: [0; REQUEST_LEN],
            response: [0; RESPONSE_LEN],
        }
    }
}

enum Outcome {
    Request(usize),
    Refused(HttpError),
    Closed,
}

pub(super) async fn serve<S: ConfigStore>(
    portal: &CaptivePortal<'_, S>,
    buffers: &mut WorkerBuffers,
) -> ! {
    let WorkerBuffers {
        rx,
        tx,
        request,
        response,
    } = buffers;
    loop {
        let mut socket = TcpSocket::new(portal.stack, rx, tx);
        socket.set_timeout(Some(READ_TIMEOUT));
        if socket.accept(80).await.is_err() {
            continue;
        }
        let limits = portal.limits;
        let buffer = request
            .get_mut(..limits.buffer_len().min(REQUEST_LEN))
            .unwrap_or(&mut []);
        let mut filled = 0usize;
        let outcome = loop {
            match http::parse_request(buffer.get(..filled).unwrap_or(&[]), &limits) {
                Ok(Status::Complete(parsed)) => break Outcome::Request(parsed.len),
                Err(e) => break Outcome::Refused(e),
                Ok(Status::Partial) => {}
            }
            let Some(space) = buffer.get_mut(filled..).filter(|s| !s.is_empty()) else {
                break Outcome::Refused(HttpError::HeadersTooLarge);
            };
            match with_timeout(READ_TIMEOUT, socket.read(space)).await {
                Ok(Ok(n)) if n > 0 => filled += n,
                _ => break Outcome::Closed,
            }
        };
        let handled = match outcome {
            Outcome::Closed => None,
            Outcome::Refused(error) => portal.portal.reject(error, response).ok(),
            Outcome::Request(len) => {
                match http::parse_request(buffer.get(..len).unwrap_or(&[]), &limits) {
                    Ok(Status::Complete(parsed)) => portal.answer(&parsed, response).ok(),
                    _ => portal.portal.reject(HttpError::BadRequest, response).ok(),
                }
            }
        };
        if let Some(handled) = handled {
            debug!("portal: answered {}", handled.status);
            let bytes = response.get(..handled.len).unwrap_or(&[]);
            let _ = embedded_io_async::Write::write_all(&mut socket, bytes).await;
        }
        close_socket(&mut socket, Duration::from_secs(1)).await;
    }
}
