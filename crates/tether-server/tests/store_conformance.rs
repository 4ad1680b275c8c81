//! The shared store suite (`tests/store_suite/`) against `SqliteStore`, and
//! what only SQLite has: its migrations, its reader pool, its savepoints.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod store_suite;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, params};
use store_suite::{BoxError, StoreFixture, TestResult, record_in};
use tether_server::store::{
    Admin, AppendOutcome, Role, SqliteStore, Store, StoreOptions, TenantId,
};

/// A database file in a temporary directory.
struct Sqlite {
    dir: tempfile::TempDir,
}

impl Sqlite {
    fn path(&self) -> PathBuf {
        self.dir.path().join("tether.db")
    }

    fn admin(&self) -> Result<Admin, BoxError> {
        Ok(Admin::open(&self.path())?)
    }
}

impl StoreFixture for Sqlite {
    type Store = SqliteStore;

    fn invite(&self, tenant: TenantId, role: Role, expires_ms: u64) -> Result<String, BoxError> {
        Ok(self
            .admin()?
            .add_invitation(tenant, role, expires_ms)?
            .token)
    }

    fn new() -> Result<Self, BoxError> {
        Ok(Sqlite {
            dir: tempfile::tempdir()?,
        })
    }

    fn open(&self, options: StoreOptions) -> Result<SqliteStore, BoxError> {
        Ok(SqliteStore::open(&self.path(), options)?)
    }

    fn add_tenant(&self, name: &str) -> Result<TenantId, BoxError> {
        Ok(self.admin()?.add_tenant(name)?)
    }

    fn add_device(&self, tenant: TenantId, device_id: &str) -> Result<String, BoxError> {
        Ok(self
            .admin()?
            .add_device(Some(tenant), Some(device_id), false)?
            .token)
    }

    fn add_claimable_device(
        &self,
        tenant: Option<TenantId>,
        device_id: &str,
        expires_ms: Option<u64>,
    ) -> Result<String, BoxError> {
        self.admin()?
            .add_claimable_device(tenant, Some(device_id), expires_ms)?
            .claim_code
            .ok_or_else(|| "no claim code".into())
    }

    fn set_retention(
        &self,
        tenant: TenantId,
        max_age: Option<Duration>,
        max_messages: Option<u64>,
    ) -> Result<(), BoxError> {
        Ok(self.admin()?.set_retention(tenant, max_age, max_messages)?)
    }

    fn fill_channel(
        &self,
        tenant: TenantId,
        channel: &str,
        device_id: &str,
        count: u64,
        server_time_ms: u64,
    ) -> Result<(), BoxError> {
        drop(self.admin()?);
        let mut conn = Connection::open(self.path())?;
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO channels(tenant_id, name, next_offset) VALUES (?1, ?2, ?3)",
            params![tenant, channel, i64::try_from(count)? + 1],
        )?;
        let channel_id = tx.last_insert_rowid();
        {
            let mut insert = tx.prepare(
                "INSERT INTO messages(channel_id, offset, device_id, device_time_ms,
                                      server_time_ms, payload) VALUES (?1, ?2, ?3, NULL, ?4, ?5)",
            )?;
            for offset in 1..=i64::try_from(count)? {
                insert.execute(params![
                    channel_id,
                    offset,
                    device_id,
                    i64::try_from(server_time_ms)?,
                    format!("{{\"n\":{offset}}}")
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn insert_events(
        &self,
        tenant: TenantId,
        channel: &str,
        events: &[store_suite::TestEvent],
    ) -> Result<(), BoxError> {
        let events = store_suite::TestEvent::to_import(events);
        self.admin()?.import_events(tenant, channel, &events)?;
        Ok(())
    }
}

store_conformance_tests!(Sqlite);

/// One operation failing inside a batch (here a claim, made to fail by a
/// trigger: a real SQLite error) fails alone: the appends committed with
/// it are stored and acknowledged. Another connection holds the write
/// lock, so the writer waits in `BEGIN` while the claim and appends queue
/// up behind it ([`store_suite::a_failing_claim_fails_alone`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_operation_fails_alone_in_its_batch() -> TestResult {
    let fixture = Sqlite::new()?;
    let tenant = fixture.add_tenant("acme")?;
    fixture.add_device(tenant, "d1")?;
    let code = fixture.add_claimable_device(None, "doomed", None)?;
    Connection::open(fixture.path())?.execute_batch(
        "CREATE TRIGGER fail_claim BEFORE UPDATE OF tenant_id ON devices
         WHEN NEW.id = 'doomed' BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
    )?;
    let hold = async {
        let holder = Connection::open(fixture.path())?;
        holder.busy_timeout(Duration::from_secs(5))?;
        holder.execute_batch("BEGIN IMMEDIATE")?;
        Ok(holder)
    };
    let release = |holder: Connection| async move {
        holder.execute_batch("ROLLBACK")?;
        Ok(())
    };
    store_suite::a_failing_claim_fails_alone(&fixture, tenant, &code, hold, release).await
}

/// File descriptors of this process open on `path`.
fn open_descriptors(path: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| std::fs::read_link(entry.path()).is_ok_and(|target| target == path))
        .count()
}

/// A burst of concurrent reads never opens more reader connections than
/// `read_connections` (each connection holds the database file open).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reader_pool_is_bounded_under_load() -> TestResult {
    let fixture = Sqlite::new()?;
    let tenant = fixture.add_tenant("acme")?;
    fixture.fill_channel(tenant, "t", "d1", 20_000, 1)?;
    let store = Arc::new(fixture.open(StoreOptions {
        read_connections: 4,
        ..StoreOptions::default()
    })?);
    let path = fixture.path().canonicalize()?;
    let baseline = open_descriptors(&path);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = std::sync::Arc::clone(&done);
        let path = path.clone();
        std::thread::spawn(move || {
            let mut most = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                most = most.max(open_descriptors(&path));
                std::thread::sleep(Duration::from_micros(200));
            }
            most
        })
    };
    let reads = (0..128).map(|_| {
        let store = std::sync::Arc::clone(&store);
        tokio::spawn(async move {
            store
                .read(
                    tenant,
                    "t",
                    tether_server::store::ReadRange::Offsets {
                        from: 1,
                        until: None,
                    },
                    2_000,
                )
                .await
                .map(|events| events.len())
        })
    });
    for read in futures_util::future::join_all(reads).await {
        assert_eq!(read??, 2_000);
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let most = sampler.join().map_err(|_| "sampler panicked")?;
    assert!(
        most <= baseline + 4,
        "{most} descriptors on the database during the burst, {baseline} before: \
         more than 4 reader connections"
    );
    assert!(most > baseline, "the sampler saw no reader at all");
    store.close().await;
    Ok(())
}

/// A database file made by the previous release's binary (schema version
/// 0: `tether-server --demo` of commit c3ff921 ran for five seconds, then
/// its WAL was checkpointed) opens, migrates, and keeps its data,
/// de-duplication and watermark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_the_previous_release_migrates_on_open() -> TestResult {
    let fixture = Sqlite::new()?;
    std::fs::write(
        fixture.path(),
        include_bytes!("data/tether-0.1-schema-v0.db"),
    )?;
    let before = Connection::open(fixture.path())?;
    let version: i64 = before.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    assert_eq!(version, 0);
    let (boot, max_seq): (i64, i64) = before.query_row(
        "SELECT boot_id, max_seq FROM boots WHERE device_id = 'demo-1'",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    let next_offset: i64 = before.query_row(
        "SELECT next_offset FROM channels WHERE name = 'demo/readings'",
        [],
        |row| row.get(0),
    )?;
    drop(before);
    let boot = u64::from_ne_bytes(boot.to_ne_bytes());
    let seq = u32::try_from(max_seq)?;
    let store = fixture.open(StoreOptions::default())?;
    let tenant = Admin::open(&fixture.path())?.tenant_id("default")?;
    // The old highest stored seq is the new watermark.
    let opened = store.open_session("demo-1", "1", boot, 1).await?;
    assert_eq!(opened.last_stored_seq, seq);
    let mut request = record_in(opened, tenant, seq, seq - 1, "demo/readings");
    request.device_id = "demo-1".into();
    request.boot_id = boot;
    assert_eq!(
        store.append(request.clone()).await?.await?,
        AppendOutcome::Duplicate
    );
    request.seq = seq + 1;
    request.previous_seq = seq;
    assert_eq!(
        store.append(request).await?.await?,
        AppendOutcome::Stored {
            offset: u64::try_from(next_offset)?
        }
    );
    assert_eq!(
        store
            .open_session("demo-1", "1", boot, 2)
            .await?
            .last_stored_seq,
        seq + 1
    );
    let events = store
        .read(
            tenant,
            "demo/readings",
            tether_server::store::ReadRange::Offsets {
                from: 1,
                until: None,
            },
            1_000,
        )
        .await?;
    assert_eq!(events.len(), usize::try_from(next_offset)?);
    // The old events roll up into series like new ones.
    assert_eq!(store.roll_up().await?, u64::try_from(next_offset)?);
    let series = store
        .series(
            tenant,
            "demo/readings",
            tether_server::store::SeriesQuery {
                since_ms: 0,
                until_ms: None,
                bucket_ms: 3_600_000,
                devices: None,
            },
        )
        .await?;
    assert!(series.points.iter().any(|p| p.key == "centi_celsius"));
    store.close().await;
    let after = Connection::open(fixture.path())?;
    let version: i64 = after.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    assert_eq!(version, SCHEMA_VERSION);
    Ok(())
}

/// The schema version this server writes.
const SCHEMA_VERSION: i64 = 5;

/// A database made by the release before accounts (schema version 2: the
/// `tether-server` of commit 1381935 ran `tenant add acme`, `device add
/// --tenant acme --id porch-1`, `device add --claimable --id shed-1` and
/// `--demo` for eight seconds, then its WAL was checkpointed) migrates to
/// version 5: its data stays, and a customer can make an account with the
/// claim code printed for `shed-1` then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_before_accounts_migrates_and_takes_accounts() -> TestResult {
    use tether_server::store::accounts::{Joining, NewAccount};
    const SHED_CLAIM_CODE: &str = "9PBN-MQZG-Y9BG";
    let fixture = Sqlite::new()?;
    std::fs::write(fixture.path(), include_bytes!("data/tether-schema-v2.db"))?;
    let before = Connection::open(fixture.path())?;
    let version: i64 = before.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    assert_eq!(version, 2);
    let tables: i64 = before.query_row(
        "SELECT count(*) FROM sqlite_master WHERE name = 'accounts'",
        [],
        |row| row.get(0),
    )?;
    assert_eq!(tables, 0);
    drop(before);
    let store = fixture.open(StoreOptions::default())?;
    let acme = fixture.admin()?.tenant_id("acme")?;
    let default = fixture.admin()?.tenant_id("default")?;
    assert_eq!(store.device_tenant("porch-1").await?, Some(acme));
    assert_eq!(store.device_tenant("demo-1").await?, Some(default));
    let bounds = store.channel_bounds(default, "demo/readings").await?;
    assert_eq!(bounds.next_offset, 41);
    let now = tether_server::now_ms();
    let token = tether_server::auth::generate_secret(tether_server::auth::SESSION_TOKEN_PREFIX);
    let created = store
        .accounts()
        .create_account(
            NewAccount {
                email: "ada@example.com".into(),
                password_hash: "$argon2id$test".into(),
                joining: Joining::ClaimCode {
                    claim_code: SHED_CLAIM_CODE.into(),
                    tenant_name: "customer-ada".into(),
                },
                session_token: token.clone(),
                session_expires_ms: now + 60_000,
            },
            now,
        )
        .await?;
    assert_eq!(created.role, Role::Owner);
    assert_eq!(created.device.as_deref(), Some("shed-1"));
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
    let after = Connection::open(fixture.path())?;
    let version: i64 = after.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    assert_eq!(version, SCHEMA_VERSION);
    Ok(())
}
