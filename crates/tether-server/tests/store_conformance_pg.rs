//! The shared store suite (`tests/store_suite/`) against `PgStore`, on a
//! real PostgreSQL server started for this test binary from the Debian
//! package (`tether-cluster-test`), one fresh database per test; and what
//! only PostgreSQL has: its schema versions and their migrations.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod store_suite;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use store_suite::{BoxError, StoreFixture, TestResult};
use tether_cluster_test::Postgres;
use tether_server::store::{PgAdmin, PgStore, Role, Store, StoreError, StoreOptions, TenantId};

/// One server for every test of this binary (the watchdog stops it, and
/// removes its directory, when the binary exits).
fn server() -> Result<&'static Postgres, BoxError> {
    static SERVER: OnceLock<Result<Postgres, String>> = OnceLock::new();
    SERVER
        .get_or_init(|| Postgres::start().map_err(|error| error.to_string()))
        .as_ref()
        .map_err(|error| error.clone().into())
}

/// Runs a future to completion from the suite's synchronous fixture calls
/// (the suite runs on a multi-threaded runtime).
fn block<F: core::future::Future>(future: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(future))
}

/// A fresh database on the shared server.
struct Pg {
    database: String,
    url: String,
    admin: PgAdmin,
}

impl StoreFixture for Pg {
    type Store = PgStore;

    fn invite(&self, tenant: TenantId, role: Role, expires_ms: u64) -> Result<String, BoxError> {
        Ok(block(self.admin.add_invitation(tenant, role, expires_ms))?.token)
    }

    fn new() -> Result<Self, BoxError> {
        static NEXT: AtomicU32 = AtomicU32::new(1);
        let database = format!(
            "suite_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let url = server()?.create_database(&database)?;
        let admin = block(PgAdmin::connect(&url))?;
        Ok(Pg {
            database,
            url,
            admin,
        })
    }

    fn open(&self, options: StoreOptions) -> Result<PgStore, BoxError> {
        Ok(block(PgStore::connect(&self.url, "node-a", options))?)
    }

    fn add_tenant(&self, name: &str) -> Result<TenantId, BoxError> {
        Ok(block(self.admin.add_tenant(name))?)
    }

    fn add_device(&self, tenant: TenantId, device_id: &str) -> Result<String, BoxError> {
        Ok(block(
            self.admin
                .add_device(Some(tenant), Some(device_id), false, None),
        )?
        .token)
    }

    fn add_claimable_device(
        &self,
        tenant: Option<TenantId>,
        device_id: &str,
        expires_ms: Option<u64>,
    ) -> Result<String, BoxError> {
        block(
            self.admin
                .add_device(tenant, Some(device_id), true, expires_ms),
        )?
        .claim_code
        .ok_or_else(|| "no claim code".into())
    }

    fn set_retention(
        &self,
        tenant: TenantId,
        max_age: Option<Duration>,
        max_messages: Option<u64>,
    ) -> Result<(), BoxError> {
        Ok(block(self.admin.set_retention(
            tenant,
            max_age,
            max_messages,
        ))?)
    }

    fn fill_channel(
        &self,
        tenant: TenantId,
        channel: &str,
        device_id: &str,
        count: u64,
        server_time_ms: u64,
    ) -> Result<(), BoxError> {
        let channel = channel.replace('\'', "''");
        let device_id = device_id.replace('\'', "''");
        server()?.psql(
            &self.database,
            &format!(
                "WITH c AS (INSERT INTO channels(tenant_id, name, next_offset)
                            VALUES ({tenant}, '{channel}', {next}) RETURNING id)
                 INSERT INTO messages(channel_id, \"offset\", device_id, device_time_ms,
                                      server_time_ms, payload)
                 SELECT c.id, g, '{device_id}', NULL, {server_time_ms}, '{{\"n\":' || g || '}}'
                 FROM c, generate_series(1, {count}) AS g",
                next = count + 1
            ),
        )?;
        Ok(())
    }

    fn insert_events(
        &self,
        tenant: TenantId,
        channel: &str,
        events: &[store_suite::TestEvent],
    ) -> Result<(), BoxError> {
        let events = store_suite::TestEvent::to_import(events);
        block(self.admin.import_events(tenant, channel, &events))?;
        Ok(())
    }
}

store_conformance_tests!(Pg);

/// One operation failing inside a batch (here a claim, made to fail by a
/// trigger: a real PostgreSQL error) fails alone: the appends committed
/// with it are stored and acknowledged. Another session holds the row
/// lock of the appends' device, so the writer waits in its first batch
/// while the claim and appends queue up behind it
/// ([`store_suite::a_failing_claim_fails_alone`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_operation_fails_alone_in_its_batch() -> TestResult {
    let fixture = Pg::new()?;
    let tenant = fixture.add_tenant("acme")?;
    fixture.add_device(tenant, "d1")?;
    let code = fixture.add_claimable_device(None, "doomed", None)?;
    server()?.psql(
        &fixture.database,
        "CREATE FUNCTION fail_claim() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$;
         CREATE TRIGGER fail_claim BEFORE UPDATE OF tenant_id ON devices
             FOR EACH ROW WHEN (NEW.id = 'doomed') EXECUTE FUNCTION fail_claim();",
    )?;
    let hold = async {
        let (holder, connection) =
            tokio_postgres::connect(&fixture.url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        holder
            .batch_execute("BEGIN; SELECT 1 FROM devices WHERE id = 'd1' FOR UPDATE")
            .await?;
        Ok(holder)
    };
    let release = |holder: tokio_postgres::Client| async move {
        holder.batch_execute("ROLLBACK").await?;
        Ok(())
    };
    store_suite::a_failing_claim_fails_alone(&fixture, tenant, &code, hold, release).await
}

/// A sign-up whose email another node takes after this one's check (here
/// another session's insert, committed while the store's own insert
/// waits on it: the insert fails with a unique violation, SQLSTATE 23505)
/// is refused as taken (`AlreadyExists`, HTTP 409), not failed as a
/// database error (500): the writer runs the batch again with each
/// operation in a savepoint, and the sign-up's check then sees the row.
/// It wrote nothing: its claim code and tenant name are still free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_taken_during_a_sign_up_is_refused_as_taken() -> TestResult {
    use tether_server::auth::{SESSION_TOKEN_PREFIX, generate_secret};
    use tether_server::store::accounts::{Joining, NewAccount};
    let fixture = Pg::new()?;
    let code = fixture.add_claimable_device(None, "porch-1", None)?;
    let store = fixture.open(StoreOptions::default())?;
    let sign_up = |email: &str, tenant_name: &str| NewAccount {
        email: email.to_owned(),
        password_hash: "$argon2id$hash".to_owned(),
        joining: Joining::ClaimCode {
            claim_code: code.clone(),
            tenant_name: tenant_name.to_owned(),
        },
        session_token: generate_secret(SESSION_TOKEN_PREFIX),
        session_expires_ms: tether_server::now_ms() + 3_600_000,
    };
    // The other node's transaction: the account, not committed yet.
    let (other, connection) = tokio_postgres::connect(&fixture.url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    other
        .batch_execute(
            "BEGIN; INSERT INTO accounts(email, password_hash, created_ms)
             VALUES ('ada@example.com', 'x', 0)",
        )
        .await?;
    let accounts = store.accounts();
    let mut create = store_suite::queued(accounts.create_account(
        sign_up("ada@example.com", "ada-home"),
        tether_server::now_ms(),
    ))
    .await?;
    // The store checked (no committed row) and waits in its insert.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let waiting = server()?.psql(
            &fixture.database,
            "SELECT count(*) FROM pg_locks WHERE NOT granted",
        )?;
        if waiting.trim() != "0" {
            break;
        }
        if std::time::Instant::now() > deadline {
            return Err("the sign-up never waited on the other insert".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    other.batch_execute("COMMIT").await?;
    match create.as_mut().await {
        Err(StoreError::AlreadyExists) => {}
        other => panic!("the sign-up should be refused as taken, got {other:?}"),
    }
    // Nothing of it stayed: the code and the tenant name are free.
    let created = accounts
        .create_account(
            sign_up("bob@example.com", "ada-home"),
            tether_server::now_ms(),
        )
        .await?;
    assert_eq!(created.device.as_deref(), Some("porch-1"));
    store.close().await;
    Ok(())
}

/// The schema version this server writes on PostgreSQL.
const PG_SCHEMA_VERSION: i64 = 3;

/// A database made by a newer server is refused, not misread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_a_newer_server_is_refused() -> TestResult {
    let fixture = Pg::new()?;
    server()?.psql(&fixture.database, "UPDATE tether_schema SET version = 999")?;
    match PgStore::connect(&fixture.url, "node-a", StoreOptions::default()).await {
        Err(StoreError::Invalid(text)) => assert!(text.contains("newer"), "{text}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    Ok(())
}

/// Nodes that start at once migrate one at a time: every one of them
/// opens the database, and the schema is made once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_migrate_once() -> TestResult {
    let database = "concurrent_migration";
    let url = server()?.create_database(database)?;
    let mut starts = tokio::task::JoinSet::new();
    for node in 0..4 {
        let url = url.clone();
        starts.spawn(async move {
            PgStore::connect(&url, &format!("node-{node}"), StoreOptions::default()).await
        });
    }
    while let Some(started) = starts.join_next().await {
        started??.close().await;
    }
    assert_eq!(
        server()?
            .psql(database, "SELECT version FROM tether_schema")?
            .trim(),
        PG_SCHEMA_VERSION.to_string()
    );
    assert_eq!(
        server()?
            .psql(database, "SELECT count(*) FROM tenants WHERE id = 0")?
            .trim(),
        "1"
    );
    Ok(())
}

/// A database of the release before accounts (schema version 2: its data,
/// no account tables) migrates to version 3 when a node opens it, keeps
/// its devices, and a customer can make an account with a claim code
/// registered before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_before_accounts_migrates_and_takes_accounts() -> TestResult {
    use tether_server::store::accounts::{Joining, NewAccount};
    let fixture = Pg::new()?;
    let acme = fixture.add_tenant("acme")?;
    fixture.add_device(acme, "porch-1")?;
    let code = fixture.add_claimable_device(None, "shed-1", None)?;
    server()?.psql(
        &fixture.database,
        "DROP TABLE invitations, web_sessions, memberships, accounts;
         UPDATE tether_schema SET version = 2",
    )?;
    let store = fixture.open(StoreOptions::default())?;
    assert_eq!(
        server()?
            .psql(&fixture.database, "SELECT version FROM tether_schema")?
            .trim(),
        PG_SCHEMA_VERSION.to_string()
    );
    assert_eq!(store.device_tenant("porch-1").await?, Some(acme));
    let now = tether_server::now_ms();
    let token = tether_server::auth::generate_secret(tether_server::auth::SESSION_TOKEN_PREFIX);
    let created = store
        .accounts()
        .create_account(
            NewAccount {
                email: "ada@example.com".into(),
                password_hash: "$argon2id$test".into(),
                joining: Joining::ClaimCode {
                    claim_code: code,
                    tenant_name: "customer-ada".into(),
                },
                session_token: token.clone(),
                session_expires_ms: now + 60_000,
            },
            now,
        )
        .await?;
    assert_eq!(created.role, Role::Owner);
    assert_eq!(
        store.device_tenant("shed-1").await?,
        Some(created.tenant_id)
    );
    assert!(
        store
            .accounts()
            .authenticate_session(&token, now)
            .await?
            .is_some()
    );
    store.close().await;
    Ok(())
}
