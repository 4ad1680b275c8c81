//! Test helper for tether's browser tests: starts **headless Chromium**
//! through **chromedriver** on a free loopback port and hands out a
//! [`fantoccini`] WebDriver client. Not published; a dev-dependency only.
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

#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use core::fmt;
use core::time::Duration;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

pub use fantoccini;
use fantoccini::{Client, ClientBuilder};

/// Where Debian (and Ubuntu) put Chromium.
const CHROMIUM_CANDIDATES: &[&str] = &["/usr/bin/chromium", "/usr/bin/chromium-browser"];
/// How long chromedriver may take to listen.
const DRIVER_START_TIMEOUT: Duration = Duration::from_secs(20);

/// Why the browser could not be started.
#[derive(Debug)]
pub struct LaunchError(String);

impl fmt::Display for LaunchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LaunchError {}

/// How to start the browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowserOptions {
    window_width: u32,
    window_height: u32,
}

impl Default for BrowserOptions {
    fn default() -> Self {
        BrowserOptions {
            window_width: 1280,
            window_height: 900,
        }
    }
}

impl BrowserOptions {
    /// The window size in CSS pixels (a phone is about 412 × 915).
    pub fn window(mut self, width: u32, height: u32) -> Self {
        self.window_width = width;
        self.window_height = height;
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
pub fn free_port() -> Result<u16, LaunchError> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|error| LaunchError(format!("no free loopback port: {error}")))
}

/// The Chromium binary.
pub fn chromium_binary() -> Result<&'static str, LaunchError> {
    CHROMIUM_CANDIDATES
        .iter()
        .copied()
        .find(|candidate| Path::new(candidate).exists())
        .ok_or_else(|| {
            LaunchError(
                "Chromium is not installed: install the Debian packages `chromium` and \
                 `chromium-driver` (cargo xtask setup)"
                    .to_owned(),
            )
        })
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless Chromium
    /// with a fresh profile through it.
    pub async fn launch(options: BrowserOptions) -> Result<Browser, LaunchError> {
        let binary = chromium_binary()?;
        let port = free_port()?;
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| {
                LaunchError(format!(
                    "chromedriver could not be started ({error}); install the Debian packages \
                     `chromium` and `chromium-driver` (cargo xtask setup)"
                ))
            })?;
        let profile =
            std::env::temp_dir().join(format!("tether-chromium-{}-{port}", std::process::id()));
        let driver = Driver {
            child,
            port,
            profile,
        };
        let started = Instant::now();
        while TcpStream::connect((Ipv4Addr::LOCALHOST, driver.port)).is_err() {
            if started.elapsed() > DRIVER_START_TIMEOUT {
                return Err(LaunchError(format!(
                    "chromedriver did not listen on 127.0.0.1:{port}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let capabilities = serde_json::json!({
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
        let serde_json::Value::Object(capabilities) = capabilities else {
            return Err(LaunchError("capabilities are not an object".to_owned()));
        };
        let client = ClientBuilder::native()
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
            .map_err(|error| LaunchError(format!("no WebDriver session with Chromium: {error}")))?;
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
