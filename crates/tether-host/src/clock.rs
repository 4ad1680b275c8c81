//! [`TokioClock`]: tether-core time from tokio's clock, so tests under
//! `#[tokio::test(start_paused = true)]` run the client on virtual time.

use core::time::Duration as StdDuration;

use tether_core::time::{Clock, Instant};

/// Milliseconds since the clock was created, from `tokio::time`.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: tokio::time::Instant,
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl TokioClock {
    /// A clock whose origin is now.
    #[must_use]
    pub fn new() -> Self {
        Self {
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        let elapsed = self.origin.elapsed().as_millis();
        Instant::from_millis(u64::try_from(elapsed).unwrap_or(u64::MAX))
    }

    async fn sleep_until(&self, deadline: Instant) {
        let target = self
            .origin
            .checked_add(StdDuration::from_millis(deadline.as_millis()));
        match target {
            Some(target) => tokio::time::sleep_until(target).await,
            // Beyond tokio's range: never.
            None => core::future::pending().await,
        }
    }
}
