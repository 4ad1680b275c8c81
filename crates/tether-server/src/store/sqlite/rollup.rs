//! Rolling events up into the buckets series queries read
//! (`store::ROLLUP_WIDTHS_MS`), one bounded chunk at a time, with the heavy
//! part off the writer thread.
//!
//! ```text
//!  roll_up ─▶ plan (reader): channels with events after their progress
//!   per chunk of ≤ CHUNK events of one channel:
//!    aggregate (reader connection, a blocking thread): json_each over the
//!      chunk's payloads, GROUP BY 10 s bucket, device, member ─▶ Chunk
//!    apply (writer, one small operation in a batch): progress still where
//!      the chunk starts? add the chunk to every rollup width, move the
//!      progress, prune buckets older than the channel's oldest event
//! ```
//!
//! Reading and parsing every payload (and sorting the members) cost the
//! serial writer thread about 40 % of its time under full ingest when it
//! ran there; the writer now only adds a few hundred bucket rows per chunk.
//! The rollups and the progress still change in one transaction, so a
//! series query sees rollups and progress that agree, and reads the events
//! after the progress itself. A chunk whose channel's progress moved since
//! it was read (another roll-up run got there first) is dropped unapplied.

use std::collections::BTreeMap;

use rusqlite::{Connection, params};

use super::schema::to_i64;
use crate::store::{ROLLUP_WIDTHS_MS, StoreError};

/// Events one chunk reads at most.
pub(super) const CHUNK: i64 = 5000;

/// One channel's events still to roll up: offsets `from + 1 ..= through`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pending {
    pub(super) channel_id: i64,
    pub(super) from: i64,
    pub(super) through: i64,
}

/// One narrowest bucket of one device's member in a chunk.
#[derive(Debug, Clone, PartialEq)]
struct Bucket {
    bucket_ms: i64,
    device_id: String,
    key: String,
    n: i64,
    total: f64,
    low: f64,
    high: f64,
}

/// A bucket's count, total, minimum and maximum.
type Sums = (i64, f64, f64, f64);

/// A channel's events `from + 1 ..= through`, aggregated into the
/// narrowest buckets (read on a reader connection), to add to the rollups.
#[derive(Debug, Clone)]
pub(super) struct Chunk {
    pending: Pending,
    buckets: Vec<Bucket>,
}

impl Chunk {
    /// Events in the chunk.
    pub(super) fn events(&self) -> u64 {
        u64::try_from(self.pending.through - self.pending.from).unwrap_or(0)
    }
}

/// Channels with events after their roll-up progress.
pub(super) fn plan(conn: &Connection) -> Result<Vec<Pending>, StoreError> {
    let mut statement = conn.prepare(
        "SELECT c.id, coalesce(p.rolled_offset, 0), c.next_offset - 1
         FROM channels c LEFT JOIN rollup_progress p ON p.channel_id = c.id
         WHERE c.next_offset - 1 > coalesce(p.rolled_offset, 0)",
    )?;
    let rows = statement
        .query_map([], |row| {
            Ok(Pending {
                channel_id: row.get(0)?,
                from: row.get(1)?,
                through: row.get(2)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// The next chunk of `pending` (at most [`CHUNK`] events), aggregated
/// per device, member and narrowest bucket; a reader connection's work.
pub(super) fn aggregate(conn: &Connection, pending: Pending) -> Result<Chunk, StoreError> {
    let through = pending.through.min(pending.from.saturating_add(CHUNK));
    let pending = Pending { through, ..pending };
    let narrowest = to_i64(ROLLUP_WIDTHS_MS[0]);
    let buckets = conn
        .prepare_cached(
            "SELECT (m.server_time_ms / ?4) * ?4, m.device_id, coalesce(j.key, ''),
                    count(*), total(j.value), min(j.value), max(j.value)
             FROM messages m, json_each(m.payload) j
             WHERE m.channel_id = ?1 AND m.offset > ?2 AND m.offset <= ?3
               AND j.type IN ('integer', 'real') AND typeof(j.key) != 'integer'
             GROUP BY 1, 2, 3",
        )?
        .query_map(
            params![pending.channel_id, pending.from, through, narrowest],
            |row| {
                Ok(Bucket {
                    bucket_ms: row.get(0)?,
                    device_id: row.get(1)?,
                    key: row.get(2)?,
                    n: row.get(3)?,
                    total: row.get(4)?,
                    low: row.get(5)?,
                    high: row.get(6)?,
                })
            },
        )?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Chunk { pending, buckets })
}

/// Adds a chunk to every rollup width and moves the channel's progress
/// over it, inside the writer's transaction; the events it covered, or 0
/// when the progress is no longer where the chunk starts.
pub(super) fn apply(tx: &Connection, chunk: &Chunk) -> Result<u64, StoreError> {
    let Pending {
        channel_id,
        from,
        through,
    } = chunk.pending;
    let progress: i64 = tx
        .prepare_cached(
            "SELECT coalesce(
                 (SELECT rolled_offset FROM rollup_progress WHERE channel_id = ?1), 0)",
        )?
        .query_row(params![channel_id], |row| row.get(0))?;
    if progress != from {
        return Ok(0);
    }
    let mut add = tx.prepare_cached(
        "INSERT INTO rollups(channel_id, width_ms, bucket_ms, device_id, key, n, total, low, high)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT(channel_id, width_ms, bucket_ms, device_id, key) DO UPDATE SET
             n = n + excluded.n, total = total + excluded.total,
             low = min(low, excluded.low), high = max(high, excluded.high)",
    )?;
    for width in ROLLUP_WIDTHS_MS {
        let width = to_i64(width);
        // (bucket start, device, member) → (n, total, low, high).
        let mut wide: BTreeMap<(i64, &str, &str), Sums> = BTreeMap::new();
        for bucket in &chunk.buckets {
            // As SQL's integer division (toward zero) did.
            let start = bucket.bucket_ms / width * width;
            let entry = wide
                .entry((start, &bucket.device_id, &bucket.key))
                .or_insert((0, 0.0, bucket.low, bucket.high));
            entry.0 = entry.0.saturating_add(bucket.n);
            entry.1 += bucket.total;
            entry.2 = entry.2.min(bucket.low);
            entry.3 = entry.3.max(bucket.high);
        }
        for ((start, device_id, key), (n, total, low, high)) in wide {
            add.execute(params![
                channel_id, width, start, device_id, key, n, total, low, high
            ])?;
        }
    }
    tx.prepare_cached(
        "INSERT INTO rollup_progress(channel_id, rolled_offset) VALUES (?1, ?2)
         ON CONFLICT(channel_id) DO UPDATE SET rolled_offset = excluded.rolled_offset",
    )?
    .execute(params![channel_id, through])?;
    // Retention may have deleted some of the chunk's events after they
    // were read: no bucket may outlive the channel's oldest event.
    prune(tx, channel_id)?;
    Ok(chunk.events())
}

/// Forgets the rollups of a channel's buckets that end at or before its
/// oldest remaining event (retention deleted what they summed up); all of
/// them when no event remains.
pub(super) fn prune(tx: &Connection, channel_id: i64) -> Result<(), StoreError> {
    let oldest: i64 = tx
        .prepare_cached(
            "SELECT coalesce(min(server_time_ms), 9223372036854775807) FROM messages
             WHERE channel_id = ?1",
        )?
        .query_row(params![channel_id], |row| row.get(0))?;
    let mut delete = tx.prepare_cached(
        "DELETE FROM rollups WHERE channel_id = ?1 AND width_ms = ?2 AND bucket_ms <= ?3",
    )?;
    for width in ROLLUP_WIDTHS_MS {
        let width = to_i64(width);
        delete.execute(params![channel_id, width, oldest.saturating_sub(width)])?;
    }
    Ok(())
}
