//! [`Runner`]: the thin async adapter that owns the connection. It
//! connects, then moves bytes between the transport and the sans-IO
//! [`Link`] (which does the handshake, the framing and the tether messages,
//! and drives the session), reads the outbox for it, hands commands to the
//! application's handler and sleeps until the link's `poll_at`, a server
//! message or a publish. Everything generic over the board (transport,
//! clock, outbox, handler) is here; the protocol is compiled once, in the
//! link.

use core::fmt;
use core::future::Future;
use core::pin::{Pin, pin};
use core::task::{Context, Poll};

use embassy_futures::select::{Either, Either3, select, select3};
use embassy_sync::blocking_mutex::raw::{NoopRawMutex, RawMutex};
use embedded_io_async::{Read, Write};

use super::link::{self, Link, Output};
use super::{Client, ClientConfig, ClientConfigError, CommandHandler, CommandResult};
use super::{DEFAULT_PAYLOAD_CAPACITY, message_buffer_len};
use crate::board::Board;
use crate::connector::{ConnectErrorKind, Connector};
use crate::outbox::Outbox;
use crate::session::{ConnectionState, LinkError, MAX_COMMAND_RESULT_LEN};
use crate::time::{Clock, Instant};
use crate::url::ServerUrl;

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

    /// One connection: connect, then move bytes between the transport and
    /// the [`Link`] (which does the rest), then close the transport.
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
        let connect = pin!(connector.connect(url.endpoint));
        let mut transport = match select(OutOfLine(connect), clock.sleep_until(deadline)).await {
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

        let config: &ClientConfig<'_> = config;
        let now = clock.now();
        let mut link = client.with_session(|s| Link::new(now, config, url, rx, tx, message, s));
        loop {
            // Acknowledged messages leave the outbox.
            client.release_acknowledged().await;
            let now = clock.now();
            let output = client.with_session(|s| link.poll_transmit(now, s));
            let sent = match output {
                Output::Write => {
                    let write = write_all(&mut transport, link.transmit_bytes());
                    select(write, clock.sleep_until(now + config.send_timeout)).await
                }
                Output::Publish { after } => {
                    let mut outbox = client.outbox.lock().await;
                    let entry = match outbox.read_after(after).await {
                        Ok(entry) => entry,
                        Err(e) => {
                            warn!("client: outbox read failed: {:?}", e);
                            None
                        }
                    };
                    client.with_session(|s| link.publish(s, after, entry.as_ref()));
                    continue;
                }
                Output::Done => break,
                Output::Idle => {
                    // Wait for the server, a timer, or a publish. Only the
                    // read is raced: it is cancel-safe and never writes.
                    let deadline = client
                        .with_session(|s| link.poll_at(s))
                        .unwrap_or(now + config.session.keepalive_interval());
                    let event = select3(
                        transport.read(link.receive_buffer()),
                        clock.sleep_until(deadline),
                        client.wake.wait(),
                    )
                    .await;
                    let now = clock.now();
                    let error = match event {
                        Either3::First(Ok(0)) => LinkError::EndOfStream,
                        Either3::First(Ok(n)) => {
                            link.filled(n);
                            receive(client, handler, &mut link, now);
                            continue;
                        }
                        Either3::First(Err(_)) => LinkError::Io,
                        Either3::Second(()) => {
                            client.with_session(|s| link.handle_timeout(now, s));
                            continue;
                        }
                        Either3::Third(()) => continue,
                    };
                    Either::First(Err(error))
                }
            };
            let error = match sent {
                Either::First(Ok(())) => continue,
                Either::First(Err(error)) => error,
                Either::Second(()) => LinkError::SendTimeout,
            };
            client.with_session(|s| link.transport_failed(clock.now(), s, error));
        }
        // Close the transport gracefully (TCP FIN, TLS close_notify), within
        // the send timeout; the connector aborts what does not finish.
        let close = pin!(B::Connector::close(transport));
        let _ = select(
            OutOfLine(close),
            clock.sleep_until(clock.now() + config.send_timeout),
        )
        .await;
    }
}

/// Hands what was read to the link, and each command it yields to the
/// application's handler.
#[inline(never)]
fn receive<B, M, H, const PAYLOAD: usize>(
    client: &Client<B, M, PAYLOAD>,
    handler: &mut H,
    link: &mut Link<'_>,
    now: Instant,
) where
    B: Board,
    M: RawMutex,
    H: CommandHandler,
{
    loop {
        let link = &mut *link;
        let Some(command) = client.with_session(move |s| {
            let link = link;
            link.handle_input(now, s)
        }) else {
            return;
        };
        let mut buffer = [0u8; MAX_COMMAND_RESULT_LEN];
        let mut result = CommandResult::new(&mut buffer);
        let status = handler.handle(&command, &mut result);
        let json = result.json().unwrap_or_default();
        client.with_session(|s| link::acknowledge(s, command.id, status, json));
    }
}

/// `write_all` without the panic on a zero-length write, then a flush.
async fn write_all<T: Write>(transport: &mut T, mut bytes: &[u8]) -> Result<(), LinkError> {
    while !bytes.is_empty() {
        match transport.write(bytes).await {
            Ok(n) if n > 0 => bytes = bytes.get(n..).unwrap_or_default(),
            _ => return Err(LinkError::Io),
        }
    }
    transport.flush().await.map_err(|_| LinkError::Io)
}

/// Polls a connector's future in a function of its own: connecting (DNS,
/// TCP, TLS) and closing run once per connection, and the runner's state
/// machine keeps a call instead of their code.
struct OutOfLine<'f, F>(Pin<&'f mut F>);

impl<F: Future> Future for OutOfLine<'_, F> {
    type Output = F::Output;

    #[inline(never)]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.0.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use core::future::poll_fn;

    use super::*;

    /// `OutOfLine` hands every poll to the future it holds, wakers and
    /// pending turns included, and its output back.
    #[test]
    fn out_of_line_polls_the_future_it_holds() {
        let mut polls = 0;
        let future = pin!(poll_fn(|cx| {
            polls += 1;
            if polls < 3 {
                cx.waker().wake_by_ref();
                Poll::Pending
            } else {
                Poll::Ready(7)
            }
        }));
        assert_eq!(embassy_futures::block_on(OutOfLine(future)), 7);
        assert_eq!(polls, 3);

        // Raced, as the runner races the connector against the deadline.
        let never = pin!(core::future::pending::<u8>());
        let raced = select(OutOfLine(never), core::future::ready(()));
        assert!(matches!(
            embassy_futures::block_on(raced),
            Either::Second(())
        ));
    }
}
