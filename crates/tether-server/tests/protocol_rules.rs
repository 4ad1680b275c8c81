//! Rules of `docs/protocol.md` a client written from the document alone
//! relies on (issue #10, section 6): replies in request order, refusals a
//! receiver can match to its request, one encoding per device session.

// Tests are std code; the no_std import lints do not apply.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod common;

use common::*;
use futures_util::SinkExt;
use serde_json::json;
use tether_server::store::ChannelFilter;
use tokio_tungstenite::tungstenite::protocol::Message;

/// Section 6: replies come in request order. `subscribed` used to be sent
/// by the subscription's task after a store read, so a `pong` asked for
/// later overtook it.
#[tokio::test]
async fn replies_come_in_request_order() -> TestResult {
    let t = TestServer::start().await?;
    let mut receiver = Receiver::connect(t.addr, &t.key).await?;
    for round in 0..20u32 {
        for channel in 0..10 {
            receiver
                .send_json(&json!({"v": 1, "subscribe": {
                    "channel": format!("order/{round}/{channel}"), "from": 0, "request_id": channel,
                }}))
                .await?;
        }
        receiver
            .send_json(&json!({"v": 1, "ping": {"id": round}}))
            .await?;
        for channel in 0..10 {
            let answer = receiver.recv().await?;
            assert_eq!(
                answer["subscribed"]["channel"],
                format!("order/{round}/{channel}"),
                "round {round}: expected subscribed {channel}, got {answer}"
            );
            assert_eq!(answer["subscribed"]["request_id"], channel);
        }
        assert_eq!(
            receiver.recv().await?,
            json!({"v": 1, "pong": {"id": round}})
        );
    }
    t.server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn refused_subscriptions_name_their_request_and_channel() -> TestResult {
    let t = TestServer::start().await?;
    let admin = t.admin()?;
    let tenant = admin.tenant_id("default")?;
    let limited = admin.add_key(
        tenant,
        &ChannelFilter::parse(vec!["sensors/*".into()])?,
        false,
        None,
    )?;
    let mut receiver = Receiver::connect(t.addr, &limited.key).await?;
    // forbidden (6), with and without a request id.
    receiver
        .send_json(
            &json!({"v": 1, "subscribe": {"channel": "secret", "from": null, "request_id": 7}}),
        )
        .await?;
    let error = receiver.recv().await?;
    assert_eq!(error["error"]["code"], 6);
    assert_eq!(error["error"]["request_id"], 7);
    assert_eq!(error["error"]["channel"], "secret");
    receiver
        .send_json(&json!({"v": 1, "subscribe": {"channel": "other", "from": null}}))
        .await?;
    let error = receiver.recv().await?;
    assert_eq!(error["error"]["code"], 6);
    assert_eq!(error["error"]["request_id"], serde_json::Value::Null);
    assert_eq!(error["error"]["channel"], "other");
    // rate_limited (12): one subscription too many.
    for n in 0..256 {
        receiver
            .send_json(
                &json!({"v": 1, "subscribe": {"channel": format!("sensors/{n}"), "from": null}}),
            )
            .await?;
        let answer = receiver.recv().await?;
        assert!(answer.get("subscribed").is_some(), "{answer}");
        assert!(answer["subscribed"].get("request_id").is_none(), "{answer}");
    }
    receiver
        .send_json(&json!({"v": 1, "subscribe": {"channel": "sensors/more", "from": null, "request_id": 300}}))
        .await?;
    let error = receiver.recv().await?;
    assert_eq!(error["error"]["code"], 12);
    assert_eq!(error["error"]["request_id"], 300);
    assert_eq!(error["error"]["channel"], "sensors/more");
    t.server.shutdown().await;
    Ok(())
}

/// A device session speaks the encoding of its `Hello` both ways; a frame
/// of the other kind is closed with 1003 (documented in protocol.md
/// section 1).
#[tokio::test]
async fn a_device_session_keeps_the_encoding_of_its_hello() -> TestResult {
    let t = TestServer::start().await?;
    let token = t.add_device("default", "d")?;
    // JSON both ways.
    let mut device = Device::connect(t.addr, &token).await?;
    device.json = true;
    device.hello("d", 1).await?;
    device.publish(1, "t", "{\"a\":1}").await?;
    device.wait_ack(1).await?;
    // A binary frame in a JSON session, and the other way round.
    let publish = tether_proto::DeviceToServer::Publish(tether_proto::Publish {
        seq: 2,
        channel: "t",
        time_ms: None,
        payload: tether_proto::Payload::from_json_str("2"),
    });
    device
        .ws
        .send(Message::Binary(publish.encode_to_vec()?.into()))
        .await?;
    assert_eq!(close_code(&mut device.ws).await?, 1003);
    let mut device = Device::connect(t.addr, &token).await?;
    device.hello("d", 2).await?;
    device
        .ws
        .send(Message::Text(publish.to_json()?.into()))
        .await?;
    assert_eq!(close_code(&mut device.ws).await?, 1003);
    t.server.shutdown().await;
    Ok(())
}
