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
//!   is signed out;
//! - CSRF: a request of the dashboard's own page without its token, and a
//!   page of another origin on the same site (the session cookie goes
//!   along: `SameSite` does not tell ports apart) posting a form, a
//!   `fetch` and a WebSocket upgrade, are all refused; nothing happens.
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
use common::{BoxError, Device, Downlink, TestResult, http, http_raw};
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

/// Words that start the next step an error message gives.
const NEXT_STEPS: &[&str] = &[
    "try again",
    "sign in",
    "check",
    "ask",
    "wait",
    "reload",
    "choose",
    "claim",
    "withdraw",
    "send it again",
];

/// Every message the dashboard's scripts show for an error (the page's
/// own modules, over every error code the server sends and one it does
/// not), and each says what to do next.
async fn every_error_message_says_what_to_do_next(client: &Client) -> TestResult {
    let messages = client
        .execute_async(
            r#"const cb = arguments[arguments.length - 1];
            Promise.all([import("/assets/app.js"), import("/assets/session.js")]).then(([app, session]) => {
              const said = [];
              const codes = ["unauthorized", "unknown_claim_code", "claim_code_expired", "device_offline",
                "command_timeout", "unknown_device", "rate_limited", "internal", "wrong_password",
                "account_exists", "unknown_invitation", "invitation_expired", "a_code_from_a_newer_server"];
              for (const code of codes) {
                const error = { kind: "http", code, message: "what the server said" };
                said.push(app.describeError(error, { device: "kitchen-1" }), session.accountMessage(error));
              }
              const invalid = { kind: "http", code: "invalid_field",
                message: "the password is shorter than 8 characters: choose a longer one" };
              said.push(session.accountMessage(invalid));
              for (const message of ["claiming needs a read+command key",
                  "the session cookie came without its CSRF token: reload the page and try again"]) {
                const error = { kind: "http", code: "forbidden", message };
                said.push(app.describeError(error), session.accountMessage(error));
              }
              for (const message of ["too many wrong passwords", "100 invitations are pending", "slow down"]) {
                said.push(session.accountMessage({ kind: "http", code: "rate_limited", message }));
              }
              said.push(app.describeError({ kind: "unreachable" }), session.accountMessage({ kind: "unreachable" }));
              said.push(...Object.values(session.ACCOUNT_MESSAGES));
              cb(said);
            }, e => cb(String(e)));"#,
            vec![],
        )
        .await?;
    let messages = messages
        .as_array()
        .ok_or(format!("no messages: {messages}"))?;
    assert!(messages.len() > 30, "{messages:?}");
    for message in messages {
        let text = message.as_str().ok_or("not a text")?.to_lowercase();
        assert!(
            NEXT_STEPS.iter().any(|step| text.contains(step)),
            "says no next step: {text}"
        );
    }
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
    // The readings (series and export) with the session cookie.
    wait_for_text(client, "#readings-status", "Showing last hour").await?;
    click(client, "#export-csv").await?;
    wait_for_text(client, "#readings-status", "Downloaded").await?;
    assert_fits_the_phone(client, "dashboard with the channel's readings").await?;
    save_screenshot("claimed-phone", &client.screenshot().await?)?;

    // The label again, now used up, signed in: the page says what to do.
    client.goto(&label_url).await?;
    wait_visible(client, "#signed-in-view").await?;
    wait_for_text(client, "#signed-in-as", "ada@example.com").await?;
    assert_fits_the_phone(client, "claim page, signed in").await?;
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
    every_error_message_says_what_to_do_next(client).await?;
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
    click(owner, "#invite-role option[value='read_only']").await?;
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

/// The server process's refusals of browser requests: its
/// `tether_rejected_total` of kinds `csrf` (no or a wrong token, or a
/// foreign origin with the cookie) and `origin` (a foreign origin).
async fn csrf_refusals(addr: SocketAddr) -> Result<u64, BoxError> {
    let (_, text) = http_raw(addr, "GET", "/metrics", None, None).await?;
    let mut total = 0;
    for kind in ["csrf", "origin"] {
        let name = format!("tether_rejected_total{{kind=\"{kind}\"}}");
        if let Some(value) = text
            .lines()
            .find_map(|line| line.strip_prefix(name.as_str()))
        {
            total += value.trim().parse::<u64>()?;
        }
    }
    Ok(total)
}

/// A web server of another origin (another port of the same loopback
/// host: the same site, so the browser sends the session cookie along)
/// that serves `page` to every request.
async fn foreign_site(page: String) -> Result<SocketAddr, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let page = page.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0_u8; 1024];
                while !request.windows(4).any(|window| window == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(buffer.get(..n).unwrap_or_default()),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{page}",
                    page.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    Ok(addr)
}

/// Cross-site request forgery, in the browser: the dashboard's own page
/// without its CSRF token is refused with what to do; a page of another
/// origin (whose requests carry the cookie) cannot claim, command or open
/// a receiver WebSocket; the refusals are counted and nothing happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_the_csrf_token_or_from_another_origin_are_refused() -> TestResult {
    let data = tempfile::tempdir()?;
    let (server, _) = ServerProcess::start(data.path(), free_port()?)?;
    let base = format!("http://{}", server.addr);
    let (code, token) = labelled_device(data.path(), "kitchen-1")?;
    let (spare_code, _) = labelled_device(data.path(), "spare-1")?;
    account(server.addr, "ada@example.com", &code).await?;
    let mut device = Device::connect(server.addr, &token).await?;
    device.hello("kitchen-1", 1).await?;
    let browser = phone().await?;
    let client = browser.client();
    client.goto(&format!("{base}/")).await?;
    sign_in_with_password(client, "ada@example.com", PASSWORD).await?;
    wait_for_text(client, "#devices tbody", "kitchen-1").await?;
    let before = csrf_refusals(server.addr).await?;

    // The dashboard's own origin, the cookie, but no token.
    let refused = client
        .execute_async(
            "const cb = arguments[arguments.length - 1]; \
             fetch('/v1/devices/kitchen-1/commands', {method: 'POST', \
               headers: {'Content-Type': 'application/json'}, \
               body: JSON.stringify({channel: 'led', payload: true})}) \
             .then(r => r.json().then(b => cb([r.status, b.error.code, b.error.message])), \
                   e => cb(String(e)));",
            vec![],
        )
        .await?;
    assert_eq!(refused[0], 403, "{refused}");
    assert_eq!(refused[1], "forbidden", "{refused}");
    let message = refused[2].as_str().unwrap_or_default();
    assert!(
        message.contains("reload the page and try again"),
        "{message}"
    );

    // Another origin of the same site: a form (a simple request, no
    // preflight), a no-cors fetch and a WebSocket with a guessed token.
    let page = format!(
        r#"<!doctype html><meta charset="utf-8"><title>waiting</title>
<iframe name="sink"></iframe>
<form id="claim" method="POST" action="{base}/v1/claim" enctype="text/plain" target="sink">
<input name='{{"claim_code":"{spare_code}","x":"' value='"}}'></form>
<script>
document.getElementById("claim").submit();
fetch("{base}/v1/devices/kitchen-1/commands", {{method: "POST", mode: "no-cors",
  credentials: "include", body: JSON.stringify({{channel: "led", payload: true}})}});
const socket = new WebSocket("ws://{addr}/v1/receiver", ["tether.v1", "tether-csrf." + "0".repeat(64)]);
socket.onopen = () => {{ document.title = "ws:open"; }};
socket.onclose = () => {{ if (document.title !== "ws:open") document.title = "ws:refused"; }};
</script>"#,
        addr = server.addr
    );
    let foreign = foreign_site(page).await?;
    client.goto(&format!("http://{foreign}/")).await?;
    let deadline = Instant::now() + WAIT;
    let title = loop {
        let title = client.title().await?;
        if title.starts_with("ws:") {
            break title;
        }
        assert!(
            Instant::now() < deadline,
            "the foreign page is stuck: {title}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(title, "ws:refused");
    // Each of the four requests reached the server and was refused by
    // its origin or CSRF check.
    let deadline = Instant::now() + WAIT;
    while csrf_refusals(server.addr).await? < before + 4 {
        assert!(
            Instant::now() < deadline,
            "CSRF refusals: {} (before: {before})",
            csrf_refusals(server.addr).await?
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Nothing happened: no command reached the device, the spare device
    // is not claimed.
    match tokio::time::timeout(Duration::from_secs(1), device.recv()).await {
        Ok(Ok(Downlink::Command { channel, .. })) => panic!("a forged command arrived: {channel}"),
        Ok(Ok(_)) | Err(_) => {}
        Ok(Err(error)) => return Err(error),
    }
    client.goto(&format!("{base}/")).await?;
    wait_for_text(client, "#devices tbody", "kitchen-1").await?;
    assert!(!text(client, "#devices tbody").await?.contains("spare-1"));
    // The page still works with its token.
    wait_for_text(client, "#access", "Signed in as ada@example.com").await?;
    drop(device);
    browser.close().await;
    Ok(())
}
