//! Time for tether on embassy: the monotonic [`EmbassyClock`] the session
//! runs on, and the [`WallClock`] (Unix time, set from SNTP) that
//! certificate validity checks need.
//!
//! ```text
//!  embassy_time::Instant ──► EmbassyClock (tether-core Clock: deadlines, backoff)
//!            │
//!            └──+ Unix time at boot (set by sntp::synchronize) ──► WallClock::now()
//!                                                                  └► TLS: notBefore ≤ now ≤ notAfter
//! ```
//!
//! The wall clock is process-wide (a static), because `embedded-tls` asks
//! for the time through a type, not a value. Until it is set, it reports
//! `None` and [`TlsConnector`](crate::tls::TlsConnector) refuses to open a
//! connection: a certificate is never accepted unchecked.

use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicU32, Ordering};
use core::task::{Context, Poll};

use tether_core::time::{Clock, Instant};

/// tether-core time from embassy-time.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmbassyClock;

impl Clock for EmbassyClock {
    fn now(&self) -> Instant {
        now()
    }

    fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> {
        Sleep(timer_until(deadline))
    }
}

/// [`EmbassyClock::sleep_until`]'s future: an embassy timer polled out of
/// line, so each place the runner waits holds a call, not the timer's
/// poll.
struct Sleep(embassy_time::Timer);

impl Future for Sleep {
    type Output = ();

    #[inline(never)]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx)
    }
}

/// The time driver's 64-bit tick count in milliseconds, cut to tether's
/// 32-bit instant. Out of line: the runner asks for the time at a dozen
/// places, and each inlined copy was the driver's read and a 64-bit
/// division.
#[inline(never)]
fn now() -> Instant {
    Instant::from_millis(embassy_time::Instant::now().as_millis())
}

/// The embassy timer that fires at `deadline` (the 32-bit deadline back to
/// embassy's 64-bit time: the wait from now). Out of line, as [`now`]; only
/// the timer's poll is left at each wait.
#[inline(never)]
fn timer_until(deadline: Instant) -> embassy_time::Timer {
    let wait = deadline - now();
    embassy_time::Timer::after_millis(u64::from(wait.as_millis()))
}

/// Unix seconds at `embassy_time::Instant` zero; 0 while unknown. 32 bits
/// last until 2106 and need only load/store atomics (riscv32imc has no
/// 64-bit atomics).
static UNIX_AT_BOOT: AtomicU32 = AtomicU32::new(0);

/// The earliest time the wall clock accepts (2024-01-01T00:00:00Z): an
/// SNTP answer before it is a server that lost its own time.
pub const EARLIEST_UNIX_TIME: u64 = 1_704_067_200;

/// Why a time was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum WallClockError {
    /// Before [`EARLIEST_UNIX_TIME`].
    TooEarly,
    /// After the year 2106 (does not fit the 32-bit store).
    TooLate,
}

impl core::fmt::Display for WallClockError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::TooEarly => "time before 2024: the time source has no valid time",
            Self::TooLate => "time after 2106",
        })
    }
}

impl core::error::Error for WallClockError {}

/// Unix time for certificate checks: monotonic time plus an offset set once
/// from a trusted source (SNTP, an RTC, a GPS fix).
#[derive(Debug, Clone, Copy, Default)]
pub struct WallClock;

impl WallClock {
    /// Sets the wall clock: `unix_seconds` is the time now.
    ///
    /// # Errors
    /// A time before 2024 or after 2106 is refused and leaves the clock as
    /// it was.
    pub fn set(unix_seconds: u64) -> Result<(), WallClockError> {
        Self::set_at(unix_seconds, embassy_time::Instant::now().as_secs())
    }

    fn set_at(unix_seconds: u64, uptime_seconds: u64) -> Result<(), WallClockError> {
        if unix_seconds < EARLIEST_UNIX_TIME {
            return Err(WallClockError::TooEarly);
        }
        let at_boot = unix_seconds.saturating_sub(uptime_seconds);
        let at_boot = u32::try_from(at_boot).map_err(|_| WallClockError::TooLate)?;
        UNIX_AT_BOOT.store(at_boot, Ordering::Relaxed);
        Ok(())
    }

    /// Unix seconds now, or `None` before [`WallClock::set`].
    #[must_use]
    pub fn now() -> Option<u64> {
        match UNIX_AT_BOOT.load(Ordering::Relaxed) {
            0 => None,
            at_boot => {
                Some(u64::from(at_boot).saturating_add(embassy_time::Instant::now().as_secs()))
            }
        }
    }

    /// Forgets the time (tests; a firmware that lost trust in its source).
    pub fn clear() {
        UNIX_AT_BOOT.store(0, Ordering::Relaxed);
    }
}

#[cfg(feature = "tls")]
impl embedded_tls::TlsClock for WallClock {
    fn now() -> Option<u64> {
        WallClock::now()
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use tether_core::time::Duration;

    use super::*;

    /// The out-of-line time read and timer (embassy-time's std driver):
    /// the clock moves forward, a deadline in the past is no wait, and a
    /// wait lasts at least until its deadline.
    #[test]
    fn sleeps_until_the_deadline_on_the_embassy_clock() {
        let clock = EmbassyClock;
        let start = clock.now();
        embassy_futures::block_on(clock.sleep_until(start));
        let past = std::time::Instant::now();
        embassy_futures::block_on(clock.sleep_until(Instant::ZERO));
        assert!(past.elapsed() < core::time::Duration::from_millis(500));

        let deadline = clock.now() + Duration::from_millis(30);
        embassy_futures::block_on(clock.sleep_until(deadline));
        let woke = clock.now();
        assert!(woke >= deadline, "woke at {woke:?}, before {deadline:?}");
        assert!(woke >= start);
        // Milliseconds of embassy's time, cut to 32 bits.
        let embassy = embassy_time::Instant::now().as_millis();
        let ours = u64::from(clock.now().as_millis());
        assert!(ours.wrapping_sub(embassy & u64::from(u32::MAX)) <= 1000);
    }
}
