//! Configuration: flags > environment (`TETHER_*`) > TOML file > defaults.
//!
//! Every setting is one field of [`Settings`], which is at the same time the
//! clap argument group (a flag, and the environment variable clap reads when
//! the flag is absent) and the TOML file's table (same names, `_` instead of
//! `-`). [`Settings::or`] layers them; [`Config::resolve`] fills in the
//! defaults. The file is `--config`/`TETHER_CONFIG`, or else
//! `<data-dir>/tether.toml` when it exists.
//!
//! ```toml
//! listen = "0.0.0.0:443"
//! public_url = "https://relay.example.com"
//! tls_cert = "/etc/tether/fullchain.pem"
//! tls_key = "/etc/tether/privkey.pem"
//! allowed_origins = ["https://dashboard.example.com"]
//! publish_rate = 20
//! max_connections_per_ip = 100
//! retention_max_age_days = 30
//! # A node of a cluster (see docs/deploy.md):
//! # database = "postgres://tether@db.internal/tether"
//! # nats = "nats://nats-1.internal:4222,nats://nats-2.internal:4222"
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::accounts::password::PasswordCost;

/// Every server setting, each optional so sources can be layered.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Directory of the database (`tether.db`) and the optional `tether.toml`.
    #[arg(long, env = "TETHER_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Address and port to listen on.
    #[arg(long, env = "TETHER_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// The URL people and devices reach the server at (printed; default
    /// derived from `listen`).
    #[arg(long, env = "TETHER_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// TLS certificate chain (PEM); with `tls_key`, the server speaks
    /// HTTPS/WSS. Both files are re-read when they change.
    #[arg(long, env = "TETHER_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "TETHER_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Origins browsers may connect from besides the server's own
    /// (comma-separated; `*` allows any).
    #[arg(long, env = "TETHER_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,
    /// Maximum open WebSocket connections (devices + receivers).
    #[arg(long, env = "TETHER_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Maximum open TCP connections (HTTP and WebSocket) from one IP
    /// address; more are closed at once. 0: no limit (behind a reverse
    /// proxy every connection has the proxy's address).
    #[arg(long, env = "TETHER_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// Maximum open WebSocket connections (devices + receivers) of one
    /// tenant. 0: no limit besides `max_connections`.
    #[arg(long, env = "TETHER_MAX_CONNECTIONS_PER_TENANT")]
    pub max_connections_per_tenant: Option<usize>,
    /// Receiver WebSockets opened without a key that have not sent their
    /// `auth` message yet; they never count against `max_connections`.
    #[arg(long, env = "TETHER_MAX_UNAUTHENTICATED_CONNECTIONS")]
    pub max_unauthenticated_connections: Option<usize>,
    /// Maximum WebSocket message (and frame) size in bytes; also the
    /// largest HTTP request body.
    #[arg(long, env = "TETHER_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<usize>,
    /// Time a client has for the TLS and HTTP handshake, an HTTP request
    /// body, and the first message (`Hello`, or a receiver's `auth`), in
    /// milliseconds.
    #[arg(long, env = "TETHER_HANDSHAKE_TIMEOUT_MS")]
    pub handshake_timeout_ms: Option<u64>,
    /// Time a peer has to take each WebSocket frame the server writes, in
    /// milliseconds; a peer that does not read is closed with 4016
    /// (`slow_consumer`).
    #[arg(long, env = "TETHER_WRITE_TIMEOUT_MS")]
    pub write_timeout_ms: Option<u64>,
    /// Interval of WebSocket pings, in milliseconds.
    #[arg(long, env = "TETHER_PING_INTERVAL_MS")]
    pub ping_interval_ms: Option<u64>,
    /// A connection silent (not even a pong) this long is closed, in ms.
    #[arg(long, env = "TETHER_IDLE_TIMEOUT_MS")]
    pub idle_timeout_ms: Option<u64>,
    /// Publishes per second one device may sustain.
    #[arg(long, env = "TETHER_PUBLISH_RATE")]
    pub publish_rate: Option<u32>,
    /// Publishes a device may send in a burst above the rate.
    #[arg(long, env = "TETHER_PUBLISH_BURST")]
    pub publish_burst: Option<u32>,
    /// `Welcome.max_in_flight`: unacknowledged publishes a device may have.
    #[arg(long, env = "TETHER_MAX_IN_FLIGHT")]
    pub max_in_flight: Option<u16>,
    /// Events per channel held for live delivery; a receiver further behind
    /// catches up from the database.
    #[arg(long, env = "TETHER_LIVE_QUEUE")]
    pub live_queue: Option<usize>,
    /// Writes the database queue holds before devices are slowed down.
    #[arg(long, env = "TETHER_WRITE_QUEUE")]
    pub write_queue: Option<usize>,
    /// Channels of one tenant with live subscribers at once; a subscribe
    /// that would open one more gets `rate_limited`.
    #[arg(long, env = "TETHER_MAX_CHANNELS_PER_TENANT")]
    pub max_channels_per_tenant: Option<usize>,
    /// How long a command waits to be queued to the device and for its
    /// answer, in milliseconds.
    #[arg(long, env = "TETHER_COMMAND_TIMEOUT_MS")]
    pub command_timeout_ms: Option<u64>,
    /// Commands one receiver connection may have waiting for their answer.
    #[arg(long, env = "TETHER_MAX_COMMANDS_PER_CONNECTION")]
    pub max_commands_per_connection: Option<usize>,
    /// Commands one tenant may have waiting for their answer (HTTP and
    /// WebSocket together).
    #[arg(long, env = "TETHER_MAX_COMMANDS_PER_TENANT")]
    pub max_commands_per_tenant: Option<usize>,
    /// Default retention: delete events older than this many days.
    #[arg(long, env = "TETHER_RETENTION_MAX_AGE_DAYS")]
    pub retention_max_age_days: Option<u64>,
    /// Default retention: keep at most this many events per channel.
    #[arg(long, env = "TETHER_RETENTION_MAX_MESSAGES")]
    pub retention_max_messages: Option<u64>,
    /// Log filter (`tracing_subscriber` `EnvFilter` syntax, e.g. `info` or
    /// `tether_server=debug`).
    #[arg(long, env = "TETHER_LOG")]
    pub log: Option<String>,
    /// The database: `postgres://user@host:port/database` to share one
    /// PostgreSQL database between the nodes of a cluster (default: the
    /// SQLite file `tether.db` in the data directory). Administration
    /// commands use it too.
    #[arg(long, env = "TETHER_DATABASE", global = true)]
    pub database: Option<String>,
    /// NATS server(s) the nodes of a cluster exchange live events,
    /// sessions and commands through (`nats://host:4222`, comma-separated
    /// for several); needs `database` on PostgreSQL.
    #[arg(long, env = "TETHER_NATS")]
    pub nats: Option<String>,
    /// This node's name in the cluster, unique per node and the same after
    /// a restart (default: `<hostname>:<listen port>`).
    #[arg(long, env = "TETHER_NODE_NAME")]
    pub node_name: Option<String>,
    /// On SIGTERM, how long the node waits for its clients to leave after
    /// telling them to reconnect elsewhere (close code 4017), in ms.
    #[arg(long, env = "TETHER_DRAIN_TIMEOUT_MS")]
    pub drain_timeout_ms: Option<u64>,
    /// The reconnect delays suggested to clients when draining are spread
    /// at random over this many milliseconds.
    #[arg(long, env = "TETHER_DRAIN_SPREAD_MS")]
    pub drain_spread_ms: Option<u64>,
}

macro_rules! layer {
    ($high:expr, $low:expr, [$($field:ident),+ $(,)?]) => {
        Settings { $($field: $high.$field.or($low.$field)),+ }
    };
}

impl Settings {
    /// `self`, with every unset field taken from `lower`.
    pub fn or(self, lower: Settings) -> Settings {
        layer!(
            self,
            lower,
            [
                data_dir,
                listen,
                public_url,
                tls_cert,
                tls_key,
                allowed_origins,
                max_connections,
                max_connections_per_ip,
                max_connections_per_tenant,
                max_unauthenticated_connections,
                max_message_bytes,
                handshake_timeout_ms,
                write_timeout_ms,
                ping_interval_ms,
                idle_timeout_ms,
                publish_rate,
                publish_burst,
                max_in_flight,
                live_queue,
                write_queue,
                max_channels_per_tenant,
                command_timeout_ms,
                max_commands_per_connection,
                max_commands_per_tenant,
                retention_max_age_days,
                retention_max_messages,
                log,
                database,
                nats,
                node_name,
                drain_timeout_ms,
                drain_spread_ms,
            ]
        )
    }

    /// Reads a TOML file of settings.
    pub fn from_file(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| ConfigError::Read(path.to_owned(), error.to_string()))?;
        toml::from_str(&text)
            .map_err(|error| ConfigError::Parse(path.to_owned(), error.to_string()))
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    Read(PathBuf, String),
    /// The file is not valid TOML settings.
    Parse(PathBuf, String),
    /// A value is out of range.
    Invalid(&'static str),
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ConfigError::Read(path, error) => write!(f, "cannot read {}: {error}", path.display()),
            ConfigError::Parse(path, error) => write!(f, "{}: {error}", path.display()),
            ConfigError::Invalid(what) => write!(f, "invalid setting: {what}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// TLS files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
}

/// The resolved configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Listen address.
    pub listen: SocketAddr,
    /// Public URL (no trailing slash).
    pub public_url: Option<String>,
    /// TLS, if configured.
    pub tls: Option<TlsFiles>,
    /// Extra allowed browser origins.
    pub allowed_origins: Vec<String>,
    /// Connection and message limits.
    pub limits: Limits,
    /// Default retention: maximum age.
    pub retention_max_age: Option<Duration>,
    /// Default retention: events per channel.
    pub retention_max_messages: Option<u64>,
    /// Write queue capacity.
    pub write_queue: usize,
    /// Log filter.
    pub log: String,
    /// A PostgreSQL URL; `None`: the SQLite file in the data directory.
    pub database_url: Option<String>,
    /// NATS URL(s) of a cluster; `None`: a single node.
    pub nats_url: Option<String>,
    /// This node's name (`None`: `<hostname>:<listen port>`).
    pub node_name: Option<String>,
    /// How a node drains on SIGTERM.
    pub drain: Drain,
    /// The cost of new password hashes: always
    /// [`PasswordCost::STANDARD`] from a configuration file; tests that
    /// make many accounts set [`PasswordCost::TESTS_ONLY`].
    pub password_cost: PasswordCost,
}

/// How a node drains on SIGTERM (see `Server::drain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drain {
    /// How long it waits for clients to leave.
    pub timeout: Duration,
    /// Suggested reconnect delays are spread over this.
    pub spread: Duration,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            timeout: Duration::from_secs(20),
            spread: Duration::from_secs(1),
        }
    }
}

/// Connection and message limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Maximum open WebSocket connections.
    pub max_connections: usize,
    /// Maximum open TCP connections from one IP address (`None`: no limit).
    pub max_connections_per_ip: Option<usize>,
    /// Maximum open WebSocket connections of one tenant (`None`: only
    /// `max_connections`).
    pub max_connections_per_tenant: Option<usize>,
    /// Receiver WebSockets waiting for their `auth` message.
    pub max_unauthenticated_connections: usize,
    /// Maximum message and frame size in bytes, and HTTP request body size.
    pub max_message_bytes: usize,
    /// Handshake (TLS, HTTP headers and body, first message) timeout.
    pub handshake_timeout: Duration,
    /// Time a peer has to take each frame the server writes.
    pub write_timeout: Duration,
    /// Ping interval.
    pub ping_interval: Duration,
    /// Idle timeout.
    pub idle_timeout: Duration,
    /// Sustained publishes per second per device.
    pub publish_rate: u32,
    /// Publish burst per device.
    pub publish_burst: u32,
    /// `Welcome.max_in_flight`.
    pub max_in_flight: u16,
    /// Live queue per channel.
    pub live_queue: usize,
    /// Channels with live subscribers per tenant.
    pub max_channels_per_tenant: usize,
    /// Command queueing and answer timeout.
    pub command_timeout: Duration,
    /// Commands waiting for their answer per receiver connection.
    pub max_commands_per_connection: usize,
    /// Commands waiting for their answer per tenant.
    pub max_commands_per_tenant: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            max_connections_per_ip: Some(1_000),
            max_connections_per_tenant: None,
            max_unauthenticated_connections: 256,
            max_message_bytes: 16 * 1024,
            handshake_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            publish_rate: 50,
            publish_burst: 500,
            max_in_flight: 32,
            live_queue: 1024,
            max_channels_per_tenant: 1024,
            command_timeout: Duration::from_secs(10),
            max_commands_per_connection: 16,
            max_commands_per_tenant: 256,
        }
    }
}

/// The data directory when none is configured.
pub const DEFAULT_DATA_DIR: &str = "tether-data";
/// The listen address when none is configured.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

impl Config {
    /// Layers flags and environment (`cli`, already merged by clap) over
    /// the file over the defaults.
    pub fn load(cli: Settings, config_file: Option<&Path>) -> Result<Config, ConfigError> {
        let data_dir_hint = cli
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let file = match config_file {
            Some(path) => Settings::from_file(path)?,
            None => {
                let default = data_dir_hint.join("tether.toml");
                if default.exists() {
                    Settings::from_file(&default)?
                } else {
                    Settings::default()
                }
            }
        };
        Config::resolve(cli.or(file))
    }

    /// Fills in the defaults.
    pub fn resolve(settings: Settings) -> Result<Config, ConfigError> {
        let defaults = Limits::default();
        let ms =
            |value: Option<u64>, default: Duration| value.map_or(default, Duration::from_millis);
        // 0 turns an optional limit off.
        let optional = |value: Option<usize>, default: Option<usize>| match value {
            Some(0) => None,
            Some(limit) => Some(limit),
            None => default,
        };
        let limits = Limits {
            max_connections: settings.max_connections.unwrap_or(defaults.max_connections),
            max_connections_per_ip: optional(
                settings.max_connections_per_ip,
                defaults.max_connections_per_ip,
            ),
            max_connections_per_tenant: optional(
                settings.max_connections_per_tenant,
                defaults.max_connections_per_tenant,
            ),
            max_unauthenticated_connections: settings
                .max_unauthenticated_connections
                .unwrap_or(defaults.max_unauthenticated_connections),
            max_message_bytes: settings
                .max_message_bytes
                .unwrap_or(defaults.max_message_bytes),
            handshake_timeout: ms(settings.handshake_timeout_ms, defaults.handshake_timeout),
            write_timeout: ms(settings.write_timeout_ms, defaults.write_timeout),
            ping_interval: ms(settings.ping_interval_ms, defaults.ping_interval),
            idle_timeout: ms(settings.idle_timeout_ms, defaults.idle_timeout),
            publish_rate: settings.publish_rate.unwrap_or(defaults.publish_rate),
            publish_burst: settings.publish_burst.unwrap_or(defaults.publish_burst),
            max_in_flight: settings.max_in_flight.unwrap_or(defaults.max_in_flight),
            live_queue: settings.live_queue.unwrap_or(defaults.live_queue),
            max_channels_per_tenant: settings
                .max_channels_per_tenant
                .unwrap_or(defaults.max_channels_per_tenant),
            command_timeout: ms(settings.command_timeout_ms, defaults.command_timeout),
            max_commands_per_connection: settings
                .max_commands_per_connection
                .unwrap_or(defaults.max_commands_per_connection),
            max_commands_per_tenant: settings
                .max_commands_per_tenant
                .unwrap_or(defaults.max_commands_per_tenant),
        };
        if limits.write_timeout.is_zero() {
            return Err(ConfigError::Invalid("write_timeout_ms must be at least 1"));
        }
        if limits.max_in_flight == 0 {
            return Err(ConfigError::Invalid("max_in_flight must be at least 1"));
        }
        if limits.max_message_bytes < tether_proto::MAX_DEVICE_TO_SERVER_LEN {
            return Err(ConfigError::Invalid(
                "max_message_bytes must hold the largest protocol message (4181 bytes)",
            ));
        }
        let database_url = settings.database.filter(|url| !url.is_empty());
        if let Some(url) = &database_url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err(ConfigError::Invalid(
                "database must be a postgres:// URL (leave it out for the SQLite file)",
            ));
        }
        let nats_url = settings.nats.filter(|url| !url.is_empty());
        if let Some(urls) = &nats_url
            && crate::cluster::server_addrs(urls).is_err()
        {
            return Err(ConfigError::Invalid(
                "nats must be nats://host:port, or several separated by commas",
            ));
        }
        if nats_url.is_some() && database_url.is_none() {
            return Err(ConfigError::Invalid(
                "nats needs database = \"postgres://…\": the nodes of a cluster share one database",
            ));
        }
        let drain_defaults = Drain::default();
        let drain = Drain {
            timeout: ms(settings.drain_timeout_ms, drain_defaults.timeout),
            spread: ms(settings.drain_spread_ms, drain_defaults.spread),
        };
        let tls = match (settings.tls_cert, settings.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => return Err(ConfigError::Invalid("tls_cert and tls_key go together")),
        };
        Ok(Config {
            data_dir: settings
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            listen: match settings.listen {
                Some(listen) => listen,
                None => DEFAULT_LISTEN
                    .parse()
                    .map_err(|_| ConfigError::Invalid("listen"))?,
            },
            public_url: settings
                .public_url
                .map(|url| url.trim_end_matches('/').to_owned()),
            tls,
            allowed_origins: settings.allowed_origins.unwrap_or_default(),
            limits,
            retention_max_age: settings
                .retention_max_age_days
                .map(|days| Duration::from_secs(days.saturating_mul(86_400))),
            retention_max_messages: settings.retention_max_messages,
            write_queue: settings.write_queue.unwrap_or(4096).max(1),
            log: settings.log.unwrap_or_else(|| "info".to_owned()),
            database_url,
            nats_url,
            node_name: settings.node_name.filter(|name| !name.is_empty()),
            drain,
            password_cost: PasswordCost::STANDARD,
        })
    }

    /// A configuration for `data_dir` and `listen` with every default.
    pub fn new(data_dir: PathBuf, listen: SocketAddr) -> Config {
        let settings = Settings {
            data_dir: Some(data_dir),
            listen: Some(listen),
            ..Settings::default()
        };
        // Defaults are valid by construction.
        Config::resolve(settings).unwrap_or_else(|_| unreachable!("defaults are valid"))
    }

    /// Sets the limits (builder-lite).
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Config {
        self.limits = limits;
        self
    }

    /// Sets the cost of new password hashes (builder-lite).
    #[must_use]
    pub fn with_password_cost(mut self, cost: PasswordCost) -> Config {
        self.password_cost = cost;
        self
    }

    /// Sets the extra allowed origins (builder-lite).
    #[must_use]
    pub fn with_allowed_origins(mut self, origins: Vec<String>) -> Config {
        self.allowed_origins = origins;
        self
    }

    /// Sets TLS files (builder-lite).
    #[must_use]
    pub fn with_tls(mut self, tls: Option<TlsFiles>) -> Config {
        self.tls = tls;
        self
    }

    /// Sets the PostgreSQL database and NATS of a cluster node
    /// (builder-lite).
    #[must_use]
    pub fn with_cluster(mut self, database_url: String, nats_url: Option<String>) -> Config {
        self.database_url = Some(database_url);
        self.nats_url = nats_url;
        self
    }

    /// The database file (of the SQLite store).
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("tether.db")
    }

    /// The URL to print (public URL, else derived from the listen address).
    pub fn base_url(&self) -> String {
        if let Some(url) = &self.public_url {
            return url.clone();
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let host = if self.listen.ip().is_unspecified() {
            format!("localhost:{}", self.listen.port())
        } else {
            self.listen.to_string()
        };
        format!("{scheme}://{host}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_flags_over_file_over_defaults() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("tether.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\npublish_rate = 7\nallowed_origins = [\"https://a\"]\n",
        )?;
        let cli = Settings {
            data_dir: Some(dir.path().to_owned()),
            publish_rate: Some(9),
            ..Settings::default()
        };
        // The file is found in the data directory.
        let config = Config::load(cli, None)?;
        assert_eq!(config.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(config.limits.publish_rate, 9);
        assert_eq!(config.allowed_origins, ["https://a"]);
        assert_eq!(config.limits.publish_burst, Limits::default().publish_burst);
        assert_eq!(config.base_url(), "http://127.0.0.1:9000");
        Ok(())
    }

    #[test]
    fn zero_turns_optional_limits_off() -> Result<(), ConfigError> {
        let defaults = Config::resolve(Settings::default())?;
        assert_eq!(defaults.limits.max_connections_per_ip, Some(1000));
        assert_eq!(defaults.limits.max_connections_per_tenant, None);
        let settings = Settings {
            max_connections_per_ip: Some(0),
            max_connections_per_tenant: Some(50),
            write_timeout_ms: Some(250),
            ..Settings::default()
        };
        let config = Config::resolve(settings)?;
        assert_eq!(config.limits.max_connections_per_ip, None);
        assert_eq!(config.limits.max_connections_per_tenant, Some(50));
        assert_eq!(config.limits.write_timeout, Duration::from_millis(250));
        let zero_write = Settings {
            write_timeout_ms: Some(0),
            ..Settings::default()
        };
        assert!(matches!(
            Config::resolve(zero_write),
            Err(ConfigError::Invalid(_))
        ));
        Ok(())
    }

    #[test]
    fn a_cluster_needs_postgres_for_nats() {
        let nats_alone = Settings {
            nats: Some("nats://127.0.0.1:4222".into()),
            ..Settings::default()
        };
        assert!(matches!(
            Config::resolve(nats_alone),
            Err(ConfigError::Invalid(_))
        ));
        let not_postgres = Settings {
            database: Some("mysql://x".into()),
            ..Settings::default()
        };
        assert!(matches!(
            Config::resolve(not_postgres),
            Err(ConfigError::Invalid(_))
        ));
        let bad_nats = Settings {
            database: Some("postgres://tether@127.0.0.1/tether".into()),
            nats: Some("nats://127.0.0.1:4222,nats://bad host:x".into()),
            ..Settings::default()
        };
        assert!(matches!(
            Config::resolve(bad_nats),
            Err(ConfigError::Invalid(_))
        ));
        let cluster = Settings {
            database: Some("postgres://tether@127.0.0.1/tether".into()),
            nats: Some("nats://127.0.0.1:4222".into()),
            drain_timeout_ms: Some(5_000),
            ..Settings::default()
        };
        let config = Config::resolve(cluster);
        assert!(config.is_ok(), "{config:?}");
        if let Ok(config) = config {
            assert_eq!(config.drain.timeout, Duration::from_secs(5));
            assert_eq!(config.nats_url.as_deref(), Some("nats://127.0.0.1:4222"));
        }
    }

    #[test]
    fn a_cluster_node_is_configured_in_tether_toml() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        std::fs::write(
            dir.path().join("tether.toml"),
            "database = \"postgres://tether@db.internal/tether\"\n\
             nats = \"nats://nats-1.internal:4222,nats://nats-2.internal:4222\"\n\
             node_name = \"node-a\"\ndrain_timeout_ms = 15000\ndrain_spread_ms = 2000\n",
        )?;
        let cli = Settings {
            data_dir: Some(dir.path().to_owned()),
            ..Settings::default()
        };
        let config = Config::load(cli, None)?;
        assert_eq!(
            config.database_url.as_deref(),
            Some("postgres://tether@db.internal/tether")
        );
        assert_eq!(
            config.nats_url.as_deref(),
            Some("nats://nats-1.internal:4222,nats://nats-2.internal:4222")
        );
        assert_eq!(config.node_name.as_deref(), Some("node-a"));
        assert_eq!(
            config.drain,
            Drain {
                timeout: Duration::from_secs(15),
                spread: Duration::from_secs(2),
            }
        );
        Ok(())
    }

    #[test]
    fn bad_files_and_values_are_errors() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("x.toml");
        std::fs::write(&file, "no_such_setting = 1\n")?;
        assert!(matches!(
            Config::load(Settings::default(), Some(&file)),
            Err(ConfigError::Parse(..))
        ));
        let settings = Settings {
            tls_cert: Some("c.pem".into()),
            ..Settings::default()
        };
        assert!(matches!(
            Config::resolve(settings),
            Err(ConfigError::Invalid(_))
        ));
        Ok(())
    }
}
