//! The suite's readings tests: descriptions, declared commands, signal
//! strength, and downsampled series (checked against a plain reference
//! computation over the same events, at every kind of bucket width: from
//! the events, from the rollups, and from rollups plus events not rolled
//! up yet).

use std::collections::BTreeMap;

use tether_server::store::{
    DeclaredCommand, ReadRange, Series, SeriesQuery, Store, StoreOptions, TenantId,
};

use super::{BoxError, StoreFixture, TestEvent, TestResult, record_in};

/// A time on no particular boundary (buckets align to the epoch).
const T0: u64 = 1_700_000_123_456;

fn event(device: &str, server_time_ms: u64, payload: String) -> TestEvent {
    TestEvent {
        device: device.into(),
        server_time_ms,
        payload,
    }
}

/// `count` events of two devices, 1.7 s apart, with numeric members, a
/// bare number now and then, members that are not numbers, and payloads
/// with no numeric member (an array of numbers, a string: not fields).
fn events(first: u64, count: u64) -> Vec<TestEvent> {
    (first..first + count)
        .map(|i| {
            let device = if i % 2 == 0 { "d1" } else { "d2" };
            let payload = if i % 10 == 3 {
                format!("{i}")
            } else if i % 10 == 7 {
                format!("[{i},2.5]")
            } else if i % 20 == 9 {
                "\"text\"".to_owned()
            } else {
                format!(
                    "{{\"t\":{},\"h\":{},\"name\":\"x\",\"on\":true,\"nested\":{{\"a\":1}}}}",
                    f64::from(u32::try_from(i % 50).unwrap_or(0)) * 0.5 - 3.0,
                    i % 7
                )
            };
            event(device, T0 + i * 1_700, payload)
        })
        .collect()
}

/// What a series must say: (device, key, bucket) → (count, min, max, mean).
type Expected = BTreeMap<(String, String, u64), (u64, f64, f64, f64)>;

fn reference(events: &[TestEvent], since: u64, until: Option<u64>, width: u64) -> Expected {
    let since = since - since % width;
    let until = until.map_or(u64::MAX, |until| until.div_ceil(width) * width);
    let mut sums = Expected::new(); // (count, min, max, sum) until the end
    for event in events {
        if event.server_time_ms < since || event.server_time_ms >= until {
            continue;
        }
        let bucket = event.server_time_ms / width * width;
        let value: serde_json::Value = serde_json::from_str(&event.payload).unwrap_or_default();
        let numbers: Vec<(String, f64)> = match &value {
            serde_json::Value::Number(n) => {
                n.as_f64().map(|n| (String::new(), n)).into_iter().collect()
            }
            serde_json::Value::Object(members) => members
                .iter()
                .filter_map(|(key, value)| value.as_f64().map(|n| (key.clone(), n)))
                .collect(),
            _ => Vec::new(),
        };
        for (key, n) in numbers {
            let entry = sums.entry((event.device.clone(), key, bucket)).or_insert((
                0,
                f64::INFINITY,
                f64::NEG_INFINITY,
                0.0,
            ));
            entry.0 += 1;
            entry.1 = entry.1.min(n);
            entry.2 = entry.2.max(n);
            entry.3 += n;
        }
    }
    sums.into_iter()
        .map(|(key, (count, min, max, total))| {
            #[allow(clippy::cast_precision_loss)]
            let mean = total / count as f64;
            (key, (count, min, max, mean))
        })
        .collect()
}

fn as_map(series: &Series) -> Expected {
    series
        .points
        .iter()
        .map(|p| {
            (
                (p.device.clone(), p.key.clone(), p.bucket_ms),
                (p.count, p.min, p.max, p.mean),
            )
        })
        .collect()
}

fn assert_same(got: &Series, expected: &Expected, what: &str) -> TestResult {
    let got = as_map(got);
    let keys = |map: &Expected| map.keys().cloned().collect::<Vec<_>>();
    if keys(&got) != keys(expected) {
        return Err(format!(
            "{what}: buckets differ\n got {:?}\n expected {:?}",
            keys(&got).iter().take(8).collect::<Vec<_>>(),
            keys(expected).iter().take(8).collect::<Vec<_>>()
        )
        .into());
    }
    for (key, (count, min, max, mean)) in expected {
        let (c, lo, hi, m) = got[key];
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(1.0);
        if c != *count || !close(lo, *min) || !close(hi, *max) || !close(m, *mean) {
            return Err(format!(
                "{what}: {key:?}: got {:?}, expected {:?}",
                (c, lo, hi, m),
                (count, min, max, mean)
            )
            .into());
        }
    }
    Ok(())
}

fn query(since_ms: u64, until_ms: Option<u64>, bucket_ms: u64) -> SeriesQuery {
    SeriesQuery {
        since_ms,
        until_ms,
        bucket_ms,
        devices: None,
    }
}

const WIDTHS: [u64; 6] = [1_000, 10_000, 60_000, 300_000, 900_000, 3_600_000];

async fn check_every_width<S: Store>(
    store: &S,
    tenant: TenantId,
    events: &[TestEvent],
    stage: &str,
) -> TestResult {
    for width in WIDTHS {
        for (since, until) in [
            (T0, None),
            (T0 + 600_000, Some(T0 + 3_000_000)),
            (0, Some(T0 + 1)),
        ] {
            let series = store
                .series(tenant, "climate", query(since, until, width))
                .await?;
            let expected = reference(events, since, until, width);
            assert_same(
                &series,
                &expected,
                &format!("{stage}, width {width}, since {since}, until {until:?}"),
            )?;
        }
    }
    Ok(())
}

/// Every width, from the events alone, from rollups plus events not rolled
/// up yet, and from rollups alone, agrees with the reference.
pub async fn series_match_the_events_at_every_width<F: StoreFixture>() -> TestResult {
    let fixture = F::new()?;
    let tenant = fixture.add_tenant("acme")?;
    let store = fixture.open(StoreOptions::default())?;
    let all = events(0, 3_000);
    let (first, rest) = all.split_at(2_000);
    fixture.insert_events(tenant, "climate", first)?;
    check_every_width(&store, tenant, first, "nothing rolled up").await?;
    assert_eq!(store.roll_up().await?, 2_000);
    fixture.insert_events(tenant, "climate", rest)?;
    check_every_width(&store, tenant, &all, "partly rolled up").await?;
    assert_eq!(store.roll_up().await?, 1_000);
    assert_eq!(store.roll_up().await?, 0, "nothing left to roll up");
    check_every_width(&store, tenant, &all, "rolled up").await?;
    // After a restart, from the stored rollups.
    store.close().await;
    let store = fixture.open(StoreOptions::default())?;
    let series = store
        .series(tenant, "climate", query(T0, None, 900_000))
        .await?;
    assert_eq!(series.next_offset, 3_001);
    assert_same(
        &series,
        &reference(&all, T0, None, 900_000),
        "after restart",
    )?;
    let none = store
        .series(tenant, "nothing-here", query(T0, None, 60_000))
        .await?;
    assert_eq!(none.next_offset, 1);
    assert!(none.points.is_empty());
    store.close().await;
    Ok(())
}

/// A series covers exactly the events below its `next_offset`: the events
/// after it are the live tail a receiver subscribes to, without a gap or a
/// duplicate, whether rolled up or not.
pub async fn series_continue_with_the_live_tail<F: StoreFixture>() -> TestResult {
    let fixture = F::new()?;
    let tenant = fixture.add_tenant("acme")?;
    fixture.add_device(tenant, "d1")?;
    let store = fixture.open(StoreOptions::default())?;
    let opened = store.open_session("d1", "1", super::BOOT, 1).await?;
    let since = tether_server::now_ms() - 60_000;
    let mut seq = 0;
    for round in 0..3 {
        for _ in 0..25 {
            seq += 1;
            store
                .append(record_in(opened, tenant, seq, seq - 1, "live"))
                .await?
                .await?;
        }
        if round == 1 {
            store.roll_up().await?;
        }
        for width in [1_000, 60_000, 3_600_000] {
            let series = store
                .series(tenant, "live", query(since, None, width))
                .await?;
            let covered: u64 = series
                .points
                .iter()
                .filter(|p| p.key == "n")
                .map(|p| p.count)
                .sum();
            assert_eq!(series.next_offset, u64::from(seq) + 1, "round {round}");
            assert_eq!(covered, u64::from(seq), "round {round}, width {width}");
            let max = series
                .points
                .iter()
                .map(|p| p.max)
                .fold(f64::NEG_INFINITY, f64::max);
            assert_eq!(max, f64::from(seq), "the newest event is in");
        }
    }
    // The tail after a series: exactly what came after it.
    let series = store
        .series(tenant, "live", query(since, None, 60_000))
        .await?;
    seq += 1;
    store
        .append(record_in(opened, tenant, seq, seq - 1, "live"))
        .await?
        .await?;
    let tail = store
        .read(
            tenant,
            "live",
            ReadRange::Offsets {
                from: series.next_offset,
                until: None,
            },
            100,
        )
        .await?;
    assert_eq!(tail.len(), 1);
    assert_eq!(tail[0].payload, format!("{{\"n\":{seq}}}"));
    store.close().await;
    Ok(())
}

/// Another tenant's channel of the same name, and devices not asked for,
/// are not in a series.
pub async fn series_are_scoped_to_tenant_and_devices<F: StoreFixture>() -> TestResult {
    let fixture = F::new()?;
    let acme = fixture.add_tenant("acme")?;
    let other = fixture.add_tenant("other")?;
    let store = fixture.open(StoreOptions::default())?;
    let ours = events(0, 400);
    let theirs: Vec<TestEvent> = events(0, 300)
        .into_iter()
        .map(|mut event| {
            event.payload = "{\"t\":1000}".into();
            event
        })
        .collect();
    fixture.insert_events(acme, "climate", &ours)?;
    fixture.insert_events(other, "climate", &theirs)?;
    for rolled in [false, true] {
        if rolled {
            store.roll_up().await?;
        }
        for width in [1_000, 60_000] {
            let series = store
                .series(acme, "climate", query(T0, None, width))
                .await?;
            assert_same(&series, &reference(&ours, T0, None, width), "acme")?;
            assert_eq!(series.next_offset, 401);
            let series = store
                .series(other, "climate", query(T0, None, width))
                .await?;
            assert_same(&series, &reference(&theirs, T0, None, width), "other")?;
            let only_d2 = store
                .series(
                    acme,
                    "climate",
                    SeriesQuery {
                        devices: Some(vec!["d2".into()]),
                        ..query(T0, None, width)
                    },
                )
                .await?;
            let d2: Vec<TestEvent> = ours.iter().filter(|e| e.device == "d2").cloned().collect();
            assert_same(&only_d2, &reference(&d2, T0, None, width), "only d2")?;
            let nobody = store
                .series(
                    acme,
                    "climate",
                    SeriesQuery {
                        devices: Some(Vec::new()),
                        ..query(T0, None, width)
                    },
                )
                .await?;
            assert!(nobody.points.is_empty());
        }
    }
    let third = fixture.add_tenant("third")?;
    let empty = store
        .series(third, "climate", query(0, None, 60_000))
        .await?;
    assert!(empty.points.is_empty());
    store.close().await;
    Ok(())
}

/// Retention deletes events; the rolled-up buckets that only summed
/// deleted events go with them.
pub async fn retention_prunes_rolled_up_buckets<F: StoreFixture>() -> TestResult {
    let fixture = F::new()?;
    let tenant = fixture.add_tenant("acme")?;
    let store = fixture.open(StoreOptions::default())?;
    let old: Vec<TestEvent> = (0..10)
        .map(|i| event("d1", T0 + i, format!("{{\"v\":{i}}}")))
        .collect();
    let new: Vec<TestEvent> = (0..10)
        .map(|i| event("d1", T0 + 7_200_000 + i, format!("{{\"v\":{}}}", 100 + i)))
        .collect();
    fixture.insert_events(tenant, "climate", &old)?;
    fixture.insert_events(tenant, "climate", &new)?;
    store.roll_up().await?;
    let both: Vec<TestEvent> = old.iter().chain(&new).cloned().collect();
    for width in [60_000, 3_600_000] {
        let series = store
            .series(tenant, "climate", query(0, None, width))
            .await?;
        assert_same(
            &series,
            &reference(&both, 0, None, width),
            "before retention",
        )?;
    }
    fixture.set_retention(tenant, None, Some(10))?;
    assert_eq!(store.enforce_retention(T0 + 7_300_000).await?, 10);
    for width in [60_000, 900_000, 3_600_000] {
        let series = store
            .series(tenant, "climate", query(0, None, width))
            .await?;
        assert_same(&series, &reference(&new, 0, None, width), "after retention")?;
    }
    store.close().await;
    Ok(())
}

/// Descriptions replace the device's earlier one and stay with their
/// tenant; declared commands replace the earlier set; the signal strength
/// is the last reported. All survive a restart.
pub async fn descriptions_commands_and_signal_strength<F: StoreFixture>() -> TestResult {
    let fixture = F::new()?;
    let acme = fixture.add_tenant("acme")?;
    let other = fixture.add_tenant("other")?;
    fixture.add_device(acme, "d1")?;
    fixture.add_device(acme, "d2")?;
    fixture.add_device(other, "o1")?;
    let store = fixture.open(StoreOptions::default())?;
    let first = r#"[{"key":"centi_celsius","label":"Temperature","unit":"°C","scale":0.01}]"#;
    let second =
        r#"[{"key":"centi_celsius","label":"Temperature","unit":"°C","scale":0.01,"decimals":1}]"#;
    store
        .describe_channel(acme, "d1", "climate", first, 5)
        .await?;
    store
        .describe_channel(acme, "d1", "climate", second, 6)
        .await?;
    store
        .describe_channel(acme, "d2", "climate", r#"[{"key":"h","unit":"%"}]"#, 7)
        .await?;
    store
        .describe_channel(other, "o1", "climate", r#"[{"key":"x"}]"#, 8)
        .await?;
    let command = |channel: &str, label: &str, example: &str| DeclaredCommand {
        channel: channel.into(),
        label: label.into(),
        example: example.into(),
    };
    store
        .set_commands(
            "d1",
            vec![
                command("relay", "Relay", r#"{"on":true}"#),
                command("led", "", "null"),
            ],
        )
        .await?;
    store.set_rssi("d1", -67, 9).await?;
    store.set_rssi("d1", -71, 10).await?;
    store
        .set_commands("o1", vec![command("secret", "", "1")])
        .await?;
    check_readings(&store, acme, other, second).await?;
    store.close().await;
    // After a restart.
    let store = fixture.open(StoreOptions::default())?;
    check_readings(&store, acme, other, second).await?;
    // A later session's declarations replace the set.
    store
        .set_commands("d1", vec![command("led", "", "null")])
        .await?;
    let devices = store.list_devices(acme, 12).await?;
    let d1 = devices.iter().find(|d| d.id == "d1").ok_or("no d1")?;
    assert_eq!(d1.commands, [command("led", "", "null")]);
    store.close().await;
    Ok(())
}

async fn check_readings<S: Store>(
    store: &S,
    acme: TenantId,
    other: TenantId,
    second: &str,
) -> Result<(), BoxError> {
    let descriptions = store.channel_descriptions(acme, "climate").await?;
    let summary: Vec<(&str, &str, u64)> = descriptions
        .iter()
        .map(|d| (d.device.as_str(), d.fields.as_str(), d.updated_ms))
        .collect();
    assert_eq!(
        summary,
        [("d1", second, 6), ("d2", r#"[{"key":"h","unit":"%"}]"#, 7)]
    );
    let theirs = store.channel_descriptions(other, "climate").await?;
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].device, "o1");
    assert!(store.channel_descriptions(acme, "other").await?.is_empty());
    let devices = store.list_devices(acme, 11).await?;
    let d1 = devices.iter().find(|d| d.id == "d1").ok_or("no d1")?;
    let d2 = devices.iter().find(|d| d.id == "d2").ok_or("no d2")?;
    let commands: Vec<(&str, &str, &str)> = d1
        .commands
        .iter()
        .map(|c| (c.channel.as_str(), c.label.as_str(), c.example.as_str()))
        .collect();
    assert_eq!(
        commands,
        [("relay", "Relay", r#"{"on":true}"#), ("led", "", "null")]
    );
    assert_eq!((d1.rssi_dbm, d1.rssi_ms), (Some(-71), Some(10)));
    assert_eq!((d2.rssi_dbm, d2.rssi_ms), (None, None));
    assert!(d2.commands.is_empty());
    assert!(
        devices.iter().all(|d| d.id != "o1"),
        "another tenant's device"
    );
    Ok(())
}
