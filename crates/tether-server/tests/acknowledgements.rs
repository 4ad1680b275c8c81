//! An acknowledgement means stored: for any schedule of failed writes,
//! pipelined publishes and reconnects (a property test through the real
//! server, with chosen writes of the real store failing), and for a fleet
//! of tether-core devices while another process holds the database's write
//! lock, every record a device saw acknowledged is in the database exactly
//! once.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::faulty_store::{Fault, FaultPlan, FaultyStore};
use common::{BoxError, TestResult, TestServer, Ws, connect_device};
use futures_util::{SinkExt, StreamExt};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use tether_cluster_test::Postgres;
use tether_proto::{DeviceToServer, Hello, Payload, Publish, ServerToDevice};
use tether_server::store::PgAdmin;
use tokio_tungstenite::tungstenite::protocol::Message;

const CHANNEL: &str = "acked";

/// What a device does next.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// The application makes this many new records.
    Make(u32),
    /// The device sends every record its window allows, without waiting
    /// (pipelined).
    Send,
    /// The device reads one message, if it waits for one.
    Read,
    /// The connection drops (`abrupt`: no close frame) and the device
    /// connects again.
    Reconnect { abrupt: bool },
}

#[derive(Debug, Clone)]
struct Schedule {
    steps: Vec<Step>,
    /// Appends that fail: `(seq, how)`, each on its next attempt.
    faults: Vec<(u32, Fault)>,
}

fn schedule() -> impl Strategy<Value = Schedule> {
    let step = prop_oneof![
        2 => (1u32..=8).prop_map(Step::Make),
        3 => Just(Step::Send),
        3 => Just(Step::Read),
        1 => any::<bool>().prop_map(|abrupt| Step::Reconnect { abrupt }),
    ];
    let fault = prop_oneof![Just(Fault::Lost), Just(Fault::Unconfirmed)];
    (
        proptest::collection::vec(step, 1..40),
        proptest::collection::vec((1u32..=80, fault), 0..10),
    )
        .prop_map(|(steps, faults)| Schedule { steps, faults })
}

/// A device that follows docs/protocol.md section 6 to the letter, and
/// checks the server's side of it.
struct ModelDevice {
    addr: SocketAddr,
    token: String,
    device_id: String,
    boot_id: u64,
    /// Records 1..=made exist; those above `acked` wait in the outbox.
    made: u32,
    /// Everything up to this was acknowledged (by `Ack` or `Welcome`).
    acked: u32,
    /// Highest `seq` sent on this connection.
    sent: u32,
    window: u32,
    ws: Option<Ws>,
}

impl ModelDevice {
    async fn connect(&mut self) -> Result<(), BoxError> {
        let mut ws = connect_device(self.addr, &self.token).await?;
        let hello = DeviceToServer::Hello(Hello {
            device_id: &self.device_id,
            firmware_version: "1.0.0",
            boot_id: self.boot_id,
            last_acked_seq: self.acked,
            max_downlink_len: None,
        });
        ws.send(Message::Binary(hello.encode_to_vec()?.into()))
            .await?;
        let welcome = loop {
            match tokio::time::timeout(common::WAIT, ws.next()).await? {
                Some(Ok(Message::Binary(bytes))) => {
                    break ServerToDevice::decode(&bytes)?.into_owned_welcome()?;
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => return Err(format!("expected Welcome, got {other:?}").into()),
            }
        };
        let (last_stored_seq, max_in_flight) = welcome;
        if last_stored_seq < self.acked {
            return Err(format!(
                "Welcome.last_stored_seq {last_stored_seq} is below {}, which was acknowledged",
                self.acked
            )
            .into());
        }
        if last_stored_seq > self.made {
            return Err(format!("Welcome claims {last_stored_seq}, never made").into());
        }
        // The device drops what the server has, resends the rest.
        self.acked = last_stored_seq;
        self.sent = last_stored_seq;
        self.window = u32::from(max_in_flight);
        self.ws = Some(ws);
        Ok(())
    }

    async fn ensure_connected(&mut self) -> Result<(), BoxError> {
        if self.ws.is_none() {
            self.connect().await?;
        }
        Ok(())
    }

    async fn send(&mut self) -> Result<(), BoxError> {
        self.ensure_connected().await?;
        while self.sent < self.made && self.sent - self.acked < self.window {
            let seq = self.sent + 1;
            let payload = format!("{{\"boot\":{},\"seq\":{seq}}}", self.boot_id);
            let publish = DeviceToServer::Publish(Publish {
                seq,
                channel: CHANNEL,
                time_ms: None,
                payload: Payload::from_json_str(&payload),
            });
            let frame = Message::Binary(publish.encode_to_vec()?.into());
            let Some(ws) = &mut self.ws else { break };
            if ws.send(frame).await.is_err() {
                // The server closed meanwhile; the next read or send
                // reconnects.
                self.ws = None;
                break;
            }
            self.sent = seq;
        }
        Ok(())
    }

    async fn read(&mut self) -> Result<(), BoxError> {
        let (Some(ws), true) = (&mut self.ws, self.sent > self.acked) else {
            return Ok(());
        };
        loop {
            let message = tokio::time::timeout(common::WAIT, ws.next())
                .await
                .map_err(|_| "the server neither acknowledged nor closed")?;
            match message {
                Some(Ok(Message::Binary(bytes))) => match ServerToDevice::decode(&bytes)? {
                    ServerToDevice::Ack(ack) => {
                        if ack.seq > self.sent {
                            return Err(format!(
                                "Ack {} for a record never sent (sent {})",
                                ack.seq, self.sent
                            )
                            .into());
                        }
                        self.acked = self.acked.max(ack.seq);
                        return Ok(());
                    }
                    other => return Err(format!("unexpected {other:?}").into()),
                },
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(frame))) => {
                    // 4015: a write failed (4013: the store was unavailable).
                    let code = frame.map(|frame| u16::from(frame.code));
                    if !matches!(code, Some(4015 | 4013 | 1000)) {
                        return Err(format!("closed with {code:?}").into());
                    }
                    self.ws = None;
                    return Ok(());
                }
                // The connection ended without a close frame.
                None | Some(Err(_)) => {
                    self.ws = None;
                    return Ok(());
                }
                Some(Ok(other)) => return Err(format!("unexpected frame {other:?}").into()),
            }
        }
    }

    async fn reconnect(&mut self, abrupt: bool) -> Result<(), BoxError> {
        if let Some(mut ws) = self.ws.take()
            && !abrupt
        {
            let _ = ws.close(None).await;
        }
        self.connect().await
    }

    /// Runs until every record is acknowledged.
    async fn drain(&mut self) -> Result<(), BoxError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.acked < self.made {
            if Instant::now() > deadline {
                return Err(format!("only {} of {} acknowledged", self.acked, self.made).into());
            }
            self.send().await?;
            self.read().await?;
        }
        if let Some(mut ws) = self.ws.take() {
            let _ = ws.close(None).await;
        }
        Ok(())
    }
}

trait WelcomeFields {
    fn into_owned_welcome(self) -> Result<(u32, u16), BoxError>;
}

impl WelcomeFields for ServerToDevice<'_> {
    fn into_owned_welcome(self) -> Result<(u32, u16), BoxError> {
        match self {
            ServerToDevice::Welcome(welcome) => {
                Ok((welcome.last_stored_seq, welcome.max_in_flight))
            }
            other => Err(format!("expected Welcome, got {other:?}").into()),
        }
    }
}

/// Where the records of the property test are counted.
enum Database<'a> {
    /// The server's SQLite file.
    Sqlite(std::path::PathBuf),
    /// A database on a real PostgreSQL server.
    Postgres(&'a Postgres, String),
}

/// How often each `seq` of `boot_id` is stored.
fn stored_counts(database: &Database<'_>, boot_id: u64) -> Result<BTreeMap<u32, u32>, BoxError> {
    let payloads: Vec<String> = match database {
        Database::Sqlite(path) => {
            let conn = rusqlite::Connection::open(path)?;
            let mut statement = conn.prepare(
                "SELECT m.payload FROM messages m JOIN channels c ON c.id = m.channel_id
                 WHERE c.name = ?1",
            )?;
            statement
                .query_map([CHANNEL], |row| row.get::<_, String>(0))?
                .collect::<Result<_, _>>()?
        }
        Database::Postgres(server, name) => server
            .psql(
                name,
                &format!(
                    "SELECT m.payload FROM messages m JOIN channels c ON c.id = m.channel_id \
                     WHERE c.name = '{CHANNEL}'"
                ),
            )?
            .lines()
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect(),
    };
    let mut counts = BTreeMap::new();
    for payload in payloads {
        let value: serde_json::Value = serde_json::from_str(&payload)?;
        if value["boot"].as_u64() == Some(boot_id) {
            let seq = u32::try_from(value["seq"].as_u64().ok_or("no seq")?)?;
            *counts.entry(seq).or_default() += 1;
        }
    }
    Ok(counts)
}

async fn run_schedule(
    server: &TestServer,
    database: &Database<'_>,
    plan: &FaultPlan,
    token: &str,
    boot_id: u64,
    schedule: &Schedule,
) -> Result<(), BoxError> {
    plan.clear();
    for &(seq, fault) in &schedule.faults {
        plan.fail(boot_id, seq, fault);
    }
    let mut device = ModelDevice {
        addr: server.addr,
        token: token.to_owned(),
        device_id: "prop-1".into(),
        boot_id,
        made: 0,
        acked: 0,
        sent: 0,
        window: 1,
        ws: None,
    };
    device.connect().await?;
    for step in &schedule.steps {
        match *step {
            Step::Make(count) => device.made += count,
            Step::Send => device.send().await?,
            Step::Read => device.read().await?,
            Step::Reconnect { abrupt } => device.reconnect(abrupt).await?,
        }
    }
    // Whatever was acknowledged so far must be stored now.
    let acked_during_schedule = device.acked;
    let counts = stored_counts(database, boot_id)?;
    for seq in 1..=acked_during_schedule {
        if counts.get(&seq) != Some(&1) {
            return Err(format!(
                "record {seq} was acknowledged but is stored {} times",
                counts.get(&seq).copied().unwrap_or(0)
            )
            .into());
        }
    }
    // Then the device gets everything through, failures over.
    plan.clear();
    device.drain().await?;
    let counts = stored_counts(database, boot_id)?;
    for seq in 1..=device.made {
        if counts.get(&seq) != Some(&1) {
            return Err(format!(
                "record {seq} is stored {} times after everything was acknowledged",
                counts.get(&seq).copied().unwrap_or(0)
            )
            .into());
        }
    }
    if let Some((seq, _)) = counts.range(device.made + 1..).next() {
        return Err(format!("record {seq} was never made but is stored").into());
    }
    Ok(())
}

#[test]
fn acknowledged_records_are_stored_exactly_once_for_any_schedule_of_failures() -> TestResult {
    property_test(None, 100)
}

/// The same on PostgreSQL (`--database postgres://…`), fewer cases: each
/// commit is an fsync of a real server.
#[test]
fn acknowledged_records_are_stored_exactly_once_on_postgresql() -> TestResult {
    let postgres = Postgres::start()?;
    property_test(Some(&postgres), 40)
}

/// Runs the property test on a server on the SQLite file, or on a fresh
/// database of `postgres`.
fn property_test(postgres: Option<&Postgres>, cases: u32) -> TestResult {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let plan = FaultPlan::default();
    let layer_plan = plan.clone();
    let url = match postgres {
        Some(postgres) => Some(postgres.create_database("acknowledgements")?),
        None => None,
    };
    let cluster_url = url.clone();
    let server = runtime.block_on(TestServer::start_with_store_layer(
        move |config| match cluster_url {
            Some(url) => config.with_cluster(url, None),
            None => config,
        },
        Box::new(move |store| Arc::new(FaultyStore::new(store, layer_plan))),
    ))?;
    let (database, token) = match (postgres, &url) {
        (Some(postgres), Some(url)) => {
            let token = runtime.block_on(async {
                let admin = PgAdmin::connect(url).await?;
                let tenant = admin.tenant_id("default").await?;
                let device = admin
                    .add_device(Some(tenant), Some("prop-1"), false, None)
                    .await?;
                Ok::<String, BoxError>(device.token)
            })?;
            (
                Database::Postgres(postgres, "acknowledgements".to_owned()),
                token,
            )
        }
        _ => (
            Database::Sqlite(server.server.database_path()),
            server.add_device("default", "prop-1")?,
        ),
    };
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        max_shrink_iters: 100,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let next_boot = std::cell::Cell::new(1u64);
    let result = runner.run(&schedule(), |schedule| {
        // Each case is a new boot: its own sequence space.
        next_boot.set(next_boot.get() + 1);
        runtime
            .block_on(run_schedule(
                &server,
                &database,
                &plan,
                &token,
                next_boot.get(),
                &schedule,
            ))
            .map_err(|error| TestCaseError::fail(error.to_string()))
    });
    runtime.block_on(server.server.shutdown());
    result.map_err(|error| -> BoxError { error.to_string().into() })?;
    assert!(
        plan.injected() > u64::from(cases / 5),
        "only {} writes failed over the whole run",
        plan.injected()
    );
    Ok(())
}

/// The counters of stored and duplicate records count at commit: a device
/// that publishes and drops its connection without a close frame, before
/// any ack, is counted in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_and_duplicate_counters_count_commits_of_vanished_connections() -> TestResult {
    let server = TestServer::start().await?;
    let token = server.add_device("default", "gone-1")?;
    let records = 60u32;
    for round in 0..2 {
        let mut device = common::Device::connect(server.addr, &token).await?;
        device.hello("gone-1", 7).await?;
        for seq in 1..=records {
            device
                .publish(seq, CHANNEL, &format!("{{\"seq\":{seq}}}"))
                .await?;
        }
        // Gone without a close frame, before reading a single ack: the
        // TCP connection ends (FIN after the publishes, so the server
        // reads them all; dropping the socket with acks unread would
        // reset it and lose publishes still in the server's buffer).
        match device.ws.get_mut() {
            tokio_tungstenite::MaybeTlsStream::Plain(tcp) => {
                tokio::io::AsyncWriteExt::shutdown(tcp).await?;
            }
            _ => return Err("expected a plain TCP connection".into()),
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let wanted = format!(
            "tether_messages_{}_total {records}",
            if round == 0 { "stored" } else { "duplicate" }
        );
        loop {
            let (_, metrics) = common::http_raw(server.addr, "GET", "/metrics", None, None).await?;
            if metrics.lines().any(|line| line == wanted) {
                break;
            }
            if Instant::now() > deadline {
                let counters: Vec<&str> = metrics
                    .lines()
                    .filter(|line| line.starts_with("tether_messages_"))
                    .collect();
                return Err(format!("wanted {wanted:?}, metrics say {counters:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(device);
    }
    server.server.shutdown().await;
    Ok(())
}

/// Devices of the fleet.
const FLEET: usize = 20;
/// Records each device makes, one every [`FLEET_INTERVAL`].
const FLEET_RECORDS: u32 = 60;
const FLEET_INTERVAL: Duration = Duration::from_millis(250);
/// How long another connection holds the write lock: longer than two of
/// the writer's busy timeouts (5 s), so whole batches of pipelined
/// appends fail while later ones commit.
const LOCK_HELD: Duration = Duration::from_secs(11);

/// What a fleet device saw.
#[derive(Debug, Clone, Copy)]
struct DeviceReport {
    number: usize,
    stats: tether_core::client::ClientStats,
}

#[derive(serde::Serialize)]
struct FleetRecord {
    device: u32,
    n: u32,
}

/// Runs the fleet on a thread of its own (tether-core's client is
/// single-threaded, as on a chip) and returns what each device saw once
/// it has made its records and emptied its outbox (or given up waiting).
fn spawn_fleet(
    url: String,
    devices: Vec<(String, String)>,
) -> std::thread::JoinHandle<Result<Vec<DeviceReport>, String>> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| error.to_string())?;
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, async move {
            let tasks: Vec<_> = devices
                .into_iter()
                .enumerate()
                .map(|(number, (id, token))| {
                    let url = url.clone();
                    tokio::task::spawn_local(async move {
                        fleet_device(number, &url, &id, &token).await
                    })
                })
                .collect();
            let mut reports = Vec::new();
            for task in tasks {
                reports.push(task.await.map_err(|error| error.to_string())??);
            }
            Ok(reports)
        })
    })
}

async fn fleet_device(
    number: usize,
    url: &str,
    id: &str,
    token: &str,
) -> Result<DeviceReport, String> {
    use tether_core::backoff::BackoffConfig;
    use tether_core::client::{self, ClientConfig, NoCommands, Resources};
    use tether_core::outbox::RamOutbox;
    use tether_core::session::{ConnectionState, SessionConfig};
    use tether_core::time::Duration as CoreDuration;
    use tether_host::board::TokioBoard;

    let authorization = format!("Bearer {token}");
    let config = ClientConfig::new(url, id, "fleet-1.0.0")
        .with_authorization(&authorization)
        .with_session(
            SessionConfig::new().with_backoff(
                BackoffConfig::new()
                    .with_base(CoreDuration::from_millis(100))
                    .with_cap(CoreDuration::from_millis(1000)),
            ),
        );
    let board = TokioBoard::new().with_outbox(RamOutbox::<16384>::new());
    let mut resources: Resources<TokioBoard<RamOutbox<16384>>> = Resources::new();
    let (client, mut runner) =
        client::new(board, config, &mut resources).map_err(|error| error.to_string())?;
    let device = u32::try_from(number).map_err(|error| error.to_string())?;
    let scenario = async {
        // Devices of a fleet do not boot in the same millisecond.
        tokio::time::sleep(FLEET_INTERVAL / u32::try_from(FLEET).unwrap_or(1) * device).await;
        let mut ticker = tokio::time::interval(FLEET_INTERVAL);
        for n in 1..=FLEET_RECORDS {
            ticker.tick().await;
            if let Err(error) = client.publish(CHANNEL, &FleetRecord { device, n }).await {
                return Err(format!("publish {n}: {error}"));
            }
        }
        let deadline = Instant::now() + Duration::from_secs(40);
        while client.stats().outbox_len > 0 || client.state() != ConnectionState::Connected {
            if Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    };
    tokio::select! {
        stopped = runner.run(NoCommands) => Err(format!("the runner stopped: {}", stopped.0)),
        result = scenario => result.map(|()| DeviceReport { number, stats: client.stats() }),
    }
}

/// How often each `(device, n)` of the fleet is stored.
fn fleet_counts(database: &Path) -> Result<BTreeMap<(u32, u32), u32>, BoxError> {
    let conn = rusqlite::Connection::open(database)?;
    let mut statement = conn.prepare(
        "SELECT m.payload FROM messages m JOIN channels c ON c.id = m.channel_id
         WHERE c.name = ?1",
    )?;
    let mut counts = BTreeMap::new();
    for payload in statement.query_map([CHANNEL], |row| row.get::<_, String>(0))? {
        let value: serde_json::Value = serde_json::from_str(&payload?)?;
        let device = u32::try_from(value["device"].as_u64().ok_or("no device")?)?;
        let n = u32::try_from(value["n"].as_u64().ok_or("no n")?)?;
        *counts.entry((device, n)).or_default() += 1;
    }
    Ok(counts)
}

/// A fleet of tether-core devices publishes against the real server while
/// another connection holds the database's write lock (`BEGIN IMMEDIATE`,
/// as the admin CLI or a backup tool can) for longer than the writer
/// waits: batches fail while later ones commit. Afterwards every record a
/// device saw acknowledged is in the database exactly once.
#[test]
fn a_fleet_loses_nothing_acknowledged_while_the_write_lock_is_held() -> TestResult {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let server = runtime.block_on(TestServer::start())?;
    let admin = server.admin()?;
    let tenant = admin.tenant_id("default")?;
    let devices = (0..FLEET)
        .map(|number| {
            let id = format!("fleet-{number}");
            let token = admin.add_device(Some(tenant), Some(&id), false)?.token;
            Ok((id, token))
        })
        .collect::<Result<Vec<_>, BoxError>>()?;
    drop(admin);
    let database = server.server.database_path();
    let fleet = spawn_fleet(server.url("/v1/device"), devices);

    // Let data flow, then hold the write lock.
    std::thread::sleep(Duration::from_secs(2));
    let holder = rusqlite::Connection::open(&database)?;
    // The server's writer commits every few milliseconds: wait our turn.
    holder.busy_timeout(Duration::from_secs(5))?;
    holder.execute_batch("BEGIN IMMEDIATE")?;
    std::thread::sleep(LOCK_HELD);
    holder.execute_batch("ROLLBACK")?;
    drop(holder);

    let reports = fleet.join().map_err(|_| "the fleet panicked")??;
    let counts = fleet_counts(&database)?;
    let mut problems = Vec::new();
    let mut acknowledged_total = 0u32;
    for report in &reports {
        let device = u32::try_from(report.number)?;
        assert_eq!(report.stats.dropped, 0, "outbox overflowed: {report:?}");
        // The outbox frees acknowledged records in order: the device saw
        // 1..=acknowledged acknowledged.
        let acknowledged = report.stats.session.acknowledged;
        acknowledged_total += acknowledged;
        for n in 1..=acknowledged {
            let stored = counts.get(&(device, n)).copied().unwrap_or(0);
            if stored != 1 {
                problems.push(format!(
                    "device {device} record {n}: acknowledged, stored {stored} times"
                ));
            }
        }
    }
    let (_, metrics) =
        runtime.block_on(common::http_raw(server.addr, "GET", "/metrics", None, None))?;
    runtime.block_on(server.server.shutdown());
    // The lock made writes fail (or the test proves nothing).
    let link_failures: u32 = reports
        .iter()
        .map(|report| report.stats.session.link_failures)
        .sum();
    assert!(
        link_failures > 0,
        "no device lost its link while the write lock was held"
    );
    let closed_write_failed = metrics
        .lines()
        .find_map(|line| line.strip_prefix("tether_rejected_total{kind=\"write_failed\"} "))
        .and_then(|count| count.parse::<u64>().ok())
        .unwrap_or(0);
    println!(
        "{link_failures} links failed, {closed_write_failed} closed with 4015; server: {:?}",
        metrics
            .lines()
            .filter(|line| line.starts_with("tether_messages_"))
            .collect::<Vec<_>>()
    );
    assert!(
        problems.is_empty(),
        "{} acknowledged records not stored exactly once (of {acknowledged_total}): {:?}",
        problems.len(),
        &problems[..problems.len().min(20)]
    );
    // tether-core's client took 4015 like any close: it reconnected and
    // resent from `last_stored_seq` (every device finishes, below).
    assert!(
        closed_write_failed > 0,
        "no connection was closed with 4015 while the write lock was held"
    );
    // Every device got everything through once the lock was gone.
    for report in &reports {
        assert_eq!(
            report.stats.session.acknowledged, FLEET_RECORDS,
            "device {} did not finish: {report:?}",
            report.number
        );
    }
    Ok(())
}
