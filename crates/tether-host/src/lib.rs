//! The tether SDK on a PC or a Linux gateway: tokio adapters that let the
//! same no_std core (`tether-core`) run under std, and the captive portal
//! served from a PC (`portal`).
//!
//! ```text
//!  tether-core (no_std)            tether-host (std, tokio)
//! ┌─────────────────────┐        ┌──────────────────────────┐
//! │ Session, backoff,   │ trait  │ TokioConnector:          │
//! │ outbox, WebSocket   │◀───────│ TCP (tokio) + TLS        │
//! │ Connector, Clock    │        │ (tokio-rustls, webpki)   │
//! └─────────────────────┘        └──────────────────────────┘
//! ```
//!
//! ```no_run
//! use tether_core::connector::{Connector, Endpoint, Security};
//! use tether_host::connector::TokioConnector;
//! use embedded_io_async::Write;
//!
//! # async fn run() -> std::io::Result<()> {
//! let mut connector = TokioConnector::new();
//! let mut connection = connector
//!     .connect(Endpoint::new("relay.example.com", 443, Security::Tls))
//!     .await?;
//! connection.write_all(b"GET / HTTP/1.1\r\nHost: relay.example.com\r\n\r\n").await?;
//! # Ok(())
//! # }
//! ```

extern crate alloc;

pub mod board;
pub mod clock;
pub mod connector;
pub mod label;
pub mod portal;
