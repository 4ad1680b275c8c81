//! Time as plain values: an [`Instant`] and a [`Duration`] in milliseconds.
//!
//! The session, keepalive and backoff state machines never read a clock.
//! The caller passes `now` in and asks for the next deadline (`poll_at`), the
//! way smoltcp and quinn-proto do it. That keeps them testable on virtual time
//! and independent of any timer driver: firmware converts from
//! `embassy_time::Instant::now().as_millis()`, a PC from `std::time::Instant`.
//!
//! Milliseconds in a `u64` cover 584 million years, so arithmetic saturates
//! instead of wrapping and never panics.

use core::fmt;
use core::ops::{Add, Sub};

/// A length of time in whole milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Duration(u64);

impl Duration {
    /// No time at all.
    pub const ZERO: Self = Self(0);
    /// The longest representable duration.
    pub const MAX: Self = Self(u64::MAX);

    /// A duration of `millis` milliseconds.
    #[must_use]
    pub const fn from_millis(millis: u64) -> Self {
        Self(millis)
    }

    /// A duration of `secs` seconds (saturating).
    #[must_use]
    pub const fn from_secs(secs: u64) -> Self {
        Self(secs.saturating_mul(1000))
    }

    /// The duration in milliseconds.
    #[must_use]
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// `self + other`, saturating at [`Duration::MAX`].
    #[must_use]
    pub const fn saturating_add(self, other: Self) -> Self {
        Self(self.0.saturating_add(other.0))
    }

    /// `self - other`, saturating at [`Duration::ZERO`].
    #[must_use]
    pub const fn saturating_sub(self, other: Self) -> Self {
        Self(self.0.saturating_sub(other.0))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ms", self.0)
    }
}

/// A point in time: milliseconds since an arbitrary origin (usually boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Instant(u64);

impl Instant {
    /// The origin.
    pub const ZERO: Self = Self(0);

    /// The instant `millis` milliseconds after the origin.
    #[must_use]
    pub const fn from_millis(millis: u64) -> Self {
        Self(millis)
    }

    /// Milliseconds since the origin.
    #[must_use]
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Time elapsed from `earlier` to `self`, or zero if `earlier` is later.
    #[must_use]
    pub const fn saturating_duration_since(self, earlier: Self) -> Duration {
        Duration(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;

    /// Saturating: an instant never wraps around.
    fn add(self, rhs: Duration) -> Instant {
        Instant(self.0.saturating_add(rhs.0))
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;

    /// Saturating: `earlier - later` is zero, never a panic.
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_duration_since(rhs)
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t+{} ms", self.0)
    }
}

/// A clock the async session driver can read and sleep on.
///
/// The state machines take `now` as an argument; only the thin async driver
/// that runs them needs a clock. Firmware wraps `embassy_time`, a PC wraps
/// tokio, tests use virtual time.
///
/// # Example implementation
///
/// A virtual clock for tests: sleeping jumps straight to the deadline.
///
/// ```
/// use core::cell::Cell;
/// use tether_core::time::{Clock, Duration, Instant};
///
/// #[derive(Default)]
/// struct VirtualClock(Cell<u64>);
///
/// impl Clock for VirtualClock {
///     fn now(&self) -> Instant {
///         Instant::from_millis(self.0.get())
///     }
///     async fn sleep_until(&self, deadline: Instant) {
///         self.0.set(self.0.get().max(deadline.as_millis()));
///     }
/// }
///
/// let clock = VirtualClock::default();
/// embassy_futures::block_on(clock.sleep_until(Instant::ZERO + Duration::from_secs(5)));
/// assert_eq!(clock.now(), Instant::from_millis(5_000));
/// ```
///
/// With embassy-time on a board:
///
/// ```text
/// struct EmbassyClock;
/// impl Clock for EmbassyClock {
///     fn now(&self) -> Instant { Instant::from_millis(embassy_time::Instant::now().as_millis()) }
///     async fn sleep_until(&self, deadline: Instant) {
///         embassy_time::Timer::at(embassy_time::Instant::from_millis(deadline.as_millis())).await
///     }
/// }
/// ```
#[allow(async_fn_in_trait)] // Like embedded-io-async: no `Send` bound.
pub trait Clock {
    /// The current time.
    fn now(&self) -> Instant;

    /// Returns once `now() >= deadline`.
    async fn sleep_until(&self, deadline: Instant);
}

impl<K: Clock + ?Sized> Clock for &K {
    fn now(&self) -> Instant {
        (**self).now()
    }

    async fn sleep_until(&self, deadline: Instant) {
        (**self).sleep_until(deadline).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_instead_of_panicking() {
        let late = Instant::from_millis(u64::MAX - 1);
        assert_eq!(
            late + Duration::from_millis(10),
            Instant::from_millis(u64::MAX)
        );
        assert_eq!(Instant::ZERO - late, Duration::ZERO);
        assert_eq!(late - Instant::ZERO, Duration::from_millis(u64::MAX - 1));
        assert_eq!(Duration::from_secs(u64::MAX), Duration::MAX);
        assert_eq!(Duration::from_secs(3).as_millis(), 3000);
        assert_eq!(
            Duration::from_millis(5).saturating_sub(Duration::from_millis(7)),
            Duration::ZERO
        );
    }
}
