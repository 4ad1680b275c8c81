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
use tether_core::client::{self, ClientConfig, CommandResult, Resources};
use tether_core::outbox::RamOutbox;
use tether_core::session::SessionConfig;
use tether_core::time::Duration as CoreDuration;
use tether_host::board::TokioBoard;
use tether_proto::{Command, CommandStatus};
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
    /// Numbers (`{"k": n}`) of the commands it executed, in order.
    pub commands: Vec<u32>,
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
    // Commands (`{"k": n}`, from `cluster_fleet.rs`'s commander) are
    // logged as executed and answered with the same number.
    let executed = Rc::clone(&log);
    let handler = move |command: &Command<'_>, result: &mut CommandResult<'_>| {
        let k = command
            .payload
            .as_str()
            .and_then(|json| serde_json::from_str::<serde_json::Value>(json).ok())
            .and_then(|value| value["k"].as_u64())
            .and_then(|k| u32::try_from(k).ok());
        let Some(k) = k else {
            return CommandStatus::Rejected;
        };
        executed.borrow_mut().commands.push(k);
        match result.set(&Reading { n: k }) {
            Ok(()) => CommandStatus::Ok,
            Err(_) => CommandStatus::Failed,
        }
    };
    tokio::select! {
        stopped = runner.run(handler) => {
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

/// A commander's side of the command accounting: each request `k` sends
/// `{"k": k}` to one device, which answers `{"n": k}`.
#[derive(Debug, Default)]
pub struct CommandLog {
    /// Request id → the device it went to.
    pub sent: BTreeMap<u32, String>,
    /// Request id → the number in the device's answer (status `ok`).
    pub ok: BTreeMap<u32, u64>,
    /// Request id → an error (`device_offline`, `command_timeout`, …) or
    /// a status other than `ok`.
    pub failed: BTreeMap<u32, String>,
    /// Requests whose connection dropped before their answer: outcome
    /// unknown (the device may or may not have run them).
    pub cut: BTreeSet<u32>,
    /// Requests answered more than once.
    pub answered_twice: Vec<u32>,
    /// Answers to no request of this commander.
    pub unexpected: Vec<String>,
    /// The commander's connections.
    pub connections: u32,
}

impl CommandLog {
    /// Records one message from the server; `pending` holds the requests
    /// of the current connection still waiting for an answer.
    pub fn answer(&mut self, message: &serde_json::Value, pending: &mut BTreeSet<u32>) {
        let (id, outcome) = if let Some(result) = message.get("command_result") {
            let status = result["status"].as_str().unwrap_or_default();
            let n = result["result"]["n"].as_u64();
            let outcome = match (status, n) {
                ("ok", Some(n)) => Ok(n),
                _ => Err(format!("{status}: {}", result["result"])),
            };
            (result["request_id"].as_u64(), outcome)
        } else if let Some(error) = message.get("error") {
            (error["request_id"].as_u64(), Err(error["code"].to_string()))
        } else {
            return;
        };
        let Some(id) = id.and_then(|id| u32::try_from(id).ok()) else {
            self.unexpected.push(message.to_string());
            return;
        };
        if !self.sent.contains_key(&id) {
            self.unexpected.push(message.to_string());
            return;
        }
        if !pending.remove(&id) {
            self.answered_twice.push(id);
            return;
        }
        match outcome {
            Ok(n) => {
                self.ok.insert(id, n);
            }
            Err(why) => {
                self.failed.insert(id, why);
            }
        }
    }
}

/// The commands' accounting against what the devices ran.
#[derive(Debug, Default)]
pub struct CommandAccounting {
    pub sent: usize,
    pub ok: usize,
    pub failed: usize,
    pub cut: usize,
    pub executed: usize,
    /// Sent on a connection that stayed, and never answered.
    pub unanswered: Vec<u32>,
    /// Answered `ok` but not run by the device it was sent to, or with
    /// another number.
    pub ok_not_executed: Vec<u32>,
    /// Run twice by a device.
    pub executed_twice: Vec<(String, u32)>,
    /// Run by a device it was not sent to.
    pub executed_not_sent: Vec<(String, u32)>,
    pub answered_twice: Vec<u32>,
    pub unexpected: Vec<String>,
}

pub fn account_commands(logs: &[DeviceLog], commands: &CommandLog) -> CommandAccounting {
    let mut a = CommandAccounting {
        sent: commands.sent.len(),
        ok: commands.ok.len(),
        failed: commands.failed.len(),
        cut: commands.cut.len(),
        answered_twice: commands.answered_twice.clone(),
        unexpected: commands.unexpected.clone(),
        ..CommandAccounting::default()
    };
    let mut executed: BTreeMap<u32, &str> = BTreeMap::new();
    for log in logs {
        a.executed += log.commands.len();
        for &k in &log.commands {
            if executed.insert(k, &log.id).is_some() {
                a.executed_twice.push((log.id.clone(), k));
            }
            if commands.sent.get(&k).map(String::as_str) != Some(log.id.as_str()) {
                a.executed_not_sent.push((log.id.clone(), k));
            }
        }
    }
    for (&k, &n) in &commands.ok {
        if u64::from(k) != n
            || executed.get(&k) != commands.sent.get(&k).map(String::as_str).as_ref()
        {
            a.ok_not_executed.push(k);
        }
    }
    a.unanswered = commands
        .sent
        .keys()
        .copied()
        .filter(|k| {
            !commands.ok.contains_key(k)
                && !commands.failed.contains_key(k)
                && !commands.cut.contains(k)
        })
        .collect();
    a
}

/// Commands' promise: every answer `ok` is the device's (it ran the
/// command, once); no command ran twice or on another device; every
/// command sent on a connection that stayed got exactly one answer.
pub fn assert_commands_kept(a: &CommandAccounting) {
    assert!(
        a.unanswered.is_empty(),
        "never answered: {:?}",
        a.unanswered
    );
    assert!(
        a.ok_not_executed.is_empty(),
        "answered ok but not run by its device: {:?}",
        a.ok_not_executed
    );
    assert!(
        a.executed_twice.is_empty(),
        "run twice: {:?}",
        a.executed_twice
    );
    assert!(
        a.executed_not_sent.is_empty(),
        "run by another device: {:?}",
        a.executed_not_sent
    );
    assert!(
        a.answered_twice.is_empty(),
        "answered twice: {:?}",
        a.answered_twice
    );
    assert!(
        a.unexpected.is_empty(),
        "unexpected answers: {:?}",
        a.unexpected
    );
}
