//! The async adapter: runs the sans-IO frame core ([`Context`]) over any
//! `embedded_io_async::{Read, Write}` transport (an embassy-net `TcpSocket`,
//! a TLS stream, a tokio socket through `embedded-io-adapters`). It only
//! moves bytes, draws masking keys and guards against cancelled writes;
//! the protocol is the context's, shared with the device client's link.

use embedded_io_async::{Read, Write};
use rand_core::RngCore;

use super::Status;
use super::close::{CloseCode, CloseFrame};
use super::config::{Config, Role};
use super::context::Context;
use super::error::{Error, HandshakeError};
use super::frame::{MAX_CONTROL_PAYLOAD, OpCode};
use super::handshake::{ClientHandshake, ClientRequest, Request};
use super::message::Message;

/// A WebSocket connection over transport `T`, with receive and transmit
/// buffers owned by the caller and masking keys drawn from `R`.
///
/// - `rx` holds incoming frames and reassembled messages: the largest message
///   that can be received is a little under `rx.len()`.
/// - `tx` holds one outgoing frame at a time: longer messages are sent as
///   fragments of at most `tx.len() - 14` bytes (or the configured
///   fragment size, if smaller).
/// - `R` must be unpredictable (a hardware TRNG, or a CSPRNG seeded from one):
///   clients draw a fresh masking key for every frame (RFC 6455 5.3).
///
/// - `tx` must hold at least `14 + 125` bytes so that pongs and close frames
///   with any legal payload fit.
///
/// [`receive`](WebSocket::receive) answers pings with pongs and completes
/// the close handshake on its own; [`close`](WebSocket::close) starts one.
/// After a protocol error the adapter sends the matching close code and the
/// connection is closed. The transport itself is left to the caller (see
/// [`WebSocket::into_inner`]).
///
/// On embassy, `T` is a connected `embassy_net::tcp::TcpSocket` (or `&mut`
/// one: `embedded-io-async` implements the traits for `&mut T`), whose own
/// rx/tx buffers are separate from the two given here.
///
/// # Cancellation
///
/// Reading and writing are separate steps so a caller can wait for a message
/// and a timer at once without ever cutting a frame short:
///
/// - [`read_message`](Self::read_message) only reads (it is cancel-safe when
///   the transport's `read` is, as embassy-net's and tokio's are). It returns
///   pings unanswered and records the close frame it owes (the echo of the
///   peer's close, or the code of a protocol error) for
///   [`flush`](Self::flush).
/// - [`send`](Self::send), [`flush`](Self::flush), [`receive`](Self::receive)
///   and [`close`](Self::close) write, and are **not** cancel-safe: a write
///   cancelled mid-frame leaves a partial frame on the stream. The adapter
///   notices and refuses every later call with [`Error::WriteCancelled`], so
///   no bytes ever follow a partial frame; drop the connection. Bound a
///   write with a timeout only when a timeout means dropping the link.
#[derive(Debug)]
pub struct WebSocket<'b, T, R> {
    transport: T,
    rng: R,
    rx: &'b mut [u8],
    tx: &'b mut [u8],
    /// The protocol: frames in and out, the close handshake, the close
    /// frame owed to the peer.
    context: Context,
    /// Set while frames are written; still set afterwards only if that
    /// write was cancelled, leaving a partial frame on the stream.
    writing: bool,
}

impl<'b, T: Read + Write, R: RngCore> WebSocket<'b, T, R> {
    /// Wraps a transport on which the handshake is already done. `rx` must
    /// be empty of frames (use [`connect`](Self::connect) or
    /// [`accept`](Self::accept) to keep bytes that followed the handshake).
    pub fn new(transport: T, rx: &'b mut [u8], tx: &'b mut [u8], rng: R, config: Config) -> Self {
        Self::with_buffered(transport, rx, tx, rng, config, 0)
    }

    fn with_buffered(
        transport: T,
        rx: &'b mut [u8],
        tx: &'b mut [u8],
        rng: R,
        config: Config,
        buffered: usize,
    ) -> Self {
        Self {
            transport,
            rng,
            rx,
            tx,
            context: Context::with_buffered(config, buffered),
            writing: false,
        }
    }

    /// Runs the client handshake over `transport` (already connected, e.g. a
    /// TCP or TLS stream) and returns the connection and the subprotocol the
    /// server chose. `config`'s role is set to client.
    pub async fn connect<'r>(
        mut transport: T,
        rx: &'b mut [u8],
        tx: &'b mut [u8],
        mut rng: R,
        config: Config,
        request: ClientRequest<'r>,
    ) -> Result<(Self, Option<&'r str>), Error> {
        let handshake = ClientHandshake::new(request, &mut rng);
        // The request goes out from `rx`, which is free until the answer
        // arrives: the transmit buffer may be smaller than an HTTP head.
        let len = handshake.encode(rx)?;
        write_all(&mut transport, rx.get(..len).unwrap_or_default()).await?;
        transport.flush().await.map_err(io)?;
        let mut filled = 0;
        loop {
            let space = rx.get_mut(filled..).unwrap_or_default();
            filled = filled.saturating_add(read_some(&mut transport, space).await?);
            let head = rx.get(..filled).unwrap_or_default();
            if let Status::Complete(response) = handshake.parse_response(head)? {
                debug!("ws: connected");
                rx.copy_within(response.header_len..filled, 0);
                let buffered = filled.saturating_sub(response.header_len);
                let config = config.with_role(Role::Client);
                let socket = Self::with_buffered(transport, rx, tx, rng, config, buffered);
                return Ok((socket, response.subprotocol));
            }
        }
    }

    /// Runs the server handshake over `transport`: reads the client's
    /// request, picks the first subprotocol it offers that is in
    /// `subprotocols`, and answers `101`. `config`'s role is set to server.
    pub async fn accept<'p>(
        mut transport: T,
        rx: &'b mut [u8],
        tx: &'b mut [u8],
        rng: R,
        config: Config,
        subprotocols: &'p [&'p str],
    ) -> Result<(Self, Option<&'p str>), Error> {
        let mut filled = 0;
        loop {
            let space = rx.get_mut(filled..).unwrap_or_default();
            filled = filled.saturating_add(read_some(&mut transport, space).await?);
            let head = rx.get(..filled).unwrap_or_default();
            if let Status::Complete(request) = Request::parse(head)? {
                let chosen = request
                    .subprotocols()
                    .find_map(|offered| subprotocols.iter().find(|s| **s == offered).copied());
                let header_len = request.header_len;
                let len = request.encode_response(chosen, tx)?;
                write_all(&mut transport, tx.get(..len).unwrap_or_default()).await?;
                transport.flush().await.map_err(io)?;
                rx.copy_within(header_len..filled, 0);
                let buffered = filled.saturating_sub(header_len);
                let config = config.with_role(Role::Server);
                let socket = Self::with_buffered(transport, rx, tx, rng, config, buffered);
                return Ok((socket, chosen));
            }
        }
    }

    /// Sends one message (fragmenting data messages as configured) and
    /// flushes the transport. Sending [`Message::Close`] starts the close
    /// handshake; prefer [`close`](Self::close), which also waits for the
    /// peer's answer.
    ///
    /// This function is **not** cancel-safe: cancelled mid-frame, it leaves
    /// a partial frame on the stream and the connection is unusable (every
    /// later call returns [`Error::WriteCancelled`]).
    pub async fn send(&mut self, message: Message<'_>) -> Result<(), Error> {
        self.check_writable()?;
        if !self.context.is_open() {
            return Err(Error::Closed);
        }
        let mut close = [0u8; MAX_CONTROL_PAYLOAD];
        let (opcode, payload) = match message {
            Message::Text(text) => (OpCode::Text, text.as_bytes()),
            Message::Binary(data) => (OpCode::Binary, data),
            Message::Ping(data) => (OpCode::Ping, data),
            Message::Pong(data) => (OpCode::Pong, data),
            Message::Close(frame) => {
                let len = match frame {
                    Some(frame) => frame.encode(&mut close)?,
                    None => 0,
                };
                (OpCode::Close, close.get(..len).unwrap_or_default())
            }
        };
        self.write_message(opcode, payload).await
    }

    /// Sends a text message.
    pub async fn send_text(&mut self, text: &str) -> Result<(), Error> {
        self.send(Message::Text(text)).await
    }

    /// Sends a binary message.
    pub async fn send_binary(&mut self, data: &[u8]) -> Result<(), Error> {
        self.send(Message::Binary(data)).await
    }

    /// Waits for the next message. Pings are answered with pongs before they
    /// are returned; a close from the peer is answered (echoing its code)
    /// and returned, after which the connection is closed and further calls
    /// return [`Error::Closed`]. The message borrows the receive buffer.
    ///
    /// This function is **not** cancel-safe: it may be writing a pong or a
    /// close frame when cancelled (see the [type docs](Self#cancellation)).
    /// To wait for a message and something else at once, use
    /// [`read_message`](Self::read_message).
    pub async fn receive(&mut self) -> Result<Message<'_>, Error> {
        let opcode = match self.read_opcode().await {
            Ok(opcode) => opcode,
            Err(e) => {
                if let Error::Protocol(_) = e {
                    // Best effort: the peer may already be gone.
                    let _ = self.flush().await;
                }
                return Err(e);
            }
        };
        // Answer pings, and a close we did not start, with one frame; both
        // go through the guarded write path.
        match opcode {
            OpCode::Ping if self.context.is_open() => {
                // Copied out of `rx` so the write can borrow the connection;
                // a ping payload is at most 125 bytes (checked by `poll`).
                let mut pong = [0u8; MAX_CONTROL_PAYLOAD];
                let len = match self.context.message(self.rx) {
                    Ok(Message::Ping(payload)) => {
                        let len = payload.len().min(MAX_CONTROL_PAYLOAD);
                        if let (Some(to), Some(from)) = (pong.get_mut(..len), payload.get(..len)) {
                            to.copy_from_slice(from);
                        }
                        len
                    }
                    _ => 0,
                };
                trace!("ws: ping, answering");
                let payload = pong.get(..len).unwrap_or_default();
                self.write_message(OpCode::Pong, payload).await?;
            }
            OpCode::Close => {
                debug!("ws: peer closed, answering");
                // Best effort: the peer may already be gone.
                let _ = self.flush().await;
            }
            _ => {}
        }
        self.current_message()
    }

    /// Waits for the next message without writing anything.
    ///
    /// This function is cancel-safe if the transport's `read` is: cancelled,
    /// it loses no bytes and the next call carries on. Pings are returned
    /// unanswered: answer them with [`send`](Self::send)`(Message::Pong(..))`.
    /// A close from the peer is returned and closes the connection; the echo
    /// it is owed, like the close frame a protocol error is owed, waits for
    /// [`flush`](Self::flush).
    pub async fn read_message(&mut self) -> Result<Message<'_>, Error> {
        self.read_opcode().await?;
        self.current_message()
    }

    /// Sends the close frame [`read_message`](Self::read_message) left owing
    /// (the echo of the peer's close, or the close code of a protocol error)
    /// and flushes the transport. Does nothing if none is owed.
    ///
    /// This function is **not** cancel-safe (see the
    /// [type docs](Self#cancellation)).
    pub async fn flush(&mut self) -> Result<(), Error> {
        self.check_writable()?;
        let key = self.key();
        let Some(len) = self.context.encode_owed_close(key, self.tx) else {
            return Ok(());
        };
        self.writing = true;
        let written = write_all(&mut self.transport, self.tx.get(..len).unwrap_or_default()).await;
        self.finish_write(written)?;
        self.transport.flush().await.map_err(io)
    }

    /// The single write path: sends one message under the writing guard
    /// and flushes the transport. Control frames are never fragmented;
    /// data frames are cut to the configured size and to what the transmit
    /// buffer holds (by the context). Sending a close on an open connection
    /// starts the close handshake.
    async fn write_message(&mut self, opcode: OpCode, payload: &[u8]) -> Result<(), Error> {
        self.check_writable()?;
        self.writing = true;
        let mut offset = 0;
        let sent = loop {
            let key = self.key();
            let len = match self
                .context
                .encode(opcode, payload, &mut offset, key, self.tx)
            {
                Ok(len) => len,
                Err(e) => {
                    // Frames already written make even an encoding error
                    // fatal.
                    if offset > 0 {
                        self.context.abort();
                    }
                    break Err(e);
                }
            };
            let frame = self.tx.get(..len).unwrap_or_default();
            if let Err(e) = write_all(&mut self.transport, frame).await {
                break Err(e);
            }
            if offset >= payload.len() {
                break Ok(());
            }
        };
        self.finish_write(sent)?;
        self.transport.flush().await.map_err(io)
    }

    /// A fresh masking key for a client's frame (servers send unmasked).
    fn key(&mut self) -> [u8; 4] {
        match self.context.config().role() {
            Role::Client => self.rng.next_u32().to_ne_bytes(),
            Role::Server => [0; 4],
        }
    }

    /// Reads until a message is complete; the context records the close
    /// it owes. Cancel-safe: the only await is the transport read in
    /// `fill`.
    async fn read_opcode(&mut self) -> Result<OpCode, Error> {
        loop {
            self.check_writable()?;
            match self.context.poll(self.rx)? {
                Status::Complete(opcode) => return Ok(opcode),
                Status::Partial => self.fill().await?,
            }
        }
    }

    /// The message of the last complete `poll`.
    fn current_message(&self) -> Result<Message<'_>, Error> {
        // Validated by `poll`, so `message` always has it.
        self.context.message(self.rx)
    }

    /// Ends a write that ran to completion (successfully or not). A
    /// transport error may have left part of a frame behind, so it closes
    /// the connection; an encoding error happens before any byte is written.
    fn finish_write(&mut self, result: Result<(), Error>) -> Result<(), Error> {
        self.writing = false;
        if let Err(e) = result
            && !matches!(e, Error::Encode(_))
        {
            self.context.abort();
        }
        result
    }

    /// Refuses to write after a write was cancelled mid-frame.
    fn check_writable(&mut self) -> Result<(), Error> {
        if self.writing {
            self.context.abort();
            return Err(Error::WriteCancelled);
        }
        Ok(())
    }

    /// Starts the close handshake with `code` and `reason` (at most 123
    /// bytes) and waits for the peer's close frame, discarding data messages
    /// that arrive meanwhile.
    ///
    /// This function is **not** cancel-safe (see the
    /// [type docs](Self#cancellation)).
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        self.send(Message::Close(Some(CloseFrame { code, reason })))
            .await?;
        loop {
            if let Message::Close(_) = self.receive().await? {
                return Ok(());
            }
        }
    }

    /// Whether the close handshake has finished (or the connection failed,
    /// or a write was cancelled mid-frame).
    pub fn is_closed(&self) -> bool {
        self.context.is_closed() || self.writing
    }

    /// The transport, e.g. to shut down the TCP connection after the close
    /// handshake.
    pub fn into_inner(self) -> T {
        self.transport
    }

    /// Reads more bytes into the receive buffer. Cancel-safe if the
    /// transport's `read` is: the context learns of the bytes only after
    /// the read returned.
    async fn fill(&mut self) -> Result<(), Error> {
        let space = self.context.space(self.rx)?;
        match read_some(&mut self.transport, space).await {
            Ok(n) => {
                self.context.filled(n);
                Ok(())
            }
            Err(e) => {
                self.context.abort();
                Err(e)
            }
        }
    }
}

/// `write_all` without the panic on a zero-length write.
async fn write_all<T: Write>(transport: &mut T, mut bytes: &[u8]) -> Result<(), Error> {
    while !bytes.is_empty() {
        let n = transport.write(bytes).await.map_err(io)?;
        if n == 0 {
            return Err(Error::Io(embedded_io::ErrorKind::WriteZero));
        }
        bytes = bytes.get(n..).unwrap_or_default();
    }
    Ok(())
}

/// One read into `space`; an empty `space` means the handshake head did not
/// fit, end of stream means the peer went away.
async fn read_some<T: Read>(transport: &mut T, space: &mut [u8]) -> Result<usize, Error> {
    if space.is_empty() {
        return Err(Error::Handshake(HandshakeError::HeaderTooLong));
    }
    match transport.read(space).await.map_err(io)? {
        0 => Err(Error::TransportClosed),
        n => Ok(n),
    }
}

fn io<E: embedded_io::Error>(error: E) -> Error {
    Error::Io(error.kind())
}
