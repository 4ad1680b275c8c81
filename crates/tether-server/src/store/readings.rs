//! What the store keeps about readings besides the events themselves: what
//! devices said their channels' fields mean, the commands they take, their
//! signal strength, and downsampled series of numeric fields.
//!
//! # Downsampled series
//!
//! [`Store::series`](super::Store::series) answers "min, max and mean of
//! every numeric field, per device, per bucket of `bucket_ms`" for a
//! channel and a time range (server time: when the server stored the
//! event). The numeric fields of an event are the top-level members of its
//! payload whose value is a JSON number (key: the member name), or the
//! payload itself when it is a number (key: `""`).
//!
//! A store keeps that fast for any range by **rolling up** events into
//! buckets of [`ROLLUP_WIDTHS_MS`] (10 seconds, 1 minute, 15 minutes, 1
//! hour) in the background ([`Store::roll_up`](super::Store::roll_up)) and
//! answering a query from the widest rollup that divides its bucket width,
//! plus the events not rolled up yet; bucket widths no rollup divides (1,
//! 2, 5 and 15 seconds: short ranges, few events) are computed from the
//! events. Either way the answer covers exactly the events with an
//! offset below [`Series::next_offset`], so a receiver that subscribes from
//! there misses nothing and sees nothing twice.

use serde::Serialize;

/// Widths (ms) of the rolled-up buckets a store keeps, narrowest first.
/// The 10-second one serves the dashboard's "last hour" (600 buckets of
/// 10 s) from about 360 rows per device and field instead of every event.
pub const ROLLUP_WIDTHS_MS: [u64; 4] = [10_000, 60_000, 900_000, 3_600_000];

/// Bucket widths (ms) a series query may use: "nice" widths a chart's time
/// axis can show. [`bucket_width`] picks one.
pub const BUCKET_WIDTHS_MS: [u64; 20] = [
    1_000,
    2_000,
    5_000,
    10_000,
    15_000,
    30_000,
    60_000,
    120_000,
    300_000,
    600_000,
    900_000,
    1_800_000,
    3_600_000,
    7_200_000,
    10_800_000,
    21_600_000,
    43_200_000,
    86_400_000,
    172_800_000,
    604_800_000,
];

/// The narrowest bucket width of [`BUCKET_WIDTHS_MS`] that cuts `span_ms`
/// into at most `buckets` buckets (the widest one if none does).
pub fn bucket_width(span_ms: u64, buckets: u64) -> u64 {
    let buckets = buckets.max(1);
    BUCKET_WIDTHS_MS
        .iter()
        .copied()
        .find(|width| span_ms.div_ceil(*width) <= buckets)
        .unwrap_or(BUCKET_WIDTHS_MS[BUCKET_WIDTHS_MS.len() - 1])
}

/// The widest rollup width that divides `bucket_ms`, if any: buckets of
/// that rollup fall wholly inside one bucket of the query.
pub fn rollup_width(bucket_ms: u64) -> Option<u64> {
    ROLLUP_WIDTHS_MS
        .iter()
        .rev()
        .copied()
        .find(|width| bucket_ms.is_multiple_of(*width))
}

/// What a device said one channel's fields mean (its `describe_channel`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChannelDescription {
    /// The device.
    pub device: String,
    /// The field descriptions: the JSON array `docs/protocol.md` defines,
    /// in its canonical form.
    #[serde(serialize_with = "super::raw_json")]
    pub fields: String,
    /// When the device last described the channel (unix ms).
    pub updated_ms: u64,
}

/// A command a device said it takes (its `describe_command`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeclaredCommand {
    /// The command's channel.
    pub channel: String,
    /// For people (may be empty).
    pub label: String,
    /// An example payload, JSON text (`null` for none).
    #[serde(serialize_with = "super::raw_json")]
    pub example: String,
}

/// Which part of a channel to downsample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesQuery {
    /// Start (server time, unix ms, inclusive); rounded down to a multiple
    /// of `bucket_ms`.
    pub since_ms: u64,
    /// End (exclusive; rounded up to a multiple of `bucket_ms`), `None`:
    /// everything stored so far.
    pub until_ms: Option<u64>,
    /// Bucket width (ms, at least 1); buckets start at multiples of it.
    pub bucket_ms: u64,
    /// Only these devices (`None`: all).
    pub devices: Option<Vec<String>>,
}

/// One bucket of one numeric field of one device.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesPoint {
    /// The device.
    pub device: String,
    /// The payload member (`""`: the payload itself is the number).
    pub key: String,
    /// Start of the bucket (server time, unix ms).
    pub bucket_ms: u64,
    /// Values in the bucket.
    pub count: u64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Mean value.
    pub mean: f64,
}

/// A downsampled channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The answer covers every event with an offset below this one (the
    /// channel's `next_offset` when it was read): subscribe from here to
    /// continue live without a gap.
    pub next_offset: u64,
    /// The buckets, ordered by device, key and time.
    pub points: Vec<SeriesPoint>,
}

/// What one bucket of one field has collected so far, while a store adds
/// up the rows of its roll-ups and of the events not rolled up yet.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    pub(crate) count: u64,
    pub(crate) total: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

/// Buckets by device, field and bucket start: the order of
/// [`Series::points`].
#[derive(Debug, Default)]
pub(crate) struct Buckets(std::collections::BTreeMap<(String, String, i64), Bucket>);

impl Buckets {
    /// Adds one row (from a roll-up or from the events) to its bucket.
    pub(crate) fn add(&mut self, key: (String, String, i64), bucket: Bucket) {
        self.0
            .entry(key)
            .and_modify(|existing| {
                existing.count += bucket.count;
                existing.total += bucket.total;
                existing.min = existing.min.min(bucket.min);
                existing.max = existing.max.max(bucket.max);
            })
            .or_insert(bucket);
    }

    /// The answer: every bucket with its mean, covering the events below
    /// `next_offset`.
    pub(crate) fn into_series(self, next_offset: u64) -> Series {
        let points = self
            .0
            .into_iter()
            .map(|((device, key, bucket_ms), bucket)| SeriesPoint {
                device,
                key,
                bucket_ms: u64::try_from(bucket_ms).unwrap_or(0),
                count: bucket.count,
                min: bucket.min,
                max: bucket.max,
                mean: if bucket.count == 0 {
                    0.0
                } else {
                    #[allow(clippy::cast_precision_loss)] // counts stay far below 2^52
                    let count = bucket.count as f64;
                    bucket.total / count
                },
            })
            .collect();
        Series {
            next_offset,
            points,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_widths_are_the_narrowest_that_fit() {
        assert_eq!(bucket_width(3_600_000, 600), 10_000);
        assert_eq!(bucket_width(86_400_000, 600), 300_000);
        assert_eq!(bucket_width(7 * 86_400_000, 600), 1_800_000);
        assert_eq!(bucket_width(30 * 86_400_000, 600), 7_200_000);
        assert_eq!(bucket_width(0, 0), 1_000);
        assert_eq!(bucket_width(u64::MAX, 1), 604_800_000);
        assert!(BUCKET_WIDTHS_MS.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn rollups_serve_widths_they_divide() {
        assert_eq!(rollup_width(5_000), None);
        assert_eq!(rollup_width(15_000), None);
        assert_eq!(rollup_width(10_000), Some(10_000));
        assert_eq!(rollup_width(30_000), Some(10_000));
        assert_eq!(rollup_width(300_000), Some(60_000));
        assert_eq!(rollup_width(1_800_000), Some(900_000));
        assert_eq!(rollup_width(7_200_000), Some(3_600_000));
        assert_eq!(rollup_width(604_800_000), Some(3_600_000));
        for width in BUCKET_WIDTHS_MS.iter().filter(|w| **w >= 30_000) {
            assert!(rollup_width(*width).is_some(), "{width}");
        }
    }
}
