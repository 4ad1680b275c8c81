//! `--setups sqlite,postgres,cluster`: the same workload on three
//! deployments of tether-server, one after the other in one run, with one
//! table of durable ingest and latency.
//!
//! ```text
//!  sqlite    generator ──▶ node ── SQLite file
//!  postgres  generator ──▶ node ── PostgreSQL ◀─┐   (Debian package, started
//!  cluster   generator ──▶ HAProxy ─┬─▶ node A ─┤    on loopback by
//!                                   ├─▶ node B ─┤    tether-cluster-test)
//!                                   └─▶ node C ─┘
//!                          nodes ◀── NATS (events, sessions) ──▶ nodes
//! ```
//!
//! Devices and receivers of the cluster connect through HAProxy, which
//! spreads them round robin over the nodes, so a receiver gets about two
//! thirds of its events from the other nodes over NATS. Durable ingest is
//! what the devices got acknowledged (an ack follows a commit) per second,
//! from the window's start until the last ack (at saturation the backlog
//! is acknowledged after the window); latency is from the device's send to a receiver (and to
//! the ack). After the run the nodes are killed (SIGKILL) and the database
//! is read back: every acknowledged record must be there, once.
//!
//! The generator, every node, PostgreSQL, NATS and HAProxy share one
//! machine: the figures are floors for it, not a cluster's headroom.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use clap::ValueEnum;
use tether_cluster_test::{Haproxy, Nats, Postgres};
use tether_server::store::PgAdmin;

use crate::tether::{Server, Stored};
use crate::workload::Workload;
use crate::{Args, Outcome, Target, account, drive_tether, run_tether};

/// A deployment of tether-server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Setup {
    /// One node on its SQLite file (the default deployment).
    Sqlite,
    /// One node on PostgreSQL.
    Postgres,
    /// Three nodes on PostgreSQL and NATS behind HAProxy.
    Cluster,
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::Sqlite => "1 node, SQLite",
            Setup::Postgres => "1 node, PostgreSQL",
            Setup::Cluster => "3 nodes, PostgreSQL + NATS, HAProxy",
        }
    }

    fn nodes(self) -> usize {
        match self {
            Setup::Sqlite | Setup::Postgres => 1,
            Setup::Cluster => 3,
        }
    }
}

/// Runs every workload of `args` on each of `setups` and prints one
/// table per workload; returns the outcomes (per workload, per setup).
///
/// # Errors
/// A server could not be started or its database not read.
pub async fn run(args: &Args, setups: &[Setup]) -> Result<Vec<Vec<Outcome>>, String> {
    let workloads = args.workloads();
    if workloads.iter().any(|w| w.storm.is_some()) {
        return Err("the storm workload restarts one SQLite node; run it without --setups".into());
    }
    // One PostgreSQL for the run (a fresh database per setup and workload).
    let postgres = if setups.iter().any(|s| *s != Setup::Sqlite) {
        Some(tokio::task::block_in_place(Postgres::start).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let mut all = Vec::new();
    for (number, workload) in workloads.into_iter().enumerate() {
        let mut columns = Vec::new();
        for &setup in setups {
            let mut outcome = match (setup, &postgres) {
                (Setup::Sqlite, _) => run_tether(args, &workload).await?,
                (_, Some(postgres)) => {
                    let database = format!("load_{number}_{}", setup.nodes());
                    run_on_postgres(args, &workload, setup, postgres, &database).await?
                }
                (_, None) => return Err("no PostgreSQL".into()),
            };
            outcome.peer = setup.name().into();
            columns.push(outcome);
        }
        println!("{}", table(&workload, &columns));
        all.push(columns);
    }
    Ok(all)
}

/// One node on PostgreSQL, or three on PostgreSQL and NATS behind
/// HAProxy.
async fn run_on_postgres(
    args: &Args,
    workload: &Workload,
    setup: Setup,
    postgres: &Postgres,
    database: &str,
) -> Result<Outcome, String> {
    let url = tokio::task::block_in_place(|| postgres.create_database(database))
        .map_err(|e| e.to_string())?;
    let fleet = {
        let admin = PgAdmin::connect(&url).await.map_err(|e| e.to_string())?;
        crate::tether::register(&admin, workload).await?
    };
    let nats = if setup == Setup::Cluster {
        Some(tokio::task::block_in_place(Nats::start).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let mut dirs = Vec::new();
    let mut nodes = Vec::new();
    for index in 0..setup.nodes() {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut server_args = crate::server_args(args, workload);
        server_args.extend(["--database".into(), url.clone()]);
        if let Some(nats) = &nats {
            server_args.extend([
                // Behind HAProxy every connection has its address.
                "--max-connections-per-ip".into(),
                "0".into(),
                "--nats".into(),
                nats.url(),
                "--node-name".into(),
                format!("load-node-{index}"),
            ]);
        }
        let server = if args.server.as_os_str() == "in-process" {
            Server::in_process(dir.path(), &server_args).await?
        } else {
            Server::process(&args.server, dir.path(), &server_args)?
        };
        nodes.push(server);
        dirs.push(dir);
    }
    let haproxy = if setup == Setup::Cluster {
        let ports: Vec<u16> = nodes.iter().map(|node| node.addr().port()).collect();
        let haproxy =
            tokio::task::block_in_place(|| Haproxy::start(&ports)).map_err(|e| e.to_string())?;
        // The health checks bring the nodes in (rise 2 × 500 ms).
        tokio::time::sleep(Duration::from_millis(1500)).await;
        Some(haproxy)
    } else {
        None
    };
    let front: SocketAddr = match &haproxy {
        Some(haproxy) => ([127, 0, 0, 1], haproxy.port()).into(),
        None => nodes.first().ok_or("no node")?.addr(),
    };
    // Memory and CPU rows are node 0's (of the cluster: a third of the
    // connections).
    let target = Target::new(nodes.first().ok_or("no node")?.id());
    let (mut outcome, device_reports, receiver_reports) =
        drive_tether(workload, &target, front, fleet, &std::sync::OnceLock::new()).await;
    drop(haproxy);
    for node in nodes {
        node.stop().await?;
    }
    let stored = tokio::task::block_in_place(|| read_back(postgres, database, workload.devices))?;
    outcome.lost_in_store = Some(stored.missing(&device_reports));
    outcome.stored = Some(stored.rows);
    outcome.stored_duplicates = Some(stored.duplicates);
    outcome.settings = format!("{} node(s)", setup.nodes());
    account(workload, &mut outcome, &device_reports, &receiver_reports);
    drop(nats);
    Ok(outcome)
}

/// Reads every stored record of `database` back (after the nodes
/// stopped).
fn read_back(postgres: &Postgres, database: &str, devices: usize) -> Result<Stored, String> {
    let text = postgres
        .psql(database, "SELECT payload FROM messages")
        .map_err(|e| e.to_string())?;
    let mut stored = Stored::new(devices);
    for line in text.lines().filter(|line| !line.is_empty()) {
        stored.add(line.as_bytes());
    }
    Ok(stored)
}

/// The figures of one workload on each setup.
fn table(workload: &Workload, columns: &[Outcome]) -> String {
    let mut out = crate::heading(workload);
    out.push_str(
        "\n| setup | durable ingest (acked/s until the last ack) | offered / refused (outbox full) | delivered / expected | publish→receiver p50 / p99 | publish→ack p50 / p99 | stored (twice) | lost acked (store / delivery) | drained, errors |\n|---|---:|---:|---:|---:|---:|---:|---:|---|",
    );
    for o in columns {
        // Acknowledged per second from the window's start until the last
        // ack: at saturation the backlog is acknowledged after the window.
        let per_second = o.acked as f64 / (o.window_seconds + o.drain_seconds).max(1e-9);
        let _ = write!(
            out,
            "\n| {} | {per_second:.0} msg/s | {} / {} | {} / {} | {:.1} / {:.1} ms | {:.1} / {:.1} ms | {} ({}) | {} / {} | {}, {}{} |",
            o.peer,
            o.offered,
            o.refused,
            o.delivered,
            o.expected_deliveries,
            o.delivery.p50,
            o.delivery.p99,
            o.ack.p50,
            o.ack.p99,
            o.stored.unwrap_or(0),
            o.stored_duplicates.unwrap_or(0),
            o.lost_in_store.unwrap_or(0),
            o.lost_in_delivery,
            if o.drained { "yes" } else { "no" },
            o.errors,
            o.first_error
                .as_ref()
                .map_or(String::new(), |e| format!(" ({e})")),
        );
    }
    out.push('\n');
    out
}
