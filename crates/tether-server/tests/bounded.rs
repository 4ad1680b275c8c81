//! Everything bounded, every write with a deadline (issue #10, section 3),
//! reproduced from outside over real loopback sockets: peers that stop
//! reading, a device session fenced while it is stuck writing, revocation
//! notices missed by a busy connection, live queues after subscribe churn,
//! and commands in flight.

// Tests are std code; the no_std import lints do not apply.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// A receive buffer small enough that a client that stops reading is full
/// after a few frames (the server's send buffer still takes megabytes).
const SMALL_BUFFER: u32 = 4096;

/// A JSON payload of about 4 KB.
fn big_payload() -> String {
    format!("\"{}\"", "x".repeat(4000))
}

fn send_command(request_id: u32, device: &str, payload: &str) -> serde_json::Value {
    let payload: serde_json::Value = serde_json::from_str(payload).unwrap_or_default();
    json!({"v": 1, "send_command": {
        "request_id": request_id, "device": device, "channel": "c", "payload": payload
    }})
}

const SLOW: &str = "tether_rejected_total{kind=\"slow_consumer\"}";

#[tokio::test]
async fn a_receiver_that_stops_reading_is_closed_with_slow_consumer() -> TestResult {
    let t =
        TestServer::start_with(limits(|l| l.write_timeout = Duration::from_millis(300))).await?;
    let token = t.add_device("default", "d")?;
    let mut device = Device::connect(t.addr, &token).await?;
    device.hello("d", 1).await?;
    let stream = tcp_from(Ipv4Addr::LOCALHOST, t.addr, Some(SMALL_BUFFER)).await?;
    let mut receiver = Receiver {
        ws: ws_over(stream, t.addr, "/v1/receiver", &t.key).await?,
    };
    receiver.subscribe("bulk", None).await?;
    // The receiver reads nothing more while the device publishes.
    let payload = big_payload();
    let mut seq = 0;
    while !slow_consumer_seen(&t).await? {
        if seq >= 8000 {
            return Err("the receiver was never closed".into());
        }
        for _ in 0..32 {
            seq += 1;
            device.publish(seq, "bulk", &payload).await?;
        }
        device.wait_ack(seq).await?;
    }
    // Reading again, it finds what was sent, then the close frame.
    assert_eq!(close_code(&mut receiver.ws).await?, 4016);
    wait_metric(&t, "tether_connections{kind=\"receiver\"}", "0").await?;
    // The device never noticed.
    device.publish(9000, "bulk", "1").await?;
    device.wait_ack(9000).await?;
    t.server.shutdown().await;
    Ok(())
}

/// Sends commands of 4 KB to `device`, numbered `ids`.
async fn send_commands(
    receiver: &mut Receiver,
    device: &str,
    ids: std::ops::RangeInclusive<u32>,
) -> TestResult {
    let payload = big_payload();
    for request_id in ids {
        receiver
            .send_json(&send_command(request_id, device, &payload))
            .await?;
        if request_id % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
    Ok(())
}

/// Whether the server counted a slow consumer. The tests feed the server
/// in batches and ask this between them, so a client starts reading again
/// while the server still tries to send its close frame.
async fn slow_consumer_seen(t: &TestServer) -> Result<bool, BoxError> {
    Ok(metric(t, SLOW).await? == "1")
}

fn flooding_limits(
    write_timeout: Duration,
) -> impl FnOnce(tether_server::Config) -> tether_server::Config {
    limits(move |l| {
        l.write_timeout = write_timeout;
        l.command_timeout = Duration::from_secs(30);
        l.max_commands_per_connection = 5000;
        l.max_commands_per_tenant = 5000;
    })
}

#[tokio::test]
async fn a_device_that_stops_reading_is_closed_with_slow_consumer() -> TestResult {
    let t = TestServer::start_with(flooding_limits(Duration::from_millis(300))).await?;
    let token = t.add_device("default", "d")?;
    let stream = tcp_from(Ipv4Addr::LOCALHOST, t.addr, Some(SMALL_BUFFER)).await?;
    let mut device = Device {
        ws: ws_over(stream, t.addr, "/v1/device", &token).await?,
        json: false,
    };
    // A device whose receive buffer takes the 4 KB commands.
    device.hello_with_limit("d", 1, Some(8192)).await?;
    let mut receiver = Receiver::connect(t.addr, &t.key).await?;
    // The device reads nothing while commands pile up.
    let mut sent = 0;
    while !slow_consumer_seen(&t).await? {
        if sent >= 6400 {
            return Err("the device was never closed".into());
        }
        send_commands(&mut receiver, "d", sent + 1..=sent + 64).await?;
        sent += 64;
    }
    assert_eq!(close_code(&mut device.ws).await?, 4016);
    wait_metric(&t, "tether_connections{kind=\"device\"}", "0").await?;
    let (_, devices) = http(t.addr, "GET", "/v1/devices", Some(&t.key), None).await?;
    assert_eq!(devices["devices"][0]["online"], false, "{devices}");
    t.server.shutdown().await;
    Ok(())
}

/// A device `id` that reads nothing after its `Welcome`, and 6 MB of
/// commands for it sent by `receiver`: more than the socket buffers take,
/// so the server is stuck writing to it (and its command queue is full).
async fn stuck_device(
    t: &TestServer,
    token: &str,
    id: &str,
    receiver: &mut Receiver,
) -> Result<Device, BoxError> {
    let stream = tcp_from(Ipv4Addr::LOCALHOST, t.addr, Some(SMALL_BUFFER)).await?;
    let mut device = Device {
        ws: ws_over(stream, t.addr, "/v1/device", token).await?,
        json: false,
    };
    // A device whose receive buffer takes the 4 KB commands.
    device.hello_with_limit(id, 1, Some(8192)).await?;
    send_commands(receiver, id, 1..=1500).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(device)
}

/// A receiver (with `key`) that reads nothing after subscribing to `bulk`,
/// and 6 MB of events on it published by `device`: the server is stuck
/// writing to it.
async fn stuck_receiver(
    t: &TestServer,
    key: &str,
    device: &mut Device,
) -> Result<Receiver, BoxError> {
    let stream = tcp_from(Ipv4Addr::LOCALHOST, t.addr, Some(SMALL_BUFFER)).await?;
    let mut receiver = Receiver {
        ws: ws_over(stream, t.addr, "/v1/receiver", key).await?,
    };
    receiver.subscribe("bulk", None).await?;
    let payload = big_payload();
    for seq in 1..=1500 {
        device.publish(seq, "bulk", &payload).await?;
        if seq % 32 == 0 {
            device.wait_ack(seq).await?;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(receiver)
}

#[tokio::test]
async fn a_stuck_receiver_is_closed_at_once_when_its_key_is_revoked() -> TestResult {
    // A long write timeout: closing must not wait for it.
    let t = TestServer::start_with(limits(|l| l.write_timeout = Duration::from_secs(60))).await?;
    let admin = t.admin()?;
    let tenant = admin.tenant_id("default")?;
    let key = admin.add_key(
        tenant,
        &tether_server::store::ChannelFilter::ALL,
        false,
        None,
    )?;
    let token = t.add_device("default", "d")?;
    let mut device = Device::connect(t.addr, &token).await?;
    device.hello("d", 1).await?;
    let _stuck = stuck_receiver(&t, &key.key, &mut device).await?;
    let started = Instant::now();
    admin.revoke_key(key.key_id)?;
    wait_metric(&t, "tether_connections{kind=\"receiver\"}", "0").await?;
    // The revocation poller runs every 500 ms; closing takes about a
    // second more at most.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed after {:?}",
        started.elapsed()
    );
    t.server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn shutdown_does_not_wait_for_clients_that_stopped_reading() -> TestResult {
    let t = TestServer::start_with(flooding_limits(Duration::from_secs(60))).await?;
    let token = t.add_device("default", "d")?;
    let publisher_token = t.add_device("default", "publisher")?;
    let mut receiver = Receiver::connect(t.addr, &t.key).await?;
    let _stuck_device = stuck_device(&t, &token, "d", &mut receiver).await?;
    let mut publisher = Device::connect(t.addr, &publisher_token).await?;
    publisher.hello("publisher", 1).await?;
    let _stuck_receiver = stuck_receiver(&t, &t.key, &mut publisher).await?;
    let started = Instant::now();
    t.server.shutdown().await;
    // `shutdown` waits up to 5 s for connections to close themselves.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn a_newer_session_fences_an_older_one_stuck_writing() -> TestResult {
    // A long write timeout: fencing must not wait for it.
    let t = TestServer::start_with(flooding_limits(Duration::from_secs(60))).await?;
    let token = t.add_device("default", "d")?;
    let mut receiver = Receiver::connect(t.addr, &t.key).await?;
    // The old session is stuck writing, and its command queue is full.
    let stuck = stuck_device(&t, &token, "d", &mut receiver).await?;
    let started = Instant::now();
    let mut newer = Device::connect(t.addr, &token).await?;
    newer.hello("d", 2).await?;
    wait_metric(&t, "tether_connections{kind=\"device\"}", "1").await?;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the old session lived on for {:?}",
        started.elapsed()
    );
    // Commands now reach the newer session.
    let command = async {
        http(
            t.addr,
            "POST",
            "/v1/devices/d/commands",
            Some(&t.key),
            Some(&json!({"channel": "led", "payload": true})),
        )
        .await
    };
    let answer = async {
        loop {
            if let Downlink::Command { id, channel, .. } = newer.recv().await?
                && channel == "led"
            {
                newer.command_ack(id, "\"done\"").await?;
                return Ok::<(), BoxError>(());
            }
        }
    };
    let ((status, body), ()) = tokio::try_join!(command, answer)?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"], "done");
    drop(stuck);
    t.server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn missed_revocation_notices_are_checked_against_the_store() -> TestResult {
    let t = TestServer::start().await?;
    let admin = t.admin()?;
    let tenant = admin.tenant_id("default")?;
    let key = admin.add_key(
        tenant,
        &tether_server::store::ChannelFilter::ALL,
        false,
        None,
    )?;
    let mut receiver = Receiver::connect(t.addr, &key.key).await?;
    receiver.subscribe("t", None).await?;
    // In one transaction, so the server reads them in one poll: the key's
    // revocation, then more notices than a connection buffers (256).
    let conn = rusqlite::Connection::open(t.server.database_path())?;
    let tx = conn.unchecked_transaction()?;
    tx.execute("UPDATE keys SET revoked = 1 WHERE id = ?1", [key.key_id])?;
    tx.execute(
        "INSERT INTO revocations(kind, subject) VALUES ('key', ?1)",
        [key.key_id.to_string()],
    )?;
    for index in 0..300 {
        tx.execute(
            "INSERT INTO revocations(kind, subject) VALUES ('device', ?1)",
            [format!("nobody-{index}")],
        )?;
    }
    tx.commit()?;
    assert_eq!(close_code(&mut receiver.ws).await?, 4005);
    t.server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn live_queues_follow_subscriptions_and_are_capped_per_tenant() -> TestResult {
    let t = TestServer::start_with(limits(|l| l.max_channels_per_tenant = 3)).await?;
    let mut receiver = Receiver::connect(t.addr, &t.key).await?;
    // Subscribe/unsubscribe churn on new names leaves no live queue.
    for index in 0..300 {
        let channel = format!("churn/{index}");
        receiver.subscribe(&channel, None).await?;
        receiver
            .send_json(&json!({"v": 1, "unsubscribe": {"channel": channel}}))
            .await?;
    }
    wait_metric(&t, "tether_live_channels", "0").await?;
    // Three channels of the tenant; a fourth is refused with a typed
    // error, the connection stays.
    for channel in ["a", "b", "c"] {
        receiver.subscribe(channel, None).await?;
    }
    receiver
        .send_json(&json!({"v": 1, "subscribe": {"channel": "d", "from": null}}))
        .await?;
    let refused = receiver.recv().await?;
    assert_eq!(refused["error"]["code"], 12, "{refused}");
    assert_eq!(
        metric(&t, "tether_rejected_total{kind=\"channels_per_tenant\"}").await?,
        "1"
    );
    // Another subscriber of a subscribed channel costs nothing; another
    // tenant has its own channels.
    let mut second = Receiver::connect(t.addr, &t.key).await?;
    second.subscribe("a", None).await?;
    let admin = t.admin()?;
    let other = admin.add_tenant("other")?;
    let theirs = admin.add_key(
        other,
        &tether_server::store::ChannelFilter::ALL,
        false,
        None,
    )?;
    let mut other_receiver = Receiver::connect(t.addr, &theirs.key).await?;
    other_receiver.subscribe("d", None).await?;
    wait_metric(&t, "tether_live_channels", "4").await?;
    // A channel given up by its last subscriber makes room.
    receiver
        .send_json(&json!({"v": 1, "unsubscribe": {"channel": "b"}}))
        .await?;
    wait_metric(&t, "tether_live_channels", "3").await?;
    receiver.subscribe("d", None).await?;
    drop((receiver, second, other_receiver));
    wait_metric(&t, "tether_live_channels", "0").await?;
    t.server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn commands_in_flight_are_bounded_per_connection_and_per_tenant() -> TestResult {
    let t = TestServer::start_with(limits(|l| {
        l.command_timeout = Duration::from_secs(2);
        l.max_commands_per_connection = 2;
        l.max_commands_per_tenant = 3;
    }))
    .await?;
    let token = t.add_device("default", "d")?;
    let mut device = Device::connect(t.addr, &token).await?;
    device.hello("d", 1).await?;
    let mut receiver = Receiver::connect(t.addr, &t.key).await?;
    for request_id in 1..=3 {
        receiver
            .send_json(&send_command(request_id, "d", "1"))
            .await?;
    }
    // The third is refused at once; the connection stays.
    let refused = receiver.recv().await?;
    assert_eq!(refused["error"]["code"], 12, "{refused}");
    assert_eq!(refused["error"]["request_id"], 3);
    // A third command of the tenant over HTTP; the device sees all three.
    let addr = t.addr;
    let key = t.key.clone();
    let waiting = tokio::spawn(async move {
        http(
            addr,
            "POST",
            "/v1/devices/d/commands",
            Some(&key),
            Some(&json!({"channel": "c", "payload": 1})),
        )
        .await
    });
    for _ in 0..3 {
        assert!(matches!(device.recv().await?, Downlink::Command { .. }));
    }
    // The tenant is at its limit.
    let (status, body) = http(
        t.addr,
        "POST",
        "/v1/devices/d/commands",
        Some(&t.key),
        Some(&json!({"channel": "c", "payload": 1})),
    )
    .await?;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    // The device never answers: each ends with command_timeout.
    let (status, _) = waiting.await??;
    assert_eq!(status, 504);
    for _ in 0..2 {
        let timed_out = receiver.recv().await?;
        assert_eq!(timed_out["error"]["code"], 11, "{timed_out}");
    }
    // Room again.
    receiver.send_json(&send_command(4, "d", "1")).await?;
    let Downlink::Command { id, .. } = device.recv().await? else {
        return Err("expected a command".into());
    };
    device.command_ack(id, "1").await?;
    let result = receiver.recv().await?;
    assert_eq!(result["command_result"]["request_id"], 4, "{result}");
    t.server.shutdown().await;
    Ok(())
}
