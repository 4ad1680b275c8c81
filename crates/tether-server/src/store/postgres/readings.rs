//! Readings on PostgreSQL: descriptions, declared commands and signal
//! strength, the roll-ups, and downsampled series, with the same meaning
//! as the SQLite store's (see the [readings docs](crate::store::Series)).
//!
//! Everything numeric is computed in PostgreSQL: a payload's numeric
//! members come out of `jsonb_each` ([`NUMBERS`]), roll-ups are one
//! `INSERT … SELECT … ON CONFLICT` per chunk for every width at once, and a
//! series is two grouped queries (the roll-ups, then the events after
//! them) in one `REPEATABLE READ` snapshot, merged here per bucket.
//!
//! These writes do not go through the writer's batches: each is one short
//! transaction on a pooled connection. Roll-ups may run on every node at
//! once: a chunk locks its channel's `rollup_progress` row, reads the
//! progress under that lock, and moves it in the same transaction, so an
//! event is added to the roll-ups exactly once whoever gets there first.

use std::collections::BTreeMap;

use deadpool_postgres::{GenericClient, Object};
use tokio_postgres::IsolationLevel;

use super::schema::db_error;
use super::writer::{to_i64, to_u64};
use crate::store::readings::{Bucket, Buckets};
use crate::store::{
    ChannelDescription, DeclaredCommand, ROLLUP_WIDTHS_MS, Series, SeriesQuery, StoreError,
    TenantId, rollup_width,
};

/// Events one roll-up transaction reads at most.
const CHUNK: i64 = 5000;

/// `FROM messages m` joined with the numeric values of each payload: its
/// top-level members that are JSON numbers (`j.key`, `j.v`), or the payload
/// itself when it is a number (key `''`), as SQLite's `json_each` gives
/// them. Payloads are checked on the way in (`Payload::check_json` refuses
/// numbers beyond `f64`); one that is not (written by other means) is left
/// out rather than failing every series of its channel.
const NUMBERS: &str = "messages m
     CROSS JOIN LATERAL (SELECT m.payload::jsonb AS p) d
     CROSS JOIN LATERAL (
         SELECT e.key, e.value AS v FROM jsonb_each(
             CASE WHEN jsonb_typeof(d.p) = 'object' THEN d.p ELSE '{}'::jsonb END) e
         UNION ALL
         SELECT '', d.p WHERE jsonb_typeof(d.p) = 'number'
     ) n
     CROSS JOIN LATERAL (
         SELECT n.key, n.v::float8 AS v
         WHERE CASE WHEN jsonb_typeof(n.v) = 'number'
                    THEN abs(n.v::numeric) <= 1.7976931348623157e308 ELSE false END
     ) j";

pub(super) async fn describe_channel(
    client: &Object,
    tenant_id: TenantId,
    device_id: &str,
    channel: &str,
    fields: &str,
    now_ms: u64,
) -> Result<(), StoreError> {
    client
        .execute(
            "INSERT INTO channel_descriptions(tenant_id, channel, device_id, fields, updated_ms)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT(tenant_id, channel, device_id) DO UPDATE SET
             fields = excluded.fields, updated_ms = excluded.updated_ms",
            &[&tenant_id, &channel, &device_id, &fields, &to_i64(now_ms)],
        )
        .await
        .map_err(db_error)?;
    Ok(())
}

pub(super) async fn channel_descriptions(
    client: &Object,
    tenant_id: TenantId,
    channel: &str,
) -> Result<Vec<ChannelDescription>, StoreError> {
    let rows = client
        .query(
            "SELECT device_id, fields, updated_ms FROM channel_descriptions
             WHERE tenant_id = $1 AND channel = $2 ORDER BY device_id",
            &[&tenant_id, &channel],
        )
        .await
        .map_err(db_error)?;
    Ok(rows
        .into_iter()
        .map(|row| ChannelDescription {
            device: row.get(0),
            fields: row.get(1),
            updated_ms: to_u64(row.get(2)),
        })
        .collect())
}

pub(super) async fn set_commands(
    client: &mut Object,
    device_id: &str,
    commands: &[DeclaredCommand],
) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(db_error)?;
    // The device's row lock orders two sessions' replacements.
    tx.execute(
        "SELECT 1 FROM devices WHERE id = $1 FOR UPDATE",
        &[&device_id],
    )
    .await
    .map_err(db_error)?;
    tx.execute(
        "DELETE FROM device_commands WHERE device_id = $1",
        &[&device_id],
    )
    .await
    .map_err(db_error)?;
    let channels: Vec<&str> = commands.iter().map(|c| c.channel.as_str()).collect();
    let labels: Vec<&str> = commands.iter().map(|c| c.label.as_str()).collect();
    let examples: Vec<&str> = commands.iter().map(|c| c.example.as_str()).collect();
    tx.execute(
        "INSERT INTO device_commands(device_id, position, channel, label, example)
         SELECT $1, c.position - 1, c.channel, c.label, c.example
         FROM unnest($2::text[], $3::text[], $4::text[])
              WITH ORDINALITY AS c(channel, label, example, position)",
        &[&device_id, &channels, &labels, &examples],
    )
    .await
    .map_err(db_error)?;
    tx.commit().await.map_err(db_error)
}

pub(super) async fn set_rssi(
    client: &Object,
    device_id: &str,
    rssi_dbm: i16,
    now_ms: u64,
) -> Result<(), StoreError> {
    client
        .execute(
            "UPDATE devices SET rssi_dbm = $2, rssi_ms = $3 WHERE id = $1",
            &[&device_id, &rssi_dbm, &to_i64(now_ms)],
        )
        .await
        .map_err(db_error)?;
    Ok(())
}

/// The commands each device of the tenant declared, by device.
pub(super) async fn declared_commands(
    client: &Object,
    tenant_id: TenantId,
) -> Result<BTreeMap<String, Vec<DeclaredCommand>>, StoreError> {
    let rows = client
        .query(
            "SELECT c.device_id, c.channel, c.label, c.example FROM device_commands c
             JOIN devices d ON d.id = c.device_id
             WHERE d.tenant_id = $1 AND NOT d.revoked ORDER BY c.device_id, c.position",
            &[&tenant_id],
        )
        .await
        .map_err(db_error)?;
    let mut commands: BTreeMap<String, Vec<DeclaredCommand>> = BTreeMap::new();
    for row in rows {
        commands
            .entry(row.get(0))
            .or_default()
            .push(DeclaredCommand {
                channel: row.get(1),
                label: row.get(2),
                example: row.get(3),
            });
    }
    Ok(commands)
}

fn collect(rows: Vec<tokio_postgres::Row>, into: &mut Buckets) {
    for row in rows {
        let bucket = Bucket {
            count: to_u64(row.get(3)),
            total: row.get(4),
            min: row.get(5),
            max: row.get(6),
        };
        into.add((row.get(0), row.get(1), row.get(2)), bucket);
    }
}

/// The numeric values of a channel's events per device, member and bucket
/// of `$2`, from `$3` (inclusive) to `$4` (exclusive), of the devices `$5`
/// (all: NULL), narrowed further by `filter`.
fn raw_aggregate(filter: &str) -> String {
    format!(
        "SELECT m.device_id, j.key, (m.server_time_ms / $2) * $2,
                count(*), sum(j.v), min(j.v), max(j.v)
         FROM {NUMBERS}
         WHERE m.channel_id = $1 AND {filter}
           AND m.server_time_ms >= $3 AND m.server_time_ms < $4
           AND ($5::text[] IS NULL OR m.device_id = ANY($5))
         GROUP BY 1, 2, 3"
    )
}

pub(super) async fn series(
    client: &mut Object,
    tenant_id: TenantId,
    channel: &str,
    query: &SeriesQuery,
) -> Result<Series, StoreError> {
    let width = query.bucket_ms.max(1);
    let since = to_i64(query.since_ms - query.since_ms % width);
    let until = query.until_ms.map_or(i64::MAX, |until| {
        to_i64(until.saturating_add(width - 1) / width * width)
    });
    let devices: Option<Vec<String>> = query.devices.clone();
    let rollup = rollup_width(width);
    let width = to_i64(width);
    // One snapshot for every statement: the roll-ups, their progress and
    // the events after it agree.
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(db_error)?;
    let Some(row) = tx
        .query_opt(
            "SELECT id, next_offset FROM channels WHERE tenant_id = $1 AND name = $2",
            &[&tenant_id, &channel],
        )
        .await
        .map_err(db_error)?
    else {
        return Ok(Series {
            next_offset: 1,
            points: Vec::new(),
        });
    };
    let channel_id: i64 = row.get(0);
    let next_offset: i64 = row.get(1);
    let mut buckets = Buckets::default();
    match rollup {
        Some(rollup) => {
            let rolled: i64 = tx
                .query_opt(
                    "SELECT rolled_offset FROM rollup_progress WHERE channel_id = $1",
                    &[&channel_id],
                )
                .await
                .map_err(db_error)?
                .map_or(0, |row| row.get(0));
            let statement = tx
                .prepare_cached(
                    "SELECT device_id, key, (bucket_ms / $2) * $2, sum(n)::bigint, sum(total),
                            min(low), max(high)
                     FROM rollups
                     WHERE channel_id = $1 AND width_ms = $6
                       AND bucket_ms >= $3 AND bucket_ms < $4
                       AND ($5::text[] IS NULL OR device_id = ANY($5))
                     GROUP BY 1, 2, 3",
                )
                .await
                .map_err(db_error)?;
            let rows = tx
                .query(
                    &statement,
                    &[
                        &channel_id,
                        &width,
                        &since,
                        &until,
                        &devices,
                        &to_i64(rollup),
                    ],
                )
                .await
                .map_err(db_error)?;
            collect(rows, &mut buckets);
            let statement = tx
                .prepare_cached(&raw_aggregate(r#"m."offset" > $6"#))
                .await
                .map_err(db_error)?;
            let rows = tx
                .query(
                    &statement,
                    &[&channel_id, &width, &since, &until, &devices, &rolled],
                )
                .await
                .map_err(db_error)?;
            collect(rows, &mut buckets);
        }
        None => {
            let statement = tx
                .prepare_cached(&raw_aggregate("true"))
                .await
                .map_err(db_error)?;
            let rows = tx
                .query(&statement, &[&channel_id, &width, &since, &until, &devices])
                .await
                .map_err(db_error)?;
            collect(rows, &mut buckets);
        }
    }
    tx.commit().await.map_err(db_error)?;
    Ok(buckets.into_series(to_u64(next_offset)))
}

/// Rolls every channel's events after its progress up, a chunk per
/// transaction; returns how many events this call added.
pub(super) async fn roll_up(client: &mut Object) -> Result<u64, StoreError> {
    let pending = client
        .query(
            "SELECT c.id, c.next_offset - 1
             FROM channels c LEFT JOIN rollup_progress p ON p.channel_id = c.id
             WHERE c.next_offset - 1 > coalesce(p.rolled_offset, 0)",
            &[],
        )
        .await
        .map_err(db_error)?;
    let widths: Vec<i64> = ROLLUP_WIDTHS_MS.iter().copied().map(to_i64).collect();
    let narrowest = widths.first().copied().unwrap_or(60_000);
    let mut rolled = 0;
    for row in pending {
        let channel_id: i64 = row.get(0);
        // Every offset up to here was committed when it was read (offsets
        // commit in order with their channel's counter).
        let through: i64 = row.get(1);
        loop {
            let tx = client.transaction().await.map_err(db_error)?;
            tx.execute(
                "INSERT INTO rollup_progress(channel_id, rolled_offset) VALUES ($1, 0)
                 ON CONFLICT(channel_id) DO NOTHING",
                &[&channel_id],
            )
            .await
            .map_err(db_error)?;
            let from: i64 = tx
                .query_one(
                    "SELECT rolled_offset FROM rollup_progress WHERE channel_id = $1 FOR UPDATE",
                    &[&channel_id],
                )
                .await
                .map_err(db_error)?
                .get(0);
            if from >= through {
                tx.commit().await.map_err(db_error)?;
                break;
            }
            let to = through.min(from.saturating_add(CHUNK));
            let statement = tx
                .prepare_cached(&format!(
                    "WITH chunk AS (
                         SELECT (m.server_time_ms / $4) * $4 AS bucket_ms, m.device_id, j.key,
                                count(*) AS n, sum(j.v) AS total, min(j.v) AS low,
                                max(j.v) AS high
                         FROM {NUMBERS}
                         WHERE m.channel_id = $1 AND m.\"offset\" > $2 AND m.\"offset\" <= $3
                         GROUP BY 1, 2, 3)
                     INSERT INTO rollups AS r(channel_id, width_ms, bucket_ms, device_id, key,
                                              n, total, low, high)
                     SELECT $1, w.width, (c.bucket_ms / w.width) * w.width, c.device_id, c.key,
                            sum(c.n), sum(c.total), min(c.low), max(c.high)
                     FROM chunk c CROSS JOIN unnest($5::bigint[]) AS w(width)
                     GROUP BY 2, 3, 4, 5
                     ON CONFLICT(channel_id, width_ms, bucket_ms, device_id, key) DO UPDATE SET
                         n = r.n + excluded.n, total = r.total + excluded.total,
                         low = least(r.low, excluded.low), high = greatest(r.high, excluded.high)"
                ))
                .await
                .map_err(db_error)?;
            tx.execute(&statement, &[&channel_id, &from, &to, &narrowest, &widths])
                .await
                .map_err(db_error)?;
            tx.execute(
                "UPDATE rollup_progress SET rolled_offset = $2 WHERE channel_id = $1",
                &[&channel_id, &to],
            )
            .await
            .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            rolled += to_u64(to - from);
        }
    }
    Ok(rolled)
}

/// Forgets the roll-ups of a channel's buckets that end at or before its
/// oldest remaining event (retention deleted what they summed up); all of
/// them when no event remains.
pub(super) async fn prune(
    tx: &deadpool_postgres::Transaction<'_>,
    channel_id: i64,
) -> Result<(), StoreError> {
    let widths: Vec<i64> = ROLLUP_WIDTHS_MS.iter().copied().map(to_i64).collect();
    tx.execute(
        "DELETE FROM rollups r USING unnest($2::bigint[]) AS w(width)
         WHERE r.channel_id = $1 AND r.width_ms = w.width
           AND r.bucket_ms <= coalesce(
               (SELECT min(server_time_ms) FROM messages WHERE channel_id = $1),
               9223372036854775807) - w.width",
        &[&channel_id, &widths],
    )
    .await
    .map_err(db_error)?;
    Ok(())
}
