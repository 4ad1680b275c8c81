//! [`Esp8266`]: the thin async driver around the sans-IO [`Engine`]. It
//! owns the serial port, the clock, the optional reset pin and the
//! buffers; it writes what the engine asks for, feeds what the modem says,
//! and sleeps until the engine's deadline.
//!
//! Every operation first finishes the exchange an earlier, cancelled
//! operation left under way ([`Esp8266::settle`]), so cancelling a future
//! of this driver loses nothing. The serial port's `read` must itself be
//! cancel-safe (embassy's `BufferedUart` and tokio streams are).

use core::fmt;

use embassy_futures::select::{Either, select};
use embedded_hal::digital::OutputPin;
use embedded_io_async::{Read, Write};
use heapless::{String, Vec};
use tether_core::time::{Clock, Duration, Instant};

use crate::command::{CommandLine, unescape_into};
use crate::engine::{COMMAND_LEN, Engine, EngineStats, Kind, LinkState, WifiState};
use crate::error::Error;
use crate::parse::{Fields, parse_i32, parse_u32, unquote};

/// How long a probe (`AT`, or a resync's command) waits for its answer.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1000);

/// Longest payload of one `AT+CIPSEND` (ESP-AT's limit).
pub const MAX_SEND: usize = 2048;

/// The driver's buffers, owned by the caller (a `static` on a device):
///
/// - `RX`: bytes read from the serial port in one go.
/// - `RECV`: one `AT+CIPRECVDATA` payload: the most a link hands over at
///   once (and the largest DNS query or HTTP request chunk the portal sees).
/// - `SEND`: one `AT+CIPSEND` payload (at most [`MAX_SEND`]): writes are
///   gathered here and sent when it is full or flushed.
#[derive(Debug)]
pub struct Buffers<const RX: usize = 256, const RECV: usize = 1024, const SEND: usize = 1024> {
    rx: [u8; RX],
    recv: [u8; RECV],
    send: [u8; SEND],
}

impl<const RX: usize, const RECV: usize, const SEND: usize> Default for Buffers<RX, RECV, SEND> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const RX: usize, const RECV: usize, const SEND: usize> Buffers<RX, RECV, SEND> {
    /// Zeroed buffers.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            rx: [0; RX],
            recv: [0; RECV],
            send: [0; SEND],
        }
    }
}

/// How the modem checks the relay's certificate on `wss://`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum TlsVerification {
    /// Against the CA certificate flashed into the modem's `client_ca`
    /// partition (`AT+CIPSSLCCONF=<id>,2,0,0`), with the host name as the
    /// expected common name (`AT+CIPSSLCCN`). The default.
    FlashedCa,
    /// None at all (`AT+CIPSSLCCONF=<id>,0`): encrypted, but anyone on the
    /// path can pose as the server. For tests on a bench only.
    Insecure,
}

/// Settings of the driver. Builder-lite: [`Config::new`] has the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Config<'a> {
    pub(crate) wifi: Option<(&'a str, &'a str)>,
    pub(crate) tls: TlsVerification,
    pub(crate) ssl_buffer_size: Option<u16>,
    pub(crate) tcp_keepalive_secs: u16,
    pub(crate) command_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) join_timeout: Duration,
    pub(crate) link: u8,
}

impl Default for Config<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> Config<'a> {
    /// No Wi-Fi credentials (join with [`Esp8266::join`], or let the modem
    /// reconnect with the ones it saved), CA verification, 5 s per command,
    /// 30 s to open a connection (TLS handshakes on an ESP8266 take
    /// seconds), 20 s to join, link id 0 for the relay connection.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            wifi: None,
            tls: TlsVerification::FlashedCa,
            ssl_buffer_size: None,
            tcp_keepalive_secs: 0,
            command_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(30),
            join_timeout: Duration::from_secs(20),
            link: 0,
        }
    }

    /// The network the connector joins (again) when the station is down.
    #[must_use]
    pub const fn with_wifi(mut self, ssid: &'a str, passphrase: &'a str) -> Self {
        self.wifi = Some((ssid, passphrase));
        self
    }

    /// How `wss://` servers are checked.
    #[must_use]
    pub const fn with_tls(mut self, tls: TlsVerification) -> Self {
        self.tls = tls;
        self
    }

    /// Sends `AT+CIPSSLSIZE=<bytes>` before each TLS connection. Only the
    /// old NONOS-AT firmware (1.x) has this command; ESP-AT 2.x sizes its
    /// TLS buffers itself and answers `ERROR`, which the driver logs and
    /// ignores.
    #[must_use]
    pub const fn with_ssl_buffer_size(mut self, bytes: u16) -> Self {
        self.ssl_buffer_size = Some(bytes);
        self
    }

    /// TCP keep-alive of the relay connection, in seconds (0: off, the
    /// default; the session's WebSocket pings keep it alive anyway).
    #[must_use]
    pub const fn with_tcp_keepalive(mut self, secs: u16) -> Self {
        self.tcp_keepalive_secs = secs;
        self
    }

    /// Longest wait for the answer to an ordinary command.
    #[must_use]
    pub const fn with_command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// Longest wait for `AT+CIPSTART` (DNS, TCP and TLS in the modem).
    #[must_use]
    pub const fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Longest wait for `AT+CWJAP`.
    #[must_use]
    pub const fn with_join_timeout(mut self, timeout: Duration) -> Self {
        self.join_timeout = timeout;
        self
    }

    /// The Wi-Fi credentials, if any.
    #[must_use]
    pub const fn wifi(&self) -> Option<(&'a str, &'a str)> {
        self.wifi
    }
}

/// The type of "no reset pin": the driver resets the modem with `AT+RST`.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoResetPin;

impl embedded_hal::digital::ErrorType for NoResetPin {
    type Error = core::convert::Infallible;
}

impl OutputPin for NoResetPin {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// One network of a scan (`AT+CWLAP`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ScannedNetwork {
    /// The network name.
    pub ssid: String<32>,
    /// Signal strength, dBm.
    pub rssi: i8,
    /// Whether it asks for a passphrase (`<ecn>` not 0).
    pub secured: bool,
}

/// The ESP8266 running ESP-AT, on a serial port `S`, timed by `K`, with an
/// optional reset pin `P` wired to the module's `RST`.
pub struct Esp8266<'b, S, K, P = NoResetPin> {
    pub(crate) serial: S,
    pub(crate) clock: K,
    reset_pin: Option<P>,
    pub(crate) engine: Engine<'b>,
    rx: &'b mut [u8],
    pub(crate) send: &'b mut [u8],
    pub(crate) send_len: usize,
    pub(crate) config: Config<'b>,
    /// The SoftAP is up (Wi-Fi mode 3 instead of 1).
    pub(crate) access_point: bool,
    /// Links to close before reusing them (a dropped connection).
    pub(crate) stale_links: u8,
}

impl<S, K, P> fmt::Debug for Esp8266<'_, S, K, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Esp8266")
            .field("engine", &self.engine)
            .field("access_point", &self.access_point)
            .finish_non_exhaustive()
    }
}

impl<'b, S, K> Esp8266<'b, S, K, NoResetPin>
where
    S: Read + Write,
    K: Clock,
{
    /// A driver for the modem on `serial` (115200 8N1 by default), working
    /// in `buffers`. Nothing is sent until the first operation.
    pub fn new<const RX: usize, const RECV: usize, const SEND: usize>(
        serial: S,
        clock: K,
        config: Config<'b>,
        buffers: &'b mut Buffers<RX, RECV, SEND>,
    ) -> Self {
        let send_len = SEND.min(MAX_SEND);
        Self {
            serial,
            clock,
            reset_pin: None,
            engine: Engine::new(&mut buffers.recv),
            rx: &mut buffers.rx,
            send: buffers.send.get_mut(..send_len).unwrap_or_default(),
            send_len: 0,
            config,
            access_point: false,
            stale_links: 0,
        }
    }

    /// Uses `pin` (wired to the module's `RST`, active low) to reset a
    /// modem that stopped answering, instead of `AT+RST`.
    pub fn with_reset_pin<Q: OutputPin>(self, mut pin: Q) -> Esp8266<'b, S, K, Q> {
        let _ = pin.set_high();
        Esp8266 {
            serial: self.serial,
            clock: self.clock,
            reset_pin: Some(pin),
            engine: self.engine,
            rx: self.rx,
            send: self.send,
            send_len: self.send_len,
            config: self.config,
            access_point: self.access_point,
            stale_links: self.stale_links,
        }
    }
}

impl<'b, S, K, P> Esp8266<'b, S, K, P>
where
    S: Read + Write,
    K: Clock,
    P: OutputPin,
{
    /// The settings.
    #[must_use]
    pub fn config(&self) -> &Config<'b> {
        &self.config
    }

    /// Replaces the Wi-Fi credentials the connector joins with.
    pub fn set_wifi(&mut self, ssid: &'b str, passphrase: &'b str) {
        self.config.wifi = Some((ssid, passphrase));
    }

    /// The station interface, as the modem last reported it.
    #[must_use]
    pub fn wifi_state(&self) -> WifiState {
        self.engine.wifi()
    }

    /// A link, as the modem last reported it.
    #[must_use]
    pub fn link_state(&self, link: u8) -> Option<LinkState> {
        self.engine.link(link)
    }

    /// The engine's counters (resets, busy answers, timeouts...).
    #[must_use]
    pub fn stats(&self) -> EngineStats {
        self.engine.stats()
    }

    /// The clock.
    pub fn clock(&self) -> &K {
        &self.clock
    }

    /// Finishes the exchange a cancelled operation left under way.
    ///
    /// # Errors
    /// Only [`Error::Serial`]: the exchange's own result belonged to the
    /// cancelled caller and is dropped.
    pub async fn settle(&mut self) -> Result<(), Error> {
        if self.engine.is_busy() {
            match self.drive(&mut |_| {}).await {
                Err(Error::Serial) => return Err(Error::Serial),
                Err(e) => debug!("esp8266: abandoned exchange ended: {:?}", e),
                Ok(()) => {}
            }
        }
        Ok(())
    }

    /// Runs one command: `write` fills the command line (without `\r\n`),
    /// `on_info` sees its `+...:` answer lines.
    pub(crate) async fn execute(
        &mut self,
        kind: Kind,
        timeout: Duration,
        write: impl FnOnce(&mut CommandLine<COMMAND_LEN>) -> Result<(), crate::command::TooLong>,
        on_info: &mut dyn FnMut(&[u8]),
    ) -> Result<(), Error> {
        self.settle().await?;
        if self.engine.out_of_step() && kind != Kind::Reset {
            self.probe().await?;
        }
        self.exchange(kind, timeout, write, on_info).await
    }

    /// Runs one command as it is, whether or not the answers are in step.
    async fn exchange(
        &mut self,
        kind: Kind,
        timeout: Duration,
        write: impl FnOnce(&mut CommandLine<COMMAND_LEN>) -> Result<(), crate::command::TooLong>,
        on_info: &mut dyn FnMut(&[u8]),
    ) -> Result<(), Error> {
        self.settle().await?;
        let line = self.engine.command_line();
        write(line)?;
        line.finish()?;
        let now = self.clock.now();
        self.engine.start(now, kind, timeout);
        self.drive(on_info).await
    }

    /// A command that answers `OK` or `ERROR`, within the command timeout.
    ///
    /// # Errors
    /// [`Error::Command`] for `ERROR`, [`Error::Timeout`], [`Error::Busy`],
    /// [`Error::ModemReset`], [`Error::Serial`].
    pub async fn command(&mut self, text: &str) -> Result<(), Error> {
        let timeout = self.config.command_timeout;
        self.execute(Kind::Plain, timeout, |l| l.push_str(text), &mut |_| {})
            .await
    }

    /// Like [`command`](Self::command), handing each `+...:` line of the
    /// answer to `on_info`.
    ///
    /// # Errors
    /// As [`command`](Self::command).
    pub async fn query(&mut self, text: &str, on_info: &mut dyn FnMut(&[u8])) -> Result<(), Error> {
        let timeout = self.config.command_timeout;
        self.execute(Kind::Plain, timeout, |l| l.push_str(text), on_info)
            .await
    }

    /// Writes, reads and sleeps until the engine has an outcome.
    async fn drive(&mut self, on_info: &mut dyn FnMut(&[u8])) -> Result<(), Error> {
        let Self {
            serial,
            clock,
            engine,
            rx,
            send,
            ..
        } = self;
        loop {
            if let Some(outcome) = engine.take_outcome() {
                return outcome;
            }
            let now = clock.now();
            let Some(deadline) = engine.poll_at() else {
                return Ok(());
            };
            if now >= deadline {
                engine.handle_timeout(now);
                continue;
            }
            let pending = engine
                .poll_transmit()
                .map(|bytes| (bytes, false))
                .or_else(|| {
                    engine
                        .wants_payload()
                        .and_then(|range| send.get(range))
                        .filter(|bytes| !bytes.is_empty())
                        .map(|bytes| (bytes, true))
                });
            if let Some((bytes, payload)) = pending {
                match select(serial.write(bytes), clock.sleep_until(deadline)).await {
                    Either::First(Ok(n)) => {
                        if payload {
                            engine.payload_transmitted(n);
                        } else {
                            engine.transmitted(clock.now(), n);
                        }
                    }
                    Either::First(Err(_)) => return Err(Error::Serial),
                    Either::Second(()) => engine.handle_timeout(clock.now()),
                }
                continue;
            }
            match select(serial.read(rx), clock.sleep_until(deadline)).await {
                Either::First(Ok(0)) | Either::First(Err(_)) => return Err(Error::Serial),
                Either::First(Ok(n)) => {
                    let bytes = rx.get(..n).unwrap_or_default();
                    engine.feed(clock.now(), bytes, on_info);
                }
                Either::Second(()) => engine.handle_timeout(clock.now()),
            }
        }
    }

    /// Waits for the modem to say something (a `+IPD`, `CLOSED`, ...),
    /// with no deadline. Cancel-safe.
    pub(crate) async fn wait_report(&mut self) -> Result<(), Error> {
        self.settle().await?;
        let n = self.serial.read(self.rx).await.map_err(|_| Error::Serial)?;
        if n == 0 {
            return Err(Error::Serial);
        }
        let now = self.clock.now();
        let bytes = self.rx.get(..n).unwrap_or_default();
        self.engine.feed(now, bytes, &mut |_| {});
        Ok(())
    }

    /// Like [`wait_report`](Self::wait_report), but gives up at `deadline`
    /// (returning `Ok(false)`).
    pub(crate) async fn wait_report_until(&mut self, deadline: Instant) -> Result<bool, Error> {
        self.settle().await?;
        let Self {
            serial, clock, rx, ..
        } = self;
        match select(serial.read(rx), clock.sleep_until(deadline)).await {
            Either::First(Ok(0)) | Either::First(Err(_)) => Err(Error::Serial),
            Either::First(Ok(n)) => {
                let now = self.clock.now();
                let bytes = self.rx.get(..n).unwrap_or_default();
                self.engine.feed(now, bytes, &mut |_| {});
                Ok(true)
            }
            Either::Second(()) => Ok(false),
        }
    }

    /// Takes in what the modem has already said, without waiting for
    /// more, so link states are as fresh as they can be before a command
    /// that depends on them (a server's link id may have been closed and
    /// given to a new connection meanwhile).
    pub(crate) async fn drain_reports(&mut self) -> Result<(), Error> {
        // Bounded: a modem that never stops talking cannot hold us here.
        for _ in 0..16 {
            let now = self.clock.now();
            if !self.wait_report_until(now).await? {
                break;
            }
        }
        Ok(())
    }

    /// Makes sure the modem answers and is set up: probes it if it went
    /// silent, resets it if it does not answer (reset pin, else `AT+RST`),
    /// and sets it up after a reset.
    ///
    /// # Errors
    /// [`Error::Unresponsive`] if even a reset does not bring it back.
    pub async fn ensure_ready(&mut self) -> Result<(), Error> {
        self.settle().await?;
        if self.engine.unresponsive() && self.probe().await.is_err() {
            self.reset().await?;
        }
        if self.engine.needs_init() {
            self.init().await?;
        }
        Ok(())
    }

    /// `AT` until it answers `OK` (three tries); a [`resync`](Self::resync)
    /// instead while a timed-out command may still be answered.
    async fn probe(&mut self) -> Result<(), Error> {
        let mut last = Error::Timeout;
        for _ in 0..3 {
            let answer = if self.engine.out_of_step() {
                self.resync().await
            } else {
                self.exchange(
                    Kind::Probe,
                    PROBE_TIMEOUT,
                    |l| l.push_str("AT"),
                    &mut |_| {},
                )
                .await
            };
            match answer {
                Ok(()) => {
                    self.engine.responsive();
                    return Ok(());
                }
                Err(Error::Serial) => return Err(Error::Serial),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Brings the answers back in step after a command timed out, so a
    /// late answer to it is never taken for a later command's: sets
    /// `AT+CIPRECONNINTV` to a fresh tag and reads it back, dropping every
    /// `OK` and `ERROR` before the tagged line ([`Kind::Sync`]).
    ///
    /// # Errors
    /// [`Error::Timeout`] if the tagged answer does not come in time.
    async fn resync(&mut self) -> Result<(), Error> {
        let tag = self.engine.next_sync_tag();
        let timeout = PROBE_TIMEOUT;
        info!("esp8266: resynchronising the answers (tag {})", tag);
        let set = self
            .exchange(
                Kind::Plain,
                timeout,
                |l| {
                    l.push_str("AT+CIPRECONNINTV=")?;
                    l.push_u32(u32::from(tag))
                },
                &mut |_| {},
            )
            .await;
        // Its result may be the late answer: the tagged query tells.
        if let Err(Error::Serial) = set {
            return Err(Error::Serial);
        }
        self.exchange(
            Kind::Sync { tag },
            timeout,
            |l| l.push_str("AT+CIPRECONNINTV?"),
            &mut |_| {},
        )
        .await
    }

    /// Restarts the modem: the reset pin if there is one, else `AT+RST`;
    /// waits for `ready`. Every link is gone afterwards.
    ///
    /// # Errors
    /// [`Error::Unresponsive`] if no `ready` came.
    pub async fn reset(&mut self) -> Result<(), Error> {
        self.settle().await?;
        self.engine.invalidate();
        self.send_len = 0;
        self.stale_links = 0;
        self.access_point = false;
        if let Some(pin) = &mut self.reset_pin {
            info!("esp8266: resetting the modem with its reset pin");
            let _ = pin.set_low();
            let now = self.clock.now();
            self.clock
                .sleep_until(now + Duration::from_millis(20))
                .await;
            let _ = pin.set_high();
            let now = self.clock.now();
            self.engine
                .start(now, Kind::WaitReady, Duration::from_secs(5));
            if self.drive(&mut |_| {}).await.is_ok() {
                return Ok(());
            }
        }
        info!("esp8266: resetting the modem with AT+RST");
        match self
            .execute(
                Kind::Reset,
                Duration::from_secs(5),
                |l| l.push_str("AT+RST"),
                &mut |_| {},
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(Error::Serial) => Err(Error::Serial),
            Err(e) => {
                warn!("esp8266: reset failed: {:?}", e);
                Err(Error::Unresponsive)
            }
        }
    }

    /// Sets the modem up: echo off, error codes on, multiple connections,
    /// passive receive, sender information, station (or station + AP) mode.
    async fn init(&mut self) -> Result<(), Error> {
        if self.probe().await.is_err() {
            self.reset().await?;
            self.probe().await.map_err(|_| Error::Unresponsive)?;
        }
        self.command("ATE0").await?;
        // Older firmware has no AT+SYSLOG: error codes are a bonus.
        if let Err(e) = self.command("AT+SYSLOG=1").await {
            debug!("esp8266: no error codes ({:?})", e);
        }
        if self.command("AT+CIPMUX=1").await.is_err() {
            // Connections or a server left over from before our time.
            let _ = self.command("AT+CIPSERVER=0,1").await;
            let _ = self.command("AT+CIPCLOSE=5").await;
            self.command("AT+CIPMUX=1").await?;
        }
        self.command("AT+CIPRECVMODE=1").await?;
        self.command("AT+CIPDINFO=1").await?;
        self.engine.initialised();
        let mode = if self.access_point {
            "AT+CWMODE=3"
        } else {
            "AT+CWMODE=1"
        };
        self.command(mode).await?;
        self.stale_links = 0;
        info!("esp8266: modem ready");
        Ok(())
    }

    /// Joins `ssid` with `passphrase` (`AT+CWJAP`).
    ///
    /// # Errors
    /// [`Error::Join`] with the modem's reason (wrong password, no access
    /// point, timeout), or the usual command errors.
    pub async fn join(&mut self, ssid: &str, passphrase: &str) -> Result<(), Error> {
        self.ensure_ready().await?;
        info!("esp8266: joining {}", ssid);
        let timeout = self.config.join_timeout;
        self.execute(
            Kind::Join,
            timeout,
            |l| {
                l.push_str("AT+CWJAP=")?;
                l.push_quoted(ssid)?;
                l.push_str(",")?;
                l.push_quoted(passphrase)
            },
            &mut |_| {},
        )
        .await?;
        if !self.engine.wifi().got_ip {
            // OK means "IPv4 ready" (ESP-AT's notes on AT+CWJAP); the
            // reports may trail it.
            let deadline = self.clock.now() + self.config.command_timeout;
            while !self.engine.wifi().got_ip {
                if !self.wait_report_until(deadline).await? {
                    return Err(Error::WifiDown);
                }
            }
        }
        Ok(())
    }

    /// Joins the configured network unless the station is up already.
    pub(crate) async fn ensure_wifi(&mut self) -> Result<(), Error> {
        self.ensure_ready().await?;
        if self.engine.wifi().got_ip {
            return Ok(());
        }
        match self.config.wifi {
            Some((ssid, passphrase)) => self.join(ssid, passphrase).await,
            None => {
                // The modem may still be reconnecting on its own with the
                // credentials it saved.
                let deadline = self.clock.now() + self.config.join_timeout;
                while !self.engine.wifi().got_ip {
                    if !self.wait_report_until(deadline).await? {
                        return Err(Error::WifiDown);
                    }
                }
                Ok(())
            }
        }
    }

    /// Scans for networks (`AT+CWLAP`), strongest first, into `out`
    /// (cleared); networks beyond its capacity are left out.
    ///
    /// # Errors
    /// The usual command errors.
    pub async fn scan<const N: usize>(
        &mut self,
        out: &mut Vec<ScannedNetwork, N>,
    ) -> Result<(), Error> {
        self.ensure_ready().await?;
        out.clear();
        let mut on_info = |line: &[u8]| {
            if let Some(network) = parse_cwlap(line) {
                insert_by_strength(out, network);
            }
        };
        self.execute(
            Kind::Plain,
            Duration::from_secs(15),
            |l| l.push_str("AT+CWLAP"),
            &mut on_info,
        )
        .await
    }

    /// Turns on the modem's SNTP client with `server`, times in UTC
    /// (`AT+CIPSNTPCFG=1,0,"<server>"`).
    ///
    /// # Errors
    /// The usual command errors; [`Error::InvalidArgument`] for a server
    /// name with quotes or commas.
    pub async fn configure_sntp(&mut self, server: &str) -> Result<(), Error> {
        check_name(server)?;
        self.ensure_ready().await?;
        let timeout = self.config.command_timeout;
        self.execute(
            Kind::Plain,
            timeout,
            |l| {
                l.push_str("AT+CIPSNTPCFG=1,0,")?;
                l.push_quoted(server)
            },
            &mut |_| {},
        )
        .await
    }

    /// The modem's SNTP time (`AT+CIPSNTPTIME?`) in seconds since the Unix
    /// epoch, `None` while it has not synchronised (it reports 1970).
    ///
    /// # Errors
    /// The usual command errors; [`Error::Protocol`] for an answer that is
    /// not an `asctime` date.
    pub async fn sntp_time(&mut self) -> Result<Option<u64>, Error> {
        self.ensure_ready().await?;
        let mut time: Option<Option<u64>> = None;
        self.query("AT+CIPSNTPTIME?", &mut |line| {
            if let Some(text) = line.strip_prefix(b"+CIPSNTPTIME:") {
                time = Some(parse_asctime(text));
            }
        })
        .await?;
        match time {
            Some(Some(secs)) if secs >= 1_577_836_800 => Ok(Some(secs)), // 2020 or later
            Some(Some(_)) => Ok(None),
            _ => Err(Error::Protocol),
        }
    }

    /// Closes `link` (`AT+CIPCLOSE=<id>`), ignoring "not open".
    ///
    /// # Errors
    /// Timeouts and serial errors.
    pub async fn close_link(&mut self, link: u8) -> Result<(), Error> {
        let timeout = self.config.command_timeout;
        let result = self
            .execute(
                Kind::Close { link },
                timeout,
                |l| {
                    l.push_str("AT+CIPCLOSE=")?;
                    l.push_u32(u32::from(link))
                },
                &mut |_| {},
            )
            .await;
        // `OK` and `ERROR` forgot the link in the engine, in stream order
        // (a new connection may already have taken the id).
        match result {
            Ok(()) | Err(Error::Command { .. }) => {
                self.stale_links &= !(1u8 << link);
                Ok(())
            }
            Err(e) => {
                // No answer: it may still be open; the next connect closes
                // it first.
                self.engine.forget_link(link);
                self.stale_links |= 1u8 << link;
                Err(e)
            }
        }
    }

    /// Asks the modem how many bytes wait on each link (`AT+CIPRECVLEN?`).
    /// The engine records the answer where it stands in the stream, so a
    /// `+IPD` that follows it is not overwritten by the older count.
    pub(crate) async fn refresh_pending(&mut self) -> Result<(), Error> {
        self.command("AT+CIPRECVLEN?").await
    }

    /// Reads up to `len` buffered bytes of `link` into the receive buffer
    /// (`AT+CIPRECVDATA`).
    pub(crate) async fn receive(&mut self, link: u8, len: usize) -> Result<(), Error> {
        let len = len.min(self.engine.receive_capacity());
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        let timeout = self.config.command_timeout;
        let result = self
            .execute(
                Kind::Receive { link },
                timeout,
                |l| {
                    l.push_str("AT+CIPRECVDATA=")?;
                    l.push_u32(u32::from(link))?;
                    l.push_str(",")?;
                    l.push_u32(len)
                },
                &mut |_| {},
            )
            .await;
        // An empty answer or `ERROR` (an SSL link whose encrypted length
        // outran its data) cleared `pending` in the engine, in stream order.
        match result {
            Err(Error::Command { .. }) => Ok(()),
            other => other,
        }
    }

    /// Sends the gathered bytes on `link` (`AT+CIPSEND`), optionally to a
    /// datagram's `remote`.
    pub(crate) async fn send_gathered(
        &mut self,
        link: u8,
        remote: Option<crate::parse::Remote>,
    ) -> Result<(), Error> {
        let len = self.send_len;
        if len == 0 {
            return Ok(());
        }
        // 5 s, plus 1 ms per byte for slow links (115200 baud moves ~11 bytes/ms).
        let timeout = self
            .config
            .command_timeout
            .saturating_add(Duration::from_millis(u64::try_from(len).unwrap_or(0)));
        let result = self
            .execute(
                Kind::Send { link, len },
                timeout,
                |l| {
                    l.push_str("AT+CIPSEND=")?;
                    l.push_u32(u32::from(link))?;
                    l.push_str(",")?;
                    l.push_u32(u32::try_from(len).unwrap_or(u32::MAX))?;
                    if let Some(remote) = remote {
                        let mut address = CommandLine::<16>::new();
                        let [a, b, c, d] = remote.ip;
                        for (index, octet) in [a, b, c, d].into_iter().enumerate() {
                            if index > 0 {
                                address.push_str(".")?;
                            }
                            address.push_u32(u32::from(octet))?;
                        }
                        l.push_str(",\"")?;
                        l.push_str(core::str::from_utf8(address.as_bytes()).unwrap_or("0.0.0.0"))?;
                        l.push_str("\",")?;
                        l.push_u32(u32::from(remote.port))?;
                    }
                    Ok(())
                },
                &mut |_| {},
            )
            .await;
        self.send_len = 0;
        result
    }
}

/// Refuses names ESP-AT cannot carry in a quoted parameter.
pub(crate) fn check_name(name: &str) -> Result<(), Error> {
    if name.is_empty()
        || name
            .bytes()
            .any(|b| b <= b' ' || b == b'"' || b == b',' || b == b'\\' || b == 0x7f)
    {
        return Err(Error::InvalidArgument);
    }
    Ok(())
}

/// One `+CWLAP:(<ecn>,"<ssid>",<rssi>,...)` line.
pub(crate) fn parse_cwlap(line: &[u8]) -> Option<ScannedNetwork> {
    let rest = line.strip_prefix(b"+CWLAP:")?;
    let rest = rest
        .strip_prefix(b"(")
        .and_then(|r| r.strip_suffix(b")"))
        .unwrap_or(rest);
    let mut fields = Fields::new(rest);
    let ecn = parse_u32(fields.next()?)?;
    let ssid = unquote(fields.next()?)?;
    let rssi = parse_i32(fields.next()?)?;
    let mut name = [0u8; 32];
    let len = unescape_into(ssid, &mut name)?;
    let name = core::str::from_utf8(name.get(..len)?).ok()?;
    if name.is_empty() {
        return None; // Hidden network.
    }
    Some(ScannedNetwork {
        ssid: String::try_from(name).ok()?,
        rssi: i8::try_from(rssi.clamp(-128, 127)).ok()?,
        secured: ecn != 0,
    })
}

/// Keeps `out` sorted by signal, strongest first, without duplicates.
fn insert_by_strength<const N: usize>(out: &mut Vec<ScannedNetwork, N>, network: ScannedNetwork) {
    if let Some(existing) = out.iter_mut().find(|n| n.ssid == network.ssid) {
        if network.rssi > existing.rssi {
            *existing = network;
        }
    } else if out.push(network.clone()).is_err() {
        // Full: replace the weakest if this one is stronger.
        if let Some(weakest) = out.iter_mut().min_by_key(|n| n.rssi)
            && weakest.rssi < network.rssi
        {
            *weakest = network;
        }
    }
    out.sort_unstable_by(|a, b| b.rssi.cmp(&a.rssi).then_with(|| a.ssid.cmp(&b.ssid)));
}

/// `Www Mmm dd hh:mm:ss yyyy` (C `asctime`) to seconds since the epoch.
pub(crate) fn parse_asctime(text: &[u8]) -> Option<u64> {
    let mut words = text.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let _weekday = words.next()?;
    let month = match words.next()? {
        b"Jan" => 1,
        b"Feb" => 2,
        b"Mar" => 3,
        b"Apr" => 4,
        b"May" => 5,
        b"Jun" => 6,
        b"Jul" => 7,
        b"Aug" => 8,
        b"Sep" => 9,
        b"Oct" => 10,
        b"Nov" => 11,
        b"Dec" => 12,
        _ => return None,
    };
    let day = parse_u32(words.next()?)?;
    let mut clock = words.next()?.split(|&b| b == b':');
    let hour = parse_u32(clock.next()?)?;
    let minute = parse_u32(clock.next()?)?;
    let second = parse_u32(clock.next()?)?;
    let year = parse_u32(words.next()?)?;
    if !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 || year < 1970 {
        return None;
    }
    let days = days_from_civil(i64::from(year), month, i64::from(day));
    let secs = days
        .checked_mul(86_400)?
        .checked_add(i64::from(hour * 3600 + minute * 60 + second))?;
    u64::try_from(secs).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asctime() {
        assert_eq!(parse_asctime(b"Thu Jan  1 00:00:00 1970"), Some(0));
        assert_eq!(
            parse_asctime(b"Mon Dec 12 02:33:32 2016"),
            Some(1_481_510_012)
        );
        assert_eq!(
            parse_asctime(b"Sat Feb 29 12:00:00 2020"),
            Some(1_582_977_600)
        );
        assert_eq!(parse_asctime(b"Mon Foo 12 02:33:32 2016"), None);
        assert_eq!(parse_asctime(b"Mon Dec 12 25:33:32 2016"), None);
        assert_eq!(parse_asctime(b""), None);
    }

    #[test]
    fn cwlap_lines() {
        let home =
            parse_cwlap(b"+CWLAP:(3,\"Home\",-45,\"aa:bb:cc:dd:ee:ff\",6,-1,-1,4,4,7,0)").unwrap();
        assert_eq!(
            (home.ssid.as_str(), home.rssi, home.secured),
            ("Home", -45, true)
        );
        let cafe = parse_cwlap(b"+CWLAP:0,\"Caf\\,e\",-70,\"aa:bb:cc:dd:ee:ff\",1").unwrap();
        assert_eq!((cafe.ssid.as_str(), cafe.secured), ("Caf,e", false));
        assert_eq!(parse_cwlap(b"+CWLAP:(3,\"\",-45,\"x\",6)"), None);
        assert_eq!(parse_cwlap(b"+CWLAP:(x)"), None);
        let mut out: Vec<ScannedNetwork, 2> = Vec::new();
        for (ssid, rssi) in [("a", -80), ("b", -40), ("c", -60), ("b", -90)] {
            insert_by_strength(
                &mut out,
                ScannedNetwork {
                    ssid: String::try_from(ssid).unwrap(),
                    rssi,
                    secured: true,
                },
            );
        }
        let names: Vec<&str, 2> = out.iter().map(|n| n.ssid.as_str()).collect();
        assert_eq!(names.as_slice(), ["b", "c"]);
    }

    #[test]
    fn names_with_quotes_are_refused() {
        assert_eq!(check_name("relay.example.com"), Ok(()));
        assert_eq!(check_name("a\"b"), Err(Error::InvalidArgument));
        assert_eq!(check_name("a,b"), Err(Error::InvalidArgument));
        assert_eq!(check_name(""), Err(Error::InvalidArgument));
    }
}
