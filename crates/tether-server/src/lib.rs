//! The tether relay server: devices dial in over WebSockets, the server
//! stores what they publish durably (SQLite by default) and forwards it on
//! channels to receivers (browsers, scripts), which can send commands back.
//!
//! ```text
//!  devices ──wss /v1/device──▶ device_endpoint ──append──▶ Store (SQLite, WAL,
//!  (postcard or JSON frames)     ▲ Ack after commit          batched writer thread)
//!                                │ Command                      │ on commit, in order
//!                                │                              ▼
//!  receivers ◀─wss /v1/receiver─ receiver_endpoint ◀──────── Broker (bounded live
//!  (JSON)      history, then live   (gap-free hand-over)       queue per channel)
//!  scripts ◀──── HTTP /v1/… ───── http_api (devices, channels, messages, commands, claim),
//!                                 readings_api (descriptions, series, export)
//! ```
//!
//! Modules, top down: `serve` (accept loop, per-address limit) → `router`
//! → the endpoints (`device_endpoint`, `receiver_endpoint`, `http_api`,
//! `readings_api`, `accounts` (sign-in, accounts, people), `dashboard`) →
//! what they share (`commands`, `http_util`, `accounts::session` (the
//! session cookie and CSRF), `websocket`, `admission`, `sessions`,
//! [`limits`], [`auth`]) → [`store`], [`broker`], [`metrics`], [`config`].
//!
//! # Example
//!
//! Start a server on an ephemeral loopback port with its database in a
//! temporary directory, register a device and read its status page:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use tether_server::{Config, Server};
//!
//! let dir = tempfile::tempdir()?;
//! let config = Config::new(dir.path().to_owned(), "127.0.0.1:0".parse()?);
//! let server = Server::start(config).await?;
//! // On first start the server creates tenant `default` and a receiver key.
//! let key = server.first_start_key().expect("fresh data directory");
//! assert!(key.starts_with("tk_"));
//!
//! let admin = tether_server::store::Admin::open(&server.database_path())?;
//! let tenant = admin.tenant_id("default")?;
//! let device = admin.add_device(Some(tenant), Some("kitchen-1"), false)?;
//! assert!(device.token.starts_with("td_"));
//!
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! See the crate's `README.md` for the wire endpoints, authentication and
//! the limits with their close codes.

// A server is std by nature: the workspace's `std_instead_of_core/alloc`
// lints keep the no_std crates honest and do not apply here.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]
// axum handlers return `Response` as their error; boxing it buys nothing.
#![allow(clippy::result_large_err)]

// The layers, top down, are in the crate docs above: no module imports
// from one above it.
pub mod accounts;
mod admission;
pub mod auth;
pub mod broker;
pub mod cli;
pub mod cluster;
mod commands;
pub mod config;
mod dashboard;
pub mod demo;
mod device_endpoint;
mod device_readings;
mod http_api;
mod http_util;
pub mod limits;
pub mod metrics;
mod readings_api;
mod receiver_endpoint;
mod router;
mod serve;
mod sessions;
pub mod store;
mod tls;
mod websocket;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast, watch};

pub use config::{Config, Limits, Settings, TlsFiles};
pub use sessions::{CommandReply, DeviceSessions};

use broker::{Broker, InProcessBroker};
use metrics::Metrics;
use store::{
    Admin, AdminStore, ChannelFilter, PgAdmin, PgStore, Revocation, SqliteStore, Store, StoreError,
    StoreOptions,
};

/// Wraps the store a server's endpoints use (see
/// [`Server::start_with_store_layer`]).
pub type StoreLayer = Box<dyn FnOnce(Arc<dyn Store>) -> Arc<dyn Store> + Send>;

/// Wrong claim codes one receiver key may try per minute before claims
/// answer `rate_limited` (429): claim codes are short enough to be typed.
pub const CLAIM_FAILURES_PER_MINUTE: u32 = 10;

/// How often every node reads the database's revocation log.
pub const REVOCATION_POLL: Duration = Duration::from_millis(250);

/// The promise of revocation (`docs/deploy.md`): once `key revoke` or
/// `device revoke` has committed — on any host, to the one database of a
/// cluster — new connections with that key or token are refused at once
/// (authentication reads the database), and every node closes the
/// connections already open within this bound: one [`REVOCATION_POLL`],
/// the read, and the close frame. It does not depend on NATS.
pub const REVOCATION_BOUND: Duration = Duration::from_secs(1);

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

/// Everything the endpoints share.
pub(crate) struct AppState {
    pub(crate) config: Config,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) devices: Arc<DeviceSessions>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) revocations: broadcast::Sender<Revocation>,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) admission: admission::Admission,
    pub(crate) publish_buckets: limits::PublishBuckets,
    pub(crate) claim_guard: limits::AttemptGuard<limits::ClaimSubject>,
    pub(crate) accounts: accounts::Accounts,
    next_session: AtomicU64,
    /// Set before `shutdown` when the node drains (SIGTERM).
    draining: AtomicBool,
}

impl AppState {
    pub(crate) fn next_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// How a connection closes when the server stops: draining, close code
    /// 4017 with a reconnect delay (at random within `drain_spread`, so the
    /// clients do not all come back at once) in the reason; otherwise 1001.
    pub(crate) fn stop_close(&self) -> (u16, String) {
        if !self.draining.load(Ordering::Relaxed) {
            return (
                websocket::CLOSE_GOING_AWAY,
                "server shutting down".to_owned(),
            );
        }
        let spread = u64::try_from(self.config.drain.spread.as_millis()).unwrap_or(u64::MAX);
        let delay =
            rand::random_range(0..=spread.min(u64::from(tether_proto::MAX_RECONNECT_HINT_MS)));
        let code = tether_proto::ErrorCode::DRAINING
            .close_code()
            .unwrap_or(websocket::CLOSE_GOING_AWAY);
        (
            code,
            format!("{delay} draining: reconnect, to another node if there is one"),
        )
    }
}

/// This host's name, for the default node name.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Why the server could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// The data directory or listen socket failed.
    Io(std::io::Error),
    /// The database failed.
    Store(StoreError),
    /// The TLS files are unusable.
    Tls(String),
    /// The NATS URL is unusable.
    Nats(String),
}

impl core::fmt::Display for StartError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StartError::Io(error) => write!(f, "{error}"),
            StartError::Store(error) => write!(f, "{error}"),
            StartError::Tls(error) => write!(f, "TLS: {error}"),
            StartError::Nats(error) => write!(f, "NATS: {error}"),
        }
    }
}

impl std::error::Error for StartError {}

impl From<std::io::Error> for StartError {
    fn from(error: std::io::Error) -> Self {
        StartError::Io(error)
    }
}

impl From<StoreError> for StartError {
    fn from(error: StoreError) -> Self {
        StartError::Store(error)
    }
}

/// A running server.
pub struct Server {
    local_addr: std::net::SocketAddr,
    base_url: String,
    database_path: PathBuf,
    first_start_key: Option<String>,
    shutdown: watch::Sender<bool>,
    tasks: tokio::task::JoinSet<()>,
    store: Arc<dyn Store>,
    state: Arc<AppState>,
    node: String,
}

impl core::fmt::Debug for Server {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl core::fmt::Debug for AppState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

impl Server {
    /// Opens (creating) the database in `config.data_dir`, binds
    /// `config.listen` and starts serving. On a fresh database it creates
    /// tenant `default` with a read+command receiver key
    /// ([`first_start_key`](Self::first_start_key)).
    pub async fn start(config: Config) -> Result<Server, StartError> {
        Self::start_with_store_layer(config, Box::new(|store| store)).await
    }

    /// Like [`start`](Self::start), with the store the endpoints use
    /// wrapped by `layer` (instrumentation, or a test's fault injection
    /// around the real store). The server still opens, resets and closes
    /// the real store itself.
    pub async fn start_with_store_layer(
        config: Config,
        layer: StoreLayer,
    ) -> Result<Server, StartError> {
        let database_path = config.database_path();
        let tls = match &config.tls {
            Some(files) => Some(tls::ReloadingTls::load(files.clone()).map_err(StartError::Tls)?),
            None => None,
        };
        // Bound first: the default node name has the port.
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let local_addr = listener.local_addr()?;
        let node = config
            .node_name
            .clone()
            .unwrap_or_else(|| format!("{}:{}", hostname(), local_addr.port()));
        let first_start_key = first_start(&config).await?;
        let metrics = Arc::new(Metrics::new());
        let devices = Arc::new(DeviceSessions::new(config.limits.max_commands_per_tenant));
        let broker: Arc<dyn Broker> = match &config.nats_url {
            Some(url) => Arc::new(
                cluster::NatsBroker::connect(
                    url,
                    &node,
                    config.limits.live_queue,
                    config.limits.max_channels_per_tenant,
                    Arc::clone(&devices) as Arc<dyn broker::LocalDevices>,
                )
                .await
                .map_err(|error| StartError::Nats(error.to_string()))?,
            ),
            None => Arc::new(InProcessBroker::new(
                config.limits.live_queue,
                config.limits.max_channels_per_tenant,
            )),
        };
        let options = {
            let broker = Arc::clone(&broker);
            let commit_metrics = Arc::clone(&metrics);
            StoreOptions {
                on_commit: Box::new(move |events| broker.publish(events)),
                on_transaction: Box::new(move |stats| commit_metrics.transaction(stats)),
                queue_capacity: config.write_queue,
                retention_max_age: config.retention_max_age,
                retention_max_messages: config.retention_max_messages,
                ..StoreOptions::default()
            }
        };
        let store: Arc<dyn Store> = match &config.database_url {
            Some(url) => Arc::new(PgStore::connect(url, &node, options).await?),
            None => Arc::new(SqliteStore::open(&database_path, options)?),
        };
        store.reset_presence().await?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (revocations, _) = broadcast::channel(256);
        let mut config = config;
        config.listen = local_addr;
        let base_url = config.base_url();
        let store_dyn: Arc<dyn Store> = layer(store.clone());
        let state = Arc::new(AppState {
            admission: admission::Admission::new(&config.limits),
            publish_buckets: limits::PublishBuckets::new(
                config.limits.publish_rate,
                config.limits.publish_burst,
            ),
            devices,
            claim_guard: limits::AttemptGuard::new(
                CLAIM_FAILURES_PER_MINUTE,
                Duration::from_secs(60),
            ),
            accounts: accounts::Accounts::new(config.password_cost),
            config,
            store: store_dyn,
            broker,
            metrics,
            revocations,
            shutdown: shutdown_rx,
            next_session: AtomicU64::new(1),
            draining: AtomicBool::new(false),
        });
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(serve::accept_loop(
            Arc::clone(&state),
            listener,
            tls.clone(),
        ));
        if let Some(tls) = tls {
            tasks.spawn(tls.watch(state.shutdown.clone()));
        }
        tasks.spawn(revocation_poller(Arc::clone(&state)));
        tasks.spawn(retention_task(Arc::clone(&state)));
        tasks.spawn(rollup_task(Arc::clone(&state)));
        tracing::info!(%local_addr, url = %base_url, %node, "tether-server listening");
        Ok(Server {
            local_addr,
            base_url,
            database_path,
            first_start_key,
            shutdown,
            tasks,
            store,
            state,
            node,
        })
    }

    /// This node's name (its devices' sessions are recorded under it).
    pub fn node_name(&self) -> &str {
        &self.node
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.local_addr
    }

    /// The dashboard URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The database file.
    pub fn database_path(&self) -> PathBuf {
        self.database_path.clone()
    }

    /// The receiver key created on first start (shown once), if this start
    /// created the database.
    pub fn first_start_key(&self) -> Option<&str> {
        self.first_start_key.as_deref()
    }

    /// Open (authenticated) device and receiver connections.
    pub fn open_connections(&self) -> usize {
        self.state.admission.open()
    }

    /// Resolves when a shutdown is requested through another handle
    /// (never, unless [`shutdown`](Self::shutdown) runs).
    pub fn shutdown_requested(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Graceful shutdown: stop accepting, close every client with 1001,
    /// flush the database writer.
    pub async fn shutdown(self) {
        tracing::info!("shutting down");
        self.stop(Duration::from_secs(5)).await;
    }

    /// Draining (what SIGTERM does): stop accepting (a load balancer's
    /// health check then fails and it sends new connections elsewhere),
    /// close every client with 4017 (`draining`) and a reconnect delay
    /// spread over `drain_spread`, after acknowledging what is committed;
    /// wait up to `drain_timeout` for them to leave, then flush the
    /// database writer and stop.
    pub async fn drain(self) {
        tracing::info!(node = %self.node, "draining: clients reconnect elsewhere");
        self.state.draining.store(true, Ordering::Relaxed);
        let timeout = self.state.config.drain.timeout;
        self.stop(timeout).await;
    }

    async fn stop(mut self, wait: Duration) {
        let _ = self.shutdown.send(true);
        // Connections close themselves on the signal; give them a moment
        // to send their close frames and record presence.
        let deadline = tokio::time::Instant::now() + wait;
        while self.open_connections() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if self.open_connections() > 0 {
            tracing::warn!(
                open = self.open_connections(),
                "stopping with clients still connected"
            );
        }
        self.tasks.shutdown().await;
        self.store.close().await;
        tracing::info!("stopped");
    }
}

/// The administration of the configured database (PostgreSQL, or the
/// SQLite file in the data directory, created with the directory).
pub async fn open_admin(config: &Config) -> Result<Box<dyn AdminStore>, StoreError> {
    match &config.database_url {
        Some(url) => Ok(Box::new(PgAdmin::connect(url).await?)),
        None => {
            std::fs::create_dir_all(&config.data_dir)
                .map_err(|error| StoreError::Database(error.to_string()))?;
            Ok(Box::new(Admin::open(&config.database_path())?))
        }
    }
}

/// On an empty database: tenant `default` and a read+command key for it
/// (the key is returned, to be shown once). Nodes of a cluster that start
/// together on a new database make it once: the others see the tenant.
async fn first_start(config: &Config) -> Result<Option<String>, StartError> {
    let admin = open_admin(config).await?;
    if admin.has_tenants().await? {
        return Ok(None);
    }
    let tenant = match admin.add_tenant("default").await {
        Ok(tenant) => tenant,
        // Another node made it meanwhile.
        Err(StoreError::AlreadyExists) => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    Ok(Some(
        admin
            .add_key(tenant, &ChannelFilter::ALL, true, Some("first start"))
            .await?
            .key,
    ))
}

/// Polls the database for revocations (written by admin commands, possibly
/// in another process) and tells the connections.
async fn revocation_poller(state: Arc<AppState>) {
    let mut shutdown = state.shutdown.clone();
    // Everything revoked before this start is refused at authentication.
    let mut last = match state.store.revocations_since(0).await {
        Ok((_, last)) => last,
        Err(_) => 0,
    };
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            () = tokio::time::sleep(REVOCATION_POLL) => {}
        }
        match state.store.revocations_since(last).await {
            Ok((revocations, next)) => {
                last = next;
                for revocation in revocations {
                    tracing::info!(?revocation, "revoked: closing its connections");
                    let _ = state.revocations.send(revocation);
                }
            }
            Err(error) => tracing::warn!(%error, "cannot read revocations"),
        }
    }
}

async fn retention_task(state: Arc<AppState>) {
    let mut shutdown = state.shutdown.clone();
    let mut interval = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = interval.tick() => {}
        }
        match state.store.enforce_retention(now_ms()).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "retention removed old events"),
            Err(error) => tracing::warn!(%error, "retention failed"),
        }
    }
}

/// Keeps the rolled-up series close behind the events (series queries read
/// the events not rolled up yet themselves, so this only keeps them fast).
async fn rollup_task(state: Arc<AppState>) {
    let mut shutdown = state.shutdown.clone();
    let mut interval = tokio::time::interval(ROLLUP_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = interval.tick() => {}
        }
        if let Err(error) = state.store.roll_up().await {
            tracing::warn!(%error, "roll-up failed");
        }
    }
}

/// How often the server rolls up new events for series queries.
pub const ROLLUP_INTERVAL: Duration = Duration::from_secs(5);
