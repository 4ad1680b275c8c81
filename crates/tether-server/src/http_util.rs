//! What the HTTP handlers and the WebSocket upgrades share: JSON error
//! responses with stable codes, the browser origin check, authentication
//! from the request headers (a receiver key, or a signed-in session's
//! cookie with its CSRF checks, see `accounts::session`), and reading a
//! request body (after authentication, bounded in size and time).

use axum::Json;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;
use tether_proto::ErrorCode;

use crate::accounts::session::{self, Guard};
use crate::store::{KeyIdentity, StoreError};
use crate::{AppState, auth};

/// A JSON error response with a stable code.
pub(crate) fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}

/// A protocol error as an HTTP response (its name is the stable code).
pub(crate) fn wire_error(code: ErrorCode, message: &str) -> Response {
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

/// A store failure: logged, answered 500 `internal`.
pub(crate) fn store_error(error: &StoreError) -> Response {
    tracing::error!(%error, "store error");
    wire_error(ErrorCode::INTERNAL, "store unavailable")
}

/// 503 `too_many_connections`.
pub(crate) fn too_many_connections() -> Response {
    error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "too_many_connections",
        "the server is at its connection limit; retry later",
    )
}

/// Whether the request has an `Origin` header naming the server itself
/// (the host it was sent to).
pub(crate) fn is_same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let origin = origin.to_str().unwrap_or("");
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .unwrap_or("");
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|rest| !host.is_empty() && rest == host)
}

/// Refuses browsers (requests with `Origin`) from origins other than the
/// server's own and the configured ones.
pub(crate) fn check_origin(state: &AppState, headers: &HeaderMap) -> Result<(), Response> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    let same_host = is_same_origin(headers);
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

/// Who makes an API request that only reads: its receiver key
/// (`Authorization: Bearer tk_…`) or its session cookie, after the origin
/// check.
pub(crate) async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<KeyIdentity, Response> {
    authenticate_with(state, headers, Guard::Read).await
}

/// Who makes an API request that changes something: like
/// [`authenticate`], and a session cookie must come with the page's own
/// origin and its CSRF token (see `accounts::session`).
pub(crate) async fn authenticate_to_change(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<KeyIdentity, Response> {
    authenticate_with(state, headers, Guard::Change).await
}

async fn authenticate_with(
    state: &AppState,
    headers: &HeaderMap,
    guard: Guard,
) -> Result<KeyIdentity, Response> {
    check_origin(state, headers)?;
    let Some(key) = auth::bearer(headers) else {
        if let Some((identity, _)) = session::identity(state, headers, guard).await? {
            return Ok(identity);
        }
        state.metrics.auth_failure("http");
        return Err(wire_error(
            ErrorCode::UNAUTHORIZED,
            "missing receiver key (Authorization: Bearer tk_...) or session cookie",
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

/// Reads a JSON request body: at most `max_message_bytes`, within the
/// handshake timeout (a client trickling its body is cut off with 408).
/// Call it only after authenticating the request. `usage` is the message
/// of the 400 `malformed` answer.
pub(crate) async fn read_json<T: DeserializeOwned>(
    state: &AppState,
    body: Body,
    usage: &str,
) -> Result<T, Response> {
    let limits = &state.config.limits;
    let read = axum::body::to_bytes(body, limits.max_message_bytes);
    let bytes = match tokio::time::timeout(limits.handshake_timeout, read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(error)) => {
            let too_large = std::error::Error::source(&error)
                .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
            if too_large {
                state.metrics.rejected("body_too_large");
                return Err(wire_error(ErrorCode::TOO_LARGE, "request body too large"));
            }
            return Err(wire_error(ErrorCode::MALFORMED, usage));
        }
        Err(_) => {
            state.metrics.rejected("body_timeout");
            return Err(error_response(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request body did not arrive within the handshake timeout",
            ));
        }
    };
    serde_json::from_slice(&bytes).map_err(|_| wire_error(ErrorCode::MALFORMED, usage))
}
