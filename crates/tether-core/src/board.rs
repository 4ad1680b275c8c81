//! [`Board`]: everything a device client needs from its hardware, in one
//! value.
//!
//! ```text
//!        Board (implemented once per backend: tether-esp32, tether-host, ...)
//!   ┌────────────┬───────────┬──────────┬───────────────┐
//!   │ Connector  │ Clock     │ Rng      │ Outbox        │
//!   │ TCP / TLS  │ now/sleep │ hardware │ RAM or flash  │
//!   └─────┬──────┴─────┬─────┴────┬─────┴───────┬───────┘
//!         ▼            ▼          ▼             ▼
//!      Runner       Client: timestamps, boot id, backoff jitter,
//!                   WebSocket masking keys, store-and-forward
//! ```
//!
//! One clock and one random source serve the whole client. A backend crate
//! implements [`Board`] for its board type once; applications only pick the
//! board (and its outbox). Anything else can be assembled from [`Parts`],
//! which is itself a board.

use rand_core::RngCore;

use crate::connector::Connector;
use crate::outbox::Outbox;
use crate::time::Clock;

/// The hardware a device client runs on: a way to open connections, a
/// clock, a random source and a store for unacknowledged messages.
///
/// The random source must be unpredictable (the chip's hardware RNG, the
/// operating system's on a PC): it draws the boot id and the WebSocket
/// masking keys.
///
/// The provisioning record's [`ConfigStore`](crate::provisioning::store::ConfigStore)
/// is not part of it: it is read before the client exists (its settings
/// make the [`ClientConfig`](crate::client::ClientConfig)) and written by
/// provisioning, which runs without a client.
///
/// # Example
///
/// A backend's board type, here over the parts a test has at hand:
///
/// ```
/// use tether_core::board::{Board, Parts};
/// use tether_core::connector::Connector;
/// use tether_core::outbox::RamOutbox;
/// use tether_core::time::Clock;
///
/// struct MyBoard<C, K> {
///     connector: C,
///     clock: K,
/// }
///
/// impl<C: Connector, K: Clock> Board for MyBoard<C, K> {
///     type Connector = C;
///     type Clock = K;
///     type Rng = rand::rngs::StdRng;
///     type Outbox = RamOutbox<2048>;
///
///     fn into_parts(self) -> Parts<C, K, Self::Rng, Self::Outbox> {
///         use rand::SeedableRng;
///         Parts {
///             connector: self.connector,
///             clock: self.clock,
///             rng: rand::rngs::StdRng::from_os_rng(),
///             outbox: RamOutbox::new(),
///         }
///     }
/// }
/// ```
pub trait Board {
    /// Opens TCP (and TLS) connections.
    type Connector: Connector;
    /// Tells the time and sleeps.
    type Clock: Clock;
    /// An unpredictable random source.
    type Rng: RngCore;
    /// Keeps published messages until the server acknowledged them.
    type Outbox: Outbox;

    /// Hands the parts over to the client.
    fn into_parts(self) -> Parts<Self::Connector, Self::Clock, Self::Rng, Self::Outbox>;
}

/// The parts of a [`Board`], also a board of its own (for tests and
/// one-off wiring).
#[derive(Debug)]
pub struct Parts<C, K, R, O> {
    /// Opens connections.
    pub connector: C,
    /// Tells the time and sleeps.
    pub clock: K,
    /// The random source.
    pub rng: R,
    /// Keeps unacknowledged messages.
    pub outbox: O,
}

impl<C: Connector, K: Clock, R: RngCore, O: Outbox> Board for Parts<C, K, R, O> {
    type Connector = C;
    type Clock = K;
    type Rng = R;
    type Outbox = O;

    fn into_parts(self) -> Self {
        self
    }
}
