//! The cluster proof: three `tether-server` processes on one real
//! PostgreSQL and one real nats-server, behind a real HAProxy (Debian
//! packages, started on loopback by `tether-cluster-test`). A fleet of
//! simulated devices (tether-core's client, as `--demo` runs them)
//! publishes through HAProxy, receivers start on every node and follow the
//! channel; meanwhile one node is killed with SIGKILL and restarted,
//! another drained with SIGTERM (close 4017, reconnect elsewhere) and
//! restarted, and NATS is stopped for a few seconds. Then the accounting,
//! from the devices, the receivers and PostgreSQL: nothing acknowledged is
//! lost, nothing stored twice, each device's order kept, and every
//! receiver saw every stored event with contiguous offsets.
//!
//! The test command runs it for [`DEFAULT_SECONDS`]; `cargo xtask cluster
//! --minutes N` runs it longer (environment `TETHER_CLUSTER_SECONDS`).
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod common;
mod fleet;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::Receiver;
use fleet::{account, assert_nothing_lost, print, spawn_fleet};
use tether_cluster_test::{Haproxy, Nats, Postgres, free_port};
use tether_server::store::PgAdmin;
use tether_test_support::server_process::ServerProcess;
use tokio::sync::watch;

const BINARY: &str = env!("CARGO_BIN_EXE_tether-server");
const NODES: usize = 3;
const DEVICES: usize = 12;
const RECEIVERS_PER_NODE: usize = 1;
const CHANNEL: &str = "cluster/readings";
/// How long the fleet publishes in the test command.
const DEFAULT_SECONDS: u64 = 30;
/// A draining node waits this long for its clients to leave.
const DRAIN_TIMEOUT_MS: u64 = 5_000;

fn seconds() -> u64 {
    std::env::var("TETHER_CLUSTER_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SECONDS)
}

/// A node: its fixed port (HAProxy knows it), data directory and process.
struct Node {
    name: String,
    listen: String,
    dir: tempfile::TempDir,
    process: Option<ServerProcess>,
}

impl Node {
    async fn start(&mut self, database: &str, nats: &str) -> Result<Option<String>, String> {
        let (listen, dir, name) = (
            self.listen.clone(),
            self.dir.path().to_owned(),
            self.name.clone(),
        );
        let (database, nats) = (database.to_owned(), nats.to_owned());
        let drain = DRAIN_TIMEOUT_MS.to_string();
        let process = tokio::task::spawn_blocking(move || {
            ServerProcess::start_on(
                Path::new(BINARY),
                &dir,
                &listen,
                &[
                    "--database",
                    &database,
                    "--nats",
                    &nats,
                    "--node-name",
                    &name,
                    "--drain-timeout-ms",
                    &drain,
                    "--drain-spread-ms",
                    "500",
                ],
            )
        })
        .await
        .map_err(|error| error.to_string())?
        .map_err(|error| format!("{}: {error}", self.name))?;
        let key = process.first_start_key().map(str::to_owned);
        self.process = Some(process);
        Ok(key)
    }

    fn addr(&self) -> Result<SocketAddr, String> {
        self.listen.parse().map_err(|_| "bad address".to_owned())
    }
}

/// One receiver's side of the accounting.
#[derive(Debug, Default)]
struct ReceiverLog {
    name: String,
    /// Offsets delivered, in order.
    offsets: Vec<u64>,
    /// (device, reading) of each event, in offset order.
    readings: Vec<(String, u32)>,
    /// An offset that was not the next expected one: (expected, got).
    gaps: Vec<(u64, u64)>,
    connections: u32,
}

/// Follows `CHANNEL` from offset 1: first on `first` (its node), after a
/// disconnection through HAProxy at `front`, resuming after the last
/// offset it got; ends once it has `until` (set when the fleet is done).
async fn receiver(
    name: String,
    first: SocketAddr,
    front: SocketAddr,
    key: String,
    mut until: watch::Receiver<Option<u64>>,
) -> ReceiverLog {
    let mut log = ReceiverLog {
        name,
        ..ReceiverLog::default()
    };
    let mut next = 1u64;
    let mut addr = first;
    loop {
        if until.borrow().is_some_and(|end| next > end) {
            return log;
        }
        let connected = async {
            let mut receiver = Receiver::connect(addr, &key).await?;
            receiver.subscribe(CHANNEL, Some(next)).await?;
            Ok::<Receiver, common::BoxError>(receiver)
        }
        .await;
        addr = front;
        let Ok(mut receiver) = connected else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        log.connections += 1;
        loop {
            if until.borrow().is_some_and(|end| next > end) {
                return log;
            }
            let message = tokio::select! {
                message = receiver.recv() => message,
                _ = until.changed() => continue,
            };
            let Ok(message) = message else { break };
            let Some(event) = message.get("event") else {
                continue;
            };
            let Some(offset) = event["offset"].as_u64() else {
                continue;
            };
            if offset != next {
                log.gaps.push((next, offset));
            }
            next = next.max(offset + 1);
            log.offsets.push(offset);
            let device = event["device"].as_str().unwrap_or_default().to_owned();
            let n = event["payload"]["n"]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0);
            log.readings.push((device, n));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What PostgreSQL holds on `CHANNEL`.
struct Stored {
    /// Per device, the reading numbers in offset order.
    by_device: BTreeMap<String, Vec<u32>>,
    /// Every (device, reading), in offset order.
    all: Vec<(String, u32)>,
}

fn stored(postgres: &Postgres, database: &str) -> Result<Stored, String> {
    let text = postgres
        .psql(
            database,
            &format!(
                "SELECT m.device_id || ' ' || m.payload FROM messages m \
                 JOIN channels c ON c.id = m.channel_id WHERE c.name = '{CHANNEL}' \
                 ORDER BY m.\"offset\""
            ),
        )
        .map_err(|error| error.to_string())?;
    let mut by_device: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut all = Vec::new();
    for line in text.lines().filter(|line| !line.is_empty()) {
        let (device, payload) = line.split_once(' ').ok_or("a bad row")?;
        let value: serde_json::Value =
            serde_json::from_str(payload).map_err(|error| error.to_string())?;
        let n = value["n"]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or("a row without a reading number")?;
        by_device.entry(device.to_owned()).or_default().push(n);
        all.push((device.to_owned(), n));
    }
    Ok(Stored { by_device, all })
}

/// What the chaos loop did.
#[derive(Debug, Default)]
struct Chaos {
    kills: u32,
    drains: u32,
    nats_outages: u32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_across_three_nodes_under_kill_drain_and_nats_outage()
-> common::TestResult {
    let seconds = seconds();
    print(&format!(
        "cluster: {NODES} nodes behind HAProxy, {DEVICES} devices, {} receivers, {seconds} s",
        NODES * RECEIVERS_PER_NODE
    ));
    let postgres = tokio::task::block_in_place(Postgres::start)?;
    let database = format!("fleet_{}", std::process::id());
    let url = tokio::task::block_in_place(|| postgres.create_database(&database))?;
    let mut nats = tokio::task::block_in_place(Nats::start)?;
    let mut nodes = Vec::new();
    for index in 0..NODES {
        nodes.push(Node {
            name: format!("node-{index}"),
            listen: format!("127.0.0.1:{}", free_port()?),
            dir: tempfile::tempdir()?,
            process: None,
        });
    }
    let mut key = None;
    for node in &mut nodes {
        if let Some(first) = node.start(&url, &nats.url()).await? {
            key = Some(first);
        }
    }
    let key = key.ok_or("no node printed the first-start key")?;
    let ports: Vec<u16> = nodes
        .iter()
        .map(|node| node.addr().map(|addr| addr.port()))
        .collect::<Result<_, _>>()?;
    let haproxy = tokio::task::block_in_place(|| Haproxy::start(&ports))?;
    let front: SocketAddr = ([127, 0, 0, 1], haproxy.port()).into();
    // Health checks bring the nodes up (rise 2 × 500 ms).
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let admin = PgAdmin::connect(&url).await?;
    let tenant = admin.tenant_id("default").await?;
    let ids: Vec<String> = (1..=DEVICES)
        .map(|i| format!("node-fleet-{i:02}"))
        .collect();
    let devices: Vec<(String, String)> = admin
        .add_devices(tenant, &ids)
        .await?
        .into_iter()
        .zip(ids)
        .map(|(device, id)| (id, device.token))
        .collect();

    // Receivers on every node, then the fleet through HAProxy.
    let (until, until_rx) = watch::channel(None);
    let mut receivers = Vec::new();
    for node in &nodes {
        for index in 0..RECEIVERS_PER_NODE {
            receivers.push(tokio::spawn(receiver(
                format!("{}/r{index}", node.name),
                node.addr()?,
                front,
                key.clone(),
                until_rx.clone(),
            )));
        }
    }
    let (publishing, publishing_rx) = watch::channel(true);
    let fleet = spawn_fleet(
        format!("ws://{front}/v1/device"),
        devices,
        CHANNEL,
        publishing_rx,
    );

    // Chaos: kill -9 a node and restart it, drain another and restart it,
    // stop NATS for 3 s; over and over, each to the next node.
    let mut chaos = Chaos::default();
    let started = Instant::now();
    let mut step = 0usize;
    while started.elapsed() < Duration::from_secs(seconds) || step < 3 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        // Each kind of fault rotates over the nodes.
        let node = &mut nodes[(step / 3 + step) % NODES];
        match step % 3 {
            0 => {
                let process = node.process.take().ok_or("node not running")?;
                tokio::task::block_in_place(|| process.kill())?;
                chaos.kills += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
                node.start(&url, &nats.url()).await?;
            }
            1 => {
                let process = node.process.take().ok_or("node not running")?;
                let limit = Duration::from_millis(DRAIN_TIMEOUT_MS) + Duration::from_secs(10);
                let status = tokio::task::block_in_place(|| process.terminate(limit))?;
                assert!(status.success(), "{} drained with {status}", node.name);
                chaos.drains += 1;
                node.start(&url, &nats.url()).await?;
            }
            _ => {
                tokio::task::block_in_place(|| nats.stop())?;
                chaos.nats_outages += 1;
                tokio::time::sleep(Duration::from_secs(3)).await;
                tokio::task::block_in_place(|| nats.resume())?;
            }
        }
        step += 1;
    }

    // Calm: the fleet stops publishing and drains its outboxes.
    publishing.send_replace(false);
    let logs = tokio::task::spawn_blocking(move || fleet.join())
        .await?
        .map_err(|_| "the fleet thread panicked")?;
    let Stored { by_device, all } = tokio::task::block_in_place(|| stored(&postgres, &database))?;
    let last_offset = u64::try_from(all.len())?;
    // Every receiver must get to the last stored offset.
    until.send_replace(Some(last_offset));
    let mut receiver_logs = Vec::new();
    for task in receivers {
        receiver_logs.push(tokio::time::timeout(Duration::from_secs(60), task).await??);
    }

    let a = account(&logs, &by_device);
    print(&format!(
        "cluster: published {}, refused by full outbox {}, acked {}, stored {}, \
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
        "cluster: kill -9 restarts {}, drains {}, NATS outages {}; device connections {}, \
         link failures {}",
        chaos.kills, chaos.drains, chaos.nats_outages, a.connections, a.link_failures
    ));
    for log in &receiver_logs {
        print(&format!(
            "cluster: receiver {}: {} events delivered, {} connections, gaps {:?}",
            log.name,
            log.offsets.len(),
            log.connections,
            log.gaps
        ));
    }
    assert_nothing_lost(&logs, &a);
    // Every receiver: every stored event, once, in offset order.
    for log in &receiver_logs {
        assert!(log.gaps.is_empty(), "{}: gaps {:?}", log.name, log.gaps);
        assert_eq!(
            log.offsets,
            (1..=last_offset).collect::<Vec<u64>>(),
            "{}",
            log.name
        );
        assert_eq!(log.readings, all, "{}", log.name);
    }
    assert!(chaos.kills >= 1 && chaos.drains >= 1 && chaos.nats_outages >= 1);
    assert!(a.published > DEVICES * 10, "the fleet hardly published");
    drop(haproxy);
    Ok(())
}
