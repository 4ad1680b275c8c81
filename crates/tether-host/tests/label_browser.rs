//! The label `tether-provision --label` draws, as a browser shows it:
//! headless Chromium (through chromedriver and fantoccini) opens the SVG,
//! which must render at its printed size with its QR code and text, and
//! the QR code, read back from the pixels Chromium drew (`rqrr`), must be
//! the claim page's URL with the code. Also
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
    // The SVG loaded and has the label's proportions (62 × 29 mm). Waited
    // for, not assumed: on a loaded machine the image may still be
    // decoding when the page counts as loaded.
    let deadline = std::time::Instant::now() + core::time::Duration::from_secs(25);
    let size = loop {
        let size = client
            .execute(
                "const img = document.getElementById('label'); \
                 return img && img.complete && img.naturalWidth > 0 \
                   ? [img.naturalWidth, img.naturalHeight] : null;",
                vec![],
            )
            .await?;
        if !size.is_null() {
            break size;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the label's SVG never loaded"
        );
        tokio::time::sleep(core::time::Duration::from_millis(100)).await;
    };
    let ratio = size[0].as_f64().unwrap_or(0.0) / size[1].as_f64().unwrap_or(1.0);
    assert!((ratio - 62.0 / 29.0).abs() < 0.05, "label size {size}");
    let png = client
        .find(Locator::Id("label"))
        .await?
        .screenshot()
        .await?;
    let saved = save_docs_image("label", &png)?;
    assert!(std::fs::metadata(&saved.artifact)?.len() > 1000);
    assert_eq!(
        read_qr_code(client, &std::fs::read_to_string(&label)?).await?,
        "https://relay.example.com/claim#code=7M2K-9QXD-4HBT"
    );
    browser.close().await;
    Ok(())
}

/// What a phone's camera would read: the browser draws the label's SVG on
/// a canvas (800 px wide), its grey pixels go to `rqrr`, which must find
/// exactly one QR code; its text.
async fn read_qr_code(
    client: &tether_browser_test::fantoccini::Client,
    svg: &str,
) -> Result<String, BoxError> {
    let drawn = client
        .execute_async(
            "const [svg, width] = arguments; const cb = arguments[arguments.length - 1]; \
             const img = new Image(); \
             img.onload = () => { \
               const height = Math.round(width * img.naturalHeight / img.naturalWidth); \
               const canvas = document.createElement('canvas'); \
               canvas.width = width; canvas.height = height; \
               const context = canvas.getContext('2d'); \
               context.fillStyle = '#fff'; context.fillRect(0, 0, width, height); \
               context.drawImage(img, 0, 0, width, height); \
               const rgba = context.getImageData(0, 0, width, height).data; \
               const grey = new Array(width * height); \
               for (let i = 0; i < width * height; i++) \
                 grey[i] = Math.round((rgba[4 * i] + rgba[4 * i + 1] + rgba[4 * i + 2]) / 3); \
               cb([width, height, grey.join(',')]); \
             }; \
             img.onerror = () => cb(null); \
             img.src = URL.createObjectURL(new Blob([svg], {type: 'image/svg+xml'}));",
            vec![serde_json::json!(svg), serde_json::json!(800)],
        )
        .await?;
    let width = usize::try_from(drawn[0].as_u64().ok_or(format!("not drawn: {drawn}"))?)?;
    let height = usize::try_from(drawn[1].as_u64().ok_or("no height")?)?;
    let grey = drawn[2]
        .as_str()
        .ok_or("no pixels")?
        .split(',')
        .map(str::parse::<u8>)
        .collect::<Result<Vec<u8>, _>>()?;
    assert_eq!(grey.len(), width * height);
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(width, height, |x, y| {
        grey.get(y * width + x).copied().unwrap_or(255)
    });
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1, "QR codes found");
    let (_, text) = grids.first().ok_or("no QR code")?.decode()?;
    Ok(text)
}
