//! What the store keeps for people who sign in (the customer's side):
//! accounts, their membership of one tenant (a customer) with a role,
//! sign-in sessions, and invitations. The policy (password hashing, rate
//! limits, who may do what) is in `crate::accounts`; this is the data.
//!
//! ```text
//!  tenants 1 ──< memberships >── 1 accounts 1 ──< web_sessions
//!     1                                │
//!     └──< invitations (single use, expiring) ── accepted by ─┘
//! ```
//!
//! An account belongs to exactly one tenant: it is made either with a claim
//! code (a new tenant, the account its owner, the device claimed into it) or
//! with an invitation (the inviting tenant, the invitation's role), in one
//! transaction either way. Secrets (session tokens, invitation tokens) are
//! stored like receiver keys: a lookup prefix and the SHA-256 of the whole
//! token, compared in constant time. Passwords arrive already hashed (a PHC
//! string); the store never sees one in clear.

use core::fmt;

use serde::Serialize;

use tokio::sync::oneshot;

use super::{BoxFuture, StoreError, TenantId};

/// An account's id.
pub type AccountId = i64;

/// Sign-in sessions one account keeps at most; signing in once more ends
/// the oldest.
pub const MAX_SESSIONS_PER_ACCOUNT: usize = 20;

/// Pending invitations one tenant may have at once.
pub const MAX_PENDING_INVITATIONS: usize = 100;

/// What a member of a customer may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Made the account with the device's claim code: everything, and
    /// invites, changes and removes the others.
    Owner,
    /// Reads, sends commands, claims devices.
    Member,
    /// Reads only: no commands, no claims.
    ReadOnly,
}

impl Role {
    /// The stored (and JSON) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Member => "member",
            Role::ReadOnly => "read_only",
        }
    }

    /// The role called `name`, if there is one.
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "owner" => Some(Role::Owner),
            "member" => Some(Role::Member),
            "read_only" => Some(Role::ReadOnly),
            _ => None,
        }
    }

    /// Whether the role may send commands and claim devices.
    pub fn can_command(self) -> bool {
        !matches!(self, Role::ReadOnly)
    }

    /// Whether the role may invite, change and remove people.
    pub fn manages_people(self) -> bool {
        matches!(self, Role::Owner)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A valid, unexpired sign-in session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionIdentity {
    /// The session's id (for sign-out and revocation).
    pub session_id: i64,
    /// The signed-in account.
    pub account_id: AccountId,
    /// Its email address.
    pub email: String,
    /// The tenant it belongs to.
    pub tenant_id: TenantId,
    /// What it may do there.
    pub role: Role,
    /// When the session ends (Unix ms).
    pub expires_ms: u64,
}

/// How a new account joins a customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Joining {
    /// With a device's claim code: a new tenant called `tenant_name` is
    /// made, the account is its owner and the device is claimed into it.
    ClaimCode {
        /// The code from the label, as typed.
        claim_code: String,
        /// The new tenant's name (unique).
        tenant_name: String,
    },
    /// With an invitation token: the account joins the inviting tenant
    /// with the invitation's role; the invitation is used up.
    Invitation {
        /// The token from the invitation link.
        token: String,
    },
}

/// An account to create, how it joins, and its first session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccount {
    /// Normalised email address (unique).
    pub email: String,
    /// The password's PHC string (Argon2id).
    pub password_hash: String,
    /// How it joins a customer.
    pub joining: Joining,
    /// The first session's secret token.
    pub session_token: String,
    /// When that session ends (Unix ms).
    pub session_expires_ms: u64,
}

/// What [`AccountStore::create_account`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedAccount {
    /// The new account.
    pub account_id: AccountId,
    /// Its tenant (new for a claim code, the inviting one otherwise).
    pub tenant_id: TenantId,
    /// Its role there.
    pub role: Role,
    /// Its first session.
    pub session_id: i64,
    /// The device claimed with the claim code.
    pub device: Option<String>,
}

/// What a password sign-in checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordRecord {
    /// The account.
    pub account_id: AccountId,
    /// The password's PHC string.
    pub password_hash: String,
}

/// A member of a customer, as the people page lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberInfo {
    /// The account.
    pub account_id: AccountId,
    /// Its email address.
    pub email: String,
    /// Its role.
    pub role: Role,
    /// When it joined (Unix ms).
    pub joined_ms: u64,
}

/// An invitation to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInvitation {
    /// The inviting tenant.
    pub tenant_id: TenantId,
    /// The inviting account.
    pub invited_by: AccountId,
    /// The secret token of the link.
    pub token: String,
    /// The role the invited person gets ([`Role::Member`] or
    /// [`Role::ReadOnly`]).
    pub role: Role,
    /// When the link stops working (Unix ms).
    pub expires_ms: u64,
}

/// A pending invitation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvitationInfo {
    /// Its id (to withdraw it).
    pub id: i64,
    /// The role it gives.
    pub role: Role,
    /// The inviting account's email, if it still exists.
    pub invited_by: Option<String>,
    /// When it was made (Unix ms).
    pub created_ms: u64,
    /// When it stops working (Unix ms).
    pub expires_ms: u64,
}

/// The accounts part of a [`Store`](super::Store) (reached with
/// [`Store::accounts`](super::Store::accounts)). Writes go through the
/// store's writer like every other write; each is one transaction.
pub trait AccountStore: Send + Sync {
    /// Creates an account, joins it to a customer (see [`Joining`]) and
    /// opens its first session, all in one transaction.
    /// [`StoreError::AlreadyExists`]: the email has an account (or the
    /// tenant name is taken); [`StoreError::NotFound`]: no such (unused)
    /// claim code or invitation; [`StoreError::Expired`]: the code or
    /// invitation has expired. A failure makes nothing.
    fn create_account(
        &self,
        account: NewAccount,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<CreatedAccount, StoreError>>;
    /// The password hash of the account with this (normalised) email.
    fn password_record(
        &self,
        email: &str,
    ) -> BoxFuture<'_, Result<Option<PasswordRecord>, StoreError>>;
    /// Opens a session for an account (after its password was checked);
    /// ends its expired sessions and, past
    /// [`MAX_SESSIONS_PER_ACCOUNT`], its oldest ones. Returns the id.
    fn open_web_session(
        &self,
        account_id: AccountId,
        token: &str,
        expires_ms: u64,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<i64, StoreError>>;
    /// The session of this token, if it exists, has not expired at
    /// `now_ms`, and its account is still a member.
    fn authenticate_session(
        &self,
        token: &str,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<Option<SessionIdentity>, StoreError>>;
    /// Ends a session (sign-out) and records the revocation, so its
    /// connections close.
    fn end_web_session(&self, session_id: i64) -> BoxFuture<'_, Result<(), StoreError>>;
    /// The members of a tenant, owner first, then by email.
    fn members(&self, tenant_id: TenantId) -> BoxFuture<'_, Result<Vec<MemberInfo>, StoreError>>;
    /// Changes a member's role ([`Role::Member`] or [`Role::ReadOnly`]);
    /// records an account revocation, so connections made with the old
    /// rights close. [`StoreError::NotFound`]: not a member of this tenant;
    /// [`StoreError::Invalid`]: the owner, or the owner role.
    fn set_role(
        &self,
        tenant_id: TenantId,
        account_id: AccountId,
        role: Role,
    ) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Removes a member: the account, its sessions (their connections
    /// close) and its membership go. [`StoreError::NotFound`]: not a member
    /// of this tenant; [`StoreError::Invalid`]: the owner.
    fn remove_member(
        &self,
        tenant_id: TenantId,
        account_id: AccountId,
    ) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Records an invitation; drops the tenant's used and expired ones.
    /// [`StoreError::Invalid`]: the owner role, or the tenant has
    /// [`MAX_PENDING_INVITATIONS`] pending.
    fn create_invitation(
        &self,
        invitation: NewInvitation,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<i64, StoreError>>;
    /// A tenant's pending (unused, unexpired) invitations, newest first.
    fn invitations(
        &self,
        tenant_id: TenantId,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<Vec<InvitationInfo>, StoreError>>;
    /// Withdraws a pending invitation of this tenant.
    /// [`StoreError::NotFound`]: none with this id in this tenant.
    fn revoke_invitation(
        &self,
        tenant_id: TenantId,
        invitation_id: i64,
    ) -> BoxFuture<'_, Result<(), StoreError>>;
    /// What the invitation with this token offers.
    /// [`StoreError::NotFound`]: no such token, used or withdrawn;
    /// [`StoreError::Expired`]: past its expiry.
    fn inspect_invitation(
        &self,
        token: &str,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<InvitationInfo, StoreError>>;
}

// ------------------------------------------------- the writers' operations

/// What both stores' writers do with an account write: the operation, its
/// answer, and the checks made before anything is written (so a refusal
/// commits nothing, on either database).
pub(crate) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// An account operation for the writer.
pub(crate) enum AccountOp {
    Create {
        account: NewAccount,
        now_ms: u64,
        reply: Reply<CreatedAccount>,
    },
    OpenSession {
        account_id: AccountId,
        token: String,
        expires_ms: u64,
        now_ms: u64,
        reply: Reply<i64>,
    },
    EndSession {
        session_id: i64,
        reply: Reply<()>,
    },
    SetRole {
        tenant_id: TenantId,
        account_id: AccountId,
        role: Role,
        reply: Reply<()>,
    },
    Remove {
        tenant_id: TenantId,
        account_id: AccountId,
        reply: Reply<()>,
    },
    Invite {
        invitation: NewInvitation,
        now_ms: u64,
        reply: Reply<i64>,
    },
    RevokeInvitation {
        tenant_id: TenantId,
        invitation_id: i64,
        reply: Reply<()>,
    },
}

/// What an account operation answers (its inner error is a refusal that
/// wrote nothing).
pub(crate) enum AccountDone {
    Created(Result<CreatedAccount, StoreError>),
    Id(Result<i64, StoreError>),
    Unit(Result<(), StoreError>),
}

impl AccountOp {
    /// Answers with what the committed operation did.
    pub(crate) fn answer(self, done: AccountDone) {
        // A dropped receiver (the request went away) is not an error.
        match (self, done) {
            (AccountOp::Create { reply, .. }, AccountDone::Created(answer)) => {
                drop(reply.send(answer));
            }
            (
                AccountOp::OpenSession { reply, .. } | AccountOp::Invite { reply, .. },
                AccountDone::Id(answer),
            ) => drop(reply.send(answer)),
            (
                AccountOp::EndSession { reply, .. }
                | AccountOp::SetRole { reply, .. }
                | AccountOp::Remove { reply, .. }
                | AccountOp::RevokeInvitation { reply, .. },
                AccountDone::Unit(answer),
            ) => drop(reply.send(answer)),
            (op, _) => op.fail(&StoreError::Invalid("mismatched reply".into())),
        }
    }

    /// Answers with `error` (the operation did not happen).
    pub(crate) fn fail(self, error: &StoreError) {
        let error = error.clone();
        match self {
            AccountOp::Create { reply, .. } => drop(reply.send(Err(error))),
            AccountOp::OpenSession { reply, .. } | AccountOp::Invite { reply, .. } => {
                drop(reply.send(Err(error)));
            }
            AccountOp::EndSession { reply, .. }
            | AccountOp::SetRole { reply, .. }
            | AccountOp::Remove { reply, .. }
            | AccountOp::RevokeInvitation { reply, .. } => drop(reply.send(Err(error))),
        }
    }
}

/// The refusal of changing a member whose current role is `current`
/// (`None`: not a member of the tenant) to `role`, if it is refused.
pub(crate) fn refuse_role_change(current: Option<Role>, role: Role) -> Option<StoreError> {
    match current {
        None => Some(StoreError::NotFound),
        Some(Role::Owner) => Some(StoreError::Invalid("the owner's role cannot change".into())),
        Some(_) if role == Role::Owner => Some(StoreError::Invalid(
            "the owner role is given by an invitation of the administrator only".into(),
        )),
        Some(_) => None,
    }
}

/// The refusal of removing a member whose role is `current`, if refused.
pub(crate) fn refuse_removal(current: Option<Role>) -> Option<StoreError> {
    match current {
        None => Some(StoreError::NotFound),
        Some(Role::Owner) => Some(StoreError::Invalid("the owner cannot be removed".into())),
        Some(_) => None,
    }
}

/// The refusal of a new invitation with `role` while the tenant has
/// `pending` ones, if refused.
pub(crate) fn refuse_invitation(role: Role, pending: i64) -> Option<StoreError> {
    if role == Role::Owner {
        return Some(StoreError::Invalid(
            "an invitation cannot make an owner".into(),
        ));
    }
    if usize::try_from(pending).unwrap_or(usize::MAX) >= MAX_PENDING_INVITATIONS {
        return Some(StoreError::Invalid(format!(
            "{MAX_PENDING_INVITATIONS} invitations are pending; withdraw some first"
        )));
    }
    None
}

/// A role as stored; an unknown name is a damaged database.
pub(crate) fn stored_role(name: &str) -> Result<Role, StoreError> {
    Role::parse(name).ok_or_else(|| StoreError::Database(format!("unknown role {name:?}")))
}

/// The stored lookup part and hash of a secret token with `prefix`, or
/// `None` if `token` is not one.
pub(crate) fn lookup_and_hash<'a>(token: &'a str, prefix: &str) -> Option<(&'a str, [u8; 32])> {
    crate::auth::lookup_part(token, prefix).map(|lookup| (lookup, crate::auth::hash_secret(token)))
}

/// The sessions an account keeps besides a new one: the oldest beyond this
/// end when it opens.
pub(crate) fn sessions_kept_besides_new() -> i64 {
    i64::try_from(MAX_SESSIONS_PER_ACCOUNT.saturating_sub(1)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_and_say_what_they_may_do() {
        for role in [Role::Owner, Role::Member, Role::ReadOnly] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
            assert_eq!(
                serde_json::to_value(role).ok(),
                Some(serde_json::json!(role.as_str()))
            );
        }
        assert_eq!(Role::parse("admin"), None);
        assert!(Role::Owner.can_command() && Role::Member.can_command());
        assert!(!Role::ReadOnly.can_command());
        assert!(Role::Owner.manages_people());
        assert!(!Role::Member.manages_people() && !Role::ReadOnly.manages_people());
    }
}
