//! Administration on either database: what the `tenant`, `device`, `key`
//! and `invite` subcommands and a server's first start do. [`AdminStore`] is
//! implemented by the SQLite [`Admin`](super::Admin) (on the file) and by
//! [`PgAdmin`](super::PgAdmin); the secrets they store are made here, once.

use std::time::Duration;

use super::{BoxFuture, ChannelFilter, ImportEvent, Role, StoreError, TenantId};
use crate::auth;

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

/// What `invite` created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInvitationLink {
    /// The invitation's id.
    pub id: i64,
    /// Its secret token (shown once): the link is `<dashboard>/invite#token=<token>`.
    pub token: String,
    /// When it stops working (Unix ms).
    pub expires_ms: u64,
}

/// What `key add` created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKey {
    /// The key's id (for `key revoke`).
    pub key_id: i64,
    /// The key (shown once).
    pub key: String,
}

/// Administration, object safe, the same on every database. (SQLite's
/// [`Admin`](super::Admin) also has these as plain methods.)
pub trait AdminStore: Send {
    /// The id of the tenant called `name`.
    fn tenant_id(&self, name: &str) -> BoxFuture<'_, Result<TenantId, StoreError>>;
    /// Whether any tenant exists (besides the unclaimed devices' one).
    fn has_tenants(&self) -> BoxFuture<'_, Result<bool, StoreError>>;
    /// Adds a tenant.
    fn add_tenant(&self, name: &str) -> BoxFuture<'_, Result<TenantId, StoreError>>;
    /// Sets a tenant's retention (`None`: the server's default).
    fn set_retention(
        &self,
        tenant_id: TenantId,
        max_age: Option<Duration>,
        max_messages: Option<u64>,
    ) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Registers a device in `tenant_id` (or unclaimed, with a claim code
    /// that stops working at `claim_expires_ms`, `None`: never).
    fn add_device(
        &self,
        tenant_id: Option<TenantId>,
        device_id: Option<&str>,
        with_claim_code: bool,
        claim_expires_ms: Option<u64>,
    ) -> BoxFuture<'_, Result<NewDevice, StoreError>>;
    /// Registers many devices in one transaction.
    fn add_devices(
        &self,
        tenant_id: TenantId,
        device_ids: &[String],
    ) -> BoxFuture<'_, Result<Vec<NewDevice>, StoreError>>;
    /// Revokes a device's token; running servers disconnect it.
    fn revoke_device(&self, device_id: &str) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Adds a receiver key to a tenant.
    fn add_key(
        &self,
        tenant_id: TenantId,
        channels: &ChannelFilter,
        can_command: bool,
        name: Option<&str>,
    ) -> BoxFuture<'_, Result<NewKey, StoreError>>;
    /// Revokes a receiver key; running servers disconnect its receivers.
    fn revoke_key(&self, key_id: i64) -> BoxFuture<'_, Result<(), StoreError>>;
    /// An invitation to `tenant_id` with `role` (an owner too: how a tenant
    /// made by `tenant add`, or before accounts existed, gets its first
    /// account), single use, until `expires_ms`.
    fn add_invitation(
        &self,
        tenant_id: TenantId,
        role: Role,
        expires_ms: u64,
    ) -> BoxFuture<'_, Result<NewInvitationLink, StoreError>>;
    /// Stores events on a tenant's channel after the ones it has, each at
    /// its own `server_time_ms` (moving data from another system; filling
    /// a database for a benchmark or a test). Returns the first offset.
    fn import_events<'a>(
        &'a self,
        tenant_id: TenantId,
        channel: &'a str,
        events: &'a [ImportEvent],
    ) -> BoxFuture<'a, Result<u64, StoreError>>;
}

/// Checks a new tenant's name.
pub(crate) fn check_tenant_name(name: &str) -> Result<(), StoreError> {
    if name.is_empty() || name.starts_with('_') || name.len() > 64 {
        return Err(StoreError::Invalid(
            "tenant names are 1 to 64 characters and do not start with '_'".into(),
        ));
    }
    Ok(())
}

/// A new device's id and secrets, and what of them the database keeps.
#[derive(Debug)]
pub(crate) struct DeviceSecrets {
    pub(crate) device_id: String,
    pub(crate) token: String,
    pub(crate) token_lookup: String,
    pub(crate) token_hash: [u8; 32],
    pub(crate) claim_code: Option<String>,
    pub(crate) claim_hash: Option<[u8; 32]>,
}

impl DeviceSecrets {
    /// Secrets for `device_id` (checked; generated when `None`).
    pub(crate) fn new(
        device_id: Option<&str>,
        with_claim_code: bool,
    ) -> Result<DeviceSecrets, StoreError> {
        let device_id = match device_id {
            Some(id) => id.to_owned(),
            None => format!("dev-{}", &auth::generate_secret("")[..12]),
        };
        tether_proto::validate_device_id(&device_id)
            .map_err(|error| StoreError::Invalid(format!("device id: {error}")))?;
        let token = auth::generate_secret(auth::DEVICE_TOKEN_PREFIX);
        let token_lookup = auth::lookup_part(&token, auth::DEVICE_TOKEN_PREFIX)
            .ok_or_else(|| StoreError::Invalid("token".into()))?
            .to_owned();
        let claim_code = with_claim_code.then(auth::generate_claim_code);
        let claim_hash = match &claim_code {
            Some(code) => Some(auth::hash_secret(
                &auth::normalize_claim_code(code)
                    .ok_or(StoreError::Invalid("claim code".into()))?,
            )),
            None => None,
        };
        Ok(DeviceSecrets {
            device_id,
            token_hash: auth::hash_secret(&token),
            token,
            token_lookup,
            claim_code,
            claim_hash,
        })
    }

    /// What `device add` shows.
    pub(crate) fn into_new_device(self) -> NewDevice {
        NewDevice {
            device_id: self.device_id,
            token: self.token,
            claim_code: self.claim_code,
        }
    }
}

/// A new receiver key and what of it the database keeps.
#[derive(Debug)]
pub(crate) struct KeySecrets {
    pub(crate) key: String,
    pub(crate) lookup: String,
    pub(crate) hash: [u8; 32],
    /// The channel patterns as JSON, `None` for every channel.
    pub(crate) channels: Option<String>,
}

impl KeySecrets {
    pub(crate) fn new(
        tenant_id: TenantId,
        channels: &ChannelFilter,
    ) -> Result<KeySecrets, StoreError> {
        if tenant_id == super::UNCLAIMED_TENANT {
            return Err(StoreError::Invalid("no keys for unclaimed devices".into()));
        }
        let key = auth::generate_secret(auth::RECEIVER_KEY_PREFIX);
        let lookup = auth::lookup_part(&key, auth::RECEIVER_KEY_PREFIX)
            .ok_or_else(|| StoreError::Invalid("key".into()))?
            .to_owned();
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
        Ok(KeySecrets {
            hash: auth::hash_secret(&key),
            key,
            lookup,
            channels,
        })
    }
}
