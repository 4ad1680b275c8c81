//! What the browser tests share: the real `tether-server` binary as a
//! child process, and page helpers over WebDriver (fantoccini).
#![allow(
    dead_code,
    unreachable_pub,
    clippy::std_instead_of_core,
    clippy::std_instead_of_alloc
)]

use core::time::Duration;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use serde_json::{Value, json};
use tether_browser_test::fantoccini::{Client, Locator};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long a page may take to show what a test waits for.
pub const WAIT: Duration = Duration::from_secs(25);

/// The server binary as a child process; killed (SIGKILL) when dropped.
pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Starts the server on `port` with its data in `data_dir`; returns it
    /// and, on the first start, the receiver key it printed.
    pub fn start(data_dir: &Path, port: u16) -> Result<(ServerProcess, Option<String>), BoxError> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tether-server"))
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--log")
            .arg("warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (lines, received) = mpsc::channel();
        std::thread::spawn(move || {
            // Read to the end even when nobody listens any more: a closed
            // pipe would make the server's next `println!` fail.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = lines.send(line);
            }
        });
        let server = ServerProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let mut key = None;
        let deadline = Instant::now() + WAIT;
        let mut listening = false;
        loop {
            let wait = if listening {
                // The key line (first start only) is printed right next to
                // the dashboard line, if at all.
                Duration::from_millis(500)
            } else {
                deadline.saturating_duration_since(Instant::now())
            };
            match received.recv_timeout(wait) {
                Ok(line) => {
                    if line.starts_with("dashboard:") {
                        listening = true;
                    }
                    if let Some(found) = line.split_whitespace().find(|w| w.starts_with("tk_")) {
                        key = Some(found.to_owned());
                    }
                    if listening && key.is_some() {
                        break;
                    }
                }
                Err(_) if listening => break,
                Err(_) => return Err("the server did not start".into()),
            }
        }
        Ok((server, key))
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn database(data_dir: &Path) -> PathBuf {
    data_dir.join("tether.db")
}

// ------------------------------------------------------------ page helpers

pub async fn js(client: &Client, script: &str, args: Vec<Value>) -> Result<Value, BoxError> {
    Ok(client.execute(script, args).await?)
}

pub async fn text(client: &Client, css: &str) -> Result<String, BoxError> {
    let value = js(
        client,
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';",
        vec![json!(css)],
    )
    .await?;
    Ok(value.as_str().unwrap_or_default().to_owned())
}

/// Waits until the element's text contains `needle`; returns the text.
pub async fn wait_for_text(client: &Client, css: &str, needle: &str) -> Result<String, BoxError> {
    let deadline = Instant::now() + WAIT;
    loop {
        let current = text(client, css).await?;
        if current.contains(needle) {
            return Ok(current);
        }
        if Instant::now() > deadline {
            return Err(format!("{css} never showed {needle:?}; it shows {current:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the element exists and is visible.
pub async fn wait_visible(client: &Client, css: &str) -> Result<(), BoxError> {
    let deadline = Instant::now() + WAIT;
    loop {
        let visible = js(
            client,
            "const e = document.querySelector(arguments[0]); \
             return !!e && e.offsetParent !== null;",
            vec![json!(css)],
        )
        .await?;
        if visible == json!(true) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{css} never became visible").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the element is rendered (exists and is not hidden).
pub async fn is_visible(client: &Client, css: &str) -> Result<bool, BoxError> {
    let visible = js(
        client,
        "const e = document.querySelector(arguments[0]); return !!e && e.offsetParent !== null;",
        vec![json!(css)],
    )
    .await?;
    Ok(visible == json!(true))
}

/// Types `value` into the field (emptied first).
pub async fn fill(client: &Client, css: &str, value: &str) -> Result<(), BoxError> {
    on_fresh_element(client, css, |field| async move {
        field.clear().await?;
        field.send_keys(value).await
    })
    .await
}

/// Clicks the element.
pub async fn click(client: &Client, css: &str) -> Result<(), BoxError> {
    on_fresh_element(client, css, |element| async move { element.click().await }).await
}

/// Finds the element and does `act` on it; again on the element found
/// anew while the page re-renders under it (a list redrawn when a status
/// arrives replaces its buttons: the one found is stale) or has not made
/// it usable yet (not interactable), until [`WAIT`].
async fn on_fresh_element<F, Fut>(client: &Client, css: &str, act: F) -> Result<(), BoxError>
where
    F: Fn(tether_browser_test::fantoccini::elements::Element) -> Fut,
    Fut:
        core::future::Future<Output = Result<(), tether_browser_test::fantoccini::error::CmdError>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        let error = match client.find(Locator::Css(css)).await {
            Ok(element) => match act(element).await {
                Ok(()) => return Ok(()),
                Err(error) => error,
            },
            Err(error) => error,
        };
        let redrawn = error.is_stale_element_reference()
            || error.is_element_not_interactable()
            || error.is_no_such_element();
        if !redrawn || Instant::now() > deadline {
            return Err(format!("{css}: {error}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many CSS pixels the page is wider than the window (0 or less: no
/// horizontal scrolling).
pub async fn horizontal_overflow(client: &Client) -> Result<i64, BoxError> {
    let overflow = js(
        client,
        "const root = document.documentElement; \
         return Math.max(root.scrollWidth, document.body.scrollWidth) - root.clientWidth;",
        vec![],
    )
    .await?;
    overflow
        .as_i64()
        .ok_or_else(|| format!("overflow is {overflow}").into())
}

/// Waits until the input's value is `expected`.
pub async fn wait_for_value(client: &Client, css: &str, expected: &str) -> Result<(), BoxError> {
    let deadline = Instant::now() + WAIT;
    loop {
        let value = js(
            client,
            "const e = document.querySelector(arguments[0]); return e ? e.value : null;",
            vec![json!(css)],
        )
        .await?;
        if value == json!(expected) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{css} never had the value {expected:?}; it has {value}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The ids of the form controls without a label (every one needs one).
pub async fn unlabelled_controls(client: &Client) -> Result<Value, BoxError> {
    js(
        client,
        "return [...document.querySelectorAll('input, select, textarea')]\
         .filter(e => e.labels.length === 0).map(e => e.id);",
        vec![],
    )
    .await
}
