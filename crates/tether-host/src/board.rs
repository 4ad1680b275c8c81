//! [`TokioBoard`]: the tether-core [`Board`] of a PC or Linux gateway.

use rand::SeedableRng;
use rand::rngs::StdRng;
use tether_core::board::{Board, Parts};
use tether_core::outbox::{Outbox, RamOutbox};

use crate::clock::TokioClock;
use crate::connector::TokioConnector;

/// tokio TCP (and TLS by rustls) for connections, tokio's clock, the
/// operating system's random source, and an outbox (4 KiB of RAM unless
/// [`TokioBoard::with_outbox`] says otherwise).
///
/// ```no_run
/// use tether_core::client::{self, ClientConfig, NoCommands, Resources};
/// use tether_host::board::TokioBoard;
///
/// # async fn run() {
/// let config = ClientConfig::new("ws://127.0.0.1:8080/v1/device", "demo-1", "1.0.0");
/// let mut resources: Resources<TokioBoard> = Resources::new();
/// let (client, mut runner) = client::new(TokioBoard::new(), config, &mut resources).unwrap();
/// tokio::select! {
///     _ = runner.run(NoCommands) => {}
///     _ = client.publish("demo/counter", &1) => {}
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct TokioBoard<O = RamOutbox<4096>> {
    connector: TokioConnector,
    clock: TokioClock,
    rng: StdRng,
    outbox: O,
}

impl Default for TokioBoard {
    fn default() -> Self {
        Self::new()
    }
}

impl TokioBoard {
    /// A board with the default connector (Mozilla roots for TLS), a clock
    /// starting now, an RNG seeded by the operating system and an empty
    /// 4 KiB RAM outbox.
    #[must_use]
    pub fn new() -> Self {
        Self {
            connector: TokioConnector::new(),
            clock: TokioClock::new(),
            rng: StdRng::from_os_rng(),
            outbox: RamOutbox::new(),
        }
    }
}

impl<O: Outbox> TokioBoard<O> {
    /// The same board with another outbox (a flash outbox over a file, a
    /// larger RAM one).
    #[must_use]
    pub fn with_outbox<P: Outbox>(self, outbox: P) -> TokioBoard<P> {
        TokioBoard {
            connector: self.connector,
            clock: self.clock,
            rng: self.rng,
            outbox,
        }
    }

    /// The same board with another connector (private roots for TLS).
    #[must_use]
    pub fn with_connector(mut self, connector: TokioConnector) -> Self {
        self.connector = connector;
        self
    }

    /// The same board with a clock shared with the application.
    #[must_use]
    pub fn with_clock(mut self, clock: TokioClock) -> Self {
        self.clock = clock;
        self
    }
}

impl<O: Outbox> Board for TokioBoard<O> {
    type Connector = TokioConnector;
    type Clock = TokioClock;
    type Rng = StdRng;
    type Outbox = O;

    fn into_parts(self) -> Parts<TokioConnector, TokioClock, StdRng, O> {
        Parts {
            connector: self.connector,
            clock: self.clock,
            rng: self.rng,
            outbox: self.outbox,
        }
    }
}
