//! tether-core's [`Connector`] over the modem: one TCP or TLS link
//! (`AT+CIPSTART`), read in passive mode (`+IPD` notices,
//! `AT+CIPRECVDATA`, `AT+CIPRECVLEN?`) and written with `AT+CIPSEND`.
//!
//! ```text
//!  Runner ──connect(Endpoint)──► Esp8266 ──► ensure_ready, join Wi-Fi,
//!                                   │        AT+CIPSSLCCONF/CCN/CSNI (wss),
//!                                   │        AT+CIPSTART=<id>,"TCP"|"SSL",...
//!                                   ▼
//!                               Link<'_> (Read + Write, borrows the driver)
//!      read:  received bytes? ─► hand out; +IPD pending? ─► AT+CIPRECVDATA;
//!             CLOSED? ─► end of stream; else wait for the modem (cancel-safe)
//!      write: gather into the send buffer; full or flush ─► AT+CIPSEND, >, SEND OK
//! ```
//!
//! Flow control comes from passive mode: the modem keeps what arrives in
//! its socket window (5760 bytes on an ESP8266) and TCP stops the server
//! when that is full, so a slow MCU is never overrun; it takes at most one
//! receive buffer at a time.

use embedded_hal::digital::OutputPin;
use embedded_io_async::{ErrorType, Read, Write};
use tether_core::connector::{Connector, Endpoint, Security};
use tether_core::time::Clock;

use crate::engine::Kind;
use crate::error::Error;
use crate::modem::{Esp8266, TlsVerification, check_name};

impl<'b, S, K, P> Connector for Esp8266<'b, S, K, P>
where
    S: Read + Write,
    K: Clock,
    P: OutputPin,
{
    type Connection<'a>
        = Link<'a, 'b, S, K, P>
    where
        Self: 'a;
    type Error = Error;

    async fn connect(&mut self, endpoint: Endpoint<'_>) -> Result<Link<'_, 'b, S, K, P>, Error> {
        check_name(endpoint.host)?;
        self.ensure_wifi().await?;
        let link = self.config.link;
        let state = self.engine.link(link).unwrap_or_default();
        if state.open || self.stale_links & (1 << link) != 0 {
            self.close_link(link).await?;
        }
        self.send_len = 0;
        let tls = endpoint.security == Security::Tls;
        if tls {
            self.configure_tls(link, endpoint.host).await?;
        }
        info!(
            "esp8266: connecting to {}:{} ({})",
            endpoint.host,
            endpoint.port,
            if tls { "SSL" } else { "TCP" }
        );
        let before = self.engine.link(link).unwrap_or_default().generation;
        let keepalive = self.config.tcp_keepalive_secs;
        let timeout = self.config.connect_timeout;
        self.execute(
            Kind::Plain,
            timeout,
            |l| {
                l.push_str("AT+CIPSTART=")?;
                l.push_u32(u32::from(link))?;
                l.push_str(if tls { ",\"SSL\"," } else { ",\"TCP\"," })?;
                l.push_quoted(endpoint.host)?;
                l.push_str(",")?;
                l.push_u32(u32::from(endpoint.port))?;
                if keepalive > 0 && !tls {
                    l.push_str(",")?;
                    l.push_u32(u32::from(keepalive))?;
                }
                Ok(())
            },
            &mut |_| {},
        )
        .await?;
        let state = self.engine.link(link).unwrap_or_default();
        if state.generation == before {
            // `OK` without `<id>,CONNECT`.
            return Err(Error::Protocol);
        }
        // A `CLOSED` right behind the `CONNECT` is the server hanging up:
        // the link reads to its end like any other.
        Ok(Link {
            generation: state.generation,
            modem: self,
            link,
            asked_length: false,
            closed: false,
        })
    }

    /// `AT+CIPCLOSE` at once, so the server sees the connection end now
    /// and not when the next one opens. ESP-AT cannot tell a rejected
    /// certificate from other `AT+CIPSTART` failures (both are `ERROR`), so
    /// every connect error stays transient (the default `error_kind`).
    async fn close(connection: Self::Connection<'_>) {
        if let Err(e) = connection.close().await {
            debug!(
                "esp8266: AT+CIPCLOSE failed ({:?}); closed before the next connect",
                e
            );
        }
    }
}

impl<S, K, P> Esp8266<'_, S, K, P>
where
    S: Read + Write,
    K: Clock,
    P: OutputPin,
{
    async fn configure_tls(&mut self, link: u8, host: &str) -> Result<(), Error> {
        let timeout = self.config.command_timeout;
        match self.config.tls {
            TlsVerification::FlashedCa => {
                self.execute(
                    Kind::Plain,
                    timeout,
                    |l| {
                        l.push_str("AT+CIPSSLCCONF=")?;
                        l.push_u32(u32::from(link))?;
                        l.push_str(",2,0,0")
                    },
                    &mut |_| {},
                )
                .await?;
                self.execute(
                    Kind::Plain,
                    timeout,
                    |l| {
                        l.push_str("AT+CIPSSLCCN=")?;
                        l.push_u32(u32::from(link))?;
                        l.push_str(",")?;
                        l.push_quoted(host)
                    },
                    &mut |_| {},
                )
                .await?;
            }
            TlsVerification::Insecure => {
                warn!("esp8266: TLS without server verification");
                self.execute(
                    Kind::Plain,
                    timeout,
                    |l| {
                        l.push_str("AT+CIPSSLCCONF=")?;
                        l.push_u32(u32::from(link))?;
                        l.push_str(",0")
                    },
                    &mut |_| {},
                )
                .await?;
            }
        }
        self.execute(
            Kind::Plain,
            timeout,
            |l| {
                l.push_str("AT+CIPSSLCSNI=")?;
                l.push_u32(u32::from(link))?;
                l.push_str(",")?;
                l.push_quoted(host)
            },
            &mut |_| {},
        )
        .await?;
        if let Some(size) = self.config.ssl_buffer_size {
            let result = self
                .execute(
                    Kind::Plain,
                    timeout,
                    |l| {
                        l.push_str("AT+CIPSSLSIZE=")?;
                        l.push_u32(u32::from(size))
                    },
                    &mut |_| {},
                )
                .await;
            match result {
                Ok(()) => {}
                Err(Error::Command { .. }) => {
                    warn!("esp8266: AT+CIPSSLSIZE refused (ESP-AT 2.x sizes TLS buffers itself)");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// One open connection: reads and writes through the modem it borrows.
///
/// Reads are cancel-safe (the runner races them against its timers): a
/// read cancelled in the middle of `AT+CIPRECVDATA` leaves the exchange in
/// the driver, and the next operation finishes it and keeps the bytes.
/// [`Connector::close`] (what the runner calls when it is done with a
/// connection) and [`Link::close`] close it in the modem at once; a link
/// merely dropped (or whose close was cut short) stays open there until
/// the next [`Connector::connect`] closes it.
pub struct Link<'a, 'b, S, K, P>
where
    S: Read + Write,
    K: Clock,
    P: OutputPin,
{
    modem: &'a mut Esp8266<'b, S, K, P>,
    link: u8,
    generation: u16,
    /// `AT+CIPRECVLEN?` was asked since the last receive.
    asked_length: bool,
    /// [`Link::close`] closed it already.
    closed: bool,
}

impl<S, K, P> core::fmt::Debug for Link<'_, '_, S, K, P>
where
    S: Read + Write,
    K: Clock,
    P: OutputPin,
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Link")
            .field("link", &self.link)
            .field("state", &self.modem.engine.link(self.link))
            .finish_non_exhaustive()
    }
}

impl<S, K, P> Link<'_, '_, S, K, P>
where
    S: Read + Write,
    K: Clock,
    P: OutputPin,
{
    /// The modem's link id.
    #[must_use]
    pub fn id(&self) -> u8 {
        self.link
    }

    /// Closes the link now (`AT+CIPCLOSE`) instead of at the next connect.
    ///
    /// # Errors
    /// Timeouts and serial errors.
    pub async fn close(mut self) -> Result<(), Error> {
        self.modem.send_len = 0;
        let result = self.modem.close_link(self.link).await;
        // Cancelled or failed: `Drop` leaves it for the next connect.
        self.closed = result.is_ok();
        result
    }

    fn current(&self) -> bool {
        self.modem
            .engine
            .link(self.link)
            .is_some_and(|state| state.generation == self.generation)
    }
}

impl<S, K, P> Drop for Link<'_, '_, S, K, P>
where
    S: Read + Write,
    K: Clock,
    P: OutputPin,
{
    fn drop(&mut self) {
        // Gathered bytes of a dropped connection are worthless; the link
        // is closed before the id is used again.
        self.modem.send_len = 0;
        if !self.closed && self.current() {
            self.modem.stale_links |= 1 << self.link;
        }
    }
}

impl<S, K, P> ErrorType for Link<'_, '_, S, K, P>
where
    S: Read + Write,
    K: Clock,
    P: OutputPin,
{
    type Error = Error;
}

impl<S, K, P> Read for Link<'_, '_, S, K, P>
where
    S: Read + Write,
    K: Clock,
    P: OutputPin,
{
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            self.modem.settle().await?;
            let received = self.modem.engine.received(self.link);
            if !received.is_empty() {
                let n = received.len().min(buf.len());
                if let (Some(dst), Some(src)) = (buf.get_mut(..n), received.get(..n)) {
                    dst.copy_from_slice(src);
                }
                self.modem.engine.consume(n);
                return Ok(n);
            }
            if !self.current() {
                return Err(Error::LinkClosed);
            }
            let state = self.modem.engine.link(self.link).unwrap_or_default();
            if state.pending > 0 {
                let len = usize::try_from(state.pending).unwrap_or(usize::MAX);
                self.modem.receive(self.link, len).await?;
                self.asked_length = false;
                continue;
            }
            if !state.open {
                // Passive mode reports CLOSED only once everything was read.
                return Ok(0);
            }
            if !self.asked_length {
                // More may have arrived since the last +IPD without a new
                // one (ESP-AT reports the next only once the last is read).
                self.asked_length = true;
                self.modem.refresh_pending().await?;
                continue;
            }
            self.modem.wait_report().await?;
            self.asked_length = self
                .modem
                .engine
                .link(self.link)
                .is_some_and(|s| s.pending == 0);
        }
    }
}

impl<S, K, P> Write for Link<'_, '_, S, K, P>
where
    S: Read + Write,
    K: Clock,
    P: OutputPin,
{
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.modem.settle().await?;
        let state = self.modem.engine.link(self.link).unwrap_or_default();
        if !self.current() || !state.open {
            return Err(Error::LinkClosed);
        }
        if self.modem.send_len >= self.modem.send.len() {
            self.modem.send_gathered(self.link, None).await?;
        }
        let start = self.modem.send_len;
        let free = self.modem.send.get_mut(start..).unwrap_or_default();
        let n = free.len().min(buf.len());
        if let (Some(dst), Some(src)) = (free.get_mut(..n), buf.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.modem.send_len = start.saturating_add(n);
        Ok(n)
    }

    async fn flush(&mut self) -> Result<(), Error> {
        self.modem.settle().await?;
        if self.modem.send_len == 0 {
            return Ok(());
        }
        if !self.current() {
            self.modem.send_len = 0;
            return Err(Error::LinkClosed);
        }
        self.modem.send_gathered(self.link, None).await
    }
}
