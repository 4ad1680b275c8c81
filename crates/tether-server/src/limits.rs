//! Per-connection limits: the WebSocket size limits of every endpoint and the
//! publish rate limiter (a token bucket, time passed in so it is testable
//! without sleeping).

use std::time::{Duration, Instant};

use axum::extract::ws::WebSocketUpgrade;

/// Bytes a connection reads from the socket at a time.
pub(crate) const READ_BUFFER: usize = 8 * 1024;

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

/// Counts failed attempts per subject (e.g. wrong claim codes per receiver
/// key) in fixed windows; over the limit, attempts are refused until the
/// window ends.
#[derive(Debug)]
pub struct AttemptGuard {
    limit: u32,
    window: Duration,
    failures: std::sync::Mutex<std::collections::HashMap<i64, (Instant, u32)>>,
}

impl AttemptGuard {
    /// At most `limit` failures per `window` per subject.
    pub fn new(limit: u32, window: Duration) -> Self {
        AttemptGuard {
            limit,
            window,
            failures: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Whether `subject` may try now.
    pub fn allowed(&self, subject: i64, now: Instant) -> bool {
        let Ok(mut failures) = self.failures.lock() else {
            return false;
        };
        failures.retain(|_, (start, _)| now.saturating_duration_since(*start) < self.window);
        failures
            .get(&subject)
            .is_none_or(|(_, count)| *count < self.limit)
    }

    /// Records a failed attempt of `subject`.
    pub fn failed(&self, subject: i64, now: Instant) {
        if let Ok(mut failures) = self.failures.lock() {
            let entry = failures.entry(subject).or_insert((now, 0));
            entry.1 = entry.1.saturating_add(1);
        }
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
    fn attempt_guard_blocks_after_the_limit_until_the_window_ends() {
        let start = Instant::now();
        let guard = AttemptGuard::new(2, Duration::from_secs(60));
        assert!(guard.allowed(7, start));
        guard.failed(7, start);
        guard.failed(7, start);
        assert!(!guard.allowed(7, start));
        assert!(guard.allowed(8, start));
        assert!(guard.allowed(7, start + Duration::from_secs(61)));
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
