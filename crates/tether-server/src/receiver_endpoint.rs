//! `GET /v1/receiver`: the receiver WebSocket (JSON text frames).
//!
//! Authentication, one of (browsers cannot set headers, so the first two
//! exist for them):
//! 1. subprotocols: `new WebSocket(url, ["tether.v1", "tether-key.tk_…"])`;
//!    the server answers with subprotocol `tether.v1`;
//! 2. a first text message `{"v":1,"auth":{"key":"tk_…"}}` within the
//!    handshake timeout (a wrong key gets an `error` message with code
//!    `unauthorized`, then close code 4005);
//! 3. `Authorization: Bearer tk_…` (scripts).
//!
//! A wrong key in 1 or 3 is refused before the upgrade (401). A page served
//! from another origin is refused (403) unless `allowed_origins` lists it.
//!
//! Replies come in request order: `subscribed` (or the refusal) and `pong`
//! are queued by the loop that reads requests; only a `send_command`'s
//! answer waits for the device. Refusals carry the request's `request_id`
//! and, for `subscribe`, its `channel`.
//!
//! Subscribing (`subscribe` with `from`): the subscription joins the
//! channel's live queue **first**, then reads the channel's bounds, replays
//! stored events from `from` up to them, and then forwards live events,
//! skipping offsets already sent and filling any gap from the store. Live
//! events are published only after their commit, so every event is either
//! below the bounds read (replayed) or arrives live: no gap, no duplicate.
//! A subscriber that falls behind its bounded live queue is told
//! `Lagged` and catches up from the store the same way.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::net::SocketAddr;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tether_proto::{
    CommandResult, ErrorCode, ErrorMessage, Payload, Pong, ReceiverToServer, ServerToReceiver,
    Subscribe, Subscribed,
};
use tokio::sync::mpsc;

use crate::broker::{Received, Subscription};
use crate::device_endpoint::{CLOSE_GOING_AWAY, CLOSE_POLICY, decode_reason};
use crate::http_api::{check_origin, error_response};
use crate::store::{ChannelBounds, KeyIdentity, ReadRange, Revocation, StoredEvent};
use crate::ws_violation::{self, ReadFailure};
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

fn key_from_subprotocols(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .find_map(|protocol| protocol.strip_prefix(KEY_SUBPROTOCOL_PREFIX))
}

pub(crate) async fn upgrade(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if let Err(response) = check_origin(&state, &headers) {
        return response;
    }
    let Ok(permit) = Arc::clone(&state.connection_permits).try_acquire_owned() else {
        state.metrics.rejected("max_connections");
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            "the server is at its connection limit; retry later",
        );
    };
    let presented = key_from_subprotocols(&headers).or_else(|| auth::bearer(&headers));
    let identity = match presented {
        None => None,
        Some(key) => match state.store.authenticate_key(key).await {
            Ok(Some(identity)) => Some(identity),
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
    };
    let upgrade = upgrade.protocols([SUBPROTOCOL]);
    crate::limits::bounded_upgrade(upgrade, state.config.limits.max_message_bytes)
        .on_upgrade(move |socket| async move {
            let _permit = permit;
            let _open = state.metrics.connection("receiver");
            run(state, identity, peer, socket).await;
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

fn close_frame(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

fn error_close(code: ErrorCode, reason: &str) -> Message {
    close_frame(code.close_code().unwrap_or(4013), reason)
}

async fn authenticate_first_message(
    state: &AppState,
    peer: SocketAddr,
    socket: &mut WebSocket,
) -> Option<KeyIdentity> {
    let first = tokio::time::timeout(state.config.limits.handshake_timeout, socket.recv()).await;
    let text = match first {
        Ok(Some(Err(error))) => {
            if let ReadFailure::Violation {
                code,
                reason,
                metric,
            } = ws_violation::classify(&error)
            {
                ws_violation::record(&state.metrics, "receiver", peer, code, reason, metric);
                let _ = socket.send(ws_violation::close_message(code, reason)).await;
            }
            return None;
        }
        Ok(Some(Ok(Message::Close(frame)))) => {
            if ws_violation::is_invalid_close(frame.as_ref()) {
                invalid_close(state, peer);
            }
            let _ = tokio::time::timeout(
                crate::device_endpoint::CLOSE_LINGER,
                futures_util::SinkExt::flush(socket),
            )
            .await;
            return None;
        }
        Err(_) => {
            state.metrics.rejected("handshake_timeout");
            let _ = socket
                .send(close_frame(
                    CLOSE_POLICY,
                    "no auth message within the handshake timeout",
                ))
                .await;
            return None;
        }
        Ok(Some(Ok(Message::Text(text)))) => text,
        Ok(_) => {
            let _ = socket
                .send(error_frame(
                    ErrorCode::UNAUTHORIZED,
                    None,
                    "authenticate first",
                ))
                .await;
            let _ = socket
                .send(error_close(ErrorCode::UNAUTHORIZED, "authenticate first"))
                .await;
            return None;
        }
    };
    let identity = match serde_json::from_str::<AuthEnvelope>(&text) {
        Ok(envelope) if envelope.v == tether_proto::PROTOCOL_VERSION => state
            .store
            .authenticate_key(&envelope.auth.key)
            .await
            .ok()
            .flatten(),
        _ => None,
    };
    if identity.is_none() {
        state.metrics.auth_failure("receiver");
        tracing::warn!("receiver refused: wrong key in auth message");
        let _ = socket
            .send(error_frame(
                ErrorCode::UNAUTHORIZED,
                None,
                "wrong receiver key",
            ))
            .await;
        let _ = socket
            .send(error_close(ErrorCode::UNAUTHORIZED, "wrong receiver key"))
            .await;
    }
    identity
}

/// Counts a close frame with a code that may not be sent (tungstenite
/// answers it with 1002 itself).
fn invalid_close(state: &AppState, peer: SocketAddr) {
    ws_violation::record(
        &state.metrics,
        "receiver",
        peer,
        ws_violation::CLOSE_PROTOCOL_ERROR,
        "invalid close code",
        "websocket_protocol_error",
    );
}

async fn run(
    state: Arc<AppState>,
    identity: Option<KeyIdentity>,
    peer: SocketAddr,
    mut socket: WebSocket,
) {
    let identity = match identity {
        Some(identity) => identity,
        None => match authenticate_first_message(&state, peer, &mut socket).await {
            Some(identity) => identity,
            None => return,
        },
    };
    let (mut sink, mut stream) = socket.split();
    let (outbox, mut outgoing) = mpsc::channel::<Message>(OUTBOX);
    let writer = tokio::spawn(async move {
        while let Some(message) = outgoing.recv().await {
            let closing = matches!(message, Message::Close(_));
            if sink.send(message).await.is_err() || closing {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let limits = state.config.limits.clone();
    let mut subscriptions: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    let mut shutdown = state.shutdown.clone();
    let mut revocations = state.revocations.subscribe();
    let mut ping = tokio::time::interval(limits.ping_interval);
    ping.tick().await;
    let mut last_heard = Instant::now();
    let close = loop {
        tokio::select! {
            _ = shutdown.changed() => break Some(close_frame(CLOSE_GOING_AWAY, "server shutting down")),
            revocation = revocations.recv() => {
                if matches!(revocation, Ok(Revocation::Key(id)) if id == identity.key_id) {
                    break Some(error_close(ErrorCode::UNAUTHORIZED, "receiver key revoked"));
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > limits.idle_timeout {
                    state.metrics.rejected("idle_timeout");
                    break Some(close_frame(CLOSE_POLICY, "idle timeout"));
                }
                if outbox.send(Message::Ping(Default::default())).await.is_err() {
                    break None;
                }
            }
            message = stream.next() => {
                last_heard = Instant::now();
                let message = match message {
                    None => break None,
                    Some(Err(error)) => match ws_violation::classify(&error) {
                        ReadFailure::Violation { code, reason, metric } => {
                            ws_violation::record(&state.metrics, "receiver", peer, code, reason, metric);
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
                        break Some(close_frame(1003, "the receiver protocol uses text frames"));
                    }
                    Message::Close(frame) => {
                        if ws_violation::is_invalid_close(frame.as_ref()) {
                            invalid_close(&state, peer);
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
                        let _ = outbox.send(error_frame(code, None, reason)).await;
                        break Some(error_close(code, reason));
                    }
                };
                match request {
                    ReceiverToServer::Subscribe(subscribe) => {
                        let refusal = if !identity.channels.allows(subscribe.channel) {
                            Some((ErrorCode::FORBIDDEN, "this key may not read that channel"))
                        } else if subscriptions.len() >= MAX_SUBSCRIPTIONS && !subscriptions.contains_key(subscribe.channel) {
                            Some((ErrorCode::RATE_LIMITED, "too many subscriptions on one connection"))
                        } else {
                            None
                        };
                        if let Some((code, message)) = refusal {
                            let refused = channel_error_frame(code, subscribe.request_id, Some(subscribe.channel), message);
                            if outbox.send(refused).await.is_err() {
                                break None;
                            }
                            continue;
                        }
                        if let Some(old) = subscriptions.remove(subscribe.channel) {
                            old.abort();
                        }
                        // `subscribed` goes out from here, before anything
                        // this loop answers later; the replay and the live
                        // events follow from the subscription's task.
                        match subscribe_channel(&state, identity.tenant_id, subscribe, &outbox).await {
                            Subscribing::Started(task) => {
                                subscriptions.insert(subscribe.channel.to_owned(), task);
                            }
                            Subscribing::Refused => {}
                            Subscribing::ReceiverGone => break None,
                        }
                    }
                    ReceiverToServer::Ping(ping) => {
                        let pong = ServerToReceiver::Pong(Pong { id: ping.id }).to_json().unwrap_or_default();
                        if outbox.send(Message::Text(pong.into())).await.is_err() {
                            break None;
                        }
                    }
                    ReceiverToServer::Unsubscribe(unsubscribe) => {
                        if let Some(task) = subscriptions.remove(unsubscribe.channel) {
                            task.abort();
                        }
                    }
                    ReceiverToServer::SendCommand(command) => {
                        let state = Arc::clone(&state);
                        let identity = identity.clone();
                        let outbox = outbox.clone();
                        let request_id = command.request_id;
                        let device = command.device.to_owned();
                        let channel = command.channel.to_owned();
                        if let Err(error) = command.payload.check() {
                            let refused = error_frame(ErrorCode::INVALID_FIELD, Some(request_id), error.reason());
                            if outbox.send(refused).await.is_err() {
                                break None;
                            }
                            continue;
                        }
                        let payload = command.payload.as_str().unwrap_or("null").to_owned();
                        tokio::spawn(async move {
                            let frame = match crate::http_api::command(&state, &identity, &device, channel, payload).await {
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
    for (_, task) in subscriptions {
        task.abort();
    }
    if let Some(close) = close {
        let _ = outbox.send(close).await;
    }
    drop(outbox);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    // Wait for the peer's close frame (see `device_endpoint::close`).
    let deadline = tokio::time::Instant::now() + crate::device_endpoint::CLOSE_LINGER;
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(Message::Close(_)))) | Err(_) => break,
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => {
                tokio::time::sleep_until(deadline).await;
                break;
            }
        }
    }
}

/// What [`subscribe_channel`] did.
enum Subscribing {
    /// `subscribed` is queued; the task replays and forwards.
    Started(tokio::task::JoinHandle<()>),
    /// The store failed; the receiver got an `error` for the channel.
    Refused,
    /// The receiver's outbox is closed.
    ReceiverGone,
}

/// Joins the channel's live queue, reads its bounds and queues
/// `subscribed`, all before the caller reads the next request (so replies
/// stay in request order); then starts the task that replays from `from`
/// and forwards live events.
async fn subscribe_channel(
    state: &Arc<AppState>,
    tenant_id: i64,
    subscribe: Subscribe<'_>,
    outbox: &mpsc::Sender<Message>,
) -> Subscribing {
    let channel = subscribe.channel;
    // 1. Join the live queue before looking at the store.
    let live = state.broker.subscribe(tenant_id, channel);
    let bounds = match state.store.channel_bounds(tenant_id, channel).await {
        Ok(bounds) => bounds,
        Err(error) => {
            tracing::error!(%error, "cannot read channel bounds");
            let refused = channel_error_frame(
                ErrorCode::INTERNAL,
                subscribe.request_id,
                Some(channel),
                "store unavailable",
            );
            return if outbox.send(refused).await.is_ok() {
                Subscribing::Refused
            } else {
                Subscribing::ReceiverGone
            };
        }
    };
    let subscribed = ServerToReceiver::Subscribed(Subscribed {
        channel,
        first_offset: bounds.first_offset,
        next_offset: bounds.next_offset,
        request_id: subscribe.request_id,
    });
    if outbox
        .send(Message::Text(
            subscribed.to_json().unwrap_or_default().into(),
        ))
        .await
        .is_err()
    {
        return Subscribing::ReceiverGone;
    }
    Subscribing::Started(tokio::spawn(subscription(
        Arc::clone(state),
        tenant_id,
        channel.to_owned(),
        subscribe.from,
        bounds,
        live,
        outbox.clone(),
    )))
}

/// Replays history from `from`, then forwards live events without gap or
/// duplicate; catches up from the store when the live queue overflowed.
async fn subscription(
    state: Arc<AppState>,
    tenant_id: i64,
    channel: String,
    from: Option<u64>,
    bounds: ChannelBounds,
    mut live: Box<dyn Subscription>,
    outbox: mpsc::Sender<Message>,
) {
    // `last`: the highest offset sent or deliberately skipped.
    let mut last = bounds.next_offset.saturating_sub(1);
    let forwarder = Forwarder {
        state: &state,
        tenant_id,
        channel: &channel,
        outbox: &outbox,
    };
    if let Some(from) = from {
        if from < bounds.next_offset {
            // 2. History up to the bounds.
            match forwarder.fill(from, Some(bounds.next_offset)).await {
                Some(sent) => last = sent.max(last),
                None => return,
            }
        } else {
            last = from.saturating_sub(1);
        }
    }
    // 3. Live, skipping what was replayed and filling gaps.
    loop {
        match live.recv().await {
            Received::Event(event) => {
                if event.offset <= last {
                    continue;
                }
                if event.offset > last + 1 {
                    match forwarder.fill(last + 1, Some(event.offset)).await {
                        Some(_) => {}
                        None => return,
                    }
                }
                if !forwarder.send(&event).await {
                    return;
                }
                last = event.offset;
            }
            Received::Lagged(skipped) => {
                state.metrics.catch_up();
                tracing::debug!(
                    channel,
                    skipped,
                    "receiver fell behind; catching up from the store"
                );
                match forwarder.fill(last + 1, None).await {
                    Some(sent) => last = last.max(sent),
                    None => return,
                }
            }
            Received::Closed => return,
        }
    }
}

struct Forwarder<'a> {
    state: &'a AppState,
    tenant_id: i64,
    channel: &'a str,
    outbox: &'a mpsc::Sender<Message>,
}

impl Forwarder<'_> {
    async fn send(&self, event: &StoredEvent) -> bool {
        let sent = self
            .outbox
            .send(Message::Text(event.json_frame().to_owned().into()))
            .await
            .is_ok();
        if sent {
            let lag = crate::now_ms().saturating_sub(event.server_time_ms);
            self.state.metrics.delivered(Duration::from_millis(lag));
        }
        sent
    }

    /// Sends stored events `from..until` (to the current end for `None`);
    /// returns the last offset covered (`from - 1` if none), or `None` if
    /// the receiver is gone.
    async fn fill(&self, from: u64, until: Option<u64>) -> Option<u64> {
        let mut next = from;
        let mut last = from.saturating_sub(1);
        loop {
            let page = match self
                .state
                .store
                .read(
                    self.tenant_id,
                    self.channel,
                    ReadRange::Offsets { from: next, until },
                    PAGE,
                )
                .await
            {
                Ok(page) => page,
                Err(error) => {
                    tracing::error!(%error, "cannot replay");
                    let _ = self
                        .outbox
                        .send(channel_error_frame(
                            ErrorCode::INTERNAL,
                            None,
                            Some(self.channel),
                            "store unavailable",
                        ))
                        .await;
                    return None;
                }
            };
            let Some(tail) = page.last() else {
                // Events below `until` that retention removed are skipped.
                if let Some(until) = until {
                    last = last.max(until.saturating_sub(1));
                }
                return Some(last);
            };
            next = tail.offset + 1;
            for event in &page {
                if !self.send(event).await {
                    return None;
                }
                last = event.offset;
            }
            if page.len() < PAGE {
                if let Some(until) = until {
                    last = last.max(until.saturating_sub(1));
                }
                return Some(last);
            }
        }
    }
}
