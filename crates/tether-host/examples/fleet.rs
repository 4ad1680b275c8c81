//! A simulated fleet: many devices, each running the same no_std client as
//! the firmware, publishing typed readings to a relay.
//!
//! ```text
//! cargo run -p tether-host --example fleet -- --url ws://127.0.0.1:8080 --devices 500 --rate 5
//! ```
//!
//! Prints a progress line every second: readings offered (one per tick),
//! published (accepted into the outboxes), refused (the outbox was full, or
//! another publish error), acknowledged by the server, reconnects, devices
//! connected.
//!
//! Against `tether-server`, register devices first and pass their
//! credentials (`--tokens FILE`, one provisioning record per line as
//! `tether-server device add` prints them); the server checks that each
//! device's token matches its id.

extern crate alloc;

use alloc::rc::Rc;
use core::cell::{Cell, RefCell};
use core::time::Duration;
use std::io::Write as _;

use clap::Parser;
use serde::Serialize;
use tether_core::board::Board;
use tether_core::client::{Buffers, Client, ClientConfig, NoCommands, Runner};
use tether_core::session::ConnectionState;
use tether_host::board::TokioBoard;

/// Simulated tether devices publishing readings to a relay.
#[derive(Parser, Debug, Clone)]
#[command(version, about)]
struct Args {
    /// Relay URL (`ws://` or `wss://`), as a device would dial it.
    #[arg(long, default_value = "ws://127.0.0.1:8080")]
    url: String,
    /// Number of devices.
    #[arg(long, default_value_t = 10)]
    devices: u32,
    /// Readings per second, per device.
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Stop after this many seconds (default: run until interrupted).
    #[arg(long)]
    duration: Option<u64>,
    /// Device ids are `<prefix>-<number>`.
    #[arg(long, default_value = "fleet")]
    prefix: String,
    /// `Authorization` header value for the upgrade, e.g. `Bearer <token>`,
    /// the same for every device.
    #[arg(long, env = "TETHER_TOKEN")]
    authorization: Option<String>,
    /// Per-device credentials, one device per line: the provisioning record
    /// `tether-server device add` prints (`provisioning: {"device_id":…,
    /// "token":…}`), or `<device id> <token>`. Devices are then taken from
    /// the file (at most `--devices` of them).
    #[arg(long)]
    tokens: Option<std::path::PathBuf>,
}

/// A device id and the bearer token it authenticates with.
#[derive(Debug, Clone)]
struct Credentials {
    device_id: String,
    token: String,
}

fn read_credentials(path: &std::path::Path) -> anyhow::Result<Vec<Credentials>> {
    let text = std::fs::read_to_string(path)?;
    let mut all = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let record = line.strip_prefix("provisioning:").map(str::trim);
        let credentials = match record {
            Some(json) => {
                let value: serde_json::Value = serde_json::from_str(json)?;
                let field = |name: &str| {
                    value[name].as_str().map(str::to_owned).ok_or_else(|| {
                        anyhow::anyhow!("{}:{}: no `{name}`", path.display(), number + 1)
                    })
                };
                Credentials {
                    device_id: field("device_id")?,
                    token: field("token")?,
                }
            }
            None => {
                let mut words = line.split_whitespace();
                match (words.next(), words.next()) {
                    (Some(device_id), Some(token)) => Credentials {
                        device_id: device_id.to_owned(),
                        token: token.to_owned(),
                    },
                    _ => anyhow::bail!(
                        "{}:{}: expected `<device id> <token>`",
                        path.display(),
                        number + 1
                    ),
                }
            }
        };
        all.push(credentials);
    }
    Ok(all)
}

/// What each simulated device publishes.
#[derive(Serialize)]
struct Reading {
    counter: u32,
    /// Hundredths of a degree Celsius (integers, as on a chip without FPU).
    centi_celsius: i32,
    rssi: i8,
}

type DeviceClient = Client<TokioBoard>;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        anyhow::bail!("--rate must be a positive number");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    // Fail early on a bad URL instead of 500 times.
    ClientConfig::new(&args.url, "probe", "0.1.0")
        .validate()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let credentials = match &args.tokens {
        Some(path) => Some(read_credentials(path)?),
        None => None,
    };
    let devices = credentials.as_ref().map_or(args.devices, |all| {
        args.devices
            .min(u32::try_from(all.len()).unwrap_or(u32::MAX))
    });
    let clients: Rc<RefCell<Vec<Rc<DeviceClient>>>> = Rc::default();
    let ticks = Rc::new(Ticks::default());
    for number in 0..devices {
        let args = args.clone();
        let clients = Rc::clone(&clients);
        let ticks = Rc::clone(&ticks);
        let credentials = credentials
            .as_ref()
            .and_then(|all| all.get(number as usize).cloned());
        tokio::task::spawn_local(async move {
            if let Err(e) = device(number, &args, credentials, &clients, &ticks).await {
                eprintln!("device {number}: {e}");
            }
        });
    }

    let started = tokio::time::Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        ticker.tick().await;
        let (mut sent, mut acked, mut reconnects, mut connected, mut dropped, mut waiting) =
            (0u64, 0u64, 0u64, 0u32, 0u64, 0u64);
        for client in clients.borrow().iter() {
            let stats = client.stats();
            sent += u64::from(stats.session.published);
            acked += u64::from(stats.session.acknowledged);
            // Every link failure after the first connection is a reconnect.
            reconnects += u64::from(stats.session.link_failures);
            dropped += u64::from(stats.dropped);
            waiting += stats.outbox_len as u64;
            connected += u32::from(client.state() == ConnectionState::Connected);
        }
        let elapsed = started.elapsed().as_secs();
        let (offered, refused) = (ticks.offered.get(), ticks.refused.get());
        eprint!(
            "\r[{elapsed:>5} s] devices {connected}/{devices} connected | offered {offered} | refused {refused} | sent {sent} | acked {acked} | waiting {waiting} | reconnects {reconnects} | dropped {dropped}   ",
        );
        let _ = std::io::stderr().flush();
        if args.duration.is_some_and(|limit| elapsed >= limit) {
            eprintln!();
            return Ok(());
        }
    }
}

/// Readings offered (one per tick of every device) and those the client
/// refused (`publish` returned an error: the outbox was full with the
/// default `FullPolicy::Reject`).
#[derive(Debug, Default)]
struct Ticks {
    offered: Cell<u64>,
    refused: Cell<u64>,
}

async fn device(
    number: u32,
    args: &Args,
    credentials: Option<Credentials>,
    clients: &RefCell<Vec<Rc<DeviceClient>>>,
    ticks: &Ticks,
) -> anyhow::Result<()> {
    let (device_id, authorization) = match credentials {
        Some(credentials) => (
            credentials.device_id,
            Some(format!("Bearer {}", credentials.token)),
        ),
        None => (
            format!("{}-{number:05}", args.prefix),
            args.authorization.clone(),
        ),
    };
    let mut config = ClientConfig::new(&args.url, &device_id, "fleet-0.1.0");
    if let Some(authorization) = &authorization {
        config = config.with_authorization(authorization);
    }
    // The client is shared with the statistics printer, so it is placed
    // by hand instead of in `client::Resources`.
    let parts = TokioBoard::new().into_parts();
    let client = Rc::new(
        DeviceClient::from_parts(&config, parts.clock, parts.rng, parts.outbox)
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    clients.borrow_mut().push(Rc::clone(&client));
    let mut buffers = Buffers::<1024, 512, 512>::new();
    let mut runner = Runner::new(&client, config, parts.connector, &mut buffers)
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    let period = Duration::from_secs_f64(1.0 / args.rate);
    let publish = async {
        // Devices of a real fleet do not boot in the same millisecond.
        let offset = period.mul_f64(f64::from(number % 1000) / 1000.0);
        tokio::time::sleep(offset).await;
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for counter in 1u32.. {
            ticker.tick().await;
            let reading = Reading {
                counter,
                centi_celsius: 2_000
                    + i32::try_from((number * 37 + counter * 11) % 600).unwrap_or(0),
                rssi: -40 - i8::try_from((number + counter) % 40).unwrap_or(0),
            };
            // A full outbox refuses: the reading is counted as refused,
            // never blocked on.
            ticks.offered.set(ticks.offered.get() + 1);
            if client.publish("fleet/readings", &reading).await.is_err() {
                ticks.refused.set(ticks.refused.get() + 1);
            }
        }
    };
    tokio::select! {
        _ = runner.run(NoCommands) => {}
        () = publish => {}
    }
    Ok(())
}
