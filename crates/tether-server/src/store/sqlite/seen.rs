//! Each device's publish count of the day and its last-seen time
//! (`devices.day_count`, `devices.last_seen_ms`), kept by the writer and
//! written a few seconds late, a bounded number of devices per
//! transaction.
//!
//! Written in every commit, they were one more row per publishing device
//! per transaction: with thousands of devices publishing once a second
//! each, one `UPDATE devices` and one more 1 KiB page in the WAL (and in
//! the next checkpoint) per message, for a statistic. Now a device's row
//! is written once per [`DELAY`] at most. What is counted but not yet
//! written is written before `list_devices` reads the table (the store
//! sends [`super::writer`] a `CountSeen` first), when the writer stops,
//! and before a device's count moves to another day. A crash loses at
//! most [`DELAY`] of counting; no message and no watermark depend on it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};

use super::hot::HashMap;
use super::schema::to_i64;

/// How long a count waits in memory at most (unless the writer is idle:
/// then it is written with the next transaction or `list_devices`).
pub(super) const DELAY: Duration = Duration::from_secs(5);

/// Rows written per transaction at most, besides forced ones: the late
/// counts of a whole fleet spread over many commits.
const PER_TRANSACTION: usize = 64;

#[derive(Debug, Clone, Copy)]
struct Count {
    /// The day (its first millisecond) the count belongs to.
    day_ms: u64,
    count: i64,
    last_ms: u64,
    since: Instant,
}

/// Counts not yet written (see the module docs).
#[derive(Debug, Default)]
pub(super) struct Seen {
    pending: HashMap<String, Count>,
    /// Devices in the order their pending count began (stale entries,
    /// already written, are skipped).
    order: VecDeque<(Instant, String)>,
}

impl Seen {
    /// Writes in `tx` what is due: everything if `all`, else the counts
    /// older than [`DELAY`] (at most [`PER_TRANSACTION`]) and the counts
    /// of devices in `published` that are of another day than `today`.
    /// Returns the devices written, for [`Seen::committed`].
    pub(super) fn write(
        &self,
        tx: &Connection,
        published: &HashMap<&str, i64>,
        today: u64,
        all: bool,
    ) -> Result<Vec<String>, rusqlite::Error> {
        let mut due: Vec<&str> = if all {
            self.pending.keys().map(String::as_str).collect()
        } else {
            let old = Instant::now().checked_sub(DELAY);
            self.order
                .iter()
                .take_while(|(since, _)| old.is_some_and(|old| *since <= old))
                .filter(|(since, device)| {
                    self.pending
                        .get(device)
                        .is_some_and(|count| count.since == *since)
                })
                .map(|(_, device)| device.as_str())
                .take(PER_TRANSACTION)
                .collect()
        };
        if !all {
            due.extend(published.keys().copied().filter(|device| {
                self.pending
                    .get(*device)
                    .is_some_and(|count| count.day_ms != today)
            }));
        }
        // A device can be both late and of another day: write it once.
        due.sort_unstable();
        due.dedup();
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let mut update = tx.prepare_cached(
            "UPDATE devices SET
                day_count = CASE WHEN day_start_ms = ?2 THEN day_count + ?3 ELSE ?3 END,
                day_start_ms = ?2, last_seen_ms = max(coalesce(last_seen_ms, 0), ?4)
             WHERE id = ?1",
        )?;
        let mut written = Vec::with_capacity(due.len());
        for device in due {
            let Some(count) = self.pending.get(device) else {
                continue;
            };
            update.execute(params![
                device,
                to_i64(count.day_ms),
                count.count,
                to_i64(count.last_ms)
            ])?;
            written.push(device.to_owned());
        }
        Ok(written)
    }

    /// The transaction that wrote `written` committed, with the records
    /// counted in `published` (stored on `today` at `now_ms`).
    pub(super) fn committed(
        &mut self,
        written: Vec<String>,
        published: &HashMap<&str, i64>,
        today: u64,
        now_ms: u64,
    ) {
        for device in written {
            self.pending.remove(&device);
        }
        while self.order.front().is_some_and(|(since, device)| {
            self.pending.get(device).is_none_or(|c| c.since != *since)
        }) {
            self.order.pop_front();
        }
        let now = Instant::now();
        for (device, added) in published {
            match self.pending.get_mut(*device) {
                Some(count) => {
                    count.count = count.count.saturating_add(*added);
                    count.last_ms = now_ms;
                }
                None => {
                    self.pending.insert(
                        (*device).to_owned(),
                        Count {
                            day_ms: today,
                            count: *added,
                            last_ms: now_ms,
                            since: now,
                        },
                    );
                    self.order.push_back((now, (*device).to_owned()));
                }
            }
        }
    }

    /// Whether anything is not yet written.
    pub(super) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_count_of_another_day_is_written_once() -> Result<(), rusqlite::Error> {
        let db = Connection::open_in_memory()?;
        db.execute_batch(
            "CREATE TABLE devices (id TEXT PRIMARY KEY, day_count INTEGER NOT NULL,
                day_start_ms INTEGER NOT NULL, last_seen_ms INTEGER);
             INSERT INTO devices VALUES ('d1', 0, 0, NULL);",
        )?;
        // Counted yesterday (day 0), more than DELAY ago: due by age, and
        // due again because the device publishes today.
        let since = Instant::now()
            .checked_sub(DELAY + Duration::from_secs(1))
            .unwrap_or_else(Instant::now);
        let mut seen = Seen::default();
        seen.pending.insert(
            "d1".to_owned(),
            Count {
                day_ms: 0,
                count: 3,
                last_ms: 1_000,
                since,
            },
        );
        seen.order.push_back((since, "d1".to_owned()));
        let mut published = HashMap::default();
        published.insert("d1", 1);
        let today = 86_400_000;
        let written = seen.write(&db, &published, today, false)?;
        assert_eq!(written, vec!["d1".to_owned()]);
        let day_count: i64 =
            db.query_row("SELECT day_count FROM devices WHERE id = 'd1'", [], |row| {
                row.get(0)
            })?;
        assert_eq!(day_count, 3);
        Ok(())
    }
}
