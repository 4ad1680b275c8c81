//! A fleet of simulated devices for the fault proofs (`faults.rs`, one
//! node under a fault proxy; `cluster_fleet.rs`, three nodes behind
//! HAProxy): tether-core's client through tether-host, as `--demo` runs
//! them, each logging what it published and what was acknowledged; and
//! the accounting of those logs against what the database stored.
#![allow(dead_code, unreachable_pub)]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::rc::Rc;
use std::time::Duration;

use serde::Serialize;
use tether_core::backoff::BackoffConfig;
use tether_core::client::{self, ClientConfig, NoCommands, Resources};
use tether_core::outbox::RamOutbox;
use tether_core::session::SessionConfig;
use tether_core::time::Duration as CoreDuration;
use tether_host::board::TokioBoard;
use tokio::sync::watch;

/// Each device publishes one reading per tick.
pub const TICK: Duration = Duration::from_millis(100);

/// After the faults end, the fleet has this long to get every reading
/// acknowledged.
pub const DRAIN: Duration = Duration::from_secs(40);

/// 16 KiB of outbox: about 500 readings, 50 s of outage at 10 readings/s.
type FleetBoard = TokioBoard<RamOutbox<16384>>;

#[derive(Serialize)]
pub struct Reading {
    pub n: u32,
}

/// One device's side of the accounting.
#[derive(Debug, Default, Clone)]
pub struct DeviceLog {
    pub id: String,
    /// Reading numbers the outbox took, in publish order (their sequence
    /// numbers are increasing).
    pub published: Vec<u32>,
    /// Readings refused by a full outbox (never published).
    pub refused: u32,
    /// Still unacknowledged at the end.
    pub unacked: usize,
    /// Dropped unacknowledged by the outbox (must be 0: the policy rejects).
    pub dropped: u32,
    pub connections: u32,
    pub link_failures: u32,
    pub error: Option<String>,
}

impl DeviceLog {
    /// Acks are cumulative and the outbox keeps the unacknowledged tail,
    /// so the acknowledged readings are the first `published - unacked`.
    pub fn acked(&self) -> &[u32] {
        let acked = self.published.len().saturating_sub(self.unacked);
        self.published.get(..acked).unwrap_or_default()
    }
}

pub fn session_config() -> SessionConfig {
    // Time scaled down so that a minute holds many outages: dead links are
    // noticed within about 3 s, and backoff stays under 1 s.
    SessionConfig::new()
        .with_connect_timeout(CoreDuration::from_secs(3))
        .with_keepalive_interval(CoreDuration::from_secs(1))
        .with_pong_timeout(CoreDuration::from_secs(2))
        .with_backoff(
            BackoffConfig::new()
                .with_base(CoreDuration::from_millis(100))
                .with_cap(CoreDuration::from_secs(1))
                .with_healthy_after(CoreDuration::from_secs(2)),
        )
}

pub async fn device(
    url: String,
    id: String,
    token: String,
    channel: &'static str,
    publishing: watch::Receiver<bool>,
    log: Rc<RefCell<DeviceLog>>,
) {
    let authorization = format!("Bearer {token}");
    let config = ClientConfig::new(&url, &id, "faults-1.0.0")
        .with_authorization(&authorization)
        .with_session(session_config())
        .with_send_timeout(CoreDuration::from_secs(2));
    let board = TokioBoard::new().with_outbox(RamOutbox::<16384>::new());
    let mut resources: Resources<FleetBoard> = Resources::new();
    let (client, mut runner) = match client::new(board, config, &mut resources) {
        Ok(pair) => pair,
        Err(error) => {
            log.borrow_mut().error = Some(error.to_string());
            return;
        }
    };
    let publish = async {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n = 0u32;
        while *publishing.borrow() {
            ticker.tick().await;
            n += 1;
            match client.publish(channel, &Reading { n }).await {
                Ok(_) => log.borrow_mut().published.push(n),
                Err(_) => log.borrow_mut().refused += 1,
            }
        }
        let deadline = tokio::time::Instant::now() + DRAIN;
        while client.stats().outbox_len > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let stats = client.stats();
        let mut log = log.borrow_mut();
        log.unacked = stats.outbox_len;
        log.dropped = stats.dropped;
        log.connections = stats.session.connections;
        log.link_failures = stats.session.link_failures;
    };
    tokio::select! {
        stopped = runner.run(NoCommands) => {
            log.borrow_mut().error = Some(format!("the server refused the device: {}", stopped.0));
        }
        () = publish => {}
    }
}

/// Runs the fleet on its own thread (the client is single-threaded, as on
/// a chip) until publishing stops and the outboxes drained.
pub fn spawn_fleet(
    url: String,
    devices: Vec<(String, String)>,
    channel: &'static str,
    publishing: watch::Receiver<bool>,
) -> std::thread::JoinHandle<Vec<DeviceLog>> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("fleet runtime");
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, async move {
            let mut tasks = Vec::new();
            let mut logs = Vec::new();
            for (id, token) in devices {
                let log = Rc::new(RefCell::new(DeviceLog {
                    id: id.clone(),
                    ..DeviceLog::default()
                }));
                logs.push(Rc::clone(&log));
                tasks.push(tokio::task::spawn_local(device(
                    url.clone(),
                    id,
                    token,
                    channel,
                    publishing.clone(),
                    log,
                )));
            }
            for task in tasks {
                let _ = task.await;
            }
            logs.iter().map(|log| log.borrow().clone()).collect()
        })
    })
}

#[derive(Debug, Default)]
pub struct Accounting {
    pub published: usize,
    pub refused: u64,
    pub acked: usize,
    pub stored: usize,
    pub lost_acked: Vec<(String, u32)>,
    pub duplicates: Vec<(String, u32)>,
    pub out_of_order: Vec<(String, u32)>,
    pub never_published: Vec<(String, u32)>,
    pub unacked: usize,
    pub dropped: u64,
    pub connections: u64,
    pub link_failures: u64,
}

pub fn account(logs: &[DeviceLog], stored: &BTreeMap<String, Vec<u32>>) -> Accounting {
    let mut a = Accounting::default();
    for log in logs {
        let empty = Vec::new();
        let stored = stored.get(&log.id).unwrap_or(&empty);
        a.published += log.published.len();
        a.refused += u64::from(log.refused);
        a.acked += log.acked().len();
        a.stored += stored.len();
        a.unacked += log.unacked;
        a.dropped += u64::from(log.dropped);
        a.connections += u64::from(log.connections);
        a.link_failures += u64::from(log.link_failures);
        let published: BTreeSet<u32> = log.published.iter().copied().collect();
        let mut seen = BTreeSet::new();
        let mut last = 0;
        for &n in stored {
            if !seen.insert(n) {
                a.duplicates.push((log.id.clone(), n));
            }
            if n <= last {
                a.out_of_order.push((log.id.clone(), n));
            }
            last = last.max(n);
            if !published.contains(&n) {
                a.never_published.push((log.id.clone(), n));
            }
        }
        for &n in log.acked() {
            if !seen.contains(&n) {
                a.lost_acked.push((log.id.clone(), n));
            }
        }
    }
    a
}

/// The fleet's promise: no device failed, everything acknowledged was
/// stored once and in order, and every reading was published, kept and
/// acknowledged within [`DRAIN`].
pub fn assert_nothing_lost(logs: &[DeviceLog], a: &Accounting) {
    for log in logs {
        assert!(log.error.is_none(), "{}: {:?}", log.id, log.error);
    }
    assert!(
        a.lost_acked.is_empty(),
        "acknowledged but not stored: {:?}",
        a.lost_acked
    );
    assert!(a.duplicates.is_empty(), "stored twice: {:?}", a.duplicates);
    assert!(
        a.out_of_order.is_empty(),
        "stored out of order: {:?}",
        a.out_of_order
    );
    assert!(a.never_published.is_empty(), "{:?}", a.never_published);
    assert_eq!(a.dropped, 0, "the outbox dropped unacknowledged readings");
    assert_eq!(
        a.unacked, 0,
        "not every reading was acknowledged within {DRAIN:?}"
    );
    assert_eq!(a.stored, a.published);
}

/// Prints past the test harness's capture, so the accounting is in the log
/// of a passing run too.
pub fn print(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}
