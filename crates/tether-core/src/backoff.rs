//! Reconnect backoff: exponential growth with jitter, integer-only.
//!
//! A fleet of devices that lose their server at the same moment must not all
//! come back at the same moment. [`Backoff`] spreads the retries with the two
//! schemes of the AWS Architecture Blog post "Exponential Backoff and Jitter":
//!
//! - [`Jitter::Full`]: `delay = random(0 ..= min(cap, base * multiplier^attempt))`.
//! - [`Jitter::Decorrelated`]: `delay = min(cap, random(base ..= previous * multiplier))`
//!   (the post uses a multiplier of 3; set [`BackoffConfig::with_multiplier_percent`] to 300).
//! - [`Jitter::None`]: the plain exponential ceiling, for tests and lone devices.
//!
//! Everything is 32-bit integer arithmetic on milliseconds (the ESP32-C3
//! has no FPU, and 64-bit arithmetic is library code on it), random numbers come from a caller-provided [`rand_core::RngCore`], so a
//! seeded generator replays the same delays, and time is an argument: the
//! state machine never reads a clock.
//!
//! The counter resets only after a connection stayed healthy for
//! [`BackoffConfig::with_healthy_after`]: a server that accepts and drops at
//! once keeps the delays growing instead of being hammered.
//!
//! A short outage means a short absence: no delay is longer than the
//! outage so far plus `base` (or the second window, `base * multiplier`, if
//! that is longer; the outage begins when a link that stayed up at least
//! `base` goes down, or at the first failure). Without that bound a
//! device whose window had grown to the cap through flapping links (each up
//! for less than `healthy_after`) would wait up to the cap after a
//! five-second outage; with it, a device is back at most twice the outage
//! plus `base` after the outage began, whatever its window. Failing at once
//! on every attempt, the delays still grow exactly as the window does (the
//! outage so far is the sum of the delays before).
//!
//! ```
//! use rand_core::SeedableRng;
//! use tether_core::backoff::{Backoff, BackoffConfig, Jitter};
//! use tether_core::time::{Duration, Instant};
//!
//! let config = BackoffConfig::default()
//!     .with_base(Duration::from_millis(500))
//!     .with_cap(Duration::from_secs(30))
//!     .with_jitter(Jitter::Full)
//!     .with_healthy_after(Duration::from_secs(10));
//! let mut backoff = Backoff::new(config).unwrap();
//! let mut rng = rand_xorshift::XorShiftRng::seed_from_u64(7);
//!
//! // The connection failed: wait somewhere in [0, 500 ms].
//! let delay = backoff.on_failure(Instant::ZERO, &mut rng).unwrap();
//! assert!(delay <= Duration::from_millis(500));
//! // Failed again: the window doubled to [0, 1 s].
//! let delay = backoff.on_failure(Instant::from_millis(600), &mut rng).unwrap();
//! assert!(delay <= Duration::from_secs(1));
//! assert_eq!(backoff.attempts(), 2);
//!
//! // Connected, then dropped after 2 s: not healthy long enough, no reset.
//! backoff.on_connected(Instant::from_millis(2_000));
//! backoff.on_failure(Instant::from_millis(4_000), &mut rng).unwrap();
//! assert_eq!(backoff.attempts(), 3);
//!
//! // Connected for a whole minute: the next failure starts from the base again.
//! backoff.on_connected(Instant::from_millis(5_000));
//! let delay = backoff.on_failure(Instant::from_millis(65_000), &mut rng).unwrap();
//! assert!(delay <= Duration::from_millis(500));
//! assert_eq!(backoff.attempts(), 1);
//! ```

use core::fmt;

use rand_core::RngCore;

use crate::time::{Duration, Instant};

/// How a delay is drawn from the exponential window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Jitter {
    /// No randomness: the delay is the exponential ceiling itself. Every
    /// device that failed together retries together; use it for tests.
    None,
    /// "Full jitter": uniform in `[0, ceiling]`. The best spread.
    #[default]
    Full,
    /// "Decorrelated jitter": uniform in `[base, previous * multiplier]`,
    /// capped. Never retries sooner than `base`.
    Decorrelated,
}

/// Settings of a [`Backoff`]. Builder-lite: start from [`Default`] and chain
/// the `with_*` setters; [`Backoff::new`] checks the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BackoffConfig {
    base: Duration,
    cap: Duration,
    multiplier_percent: u32,
    jitter: Jitter,
    max_attempts: Option<u32>,
    max_elapsed: Option<Duration>,
    healthy_after: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl BackoffConfig {
    /// Base 1 s, cap 60 s, doubling, full jitter, never give up, reset after
    /// 30 s of healthy connection.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
            multiplier_percent: 200,
            jitter: Jitter::Full,
            max_attempts: None,
            max_elapsed: None,
            healthy_after: Duration::from_secs(30),
        }
    }

    /// The first window (at least 1 ms).
    #[must_use]
    pub const fn with_base(mut self, base: Duration) -> Self {
        self.base = base;
        self
    }

    /// The largest delay ever returned (at least `base`).
    #[must_use]
    pub const fn with_cap(mut self, cap: Duration) -> Self {
        self.cap = cap;
        self
    }

    /// Growth per attempt in percent: 200 doubles, 150 grows by half, 300
    /// triples (at least 100).
    #[must_use]
    pub const fn with_multiplier_percent(mut self, percent: u32) -> Self {
        self.multiplier_percent = percent;
        self
    }

    /// How delays are drawn from the window.
    #[must_use]
    pub const fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// Give up after this many consecutive failures (`None`: never).
    #[must_use]
    pub const fn with_max_attempts(mut self, attempts: Option<u32>) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// Give up once this much time passed since the first failure of the
    /// current run (`None`: never).
    #[must_use]
    pub const fn with_max_elapsed(mut self, elapsed: Option<Duration>) -> Self {
        self.max_elapsed = elapsed;
        self
    }

    /// A connection counts as healthy, and resets the backoff, only after it
    /// stayed up this long.
    #[must_use]
    pub const fn with_healthy_after(mut self, healthy_after: Duration) -> Self {
        self.healthy_after = healthy_after;
        self
    }

    /// The first window.
    #[must_use]
    pub const fn base(&self) -> Duration {
        self.base
    }

    /// The largest delay.
    #[must_use]
    pub const fn cap(&self) -> Duration {
        self.cap
    }

    /// Growth per attempt, in percent.
    #[must_use]
    pub const fn multiplier_percent(&self) -> u32 {
        self.multiplier_percent
    }

    /// The jitter scheme.
    #[must_use]
    pub const fn jitter(&self) -> Jitter {
        self.jitter
    }

    /// Consecutive failures before giving up.
    #[must_use]
    pub const fn max_attempts(&self) -> Option<u32> {
        self.max_attempts
    }

    /// Time since the first failure before giving up.
    #[must_use]
    pub const fn max_elapsed(&self) -> Option<Duration> {
        self.max_elapsed
    }

    /// Uptime after which a connection resets the backoff.
    #[must_use]
    pub const fn healthy_after(&self) -> Duration {
        self.healthy_after
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// The first rule the settings break.
    pub const fn validate(&self) -> Result<(), BackoffConfigError> {
        if self.base.as_millis() == 0 {
            return Err(BackoffConfigError::ZeroBase);
        }
        if self.cap.as_millis() < self.base.as_millis() {
            return Err(BackoffConfigError::CapBelowBase);
        }
        if self.multiplier_percent < 100 {
            return Err(BackoffConfigError::ShrinkingMultiplier);
        }
        Ok(())
    }
}

/// A [`BackoffConfig`] that cannot work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum BackoffConfigError {
    /// `base` is zero: every retry would be immediate.
    ZeroBase,
    /// `cap` is smaller than `base`.
    CapBelowBase,
    /// The multiplier is below 100 %: delays would shrink.
    ShrinkingMultiplier,
}

impl fmt::Display for BackoffConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ZeroBase => "backoff base must be at least 1 ms",
            Self::CapBelowBase => "backoff cap must not be below the base",
            Self::ShrinkingMultiplier => "backoff multiplier must be at least 100 percent",
        })
    }
}

impl core::error::Error for BackoffConfigError {}

/// The backoff ran out: stop retrying and tell the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum GaveUp {
    /// [`BackoffConfig::max_attempts`] consecutive failures.
    MaxAttempts,
    /// [`BackoffConfig::max_elapsed`] passed since the first failure.
    MaxElapsed,
}

impl fmt::Display for GaveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::MaxAttempts => "gave up reconnecting: too many consecutive failures",
            Self::MaxElapsed => "gave up reconnecting: failing for too long",
        })
    }
}

impl core::error::Error for GaveUp {}

/// Reconnect backoff state. Sans-IO: feed it failures and connections with
/// the current time; it answers with the delay before the next attempt.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Backoff {
    config: BackoffConfig,
    /// Consecutive failures since the last reset.
    attempts: u32,
    /// The exponential window for the next failure: `base * multiplier^attempts`, capped.
    ceiling: Duration,
    /// The previous delay (decorrelated jitter grows from it).
    previous: Duration,
    /// When the current run of failures started.
    first_failure: Option<Instant>,
    /// When the current connection came up, if one is up.
    connected_since: Option<Instant>,
    /// When the current outage began: the last drop of a link that had
    /// stayed up at least `base` (or the first failure).
    down_since: Option<Instant>,
}

impl Backoff {
    /// A fresh backoff.
    ///
    /// # Errors
    /// The settings are invalid (see [`BackoffConfig::validate`]).
    pub const fn new(config: BackoffConfig) -> Result<Self, BackoffConfigError> {
        match config.validate() {
            Ok(()) => Ok(Self::checked(config)),
            Err(e) => Err(e),
        }
    }

    /// [`Backoff::new`] for settings already validated (by
    /// [`SessionConfig::validate`](crate::session::SessionConfig::validate)).
    pub(crate) const fn checked(config: BackoffConfig) -> Self {
        Self {
            config,
            attempts: 0,
            ceiling: config.base,
            previous: config.base,
            first_failure: None,
            connected_since: None,
            down_since: None,
        }
    }

    /// The settings.
    #[must_use]
    pub const fn config(&self) -> &BackoffConfig {
        &self.config
    }

    /// Consecutive failures since the last reset.
    #[must_use]
    pub const fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Forgets every failure, as after a long healthy connection.
    pub const fn reset(&mut self) {
        self.attempts = 0;
        self.ceiling = self.config.base;
        self.previous = self.config.base;
        self.first_failure = None;
        self.down_since = None;
    }

    /// A connection came up at `now`. It resets the backoff only if it is
    /// still up [`BackoffConfig::healthy_after`] later (checked at the next
    /// failure, or with [`Backoff::is_healthy`]).
    pub const fn on_connected(&mut self, now: Instant) {
        self.connected_since = Some(now);
    }

    /// The current connection is still up at `now`. Call it now and then
    /// (the session does at every message it receives) so that a
    /// connection up for longer than [`Duration::MAX`] still counts as
    /// healthy: the 32-bit [`Instant`] it came up at is kept no older than
    /// the checks need ([`Instant::at_most`]).
    pub fn on_alive(&mut self, now: Instant) {
        if let Some(since) = self.connected_since {
            let enough = self.config.healthy_after.max(self.config.base);
            self.connected_since = Some(since.at_most(now, enough));
        }
    }

    /// Whether the current connection has been up long enough to count as
    /// healthy.
    #[must_use]
    pub fn is_healthy(&self, now: Instant) -> bool {
        self.connected_since
            .is_some_and(|since| now - since >= self.config.healthy_after)
    }

    /// A connection attempt failed, or a connection dropped, at `now`.
    /// Returns how long to wait before the next attempt.
    ///
    /// # Errors
    /// [`GaveUp`] when a give-up limit is reached; the state stays as it is
    /// until [`Backoff::reset`], so every later call gives up too.
    pub fn on_failure<R: RngCore + ?Sized>(
        &mut self,
        now: Instant,
        rng: &mut R,
    ) -> Result<Duration, GaveUp> {
        if self.is_healthy(now) {
            trace!("backoff: connection was healthy, reset");
            self.reset();
        }
        // A link that stayed up at least `base` ends the previous outage;
        // one dropped sooner (accepted and dropped at once) does not.
        if self
            .connected_since
            .take()
            .is_some_and(|since| now - since >= self.config.base)
        {
            self.down_since = Some(now);
        }
        // The outage bound stops mattering at the cap: an outage that
        // began longer ago counts as `cap` long, so the stamp never wraps.
        let down_since = self
            .down_since
            .map_or(now, |since| since.at_most(now, self.config.cap));
        self.down_since = Some(down_since);
        let first_failure = *self.first_failure.get_or_insert(now);

        if let Some(max) = self.config.max_attempts
            && self.attempts >= max
        {
            return Err(GaveUp::MaxAttempts);
        }
        if let Some(max) = self.config.max_elapsed
            && now - first_failure >= max
        {
            return Err(GaveUp::MaxElapsed);
        }

        let base = self.config.base.as_millis();
        // No wait longer than the outage so far plus `base` (or the
        // second window, so decorrelated jitter keeps its spread).
        let outage_bound = (now - down_since)
            .as_millis()
            .saturating_add(base)
            .max(self.grow(base));
        let cap = self.config.cap.as_millis().min(outage_bound);
        // One draw site for every jitter (a span of zero draws nothing).
        let ceiling = self.ceiling.as_millis().min(cap);
        let (low, high) = match self.config.jitter {
            Jitter::None => (ceiling, ceiling),
            Jitter::Full => (0, ceiling),
            // `cap >= base`: the configured cap is (validated), and so is
            // the outage bound.
            Jitter::Decorrelated => (
                base,
                self.grow(self.previous.as_millis()).min(cap).max(base),
            ),
        };
        let delay = uniform_inclusive(rng, low, high);
        let delay = Duration::from_millis(u64::from(delay.min(cap)));
        self.previous = delay;
        self.ceiling = Duration::from_millis(u64::from(
            self.grow(self.ceiling.as_millis())
                .min(self.config.cap.as_millis()),
        ));
        self.attempts = self.attempts.saturating_add(1);
        debug!(
            "backoff: attempt {} waits {} ms",
            self.attempts,
            delay.as_millis()
        );
        Ok(delay)
    }

    /// `millis * multiplier`, growing by at least 1 ms when the multiplier is
    /// above 100 % (so a 1 ms base still grows with a 150 % multiplier).
    // Out of line: called three times per failure.
    #[inline(never)]
    fn grow(&self, millis: u32) -> u32 {
        let percent = self.config.multiplier_percent;
        // 32-bit division is one instruction on the chips. A product beyond
        // 32 bits (minutes times a large multiplier, where the cap decides
        // anyway) rounds the multiplier up to a whole factor.
        let grown = match millis.checked_mul(percent) {
            Some(product) => product / 100,
            None => millis.saturating_mul(percent.div_ceil(100)),
        };
        if percent > 100 {
            grown.max(millis.saturating_add(1))
        } else {
            grown
        }
    }
}

/// Every bit up to the highest set bit of `value` (0 for 0): the bits
/// smeared down. `u32::MAX >> value.leading_zeros()` is the same mask, but
/// links a software count of leading zeros on cores without one (the
/// ESP32-C3's riscv32imc: 60 B more).
fn bits_up_to_highest(value: u32) -> u32 {
    let mut mask = value;
    for shift in [1, 2, 4, 8, 16] {
        mask |= mask >> shift;
    }
    mask
}

/// A uniformly distributed integer in `[low, high]` (`low <= high`), without
/// bias: draws masked to the span's bit width, and redrawn (less than half
/// the time) when above it. No division, and one 32-bit draw each.
#[inline(never)]
pub(crate) fn uniform_inclusive<R: RngCore + ?Sized>(rng: &mut R, low: u32, high: u32) -> u32 {
    let span = match high.checked_sub(low) {
        Some(0) | None => return low,
        Some(span) => span,
    };
    let mask = bits_up_to_highest(span);
    loop {
        let draw = rng.next_u32() & mask;
        if draw <= span {
            return low + draw;
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate alloc;
    extern crate std;

    use alloc::vec::Vec;

    use proptest::prelude::*;
    use rand_core::SeedableRng;
    use rand_xorshift::XorShiftRng;

    use super::*;

    fn ms(millis: u32) -> Duration {
        Duration::from_millis(u64::from(millis))
    }

    fn at(millis: u64) -> Instant {
        Instant::from_millis(millis)
    }

    fn jitter_strategy() -> impl Strategy<Value = Jitter> {
        prop_oneof![
            Just(Jitter::None),
            Just(Jitter::Full),
            Just(Jitter::Decorrelated)
        ]
    }

    fn config_strategy() -> impl Strategy<Value = BackoffConfig> {
        (
            1u32..5_000,
            // Caps up to the longest duration: the growth past 32 bits.
            prop_oneof![4 => 0u32..600_000, 1 => 0u32..(1 << 31) - 5_000],
            100u32..1_000,
            jitter_strategy(),
            0u32..120_000,
        )
            .prop_map(|(base, extra, multiplier, jitter, healthy)| {
                BackoffConfig::default()
                    .with_base(ms(base))
                    .with_cap(ms(base + extra))
                    .with_multiplier_percent(multiplier)
                    .with_jitter(jitter)
                    .with_healthy_after(ms(healthy))
            })
    }

    #[test]
    fn config_validation() {
        let ok = BackoffConfig::default();
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(
            Backoff::new(ok.with_base(Duration::ZERO)).err(),
            Some(BackoffConfigError::ZeroBase)
        );
        assert_eq!(
            Backoff::new(ok.with_base(ms(10)).with_cap(ms(9))).err(),
            Some(BackoffConfigError::CapBelowBase)
        );
        assert_eq!(
            Backoff::new(ok.with_multiplier_percent(99)).err(),
            Some(BackoffConfigError::ShrinkingMultiplier)
        );
    }

    #[test]
    fn no_jitter_is_plain_exponential_up_to_the_cap() {
        let config = BackoffConfig::default()
            .with_base(ms(100))
            .with_cap(ms(1_000))
            .with_jitter(Jitter::None);
        let mut backoff = Backoff::new(config).unwrap();
        let mut rng = XorShiftRng::seed_from_u64(1);
        assert_eq!(
            failing_at_once(&mut backoff, &mut rng, 6),
            [100, 200, 400, 800, 1_000, 1_000]
        );
    }

    #[test]
    fn a_range_of_one_value_draws_nothing() {
        let mut rng = XorShiftRng::seed_from_u64(7);
        let before = rand_core::RngCore::next_u32(&mut rng.clone());
        assert_eq!(uniform_inclusive(&mut rng, 5, 5), 5);
        assert_eq!(uniform_inclusive(&mut rng, 9, 3), 9);
        // The generator did not move: its next draw is the one it had.
        assert_eq!(rand_core::RngCore::next_u32(&mut rng), before);
        // Without jitter the backoff draws nothing either.
        let config = BackoffConfig::default().with_jitter(Jitter::None);
        let mut backoff = Backoff::new(config).unwrap();
        let mut rng = XorShiftRng::seed_from_u64(7);
        failing_at_once(&mut backoff, &mut rng, 4);
        assert_eq!(rand_core::RngCore::next_u32(&mut rng), before);
    }

    /// Delays of `attempts` connection attempts that each fail at once,
    /// the next one made when the delay is over.
    fn failing_at_once(backoff: &mut Backoff, rng: &mut XorShiftRng, attempts: usize) -> Vec<u32> {
        let mut now = at(0);
        (0..attempts)
            .map(|_| {
                let delay = backoff.on_failure(now, rng).unwrap();
                now = now + delay;
                delay.as_millis()
            })
            .collect()
    }

    #[test]
    fn fractional_multiplier_grows_even_from_one_millisecond() {
        let config = BackoffConfig::default()
            .with_base(ms(1))
            .with_cap(ms(10))
            .with_multiplier_percent(150)
            .with_jitter(Jitter::None);
        let mut backoff = Backoff::new(config).unwrap();
        let mut rng = XorShiftRng::seed_from_u64(1);
        // 1, then max(1.5 -> 1, 1 + 1) = 2, 3, 4 (4.5), 6, 9, 10 (capped).
        assert_eq!(
            failing_at_once(&mut backoff, &mut rng, 8),
            [1, 2, 3, 4, 6, 9, 10, 10]
        );
    }

    #[test]
    fn gives_up_after_max_attempts_and_stays_given_up() {
        let config = BackoffConfig::default().with_max_attempts(Some(3));
        let mut backoff = Backoff::new(config).unwrap();
        let mut rng = XorShiftRng::seed_from_u64(2);
        for i in 0..3 {
            assert!(backoff.on_failure(at(i), &mut rng).is_ok());
        }
        assert_eq!(
            backoff.on_failure(at(3), &mut rng),
            Err(GaveUp::MaxAttempts)
        );
        assert_eq!(
            backoff.on_failure(at(4), &mut rng),
            Err(GaveUp::MaxAttempts)
        );
        backoff.reset();
        assert!(backoff.on_failure(at(5), &mut rng).is_ok());
    }

    #[test]
    fn gives_up_after_max_elapsed_since_first_failure() {
        let config = BackoffConfig::default().with_max_elapsed(Some(Duration::from_secs(60)));
        let mut backoff = Backoff::new(config).unwrap();
        let mut rng = XorShiftRng::seed_from_u64(3);
        assert!(backoff.on_failure(at(10_000), &mut rng).is_ok());
        assert!(backoff.on_failure(at(69_999), &mut rng).is_ok());
        assert_eq!(
            backoff.on_failure(at(70_000), &mut rng),
            Err(GaveUp::MaxElapsed)
        );
    }

    #[test]
    fn healthy_connection_restarts_the_give_up_clock() {
        let config = BackoffConfig::default()
            .with_max_elapsed(Some(Duration::from_secs(60)))
            .with_healthy_after(Duration::from_secs(30));
        let mut backoff = Backoff::new(config).unwrap();
        let mut rng = XorShiftRng::seed_from_u64(4);
        assert!(backoff.on_failure(at(0), &mut rng).is_ok());
        backoff.on_connected(at(1_000));
        assert!(!backoff.is_healthy(at(30_999)));
        assert!(backoff.is_healthy(at(31_000)));
        // Dropped long after the give-up limit, but the connection was healthy.
        assert!(backoff.on_failure(at(500_000), &mut rng).is_ok());
        assert_eq!(backoff.attempts(), 1);
    }

    #[test]
    fn same_seed_same_delays() {
        for jitter in [Jitter::Full, Jitter::Decorrelated] {
            let config = BackoffConfig::default().with_jitter(jitter);
            let run = |seed| {
                let mut backoff = Backoff::new(config).unwrap();
                let mut rng = XorShiftRng::seed_from_u64(seed);
                (0..20)
                    .map(|i| backoff.on_failure(at(i), &mut rng).unwrap())
                    .collect::<Vec<_>>()
            };
            assert_eq!(run(9), run(9));
            assert_ne!(run(9), run(10));
        }
    }

    #[test]
    fn full_jitter_mean_grows_exponentially() {
        // Over many devices the mean delay of attempt n is half the window
        // base * 2^n: 500, 1000, 2000, 4000, 8000, then the 10 s cap -> 5000.
        let config = BackoffConfig::default()
            .with_base(ms(1_000))
            .with_cap(ms(10_000));
        let devices = 4_000u64;
        let mut sums = [0u64; 7];
        for seed in 0..devices {
            let mut backoff = Backoff::new(config).unwrap();
            let mut rng = XorShiftRng::seed_from_u64(seed);
            // A long outage: the outage bound never bites.
            for (i, sum) in sums.iter_mut().enumerate() {
                *sum += u64::from(
                    backoff
                        .on_failure(at(i as u64 * 60_000), &mut rng)
                        .unwrap()
                        .as_millis(),
                );
            }
        }
        let expected = [500u64, 1_000, 2_000, 4_000, 5_000, 5_000, 5_000];
        for (sum, expected) in sums.iter().zip(expected) {
            let mean = sum / devices;
            // The standard error of the mean is window/sqrt(12 * 4000) < 0.5 %.
            assert!(
                mean.abs_diff(expected) * 100 <= expected * 3,
                "mean {mean} expected {expected}"
            );
        }
    }

    /// Chi-squared statistic of `samples` over `buckets` equal buckets of
    /// `[low, high]`, against the uniform distribution.
    fn chi_squared(samples: &[u32], low: u32, high: u32, buckets: usize) -> (f64, Vec<u64>) {
        let width = (high - low + 1).div_ceil(buckets as u32);
        let mut counts = alloc::vec![0u64; buckets];
        for &sample in samples {
            assert!((low..=high).contains(&sample));
            counts[((sample - low) / width) as usize] += 1;
        }
        let expected = samples.len() as f64 / buckets as f64;
        let statistic = counts
            .iter()
            .map(|&c| {
                let d = c as f64 - expected;
                d * d / expected
            })
            .sum();
        (statistic, counts)
    }

    /// The reconnect storm: 10 000 devices lose the server at the same
    /// instant. Their first retries must spread evenly over the window.
    #[test]
    fn reconnect_storm_spreads_first_retries() {
        const DEVICES: u64 = 10_000;
        // 19 degrees of freedom: P(chi2 > 43.82) = 0.001 for a uniform spread.
        const CRITICAL: f64 = 43.82;
        let first_retries = |jitter| {
            let config = BackoffConfig::default()
                .with_base(ms(2_000))
                .with_jitter(jitter);
            (0..DEVICES)
                .map(|device| {
                    let mut backoff = Backoff::new(config).unwrap();
                    // Each device seeds from its own entropy (here: its index).
                    let mut rng = XorShiftRng::seed_from_u64(device.wrapping_mul(0x9E37_79B9));
                    backoff.on_failure(at(0), &mut rng).unwrap().as_millis()
                })
                .collect::<Vec<_>>()
        };

        let full = first_retries(Jitter::Full);
        let (statistic, counts) = chi_squared(&full, 0, 2_000, 20);
        assert!(
            statistic < CRITICAL,
            "full jitter bunches: {statistic} {counts:?}"
        );
        // No 100 ms slice gets more than 1.2x its fair share of 500.
        assert!(counts.iter().all(|&c| c < 600), "{counts:?}");

        let decorrelated = first_retries(Jitter::Decorrelated);
        let (statistic, counts) = chi_squared(&decorrelated, 2_000, 4_000, 20);
        assert!(
            statistic < CRITICAL,
            "decorrelated bunches: {statistic} {counts:?}"
        );

        // Without jitter every device retries in the same millisecond.
        let none = first_retries(Jitter::None);
        assert!(none.iter().all(|&d| d == 2_000));
    }

    /// Issue 13: links cut every few seconds (never healthy) grow every
    /// device's window to the cap; then the server refuses connections for
    /// five seconds. Each device must be back within twice the outage plus
    /// `base`, not a cap's worth of seconds later.
    #[test]
    fn a_short_outage_means_a_short_absence() {
        let config = BackoffConfig::default();
        let outage = 5_000u32;
        let mut worst = 0;
        for seed in 0..2_000u64 {
            let mut backoff = Backoff::new(config).unwrap();
            let mut rng = XorShiftRng::seed_from_u64(seed);
            let mut now = at(0);
            // Flapping: up 3 s, cut, back after the delay; 40 times.
            for _ in 0..40 {
                backoff.on_connected(now);
                now = now + ms(3_000);
                now = now + backoff.on_failure(now, &mut rng).unwrap();
            }
            assert_eq!(backoff.ceiling, config.cap(), "the window has grown");
            // The outage: the link drops after 3 s up, every attempt within
            // the next five seconds is refused at once.
            backoff.on_connected(now);
            now = now + ms(3_000);
            let down = now;
            loop {
                now = now + backoff.on_failure(now, &mut rng).unwrap();
                if now - down >= ms(outage) {
                    break;
                }
            }
            let absence = (now - down).as_millis();
            assert!(
                absence <= 2 * outage + 1_000,
                "seed {seed}: back after {absence} ms"
            );
            worst = worst.max(absence);
        }
        // The bound is reached, not just respected: the check has teeth.
        assert!(worst > outage + 1_000, "worst absence {worst} ms");
    }

    /// A server that accepts and drops at once (up less than `base`) does
    /// not end the outage: the delays keep growing to the cap.
    #[test]
    fn accept_and_drop_keeps_the_delays_growing() {
        let config = BackoffConfig::default()
            .with_base(ms(100))
            .with_cap(ms(1_000))
            .with_jitter(Jitter::None);
        let mut backoff = Backoff::new(config).unwrap();
        let mut rng = XorShiftRng::seed_from_u64(1);
        let mut now = at(0);
        let mut delays = Vec::new();
        for _ in 0..6 {
            backoff.on_connected(now);
            now = now + ms(10);
            let delay = backoff.on_failure(now, &mut rng).unwrap();
            delays.push(delay.as_millis());
            now = now + delay;
        }
        assert_eq!(delays, [100, 200, 400, 800, 1_000, 1_000]);
    }

    /// An outage longer than two instants may be apart (24.8 days), and
    /// across the wrap of the 32-bit tick: the delays stay at the cap,
    /// the outage bound does not shrink them back to a few seconds.
    #[test]
    fn an_outage_of_weeks_keeps_the_delays_at_the_cap() {
        let config = BackoffConfig::default().with_jitter(Jitter::None);
        let mut backoff = Backoff::new(config).unwrap();
        let mut rng = XorShiftRng::seed_from_u64(1);
        let mut now = at(u64::from(u32::MAX) - 3_600_000);
        // 40 days of attempts a minute apart.
        let delays: Vec<u32> = (0..40 * 24 * 60)
            .map(|_| {
                let delay = backoff.on_failure(now, &mut rng).unwrap();
                now = now + delay;
                delay.as_millis()
            })
            .collect();
        assert_eq!(
            delays[..7],
            [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000]
        );
        assert!(delays[7..].iter().all(|&d| d == 60_000));
    }

    #[test]
    fn the_smeared_mask_is_the_leading_zeros_mask() {
        for value in (0..=4096u32).chain([u32::MAX, 1 << 31, (1 << 31) - 1, 0x0001_0000]) {
            let expected = u32::MAX.checked_shr(value.leading_zeros()).unwrap_or(0);
            assert_eq!(bits_up_to_highest(value), expected, "{value:#x}");
        }
    }

    proptest! {
        #[test]
        fn the_smeared_mask_matches_on_any_value(value in any::<u32>()) {
            let expected = u32::MAX.checked_shr(value.leading_zeros()).unwrap_or(0);
            prop_assert_eq!(bits_up_to_highest(value), expected);
        }
    }

    #[test]
    fn uniform_inclusive_covers_small_ranges_evenly() {
        let mut rng = XorShiftRng::seed_from_u64(5);
        let mut counts = [0u32; 3];
        for _ in 0..30_000 {
            counts[uniform_inclusive(&mut rng, 10, 12) as usize - 10] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_500..10_500).contains(&c)),
            "{counts:?}"
        );
        assert_eq!(uniform_inclusive(&mut rng, 7, 7), 7);
        assert_eq!(uniform_inclusive(&mut rng, 8, 7), 8);
        let _ = uniform_inclusive(&mut rng, 0, u32::MAX);
    }

    #[derive(Debug, Clone, Copy)]
    enum Event {
        Fail { after: u32 },
        Connect { after: u32, stays_up: u32 },
    }

    /// Up to 45 days: longer than two instants may be apart.
    const LONG: u32 = 45 * 24 * 3_600 * 1_000;

    fn event_strategy() -> impl Strategy<Value = Event> {
        prop_oneof![
            4 => (0u32..100_000).prop_map(|after| Event::Fail { after }),
            4 => (0u32..100_000, 0u32..200_000)
                .prop_map(|(after, stays_up)| Event::Connect { after, stays_up }),
            1 => (0u32..100_000, 0..LONG)
                .prop_map(|(after, stays_up)| Event::Connect { after, stays_up }),
        ]
    }

    /// A connection up from `now` for `millis`, reported alive every
    /// twelve hours as the session does (at every message it receives).
    fn stay_up(backoff: &mut Backoff, now: Instant, millis: u32) -> Instant {
        const HALF_DAY: u32 = 12 * 3_600 * 1_000;
        let mut left = millis;
        let mut now = now;
        while left > 0 {
            let step = left.min(HALF_DAY);
            now = now + ms(step);
            left -= step;
            backoff.on_alive(now);
        }
        now
    }

    proptest! {
        /// Every delay lies in [0, cap]; decorrelated ones in [base, cap];
        /// the no-jitter delay is exactly the exponential ceiling.
        #[test]
        fn delays_stay_within_bounds(
            config in config_strategy(),
            seed in any::<u64>(),
            events in proptest::collection::vec(event_strategy(), 1..60),
            origin in any::<u32>(),
        ) {
            let mut backoff = Backoff::new(config).unwrap();
            let mut rng = XorShiftRng::seed_from_u64(seed);
            // Anywhere on the 32-bit circle: runs cross the wrap point.
            let mut now = at(u64::from(origin));
            // When the current outage began (the model of `down_since`).
            let mut down_since = None;
            for event in events {
                match event {
                    Event::Fail { after } => now = now + ms(after),
                    Event::Connect { after, stays_up } => {
                        now = now + ms(after);
                        backoff.on_connected(now);
                        now = stay_up(&mut backoff, now, stays_up);
                        if stays_up >= config.base().as_millis() {
                            down_since = Some(now);
                        }
                    }
                }
                let outage = now - *down_since.get_or_insert(now);
                let bound = ms((outage.as_millis() + config.base().as_millis())
                    .max(backoff.grow(config.base().as_millis())));
                // A healthy connection resets the window before the draw.
                let ceiling = if backoff.is_healthy(now) { config.base() } else { backoff.ceiling };
                let delay = backoff.on_failure(now, &mut rng).unwrap();
                prop_assert!(delay <= config.cap());
                // A short outage, a short wait.
                prop_assert!(delay <= bound);
                match config.jitter() {
                    Jitter::None => prop_assert_eq!(delay, ceiling.min(bound)),
                    Jitter::Full => prop_assert!(delay <= ceiling),
                    Jitter::Decorrelated => prop_assert!(delay >= config.base()),
                }
            }
        }

        /// The counter resets if and only if the connection stayed up for
        /// at least `healthy_after`, however long it stayed up, wherever
        /// the 32-bit clock stands.
        #[test]
        fn reset_only_after_healthy_connection(
            config in config_strategy(),
            seed in any::<u64>(),
            failures_before in 1u32..20,
            stays_up in prop_oneof![0u32..200_000, 0..LONG],
            origin in any::<u32>(),
        ) {
            let mut backoff = Backoff::new(config).unwrap();
            let mut rng = XorShiftRng::seed_from_u64(seed);
            let origin = at(u64::from(origin));
            for i in 0..failures_before {
                backoff.on_failure(origin + ms(i), &mut rng).unwrap();
            }
            backoff.on_connected(origin + ms(1_000));
            let dropped = stay_up(&mut backoff, origin + ms(1_000), stays_up);
            backoff.on_failure(dropped, &mut rng).unwrap();
            if stays_up >= config.healthy_after().as_millis() {
                prop_assert_eq!(backoff.attempts(), 1);
            } else {
                prop_assert_eq!(backoff.attempts(), failures_before + 1);
            }
        }

        /// The ceiling never shrinks between resets and never passes the cap.
        #[test]
        fn ceiling_grows_monotonically(
            config in config_strategy(),
            seed in any::<u64>(),
            origin in any::<u32>(),
        ) {
            let mut backoff = Backoff::new(config).unwrap();
            let mut rng = XorShiftRng::seed_from_u64(seed);
            let mut last = backoff.ceiling;
            for i in 0..64 {
                backoff.on_failure(at(u64::from(origin) + i), &mut rng).unwrap();
                prop_assert!(backoff.ceiling >= last);
                prop_assert!(backoff.ceiling <= config.cap());
                if config.multiplier_percent() > 100 && last < config.cap() {
                    prop_assert!(backoff.ceiling > last);
                }
                last = backoff.ceiling;
            }
        }
    }
}
