//! Administration on the database file: what the `tenant`, `device` and
//! `key` subcommands do (also while a server runs on the same file).

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::schema::{duration_ms, open_connection, to_i64};
use crate::auth;
use crate::now_ms as now_unix_ms;
use crate::store::admin::{DeviceSecrets, KeySecrets, check_tenant_name};
use crate::store::{
    AdminStore, BoxFuture, ChannelFilter, NewDevice, NewInvitationLink, NewKey, Role, StoreError,
    TenantId, UNCLAIMED_TENANT,
};

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
        check_tenant_name(name)?;
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
        let secrets = DeviceSecrets::new(device_id, with_claim_code)?;
        let result = self.conn.execute(
            "INSERT INTO devices(id, tenant_id, token_lookup, token_hash, claim_hash, created_ms,
                                 claim_expires_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                secrets.device_id,
                tenant_id.unwrap_or(UNCLAIMED_TENANT),
                secrets.token_lookup,
                secrets.token_hash.as_slice(),
                secrets.claim_hash.as_ref().map(|hash| hash.as_slice()),
                to_i64(now_unix_ms()),
                claim_expires_ms.filter(|_| with_claim_code).map(to_i64)
            ],
        );
        match result {
            Ok(_) => Ok(secrets.into_new_device()),
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
        let secrets = DeviceSecrets::new(Some(device_id), false)?;
        let tx = self.conn.unchecked_transaction()?;
        let changed = tx.execute(
            "UPDATE devices SET token_lookup = ?2, token_hash = ?3, revoked = 0 WHERE id = ?1",
            params![
                device_id,
                secrets.token_lookup,
                secrets.token_hash.as_slice()
            ],
        )?;
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        tx.execute(
            "INSERT INTO revocations(kind, subject) VALUES ('device', ?1)",
            params![device_id],
        )?;
        tx.commit()?;
        Ok(secrets.token)
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
        let secrets = KeySecrets::new(tenant_id, channels)?;
        self.conn.execute(
            "INSERT INTO keys(tenant_id, lookup, hash, channels, can_command, created_ms, name)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                tenant_id,
                secrets.lookup,
                secrets.hash.as_slice(),
                secrets.channels,
                can_command,
                to_i64(now_unix_ms()),
                name
            ],
        )?;
        Ok(NewKey {
            key_id: self.conn.last_insert_rowid(),
            key: secrets.key,
        })
    }

    /// An invitation to `tenant_id` with `role` (an owner too: how a tenant
    /// made by `tenant add`, or before accounts existed, gets its first
    /// account), single use, until `expires_ms`.
    pub fn add_invitation(
        &self,
        tenant_id: TenantId,
        role: Role,
        expires_ms: u64,
    ) -> Result<NewInvitationLink, StoreError> {
        if tenant_id == UNCLAIMED_TENANT {
            return Err(StoreError::Invalid(
                "no invitations to the unclaimed devices".into(),
            ));
        }
        let token = auth::generate_secret(auth::INVITATION_TOKEN_PREFIX);
        let lookup = auth::lookup_part(&token, auth::INVITATION_TOKEN_PREFIX)
            .ok_or_else(|| StoreError::Invalid("token".into()))?;
        self.conn.execute(
            "INSERT INTO invitations(tenant_id, lookup, hash, role, created_ms, expires_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                tenant_id,
                lookup,
                auth::hash_secret(&token).as_slice(),
                role.as_str(),
                to_i64(now_unix_ms()),
                to_i64(expires_ms)
            ],
        )?;
        Ok(NewInvitationLink {
            id: self.conn.last_insert_rowid(),
            token,
            expires_ms,
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

/// The SQLite admin as an [`AdminStore`]: each call runs at once on the
/// file; the future only carries its result.
impl AdminStore for Admin {
    fn import_events<'a>(
        &'a self,
        tenant_id: TenantId,
        channel: &'a str,
        events: &'a [ImportEvent],
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(core::future::ready(Admin::import_events(
            self, tenant_id, channel, events,
        )))
    }

    fn tenant_id(&self, name: &str) -> BoxFuture<'_, Result<TenantId, StoreError>> {
        Box::pin(core::future::ready(Admin::tenant_id(self, name)))
    }

    fn has_tenants(&self) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(core::future::ready(Admin::has_tenants(self)))
    }

    fn add_tenant(&self, name: &str) -> BoxFuture<'_, Result<TenantId, StoreError>> {
        Box::pin(core::future::ready(Admin::add_tenant(self, name)))
    }

    fn set_retention(
        &self,
        tenant_id: TenantId,
        max_age: Option<Duration>,
        max_messages: Option<u64>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(core::future::ready(Admin::set_retention(
            self,
            tenant_id,
            max_age,
            max_messages,
        )))
    }

    fn add_device(
        &self,
        tenant_id: Option<TenantId>,
        device_id: Option<&str>,
        with_claim_code: bool,
        claim_expires_ms: Option<u64>,
    ) -> BoxFuture<'_, Result<NewDevice, StoreError>> {
        Box::pin(core::future::ready(self.insert_device(
            tenant_id,
            device_id,
            with_claim_code,
            claim_expires_ms,
        )))
    }

    fn add_devices(
        &self,
        tenant_id: TenantId,
        device_ids: &[String],
    ) -> BoxFuture<'_, Result<Vec<NewDevice>, StoreError>> {
        Box::pin(core::future::ready(Admin::add_devices(
            self, tenant_id, device_ids,
        )))
    }

    fn revoke_device(&self, device_id: &str) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(core::future::ready(Admin::revoke_device(self, device_id)))
    }

    fn add_key(
        &self,
        tenant_id: TenantId,
        channels: &ChannelFilter,
        can_command: bool,
        name: Option<&str>,
    ) -> BoxFuture<'_, Result<NewKey, StoreError>> {
        Box::pin(core::future::ready(Admin::add_key(
            self,
            tenant_id,
            channels,
            can_command,
            name,
        )))
    }

    fn revoke_key(&self, key_id: i64) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(core::future::ready(Admin::revoke_key(self, key_id)))
    }

    fn add_invitation(
        &self,
        tenant_id: TenantId,
        role: Role,
        expires_ms: u64,
    ) -> BoxFuture<'_, Result<NewInvitationLink, StoreError>> {
        Box::pin(core::future::ready(Admin::add_invitation(
            self, tenant_id, role, expires_ms,
        )))
    }
}
