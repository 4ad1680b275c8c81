//! Readings that describe themselves, end to end: tether-core's client (as
//! on the firmware, through tether-host's tokio board) describes its
//! channel and commands and reports its signal; the real server stores
//! them and serves them over HTTP. Descriptions that break the rules,
//! sent by hand, close the session with a typed close code; a device that
//! describes nothing works as before.

// Tests are std code; the no_std import lints do not apply.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod common;

use core::time::Duration;

use common::*;
use futures_util::SinkExt;
use serde_json::{Value, json};
use tether_core::client::{self, ClientConfig, NoCommands, Resources};
use tether_host::board::TokioBoard;
use tether_proto::{DescribeChannel, DescribeCommand, DeviceToServer, FieldDescription, Fields};
use tokio_tungstenite::tungstenite::Message;

const CLIMATE: DescribeChannel<'static> = DescribeChannel::new(
    "home/climate",
    Fields::new(&[
        FieldDescription::new("centi_celsius")
            .with_label("Temperature")
            .with_unit("°C")
            .with_scale(0.01)
            .with_decimals(1),
        FieldDescription::new("humidity")
            .with_label("Humidity")
            .with_unit("%")
            .with_range(0.0, 100.0),
    ]),
);

const RELAY: DescribeCommand<'static> = DescribeCommand::new("relay")
    .with_label("Relay on/off")
    .with_example(r#"{"on":true}"#);
const LED: DescribeCommand<'static> = DescribeCommand::new("led");

/// Polls `GET path` until `check` holds.
async fn poll(
    t: &TestServer,
    path: &str,
    check: impl Fn(&Value) -> bool,
) -> Result<Value, BoxError> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = http(t.addr, "GET", path, Some(&t.key), None).await?;
        if status == 200 && check(&body) {
            return Ok(body);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("GET {path} never matched: {status} {body}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs a tether-core client with these descriptions until `until`
/// resolves.
async fn run_client(
    t: &TestServer,
    token: &str,
    descriptions: &[DescribeChannel<'_>],
    commands: &[DescribeCommand<'_>],
    rssi: Option<i16>,
    until: impl core::future::Future<Output = Result<(), BoxError>>,
) -> TestResult {
    let url = t.url("/v1/device");
    let authorization = format!("Bearer {token}");
    let config = ClientConfig::new(&url, "sensor-1", "2.3.0")
        .with_authorization(&authorization)
        .with_descriptions(descriptions)
        .with_commands(commands);
    let mut resources: Resources<TokioBoard> = Resources::new();
    let (client, mut runner) = client::new(TokioBoard::new(), config, &mut resources)?;
    if let Some(rssi) = rssi {
        client.set_rssi(rssi);
    }
    client
        .publish(
            "home/climate",
            &json!({"centi_celsius": 2459, "humidity": 43}),
        )
        .await?;
    tokio::select! {
        stopped = runner.run(NoCommands) => Err(format!("the client stopped: {stopped:?}").into()),
        result = until => result,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_describes_its_readings_commands_and_signal() -> TestResult {
    let t = TestServer::start().await?;
    let token = t.add_device("default", "sensor-1")?;
    run_client(&t, &token, &[CLIMATE], &[RELAY, LED], Some(-67), async {
        let body = poll(&t, "/v1/descriptions?channel=home/climate", |body| {
            body["descriptions"].as_array().is_some_and(|d| d.len() == 1)
        })
        .await?;
        let description = &body["descriptions"][0];
        assert_eq!(description["device"], "sensor-1");
        assert_eq!(
            description["fields"],
            json!([
                {"key": "centi_celsius", "label": "Temperature", "unit": "°C", "scale": 0.01, "decimals": 1},
                {"key": "humidity", "label": "Humidity", "unit": "%", "min": 0, "max": 100}
            ])
        );
        let body = poll(&t, "/v1/devices", |body| {
            body["devices"][0]["rssi_dbm"] == -67 && body["devices"][0]["commands"].as_array().is_some_and(|c| c.len() == 2)
        })
        .await?;
        let device = &body["devices"][0];
        assert_eq!(device["firmware_version"], "2.3.0");
        assert_eq!(
            device["commands"],
            json!([
                {"channel": "relay", "label": "Relay on/off", "example": {"on": true}},
                {"channel": "led", "label": "", "example": null}
            ])
        );
        assert!(device["rssi_ms"].as_u64().is_some());
        // The reading itself arrived too.
        poll(&t, "/v1/messages?channel=home/climate", |body| {
            body["messages"][0]["payload"]["centi_celsius"] == 2459
        })
        .await?;
        Ok(())
    })
    .await?;

    // A later firmware takes only `led` and describes the channel
    // differently: its session replaces both.
    let celsius = [FieldDescription::new("centi_celsius")
        .with_unit("°C")
        .with_scale(0.01)];
    let changed = [DescribeChannel::new("home/climate", Fields::new(&celsius))];
    run_client(&t, &token, &changed, &[LED], None, async {
        poll(&t, "/v1/devices", |body| {
            body["devices"][0]["commands"]
                == json!([{"channel": "led", "label": "", "example": null}])
        })
        .await?;
        poll(&t, "/v1/descriptions?channel=home/climate", |body| {
            body["descriptions"][0]["fields"]
                == json!([{"key": "centi_celsius", "unit": "°C", "scale": 0.01}])
        })
        .await?;
        Ok(())
    })
    .await?;
    // The signal strength stays until reported again.
    let (_, body) = http(t.addr, "GET", "/v1/devices", Some(&t.key), None).await?;
    assert_eq!(body["devices"][0]["rssi_dbm"], -67);
    t.server.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_describes_nothing_works_as_before() -> TestResult {
    let t = TestServer::start().await?;
    let token = t.add_device("default", "sensor-1")?;
    run_client(&t, &token, &[], &[], None, async {
        poll(&t, "/v1/messages?channel=home/climate", |body| {
            body["messages"][0]["payload"]["humidity"] == 43
        })
        .await?;
        Ok(())
    })
    .await?;
    let (_, body) = http(
        t.addr,
        "GET",
        "/v1/descriptions?channel=home/climate",
        Some(&t.key),
        None,
    )
    .await?;
    assert_eq!(body["descriptions"], json!([]));
    let (_, body) = http(t.addr, "GET", "/v1/devices", Some(&t.key), None).await?;
    assert_eq!(body["devices"][0]["commands"], json!([]));
    assert_eq!(body["devices"][0]["rssi_dbm"], Value::Null);
    t.server.shutdown().await;
    Ok(())
}

/// Descriptions a decoder lets through (it checks lengths only) but the
/// rules refuse close the session with a typed code, and nothing of them
/// is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptions_that_break_the_rules_close_the_session() -> TestResult {
    let t = TestServer::start().await?;
    let token = t.add_device("default", "d1")?;
    let cases: [(&str, u16); 6] = [
        (
            r#"{"v":1,"describe_channel":{"channel":"c","fields":[]}}"#,
            4007,
        ),
        (
            r#"{"v":1,"describe_channel":{"channel":"c","fields":[{"key":"a b"}]}}"#,
            4007,
        ),
        (
            r#"{"v":1,"describe_channel":{"channel":"c","fields":[{"key":"t","scale":0}]}}"#,
            4007,
        ),
        (
            r#"{"v":1,"describe_channel":{"channel":"c","fields":{"key":"t"}}}"#,
            4007,
        ),
        (
            r#"{"v":1,"describe_command":{"channel":"c","label":"x","example":{"a":1}}}"#,
            0,
        ),
        (r#"{"v":1,"status":{"rssi_dbm":12}}"#, 4007),
    ];
    for (frame, code) in cases {
        let mut device = Device::connect(t.addr, &token).await?;
        device.json = true;
        device.hello("d1", 1).await?;
        device.ws.send(Message::Text(frame.into())).await?;
        if code == 0 {
            // Accepted: the session goes on.
            device.publish(1, "c", "1").await?;
            device.wait_ack(1).await?;
            continue;
        }
        assert_eq!(close_code(&mut device.ws).await?, code, "{frame}");
    }
    // Binary too: a field list that is not JSON.
    let mut device = Device::connect(t.addr, &token).await?;
    device.hello("d1", 2).await?;
    device
        .send(&DeviceToServer::DescribeChannel(DescribeChannel::new(
            "c",
            Fields::from_json(b"not json"),
        )))
        .await?;
    assert_eq!(close_code(&mut device.ws).await?, 4007);
    let (_, body) = http(
        t.addr,
        "GET",
        "/v1/descriptions?channel=c",
        Some(&t.key),
        None,
    )
    .await?;
    assert_eq!(body["descriptions"], json!([]));
    // More commands than a session may declare.
    let mut device = Device::connect(t.addr, &token).await?;
    device.hello("d1", 3).await?;
    let names: Vec<String> = (0..33).map(|n| format!("c{n}")).collect();
    for name in &names {
        device
            .send(&DeviceToServer::DescribeCommand(DescribeCommand::new(name)))
            .await?;
    }
    assert_eq!(close_code(&mut device.ws).await?, 4008);
    t.server.shutdown().await;
    Ok(())
}

/// A receiver that asks (`"describe":true` in its `subscribe`) gets the
/// channel's stored descriptions right after `subscribed`, then each new
/// one as a device sends it; one that does not ask never sees a
/// `description`; another tenant's description of a channel of the same
/// name reaches nobody here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_that_ask_get_descriptions_stored_then_live() -> TestResult {
    let t = TestServer::start().await?;
    let token_a = t.add_device("default", "sensor-a")?;
    let token_b = t.add_device("default", "sensor-b")?;
    let admin = t.admin()?;
    let other = admin.add_tenant("other")?;
    let token_x = admin
        .add_device(Some(other), Some("sensor-x"), false)?
        .token;

    // sensor-a described the channel before anyone subscribed.
    let mut a = Device::connect(t.addr, &token_a).await?;
    a.hello("sensor-a", 1).await?;
    a.send(&DeviceToServer::DescribeChannel(CLIMATE)).await?;
    poll(&t, "/v1/descriptions?channel=home/climate", |body| {
        body["descriptions"]
            .as_array()
            .is_some_and(|d| d.len() == 1)
    })
    .await?;

    let mut asking = Receiver::connect(t.addr, &t.key).await?;
    asking
        .send_json(&json!({"v": 1, "subscribe": {"channel": "home/climate", "from": null, "describe": true}}))
        .await?;
    assert!(asking.recv().await?.get("subscribed").is_some());
    let stored = asking.recv().await?;
    assert_eq!(
        stored,
        json!({"v": 1, "description": {
            "channel": "home/climate",
            "device": "sensor-a",
            "fields": [
                {"key": "centi_celsius", "label": "Temperature", "unit": "°C", "scale": 0.01, "decimals": 1},
                {"key": "humidity", "label": "Humidity", "unit": "%", "min": 0, "max": 100}
            ]
        }})
    );
    let mut plain = Receiver::connect(t.addr, &t.key).await?;
    plain.subscribe("home/climate", None).await?;

    // Another tenant's device describes its own `home/climate`.
    let mut x = Device::connect(t.addr, &token_x).await?;
    x.hello("sensor-x", 1).await?;
    x.send(&DeviceToServer::DescribeChannel(CLIMATE)).await?;
    x.publish(1, "home/climate", "1").await?;
    x.wait_ack(1).await?;

    // sensor-b describes the channel live, then publishes.
    let volts = [FieldDescription::new("mv")
        .with_label("Battery")
        .with_unit("V")
        .with_scale(0.001)];
    let mut b = Device::connect(t.addr, &token_b).await?;
    b.hello("sensor-b", 1).await?;
    b.send(&DeviceToServer::DescribeChannel(DescribeChannel::new(
        "home/climate",
        Fields::new(&volts),
    )))
    .await?;
    b.publish(1, "home/climate", r#"{"mv":3712}"#).await?;
    b.wait_ack(1).await?;

    // The asking receiver: sensor-b's description and its reading (two
    // tasks send them: in either order); sensor-x's of the other tenant
    // never came.
    let (first, second) = (asking.recv().await?, asking.recv().await?);
    let (live, event) = if first.get("description").is_some() {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(live["description"]["device"], "sensor-b", "{live}");
    assert_eq!(
        live["description"]["fields"],
        json!([{"key": "mv", "label": "Battery", "unit": "V", "scale": 0.001}])
    );
    assert_eq!(event["event"]["payload"], json!({"mv": 3712}), "{event}");
    // The other: only the reading.
    let event = plain.recv().await?;
    assert_eq!(event["event"]["device"], "sensor-b", "{event}");
    t.server.shutdown().await;
    Ok(())
}
