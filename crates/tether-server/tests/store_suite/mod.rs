//! The behaviour every [`Store`] must have, as one suite generic over a
//! [`StoreFixture`]: `tests/store_conformance.rs` runs it against
//! `SqliteStore`; another store (PostgreSQL) runs the same suite by
//! implementing the fixture for its database and invoking
//! [`store_conformance_tests!`] with it.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::std_instead_of_core,
    clippy::std_instead_of_alloc
)]

mod accounts;

pub use accounts::{
    an_account_made_with_a_claim_code_owns_the_device,
    an_administrators_invitation_makes_an_owner_of_an_existing_tenant,
    invitations_work_once_expire_and_give_their_role,
    members_change_and_go_only_within_their_tenant, sessions_end_on_sign_out_and_are_bounded,
};
mod readings;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use readings::*;

use tether_server::store::{
    AppendOutcome, AppendRequest, ChannelBounds, DeviceIdentity, OpenedSession, ReadRange,
    Revocation, Role, Store, StoreError, StoreOptions, StoredEvent, TenantId, TransactionStats,
    UNCLAIMED_TENANT,
};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type TestResult = Result<(), BoxError>;

/// A fresh database for a store under test, and what the admin tools do
/// to it (the store trait has no admin operations: the CLI writes the
/// database directly).
pub trait StoreFixture: Sized {
    /// The store under test.
    type Store: Store;
    /// A new, empty database.
    fn new() -> Result<Self, BoxError>;
    /// Opens the store under test on this database (again: a restart).
    fn open(&self, options: StoreOptions) -> Result<Self::Store, BoxError>;
    /// An administrator's invitation (`tether-server invite`) to `tenant`
    /// with `role`; returns its token.
    fn invite(&self, tenant: TenantId, role: Role, expires_ms: u64) -> Result<String, BoxError>;
    /// Adds a tenant.
    fn add_tenant(&self, name: &str) -> Result<TenantId, BoxError>;
    /// Registers a device; returns its token.
    fn add_device(&self, tenant: TenantId, device_id: &str) -> Result<String, BoxError>;
    /// Registers a device with a claim code (in `tenant` or unclaimed)
    /// that expires at `expires_ms` (never: `None`); returns the code.
    fn add_claimable_device(
        &self,
        tenant: Option<TenantId>,
        device_id: &str,
        expires_ms: Option<u64>,
    ) -> Result<String, BoxError>;
    /// Sets a tenant's retention.
    fn set_retention(
        &self,
        tenant: TenantId,
        max_age: Option<Duration>,
        max_messages: Option<u64>,
    ) -> Result<(), BoxError>;
    /// Puts `count` events on a channel directly, as fast as the database
    /// can (a large table to start from), stored at `server_time_ms`.
    fn fill_channel(
        &self,
        tenant: TenantId,
        channel: &str,
        device_id: &str,
        count: u64,
        server_time_ms: u64,
    ) -> Result<(), BoxError>;
    /// Puts events on a channel directly, after the ones it has, each
    /// stored at its own `server_time_ms` (the writer stamps its own
    /// clock; series tests need chosen times).
    fn insert_events(
        &self,
        tenant: TenantId,
        channel: &str,
        events: &[TestEvent],
    ) -> Result<(), BoxError>;
}

/// An event for [`StoreFixture::insert_events`].
#[derive(Debug, Clone)]
pub struct TestEvent {
    /// The publishing device.
    pub device: String,
    /// When the server stored it (unix ms).
    pub server_time_ms: u64,
    /// JSON text.
    pub payload: String,
}

impl TestEvent {
    /// The events as the stores' bulk import takes them.
    pub fn to_import(events: &[TestEvent]) -> Vec<tether_server::store::ImportEvent> {
        events
            .iter()
            .map(|event| tether_server::store::ImportEvent {
                device: event.device.clone(),
                device_time_ms: None,
                server_time_ms: event.server_time_ms,
                payload: event.payload.clone(),
            })
            .collect()
    }
}

/// Invokes every test of the suite for one fixture type.
#[macro_export]
macro_rules! store_conformance_tests {
    ($fixture:ty) => {
        $crate::store_conformance_tests!(@tests $fixture;
            append_dedup_and_read_back,
            a_record_after_a_failed_one_is_stored_but_not_covered,
            gaps_the_device_made_do_not_hold_the_watermark,
            commits_are_counted_whatever_becomes_of_the_connection,
            claim_codes_expire,
            retention_and_claim,
            retention_of_a_large_table_lets_appends_commit_between_chunks,
            descriptions_commands_and_signal_strength,
            series_match_the_events_at_every_width,
            series_continue_with_the_live_tail,
            series_are_scoped_to_tenant_and_devices,
            retention_prunes_rolled_up_buckets,
            a_replaced_session_cannot_append,
            two_stores_on_one_database_fence_each_other,
            concurrent_writers_give_gap_free_offsets,
            an_account_made_with_a_claim_code_owns_the_device,
            sessions_end_on_sign_out_and_are_bounded,
            invitations_work_once_expire_and_give_their_role,
            members_change_and_go_only_within_their_tenant,
            an_administrators_invitation_makes_an_owner_of_an_existing_tenant,
        );
    };
    (@tests $fixture:ty; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() -> store_suite::TestResult {
                store_suite::$name::<$fixture>().await
            }
        )*
    };
}

pub const BOOT: u64 = u64::MAX - 3;

/// An append of record `seq` of device `d1`, sent after `previous_seq`.
pub fn record(tenant: TenantId, seq: u32, previous_seq: u32, channel: &str) -> AppendRequest {
    AppendRequest {
        tenant_id: tenant,
        device_id: "d1".into(),
        boot_id: BOOT,
        seq,
        previous_seq,
        channel: channel.into(),
        device_time_ms: Some(5),
        payload: format!("{{\"n\":{seq}}}"),
        fence: 0,
    }
}

/// Polls `operation` once, which puts it on the write queue (a store
/// queues an operation in its first poll, and the queue has room), and
/// returns it to be awaited for its answer. Coop budgeting is off for it,
/// so that first poll cannot be turned away.
pub async fn queued<F: core::future::Future>(
    operation: F,
) -> Result<core::pin::Pin<Box<tokio::task::Unconstrained<F>>>, BoxError> {
    let mut operation = Box::pin(tokio::task::unconstrained(operation));
    let finished =
        std::future::poll_fn(|cx| core::task::Poll::Ready(operation.as_mut().poll(cx).is_ready()))
            .await;
    if finished {
        return Err("the operation finished while the writer was held".into());
    }
    Ok(operation)
}

/// One operation failing inside a batch fails alone: the appends
/// committed with it are stored and acknowledged. The caller made claiming
/// `code` fail in the database (a real database error); `hold` takes a
/// lock the store's writer waits for, once the store is open, and
/// `release` lets it go: appends, the claim and more appends are all on
/// the queue by then, so the claim shares a transaction with appends
/// every time.
pub async fn a_failing_claim_fails_alone<F, H, R>(
    fixture: &F,
    tenant: TenantId,
    code: &str,
    hold: impl core::future::Future<Output = Result<H, BoxError>>,
    release: impl FnOnce(H) -> R,
) -> TestResult
where
    F: StoreFixture,
    R: core::future::Future<Output = Result<(), BoxError>>,
{
    let committed = Arc::new(Mutex::new(Vec::<TransactionStats>::new()));
    let seen = Arc::clone(&committed);
    let store = fixture.open(StoreOptions {
        on_transaction: Box::new(move |stats| {
            if let Ok(mut committed) = seen.lock()
                && stats.committed
            {
                committed.push(*stats);
            }
        }),
        ..StoreOptions::default()
    })?;
    let holder = hold.await?;
    let mut commits = Vec::new();
    for seq in 1..=3 {
        commits.push(store.append(record(tenant, seq, seq - 1, "t")).await?);
    }
    let mut claim = queued(store.claim(tenant, code, tether_server::now_ms())).await?;
    for seq in 4..=6 {
        commits.push(store.append(record(tenant, seq, seq - 1, "t")).await?);
    }
    release(holder).await?;
    match claim.as_mut().await {
        Err(StoreError::Database(text)) => assert!(text.contains("injected failure"), "{text}"),
        other => panic!("the claim should fail, got {other:?}"),
    }
    for commit in commits {
        assert!(matches!(commit.await?, AppendOutcome::Stored { .. }));
    }
    // Through the writer too, so it has reported every transaction before.
    assert_eq!(
        store
            .open_session("d1", "1", BOOT, 1)
            .await?
            .last_stored_seq,
        6
    );
    // Only appends and the claim were queued, the claim before the last
    // three appends, and the writer waited with at most what came before
    // it: a transaction with one operation more than it stored held the
    // claim.
    let committed = committed.lock().map_err(|_| "poisoned")?.clone();
    assert!(
        committed
            .iter()
            .any(|stats| stats.stored >= 1 && stats.operations == stats.stored as usize + 1),
        "the claim did not share a transaction with appends: {committed:?}"
    );
    assert_eq!(
        committed.iter().map(|stats| stats.stored).sum::<u64>(),
        6,
        "{committed:?}"
    );
    store.close().await;
    Ok(())
}

/// [`record`], sent in the session `opened` (with its fencing token).
pub fn record_in(
    opened: OpenedSession,
    tenant: TenantId,
    seq: u32,
    previous_seq: u32,
    channel: &str,
) -> AppendRequest {
    AppendRequest {
        fence: opened.fence,
        ..record(tenant, seq, previous_seq, channel)
    }
}

/// Opens a session of `d1` in `boot`.
async fn open<S: Store>(store: &S, boot: u64, now_ms: u64) -> Result<OpenedSession, BoxError> {
    Ok(store.open_session("d1", "1", boot, now_ms).await?)
}

async fn append<S: Store>(store: &S, request: AppendRequest) -> Result<AppendOutcome, BoxError> {
    Ok(store.append(request).await?.await?)
}

/// The `n` of every stored event of `channel`, in offset order.
async fn stored_numbers<S: Store>(
    store: &S,
    tenant: TenantId,
    channel: &str,
) -> Result<Vec<u64>, BoxError> {
    let events = store
        .read(
            tenant,
            channel,
            ReadRange::Offsets {
                from: 0,
                until: None,
            },
            100_000,
        )
        .await?;
    events
        .iter()
        .map(|event| {
            let value: serde_json::Value = serde_json::from_str(&event.payload)?;
            value["n"].as_u64().ok_or_else(|| "no n".into())
        })
        .collect()
}

/// Appends, de-duplication, reads, bounds and presence.
pub async fn append_dedup_and_read_back<F: StoreFixture>() -> TestResult {
    let fixture = F::new()?;
    let tenant = fixture.add_tenant("acme")?;
    let token = fixture.add_device(tenant, "d1")?;
    let store = fixture.open(StoreOptions::default())?;
    assert_eq!(
        store.authenticate_device(&token).await?,
        Some(DeviceIdentity {
            device_id: "d1".into(),
            tenant_id: tenant
        })
    );
    assert_eq!(store.authenticate_device("td_nope").await?, None);
    let s = open(&store, BOOT, 1).await?;
    assert_eq!(s.last_stored_seq, 0);
    let first = append(&store, record_in(s, tenant, 1, 0, "temp")).await?;
    let second = append(&store, record_in(s, tenant, 2, 1, "temp")).await?;
    let again = append(&store, record_in(s, tenant, 2, 2, "temp")).await?;
    let other = append(&store, record_in(s, tenant, 3, 2, "hum")).await?;
    assert_eq!(first, AppendOutcome::Stored { offset: 1 });
    assert_eq!(second, AppendOutcome::Stored { offset: 2 });
    assert_eq!(again, AppendOutcome::Duplicate);
    assert_eq!(other, AppendOutcome::Stored { offset: 1 });
    let again = open(&store, BOOT, 2).await?;
    assert_eq!(again.last_stored_seq, 3);
    assert!(again.fence > s.fence, "a new session gets a newer token");
    let events = store
        .read(
            tenant,
            "temp",
            ReadRange::Offsets {
                from: 0,
                until: None,
            },
            10,
        )
        .await?;
    let offsets: Vec<u64> = events.iter().map(|e| e.offset).collect();
    assert_eq!(offsets, [1, 2]);
    assert_eq!(events[1].payload, "{\"n\":2}");
    assert!(events[1].json_frame().contains("\"offset\":2"));
    assert_eq!(
        store.channel_bounds(tenant, "temp").await?,
        ChannelBounds {
            first_offset: 1,
            next_offset: 3
        }
    );
    assert_eq!(
        store.channel_bounds(tenant + 1, "temp").await?,
        ChannelBounds {
            first_offset: 1,
            next_offset: 1
        }
    );
    let devices = store.list_devices(tenant, tether_server::now_ms()).await?;
    assert_eq!(devices.len(), 1);
    assert!(devices[0].online);
    assert_eq!(devices[0].messages_today, 3);
    store.close().await;
    Ok(())
}

/// Record 2's write failed and record 3, pipelined behind it, committed:
/// 3 is stored, the watermark stays at 1 (so a reconnecting device resends
/// 2), and resending 2 and 3 stores 2 and nothing twice. (A store that
/// de-duplicated on the highest stored `seq` would call 2 a duplicate and
/// lose it.)
pub async fn a_record_after_a_failed_one_is_stored_but_not_covered<F: StoreFixture>() -> TestResult
{
    let fixture = F::new()?;
    let tenant = fixture.add_tenant("acme")?;
    fixture.add_device(tenant, "d1")?;
    let store = fixture.open(StoreOptions::default())?;
    let s = open(&store, BOOT, 1).await?;
    assert_eq!(s.last_stored_seq, 0);
    append(&store, record_in(s, tenant, 1, 0, "t")).await?;
    // Record 2 never reached the database; 3 was sent after it.
    assert!(matches!(
        append(&store, record_in(s, tenant, 3, 2, "t")).await?,
        AppendOutcome::Stored { .. }
    ));
    let s = open(&store, BOOT, 2).await?;
    assert_eq!(
        s.last_stored_seq, 1,
        "the watermark must not pass the record that was not stored"
    );
    // The device resends from 2.
    assert!(matches!(
        append(&store, record_in(s, tenant, 2, 1, "t")).await?,
        AppendOutcome::Stored { .. }
    ));
    let s = open(&store, BOOT, 3).await?;
    assert_eq!(s.last_stored_seq, 2);
    assert_eq!(
        append(&store, record_in(s, tenant, 3, 2, "t")).await?,
        AppendOutcome::Duplicate
    );
    let s = open(&store, BOOT, 4).await?;
    assert_eq!(s.last_stored_seq, 3);
    append(&store, record_in(s, tenant, 4, 3, "t")).await?;
    assert_eq!(open(&store, BOOT, 5).await?.last_stored_seq, 4);
    // After a restart too.
    store.close().await;
    let store = fixture.open(StoreOptions::default())?;
    let s = open(&store, BOOT, 6).await?;
    assert_eq!(s.last_stored_seq, 4);
    assert_eq!(
        append(&store, record_in(s, tenant, 3, 2, "t")).await?,
        AppendOutcome::Duplicate
    );
    let mut numbers = stored_numbers(&store, tenant, "t").await?;
    numbers.sort_unstable();
    assert_eq!(numbers, [1, 2, 3, 4], "each record exactly once");
    store.close().await;
    Ok(())
}

/// Records the device dropped itself (its outbox overflowed) were never
/// sent: the watermark moves over the gap.
pub async fn gaps_the_device_made_do_not_hold_the_watermark<F: StoreFixture>() -> TestResult {
    let fixture = F::new()?;
    let tenant = fixture.add_tenant("acme")?;
    fixture.add_device(tenant, "d1")?;
    let store = fixture.open(StoreOptions::default())?;
    let s = open(&store, BOOT, 1).await?;
    assert_eq!(s.last_stored_seq, 0);
    append(&store, record_in(s, tenant, 1, 0, "t")).await?;
    append(&store, record_in(s, tenant, 2, 1, "t")).await?;
    append(&store, record_in(s, tenant, 7, 2, "t")).await?;
    let s = open(&store, BOOT, 2).await?;
    assert_eq!(s.last_stored_seq, 7);
    // A new connection's first record follows the Welcome's watermark.
    append(&store, record_in(s, tenant, 9, 7, "t")).await?;
    assert_eq!(open(&store, BOOT, 3).await?.last_stored_seq, 9);
    // Another boot is another sequence space.
    assert_eq!(open(&store, BOOT - 1, 4).await?.last_stored_seq, 0);
    store.close().await;
    Ok(())
}

/// The store reports what it stored and de-duplicated at commit, also for
/// commits nobody waits for any more (the device's connection is gone).
pub async fn commits_are_counted_whatever_becomes_of_the_connection<F: StoreFixture>() -> TestResult
{
    let fixture = F::new()?;
    let tenant = fixture.add_tenant("acme")?;
    fixture.add_device(tenant, "d1")?;
    let totals = Arc::new(Mutex::new(TransactionStats::default()));
    let seen = Arc::clone(&totals);
    let store = fixture.open(StoreOptions {
        on_transaction: Box::new(move |stats| {
            if let Ok(mut totals) = seen.lock() {
                totals.operations += stats.operations;
                totals.stored += stats.stored;
                totals.duplicates += stats.duplicates;
            }
        }),
        ..StoreOptions::default()
    })?;
    append(&store, record(tenant, 1, 0, "t")).await?;
    // Enqueued, then the connection went away: nobody awaits the commit.
    for seq in 2..=5 {
        drop(store.append(record(tenant, seq, seq - 1, "t")).await?);
    }
    drop(store.append(record(tenant, 1, 5, "t")).await?);
    store.close().await;
    let totals = *totals.lock().map_err(|_| "poisoned")?;
    assert_eq!((totals.stored, totals.duplicates), (5, 1));
    Ok(())
}

pub async fn claim_codes_expire<F: StoreFixture>() -> TestResult {
    let fixture = F::new()?;
    let store = fixture.open(StoreOptions::default())?;
    let tenant = fixture.add_tenant("acme")?;
    let never = fixture.add_claimable_device(None, "never-1", None)?;
    let soon = fixture.add_claimable_device(None, "soon-1", Some(10_000))?;
    assert_eq!(
        store.claim(tenant, &soon, 10_000).await,
        Err(StoreError::Expired)
    );
    assert_eq!(store.claim(tenant, &soon, 9_999).await?, "soon-1");
    assert_eq!(store.claim(tenant, &never, u64::MAX).await?, "never-1");
    store.close().await;
    Ok(())
}

pub async fn retention_and_claim<F: StoreFixture>() -> TestResult {
    let fixture = F::new()?;
    let tenant = fixture.add_tenant("acme")?;
    fixture.add_device(tenant, "d1")?;
    let code = fixture.add_claimable_device(None, "label-1", None)?;
    fixture.set_retention(tenant, None, Some(2))?;
    let store = fixture.open(StoreOptions::default())?;
    for seq in 1..=5 {
        append(&store, record(tenant, seq, seq - 1, "temp")).await?;
    }
    assert_eq!(store.enforce_retention(tether_server::now_ms()).await?, 3);
    let bounds = store.channel_bounds(tenant, "temp").await?;
    assert_eq!((bounds.first_offset, bounds.next_offset), (4, 6));
    // Retention removes events, not what de-duplication knows.
    assert_eq!(
        append(&store, record(tenant, 1, 0, "temp")).await?,
        AppendOutcome::Duplicate
    );
    assert_eq!(
        store.device_tenant("label-1").await?,
        Some(UNCLAIMED_TENANT)
    );
    assert_eq!(
        store
            .claim(tenant, "WRONGCODE000", tether_server::now_ms())
            .await,
        Err(StoreError::NotFound)
    );
    assert_eq!(
        store
            .claim(tenant, &code.to_lowercase(), tether_server::now_ms())
            .await?,
        "label-1"
    );
    assert_eq!(store.device_tenant("label-1").await?, Some(tenant));
    assert_eq!(
        store.claim(tenant, &code, tether_server::now_ms()).await,
        Err(StoreError::NotFound)
    );
    let (revocations, _) = store.revocations_since(0).await?;
    assert_eq!(revocations, [Revocation::Moved("label-1".into())]);
    store.close().await;
    Ok(())
}

/// Rows of the large table.
pub const LARGE_TABLE: u64 = 200_000;
/// The longest an append may wait for its commit while retention runs.
pub const APPEND_BOUND: Duration = Duration::from_secs(2);

/// Turning retention on for a large table: appends keep committing while
/// it deletes (each within [`APPEND_BOUND`], many before it is done), and
/// it deletes what it should.
pub async fn retention_of_a_large_table_lets_appends_commit_between_chunks<F: StoreFixture>()
-> TestResult {
    let fixture = F::new()?;
    let tenant = fixture.add_tenant("acme")?;
    fixture.add_device(tenant, "d1")?;
    let old_ms = tether_server::now_ms() - 10 * 86_400_000;
    fixture.fill_channel(tenant, "old", "d1", LARGE_TABLE, old_ms)?;
    fixture.set_retention(tenant, Some(Duration::from_secs(86_400)), None)?;
    let store = Arc::new(fixture.open(StoreOptions::default())?);
    let retention = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.enforce_retention(tether_server::now_ms()).await })
    };
    let started = Instant::now();
    let mut during = 0u32;
    let mut slowest = Duration::ZERO;
    let mut seq = 0u32;
    while !retention.is_finished() {
        seq += 1;
        let begun = Instant::now();
        let outcome = append(&*store, record(tenant, seq, seq - 1, "new")).await?;
        assert!(matches!(outcome, AppendOutcome::Stored { .. }));
        slowest = slowest.max(begun.elapsed());
        if !retention.is_finished() {
            during += 1;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "retention did not finish"
        );
    }
    let removed = retention.await??;
    assert_eq!(removed, LARGE_TABLE);
    assert!(
        during >= 5,
        "only {during} appends committed while retention ran for {:?}: it holds the writer",
        started.elapsed()
    );
    assert!(
        slowest < APPEND_BOUND,
        "an append waited {slowest:?} for its commit while retention ran"
    );
    let bounds = store.channel_bounds(tenant, "old").await?;
    assert_eq!(
        bounds.first_offset, bounds.next_offset,
        "all old events gone"
    );
    assert_eq!(
        stored_numbers(&*store, tenant, "new").await?.len(),
        usize::try_from(seq)?
    );
    store.close().await;
    Ok(())
}

/// A device reconnects while its old session still has appends in flight:
/// the new session's token fences the old one out, in the database.
pub async fn a_replaced_session_cannot_append<F: StoreFixture>() -> TestResult {
    let fixture = F::new()?;
    let tenant = fixture.add_tenant("acme")?;
    fixture.add_device(tenant, "d1")?;
    let store = fixture.open(StoreOptions::default())?;
    let old = open(&store, BOOT, 1).await?;
    append(&store, record_in(old, tenant, 1, 0, "t")).await?;
    let new = open(&store, BOOT, 2).await?;
    assert_eq!(new.last_stored_seq, 1);
    assert!(new.fence > old.fence);
    // The old session's late write is refused, whatever it carries.
    assert_eq!(
        store.append(record_in(old, tenant, 2, 1, "t")).await?.await,
        Err(StoreError::Fenced)
    );
    assert_eq!(
        store.append(record_in(old, tenant, 1, 0, "t")).await?.await,
        Err(StoreError::Fenced)
    );
    assert_eq!(
        append(&store, record_in(new, tenant, 2, 1, "t")).await?,
        AppendOutcome::Stored { offset: 2 }
    );
    // The old session's end leaves the device online: the new one has it.
    store.close_session("d1", old.fence, 3).await?;
    let devices = store.list_devices(tenant, tether_server::now_ms()).await?;
    assert!(
        devices[0].online,
        "a replaced session took the device offline"
    );
    store.close_session("d1", new.fence, 4).await?;
    let devices = store.list_devices(tenant, tether_server::now_ms()).await?;
    assert!(!devices[0].online);
    assert_eq!(stored_numbers(&store, tenant, "t").await?, [1, 2]);
    store.close().await;
    Ok(())
}

/// Two stores on one database (two server nodes): a device moves from
/// one to the other while the first still writes for it, interleaved.
/// The first node's writes after the move are refused; nothing is stored
/// twice or out of order.
pub async fn two_stores_on_one_database_fence_each_other<F: StoreFixture>() -> TestResult {
    let fixture = F::new()?;
    let tenant = fixture.add_tenant("acme")?;
    fixture.add_device(tenant, "d1")?;
    let node_a = fixture.open(StoreOptions::default())?;
    let node_b = fixture.open(StoreOptions::default())?;
    let on_a = open(&node_a, BOOT, 1).await?;
    for seq in 1..=3 {
        append(&node_a, record_in(on_a, tenant, seq, seq - 1, "t")).await?;
    }
    // The device reconnects to B; A has records 4 and 5 in flight.
    let on_b = open(&node_b, BOOT, 2).await?;
    assert_eq!(on_b.last_stored_seq, 3);
    let late = node_a.append(record_in(on_a, tenant, 4, 3, "t")).await?;
    let resent = append(&node_b, record_in(on_b, tenant, 4, 3, "t")).await?;
    assert_eq!(late.await, Err(StoreError::Fenced));
    assert_eq!(resent, AppendOutcome::Stored { offset: 4 });
    assert_eq!(
        node_a
            .append(record_in(on_a, tenant, 5, 4, "t"))
            .await?
            .await,
        Err(StoreError::Fenced)
    );
    append(&node_b, record_in(on_b, tenant, 5, 4, "t")).await?;
    // And back to A: now B is the stale one.
    let again_a = open(&node_a, BOOT, 3).await?;
    assert_eq!(again_a.last_stored_seq, 5);
    assert_eq!(
        node_b
            .append(record_in(on_b, tenant, 6, 5, "t"))
            .await?
            .await,
        Err(StoreError::Fenced)
    );
    append(&node_a, record_in(again_a, tenant, 6, 5, "t")).await?;
    assert_eq!(
        stored_numbers(&node_a, tenant, "t").await?,
        [1, 2, 3, 4, 5, 6]
    );
    node_a.close().await;
    node_b.close().await;
    Ok(())
}

/// Records appended to this many devices per store.
pub const CONCURRENT_DEVICES: u32 = 4;
/// Records each device appends.
pub const CONCURRENT_RECORDS: u32 = 150;

/// Three stores on one database (three nodes) append concurrently to one
/// channel: its offsets are 1, 2, 3, … without a gap or a repeat, every
/// record is stored once, each device's records are in its order, and
/// each store hands its commits to its hook in offset order.
pub async fn concurrent_writers_give_gap_free_offsets<F: StoreFixture>() -> TestResult {
    let fixture = F::new()?;
    let tenant = fixture.add_tenant("acme")?;
    let mut writers = Vec::new();
    for node in 0..3u32 {
        let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
        let hook = Arc::clone(&seen);
        let store = Arc::new(fixture.open(StoreOptions {
            on_commit: Box::new(move |events: Vec<Arc<StoredEvent>>| {
                if let Ok(mut seen) = hook.lock() {
                    seen.extend(events.iter().map(|event| event.offset));
                }
            }),
            ..StoreOptions::default()
        })?);
        for number in 0..CONCURRENT_DEVICES {
            let device = format!("n{node}-d{number}");
            fixture.add_device(tenant, &device)?;
            writers.push((Arc::clone(&store), Arc::clone(&seen), device));
        }
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (store, _, device) in &writers {
        let store = Arc::clone(store);
        let device = device.clone();
        tasks.spawn(async move {
            let opened = store.open_session(&device, "1", BOOT, 1).await?;
            // Pipelined: every commit is awaited at the end.
            let mut commits = Vec::new();
            for seq in 1..=CONCURRENT_RECORDS {
                let mut request = record_in(opened, tenant, seq, seq - 1, "shared");
                request.device_id = device.clone();
                request.payload = format!("{{\"d\":\"{device}\",\"n\":{seq}}}");
                commits.push(store.append(request).await?);
            }
            for commit in commits {
                assert!(matches!(commit.await?, AppendOutcome::Stored { .. }));
            }
            Ok::<_, BoxError>(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    let events = writers[0]
        .0
        .read(
            tenant,
            "shared",
            ReadRange::Offsets {
                from: 1,
                until: None,
            },
            100_000,
        )
        .await?;
    let total = u64::from(3 * CONCURRENT_DEVICES * CONCURRENT_RECORDS);
    let offsets: Vec<u64> = events.iter().map(|event| event.offset).collect();
    assert_eq!(offsets, (1..=total).collect::<Vec<_>>(), "gap-free offsets");
    let mut last: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for event in &events {
        let value: serde_json::Value = serde_json::from_str(&event.payload)?;
        let device = value["d"].as_str().ok_or("no d")?.to_owned();
        let n = value["n"].as_u64().ok_or("no n")?;
        let previous = last.insert(device.clone(), n).unwrap_or(0);
        assert_eq!(n, previous + 1, "{device}: record {n} after {previous}");
    }
    for (store, seen, _) in writers.iter().step_by(CONCURRENT_DEVICES as usize) {
        let seen = seen.lock().map_err(|_| "poisoned")?.clone();
        assert_eq!(seen.len() as u64, total / 3);
        assert!(
            seen.windows(2).all(|pair| pair[0] < pair[1]),
            "a store handed its commits out of offset order"
        );
        store.close().await;
    }
    Ok(())
}
