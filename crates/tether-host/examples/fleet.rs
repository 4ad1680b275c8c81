//! A simulated fleet: many devices, each running the same no_std client as
//! the firmware, publishing typed readings to a relay.
//!
//! ```text
//! cargo run -p tether-host --example fleet -- --url ws://127.0.0.1:8080 --devices 500 --rate 5
//! ```
//!
//! Prints a progress line every second: readings published (accepted into
//! the outboxes), acknowledged by the server, reconnects, devices connected.

extern crate alloc;

use alloc::rc::Rc;
use core::cell::RefCell;
use core::time::Duration;
use std::io::Write as _;

use clap::Parser;
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;
use tether_core::client::{Buffers, Client, ClientConfig, NoCommands, Runner};
use tether_core::outbox::RamOutbox;
use tether_core::session::ConnectionState;
use tether_core::time::Clock;
use tether_host::clock::TokioClock;
use tether_host::connector::TokioConnector;

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
    /// `Authorization` header value for the upgrade, e.g. `Bearer <token>`.
    #[arg(long, env = "TETHER_TOKEN")]
    authorization: Option<String>,
}

/// What each simulated device publishes.
#[derive(Serialize)]
struct Reading {
    counter: u32,
    /// Hundredths of a degree Celsius (integers, as on a chip without FPU).
    centi_celsius: i32,
    rssi: i8,
}

type DeviceClient = Client<NoopRawMutex, RamOutbox<4096>, StdRng>;

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
    let clients: Rc<RefCell<Vec<Rc<DeviceClient>>>> = Rc::default();
    for number in 0..args.devices {
        let args = args.clone();
        let clients = Rc::clone(&clients);
        tokio::task::spawn_local(async move {
            if let Err(e) = device(number, &args, &clients).await {
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
        eprint!(
            "\r[{elapsed:>5} s] devices {connected}/{} connected | sent {sent} | acked {acked} | waiting {waiting} | reconnects {reconnects} | dropped {dropped}   ",
            args.devices
        );
        let _ = std::io::stderr().flush();
        if args.duration.is_some_and(|limit| elapsed >= limit) {
            eprintln!();
            return Ok(());
        }
    }
}

async fn device(
    number: u32,
    args: &Args,
    clients: &RefCell<Vec<Rc<DeviceClient>>>,
) -> anyhow::Result<()> {
    let device_id = format!("{}-{number:05}", args.prefix);
    let mut config = ClientConfig::new(&args.url, &device_id, "fleet-0.1.0");
    if let Some(authorization) = &args.authorization {
        config = config.with_authorization(authorization);
    }
    let clock = TokioClock::new();
    let client = Rc::new(
        DeviceClient::new(
            &config,
            RamOutbox::new(),
            StdRng::from_os_rng(),
            clock.now(),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    clients.borrow_mut().push(Rc::clone(&client));
    let mut buffers = Buffers::<1024, 512, 512>::new();
    let mut runner = Runner::new(
        &client,
        config,
        TokioConnector::new(),
        clock,
        StdRng::from_os_rng(),
        &mut buffers,
    )
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
            // A full outbox refuses: the reading is skipped, never blocked on.
            let _ = client.publish("fleet/readings", &reading);
        }
    };
    let mut handler = NoCommands;
    tokio::select! {
        _ = runner.run(&mut handler) => {}
        () = publish => {}
    }
    Ok(())
}
