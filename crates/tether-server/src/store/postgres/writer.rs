//! The node's single writer: one task owns a database connection, takes
//! operations off a bounded queue, and commits them in batches (group
//! commit), like the SQLite store's writer thread.
//!
//! ```text
//!  append / open_session / claim … ──▶ bounded queue ──▶ BEGIN
//!   (wait when full = backpressure)       lock the batch's devices (sorted, FOR UPDATE)
//!                                         appends, set-based: read watermarks → plan in
//!                                         memory → lock channel counters (sorted) →
//!                                         insert messages, move watermarks
//!                                       COMMIT ─▶ replies, on_commit
//!                       an op failed: again with each op in a SAVEPOINT
//!                       deadlock between nodes: the whole batch again
//! ```
//!
//! A batch of appends costs the same handful of round trips whatever its
//! size: the watermark rule (see the [store docs](crate::store)) runs in
//! memory over the rows read at the start ([`plan`]), under the device
//! rows' locks, so no other node changes them meanwhile.
//!
//! Across nodes: every writer of a device's watermark or fencing token
//! holds the device's row lock, and every writer of a channel holds the
//! channel's row (its `next_offset` counter) until commit. Writers take
//! device rows, then channel rows, each in sorted order, so two nodes'
//! batches do not deadlock (a rare deadlock with a claim is retried).
//! Offsets are therefore gap-free (the counter and the messages commit or
//! roll back together) and a channel's commits are in offset order on
//! every node.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use deadpool_postgres::{GenericClient, Pool};
use tokio::sync::{mpsc, oneshot};

use super::retention::RetentionJob;
use super::schema::{REVOCATION_LOCK, describe, is_retryable, pool_error};
use crate::auth;
use crate::store::accounts::{AccountDone, AccountOp};
use crate::store::{
    AppendOutcome, AppendRequest, OpenedSession, StoreError, StoreOptions, StoredEvent, TenantId,
    TransactionStats,
};

/// Operations per write transaction, at most.
const MAX_BATCH: usize = 512;
/// Attempts at a batch that deadlocked with another node's.
const DEADLOCK_ATTEMPTS: u32 = 4;
const DAY_MS: u64 = 86_400_000;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// What the writer is asked to do.
pub(super) enum WriteOp {
    Append(AppendRequest, Reply<AppendOutcome>),
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
    ResetPresence(Reply<()>),
    Account(AccountOp),
}

/// What an operation did, before its transaction committed.
enum Done {
    Append(AppendOutcome, Option<StoredEvent>),
    Fenced,
    Opened(OpenedSession),
    Unit,
    Claim(Result<String, StoreError>),
    Account(AccountDone),
}

impl WriteOp {
    fn device_id(&self) -> Option<&str> {
        match self {
            WriteOp::Append(request, _) => Some(&request.device_id),
            WriteOp::OpenSession { device_id, .. } | WriteOp::CloseSession { device_id, .. } => {
                Some(device_id)
            }
            _ => None,
        }
    }

    fn answer(self, result: Result<Done, StoreError>) {
        match (self, result) {
            (WriteOp::Append(_, reply), Ok(Done::Append(outcome, _))) => {
                drop(reply.send(Ok(outcome)));
            }
            (WriteOp::Append(_, reply), Ok(Done::Fenced)) => {
                drop(reply.send(Err(StoreError::Fenced)));
            }
            (WriteOp::OpenSession { reply, .. }, Ok(Done::Opened(opened))) => {
                drop(reply.send(Ok(opened)));
            }
            (
                WriteOp::CloseSession { reply, .. } | WriteOp::ResetPresence(reply),
                Ok(Done::Unit),
            ) => drop(reply.send(Ok(()))),
            (WriteOp::Claim { reply, .. }, Ok(Done::Claim(answer))) => drop(reply.send(answer)),
            (WriteOp::Account(op), Ok(Done::Account(done))) => op.answer(done),
            (op, Ok(_)) => op.fail(&StoreError::Invalid("mismatched reply".into())),
            (op, Err(error)) => op.fail(&error),
        }
    }

    fn fail(self, error: &StoreError) {
        let error = error.clone();
        match self {
            WriteOp::Append(_, reply) => drop(reply.send(Err(error))),
            WriteOp::OpenSession { reply, .. } => drop(reply.send(Err(error))),
            WriteOp::CloseSession { reply, .. } | WriteOp::ResetPresence(reply) => {
                drop(reply.send(Err(error)));
            }
            WriteOp::Claim { reply, .. } => drop(reply.send(Err(error))),
            WriteOp::Retention { reply, .. } => drop(reply.send(Err(error))),
            WriteOp::Account(op) => op.fail(&error),
        }
    }
}

/// The writer's body (on its own thread's runtime): runs until every
/// sender is gone and the queue is drained.
pub(super) async fn run(
    pool: Pool,
    node: String,
    mut queue: mpsc::Receiver<WriteOp>,
    options: StoreOptions,
) {
    let mut retention: Option<RetentionJob> = None;
    loop {
        let first = if retention.is_some() {
            match queue.try_recv() {
                Ok(op) => Some(op),
                Err(mpsc::error::TryRecvError::Empty) => None,
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            }
        } else {
            match queue.recv().await {
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
                        None => {
                            retention = Some(RetentionJob::new(
                                now_ms,
                                reply,
                                options.retention_max_age,
                                options.retention_max_messages,
                            ));
                        }
                    },
                    op => batch.push(op),
                }
                if batch.len() >= MAX_BATCH {
                    break;
                }
            }
            if !batch.is_empty() {
                let started = Instant::now();
                let operations = batch.len();
                let result = commit_batch(&pool, &node, &batch).await;
                let mut stats = TransactionStats {
                    operations,
                    committed: result.is_ok(),
                    duration: started.elapsed(),
                    ..TransactionStats::default()
                };
                match result {
                    Ok(results) => {
                        let mut events = Vec::new();
                        for (op, mut result) in batch.into_iter().zip(results) {
                            if let Ok(Done::Append(outcome, event)) = &mut result {
                                match event.take() {
                                    Some(event) => {
                                        stats.stored += 1;
                                        events.push(Arc::new(event));
                                    }
                                    None if *outcome == AppendOutcome::Duplicate => {
                                        stats.duplicates += 1;
                                    }
                                    None => {}
                                }
                            }
                            op.answer(result);
                        }
                        (options.on_transaction)(&stats);
                        if !events.is_empty() {
                            (options.on_commit)(events);
                        }
                    }
                    Err(error) => {
                        (options.on_transaction)(&stats);
                        tracing::error!(%error, operations, "store transaction failed; nothing in it is acknowledged");
                        for op in batch {
                            op.fail(&error);
                        }
                    }
                }
            }
        }
        if let Some(job) = &mut retention
            && job.step(&pool).await
        {
            retention = None;
        }
    }
    if let Some(mut job) = retention {
        job.finish(Err(StoreError::Closed));
    }
}

/// Why an attempt at a batch did not commit.
enum Failed {
    /// An operation failed (the transaction is aborted): try again with
    /// each operation in a savepoint.
    Operation,
    /// A deadlock or serialization failure between nodes: try the same
    /// again.
    Retry(StoreError),
    /// The transaction itself failed (the connection, the server): every
    /// operation in it fails.
    Transaction(StoreError),
}

impl From<tokio_postgres::Error> for Failed {
    fn from(error: tokio_postgres::Error) -> Self {
        classify(&error)
    }
}

fn classify(error: &tokio_postgres::Error) -> Failed {
    let store_error = StoreError::Database(describe(error));
    if is_retryable(error) {
        Failed::Retry(store_error)
    } else if error.as_db_error().is_some() && !error.is_closed() {
        Failed::Operation
    } else {
        Failed::Transaction(store_error)
    }
}

/// Commits one batch: straight first (the common case costs nothing
/// extra), again with each operation in a savepoint if one failed, and
/// again whole after a deadlock with another node.
async fn commit_batch(
    pool: &Pool,
    node: &str,
    batch: &[WriteOp],
) -> Result<Vec<Result<Done, StoreError>>, StoreError> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let mut isolate = false;
    let mut attempts = 0;
    loop {
        attempts += 1;
        match attempt(&mut client, node, batch, isolate).await {
            Ok(results) => return Ok(results),
            Err(Failed::Operation) if !isolate => isolate = true,
            Err(Failed::Retry(error)) if attempts < DEADLOCK_ATTEMPTS => {
                tracing::info!(%error, attempts, "store transaction collided with another node's; again");
            }
            Err(Failed::Operation) => {
                return Err(StoreError::Database("a batch failed twice".into()));
            }
            Err(Failed::Retry(error) | Failed::Transaction(error)) => return Err(error),
        }
    }
}

/// One transaction over the batch (see [`commit_batch`]).
async fn attempt(
    client: &mut deadpool_postgres::Object,
    node: &str,
    batch: &[WriteOp],
    isolate: bool,
) -> Result<Vec<Result<Done, StoreError>>, Failed> {
    let mut tx = client.transaction().await?;
    let now_ms = crate::now_ms();
    // Every device the batch touches, locked in one sorted pass.
    let mut devices: Vec<&str> = batch.iter().filter_map(WriteOp::device_id).collect();
    devices.sort_unstable();
    devices.dedup();
    let mut fences: HashMap<String, u64> = HashMap::with_capacity(devices.len());
    if !devices.is_empty() {
        let lock = tx
            .prepare_cached(
                "SELECT id, session_fence FROM devices WHERE id = ANY($1) ORDER BY id FOR UPDATE",
            )
            .await?;
        for row in tx.query(&lock, &[&devices]).await? {
            fences.insert(row.get(0), to_u64(row.get(1)));
        }
    }
    let mut results: Vec<Result<Done, StoreError>> = Vec::with_capacity(batch.len());
    let mut index = 0;
    while index < batch.len() {
        // A run of appends goes together (alone when isolating).
        let end = if isolate {
            index + 1
        } else {
            batch[index..]
                .iter()
                .position(|op| !matches!(op, WriteOp::Append(..)))
                .map_or(batch.len(), |n| index + n.max(1))
        };
        let ops = &batch[index..end];
        if isolate {
            let savepoint = tx.savepoint("op").await?;
            match execute(&savepoint, node, ops, &mut fences, now_ms).await {
                Ok(done) => {
                    savepoint.commit().await?;
                    results.extend(done.into_iter().map(Ok));
                }
                Err(error) => match classify(&error) {
                    Failed::Operation => {
                        savepoint.rollback().await?;
                        let error = StoreError::Database(describe(&error));
                        tracing::error!(%error, "store operation failed; the rest of its transaction goes on");
                        results.push(Err(error));
                    }
                    failed => return Err(failed),
                },
            }
        } else {
            let done = execute(&tx, node, ops, &mut fences, now_ms).await?;
            results.extend(done.into_iter().map(Ok));
        }
        index = end;
    }
    // Messages published today, per device (for the device list).
    let mut published: BTreeMap<&str, i64> = BTreeMap::new();
    for (op, result) in batch.iter().zip(&results) {
        if let (WriteOp::Append(request, _), Ok(Done::Append(_, Some(_)))) = (op, result) {
            *published.entry(request.device_id.as_str()).or_default() += 1;
        }
    }
    if !published.is_empty() {
        let today = to_i64(now_ms - now_ms % DAY_MS);
        let (ids, counts): (Vec<&str>, Vec<i64>) = published.into_iter().unzip();
        let statement = tx
            .prepare_cached(
                "UPDATE devices SET
                    day_count = CASE WHEN day_start_ms = $3 THEN day_count + u.n ELSE u.n END,
                    day_start_ms = $3, last_seen_ms = $4
                 FROM unnest($1::text[], $2::bigint[]) AS u(id, n) WHERE devices.id = u.id",
            )
            .await?;
        tx.execute(&statement, &[&ids, &counts, &today, &to_i64(now_ms)])
            .await?;
    }
    // Every reply waits for this.
    tx.commit().await?;
    Ok(results)
}

/// Runs `ops` (a run of appends, or one other operation).
async fn execute<C: GenericClient + Sync>(
    tx: &C,
    node: &str,
    ops: &[WriteOp],
    fences: &mut HashMap<String, u64>,
    now_ms: u64,
) -> Result<Vec<Done>, tokio_postgres::Error> {
    let Some(first) = ops.first() else {
        return Ok(Vec::new());
    };
    Ok(match first {
        WriteOp::Append(..) => {
            let requests: Vec<&AppendRequest> = ops
                .iter()
                .filter_map(|op| match op {
                    WriteOp::Append(request, _) => Some(request),
                    _ => None,
                })
                .collect();
            appends(tx, &requests, fences, now_ms).await?
        }
        WriteOp::OpenSession {
            device_id,
            firmware_version,
            boot_id,
            now_ms,
            ..
        } => {
            let statement = tx
                .prepare_cached(
                    "UPDATE devices SET online = TRUE, last_seen_ms = $2, firmware_version = $3,
                        session_fence = session_fence + 1, session_node = $4
                     WHERE id = $1 RETURNING session_fence",
                )
                .await?;
            let fence = tx
                .query_opt(
                    &statement,
                    &[device_id, &to_i64(*now_ms), firmware_version, &node],
                )
                .await?
                .map_or(0, |row| to_u64(row.get(0)));
            fences.insert(device_id.clone(), fence);
            let statement = tx
                .prepare_cached(
                    "SELECT stored_seq FROM boots WHERE device_id = $1 AND boot_id = $2",
                )
                .await?;
            let stored_seq = tx
                .query_opt(&statement, &[device_id, &boot_to_i64(*boot_id)])
                .await?
                .map_or(0, |row| row.get::<_, i64>(0));
            vec![Done::Opened(OpenedSession {
                last_stored_seq: u32::try_from(stored_seq).unwrap_or(u32::MAX),
                fence,
            })]
        }
        WriteOp::CloseSession {
            device_id,
            fence,
            now_ms,
            ..
        } => {
            let statement = tx
                .prepare_cached(
                    "UPDATE devices SET online = FALSE, last_seen_ms = $2
                     WHERE id = $1 AND session_fence = $3",
                )
                .await?;
            tx.execute(&statement, &[device_id, &to_i64(*now_ms), &to_i64(*fence)])
                .await?;
            vec![Done::Unit]
        }
        WriteOp::ResetPresence(_) => {
            tx.execute(
                "UPDATE devices SET online = FALSE WHERE online AND session_node = $1",
                &[&node],
            )
            .await?;
            vec![Done::Unit]
        }
        WriteOp::Claim {
            tenant_id,
            claim_code,
            now_ms,
            ..
        } => vec![Done::Claim(
            claim(tx, *tenant_id, claim_code, *now_ms).await?,
        )],
        WriteOp::Account(op) => vec![Done::Account(super::accounts::execute(tx, op).await?)],
        // The writer loop takes these out of every batch.
        WriteOp::Retention { .. } => Vec::new(),
    })
}

/// Moves the device with `claim_code` into `tenant_id`; the inner error is
/// the claim's answer (unknown or expired code), which writes nothing.
async fn claim<C: GenericClient + Sync>(
    tx: &C,
    tenant_id: TenantId,
    claim_code: &str,
    now_ms: u64,
) -> Result<Result<String, StoreError>, tokio_postgres::Error> {
    let device_id = match claimable(tx, claim_code, now_ms).await? {
        Ok(device_id) => device_id,
        Err(answer) => return Ok(Err(answer)),
    };
    move_device(tx, &device_id, tenant_id).await?;
    Ok(Ok(device_id))
}

/// The device a claim code would claim now (its row locked), changing
/// nothing: the inner error is [`StoreError::NotFound`] (no such unused
/// code) or [`StoreError::Expired`].
pub(super) async fn claimable<C: GenericClient + Sync>(
    tx: &C,
    claim_code: &str,
    now_ms: u64,
) -> Result<Result<String, StoreError>, tokio_postgres::Error> {
    let Some(code) = auth::normalize_claim_code(claim_code) else {
        return Ok(Err(StoreError::NotFound));
    };
    let hash = auth::hash_secret(&code);
    let row = tx
        .query_opt(
            "SELECT id, claim_expires_ms FROM devices
             WHERE claim_hash = $1 AND NOT revoked FOR UPDATE",
            &[&hash.as_slice()],
        )
        .await?;
    let Some(row) = row else {
        return Ok(Err(StoreError::NotFound));
    };
    let expires_ms: Option<i64> = row.get(1);
    if expires_ms.is_some_and(|expires_ms| to_i64(now_ms) >= expires_ms) {
        return Ok(Err(StoreError::Expired));
    }
    Ok(Ok(row.get(0)))
}

/// Moves a device into `tenant_id` and uses its claim code up.
pub(super) async fn move_device<C: GenericClient + Sync>(
    tx: &C,
    device_id: &str,
    tenant_id: TenantId,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "UPDATE devices SET tenant_id = $2, claim_hash = NULL WHERE id = $1",
        &[&device_id, &tenant_id],
    )
    .await?;
    // Its open connections belong to the old tenant: close them (not one
    // made after the claim, see `Revocation::Moved`).
    record_revocation(tx, "moved", device_id).await
}

/// Records a revocation in the writing transaction, for every node to
/// poll in id order (see [`REVOCATION_LOCK`]).
pub(super) async fn record_revocation<C: GenericClient + Sync>(
    tx: &C,
    kind: &str,
    subject: &str,
) -> Result<(), tokio_postgres::Error> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&REVOCATION_LOCK])
        .await?;
    tx.execute(
        "INSERT INTO revocations(kind, subject) VALUES ($1, $2)",
        &[&kind, &subject],
    )
    .await?;
    Ok(())
}

/// The watermark state of one `(device, boot)` while a batch is planned.
#[derive(Debug, Clone, Default)]
struct Boot {
    /// The contiguous stored watermark.
    stored_seq: i64,
    /// Records stored above it (rows of `stored_seqs`) that the batch
    /// asks about or adds.
    above: BTreeSet<i64>,
    /// Whether `stored_seq` moved.
    moved: bool,
    /// `stored_seqs` rows at or below this go (the watermark covers them).
    delete_through: Option<i64>,
    /// `stored_seqs` rows the batch adds.
    inserted: BTreeSet<i64>,
    /// Whether the boot stored anything new.
    stored: bool,
}

/// What to do with one append, decided in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// A newer session took over.
    Fenced,
    /// Stored before.
    Duplicate,
    /// Store it.
    Store,
}

type BootKey = (String, i64);

/// The watermark rule of the [store docs](crate::store), applied in order
/// to a batch's appends over the state read from the database. Pure, so
/// its cases are tested on their own.
fn plan(
    requests: &[&AppendRequest],
    fences: &HashMap<String, u64>,
    boots: &mut HashMap<BootKey, Boot>,
) -> Vec<Step> {
    requests
        .iter()
        .map(|request| {
            let current = fences.get(&request.device_id).copied().unwrap_or(0);
            if request.fence < current {
                return Step::Fenced;
            }
            let key = (request.device_id.clone(), boot_to_i64(request.boot_id));
            let boot = boots.entry(key).or_default();
            let seq = i64::from(request.seq);
            let stored_above = seq > boot.stored_seq && boot.above.contains(&seq);
            let duplicate = seq <= boot.stored_seq || stored_above;
            let covered = i64::from(request.previous_seq) <= boot.stored_seq;
            if covered && seq > boot.stored_seq {
                boot.stored_seq = seq;
                boot.moved = true;
                if stored_above {
                    // The watermark covers it now: its entry has done its job.
                    boot.delete_through = Some(boot.delete_through.map_or(seq, |d| d.max(seq)));
                    boot.above.retain(|&above| above > seq);
                    boot.inserted.retain(|&inserted| inserted > seq);
                }
            } else if !duplicate {
                // Stored after a gap: remembered, not covered.
                boot.above.insert(seq);
                boot.inserted.insert(seq);
            }
            if duplicate {
                Step::Duplicate
            } else {
                boot.stored = true;
                Step::Store
            }
        })
        .collect()
}

/// A run of appends, set-based: a fixed number of statements whatever the
/// number of appends.
async fn appends<C: GenericClient + Sync>(
    tx: &C,
    requests: &[&AppendRequest],
    fences: &HashMap<String, u64>,
    now_ms: u64,
) -> Result<Vec<Done>, tokio_postgres::Error> {
    // 1. The watermarks and the stored-above rows the appends ask about.
    let (device_ids, boot_ids, seqs): (Vec<&str>, Vec<i64>, Vec<i64>) = requests
        .iter()
        .map(|r| {
            (
                r.device_id.as_str(),
                boot_to_i64(r.boot_id),
                i64::from(r.seq),
            )
        })
        .fold(
            (Vec::new(), Vec::new(), Vec::new()),
            |mut acc, (d, b, s)| {
                acc.0.push(d);
                acc.1.push(b);
                acc.2.push(s);
                acc
            },
        );
    let mut boots: HashMap<BootKey, Boot> = HashMap::new();
    let statement = tx
        .prepare_cached(
            "SELECT device_id, boot_id, stored_seq FROM boots
             WHERE (device_id, boot_id) IN (SELECT * FROM unnest($1::text[], $2::bigint[]))",
        )
        .await?;
    for row in tx.query(&statement, &[&device_ids, &boot_ids]).await? {
        boots
            .entry((row.get(0), row.get(1)))
            .or_default()
            .stored_seq = row.get(2);
    }
    let statement = tx
        .prepare_cached(
            "SELECT device_id, boot_id, seq FROM stored_seqs
             WHERE (device_id, boot_id, seq) IN
                 (SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[]))",
        )
        .await?;
    for row in tx
        .query(&statement, &[&device_ids, &boot_ids, &seqs])
        .await?
    {
        boots
            .entry((row.get(0), row.get(1)))
            .or_default()
            .above
            .insert(row.get(2));
    }
    // 2. The rule, in memory.
    let steps = plan(requests, fences, &mut boots);
    // 3. Offsets: lock each channel's counter (sorted), number in order.
    let mut channels: BTreeMap<(TenantId, &str), (i64, i64)> = BTreeMap::new();
    for (request, step) in requests.iter().zip(&steps) {
        if *step == Step::Store {
            channels
                .entry((request.tenant_id, request.channel.as_str()))
                .or_default();
        }
    }
    if !channels.is_empty() {
        let (tenants, names): (Vec<TenantId>, Vec<&str>) = channels.keys().copied().unzip();
        let statement = tx
            .prepare_cached(
                "INSERT INTO channels(tenant_id, name, next_offset)
                 SELECT t, n, 1 FROM unnest($1::bigint[], $2::text[]) AS c(t, n) ORDER BY t, n
                 ON CONFLICT (tenant_id, name) DO NOTHING",
            )
            .await?;
        tx.execute(&statement, &[&tenants, &names]).await?;
        let statement = tx
            .prepare_cached(
                "SELECT id, tenant_id, name, next_offset FROM channels
                 WHERE (tenant_id, name) IN (SELECT * FROM unnest($1::bigint[], $2::text[]))
                 ORDER BY tenant_id, name FOR UPDATE",
            )
            .await?;
        let mut locked: HashMap<(TenantId, String), (i64, i64)> = HashMap::new();
        for row in tx.query(&statement, &[&tenants, &names]).await? {
            locked.insert((row.get(1), row.get(2)), (row.get(0), row.get(3)));
        }
        for ((tenant, name), entry) in &mut channels {
            if let Some(found) = locked.get(&(*tenant, (*name).to_owned())) {
                *entry = *found;
            }
        }
    }
    // 4. The messages, in the appends' order.
    let mut done = Vec::with_capacity(requests.len());
    let mut rows = MessageRows::default();
    for (request, step) in requests.iter().zip(&steps) {
        done.push(match step {
            Step::Fenced => Done::Fenced,
            Step::Duplicate => Done::Append(AppendOutcome::Duplicate, None),
            Step::Store => {
                let (channel_id, offset) = channels
                    .get_mut(&(request.tenant_id, request.channel.as_str()))
                    .map_or((0, 0), |entry| {
                        let offset = entry.1;
                        entry.1 += 1;
                        (entry.0, offset)
                    });
                rows.push(channel_id, offset, request);
                Done::Append(
                    AppendOutcome::Stored {
                        offset: to_u64(offset),
                    },
                    Some(StoredEvent::new(
                        request.tenant_id,
                        request.channel.clone(),
                        to_u64(offset),
                        request.device_id.clone(),
                        request.device_time_ms,
                        now_ms,
                        request.payload.clone(),
                    )),
                )
            }
        });
    }
    if !rows.channel_ids.is_empty() {
        let statement = tx
            .prepare_cached(
                r#"INSERT INTO messages(channel_id, "offset", device_id, device_time_ms,
                                        server_time_ms, payload)
                   SELECT c, o, d, t, $5, p
                   FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $6::text[])
                       AS m(c, o, d, t, p)"#,
            )
            .await?;
        tx.execute(
            &statement,
            &[
                &rows.channel_ids,
                &rows.offsets,
                &rows.device_ids,
                &rows.device_times,
                &to_i64(now_ms),
                &rows.payloads,
            ],
        )
        .await?;
        let (ids, next): (Vec<i64>, Vec<i64>) = channels.values().copied().unzip();
        let statement = tx
            .prepare_cached(
                "UPDATE channels SET next_offset = u.next
                 FROM unnest($1::bigint[], $2::bigint[]) AS u(id, next) WHERE channels.id = u.id",
            )
            .await?;
        tx.execute(&statement, &[&ids, &next]).await?;
    }
    // 5. Watermarks and stored-above rows.
    write_boots(tx, &boots, now_ms).await?;
    Ok(done)
}

/// The columns of the messages a run inserts.
#[derive(Debug, Default)]
struct MessageRows<'a> {
    channel_ids: Vec<i64>,
    offsets: Vec<i64>,
    device_ids: Vec<&'a str>,
    device_times: Vec<Option<i64>>,
    payloads: Vec<&'a str>,
}

impl<'a> MessageRows<'a> {
    fn push(&mut self, channel_id: i64, offset: i64, request: &'a AppendRequest) {
        self.channel_ids.push(channel_id);
        self.offsets.push(offset);
        self.device_ids.push(&request.device_id);
        self.device_times.push(request.device_time_ms.map(to_i64));
        self.payloads.push(&request.payload);
    }
}

async fn write_boots<C: GenericClient + Sync>(
    tx: &C,
    boots: &HashMap<BootKey, Boot>,
    now_ms: u64,
) -> Result<(), tokio_postgres::Error> {
    let mut upsert = (Vec::new(), Vec::new(), Vec::new());
    let mut delete = (Vec::new(), Vec::new(), Vec::new());
    let mut insert = (Vec::new(), Vec::new(), Vec::new());
    for ((device_id, boot_id), boot) in boots {
        if boot.moved || boot.stored {
            upsert.0.push(device_id.as_str());
            upsert.1.push(*boot_id);
            upsert.2.push(boot.stored_seq);
        }
        if let Some(through) = boot.delete_through {
            delete.0.push(device_id.as_str());
            delete.1.push(*boot_id);
            delete.2.push(through);
        }
        for seq in &boot.inserted {
            insert.0.push(device_id.as_str());
            insert.1.push(*boot_id);
            insert.2.push(*seq);
        }
    }
    if !upsert.0.is_empty() {
        let statement = tx
            .prepare_cached(
                "INSERT INTO boots(device_id, boot_id, stored_seq, last_ms)
                 SELECT d, b, s, $4 FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS u(d, b, s)
                 ON CONFLICT (device_id, boot_id) DO UPDATE
                 SET stored_seq = excluded.stored_seq, last_ms = excluded.last_ms",
            )
            .await?;
        tx.execute(
            &statement,
            &[&upsert.0, &upsert.1, &upsert.2, &to_i64(now_ms)],
        )
        .await?;
    }
    if !delete.0.is_empty() {
        let statement = tx
            .prepare_cached(
                "DELETE FROM stored_seqs s
                 USING unnest($1::text[], $2::bigint[], $3::bigint[]) AS d(device_id, boot_id, through)
                 WHERE s.device_id = d.device_id AND s.boot_id = d.boot_id AND s.seq <= d.through",
            )
            .await?;
        tx.execute(&statement, &[&delete.0, &delete.1, &delete.2])
            .await?;
    }
    if !insert.0.is_empty() {
        // No ON CONFLICT: the primary key refuses a record stored twice.
        let statement = tx
            .prepare_cached(
                "INSERT INTO stored_seqs(device_id, boot_id, seq)
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[])",
            )
            .await?;
        tx.execute(&statement, &[&insert.0, &insert.1, &insert.2])
            .await?;
    }
    Ok(())
}

pub(super) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(super) fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// `boot_id` keeps its 64 bits in PostgreSQL's signed `BIGINT`.
pub(super) fn boot_to_i64(boot_id: u64) -> i64 {
    i64::from_ne_bytes(boot_id.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(device: &str, seq: u32, previous_seq: u32, fence: u64) -> AppendRequest {
        AppendRequest {
            tenant_id: 1,
            device_id: device.into(),
            boot_id: 9,
            seq,
            previous_seq,
            channel: "c".into(),
            device_time_ms: None,
            payload: "1".into(),
            fence,
        }
    }

    fn steps(requests: &[AppendRequest], boots: &mut HashMap<BootKey, Boot>) -> Vec<Step> {
        let fences = HashMap::from([("d".to_owned(), 3)]);
        let refs: Vec<&AppendRequest> = requests.iter().collect();
        plan(&refs, &fences, boots)
    }

    #[test]
    fn the_rule_in_memory_matches_the_store_docs() {
        let mut boots = HashMap::new();
        // 1 stored, 3 after the failed 2 (not covered), 2 resent, 3 resent.
        let first = steps(
            &[
                request("d", 1, 0, 3),
                request("d", 3, 2, 3),
                request("d", 2, 1, 3),
                request("d", 3, 2, 3),
                request("d", 1, 0, 2),
            ],
            &mut boots,
        );
        assert_eq!(
            first,
            [
                Step::Store,
                Step::Store,
                Step::Store,
                Step::Duplicate,
                Step::Fenced
            ]
        );
        let boot = &boots[&("d".to_owned(), 9)];
        assert_eq!(boot.stored_seq, 3);
        // 3 was inserted above the watermark and covered in the same batch.
        assert!(boot.inserted.is_empty(), "{boot:?}");
        assert_eq!(boot.delete_through, Some(3));
        // A gap the device made itself does not hold the watermark.
        let gap = steps(&[request("d", 7, 3, 3)], &mut boots);
        assert_eq!(gap, [Step::Store]);
        assert_eq!(boots[&("d".to_owned(), 9)].stored_seq, 7);
    }

    #[test]
    fn a_record_after_a_gap_is_remembered_above_the_watermark() {
        let mut boots = HashMap::new();
        let planned = steps(&[request("d", 5, 4, 3), request("d", 5, 4, 3)], &mut boots);
        assert_eq!(planned, [Step::Store, Step::Duplicate]);
        let boot = &boots[&("d".to_owned(), 9)];
        assert_eq!(boot.stored_seq, 0);
        assert_eq!(boot.inserted.iter().copied().collect::<Vec<_>>(), [5]);
    }
}
