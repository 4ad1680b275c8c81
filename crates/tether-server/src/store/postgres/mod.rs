//! [`PgStore`]: the store on PostgreSQL, for several server nodes on one
//! database (see `docs/deploy.md`, "A cluster").
//!
//! ```text
//!  device tasks ──append──▶ bounded queue ──▶ writer (writer.rs), its own thread and
//!   (wait when full =                          connection: BEGIN … ≤ 512 ops … COMMIT,
//!    backpressure)                             a fixed number of statements per batch
//!                                               │ reply to each op after COMMIT
//!                                               └▶ on_commit(events, in offset order)
//!                                              retention.rs: bounded chunks between batches
//!  readers ──▶ pool of `read_connections` (read.rs; READ COMMITTED)
//!  readings ──▶ the same pool: descriptions, commands, roll-ups in short
//!               transactions of their own, series in one snapshot (readings.rs)
//!  admin CLI ──▶ PgAdmin (admin.rs)
//!  accounts (accounts.rs): writes through the writer, reads on the pool
//! ```
//!
//! Same semantics as [`SqliteStore`](super::SqliteStore), held by the
//! shared test suite: an append resolves only after its transaction
//! committed; de-duplication on `(device, boot_id, seq)` (the contiguous
//! watermark in `boots`, the records stored above it in `stored_seqs`,
//! whose primary key is the unique constraint); offsets per channel from a
//! counter row locked in the appending transaction, so they are gap-free
//! and monotonic across nodes; the session fencing token checked, under the
//! device row's lock, in the appending transaction.
//!
//! # Why `tokio-postgres` (with `deadpool-postgres`)
//!
//! The writer needs one connection of its own, explicit transactions and
//! savepoints, prepared statements and array parameters (a batch's appends
//! go as `unnest` arrays, a handful of round trips per batch): that is
//! `tokio-postgres`, the asynchronous driver of the rust-postgres project,
//! with nothing on top. `deadpool-postgres` adds the bounded pool for
//! readers with a per-connection statement cache. sqlx would bring a
//! second query layer (and compile-time checking that wants a database at
//! build time or checked-in metadata) for no gain here.
//!
//! Connections are plain TCP or Unix sockets (`NoTls`): run PostgreSQL on
//! a private network or the same host, or put a TLS tunnel in front.

mod accounts;
mod admin;
mod read;
mod readings;
mod retention;
mod schema;
mod writer;

use std::sync::{Arc, Mutex};

use deadpool_postgres::{Object, Pool};
use tokio::sync::{mpsc, oneshot};

pub use admin::PgAdmin;

use super::accounts::AccountOp;
use super::{
    AccountStore, AppendRequest, BoxFuture, ChannelBounds, ChannelDescription, ChannelInfo, Commit,
    DeclaredCommand, DeviceIdentity, DeviceInfo, KeyIdentity, OpenedSession, ReadRange, Revocation,
    Series, SeriesQuery, Store, StoreError, StoreOptions, StoredEvent, TenantId,
};
use schema::pool_error;
use writer::WriteOp;

/// The PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    node: String,
    writer: Mutex<Option<mpsc::Sender<WriteOp>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: Pool,
}

impl core::fmt::Debug for Inner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PgStore")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`),
    /// creates or migrates the schema, and starts the writer. `node` names
    /// this server node: the devices whose sessions it holds are its own
    /// (`reset_presence` marks only those offline).
    pub async fn connect(
        url: &str,
        node: &str,
        options: StoreOptions,
    ) -> Result<PgStore, StoreError> {
        let readers = schema::pool(url, options.read_connections)?;
        schema::migrate(&readers).await?;
        let writer_pool = schema::pool(url, 1)?;
        let (sender, receiver) = mpsc::channel(options.queue_capacity.max(1));
        let writer_node = node.to_owned();
        let thread = std::thread::Builder::new()
            .name("tether-pg-writer".into())
            .spawn(move || {
                // The writer's own runtime: its connection and its batches
                // never wait for the server's busy worker threads.
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => {
                        runtime.block_on(writer::run(writer_pool, writer_node, receiver, options));
                    }
                    Err(error) => tracing::error!(%error, "cannot start the store writer"),
                }
            })
            .map_err(|error| StoreError::Database(error.to_string()))?;
        Ok(PgStore {
            inner: Arc::new(Inner {
                node: node.to_owned(),
                writer: Mutex::new(Some(sender)),
                writer_thread: Mutex::new(Some(thread)),
                readers,
            }),
        })
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    fn sender(&self) -> Result<mpsc::Sender<WriteOp>, StoreError> {
        self.inner
            .writer
            .lock()
            .map_err(|_| StoreError::Closed)?
            .clone()
            .ok_or(StoreError::Closed)
    }

    async fn write<T: Send + 'static>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> WriteOp,
    ) -> Result<T, StoreError> {
        let (reply, result) = oneshot::channel();
        self.sender()?
            .send(op(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        result.await.map_err(|_| StoreError::Closed)?
    }

    async fn account_write<T: Send + 'static>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> AccountOp,
    ) -> Result<T, StoreError> {
        self.write(|reply| WriteOp::Account(op(reply))).await
    }

    async fn reader(&self) -> Result<Object, StoreError> {
        self.inner.readers.get().await.map_err(pool_error)
    }
}

fn boxed<'a, T: Send + 'a>(
    future: impl core::future::Future<Output = T> + Send + 'a,
) -> BoxFuture<'a, T> {
    Box::pin(future)
}

impl Store for PgStore {
    fn authenticate_device(
        &self,
        token: &str,
    ) -> BoxFuture<'_, Result<Option<DeviceIdentity>, StoreError>> {
        let token = token.to_owned();
        boxed(async move { read::authenticate_device(&self.reader().await?, &token).await })
    }

    fn authenticate_key(
        &self,
        key: &str,
    ) -> BoxFuture<'_, Result<Option<KeyIdentity>, StoreError>> {
        let key = key.to_owned();
        boxed(async move { read::authenticate_key(&self.reader().await?, &key).await })
    }

    fn open_session(
        &self,
        device_id: &str,
        firmware_version: &str,
        boot_id: u64,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<OpenedSession, StoreError>> {
        let device_id = device_id.to_owned();
        let firmware_version = firmware_version.to_owned();
        boxed(self.write(move |reply| WriteOp::OpenSession {
            device_id,
            firmware_version,
            boot_id,
            now_ms,
            reply,
        }))
    }

    fn close_session(
        &self,
        device_id: &str,
        fence: u64,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        let device_id = device_id.to_owned();
        boxed(self.write(move |reply| WriteOp::CloseSession {
            device_id,
            fence,
            now_ms,
            reply,
        }))
    }

    fn append(&self, request: AppendRequest) -> BoxFuture<'_, Result<Commit, StoreError>> {
        boxed(async move {
            let (reply, result) = oneshot::channel();
            self.sender()?
                .send(WriteOp::Append(request, reply))
                .await
                .map_err(|_| StoreError::Closed)?;
            let commit: Commit =
                Box::pin(async move { result.await.map_err(|_| StoreError::Closed)? });
            Ok(commit)
        })
    }

    fn channel_bounds(
        &self,
        tenant_id: TenantId,
        channel: &str,
    ) -> BoxFuture<'_, Result<ChannelBounds, StoreError>> {
        let channel = channel.to_owned();
        boxed(async move { read::channel_bounds(&self.reader().await?, tenant_id, &channel).await })
    }

    fn read(
        &self,
        tenant_id: TenantId,
        channel: &str,
        range: ReadRange,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Arc<StoredEvent>>, StoreError>> {
        let channel = channel.to_owned();
        boxed(async move {
            read::events(&self.reader().await?, tenant_id, &channel, range, limit).await
        })
    }

    fn list_devices(
        &self,
        tenant_id: TenantId,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<Vec<DeviceInfo>, StoreError>> {
        boxed(async move { read::devices(&self.reader().await?, tenant_id, now_ms).await })
    }

    fn list_channels(
        &self,
        tenant_id: TenantId,
    ) -> BoxFuture<'_, Result<Vec<ChannelInfo>, StoreError>> {
        boxed(async move { read::channels(&self.reader().await?, tenant_id).await })
    }

    fn device_tenant(
        &self,
        device_id: &str,
    ) -> BoxFuture<'_, Result<Option<TenantId>, StoreError>> {
        let device_id = device_id.to_owned();
        boxed(async move { read::device_tenant(&self.reader().await?, &device_id).await })
    }

    fn claim(
        &self,
        tenant_id: TenantId,
        claim_code: &str,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<String, StoreError>> {
        let claim_code = claim_code.to_owned();
        boxed(self.write(move |reply| WriteOp::Claim {
            tenant_id,
            claim_code,
            now_ms,
            reply,
        }))
    }

    fn enforce_retention(&self, now_ms: u64) -> BoxFuture<'_, Result<u64, StoreError>> {
        boxed(self.write(move |reply| WriteOp::Retention { now_ms, reply }))
    }

    fn revocations_since(
        &self,
        after: i64,
    ) -> BoxFuture<'_, Result<(Vec<Revocation>, i64), StoreError>> {
        boxed(async move { read::revocations_since(&self.reader().await?, after).await })
    }

    fn reset_presence(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        boxed(self.write(WriteOp::ResetPresence))
    }

    fn describe_channel(
        &self,
        tenant_id: TenantId,
        device_id: &str,
        channel: &str,
        fields: &str,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        let (device_id, channel, fields) =
            (device_id.to_owned(), channel.to_owned(), fields.to_owned());
        boxed(async move {
            readings::describe_channel(
                &self.reader().await?,
                tenant_id,
                &device_id,
                &channel,
                &fields,
                now_ms,
            )
            .await
        })
    }

    fn channel_descriptions(
        &self,
        tenant_id: TenantId,
        channel: &str,
    ) -> BoxFuture<'_, Result<Vec<ChannelDescription>, StoreError>> {
        let channel = channel.to_owned();
        boxed(async move {
            readings::channel_descriptions(&self.reader().await?, tenant_id, &channel).await
        })
    }

    fn set_commands(
        &self,
        device_id: &str,
        commands: Vec<DeclaredCommand>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        let device_id = device_id.to_owned();
        boxed(async move {
            readings::set_commands(&mut self.reader().await?, &device_id, &commands).await
        })
    }

    fn set_rssi(
        &self,
        device_id: &str,
        rssi_dbm: i16,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        let device_id = device_id.to_owned();
        boxed(async move {
            readings::set_rssi(&self.reader().await?, &device_id, rssi_dbm, now_ms).await
        })
    }

    fn series(
        &self,
        tenant_id: TenantId,
        channel: &str,
        query: SeriesQuery,
    ) -> BoxFuture<'_, Result<Series, StoreError>> {
        let channel = channel.to_owned();
        boxed(async move {
            readings::series(&mut self.reader().await?, tenant_id, &channel, &query).await
        })
    }

    fn roll_up(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        boxed(async move { readings::roll_up(&mut self.reader().await?).await })
    }

    fn accounts(&self) -> &dyn AccountStore {
        self
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        boxed(async move {
            if let Ok(mut writer) = self.inner.writer.lock() {
                writer.take();
            }
            let thread = self
                .inner
                .writer_thread
                .lock()
                .ok()
                .and_then(|mut thread| thread.take());
            if let Some(thread) = thread {
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            }
            self.inner.readers.close();
        })
    }
}
