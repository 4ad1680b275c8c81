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
        // The 32-bit deadline back to tokio's time: the wait from now.
        let wait = deadline - self.now();
        tokio::time::sleep(StdDuration::from_millis(u64::from(wait.as_millis()))).await;
    }
}
