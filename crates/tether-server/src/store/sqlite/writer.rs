//! The single writer: one thread owns the read-write connection, takes
//! operations off a bounded queue, and commits them in batches.
//!
//! ```text
//!  append / open_session / claim … ──▶ bounded queue ──▶ BEGIN IMMEDIATE … ops … COMMIT
//!   (wait when full = backpressure)                      ─▶ replies, on_commit
//!                                   an op failed: ROLLBACK, again with each op
//!                                   in a SAVEPOINT (a failing op fails alone)
//!  enforce_retention ──▶ retention job: one bounded chunk per turn, each its
//!                        own transaction, between batches
//!  roll_up ────────────▶ a chunk aggregated on a reader (rollup.rs), added
//!                        to the rollups as one operation of a batch
//! ```
//!
//! Every reply waits for the commit of its transaction and for the sync
//! that puts it on disk (`sync.rs`: the writer goes on with the next batch
//! meanwhile); when either fails, every operation in it fails. An append's reply says what is
//! stored, and the contiguous watermark it maintains (see the
//! [store docs](crate::store)) never covers a record that is not.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use rusqlite::{CachedStatement, Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use super::accounts;
use super::claim::claim;
use super::hot::{Boot, Channel, HashMap, Hot};
use super::read::DAY_MS;
use super::readings::ReadingsWrite;
use super::retention::RetentionJob;
use super::rollup::{self, Chunk};
use super::schema::{boot_to_i64, to_i64, to_u64};
use super::seen::Seen;
use super::sync::Syncer;
use crate::store::accounts::{AccountDone, AccountOp};
use crate::store::{
    AppendOutcome, AppendRequest, OpenedSession, StoreError, StoreOptions, StoredEvent, TenantId,
    TransactionStats,
};

/// Operations per write transaction, at most. A commit costs about the
/// same whether it holds 100 appends or 4000 (one WAL fsync, and the pages
/// of the small tables each written once), so under load the batch grows
/// with the queue; the bound keeps one transaction's pages in the cache.
const MAX_BATCH: usize = 4096;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// What the writer is asked to do.
pub(super) enum WriteOp {
    Append(AppendRequest, Reply<AppendOutcome>),
    /// Several appends of one session (`Store::append_all`): one request,
    /// one reply with a result per append.
    Appends(
        Vec<AppendRequest>,
        Reply<Vec<Result<AppendOutcome, StoreError>>>,
    ),
    OpenSession {
        device_id: String,
        firmware_version: String,
        boot_id: u64,
        now_ms: u64,
        reply: Reply<OpenedSession>,
    },
    CloseSession {
        device_id: String,
        fence: u64,
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
    /// A roll-up chunk to add (the events it covered, or 0).
    RollUp(Chunk, Reply<u64>),
    ResetPresence(Reply<()>),
    /// Writes every device count the writer holds (`seen.rs`), before
    /// `list_devices` reads them.
    CountSeen(Reply<()>),
    /// Accounts, sessions, memberships, invitations (`accounts.rs`).
    Account(AccountOp),
    Readings(ReadingsWrite, Reply<()>),
}

/// What an operation did, before its transaction committed.
enum Done {
    /// The outcome, and when a new record was stored the server time it
    /// was stored with (its event is made after the commit, from the
    /// request's own strings).
    Append(AppendOutcome, Option<u64>),
    /// The append's session was replaced: nothing written.
    Fenced,
    /// Each append's [`Done::Append`] or [`Done::Fenced`], or why it
    /// failed (when its transaction isolates operations).
    Appends(Vec<Result<Done, StoreError>>),
    Opened(OpenedSession),
    Unit,
    /// A claim's answer (an unknown or expired code commits nothing).
    Claim(Result<String, StoreError>),
    /// An account operation's answer.
    Account(AccountDone),
    /// Events a roll-up chunk covered.
    Rolled(u64),
}

/// The statements every append runs, prepared once per transaction
/// attempt (not looked up by their SQL text per append).
struct Statements<'c> {
    insert_message: CachedStatement<'c>,
}

impl<'c> Statements<'c> {
    fn prepare(tx: &'c Connection) -> Result<Self, rusqlite::Error> {
        Ok(Statements {
            insert_message: tx.prepare_cached(
                "INSERT INTO messages(channel_id, offset, device_id, device_time_ms, server_time_ms, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?,
        })
    }
}

impl WriteOp {
    /// Applies the operation (without answering it).
    /// `isolate`: the appends of [`WriteOp::Appends`] each in their own
    /// savepoint, failing alone.
    fn execute(
        &self,
        tx: &Connection,
        hot: &mut Hot,
        statements: &mut Statements<'_>,
        now_ms: u64,
        isolate: bool,
    ) -> Result<Done, StoreError> {
        match self {
            WriteOp::Append(request, _) => fenced_append(tx, hot, statements, request, now_ms),
            WriteOp::Appends(requests, _) => {
                let mut results = Vec::with_capacity(requests.len());
                for request in requests {
                    if !isolate {
                        results.push(Ok(fenced_append(tx, hot, statements, request, now_ms)?));
                        continue;
                    }
                    tx.execute_batch("SAVEPOINT append")?;
                    let result = fenced_append(tx, hot, statements, request, now_ms);
                    match &result {
                        Ok(_) => tx.execute_batch("RELEASE append")?,
                        // SQLite rolled the whole transaction back.
                        Err(_) if tx.is_autocommit() => return result,
                        Err(_) => tx.execute_batch("ROLLBACK TO append; RELEASE append")?,
                    }
                    results.push(result);
                }
                Ok(Done::Appends(results))
            }
            WriteOp::OpenSession {
                device_id,
                firmware_version,
                boot_id,
                now_ms,
                ..
            } => open_session(tx, hot, device_id, firmware_version, *boot_id, *now_ms)
                .map(Done::Opened),
            WriteOp::CloseSession {
                device_id,
                fence,
                now_ms,
                ..
            } => {
                tx.execute(
                    "UPDATE devices SET online = 0, last_seen_ms = ?2
                     WHERE id = ?1 AND session_fence = ?3",
                    params![device_id, to_i64(*now_ms), to_i64(*fence)],
                )?;
                Ok(Done::Unit)
            }
            WriteOp::ResetPresence(_) => {
                tx.execute("UPDATE devices SET online = 0 WHERE online = 1", [])?;
                Ok(Done::Unit)
            }
            // Its transaction writes every count (`attempt`).
            WriteOp::CountSeen(_) => Ok(Done::Unit),
            WriteOp::Claim {
                tenant_id,
                claim_code,
                now_ms,
                ..
            } => claim(tx, *tenant_id, claim_code, *now_ms).map(Done::Claim),
            WriteOp::Account(op) => accounts::execute(op, tx).map(Done::Account),
            WriteOp::Readings(write, _) => write.execute(tx).map(|()| Done::Unit),
            WriteOp::RollUp(chunk, _) => rollup::apply(tx, chunk).map(Done::Rolled),
            // The writer loop takes it out of every batch.
            WriteOp::Retention { .. } => Err(StoreError::Invalid("a job in a batch".into())),
        }
    }

    /// Answers with what it did (its transaction committed) or why not.
    fn answer(self, result: Result<Done, StoreError>) {
        // A dropped receiver (the connection went away) is not an error.
        match (self, result) {
            (WriteOp::OpenSession { reply, .. }, Ok(Done::Opened(opened))) => {
                drop(reply.send(Ok(opened)));
            }
            (
                WriteOp::CloseSession { reply, .. }
                | WriteOp::ResetPresence(reply)
                | WriteOp::CountSeen(reply)
                | WriteOp::Readings(_, reply),
                Ok(Done::Unit),
            ) => drop(reply.send(Ok(()))),
            (WriteOp::Claim { reply, .. }, Ok(Done::Claim(answer))) => drop(reply.send(answer)),
            (WriteOp::RollUp(_, reply), Ok(Done::Rolled(events))) => drop(reply.send(Ok(events))),
            (WriteOp::Account(op), Ok(Done::Account(done))) => op.answer(done),
            (op, Ok(_)) => op.fail(&StoreError::Invalid("mismatched reply".into())),
            (op, Err(error)) => op.fail(&error),
        }
    }

    /// Answers with `error` (the operation did not happen).
    fn fail(self, error: &StoreError) {
        let error = error.clone();
        match self {
            WriteOp::Append(_, reply) => drop(reply.send(Err(error))),
            WriteOp::Appends(_, reply) => drop(reply.send(Err(error))),
            WriteOp::OpenSession { reply, .. } => drop(reply.send(Err(error))),
            WriteOp::CloseSession { reply, .. }
            | WriteOp::ResetPresence(reply)
            | WriteOp::CountSeen(reply)
            | WriteOp::Readings(_, reply) => {
                drop(reply.send(Err(error)));
            }
            WriteOp::Claim { reply, .. } => drop(reply.send(Err(error))),
            WriteOp::Retention { reply, .. } | WriteOp::RollUp(_, reply) => {
                drop(reply.send(Err(error)));
            }
            WriteOp::Account(op) => op.fail(&error),
        }
    }
}

/// The writer thread's body: runs until every sender is gone and the
/// queue is drained.
pub(super) fn run(
    mut conn: Connection,
    mut queue: mpsc::Receiver<WriteOp>,
    options: StoreOptions,
    syncer: Syncer<Ended>,
) {
    let mut retention: Option<RetentionJob> = None;
    let mut hot = Hot::default();
    let mut seen = Seen::default();
    loop {
        // Appends first; the job works only while nothing waits.
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
            // Operations, each append of a `WriteOp::Appends` counted.
            let mut appends = 0;
            for op in core::iter::once(first).chain(core::iter::from_fn(|| queue.try_recv().ok())) {
                match op {
                    WriteOp::Retention { now_ms, reply } => match &mut retention {
                        Some(job) => job.join(reply),
                        None => retention = Some(RetentionJob::new(now_ms, reply)),
                    },
                    op => {
                        appends += match &op {
                            WriteOp::Appends(requests, _) => requests.len(),
                            _ => 1,
                        };
                        batch.push(op);
                    }
                }
                if appends >= MAX_BATCH {
                    break;
                }
            }
            if !batch.is_empty() {
                commit_batch(&mut conn, &mut hot, &mut seen, batch, &syncer);
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
    if !seen.is_empty() {
        let (reply, _) = oneshot::channel();
        commit_batch(
            &mut conn,
            &mut hot,
            &mut seen,
            vec![WriteOp::CountSeen(reply)],
            &syncer,
        );
    }
    // The last batches are answered (after their sync) before the thread
    // ends.
    drop(syncer);
}

/// Why an attempt at a batch did not commit.
enum Failed {
    /// One operation failed and the transaction was rolled back: try
    /// again with each operation in a savepoint.
    Operation,
    /// The transaction itself failed (the write lock, a full disk, I/O):
    /// every operation in it fails.
    Transaction(StoreError),
}

impl From<rusqlite::Error> for Failed {
    fn from(error: rusqlite::Error) -> Self {
        Failed::Transaction(error.into())
    }
}

/// A batch whose transaction ended, waiting for the sync that makes its
/// commit durable (`sync.rs`) before it is answered.
pub(super) struct Ended {
    batch: Vec<WriteOp>,
    result: Result<Vec<Result<Done, StoreError>>, Failed>,
    stats: TransactionStats,
}

/// The server's hooks, called where batches are answered.
struct Hooks {
    on_commit: Box<dyn Fn(Vec<Arc<StoredEvent>>) + Send>,
    on_transaction: Box<dyn Fn(&TransactionStats) + Send>,
}

/// Starts the thread that syncs the WAL at `wal` and answers the writer's
/// batches; takes the hooks out of `options` (they run on that thread).
pub(super) fn start_syncer(
    wal: PathBuf,
    options: &mut StoreOptions,
) -> Result<Syncer<Ended>, StoreError> {
    let hooks = Hooks {
        on_commit: core::mem::replace(&mut options.on_commit, Box::new(|_| {})),
        on_transaction: core::mem::replace(&mut options.on_transaction, Box::new(|_| {})),
    };
    Syncer::start(wal, move |ended, synced| {
        answer_batch(ended, synced, &hooks)
    })
}

/// Commits one batch and hands it to the syncer, which answers every
/// operation in it once the commit is on disk. The first attempt runs the
/// operations straight (the common case costs nothing extra); if one
/// fails, the batch runs again with each operation in a savepoint, so
/// only the failing one fails.
fn commit_batch(
    conn: &mut Connection,
    hot: &mut Hot,
    seen: &mut Seen,
    batch: Vec<WriteOp>,
    syncer: &Syncer<Ended>,
) {
    let started = Instant::now();
    let operations = batch.len();
    let result = match attempt(conn, hot, seen, &batch, false) {
        Err(Failed::Operation) => {
            hot.forget();
            attempt(conn, hot, seen, &batch, true)
        }
        result => result,
    };
    let result = result.map(
        |Attempted {
             results,
             written,
             now_ms,
         }| {
            let today = now_ms - now_ms % DAY_MS;
            seen.committed(written, &published(&batch, &results), today, now_ms);
            results
        },
    );
    if result.is_err() {
        // What the memory says may not be what the database kept.
        hot.forget();
    }
    let stats = TransactionStats {
        operations,
        committed: result.is_ok(),
        duration: started.elapsed(),
        ..TransactionStats::default()
    };
    let durable = result.is_ok();
    syncer.submit(
        Ended {
            batch,
            result,
            stats,
        },
        durable,
    );
}

/// Answers every operation of an ended batch: what it did, if its
/// transaction committed and the sync after it succeeded; else why not.
fn answer_batch(ended: Ended, synced: Result<(), &StoreError>, hooks: &Hooks) {
    let Ended {
        batch,
        result,
        mut stats,
    } = ended;
    let result = match (result, synced) {
        (Ok(_), Err(error)) => {
            stats.committed = false;
            Err(Failed::Transaction(error.clone()))
        }
        (result, _) => result,
    };
    let operations = stats.operations;
    match result {
        Ok(results) => {
            let mut events = Vec::new();
            for (op, result) in batch.into_iter().zip(results) {
                match op {
                    WriteOp::Append(request, reply) => {
                        let answer = settle(request, result, &mut stats, &mut events);
                        drop(reply.send(answer));
                    }
                    WriteOp::Appends(requests, reply) => match result {
                        Ok(Done::Appends(results)) => {
                            let answers = requests
                                .into_iter()
                                .zip(results)
                                .map(|(request, result)| {
                                    settle(request, result, &mut stats, &mut events)
                                })
                                .collect();
                            drop(reply.send(Ok(answers)));
                        }
                        Ok(_) => {
                            drop(reply.send(Err(StoreError::Invalid("mismatched reply".into()))))
                        }
                        Err(error) => drop(reply.send(Err(error))),
                    },
                    op => op.answer(result),
                }
            }
            (hooks.on_transaction)(&stats);
            if !events.is_empty() {
                (hooks.on_commit)(events);
            }
        }
        Err(Failed::Operation) => {
            // Unreachable: an isolated attempt reports failing operations
            // one by one.
            let error = StoreError::Database("a batch failed twice".into());
            (hooks.on_transaction)(&stats);
            for op in batch {
                op.fail(&error);
            }
        }
        Err(Failed::Transaction(error)) => {
            (hooks.on_transaction)(&stats);
            tracing::error!(%error, operations, "store transaction failed; nothing in it is acknowledged");
            for op in batch {
                op.fail(&error);
            }
        }
    }
}

/// One transaction over the batch. `isolate`: each operation in its own
/// savepoint, its failure its own result; otherwise the first failing
/// operation rolls the whole attempt back.
/// Returns each operation's result, the devices whose counts it wrote
/// and its time.
fn attempt(
    conn: &mut Connection,
    hot: &mut Hot,
    seen: &Seen,
    batch: &[WriteOp],
    isolate: bool,
) -> Result<Attempted, Failed> {
    let tx = Immediate::begin(conn)?;
    hot.begin(&tx).map_err(Failed::Transaction)?;
    let now_ms = crate::now_ms();
    let today = now_ms - now_ms % DAY_MS;
    let mut results = Vec::with_capacity(batch.len());
    let mut statements = Statements::prepare(&tx)?;
    for op in batch {
        let result = if isolate {
            // By hand, not rusqlite's `Savepoint` (which borrows the
            // transaction mutably while the statements hold it).
            tx.execute_batch("SAVEPOINT op")?;
            let result = op.execute(&tx, hot, &mut statements, now_ms, true);
            match result {
                Ok(_) => tx.execute_batch("RELEASE op")?,
                Err(_) if !tx.is_autocommit() => {
                    tx.execute_batch("ROLLBACK TO op; RELEASE op")?;
                }
                Err(_) => {}
            }
            result
        } else {
            op.execute(&tx, hot, &mut statements, now_ms, false)
        };
        if let Err(error) = &result {
            if tx.is_autocommit() {
                // SQLite rolled the whole transaction back by itself (a
                // full disk, an I/O error, …).
                return Err(Failed::Transaction(error.clone()));
            }
            if !isolate {
                return Err(Failed::Operation);
            }
            tracing::error!(%error, "store operation failed; the rest of its transaction goes on");
        }
        results.push(result);
    }
    drop(statements);
    // The devices' counts: late, a few per transaction (`seen.rs`).
    let all = batch.iter().any(|op| matches!(op, WriteOp::CountSeen(_)));
    let written = seen.write(&tx, &published(batch, &results), today, all)?;
    hot.flush(&tx).map_err(Failed::Transaction)?;
    tx.commit()?;
    Ok(Attempted {
        results,
        written,
        now_ms,
    })
}

/// A committed attempt: each operation's result, the devices whose counts
/// it wrote and its time.
struct Attempted {
    results: Vec<Result<Done, StoreError>>,
    written: Vec<String>,
    now_ms: u64,
}

/// A write transaction (`BEGIN IMMEDIATE`) whose `BEGIN` and `COMMIT` are
/// cached statements: rusqlite's `Transaction` prepares both again from
/// their text in every transaction (2 % of the server's samples with
/// thousands of small commits a second). Rolled back when dropped
/// uncommitted.
struct Immediate<'c>(&'c Connection);

impl<'c> Immediate<'c> {
    fn begin(conn: &'c Connection) -> Result<Self, rusqlite::Error> {
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        Ok(Immediate(conn))
    }

    fn commit(self) -> Result<(), rusqlite::Error> {
        self.0.prepare_cached("COMMIT")?.execute([])?;
        Ok(())
    }
}

impl core::ops::Deref for Immediate<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.0
    }
}

impl Drop for Immediate<'_> {
    fn drop(&mut self) {
        if !self.0.is_autocommit() {
            let _ = self.0.execute_batch("ROLLBACK");
        }
    }
}

/// Records newly stored by the batch, per device.
fn published<'b>(
    batch: &'b [WriteOp],
    results: &[Result<Done, StoreError>],
) -> HashMap<&'b str, i64> {
    let mut published: HashMap<&str, i64> = HashMap::default();
    for (op, result) in batch.iter().zip(results) {
        match (op, result) {
            (WriteOp::Append(request, _), Ok(Done::Append(_, Some(_)))) => {
                *published.entry(request.device_id.as_str()).or_default() += 1;
            }
            (WriteOp::Appends(requests, _), Ok(Done::Appends(results))) => {
                for (request, result) in requests.iter().zip(results) {
                    if let Ok(Done::Append(_, Some(_))) = result {
                        *published.entry(request.device_id.as_str()).or_default() += 1;
                    }
                }
            }
            _ => {}
        }
    }
    published
}

fn open_session(
    tx: &Connection,
    hot: &mut Hot,
    device_id: &str,
    firmware_version: &str,
    boot_id: u64,
    now_ms: u64,
) -> Result<OpenedSession, StoreError> {
    let fence: Option<i64> = tx
        .query_row(
            "UPDATE devices SET online = 1, last_seen_ms = ?2, firmware_version = ?3,
                session_fence = session_fence + 1
             WHERE id = ?1 RETURNING session_fence",
            params![device_id, to_i64(now_ms), firmware_version],
            |row| row.get(0),
        )
        .optional()?;
    // From the writer's memory: appends earlier in this transaction moved
    // the watermark there, not yet in the table.
    let stored_seq = hot.boot(tx, device_id, boot_id)?.stored_seq;
    let fence = fence.map_or(0, to_u64);
    hot.set_fence(device_id, fence);
    Ok(OpenedSession {
        last_stored_seq: u32::try_from(stored_seq).unwrap_or(u32::MAX),
        fence,
    })
}

/// What an append's commit answers, once its transaction committed; a
/// newly stored record's event takes the request's strings (no copies).
fn settle(
    request: AppendRequest,
    result: Result<Done, StoreError>,
    stats: &mut TransactionStats,
    events: &mut Vec<Arc<StoredEvent>>,
) -> Result<AppendOutcome, StoreError> {
    match result? {
        Done::Append(outcome @ AppendOutcome::Stored { offset }, Some(now_ms)) => {
            stats.stored += 1;
            events.push(Arc::new(StoredEvent::new(
                request.tenant_id,
                request.channel,
                offset,
                request.device_id,
                request.device_time_ms,
                now_ms,
                request.payload,
            )));
            Ok(outcome)
        }
        Done::Append(outcome, _) => {
            if outcome == AppendOutcome::Duplicate {
                stats.duplicates += 1;
            }
            Ok(outcome)
        }
        Done::Fenced => Err(StoreError::Fenced),
        _ => Err(StoreError::Invalid("mismatched reply".into())),
    }
}

/// An append, unless its session was replaced ([`Done::Fenced`]).
fn fenced_append(
    tx: &Connection,
    hot: &mut Hot,
    statements: &mut Statements<'_>,
    request: &AppendRequest,
    now_ms: u64,
) -> Result<Done, StoreError> {
    if request.fence < hot.fence(tx, &request.device_id)? {
        return Ok(Done::Fenced);
    }
    let (outcome, stored) = append(tx, hot, statements, request, now_ms)?;
    Ok(Done::Append(outcome, stored))
}

/// Stores one record unless it is stored already, and moves the
/// contiguous watermark over it when its predecessor is covered. The
/// channel's and the boot's rows change in the writer's memory, and only
/// once every statement here succeeded (see `hot.rs`).
fn append(
    tx: &Connection,
    hot: &mut Hot,
    statements: &mut Statements<'_>,
    request: &AppendRequest,
    now_ms: u64,
) -> Result<(AppendOutcome, Option<u64>), StoreError> {
    let boot_key = boot_to_i64(request.boot_id);
    let seq = i64::from(request.seq);
    let boot = hot.boot(tx, &request.device_id, request.boot_id)?;
    let stored_seq = boot.stored_seq;
    let stored_above = seq > stored_seq
        && boot.gaps
        && tx
            .prepare_cached(
                "SELECT 1 FROM stored_seqs WHERE device_id = ?1 AND boot_id = ?2 AND seq = ?3",
            )?
            .exists(params![request.device_id, boot_key, seq])?;
    let duplicate = seq <= stored_seq || stored_above;
    let inserted = if duplicate {
        None
    } else {
        Some(insert_message(tx, hot, statements, request, now_ms)?)
    };
    let covered = i64::from(request.previous_seq) <= stored_seq;
    let mut next = Boot {
        last_ms: to_i64(now_ms),
        ..boot
    };
    if covered && seq > stored_seq {
        next.stored_seq = seq;
        if stored_above {
            // The watermark covers it now: its entry has done its job.
            tx.prepare_cached(
                "DELETE FROM stored_seqs WHERE device_id = ?1 AND boot_id = ?2 AND seq <= ?3",
            )?
            .execute(params![request.device_id, boot_key, seq])?;
        }
    } else if !duplicate {
        // Stored after a gap: remembered, not covered.
        tx.prepare_cached("INSERT INTO stored_seqs(device_id, boot_id, seq) VALUES (?1, ?2, ?3)")?
            .execute(params![request.device_id, boot_key, seq])?;
        next.gaps = true;
    } else {
        next = boot;
    }
    // Every statement succeeded: now the memory changes.
    hot.set_boot(&request.device_id, request.boot_id, next);
    match inserted {
        Some(channel) => {
            hot.set_channel(request.tenant_id, &request.channel, channel);
            let offset = to_u64(channel.next_offset.saturating_sub(1));
            Ok((AppendOutcome::Stored { offset }, Some(now_ms)))
        }
        None => Ok((AppendOutcome::Duplicate, None)),
    }
}

/// Inserts the message at its channel's next offset (creating the
/// channel at offset 1); returns the channel's row after it.
fn insert_message(
    tx: &Connection,
    hot: &mut Hot,
    statements: &mut Statements<'_>,
    request: &AppendRequest,
    now_ms: u64,
) -> Result<Channel, StoreError> {
    let channel = match hot.channel(tx, request.tenant_id, &request.channel)? {
        Some(channel) => channel,
        None => Channel {
            id: tx
                .prepare_cached(
                    "INSERT INTO channels(tenant_id, name, next_offset) VALUES (?1, ?2, 1)
                     RETURNING id",
                )?
                .query_row(params![request.tenant_id, request.channel], |row| {
                    row.get(0)
                })?,
            next_offset: 1,
        },
    };
    let offset = channel.next_offset;
    statements.insert_message.execute(params![
        channel.id,
        offset,
        request.device_id,
        request.device_time_ms.map(to_i64),
        to_i64(now_ms),
        request.payload
    ])?;
    Ok(Channel {
        id: channel.id,
        next_offset: offset.saturating_add(1),
    })
}
