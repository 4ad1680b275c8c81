//! The accounts part of the suite ([`AccountStore`]): accounts made with a
//! claim code or an invitation, sign-in sessions, memberships and their
//! roles, invitations, and that none of it crosses tenants.

use tether_server::auth::{INVITATION_TOKEN_PREFIX, SESSION_TOKEN_PREFIX, generate_secret};
use tether_server::store::accounts::{
    CreatedAccount, Joining, MAX_SESSIONS_PER_ACCOUNT, NewAccount, NewInvitation, Role,
};
use tether_server::store::{AccountStore, Revocation, Store, StoreError, StoreOptions, TenantId};

use super::{StoreFixture, TestResult};

const HOUR_MS: u64 = 3_600_000;

fn session_token() -> String {
    generate_secret(SESSION_TOKEN_PREFIX)
}

/// A new account joining with `joining`; returns it and its session token.
async fn create(
    accounts: &dyn AccountStore,
    email: &str,
    joining: Joining,
    now_ms: u64,
) -> Result<(CreatedAccount, String), StoreError> {
    let token = session_token();
    let created = accounts
        .create_account(
            NewAccount {
                email: email.to_owned(),
                password_hash: format!("$argon2id$hash-of-{email}"),
                joining,
                session_token: token.clone(),
                session_expires_ms: now_ms + HOUR_MS,
            },
            now_ms,
        )
        .await?;
    Ok((created, token))
}

fn with_code(code: &str, tenant_name: &str) -> Joining {
    Joining::ClaimCode {
        claim_code: code.to_owned(),
        tenant_name: tenant_name.to_owned(),
    }
}

fn with_invitation(token: &str) -> Joining {
    Joining::Invitation {
        token: token.to_owned(),
    }
}

/// An invitation of `tenant` by `owner` for `role`; returns its token.
async fn invite(
    accounts: &dyn AccountStore,
    tenant_id: TenantId,
    owner: i64,
    role: Role,
    expires_ms: u64,
    now_ms: u64,
) -> Result<(i64, String), StoreError> {
    let token = generate_secret(INVITATION_TOKEN_PREFIX);
    let id = accounts
        .create_invitation(
            NewInvitation {
                tenant_id,
                invited_by: owner,
                token: token.clone(),
                role,
                expires_ms,
            },
            now_ms,
        )
        .await?;
    Ok((id, token))
}

async fn revocations<S: Store>(store: &S) -> Result<Vec<Revocation>, StoreError> {
    Ok(store.revocations_since(0).await?.0)
}

/// A claim code makes a new tenant whose owner the account is, claims the
/// device into it and opens a session, in one step; a refusal (used,
/// wrong or expired code, taken email) makes nothing.
pub async fn an_account_made_with_a_claim_code_owns_the_device<F: StoreFixture>() -> TestResult {
    let fixture = F::new()?;
    let acme = fixture.add_tenant("acme")?;
    let code = fixture.add_claimable_device(None, "label-1", None)?;
    let spare = fixture.add_claimable_device(None, "label-2", None)?;
    let expired = fixture.add_claimable_device(None, "label-3", Some(1_000))?;
    let store = fixture.open(StoreOptions::default())?;
    let accounts = store.accounts();
    let now = 10_000;

    let (created, token) = create(
        accounts,
        "ada@example.com",
        with_code(&code, "customer-ada"),
        now,
    )
    .await?;
    assert_eq!(created.role, Role::Owner);
    assert_eq!(created.device.as_deref(), Some("label-1"));
    assert_ne!(created.tenant_id, acme);
    assert_eq!(
        store.device_tenant("label-1").await?,
        Some(created.tenant_id)
    );
    let devices = store.list_devices(created.tenant_id, now).await?;
    assert_eq!(
        devices.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        ["label-1"]
    );
    assert!(
        revocations(&store)
            .await?
            .contains(&Revocation::Moved("label-1".into()))
    );
    let session = accounts
        .authenticate_session(&token, now)
        .await?
        .ok_or("the first session is open")?;
    assert_eq!(session.account_id, created.account_id);
    assert_eq!(session.session_id, created.session_id);
    assert_eq!(session.email, "ada@example.com");
    assert_eq!(session.tenant_id, created.tenant_id);
    assert_eq!(session.role, Role::Owner);
    assert_eq!(session.expires_ms, now + HOUR_MS);
    let record = accounts
        .password_record("ada@example.com")
        .await?
        .ok_or("a password record")?;
    assert_eq!(record.account_id, created.account_id);
    assert_eq!(record.password_hash, "$argon2id$hash-of-ada@example.com");

    // Sessions end at their expiry; other tokens are nobody's.
    assert_eq!(
        accounts.authenticate_session(&token, now + HOUR_MS).await?,
        None
    );
    assert_eq!(
        accounts.authenticate_session(&session_token(), now).await?,
        None
    );
    assert_eq!(accounts.authenticate_session("ts_short", now).await?, None);
    assert_eq!(accounts.authenticate_session("", now).await?, None);

    // Refusals make nothing: the used code, a wrong one, an expired one,
    // a taken email (with a good code, which stays unused).
    for (email, joining, expected) in [
        (
            "bob@example.com",
            with_code(&code, "customer-b1"),
            StoreError::NotFound,
        ),
        (
            "bob@example.com",
            with_code("WRONG-CODE-0000", "customer-b2"),
            StoreError::NotFound,
        ),
        (
            "bob@example.com",
            with_code(&expired, "customer-b3"),
            StoreError::Expired,
        ),
        (
            "ada@example.com",
            with_code(&spare, "customer-b4"),
            StoreError::AlreadyExists,
        ),
        (
            "bob@example.com",
            with_code(&spare, "acme"),
            StoreError::AlreadyExists,
        ),
    ] {
        match create(accounts, email, joining, now).await {
            Err(error) => assert_eq!(error, expected, "{email}"),
            Ok(created) => panic!("{email}: expected {expected:?}, made {created:?}"),
        }
    }
    assert_eq!(accounts.password_record("bob@example.com").await?, None);
    assert_eq!(store.device_tenant("label-2").await?, Some(0));
    assert_eq!(store.claim(acme, &spare, now).await?, "label-2");
    store.close().await;
    Ok(())
}

/// Sessions open, end on sign-out (recorded as a revocation) and are
/// bounded per account: the oldest end first.
pub async fn sessions_end_on_sign_out_and_are_bounded<F: StoreFixture>() -> TestResult {
    let fixture = F::new()?;
    let code = fixture.add_claimable_device(None, "label-1", None)?;
    let store = fixture.open(StoreOptions::default())?;
    let accounts = store.accounts();
    let now = 50_000;
    let (created, first) = create(
        accounts,
        "ada@example.com",
        with_code(&code, "customer-ada"),
        now,
    )
    .await?;

    let token = session_token();
    let id = accounts
        .open_web_session(created.account_id, &token, now + HOUR_MS, now)
        .await?;
    assert_ne!(id, created.session_id);
    let session = accounts
        .authenticate_session(&token, now)
        .await?
        .ok_or("open")?;
    assert_eq!(session.session_id, id);
    accounts.end_web_session(id).await?;
    assert_eq!(accounts.authenticate_session(&token, now).await?, None);
    assert!(
        revocations(&store)
            .await?
            .contains(&Revocation::Session(id))
    );
    // Ending it again changes nothing.
    accounts.end_web_session(id).await?;
    assert!(accounts.authenticate_session(&first, now).await?.is_some());

    // Past the bound, the oldest sessions end.
    let mut tokens = Vec::new();
    for _ in 0..MAX_SESSIONS_PER_ACCOUNT {
        let token = session_token();
        accounts
            .open_web_session(created.account_id, &token, now + HOUR_MS, now)
            .await?;
        tokens.push(token);
    }
    assert_eq!(accounts.authenticate_session(&first, now).await?, None);
    for token in &tokens {
        assert!(accounts.authenticate_session(token, now).await?.is_some());
    }
    assert!(
        revocations(&store)
            .await?
            .contains(&Revocation::Session(created.session_id))
    );
    store.close().await;
    Ok(())
}

/// Invitations give their role in the inviting tenant, work once, expire,
/// and can be withdrawn; none makes an owner.
pub async fn invitations_work_once_expire_and_give_their_role<F: StoreFixture>() -> TestResult {
    let fixture = F::new()?;
    let code = fixture.add_claimable_device(None, "label-1", None)?;
    let store = fixture.open(StoreOptions::default())?;
    let accounts = store.accounts();
    let now = 100_000;
    let (owner, _) = create(
        accounts,
        "ada@example.com",
        with_code(&code, "customer-ada"),
        now,
    )
    .await?;
    let tenant = owner.tenant_id;

    let (id, token) = invite(
        accounts,
        tenant,
        owner.account_id,
        Role::ReadOnly,
        now + HOUR_MS,
        now,
    )
    .await?;
    let offered = accounts.inspect_invitation(&token, now).await?;
    assert_eq!(offered.id, id);
    assert_eq!(offered.role, Role::ReadOnly);
    assert_eq!(offered.invited_by.as_deref(), Some("ada@example.com"));
    assert_eq!(offered.expires_ms, now + HOUR_MS);
    assert_eq!(accounts.invitations(tenant, now).await?, vec![offered]);

    let (member, member_token) =
        create(accounts, "bob@example.com", with_invitation(&token), now).await?;
    assert_eq!(member.tenant_id, tenant);
    assert_eq!(member.role, Role::ReadOnly);
    assert_eq!(member.device, None);
    let session = accounts
        .authenticate_session(&member_token, now)
        .await?
        .ok_or("the member is signed in")?;
    assert_eq!(session.role, Role::ReadOnly);
    assert_eq!(session.tenant_id, tenant);
    // Used up.
    assert_eq!(
        accounts.inspect_invitation(&token, now).await,
        Err(StoreError::NotFound)
    );
    assert_eq!(
        create(accounts, "eve@example.com", with_invitation(&token), now)
            .await
            .map(|(created, _)| created),
        Err(StoreError::NotFound)
    );
    assert_eq!(accounts.invitations(tenant, now).await?, vec![]);

    // Expired: refused, and no longer listed.
    let (_, late) = invite(
        accounts,
        tenant,
        owner.account_id,
        Role::Member,
        now + 10,
        now,
    )
    .await?;
    assert_eq!(
        accounts.inspect_invitation(&late, now + 10).await,
        Err(StoreError::Expired)
    );
    assert_eq!(
        create(
            accounts,
            "eve@example.com",
            with_invitation(&late),
            now + 10
        )
        .await
        .map(|(created, _)| created),
        Err(StoreError::Expired)
    );
    assert_eq!(accounts.invitations(tenant, now + 10).await?, vec![]);
    assert_eq!(accounts.password_record("eve@example.com").await?, None);

    // Withdrawn: gone. Unknown tokens are nobody's.
    let (withdrawn, withdrawn_token) = invite(
        accounts,
        tenant,
        owner.account_id,
        Role::Member,
        now + HOUR_MS,
        now,
    )
    .await?;
    accounts.revoke_invitation(tenant, withdrawn).await?;
    assert_eq!(
        accounts.inspect_invitation(&withdrawn_token, now).await,
        Err(StoreError::NotFound)
    );
    assert_eq!(
        accounts.revoke_invitation(tenant, withdrawn).await,
        Err(StoreError::NotFound)
    );
    assert_eq!(
        accounts
            .inspect_invitation(&generate_secret(INVITATION_TOKEN_PREFIX), now)
            .await,
        Err(StoreError::NotFound)
    );
    assert_eq!(
        accounts.inspect_invitation("ti_nope", now).await,
        Err(StoreError::NotFound)
    );
    // No invitation makes an owner.
    assert!(matches!(
        invite(
            accounts,
            tenant,
            owner.account_id,
            Role::Owner,
            now + HOUR_MS,
            now
        )
        .await,
        Err(StoreError::Invalid(_))
    ));
    store.close().await;
    Ok(())
}

/// Roles change and members go only within their own tenant; the owner
/// stays; a change or a removal is recorded for the connections; a removed
/// member's sessions end.
pub async fn members_change_and_go_only_within_their_tenant<F: StoreFixture>() -> TestResult {
    let fixture = F::new()?;
    let code_a = fixture.add_claimable_device(None, "a-1", None)?;
    let code_b = fixture.add_claimable_device(None, "b-1", None)?;
    let store = fixture.open(StoreOptions::default())?;
    let accounts = store.accounts();
    let now = 200_000;
    let (owner_a, _) = create(
        accounts,
        "ada@a.example",
        with_code(&code_a, "tenant-a"),
        now,
    )
    .await?;
    let (owner_b, _) = create(
        accounts,
        "bea@b.example",
        with_code(&code_b, "tenant-b"),
        now,
    )
    .await?;
    let (a, b) = (owner_a.tenant_id, owner_b.tenant_id);
    let (_, invite_a) = invite(
        accounts,
        a,
        owner_a.account_id,
        Role::Member,
        now + HOUR_MS,
        now,
    )
    .await?;
    let (invitation_b, invite_b) = invite(
        accounts,
        b,
        owner_b.account_id,
        Role::Member,
        now + HOUR_MS,
        now,
    )
    .await?;
    let (member_a, token_a) =
        create(accounts, "max@a.example", with_invitation(&invite_a), now).await?;
    let (member_b, token_b) =
        create(accounts, "mia@b.example", with_invitation(&invite_b), now).await?;
    let (_, pending_b) = invite(
        accounts,
        b,
        owner_b.account_id,
        Role::ReadOnly,
        now + HOUR_MS,
        now,
    )
    .await?;

    // Each tenant sees its own people and invitations only.
    let emails = |members: Vec<tether_server::store::accounts::MemberInfo>| {
        members
            .into_iter()
            .map(|member| (member.email, member.role))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        emails(accounts.members(a).await?),
        [
            ("ada@a.example".to_owned(), Role::Owner),
            ("max@a.example".to_owned(), Role::Member)
        ]
    );
    assert_eq!(
        emails(accounts.members(b).await?),
        [
            ("bea@b.example".to_owned(), Role::Owner),
            ("mia@b.example".to_owned(), Role::Member)
        ]
    );
    assert_eq!(accounts.invitations(a, now).await?, vec![]);
    assert_eq!(accounts.invitations(b, now).await?.len(), 1);
    assert!(accounts.inspect_invitation(&pending_b, now).await.is_ok());

    // Tenant A reaches nothing of tenant B.
    assert_eq!(
        accounts
            .set_role(a, member_b.account_id, Role::ReadOnly)
            .await,
        Err(StoreError::NotFound)
    );
    assert_eq!(
        accounts.remove_member(a, member_b.account_id).await,
        Err(StoreError::NotFound)
    );
    assert_eq!(
        accounts.remove_member(a, owner_b.account_id).await,
        Err(StoreError::NotFound)
    );
    assert_eq!(
        accounts.revoke_invitation(a, invitation_b).await,
        Err(StoreError::NotFound)
    );
    assert!(
        accounts
            .authenticate_session(&token_b, now)
            .await?
            .is_some()
    );

    // The owner stays the owner.
    assert!(matches!(
        accounts
            .set_role(a, owner_a.account_id, Role::ReadOnly)
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        accounts.set_role(a, member_a.account_id, Role::Owner).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        accounts.remove_member(a, owner_a.account_id).await,
        Err(StoreError::Invalid(_))
    ));

    // Read-only: the session says so at once; the change is recorded.
    accounts
        .set_role(a, member_a.account_id, Role::ReadOnly)
        .await?;
    let session = accounts
        .authenticate_session(&token_a, now)
        .await?
        .ok_or("still signed in")?;
    assert_eq!(session.role, Role::ReadOnly);
    assert!(
        revocations(&store)
            .await?
            .contains(&Revocation::Account(member_a.account_id))
    );

    // Removed: the account and its sessions are gone.
    let before = revocations(&store).await?.len();
    accounts.remove_member(a, member_a.account_id).await?;
    assert_eq!(accounts.authenticate_session(&token_a, now).await?, None);
    assert_eq!(accounts.password_record("max@a.example").await?, None);
    assert_eq!(accounts.members(a).await?.len(), 1);
    let after = revocations(&store).await?;
    assert_eq!(
        after.get(before..),
        Some([Revocation::Account(member_a.account_id)].as_slice())
    );
    assert_eq!(
        accounts.remove_member(a, member_a.account_id).await,
        Err(StoreError::NotFound)
    );
    // The email can be invited again.
    let (_, again) = invite(
        accounts,
        a,
        owner_a.account_id,
        Role::ReadOnly,
        now + HOUR_MS,
        now,
    )
    .await?;
    let (rejoined, _) = create(accounts, "max@a.example", with_invitation(&again), now).await?;
    assert_eq!(rejoined.role, Role::ReadOnly);
    assert_ne!(rejoined.account_id, member_a.account_id);
    store.close().await;
    Ok(())
}

/// `tether-server invite` (the administrator's invitation): how an
/// existing tenant (made by `tenant add`, or before accounts) gets its
/// owner; none to the unclaimed devices.
pub async fn an_administrators_invitation_makes_an_owner_of_an_existing_tenant<F: StoreFixture>()
-> TestResult {
    let fixture = F::new()?;
    let acme = fixture.add_tenant("acme")?;
    fixture.add_device(acme, "porch-1")?;
    let now = tether_server::now_ms();
    let token = fixture.invite(acme, Role::Owner, now + HOUR_MS)?;
    assert!(token.starts_with(INVITATION_TOKEN_PREFIX));
    assert!(fixture.invite(0, Role::Member, now + HOUR_MS).is_err());
    let store = fixture.open(StoreOptions::default())?;
    let accounts = store.accounts();
    let offered = accounts.inspect_invitation(&token, now).await?;
    assert_eq!(offered.role, Role::Owner);
    assert_eq!(offered.invited_by, None);
    let (created, session) =
        create(accounts, "ada@acme.example", with_invitation(&token), now).await?;
    assert_eq!((created.tenant_id, created.role), (acme, Role::Owner));
    let identity = accounts
        .authenticate_session(&session, now)
        .await?
        .ok_or("no session")?;
    assert_eq!((identity.tenant_id, identity.role), (acme, Role::Owner));
    assert_eq!(store.list_devices(acme, now).await?.len(), 1);
    // Used up.
    assert_eq!(
        accounts.inspect_invitation(&token, now).await,
        Err(StoreError::NotFound)
    );
    store.close().await;
    Ok(())
}
