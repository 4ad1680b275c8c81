//! The HTTP side: the router, the JSON API for receiver keys, the status
//! page, `/healthz` and `/metrics`.
//!
//! | method and path | what |
//! | --- | --- |
//! | `GET /v1/device` | device WebSocket (see `device_endpoint`) |
//! | `GET /v1/receiver` | receiver WebSocket (see `receiver_endpoint`) |
//! | `GET /v1/me` | what the key may do: `{"tenant_id","can_command","channels"}` |
//! | `GET /v1/devices` | the key's tenant's devices with presence |
//! | `GET /v1/channels` | its channels with their offsets |
//! | `GET /v1/messages?channel=C&from=N&limit=L` | events by offset |
//! | `GET /v1/messages?channel=C&since_ms=T&until_ms=U&from=N&limit=L` | events by server time |
//! | `POST /v1/devices/{id}/commands` `{"channel":…,"payload":…}` | send a command, wait for its answer |
//! | `POST /v1/claim` `{"claim_code":"…"}` | move a device with that claim code into the key's tenant |
//! | `GET /healthz`, `GET /metrics`, `GET /status` | health, Prometheus, status page |
//! | `GET /`, `GET /assets/…` | the dashboard (see `dashboard`) |
//!
//! API requests carry `Authorization: Bearer tk_…`. Errors are
//! `{"error":{"code":"<stable name>","message":"…"}}`; the names are the
//! protocol's error names (`unauthorized`, `forbidden`, `unknown_device`,
//! `device_offline`, `command_timeout`, `invalid_field`, `internal`, …) plus
//! `not_found` and `too_many_connections`; claiming adds
//! `unknown_claim_code` (404: no such code, or already used) and
//! `claim_code_expired` (410: the code's expiry has passed).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;
use tether_proto::{ErrorCode, Payload, validate_channel, validate_device_id};

use crate::store::{KeyIdentity, ReadRange, Revocation, StoreError, UNCLAIMED_TENANT};
use crate::{AppState, CommandReply, auth, now_ms};

/// Events per page at most.
const MAX_PAGE: usize = 1000;

pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(crate::dashboard::page))
        .route("/assets/{*path}", get(crate::dashboard::asset))
        .route("/status", get(status_page))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/device", get(crate::device_endpoint::upgrade))
        .route("/v1/receiver", get(crate::receiver_endpoint::upgrade))
        .route("/v1/me", get(whoami))
        .route("/v1/devices", get(list_devices))
        .route("/v1/channels", get(list_channels))
        .route("/v1/messages", get(read_messages))
        .route("/v1/devices/{device}/commands", post(post_command))
        .route("/v1/claim", post(claim))
        .fallback(|| async {
            error_response(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
        .with_state(state)
}

/// A JSON error response with a stable code.
pub(crate) fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}

fn wire_error(code: ErrorCode, message: &str) -> Response {
    let status = match code {
        ErrorCode::UNAUTHORIZED => StatusCode::UNAUTHORIZED,
        ErrorCode::FORBIDDEN => StatusCode::FORBIDDEN,
        ErrorCode::UNKNOWN_DEVICE => StatusCode::NOT_FOUND,
        ErrorCode::DEVICE_OFFLINE => StatusCode::CONFLICT,
        ErrorCode::COMMAND_TIMEOUT => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::RATE_LIMITED => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::INTERNAL => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    error_response(status, code.name().unwrap_or("internal"), message)
}

fn store_error(error: &StoreError) -> Response {
    tracing::error!(%error, "store error");
    wire_error(ErrorCode::INTERNAL, "store unavailable")
}

/// Refuses browsers (requests with `Origin`) from origins other than the
/// server's own and the configured ones.
pub(crate) fn check_origin(state: &AppState, headers: &HeaderMap) -> Result<(), Response> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .unwrap_or("");
    let same_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|rest| !host.is_empty() && rest == host);
    let listed = state
        .config
        .allowed_origins
        .iter()
        .any(|allowed| allowed == "*" || allowed == origin);
    if same_host || listed {
        Ok(())
    } else {
        state.metrics.rejected("origin");
        tracing::warn!(origin, "refused browser origin");
        Err(wire_error(ErrorCode::FORBIDDEN, "origin not allowed"))
    }
}

async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<KeyIdentity, Response> {
    check_origin(state, headers)?;
    let Some(key) = auth::bearer(headers) else {
        state.metrics.auth_failure("http");
        return Err(wire_error(
            ErrorCode::UNAUTHORIZED,
            "missing receiver key (Authorization: Bearer tk_...)",
        ));
    };
    match state.store.authenticate_key(key).await {
        Ok(Some(identity)) => Ok(identity),
        Ok(None) => {
            state.metrics.auth_failure("http");
            tracing::warn!("HTTP API refused: wrong key");
            Err(wire_error(ErrorCode::UNAUTHORIZED, "wrong receiver key"))
        }
        Err(error) => Err(store_error(&error)),
    }
}

/// Sends a command for a receiver key: checks what the key may do, that
/// the device is the key's tenant's, and that it is online.
pub(crate) async fn command(
    state: &AppState,
    identity: &KeyIdentity,
    device: &str,
    channel: String,
    payload: String,
) -> Result<CommandReply, (ErrorCode, &'static str)> {
    if !identity.can_command {
        return Err((ErrorCode::FORBIDDEN, "this key is read-only"));
    }
    if !identity.channels.allows(&channel) {
        return Err((ErrorCode::FORBIDDEN, "this key may not use that channel"));
    }
    match state.store.device_tenant(device).await {
        Ok(Some(tenant)) if tenant == identity.tenant_id => {}
        // Another tenant's device looks exactly like a missing one.
        Ok(_) => return Err((ErrorCode::UNKNOWN_DEVICE, "no such device")),
        Err(_) => return Err((ErrorCode::INTERNAL, "store unavailable")),
    }
    state
        .devices
        .send_command(
            device,
            channel,
            payload,
            state.config.limits.command_timeout,
        )
        .await
        .map_err(|code| {
            let message = match code {
                ErrorCode::COMMAND_TIMEOUT => "the device did not answer in time",
                ErrorCode::TOO_LARGE => {
                    "the command is longer than the device can receive (its Hello.max_downlink_len); it was not sent"
                }
                ErrorCode::INVALID_FIELD => "the device's result is not valid JSON",
                ErrorCode::DEVICE_OFFLINE => "the device is offline",
                _ => "the command could not be sent",
            };
            (code, message)
        })
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
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

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

async fn status_page(State(state): State<Arc<AppState>>) -> Html<String> {
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
async fn whoami(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
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

async fn list_devices(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let identity = match authenticate(&state, &headers).await {
        Ok(identity) => identity,
        Err(response) => return response,
    };
    match state.store.list_devices(identity.tenant_id, now_ms()).await {
        Ok(devices) => Json(json!({ "devices": devices })).into_response(),
        Err(error) => store_error(&error),
    }
}

async fn list_channels(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
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
struct MessagesQuery {
    channel: String,
    from: Option<u64>,
    limit: Option<usize>,
    since_ms: Option<u64>,
    until_ms: Option<u64>,
}

async fn read_messages(
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

async fn post_command(
    State(state): State<Arc<AppState>>,
    Path(device): Path<String>,
    headers: HeaderMap,
    body: Result<Json<CommandBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let identity = match authenticate(&state, &headers).await {
        Ok(identity) => identity,
        Err(response) => return response,
    };
    let Ok(Json(body)) = body else {
        return wire_error(
            ErrorCode::MALFORMED,
            "body: {\"channel\": \"<name>\", \"payload\": <JSON>}",
        );
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
    match command(&state, &identity, &device, body.channel, payload).await {
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

async fn claim(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<ClaimBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let identity = match authenticate(&state, &headers).await {
        Ok(identity) => identity,
        Err(response) => return response,
    };
    if !identity.can_command {
        return wire_error(ErrorCode::FORBIDDEN, "claiming needs a read+command key");
    }
    let Ok(Json(body)) = body else {
        return wire_error(
            ErrorCode::MALFORMED,
            "body: {\"claim_code\": \"XXXX-XXXX-XXXX\"}",
        );
    };
    let now = std::time::Instant::now();
    if !state.claim_guard.allowed(identity.key_id, now) {
        state.metrics.rejected("claim_guessing");
        return wire_error(
            ErrorCode::RATE_LIMITED,
            "too many wrong claim codes; try again in a minute",
        );
    }
    match state
        .store
        .claim(identity.tenant_id, &body.claim_code, crate::now_ms())
        .await
    {
        Ok(device) => {
            // Close the device's connections of the old tenant now, not when
            // the revocation poller next runs; a connection made after the
            // claim belongs to the new tenant and stays (see
            // `Revocation::Moved`).
            let _ = state.revocations.send(Revocation::Moved(device.clone()));
            Json(json!({ "device": device })).into_response()
        }
        Err(StoreError::NotFound) => {
            state.claim_guard.failed(identity.key_id, now);
            error_response(
                StatusCode::NOT_FOUND,
                "unknown_claim_code",
                "no unclaimed device has that claim code",
            )
        }
        // A real code (not a guess): not counted against the key.
        Err(StoreError::Expired) => error_response(
            StatusCode::GONE,
            "claim_code_expired",
            "this claim code has expired; ask for a new one",
        ),
        Err(error) => store_error(&error),
    }
}
