//! Retention in bounded chunks, between the writer's batches (as in the
//! SQLite store): each [`RetentionJob::step`] deletes at most [`CHUNK`]
//! rows in its own transaction, so trimming a large table never holds
//! appends back for more than one chunk, and a failing chunk fails only the
//! retention run. Several nodes may trim at once: a row is deleted once,
//! whoever gets there first.

use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::oneshot;

use super::schema::{db_error, pool_error};
use super::writer::to_i64;
use crate::store::StoreError;

/// Rows one retention transaction deletes at most.
pub(super) const CHUNK: i64 = 1000;

#[derive(Debug, Clone, Copy)]
struct Rule {
    channel_id: i64,
    below_offset: Option<i64>,
    before_ms: Option<i64>,
}

/// A retention run in progress.
#[derive(Debug)]
pub(super) struct RetentionJob {
    now_ms: u64,
    default_age: Option<Duration>,
    default_count: Option<u64>,
    rules: Option<Vec<Rule>>,
    removed: u64,
    replies: Vec<oneshot::Sender<Result<u64, StoreError>>>,
}

impl RetentionJob {
    pub(super) fn new(
        now_ms: u64,
        reply: oneshot::Sender<Result<u64, StoreError>>,
        default_age: Option<Duration>,
        default_count: Option<u64>,
    ) -> Self {
        RetentionJob {
            now_ms,
            default_age,
            default_count,
            rules: None,
            removed: 0,
            replies: vec![reply],
        }
    }

    pub(super) fn join(&mut self, reply: oneshot::Sender<Result<u64, StoreError>>) {
        self.replies.push(reply);
    }

    /// One bounded transaction of work; `true` when the run is over (its
    /// replies sent).
    pub(super) async fn step(&mut self, pool: &Pool) -> bool {
        match self.try_step(pool).await {
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

    pub(super) fn finish(&mut self, result: Result<u64, StoreError>) {
        for reply in self.replies.drain(..) {
            let _ = reply.send(result.clone());
        }
    }

    async fn try_step(&mut self, pool: &Pool) -> Result<bool, StoreError> {
        let mut client = pool.get().await.map_err(pool_error)?;
        let Some(rules) = &mut self.rules else {
            self.rules =
                Some(plan(&client, self.now_ms, self.default_age, self.default_count).await?);
            return Ok(false);
        };
        let tx = client.transaction().await.map_err(db_error)?;
        let mut budget = CHUNK;
        while budget > 0 {
            let Some(rule) = rules.last_mut() else {
                // Every channel is done: forget de-duplication entries the
                // contiguous watermark has since covered.
                tx.execute(
                    "DELETE FROM stored_seqs s USING boots b
                     WHERE b.device_id = s.device_id AND b.boot_id = s.boot_id
                     AND s.seq <= b.stored_seq",
                    &[],
                )
                .await
                .map_err(db_error)?;
                tx.commit().await.map_err(db_error)?;
                return Ok(true);
            };
            let mut deleted = 0;
            if let Some(below) = rule.below_offset {
                let n = delete(
                    &tx,
                    r#"DELETE FROM messages WHERE channel_id = $1 AND "offset" IN (
                         SELECT "offset" FROM messages WHERE channel_id = $1 AND "offset" < $2
                         ORDER BY "offset" LIMIT $3)"#,
                    rule.channel_id,
                    below,
                    budget,
                )
                .await?;
                if n < budget {
                    rule.below_offset = None;
                }
                deleted += n;
            }
            if let Some(before) = rule.before_ms
                && deleted < budget
            {
                let n = delete(
                    &tx,
                    r#"DELETE FROM messages WHERE channel_id = $1 AND "offset" IN (
                         SELECT "offset" FROM messages WHERE channel_id = $1
                         AND server_time_ms < $2 LIMIT $3)"#,
                    rule.channel_id,
                    before,
                    budget - deleted,
                )
                .await?;
                if n < budget - deleted {
                    rule.before_ms = None;
                }
                deleted += n;
            }
            if rule.below_offset.is_none() && rule.before_ms.is_none() {
                super::readings::prune(&tx, rule.channel_id).await?;
                rules.pop();
            }
            budget -= deleted;
            self.removed += u64::try_from(deleted).unwrap_or(0);
        }
        tx.commit().await.map_err(db_error)?;
        Ok(false)
    }
}

async fn delete(
    tx: &deadpool_postgres::Transaction<'_>,
    sql: &str,
    channel_id: i64,
    bound: i64,
    limit: i64,
) -> Result<i64, StoreError> {
    let statement = tx.prepare_cached(sql).await.map_err(db_error)?;
    let deleted = tx
        .execute(&statement, &[&channel_id, &bound, &limit])
        .await
        .map_err(db_error)?;
    Ok(i64::try_from(deleted).unwrap_or(i64::MAX))
}

async fn plan(
    client: &deadpool_postgres::Object,
    now_ms: u64,
    default_age: Option<Duration>,
    default_count: Option<u64>,
) -> Result<Vec<Rule>, StoreError> {
    let default_age =
        default_age.map(|age| to_i64(u64::try_from(age.as_millis()).unwrap_or(u64::MAX)));
    let default_count = default_count.map(to_i64);
    let rows = client
        .query(
            "SELECT c.id, c.next_offset, t.retention_max_age_ms, t.retention_max_messages
             FROM channels c JOIN tenants t ON t.id = c.tenant_id",
            &[],
        )
        .await
        .map_err(db_error)?;
    let mut rules = Vec::new();
    for row in rows {
        let next_offset: i64 = row.get(1);
        let max_age: Option<i64> = row.get(2);
        let max_count: Option<i64> = row.get(3);
        let rule = Rule {
            channel_id: row.get(0),
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
