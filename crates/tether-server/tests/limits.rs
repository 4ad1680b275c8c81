//! Every hardening limit, each with the error or close code it must
//! produce, and other connections unaffected.

// Tests are std code; the no_std import lints do not apply.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::Message;

#[tokio::test]
async fn wrong_or_missing_token_is_refused_before_the_upgrade() -> TestResult {
    let t = TestServer::start().await?;
    let token = t.add_device("default", "d")?;
    let wrong = format!("td_{}", "0".repeat(64));
    let error = connect_device(t.addr, &wrong)
        .await
        .err()
        .ok_or("wrong token accepted")?;
    assert_eq!(http_status(&error), Some(401));
    let error = connect_device(t.addr, "nonsense")
        .await
        .err()
        .ok_or("bad token accepted")?;
    assert_eq!(http_status(&error), Some(401));
    // A tampered token (same lookup prefix, other secret) is refused too.
    let tampered = format!(
        "{}{}",
        &token[..token.len() - 1],
        if token.ends_with('0') { '1' } else { '0' }
    );
    let error = connect_device(t.addr, &tampered)
        .await
        .err()
        .ok_or("tampered token accepted")?;
    assert_eq!(http_status(&error), Some(401));
    let error = tokio_tungstenite::connect_async(format!("ws://{}/v1/device", t.addr))
        .await
        .err()
        .ok_or("missing token accepted")?;
    assert_eq!(http_status(&error), Some(401));
    assert_eq!(
        metric(&t, "tether_auth_failures_total{kind=\"device\"}").await?,
        "4"
    );
    // A receiver key is not a device token.
    let error = connect_device(t.addr, &t.key)
        .await
        .err()
        .ok_or("key accepted as token")?;
    assert_eq!(http_status(&error), Some(401));
    t.server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn handshake_timeouts_cut_silent_clients() -> TestResult {
    let t = TestServer::start_with(limits(|l| l.handshake_timeout = Duration::from_millis(300)))
        .await?;
    let token = t.add_device("default", "d")?;
    // A device that never says Hello.
    let mut ws = connect_device(t.addr, &token).await?;
    assert_eq!(close_code(&mut ws).await?, 1008);
    // A receiver that never authenticates.
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/v1/receiver", t.addr)).await?;
    assert_eq!(close_code(&mut ws).await?, 1008);
    // A slow-loris HTTP client that never finishes its headers.
    let mut tcp = tokio::net::TcpStream::connect(t.addr).await?;
    tcp.write_all(b"GET /v1/device HTTP/1.1\r\nHost: x\r\n")
        .await?;
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await??;
    assert!(started.elapsed() < Duration::from_secs(3));
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    t.server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn oversized_malformed_and_unexpected_messages_get_their_close_codes() -> TestResult {
    let t = TestServer::start_with(limits(|l| l.max_message_bytes = 8192)).await?;
    let token = t.add_device("default", "d")?;
    let good_token = t.add_device("default", "good")?;
    let mut good = Device::connect(t.addr, &good_token).await?;
    good.hello("good", 1).await?;

    let cases: Vec<(&str, Vec<Message>, u16)> = vec![
        ("too large", vec![Message::Binary(vec![1u8; 9000].into())], 1009),
        ("garbage", vec![Message::Binary(vec![1u8, 0, 0xff, 0xff].into())], 4001),
        ("unsupported version", vec![Message::Binary(vec![9u8, 0].into())], 4002),
        ("unknown kind", vec![Message::Binary(vec![1u8, 7].into())], 4003),
        ("bad JSON", vec![Message::Text("{\"v\":1,".into())], 4001),
        (
            "publish before hello",
            vec![Message::Text(r#"{"v":1,"publish":{"seq":1,"channel":"t","time_ms":null,"payload":1}}"#.into())],
            4004,
        ),
        (
            "another device's id",
            vec![Message::Text(r#"{"v":1,"hello":{"device_id":"good","firmware_version":"1","boot_id":1,"last_acked_seq":0}}"#.into())],
            4006,
        ),
    ];
    for (name, frames, expected) in cases {
        let mut ws = connect_device(t.addr, &token).await?;
        for frame in frames {
            ws.send(frame).await?;
        }
        assert_eq!(
            close_code(&mut ws)
                .await
                .map_err(|e| format!("{name}: {e}"))?,
            expected,
            "{name}"
        );
    }
    // After Hello: a second Hello, a payload that is not JSON, a bad channel.
    let after_hello: Vec<(&str, &str, u16)> = vec![
        (
            "second hello",
            r#"{"v":1,"hello":{"device_id":"d","firmware_version":"1","boot_id":1,"last_acked_seq":0}}"#,
            4004,
        ),
        (
            "bad channel",
            r#"{"v":1,"publish":{"seq":1,"channel":"a//b","time_ms":null,"payload":1}}"#,
            4007,
        ),
    ];
    for (name, frame, expected) in after_hello {
        // A JSON session (its Hello is JSON): text frames are its encoding.
        let mut device = Device::connect(t.addr, &token).await?;
        device.json = true;
        device.hello("d", 1).await?;
        device.ws.send(Message::Text(frame.into())).await?;
        assert_eq!(close_code(&mut device.ws).await?, expected, "{name}");
    }
    let mut device = Device::connect(t.addr, &token).await?;
    device.hello("d", 1).await?;
    device.publish(1, "t", "{not json").await?;
    assert_eq!(close_code(&mut device.ws).await?, 4007, "payload not JSON");

    // The other device never noticed.
    good.publish(1, "t", "1").await?;
    good.wait_ack(1).await?;
    t.server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn publish_rate_limit_closes_with_rate_limited() -> TestResult {
    let t = TestServer::start_with(limits(|l| {
        l.publish_rate = 1;
        l.publish_burst = 3;
    }))
    .await?;
    let token = t.add_device("default", "d")?;
    let mut device = Device::connect(t.addr, &token).await?;
    device.hello("d", 1).await?;
    for seq in 1..=4 {
        device.publish(seq, "t", "1").await?;
    }
    assert_eq!(close_code(&mut device.ws).await?, 4012);
    // The three within the burst were stored.
    let (_, page) = http(t.addr, "GET", "/v1/messages?channel=t", Some(&t.key), None).await?;
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(3));
    t.server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn idle_connections_are_pinged_then_closed() -> TestResult {
    let t = TestServer::start_with(limits(|l| {
        l.ping_interval = Duration::from_millis(100);
        l.idle_timeout = Duration::from_millis(400);
    }))
    .await?;
    let token = t.add_device("default", "d")?;
    // This client answers pings (tungstenite does while reading): it stays.
    let mut alive = Device::connect(t.addr, &token).await?;
    alive.hello("d", 1).await?;
    let other = t.add_device("default", "silent")?;
    let mut silent = Device::connect(t.addr, &other).await?;
    silent.hello("silent", 1).await?;
    // `silent` does not read (so never answers a ping) for a while.
    let keep_reading = tokio::spawn(async move {
        let result = tokio::time::timeout(Duration::from_millis(900), alive.recv()).await;
        (alive, result.is_err())
    });
    // The server closes at its first ping tick after 400 ms of silence
    // and then waits up to 500 ms for the close handshake.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut pings = 0;
    let code = loop {
        match tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut silent.ws)).await? {
            Some(Ok(Message::Ping(_))) => pings += 1,
            Some(Ok(Message::Close(Some(frame)))) => break u16::from(frame.code),
            other => return Err(format!("unexpected {other:?}").into()),
        }
    };
    assert!(pings >= 1);
    assert_eq!(code, 1008);
    let (mut alive, timed_out) = keep_reading.await?;
    assert!(timed_out, "the live client got something other than pings");
    alive.publish(1, "t", "1").await?;
    alive.wait_ack(1).await?;
    t.server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn connection_limit_answers_503() -> TestResult {
    let t = TestServer::start_with(limits(|l| l.max_connections = 2)).await?;
    let token = t.add_device("default", "d")?;
    let _one = connect_device(t.addr, &token).await?;
    let _two = Receiver::connect(t.addr, &t.key).await?;
    let error = connect_device(t.addr, &token)
        .await
        .err()
        .ok_or("third connection accepted")?;
    assert_eq!(http_status(&error), Some(503));
    let error = Receiver::connect(t.addr, &t.key)
        .await
        .err()
        .ok_or("third connection accepted")?;
    assert!(error.to_string().contains("503"), "{error}");
    t.server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn browser_origins_are_checked() -> TestResult {
    let t = TestServer::start_with(|config| {
        config
            .with_limits(test_limits())
            .with_allowed_origins(vec!["https://dashboard.example".into()])
    })
    .await?;
    let connect = |origin: String| {
        let addr = t.addr;
        let key = t.key.clone();
        async move {
            let mut request = format!("ws://{addr}/v1/receiver").into_client_request()?;
            request
                .headers_mut()
                .insert("origin", HeaderValue::from_str(&origin)?);
            request.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_str(&format!("tether.v1, tether-key.{key}"))?,
            );
            tokio_tungstenite::connect_async(request)
                .await
                .map(|_| ())
                .map_err(BoxError::from)
        }
    };
    let refused = connect("http://evil.example".into())
        .await
        .err()
        .ok_or("evil origin accepted")?;
    assert!(refused.to_string().contains("403"), "{refused}");
    connect(format!("http://{}", t.addr)).await?;
    connect("https://dashboard.example".into()).await?;
    t.server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn receiver_protocol_errors() -> TestResult {
    let t = TestServer::start().await?;
    // Wrong key in the header or subprotocol: 401 before the upgrade.
    let wrong = format!("tk_{}", "a".repeat(64));
    let error = Receiver::connect(t.addr, &wrong)
        .await
        .err()
        .ok_or("wrong key accepted")?;
    assert!(error.to_string().contains("401"), "{error}");
    let error = Receiver::connect_subprotocol(t.addr, &wrong)
        .await
        .err()
        .ok_or("wrong key accepted")?;
    assert!(error.to_string().contains("401"), "{error}");
    // Wrong key in the first message: error message, then 4005.
    let mut receiver = Receiver::connect_first_message(t.addr, &wrong).await?;
    let error = receiver.recv().await?;
    assert_eq!(error["error"]["code"], 5);
    assert_eq!(close_code(&mut receiver.ws).await?, 4005);
    // Malformed JSON: error message, then 4001.
    let mut receiver = Receiver::connect(t.addr, &t.key).await?;
    receiver
        .ws
        .send(Message::Text("{\"v\":1,\"subscribe\":".into()))
        .await?;
    assert_eq!(receiver.recv().await?["error"]["code"], 1);
    assert_eq!(close_code(&mut receiver.ws).await?, 4001);
    // Binary frames: 1003.
    let mut receiver = Receiver::connect(t.addr, &t.key).await?;
    receiver
        .ws
        .send(Message::Binary(vec![1u8, 2].into()))
        .await?;
    assert_eq!(close_code(&mut receiver.ws).await?, 1003);
    // Ping/pong keeps working, and a key limited to channels gets
    // `forbidden` for others without losing the connection.
    let admin = t.admin()?;
    let tenant = admin.tenant_id("default")?;
    let limited = admin.add_key(
        tenant,
        &tether_server::store::ChannelFilter::only(vec!["sensors/*".into()]),
        false,
        None,
    )?;
    let mut receiver = Receiver::connect(t.addr, &limited.key).await?;
    receiver
        .send_json(&json!({"v": 1, "subscribe": {"channel": "secret", "from": null}}))
        .await?;
    assert_eq!(receiver.recv().await?["error"]["code"], 6);
    receiver.subscribe("sensors/kitchen", None).await?;
    receiver
        .send_json(&json!({"v": 1, "ping": {"id": 77}}))
        .await?;
    assert_eq!(receiver.recv().await?, json!({"v": 1, "pong": {"id": 77}}));
    // Read-only keys cannot command.
    receiver
        .send_json(&json!({"v": 1, "send_command": {"request_id": 1, "device": "x", "channel": "sensors/a", "payload": 1}}))
        .await?;
    assert_eq!(receiver.recv().await?["error"]["code"], 6);
    t.server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn revocation_and_replacement_disconnect_at_once() -> TestResult {
    let t = TestServer::start().await?;
    let token = t.add_device("default", "d")?;
    let admin = t.admin()?;
    let tenant = admin.tenant_id("default")?;
    let key = admin.add_key(
        tenant,
        &tether_server::store::ChannelFilter::ALL,
        true,
        None,
    )?;

    // The same device connecting again replaces the old session (4014).
    let mut first = Device::connect(t.addr, &token).await?;
    first.hello("d", 1).await?;
    let mut second = Device::connect(t.addr, &token).await?;
    second.hello("d", 1).await?;
    assert_eq!(close_code(&mut first.ws).await?, 4014);

    let mut receiver = Receiver::connect(t.addr, &key.key).await?;
    receiver.subscribe("t", None).await?;
    admin.revoke_device("d")?;
    admin.revoke_key(key.key_id)?;
    assert_eq!(close_code(&mut second.ws).await?, 4005);
    assert_eq!(close_code(&mut receiver.ws).await?, 4005);
    let error = connect_device(t.addr, &token)
        .await
        .err()
        .ok_or("revoked token accepted")?;
    assert_eq!(http_status(&error), Some(401));
    let (status, _) = http(t.addr, "GET", "/v1/devices", Some(&key.key), None).await?;
    assert_eq!(status, 401);
    t.server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn graceful_shutdown_closes_clients_with_1001() -> TestResult {
    let t = TestServer::start().await?;
    let token = t.add_device("default", "d")?;
    let mut device = Device::connect(t.addr, &token).await?;
    device.hello("d", 1).await?;
    device.publish(1, "t", "1").await?;
    device.wait_ack(1).await?;
    let mut receiver = Receiver::connect(t.addr, &t.key).await?;
    receiver.subscribe("t", None).await?;
    let addr = t.addr;
    let shutdown = tokio::spawn(t.server.shutdown());
    assert_eq!(close_code(&mut device.ws).await?, 1001);
    assert_eq!(close_code(&mut receiver.ws).await?, 1001);
    shutdown.await?;
    // Stopped accepting.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    Ok(())
}
