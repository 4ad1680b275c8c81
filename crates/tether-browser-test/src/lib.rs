//! Test helper for tether's browser tests: starts **headless Chromium**
//! through **chromedriver** on a free loopback port, hands out a
//! [`fantoccini`] WebDriver client, and saves screenshots (see
//! [Screenshots](#screenshots)). Not published; a dev-dependency only.
//!
//! ```text
//!  test ──WebDriver (HTTP, 127.0.0.1:<free port>)──▶ chromedriver ──▶ chromium --headless
//!                                                                      (fresh profile dir)
//! ```
//!
//! Needs the Debian packages `chromium` and `chromium-driver` (`cargo xtask
//! setup` installs them). Without them [`Browser::launch`] returns an error
//! that says so: a browser test must **fail**, never skip.
//!
//! # Example
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use tether_browser_test::{Browser, BrowserOptions};
//!
//! let browser = Browser::launch(BrowserOptions::default().window(412, 915)).await?;
//! browser.client().goto("http://127.0.0.1:8080/").await?;
//! let title = browser.client().title().await?;
//! assert!(!title.is_empty());
//! browser.close().await;
//! # Ok(()) }
//! ```
//!
//! (`no_run`: doc tests do not start browsers; the crates that use this one
//! do, in their integration tests.)
//!
//! # Screenshots
//!
//! [`save_screenshot`] keeps a picture as a **test artifact** under the
//! target directory, `target/screenshots/<name>.png` (or
//! `$CARGO_TARGET_DIR/screenshots/<name>.png`), and prints where.
//! [`save_docs_image`] does the same for a picture the documentation shows,
//! and *also* overwrites the committed `docs/images/<name>.png`, but only
//! when the environment variable [`UPDATE_SCREENSHOTS_ENV`]
//! (`TETHER_UPDATE_SCREENSHOTS=1`) is set. A plain test run therefore never
//! leaves the working tree dirty, and the committed images change only when
//! someone refreshes them on purpose:
//!
//! ```text
//! TETHER_UPDATE_SCREENSHOTS=1 cargo test -p tether-host --test portal_browser
//! TETHER_UPDATE_SCREENSHOTS=1 cargo test -p tether-server --test dashboard_data_browser
//! ```
//!
//! ```no_run
//! # async fn example(browser: tether_browser_test::Browser)
//! # -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let png = browser.client().screenshot().await?;
//! let saved = tether_browser_test::save_docs_image("portal", &png)?;
//! assert!(saved.artifact.ends_with("screenshots/portal.png"));
//! # Ok(()) }
//! ```

#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use core::fmt;
use core::time::Duration;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

pub use fantoccini;
use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;

/// Where Debian (and Ubuntu) put Chromium.
const CHROMIUM_CANDIDATES: &[&str] = &["/usr/bin/chromium", "/usr/bin/chromium-browser"];
/// How long chromedriver may take to listen (it takes well under a
/// second on an idle machine; much longer on a loaded one).
const DRIVER_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How many times a WebDriver session is asked for before the launch fails.
const SESSION_ATTEMPTS: u32 = 3;
/// Starts of chromedriver that exit at once, at most.
const DRIVER_START_ATTEMPTS: usize = 3;

/// Why the browser could not be started or a screenshot not saved: a
/// message that says what to do (install Chromium, ...).
#[derive(Debug)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// How to start the browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowserOptions {
    window_width: u32,
    window_height: u32,
    phone: bool,
}

impl Default for BrowserOptions {
    fn default() -> Self {
        BrowserOptions {
            window_width: 1280,
            window_height: 900,
            phone: false,
        }
    }
}

impl BrowserOptions {
    /// The window size in CSS pixels. Chromium keeps a desktop window at
    /// least 500 pixels wide whatever is asked: for a phone's width use
    /// [`phone`](Self::phone).
    pub fn window(mut self, width: u32, height: u32) -> Self {
        self.window_width = width;
        self.window_height = height;
        self.phone = false;
        self
    }

    /// A phone's viewport of `width` × `height` CSS pixels (a phone is
    /// about 412 × 915), through Chromium's mobile emulation (mobile
    /// viewport, touch), so `window.innerWidth` really is `width`.
    pub fn phone(mut self, width: u32, height: u32) -> Self {
        self.window_width = width;
        self.window_height = height;
        self.phone = true;
        self
    }
}

/// chromedriver, killed (by its own process handle) when dropped, and the
/// browser profile directory, removed when dropped.
#[derive(Debug)]
struct Driver {
    child: Child,
    port: u16,
    profile: PathBuf,
}

impl Driver {
    /// Starts chromedriver and waits until it listens. It picks its port
    /// itself (`--port=0`) and says which on its standard output: a port
    /// chosen beforehand could be taken by another process in between
    /// (then chromedriver exits, or worse, the wait below connects to that
    /// other process), as happened under load. A chromedriver that exits
    /// at once is started again.
    async fn start() -> Result<Driver, Error> {
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let mut last_exit = None;
        for _ in 0..DRIVER_START_ATTEMPTS {
            let mut child = Command::new("chromedriver")
                .arg("--port=0")
                .arg("--allowed-ips=127.0.0.1")
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|error| {
                    Error(format!(
                        "chromedriver could not be started ({error}); install the Debian \
                         packages `chromium` and `chromium-driver` (cargo xtask setup)"
                    ))
                })?;
            let stdout = child.stdout.take();
            let profile = std::env::temp_dir().join(format!(
                "tether-chromium-{}-{}",
                std::process::id(),
                STARTED.fetch_add(1, Ordering::Relaxed)
            ));
            let mut driver = Driver {
                child,
                port: 0,
                profile,
            };
            let ports = announced_port(stdout);
            let started = Instant::now();
            loop {
                if let Ok(port) = ports.try_recv() {
                    driver.port = port;
                    return Ok(driver);
                }
                if let Ok(Some(status)) = driver.child.try_wait() {
                    last_exit = Some(status);
                    break;
                }
                if started.elapsed() > DRIVER_START_TIMEOUT {
                    return Err(Error(format!(
                        "chromedriver did not say it listens within {} s",
                        DRIVER_START_TIMEOUT.as_secs()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Err(Error(format!(
            "chromedriver exited at start {DRIVER_START_ATTEMPTS} times (last: {last_exit:?})"
        )))
    }
}

/// Reads chromedriver's standard output on a thread of its own (to its
/// end, so chromedriver never blocks on a full pipe) and sends the port of
/// its `ChromeDriver was started successfully on port N.` line.
fn announced_port(stdout: Option<std::process::ChildStdout>) -> std::sync::mpsc::Receiver<u16> {
    let (sender, receiver) = std::sync::mpsc::channel();
    if let Some(stdout) = stdout {
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(port) = line
                    .strip_prefix("ChromeDriver was started successfully on port ")
                    .and_then(|rest| rest.trim().trim_end_matches('.').parse::<u16>().ok())
                {
                    let _ = sender.send(port);
                }
            }
        });
    }
    receiver
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// A headless Chromium session.
pub struct Browser {
    client: Client,
    _driver: Driver,
}

impl fmt::Debug for Browser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Browser")
            .field("driver", &self._driver)
            .finish_non_exhaustive()
    }
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> Result<u16, Error> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|error| Error(format!("no free loopback port: {error}")))
}

/// The Chromium binary.
pub fn chromium_binary() -> Result<&'static str, Error> {
    CHROMIUM_CANDIDATES
        .iter()
        .copied()
        .find(|candidate| Path::new(candidate).exists())
        .ok_or_else(|| {
            Error(
                "Chromium is not installed: install the Debian packages `chromium` and \
                 `chromium-driver` (cargo xtask setup)"
                    .to_owned(),
            )
        })
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless Chromium
    /// with a fresh profile through it.
    pub async fn launch(options: BrowserOptions) -> Result<Browser, Error> {
        let binary = chromium_binary()?;
        let driver = Driver::start().await?;
        let mut capabilities = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": binary,
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
                    format!("--window-size={},{}", options.window_width, options.window_height),
                    format!("--user-data-dir={}", driver.profile.display()),
                ],
            },
        });
        if options.phone {
            capabilities["goog:chromeOptions"]["mobileEmulation"] = serde_json::json!({
                "deviceMetrics": {
                    "width": options.window_width,
                    "height": options.window_height,
                    "pixelRatio": 1,
                    "mobile": true,
                    "touch": true,
                },
            });
        }
        let serde_json::Value::Object(capabilities) = capabilities else {
            return Err(Error("capabilities are not an object".to_owned()));
        };
        // chromedriver speaks plain HTTP on loopback: no TLS back end.
        // A chromedriver that has just started listening may still refuse
        // its first connection on a loaded machine: a few attempts.
        let url = format!("http://127.0.0.1:{}", driver.port);
        let mut attempt = 1;
        let client = loop {
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(_) if attempt < SESSION_ATTEMPTS => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(error) => {
                    return Err(Error(format!(
                        "no WebDriver session with Chromium after {SESSION_ATTEMPTS} attempts: {error}"
                    )));
                }
            }
        };
        Ok(Browser {
            client,
            _driver: driver,
        })
    }

    /// The WebDriver client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Ends the session (Chromium exits), then stops chromedriver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

// ------------------------------------------------------------- screenshots

/// The environment variable that makes [`save_docs_image`] overwrite the
/// committed image under `docs/images/` too. Set it to `1` (any value but
/// empty or `0` counts).
pub const UPDATE_SCREENSHOTS_ENV: &str = "TETHER_UPDATE_SCREENSHOTS";

/// The eight bytes every PNG file starts with.
const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Where [`save_screenshot`] or [`save_docs_image`] wrote a picture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedScreenshot {
    /// The test artifact, `<target dir>/screenshots/<name>.png`; always
    /// written.
    pub artifact: PathBuf,
    /// The committed image, `docs/images/<name>.png`, when it was
    /// overwritten (only [`save_docs_image`] with [`UPDATE_SCREENSHOTS_ENV`]
    /// set).
    pub docs_image: Option<PathBuf>,
}

/// Saves `png` as the test artifact `<target dir>/screenshots/<name>.png`
/// and prints its path. Never touches `docs/`.
///
/// The target directory is `$CARGO_TARGET_DIR` when that is set (a relative
/// one is taken from the workspace root), else the workspace's `target/`.
/// `name` is a file stem (no `/`, no `.`-only name); `png` must be a PNG.
pub fn save_screenshot(name: &str, png: &[u8]) -> Result<SavedScreenshot, Error> {
    let root = workspace_root();
    let target = target_dir(std::env::var_os("CARGO_TARGET_DIR"), &root);
    let artifact = write_png(&target.join("screenshots"), name, png)?;
    println!("screenshot: {}", artifact.display());
    Ok(SavedScreenshot {
        artifact,
        docs_image: None,
    })
}

/// Like [`save_screenshot`], for a picture the documentation shows: when
/// [`UPDATE_SCREENSHOTS_ENV`] is set it also overwrites the committed
/// `docs/images/<name>.png` (and prints so).
pub fn save_docs_image(name: &str, png: &[u8]) -> Result<SavedScreenshot, Error> {
    let mut saved = save_screenshot(name, png)?;
    if update_requested(std::env::var_os(UPDATE_SCREENSHOTS_ENV)) {
        let image = write_png(&workspace_root().join("docs").join("images"), name, png)?;
        println!("docs image updated: {}", image.display());
        saved.docs_image = Some(image);
    } else {
        println!(
            "docs/images/{name}.png left as committed ({UPDATE_SCREENSHOTS_ENV}=1 refreshes it)"
        );
    }
    Ok(saved)
}

/// The workspace root: this crate lives in `<root>/crates/tether-browser-test`.
fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .and_then(Path::parent)
        .unwrap_or(manifest)
        .to_path_buf()
}

/// `$CARGO_TARGET_DIR` (relative to the workspace root) or `<root>/target`.
fn target_dir(from_env: Option<OsString>, root: &Path) -> PathBuf {
    match from_env {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

/// Whether the variable asks for the committed images to be refreshed.
fn update_requested(value: Option<OsString>) -> bool {
    value.is_some_and(|value| !value.is_empty() && value != "0")
}

/// Writes `<dir>/<name>.png` (creating `dir`) and checks it was written
/// whole.
fn write_png(dir: &Path, name: &str, png: &[u8]) -> Result<PathBuf, Error> {
    if name.is_empty() || name.chars().all(|c| c == '.') || name.contains(['/', '\\']) {
        return Err(Error(format!(
            "screenshot name {name:?} is not a plain file name"
        )));
    }
    if !png.starts_with(PNG_SIGNATURE) {
        return Err(Error(format!(
            "screenshot {name:?} is not a PNG ({} bytes)",
            png.len()
        )));
    }
    let path = dir.join(format!("{name}.png"));
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&path, png))
        .map_err(|error| Error(format!("cannot write {}: {error}", path.display())))?;
    let written = std::fs::metadata(&path)
        .map_err(|error| Error(format!("cannot read {}: {error}", path.display())))?
        .len();
    if usize::try_from(written).ok() != Some(png.len()) {
        return Err(Error(format!(
            "{} has {written} bytes, expected {}",
            path.display(),
            png.len()
        )));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The PNG signature and an `IEND` chunk: enough for the checks.
    const TINY_PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\0IEND\xaeB`\x82";

    #[test]
    fn target_dir_follows_cargo_target_dir() {
        let root = Path::new("/work/tether");
        assert_eq!(target_dir(None, root), root.join("target"));
        assert_eq!(target_dir(Some("".into()), root), root.join("target"));
        assert_eq!(
            target_dir(Some("/tmp/build".into()), root),
            Path::new("/tmp/build")
        );
        assert_eq!(
            target_dir(Some("out".into()), root),
            Path::new("/work/tether/out")
        );
    }

    #[test]
    fn only_a_set_variable_refreshes_the_docs() {
        assert!(!update_requested(None));
        assert!(!update_requested(Some("".into())));
        assert!(!update_requested(Some("0".into())));
        assert!(update_requested(Some("1".into())));
        assert!(update_requested(Some("yes".into())));
    }

    #[test]
    fn the_workspace_root_holds_the_docs_images() {
        assert!(workspace_root().join("docs").join("images").is_dir());
        assert!(workspace_root().join("Cargo.toml").is_file());
    }

    #[test]
    fn writes_a_png_and_creates_the_directory() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let screenshots = dir.path().join("screenshots");
        let path = write_png(&screenshots, "portal", TINY_PNG)?;
        assert_eq!(path, screenshots.join("portal.png"));
        assert_eq!(std::fs::read(&path)?, TINY_PNG);
        Ok(())
    }

    #[test]
    fn refuses_what_is_not_a_png_or_not_a_plain_name() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let not_png = write_png(dir.path(), "portal", b"<html>");
        assert!(not_png.is_err_and(|error| error.to_string().contains("not a PNG")));
        assert!(write_png(dir.path(), "portal", b"").is_err());
        for name in ["", "..", "../portal", "a/b", "a\\b"] {
            let error = write_png(dir.path(), name, TINY_PNG);
            assert!(
                error.is_err_and(|error| error.to_string().contains("plain file name")),
                "{name:?}"
            );
        }
        assert_eq!(std::fs::read_dir(dir.path())?.count(), 0);
        Ok(())
    }
}
