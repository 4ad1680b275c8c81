//! Rolling events up into the buckets series queries read
//! (`store::ROLLUP_WIDTHS_MS`), in bounded chunks between the writer's
//! batches.
//!
//! A roll-up run is a job like retention: each [`RollupJob::step`] reads
//! at most [`CHUNK`] events of one channel (the ones after the channel's
//! `rollup_progress`), aggregates their numeric members per device, member
//! and narrowest bucket (10 s) in the database (`json_each`), adds those
//! buckets to every rollup width, and moves the progress, all in one transaction. So a
//! series query sees rollups and progress that agree, and reads the events
//! after the progress itself.

use rusqlite::{Connection, TransactionBehavior, params};
use tokio::sync::oneshot;

use super::schema::to_i64;
use crate::store::{ROLLUP_WIDTHS_MS, StoreError};

/// Events one roll-up transaction reads at most.
pub(super) const CHUNK: i64 = 5000;

/// One channel's events still to roll up: offsets `from + 1 ..= through`.
#[derive(Debug, Clone, Copy)]
struct Pending {
    channel_id: i64,
    from: i64,
    through: i64,
}

/// A roll-up run in progress.
#[derive(Debug)]
pub(super) struct RollupJob {
    /// `None` until the first step reads the channels.
    pending: Option<Vec<Pending>>,
    /// Events read so far.
    rolled: u64,
    /// Everyone waiting for this run.
    replies: Vec<oneshot::Sender<Result<u64, StoreError>>>,
}

impl RollupJob {
    pub(super) fn new(reply: oneshot::Sender<Result<u64, StoreError>>) -> Self {
        RollupJob {
            pending: None,
            rolled: 0,
            replies: vec![reply],
        }
    }

    /// Another request while this run is under way gets this run's answer.
    pub(super) fn join(&mut self, reply: oneshot::Sender<Result<u64, StoreError>>) {
        self.replies.push(reply);
    }

    /// Does one bounded transaction of work; `true` when the run is over
    /// (its replies have been sent, with the error if one stopped it).
    pub(super) fn step(&mut self, conn: &mut Connection) -> bool {
        match self.try_step(conn) {
            Ok(false) => false,
            Ok(true) => {
                self.finish(Ok(self.rolled));
                true
            }
            Err(error) => {
                tracing::warn!(%error, rolled = self.rolled, "roll-up stopped");
                self.finish(Err(error));
                true
            }
        }
    }

    /// Answers everyone waiting (the writer is stopping, or the run ended).
    pub(super) fn finish(&mut self, result: Result<u64, StoreError>) {
        for reply in self.replies.drain(..) {
            let _ = reply.send(result.clone());
        }
    }

    fn try_step(&mut self, conn: &mut Connection) -> Result<bool, StoreError> {
        let Some(pending) = &mut self.pending else {
            self.pending = Some(plan(conn)?);
            return Ok(false);
        };
        let Some(channel) = pending.last_mut() else {
            return Ok(true);
        };
        let through = channel.through.min(channel.from.saturating_add(CHUNK));
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS rollup_chunk(
                 bucket_ms INTEGER, device_id TEXT, key TEXT,
                 n INTEGER, total REAL, low REAL, high REAL);
             DELETE FROM temp.rollup_chunk;",
        )?;
        let narrowest = ROLLUP_WIDTHS_MS[0];
        let read = tx
            .prepare_cached(
                "INSERT INTO temp.rollup_chunk
                 SELECT (m.server_time_ms / ?4) * ?4, m.device_id, coalesce(j.key, ''),
                        count(*), total(j.value), min(j.value), max(j.value)
                 FROM messages m, json_each(m.payload) j
                 WHERE m.channel_id = ?1 AND m.offset > ?2 AND m.offset <= ?3
                   AND j.type IN ('integer', 'real') AND typeof(j.key) != 'integer'
                 GROUP BY 1, 2, 3",
            )?
            .execute(params![
                channel.channel_id,
                channel.from,
                through,
                to_i64(narrowest)
            ])?;
        let mut add = tx.prepare_cached(
            "INSERT INTO rollups(channel_id, width_ms, bucket_ms, device_id, key, n, total, low, high)
             SELECT ?1, ?2, (bucket_ms / ?2) * ?2, device_id, key,
                    sum(n), sum(total), min(low), max(high)
             FROM temp.rollup_chunk WHERE true GROUP BY 3, 4, 5
             ON CONFLICT(channel_id, width_ms, bucket_ms, device_id, key) DO UPDATE SET
                 n = n + excluded.n, total = total + excluded.total,
                 low = min(low, excluded.low), high = max(high, excluded.high)",
        )?;
        if read > 0 {
            for width in ROLLUP_WIDTHS_MS {
                add.execute(params![channel.channel_id, to_i64(width)])?;
            }
        }
        drop(add);
        tx.prepare_cached(
            "INSERT INTO rollup_progress(channel_id, rolled_offset) VALUES (?1, ?2)
             ON CONFLICT(channel_id) DO UPDATE SET rolled_offset = excluded.rolled_offset",
        )?
        .execute(params![channel.channel_id, through])?;
        tx.commit()?;
        self.rolled += u64::try_from(through - channel.from).unwrap_or(0);
        channel.from = through;
        if channel.from >= channel.through {
            pending.pop();
        }
        Ok(false)
    }
}

/// Channels with events after their roll-up progress.
fn plan(conn: &Connection) -> Result<Vec<Pending>, StoreError> {
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
