//! The readings API over real HTTP: series (downsampled in the database),
//! descriptions, and exports streamed as CSV and JSON lines (read with a
//! real HTTP client, ureq, as they stream).

// Tests are std code; the no_std import lints do not apply.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod common;

use std::io::{BufRead, BufReader, Read};

use common::*;
use serde_json::Value;
use tether_server::store::{ChannelFilter, ImportEvent};

/// `count` events of devices e1 and e2, one a second from `start`.
fn climate(start: u64, count: u64) -> Vec<ImportEvent> {
    (0..count)
        .map(|i| ImportEvent {
            device: if i % 2 == 0 { "e1" } else { "e2" }.into(),
            device_time_ms: (i % 3 == 0).then_some(start + i * 1_000 - 250),
            server_time_ms: start + i * 1_000,
            payload: format!(
                "{{\"centi_celsius\":{},\"humidity\":{}}}",
                2_000 + i % 100,
                40 + i % 20
            ),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_of_published_readings() -> TestResult {
    let t = TestServer::start().await?;
    let token = t.add_device("default", "d1")?;
    let mut device = Device::connect(t.addr, &token).await?;
    device.hello("d1", 7).await?;
    let since = tether_server::now_ms() - 1_000;
    for seq in 1..=30u32 {
        device
            .publish(
                seq,
                "climate",
                &format!("{{\"t\":{},\"h\":40}}", 2_000 + seq),
            )
            .await?;
    }
    device.wait_ack(30).await?;
    for width in [1_000, 60_000, 3_600_000] {
        let (status, body) = http(
            t.addr,
            "GET",
            &format!("/v1/series?channel=climate&since_ms={since}&bucket_ms={width}"),
            Some(&t.key),
            None,
        )
        .await?;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["next_offset"], 31);
        assert_eq!(body["bucket_ms"], width);
        let series = body["series"].as_array().ok_or("series")?;
        let keys: Vec<(&str, &str)> = series
            .iter()
            .map(|s| {
                (
                    s["device"].as_str().unwrap_or(""),
                    s["key"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(keys, [("d1", "h"), ("d1", "t")]);
        let t_points = series[1]["points"].as_array().ok_or("points")?;
        let count: u64 = t_points.iter().filter_map(|p| p[1].as_u64()).sum();
        assert_eq!(count, 30);
        let min = t_points
            .iter()
            .filter_map(|p| p[2].as_f64())
            .fold(f64::MAX, f64::min);
        let max = t_points
            .iter()
            .filter_map(|p| p[3].as_f64())
            .fold(f64::MIN, f64::max);
        assert_eq!((min, max), (2_001.0, 2_030.0));
        let starts: Vec<u64> = t_points.iter().filter_map(|p| p[0].as_u64()).collect();
        assert!(starts.iter().all(|start| start % width == 0));
    }
    // The number of buckets picks the width.
    let (_, body) = http(
        t.addr,
        "GET",
        &format!(
            "/v1/series?channel=climate&since_ms={}&until_ms={}&buckets=60",
            since,
            since + 3_600_000
        ),
        Some(&t.key),
        None,
    )
    .await?;
    assert_eq!(body["bucket_ms"], 60_000);
    // Only the devices asked for.
    let (_, body) = http(
        t.addr,
        "GET",
        &format!("/v1/series?channel=climate&since_ms={since}&devices=d2,d3"),
        Some(&t.key),
        None,
    )
    .await?;
    assert_eq!(body["series"], serde_json::json!([]));
    assert_eq!(body["next_offset"], 31);
    // No description yet.
    let (status, body) = http(
        t.addr,
        "GET",
        "/v1/descriptions?channel=climate",
        Some(&t.key),
        None,
    )
    .await?;
    assert_eq!(
        (status, &body["descriptions"]),
        (200, &serde_json::json!([]))
    );
    t.server.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_with_a_reason() -> TestResult {
    let t = TestServer::start().await?;
    let admin = t.admin()?;
    let tenant = admin.tenant_id("default")?;
    let narrow = admin
        .add_key(
            tenant,
            &ChannelFilter::only(vec!["public/*".into()]),
            false,
            None,
        )?
        .key;
    let cases: [(&str, &str, u16, &str); 10] = [
        (
            "/v1/series?channel=climate&bucket_ms=7",
            &t.key,
            400,
            "invalid_field",
        ),
        (
            "/v1/series?channel=climate&since_ms=10&until_ms=5",
            &t.key,
            400,
            "invalid_field",
        ),
        (
            "/v1/series?channel=climate&since_ms=0&bucket_ms=1000",
            &t.key,
            400,
            "invalid_field",
        ),
        ("/v1/series?channel=a//b", &t.key, 400, "invalid_field"),
        (
            "/v1/series?channel=climate&devices=a%20b",
            &t.key,
            400,
            "invalid_field",
        ),
        ("/v1/series", &t.key, 400, "invalid_field"),
        (
            "/v1/export?channel=climate&format=xml",
            &t.key,
            400,
            "invalid_field",
        ),
        (
            "/v1/export?channel=climate",
            "tk_wrong",
            401,
            "unauthorized",
        ),
        ("/v1/export?channel=climate", &narrow, 403, "forbidden"),
        (
            "/v1/descriptions?channel=climate",
            &narrow,
            403,
            "forbidden",
        ),
    ];
    for (path, key, status, code) in cases {
        let (got, body) = http(t.addr, "GET", path, Some(key), None).await?;
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{path}: {body}"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let (status, _) = http(
        t.addr,
        "GET",
        "/v1/series?channel=public/x",
        Some(&narrow),
        None,
    )
    .await?;
    assert_eq!(status, 200);
    t.server.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_stream_csv_and_json_lines() -> TestResult {
    let t = TestServer::start().await?;
    let admin = t.admin()?;
    let tenant = admin.tenant_id("default")?;
    let start = 1_764_094_000_000;
    let events = climate(start, 25_000);
    admin.import_events(tenant, "kitchen/climate", &events)?;

    // JSON lines: every event, in order, as the receiver protocol's event.
    let (status, headers, body) = http_get(
        t.addr,
        "/v1/export?channel=kitchen/climate&format=jsonl",
        &t.key,
    )
    .await?;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/jsonl; charset=utf-8");
    assert_eq!(
        headers["content-disposition"],
        "attachment; filename=\"kitchen-climate.jsonl\""
    );
    assert_eq!(
        headers["transfer-encoding"], "chunked",
        "streamed, not buffered"
    );
    assert!(headers.get("content-length").is_none());
    let lines: Vec<Value> = body
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), 25_000);
    for (index, (line, event)) in lines.iter().zip(&events).enumerate() {
        assert_eq!(line["offset"], index + 1);
        assert_eq!(line["channel"], "kitchen/climate");
        assert_eq!(line["device"], event.device.as_str());
        assert_eq!(line["server_time_ms"], event.server_time_ms);
        assert_eq!(
            line["payload"],
            serde_json::from_str::<Value>(&event.payload)?
        );
    }

    // CSV of a time range and one device.
    let since = start + 100_000;
    let until = start + 200_000;
    let (status, headers, body) = http_get(
        t.addr,
        &format!("/v1/export?channel=kitchen/climate&since_ms={since}&until_ms={until}&devices=e2"),
        &t.key,
    )
    .await?;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/csv; charset=utf-8");
    let mut rows = body.lines();
    assert_eq!(
        rows.next(),
        Some("offset,server_time,device_time,device,payload")
    );
    let rows: Vec<&str> = rows.collect();
    // Events 100..200 (seconds), the odd ones are e2's.
    assert_eq!(rows.len(), 50);
    assert_eq!(
        rows[0],
        "102,2025-11-25T18:08:21Z,,e2,\"{\"\"centi_celsius\"\":2001,\"\"humidity\"\":41}\""
    );
    assert!(rows.iter().all(|row| row.contains(",e2,")));

    // An event stored while an export streams is not in it: the export
    // ends where the channel ended when it began.
    let url = format!(
        "http://{}/v1/export?channel=kitchen/climate&format=jsonl",
        t.addr
    );
    let key = t.key.clone();
    let (first_line, reader) = tokio::task::spawn_blocking(move || -> Result<_, BoxError> {
        let response = http_agent()
            .get(&url)
            .header("Authorization", &format!("Bearer {key}"))
            .call()?;
        let mut reader = BufReader::new(response.into_body().into_reader());
        let mut first = String::new();
        reader.read_line(&mut first)?;
        Ok((first, reader))
    })
    .await??;
    assert!(first_line.contains("\"offset\":1,"));
    admin.import_events(tenant, "kitchen/climate", &climate(start + 25_000_000, 1))?;
    let rest = tokio::task::spawn_blocking(move || -> Result<String, BoxError> {
        let mut reader = reader;
        let mut rest = String::new();
        reader.read_to_string(&mut rest)?;
        Ok(rest)
    })
    .await??;
    assert_eq!(rest.lines().count(), 24_999);
    assert!(!rest.contains("\"offset\":25001"));
    t.server.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_refuses_what_a_device_could_not_publish() -> TestResult {
    let t = TestServer::start().await?;
    let admin = t.admin()?;
    let tenant = admin.tenant_id("default")?;
    let good = climate(1_000, 1).remove(0);
    for (channel, event) in [
        ("a//b", good.clone()),
        (
            "ok",
            ImportEvent {
                device: "a b".into(),
                ..good.clone()
            },
        ),
        (
            "ok",
            ImportEvent {
                payload: "{".into(),
                ..good.clone()
            },
        ),
        (
            "ok",
            ImportEvent {
                payload: " 1".into(),
                ..good.clone()
            },
        ),
    ] {
        assert!(
            admin.import_events(tenant, channel, &[event]).is_err(),
            "{channel}"
        );
    }
    let (_, body) = http(t.addr, "GET", "/v1/channels", Some(&t.key), None).await?;
    assert_eq!(body["channels"], serde_json::json!([]), "nothing stored");
    t.server.shutdown().await;
    Ok(())
}
