//! Group commit: the writer's commits reach the disk on a thread of their
//! own, so the writer never waits for an fsync.
//!
//! ```text
//!  writer thread:  BEGIN … COMMIT (WAL written, not synced) ─▶ submit(batch) ─▶ next batch
//!                                                                   │ (bounded: the writer
//!                                                                   ▼  waits when it is full)
//!  sync thread:    take every batch committed so far ─▶ fdatasync(WAL) ─▶ answer them, in order
//! ```
//!
//! The writer connection runs with `synchronous = NORMAL`: SQLite writes a
//! commit's frames to the WAL and returns without syncing it. This thread
//! then syncs the WAL file once for every batch committed before the sync
//! began, and only then are their operations answered (acks mean
//! durable, as with `synchronous = FULL`), while the writer already works
//! on the next batch. With FULL the writer thread waited for every fsync
//! itself (about 0.1 ms here, milliseconds when the disk is busy), and
//! the appends that arrived meanwhile waited for it too.
//!
//! Why that is as durable: a batch is answered only after an fdatasync
//! that began after its commit's writes returned, so its frames and every
//! frame before them are on disk. SQLite overwrites the WAL only after a
//! checkpoint copied all of it into the database file and synced that
//! file (the checkpointer's connection keeps `synchronous = FULL`), so an
//! older commit is either in the synced WAL or in the synced database.
//! A failed sync fails every operation it covered (their records may be
//! in the database, unacknowledged: a device sends them again and the
//! store answers them as duplicates).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::store::StoreError;

/// Committed batches waiting for their sync, at most, before the writer
/// waits: the disk's pace bounds the writer's.
const QUEUE: usize = 64;

/// The sync thread; dropping it answers every batch submitted (after a
/// last sync) and joins the thread.
pub(super) struct Syncer<J: Send + 'static> {
    queue: Option<mpsc::SyncSender<(J, bool)>>,
    thread: Option<JoinHandle<()>>,
}

impl<J: Send + 'static> Syncer<J> {
    /// Starts the thread syncing the WAL file at `wal`; `settle` answers a
    /// batch with the outcome of the sync that covered it.
    pub(super) fn start(
        wal: PathBuf,
        mut settle: impl FnMut(J, Result<(), &StoreError>) + Send + 'static,
    ) -> Result<Self, StoreError> {
        let (queue, jobs) = mpsc::sync_channel::<(J, bool)>(QUEUE);
        let thread = std::thread::Builder::new()
            .name("tether-store-sync".into())
            .spawn(move || {
                let mut file = None;
                let mut batches = Vec::new();
                while let Ok(first) = jobs.recv() {
                    // Every batch committed before the sync begins.
                    batches.push(first);
                    batches.extend(jobs.try_iter());
                    let synced = if batches.iter().any(|(_, durable)| *durable) {
                        sync(&wal, &mut file)
                    } else {
                        Ok(())
                    };
                    for (batch, _) in batches.drain(..) {
                        settle(batch, synced.as_ref().map(|_| ()));
                    }
                }
            })
            .map_err(|error| StoreError::Database(error.to_string()))?;
        Ok(Syncer {
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    /// Hands over a batch: `durable` if it committed something that must
    /// reach the disk before it is answered. Waits while [`QUEUE`] batches
    /// are waiting for the disk.
    pub(super) fn submit(&self, batch: J, durable: bool) {
        if let Some(queue) = &self.queue {
            // Fails only if the thread is gone (it never returns early).
            let _ = queue.send((batch, durable));
        }
    }
}

impl<J: Send + 'static> Drop for Syncer<J> {
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// fdatasync of the WAL file (opened on first use, again after a failure).
fn sync(wal: &Path, file: &mut Option<File>) -> Result<(), StoreError> {
    let result = match file {
        Some(file) => file.sync_data(),
        None => File::open(wal).and_then(|opened| {
            let result = opened.sync_data();
            *file = Some(opened);
            result
        }),
    };
    result.map_err(|error| {
        *file = None;
        tracing::error!(%error, wal = %wal.display(), "cannot sync the WAL; failing its commits");
        StoreError::Database(format!("cannot sync the WAL: {error}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn answers_every_batch_in_order_after_a_sync() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|error| StoreError::Database(error.to_string()))?;
        let wal = dir.path().join("db-wal");
        std::fs::write(&wal, b"frames").map_err(|error| StoreError::Database(error.to_string()))?;
        let answered = Arc::new(Mutex::new(Vec::new()));
        let syncer = {
            let answered = Arc::clone(&answered);
            Syncer::start(wal, move |batch: u32, synced| {
                if let Ok(mut answered) = answered.lock() {
                    answered.push((batch, synced.is_ok()));
                }
            })?
        };
        for batch in 0..200 {
            syncer.submit(batch, batch % 3 != 0);
        }
        drop(syncer);
        let answered = answered
            .lock()
            .map(|guard| guard.to_vec())
            .unwrap_or_default();
        assert_eq!(
            answered,
            (0..200).map(|batch| (batch, true)).collect::<Vec<_>>()
        );
        Ok(())
    }

    #[test]
    fn a_failed_sync_fails_the_batches_it_covered() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|error| StoreError::Database(error.to_string()))?;
        let answered = Arc::new(Mutex::new(Vec::new()));
        let syncer = {
            let answered = Arc::clone(&answered);
            // No WAL file: the sync cannot open it.
            Syncer::start(dir.path().join("missing-wal"), move |batch: u32, synced| {
                if let Ok(mut answered) = answered.lock() {
                    answered.push((batch, synced.is_ok()));
                }
            })?
        };
        syncer.submit(1, true);
        syncer.submit(2, false);
        drop(syncer);
        let answered = answered
            .lock()
            .map(|guard| guard.to_vec())
            .unwrap_or_default();
        assert_eq!(answered.first(), Some(&(1, false)));
        assert_eq!(answered.len(), 2);
        Ok(())
    }
}
