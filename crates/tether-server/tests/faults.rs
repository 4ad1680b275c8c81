//! Fault proof: a fleet of simulated devices (tether-core's client through
//! tether-host, as `--demo` runs them) publishes through a seeded fault
//! proxy (cuts with RST mid-frame, stalls without FIN, 1-byte writes,
//! latency, refused connects, blackhole outages) to a real `tether-server`
//! process that is killed with SIGKILL and restarted over and over. Then
//! the accounting, from the devices and from the SQLite database: nothing
//! acknowledged is lost, nothing is stored twice, each device's messages are
//! stored in the order it published them.
//!
//! The test command runs it for [`DEFAULT_SECONDS`]; `cargo xtask faults
//! --minutes N` runs it longer (environment `TETHER_FAULT_SECONDS`). The
//! seed is random and printed; `TETHER_FAULT_SEED` replays one.

// Tests are std code; the no_std import lints do not apply.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod fleet;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fleet::{DeviceLog, account, assert_nothing_lost, print, spawn_fleet};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tether_server::store::Admin;
use tether_test_support::fault_proxy::{FaultConfig, FaultProxy, ProxyStats};
use tether_test_support::server_process::ServerProcess;
use tokio::sync::watch;

const BINARY: &str = env!("CARGO_BIN_EXE_tether-server");

/// How long the fleet publishes under faults in the test command.
const DEFAULT_SECONDS: u64 = 45;
const DEVICES: usize = 16;
const CHANNEL: &str = "faults/readings";

/// What the database holds: per device, the reading numbers in offset order.
fn stored(database: &Path) -> BTreeMap<String, Vec<u32>> {
    let db =
        rusqlite::Connection::open_with_flags(database, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the database");
    let mut query = db
        .prepare(
            "SELECT m.device_id, m.payload FROM messages m \
             JOIN channels c ON c.id = m.channel_id WHERE c.name = ?1 ORDER BY m.offset",
        )
        .expect("query");
    let rows = query
        .query_map([CHANNEL], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })
        .expect("rows");
    let mut stored: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for row in rows {
        let (device, payload) = row.expect("row");
        let value: serde_json::Value = serde_json::from_str(&payload).expect("stored JSON");
        let n = value["n"]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .expect("a reading number");
        stored.entry(device).or_default().push(n);
    }
    stored
}

fn seconds() -> u64 {
    std::env::var("TETHER_FAULT_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SECONDS)
}

fn seed() -> u64 {
    std::env::var("TETHER_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random)
}

/// What the chaos loop did to the server and the proxy.
#[derive(Debug, Default)]
struct Chaos {
    kills: u32,
    refusals: u32,
    blackholes: u32,
}

#[test]
fn nothing_acknowledged_is_lost_under_faults_and_kill_9() {
    let seconds = seconds();
    let seed = seed();
    print(&format!(
        "faults: seed {seed} (replay with TETHER_FAULT_SEED={seed}), {seconds} s, {DEVICES} devices"
    ));
    let dir = tempfile::tempdir().expect("temporary directory");
    let data_dir = dir.path().to_owned();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (logs, chaos, proxy_stats) = runtime.block_on(run(&data_dir, seed, seconds));
    let database: PathBuf = data_dir.join("tether.db");
    let stored = stored(&database);
    let a = account(&logs, &stored);
    print(&format!(
        "faults: published {}, refused by full outbox {}, acked {}, stored {}, \
         lost acked {}, duplicates {}, out of order {}, stored but never published {}, \
         unacked at end {}, dropped {}",
        a.published,
        a.refused,
        a.acked,
        a.stored,
        a.lost_acked.len(),
        a.duplicates.len(),
        a.out_of_order.len(),
        a.never_published.len(),
        a.unacked,
        a.dropped,
    ));
    print(&format!(
        "faults: server kill -9 restarts {}, refused-connect windows {}, blackhole outages {}; \
         device connections {}, link failures {}",
        chaos.kills, chaos.refusals, chaos.blackholes, a.connections, a.link_failures
    ));
    print(&format!(
        "faults: proxy: {} connections, {} cut (RST), {} stalled, {} 1-byte writes, \
         {} delayed, {} reset for a refusing server, {} B up, {} B down",
        proxy_stats.connections,
        proxy_stats.cut,
        proxy_stats.stalled,
        proxy_stats.trickled,
        proxy_stats.delayed,
        proxy_stats.upstream_refused,
        proxy_stats.bytes_to_upstream,
        proxy_stats.bytes_to_client,
    ));
    assert_nothing_lost(&logs, &a);
    // The faults really happened.
    assert!(chaos.kills >= 3, "{chaos:?}");
    // (About 1 connection in 10 stalls and 1 in 5 is cut; a short run on a
    // slow machine may see no stall, but never none of the slow kinds.)
    assert!(proxy_stats.cut > 0, "{proxy_stats:?}");
    assert!(
        proxy_stats.stalled + proxy_stats.trickled + proxy_stats.delayed > 0,
        "{proxy_stats:?}"
    );
    assert!(a.published > DEVICES * 10, "the fleet hardly published");
}

async fn start_server(data_dir: &Path) -> ServerProcess {
    let data_dir = data_dir.to_owned();
    tokio::task::spawn_blocking(move || ServerProcess::start(Path::new(BINARY), &data_dir, &[]))
        .await
        .expect("start task")
        .expect("tether-server starts")
}

async fn run(data_dir: &Path, seed: u64, seconds: u64) -> (Vec<DeviceLog>, Chaos, ProxyStats) {
    let mut server = start_server(data_dir).await;
    let devices: Vec<(String, String)> = {
        let admin = Admin::open(&data_dir.join("tether.db")).expect("admin");
        let tenant = admin.tenant_id("default").expect("tenant default");
        (1..=DEVICES)
            .map(|i| {
                let id = format!("fault-{i:02}");
                let token = admin
                    .add_device(Some(tenant), Some(&id), false)
                    .expect("device")
                    .token;
                (id, token)
            })
            .collect()
    };
    let proxy = FaultProxy::start(
        server.addr(),
        seed,
        FaultConfig {
            stall_hold: Duration::from_secs(4),
            ..FaultConfig::default()
        },
    )
    .await
    .expect("proxy");
    let (publishing, publishing_rx) = watch::channel(true);
    let fleet = spawn_fleet(
        format!("ws://{}/v1/device", proxy.addr()),
        devices,
        CHANNEL,
        publishing_rx,
    );

    // The chaos loop: every other step kills the server (SIGKILL) and
    // restarts it; the others refuse connects, black out the link, or rest.
    let mut rng = StdRng::seed_from_u64(seed ^ 0x0063_6861_6f73);
    let mut chaos = Chaos::default();
    let started = Instant::now();
    let mut step = 0u32;
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(1000..3000))).await;
        step += 1;
        if step % 2 == 1 {
            server.kill().expect("kill -9");
            chaos.kills += 1;
            // Down for a moment: connects through the proxy are reset.
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..1000))).await;
            server = start_server(data_dir).await;
            proxy.set_upstream(server.addr());
            continue;
        }
        match rng.random_range(0..3) {
            0 => {
                proxy.set_refusing(true);
                chaos.refusals += 1;
                tokio::time::sleep(Duration::from_millis(rng.random_range(500..2000))).await;
                proxy.set_refusing(false);
            }
            1 => {
                proxy.set_blackhole(true);
                chaos.blackholes += 1;
                tokio::time::sleep(Duration::from_millis(rng.random_range(1000..4000))).await;
                proxy.set_blackhole(false);
            }
            _ => {}
        }
    }

    // Calm: clean links from now on, and the fleet drains its outboxes.
    proxy.set_config(FaultConfig::clean());
    publishing.send_replace(false);
    let logs = tokio::task::spawn_blocking(move || fleet.join().expect("fleet thread"))
        .await
        .expect("join task");
    // One more crash right after the last ack: those acks were durable too.
    server.kill().expect("kill -9");
    chaos.kills += 1;
    (logs, chaos, proxy.stats())
}

/// The accounting itself: it finds each kind of violation it is there for.
#[test]
fn the_accounting_finds_loss_duplicates_and_disorder() {
    let log = |id: &str, published: Vec<u32>, unacked| DeviceLog {
        id: id.to_owned(),
        published,
        unacked,
        ..DeviceLog::default()
    };
    let logs = [
        // 1..=5 published, 4 and 5 unacknowledged: 1..=3 acked.
        log("a", vec![1, 2, 3, 4, 5], 2),
        log("b", vec![1, 2, 3], 0),
    ];
    let stored = BTreeMap::from([
        // 2 is lost (acked, not stored); 5 stored though never acked is fine.
        ("a".to_owned(), vec![1, 3, 5]),
        // 2 twice, 3 before 2, 9 never published.
        ("b".to_owned(), vec![1, 3, 2, 2, 9]),
    ]);
    let a = account(&logs, &stored);
    assert_eq!((a.published, a.acked, a.stored, a.unacked), (8, 6, 8, 2));
    assert_eq!(a.lost_acked, [("a".to_owned(), 2)]);
    assert_eq!(a.duplicates, [("b".to_owned(), 2)]);
    assert_eq!(a.out_of_order, [("b".to_owned(), 2), ("b".to_owned(), 2)]);
    assert_eq!(a.never_published, [("b".to_owned(), 9)]);

    let clean = BTreeMap::from([
        ("a".to_owned(), vec![1, 2, 3]),
        ("b".to_owned(), vec![1, 2, 3]),
    ]);
    let a = account(&logs, &clean);
    assert!(a.lost_acked.is_empty() && a.duplicates.is_empty());
    assert!(a.out_of_order.is_empty() && a.never_published.is_empty());
}
