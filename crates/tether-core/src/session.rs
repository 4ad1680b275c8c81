//! The device session as a sans-IO state machine: sequence numbers,
//! acknowledgements, keepalive, reconnect backoff.
//!
//! [`Session`] never touches a socket, a clock or storage. A driver (the
//! async [`client`](crate::client), or a test) feeds it what happened
//! (`on_link_up`, `on_welcome`, `on_ack`, `on_pong`, `on_link_lost`, ...)
//! with the current time, takes what to send from
//! [`Session::poll_transmit`], sleeps until [`Session::poll_at`], and calls
//! [`Session::handle_timeout`]. Everything is therefore testable on virtual
//! time, deterministically.
//!
//! ```text
//!            link up             Welcome(stored)
//! Connecting ───────► Handshaking ─────────────► Connected ──┐
//!     ▲   │ timeout /        │ timeout /            │ pong timeout, close,
//!     │   │ connect failed   │ close, error         │ error, bad message
//!     │   ▼                  ▼                      ▼
//!     └── BackingOff{until} ◄───────────────────────┘
//!              │ backoff gave up         │ 401 / revoked / bad certificate
//!              ▼                         ▼
//!            GaveUp              NeedsProvisioning
//! ```
//!
//! # Messages and the outbox
//!
//! The messages themselves live in an [`Outbox`](crate::outbox::Outbox),
//! which the driver owns and calls outside the session (storage may be
//! flash, and slow). The session only numbers them and says when to send
//! which:
//!
//! 1. [`Session::begin_publish`] hands out the next sequence number and the
//!    time stamp; the driver stores the message under that number and
//!    reports [`Session::on_stored`] (or [`Session::cancel_publish`] if the
//!    outbox refused it).
//! 2. [`Session::poll_transmit`] answers [`Transmit::Publish`]` { after }`:
//!    the driver reads the outbox's oldest message numbered above `after`,
//!    sends it with its time converted by [`Session::timestamp`], and reports
//!    [`Session::on_sent`] (or [`Session::on_nothing_after`]).
//! 3. Acknowledgements move [`Session::acked_seq`]; [`Session::release_due`]
//!    says up to which number the driver should free the outbox
//!    ([`Outbox::ack_through`](crate::outbox::Outbox::ack_through)), and
//!    [`Session::on_released`] records that it did.
//!
//! # Delivery guarantees
//!
//! Every message stored gets the next sequence number of this boot and
//! waits in the outbox until the server acknowledges it (cumulative `Ack`).
//! After every reconnect the session says `Hello { boot_id, last_acked_seq }`,
//! the server answers `Welcome { stored_through }` (the highest sequence
//! number it already stored for this boot), and the session resends every
//! message above that, in order. Delivery is at-least-once; the server drops
//! duplicates by `(device, boot_id, seq)`, so storage is exactly-once.
//!
//! A reboot with a RAM outbox loses the messages and the counter. The
//! session then draws a fresh random 64-bit `boot_id` ([`Session::new`]) and
//! starts again at sequence number 1: the server keys its de-duplication on
//! the boot id, so fresh messages are never mistaken for duplicates of the
//! previous boot, and numbers are never reused with another meaning.
//!
//! A persistent outbox that still holds messages after a reboot reports
//! their boot id and numbers ([`Restored`]); [`Session::resume`] continues
//! that boot: same boot id, numbering after the newest stored message, so the
//! messages the server already stored before the power cut are recognised
//! as duplicates and the others are stored once. Only messages the outbox
//! reported stored are ever sent, so the server can never hold a number the
//! outbox lost.
//!
//! Messages dropped by [`FullPolicy::DropOldest`] leave gaps in the sequence
//! numbers; the server must accept gaps.
//!
//! A boot that uses up its sequence numbers (after 4 294 967 294 messages)
//! starts over the same way: once the server acknowledged everything, the
//! next publish draws a new random boot id, numbering restarts at 1, and a
//! link that is up is closed (code 1000, [`LinkError::NewBoot`]) so that the
//! next `Hello` announces the new boot. Until everything is acknowledged,
//! [`Session::begin_publish`] answers [`PublishError::SequenceExhausted`].
//!
//! # Permanent failures
//!
//! Some failures repeat on every attempt until someone changes the device's
//! settings: the server refused the token (HTTP 401 or 403 on the upgrade,
//! close codes 4005, 4006 and 4009 for a revoked, forbidden or unknown
//! device) or the connector rejected the server's certificate
//! ([`LinkError::is_permanent`]). Instead of retrying for ever the session
//! stops in [`ConnectionState::NeedsProvisioning`]; the firmware goes back to
//! provisioning and calls [`Session::retry_now`] (or starts a new client)
//! with the new settings.
//!
//! # Timestamps
//!
//! Every `Welcome` carries the server's clock (Unix ms); the session keeps
//! it with the local [`Instant`] it arrived at. A message published after
//! that is stamped `server_time + (now - then)` ([`Timestamp::Unix`]). A
//! message published before the first `Welcome` (offline after boot) keeps
//! its local [`Timestamp::Boot`] instant in the outbox and is converted the
//! same way when it is sent, once the server's clock is known (with the
//! clock of the newest `Welcome`, should it be resent after a reconnect). A
//! `server_time_ms` of 0 means the server does not know the time either: the
//! clock stays unknown and such messages go out without a time.
//!
//! # Example
//!
//! A whole connection, driven by hand, with a [`RamOutbox`](crate::outbox::RamOutbox):
//!
//! ```
//! use rand_core::SeedableRng;
//! use tether_core::outbox::{Entry, FullPolicy, RamOutbox, Timestamp};
//! use tether_core::session::{ConnectionState, Session, SessionConfig, Transmit};
//! use tether_core::time::{Duration, Instant};
//!
//! let rng = rand_xorshift::XorShiftRng::seed_from_u64(1);
//! let mut now = Instant::ZERO;
//! let mut session = Session::new(SessionConfig::default(), rng, now)?;
//! let mut outbox = RamOutbox::<1024>::new();
//! outbox.start_boot(session.boot_id());
//!
//! // Store-and-forward: publishing works while offline.
//! let pending = session.begin_publish(now, outbox.is_empty()).unwrap();
//! outbox.push(Entry::new(pending.seq, "temp", b"21.5").with_time(pending.time), FullPolicy::Reject).unwrap();
//! session.on_stored(pending.seq);
//! assert_eq!(pending.seq, 1);
//! assert_eq!(session.state(), ConnectionState::Connecting);
//!
//! // The driver opened the transport and did the WebSocket handshake.
//! session.on_link_up(now);
//! let boot_id = session.boot_id();
//! assert_eq!(session.poll_transmit(now), Some(Transmit::Hello { boot_id, last_acked_seq: 0 }));
//! // The server's clock (Unix ms) comes with Welcome.
//! session.on_welcome(now, 0, 16, 1_764_000_000_000).unwrap();
//! assert_eq!(session.state(), ConnectionState::Connected);
//!
//! // The stored message goes out, and is freed by the server's Ack.
//! assert_eq!(session.poll_transmit(now), Some(Transmit::Publish { after: 0 }));
//! let entry = outbox.first_after(0).unwrap();
//! assert_eq!((entry.seq, entry.channel, entry.payload), (1, "temp", &b"21.5"[..]));
//! // Published before the server's time was known: stamped at send time.
//! assert_eq!(session.timestamp(entry.time), Some(1_764_000_000_000));
//! session.on_sent(entry.seq);
//! session.on_ack(now, 1).unwrap();
//! assert_eq!(session.release_due(), Some(1));
//! outbox.ack_through(1);
//! session.on_released(1);
//! assert!(outbox.is_empty());
//!
//! // Nothing to do until the keepalive ping is due: after 15 to 20 s of
//! // silence, drawn per connection so a fleet does not ping in step.
//! assert_eq!(session.poll_transmit(now), None);
//! now = session.poll_at().unwrap();
//! assert!(now >= Instant::ZERO + Duration::from_secs(15));
//! assert!(now <= Instant::ZERO + Duration::from_secs(20));
//! assert!(matches!(session.poll_transmit(now), Some(Transmit::Ping { .. })));
//! # Ok::<(), tether_core::session::SessionConfigError>(())
//! ```

use core::fmt;

use rand_core::RngCore;
use tether_proto::CommandStatus;

use crate::backoff::{Backoff, BackoffConfig, BackoffConfigError, GaveUp};
use crate::outbox::{FullPolicy, PushError, Restored, StorageError, Timestamp};
use crate::time::{Duration, Instant};

/// Longest ping payload a WebSocket peer may send (RFC 6455 5.5).
pub const MAX_PING_PAYLOAD: usize = 125;

/// Command acknowledgements that can wait for the link at once.
pub const COMMAND_ACK_QUEUE: usize = 8;

/// Longest JSON result of one command, and the bytes the results of all
/// queued command acknowledgements share.
pub const MAX_COMMAND_RESULT_LEN: usize = 128;

/// A changed signal strength is reported at most this often (the first
/// report of a link goes out at once).
pub const SIGNAL_REPORT_INTERVAL: Duration = Duration::from_secs(60);

/// Settings of a [`Session`]. Builder-lite: start from [`Default`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SessionConfig {
    backoff: BackoffConfig,
    connect_timeout: Duration,
    keepalive_interval: Duration,
    keepalive_jitter_percent: u8,
    pong_timeout: Duration,
    max_in_flight: u32,
    full_policy: FullPolicy,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl SessionConfig {
    /// Default backoff, 10 s to connect and get `Welcome`, a ping after 15
    /// to 20 s of silence (drawn per connection), 10 s for its pong, 32
    /// unacknowledged messages in flight, reject when the outbox is full.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            backoff: BackoffConfig::new(),
            connect_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(20),
            keepalive_jitter_percent: 25,
            pong_timeout: Duration::from_secs(10),
            max_in_flight: 32,
            full_policy: FullPolicy::Reject,
        }
    }

    /// Reconnect backoff.
    #[must_use]
    pub const fn with_backoff(mut self, backoff: BackoffConfig) -> Self {
        self.backoff = backoff;
        self
    }

    /// Longest time from starting to connect until `Welcome`, and again from
    /// the link coming up until `Welcome`.
    #[must_use]
    pub const fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Send a ping after this much time without hearing from the server.
    #[must_use]
    pub const fn with_keepalive_interval(mut self, interval: Duration) -> Self {
        self.keepalive_interval = interval;
        self
    }

    /// Spread of the keepalive: each connection pings after a silence
    /// drawn once, uniformly, from the last `percent` of the interval (25:
    /// between 75 % and 100 % of it; 0: exactly the interval; at most
    /// 100). Devices that connected together (after a server restart)
    /// then neither ping nor time out in the same second.
    #[must_use]
    pub const fn with_keepalive_jitter_percent(mut self, percent: u8) -> Self {
        self.keepalive_jitter_percent = if percent > 100 { 100 } else { percent };
        self
    }

    /// A ping without pong for this long means the link is dead.
    #[must_use]
    pub const fn with_pong_timeout(mut self, timeout: Duration) -> Self {
        self.pong_timeout = timeout;
        self
    }

    /// Most messages sent but not yet acknowledged (at least 1).
    #[must_use]
    pub const fn with_max_in_flight(mut self, messages: u32) -> Self {
        self.max_in_flight = messages;
        self
    }

    /// What the outbox does when it is full (the client applies it on every
    /// publish).
    #[must_use]
    pub const fn with_full_policy(mut self, policy: FullPolicy) -> Self {
        self.full_policy = policy;
        self
    }

    /// Reconnect backoff.
    #[must_use]
    pub const fn backoff(&self) -> &BackoffConfig {
        &self.backoff
    }

    /// Time allowed to connect and receive `Welcome`.
    #[must_use]
    pub const fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Silence before a keepalive ping.
    #[must_use]
    pub const fn keepalive_interval(&self) -> Duration {
        self.keepalive_interval
    }

    /// Spread of the keepalive, in percent of the interval.
    #[must_use]
    pub const fn keepalive_jitter_percent(&self) -> u8 {
        self.keepalive_jitter_percent
    }

    /// Time allowed for a pong.
    #[must_use]
    pub const fn pong_timeout(&self) -> Duration {
        self.pong_timeout
    }

    /// Unacknowledged messages allowed in flight.
    #[must_use]
    pub const fn max_in_flight(&self) -> u32 {
        self.max_in_flight
    }

    /// Outbox full policy.
    #[must_use]
    pub const fn full_policy(&self) -> FullPolicy {
        self.full_policy
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// The first rule the settings break.
    pub const fn validate(&self) -> Result<(), SessionConfigError> {
        if let Err(e) = self.backoff.validate() {
            return Err(SessionConfigError::Backoff(e));
        }
        if self.connect_timeout.as_millis() == 0
            || self.keepalive_interval.as_millis() == 0
            || self.pong_timeout.as_millis() == 0
        {
            return Err(SessionConfigError::ZeroTimeout);
        }
        if self.max_in_flight == 0 {
            return Err(SessionConfigError::ZeroInFlight);
        }
        Ok(())
    }
}

/// A [`SessionConfig`] that cannot work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum SessionConfigError {
    /// The backoff settings are invalid.
    Backoff(BackoffConfigError),
    /// A timeout or interval is zero.
    ZeroTimeout,
    /// `max_in_flight` is zero: nothing could ever be sent.
    ZeroInFlight,
}

impl fmt::Display for SessionConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Backoff(e) => write!(f, "invalid backoff: {e}"),
            Self::ZeroTimeout => f.write_str("session timeouts and intervals must not be zero"),
            Self::ZeroInFlight => f.write_str("max_in_flight must be at least 1"),
        }
    }
}

impl core::error::Error for SessionConfigError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Self::Backoff(e) => Some(e),
            _ => None,
        }
    }
}

/// Where the session stands, for the application (and its status LED).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ConnectionState {
    /// Opening the transport and doing the WebSocket handshake.
    Connecting,
    /// Link up, `Hello` sent or due, waiting for `Welcome`.
    Handshaking,
    /// `Welcome` received: messages flow.
    Connected,
    /// The link failed; the next attempt starts at `until`.
    BackingOff {
        /// When the next attempt starts.
        until: Instant,
    },
    /// The backoff gave up; [`Session::retry_now`] starts over.
    GaveUp(GaveUp),
    /// The server or the connector refused this device's settings for good
    /// ([`LinkError::is_permanent`]): a revoked or wrong token, an unknown
    /// device, a server certificate that does not verify. Retrying would
    /// fail the same way; the device needs new settings (provisioning), then
    /// [`Session::retry_now`].
    NeedsProvisioning(LinkError),
}

impl ConnectionState {
    /// Whether a transport connection is open (the driver must close it
    /// when this turns `false`).
    #[must_use]
    pub const fn is_link_up(&self) -> bool {
        matches!(self, Self::Handshaking | Self::Connected)
    }
}

/// Why a link went down. Small and `Copy`, kept as [`Session::last_error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum LinkError {
    /// The connector could not open the transport (DNS, refused, TLS, ...).
    ConnectFailed,
    /// The connector rejected the server's certificate (unknown CA, wrong
    /// name, expired): permanent, see
    /// [`Connector::error_kind`](crate::connector::Connector::error_kind).
    Certificate,
    /// The server answered the WebSocket upgrade with this HTTP status
    /// instead of `101`; 401 and 403 (wrong or revoked token) are
    /// permanent.
    Refused {
        /// The HTTP status code.
        status: u16,
    },
    /// The WebSocket upgrade was answered wrongly (a malformed reply, a
    /// bad `Sec-WebSocket-Accept`, ...).
    HandshakeFailed,
    /// Connecting, or waiting for `Welcome`, took longer than
    /// [`SessionConfig::connect_timeout`].
    ConnectTimeout,
    /// No pong within [`SessionConfig::pong_timeout`] of a ping.
    PongTimeout,
    /// A message could not be sent in time (the peer stopped reading).
    SendTimeout,
    /// The server closed the WebSocket with this close code.
    Closed {
        /// RFC 6455 close code (1005 if the close frame had none).
        code: u16,
    },
    /// The stream ended without a close frame.
    EndOfStream,
    /// Reading or writing the transport failed.
    Io,
    /// A server message could not be decoded.
    Malformed,
    /// A server message broke the session rules (an `Ack` for a message
    /// never sent, a second `Welcome`, ...).
    Protocol,
    /// Not a failure: the session closed the link to announce a new boot id
    /// after the old one ran out of sequence numbers.
    NewBoot,
    /// The server is draining (close code 4017, `draining`): reconnect
    /// after the delay it suggested in the close reason (capped by the
    /// backoff's cap) instead of the backoff's own delay.
    Draining {
        /// The suggested delay in milliseconds
        /// ([`tether_proto::reconnect_hint_ms`]).
        retry_after_ms: u32,
    },
}

impl LinkError {
    /// Whether the failure repeats on every attempt until the device's
    /// settings change: the upgrade answered 401 or 403, the server closed
    /// with 4005 (unauthorized: token revoked, device moved), 4006
    /// (forbidden) or 4009 (unknown device), or the server's certificate
    /// was rejected. The session stops in
    /// [`ConnectionState::NeedsProvisioning`] instead of backing off.
    #[must_use]
    pub const fn is_permanent(&self) -> bool {
        match self {
            Self::Certificate => true,
            Self::Refused { status } => matches!(*status, 401 | 403),
            Self::Closed { code } => matches!(*code, 4005 | 4006 | 4009),
            _ => false,
        }
    }

    /// The WebSocket close code the device should send before closing, if
    /// the link is still writable: the way rustls maps errors to alerts.
    #[must_use]
    pub const fn close_code(&self) -> Option<u16> {
        match self {
            // 1007: invalid frame payload data.
            Self::Malformed => Some(1007),
            // 1002: protocol error.
            Self::Protocol => Some(1002),
            // Echo the server's code (RFC 6455 5.5.1).
            Self::Closed { code } => Some(*code),
            // 1000: normal closure.
            Self::NewBoot => Some(1000),
            // Echo the server's code.
            Self::Draining { .. } => Some(4017),
            _ => None,
        }
    }
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ConnectFailed => f.write_str("could not connect"),
            Self::Certificate => f.write_str("server certificate rejected"),
            Self::Refused { status } => write!(f, "upgrade refused with HTTP status {status}"),
            Self::HandshakeFailed => f.write_str("WebSocket handshake failed"),
            Self::ConnectTimeout => f.write_str("timed out connecting"),
            Self::PongTimeout => f.write_str("no pong: link dead"),
            Self::SendTimeout => f.write_str("timed out sending"),
            Self::Closed { code } => write!(f, "closed by server with code {code}"),
            Self::EndOfStream => f.write_str("connection closed without close frame"),
            Self::Io => f.write_str("transport I/O error"),
            Self::Malformed => f.write_str("malformed server message"),
            Self::Protocol => f.write_str("server broke the session protocol"),
            Self::NewBoot => f.write_str("closed to start a new boot id"),
            Self::Draining { retry_after_ms } => {
                write!(f, "server draining: reconnect in {retry_after_ms} ms")
            }
        }
    }
}

impl core::error::Error for LinkError {}

/// Why a message was not published. The payload was only borrowed, so the
/// caller still has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum PublishError {
    /// The outbox is full and the policy is [`FullPolicy::Reject`]. Try
    /// again once acknowledgements freed space.
    Full,
    /// The message is larger than the whole outbox.
    TooLarge,
    /// The channel name is too long.
    ChannelTooLong,
    /// The channel name breaks the protocol's rules (ASCII letters, digits,
    /// `_ - . /`, non-empty `/`-separated segments, at most 64 bytes).
    InvalidChannel,
    /// Every sequence number of this boot is used (after 4 294 967 294
    /// messages) and some messages still wait for acknowledgement. Once
    /// they are acknowledged, the next publish starts a new boot id and
    /// numbering at 1.
    SequenceExhausted,
    /// The value could not be serialized into the payload buffer.
    Encode,
    /// The outbox's storage failed.
    Storage(StorageError),
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Full => "outbox full",
            Self::TooLarge => "message larger than the outbox",
            Self::ChannelTooLong => "channel name too long",
            Self::InvalidChannel => "invalid channel name",
            Self::SequenceExhausted => "sequence numbers of this boot exhausted",
            Self::Encode => "could not encode the message",
            Self::Storage(_) => "outbox storage failed",
        })
    }
}

impl core::error::Error for PublishError {}

impl From<PushError> for PublishError {
    fn from(e: PushError) -> Self {
        match e {
            PushError::Full => Self::Full,
            PushError::ChannelTooLong => Self::ChannelTooLong,
            PushError::Storage(e) => Self::Storage(e),
            // Sequence numbers come from the session, so `OutOfOrder` can only
            // come from an outbox whose content the session was not told
            // about (a resumed boot is told).
            PushError::TooLarge | PushError::OutOfOrder => Self::TooLarge,
        }
    }
}

/// The command acknowledgement queue is full; acknowledge later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct CommandAckQueueFull;

impl fmt::Display for CommandAckQueueFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("command acknowledgement queue full")
    }
}

impl core::error::Error for CommandAckQueueFull {}

/// Something the driver must send now, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Transmit<'a> {
    /// The first message on every link.
    Hello {
        /// Random per boot.
        boot_id: u64,
        /// Highest sequence number the server acknowledged in this boot.
        last_acked_seq: u32,
    },
    /// A WebSocket pong answering the server's ping.
    Pong(&'a [u8]),
    /// A WebSocket ping carrying `nonce` (4 bytes, little-endian); the pong
    /// must echo it.
    Ping {
        /// Identifies this ping.
        nonce: u32,
    },
    /// Announcement `index` of this link: the driver's descriptions of its
    /// channels and commands, numbered `0..` the count given to
    /// [`Session::set_announcements`]. Due right after `Welcome`, before
    /// any `Publish`, on every link.
    Announce {
        /// Which announcement.
        index: u16,
    },
    /// Report the device's signal strength (a `Status` message): once per
    /// link after the announcements, then when it changed, at most every
    /// [`SIGNAL_REPORT_INTERVAL`].
    Status {
        /// The strength given to [`Session::set_signal`], in dBm.
        rssi_dbm: i16,
    },
    /// Acknowledge a downlink command.
    CommandAck {
        /// The command's id.
        id: u32,
        /// What became of it.
        status: CommandStatus,
        /// Its JSON result; empty when there is none (send `null`).
        result: &'a [u8],
    },
    /// The oldest stored message numbered above `after`, sent for the
    /// first time or resent: read it from the outbox
    /// ([`Outbox::read_after`](crate::outbox::Outbox::read_after)), send it
    /// (its time through [`Session::timestamp`]) and report
    /// [`Session::on_sent`]; if the outbox has none, report
    /// [`Session::on_nothing_after`].
    Publish {
        /// Highest sequence number already sent on this link.
        after: u32,
    },
}

/// A sequence number handed out by [`Session::begin_publish`]: store the
/// message under it, then report [`Session::on_stored`] (or
/// [`Session::cancel_publish`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub struct Pending {
    /// The message's sequence number.
    pub seq: u32,
    /// Its time stamp: Unix time if the server's clock is known, else the
    /// local instant (converted when sent).
    pub time: Timestamp,
    /// A new boot id started with this message (the old one ran out of
    /// numbers): call [`Outbox::start_boot`](crate::outbox::Outbox::start_boot)
    /// with it before storing the message.
    pub new_boot: Option<u64>,
}

/// Counters for the application and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SessionStats {
    /// Messages the outbox stored ([`Session::on_stored`]).
    pub published: u32,
    /// Sequence numbers the server acknowledged (numbers of messages
    /// dropped unsent by [`FullPolicy::DropOldest`] included).
    pub acknowledged: u32,
    /// `Publish` transmissions, resends included.
    pub transmitted: u32,
    /// Links that went down (failed attempts included).
    pub link_failures: u32,
    /// Links that reached `Welcome`.
    pub connections: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
enum Phase {
    Connecting { deadline: Instant },
    Handshaking { deadline: Instant, hello_sent: bool },
    Connected,
    BackingOff { until: Instant },
    GaveUp(GaveUp),
    NeedsProvisioning(LinkError),
}

/// The device session state machine. See the [module docs](self).
///
/// `R` provides the boot id and the backoff jitter (and, through
/// [`Session::rng_mut`], anything else of the device that needs randomness).
/// The size is fixed at compile time; nothing grows.
pub struct Session<R> {
    config: SessionConfig,
    rng: R,
    backoff: Backoff,
    phase: Phase,
    boot_id: u64,
    /// The sequence number the next publish gets.
    next_seq: u32,
    /// Highest sequence number the server acknowledged.
    acked: u32,
    /// Highest sequence number sent on the current link.
    sent: u32,
    /// Highest sequence number the outbox reported stored.
    stored: u32,
    /// Highest sequence number the outbox was told to free.
    released: u32,
    /// Messages allowed in flight on the current link.
    window: u32,
    /// When the next keepalive ping is due (connected, no ping outstanding).
    ping_due: Instant,
    /// The silence before a ping on this connection (the interval less a
    /// jitter drawn at `Welcome`).
    keepalive: Duration,
    /// The nonce and deadline of the outstanding ping.
    ping_outstanding: Option<(u32, Instant)>,
    ping_nonce: u32,
    /// The payload of the pong owed to the server...
    pong_payload: [u8; MAX_PING_PAYLOAD],
    /// ...and its length, if one is owed.
    pong_len: Option<u8>,
    /// Queued command acks: id, status, result length. Their results lie
    /// back to back at the start of `command_results`, in queue order.
    command_acks: [(u32, CommandStatus, u8); COMMAND_ACK_QUEUE],
    command_ack_len: usize,
    command_results: [u8; MAX_COMMAND_RESULT_LEN],
    /// The first queued ack was handed out by `poll_transmit` (its result
    /// was borrowed); it is removed at the next call.
    command_ack_taken: bool,
    last_error: Option<LinkError>,
    stats: SessionStats,
    /// The server's clock (Unix ms) at a local instant, from the last
    /// `Welcome` that had one.
    server_clock: Option<(u64, Instant)>,
    /// Announcements to make after every `Welcome`...
    announcements: u16,
    /// ...and how many of them this link made.
    announced: u16,
    /// The signal strength the driver last gave (dBm)...
    signal: Option<i16>,
    /// ...and the one this link last reported, when.
    signal_reported: Option<(i16, Instant)>,
}

impl<R> fmt::Debug for Session<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("phase", &self.phase)
            .field("boot_id", &self.boot_id)
            .field("next_seq", &self.next_seq)
            .field("acked", &self.acked)
            .field("sent", &self.sent)
            .field("stored", &self.stored)
            .field("last_error", &self.last_error)
            .finish_non_exhaustive()
    }
}

impl<R: RngCore> Session<R> {
    /// A session of a new boot that starts connecting at `now`. The boot id
    /// is drawn from `rng`, which must be seeded from real entropy on a
    /// device (the ESP32 hardware RNG) so every boot gets a different one.
    /// Numbering starts at 1; start the outbox's boot with
    /// [`Session::boot_id`].
    ///
    /// # Errors
    /// The configuration is invalid.
    pub fn new(config: SessionConfig, rng: R, now: Instant) -> Result<Self, SessionConfigError> {
        config.validate()?;
        Ok(Self::start(config, rng, now, None))
    }

    /// A session that continues the boot a persistent outbox still holds
    /// messages of (after a reboot): same boot id, numbering after
    /// `restored.last_seq`, `last_acked_seq` just below the oldest stored
    /// message. The server recognises the messages it already stored.
    ///
    /// # Errors
    /// The configuration is invalid.
    pub fn resume(
        config: SessionConfig,
        rng: R,
        now: Instant,
        restored: Restored,
    ) -> Result<Self, SessionConfigError> {
        config.validate()?;
        Ok(Self::start(config, rng, now, Some(restored)))
    }

    /// [`Session::resume`] with `restored`, else [`Session::new`], for a
    /// configuration already validated (the client validates its whole
    /// configuration once).
    pub(crate) fn start(
        config: SessionConfig,
        mut rng: R,
        now: Instant,
        restored: Option<Restored>,
    ) -> Self {
        let (boot_id, acked, stored) = match restored {
            Some(restored) => {
                info!(
                    "session: resuming boot id {} after seq {}",
                    restored.boot_id, restored.last_seq
                );
                let acked = restored.first_seq.saturating_sub(1).min(restored.last_seq);
                (restored.boot_id, acked, restored.last_seq)
            }
            None => {
                let boot_id = rng.next_u64();
                info!("session: boot id {}", boot_id);
                (boot_id, 0, 0)
            }
        };
        // `SessionConfig::validate` checked the backoff's settings too.
        Self {
            config,
            rng,
            backoff: Backoff::checked(config.backoff),
            phase: Phase::Connecting {
                deadline: now + config.connect_timeout,
            },
            boot_id,
            next_seq: stored.saturating_add(1),
            acked,
            sent: acked,
            stored,
            released: acked,
            window: config.max_in_flight,
            ping_due: now,
            keepalive: config.keepalive_interval,
            ping_outstanding: None,
            ping_nonce: 0,
            pong_payload: [0; MAX_PING_PAYLOAD],
            pong_len: None,
            command_acks: [(0, CommandStatus::Ok, 0); COMMAND_ACK_QUEUE],
            command_ack_len: 0,
            command_results: [0; MAX_COMMAND_RESULT_LEN],
            command_ack_taken: false,
            last_error: None,
            stats: SessionStats::default(),
            server_clock: None,
            announcements: 0,
            announced: 0,
            signal: None,
            signal_reported: None,
        }
    }

    /// How many announcements ([`Transmit::Announce`]) the session hands
    /// out after every `Welcome`, before any publish: the client's channel
    /// and command descriptions.
    pub fn set_announcements(&mut self, count: u16) {
        self.announcements = count;
    }

    /// The device's signal strength now (dBm), reported to the server
    /// ([`Transmit::Status`]) once per link and when it changes, at most
    /// every [`SIGNAL_REPORT_INTERVAL`].
    pub fn set_signal(&mut self, rssi_dbm: i16) {
        self.signal = Some(rssi_dbm);
    }

    /// The signal strength to report now, if one is due.
    fn signal_due(&self, now: Instant) -> Option<i16> {
        let signal = self.signal?;
        match self.signal_reported {
            None => Some(signal),
            Some((reported, at)) => {
                (reported != signal && now >= at + SIGNAL_REPORT_INTERVAL).then_some(signal)
            }
        }
    }

    /// The random source, for other consumers of the device's randomness
    /// (the client draws WebSocket masking keys from it).
    pub fn rng_mut(&mut self) -> &mut R {
        &mut self.rng
    }

    /// The settings.
    #[must_use]
    pub const fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// Where the session stands.
    #[must_use]
    pub const fn state(&self) -> ConnectionState {
        match self.phase {
            Phase::Connecting { .. } => ConnectionState::Connecting,
            Phase::Handshaking { .. } => ConnectionState::Handshaking,
            Phase::Connected => ConnectionState::Connected,
            Phase::BackingOff { until } => ConnectionState::BackingOff { until },
            Phase::GaveUp(reason) => ConnectionState::GaveUp(reason),
            Phase::NeedsProvisioning(error) => ConnectionState::NeedsProvisioning(error),
        }
    }

    /// Why the last link went down, if one did.
    #[must_use]
    pub const fn last_error(&self) -> Option<LinkError> {
        self.last_error
    }

    /// This boot's random id.
    #[must_use]
    pub const fn boot_id(&self) -> u64 {
        self.boot_id
    }

    /// Highest sequence number the server acknowledged (0: none yet).
    #[must_use]
    pub const fn acked_seq(&self) -> u32 {
        self.acked
    }

    /// Highest sequence number the outbox reported stored (0: none yet).
    #[must_use]
    pub const fn stored_seq(&self) -> u32 {
        self.stored
    }

    /// Counters.
    #[must_use]
    pub const fn stats(&self) -> SessionStats {
        self.stats
    }

    /// Hands out the sequence number and time stamp of a message published
    /// at `now`. Works in every state: messages wait in the outbox until a
    /// link is up. The time is Unix time if the server's clock is known,
    /// else `now` (converted when sent; see [Timestamps](self#timestamps)).
    ///
    /// `outbox_empty` tells whether the outbox holds nothing: a boot that
    /// ran out of sequence numbers starts a new one only then
    /// ([`Pending::new_boot`]).
    ///
    /// The number is taken at once (so a driver cancelled while storing
    /// never hands it out twice); give it back with
    /// [`Session::cancel_publish`] if the outbox refused the message.
    ///
    /// # Errors
    /// [`PublishError::SequenceExhausted`].
    pub fn begin_publish(
        &mut self,
        now: Instant,
        outbox_empty: bool,
    ) -> Result<Pending, PublishError> {
        let mut new_boot = None;
        if self.next_seq == u32::MAX {
            if !outbox_empty {
                return Err(PublishError::SequenceExhausted);
            }
            self.start_new_boot(now);
            new_boot = Some(self.boot_id);
        }
        let seq = self.next_seq;
        self.next_seq = seq + 1;
        Ok(Pending {
            seq,
            time: unix_time(self.server_clock, Timestamp::Boot(now)),
            new_boot,
        })
    }

    /// The outbox refused the message numbered `seq`: its number is free
    /// again (if no later one was handed out since).
    pub fn cancel_publish(&mut self, seq: u32) {
        if self.next_seq == seq.wrapping_add(1) {
            self.next_seq = seq;
        }
    }

    /// The outbox stored the message numbered `seq`: it may be sent.
    pub fn on_stored(&mut self, seq: u32) {
        if seq > self.stored {
            self.stored = seq;
        }
        self.next_seq = self.next_seq.max(seq.saturating_add(1));
        self.stats.published = self.stats.published.saturating_add(1);
    }

    /// The message numbered `seq` was handed to the link (after a
    /// [`Transmit::Publish`]).
    pub fn on_sent(&mut self, seq: u32) {
        if seq > self.sent {
            self.sent = seq.min(self.stored);
            self.stats.transmitted = self.stats.transmitted.saturating_add(1);
        }
    }

    /// The outbox holds nothing above `after` (dropped, or unreadable): skip
    /// to the newest stored number. Messages not sent are sent again after
    /// the next reconnect if they reappear.
    pub fn on_nothing_after(&mut self, after: u32) {
        if after >= self.sent {
            self.sent = self.stored;
        }
    }

    /// `time` as Unix milliseconds for a `Publish`: converted with the
    /// server's clock if it was stored as a boot-relative instant, `None` if
    /// unknown.
    #[must_use]
    pub fn timestamp(&self, time: Option<Timestamp>) -> Option<u64> {
        match time.map(|time| unix_time(self.server_clock, time)) {
            Some(Timestamp::Unix(millis)) => Some(millis),
            _ => None,
        }
    }

    /// The server acknowledged messages the outbox still holds: free them
    /// through the returned number
    /// ([`Outbox::ack_through`](crate::outbox::Outbox::ack_through)), then
    /// report [`Session::on_released`].
    #[must_use]
    pub const fn release_due(&self) -> Option<u32> {
        if self.acked > self.released {
            Some(self.acked)
        } else {
            None
        }
    }

    /// The outbox freed every message through `seq`.
    pub fn on_released(&mut self, seq: u32) {
        if seq > self.released && seq <= self.acked {
            self.released = seq;
        }
    }

    /// The driver starts a connection attempt at `now`: the connect
    /// timeout counts from here (a session created long before its driver
    /// first runs does not time out at once). Ignored unless connecting.
    pub fn begin_connect(&mut self, now: Instant) {
        if let Phase::Connecting { .. } = self.phase {
            self.phase = Phase::Connecting {
                deadline: now + self.config.connect_timeout,
            };
        }
    }

    /// The transport and the WebSocket handshake are up: `Hello` is due.
    /// Ignored unless connecting.
    pub fn on_link_up(&mut self, now: Instant) {
        if let Phase::Connecting { .. } = self.phase {
            debug!("session: link up, saying hello");
            self.phase = Phase::Handshaking {
                deadline: now + self.config.connect_timeout,
                hello_sent: false,
            };
            self.sent = self.acked;
            self.ping_outstanding = None;
            self.pong_len = None;
        }
    }

    /// The server's `Welcome`: it already stored every message of this boot
    /// up to `stored_through`, and accepts at most `max_in_flight`
    /// unacknowledged messages (the session uses the smaller of this and
    /// [`SessionConfig::max_in_flight`]). `server_time_ms` is the server's
    /// clock (Unix ms; 0 if unknown), used to [timestamp](self#timestamps)
    /// messages.
    ///
    /// # Errors
    /// [`LinkError::Protocol`] if no `Welcome` was expected, it claims
    /// messages never published, or `max_in_flight` is zero; the session has
    /// then dropped the link and is backing off (close the transport with
    /// [`LinkError::close_code`]).
    pub fn on_welcome(
        &mut self,
        now: Instant,
        stored_through: u32,
        max_in_flight: u16,
        server_time_ms: u64,
    ) -> Result<(), LinkError> {
        let expected = matches!(
            self.phase,
            Phase::Handshaking {
                hello_sent: true,
                ..
            }
        );
        if !expected || stored_through > self.stored || max_in_flight == 0 {
            return Err(self.fail(now, LinkError::Protocol));
        }
        self.acknowledge(stored_through);
        if server_time_ms != 0 {
            self.server_clock = Some((server_time_ms, now));
        }
        self.sent = self.acked;
        self.window = self.config.max_in_flight.min(u32::from(max_in_flight));
        self.announced = 0;
        self.signal_reported = None;
        self.phase = Phase::Connected;
        self.backoff.on_connected(now);
        self.keepalive = self.draw_keepalive();
        self.ping_due = now + self.keepalive;
        self.stats.connections = self.stats.connections.saturating_add(1);
        info!(
            "session: connected, server stored through {}, stored through {} here",
            stored_through, self.stored
        );
        Ok(())
    }

    /// The server's cumulative `Ack`: every message up to `seq` is stored.
    ///
    /// # Errors
    /// [`LinkError::Protocol`] if not connected or `seq` was never sent on
    /// this link; the session has then dropped the link.
    pub fn on_ack(&mut self, now: Instant, seq: u32) -> Result<(), LinkError> {
        if self.phase != Phase::Connected || seq > self.sent {
            return Err(self.fail(now, LinkError::Protocol));
        }
        self.heard(now);
        self.acknowledge(seq);
        Ok(())
    }

    /// Any other valid server message (a command, a WebSocket pong or ping
    /// is handled by its own method): proof the link is alive.
    ///
    /// # Errors
    /// [`LinkError::Protocol`] if it arrived before `Welcome`.
    pub fn on_message(&mut self, now: Instant) -> Result<(), LinkError> {
        if self.phase != Phase::Connected {
            return Err(self.fail(now, LinkError::Protocol));
        }
        self.heard(now);
        Ok(())
    }

    /// A WebSocket ping from the server: a pong echoing `payload` is due.
    /// A payload longer than [`MAX_PING_PAYLOAD`] is a protocol error.
    ///
    /// # Errors
    /// [`LinkError::Protocol`] if the payload is too long or no link is up.
    pub fn on_ping(&mut self, now: Instant, payload: &[u8]) -> Result<(), LinkError> {
        let link_up = self.phase_is_link_up();
        let (Some(slot), Ok(len), true) = (
            self.pong_payload.get_mut(..payload.len()),
            u8::try_from(payload.len()),
            link_up,
        ) else {
            return Err(self.fail(now, LinkError::Protocol));
        };
        slot.copy_from_slice(payload);
        self.pong_len = Some(len);
        self.heard(now);
        Ok(())
    }

    /// A WebSocket pong. It answers the outstanding ping only if it echoes
    /// its nonce; unsolicited pongs (allowed by RFC 6455) are ignored.
    pub fn on_pong(&mut self, now: Instant, payload: &[u8]) {
        if let Some((nonce, _)) = self.ping_outstanding
            && payload == nonce.to_le_bytes()
        {
            trace!("session: pong");
            self.ping_outstanding = None;
        }
        if self.phase == Phase::Connected {
            self.heard(now);
        }
    }

    /// Queues a `CommandAck` for a downlink command the application
    /// handled, with its JSON `result` (empty for none, sent as `null`).
    /// The session copies `result`; it must be one valid JSON value (the
    /// client serializes it with serde-json-core).
    ///
    /// # Errors
    /// [`CommandAckQueueFull`] if [`COMMAND_ACK_QUEUE`] acknowledgements
    /// already wait for the link, or their results leave no room for
    /// `result` (all results share [`MAX_COMMAND_RESULT_LEN`] bytes).
    pub fn acknowledge_command(
        &mut self,
        id: u32,
        status: CommandStatus,
        result: &[u8],
    ) -> Result<(), CommandAckQueueFull> {
        self.release_taken_command_ack();
        let used: usize = self
            .command_acks
            .iter()
            .take(self.command_ack_len)
            .map(|ack| usize::from(ack.2))
            .sum();
        let (Some(slot), Some(room), Ok(len)) = (
            self.command_acks.get_mut(self.command_ack_len),
            used.checked_add(result.len())
                .and_then(|end| self.command_results.get_mut(used..end)),
            u8::try_from(result.len()),
        ) else {
            return Err(CommandAckQueueFull);
        };
        room.copy_from_slice(result);
        *slot = (id, status, len);
        self.command_ack_len += 1;
        Ok(())
    }

    /// Removes the ack `poll_transmit` handed out last, if any.
    fn release_taken_command_ack(&mut self) {
        if !core::mem::take(&mut self.command_ack_taken) || self.command_ack_len == 0 {
            return;
        }
        let len = self
            .command_acks
            .first()
            .map_or(0, |ack| usize::from(ack.2));
        self.command_results.copy_within(len.., 0);
        self.command_acks.copy_within(1.., 0);
        self.command_ack_len -= 1;
    }

    /// The link went down (or never came up) because of `error`. The session
    /// backs off; the driver must drop its connection.
    pub fn on_link_lost(&mut self, now: Instant, error: LinkError) {
        let _ = self.fail(now, error);
    }

    /// Leaves [`ConnectionState::GaveUp`] or [`ConnectionState::BackingOff`]
    /// and connects right away, with a fresh backoff.
    pub fn retry_now(&mut self, now: Instant) {
        if matches!(
            self.phase,
            Phase::GaveUp(_) | Phase::BackingOff { .. } | Phase::NeedsProvisioning(_)
        ) {
            self.backoff.reset();
            self.phase = Phase::Connecting {
                deadline: now + self.config.connect_timeout,
            };
        }
    }

    /// The next instant at which [`Session::handle_timeout`] has work, or
    /// `None` if only an event can move the session on.
    #[must_use]
    pub fn poll_at(&self) -> Option<Instant> {
        match self.phase {
            Phase::Connecting { deadline } | Phase::Handshaking { deadline, .. } => Some(deadline),
            Phase::BackingOff { until } => Some(until),
            Phase::Connected => {
                let keepalive = match self.ping_outstanding {
                    Some((_, deadline)) => deadline,
                    None => self.ping_due,
                };
                // A changed signal strength waits for its interval.
                let signal = match (self.signal, self.signal_reported) {
                    (Some(signal), Some((reported, at))) if signal != reported => {
                        Some(at + SIGNAL_REPORT_INTERVAL)
                    }
                    _ => None,
                };
                Some(signal.map_or(keepalive, |signal| signal.min(keepalive)))
            }
            Phase::GaveUp(_) | Phase::NeedsProvisioning(_) => None,
        }
    }

    /// Runs the timers: starts the next attempt after a backoff, fails a
    /// slow connect or a missing pong. A keepalive ping that falls due comes
    /// out of [`Session::poll_transmit`].
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            Phase::BackingOff { until } if now >= until => {
                debug!("session: backoff over, connecting");
                self.phase = Phase::Connecting {
                    deadline: now + self.config.connect_timeout,
                };
            }
            Phase::Connecting { deadline } | Phase::Handshaking { deadline, .. }
                if now >= deadline =>
            {
                let _ = self.fail(now, LinkError::ConnectTimeout);
            }
            Phase::Connected => {
                if let Some((_, deadline)) = self.ping_outstanding
                    && now >= deadline
                {
                    warn!("session: no pong, link dead");
                    let _ = self.fail(now, LinkError::PongTimeout);
                }
            }
            _ => {}
        }
    }

    /// The next thing to send, or `None`. Each call hands out one item and
    /// counts it as sent; call until `None` after every event.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit<'_>> {
        self.release_taken_command_ack();
        match self.phase {
            Phase::Handshaking {
                deadline,
                hello_sent: false,
            } => {
                self.phase = Phase::Handshaking {
                    deadline,
                    hello_sent: true,
                };
                return Some(Transmit::Hello {
                    boot_id: self.boot_id,
                    last_acked_seq: self.acked,
                });
            }
            Phase::Handshaking { .. } | Phase::Connected => {}
            _ => return None,
        }
        if let Some(len) = self.pong_len.take() {
            return Some(Transmit::Pong(
                self.pong_payload.get(..usize::from(len)).unwrap_or(&[]),
            ));
        }
        if self.phase != Phase::Connected {
            return None;
        }
        if self.ping_outstanding.is_none() && now >= self.ping_due {
            self.ping_nonce = self.ping_nonce.wrapping_add(1);
            self.ping_outstanding = Some((self.ping_nonce, now + self.config.pong_timeout));
            trace!("session: ping {}", self.ping_nonce);
            return Some(Transmit::Ping {
                nonce: self.ping_nonce,
            });
        }
        if self.command_ack_len > 0
            && let Some(&(id, status, len)) = self.command_acks.first()
        {
            self.command_ack_taken = true;
            let result = self
                .command_results
                .get(..usize::from(len))
                .unwrap_or_default();
            return Some(Transmit::CommandAck { id, status, result });
        }
        if self.announced < self.announcements {
            let index = self.announced;
            self.announced += 1;
            return Some(Transmit::Announce { index });
        }
        if let Some(rssi_dbm) = self.signal_due(now) {
            self.signal_reported = Some((rssi_dbm, now));
            return Some(Transmit::Status { rssi_dbm });
        }
        if self.sent >= self.stored || self.sent.saturating_sub(self.acked) >= self.window {
            return None;
        }
        Some(Transmit::Publish { after: self.sent })
    }

    /// Every sequence number of this boot is used and acknowledged: draw a
    /// new boot id and number from 1 again. The server de-duplicates on
    /// `(device, boot_id, seq)`, so the new numbers mean new messages. A link
    /// that is up said `Hello` with the old boot id, so it is closed and the
    /// session connects again at once (no backoff: nothing failed).
    fn start_new_boot(&mut self, now: Instant) {
        let old = self.boot_id;
        while self.boot_id == old {
            self.boot_id = self.rng.next_u64();
        }
        info!(
            "session: sequence numbers exhausted, new boot id {}",
            self.boot_id
        );
        self.next_seq = 1;
        self.acked = 0;
        self.sent = 0;
        self.stored = 0;
        self.released = 0;
        if self.phase_is_link_up() {
            self.last_error = Some(LinkError::NewBoot);
            self.ping_outstanding = None;
            self.pong_len = None;
            self.phase = Phase::Connecting {
                deadline: now + self.config.connect_timeout,
            };
        }
    }

    fn phase_is_link_up(&self) -> bool {
        matches!(self.phase, Phase::Handshaking { .. } | Phase::Connected)
    }

    /// The server is alive: push the keepalive ping back, and keep the
    /// time stamps of a long connection young (32-bit instants compare
    /// right only within 24.8 days; see [`crate::time`]).
    fn heard(&mut self, now: Instant) {
        self.ping_due = now + self.keepalive;
        self.backoff.on_alive(now);
        if let Some((rssi_dbm, at)) = self.signal_reported {
            self.signal_reported = Some((rssi_dbm, at.at_most(now, SIGNAL_REPORT_INTERVAL)));
        }
        self.server_clock = self
            .server_clock
            .map(|clock| (unix_millis(clock, now), now));
    }

    /// The keepalive of a new connection: the interval less a uniform
    /// draw from its last `keepalive_jitter_percent`.
    fn draw_keepalive(&mut self) -> Duration {
        let interval = self.config.keepalive_interval.as_millis();
        let percent = u32::from(self.config.keepalive_jitter_percent.min(100));
        // `interval * percent / 100`, rounded down a little where the
        // product passes 32 bits (intervals of weeks).
        let spread = interval
            .checked_mul(percent)
            .map_or((interval / 100) * percent, |product| product / 100);
        let spread = crate::backoff::uniform_inclusive(&mut self.rng, 0, spread.min(interval));
        Duration::from_millis(u64::from(interval.saturating_sub(spread).max(1)))
    }

    fn acknowledge(&mut self, seq: u32) {
        if seq > self.acked {
            self.stats.acknowledged = self.stats.acknowledged.saturating_add(seq - self.acked);
            self.acked = seq;
        }
    }

    /// Drops the link: record the error, back off (or give up). Without a
    /// link (or an attempt) to drop, only returns the error.
    fn fail(&mut self, now: Instant, error: LinkError) -> LinkError {
        if !matches!(
            self.phase,
            Phase::Connecting { .. } | Phase::Handshaking { .. } | Phase::Connected
        ) {
            return error;
        }
        warn!("session: link lost: {:?}", error);
        self.last_error = Some(error);
        self.stats.link_failures = self.stats.link_failures.saturating_add(1);
        self.sent = self.acked;
        self.ping_outstanding = None;
        self.pong_len = None;
        if error.is_permanent() {
            error!(
                "session: {:?} is permanent: the device needs provisioning",
                error
            );
            self.phase = Phase::NeedsProvisioning(error);
            return error;
        }
        if let LinkError::Draining { retry_after_ms } = error {
            // Not the device's failure: come back when the server said,
            // and leave the backoff's count as it is.
            let delay =
                Duration::from_millis(u64::from(retry_after_ms)).min(self.backoff.config().cap());
            self.phase = Phase::BackingOff { until: now + delay };
            return error;
        }
        self.phase = match self.backoff.on_failure(now, &mut self.rng) {
            Ok(delay) => Phase::BackingOff { until: now + delay },
            Err(reason) => {
                error!("session: {:?}", reason);
                Phase::GaveUp(reason)
            }
        };
        error
    }
}

/// `time` as Unix time if the server's clock is known.
fn unix_time(server_clock: Option<(u64, Instant)>, time: Timestamp) -> Timestamp {
    match (time, server_clock) {
        (Timestamp::Boot(at), Some(clock)) => Timestamp::Unix(unix_millis(clock, at)),
        _ => time,
    }
}

/// The server's clock (Unix ms) at `at`, from its reading `server_ms` at
/// the local instant `then` (within 24.8 days of `at`).
fn unix_millis((server_ms, then): (u64, Instant), at: Instant) -> u64 {
    // The signed distance from `then` to `at`: one saturating add.
    let since = at.as_millis().wrapping_sub(then.as_millis()) as i32;
    server_ms.saturating_add_signed(i64::from(since))
}

#[cfg(test)]
mod tests {
    extern crate alloc;
    extern crate std;

    use alloc::collections::VecDeque;
    use alloc::string::String;
    use alloc::vec::Vec;

    use proptest::prelude::*;
    use rand_core::SeedableRng;
    use rand_xorshift::XorShiftRng;

    use super::*;
    use crate::backoff::Jitter;
    use crate::outbox::{Entry, RamOutbox, Restored};

    /// The session and a 256-byte RAM outbox, driven the way the client
    /// drives them (`Deref` reaches the session's own methods).
    struct TestSession {
        session: Session<XorShiftRng>,
        outbox: RamOutbox<256>,
    }

    impl core::ops::Deref for TestSession {
        type Target = Session<XorShiftRng>;
        fn deref(&self) -> &Self::Target {
            &self.session
        }
    }

    impl core::ops::DerefMut for TestSession {
        fn deref_mut(&mut self) -> &mut Self::Target {
            &mut self.session
        }
    }

    impl TestSession {
        fn new(config: SessionConfig, seed: u64) -> Self {
            Self::starting_at(config, seed, at(0))
        }

        fn starting_at(config: SessionConfig, seed: u64, now: Instant) -> Self {
            let session = Session::new(config, XorShiftRng::seed_from_u64(seed), now).unwrap();
            let mut outbox = RamOutbox::new();
            outbox.start_boot(session.boot_id());
            Self { session, outbox }
        }

        /// Publishes as the client does: number, store, report.
        fn publish(
            &mut self,
            now: Instant,
            channel: &str,
            payload: &[u8],
        ) -> Result<u32, PublishError> {
            let pending = self.session.begin_publish(now, self.outbox.is_empty())?;
            if let Some(boot_id) = pending.new_boot {
                self.outbox.start_boot(boot_id);
            }
            let entry = Entry::new(pending.seq, channel, payload).with_time(pending.time);
            match self.outbox.push(entry, self.session.config().full_policy()) {
                Ok(_) => {
                    self.session.on_stored(pending.seq);
                    Ok(pending.seq)
                }
                Err(e) => {
                    self.session.cancel_publish(pending.seq);
                    Err(e.into())
                }
            }
        }

        /// Frees what the server acknowledged.
        fn release(&mut self) {
            if let Some(seq) = self.session.release_due() {
                self.outbox.ack_through(seq);
                self.session.on_released(seq);
            }
        }

        /// The outbox, with acknowledged messages freed.
        fn outbox(&mut self) -> &RamOutbox<256> {
            self.release();
            &self.outbox
        }

        /// The next transmission, a `Publish` read from the outbox, with
        /// its time as sent.
        fn transmit(&mut self, now: Instant) -> Option<(Sent, Option<u64>)> {
            self.release();
            loop {
                let after = match self.session.poll_transmit(now)? {
                    Transmit::Publish { after } => after,
                    other => return Some((to_sent(other), None)),
                };
                match self.outbox.first_after(after) {
                    Some(e) => {
                        self.session.on_sent(e.seq);
                        let time = self.session.timestamp(e.time);
                        let sent =
                            Sent::Publish(e.seq, String::from(e.channel), e.payload.to_vec());
                        return Some((sent, time));
                    }
                    None => self.session.on_nothing_after(after),
                }
            }
        }
    }

    /// An owned copy of a [`Transmit`], for assertions.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Sent {
        Hello { boot_id: u64, last_acked_seq: u32 },
        Pong(Vec<u8>),
        Ping(u32),
        CommandAck(u32, CommandStatus, Vec<u8>),
        Announce(u16),
        Status(i16),
        Publish(u32, String, Vec<u8>),
    }

    fn at(millis: u64) -> Instant {
        Instant::from_millis(millis)
    }

    fn secs(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn server_clock_saturates_at_both_ends_and_across_the_wrap() {
        assert_eq!(unix_millis((1_000, at(500)), at(700)), 1_200);
        assert_eq!(unix_millis((1_000, at(500)), at(300)), 800);
        assert_eq!(unix_millis((100, at(500)), at(300)), 0);
        assert_eq!(unix_millis((u64::MAX - 5, at(0)), at(10)), u64::MAX);
        // `then` just before the 32-bit wrap, `at` just after.
        let then = at(u64::from(u32::MAX) - 9);
        assert_eq!(unix_millis((1_000, then), at(1 << 32)), 1_010);
        assert_eq!(unix_millis((1_000, at(1 << 32)), then), 990);
    }

    /// Deterministic timers: no backoff or keepalive jitter.
    fn config() -> SessionConfig {
        SessionConfig::default()
            .with_backoff(
                BackoffConfig::default()
                    .with_base(secs(1))
                    .with_cap(secs(60))
                    .with_jitter(Jitter::None)
                    .with_healthy_after(secs(30)),
            )
            .with_keepalive_jitter_percent(0)
    }

    fn session(config: SessionConfig) -> TestSession {
        TestSession::new(config, 42)
    }

    fn drain(session: &mut TestSession, now: Instant) -> Vec<Sent> {
        let mut sent = Vec::new();
        while let Some((transmit, _)) = session.transmit(now) {
            sent.push(transmit);
        }
        sent
    }

    fn published_seqs(sent: &[Sent]) -> Vec<u32> {
        sent.iter()
            .filter_map(|s| match s {
                Sent::Publish(seq, ..) => Some(*seq),
                _ => None,
            })
            .collect()
    }

    /// Link up, Hello, Welcome(stored_through).
    fn connect(session: &mut TestSession, now: Instant, stored_through: u32) -> Vec<Sent> {
        session.on_link_up(now);
        let sent = drain(session, now);
        assert_eq!(
            sent.first(),
            Some(&Sent::Hello {
                boot_id: session.boot_id(),
                last_acked_seq: session.acked_seq()
            })
        );
        assert_eq!(session.state(), ConnectionState::Handshaking);
        session.on_welcome(now, stored_through, 64, 0).unwrap();
        assert_eq!(session.state(), ConnectionState::Connected);
        drain(session, now)
    }

    /// The state is fixed at compile time; `docs/performance.md` records
    /// these numbers (`cargo test -p tether-core session_memory -- --nocapture`).
    #[test]
    fn session_memory() {
        let state = size_of::<Session<()>>();
        let with_rng = size_of::<Session<XorShiftRng>>();
        std::println!("Session state without RNG: {state} bytes");
        std::println!("Session with XorShiftRng: {with_rng} bytes");
        // 125 of them are the buffer for a pong owed to the server, 128 the
        // results of queued command acknowledgements.
        assert!(state <= 720, "session state grew to {state} bytes");
        assert!(with_rng <= 720 + 16);
    }

    /// Issue 13: a fleet that connected in the same second (after a server
    /// restart) and then lost its link half-open (no FIN, no pongs) must not
    /// time out in the same second. Each session draws its keepalive once
    /// per connection from the last quarter of the interval, so the pings,
    /// and the pong timeouts after them, spread over five seconds.
    #[test]
    fn keepalive_jitter_spreads_a_fleet_that_connected_together() {
        const DEVICES: u64 = 2_000;
        let timeouts = |jitter_percent| {
            let mut per_second = [0u32; 40];
            for seed in 0..DEVICES {
                let config = config().with_keepalive_jitter_percent(jitter_percent);
                let mut session = TestSession::new(config, seed.wrapping_mul(0x9E37_79B9));
                let now = at(0);
                session.session.on_link_up(now);
                drain(&mut session, now);
                session.session.on_welcome(now, 0, 32, 0).unwrap();
                // The link stalls: nothing is heard any more. Ping when due,
                // then time out when the pong does not come.
                let mut now = now;
                while session.session.state() == ConnectionState::Connected {
                    now = session.session.poll_at().unwrap();
                    session.session.handle_timeout(now);
                    drain(&mut session, now);
                }
                per_second[(now.as_millis() / 1_000) as usize] += 1;
            }
            per_second
        };
        let aligned = timeouts(0);
        // Without jitter: all in one second (20 s ping + 10 s pong timeout).
        assert_eq!(aligned[30], DEVICES as u32, "{aligned:?}");
        let spread = timeouts(25);
        // With jitter: 25 to 30 s, no second with more than a quarter of
        // the fleet (a fifth on average).
        assert!(
            spread[..25].iter().chain(&spread[31..]).all(|&n| n == 0),
            "{spread:?}"
        );
        assert!(
            spread.iter().all(|&n| u64::from(n) * 4 <= DEVICES),
            "{spread:?}"
        );
        std::println!("timeouts per second, no jitter: {:?}", &aligned[24..31]);
        std::println!("timeouts per second, 25 % jitter: {:?}", &spread[24..31]);
    }

    #[test]
    fn announcements_follow_every_welcome_before_any_publish() {
        let mut s = session(config());
        s.set_announcements(3);
        s.publish(at(0), "t", b"1").unwrap();
        s.publish(at(0), "t", b"2").unwrap();
        let sent = connect(&mut s, at(10), 0);
        assert_eq!(
            sent,
            [
                Sent::Announce(0),
                Sent::Announce(1),
                Sent::Announce(2),
                Sent::Publish(1, "t".into(), b"1".to_vec()),
                Sent::Publish(2, "t".into(), b"2".to_vec()),
            ]
        );
        // Not again on the same link...
        s.publish(at(20), "t", b"3").unwrap();
        assert_eq!(published_seqs(&drain(&mut s, at(20))), [3]);
        // ...but again on the next one, before the resends.
        s.on_link_lost(at(30), LinkError::Io);
        s.handle_timeout(at(10_000));
        let sent = connect(&mut s, at(10_000), 1);
        assert_eq!(
            sent[..3],
            [Sent::Announce(0), Sent::Announce(1), Sent::Announce(2)]
        );
        assert_eq!(published_seqs(&sent), [2, 3]);
        // None before Welcome.
        s.on_link_lost(at(10_050), LinkError::Io);
        s.handle_timeout(at(20_000));
        s.on_link_up(at(20_000));
        assert!(
            drain(&mut s, at(20_000))
                .iter()
                .all(|sent| matches!(sent, Sent::Hello { .. }))
        );
    }

    #[test]
    fn the_signal_is_reported_once_per_link_then_when_it_changes_at_most_every_minute() {
        let mut s = session(config().with_keepalive_interval(secs(600)));
        s.set_announcements(1);
        // Nothing to report until the driver knows the signal.
        assert_eq!(connect(&mut s, at(0), 0), [Sent::Announce(0)]);
        s.set_signal(-67);
        assert_eq!(drain(&mut s, at(1_000)), [Sent::Status(-67)]);
        assert_eq!(
            s.poll_at(),
            Some(at(600_000)),
            "nothing due but the keepalive"
        );
        // The same value is not reported again; a change waits its minute.
        s.set_signal(-67);
        assert_eq!(drain(&mut s, at(2_000)), []);
        s.set_signal(-71);
        assert_eq!(drain(&mut s, at(30_000)), []);
        assert_eq!(s.poll_at(), Some(at(61_000)));
        assert_eq!(drain(&mut s, at(60_999)), []);
        assert_eq!(drain(&mut s, at(61_000)), [Sent::Status(-71)]);
        // A new link reports the latest value at once, after the
        // announcements.
        s.on_link_lost(at(70_000), LinkError::Io);
        s.handle_timeout(at(80_000));
        assert_eq!(
            connect(&mut s, at(80_000), 0),
            [Sent::Announce(0), Sent::Status(-71)]
        );
    }

    #[test]
    fn config_validation() {
        assert_eq!(SessionConfig::default().validate(), Ok(()));
        assert_eq!(
            SessionConfig::default()
                .with_pong_timeout(Duration::ZERO)
                .validate(),
            Err(SessionConfigError::ZeroTimeout)
        );
        assert_eq!(
            SessionConfig::default().with_max_in_flight(0).validate(),
            Err(SessionConfigError::ZeroInFlight)
        );
        assert_eq!(
            Session::new(
                SessionConfig::default()
                    .with_backoff(BackoffConfig::default().with_base(Duration::ZERO)),
                XorShiftRng::seed_from_u64(1),
                at(0)
            )
            .err(),
            Some(SessionConfigError::Backoff(BackoffConfigError::ZeroBase))
        );
    }

    #[test]
    fn normal_flow_publish_ack_and_keepalive() {
        let mut s = session(config());
        assert_eq!(s.state(), ConnectionState::Connecting);
        assert_eq!(s.poll_at(), Some(at(10_000)));
        assert_eq!(s.poll_transmit(at(0)), None);
        assert!(connect(&mut s, at(100), 0).is_empty());

        assert_eq!(s.publish(at(0), "temp", b"1"), Ok(1));
        assert_eq!(s.publish(at(0), "hum", b"2"), Ok(2));
        assert_eq!(
            drain(&mut s, at(200)),
            [
                Sent::Publish(1, "temp".into(), b"1".to_vec()),
                Sent::Publish(2, "hum".into(), b"2".to_vec())
            ]
        );
        s.on_ack(at(300), 1).unwrap();
        assert_eq!(s.outbox().len(), 1);
        s.on_ack(at(300), 2).unwrap();
        assert!(s.outbox().is_empty());
        // A stale ack changes nothing.
        s.on_ack(at(300), 1).unwrap();
        assert_eq!(s.stats().acknowledged, 2);
        assert_eq!(s.stats().transmitted, 2);

        // Keepalive: 20 s after the last message heard.
        assert_eq!(s.poll_at(), Some(at(20_300)));
        assert!(drain(&mut s, at(20_299)).is_empty());
        assert_eq!(drain(&mut s, at(20_300)), [Sent::Ping(1)]);
        // Pong deadline 10 s later.
        assert_eq!(s.poll_at(), Some(at(30_300)));
        s.on_pong(at(20_400), &1u32.to_le_bytes());
        assert_eq!(s.poll_at(), Some(at(40_400)));
        s.handle_timeout(at(40_000));
        assert_eq!(s.state(), ConnectionState::Connected);
        assert_eq!(s.last_error(), None);
    }

    #[test]
    fn publishes_while_offline_are_sent_after_welcome() {
        let mut s = session(config());
        for i in 0..3u8 {
            s.publish(at(0), "c", &[i]).unwrap();
        }
        assert_eq!(published_seqs(&connect(&mut s, at(5), 0)), [1, 2, 3]);
    }

    #[test]
    fn connect_timeout_backs_off_then_retries() {
        let mut s = session(config());
        s.handle_timeout(at(9_999));
        assert_eq!(s.state(), ConnectionState::Connecting);
        s.handle_timeout(at(10_000));
        assert_eq!(s.state(), ConnectionState::BackingOff { until: at(11_000) });
        assert_eq!(s.last_error(), Some(LinkError::ConnectTimeout));
        assert_eq!(s.poll_at(), Some(at(11_000)));
        s.handle_timeout(at(11_000));
        assert_eq!(s.state(), ConnectionState::Connecting);
        // Connector error: the delay doubles.
        s.on_link_lost(at(11_500), LinkError::ConnectFailed);
        assert_eq!(s.state(), ConnectionState::BackingOff { until: at(13_500) });
        // Stuck waiting for Welcome.
        s.handle_timeout(at(13_500));
        s.on_link_up(at(13_600));
        drain(&mut s, at(13_600));
        s.handle_timeout(at(23_600));
        assert_eq!(s.last_error(), Some(LinkError::ConnectTimeout));
        assert_eq!(s.state(), ConnectionState::BackingOff { until: at(27_600) });
    }

    #[test]
    fn connect_timeout_counts_from_the_start_of_the_attempt() {
        let mut s = session(config());
        // The driver only starts a minute after the session was created.
        s.begin_connect(at(60_000));
        assert_eq!(s.poll_at(), Some(at(70_000)));
        s.handle_timeout(at(69_999));
        assert_eq!(s.state(), ConnectionState::Connecting);
        s.handle_timeout(at(70_000));
        assert_eq!(s.last_error(), Some(LinkError::ConnectTimeout));
        // Outside `Connecting` it changes nothing.
        let before = s.state();
        s.begin_connect(at(80_000));
        assert_eq!(s.state(), before);
    }

    #[test]
    fn drop_after_publish_before_ack_resends_in_order() {
        let mut s = session(config());
        connect(&mut s, at(0), 0);
        for i in 0..4u8 {
            s.publish(at(0), "c", &[i]).unwrap();
        }
        assert_eq!(published_seqs(&drain(&mut s, at(1))), [1, 2, 3, 4]);
        s.on_ack(at(2), 1).unwrap();
        // The link drops: 2..4 were sent but not acknowledged.
        s.on_link_lost(at(3), LinkError::EndOfStream);
        assert_eq!(s.state(), ConnectionState::BackingOff { until: at(1_003) });
        assert_eq!(s.poll_transmit(at(3)), None);
        s.publish(at(0), "c", b"5").unwrap();
        s.handle_timeout(at(1_003));
        // The server had stored 2 (its Ack was lost): resend 3, 4, 5.
        s.on_link_up(at(1_100));
        assert_eq!(
            drain(&mut s, at(1_100)),
            [Sent::Hello {
                boot_id: s.boot_id(),
                last_acked_seq: 1
            }]
        );
        s.on_welcome(at(1_100), 2, 64, 0).unwrap();
        assert_eq!(s.outbox().len(), 3);
        assert_eq!(published_seqs(&drain(&mut s, at(1_100))), [3, 4, 5]);
    }

    #[test]
    fn drop_mid_frame_loses_nothing() {
        // The driver was writing a Publish when the transport failed: from
        // the session's point of view the message was handed out but the
        // server never got it (Welcome says stored through 0).
        let mut s = session(config());
        connect(&mut s, at(0), 0);
        s.publish(at(0), "c", b"x").unwrap();
        assert_eq!(published_seqs(&drain(&mut s, at(1))), [1]);
        s.on_link_lost(at(2), LinkError::Io);
        s.handle_timeout(at(5_000));
        assert_eq!(published_seqs(&connect(&mut s, at(5_000), 0)), [1]);
    }

    #[test]
    fn server_that_never_acks_fills_the_window_then_the_outbox() {
        let mut s = session(config().with_max_in_flight(3));
        connect(&mut s, at(0), 0);
        // 18-byte entries in 256 bytes: 14 fit.
        let mut accepted = 0;
        while s.publish(at(0), "c", b"abcd").is_ok() {
            accepted += 1;
        }
        assert_eq!(accepted, 14);
        assert_eq!(s.publish(at(0), "c", b"abcd"), Err(PublishError::Full));
        // Only the window goes out.
        assert_eq!(published_seqs(&drain(&mut s, at(1))), [1, 2, 3]);
        assert_eq!(s.outbox().dropped(), 0);
        // One ack opens the window by one.
        s.on_ack(at(2), 1).unwrap();
        assert_eq!(published_seqs(&drain(&mut s, at(2))), [4]);
        assert_eq!(s.publish(at(0), "c", b"abcd"), Ok(15));
    }

    #[test]
    fn server_window_limits_in_flight_and_zero_window_is_refused() {
        let mut s = session(config().with_max_in_flight(8));
        for _ in 0..5 {
            s.publish(at(0), "c", b"x").unwrap();
        }
        s.on_link_up(at(0));
        drain(&mut s, at(0));
        s.on_welcome(at(0), 0, 2, 0).unwrap();
        assert_eq!(published_seqs(&drain(&mut s, at(0))), [1, 2]);
        s.on_link_lost(at(1), LinkError::Io);
        s.handle_timeout(at(1_001));
        s.on_link_up(at(1_001));
        drain(&mut s, at(1_001));
        assert_eq!(s.on_welcome(at(1_001), 0, 0, 0), Err(LinkError::Protocol));
    }

    #[test]
    fn outbox_full_drop_oldest_counts_drops_and_leaves_gaps() {
        let mut s = session(config().with_full_policy(FullPolicy::DropOldest));
        for i in 0..30u32 {
            assert_eq!(s.publish(at(0), "c", b"abcd"), Ok(i + 1));
        }
        assert_eq!(s.outbox().dropped(), 16);
        assert_eq!(s.outbox().len(), 14);
        assert_eq!(s.stats().published, 30);
        let sent = connect(&mut s, at(0), 0);
        assert_eq!(published_seqs(&sent), (17..=30).collect::<Vec<_>>());
        // Acking through a dropped number works.
        s.on_ack(at(1), 30).unwrap();
        assert!(s.outbox().is_empty());
    }

    #[test]
    fn oversized_and_bad_messages_are_refused_with_typed_errors() {
        let mut s = session(config());
        assert_eq!(
            s.publish(at(0), "c", &[0; 300]),
            Err(PublishError::TooLarge)
        );
        let long = core::str::from_utf8(&[b'a'; 300]).unwrap();
        assert_eq!(
            s.publish(at(0), long, b""),
            Err(PublishError::ChannelTooLong)
        );
        s.next_seq = u32::MAX - 1;
        assert_eq!(s.publish(at(0), "c", b""), Ok(u32::MAX - 1));
        assert_eq!(
            s.publish(at(0), "c", b""),
            Err(PublishError::SequenceExhausted)
        );
    }

    /// The sequence numbers and Unix times of the `Publish` transmissions.
    fn publish_times(s: &mut TestSession, now: Instant) -> Vec<(u32, Option<u64>)> {
        let mut times = Vec::new();
        while let Some((transmit, time)) = s.transmit(now) {
            if let Sent::Publish(seq, ..) = transmit {
                times.push((seq, time));
            }
        }
        times
    }

    #[test]
    fn publishes_are_stamped_with_unix_time_once_the_server_clock_is_known() {
        const SERVER: u64 = 1_764_000_000_000;
        let mut s = session(config());
        // Offline after boot: the server's time is unknown, so the outbox
        // keeps the local instant.
        s.publish(at(1_000), "c", b"1").unwrap();
        s.publish(at(4_000), "c", b"2").unwrap();
        assert_eq!(
            s.outbox().oldest().unwrap().time,
            Some(Timestamp::Boot(at(1_000)))
        );
        // Welcome at local 10 s says the server's clock reads SERVER: the
        // stored messages go out converted.
        s.on_link_up(at(10_000));
        drain(&mut s, at(10_000));
        s.on_welcome(at(10_000), 0, 64, SERVER).unwrap();
        assert_eq!(
            publish_times(&mut s, at(10_000)),
            [(1, Some(SERVER - 9_000)), (2, Some(SERVER - 6_000))]
        );
        // Known now: stamped at publish time, stored as Unix time.
        s.publish(at(12_500), "c", b"3").unwrap();
        assert_eq!(
            s.outbox().first_after(2).unwrap().time,
            Some(Timestamp::Unix(SERVER + 2_500))
        );
        assert_eq!(
            publish_times(&mut s, at(13_000)),
            [(3, Some(SERVER + 2_500))]
        );
        // A reconnect re-synchronizes: the server clock moved 100 ms more
        // than ours meanwhile. Messages stamped in Unix time keep it;
        // boot-relative ones are converted with the newest clock.
        s.on_link_lost(at(20_000), LinkError::Io);
        s.publish(at(20_000), "c", b"4").unwrap();
        s.handle_timeout(at(21_000));
        s.on_link_up(at(21_000));
        drain(&mut s, at(21_000));
        s.on_welcome(at(21_000), 0, 64, SERVER + 11_100).unwrap();
        s.publish(at(22_000), "c", b"5").unwrap();
        assert_eq!(
            publish_times(&mut s, at(22_000)),
            [
                (1, Some(SERVER - 9_000 + 100)),
                (2, Some(SERVER - 6_000 + 100)),
                (3, Some(SERVER + 2_500)),
                (4, Some(SERVER + 10_000)),
                (5, Some(SERVER + 12_100)),
            ]
        );
    }

    #[test]
    fn a_server_without_a_clock_leaves_times_unknown() {
        let mut s = session(config());
        s.publish(at(1_000), "c", b"1").unwrap();
        s.on_link_up(at(2_000));
        drain(&mut s, at(2_000));
        s.on_welcome(at(2_000), 0, 64, 0).unwrap();
        assert_eq!(publish_times(&mut s, at(2_000)), [(1, None)]);
    }

    #[test]
    fn exhausted_sequence_numbers_start_a_new_boot_once_everything_is_acknowledged() {
        let mut server = ServerModel::default();
        let mut s = session(config());
        let first_boot = s.boot_id();
        // As if 4 294 967 290 messages had been published and acknowledged.
        s.next_seq = u32::MAX - 2;
        s.acked = u32::MAX - 3;
        s.sent = u32::MAX - 3;
        s.stored = u32::MAX - 3;
        s.released = u32::MAX - 3;
        s.on_link_up(at(0));
        let welcome = server.receive(&drain(&mut s, at(0))).unwrap();
        s.on_welcome(at(0), welcome, 64, 0).unwrap();
        assert_eq!(s.publish(at(1), "c", b"a"), Ok(u32::MAX - 2));
        assert_eq!(s.publish(at(1), "c", b"b"), Ok(u32::MAX - 1));
        // The last two wait for their Ack: no new boot yet.
        assert_eq!(
            s.publish(at(1), "c", b"c"),
            Err(PublishError::SequenceExhausted)
        );
        server.receive(&drain(&mut s, at(1)));
        s.on_ack(at(2), u32::MAX - 1).unwrap();
        assert!(s.outbox().is_empty());
        // Everything acknowledged: a new boot id, numbering from 1, and the
        // link is closed normally so the next Hello announces the new boot.
        assert_eq!(s.publish(at(3), "c", b"c"), Ok(1));
        assert_ne!(s.boot_id(), first_boot);
        assert_eq!(s.state(), ConnectionState::Connecting);
        assert_eq!(s.last_error(), Some(LinkError::NewBoot));
        assert_eq!(LinkError::NewBoot.close_code(), Some(1000));
        assert_eq!(s.stats().link_failures, 0, "not a failure: no backoff");
        s.on_link_up(at(3));
        let sent = drain(&mut s, at(3));
        assert_eq!(
            sent[0],
            Sent::Hello {
                boot_id: s.boot_id(),
                last_acked_seq: 0
            }
        );
        let welcome = server.receive(&sent).unwrap();
        assert_eq!(welcome, 0, "the server has not seen the new boot");
        s.on_welcome(at(3), welcome, 64, 0).unwrap();
        server.receive(&drain(&mut s, at(3)));
        s.on_ack(at(4), 1).unwrap();
        assert_eq!(s.publish(at(5), "c", b"d"), Ok(2));
        server.receive(&drain(&mut s, at(5)));
        // Nothing was taken for a duplicate.
        assert_eq!(server.duplicates, 0);
        assert_eq!(server.boots.len(), 2);
        assert_eq!(server.boots[0].1, u32::MAX - 1);
        assert_eq!(
            server.boots[1].2,
            [
                (1, "c".into(), b"c".to_vec()),
                (2, "c".into(), b"d".to_vec())
            ]
        );
    }

    #[test]
    fn exhaustion_while_offline_keeps_connecting_under_the_new_boot() {
        let mut s = session(config());
        let first_boot = s.boot_id();
        s.next_seq = u32::MAX;
        assert_eq!(s.publish(at(0), "c", b"x"), Ok(1));
        assert_ne!(s.boot_id(), first_boot);
        assert_eq!(s.state(), ConnectionState::Connecting);
        assert_eq!(s.last_error(), None);
        s.on_link_up(at(0));
        let boot_id = s.boot_id();
        assert_eq!(
            drain(&mut s, at(0)),
            [Sent::Hello {
                boot_id,
                last_acked_seq: 0
            }]
        );
    }

    #[test]
    fn permanent_failures_stop_in_needs_provisioning_until_retry_now() {
        for (error, permanent) in [
            (LinkError::Refused { status: 401 }, true),
            (LinkError::Refused { status: 403 }, true),
            (LinkError::Refused { status: 503 }, false),
            (LinkError::Closed { code: 4005 }, true),
            (LinkError::Closed { code: 4006 }, true),
            (LinkError::Closed { code: 4009 }, true),
            (LinkError::Closed { code: 4013 }, false),
            (LinkError::Closed { code: 1001 }, false),
            (LinkError::Certificate, true),
            (LinkError::ConnectFailed, false),
            (LinkError::HandshakeFailed, false),
        ] {
            assert_eq!(error.is_permanent(), permanent, "{error:?}");
            let mut s = session(config());
            s.publish(at(0), "c", b"x").unwrap();
            s.on_link_lost(at(100), error);
            if permanent {
                assert_eq!(s.state(), ConnectionState::NeedsProvisioning(error));
                assert_eq!(s.poll_at(), None, "no retry timer");
                s.handle_timeout(at(3_600_000));
                assert_eq!(s.state(), ConnectionState::NeedsProvisioning(error));
                // New settings: connect again, and the message is still there.
                s.retry_now(at(3_600_000));
                assert_eq!(s.state(), ConnectionState::Connecting);
                assert_eq!(published_seqs(&connect(&mut s, at(3_600_000), 0)), [1]);
            } else {
                assert_eq!(s.state(), ConnectionState::BackingOff { until: at(1_100) });
            }
        }
    }

    #[test]
    fn a_resumed_boot_keeps_its_id_and_numbering_and_the_server_drops_what_it_has() {
        // A persistent outbox held 5..=9 of boot 77 when the power came back.
        let restored = Restored {
            boot_id: 77,
            first_seq: 5,
            last_seq: 9,
        };
        let session =
            Session::resume(config(), XorShiftRng::seed_from_u64(3), at(0), restored).unwrap();
        let mut outbox = RamOutbox::new();
        outbox.start_boot(77);
        for seq in 5..=9 {
            outbox
                .try_push(Entry::new(seq, "c", &[u8::try_from(seq).unwrap()]))
                .unwrap();
        }
        let mut s = TestSession { session, outbox };
        assert_eq!(s.boot_id(), 77);
        assert_eq!(s.acked_seq(), 4);
        assert_eq!(s.stored_seq(), 9);
        // New readings continue the numbering.
        assert_eq!(s.publish(at(0), "c", b"new"), Ok(10));
        s.on_link_up(at(0));
        assert_eq!(
            drain(&mut s, at(0)),
            [Sent::Hello {
                boot_id: 77,
                last_acked_seq: 4
            }]
        );
        // The server stored through 7 before the power cut: 8 on goes out.
        s.on_welcome(at(0), 7, 64, 0).unwrap();
        assert_eq!(published_seqs(&drain(&mut s, at(0))), [8, 9, 10]);
        assert_eq!(s.outbox().len(), 3);

        // A server claiming more than the outbox ever stored is refused.
        let mut s = TestSession {
            session: Session::resume(config(), XorShiftRng::seed_from_u64(3), at(0), restored)
                .unwrap(),
            outbox: RamOutbox::new(),
        };
        s.on_link_up(at(0));
        drain(&mut s, at(0));
        assert_eq!(s.on_welcome(at(0), 10, 64, 0), Err(LinkError::Protocol));
    }

    #[test]
    fn a_refused_store_gives_its_number_back_and_a_lost_message_is_skipped() {
        let mut s = session(config());
        let first = s.begin_publish(at(0), true).unwrap();
        assert_eq!(first.seq, 1);
        s.cancel_publish(first.seq);
        let again = s.begin_publish(at(0), true).unwrap();
        assert_eq!(again.seq, 1, "the number is free again");
        // A driver cancelled while storing: the number stays taken.
        let next = s.begin_publish(at(0), true).unwrap();
        assert_eq!(next.seq, 2);
        s.on_stored(2);
        s.on_link_up(at(0));
        let boot_id = s.boot_id();
        assert_eq!(
            s.poll_transmit(at(0)),
            Some(Transmit::Hello {
                boot_id,
                last_acked_seq: 0
            })
        );
        s.on_welcome(at(0), 0, 64, 0).unwrap();
        // The outbox has nothing above 0 (1 was never stored; say 2 was
        // lost): the session skips to what it knows is stored.
        assert_eq!(s.poll_transmit(at(0)), Some(Transmit::Publish { after: 0 }));
        s.on_nothing_after(0);
        assert_eq!(s.poll_transmit(at(0)), None);
        assert_eq!(s.timestamp(None), None);
    }

    #[test]
    fn pong_timeout_is_a_dead_link() {
        let mut s = session(config());
        connect(&mut s, at(0), 0);
        s.publish(at(0), "c", b"x").unwrap();
        assert_eq!(
            drain(&mut s, at(20_000)),
            [Sent::Ping(1), Sent::Publish(1, "c".into(), b"x".to_vec())]
        );
        // A pong echoing another nonce does not count.
        s.on_pong(at(21_000), &7u32.to_le_bytes());
        s.handle_timeout(at(29_999));
        assert_eq!(s.state(), ConnectionState::Connected);
        s.handle_timeout(at(30_000));
        assert_eq!(s.last_error(), Some(LinkError::PongTimeout));
        assert_eq!(s.state(), ConnectionState::BackingOff { until: at(31_000) });
        // The unacknowledged message is still there for the next link.
        s.handle_timeout(at(31_000));
        assert_eq!(published_seqs(&connect(&mut s, at(31_000), 0)), [1]);
    }

    #[test]
    fn answers_server_pings_first() {
        let mut s = session(config());
        connect(&mut s, at(0), 0);
        s.publish(at(0), "c", b"x").unwrap();
        s.on_ping(at(1), b"abc").unwrap();
        assert_eq!(
            drain(&mut s, at(1)),
            [
                Sent::Pong(b"abc".to_vec()),
                Sent::Publish(1, "c".into(), b"x".to_vec())
            ]
        );
        // A ping payload above 125 bytes breaks RFC 6455.
        assert_eq!(s.on_ping(at(2), &[0; 126]), Err(LinkError::Protocol));
        assert!(matches!(s.state(), ConnectionState::BackingOff { .. }));
    }

    #[test]
    fn a_draining_server_is_left_for_the_delay_it_suggests() {
        let mut s = session(config());
        connect(&mut s, at(0), 0);
        let hint = LinkError::Draining {
            retry_after_ms: 350,
        };
        s.on_link_lost(at(1_000), hint);
        assert!(matches!(s.state(), ConnectionState::BackingOff { .. }));
        assert_eq!(s.poll_at(), Some(at(1_350)));
        assert_eq!(hint.close_code(), Some(4017));
        assert!(!hint.is_permanent());
        s.handle_timeout(at(1_349));
        assert!(matches!(s.state(), ConnectionState::BackingOff { .. }));
        s.handle_timeout(at(1_350));
        assert_eq!(s.state(), ConnectionState::Connecting);
        // A hint longer than the backoff's cap waits the cap, and a real
        // failure afterwards starts the backoff from its base.
        connect(&mut s, at(2_000), 0);
        s.on_link_lost(
            at(3_000),
            LinkError::Draining {
                retry_after_ms: u32::MAX,
            },
        );
        assert_eq!(s.poll_at(), Some(at(3_000) + secs(60)));
        s.handle_timeout(at(63_000));
        s.on_link_lost(at(63_000), LinkError::ConnectFailed);
        assert_eq!(s.poll_at(), Some(at(64_000)));
    }

    #[test]
    fn server_close_codes_are_reported_and_echoed() {
        let mut s = session(config());
        connect(&mut s, at(0), 0);
        s.on_link_lost(at(1), LinkError::Closed { code: 1001 });
        assert_eq!(s.last_error(), Some(LinkError::Closed { code: 1001 }));
        assert_eq!(s.last_error().and_then(|e| e.close_code()), Some(1001));
        assert!(matches!(s.state(), ConnectionState::BackingOff { .. }));
        assert_eq!(LinkError::Malformed.close_code(), Some(1007));
        assert_eq!(LinkError::Protocol.close_code(), Some(1002));
        assert_eq!(LinkError::PongTimeout.close_code(), None);
    }

    #[test]
    fn malformed_and_out_of_rule_server_messages_drop_the_link_and_lose_nothing() {
        let mut s = session(config());
        // A message before Welcome.
        s.on_link_up(at(0));
        drain(&mut s, at(0));
        assert_eq!(s.on_message(at(0)), Err(LinkError::Protocol));
        assert_eq!(s.state(), ConnectionState::BackingOff { until: at(1_000) });
        // A Welcome before Hello went out.
        s.handle_timeout(at(1_000));
        s.on_link_up(at(1_000));
        assert_eq!(s.on_welcome(at(1_000), 0, 64, 0), Err(LinkError::Protocol));
        // A Welcome claiming messages never published.
        s.handle_timeout(at(10_000));
        s.on_link_up(at(10_000));
        drain(&mut s, at(10_000));
        assert_eq!(s.on_welcome(at(10_000), 1, 64, 0), Err(LinkError::Protocol));
        // An Ack beyond what was sent.
        s.handle_timeout(at(20_000));
        s.publish(at(0), "c", b"x").unwrap();
        connect(&mut s, at(20_000), 0);
        assert_eq!(s.on_ack(at(20_001), 2), Err(LinkError::Protocol));
        // The driver could not decode a message.
        s.handle_timeout(at(60_000));
        assert_eq!(published_seqs(&connect(&mut s, at(60_000), 0)), [1]);
        s.on_link_lost(at(60_001), LinkError::Malformed);
        assert_eq!(s.last_error(), Some(LinkError::Malformed));
        assert_eq!(s.outbox().len(), 1);
        // Events without a link change nothing.
        let before = s.state();
        assert_eq!(s.on_ack(at(60_002), 1), Err(LinkError::Protocol));
        s.on_link_lost(at(60_002), LinkError::Io);
        assert_eq!(s.state(), before);
        assert_eq!(s.stats().link_failures, 5);
    }

    #[test]
    fn backoff_resets_only_after_a_healthy_connection() {
        let mut s = session(config());
        let mut now = 0;
        let mut delays = Vec::new();
        for _ in 0..4 {
            connect(&mut s, at(now), 0);
            // Accepted and dropped at once.
            s.on_link_lost(at(now + 10), LinkError::EndOfStream);
            let ConnectionState::BackingOff { until } = s.state() else {
                panic!()
            };
            delays.push(u64::from(until.as_millis()) - now - 10);
            now = u64::from(until.as_millis());
            s.handle_timeout(at(now));
        }
        assert_eq!(delays, [1_000, 2_000, 4_000, 8_000]);
        // Healthy for 30 s: back to the base delay.
        connect(&mut s, at(now), 0);
        s.on_pong(at(now), &[]);
        s.on_link_lost(at(now + 30_000), LinkError::EndOfStream);
        assert_eq!(
            s.state(),
            ConnectionState::BackingOff {
                until: at(now + 31_000)
            }
        );
    }

    #[test]
    fn gives_up_and_retries_on_request() {
        let mut s = session(
            config().with_backoff(
                BackoffConfig::default()
                    .with_jitter(Jitter::None)
                    .with_max_attempts(Some(2)),
            ),
        );
        s.on_link_lost(at(0), LinkError::ConnectFailed);
        s.handle_timeout(at(1_000));
        s.on_link_lost(at(1_000), LinkError::ConnectFailed);
        s.handle_timeout(at(3_000));
        s.on_link_lost(at(3_000), LinkError::ConnectFailed);
        assert_eq!(s.state(), ConnectionState::GaveUp(GaveUp::MaxAttempts));
        assert_eq!(s.poll_at(), None);
        s.retry_now(at(4_000));
        assert_eq!(s.state(), ConnectionState::Connecting);
    }

    #[test]
    fn command_acks_queue_and_go_out_when_connected() {
        let mut s = session(config());
        for id in 0..COMMAND_ACK_QUEUE as u32 {
            s.acknowledge_command(id, CommandStatus::Ok, b"").unwrap();
        }
        assert_eq!(
            s.acknowledge_command(99, CommandStatus::Ok, b""),
            Err(CommandAckQueueFull)
        );
        let sent = connect(&mut s, at(0), 0);
        let expected: Vec<Sent> = (0..COMMAND_ACK_QUEUE as u32)
            .map(|id| Sent::CommandAck(id, CommandStatus::Ok, Vec::new()))
            .collect();
        assert_eq!(sent, expected);
        s.on_message(at(1)).unwrap();
        s.acknowledge_command(99, CommandStatus::Unsupported, b"")
            .unwrap();
        assert_eq!(
            drain(&mut s, at(1)),
            [Sent::CommandAck(99, CommandStatus::Unsupported, Vec::new())]
        );
    }

    #[test]
    fn command_results_share_a_bounded_pool_and_go_out_in_order() {
        let mut s = session(config());
        let big = [b'1'; MAX_COMMAND_RESULT_LEN - 10];
        s.acknowledge_command(1, CommandStatus::Ok, br#"{"on":true}"#)
            .unwrap();
        // 11 bytes used: a result of 118 does not fit until the first left.
        assert_eq!(
            s.acknowledge_command(2, CommandStatus::Ok, &big),
            Err(CommandAckQueueFull)
        );
        s.acknowledge_command(2, CommandStatus::Failed, b"[1,2]")
            .unwrap();
        s.acknowledge_command(3, CommandStatus::Ok, b"").unwrap();
        let sent = connect(&mut s, at(0), 0);
        assert_eq!(
            sent,
            [
                Sent::CommandAck(1, CommandStatus::Ok, br#"{"on":true}"#.to_vec()),
                Sent::CommandAck(2, CommandStatus::Failed, b"[1,2]".to_vec()),
                Sent::CommandAck(3, CommandStatus::Ok, Vec::new()),
            ]
        );
        // Everything went out: the whole pool is free again.
        s.acknowledge_command(4, CommandStatus::Ok, &[b'7'; MAX_COMMAND_RESULT_LEN])
            .unwrap();
        assert_eq!(
            drain(&mut s, at(1)),
            [Sent::CommandAck(
                4,
                CommandStatus::Ok,
                [b'7'; MAX_COMMAND_RESULT_LEN].to_vec()
            )]
        );
        assert_eq!(
            s.acknowledge_command(5, CommandStatus::Ok, &[b'7'; MAX_COMMAND_RESULT_LEN + 1]),
            Err(CommandAckQueueFull)
        );
    }

    /// A stored message: seq, channel, payload.
    type Stored = (u32, String, Vec<u8>);
    /// Per boot: boot id, highest stored seq, stored messages in order.
    type Boot = (u64, u32, Vec<Stored>);

    /// The server side of the protocol, as the reference server behaves:
    /// stores by (boot id, seq), drops duplicates, acknowledges cumulatively.
    #[derive(Default)]
    struct ServerModel {
        /// Per boot id: highest stored seq and the stored messages in order.
        boots: Vec<Boot>,
        current_boot: u64,
        deliveries: usize,
        duplicates: usize,
    }

    impl ServerModel {
        fn boot(&mut self, boot_id: u64) -> &mut Boot {
            if let Some(i) = self.boots.iter().position(|b| b.0 == boot_id) {
                &mut self.boots[i]
            } else {
                self.boots.push((boot_id, 0, Vec::new()));
                self.boots.last_mut().unwrap()
            }
        }

        /// Handles what the device sent; returns Welcome's stored_through if
        /// a Hello came.
        fn receive(&mut self, sent: &[Sent]) -> Option<u32> {
            let mut welcome = None;
            for message in sent {
                match message {
                    Sent::Hello { boot_id, .. } => {
                        self.current_boot = *boot_id;
                        welcome = Some(self.boot(*boot_id).1);
                    }
                    Sent::Publish(seq, channel, payload) => {
                        self.deliveries += 1;
                        let current = self.current_boot;
                        let boot = self.boot(current);
                        if *seq <= boot.1 {
                            self.duplicates += 1;
                        } else {
                            boot.1 = *seq;
                            boot.2.push((*seq, channel.clone(), payload.clone()));
                        }
                    }
                    _ => {}
                }
            }
            welcome
        }

        fn stored_through(&mut self) -> u32 {
            let current = self.current_boot;
            self.boot(current).1
        }
    }

    #[test]
    fn reboot_gets_a_new_boot_id_and_fresh_messages_are_stored() {
        let mut server = ServerModel::default();
        let mut first = session(config());
        for i in 0..3u8 {
            first.publish(at(0), "c", &[i]).unwrap();
        }
        first.on_link_up(at(0));
        let welcome = server.receive(&drain(&mut first, at(0))).unwrap();
        first.on_welcome(at(0), welcome, 64, 0).unwrap();
        server.receive(&drain(&mut first, at(0)));
        assert_eq!(server.stored_through(), 3);

        // Power cycle: RAM, counter and outbox are gone. Another seed, as a
        // hardware RNG would give.
        let mut second = TestSession::new(config(), 43);
        assert_ne!(second.boot_id(), first.boot_id());
        assert_eq!(second.publish(at(0), "c", b"new"), Ok(1));
        second.on_link_up(at(0));
        let welcome = server.receive(&drain(&mut second, at(0))).unwrap();
        assert_eq!(welcome, 0, "a new boot starts from scratch");
        second.on_welcome(at(0), welcome, 64, 0).unwrap();
        server.receive(&drain(&mut second, at(0)));
        assert_eq!(server.duplicates, 0);
        assert_eq!(server.boots.len(), 2);
        assert_eq!(server.boots[1].2, [(1, "c".into(), b"new".to_vec())]);
    }

    #[derive(Debug, Clone)]
    enum Step {
        Publish(u8),
        /// The session hands up to n transmissions to the wire.
        Pump(u8),
        /// The wire delivers up to n transmissions to the server.
        Deliver(u8),
        /// The server acknowledges what it stored.
        Ack,
        /// The link fails with this error; whatever is on the wire is lost.
        Fail(u8),
        /// Time passes.
        Wait(u32),
    }

    fn step_strategy() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0u8..3).prop_map(Step::Publish),
            4 => (1u8..6).prop_map(Step::Pump),
            4 => (1u8..6).prop_map(Step::Deliver),
            2 => Just(Step::Ack),
            1 => (0u8..6).prop_map(Step::Fail),
            2 => (0u32..20_000).prop_map(Step::Wait),
        ]
    }

    const ERRORS: [LinkError; 6] = [
        LinkError::Io,
        LinkError::EndOfStream,
        LinkError::Closed { code: 1001 },
        LinkError::Malformed,
        LinkError::ConnectFailed,
        LinkError::HandshakeFailed,
    ];

    /// An owned copy of a transmission other than `Publish` (which the
    /// harness reads from the outbox).
    fn to_sent(transmit: Transmit<'_>) -> Sent {
        match transmit {
            Transmit::Hello {
                boot_id,
                last_acked_seq,
            } => Sent::Hello {
                boot_id,
                last_acked_seq,
            },
            Transmit::Ping { nonce } => Sent::Ping(nonce),
            Transmit::Pong(p) => Sent::Pong(p.to_vec()),
            Transmit::CommandAck { id, status, result } => {
                Sent::CommandAck(id, status, result.to_vec())
            }
            Transmit::Announce { index } => Sent::Announce(index),
            Transmit::Status { rssi_dbm } => Sent::Status(rssi_dbm),
            Transmit::Publish { after } => {
                unreachable!("publish after {after} is read from the outbox")
            }
        }
    }

    /// A link with transmissions in flight between device and server.
    struct Link {
        server: ServerModel,
        wire: VecDeque<Sent>,
        /// The server's clock (Unix ms) at the local instant `origin`, or 0
        /// for a server without a clock.
        unix_at_origin: u64,
        origin: Instant,
    }

    impl Link {
        fn new() -> Self {
            Self {
                server: ServerModel::default(),
                wire: VecDeque::new(),
                unix_at_origin: 0,
                origin: at(0),
            }
        }

        /// The server's clock at `now`, as `Welcome` gives it.
        fn server_time(&self, now: Instant) -> u64 {
            match self.unix_at_origin {
                0 => 0,
                unix => unix + u64::from((now - self.origin).as_millis()),
            }
        }
    }

    impl Link {
        /// Connects when due and moves up to `budget` transmissions onto the wire.
        fn pump(&mut self, s: &mut TestSession, now: Instant, budget: usize) {
            if s.state() == ConnectionState::Connecting {
                s.on_link_up(now);
            }
            for _ in 0..budget {
                let Some((transmit, _)) = s.transmit(now) else {
                    break;
                };
                self.wire.push_back(transmit);
            }
        }

        /// Delivers up to `budget` transmissions; the server answers Hello
        /// with Welcome and pings with pongs at once.
        fn deliver(&mut self, s: &mut TestSession, now: Instant, budget: usize) {
            for _ in 0..budget {
                let Some(sent) = self.wire.pop_front() else {
                    break;
                };
                if let Sent::Ping(nonce) = sent {
                    s.on_pong(now, &nonce.to_le_bytes());
                }
                if let Some(stored) = self.server.receive(core::slice::from_ref(&sent)) {
                    s.on_welcome(now, stored, 64, self.server_time(now))
                        .unwrap();
                }
            }
        }

        fn ack(&mut self, s: &mut TestSession, now: Instant) {
            if s.state() == ConnectionState::Connected {
                let stored = self.server.stored_through();
                s.on_ack(now, stored).unwrap();
            }
        }
    }

    proptest! {
        /// For any sequence of link failures: every message accepted by
        /// `publish` reaches the server at least once, and after the
        /// server's de-duplication exactly once, in publish order (so in
        /// order per channel).
        #[test]
        fn every_accepted_message_is_stored_exactly_once_in_order(
            steps in proptest::collection::vec(step_strategy(), 1..200),
            seed in any::<u64>(),
        ) {
            let config = SessionConfig::default()
                .with_max_in_flight(4)
                .with_backoff(
                    BackoffConfig::default()
                        .with_base(Duration::from_millis(100))
                        .with_cap(secs(5)),
                );
            let mut s = TestSession::new(config, seed);
            let mut link = Link::new();
            let mut accepted = Vec::new();
            let mut now = at(0);
            let mut counter = 0u32;
            for step in steps {
                match step {
                    Step::Publish(channel) => {
                        counter += 1;
                        let channel = ["a", "bb", "ccc"][usize::from(channel)];
                        let payload = counter.to_le_bytes();
                        match s.publish(at(0), channel, &payload) {
                            Ok(seq) => accepted.push((seq, String::from(channel), payload.to_vec())),
                            Err(e) => prop_assert_eq!(e, PublishError::Full),
                        }
                    }
                    Step::Pump(budget) => link.pump(&mut s, now, usize::from(budget)),
                    Step::Deliver(budget) => link.deliver(&mut s, now, usize::from(budget)),
                    Step::Ack => link.ack(&mut s, now),
                    Step::Fail(error) => s.on_link_lost(now, ERRORS[usize::from(error)]),
                    Step::Wait(millis) => {
                        now = now + Duration::from_millis(u64::from(millis));
                        s.handle_timeout(now);
                    }
                }
                if !s.state().is_link_up() {
                    // The transport is gone, and everything in flight with it.
                    link.wire.clear();
                }
            }
            // The network heals: run until everything is acknowledged.
            for _ in 0..1_000 {
                if s.outbox().is_empty() {
                    break;
                }
                if !s.state().is_link_up()
                    && let Some(deadline) = s.poll_at()
                {
                    now = now.max(deadline);
                }
                s.handle_timeout(now);
                link.pump(&mut s, now, 100);
                link.deliver(&mut s, now, 100);
                link.ack(&mut s, now);
            }
            prop_assert!(s.outbox().is_empty());
            prop_assert!(link.server.deliveries >= accepted.len());
            prop_assert!(link.server.boots.len() <= 1);
            let stored = link.server.boots.first().map(|b| b.2.clone()).unwrap_or_default();
            prop_assert_eq!(stored, accepted);
            prop_assert_eq!(s.outbox().dropped(), 0);
        }
    }

    /// What a run of [`Step`]s showed after each step, with every instant
    /// as an offset from the session's start: the state, the next
    /// deadline, the last error, the transmissions with their Unix times.
    type Observed = Vec<(
        ConnectionState,
        Option<u32>,
        Option<LinkError>,
        Vec<(Sent, Option<u64>)>,
    )>;

    /// Runs `steps` on a session created at `origin`, against a server
    /// with a clock, and records what happened.
    fn observe(steps: &[Step], seed: u64, origin: u32) -> Observed {
        let start = at(u64::from(origin));
        let relative = |t: Instant| t.as_millis().wrapping_sub(origin);
        let config = SessionConfig::default().with_max_in_flight(4).with_backoff(
            BackoffConfig::default()
                .with_base(Duration::from_millis(100))
                .with_cap(secs(5))
                .with_healthy_after(secs(30)),
        );
        let mut s = TestSession::starting_at(config, seed, start);
        s.set_signal(-60);
        let mut link = Link::new();
        link.unix_at_origin = 1_764_000_000_000;
        link.origin = start;
        let mut now = start;
        let mut observed = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            let mut sent = Vec::new();
            match *step {
                Step::Publish(channel) => {
                    let channel = ["a", "bb", "ccc"][usize::from(channel)];
                    let _ = s.publish(now, channel, &(i as u32).to_le_bytes());
                }
                Step::Pump(budget) => {
                    if s.state() == ConnectionState::Connecting {
                        s.on_link_up(now);
                    }
                    for _ in 0..budget {
                        let Some(transmit) = s.transmit(now) else {
                            break;
                        };
                        link.wire.push_back(transmit.0.clone());
                        sent.push(transmit);
                    }
                }
                Step::Deliver(budget) => link.deliver(&mut s, now, usize::from(budget)),
                Step::Ack => link.ack(&mut s, now),
                Step::Fail(error) => s.on_link_lost(now, ERRORS[usize::from(error)]),
                Step::Wait(millis) => {
                    now = now + Duration::from_millis(u64::from(millis));
                    s.handle_timeout(now);
                }
            }
            if !s.state().is_link_up() {
                link.wire.clear();
            }
            let state = match s.state() {
                ConnectionState::BackingOff { until } => ConnectionState::BackingOff {
                    until: at(u64::from(relative(until))),
                },
                other => other,
            };
            observed.push((state, s.poll_at().map(relative), s.last_error(), sent));
        }
        observed
    }

    fn timed_step_strategy() -> impl Strategy<Value = Step> {
        prop_oneof![
            8 => step_strategy(),
            // Past a keepalive, a pong or a connect timeout, or a backoff.
            1 => (20_000u32..70_000).prop_map(Step::Wait),
        ]
    }

    proptest! {
        /// The session's timers are 32-bit ticks that wrap every 49.7 days:
        /// a session that starts just before the wrap point (and runs
        /// across it) does exactly what one that starts at zero does, step
        /// for step: the same states, deadlines, errors, transmissions and
        /// Unix times.
        #[test]
        fn timers_behave_the_same_across_the_wrap(
            steps in proptest::collection::vec(timed_step_strategy(), 1..200),
            seed in any::<u64>(),
            before_wrap in 0u32..600_000,
        ) {
            let origin = u32::MAX - before_wrap;
            prop_assert_eq!(observe(&steps, seed, 0), observe(&steps, seed, origin));
        }
    }

    /// A connection that stays up for weeks or months (past the 24.8 days
    /// two instants can be apart, and across the 49.7-day wrap of the
    /// 32-bit tick): the keepalive keeps its rhythm, the backoff counts the
    /// connection as healthy when it drops, messages get the right Unix
    /// time and a changed signal is reported at once.
    #[test]
    fn a_connection_up_for_months_keeps_its_timers() {
        const DAY: u64 = 24 * 3_600 * 1_000;
        for (origin, days) in [(0, 30), (0, 61), (u64::from(u32::MAX) - DAY, 40)] {
            long_connection(origin, days * DAY);
        }
    }

    fn long_connection(origin: u64, up: u64) {
        const SERVER: u64 = 1_764_000_000_000;
        let mut s = TestSession::starting_at(config(), 42, at(origin));
        s.set_signal(-60);
        // Flapping first, so the backoff has grown: 1, 2, 4 s.
        let mut now = origin;
        for _ in 0..3 {
            connect(&mut s, at(now), 0);
            s.on_link_lost(at(now + 10), LinkError::EndOfStream);
            let ConnectionState::BackingOff { until } = s.state() else {
                panic!()
            };
            now += u64::from((until - at(now)).as_millis());
            s.handle_timeout(at(now));
        }
        s.on_link_up(at(now));
        drain(&mut s, at(now));
        s.on_welcome(at(now), 0, 64, SERVER).unwrap();
        let welcome = now;
        assert_eq!(drain(&mut s, at(now)), [Sent::Status(-60)]);
        // Keepalive: a ping 20 s after the last pong, answered.
        let mut pings = 0u32;
        while now < welcome + up {
            assert_eq!(s.poll_at(), Some(at(now + 20_000)));
            now += 20_000;
            s.handle_timeout(at(now));
            pings += 1;
            assert_eq!(drain(&mut s, at(now)), [Sent::Ping(pings)]);
            s.on_pong(at(now), &pings.to_le_bytes());
        }
        assert_eq!(s.state(), ConnectionState::Connected);
        assert_eq!(u64::from(pings), up.div_ceil(20_000));
        // The server clock kept up with ours.
        s.publish(at(now), "c", b"late").unwrap();
        assert_eq!(
            publish_times(&mut s, at(now)),
            [(1, Some(SERVER + (now - welcome)))]
        );
        // The signal report is long past its interval: a change goes out.
        s.set_signal(-70);
        assert_eq!(drain(&mut s, at(now)), [Sent::Status(-70)]);
        // The drop comes after a healthy connection: back to the base delay.
        s.on_link_lost(at(now), LinkError::EndOfStream);
        assert_eq!(
            s.state(),
            ConnectionState::BackingOff {
                until: at(now + 1_000)
            }
        );
    }
}
