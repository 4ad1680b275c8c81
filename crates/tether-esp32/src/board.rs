//! [`EspBoard`]: the tether-core [`Board`] of an ESP32 firmware, so the
//! application names one type: the connector (plain [`TcpConnector`] or
//! [`TlsConnector`](crate::tls::TlsConnector) around it), the chip's RNG
//! and an outbox (RAM, or tether-core's flash outbox), with
//! [`EmbassyClock`] as the clock.
//!
//! ```no_run
//! # async fn f(stack: embassy_net::Stack<'static>, rx: &'static mut [u8], tx: &'static mut [u8],
//! #            rng: rand::rngs::StdRng) {
//! use tether_core::client::{self, ClientConfig, NoCommands, Resources};
//! use tether_core::outbox::RamOutbox;
//! use tether_esp32::board::EspBoard;
//! use tether_esp32::{TcpConfig, TcpConnector};
//!
//! type Board = EspBoard<TcpConnector, rand::rngs::StdRng, RamOutbox<4096>>;
//! // In firmware: a `static_cell::ConstStaticCell<Resources<Board>>`.
//! # let resources: &'static mut Resources<Board> = Box::leak(Box::new(Resources::new()));
//! let board = Board::new(TcpConnector::new(stack, rx, tx, TcpConfig::default()), rng, RamOutbox::new());
//! let config = ClientConfig::new("ws://192.168.1.10:8080/v1/device", "kitchen-1", "1.0.0");
//! let (client, mut runner) = client::new(board, config, resources).unwrap();
//! let _ = client.publish("temperature", &2150).await;
//! let stopped = runner.run(NoCommands).await; // only a refused device returns
//! # }
//! ```

use rand_core::RngCore;
use tether_core::board::{Board, Parts};
use tether_core::connector::Connector;
use tether_core::outbox::Outbox;

use crate::clock::EmbassyClock;
#[cfg(doc)]
use crate::tcp::TcpConnector;

/// An ESP32 board: connector `C`, random source `R` (esp-hal's `Rng`),
/// outbox `O`; the clock is embassy-time.
#[derive(Debug)]
pub struct EspBoard<C, R, O> {
    connector: C,
    rng: R,
    outbox: O,
}

impl<C: Connector, R: RngCore, O: Outbox> EspBoard<C, R, O> {
    /// A board from its parts.
    pub fn new(connector: C, rng: R, outbox: O) -> Self {
        Self {
            connector,
            rng,
            outbox,
        }
    }
}

impl<C: Connector, R: RngCore, O: Outbox> Board for EspBoard<C, R, O> {
    type Connector = C;
    type Clock = EmbassyClock;
    type Rng = R;
    type Outbox = O;

    fn into_parts(self) -> Parts<C, EmbassyClock, R, O> {
        Parts {
            connector: self.connector,
            clock: EmbassyClock,
            rng: self.rng,
            outbox: self.outbox,
        }
    }
}
