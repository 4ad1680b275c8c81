//! Draining a node (what SIGTERM does): it stops accepting, closes its
//! devices and receivers with 4017 (`draining`) and a reconnect delay in
//! the close reason, and stops once they left, within its drain timeout.

#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod common;

use std::time::{Duration, Instant};

use common::{Device, Receiver, TestResult, TestServer};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::protocol::Message;

/// The close frame's code and reason.
async fn close_frame(ws: &mut common::Ws) -> Result<(u16, String), common::BoxError> {
    loop {
        match tokio::time::timeout(common::WAIT, ws.next()).await? {
            Some(Ok(Message::Close(Some(frame)))) => {
                return Ok((u16::from(frame.code), frame.reason.to_string()));
            }
            Some(Ok(_)) => {}
            other => return Err(format!("no close frame: {other:?}").into()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_closes_clients_with_a_spread_reconnect_hint() -> TestResult {
    let t = TestServer::start_with(|config| {
        let mut config = config;
        config.drain.spread = Duration::from_millis(800);
        config
    })
    .await?;
    let token = t.add_device("default", "d1")?;
    let mut device = Device::connect(t.addr, &token).await?;
    device.hello("d1", 5).await?;
    device.publish(1, "temp", "1").await?;
    device.wait_ack(1).await?;
    let mut receiver = Receiver::connect(t.addr, &t.key).await?;
    receiver.subscribe("temp", Some(1)).await?;
    let addr = t.addr;
    let started = Instant::now();
    let drained = tokio::spawn(t.server.drain());
    let (code, reason) = close_frame(&mut device.ws).await?;
    assert_eq!(code, 4017, "{reason}");
    let hint = tether_proto::reconnect_hint_ms(&reason).ok_or("no hint in the reason")?;
    assert!(hint <= 800, "{reason}");
    let (code, reason) = close_frame(&mut receiver.ws).await?;
    assert_eq!(code, 4017);
    assert!(
        tether_proto::reconnect_hint_ms(&reason).is_some(),
        "{reason}"
    );
    drop((device, receiver));
    // The clients left: the node stops well before its drain timeout.
    tokio::time::timeout(Duration::from_secs(10), drained).await??;
    assert!(started.elapsed() < Duration::from_secs(10));
    // And it accepts nothing any more.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    Ok(())
}
