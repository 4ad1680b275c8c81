//! The customer's sign-in flows in a real headless Chromium (chromedriver +
//! fantoccini), against the real `tether-server` binary (a child process on
//! a free loopback port, its database in a temporary directory), on a
//! phone-sized window (375 px wide) throughout:
//!
//! - a first-time customer scans the label (the QR code's URL, `/claim#code=…`),
//!   creates the account there and sees the device, timed;
//! - signing in with a password, a wrong password, the rate limit, and
//!   signing out (the session is gone on the server);
//! - the owner invites someone read-only, who joins from the link and
//!   cannot command or claim; the owner removes them and their open page
//!   is signed out.
//!
//! Needs the Debian packages `chromium` and `chromium-driver` (`cargo xtask
//! setup`); without them these tests fail. Screenshots go to
//! `target/screenshots/` (test artifacts).

#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod browser;
mod common;

use core::time::Duration;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

use browser::*;
use common::{BoxError, Device, TestResult, http};
use serde_json::json;
use tether_browser_test::fantoccini::Client;
use tether_browser_test::{Browser, BrowserOptions, free_port, save_screenshot};
use tether_server::accounts::SIGN_IN_FAILURES_PER_ACCOUNT;
use tether_server::store::Admin;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PASSWORD: &str = "correct horse battery";
/// A phone: the narrowest common screen width.
const PHONE: (u32, u32) = (375, 812);
/// What the issue asks of the label flow.
const UNDER: Duration = Duration::from_secs(60);

async fn phone() -> Result<Browser, BoxError> {
    Ok(Browser::launch(BrowserOptions::default().window(PHONE.0, PHONE.1)).await?)
}

/// Registers an unclaimed device with a claim code; returns the code and
/// the device's token.
fn labelled_device(data_dir: &Path, id: &str) -> Result<(String, String), BoxError> {
    let device = Admin::open(&database(data_dir))?.add_device(None, Some(id), true)?;
    Ok((device.claim_code.ok_or("no claim code")?, device.token))
}

/// An account made over the HTTP API with a device's claim code.
async fn account(addr: SocketAddr, email: &str, claim_code: &str) -> Result<(), BoxError> {
    let (status, answer) = http(
        addr,
        "POST",
        "/v1/accounts",
        None,
        Some(&json!({"email": email, "password": PASSWORD, "claim_code": claim_code})),
    )
    .await?;
    if status == 200 {
        Ok(())
    } else {
        Err(format!("account not made: {status} {answer}").into())
    }
}

/// The status of `GET path` with a `Cookie` header.
async fn status_with_cookie(addr: SocketAddr, path: &str, cookie: &str) -> Result<u16, BoxError> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nCookie: {cookie}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response
        .split_whitespace()
        .nth(1)
        .ok_or("no status")?
        .parse()?)
}

/// The session cookie the browser holds (WebDriver sees HttpOnly cookies;
/// page scripts do not).
async fn session_cookie(client: &Client) -> Result<String, BoxError> {
    let cookie = client.get_named_cookie("tether_session").await?;
    assert_eq!(cookie.http_only(), Some(true), "the cookie is HttpOnly");
    Ok(format!("tether_session={}", cookie.value()))
}

async fn assert_fits_the_phone(client: &Client, what: &str) -> TestResult {
    let overflow = horizontal_overflow(client).await?;
    assert!(
        overflow <= 0,
        "{what}: wider than the phone by {overflow} px"
    );
    assert_eq!(unlabelled_controls(client).await?, json!([]), "{what}");
    Ok(())
}

async fn sign_in_with_password(client: &Client, email: &str, password: &str) -> TestResult {
    wait_visible(client, "#email").await?;
    fill(client, "#email", email).await?;
    fill(client, "#password", password).await?;
    click(client, "#sign-in-password").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_time_customer_claims_from_the_label_in_under_a_minute() -> TestResult {
    let data = tempfile::tempdir()?;
    let (server, _) = ServerProcess::start(data.path(), free_port()?)?;
    let base = format!("http://{}", server.addr);
    let (code, token) = labelled_device(data.path(), "kitchen-1")?;
    let browser = phone().await?;
    let client = browser.client();

    // The QR code on the label opens this URL (see `tether-provision
    // --label`); the flow is timed from here.
    let label_url = format!("{base}/claim#code={code}");
    let started = Instant::now();
    client.goto(&label_url).await?;
    wait_for_value(client, "#claim-code", &code).await?;
    wait_visible(client, "#create-view").await?;
    assert_fits_the_phone(client, "claim page").await?;
    assert!(client.title().await?.contains("Tether"));
    save_screenshot("claim-phone", &client.screenshot().await?)?;

    // A mistake first: a password too short says what to do.
    fill(client, "#create-email", "ada@example.com").await?;
    fill(client, "#create-password", "short").await?;
    click(client, "#create-account").await?;
    wait_for_text(client, "#claim-message", "at least 8 characters").await?;

    fill(client, "#create-password", PASSWORD).await?;
    click(client, "#create-account").await?;
    // The dashboard, signed in, with the device.
    wait_visible(client, "#app-view").await?;
    wait_for_text(client, "#devices tbody", "kitchen-1").await?;
    let elapsed = started.elapsed();
    println!(
        "label URL to device visible: {:.1} s",
        elapsed.as_secs_f64()
    );
    assert!(elapsed < UNDER, "the label flow took {elapsed:?}");
    wait_for_text(client, "#access", "Signed in as ada@example.com (owner)").await?;
    assert!(is_visible(client, "#people-link").await?);
    assert_fits_the_phone(client, "dashboard after claiming").await?;
    // The session cookie is HttpOnly: page scripts cannot see it.
    let visible = js(client, "return document.cookie;", vec![]).await?;
    assert!(
        !visible
            .as_str()
            .unwrap_or_default()
            .contains("tether_session"),
        "{visible}"
    );
    session_cookie(client).await?;

    // The device comes online and its readings arrive over the
    // cookie-authenticated WebSocket.
    let mut device = Device::connect(server.addr, &token).await?;
    device.hello("kitchen-1", 1).await?;
    device
        .publish(1, "sensors/kitchen", "{\"celsius\":21.5}")
        .await?;
    device.wait_ack(1).await?;
    wait_for_text(
        client,
        "#devices tr[data-device='kitchen-1'] .status",
        "Online",
    )
    .await?;
    wait_visible(client, "button[data-channel='sensors/kitchen']").await?;
    click(client, "button[data-channel='sensors/kitchen']").await?;
    wait_for_text(client, "#events tbody", "21.5").await?;
    wait_for_text(client, "#connection", "Live").await?;
    save_screenshot("claimed-phone", &client.screenshot().await?)?;

    // The label again, now used up, signed in: the page says what to do.
    client.goto(&label_url).await?;
    wait_visible(client, "#signed-in-view").await?;
    wait_for_text(client, "#signed-in-as", "ada@example.com").await?;
    click(client, "#claim-signed-in").await?;
    wait_for_text(
        client,
        "#claim-message",
        "Check the code on the device's label",
    )
    .await?;

    // The app's name and icons.
    let icons = client
        .execute_async(
            "const cb = arguments[arguments.length - 1]; \
             Promise.all(['/favicon.ico', '/assets/icon.svg', '/manifest.webmanifest'] \
               .map(p => fetch(p).then(r => p.endsWith('.webmanifest') ? r.json() : r.status))) \
               .then(cb, e => cb(String(e)));",
            vec![],
        )
        .await?;
    assert_eq!(icons[0], 200, "{icons}");
    assert_eq!(icons[1], 200, "{icons}");
    assert_eq!(icons[2]["name"], "Tether", "{icons}");
    drop(device);
    browser.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_sign_in_wrong_password_rate_limit_and_sign_out() -> TestResult {
    let data = tempfile::tempdir()?;
    let (server, _) = ServerProcess::start(data.path(), free_port()?)?;
    let base = format!("http://{}/", server.addr);
    let (code_a, _) = labelled_device(data.path(), "porch-1")?;
    let (code_b, _) = labelled_device(data.path(), "shed-1")?;
    account(server.addr, "ada@example.com", &code_a).await?;
    account(server.addr, "bob@example.com", &code_b).await?;
    let browser = phone().await?;
    let client = browser.client();
    client.goto(&base).await?;

    // Signed out: the email form comes first; keys are one click away.
    wait_visible(client, "#sign-in-view").await?;
    let key_shown = js(
        client,
        "return document.getElementById('key').checkVisibility();",
        vec![],
    )
    .await?;
    assert_eq!(
        key_shown,
        json!(false),
        "the key form waits behind its summary"
    );
    assert_fits_the_phone(client, "sign-in").await?;
    save_screenshot("sign-in-phone", &client.screenshot().await?)?;

    // Wrong password: said, with what to do.
    sign_in_with_password(client, "ada@example.com", "not the password").await?;
    wait_for_text(client, "#password-message", "Wrong email or password").await?;
    let message = text(client, "#password-message").await?;
    assert!(message.contains("try again"), "{message}");
    assert_eq!(
        js(
            client,
            "return document.getElementById('password').getAttribute('aria-invalid');",
            vec![]
        )
        .await?,
        json!("true")
    );
    // Until the limit: then even the right password waits.
    for _ in 1..SIGN_IN_FAILURES_PER_ACCOUNT {
        js(
            client,
            "document.getElementById('password-message').textContent = '';",
            vec![],
        )
        .await?;
        sign_in_with_password(client, "ada@example.com", "not the password").await?;
        wait_for_text(client, "#password-message", "Wrong email or password").await?;
    }
    sign_in_with_password(client, "ada@example.com", PASSWORD).await?;
    wait_for_text(
        client,
        "#password-message",
        "Too many wrong passwords. Wait 15 minutes, then try again.",
    )
    .await?;
    assert!(!is_visible(client, "#app-view").await?);
    assert_fits_the_phone(client, "rate-limited sign-in").await?;

    // Another account signs in.
    sign_in_with_password(client, "bob@example.com", PASSWORD).await?;
    wait_visible(client, "#app-view").await?;
    wait_for_text(client, "#access", "Signed in as bob@example.com (owner)").await?;
    wait_for_text(client, "#devices tbody", "shed-1").await?;
    assert!(!text(client, "#devices tbody").await?.contains("porch-1"));
    let cookie = session_cookie(client).await?;
    assert_eq!(
        status_with_cookie(server.addr, "/v1/devices", &cookie).await?,
        200
    );
    // A reload keeps the sign-in (the cookie, not local storage).
    client.refresh().await?;
    wait_for_text(client, "#access", "Signed in as bob@example.com").await?;
    let stored = js(client, "return localStorage.length;", vec![]).await?;
    assert_eq!(stored, json!(0));

    // Sign out: the page forgets, and the session is gone on the server
    // (the old cookie no longer works anywhere).
    click(client, "#sign-out").await?;
    wait_visible(client, "#sign-in-view").await?;
    wait_for_text(client, "#password-message", "Signed out.").await?;
    let deadline = Instant::now() + WAIT;
    loop {
        let status = status_with_cookie(server.addr, "/v1/devices", &cookie).await?;
        if status == 401 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the session still works: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(client.get_named_cookie("tether_session").await.is_err());
    client.refresh().await?;
    wait_visible(client, "#sign-in-view").await?;
    browser.close().await;
    Ok(())
}

/// The owner's browser invites (read only); the invited person's phone
/// joins from the link; they cannot command or claim; the owner removes
/// them and their page is signed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invited_person_joins_read_only_and_is_removed() -> TestResult {
    let data = tempfile::tempdir()?;
    let (server, _) = ServerProcess::start(data.path(), free_port()?)?;
    let base = format!("http://{}", server.addr);
    let (code, token) = labelled_device(data.path(), "kitchen-1")?;
    account(server.addr, "ada@example.com", &code).await?;
    let mut device = Device::connect(server.addr, &token).await?;
    device.hello("kitchen-1", 1).await?;
    device
        .publish(1, "sensors/kitchen", "{\"celsius\":20}")
        .await?;
    device.wait_ack(1).await?;

    // The owner, on a phone too.
    let owner_browser = phone().await?;
    let owner = owner_browser.client();
    owner.goto(&format!("{base}/")).await?;
    sign_in_with_password(owner, "ada@example.com", PASSWORD).await?;
    wait_visible(owner, "#people-link").await?;
    click(owner, "#people-link").await?;
    wait_visible(owner, "#invite-section").await?;
    wait_for_text(owner, "#members tbody", "ada@example.com (you)").await?;
    owner
        .find(tether_browser_test::fantoccini::Locator::Css(
            "#invite-role option[value='read_only']",
        ))
        .await?
        .click()
        .await?;
    click(owner, "#create-invitation").await?;
    wait_visible(owner, "#invitation-result").await?;
    wait_for_text(owner, "#people-message", "Invitation created (read only)").await?;
    let link = js(
        owner,
        "return document.getElementById('invitation-link').value;",
        vec![],
    )
    .await?;
    let link = link.as_str().ok_or("no link")?.to_owned();
    assert!(
        link.starts_with(&format!("{base}/invite#token=ti_")),
        "{link}"
    );
    wait_for_text(owner, "#invitations", "read only").await?;
    assert_fits_the_phone(owner, "people page").await?;
    save_screenshot("people-phone", &owner.screenshot().await?)?;

    // The invited person opens the link on their phone.
    let viewer_browser = phone().await?;
    let viewer = viewer_browser.client();
    viewer.goto(&link).await?;
    wait_for_text(
        viewer,
        "#invitation",
        "ada@example.com invited you to see their devices (read only)",
    )
    .await?;
    assert_fits_the_phone(viewer, "invitation page").await?;
    save_screenshot("invite-phone", &viewer.screenshot().await?)?;
    fill(viewer, "#join-email", "vic@example.com").await?;
    fill(viewer, "#join-password", PASSWORD).await?;
    click(viewer, "#join").await?;
    wait_visible(viewer, "#app-view").await?;
    wait_for_text(
        viewer,
        "#access",
        "Signed in as vic@example.com (read only)",
    )
    .await?;
    wait_for_text(viewer, "#devices tbody", "kitchen-1").await?;
    // Read only: no command form, and the server refuses anyway.
    wait_visible(viewer, "#command-disabled").await?;
    wait_for_text(viewer, "#command-disabled", "Your account is read only").await?;
    assert!(!is_visible(viewer, "#command-form").await?);
    let refused = viewer
        .execute_async(
            "const cb = arguments[arguments.length - 1]; \
             fetch('/v1/session').then(r => r.json()).then(s => \
               fetch('/v1/devices/kitchen-1/commands', {method: 'POST', \
                 headers: {'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf_token}, \
                 body: JSON.stringify({channel: 'led', payload: true})})) \
             .then(r => r.json().then(b => cb([r.status, b.error && b.error.code])), e => cb(String(e)));",
            vec![],
        )
        .await?;
    assert_eq!(refused, json!([403, "forbidden"]));
    // Claiming: refused, said plainly.
    fill(viewer, "#claim-code", "ABCD-EFGH-JKMN").await?;
    click(viewer, "#claim").await?;
    wait_for_text(viewer, "#claim-message", "Your account is read only").await?;
    assert_fits_the_phone(viewer, "read-only dashboard").await?;
    // The used link does not work twice.
    let used_browser = phone().await?;
    used_browser.client().goto(&link).await?;
    wait_for_text(
        used_browser.client(),
        "#invitation",
        "was used already or withdrawn",
    )
    .await?;
    used_browser.close().await;

    // The viewer watches a channel live.
    click(viewer, "button[data-channel='sensors/kitchen']").await?;
    wait_for_text(viewer, "#connection", "Live").await?;

    // The owner sees them, and removes them (two clicks).
    owner.refresh().await?;
    let row = "#members tbody tr:nth-child(2)";
    wait_for_text(owner, row, "vic@example.com").await?;
    wait_for_text(owner, &format!("{row} .role"), "read only").await?;
    click(owner, &format!("{row} .remove")).await?;
    wait_for_text(owner, &format!("{row} .remove"), "Confirm").await?;
    click(owner, &format!("{row} .remove")).await?;
    wait_for_text(owner, "#people-message", "vic@example.com was removed").await?;

    // The viewer's open page: its socket was closed, its session is gone.
    wait_visible(viewer, "#sign-in-view").await?;
    wait_for_text(viewer, "#password-message", "Your session has ended").await?;
    drop(device);
    viewer_browser.close().await;
    owner_browser.close().await;
    Ok(())
}
