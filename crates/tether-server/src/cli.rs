//! The command line: `tether-server [OPTIONS]` runs the server;
//! `tenant`, `device`, `key` and `invite` subcommands administer the
//! database directly (also while a server runs on it): the SQLite file in
//! the data directory, or the PostgreSQL database of `--database`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::{Config, Settings};
use crate::store::{ChannelFilter, Role, StoreError};

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
    /// Prints an invitation link to a tenant: the person who opens it
    /// creates an account there (how an existing tenant gets its owner).
    Invite {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// What the account may do: `owner` (also manages people),
        /// `member` (read and command) or `read_only`.
        #[arg(long, default_value = "owner", value_parser = parse_role)]
        role: Role,
        /// The link stops working after this long (`12h`, `7d`, …).
        #[arg(long, default_value = "7d", value_parser = parse_duration)]
        expires_in: Duration,
    },
}

/// A role as typed on the command line.
pub fn parse_role(text: &str) -> Result<Role, String> {
    Role::parse(text).ok_or_else(|| format!("{text:?}: the role is owner, member or read_only"))
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
        /// The claim code stops working after this long (`45s`, `90m`,
        /// `12h`, `30d`); claiming with it then answers
        /// `claim_code_expired`. Default: it never expires.
        #[arg(long, requires = "claimable", value_parser = parse_duration)]
        claim_expires_in: Option<Duration>,
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
        /// Channels it may use, comma-separated: `*`, a channel name, or a
        /// name followed by `/*` for every channel below it (default all).
        #[arg(long, value_delimiter = ',', value_parser = channel_pattern)]
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
pub async fn run_admin(command: Command, config: &Config) -> Result<String, StoreError> {
    let admin = crate::open_admin(config).await?;
    Ok(match command {
        Command::Tenant(TenantCommand::Add {
            name,
            retention_max_age_days,
            retention_max_messages,
        }) => {
            let id = admin.add_tenant(&name).await?;
            if retention_max_age_days.is_some() || retention_max_messages.is_some() {
                admin
                    .set_retention(
                        id,
                        retention_max_age_days
                            .map(|days| Duration::from_secs(days.saturating_mul(86_400))),
                        retention_max_messages,
                    )
                    .await?;
            }
            format!("tenant {name} added (id {id})")
        }
        Command::Device(DeviceCommand::Add {
            tenant,
            id,
            claimable,
            claim_expires_in,
        }) => {
            let tenant_id = match &tenant {
                Some(name) => Some(admin.tenant_id(name).await?),
                None => None,
            };
            let claim_expires_ms = claim_expires_in.map(|after| {
                crate::now_ms().saturating_add(u64::try_from(after.as_millis()).unwrap_or(u64::MAX))
            });
            let device = admin
                .add_device(tenant_id, id.as_deref(), claimable, claim_expires_ms)
                .await?;
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
                out.push_str(&format!(
                    "\nclaim page (the label's QR code): {}/claim#code={code}",
                    config.base_url()
                ));
                if let (Some(after), Some(at)) = (claim_expires_in, claim_expires_ms) {
                    out.push_str(&format!(
                        "\nclaim code expires: in {}s (Unix time {at} ms)",
                        after.as_secs()
                    ));
                }
            }
            out
        }
        Command::Device(DeviceCommand::Revoke { id }) => {
            admin.revoke_device(&id).await?;
            format!("device {id} revoked")
        }
        Command::Key(KeyCommand::Add {
            tenant,
            channels,
            read_only,
            name,
        }) => {
            let tenant_id = admin.tenant_id(&tenant).await?;
            let filter = match channels {
                None => ChannelFilter::ALL,
                Some(patterns) => ChannelFilter::parse(patterns)?,
            };
            let key = admin
                .add_key(tenant_id, &filter, !read_only, name.as_deref())
                .await?;
            format!(
                "key id: {}\nkey (shown once): {}\naccess: {}",
                key.key_id,
                key.key,
                if read_only { "read" } else { "read+command" }
            )
        }
        Command::Key(KeyCommand::Revoke { id }) => {
            admin.revoke_key(id).await?;
            format!("key {id} revoked")
        }
        Command::Invite {
            tenant,
            role,
            expires_in,
        } => {
            let tenant_id = admin.tenant_id(&tenant).await?;
            let expires_ms = crate::now_ms()
                .saturating_add(u64::try_from(expires_in.as_millis()).unwrap_or(u64::MAX));
            let invitation = admin.add_invitation(tenant_id, role, expires_ms).await?;
            format!(
                "invitation to tenant {tenant} ({role}), works once, for {}s:\n{}/invite#token={}",
                expires_in.as_secs(),
                config.base_url(),
                invitation.token
            )
        }
    })
}

/// `--channels` values: [`ChannelFilter::check_pattern`].
fn channel_pattern(text: &str) -> Result<String, String> {
    ChannelFilter::check_pattern(text).map(|()| text.to_owned())
}

/// A duration as typed on the command line: a whole number and a unit,
/// `s`, `m`, `h` or `d` (`45s`, `90m`, `12h`, `30d`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?}: add a unit: s, m, h or d (e.g. 30d)"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a whole number and a unit, like 30d"))?;
    let seconds_per_unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit is s, m, h or d")),
    };
    let seconds = number
        .checked_mul(seconds_per_unit)
        .ok_or_else(|| format!("{text:?} is too long"))?;
    if seconds == 0 {
        return Err(format!("{text:?}: must be longer than zero"));
    }
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_their_units() {
        assert_eq!(parse_duration("45s"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(2_592_000)));
        for bad in [
            "",
            "30",
            "d",
            "30w",
            "-1d",
            "0d",
            "1.5d",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn invitations_name_a_known_role() {
        use clap::Parser;
        let parsed = Cli::try_parse_from(["tether-server", "invite", "--tenant", "acme"]);
        assert!(
            matches!(
                parsed.map(|cli| cli.command),
                Ok(Some(Command::Invite {
                    role: Role::Owner,
                    ..
                }))
            ),
            "owner by default"
        );
        let refused = Cli::try_parse_from([
            "tether-server",
            "invite",
            "--tenant",
            "acme",
            "--role",
            "admin",
        ]);
        assert!(refused.is_err());
    }

    #[test]
    fn claim_expiry_needs_a_claim_code() {
        use clap::Parser;
        let parsed = Cli::try_parse_from([
            "tether-server",
            "device",
            "add",
            "--claimable",
            "--claim-expires-in",
            "30d",
        ]);
        assert!(parsed.is_ok(), "{parsed:?}");
        let refused = Cli::try_parse_from([
            "tether-server",
            "device",
            "add",
            "--tenant",
            "acme",
            "--claim-expires-in",
            "30d",
        ]);
        assert!(refused.is_err());
    }
}
