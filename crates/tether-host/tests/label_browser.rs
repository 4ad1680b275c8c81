//! The label `tether-provision --label` draws, as a browser shows it:
//! headless Chromium (through chromedriver and fantoccini) opens the SVG,
//! which must render at its printed size with its QR code and text. Also
//! takes the picture `docs/provisioning.md` shows: saved as
//! `target/screenshots/label.png`, and copied over `docs/images/label.png`
//! only with `TETHER_UPDATE_SCREENSHOTS=1`.
//!
//! Needs the Debian packages `chromium` and `chromium-driver`
//! (`cargo xtask setup`); without them this test fails.

use std::process::Command;

type BoxError = Box<dyn core::error::Error + Send + Sync>;

use tether_browser_test::fantoccini::Locator;
use tether_browser_test::{Browser, BrowserOptions, save_docs_image};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_label_renders_with_its_qr_code_and_text() -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    let label = dir.path().join("sensor-7-label.svg");
    let result = Command::new(env!("CARGO_BIN_EXE_tether-provision"))
        .args([
            "--server-url",
            "wss://relay.example.com/v1/device",
            "--device-id",
            "sensor-7",
            "--claim-code",
            "7M2K-9QXD-4HBT",
            "--label",
        ])
        .arg(&label)
        .env_remove("TETHER_DEVICE_TOKEN")
        .output()?;
    assert!(result.status.success(), "{result:?}");
    let page = dir.path().join("label.html");
    std::fs::write(
        &page,
        format!(
            "<!doctype html><html><body style=\"margin:0;background:#ddd\">\
             <img id=\"label\" src=\"file://{}\" style=\"display:block;width:512px;margin:12px;background:#fff\">\
             </body></html>",
            label.display()
        ),
    )?;
    let browser = Browser::launch(BrowserOptions::default().window(600, 400)).await?;
    let client = browser.client();
    client.goto(&format!("file://{}", page.display())).await?;
    // The SVG loaded and has the label's proportions (62 × 29 mm).
    let size = client
        .execute(
            "const img = document.getElementById('label'); \
             return img.complete ? [img.naturalWidth, img.naturalHeight] : null;",
            vec![],
        )
        .await?;
    let ratio = size[0].as_f64().unwrap_or(0.0) / size[1].as_f64().unwrap_or(1.0);
    assert!((ratio - 62.0 / 29.0).abs() < 0.05, "label size {size}");
    let png = client
        .find(Locator::Id("label"))
        .await?
        .screenshot()
        .await?;
    let saved = save_docs_image("label", &png)?;
    assert!(std::fs::metadata(&saved.artifact)?.len() > 1000);
    browser.close().await;
    Ok(())
}
