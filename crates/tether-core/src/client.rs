//! The device client: what firmware calls every day. Connect, keep
//! connected, publish readings, answer commands.
//!
//! ```text
//!  application ── publish(channel, &T) ──► Client ◄── state(), stats()
//!                                            │ (shared, no await)
//!                                            ▼
//!                    Runner::run ── Session (sans-IO: seq, outbox, acks,
//!                       │            keepalive, backoff)
//!                       ├─ Connector ──► TCP / TLS byte stream
//!                       ├─ ws::WebSocket ──► RFC 6455 frames
//!                       └─ tether-proto ──► Hello/Welcome, Publish/Ack,
//!                                           Command/CommandAck
//! ```
//!
//! Two halves, in the embassy style (`Stack` + `Runner`): [`Client`] is the
//! shared handle the application publishes through (it never blocks: a full
//! outbox applies the configured policy), and [`Runner`] owns the connection
//! and runs forever in its own task, reconnecting with backoff and resending
//! every unacknowledged message in order after each reconnect. Downlink
//! commands reach the application through a [`CommandHandler`] the runner
//! calls; its verdict goes back to the server as a `CommandAck`.
//!
//! Nothing allocates: the outbox and every buffer have sizes fixed at compile
//! time. `tether-host` runs the same client on tokio; the
//! `examples/esp32c3-minimal` firmware runs it on embassy-net.
//!
//! Cancellation: the runner waits for a server message, a timer or a
//! publish at the same time, and the branch that loses is cancelled. Only
//! the pure read ([`ws::WebSocket::read_message`], cancel-safe) is ever
//! raced; every write (pongs to server pings included: the session queues
//! them as [`Transmit::Pong`]) happens in a separate step that nothing
//! cancels except its send timeout, and a send timeout drops the link. So
//! no frame is ever cut short on a link that stays up.

//! # Example
//!
//! The whole device side, for any board: the connector and clock come from
//! the platform (`tether-host` on a PC, embassy-net on an ESP32), the RNGs
//! from hardware.
//!
//! ```no_run
//! use embassy_sync::blocking_mutex::raw::NoopRawMutex;
//! use rand_core::RngCore;
//! use tether_core::client::{Buffers, Client, ClientConfig, CommandResult, Runner};
//! use tether_core::connector::Connector;
//! use tether_core::outbox::RamOutbox;
//! use tether_core::time::{Clock, Duration};
//! use tether_proto::{Command, CommandStatus};
//!
//! #[derive(serde::Serialize)]
//! struct Reading {
//!     counter: u32,
//!     millivolts: u16,
//! }
//!
//! async fn device<C: Connector, K: Clock, R: RngCore, W: RngCore>(
//!     connector: C,
//!     clock: K,
//!     rng: R,
//!     mask_rng: W,
//! ) {
//!     let config = ClientConfig::new("wss://relay.example.com/device", "kitchen-1", "1.0.0")
//!         .with_authorization("Bearer device-token");
//!     let client: Client<NoopRawMutex, RamOutbox<4096>, R, &K> =
//!         Client::new(&config, RamOutbox::new(), rng, &clock).unwrap();
//!     let mut buffers = Buffers::<1024, 512, 512>::new();
//!     let start = clock.now();
//!     let mut runner =
//!         Runner::new(&client, config, connector, &clock, mask_rng, &mut buffers).unwrap();
//!
//!     // Commands: switch the LED and report its state, refuse anything else.
//!     #[derive(serde::Serialize)]
//!     struct Led {
//!         on: bool,
//!     }
//!     let mut on_command = |command: &Command<'_>, result: &mut CommandResult<'_>| {
//!         match command.channel {
//!             "led" => {
//!                 let on = command.payload.as_str() == Some("true");
//!                 // `{"on":true}` goes back in the CommandAck.
//!                 match result.set(&Led { on }) {
//!                     Ok(()) => CommandStatus::Ok,
//!                     Err(_) => CommandStatus::Failed,
//!                 }
//!             }
//!             _ => CommandStatus::Unsupported,
//!         }
//!     };
//!     let publish_every_second = async {
//!         for counter in 1.. {
//!             // Never blocks: a full outbox is an error (or drops the oldest).
//!             let _ = client.publish("power/battery", &Reading { counter, millivolts: 3_712 });
//!             clock.sleep_until(start + Duration::from_secs(u64::from(counter))).await;
//!         }
//!     };
//!     embassy_futures::join::join(runner.run(&mut on_command), publish_every_second).await;
//! }
//! ```

use core::cell::RefCell;
use core::fmt;

use embassy_futures::select::{Either, Either3, select, select3};
use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::blocking_mutex::raw::RawMutex;
use embassy_sync::signal::Signal;
use rand_core::RngCore;
use serde::Serialize;
use tether_proto::{
    Command, CommandAck, CommandStatus, DeviceToServer, Hello, MAX_CHANNEL_LEN, MAX_PAYLOAD_LEN,
    Payload, Publish, ServerToDevice, validate_channel, validate_device_id,
};

use crate::connector::Connector;
use crate::outbox::{Outbox, Timestamp};
use crate::session::{
    ConnectionState, LinkError, MAX_COMMAND_RESULT_LEN, PublishError, Session, SessionConfig,
    SessionConfigError, SessionStats, Transmit,
};
use crate::time::{Clock, Duration, Instant};
use crate::url::{ServerUrl, UrlError};
use crate::ws;

/// Largest JSON payload [`Client::publish`] serializes by default.
pub const DEFAULT_PAYLOAD_CAPACITY: usize = 256;

/// Bytes of a `Publish` message around its payload, at most: version and
/// kind, seq, channel, time, payload length (postcard varints).
const PUBLISH_OVERHEAD: usize = 2 + 5 + 1 + MAX_CHANNEL_LEN + 1 + 10 + 3;

/// Bytes of the largest `Hello`.
const HELLO_LEN: usize = 2 + 1 + tether_proto::MAX_DEVICE_ID_LEN + 1 + 32 + 10 + 5 + 5;

/// `Hello.max_downlink_len` for a receive buffer of `rx` bytes: the largest
/// message that fits in it after the largest WebSocket frame header, so the
/// server never sends a command the buffer cannot hold (1010 for the
/// default 1024).
#[must_use]
pub const fn max_downlink_len(rx: usize) -> u32 {
    let len = rx.saturating_sub(ws::MAX_HEADER_LEN);
    if len > u32::MAX as usize {
        u32::MAX
    } else {
        len as u32
    }
}

/// Bytes of the largest `CommandAck`: version and kind, id, status, result
/// length and result.
const COMMAND_ACK_LEN: usize = 2 + 5 + 1 + 2 + MAX_COMMAND_RESULT_LEN;

/// The smallest message buffer a [`Runner`] needs for payloads of up to
/// `payload` bytes.
#[must_use]
pub const fn message_buffer_len(payload: usize) -> usize {
    let publish = PUBLISH_OVERHEAD + payload;
    let control = if COMMAND_ACK_LEN > HELLO_LEN {
        COMMAND_ACK_LEN
    } else {
        HELLO_LEN
    };
    if publish > control { publish } else { control }
}

/// Settings of a device client. Builder-lite: [`ClientConfig::new`] takes
/// what has no default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ClientConfig<'a> {
    url: &'a str,
    device_id: &'a str,
    firmware_version: &'a str,
    authorization: Option<&'a str>,
    session: SessionConfig,
    send_timeout: Duration,
}

impl<'a> ClientConfig<'a> {
    /// Connect to `url` (`ws://` or `wss://`) as `device_id`, reporting
    /// `firmware_version`. Defaults: no `Authorization` header, the default
    /// [`SessionConfig`], 10 s to send a message.
    #[must_use]
    pub const fn new(url: &'a str, device_id: &'a str, firmware_version: &'a str) -> Self {
        Self {
            url,
            device_id,
            firmware_version,
            authorization: None,
            session: SessionConfig::new(),
            send_timeout: Duration::from_secs(10),
        }
    }

    /// The `Authorization` header of the WebSocket upgrade, e.g.
    /// `Bearer <device token>`.
    #[must_use]
    pub const fn with_authorization(mut self, value: &'a str) -> Self {
        self.authorization = Some(value);
        self
    }

    /// Session settings: backoff, keepalive, in-flight window, full policy.
    #[must_use]
    pub const fn with_session(mut self, session: SessionConfig) -> Self {
        self.session = session;
        self
    }

    /// Longest time one message may take to go out before the link counts
    /// as dead.
    #[must_use]
    pub const fn with_send_timeout(mut self, timeout: Duration) -> Self {
        self.send_timeout = timeout;
        self
    }

    /// The server URL.
    #[must_use]
    pub const fn url(&self) -> &'a str {
        self.url
    }

    /// The device id sent in `Hello`.
    #[must_use]
    pub const fn device_id(&self) -> &'a str {
        self.device_id
    }

    /// The firmware version sent in `Hello`.
    #[must_use]
    pub const fn firmware_version(&self) -> &'a str {
        self.firmware_version
    }

    /// Session settings.
    #[must_use]
    pub const fn session(&self) -> &SessionConfig {
        &self.session
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// The first rule the settings break.
    pub fn validate(&self) -> Result<ServerUrl<'a>, ClientConfigError> {
        let url = ServerUrl::parse(self.url).map_err(ClientConfigError::Url)?;
        validate_device_id(self.device_id).map_err(|_| ClientConfigError::DeviceId)?;
        let version = self.firmware_version;
        if version.is_empty()
            || version.len() > tether_proto::MAX_FIRMWARE_VERSION_LEN
            || !version
                .bytes()
                .all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\')
        {
            return Err(ClientConfigError::FirmwareVersion);
        }
        self.session
            .validate()
            .map_err(ClientConfigError::Session)?;
        if self.send_timeout.as_millis() == 0 {
            return Err(ClientConfigError::ZeroSendTimeout);
        }
        Ok(url)
    }
}

/// A [`ClientConfig`] (or buffer) that cannot work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ClientConfigError {
    /// The URL is not a usable `ws://` or `wss://` URL.
    Url(UrlError),
    /// The device id breaks the protocol's rules (1 to 64 of `A-Z a-z 0-9 _ - . :`).
    DeviceId,
    /// The firmware version is not 1 to 32 printable ASCII characters
    /// without `"` and `\`.
    FirmwareVersion,
    /// The session settings are invalid.
    Session(SessionConfigError),
    /// The send timeout is zero.
    ZeroSendTimeout,
    /// The message buffer is smaller than [`message_buffer_len`] of the
    /// client's payload capacity.
    MessageBufferTooSmall,
    /// The receive or transmit buffer is too small for a WebSocket frame
    /// (at least 128 bytes each).
    FrameBufferTooSmall,
}

impl fmt::Display for ClientConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Url(e) => write!(f, "invalid server URL: {e}"),
            Self::DeviceId => f.write_str("invalid device id"),
            Self::FirmwareVersion => f.write_str("invalid firmware version"),
            Self::Session(e) => write!(f, "invalid session settings: {e}"),
            Self::ZeroSendTimeout => f.write_str("send timeout must not be zero"),
            Self::MessageBufferTooSmall => f.write_str("message buffer too small"),
            Self::FrameBufferTooSmall => f.write_str("frame buffers too small"),
        }
    }
}

impl core::error::Error for ClientConfigError {}

/// Counters and outbox depth, for the application and its logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ClientStats {
    /// Session counters.
    pub session: SessionStats,
    /// Messages waiting for acknowledgement.
    pub outbox_len: usize,
    /// Bytes they use.
    pub outbox_bytes: usize,
    /// Bytes the outbox holds at most.
    pub outbox_capacity: usize,
    /// Messages dropped unacknowledged by [`FullPolicy::DropOldest`](crate::outbox::FullPolicy::DropOldest).
    pub dropped: u32,
}

/// The application's side of a device connection: publish, observe. Shared
/// by reference between the application and its [`Runner`]; every method
/// returns at once.
///
/// `M` is the embassy-sync mutex kind (`NoopRawMutex` when everything runs
/// on one executor, `CriticalSectionRawMutex` across interrupts or cores),
/// `O` the outbox, `R` the random source of boot ids and backoff jitter,
/// `K` the clock publishes are timestamped with (the runner's clock, or a
/// reference to it), `PAYLOAD` the largest JSON payload [`Client::publish`]
/// serializes (it lives on the caller's stack during the call).
pub struct Client<M: RawMutex, O, R, K, const PAYLOAD: usize = DEFAULT_PAYLOAD_CAPACITY> {
    session: Mutex<M, RefCell<Session<O, R>>>,
    wake: Signal<M, ()>,
    clock: K,
}

impl<M: RawMutex, O: Outbox, R: RngCore, K: Clock, const PAYLOAD: usize> fmt::Debug
    for Client<M, O, R, K, PAYLOAD>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("state", &self.state())
            .field("stats", &self.stats())
            .finish()
    }
}

impl<M: RawMutex, O: Outbox, R: RngCore, K: Clock, const PAYLOAD: usize>
    Client<M, O, R, K, PAYLOAD>
{
    /// A client that starts connecting now, storing unacknowledged messages
    /// in `outbox` and timestamping them with `clock`. `rng` draws this
    /// boot's id and the backoff jitter: on a device, the hardware RNG.
    ///
    /// # Errors
    /// The configuration is invalid.
    pub fn new(
        config: &ClientConfig<'_>,
        outbox: O,
        rng: R,
        clock: K,
    ) -> Result<Self, ClientConfigError> {
        config.validate()?;
        let session = Session::new(config.session, outbox, rng, clock.now())
            .map_err(ClientConfigError::Session)?;
        Ok(Self {
            session: Mutex::new(RefCell::new(session)),
            wake: Signal::new(),
            clock,
        })
    }

    /// Serializes `value` as JSON and queues it on `channel`, timestamped
    /// with the current time (Unix ms once a `Welcome` told the server's
    /// clock; see [session timestamps](crate::session#timestamps)). Returns
    /// its sequence number. Never blocks: when the outbox is full the
    /// session's [`FullPolicy`](crate::outbox::FullPolicy) applies.
    ///
    /// # Errors
    /// [`PublishError::Encode`] if `value` does not serialize into `PAYLOAD`
    /// bytes, [`PublishError::InvalidChannel`] for a channel name the
    /// protocol refuses, the rest as [`Session::publish`].
    pub fn publish<T: Serialize + ?Sized>(
        &self,
        channel: &str,
        value: &T,
    ) -> Result<u32, PublishError> {
        let mut buffer = [0u8; PAYLOAD];
        let len =
            serde_json_core::to_slice(value, &mut buffer).map_err(|_| PublishError::Encode)?;
        self.publish_encoded(channel, buffer.get(..len).unwrap_or_default())
    }

    /// Queues `json`, produced by serde-json-core's serializer (always one
    /// valid JSON value, so the server never refuses it and it can never
    /// block the outbox).
    fn publish_encoded(&self, channel: &str, json: &[u8]) -> Result<u32, PublishError> {
        validate_channel(channel).map_err(|_| PublishError::InvalidChannel)?;
        if json.len() > MAX_PAYLOAD_LEN {
            return Err(PublishError::TooLarge);
        }
        let now = self.clock.now();
        let seq = self.with_session(|session| session.publish(now, channel, json))?;
        self.wake.signal(());
        Ok(seq)
    }

    /// Where the connection stands (for a status LED).
    #[must_use]
    pub fn state(&self) -> ConnectionState {
        self.with_session(|session| session.state())
    }

    /// Why the last link went down, if one did.
    #[must_use]
    pub fn last_error(&self) -> Option<LinkError> {
        self.with_session(|session| session.last_error())
    }

    /// This boot's random id.
    #[must_use]
    pub fn boot_id(&self) -> u64 {
        self.with_session(|session| session.boot_id())
    }

    /// Counters and outbox depth.
    #[must_use]
    pub fn stats(&self) -> ClientStats {
        self.with_session(|session| {
            let outbox = session.outbox();
            ClientStats {
                session: session.stats(),
                outbox_len: outbox.len(),
                outbox_bytes: outbox.used_bytes(),
                outbox_capacity: outbox.capacity_bytes(),
                dropped: outbox.dropped(),
            }
        })
    }

    /// Connects again right away after the backoff gave up (or cuts a
    /// backoff short).
    pub fn retry_now(&self, now: Instant) {
        self.with_session(|session| session.retry_now(now));
        self.wake.signal(());
    }

    fn with_session<T>(&self, f: impl FnOnce(&mut Session<O, R>) -> T) -> T {
        // `f` never calls back into the client, so the cell is never
        // borrowed twice.
        self.session.lock(|cell| f(&mut cell.borrow_mut()))
    }
}

/// What the application does with a downlink command. The runner calls it
/// as the command arrives and sends the returned status back in a
/// `CommandAck`, with the JSON result the handler put in `result` (`null`
/// if it put none); keep it short (queue long work elsewhere and answer
/// `Ok`).
///
/// Closures `|command: &Command<'_>, result: &mut CommandResult<'_>| status`
/// are handlers.
pub trait CommandHandler {
    /// Handles `command`; may [`set`](CommandResult::set) a result.
    fn handle(&mut self, command: &Command<'_>, result: &mut CommandResult<'_>) -> CommandStatus;
}

impl<F> CommandHandler for F
where
    F: FnMut(&Command<'_>, &mut CommandResult<'_>) -> CommandStatus,
{
    fn handle(&mut self, command: &Command<'_>, result: &mut CommandResult<'_>) -> CommandStatus {
        self(command, result)
    }
}

/// A [`CommandHandler`] for devices that take no commands: answers
/// [`CommandStatus::Unsupported`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCommands;

impl CommandHandler for NoCommands {
    fn handle(&mut self, _command: &Command<'_>, _result: &mut CommandResult<'_>) -> CommandStatus {
        CommandStatus::Unsupported
    }
}

/// The JSON result of one command, in a bounded buffer the runner provides
/// ([`MAX_COMMAND_RESULT_LEN`] bytes): no allocation.
#[derive(Debug)]
pub struct CommandResult<'b> {
    buffer: &'b mut [u8],
    len: usize,
}

impl<'b> CommandResult<'b> {
    /// An empty result writing into `buffer`.
    #[must_use]
    pub fn new(buffer: &'b mut [u8]) -> Self {
        Self { buffer, len: 0 }
    }

    /// Serializes `value` as JSON (serde-json-core) as the result,
    /// replacing any earlier one.
    ///
    /// # Errors
    /// [`ResultTooLarge`] if it does not fit (or does not serialize); the
    /// result is then empty (`null`).
    pub fn set<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ResultTooLarge> {
        self.len = 0;
        self.len = serde_json_core::to_slice(value, self.buffer).map_err(|_| ResultTooLarge)?;
        Ok(())
    }

    /// Removes the result (`null` goes back).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// The JSON set, if any.
    #[must_use]
    pub fn json(&self) -> Option<&[u8]> {
        self.buffer.get(..self.len).filter(|json| !json.is_empty())
    }

    /// The longest JSON that fits.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.buffer.len()
    }
}

/// A command result does not fit its buffer (at most
/// [`MAX_COMMAND_RESULT_LEN`] bytes of JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ResultTooLarge;

impl fmt::Display for ResultTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("command result too large")
    }
}

impl core::error::Error for ResultTooLarge {}

/// The runner's buffers, owned by the caller (a `static` on a device):
///
/// - `RX`: incoming WebSocket frames; bounds the largest command received.
/// - `TX`: one outgoing frame; longer messages go out as fragments.
/// - `MESSAGE`: one encoded protocol message; at least
///   [`message_buffer_len`]`(PAYLOAD)`.
#[derive(Debug)]
pub struct Buffers<const RX: usize = 1024, const TX: usize = 512, const MESSAGE: usize = 512> {
    rx: [u8; RX],
    tx: [u8; TX],
    message: [u8; MESSAGE],
}

impl<const RX: usize, const TX: usize, const MESSAGE: usize> Default for Buffers<RX, TX, MESSAGE> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const RX: usize, const TX: usize, const MESSAGE: usize> Buffers<RX, TX, MESSAGE> {
    /// Zeroed buffers.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            rx: [0; RX],
            tx: [0; TX],
            message: [0; MESSAGE],
        }
    }
}

/// Owns the connection: connects, handshakes, says `Hello`, moves messages
/// and acknowledgements, keeps the link alive and reconnects. Run
/// [`Runner::run`] in a task of its own; it never returns.
pub struct Runner<'a, M: RawMutex, O, R, KC, C, K, W, const PAYLOAD: usize> {
    client: &'a Client<M, O, R, KC, PAYLOAD>,
    config: ClientConfig<'a>,
    url: ServerUrl<'a>,
    connector: C,
    clock: K,
    mask_rng: W,
    rx: &'a mut [u8],
    tx: &'a mut [u8],
    message: &'a mut [u8],
}

impl<M: RawMutex, O, R, KC, C, K, W, const PAYLOAD: usize> fmt::Debug
    for Runner<'_, M, O, R, KC, C, K, W, PAYLOAD>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runner")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// What the runner sends for one [`Transmit`].
enum Outgoing {
    /// A protocol message of this length in the message buffer.
    Binary(usize),
    /// A WebSocket ping with this nonce.
    Ping(u32),
    /// A WebSocket pong with this many payload bytes in the message buffer.
    Pong(usize),
}

impl<'a, M, O, R, KC, C, K, W, const PAYLOAD: usize> Runner<'a, M, O, R, KC, C, K, W, PAYLOAD>
where
    M: RawMutex,
    O: Outbox,
    R: RngCore,
    KC: Clock,
    C: Connector,
    K: Clock,
    W: RngCore,
{
    /// A runner for `client`, connecting with `connector`, timing with
    /// `clock`, drawing WebSocket masking keys from `mask_rng` (unpredictable:
    /// the hardware RNG on a device), working in `buffers`.
    ///
    /// # Errors
    /// The configuration is invalid or the buffers are too small.
    pub fn new<const RX: usize, const TX: usize, const MESSAGE: usize>(
        client: &'a Client<M, O, R, KC, PAYLOAD>,
        config: ClientConfig<'a>,
        connector: C,
        clock: K,
        mask_rng: W,
        buffers: &'a mut Buffers<RX, TX, MESSAGE>,
    ) -> Result<Self, ClientConfigError> {
        let url = config.validate()?;
        if MESSAGE < message_buffer_len(PAYLOAD) {
            return Err(ClientConfigError::MessageBufferTooSmall);
        }
        if RX < 128 || TX < 128 {
            return Err(ClientConfigError::FrameBufferTooSmall);
        }
        Ok(Self {
            client,
            config,
            url,
            connector,
            clock,
            mask_rng,
            rx: &mut buffers.rx,
            tx: &mut buffers.tx,
            message: &mut buffers.message,
        })
    }

    /// Runs the connection forever: connect, serve, back off, reconnect.
    /// `handler` answers downlink commands.
    pub async fn run<H: CommandHandler>(&mut self, handler: &mut H) -> ! {
        loop {
            self.step(handler).await;
        }
    }

    /// One turn: one connection attempt and its life, or one wait.
    async fn step<H: CommandHandler>(&mut self, handler: &mut H) {
        let now = self.clock.now();
        match self.client.state() {
            ConnectionState::Connecting => {
                self.client.with_session(|s| s.begin_connect(now));
                self.connect_and_serve(handler).await;
            }
            ConnectionState::BackingOff { until } => {
                if now < until {
                    // A publish wakes us too; the loop just comes back here.
                    select(self.clock.sleep_until(until), self.client.wake.wait()).await;
                }
                let now = self.clock.now();
                self.client.with_session(|s| s.handle_timeout(now));
            }
            ConnectionState::GaveUp(_) => self.client.wake.wait().await,
            _ => {
                // A link state without a link: only after a cancelled run.
                self.client
                    .with_session(|s| s.on_link_lost(now, LinkError::Io));
            }
        }
    }

    async fn connect_and_serve<H: CommandHandler>(&mut self, handler: &mut H) {
        let Self {
            client,
            config,
            url,
            connector,
            clock,
            mask_rng,
            rx,
            tx,
            message,
        } = self;
        let started = clock.now();
        let deadline = client
            .with_session(|s| s.poll_at())
            .unwrap_or(started + config.session.connect_timeout());

        debug!(
            "client: connecting to {}:{}",
            url.endpoint.host, url.endpoint.port
        );
        let connection =
            match select(connector.connect(url.endpoint), clock.sleep_until(deadline)).await {
                Either::First(Ok(connection)) => connection,
                Either::First(Err(_)) => {
                    client.with_session(|s| s.on_link_lost(clock.now(), LinkError::ConnectFailed));
                    return;
                }
                Either::Second(()) => {
                    client.with_session(|s| s.handle_timeout(clock.now()));
                    return;
                }
            };

        let max_downlink = max_downlink_len(rx.len());
        let mut request = ws::ClientRequest::new(url.authority, url.path);
        if let Some(authorization) = config.authorization {
            request = request.with_authorization(authorization);
        }
        let handshake = ws::WebSocket::connect(
            connection,
            rx,
            tx,
            &mut *mask_rng,
            ws::Config::client(),
            request,
        );
        let mut websocket = match select(handshake, clock.sleep_until(deadline)).await {
            Either::First(Ok((websocket, _))) => websocket,
            Either::First(Err(e)) => {
                let error = match e {
                    ws::Error::Handshake(_) => LinkError::HandshakeFailed,
                    other => link_error(other),
                };
                client.with_session(|s| s.on_link_lost(clock.now(), error));
                return;
            }
            Either::Second(()) => {
                client.with_session(|s| s.handle_timeout(clock.now()));
                return;
            }
        };
        client.with_session(|s| s.on_link_up(clock.now()));

        loop {
            // Everything that is due goes out first.
            loop {
                let now = clock.now();
                let outgoing = client.with_session(|s| {
                    s.poll_transmit(now)
                        .map(|transmit| encode(transmit, config, max_downlink, message))
                });
                let sent = match outgoing {
                    None => break,
                    Some(None) => Err(LinkError::Io),
                    Some(Some(outgoing)) => {
                        let frame = match outgoing {
                            Outgoing::Binary(len) => {
                                ws::Message::Binary(message.get(..len).unwrap_or_default())
                            }
                            Outgoing::Pong(len) => {
                                ws::Message::Pong(message.get(..len).unwrap_or_default())
                            }
                            Outgoing::Ping(nonce) => {
                                if let Some(slot) = message.get_mut(..4) {
                                    slot.copy_from_slice(&nonce.to_le_bytes());
                                }
                                ws::Message::Ping(message.get(..4).unwrap_or_default())
                            }
                        };
                        match select(
                            websocket.send(frame),
                            clock.sleep_until(now + config.send_timeout),
                        )
                        .await
                        {
                            Either::First(Ok(())) => Ok(()),
                            Either::First(Err(e)) => Err(link_error(e)),
                            Either::Second(()) => Err(LinkError::SendTimeout),
                        }
                    }
                };
                if let Err(error) = sent {
                    client.with_session(|s| s.on_link_lost(clock.now(), error));
                    return;
                }
            }
            if !client.state().is_link_up() {
                // The session dropped the link (timeout, bad message): tell
                // the server why when there is a code for it.
                let code = client.last_error().and_then(|e| e.close_code());
                if let Some(code) = code
                    && !websocket.is_closed()
                {
                    let close = websocket.close(ws::CloseCode::new(code), "");
                    let _ =
                        select(close, clock.sleep_until(clock.now() + config.send_timeout)).await;
                }
                return;
            }

            // Then wait for the server, a timer, or a publish.
            let now = clock.now();
            let deadline = client
                .with_session(|s| s.poll_at())
                .unwrap_or(now + config.session.keepalive_interval());
            // Only the read is raced: it is cancel-safe and never writes.
            let event = select3(
                websocket.read_message(),
                clock.sleep_until(deadline),
                client.wake.wait(),
            )
            .await;
            let now = clock.now();
            match event {
                Either3::First(Ok(received)) => {
                    if let Some(error) = handle_message(client, handler, now, received) {
                        client.with_session(|s| s.on_link_lost(now, error));
                    }
                    if websocket.is_closed() {
                        // The server closed: echo its close frame.
                        flush_owed(&mut websocket, clock, config.send_timeout).await;
                        client.with_session(|s| s.on_link_lost(now, LinkError::EndOfStream));
                        return;
                    }
                }
                Either3::First(Err(e)) => {
                    client.with_session(|s| s.on_link_lost(now, link_error(e)));
                    // A protocol error owes the server its close code.
                    flush_owed(&mut websocket, clock, config.send_timeout).await;
                    return;
                }
                Either3::Second(()) => client.with_session(|s| s.handle_timeout(now)),
                Either3::Third(()) => {}
            }
        }
    }
}

/// Sends the close frame the WebSocket owes (best effort, bounded by
/// `timeout`; the link is dropped right after, so a cancelled write harms
/// nothing).
async fn flush_owed<T, W, K>(websocket: &mut ws::WebSocket<'_, T, W>, clock: &K, timeout: Duration)
where
    T: embedded_io_async::Read + embedded_io_async::Write,
    W: RngCore,
    K: Clock,
{
    let _ = select(websocket.flush(), clock.sleep_until(clock.now() + timeout)).await;
}

/// Applies one server message to the session; returns the error that
/// drops the link, if the session did not already drop it.
fn handle_message<M, O, R, KC, H, const PAYLOAD: usize>(
    client: &Client<M, O, R, KC, PAYLOAD>,
    handler: &mut H,
    now: Instant,
    received: ws::Message<'_>,
) -> Option<LinkError>
where
    M: RawMutex,
    O: Outbox,
    R: RngCore,
    KC: Clock,
    H: CommandHandler,
{
    match received {
        ws::Message::Binary(bytes) => match ServerToDevice::decode(bytes) {
            Err(_) => {
                warn!("client: undecodable server message");
                Some(LinkError::Malformed)
            }
            Ok(ServerToDevice::Welcome(welcome)) => {
                let _ = client.with_session(|s| {
                    s.on_welcome(
                        now,
                        welcome.last_stored_seq,
                        welcome.max_in_flight,
                        welcome.server_time_ms,
                    )
                });
                None
            }
            Ok(ServerToDevice::Ack(ack)) => {
                let _ = client.with_session(|s| s.on_ack(now, ack.seq));
                None
            }
            Ok(ServerToDevice::Command(command)) => {
                if client.with_session(|s| s.on_message(now)).is_err() {
                    return None;
                }
                debug!("client: command {} on {}", command.id, command.channel);
                let mut buffer = [0u8; MAX_COMMAND_RESULT_LEN];
                let mut result = CommandResult::new(&mut buffer);
                let status = handler.handle(&command, &mut result);
                let json = result.json().unwrap_or_default();
                let queued = client.with_session(|s| {
                    s.acknowledge_command(command.id, status, json)
                        .or_else(|_| {
                            // No room for the result: the status at least.
                            s.acknowledge_command(command.id, status, &[])
                        })
                });
                if queued.is_err() {
                    warn!(
                        "client: command ack queue full, command {} unanswered",
                        command.id
                    );
                }
                None
            }
        },
        // Devices speak binary only.
        ws::Message::Text(_) => Some(LinkError::Malformed),
        // The pong goes out with the next transmissions, never from
        // inside the (cancellable) read.
        ws::Message::Ping(payload) => client.with_session(|s| s.on_ping(now, payload)).err(),
        ws::Message::Pong(payload) => {
            client.with_session(|s| s.on_pong(now, payload));
            None
        }
        ws::Message::Close(frame) => Some(LinkError::Closed {
            code: frame.map_or(1005, |f| f.code.as_u16()),
        }),
    }
}

/// Encodes one transmission into `out`; `None` if it does not fit (the
/// buffers are checked against the payload capacity, so only a foreign
/// outbox with larger entries gets here). `max_downlink` goes in `Hello`.
fn encode(
    transmit: Transmit<'_>,
    config: &ClientConfig<'_>,
    max_downlink: u32,
    out: &mut [u8],
) -> Option<Outgoing> {
    let message = match transmit {
        Transmit::Hello {
            boot_id,
            last_acked_seq,
        } => DeviceToServer::Hello(Hello {
            device_id: config.device_id,
            firmware_version: config.firmware_version,
            boot_id,
            last_acked_seq,
            max_downlink_len: Some(max_downlink),
        }),
        Transmit::Publish(entry) => DeviceToServer::Publish(Publish {
            seq: entry.seq,
            channel: entry.channel,
            // The session converted boot-relative times once it knew the
            // server's clock; a time still boot-relative is unknown.
            time_ms: match entry.time {
                Some(Timestamp::Unix(millis)) => Some(millis),
                _ => None,
            },
            payload: Payload(entry.payload),
        }),
        Transmit::CommandAck { id, status, result } => DeviceToServer::CommandAck(CommandAck {
            id,
            status,
            result: if result.is_empty() {
                Payload::NULL
            } else {
                Payload(result)
            },
        }),
        Transmit::Ping { nonce } => return Some(Outgoing::Ping(nonce)),
        Transmit::Pong(payload) => {
            out.get_mut(..payload.len())?.copy_from_slice(payload);
            return Some(Outgoing::Pong(payload.len()));
        }
    };
    message
        .encode(out)
        .ok()
        .map(|bytes| Outgoing::Binary(bytes.len()))
}

fn link_error(error: ws::Error) -> LinkError {
    match error {
        ws::Error::Protocol(_) => LinkError::Protocol,
        ws::Error::Handshake(_) => LinkError::HandshakeFailed,
        ws::Error::TransportClosed | ws::Error::Closed => LinkError::EndOfStream,
        _ => LinkError::Io,
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use embassy_sync::blocking_mutex::raw::NoopRawMutex;
    use rand_xorshift::XorShiftRng;

    use super::*;
    use crate::outbox::RamOutbox;

    /// The client of the default configuration: a 4 KiB RAM outbox,
    /// `DEFAULT_PAYLOAD_CAPACITY`, default buffers. `docs/performance.md`
    /// records these numbers
    /// (`cargo test -p tether-core client_memory -- --nocapture`).
    #[test]
    fn client_memory() {
        type DefaultClient = Client<NoopRawMutex, RamOutbox<4096>, XorShiftRng, ()>;
        let client = size_of::<DefaultClient>();
        let buffers = size_of::<Buffers>();
        let runner = size_of::<
            Runner<
                'static,
                NoopRawMutex,
                RamOutbox<4096>,
                XorShiftRng,
                (),
                (),
                (),
                XorShiftRng,
                DEFAULT_PAYLOAD_CAPACITY,
            >,
        >();
        std::println!("Client<NoopRawMutex, RamOutbox<4096>, XorShiftRng, ()>: {client} bytes");
        std::println!("Buffers (default 1024 + 512 + 512): {buffers} bytes");
        std::println!("Runner fields (zero-sized connector and clock): {runner} bytes");
        std::println!("total: {} bytes", client + buffers + runner);
        assert!(client <= 4096 + 800, "client grew to {client} bytes");
        assert_eq!(buffers, 2048);
        assert!(runner <= 400, "runner grew to {runner} bytes");
    }

    /// A clock stopped at the origin.
    struct NoClock;

    impl Clock for NoClock {
        fn now(&self) -> Instant {
            Instant::ZERO
        }
        async fn sleep_until(&self, _deadline: Instant) {}
    }

    #[test]
    fn config_validation() {
        let ok = ClientConfig::new("ws://relay.local:8080/device", "dev-1", "1.0.0");
        assert!(ok.validate().is_ok());
        let cases = [
            (
                ClientConfig::new("http://x", "dev-1", "1"),
                ClientConfigError::Url(UrlError::UnsupportedScheme),
            ),
            (
                ClientConfig::new("ws://x", "dev 1", "1"),
                ClientConfigError::DeviceId,
            ),
            (
                ClientConfig::new("ws://x", "", "1"),
                ClientConfigError::DeviceId,
            ),
            (
                ClientConfig::new("ws://x", "d", ""),
                ClientConfigError::FirmwareVersion,
            ),
            (
                ClientConfig::new("ws://x", "d", "1\\"),
                ClientConfigError::FirmwareVersion,
            ),
            (
                ClientConfig::new("ws://x", "d", "123456789012345678901234567890123"),
                ClientConfigError::FirmwareVersion,
            ),
            (
                ok.with_send_timeout(Duration::ZERO),
                ClientConfigError::ZeroSendTimeout,
            ),
            (
                ok.with_session(SessionConfig::new().with_max_in_flight(0)),
                ClientConfigError::Session(SessionConfigError::ZeroInFlight),
            ),
        ];
        for (config, error) in cases {
            assert_eq!(config.validate().err(), Some(error), "{config:?}");
        }
    }

    #[test]
    fn publish_validates_channel_and_size_and_never_blocks() {
        use rand_core::SeedableRng;
        let config = ClientConfig::new("ws://relay.local/device", "dev-1", "1.0.0");
        let client: Client<NoopRawMutex, RamOutbox<256>, XorShiftRng, NoClock, 32> = Client::new(
            &config,
            RamOutbox::new(),
            XorShiftRng::seed_from_u64(1),
            NoClock,
        )
        .unwrap();
        assert_eq!(client.publish("a/b", &1u8), Ok(1));
        assert_eq!(
            client.publish("a//b", &1u8),
            Err(PublishError::InvalidChannel)
        );
        assert_eq!(client.publish("", &1u8), Err(PublishError::InvalidChannel));
        assert_eq!(
            client.publish("a", &"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"),
            Err(PublishError::Encode)
        );
        // Offline, the outbox fills and then refuses.
        let mut accepted = 1;
        while client.publish("a", &12345u32).is_ok() {
            accepted += 1;
        }
        assert_eq!(client.publish("a", &12345u32), Err(PublishError::Full));
        assert_eq!(client.stats().outbox_len, accepted);
        assert_eq!(client.state(), ConnectionState::Connecting);
    }

    #[test]
    fn command_results_are_bounded_json() {
        #[derive(Serialize)]
        struct Led<'a> {
            on: bool,
            name: &'a str,
        }
        let mut buffer = [0u8; MAX_COMMAND_RESULT_LEN];
        let mut result = CommandResult::new(&mut buffer);
        assert_eq!(result.json(), None);
        result
            .set(&Led {
                on: true,
                name: "kitchen",
            })
            .unwrap();
        assert_eq!(result.json(), Some(&br#"{"on":true,"name":"kitchen"}"#[..]));
        let long = "x".repeat(MAX_COMMAND_RESULT_LEN);
        assert_eq!(
            result.set(&Led {
                on: false,
                name: &long
            }),
            Err(ResultTooLarge)
        );
        assert_eq!(result.json(), None, "a failed set leaves no half result");
        result.set(&[1, 2, 3]).unwrap();
        result.clear();
        assert_eq!(result.json(), None);
        assert_eq!(result.capacity(), MAX_COMMAND_RESULT_LEN);
        // The largest CommandAck fits the smallest message buffer.
        let max = [b'1'; MAX_COMMAND_RESULT_LEN];
        let ack = DeviceToServer::CommandAck(CommandAck {
            id: u32::MAX,
            status: CommandStatus::Unsupported,
            result: Payload(&max),
        });
        let mut out = [0u8; message_buffer_len(0)];
        assert!(ack.encode(&mut out).is_ok());
    }

    #[test]
    fn hello_states_what_the_receive_buffer_holds() {
        assert_eq!(
            max_downlink_len(1024),
            tether_proto::DEFAULT_MAX_DOWNLINK_LEN
        );
        assert_eq!(max_downlink_len(1536), 1522);
        // The smallest buffer a runner takes still states a valid limit.
        assert!(max_downlink_len(128) >= tether_proto::MIN_DOWNLINK_LEN);
        let config = ClientConfig::new("ws://relay.local/device", "dev-1", "1.0.0");
        let mut out = [0u8; message_buffer_len(0)];
        let hello = Transmit::Hello {
            boot_id: 7,
            last_acked_seq: 3,
        };
        let Some(Outgoing::Binary(len)) = encode(hello, &config, max_downlink_len(1536), &mut out)
        else {
            panic!("Hello encodes");
        };
        let decoded = DeviceToServer::decode(&out[..len]).unwrap();
        assert_eq!(
            decoded,
            DeviceToServer::Hello(Hello {
                device_id: "dev-1",
                firmware_version: "1.0.0",
                boot_id: 7,
                last_acked_seq: 3,
                max_downlink_len: Some(1522),
            })
        );
        // The largest Hello fits the smallest message buffer.
        let id = "d".repeat(tether_proto::MAX_DEVICE_ID_LEN);
        let firmware = "f".repeat(tether_proto::MAX_FIRMWARE_VERSION_LEN);
        let largest = DeviceToServer::Hello(Hello {
            device_id: &id,
            firmware_version: &firmware,
            boot_id: u64::MAX,
            last_acked_seq: u32::MAX,
            max_downlink_len: Some(u32::MAX),
        });
        assert!(largest.encoded_len() <= HELLO_LEN);
    }

    #[test]
    fn runner_refuses_small_buffers() {
        use rand_core::SeedableRng;
        let config = ClientConfig::new("ws://relay.local/device", "dev-1", "1.0.0");
        let client: Client<NoopRawMutex, RamOutbox<256>, XorShiftRng, NoClock> = Client::new(
            &config,
            RamOutbox::new(),
            XorShiftRng::seed_from_u64(1),
            NoClock,
        )
        .unwrap();
        struct NoNetwork;
        impl Connector for NoNetwork {
            type Connection<'a> = NoStream;
            type Error = ();
            async fn connect(&mut self, _: crate::connector::Endpoint<'_>) -> Result<NoStream, ()> {
                Err(())
            }
        }
        struct NoStream;
        impl embedded_io_async::ErrorType for NoStream {
            type Error = core::convert::Infallible;
        }
        impl embedded_io_async::Read for NoStream {
            async fn read(&mut self, _: &mut [u8]) -> Result<usize, Self::Error> {
                Ok(0)
            }
        }
        impl embedded_io_async::Write for NoStream {
            async fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
                Ok(buf.len())
            }
            async fn flush(&mut self) -> Result<(), Self::Error> {
                Ok(())
            }
        }
        let mut small_message = Buffers::<1024, 512, 64>::new();
        assert_eq!(
            Runner::new(
                &client,
                config,
                NoNetwork,
                NoClock,
                XorShiftRng::seed_from_u64(2),
                &mut small_message
            )
            .err()
            .map(|_| ()),
            Some(())
        );
        let mut small_frames = Buffers::<64, 512, 512>::new();
        assert!(
            Runner::new(
                &client,
                config,
                NoNetwork,
                NoClock,
                XorShiftRng::seed_from_u64(2),
                &mut small_frames
            )
            .is_err()
        );
        let mut fine = Buffers::<1024, 512, 512>::new();
        assert!(
            Runner::new(
                &client,
                config,
                NoNetwork,
                NoClock,
                XorShiftRng::seed_from_u64(2),
                &mut fine
            )
            .is_ok()
        );
    }
}
