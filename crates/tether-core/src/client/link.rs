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
//! The link is compiled once per firmware: it knows nothing of the
//! board's transport and clock (they stay in the thin async adapter,
//! `client/runner.rs`), and reaches the session through [`LinkSession`],
//! instantiated for the one session type a firmware has (through a `dyn
//! LinkSession` it measured 660 B larger on the ESP32-C3). Its entry
//! points are kept out of the runner's async state machine
//! (`#[inline(never)]`: 1.7 KB less there). Tests on virtual time are at
//! the bottom.

use tether_proto::{Command, CommandStatus, ServerToDevice};

use super::ClientConfig;
use super::encode::{self, Outgoing};
use super::max_downlink_len;
use crate::outbox::{Entry, Timestamp};
use crate::session::{CommandAckQueueFull, ConnectionState, LinkError, Session, Transmit};
use crate::time::Instant;
use crate::url::ServerUrl;
use crate::ws::{self, ClientHandshake, ClientRequest, CloseCode, Context, Key, Message, OpCode};

/// What the link needs of the [`Session`]: the methods it calls, and a
/// random word for masking keys and the handshake's nonce.
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
    #[inline(never)]
    pub(super) fn new(
        now: Instant,
        config: &'a ClientConfig<'a>,
        url: &ServerUrl<'a>,
        rx: &'a mut [u8],
        tx: &'a mut [u8],
        message: &'a mut [u8],
        session: &mut impl LinkSession,
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
        let phase = match handshake.encode(rx) {
            Ok(request) => Phase::Handshake { request, filled: 0 },
            Err(_) => {
                session.on_link_lost(now, LinkError::HandshakeFailed);
                Phase::Done
            }
        };
        // Built in the caller's slot: no field is set after this (a link
        // assembled and then changed was copied out whole, 0.2 KB of moves).
        Self {
            config,
            handshake,
            max_downlink: max_downlink_len(rx.len()),
            rx,
            tx,
            message,
            ws: Context::new(ws::Config::client()),
            phase,
            out_len: 0,
            sending: None,
            offset: 0,
        }
    }

    /// The next thing to do. After [`Output::Write`], write
    /// [`Link::transmit_bytes`] before calling again.
    #[inline(never)]
    pub(super) fn poll_transmit(&mut self, now: Instant, session: &mut impl LinkSession) -> Output {
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
    #[inline(never)]
    pub(super) fn publish(
        &mut self,
        session: &mut impl LinkSession,
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
    #[inline(never)]
    pub(super) fn handle_input(
        &mut self,
        now: Instant,
        session: &mut impl LinkSession,
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
                    // The context is still the fresh one of `Link::new`
                    // (the handshake never touches it): the bytes after the
                    // head are its first input.
                    self.ws.filled(filled - header_len);
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
    pub(super) fn poll_at(&self, session: &impl LinkSession) -> Option<Instant> {
        match self.phase {
            Phase::Closing { until } => Some(until),
            Phase::Done => None,
            _ => session.poll_at(),
        }
    }

    /// The runner slept until [`Link::poll_at`].
    pub(super) fn handle_timeout(&mut self, now: Instant, session: &mut impl LinkSession) {
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
        session: &mut impl LinkSession,
        error: LinkError,
    ) {
        self.lost(now, session, error);
        self.ws.abort();
    }

    /// The link went down because of `error`: the session learns it if the
    /// link was its (not while closing, when it may already be connecting
    /// again).
    fn lost(&mut self, now: Instant, session: &mut impl LinkSession, error: LinkError) {
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
    session: &mut impl LinkSession,
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

#[cfg(test)]
#[allow(clippy::std_instead_of_alloc, clippy::std_instead_of_core)]
mod tests {
    //! The link on virtual time: a scripted server writes bytes, the test
    //! reads what the link writes. No transport, no clock, no executor.
    extern crate std;
    use std::string::String;
    use std::vec::Vec;

    use rand_core::SeedableRng;
    use rand_xorshift::XorShiftRng;
    use tether_proto::{Ack, DeviceToServer, Welcome};

    use super::*;
    use crate::ws::apply_mask;

    const RX: usize = 256;
    const TX: usize = 128;

    fn config() -> ClientConfig<'static> {
        ClientConfig::new("ws://relay.local/device", "dev-1", "1.0.0")
            .with_authorization("Bearer secret")
    }

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    /// A session that is connecting at `t = 0`.
    fn session() -> Session<XorShiftRng> {
        let config = config();
        let mut session =
            Session::new(config.session, XorShiftRng::seed_from_u64(7), at(0)).unwrap();
        session.begin_connect(at(0));
        session
    }

    /// Everything the link writes until it waits: one entry per frame
    /// (or the request), and the output it stopped at.
    fn drain(
        link: &mut Link<'_>,
        s: &mut Session<XorShiftRng>,
        now: Instant,
    ) -> (Vec<Vec<u8>>, Output) {
        let mut written = Vec::new();
        loop {
            match link.poll_transmit(now, s) {
                Output::Write => written.push(link.transmit_bytes().to_vec()),
                other => return (written, other),
            }
        }
    }

    /// The server sends `bytes` (in one read, or as many as fit).
    fn input(link: &mut Link<'_>, s: &mut Session<XorShiftRng>, now: Instant, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            let space = link.receive_buffer();
            let n = space.len().min(rest.len());
            assert!(n > 0, "no room to read into");
            space[..n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
            link.filled(n);
            while link.handle_input(now, s).is_some() {}
        }
    }

    /// The 101 reply to the upgrade request in `request`.
    fn accept(request: &[u8]) -> Vec<u8> {
        let text = String::from_utf8(request.to_vec()).unwrap();
        let key = text
            .lines()
            .find_map(|line| line.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap();
        let accept = ws::accept_key(key.as_bytes());
        let mut reply = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ".to_vec();
        reply.extend_from_slice(&accept);
        reply.extend_from_slice(b"\r\n\r\n");
        reply
    }

    /// An unmasked server frame.
    fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        assert!(payload.len() < 126);
        let mut frame = std::vec![0x80 | opcode, payload.len() as u8];
        frame.extend_from_slice(payload);
        frame
    }

    fn server(message: ServerToDevice<'_>) -> Vec<u8> {
        let mut buffer = [0u8; 256];
        frame(2, message.encode(&mut buffer).unwrap())
    }

    /// A client frame decoded: (fin, opcode, unmasked payload).
    type Decoded = (bool, u8, Vec<u8>);

    fn unmask(bytes: &[u8]) -> Decoded {
        assert_eq!(bytes[1] & 0x80, 0x80, "client frames are masked");
        let (len, start) = match bytes[1] & 0x7F {
            126 => (usize::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
            len => (usize::from(len), 2),
        };
        let key = [
            bytes[start],
            bytes[start + 1],
            bytes[start + 2],
            bytes[start + 3],
        ];
        let mut payload = bytes[start + 4..].to_vec();
        assert_eq!(payload.len(), len);
        apply_mask(&mut payload, key);
        (bytes[0] & 0x80 != 0, bytes[0] & 0x0F, payload)
    }

    struct Buffers {
        rx: [u8; RX],
        tx: [u8; TX],
        message: [u8; 512],
    }

    fn buffers() -> Buffers {
        Buffers {
            rx: [0; RX],
            tx: [0; TX],
            message: [0; 512],
        }
    }

    /// A fresh link named `$link`, connecting at `t = 0`, over a session
    /// named `$s`, with its configuration and buffers in the caller's scope.
    macro_rules! fresh_link {
        ($link:ident, $s:ident) => {
            let config = config();
            let url = config.validate().unwrap();
            let mut $s = session();
            let mut b = buffers();
            let mut $link = Link::new(
                at(0),
                &config,
                &url,
                &mut b.rx,
                &mut b.tx,
                &mut b.message,
                &mut $s,
            );
        };
    }

    /// Connects `link` through the handshake and `Welcome` at `t = 10`.
    fn connect(link: &mut Link<'_>, s: &mut Session<XorShiftRng>) {
        let (written, output) = drain(link, s, at(1));
        assert_eq!((written.len(), output), (1, Output::Idle));
        let request = String::from_utf8(written[0].clone()).unwrap();
        assert!(request.starts_with("GET /device HTTP/1.1\r\nHost: relay.local\r\n"));
        assert!(request.contains("Authorization: Bearer secret\r\n"));
        input(link, s, at(2), &accept(&written[0]));
        assert_eq!(s.state(), ConnectionState::Handshaking);
        let (written, output) = drain(link, s, at(3));
        assert_eq!(output, Output::Idle);
        let (fin, opcode, hello) = unmask(&written[0]);
        assert!(fin && opcode == 2);
        assert!(matches!(
            DeviceToServer::decode(&hello),
            Ok(DeviceToServer::Hello(_))
        ));
        let welcome = Welcome {
            session_id: 1,
            server_time_ms: 0,
            last_stored_seq: 0,
            max_in_flight: 8,
        };
        input(link, s, at(10), &server(ServerToDevice::Welcome(welcome)));
        assert_eq!(s.state(), ConnectionState::Connected);
    }

    #[test]
    fn handshake_welcome_publish_and_ack() {
        fresh_link!(link, s);
        connect(&mut link, &mut s);
        // A stored message, longer than the transmit buffer: fragments.
        let pending = s.begin_publish(at(11), true).unwrap();
        s.on_stored(pending.seq);
        let (written, output) = drain(&mut link, &mut s, at(11));
        assert!(written.is_empty());
        assert_eq!(output, Output::Publish { after: 0 });
        let json = [b'1'; 200];
        let entry = Entry::new(pending.seq, "a/b", &json);
        link.publish(&mut s, 0, Some(&entry));
        let (written, output) = drain(&mut link, &mut s, at(11));
        assert_eq!(output, Output::Idle);
        assert_eq!(
            written.len(),
            2,
            "{} bytes in a {TX}-byte buffer",
            json.len()
        );
        let (first, second) = (unmask(&written[0]), unmask(&written[1]));
        assert_eq!((first.0, first.1, second.0, second.1), (false, 2, true, 0));
        let whole = [first.2, second.2].concat();
        match DeviceToServer::decode(&whole) {
            Ok(DeviceToServer::Publish(publish)) => {
                assert_eq!((publish.seq, publish.channel), (1, "a/b"));
            }
            other => panic!("{other:?}"),
        }
        input(
            &mut link,
            &mut s,
            at(20),
            &server(ServerToDevice::Ack(Ack { seq: 1 })),
        );
        assert_eq!(s.acked_seq(), 1);
    }

    #[test]
    fn frames_behind_the_reply_head_are_read_in_the_same_input() {
        fresh_link!(link, s);
        let (written, _) = drain(&mut link, &mut s, at(1));
        // The reply and a ping in one read.
        let mut bytes = accept(&written[0]);
        bytes.extend_from_slice(&frame(9, b"hi"));
        let space = link.receive_buffer();
        space[..bytes.len()].copy_from_slice(&bytes);
        link.filled(bytes.len());
        assert!(link.handle_input(at(2), &mut s).is_none());
        assert_eq!(s.state(), ConnectionState::Handshaking);
        let (written, output) = drain(&mut link, &mut s, at(3));
        assert_eq!(output, Output::Idle);
        let frames: Vec<Decoded> = written.iter().map(|w| unmask(w)).collect();
        assert_eq!(frames.len(), 2, "{frames:?}");
        assert_eq!(frames[0].1, 2, "Hello first");
        assert_eq!(frames[1], (true, 10, b"hi".to_vec()));
    }

    #[test]
    fn keepalive_on_virtual_time_and_a_missing_pong_ends_the_link() {
        fresh_link!(link, s);
        connect(&mut link, &mut s);
        let ping_due = link.poll_at(&s).unwrap();
        assert!(ping_due > at(10));
        link.handle_timeout(ping_due, &mut s);
        let (written, output) = drain(&mut link, &mut s, ping_due);
        assert_eq!(output, Output::Idle);
        let (_, opcode, nonce) = unmask(&written[0]);
        assert_eq!((opcode, nonce.len()), (9, 4));
        // A server ping is answered with its payload.
        input(&mut link, &mut s, ping_due, &frame(9, b"hi"));
        let (written, _) = drain(&mut link, &mut s, ping_due);
        assert_eq!(unmask(&written[0]), (true, 10, b"hi".to_vec()));
        // No pong: at the pong deadline the link is dead, without a close
        // frame (there is no code for it).
        let deadline = link.poll_at(&s).unwrap();
        link.handle_timeout(deadline, &mut s);
        assert_eq!(s.last_error(), Some(LinkError::PongTimeout));
        assert_eq!(
            drain(&mut link, &mut s, deadline),
            (Vec::new(), Output::Done)
        );
    }

    #[test]
    fn a_pong_keeps_the_link_up() {
        fresh_link!(link, s);
        connect(&mut link, &mut s);
        let ping_due = link.poll_at(&s).unwrap();
        let (written, _) = drain(&mut link, &mut s, ping_due);
        let (_, _, nonce) = unmask(&written[0]);
        input(&mut link, &mut s, ping_due, &frame(10, &nonce));
        let next = link.poll_at(&s).unwrap();
        link.handle_timeout(next, &mut s);
        assert_eq!(s.state(), ConnectionState::Connected);
    }

    /// A link whose upgrade got `reply`: the error it ends with.
    fn after_reply(reply: &[u8]) -> (Option<LinkError>, ConnectionState, Output) {
        fresh_link!(link, s);
        drain(&mut link, &mut s, at(1));
        input(&mut link, &mut s, at(2), reply);
        let (written, output) = drain(&mut link, &mut s, at(2));
        assert!(
            written.is_empty(),
            "nothing is written after a failed upgrade"
        );
        (s.last_error(), s.state(), output)
    }

    #[test]
    fn bad_handshake_replies_fail_with_typed_errors() {
        let (error, state, output) = after_reply(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
        );
        assert_eq!(
            (error, output),
            (Some(LinkError::HandshakeFailed), Output::Done)
        );
        assert!(matches!(state, ConnectionState::BackingOff { .. }));
        let (error, state, _) =
            after_reply(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(error, Some(LinkError::Refused { status: 401 }));
        assert_eq!(
            state,
            ConnectionState::NeedsProvisioning(LinkError::Refused { status: 401 })
        );
        let (error, _, _) = after_reply(b"HTTP/1.1 503 Busy\r\n\r\n");
        assert_eq!(error, Some(LinkError::Refused { status: 503 }));
        let (error, _, _) = after_reply(b"SSH-2.0-OpenSSH\r\n\r\n");
        assert_eq!(error, Some(LinkError::HandshakeFailed));
        // A reply head longer than the receive buffer.
        let mut long = b"HTTP/1.1 101 Switching Protocols\r\nX-Padding: ".to_vec();
        long.resize(RX, b'a');
        let (error, _, output) = after_reply(&long);
        assert_eq!(
            (error, output),
            (Some(LinkError::HandshakeFailed), Output::Done)
        );
    }

    #[test]
    fn a_slow_upgrade_times_out() {
        fresh_link!(link, s);
        drain(&mut link, &mut s, at(1));
        let deadline = link.poll_at(&s).unwrap();
        let timeout = config().session.connect_timeout();
        assert_eq!(deadline, at(0) + timeout);
        let just_before = timeout.as_millis() - 1;
        link.handle_timeout(at(u64::from(just_before)), &mut s);
        assert_eq!(s.state(), ConnectionState::Connecting);
        link.handle_timeout(deadline, &mut s);
        assert_eq!(s.last_error(), Some(LinkError::ConnectTimeout));
        assert_eq!(
            drain(&mut link, &mut s, deadline),
            (Vec::new(), Output::Done)
        );
    }

    /// A connected link that received `bytes`: what it wrote, its output,
    /// the session's error.
    fn connected_then(bytes: &[u8]) -> (Vec<Decoded>, Output, Option<LinkError>) {
        fresh_link!(link, s);
        connect(&mut link, &mut s);
        input(&mut link, &mut s, at(20), bytes);
        let (written, output) = drain(&mut link, &mut s, at(20));
        let frames = written.iter().map(|w| unmask(w)).collect();
        (frames, output, s.last_error())
    }

    #[test]
    fn malformed_frames_close_with_their_code() {
        // A masked frame from the server: 1002, then done.
        let (frames, output, error) = connected_then(&[0x82, 0x81, 1, 2, 3, 4, 5]);
        assert_eq!(frames, [(true, 8, 1002u16.to_be_bytes().to_vec())]);
        assert_eq!((output, error), (Output::Done, Some(LinkError::Protocol)));
        // A reserved opcode.
        let (frames, _, error) = connected_then(&[0x83, 0x00]);
        assert_eq!(frames, [(true, 8, 1002u16.to_be_bytes().to_vec())]);
        assert_eq!(error, Some(LinkError::Protocol));
        // A frame bigger than the receive buffer: 1009.
        let (frames, _, error) = connected_then(&[0x82, 0x7E, 0x10, 0x00]);
        assert_eq!(frames, [(true, 8, 1009u16.to_be_bytes().to_vec())]);
        assert_eq!(error, Some(LinkError::Protocol));
    }

    #[test]
    fn bad_messages_close_and_wait_for_the_reply() {
        // Undecodable, and text: 1007; the link waits for the server's close.
        for bytes in [frame(2, &[0xFF, 0xFF]), frame(1, b"hello")] {
            let (frames, output, error) = connected_then(&bytes);
            assert_eq!(frames, [(true, 8, 1007u16.to_be_bytes().to_vec())]);
            assert_eq!((output, error), (Output::Idle, Some(LinkError::Malformed)));
        }
        // An ack for a message never sent breaks the session's rules: 1002.
        let (frames, _, error) = connected_then(&server(ServerToDevice::Ack(Ack { seq: 9 })));
        assert_eq!(frames, [(true, 8, 1002u16.to_be_bytes().to_vec())]);
        assert_eq!(error, Some(LinkError::Protocol));
    }

    #[test]
    fn closing_ends_at_the_reply_or_the_send_timeout() {
        for reply in [true, false] {
            fresh_link!(link, s);
            connect(&mut link, &mut s);
            input(&mut link, &mut s, at(20), &frame(1, b"text"));
            let (written, output) = drain(&mut link, &mut s, at(20));
            assert_eq!((written.len(), output), (1, Output::Idle));
            // Data while closing is ignored.
            input(&mut link, &mut s, at(21), &frame(2, b"late"));
            assert_eq!(drain(&mut link, &mut s, at(21)), (Vec::new(), Output::Idle));
            if reply {
                input(&mut link, &mut s, at(22), &frame(8, &1007u16.to_be_bytes()));
            } else {
                let until = link.poll_at(&s).unwrap();
                assert_eq!(until, at(20) + config().send_timeout);
                link.handle_timeout(until, &mut s);
            }
            assert_eq!(drain(&mut link, &mut s, at(30)), (Vec::new(), Output::Done));
            assert_eq!(s.last_error(), Some(LinkError::Malformed));
        }
    }

    #[test]
    fn a_server_close_is_echoed_and_reported() {
        let (frames, output, error) = connected_then(&frame(8, &4013u16.to_be_bytes()));
        assert_eq!(frames, [(true, 8, 4013u16.to_be_bytes().to_vec())]);
        assert_eq!(
            (output, error),
            (Output::Done, Some(LinkError::Closed { code: 4013 }))
        );
        // Revoked: permanent.
        let (_, _, error) = connected_then(&frame(8, &4005u16.to_be_bytes()));
        assert!(error.unwrap().is_permanent());
        // Draining, with a reconnect hint.
        let mut draining = 4017u16.to_be_bytes().to_vec();
        draining.extend_from_slice(b"250 draining");
        let (_, _, error) = connected_then(&frame(8, &draining));
        assert_eq!(
            error,
            Some(LinkError::Draining {
                retry_after_ms: 250
            })
        );
        // No code: echoed without one.
        let (frames, _, error) = connected_then(&frame(8, b""));
        assert_eq!(frames, [(true, 8, Vec::new())]);
        assert_eq!(error, Some(LinkError::Closed { code: 1005 }));
    }

    #[test]
    fn commands_come_out_and_their_acks_go_back() {
        fresh_link!(link, s);
        connect(&mut link, &mut s);
        let command = Command {
            id: 7,
            channel: "led",
            payload: tether_proto::Payload(b"true"),
        };
        let bytes = server(ServerToDevice::Command(command));
        let space = link.receive_buffer();
        space[..bytes.len()].copy_from_slice(&bytes);
        link.filled(bytes.len());
        let received = link.handle_input(at(20), &mut s).unwrap();
        assert_eq!(received, command);
        acknowledge(&mut s, 7, CommandStatus::Ok, b"{\"on\":true}");
        assert!(link.handle_input(at(20), &mut s).is_none());
        let (written, _) = drain(&mut link, &mut s, at(20));
        let (_, opcode, ack) = unmask(&written[0]);
        assert_eq!(opcode, 2);
        match DeviceToServer::decode(&ack) {
            Ok(DeviceToServer::CommandAck(ack)) => {
                assert_eq!((ack.id, ack.status), (7, CommandStatus::Ok));
                assert_eq!(ack.result.0, b"{\"on\":true}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_failed_transport_writes_nothing_more() {
        fresh_link!(link, s);
        connect(&mut link, &mut s);
        // The server's close arrives, but the echo cannot be written.
        input(&mut link, &mut s, at(20), &frame(8, &1000u16.to_be_bytes()));
        assert_eq!(link.poll_transmit(at(20), &mut s), Output::Write);
        link.transport_failed(at(20), &mut s, LinkError::Io);
        assert_eq!(drain(&mut link, &mut s, at(20)), (Vec::new(), Output::Done));
        // The session keeps the server's reason.
        assert_eq!(s.last_error(), Some(LinkError::Closed { code: 1000 }));
        // A transport failure while open is the session's error.
        fresh_link!(link, s);
        connect(&mut link, &mut s);
        link.transport_failed(at(30), &mut s, LinkError::EndOfStream);
        assert_eq!(s.last_error(), Some(LinkError::EndOfStream));
        assert_eq!(drain(&mut link, &mut s, at(30)), (Vec::new(), Output::Done));
    }

    #[test]
    fn a_draining_close_carries_its_reconnect_hint() {
        let frame = |code: u16, reason: &'static str| {
            Some(ws::CloseFrame {
                code: CloseCode::new(code),
                reason,
            })
        };
        assert_eq!(
            closed(frame(4017, "250 draining")),
            LinkError::Draining {
                retry_after_ms: 250
            }
        );
        assert_eq!(
            closed(frame(4017, "draining")),
            LinkError::Draining {
                retry_after_ms: 1_000
            }
        );
        assert_eq!(closed(frame(1001, "250")), LinkError::Closed { code: 1001 });
        assert_eq!(closed(None), LinkError::Closed { code: 1005 });
    }
}
