//! [`Runner`]: owns the connection. Connects, handshakes, says `Hello`,
//! moves messages and acknowledgements between the outbox and the server,
//! answers commands, keeps the link alive and reconnects.

use core::fmt;

use embassy_futures::select::{Either, Either3, select, select3};
use embassy_sync::blocking_mutex::raw::{NoopRawMutex, RawMutex};
use rand_core::RngCore;
use tether_proto::ServerToDevice;

use super::encode::{self, Outgoing};
use super::{Client, ClientConfig, ClientConfigError, CommandHandler, CommandResult};
use super::{DEFAULT_PAYLOAD_CAPACITY, message_buffer_len};
use crate::board::Board;
use crate::connector::{ConnectErrorKind, Connector};
use crate::outbox::Outbox;
use crate::session::{ConnectionState, LinkError, MAX_COMMAND_RESULT_LEN, Transmit};
use crate::time::{Clock, Duration, Instant};
use crate::url::ServerUrl;
use crate::ws;

/// The runner's buffers, owned by the caller (part of
/// [`Resources`](super::Resources), a `static` on a device):
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

/// Why [`Runner::run`] returned: the server or the connector refused the
/// device's settings for good ([`LinkError::is_permanent`]: a revoked or
/// wrong token, an unknown device, a server certificate that does not
/// verify). Go back to provisioning; with new settings make a new client,
/// or call [`Client::retry_now`] and run again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NeedsProvisioning(pub LinkError);

/// Owns the connection: connects, handshakes, says `Hello`, moves messages
/// and acknowledgements, keeps the link alive and reconnects. Made by
/// [`new`](super::new); run [`Runner::run`] in a task of its own (or joined
/// with the application).
pub struct Runner<
    'a,
    B: Board,
    M: RawMutex = NoopRawMutex,
    const PAYLOAD: usize = DEFAULT_PAYLOAD_CAPACITY,
> {
    client: &'a Client<B, M, PAYLOAD>,
    config: ClientConfig<'a>,
    url: ServerUrl<'a>,
    connector: B::Connector,
    rx: &'a mut [u8],
    tx: &'a mut [u8],
    message: &'a mut [u8],
}

impl<B: Board, M: RawMutex, const PAYLOAD: usize> fmt::Debug for Runner<'_, B, M, PAYLOAD> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runner")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// The next step of the transmit loop.
enum Next {
    Idle,
    Send(Option<Outgoing>),
    Publish { after: u32 },
}

impl<'a, B: Board, M: RawMutex, const PAYLOAD: usize> Runner<'a, B, M, PAYLOAD> {
    /// Checks `config` and the buffer sizes against `PAYLOAD`; returns the
    /// parsed URL.
    pub(super) fn check<'c, const RX: usize, const TX: usize, const MESSAGE: usize>(
        config: &ClientConfig<'c>,
        _buffers: &super::Buffers<RX, TX, MESSAGE>,
    ) -> Result<ServerUrl<'c>, ClientConfigError> {
        let url = config.validate()?;
        if MESSAGE < message_buffer_len(PAYLOAD) {
            return Err(ClientConfigError::MessageBufferTooSmall);
        }
        if RX < 128 || TX < 128 {
            return Err(ClientConfigError::FrameBufferTooSmall);
        }
        if let Some(announcer) = config.announcer
            && (announcer.max_len)(config) > MESSAGE
        {
            return Err(ClientConfigError::DescriptionTooLarge);
        }
        Ok(url)
    }

    /// A runner for `client`, connecting with `connector`, working in
    /// `buffers`. [`new`](super::new) makes both; use this only to place the
    /// client yourself.
    ///
    /// # Errors
    /// The configuration is invalid or the buffers are too small.
    pub fn new<const RX: usize, const TX: usize, const MESSAGE: usize>(
        client: &'a Client<B, M, PAYLOAD>,
        config: ClientConfig<'a>,
        connector: B::Connector,
        buffers: &'a mut Buffers<RX, TX, MESSAGE>,
    ) -> Result<Self, ClientConfigError> {
        let url = Self::check(&config, buffers)?;
        Ok(Self::checked(client, config, url, connector, buffers))
    }

    /// A runner for a configuration [`Self::check`] accepted (parsing
    /// `url`).
    pub(super) fn checked<const RX: usize, const TX: usize, const MESSAGE: usize>(
        client: &'a Client<B, M, PAYLOAD>,
        config: ClientConfig<'a>,
        url: ServerUrl<'a>,
        connector: B::Connector,
        buffers: &'a mut Buffers<RX, TX, MESSAGE>,
    ) -> Self {
        Self {
            client,
            config,
            url,
            connector,
            rx: &mut buffers.rx,
            tx: &mut buffers.tx,
            message: &mut buffers.message,
        }
    }

    /// Runs the connection: connect, serve, back off, reconnect, for as
    /// long as reconnecting can help. `handler` answers downlink commands.
    /// Returns only when the device needs provisioning
    /// ([`ConnectionState::NeedsProvisioning`]).
    pub async fn run<H: CommandHandler>(&mut self, mut handler: H) -> NeedsProvisioning {
        loop {
            if let ConnectionState::NeedsProvisioning(reason) = self.client.state() {
                return NeedsProvisioning(reason);
            }
            self.step(&mut handler).await;
        }
    }

    /// One turn: one connection attempt and its life, or one wait.
    async fn step<H: CommandHandler>(&mut self, handler: &mut H) {
        let client = self.client;
        let now = client.now();
        match client.state() {
            ConnectionState::Connecting => {
                client.with_session(|s| s.begin_connect(now));
                self.connect_and_serve(handler).await;
            }
            ConnectionState::BackingOff { until } => {
                if now < until {
                    // A publish wakes us too; the loop just comes back here.
                    select(client.clock.sleep_until(until), client.wake.wait()).await;
                }
                let now = client.now();
                client.with_session(|s| s.handle_timeout(now));
            }
            ConnectionState::GaveUp(_) | ConnectionState::NeedsProvisioning(_) => {
                client.wake.wait().await;
            }
            _ => {
                // A link state without a link: only after a cancelled run.
                client.with_session(|s| s.on_link_lost(now, LinkError::Io));
            }
        }
    }

    async fn connect_and_serve<H: CommandHandler>(&mut self, handler: &mut H) {
        let Self {
            client,
            config,
            url,
            connector,
            rx,
            tx,
            message,
        } = self;
        let client: &Client<B, M, PAYLOAD> = client;
        let clock = &client.clock;
        let deadline = client
            .with_session(|s| s.poll_at())
            .unwrap_or(clock.now() + config.session.connect_timeout());

        debug!(
            "client: connecting to {}:{}",
            url.endpoint.host, url.endpoint.port
        );
        let connection =
            match select(connector.connect(url.endpoint), clock.sleep_until(deadline)).await {
                Either::First(Ok(connection)) => connection,
                Either::First(Err(e)) => {
                    let error = match B::Connector::error_kind(&e) {
                        ConnectErrorKind::Certificate => LinkError::Certificate,
                        _ => LinkError::ConnectFailed,
                    };
                    client.with_session(|s| s.on_link_lost(clock.now(), error));
                    return;
                }
                Either::Second(()) => {
                    client.with_session(|s| s.handle_timeout(clock.now()));
                    return;
                }
            };

        let max_downlink = super::max_downlink_len(rx.len());
        let mut request = ws::ClientRequest::new(url.authority, url.path);
        if let Some(authorization) = config.authorization {
            request = request.with_authorization(authorization);
        }
        let handshake = ws::WebSocket::connect(
            connection,
            rx,
            tx,
            SessionRng(client),
            ws::Config::client(),
            request,
        );
        let mut websocket = match select(handshake, clock.sleep_until(deadline)).await {
            Either::First(Ok((websocket, _))) => websocket,
            Either::First(Err(e)) => {
                client.with_session(|s| s.on_link_lost(clock.now(), encode::link_error(e)));
                return;
            }
            Either::Second(()) => {
                client.with_session(|s| s.handle_timeout(clock.now()));
                return;
            }
        };
        client.with_session(|s| s.on_link_up(clock.now()));
        serve(
            client,
            config,
            max_downlink,
            handler,
            message,
            &mut websocket,
        )
        .await;
        // Close the transport gracefully (TCP FIN, TLS close_notify), within
        // the send timeout; the connector aborts what does not finish.
        let _ = select(
            B::Connector::close(websocket.into_inner()),
            clock.sleep_until(clock.now() + config.send_timeout),
        )
        .await;
    }
}

/// The life of one link after the handshake: transmit what is due, wait
/// for the server, a timer or a publish, repeat until the link is down.
async fn serve<B, M, H, T, const PAYLOAD: usize>(
    client: &Client<B, M, PAYLOAD>,
    config: &ClientConfig<'_>,
    max_downlink: u32,
    handler: &mut H,
    message: &mut [u8],
    websocket: &mut ws::WebSocket<'_, T, SessionRng<'_, B, M, PAYLOAD>>,
) where
    B: Board,
    M: RawMutex,
    H: CommandHandler,
    T: embedded_io_async::Read + embedded_io_async::Write,
{
    let clock = &client.clock;
    loop {
        // Acknowledged messages leave the outbox.
        client.release_acknowledged().await;
        // Everything that is due goes out.
        loop {
            let now = clock.now();
            let next = client.with_session(|s| match s.poll_transmit(now) {
                None => Next::Idle,
                Some(Transmit::Publish { after }) => Next::Publish { after },
                Some(transmit) => {
                    Next::Send(encode::control(transmit, config, max_downlink, message))
                }
            });
            let outgoing = match next {
                Next::Idle => break,
                Next::Send(outgoing) => outgoing,
                Next::Publish { after } => {
                    let mut outbox = client.outbox.lock().await;
                    let read = outbox.read_after(after).await;
                    let encoded = match read {
                        Ok(Some(entry)) => {
                            let seq = entry.seq;
                            let time = client.with_session(|s| {
                                s.on_sent(seq);
                                s.timestamp(entry.time)
                            });
                            let encoded = encode::publish(&entry, time, message);
                            if encoded.is_none() {
                                // Stored by a firmware with a larger payload
                                // capacity: skipped, freed by later acks.
                                warn!("client: stored message {} too large, skipped", seq);
                            }
                            encoded
                        }
                        Ok(None) => None,
                        Err(e) => {
                            warn!("client: outbox read failed: {:?}", e);
                            None
                        }
                    };
                    drop(outbox);
                    if encoded.is_none() {
                        client.with_session(|s| s.on_nothing_after(after));
                        continue;
                    }
                    encoded
                }
            };
            let sent = match outgoing {
                None => Err(LinkError::Io),
                Some(outgoing) => {
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
                        Either::First(Err(e)) => Err(encode::link_error(e)),
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
            // The session dropped the link (timeout, bad message): tell the
            // server why when there is a code for it.
            let code = client.last_error().and_then(|e| e.close_code());
            if let Some(code) = code
                && !websocket.is_closed()
            {
                let close = websocket.close(ws::CloseCode::new(code), "");
                let _ = select(close, clock.sleep_until(clock.now() + config.send_timeout)).await;
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
                    flush_owed(websocket, clock, config.send_timeout).await;
                    client.with_session(|s| s.on_link_lost(now, LinkError::EndOfStream));
                    return;
                }
            }
            Either3::First(Err(e)) => {
                client.with_session(|s| s.on_link_lost(now, encode::link_error(e)));
                // A protocol error owes the server its close code.
                flush_owed(websocket, clock, config.send_timeout).await;
                return;
            }
            Either3::Second(()) => client.with_session(|s| s.handle_timeout(now)),
            Either3::Third(()) => {}
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
fn handle_message<B, M, H, const PAYLOAD: usize>(
    client: &Client<B, M, PAYLOAD>,
    handler: &mut H,
    now: Instant,
    received: ws::Message<'_>,
) -> Option<LinkError>
where
    B: Board,
    M: RawMutex,
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
        ws::Message::Close(frame) => Some(closed(frame)),
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

/// The board's one random source, borrowed through the client for
/// WebSocket masking keys.
struct SessionRng<'c, B: Board, M: RawMutex, const PAYLOAD: usize>(&'c Client<B, M, PAYLOAD>);

impl<B: Board, M: RawMutex, const PAYLOAD: usize> RngCore for SessionRng<'_, B, M, PAYLOAD> {
    fn next_u32(&mut self) -> u32 {
        self.0.with_session(|s| s.rng_mut().next_u32())
    }

    fn next_u64(&mut self) -> u64 {
        self.0.with_session(|s| s.rng_mut().next_u64())
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        self.0.with_session(|s| s.rng_mut().fill_bytes(dst));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(code: u16, reason: &str) -> Option<ws::CloseFrame<'_>> {
        Some(ws::CloseFrame {
            code: ws::CloseCode::new(code),
            reason,
        })
    }

    #[test]
    fn a_draining_close_carries_its_reconnect_hint() {
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
