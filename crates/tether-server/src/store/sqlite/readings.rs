//! Readings: descriptions, declared commands and signal strength (written
//! by the writer), and downsampled series (read on the reader pool from
//! the rollups `rollup.rs` keeps and the events not rolled up yet).

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};

use super::schema::{to_i64, to_u64};
use crate::store::readings::{Bucket, Buckets};
use crate::store::{
    ChannelDescription, DeclaredCommand, Series, SeriesQuery, StoreError, TenantId, rollup_width,
};

/// A write about readings, done by the writer in its batch.
#[derive(Debug)]
pub(super) enum ReadingsWrite {
    Describe {
        tenant_id: TenantId,
        device_id: String,
        channel: String,
        fields: String,
        now_ms: u64,
    },
    Commands {
        device_id: String,
        commands: Vec<DeclaredCommand>,
    },
    Rssi {
        device_id: String,
        rssi_dbm: i16,
        now_ms: u64,
    },
}

impl ReadingsWrite {
    pub(super) fn execute(&self, tx: &Connection) -> Result<(), StoreError> {
        match self {
            ReadingsWrite::Describe {
                tenant_id,
                device_id,
                channel,
                fields,
                now_ms,
            } => {
                tx.prepare_cached(
                    "INSERT INTO channel_descriptions(tenant_id, channel, device_id, fields, updated_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(tenant_id, channel, device_id) DO UPDATE SET
                     fields = excluded.fields, updated_ms = excluded.updated_ms",
                )?
                .execute(params![tenant_id, channel, device_id, fields, to_i64(*now_ms)])?;
            }
            ReadingsWrite::Commands {
                device_id,
                commands,
            } => {
                tx.prepare_cached("DELETE FROM device_commands WHERE device_id = ?1")?
                    .execute(params![device_id])?;
                let mut insert = tx.prepare_cached(
                    "INSERT INTO device_commands(device_id, position, channel, label, example)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                for (position, command) in commands.iter().enumerate() {
                    insert.execute(params![
                        device_id,
                        i64::try_from(position).unwrap_or(i64::MAX),
                        command.channel,
                        command.label,
                        command.example
                    ])?;
                }
            }
            ReadingsWrite::Rssi {
                device_id,
                rssi_dbm,
                now_ms,
            } => {
                tx.prepare_cached("UPDATE devices SET rssi_dbm = ?2, rssi_ms = ?3 WHERE id = ?1")?
                    .execute(params![device_id, rssi_dbm, to_i64(*now_ms)])?;
            }
        }
        Ok(())
    }
}

pub(super) fn channel_descriptions(
    conn: &Connection,
    tenant_id: TenantId,
    channel: &str,
) -> Result<Vec<ChannelDescription>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT device_id, fields, updated_ms FROM channel_descriptions
         WHERE tenant_id = ?1 AND channel = ?2 ORDER BY device_id",
    )?;
    let rows = statement
        .query_map(params![tenant_id, channel], |row| {
            Ok(ChannelDescription {
                device: row.get(0)?,
                fields: row.get(1)?,
                updated_ms: to_u64(row.get(2)?),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// The commands each device of the tenant declared, by device.
pub(super) fn declared_commands(
    conn: &Connection,
    tenant_id: TenantId,
) -> Result<BTreeMap<String, Vec<DeclaredCommand>>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT c.device_id, c.channel, c.label, c.example FROM device_commands c
         JOIN devices d ON d.id = c.device_id
         WHERE d.tenant_id = ?1 AND d.revoked = 0 ORDER BY c.device_id, c.position",
    )?;
    let mut commands: BTreeMap<String, Vec<DeclaredCommand>> = BTreeMap::new();
    let rows = statement.query_map(params![tenant_id], |row| {
        Ok((
            row.get::<_, String>(0)?,
            DeclaredCommand {
                channel: row.get(1)?,
                label: row.get(2)?,
                example: row.get(3)?,
            },
        ))
    })?;
    for row in rows {
        let (device, command) = row?;
        commands.entry(device).or_default().push(command);
    }
    Ok(commands)
}

/// The numeric values of the events in a range, per device, member and
/// bucket: `json_each` lists a payload's top-level members (or the payload
/// itself when it is a scalar, with a NULL key; an array's elements, whose
/// keys are integers, are not fields). `{filter}` narrows the
/// events further; `{time}` is `m.server_time_ms` for the time index, or
/// `+m.server_time_ms` to keep the planner on the offset range of
/// `{filter}` (the events after the rollups: few, however long the range).
fn raw_aggregate(filter: &str, time: &str) -> String {
    format!(
        "SELECT m.device_id, coalesce(j.key, ''), (m.server_time_ms / ?2) * ?2,
                count(*), total(j.value), min(j.value), max(j.value)
         FROM messages m, json_each(m.payload) j
         WHERE m.channel_id = ?1 AND {filter}
           AND {time} >= ?3 AND {time} < ?4
           AND (?5 IS NULL OR m.device_id IN (SELECT value FROM json_each(?5)))
           AND j.type IN ('integer', 'real') AND typeof(j.key) != 'integer'
         GROUP BY 1, 2, 3"
    )
}

fn collect(
    conn: &Connection,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
    into: &mut Buckets,
) -> Result<(), StoreError> {
    let mut statement = conn.prepare_cached(sql)?;
    let mut rows = statement.query(params)?;
    while let Some(row) = rows.next()? {
        let key = (
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get(2)?,
        );
        let bucket = Bucket {
            count: to_u64(row.get(3)?),
            total: row.get(4)?,
            min: row.get(5)?,
            max: row.get(6)?,
        };
        into.add(key, bucket);
    }
    Ok(())
}

pub(super) fn series(
    conn: &Connection,
    tenant_id: TenantId,
    channel: &str,
    query: &SeriesQuery,
) -> Result<Series, StoreError> {
    let width = query.bucket_ms.max(1);
    let since = to_i64(query.since_ms - query.since_ms % width);
    let until = query.until_ms.map_or(i64::MAX, |until| {
        to_i64(until.saturating_add(width - 1) / width * width)
    });
    let devices = query
        .devices
        .as_ref()
        .map(|devices| serde_json::to_string(devices).unwrap_or_else(|_| "[]".to_owned()));
    let width = to_i64(width);
    // One snapshot for every statement: the rollups, their progress and
    // the events after it agree (WAL readers see whole transactions).
    let tx = conn.unchecked_transaction()?;
    let Some((channel_id, next_offset)) = tx
        .query_row(
            "SELECT id, next_offset FROM channels WHERE tenant_id = ?1 AND name = ?2",
            params![tenant_id, channel],
            |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)),
        )
        .optional()?
    else {
        return Ok(Series {
            next_offset: 1,
            points: Vec::new(),
        });
    };
    let mut buckets = Buckets::default();
    match rollup_width(to_u64(width)) {
        Some(rollup) => {
            let rolled: i64 = tx
                .query_row(
                    "SELECT rolled_offset FROM rollup_progress WHERE channel_id = ?1",
                    params![channel_id],
                    |row| row.get(0),
                )
                .optional()?
                .unwrap_or(0);
            collect(
                &tx,
                "SELECT device_id, key, (bucket_ms / ?2) * ?2, sum(n), sum(total), min(low), max(high)
                 FROM rollups
                 WHERE channel_id = ?1 AND width_ms = ?6
                   AND bucket_ms >= ?3 AND bucket_ms < ?4
                   AND (?5 IS NULL OR device_id IN (SELECT value FROM json_each(?5)))
                 GROUP BY 1, 2, 3",
                params![channel_id, width, since, until, devices, to_i64(rollup)],
                &mut buckets,
            )?;
            collect(
                &tx,
                &raw_aggregate("m.offset > ?6", "+m.server_time_ms"),
                params![channel_id, width, since, until, devices, rolled],
                &mut buckets,
            )?;
        }
        None => collect(
            &tx,
            &raw_aggregate("1", "m.server_time_ms"),
            params![channel_id, width, since, until, devices],
            &mut buckets,
        )?,
    }
    tx.finish()?;
    Ok(buckets.into_series(to_u64(next_offset)))
}
