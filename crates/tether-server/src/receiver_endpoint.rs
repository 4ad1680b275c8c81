//! `GET /v1/receiver`: the receiver WebSocket (JSON text frames).
//!
//! Authentication, one of (browsers cannot set headers, so the first two
//! exist for them):
//! 1. subprotocols: `new WebSocket(url, ["tether.v1", "tether-key.tk_…"])`;
//!    the server answers with subprotocol `tether.v1`;
//! 2. a first text message `{"v":1,"auth":{"key":"tk_…"}}` within the
//!    handshake timeout (a wrong key gets an `error` message with code
//!    `unauthorized`, then close code 4005);
//! 3. `Authorization: Bearer tk_…` (scripts);
//! 4. a signed-in person's session cookie (the dashboard), with the page's
//!    own `Origin` and the CSRF token as subprotocol `tether-csrf.<token>`
//!    (see `accounts::session`); the member's role decides command rights.
//!
//! A wrong key in 1 or 3 is refused before the upgrade (401). A page served
//! from another origin is refused (403) unless `allowed_origins` lists it.
//!
//! Limits: a connection with a key counts against `max_connections` (and
//! `max_connections_per_tenant`) only once the key is checked; one without
//! a key (way 2) waits for its `auth` message in a separate, small budget
//! (`max_unauthenticated_connections`), so keyless upgrades can never take
//! the places of devices and authenticated receivers. If the server is at
//! its limit when the `auth` message arrives, the connection closes with
//! 1013 (try again later).
//!
//! Replies come in request order: the loop that reads requests queues each
//! answer (`pong`, refusals) behind the ones before it, and a `subscribe`'s
//! `subscribed`, which the connection's delivery task sends once it read the
//! channel's bounds, holds the answers queued after it until it is out.
//! Only a `send_command`'s answer waits for the device. Refusals carry the
//! request's `request_id` and, for `subscribe`, its `channel`.
//!
//! Subscribing (`subscribe` with `from`): the subscription joins the
//! channel's live queue **first**, then reads the channel's bounds, replays
//! stored events from `from` up to them, and then forwards live events,
//! skipping offsets already sent and filling any gap from the store. Live
//! events are published only after their commit, so every event is either
//! below the bounds read (replayed) or arrives live: no gap, no duplicate.
//! A subscriber that falls behind its bounded live queue is told
//! `Lagged` and catches up from the store the same way.
//!
//! Delivering: one task per connection, whatever the number of its
//! subscriptions, takes the live events of all of them from the
//! connection's one [`Inbox`] (woken once per commit) and puts each
//! event's one encoding (shared, never copied or checked again) into the
//! outbox. A `subscribe` with
//! `"describe":true` also gets the channel's `description` messages
//! (`device_readings::forward_descriptions`).
//!
//! Writing: one writer task per connection takes frames from a bounded
//! outbox, every frame queued at the time with one flush (one socket
//! write, not one per frame); each such batch must be taken by the peer
//! within `write_timeout`, else the connection closes with 4016
//! (`slow_consumer`). The connection's
//! own loop never waits on the outbox (its replies wait in a short queue
//! and it stops reading requests while that is full), so it always sees
//! shutdown, revocation and the writer's end; its last frames (the close
//! frame) go to the writer past the queue, so closing a connection whose
//! peer stopped reading takes at most about a second.

use core::borrow::Borrow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tether_proto::{
    CommandResult, ErrorCode, ErrorMessage, Payload, Pong, ReceiverToServer, ServerToReceiver,
    Subscribed,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc, oneshot};

use crate::accounts::session;
use crate::admission::ConnectionSlot;
use crate::broker::{Inbox, Item, Subscription, SubscriptionId};
use crate::http_util::{check_origin, error_response, too_many_connections};
use crate::serve::TcpHeld;
use crate::store::{KeyIdentity, ReadRange, StoredEvent};
use crate::websocket::{
    CLOSE_LINGER, CLOSE_POLICY, CLOSE_TRY_AGAIN_LATER, CLOSE_UNSUPPORTED_DATA, ReadFailure,
    SendError, await_close, classify, close, close_frame, decode_reason, error_close_code,
    is_invalid_close, record_invalid_close, record_violation, send_within,
};
use crate::{AppState, auth};

/// The subprotocol the server speaks.
pub(crate) const SUBPROTOCOL: &str = "tether.v1";
/// Prefix of the subprotocol that carries a receiver key.
pub(crate) const KEY_SUBPROTOCOL_PREFIX: &str = "tether-key.";
/// Events per store read while replaying or catching up.
const PAGE: usize = 256;
/// Channels one receiver connection may subscribe to at once.
pub(crate) const MAX_SUBSCRIPTIONS: usize = 256;
/// Frames queued for one receiver's socket.
const OUTBOX: usize = 256;
/// Frames put into the outbox with one reservation.
const LIVE_BATCH: usize = 64;
/// Live events the delivery task takes from its inbox at once.
const INBOX_BATCH: usize = 256;
/// Frames the writer takes from the outbox at once and writes with one
/// flush.
const WRITE_BATCH: usize = 64;
/// The connection's own replies (pongs, errors, pings) waiting for room in
/// the outbox; while this many wait, requests are not read.
const REPLIES: usize = 16;

fn key_from_subprotocols(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .find_map(|protocol| protocol.strip_prefix(KEY_SUBPROTOCOL_PREFIX))
}

/// A receiver connection's standing at the upgrade.
enum Admitted {
    /// Its key was checked; it holds its place.
    Authenticated {
        identity: KeyIdentity,
        key: String,
        slot: ConnectionSlot,
    },
    /// No key yet: a place in the unauthenticated budget until its `auth`
    /// message.
    Pending(OwnedSemaphorePermit),
}

pub(crate) async fn upgrade(
    State(state): State<Arc<AppState>>,
    Extension(tcp): Extension<TcpHeld>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if let Err(response) = check_origin(&state, &headers) {
        return response;
    }
    let presented = key_from_subprotocols(&headers).or_else(|| auth::bearer(&headers));
    // No key, and the CSRF subprotocol offered: the session cookie.
    if presented.is_none() && session::csrf_subprotocol(&headers).is_some() {
        let (identity, token) =
            match session::identity(&state, &headers, session::Guard::Upgrade).await {
                Ok(Some(found)) => found,
                Ok(None) => {
                    state.metrics.auth_failure("receiver");
                    return error_response(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "no session cookie: sign in again",
                    );
                }
                Err(response) => return response,
            };
        let admitted = match state.admission.connection(identity.tenant_id) {
            Ok(slot) => Admitted::Authenticated {
                identity,
                key: token,
                slot,
            },
            Err(refusal) => {
                state.metrics.rejected(refusal.metric());
                return too_many_connections();
            }
        };
        return accept(state, tcp, peer, upgrade, admitted);
    }
    let admitted = match presented {
        Some(key) => match state.store.authenticate_key(key).await {
            Ok(Some(identity)) => match state.admission.connection(identity.tenant_id) {
                Ok(slot) => Admitted::Authenticated {
                    identity,
                    key: key.to_owned(),
                    slot,
                },
                Err(refusal) => {
                    state.metrics.rejected(refusal.metric());
                    return too_many_connections();
                }
            },
            Ok(None) => {
                state.metrics.auth_failure("receiver");
                tracing::warn!("receiver refused: wrong key");
                return error_response(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "wrong receiver key",
                );
            }
            Err(error) => {
                tracing::error!(%error, "receiver authentication failed");
                return error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "authentication is unavailable",
                );
            }
        },
        None => match state.admission.unauthenticated() {
            Some(permit) => Admitted::Pending(permit),
            None => {
                state.metrics.rejected("max_unauthenticated_connections");
                return too_many_connections();
            }
        },
    };
    accept(state, tcp, peer, upgrade, admitted)
}

fn accept(
    state: Arc<AppState>,
    tcp: TcpHeld,
    peer: SocketAddr,
    upgrade: WebSocketUpgrade,
    admitted: Admitted,
) -> Response {
    let upgrade = upgrade.protocols([SUBPROTOCOL]);
    crate::limits::bounded_upgrade(upgrade, state.config.limits.max_message_bytes)
        .on_upgrade(move |socket| async move {
            let _tcp = tcp;
            run(state, admitted, peer, socket).await;
        })
        .into_response()
}

#[derive(Deserialize)]
struct AuthEnvelope {
    v: u8,
    auth: AuthBody,
}

#[derive(Deserialize)]
struct AuthBody {
    key: String,
}

fn error_frame(code: ErrorCode, request_id: Option<u32>, message: &str) -> Message {
    channel_error_frame(code, request_id, None, message)
}

/// An `error` about a channel's subscription (`channel` set).
fn channel_error_frame(
    code: ErrorCode,
    request_id: Option<u32>,
    channel: Option<&str>,
    message: &str,
) -> Message {
    let text = ServerToReceiver::Error(ErrorMessage {
        code,
        request_id,
        message,
        channel,
    })
    .to_json()
    .unwrap_or_default();
    Message::Text(text.into())
}

/// An answer the connection owes, in request order.
enum Reply {
    /// A frame to send.
    Frame(Message),
    /// A subscription task's `subscribed` (or its refusal), which the task
    /// sends itself when it is its `turn` (the replies before it are out);
    /// the replies after it wait until it is `sent`.
    Announced {
        turn: Option<oneshot::Sender<()>>,
        sent: oneshot::Receiver<()>,
    },
}

/// Moves the first reply on: a frame into the outbox once it has room; a
/// subscription's announcement by giving its task the turn and waiting
/// until it sent it. `false` when the outbox is closed.
async fn forward_reply(replies: &mut VecDeque<Reply>, outbox: &mpsc::Sender<Message>) -> bool {
    match replies.front_mut() {
        Some(Reply::Announced { turn, sent }) => {
            if let Some(turn) = turn.take() {
                let _ = turn.send(());
            }
            // Sent, or the task ended without sending: either way, done.
            let _ = sent.await;
            replies.pop_front();
            true
        }
        Some(Reply::Frame(_)) => match outbox.reserve().await {
            Ok(room) => {
                if let Some(Reply::Frame(frame)) = replies.pop_front() {
                    room.send(frame);
                }
                true
            }
            Err(_) => false,
        },
        None => true,
    }
}

fn error_close(code: ErrorCode, reason: &str) -> Message {
    close_frame(error_close_code(code), reason)
}

/// Refuses an unauthenticated connection: an `unauthorized` error, then
/// close 4005.
async fn refuse(state: &AppState, socket: &mut WebSocket, reason: &str) {
    let refusal = error_frame(ErrorCode::UNAUTHORIZED, None, reason);
    if send_within(socket, refusal, state.config.limits.write_timeout)
        .await
        .is_ok()
    {
        close(socket, error_close_code(ErrorCode::UNAUTHORIZED), reason).await;
    }
}

/// Waits (within the handshake timeout) for the `auth` message; on a wrong
/// key sends an `error` and closes.
async fn authenticate_first_message(
    state: &AppState,
    peer: SocketAddr,
    socket: &mut WebSocket,
) -> Option<(KeyIdentity, String)> {
    let mut shutdown = state.shutdown.clone();
    let first = tokio::select! {
        first = tokio::time::timeout(state.config.limits.handshake_timeout, socket.recv()) => first,
        _ = shutdown.changed() => {
            let (code, reason) = state.stop_close();
            close(socket, code, &reason).await;
            return None;
        }
    };
    let text = match first {
        Err(_) => {
            state.metrics.rejected("handshake_timeout");
            close(
                socket,
                CLOSE_POLICY,
                "no auth message within the handshake timeout",
            )
            .await;
            return None;
        }
        Ok(Some(Ok(Message::Text(text)))) => text,
        Ok(Some(Err(error))) => {
            if let ReadFailure::Violation {
                code,
                reason,
                metric,
            } = classify(&error)
            {
                record_violation(&state.metrics, "receiver", peer, code, reason, metric);
                close(socket, code, reason).await;
            }
            return None;
        }
        Ok(Some(Ok(Message::Close(frame)))) => {
            if is_invalid_close(frame.as_ref()) {
                record_invalid_close(&state.metrics, "receiver", peer);
            }
            let _ = tokio::time::timeout(CLOSE_LINGER, socket.flush()).await;
            return None;
        }
        Ok(_) => {
            refuse(state, socket, "authenticate first").await;
            return None;
        }
    };
    let key = match serde_json::from_str::<AuthEnvelope>(&text) {
        Ok(envelope) if envelope.v == tether_proto::PROTOCOL_VERSION => Some(envelope.auth.key),
        _ => None,
    };
    let identity = match &key {
        Some(key) => state.store.authenticate_key(key).await.ok().flatten(),
        None => None,
    };
    match (identity, key) {
        (Some(identity), Some(key)) => Some((identity, key)),
        _ => {
            state.metrics.auth_failure("receiver");
            tracing::warn!("receiver refused: wrong key in auth message");
            refuse(state, socket, "wrong receiver key").await;
            None
        }
    }
}

async fn run(state: Arc<AppState>, admitted: Admitted, peer: SocketAddr, mut socket: WebSocket) {
    let (identity, key, _slot) = match admitted {
        Admitted::Authenticated {
            identity,
            key,
            slot,
        } => (identity, key, slot),
        Admitted::Pending(permit) => {
            let _waiting = state.metrics.connection("unauthenticated");
            let Some((identity, key)) = authenticate_first_message(&state, peer, &mut socket).await
            else {
                return;
            };
            drop(permit);
            match state.admission.connection(identity.tenant_id) {
                Ok(slot) => (identity, key, slot),
                Err(refusal) => {
                    state.metrics.rejected(refusal.metric());
                    close(
                        &mut socket,
                        CLOSE_TRY_AGAIN_LATER,
                        "the server is at its connection limit; retry later",
                    )
                    .await;
                    return;
                }
            }
        }
    };
    let _open = state.metrics.connection("receiver");
    serve(state, identity, key, peer, socket).await;
}

/// Whether the connection's key (or session) is still valid (asked of the
/// store after revocation notices were missed).
async fn key_still_valid(state: &AppState, key: &str, identity: &KeyIdentity) -> bool {
    if let Some(session) = &identity.session {
        return match state
            .store
            .accounts()
            .authenticate_session(key, crate::now_ms())
            .await
        {
            Ok(Some(current)) => current == *session,
            Ok(None) => false,
            Err(error) => {
                tracing::warn!(%error, "cannot check the session; closing");
                false
            }
        };
    }
    match state.store.authenticate_key(key).await {
        Ok(Some(current)) => current.key_id == identity.key_id,
        Ok(None) => false,
        Err(error) => {
            tracing::warn!(%error, "cannot check the receiver key; closing");
            false
        }
    }
}

/// How the writer's queue ended.
enum Drained {
    /// The connection is ending: these are its last frames.
    Farewell(Vec<Message>),
    /// The outbox closed.
    Closed,
    /// A frame could not be written.
    Failed(SendError),
}

/// Takes frames from the outbox and writes them, every frame queued at
/// the time with one flush (at most [`WRITE_BATCH`]), each batch within
/// the write timeout (a peer that does not take it is closed with 4016),
/// until the
/// connection's last frames arrive on `farewell`: those are written at
/// once, within [`CLOSE_LINGER`], and whatever is still queued is dropped
/// (a closing connection does not wait for a peer that stopped reading).
async fn write_frames(
    state: Arc<AppState>,
    mut sink: SplitSink<WebSocket, Message>,
    mut outgoing: mpsc::Receiver<Message>,
    farewell: oneshot::Receiver<Vec<Message>>,
) {
    let write_timeout = state.config.limits.write_timeout;
    let drain = async {
        let mut frames = Vec::with_capacity(WRITE_BATCH);
        while outgoing.recv_many(&mut frames, WRITE_BATCH).await > 0 {
            if let Err(error) = write_batch(&mut sink, &mut frames, write_timeout).await {
                return Drained::Failed(error);
            }
        }
        Drained::Closed
    };
    let drained = tokio::select! {
        biased;
        last = farewell => Drained::Farewell(last.unwrap_or_default()),
        drained = drain => drained,
    };
    let last = match drained {
        Drained::Farewell(frames) => frames,
        Drained::Closed => Vec::new(),
        Drained::Failed(SendError::Gone) => return,
        Drained::Failed(SendError::TimedOut) => {
            state.metrics.rejected("slow_consumer");
            tracing::warn!("receiver does not read; closing");
            vec![error_close(
                ErrorCode::SLOW_CONSUMER,
                "not reading within the write timeout",
            )]
        }
    };
    let deadline = tokio::time::Instant::now() + CLOSE_LINGER;
    for frame in last {
        if !matches!(
            tokio::time::timeout_at(deadline, sink.send(frame)).await,
            Ok(Ok(()))
        ) {
            return;
        }
    }
    let _ = tokio::time::timeout_at(deadline, sink.close()).await;
}

/// Writes `frames` (emptying it) and flushes them once, all within
/// `timeout`: one write to the socket for every frame that was queued,
/// not one per frame.
async fn write_batch<S>(
    sink: &mut S,
    frames: &mut Vec<Message>,
    timeout: Duration,
) -> Result<(), SendError>
where
    S: futures_util::Sink<Message> + Unpin,
{
    let written = async {
        for frame in frames.drain(..) {
            sink.feed(frame).await?;
        }
        sink.flush().await
    };
    match tokio::time::timeout(timeout, written).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(SendError::Gone),
        Err(_) => Err(SendError::TimedOut),
    }
}

async fn serve(
    state: Arc<AppState>,
    identity: KeyIdentity,
    key: String,
    peer: SocketAddr,
    socket: WebSocket,
) {
    let limits = state.config.limits.clone();
    let (sink, mut stream) = socket.split();
    let (outbox, outgoing) = mpsc::channel::<Message>(OUTBOX);
    let (farewell, last_frames) = oneshot::channel();
    let mut writer = tokio::spawn(write_frames(
        Arc::clone(&state),
        sink,
        outgoing,
        last_frames,
    ));
    let mut writer_done = false;
    // One task delivers every subscription's live events (and replays
    // history), in the order of the requests.
    let inbox = Inbox::new();
    let (control, controls) = mpsc::unbounded_channel();
    let delivery = AbortOnDrop(tokio::spawn(deliver(
        Arc::clone(&state),
        identity.tenant_id,
        Arc::clone(&inbox),
        controls,
        outbox.clone(),
    )));
    // Channels subscribed (the delivery task holds the subscriptions).
    let mut subscriptions: HashSet<String> = HashSet::new();
    let mut commands = tokio::task::JoinSet::new();
    let command_permits = Arc::new(Semaphore::new(limits.max_commands_per_connection));
    let mut replies: VecDeque<Reply> = VecDeque::new();
    let mut shutdown = state.shutdown.clone();
    let mut revocations = state.revocations.subscribe();
    let mut ping = tokio::time::interval(limits.ping_interval);
    ping.tick().await;
    let mut last_heard = Instant::now();
    let revoked = || error_close(ErrorCode::UNAUTHORIZED, "receiver key revoked");
    let close = loop {
        tokio::select! {
            _ = shutdown.changed() => {
                let (code, reason) = state.stop_close();
                break Some(close_frame(code, &reason));
            }
            revocation = revocations.recv() => match revocation {
                Ok(revocation) if identity.revoked_by(&revocation) => break Some(revoked()),
                // Missed notices: the store is the truth.
                Err(broadcast::error::RecvError::Lagged(_))
                    if !key_still_valid(&state, &key, &identity).await =>
                {
                    break Some(revoked());
                }
                _ => {}
            },
            // The writer ended: the peer is gone or did not read.
            _ = &mut writer, if !writer_done => {
                writer_done = true;
                break None;
            }
            forwarded = forward_reply(&mut replies, &outbox), if !replies.is_empty() => {
                if !forwarded {
                    break None;
                }
            }
            Some(_) = commands.join_next(), if !commands.is_empty() => {}
            _ = ping.tick() => {
                if last_heard.elapsed() > limits.idle_timeout {
                    state.metrics.rejected("idle_timeout");
                    break Some(close_frame(CLOSE_POLICY, "idle timeout"));
                }
                if replies.len() < REPLIES {
                    replies.push_back(Reply::Frame(Message::Ping(Default::default())));
                }
            }
            message = stream.next(), if replies.len() < REPLIES => {
                last_heard = Instant::now();
                let message = match message {
                    None => break None,
                    Some(Err(error)) => match classify(&error) {
                        ReadFailure::Violation { code, reason, metric } => {
                            record_violation(&state.metrics, "receiver", peer, code, reason, metric);
                            break Some(close_frame(code, reason));
                        }
                        ReadFailure::Gone => break None,
                    },
                    Some(Ok(message)) => message,
                };
                let text = match message {
                    Message::Text(text) => text,
                    Message::Binary(_) => {
                        state.metrics.rejected("binary_frame");
                        break Some(close_frame(CLOSE_UNSUPPORTED_DATA, "the receiver protocol uses text frames"));
                    }
                    Message::Close(frame) => {
                        if is_invalid_close(frame.as_ref()) {
                            record_invalid_close(&state.metrics, "receiver", peer);
                        }
                        break None;
                    }
                    Message::Ping(_) | Message::Pong(_) => continue,
                };
                let request = match ReceiverToServer::from_json(&text) {
                    Ok(request) => request,
                    Err(error) => {
                        state.metrics.rejected("malformed");
                        let code = error.error_code();
                        // 4002 names the versions spoken (protocol.md section 8).
                        let reason = decode_reason(error);
                        replies.push_back(Reply::Frame(error_frame(code, None, reason)));
                        break Some(error_close(code, reason));
                    }
                };
                match request {
                    ReceiverToServer::Subscribe(subscribe) => {
                        let refused = |code, message| {
                            Reply::Frame(channel_error_frame(code, subscribe.request_id, Some(subscribe.channel), message))
                        };
                        if !identity.channels.allows(subscribe.channel) {
                            replies.push_back(refused(ErrorCode::FORBIDDEN, "this key may not read that channel"));
                            continue;
                        }
                        if subscriptions.len() >= MAX_SUBSCRIPTIONS && !subscriptions.contains(subscribe.channel) {
                            replies.push_back(refused(ErrorCode::RATE_LIMITED, "too many subscriptions on one connection"));
                            continue;
                        }
                        let channel = subscribe.channel.to_owned();
                        // Joined here, so a refusal is answered in order
                        // (a subscription of the channel before this one
                        // ends when the delivery task takes this one).
                        let live = match state.broker.subscribe(identity.tenant_id, &channel, &inbox) {
                            Ok(live) => live,
                            Err(error) => {
                                state.metrics.rejected("channels_per_tenant");
                                tracing::warn!(%error, tenant = identity.tenant_id, "subscribe refused");
                                replies.push_back(refused(
                                    ErrorCode::RATE_LIMITED,
                                    "the tenant has its maximum of subscribed channels",
                                ));
                                continue;
                            }
                        };
                        // The task reads the bounds at once, and sends
                        // `subscribed` in its turn; the replies after this
                        // one wait for it.
                        let (turn, my_turn) = oneshot::channel();
                        let (announced, sent) = oneshot::channel();
                        replies.push_back(Reply::Announced { turn: Some(turn), sent });
                        subscriptions.insert(channel.clone());
                        let _ = control.send(Control::Subscribe {
                            channel,
                            start: Start {
                                from: subscribe.from,
                                request_id: subscribe.request_id,
                                my_turn,
                                announced,
                                describe: asks_for_descriptions(&text),
                            },
                            live,
                        });
                    }
                    ReceiverToServer::Ping(ping) => {
                        let pong = ServerToReceiver::Pong(Pong { id: ping.id }).to_json().unwrap_or_default();
                        replies.push_back(Reply::Frame(Message::Text(pong.into())));
                    }
                    ReceiverToServer::Unsubscribe(unsubscribe) => {
                        if subscriptions.remove(unsubscribe.channel) {
                            let _ = control.send(Control::Unsubscribe(unsubscribe.channel.to_owned()));
                        }
                    }
                    ReceiverToServer::SendCommand(command) => {
                        let request_id = command.request_id;
                        let Ok(permit) = Arc::clone(&command_permits).try_acquire_owned() else {
                            state.metrics.rejected("commands_per_connection");
                            replies.push_back(Reply::Frame(error_frame(
                                ErrorCode::RATE_LIMITED,
                                Some(request_id),
                                "too many commands waiting for their answers on this connection",
                            )));
                            continue;
                        };
                        if let Err(error) = command.payload.check() {
                            replies.push_back(Reply::Frame(error_frame(
                                ErrorCode::INVALID_FIELD,
                                Some(request_id),
                                error.reason(),
                            )));
                            continue;
                        }
                        let state = Arc::clone(&state);
                        let identity = identity.clone();
                        let outbox = outbox.clone();
                        let device = command.device.to_owned();
                        let channel = command.channel.to_owned();
                        let payload = command.payload.as_str().unwrap_or("null").to_owned();
                        commands.spawn(async move {
                            let _permit = permit;
                            let frame = match crate::commands::command(&state, &identity, &device, channel, payload).await {
                                Ok(reply) => Message::Text(
                                    ServerToReceiver::CommandResult(CommandResult {
                                        request_id,
                                        status: reply.status,
                                        result: Payload::from_json_str(&reply.result),
                                    })
                                    .to_json()
                                    .unwrap_or_default()
                                    .into(),
                                ),
                                Err((code, message)) => error_frame(code, Some(request_id), message),
                            };
                            let _ = outbox.send(frame).await;
                        });
                    }
                }
            }
        }
    };
    drop(delivery);
    commands.abort_all();
    if !writer_done {
        // The replies still waiting, then the close frame, ahead of any
        // event still queued: the writer sends them within CLOSE_LINGER.
        let frames = replies.into_iter().filter_map(|reply| match reply {
            Reply::Frame(frame) => Some(frame),
            Reply::Announced { .. } => None,
        });
        let _ = farewell.send(frames.chain(close).collect());
        drop(outbox);
        if tokio::time::timeout(CLOSE_LINGER.saturating_mul(2), &mut writer)
            .await
            .is_err()
        {
            writer.abort();
        }
    }
    // Wait for the peer's close frame (see `websocket::close`).
    await_close(&mut stream).await;
}

/// Whether a `subscribe` asks for the channel's descriptions: the member
/// `"describe":true` (JSON only; decoders that do not know it ignore it,
/// `docs/protocol.md` section 2).
fn asks_for_descriptions(text: &str) -> bool {
    #[derive(Deserialize)]
    struct Envelope {
        subscribe: Options,
    }
    #[derive(Deserialize)]
    struct Options {
        #[serde(default)]
        describe: bool,
    }
    serde_json::from_str::<Envelope>(text).is_ok_and(|envelope| envelope.subscribe.describe)
}

/// A task that ends with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How a subscription starts: `Subscribe.from` and `.request_id`; when
/// its `subscribed` (or refusal) may go out (the replies before it are
/// out), and whom to tell once it is in the outbox; whether the receiver
/// asked for the channel's descriptions.
struct Start {
    from: Option<u64>,
    request_id: Option<u32>,
    my_turn: oneshot::Receiver<()>,
    announced: oneshot::Sender<()>,
    describe: bool,
}

/// What the connection's loop tells its delivery task, in request order.
enum Control {
    /// A subscription joined its channel's live queue (into the inbox):
    /// answer it in its turn, replay, then deliver its live events. One
    /// of the channel before it ends.
    Subscribe {
        channel: String,
        start: Start,
        live: Box<dyn Subscription>,
    },
    /// The subscription of this channel ends.
    Unsubscribe(String),
}

/// A subscription the delivery task serves.
struct Live {
    channel: String,
    /// The highest offset sent or deliberately skipped.
    last: u64,
    /// Dropping it leaves the channel.
    _live: Box<dyn Subscription>,
    _descriptions: Option<AbortOnDrop>,
}

/// The connection's delivery task: answers each subscription in its turn
/// (`subscribed`), replays its history from `from`, then forwards the live
/// events of every subscription from the one inbox without gap or
/// duplicate, catching a subscription up from the store when it fell more
/// than a live queue behind. With `describe`, a subscription's channel
/// descriptions follow its `subscribed` (a task of their own, rare).
///
/// Subscribing: the subscription joined the channel's live queue
/// **first**, then reads the channel's bounds, replays stored events from
/// `from` up to them, and then forwards live events, skipping offsets
/// already sent and filling any gap from the store. Live events are
/// published only after their commit, so every event is either below the
/// bounds read (replayed) or arrives live.
async fn deliver(
    state: Arc<AppState>,
    tenant_id: i64,
    inbox: Arc<Inbox>,
    mut controls: mpsc::UnboundedReceiver<Control>,
    outbox: mpsc::Sender<Message>,
) {
    let forwarder = Forwarder {
        state: &state,
        tenant_id,
        outbox: &outbox,
    };
    let mut live: HashMap<SubscriptionId, Live> = HashMap::new();
    let mut by_channel: HashMap<String, SubscriptionId> = HashMap::new();
    let mut items = Vec::with_capacity(INBOX_BATCH);
    let mut frames = Vec::with_capacity(INBOX_BATCH);
    loop {
        tokio::select! {
            biased;
            control = controls.recv() => match control {
                None => return,
                Some(Control::Unsubscribe(channel)) => {
                    if let Some(id) = by_channel.remove(&channel) {
                        live.remove(&id);
                    }
                }
                Some(Control::Subscribe { channel, start, live: subscription }) => {
                    if let Some(old) = by_channel.remove(&channel) {
                        live.remove(&old);
                    }
                    let id = subscription.id();
                    match forwarder.open(&channel, start).await {
                        Opened::Live { last, descriptions } => {
                            by_channel.insert(channel.clone(), id);
                            live.insert(id, Live {
                                channel,
                                last,
                                _live: subscription,
                                _descriptions: descriptions,
                            });
                        }
                        // The subscription ends (its refusal was sent).
                        Opened::Refused => {}
                        Opened::Gone => return,
                    }
                }
            },
            () = inbox.recv_many(&mut items, INBOX_BATCH) => {
                if !forwarder.forward(&inbox, &mut live, &mut items, &mut frames).await {
                    return;
                }
            }
        }
    }
}

/// Why a store read ended early.
enum Stop {
    /// The store failed: the subscription ends (its `error` was sent).
    StoreFailed,
    /// The receiver is gone.
    Gone,
}

/// How a subscription's start went.
enum Opened {
    /// Answered and replayed: live from `last` on.
    Live {
        last: u64,
        descriptions: Option<AbortOnDrop>,
    },
    /// The store failed; the `error` was sent, the subscription ends.
    Refused,
    /// The receiver is gone.
    Gone,
}

struct Forwarder<'a> {
    state: &'a Arc<AppState>,
    tenant_id: i64,
    outbox: &'a mpsc::Sender<Message>,
}

/// The frame of an event: its one encoding, shared by every subscriber
/// (a reference count, neither a copy nor a check).
fn event_frame(event: &StoredEvent) -> Message {
    Message::Text(event.text_frame())
}

impl Forwarder<'_> {
    /// A subscription's start: reads the channel's bounds, sends
    /// `subscribed` in its turn (the replies before it are out), then the
    /// history from `from` up to the bounds.
    async fn open(&self, channel: &str, start: Start) -> Opened {
        let Start {
            from,
            request_id,
            my_turn,
            announced,
            describe,
        } = start;
        // The live queue was joined before looking at the store.
        let bounds = self
            .state
            .store
            .channel_bounds(self.tenant_id, channel)
            .await;
        // The answer goes out in request order.
        if my_turn.await.is_err() {
            return Opened::Gone;
        }
        let bounds = match bounds {
            Ok(bounds) => bounds,
            Err(error) => {
                tracing::error!(%error, "cannot read channel bounds");
                let refused = channel_error_frame(
                    ErrorCode::INTERNAL,
                    request_id,
                    Some(channel),
                    "store unavailable",
                );
                if self.outbox.send(refused).await.is_err() {
                    return Opened::Gone;
                }
                return Opened::Refused;
            }
        };
        let subscribed = ServerToReceiver::Subscribed(Subscribed {
            channel,
            first_offset: bounds.first_offset,
            next_offset: bounds.next_offset,
            request_id,
        });
        if self
            .outbox
            .send(Message::Text(
                subscribed.to_json().unwrap_or_default().into(),
            ))
            .await
            .is_err()
        {
            return Opened::Gone;
        }
        let _ = announced.send(());
        let descriptions = describe.then(|| {
            AbortOnDrop(tokio::spawn(crate::device_readings::forward_descriptions(
                Arc::clone(self.state),
                self.tenant_id,
                channel.to_owned(),
                self.state.broker.descriptions(),
                self.outbox.clone(),
            )))
        });
        let mut last = bounds.next_offset.saturating_sub(1);
        if let Some(from) = from {
            if from < bounds.next_offset {
                // History up to the bounds.
                match self.fill(channel, from, Some(bounds.next_offset)).await {
                    Ok(sent) => last = sent.max(last),
                    Err(Stop::StoreFailed) => return Opened::Refused,
                    Err(Stop::Gone) => return Opened::Gone,
                }
            } else {
                last = from.saturating_sub(1);
            }
        }
        Opened::Live { last, descriptions }
    }

    /// Forwards `items` (emptying it) in order: each live event above its
    /// subscription's last offset, filling a gap before it from the store;
    /// a subscription that lagged reads the store to its end. The frames
    /// go into the outbox in runs, one reservation per [`LIVE_BATCH`].
    /// `false` if the receiver is gone.
    async fn forward(
        &self,
        inbox: &Inbox,
        live: &mut HashMap<SubscriptionId, Live>,
        items: &mut Vec<Item>,
        frames: &mut Vec<(Message, u64)>,
    ) -> bool {
        for item in items.drain(..) {
            match item {
                Item::Event(id, event) => {
                    let Some(subscription) = live.get_mut(&id) else {
                        // Unsubscribed.
                        continue;
                    };
                    if event.offset <= subscription.last {
                        // Replayed already.
                        continue;
                    }
                    if event.offset > subscription.last + 1 {
                        if !self.send_frames(frames).await {
                            return false;
                        }
                        match self
                            .fill(
                                &subscription.channel,
                                subscription.last + 1,
                                Some(event.offset),
                            )
                            .await
                        {
                            Ok(_) => {}
                            Err(Stop::StoreFailed) => {
                                // This subscription ends (its error was sent).
                                live.remove(&id);
                                continue;
                            }
                            Err(Stop::Gone) => return false,
                        }
                    }
                    subscription.last = event.offset;
                    frames.push((event_frame(&event), event.server_time_ms));
                }
                Item::Lagged(id) => {
                    let Some(subscription) = live.get_mut(&id) else {
                        continue;
                    };
                    if !self.send_frames(frames).await {
                        return false;
                    }
                    // Live events queue again first: whatever was dropped
                    // was committed before, and is in the store read next.
                    inbox.resume(id);
                    self.state.metrics.catch_up();
                    tracing::debug!(
                        channel = subscription.channel,
                        "receiver fell behind; catching up from the store"
                    );
                    match self
                        .fill(&subscription.channel, subscription.last + 1, None)
                        .await
                    {
                        Ok(sent) => subscription.last = subscription.last.max(sent),
                        Err(Stop::StoreFailed) => {
                            live.remove(&id);
                        }
                        Err(Stop::Gone) => return false,
                    }
                }
            }
        }
        self.send_frames(frames).await
    }

    /// Puts `frames` (emptying it) into the outbox, [`LIVE_BATCH`] at a
    /// time with one reservation each; `false` if the receiver is gone.
    async fn send_frames(&self, frames: &mut Vec<(Message, u64)>) -> bool {
        while !frames.is_empty() {
            let take = frames.len().min(LIVE_BATCH);
            let Ok(permits) = self.outbox.reserve_many(take).await else {
                return false;
            };
            let time_ms = crate::now_ms();
            for (permit, (frame, server_time_ms)) in permits.zip(frames.drain(..take)) {
                permit.send(frame);
                let lag = time_ms.saturating_sub(server_time_ms);
                self.state.metrics.delivered(Duration::from_millis(lag));
            }
        }
        true
    }

    /// Sends `events` into the outbox, [`LIVE_BATCH`] at a time with one
    /// reservation each; `false` if the receiver is gone.
    async fn send_run<E: Borrow<StoredEvent>>(&self, events: &[E]) -> bool {
        for chunk in events.chunks(LIVE_BATCH) {
            let Ok(permits) = self.outbox.reserve_many(chunk.len()).await else {
                return false;
            };
            let time_ms = crate::now_ms();
            for (permit, event) in permits.zip(chunk) {
                let event = event.borrow();
                permit.send(event_frame(event));
                let lag = time_ms.saturating_sub(event.server_time_ms);
                self.state.metrics.delivered(Duration::from_millis(lag));
            }
        }
        true
    }

    /// Sends stored events of `channel` `from..until` (to the current end
    /// for `None`); returns the last offset covered (`from - 1` if none).
    async fn fill(&self, channel: &str, from: u64, until: Option<u64>) -> Result<u64, Stop> {
        let mut next = from;
        let mut last = from.saturating_sub(1);
        loop {
            let page = match self
                .state
                .store
                .read(
                    self.tenant_id,
                    channel,
                    ReadRange::Offsets { from: next, until },
                    PAGE,
                )
                .await
            {
                Ok(page) => page,
                Err(error) => {
                    tracing::error!(%error, "cannot replay");
                    let refused = channel_error_frame(
                        ErrorCode::INTERNAL,
                        None,
                        Some(channel),
                        "store unavailable",
                    );
                    return Err(match self.outbox.send(refused).await {
                        Ok(()) => Stop::StoreFailed,
                        Err(_) => Stop::Gone,
                    });
                }
            };
            let Some(tail) = page.last() else {
                // Events below `until` that retention removed are skipped.
                if let Some(until) = until {
                    last = last.max(until.saturating_sub(1));
                }
                return Ok(last);
            };
            next = tail.offset + 1;
            last = tail.offset;
            if !self.send_run(&page).await {
                return Err(Stop::Gone);
            }
            if page.len() < PAGE {
                if let Some(until) = until {
                    last = last.max(until.saturating_sub(1));
                }
                return Ok(last);
            }
        }
    }
}
