//! The session cookie and CSRF protection: what the HTTP API and the
//! receiver WebSocket use to accept a signed-in person as they accept a
//! receiver key. Below the endpoints (like `http_util`, which calls it).
//!
//! **The cookie** carries the session token (`ts_…`, 256 random bits; the
//! store keeps only its hash):
//! `tether_session=ts_…; Path=/; Max-Age=…; HttpOnly; SameSite=Strict`,
//! plus `Secure` and the `__Host-` name prefix when the server is reached
//! over HTTPS (TLS here, or a `public_url` of `https://…` behind a proxy).
//!
//! - `HttpOnly`: page scripts cannot read it (an injected script cannot
//!   carry it away).
//! - `SameSite=Strict` (not `Lax`): every authenticated request is made by
//!   the dashboard's own scripts (`fetch`, `WebSocket`) after the page has
//!   loaded, which are same-site requests, and every page is static and
//!   public. So nothing is lost when a top-level navigation from another
//!   site (a QR code, an invitation in a mail) arrives without the cookie,
//!   and no request started by another site ever carries it.
//!
//! **CSRF**: a request authenticated by the cookie that changes something
//! (POST, PATCH, PUT, DELETE) and every cookie-authenticated WebSocket
//! upgrade must also come from the server's own origin (`Origin` header
//! present and equal; `allowed_origins` does not apply to cookies) and
//! carry the session's CSRF token: the `X-CSRF-Token` header (HTTP), or
//! the subprotocol `tether-csrf.<token>` (WebSocket: browsers cannot set
//! headers there). The token is `hex(SHA-256("tether-csrf\0" ‖ session
//! token))`: bound to the session, computable without storing anything,
//! and it does not reveal the session token. The dashboard reads it from
//! `GET /v1/session`, which another site cannot read.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tether_proto::ErrorCode;

use crate::AppState;
use crate::auth::SESSION_TOKEN_PREFIX;
use crate::http_util::{is_same_origin, store_error, wire_error};
use crate::store::{KeyIdentity, SessionIdentity};

/// The cookie's name over plain HTTP.
pub(crate) const COOKIE: &str = "tether_session";
/// The cookie's name over HTTPS (the `__Host-` prefix: Secure, Path=/, no
/// Domain, so no other host can set or shadow it).
pub(crate) const SECURE_COOKIE: &str = "__Host-tether_session";
/// The request header that carries the CSRF token.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";
/// Prefix of the WebSocket subprotocol that carries the CSRF token.
pub(crate) const CSRF_SUBPROTOCOL_PREFIX: &str = "tether-csrf.";

/// Whether the server is reached over HTTPS (cookies get `Secure`).
pub(crate) fn secure(state: &AppState) -> bool {
    state.config.base_url().starts_with("https://")
}

fn cookie_name(state: &AppState) -> &'static str {
    if secure(state) { SECURE_COOKIE } else { COOKIE }
}

/// The session token in the request's `Cookie` headers, if any.
pub(crate) fn token<'a>(state: &AppState, headers: &'a HeaderMap) -> Option<&'a str> {
    cookie(headers, cookie_name(state)).filter(|value| value.starts_with(SESSION_TOKEN_PREFIX))
}

/// The first value of cookie `name` in the request's `Cookie` headers
/// (`a=1; b=2`, RFC 6265 §5.4).
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(key, value)| (key.trim() == name).then_some(value.trim()))
}

/// `Set-Cookie` for a new session that lasts `max_age_seconds`.
pub(crate) fn set_cookie(state: &AppState, token: &str, max_age_seconds: u64) -> HeaderValue {
    let secure = if secure(state) { "; Secure" } else { "" };
    let text = format!(
        "{}={token}; Path=/; Max-Age={max_age_seconds}; HttpOnly; SameSite=Strict{secure}",
        cookie_name(state)
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `Set-Cookie` that removes the session cookie.
pub(crate) fn clear_cookie(state: &AppState) -> HeaderValue {
    let secure = if secure(state) { "; Secure" } else { "" };
    let text = format!(
        "{}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{secure}",
        cookie_name(state)
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The CSRF token of a session token.
pub(crate) fn csrf_token(session_token: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"tether-csrf\0");
    hasher.update(session_token.as_bytes());
    hex::encode(hasher.finalize())
}

/// Whether `presented` is the CSRF token of `session_token` (constant
/// time).
pub(crate) fn csrf_matches(session_token: &str, presented: &str) -> bool {
    csrf_token(session_token)
        .as_bytes()
        .ct_eq(presented.as_bytes())
        .into()
}

/// What a cookie-authenticated request must show besides the cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Guard {
    /// A read: the cookie is enough.
    Read,
    /// A change: own origin and the `X-CSRF-Token` header.
    Change,
    /// A WebSocket upgrade: own origin and the `tether-csrf.` subprotocol.
    Upgrade,
}

/// The CSRF token a WebSocket upgrade offers as a subprotocol.
pub(crate) fn csrf_subprotocol(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .find_map(|protocol| protocol.strip_prefix(CSRF_SUBPROTOCOL_PREFIX))
}

/// The signed-in session of a request (`Ok(None)`: no session cookie),
/// with the CSRF checks `guard` asks for. A cookie that names no valid
/// session is 401 `unauthorized`; a failed CSRF check is 403 `forbidden`.
pub(crate) async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    guard: Guard,
) -> Result<Option<(SessionIdentity, String)>, Response> {
    let Some(token) = token(state, headers) else {
        return Ok(None);
    };
    if guard != Guard::Read {
        let presented = match guard {
            Guard::Upgrade => csrf_subprotocol(headers),
            _ => headers
                .get(CSRF_HEADER)
                .and_then(|value| value.to_str().ok()),
        };
        let same_origin = is_same_origin(headers);
        if !same_origin || !presented.is_some_and(|presented| csrf_matches(token, presented)) {
            state.metrics.rejected("csrf");
            tracing::warn!(
                same_origin,
                "refused: session request without its CSRF token"
            );
            return Err(wire_error(
                ErrorCode::FORBIDDEN,
                "a signed-in request that changes something needs the page's own origin \
                 and its CSRF token: reload the page and try again",
            ));
        }
    }
    match state
        .store
        .accounts()
        .authenticate_session(token, crate::now_ms())
        .await
    {
        Ok(Some(session)) => Ok(Some((session, token.to_owned()))),
        Ok(None) => {
            state.metrics.auth_failure("session");
            Err(wire_error(
                ErrorCode::UNAUTHORIZED,
                "your session has ended: sign in again",
            ))
        }
        Err(error) => Err(store_error(&error)),
    }
}

/// Like [`authenticate`], as the receiver identity the endpoints use.
pub(crate) async fn identity(
    state: &AppState,
    headers: &HeaderMap,
    guard: Guard,
) -> Result<Option<(KeyIdentity, String)>, Response> {
    Ok(authenticate(state, headers, guard)
        .await?
        .map(|(session, token)| (KeyIdentity::of_session(session), token)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_tokens_are_bound_to_their_session() {
        let session = crate::auth::generate_secret(SESSION_TOKEN_PREFIX);
        let other = crate::auth::generate_secret(SESSION_TOKEN_PREFIX);
        let token = csrf_token(&session);
        assert_eq!(token.len(), 64);
        assert!(!token.contains(&session[3..]));
        assert!(csrf_matches(&session, &token));
        assert!(!csrf_matches(&other, &token));
        assert!(!csrf_matches(&session, ""));
        assert!(!csrf_matches(&session, &token[..63]));
    }

    proptest::proptest! {
        #[test]
        fn cookie_headers_of_any_text_are_read_without_panic(
            before in "[ -~]{0,60}",
            after in "[ -~]{0,60}",
            token in "[0-9a-f]{64}",
        ) {
            let mut headers = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_str(&before) {
                headers.insert(header::COOKIE, value.clone());
                headers.insert(header::SEC_WEBSOCKET_PROTOCOL, value);
                let _ = cookie(&headers, COOKIE);
                let _ = csrf_subprotocol(&headers);
            }
            // A well-formed pair among others is found, whatever is
            // around it (other cookies, stray separators).
            let junk = |text: &str| text.replace([';', '='], " ").replace(COOKIE, "x");
            let line = format!("{}=1; {COOKIE}=ts_{token}; {}=2", junk(&before).trim(), junk(&after).trim());
            if let Ok(value) = HeaderValue::from_str(&line) {
                headers.insert(header::COOKIE, value);
                let expected = format!("ts_{token}");
                proptest::prop_assert_eq!(cookie(&headers, COOKIE), Some(expected.as_str()));
            }
        }
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; tether_sessionx=no"),
        );
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("__Host-tether_session=ts_s; tether_session=ts_p"),
        );
        assert_eq!(cookie(&headers, COOKIE), Some("ts_p"));
        assert_eq!(cookie(&headers, SECURE_COOKIE), Some("ts_s"));
        assert_eq!(cookie(&headers, "missing"), None);
    }

    #[test]
    fn the_csrf_subprotocol_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("tether.v1, tether-csrf.abc"),
        );
        assert_eq!(csrf_subprotocol(&headers), Some("abc"));
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("tether.v1"),
        );
        assert_eq!(csrf_subprotocol(&headers), None);
    }
}
