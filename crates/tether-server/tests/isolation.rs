//! Tenant isolation: a key of tenant A can neither read nor command
//! anything of tenant B, over every endpoint (table-driven), and devices
//! cannot speak for each other.

// Tests are std code; the no_std import lints do not apply.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod common;

use std::future::Future;
use std::pin::Pin;

use common::*;
use serde_json::{Value, json};
use tether_server::store::{AdminStore, ChannelFilter};

type Case<'a> = (
    &'static str,
    Pin<Box<dyn Future<Output = Result<(), BoxError>> + 'a>>,
);

fn ensure(condition: bool, what: String) -> Result<(), BoxError> {
    if condition { Ok(()) } else { Err(what.into()) }
}

fn ids(list: &Value, field: &str, name: &str) -> Vec<String> {
    list[field]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item[name].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_of_tenant_a_reaches_nothing_of_tenant_b() -> TestResult {
    let t = TestServer::start().await?;
    let addr = t.addr;
    let admin = t.admin()?;
    admin.add_tenant("other")?;
    let tenant_b = admin.tenant_id("other")?;
    let key_a = t.key.clone();
    let key_b = admin
        .add_key(tenant_b, &ChannelFilter::ALL, true, None)?
        .key;
    let token_a = t.add_device("default", "a1")?;
    let token_b = t.add_device("other", "b1")?;
    let claimed_b = admin.add_device(Some(tenant_b), Some("b2"), true)?;
    let code_b = claimed_b.claim_code.ok_or("no claim code")?;
    // Tenant B claims its own device (uses the code up).
    let (status, _) = http(
        addr,
        "POST",
        "/v1/claim",
        Some(&key_b),
        Some(&json!({"claim_code": code_b})),
    )
    .await?;
    assert_eq!(status, 200);

    let mut device_a = Device::connect(addr, &token_a).await?;
    device_a.hello("a1", 1).await?;
    let mut device_b = Device::connect(addr, &token_b).await?;
    device_b.hello("b1", 1).await?;
    // Both tenants use the channel name `temp`; B also has `b-only`.
    device_a.publish(1, "temp", "\"a\"").await?;
    device_a.wait_ack(1).await?;
    device_b.publish(1, "temp", "\"b\"").await?;
    device_b.publish(2, "b-only", "\"b\"").await?;
    device_b.wait_ack(2).await?;

    let cases: Vec<Case<'_>> = vec![
        (
            "GET /v1/devices lists only A's devices",
            Box::pin(async {
                let (status, body) = http(addr, "GET", "/v1/devices", Some(&key_a), None).await?;
                ensure(
                    status == 200 && ids(&body, "devices", "id") == ["a1"],
                    format!("{status} {body}"),
                )
            }),
        ),
        (
            "GET /v1/channels lists only A's channels",
            Box::pin(async {
                let (status, body) = http(addr, "GET", "/v1/channels", Some(&key_a), None).await?;
                ensure(
                    status == 200 && ids(&body, "channels", "name") == ["temp"],
                    format!("{status} {body}"),
                )
            }),
        ),
        (
            "GET /v1/messages of a shared name returns only A's events",
            Box::pin(async {
                let (_, body) =
                    http(addr, "GET", "/v1/messages?channel=temp", Some(&key_a), None).await?;
                ensure(ids(&body, "messages", "device") == ["a1"], body.to_string())
            }),
        ),
        (
            "GET /v1/messages of B's channel is empty",
            Box::pin(async {
                let (_, body) = http(
                    addr,
                    "GET",
                    "/v1/messages?channel=b-only&from=0",
                    Some(&key_a),
                    None,
                )
                .await?;
                ensure(
                    body["messages"] == json!([]) && body["next_offset"] == 1,
                    body.to_string(),
                )
            }),
        ),
        (
            "GET /v1/messages by time of B's channel is empty",
            Box::pin(async {
                let (_, body) = http(
                    addr,
                    "GET",
                    "/v1/messages?channel=b-only&since_ms=0",
                    Some(&key_a),
                    None,
                )
                .await?;
                ensure(body["messages"] == json!([]), body.to_string())
            }),
        ),
        (
            "POST a command to B's device: unknown_device",
            Box::pin(async {
                let (status, body) = http(
                    addr,
                    "POST",
                    "/v1/devices/b1/commands",
                    Some(&key_a),
                    Some(&json!({"channel": "led", "payload": 1})),
                )
                .await?;
                ensure(
                    status == 404 && body["error"]["code"] == "unknown_device",
                    format!("{status} {body}"),
                )
            }),
        ),
        (
            "POST a claim with B's used code: not found",
            Box::pin(async {
                let (status, body) = http(
                    addr,
                    "POST",
                    "/v1/claim",
                    Some(&key_a),
                    Some(&json!({"claim_code": code_b})),
                )
                .await?;
                ensure(status == 404, format!("{status} {body}"))
            }),
        ),
        (
            "WS subscribe to a shared name replays only A's events",
            Box::pin(async {
                let mut receiver = Receiver::connect(addr, &key_a).await?;
                let subscribed = receiver.subscribe("temp", Some(0)).await?;
                let events = receiver.events(1).await?;
                ensure(
                    subscribed["next_offset"] == 2 && events[0]["device"] == "a1",
                    format!("{subscribed} {events:?}"),
                )
            }),
        ),
        (
            "WS subscribe to B's channel sees nothing stored",
            Box::pin(async {
                let mut receiver = Receiver::connect_subprotocol(addr, &key_a).await?;
                let subscribed = receiver.subscribe("b-only", Some(0)).await?;
                ensure(subscribed["next_offset"] == 1, subscribed.to_string())
            }),
        ),
        (
            "WS send_command to B's device: unknown_device",
            Box::pin(async {
                let mut receiver = Receiver::connect_first_message(addr, &key_a).await?;
                receiver.send_json(&json!({"v": 1, "send_command": {"request_id": 4, "device": "b1", "channel": "led", "payload": 1}})).await?;
                let answer = receiver.recv().await?;
                ensure(
                    answer["error"]["code"] == 9 && answer["error"]["request_id"] == 4,
                    answer.to_string(),
                )
            }),
        ),
        (
            "B's key sees B's devices only",
            Box::pin(async {
                let (_, body) = http(addr, "GET", "/v1/devices", Some(&key_b), None).await?;
                ensure(
                    ids(&body, "devices", "id") == ["b1", "b2"],
                    body.to_string(),
                )
            }),
        ),
        (
            "A device token cannot say Hello as another tenant's device",
            Box::pin(async {
                let mut ws = connect_device(addr, &token_a).await?;
                futures_util::SinkExt::send(&mut ws, tokio_tungstenite::tungstenite::Message::Text(
                r#"{"v":1,"hello":{"device_id":"b1","firmware_version":"1","boot_id":9,"last_acked_seq":0}}"#.into(),
            )).await?;
                let code = close_code(&mut ws).await?;
                ensure(code == 4006, format!("close code {code}"))
            }),
        ),
    ];
    let mut failures = Vec::new();
    for (name, case) in cases {
        if let Err(error) = case.await {
            failures.push(format!("{name}: {error}"));
        }
    }
    assert!(
        failures.is_empty(),
        "isolation failures:\n{}",
        failures.join("\n")
    );

    // Live: B's subscriber to `temp` never sees A's publishes, and no
    // command for B's device ever reached it.
    let mut receiver_b = Receiver::connect(addr, &key_b).await?;
    receiver_b.subscribe("temp", None).await?;
    device_a.publish(2, "temp", "\"a2\"").await?;
    device_a.wait_ack(2).await?;
    device_b.publish(3, "temp", "\"b3\"").await?;
    let event = receiver_b.events(1).await?;
    assert_eq!(event[0]["payload"], "b3");
    assert_eq!(event[0]["device"], "b1");
    // Device b1's next message is the Ack of 3, not a command.
    assert_eq!(device_b.recv().await?, Downlink::Ack(3));
    t.server.shutdown().await;
    Ok(())
}

/// One PostgreSQL for the tests of this binary that run on it.
fn postgres() -> Result<&'static tether_cluster_test::Postgres, BoxError> {
    static SERVER: std::sync::OnceLock<Result<tether_cluster_test::Postgres, String>> =
        std::sync::OnceLock::new();
    SERVER
        .get_or_init(|| tether_cluster_test::Postgres::start().map_err(|error| error.to_string()))
        .as_ref()
        .map_err(|error| error.clone().into())
}

/// The readings paths on SQLite (the server's own file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_of_tenant_b_are_out_of_reach_of_tenant_a() -> TestResult {
    let t = TestServer::start().await?;
    let admin = t.admin()?;
    readings_isolation(&t, &admin).await?;
    t.server.shutdown().await;
    Ok(())
}

/// The same on PostgreSQL (a real server, a database of its own): the
/// series are computed there, the export read from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_of_tenant_b_are_out_of_reach_of_tenant_a_on_postgres() -> TestResult {
    let database = format!("isolation_{}", std::process::id());
    let url = tokio::task::block_in_place(|| postgres()?.create_database(&database))?;
    let t = TestServer::start_with(|config| config.with_cluster(url.clone(), None)).await?;
    let admin = tether_server::store::PgAdmin::connect(&url).await?;
    readings_isolation(&t, &admin).await?;
    t.server.shutdown().await;
    Ok(())
}

/// The readings paths (series, descriptions, export) of a channel name
/// both tenants use answer each key with its own tenant's data only.
/// A key scoped to some channels reaches none of the others either.
async fn readings_isolation(t: &TestServer, admin: &dyn AdminStore) -> TestResult {
    let addr = t.addr;
    let tenant_a = admin.tenant_id("default").await?;
    let tenant_b = admin.add_tenant("other").await?;
    let key_a = t.key.clone();
    let key_b = admin
        .add_key(tenant_b, &ChannelFilter::ALL, true, None)
        .await?
        .key;
    let narrow_a = admin
        .add_key(
            tenant_a,
            &ChannelFilter::only(vec!["public/*".into()]),
            false,
            None,
        )
        .await?
        .key;
    let event = |device: &str, second: u64, value: u64| tether_server::store::ImportEvent {
        device: device.into(),
        device_time_ms: None,
        server_time_ms: 1_700_000_000_000 + second * 1_000,
        payload: format!("{{\"v\":{value}}}"),
    };
    // Both tenants have a channel `climate` and a device named `dev`;
    // B's values are 1000 and up.
    admin
        .import_events(
            tenant_a,
            "climate",
            &[event("dev", 0, 1), event("a2", 1, 2)],
        )
        .await?;
    admin
        .import_events(tenant_a, "public/temp", &[event("dev", 0, 7)])
        .await?;
    admin
        .import_events(
            tenant_b,
            "climate",
            &[
                event("dev", 0, 1_000),
                event("b2", 1, 1_001),
                event("b2", 2, 1_002),
            ],
        )
        .await?;
    admin
        .import_events(tenant_b, "b-only", &[event("b2", 0, 1_003)])
        .await?;
    admin
        .import_events(tenant_b, "public/temp", &[event("b2", 0, 1_004)])
        .await?;
    let series = |key: String, query: &'static str| async move {
        let (status, body) = http(
            addr,
            "GET",
            &format!("/v1/series?{query}"),
            Some(&key),
            None,
        )
        .await?;
        Ok::<_, BoxError>((status, body))
    };
    let export = |key: String, query: &'static str| async move {
        let (status, _, body) = http_get(addr, &format!("/v1/export?{query}"), &key).await?;
        Ok::<_, BoxError>((status, body))
    };
    let cases: Vec<Case<'_>> = vec![
        (
            "GET /v1/series of a shared name: only A's devices and values",
            Box::pin(async {
                for width in [1_000, 60_000, 3_600_000] {
                    let query = match width {
                        1_000 => {
                            "channel=climate&since_ms=1700000000000&until_ms=1700000060000&bucket_ms=1000"
                        }
                        60_000 => {
                            "channel=climate&since_ms=1700000000000&until_ms=1700000060000&bucket_ms=60000"
                        }
                        _ => {
                            "channel=climate&since_ms=1700000000000&until_ms=1700003600000&bucket_ms=3600000"
                        }
                    };
                    let (status, body) = series(key_a.clone(), query).await?;
                    let max = body["series"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .flat_map(|s| s["points"].as_array().into_iter().flatten())
                        .filter_map(|p| p[3].as_f64())
                        .fold(0.0, f64::max);
                    ensure(
                        status == 200
                            && ids(&body, "series", "device") == ["a2", "dev"]
                            && max == 2.0
                            && body["next_offset"] == 3,
                        format!("{status} {body}"),
                    )?;
                }
                Ok(())
            }),
        ),
        (
            "GET /v1/series of B's channel is empty",
            Box::pin(async {
                let (status, body) = series(
                    key_a.clone(),
                    "channel=b-only&since_ms=0&bucket_ms=604800000",
                )
                .await?;
                ensure(
                    status == 200 && body["series"] == json!([]) && body["next_offset"] == 1,
                    format!("{status} {body}"),
                )
            }),
        ),
        (
            "GET /v1/series naming B's device finds nothing",
            Box::pin(async {
                let (_, body) = series(key_a.clone(), "channel=climate&since_ms=1700000000000&until_ms=1700000060000&bucket_ms=1000&devices=b2").await?;
                ensure(body["series"] == json!([]), body.to_string())
            }),
        ),
        (
            "GET /v1/export of a shared name: only A's events",
            Box::pin(async {
                let (status, body) = export(key_a.clone(), "channel=climate&format=jsonl").await?;
                let devices: Vec<String> = body
                    .lines()
                    .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                    .filter_map(|event| event["device"].as_str().map(str::to_owned))
                    .collect();
                ensure(
                    status == 200 && devices == ["dev", "a2"] && !body.contains("\"v\":1000"),
                    format!("{status} {body}"),
                )
            }),
        ),
        (
            "GET /v1/export of B's channel is empty",
            Box::pin(async {
                let (status, body) = export(key_a.clone(), "channel=b-only").await?;
                ensure(
                    status == 200 && !body.contains("b2") && !body.contains("1003"),
                    format!("{status} {body}"),
                )
            }),
        ),
        (
            "GET /v1/descriptions of a shared name lists none of B's",
            Box::pin(async {
                let (status, body) = http(
                    addr,
                    "GET",
                    "/v1/descriptions?channel=climate",
                    Some(&key_a),
                    None,
                )
                .await?;
                ensure(
                    status == 200 && ids(&body, "descriptions", "device").is_empty(),
                    format!("{status} {body}"),
                )
            }),
        ),
        (
            "a key scoped to public/* cannot export, chart or read descriptions of climate",
            Box::pin(async {
                for path in [
                    "/v1/export?channel=climate",
                    "/v1/export?channel=climate&format=jsonl",
                    "/v1/series?channel=climate&since_ms=1700000000000&until_ms=1700000060000&bucket_ms=1000",
                    "/v1/series?channel=climate&since_ms=1700000000000&until_ms=1700003600000&bucket_ms=3600000",
                    "/v1/descriptions?channel=climate",
                ] {
                    let (status, body) = http(addr, "GET", path, Some(&narrow_a), None).await?;
                    ensure(
                        status == 403
                            && body["error"]["code"] == "forbidden"
                            && !body.to_string().contains("\"v\""),
                        format!("{path}: {status} {body}"),
                    )?;
                }
                Ok(())
            }),
        ),
        (
            "a key scoped to public/* exports and charts its tenant's public/temp only",
            Box::pin(async {
                let (status, body) =
                    export(narrow_a.clone(), "channel=public/temp&format=jsonl").await?;
                ensure(
                    status == 200 && body.contains("\"v\":7") && !body.contains("1004"),
                    format!("{status} {body}"),
                )?;
                let (status, body) = series(
                    narrow_a.clone(),
                    "channel=public/temp&since_ms=1700000000000&until_ms=1700003600000&bucket_ms=3600000",
                )
                .await?;
                ensure(
                    status == 200 && ids(&body, "series", "device") == ["dev"],
                    format!("{status} {body}"),
                )
            }),
        ),
        (
            "B's key sees B's series",
            Box::pin(async {
                let (_, body) = series(
                    key_b.clone(),
                    "channel=climate&since_ms=1700000000000&until_ms=1700000060000&bucket_ms=1000",
                )
                .await?;
                ensure(
                    ids(&body, "series", "device") == ["b2", "dev"],
                    body.to_string(),
                )
            }),
        ),
    ];
    let mut failures = Vec::new();
    for (name, case) in cases {
        if let Err(error) = case.await {
            failures.push(format!("{name}: {error}"));
        }
    }
    assert!(
        failures.is_empty(),
        "isolation failures:\n{}",
        failures.join("\n")
    );
    Ok(())
}
