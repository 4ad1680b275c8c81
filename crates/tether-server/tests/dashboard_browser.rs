//! The dashboard in a real headless Chromium (chromedriver + fantoccini),
//! against the real `tether-server` binary (a child process on a free
//! loopback port, its database in a temporary directory) and simulated
//! devices speaking the device protocol over real WebSockets.
//!
//! Needs the Debian packages `chromium` and `chromium-driver` (`cargo xtask
//! setup`); without them these tests fail. The tests save screenshots
//! under `target/screenshots/`; the live view there is the README's
//! `docs/images/dashboard.png`, overwritten only with
//! `TETHER_UPDATE_SCREENSHOTS=1`.

#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod browser;
mod common;

use core::time::Duration;
use std::time::Instant;

use browser::*;
use common::{BoxError, Device, Downlink, TestResult};
use serde_json::{Value, json};
use tether_browser_test::fantoccini::Client;
use tether_browser_test::{Browser, BrowserOptions, free_port, save_screenshot};
use tether_server::store::{Admin, ChannelFilter};

const CHANNEL: &str = "sensors/kitchen";

/// The offsets in the live table, top (newest) first.
async fn table_offsets(client: &Client) -> Result<Vec<u64>, BoxError> {
    let value = js(
        client,
        "return [...document.querySelectorAll('#events tbody tr')].map(r => Number(r.dataset.offset));",
        vec![],
    )
    .await?;
    Ok(value
        .as_array()
        .ok_or("offsets")?
        .iter()
        .filter_map(Value::as_u64)
        .collect())
}

/// Waits until the table holds exactly offsets `1..=last`, newest first:
/// contiguous, no gap, no duplicate.
async fn wait_for_offsets(client: &Client, last: u64) -> Result<(), BoxError> {
    let expected: Vec<u64> = (1..=last).rev().collect();
    let deadline = Instant::now() + WAIT;
    loop {
        let offsets = table_offsets(client).await?;
        if offsets == expected {
            return Ok(());
        }
        // Never a duplicate or a gap, even on the way.
        let mut sorted = offsets.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), offsets.len(), "duplicate rows: {offsets:?}");
        assert!(
            sorted.windows(2).all(|pair| pair[1] == pair[0] + 1),
            "gap in the table: {offsets:?}"
        );
        if Instant::now() > deadline {
            return Err(format!("table shows {offsets:?}, expected 1..={last}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn publish_range(
    device: &mut Device,
    seqs: core::ops::RangeInclusive<u32>,
) -> Result<(), BoxError> {
    let last = *seqs.end();
    for seq in seqs {
        device.publish(seq, CHANNEL, &payload(seq)).await?;
    }
    device.wait_ack(last).await
}

/// Record `seq`: a temperature wave and a humidity sawtooth.
fn payload(seq: u32) -> String {
    format!(
        "{{\"celsius\":{},\"humidity\":{},\"label\":\"kitchen\"}}",
        celsius(seq),
        humidity(seq)
    )
}

fn humidity(seq: u32) -> u32 {
    40 + seq % 5
}

fn celsius(seq: u32) -> f64 {
    (210.0 + 20.0 * (f64::from(seq) / 3.0).sin()).round() / 10.0
}

/// Signs in with a receiver key (the sign-in view's second way, under
/// "Sign in with a receiver key").
async fn sign_in(client: &Client, key: &str) -> Result<(), BoxError> {
    wait_visible(client, "#sign-in-view").await?;
    js(
        client,
        "document.getElementById('key-sign-in').open = true;",
        vec![],
    )
    .await?;
    wait_visible(client, "#key").await?;
    fill(client, "#key", key).await?;
    click(client, "#sign-in").await?;
    Ok(())
}

// ------------------------------------------------------------------ tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_claim_live_history_restart_and_command() -> TestResult {
    let data = tempfile::tempdir()?;
    let port = free_port()?;
    let (mut server, key) = ServerProcess::start(data.path(), port)?;
    let key = key.ok_or("no receiver key printed on first start")?;
    let base = format!("http://{}/", server.addr);
    let claimable =
        Admin::open(&database(data.path()))?.add_device(None, Some("kitchen-1"), true)?;
    let claim_code = claimable.claim_code.ok_or("no claim code")?;

    let browser = Browser::launch(BrowserOptions::default().window(1100, 1000)).await?;
    let client = browser.client();
    client.goto(&base).await?;

    // Sign in; the key is kept in local storage.
    sign_in(client, &key).await?;
    wait_visible(client, "#app-view").await?;
    wait_for_text(client, "#access", "read and command").await?;
    let stored = js(
        client,
        "return localStorage.getItem('tether.receiverKey');",
        vec![],
    )
    .await?;
    assert_eq!(stored, json!(key));

    // Claim the device with the code from its label (typed in lower case).
    fill(client, "#claim-code", &claim_code.to_lowercase()).await?;
    click(client, "#claim").await?;
    wait_for_text(client, "#claim-message", "Device kitchen-1 is now yours").await?;
    wait_for_text(client, "#devices tbody", "kitchen-1").await?;
    // The code is used up now.
    fill(client, "#claim-code", &claim_code).await?;
    click(client, "#claim").await?;
    wait_for_text(client, "#claim-message", "claim code is not valid").await?;

    // The device comes online right away and publishes; the channel
    // appears. (A claim closes only the connections made before it.)
    let mut device = Device::connect(server.addr, &claimable.token).await?;
    let boot_id = 0x5eed_0001;
    device.hello("kitchen-1", boot_id).await?;
    publish_range(&mut device, 1..=5).await?;
    wait_visible(client, "button[data-channel='sensors/kitchen']").await?;
    click(client, "button[data-channel='sensors/kitchen']").await?;
    wait_for_offsets(client, 5).await?;
    wait_for_text(client, "#connection", "Live").await?;

    // Live messages arrive; payloads are readable JSON (one click away);
    // one chart per numeric member (undescribed: named by their keys).
    publish_range(&mut device, 6..=10).await?;
    wait_for_offsets(client, 10).await?;
    let shown = text(client, "#events tbody tr:first-child .payload pre").await?;
    let parsed: Value = serde_json::from_str(&shown)?;
    assert_eq!(parsed["label"], "kitchen");
    assert_eq!(parsed, serde_json::from_str::<Value>(&payload(10))?);
    wait_for_text(
        client,
        ".quantity[data-quantity='celsius'] .latest",
        "kitchen-1",
    )
    .await?;
    let charts = js(
        client,
        "return [...document.querySelectorAll('#readings .quantity')].map(f => f.dataset.quantity);",
        vec![],
    )
    .await?;
    assert_eq!(charts, json!(["celsius", "humidity"]));

    // The device list: online, firmware, messages today.
    wait_for_text(
        client,
        "#devices tr[data-device='kitchen-1'] .status",
        "Online",
    )
    .await?;
    wait_for_text(
        client,
        "#devices tr[data-device='kitchen-1'] .firmware",
        "1.0.0",
    )
    .await?;
    wait_for_text(
        client,
        "#devices tr[data-device='kitchen-1'] .messages-today",
        "10",
    )
    .await?;

    // Reload: signed in still, the channel reopens with its history.
    client.refresh().await?;
    wait_visible(client, "#channel-view").await?;
    wait_for_offsets(client, 10).await?;

    // Kill the server: the page says so and retries.
    server.kill();
    drop(device);
    wait_for_text(client, "#connection", "Server unreachable").await?;
    wait_for_text(client, "#connection", "Reconnecting in").await?;

    // Restart it; the device reconnects and sends more before the page is
    // back; the page resumes from its last offset with no gap.
    let (restarted, _) = ServerProcess::start(data.path(), port)?;
    server = restarted;
    let mut device = Device::connect(server.addr, &claimable.token).await?;
    let (last_stored, _) = device.hello("kitchen-1", boot_id).await?;
    assert_eq!(last_stored, 10);
    publish_range(&mut device, 11..=15).await?;
    wait_for_text(client, "#connection", "Resumed after offset 10").await?;
    // Live again, one record every 100 ms.
    for seq in 16..=40 {
        device.publish(seq, CHANNEL, &payload(seq)).await?;
        device.wait_ack(seq).await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for_offsets(client, 40).await?;
    // The charts follow (they redraw at most every 250 ms).
    wait_for_text(
        client,
        ".quantity[data-quantity='celsius'] .latest",
        &format!("kitchen-1 {}", celsius(40)),
    )
    .await?;
    wait_for_text(
        client,
        ".quantity[data-quantity='humidity'] .latest",
        &format!("kitchen-1 {}", humidity(40)),
    )
    .await?;

    // The live view of undescribed readings (the README's picture, of
    // described ones, is `dashboard_data_browser.rs`'s).
    let png = client.screenshot().await?;
    let saved = save_screenshot("dashboard-live", &png)?;
    let written = std::fs::read(&saved.artifact)?;
    assert!(written.len() > 8 && written.starts_with(b"\x89PNG\r\n\x1a\n"));

    // A command goes down; the device's acknowledgement comes back.
    let answer = tokio::spawn(async move {
        loop {
            match device.recv().await? {
                Downlink::Command {
                    id,
                    channel,
                    payload,
                } => {
                    assert_eq!(channel, "relay");
                    assert_eq!(
                        serde_json::from_str::<Value>(&payload)?,
                        json!({"on": true})
                    );
                    device
                        .command_ack(id, "{\"on\":true,\"since_ms\":5}")
                        .await?;
                    return Ok::<Device, BoxError>(device);
                }
                Downlink::Ack(_) => {}
                other => return Err(format!("unexpected {other:?}").into()),
            }
        }
    });
    wait_for_text(client, "#command-device", "kitchen-1 (online)").await?;
    fill(client, "#command-channel", "relay").await?;
    click(client, "#send-command").await?;
    let acknowledged = wait_for_text(
        client,
        "#command-message",
        "Acknowledged by kitchen-1: done",
    )
    .await?;
    assert!(acknowledged.contains("\"since_ms\":5"), "{acknowledged}");
    let device = answer.await??;

    // Sign out: the key is gone from the browser, and so is everything
    // that needs it.
    click(client, "#sign-out").await?;
    wait_visible(client, "#sign-in-view").await?;
    for css in ["#app-view", "#sign-out", "#channel-view"] {
        assert!(
            !is_visible(client, css).await?,
            "{css} visible after sign-out"
        );
    }
    let stored = js(
        client,
        "return localStorage.getItem('tether.receiverKey');",
        vec![],
    )
    .await?;
    assert_eq!(stored, Value::Null);
    drop(device);
    browser.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_has_a_clear_message_on_a_phone_sized_screen() -> TestResult {
    let data = tempfile::tempdir()?;
    let port = free_port()?;
    let (mut server, key) = ServerProcess::start(data.path(), port)?;
    let key = key.ok_or("no receiver key printed on first start")?;
    let base = format!("http://{}/", server.addr);
    // A device of the tenant that is not connected.
    let admin = Admin::open(&database(data.path()))?;
    let tenant = admin.tenant_id("default")?;
    admin.add_device(Some(tenant), Some("porch-1"), false)?;
    // A device whose claim code expired a minute ago.
    let expired_code = admin
        .add_claimable_device(
            None,
            Some("shed-1"),
            Some(tether_server::now_ms().saturating_sub(60_000)),
        )?
        .claim_code
        .ok_or("no claim code")?;

    let browser = Browser::launch(BrowserOptions::default().window(412, 915)).await?;
    let client = browser.client();
    client.goto(&base).await?;

    // Accessible: every form control has a label; nothing overflows the
    // phone's width.
    let unlabelled = js(
        client,
        "return [...document.querySelectorAll('input, select, textarea')]\
         .filter(e => e.labels.length === 0).map(e => e.id);",
        vec![],
    )
    .await?;
    assert_eq!(unlabelled, json!([]));

    // Signed out: only the sign-in form.
    wait_visible(client, "#sign-in-view").await?;
    for css in ["#app-view", "#sign-out", "#banner"] {
        assert!(
            !is_visible(client, css).await?,
            "{css} visible before sign-in"
        );
    }

    // Wrong key.
    sign_in(client, &format!("tk_{}", "0".repeat(64))).await?;
    wait_for_text(client, "#sign-in-message", "Wrong receiver key").await?;
    assert_eq!(
        js(
            client,
            "return document.getElementById('key').getAttribute('aria-invalid');",
            vec![]
        )
        .await?,
        json!("true")
    );

    // The right key.
    sign_in(client, &key).await?;
    wait_visible(client, "#app-view").await?;
    wait_for_text(client, "#devices tbody", "porch-1").await?;
    let overflow = js(
        client,
        "return document.documentElement.scrollWidth - window.innerWidth;",
        vec![],
    )
    .await?;
    assert!(
        overflow.as_i64().is_some_and(|pixels| pixels <= 0),
        "page wider than the phone by {overflow} px"
    );

    // The phone-sized view, kept as a test artifact (not in the docs).
    let png = client.screenshot().await?;
    let saved = save_screenshot("dashboard-phone", &png)?;
    assert!(std::fs::metadata(&saved.artifact)?.len() > 8);

    // Expired claim code; invalid claim code; one that cannot be a code
    // at all.
    fill(client, "#claim-code", &expired_code).await?;
    click(client, "#claim").await?;
    wait_for_text(client, "#claim-message", "That claim code has expired").await?;
    assert_eq!(
        js(
            client,
            "return document.getElementById('claim-code').getAttribute('aria-invalid');",
            vec![],
        )
        .await?,
        json!("true")
    );
    fill(client, "#claim-code", "ABCD-EFGH-JKMN").await?;
    click(client, "#claim").await?;
    wait_for_text(client, "#claim-message", "claim code is not valid").await?;
    fill(client, "#claim-code", "ABCD-EF").await?;
    click(client, "#claim").await?;
    wait_for_text(
        client,
        "#claim-message",
        "A claim code has 12 letters and digits",
    )
    .await?;

    // Device offline.
    wait_for_text(client, "#command-device", "porch-1 (offline)").await?;
    click(client, "#send-command").await?;
    wait_for_text(client, "#command-message", "porch-1 is offline").await?;

    // Server unreachable, while signed in.
    server.kill();
    wait_for_text(client, "#banner", "Cannot reach the tether server").await?;

    // Server unreachable, at sign-in.
    click(client, "#sign-out").await?;
    sign_in(client, &key).await?;
    wait_for_text(client, "#sign-in-message", "Cannot reach the tether server").await?;

    // Back: signing in works again.
    let (restarted, _) = ServerProcess::start(data.path(), port)?;
    server = restarted;
    sign_in(client, &key).await?;
    wait_visible(client, "#app-view").await?;
    wait_for_text(client, "#devices tbody", "porch-1").await?;
    let banner_hidden = js(
        client,
        "return document.getElementById('banner').hidden;",
        vec![],
    )
    .await?;
    assert_eq!(banner_hidden, json!(true));

    // A read-only key limited to some channels: no command form, no
    // claiming, no other channels.
    let read_only = Admin::open(&database(data.path()))?.add_key(
        tenant,
        &ChannelFilter::only(vec!["sensors/*".to_owned()]),
        false,
        Some("wall display"),
    )?;
    click(client, "#sign-out").await?;
    sign_in(client, &read_only.key).await?;
    wait_for_text(client, "#access", "read only, sensors/*").await?;
    wait_visible(client, "#command-disabled").await?;
    let form_hidden = js(
        client,
        "return document.getElementById('command-form').offsetParent === null;",
        vec![],
    )
    .await?;
    assert_eq!(form_hidden, json!(true));
    fill(client, "#claim-code", "ABCD-EFGH-JKMN").await?;
    click(client, "#claim").await?;
    wait_for_text(client, "#claim-message", "This key is read-only").await?;
    fill(client, "#open-channel", "private/diary").await?;
    click(client, "#open-form button").await?;
    wait_for_text(
        client,
        "#connection",
        "This key may not read channel private/diary",
    )
    .await?;
    drop(server);
    browser.close().await;
    Ok(())
}
