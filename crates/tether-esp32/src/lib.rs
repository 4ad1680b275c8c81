//! tether on ESP32 chips: everything between tether-core and embassy-net.
//!
//! ```text
//!   firmware: Client / Runner (tether-core)
//!        │ Connector
//!   ┌────▼────────────────────────────────────────────────────────────┐
//!   │ tls::TlsConnector   wss://: TLS 1.3 (embedded-tls), pinned CA,  │
//!   │                     name + validity checks, typed refusals      │
//!   │ tcp::TcpConnector   DNS, TcpSocket on your buffers, FIN → RST   │
//!   │ sntp::synchronize   Unix time ─► clock::WallClock               │
//!   │ clock::EmbassyClock tether-core Clock on embassy-time           │
//!   │ portal::CaptivePortal  SoftAP set-up: DHCP, DNS, pages          │
//!   │ improv::ImprovSerial   Improv Wi-Fi over USB-Serial-JTAG        │
//!   └────┬────────────────────────────────────────────────────────────┘
//!        │ embassy-net Stack (smoltcp)
//!   esp-radio Wi-Fi (on a chip)  ·  a TAP device (the host tests)
//! ```
//!
//! Nothing here touches esp-hal: the same code runs on an ESP32-C3/C6 and,
//! compiled for x86_64, over a Linux TAP device in the host tests
//! (`tests/tap.rs`), against a real tether-server.
//!
//! # Example (feature `tls`, on by default)
//!
//! ```no_run
//! # async fn f(stack: embassy_net::Stack<'static>, rng: impl rand_core::RngCore + rand_core::CryptoRng + 'static) {
//! use embassy_time::Duration;
//! use tether_core::connector::{Connector, Endpoint, Security};
//! use tether_esp32::tcp::{TcpConfig, TcpConnector};
//! use tether_esp32::tls::{MAX_RECORD, PinnedCa, TlsConnector};
//!
//! static CA: &[u8] = &[/* include_bytes!("relay-ca.der") */];
//! static SOCKET: static_cell::StaticCell<([u8; 2048], [u8; 1024])> = static_cell::StaticCell::new();
//! static RECORDS: static_cell::StaticCell<([u8; MAX_RECORD], [u8; 1024])> = static_cell::StaticCell::new();
//! let (rx, tx) = SOCKET.init(([0; 2048], [0; 1024]));
//! let (read_record, write_record) = RECORDS.init(([0; MAX_RECORD], [0; 1024]));
//! // Certificates need the time: SNTP first.
//! tether_esp32::sntp::synchronize(stack, "pool.ntp.org", 123, Duration::from_secs(5)).await.unwrap();
//! let tcp = TcpConnector::new(stack, rx, tx, TcpConfig::default());
//! let mut connector = TlsConnector::new(tcp, PinnedCa(CA), rng, read_record, write_record);
//! let connection = connector
//!     .connect(Endpoint::new("relay.example.com", 443, Security::Tls))
//!     .await;
//! # }
//! ```
#![no_std]

#[cfg(test)]
extern crate std;

// Must come first: the logging macros are used by every module below.
#[macro_use]
mod fmt;

pub mod board;
pub mod clock;
pub mod improv;
#[cfg(feature = "portal")]
pub mod portal;
#[cfg(feature = "tls")]
pub mod sntp;
pub mod tcp;
#[cfg(feature = "tls")]
pub mod tls;

pub use board::EspBoard;
pub use clock::{EmbassyClock, WallClock};
pub use tcp::{TcpConfig, TcpConnection, TcpConnector};
#[cfg(feature = "tls")]
pub use tls::{PinnedCa, TlsConnector, TlsError};
