//! What a series query costs on a large database: fills a database with
//! one-second readings of N devices on one channel (bulk, through
//! `Admin::import_events`, not through WebSockets), rolls them up, then
//! times the dashboard's time ranges, from the store and through the HTTP
//! API of a running server, side by side with the same buckets computed
//! from the events without rollups (what a store without them would do).
//!
//! Run through `cargo xtask series --events 10000000 --devices 10` (release
//! build). `--data-dir DIR` keeps the filled database for the next run (a
//! run finds it filled and only measures).

#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use rusqlite::{Connection, OpenFlags, params};
use tether_server::store::{
    Admin, ChannelFilter, ImportEvent, SeriesQuery, SqliteStore, Store, StoreOptions, bucket_width,
};
use tether_server::{Config, Server};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const CHANNEL: &str = "site/readings";
const HOUR: u64 = 3_600_000;
const DAY: u64 = 24 * HOUR;

/// Series query cost on a large database.
#[derive(Debug, Parser)]
struct Args {
    /// Events to store (one a second per device).
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// Devices publishing on the channel.
    #[arg(long, default_value_t = 10)]
    devices: u64,
    /// Times each query runs (the median is shown).
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// Keep the database here (filled once, reused); default: a temporary
    /// directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Also time the dashboard in headless Chromium: choosing a range until
    /// its charts are drawn.
    #[arg(long)]
    browser: bool,
}

fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1_000.0)
}

/// Fills the channel: `events` readings, `devices` interleaved, one a
/// second per device, the newest now.
fn fill(admin: &Admin, tenant: i64, events: u64, devices: u64) -> Result<(), BoxError> {
    let per_device = events.div_ceil(devices);
    let now = tether_server::now_ms();
    let first = now - now % 1_000 - (per_device - 1) * 1_000;
    let started = Instant::now();
    let mut batch = Vec::with_capacity(100_000);
    for index in 0..events {
        let second = index / devices;
        let device = index % devices;
        batch.push(ImportEvent {
            device: format!("sensor-{device:02}"),
            device_time_ms: Some(first + second * 1_000 - 40),
            server_time_ms: first + second * 1_000,
            payload: format!(
                "{{\"counter\":{second},\"centi_celsius\":{},\"humidity\":{},\"led\":false}}",
                2_000 + (second * 7 + device * 13) % 600,
                40 + (second + device) % 20
            ),
        });
        if batch.len() == batch.capacity() {
            admin.import_events(tenant, CHANNEL, &batch)?;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        admin.import_events(tenant, CHANNEL, &batch)?;
    }
    let took = started.elapsed();
    println!(
        "filled {events} events in {:.1} s ({:.0} events/s)",
        took.as_secs_f64(),
        events as f64 / took.as_secs_f64()
    );
    Ok(())
}

/// The same buckets as a series query, computed from the events alone.
fn from_events(path: &std::path::Path, since: u64, bucket: u64) -> Result<usize, BoxError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut statement = conn.prepare(
        "SELECT m.device_id, j.key, (m.server_time_ms / ?2) * ?2,
                count(*), total(j.value), min(j.value), max(j.value)
         FROM messages m, json_each(m.payload) j
         WHERE m.channel_id = (SELECT id FROM channels WHERE name = ?1)
           AND m.server_time_ms >= ?3 AND j.type IN ('integer', 'real')
           AND typeof(j.key) != 'integer'
         GROUP BY 1, 2, 3",
    )?;
    let rows = statement
        .query_map(
            params![CHANNEL, i64::try_from(bucket)?, i64::try_from(since)?],
            |_| Ok(()),
        )?
        .count();
    Ok(rows)
}

async fn run(args: Args) -> Result<(), BoxError> {
    let temporary = tempfile::tempdir()?;
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| temporary.path().to_owned());
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("tether.db");
    let (tenant, key) = {
        let admin = Admin::open(&path)?;
        let tenant = match admin.tenant_id("default") {
            Ok(tenant) => tenant,
            Err(_) => admin.add_tenant("default")?,
        };
        let key = admin.add_key(tenant, &ChannelFilter::ALL, false, Some("series_cost"))?;
        (tenant, key.key)
    };
    let stored = {
        let store = SqliteStore::open(&path, StoreOptions::default())?;
        let bounds = store.channel_bounds(tenant, CHANNEL).await?;
        store.close().await;
        bounds.next_offset - 1
    };
    if stored == 0 {
        fill(&Admin::open(&path)?, tenant, args.events, args.devices)?;
    } else {
        println!("reusing {stored} events in {}", path.display());
    }
    let store = Arc::new(SqliteStore::open(&path, StoreOptions::default())?);
    let started = Instant::now();
    let rolled = store.roll_up().await?;
    if rolled > 0 {
        let took = started.elapsed();
        println!(
            "rolled up {rolled} events in {:.1} s ({:.0} events/s)",
            took.as_secs_f64(),
            rolled as f64 / took.as_secs_f64()
        );
    }
    let end = store
        .list_channels(tenant)
        .await?
        .into_iter()
        .find(|channel| channel.name == CHANNEL)
        .and_then(|channel| channel.last_time_ms)
        .ok_or("the channel has no events")?;
    let size = std::fs::metadata(&path)?.len();
    println!(
        "database: {:.2} GB ({} events of {} devices on one channel)\n",
        size as f64 / 1e9,
        store.channel_bounds(tenant, CHANNEL).await?.next_offset - 1,
        args.devices
    );

    // The dashboard's ranges, live (open end), 600 buckets: from the store,
    // then the same buckets from the events alone.
    let ranges = [
        ("last hour", HOUR),
        ("last day", DAY),
        ("last week", 7 * DAY),
        ("last 30 days", 30 * DAY),
    ];
    let mut rows = Vec::new();
    for (name, span) in ranges {
        let since = end - span;
        let bucket = bucket_width(span, 600);
        let query = SeriesQuery {
            since_ms: since,
            until_ms: None,
            bucket_ms: bucket,
            devices: None,
        };
        let mut times = Vec::new();
        let mut points = 0;
        for _ in 0..args.rounds {
            let started = Instant::now();
            let series = store.series(tenant, CHANNEL, query.clone()).await?;
            times.push(started.elapsed());
            points = series.points.len();
        }
        let path = path.clone();
        let started = Instant::now();
        let raw_points =
            tokio::task::spawn_blocking(move || from_events(&path, since, bucket)).await??;
        let raw = started.elapsed();
        if raw_points != points {
            return Err(format!(
                "{name}: {raw_points} points from the events, {points} from the store"
            )
            .into());
        }
        rows.push((name, span, since, bucket, points, median(times), raw));
    }
    store.close().await;

    // Through the HTTP API of a server on the same database.
    // (`until_ms` just after the newest event: the server bounds a series'
    // buckets by the time to now, and a reused database is older.)
    let server = Server::start(Config::new(dir.clone(), "127.0.0.1:0".parse()?)).await?;
    let addr = server.local_addr();
    println!(
        "| range | bucket | events in range | points | store query | HTTP `GET /v1/series` | response | the same from the events, no rollups |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for (name, span, since, bucket, points, store_time, raw) in rows {
        let url = format!(
            "http://{addr}/v1/series?channel={CHANNEL}&since_ms={since}&until_ms={}&bucket_ms={bucket}",
            end + 1
        );
        let key = key.clone();
        let rounds = args.rounds;
        let (times, bytes) =
            tokio::task::spawn_blocking(move || -> Result<(Vec<Duration>, usize), BoxError> {
                let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
                let mut times = Vec::new();
                let mut bytes = 0;
                for _ in 0..rounds {
                    let started = Instant::now();
                    let body = agent
                        .get(&url)
                        .header("Authorization", &format!("Bearer {key}"))
                        .call()?
                        .into_body()
                        .read_to_string()?;
                    times.push(started.elapsed());
                    bytes = body.len();
                }
                Ok((times, bytes))
            })
            .await??;
        let in_range = (span / 1_000).min(args.events / args.devices) * args.devices;
        println!(
            "| {name} | {} s | {in_range} | {points} | {} | {} | {:.0} KB | {} |",
            bucket / 1_000,
            ms(store_time),
            ms(median(times)),
            bytes as f64 / 1e3,
            ms(raw),
        );
    }
    if args.browser {
        println!();
        dashboard(addr, &key, args.rounds).await?;
    }
    server.shutdown().await;
    Ok(())
}

/// Times the dashboard's readings view in headless Chromium: from choosing
/// a range to its charts drawn (the series fetched, the charts built, the
/// next animation frame), median of `rounds`.
async fn dashboard(addr: std::net::SocketAddr, key: &str, rounds: usize) -> Result<(), BoxError> {
    use tether_browser_test::{Browser, BrowserOptions};
    let browser = Browser::launch(BrowserOptions::default().window(1280, 1000)).await?;
    let client = browser.client();
    let base = format!("http://{addr}/");
    client.goto(&base).await?;
    client
        .execute(
            "localStorage.setItem('tether.receiverKey', arguments[0]);",
            vec![serde_json::json!(key)],
        )
        .await?;
    client.goto(&format!("{base}#channel={CHANNEL}")).await?;
    client.refresh().await?;
    // The readings view is up when it shows its first range.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let shown = client
            .execute(
                "const e = document.querySelector('#readings-status'); \
                 return !!e && e.textContent.startsWith('Showing');",
                vec![],
            )
            .await?;
        if shown == serde_json::json!(true) {
            break;
        }
        if Instant::now() > deadline {
            return Err("the dashboard never showed the channel's readings".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Choose `range` and answer the milliseconds until it is drawn.
    let choose = "const [range, label, done] = arguments; \
        const select = document.querySelector('#range'); \
        const status = document.querySelector('#readings-status'); \
        const started = performance.now(); \
        select.value = range; select.dispatchEvent(new Event('change')); \
        const check = () => { \
          if (status.textContent.startsWith('Showing ' + label) && \
              document.querySelectorAll('#readings .quantity canvas').length > 0) { \
            requestAnimationFrame(() => done(performance.now() - started)); \
          } else if (performance.now() - started > 60000) { done(-1); } \
          else { setTimeout(check, 1); } \
        }; \
        check();";
    let ranges = [
        ("hour", "last hour"),
        ("day", "last day"),
        ("week", "last week"),
        ("month", "last 30 days"),
    ];
    println!(
        "| range | dashboard: choose the range → charts drawn (Chromium) | charts | points per line |"
    );
    println!("| --- | --- | --- | --- |");
    for (range, label) in ranges {
        let mut times = Vec::new();
        for _ in 0..rounds {
            // From another range each time, so the view really loads.
            let other = if range == "hour" {
                ("day", "last day")
            } else {
                ("hour", "last hour")
            };
            for (name, text) in [other, (range, label)] {
                let answer = client
                    .execute_async(
                        choose,
                        vec![serde_json::json!(name), serde_json::json!(text)],
                    )
                    .await?;
                let ms = answer.as_f64().unwrap_or(-1.0);
                if ms < 0.0 {
                    return Err(format!("the dashboard never drew {text}").into());
                }
                if name == range {
                    times.push(Duration::from_secs_f64(ms / 1_000.0));
                }
            }
        }
        let shape = client
            .execute(
                "const charts = document.querySelectorAll('#readings .quantity'); \
                 return [charts.length, Number(charts[0]?.dataset.points ?? 0)];",
                vec![],
            )
            .await?;
        println!(
            "| {label} | {} | {} | {} |",
            ms(median(times)),
            shape[0],
            shape[1]
        );
    }
    browser.close().await;
    Ok(())
}
