//! [`TcpConnector`]: the tether-core [`Connector`] over an embassy-net
//! stack: DNS, one `TcpSocket` on caller-owned buffers, and a graceful
//! close.
//!
//! ```text
//!  connect(Endpoint) ─► IPv4 literal? ─no─► stack.dns_query(host, A)
//!                            │                     │
//!                            └──────────┬──────────┘
//!                                       ▼
//!                  TcpSocket::new(stack, rx, tx).connect((address, port))
//!                                       ▼
//!                     TcpConnection<'_> (borrows rx/tx until dropped)
//!  close(): FIN (socket.close), wait for the peer's FIN up to the timeout,
//!           then RST (socket.abort) so the server never waits for a ping
//! ```

use core::net::Ipv4Addr;

use embassy_net::dns::DnsQueryType;
use embassy_net::tcp::{self, TcpSocket};
use embassy_net::{IpAddress, Stack};
use embassy_time::{Duration, Timer, with_timeout};
use embedded_io_async::{ErrorType, Read, Write};
use tether_core::connector::{Connector, Endpoint, Security};

/// Why [`TcpConnector::connect`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ConnectError {
    /// The DNS query failed (no DNS server, no answer, name too long).
    Dns(embassy_net::dns::Error),
    /// The name has no IPv4 address.
    NoAddress,
    /// The TCP connection was refused or timed out.
    Tcp(tcp::ConnectError),
    /// `wss://` asked of a plain connector: wrap it in a
    /// [`TlsConnector`](crate::tls::TlsConnector).
    TlsUnsupported,
}

impl core::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Dns(e) => write!(f, "DNS query failed: {e:?}"),
            Self::NoAddress => f.write_str("the name has no IPv4 address"),
            Self::Tcp(e) => write!(f, "TCP connect failed: {e:?}"),
            Self::TlsUnsupported => f.write_str("wss:// needs a TlsConnector"),
        }
    }
}

impl core::error::Error for ConnectError {}

/// Settings of a [`TcpConnector`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TcpConfig {
    /// A connection with unacknowledged data or no answer for this long is
    /// dropped by the stack (`TcpSocket::set_timeout`).
    pub socket_timeout: Duration,
    /// TCP keep-alive interval (the session's WebSocket pings are the real
    /// liveness check; this only keeps NAT entries warm).
    pub keep_alive: Option<Duration>,
    /// How long [`TcpConnection::close`] waits for the peer's FIN before it
    /// resets the connection.
    pub close_timeout: Duration,
}

impl Default for TcpConfig {
    fn default() -> Self {
        Self {
            socket_timeout: Duration::from_secs(30),
            keep_alive: Some(Duration::from_secs(20)),
            close_timeout: Duration::from_secs(2),
        }
    }
}

impl TcpConfig {
    /// Sets [`socket_timeout`](Self::socket_timeout).
    #[must_use]
    pub const fn with_socket_timeout(mut self, timeout: Duration) -> Self {
        self.socket_timeout = timeout;
        self
    }

    /// Sets [`close_timeout`](Self::close_timeout).
    #[must_use]
    pub const fn with_close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Sets [`keep_alive`](Self::keep_alive).
    #[must_use]
    pub const fn with_keep_alive(mut self, interval: Option<Duration>) -> Self {
        self.keep_alive = interval;
        self
    }
}

/// Opens TCP connections on an embassy-net stack. Owns the socket's
/// receive and transmit buffers (`'static`: statics in firmware, leaked in
/// tests) and lends them to one [`TcpConnection`] at a time.
///
/// ```no_run
/// # async fn f(stack: embassy_net::Stack<'static>) {
/// use tether_core::connector::{Connector, Endpoint, Security};
/// use tether_esp32::tcp::{TcpConfig, TcpConnector};
///
/// static SOCKET: static_cell::StaticCell<([u8; 2048], [u8; 1024])> = static_cell::StaticCell::new();
/// let (rx, tx) = SOCKET.init(([0; 2048], [0; 1024]));
/// let mut connector = TcpConnector::new(stack, rx, tx, TcpConfig::default());
/// let connection = connector
///     .connect(Endpoint::new("relay.example.com", 80, Security::Plain))
///     .await
///     .unwrap();
/// connection.close().await; // FIN, then RST if the peer does not answer
/// # }
/// ```
pub struct TcpConnector {
    stack: Stack<'static>,
    rx: &'static mut [u8],
    tx: &'static mut [u8],
    config: TcpConfig,
}

impl core::fmt::Debug for TcpConnector {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TcpConnector")
            .field("rx", &self.rx.len())
            .field("tx", &self.tx.len())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl TcpConnector {
    /// A connector on `stack` with the socket buffers `rx` and `tx`.
    pub fn new(
        stack: Stack<'static>,
        rx: &'static mut [u8],
        tx: &'static mut [u8],
        config: TcpConfig,
    ) -> Self {
        Self {
            stack,
            rx,
            tx,
            config,
        }
    }

    /// The network stack.
    #[must_use]
    pub fn stack(&self) -> Stack<'static> {
        self.stack
    }

    /// Resolves `host` (an IPv4 literal needs no DNS).
    ///
    /// # Errors
    /// [`ConnectError::Dns`] or [`ConnectError::NoAddress`].
    pub async fn resolve(&self, host: &str) -> Result<IpAddress, ConnectError> {
        if let Ok(address) = host.parse::<Ipv4Addr>() {
            return Ok(IpAddress::Ipv4(address));
        }
        let addresses = self
            .stack
            .dns_query(host, DnsQueryType::A)
            .await
            .map_err(ConnectError::Dns)?;
        addresses.first().copied().ok_or(ConnectError::NoAddress)
    }

    /// Opens a TCP connection to `host:port`, whatever the endpoint's
    /// security (the TLS connector calls this for its transport).
    ///
    /// # Errors
    /// DNS or TCP failures.
    pub async fn connect_tcp(
        &mut self,
        host: &str,
        port: u16,
    ) -> Result<TcpConnection<'_>, ConnectError> {
        let address = self.resolve(host).await?;
        debug!("tcp: connecting to {}:{}", host, port);
        let mut socket = TcpSocket::new(self.stack, self.rx, self.tx);
        socket.set_timeout(Some(self.config.socket_timeout));
        socket.set_keep_alive(self.config.keep_alive);
        if let Err(e) = socket.connect((address, port)).await {
            warn!("tcp: connect to {}:{} failed: {:?}", host, port, e);
            return Err(ConnectError::Tcp(e));
        }
        Ok(TcpConnection {
            socket,
            close_timeout: self.config.close_timeout,
        })
    }
}

impl Connector for TcpConnector {
    type Connection<'a>
        = TcpConnection<'a>
    where
        Self: 'a;
    type Error = ConnectError;

    async fn connect(&mut self, endpoint: Endpoint<'_>) -> Result<TcpConnection<'_>, ConnectError> {
        if endpoint.security != Security::Plain {
            return Err(ConnectError::TlsUnsupported);
        }
        self.connect_tcp(endpoint.host, endpoint.port).await
    }

    /// FIN, the peer's FIN awaited up to the close timeout, then RST.
    async fn close(connection: Self::Connection<'_>) {
        connection.close().await;
    }
}

/// An open TCP connection of a [`TcpConnector`].
///
/// Reads are cancel-safe (embassy-net copies out of its receive buffer only
/// when the read completes), which is what tether-core's runner relies on
/// when it races a read against a timer.
pub struct TcpConnection<'a> {
    socket: TcpSocket<'a>,
    close_timeout: Duration,
}

impl core::fmt::Debug for TcpConnection<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TcpConnection")
            .field("remote", &self.socket.remote_endpoint())
            .finish_non_exhaustive()
    }
}

impl<'a> TcpConnection<'a> {
    /// The socket, for settings this type does not wrap.
    pub fn socket(&mut self) -> &mut TcpSocket<'a> {
        &mut self.socket
    }

    /// Closes gracefully: sends what is queued and a FIN, waits up to the
    /// configured close timeout for the peer's FIN (reading and discarding
    /// what it still sends), then resets the connection if the peer has not
    /// finished. Either way the server learns at once that the device left,
    /// instead of at its next ping.
    pub async fn close(mut self) {
        close_socket(&mut self.socket, self.close_timeout).await;
    }
}

/// Closes `socket` gracefully: FIN, the peer's FIN awaited for up to
/// `timeout` (what it still sends is read and dropped), then RST if it has
/// not finished. Used by [`TcpConnection::close`] and the portal's HTTP
/// server.
pub async fn close_socket(socket: &mut TcpSocket<'_>, timeout: Duration) {
    socket.close();
    let graceful = with_timeout(timeout, async {
        let _ = socket.flush().await;
        let mut sink = [0u8; 64];
        // Ok(0): the peer's FIN. An error: the connection is gone.
        while let Ok(n) = socket.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    if graceful.is_err() {
        debug!("tcp: no FIN from the peer within the close timeout, resetting");
    }
    // After our FIN and theirs this only frees the socket; otherwise the
    // stack sends a RST. Give the stack one poll to transmit it before the
    // socket is removed.
    socket.abort();
    let _ = with_timeout(Duration::from_millis(50), socket.flush()).await;
    Timer::after(Duration::from_millis(1)).await;
}

impl ErrorType for TcpConnection<'_> {
    type Error = tcp::Error;
}

impl Read for TcpConnection<'_> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, tcp::Error> {
        self.socket.read(buf).await
    }
}

impl Write for TcpConnection<'_> {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, tcp::Error> {
        self.socket.write(buf).await
    }

    async fn flush(&mut self) -> Result<(), tcp::Error> {
        self.socket.flush().await
    }
}
