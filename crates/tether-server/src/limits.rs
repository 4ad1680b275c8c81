//! Limits as plain data structures, time passed in so they are testable
//! without sleeping: the WebSocket size limits of every endpoint, the
//! publish token bucket (kept per device across reconnects), counters of
//! open things per key (connections per address and per tenant, commands
//! per tenant) and the claim-code attempt guard.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::WebSocketUpgrade;

/// Bytes a connection reads from the socket at a time.
pub(crate) const READ_BUFFER: usize = 512;

/// The size limits every WebSocket endpoint applies before the upgrade: the
/// configured maximum message and frame size, and a small read buffer
/// (tungstenite's default 128 KiB read chunk per connection dominates memory
/// with thousands of small-message devices).
pub(crate) fn bounded_upgrade(
    upgrade: WebSocketUpgrade,
    max_message_bytes: usize,
) -> WebSocketUpgrade {
    upgrade
        .max_message_size(max_message_bytes)
        .max_frame_size(max_message_bytes)
        .read_buffer_size(READ_BUFFER)
}

/// A token bucket: `rate` tokens per second, at most `burst` saved up.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    rate_per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// A full bucket at `now`.
    pub fn new(rate_per_second: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        RateLimiter {
            rate_per_second: f64::from(rate_per_second),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Whether the bucket has refilled to its burst by `now`.
    pub fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.tokens + elapsed.as_secs_f64() * self.rate_per_second >= self.burst
    }

    /// Takes one token; `false` when the bucket is empty (over the limit).
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.rate_per_second).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Counts attempts per subject (e.g. claim codes tried per receiver key,
/// wrong passwords per account or per address) in fixed windows. An
/// attempt is counted **before** it is made ([`try_begin`](Self::try_begin),
/// one lock for check and count), so concurrent attempts cannot slip past
/// the limit; an attempt that turns out not to be a guess (a valid code, a
/// right password) is given back with [`Attempt::refund`].
///
/// Memory is bounded: at most `max_subjects` subjects are counted at once
/// (a window's worth); while that many are, a new subject is refused like
/// one over its limit (fail closed: under a flood of distinct subjects,
/// guessing stops, and the known ones keep their counts).
#[derive(Debug)]
pub struct AttemptGuard<K = i64> {
    limit: u32,
    window: Duration,
    max_subjects: usize,
    attempts: Mutex<HashMap<K, (Instant, u32)>>,
}

/// One counted attempt of an [`AttemptGuard`].
#[derive(Debug)]
#[must_use = "an attempt counts unless it is refunded"]
pub struct Attempt<'a, K: Eq + Hash + Clone = i64> {
    guard: &'a AttemptGuard<K>,
    subject: K,
    window_start: Instant,
}

/// Subjects an [`AttemptGuard`] counts at most, unless told otherwise.
pub const MAX_ATTEMPT_SUBJECTS: usize = 100_000;

impl<K: Eq + Hash + Clone> AttemptGuard<K> {
    /// At most `limit` attempts per `window` per subject, and at most
    /// [`MAX_ATTEMPT_SUBJECTS`] subjects.
    pub fn new(limit: u32, window: Duration) -> Self {
        Self::with_max_subjects(limit, window, MAX_ATTEMPT_SUBJECTS)
    }

    /// Like [`new`](Self::new), counting at most `max_subjects` subjects.
    pub fn with_max_subjects(limit: u32, window: Duration, max_subjects: usize) -> Self {
        AttemptGuard {
            limit,
            window,
            max_subjects,
            attempts: Mutex::new(HashMap::new()),
        }
    }

    /// Counts an attempt of `subject` at `now`, or `None` (not counted)
    /// when `subject` used up its attempts of the current window (or it is
    /// new and the guard counts its maximum of subjects).
    pub fn try_begin(&self, subject: K, now: Instant) -> Option<Attempt<'_, K>> {
        let mut attempts = self.attempts.lock().ok()?;
        attempts.retain(|_, (start, _)| now.saturating_duration_since(*start) < self.window);
        if !attempts.contains_key(&subject) && attempts.len() >= self.max_subjects {
            return None;
        }
        let entry = attempts.entry(subject.clone()).or_insert((now, 0));
        if entry.1 >= self.limit {
            return None;
        }
        entry.1 += 1;
        Some(Attempt {
            guard: self,
            subject,
            window_start: entry.0,
        })
    }

    /// Whether `subject` has attempts left at `now` (counts nothing).
    pub fn allows(&self, subject: &K, now: Instant) -> bool {
        let Ok(attempts) = self.attempts.lock() else {
            return false;
        };
        match attempts.get(subject) {
            Some((start, count)) => {
                now.saturating_duration_since(*start) >= self.window || *count < self.limit
            }
            None => attempts.len() < self.max_subjects,
        }
    }
}

impl<K: Eq + Hash + Clone> Attempt<'_, K> {
    /// Gives the attempt back (it was not a failure): it no longer counts.
    pub fn refund(self) {
        if let Ok(mut attempts) = self.guard.attempts.lock()
            && let Some(entry) = attempts.get_mut(&self.subject)
            && entry.0 == self.window_start
        {
            entry.1 = entry.1.saturating_sub(1);
        }
    }
}

/// Whose guesses of claim codes are counted: a receiver key's, a
/// signed-in account's, or (creating an account with a code) an
/// address's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClaimSubject {
    /// A receiver key (its id).
    Key(i64),
    /// A signed-in account (its id).
    Account(i64),
    /// A client address (IPv6: its /64).
    Address(std::net::IpAddr),
}

/// The address a per-address limit counts: IPv4 as it is, IPv6 by its
/// /64 (one customer line gets a whole /64, so counting single IPv6
/// addresses would count nothing).
pub fn address_subject(address: std::net::IpAddr) -> std::net::IpAddr {
    match address {
        std::net::IpAddr::V4(v4) => std::net::IpAddr::V4(v4),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => std::net::IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                std::net::IpAddr::V6(std::net::Ipv6Addr::from(bits))
            }
        },
    }
}

/// Open things (connections, commands) per key, each at most `limit`: a
/// [`KeyedGuard`] is one of them and gives its place back when dropped.
/// Keys with nothing open take no memory.
#[derive(Debug)]
pub struct KeyedCounter<K> {
    counts: Arc<Mutex<HashMap<K, usize>>>,
}

impl<K> Default for KeyedCounter<K> {
    fn default() -> Self {
        KeyedCounter {
            counts: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

/// One counted thing of a [`KeyedCounter`].
#[derive(Debug)]
pub struct KeyedGuard<K: Hash + Eq> {
    counts: Arc<Mutex<HashMap<K, usize>>>,
    key: K,
}

impl<K: Hash + Eq + Clone> KeyedCounter<K> {
    /// Counts one more for `key`, or `None` if it has `limit` already
    /// (`None` as the limit: no limit).
    pub fn try_acquire(&self, key: K, limit: Option<usize>) -> Option<KeyedGuard<K>> {
        let mut counts = self.counts.lock().ok()?;
        let count = counts.entry(key.clone()).or_insert(0);
        if limit.is_some_and(|limit| *count >= limit) {
            return None;
        }
        *count += 1;
        Some(KeyedGuard {
            counts: Arc::clone(&self.counts),
            key,
        })
    }

    /// How many `key` has open.
    pub fn count(&self, key: &K) -> usize {
        self.counts
            .lock()
            .map_or(0, |counts| counts.get(key).copied().unwrap_or(0))
    }

    /// Keys with something open.
    pub fn keys(&self) -> usize {
        self.counts.lock().map_or(0, |counts| counts.len())
    }
}

impl<K: Hash + Eq> Drop for KeyedGuard<K> {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.counts.lock()
            && let Some(count) = counts.get_mut(&self.key)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// The publish token buckets of every device, kept across reconnects: a
/// device that reconnects gets its own bucket back, not a full one. A
/// bucket nobody holds that has refilled completely is the same as a new
/// one, so it is dropped (swept when the map has doubled since the last
/// sweep): memory is bounded by the devices connected or recently active.
#[derive(Debug)]
pub struct PublishBuckets {
    rate_per_second: u32,
    burst: u32,
    buckets: Mutex<BucketMap>,
}

#[derive(Debug, Default)]
struct BucketMap {
    buckets: HashMap<String, Arc<Mutex<RateLimiter>>>,
    sweep_at: usize,
}

/// Entries below which the bucket map is not swept.
const MIN_SWEEP: usize = 64;

impl PublishBuckets {
    /// Buckets of `rate_per_second`, at most `burst` saved up.
    pub fn new(rate_per_second: u32, burst: u32) -> Self {
        PublishBuckets {
            rate_per_second,
            burst,
            buckets: Mutex::new(BucketMap {
                buckets: HashMap::new(),
                sweep_at: MIN_SWEEP,
            }),
        }
    }

    /// `device`'s bucket (a full one if it has none).
    pub fn bucket(&self, device: &str, now: Instant) -> Arc<Mutex<RateLimiter>> {
        let fresh = || {
            Arc::new(Mutex::new(RateLimiter::new(
                self.rate_per_second,
                self.burst,
                now,
            )))
        };
        let Ok(mut map) = self.buckets.lock() else {
            return fresh();
        };
        if let Some(bucket) = map.buckets.get(device) {
            return Arc::clone(bucket);
        }
        if map.buckets.len() >= map.sweep_at {
            map.buckets.retain(|_, bucket| {
                Arc::strong_count(bucket) > 1
                    || bucket.lock().is_ok_and(|bucket| !bucket.is_full(now))
            });
            map.sweep_at = map.buckets.len().saturating_mul(2).max(MIN_SWEEP);
        }
        let bucket = fresh();
        map.buckets.insert(device.to_owned(), Arc::clone(&bucket));
        bucket
    }

    /// Devices with a bucket kept.
    pub fn len(&self) -> usize {
        self.buckets.lock().map_or(0, |map| map.buckets.len())
    }

    /// Whether no bucket is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Milliseconds as a `Duration`.
pub fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_guard_counts_before_the_attempt_until_the_window_ends() {
        let start = Instant::now();
        let guard = AttemptGuard::new(2, Duration::from_secs(60));
        let first = guard.try_begin(7, start);
        let second = guard.try_begin(7, start);
        // Both are counted before either finished: a third is refused.
        assert!(first.is_some() && second.is_some());
        assert!(guard.try_begin(7, start).is_none());
        assert!(guard.try_begin(8, start).is_some());
        // A refunded attempt (not a guess) frees its place.
        if let Some(second) = second {
            second.refund();
        }
        assert!(guard.try_begin(7, start).is_some());
        assert!(guard.try_begin(7, start).is_none());
        assert!(
            guard
                .try_begin(7, start + Duration::from_secs(61))
                .is_some()
        );
        // A refund from an old window does not count in the new one.
        let late = start + Duration::from_secs(61);
        assert!(guard.try_begin(7, late).is_some());
        assert!(guard.try_begin(7, late).is_none());
        if let Some(first) = first {
            first.refund();
        }
        assert!(guard.try_begin(7, late).is_none());
    }

    #[test]
    fn attempt_guard_memory_is_bounded_and_fails_closed() {
        let start = Instant::now();
        let guard = AttemptGuard::with_max_subjects(3, Duration::from_secs(60), 2);
        assert!(guard.try_begin("a", start).is_some());
        assert!(guard.try_begin("b", start).is_some());
        // A third subject while two are counted: refused, not counted.
        assert!(!guard.allows(&"c", start));
        assert!(guard.try_begin("c", start).is_none());
        // The known ones keep their counts.
        assert!(guard.allows(&"a", start));
        assert!(guard.try_begin("a", start).is_some());
        // Once their window ends they are forgotten and room is made.
        let later = start + Duration::from_secs(61);
        assert!(guard.try_begin("c", later).is_some());
    }

    #[test]
    fn addresses_are_counted_by_ipv4_or_ipv6_slash_64() {
        use std::net::IpAddr;
        let parse = |text: &str| text.parse::<IpAddr>().expect("address");
        assert_eq!(address_subject(parse("192.0.2.7")), parse("192.0.2.7"));
        assert_eq!(
            address_subject(parse("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            parse("2001:db8:1:2::")
        );
        assert_eq!(
            address_subject(parse("2001:db8:1:2::1")),
            address_subject(parse("2001:db8:1:2:ffff::9"))
        );
        assert_eq!(
            address_subject(parse("::ffff:192.0.2.7")),
            parse("192.0.2.7")
        );
    }

    #[test]
    fn keyed_counter_limits_per_key_and_forgets_idle_keys() {
        let counter = KeyedCounter::default();
        let a1 = counter.try_acquire("a", Some(2));
        let a2 = counter.try_acquire("a", Some(2));
        assert!(a1.is_some() && a2.is_some());
        assert!(counter.try_acquire("a", Some(2)).is_none());
        let b = counter.try_acquire("b", Some(2));
        assert!(b.is_some());
        assert_eq!(counter.count(&"a"), 2);
        drop(a1);
        assert_eq!(counter.count(&"a"), 1);
        assert!(counter.try_acquire("a", None).is_some());
        drop((a2, b));
        assert_eq!(counter.keys(), 0);
    }

    #[test]
    fn publish_buckets_survive_reconnects_and_idle_ones_are_swept() {
        let start = Instant::now();
        let buckets = PublishBuckets::new(10, 3);
        let bucket = buckets.bucket("d", start);
        let take = |bucket: &Arc<Mutex<RateLimiter>>, at| {
            bucket.lock().is_ok_and(|mut bucket| bucket.try_take(at))
        };
        assert!((0..3).all(|_| take(&bucket, start)));
        drop(bucket);
        // Reconnecting: the same, empty bucket.
        let again = buckets.bucket("d", start);
        assert!(!take(&again, start));
        drop(again);
        // Many other devices come and go; "d" is not full yet and stays.
        for index in 0..200 {
            drop(buckets.bucket(&format!("other-{index}"), start));
        }
        assert!(!take(&buckets.bucket("d", start), start));
        // Later, every bucket has refilled: a sweep drops them all.
        let later = start + Duration::from_secs(1);
        for index in 0..400 {
            drop(buckets.bucket(&format!("new-{index}"), later));
        }
        assert!(buckets.len() <= 2 * 200, "{}", buckets.len());
        assert!(take(&buckets.bucket("d", later), later));
    }

    #[test]
    fn bucket_refills_at_the_rate() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(10, 3, start);
        assert!(limiter.try_take(start));
        assert!(limiter.try_take(start));
        assert!(limiter.try_take(start));
        assert!(!limiter.try_take(start));
        // 100 ms at 10/s is one token.
        assert!(limiter.try_take(start + Duration::from_millis(100)));
        assert!(!limiter.try_take(start + Duration::from_millis(100)));
        // Never more than the burst.
        let later = start + Duration::from_secs(60);
        assert!((0..3).all(|_| limiter.try_take(later)));
        assert!(!limiter.try_take(later));
    }
}
