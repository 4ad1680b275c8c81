//! Reads, on the pool's connections. Every statement reads what was
//! committed when it started (READ COMMITTED): a channel's offsets commit
//! in order, so a read never sees offset `n + 1` without `n`.

use std::sync::Arc;

use deadpool_postgres::Object;

use super::schema::db_error;
use super::writer::{to_i64, to_u64};
use crate::auth;
use crate::store::{
    ChannelBounds, ChannelFilter, ChannelInfo, DeviceIdentity, DeviceInfo, KeyIdentity, ReadRange,
    Revocation, StoreError, StoredEvent, TenantId,
};

const DAY_MS: u64 = 86_400_000;

pub(super) async fn authenticate_device(
    client: &Object,
    token: &str,
) -> Result<Option<DeviceIdentity>, StoreError> {
    let Some(lookup) = auth::lookup_part(token, auth::DEVICE_TOKEN_PREFIX) else {
        return Ok(None);
    };
    let statement = client
        .prepare_cached(
            "SELECT id, tenant_id, token_hash FROM devices WHERE token_lookup = $1 AND NOT revoked",
        )
        .await
        .map_err(db_error)?;
    let row = client
        .query_opt(&statement, &[&lookup])
        .await
        .map_err(db_error)?;
    Ok(row.and_then(|row| {
        let hash: Vec<u8> = row.get(2);
        auth::verify_secret(token, &hash).then(|| DeviceIdentity {
            device_id: row.get(0),
            tenant_id: row.get(1),
        })
    }))
}

pub(super) async fn authenticate_key(
    client: &Object,
    key: &str,
) -> Result<Option<KeyIdentity>, StoreError> {
    let Some(lookup) = auth::lookup_part(key, auth::RECEIVER_KEY_PREFIX) else {
        return Ok(None);
    };
    let statement = client
        .prepare_cached(
            "SELECT id, tenant_id, hash, channels, can_command FROM keys
             WHERE lookup = $1 AND NOT revoked",
        )
        .await
        .map_err(db_error)?;
    let Some(row) = client
        .query_opt(&statement, &[&lookup])
        .await
        .map_err(db_error)?
    else {
        return Ok(None);
    };
    let hash: Vec<u8> = row.get(2);
    if !auth::verify_secret(key, &hash) {
        return Ok(None);
    }
    let channels = match row.get::<_, Option<String>>(3) {
        None => ChannelFilter::ALL,
        Some(text) => ChannelFilter::only(
            serde_json::from_str(&text).map_err(|error| StoreError::Database(error.to_string()))?,
        ),
    };
    Ok(Some(KeyIdentity {
        key_id: row.get(0),
        tenant_id: row.get(1),
        channels,
        can_command: row.get(4),
        session: None,
    }))
}

pub(super) async fn events(
    client: &Object,
    tenant_id: TenantId,
    channel: &str,
    range: ReadRange,
    limit: usize,
) -> Result<Vec<Arc<StoredEvent>>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = match range {
        ReadRange::Offsets { from, until } => {
            let statement = client
                .prepare_cached(
                    r#"SELECT m."offset", m.device_id, m.device_time_ms, m.server_time_ms, m.payload
                       FROM messages m JOIN channels c ON c.id = m.channel_id
                       WHERE c.tenant_id = $1 AND c.name = $2
                       AND m."offset" >= $3 AND m."offset" < $4
                       ORDER BY m."offset" LIMIT $5"#,
                )
                .await
                .map_err(db_error)?;
            let until = until.map_or(i64::MAX, to_i64);
            client
                .query(
                    &statement,
                    &[&tenant_id, &channel, &to_i64(from), &until, &limit],
                )
                .await
        }
        ReadRange::Time {
            since_ms,
            until_ms,
            from,
        } => {
            let statement = client
                .prepare_cached(
                    r#"SELECT m."offset", m.device_id, m.device_time_ms, m.server_time_ms, m.payload
                       FROM messages m JOIN channels c ON c.id = m.channel_id
                       WHERE c.tenant_id = $1 AND c.name = $2
                       AND m.server_time_ms >= $3 AND m.server_time_ms < $4 AND m."offset" >= $5
                       ORDER BY m."offset" LIMIT $6"#,
                )
                .await
                .map_err(db_error)?;
            let until = until_ms.map_or(i64::MAX, to_i64);
            client
                .query(
                    &statement,
                    &[
                        &tenant_id,
                        &channel,
                        &to_i64(since_ms),
                        &until,
                        &to_i64(from),
                        &limit,
                    ],
                )
                .await
        }
    }
    .map_err(db_error)?;
    Ok(rows
        .into_iter()
        .map(|row| {
            Arc::new(StoredEvent::new(
                tenant_id,
                channel.to_owned(),
                to_u64(row.get(0)),
                row.get(1),
                row.get::<_, Option<i64>>(2).map(to_u64),
                to_u64(row.get(3)),
                row.get(4),
            ))
        })
        .collect())
}

pub(super) async fn channel_bounds(
    client: &Object,
    tenant_id: TenantId,
    channel: &str,
) -> Result<ChannelBounds, StoreError> {
    let statement = client
        .prepare_cached(
            r#"SELECT c.next_offset,
                   (SELECT min(m."offset") FROM messages m WHERE m.channel_id = c.id)
               FROM channels c WHERE c.tenant_id = $1 AND c.name = $2"#,
        )
        .await
        .map_err(db_error)?;
    let row = client
        .query_opt(&statement, &[&tenant_id, &channel])
        .await
        .map_err(db_error)?;
    Ok(match row {
        None => ChannelBounds {
            first_offset: 1,
            next_offset: 1,
        },
        Some(row) => {
            let next: i64 = row.get(0);
            let first: Option<i64> = row.get(1);
            ChannelBounds {
                first_offset: to_u64(first.unwrap_or(next)),
                next_offset: to_u64(next),
            }
        }
    })
}

pub(super) async fn devices(
    client: &Object,
    tenant_id: TenantId,
    now_ms: u64,
) -> Result<Vec<DeviceInfo>, StoreError> {
    let today = to_i64(now_ms - now_ms % DAY_MS);
    let mut commands = super::readings::declared_commands(client, tenant_id).await?;
    let statement = client
        .prepare_cached(
            "SELECT id, online, last_seen_ms, firmware_version, day_start_ms, day_count,
                    rssi_dbm, rssi_ms
             FROM devices WHERE tenant_id = $1 AND NOT revoked ORDER BY id",
        )
        .await
        .map_err(db_error)?;
    let rows = client
        .query(&statement, &[&tenant_id])
        .await
        .map_err(db_error)?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let day_start: i64 = row.get(4);
            let day_count: i64 = row.get(5);
            let id: String = row.get(0);
            DeviceInfo {
                commands: commands.remove(&id).unwrap_or_default(),
                id,
                online: row.get(1),
                last_seen_ms: row.get::<_, Option<i64>>(2).map(to_u64),
                firmware_version: row.get(3),
                messages_today: if day_start == today {
                    to_u64(day_count)
                } else {
                    0
                },
                rssi_dbm: row.get(6),
                rssi_ms: row.get::<_, Option<i64>>(7).map(to_u64),
            }
        })
        .collect())
}

pub(super) async fn channels(
    client: &Object,
    tenant_id: TenantId,
) -> Result<Vec<ChannelInfo>, StoreError> {
    let statement = client
        .prepare_cached(
            r#"SELECT c.name, c.next_offset,
                   (SELECT min(m."offset") FROM messages m WHERE m.channel_id = c.id),
                   (SELECT m.server_time_ms FROM messages m WHERE m.channel_id = c.id
                    ORDER BY m."offset" DESC LIMIT 1)
               FROM channels c WHERE c.tenant_id = $1 ORDER BY c.name"#,
        )
        .await
        .map_err(db_error)?;
    let rows = client
        .query(&statement, &[&tenant_id])
        .await
        .map_err(db_error)?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let next: i64 = row.get(1);
            ChannelInfo {
                name: row.get(0),
                first_offset: to_u64(row.get::<_, Option<i64>>(2).unwrap_or(next)),
                next_offset: to_u64(next),
                last_time_ms: row.get::<_, Option<i64>>(3).map(to_u64),
            }
        })
        .collect())
}

pub(super) async fn device_tenant(
    client: &Object,
    device_id: &str,
) -> Result<Option<TenantId>, StoreError> {
    let statement = client
        .prepare_cached("SELECT tenant_id FROM devices WHERE id = $1 AND NOT revoked")
        .await
        .map_err(db_error)?;
    Ok(client
        .query_opt(&statement, &[&device_id])
        .await
        .map_err(db_error)?
        .map(|row| row.get(0)))
}

pub(super) async fn revocations_since(
    client: &Object,
    after: i64,
) -> Result<(Vec<Revocation>, i64), StoreError> {
    let statement = client
        .prepare_cached("SELECT id, kind, subject FROM revocations WHERE id > $1 ORDER BY id")
        .await
        .map_err(db_error)?;
    let rows = client
        .query(&statement, &[&after])
        .await
        .map_err(db_error)?;
    let mut last = after;
    let mut revocations = Vec::new();
    for row in rows {
        last = row.get(0);
        let kind: String = row.get(1);
        let subject: String = row.get(2);
        revocations.extend(Revocation::from_row(&kind, subject));
    }
    Ok((revocations, last))
}
