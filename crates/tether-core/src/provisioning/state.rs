//! The provisioning state machine: when to open the portal, when to try
//! the saved credentials, when to give up on them.
//!
//! ```text
//!                 boot: no record / corrupt record
//!  Unconfigured ───────────────────────────────────────────▶ Portal ◀─────┐
//!       │ boot: record with Wi-Fi                       ▲   │ saved       │
//!       ▼                                               │   ▼             │ reset button held
//!    Trying ──── N failures in a row (or 1 from the ────┘ Trying          │ (from any state)
//!     ▲  │       portal) ─────────────────────────────────────────────────┘
//!     │  │ joined Wi-Fi and reached the server
//!     │  ▼
//!     └─ Connected          Portal with saved credentials times out → Trying
//!  connection lost
//! ```
//!
//! Sans-IO: the machine never touches a radio, a store or a clock. The
//! backend reports events with the current time in milliseconds from any
//! fixed origin, calls [`Provisioning::poll`] at [`Provisioning::poll_at`]
//! at the latest, and carries out the [`Action`]s it takes from
//! [`Provisioning::poll_action`].
//!
//! ```
//! use tether_core::provisioning::state::{Action, Provisioning, ProvisioningConfig, State};
//!
//! let mut machine = Provisioning::new(ProvisioningConfig::default());
//! machine.boot(0, Ok(None)); // nothing stored
//! assert_eq!(machine.state(), State::Portal);
//! assert!(matches!(machine.poll_action(), Some(Action::OpenPortal(_))));
//! machine.credentials_saved(5_000);
//! assert_eq!(machine.poll_action(), Some(Action::Connect));
//! machine.wifi_joined(7_000);
//! machine.server_reached(8_000);
//! assert_eq!(machine.state(), State::Connected);
//! // The portal stays up a little so the phone can show "Done".
//! assert_eq!(machine.poll_at(), Some(8_000 + 30_000));
//! machine.poll(38_000);
//! assert_eq!(machine.poll_action(), Some(Action::ClosePortal));
//! ```

use heapless::Deque;

use super::portal::ConnectionStatus;
use super::record::ProvisioningRecord;
use super::store::StoreError;

/// Timing and retry settings, all times in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProvisioningConfig {
    /// Consecutive failed attempts with saved credentials before the portal
    /// opens.
    pub max_failures: u8,
    /// How long one attempt (join Wi-Fi and reach the server) may take.
    pub attempt_timeout_ms: u64,
    /// Pause between failed attempts.
    pub retry_delay_ms: u64,
    /// How long the portal stays open before saved credentials are tried
    /// again (the router may simply have been off). Without saved
    /// credentials the portal stays open.
    pub portal_timeout_ms: u64,
    /// How long the portal stays up after success, so the phone shows it.
    pub portal_linger_ms: u64,
    /// How long the reset button must be held to erase the record.
    pub reset_hold_ms: u64,
}

impl Default for ProvisioningConfig {
    fn default() -> Self {
        Self {
            max_failures: 3,
            attempt_timeout_ms: 20_000,
            retry_delay_ms: 5_000,
            portal_timeout_ms: 5 * 60_000,
            portal_linger_ms: 30_000,
            reset_hold_ms: 5_000,
        }
    }
}

impl ProvisioningConfig {
    /// Sets [`max_failures`](Self::max_failures) (at least 1).
    #[must_use]
    pub const fn with_max_failures(mut self, n: u8) -> Self {
        self.max_failures = if n == 0 { 1 } else { n };
        self
    }

    /// Sets [`attempt_timeout_ms`](Self::attempt_timeout_ms).
    #[must_use]
    pub const fn with_attempt_timeout_ms(mut self, ms: u64) -> Self {
        self.attempt_timeout_ms = ms;
        self
    }

    /// Sets [`retry_delay_ms`](Self::retry_delay_ms).
    #[must_use]
    pub const fn with_retry_delay_ms(mut self, ms: u64) -> Self {
        self.retry_delay_ms = ms;
        self
    }

    /// Sets [`portal_timeout_ms`](Self::portal_timeout_ms).
    #[must_use]
    pub const fn with_portal_timeout_ms(mut self, ms: u64) -> Self {
        self.portal_timeout_ms = ms;
        self
    }

    /// Sets [`portal_linger_ms`](Self::portal_linger_ms).
    #[must_use]
    pub const fn with_portal_linger_ms(mut self, ms: u64) -> Self {
        self.portal_linger_ms = ms;
        self
    }

    /// Sets [`reset_hold_ms`](Self::reset_hold_ms).
    #[must_use]
    pub const fn with_reset_hold_ms(mut self, ms: u64) -> Self {
        self.reset_hold_ms = ms;
        self
    }
}

/// The coarse state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum State {
    /// Before [`Provisioning::boot`].
    Unconfigured,
    /// The access point and portal are up, waiting for settings.
    Portal,
    /// Trying the saved credentials.
    Trying,
    /// On Wi-Fi and connected to the server.
    Connected,
}

/// Why the portal opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum PortalReason {
    /// Nothing stored, or a record without Wi-Fi (factory record).
    NotProvisioned,
    /// The stored record failed its CRC or did not decode.
    CorruptRecord,
    /// The store could not be read.
    StoreUnreadable,
    /// The saved credentials failed too many times in a row.
    TooManyFailures,
    /// The reset button was held.
    ResetButton,
}

/// What the backend must do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Action {
    /// Start the access point, DNS responder and portal.
    OpenPortal(PortalReason),
    /// Stop the access point and portal.
    ClosePortal,
    /// Load the record and join its network, then dial its server; report
    /// with [`Provisioning::wifi_joined`], [`Provisioning::server_reached`]
    /// or [`Provisioning::attempt_failed`].
    Connect,
    /// Drop the Wi-Fi and server connection (before an erase).
    Disconnect,
    /// Erase the stored record ([`ConfigStore::erase`](super::store::ConfigStore::erase)).
    EraseRecord,
}

/// What failed in an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Failure {
    /// Could not join the Wi-Fi network.
    Wifi,
    /// Joined Wi-Fi, but the server did not accept the connection.
    Server,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Portal { opened_at: u64 },
    Waiting { until: u64 },
    Joining { deadline: u64 },
    Reaching { deadline: u64 },
    Connected,
}

/// The provisioning state machine. See the [module docs](self).
#[derive(Debug)]
pub struct Provisioning {
    config: ProvisioningConfig,
    phase: Phase,
    portal_open: bool,
    /// When the portal should close after success, if it lingers.
    close_portal_at: Option<u64>,
    has_credentials: bool,
    failures: u8,
    last_failure: Option<Failure>,
    /// Credentials came from the portal: one failure sends the customer back.
    from_portal: bool,
    button_down_since: Option<u64>,
    actions: Deque<Action, 8>,
}

impl Provisioning {
    /// A machine in [`State::Unconfigured`].
    pub const fn new(config: ProvisioningConfig) -> Self {
        Self {
            config,
            phase: Phase::Idle,
            portal_open: false,
            close_portal_at: None,
            has_credentials: false,
            failures: 0,
            last_failure: None,
            from_portal: false,
            button_down_since: None,
            actions: Deque::new(),
        }
    }

    /// The coarse state.
    pub const fn state(&self) -> State {
        match self.phase {
            Phase::Idle => State::Unconfigured,
            Phase::Portal { .. } => State::Portal,
            Phase::Waiting { .. } | Phase::Joining { .. } | Phase::Reaching { .. } => State::Trying,
            Phase::Connected => State::Connected,
        }
    }

    /// Consecutive failed attempts so far.
    pub const fn failures(&self) -> u8 {
        self.failures
    }

    /// Whether the portal is up (it stays up while credentials saved
    /// through it are tried, and lingers after success).
    pub const fn portal_open(&self) -> bool {
        self.portal_open
    }

    /// What the portal's status page should say.
    pub const fn connection_status(&self) -> ConnectionStatus {
        match self.phase {
            Phase::Idle => ConnectionStatus::WaitingForSettings,
            Phase::Portal { .. } => match self.last_failure {
                Some(Failure::Wifi) => ConnectionStatus::WifiFailed,
                Some(Failure::Server) => ConnectionStatus::ServerFailed,
                None => ConnectionStatus::WaitingForSettings,
            },
            Phase::Waiting { .. } | Phase::Joining { .. } => ConnectionStatus::JoiningWifi,
            Phase::Reaching { .. } => ConnectionStatus::ReachingServer,
            Phase::Connected => ConnectionStatus::Connected,
        }
    }

    /// The next action for the backend, oldest first.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    fn push(&mut self, action: Action) {
        debug!("provisioning: action {:?}", action);
        if let Err(action) = self.actions.push_back(action) {
            // The backend is not draining actions; keep the newest intent.
            let _ = self.actions.pop_front();
            let _ = self.actions.push_back(action);
        }
    }

    /// Starts from what the store holds.
    pub fn boot(&mut self, now_ms: u64, loaded: Result<Option<ProvisioningRecord>, StoreError>) {
        match loaded {
            Ok(Some(record)) if record.wifi.is_some() => {
                info!("provisioning: saved credentials found, connecting");
                self.has_credentials = true;
                self.from_portal = false;
                self.start_attempt(now_ms);
            }
            Ok(_) => self.open_portal(now_ms, PortalReason::NotProvisioned),
            Err(StoreError::Corrupt(e)) => {
                warn!(
                    "provisioning: stored record corrupt ({:?}), opening portal",
                    e
                );
                self.open_portal(now_ms, PortalReason::CorruptRecord);
            }
            Err(_) => self.open_portal(now_ms, PortalReason::StoreUnreadable),
        }
    }

    /// New credentials were saved (through the portal or Improv): try them.
    pub fn credentials_saved(&mut self, now_ms: u64) {
        self.has_credentials = true;
        self.failures = 0;
        self.last_failure = None;
        self.from_portal = self.portal_open;
        self.close_portal_at = None;
        self.start_attempt(now_ms);
    }

    /// The Wi-Fi network was joined.
    pub fn wifi_joined(&mut self, now_ms: u64) {
        if let Phase::Joining { .. } = self.phase {
            self.phase = Phase::Reaching {
                deadline: now_ms.saturating_add(self.config.attempt_timeout_ms),
            };
        }
    }

    /// The server accepted the connection: provisioning succeeded.
    pub fn server_reached(&mut self, now_ms: u64) {
        if let Phase::Joining { .. } | Phase::Reaching { .. } = self.phase {
            info!("provisioning: connected");
            self.phase = Phase::Connected;
            self.failures = 0;
            self.last_failure = None;
            if self.portal_open {
                self.close_portal_at = Some(now_ms.saturating_add(self.config.portal_linger_ms));
            }
        }
    }

    /// The attempt failed.
    pub fn attempt_failed(&mut self, now_ms: u64, failure: Failure) {
        if let Phase::Joining { .. } | Phase::Reaching { .. } = self.phase {
            self.fail(now_ms, failure);
        }
    }

    /// The connection dropped after [`State::Connected`]: try again.
    pub fn connection_lost(&mut self, now_ms: u64) {
        if self.phase == Phase::Connected {
            warn!("provisioning: connection lost, reconnecting");
            self.failures = 0;
            self.from_portal = false;
            self.start_attempt(now_ms);
        }
    }

    /// The reset button changed; held for
    /// [`reset_hold_ms`](ProvisioningConfig::reset_hold_ms) it erases the
    /// record and opens the portal (checked in [`poll`](Self::poll)).
    pub fn reset_button(&mut self, now_ms: u64, pressed: bool) {
        self.button_down_since = if pressed {
            self.button_down_since.or(Some(now_ms))
        } else {
            None
        };
        self.poll(now_ms);
    }

    /// Handles every deadline that has passed by `now_ms`.
    pub fn poll(&mut self, now_ms: u64) {
        if let Some(since) = self.button_down_since
            && now_ms >= since.saturating_add(self.config.reset_hold_ms)
        {
            info!("provisioning: reset button held, erasing record");
            // Fires once per press.
            self.button_down_since = Some(u64::MAX);
            if self.phase != Phase::Idle && !matches!(self.phase, Phase::Portal { .. }) {
                self.push(Action::Disconnect);
            }
            self.push(Action::EraseRecord);
            self.has_credentials = false;
            self.failures = 0;
            self.last_failure = None;
            self.close_portal_at = None;
            self.open_portal(now_ms, PortalReason::ResetButton);
        }
        if let Some(at) = self.close_portal_at
            && now_ms >= at
        {
            self.close_portal_at = None;
            if self.portal_open {
                self.portal_open = false;
                self.push(Action::ClosePortal);
            }
        }
        match self.phase {
            Phase::Waiting { until } if now_ms >= until => {
                self.phase = Phase::Joining {
                    deadline: now_ms.saturating_add(self.config.attempt_timeout_ms),
                };
                self.push(Action::Connect);
            }
            Phase::Joining { deadline } if now_ms >= deadline => {
                warn!("provisioning: joining Wi-Fi timed out");
                self.fail(now_ms, Failure::Wifi);
            }
            Phase::Reaching { deadline } if now_ms >= deadline => {
                warn!("provisioning: reaching the server timed out");
                self.fail(now_ms, Failure::Server);
            }
            Phase::Portal { opened_at }
                if self.has_credentials
                    && now_ms >= opened_at.saturating_add(self.config.portal_timeout_ms) =>
            {
                info!("provisioning: portal timed out, trying saved credentials again");
                self.portal_open = false;
                self.push(Action::ClosePortal);
                self.failures = 0;
                self.from_portal = false;
                self.start_attempt(now_ms);
            }
            _ => {}
        }
    }

    /// The next time [`poll`](Self::poll) has something to do, if any.
    pub fn poll_at(&self) -> Option<u64> {
        let phase = match self.phase {
            Phase::Waiting { until } => Some(until),
            Phase::Joining { deadline } | Phase::Reaching { deadline } => Some(deadline),
            Phase::Portal { opened_at } if self.has_credentials => {
                Some(opened_at.saturating_add(self.config.portal_timeout_ms))
            }
            _ => None,
        };
        let button = self
            .button_down_since
            .filter(|since| *since != u64::MAX)
            .map(|since| since.saturating_add(self.config.reset_hold_ms));
        [phase, button, self.close_portal_at]
            .into_iter()
            .flatten()
            .min()
    }

    fn start_attempt(&mut self, now_ms: u64) {
        self.phase = Phase::Joining {
            deadline: now_ms.saturating_add(self.config.attempt_timeout_ms),
        };
        self.push(Action::Connect);
    }

    fn fail(&mut self, now_ms: u64, failure: Failure) {
        self.failures = self.failures.saturating_add(1);
        self.last_failure = Some(failure);
        warn!(
            "provisioning: attempt failed ({:?}), {} in a row",
            failure, self.failures
        );
        if self.from_portal || self.failures >= self.config.max_failures {
            self.open_portal(now_ms, PortalReason::TooManyFailures);
        } else {
            self.phase = Phase::Waiting {
                until: now_ms.saturating_add(self.config.retry_delay_ms),
            };
        }
    }

    fn open_portal(&mut self, now_ms: u64, reason: PortalReason) {
        self.phase = Phase::Portal { opened_at: now_ms };
        if !self.portal_open {
            self.portal_open = true;
            self.push(Action::OpenPortal(reason));
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate alloc;

    use alloc::vec::Vec;

    use super::super::record::DecodeError;
    use super::super::store::{ConfigStore, MemoryStore};
    use super::*;

    fn record() -> ProvisioningRecord {
        ProvisioningRecord::new("wss://relay.example.com", "dev", "tok")
            .and_then(|r| r.with_wifi("Home", "password1"))
            .unwrap()
    }

    fn drain(m: &mut Provisioning) -> Vec<Action> {
        core::iter::from_fn(|| m.poll_action()).collect()
    }

    fn machine() -> Provisioning {
        Provisioning::new(ProvisioningConfig::default())
    }

    #[test]
    fn boot_without_record_opens_portal_and_waits_forever() {
        let mut m = machine();
        assert_eq!(m.state(), State::Unconfigured);
        m.boot(0, Ok(None));
        assert_eq!(m.state(), State::Portal);
        assert_eq!(
            drain(&mut m),
            [Action::OpenPortal(PortalReason::NotProvisioned)]
        );
        assert_eq!(m.poll_at(), None);
        m.poll(u64::MAX / 2);
        assert_eq!(m.state(), State::Portal);
        // A factory record without Wi-Fi is not enough either.
        let mut m = machine();
        let factory = ProvisioningRecord::new("ws://10.0.0.1", "d", "t").unwrap();
        m.boot(0, Ok(Some(factory)));
        assert_eq!(
            drain(&mut m),
            [Action::OpenPortal(PortalReason::NotProvisioned)]
        );
    }

    #[test]
    fn corrupted_record_in_the_store_falls_back_to_the_portal() {
        let mut store = MemoryStore::new();
        store.save(&record()).unwrap();
        store.raw_mut()[15] ^= 0x40;
        let loaded = store.load();
        assert_eq!(loaded, Err(StoreError::Corrupt(DecodeError::Checksum)));
        let mut m = machine();
        m.boot(0, loaded);
        assert_eq!(m.state(), State::Portal);
        assert_eq!(
            drain(&mut m),
            [Action::OpenPortal(PortalReason::CorruptRecord)]
        );
    }

    #[test]
    fn saved_credentials_connect_and_n_failures_open_the_portal() {
        let mut m = Provisioning::new(ProvisioningConfig::default().with_max_failures(3));
        m.boot(0, Ok(Some(record())));
        assert_eq!(
            (m.state(), drain(&mut m)),
            (State::Trying, [Action::Connect].into())
        );
        assert_eq!(m.connection_status(), ConnectionStatus::JoiningWifi);
        m.attempt_failed(1_000, Failure::Wifi);
        assert_eq!(m.failures(), 1);
        assert_eq!(m.poll_at(), Some(6_000));
        m.poll(5_999);
        assert!(drain(&mut m).is_empty());
        m.poll(6_000);
        assert_eq!(drain(&mut m), [Action::Connect]);
        // Second failure by timeout.
        m.wifi_joined(7_000);
        assert_eq!(m.connection_status(), ConnectionStatus::ReachingServer);
        assert_eq!(m.poll_at(), Some(27_000));
        m.poll(27_000);
        assert_eq!(m.failures(), 2);
        m.poll(32_000);
        assert_eq!(drain(&mut m), [Action::Connect]);
        m.attempt_failed(33_000, Failure::Server);
        assert_eq!(m.state(), State::Portal);
        assert_eq!(
            drain(&mut m),
            [Action::OpenPortal(PortalReason::TooManyFailures)]
        );
        assert_eq!(m.connection_status(), ConnectionStatus::ServerFailed);
    }

    #[test]
    fn success_resets_the_failure_count() {
        let mut m = machine();
        m.boot(0, Ok(Some(record())));
        m.attempt_failed(10, Failure::Wifi);
        m.poll(5_010);
        m.attempt_failed(5_020, Failure::Wifi);
        assert_eq!(m.failures(), 2);
        m.poll(10_020);
        m.wifi_joined(10_100);
        m.server_reached(10_200);
        assert_eq!((m.state(), m.failures()), (State::Connected, 0));
        assert_eq!(m.poll_at(), None, "no portal to close");
        m.connection_lost(50_000);
        assert_eq!(m.state(), State::Trying);
        drain(&mut m);
        m.attempt_failed(50_100, Failure::Wifi);
        assert_eq!(m.state(), State::Trying, "count restarted after success");
    }

    #[test]
    fn portal_timeout_retries_saved_credentials() {
        let mut m = Provisioning::new(
            ProvisioningConfig::default()
                .with_max_failures(1)
                .with_portal_timeout_ms(60_000),
        );
        m.boot(0, Ok(Some(record())));
        m.attempt_failed(100, Failure::Wifi);
        assert_eq!(m.state(), State::Portal);
        assert_eq!(m.poll_at(), Some(60_100));
        drain(&mut m);
        m.poll(60_100);
        assert_eq!(m.state(), State::Trying);
        assert_eq!(drain(&mut m), [Action::ClosePortal, Action::Connect]);
    }

    #[test]
    fn portal_credentials_fail_once_back_to_portal_then_succeed_and_linger() {
        let mut m = machine();
        m.boot(0, Ok(None));
        drain(&mut m);
        m.credentials_saved(1_000);
        assert!(m.portal_open());
        assert_eq!(drain(&mut m), [Action::Connect]);
        m.attempt_failed(2_000, Failure::Wifi);
        assert_eq!(m.state(), State::Portal);
        assert_eq!(m.connection_status(), ConnectionStatus::WifiFailed);
        assert!(drain(&mut m).is_empty(), "portal already open");
        m.credentials_saved(3_000);
        m.wifi_joined(4_000);
        m.server_reached(5_000);
        assert_eq!(drain(&mut m), [Action::Connect]);
        assert_eq!(m.connection_status(), ConnectionStatus::Connected);
        assert_eq!(m.poll_at(), Some(35_000));
        m.poll(35_000);
        assert_eq!(drain(&mut m), [Action::ClosePortal]);
        assert!(!m.portal_open());
    }

    #[test]
    fn reset_button_must_be_held() {
        let mut m = machine();
        m.boot(0, Ok(Some(record())));
        m.wifi_joined(10);
        m.server_reached(20);
        drain(&mut m);
        m.reset_button(1_000, true);
        m.reset_button(3_000, false); // released too early
        m.poll(10_000);
        assert_eq!(m.state(), State::Connected);
        m.reset_button(20_000, true);
        assert_eq!(m.poll_at(), Some(25_000));
        m.poll(25_000);
        assert_eq!(m.state(), State::Portal);
        assert_eq!(
            drain(&mut m),
            [
                Action::Disconnect,
                Action::EraseRecord,
                Action::OpenPortal(PortalReason::ResetButton)
            ]
        );
        // Still held: nothing more, and no credentials means no portal timeout.
        m.poll(90_000);
        assert!(drain(&mut m).is_empty());
        assert_eq!(m.poll_at(), None);
    }

    #[test]
    fn stray_events_are_ignored() {
        let mut m = machine();
        m.wifi_joined(1);
        m.server_reached(2);
        m.attempt_failed(3, Failure::Wifi);
        m.connection_lost(4);
        assert_eq!(m.state(), State::Unconfigured);
        assert!(drain(&mut m).is_empty());
    }
}
