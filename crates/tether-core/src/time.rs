//! Time as plain values: an [`Instant`] and a [`Duration`] in milliseconds.
//!
//! The session, keepalive and backoff state machines never read a clock.
//! The caller passes `now` in and asks for the next deadline (`poll_at`), the
//! way smoltcp and quinn-proto do it. That keeps them testable on virtual time
//! and independent of any timer driver: firmware converts from
//! `embassy_time::Instant::now().as_millis()`, a PC from `std::time::Instant`.
//!
//! # 32 bits
//!
//! Both are 32-bit millisecond counts, because the chips tether runs on
//! are 32-bit: every deadline is one add and one compare, not the 64-bit
//! library arithmetic it was. An [`Instant`] is a tick that wraps around
//! every 2³² ms (49.7 days); it is converted once, where a [`Clock`] reads
//! its 64-bit time ([`Instant::from_millis`] keeps the low 32 bits).
//! Instants compare the way smoltcp's TCP sequence numbers and the Linux
//! kernel's `time_after` on jiffies do, by the sign of their wrapping
//! difference: `a < b`
//! when `b` is less than half the wrap period (24.8 days) after `a`. So a
//! [`Duration`] is at most [`Duration::MAX`], 2³¹ − 1 ms, and everything
//! that builds one saturates there: `now + timeout` is always after `now`,
//! across the wrap point too.
//!
//! The state machines keep only instants that are at most one timeout or
//! one interval old when they are compared, and move older ones forward
//! ([`Instant::at_most`]), so a device that stays connected for months
//! behaves as one that stayed for a minute.

use core::cmp::Ordering;
use core::fmt;
use core::ops::{Add, Sub};

/// A length of time in whole milliseconds, at most [`Duration::MAX`]
/// (24.8 days).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Duration(u32);

impl Duration {
    /// No time at all.
    pub const ZERO: Self = Self(0);
    /// The longest duration: 2³¹ − 1 ms (24.8 days), half the period of
    /// an [`Instant`], so that `now + duration` is after `now`.
    pub const MAX: Self = Self(i32::MAX as u32);

    /// A duration of `millis` milliseconds (saturating at [`Duration::MAX`]).
    #[must_use]
    pub const fn from_millis(millis: u64) -> Self {
        if millis > Self::MAX.0 as u64 {
            Self::MAX
        } else {
            Self(millis as u32)
        }
    }

    /// A duration of `secs` seconds (saturating at [`Duration::MAX`]).
    #[must_use]
    pub const fn from_secs(secs: u64) -> Self {
        Self::from_millis(secs.saturating_mul(1000))
    }

    /// The duration in milliseconds (at most 2³¹ − 1).
    #[must_use]
    pub const fn as_millis(self) -> u32 {
        self.0
    }

    /// `self + other`, saturating at [`Duration::MAX`].
    #[must_use]
    pub const fn saturating_add(self, other: Self) -> Self {
        // Both are below 2^31: the sum fits 32 bits.
        let sum = self.0 + other.0;
        if sum > Self::MAX.0 {
            Self::MAX
        } else {
            Self(sum)
        }
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

/// A point in time: a millisecond tick that wraps around every 2³² ms
/// (49.7 days). Compared by wrapping difference (see the
/// [module docs](self#32-bits)): of two instants less than 24.8 days apart,
/// the earlier one is smaller, across the wrap point too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Instant(u32);

impl Instant {
    /// The origin.
    pub const ZERO: Self = Self(0);

    /// The instant `millis` milliseconds after the origin, modulo 2³²: the
    /// conversion from a clock's 64-bit time (it keeps the low 32 bits).
    #[must_use]
    pub const fn from_millis(millis: u64) -> Self {
        Self(millis as u32)
    }

    /// The tick: milliseconds since the origin, modulo 2³².
    #[must_use]
    pub const fn as_millis(self) -> u32 {
        self.0
    }

    /// `self - earlier`, the wrapping difference as a signed count:
    /// negative if `earlier` is after `self`.
    const fn diff(self, earlier: Self) -> i32 {
        self.0.wrapping_sub(earlier.0) as i32
    }

    /// Time elapsed from `earlier` to `self`, or zero if `earlier` is later.
    #[must_use]
    pub const fn saturating_duration_since(self, earlier: Self) -> Duration {
        let diff = self.diff(earlier);
        if diff > 0 {
            Duration(diff as u32)
        } else {
            Duration::ZERO
        }
    }

    /// `self`, or `now - max_age` if `self` is older than that. A state
    /// machine that keeps a time stamp (when a connection came up, when an
    /// outage began) only to ask whether `max_age` has passed since moves it
    /// forward this way while it waits, so the stamp never ages past half
    /// the wrap period and the answer stays right for as long as the device
    /// runs.
    #[must_use]
    pub fn at_most(self, now: Self, max_age: Duration) -> Self {
        if now - self > max_age {
            now - max_age
        } else {
            self
        }
    }
}

impl PartialOrd for Instant {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// By wrapping difference, so only a total order over instants less than
/// 2³¹ ms apart (which is all the state machines compare).
impl Ord for Instant {
    fn cmp(&self, other: &Self) -> Ordering {
        self.diff(*other).cmp(&0)
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;

    /// Wrapping: the result is after `self` (a duration is below 2³¹ ms).
    fn add(self, rhs: Duration) -> Instant {
        Instant(self.0.wrapping_add(rhs.0))
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;

    /// Wrapping: the result is before `self`.
    fn sub(self, rhs: Duration) -> Instant {
        Instant(self.0.wrapping_sub(rhs.0))
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
/// A virtual clock for tests: sleeping jumps straight to the deadline. A
/// clock keeps its own time in 64 bits and converts it at the boundary:
/// `now` keeps the low 32 bits, `sleep_until` waits for the (wrapping)
/// difference.
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
///         let wait = deadline - self.now();
///         self.0.set(self.0.get() + u64::from(wait.as_millis()));
///     }
/// }
///
/// let clock = VirtualClock::default();
/// embassy_futures::block_on(clock.sleep_until(Instant::ZERO + Duration::from_secs(5)));
/// assert_eq!(clock.now(), Instant::from_millis(5_000));
///
/// // 49.7 days later the tick wraps around; deadlines still work.
/// clock.0.set(u64::from(u32::MAX) - 1_000);
/// let deadline = clock.now() + Duration::from_secs(2);
/// assert!(deadline > clock.now());
/// embassy_futures::block_on(clock.sleep_until(deadline));
/// assert_eq!(clock.now(), deadline);
/// assert_eq!(clock.now().as_millis(), 999);
/// ```
///
/// With embassy-time on a board:
///
/// ```text
/// struct EmbassyClock;
/// impl Clock for EmbassyClock {
///     fn now(&self) -> Instant { Instant::from_millis(embassy_time::Instant::now().as_millis()) }
///     async fn sleep_until(&self, deadline: Instant) {
///         let wait = deadline - self.now();
///         embassy_time::Timer::after_millis(u64::from(wait.as_millis())).await
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
    use proptest::prelude::*;

    use super::*;

    /// The longest duration, in milliseconds.
    const MAX_MS: u64 = (1 << 31) - 1;

    #[test]
    fn durations_saturate_at_half_the_wrap_period() {
        assert_eq!(Duration::MAX.as_millis(), (1 << 31) - 1);
        assert_eq!(Duration::from_secs(u64::MAX), Duration::MAX);
        assert_eq!(Duration::from_millis(u64::MAX), Duration::MAX);
        assert_eq!(Duration::from_millis(MAX_MS + 1), Duration::MAX);
        assert_eq!(Duration::from_secs(3).as_millis(), 3000);
        assert_eq!(Duration::MAX.saturating_add(Duration::MAX), Duration::MAX);
        assert_eq!(
            Duration::from_millis(5).saturating_sub(Duration::from_millis(7)),
            Duration::ZERO
        );
    }

    #[test]
    fn instants_wrap_around_and_still_compare() {
        let late = Instant::from_millis(u64::from(u32::MAX) - 4);
        let deadline = late + Duration::from_millis(10);
        assert_eq!(deadline, Instant::from_millis(5));
        assert!(deadline > late);
        assert_eq!(deadline - late, Duration::from_millis(10));
        assert_eq!(late - deadline, Duration::ZERO);
        assert_eq!(deadline - Duration::from_millis(10), late);
        // The clock boundary keeps the low 32 bits.
        assert_eq!(Instant::from_millis(1 << 32), Instant::ZERO);
        assert_eq!(Instant::from_millis((1 << 32) + 7).as_millis(), 7);
    }

    #[test]
    fn old_stamps_move_forward() {
        let now = Instant::from_millis(100_000);
        let age = Duration::from_secs(30);
        assert_eq!(
            Instant::ZERO.at_most(now, age),
            Instant::from_millis(70_000)
        );
        let young = Instant::from_millis(90_000);
        assert_eq!(young.at_most(now, age), young);
        // A stamp from the future (never one of the state machines') stays.
        let later = Instant::from_millis(110_000);
        assert_eq!(later.at_most(now, age), later);
    }

    proptest! {
        /// Durations are the milliseconds, saturated.
        #[test]
        fn duration_from_millis_saturates(millis in any::<u64>(), other in 0..=MAX_MS) {
            let d = Duration::from_millis(millis);
            prop_assert_eq!(u64::from(d.as_millis()), millis.min(MAX_MS));
            let sum = d.saturating_add(Duration::from_millis(other));
            prop_assert_eq!(
                u64::from(sum.as_millis()),
                (millis.min(MAX_MS) + other).min(MAX_MS)
            );
        }

        /// Anywhere on the 32-bit circle, across the wrap point too, two
        /// instants after a common one compare as their offsets do, and
        /// their difference is the offsets' difference.
        #[test]
        fn comparisons_hold_across_the_wrap(
            origin in any::<u32>(),
            a in 0..=MAX_MS,
            b in 0..=MAX_MS,
        ) {
            let origin = Instant::from_millis(u64::from(origin));
            let (x, y) = (origin + Duration::from_millis(a), origin + Duration::from_millis(b));
            prop_assert_eq!(x.cmp(&y), a.cmp(&b));
            prop_assert_eq!(x < y, a < b);
            prop_assert_eq!(x >= y, a >= b);
            prop_assert_eq!(u64::from((x - y).as_millis()), a.saturating_sub(b));
            prop_assert_eq!(x.max(y), origin + Duration::from_millis(a.max(b)));
            prop_assert_eq!(x - Duration::from_millis(a), origin);
        }

        /// A deadline `timeout` after `start` is reached exactly when the
        /// clock has advanced by `timeout`, wherever the clock's 64-bit time
        /// stands (the wrap of the 32-bit tick included).
        #[test]
        fn deadlines_hold_across_the_wrap(
            start in prop_oneof![
                0..u64::MAX / 2,
                ((1u64 << 32) - 100_000)..((1u64 << 32) + 100_000),
                ((7u64 << 32) - 100_000)..((7u64 << 32) + 100_000),
            ],
            timeout in 0..=MAX_MS,
            elapsed in 0..=MAX_MS,
        ) {
            let start_tick = Instant::from_millis(start);
            let deadline = start_tick + Duration::from_millis(timeout);
            let now = Instant::from_millis(start + elapsed);
            prop_assert_eq!(now >= deadline, elapsed >= timeout);
            prop_assert_eq!(
                u64::from((deadline - now).as_millis()),
                timeout.saturating_sub(elapsed)
            );
            prop_assert_eq!(u64::from((now - start_tick).as_millis()), elapsed);
        }

        /// `at_most` leaves a stamp at most `max_age` old, and does not
        /// move one that already is.
        #[test]
        fn at_most_bounds_the_age(
            now in any::<u32>(),
            age in 0..=MAX_MS,
            max_age in 0..=MAX_MS,
        ) {
            let now = Instant::from_millis(u64::from(now));
            let stamp = now - Duration::from_millis(age);
            let moved = stamp.at_most(now, Duration::from_millis(max_age));
            prop_assert_eq!(u64::from((now - moved).as_millis()), age.min(max_age));
            prop_assert!(moved >= stamp);
        }
    }
}
