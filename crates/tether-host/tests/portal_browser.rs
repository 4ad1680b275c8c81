//! Headless Chromium (through chromedriver and fantoccini, started by
//! `tether-browser-test`) fills in the portal form and submits it, without
//! JavaScript on the page. Also takes the screenshot `docs/provisioning.md`
//! shows: saved as `target/screenshots/portal.png`, and copied over
//! `docs/images/portal.png` only with `TETHER_UPDATE_SCREENSHOTS=1`.
//!
//! Needs the Debian packages `chromium` and `chromium-driver`
//! (`cargo xtask setup` installs them); without them this test fails.

mod common;

use core::time::Duration;
use std::time::Instant;

use tether_browser_test::fantoccini::{Client, Locator};
use tether_browser_test::{Browser, BrowserOptions};
use tether_core::provisioning::portal::ConnectionStatus;
use tether_core::provisioning::store::{ConfigStore, MemoryStore};

async fn fill(client: &Client, id: &str, text: &str) {
    let field = client.find(Locator::Id(id)).await.expect(id);
    field.clear().await.expect("clear");
    field.send_keys(text).await.expect("type");
}

#[test]
fn chromium_fills_in_and_submits_the_portal_form() {
    let (runtime, handle) = common::start(MemoryStore::new());
    let portal = format!("http://{}/", handle.http_addr());
    runtime.block_on(async {
        let browser = Browser::launch(BrowserOptions::default().window(480, 1000))
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        let client = browser.client();

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
        fill(client, "passphrase", "correct horse battery").await;
        fill(client, "pairing_code", "WRONG-1").await;
        fill(client, "device_id", "sensor-7").await;
        fill(client, "token", "tok_3f9a").await;
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
        fill(client, "passphrase", "correct horse battery").await;
        fill(client, "pairing_code", common::PAIRING_CODE).await;
        fill(client, "device_id", "sensor-7").await;
        fill(client, "token", "tok_3f9a").await;
        let png = client.screenshot().await.expect("screenshot");
        let saved = tether_browser_test::save_docs_image("portal", &png)
            .unwrap_or_else(|error| panic!("{error}"));
        let written = std::fs::read(&saved.artifact).expect("read the screenshot back");
        assert!(written.len() > 8 && written.starts_with(b"\x89PNG\r\n\x1a\n"));

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

        browser.close().await;
    });
}
