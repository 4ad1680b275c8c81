//! A store that fails chosen writes: a wrapper of the server's real store
//! (every other call, and every write it does not fail, goes to the real
//! database), for the acknowledgement tests.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tether_server::store::{
    AccountStore, AppendOutcome, AppendRequest, BoxFuture, ChannelBounds, ChannelDescription,
    ChannelInfo, Commit, DeclaredCommand, DeviceIdentity, DeviceInfo, KeyIdentity, OpenedSession,
    ReadRange, Revocation, Series, SeriesQuery, Store, StoreError, StoredEvent, TenantId,
};

/// How one append fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The write never reaches the database (its transaction failed).
    Lost,
    /// The write is stored, but its commit reports a failure (the reply
    /// was lost: the record is in the database though nobody was told).
    Unconfirmed,
}

/// Per `(boot_id, seq)`, the faults of its next attempts, in order.
type Faults = HashMap<(u64, u32), VecDeque<Fault>>;

/// Which appends fail: per `(boot_id, seq)`, the faults of its next
/// attempts, in order (attempts after the listed ones succeed).
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    faults: Arc<Mutex<Faults>>,
    injected: Arc<AtomicU64>,
}

impl FaultPlan {
    /// The next append of `(boot_id, seq)` fails with `fault`.
    pub fn fail(&self, boot_id: u64, seq: u32, fault: Fault) {
        if let Ok(mut faults) = self.faults.lock() {
            faults.entry((boot_id, seq)).or_default().push_back(fault);
        }
    }

    /// No more failures.
    pub fn clear(&self) {
        if let Ok(mut faults) = self.faults.lock() {
            faults.clear();
        }
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    fn take(&self, boot_id: u64, seq: u32) -> Option<Fault> {
        let mut faults = self.faults.lock().ok()?;
        let queue = faults.get_mut(&(boot_id, seq))?;
        let fault = queue.pop_front();
        if queue.is_empty() {
            faults.remove(&(boot_id, seq));
        }
        if fault.is_some() {
            self.injected.fetch_add(1, Ordering::Relaxed);
        }
        fault
    }
}

/// The real store, with the appends of a [`FaultPlan`] failing.
pub struct FaultyStore {
    inner: Arc<dyn Store>,
    plan: FaultPlan,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn Store>, plan: FaultPlan) -> Self {
        FaultyStore { inner, plan }
    }
}

fn injected() -> StoreError {
    StoreError::Database("injected failure".into())
}

impl Store for FaultyStore {
    fn append(&self, request: AppendRequest) -> BoxFuture<'_, Result<Commit, StoreError>> {
        Box::pin(async move {
            match self.plan.take(request.boot_id, request.seq) {
                None => self.inner.append(request).await,
                Some(Fault::Lost) => {
                    let commit: Commit = Box::pin(async { Err(injected()) });
                    Ok(commit)
                }
                Some(Fault::Unconfirmed) => {
                    let stored = self.inner.append(request).await?;
                    let commit: Commit = Box::pin(async move {
                        let _: Result<AppendOutcome, StoreError> = stored.await;
                        Err(injected())
                    });
                    Ok(commit)
                }
            }
        })
    }

    fn authenticate_device(
        &self,
        token: &str,
    ) -> BoxFuture<'_, Result<Option<DeviceIdentity>, StoreError>> {
        self.inner.authenticate_device(token)
    }

    fn authenticate_key(
        &self,
        key: &str,
    ) -> BoxFuture<'_, Result<Option<KeyIdentity>, StoreError>> {
        self.inner.authenticate_key(key)
    }

    fn open_session(
        &self,
        device_id: &str,
        firmware_version: &str,
        boot_id: u64,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<OpenedSession, StoreError>> {
        self.inner
            .open_session(device_id, firmware_version, boot_id, now_ms)
    }

    fn close_session(
        &self,
        device_id: &str,
        fence: u64,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.close_session(device_id, fence, now_ms)
    }

    fn channel_bounds(
        &self,
        tenant_id: TenantId,
        channel: &str,
    ) -> BoxFuture<'_, Result<ChannelBounds, StoreError>> {
        self.inner.channel_bounds(tenant_id, channel)
    }

    fn read(
        &self,
        tenant_id: TenantId,
        channel: &str,
        range: ReadRange,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Arc<StoredEvent>>, StoreError>> {
        self.inner.read(tenant_id, channel, range, limit)
    }

    fn list_devices(
        &self,
        tenant_id: TenantId,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<Vec<DeviceInfo>, StoreError>> {
        self.inner.list_devices(tenant_id, now_ms)
    }

    fn list_channels(
        &self,
        tenant_id: TenantId,
    ) -> BoxFuture<'_, Result<Vec<ChannelInfo>, StoreError>> {
        self.inner.list_channels(tenant_id)
    }

    fn device_tenant(
        &self,
        device_id: &str,
    ) -> BoxFuture<'_, Result<Option<TenantId>, StoreError>> {
        self.inner.device_tenant(device_id)
    }

    fn claim(
        &self,
        tenant_id: TenantId,
        claim_code: &str,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<String, StoreError>> {
        self.inner.claim(tenant_id, claim_code, now_ms)
    }

    fn enforce_retention(&self, now_ms: u64) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.inner.enforce_retention(now_ms)
    }

    fn revocations_since(
        &self,
        after: i64,
    ) -> BoxFuture<'_, Result<(Vec<Revocation>, i64), StoreError>> {
        self.inner.revocations_since(after)
    }

    fn reset_presence(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.reset_presence()
    }

    fn accounts(&self) -> &dyn AccountStore {
        self.inner.accounts()
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        self.inner.close()
    }

    fn describe_channel(
        &self,
        tenant_id: TenantId,
        device_id: &str,
        channel: &str,
        fields: &str,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner
            .describe_channel(tenant_id, device_id, channel, fields, now_ms)
    }

    fn channel_descriptions(
        &self,
        tenant_id: TenantId,
        channel: &str,
    ) -> BoxFuture<'_, Result<Vec<ChannelDescription>, StoreError>> {
        self.inner.channel_descriptions(tenant_id, channel)
    }

    fn set_commands(
        &self,
        device_id: &str,
        commands: Vec<DeclaredCommand>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.set_commands(device_id, commands)
    }

    fn set_rssi(
        &self,
        device_id: &str,
        rssi_dbm: i16,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.set_rssi(device_id, rssi_dbm, now_ms)
    }

    fn series(
        &self,
        tenant_id: TenantId,
        channel: &str,
        query: SeriesQuery,
    ) -> BoxFuture<'_, Result<Series, StoreError>> {
        self.inner.series(tenant_id, channel, query)
    }

    fn roll_up(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.inner.roll_up()
    }
}
