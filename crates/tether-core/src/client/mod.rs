//! The device client: what firmware calls every day. Connect, keep
//! connected, publish readings, answer commands.
//!
//! ```text
//!  application ── publish(channel, &T).await ──► Client ◄── state(), stats()
//!                                                  │ (shared)
//!   Runner::run (async, thin) ── Session (sans-IO: numbers, acks,
//!      │  moves bytes, sleeps       ▲       keepalive, backoff)
//!      │  until poll_at             │ drives
//!      ├─ Link (sans-IO) ───────────┘ handshake, RFC 6455 frames
//!      │                              (ws::Context), tether-proto:
//!      │                              Hello/Welcome, Publish/Ack,
//!      │                              Command/CommandAck
//!      ├─ Outbox ──► RAM or flash (store-and-forward)
//!      └─ Connector ──► TCP / TLS byte stream
//! ```
//!
//! Two halves, in the embassy style (`Stack` + `Runner`), made by one call,
//! [`new`], from a [`Board`] (connector, clock, random source, outbox), a
//! [`ClientConfig`] and caller-owned [`Resources`]: [`Client`] is the shared
//! handle the application publishes through, and [`Runner`] owns the
//! connection and runs in its own task (or `join`ed with the application),
//! reconnecting with backoff and resending every unacknowledged message in
//! order after each reconnect. Downlink commands reach the application
//! through a [`CommandHandler`] the runner calls; its verdict goes back to
//! the server as a `CommandAck`.
//!
//! Nothing allocates: the outbox and every buffer have sizes fixed at compile
//! time. `tether-host` runs the same client on tokio; the
//! `examples/esp32c3-minimal` firmware runs it on embassy-net.
//!
//! # Example
//!
//! See [the crate docs](crate#a-device-in-twenty-lines): a sensor that
//! publishes and answers a command in twenty lines, for any board.
//!
//! # Cancellation and locks
//!
//! The runner waits for a server message, a timer or a publish at the same
//! time, and the branch that loses is cancelled. Only the transport's read
//! (cancel-safe, as the [`Connector`](crate::connector::Connector)
//! requires) is ever raced, and the link learns of the bytes only after
//! the read returned; every write (pongs to server pings included: the
//! session queues them as
//! [`Transmit::Pong`](crate::session::Transmit::Pong)) happens in a separate
//! step that nothing cancels except its send timeout, and a send timeout
//! drops the link. So no frame is ever cut short on a link that stays up.
//!
//! The protocol itself (the opening handshake, framing, the close
//! handshake and the tether messages) is a sans-IO state machine,
//! `client/link.rs`, with its tests on virtual time beside it; the runner
//! only connects, moves bytes between the transport and it, reads the
//! outbox for it and sleeps until its `poll_at`.
//!
//! The session sits behind a blocking mutex (`M`: `NoopRawMutex` on one
//! executor, `CriticalSectionRawMutex` across executors or interrupts) that
//! is only held for a few arithmetic steps. The outbox sits behind an async
//! mutex: its storage work (a flash write or sector erase) runs outside any
//! critical section, and only publishes and the runner wait for it.

mod command;
mod config;
mod encode;
mod link;
mod runner;

use core::cell::RefCell;
use core::fmt;

use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::blocking_mutex::raw::{NoopRawMutex, RawMutex};
use embassy_sync::mutex::Mutex as AsyncMutex;
use embassy_sync::signal::Signal;
use serde::Serialize;
use tether_proto::{MAX_PAYLOAD_LEN, validate_channel};

pub use self::command::{CommandHandler, CommandResult, NoCommands, ResultTooLarge};
pub use self::config::{
    ClientConfig, ClientConfigError, DEFAULT_PAYLOAD_CAPACITY, MAX_ANNOUNCEMENTS, max_downlink_len,
    message_buffer_len,
};
pub use self::runner::{Buffers, NeedsProvisioning, Runner};
use crate::board::Board;
use crate::outbox::{Entry, FullPolicy, Outbox};
use crate::session::{ConnectionState, LinkError, PublishError, Session, SessionStats};
use crate::time::{Clock, Duration, Instant};

/// Makes a device client from `board`: the shared [`Client`] the
/// application publishes through and the [`Runner`] that keeps it
/// connected, both living in `resources` (a `static` on a device).
///
/// If the board's outbox still holds messages from before a reboot
/// ([`Outbox::restored`]), the client resumes their boot id and numbering so
/// the server stores each of them exactly once; otherwise it draws a new
/// boot id.
///
/// # Errors
/// The configuration is invalid, or the buffers in `resources` are too
/// small for it; nothing was stored in `resources`.
#[allow(clippy::type_complexity)]
pub fn new<
    'a,
    B: Board,
    M: RawMutex,
    const PAYLOAD: usize,
    const RX: usize,
    const TX: usize,
    const MESSAGE: usize,
>(
    board: B,
    config: ClientConfig<'a>,
    resources: &'a mut Resources<B, M, PAYLOAD, RX, TX, MESSAGE>,
) -> Result<(&'a Client<B, M, PAYLOAD>, Runner<'a, B, M, PAYLOAD>), ClientConfigError> {
    // The configuration is validated once, here.
    let url = Runner::<B, M, PAYLOAD>::check(&config, &resources.buffers)?;
    let parts = board.into_parts();
    let client = Client::from_checked(&config, parts.clock, parts.rng, parts.outbox);
    let Resources {
        client: slot,
        buffers,
    } = resources;
    let client = &*slot.fill(client);
    let runner = Runner::checked(client, config, url, parts.connector, buffers);
    Ok((client, runner))
}

/// Where a client and its runner live: the [`Client`] and the runner's
/// [`Buffers`], owned by the caller (a `static` on a device) and filled by
/// [`new`].
///
/// Capacities are const generics with defaults, so naming the board is
/// usually enough: `Resources<MyBoard>`. `M`, `PAYLOAD` and the buffers are
/// as in [`Client`] and [`Buffers`].
pub struct Resources<
    B: Board,
    M: RawMutex = NoopRawMutex,
    const PAYLOAD: usize = DEFAULT_PAYLOAD_CAPACITY,
    const RX: usize = 1024,
    const TX: usize = 512,
    const MESSAGE: usize = 512,
> {
    client: Slot<Client<B, M, PAYLOAD>>,
    buffers: Buffers<RX, TX, MESSAGE>,
}

/// The client's place in [`Resources`]: an `Option` whose empty value is
/// all zero bytes (an explicit tag, 0 when empty), so a `static`
/// `Resources` goes to `.bss`. With `Option`, the empty value borrowed a
/// spare value of some field of the client (one byte of 2), which put the
/// whole `Resources` (the client's outbox and the buffers: 6.8 KB by
/// default) in `.data`, its initial value stored in flash.
#[repr(u8)]
enum Slot<T> {
    Empty = 0,
    Full(T) = 1,
}

impl<T> Slot<T> {
    /// Stores `value` (dropping what was there) and lends it out.
    fn fill(&mut self, value: T) -> &mut T {
        *self = Self::Full(value);
        match self {
            Self::Full(value) => value,
            // Just filled; the compiler removes this arm.
            Self::Empty => unreachable!(),
        }
    }

    const fn get(&self) -> Option<&T> {
        match self {
            Self::Full(value) => Some(value),
            Self::Empty => None,
        }
    }
}

impl<
    B: Board,
    M: RawMutex,
    const PAYLOAD: usize,
    const RX: usize,
    const TX: usize,
    const MESSAGE: usize,
> Resources<B, M, PAYLOAD, RX, TX, MESSAGE>
{
    /// Empty resources (zeroed buffers, no client yet).
    #[must_use]
    pub const fn new() -> Self {
        Self {
            client: Slot::Empty,
            buffers: Buffers::new(),
        }
    }
}

impl<
    B: Board,
    M: RawMutex,
    const PAYLOAD: usize,
    const RX: usize,
    const TX: usize,
    const MESSAGE: usize,
> Default for Resources<B, M, PAYLOAD, RX, TX, MESSAGE>
{
    fn default() -> Self {
        Self::new()
    }
}

impl<
    B: Board,
    M: RawMutex,
    const PAYLOAD: usize,
    const RX: usize,
    const TX: usize,
    const MESSAGE: usize,
> fmt::Debug for Resources<B, M, PAYLOAD, RX, TX, MESSAGE>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resources")
            .field("client", &self.client.get())
            .finish_non_exhaustive()
    }
}

/// Counters and outbox depth, for the application and its logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ClientStats {
    /// Session counters.
    pub session: SessionStats,
    /// Messages waiting for acknowledgement.
    pub outbox_len: usize,
    /// Bytes they use.
    pub outbox_bytes: usize,
    /// Bytes the outbox holds at most.
    pub outbox_capacity: usize,
    /// Messages dropped unacknowledged by [`FullPolicy::DropOldest`].
    pub dropped: u32,
}

/// What the blocking mutex guards: the session and a snapshot of the
/// outbox's depth (readable while a slow outbox operation runs).
struct Shared<R> {
    session: Session<R>,
    outbox: OutboxDepth,
}

#[derive(Clone, Copy, Default)]
struct OutboxDepth {
    len: usize,
    bytes: usize,
    capacity: usize,
    dropped: u32,
}

impl OutboxDepth {
    fn of<O: Outbox>(outbox: &O) -> Self {
        Self {
            len: outbox.len(),
            bytes: outbox.used_bytes(),
            capacity: outbox.capacity_bytes(),
            dropped: outbox.dropped(),
        }
    }
}

/// The application's side of a device connection: publish, observe. Shared
/// by reference between the application and its [`Runner`]; made by
/// [`new`].
///
/// `B` is the [`Board`], `M` the embassy-sync mutex kind (`NoopRawMutex`
/// when everything runs on one executor, `CriticalSectionRawMutex` across
/// executors, interrupts or cores), `PAYLOAD` the largest JSON payload
/// [`Client::publish`] serializes (it lives on the caller's stack during the
/// call).
pub struct Client<
    B: Board,
    M: RawMutex = NoopRawMutex,
    const PAYLOAD: usize = DEFAULT_PAYLOAD_CAPACITY,
> {
    shared: Mutex<M, RefCell<Shared<B::Rng>>>,
    outbox: AsyncMutex<M, B::Outbox>,
    wake: Signal<M, ()>,
    clock: B::Clock,
    full_policy: FullPolicy,
}

impl<B: Board, M: RawMutex, const PAYLOAD: usize> fmt::Debug for Client<B, M, PAYLOAD> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("state", &self.state())
            .field("stats", &self.stats())
            .finish()
    }
}

impl<B: Board, M: RawMutex, const PAYLOAD: usize> Client<B, M, PAYLOAD> {
    /// A client over a board's clock, random source and outbox (the
    /// connector goes to the [`Runner`]). [`new`] does this and more; use
    /// this only to place the client yourself.
    ///
    /// # Errors
    /// The configuration is invalid.
    pub fn from_parts(
        config: &ClientConfig<'_>,
        clock: B::Clock,
        rng: B::Rng,
        outbox: B::Outbox,
    ) -> Result<Self, ClientConfigError> {
        config.validate()?;
        Ok(Self::from_checked(config, clock, rng, outbox))
    }

    /// [`Client::from_parts`] for a configuration already validated.
    fn from_checked(
        config: &ClientConfig<'_>,
        clock: B::Clock,
        rng: B::Rng,
        mut outbox: B::Outbox,
    ) -> Self {
        let restored = outbox.restored();
        let mut session = Session::start(config.session, rng, clock.now(), restored);
        if restored.is_none() {
            outbox.start_boot(session.boot_id());
        }
        session.set_announcements(config.announcements());
        Self {
            shared: Mutex::new(RefCell::new(Shared {
                session,
                outbox: OutboxDepth::of(&outbox),
            })),
            outbox: AsyncMutex::new(outbox),
            wake: Signal::new(),
            clock,
            full_policy: config.session.full_policy(),
        }
    }

    /// Serializes `value` as JSON and stores it on `channel` for delivery,
    /// timestamped with the current time (Unix ms once a `Welcome` told the
    /// server's clock; see [session timestamps](crate::session#timestamps)).
    /// Returns its sequence number once the outbox holds it (for a flash
    /// outbox: once it is written, so it survives a power cut). Never waits
    /// for the network: when the outbox is full the session's
    /// [`FullPolicy`] applies.
    ///
    /// # Errors
    /// [`PublishError::Encode`] if `value` does not serialize into `PAYLOAD`
    /// bytes, [`PublishError::InvalidChannel`] for a channel name the
    /// protocol refuses, [`PublishError::Full`] when the outbox is full (and
    /// the policy is to reject), the rest as the outbox reports.
    pub async fn publish<T: Serialize + ?Sized>(
        &self,
        channel: &str,
        value: &T,
    ) -> Result<u32, PublishError> {
        let mut buffer = [0u8; PAYLOAD];
        let len =
            serde_json_core::to_slice(value, &mut buffer).map_err(|_| PublishError::Encode)?;
        self.publish_encoded(channel, buffer.get(..len).unwrap_or_default())
            .await
    }

    /// Stores `json`, produced by serde-json-core's serializer (always one
    /// valid JSON value, so the server never refuses it and it can never
    /// block the outbox).
    async fn publish_encoded(&self, channel: &str, json: &[u8]) -> Result<u32, PublishError> {
        validate_channel(channel).map_err(|_| PublishError::InvalidChannel)?;
        if json.len() > MAX_PAYLOAD_LEN {
            return Err(PublishError::TooLarge);
        }
        let mut outbox = self.outbox.lock().await;
        let now = self.clock.now();
        let empty = outbox.is_empty();
        let pending = self.with_session(|s| s.begin_publish(now, empty))?;
        if let Some(boot_id) = pending.new_boot {
            outbox.start_boot(boot_id);
        }
        let entry = Entry::new(pending.seq, channel, json).with_time(pending.time);
        let pushed = outbox.push(entry, self.full_policy).await;
        let depth = OutboxDepth::of(&*outbox);
        drop(outbox);
        self.shared.lock(|shared| {
            let mut shared = shared.borrow_mut();
            shared.outbox = depth;
            match pushed {
                Ok(dropped) => {
                    if dropped > 0 {
                        warn!("client: outbox full, dropped {} oldest messages", dropped);
                    }
                    shared.session.on_stored(pending.seq);
                    Ok(())
                }
                Err(e) => {
                    shared.session.cancel_publish(pending.seq);
                    Err(PublishError::from(e))
                }
            }
        })?;
        self.wake.signal(());
        Ok(pending.seq)
    }

    /// The device's WiFi signal strength now (RSSI, dBm, from -150 to 0),
    /// reported to the server after every `Welcome` and when it changes, at
    /// most once a minute ([`SIGNAL_REPORT_INTERVAL`](crate::session::SIGNAL_REPORT_INTERVAL)).
    /// Call it whenever the WiFi driver tells (a board backend may do it
    /// for the application); values out of range are clamped.
    pub fn set_rssi(&self, rssi_dbm: i16) {
        let rssi_dbm = rssi_dbm.clamp(tether_proto::MIN_RSSI_DBM, 0);
        self.with_session(|session| session.set_signal(rssi_dbm));
        self.wake.signal(());
    }

    /// Where the connection stands (for a status LED).
    #[must_use]
    pub fn state(&self) -> ConnectionState {
        self.with_session(|session| session.state())
    }

    /// Why the last link went down, if one did.
    #[must_use]
    pub fn last_error(&self) -> Option<LinkError> {
        self.with_session(|session| session.last_error())
    }

    /// This boot's id (random, or resumed from a persistent outbox).
    #[must_use]
    pub fn boot_id(&self) -> u64 {
        self.with_session(|session| session.boot_id())
    }

    /// Counters and outbox depth.
    #[must_use]
    pub fn stats(&self) -> ClientStats {
        self.shared.lock(|shared| {
            let shared = shared.borrow();
            ClientStats {
                session: shared.session.stats(),
                outbox_len: shared.outbox.len,
                outbox_bytes: shared.outbox.bytes,
                outbox_capacity: shared.outbox.capacity,
                dropped: shared.outbox.dropped,
            }
        })
    }

    /// The board's clock.
    #[must_use]
    pub const fn clock(&self) -> &B::Clock {
        &self.clock
    }

    /// Sleeps for `duration` on the board's clock.
    pub async fn sleep(&self, duration: Duration) {
        self.clock.sleep_until(self.clock.now() + duration).await;
    }

    /// Connects again right away after the backoff gave up, cuts a backoff
    /// short, or leaves [`ConnectionState::NeedsProvisioning`] (once the
    /// device has new settings; run the [`Runner`] again).
    pub fn retry_now(&self) {
        let now = self.clock.now();
        self.with_session(|session| session.retry_now(now));
        self.wake.signal(());
    }

    fn now(&self) -> Instant {
        self.clock.now()
    }

    fn with_session<T>(&self, f: impl FnOnce(&mut Session<B::Rng>) -> T) -> T {
        // `f` never calls back into the client, so the cell is never
        // borrowed twice.
        self.shared
            .lock(|shared| f(&mut shared.borrow_mut().session))
    }

    /// Frees what the server acknowledged, outside the session lock.
    async fn release_acknowledged(&self) {
        let Some(seq) = self.with_session(|s| s.release_due()) else {
            return;
        };
        let mut outbox = self.outbox.lock().await;
        let freed = outbox.ack_through(seq).await;
        let depth = OutboxDepth::of(&*outbox);
        drop(outbox);
        self.shared.lock(|shared| {
            let mut shared = shared.borrow_mut();
            shared.outbox = depth;
            match freed {
                Ok(_) => shared.session.on_released(seq),
                // Left in the outbox: resent later, dropped by the server
                // as duplicates; freeing is tried again at the next ack.
                Err(e) => warn!("client: outbox could not free through {}: {:?}", seq, e),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use embassy_futures::block_on;
    use rand_core::SeedableRng;
    use rand_xorshift::XorShiftRng;

    use super::*;
    use crate::board::Parts;
    use crate::connector::{Connector, Endpoint};
    use crate::outbox::RamOutbox;

    /// A clock stopped at the origin.
    struct NoClock;

    impl Clock for NoClock {
        fn now(&self) -> Instant {
            Instant::ZERO
        }
        async fn sleep_until(&self, _deadline: Instant) {}
    }

    /// A network that never connects.
    struct NoNetwork;

    impl Connector for NoNetwork {
        type Connection<'a> = NoStream;
        type Error = ();
        async fn connect(&mut self, _: Endpoint<'_>) -> Result<NoStream, ()> {
            Err(())
        }
    }

    struct NoStream;

    impl embedded_io_async::ErrorType for NoStream {
        type Error = core::convert::Infallible;
    }

    impl embedded_io_async::Read for NoStream {
        async fn read(&mut self, _: &mut [u8]) -> Result<usize, Self::Error> {
            Ok(0)
        }
    }

    impl embedded_io_async::Write for NoStream {
        async fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
            Ok(buf.len())
        }
        async fn flush(&mut self) -> Result<(), Self::Error> {
            Ok(())
        }
    }

    type TestBoard<const N: usize> = Parts<NoNetwork, NoClock, XorShiftRng, RamOutbox<N>>;

    fn board<const N: usize>() -> TestBoard<N> {
        Parts {
            connector: NoNetwork,
            clock: NoClock,
            rng: XorShiftRng::seed_from_u64(1),
            outbox: RamOutbox::new(),
        }
    }

    /// The client of the default configuration: a 4 KiB RAM outbox,
    /// `DEFAULT_PAYLOAD_CAPACITY`, default buffers. `docs/performance.md`
    /// records these numbers
    /// (`cargo test -p tether-core client_memory -- --nocapture`).
    #[test]
    fn client_memory() {
        type Default4K = TestBoard<4096>;
        let client = size_of::<Client<Default4K>>();
        let buffers = size_of::<Buffers>();
        let runner = size_of::<Runner<'static, Default4K>>();
        let resources = size_of::<Resources<Default4K>>();
        std::println!("Client<RamOutbox<4096>, XorShiftRng, zero-sized clock>: {client} bytes");
        std::println!("Buffers (default 1024 + 512 + 512): {buffers} bytes");
        std::println!("Runner fields (zero-sized connector): {runner} bytes");
        std::println!("Resources (client + buffers): {resources} bytes");
        assert!(client <= 4096 + 900, "client grew to {client} bytes");
        assert_eq!(buffers, 2048);
        assert!(runner <= 400, "runner grew to {runner} bytes");
    }

    #[test]
    fn publish_validates_channel_and_size_and_never_waits_for_the_network() {
        let config = ClientConfig::new("ws://relay.local/device", "dev-1", "1.0.0");
        let mut resources: Resources<TestBoard<256>, NoopRawMutex, 32> = Resources::new();
        let (client, _runner) = new(board(), config, &mut resources).unwrap();
        block_on(async {
            assert_eq!(client.publish("a/b", &1u8).await, Ok(1));
            assert_eq!(
                client.publish("a//b", &1u8).await,
                Err(PublishError::InvalidChannel)
            );
            assert_eq!(
                client.publish("", &1u8).await,
                Err(PublishError::InvalidChannel)
            );
            assert_eq!(
                client
                    .publish("a", &"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")
                    .await,
                Err(PublishError::Encode)
            );
            // Offline, the outbox fills and then refuses, without burning
            // sequence numbers.
            let mut accepted = 1;
            while client.publish("a", &12345u32).await.is_ok() {
                accepted += 1;
            }
            assert_eq!(
                client.publish("a", &12345u32).await,
                Err(PublishError::Full)
            );
            assert_eq!(client.stats().outbox_len, accepted);
            assert_eq!(client.stats().session.published, accepted as u32);
            assert_eq!(client.state(), ConnectionState::Connecting);
        });
    }

    /// The slot drops what it held when filled again and lends out what
    /// it holds; `Resources`' `Debug` shows the client once there is one.
    #[test]
    fn the_client_slot_fills_and_drops() {
        use core::cell::Cell;

        struct Counted<'c>(&'c Cell<u32>, u8);
        impl Drop for Counted<'_> {
            fn drop(&mut self) {
                self.0.set(self.0.get() + 1);
            }
        }

        let drops = Cell::new(0);
        let mut slot = Slot::Empty;
        assert!(slot.get().is_none());
        assert_eq!(slot.fill(Counted(&drops, 1)).1, 1);
        assert_eq!(drops.get(), 0);
        slot.fill(Counted(&drops, 2)).1 += 1;
        assert_eq!(drops.get(), 1, "the first value is dropped");
        assert_eq!(slot.get().map(|c| c.1), Some(3));
        drop(slot);
        assert_eq!(drops.get(), 2);

        let config = ClientConfig::new("ws://relay.local/device", "dev-1", "1.0.0");
        let mut resources: Resources<TestBoard<256>> = Resources::new();
        assert!(std::format!("{resources:?}").contains("client: None"));
        let _ = new(board(), config, &mut resources).unwrap();
        assert!(std::format!("{resources:?}").contains("client: Some(Client"));
    }

    #[test]
    fn new_refuses_small_buffers_and_bad_settings() {
        let config = ClientConfig::new("ws://relay.local/device", "dev-1", "1.0.0");
        let mut small_message: Resources<TestBoard<256>, NoopRawMutex, 256, 1024, 512, 64> =
            Resources::new();
        assert_eq!(
            new(board(), config, &mut small_message).err(),
            Some(ClientConfigError::MessageBufferTooSmall)
        );
        let mut small_frames: Resources<TestBoard<256>, NoopRawMutex, 256, 64, 512, 512> =
            Resources::new();
        assert_eq!(
            new(board(), config, &mut small_frames).err(),
            Some(ClientConfigError::FrameBufferTooSmall)
        );
        let mut fine: Resources<TestBoard<256>> = Resources::new();
        let bad = ClientConfig::new("http://relay.local/device", "dev-1", "1.0.0");
        assert!(new(board(), bad, &mut fine).is_err());
        assert!(new(board(), config, &mut fine).is_ok());
    }
}
