//! Per-connection limits: the publish rate limiter (a token bucket, time
//! passed in so it is testable without sleeping).

use std::time::{Duration, Instant};

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

/// Milliseconds as a `Duration`.
pub fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

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
