//! Load test: a `tether-server` process on loopback, N simulated devices
//! publishing at R messages/s each, M receivers subscribed to everything.
//! Prints messages/s stored (acknowledged) and delivered, p50/p99
//! publish-to-receiver latency and the server's memory per connection.
//!
//! Run through `cargo xtask load --devices N --rate R --receivers M`, which
//! builds the release server and passes `--server target/release/tether-server`.

#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tether_proto::{DeviceToServer, Hello, Payload, Publish, ServerToDevice};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::Message;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Load test of the relay server.
#[derive(Debug, Parser)]
struct Args {
    /// Simulated devices.
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// Messages per second per device.
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Receivers, each subscribed to the channel all devices publish on.
    #[arg(long, default_value_t = 1)]
    receivers: usize,
    /// Seconds to measure after every device is connected.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The server binary.
    #[arg(long, default_value = "target/release/tether-server")]
    server: String,
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    acked: AtomicU64,
    delivered: AtomicU64,
    connected: AtomicU64,
    errors: AtomicU64,
}

fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    // Register the devices before the server opens the database.
    let ids: Vec<String> = (0..args.devices).map(|n| format!("load-{n:05}")).collect();
    let (key, tokens) = {
        let admin = tether_server::store::Admin::open(&dir.path().join("tether.db"))?;
        let tenant = admin.add_tenant("default")?;
        let key = admin.add_key(
            tenant,
            &tether_server::store::ChannelFilter::ALL,
            false,
            None,
        )?;
        let devices = admin.add_devices(tenant, &ids)?;
        (
            key.key,
            devices.into_iter().map(|d| d.token).collect::<Vec<_>>(),
        )
    };
    let connections = (args.devices + args.receivers + 100).to_string();
    let mut child = Command::new(&args.server)
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--log",
            "warn",
            "--max-connections",
            &connections,
            // Every simulated client comes from 127.0.0.1.
            "--max-connections-per-ip",
            "0",
        ])
        .args([
            "--publish-rate",
            "100000",
            "--publish-burst",
            "100000",
            "--live-queue",
            "65536",
        ])
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut addr: Option<SocketAddr> = None;
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        if let Some(rest) = line?.strip_prefix("listening on ") {
            addr = Some(rest.trim().parse()?);
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let addr = addr.ok_or("the server printed no address")?;
    let idle_rss = rss_kib(pid);

    let counters = Arc::new(Counters::default());
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut receivers = Vec::new();
    for _ in 0..args.receivers {
        receivers.push(tokio::spawn(receiver(
            addr,
            key.clone(),
            Arc::clone(&counters),
            Arc::clone(&measuring),
            Arc::clone(&stop),
        )));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let mut devices = Vec::new();
    for (n, token) in tokens.into_iter().enumerate() {
        devices.push(tokio::spawn(device(
            addr,
            ids[n].clone(),
            token,
            args.rate,
            Arc::clone(&counters),
            Arc::clone(&stop),
        )));
        if n % 200 == 199 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    while counters.connected.load(Ordering::Relaxed) < args.devices as u64 {
        if started.elapsed() > Duration::from_secs(120) {
            return Err("devices did not all connect within 120 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connect_time = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let loaded_rss = rss_kib(pid);
    let acked0 = counters.acked.load(Ordering::Relaxed);
    let delivered0 = counters.delivered.load(Ordering::Relaxed);
    measuring.store(true, Ordering::Relaxed);
    let window = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = window.elapsed().as_secs_f64();
    let acked = counters.acked.load(Ordering::Relaxed) - acked0;
    let delivered = counters.delivered.load(Ordering::Relaxed) - delivered0;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for receiver in receivers {
        if let Ok(Ok(mut samples)) = tokio::time::timeout(Duration::from_secs(5), receiver).await {
            latencies.append(&mut samples);
        }
    }
    for device in devices {
        device.abort();
    }
    let _ = child.kill();
    let _ = child.wait();
    latencies.sort_unstable();
    let percentile = |p: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let index = ((latencies.len() - 1) as f64 * p).round() as usize;
        latencies[index.min(latencies.len() - 1)] as f64 / 1000.0
    };
    let per_connection =
        (loaded_rss.saturating_sub(idle_rss)) as f64 / (args.devices + args.receivers) as f64;
    println!(
        "devices {} × {} msg/s, receivers {}, measured {:.1} s (all connected after {:.1} s)",
        args.devices,
        args.rate,
        args.receivers,
        elapsed,
        connect_time.as_secs_f64()
    );
    println!("stored (acknowledged): {:.0} msg/s", acked as f64 / elapsed);
    println!(
        "delivered to receivers: {:.0} msg/s",
        delivered as f64 / elapsed
    );
    println!(
        "publish-to-receiver latency: p50 {:.2} ms, p99 {:.2} ms ({} samples)",
        percentile(0.5),
        percentile(0.99),
        latencies.len()
    );
    println!(
        "server RSS: idle {idle_rss} KiB, loaded {loaded_rss} KiB, {per_connection:.1} KiB per connection"
    );
    println!("client errors: {}", counters.errors.load(Ordering::Relaxed));
    Ok(())
}

async fn device(
    addr: SocketAddr,
    id: String,
    token: String,
    rate: f64,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) {
    if let Err(error) = device_inner(addr, &id, &token, rate, &counters, &stop).await
        && !stop.load(Ordering::Relaxed)
    {
        eprintln!("{id}: {error}");
        counters.errors.fetch_add(1, Ordering::Relaxed);
    }
}

async fn device_inner(
    addr: SocketAddr,
    id: &str,
    token: &str,
    rate: f64,
    counters: &Counters,
    stop: &AtomicBool,
) -> Result<(), BoxError> {
    let mut request = format!("ws://{addr}/v1/device").into_client_request()?;
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}"))?,
    );
    let (ws, _) = tokio_tungstenite::connect_async(request).await?;
    let (mut sink, mut stream) = ws.split();
    let boot_id = now_micros();
    let hello = DeviceToServer::Hello(Hello {
        device_id: id,
        firmware_version: "load",
        boot_id,
        last_acked_seq: 0,
        max_downlink_len: None,
    });
    sink.send(Message::Binary(hello.encode_to_vec()?.into()))
        .await?;
    let welcome = stream.next().await.ok_or("closed before Welcome")??;
    let max_in_flight = match ServerToDevice::decode(&welcome.into_data())? {
        ServerToDevice::Welcome(welcome) => u32::from(welcome.max_in_flight),
        _ => return Err("expected Welcome".into()),
    };
    counters.connected.fetch_add(1, Ordering::Relaxed);
    let acked = Arc::new(AtomicU64::new(0));
    let acked_reader = Arc::clone(&acked);
    let reader = async move {
        while let Some(Ok(message)) = stream.next().await {
            if let Message::Binary(bytes) = message
                && let Ok(ServerToDevice::Ack(ack)) = ServerToDevice::decode(&bytes)
            {
                acked_reader.store(u64::from(ack.seq), Ordering::Relaxed);
            }
        }
    };
    let counters_acked = &counters.acked;
    let writer = async move {
        let period = Duration::from_secs_f64(1.0 / rate);
        // Start at a random phase so devices do not publish in lockstep.
        tokio::time::sleep(
            period.mul_f64(f64::from(u32::try_from(boot_id % 1000).unwrap_or(0)) / 1000.0),
        )
        .await;
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seq: u32 = 0;
        let mut counted: u64 = 0;
        while !stop.load(Ordering::Relaxed) {
            ticker.tick().await;
            let done = acked.load(Ordering::Relaxed);
            counters_acked.fetch_add(done - counted, Ordering::Relaxed);
            counted = done;
            if u64::from(seq) - done >= u64::from(max_in_flight) {
                continue;
            }
            seq += 1;
            let payload = format!("{{\"t\":{}}}", now_micros());
            let publish = DeviceToServer::Publish(Publish {
                seq,
                channel: "load",
                time_ms: None,
                payload: Payload::from_json_str(&payload),
            });
            sink.send(Message::Binary(publish.encode_to_vec()?.into()))
                .await?;
            counters.published.fetch_add(1, Ordering::Relaxed);
        }
        Ok::<_, BoxError>(())
    };
    tokio::select! {
        () = reader => Ok(()),
        result = writer => result,
    }
}

async fn receiver(
    addr: SocketAddr,
    key: String,
    counters: Arc<Counters>,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> Vec<u32> {
    let mut samples = Vec::new();
    let Ok(mut request) = format!("ws://{addr}/v1/receiver").into_client_request() else {
        return samples;
    };
    let Ok(value) = HeaderValue::from_str(&format!("Bearer {key}")) else {
        return samples;
    };
    request.headers_mut().insert("authorization", value);
    let Ok((mut ws, _)) = tokio_tungstenite::connect_async(request).await else {
        counters.errors.fetch_add(1, Ordering::Relaxed);
        return samples;
    };
    if ws
        .send(Message::Text(
            r#"{"v":1,"subscribe":{"channel":"load","from":null}}"#.into(),
        ))
        .await
        .is_err()
    {
        return samples;
    }
    while !stop.load(Ordering::Relaxed) {
        let Ok(Some(Ok(message))) =
            tokio::time::timeout(Duration::from_millis(200), ws.next()).await
        else {
            continue;
        };
        let Message::Text(text) = message else {
            continue;
        };
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let Some(sent) = value["event"]["payload"]["t"].as_u64() else {
            continue;
        };
        if measuring.load(Ordering::Relaxed) {
            counters.delivered.fetch_add(1, Ordering::Relaxed);
            samples.push(u32::try_from(now_micros().saturating_sub(sent)).unwrap_or(u32::MAX));
        }
    }
    samples
}
