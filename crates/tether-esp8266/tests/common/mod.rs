//! Shared set-up: the real tether-server in-process on loopback, a
//! simulated modem on an in-memory serial line, and the driver under test.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::std_instead_of_core,
    clippy::std_instead_of_alloc
)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use embedded_io_adapters::tokio_1::FromTokio;
use tether_esp8266_sim::{SimConfig, SimHandle};
use tether_server::{Config, Limits, Server};
use tokio::io::DuplexStream;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Serial = FromTokio<DuplexStream>;

pub const SSID: &str = "Home";
pub const PASSPHRASE: &str = "correct horse battery";

/// The device's end of a serial line whose other end is a simulated modem
/// that can see the network `Home`.
pub fn modem(config: SimConfig) -> (Serial, SimHandle) {
    let (device, modem) = tokio::io::duplex(8 * 1024);
    let config =
        config
            .with_network(SSID, PASSPHRASE, -48)
            .with_network("Neighbour", "secret-secret", -80);
    let handle = tether_esp8266_sim::spawn(config, modem);
    (FromTokio::new(device), handle)
}

/// A tether-server with its data in a temporary directory.
pub struct TestServer {
    pub server: Option<Server>,
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub key: String,
}

fn config(dir: PathBuf, addr: SocketAddr) -> Config {
    Config::new(dir, addr).with_limits(Limits {
        handshake_timeout: Duration::from_secs(5),
        publish_rate: 10_000,
        publish_burst: 10_000,
        ..Limits::default()
    })
}

impl TestServer {
    pub async fn start() -> Result<Self, BoxError> {
        let dir = tempfile::tempdir()?;
        let server = Server::start(config(dir.path().to_owned(), "127.0.0.1:0".parse()?)).await?;
        let key = server.first_start_key().ok_or("no key")?.to_owned();
        let addr = server.local_addr();
        Ok(Self {
            server: Some(server),
            dir,
            addr,
            key,
        })
    }

    /// Registers `id` and returns its token.
    pub fn add_device(&self, id: &str) -> Result<String, BoxError> {
        let server = self.server.as_ref().ok_or("stopped")?;
        let admin = tether_server::store::Admin::open(&server.database_path())?;
        let tenant = admin.tenant_id("default")?;
        Ok(admin.add_device(Some(tenant), Some(id), false)?.token)
    }

    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }

    /// Starts again on the same data directory and port.
    pub async fn restart(&mut self) -> Result<(), BoxError> {
        self.stop().await;
        let mut last = None;
        for _ in 0..50 {
            match Server::start(config(self.dir.path().to_owned(), self.addr)).await {
                Ok(server) => {
                    self.server = Some(server);
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("restart failed: {last:?}").into())
    }

    /// Every payload stored on `channel`, in order.
    pub async fn payloads(&self, channel: &str) -> Result<Vec<serde_json::Value>, BoxError> {
        let url = format!(
            "http://{}/v1/messages?channel={channel}&limit=1000",
            self.addr
        );
        let key = self.key.clone();
        let body: serde_json::Value = tokio::task::spawn_blocking(move || {
            ureq::get(&url)
                .header("Authorization", &format!("Bearer {key}"))
                .call()
                .map_err(|e| e.to_string())?
                .body_mut()
                .read_json::<serde_json::Value>()
                .map_err(|e| e.to_string())
        })
        .await??;
        let messages = body["messages"].as_array().ok_or("no messages")?;
        Ok(messages
            .iter()
            .map(|m| {
                let payload = &m["payload"];
                match payload.as_str() {
                    Some(text) => serde_json::from_str(text).unwrap_or(payload.clone()),
                    None => payload.clone(),
                }
            })
            .collect())
    }

    /// Sends a command over HTTP and waits for the device's answer.
    pub async fn command(
        &self,
        device: &str,
        channel: &str,
        payload: serde_json::Value,
    ) -> Result<serde_json::Value, BoxError> {
        let url = format!("http://{}/v1/devices/{device}/commands", self.addr);
        let key = self.key.clone();
        let body = serde_json::json!({"channel": channel, "payload": payload});
        let answer = tokio::task::spawn_blocking(move || {
            ureq::post(&url)
                .header("Authorization", &format!("Bearer {key}"))
                .send_json(&body)
                .map_err(|e| e.to_string())?
                .body_mut()
                .read_json::<serde_json::Value>()
                .map_err(|e| e.to_string())
        })
        .await??;
        Ok(answer)
    }
}

/// Polls `check` every 20 ms until it holds or `timeout` passes.
pub async fn wait_for(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

/// Bounds a test's running time: if the guard is still alive after
/// `limit`, the whole test binary aborts with the test's name, so a hang
/// fails `cargo xtask test` in bounded time instead of stalling it. A
/// thread of its own watches, so a runtime thread that blocks (where a
/// `tokio::time::timeout` would never fire) is caught too.
#[must_use = "the limit holds while the guard lives"]
pub fn time_limit(name: &'static str, limit: Duration) -> TimeLimit {
    let (disarm, armed) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = armed.recv_timeout(limit) {
            eprintln!("test {name} still running after {limit:?}: aborting the test binary");
            std::process::abort();
        }
    });
    TimeLimit { _disarm: disarm }
}

/// See [`time_limit`]; dropping it (the test ended, passed or panicked)
/// disarms the watchdog.
pub struct TimeLimit {
    _disarm: std::sync::mpsc::Sender<()>,
}
