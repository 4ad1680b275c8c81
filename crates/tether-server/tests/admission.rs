//! Nobody without credentials can take what devices need (issue #10,
//! section 2), reproduced from outside over real loopback sockets: keyless
//! WebSocket upgrades, connections per address and per tenant, request
//! bodies before authentication, concurrent claim-code guesses, and a
//! device that reconnects to refill its publish bucket.

// Tests are std code; the no_std import lints do not apply.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::Message;

/// Whether the server closed `stream` without answering a request.
async fn closed_without_answer(mut stream: TcpStream) -> Result<bool, BoxError> {
    // Writing may already fail (reset): that is a refusal too.
    let _ = stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    match tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await? {
        Ok(_) => Ok(answer.is_empty()),
        Err(_) => Ok(true),
    }
}

#[tokio::test]
async fn keyless_receiver_upgrades_cannot_lock_devices_out() -> TestResult {
    // The review's numbers: 100 keyless upgrades against 100 connections.
    let t = TestServer::start_with(limits(|l| {
        l.max_connections = 100;
        l.max_unauthenticated_connections = 100;
    }))
    .await?;
    let token = t.add_device("default", "d")?;
    let mut keyless = Vec::new();
    for _ in 0..100 {
        let (ws, _) = tokio_tungstenite::connect_async(t.url("/v1/receiver")).await?;
        keyless.push(ws);
    }
    wait_metric(&t, "tether_connections{kind=\"unauthenticated\"}", "100").await?;
    assert_eq!(t.server.open_connections(), 0);
    // A device connects, publishes and is acknowledged; a receiver with a
    // key connects and gets the record.
    let mut device = Device::connect(t.addr, &token).await?;
    device.hello("d", 1).await?;
    device.publish(1, "t", "1").await?;
    device.wait_ack(1).await?;
    let mut receiver = Receiver::connect(t.addr, &t.key).await?;
    receiver.subscribe("t", Some(0)).await?;
    assert_eq!(offsets(&receiver.events(1).await?), [1]);
    assert_eq!(t.server.open_connections(), 2);
    // One keyless upgrade more than its own budget: 503.
    let error = tokio_tungstenite::connect_async(t.url("/v1/receiver"))
        .await
        .err()
        .ok_or("keyless upgrade over its budget accepted")?;
    assert_eq!(http_status(&error), Some(503));
    assert_eq!(
        metric(
            &t,
            "tether_rejected_total{kind=\"max_unauthenticated_connections\"}"
        )
        .await?,
        "1"
    );
    // A keyless connection that authenticates moves to the real budget.
    let mut authenticated = Receiver {
        ws: keyless.pop().ok_or("no keyless connection")?,
    };
    authenticated
        .send_json(&json!({"v": 1, "auth": {"key": t.key}}))
        .await?;
    authenticated.subscribe("t", Some(0)).await?;
    wait_metric(&t, "tether_connections{kind=\"unauthenticated\"}", "99").await?;
    assert_eq!(t.server.open_connections(), 3);
    t.server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn an_auth_message_at_the_connection_limit_gets_1013() -> TestResult {
    let t = TestServer::start_with(limits(|l| l.max_connections = 1)).await?;
    let token = t.add_device("default", "d")?;
    let mut device = Device::connect(t.addr, &token).await?;
    device.hello("d", 1).await?;
    let mut receiver = Receiver::connect_first_message(t.addr, &t.key).await?;
    assert_eq!(close_code(&mut receiver.ws).await?, 1013);
    assert_eq!(
        metric(&t, "tether_rejected_total{kind=\"max_connections\"}").await?,
        "1"
    );
    t.server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn one_address_cannot_hold_every_socket() -> TestResult {
    let t = TestServer::start_with(limits(|l| l.max_connections_per_ip = Some(3))).await?;
    let token = t.add_device("default", "d")?;
    let crowd = Ipv4Addr::new(127, 0, 0, 2);
    // Three connections that never send a byte (a slow-loris start).
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(tcp_from(crowd, t.addr, None).await?);
    }
    // The server sees them (plus the metrics request itself).
    wait_metric(&t, "tether_tcp_connections", "4").await?;
    // The fourth from that address is closed at once, unanswered.
    assert!(closed_without_answer(tcp_from(crowd, t.addr, None).await?).await?);
    assert_eq!(
        metric(&t, "tether_rejected_total{kind=\"max_connections_per_ip\"}").await?,
        "1"
    );
    // Another address is served.
    let mut device = Device {
        ws: ws_over(
            tcp_from(Ipv4Addr::new(127, 0, 0, 3), t.addr, None).await?,
            t.addr,
            "/v1/device",
            &token,
        )
        .await?,
        json: false,
    };
    device.hello("d", 1).await?;
    // A WebSocket counts as the TCP connection it is: with one idle
    // connection gone, a device from the crowded address connects, and
    // then the address is full again.
    drop(idle.pop());
    wait_metric(&t, "tether_tcp_connections", "4").await?;
    let mut second = Device {
        ws: ws_over(
            tcp_from(crowd, t.addr, None).await?,
            t.addr,
            "/v1/device",
            &token,
        )
        .await?,
        json: false,
    };
    second.hello("d", 2).await?;
    assert!(closed_without_answer(tcp_from(crowd, t.addr, None).await?).await?);
    assert_eq!(
        metric(&t, "tether_rejected_total{kind=\"max_connections_per_ip\"}").await?,
        "2"
    );
    t.server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn one_tenant_cannot_take_every_connection() -> TestResult {
    let t = TestServer::start_with(limits(|l| l.max_connections_per_tenant = Some(2))).await?;
    let admin = t.admin()?;
    let other = admin.add_tenant("other")?;
    let other_device = admin.add_device(Some(other), Some("o1"), false)?.token;
    let tokens = [
        t.add_device("default", "d1")?,
        t.add_device("default", "d2")?,
        t.add_device("default", "d3")?,
    ];
    let mut first = Device::connect(t.addr, &tokens[0]).await?;
    first.hello("d1", 1).await?;
    let mut second = Device::connect(t.addr, &tokens[1]).await?;
    second.hello("d2", 1).await?;
    // The tenant is full: its third device, its receivers (key checked
    // before the upgrade, or in the first message) are refused.
    let error = connect_device(t.addr, &tokens[2])
        .await
        .err()
        .ok_or("third device of the tenant accepted")?;
    assert_eq!(http_status(&error), Some(503));
    let error = Receiver::connect(t.addr, &t.key)
        .await
        .err()
        .ok_or("receiver over the tenant limit accepted")?;
    assert!(error.to_string().contains("503"), "{error}");
    let mut late = Receiver::connect_first_message(t.addr, &t.key).await?;
    assert_eq!(close_code(&mut late.ws).await?, 1013);
    assert_eq!(
        metric(
            &t,
            "tether_rejected_total{kind=\"max_connections_per_tenant\"}"
        )
        .await?,
        "3"
    );
    // Another tenant is not affected.
    let mut theirs = Device::connect(t.addr, &other_device).await?;
    theirs.hello("o1", 1).await?;
    // A place freed is a place for the tenant again.
    first.ws.close(None).await?;
    let deadline = Instant::now() + WAIT;
    let mut third = loop {
        match Device::connect(t.addr, &tokens[2]).await {
            Ok(device) => break device,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => return Err(error),
        }
    };
    third.hello("d3", 1).await?;
    t.server.shutdown().await;
    Ok(())
}

/// Sends request headers announcing a 100-byte JSON body.
async fn post_headers(addr: SocketAddr, key: Option<&str>) -> Result<TcpStream, BoxError> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut head = format!(
        "POST /v1/claim HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n"
    );
    if let Some(key) = key {
        head.push_str(&format!("Authorization: Bearer {key}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    Ok(stream)
}

/// Reads a response's status line (the server may close after it).
async fn status(stream: &mut TcpStream, within: Duration) -> Result<u16, BoxError> {
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        while !answer.windows(2).any(|w| w == b"\r\n") {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    })
    .await
    .map_err(|_| "no answer in time")??;
    let text = String::from_utf8_lossy(&answer);
    Ok(text.split_whitespace().nth(1).ok_or("no status")?.parse()?)
}

#[tokio::test]
async fn request_bodies_come_after_authentication_and_within_a_deadline() -> TestResult {
    let t = TestServer::start_with(limits(|l| {
        l.handshake_timeout = Duration::from_millis(500);
    }))
    .await?;
    // No key: refused at once, without waiting for a body that never comes.
    let mut stream = post_headers(t.addr, None).await?;
    assert_eq!(status(&mut stream, Duration::from_millis(400)).await?, 401);
    // A key and a body trickling one byte every 100 ms: cut off with 408
    // at the handshake timeout.
    let mut stream = post_headers(t.addr, Some(&t.key)).await?;
    let started = Instant::now();
    let (mut read, mut write) = stream.split();
    let trickle = async {
        for _ in 0..100 {
            if write.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let answer = async {
        let mut answer = Vec::new();
        let _ = read.read_to_end(&mut answer).await;
        answer
    };
    let answer = tokio::select! {
        answer = answer => answer,
        () = trickle => Vec::new(),
    };
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        elapsed < Duration::from_secs(3),
        "cut after {elapsed:?} (the body would have taken 10 s)"
    );
    // A body larger than max_message_bytes: 413.
    let big = json!({ "claim_code": "x".repeat(20_000) });
    let (status, body) = http(t.addr, "POST", "/v1/claim", Some(&t.key), Some(&big)).await?;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "too_large");
    assert_eq!(
        metric(&t, "tether_rejected_total{kind=\"body_timeout\"}").await?,
        "1"
    );
    t.server.shutdown().await;
    Ok(())
}

// Several worker threads, as a real server has: guesses race each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_wrong_claim_codes_get_exactly_the_documented_limit() -> TestResult {
    let t = TestServer::start().await?;
    let mut guesses = tokio::task::JoinSet::new();
    for index in 0..200u32 {
        let addr = t.addr;
        let key = t.key.clone();
        guesses.spawn(async move {
            let code = format!("AAAA-AAAA-{index:04}");
            let body = json!({ "claim_code": code });
            http(addr, "POST", "/v1/claim", Some(&key), Some(&body))
                .await
                .map(|(status, _)| status)
        });
    }
    let mut statuses = std::collections::BTreeMap::new();
    while let Some(status) = guesses.join_next().await {
        *statuses.entry(status??).or_insert(0u32) += 1;
    }
    let limit = tether_server::CLAIM_FAILURES_PER_MINUTE;
    assert_eq!(statuses.get(&404), Some(&limit), "{statuses:?}");
    assert_eq!(statuses.get(&429), Some(&(200 - limit)), "{statuses:?}");
    // A real code is refused too while the key is over its limit.
    let admin = t.admin()?;
    let claimable = admin.add_claimable_device(None, Some("label-1"), None)?;
    let code = claimable.claim_code.ok_or("no claim code")?;
    let (status, _) = http(
        t.addr,
        "POST",
        "/v1/claim",
        Some(&t.key),
        Some(&json!({ "claim_code": code })),
    )
    .await?;
    assert_eq!(status, 429);
    t.server.shutdown().await;
    Ok(())
}

/// The next `Ack`'s seq, or the close code.
async fn ack_or_close(ws: &mut Ws) -> Result<Result<u32, u16>, BoxError> {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .map_err(|_| "timed out")?
            .ok_or("connection ended")??;
        match message {
            Message::Binary(bytes) => {
                if let tether_proto::ServerToDevice::Ack(ack) =
                    tether_proto::ServerToDevice::decode(&bytes)?
                {
                    return Ok(Ok(ack.seq));
                }
            }
            Message::Close(Some(frame)) => return Ok(Err(u16::from(frame.code))),
            Message::Close(None) => return Err("close without a code".into()),
            _ => {}
        }
    }
}

#[tokio::test]
async fn a_reconnecting_device_is_still_rate_limited() -> TestResult {
    let t = TestServer::start_with(limits(|l| {
        l.publish_rate = 1;
        l.publish_burst = 5;
    }))
    .await?;
    let token = t.add_device("default", "d")?;
    let started = Instant::now();
    let mut seq = 0;
    let mut limited = None;
    // Reconnect after every 3 publishes (a fresh bucket per connection
    // would allow 5 each: 15 in all).
    'connections: for _ in 0..5 {
        let mut device = Device::connect(t.addr, &token).await?;
        device.hello("d", 1).await?;
        for _ in 0..3 {
            seq += 1;
            device.publish(seq, "t", "1").await?;
            if let Err(code) = ack_or_close(&mut device.ws).await? {
                limited = Some(code);
                break 'connections;
            }
        }
        device.ws.close(None).await?;
    }
    assert_eq!(limited, Some(4012), "never rate limited");
    let (_, page) = http(t.addr, "GET", "/v1/messages?channel=t", Some(&t.key), None).await?;
    let stored = page["messages"].as_array().map_or(0, Vec::len);
    // The burst plus what the rate refilled meanwhile.
    let allowed = 5 + started.elapsed().as_secs() as usize + 1;
    assert!(stored <= allowed, "{stored} stored, {allowed} allowed");
    t.server.shutdown().await;
    Ok(())
}
