//! The real `tether-server` process: killed hard (SIGKILL) after
//! acknowledging, restarted on the same data directory, it still has the
//! history and still de-duplicates; SIGTERM shuts it down gracefully.

// Tests are std code; the no_std import lints do not apply.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use common::*;
use serde_json::json;

const BINARY: &str = env!("CARGO_BIN_EXE_tether-server");

struct Process {
    child: Child,
    addr: SocketAddr,
    key: Option<String>,
}

fn start(dir: &std::path::Path) -> Result<Process, BoxError> {
    let mut child = Command::new(BINARY)
        .args(["--listen", "127.0.0.1:0", "--log", "warn"])
        .arg("--data-dir")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut addr = None;
    let mut key = None;
    for line in lines.by_ref() {
        let line = line?;
        if let Some(rest) = line.strip_prefix("listening on ") {
            addr = Some(rest.trim().parse()?);
        }
        if let Some(position) = line.find("tk_") {
            key = Some(line[position..].trim().to_owned());
        }
        if line.starts_with("dashboard:") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Ok(Process {
        child,
        addr: addr.ok_or("no listening line")?,
        key,
    })
}

fn admin(dir: &std::path::Path, args: &[&str]) -> Result<String, BoxError> {
    let output = Command::new(BINARY)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()?;
    if !output.status.success() {
        return Err(format!("{args:?}: {}", String::from_utf8_lossy(&output.stderr)).into());
    }
    Ok(String::from_utf8(output.stdout)?)
}

#[tokio::test]
async fn restart_keeps_history_and_deduplication() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut first = start(dir.path())?;
    let key = first
        .key
        .clone()
        .ok_or("no receiver key printed on first start")?;
    let out = admin(
        dir.path(),
        &["device", "add", "--tenant", "default", "--id", "d1"],
    )?;
    let token = out
        .lines()
        .find_map(|line| line.strip_prefix("token (shown once): "))
        .ok_or("no token printed")?
        .to_owned();
    assert!(out.contains("provisioning: {"), "{out}");

    let mut device = Device::connect(first.addr, &token).await?;
    assert_eq!(device.hello("d1", 77).await?.0, 0);
    for seq in 1..=5 {
        device.publish(seq, "temp", &seq.to_string()).await?;
    }
    device.wait_ack(5).await?;
    // Crash: no chance to flush anything that was not already committed.
    first.child.kill()?;
    first.child.wait()?;
    drop(device);

    let mut second = start(dir.path())?;
    assert!(
        second.key.is_none(),
        "a second start must not create another key"
    );
    let mut device = Device::connect(second.addr, &token).await?;
    assert_eq!(device.hello("d1", 77).await?.0, 5);
    for seq in 4..=6 {
        device.publish(seq, "temp", &seq.to_string()).await?;
    }
    device.wait_ack(6).await?;
    let mut receiver = Receiver::connect(second.addr, &key).await?;
    receiver.subscribe("temp", Some(0)).await?;
    let events = receiver.events(6).await?;
    assert_eq!(offsets(&events), [1, 2, 3, 4, 5, 6]);
    let payloads: Vec<_> = events.iter().map(|e| e["payload"].clone()).collect();
    assert_eq!(payloads, (1..=6).map(|n| json!(n)).collect::<Vec<_>>());

    // SIGTERM drains: clients get 4017 (`draining`), the process exits
    // cleanly once they left.
    let status = Command::new("kill")
        .args(["-TERM", &second.child.id().to_string()])
        .status()?;
    assert!(status.success());
    assert_eq!(close_code(&mut device.ws).await?, 4017);
    assert_eq!(close_code(&mut receiver.ws).await?, 4017);
    let exit = tokio::task::spawn_blocking(move || second.child.wait()).await??;
    assert!(exit.success(), "{exit:?}");

    // Revocation through the admin command, then the token is refused.
    admin(dir.path(), &["device", "revoke", "d1"])?;
    let mut third = start(dir.path())?;
    let error = connect_device(third.addr, &token)
        .await
        .err()
        .ok_or("revoked token accepted")?;
    assert!(error.to_string().contains("401"), "{error}");
    third.child.kill()?;
    third.child.wait()?;
    Ok(())
}
