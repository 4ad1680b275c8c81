//! Retention: deleting what tenants no longer keep, in bounded chunks.
//!
//! A retention run is a job the writer works on between its batches: each
//! [`RetentionJob::step`] deletes at most [`CHUNK`] rows in its own
//! transaction, then the writer commits whatever appends arrived meanwhile.
//! So trimming a large table never holds a device's appends back for more
//! than one chunk, and a failing chunk fails only the retention run.

use rusqlite::{Connection, TransactionBehavior, params};
use tokio::sync::oneshot;

use super::schema::{duration_ms, to_i64};
use crate::store::{StoreError, StoreOptions};

/// Rows one retention transaction deletes at most.
pub(super) const CHUNK: i64 = 1000;

/// What to delete from one channel.
#[derive(Debug, Clone, Copy)]
struct Rule {
    channel_id: i64,
    /// Offsets below this go (the channel keeps its newest N events).
    below_offset: Option<i64>,
    /// Events stored before this (server time, ms) go.
    before_ms: Option<i64>,
}

/// A retention run in progress.
#[derive(Debug)]
pub(super) struct RetentionJob {
    now_ms: u64,
    /// `None` until the first step reads the channels.
    rules: Option<Vec<Rule>>,
    /// Events deleted so far.
    removed: u64,
    /// Everyone waiting for this run.
    replies: Vec<oneshot::Sender<Result<u64, StoreError>>>,
}

impl RetentionJob {
    pub(super) fn new(now_ms: u64, reply: oneshot::Sender<Result<u64, StoreError>>) -> Self {
        RetentionJob {
            now_ms,
            rules: None,
            removed: 0,
            replies: vec![reply],
        }
    }

    /// Another request while this run is under way gets this run's answer.
    pub(super) fn join(&mut self, reply: oneshot::Sender<Result<u64, StoreError>>) {
        self.replies.push(reply);
    }

    /// Does one bounded transaction of work. `Ok(true)` when the run is
    /// finished (its replies have been sent); on an error the run is over
    /// and has answered with it.
    pub(super) fn step(&mut self, conn: &mut Connection, options: &StoreOptions) -> bool {
        match self.try_step(conn, options) {
            Ok(false) => false,
            Ok(true) => {
                self.finish(Ok(self.removed));
                true
            }
            Err(error) => {
                tracing::warn!(%error, removed = self.removed, "retention stopped");
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

    fn try_step(
        &mut self,
        conn: &mut Connection,
        options: &StoreOptions,
    ) -> Result<bool, StoreError> {
        let Some(rules) = &mut self.rules else {
            self.rules = Some(plan(conn, self.now_ms, options)?);
            return Ok(false);
        };
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut budget = CHUNK;
        while budget > 0 {
            let Some(rule) = rules.last_mut() else {
                // Every channel is done: forget de-duplication entries the
                // contiguous watermark has since covered.
                tx.execute(
                    "DELETE FROM stored_seqs WHERE seq <= (SELECT b.stored_seq FROM boots b
                     WHERE b.device_id = stored_seqs.device_id AND b.boot_id = stored_seqs.boot_id)",
                    [],
                )?;
                tx.commit()?;
                return Ok(true);
            };
            let mut deleted = 0;
            if let Some(below) = rule.below_offset {
                let n = delete_chunk(
                    &tx,
                    "DELETE FROM messages WHERE channel_id = ?1 AND offset IN (
                         SELECT offset FROM messages WHERE channel_id = ?1 AND offset < ?2
                         ORDER BY offset LIMIT ?3)",
                    rule.channel_id,
                    below,
                    budget,
                )?;
                if n < budget {
                    rule.below_offset = None;
                }
                deleted += n;
            }
            if let Some(before) = rule.before_ms
                && deleted < budget
            {
                let n = delete_chunk(
                    &tx,
                    "DELETE FROM messages WHERE channel_id = ?1 AND offset IN (
                         SELECT offset FROM messages WHERE channel_id = ?1 AND server_time_ms < ?2
                         LIMIT ?3)",
                    rule.channel_id,
                    before,
                    budget - deleted,
                )?;
                if n < budget - deleted {
                    rule.before_ms = None;
                }
                deleted += n;
            }
            if rule.below_offset.is_none() && rule.before_ms.is_none() {
                super::rollup::prune(&tx, rule.channel_id)?;
                rules.pop();
            }
            budget -= deleted;
            self.removed += u64::try_from(deleted).unwrap_or(0);
        }
        tx.commit()?;
        Ok(false)
    }
}

fn delete_chunk(
    tx: &Connection,
    sql: &str,
    channel_id: i64,
    bound: i64,
    limit: i64,
) -> Result<i64, StoreError> {
    let deleted = tx
        .prepare_cached(sql)?
        .execute(params![channel_id, bound, limit])?;
    Ok(i64::try_from(deleted).unwrap_or(i64::MAX))
}

/// Which channels lose what, by their tenant's retention or the default.
fn plan(conn: &Connection, now_ms: u64, options: &StoreOptions) -> Result<Vec<Rule>, StoreError> {
    let default_age = options.retention_max_age.map(duration_ms);
    let default_count = options.retention_max_messages.map(to_i64);
    let mut statement = conn.prepare(
        "SELECT c.id, c.next_offset, t.retention_max_age_ms, t.retention_max_messages
         FROM channels c JOIN tenants t ON t.id = c.tenant_id",
    )?;
    let rows = statement.query_map([], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, Option<i64>>(2)?,
            row.get::<_, Option<i64>>(3)?,
        ))
    })?;
    let mut rules = Vec::new();
    for row in rows {
        let (channel_id, next_offset, max_age, max_count) = row?;
        let rule = Rule {
            channel_id,
            below_offset: max_count
                .or(default_count)
                .map(|count| next_offset.saturating_sub(count)),
            before_ms: max_age
                .or(default_age)
                .map(|age| to_i64(now_ms).saturating_sub(age)),
        };
        if rule.below_offset.is_some() || rule.before_ms.is_some() {
            rules.push(rule);
        }
    }
    Ok(rules)
}
