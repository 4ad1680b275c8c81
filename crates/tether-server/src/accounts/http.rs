//! The accounts endpoints (routes in `router`):
//!
//! | method and path | who | what |
//! | --- | --- | --- |
//! | `POST /v1/accounts` `{"email","password","claim_code"}` | anyone with a label | a new customer: tenant, owner account, device claimed, signed in |
//! | `POST /v1/accounts` `{"email","password","invitation"}` | anyone with an invitation link | an account in the inviting customer, signed in |
//! | `POST /v1/session` `{"email","password"}` | anyone | sign in (rate-limited) |
//! | `GET /v1/session` | signed in | `{"email","role","tenant_id","can_command","csrf_token","expires_ms"}` |
//! | `DELETE /v1/session` | signed in | sign out: the session ends on the server, its sockets close |
//! | `GET /v1/members` | signed in | `{"members":[…],"invitations":[…]}` (invitations: owner only) |
//! | `POST /v1/invitations` `{"role"}` | owner | `{"id","token","path","link","role","expires_ms"}` |
//! | `DELETE /v1/invitations/{id}` | owner | withdraw a pending invitation |
//! | `POST /v1/invitations/inspect` `{"token"}` | anyone with the link | what it offers: `{"role","invited_by","expires_ms"}` |
//! | `PATCH /v1/members/{account_id}` `{"role"}` | owner | `member` or `read_only`; the member's sockets close and reopen with the new rights |
//! | `DELETE /v1/members/{account_id}` | owner | remove: the account and its sessions end |
//!
//! Requests that change something with a session cookie need the page's
//! origin and the CSRF token (`session`); the unauthenticated ones (sign
//! in, create an account) refuse other origins (login CSRF). Everything is
//! scoped to the session's own tenant: another tenant's member or
//! invitation is indistinguishable from a missing one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tether_proto::ErrorCode;

use super::password::{check_new_password, normalize_email};
use super::session::{self, Guard};
use super::{INVITATION_LIFETIME, SESSION_LIFETIME, SIGN_IN_WINDOW};
use crate::auth::{self, INVITATION_TOKEN_PREFIX, SESSION_TOKEN_PREFIX};
use crate::http_util::{error_response, is_same_origin, read_json, store_error, wire_error};
use crate::limits::{ClaimSubject, address_subject};
use crate::store::accounts::{Joining, NewAccount, NewInvitation, Role, SessionIdentity};
use crate::store::{Revocation, StoreError};
use crate::{AppState, now_ms};

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Requests that create a session refuse other sites' pages (a page of
/// another origin could otherwise sign a visitor in as someone else);
/// scripts send no `Origin`.
fn own_origin_or_none(state: &AppState, headers: &HeaderMap) -> Result<(), Response> {
    if headers.get(header::ORIGIN).is_none() || is_same_origin(headers) {
        return Ok(());
    }
    state.metrics.rejected("origin");
    Err(wire_error(
        ErrorCode::FORBIDDEN,
        "sign in on the dashboard's own page",
    ))
}

/// The session's description, as `GET /v1/session` answers it.
fn session_json(session: &SessionIdentity, token: &str) -> serde_json::Value {
    json!({
        "email": session.email,
        "role": session.role,
        "tenant_id": session.tenant_id,
        "can_command": session.role.can_command(),
        "csrf_token": session::csrf_token(token),
        "expires_ms": session.expires_ms,
    })
}

/// A response that signs in: the session's JSON and its cookie.
fn signed_in(
    state: &AppState,
    session: &SessionIdentity,
    token: &str,
    extra: serde_json::Value,
) -> Response {
    let mut body = session_json(session, token);
    if let (Some(body), serde_json::Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    let mut response = Json(body).into_response();
    let cookie = session::set_cookie(state, token, SESSION_LIFETIME.as_secs());
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// 401 for requests that need a signed-in person.
fn sign_in_first() -> Response {
    wire_error(
        ErrorCode::UNAUTHORIZED,
        "sign in first (this needs a signed-in account, not a receiver key)",
    )
}

/// The signed-in session of a request (with the CSRF checks of `guard`).
async fn signed_in_session(
    state: &AppState,
    headers: &HeaderMap,
    guard: Guard,
) -> Result<(SessionIdentity, String), Response> {
    match session::authenticate(state, headers, guard).await? {
        Some(found) => Ok(found),
        None => Err(sign_in_first()),
    }
}

/// The signed-in owner of a request.
async fn owner_session(
    state: &AppState,
    headers: &HeaderMap,
    guard: Guard,
) -> Result<SessionIdentity, Response> {
    let (session, _) = signed_in_session(state, headers, guard).await?;
    if session.role.manages_people() {
        Ok(session)
    } else {
        Err(wire_error(
            ErrorCode::FORBIDDEN,
            "only the account owner can invite, change or remove people",
        ))
    }
}

// ---------------------------------------------------------------- sessions

/// `GET /v1/session`.
pub(crate) async fn current_session(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Response {
    match signed_in_session(&state, &headers, Guard::Read).await {
        Ok((session, token)) => {
            let mut response = Json(session_json(&session, &token)).into_response();
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(response) => response,
    }
}

#[derive(Debug, Deserialize)]
struct SignInBody {
    email: String,
    password: String,
}

/// `POST /v1/session`: sign in with email and password.
pub(crate) async fn sign_in(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(response) = own_origin_or_none(&state, &headers) {
        return response;
    }
    let body: SignInBody = match read_json(
        &state,
        body,
        "body: {\"email\": \"…\", \"password\": \"…\"}",
    )
    .await
    {
        Ok(body) => body,
        Err(response) => return response,
    };
    let email = match normalize_email(&body.email) {
        Ok(email) => email,
        Err(reason) => return wire_error(ErrorCode::INVALID_FIELD, reason.0),
    };
    let now = Instant::now();
    // Counted before the password is checked, in one step with the check:
    // concurrent guesses cannot slip past the limits.
    let Some(by_address) = state
        .accounts
        .by_address
        .try_begin(address_subject(peer.ip()), now)
    else {
        state.metrics.sign_in("rate_limited_address");
        state.metrics.rejected("sign_in_address");
        return rate_limited(
            "too many wrong passwords from your network: wait 15 minutes, then try again",
        );
    };
    let Some(by_email) = state.accounts.by_email.try_begin(email.clone(), now) else {
        state.metrics.sign_in("rate_limited_account");
        state.metrics.rejected("sign_in_account");
        return rate_limited(
            "too many wrong passwords for this account: wait 15 minutes, then try again",
        );
    };
    let record = match state.store.accounts().password_record(&email).await {
        Ok(record) => record,
        Err(error) => return store_error(&error),
    };
    let account_id = record.as_ref().map(|record| record.account_id);
    let matches = state
        .accounts
        .passwords
        .verify(body.password, record.map(|record| record.password_hash))
        .await;
    let Some(account_id) = account_id.filter(|_| matches) else {
        state.metrics.sign_in("wrong_password");
        state.metrics.auth_failure("password");
        tracing::warn!("sign-in refused: wrong email or password");
        return error_response(
            StatusCode::UNAUTHORIZED,
            "wrong_password",
            "wrong email or password",
        );
    };
    by_address.refund();
    by_email.refund();
    let token = auth::generate_secret(SESSION_TOKEN_PREFIX);
    let now_ms = now_ms();
    let expires_ms = now_ms.saturating_add(millis(SESSION_LIFETIME));
    let accounts = state.store.accounts();
    if let Err(error) = accounts
        .open_web_session(account_id, &token, expires_ms, now_ms)
        .await
    {
        return store_error(&error);
    }
    match accounts.authenticate_session(&token, now_ms).await {
        Ok(Some(session)) => {
            state.metrics.sign_in("ok");
            signed_in(&state, &session, &token, json!({}))
        }
        // The account lost its membership meanwhile.
        Ok(None) => error_response(
            StatusCode::UNAUTHORIZED,
            "wrong_password",
            "wrong email or password",
        ),
        Err(error) => store_error(&error),
    }
}

fn rate_limited(message: &str) -> Response {
    let mut response = wire_error(ErrorCode::RATE_LIMITED, message);
    if let Ok(seconds) = HeaderValue::from_str(&SIGN_IN_WINDOW.as_secs().to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, seconds);
    }
    response
}

/// `DELETE /v1/session`: sign out. The session ends on the server (its
/// cookie no longer works anywhere) and its WebSockets close.
pub(crate) async fn sign_out(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let (session, _) = match signed_in_session(&state, &headers, Guard::Change).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    if let Err(error) = state
        .store
        .accounts()
        .end_web_session(session.session_id)
        .await
    {
        return store_error(&error);
    }
    let _ = state
        .revocations
        .send(Revocation::Session(session.session_id));
    let mut response = Json(json!({ "signed_out": true })).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session::clear_cookie(&state));
    response
}

// ---------------------------------------------------------------- accounts

#[derive(Debug, Deserialize)]
struct NewAccountBody {
    email: String,
    password: String,
    claim_code: Option<String>,
    invitation: Option<String>,
}

/// `POST /v1/accounts`: a new account, with a claim code (a new customer)
/// or an invitation (joining one), signed in at once.
pub(crate) async fn create_account(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(response) = own_origin_or_none(&state, &headers) {
        return response;
    }
    let body: NewAccountBody = match read_json(
        &state,
        body,
        "body: {\"email\": \"…\", \"password\": \"…\", \"claim_code\": \"XXXX-XXXX-XXXX\"} \
         or {…, \"invitation\": \"ti_…\"}",
    )
    .await
    {
        Ok(body) => body,
        Err(response) => return response,
    };
    let email = match normalize_email(&body.email) {
        Ok(email) => email,
        Err(reason) => return wire_error(ErrorCode::INVALID_FIELD, reason.0),
    };
    if let Err(reason) = check_new_password(&body.password) {
        return wire_error(ErrorCode::INVALID_FIELD, reason.0);
    }
    let joining = match (body.claim_code, body.invitation) {
        (Some(claim_code), None) => Joining::ClaimCode {
            claim_code,
            tenant_name: format!("customer-{}", &auth::generate_secret("")[..16]),
        },
        (None, Some(token)) => Joining::Invitation { token },
        _ => {
            return wire_error(
                ErrorCode::INVALID_FIELD,
                "an account needs a device's claim code or an invitation (one of them)",
            );
        }
    };
    // Wrong claim codes count against the address, as a key's do.
    let claim_attempt = match &joining {
        Joining::ClaimCode { .. } => {
            let subject = ClaimSubject::Address(address_subject(peer.ip()));
            match state.claim_guard.try_begin(subject, Instant::now()) {
                Some(attempt) => Some(attempt),
                None => {
                    state.metrics.rejected("claim_guessing");
                    return wire_error(
                        ErrorCode::RATE_LIMITED,
                        "too many wrong claim codes; try again in a minute",
                    );
                }
            }
        }
        Joining::Invitation { .. } => None,
    };
    let Some(password_hash) = state.accounts.passwords.hash(body.password).await else {
        return wire_error(ErrorCode::INTERNAL, "the password could not be hashed");
    };
    let token = auth::generate_secret(SESSION_TOKEN_PREFIX);
    let now_ms = now_ms();
    let account = NewAccount {
        email,
        password_hash,
        joining,
        session_token: token.clone(),
        session_expires_ms: now_ms.saturating_add(millis(SESSION_LIFETIME)),
    };
    let by_claim = claim_attempt.is_some();
    let result = state.store.accounts().create_account(account, now_ms).await;
    if let Some(attempt) = claim_attempt
        && !matches!(result, Err(StoreError::NotFound))
    {
        attempt.refund();
    }
    let created = match result {
        Ok(created) => created,
        Err(StoreError::AlreadyExists) => {
            return error_response(
                StatusCode::CONFLICT,
                "account_exists",
                "an account with this email exists already: sign in instead",
            );
        }
        Err(StoreError::NotFound) if by_claim => {
            return error_response(
                StatusCode::NOT_FOUND,
                "unknown_claim_code",
                "no unclaimed device has that claim code",
            );
        }
        Err(StoreError::Expired) if by_claim => {
            return error_response(
                StatusCode::GONE,
                "claim_code_expired",
                "this claim code has expired; ask for a new one",
            );
        }
        Err(StoreError::NotFound) => {
            return error_response(
                StatusCode::NOT_FOUND,
                "unknown_invitation",
                "this invitation does not exist or was used already",
            );
        }
        Err(StoreError::Expired) => {
            return error_response(
                StatusCode::GONE,
                "invitation_expired",
                "this invitation has expired; ask for a new one",
            );
        }
        Err(error) => return store_error(&error),
    };
    if let Some(device) = &created.device {
        // As for any claim: the device's connections of the old tenant
        // close now.
        let _ = state.revocations.send(Revocation::Moved(device.clone()));
    }
    match state
        .store
        .accounts()
        .authenticate_session(&token, now_ms)
        .await
    {
        Ok(Some(session)) => {
            tracing::info!(
                account = created.account_id,
                tenant = created.tenant_id,
                role = %created.role,
                "account created"
            );
            signed_in(
                &state,
                &session,
                &token,
                json!({ "device": created.device }),
            )
        }
        Ok(None) => wire_error(ErrorCode::INTERNAL, "the new session is missing"),
        Err(error) => store_error(&error),
    }
}

// ------------------------------------------------------------------ people

/// `GET /v1/members`: the customer's people (and, for the owner, the
/// pending invitations).
pub(crate) async fn list_members(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Response {
    let (session, _) = match signed_in_session(&state, &headers, Guard::Read).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let accounts = state.store.accounts();
    let members = match accounts.members(session.tenant_id).await {
        Ok(members) => members,
        Err(error) => return store_error(&error),
    };
    let invitations = if session.role.manages_people() {
        match accounts.invitations(session.tenant_id, now_ms()).await {
            Ok(invitations) => invitations,
            Err(error) => return store_error(&error),
        }
    } else {
        Vec::new()
    };
    Json(json!({
        "you": session.account_id,
        "members": members,
        "invitations": invitations,
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
struct RoleBody {
    role: String,
}

/// The role a request names, if it may be given to a member.
fn member_role(name: &str) -> Result<Role, Response> {
    match Role::parse(name) {
        Some(role @ (Role::Member | Role::ReadOnly)) => Ok(role),
        _ => Err(wire_error(
            ErrorCode::INVALID_FIELD,
            "role: \"member\" (read and command) or \"read_only\"",
        )),
    }
}

fn no_such_member() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such member; reload the page",
    )
}

/// `PATCH /v1/members/{account_id}` `{"role"}`.
pub(crate) async fn change_member(
    State(state): State<Arc<AppState>>,
    Path(account_id): Path<i64>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let owner = match owner_session(&state, &headers, Guard::Change).await {
        Ok(owner) => owner,
        Err(response) => return response,
    };
    let body: RoleBody = match read_json(&state, body, "body: {\"role\": \"read_only\"}").await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let role = match member_role(&body.role) {
        Ok(role) => role,
        Err(response) => return response,
    };
    match state
        .store
        .accounts()
        .set_role(owner.tenant_id, account_id, role)
        .await
    {
        Ok(()) => {
            // Their open sockets were made with the old rights: they close
            // (a browser reconnects with the new ones).
            let _ = state.revocations.send(Revocation::Account(account_id));
            Json(json!({ "account_id": account_id, "role": role })).into_response()
        }
        Err(StoreError::NotFound) => no_such_member(),
        Err(StoreError::Invalid(reason)) => wire_error(ErrorCode::FORBIDDEN, &reason),
        Err(error) => store_error(&error),
    }
}

/// `DELETE /v1/members/{account_id}`.
pub(crate) async fn remove_member(
    State(state): State<Arc<AppState>>,
    Path(account_id): Path<i64>,
    headers: HeaderMap,
) -> Response {
    let owner = match owner_session(&state, &headers, Guard::Change).await {
        Ok(owner) => owner,
        Err(response) => return response,
    };
    match state
        .store
        .accounts()
        .remove_member(owner.tenant_id, account_id)
        .await
    {
        Ok(()) => {
            let _ = state.revocations.send(Revocation::Account(account_id));
            Json(json!({ "removed": account_id })).into_response()
        }
        Err(StoreError::NotFound) => no_such_member(),
        Err(StoreError::Invalid(reason)) => wire_error(ErrorCode::FORBIDDEN, &reason),
        Err(error) => store_error(&error),
    }
}

/// `POST /v1/invitations` `{"role"}`: a single-use link that expires.
pub(crate) async fn invite(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let owner = match owner_session(&state, &headers, Guard::Change).await {
        Ok(owner) => owner,
        Err(response) => return response,
    };
    let body: RoleBody = match read_json(&state, body, "body: {\"role\": \"member\"}").await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let role = match member_role(&body.role) {
        Ok(role) => role,
        Err(response) => return response,
    };
    let token = auth::generate_secret(INVITATION_TOKEN_PREFIX);
    let now_ms = now_ms();
    let expires_ms = now_ms.saturating_add(millis(INVITATION_LIFETIME));
    let invitation = NewInvitation {
        tenant_id: owner.tenant_id,
        invited_by: owner.account_id,
        token: token.clone(),
        role,
        expires_ms,
    };
    match state
        .store
        .accounts()
        .create_invitation(invitation, now_ms)
        .await
    {
        Ok(id) => {
            // The fragment is not sent to servers, so the token stays out
            // of access logs on the way in.
            let path = format!("/invite#token={token}");
            Json(json!({
                "id": id,
                "token": token,
                "path": path,
                "link": format!("{}{path}", state.config.base_url()),
                "role": role,
                "expires_ms": expires_ms,
            }))
            .into_response()
        }
        Err(StoreError::Invalid(reason)) => wire_error(ErrorCode::RATE_LIMITED, &reason),
        Err(error) => store_error(&error),
    }
}

/// `DELETE /v1/invitations/{id}`.
pub(crate) async fn withdraw_invitation(
    State(state): State<Arc<AppState>>,
    Path(invitation_id): Path<i64>,
    headers: HeaderMap,
) -> Response {
    let owner = match owner_session(&state, &headers, Guard::Change).await {
        Ok(owner) => owner,
        Err(response) => return response,
    };
    match state
        .store
        .accounts()
        .revoke_invitation(owner.tenant_id, invitation_id)
        .await
    {
        Ok(()) => Json(json!({ "withdrawn": invitation_id })).into_response(),
        Err(StoreError::NotFound) => error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such pending invitation; reload the page",
        ),
        Err(error) => store_error(&error),
    }
}

#[derive(Debug, Deserialize)]
struct InspectBody {
    token: String,
}

/// `POST /v1/invitations/inspect` `{"token"}`: what an invitation link
/// offers, before an account is made with it.
pub(crate) async fn inspect_invitation(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(response) = own_origin_or_none(&state, &headers) {
        return response;
    }
    let body: InspectBody = match read_json(&state, body, "body: {\"token\": \"ti_…\"}").await {
        Ok(body) => body,
        Err(response) => return response,
    };
    match state
        .store
        .accounts()
        .inspect_invitation(&body.token, now_ms())
        .await
    {
        Ok(info) => Json(json!({
            "role": info.role,
            "invited_by": info.invited_by,
            "expires_ms": info.expires_ms,
        }))
        .into_response(),
        Err(StoreError::NotFound) => error_response(
            StatusCode::NOT_FOUND,
            "unknown_invitation",
            "this invitation does not exist or was used already",
        ),
        Err(StoreError::Expired) => error_response(
            StatusCode::GONE,
            "invitation_expired",
            "this invitation has expired; ask for a new one",
        ),
        Err(error) => store_error(&error),
    }
}
