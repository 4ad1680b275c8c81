#![allow(
    clippy::std_instead_of_core,
    clippy::std_instead_of_alloc,
    reason = "a std crate: std paths are the natural ones here"
)]
//! The captive portal of `tether-core` over real sockets: an HTTP server
//! task (TCP) and a DNS responder task (UDP), both on tokio, sharing one
//! [`ConfigStore`].
//!
//! ```text
//!  phone / browser ──HTTP──▶ http_server ──▶ tether_core::provisioning::portal::Portal ──▶ store
//!  phone resolver  ──DNS───▶ dns_server  ──▶ tether_core::provisioning::dns::respond
//! ```
//!
//! The same core code runs on the device; here it serves tests and
//! demonstrations on loopback, and shows what a backend has to do: move
//! bytes, bound reads, pass in the scanned networks and the connection
//! status.
//!
//! ```
//! use std::io::{Read, Write};
//!
//! use tether_core::provisioning::store::MemoryStore;
//! use tether_host::portal::{PortalServer, PortalSettings};
//!
//! let runtime = tokio::runtime::Runtime::new()?;
//! let settings = PortalSettings::new("127.0.0.1:0".parse()?, "127.0.0.1:0".parse()?)
//!     .with_dns_answer([192, 168, 4, 1]);
//! let handle = runtime.block_on(PortalServer::start(settings, MemoryStore::new()))?;
//!
//! // A phone's connectivity probe is sent to the set-up page.
//! let mut stream = std::net::TcpStream::connect(handle.http_addr())?;
//! stream.write_all(b"GET /generate_204 HTTP/1.1\r\nHost: connectivitycheck.gstatic.com\r\n\r\n")?;
//! let mut response = String::new();
//! stream.read_to_string(&mut response)?;
//! assert!(response.starts_with("HTTP/1.1 302 Found"));
//! assert!(response.contains(&format!("Location: http://{}/", handle.http_addr())));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod dns_server;
mod esp32;
mod file_store;
mod http_server;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tether_core::provisioning::http::Limits;
use tether_core::provisioning::portal::{ConnectionStatus, PairingGuard};
use tether_core::provisioning::store::ConfigStore;
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

pub use esp32::{ESP32_PARTITION_OFFSET, ESP32_PARTITION_SIZE, esp32_partition_image};
pub use file_store::FileStore;

/// A scanned network, owned (the host has no radio: the caller supplies
/// the list, as a device backend would from its Wi-Fi scan).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedNetwork {
    /// Network name.
    pub ssid: String,
    /// Signal strength in dBm.
    pub rssi: i8,
    /// Whether a passphrase is needed.
    pub secured: bool,
}

/// Settings of a [`PortalServer`].
#[derive(Debug, Clone)]
pub struct PortalSettings {
    /// Where the HTTP server listens (port 0: any free port).
    pub http_bind: SocketAddr,
    /// Where the DNS responder listens (port 0: any free port).
    pub dns_bind: SocketAddr,
    /// The address every `A` query is answered with (the access point's
    /// address on a device). Defaults to the HTTP listener's IPv4 address.
    pub dns_answer: Option<Ipv4Addr>,
    /// Device name shown in the page title.
    pub device_name: String,
    /// Pairing code the form asks for.
    pub pairing_code: Option<String>,
    /// Server URL offered when the store is empty.
    pub default_server_url: String,
    /// Networks shown in the form.
    pub networks: Vec<ScannedNetwork>,
    /// Request size bounds.
    pub limits: Limits,
    /// A connection that sends nothing for this long is closed.
    pub read_timeout: Duration,
}

impl PortalSettings {
    /// Settings listening on the given addresses.
    pub fn new(http_bind: SocketAddr, dns_bind: SocketAddr) -> Self {
        Self {
            http_bind,
            dns_bind,
            dns_answer: None,
            device_name: "tether".to_owned(),
            pairing_code: None,
            default_server_url: String::new(),
            networks: Vec::new(),
            limits: Limits::default(),
            read_timeout: Duration::from_secs(10),
        }
    }

    /// Sets [`dns_answer`](Self::dns_answer).
    #[must_use]
    pub fn with_dns_answer(mut self, address: impl Into<Ipv4Addr>) -> Self {
        self.dns_answer = Some(address.into());
        self
    }

    /// Sets [`device_name`](Self::device_name).
    #[must_use]
    pub fn with_device_name(mut self, name: impl Into<String>) -> Self {
        self.device_name = name.into();
        self
    }

    /// Sets [`pairing_code`](Self::pairing_code).
    #[must_use]
    pub fn with_pairing_code(mut self, code: impl Into<String>) -> Self {
        self.pairing_code = Some(code.into());
        self
    }

    /// Sets [`default_server_url`](Self::default_server_url).
    #[must_use]
    pub fn with_default_server_url(mut self, url: impl Into<String>) -> Self {
        self.default_server_url = url.into();
        self
    }

    /// Sets [`networks`](Self::networks).
    #[must_use]
    pub fn with_networks(mut self, networks: Vec<ScannedNetwork>) -> Self {
        self.networks = networks;
        self
    }

    /// Sets [`limits`](Self::limits).
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
}

/// State shared by the server tasks and the handle.
#[derive(Debug)]
struct Shared<S> {
    store: Mutex<S>,
    status: Mutex<ConnectionStatus>,
    saves: Mutex<u64>,
    pairing: Mutex<PairingGuard>,
    started: Instant,
}

impl<S> Shared<S> {
    /// Milliseconds since the portal started: the clock the sans-IO
    /// pairing guard runs on.
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic in another task must not take the portal down with it.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts the portal's server tasks.
#[derive(Debug)]
pub struct PortalServer;

impl PortalServer {
    /// Binds both sockets and spawns the tasks on the current tokio runtime.
    pub async fn start<S>(settings: PortalSettings, store: S) -> std::io::Result<PortalHandle<S>>
    where
        S: ConfigStore + Send + 'static,
    {
        let listener = TcpListener::bind(settings.http_bind).await?;
        let udp = UdpSocket::bind(settings.dns_bind).await?;
        let http_addr = listener.local_addr()?;
        let dns_addr = udp.local_addr()?;
        let answer = settings.dns_answer.unwrap_or(match http_addr.ip() {
            std::net::IpAddr::V4(v4) => v4,
            std::net::IpAddr::V6(_) => Ipv4Addr::LOCALHOST,
        });
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
            status: Mutex::new(ConnectionStatus::WaitingForSettings),
            saves: Mutex::new(0),
            pairing: Mutex::new(PairingGuard::new()),
            started: Instant::now(),
        });
        let site = Arc::new(http_server::Site::new(&settings, http_addr));
        let http_task = tokio::spawn(http_server::serve(listener, site, Arc::clone(&shared)));
        let dns_task = tokio::spawn(dns_server::serve(udp, answer.octets()));
        log::info!("portal: http on {http_addr}, dns on {dns_addr} answering {answer}");
        Ok(PortalHandle {
            http_addr,
            dns_addr,
            shared,
            tasks: vec![http_task, dns_task],
        })
    }
}

/// A running portal; dropping it stops the server tasks.
#[derive(Debug)]
pub struct PortalHandle<S> {
    http_addr: SocketAddr,
    dns_addr: SocketAddr,
    shared: Arc<Shared<S>>,
    tasks: Vec<JoinHandle<()>>,
}

impl<S: ConfigStore> PortalHandle<S> {
    /// The HTTP server's address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The DNS responder's address.
    pub fn dns_addr(&self) -> SocketAddr {
        self.dns_addr
    }

    /// Runs `f` with the store (to inspect what the portal saved).
    pub fn with_store<T>(&self, f: impl FnOnce(&mut S) -> T) -> T {
        f(&mut lock(&self.shared.store))
    }

    /// Sets what the status page shows (a device backend feeds this from
    /// the provisioning state machine).
    pub fn set_status(&self, status: ConnectionStatus) {
        *lock(&self.shared.status) = status;
    }

    /// How many times the portal saved a record.
    pub fn saves(&self) -> u64 {
        *lock(&self.shared.saves)
    }
}

impl<S> Drop for PortalHandle<S> {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
