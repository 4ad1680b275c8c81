//! Several nodes as one relay: real PostgreSQL, nats-server and HAProxy
//! (Debian packages, started by `tether-cluster-test` on loopback ports in
//! temporary directories), with nodes of this crate's server on one shared
//! database and one NATS. A device on one node, a receiver on another:
//! events cross nodes in offset order, commands find the device's node and
//! the answer comes back, a device that moves to another node closes its
//! old session there, receivers catch up once NATS comes back after an
//! outage, HAProxy in front spreads clients over the nodes, and a person's
//! sign-in works on every node and ends on every node.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod common;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::accounts::Person;
use common::{BoxError, Device, Downlink, Receiver, TestResult, close_code, offsets, test_limits};
use serde_json::json;
use tether_cluster_test::{Haproxy, Nats, Postgres};
use tether_server::store::{ChannelFilter, PgAdmin};
use tether_server::{Config, Server};

/// One PostgreSQL for every test of this binary (one database per test).
fn postgres() -> Result<&'static Postgres, BoxError> {
    static SERVER: OnceLock<Result<Postgres, String>> = OnceLock::new();
    SERVER
        .get_or_init(|| Postgres::start().map_err(|error| error.to_string()))
        .as_ref()
        .map_err(|error| error.clone().into())
}

/// A cluster of `n` nodes on a fresh database and a NATS of its own.
struct Cluster {
    nodes: Vec<Server>,
    /// Kept for `stop`/`resume` and dropped last: one server, or the
    /// servers of a NATS cluster.
    nats: Vec<Nats>,
    admin: PgAdmin,
    url: String,
    /// Receiver key of tenant `default` (read+command).
    key: String,
    /// Node `i` knows only NATS server `i` (modulo their number), so one
    /// server's death takes only its nodes off NATS.
    pinned: bool,
    _dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    async fn start(n: usize) -> Result<Cluster, BoxError> {
        Cluster::start_with(n, 1).await
    }

    /// `n` nodes and a NATS cluster of `nats` servers; node `i` is given
    /// every server's URL, starting from server `i`.
    async fn start_with(n: usize, nats: usize) -> Result<Cluster, BoxError> {
        Cluster::start_inner(n, nats, false).await
    }

    /// `n` nodes and as many NATS servers (one cluster), node `i` given
    /// only server `i`.
    async fn start_pinned(n: usize) -> Result<Cluster, BoxError> {
        Cluster::start_inner(n, n, true).await
    }

    async fn start_inner(n: usize, nats: usize, pinned: bool) -> Result<Cluster, BoxError> {
        static NEXT: AtomicU32 = AtomicU32::new(1);
        let database = format!(
            "cluster_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let url = tokio::task::block_in_place(|| postgres()?.create_database(&database))?;
        let nats = if nats == 1 {
            vec![tokio::task::block_in_place(Nats::start)?]
        } else {
            tokio::task::block_in_place(|| Nats::start_cluster(nats))?
        };
        let mut cluster = Cluster {
            nodes: Vec::new(),
            admin: PgAdmin::connect(&url).await?,
            nats,
            url,
            key: String::new(),
            pinned,
            _dirs: Vec::new(),
        };
        for index in 0..n {
            let node = cluster.start_node(&format!("node-{index}")).await?;
            if let Some(key) = node.first_start_key() {
                cluster.key = key.to_owned();
            }
            cluster.nodes.push(node);
        }
        if cluster.key.is_empty() {
            return Err("no node made the first-start key".into());
        }
        Ok(cluster)
    }

    async fn start_node(&mut self, name: &str) -> Result<Server, BoxError> {
        let dir = tempfile::tempdir()?;
        let mut config = Config::new(dir.path().to_owned(), "127.0.0.1:0".parse()?)
            .with_limits(test_limits())
            .with_cluster(
                self.url.clone(),
                Some(self.node_nats_urls(self.nodes.len())),
            );
        config.node_name = Some(name.to_owned());
        self._dirs.push(dir);
        Ok(Server::start(config).await?)
    }

    /// The NATS URLs node `node` is given.
    fn node_nats_urls(&self, node: usize) -> String {
        if self.pinned {
            self.nats[node % self.nats.len()].url()
        } else {
            self.nats_urls(node)
        }
    }

    /// Every NATS server's URL, comma-separated, starting from server
    /// `first` (modulo their number).
    fn nats_urls(&self, first: usize) -> String {
        let n = self.nats.len();
        (0..n)
            .map(|i| self.nats[(first + i) % n].url())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn addr(&self, node: usize) -> std::net::SocketAddr {
        self.nodes[node].local_addr()
    }

    async fn add_device(&self, id: &str) -> Result<String, BoxError> {
        let tenant = self.admin.tenant_id("default").await?;
        Ok(self
            .admin
            .add_device(Some(tenant), Some(id), false, None)
            .await?
            .token)
    }

    async fn shutdown(self) {
        for node in self.nodes {
            node.shutdown().await;
        }
    }
}

/// Publishes `seqs` on `channel` and waits for the ack of the last.
async fn publish_all(
    device: &mut Device,
    seqs: std::ops::RangeInclusive<u32>,
    channel: &str,
) -> TestResult {
    let last = *seqs.end();
    for seq in seqs {
        device.publish(seq, channel, &seq.to_string()).await?;
    }
    device.wait_ack(last).await
}

/// The events' payloads (the seqs the test device published).
fn payloads(events: &[serde_json::Value]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| e["payload"].as_u64())
        .collect()
}

/// Whether node `node` lists device `id` as online (`GET /v1/devices`).
async fn online(cluster: &Cluster, node: usize, id: &str) -> Result<Option<bool>, BoxError> {
    let (status, body) = common::http(
        cluster.addr(node),
        "GET",
        "/v1/devices",
        Some(&cluster.key),
        None,
    )
    .await?;
    if status != 200 {
        return Err(format!("GET /v1/devices: {status} {body}").into());
    }
    Ok(body["devices"]
        .as_array()
        .and_then(|devices| devices.iter().find(|device| device["id"] == id))
        .and_then(|device| device["online"].as_bool()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_commands_cross_nodes() -> TestResult {
    let cluster = Cluster::start(2).await?;
    let token = cluster.add_device("lamp").await?;

    // A receiver on node 1 subscribes before the device on node 0 speaks.
    let mut receiver = Receiver::connect(cluster.addr(1), &cluster.key).await?;
    receiver.subscribe("temp", None).await?;
    let mut device = Device::connect(cluster.addr(0), &token).await?;
    device.hello("lamp", 1).await?;
    publish_all(&mut device, 1..=50, "temp").await?;
    let events = receiver.events(50).await?;
    assert_eq!(offsets(&events), (1..=50).collect::<Vec<u64>>());
    assert_eq!(payloads(&events), (1..=50).collect::<Vec<u64>>());
    assert!(events.iter().all(|e| e["device"] == "lamp"), "{events:?}");

    // A late receiver on node 1 reads the history from PostgreSQL, then
    // follows live events from node 0.
    let mut late = Receiver::connect(cluster.addr(1), &cluster.key).await?;
    late.subscribe("temp", Some(40)).await?;
    publish_all(&mut device, 51..=60, "temp").await?;
    let caught_up = late.events(21).await?;
    assert_eq!(offsets(&caught_up), (40..=60).collect::<Vec<u64>>());
    assert_eq!(
        offsets(&receiver.events(10).await?),
        (51..=60).collect::<Vec<u64>>()
    );

    // A command from node 1 reaches the device on node 0; its answer comes
    // back to node 1.
    receiver
        .send_json(&json!({"v": 1, "send_command": {"request_id": 7, "device": "lamp", "channel": "led", "payload": {"on": true}}}))
        .await?;
    let Downlink::Command {
        id,
        channel,
        payload,
    } = device.recv().await?
    else {
        return Err("expected a command".into());
    };
    assert_eq!(
        (channel.as_str(), payload.as_str()),
        ("led", "{\"on\":true}")
    );
    device.command_ack(id, "{\"brightness\":80}").await?;
    let result = receiver.recv().await?;
    assert_eq!(result["command_result"]["request_id"], 7, "{result}");
    assert_eq!(result["command_result"]["status"], "ok", "{result}");
    assert_eq!(
        result["command_result"]["result"],
        json!({"brightness": 80})
    );

    // Over HTTP on node 1 too.
    let addr = cluster.addr(1);
    let key = cluster.key.clone();
    let post = tokio::spawn(async move {
        common::http(
            addr,
            "POST",
            "/v1/devices/lamp/commands",
            Some(&key),
            Some(&json!({"channel": "led", "payload": false})),
        )
        .await
    });
    let Downlink::Command { id, payload, .. } = device.recv().await? else {
        return Err("expected a command".into());
    };
    assert_eq!(payload, "false");
    device.command_ack(id, "null").await?;
    let (status, body) = post.await??;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"status": "ok", "result": null}));

    // Presence: node 1 lists the device as online while node 0 holds it,
    // and as offline once it left.
    assert_eq!(online(&cluster, 1, "lamp").await?, Some(true));
    drop(device);
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while online(&cluster, 1, "lamp").await? != Some(false) {
        if tokio::time::Instant::now() > deadline {
            return Err("node 1 still lists the device as online".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A device connected to no node is offline on every node.
    let (status, body) = common::http(
        cluster.addr(1),
        "POST",
        "/v1/devices/lamp/commands",
        Some(&cluster.key),
        Some(&json!({"channel": "led", "payload": 1})),
    )
    .await?;
    assert_eq!(status, 409, "{body}");
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_moves_to_another_node_closes_its_old_session() -> TestResult {
    let cluster = Cluster::start(2).await?;
    let token = cluster.add_device("mover").await?;
    let mut receiver = Receiver::connect(cluster.addr(0), &cluster.key).await?;
    receiver.subscribe("temp", None).await?;

    let mut old = Device::connect(cluster.addr(0), &token).await?;
    old.hello("mover", 1).await?;
    publish_all(&mut old, 1..=5, "temp").await?;

    // The device comes back on node 1 (its old connection on node 0 is
    // half-open, as after a WiFi loss): node 0 closes the old session with
    // 4014 (session_replaced), and the new one resumes after seq 5.
    let mut new = Device::connect(cluster.addr(1), &token).await?;
    let (last_stored, _) = new.hello("mover", 1).await?;
    assert_eq!(last_stored, 5);
    assert_eq!(close_code(&mut old.ws).await?, 4014);
    publish_all(&mut new, 6..=10, "temp").await?;

    // Nothing twice, nothing out of order, across the move.
    let events = receiver.events(10).await?;
    assert_eq!(offsets(&events), (1..=10).collect::<Vec<u64>>());
    assert_eq!(payloads(&events), (1..=10).collect::<Vec<u64>>());
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_catch_up_after_a_nats_outage() -> TestResult {
    let mut cluster = Cluster::start(2).await?;
    let token = cluster.add_device("sensor").await?;
    let mut receiver = Receiver::connect(cluster.addr(1), &cluster.key).await?;
    receiver.subscribe("temp", None).await?;
    let mut device = Device::connect(cluster.addr(0), &token).await?;
    device.hello("sensor", 1).await?;
    publish_all(&mut device, 1..=10, "temp").await?;
    assert_eq!(
        offsets(&receiver.events(10).await?),
        (1..=10).collect::<Vec<u64>>()
    );

    // NATS goes away: node 0 keeps storing and acknowledging.
    tokio::task::block_in_place(|| cluster.nats[0].stop())?;
    publish_all(&mut device, 11..=30, "temp").await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::block_in_place(|| cluster.nats[0].resume())?;

    // /metrics of a node, one counter.
    let metric = |node: usize, name: &'static str| {
        let addr = cluster.addr(node);
        async move {
            let (_, text) = common::http_raw(addr, "GET", "/metrics", None, None).await?;
            let value = text
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|value| value.trim().parse::<u64>().ok())
                .ok_or_else(|| format!("no {name} in\n{text}"))?;
            Ok::<u64, BoxError>(value)
        }
    };
    // Once it is back, the receiver on node 1 gets what it missed from
    // PostgreSQL and the live events after it, with no gap.
    publish_all(&mut device, 31..=40, "temp").await?;
    let mut events = receiver.events(30).await?;
    // Live events cross NATS again: both nodes reconnect and node 1
    // subscribes again at their own pace, and whatever was published
    // before that reached node 1 through the database (above). So publish
    // on, one event at a time, until node 1 counts one received from node
    // 0 (bounded), every one still in order.
    let received = "tether_nats_events_total{kind=\"received\"} ";
    let before = metric(1, received).await?;
    let mut last = 40;
    while metric(1, received).await? == before {
        assert!(last < 440, "no event crossed NATS after the outage");
        last += 1;
        publish_all(&mut device, last..=last, "temp").await?;
        events.extend(receiver.events(1).await?);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let expected: Vec<u64> = (11..=u64::from(last)).collect();
    assert_eq!(offsets(&events), expected);
    assert_eq!(payloads(&events), expected);
    // /metrics says so: node 0 published, node 1 resynchronised its
    // receivers after its reconnection to NATS.
    assert!(metric(0, "tether_nats_events_total{kind=\"published\"} ").await? > 0);
    assert!(metric(1, "tether_nats_resyncs_total ").await? > 0);
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_spreads_clients_over_the_nodes() -> TestResult {
    let cluster = Cluster::start(2).await?;
    let ports: Vec<u16> = (0..2).map(|node| cluster.addr(node).port()).collect();
    let haproxy = tokio::task::block_in_place(|| Haproxy::start(&ports))?;
    let front: std::net::SocketAddr = ([127, 0, 0, 1], haproxy.port()).into();
    // Wait for the health checks to bring both nodes up.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Devices and receivers through the one address: round robin puts
    // them on both nodes, and every receiver sees every device's events.
    let mut receivers = Vec::new();
    for _ in 0..2 {
        let mut receiver = Receiver::connect(front, &cluster.key).await?;
        receiver.subscribe("temp", None).await?;
        receivers.push(receiver);
    }
    let mut devices = Vec::new();
    for index in 0..4u64 {
        let id = format!("d{index}");
        let token = cluster.add_device(&id).await?;
        let mut device = Device::connect(front, &token).await?;
        device.hello(&id, 1).await?;
        devices.push(device);
    }
    for device in &mut devices {
        publish_all(device, 1..=5, "temp").await?;
    }
    for receiver in &mut receivers {
        let events = receiver.events(20).await?;
        assert_eq!(offsets(&events), (1..=20).collect::<Vec<u64>>());
        for index in 0..4 {
            let id = format!("d{index}");
            let mine: Vec<u64> = events
                .iter()
                .filter(|e| e["device"] == id.as_str())
                .filter_map(|e| e["payload"].as_u64())
                .collect();
            assert_eq!(mine, (1..=5).collect::<Vec<u64>>(), "{id}");
        }
    }
    // Both nodes served some of them.
    for node in 0..2 {
        let (_, text) = common::http_raw(cluster.addr(node), "GET", "/metrics", None, None).await?;
        let devices_here = text
            .lines()
            .find_map(|line| line.strip_prefix("tether_connections{kind=\"device\"} "))
            .and_then(|value| value.trim().parse::<u64>().ok())
            .unwrap_or(0);
        assert!(devices_here > 0, "node {node} has no device:\n{text}");
    }
    drop(haproxy);
    cluster.shutdown().await;
    Ok(())
}

/// Waits (in a task) for the close frame of `ws`: its code and when it
/// came.
fn watch_close(
    mut ws: common::Ws,
) -> tokio::task::JoinHandle<Result<(u16, std::time::Instant), String>> {
    tokio::spawn(async move {
        let code = close_code(&mut ws)
            .await
            .map_err(|error| error.to_string())?;
        Ok((code, std::time::Instant::now()))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_reach_every_node_within_the_bound() -> TestResult {
    let mut cluster = Cluster::start(2).await?;
    let tenant = cluster.admin.tenant_id("default").await?;
    let key = cluster
        .admin
        .add_key(tenant, &ChannelFilter::ALL, false, Some("revoked"))
        .await?;
    let token = cluster.add_device("revoked-device").await?;
    // The key's receivers on both nodes; the device on node 1 (the
    // administration runs elsewhere: here, on the database directly).
    let mut receivers = Vec::new();
    for node in 0..2 {
        let mut receiver = Receiver::connect(cluster.addr(node), &key.key).await?;
        receiver.subscribe("temp", None).await?;
        receivers.push(receiver);
    }
    let mut device = Device::connect(cluster.addr(1), &token).await?;
    device.hello("revoked-device", 1).await?;
    publish_all(&mut device, 1..=3, "temp").await?;
    // Revocation does not depend on NATS: stop it first.
    tokio::task::block_in_place(|| cluster.nats[0].stop())?;
    let mut closes: Vec<_> = receivers
        .into_iter()
        .map(|receiver| watch_close(receiver.ws))
        .collect();
    closes.push(watch_close(device.ws));

    let revoked = std::time::Instant::now();
    cluster.admin.revoke_key(key.key_id).await?;
    cluster.admin.revoke_device("revoked-device").await?;
    // New connections are refused at once, on every node.
    for node in 0..2 {
        let receiver = Receiver::connect(cluster.addr(node), &key.key).await;
        assert!(receiver.is_err(), "node {node} let the revoked key in");
        match common::connect_device(cluster.addr(node), &token).await {
            Err(error) => assert_eq!(common::http_status(&error), Some(401), "{error}"),
            Ok(mut ws) => assert_eq!(close_code(&mut ws).await?, 4005),
        }
    }
    // Connections already open (receivers on nodes 0 and 1, the device on
    // node 1) are closed within the bound.
    for (which, close) in [
        "receiver on node 0",
        "receiver on node 1",
        "device on node 1",
    ]
    .into_iter()
    .zip(closes)
    {
        let (code, at) = close.await??;
        let took = at.saturating_duration_since(revoked);
        assert_eq!(code, 4005, "{which}");
        assert!(
            took <= tether_server::REVOCATION_BOUND,
            "{which} closed after {took:?}"
        );
    }
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_and_commands_go_on_when_a_nats_server_of_the_cluster_dies() -> TestResult {
    // Three routed nats-servers; every node is given all three URLs.
    let mut cluster = Cluster::start_with(2, 3).await?;
    let token = cluster.add_device("roamer").await?;
    let mut receiver = Receiver::connect(cluster.addr(1), &cluster.key).await?;
    receiver.subscribe("temp", None).await?;
    let mut device = Device::connect(cluster.addr(0), &token).await?;
    device.hello("roamer", 1).await?;
    publish_all(&mut device, 1..=10, "temp").await?;
    assert_eq!(
        offsets(&receiver.events(10).await?),
        (1..=10).collect::<Vec<u64>>()
    );

    // Kill the NATS server node 0 talks through; the device keeps
    // publishing meanwhile.
    let victim = tokio::task::block_in_place(|| {
        (0..cluster.nats.len()).find(|&i| cluster.nats[i].has_client("node-0").unwrap_or(false))
    })
    .ok_or("node 0 is on no NATS server")?;
    tokio::task::block_in_place(|| cluster.nats[victim].stop())?;
    publish_all(&mut device, 11..=20, "temp").await?;
    // Both nodes move to the servers left.
    let deadline = tokio::time::Instant::now() + common::WAIT;
    for node in ["node-0", "node-1"] {
        while !tokio::task::block_in_place(|| {
            (0..cluster.nats.len())
                .filter(|&i| i != victim)
                .any(|i| cluster.nats[i].has_client(node).unwrap_or(false))
        }) {
            if tokio::time::Instant::now() > deadline {
                return Err(format!("{node} did not move to another NATS server").into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    publish_all(&mut device, 21..=30, "temp").await?;
    let events = receiver.events(20).await?;
    assert_eq!(offsets(&events), (11..=30).collect::<Vec<u64>>());
    assert_eq!(payloads(&events), (11..=30).collect::<Vec<u64>>());

    // A command from node 1 still reaches the device on node 0.
    receiver
        .send_json(&json!({"v": 1, "send_command": {"request_id": 9, "device": "roamer", "channel": "led", "payload": 1}}))
        .await?;
    let Downlink::Command { id, payload, .. } = device.recv().await? else {
        return Err("expected a command".into());
    };
    assert_eq!(payload, "1");
    device.command_ack(id, "\"done\"").await?;
    let result = receiver.recv().await?;
    assert_eq!(result["command_result"]["request_id"], 9, "{result}");
    assert_eq!(result["command_result"]["result"], "done", "{result}");
    cluster.shutdown().await;
    Ok(())
}

/// Waits until node `node` serves `n` descriptions of `channel` over
/// HTTP (from the database); returns its answer.
async fn served_descriptions(
    cluster: &Cluster,
    node: usize,
    channel: &str,
    n: usize,
) -> Result<serde_json::Value, BoxError> {
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        let (status, body) = common::http(
            cluster.addr(node),
            "GET",
            &format!("/v1/descriptions?channel={channel}"),
            Some(&cluster.key),
            None,
        )
        .await?;
        assert_eq!(status, 200, "{body}");
        if body["descriptions"]
            .as_array()
            .is_some_and(|d| d.len() == n)
        {
            return Ok(body);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("node {node} never served {n} descriptions: {body}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Channel descriptions across nodes: a receiver on node 1 that asks
/// (`"describe":true`) gets what a device on node 0 described before
/// (from PostgreSQL), then a description a device on node 0 sends while it
/// is subscribed (over NATS); node 1 serves them over HTTP too, and its
/// series of the channel has the reading published on node 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptions_cross_nodes() -> TestResult {
    use tether_proto::{DescribeChannel, DeviceToServer, FieldDescription, Fields};
    let cluster = Cluster::start(2).await?;
    let token_a = cluster.add_device("sensor-a").await?;
    let token_b = cluster.add_device("sensor-b").await?;
    let celsius = [FieldDescription::new("centi_celsius")
        .with_label("Temperature")
        .with_unit("°C")
        .with_scale(0.01)];
    let mut a = Device::connect(cluster.addr(0), &token_a).await?;
    a.hello("sensor-a", 1).await?;
    a.send(&DeviceToServer::DescribeChannel(DescribeChannel::new(
        "home/climate",
        Fields::new(&celsius),
    )))
    .await?;
    // Node 1 reads it from the database.
    let body = served_descriptions(&cluster, 1, "home/climate", 1).await?;
    assert_eq!(body["descriptions"][0]["device"], "sensor-a", "{body}");

    let mut receiver = Receiver::connect(cluster.addr(1), &cluster.key).await?;
    receiver
        .send_json(&json!({"v": 1, "subscribe": {"channel": "home/climate", "from": null, "describe": true}}))
        .await?;
    assert!(receiver.recv().await?.get("subscribed").is_some());
    let stored = receiver.recv().await?;
    assert_eq!(
        stored,
        json!({"v": 1, "description": {
            "channel": "home/climate",
            "device": "sensor-a",
            "fields": [{"key": "centi_celsius", "label": "Temperature", "unit": "°C", "scale": 0.01}]
        }})
    );

    // sensor-b on node 0 describes the channel while the receiver on node
    // 1 is subscribed, then publishes.
    let volts = [FieldDescription::new("mv").with_unit("V").with_scale(0.001)];
    let mut b = Device::connect(cluster.addr(0), &token_b).await?;
    b.hello("sensor-b", 1).await?;
    b.send(&DeviceToServer::DescribeChannel(DescribeChannel::new(
        "home/climate",
        Fields::new(&volts),
    )))
    .await?;
    b.publish(1, "home/climate", r#"{"mv":3712}"#).await?;
    b.wait_ack(1).await?;
    let (first, second) = (receiver.recv().await?, receiver.recv().await?);
    let (live, event) = if first.get("description").is_some() {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(live["description"]["device"], "sensor-b", "{live}");
    assert_eq!(
        live["description"]["fields"],
        json!([{"key": "mv", "unit": "V", "scale": 0.001}])
    );
    assert_eq!(event["event"]["payload"], json!({"mv": 3712}), "{event}");

    // Node 1's series of the channel (computed in PostgreSQL) has it.
    let (status, body) = common::http(
        cluster.addr(1),
        "GET",
        "/v1/series?channel=home/climate",
        Some(&cluster.key),
        None,
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    let text = body.to_string();
    assert!(text.contains("sensor-b") && text.contains("3712"), "{body}");
    cluster.shutdown().await;
    Ok(())
}

/// A description sent while the receiver's node is away from NATS (its
/// only NATS server died; the sender's node stays on the other server of
/// the NATS cluster) is not lost for the live receiver: NATS core does
/// not keep the notice, but once node 1 is back on NATS its receiver
/// reads the stored descriptions again and gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_description_sent_while_a_node_is_off_nats_reaches_its_receivers() -> TestResult {
    use tether_proto::{DescribeChannel, DeviceToServer, FieldDescription, Fields};
    let mut cluster = Cluster::start_pinned(2).await?;
    let token = cluster.add_device("sensor-a").await?;
    let mut receiver = Receiver::connect(cluster.addr(1), &cluster.key).await?;
    receiver
        .send_json(&json!({"v": 1, "subscribe": {"channel": "home/climate", "from": null, "describe": true}}))
        .await?;
    assert!(receiver.recv().await?.get("subscribed").is_some());
    let mut device = Device::connect(cluster.addr(0), &token).await?;
    device.hello("sensor-a", 1).await?;

    // Node 1's NATS server dies; node 0 stays on server 0.
    tokio::task::block_in_place(|| cluster.nats[1].stop())?;
    let celsius = [FieldDescription::new("centi_celsius").with_unit("°C")];
    device
        .send(&DeviceToServer::DescribeChannel(DescribeChannel::new(
            "home/climate",
            Fields::new(&celsius),
        )))
        .await?;
    // Stored (node 0 serves it), and its notice went out to NATS, where
    // node 1 was not.
    served_descriptions(&cluster, 0, "home/climate", 1).await?;
    let early = tokio::time::timeout(Duration::from_millis(800), receiver.recv()).await;
    assert!(
        early.is_err(),
        "nothing reaches node 1 while it is off NATS: {early:?}"
    );

    // Back on NATS: the receiver gets the description it missed.
    tokio::task::block_in_place(|| cluster.nats[1].resume())?;
    let caught_up = receiver.recv().await?;
    assert_eq!(
        caught_up,
        json!({"v": 1, "description": {
            "channel": "home/climate",
            "device": "sensor-a",
            "fields": [{"key": "centi_celsius", "unit": "°C"}]
        }})
    );
    cluster.shutdown().await;
    Ok(())
}

/// A person's sign-in on a cluster: the account made (from a label's claim
/// code) through node 0 is signed in on node 1 too; signing out through
/// node 1 closes their WebSocket on node 0 (the revocation, through
/// PostgreSQL) and the cookie works on no node after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_works_on_every_node_and_ends_on_every_node() -> TestResult {
    let cluster = Cluster::start(2).await?;
    let code = cluster
        .admin
        .add_device(None, Some("label-1"), true, None)
        .await?
        .claim_code
        .ok_or("no claim code")?;
    let ada = Person::create(
        cluster.addr(0),
        "ada@example.com",
        json!({"claim_code": code}),
    )
    .await?;
    let on_node_1 = ada.on(cluster.addr(1));
    let devices = on_node_1.get("/v1/devices").await?;
    assert_eq!(devices.status, 200, "{devices:?}");
    assert_eq!(devices.body["devices"][0]["id"], "label-1", "{devices:?}");
    let mut live = ada.websocket().await?;
    live.subscribe("sensors/a", None).await?;
    let started = std::time::Instant::now();
    let out = on_node_1.change("DELETE", "/v1/session", None).await?;
    assert_eq!(out.status, 200, "{out:?}");
    assert_eq!(close_code(&mut live.ws).await?, 4005);
    // The sign-out is a revocation: the other node closes within the bound.
    let took = started.elapsed();
    assert!(
        took <= tether_server::REVOCATION_BOUND,
        "the signed-out WebSocket on node 0 closed after {took:?}"
    );
    for node in 0..2 {
        let answer = ada.on(cluster.addr(node)).get("/v1/devices").await?;
        assert_eq!(answer.status, 401, "node {node}: {answer:?}");
    }
    cluster.shutdown().await;
    Ok(())
}
