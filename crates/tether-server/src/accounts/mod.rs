//! The customer's side of signing in: accounts with a password, sessions
//! in a cookie, several people per customer. Receiver keys stay for
//! programs and scripts; a signed-in person is accepted wherever a key is
//! (the HTTP API, the receiver WebSocket), with their role's rights.
//!
//! ```text
//!  label QR ─▶ /claim#code=… ─▶ POST /v1/accounts {email, password, claim_code}
//!                                 └▶ new tenant, owner account, device claimed, session cookie
//!  /invite#token=… ───────────▶ POST /v1/accounts {email, password, invitation}
//!                                 └▶ account in the inviting tenant with the invitation's role
//!  / (sign-in form) ──────────▶ POST /v1/session {email, password}   (rate-limited)
//!  dashboard ─────────────────▶ GET /v1/session (who, CSRF token) · DELETE /v1/session (sign out)
//!  /people (owner) ───────────▶ GET /v1/members · POST /v1/invitations · PATCH/DELETE /v1/members/{id}
//! ```
//!
//! Files: `password` (what a password is, Argon2id hashing: the parameters
//! and why), `session` (the cookie and CSRF checks, used by `http_util`
//! and the receiver endpoint), `http` (the endpoints above).
//!
//! **Rate limits** (wrong passwords, counted before the password is
//! checked, given back on success; metrics `tether_sign_ins_total{outcome}`
//! and `tether_rejected_total{kind="sign_in_account"|"sign_in_address"}`):
//! [`SIGN_IN_FAILURES_PER_ACCOUNT`] per email address and
//! [`SIGN_IN_FAILURES_PER_ADDRESS`] per client address (IPv6: per /64) in
//! [`SIGN_IN_WINDOW`]. The per-email count is kept whether or not the
//! email has an account, so the limit does not tell which emails exist.
//! Wrong claim codes while creating an account count per client address,
//! like a key's ([`CLAIM_FAILURES_PER_MINUTE`](crate::CLAIM_FAILURES_PER_MINUTE)).

pub(crate) mod http;
pub mod password;
pub(crate) mod session;

use std::net::IpAddr;
use std::time::Duration;

use crate::limits::AttemptGuard;

/// How long a sign-in lasts (no sliding renewal: sign in again after it).
pub const SESSION_LIFETIME: Duration = Duration::from_secs(14 * 24 * 3600);
/// How long an invitation link works.
pub const INVITATION_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// Wrong passwords per email address in [`SIGN_IN_WINDOW`].
pub const SIGN_IN_FAILURES_PER_ACCOUNT: u32 = 5;
/// Wrong passwords per client address in [`SIGN_IN_WINDOW`] (higher: a
/// household or office shares one address).
pub const SIGN_IN_FAILURES_PER_ADDRESS: u32 = 20;
/// The window of the sign-in limits.
pub const SIGN_IN_WINDOW: Duration = Duration::from_secs(15 * 60);

/// The accounts side's share of the server state.
#[derive(Debug)]
pub(crate) struct Accounts {
    pub(crate) passwords: password::Passwords,
    pub(crate) by_email: AttemptGuard<String>,
    pub(crate) by_address: AttemptGuard<IpAddr>,
}

impl Default for Accounts {
    fn default() -> Self {
        Accounts::new(password::PasswordCost::STANDARD)
    }
}

impl Accounts {
    /// New password hashes at `cost`.
    pub(crate) fn new(cost: password::PasswordCost) -> Self {
        Accounts {
            passwords: password::Passwords::new(cost),
            by_email: AttemptGuard::new(SIGN_IN_FAILURES_PER_ACCOUNT, SIGN_IN_WINDOW),
            by_address: AttemptGuard::new(SIGN_IN_FAILURES_PER_ADDRESS, SIGN_IN_WINDOW),
        }
    }
}
