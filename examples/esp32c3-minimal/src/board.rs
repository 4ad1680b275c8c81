//! The two traits tether-core needs from a board, implemented for
//! embassy-net and embassy-time.

use core::net::Ipv4Addr;

use embassy_net::dns::DnsQueryType;
use embassy_net::tcp::{ConnectError, TcpSocket};
use embassy_net::{IpAddress, Stack};
use tether_core::connector::{Connector, Endpoint, Security};
use tether_core::time::{Clock, Instant};

/// Socket buffer sizes: one WebSocket frame of a few hundred bytes fits
/// many times over.
pub const SOCKET_BUFFER: usize = 2048;

/// Opens TCP connections on an embassy-net stack. Owns the socket buffers
/// and lends them to one `TcpSocket<'_>` at a time: the connection type
/// borrows the connector, which is exactly what `Connector::Connection<'a>`
/// allows.
pub struct EmbassyConnector {
    stack: Stack<'static>,
    rx: &'static mut [u8; SOCKET_BUFFER],
    tx: &'static mut [u8; SOCKET_BUFFER],
}

impl EmbassyConnector {
    pub fn new(
        stack: Stack<'static>,
        rx: &'static mut [u8; SOCKET_BUFFER],
        tx: &'static mut [u8; SOCKET_BUFFER],
    ) -> Self {
        Self { stack, rx, tx }
    }
}

/// Why a connection could not be opened (printed in logs).
#[derive(Debug)]
#[allow(dead_code)] // The fields are read through `Debug`.
pub enum EmbassyConnectError {
    /// The DNS query failed.
    Dns(embassy_net::dns::Error),
    /// The name has no IPv4 address.
    NoAddress,
    /// The TCP connection failed.
    Tcp(ConnectError),
    /// This minimal firmware has no TLS stack (use `ws://` to a relay on
    /// the local network, or add embedded-tls in a connector of your own).
    TlsUnsupported,
}

impl Connector for EmbassyConnector {
    type Connection<'a> = TcpSocket<'a>;
    type Error = EmbassyConnectError;

    async fn connect(
        &mut self,
        endpoint: Endpoint<'_>,
    ) -> Result<TcpSocket<'_>, EmbassyConnectError> {
        if endpoint.security != Security::Plain {
            return Err(EmbassyConnectError::TlsUnsupported);
        }
        let address = match endpoint.host.parse::<Ipv4Addr>() {
            Ok(address) => IpAddress::Ipv4(address),
            Err(_) => *self
                .stack
                .dns_query(endpoint.host, DnsQueryType::A)
                .await
                .map_err(EmbassyConnectError::Dns)?
                .first()
                .ok_or(EmbassyConnectError::NoAddress)?,
        };
        let mut socket = TcpSocket::new(self.stack, &mut self.rx[..], &mut self.tx[..]);
        socket.set_timeout(Some(embassy_time::Duration::from_secs(30)));
        socket
            .connect((address, endpoint.port))
            .await
            .map_err(EmbassyConnectError::Tcp)?;
        Ok(socket)
    }
}

/// tether-core time from embassy-time.
pub struct EmbassyClock;

impl Clock for EmbassyClock {
    fn now(&self) -> Instant {
        Instant::from_millis(embassy_time::Instant::now().as_millis())
    }

    async fn sleep_until(&self, deadline: Instant) {
        embassy_time::Timer::at(embassy_time::Instant::from_millis(deadline.as_millis())).await;
    }
}
