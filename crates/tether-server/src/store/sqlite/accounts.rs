//! Accounts, memberships, sign-in sessions and invitations on SQLite: the
//! writer's account operations ([`AccountOp`], each checked before it
//! writes, so a refusal commits nothing) and the reads, then
//! [`AccountStore`] for [`SqliteStore`].

use rusqlite::{Connection, OptionalExtension, params};

use super::claim::{claimable, move_device};
use super::schema::{to_i64, to_u64};
use super::writer::WriteOp;
use super::{SqliteStore, boxed};
use crate::auth;
use crate::store::accounts::{
    AccountDone, AccountId, AccountOp, AccountStore, CreatedAccount, InvitationInfo, Joining,
    MemberInfo, NewAccount, NewInvitation, PasswordRecord, Reply, Role, SessionIdentity,
    lookup_and_hash, refuse_invitation, refuse_removal, refuse_role_change,
    sessions_kept_besides_new, stored_role,
};
use crate::store::{BoxFuture, StoreError, TenantId};

/// Applies an account operation; a database failure is the outer error.
pub(super) fn execute(op: &AccountOp, tx: &Connection) -> Result<AccountDone, StoreError> {
    Ok(match op {
        AccountOp::Create {
            account, now_ms, ..
        } => AccountDone::Created(create(tx, account, *now_ms)?),
        AccountOp::OpenSession {
            account_id,
            token,
            expires_ms,
            now_ms,
            ..
        } => AccountDone::Id(Ok(open_session(
            tx,
            *account_id,
            token,
            *expires_ms,
            *now_ms,
        )?)),
        AccountOp::EndSession { session_id, .. } => {
            end_session(tx, *session_id)?;
            AccountDone::Unit(Ok(()))
        }
        AccountOp::SetRole {
            tenant_id,
            account_id,
            role,
            ..
        } => AccountDone::Unit(set_role(tx, *tenant_id, *account_id, *role)?),
        AccountOp::Remove {
            tenant_id,
            account_id,
            ..
        } => AccountDone::Unit(remove(tx, *tenant_id, *account_id)?),
        AccountOp::Invite {
            invitation, now_ms, ..
        } => AccountDone::Id(invite(tx, invitation, *now_ms)?),
        AccountOp::RevokeInvitation {
            tenant_id,
            invitation_id,
            ..
        } => {
            let changed = tx.execute(
                "DELETE FROM invitations WHERE id = ?1 AND tenant_id = ?2 AND used_ms IS NULL",
                params![invitation_id, tenant_id],
            )?;
            AccountDone::Unit(if changed == 0 {
                Err(StoreError::NotFound)
            } else {
                Ok(())
            })
        }
    })
}

/// The tenant and what the pending invitation named by `token` offers;
/// the inner error is `NotFound` or `Expired`.
fn pending_invitation(
    conn: &Connection,
    token: &str,
    now_ms: u64,
) -> Result<Result<(TenantId, InvitationInfo), StoreError>, StoreError> {
    let Some((lookup, _)) = lookup_and_hash(token, auth::INVITATION_TOKEN_PREFIX) else {
        return Ok(Err(StoreError::NotFound));
    };
    let row = conn
        .query_row(
            "SELECT i.id, i.tenant_id, i.role, i.hash, a.email, i.created_ms, i.expires_ms
             FROM invitations i LEFT JOIN accounts a ON a.id = i.invited_by
             WHERE i.lookup = ?1 AND i.used_ms IS NULL",
            params![lookup],
            |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, Vec<u8>>(3)?,
                    row.get::<_, Option<String>>(4)?,
                    row.get::<_, i64>(5)?,
                    row.get::<_, i64>(6)?,
                ))
            },
        )
        .optional()?;
    let Some((id, tenant_id, role, hash, invited_by, created_ms, expires_ms)) = row else {
        return Ok(Err(StoreError::NotFound));
    };
    if !auth::verify_secret(token, &hash) {
        return Ok(Err(StoreError::NotFound));
    }
    if to_i64(now_ms) >= expires_ms {
        return Ok(Err(StoreError::Expired));
    }
    Ok(Ok((
        tenant_id,
        InvitationInfo {
            id,
            role: stored_role(&role)?,
            invited_by,
            created_ms: to_u64(created_ms),
            expires_ms: to_u64(expires_ms),
        },
    )))
}

fn create(
    tx: &Connection,
    account: &NewAccount,
    now_ms: u64,
) -> Result<Result<CreatedAccount, StoreError>, StoreError> {
    let Some((session_lookup, session_hash)) =
        lookup_and_hash(&account.session_token, auth::SESSION_TOKEN_PREFIX)
    else {
        return Ok(Err(StoreError::Invalid("session token".into())));
    };
    // Every check first: a refusal writes nothing.
    let taken = tx
        .prepare_cached("SELECT 1 FROM accounts WHERE email = ?1")?
        .exists(params![account.email])?;
    if taken {
        return Ok(Err(StoreError::AlreadyExists));
    }
    enum Join<'a> {
        Claim {
            device_id: String,
            tenant_name: &'a str,
        },
        Invitation {
            id: i64,
            tenant_id: TenantId,
            role: Role,
        },
    }
    let join = match &account.joining {
        Joining::ClaimCode {
            claim_code,
            tenant_name,
        } => {
            let device_id = match claimable(tx, claim_code, now_ms)? {
                Ok(device_id) => device_id,
                Err(answer) => return Ok(Err(answer)),
            };
            let name_taken = tx
                .prepare_cached("SELECT 1 FROM tenants WHERE name = ?1")?
                .exists(params![tenant_name])?;
            if name_taken {
                return Ok(Err(StoreError::AlreadyExists));
            }
            Join::Claim {
                device_id,
                tenant_name,
            }
        }
        Joining::Invitation { token } => match pending_invitation(tx, token, now_ms)? {
            Ok((tenant_id, info)) => Join::Invitation {
                id: info.id,
                tenant_id,
                role: info.role,
            },
            Err(answer) => return Ok(Err(answer)),
        },
    };
    let now = to_i64(now_ms);
    let (tenant_id, role, device) = match join {
        Join::Claim {
            device_id,
            tenant_name,
        } => {
            tx.execute(
                "INSERT INTO tenants(name, created_ms) VALUES (?1, ?2)",
                params![tenant_name, now],
            )?;
            (tx.last_insert_rowid(), Role::Owner, Some(device_id))
        }
        Join::Invitation {
            id,
            tenant_id,
            role,
        } => {
            tx.execute(
                "UPDATE invitations SET used_ms = ?2 WHERE id = ?1",
                params![id, now],
            )?;
            (tenant_id, role, None)
        }
    };
    tx.execute(
        "INSERT INTO accounts(email, password_hash, created_ms) VALUES (?1, ?2, ?3)",
        params![account.email, account.password_hash, now],
    )?;
    let account_id = tx.last_insert_rowid();
    tx.execute(
        "INSERT INTO memberships(account_id, tenant_id, role, created_ms) VALUES (?1, ?2, ?3, ?4)",
        params![account_id, tenant_id, role.as_str(), now],
    )?;
    if let Some(device_id) = &device {
        move_device(tx, device_id, tenant_id)?;
    }
    tx.execute(
        "INSERT INTO web_sessions(lookup, hash, account_id, created_ms, expires_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            session_lookup,
            session_hash.as_slice(),
            account_id,
            now,
            to_i64(account.session_expires_ms)
        ],
    )?;
    Ok(Ok(CreatedAccount {
        account_id,
        tenant_id,
        role,
        session_id: tx.last_insert_rowid(),
        device,
    }))
}

fn open_session(
    tx: &Connection,
    account_id: AccountId,
    token: &str,
    expires_ms: u64,
    now_ms: u64,
) -> Result<i64, StoreError> {
    let (lookup, hash) = lookup_and_hash(token, auth::SESSION_TOKEN_PREFIX)
        .ok_or_else(|| StoreError::Invalid("session token".into()))?;
    tx.execute(
        "DELETE FROM web_sessions WHERE account_id = ?1 AND expires_ms <= ?2",
        params![account_id, to_i64(now_ms)],
    )?;
    // Room for the new one: the oldest sessions beyond the limit end.
    let keep = sessions_kept_besides_new();
    let mut oldest = tx.prepare_cached(
        "SELECT id FROM web_sessions WHERE account_id = ?1 ORDER BY id DESC LIMIT -1 OFFSET ?2",
    )?;
    let ended: Vec<i64> = oldest
        .query_map(params![account_id, keep], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    for session_id in ended {
        end_session(tx, session_id)?;
    }
    tx.execute(
        "INSERT INTO web_sessions(lookup, hash, account_id, created_ms, expires_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            lookup,
            hash.as_slice(),
            account_id,
            to_i64(now_ms),
            to_i64(expires_ms)
        ],
    )?;
    Ok(tx.last_insert_rowid())
}

fn end_session(tx: &Connection, session_id: i64) -> Result<(), StoreError> {
    let changed = tx.execute(
        "DELETE FROM web_sessions WHERE id = ?1",
        params![session_id],
    )?;
    if changed > 0 {
        tx.execute(
            "INSERT INTO revocations(kind, subject) VALUES ('session', ?1)",
            params![session_id.to_string()],
        )?;
    }
    Ok(())
}

/// The member's role in `tenant_id`, if it is one.
fn role_in(
    tx: &Connection,
    tenant_id: TenantId,
    account_id: AccountId,
) -> Result<Option<Role>, StoreError> {
    let role: Option<String> = tx
        .query_row(
            "SELECT role FROM memberships WHERE account_id = ?1 AND tenant_id = ?2",
            params![account_id, tenant_id],
            |row| row.get(0),
        )
        .optional()?;
    role.as_deref().map(stored_role).transpose()
}

fn revoke_account(tx: &Connection, account_id: AccountId) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO revocations(kind, subject) VALUES ('account', ?1)",
        params![account_id.to_string()],
    )?;
    Ok(())
}

fn set_role(
    tx: &Connection,
    tenant_id: TenantId,
    account_id: AccountId,
    role: Role,
) -> Result<Result<(), StoreError>, StoreError> {
    if let Some(refusal) = refuse_role_change(role_in(tx, tenant_id, account_id)?, role) {
        return Ok(Err(refusal));
    }
    tx.execute(
        "UPDATE memberships SET role = ?2 WHERE account_id = ?1",
        params![account_id, role.as_str()],
    )?;
    revoke_account(tx, account_id)?;
    Ok(Ok(()))
}

fn remove(
    tx: &Connection,
    tenant_id: TenantId,
    account_id: AccountId,
) -> Result<Result<(), StoreError>, StoreError> {
    if let Some(refusal) = refuse_removal(role_in(tx, tenant_id, account_id)?) {
        return Ok(Err(refusal));
    }
    // Memberships and sessions go with the account (ON DELETE CASCADE);
    // invitations it made stay, without their author.
    tx.execute("DELETE FROM accounts WHERE id = ?1", params![account_id])?;
    revoke_account(tx, account_id)?;
    Ok(Ok(()))
}

fn invite(
    tx: &Connection,
    invitation: &NewInvitation,
    now_ms: u64,
) -> Result<Result<i64, StoreError>, StoreError> {
    let Some((lookup, hash)) = lookup_and_hash(&invitation.token, auth::INVITATION_TOKEN_PREFIX)
    else {
        return Ok(Err(StoreError::Invalid("invitation token".into())));
    };
    let now = to_i64(now_ms);
    tx.execute(
        "DELETE FROM invitations WHERE tenant_id = ?1 AND (used_ms IS NOT NULL OR expires_ms <= ?2)",
        params![invitation.tenant_id, now],
    )?;
    let pending: i64 = tx.query_row(
        "SELECT count(*) FROM invitations WHERE tenant_id = ?1",
        params![invitation.tenant_id],
        |row| row.get(0),
    )?;
    if let Some(refusal) = refuse_invitation(invitation.role, pending) {
        return Ok(Err(refusal));
    }
    tx.execute(
        "INSERT INTO invitations(tenant_id, lookup, hash, role, invited_by, created_ms, expires_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            invitation.tenant_id,
            lookup,
            hash.as_slice(),
            invitation.role.as_str(),
            invitation.invited_by,
            now,
            to_i64(invitation.expires_ms)
        ],
    )?;
    Ok(Ok(tx.last_insert_rowid()))
}

// ------------------------------------------------------------------ reads

fn password_record(conn: &Connection, email: &str) -> Result<Option<PasswordRecord>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT id, password_hash FROM accounts WHERE email = ?1",
            params![email],
            |row| {
                Ok(PasswordRecord {
                    account_id: row.get(0)?,
                    password_hash: row.get(1)?,
                })
            },
        )
        .optional()?)
}

fn authenticate_session(
    conn: &Connection,
    token: &str,
    now_ms: u64,
) -> Result<Option<SessionIdentity>, StoreError> {
    let Some((lookup, _)) = lookup_and_hash(token, auth::SESSION_TOKEN_PREFIX) else {
        return Ok(None);
    };
    let row = conn
        .query_row(
            "SELECT s.id, s.hash, s.expires_ms, a.id, a.email, m.tenant_id, m.role
             FROM web_sessions s JOIN accounts a ON a.id = s.account_id
             JOIN memberships m ON m.account_id = a.id
             WHERE s.lookup = ?1",
            params![lookup],
            |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, Vec<u8>>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, i64>(3)?,
                    row.get::<_, String>(4)?,
                    row.get::<_, i64>(5)?,
                    row.get::<_, String>(6)?,
                ))
            },
        )
        .optional()?;
    let Some((session_id, hash, expires_ms, account_id, email, tenant_id, role)) = row else {
        return Ok(None);
    };
    if !auth::verify_secret(token, &hash) || expires_ms <= to_i64(now_ms) {
        return Ok(None);
    }
    Ok(Some(SessionIdentity {
        session_id,
        account_id,
        email,
        tenant_id,
        role: stored_role(&role)?,
        expires_ms: to_u64(expires_ms),
    }))
}

fn members(conn: &Connection, tenant_id: TenantId) -> Result<Vec<MemberInfo>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT a.id, a.email, m.role, m.created_ms
         FROM memberships m JOIN accounts a ON a.id = m.account_id
         WHERE m.tenant_id = ?1
         ORDER BY m.role != 'owner', a.email",
    )?;
    let rows = statement
        .query_map(params![tenant_id], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, i64>(3)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(account_id, email, role, joined_ms)| {
            Ok(MemberInfo {
                account_id,
                email,
                role: stored_role(&role)?,
                joined_ms: to_u64(joined_ms),
            })
        })
        .collect()
}

fn invitations(
    conn: &Connection,
    tenant_id: TenantId,
    now_ms: u64,
) -> Result<Vec<InvitationInfo>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT i.id, i.role, a.email, i.created_ms, i.expires_ms
         FROM invitations i LEFT JOIN accounts a ON a.id = i.invited_by
         WHERE i.tenant_id = ?1 AND i.used_ms IS NULL AND i.expires_ms > ?2
         ORDER BY i.id DESC",
    )?;
    let rows = statement
        .query_map(params![tenant_id, to_i64(now_ms)], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, Option<String>>(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, i64>(4)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(id, role, invited_by, created_ms, expires_ms)| {
            Ok(InvitationInfo {
                id,
                role: stored_role(&role)?,
                invited_by,
                created_ms: to_u64(created_ms),
                expires_ms: to_u64(expires_ms),
            })
        })
        .collect()
}

fn inspect_invitation(
    conn: &Connection,
    token: &str,
    now_ms: u64,
) -> Result<InvitationInfo, StoreError> {
    let (_, info) = pending_invitation(conn, token, now_ms)??;
    Ok(info)
}

// ------------------------------------------------------------ the trait

impl SqliteStore {
    async fn account_write<T: Send + 'static>(
        &self,
        op: impl FnOnce(Reply<T>) -> AccountOp,
    ) -> Result<T, StoreError> {
        self.write(|reply| WriteOp::Account(op(reply))).await
    }
}

impl AccountStore for SqliteStore {
    fn create_account(
        &self,
        account: NewAccount,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<CreatedAccount, StoreError>> {
        boxed(self.account_write(move |reply| AccountOp::Create {
            account,
            now_ms,
            reply,
        }))
    }

    fn password_record(
        &self,
        email: &str,
    ) -> BoxFuture<'_, Result<Option<PasswordRecord>, StoreError>> {
        let email = email.to_owned();
        boxed(self.read_with(move |conn| password_record(conn, &email)))
    }

    fn open_web_session(
        &self,
        account_id: AccountId,
        token: &str,
        expires_ms: u64,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<i64, StoreError>> {
        let token = token.to_owned();
        boxed(self.account_write(move |reply| AccountOp::OpenSession {
            account_id,
            token,
            expires_ms,
            now_ms,
            reply,
        }))
    }

    fn authenticate_session(
        &self,
        token: &str,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<Option<SessionIdentity>, StoreError>> {
        let token = token.to_owned();
        boxed(self.read_with(move |conn| authenticate_session(conn, &token, now_ms)))
    }

    fn end_web_session(&self, session_id: i64) -> BoxFuture<'_, Result<(), StoreError>> {
        boxed(self.account_write(move |reply| AccountOp::EndSession { session_id, reply }))
    }

    fn members(&self, tenant_id: TenantId) -> BoxFuture<'_, Result<Vec<MemberInfo>, StoreError>> {
        boxed(self.read_with(move |conn| members(conn, tenant_id)))
    }

    fn set_role(
        &self,
        tenant_id: TenantId,
        account_id: AccountId,
        role: Role,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        boxed(self.account_write(move |reply| AccountOp::SetRole {
            tenant_id,
            account_id,
            role,
            reply,
        }))
    }

    fn remove_member(
        &self,
        tenant_id: TenantId,
        account_id: AccountId,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        boxed(self.account_write(move |reply| AccountOp::Remove {
            tenant_id,
            account_id,
            reply,
        }))
    }

    fn create_invitation(
        &self,
        invitation: NewInvitation,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<i64, StoreError>> {
        boxed(self.account_write(move |reply| AccountOp::Invite {
            invitation,
            now_ms,
            reply,
        }))
    }

    fn invitations(
        &self,
        tenant_id: TenantId,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<Vec<InvitationInfo>, StoreError>> {
        boxed(self.read_with(move |conn| invitations(conn, tenant_id, now_ms)))
    }

    fn revoke_invitation(
        &self,
        tenant_id: TenantId,
        invitation_id: i64,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        boxed(
            self.account_write(move |reply| AccountOp::RevokeInvitation {
                tenant_id,
                invitation_id,
                reply,
            }),
        )
    }

    fn inspect_invitation(
        &self,
        token: &str,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<InvitationInfo, StoreError>> {
        let token = token.to_owned();
        boxed(self.read_with(move |conn| inspect_invitation(conn, &token, now_ms)))
    }
}
