//! Accounts, memberships, sign-in sessions and invitations on PostgreSQL:
//! the writer's account operations ([`AccountOp`], each checked before it
//! writes, so a refusal commits nothing; [`execute`] runs in the writer's
//! batch transaction like a claim) and the reads on the pool, then
//! [`AccountStore`] for [`PgStore`]. The same data and answers as the
//! SQLite store's `accounts.rs`, held by the shared store suite.
//!
//! Across nodes: the checks (email free, claim code unused, invitation
//! pending) read inside the writing transaction, and the rows they depend
//! on are locked (`FOR UPDATE`) or protected by a unique constraint, so two
//! nodes cannot both use one claim code or one invitation; the loser's
//! unique violation fails its operation alone (the batch is retried with
//! each operation in a savepoint).

use deadpool_postgres::{GenericClient, Object};

use super::schema::db_error;
use super::writer::{claimable, move_device, record_revocation, to_i64, to_u64};
use super::{PgStore, boxed};
use crate::auth;
use crate::store::accounts::{
    AccountDone, AccountId, AccountOp, AccountStore, CreatedAccount, InvitationInfo, Joining,
    MemberInfo, NewAccount, NewInvitation, PasswordRecord, Role, SessionIdentity, lookup_and_hash,
    refuse_invitation, refuse_removal, refuse_role_change, sessions_kept_besides_new, stored_role,
};
use crate::store::{BoxFuture, StoreError, TenantId};

type DbResult<T> = Result<T, tokio_postgres::Error>;

/// Applies an account operation in the writer's transaction; a database
/// failure is the outer error, a refusal (nothing written) the inner one.
pub(super) async fn execute<C: GenericClient + Sync>(
    tx: &C,
    op: &AccountOp,
) -> DbResult<AccountDone> {
    Ok(match op {
        AccountOp::Create {
            account, now_ms, ..
        } => AccountDone::Created(create(tx, account, *now_ms).await?),
        AccountOp::OpenSession {
            account_id,
            token,
            expires_ms,
            now_ms,
            ..
        } => AccountDone::Id(open_session(tx, *account_id, token, *expires_ms, *now_ms).await?),
        AccountOp::EndSession { session_id, .. } => {
            end_session(tx, *session_id).await?;
            AccountDone::Unit(Ok(()))
        }
        AccountOp::SetRole {
            tenant_id,
            account_id,
            role,
            ..
        } => {
            let current = role_in(tx, *tenant_id, *account_id).await?;
            AccountDone::Unit(match refuse_role_change(current, *role) {
                Some(refusal) => Err(refusal),
                None => {
                    tx.execute(
                        "UPDATE memberships SET role = $2 WHERE account_id = $1",
                        &[account_id, &role.as_str()],
                    )
                    .await?;
                    record_revocation(tx, "account", &account_id.to_string()).await?;
                    Ok(())
                }
            })
        }
        AccountOp::Remove {
            tenant_id,
            account_id,
            ..
        } => {
            let current = role_in(tx, *tenant_id, *account_id).await?;
            AccountDone::Unit(match refuse_removal(current) {
                Some(refusal) => Err(refusal),
                None => {
                    // Memberships and sessions go with the account (ON
                    // DELETE CASCADE); invitations it made stay, without
                    // their author.
                    tx.execute("DELETE FROM accounts WHERE id = $1", &[account_id])
                        .await?;
                    record_revocation(tx, "account", &account_id.to_string()).await?;
                    Ok(())
                }
            })
        }
        AccountOp::Invite {
            invitation, now_ms, ..
        } => AccountDone::Id(invite(tx, invitation, *now_ms).await?),
        AccountOp::RevokeInvitation {
            tenant_id,
            invitation_id,
            ..
        } => {
            let changed = tx
                .execute(
                    "DELETE FROM invitations WHERE id = $1 AND tenant_id = $2 AND used_ms IS NULL",
                    &[invitation_id, tenant_id],
                )
                .await?;
            AccountDone::Unit(if changed == 0 {
                Err(StoreError::NotFound)
            } else {
                Ok(())
            })
        }
    })
}

/// The tenant and what the pending invitation named by `token` offers
/// (its row locked when `lock`); the inner error is `NotFound` or
/// `Expired`.
async fn pending_invitation<C: GenericClient + Sync>(
    client: &C,
    token: &str,
    now_ms: u64,
    lock: bool,
) -> DbResult<Result<(TenantId, InvitationInfo), StoreError>> {
    let Some((lookup, _)) = lookup_and_hash(token, auth::INVITATION_TOKEN_PREFIX) else {
        return Ok(Err(StoreError::NotFound));
    };
    let query = if lock {
        "SELECT i.id, i.tenant_id, i.role, i.hash, a.email, i.created_ms, i.expires_ms
         FROM invitations i LEFT JOIN accounts a ON a.id = i.invited_by
         WHERE i.lookup = $1 AND i.used_ms IS NULL FOR UPDATE OF i"
    } else {
        "SELECT i.id, i.tenant_id, i.role, i.hash, a.email, i.created_ms, i.expires_ms
         FROM invitations i LEFT JOIN accounts a ON a.id = i.invited_by
         WHERE i.lookup = $1 AND i.used_ms IS NULL"
    };
    let statement = client.prepare_cached(query).await?;
    let Some(row) = client.query_opt(&statement, &[&lookup]).await? else {
        return Ok(Err(StoreError::NotFound));
    };
    let hash: Vec<u8> = row.get(3);
    if !auth::verify_secret(token, &hash) {
        return Ok(Err(StoreError::NotFound));
    }
    let expires_ms: i64 = row.get(6);
    if to_i64(now_ms) >= expires_ms {
        return Ok(Err(StoreError::Expired));
    }
    let role = match stored_role(row.get(2)) {
        Ok(role) => role,
        Err(error) => return Ok(Err(error)),
    };
    Ok(Ok((
        row.get(1),
        InvitationInfo {
            id: row.get(0),
            role,
            invited_by: row.get(4),
            created_ms: to_u64(row.get(5)),
            expires_ms: to_u64(expires_ms),
        },
    )))
}

async fn create<C: GenericClient + Sync>(
    tx: &C,
    account: &NewAccount,
    now_ms: u64,
) -> DbResult<Result<CreatedAccount, StoreError>> {
    let Some((session_lookup, session_hash)) =
        lookup_and_hash(&account.session_token, auth::SESSION_TOKEN_PREFIX)
    else {
        return Ok(Err(StoreError::Invalid("session token".into())));
    };
    // Every check first: a refusal writes nothing.
    let taken = tx
        .query_opt("SELECT 1 FROM accounts WHERE email = $1", &[&account.email])
        .await?
        .is_some();
    if taken {
        return Ok(Err(StoreError::AlreadyExists));
    }
    let now = to_i64(now_ms);
    let (tenant_id, role, device) = match &account.joining {
        Joining::ClaimCode {
            claim_code,
            tenant_name,
        } => {
            let device_id = match claimable(tx, claim_code, now_ms).await? {
                Ok(device_id) => device_id,
                Err(answer) => return Ok(Err(answer)),
            };
            let name_taken = tx
                .query_opt("SELECT 1 FROM tenants WHERE name = $1", &[tenant_name])
                .await?
                .is_some();
            if name_taken {
                return Ok(Err(StoreError::AlreadyExists));
            }
            let row = tx
                .query_one(
                    "INSERT INTO tenants(name, created_ms) VALUES ($1, $2) RETURNING id",
                    &[tenant_name, &now],
                )
                .await?;
            (row.get::<_, i64>(0), Role::Owner, Some(device_id))
        }
        Joining::Invitation { token } => match pending_invitation(tx, token, now_ms, true).await? {
            Ok((tenant_id, info)) => {
                tx.execute(
                    "UPDATE invitations SET used_ms = $2 WHERE id = $1",
                    &[&info.id, &now],
                )
                .await?;
                (tenant_id, info.role, None)
            }
            Err(answer) => return Ok(Err(answer)),
        },
    };
    let account_id: AccountId = tx
        .query_one(
            "INSERT INTO accounts(email, password_hash, created_ms) VALUES ($1, $2, $3)
             RETURNING id",
            &[&account.email, &account.password_hash, &now],
        )
        .await?
        .get(0);
    tx.execute(
        "INSERT INTO memberships(account_id, tenant_id, role, created_ms) VALUES ($1, $2, $3, $4)",
        &[&account_id, &tenant_id, &role.as_str(), &now],
    )
    .await?;
    if let Some(device_id) = &device {
        move_device(tx, device_id, tenant_id).await?;
    }
    let session_id: i64 = tx
        .query_one(
            "INSERT INTO web_sessions(lookup, hash, account_id, created_ms, expires_ms)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
            &[
                &session_lookup,
                &session_hash.as_slice(),
                &account_id,
                &now,
                &to_i64(account.session_expires_ms),
            ],
        )
        .await?
        .get(0);
    Ok(Ok(CreatedAccount {
        account_id,
        tenant_id,
        role,
        session_id,
        device,
    }))
}

async fn open_session<C: GenericClient + Sync>(
    tx: &C,
    account_id: AccountId,
    token: &str,
    expires_ms: u64,
    now_ms: u64,
) -> DbResult<Result<i64, StoreError>> {
    let Some((lookup, hash)) = lookup_and_hash(token, auth::SESSION_TOKEN_PREFIX) else {
        return Ok(Err(StoreError::Invalid("session token".into())));
    };
    tx.execute(
        "DELETE FROM web_sessions WHERE account_id = $1 AND expires_ms <= $2",
        &[&account_id, &to_i64(now_ms)],
    )
    .await?;
    // Room for the new one: the oldest sessions beyond the limit end.
    let ended = tx
        .query(
            "SELECT id FROM web_sessions WHERE account_id = $1 ORDER BY id DESC OFFSET $2",
            &[&account_id, &sessions_kept_besides_new()],
        )
        .await?;
    for row in ended {
        end_session(tx, row.get(0)).await?;
    }
    let row = tx
        .query_one(
            "INSERT INTO web_sessions(lookup, hash, account_id, created_ms, expires_ms)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
            &[
                &lookup,
                &hash.as_slice(),
                &account_id,
                &to_i64(now_ms),
                &to_i64(expires_ms),
            ],
        )
        .await?;
    Ok(Ok(row.get(0)))
}

async fn end_session<C: GenericClient + Sync>(tx: &C, session_id: i64) -> DbResult<()> {
    let changed = tx
        .execute("DELETE FROM web_sessions WHERE id = $1", &[&session_id])
        .await?;
    if changed > 0 {
        record_revocation(tx, "session", &session_id.to_string()).await?;
    }
    Ok(())
}

/// The member's role in `tenant_id`, if it is one (its row locked).
async fn role_in<C: GenericClient + Sync>(
    tx: &C,
    tenant_id: TenantId,
    account_id: AccountId,
) -> DbResult<Option<Role>> {
    let row = tx
        .query_opt(
            "SELECT role FROM memberships WHERE account_id = $1 AND tenant_id = $2 FOR UPDATE",
            &[&account_id, &tenant_id],
        )
        .await?;
    // An unknown stored role is treated as no membership: nothing changes.
    Ok(row.and_then(|row| Role::parse(row.get(0))))
}

async fn invite<C: GenericClient + Sync>(
    tx: &C,
    invitation: &NewInvitation,
    now_ms: u64,
) -> DbResult<Result<i64, StoreError>> {
    let Some((lookup, hash)) = lookup_and_hash(&invitation.token, auth::INVITATION_TOKEN_PREFIX)
    else {
        return Ok(Err(StoreError::Invalid("invitation token".into())));
    };
    let now = to_i64(now_ms);
    // The tenant's row lock orders its invitations across nodes, so the
    // pending count below holds until commit.
    tx.execute(
        "SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE",
        &[&invitation.tenant_id],
    )
    .await?;
    tx.execute(
        "DELETE FROM invitations WHERE tenant_id = $1 AND (used_ms IS NOT NULL OR expires_ms <= $2)",
        &[&invitation.tenant_id, &now],
    )
    .await?;
    let pending: i64 = tx
        .query_one(
            "SELECT count(*) FROM invitations WHERE tenant_id = $1",
            &[&invitation.tenant_id],
        )
        .await?
        .get(0);
    if let Some(refusal) = refuse_invitation(invitation.role, pending) {
        return Ok(Err(refusal));
    }
    let row = tx
        .query_one(
            "INSERT INTO invitations(tenant_id, lookup, hash, role, invited_by, created_ms,
                                     expires_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            &[
                &invitation.tenant_id,
                &lookup,
                &hash.as_slice(),
                &invitation.role.as_str(),
                &invitation.invited_by,
                &now,
                &to_i64(invitation.expires_ms),
            ],
        )
        .await?;
    Ok(Ok(row.get(0)))
}

// ------------------------------------------------------------------ reads

async fn password_record(
    client: &Object,
    email: &str,
) -> Result<Option<PasswordRecord>, StoreError> {
    let row = client
        .query_opt(
            "SELECT id, password_hash FROM accounts WHERE email = $1",
            &[&email],
        )
        .await
        .map_err(db_error)?;
    Ok(row.map(|row| PasswordRecord {
        account_id: row.get(0),
        password_hash: row.get(1),
    }))
}

async fn authenticate_session(
    client: &Object,
    token: &str,
    now_ms: u64,
) -> Result<Option<SessionIdentity>, StoreError> {
    let Some((lookup, _)) = lookup_and_hash(token, auth::SESSION_TOKEN_PREFIX) else {
        return Ok(None);
    };
    let statement = client
        .prepare_cached(
            "SELECT s.id, s.hash, s.expires_ms, a.id, a.email, m.tenant_id, m.role
             FROM web_sessions s JOIN accounts a ON a.id = s.account_id
             JOIN memberships m ON m.account_id = a.id
             WHERE s.lookup = $1",
        )
        .await
        .map_err(db_error)?;
    let Some(row) = client
        .query_opt(&statement, &[&lookup])
        .await
        .map_err(db_error)?
    else {
        return Ok(None);
    };
    let hash: Vec<u8> = row.get(1);
    let expires_ms: i64 = row.get(2);
    if !auth::verify_secret(token, &hash) || expires_ms <= to_i64(now_ms) {
        return Ok(None);
    }
    Ok(Some(SessionIdentity {
        session_id: row.get(0),
        account_id: row.get(3),
        email: row.get(4),
        tenant_id: row.get(5),
        role: stored_role(row.get(6))?,
        expires_ms: to_u64(expires_ms),
    }))
}

async fn members(client: &Object, tenant_id: TenantId) -> Result<Vec<MemberInfo>, StoreError> {
    let rows = client
        .query(
            "SELECT a.id, a.email, m.role, m.created_ms
             FROM memberships m JOIN accounts a ON a.id = m.account_id
             WHERE m.tenant_id = $1
             ORDER BY m.role != 'owner', a.email",
            &[&tenant_id],
        )
        .await
        .map_err(db_error)?;
    rows.into_iter()
        .map(|row| {
            Ok(MemberInfo {
                account_id: row.get(0),
                email: row.get(1),
                role: stored_role(row.get(2))?,
                joined_ms: to_u64(row.get(3)),
            })
        })
        .collect()
}

async fn invitations(
    client: &Object,
    tenant_id: TenantId,
    now_ms: u64,
) -> Result<Vec<InvitationInfo>, StoreError> {
    let rows = client
        .query(
            "SELECT i.id, i.role, a.email, i.created_ms, i.expires_ms
             FROM invitations i LEFT JOIN accounts a ON a.id = i.invited_by
             WHERE i.tenant_id = $1 AND i.used_ms IS NULL AND i.expires_ms > $2
             ORDER BY i.id DESC",
            &[&tenant_id, &to_i64(now_ms)],
        )
        .await
        .map_err(db_error)?;
    rows.into_iter()
        .map(|row| {
            Ok(InvitationInfo {
                id: row.get(0),
                role: stored_role(row.get(1))?,
                invited_by: row.get(2),
                created_ms: to_u64(row.get(3)),
                expires_ms: to_u64(row.get(4)),
            })
        })
        .collect()
}

// ------------------------------------------------------------ the trait

impl AccountStore for PgStore {
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
        boxed(async move { password_record(&self.reader().await?, &email).await })
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
        boxed(async move { authenticate_session(&self.reader().await?, &token, now_ms).await })
    }

    fn end_web_session(&self, session_id: i64) -> BoxFuture<'_, Result<(), StoreError>> {
        boxed(self.account_write(move |reply| AccountOp::EndSession { session_id, reply }))
    }

    fn members(&self, tenant_id: TenantId) -> BoxFuture<'_, Result<Vec<MemberInfo>, StoreError>> {
        boxed(async move { members(&self.reader().await?, tenant_id).await })
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
        boxed(async move { invitations(&self.reader().await?, tenant_id, now_ms).await })
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
        boxed(async move {
            let client = self.reader().await?;
            let (_, info) = pending_invitation(&client, &token, now_ms, false)
                .await
                .map_err(db_error)??;
            Ok(info)
        })
    }
}
