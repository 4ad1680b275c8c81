//! The portal over real sockets, driven by a real HTTP client (ureq).

mod common;

use core::time::Duration;
use std::io::{Read, Write};
use std::net::TcpStream;

use tether_core::provisioning::portal::ConnectionStatus;
use tether_core::provisioning::store::{ConfigStore, MemoryStore};
use tether_host::portal::PortalHandle;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent()
}

fn url(handle: &PortalHandle<MemoryStore>, path: &str) -> String {
    format!("http://{}{}", handle.http_addr(), path)
}

struct Page {
    status: u16,
    location: Option<String>,
    body: String,
}

fn read(mut response: ureq::http::Response<ureq::Body>) -> Page {
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.body_mut().read_to_string().expect("body");
    Page {
        status,
        location,
        body,
    }
}

fn get(handle: &PortalHandle<MemoryStore>, path: &str) -> Page {
    read(agent().get(url(handle, path)).call().expect("GET"))
}

fn post_form(handle: &PortalHandle<MemoryStore>, form: &[(String, String)]) -> Page {
    let pairs = form.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    read(
        agent()
            .post(url(handle, "/save"))
            .send_form(pairs)
            .expect("POST"),
    )
}

fn post_raw(handle: &PortalHandle<MemoryStore>, body: &str) -> Page {
    read(
        agent()
            .post(url(handle, "/save"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .send(body)
            .expect("POST"),
    )
}

/// The portal still serves the form after whatever came before.
fn assert_still_serving(handle: &PortalHandle<MemoryStore>) {
    let page = get(handle, "/");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("name=passphrase"));
}

#[test]
fn client_fetches_the_form_and_submits_it() {
    let (_runtime, handle) = common::start(MemoryStore::new());
    let page = get(&handle, "/");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<title>Set up tether-4F2A</title>"));
    assert!(page.body.contains("value=\"Home\""));
    assert!(
        page.body
            .contains("Caf\u{e9} &lt;Guest&gt; &amp; &quot;Friends&quot;")
    );
    assert!(page.body.contains("name=pairing_code"));
    assert!(page.body.len() < 10 * 1024);

    let saved = post_form(&handle, &common::form_with("ssid", "Home"));
    assert_eq!(saved.status, 303);
    assert_eq!(
        saved.location.as_deref(),
        Some(url(&handle, "/status").as_str())
    );
    assert_eq!(handle.saves(), 1);
    let record = handle
        .with_store(|s| s.load())
        .expect("load")
        .expect("record saved");
    let wifi = record.wifi.expect("wifi");
    assert_eq!(wifi.ssid.as_str(), "Home");
    assert_eq!(wifi.passphrase.as_str(), "correct horse battery");
    assert_eq!(record.server_url.as_str(), "wss://relay.example.com/device");
    assert_eq!(record.device_id.as_str(), "sensor-7");
    assert_eq!(record.token.as_str(), "tok_3f9a");

    // The status page follows what the backend reports.
    handle.set_status(ConnectionStatus::JoiningWifi);
    let status = get(&handle, "/status");
    assert!(status.body.contains("Joining the Wi-Fi network"));
    assert!(status.body.contains("http-equiv=refresh"));
    handle.set_status(ConnectionStatus::Connected);
    let status = get(&handle, "/status");
    assert!(status.body.contains("reached the server"));
}

#[test]
fn every_bad_input_shows_a_message_saves_nothing_and_the_portal_keeps_serving() {
    let (_runtime, handle) = common::start(MemoryStore::new());
    let too_long_ssid = "x".repeat(33);
    let cases: Vec<(&str, Page, u16, &str)> = vec![
        (
            "SSID over 32 bytes",
            post_form(&handle, &common::form_with("other_ssid", &too_long_ssid)),
            422,
            "A network name has at most 32 bytes.",
        ),
        (
            "short passphrase",
            post_form(&handle, &common::form_with("passphrase", "short")),
            422,
            "The password must have at least 8 characters",
        ),
        (
            "bad URL",
            post_form(
                &handle,
                &common::form_with("server_url", "http://relay.example.com"),
            ),
            422,
            "The server address must start with ws:// or wss://.",
        ),
        (
            "bad URL port",
            post_form(
                &handle,
                &common::form_with("server_url", "wss://relay.example.com:99999"),
            ),
            422,
            "The server port must be a number from 1 to 65535.",
        ),
        (
            "wrong pairing code",
            post_form(&handle, &common::form_with("pairing_code", "K7-43")),
            403,
            "The pairing code does not match",
        ),
        (
            "broken percent-encoding",
            post_raw(
                &handle,
                "ssid=Home&passphrase=abc%zzdefgh&pairing_code=K7-42&server_url=wss%3A%2F%2Fr.example&device_id=d&token=t",
            ),
            400,
            "broken percent-encoding",
        ),
        (
            "oversize request",
            post_raw(&handle, &format!("ssid={}", "a".repeat(5000))),
            413,
            "The submitted form is too large.",
        ),
    ];
    for (what, page, status, message) in cases {
        assert_eq!(page.status, status, "{what}: {}", page.body);
        assert!(
            page.body.contains(message),
            "{what}: {message:?} not in {}",
            page.body
        );
        assert_eq!(handle.saves(), 0, "{what}: nothing saved");
        assert_eq!(handle.with_store(|s| s.load()), Ok(None), "{what}");
        assert_still_serving(&handle);
    }
    // Headers too large: 431, and still serving.
    let response = agent()
        .get(url(&handle, "/"))
        .header("X-Padding", "p".repeat(4000))
        .call()
        .expect("GET");
    let page = read(response);
    assert_eq!(page.status, 431);
    assert!(page.body.contains("The request headers are too large."));
    assert_still_serving(&handle);
    // Finally a correct submission still works.
    assert_eq!(
        post_form(&handle, &common::form_with("ssid", "Home")).status,
        303
    );
    assert_eq!(handle.saves(), 1);
}

#[test]
fn captive_portal_probes_redirect_to_the_portal() {
    let (_runtime, handle) = common::start(MemoryStore::new());
    let portal = url(&handle, "/");
    for path in tether_core::provisioning::portal::PROBE_PATHS {
        let page = get(&handle, path);
        assert_eq!(page.status, 302, "{path}");
        assert_eq!(page.location.as_deref(), Some(portal.as_str()), "{path}");
    }
    // With redirects followed, a probe lands on the form, as on a phone.
    let follow = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let page = read(
        follow
            .get(url(&handle, "/hotspot-detect.html"))
            .call()
            .expect("GET"),
    );
    assert_eq!(page.status, 200);
    assert!(page.body.contains("name=passphrase"));
}

#[test]
fn a_request_split_across_reads_works() {
    let (_runtime, handle) = common::start(MemoryStore::new());
    let body = "ssid=Home&passphrase=correct+horse&pairing_code=K7-42\
                &server_url=wss%3A%2F%2Frelay.example.com&device_id=d-1&token=t";
    let request = format!(
        "POST /save HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\n\r\n{body}",
        handle.http_addr(),
        body.len()
    );
    let mut stream = TcpStream::connect(handle.http_addr()).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    for piece in [
        &request[..7],
        &request[7..60],
        &request[60..request.len() - 5],
        &request[request.len() - 5..],
    ] {
        stream.write_all(piece.as_bytes()).expect("write");
        stream.flush().expect("flush");
        std::thread::sleep(Duration::from_millis(40));
    }
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    assert!(
        response.starts_with("HTTP/1.1 303 See Other\r\n"),
        "{response}"
    );
    assert_eq!(handle.saves(), 1);
}

#[test]
fn guessing_the_pairing_code_is_slowed_down() {
    let (_runtime, handle) = common::start(MemoryStore::new());
    for guess in 0..tether_core::provisioning::portal::PairingGuard::MAX_FAILURES {
        let page = post_form(
            &handle,
            &common::form_with("pairing_code", &format!("G-{guess}")),
        );
        assert_eq!(page.status, 403);
    }
    let page = post_form(&handle, &common::form_with("ssid", "Home"));
    assert_eq!(page.status, 429, "{}", page.body);
    assert!(page.body.contains("Too many wrong pairing codes"));
    assert_eq!(handle.saves(), 0);
    assert_still_serving(&handle);
}
