//! `tether-server --demo`: simulated devices running tether-core's client
//! through tether-host publish at once, answer commands, and come back
//! after a restart on the same data directory.

// Tests are std code; the no_std import lints do not apply.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use common::*;
use serde_json::json;

const BINARY: &str = env!("CARGO_BIN_EXE_tether-server");

fn start_demo(dir: &std::path::Path) -> Result<(Child, SocketAddr, Option<String>), BoxError> {
    let mut child = Command::new(BINARY)
        .args(["--demo", "--listen", "127.0.0.1:0", "--log", "warn"])
        .arg("--data-dir")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let (mut addr, mut key) = (None, None);
    for line in lines.by_ref() {
        let line = line?;
        if let Some(rest) = line.strip_prefix("listening on ") {
            addr = Some(rest.trim().parse()?);
        }
        if let Some(position) = line.find("tk_") {
            key = Some(line[position..].trim().to_owned());
        }
        if line.starts_with("demo:") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Ok((child, addr.ok_or("no listening line")?, key))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_devices_publish_answer_commands_and_survive_a_restart() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (mut child, addr, key) = start_demo(dir.path())?;
    let key = key.ok_or("no receiver key")?;
    let mut receiver = Receiver::connect(addr, &key).await?;
    receiver.subscribe("demo/readings", Some(0)).await?;
    let mut devices = BTreeSet::new();
    while devices.len() < 5 {
        let event = receiver.events(1).await?;
        assert!(
            event[0]["payload"]["centi_celsius"].is_i64(),
            "{}",
            event[0]
        );
        devices.insert(event[0]["device"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(devices.len(), 5, "{devices:?}");

    // A command reaches the device's handler and its answer comes back;
    // the device's later readings show the LED on.
    receiver
        .send_json(&json!({"v": 1, "send_command": {"request_id": 1, "device": "demo-3", "channel": "led", "payload": true}}))
        .await?;
    loop {
        let message = receiver.recv().await?;
        if let Some(result) = message.get("command_result") {
            assert_eq!(result["status"], "ok");
            break;
        }
    }
    loop {
        let event = receiver.events(1).await?;
        if event[0]["device"] == "demo-3" && event[0]["payload"]["led"] == true {
            break;
        }
    }
    let (status, body) = http(
        addr,
        "POST",
        "/v1/devices/demo-1/commands",
        Some(&key),
        Some(&json!({"channel": "reboot"})),
    )
    .await?;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("unsupported"))
    );
    let last_offset = {
        let (_, page) = http(addr, "GET", "/v1/channels", Some(&key), None).await?;
        page["channels"][0]["next_offset"]
            .as_u64()
            .ok_or("no offset")?
    };
    child.kill()?;
    child.wait()?;

    // Restart on the same data directory: the demo devices get fresh
    // tokens and publish again; history is kept.
    let (mut child, addr, second_key) = start_demo(dir.path())?;
    assert!(second_key.is_none());
    let mut receiver = Receiver::connect(addr, &key).await?;
    let subscribed = receiver.subscribe("demo/readings", None).await?;
    assert!(subscribed["next_offset"].as_u64() >= Some(last_offset));
    let event = receiver.events(1).await?;
    assert!(event[0]["offset"].as_u64() >= Some(last_offset));
    let (_, devices) = http(addr, "GET", "/v1/devices", Some(&key), None).await?;
    assert_eq!(devices["devices"].as_array().map(Vec::len), Some(5));
    child.kill()?;
    child.wait()?;
    Ok(())
}
