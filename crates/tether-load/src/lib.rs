//! `tether-load`: one workload against `tether-server` and, side by side,
//! against Mosquitto (MQTT QoS 1, persistence on), driven by the same
//! generator, with one table of what each did.
//!
//! ```text
//!  tether-load ─┬─ devices (WsClient: tether-core's frame engine, binary
//!               │   device protocol) ──────────▶ tether-server process
//!               │   receivers (JSON events) ◀──       └─ SQLite, read back
//!               └─ devices (rumqttc codec, QoS 1) ─▶ mosquitto process
//!                   receivers (QoS 1 sessions) ◀──      (persistence on)
//! ```
//!
//! Run it through `cargo xtask load` (which builds the release server and
//! this generator). What a run does, for each peer in turn:
//!
//! 1. start the server (tether: devices, tenants and keys registered in a
//!    fresh data directory; Mosquitto: a fresh persistence directory);
//! 2. connect and subscribe the receivers, then the whole fleet at once
//!    (at most `--connect-concurrency` handshakes in progress), timing it;
//! 3. read the server's memory with the fleet connected and idle, then let
//!    every device offer messages for `--seconds` at `--rate`, counting
//!    every tick (a tick that finds the device's outbox full is refused);
//! 4. read memory and CPU at the end of the window, then drain: queued
//!    messages go out, acks and deliveries are awaited (`--drain`);
//! 5. account: offered, acknowledged, stored (tether: read back from the
//!    database), delivered, lost (acknowledged but missing from the
//!    database or from a receiver that should have had it), duplicates.

#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

pub mod driver;
pub mod mqtt;
pub mod procstat;
pub mod setups;
pub mod storm;
pub mod tether;
pub mod workload;
pub mod ws_client;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use tokio::sync::{Semaphore, watch};

use driver::{DeviceReport, ReceiverReport};
use workload::{Phase, Shared, Workload};

/// Which servers to run the workload against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Peer {
    /// tether-server only.
    Tether,
    /// tether-server and Mosquitto, side by side.
    Mosquitto,
}

/// Named workloads (flags given after it override its values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// 10,000 devices × 1 msg/s, 100 tenants with one receiver each
    /// watching the channels of its own 100 devices.
    Customer,
    /// 10,000 devices × 1 msg/s on one channel, 10 receivers that see
    /// everything.
    Fanout,
    /// 100 devices publishing as fast as their in-flight window allows,
    /// no receivers (durable ingest).
    Ingest,
    /// The customer workload at 1, 2, 5 and 10 times its rate.
    Overload,
    /// 10,000 devices × 1 msg/s whose server restarts in the window: the
    /// whole fleet reconnects at once, with the SDK's jittered backoff and
    /// without jitter, one run each (tether only).
    Storm,
    /// A small, short run for the test command (accounting, not speed).
    Smoke,
}

/// One workload against tether-server (and Mosquitto), side by side.
#[derive(Debug, Parser)]
#[command(name = "tether-load")]
pub struct Args {
    /// The servers: `tether`, or `mosquitto` for tether and Mosquitto
    /// side by side.
    #[arg(long, value_enum, default_value = "tether")]
    pub peer: Peer,
    /// A named workload; the flags below override its values.
    #[arg(long, value_enum, default_value = "customer")]
    pub workload: Preset,
    /// Device connections.
    #[arg(long)]
    pub devices: Option<usize>,
    /// Messages per second per device (0: as fast as the window allows); a
    /// comma-separated list runs one after the other (a curve).
    #[arg(long, value_delimiter = ',')]
    pub rate: Option<Vec<f64>>,
    /// Tenants; the devices are split evenly.
    #[arg(long)]
    pub tenants: Option<usize>,
    /// Receivers per tenant, each watching all its tenant's devices.
    #[arg(long)]
    pub receivers_per_tenant: Option<usize>,
    /// Each device publishes on its own channel (`true`) or all of a
    /// tenant's on one (`false`).
    #[arg(long)]
    pub per_device_channels: Option<bool>,
    /// Seconds the devices offer messages.
    #[arg(long)]
    pub seconds: Option<f64>,
    /// In-flight window per device (tether-server may ask for less).
    #[arg(long, default_value_t = 32)]
    pub window: usize,
    /// Messages a device queues while its window is full.
    #[arg(long, default_value_t = 64)]
    pub outbox: usize,
    /// Seconds to wait for outstanding acks and deliveries after the window.
    #[arg(long, default_value_t = 30.0)]
    pub drain: f64,
    /// Handshakes in progress at once while the fleet connects.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Worker threads of the generator.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// The tether-server binary; `in-process` runs the server inside the
    /// generator (for tests: memory and CPU are then the generator's too).
    #[arg(long, default_value = "target/release/tether-server")]
    pub server: PathBuf,
    /// An extra tether-server flag (repeat for more); shown in the table.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
    /// The mosquitto binary.
    #[arg(long, default_value = "/usr/sbin/mosquitto")]
    pub mosquitto: String,
    /// Fail if a peer lost an acknowledged message or stored or delivered
    /// one twice (for the test command).
    #[arg(long)]
    pub check: bool,
    /// Instead of the peers: tether-server on each of these deployments
    /// (`sqlite`, `postgres`, `cluster`; comma-separated), one after the
    /// other (see the `setups` module).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub setups: Vec<setups::Setup>,
}

impl Args {
    /// The workloads to run, one per rate.
    pub fn workloads(&self) -> Vec<Workload> {
        let (devices, rates, tenants, receivers, per_device, seconds) = match self.workload {
            Preset::Customer => (10_000, vec![1.0], 100, 1, true, 20.0),
            Preset::Fanout => (10_000, vec![1.0], 1, 10, false, 20.0),
            Preset::Ingest => (100, vec![0.0], 1, 0, false, 10.0),
            Preset::Overload => (10_000, vec![1.0, 2.0, 5.0, 10.0], 100, 1, true, 20.0),
            Preset::Storm => (10_000, vec![1.0], 100, 0, true, 20.0),
            Preset::Smoke => (200, vec![5.0], 4, 2, true, 3.0),
        };
        let rates = self.rate.clone().unwrap_or(rates);
        let seconds = self.seconds.unwrap_or(seconds);
        // A storm: the restart a quarter into the window, with the SDK's
        // jitter and without.
        let storms = if self.workload == Preset::Storm {
            [true, false]
                .map(|jitter| {
                    Some(storm::Storm {
                        at: seconds / 4.0,
                        jitter,
                    })
                })
                .to_vec()
        } else {
            vec![None]
        };
        rates
            .into_iter()
            .flat_map(|rate| storms.iter().map(move |storm| (rate, *storm)))
            .map(|(rate, storm)| Workload {
                devices: self.devices.unwrap_or(devices),
                rate,
                tenants: self.tenants.unwrap_or(tenants).max(1),
                receivers_per_tenant: self.receivers_per_tenant.unwrap_or(receivers),
                per_device_channels: self.per_device_channels.unwrap_or(per_device),
                seconds,
                window: self.window,
                outbox: self.outbox,
                drain: Duration::from_secs_f64(self.drain),
                connect_concurrency: self.connect_concurrency.max(1),
                storm,
            })
            .collect()
    }
}

/// Runs every workload of `args` against the peers, prints the tables and
/// returns the outcomes (per workload: tether first, then Mosquitto).
///
/// # Errors
/// A server could not be started or its database not read.
pub async fn run(args: &Args) -> Result<Vec<Vec<Outcome>>, String> {
    if !args.setups.is_empty() {
        return setups::run(args, &args.setups).await;
    }
    let mut curve = Vec::new();
    for workload in args.workloads() {
        let mut columns = vec![run_tether(args, &workload).await?];
        if args.peer == Peer::Mosquitto && workload.storm.is_none() {
            columns.push(run_mosquitto(args, &workload).await?);
        }
        println!("{}", table(&workload, &columns));
        if let (Some(storm), Some(figures)) =
            (workload.storm, columns.first().and_then(|o| o.storm))
        {
            println!("{}", storm_table(storm, &figures));
        }
        curve.push((workload.rate, columns));
    }
    if curve.len() > 1 && args.workload != Preset::Storm {
        println!("{}", curve_table(&curve));
    }
    Ok(curve.into_iter().map(|(_, columns)| columns).collect())
}

/// What one peer did with one workload.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The peer's name.
    pub peer: String,
    /// Server settings that are not the defaults.
    pub settings: String,
    /// Device and receiver connections.
    pub connections: usize,
    /// Time until the whole fleet connected, in seconds.
    pub connect_seconds: f64,
    /// Connection attempts that failed.
    pub failed_attempts: u64,
    /// The measured window, in seconds.
    pub window_seconds: f64,
    /// From the window's end until everything was acknowledged and
    /// delivered (or the drain timed out), in seconds.
    pub drain_seconds: f64,
    /// Ticks while the run lasted.
    pub offered: u64,
    /// Ticks refused by a full outbox.
    pub refused: u64,
    /// Messages sent.
    pub sent: u64,
    /// Messages acknowledged.
    pub acked: u64,
    /// Records in the database afterwards (tether).
    pub stored: Option<u64>,
    /// Records stored twice (tether).
    pub stored_duplicates: Option<u64>,
    /// Acknowledged records missing from the database (tether).
    pub lost_in_store: Option<u64>,
    /// Deliveries the acknowledged messages called for.
    pub expected_deliveries: u64,
    /// Distinct deliveries.
    pub delivered: u64,
    /// Acknowledged messages a receiver that should have had them did not
    /// get.
    pub lost_in_delivery: u64,
    /// Deliveries of a message a receiver already had.
    pub delivered_duplicates: u64,
    /// Publish → receiver latency.
    pub delivery: Percentiles,
    /// Publish → ack latency.
    pub ack: Percentiles,
    /// Server memory before anything connected, KiB.
    pub rss_idle_kib: u64,
    /// Server memory with the fleet connected and idle, KiB.
    pub rss_fleet_kib: u64,
    /// Server memory at the end of the window, KiB.
    pub rss_end_kib: u64,
    /// Server CPU over the window, in cores.
    pub server_cpu: f64,
    /// Generator CPU over the window, in cores.
    pub generator_cpu: f64,
    /// Everything acknowledged and delivered before the drain timed out.
    pub drained: bool,
    /// Connections that ended with an error.
    pub errors: usize,
    /// What a server restart in the window did (the storm workload).
    pub storm: Option<storm::StormOutcome>,
    /// The first such error.
    pub first_error: Option<String>,
}

impl Outcome {
    /// Nothing acknowledged lost, nothing twice, no connection error.
    pub fn clean(&self) -> bool {
        self.lost_in_store.unwrap_or(0) == 0
            && self.lost_in_delivery == 0
            && self.delivered_duplicates == 0
            && self.stored_duplicates.unwrap_or(0) == 0
            && self.acked > 0
            && self.errors == 0
            && self.drained
    }
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Default, Clone, Copy)]
pub struct Percentiles {
    /// Samples.
    pub samples: usize,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Percentiles {
    fn of(mut micros: Vec<u32>) -> Self {
        if micros.is_empty() {
            return Percentiles::default();
        }
        micros.sort_unstable();
        let at = |p: f64| {
            let index = ((micros.len() - 1) as f64 * p).round() as usize;
            f64::from(micros[index.min(micros.len() - 1)]) / 1000.0
        };
        Percentiles {
            samples: micros.len(),
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

/// `--publish-rate` and `--publish-burst` of a workload that publishes
/// faster than the default on purpose.
const UNLIMITED_PUBLISH_RATE: u32 = 1_000_000;

/// How one cell of the table is written from a peer's outcome.
type Cell<'a> = Box<dyn Fn(&Outcome) -> String + 'a>;

/// The server side of a run, for [`drive`]: its process (a storm run
/// replaces it).
struct Target {
    pid: Arc<AtomicU32>,
}

impl Target {
    fn new(pid: u32) -> Self {
        Target {
            pid: Arc::new(AtomicU32::new(pid)),
        }
    }

    fn pid(&self) -> u32 {
        self.pid.load(Ordering::Relaxed)
    }
}

/// The server's flags for a workload: `--server-arg`s, and limits the
/// workload needs lifted (shown in the table).
fn server_args(args: &Args, workload: &Workload) -> Vec<String> {
    let mut server_args = args.server_args.clone();
    let connections = workload.devices + workload.receivers();
    // The default limit (10,000) is below a fleet of 10,000 plus its
    // receivers: raised just enough, and shown in the table.
    if connections > 10_000 && !server_args.iter().any(|a| a == "--max-connections") {
        server_args.push("--max-connections".into());
        server_args.push((connections + 16).to_string());
    }
    // The per-device publish limit (`Limits::default()`) protects the
    // server from one runaway device; a workload that publishes faster on
    // purpose (`ingest`: as fast as the window allows) lifts it, shown in
    // the table. Mosquitto has no such limit.
    if (workload.rate == 0.0
        || workload.rate > f64::from(tether_server::Limits::default().publish_rate))
        && !server_args.iter().any(|a| a == "--publish-rate")
    {
        for flag in ["--publish-rate", "--publish-burst"] {
            server_args.push(flag.into());
            server_args.push(UNLIMITED_PUBLISH_RATE.to_string());
        }
    }
    server_args
}

async fn run_tether(args: &Args, workload: &Workload) -> Result<Outcome, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let fleet = {
        let admin = tether_server::store::Admin::open(&dir.path().join("tether.db"))
            .map_err(|e| format!("open the database: {e}"))?;
        tether::register(&admin, workload).await?
    };
    let server_args = server_args(args, workload);
    let server = if args.server.as_os_str() == "in-process" {
        tether::Server::in_process(dir.path(), &server_args).await?
    } else {
        tether::Server::process(&args.server, dir.path(), &server_args)?
    };
    let addr = server.addr();
    let target = Target::new(server.id());
    // A storm: the server restarts inside the window (see `storm.rs`).
    let first_shared: Arc<std::sync::OnceLock<Arc<Shared>>> = Arc::default();
    let server = match workload.storm {
        None => Ok(server),
        Some(storm) => Err(tokio::spawn(storm::restart_in_window(
            server,
            storm,
            Arc::clone(&first_shared),
            Arc::clone(&target.pid),
            args.server.clone(),
            dir.path().to_owned(),
            server_args.clone(),
        ))),
    };
    let (mut outcome, device_reports, receiver_reports) =
        drive_tether(workload, &target, addr, fleet, &first_shared).await;
    let server = match server {
        Ok(server) => server,
        Err(restart) => {
            let (server, restart) = restart.await.map_err(|e| e.to_string())??;
            if let Some(shared) = first_shared.get() {
                outcome.storm = Some(storm::outcome(&restart, &device_reports, shared));
            }
            // The storm's attempts are in its own table.
            outcome.failed_attempts = restart.failed_before;
            server
        }
    };
    // Every acknowledged record is committed: a SIGKILL loses none of
    // them, and the database is read as a restarted server would.
    server.stop().await?;
    let stored = tether::read_database(&dir.path().join("tether.db"), workload.devices)?;
    outcome.stored = Some(stored.rows);
    outcome.stored_duplicates = Some(stored.duplicates);
    outcome.lost_in_store = Some(stored.missing(&device_reports));
    outcome.peer = "tether-server".into();
    outcome.settings = if server_args.is_empty() {
        "defaults".into()
    } else {
        server_args.join(" ")
    };
    account(workload, &mut outcome, &device_reports, &receiver_reports);
    Ok(outcome)
}

/// Drives a workload against tether-server at `addr` (a node, or a load
/// balancer in front of nodes) with its registered `fleet`; `first_shared`
/// receives the run's shared state (a storm reads it).
async fn drive_tether(
    workload: &Workload,
    target: &Target,
    addr: std::net::SocketAddr,
    fleet: tether::Fleet,
    first_shared: &std::sync::OnceLock<Arc<Shared>>,
) -> (Outcome, Vec<DeviceReport>, Vec<ReceiverReport>) {
    let keys = fleet.keys;
    let devices = fleet.devices;
    drive(
        workload,
        target,
        |shared, index| {
            let key = keys
                .get(shared.workload.tenant_of_receiver(index))
                .cloned()
                .unwrap_or_default();
            tokio::spawn(tether::receiver(shared, addr, index, key))
        },
        |shared, index, permits| {
            let _ = first_shared.set(Arc::clone(&shared));
            let (id, token) = devices.get(index).cloned().unwrap_or_default();
            tokio::spawn(tether::device(shared, addr, index, id, token, permits))
        },
    )
    .await
}

async fn run_mosquitto(args: &Args, workload: &Workload) -> Result<Outcome, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let broker = mqtt::Mosquitto::start(&args.mosquitto, dir.path())?;
    let addr = broker.addr();
    let target = Target::new(broker.id());
    let (mut outcome, device_reports, receiver_reports) = drive(
        workload,
        &target,
        |shared, index| tokio::spawn(mqtt::receiver(shared, addr, index)),
        |shared, index, permits| tokio::spawn(mqtt::device(shared, addr, index, permits)),
    )
    .await;
    drop(broker);
    outcome.peer = "mosquitto (QoS 1)".into();
    outcome.settings = "persistence, set_tcp_nodelay".into();
    account(workload, &mut outcome, &device_reports, &receiver_reports);
    Ok(outcome)
}

type Task<T> = tokio::task::JoinHandle<T>;

/// Runs the phases of a workload against a started server.
async fn drive<R, D>(
    workload: &Workload,
    target: &Target,
    spawn_receiver: R,
    spawn_device: D,
) -> (Outcome, Vec<DeviceReport>, Vec<ReceiverReport>)
where
    R: Fn(Arc<Shared>, usize) -> Task<ReceiverReport>,
    D: Fn(Arc<Shared>, usize, Arc<Semaphore>) -> Task<DeviceReport>,
{
    let mut outcome = Outcome {
        connections: workload.devices + workload.receivers(),
        ..Outcome::default()
    };
    let (phase, phase_rx) = watch::channel(Phase::Connect);
    let shared = Arc::new(Shared::new(workload.clone(), phase_rx));
    tokio::time::sleep(Duration::from_millis(300)).await;
    outcome.rss_idle_kib = procstat::rss_kib(target.pid());

    let receivers: Vec<_> = (0..workload.receivers())
        .map(|index| spawn_receiver(Arc::clone(&shared), index))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while shared.receivers_ready.load(Ordering::Relaxed) < workload.receivers()
        && Instant::now() < deadline
        && !receivers.iter().any(tokio::task::JoinHandle::is_finished)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let permits = Arc::new(Semaphore::new(workload.connect_concurrency));
    let fleet_start = shared.micros();
    let devices: Vec<_> = (0..workload.devices)
        .map(|index| spawn_device(Arc::clone(&shared), index, Arc::clone(&permits)))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while shared.connected.load(Ordering::Relaxed) < workload.devices && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    outcome.connect_seconds = (shared.micros() - fleet_start) as f64 / 1e6;
    tokio::time::sleep(Duration::from_secs(2)).await;
    outcome.rss_fleet_kib = procstat::rss_kib(target.pid());

    let server_cpu = procstat::cpu_seconds(Some(target.pid()));
    let generator_cpu = procstat::cpu_seconds(None);
    let window = Instant::now();
    let _ = phase.send(Phase::Run);
    tokio::time::sleep(Duration::from_secs_f64(workload.seconds)).await;
    let _ = phase.send(Phase::Drain);
    outcome.window_seconds = window.elapsed().as_secs_f64();
    outcome.rss_end_kib = procstat::rss_kib(target.pid());
    outcome.server_cpu =
        (procstat::cpu_seconds(Some(target.pid())) - server_cpu) / outcome.window_seconds;
    outcome.generator_cpu = (procstat::cpu_seconds(None) - generator_cpu) / outcome.window_seconds;

    let connected = shared.connected.load(Ordering::Relaxed);
    let drain_start = Instant::now();
    let deadline = drain_start + workload.drain;
    loop {
        let drained = shared.drained.load(Ordering::Relaxed) >= connected;
        let expected = shared.acked.load(Ordering::Relaxed) * workload.receivers_per_tenant as u64;
        let delivered = shared.delivered.load(Ordering::Relaxed) >= expected;
        if drained && delivered {
            outcome.drained = true;
            break;
        }
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    outcome.drain_seconds = drain_start.elapsed().as_secs_f64();
    let _ = phase.send(Phase::Stop);
    let mut device_reports = Vec::with_capacity(devices.len());
    for task in devices {
        device_reports.push(task.await.unwrap_or_default());
    }
    let mut receiver_reports = Vec::with_capacity(receivers.len());
    for task in receivers {
        receiver_reports.push(task.await.unwrap_or_default());
    }
    outcome.failed_attempts = shared.failed_attempts.load(Ordering::Relaxed);
    (outcome, device_reports, receiver_reports)
}

/// Adds up the reports.
fn account(
    workload: &Workload,
    outcome: &mut Outcome,
    devices: &[DeviceReport],
    receivers: &[ReceiverReport],
) {
    let mut ack_latencies = Vec::new();
    for report in devices {
        outcome.offered += report.offered;
        outcome.refused += report.refused;
        outcome.sent += report.sent;
        outcome.acked += report.acked.len() as u64;
        ack_latencies.extend_from_slice(&report.ack_latencies);
        if let Some(error) = &report.error {
            outcome.errors += 1;
            outcome.first_error.get_or_insert_with(|| error.clone());
        }
    }
    let mut latencies = Vec::new();
    for (index, report) in receivers.iter().enumerate() {
        if let Some(error) = &report.error {
            outcome.errors += 1;
            outcome.first_error.get_or_insert_with(|| error.clone());
        }
        outcome.delivered_duplicates += report.duplicates;
        latencies.extend_from_slice(&report.latencies);
        for device in workload.devices_of(workload.tenant_of_receiver(index)) {
            let acked = &devices[device].acked;
            let seen = report.seen.get(device);
            outcome.expected_deliveries += acked.len() as u64;
            outcome.delivered += seen.map_or(0, |s| s.len() as u64);
            outcome.lost_in_delivery += acked
                .iter()
                .filter(|seq| !seen.is_some_and(|s| s.contains(*seq)))
                .count() as u64;
        }
    }
    outcome.delivery = Percentiles::of(latencies);
    outcome.ack = Percentiles::of(ack_latencies);
}

/// The line above a workload's table.
fn heading(workload: &Workload) -> String {
    let rate = if workload.rate > 0.0 {
        format!("{} msg/s", workload.rate)
    } else {
        "as fast as the window allows".into()
    };
    format!(
        "\n{} devices × {rate}, {} tenant(s), {} receiver(s) per tenant ({} channels), {:.0} s, window {}, outbox {}\n",
        workload.devices,
        workload.tenants,
        workload.receivers_per_tenant,
        if workload.per_device_channels {
            "one per device"
        } else {
            "one per tenant"
        },
        workload.seconds,
        workload.window,
        workload.outbox,
    )
}

fn table(workload: &Workload, columns: &[Outcome]) -> String {
    let mut out = heading(workload);
    let _ = write!(out, "\n| |");
    for column in columns {
        let _ = write!(out, " {} |", column.peer);
    }
    let _ = write!(out, "\n|---|");
    for _ in columns {
        let _ = write!(out, "---:|");
    }
    let per_second = |count: u64, outcome: &Outcome| {
        format!(
            "{count} ({:.0}/s)",
            count as f64 / outcome.window_seconds.max(1e-9)
        )
    };
    let ms = |p: &Percentiles| {
        if p.samples == 0 {
            "—".to_owned()
        } else {
            format!(
                "{:.2} / {:.2} / {:.2} / {:.1} ms",
                p.p50, p.p95, p.p99, p.max
            )
        }
    };
    let kib_per = |rss: u64, outcome: &Outcome| {
        format!(
            "{:.1} KiB ({} MiB in all)",
            rss.saturating_sub(outcome.rss_idle_kib) as f64 / outcome.connections.max(1) as f64,
            rss / 1024
        )
    };
    let rows: Vec<(&str, Cell<'_>)> = vec![
        ("server settings", Box::new(|o| o.settings.clone())),
        (
            "fleet connected in",
            Box::new(|o| {
                format!(
                    "{:.2} s ({} failed attempts)",
                    o.connect_seconds, o.failed_attempts
                )
            }),
        ),
        ("offered", Box::new(|o| per_second(o.offered, o))),
        ("refused (outbox full)", Box::new(|o| o.refused.to_string())),
        ("sent", Box::new(|o| per_second(o.sent, o))),
        ("acked", Box::new(|o| per_second(o.acked, o))),
        (
            "stored (read back)",
            Box::new(|o| {
                o.stored.map_or("— (not readable)".into(), |s| {
                    format!("{s} ({} twice)", o.stored_duplicates.unwrap_or(0))
                })
            }),
        ),
        (
            "delivered / expected",
            Box::new(|o| format!("{} / {}", o.delivered, o.expected_deliveries)),
        ),
        (
            "lost acked (store / delivery)",
            Box::new(|o| {
                format!(
                    "{} / {}",
                    o.lost_in_store.map_or("—".into(), |l| l.to_string()),
                    o.lost_in_delivery
                )
            }),
        ),
        (
            "delivered twice",
            Box::new(|o| o.delivered_duplicates.to_string()),
        ),
        (
            "publish→receiver p50/p95/p99/max",
            Box::new(move |o| ms(&o.delivery)),
        ),
        ("publish→ack p50/p95/p99/max", Box::new(move |o| ms(&o.ack))),
        (
            "server RSS per connection, fleet idle",
            Box::new(move |o| kib_per(o.rss_fleet_kib, o)),
        ),
        (
            "server RSS per connection, end of window",
            Box::new(move |o| kib_per(o.rss_end_kib, o)),
        ),
        (
            "CPU server / generator (of one core)",
            Box::new(|o| {
                format!(
                    "{:.0} % / {:.0} %",
                    o.server_cpu * 100.0,
                    o.generator_cpu * 100.0
                )
            }),
        ),
        (
            "drained / connection errors",
            Box::new(|o| {
                format!(
                    "{} / {}{}",
                    if o.drained { "yes" } else { "no (timed out)" },
                    o.errors,
                    o.first_error
                        .as_ref()
                        .map_or(String::new(), |e| format!(" ({e})"))
                )
            }),
        ),
    ];
    for (name, cell) in rows {
        let _ = write!(out, "\n| {name} |");
        for column in columns {
            let _ = write!(out, " {} |", cell(column));
        }
    }
    out.push('\n');
    out
}

fn storm_table(storm: storm::Storm, figures: &storm::StormOutcome) -> String {
    format!(
        "\n| reconnect storm ({} jitter) | |\n|---|---:|\n\
         | server stopped (SIGTERM, 1001) at | {:.1} s into the window |\n\
         | server away (stop → listening again) | {:.2} s |\n\
         | devices connected again | {} |\n\
         | after the server was back: half / 99 % / all | {:.2} / {:.2} / {:.2} s |\n\
         | most reconnections in one second | {} |\n\
         | failed or refused attempts from the stop on | {} |\n",
        if storm.jitter { "the SDK's full" } else { "no" },
        storm.at,
        figures.away_seconds,
        figures.reconnected,
        figures.p50,
        figures.p99,
        figures.all,
        figures.peak_per_second,
        figures.failed_attempts,
    )
}

fn curve_table(curve: &[(f64, Vec<Outcome>)]) -> String {
    let mut out = String::from(
        "\n| rate per device | peer | offered/s | acked/s | refused | publish→ack p99 | publish→receiver p99 | lost acked | RSS end |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    );
    for (rate, columns) in curve {
        for o in columns {
            let _ = write!(
                out,
                "\n| {rate} | {} | {:.0} | {:.0} | {} | {:.1} ms | {:.1} ms | {} | {} MiB |",
                o.peer,
                o.offered as f64 / o.window_seconds.max(1e-9),
                o.acked as f64 / o.window_seconds.max(1e-9),
                o.refused,
                o.ack.p99,
                o.delivery.p99,
                o.lost_in_store.unwrap_or(0) + o.lost_in_delivery,
                o.rss_end_kib / 1024,
            );
        }
    }
    out.push('\n');
    out
}
