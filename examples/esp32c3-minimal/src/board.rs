//! The tether-core `Board` of this firmware: a connector over embassy-net,
//! a clock over embassy-time, the hardware RNG and a RAM outbox.
//! (`tether-esp32` will provide a complete one, with TLS and a flash
//! outbox.)

use core::net::Ipv4Addr;

use embassy_net::dns::DnsQueryType;
use embassy_net::tcp::{ConnectError, TcpSocket};
use embassy_net::{IpAddress, Stack};
use esp_hal::rng::Rng;
use tether_core::board::{Board, Parts};
use tether_core::connector::{Connector, Endpoint, Security};
use tether_core::outbox::RamOutbox;
use tether_core::time::{Clock, Instant};

/// Everything the tether client needs from this board.
pub struct EspBoard {
    connector: EmbassyConnector,
}

impl EspBoard {
    pub fn new(
        stack: Stack<'static>,
        rx: &'static mut [u8; SOCKET_BUFFER],
        tx: &'static mut [u8; SOCKET_BUFFER],
    ) -> Self {
        Self {
            connector: EmbassyConnector::new(stack, rx, tx),
        }
    }
}

impl Board for EspBoard {
    type Connector = EmbassyConnector;
    type Clock = EmbassyClock;
    type Rng = Rng;
    type Outbox = RamOutbox<4096>;

    fn into_parts(self) -> Parts<EmbassyConnector, EmbassyClock, Rng, RamOutbox<4096>> {
        Parts {
            connector: self.connector,
            clock: EmbassyClock,
            rng: Rng::new(),
            outbox: RamOutbox::new(),
        }
    }
}

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

    /// TCP close (FIN), then an abort (RST) if the peer does not finish
    /// within a second.
    async fn close(mut socket: Self::Connection<'_>) {
        use embassy_futures::select::select;
        socket.close();
        let flushed = select(
            socket.flush(),
            embassy_time::Timer::after(embassy_time::Duration::from_secs(1)),
        )
        .await;
        if !matches!(flushed, embassy_futures::select::Either::First(Ok(()))) {
            socket.abort();
            let _ = select(
                socket.flush(),
                embassy_time::Timer::after(embassy_time::Duration::from_millis(100)),
            )
            .await;
        }
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
