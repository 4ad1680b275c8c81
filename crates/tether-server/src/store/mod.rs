//! The durable store behind a small trait: tenants, devices, receiver keys,
//! channels and their messages.
//!
//! [`SqliteStore`] is the embedded default; the [`Store`] trait is the seam
//! another database plugs into (the behaviour every store must have is one
//! shared test suite, `tests/store_suite/`). A store hands every committed
//! event to the hook given at construction **in commit (offset) order**, and
//! resolves an append only after its transaction committed, so the device
//! endpoint acknowledges nothing it could still lose.
//!
//! # What "stored" means for a device's records
//!
//! A record is named by `(device, boot_id, seq)` and stored at most once:
//! de-duplication looks at what is stored, never at a maximum. Per
//! `(device, boot_id)` the store keeps the **contiguous stored watermark**
//! (`stored_seq`): every record the device sent with a `seq` up to it is
//! stored. Each append says which record the device sent before it
//! ([`AppendRequest::previous_seq`]); the watermark moves over a record only
//! when it already covers that one. A record stored after a gap (its
//! predecessor's write failed) is stored and remembered, but the watermark
//! stays below the gap until the predecessor is stored too, so
//! [`Store::open_session`] (which the server sends as
//! `Welcome.last_stored_seq`) never tells a device to drop a record the
//! store does not have. Gaps the device made itself (records it dropped and
//! never sent) do not hold the watermark back.
//!
//! # Fencing: one session of a device writes at a time
//!
//! [`Store::open_session`] hands out a **fencing token**
//! ([`OpenedSession::fence`]), larger than every token the device had
//! before, and records it as the device's current one. Each append carries
//! its session's token ([`AppendRequest::fence`]); the append's transaction
//! refuses ([`StoreError::Fenced`]) a token older than the device's current
//! one. So when a device reconnects (to this node or, with a shared
//! database, to another one) while its old session still has appends in
//! flight, those late appends are refused by the database itself: nothing
//! of the old session is stored after the new session read its watermark,
//! and no record is acknowledged twice or out of order.

pub mod accounts;
mod admin;
mod postgres;
mod readings;
mod sqlite;

use core::fmt;
use core::future::Future;
use core::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use serde::Serialize;
use tether_proto::{Event, Payload, ServerToReceiver};

pub use accounts::{AccountStore, Role, SessionIdentity};
pub use admin::{AdminStore, NewDevice, NewInvitationLink, NewKey};
pub use postgres::{PgAdmin, PgStore};
pub use readings::{
    BUCKET_WIDTHS_MS, ChannelDescription, DeclaredCommand, ROLLUP_WIDTHS_MS, Series, SeriesPoint,
    SeriesQuery, bucket_width, rollup_width,
};
pub use sqlite::{Admin, ImportEvent, SqliteStore};

/// A boxed, sendable future (the store and broker traits are object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A tenant's numeric id.
pub type TenantId = i64;

/// The tenant unclaimed devices belong to until a receiver key claims them.
/// It has no keys and is not listed.
pub const UNCLAIMED_TENANT: TenantId = 0;

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed (I/O, corruption, a full disk); the text says how.
    Database(String),
    /// The writer stopped (the server is shutting down).
    Closed,
    /// A name is taken (tenant name, device id).
    AlreadyExists,
    /// The tenant, device, key or claim code does not exist.
    NotFound,
    /// The claim code exists but has expired.
    Expired,
    /// A value is not acceptable (the text says which).
    Invalid(String),
    /// The append's session was replaced by a newer session of the device
    /// (its fencing token is older than the device's current one): nothing
    /// was written.
    Fenced,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Database(text) => write!(f, "database error: {text}"),
            StoreError::Closed => f.write_str("the store is closed"),
            StoreError::AlreadyExists => f.write_str("already exists"),
            StoreError::NotFound => f.write_str("not found"),
            StoreError::Expired => f.write_str("expired"),
            StoreError::Invalid(text) => write!(f, "invalid: {text}"),
            StoreError::Fenced => f.write_str("a newer session of the device replaced this one"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        StoreError::Database(error.to_string())
    }
}

/// An authenticated device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceIdentity {
    /// The device id.
    pub device_id: String,
    /// Its tenant ([`UNCLAIMED_TENANT`] until claimed).
    pub tenant_id: TenantId,
}

/// Which channels a receiver key may use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ChannelFilter {
    /// `None`: every channel. Otherwise exact names, or prefixes written
    /// `prefix/*`.
    patterns: Option<Vec<String>>,
}

impl ChannelFilter {
    /// Every channel.
    pub const ALL: ChannelFilter = ChannelFilter { patterns: None };

    /// Only the listed channels (`name` or `prefix/*`), unchecked (e.g. as
    /// stored); [`ChannelFilter::parse`] checks them.
    pub fn only(patterns: Vec<String>) -> Self {
        ChannelFilter {
            patterns: Some(patterns),
        }
    }

    /// Only the listed channels, each checked with
    /// [`ChannelFilter::check_pattern`]; at least one.
    pub fn parse(patterns: Vec<String>) -> Result<Self, StoreError> {
        if patterns.is_empty() {
            return Err(StoreError::Invalid(
                "channel patterns: give at least one".into(),
            ));
        }
        for pattern in &patterns {
            Self::check_pattern(pattern).map_err(StoreError::Invalid)?;
        }
        Ok(Self::only(patterns))
    }

    /// The one rule for a channel pattern, wherever one is accepted: `*`
    /// (every channel), a channel name (that channel), or a channel name
    /// followed by `/*` (every channel below it). Anything else could never
    /// match a channel (`''`, `**`, `/x/`, `a*`) and is refused.
    pub fn check_pattern(pattern: &str) -> Result<(), String> {
        let name = match pattern {
            "*" => return Ok(()),
            _ => pattern.strip_suffix("/*").unwrap_or(pattern),
        };
        tether_proto::validate_channel(name).map_err(|_| {
            format!(
                "channel pattern {pattern:?}: use `*`, a channel name (letters, digits, _ - . and / between \
                 non-empty segments, at most {} bytes) or a name followed by `/*`",
                tether_proto::MAX_CHANNEL_LEN
            )
        })
    }

    /// The patterns, `None` for every channel.
    pub fn patterns(&self) -> Option<&[String]> {
        self.patterns.as_deref()
    }

    /// Whether `channel` passes the filter.
    pub fn allows(&self, channel: &str) -> bool {
        match &self.patterns {
            None => true,
            Some(patterns) => patterns.iter().any(|pattern| {
                if pattern == "*" {
                    return true;
                }
                match pattern.strip_suffix("/*") {
                    Some(prefix) => channel
                        .strip_prefix(prefix)
                        .is_some_and(|rest| rest.starts_with('/')),
                    None => pattern == channel,
                }
            }),
        }
    }
}

/// An authenticated receiver: a receiver key, or a signed-in person's
/// session (then `session` is set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIdentity {
    /// The key's id (for revocation); 0 for a session.
    pub key_id: i64,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The channels it may read and command.
    pub channels: ChannelFilter,
    /// Whether it may send commands (read+command) or only read.
    pub can_command: bool,
    /// The signed-in person, when a session cookie (not a key) is behind
    /// it.
    pub session: Option<SessionIdentity>,
}

impl KeyIdentity {
    /// What a signed-in member may do: every channel of their tenant,
    /// commands and claims unless read-only.
    pub fn of_session(session: SessionIdentity) -> KeyIdentity {
        KeyIdentity {
            key_id: 0,
            tenant_id: session.tenant_id,
            channels: ChannelFilter::ALL,
            can_command: session.role.can_command(),
            session: Some(session),
        }
    }

    /// Whether `revocation` ends this receiver's connections.
    pub fn revoked_by(&self, revocation: &Revocation) -> bool {
        match (revocation, &self.session) {
            (Revocation::Key(id), None) => *id == self.key_id,
            (Revocation::Session(id), Some(session)) => *id == session.session_id,
            (Revocation::Account(id), Some(session)) => *id == session.account_id,
            _ => false,
        }
    }
}

/// One record a device published, to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendRequest {
    /// The device's tenant.
    pub tenant_id: TenantId,
    /// The device.
    pub device_id: String,
    /// `Hello.boot_id`.
    pub boot_id: u64,
    /// `Publish.seq`.
    pub seq: u32,
    /// The `seq` of the record the device sent before this one on the same
    /// connection, or `Welcome.last_stored_seq` for the first one: the
    /// stored watermark moves over this record only if it already covers
    /// `previous_seq` (see the [module docs](self)).
    pub previous_seq: u32,
    /// `Publish.channel`.
    pub channel: String,
    /// `Publish.time_ms`.
    pub device_time_ms: Option<u64>,
    /// `Publish.payload`, checked to be one JSON value.
    pub payload: String,
    /// The fencing token of the session that sent it
    /// ([`OpenedSession::fence`]); 0 for a device that never opened a
    /// session. Refused ([`StoreError::Fenced`]) when older than the
    /// device's current token.
    pub fence: u64,
}

/// What [`Store::open_session`] gives a new device session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenedSession {
    /// The contiguous stored watermark of `(device, boot_id)`
    /// (`Welcome.last_stored_seq`).
    pub last_stored_seq: u32,
    /// The session's fencing token: larger than any the device had before.
    /// Its appends carry it ([`AppendRequest::fence`]).
    pub fence: u64,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Stored at this channel offset.
    Stored {
        /// The offset.
        offset: u64,
    },
    /// `(device, boot_id, seq)` was stored before; nothing written.
    Duplicate,
}

/// The commit of an enqueued append: resolves once it is durable.
pub type Commit = BoxFuture<'static, Result<AppendOutcome, StoreError>>;

/// The commits of appends enqueued together ([`Store::append_all`]):
/// resolves once all of them are decided, with one result per request in
/// the order given.
pub type Commits = BoxFuture<'static, Vec<Result<AppendOutcome, StoreError>>>;

/// A stored record, as receivers see it.
#[derive(Debug, Serialize)]
pub struct StoredEvent {
    /// The channel's tenant.
    #[serde(skip)]
    pub tenant_id: TenantId,
    /// The channel.
    pub channel: String,
    /// Offset within the channel (1, 2, 3, …).
    pub offset: u64,
    /// The publishing device.
    pub device: String,
    /// The device's clock, if it had one (unix ms).
    pub device_time_ms: Option<u64>,
    /// When the server stored it (unix ms).
    pub server_time_ms: u64,
    /// The record, JSON text.
    #[serde(serialize_with = "raw_json")]
    pub payload: String,
    #[serde(skip)]
    json: OnceLock<Utf8Bytes>,
}

fn raw_json<S: serde::Serializer>(payload: &str, serializer: S) -> Result<S::Ok, S::Error> {
    match serde_json::from_str::<&serde_json::value::RawValue>(payload) {
        Ok(raw) => raw.serialize(serializer),
        Err(_) => serializer.serialize_unit(),
    }
}

impl StoredEvent {
    /// A stored event.
    pub fn new(
        tenant_id: TenantId,
        channel: String,
        offset: u64,
        device: String,
        device_time_ms: Option<u64>,
        server_time_ms: u64,
        payload: String,
    ) -> Self {
        StoredEvent {
            tenant_id,
            channel,
            offset,
            device,
            device_time_ms,
            server_time_ms,
            payload,
            json: OnceLock::new(),
        }
    }

    /// The receiver-protocol text frame (`{"v":1,"event":{…}}`), encoded
    /// once.
    pub fn json_frame(&self) -> &str {
        self.json_bytes_ref().as_str()
    }

    /// [`json_frame`](Self::json_frame) as shared bytes: every subscriber
    /// gets the same buffer (a reference count), not a copy.
    pub fn json_bytes(&self) -> bytes::Bytes {
        bytes::Bytes::from(self.json_bytes_ref().clone())
    }

    /// [`json_frame`](Self::json_frame) as a WebSocket text message's
    /// payload: the same buffer for every subscriber, known to be UTF-8
    /// (made from a `String`), so never checked again.
    pub fn text_frame(&self) -> Utf8Bytes {
        self.json_bytes_ref().clone()
    }

    fn json_bytes_ref(&self) -> &Utf8Bytes {
        self.json.get_or_init(|| {
            let event = ServerToReceiver::Event(Event {
                channel: &self.channel,
                offset: self.offset,
                device: &self.device,
                device_time_ms: self.device_time_ms,
                server_time_ms: self.server_time_ms,
                payload: Payload::from_json_str(&self.payload),
            });
            // Every stored field passed validation when it was published.
            Utf8Bytes::from(event.to_json().unwrap_or_default())
        })
    }
}

/// Where a channel's stored events begin and end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ChannelBounds {
    /// Offset of the oldest stored event (`next_offset` if none is).
    pub first_offset: u64,
    /// The offset the next event will get.
    pub next_offset: u64,
}

/// A device, as the HTTP API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceInfo {
    /// The device id.
    pub id: String,
    /// Connected now.
    pub online: bool,
    /// Last time the server heard from it (unix ms), if ever.
    pub last_seen_ms: Option<u64>,
    /// `Hello.firmware_version` of its last session.
    pub firmware_version: Option<String>,
    /// Messages it published since midnight UTC.
    pub messages_today: u64,
    /// The signal strength it last reported (dBm), if it ever did.
    pub rssi_dbm: Option<i16>,
    /// When it reported it (unix ms).
    pub rssi_ms: Option<u64>,
    /// The commands it declared in its last session that declared any.
    pub commands: Vec<DeclaredCommand>,
}

/// A channel, as the HTTP API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChannelInfo {
    /// The channel name.
    pub name: String,
    /// Offset of the oldest stored event.
    pub first_offset: u64,
    /// The offset the next event will get.
    pub next_offset: u64,
    /// When the newest stored event was stored (unix ms).
    pub last_time_ms: Option<u64>,
}

/// Which events to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadRange {
    /// Offsets `from..until` (`until` exclusive, `None`: to the end).
    Offsets {
        /// First offset.
        from: u64,
        /// End (exclusive).
        until: Option<u64>,
    },
    /// Events stored at `since_ms..until_ms` (server time, `until`
    /// exclusive), from offset `after` on (for paging).
    Time {
        /// Start (inclusive).
        since_ms: u64,
        /// End (exclusive).
        until_ms: Option<u64>,
        /// Only offsets at or above this one (paging within the range).
        from: u64,
    },
}

/// A device or key was revoked, or a device changed tenant: (some of) its
/// connections must close now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// A device's token was revoked or replaced: every connection of the
    /// device closes.
    Device(String),
    /// A device was claimed into another tenant: its connections that
    /// authenticated before the claim (and so still belong to the old
    /// tenant) close; a connection made after the claim already belongs
    /// to the new tenant and stays.
    Moved(String),
    /// A receiver key was revoked.
    Key(i64),
    /// A sign-in session ended (sign-out): its connections close.
    Session(i64),
    /// A member's rights changed or they were removed: every connection
    /// of the account closes (a browser reconnects with its new rights).
    Account(i64),
}

impl Revocation {
    /// The revocation a `revocations` row records (`kind`, `subject`), if
    /// it is one this server knows (a newer server's kinds are skipped).
    pub(crate) fn from_row(kind: &str, subject: String) -> Option<Revocation> {
        match kind {
            "device" => Some(Revocation::Device(subject)),
            "moved" => Some(Revocation::Moved(subject)),
            "key" => subject.parse().ok().map(Revocation::Key),
            "session" => subject.parse().ok().map(Revocation::Session),
            "account" => subject.parse().ok().map(Revocation::Account),
            _ => None,
        }
    }
}

/// What one write transaction did, handed to [`StoreOptions::on_transaction`]
/// (for metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TransactionStats {
    /// Operations the transaction held.
    pub operations: usize,
    /// Whether it committed (when not, nothing in it happened).
    pub committed: bool,
    /// Records it stored (0 unless committed).
    pub stored: u64,
    /// Appends of records that were stored before (0 unless committed).
    pub duplicates: u64,
    /// How long it took.
    pub duration: Duration,
}

/// How to open a store: the hooks and limits every store implementation
/// takes.
pub struct StoreOptions {
    /// Called after each commit, once it is durable, with the events it
    /// stored, in offset order (the server hands them to the broker); on
    /// SQLite from the store's sync thread.
    pub on_commit: Box<dyn Fn(Vec<Arc<StoredEvent>>) + Send>,
    /// Called by the writer after each transaction, committed or not (the
    /// server counts stored and duplicate records here, at commit, whatever
    /// becomes of the connection that sent them).
    pub on_transaction: Box<dyn Fn(&TransactionStats) + Send>,
    /// Operations the write queue holds before `append` waits.
    pub queue_capacity: usize,
    /// Database connections readers may hold at once; more concurrent
    /// reads wait for one to be free.
    pub read_connections: usize,
    /// Default retention of tenants without their own: maximum age.
    pub retention_max_age: Option<Duration>,
    /// Default retention of tenants without their own: events per channel.
    pub retention_max_messages: Option<u64>,
}

impl fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreOptions")
            .field("queue_capacity", &self.queue_capacity)
            .field("read_connections", &self.read_connections)
            .field("retention_max_age", &self.retention_max_age)
            .field("retention_max_messages", &self.retention_max_messages)
            .finish_non_exhaustive()
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            on_commit: Box::new(|_| {}),
            on_transaction: Box::new(|_| {}),
            queue_capacity: 4096,
            read_connections: 8,
            retention_max_age: None,
            retention_max_messages: None,
        }
    }
}

/// The durable store. Object safe; every method is async.
pub trait Store: Send + Sync + 'static {
    /// The device a token belongs to, if it is valid and not revoked.
    fn authenticate_device(
        &self,
        token: &str,
    ) -> BoxFuture<'_, Result<Option<DeviceIdentity>, StoreError>>;
    /// The receiver key, if it is valid and not revoked.
    fn authenticate_key(&self, key: &str)
    -> BoxFuture<'_, Result<Option<KeyIdentity>, StoreError>>;
    /// Marks the device online, gives the session a new fencing token (so
    /// appends of older sessions are refused from now on) and returns it
    /// with the contiguous stored watermark of `(device, boot_id)` (0 if
    /// none): every record the device sent in that boot up to it is stored
    /// (`Welcome.last_stored_seq`).
    fn open_session(
        &self,
        device_id: &str,
        firmware_version: &str,
        boot_id: u64,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<OpenedSession, StoreError>>;
    /// Marks the device offline, last seen now, if the session with token
    /// `fence` is still its current one (a session that was replaced
    /// leaves the device as its newer session has it).
    fn close_session(
        &self,
        device_id: &str,
        fence: u64,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Enqueues an append (waiting while the writer is full: backpressure)
    /// and returns its commit. A commit that resolves `Ok` means the record
    /// is stored (now, or before: [`AppendOutcome::Duplicate`]); an `Err`
    /// means nothing of it was acknowledged, whatever happened to the
    /// appends enqueued after it ([`StoreError::Fenced`]: its session was
    /// replaced).
    fn append(&self, request: AppendRequest) -> BoxFuture<'_, Result<Commit, StoreError>>;
    /// Enqueues several appends of one session, in order, as
    /// [`append`](Store::append) would one after the other; the commits
    /// resolve together, one result per request (each means what
    /// `append`'s commit would). A store may write them as one operation
    /// (SQLite: one request to the writer, one reply); by default each is
    /// enqueued on its own.
    fn append_all(
        &self,
        requests: Vec<AppendRequest>,
    ) -> BoxFuture<'_, Result<Commits, StoreError>> {
        Box::pin(async move {
            let mut commits = Vec::with_capacity(requests.len());
            for request in requests {
                commits.push(self.append(request).await?);
            }
            let all: Commits = Box::pin(futures_util::future::join_all(commits));
            Ok(all)
        })
    }
    /// A channel's bounds (`1, 1` for a channel never published to).
    fn channel_bounds(
        &self,
        tenant_id: TenantId,
        channel: &str,
    ) -> BoxFuture<'_, Result<ChannelBounds, StoreError>>;
    /// Up to `limit` events of a channel in offset order.
    fn read(
        &self,
        tenant_id: TenantId,
        channel: &str,
        range: ReadRange,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Arc<StoredEvent>>, StoreError>>;
    /// The tenant's devices.
    fn list_devices(
        &self,
        tenant_id: TenantId,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<Vec<DeviceInfo>, StoreError>>;
    /// The tenant's channels.
    fn list_channels(
        &self,
        tenant_id: TenantId,
    ) -> BoxFuture<'_, Result<Vec<ChannelInfo>, StoreError>>;
    /// The tenant of a device that exists and is not revoked.
    fn device_tenant(&self, device_id: &str)
    -> BoxFuture<'_, Result<Option<TenantId>, StoreError>>;
    /// Moves the device registered with `claim_code` into `tenant_id` and
    /// returns its id; the code is used up. [`StoreError::NotFound`] for an
    /// unknown or used code, [`StoreError::Expired`] for a code whose expiry
    /// is at or before `now_ms`.
    fn claim(
        &self,
        tenant_id: TenantId,
        claim_code: &str,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<String, StoreError>>;
    /// Deletes what each tenant's retention no longer keeps; returns how
    /// many events went. Deletes in bounded chunks, each its own
    /// transaction, between the writer's batches: appends keep committing
    /// (and a failing chunk fails no append) while a large table is
    /// trimmed.
    fn enforce_retention(&self, now_ms: u64) -> BoxFuture<'_, Result<u64, StoreError>>;
    /// Revocations recorded after `after` (by any process), with the id to
    /// pass next time.
    fn revocations_since(
        &self,
        after: i64,
    ) -> BoxFuture<'_, Result<(Vec<Revocation>, i64), StoreError>>;
    /// Marks every device offline (at start-up, after an unclean stop).
    fn reset_presence(&self) -> BoxFuture<'_, Result<(), StoreError>>;
    /// The accounts part: people who sign in, their sessions, memberships
    /// and invitations.
    fn accounts(&self) -> &dyn AccountStore;
    /// Waits until everything enqueued is committed and stops the writer.
    fn close(&self) -> BoxFuture<'_, ()>;

    // Readings (see `readings.rs`): descriptions, declared commands,
    // signal strength, downsampled series.

    /// Stores what `device_id` said the fields of `channel` (of its tenant
    /// `tenant_id`) mean: `fields` is the canonical JSON array
    /// (`tether_proto::Fields`), replacing the device's earlier one.
    fn describe_channel(
        &self,
        tenant_id: TenantId,
        device_id: &str,
        channel: &str,
        fields: &str,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Every device's description of a channel of the tenant, by device.
    fn channel_descriptions(
        &self,
        tenant_id: TenantId,
        channel: &str,
    ) -> BoxFuture<'_, Result<Vec<ChannelDescription>, StoreError>>;
    /// Replaces the commands the device declared.
    fn set_commands(
        &self,
        device_id: &str,
        commands: Vec<DeclaredCommand>,
    ) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Records the signal strength the device reported.
    fn set_rssi(
        &self,
        device_id: &str,
        rssi_dbm: i16,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Min, max and mean of every numeric field of a channel's events, per
    /// device and bucket (see [`Series`]).
    fn series(
        &self,
        tenant_id: TenantId,
        channel: &str,
        query: SeriesQuery,
    ) -> BoxFuture<'_, Result<Series, StoreError>>;
    /// Rolls the events stored since the last run up into the buckets
    /// [`series`](Self::series) reads; returns how many events it read.
    /// Works in bounded chunks between the writer's batches, like
    /// retention.
    fn roll_up(&self) -> BoxFuture<'_, Result<u64, StoreError>>;
}
