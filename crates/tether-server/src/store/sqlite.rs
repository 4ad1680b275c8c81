//! [`SqliteStore`]: SQLite in WAL mode, one writer thread committing batched
//! transactions, a small pool of reader connections.
//!
//! ```text
//!  device tasks ──append──▶ bounded queue ──▶ writer thread: BEGIN IMMEDIATE
//!   (wait when full =                           … up to 512 ops … COMMIT
//!    backpressure)                               │ reply to each op
//!                                                └▶ on_commit(events, in offset order)
//!  readers (spawn_blocking) ◀── pool of read-only connections (WAL: no blocking)
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};

use super::{
    AppendOutcome, AppendRequest, BoxFuture, ChannelBounds, ChannelFilter, ChannelInfo, Commit,
    DeviceIdentity, DeviceInfo, KeyIdentity, ReadRange, Revocation, Store, StoreError, StoredEvent,
    TenantId, UNCLAIMED_TENANT,
};
use crate::auth;

/// Operations per write transaction, at most.
const MAX_BATCH: usize = 512;
const DAY_MS: u64 = 86_400_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tenants(
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL,
    retention_max_age_ms INTEGER,
    retention_max_messages INTEGER
);
INSERT OR IGNORE INTO tenants(id, name, created_ms) VALUES (0, '_unclaimed', 0);
CREATE TABLE IF NOT EXISTS devices(
    id TEXT PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants(id),
    token_lookup TEXT NOT NULL UNIQUE,
    token_hash BLOB NOT NULL,
    claim_hash BLOB UNIQUE,
    revoked INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL,
    online INTEGER NOT NULL DEFAULT 0,
    last_seen_ms INTEGER,
    firmware_version TEXT,
    day_start_ms INTEGER NOT NULL DEFAULT 0,
    day_count INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS keys(
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants(id),
    lookup TEXT NOT NULL UNIQUE,
    hash BLOB NOT NULL,
    channels TEXT,
    can_command INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL,
    name TEXT
);
CREATE TABLE IF NOT EXISTS boots(
    device_id TEXT NOT NULL,
    boot_id INTEGER NOT NULL,
    max_seq INTEGER NOT NULL,
    last_ms INTEGER NOT NULL,
    PRIMARY KEY(device_id, boot_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS channels(
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    next_offset INTEGER NOT NULL,
    UNIQUE(tenant_id, name)
);
CREATE TABLE IF NOT EXISTS messages(
    channel_id INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    device_id TEXT NOT NULL,
    device_time_ms INTEGER,
    server_time_ms INTEGER NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY(channel_id, offset)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_by_time ON messages(channel_id, server_time_ms);
CREATE TABLE IF NOT EXISTS revocations(
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL
);
";

/// How to open a [`SqliteStore`].
pub struct StoreOptions {
    /// Called by the writer after each commit with the events it stored, in
    /// offset order (the server hands them to the broker).
    pub on_commit: Box<dyn Fn(Vec<Arc<StoredEvent>>) + Send>,
    /// Called by the writer after each transaction with its size and how
    /// long it took (for metrics).
    pub on_transaction: Box<dyn Fn(usize, Duration) + Send>,
    /// Operations the write queue holds before `append` waits.
    pub queue_capacity: usize,
    /// Default retention of tenants without their own: maximum age.
    pub retention_max_age: Option<Duration>,
    /// Default retention of tenants without their own: events per channel.
    pub retention_max_messages: Option<u64>,
}

impl core::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("queue_capacity", &self.queue_capacity)
            .field("retention_max_age", &self.retention_max_age)
            .field("retention_max_messages", &self.retention_max_messages)
            .finish_non_exhaustive()
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            on_commit: Box::new(|_| {}),
            on_transaction: Box::new(|_, _| {}),
            queue_capacity: 4096,
            retention_max_age: None,
            retention_max_messages: None,
        }
    }
}

enum WriteOp {
    Append(
        AppendRequest,
        oneshot::Sender<Result<AppendOutcome, StoreError>>,
    ),
    OpenSession {
        device_id: String,
        firmware_version: String,
        boot_id: u64,
        now_ms: u64,
        reply: oneshot::Sender<Result<u32, StoreError>>,
    },
    CloseSession {
        device_id: String,
        now_ms: u64,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Claim {
        tenant_id: TenantId,
        claim_code: String,
        now_ms: u64,
        reply: oneshot::Sender<Result<String, StoreError>>,
    },
    Retention {
        now_ms: u64,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
    ResetPresence(oneshot::Sender<Result<(), StoreError>>),
}

/// The SQLite store: a database file in WAL mode.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Option<mpsc::Sender<WriteOp>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: Mutex<Vec<Connection>>,
}

impl core::fmt::Debug for Inner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(crate) fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// `boot_id` keeps its 64 bits in SQLite's signed integer.
fn boot_to_i64(boot_id: u64) -> i64 {
    i64::from_ne_bytes(boot_id.to_ne_bytes())
}

/// Opens (creating if needed) a database file with the pragmas tether uses.
pub(crate) fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a commit is on disk when it returns (acks mean durable).
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.execute_batch(SCHEMA)?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// Brings a database made by an older version up to the current schema
/// (`CREATE TABLE IF NOT EXISTS` leaves existing tables as they were).
/// Safe when several processes open the database at once: the check and
/// the change run in one immediate transaction.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let has_claim_expiry = tx
        .prepare("SELECT 1 FROM pragma_table_info('devices') WHERE name = 'claim_expires_ms'")?
        .exists([])?;
    if !has_claim_expiry {
        // When a claim code stops working (Unix ms); NULL: never.
        tx.execute_batch("ALTER TABLE devices ADD COLUMN claim_expires_ms INTEGER")?;
    }
    tx.commit()?;
    Ok(())
}

fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens or creates the database at `path` and starts its writer thread.
    pub fn open(path: &Path, options: StoreOptions) -> Result<SqliteStore, StoreError> {
        let conn = open_connection(path)?;
        let (sender, receiver) = mpsc::channel(options.queue_capacity.max(1));
        let thread = std::thread::Builder::new()
            .name("tether-store-writer".into())
            .spawn(move || writer_loop(conn, receiver, options))
            .map_err(|error| StoreError::Database(error.to_string()))?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                writer: Mutex::new(Some(sender)),
                writer_thread: Mutex::new(Some(thread)),
                readers: Mutex::new(Vec::new()),
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
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let pooled = inner.readers.lock().ok().and_then(|mut pool| pool.pop());
            let conn = match pooled {
                Some(conn) => conn,
                None => open_reader(&inner.path)?,
            };
            let result = f(&conn);
            if let Ok(mut pool) = inner.readers.lock()
                && pool.len() < 8
            {
                pool.push(conn);
            }
            result
        })
        .await
        .map_err(|error| StoreError::Database(error.to_string()))?
    }
}

fn read_events(
    conn: &Connection,
    tenant_id: TenantId,
    channel: &str,
    range: ReadRange,
    limit: usize,
) -> Result<Vec<Arc<StoredEvent>>, StoreError> {
    let Some(channel_id) = conn
        .query_row(
            "SELECT id FROM channels WHERE tenant_id = ?1 AND name = ?2",
            params![tenant_id, channel],
            |row| row.get::<_, i64>(0),
        )
        .optional()?
    else {
        return Ok(Vec::new());
    };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let map = |row: &rusqlite::Row<'_>| {
        Ok(Arc::new(StoredEvent::new(
            tenant_id,
            channel.to_owned(),
            to_u64(row.get(0)?),
            row.get(1)?,
            row.get::<_, Option<i64>>(2)?.map(to_u64),
            to_u64(row.get(3)?),
            row.get(4)?,
        )))
    };
    let rows = match range {
        ReadRange::Offsets { from, until } => {
            let mut statement = conn.prepare_cached(
                "SELECT offset, device_id, device_time_ms, server_time_ms, payload FROM messages
                 WHERE channel_id = ?1 AND offset >= ?2 AND offset < ?3 ORDER BY offset LIMIT ?4",
            )?;
            let until = until.map_or(i64::MAX, to_i64);
            statement
                .query_map(params![channel_id, to_i64(from), until, limit], map)?
                .collect::<Result<Vec<_>, _>>()?
        }
        ReadRange::Time {
            since_ms,
            until_ms,
            from,
        } => {
            let mut statement = conn.prepare_cached(
                "SELECT offset, device_id, device_time_ms, server_time_ms, payload FROM messages
                 WHERE channel_id = ?1 AND server_time_ms >= ?2 AND server_time_ms < ?3
                 AND offset >= ?4 ORDER BY offset LIMIT ?5",
            )?;
            let until = until_ms.map_or(i64::MAX, to_i64);
            statement
                .query_map(
                    params![channel_id, to_i64(since_ms), until, to_i64(from), limit],
                    map,
                )?
                .collect::<Result<Vec<_>, _>>()?
        }
    };
    Ok(rows)
}

fn channel_bounds(
    conn: &Connection,
    tenant_id: TenantId,
    channel: &str,
) -> Result<ChannelBounds, StoreError> {
    let row = conn
        .query_row(
            "SELECT c.next_offset, (SELECT min(offset) FROM messages m WHERE m.channel_id = c.id)
             FROM channels c WHERE c.tenant_id = ?1 AND c.name = ?2",
            params![tenant_id, channel],
            |row| Ok((row.get::<_, i64>(0)?, row.get::<_, Option<i64>>(1)?)),
        )
        .optional()?;
    Ok(match row {
        None => ChannelBounds {
            first_offset: 1,
            next_offset: 1,
        },
        Some((next, first)) => ChannelBounds {
            first_offset: to_u64(first.unwrap_or(next)),
            next_offset: to_u64(next),
        },
    })
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
        boxed(self.read_with(move |conn| {
            let Some(lookup) = auth::lookup_part(&token, auth::DEVICE_TOKEN_PREFIX) else {
                return Ok(None);
            };
            let row = conn
                .query_row(
                    "SELECT id, tenant_id, token_hash FROM devices
                     WHERE token_lookup = ?1 AND revoked = 0",
                    params![lookup],
                    |row| {
                        Ok((
                            row.get::<_, String>(0)?,
                            row.get::<_, i64>(1)?,
                            row.get::<_, Vec<u8>>(2)?,
                        ))
                    },
                )
                .optional()?;
            Ok(row.and_then(|(device_id, tenant_id, hash)| {
                auth::verify_secret(&token, &hash).then_some(DeviceIdentity {
                    device_id,
                    tenant_id,
                })
            }))
        }))
    }

    fn authenticate_key(
        &self,
        key: &str,
    ) -> BoxFuture<'_, Result<Option<KeyIdentity>, StoreError>> {
        let key = key.to_owned();
        boxed(self.read_with(move |conn| {
            let Some(lookup) = auth::lookup_part(&key, auth::RECEIVER_KEY_PREFIX) else {
                return Ok(None);
            };
            let row = conn
                .query_row(
                    "SELECT id, tenant_id, hash, channels, can_command FROM keys
                     WHERE lookup = ?1 AND revoked = 0",
                    params![lookup],
                    |row| {
                        Ok((
                            row.get::<_, i64>(0)?,
                            row.get::<_, i64>(1)?,
                            row.get::<_, Vec<u8>>(2)?,
                            row.get::<_, Option<String>>(3)?,
                            row.get::<_, bool>(4)?,
                        ))
                    },
                )
                .optional()?;
            let Some((key_id, tenant_id, hash, channels, can_command)) = row else {
                return Ok(None);
            };
            if !auth::verify_secret(&key, &hash) {
                return Ok(None);
            }
            let channels = match channels {
                None => ChannelFilter::ALL,
                Some(text) => ChannelFilter::only(
                    serde_json::from_str(&text)
                        .map_err(|error| StoreError::Database(error.to_string()))?,
                ),
            };
            Ok(Some(KeyIdentity {
                key_id,
                tenant_id,
                channels,
                can_command,
            }))
        }))
    }

    fn open_session(
        &self,
        device_id: &str,
        firmware_version: &str,
        boot_id: u64,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<u32, StoreError>> {
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

    fn close_session(&self, device_id: &str, now_ms: u64) -> BoxFuture<'_, Result<(), StoreError>> {
        let device_id = device_id.to_owned();
        boxed(self.write(move |reply| WriteOp::CloseSession {
            device_id,
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
        boxed(self.read_with(move |conn| channel_bounds(conn, tenant_id, &channel)))
    }

    fn read(
        &self,
        tenant_id: TenantId,
        channel: &str,
        range: ReadRange,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Arc<StoredEvent>>, StoreError>> {
        let channel = channel.to_owned();
        boxed(self.read_with(move |conn| read_events(conn, tenant_id, &channel, range, limit)))
    }

    fn list_devices(
        &self,
        tenant_id: TenantId,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<Vec<DeviceInfo>, StoreError>> {
        let today = to_i64(now_ms - now_ms % DAY_MS);
        boxed(self.read_with(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT id, online, last_seen_ms, firmware_version, day_start_ms, day_count
                 FROM devices WHERE tenant_id = ?1 AND revoked = 0 ORDER BY id",
            )?;
            let rows = statement
                .query_map(params![tenant_id], |row| {
                    let day_start: i64 = row.get(4)?;
                    let day_count: i64 = row.get(5)?;
                    Ok(DeviceInfo {
                        id: row.get(0)?,
                        online: row.get(1)?,
                        last_seen_ms: row.get::<_, Option<i64>>(2)?.map(to_u64),
                        firmware_version: row.get(3)?,
                        messages_today: if day_start == today {
                            to_u64(day_count)
                        } else {
                            0
                        },
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        }))
    }

    fn list_channels(
        &self,
        tenant_id: TenantId,
    ) -> BoxFuture<'_, Result<Vec<ChannelInfo>, StoreError>> {
        boxed(self.read_with(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT c.name, c.next_offset,
                    (SELECT min(offset) FROM messages m WHERE m.channel_id = c.id),
                    (SELECT server_time_ms FROM messages m WHERE m.channel_id = c.id
                     ORDER BY offset DESC LIMIT 1)
                 FROM channels c WHERE c.tenant_id = ?1 ORDER BY c.name",
            )?;
            let rows = statement
                .query_map(params![tenant_id], |row| {
                    let next: i64 = row.get(1)?;
                    Ok(ChannelInfo {
                        name: row.get(0)?,
                        first_offset: to_u64(row.get::<_, Option<i64>>(2)?.unwrap_or(next)),
                        next_offset: to_u64(next),
                        last_time_ms: row.get::<_, Option<i64>>(3)?.map(to_u64),
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        }))
    }

    fn device_tenant(
        &self,
        device_id: &str,
    ) -> BoxFuture<'_, Result<Option<TenantId>, StoreError>> {
        let device_id = device_id.to_owned();
        boxed(self.read_with(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT tenant_id FROM devices WHERE id = ?1 AND revoked = 0",
                    params![device_id],
                    |row| row.get(0),
                )
                .optional()?)
        }))
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
        boxed(self.read_with(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT id, kind, subject FROM revocations WHERE id > ?1 ORDER BY id",
            )?;
            let mut last = after;
            let mut revocations = Vec::new();
            let rows = statement.query_map(params![after], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                ))
            })?;
            for row in rows {
                let (id, kind, subject) = row?;
                last = id;
                match kind.as_str() {
                    "device" => revocations.push(Revocation::Device(subject)),
                    "moved" => revocations.push(Revocation::Moved(subject)),
                    "key" => {
                        if let Ok(key_id) = subject.parse() {
                            revocations.push(Revocation::Key(key_id));
                        }
                    }
                    _ => {}
                }
            }
            Ok((revocations, last))
        }))
    }

    fn reset_presence(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        boxed(self.write(WriteOp::ResetPresence))
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

/// A reply waiting for the commit of its transaction.
enum Pending {
    Append(
        oneshot::Sender<Result<AppendOutcome, StoreError>>,
        AppendOutcome,
    ),
    Seq(oneshot::Sender<Result<u32, StoreError>>, u32),
    Unit(oneshot::Sender<Result<(), StoreError>>),
    Text(
        oneshot::Sender<Result<String, StoreError>>,
        Result<String, StoreError>,
    ),
    Count(oneshot::Sender<Result<u64, StoreError>>, u64),
}

impl Pending {
    fn finish(self, error: Option<&StoreError>) {
        // A dropped receiver (the connection went away) is not an error.
        match (self, error) {
            (Pending::Append(reply, outcome), None) => drop(reply.send(Ok(outcome))),
            (Pending::Append(reply, _), Some(error)) => drop(reply.send(Err(error.clone()))),
            (Pending::Seq(reply, seq), None) => drop(reply.send(Ok(seq))),
            (Pending::Seq(reply, _), Some(error)) => drop(reply.send(Err(error.clone()))),
            (Pending::Unit(reply), None) => drop(reply.send(Ok(()))),
            (Pending::Unit(reply), Some(error)) => drop(reply.send(Err(error.clone()))),
            (Pending::Text(reply, result), None) => drop(reply.send(result)),
            (Pending::Text(reply, _), Some(error)) => drop(reply.send(Err(error.clone()))),
            (Pending::Count(reply, count), None) => drop(reply.send(Ok(count))),
            (Pending::Count(reply, _), Some(error)) => drop(reply.send(Err(error.clone()))),
        }
    }
}

fn writer_loop(mut conn: Connection, mut queue: mpsc::Receiver<WriteOp>, options: StoreOptions) {
    while let Some(first) = queue.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let size = batch.len();
        let mut pending = Vec::with_capacity(size);
        let mut events = Vec::new();
        let result = apply_batch(&mut conn, batch, &mut pending, &mut events, &options);
        (options.on_transaction)(size, started.elapsed());
        match result {
            Ok(()) => {
                for reply in pending {
                    reply.finish(None);
                }
                if !events.is_empty() {
                    (options.on_commit)(events);
                }
            }
            Err(error) => {
                tracing::error!(%error, "store transaction failed; nothing in it is acknowledged");
                for reply in pending {
                    reply.finish(Some(&error));
                }
            }
        }
    }
}

fn now_unix_ms() -> u64 {
    crate::now_ms()
}

fn apply_batch(
    conn: &mut Connection,
    batch: Vec<WriteOp>,
    pending: &mut Vec<Pending>,
    events: &mut Vec<Arc<StoredEvent>>,
    options: &StoreOptions,
) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now_ms = now_unix_ms();
    let today = now_ms - now_ms % DAY_MS;
    let mut published: HashMap<String, i64> = HashMap::new();
    for op in batch {
        match op {
            WriteOp::Append(request, reply) => {
                let outcome = append_one(&tx, &request, now_ms, events)?;
                if matches!(outcome, AppendOutcome::Stored { .. }) {
                    *published.entry(request.device_id.clone()).or_default() += 1;
                }
                pending.push(Pending::Append(reply, outcome));
            }
            WriteOp::OpenSession {
                device_id,
                firmware_version,
                boot_id,
                now_ms,
                reply,
            } => {
                tx.execute(
                    "UPDATE devices SET online = 1, last_seen_ms = ?2, firmware_version = ?3
                     WHERE id = ?1",
                    params![device_id, to_i64(now_ms), firmware_version],
                )?;
                let seq: Option<i64> = tx
                    .query_row(
                        "SELECT max_seq FROM boots WHERE device_id = ?1 AND boot_id = ?2",
                        params![device_id, boot_to_i64(boot_id)],
                        |row| row.get(0),
                    )
                    .optional()?;
                let seq = seq.map_or(0, |seq| u32::try_from(seq).unwrap_or(u32::MAX));
                pending.push(Pending::Seq(reply, seq));
            }
            WriteOp::CloseSession {
                device_id,
                now_ms,
                reply,
            } => {
                tx.execute(
                    "UPDATE devices SET online = 0, last_seen_ms = ?2 WHERE id = ?1",
                    params![device_id, to_i64(now_ms)],
                )?;
                pending.push(Pending::Unit(reply));
            }
            WriteOp::Claim {
                tenant_id,
                claim_code,
                now_ms,
                reply,
            } => {
                let result = claim(&tx, tenant_id, &claim_code, now_ms)?;
                pending.push(Pending::Text(reply, result));
            }
            WriteOp::Retention { now_ms, reply } => {
                let removed = retention(&tx, now_ms, options)?;
                pending.push(Pending::Count(reply, removed));
            }
            WriteOp::ResetPresence(reply) => {
                tx.execute("UPDATE devices SET online = 0 WHERE online = 1", [])?;
                pending.push(Pending::Unit(reply));
            }
        }
    }
    for (device_id, count) in published {
        tx.execute(
            "UPDATE devices SET
                day_count = CASE WHEN day_start_ms = ?2 THEN day_count + ?3 ELSE ?3 END,
                day_start_ms = ?2, last_seen_ms = ?4
             WHERE id = ?1",
            params![device_id, to_i64(today), count, to_i64(now_ms)],
        )?;
    }
    tx.commit()?;
    Ok(())
}

fn append_one(
    tx: &Connection,
    request: &AppendRequest,
    now_ms: u64,
    events: &mut Vec<Arc<StoredEvent>>,
) -> Result<AppendOutcome, StoreError> {
    let boot = boot_to_i64(request.boot_id);
    let max_seq: Option<i64> = tx
        .prepare_cached("SELECT max_seq FROM boots WHERE device_id = ?1 AND boot_id = ?2")?
        .query_row(params![request.device_id, boot], |row| row.get(0))
        .optional()?;
    if max_seq.is_some_and(|max| i64::from(request.seq) <= max) {
        return Ok(AppendOutcome::Duplicate);
    }
    tx.prepare_cached(
        "INSERT INTO channels(tenant_id, name, next_offset) VALUES (?1, ?2, 1)
         ON CONFLICT(tenant_id, name) DO NOTHING",
    )?
    .execute(params![request.tenant_id, request.channel])?;
    let (channel_id, offset): (i64, i64) = tx
        .prepare_cached("SELECT id, next_offset FROM channels WHERE tenant_id = ?1 AND name = ?2")?
        .query_row(params![request.tenant_id, request.channel], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?;
    tx.prepare_cached(
        "INSERT INTO messages(channel_id, offset, device_id, device_time_ms, server_time_ms, payload)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        channel_id,
        offset,
        request.device_id,
        request.device_time_ms.map(to_i64),
        to_i64(now_ms),
        request.payload
    ])?;
    tx.prepare_cached("UPDATE channels SET next_offset = ?2 WHERE id = ?1")?
        .execute(params![channel_id, offset.saturating_add(1)])?;
    tx.prepare_cached(
        "INSERT INTO boots(device_id, boot_id, max_seq, last_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(device_id, boot_id) DO UPDATE SET max_seq = excluded.max_seq,
         last_ms = excluded.last_ms",
    )?
    .execute(params![
        request.device_id,
        boot,
        i64::from(request.seq),
        to_i64(now_ms)
    ])?;
    let offset = to_u64(offset);
    events.push(Arc::new(StoredEvent::new(
        request.tenant_id,
        request.channel.clone(),
        offset,
        request.device_id.clone(),
        request.device_time_ms,
        now_ms,
        request.payload.clone(),
    )));
    Ok(AppendOutcome::Stored { offset })
}

fn claim(
    tx: &Connection,
    tenant_id: TenantId,
    claim_code: &str,
    now_ms: u64,
) -> Result<Result<String, StoreError>, StoreError> {
    let Some(code) = auth::normalize_claim_code(claim_code) else {
        return Ok(Err(StoreError::NotFound));
    };
    let hash = auth::hash_secret(&code);
    let device: Option<(String, Option<i64>)> = tx
        .query_row(
            "SELECT id, claim_expires_ms FROM devices WHERE claim_hash = ?1 AND revoked = 0",
            params![hash.as_slice()],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    let Some((device_id, expires_ms)) = device else {
        return Ok(Err(StoreError::NotFound));
    };
    if expires_ms.is_some_and(|expires_ms| to_i64(now_ms) >= expires_ms) {
        return Ok(Err(StoreError::Expired));
    }
    tx.execute(
        "UPDATE devices SET tenant_id = ?2, claim_hash = NULL WHERE id = ?1",
        params![device_id, tenant_id],
    )?;
    // Its open connection belongs to the old tenant: close it (but not a
    // connection made after the claim, see `Revocation::Moved`).
    tx.execute(
        "INSERT INTO revocations(kind, subject) VALUES ('moved', ?1)",
        params![device_id],
    )?;
    Ok(Ok(device_id))
}

fn retention(tx: &Connection, now_ms: u64, options: &StoreOptions) -> Result<u64, StoreError> {
    let default_age = options
        .retention_max_age
        .map(|age| to_i64(u64::try_from(age.as_millis()).unwrap_or(u64::MAX)));
    let default_count = options.retention_max_messages.map(to_i64);
    let channels: Vec<(i64, i64, Option<i64>, Option<i64>)> = {
        let mut statement = tx.prepare(
            "SELECT c.id, c.next_offset, t.retention_max_age_ms, t.retention_max_messages
             FROM channels c JOIN tenants t ON t.id = c.tenant_id",
        )?;
        statement
            .query_map([], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })?
            .collect::<Result<Vec<_>, _>>()?
    };
    let mut removed = 0u64;
    for (channel_id, next_offset, max_age, max_count) in channels {
        if let Some(max_age) = max_age.or(default_age) {
            let cutoff = to_i64(now_ms).saturating_sub(max_age);
            removed += tx.execute(
                "DELETE FROM messages WHERE channel_id = ?1 AND server_time_ms < ?2",
                params![channel_id, cutoff],
            )? as u64;
        }
        if let Some(max_count) = max_count.or(default_count) {
            removed += tx.execute(
                "DELETE FROM messages WHERE channel_id = ?1 AND offset < ?2",
                params![channel_id, next_offset.saturating_sub(max_count)],
            )? as u64;
        }
    }
    Ok(removed)
}

/// What `device add` created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDevice {
    /// The device id.
    pub device_id: String,
    /// Its secret token (shown once).
    pub token: String,
    /// Its claim code, if registered for claiming.
    pub claim_code: Option<String>,
}

/// What `key add` created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKey {
    /// The key's id (for `key revoke`).
    pub key_id: i64,
    /// The key (shown once).
    pub key: String,
}

/// Administration: what the `tenant`, `device` and `key` subcommands do,
/// directly on the database file (also while a server runs: it notices
/// revocations within a second).
#[derive(Debug)]
pub struct Admin {
    conn: Connection,
}

impl Admin {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Admin, StoreError> {
        Ok(Admin {
            conn: open_connection(path)?,
        })
    }

    /// The id of the tenant called `name`.
    pub fn tenant_id(&self, name: &str) -> Result<TenantId, StoreError> {
        self.conn
            .query_row(
                "SELECT id FROM tenants WHERE name = ?1 AND id != 0",
                params![name],
                |row| row.get(0),
            )
            .optional()?
            .ok_or(StoreError::NotFound)
    }

    /// Whether any tenant exists (besides the unclaimed devices' one).
    pub fn has_tenants(&self) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM tenants WHERE id != 0", [], |row| {
                row.get::<_, i64>(0)
            })?
            > 0)
    }

    /// Adds a tenant.
    pub fn add_tenant(&self, name: &str) -> Result<TenantId, StoreError> {
        if name.is_empty() || name.starts_with('_') || name.len() > 64 {
            return Err(StoreError::Invalid(
                "tenant names are 1 to 64 characters and do not start with '_'".into(),
            ));
        }
        match self.conn.execute(
            "INSERT INTO tenants(name, created_ms) VALUES (?1, ?2)",
            params![name, to_i64(now_unix_ms())],
        ) {
            Ok(_) => Ok(self.conn.last_insert_rowid()),
            Err(rusqlite::Error::SqliteFailure(error, _))
                if error.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::AlreadyExists)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Sets a tenant's retention (`None`: the server's default).
    pub fn set_retention(
        &self,
        tenant_id: TenantId,
        max_age: Option<Duration>,
        max_messages: Option<u64>,
    ) -> Result<(), StoreError> {
        let age = max_age.map(|age| to_i64(u64::try_from(age.as_millis()).unwrap_or(u64::MAX)));
        let changed = self.conn.execute(
            "UPDATE tenants SET retention_max_age_ms = ?2, retention_max_messages = ?3 WHERE id = ?1",
            params![tenant_id, age, max_messages.map(to_i64)],
        )?;
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Registers a device in `tenant_id` (or unclaimed, with a claim code).
    /// A claim code made here never expires (see
    /// [`add_claimable_device`](Self::add_claimable_device)).
    pub fn add_device(
        &self,
        tenant_id: Option<TenantId>,
        device_id: Option<&str>,
        with_claim_code: bool,
    ) -> Result<NewDevice, StoreError> {
        self.insert_device(tenant_id, device_id, with_claim_code, None)
    }

    /// Registers a device with a claim code (in `tenant_id`, or unclaimed)
    /// that stops working at `claim_expires_ms` (Unix time in ms; `None`:
    /// never). Claiming with it afterwards fails with
    /// [`StoreError::Expired`].
    pub fn add_claimable_device(
        &self,
        tenant_id: Option<TenantId>,
        device_id: Option<&str>,
        claim_expires_ms: Option<u64>,
    ) -> Result<NewDevice, StoreError> {
        self.insert_device(tenant_id, device_id, true, claim_expires_ms)
    }

    fn insert_device(
        &self,
        tenant_id: Option<TenantId>,
        device_id: Option<&str>,
        with_claim_code: bool,
        claim_expires_ms: Option<u64>,
    ) -> Result<NewDevice, StoreError> {
        let device_id = match device_id {
            Some(id) => id.to_owned(),
            None => format!("dev-{}", &auth::generate_secret("")[..12]),
        };
        tether_proto::validate_device_id(&device_id)
            .map_err(|error| StoreError::Invalid(format!("device id: {error}")))?;
        let token = auth::generate_secret(auth::DEVICE_TOKEN_PREFIX);
        let lookup = auth::lookup_part(&token, auth::DEVICE_TOKEN_PREFIX)
            .ok_or_else(|| StoreError::Invalid("token".into()))?;
        let claim_code = with_claim_code.then(auth::generate_claim_code);
        let claim_hash = match &claim_code {
            Some(code) => Some(auth::hash_secret(
                &auth::normalize_claim_code(code)
                    .ok_or(StoreError::Invalid("claim code".into()))?,
            )),
            None => None,
        };
        let result = self.conn.execute(
            "INSERT INTO devices(id, tenant_id, token_lookup, token_hash, claim_hash, created_ms,
                                 claim_expires_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                device_id,
                tenant_id.unwrap_or(UNCLAIMED_TENANT),
                lookup,
                auth::hash_secret(&token).as_slice(),
                claim_hash.as_ref().map(|hash| hash.as_slice()),
                to_i64(now_unix_ms()),
                claim_expires_ms.filter(|_| with_claim_code).map(to_i64)
            ],
        );
        match result {
            Ok(_) => Ok(NewDevice {
                device_id,
                token,
                claim_code,
            }),
            Err(rusqlite::Error::SqliteFailure(error, _))
                if error.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::AlreadyExists)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Registers many devices in one transaction (for load tests and
    /// factory batches).
    pub fn add_devices(
        &self,
        tenant_id: TenantId,
        device_ids: &[String],
    ) -> Result<Vec<NewDevice>, StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        let devices = device_ids
            .iter()
            .map(|id| self.add_device(Some(tenant_id), Some(id), false))
            .collect::<Result<Vec<_>, _>>()?;
        tx.commit()?;
        Ok(devices)
    }

    /// Gives a device a new token (the old one stops working; a running
    /// server disconnects sessions that used it) and returns it.
    pub fn rotate_token(&self, device_id: &str) -> Result<String, StoreError> {
        let token = auth::generate_secret(auth::DEVICE_TOKEN_PREFIX);
        let lookup = auth::lookup_part(&token, auth::DEVICE_TOKEN_PREFIX)
            .ok_or_else(|| StoreError::Invalid("token".into()))?;
        let tx = self.conn.unchecked_transaction()?;
        let changed = tx.execute(
            "UPDATE devices SET token_lookup = ?2, token_hash = ?3, revoked = 0 WHERE id = ?1",
            params![device_id, lookup, auth::hash_secret(&token).as_slice()],
        )?;
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        tx.execute(
            "INSERT INTO revocations(kind, subject) VALUES ('device', ?1)",
            params![device_id],
        )?;
        tx.commit()?;
        Ok(token)
    }

    /// Revokes a device's token; a running server disconnects it.
    pub fn revoke_device(&self, device_id: &str) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        let changed = tx.execute(
            "UPDATE devices SET revoked = 1 WHERE id = ?1",
            params![device_id],
        )?;
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        tx.execute(
            "INSERT INTO revocations(kind, subject) VALUES ('device', ?1)",
            params![device_id],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Adds a receiver key to a tenant.
    pub fn add_key(
        &self,
        tenant_id: TenantId,
        channels: &ChannelFilter,
        can_command: bool,
        name: Option<&str>,
    ) -> Result<NewKey, StoreError> {
        if tenant_id == UNCLAIMED_TENANT {
            return Err(StoreError::Invalid("no keys for unclaimed devices".into()));
        }
        let key = auth::generate_secret(auth::RECEIVER_KEY_PREFIX);
        let lookup = auth::lookup_part(&key, auth::RECEIVER_KEY_PREFIX)
            .ok_or_else(|| StoreError::Invalid("key".into()))?;
        for pattern in channels.patterns().unwrap_or_default() {
            ChannelFilter::check_pattern(pattern).map_err(StoreError::Invalid)?;
        }
        let channels = match channels.patterns() {
            None => None,
            Some(patterns) => Some(
                serde_json::to_string(patterns)
                    .map_err(|error| StoreError::Invalid(error.to_string()))?,
            ),
        };
        self.conn.execute(
            "INSERT INTO keys(tenant_id, lookup, hash, channels, can_command, created_ms, name)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                tenant_id,
                lookup,
                auth::hash_secret(&key).as_slice(),
                channels,
                can_command,
                to_i64(now_unix_ms()),
                name
            ],
        )?;
        Ok(NewKey {
            key_id: self.conn.last_insert_rowid(),
            key,
        })
    }

    /// Revokes a receiver key; a running server disconnects its receivers.
    pub fn revoke_key(&self, key_id: i64) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        let changed = tx.execute("UPDATE keys SET revoked = 1 WHERE id = ?1", params![key_id])?;
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        tx.execute(
            "INSERT INTO revocations(kind, subject) VALUES ('key', ?1)",
            params![key_id.to_string()],
        )?;
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(seq: u32, channel: &str) -> AppendRequest {
        AppendRequest {
            tenant_id: 1,
            device_id: "d1".into(),
            boot_id: u64::MAX - 3,
            seq,
            channel: channel.into(),
            device_time_ms: Some(5),
            payload: format!("{{\"n\":{seq}}}"),
        }
    }

    #[tokio::test]
    async fn append_dedup_and_read_back() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Database(e.to_string()))?;
        let path = dir.path().join("t.db");
        let admin = Admin::open(&path)?;
        let tenant = admin.add_tenant("acme")?;
        assert_eq!(tenant, 1);
        let device = admin.add_device(Some(tenant), Some("d1"), false)?;
        let store = SqliteStore::open(&path, StoreOptions::default())?;
        let identity = store.authenticate_device(&device.token).await?;
        assert_eq!(
            identity,
            Some(DeviceIdentity {
                device_id: "d1".into(),
                tenant_id: 1
            })
        );
        assert_eq!(store.authenticate_device("td_nope").await?, None);
        assert_eq!(store.open_session("d1", "1.0", u64::MAX - 3, 1).await?, 0);
        let first = store.append(request(1, "temp")).await?.await?;
        let second = store.append(request(2, "temp")).await?.await?;
        let again = store.append(request(2, "temp")).await?.await?;
        let other = store.append(request(3, "hum")).await?.await?;
        assert_eq!(first, AppendOutcome::Stored { offset: 1 });
        assert_eq!(second, AppendOutcome::Stored { offset: 2 });
        assert_eq!(again, AppendOutcome::Duplicate);
        assert_eq!(other, AppendOutcome::Stored { offset: 1 });
        assert_eq!(store.open_session("d1", "1.0", u64::MAX - 3, 2).await?, 3);
        let events = store
            .read(
                1,
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
            store.channel_bounds(1, "temp").await?,
            ChannelBounds {
                first_offset: 1,
                next_offset: 3
            }
        );
        assert_eq!(
            store.channel_bounds(2, "temp").await?,
            ChannelBounds {
                first_offset: 1,
                next_offset: 1
            }
        );
        let devices = store.list_devices(1, now_unix_ms()).await?;
        assert_eq!(devices.len(), 1);
        assert!(devices[0].online);
        assert_eq!(devices[0].messages_today, 3);
        store.close().await;
        Ok(())
    }

    #[tokio::test]
    async fn claim_codes_expire_and_old_databases_migrate() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|error| StoreError::Database(error.to_string()))?;
        let path = dir.path().join("old.db");
        // A database made before claim codes could expire.
        {
            let conn = Connection::open(&path)?;
            conn.execute_batch(SCHEMA)?;
            let columns: Vec<String> = conn
                .prepare("SELECT name FROM pragma_table_info('devices')")?
                .query_map([], |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            assert!(!columns.iter().any(|name| name == "claim_expires_ms"));
        }
        let admin = Admin::open(&path)?;
        // Opening again (the server after the CLI) is a no-op.
        let store = SqliteStore::open(&path, StoreOptions::default())?;
        let tenant = admin.add_tenant("acme")?;
        let never = admin.add_device(None, Some("never-1"), true)?;
        let soon = admin.add_claimable_device(None, Some("soon-1"), Some(10_000))?;
        let soon_code = soon.claim_code.ok_or(StoreError::NotFound)?;
        assert_eq!(
            store.claim(tenant, &soon_code, 10_000).await,
            Err(StoreError::Expired)
        );
        assert_eq!(store.claim(tenant, &soon_code, 9_999).await?, "soon-1");
        let never_code = never.claim_code.ok_or(StoreError::NotFound)?;
        assert_eq!(store.claim(tenant, &never_code, u64::MAX).await?, "never-1");
        store.close().await;
        Ok(())
    }

    #[tokio::test]
    async fn retention_and_claim() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Database(e.to_string()))?;
        let path = dir.path().join("t.db");
        let admin = Admin::open(&path)?;
        let tenant = admin.add_tenant("acme")?;
        admin.add_device(Some(tenant), Some("d1"), false)?;
        let unclaimed = admin.add_device(None, Some("label-1"), true)?;
        admin.set_retention(tenant, None, Some(2))?;
        let store = SqliteStore::open(&path, StoreOptions::default())?;
        for seq in 1..=5 {
            store.append(request(seq, "temp")).await?.await?;
        }
        assert_eq!(store.enforce_retention(now_unix_ms()).await?, 3);
        let bounds = store.channel_bounds(1, "temp").await?;
        assert_eq!((bounds.first_offset, bounds.next_offset), (4, 6));
        assert_eq!(
            store.device_tenant("label-1").await?,
            Some(UNCLAIMED_TENANT)
        );
        let code = unclaimed.claim_code.ok_or(StoreError::NotFound)?;
        assert_eq!(
            store.claim(tenant, "WRONGCODE000", now_unix_ms()).await,
            Err(StoreError::NotFound)
        );
        assert_eq!(
            store
                .claim(tenant, &code.to_lowercase(), now_unix_ms())
                .await?,
            "label-1"
        );
        assert_eq!(store.device_tenant("label-1").await?, Some(tenant));
        assert_eq!(
            store.claim(tenant, &code, now_unix_ms()).await,
            Err(StoreError::NotFound)
        );
        let (revocations, _) = store.revocations_since(0).await?;
        assert_eq!(revocations, [Revocation::Moved("label-1".into())]);
        store.close().await;
        Ok(())
    }
}
