//! What the writer remembers between transactions: each channel's id and
//! next offset, each device's session fencing token, and each boot's
//! contiguous stored watermark.
//!
//! Without it every append read all three back from the database (the
//! fence, the boot's watermark, the channel's row, each a B-tree descent)
//! and wrote two of them (the channel's `next_offset`, the boot's row):
//! five statements besides the `messages` insert. With it an append is the
//! insert; the changed rows are written once per transaction
//! ([`Hot::flush`]), just before its commit.
//!
//! ```text
//!  BEGIN IMMEDIATE ─▶ Hot::begin: PRAGMA data_version changed? ─▶ forget all
//!   appends: read and change the memory (loading a row on first use)
//!   Hot::flush: UPDATE channels / UPSERT boots for the rows changed ─▶ COMMIT
//!   the transaction failed ─▶ Hot::forget (the next one reloads)
//! ```
//!
//! The memory is right only while nobody else writes these rows: another
//! connection's commit (a second server on the same file, the admin CLI)
//! changes `PRAGMA data_version`, which [`Hot::begin`] reads under the
//! write lock, so a stale memory is dropped before it is used. An
//! operation changes the memory only after all its statements succeeded,
//! so one that fails in its savepoint leaves no trace; a transaction that
//! does not commit drops the whole memory.

use rusqlite::{Connection, OptionalExtension, params};

use super::schema::{boot_to_i64, to_u64};
use crate::store::{StoreError, TenantId};

/// The memory's maps: every append looks up its device, boot and channel,
/// and SipHash of the keys was 3 % of the writer's time.
pub(super) type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Entries (channels, devices and boots) kept at most; beyond it the
/// memory starts over (rows are loaded again on first use).
const MAX_ENTRIES: usize = 1 << 18;

/// A channel's row: its id and the offset its next message gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Channel {
    pub(super) id: i64,
    pub(super) next_offset: i64,
}

/// A `(device, boot)`'s row of `boots`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Boot {
    /// The contiguous stored watermark (0: none yet).
    pub(super) stored_seq: i64,
    /// `stored_seqs` may hold records of this boot above the watermark
    /// (when false, a record above it is certainly not stored).
    pub(super) gaps: bool,
    /// The row's `last_ms`.
    pub(super) last_ms: i64,
    /// The row exists in the table (loaded from it, or written by a
    /// committed flush): [`Hot::flush`] updates it in place instead of an
    /// upsert's second B-tree descent.
    pub(super) in_table: bool,
}

#[derive(Debug, Default)]
struct Device {
    /// `devices.session_fence`, once read.
    fence: Option<u64>,
    boots: HashMap<u64, Boot>,
    /// Its boots in [`Hot::dirty_boots`] (so an append that changes a boot
    /// already changed in this transaction copies no device id).
    dirty: Vec<u64>,
}

/// The writer's memory of hot rows (see the module docs).
#[derive(Debug, Default)]
pub(super) struct Hot {
    /// `PRAGMA data_version` when the memory was last known right.
    data_version: Option<i64>,
    channels: HashMap<TenantId, HashMap<String, Channel>>,
    devices: HashMap<String, Device>,
    entries: usize,
    /// Channels changed in this transaction: id → next offset.
    dirty_channels: HashMap<i64, i64>,
    /// Boots changed in this transaction.
    dirty_boots: Vec<(String, u64)>,
}

impl Hot {
    /// At the start of a write transaction (holding the write lock): drops
    /// the memory if another connection committed since it was right.
    pub(super) fn begin(&mut self, tx: &Connection) -> Result<(), StoreError> {
        let version: i64 = tx
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |row| row.get(0))?;
        if self.data_version != Some(version) || self.entries > MAX_ENTRIES {
            self.forget();
        }
        self.data_version = Some(version);
        Ok(())
    }

    /// Drops everything (the transaction did not commit, or the database
    /// changed under it).
    pub(super) fn forget(&mut self) {
        *self = Hot::default();
    }

    /// The device's current session fencing token (0: it never opened one).
    pub(super) fn fence(&mut self, tx: &Connection, device_id: &str) -> Result<u64, StoreError> {
        if let Some(fence) = self.devices.get(device_id).and_then(|device| device.fence) {
            return Ok(fence);
        }
        let fence: Option<i64> = tx
            .prepare_cached("SELECT session_fence FROM devices WHERE id = ?1")?
            .query_row(params![device_id], |row| row.get(0))
            .optional()?;
        let fence = fence.map_or(0, to_u64);
        self.set_fence(device_id, fence);
        Ok(fence)
    }

    /// Remembers the device's fence (written by the caller).
    pub(super) fn set_fence(&mut self, device_id: &str, fence: u64) {
        self.with_device(device_id, |device| device.fence = Some(fence));
    }

    /// The boot's row as it stands in this transaction.
    pub(super) fn boot(
        &mut self,
        tx: &Connection,
        device_id: &str,
        boot_id: u64,
    ) -> Result<Boot, StoreError> {
        if let Some(boot) = self
            .devices
            .get(device_id)
            .and_then(|device| device.boots.get(&boot_id))
        {
            return Ok(*boot);
        }
        let boot_key = boot_to_i64(boot_id);
        let row: Option<(i64, i64)> = tx
            .prepare_cached(
                "SELECT stored_seq, last_ms FROM boots WHERE device_id = ?1 AND boot_id = ?2",
            )?
            .query_row(params![device_id, boot_key], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()?;
        let gaps = tx
            .prepare_cached("SELECT 1 FROM stored_seqs WHERE device_id = ?1 AND boot_id = ?2")?
            .exists(params![device_id, boot_key])?;
        let in_table = row.is_some();
        let (stored_seq, last_ms) = row.unwrap_or((0, 0));
        let boot = Boot {
            stored_seq,
            gaps,
            last_ms,
            in_table,
        };
        self.with_device(device_id, |device| device.boots.insert(boot_id, boot));
        self.entries = self.entries.saturating_add(1);
        Ok(boot)
    }

    /// Changes the boot's row (written at [`Hot::flush`]).
    pub(super) fn set_boot(&mut self, device_id: &str, boot_id: u64, boot: Boot) {
        let newly_dirty = self.with_device(device_id, |device| {
            let before = device.boots.insert(boot_id, boot);
            let newly = before != Some(boot) && !device.dirty.contains(&boot_id);
            if newly {
                device.dirty.push(boot_id);
            }
            newly
        });
        if newly_dirty {
            self.dirty_boots.push((device_id.to_owned(), boot_id));
        }
    }

    /// The channel's row, if it exists.
    pub(super) fn channel(
        &mut self,
        tx: &Connection,
        tenant_id: TenantId,
        name: &str,
    ) -> Result<Option<Channel>, StoreError> {
        if let Some(channel) = self
            .channels
            .get(&tenant_id)
            .and_then(|channels| channels.get(name))
        {
            return Ok(Some(*channel));
        }
        let row: Option<(i64, i64)> = tx
            .prepare_cached(
                "SELECT id, next_offset FROM channels WHERE tenant_id = ?1 AND name = ?2",
            )?
            .query_row(params![tenant_id, name], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()?;
        let Some((id, next_offset)) = row else {
            return Ok(None);
        };
        let channel = Channel { id, next_offset };
        self.channels
            .entry(tenant_id)
            .or_default()
            .insert(name.to_owned(), channel);
        self.entries = self.entries.saturating_add(1);
        Ok(Some(channel))
    }

    /// Changes (or adds) the channel's row (written at [`Hot::flush`]).
    pub(super) fn set_channel(&mut self, tenant_id: TenantId, name: &str, channel: Channel) {
        let channels = self.channels.entry(tenant_id).or_default();
        match channels.get_mut(name) {
            Some(known) => *known = channel,
            None => {
                channels.insert(name.to_owned(), channel);
                self.entries = self.entries.saturating_add(1);
            }
        }
        self.dirty_channels.insert(channel.id, channel.next_offset);
    }

    /// Writes the rows this transaction changed (before its commit).
    pub(super) fn flush(&mut self, tx: &Connection) -> Result<(), StoreError> {
        if !self.dirty_channels.is_empty() {
            let mut update =
                tx.prepare_cached("UPDATE channels SET next_offset = ?2 WHERE id = ?1")?;
            for (id, next_offset) in self.dirty_channels.drain() {
                update.execute(params![id, next_offset])?;
            }
        }
        let mut upsert = tx.prepare_cached(
            "INSERT INTO boots(device_id, boot_id, stored_seq, last_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(device_id, boot_id) DO UPDATE SET stored_seq = excluded.stored_seq,
             last_ms = excluded.last_ms",
        )?;
        let mut update = tx.prepare_cached(
            "UPDATE boots SET stored_seq = ?3, last_ms = ?4 WHERE device_id = ?1 AND boot_id = ?2",
        )?;
        for (device_id, boot_id) in self.dirty_boots.drain(..) {
            let Some(device) = self.devices.get_mut(&device_id) else {
                continue;
            };
            device.dirty.clear();
            let Some(boot) = device.boots.get_mut(&boot_id) else {
                continue;
            };
            let values = params![
                device_id,
                boot_to_i64(boot_id),
                boot.stored_seq,
                boot.last_ms
            ];
            if boot.in_table {
                update.execute(values)?;
            } else {
                upsert.execute(values)?;
                // Only kept if the transaction commits (else the memory
                // is forgotten).
                boot.in_table = true;
            }
        }
        Ok(())
    }

    /// Runs `change` on the device's entry, made if it is new (the id is
    /// copied only then).
    fn with_device<T>(&mut self, device_id: &str, change: impl FnOnce(&mut Device) -> T) -> T {
        if let Some(device) = self.devices.get_mut(device_id) {
            return change(device);
        }
        let mut device = Device::default();
        let result = change(&mut device);
        self.devices.insert(device_id.to_owned(), device);
        self.entries = self.entries.saturating_add(1);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::schema::open_connection;

    fn channel_offset(conn: &Connection) -> Result<i64, StoreError> {
        Ok(conn.query_row(
            "SELECT next_offset FROM channels WHERE tenant_id = 0 AND name = 't'",
            [],
            |row| row.get(0),
        )?)
    }

    #[test]
    fn flushes_what_changed_and_forgets_what_another_connection_changed() -> Result<(), StoreError>
    {
        let dir = tempfile::tempdir().map_err(|error| StoreError::Database(error.to_string()))?;
        let path = dir.path().join("hot.db");
        let mut writer = open_connection(&path)?;
        let other = open_connection(&path)?;
        other.execute(
            "INSERT INTO channels(tenant_id, name, next_offset) VALUES (0, 't', 5)",
            [],
        )?;
        let mut hot = Hot::default();

        // Loaded once, changed in memory, written at the flush.
        let tx = writer.transaction()?;
        hot.begin(&tx)?;
        let loaded = hot.channel(&tx, 0, "t")?;
        let Some(channel) = loaded else {
            return Err(StoreError::Invalid("the channel exists".into()));
        };
        assert_eq!(channel.next_offset, 5);
        hot.set_channel(
            0,
            "t",
            Channel {
                next_offset: 9,
                ..channel
            },
        );
        hot.set_boot(
            "d1",
            7,
            Boot {
                stored_seq: 3,
                gaps: false,
                last_ms: 1,
                in_table: false,
            },
        );
        assert_eq!(channel_offset(&tx)?, 5, "not written before the flush");
        hot.flush(&tx)?;
        tx.commit()?;
        assert_eq!(channel_offset(&other)?, 9);
        let stored: i64 = other.query_row(
            "SELECT stored_seq FROM boots WHERE device_id = 'd1' AND boot_id = 7",
            [],
            |row| row.get(0),
        )?;
        assert_eq!(stored, 3);

        // Our own commit keeps the memory; another connection's drops it.
        let tx = writer.transaction()?;
        hot.begin(&tx)?;
        assert_eq!(hot.channel(&tx, 0, "t")?.map(|c| c.next_offset), Some(9));
        tx.commit()?;
        other.execute("UPDATE channels SET next_offset = 20 WHERE name = 't'", [])?;
        let tx = writer.transaction()?;
        hot.begin(&tx)?;
        assert_eq!(hot.channel(&tx, 0, "t")?.map(|c| c.next_offset), Some(20));
        assert_eq!(hot.boot(&tx, "d1", 7)?.stored_seq, 3);
        tx.commit()?;
        Ok(())
    }
}
