//! `GET /v1/device`: the device WebSocket.
//!
//! Authentication: `Authorization: Bearer td_…` on the upgrade request
//! (checked before upgrading: a missing or wrong token is a 401 JSON error,
//! logged and counted in `tether_auth_failures_total{kind="device"}`). Tokens
//! are not accepted in the query string, where proxies and logs would keep
//! them; every device WebSocket client can set a header.
//!
//! Session: the first message must be `Hello` (binary postcard frame or
//! JSON text frame; the session keeps that encoding both ways, and a frame
//! of the other kind is closed with 1003) with the device id the token
//! belongs to. `Welcome` tells the contiguous stored watermark of
//! `(device, boot_id)`: every record the device sent in that boot up to it
//! is stored. Each `Publish` is checked (payload rule, time range),
//! rate-limited, queued to the store's writer (waiting when it is full:
//! backpressure), and acknowledged with a cumulative `Ack` only once it and
//! every record the device sent before it committed; duplicates (records
//! stored before) are acknowledged without being stored again. A command
//! longer than the device's `Hello.max_downlink_len` is refused to its
//! sender, never sent. WebSocket protocol violations are answered with
//! their RFC 6455 close code (see `websocket::classify`).
//!
//! A failed write ends the acknowledgements: the session acknowledges
//! nothing past the record that failed (appends pipelined behind it may
//! still commit, unacknowledged), and closes with `write_failed` (4015) so
//! the device says `Hello` again and resends from `last_stored_seq`.
//!
//! Limits: the token is checked before the connection counts against
//! `max_connections` / `max_connections_per_tenant` (so nobody without a
//! token can take a device's place); the publish token bucket belongs to the
//! device, not the connection (reconnecting does not refill it); every
//! frame written must be taken by the device within `write_timeout`, else
//! the connection closes with 4016 (`slow_consumer`); a newer session of
//! the device fences this one at once, even while it is stuck writing.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::stream::StreamExt;
use futures_util::{FutureExt, SinkExt};
use std::collections::HashMap;
use tether_proto::{Ack, Command, DeviceToServer, ErrorCode, Payload, ServerToDevice, Welcome};
use tokio::sync::oneshot;

use crate::admission::ConnectionSlot;
use crate::device_readings::{Described, Refused};
use crate::http_util::{error_response, too_many_connections};
use crate::limits::RateLimiter;
use crate::metrics::ConnectionGuard;
use crate::serve::TcpHeld;
use crate::sessions::{CommandQueue, CommandReply, CommandRequest, Fence};
use crate::store::{AppendOutcome, AppendRequest, Commits, DeviceIdentity, Revocation, StoreError};
use crate::websocket::{
    CLOSE_LINGER, CLOSE_POLICY, CLOSE_UNSUPPORTED_DATA, ReadFailure, SendError, classify, close,
    close_error, decode_reason, error_close_code, is_invalid_close, record_invalid_close,
    record_violation, send_within,
};
use crate::{AppState, auth, now_ms};

/// The largest `Publish.time_ms`: 2^63 − 1, what the store keeps.
const MAX_TIME_MS: u64 = i64::MAX as u64;

pub(crate) async fn upgrade(
    State(state): State<Arc<AppState>>,
    Extension(tcp): Extension<TcpHeld>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let identity = match auth::bearer(&headers) {
        None => None,
        Some(token) => match state.store.authenticate_device(token).await {
            Ok(identity) => identity,
            Err(error) => {
                tracing::error!(%error, "device authentication failed");
                return error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "authentication is unavailable",
                );
            }
        },
    };
    let Some(identity) = identity else {
        state.metrics.auth_failure("device");
        tracing::warn!("device refused: missing or wrong token");
        return error_response(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong device token (Authorization: Bearer td_...)",
        );
    };
    // Only now, authenticated, does the connection count.
    let slot = match state.admission.connection(identity.tenant_id) {
        Ok(slot) => slot,
        Err(refusal) => {
            state.metrics.rejected(refusal.metric());
            return too_many_connections();
        }
    };
    crate::limits::bounded_upgrade(upgrade, state.config.limits.max_message_bytes)
        .on_upgrade(move |socket| async move {
            let held = Held {
                _slot: slot,
                _tcp: tcp,
                _open: state.metrics.connection("device"),
            };
            // The serving phase is a task of its own: axum's upgrade task,
            // whose future is sized for the handshake and the opening
            // phase, ends here instead of living as long as the device.
            if let Some((session, commands)) = start(state, identity, peer, socket, held).await {
                tokio::spawn(session.run(commands));
            }
        })
        .into_response()
}

/// What an open device connection holds: its place under the connection
/// limits, its TCP connection's place and the open-connections gauge.
struct Held {
    _slot: ConnectionSlot,
    _tcp: TcpHeld,
    _open: ConnectionGuard,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Binary,
    Json,
}

fn encode(message: &ServerToDevice<'_>, encoding: Encoding) -> Option<Message> {
    match encoding {
        Encoding::Binary => message
            .encode_to_vec()
            .ok()
            .map(|bytes| Message::Binary(bytes.into())),
        Encoding::Json => message
            .to_json()
            .ok()
            .map(|text| Message::Text(text.into())),
    }
}

/// The commits of a session's appends, oldest first. The store's writer
/// answers them in the order they were enqueued, so only the oldest is
/// polled: no `FuturesOrdered` (an allocation per connection for its
/// queue, and one per append for its task).
#[derive(Default)]
struct PendingCommits {
    queue: std::collections::VecDeque<(Vec<u32>, Commits)>,
}

/// Each record's `seq` and what its commit answered, in the order the
/// device sent them.
type Settled =
    core::iter::Zip<std::vec::IntoIter<u32>, std::vec::IntoIter<Result<AppendOutcome, StoreError>>>;

impl PendingCommits {
    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    fn push(&mut self, seqs: Vec<u32>, commits: Commits) {
        self.queue.push_back((seqs, commits));
    }

    /// The oldest append's results once they are decided; `None` when
    /// nothing is pending.
    fn next(&mut self) -> impl Future<Output = Option<Settled>> + '_ {
        core::future::poll_fn(|cx| {
            let Some((_, commits)) = self.queue.front_mut() else {
                return Poll::Ready(None);
            };
            let results = core::task::ready!(commits.as_mut().poll(cx));
            let seqs = self
                .queue
                .pop_front()
                .map(|(seqs, _)| seqs)
                .unwrap_or_default();
            Poll::Ready(Some(seqs.into_iter().zip(results)))
        })
    }
}

/// Frames read beyond the one that woke the session, at most, whose
/// publishes go to the store as one request (already in the socket's
/// buffer: a device's pipelined window).
const MAX_BURST: usize = 64;

/// Answers a failed read: a violation gets its close code, a log line and
/// a count; a connection that is gone gets nothing.
async fn answer_read_error(
    state: &AppState,
    peer: SocketAddr,
    socket: &mut WebSocket,
    error: &axum::Error,
) {
    match classify(error) {
        ReadFailure::Violation {
            code,
            reason,
            metric,
        } => {
            record_violation(&state.metrics, "device", peer, code, reason, metric);
            close(socket, code, reason).await;
        }
        ReadFailure::Gone => tracing::debug!(%peer, %error, "device socket error"),
    }
}

/// The peer closed: send the answer tungstenite queued (the echo, or 1002
/// for a close code that may not be sent, which is also counted).
async fn answer_close(
    state: &AppState,
    peer: SocketAddr,
    socket: &mut WebSocket,
    frame: Option<&CloseFrame>,
) {
    if is_invalid_close(frame) {
        record_invalid_close(&state.metrics, "device", peer);
    }
    let _ = tokio::time::timeout(CLOSE_LINGER, socket.flush()).await;
}

/// The opening phase: `Hello` within the handshake timeout, the store's
/// session, the device registered; `None` when the connection ended.
async fn start(
    state: Arc<AppState>,
    identity: DeviceIdentity,
    peer: SocketAddr,
    mut socket: WebSocket,
    held: Held,
) -> Option<(Session, CommandQueue)> {
    let limits = state.config.limits.clone();
    // 1. Hello, within the handshake timeout.
    // Control frames (a client's ping) may come before Hello.
    let deadline = tokio::time::Instant::now() + limits.handshake_timeout;
    let first = loop {
        match tokio::time::timeout_at(deadline, socket.recv()).await {
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            other => break other,
        }
    };
    let (encoding, firmware_version, boot_id, max_downlink) = match first {
        Err(_) => {
            state.metrics.rejected("handshake_timeout");
            close(
                &mut socket,
                CLOSE_POLICY,
                "no Hello within the handshake timeout",
            )
            .await;
            return None;
        }
        Ok(None) => return None,
        Ok(Some(Err(error))) => {
            answer_read_error(&state, peer, &mut socket, &error).await;
            return None;
        }
        Ok(Some(Ok(Message::Close(frame)))) => {
            answer_close(&state, peer, &mut socket, frame.as_ref()).await;
            return None;
        }
        Ok(Some(Ok(message))) => {
            let decoded = match &message {
                Message::Binary(bytes) => Some((Encoding::Binary, DeviceToServer::decode(bytes))),
                Message::Text(text) => Some((Encoding::Json, DeviceToServer::from_json(text))),
                _ => None,
            };
            match decoded {
                Some((encoding, Ok(DeviceToServer::Hello(hello)))) => {
                    if hello.device_id != identity.device_id {
                        state.metrics.rejected("wrong_device_id");
                        close_error(
                            &mut socket,
                            ErrorCode::FORBIDDEN,
                            "Hello.device_id is not the token's device",
                        )
                        .await;
                        return None;
                    }
                    (
                        encoding,
                        hello.firmware_version.to_owned(),
                        hello.boot_id,
                        hello.downlink_limit(),
                    )
                }
                Some((_, Ok(_))) | None => {
                    state.metrics.rejected("unexpected_message");
                    close_error(&mut socket, ErrorCode::UNEXPECTED_MESSAGE, "expected Hello").await;
                    return None;
                }
                Some((_, Err(error))) => {
                    state.metrics.rejected("malformed");
                    close_error(&mut socket, error.error_code(), decode_reason(error)).await;
                    return None;
                }
            }
        }
    };
    let device_id = identity.device_id.clone();
    let session_id = state.next_session_id();
    // Register before marking online: an older session of this device that
    // ends now then sees it was replaced and does not mark it offline.
    let (commands, fence) = state.devices.register(&device_id, session_id);
    let opened = match state
        .store
        .open_session(&device_id, &firmware_version, boot_id, now_ms())
        .await
    {
        Ok(opened) => opened,
        Err(error) => {
            tracing::error!(%error, device = %device_id, "cannot open session");
            state.devices.unregister(&device_id, session_id);
            close_error(&mut socket, ErrorCode::INTERNAL, "store unavailable").await;
            return None;
        }
    };
    state.devices.opened(&device_id, session_id, opened.fence);
    state
        .broker
        .session_opened(identity.tenant_id, &device_id, opened.fence);
    let last_stored_seq = opened.last_stored_seq;
    tracing::info!(device = %device_id, session_id, boot_id, last_stored_seq, fence = opened.fence, "device online");
    let session = Session {
        state: Arc::clone(&state),
        identity,
        peer,
        max_downlink,
        encoding,
        boot_id,
        store_fence: opened.fence,
        socket,
        fence,
        closing: false,
        rate: state.publish_buckets.bucket(&device_id, Instant::now()),
        pending: PendingCommits::default(),
        outstanding: 0,
        queued: Vec::new(),
        commands: HashMap::new(),
        next_command_id: 1,
        acked: 0,
        previous_seq: last_stored_seq,
        write_failed: false,
        described: Described::default(),
        replaced: false,
        session_id,
        _held: held,
    };
    Some((session, commands))
}

impl Session {
    /// The serving phase: `Welcome`, the session until it ends, the close,
    /// and the device marked offline. The connection's task for as long as
    /// the device stays: an `async` block that owns the session, not an
    /// `async fn`, whose future would hold a second copy of its arguments.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn's future would hold a second copy of the session"
    )]
    fn run(mut self, mut commands: CommandQueue) -> impl Future<Output = ()> + Send + 'static {
        async move { self.serve_until_closed(&mut commands).await }
    }

    async fn serve_until_closed(&mut self, commands: &mut CommandQueue) {
        // The opening and closing steps are boxed: their futures are
        // larger than the serving loop's, which is what an idle
        // connection holds.
        let end = match Box::pin(self.welcome()).await {
            Ok(()) => self.serve(commands).await,
            Err(end) => end,
        };
        Box::pin(self.end(end)).await;
        Box::pin(self.offline()).await;
    }

    async fn welcome(&mut self) -> Result<(), End> {
        let welcome = ServerToDevice::Welcome(Welcome {
            session_id: self.session_id,
            server_time_ms: now_ms(),
            last_stored_seq: self.previous_seq,
            max_in_flight: self.state.config.limits.max_in_flight,
        });
        self.send(&welcome).await
    }

    /// The device is offline, unless a newer session of it registered.
    async fn offline(&mut self) {
        let state = Arc::clone(&self.state);
        let device_id = &self.identity.device_id;
        let (session_id, store_fence) = (self.session_id, self.store_fence);
        state.broker.session_closed(device_id, store_fence);
        if state.devices.unregister(device_id, session_id)
            && let Err(error) = state
                .store
                .close_session(device_id, store_fence, now_ms())
                .await
        {
            tracing::warn!(%error, device = %device_id, "cannot record offline");
        }
        tracing::info!(device = %device_id, session_id, "device offline");
    }

    /// Closes the connection the way `end` says.
    async fn end(&mut self, end: End) {
        let session = self;
        match end {
            End::Close(code, reason) => {
                // Acknowledge what is already queued before closing, so the
                // device need not re-send it.
                session.closing = true;
                session.flush_acks().await;
                close(&mut session.socket, code, reason).await;
            }
            End::Stop(code, reason) => {
                session.closing = true;
                session.flush_acks().await;
                close(&mut session.socket, code, &reason).await;
            }
            End::Stuck => {
                session.state.metrics.rejected("slow_consumer");
                tracing::warn!(device = %session.identity.device_id, session_id = session.session_id,
                "device does not read; closing");
                close_error(
                    &mut session.socket,
                    ErrorCode::SLOW_CONSUMER,
                    "not reading within the write timeout",
                )
                .await;
            }
            End::Gone => {}
        }
    }
}

enum End {
    /// The peer closed or the socket failed.
    Gone,
    /// The peer did not take a frame within the write timeout.
    Stuck,
    /// Close with this code and reason.
    Close(u16, &'static str),
    /// The server stops: close with this code and reason (1001, or 4017
    /// and a reconnect hint when draining).
    Stop(u16, String),
}

fn error_end(code: ErrorCode, reason: &'static str) -> End {
    End::Close(error_close_code(code), reason)
}

fn fenced_end(code: ErrorCode) -> End {
    error_end(code, "another session of this device started")
}

struct Session {
    state: Arc<AppState>,
    identity: DeviceIdentity,
    peer: SocketAddr,
    /// `Hello.max_downlink_len` (or its default): no longer command is sent.
    max_downlink: u32,
    encoding: Encoding,
    boot_id: u64,
    /// The session's fencing token in the store (`OpenedSession::fence`).
    store_fence: u64,
    socket: WebSocket,
    /// Resolves when a newer session of the device starts.
    fence: Fence,
    /// Closing: sends no longer watch the fence and get only
    /// [`CLOSE_LINGER`].
    closing: bool,
    /// The device's publish bucket (shared with its later sessions).
    rate: Arc<Mutex<RateLimiter>>,
    pending: PendingCommits,
    /// Records in `pending` (reading stops at a limit).
    outstanding: usize,
    /// Publishes checked but not yet handed to the store (appended together
    /// at the end of a burst of frames).
    queued: Vec<AppendRequest>,
    commands: HashMap<u32, oneshot::Sender<Result<CommandReply, ErrorCode>>>,
    next_command_id: u32,
    acked: u32,
    /// The highest `seq` the device sent on this connection (or
    /// `Welcome.last_stored_seq` before it sent one): what the next record
    /// must be stored after, for the watermark to move over it.
    previous_seq: u32,
    /// A write failed: nothing more is acknowledged on this connection.
    write_failed: bool,
    /// What the device described in this session.
    described: Described,
    /// The store refused a write because a newer session of the device
    /// holds its fencing token.
    replaced: bool,
    /// This connection's session id (`Welcome.session_id`).
    session_id: u64,
    _held: Held,
}

/// Whether the device no longer belongs to this session's tenant (it was
/// claimed into another one, or revoked). A session that authenticated
/// after a claim already has the new tenant and stays.
async fn moved_away(state: &AppState, identity: &DeviceIdentity) -> bool {
    match state.store.device_tenant(&identity.device_id).await {
        Ok(Some(tenant_id)) => tenant_id != identity.tenant_id,
        Ok(None) => true,
        Err(error) => {
            tracing::warn!(%error, device = %identity.device_id, "cannot check the device's tenant; closing");
            true
        }
    }
}

impl Session {
    /// How this session ends when the server stops.
    fn stopping(&self) -> End {
        let (code, reason) = self.state.stop_close();
        End::Stop(code, reason)
    }

    /// Sends a frame within the write timeout; a newer session of the
    /// device or the server shutting down interrupts it.
    async fn send(&mut self, message: &ServerToDevice<'_>) -> Result<(), End> {
        let Some(frame) = encode(message, self.encoding) else {
            return Err(error_end(ErrorCode::INTERNAL, "cannot encode"));
        };
        self.send_frame(frame).await
    }

    async fn send_frame(&mut self, frame: Message) -> Result<(), End> {
        let result = if self.closing {
            send_within(&mut self.socket, frame, CLOSE_LINGER).await
        } else {
            let write = send_within(
                &mut self.socket,
                frame,
                self.state.config.limits.write_timeout,
            );
            let mut shutdown = self.state.shutdown.clone();
            let stopping = async move {
                let _ = shutdown.wait_for(|stopping| *stopping).await;
            };
            // The write first: when it completes at once (nearly always),
            // the fence and the shutdown are never registered with.
            tokio::select! {
                biased;
                result = write => result,
                code = self.fence.fenced() => return Err(fenced_end(code)),
                () = stopping => return Err(self.stopping()),
            }
        };
        result.map_err(|error| match error {
            SendError::TimedOut => End::Stuck,
            SendError::Gone => End::Gone,
        })
    }

    async fn serve(&mut self, commands: &mut CommandQueue) -> End {
        // Only what the loop reads of the limits: the whole `Limits` would
        // sit in every idle connection's future.
        let limits = &self.state.config.limits;
        let (ping_interval, idle_timeout) = (limits.ping_interval, limits.idle_timeout);
        // Reading stops while this many commits are outstanding.
        let read_limit = usize::from(limits.max_in_flight).saturating_mul(4).max(1);
        let mut shutdown = self.state.shutdown.clone();
        let mut revocations = self.state.revocations.subscribe();
        // A claim or revocation that committed after this session
        // authenticated but before it subscribed: no notice will come, so
        // check once now (later ones arrive as notices).
        if moved_away(&self.state, &self.identity).await {
            return error_end(
                ErrorCode::UNAUTHORIZED,
                "device token revoked or device moved",
            );
        }
        let mut ping = tokio::time::interval(ping_interval);
        ping.tick().await;
        let mut last_heard = Instant::now();
        // Made once, not in every turn of the loop: each of them registers
        // a waiter with a list (the shutdown's is shared by every
        // connection) when polled, and a new one each turn meant a lock
        // to register and one to drop it at every frame and every commit.
        let stop = shutdown.changed();
        let fence = self.fence.clone();
        let fenced = fence.fenced();
        tokio::pin!(stop, fenced);
        loop {
            let result = tokio::select! {
                _ = &mut stop => return self.stopping(),
                revocation = revocations.recv() => match revocation {
                    Ok(Revocation::Device(id)) if id == self.identity.device_id => {
                        return error_end(ErrorCode::UNAUTHORIZED, "device token revoked");
                    }
                    Ok(Revocation::Moved(id)) if id == self.identity.device_id => {
                        if moved_away(&self.state, &self.identity).await {
                            return error_end(ErrorCode::UNAUTHORIZED, "device moved to another tenant");
                        }
                        Ok(())
                    }
                    // Missed notices: check this session is still the
                    // device's tenant's (the store is the truth).
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        if moved_away(&self.state, &self.identity).await {
                            return error_end(ErrorCode::UNAUTHORIZED, "device token revoked or device moved");
                        }
                        Ok(())
                    }
                    _ => Ok(()),
                },
                code = &mut fenced => return fenced_end(code),
                // Boxed, like the ack and the ping below: these steps'
                // futures are larger than the loop's, and would otherwise
                // make every idle connection's future as large as theirs.
                Some(command) = commands.next() => Box::pin(self.command(command)).await,
                Some(results) = self.pending.next(), if !self.pending.is_empty() => {
                    Box::pin(self.acknowledge(results)).await
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() > idle_timeout {
                        self.state.metrics.rejected("idle_timeout");
                        return End::Close(CLOSE_POLICY, "idle timeout");
                    }
                    self.commands.retain(|_, reply| !reply.is_closed());
                    Box::pin(self.send_frame(Message::Ping(Default::default()))).await
                }
                message = self.socket.recv(), if self.outstanding < read_limit => {
                    last_heard = Instant::now();
                    match message {
                        None => return End::Gone,
                        Some(Err(error)) => {
                            return self.socket_error(&error);
                        }
                        // Boxed: its future would make every idle
                        // connection's larger.
                        Some(Ok(message)) => Box::pin(self.receive_burst(message, read_limit)).await,
                    }
                }
            };
            if let Err(end) = result {
                return end;
            }
        }
    }

    /// Acknowledges the commits that complete within a moment, in order,
    /// up to the first failed one.
    async fn flush_acks(&mut self) {
        if self.write_failed {
            return;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        let mut highest = None;
        'commits: while let Ok(Some(results)) =
            tokio::time::timeout_at(deadline, self.pending.next()).await
        {
            for (seq, result) in results {
                if self.commit_failed(result) {
                    break 'commits;
                }
                highest = Some(seq);
            }
        }
        if let Some(seq) = highest {
            let _ = self.send_ack(seq).await;
        }
    }

    /// Whether a commit failed (then nothing more is acknowledged).
    fn commit_failed(&mut self, result: Result<AppendOutcome, StoreError>) -> bool {
        match result {
            Ok(_) => {}
            Err(StoreError::Fenced) => {
                // A newer session of the device (on this node or another)
                // took over: the store refused this one's late write.
                self.state.metrics.rejected("session_fenced");
                tracing::info!(device = %self.identity.device_id, acked = self.acked,
                    "a newer session of the device took over; its store refused this one");
                self.replaced = true;
                self.write_failed = true;
            }
            Err(error) => {
                self.state.metrics.rejected("write_failed");
                tracing::error!(%error, device = %self.identity.device_id, acked = self.acked,
                    "store failed; acknowledging nothing past it");
                self.write_failed = true;
            }
        }
        self.write_failed
    }

    fn socket_error(&self, error: &axum::Error) -> End {
        match classify(error) {
            ReadFailure::Violation {
                code,
                reason,
                metric,
            } => {
                record_violation(
                    &self.state.metrics,
                    "device",
                    self.peer,
                    code,
                    reason,
                    metric,
                );
                End::Close(code, reason)
            }
            ReadFailure::Gone => {
                tracing::debug!(device = %self.identity.device_id, %error, "socket error");
                End::Gone
            }
        }
    }

    async fn command(&mut self, command: CommandRequest) -> Result<(), End> {
        let CommandRequest {
            channel,
            payload,
            reply,
        } = command;
        let id = self.next_command_id;
        let command = ServerToDevice::Command(Command {
            id,
            channel: &channel,
            payload: Payload::from_json_str(&payload),
        });
        let Some(frame) = encode(&command, self.encoding) else {
            // Checked by the sender's endpoint; never here.
            let _ = reply.send(Err(ErrorCode::INTERNAL));
            return Ok(());
        };
        // What the device said its receive buffer holds: a longer message
        // would fail its link (1009) at every reconnect.
        let len = match &frame {
            Message::Binary(bytes) => bytes.len(),
            Message::Text(text) => text.len(),
            _ => 0,
        };
        if u32::try_from(len).map_or(true, |len| len > self.max_downlink) {
            self.state.metrics.rejected("command_too_large");
            tracing::info!(
                device = %self.identity.device_id,
                len,
                max_downlink_len = self.max_downlink,
                "command refused: longer than the device accepts"
            );
            let _ = reply.send(Err(ErrorCode::TOO_LARGE));
            return Ok(());
        }
        self.next_command_id = self.next_command_id.wrapping_add(1).max(1);
        self.commands.insert(id, reply);
        self.send_frame(frame).await
    }

    async fn acknowledge(&mut self, results: Settled) -> Result<(), End> {
        let mut highest = None;
        let mut next = Some(results);
        // Coalesce every commit that is already done into one Ack, up to
        // the first failed one.
        'commits: while let Some(results) = next {
            self.outstanding = self.outstanding.saturating_sub(results.len());
            for (seq, result) in results {
                if self.commit_failed(result) {
                    break 'commits;
                }
                highest = Some(seq);
            }
            next = self.pending.next().now_or_never().flatten();
        }
        if let Some(seq) = highest {
            self.send_ack(seq).await?;
        }
        if self.replaced {
            return Err(fenced_end(ErrorCode::SESSION_REPLACED));
        }
        if self.write_failed {
            return Err(error_end(
                ErrorCode::WRITE_FAILED,
                "a record was not stored: resend from last_stored_seq",
            ));
        }
        Ok(())
    }

    /// Sends a cumulative ack, never lower than one already sent (a
    /// re-sent duplicate below it changes nothing).
    async fn send_ack(&mut self, seq: u32) -> Result<(), End> {
        self.acked = self.acked.max(seq);
        self.send(&ServerToDevice::Ack(Ack { seq: self.acked }))
            .await
    }

    /// A token of the device's publish rate limit (publishes and what the
    /// device says about itself share it).
    fn take_token(&self) -> Result<(), End> {
        let allowed = self
            .rate
            .lock()
            .is_ok_and(|mut bucket| bucket.try_take(Instant::now()));
        if allowed {
            return Ok(());
        }
        self.state.metrics.rejected("rate_limited");
        tracing::warn!(device = %self.identity.device_id, "publish rate limit exceeded");
        Err(error_end(
            ErrorCode::RATE_LIMITED,
            "publish rate limit exceeded",
        ))
    }

    /// A description the session refuses ends it.
    fn refused(&self, done: Result<(), Refused>) -> Result<(), End> {
        done.map_err(|refused| {
            self.state.metrics.rejected("description");
            tracing::warn!(device = %self.identity.device_id, reason = refused.reason, "description refused");
            error_end(refused.code, refused.reason)
        })
    }

    /// Handles `first` and the frames already read behind it (up to
    /// [`MAX_BURST`]), then hands their publishes to the store as one
    /// request: one writer operation and one reply for a device's
    /// pipelined window, not one each.
    async fn receive_burst(&mut self, first: Message, read_limit: usize) -> Result<(), End> {
        let mut result = self.receive(first).await;
        let mut read = 0;
        while result.is_ok()
            && read < MAX_BURST
            && self.outstanding.saturating_add(self.queued.len()) < read_limit
        {
            let Some(message) = self.socket.recv().now_or_never() else {
                break;
            };
            read += 1;
            result = match message {
                None => Err(End::Gone),
                Some(Err(error)) => Err(self.socket_error(&error)),
                Some(Ok(message)) => self.receive(message).await,
            };
        }
        // Even when the burst ended the session: what it checked before
        // is appended, and acknowledged while closing.
        let appended = self.append_queued().await;
        result.and(appended)
    }

    /// Hands the queued publishes to the store, in order, as one request.
    async fn append_queued(&mut self) -> Result<(), End> {
        if self.queued.is_empty() {
            return Ok(());
        }
        let requests = core::mem::take(&mut self.queued);
        let seqs: Vec<u32> = requests.iter().map(|request| request.seq).collect();
        self.outstanding = self.outstanding.saturating_add(seqs.len());
        // Waits while the writer's queue is full: the device's acks slow
        // down, nothing is dropped.
        match self.state.store.append_all(requests).await {
            Ok(commits) => {
                self.pending.push(seqs, commits);
                Ok(())
            }
            Err(error) => {
                tracing::error!(%error, "store unavailable");
                Err(error_end(ErrorCode::INTERNAL, "store unavailable"))
            }
        }
    }

    async fn receive(&mut self, message: Message) -> Result<(), End> {
        let decoded = match (&message, self.encoding) {
            (Message::Binary(bytes), Encoding::Binary) => DeviceToServer::decode(bytes),
            (Message::Text(text), Encoding::Json) => DeviceToServer::from_json(text),
            (Message::Binary(_) | Message::Text(_), encoding) => {
                self.state.metrics.rejected("mixed_encoding");
                return Err(End::Close(
                    CLOSE_UNSUPPORTED_DATA,
                    match encoding {
                        Encoding::Binary => "this session is binary (its Hello was)",
                        Encoding::Json => "this session is JSON text (its Hello was)",
                    },
                ));
            }
            (Message::Close(frame), _) => {
                answer_close(&self.state, self.peer, &mut self.socket, frame.as_ref()).await;
                return Err(End::Gone);
            }
            (Message::Ping(_) | Message::Pong(_), _) => return Ok(()),
        };
        let message = match decoded {
            Ok(message) => message,
            Err(error) => {
                self.state.metrics.rejected("malformed");
                tracing::warn!(device = %self.identity.device_id, %error, "undecodable message");
                return Err(error_end(error.error_code(), decode_reason(error)));
            }
        };
        match message {
            DeviceToServer::Hello(_) => {
                self.state.metrics.rejected("unexpected_message");
                Err(error_end(ErrorCode::UNEXPECTED_MESSAGE, "second Hello"))
            }
            DeviceToServer::CommandAck(ack) => {
                let reply = self.commands.remove(&ack.id);
                let result = match (ack.result.check(), ack.result.as_str()) {
                    (Ok(()), Some(result)) => result.to_owned(),
                    (Err(error), _) => {
                        // The sender hears why; the device is closed like
                        // for a bad publish.
                        if let Some(reply) = reply {
                            let _ = reply.send(Err(ErrorCode::INVALID_FIELD));
                        }
                        self.state.metrics.rejected("payload_not_json");
                        tracing::info!(device = %self.identity.device_id, %error, "command result refused");
                        return Err(error_end(ErrorCode::INVALID_FIELD, error.reason()));
                    }
                    (Ok(()), None) => "null".to_owned(),
                };
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(CommandReply {
                        status: ack.status,
                        result,
                    }));
                }
                Ok(())
            }
            DeviceToServer::DescribeChannel(describe) => {
                self.take_token()?;
                self.append_queued().await?;
                let done = self
                    .described
                    .channel(&self.state, &self.identity, &describe)
                    .await;
                self.refused(done)
            }
            DeviceToServer::DescribeCommand(describe) => {
                self.take_token()?;
                self.append_queued().await?;
                let done = self
                    .described
                    .command(&self.state, &self.identity, &describe)
                    .await;
                self.refused(done)
            }
            DeviceToServer::Status(status) => {
                self.take_token()?;
                self.append_queued().await?;
                Described::status(&self.state, &self.identity, &status).await;
                Ok(())
            }
            DeviceToServer::Publish(publish) => {
                self.take_token()?;
                let payload = match (publish.payload.check(), publish.payload.as_str()) {
                    (Ok(()), Some(text)) => text.to_owned(),
                    (Err(error), _) => {
                        self.state.metrics.rejected("payload_not_json");
                        tracing::info!(device = %self.identity.device_id, %error, "publish refused");
                        return Err(error_end(ErrorCode::INVALID_FIELD, error.reason()));
                    }
                    (Ok(()), None) => {
                        return Err(error_end(ErrorCode::INVALID_FIELD, "payload is not UTF-8"));
                    }
                };
                if publish.time_ms.is_some_and(|time| time > MAX_TIME_MS) {
                    self.state.metrics.rejected("time_out_of_range");
                    tracing::info!(device = %self.identity.device_id, time_ms = ?publish.time_ms, "publish refused");
                    return Err(error_end(
                        ErrorCode::INVALID_FIELD,
                        "time_ms is out of range (at most 2^63-1)",
                    ));
                }
                let request = AppendRequest {
                    tenant_id: self.identity.tenant_id,
                    device_id: self.identity.device_id.clone(),
                    boot_id: self.boot_id,
                    seq: publish.seq,
                    previous_seq: self.previous_seq,
                    channel: publish.channel.to_owned(),
                    device_time_ms: publish.time_ms,
                    payload,
                    fence: self.store_fence,
                };
                self.previous_seq = self.previous_seq.max(publish.seq);
                // Appended with the rest of the burst (`receive_burst`).
                self.queued.push(request);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `f` returns.
    fn future_size<A, B, R>(_: impl FnOnce(A, B) -> R) -> usize {
        size_of::<R>()
    }

    /// What an idle device connection's task holds beside its socket
    /// buffers: the serving phase's future (the session and its loop).
    /// Before the opening and closing steps were boxed and the session
    /// stopped being copied into its own future it was 2,760 bytes (with
    /// axum's upgrade task of 2 KiB beside it); 1,424 bytes after, 1,704
    /// since publishes are read in bursts (`receive_burst`'s future sits
    /// in the loop's); see docs/performance.md.
    #[test]
    fn an_idle_connection_s_future_stays_small() {
        let serving = future_size(|session: Session, commands: CommandQueue| session.run(commands));
        let session = size_of::<Session>();
        assert!(
            serving <= 1536,
            "the serving phase's future grew to {serving} bytes (the session is {session})"
        );
        assert!(
            serving < 2 * session + 256,
            "{serving} bytes: a second copy of the session?"
        );
    }
}
