//! Reads, on the pool's read-only connections (WAL: readers never wait for
//! the writer, and see only committed transactions).

use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};

use super::schema::{to_i64, to_u64};
use crate::auth;
use crate::store::{
    ChannelBounds, ChannelFilter, ChannelInfo, DeviceIdentity, DeviceInfo, KeyIdentity, ReadRange,
    Revocation, StoreError, StoredEvent, TenantId,
};

pub(super) const DAY_MS: u64 = 86_400_000;

pub(super) fn authenticate_device(
    conn: &Connection,
    token: &str,
) -> Result<Option<DeviceIdentity>, StoreError> {
    let Some(lookup) = auth::lookup_part(token, auth::DEVICE_TOKEN_PREFIX) else {
        return Ok(None);
    };
    // Cached: every device connect asks this (and `device_tenant`), and
    // parsing the SQL again was a tenth of the server's CPU while a fleet
    // connected (docs/performance.md).
    let row = conn
        .prepare_cached(
            "SELECT id, tenant_id, token_hash FROM devices
             WHERE token_lookup = ?1 AND revoked = 0",
        )?
        .query_row(params![lookup], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, Vec<u8>>(2)?,
            ))
        })
        .optional()?;
    Ok(row.and_then(|(device_id, tenant_id, hash)| {
        auth::verify_secret(token, &hash).then_some(DeviceIdentity {
            device_id,
            tenant_id,
        })
    }))
}

pub(super) fn authenticate_key(
    conn: &Connection,
    key: &str,
) -> Result<Option<KeyIdentity>, StoreError> {
    let Some(lookup) = auth::lookup_part(key, auth::RECEIVER_KEY_PREFIX) else {
        return Ok(None);
    };
    let row = conn
        .query_row(
            "SELECT id, tenant_id, hash, channels, can_command FROM keys
             WHERE lookup = ?1 AND revoked = 0",
            params![lookup],
            |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, Vec<u8>>(2)?,
                    row.get::<_, Option<String>>(3)?,
                    row.get::<_, bool>(4)?,
                ))
            },
        )
        .optional()?;
    let Some((key_id, tenant_id, hash, channels, can_command)) = row else {
        return Ok(None);
    };
    if !auth::verify_secret(key, &hash) {
        return Ok(None);
    }
    let channels = match channels {
        None => ChannelFilter::ALL,
        Some(text) => ChannelFilter::only(
            serde_json::from_str(&text).map_err(|error| StoreError::Database(error.to_string()))?,
        ),
    };
    Ok(Some(KeyIdentity {
        key_id,
        tenant_id,
        channels,
        can_command,
        session: None,
    }))
}

pub(super) fn events(
    conn: &Connection,
    tenant_id: TenantId,
    channel: &str,
    range: ReadRange,
    limit: usize,
) -> Result<Vec<Arc<StoredEvent>>, StoreError> {
    let Some(channel_id) = conn
        .query_row(
            "SELECT id FROM channels WHERE tenant_id = ?1 AND name = ?2",
            params![tenant_id, channel],
            |row| row.get::<_, i64>(0),
        )
        .optional()?
    else {
        return Ok(Vec::new());
    };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let map = |row: &rusqlite::Row<'_>| {
        Ok(Arc::new(StoredEvent::new(
            tenant_id,
            channel.to_owned(),
            to_u64(row.get(0)?),
            row.get(1)?,
            row.get::<_, Option<i64>>(2)?.map(to_u64),
            to_u64(row.get(3)?),
            row.get(4)?,
        )))
    };
    let rows = match range {
        ReadRange::Offsets { from, until } => {
            let mut statement = conn.prepare_cached(
                "SELECT offset, device_id, device_time_ms, server_time_ms, payload FROM messages
                 WHERE channel_id = ?1 AND offset >= ?2 AND offset < ?3 ORDER BY offset LIMIT ?4",
            )?;
            let until = until.map_or(i64::MAX, to_i64);
            statement
                .query_map(params![channel_id, to_i64(from), until, limit], map)?
                .collect::<Result<Vec<_>, _>>()?
        }
        ReadRange::Time {
            since_ms,
            until_ms,
            from,
        } => {
            let mut statement = conn.prepare_cached(
                "SELECT offset, device_id, device_time_ms, server_time_ms, payload FROM messages
                 WHERE channel_id = ?1 AND server_time_ms >= ?2 AND server_time_ms < ?3
                 AND offset >= ?4 ORDER BY offset LIMIT ?5",
            )?;
            let until = until_ms.map_or(i64::MAX, to_i64);
            statement
                .query_map(
                    params![channel_id, to_i64(since_ms), until, to_i64(from), limit],
                    map,
                )?
                .collect::<Result<Vec<_>, _>>()?
        }
    };
    Ok(rows)
}

pub(super) fn channel_bounds(
    conn: &Connection,
    tenant_id: TenantId,
    channel: &str,
) -> Result<ChannelBounds, StoreError> {
    let row = conn
        .query_row(
            "SELECT c.next_offset, (SELECT min(offset) FROM messages m WHERE m.channel_id = c.id)
             FROM channels c WHERE c.tenant_id = ?1 AND c.name = ?2",
            params![tenant_id, channel],
            |row| Ok((row.get::<_, i64>(0)?, row.get::<_, Option<i64>>(1)?)),
        )
        .optional()?;
    Ok(match row {
        None => ChannelBounds {
            first_offset: 1,
            next_offset: 1,
        },
        Some((next, first)) => ChannelBounds {
            first_offset: to_u64(first.unwrap_or(next)),
            next_offset: to_u64(next),
        },
    })
}

pub(super) fn devices(
    conn: &Connection,
    tenant_id: TenantId,
    now_ms: u64,
) -> Result<Vec<DeviceInfo>, StoreError> {
    let today = to_i64(now_ms - now_ms % DAY_MS);
    let mut commands = super::readings::declared_commands(conn, tenant_id)?;
    let mut statement = conn.prepare_cached(
        "SELECT id, online, last_seen_ms, firmware_version, day_start_ms, day_count,
                rssi_dbm, rssi_ms
         FROM devices WHERE tenant_id = ?1 AND revoked = 0 ORDER BY id",
    )?;
    let rows = statement
        .query_map(params![tenant_id], |row| {
            let day_start: i64 = row.get(4)?;
            let day_count: i64 = row.get(5)?;
            let id: String = row.get(0)?;
            Ok(DeviceInfo {
                commands: commands.remove(&id).unwrap_or_default(),
                id,
                online: row.get(1)?,
                last_seen_ms: row.get::<_, Option<i64>>(2)?.map(to_u64),
                firmware_version: row.get(3)?,
                messages_today: if day_start == today {
                    to_u64(day_count)
                } else {
                    0
                },
                rssi_dbm: row.get(6)?,
                rssi_ms: row.get::<_, Option<i64>>(7)?.map(to_u64),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub(super) fn channels(
    conn: &Connection,
    tenant_id: TenantId,
) -> Result<Vec<ChannelInfo>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT c.name, c.next_offset,
            (SELECT min(offset) FROM messages m WHERE m.channel_id = c.id),
            (SELECT server_time_ms FROM messages m WHERE m.channel_id = c.id
             ORDER BY offset DESC LIMIT 1)
         FROM channels c WHERE c.tenant_id = ?1 ORDER BY c.name",
    )?;
    let rows = statement
        .query_map(params![tenant_id], |row| {
            let next: i64 = row.get(1)?;
            Ok(ChannelInfo {
                name: row.get(0)?,
                first_offset: to_u64(row.get::<_, Option<i64>>(2)?.unwrap_or(next)),
                next_offset: to_u64(next),
                last_time_ms: row.get::<_, Option<i64>>(3)?.map(to_u64),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub(super) fn device_tenant(
    conn: &Connection,
    device_id: &str,
) -> Result<Option<TenantId>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT tenant_id FROM devices WHERE id = ?1 AND revoked = 0")?
        .query_row(params![device_id], |row| row.get(0))
        .optional()?)
}

pub(super) fn revocations_since(
    conn: &Connection,
    after: i64,
) -> Result<(Vec<Revocation>, i64), StoreError> {
    let mut statement =
        conn.prepare_cached("SELECT id, kind, subject FROM revocations WHERE id > ?1 ORDER BY id")?;
    let mut last = after;
    let mut revocations = Vec::new();
    let rows = statement.query_map(params![after], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
        ))
    })?;
    for row in rows {
        let (id, kind, subject) = row?;
        last = id;
        revocations.extend(Revocation::from_row(&kind, subject));
    }
    Ok((revocations, last))
}
