//! The HTTP API of readings: what devices said their fields mean, series
//! downsampled in the database, and exports streamed from it (the routes
//! are in `router`; authentication and errors as in `http_api`).
//!
//! | method and path | what |
//! | --- | --- |
//! | `GET /v1/descriptions?channel=C` | every device's field descriptions of the channel |
//! | `GET /v1/series?channel=C&since_ms=T&until_ms=U&buckets=N&devices=a,b` | min, max and mean per device, numeric field and bucket |
//! | `GET /v1/export?channel=C&since_ms=T&until_ms=U&format=csv\|jsonl&devices=a,b` | the events, streamed as CSV or JSON lines |
//!
//! Times are server times (when the server stored an event), unix ms;
//! `until_ms` is exclusive and open when left out. A series' buckets are
//! `bucket_ms` wide (the narrowest of `store::BUCKET_WIDTHS_MS` that cuts
//! the range into at most `buckets`, 600 by default, or `bucket_ms` itself
//! when given) and start at multiples of it; each point is `[bucket start,
//! count, min, max, mean]`. A series covers exactly the events below its
//! `next_offset`: subscribe from there to continue live with no gap.
//!
//! An export reads the channel page by page (never the whole range at
//! once) up to the `next_offset` it saw when it started, and streams each
//! page out as it is read. CSV has the columns `offset`, `server_time`,
//! `device_time` (RFC 3339, UTC), `device`, one column per described field
//! (its label and unit in the header; the value scaled as the device
//! described it) and `payload` (the JSON text); JSON lines have one event
//! object per line, as the receiver protocol's `event`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tether_proto::{ErrorCode, FieldDescription, Fields, validate_channel, validate_device_id};

use crate::AppState;
use crate::http_util::{authenticate, store_error, wire_error};
use crate::store::{
    BUCKET_WIDTHS_MS, ChannelDescription, KeyIdentity, ReadRange, SeriesQuery, StoredEvent,
    bucket_width,
};

/// Buckets a series has by default, and at most.
const DEFAULT_BUCKETS: u64 = 600;
const MAX_BUCKETS: u64 = 5_000;
/// Events per store read while exporting.
const EXPORT_PAGE: usize = 1_000;

/// The channel and devices of a readings request, checked against the key.
#[derive(Debug, Deserialize)]
pub(crate) struct ChannelQuery {
    channel: String,
    since_ms: Option<u64>,
    until_ms: Option<u64>,
    buckets: Option<u64>,
    bucket_ms: Option<u64>,
    devices: Option<String>,
    format: Option<String>,
}

type Checked = (KeyIdentity, ChannelQuery, Option<Vec<String>>);

async fn check(
    state: &AppState,
    headers: &HeaderMap,
    query: Result<Query<ChannelQuery>, axum::extract::rejection::QueryRejection>,
    usage: &str,
) -> Result<Checked, Response> {
    let identity = authenticate(state, headers).await?;
    let Ok(Query(query)) = query else {
        return Err(wire_error(ErrorCode::INVALID_FIELD, usage));
    };
    if validate_channel(&query.channel).is_err() {
        return Err(wire_error(ErrorCode::INVALID_FIELD, "invalid channel name"));
    }
    if !identity.channels.allows(&query.channel) {
        return Err(wire_error(
            ErrorCode::FORBIDDEN,
            "this key may not read that channel",
        ));
    }
    let devices = match &query.devices {
        None => None,
        Some(list) => {
            let devices: Vec<String> = list
                .split(',')
                .filter(|device| !device.is_empty())
                .map(str::to_owned)
                .collect();
            if devices
                .iter()
                .any(|device| validate_device_id(device).is_err())
            {
                return Err(wire_error(
                    ErrorCode::INVALID_FIELD,
                    "devices: a comma-separated list of device ids",
                ));
            }
            Some(devices)
        }
    };
    if let (Some(since), Some(until)) = (query.since_ms, query.until_ms)
        && until <= since
    {
        return Err(wire_error(
            ErrorCode::INVALID_FIELD,
            "until_ms must be after since_ms",
        ));
    }
    Ok((identity, query, devices))
}

/// `GET /v1/descriptions?channel=C`.
pub(crate) async fn descriptions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<ChannelQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let (identity, query, _) = match check(&state, &headers, query, "query: channel=<name>").await {
        Ok(checked) => checked,
        Err(response) => return response,
    };
    match state
        .store
        .channel_descriptions(identity.tenant_id, &query.channel)
        .await
    {
        Ok(descriptions) => {
            Json(json!({ "channel": query.channel, "descriptions": descriptions })).into_response()
        }
        Err(error) => store_error(&error),
    }
}

/// `GET /v1/series?channel=C&since_ms=T&…`.
pub(crate) async fn series(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<ChannelQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let usage = "query: channel=<name>&since_ms=<unix ms>[&until_ms=<unix ms>][&buckets=<n>|&bucket_ms=<ms>][&devices=<id,id>]";
    let (identity, query, devices) = match check(&state, &headers, query, usage).await {
        Ok(checked) => checked,
        Err(response) => return response,
    };
    let now = crate::now_ms();
    let since = query.since_ms.unwrap_or(now.saturating_sub(3_600_000));
    let span = query.until_ms.unwrap_or(now).saturating_sub(since).max(1);
    let bucket_ms = match query.bucket_ms {
        Some(width) if BUCKET_WIDTHS_MS.contains(&width) => width,
        Some(_) => {
            return wire_error(
                ErrorCode::INVALID_FIELD,
                "bucket_ms must be one of the widths in the API documentation (1000, 2000, 5000, …)",
            );
        }
        None => bucket_width(
            span,
            query
                .buckets
                .unwrap_or(DEFAULT_BUCKETS)
                .clamp(1, MAX_BUCKETS),
        ),
    };
    if span / bucket_ms > MAX_BUCKETS {
        return wire_error(
            ErrorCode::INVALID_FIELD,
            "too many buckets: choose a wider bucket_ms or a shorter range",
        );
    }
    let store_query = SeriesQuery {
        since_ms: since,
        until_ms: query.until_ms,
        bucket_ms,
        devices,
    };
    match state
        .store
        .series(identity.tenant_id, &query.channel, store_query)
        .await
    {
        Ok(series) => {
            // Group the points per device and key, in the store's order.
            let mut lines: Vec<serde_json::Value> = Vec::new();
            let mut current: Option<(String, String, Vec<serde_json::Value>)> = None;
            for point in series.points {
                let same = current
                    .as_ref()
                    .is_some_and(|(device, key, _)| *device == point.device && *key == point.key);
                if !same {
                    if let Some((device, key, points)) = current.take() {
                        lines.push(json!({ "device": device, "key": key, "points": points }));
                    }
                    current = Some((point.device.clone(), point.key.clone(), Vec::new()));
                }
                if let Some((_, _, points)) = current.as_mut() {
                    points.push(json!([
                        point.bucket_ms,
                        point.count,
                        point.min,
                        point.max,
                        point.mean
                    ]));
                }
            }
            if let Some((device, key, points)) = current {
                lines.push(json!({ "device": device, "key": key, "points": points }));
            }
            let since = since - since % bucket_ms;
            let until = query
                .until_ms
                .map(|until| until.div_ceil(bucket_ms) * bucket_ms);
            Json(json!({
                "channel": query.channel,
                "since_ms": since,
                "until_ms": until,
                "bucket_ms": bucket_ms,
                "next_offset": series.next_offset,
                "series": lines,
            }))
            .into_response()
        }
        Err(error) => store_error(&error),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Csv,
    JsonLines,
}

/// One CSV column of a described field: its key, header, and per device
/// its description.
struct Column {
    key: String,
    header: String,
    by_device: HashMap<String, (f64, Option<u8>)>,
}

/// The described fields of a channel as CSV columns, in the order devices
/// first described them (devices by id).
fn columns(descriptions: &[ChannelDescription]) -> Vec<Column> {
    let mut columns: Vec<Column> = Vec::new();
    for description in descriptions {
        let parsed = Fields::from_json(description.fields.as_bytes()).parse();
        let Ok(fields) = parsed else { continue };
        for field in fields {
            let index = match columns.iter().position(|column| column.key == field.key) {
                Some(index) => index,
                None => {
                    columns.push(Column {
                        key: field.key.to_owned(),
                        header: header_of(&field),
                        by_device: HashMap::new(),
                    });
                    columns.len() - 1
                }
            };
            if let Some(column) = columns.get_mut(index) {
                column
                    .by_device
                    .insert(description.device.clone(), (field.scale, field.decimals));
            }
        }
    }
    columns
}

fn header_of(field: &FieldDescription<'_>) -> String {
    let name = if field.label.is_empty() {
        if field.key.is_empty() {
            "value"
        } else {
            field.key
        }
    } else {
        field.label
    };
    if field.unit.is_empty() {
        name.to_owned()
    } else {
        format!("{name} ({})", field.unit)
    }
}

/// Decimals to show a value scaled by `scale` with when its description
/// names none: as many as the scale has (0.01: 2), none for whole scales,
/// and as the value has when unscaled.
pub(crate) fn default_decimals(scale: f64) -> Option<u8> {
    if scale == 1.0 {
        return None;
    }
    let mut decimals = 0u8;
    let mut step = scale.abs();
    while decimals < tether_proto::MAX_DECIMALS && (step - step.round()).abs() > 1e-9 {
        step *= 10.0;
        decimals += 1;
    }
    Some(decimals)
}

fn scaled(value: f64, scale: f64, decimals: Option<u8>) -> String {
    let shown = value * scale;
    match decimals.or_else(|| default_decimals(scale)) {
        Some(decimals) => format!("{:.*}", usize::from(decimals), shown),
        None => format!("{shown}"),
    }
}

fn rfc3339(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|time| {
            time.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn csv_header(columns: &[Column]) -> Result<Vec<u8>, csv::Error> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let mut record = vec!["offset", "server_time", "device_time", "device"];
    record.extend(columns.iter().map(|column| column.header.as_str()));
    record.push("payload");
    writer.write_record(&record)?;
    writer
        .into_inner()
        .map_err(|error| csv::Error::from(error.into_error()))
}

fn csv_rows(events: &[Arc<StoredEvent>], columns: &[Column]) -> Result<Vec<u8>, csv::Error> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    for event in events {
        let payload: serde_json::Value =
            serde_json::from_str(&event.payload).unwrap_or(serde_json::Value::Null);
        let mut record = vec![
            event.offset.to_string(),
            rfc3339(event.server_time_ms),
            event.device_time_ms.map(rfc3339).unwrap_or_default(),
            event.device.clone(),
        ];
        for column in columns {
            let value = if column.key.is_empty() {
                payload.as_f64()
            } else {
                payload.get(&column.key).and_then(serde_json::Value::as_f64)
            };
            let (scale, decimals) = column
                .by_device
                .get(&event.device)
                .copied()
                .unwrap_or((1.0, None));
            record.push(
                value
                    .map(|value| scaled(value, scale, decimals))
                    .unwrap_or_default(),
            );
        }
        record.push(event.payload.clone());
        writer.write_record(&record)?;
    }
    writer
        .into_inner()
        .map_err(|error| csv::Error::from(error.into_error()))
}

fn json_lines(events: &[Arc<StoredEvent>]) -> Vec<u8> {
    let mut out = Vec::new();
    for event in events {
        // A stored event always serializes (its payload passed the
        // payload rule when it was published).
        if serde_json::to_writer(&mut out, event.as_ref()).is_ok() {
            out.push(b'\n');
        }
    }
    out
}

/// Where an export stands between pages.
struct Export {
    state: Arc<AppState>,
    tenant_id: crate::store::TenantId,
    channel: String,
    since_ms: u64,
    until_ms: Option<u64>,
    devices: Option<Vec<String>>,
    format: Format,
    columns: Vec<Column>,
    /// The next page starts at this offset.
    from: u64,
    /// Events at and above this offset came after the export started.
    end: u64,
    /// The CSV header, until sent.
    header: Option<Vec<u8>>,
    done: bool,
}

impl Export {
    /// The next chunk of output: the header, then one page's events.
    async fn next_chunk(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        if let Some(header) = self.header.take() {
            return Some(Ok(Bytes::from(header)));
        }
        while !self.done {
            let page = self
                .state
                .store
                .read(
                    self.tenant_id,
                    &self.channel,
                    ReadRange::Time {
                        since_ms: self.since_ms,
                        until_ms: self.until_ms,
                        from: self.from,
                    },
                    EXPORT_PAGE,
                )
                .await;
            let mut events = match page {
                Ok(events) => events,
                Err(error) => {
                    tracing::error!(%error, channel = %self.channel, "export stopped");
                    self.done = true;
                    return Some(Err(std::io::Error::other(error.to_string())));
                }
            };
            let full = events.len() == EXPORT_PAGE;
            if let Some(last) = events.last() {
                self.from = last.offset + 1;
            }
            events.retain(|event| event.offset < self.end);
            if !full || self.from >= self.end {
                self.done = true;
            }
            if let Some(devices) = &self.devices {
                events.retain(|event| devices.contains(&event.device));
            }
            if events.is_empty() {
                continue;
            }
            let chunk = match self.format {
                Format::JsonLines => Ok(json_lines(&events)),
                Format::Csv => csv_rows(&events, &self.columns)
                    .map_err(|error| std::io::Error::other(error.to_string())),
            };
            return Some(chunk.map(Bytes::from));
        }
        None
    }
}

/// `GET /v1/export?channel=C&…`.
pub(crate) async fn export(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<ChannelQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let usage = "query: channel=<name>[&since_ms=<unix ms>][&until_ms=<unix ms>][&format=csv|jsonl][&devices=<id,id>]";
    let (identity, query, devices) = match check(&state, &headers, query, usage).await {
        Ok(checked) => checked,
        Err(response) => return response,
    };
    let format = match query.format.as_deref() {
        None | Some("csv") => Format::Csv,
        Some("jsonl") => Format::JsonLines,
        Some(_) => return wire_error(ErrorCode::INVALID_FIELD, "format: csv or jsonl"),
    };
    let bounds = match state
        .store
        .channel_bounds(identity.tenant_id, &query.channel)
        .await
    {
        Ok(bounds) => bounds,
        Err(error) => return store_error(&error),
    };
    let columns = if format == Format::Csv {
        match state
            .store
            .channel_descriptions(identity.tenant_id, &query.channel)
            .await
        {
            Ok(descriptions) => columns(&descriptions),
            Err(error) => return store_error(&error),
        }
    } else {
        Vec::new()
    };
    let header = match format {
        Format::Csv => match csv_header(&columns) {
            Ok(header) => Some(header),
            Err(error) => {
                tracing::error!(%error, "cannot write a CSV header");
                return wire_error(ErrorCode::INTERNAL, "cannot write CSV");
            }
        },
        Format::JsonLines => None,
    };
    let file_name = format!(
        "{}.{}",
        query.channel.replace('/', "-"),
        match format {
            Format::Csv => "csv",
            Format::JsonLines => "jsonl",
        }
    );
    let export = Export {
        state: Arc::clone(&state),
        tenant_id: identity.tenant_id,
        channel: query.channel,
        since_ms: query.since_ms.unwrap_or(0),
        until_ms: query.until_ms,
        devices,
        format,
        columns,
        from: bounds.first_offset,
        end: bounds.next_offset,
        header,
        done: bounds.first_offset >= bounds.next_offset,
    };
    let stream = futures_util::stream::unfold(export, |mut export| async move {
        export.next_chunk().await.map(|chunk| (chunk, export))
    });
    let content_type = match format {
        Format::Csv => "text/csv; charset=utf-8",
        Format::JsonLines => "application/jsonl; charset=utf-8",
    };
    let mut response = (StatusCode::OK, Body::from_stream(stream)).into_response();
    let response_headers = response.headers_mut();
    response_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(disposition) = HeaderValue::from_str(&format!("attachment; filename=\"{file_name}\""))
    {
        response_headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    response_headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_scaled_with_the_described_decimals() {
        assert_eq!(scaled(2459.0, 0.01, None), "24.59");
        assert_eq!(scaled(2459.0, 0.01, Some(1)), "24.6");
        assert_eq!(scaled(43.0, 1.0, None), "43");
        assert_eq!(scaled(21.5, 1.0, None), "21.5");
        assert_eq!(scaled(7.0, 0.5, None), "3.5");
        assert_eq!(scaled(3.0, 1000.0, None), "3000");
        assert_eq!(default_decimals(0.001), Some(3));
        assert_eq!(default_decimals(0.25), Some(2));
        assert_eq!(default_decimals(1.0), None);
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_764_094_000_123), "2025-11-25T18:06:40.123Z");
    }

    #[test]
    fn columns_follow_the_descriptions() {
        let descriptions = [
            ChannelDescription {
                device: "a".into(),
                fields: r#"[{"key":"c","label":"Temperature","unit":"°C","scale":0.01}]"#.into(),
                updated_ms: 1,
            },
            ChannelDescription {
                device: "b".into(),
                fields:
                    r#"[{"key":"c","label":"Temperature","unit":"°C","scale":0.1},{"key":"h"}]"#
                        .into(),
                updated_ms: 1,
            },
            ChannelDescription {
                device: "broken".into(),
                fields: "not json".into(),
                updated_ms: 1,
            },
        ];
        let columns = columns(&descriptions);
        let headers: Vec<&str> = columns.iter().map(|c| c.header.as_str()).collect();
        assert_eq!(headers, ["Temperature (°C)", "h"]);
        assert_eq!(columns[0].by_device["a"], (0.01, None));
        assert_eq!(columns[0].by_device["b"], (0.1, None));
        let header = String::from_utf8(csv_header(&columns).unwrap()).unwrap();
        assert_eq!(
            header,
            "offset,server_time,device_time,device,Temperature (°C),h,payload\n"
        );
        let events = [Arc::new(StoredEvent::new(
            1,
            "t".into(),
            7,
            "b".into(),
            None,
            1_000,
            r#"{"c":215,"h":40,"s":"a,b"}"#.into(),
        ))];
        let rows = String::from_utf8(csv_rows(&events, &columns).unwrap()).unwrap();
        assert_eq!(
            rows,
            "7,1970-01-01T00:00:01Z,,b,21.5,40,\"{\"\"c\"\":215,\"\"h\"\":40,\"\"s\"\":\"\"a,b\"\"}\"\n"
        );
    }
}
