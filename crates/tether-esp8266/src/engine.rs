//! The AT engine as a sans-IO state machine: one command at a time, its
//! answer, its deadline, and everything the modem reports on its own.
//!
//! ```text
//!  start(now, kind, timeout) ─► Writing ─transmitted─► Awaiting ─OK─────► outcome Ok
//!                                 ▲                       │ ERROR (+ERR CODE, +CWJAP:n) ─► Err
//!                                 └── retry_at ◄── busy p...   (until the deadline: Err(Busy))
//!  AT+CIPSEND:  Awaiting ─OK, ">"─► Payload ─payload_transmitted─► SendResult ─SEND OK/FAIL─►
//!  AT+RST:      Awaiting ─OK─► WaitReady ─ready─► outcome Ok
//!  any phase:   deadline passed ─► Err(Timeout), `unresponsive` until a probe answers;
//!               a command that went out is still owed an answer: `out_of_step`
//!  Sync{tag}:   Awaiting ─(OK, ERROR dropped: late answers)─ +CIPRECONNINTV:<tag> ─► tagged ─OK─► Ok
//!  unsolicited: WIFI CONNECTED / GOT IP / DISCONNECT, <id>,CONNECT / CLOSED,
//!               +IPD,<id>,<len>, ready (a reset nobody asked for: Err(ModemReset),
//!               except during the `AT` probe, which waits on for its own `OK`)
//! ```
//!
//! [`Engine`] never touches the serial port or a clock. The driver writes
//! what [`Engine::poll_transmit`] gives (and the `AT+CIPSEND` payload when
//! [`Engine::wants_payload`]), feeds what it reads to [`Engine::feed`],
//! sleeps until [`Engine::poll_at`], calls [`Engine::handle_timeout`], and
//! takes the result from [`Engine::take_outcome`]. Because the whole
//! exchange lives here and not in a future, a driver call that is
//! cancelled half-way leaves nothing lost: the next call finishes the
//! exchange first (that is what makes the connection's read cancel-safe).
//!
//! ```
//! use tether_core::time::{Duration, Instant};
//! use tether_esp8266::engine::{Engine, Kind};
//!
//! let mut recv = [0u8; 64];
//! let mut engine = Engine::new(&mut recv);
//! let now = Instant::ZERO;
//! engine.command_line().push_str("AT+CWJAP=\"Home\",\"wrong\"\r\n")?;
//! engine.start(now, Kind::Join, Duration::from_secs(20));
//! assert!(engine.poll_transmit().is_some());
//! engine.transmitted(now, 25);
//! engine.feed(now, b"WIFI DISCONNECT\r\n+CWJAP:2\r\n\r\nERROR\r\n", &mut |_| {});
//! assert_eq!(
//!     engine.take_outcome(),
//!     Some(Err(tether_esp8266::Error::Join(tether_esp8266::JoinError::WrongPassword)))
//! );
//! # Ok::<(), tether_esp8266::command::TooLong>(())
//! ```

use core::fmt;

use tether_core::time::{Duration, Instant};

use crate::command::CommandLine;
use crate::error::{Error, JoinError};
use crate::parse::{Event, Fields, MAX_LINKS, Parser, Remote, parse_i32, parse_u32};

/// Longest command line (a `AT+CWJAP` with a 32-byte SSID and 64-byte
/// passphrase, every byte escaped, fits).
pub const COMMAND_LEN: usize = 256;

/// Wait after `busy p...` before sending the command again.
pub const BUSY_RETRY: Duration = Duration::from_millis(100);

/// `busy p...` answers to one command before it fails with [`Error::Busy`]
/// (if its deadline has not ended it before).
pub const MAX_BUSY: u16 = 50;

/// What kind of exchange a command is: it decides which answer ends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Kind {
    /// Ends with `OK` or `ERROR`.
    Plain,
    /// `AT`, the probe that finds out whether the modem answers: ends with
    /// `OK`. A `ready` while it waits does not end it: the modem may have
    /// printed it before it read the probe (a `ready` still waiting in the
    /// serial buffer when the driver started, or a modem that booted while
    /// the probe was on its way), and then it answers the probe. Ending
    /// the probe there would leave that `OK` to be taken as the answer to
    /// the next command, and every answer after it one command late. A
    /// modem that lost the probe in its restart leaves it to time out.
    Probe,
    /// `AT+CIPRECONNINTV?` after `AT+CIPRECONNINTV=<tag>`: the
    /// resynchronisation after a command timed out. The modem still owes
    /// that command its answer (a modem stalled for longer than the
    /// timeout gives it late), and an `OK` carries no name: taken for the
    /// next command's answer it would leave every answer after it one
    /// command late. Answers come in command order, so every `OK` and
    /// `ERROR` before the line `+CIPRECONNINTV:<tag>` (a value no earlier
    /// command set) belongs to an earlier command and is dropped; the
    /// `OK` after it ends the exchange with the stream in step again.
    /// (Passthrough mode's reconnect interval, unused otherwise.)
    Sync {
        /// The interval just set, 2 to 36000.
        tag: u16,
    },
    /// `AT+CWJAP`: `+CWJAP:<code>` before `ERROR` says why.
    Join,
    /// `AT+CIPSEND` of `len` bytes on `link`: `OK`, `>`, the payload,
    /// `SEND OK`.
    Send {
        /// The link sent on.
        link: u8,
        /// Payload bytes.
        len: usize,
    },
    /// `AT+CIPRECVDATA` for `link`: the payload lands in the receive buffer.
    Receive {
        /// The link read.
        link: u8,
    },
    /// `AT+CIPCLOSE` of `link`: its `OK` (or `ERROR`: it was not open)
    /// forgets the link where it stands in the stream, so a `CONNECT` and
    /// `+IPD` of a new connection on the same id right behind it count.
    Close {
        /// The link closed.
        link: u8,
    },
    /// `AT+RST`: `OK`, then `ready`.
    Reset,
    /// No command: wait for `ready` (after pulsing the reset pin).
    WaitReady,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Writing,
    Awaiting,
    BusyWait { retry_at: Instant },
    Payload,
    SendResult,
    WaitReady,
}

/// What the modem reported about one link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LinkState {
    /// `CONNECT` seen and no `CLOSED` since.
    pub open: bool,
    /// `CLOSED` seen since the last `CONNECT`.
    pub closed: bool,
    /// Bytes buffered in the modem (the last `+IPD`, minus what was read
    /// since).
    pub pending: u32,
    /// Counts `CONNECT`s, so a reused link id is told apart.
    pub generation: u16,
}

/// The station interface as the modem reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct WifiState {
    /// `WIFI CONNECTED` and no `WIFI DISCONNECT` since.
    pub connected: bool,
    /// `WIFI GOT IP` and no `WIFI DISCONNECT` since.
    pub got_ip: bool,
}

/// Counters for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct EngineStats {
    /// `ready` seen (resets, asked for or not).
    pub resets: u32,
    /// `busy p...` answers.
    pub busy: u32,
    /// Commands that timed out.
    pub timeouts: u32,
    /// Payload bytes that arrived with nowhere to go (dropped).
    pub dropped_bytes: u32,
    /// Lines longer than the line buffer.
    pub long_lines: u32,
}

/// The engine. `'b` is the caller's receive buffer, where `AT+CIPRECVDATA`
/// payloads land.
pub struct Engine<'b> {
    parser: Parser<COMMAND_LEN>,
    state: State<'b>,
}

struct State<'b> {
    command: CommandLine<COMMAND_LEN>,
    sent: usize,
    kind: Kind,
    phase: Phase,
    deadline: Instant,
    busy_count: u16,
    err_code: Option<u32>,
    join_code: Option<u8>,
    /// `link is not valid` came before the `ERROR` of `AT+CIPSEND`.
    link_invalid: bool,
    /// A `CONNECT` on the link of `AT+CIPSEND` came before its prompt.
    link_reused: bool,
    outcome: Option<Result<(), Error>>,
    payload_len: usize,
    payload_sent: usize,
    recv: &'b mut [u8],
    recv_link: u8,
    recv_start: usize,
    recv_end: usize,
    recv_remote: Option<Remote>,
    /// A `+CIPRECVDATA` header was seen for the current receive.
    receiving: bool,
    links: [LinkState; MAX_LINKS],
    wifi: WifiState,
    needs_init: bool,
    unresponsive: bool,
    /// A command timed out after it went out: its answer may still come.
    out_of_step: bool,
    /// The tag line of the current [`Kind::Sync`] was seen.
    tagged: bool,
    /// The last [`Kind::Sync`] tag handed out.
    sync_tag: u16,
    stats: EngineStats,
}

impl fmt::Debug for Engine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("kind", &self.state.kind)
            .field("phase", &self.state.phase)
            .field("links", &self.state.links)
            .field("wifi", &self.state.wifi)
            .field("stats", &self.state.stats)
            .finish_non_exhaustive()
    }
}

impl<'b> Engine<'b> {
    /// An idle engine for a modem in an unknown state (it needs
    /// initialising), receiving into `recv`.
    pub fn new(recv: &'b mut [u8]) -> Self {
        Self {
            parser: Parser::new(),
            state: State {
                command: CommandLine::new(),
                sent: 0,
                kind: Kind::Plain,
                phase: Phase::Idle,
                deadline: Instant::ZERO,
                busy_count: 0,
                err_code: None,
                join_code: None,
                link_invalid: false,
                link_reused: false,
                outcome: None,
                payload_len: 0,
                payload_sent: 0,
                recv,
                recv_link: 0,
                recv_start: 0,
                recv_end: 0,
                recv_remote: None,
                receiving: false,
                links: [LinkState::default(); MAX_LINKS],
                wifi: WifiState::default(),
                needs_init: true,
                unresponsive: false,
                out_of_step: false,
                tagged: false,
                sync_tag: 0,
                stats: EngineStats::default(),
            },
        }
    }

    /// The command line to fill before [`start`](Self::start); cleared.
    pub fn command_line(&mut self) -> &mut CommandLine<COMMAND_LEN> {
        self.state.command.clear();
        &mut self.state.command
    }

    /// Whether an exchange is under way (started, not yet finished).
    #[must_use]
    pub fn is_busy(&self) -> bool {
        self.state.phase != Phase::Idle
    }

    /// Starts the exchange of the command in [`command_line`](Self::command_line)
    /// (none for [`Kind::WaitReady`]), which must end by `now + timeout`.
    /// An unfinished exchange is abandoned.
    pub fn start(&mut self, now: Instant, kind: Kind, timeout: Duration) {
        let s = &mut self.state;
        s.kind = kind;
        s.sent = 0;
        s.deadline = now + timeout;
        s.busy_count = 0;
        s.err_code = None;
        s.join_code = None;
        s.link_invalid = false;
        s.link_reused = false;
        s.outcome = None;
        s.receiving = false;
        s.tagged = false;
        s.payload_sent = 0;
        s.payload_len = match kind {
            Kind::Send { len, .. } => len,
            _ => 0,
        };
        s.phase = match kind {
            Kind::WaitReady => Phase::WaitReady,
            _ => Phase::Writing,
        };
        if let Kind::Receive { link } = kind {
            s.recv_link = link;
            s.recv_start = 0;
            s.recv_end = 0;
            s.recv_remote = None;
        }
        trace!("at: start {:?}", kind);
    }

    /// Command bytes still to write.
    #[must_use]
    pub fn poll_transmit(&self) -> Option<&[u8]> {
        if self.state.phase != Phase::Writing {
            return None;
        }
        self.state
            .command
            .as_bytes()
            .get(self.state.sent..)
            .filter(|rest| !rest.is_empty())
    }

    /// `n` command bytes were written.
    pub fn transmitted(&mut self, _now: Instant, n: usize) {
        let s = &mut self.state;
        if s.phase != Phase::Writing {
            return;
        }
        s.sent = s.sent.saturating_add(n);
        if s.sent >= s.command.as_bytes().len() {
            s.phase = Phase::Awaiting;
        }
    }

    /// The range of the `AT+CIPSEND` payload still to write, once the
    /// modem prompted for it.
    #[must_use]
    pub fn wants_payload(&self) -> Option<core::ops::Range<usize>> {
        (self.state.phase == Phase::Payload)
            .then_some(self.state.payload_sent..self.state.payload_len)
    }

    /// `n` payload bytes were written.
    pub fn payload_transmitted(&mut self, n: usize) {
        let s = &mut self.state;
        if s.phase != Phase::Payload {
            return;
        }
        s.payload_sent = s.payload_sent.saturating_add(n);
        if s.payload_sent >= s.payload_len {
            s.phase = Phase::SendResult;
        }
    }

    /// The finished exchange's result, once.
    pub fn take_outcome(&mut self) -> Option<Result<(), Error>> {
        self.state.outcome.take()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must run next.
    #[must_use]
    pub fn poll_at(&self) -> Option<Instant> {
        match self.state.phase {
            Phase::Idle => None,
            Phase::BusyWait { retry_at } => Some(retry_at.min(self.state.deadline)),
            _ => Some(self.state.deadline),
        }
    }

    /// Handles the deadlines that passed by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let s = &mut self.state;
        if s.phase == Phase::Idle {
            return;
        }
        if now >= s.deadline {
            warn!("at: {:?} timed out", s.kind);
            s.stats.timeouts = s.stats.timeouts.saturating_add(1);
            // A modem that answered `busy p...` to this command is alive:
            // its deadline passing between a retry and the answer to it
            // is still "busy", not a hung modem.
            let busy = match s.phase {
                Phase::BusyWait { .. } => true,
                Phase::Writing | Phase::Awaiting => s.busy_count > 0,
                _ => false,
            };
            // An answer is owed when the command (or its payload) went
            // out and none came; not after `busy p...` (the answer) or
            // while waiting for `ready`.
            let owed = match s.phase {
                Phase::Writing => s.sent > 0,
                Phase::Awaiting | Phase::Payload | Phase::SendResult => true,
                Phase::BusyWait { .. } | Phase::WaitReady | Phase::Idle => false,
            };
            if owed {
                s.out_of_step = true;
            }
            let error = if busy {
                Error::Busy
            } else {
                s.unresponsive = true;
                Error::Timeout
            };
            s.finish(Err(error));
            return;
        }
        if let Phase::BusyWait { retry_at } = s.phase
            && now >= retry_at
        {
            s.sent = 0;
            s.phase = Phase::Writing;
        }
    }

    /// Feeds bytes read from the modem. `on_info` sees the `+...:` lines
    /// that arrive while an exchange is under way (its information).
    pub fn feed(&mut self, now: Instant, mut input: &[u8], on_info: &mut dyn FnMut(&[u8])) {
        while !input.is_empty() {
            let (used, event) = self.parser.parse(input);
            input = input.get(used..).unwrap_or_default();
            if let Some(event) = event {
                let ready = event == Event::Ready;
                self.state.handle(now, event, on_info);
                if ready {
                    // The firmware starts with `AT+CIPDINFO=0`.
                    self.parser.set_remote_info(false);
                }
            }
            if used == 0 {
                break;
            }
        }
    }

    /// What the modem reported about `link` (`None` past [`MAX_LINKS`]).
    #[must_use]
    pub fn link(&self, link: u8) -> Option<LinkState> {
        self.state.links.get(usize::from(link)).copied()
    }

    /// Marks `link` closed (when abandoning it; [`Kind::Close`] does it
    /// for `AT+CIPCLOSE`).
    pub fn forget_link(&mut self, link: u8) {
        self.state.forget_link(link);
    }

    /// The station interface.
    #[must_use]
    pub fn wifi(&self) -> WifiState {
        self.state.wifi
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> EngineStats {
        self.state.stats
    }

    /// Whether the modem must be set up (first use, or after `ready`).
    #[must_use]
    pub fn needs_init(&self) -> bool {
        self.state.needs_init
    }

    /// Whether the last command timed out (the modem may be hung).
    #[must_use]
    pub fn unresponsive(&self) -> bool {
        self.state.unresponsive
    }

    /// Whether a command timed out after it went out, so its answer may
    /// still come and be taken for another's: the next command must be a
    /// [`Kind::Sync`]. Cleared by a finished sync and by `ready`.
    #[must_use]
    pub fn out_of_step(&self) -> bool {
        self.state.out_of_step
    }

    /// A tag for the next [`Kind::Sync`], unlike the last one: 2 to
    /// 36000, the range of `AT+CIPRECONNINTV` without its default (1), so
    /// a modem that lost the set and answers the default is not taken
    /// for one that answered.
    pub fn next_sync_tag(&mut self) -> u16 {
        self.state.sync_tag = self.state.sync_tag % 35999 + 2;
        self.state.sync_tag
    }

    /// The modem was set up: echo off, multiple connections, passive
    /// receive, `AT+CIPDINFO=1`.
    pub fn initialised(&mut self) {
        self.state.needs_init = false;
        self.state.unresponsive = false;
        self.parser.set_remote_info(true);
    }

    /// The modem answered a probe.
    pub fn responsive(&mut self) {
        self.state.unresponsive = false;
    }

    /// The modem must be set up again (a reset is being forced).
    pub fn invalidate(&mut self) {
        self.state.needs_init = true;
        self.parser.reset();
        self.parser.set_remote_info(false);
    }

    /// Received bytes of `link` waiting in the receive buffer.
    #[must_use]
    pub fn received(&self, link: u8) -> &[u8] {
        let s = &self.state;
        if s.recv_link != link || (s.phase != Phase::Idle && matches!(s.kind, Kind::Receive { .. }))
        {
            return &[];
        }
        s.recv.get(s.recv_start..s.recv_end).unwrap_or_default()
    }

    /// The sender of the bytes in the receive buffer (`AT+CIPDINFO=1`).
    #[must_use]
    pub fn received_from(&self) -> Option<Remote> {
        self.state.recv_remote
    }

    /// Removes `n` bytes from the front of the receive buffer.
    pub fn consume(&mut self, n: usize) {
        let s = &mut self.state;
        s.recv_start = s.recv_start.saturating_add(n).min(s.recv_end);
    }

    /// Drops whatever is left in the receive buffer.
    pub fn consume_all(&mut self) {
        self.state.recv_start = self.state.recv_end;
    }

    /// Capacity of the receive buffer.
    #[must_use]
    pub fn receive_capacity(&self) -> usize {
        self.state.recv.len()
    }
}

impl State<'_> {
    fn forget_link(&mut self, link: u8) {
        if let Some(state) = self.links.get_mut(usize::from(link)) {
            state.open = false;
            state.closed = true;
            state.pending = 0;
        }
        if self.recv_link == link {
            self.recv_start = 0;
            self.recv_end = 0;
        }
    }

    fn finish(&mut self, outcome: Result<(), Error>) {
        trace!("at: {:?} done: {:?}", self.kind, outcome);
        self.phase = Phase::Idle;
        self.outcome = Some(outcome);
    }

    fn command_error(&self) -> Error {
        Error::Command {
            code: self.err_code,
        }
    }

    fn awaiting(&self) -> bool {
        matches!(
            self.phase,
            Phase::Awaiting | Phase::Writing | Phase::BusyWait { .. }
        )
    }

    fn handle(&mut self, now: Instant, event: Event<'_>, on_info: &mut dyn FnMut(&[u8])) {
        match event {
            Event::Data(bytes) => self.data(bytes),
            Event::RecvData { len, remote } => {
                if self.phase == Phase::Awaiting && matches!(self.kind, Kind::Receive { .. }) {
                    self.receiving = true;
                    self.recv_remote = remote;
                    self.recv_start = 0;
                    self.recv_end = 0;
                    if let Some(state) = self.links.get_mut(usize::from(self.recv_link)) {
                        // Nothing there (an SSL link reports encrypted
                        // lengths, larger than what it hands out): nothing
                        // pending until the modem reports more.
                        state.pending = if len == 0 {
                            0
                        } else {
                            state.pending.saturating_sub(len)
                        };
                    }
                } else {
                    warn!("at: unexpected +CIPRECVDATA ({} bytes)", len);
                    self.receiving = false;
                }
            }
            Event::IpdData { link, len, .. } => {
                // Active receive mode: only a modem that reset itself and
                // was not set up again sends this. Its data is dropped.
                warn!(
                    "at: active-mode +IPD on link {} ({} bytes) dropped",
                    link, len
                );
                self.receiving = false;
            }
            Event::Ipd { link, len } => {
                if let Some(state) = self.links.get_mut(usize::from(link)) {
                    state.pending = len;
                }
            }
            Event::Connect(link) => {
                if let Kind::Send { link: sending, .. } = self.kind
                    && sending == link
                    && self.awaiting()
                {
                    // The modem took the command after this accept: the
                    // payload goes to the new connection.
                    self.link_reused = true;
                }
                if let Some(state) = self.links.get_mut(usize::from(link)) {
                    state.open = true;
                    state.closed = false;
                    state.pending = 0;
                    state.generation = state.generation.wrapping_add(1);
                }
            }
            Event::Closed(link) => {
                if let Some(state) = self.links.get_mut(usize::from(link)) {
                    state.open = false;
                    state.closed = true;
                }
            }
            Event::WifiConnected => self.wifi.connected = true,
            Event::WifiGotIp => {
                self.wifi.connected = true;
                self.wifi.got_ip = true;
            }
            Event::WifiDisconnect => self.wifi = WifiState::default(),
            Event::Ready => self.ready(),
            Event::Busy => {
                self.stats.busy = self.stats.busy.saturating_add(1);
                if self.awaiting() {
                    self.busy_count = self.busy_count.saturating_add(1);
                    if self.busy_count > MAX_BUSY {
                        self.finish(Err(Error::Busy));
                    } else {
                        self.phase = Phase::BusyWait {
                            retry_at: now + BUSY_RETRY,
                        };
                    }
                }
            }
            Event::ErrCode(code) => self.err_code = Some(code),
            Event::Ok | Event::Error
                if self.phase == Phase::Awaiting
                    && matches!(self.kind, Kind::Sync { .. })
                    && !self.tagged =>
            {
                debug!("at: a late answer dropped");
                self.err_code = None;
            }
            Event::Ok => match (self.phase, self.kind) {
                (Phase::Awaiting, Kind::Send { .. }) => {} // `>` follows.
                (Phase::Awaiting, Kind::Reset) => self.phase = Phase::WaitReady,
                (Phase::Awaiting, Kind::Close { link }) => {
                    self.forget_link(link);
                    self.finish(Ok(()));
                }
                (Phase::Awaiting, Kind::Sync { .. }) => {
                    self.out_of_step = false;
                    self.unresponsive = false;
                    self.finish(Ok(()));
                }
                (Phase::Awaiting, _) => self.finish(Ok(())),
                _ => {}
            },
            Event::Error => match (self.phase, self.kind) {
                (Phase::Awaiting | Phase::SendResult | Phase::Payload, Kind::Send { .. }) => {
                    // With `AT+SYSLOG=1` a closed link's `ERROR` comes with an
                    // error code too; the text says what it is.
                    let error = if self.err_code.is_some() && !self.link_invalid {
                        self.command_error()
                    } else {
                        Error::LinkClosed
                    };
                    self.finish(Err(error));
                }
                (Phase::Awaiting, Kind::Join) => {
                    let error = Error::Join(JoinError::from_code(self.join_code.unwrap_or(0)));
                    self.finish(Err(error));
                }
                (Phase::Awaiting, Kind::Close { link }) => {
                    // Not open (already closed by the peer): forgotten too.
                    self.forget_link(link);
                    let error = self.command_error();
                    self.finish(Err(error));
                }
                (Phase::Awaiting, Kind::Receive { link }) => {
                    // ESP-AT refuses to read an SSL link whose encrypted
                    // length outran its data: nothing is pending.
                    if let Some(state) = self.links.get_mut(usize::from(link)) {
                        state.pending = 0;
                    }
                    let error = self.command_error();
                    self.finish(Err(error));
                }
                (Phase::Awaiting, _) => {
                    let error = self.command_error();
                    self.finish(Err(error));
                }
                _ => {}
            },
            Event::Prompt => {
                if self.phase == Phase::Awaiting && matches!(self.kind, Kind::Send { .. }) {
                    self.phase = if self.payload_len == 0 {
                        Phase::SendResult
                    } else {
                        Phase::Payload
                    };
                }
            }
            Event::SendOk => {
                if matches!(self.phase, Phase::SendResult | Phase::Payload) {
                    let outcome = if self.link_reused {
                        Err(Error::LinkReused)
                    } else {
                        Ok(())
                    };
                    self.finish(outcome);
                }
            }
            Event::SendFail => {
                if matches!(
                    self.phase,
                    Phase::SendResult | Phase::Payload | Phase::Awaiting
                ) && matches!(self.kind, Kind::Send { .. })
                {
                    self.finish(Err(Error::SendFailed));
                }
            }
            Event::Info(line) => {
                if let Kind::Sync { tag } = self.kind
                    && self.phase == Phase::Awaiting
                    && let Some(value) = line.strip_prefix(b"+CIPRECONNINTV:")
                    && parse_u32(value) == Some(u32::from(tag))
                {
                    self.tagged = true;
                }
                if self.kind == Kind::Join
                    && let Some(code) = line.strip_prefix(b"+CWJAP:")
                    && let Some(code) = parse_u32(code)
                {
                    self.join_code = Some(u8::try_from(code).unwrap_or(u8::MAX));
                }
                if self.phase != Phase::Idle
                    && let Some(values) = line.strip_prefix(b"+CIPRECVLEN:")
                {
                    // Applied here, in stream order: a `+IPD` right behind
                    // the answer is newer and must win over it.
                    for (state, field) in self.links.iter_mut().zip(Fields::new(values)) {
                        state.pending = parse_i32(field)
                            .and_then(|n| u32::try_from(n).ok())
                            .unwrap_or(0);
                    }
                }
                if self.phase != Phase::Idle {
                    on_info(line);
                }
            }
            Event::LineTooLong => {
                self.stats.long_lines = self.stats.long_lines.saturating_add(1);
            }
            Event::Other(line) => {
                if line == b"link is not valid" && matches!(self.kind, Kind::Send { .. }) {
                    self.link_invalid = true;
                }
            }
            Event::Received(_) | Event::Echo(_) => {}
        }
    }

    fn data(&mut self, bytes: &[u8]) {
        if !self.receiving {
            self.drop_bytes(bytes.len());
            return;
        }
        let free = self.recv.get_mut(self.recv_end..).unwrap_or_default();
        let n = bytes.len().min(free.len());
        if let (Some(dst), Some(src)) = (free.get_mut(..n), bytes.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.recv_end = self.recv_end.saturating_add(n);
        if n < bytes.len() {
            self.drop_bytes(bytes.len() - n);
        }
    }

    fn drop_bytes(&mut self, n: usize) {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.stats.dropped_bytes = self.stats.dropped_bytes.saturating_add(n);
    }

    fn ready(&mut self) {
        self.stats.resets = self.stats.resets.saturating_add(1);
        self.needs_init = true;
        self.unresponsive = false;
        // A restarted modem forgot the command it owed an answer.
        self.out_of_step = false;
        self.wifi = WifiState::default();
        for link in &mut self.links {
            if link.open {
                link.closed = true;
            }
            link.open = false;
            link.pending = 0;
        }
        self.receiving = false;
        match (self.phase, self.kind) {
            (Phase::WaitReady, _) | (Phase::Awaiting, Kind::Reset) => self.finish(Ok(())),
            (Phase::Idle, _) => info!("at: the modem restarted"),
            (_, Kind::Probe | Kind::Sync { .. }) => {
                info!("at: the modem restarted; the probe waits for its answer");
            }
            _ => {
                warn!("at: the modem restarted during {:?}", self.kind);
                self.finish(Err(Error::ModemReset));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(engine: &mut Engine<'_>, now: Instant, line: &str, kind: Kind, secs: u64) {
        engine.command_line().push_str(line).unwrap();
        engine.start(now, kind, Duration::from_secs(secs));
        let n = engine.poll_transmit().map_or(0, <[u8]>::len);
        engine.transmitted(now, n);
    }

    #[test]
    fn busy_retries_then_succeeds_on_virtual_time() {
        let mut recv = [0u8; 16];
        let mut engine = Engine::new(&mut recv);
        let mut now = Instant::ZERO;
        start(&mut engine, now, "AT\r\n", Kind::Plain, 5);
        for _ in 0..3 {
            engine.feed(now, b"busy p...\r\n", &mut |_| {});
            assert_eq!(engine.poll_transmit(), None);
            now = engine.poll_at().unwrap();
            assert_eq!(now.as_millis() % BUSY_RETRY.as_millis(), 0);
            engine.handle_timeout(now);
            assert_eq!(engine.poll_transmit(), Some(&b"AT\r\n"[..]), "resent");
            engine.transmitted(now, 4);
        }
        engine.feed(now, b"OK\r\n", &mut |_| {});
        assert_eq!(engine.take_outcome(), Some(Ok(())));
        assert_eq!(engine.stats().busy, 3);
    }

    #[test]
    fn a_busy_storm_ends_in_busy_at_the_deadline() {
        let mut recv = [0u8; 16];
        let mut engine = Engine::new(&mut recv);
        let mut now = Instant::ZERO;
        start(&mut engine, now, "AT\r\n", Kind::Plain, 1);
        loop {
            engine.feed(now, b"busy p...\r\n", &mut |_| {});
            let Some(at) = engine.poll_at() else { break };
            now = at;
            engine.handle_timeout(now);
            if let Some(bytes) = engine.poll_transmit() {
                let n = bytes.len();
                engine.transmitted(now, n);
            }
        }
        assert_eq!(engine.take_outcome(), Some(Err(Error::Busy)));
        assert_eq!(now, Instant::ZERO + Duration::from_secs(1));
        assert!(!engine.unresponsive(), "busy is an answer");
    }

    #[test]
    fn a_deadline_between_a_busy_retry_and_its_answer_is_busy() {
        let mut recv = [0u8; 16];
        let mut engine = Engine::new(&mut recv);
        let now = Instant::ZERO;
        start(&mut engine, now, "AT\r\n", Kind::Plain, 1);
        engine.feed(now, b"busy p...\r\n", &mut |_| {});
        let retry = engine.poll_at().unwrap();
        engine.handle_timeout(retry);
        engine.transmitted(retry, 4);
        // The retry is out; the deadline passes before its answer.
        let deadline = engine.poll_at().unwrap();
        assert_eq!(deadline, Instant::ZERO + Duration::from_secs(1));
        engine.handle_timeout(deadline);
        assert_eq!(engine.take_outcome(), Some(Err(Error::Busy)));
        assert!(!engine.unresponsive());
    }

    #[test]
    fn silence_times_out_and_marks_the_modem_unresponsive() {
        let mut recv = [0u8; 16];
        let mut engine = Engine::new(&mut recv);
        start(&mut engine, Instant::ZERO, "AT\r\n", Kind::Plain, 2);
        let at = engine.poll_at().unwrap();
        engine.handle_timeout(at);
        assert_eq!(engine.take_outcome(), Some(Err(Error::Timeout)));
        assert!(engine.unresponsive());
    }

    /// A command times out and its answer comes late, behind the set-up
    /// of the resync: the sync drops every `OK` and `ERROR` before its
    /// tagged line, so the stream is in step after it.
    #[test]
    fn a_late_answer_is_dropped_by_the_tagged_sync() {
        let mut recv = [0u8; 16];
        let mut engine = Engine::new(&mut recv);
        let now = Instant::ZERO;
        start(&mut engine, now, "AT+CWMODE?\r\n", Kind::Plain, 2);
        assert!(!engine.out_of_step());
        let at = engine.poll_at().unwrap();
        engine.handle_timeout(at);
        assert_eq!(engine.take_outcome(), Some(Err(Error::Timeout)));
        assert!(
            engine.out_of_step(),
            "the command went out: its answer is owed"
        );
        let tag = engine.next_sync_tag();
        assert_ne!(engine.next_sync_tag(), tag, "a fresh tag every time");
        let tag = engine.next_sync_tag();
        // The set: takes the late answer (its own is left over).
        start(&mut engine, at, "AT+CIPRECONNINTV=3\r\n", Kind::Plain, 2);
        engine.feed(at, b"+CWMODE:1\r\n\r\nOK\r\n", &mut |_| {});
        assert_eq!(engine.take_outcome(), Some(Ok(())));
        assert!(engine.out_of_step());
        start(
            &mut engine,
            at,
            "AT+CIPRECONNINTV?\r\n",
            Kind::Sync { tag },
            2,
        );
        // The set's own OK, another value, an ERROR: not this sync's answer.
        engine.feed(
            at,
            b"\r\nOK\r\n+CIPRECONNINTV:1\r\n\r\nERROR\r\n",
            &mut |_| {},
        );
        assert_eq!(engine.take_outcome(), None, "late answers are dropped");
        assert!(engine.out_of_step());
        let answer = tagged_answer(tag);
        engine.feed(at, answer.as_bytes(), &mut |_| {});
        assert_eq!(engine.take_outcome(), Some(Ok(())));
        assert!(!engine.out_of_step());
        assert!(!engine.unresponsive());
        // In step: the next command takes its own answer.
        start(&mut engine, at, "AT\r\n", Kind::Plain, 2);
        engine.feed(at, b"\r\nERROR\r\n", &mut |_| {});
        assert_eq!(
            engine.take_outcome(),
            Some(Err(Error::Command { code: None }))
        );
    }

    fn tagged_answer(tag: u16) -> heapless::String<32> {
        let mut line = heapless::String::new();
        core::fmt::Write::write_fmt(
            &mut line,
            format_args!("+CIPRECONNINTV:{tag}\r\n\r\nOK\r\n"),
        )
        .unwrap();
        line
    }

    /// Timing out on `busy p...` or on `ready` owes no answer; a restart
    /// forgets the one owed.
    #[test]
    fn only_a_command_that_went_out_is_owed_an_answer() {
        let mut recv = [0u8; 16];
        let mut engine = Engine::new(&mut recv);
        let now = Instant::ZERO;
        start(&mut engine, now, "AT\r\n", Kind::Plain, 1);
        engine.feed(now, b"busy p...\r\n", &mut |_| {});
        engine.handle_timeout(now + Duration::from_secs(1));
        assert_eq!(engine.take_outcome(), Some(Err(Error::Busy)));
        assert!(!engine.out_of_step());
        engine.start(now, Kind::WaitReady, Duration::from_secs(1));
        engine.handle_timeout(now + Duration::from_secs(1));
        assert_eq!(engine.take_outcome(), Some(Err(Error::Timeout)));
        assert!(!engine.out_of_step());
        start(&mut engine, now, "AT\r\n", Kind::Plain, 1);
        engine.handle_timeout(now + Duration::from_secs(1));
        assert!(engine.out_of_step());
        engine.feed(now, b"\r\nready\r\n", &mut |_| {});
        assert!(!engine.out_of_step(), "a restarted modem owes nothing");
    }

    #[test]
    fn send_exchange_and_send_fail() {
        let mut recv = [0u8; 16];
        let mut engine = Engine::new(&mut recv);
        let now = Instant::ZERO;
        start(
            &mut engine,
            now,
            "AT+CIPSEND=0,5\r\n",
            Kind::Send { link: 0, len: 5 },
            5,
        );
        engine.feed(now, b"\r\nOK\r\n", &mut |_| {});
        assert_eq!(engine.wants_payload(), None);
        engine.feed(now, b"\r\n>", &mut |_| {});
        assert_eq!(engine.wants_payload(), Some(0..5));
        engine.payload_transmitted(2);
        assert_eq!(engine.wants_payload(), Some(2..5));
        engine.payload_transmitted(3);
        engine.feed(now, b"\r\nRecv 5 bytes\r\n\r\nSEND OK\r\n", &mut |_| {});
        assert_eq!(engine.take_outcome(), Some(Ok(())));

        start(
            &mut engine,
            now,
            "AT+CIPSEND=0,1\r\n",
            Kind::Send { link: 0, len: 1 },
            5,
        );
        engine.feed(now, b"OK\r\n>", &mut |_| {});
        engine.payload_transmitted(1);
        engine.feed(now, b"SEND FAIL\r\n", &mut |_| {});
        assert_eq!(engine.take_outcome(), Some(Err(Error::SendFailed)));

        start(
            &mut engine,
            now,
            "AT+CIPSEND=0,1\r\n",
            Kind::Send { link: 0, len: 1 },
            5,
        );
        engine.feed(now, b"link is not valid\r\nERROR\r\n", &mut |_| {});
        assert_eq!(engine.take_outcome(), Some(Err(Error::LinkClosed)));
        // The same with error codes on (`AT+SYSLOG=1`, as the driver sets).
        start(
            &mut engine,
            now,
            "AT+CIPSEND=0,1\r\n",
            Kind::Send { link: 0, len: 1 },
            5,
        );
        engine.feed(
            now,
            b"link is not valid\r\nERR CODE:0x010a0000\r\n\r\nERROR\r\n",
            &mut |_| {},
        );
        assert_eq!(engine.take_outcome(), Some(Err(Error::LinkClosed)));
    }

    /// A server's client hung up and a new one took the id before the
    /// modem read `AT+CIPSEND`: the payload went to the new connection, and
    /// the caller must know.
    #[test]
    fn a_send_taken_by_a_new_connection_on_its_id_is_reported() {
        let mut recv = [0u8; 8];
        let mut engine = Engine::new(&mut recv);
        let now = Instant::ZERO;
        engine.initialised();
        engine.feed(now, b"0,CONNECT\r\n", &mut |_| {});
        start(
            &mut engine,
            now,
            "AT+CIPSEND=0,3\r\n",
            Kind::Send { link: 0, len: 3 },
            5,
        );
        engine.feed(
            now,
            b"0,CLOSED\r\n0,CONNECT\r\n+IPD,0,9\r\n\r\nOK\r\n>",
            &mut |_| {},
        );
        engine.payload_transmitted(3);
        engine.feed(now, b"\r\nRecv 3 bytes\r\n\r\nSEND OK\r\n", &mut |_| {});
        assert_eq!(engine.take_outcome(), Some(Err(Error::LinkReused)));
        assert_eq!(engine.link(0).unwrap().pending, 9);
        // A CONNECT on another link, or after the prompt, is not that.
        start(
            &mut engine,
            now,
            "AT+CIPSEND=0,3\r\n",
            Kind::Send { link: 0, len: 3 },
            5,
        );
        engine.feed(now, b"1,CONNECT\r\nOK\r\n>", &mut |_| {});
        engine.payload_transmitted(3);
        engine.feed(now, b"SEND OK\r\n", &mut |_| {});
        assert_eq!(engine.take_outcome(), Some(Ok(())));
    }

    #[test]
    fn receive_fills_the_buffer_and_counts_down_pending() {
        let mut recv = [0u8; 8];
        let mut engine = Engine::new(&mut recv);
        let now = Instant::ZERO;
        engine.initialised();
        engine.feed(now, b"0,CONNECT\r\n+IPD,0,10\r\n", &mut |_| {});
        assert_eq!(engine.link(0).unwrap().pending, 10);
        start(
            &mut engine,
            now,
            "AT+CIPRECVDATA=0,8\r\n",
            Kind::Receive { link: 0 },
            5,
        );
        engine.feed(
            now,
            b"+CIPRECVDATA:8,\"1.2.3.4\",443,OK\r\nabcd",
            &mut |_| {},
        );
        assert_eq!(engine.received(0), b"", "nothing handed out mid-answer");
        engine.feed(now, b"\r\nOK\r\n", &mut |_| {});
        assert_eq!(engine.take_outcome(), Some(Ok(())));
        assert_eq!(engine.received(0), b"OK\r\nabcd");
        assert_eq!(engine.received(1), b"");
        assert_eq!(engine.link(0).unwrap().pending, 2);
        engine.consume(3);
        assert_eq!(engine.received(0), b"\nabcd");
    }

    /// The hang seen in the TLS fault test: the answer to
    /// `AT+CIPRECVLEN?` said 0, a `+IPD` arrived right behind it (in the
    /// same read), and the count applied after the exchange erased the
    /// notice, which ESP-AT does not repeat until the host reads.
    #[test]
    fn an_ipd_behind_the_recvlen_answer_is_not_lost() {
        let mut recv = [0u8; 8];
        let mut engine = Engine::new(&mut recv);
        let now = Instant::ZERO;
        engine.initialised();
        engine.feed(now, b"0,CONNECT\r\n", &mut |_| {});
        start(&mut engine, now, "AT+CIPRECVLEN?\r\n", Kind::Plain, 5);
        engine.feed(
            now,
            b"+CIPRECVLEN:0,-1,-1,-1,-1\r\n\r\nOK\r\n+IPD,0,6\r\n",
            &mut |_| {},
        );
        assert_eq!(engine.take_outcome(), Some(Ok(())));
        assert_eq!(engine.link(0).unwrap().pending, 6);
        // And the other way round: the answer counts what the notice did.
        engine.feed(now, b"+IPD,1,3\r\n", &mut |_| {});
        start(&mut engine, now, "AT+CIPRECVLEN?\r\n", Kind::Plain, 5);
        engine.feed(now, b"+CIPRECVLEN:6,9,-1,-1,-1\r\n\r\nOK\r\n", &mut |_| {});
        assert_eq!(engine.take_outcome(), Some(Ok(())));
        assert_eq!(engine.link(1).unwrap().pending, 9);
        assert_eq!(engine.link(2).unwrap().pending, 0, "-1: not open");
    }

    /// SSL links report encrypted lengths: the data handed out is shorter,
    /// and reading the rest is refused or empty. Either clears `pending`
    /// where it stands in the stream, not over a newer `+IPD`.
    #[test]
    fn encrypted_lengths_clear_in_stream_order() {
        let mut recv = [0u8; 64];
        let mut engine = Engine::new(&mut recv);
        let now = Instant::ZERO;
        engine.initialised();
        engine.feed(now, b"0,CONNECT\r\n+IPD,0,35\r\n", &mut |_| {});
        start(
            &mut engine,
            now,
            "AT+CIPRECVDATA=0,35\r\n",
            Kind::Receive { link: 0 },
            5,
        );
        engine.feed(
            now,
            b"+CIPRECVDATA:6,\"1.2.3.4\",443,secret\r\nOK\r\n",
            &mut |_| {},
        );
        assert_eq!(engine.take_outcome(), Some(Ok(())));
        assert_eq!(engine.received(0), b"secret");
        assert_eq!(engine.link(0).unwrap().pending, 29, "the record's overhead");
        engine.consume_all();
        // ESP-AT answers ERROR to reading the overhead; more data arrives.
        start(
            &mut engine,
            now,
            "AT+CIPRECVDATA=0,29\r\n",
            Kind::Receive { link: 0 },
            5,
        );
        engine.feed(now, b"\r\nERROR\r\n+IPD,0,40\r\n", &mut |_| {});
        assert!(matches!(
            engine.take_outcome(),
            Some(Err(Error::Command { .. }))
        ));
        assert_eq!(engine.link(0).unwrap().pending, 40);
        // An empty answer clears it the same way.
        start(
            &mut engine,
            now,
            "AT+CIPRECVDATA=0,40\r\n",
            Kind::Receive { link: 0 },
            5,
        );
        engine.feed(
            now,
            b"+CIPRECVDATA:0,\"1.2.3.4\",443,\r\nOK\r\n",
            &mut |_| {},
        );
        assert_eq!(engine.take_outcome(), Some(Ok(())));
        assert_eq!(engine.link(0).unwrap().pending, 0);
    }

    /// The portal's flake: a phone's new connection took the id just
    /// closed, and its `CONNECT` and `+IPD` came in the same read as the
    /// `OK` of `AT+CIPCLOSE`; forgetting the link after the exchange erased
    /// them and the request was never answered.
    #[test]
    fn a_new_connection_on_a_closed_id_right_behind_the_close_counts() {
        let mut recv = [0u8; 8];
        let mut engine = Engine::new(&mut recv);
        let now = Instant::ZERO;
        engine.initialised();
        engine.feed(now, b"0,CONNECT\r\n+IPD,0,3\r\n", &mut |_| {});
        let first = engine.link(0).unwrap().generation;
        start(
            &mut engine,
            now,
            "AT+CIPCLOSE=0\r\n",
            Kind::Close { link: 0 },
            5,
        );
        engine.feed(
            now,
            b"0,CLOSED\r\n\r\nOK\r\n0,CONNECT\r\n+IPD,0,77\r\n",
            &mut |_| {},
        );
        assert_eq!(engine.take_outcome(), Some(Ok(())));
        let link = engine.link(0).unwrap();
        assert!(link.open && !link.closed, "{link:?}");
        assert_eq!(link.pending, 77);
        assert_ne!(link.generation, first);
        // `ERROR` (it was not open) forgets it the same way.
        start(
            &mut engine,
            now,
            "AT+CIPCLOSE=0\r\n",
            Kind::Close { link: 0 },
            5,
        );
        engine.feed(now, b"ERROR\r\n", &mut |_| {});
        assert!(matches!(
            engine.take_outcome(),
            Some(Err(Error::Command { .. }))
        ));
        let link = engine.link(0).unwrap();
        assert!(!link.open && link.pending == 0);
    }

    #[test]
    fn an_unasked_reset_fails_the_command_and_closes_every_link() {
        let mut recv = [0u8; 8];
        let mut engine = Engine::new(&mut recv);
        let now = Instant::ZERO;
        engine.initialised();
        engine.feed(now, b"WIFI GOT IP\r\n1,CONNECT\r\n", &mut |_| {});
        assert!(engine.link(1).unwrap().open);
        start(&mut engine, now, "AT+CIPRECVLEN?\r\n", Kind::Plain, 5);
        engine.feed(now, b"\x00\xff garbage\r\n\r\nready\r\n", &mut |_| {});
        assert_eq!(engine.take_outcome(), Some(Err(Error::ModemReset)));
        let link = engine.link(1).unwrap();
        assert!(!link.open && link.closed);
        assert!(engine.needs_init());
        assert_eq!(engine.wifi(), WifiState::default());
    }

    /// The power-on `ready` was still in the serial buffer when the first
    /// probe went out: the probe takes its own `OK`, so the next command
    /// gets the next one and not an answer behind.
    #[test]
    fn a_ready_during_the_probe_leaves_it_waiting_for_its_answer() {
        let mut recv = [0u8; 8];
        let mut engine = Engine::new(&mut recv);
        let now = Instant::ZERO;
        start(&mut engine, now, "AT\r\n", Kind::Probe, 1);
        engine.feed(
            now,
            b"\x00\xe0 ets Jan  8 2013,rst cause:1\r\n\r\nready\r\n",
            &mut |_| {},
        );
        assert_eq!(engine.take_outcome(), None);
        assert!(engine.needs_init());
        assert_eq!(engine.stats().resets, 1);
        engine.feed(now, b"AT\r\n\r\nOK\r\n", &mut |_| {});
        assert_eq!(engine.take_outcome(), Some(Ok(())));
        // A modem that lost the probe in its restart never answers it.
        start(&mut engine, now, "AT\r\n", Kind::Probe, 1);
        engine.feed(now, b"\r\nready\r\n", &mut |_| {});
        let later = now + Duration::from_secs(1);
        assert_eq!(engine.poll_at(), Some(later));
        engine.handle_timeout(later);
        assert_eq!(engine.take_outcome(), Some(Err(Error::Timeout)));
    }

    #[test]
    fn reset_waits_for_ready() {
        let mut recv = [0u8; 8];
        let mut engine = Engine::new(&mut recv);
        let now = Instant::ZERO;
        start(&mut engine, now, "AT+RST\r\n", Kind::Reset, 5);
        engine.feed(now, b"OK\r\n", &mut |_| {});
        assert_eq!(engine.take_outcome(), None);
        engine.feed(
            now,
            b" ets Jan  8 2013,rst cause:2\r\n\r\nready\r\n",
            &mut |_| {},
        );
        assert_eq!(engine.take_outcome(), Some(Ok(())));
    }

    #[test]
    fn error_codes_reach_the_error() {
        let mut recv = [0u8; 8];
        let mut engine = Engine::new(&mut recv);
        let now = Instant::ZERO;
        start(&mut engine, now, "AT+FAKE\r\n", Kind::Plain, 5);
        engine.feed(now, b"ERR CODE:0x01090000\r\n\r\nERROR\r\n", &mut |_| {});
        let outcome = engine.take_outcome().unwrap();
        assert_eq!(
            outcome,
            Err(Error::Command {
                code: Some(0x0109_0000)
            })
        );
        assert_eq!(outcome.unwrap_err().subcategory(), Some(0x09));
    }
}
