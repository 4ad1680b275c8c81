//! End to end over loopback: devices publish, the server stores and
//! acknowledges, receivers get history and live events without gap or
//! duplicate, commands go down and their answers come back.

// Tests are std code; the no_std import lints do not apply.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn publish_is_stored_acknowledged_and_delivered() -> TestResult {
    let t = TestServer::start().await?;
    let token = t.add_device("default", "kitchen-1")?;
    let mut receiver = Receiver::connect(t.addr, &t.key).await?;
    let subscribed = receiver.subscribe("temp", None).await?;
    assert_eq!(subscribed["next_offset"], 1);

    let mut device = Device::connect(t.addr, &token).await?;
    let (last_stored, max_in_flight) = device.hello("kitchen-1", 42).await?;
    assert_eq!(last_stored, 0);
    assert!(max_in_flight >= 1);
    for seq in 1..=5 {
        device
            .publish(seq, "temp", &format!("{{\"celsius\":{seq}.5}}"))
            .await?;
    }
    device.wait_ack(5).await?;

    let events = receiver.events(5).await?;
    assert_eq!(offsets(&events), [1, 2, 3, 4, 5]);
    assert_eq!(events[0]["device"], "kitchen-1");
    assert_eq!(events[0]["payload"], json!({"celsius": 1.5}));
    assert_eq!(events[4]["device_time_ms"], 1_700_000_000_000u64);

    // Stored: the HTTP API reads them back, the device is online.
    let (status, page) = http(
        t.addr,
        "GET",
        "/v1/messages?channel=temp&from=2&limit=2",
        Some(&t.key),
        None,
    )
    .await?;
    assert_eq!(status, 200);
    assert_eq!(
        offsets(page["messages"].as_array().ok_or("messages")?),
        [2, 3]
    );
    assert_eq!(page["next"], 4);
    let (_, devices) = http(t.addr, "GET", "/v1/devices", Some(&t.key), None).await?;
    assert_eq!(devices["devices"][0]["id"], "kitchen-1");
    assert_eq!(devices["devices"][0]["online"], true);
    assert_eq!(devices["devices"][0]["firmware_version"], "1.0.0");
    assert_eq!(devices["devices"][0]["messages_today"], 5);
    let (_, channels) = http(t.addr, "GET", "/v1/channels", Some(&t.key), None).await?;
    assert_eq!(channels["channels"][0]["name"], "temp");
    assert_eq!(channels["channels"][0]["next_offset"], 6);

    // Presence goes offline when the device leaves.
    drop(device);
    let mut offline = false;
    for _ in 0..100 {
        let (_, devices) = http(t.addr, "GET", "/v1/devices", Some(&t.key), None).await?;
        if devices["devices"][0]["online"] == false {
            offline = devices["devices"][0]["last_seen_ms"].as_u64().is_some();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(offline, "device still online after disconnecting");

    let (_, metrics) = http_raw(t.addr, "GET", "/metrics", None, None).await?;
    assert!(
        metrics.contains("tether_messages_stored_total 5"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tether_messages_delivered_total 5"),
        "{metrics}"
    );
    t.server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn json_text_devices_and_time_range_reads() -> TestResult {
    let t = TestServer::start().await?;
    let token = t.add_device("default", "json-dev")?;
    let mut device = Device::connect(t.addr, &token).await?;
    device.json = true;
    device.hello("json-dev", 1).await?;
    device.publish(1, "a/b", "[1,2,3]").await?;
    device.wait_ack(1).await?;
    let now = tether_server::now_ms();
    let path = format!(
        "/v1/messages?channel=a/b&since_ms={}&until_ms={}",
        now - 60_000,
        now + 60_000
    );
    let (status, page) = http(t.addr, "GET", &path, Some(&t.key), None).await?;
    assert_eq!(status, 200);
    assert_eq!(page["messages"][0]["payload"], json!([1, 2, 3]));
    let path = format!("/v1/messages?channel=a/b&since_ms={}", now + 60_000);
    let (_, page) = http(t.addr, "GET", &path, Some(&t.key), None).await?;
    assert_eq!(page["messages"], json!([]));
    t.server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn resume_after_reconnect_loses_and_duplicates_nothing() -> TestResult {
    let t = TestServer::start().await?;
    let token = t.add_device("default", "d1")?;
    let boot = 0xdead_beef_u64;
    let mut device = Device::connect(t.addr, &token).await?;
    assert_eq!(device.hello("d1", boot).await?.0, 0);
    for seq in 1..=10 {
        device.publish(seq, "temp", &seq.to_string()).await?;
    }
    device.wait_ack(10).await?;
    drop(device);

    // Same boot: the server says 10 are stored; the device re-sends 8..=10
    // (as if their acks were lost) and continues.
    let mut device = Device::connect(t.addr, &token).await?;
    assert_eq!(device.hello("d1", boot).await?.0, 10);
    for seq in 8..=15 {
        device.publish(seq, "temp", &seq.to_string()).await?;
    }
    device.wait_ack(15).await?;
    // A new boot starts its own sequence space.
    drop(device);
    let mut device = Device::connect(t.addr, &token).await?;
    assert_eq!(device.hello("d1", boot + 1).await?.0, 0);
    device.publish(1, "temp", "100").await?;
    device.wait_ack(1).await?;

    let mut receiver = Receiver::connect(t.addr, &t.key).await?;
    let subscribed = receiver.subscribe("temp", Some(0)).await?;
    assert_eq!(subscribed["first_offset"], 1);
    assert_eq!(subscribed["next_offset"], 17);
    let events = receiver.events(16).await?;
    assert_eq!(offsets(&events), (1..=16).collect::<Vec<_>>());
    let payloads: Vec<_> = events.iter().map(|e| e["payload"].clone()).collect();
    let mut expected: Vec<_> = (1..=15).map(|n| json!(n)).collect();
    expected.push(json!(100));
    assert_eq!(payloads, expected);

    // A receiver resuming after offset 12 gets exactly the rest.
    let mut resumed = Receiver::connect_subprotocol(t.addr, &t.key).await?;
    resumed.subscribe("temp", Some(13)).await?;
    assert_eq!(offsets(&resumed.events(4).await?), [13, 14, 15, 16]);
    t.server.shutdown().await;
    Ok(())
}

/// Receivers subscribe with `from = 1` at staggered moments while a device
/// publishes continuously: each must see every offset exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_to_live_handover_has_no_gap_and_no_duplicate() -> TestResult {
    let t = TestServer::start().await?;
    let token = t.add_device("default", "fast")?;
    const TOTAL: u32 = 600;
    let addr = t.addr;
    let publisher = tokio::spawn(async move {
        let mut device = Device::connect(addr, &token).await?;
        device.hello("fast", 7).await?;
        for seq in 1..=TOTAL {
            device
                .publish(seq, "stream", &format!("{{\"n\":{seq}}}"))
                .await?;
            if seq % 8 == 0 || seq == TOTAL {
                device
                    .wait_ack(seq)
                    .await
                    .map_err(|e| format!("waiting for ack {seq}: {e}"))?;
            }
        }
        Ok::<_, BoxError>(())
    });
    let mut receivers = Vec::new();
    for round in 0..6u64 {
        tokio::time::sleep(std::time::Duration::from_millis(15 * round)).await;
        let key = t.key.clone();
        receivers.push(tokio::spawn(async move {
            let mut receiver = if round % 2 == 0 {
                Receiver::connect(addr, &key).await?
            } else {
                Receiver::connect_first_message(addr, &key).await?
            };
            receiver.subscribe("stream", Some(1)).await?;
            let mut events = Vec::new();
            while events.len() < TOTAL as usize {
                match receiver.events(1).await {
                    Ok(mut event) => events.append(&mut event),
                    Err(error) => {
                        let got = offsets(&events);
                        return Err(format!(
                            "receiver {round}: {error} after {} events, last {:?}",
                            got.len(),
                            got.last()
                        )
                        .into());
                    }
                }
            }
            Ok::<_, BoxError>(offsets(&events))
        }));
    }
    publisher
        .await?
        .map_err(|error| format!("publisher: {error}"))?;
    let expected: Vec<u64> = (1..=u64::from(TOTAL)).collect();
    for receiver in receivers {
        assert_eq!(receiver.await??, expected);
    }
    t.server.shutdown().await;
    Ok(())
}

/// A receiver that stops reading overflows its live queue; it must then be
/// caught up from the store with nothing lost, and memory stays bounded.
///
/// The live queue overflows only once the receiver's socket buffers and
/// its outbox are full (the server moves events on until then, and keeps
/// a commit's events whole), so the events here add up to 12 MB, well
/// past what loopback buffers hold (Linux grows a send buffer to 4 MB by
/// default); the write timeout is long enough for the device to publish
/// them all while the receiver does not read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_receiver_catches_up_from_the_store() -> TestResult {
    let t = TestServer::start_with(|config| {
        let mut limits = test_limits();
        limits.live_queue = 4;
        limits.write_timeout = std::time::Duration::from_secs(120);
        config.with_limits(limits)
    })
    .await?;
    let token = t.add_device("default", "d")?;
    let mut slow = Receiver::connect(t.addr, &t.key).await?;
    slow.subscribe("bulk", None).await?;
    let mut device = Device::connect(t.addr, &token).await?;
    device.hello("d", 1).await?;
    const TOTAL: u32 = 3000;
    let padding = "x".repeat(4000);
    for seq in 1..=TOTAL {
        device
            .publish(
                seq,
                "bulk",
                &format!("{{\"n\":{seq},\"pad\":\"{padding}\"}}"),
            )
            .await?;
        if seq % 16 == 0 {
            device.wait_ack(seq).await?;
        }
    }
    device.wait_ack(TOTAL).await?;
    // Only now does the slow receiver read.
    let events = slow.events(TOTAL as usize).await?;
    assert_eq!(offsets(&events), (1..=u64::from(TOTAL)).collect::<Vec<_>>());
    let (_, metrics) = http_raw(t.addr, "GET", "/metrics", None, None).await?;
    let catch_ups = metrics
        .lines()
        .find_map(|line| line.strip_prefix("tether_receiver_catch_ups_total "))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .ok_or("no catch-up metric")?;
    assert!(
        catch_ups > 0,
        "the slow receiver never fell behind: {metrics}"
    );
    t.server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn commands_reach_the_device_and_answers_come_back() -> TestResult {
    let t = TestServer::start().await?;
    let token = t.add_device("default", "lamp")?;
    let mut device = Device::connect(t.addr, &token).await?;
    device.hello("lamp", 3).await?;

    // Over the receiver WebSocket.
    let mut receiver = Receiver::connect(t.addr, &t.key).await?;
    receiver
        .send_json(&json!({"v": 1, "send_command": {"request_id": 9, "device": "lamp", "channel": "led", "payload": {"on": true}}}))
        .await?;
    let Downlink::Command {
        id,
        channel,
        payload,
    } = device.recv().await?
    else {
        return Err("expected a command".into());
    };
    assert_eq!(
        (channel.as_str(), payload.as_str()),
        ("led", "{\"on\":true}")
    );
    device.command_ack(id, "{\"brightness\":80}").await?;
    let result = receiver.recv().await?;
    assert_eq!(result["command_result"]["request_id"], 9);
    assert_eq!(result["command_result"]["status"], "ok");
    assert_eq!(
        result["command_result"]["result"],
        json!({"brightness": 80})
    );

    // Over HTTP (the request waits for the device's answer).
    let addr = t.addr;
    let key = t.key.clone();
    let post = tokio::spawn(async move {
        http(
            addr,
            "POST",
            "/v1/devices/lamp/commands",
            Some(&key),
            Some(&json!({"channel": "led", "payload": false})),
        )
        .await
    });
    let Downlink::Command { id, payload, .. } = device.recv().await? else {
        return Err("expected a command".into());
    };
    assert_eq!(payload, "false");
    device.command_ack(id, "null").await?;
    let (status, body) = post.await??;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"status": "ok", "result": null}));

    // Offline device and unknown device.
    drop(device);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (status, body) = http(
        t.addr,
        "POST",
        "/v1/devices/lamp/commands",
        Some(&t.key),
        Some(&json!({"channel": "led"})),
    )
    .await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("device_offline"))
    );
    let (status, body) = http(
        t.addr,
        "POST",
        "/v1/devices/ghost/commands",
        Some(&t.key),
        Some(&json!({"channel": "led"})),
    )
    .await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("unknown_device"))
    );
    receiver
        .send_json(&json!({"v": 1, "send_command": {"request_id": 10, "device": "lamp", "channel": "led", "payload": 1}}))
        .await?;
    let error = receiver.recv().await?;
    assert_eq!(error["error"]["code"], 10, "{error}");
    assert_eq!(error["error"]["request_id"], 10);
    t.server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn claiming_moves_a_device_into_the_keys_tenant() -> TestResult {
    let t = TestServer::start().await?;
    let admin = t.admin()?;
    let device = admin.add_device(None, Some("label-7"), true)?;
    let code = device.claim_code.ok_or("no claim code")?;
    // Before claiming it is nobody's.
    let (_, devices) = http(t.addr, "GET", "/v1/devices", Some(&t.key), None).await?;
    assert_eq!(devices["devices"], json!([]));
    let (status, body) = http(
        t.addr,
        "POST",
        "/v1/claim",
        Some(&t.key),
        Some(&json!({"claim_code": "0000-0000-0000"})),
    )
    .await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("unknown_claim_code"))
    );
    let tenant = admin.tenant_id("default")?;
    let read_only = admin.add_key(
        tenant,
        &tether_server::store::ChannelFilter::ALL,
        false,
        None,
    )?;
    let (status, _) = http(
        t.addr,
        "POST",
        "/v1/claim",
        Some(&read_only.key),
        Some(&json!({"claim_code": code})),
    )
    .await?;
    assert_eq!(status, 403);
    let (status, body) = http(
        t.addr,
        "POST",
        "/v1/claim",
        Some(&t.key),
        Some(&json!({"claim_code": code.to_lowercase()})),
    )
    .await?;
    assert_eq!((status, body["device"].as_str()), (200, Some("label-7")));
    let (_, devices) = http(t.addr, "GET", "/v1/devices", Some(&t.key), None).await?;
    assert_eq!(devices["devices"][0]["id"], "label-7");
    // Used up.
    let (status, _) = http(
        t.addr,
        "POST",
        "/v1/claim",
        Some(&t.key),
        Some(&json!({"claim_code": code})),
    )
    .await?;
    assert_eq!(status, 404);
    // Guessing is cut off: after 10 wrong codes a minute, 429 even for a
    // right one.
    let guessable = admin
        .add_device(None, Some("label-8"), true)?
        .claim_code
        .ok_or("no code")?;
    for _ in 0..8 {
        http(
            t.addr,
            "POST",
            "/v1/claim",
            Some(&t.key),
            Some(&json!({"claim_code": "0000-0000-0000"})),
        )
        .await?;
    }
    let (status, body) = http(
        t.addr,
        "POST",
        "/v1/claim",
        Some(&t.key),
        Some(&json!({"claim_code": guessable})),
    )
    .await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("rate_limited"))
    );
    t.server.shutdown().await;
    Ok(())
}

/// A claim code with an expiry works until then; afterwards claiming answers
/// 410 `claim_code_expired`, distinct from an unknown or used code (404
/// `unknown_claim_code`). The admin CLI sets the expiry with
/// `--claim-expires-in`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_claim_codes_answer_claim_code_expired() -> TestResult {
    let t = TestServer::start().await?;
    let admin = t.admin()?;
    let now = tether_server::now_ms();
    let claim = |code: String| {
        let key = t.key.clone();
        let addr = t.addr;
        async move {
            http(
                addr,
                "POST",
                "/v1/claim",
                Some(&key),
                Some(&json!({ "claim_code": code })),
            )
            .await
        }
    };
    let expired = admin
        .add_claimable_device(None, Some("old-1"), Some(now - 1_000))?
        .claim_code
        .ok_or("no code")?;
    let (status, body) = claim(expired.clone()).await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (410, Some("claim_code_expired")),
        "{body}"
    );
    // Still expired (not used up), and the device stays unclaimed.
    let (status, _) = claim(expired).await?;
    assert_eq!(status, 410);
    let (_, devices) = http(t.addr, "GET", "/v1/devices", Some(&t.key), None).await?;
    assert_eq!(devices["devices"], json!([]));
    // An expiry in the future: claimable; then used up (404, not 410).
    let fresh = admin
        .add_claimable_device(None, Some("new-1"), Some(now + 3_600_000))?
        .claim_code
        .ok_or("no code")?;
    let (status, body) = claim(fresh.clone()).await?;
    assert_eq!((status, body["device"].as_str()), (200, Some("new-1")));
    let (status, body) = claim(fresh).await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("unknown_claim_code"))
    );

    // The admin CLI (the real binary, on the running server's database).
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tether-server"))
        .arg("--data-dir")
        .arg(t.dir.path())
        .args(["device", "add", "--claimable", "--id", "cli-1"])
        .args(["--claim-expires-in", "1s"])
        .output()?;
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8(output.stdout)?;
    assert!(printed.contains("claim code expires: in 1s"), "{printed}");
    let code = printed
        .lines()
        .find_map(|line| line.strip_prefix("claim code (for the label): "))
        .ok_or("no claim code printed")?
        .to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let (status, body) = claim(code).await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (410, Some("claim_code_expired"))
    );
    // Without `--claimable` an expiry is refused.
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_tether-server"))
        .arg("--data-dir")
        .arg(t.dir.path())
        .args([
            "device",
            "add",
            "--tenant",
            "default",
            "--claim-expires-in",
            "1d",
        ])
        .output()?;
    assert!(!refused.status.success());
    t.server.shutdown().await;
    Ok(())
}

/// A claim closes the device's connections of the old tenant at once, but a
/// connection made right after the claim (before the server's revocation
/// poller runs) belongs to the new tenant: it stays, and what it publishes
/// is stored there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_connecting_right_after_its_claim_stays_connected() -> TestResult {
    let t = TestServer::start().await?;
    let admin = t.admin()?;
    let new = admin.add_device(None, Some("label-9"), true)?;
    let code = new.claim_code.ok_or("no claim code")?;
    // Connected while unclaimed: this session belongs to the old tenant.
    let mut before = Device::connect(t.addr, &new.token).await?;
    before.hello("label-9", 1).await?;
    let (status, body) = http(
        t.addr,
        "POST",
        "/v1/claim",
        Some(&t.key),
        Some(&json!({"claim_code": code})),
    )
    .await?;
    assert_eq!((status, body["device"].as_str()), (200, Some("label-9")));
    // Closed by the claim itself, well before the 500 ms poller.
    let closed = tokio::time::timeout(
        std::time::Duration::from_millis(400),
        close_code(&mut before.ws),
    )
    .await
    .map_err(|_| "the old session was not closed at once")??;
    assert_eq!(closed, 4005);
    // No sleep: the device dials in again immediately.
    let mut device = Device::connect(t.addr, &new.token).await?;
    device.hello("label-9", 2).await?;
    for seq in 1..=3 {
        device
            .publish(seq, "claimed/readings", &format!("{{\"n\":{seq}}}"))
            .await?;
    }
    device.wait_ack(3).await?;
    // Past the revocation poller's period (500 ms): the claim's log entry
    // is applied and the new session is still there.
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    for seq in 4..=6 {
        device
            .publish(seq, "claimed/readings", &format!("{{\"n\":{seq}}}"))
            .await?;
    }
    device.wait_ack(6).await?;
    let (_, devices) = http(t.addr, "GET", "/v1/devices", Some(&t.key), None).await?;
    assert_eq!(devices["devices"][0]["id"], "label-9");
    assert_eq!(devices["devices"][0]["online"], true, "{devices}");
    let (status, page) = http(
        t.addr,
        "GET",
        "/v1/messages?channel=claimed/readings&from=0&limit=100",
        Some(&t.key),
        None,
    )
    .await?;
    assert_eq!(status, 200, "{page}");
    let stored: Vec<i64> = page["messages"]
        .as_array()
        .ok_or("no messages")?
        .iter()
        .filter_map(|event| event["payload"]["n"].as_i64())
        .collect();
    assert_eq!(stored, [1, 2, 3, 4, 5, 6], "{page}");
    // Revocation still disconnects at once.
    admin.revoke_device("label-9")?;
    assert_eq!(close_code(&mut device.ws).await?, 4005);
    t.server.shutdown().await;
    Ok(())
}

/// With a write queue of one operation the store cannot keep up with eight
/// devices publishing at once: acks slow down, yet every acknowledged
/// record is stored and delivered exactly once (never ack-then-drop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_slows_acks_and_drops_nothing() -> TestResult {
    let t = TestServer::start_with(|mut config| {
        config.write_queue = 1;
        config
    })
    .await?;
    const DEVICES: usize = 8;
    const EACH: u32 = 150;
    let mut receiver = Receiver::connect(t.addr, &t.key).await?;
    receiver.subscribe("load", None).await?;
    let mut publishers = Vec::new();
    for n in 0..DEVICES {
        let id = format!("load-{n}");
        let token = t.add_device("default", &id)?;
        let addr = t.addr;
        publishers.push(tokio::spawn(async move {
            let mut device = Device::connect(addr, &token).await?;
            let (_, max_in_flight) = device.hello(&id, 5).await?;
            let window = u32::from(max_in_flight);
            for seq in 1..=EACH {
                device.publish(seq, "load", &format!("[{n},{seq}]")).await?;
                if seq % window == 0 || seq == EACH {
                    device.wait_ack(seq).await?;
                }
            }
            Ok::<_, BoxError>(())
        }));
    }
    for publisher in publishers {
        publisher.await??;
    }
    let total = DEVICES * EACH as usize;
    let events = receiver.events(total).await?;
    assert_eq!(offsets(&events), (1..=total as u64).collect::<Vec<_>>());
    let mut seen: Vec<(u64, u64)> = events
        .iter()
        .filter_map(|e| Some((e["payload"][0].as_u64()?, e["payload"][1].as_u64()?)))
        .collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), total);
    t.server.shutdown().await;
    Ok(())
}
