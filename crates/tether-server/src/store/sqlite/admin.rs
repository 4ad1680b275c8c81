//! Administration on the database file: what the `tenant`, `device` and
//! `key` subcommands do (also while a server runs on the same file).

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::schema::{duration_ms, open_connection, to_i64};
use crate::auth;
use crate::now_ms as now_unix_ms;
use crate::store::{ChannelFilter, StoreError, TenantId, UNCLAIMED_TENANT};

/// What `device add` created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDevice {
    /// The device id.
    pub device_id: String,
    /// Its secret token (shown once).
    pub token: String,
    /// Its claim code, if registered for claiming.
    pub claim_code: Option<String>,
}

/// What `key add` created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKey {
    /// The key's id (for `key revoke`).
    pub key_id: i64,
    /// The key (shown once).
    pub key: String,
}

/// Administration: what the `tenant`, `device` and `key` subcommands do,
/// directly on the database file (also while a server runs: it notices
/// revocations within a second).
#[derive(Debug)]
pub struct Admin {
    conn: Connection,
}

impl Admin {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Admin, StoreError> {
        Ok(Admin {
            conn: open_connection(path)?,
        })
    }

    /// The id of the tenant called `name`.
    pub fn tenant_id(&self, name: &str) -> Result<TenantId, StoreError> {
        self.conn
            .query_row(
                "SELECT id FROM tenants WHERE name = ?1 AND id != 0",
                params![name],
                |row| row.get(0),
            )
            .optional()?
            .ok_or(StoreError::NotFound)
    }

    /// Whether any tenant exists (besides the unclaimed devices' one).
    pub fn has_tenants(&self) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM tenants WHERE id != 0", [], |row| {
                row.get::<_, i64>(0)
            })?
            > 0)
    }

    /// Adds a tenant.
    pub fn add_tenant(&self, name: &str) -> Result<TenantId, StoreError> {
        if name.is_empty() || name.starts_with('_') || name.len() > 64 {
            return Err(StoreError::Invalid(
                "tenant names are 1 to 64 characters and do not start with '_'".into(),
            ));
        }
        match self.conn.execute(
            "INSERT INTO tenants(name, created_ms) VALUES (?1, ?2)",
            params![name, to_i64(now_unix_ms())],
        ) {
            Ok(_) => Ok(self.conn.last_insert_rowid()),
            Err(rusqlite::Error::SqliteFailure(error, _))
                if error.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::AlreadyExists)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Sets a tenant's retention (`None`: the server's default).
    pub fn set_retention(
        &self,
        tenant_id: TenantId,
        max_age: Option<Duration>,
        max_messages: Option<u64>,
    ) -> Result<(), StoreError> {
        let age = max_age.map(duration_ms);
        let changed = self.conn.execute(
            "UPDATE tenants SET retention_max_age_ms = ?2, retention_max_messages = ?3 WHERE id = ?1",
            params![tenant_id, age, max_messages.map(to_i64)],
        )?;
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Registers a device in `tenant_id` (or unclaimed, with a claim code).
    /// A claim code made here never expires (see
    /// [`add_claimable_device`](Self::add_claimable_device)).
    pub fn add_device(
        &self,
        tenant_id: Option<TenantId>,
        device_id: Option<&str>,
        with_claim_code: bool,
    ) -> Result<NewDevice, StoreError> {
        self.insert_device(tenant_id, device_id, with_claim_code, None)
    }

    /// Registers a device with a claim code (in `tenant_id`, or unclaimed)
    /// that stops working at `claim_expires_ms` (Unix time in ms; `None`:
    /// never). Claiming with it afterwards fails with
    /// [`StoreError::Expired`].
    pub fn add_claimable_device(
        &self,
        tenant_id: Option<TenantId>,
        device_id: Option<&str>,
        claim_expires_ms: Option<u64>,
    ) -> Result<NewDevice, StoreError> {
        self.insert_device(tenant_id, device_id, true, claim_expires_ms)
    }

    fn insert_device(
        &self,
        tenant_id: Option<TenantId>,
        device_id: Option<&str>,
        with_claim_code: bool,
        claim_expires_ms: Option<u64>,
    ) -> Result<NewDevice, StoreError> {
        let device_id = match device_id {
            Some(id) => id.to_owned(),
            None => format!("dev-{}", &auth::generate_secret("")[..12]),
        };
        tether_proto::validate_device_id(&device_id)
            .map_err(|error| StoreError::Invalid(format!("device id: {error}")))?;
        let token = auth::generate_secret(auth::DEVICE_TOKEN_PREFIX);
        let lookup = auth::lookup_part(&token, auth::DEVICE_TOKEN_PREFIX)
            .ok_or_else(|| StoreError::Invalid("token".into()))?;
        let claim_code = with_claim_code.then(auth::generate_claim_code);
        let claim_hash = match &claim_code {
            Some(code) => Some(auth::hash_secret(
                &auth::normalize_claim_code(code)
                    .ok_or(StoreError::Invalid("claim code".into()))?,
            )),
            None => None,
        };
        let result = self.conn.execute(
            "INSERT INTO devices(id, tenant_id, token_lookup, token_hash, claim_hash, created_ms,
                                 claim_expires_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                device_id,
                tenant_id.unwrap_or(UNCLAIMED_TENANT),
                lookup,
                auth::hash_secret(&token).as_slice(),
                claim_hash.as_ref().map(|hash| hash.as_slice()),
                to_i64(now_unix_ms()),
                claim_expires_ms.filter(|_| with_claim_code).map(to_i64)
            ],
        );
        match result {
            Ok(_) => Ok(NewDevice {
                device_id,
                token,
                claim_code,
            }),
            Err(rusqlite::Error::SqliteFailure(error, _))
                if error.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::AlreadyExists)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Registers many devices in one transaction (for load tests and
    /// factory batches).
    pub fn add_devices(
        &self,
        tenant_id: TenantId,
        device_ids: &[String],
    ) -> Result<Vec<NewDevice>, StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        let devices = device_ids
            .iter()
            .map(|id| self.add_device(Some(tenant_id), Some(id), false))
            .collect::<Result<Vec<_>, _>>()?;
        tx.commit()?;
        Ok(devices)
    }

    /// Gives a device a new token (the old one stops working; a running
    /// server disconnects sessions that used it) and returns it.
    pub fn rotate_token(&self, device_id: &str) -> Result<String, StoreError> {
        let token = auth::generate_secret(auth::DEVICE_TOKEN_PREFIX);
        let lookup = auth::lookup_part(&token, auth::DEVICE_TOKEN_PREFIX)
            .ok_or_else(|| StoreError::Invalid("token".into()))?;
        let tx = self.conn.unchecked_transaction()?;
        let changed = tx.execute(
            "UPDATE devices SET token_lookup = ?2, token_hash = ?3, revoked = 0 WHERE id = ?1",
            params![device_id, lookup, auth::hash_secret(&token).as_slice()],
        )?;
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        tx.execute(
            "INSERT INTO revocations(kind, subject) VALUES ('device', ?1)",
            params![device_id],
        )?;
        tx.commit()?;
        Ok(token)
    }

    /// Revokes a device's token; a running server disconnects it.
    pub fn revoke_device(&self, device_id: &str) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        let changed = tx.execute(
            "UPDATE devices SET revoked = 1 WHERE id = ?1",
            params![device_id],
        )?;
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        tx.execute(
            "INSERT INTO revocations(kind, subject) VALUES ('device', ?1)",
            params![device_id],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Adds a receiver key to a tenant.
    pub fn add_key(
        &self,
        tenant_id: TenantId,
        channels: &ChannelFilter,
        can_command: bool,
        name: Option<&str>,
    ) -> Result<NewKey, StoreError> {
        if tenant_id == UNCLAIMED_TENANT {
            return Err(StoreError::Invalid("no keys for unclaimed devices".into()));
        }
        let key = auth::generate_secret(auth::RECEIVER_KEY_PREFIX);
        let lookup = auth::lookup_part(&key, auth::RECEIVER_KEY_PREFIX)
            .ok_or_else(|| StoreError::Invalid("key".into()))?;
        for pattern in channels.patterns().unwrap_or_default() {
            ChannelFilter::check_pattern(pattern).map_err(StoreError::Invalid)?;
        }
        let channels = match channels.patterns() {
            None => None,
            Some(patterns) => Some(
                serde_json::to_string(patterns)
                    .map_err(|error| StoreError::Invalid(error.to_string()))?,
            ),
        };
        self.conn.execute(
            "INSERT INTO keys(tenant_id, lookup, hash, channels, can_command, created_ms, name)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                tenant_id,
                lookup,
                auth::hash_secret(&key).as_slice(),
                channels,
                can_command,
                to_i64(now_unix_ms()),
                name
            ],
        )?;
        Ok(NewKey {
            key_id: self.conn.last_insert_rowid(),
            key,
        })
    }

    /// Revokes a receiver key; a running server disconnects its receivers.
    pub fn revoke_key(&self, key_id: i64) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        let changed = tx.execute("UPDATE keys SET revoked = 1 WHERE id = ?1", params![key_id])?;
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        tx.execute(
            "INSERT INTO revocations(kind, subject) VALUES ('key', ?1)",
            params![key_id.to_string()],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Loads events onto a tenant's channel in one transaction, after the
    /// events it has, as if devices had published them at their
    /// `server_time_ms` (moving data from another system; filling a
    /// database for a benchmark). Checks every name and payload as the
    /// device endpoint does; a running server sees them once it reads the
    /// channel again (they are not sent to live subscribers). Returns the
    /// offset the first one got.
    pub fn import_events(
        &self,
        tenant_id: TenantId,
        channel: &str,
        events: &[ImportEvent],
    ) -> Result<u64, StoreError> {
        tether_proto::validate_channel(channel)
            .map_err(|error| StoreError::Invalid(format!("channel: {error}")))?;
        for event in events {
            tether_proto::validate_device_id(&event.device)
                .map_err(|error| StoreError::Invalid(format!("device: {error}")))?;
            tether_proto::Payload::from_json_str(&event.payload)
                .check_json()
                .map_err(|_| StoreError::Invalid("payload: not one JSON value".into()))?;
        }
        let tx = self.conn.unchecked_transaction()?;
        tx.execute(
            "INSERT INTO channels(tenant_id, name, next_offset) VALUES (?1, ?2, 1)
             ON CONFLICT(tenant_id, name) DO NOTHING",
            params![tenant_id, channel],
        )?;
        let (channel_id, first): (i64, i64) = tx.query_row(
            "SELECT id, next_offset FROM channels WHERE tenant_id = ?1 AND name = ?2",
            params![tenant_id, channel],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        let mut offset = first;
        {
            let mut insert = tx.prepare(
                "INSERT INTO messages(channel_id, offset, device_id, device_time_ms,
                                      server_time_ms, payload) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for event in events {
                insert.execute(params![
                    channel_id,
                    offset,
                    event.device,
                    event.device_time_ms.map(to_i64),
                    to_i64(event.server_time_ms),
                    event.payload
                ])?;
                offset = offset.saturating_add(1);
            }
        }
        tx.execute(
            "UPDATE channels SET next_offset = ?2 WHERE id = ?1",
            params![channel_id, offset],
        )?;
        tx.commit()?;
        Ok(u64::try_from(first).unwrap_or(0))
    }
}

/// One event for [`Admin::import_events`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportEvent {
    /// The publishing device.
    pub device: String,
    /// The device's clock, if it had one (unix ms).
    pub device_time_ms: Option<u64>,
    /// When it was stored (unix ms).
    pub server_time_ms: u64,
    /// The record, JSON text.
    pub payload: String,
}
