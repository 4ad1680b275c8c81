//! Bad input a client written from the docs alone sent (issue #10, section
//! 5): payloads strict JSON readers refuse, times out of range, a version
//! the server does not speak, channel patterns that never match. Each is
//! refused with a typed error where it comes in; nothing already stored is
//! ever re-parsed on the way out.

// Tests are std code; the no_std import lints do not apply.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod common;

use std::sync::Arc;

use common::*;
use futures_util::SinkExt;
use serde_json::json;
use tether_proto::{DeviceToServer, Payload, Publish};
use tether_server::store::{AppendRequest, SqliteStore, Store, StoreOptions};
use tokio_tungstenite::tungstenite::protocol::Message;

/// The three payloads of the review, as JSON text: each was acknowledged
/// and stored, and then broke every history page that held it.
fn bad_payloads() -> Vec<(&'static str, String)> {
    vec![
        (
            "nested 129 deep",
            format!("{}{}", "[".repeat(129), "]".repeat(129)),
        ),
        ("lone surrogate", r#""\ud800""#.to_owned()),
        ("number out of range", "1e400".to_owned()),
    ]
}

/// Events stored on `channel` (counted in the page's text: a payload 127
/// deep inside the page is deeper than serde_json reads).
async fn stored_count(t: &TestServer, channel: &str) -> Result<usize, BoxError> {
    let (status, page) = http_raw(
        t.addr,
        "GET",
        &format!("/v1/messages?channel={channel}&from=0"),
        Some(&t.key),
        None,
    )
    .await?;
    assert_eq!(status, 200, "{page}");
    Ok(page.matches("\"offset\":").count())
}

#[tokio::test]
async fn payloads_strict_readers_refuse_are_refused_at_publish() -> TestResult {
    let t = TestServer::start().await?;
    let token = t.add_device("default", "d")?;
    for json in [false, true] {
        for (name, payload) in bad_payloads() {
            let mut device = Device::connect(t.addr, &token).await?;
            device.json = json;
            device.hello("d", 1).await?;
            device.publish(1, "bad", &payload).await?;
            let (code, reason) = close_frame(&mut device.ws).await?;
            assert_eq!(code, 4007, "{name} (json: {json})");
            assert!(reason.starts_with("payload"), "{name}: {reason}");
        }
    }
    // A payload at the limit is fine, and history pages work.
    let mut device = Device::connect(t.addr, &token).await?;
    device.hello("d", 2).await?;
    let deepest = format!("{}{}", "[".repeat(127), "]".repeat(127));
    device.publish(1, "bad", &deepest).await?;
    device.wait_ack(1).await?;
    assert_eq!(stored_count(&t, "bad").await?, 1, "only the valid one");
    t.server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn stored_payloads_go_out_byte_for_byte() -> TestResult {
    let t = TestServer::start().await?;
    let token = t.add_device("default", "d")?;
    let mut receiver = Receiver::connect(t.addr, &t.key).await?;
    receiver.subscribe("raw", None).await?;
    // What a re-parse would change: exponent notation, trailing zeros,
    // duplicate and unsorted keys, inner whitespace, escapes.
    let payload =
        r#"{"b":1e2,"a":[1.50,-0],"a":"dup","c":"\u00e9\n", "d" : 12345678901234567890123}"#;
    let mut device = Device::connect(t.addr, &token).await?;
    device.hello("d", 1).await?;
    device.publish(1, "raw", payload).await?;
    device.wait_ack(1).await?;

    let (status, body) = http_raw(
        t.addr,
        "GET",
        "/v1/messages?channel=raw&from=0",
        Some(&t.key),
        None,
    )
    .await?;
    assert_eq!(status, 200);
    assert!(
        body.contains(&format!("\"payload\":{payload}")),
        "payload changed on the way out: {body}"
    );
    // Live events carry the same bytes.
    let frame = loop {
        let message = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut receiver.ws))
            .await?
            .ok_or("ended")??;
        if let Message::Text(text) = message {
            break text.to_string();
        }
    };
    assert!(frame.contains(&format!("\"payload\":{payload}")), "{frame}");
    t.server.shutdown().await;
    Ok(())
}

/// A database written before payloads were checked can hold what strict
/// readers refuse: history pages still answer, with the bytes as stored.
#[tokio::test]
async fn history_pages_never_reparse_old_stored_payloads() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = |dir: &std::path::Path| {
        tether_server::Config::new(dir.to_owned(), "127.0.0.1:0".parse().expect("address"))
            .with_limits(test_limits())
    };
    // First start creates tenant `default` and its key.
    let server = tether_server::Server::start(config(dir.path())).await?;
    let key = server.first_start_key().ok_or("no key")?.to_owned();
    let database = server.database_path();
    server.shutdown().await;
    let admin = tether_server::store::Admin::open(&database)?;
    let tenant = admin.tenant_id("default")?;
    admin.add_device(Some(tenant), Some("old"), false)?;
    drop(admin);
    // Store the payloads as an old server did: without the check.
    let store = SqliteStore::open(&database, StoreOptions::default())?;
    let store: Arc<dyn Store> = Arc::new(store);
    for (seq, (_, payload)) in (1..).zip(bad_payloads()) {
        let commit = store
            .append(AppendRequest {
                tenant_id: tenant,
                device_id: "old".into(),
                boot_id: 1,
                seq,
                previous_seq: seq - 1,
                channel: "legacy".into(),
                device_time_ms: None,
                payload,
                // The device never opened a session.
                fence: 0,
            })
            .await?;
        commit.await?;
    }
    store.close().await;
    drop(store);

    let server = tether_server::Server::start(config(dir.path())).await?;
    let addr = server.local_addr();
    for _ in 0..3 {
        let (status, body) = http_raw(
            addr,
            "GET",
            "/v1/messages?channel=legacy&from=0",
            Some(&key),
            None,
        )
        .await?;
        assert_eq!(status, 200, "{body}");
        for (name, payload) in bad_payloads() {
            assert!(body.contains(&payload), "{name} missing from {body}");
        }
    }
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn times_beyond_the_store_range_are_refused() -> TestResult {
    let t = TestServer::start().await?;
    let token = t.add_device("default", "d")?;
    for (time_ms, accepted) in [
        (Some(i64::MAX as u64), true),
        (Some(i64::MAX as u64 + 1), false),
        (Some(u64::MAX), false),
    ] {
        let mut device = Device::connect(t.addr, &token).await?;
        device.hello("d", time_ms.unwrap_or(0)).await?;
        device
            .send(&DeviceToServer::Publish(Publish {
                seq: 1,
                channel: "time",
                time_ms,
                payload: Payload::from_json_str("1"),
            }))
            .await?;
        if accepted {
            device.wait_ack(1).await?;
        } else {
            let (code, reason) = close_frame(&mut device.ws).await?;
            assert_eq!(code, 4007);
            assert!(reason.contains("time_ms"), "{reason}");
        }
    }
    let (_, page) = http(
        t.addr,
        "GET",
        "/v1/messages?channel=time&from=0",
        Some(&t.key),
        None,
    )
    .await?;
    let messages = page["messages"].as_array().ok_or("messages")?;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["device_time_ms"], json!(i64::MAX));
    t.server.shutdown().await;
    Ok(())
}

/// Sends a command over HTTP; `device` answers it with `result`; the HTTP
/// answer.
async fn answered_with(
    t: &TestServer,
    device: &mut Device,
    result: &str,
) -> Result<(u16, String), BoxError> {
    let (addr, key) = (t.addr, t.key.clone());
    let sender = tokio::spawn(async move {
        let body = r#"{"channel":"led","payload":true}"#;
        http_text(
            addr,
            "POST",
            "/v1/devices/d/commands",
            Some(&key),
            Some(body),
        )
        .await
        .map_err(|e| e.to_string())
    });
    let Downlink::Command { id, .. } = device.recv().await? else {
        return Err("expected a command".into());
    };
    device.command_ack(id, result).await?;
    Ok(sender.await??)
}

#[tokio::test]
async fn command_payloads_and_results_follow_the_payload_rule() -> TestResult {
    let t = TestServer::start().await?;
    let token = t.add_device("default", "d")?;
    let mut device = Device::connect(t.addr, &token).await?;
    device.hello("d", 1).await?;

    // Refused to the sender, never sent: over HTTP (400 invalid_field)...
    for (name, payload) in bad_payloads() {
        let body = format!(r#"{{"channel":"led","payload":{payload}}}"#);
        let (status, answer) = http_text(
            t.addr,
            "POST",
            "/v1/devices/d/commands",
            Some(&t.key),
            Some(&body),
        )
        .await?;
        assert_eq!(status, 400, "{name}: {answer}");
        assert!(answer.contains("\"invalid_field\""), "{name}: {answer}");
    }
    // ... and over the receiver WebSocket (error 7 with the request id; the
    // connection stays).
    let mut receiver = Receiver::connect(t.addr, &t.key).await?;
    for (request_id, (name, payload)) in (1..).zip(bad_payloads()) {
        let text = format!(
            r#"{{"v":1,"send_command":{{"request_id":{request_id},"device":"d","channel":"led","payload":{payload}}}}}"#
        );
        receiver.ws.send(Message::Text(text.into())).await?;
        let answer = receiver.recv().await?;
        assert_eq!(answer["error"]["code"], 7, "{name}: {answer}");
        assert_eq!(answer["error"]["request_id"], request_id, "{name}");
    }
    receiver
        .send_json(&json!({"v": 1, "ping": {"id": 9}}))
        .await?;
    assert_eq!(receiver.recv().await?, json!({"v": 1, "pong": {"id": 9}}));

    // A device's result strict readers refuse: the sender gets
    // invalid_field (not `null`), the device is closed with 4007.
    let (status, answer) = answered_with(&t, &mut device, "1e400").await?;
    assert_eq!(close_frame(&mut device.ws).await?.0, 4007);
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("\"invalid_field\""), "{answer}");

    // A good result comes back as the device wrote it.
    let mut device = Device::connect(t.addr, &token).await?;
    device.hello("d", 2).await?;
    let (status, answer) = answered_with(&t, &mut device, r#"{"level":1e2}"#).await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, r#"{"status":"ok","result":{"level":1e2}}"#);
    t.server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn receiver_version_2_hears_the_supported_versions() -> TestResult {
    let t = TestServer::start().await?;
    let mut receiver = Receiver::connect(t.addr, &t.key).await?;
    receiver
        .send_json(&json!({"v": 2, "subscribe": {"channel": "temp", "from": null}}))
        .await?;
    let error = receiver.recv().await?;
    assert_eq!(error["error"]["code"], 2);
    assert_eq!(error["error"]["message"], "supported versions: 1");
    assert_eq!(
        close_frame(&mut receiver.ws).await?,
        (4002, "supported versions: 1".to_owned())
    );
    t.server.shutdown().await;
    Ok(())
}

#[test]
fn key_channel_patterns_that_never_match_are_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tether-server"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(args)
            .output()
    };
    assert!(run(&["tenant", "add", "acme"])?.status.success());
    for bad in ["", "**", "/x/", "a*", "*/x", "x/**", "a//b", "x/"] {
        let output = run(&["key", "add", "--tenant", "acme", "--channels", bad])?;
        assert!(!output.status.success(), "{bad:?} accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("channel pattern"), "{bad:?}: {stderr}");
    }
    for good in ["*", "alarm", "sensors/*", "sensors/*,alarm,a.b/c-d_e"] {
        let output = run(&["key", "add", "--tenant", "acme", "--channels", good])?;
        assert!(output.status.success(), "{good:?}: {output:?}");
    }
    // The library refuses them too (one rule for every way in).
    let admin = tether_server::store::Admin::open(&dir.path().join("tether.db"))?;
    let tenant = admin.tenant_id("acme")?;
    let filter = tether_server::store::ChannelFilter::only(vec!["**".into()]);
    assert!(admin.add_key(tenant, &filter, false, None).is_err());
    Ok(())
}
