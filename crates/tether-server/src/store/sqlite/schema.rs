//! The database schema, its migrations, and opening connections.
//!
//! A database records how far it is migrated in `PRAGMA user_version`.
//! [`BASE`] is the schema every database had before versions were counted
//! (version 0); each entry of [`MIGRATIONS`] takes a database one version
//! further. A new database is made the same way (base, then every
//! migration), so new and upgraded databases cannot differ.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::store::StoreError;

/// The schema of version 0 (as the first releases created it).
pub(super) const BASE: &str = "
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

/// One step from version `n` to `n + 1`; runs inside the migrating
/// transaction.
type Migration = fn(&Connection) -> Result<(), StoreError>;

/// Version `n + 1` is what `MIGRATIONS[n]` makes of version `n`.
const MIGRATIONS: [Migration; 5] = [
    claim_codes_expire,
    contiguous_watermark,
    session_fences,
    readings,
    accounts,
];

/// The schema version this code reads and writes.
pub(super) const VERSION: i64 = MIGRATIONS.len() as i64;

/// 1: claim codes can expire. (Databases made before versions were
/// counted may already have the column.)
fn claim_codes_expire(conn: &Connection) -> Result<(), StoreError> {
    let exists = conn
        .prepare("SELECT 1 FROM pragma_table_info('devices') WHERE name = 'claim_expires_ms'")?
        .exists([])?;
    if !exists {
        // When a claim code stops working (Unix ms); NULL: never.
        conn.execute_batch("ALTER TABLE devices ADD COLUMN claim_expires_ms INTEGER")?;
    }
    Ok(())
}

/// 2: de-duplicate on what is stored and acknowledge only what is stored
/// without a gap. `boots.stored_seq` is the contiguous stored watermark of a
/// `(device, boot)`; `stored_seqs` names the records stored above it (after
/// a failed write left a gap), so re-sending them stores nothing twice.
/// The old `max_seq` was the highest stored `seq`, the best watermark an
/// old database can give.
fn contiguous_watermark(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "ALTER TABLE boots RENAME COLUMN max_seq TO stored_seq;
         CREATE TABLE stored_seqs(
             device_id TEXT NOT NULL,
             boot_id INTEGER NOT NULL,
             seq INTEGER NOT NULL,
             PRIMARY KEY(device_id, boot_id, seq)
         ) WITHOUT ROWID;",
    )?;
    Ok(())
}

/// 3: each device's current session fencing token (see the
/// [store docs](crate::store)): appends of older sessions are refused.
fn session_fences(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch("ALTER TABLE devices ADD COLUMN session_fence INTEGER NOT NULL DEFAULT 0")?;
    Ok(())
}

/// 4: readings that describe themselves, and series at any range.
///
/// - `channel_descriptions`: what each device said a channel's fields mean
///   (the canonical JSON array of `tether_proto::Fields`).
/// - `device_commands`: the commands a device declared, in its order.
/// - `devices.rssi_dbm`, `devices.rssi_ms`: its last signal strength.
/// - `rollups`: per channel, bucket width (`store::ROLLUP_WIDTHS_MS`),
///   bucket start (server time), device and payload member: how many
///   numeric values, their sum, min and max. `rollup_progress` says up to
///   which offset a channel's events are in them (see `rollup.rs`).
fn readings(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE channel_descriptions(
             tenant_id INTEGER NOT NULL,
             channel TEXT NOT NULL,
             device_id TEXT NOT NULL,
             fields TEXT NOT NULL,
             updated_ms INTEGER NOT NULL,
             PRIMARY KEY(tenant_id, channel, device_id)
         ) WITHOUT ROWID;
         CREATE TABLE device_commands(
             device_id TEXT NOT NULL,
             position INTEGER NOT NULL,
             channel TEXT NOT NULL,
             label TEXT NOT NULL,
             example TEXT NOT NULL,
             PRIMARY KEY(device_id, position)
         ) WITHOUT ROWID;
         ALTER TABLE devices ADD COLUMN rssi_dbm INTEGER;
         ALTER TABLE devices ADD COLUMN rssi_ms INTEGER;
         CREATE TABLE rollups(
             channel_id INTEGER NOT NULL,
             width_ms INTEGER NOT NULL,
             bucket_ms INTEGER NOT NULL,
             device_id TEXT NOT NULL,
             key TEXT NOT NULL,
             n INTEGER NOT NULL,
             total REAL NOT NULL,
             low REAL NOT NULL,
             high REAL NOT NULL,
             PRIMARY KEY(channel_id, width_ms, bucket_ms, device_id, key)
         ) WITHOUT ROWID;
         CREATE TABLE rollup_progress(
             channel_id INTEGER PRIMARY KEY,
             rolled_offset INTEGER NOT NULL
         );",
    )?;
    Ok(())
}

/// 5: people sign in (see `store::accounts`): accounts with an Argon2id
/// password hash, their membership of one tenant with a role, sign-in
/// sessions and invitations (secrets as a lookup prefix and a SHA-256,
/// like receiver keys).
fn accounts(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE accounts(
             id INTEGER PRIMARY KEY,
             email TEXT NOT NULL UNIQUE,
             password_hash TEXT NOT NULL,
             created_ms INTEGER NOT NULL
         );
         CREATE TABLE memberships(
             account_id INTEGER PRIMARY KEY REFERENCES accounts(id) ON DELETE CASCADE,
             tenant_id INTEGER NOT NULL REFERENCES tenants(id),
             role TEXT NOT NULL CHECK (role IN ('owner', 'member', 'read_only')),
             created_ms INTEGER NOT NULL
         );
         CREATE INDEX memberships_by_tenant ON memberships(tenant_id);
         CREATE TABLE web_sessions(
             id INTEGER PRIMARY KEY,
             lookup TEXT NOT NULL UNIQUE,
             hash BLOB NOT NULL,
             account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
             created_ms INTEGER NOT NULL,
             expires_ms INTEGER NOT NULL
         );
         CREATE INDEX web_sessions_by_account ON web_sessions(account_id);
         CREATE TABLE invitations(
             id INTEGER PRIMARY KEY,
             tenant_id INTEGER NOT NULL REFERENCES tenants(id),
             lookup TEXT NOT NULL UNIQUE,
             hash BLOB NOT NULL,
             role TEXT NOT NULL CHECK (role IN ('owner', 'member', 'read_only')),
             invited_by INTEGER REFERENCES accounts(id) ON DELETE SET NULL,
             created_ms INTEGER NOT NULL,
             expires_ms INTEGER NOT NULL,
             used_ms INTEGER
         );
         CREATE INDEX invitations_by_tenant ON invitations(tenant_id);",
    )?;
    Ok(())
}

/// Brings a database up to [`VERSION`]. Safe when several processes open
/// the database at once (the server and the admin CLI): the check and the
/// changes run in one immediate transaction.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(BASE)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version > VERSION {
        return Err(StoreError::Invalid(format!(
            "the database has schema version {version}, newer than this server's {VERSION}: \
             run a newer tether-server"
        )));
    }
    let done = usize::try_from(version).unwrap_or(0);
    for migration in MIGRATIONS.iter().skip(done) {
        migration(&tx)?;
    }
    if version != VERSION {
        tx.pragma_update(None, "user_version", VERSION)?;
    }
    tx.commit()?;
    Ok(())
}

/// The page size of new databases, bytes.
pub(super) const PAGE_SIZE: i64 = 1024;

/// How long a connection waits for another one's write lock before its
/// statement fails with "database is locked".
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens (creating and migrating if needed) a database file with the
/// pragmas tether uses.
pub(crate) fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Only takes effect on a new, empty database (before WAL): small
    // pages, because every append updates rows scattered over several
    // tables (its channel's newest `messages` leaf and time index, the
    // device's `boots` row, the channel's `next_offset`), and each
    // touched page is written whole to the WAL at commit.
    conn.pragma_update(None, "page_size", PAGE_SIZE)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a commit is on disk when it returns (acks mean durable).
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// A read-only connection for the reader pool.
pub(super) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(crate) fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// `boot_id` keeps its 64 bits in SQLite's signed integer.
pub(super) fn boot_to_i64(boot_id: u64) -> i64 {
    i64::from_ne_bytes(boot_id.to_ne_bytes())
}

/// A duration in ms as SQLite stores it.
pub(super) fn duration_ms(duration: Duration) -> i64 {
    to_i64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(conn: &Connection, table: &str) -> Result<Vec<String>, StoreError> {
        Ok(conn
            .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))?
            .query_map([], |row| row.get(0))?
            .collect::<Result<_, _>>()?)
    }

    #[test]
    fn new_databases_get_every_migration_and_reopening_changes_nothing() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|error| StoreError::Database(error.to_string()))?;
        let path = dir.path().join("new.db");
        let conn = open_connection(&path)?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
        assert_eq!(version, VERSION);
        assert!(columns(&conn, "boots")?.contains(&"stored_seq".to_owned()));
        assert!(columns(&conn, "devices")?.contains(&"claim_expires_ms".to_owned()));
        for table in ["accounts", "memberships", "web_sessions", "invitations"] {
            assert!(!columns(&conn, table)?.is_empty(), "{table} missing");
        }
        assert!(columns(&conn, "devices")?.contains(&"rssi_dbm".to_owned()));
        assert!(columns(&conn, "rollups")?.contains(&"width_ms".to_owned()));
        drop(conn);
        let again = open_connection(&path)?;
        assert!(columns(&again, "boots")?.contains(&"stored_seq".to_owned()));
        Ok(())
    }

    #[test]
    fn a_database_of_a_newer_server_is_refused() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|error| StoreError::Database(error.to_string()))?;
        let path = dir.path().join("future.db");
        drop(open_connection(&path)?);
        Connection::open(&path)?.pragma_update(None, "user_version", VERSION + 1)?;
        match open_connection(&path) {
            Err(StoreError::Invalid(text)) => assert!(text.contains("newer"), "{text}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        Ok(())
    }
}
