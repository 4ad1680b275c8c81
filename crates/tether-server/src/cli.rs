//! The command line: `tether-server [OPTIONS]` runs the server;
//! `tenant`, `device` and `key` subcommands administer the database
//! directly (also while a server runs on it).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::{Config, Settings};
use crate::store::{Admin, ChannelFilter, StoreError};

/// The tether relay server.
#[derive(Debug, Parser)]
#[command(name = "tether-server", version, about)]
pub struct Cli {
    /// TOML configuration file (default: `<data-dir>/tether.toml` if it
    /// exists). Precedence: flags > environment > file > defaults.
    #[arg(long, env = "TETHER_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Also run simulated demo devices.
    #[arg(long)]
    pub demo: bool,
    /// Every server setting.
    #[command(flatten)]
    pub settings: Settings,
    /// An administration command instead of running the server.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Administration commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Tenants (customers).
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Devices.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Receiver keys.
    #[command(subcommand)]
    Key(KeyCommand),
}

/// `tenant …`
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Adds a tenant.
    Add {
        /// Its name.
        name: String,
        /// Retention: delete events older than this many days.
        #[arg(long)]
        retention_max_age_days: Option<u64>,
        /// Retention: keep at most this many events per channel.
        #[arg(long)]
        retention_max_messages: Option<u64>,
    },
}

/// `device …`
#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Registers a device; prints its id, token and provisioning record.
    Add {
        /// Its tenant (omit with `--claimable` to leave it unclaimed).
        #[arg(long, required_unless_present = "claimable")]
        tenant: Option<String>,
        /// Its id (default: generated).
        #[arg(long)]
        id: Option<String>,
        /// Also print a claim code for the device's label; without
        /// `--tenant` the device stays unclaimed until a receiver key
        /// claims it.
        #[arg(long)]
        claimable: bool,
    },
    /// Revokes a device's token; a running server disconnects it within a
    /// second.
    Revoke {
        /// The device id.
        id: String,
    },
}

/// `key …`
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Adds a receiver key to a tenant; prints it (once).
    Add {
        /// Its tenant.
        #[arg(long)]
        tenant: String,
        /// Channels it may use (`name` or `prefix/*`, comma-separated;
        /// default all).
        #[arg(long, value_delimiter = ',')]
        channels: Option<Vec<String>>,
        /// Read only (default: read and send commands).
        #[arg(long)]
        read_only: bool,
        /// A name for the key (for people).
        #[arg(long)]
        name: Option<String>,
    },
    /// Revokes a key; a running server disconnects its receivers within a
    /// second.
    Revoke {
        /// The key's id (printed by `key add`).
        id: i64,
    },
}

/// Runs an administration command against the configured database and
/// returns what to print.
pub fn run_admin(command: Command, config: &Config) -> Result<String, StoreError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|error| StoreError::Database(error.to_string()))?;
    let admin = Admin::open(&config.database_path())?;
    Ok(match command {
        Command::Tenant(TenantCommand::Add {
            name,
            retention_max_age_days,
            retention_max_messages,
        }) => {
            let id = admin.add_tenant(&name)?;
            if retention_max_age_days.is_some() || retention_max_messages.is_some() {
                admin.set_retention(
                    id,
                    retention_max_age_days
                        .map(|days| Duration::from_secs(days.saturating_mul(86_400))),
                    retention_max_messages,
                )?;
            }
            format!("tenant {name} added (id {id})")
        }
        Command::Device(DeviceCommand::Add {
            tenant,
            id,
            claimable,
        }) => {
            let tenant_id = match &tenant {
                Some(name) => Some(admin.tenant_id(name)?),
                None => None,
            };
            let device = admin.add_device(tenant_id, id.as_deref(), claimable)?;
            let server = format!("{}/v1/device", config.base_url().replacen("http", "ws", 1));
            let provisioning = serde_json::json!({
                "server": server,
                "device_id": device.device_id,
                "token": device.token,
            });
            let mut out = format!(
                "device id: {}\ntoken (shown once): {}\nprovisioning: {provisioning}",
                device.device_id, device.token
            );
            if let Some(code) = device.claim_code {
                out.push_str(&format!("\nclaim code (for the label): {code}"));
            }
            out
        }
        Command::Device(DeviceCommand::Revoke { id }) => {
            admin.revoke_device(&id)?;
            format!("device {id} revoked")
        }
        Command::Key(KeyCommand::Add {
            tenant,
            channels,
            read_only,
            name,
        }) => {
            let tenant_id = admin.tenant_id(&tenant)?;
            let filter = match channels {
                None => ChannelFilter::ALL,
                Some(patterns) => ChannelFilter::only(patterns),
            };
            let key = admin.add_key(tenant_id, &filter, !read_only, name.as_deref())?;
            format!(
                "key id: {}\nkey (shown once): {}\naccess: {}",
                key.key_id,
                key.key,
                if read_only { "read" } else { "read+command" }
            )
        }
        Command::Key(KeyCommand::Revoke { id }) => {
            admin.revoke_key(id)?;
            format!("key {id} revoked")
        }
    })
}
