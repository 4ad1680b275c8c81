//! Improv Wi-Fi over a serial port (on the ESP32-C3/C6: the USB-Serial-JTAG
//! port, esp-hal's `UsbSerialJtag` in async mode), so ESPHome-style web
//! flashers (ESP Web Tools) can send Wi-Fi credentials over the USB cable.
//!
//! ```text
//!  browser (Web Serial) ──USB──► port: Read + Write (embedded-io-async)
//!       IMPROV packets, amid log lines ─► ImprovSerial::next_credentials
//!           tether-core ImprovService: state, device info, scan, Wi-Fi settings
//!       ◄─ replies (current state, RPC results, errors)
//!  firmware: save credentials, join, then provisioned(url) / connect_failed()
//! ```
//!
//! The protocol logic is tether-core's sans-IO
//! [`ImprovService`]; this is the thin I/O loop around it: bounded receive
//! buffer, log noise skipped, every reply written whole.

use embedded_io_async::{Read, Write};
use tether_core::provisioning::improv::{
    DeviceInfo, ImprovError, ImprovEvent, ImprovService, MAX_PACKET_LEN, Status, sync,
};
use tether_core::provisioning::portal::Network;
use tether_core::provisioning::record::WifiCredentials;

/// Why the Improv loop stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ImprovSerialError<E> {
    /// Reading or writing the port failed.
    Io(E),
    /// The port reached its end (host closed it).
    Closed,
    /// A reply did not fit the transmit buffer (many scanned networks).
    Reply(ImprovError),
}

impl<E: core::fmt::Debug> core::fmt::Display for ImprovSerialError<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "serial port: {e:?}"),
            Self::Closed => f.write_str("serial port closed"),
            Self::Reply(e) => write!(f, "Improv reply: {e:?}"),
        }
    }
}

impl<E: core::fmt::Debug> core::error::Error for ImprovSerialError<E> {}

/// Transmit buffer: a state packet, an error packet and a scan list of
/// [`MAX_LISTED_NETWORKS`](tether_core::provisioning::portal::MAX_LISTED_NETWORKS)
/// results.
const TX_LEN: usize = 2048;

/// The Improv serial service on a port.
pub struct ImprovSerial<'i, T> {
    port: T,
    info: DeviceInfo<'i>,
    service: ImprovService,
    rx: [u8; MAX_PACKET_LEN],
    filled: usize,
    tx: [u8; TX_LEN],
}

impl<T> core::fmt::Debug for ImprovSerial<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ImprovSerial")
            .field("state", &self.service.state())
            .finish_non_exhaustive()
    }
}

impl<'i, T: Read + Write> ImprovSerial<'i, T> {
    /// The service on `port`, describing the device with `info`.
    pub fn new(port: T, info: DeviceInfo<'i>) -> Self {
        Self {
            port,
            info,
            service: ImprovService::new(),
            rx: [0; MAX_PACKET_LEN],
            filled: 0,
            tx: [0; TX_LEN],
        }
    }

    /// Answers requests (state, device info, a scan from `networks`) until
    /// a client sends Wi-Fi credentials, and returns them. Bytes that are
    /// not Improv packets (log lines) are skipped.
    ///
    /// # Errors
    /// The port failed or closed.
    pub async fn next_credentials(
        &mut self,
        networks: &[Network<'_>],
    ) -> Result<WifiCredentials, ImprovSerialError<T::Error>> {
        loop {
            // Everything complete in the buffer first.
            while self.filled > 0 {
                let input = self.rx.get(..self.filled).unwrap_or(&[]);
                let reply = match self
                    .service
                    .receive(input, &self.info, networks, &mut self.tx)
                {
                    Ok(Status::Partial) => break,
                    Ok(Status::Complete(reply)) => reply,
                    Err(e) => return Err(ImprovSerialError::Reply(e)),
                };
                self.consume(reply.consumed.max(1));
                if let Some(bytes) = self.tx.get(..reply.len) {
                    self.port
                        .write_all(bytes)
                        .await
                        .map_err(ImprovSerialError::Io)?;
                    self.port.flush().await.map_err(ImprovSerialError::Io)?;
                }
                if let Some(ImprovEvent::Credentials(credentials)) = reply.event {
                    info!(
                        "improv: credentials received for {}",
                        credentials.ssid.as_str()
                    );
                    return Ok(credentials);
                }
            }
            if self.filled == self.rx.len() {
                // A full buffer without a packet: drop up to the next header.
                let skip = sync(self.rx.get(1..).unwrap_or(&[])).saturating_add(1);
                self.consume(skip);
            }
            let space = self.rx.get_mut(self.filled..).unwrap_or(&mut []);
            let n = self.port.read(space).await.map_err(ImprovSerialError::Io)?;
            if n == 0 {
                return Err(ImprovSerialError::Closed);
            }
            self.filled = self.filled.saturating_add(n).min(self.rx.len());
        }
    }

    /// Tells the client the device is online; `redirect_url` (may be empty)
    /// is where the browser goes next, e.g. the device's dashboard page.
    ///
    /// # Errors
    /// The port failed.
    pub async fn provisioned(
        &mut self,
        redirect_url: &str,
    ) -> Result<(), ImprovSerialError<T::Error>> {
        let n = self
            .service
            .provisioned(redirect_url, &mut self.tx)
            .map_err(ImprovSerialError::Reply)?;
        self.send(n).await
    }

    /// Tells the client the credentials did not work (back to ready).
    ///
    /// # Errors
    /// The port failed.
    pub async fn connect_failed(&mut self) -> Result<(), ImprovSerialError<T::Error>> {
        let n = self
            .service
            .connect_failed(&mut self.tx)
            .map_err(ImprovSerialError::Reply)?;
        self.send(n).await
    }

    /// The port back.
    pub fn into_inner(self) -> T {
        self.port
    }

    async fn send(&mut self, n: usize) -> Result<(), ImprovSerialError<T::Error>> {
        let bytes = self.tx.get(..n).unwrap_or(&[]);
        self.port
            .write_all(bytes)
            .await
            .map_err(ImprovSerialError::Io)?;
        self.port.flush().await.map_err(ImprovSerialError::Io)
    }

    fn consume(&mut self, n: usize) {
        let n = n.min(self.filled);
        self.rx.copy_within(n..self.filled, 0);
        self.filled -= n;
    }
}
