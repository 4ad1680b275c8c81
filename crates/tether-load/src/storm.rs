//! The reconnect storm (`--workload storm`): the whole fleet loses its
//! server at once and comes back.
//!
//! ```text
//!  window ─┬─ at `--storm-at` s: SIGTERM to tether-server (every device
//!          │  is closed with 1001), the same binary started again on
//!          │  the same address and data directory
//!          └─ every device: its link fails ─▶ tether-core's Backoff
//!             (the SDK's defaults: 1 s base, doubling, 60 s cap, full
//!             jitter; or no jitter) ─▶ connect, Hello with the same
//!             boot_id ─▶ Welcome.last_stored_seq: what it covers is
//!             stored (acknowledged), the rest is sent again
//! ```
//!
//! The figures: how long the server was away, how long after it was back
//! the fleet was connected again (every device, and the spread), the
//! handshakes refused or failed meanwhile, and the usual accounting after
//! the drain (every acknowledged record in the database once).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::rngs::SmallRng;
use tether_core::backoff::{Backoff, BackoffConfig, Jitter};
use tether_core::time::Instant as CoreInstant;

use crate::driver::{DeviceReport, Reconnect};
use crate::workload::{Phase, Shared};

/// A storm in a workload's window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Storm {
    /// Seconds into the window when the server restarts.
    pub at: f64,
    /// The devices' backoff draws with full jitter (the SDK's default);
    /// `false`: every device waits the plain exponential ceiling.
    pub jitter: bool,
}

/// What the storm did to the fleet.
#[derive(Debug, Default, Clone, Copy)]
pub struct StormOutcome {
    /// Seconds from the stop signal until the server listened again.
    pub away_seconds: f64,
    /// Devices that connected again after the restart.
    pub reconnected: usize,
    /// Seconds after the server was back until half, 99 % and all of
    /// those devices were connected again.
    pub p50: f64,
    /// See [`StormOutcome::p50`].
    pub p99: f64,
    /// See [`StormOutcome::p50`].
    pub all: f64,
    /// The most devices that connected again within one second.
    pub peak_per_second: usize,
    /// Connection attempts that failed from the stop on (refused while the
    /// server was away, or handshakes refused after).
    pub failed_attempts: u64,
}

/// When the server went away and came back, microseconds since the run's
/// base.
#[derive(Debug, Default, Clone, Copy)]
pub struct Restart {
    /// The stop signal.
    pub stopped_at: u64,
    /// Listening again.
    pub back_at: u64,
    /// Failed attempts counted before the stop.
    pub failed_before: u64,
}

/// The device's reconnect backoff for a storm run (`None`: no storm, the
/// device does not reconnect).
pub fn backoff(shared: &Shared) -> Option<Backoff> {
    let storm = shared.workload.storm?;
    let config = BackoffConfig::default().with_jitter(if storm.jitter {
        Jitter::Full
    } else {
        Jitter::None
    });
    let mut backoff = Backoff::new(config).ok()?;
    backoff.on_connected(now(shared));
    Some(backoff)
}

fn now(shared: &Shared) -> CoreInstant {
    CoreInstant::from_millis(shared.micros() / 1000)
}

/// Connects the device again, waiting the backoff's delay before each
/// attempt; `None` when the run stops first or the backoff gives up.
pub async fn reconnect<L, R: Reconnect<L>>(
    shared: &Shared,
    backoff: &mut Backoff,
    reconnect: &mut R,
    rng: &mut SmallRng,
    report: &mut DeviceReport,
) -> Option<(L, u32)> {
    loop {
        if *shared.phase.borrow() == Phase::Stop {
            return None;
        }
        let delay = backoff.on_failure(now(shared), rng).ok()?;
        tokio::time::sleep(Duration::from_millis(u64::from(delay.as_millis()))).await;
        match reconnect.reconnect().await {
            Ok(again) => {
                backoff.on_connected(now(shared));
                report.reconnected_at.push(shared.micros());
                return Some(again);
            }
            Err(_) => {
                report.failed_attempts += 1;
                shared.failed_attempts.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Adds up the devices' reconnections after `restart`.
pub fn outcome(restart: &Restart, devices: &[DeviceReport], shared: &Arc<Shared>) -> StormOutcome {
    let mut delays: Vec<u64> = devices
        .iter()
        .filter_map(|report| {
            report
                .reconnected_at
                .iter()
                .find(|at| **at >= restart.stopped_at)
        })
        .map(|at| at.saturating_sub(restart.back_at))
        .collect();
    delays.sort_unstable();
    let at = |p: f64| {
        let index = ((delays.len().saturating_sub(1)) as f64 * p).round() as usize;
        delays.get(index).map_or(0.0, |micros| *micros as f64 / 1e6)
    };
    let mut per_second = std::collections::HashMap::<u64, usize>::new();
    for delay in &delays {
        *per_second.entry(delay / 1_000_000).or_default() += 1;
    }
    StormOutcome {
        away_seconds: restart.back_at.saturating_sub(restart.stopped_at) as f64 / 1e6,
        reconnected: delays.len(),
        p50: at(0.5),
        p99: at(0.99),
        all: at(1.0),
        peak_per_second: per_second.values().copied().max().unwrap_or(0),
        failed_attempts: shared
            .failed_attempts
            .load(Ordering::Relaxed)
            .saturating_sub(restart.failed_before),
    }
}

/// Waits until the window is `storm.at` seconds old, then restarts the
/// server (see the module docs); returns the new server and when it was
/// away. `shared` is set when the first device starts; `pid` follows the
/// server's process.
pub async fn restart_in_window(
    server: crate::tether::Server,
    storm: Storm,
    shared: Arc<std::sync::OnceLock<Arc<Shared>>>,
    pid: Arc<std::sync::atomic::AtomicU32>,
    binary: std::path::PathBuf,
    data_dir: std::path::PathBuf,
    args: Vec<String>,
) -> Result<(crate::tether::Server, Restart), String> {
    let shared = loop {
        if let Some(shared) = shared.get() {
            break Arc::clone(shared);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let mut phase = shared.phase.clone();
    if phase
        .wait_for(|phase| *phase != Phase::Connect)
        .await
        .is_err()
    {
        return Ok((server, Restart::default()));
    }
    tokio::time::sleep(Duration::from_secs_f64(storm.at)).await;
    let failed_before = shared.failed_attempts.load(Ordering::Relaxed);
    let stopped_at = shared.micros();
    let server = server.restart(&binary, &data_dir, &args).await?;
    let back_at = shared.micros();
    pid.store(server.id(), Ordering::Relaxed);
    Ok((
        server,
        Restart {
            stopped_at,
            back_at,
            failed_before,
        },
    ))
}
