//! The HTTP JSON API for receiver keys, the status page, `/healthz` and
//! `/metrics` (the routes are in `router`).
//!
//! | method and path | what |
//! | --- | --- |
//! | `GET /v1/me` | what the key may do: `{"tenant_id","can_command","channels"}` |
//! | `GET /v1/devices` | the key's tenant's devices with presence |
//! | `GET /v1/channels` | its channels with their offsets |
//! | `GET /v1/messages?channel=C&from=N&limit=L` | events by offset |
//! | `GET /v1/messages?channel=C&since_ms=T&until_ms=U&from=N&limit=L` | events by server time |
//! | `POST /v1/devices/{id}/commands` `{"channel":…,"payload":…}` | send a command, wait for its answer |
//! | `POST /v1/claim` `{"claim_code":"…"}` | move a device with that claim code into the key's tenant |
//! | `GET /healthz`, `GET /metrics`, `GET /status` | health, Prometheus, status page |
//!
//! API requests carry `Authorization: Bearer tk_…`; a request body is read
//! only after the key is checked, at most `max_message_bytes` of it, within
//! the handshake timeout (408 `request_timeout` otherwise). Errors are
//! `{"error":{"code":"<stable name>","message":"…"}}`; the names are the
//! protocol's error names (`unauthorized`, `forbidden`, `unknown_device`,
//! `device_offline`, `command_timeout`, `invalid_field`, `internal`, …) plus
//! `not_found` and `too_many_connections`; claiming adds
//! `unknown_claim_code` (404: no such code, or already used) and
//! `claim_code_expired` (410: the code's expiry has passed).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;
use tether_proto::{ErrorCode, Payload, validate_channel, validate_device_id};

use crate::http_util::{
    authenticate, authenticate_to_change, error_response, read_json, store_error, wire_error,
};
use crate::limits::ClaimSubject;
use crate::store::{ReadRange, Revocation, StoreError, UNCLAIMED_TENANT};
use crate::{AppState, now_ms};

/// Events per page at most.
const MAX_PAGE: usize = 1000;

pub(crate) async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    match state
        .store
        .channel_bounds(UNCLAIMED_TENANT, "healthz")
        .await
    {
        Ok(_) => Json(json!({ "status": "ok" })).into_response(),
        Err(error) => {
            tracing::error!(%error, "health check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "store unavailable" })),
            )
                .into_response()
        }
    }
}

pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    state.metrics.live_channels(state.broker.live_channels());
    if let Some(stats) = state.broker.cluster_stats() {
        state.metrics.nats(stats);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

pub(crate) async fn status_page(State(state): State<Arc<AppState>>) -> Html<String> {
    let devices = state.metrics.open_connections("device");
    let receivers = state.metrics.open_connections("receiver");
    Html(format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>tether relay</title></head><body>\
<h1>tether relay server</h1>\
<p>Status: running. Connected now: {devices} device(s), {receivers} receiver(s).</p>\
<ul><li>Devices connect to <code>{url}/v1/device</code> (WebSocket, <code>Authorization: Bearer td_…</code>).</li>\
<li>Receivers connect to <code>{url}/v1/receiver</code> (WebSocket, JSON).</li>\
<li>HTTP API: <code>/v1/devices</code>, <code>/v1/channels</code>, <code>/v1/messages</code> \
(<code>Authorization: Bearer tk_…</code>).</li>\
<li><a href=\"/metrics\">/metrics</a> · <a href=\"/healthz\">/healthz</a></li></ul>\
</body></html>\n",
        url = state.config.base_url().replace("http", "ws"),
    ))
}

/// `GET /v1/me`: what the presented key may do (the dashboard hides the
/// command form of read-only keys).
pub(crate) async fn whoami(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    match authenticate(&state, &headers).await {
        Ok(identity) => Json(json!({
            "tenant_id": identity.tenant_id,
            "can_command": identity.can_command,
            "channels": identity.channels,
        }))
        .into_response(),
        Err(response) => response,
    }
}

pub(crate) async fn list_devices(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Response {
    let identity = match authenticate(&state, &headers).await {
        Ok(identity) => identity,
        Err(response) => return response,
    };
    match state.store.list_devices(identity.tenant_id, now_ms()).await {
        Ok(devices) => Json(json!({ "devices": devices })).into_response(),
        Err(error) => store_error(&error),
    }
}

pub(crate) async fn list_channels(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Response {
    let identity = match authenticate(&state, &headers).await {
        Ok(identity) => identity,
        Err(response) => return response,
    };
    match state.store.list_channels(identity.tenant_id).await {
        Ok(channels) => {
            let channels: Vec<_> = channels
                .into_iter()
                .filter(|channel| identity.channels.allows(&channel.name))
                .collect();
            Json(json!({ "channels": channels })).into_response()
        }
        Err(error) => store_error(&error),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct MessagesQuery {
    channel: String,
    from: Option<u64>,
    limit: Option<usize>,
    since_ms: Option<u64>,
    until_ms: Option<u64>,
}

pub(crate) async fn read_messages(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<MessagesQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let identity = match authenticate(&state, &headers).await {
        Ok(identity) => identity,
        Err(response) => return response,
    };
    let Ok(Query(query)) = query else {
        return wire_error(
            ErrorCode::INVALID_FIELD,
            "query: channel=<name>&from=<offset>&limit=<n> or since_ms/until_ms",
        );
    };
    if validate_channel(&query.channel).is_err() {
        return wire_error(ErrorCode::INVALID_FIELD, "invalid channel name");
    }
    if !identity.channels.allows(&query.channel) {
        return wire_error(ErrorCode::FORBIDDEN, "this key may not read that channel");
    }
    let limit = query.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let from = query.from.unwrap_or(0);
    let range = if query.since_ms.is_some() || query.until_ms.is_some() {
        ReadRange::Time {
            since_ms: query.since_ms.unwrap_or(0),
            until_ms: query.until_ms,
            from,
        }
    } else {
        ReadRange::Offsets { from, until: None }
    };
    let bounds = match state
        .store
        .channel_bounds(identity.tenant_id, &query.channel)
        .await
    {
        Ok(bounds) => bounds,
        Err(error) => return store_error(&error),
    };
    match state
        .store
        .read(identity.tenant_id, &query.channel, range, limit)
        .await
    {
        Ok(events) => {
            // `next`: pass as `from` for the following page (null: no more
            // events now).
            let next = (events.len() == limit)
                .then(|| events.last().map(|event| event.offset + 1))
                .flatten();
            let messages: Vec<&crate::store::StoredEvent> =
                events.iter().map(AsRef::as_ref).collect();
            // Serialized straight to text: each stored payload goes out as
            // the bytes it was stored as, never through a `serde_json::Value`
            // (which would re-parse it).
            Json(MessagesPage {
                channel: &query.channel,
                first_offset: bounds.first_offset,
                next_offset: bounds.next_offset,
                messages,
                next,
            })
            .into_response()
        }
        Err(error) => store_error(&error),
    }
}

/// A page of `GET /v1/messages`.
#[derive(Serialize)]
struct MessagesPage<'a> {
    channel: &'a str,
    first_offset: u64,
    next_offset: u64,
    messages: Vec<&'a crate::store::StoredEvent>,
    next: Option<u64>,
}

/// The answer of `POST /v1/devices/{id}/commands`: the device's result as
/// the JSON text it sent (checked when it arrived).
#[derive(Serialize)]
struct CommandAnswer<'a> {
    status: tether_proto::CommandStatus,
    result: &'a RawValue,
}

#[derive(Debug, Deserialize)]
struct CommandBody {
    channel: String,
    payload: Option<Box<RawValue>>,
}

pub(crate) async fn post_command(
    State(state): State<Arc<AppState>>,
    Path(device): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let identity = match authenticate_to_change(&state, &headers).await {
        Ok(identity) => identity,
        Err(response) => return response,
    };
    let body: CommandBody = match read_json(
        &state,
        body,
        "body: {\"channel\": \"<name>\", \"payload\": <JSON>}",
    )
    .await
    {
        Ok(body) => body,
        Err(response) => return response,
    };
    if validate_device_id(&device).is_err() {
        return wire_error(ErrorCode::UNKNOWN_DEVICE, "no such device");
    }
    if validate_channel(&body.channel).is_err() {
        return wire_error(ErrorCode::INVALID_FIELD, "invalid channel name");
    }
    let payload = body
        .payload
        .map_or_else(|| "null".to_owned(), |raw| raw.get().to_owned());
    if payload.len() > tether_proto::MAX_PAYLOAD_LEN {
        return wire_error(ErrorCode::TOO_LARGE, "payload too large");
    }
    if let Err(error) = Payload::from_json_str(&payload).check() {
        return wire_error(ErrorCode::INVALID_FIELD, error.reason());
    }
    match crate::commands::command(&state, &identity, &device, body.channel, payload).await {
        Ok(reply) => match serde_json::from_str::<&RawValue>(&reply.result) {
            Ok(result) => Json(CommandAnswer {
                status: reply.status,
                result,
            })
            .into_response(),
            // Checked when it arrived; never here.
            Err(_) => wire_error(ErrorCode::INTERNAL, "the device's result is not JSON"),
        },
        Err((code, message)) => wire_error(code, message),
    }
}

#[derive(Debug, Deserialize)]
struct ClaimBody {
    claim_code: String,
}

pub(crate) async fn claim(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let identity = match authenticate_to_change(&state, &headers).await {
        Ok(identity) => identity,
        Err(response) => return response,
    };
    if !identity.can_command {
        return wire_error(ErrorCode::FORBIDDEN, "claiming needs a read+command key");
    }
    let body: ClaimBody =
        match read_json(&state, body, "body: {\"claim_code\": \"XXXX-XXXX-XXXX\"}").await {
            Ok(body) => body,
            Err(response) => return response,
        };
    // Counted before the store is asked, in one step with the check:
    // concurrent guesses cannot slip past the limit.
    let subject = match &identity.session {
        Some(session) => ClaimSubject::Account(session.account_id),
        None => ClaimSubject::Key(identity.key_id),
    };
    let Some(attempt) = state
        .claim_guard
        .try_begin(subject, std::time::Instant::now())
    else {
        state.metrics.rejected("claim_guessing");
        return wire_error(
            ErrorCode::RATE_LIMITED,
            "too many wrong claim codes; try again in a minute",
        );
    };
    let result = state
        .store
        .claim(identity.tenant_id, &body.claim_code, crate::now_ms())
        .await;
    // Only a wrong code counts against the key.
    if !matches!(result, Err(StoreError::NotFound)) {
        attempt.refund();
    }
    match result {
        Ok(device) => {
            // Close the device's connections of the old tenant now, not when
            // the revocation poller next runs; a connection made after the
            // claim belongs to the new tenant and stays (see
            // `Revocation::Moved`).
            let _ = state.revocations.send(Revocation::Moved(device.clone()));
            Json(json!({ "device": device })).into_response()
        }
        Err(StoreError::NotFound) => error_response(
            StatusCode::NOT_FOUND,
            "unknown_claim_code",
            "no unclaimed device has that claim code",
        ),
        // A real code (not a guess): not counted against the key.
        Err(StoreError::Expired) => error_response(
            StatusCode::GONE,
            "claim_code_expired",
            "this claim code has expired; ask for a new one",
        ),
        Err(error) => store_error(&error),
    }
}
