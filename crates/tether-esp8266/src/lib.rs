//! The ESP8266 as a tether device's Wi-Fi link: Espressif's **ESP-AT**
//! firmware on the ESP8266, driven over a serial port by the MCU (or Linux
//! board) that runs the tether session. `no_std`, no allocation, over any
//! [`embedded_io_async`] serial port.
//!
//! # Why ESP-AT, and what it costs
//!
//! The ESP8266's own CPU (Xtensa LX106) has no maintained Rust toolchain:
//! the LX106 port of LLVM and `esp8266-hal` are abandoned, and Espressif's
//! Xtensa toolchain cannot be installed by this project's build. The
//! maintainable Rust path is the one many products take: the ESP8266 runs
//! ESP-AT (its last release line for the ESP8266 is **v2.2**, on
//! ESP8266_RTOS_SDK), and a host MCU drives it with AT commands. The radio,
//! TCP/IP, DNS and TLS then live in Espressif's firmware; tether's session,
//! WebSocket engine and provisioning run unchanged on the host.
//!
//! Trade-offs, honestly:
//!
//! - **Two chips** (an RP2040 and an ESP-01, say) instead of one, and a
//!   UART between them: 115200 baud moves about 11 KB/s, far below Wi-Fi,
//!   and every byte in either direction costs AT framing.
//! - **TLS is in the modem**: the ESP8266 checks the relay's certificate
//!   against one CA flashed into its `client_ca` partition (see [`pki`]);
//!   only one TLS connection fits its RAM, and a handshake takes seconds.
//! - **No control over the stack**: socket windows, retransmissions and DNS
//!   are ESP-AT's. Passive receive mode (`AT+CIPRECVMODE=1`) at least puts
//!   the MCU in charge of *when* data comes, so a small MCU is never
//!   overrun: TCP flow control stops the server when the modem's window is
//!   full.
//! - **A frozen firmware**: ESP-AT 2.2 for the ESP8266 gets no new features;
//!   this driver sticks to commands that release documents.
//!
//! The command reference followed is the ESP-AT User Guide for that
//! release:
//! [Basic](https://docs.espressif.com/projects/esp-at/en/release-v2.2.0.0_esp8266/AT_Command_Set/Basic_AT_Commands.html),
//! [Wi-Fi](https://docs.espressif.com/projects/esp-at/en/release-v2.2.0.0_esp8266/AT_Command_Set/Wi-Fi_AT_Commands.html),
//! [TCP/IP](https://docs.espressif.com/projects/esp-at/en/release-v2.2.0.0_esp8266/AT_Command_Set/TCP-IP_AT_Commands.html)
//! commands and the
//! [message list](https://docs.espressif.com/projects/esp-at/en/release-v2.2.0.0_esp8266/AT_Command_Set/index.html)
//! (`OK`, `ERROR`, `busy p...`, `ERR CODE:0x...`, `ready`, ...). Wiring,
//! flashing and troubleshooting are in `docs/esp8266.md`.
//!
//! # Architecture
//!
//! ```text
//!  tether-core Runner / provisioning                       (unchanged)
//!        │ Connector::connect, Read/Write          │ portal, DNS, state machine
//!  ┌─────▼─────────────────────────────────────────▼────────────────────┐
//!  │ connector::Link (passive receive, gathered sends)   portal (SoftAP)│
//!  │ modem::Esp8266   async adapter: serial + Clock + reset pin, Wi-Fi, │
//!  │                  SNTP, scan, recovery (probe, reset pin / AT+RST)  │
//!  │ engine::Engine   sans-IO: one command at a time, deadlines, busy   │
//!  │                  retries, links, Wi-Fi state, unasked resets       │
//!  │ parse::Parser    sans-IO: bytes → events, +CIPRECVDATA binary data │
//!  └─────┬──────────────────────────────────────────────────────────────┘
//!        │ embedded_io_async::{Read, Write}: a UART (embassy-rp BufferedUart,
//!        ▼ a USB-serial adapter on Linux)
//!  ESP8266 running ESP-AT 2.2 ──Wi-Fi──► relay server
//! ```
//!
//! ## Why not `atat`
//!
//! [`atat`](https://github.com/FactbirdHQ/atat) is the established Rust AT
//! framework and was evaluated first. It does not fit here: its digester
//! finds responses by scanning for `\r\n`-framed result codes, so a
//! `+CIPRECVDATA:<len>,<binary>` payload that contains `\r\nOK\r\n` ends the
//! response early (length-prefixed URCs were a long-standing open question
//! there, atat issue #33); its default digester `panic!`s on a parser error
//! and its ingress clears its buffer when it fills, losing bytes; timeouts
//! go through `embassy-time`'s global driver, so the engine cannot run on
//! the virtual time the session's tests use; and it needs a separate
//! ingress task plus `'static` channels, where this crate needs one
//! borrow of a serial port. ESP-AT's grammar is small; the parser here is
//! about 400 lines, is fuzzed and property-tested over arbitrary splits,
//! and treats the binary payload as a length-counted run.
//!
//! # Example
//!
//! The whole device, for any board: a serial port to the ESP8266, a clock,
//! and tether-core's client. The modem joins Wi-Fi when the runner first
//! connects, and again after it lost the network or reset.
//!
//! ```no_run
//! use rand_core::RngCore;
//! use tether_core::board::Parts;
//! use tether_core::client::{self, ClientConfig, NoCommands, Resources};
//! use tether_core::outbox::RamOutbox;
//! use tether_core::session::SessionConfig;
//! use tether_core::time::{Clock, Duration};
//! use tether_esp8266::{Config, Esp8266, ModemBuffers};
//!
//! async fn device<S, K, R>(serial: S, clock: K, rng: R)
//! where
//!     S: embedded_io_async::Read + embedded_io_async::Write,
//!     K: Clock,
//!     R: RngCore,
//! {
//!     let mut modem_buffers = ModemBuffers::<256, 1024, 1024>::new();
//!     let modem = Esp8266::new(
//!         serial,
//!         &clock,
//!         Config::new().with_wifi("Home", "correct horse battery"),
//!         &mut modem_buffers,
//!     );
//!     // The modem is the board's connector; the MCU brings the rest.
//!     let board = Parts { connector: modem, clock: &clock, rng, outbox: RamOutbox::<2048>::new() };
//!     // TLS handshakes in the modem take seconds: allow for them.
//!     let session = SessionConfig::new().with_connect_timeout(Duration::from_secs(40));
//!     let config = ClientConfig::new("wss://relay.example.com/v1/device", "esp-01", "1.0.0")
//!         .with_authorization("Bearer td_device_token")
//!         .with_session(session);
//!     let mut resources: Resources<_> = Resources::new();
//!     let (client, mut runner) = client::new(board, config, &mut resources).unwrap();
//!     let publish = async {
//!         let _ = client.publish("sensors/temperature", &21).await;
//!     };
//!     embassy_futures::join::join(runner.run(NoCommands), publish).await;
//! }
//! ```
#![no_std]

#[cfg(test)]
extern crate std;

// Must come first: the logging macros are used by every module below.
#[macro_use]
mod fmt;

pub mod command;
pub mod connector;
pub mod engine;
mod error;
pub mod modem;
pub mod parse;
pub mod pki;
pub mod portal;

pub use connector::Link;
pub use error::{Error, JoinError};
pub use modem::{
    Buffers as ModemBuffers, Config, Esp8266, NoResetPin, ScannedNetwork, TlsVerification,
};
