//! The dashboard's readings in a real headless Chromium (chromedriver +
//! fantoccini) against the real `tether-server` binary: devices that
//! describe their readings (over the real device protocol), a week of
//! history loaded in bulk, live readings on top. One chart per quantity in
//! the declared units, time ranges (custom too), the device filter, the
//! export (content checked), the device list's signal, offline time and
//! declared commands, and the phone layout.
//!
//! Needs the Debian packages `chromium` and `chromium-driver` (`cargo xtask
//! setup`); without them these tests fail. The desktop view is the README's
//! `docs/images/dashboard.png`, overwritten only with
//! `TETHER_UPDATE_SCREENSHOTS=1`.

#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod browser;
mod common;

use std::path::Path;

use browser::{
    ServerProcess, click, database, horizontal_overflow, js, text, wait_for_text, wait_visible,
};
use common::{BoxError, Device, TestResult};
use serde_json::{Value, json};
use tether_browser_test::fantoccini::{Client, Locator};
use tether_browser_test::{Browser, BrowserOptions, free_port, save_docs_image, save_screenshot};
use tether_proto::{
    DescribeChannel, DescribeCommand, DeviceToServer, FieldDescription, Fields, Status,
};
use tether_server::store::{Admin, ImportEvent};

const CHANNEL: &str = "home/climate";
const MINUTE: u64 = 60_000;
const DAY: u64 = 24 * 60 * MINUTE;

const CLIMATE: DescribeChannel<'static> = DescribeChannel::new(
    CHANNEL,
    Fields::new(&[
        FieldDescription::new("centi_celsius")
            .with_label("Temperature")
            .with_unit("°C")
            .with_scale(0.01)
            .with_decimals(2),
        FieldDescription::new("humidity")
            .with_label("Humidity")
            .with_unit("%")
            .with_decimals(0)
            .with_range(0.0, 100.0),
    ]),
);

const RELAY: DescribeCommand<'static> = DescribeCommand::new("relay")
    .with_label("Relay on/off")
    .with_example(r#"{"on":true}"#);

fn reading(centi_celsius: u64, humidity: u64) -> String {
    format!("{{\"centi_celsius\":{centi_celsius},\"humidity\":{humidity}}}")
}

/// Eight days of a reading every 10 minutes, and the last 50 minutes
/// every 10 seconds, of sensor-a and sensor-b (b is 3 °C cooler and 7 %
/// more humid).
fn history(now: u64) -> Vec<ImportEvent> {
    let mut events = Vec::new();
    let mut add = |time: u64, step: u64| {
        for (device, offset) in [("sensor-a", 0), ("sensor-b", 300)] {
            events.push(ImportEvent {
                device: device.into(),
                device_time_ms: Some(time),
                server_time_ms: time,
                payload: reading(
                    2_200 + (step * 7) % 400 - offset,
                    40 + step % 15 + offset / 40,
                ),
            });
        }
    };
    let start = now - 8 * DAY;
    let mut time = start;
    while time < now - 60 * MINUTE {
        add(time, (time - start) / (10 * MINUTE));
        time += 10 * MINUTE;
    }
    while time < now - MINUTE {
        add(time, (time - start) / 10_000);
        time += 10_000;
    }
    events
}

/// A device that connects, describes its channel (and a command, and its
/// signal, when given) and publishes `readings`.
async fn describing_device(
    addr: std::net::SocketAddr,
    token: &str,
    id: &str,
    command: bool,
    rssi: Option<i16>,
    readings: &[(u64, u64)],
) -> Result<Device, BoxError> {
    let mut device = Device::connect(addr, token).await?;
    device.hello(id, 7).await?;
    device
        .send(&DeviceToServer::DescribeChannel(CLIMATE))
        .await?;
    if command {
        device.send(&DeviceToServer::DescribeCommand(RELAY)).await?;
    }
    if rssi.is_some() {
        device
            .send(&DeviceToServer::Status(Status { rssi_dbm: rssi }))
            .await?;
    }
    for (seq, (centi, humidity)) in (1..).zip(readings) {
        device
            .publish(seq, CHANNEL, &reading(*centi, *humidity))
            .await?;
        device.wait_ack(seq).await?;
    }
    Ok(device)
}

struct Setup {
    _data: tempfile::TempDir,
    server: ServerProcess,
    key: String,
    devices: Vec<Device>,
    /// The history loaded in bulk.
    history: Vec<ImportEvent>,
}

async fn setup() -> Result<Setup, BoxError> {
    let data = tempfile::tempdir()?;
    let (server, key) = ServerProcess::start(data.path(), free_port()?)?;
    let key = key.ok_or("no receiver key printed on first start")?;
    let now = tether_server::now_ms();
    let (tokens, events) = register(data.path(), now)?;
    // sensor-c comes and goes: offline.
    drop(describing_device(server.addr, &tokens[2], "sensor-c", false, None, &[]).await?);
    let a = describing_device(
        server.addr,
        &tokens[0],
        "sensor-a",
        true,
        Some(-61),
        &[(2_400, 41), (2_430, 42), (2_459, 43)],
    )
    .await?;
    let b = describing_device(
        server.addr,
        &tokens[1],
        "sensor-b",
        false,
        Some(-78),
        &[(2_105, 50)],
    )
    .await?;
    Ok(Setup {
        _data: data,
        server,
        key,
        devices: vec![a, b],
        history: events,
    })
}

fn register(data: &Path, now: u64) -> Result<(Vec<String>, Vec<ImportEvent>), BoxError> {
    let admin = Admin::open(&database(data))?;
    let tenant = admin.tenant_id("default")?;
    let tokens = ["sensor-a", "sensor-b", "sensor-c"]
        .iter()
        .map(|id| Ok(admin.add_device(Some(tenant), Some(id), false)?.token))
        .collect::<Result<Vec<_>, BoxError>>()?;
    let events = history(now);
    admin.import_events(tenant, CHANNEL, &events)?;
    Ok((tokens, events))
}

/// Signs in with the key and opens the channel.
async fn open(client: &Client, base: &str, key: &str) -> Result<(), BoxError> {
    client.goto(base).await?;
    js(
        client,
        "localStorage.setItem('tether.receiverKey', arguments[0]);",
        vec![json!(key)],
    )
    .await?;
    client.goto(&format!("{base}#channel={CHANNEL}")).await?;
    client.refresh().await?;
    wait_visible(client, "#channel-view").await?;
    Ok(())
}

const TEMPERATURE: &str = ".quantity[data-quantity='Temperature (°C)']";
const HUMIDITY: &str = ".quantity[data-quantity='Humidity (%)']";

/// A data attribute of the temperature chart, as a number.
async fn chart_data(client: &Client, name: &str) -> Result<u64, BoxError> {
    let value = js(
        client,
        "const e = document.querySelector(arguments[0]); return e ? Number(e.dataset[arguments[1]]) : -1;",
        vec![json!(TEMPERATURE), json!(name)],
    )
    .await?;
    value
        .as_u64()
        .ok_or_else(|| format!("{name} is {value}").into())
}

async fn choose_range(client: &Client, value: &str) -> Result<(), BoxError> {
    client
        .find(Locator::Css("#range"))
        .await?
        .select_by_value(value)
        .await?;
    Ok(())
}

/// Fetches `path` in the page as the dashboard does, with its key.
async fn fetch_in_page(client: &Client, path: &str) -> Result<(u16, String), BoxError> {
    let answer = client
        .execute_async(
            "const [path, done] = arguments; \
             fetch(path, {headers: {Authorization: 'Bearer ' + localStorage.getItem('tether.receiverKey')}}) \
             .then(async r => done([r.status, await r.text()])).catch(e => done([0, String(e)]));",
            vec![json!(path)],
        )
        .await?;
    let status = answer[0].as_u64().unwrap_or(0);
    Ok((
        u16::try_from(status)?,
        answer[1].as_str().unwrap_or_default().to_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn described_charts_ranges_filter_export_and_device_list() -> TestResult {
    let mut setup = setup().await?;
    let base = format!("http://{}/", setup.server.addr);
    let browser = Browser::launch(BrowserOptions::default().window(1280, 1000)).await?;
    let client = browser.client();
    open(client, &base, &setup.key).await?;

    // One chart per quantity, in the declared units, one line per device
    // (sensor-b's last bucket holds its one live reading, 2105 hundredths;
    // sensor-a's the mean of its three, 24.00 to 24.59 °C).
    wait_for_text(
        client,
        &format!("{TEMPERATURE} .latest"),
        "sensor-b 21.05 °C",
    )
    .await?;
    let latest = text(client, &format!("{TEMPERATURE} .latest")).await?;
    let a_value: f64 = latest
        .split("sensor-a ")
        .nth(1)
        .and_then(|rest| rest.split(" °C").next())
        .ok_or_else(|| format!("no sensor-a value in {latest:?}"))?
        .parse()?;
    assert!((24.0..=24.59).contains(&a_value), "{latest}");
    wait_for_text(client, &format!("{HUMIDITY} .latest"), "sensor-b 50 %").await?;
    let charts = js(
        client,
        "return [...document.querySelectorAll('#readings .quantity')].map(f => f.dataset.quantity);",
        vec![],
    )
    .await?;
    assert_eq!(charts, json!(["Temperature (°C)", "Humidity (%)"]));
    let legend = text(client, &format!("{TEMPERATURE} .u-legend")).await?;
    assert!(
        legend.contains("sensor-a") && legend.contains("sensor-b"),
        "{legend}"
    );
    wait_for_text(
        client,
        "#readings-status",
        "Showing last hour (10 s averages), then live",
    )
    .await?;
    // The last hour: ~300 ten-second buckets, from an hour ago.
    assert!(chart_data(client, "points").await? >= 250);
    let now = tether_server::now_ms();
    let first = chart_data(client, "first").await?;
    assert!(
        first + 65 * MINUTE >= now && first + 50 * MINUTE <= now,
        "{first}"
    );

    // The message table: values with their units, the raw JSON one click
    // away.
    wait_for_text(
        client,
        "#events tbody",
        "Temperature 24.59 °C · Humidity 43 %",
    )
    .await?;
    let row = "#events tbody tr[data-device='sensor-a']";
    let opened = |open: bool| {
        js(
            client,
            "return document.querySelector(arguments[0]).open === arguments[1];",
            vec![json!(format!("{row} .payload details")), json!(open)],
        )
    };
    assert_eq!(opened(false).await?, json!(true), "the JSON starts folded");
    click(client, &format!("{row} .payload summary")).await?;
    assert_eq!(opened(true).await?, json!(true), "one click shows it");
    let raw: Value = serde_json::from_str(&text(client, &format!("{row} .payload pre")).await?)?;
    assert_eq!(raw, json!({"centi_celsius": 2459, "humidity": 43}));
    click(client, &format!("{row} .payload summary")).await?;

    // The device list: signal strength, offline for how long, firmware.
    wait_for_text(
        client,
        "#devices tr[data-device='sensor-a'] .signal",
        "-61 dBm (good)",
    )
    .await?;
    wait_for_text(
        client,
        "#devices tr[data-device='sensor-b'] .signal",
        "-78 dBm (fair)",
    )
    .await?;
    wait_for_text(
        client,
        "#devices tr[data-device='sensor-c'] .signal",
        "not reported",
    )
    .await?;
    wait_for_text(
        client,
        "#devices tr[data-device='sensor-c'] .status",
        "Offline for",
    )
    .await?;
    wait_for_text(
        client,
        "#devices tr[data-device='sensor-a'] .status",
        "Online",
    )
    .await?;
    wait_for_text(
        client,
        "#devices tr[data-device='sensor-a'] .firmware",
        "1.0.0",
    )
    .await?;

    // The README's picture: described charts, both devices, live.
    js(
        client,
        "document.querySelector('#channel-title').scrollIntoView({block: 'start'});",
        vec![],
    )
    .await?;
    let png = client.screenshot().await?;
    let saved = save_docs_image("dashboard", &png)?;
    assert!(std::fs::read(&saved.artifact)?.starts_with(b"\x89PNG\r\n\x1a\n"));

    // Live readings join the range: the line ends with them.
    let before = chart_data(client, "last").await?;
    let mut a = setup.devices.remove(0);
    a.publish(4, CHANNEL, &reading(2_512, 44)).await?;
    a.wait_ack(4).await?;
    wait_for_text(
        client,
        &format!("{TEMPERATURE} .latest"),
        "sensor-a 25.12 °C",
    )
    .await?;
    assert!(chart_data(client, "last").await? > before);

    // Ranges: a week in 30-minute buckets, 30 days in 2-hour ones (the
    // history starts 8 days ago).
    choose_range(client, "week").await?;
    wait_for_text(
        client,
        "#readings-status",
        "Showing last week (30 min averages)",
    )
    .await?;
    let first = chart_data(client, "first").await?;
    assert!(
        first + 7 * DAY + 31 * MINUTE >= now && first + 7 * DAY - 31 * MINUTE <= now,
        "{first}"
    );
    assert!(chart_data(client, "points").await? >= 300);
    choose_range(client, "month").await?;
    wait_for_text(
        client,
        "#readings-status",
        "Showing last 30 days (2 h averages)",
    )
    .await?;
    // The first 2-hour bucket is the one of the oldest reading (exactly:
    // comparing with the clock read later fails when the history began in the
    // last seconds of a bucket, about one run in a thousand).
    let oldest = setup
        .history
        .iter()
        .map(|event| event.server_time_ms)
        .min()
        .ok_or("no history")?;
    let first = chart_data(client, "first").await?;
    assert_eq!(
        first,
        oldest - oldest % (2 * 60 * MINUTE),
        "{first}, oldest {oldest}"
    );

    // A custom range: three to two days ago, in 5-minute buckets; a range
    // that ends before it starts is refused with what to do.
    choose_range(client, "custom").await?;
    wait_visible(client, "#custom-range").await?;
    js(
        client,
        "const local = ms => new Date(ms - new Date(ms).getTimezoneOffset() * 60000).toISOString().slice(0, 16); \
         document.querySelector('#range-from').value = local(arguments[0]); \
         document.querySelector('#range-to').value = local(arguments[1]);",
        vec![json!(now - 2 * DAY), json!(now - 3 * DAY)],
    )
    .await?;
    click(client, "#range-apply").await?;
    wait_for_text(
        client,
        "#readings-status",
        "The end of the range must be after its start",
    )
    .await?;
    js(
        client,
        "const local = ms => new Date(ms - new Date(ms).getTimezoneOffset() * 60000).toISOString().slice(0, 16); \
         document.querySelector('#range-from').value = local(arguments[0]); \
         document.querySelector('#range-to').value = local(arguments[1]);",
        vec![json!(now - 3 * DAY), json!(now - 2 * DAY)],
    )
    .await?;
    click(client, "#range-apply").await?;
    wait_for_text(
        client,
        "#readings-status",
        "Showing the chosen range (5 min averages)",
    )
    .await?;
    let first = chart_data(client, "first").await?;
    let last = chart_data(client, "last").await?;
    // (From and To are whole minutes; buckets start at multiples of 5.)
    assert!(
        first + 3 * DAY + 6 * MINUTE >= now && last + 2 * DAY <= now + 5 * MINUTE,
        "{first}..{last}, now {now}"
    );
    assert!(chart_data(client, "points").await? >= 100);
    let custom_png = client.screenshot().await?;
    save_screenshot("dashboard-custom-range", &custom_png)?;

    // The device filter: sensor-b out of the charts, the table, the
    // export.
    choose_range(client, "hour").await?;
    wait_for_text(client, "#readings-status", "Showing last hour").await?;
    click(client, "#device-filter input[value='sensor-b']").await?;
    wait_for_text(
        client,
        &format!("{TEMPERATURE} .u-legend tr.u-off"),
        "sensor-b",
    )
    .await?;
    let latest = text(client, &format!("{TEMPERATURE} .latest")).await?;
    assert!(
        latest.contains("sensor-a") && !latest.contains("sensor-b"),
        "{latest}"
    );
    let hidden = js(
        client,
        "return [...document.querySelectorAll('#events tbody tr')].filter(r => !r.hidden).map(r => r.dataset.device);",
        vec![],
    )
    .await?;
    assert!(
        hidden
            .as_array()
            .is_some_and(|rows| !rows.is_empty() && rows.iter().all(|d| d == "sensor-a")),
        "{hidden}"
    );

    // Export: the file the browser saves, and its content.
    click(client, "#export-csv").await?;
    wait_for_text(client, "#readings-status", "Downloaded home-climate.csv").await?;
    let path = js(
        client,
        "return document.querySelector('#readings').dataset.lastExport;",
        vec![],
    )
    .await?;
    let path = path.as_str().ok_or("no export")?.to_owned();
    assert!(
        path.contains("devices=sensor-a") && path.contains("format=csv"),
        "{path}"
    );
    let (status, csv) = fetch_in_page(client, &path).await?;
    assert_eq!(status, 200);
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("offset,server_time,device_time,device,Temperature (°C),Humidity (%),payload")
    );
    let rows: Vec<&str> = lines.collect();
    // sensor-a's history from the range's start on, and its four live
    // readings.
    let since: u64 = path
        .split("since_ms=")
        .nth(1)
        .and_then(|rest| rest.split('&').next())
        .ok_or("no since_ms")?
        .parse()?;
    let history = setup
        .history
        .iter()
        .filter(|e| e.device == "sensor-a" && e.server_time_ms >= since)
        .count();
    assert_eq!(
        rows.len(),
        history + 4,
        "sensor-a's last hour and its live readings"
    );
    assert!(rows.iter().all(|row| row.contains(",sensor-a,")));
    assert!(
        rows.iter().any(|row| row.contains(",25.12,44,")),
        "the scaled live reading"
    );
    click(client, "#export-jsonl").await?;
    wait_for_text(client, "#readings-status", "Downloaded home-climate.jsonl").await?;
    let path = js(
        client,
        "return document.querySelector('#readings').dataset.lastExport;",
        vec![],
    )
    .await?;
    let (status, lines) = fetch_in_page(client, path.as_str().ok_or("no export")?).await?;
    assert_eq!(status, 200);
    let events: Vec<Value> = lines
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(events.len(), rows.len());
    assert!(
        events
            .iter()
            .all(|event| event["device"] == "sensor-a" && event["channel"] == CHANNEL)
    );

    // The command form offers what the device declared.
    client
        .find(Locator::Css("#command-device"))
        .await?
        .select_by_value("sensor-a")
        .await?;
    wait_for_text(
        client,
        "#command-hint",
        "sensor-a takes: relay (Relay on/off)",
    )
    .await?;
    let form = js(
        client,
        "return [document.querySelector('#command-channel').value, document.querySelector('#command-payload').value, \
         [...document.querySelectorAll('#command-channels option')].map(o => o.value)];",
        vec![],
    )
    .await?;
    assert_eq!(form, json!(["relay", "{\"on\":true}", ["relay"]]));
    client
        .find(Locator::Css("#command-device"))
        .await?
        .select_by_value("sensor-c")
        .await?;
    wait_for_text(client, "#command-hint", "sensor-c declared no commands").await?;

    // A device describes the channel anew while the page is open (the
    // page's subscription asked for descriptions): a chart for the new
    // quantity appears, without a reload.
    const BATTERY: DescribeChannel<'static> = DescribeChannel::new(
        CHANNEL,
        Fields::new(&[
            FieldDescription::new("centi_celsius")
                .with_label("Temperature")
                .with_unit("°C")
                .with_scale(0.01)
                .with_decimals(2),
            FieldDescription::new("mv")
                .with_label("Battery")
                .with_unit("V")
                .with_scale(0.001),
        ]),
    );
    click(client, "#device-filter input[value='sensor-b']").await?;
    let mut b = setup.devices.remove(0);
    b.send(&DeviceToServer::DescribeChannel(BATTERY)).await?;
    wait_visible(client, ".quantity[data-quantity='Battery (V)']").await?;
    b.publish(2, CHANNEL, r#"{"centi_celsius":2110,"mv":3712}"#)
        .await?;
    b.wait_ack(2).await?;
    wait_for_text(
        client,
        ".quantity[data-quantity='Battery (V)'] .latest",
        "sensor-b 3.712 V",
    )
    .await?;

    // A reading that arrives while a range is being read (the page holds
    // the series' answer, read before the reading was stored, until the
    // reading is in the message table) still joins the charts once the
    // range is drawn.
    js(
        client,
        "const fetch = window.fetch; \
         window.fetch = (...args) => fetch(...args).then(response => \
           String(args[0]).includes('/v1/series') \
             ? new Promise(done => { window.releaseSeries = () => done(response); }) : response);",
        vec![],
    )
    .await?;
    choose_range(client, "day").await?;
    let deadline = std::time::Instant::now() + browser::WAIT;
    while js(client, "return typeof window.releaseSeries;", vec![]).await? != json!("function") {
        if std::time::Instant::now() > deadline {
            return Err("the page never read the series".into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    b.publish(3, CHANNEL, &reading(2_222, 51)).await?;
    b.wait_ack(3).await?;
    wait_for_text(client, "#events tbody tr:first-child", "22.22 °C").await?;
    js(client, "window.releaseSeries();", vec![]).await?;
    wait_for_text(client, "#readings-status", "Showing last day").await?;
    wait_for_text(
        client,
        &format!("{TEMPERATURE} .latest"),
        "sensor-b 22.22 °C",
    )
    .await?;

    browser.close().await;
    drop((a, b));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_fit_a_phone_without_horizontal_scrolling() -> TestResult {
    let setup = setup().await?;
    let base = format!("http://{}/", setup.server.addr);
    let browser = Browser::launch(BrowserOptions::default().phone(412, 915)).await?;
    let client = browser.client();
    open(client, &base, &setup.key).await?;
    wait_for_text(
        client,
        &format!("{TEMPERATURE} .latest"),
        "sensor-b 21.05 °C",
    )
    .await?;
    wait_for_text(client, "#events tbody", "Temperature 24.59 °C").await?;
    wait_for_text(client, "#devices tr[data-device='sensor-a'] .signal", "dBm").await?;
    let overflow = horizontal_overflow(client).await?;
    assert!(
        overflow <= 0,
        "the page is {overflow} px wider than the phone"
    );
    // Every chart fits the screen.
    let widths = js(
        client,
        "return [...document.querySelectorAll('#readings .quantity canvas')].map(c => c.getBoundingClientRect().right);",
        vec![],
    )
    .await?;
    let widest = widths
        .as_array()
        .ok_or("no charts")?
        .iter()
        .filter_map(Value::as_f64)
        .fold(0.0, f64::max);
    let layout = js(
        client,
        "return [window.innerWidth, document.documentElement.clientWidth, \
         document.querySelector('#readings .quantity').getBoundingClientRect().right, \
         document.querySelector('#readings .quantity').clientWidth];",
        vec![],
    )
    .await?;
    assert_eq!(layout[0], 412, "a phone's viewport");
    assert!(
        widest > 200.0 && widest <= 412.0,
        "charts end at {widest} px; window, page, figure right, figure width: {layout}"
    );
    // With the custom range form and the filter open, still no scrolling.
    choose_range(client, "custom").await?;
    wait_visible(client, "#custom-range").await?;
    let overflow = horizontal_overflow(client).await?;
    assert!(overflow <= 0, "with the custom range form: {overflow} px");
    let png = client.screenshot().await?;
    save_screenshot("dashboard-readings-phone", &png)?;
    // Every control is labelled.
    assert_eq!(browser::unlabelled_controls(client).await?, json!([]));
    browser.close().await;
    drop(setup);
    Ok(())
}
