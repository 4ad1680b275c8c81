//! The single writer: one thread owns the read-write connection, takes
//! operations off a bounded queue, and commits them in batches.
//!
//! ```text
//!  append / open_session / claim … ──▶ bounded queue ──▶ BEGIN IMMEDIATE
//!   (wait when full = backpressure)                      each op in a SAVEPOINT
//!                                                        (a failing op fails alone)
//!                                                        COMMIT ─▶ replies, on_commit
//!  enforce_retention ──▶ retention job: one bounded chunk per turn, each its
//!                        own transaction, between batches
//! ```
//!
//! Every reply waits for the commit of its transaction; when the commit
//! fails, every operation in it fails. An append's reply says what is
//! stored, and the contiguous watermark it maintains (see the
//! [store docs](crate::store)) never covers a record that is not.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};

use super::claim::claim;
use super::read::DAY_MS;
use super::retention::RetentionJob;
use super::schema::{boot_to_i64, to_i64, to_u64};
use crate::store::{
    AppendOutcome, AppendRequest, StoreError, StoreOptions, StoredEvent, TenantId, TransactionStats,
};

/// Operations per write transaction, at most.
const MAX_BATCH: usize = 512;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// What the writer is asked to do.
pub(super) enum WriteOp {
    Append(AppendRequest, Reply<AppendOutcome>),
    OpenSession {
        device_id: String,
        firmware_version: String,
        boot_id: u64,
        now_ms: u64,
        reply: Reply<u32>,
    },
    CloseSession {
        device_id: String,
        now_ms: u64,
        reply: Reply<()>,
    },
    Claim {
        tenant_id: TenantId,
        claim_code: String,
        now_ms: u64,
        reply: Reply<String>,
    },
    Retention {
        now_ms: u64,
        reply: Reply<u64>,
    },
    ResetPresence(Reply<()>),
}

impl WriteOp {
    /// Answers with `error` (the operation did not happen).
    fn fail(self, error: &StoreError) {
        // A dropped receiver (the connection went away) is not an error.
        let error = error.clone();
        match self {
            WriteOp::Append(_, reply) => drop(reply.send(Err(error))),
            WriteOp::OpenSession { reply, .. } => drop(reply.send(Err(error))),
            WriteOp::CloseSession { reply, .. } | WriteOp::ResetPresence(reply) => {
                drop(reply.send(Err(error)));
            }
            WriteOp::Claim { reply, .. } => drop(reply.send(Err(error))),
            WriteOp::Retention { reply, .. } => drop(reply.send(Err(error))),
        }
    }
}

/// A reply waiting for the commit of its transaction, with its answer.
enum Pending {
    Append(Reply<AppendOutcome>, AppendOutcome),
    Seq(Reply<u32>, u32),
    Unit(Reply<()>),
    Text(Reply<String>, Result<String, StoreError>),
}

impl Pending {
    fn finish(self, error: Option<&StoreError>) {
        match (self, error) {
            (Pending::Append(reply, outcome), None) => drop(reply.send(Ok(outcome))),
            (Pending::Append(reply, _), Some(error)) => drop(reply.send(Err(error.clone()))),
            (Pending::Seq(reply, seq), None) => drop(reply.send(Ok(seq))),
            (Pending::Seq(reply, _), Some(error)) => drop(reply.send(Err(error.clone()))),
            (Pending::Unit(reply), None) => drop(reply.send(Ok(()))),
            (Pending::Unit(reply), Some(error)) => drop(reply.send(Err(error.clone()))),
            (Pending::Text(reply, result), None) => drop(reply.send(result)),
            (Pending::Text(reply, _), Some(error)) => drop(reply.send(Err(error.clone()))),
        }
    }
}

/// The writer thread's body: runs until every sender is gone and the
/// queue is drained.
pub(super) fn run(mut conn: Connection, mut queue: mpsc::Receiver<WriteOp>, options: StoreOptions) {
    let mut retention: Option<RetentionJob> = None;
    loop {
        // Appends first; retention works only while nothing waits.
        let first = if retention.is_some() {
            match queue.try_recv() {
                Ok(op) => Some(op),
                Err(mpsc::error::TryRecvError::Empty) => None,
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            }
        } else {
            match queue.blocking_recv() {
                Some(op) => Some(op),
                None => break,
            }
        };
        if let Some(first) = first {
            let mut batch = Vec::with_capacity(16);
            for op in core::iter::once(first).chain(core::iter::from_fn(|| queue.try_recv().ok())) {
                match op {
                    WriteOp::Retention { now_ms, reply } => match &mut retention {
                        Some(job) => job.join(reply),
                        None => retention = Some(RetentionJob::new(now_ms, reply)),
                    },
                    op => batch.push(op),
                }
                if batch.len() >= MAX_BATCH {
                    break;
                }
            }
            if !batch.is_empty() {
                commit_batch(&mut conn, batch, &options);
            }
        }
        if let Some(job) = &mut retention
            && job.step(&mut conn, &options)
        {
            retention = None;
        }
    }
    if let Some(mut job) = retention {
        job.finish(Err(StoreError::Closed));
    }
}

/// Applies and commits one batch, then answers every operation in it.
fn commit_batch(conn: &mut Connection, batch: Vec<WriteOp>, options: &StoreOptions) {
    let started = Instant::now();
    let operations = batch.len();
    let mut pending = Vec::with_capacity(operations);
    let mut events = Vec::new();
    let result = apply_batch(conn, batch, &mut pending, &mut events);
    let mut stats = TransactionStats {
        operations,
        committed: result.is_ok(),
        duration: started.elapsed(),
        ..TransactionStats::default()
    };
    match result {
        Ok(()) => {
            for reply in &pending {
                match reply {
                    Pending::Append(_, AppendOutcome::Stored { .. }) => stats.stored += 1,
                    Pending::Append(_, AppendOutcome::Duplicate) => stats.duplicates += 1,
                    _ => {}
                }
            }
            (options.on_transaction)(&stats);
            for reply in pending {
                reply.finish(None);
            }
            if !events.is_empty() {
                (options.on_commit)(events);
            }
        }
        Err(error) => {
            (options.on_transaction)(&stats);
            tracing::error!(%error, operations, "store transaction failed; nothing in it is acknowledged");
            for reply in pending {
                reply.finish(Some(&error));
            }
        }
    }
}

/// Runs `op` in a savepoint: on an error only its own changes are undone.
/// The outer error means the whole transaction is gone (SQLite rolls back
/// by itself on a full disk, an I/O error, …): the batch has failed.
fn in_savepoint<T>(
    tx: &mut Transaction<'_>,
    op: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<Result<T, StoreError>, StoreError> {
    let savepoint = tx.savepoint()?;
    match op(&savepoint) {
        Ok(value) => {
            savepoint.commit()?;
            Ok(Ok(value))
        }
        Err(error) => {
            // Dropping the savepoint rolls it back.
            drop(savepoint);
            if tx.is_autocommit() {
                return Err(error);
            }
            Ok(Err(error))
        }
    }
}

fn apply_batch(
    conn: &mut Connection,
    batch: Vec<WriteOp>,
    pending: &mut Vec<Pending>,
    events: &mut Vec<Arc<StoredEvent>>,
) -> Result<(), StoreError> {
    let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now_ms = crate::now_ms();
    let today = now_ms - now_ms % DAY_MS;
    let mut published: HashMap<String, i64> = HashMap::new();
    let mut ops = batch.into_iter();
    while let Some(op) = ops.next() {
        let applied = apply_one(&mut tx, op, now_ms, pending, events, &mut published);
        if let Err(error) = applied {
            // The transaction is gone: nothing after this can join it.
            for op in ops {
                op.fail(&error);
            }
            return Err(error);
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

/// Applies one operation in its own savepoint. An operation that fails
/// alone is answered at once; the error returned means the transaction
/// itself failed (this operation is answered too).
fn apply_one(
    tx: &mut Transaction<'_>,
    op: WriteOp,
    now_ms: u64,
    pending: &mut Vec<Pending>,
    events: &mut Vec<Arc<StoredEvent>>,
    published: &mut HashMap<String, i64>,
) -> Result<(), StoreError> {
    match op {
        WriteOp::Append(request, reply) => {
            match in_savepoint(tx, |tx| append(tx, &request, now_ms)) {
                Ok(Ok((outcome, event))) => {
                    if let Some(event) = event {
                        events.push(Arc::new(event));
                        *published.entry(request.device_id).or_default() += 1;
                    }
                    pending.push(Pending::Append(reply, outcome));
                }
                Ok(Err(error)) => log_and_reply(reply, error, "append"),
                Err(error) => {
                    drop(reply.send(Err(error.clone())));
                    return Err(error);
                }
            }
        }
        WriteOp::OpenSession {
            device_id,
            firmware_version,
            boot_id,
            now_ms,
            reply,
        } => match in_savepoint(tx, |tx| {
            open_session(tx, &device_id, &firmware_version, boot_id, now_ms)
        }) {
            Ok(Ok(seq)) => pending.push(Pending::Seq(reply, seq)),
            Ok(Err(error)) => log_and_reply(reply, error, "open_session"),
            Err(error) => {
                drop(reply.send(Err(error.clone())));
                return Err(error);
            }
        },
        WriteOp::CloseSession {
            device_id,
            now_ms,
            reply,
        } => {
            let result = in_savepoint(tx, |tx| {
                tx.execute(
                    "UPDATE devices SET online = 0, last_seen_ms = ?2 WHERE id = ?1",
                    params![device_id, to_i64(now_ms)],
                )?;
                Ok(())
            });
            unit(result, reply, pending, "close_session")?;
        }
        WriteOp::ResetPresence(reply) => {
            let result = in_savepoint(tx, |tx| {
                tx.execute("UPDATE devices SET online = 0 WHERE online = 1", [])?;
                Ok(())
            });
            unit(result, reply, pending, "reset_presence")?;
        }
        WriteOp::Claim {
            tenant_id,
            claim_code,
            now_ms,
            reply,
        } => match in_savepoint(tx, |tx| claim(tx, tenant_id, &claim_code, now_ms)) {
            Ok(Ok(answer)) => pending.push(Pending::Text(reply, answer)),
            Ok(Err(error)) => log_and_reply(reply, error, "claim"),
            Err(error) => {
                drop(reply.send(Err(error.clone())));
                return Err(error);
            }
        },
        // Taken out of the batch by the writer loop.
        WriteOp::Retention { reply, .. } => {
            drop(reply.send(Err(StoreError::Invalid("retention in a batch".into()))));
        }
    }
    Ok(())
}

fn unit(
    result: Result<Result<(), StoreError>, StoreError>,
    reply: Reply<()>,
    pending: &mut Vec<Pending>,
    what: &str,
) -> Result<(), StoreError> {
    match result {
        Ok(Ok(())) => pending.push(Pending::Unit(reply)),
        Ok(Err(error)) => log_and_reply(reply, error, what),
        Err(error) => {
            drop(reply.send(Err(error.clone())));
            return Err(error);
        }
    }
    Ok(())
}

fn log_and_reply<T>(reply: Reply<T>, error: StoreError, what: &str) {
    tracing::error!(%error, operation = what, "store operation failed; the rest of its transaction goes on");
    drop(reply.send(Err(error)));
}

fn open_session(
    tx: &Connection,
    device_id: &str,
    firmware_version: &str,
    boot_id: u64,
    now_ms: u64,
) -> Result<u32, StoreError> {
    tx.execute(
        "UPDATE devices SET online = 1, last_seen_ms = ?2, firmware_version = ?3 WHERE id = ?1",
        params![device_id, to_i64(now_ms), firmware_version],
    )?;
    let stored_seq: Option<i64> = tx
        .query_row(
            "SELECT stored_seq FROM boots WHERE device_id = ?1 AND boot_id = ?2",
            params![device_id, boot_to_i64(boot_id)],
            |row| row.get(0),
        )
        .optional()?;
    Ok(stored_seq.map_or(0, |seq| u32::try_from(seq).unwrap_or(u32::MAX)))
}

/// Stores one record unless it is stored already, and moves the
/// contiguous watermark over it when its predecessor is covered.
fn append(
    tx: &Connection,
    request: &AppendRequest,
    now_ms: u64,
) -> Result<(AppendOutcome, Option<StoredEvent>), StoreError> {
    let boot = boot_to_i64(request.boot_id);
    let seq = i64::from(request.seq);
    let stored_seq: i64 = tx
        .prepare_cached("SELECT stored_seq FROM boots WHERE device_id = ?1 AND boot_id = ?2")?
        .query_row(params![request.device_id, boot], |row| row.get(0))
        .optional()?
        .unwrap_or(0);
    let stored_above = seq > stored_seq
        && tx
            .prepare_cached(
                "SELECT 1 FROM stored_seqs WHERE device_id = ?1 AND boot_id = ?2 AND seq = ?3",
            )?
            .exists(params![request.device_id, boot, seq])?;
    let duplicate = seq <= stored_seq || stored_above;
    let event = if duplicate {
        None
    } else {
        Some(insert_message(tx, request, now_ms)?)
    };
    let covered = i64::from(request.previous_seq) <= stored_seq;
    if covered && seq > stored_seq {
        tx.prepare_cached(
            "INSERT INTO boots(device_id, boot_id, stored_seq, last_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(device_id, boot_id) DO UPDATE SET stored_seq = excluded.stored_seq,
             last_ms = excluded.last_ms",
        )?
        .execute(params![request.device_id, boot, seq, to_i64(now_ms)])?;
        if stored_above {
            // The watermark covers it now: its entry has done its job.
            tx.prepare_cached(
                "DELETE FROM stored_seqs WHERE device_id = ?1 AND boot_id = ?2 AND seq <= ?3",
            )?
            .execute(params![request.device_id, boot, seq])?;
        }
    } else if !duplicate {
        // Stored after a gap: remembered, not covered.
        tx.prepare_cached("INSERT INTO stored_seqs(device_id, boot_id, seq) VALUES (?1, ?2, ?3)")?
            .execute(params![request.device_id, boot, seq])?;
        tx.prepare_cached(
            "INSERT INTO boots(device_id, boot_id, stored_seq, last_ms) VALUES (?1, ?2, 0, ?3)
             ON CONFLICT(device_id, boot_id) DO UPDATE SET last_ms = excluded.last_ms",
        )?
        .execute(params![request.device_id, boot, to_i64(now_ms)])?;
    }
    let outcome = match &event {
        Some(event) => AppendOutcome::Stored {
            offset: event.offset,
        },
        None => AppendOutcome::Duplicate,
    };
    Ok((outcome, event))
}

fn insert_message(
    tx: &Connection,
    request: &AppendRequest,
    now_ms: u64,
) -> Result<StoredEvent, StoreError> {
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
    Ok(StoredEvent::new(
        request.tenant_id,
        request.channel.clone(),
        to_u64(offset),
        request.device_id.clone(),
        request.device_time_ms,
        now_ms,
        request.payload.clone(),
    ))
}
