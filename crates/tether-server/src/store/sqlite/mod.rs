//! [`SqliteStore`]: SQLite in WAL mode, one writer thread committing batched
//! transactions, a bounded pool of reader connections.
//!
//! ```text
//!  device tasks ──append──▶ bounded queue ──▶ writer thread (writer.rs):
//!   (wait when full =                          BEGIN IMMEDIATE … ≤ 4096 ops … COMMIT
//!    backpressure)                              │ (WAL written, synchronous = NORMAL)
//!                                               ▼
//!                                     sync thread (sync.rs): fdatasync(WAL) once for
//!                                      every batch committed so far, then reply to each
//!                                      op and on_commit(events, in offset order)
//!                                              retention.rs: bounded chunks between
//!                                              batches; rollup.rs: chunks read on
//!                                              readers, added by the writer
//!                                              checkpoint.rs: WAL → database file on its
//!                                                own thread, never inside a commit
//!  readers ──▶ permit (read_connections) ──▶ spawn_blocking on a pooled
//!              read-only connection (read.rs; WAL: readers never block)
//! ```
//!
//! The files follow the store's concerns: `schema.rs` (tables, migrations,
//! connections), `writer.rs` (the batched writer: appends with their
//! de-duplication and watermark, sessions), `checkpoint.rs`, `read.rs`,
//! `claim.rs`, `retention.rs`, `readings.rs` (descriptions, commands,
//! series) and `rollup.rs` (the buckets series read), `sync.rs` (group
//! commit), `seen.rs` (devices' counts, written late), `accounts.rs` (people
//! who sign in: accounts, sessions, memberships, invitations), and
//! `admin.rs` (the CLI's direct
//! operations).

mod accounts;
mod admin;
mod checkpoint;
mod claim;
mod hot;
mod read;
mod readings;
mod retention;
mod rollup;
mod schema;
mod seen;
mod sync;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::{Semaphore, mpsc, oneshot};

pub use admin::{Admin, ImportEvent};

use super::{
    AccountStore, AppendRequest, BoxFuture, ChannelBounds, ChannelDescription, ChannelInfo, Commit,
    Commits, DeclaredCommand, DeviceIdentity, DeviceInfo, KeyIdentity, OpenedSession, ReadRange,
    Revocation, Series, SeriesQuery, Store, StoreError, StoreOptions, StoredEvent, TenantId,
};
use readings::ReadingsWrite;
use writer::WriteOp;

/// The writer connection's page cache, KiB.
const WRITER_CACHE_KIB: i64 = 64 * 1024;

/// The SQLite store: a database file in WAL mode.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Option<mpsc::Sender<WriteOp>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Idle reader connections.
    readers: Mutex<Vec<Connection>>,
    /// One permit per reader connection that may exist: a read holds one
    /// from before it takes (or opens) a connection until it gave it back.
    read_permits: Arc<Semaphore>,
}

impl core::fmt::Debug for Inner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens or creates the database at `path` (migrating one made by an
    /// older version) and starts its writer thread.
    pub fn open(path: &Path, mut options: StoreOptions) -> Result<SqliteStore, StoreError> {
        let conn = schema::open_connection(path)?;
        // The writer's commits are synced by the syncer thread, which
        // answers them only then (`sync.rs`): SQLite itself does not wait
        // for the disk in the writer's commit.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let syncer = writer::start_syncer(PathBuf::from(wal), &mut options)?;
        // The writer's page cache holds the pages a batch touches (one leaf
        // of `messages`, `boots`, `channels` and `devices` per device in
        // it): with the default 2 MB, thousands of devices meant reading
        // pages back from the file in every batch.
        conn.pragma_update(None, "cache_size", WRITER_CACHE_KIB.saturating_neg())?;
        // Checkpoints run on their own thread (see `checkpoint.rs`).
        let checkpointer = checkpoint::Checkpointer::start(path);
        if checkpointer.is_some() {
            conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        }
        let (sender, receiver) = mpsc::channel(options.queue_capacity.max(1));
        let read_connections = options.read_connections.max(1);
        let thread = std::thread::Builder::new()
            .name("tether-store-writer".into())
            .spawn(move || {
                writer::run(conn, receiver, options, syncer);
                drop(checkpointer);
            })
            .map_err(|error| StoreError::Database(error.to_string()))?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                writer: Mutex::new(Some(sender)),
                writer_thread: Mutex::new(Some(thread)),
                readers: Mutex::new(Vec::with_capacity(read_connections)),
                read_permits: Arc::new(Semaphore::new(read_connections)),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
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

    async fn read_with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        // Waiting here, not in a blocking thread: a burst of reads queues
        // on the permits instead of opening a connection each.
        let permit = Arc::clone(&self.inner.read_permits)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let pooled = inner.readers.lock().ok().and_then(|mut pool| pool.pop());
            let conn = match pooled {
                Some(conn) => conn,
                None => schema::open_reader(&inner.path)?,
            };
            let result = f(&conn);
            if let Ok(mut pool) = inner.readers.lock() {
                pool.push(conn);
            }
            result
        })
        .await
        .map_err(|error| StoreError::Database(error.to_string()))?
    }
}

fn boxed<'a, T: Send + 'a>(
    future: impl core::future::Future<Output = T> + Send + 'a,
) -> BoxFuture<'a, T> {
    Box::pin(future)
}

impl Store for SqliteStore {
    fn authenticate_device(
        &self,
        token: &str,
    ) -> BoxFuture<'_, Result<Option<DeviceIdentity>, StoreError>> {
        let token = token.to_owned();
        boxed(self.read_with(move |conn| read::authenticate_device(conn, &token)))
    }

    fn authenticate_key(
        &self,
        key: &str,
    ) -> BoxFuture<'_, Result<Option<KeyIdentity>, StoreError>> {
        let key = key.to_owned();
        boxed(self.read_with(move |conn| read::authenticate_key(conn, &key)))
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

    fn append_all(
        &self,
        requests: Vec<AppendRequest>,
    ) -> BoxFuture<'_, Result<Commits, StoreError>> {
        // One operation for the writer, one reply for all of them.
        boxed(async move {
            let count = requests.len();
            let (reply, result) = oneshot::channel();
            self.sender()?
                .send(WriteOp::Appends(requests, reply))
                .await
                .map_err(|_| StoreError::Closed)?;
            let commits: Commits = Box::pin(async move {
                let error = match result.await {
                    Ok(Ok(results)) => return results,
                    Ok(Err(error)) => error,
                    Err(_) => StoreError::Closed,
                };
                vec![Err(error); count]
            });
            Ok(commits)
        })
    }

    fn channel_bounds(
        &self,
        tenant_id: TenantId,
        channel: &str,
    ) -> BoxFuture<'_, Result<ChannelBounds, StoreError>> {
        let channel = channel.to_owned();
        boxed(self.read_with(move |conn| read::channel_bounds(conn, tenant_id, &channel)))
    }

    fn read(
        &self,
        tenant_id: TenantId,
        channel: &str,
        range: ReadRange,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Arc<StoredEvent>>, StoreError>> {
        let channel = channel.to_owned();
        boxed(self.read_with(move |conn| read::events(conn, tenant_id, &channel, range, limit)))
    }

    fn list_devices(
        &self,
        tenant_id: TenantId,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<Vec<DeviceInfo>, StoreError>> {
        boxed(async move {
            // The writer's counts not yet in the table (`seen.rs`) first.
            self.write(WriteOp::CountSeen).await?;
            self.read_with(move |conn| read::devices(conn, tenant_id, now_ms))
                .await
        })
    }

    fn list_channels(
        &self,
        tenant_id: TenantId,
    ) -> BoxFuture<'_, Result<Vec<ChannelInfo>, StoreError>> {
        boxed(self.read_with(move |conn| read::channels(conn, tenant_id)))
    }

    fn device_tenant(
        &self,
        device_id: &str,
    ) -> BoxFuture<'_, Result<Option<TenantId>, StoreError>> {
        let device_id = device_id.to_owned();
        boxed(self.read_with(move |conn| read::device_tenant(conn, &device_id)))
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
        boxed(self.read_with(move |conn| read::revocations_since(conn, after)))
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
        let write = ReadingsWrite::Describe {
            tenant_id,
            device_id: device_id.to_owned(),
            channel: channel.to_owned(),
            fields: fields.to_owned(),
            now_ms,
        };
        boxed(self.write(move |reply| WriteOp::Readings(write, reply)))
    }

    fn channel_descriptions(
        &self,
        tenant_id: TenantId,
        channel: &str,
    ) -> BoxFuture<'_, Result<Vec<ChannelDescription>, StoreError>> {
        let channel = channel.to_owned();
        boxed(self.read_with(move |conn| readings::channel_descriptions(conn, tenant_id, &channel)))
    }

    fn set_commands(
        &self,
        device_id: &str,
        commands: Vec<DeclaredCommand>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        let write = ReadingsWrite::Commands {
            device_id: device_id.to_owned(),
            commands,
        };
        boxed(self.write(move |reply| WriteOp::Readings(write, reply)))
    }

    fn set_rssi(
        &self,
        device_id: &str,
        rssi_dbm: i16,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        let write = ReadingsWrite::Rssi {
            device_id: device_id.to_owned(),
            rssi_dbm,
            now_ms,
        };
        boxed(self.write(move |reply| WriteOp::Readings(write, reply)))
    }

    fn series(
        &self,
        tenant_id: TenantId,
        channel: &str,
        query: SeriesQuery,
    ) -> BoxFuture<'_, Result<Series, StoreError>> {
        let channel = channel.to_owned();
        boxed(self.read_with(move |conn| readings::series(conn, tenant_id, &channel, &query)))
    }

    fn roll_up(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        boxed(async move {
            // The reading and parsing on reader connections, the writer
            // only adds each chunk's buckets (see `rollup.rs`).
            let mut rolled = 0u64;
            for mut pending in self.read_with(rollup::plan).await? {
                while pending.from < pending.through {
                    let chunk = self
                        .read_with(move |conn| rollup::aggregate(conn, pending))
                        .await?;
                    pending.from = pending
                        .from
                        .saturating_add(i64::try_from(chunk.events()).unwrap_or(i64::MAX));
                    let events = self
                        .write(move |reply| WriteOp::RollUp(chunk, reply))
                        .await?;
                    if events == 0 {
                        // Another run got there first.
                        break;
                    }
                    rolled = rolled.saturating_add(events);
                }
            }
            Ok(rolled)
        })
    }

    fn accounts(&self) -> &dyn AccountStore {
        self
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        boxed(async move {
            // Dropping the last sender ends the writer loop once the queue
            // is drained.
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
        })
    }
}
