//! Headless Chromium (through chromedriver and fantoccini) fills in the
//! portal form and submits it, without JavaScript on the page. Also saves
//! the screenshot used in `docs/provisioning.md`.
//!
//! Needs the Debian packages `chromium` and `chromium-driver`
//! (`cargo xtask setup` installs them); without them this test fails.

mod common;

use core::time::Duration;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use fantoccini::{Client, ClientBuilder, Locator};
use tether_core::provisioning::portal::ConnectionStatus;
use tether_core::provisioning::store::{ConfigStore, MemoryStore};

/// chromedriver, killed (by its own handle) when the test ends.
struct Driver {
    child: Child,
    port: u16,
    _profile: TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free loopback port")
        .port()
}

fn start_driver() -> Driver {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "chromedriver could not be started ({e}); install the Debian packages \
                 `chromium` and `chromium-driver` (cargo xtask setup)"
            )
        });
    let profile = TempDir(std::env::temp_dir().join(format!(
        "tether-portal-chromium-{}-{port}",
        std::process::id()
    )));
    let driver = Driver {
        child,
        port,
        _profile: profile,
    };
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "chromedriver did not listen on 127.0.0.1:{port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    driver
}

fn chromium_binary() -> &'static str {
    for candidate in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if std::path::Path::new(candidate).exists() {
            return candidate;
        }
    }
    panic!("Chromium is not installed: install the Debian package `chromium` (cargo xtask setup)");
}

async fn browser(driver: &Driver) -> Client {
    let capabilities = serde_json::json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium_binary(),
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--window-size=480,1000",
                format!("--user-data-dir={}", driver._profile.0.display()),
            ],
        },
    });
    let serde_json::Value::Object(capabilities) = capabilities else {
        unreachable!("a JSON object literal")
    };
    ClientBuilder::native()
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("WebDriver session with Chromium")
}

async fn fill(client: &Client, id: &str, text: &str) {
    let field = client.find(Locator::Id(id)).await.expect(id);
    field.clear().await.expect("clear");
    field.send_keys(text).await.expect("type");
}

#[test]
fn chromium_fills_in_and_submits_the_portal_form() {
    let (runtime, handle) = common::start(MemoryStore::new());
    let driver = start_driver();
    let portal = format!("http://{}/", handle.http_addr());
    runtime.block_on(async {
        let client = browser(&driver).await;

        // A phone's connectivity probe lands on the form.
        client
            .goto(&format!("{portal}generate_204"))
            .await
            .expect("probe");
        assert_eq!(client.current_url().await.expect("url").as_str(), portal);
        let title = client.find(Locator::Css("h1")).await.expect("h1");
        assert_eq!(title.text().await.expect("text"), "Set up tether-4F2A");

        // Scanned networks are listed, escaped (shown as text, not markup).
        let label = client
            .find(Locator::Css("label[for=n1]"))
            .await
            .expect("second network");
        assert!(
            label
                .text()
                .await
                .expect("text")
                .starts_with("Caf\u{e9} <Guest> & \"Friends\"")
        );

        // A wrong pairing code: a clear message, nothing saved.
        client
            .find(Locator::Id("n0"))
            .await
            .expect("Home")
            .click()
            .await
            .expect("pick");
        fill(&client, "passphrase", "correct horse battery").await;
        fill(&client, "pairing_code", "WRONG-1").await;
        fill(&client, "device_id", "sensor-7").await;
        fill(&client, "token", "tok_3f9a").await;
        client
            .find(Locator::Id("save"))
            .await
            .expect("button")
            .click()
            .await
            .expect("submit");
        let message = client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Id("err-pairing_code"))
            .await
            .expect("pairing message");
        assert!(
            message
                .text()
                .await
                .expect("text")
                .contains("does not match")
        );
        assert_eq!(handle.saves(), 0);

        // Fill the form in properly; keep a picture of it for the docs.
        client.goto(&portal).await.expect("form");
        client
            .find(Locator::Id("n0"))
            .await
            .expect("Home")
            .click()
            .await
            .expect("pick");
        fill(&client, "passphrase", "correct horse battery").await;
        fill(&client, "pairing_code", common::PAIRING_CODE).await;
        fill(&client, "device_id", "sensor-7").await;
        fill(&client, "token", "tok_3f9a").await;
        let png = client.screenshot().await.expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"));
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/images");
        std::fs::create_dir_all(&docs).expect("docs/images");
        std::fs::write(docs.join("portal.png"), &png).expect("write screenshot");

        client
            .find(Locator::Id("save"))
            .await
            .expect("button")
            .click()
            .await
            .expect("submit");
        let status_url = format!("{portal}status");
        let started = Instant::now();
        while client.current_url().await.expect("url").as_str() != status_url {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no redirect to /status"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(handle.saves(), 1);
        let record = handle
            .with_store(|s| s.load())
            .expect("load")
            .expect("saved");
        let wifi = record.wifi.expect("wifi");
        assert_eq!(wifi.ssid.as_str(), "Home");
        assert_eq!(wifi.passphrase.as_str(), "correct horse battery");
        assert_eq!(record.device_id.as_str(), "sensor-7");

        // The backend reports success; the page refreshes itself (meta
        // refresh, no JavaScript) and shows it.
        handle.set_status(ConnectionStatus::Connected);
        let done = client
            .wait()
            .at_most(Duration::from_secs(15))
            .for_element(Locator::XPath(
                "//p[@id='status' and starts-with(., 'Done')]",
            ))
            .await
            .expect("status page shows success");
        assert!(
            done.text()
                .await
                .expect("text")
                .contains("reached the server")
        );

        client.close().await.expect("close browser");
    });
}
