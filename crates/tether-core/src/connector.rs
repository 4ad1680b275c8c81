//! The one thing a board must provide to go online: [`Connector`], which
//! opens a byte stream to `host:port`.
//!
//! ```text
//!  Client ──connect(Endpoint)──► Connector ──► Connection<'_> (Read + Write)
//!                                  │              │
//!                                  │ owns rx/tx   └─ borrows them while open
//!                                  │ buffers, DNS, TCP, TLS
//! ```
//!
//! The connection *borrows* from the connector (`Connection<'a>` is a generic
//! associated type). That is the shape of embassy-net, where
//! `TcpSocket<'a>` borrows the network stack and caller-owned receive and
//! transmit buffers: a firmware connector owns the buffers and lends them to
//! one socket at a time, with no allocation and no `'static` juggling. A
//! connector on a PC simply returns an owned stream (see `tether-host`).
//!
//! DNS, TCP and TLS are the connector's business: the session only sees bytes.

use embedded_io_async::{Read, Write};

/// Whether the byte stream is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Security {
    /// Plain TCP (`ws://`).
    Plain,
    /// TLS over TCP (`wss://`); the connector verifies the server.
    Tls,
}

/// Where to connect: a host name or address literal, a port, and whether to
/// use TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Endpoint<'a> {
    /// Host name (resolved by the connector) or IP address literal.
    pub host: &'a str,
    /// TCP port.
    pub port: u16,
    /// Plain or TLS.
    pub security: Security,
}

impl<'a> Endpoint<'a> {
    /// An endpoint.
    #[must_use]
    pub const fn new(host: &'a str, port: u16, security: Security) -> Self {
        Self {
            host,
            port,
            security,
        }
    }
}

/// Opens byte streams to servers. Implemented once per board or platform.
///
/// At most one connection is open at a time: the session drops the old one
/// before it connects again, which is what lets [`Connector::Connection`]
/// borrow the connector's buffers.
///
/// # Example implementation
///
/// A connector in the embassy-net shape: it owns the receive and transmit
/// buffers, and the connection it returns borrows them. Here the "network"
/// is a canned reply, so the example runs anywhere; a real firmware connector
/// (resolving with `stack.dns_query`, then `TcpSocket::new(stack, rx, tx)`
/// and `socket.connect(..)`, and a graceful close) is `tether-esp32`'s
/// `TcpConnector`.
///
/// ```
/// use embedded_io_async::{ErrorKind, ErrorType, Read, Write};
/// use tether_core::connector::{ConnectErrorKind, Connector, Endpoint, Security};
///
/// /// Owns the buffers, like a firmware connector owning socket buffers.
/// struct CannedConnector {
///     reply: &'static [u8],
///     rx: [u8; 64],
///     tx: [u8; 64],
/// }
///
/// /// Borrows the connector's buffers while open, like `TcpSocket<'a>`.
/// struct CannedConnection<'a> {
///     rx: &'a mut [u8],
///     rx_len: usize,
///     rx_read: usize,
///     tx: &'a mut [u8],
///     tx_len: usize,
/// }
///
/// #[derive(Debug)]
/// enum CannedError {
///     Refused,
///     BufferFull,
/// }
///
/// impl core::fmt::Display for CannedError {
///     fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
///         f.write_str(match self {
///             CannedError::Refused => "connection refused",
///             CannedError::BufferFull => "transmit buffer full",
///         })
///     }
/// }
///
/// impl core::error::Error for CannedError {}
///
/// impl embedded_io_async::Error for CannedError {
///     fn kind(&self) -> ErrorKind {
///         match self {
///             CannedError::Refused => ErrorKind::ConnectionRefused,
///             CannedError::BufferFull => ErrorKind::OutOfMemory,
///         }
///     }
/// }
///
/// impl ErrorType for CannedConnection<'_> {
///     type Error = CannedError;
/// }
///
/// impl Read for CannedConnection<'_> {
///     async fn read(&mut self, buf: &mut [u8]) -> Result<usize, CannedError> {
///         let available = self.rx.get(self.rx_read..self.rx_len).unwrap_or(&[]);
///         let n = available.len().min(buf.len());
///         buf[..n].copy_from_slice(&available[..n]);
///         self.rx_read += n;
///         Ok(n) // 0 once the reply is consumed: end of stream.
///     }
/// }
///
/// impl Write for CannedConnection<'_> {
///     async fn write(&mut self, buf: &[u8]) -> Result<usize, CannedError> {
///         let free = self.tx.get_mut(self.tx_len..).ok_or(CannedError::BufferFull)?;
///         let n = free.len().min(buf.len());
///         if n == 0 && !buf.is_empty() {
///             return Err(CannedError::BufferFull);
///         }
///         free[..n].copy_from_slice(&buf[..n]);
///         self.tx_len += n;
///         Ok(n)
///     }
///
///     async fn flush(&mut self) -> Result<(), CannedError> {
///         Ok(()) // Nothing is buffered beyond `tx`.
///     }
/// }
///
/// impl Connector for CannedConnector {
///     type Connection<'a> = CannedConnection<'a>;
///     type Error = CannedError;
///
///     async fn connect(&mut self, endpoint: Endpoint<'_>) -> Result<CannedConnection<'_>, CannedError> {
///         if endpoint.security == Security::Tls {
///             return Err(CannedError::Refused); // This board has no TLS.
///         }
///         let rx_len = self.reply.len().min(self.rx.len());
///         self.rx[..rx_len].copy_from_slice(&self.reply[..rx_len]);
///         Ok(CannedConnection { rx: &mut self.rx, rx_len, rx_read: 0, tx: &mut self.tx, tx_len: 0 })
///     }
///
///     // Optional: how an error affects the next attempt (default: transient)...
///     fn error_kind(_error: &CannedError) -> ConnectErrorKind {
///         ConnectErrorKind::Transient
///     }
///
///     // ...and a graceful close (default: drop). Name the connection type
///     // `Self::Connection<'_>` here, as in the trait. On embassy-net:
///     // `socket.close()`, `flush()` with a timeout, then `socket.abort()`.
///     async fn close(mut connection: Self::Connection<'_>) {
///         let _ = connection.flush().await;
///     }
/// }
///
/// let mut connector = CannedConnector { reply: b"hello", rx: [0; 64], tx: [0; 64] };
/// embassy_futures::block_on(async {
///     let endpoint = Endpoint::new("relay.example.com", 80, Security::Plain);
///     let mut connection = connector.connect(endpoint).await.unwrap();
///     connection.write_all(b"hi").await.unwrap();
///     let mut reply = [0; 8];
///     let n = connection.read(&mut reply).await.unwrap();
///     assert_eq!(&reply[..n], b"hello");
///     drop(connection); // Gives the buffers back: the next connect may borrow them.
///
///     let tls = Endpoint::new("relay.example.com", 443, Security::Tls);
///     assert!(connector.connect(tls).await.is_err());
/// });
/// ```
#[allow(async_fn_in_trait)] // Like embedded-io-async: no `Send` bound, firmware is single-core.
pub trait Connector {
    /// An open byte stream. It may borrow the connector (its buffers, its
    /// network stack) for as long as it is open.
    ///
    /// **Its `read` must be cancel-safe**: the client races a read against
    /// timers and publishes and drops the read future that loses, so a read
    /// that has not completed must not have consumed any bytes (they are
    /// returned by the next read). embassy-net's `TcpSocket::read`, tokio's
    /// `AsyncReadExt::read` and `embedded-tls`'s read (its record buffer
    /// keeps partial records) are. Writes are never raced; a write cut short
    /// by the send timeout drops the connection.
    type Connection<'a>: Read + Write
    where
        Self: 'a;

    /// Why a connection could not be opened (DNS, refused, TLS, no route...).
    type Error: core::fmt::Debug;

    /// Opens a byte stream to `endpoint`, resolving the host name if needed
    /// and performing the TLS handshake for [`Security::Tls`].
    ///
    /// # Errors
    /// Whatever kept the connection from opening; the session backs off and
    /// tries again, unless [`Connector::error_kind`] says it never will
    /// work.
    async fn connect(
        &mut self,
        endpoint: Endpoint<'_>,
    ) -> Result<Self::Connection<'_>, Self::Error>;

    /// Whether `error` would repeat on every attempt. The default says
    /// [`ConnectErrorKind::Transient`] (back off and try again). A TLS
    /// connector answers [`ConnectErrorKind::Certificate`] when the server's
    /// certificate fails verification (unknown CA, wrong name, expired
    /// while the device's clock is known to be right): the client then
    /// stops in `NeedsProvisioning` instead of retrying for ever. A
    /// certificate that only looks expired because the clock is not set yet
    /// is transient.
    fn error_kind(error: &Self::Error) -> ConnectErrorKind {
        let _ = error;
        ConnectErrorKind::Transient
    }

    /// Closes a connection gracefully once the session is done with it:
    /// TLS `close_notify`, TCP close (FIN) and a wait for the peer, then an
    /// abort (RST) if that does not finish. The client bounds the call by
    /// its send timeout and drops the connection after it. The default just
    /// drops it (enough where dropping closes, as with tokio).
    async fn close(connection: Self::Connection<'_>) {
        drop(connection);
    }
}

/// How a [`Connector`] error affects the next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ConnectErrorKind {
    /// May work next time (DNS, no route, refused, reset, timeout).
    Transient,
    /// The server's certificate was rejected: retrying will not help until
    /// the device trusts another CA or the server's certificate changes.
    Certificate,
}
