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

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::Receiver;
use fleet::{
    CommandLog, account, account_commands, assert_commands_kept, assert_nothing_lost, print,
    spawn_fleet,
};
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
/// The nodes' command timeout (`tether.toml`).
const COMMAND_TIMEOUT_MS: u64 = 3_000;
/// The commander sends one command this often.
const COMMAND_EVERY: Duration = Duration::from_millis(250);

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
        std::fs::write(
            self.dir.path().join("tether.toml"),
            format!("command_timeout_ms = {COMMAND_TIMEOUT_MS}\n"),
        )
        .map_err(|error| error.to_string())?;
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

/// Starts `n` nodes (`<prefix>-<i>`) on fixed free ports; returns them
/// and the first-start key one of them printed.
async fn start_nodes(
    prefix: &str,
    n: usize,
    database: &str,
    nats: &str,
) -> Result<(Vec<Node>, String), common::BoxError> {
    let mut nodes = Vec::new();
    let mut key = None;
    for index in 0..n {
        let mut node = Node {
            name: format!("{prefix}-{index}"),
            listen: format!("127.0.0.1:{}", free_port()?),
            dir: tempfile::tempdir()?,
            process: None,
        };
        if let Some(first) = node.start(database, nats).await? {
            key = Some(first);
        }
        nodes.push(node);
    }
    Ok((nodes, key.ok_or("no node printed the first-start key")?))
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

/// Sends a command every [`COMMAND_EVERY`] to the fleet's devices in turn
/// (`{"k": k}`, request id `k`): first from `first` (its node), after a
/// disconnection through HAProxy at `front`; a connection's unanswered
/// requests are `cut` when it drops. Ends when `commanding` turns false,
/// after the last answers came (or the command timeout passed).
async fn commander(
    first: SocketAddr,
    front: SocketAddr,
    key: String,
    devices: Vec<String>,
    mut commanding: watch::Receiver<bool>,
) -> CommandLog {
    let mut log = CommandLog::default();
    let mut k = 0u32;
    let mut addr = first;
    while *commanding.borrow() {
        let connected = Receiver::connect(addr, &key).await;
        addr = front;
        let Ok(mut receiver) = connected else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        log.connections += 1;
        let mut pending = BTreeSet::new();
        let mut tick = tokio::time::interval(COMMAND_EVERY);
        let mut stopping: Option<tokio::time::Instant> = None;
        let dropped = loop {
            if stopping.is_some_and(|at| pending.is_empty() || tokio::time::Instant::now() > at) {
                break false;
            }
            tokio::select! {
                _ = tick.tick(), if stopping.is_none() => {
                    k += 1;
                    let device = &devices[k as usize % devices.len()];
                    log.sent.insert(k, device.clone());
                    pending.insert(k);
                    let request = serde_json::json!({"v": 1, "send_command": {
                        "request_id": k, "device": device, "channel": "cmd", "payload": {"k": k}}});
                    if receiver.send_json(&request).await.is_err() {
                        break true;
                    }
                }
                message = receiver.recv() => match message {
                    Ok(message) => log.answer(&message, &mut pending),
                    Err(_) => break true,
                },
                _ = commanding.changed(), if stopping.is_none() => {
                    stopping = Some(tokio::time::Instant::now()
                        + Duration::from_millis(COMMAND_TIMEOUT_MS) + Duration::from_secs(2));
                }
            }
        };
        if dropped {
            log.cut.extend(std::mem::take(&mut pending));
            tokio::time::sleep(Duration::from_millis(100)).await;
        } else {
            // Left waiting: unanswered (the accounting says so).
            return log;
        }
    }
    log
}

/// After the faults: one command to every device from `addr` (node B),
/// each repeated (with a new request id) until its device answers `ok`.
async fn command_every_device(
    addr: SocketAddr,
    key: &str,
    devices: &[String],
    log: &mut CommandLog,
) -> common::TestResult {
    let mut receiver = Receiver::connect(addr, key).await?;
    let mut k = log.sent.keys().next_back().copied().unwrap_or(0);
    for device in devices {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            k += 1;
            log.sent.insert(k, device.clone());
            let mut pending = BTreeSet::from([k]);
            receiver
                .send_json(&serde_json::json!({"v": 1, "send_command": {
                    "request_id": k, "device": device, "channel": "cmd", "payload": {"k": k}}}))
                .await?;
            while !pending.is_empty() {
                let message = receiver.recv().await?;
                log.answer(&message, &mut pending);
            }
            if log.ok.contains_key(&k) {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{device} answers no command after the faults: {:?}",
                    log.failed.get(&k)
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    Ok(())
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
    let (mut nodes, key) = start_nodes("node", NODES, &url, &nats.url()).await?;
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
    let device_ids: Vec<String> = devices.iter().map(|(id, _)| id.clone()).collect();
    let fleet = spawn_fleet(
        format!("ws://{front}/v1/device"),
        devices,
        CHANNEL,
        publishing_rx,
    );
    // A receiver on node 1 commands the fleet (its devices are on every
    // node) through the faults.
    let (commanding, commanding_rx) = watch::channel(true);
    let commands = tokio::spawn(commander(
        nodes[1].addr()?,
        front,
        key.clone(),
        device_ids.clone(),
        commanding_rx,
    ));

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

    // Calm: the commander stops; every device, wherever it is now, still
    // answers a command from node 1; the fleet stops publishing and drains
    // its outboxes.
    commanding.send_replace(false);
    let mut command_log = commands.await?;
    command_every_device(nodes[1].addr()?, &key, &device_ids, &mut command_log).await?;
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
    let c = account_commands(&logs, &command_log);
    print(&format!(
        "cluster: commands sent {}, answered ok {}, failed {} (offline, timeout, …), \
         cut by a dropped connection {}, run by devices {}; commander connections {}",
        c.sent, c.ok, c.failed, c.cut, c.executed, command_log.connections
    ));
    assert_nothing_lost(&logs, &a);
    assert_commands_kept(&c);
    assert!(
        c.ok * 2 > c.sent,
        "fewer than half the commands came back: {c:?}"
    );
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

/// Records stored by the nodes so far (`tether_messages_stored_total` of
/// each; a stored record is the only kind a node acknowledges).
async fn stored_total(nodes: &[Node]) -> Result<u64, common::BoxError> {
    let mut total = 0;
    for node in nodes {
        let (_, text) = common::http_raw(node.addr()?, "GET", "/metrics", None, None).await?;
        total += text
            .lines()
            .find_map(|line| line.strip_prefix("tether_messages_stored_total "))
            .and_then(|value| value.trim().parse::<u64>().ok())
            .ok_or_else(|| format!("no tether_messages_stored_total in\n{text}"))?;
    }
    Ok(total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_while_postgresql_is_down() -> common::TestResult {
    const DEVICES: usize = 6;
    print("postgres outage: 2 nodes, 6 devices, PostgreSQL stopped for 4 s");
    // This test's own PostgreSQL: it stops it.
    let mut postgres = tokio::task::block_in_place(Postgres::start_restartable)?;
    let database = "outage";
    let url = tokio::task::block_in_place(|| postgres.create_database(database))?;
    let nats = tokio::task::block_in_place(Nats::start)?;
    let (nodes, key) = start_nodes("outage", 2, &url, &nats.url()).await?;
    let admin = PgAdmin::connect(&url).await?;
    let tenant = admin.tenant_id("default").await?;
    let ids: Vec<String> = (1..=DEVICES).map(|i| format!("outage-{i:02}")).collect();
    let tokens: Vec<String> = admin
        .add_devices(tenant, &ids)
        .await?
        .into_iter()
        .map(|device| device.token)
        .collect();
    drop(admin);

    // A receiver on node 1; half the fleet on each node.
    let (until, until_rx) = watch::channel(None);
    let follower = tokio::spawn(receiver(
        "outage-1/r0".into(),
        nodes[1].addr()?,
        nodes[1].addr()?,
        key.clone(),
        until_rx,
    ));
    let (publishing, publishing_rx) = watch::channel(true);
    let mut fleets = Vec::new();
    let devices: Vec<(String, String)> = ids.into_iter().zip(tokens).collect();
    for (index, half) in devices.chunks(DEVICES / 2).enumerate() {
        fleets.push(spawn_fleet(
            format!("ws://{}/v1/device", nodes[index % 2].addr()?),
            half.to_vec(),
            CHANNEL,
            publishing_rx.clone(),
        ));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    // PostgreSQL goes away as in a crash. Once the commits in flight
    // settled, no node stores (so none acknowledges) anything.
    tokio::task::block_in_place(|| postgres.stop())?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = stored_total(&nodes).await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = stored_total(&nodes).await?;
    assert_eq!(before, during, "a node stored while PostgreSQL was down");
    tokio::task::block_in_place(|| postgres.resume())?;
    tokio::time::sleep(Duration::from_secs(4)).await;

    publishing.send_replace(false);
    let mut logs = Vec::new();
    for fleet in fleets {
        logs.extend(
            tokio::task::spawn_blocking(move || fleet.join())
                .await?
                .map_err(|_| "the fleet thread panicked")?,
        );
    }
    let Stored { by_device, all } = tokio::task::block_in_place(|| stored(&postgres, database))?;
    let last_offset = u64::try_from(all.len())?;
    until.send_replace(Some(last_offset));
    let log = tokio::time::timeout(Duration::from_secs(60), follower).await??;
    let a = account(&logs, &by_device);
    let after = stored_total(&nodes).await?;
    print(&format!(
        "postgres outage: published {}, acked {}, stored {} ({before} before the outage, \
         {} after it), lost acked {}, duplicates {}, unacked at end {}, dropped {}; \
         device connections {}; receiver: {} events, gaps {:?}",
        a.published,
        a.acked,
        a.stored,
        after - during,
        a.lost_acked.len(),
        a.duplicates.len(),
        a.unacked,
        a.dropped,
        a.connections,
        log.offsets.len(),
        log.gaps
    ));
    assert_nothing_lost(&logs, &a);
    assert!(
        after > during,
        "nothing was stored after PostgreSQL came back"
    );
    assert!(log.gaps.is_empty(), "gaps {:?}", log.gaps);
    assert_eq!(log.offsets, (1..=last_offset).collect::<Vec<u64>>());
    assert_eq!(log.readings, all);
    Ok(())
}
