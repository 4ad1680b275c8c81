//! WAL checkpoints off the writer's path.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its
//! threshold (1000 pages): with thousands of devices each commit of the
//! writer touches hundreds of pages, so every other commit also copied the
//! WAL into the database file and fsynced it, holding every append of the
//! next batch (and their acks) behind it. Here a thread of its own, with
//! its own connection, runs `PRAGMA wal_checkpoint(PASSIVE)` a few times a
//! second while the writer keeps committing into the WAL (a passive
//! checkpoint never takes the write lock), and the writer's automatic
//! checkpoint is off.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use super::schema::BUSY_TIMEOUT;

/// How often the WAL is copied into the database file.
const INTERVAL: Duration = Duration::from_millis(100);

/// The checkpoint thread; stopped and joined when dropped.
pub(super) struct Checkpointer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts checkpointing the database at `path`; `None` if the thread or
    /// its connection cannot be had (the writer then keeps SQLite's
    /// automatic checkpoint).
    pub(super) fn start(path: &Path) -> Option<Checkpointer> {
        let conn = Connection::open(path).ok()?;
        conn.busy_timeout(BUSY_TIMEOUT).ok()?;
        // A checkpoint syncs the WAL before it copies it and the database
        // file after: the writer's commits are synced by `sync.rs`, and
        // SQLite reuses the WAL only after a checkpoint synced it all.
        conn.pragma_update(None, "synchronous", "FULL").ok()?;
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("tether-store-checkpoint".into())
                .spawn(move || run(&conn, &stop))
                .ok()?
        };
        Some(Checkpointer {
            stop,
            thread: Some(thread),
        })
    }
}

fn run(conn: &Connection, stop: &(Mutex<bool>, Condvar)) {
    let (stopped, wake) = stop;
    let Ok(mut guard) = stopped.lock() else {
        return;
    };
    while !*guard {
        guard = match wake.wait_timeout(guard, INTERVAL) {
            Ok((guard, _)) => guard,
            Err(_) => return,
        };
        if *guard {
            break;
        }
        // (busy, WAL frames, frames checkpointed); a failure is retried
        // at the next turn.
        if let Err(error) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            row.get::<_, i64>(0)
        }) {
            tracing::warn!(%error, "WAL checkpoint failed");
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let (stopped, wake) = &*self.stop;
        if let Ok(mut guard) = stopped.lock() {
            *guard = true;
        }
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
