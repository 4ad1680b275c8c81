//! [`Link`]: one connection of the device client, sans-IO (the shape of
//! smoltcp's interface and quinn-proto's `Connection`). It owns the client
//! side of the opening handshake, the WebSocket framing (through
//! [`ws::Context`]) and the tether messages, and drives the [`Session`];
//! it never touches a socket, a clock or a random source of its own.
//!
//! ```text
//!           Runner (async, generic: transport, clock, board)
//!   connect ─┐   ▲ bytes out          │ bytes in      │ now
//!            ▼   │                    ▼               ▼
//!   Link::new  poll_transmit ─► Write / Publish{after} / Idle / Done
//!              transmit_bytes       receive_buffer, filled
//!              publish(entry)       handle_input ─► Command (to the handler)
//!              poll_at ◄─ sleep ──  handle_timeout
//!                        │ drives
//!                        ▼
//!                     Session (numbers, acks, keepalive, backoff)
//! ```
//!
//! Phases: `Handshake` (the HTTP upgrade request goes out from the receive
//! buffer, the reply comes back into it), `Open` (frames both ways; when
//! the session drops the link, the close frame its error maps to goes out
//! and the link waits for the server's reply until the send timeout),
//! `Done` (the close frame the server is owed, if any, goes out; then the
//! runner closes the transport). Every failure reaches the session exactly
//! once, as the [`LinkError`] the async client reported before.
//!
//! The link is compiled once: it is not generic and reaches the session
//! through the object-safe [`LinkSession`], so the board's transport,
//! clock and random source stay in the thin async adapter
//! (`client/runner.rs`). Tests on virtual time are at the bottom.

use tether_proto::{Command, CommandStatus, ServerToDevice};

use super::ClientConfig;
use super::encode::{self, Outgoing};
use super::max_downlink_len;
use crate::outbox::{Entry, Timestamp};
use crate::session::{CommandAckQueueFull, ConnectionState, LinkError, Session, Transmit};
use crate::time::Instant;
use crate::url::ServerUrl;
use crate::ws::{self, ClientHandshake, ClientRequest, CloseCode, Context, Key, Message, OpCode};

/// What the link needs of the [`Session`]: its methods, object-safe, so
/// the link does not depend on the board's random source type.
pub(super) trait LinkSession {
    fn state(&self) -> ConnectionState;
    fn last_error(&self) -> Option<LinkError>;
    fn poll_at(&self) -> Option<Instant>;
    fn handle_timeout(&mut self, now: Instant);
    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit<'_>>;
    fn on_link_up(&mut self, now: Instant);
    fn on_link_lost(&mut self, now: Instant, error: LinkError);
    fn on_welcome(&mut self, now: Instant, stored: u32, window: u16, server_ms: u64);
    fn on_ack(&mut self, now: Instant, seq: u32);
    fn on_message(&mut self, now: Instant) -> Result<(), LinkError>;
    fn on_ping(&mut self, now: Instant, payload: &[u8]);
    fn on_pong(&mut self, now: Instant, payload: &[u8]);
    fn on_sent(&mut self, seq: u32);
    fn on_nothing_after(&mut self, after: u32);
    fn timestamp(&self, time: Option<Timestamp>) -> Option<u64>;
    fn acknowledge_command(
        &mut self,
        id: u32,
        status: CommandStatus,
        result: &[u8],
    ) -> Result<(), CommandAckQueueFull>;
    /// A fresh random word (masking keys, the handshake's nonce).
    fn random(&mut self) -> u32;
}

impl<R: rand_core::RngCore> LinkSession for Session<R> {
    fn state(&self) -> ConnectionState {
        Session::state(self)
    }
    fn last_error(&self) -> Option<LinkError> {
        Session::last_error(self)
    }
    fn poll_at(&self) -> Option<Instant> {
        Session::poll_at(self)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Session::handle_timeout(self, now);
    }
    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit<'_>> {
        Session::poll_transmit(self, now)
    }
    fn on_link_up(&mut self, now: Instant) {
        Session::on_link_up(self, now);
    }
    fn on_link_lost(&mut self, now: Instant, error: LinkError) {
        Session::on_link_lost(self, now, error);
    }
    // The session drops the link itself when these fail.
    fn on_welcome(&mut self, now: Instant, stored: u32, window: u16, server_ms: u64) {
        let _ = Session::on_welcome(self, now, stored, window, server_ms);
    }
    fn on_ack(&mut self, now: Instant, seq: u32) {
        let _ = Session::on_ack(self, now, seq);
    }
    fn on_message(&mut self, now: Instant) -> Result<(), LinkError> {
        Session::on_message(self, now)
    }
    fn on_ping(&mut self, now: Instant, payload: &[u8]) {
        let _ = Session::on_ping(self, now, payload);
    }
    fn on_pong(&mut self, now: Instant, payload: &[u8]) {
        Session::on_pong(self, now, payload);
    }
    fn on_sent(&mut self, seq: u32) {
        Session::on_sent(self, seq);
    }
    fn on_nothing_after(&mut self, after: u32) {
        Session::on_nothing_after(self, after);
    }
    fn timestamp(&self, time: Option<Timestamp>) -> Option<u64> {
        Session::timestamp(self, time)
    }
    fn acknowledge_command(
        &mut self,
        id: u32,
        status: CommandStatus,
        result: &[u8],
    ) -> Result<(), CommandAckQueueFull> {
        Session::acknowledge_command(self, id, status, result)
    }
    fn random(&mut self) -> u32 {
        self.rng_mut().next_u32()
    }
}

/// What the runner does next, from [`Link::poll_transmit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Output {
    /// Write [`Link::transmit_bytes`] (bounded by the send timeout).
    Write,
    /// Read the oldest stored message numbered above `after` from the
    /// outbox and hand it to [`Link::publish`].
    Publish { after: u32 },
    /// Nothing to send: wait for the server, [`Link::poll_at`] or a publish.
    Idle,
    /// The link is over: close the transport.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The upgrade request is out (or `request` bytes of it wait in `rx`);
    /// `filled` bytes of the reply are in `rx`.
    Handshake { request: usize, filled: usize },
    /// Frames both ways.
    Open,
    /// Our close frame is out; the server's reply is awaited until `until`.
    Closing { until: Instant },
    /// Nothing more to read; the owed close frame, if any, goes out.
    Done,
}

/// One connection of the device client: handshake, framing, tether
/// messages, over the runner's buffers. See the [module docs](self).
pub(super) struct Link<'a> {
    config: &'a ClientConfig<'a>,
    handshake: ClientHandshake<'a>,
    rx: &'a mut [u8],
    tx: &'a mut [u8],
    message: &'a mut [u8],
    ws: Context,
    phase: Phase,
    /// Bytes of the last [`Output::Write`] in `tx` (in `rx` for the
    /// request).
    out_len: usize,
    /// The message in `message` being sent, with its length, and how much
    /// of it went out: data messages longer than `tx` go in fragments.
    sending: Option<(OpCode, usize)>,
    offset: usize,
    max_downlink: u32,
}

impl<'a> Link<'a> {
    /// A link over a transport that has just connected: the upgrade request
    /// (with a fresh key) waits in `rx` for [`Link::poll_transmit`].
    pub(super) fn new(
        now: Instant,
        config: &'a ClientConfig<'a>,
        url: &ServerUrl<'a>,
        rx: &'a mut [u8],
        tx: &'a mut [u8],
        message: &'a mut [u8],
        session: &mut dyn LinkSession,
    ) -> Self {
        let mut request = ClientRequest::new(url.authority, url.path);
        if let Some(authorization) = config.authorization {
            request = request.with_authorization(authorization);
        }
        let mut nonce = [0u8; 16];
        for word in nonce.chunks_exact_mut(4) {
            word.copy_from_slice(&session.random().to_ne_bytes());
        }
        let handshake = ClientHandshake::with_key(request, Key::from_nonce(nonce));
        // The request goes out from `rx`, free until the reply arrives: the
        // transmit buffer may be smaller than an HTTP head.
        let encoded = handshake.encode(rx);
        let mut link = Self {
            config,
            handshake,
            max_downlink: max_downlink_len(rx.len()),
            rx,
            tx,
            message,
            ws: Context::new(ws::Config::client()),
            phase: Phase::Handshake {
                request: 0,
                filled: 0,
            },
            out_len: 0,
            sending: None,
            offset: 0,
        };
        match encoded {
            Ok(request) => link.phase = Phase::Handshake { request, filled: 0 },
            Err(_) => link.lost(now, session, LinkError::HandshakeFailed),
        }
        link
    }

    /// The next thing to do. After [`Output::Write`], write
    /// [`Link::transmit_bytes`] before calling again.
    pub(super) fn poll_transmit(&mut self, now: Instant, session: &mut dyn LinkSession) -> Output {
        self.out_len = 0;
        match self.phase {
            Phase::Handshake { request, filled } => {
                if request == 0 {
                    return Output::Idle;
                }
                self.phase = Phase::Handshake { request: 0, filled };
                self.out_len = request;
                return Output::Write;
            }
            Phase::Closing { .. } => return Output::Idle,
            Phase::Done => {
                let key = session.random().to_ne_bytes();
                return match self.ws.encode_owed_close(key, self.tx) {
                    Some(len) => self.write(len),
                    None => Output::Done,
                };
            }
            Phase::Open => {}
        }
        if !session.state().is_link_up() {
            // The session dropped the link (a timeout, a bad message, a new
            // boot): tell the server why when there is a code for it.
            let code = session
                .last_error()
                .and_then(|e| e.close_code())
                .filter(|code| CloseCode::new(*code).is_sendable());
            self.phase = Phase::Done;
            if let Some(code) = code {
                let key = session.random().to_ne_bytes();
                let mut offset = 0;
                if let Ok(len) = self.ws.encode(
                    OpCode::Close,
                    &code.to_be_bytes(),
                    &mut offset,
                    key,
                    self.tx,
                ) {
                    self.phase = Phase::Closing {
                        until: now + self.config.send_timeout,
                    };
                    return self.write(len);
                }
            }
            return Output::Done;
        }
        if self.sending.is_none() {
            let outgoing = match session.poll_transmit(now) {
                None => return Output::Idle,
                Some(Transmit::Publish { after }) => return Output::Publish { after },
                Some(transmit) => {
                    encode::control(transmit, self.config, self.max_downlink, self.message)
                }
            };
            match outgoing {
                Some(Outgoing::Binary(len)) => self.start(OpCode::Binary, len),
                Some(Outgoing::Pong(len)) => self.start(OpCode::Pong, len),
                Some(Outgoing::Ping(nonce)) => {
                    if let Some(slot) = self.message.get_mut(..4) {
                        slot.copy_from_slice(&nonce.to_le_bytes());
                    }
                    self.start(OpCode::Ping, 4);
                }
                None => {
                    self.lost(now, session, LinkError::Io);
                    return Output::Done;
                }
            }
        }
        let Some((opcode, len)) = self.sending else {
            return Output::Idle;
        };
        let key = session.random().to_ne_bytes();
        let payload = self.message.get(..len).unwrap_or_default();
        match self
            .ws
            .encode(opcode, payload, &mut self.offset, key, self.tx)
        {
            Ok(written) => {
                if self.offset >= len {
                    self.sending = None;
                }
                self.write(written)
            }
            Err(e) => {
                self.lost(now, session, encode::link_error(e));
                Output::Done
            }
        }
    }

    /// The bytes of the last [`Output::Write`].
    pub(super) fn transmit_bytes(&self) -> &[u8] {
        let buffer: &[u8] = match self.phase {
            Phase::Handshake { .. } => self.rx,
            _ => self.tx,
        };
        buffer.get(..self.out_len).unwrap_or_default()
    }

    /// The stored message [`Output::Publish`] asked for (`None`: the outbox
    /// has none, or could not read it): it goes out with the next
    /// [`Link::poll_transmit`].
    pub(super) fn publish(
        &mut self,
        session: &mut dyn LinkSession,
        after: u32,
        entry: Option<&Entry<'_>>,
    ) {
        let encoded = entry.and_then(|entry| {
            session.on_sent(entry.seq);
            let time = session.timestamp(entry.time);
            let encoded = encode::publish(entry, time, self.message);
            if encoded.is_none() {
                // Stored by a firmware with a larger payload capacity:
                // skipped, freed by later acks.
                warn!("client: stored message {} too large, skipped", entry.seq);
            }
            encoded
        });
        match encoded {
            Some(Outgoing::Binary(len)) => self.start(OpCode::Binary, len),
            _ => session.on_nothing_after(after),
        }
    }

    /// Where the runner reads transport bytes to (report them with
    /// [`Link::filled`]).
    pub(super) fn receive_buffer(&mut self) -> &mut [u8] {
        match self.phase {
            Phase::Handshake { filled, .. } => self.rx.get_mut(filled..).unwrap_or_default(),
            _ => self.ws.space(self.rx).unwrap_or_default(),
        }
    }

    /// `n` bytes were read into the start of [`Link::receive_buffer`];
    /// process them with [`Link::handle_input`].
    pub(super) fn filled(&mut self, n: usize) {
        match &mut self.phase {
            Phase::Handshake { filled, .. } => *filled = filled.saturating_add(n),
            _ => self.ws.filled(n),
        }
    }

    /// Processes what was read: the handshake's reply, then frames, until
    /// more bytes are needed or a command arrives (hand it to the
    /// application, then [`acknowledge`] it, and call again).
    pub(super) fn handle_input(
        &mut self,
        now: Instant,
        session: &mut dyn LinkSession,
    ) -> Option<Command<'_>> {
        if let Phase::Handshake { filled, .. } = self.phase {
            let head = self.rx.get(..filled).unwrap_or_default();
            match self.handshake.parse_response(head) {
                Ok(ws::Status::Partial) => {
                    if filled >= self.rx.len() {
                        self.lost(now, session, LinkError::HandshakeFailed);
                    }
                    return None;
                }
                Ok(ws::Status::Complete(response)) => {
                    debug!("client: WebSocket up");
                    let header_len = response.header_len.min(filled);
                    self.rx.copy_within(header_len..filled, 0);
                    self.ws = Context::with_buffered(ws::Config::client(), filled - header_len);
                    self.phase = Phase::Open;
                    session.on_link_up(now);
                }
                Err(e) => {
                    let error = encode::link_error(ws::Error::Handshake(e));
                    self.lost(now, session, error);
                    return None;
                }
            }
        }
        loop {
            match self.phase {
                Phase::Open if session.state().is_link_up() => {}
                // The session dropped the link: `poll_transmit` closes it.
                Phase::Open => return None,
                Phase::Closing { .. } => {}
                Phase::Handshake { .. } | Phase::Done => return None,
            }
            match self.ws.poll(self.rx) {
                Ok(ws::Status::Complete(_)) => {}
                Ok(ws::Status::Partial) => {
                    // A frame that can never fit fails now, not at the read.
                    if let Err(e) = self.ws.space(self.rx) {
                        self.lost(now, session, encode::link_error(e));
                    }
                    return None;
                }
                Err(e) => {
                    // A protocol error: its close code is owed.
                    self.lost(now, session, encode::link_error(e));
                    return None;
                }
            }
            if let Phase::Closing { .. } = self.phase {
                // Waiting for the reply to our close: the rest is ignored.
                if self.ws.is_closed() {
                    self.phase = Phase::Done;
                }
                continue;
            }
            // Validated by `poll`: always there.
            let Ok(message) = self.ws.message(self.rx) else {
                continue;
            };
            match message {
                Message::Binary(bytes) => match ServerToDevice::decode(bytes) {
                    Err(_) => {
                        warn!("client: undecodable server message");
                        session.on_link_lost(now, LinkError::Malformed);
                    }
                    Ok(ServerToDevice::Welcome(welcome)) => session.on_welcome(
                        now,
                        welcome.last_stored_seq,
                        welcome.max_in_flight,
                        welcome.server_time_ms,
                    ),
                    Ok(ServerToDevice::Ack(ack)) => session.on_ack(now, ack.seq),
                    Ok(ServerToDevice::Command(command)) => {
                        if session.on_message(now).is_ok() {
                            debug!("client: command {} on {}", command.id, command.channel);
                            // Borrow `rx` again for the caller's lifetime.
                            return self.command();
                        }
                    }
                },
                // Devices speak binary only.
                Message::Text(_) => session.on_link_lost(now, LinkError::Malformed),
                // The pong goes out with the next transmissions.
                Message::Ping(payload) => session.on_ping(now, payload),
                Message::Pong(payload) => session.on_pong(now, payload),
                Message::Close(frame) => {
                    // The echo is owed; it goes out in `Done`.
                    session.on_link_lost(now, closed(frame));
                    self.phase = Phase::Done;
                }
            }
        }
    }

    /// The command of the current message (decoded once more, borrowing
    /// `rx` for as long as the caller holds it).
    fn command(&self) -> Option<Command<'_>> {
        match self.ws.message(self.rx) {
            Ok(Message::Binary(bytes)) => match ServerToDevice::decode(bytes) {
                Ok(ServerToDevice::Command(command)) => Some(command),
                _ => None,
            },
            _ => None,
        }
    }

    /// The deadline the runner sleeps until at most.
    pub(super) fn poll_at(&self, session: &dyn LinkSession) -> Option<Instant> {
        match self.phase {
            Phase::Closing { until } => Some(until),
            Phase::Done => None,
            _ => session.poll_at(),
        }
    }

    /// The runner slept until [`Link::poll_at`].
    pub(super) fn handle_timeout(&mut self, now: Instant, session: &mut dyn LinkSession) {
        match self.phase {
            Phase::Closing { until } if now >= until => self.phase = Phase::Done,
            Phase::Closing { .. } | Phase::Done => {}
            Phase::Handshake { .. } => {
                session.handle_timeout(now);
                if session.state() != ConnectionState::Connecting {
                    // The connect timeout: the session already knows.
                    self.ws.abort();
                    self.phase = Phase::Done;
                }
            }
            Phase::Open => session.handle_timeout(now),
        }
    }

    /// The transport failed (`error`: [`LinkError::Io`],
    /// [`LinkError::EndOfStream`] or [`LinkError::SendTimeout`]); nothing
    /// more is written.
    pub(super) fn transport_failed(
        &mut self,
        now: Instant,
        session: &mut dyn LinkSession,
        error: LinkError,
    ) {
        self.lost(now, session, error);
        self.ws.abort();
    }

    /// The link went down because of `error`: the session learns it if the
    /// link was its (not while closing, when it may already be connecting
    /// again).
    fn lost(&mut self, now: Instant, session: &mut dyn LinkSession, error: LinkError) {
        if matches!(self.phase, Phase::Handshake { .. } | Phase::Open) {
            session.on_link_lost(now, error);
        }
        self.phase = Phase::Done;
    }

    fn start(&mut self, opcode: OpCode, len: usize) {
        self.sending = Some((opcode, len));
        self.offset = 0;
    }

    fn write(&mut self, len: usize) -> Output {
        self.out_len = len;
        Output::Write
    }
}

/// Queues the acknowledgement of a command the application handled; with
/// no room for its result, the status at least.
pub(super) fn acknowledge(
    session: &mut dyn LinkSession,
    id: u32,
    status: CommandStatus,
    result: &[u8],
) {
    let queued = session
        .acknowledge_command(id, status, result)
        .or_else(|_| session.acknowledge_command(id, status, &[]));
    if queued.is_err() {
        warn!("client: command ack queue full, command {} unanswered", id);
    }
}

/// Why the server closed: its close code, or for 4017 (`draining`) the
/// reconnect delay its reason suggests (1 s if it suggests none).
fn closed(frame: Option<ws::CloseFrame<'_>>) -> LinkError {
    match frame {
        Some(frame)
            if Some(frame.code.as_u16()) == tether_proto::ErrorCode::DRAINING.close_code() =>
        {
            LinkError::Draining {
                retry_after_ms: tether_proto::reconnect_hint_ms(frame.reason).unwrap_or(1_000),
            }
        }
        Some(frame) => LinkError::Closed {
            code: frame.code.as_u16(),
        },
        None => LinkError::Closed { code: 1005 },
    }
}
