//! Administration on PostgreSQL: what the `tenant`, `device`, `key` and
//! `invite` subcommands do with `--database postgres://…` (also while nodes run:
//! each notices a revocation within its poll interval).

use std::time::Duration;

use deadpool_postgres::{GenericClient, Pool};

use super::schema::{self, REVOCATION_LOCK, db_error, is_unique_violation, pool_error};
use super::writer::to_i64;
use crate::auth;
use crate::store::admin::{DeviceSecrets, KeySecrets, check_tenant_name};
use crate::store::{
    AdminStore, BoxFuture, ChannelFilter, ImportEvent, NewDevice, NewInvitationLink, NewKey, Role,
    StoreError, TenantId, UNCLAIMED_TENANT,
};

/// Administration on a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PgAdmin {
    pool: Pool,
}

fn already_exists(error: tokio_postgres::Error) -> StoreError {
    if is_unique_violation(&error) {
        StoreError::AlreadyExists
    } else {
        db_error(error)
    }
}

impl PgAdmin {
    /// Connects to `url`, creating or migrating the schema.
    pub async fn connect(url: &str) -> Result<PgAdmin, StoreError> {
        let pool = schema::pool(url, 2)?;
        schema::migrate(&pool).await?;
        Ok(PgAdmin { pool })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }

    /// The id of the tenant called `name`.
    pub async fn tenant_id(&self, name: &str) -> Result<TenantId, StoreError> {
        self.client()
            .await?
            .query_opt(
                "SELECT id FROM tenants WHERE name = $1 AND id != 0",
                &[&name],
            )
            .await
            .map_err(db_error)?
            .map(|row| row.get(0))
            .ok_or(StoreError::NotFound)
    }

    /// Whether any tenant exists (besides the unclaimed devices' one).
    pub async fn has_tenants(&self) -> Result<bool, StoreError> {
        let row = self
            .client()
            .await?
            .query_one("SELECT count(*) FROM tenants WHERE id != 0", &[])
            .await
            .map_err(db_error)?;
        Ok(row.get::<_, i64>(0) > 0)
    }

    /// Adds a tenant.
    pub async fn add_tenant(&self, name: &str) -> Result<TenantId, StoreError> {
        check_tenant_name(name)?;
        let row = self
            .client()
            .await?
            .query_one(
                "INSERT INTO tenants(name, created_ms) VALUES ($1, $2) RETURNING id",
                &[&name, &to_i64(crate::now_ms())],
            )
            .await
            .map_err(already_exists)?;
        Ok(row.get(0))
    }

    /// Sets a tenant's retention (`None`: the server's default).
    pub async fn set_retention(
        &self,
        tenant_id: TenantId,
        max_age: Option<Duration>,
        max_messages: Option<u64>,
    ) -> Result<(), StoreError> {
        let age = max_age.map(|age| to_i64(u64::try_from(age.as_millis()).unwrap_or(u64::MAX)));
        let changed = self
            .client()
            .await?
            .execute(
                "UPDATE tenants SET retention_max_age_ms = $2, retention_max_messages = $3
                 WHERE id = $1",
                &[&tenant_id, &age, &max_messages.map(to_i64)],
            )
            .await
            .map_err(db_error)?;
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Stores events on a channel of a tenant after the ones it has, each
    /// with its own `server_time_ms`, as [`Admin::import_events`] does on
    /// SQLite (same checks; live subscribers are not told). The channel's
    /// counter row is locked meanwhile, so the offsets stay gap-free
    /// alongside running nodes. Returns the offset the first one got.
    ///
    /// [`Admin::import_events`]: crate::store::Admin::import_events
    pub async fn import_events(
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
        let count = i64::try_from(events.len()).unwrap_or(i64::MAX);
        let devices: Vec<&str> = events.iter().map(|e| e.device.as_str()).collect();
        let device_times: Vec<Option<i64>> = events
            .iter()
            .map(|e| e.device_time_ms.map(to_i64))
            .collect();
        let server_times: Vec<i64> = events.iter().map(|e| to_i64(e.server_time_ms)).collect();
        let payloads: Vec<&str> = events.iter().map(|e| e.payload.as_str()).collect();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let row = tx
            .query_one(
                "INSERT INTO channels(tenant_id, name, next_offset) VALUES ($1, $2, 1 + $3::bigint)
                 ON CONFLICT(tenant_id, name) DO UPDATE
                 SET next_offset = channels.next_offset + $3::bigint
                 RETURNING id, next_offset - $3::bigint",
                &[&tenant_id, &channel, &count],
            )
            .await
            .map_err(db_error)?;
        let (channel_id, first): (i64, i64) = (row.get(0), row.get(1));
        tx.execute(
            r#"INSERT INTO messages(channel_id, "offset", device_id, device_time_ms,
                                    server_time_ms, payload)
               SELECT $1, $2::bigint + e.i - 1, e.device, e.device_time, e.server_time, e.payload
               FROM unnest($3::text[], $4::bigint[], $5::bigint[], $6::text[])
                    WITH ORDINALITY AS e(device, device_time, server_time, payload, i)"#,
            &[
                &channel_id,
                &first,
                &devices,
                &device_times,
                &server_times,
                &payloads,
            ],
        )
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(u64::try_from(first).unwrap_or(0))
    }

    /// Registers a device (see [`AdminStore::add_device`]).
    pub async fn add_device(
        &self,
        tenant_id: Option<TenantId>,
        device_id: Option<&str>,
        with_claim_code: bool,
        claim_expires_ms: Option<u64>,
    ) -> Result<NewDevice, StoreError> {
        let client = self.client().await?;
        insert_device(
            &client,
            tenant_id,
            device_id,
            with_claim_code,
            claim_expires_ms,
        )
        .await
    }

    /// Registers many devices in one transaction.
    pub async fn add_devices(
        &self,
        tenant_id: TenantId,
        device_ids: &[String],
    ) -> Result<Vec<NewDevice>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let mut devices = Vec::with_capacity(device_ids.len());
        for id in device_ids {
            devices.push(insert_device(&tx, Some(tenant_id), Some(id), false, None).await?);
        }
        tx.commit().await.map_err(db_error)?;
        Ok(devices)
    }

    /// Revokes a device's token; running nodes disconnect it.
    pub async fn revoke_device(&self, device_id: &str) -> Result<(), StoreError> {
        self.revoke(
            "UPDATE devices SET revoked = TRUE WHERE id = $1",
            device_id,
            "device",
            device_id,
        )
        .await
    }

    /// Adds a receiver key to a tenant.
    pub async fn add_key(
        &self,
        tenant_id: TenantId,
        channels: &ChannelFilter,
        can_command: bool,
        name: Option<&str>,
    ) -> Result<NewKey, StoreError> {
        let secrets = KeySecrets::new(tenant_id, channels)?;
        let row = self
            .client()
            .await?
            .query_one(
                "INSERT INTO keys(tenant_id, lookup, hash, channels, can_command, created_ms, name)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                &[
                    &tenant_id,
                    &secrets.lookup,
                    &secrets.hash.as_slice(),
                    &secrets.channels,
                    &can_command,
                    &to_i64(crate::now_ms()),
                    &name,
                ],
            )
            .await
            .map_err(db_error)?;
        Ok(NewKey {
            key_id: row.get(0),
            key: secrets.key,
        })
    }

    /// Revokes a receiver key; running nodes disconnect its receivers.
    pub async fn revoke_key(&self, key_id: i64) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let changed = tx
            .execute("UPDATE keys SET revoked = TRUE WHERE id = $1", &[&key_id])
            .await
            .map_err(db_error)?;
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        record_revocation(&tx, "key", &key_id.to_string()).await?;
        tx.commit().await.map_err(db_error)
    }

    /// An invitation to `tenant_id` (see [`AdminStore::add_invitation`]).
    pub async fn add_invitation(
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
        let row = self
            .client()
            .await?
            .query_one(
                "INSERT INTO invitations(tenant_id, lookup, hash, role, created_ms, expires_ms)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                &[
                    &tenant_id,
                    &lookup,
                    &auth::hash_secret(&token).as_slice(),
                    &role.as_str(),
                    &to_i64(crate::now_ms()),
                    &to_i64(expires_ms),
                ],
            )
            .await
            .map_err(db_error)?;
        Ok(NewInvitationLink {
            id: row.get(0),
            token,
            expires_ms,
        })
    }

    async fn revoke(
        &self,
        update: &str,
        id: &str,
        kind: &str,
        subject: &str,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let changed = tx.execute(update, &[&id]).await.map_err(db_error)?;
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        record_revocation(&tx, kind, subject).await?;
        tx.commit().await.map_err(db_error)
    }
}

/// Records a revocation for the nodes to poll, in id order (see
/// [`REVOCATION_LOCK`]).
async fn record_revocation<C: GenericClient + Sync>(
    tx: &C,
    kind: &str,
    subject: &str,
) -> Result<(), StoreError> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&REVOCATION_LOCK])
        .await
        .map_err(db_error)?;
    tx.execute(
        "INSERT INTO revocations(kind, subject) VALUES ($1, $2)",
        &[&kind, &subject],
    )
    .await
    .map_err(db_error)?;
    Ok(())
}

async fn insert_device<C: GenericClient + Sync>(
    client: &C,
    tenant_id: Option<TenantId>,
    device_id: Option<&str>,
    with_claim_code: bool,
    claim_expires_ms: Option<u64>,
) -> Result<NewDevice, StoreError> {
    let secrets = DeviceSecrets::new(device_id, with_claim_code)?;
    client
        .execute(
            "INSERT INTO devices(id, tenant_id, token_lookup, token_hash, claim_hash, created_ms,
                                 claim_expires_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &secrets.device_id,
                &tenant_id.unwrap_or(UNCLAIMED_TENANT),
                &secrets.token_lookup,
                &secrets.token_hash.as_slice(),
                &secrets.claim_hash.as_ref().map(|hash| hash.as_slice()),
                &to_i64(crate::now_ms()),
                &claim_expires_ms.filter(|_| with_claim_code).map(to_i64),
            ],
        )
        .await
        .map_err(already_exists)?;
    Ok(secrets.into_new_device())
}

impl AdminStore for PgAdmin {
    fn import_events<'a>(
        &'a self,
        tenant_id: TenantId,
        channel: &'a str,
        events: &'a [ImportEvent],
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(PgAdmin::import_events(self, tenant_id, channel, events))
    }

    fn tenant_id(&self, name: &str) -> BoxFuture<'_, Result<TenantId, StoreError>> {
        let name = name.to_owned();
        Box::pin(async move { PgAdmin::tenant_id(self, &name).await })
    }

    fn has_tenants(&self) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(PgAdmin::has_tenants(self))
    }

    fn add_tenant(&self, name: &str) -> BoxFuture<'_, Result<TenantId, StoreError>> {
        let name = name.to_owned();
        Box::pin(async move { PgAdmin::add_tenant(self, &name).await })
    }

    fn set_retention(
        &self,
        tenant_id: TenantId,
        max_age: Option<Duration>,
        max_messages: Option<u64>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(PgAdmin::set_retention(
            self,
            tenant_id,
            max_age,
            max_messages,
        ))
    }

    fn add_device(
        &self,
        tenant_id: Option<TenantId>,
        device_id: Option<&str>,
        with_claim_code: bool,
        claim_expires_ms: Option<u64>,
    ) -> BoxFuture<'_, Result<NewDevice, StoreError>> {
        let device_id = device_id.map(str::to_owned);
        Box::pin(async move {
            PgAdmin::add_device(
                self,
                tenant_id,
                device_id.as_deref(),
                with_claim_code,
                claim_expires_ms,
            )
            .await
        })
    }

    fn add_devices(
        &self,
        tenant_id: TenantId,
        device_ids: &[String],
    ) -> BoxFuture<'_, Result<Vec<NewDevice>, StoreError>> {
        let device_ids = device_ids.to_vec();
        Box::pin(async move { PgAdmin::add_devices(self, tenant_id, &device_ids).await })
    }

    fn revoke_device(&self, device_id: &str) -> BoxFuture<'_, Result<(), StoreError>> {
        let device_id = device_id.to_owned();
        Box::pin(async move { PgAdmin::revoke_device(self, &device_id).await })
    }

    fn add_key(
        &self,
        tenant_id: TenantId,
        channels: &ChannelFilter,
        can_command: bool,
        name: Option<&str>,
    ) -> BoxFuture<'_, Result<NewKey, StoreError>> {
        let channels = channels.clone();
        let name = name.map(str::to_owned);
        Box::pin(async move {
            PgAdmin::add_key(self, tenant_id, &channels, can_command, name.as_deref()).await
        })
    }

    fn revoke_key(&self, key_id: i64) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(PgAdmin::revoke_key(self, key_id))
    }

    fn add_invitation(
        &self,
        tenant_id: TenantId,
        role: Role,
        expires_ms: u64,
    ) -> BoxFuture<'_, Result<NewInvitationLink, StoreError>> {
        Box::pin(PgAdmin::add_invitation(self, tenant_id, role, expires_ms))
    }
}
