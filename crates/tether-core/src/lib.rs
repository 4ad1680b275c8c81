//! Portable no_std, no-alloc core of the tether SDK.
//!
//! A device running tether is a WebSocket client that dials out to a relay.
//! This crate holds the parts that run on the device and on a PC alike, with
//! no heap and no I/O of their own: they work on byte buffers the caller
//! owns, and a thin async adapter drives them over any
//! [`embedded_io_async`] transport (an embassy-net `TcpSocket` on an ESP32, a
//! tokio socket on a PC).
//!
//! ```text
//!   application: client.publish("temp", &reading).await / state() / stats()
//!        |
//!   +----v---------------------------------------------------------+
//!   | client::{new, Client, Runner}  Runner: thin async adapter:    |
//!   |                    connect, move bytes, read the outbox, sleep|
//!   | client link (sans-IO): upgrade, frames, Hello/Welcome,        |
//!   |                    publish, acks, commands, close codes       |
//!   | session::Session (sans-IO) seq numbers, resend, keepalive     |
//!   | backoff::Backoff   url::ServerUrl                             |
//!   +----v--------------------------------------------------^------+
//!        |                                                  |
//!   board::Board (one per backend: tether-esp32, tether-host)
//!   connector::Connector (TCP/TLS)  time::Clock  RngCore
//!   outbox::Outbox: RamOutbox<N> | flash::FlashOutbox (survives reboots)
//!
//!   +--------------------------------------------------------------+
//!   | ws::WebSocket<T, R>   async adapter: pings -> pongs, close    |
//!   |   (the WebSocket     handshake, caller-owned rx/tx buffers   |
//!   |    engine alone)                                              |
//!   +--------------------------------------------------------------+
//!   | ws (sans-IO)  Context                     one connection:     |
//!   |                         frames in/out, close handshake (both  |
//!   |                         the client link and WebSocket use it) |
//!   |               ClientHandshake / Request   HTTP upgrade        |
//!   |               Frame / FrameHeader         parse, emit, mask   |
//!   |               Fragments / Assembler       fragment, reassemble|
//!   |               CloseFrame / CloseCode      RFC 6455 7.4        |
//!   +----^---------------------------------------------------------+
//!        |  embedded_io_async::{Read, Write}
//!   TCP (embassy-net TcpSocket, or TLS on top, or tokio on a PC)
//! ```
//!
//! Provisioning (Wi-Fi credentials, server, token: captive portal, Improv,
//! factory records, the power-cut-safe record in flash) is in
//! [`provisioning`].
//!
//! # A device in twenty lines
//!
//! A sensor that publishes a reading every five seconds and answers an
//! `led` command, for any [`Board`](board::Board): the backend crate
//! (`tether-esp32` on a chip, `tether_host::board::TokioBoard` on a PC)
//! brings the connector, clock, random source and outbox; the application
//! brings its settings, its buffers (here `resources`, a `static` on a
//! chip) and what it does.
//!
//! ```no_run
//! use tether_core::board::Board;
//! use tether_core::client::{self, ClientConfig, CommandResult, NeedsProvisioning, Resources};
//! use tether_core::time::Duration;
//! use tether_proto::{Command, CommandStatus};
//!
//! #[derive(serde::Serialize)]
//! struct Reading {
//!     millivolts: u16,
//! }
//!
//! async fn sensor<B: Board>(board: B, resources: &mut Resources<B>) -> NeedsProvisioning {
//!     let config = ClientConfig::new("wss://relay.example.com/v1/device", "kitchen-1", "1.0.0")
//!         .with_authorization("Bearer td_device-token");
//!     let (client, mut runner) = client::new(board, config, resources).expect("valid settings");
//!     let led = |command: &Command<'_>, result: &mut CommandResult<'_>| match command.channel {
//!         "led" => match result.set(&(command.payload.as_str() == Some("true"))) {
//!             Ok(()) => CommandStatus::Ok, // the new state goes back as the result
//!             Err(_) => CommandStatus::Failed,
//!         },
//!         _ => CommandStatus::Unsupported,
//!     };
//!     let publish = async {
//!         loop {
//!             // Returns once the outbox holds it; never waits for the network.
//!             let _ = client.publish("power/battery", &Reading { millivolts: 3_712 }).await;
//!             client.sleep(Duration::from_secs(5)).await;
//!         }
//!     };
//!     // The runner returns only when the server refused the device for good
//!     // (token revoked, unknown device, bad certificate): back to provisioning.
//!     match embassy_futures::select::select(runner.run(led), publish).await {
//!         embassy_futures::select::Either::First(stopped) => stopped,
//!         embassy_futures::select::Either::Second(never) => never,
//!     }
//! }
//! ```
//!
//! The same code runs for real in `tether-server --demo` (five simulated
//! devices over `TokioBoard`) and in `examples/esp32c3-minimal` (embassy-net
//! on an ESP32-C3).
//!
//! # The WebSocket engine on its own
//!
//! Below the client, [`ws`] is a complete RFC 6455 implementation. The client connects, sends a text message, reads the echo and closes.
//! Here the transport is an in-memory pipe and the peer is the crate's own
//! server role; on a device the transport is a connected `TcpSocket` and
//! `rng` the hardware RNG.
//!
//! ```
//! use tether_core::ws::{ClientRequest, CloseCode, Config, Message, WebSocket};
//! # use std::{cell::RefCell, collections::VecDeque, convert::Infallible, rc::Rc, task::Poll};
//! # #[derive(Clone, Default)]
//! # struct Pipe(Rc<RefCell<VecDeque<u8>>>, Rc<RefCell<VecDeque<u8>>>);
//! # impl embedded_io_async::ErrorType for Pipe { type Error = Infallible; }
//! # impl embedded_io_async::Read for Pipe {
//! #     async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
//! #         std::future::poll_fn(|_| {
//! #             let mut q = self.0.borrow_mut();
//! #             if q.is_empty() { return Poll::Pending; }
//! #             let n = buf.len().min(q.len());
//! #             for (d, s) in buf.iter_mut().zip(q.drain(..n)) { *d = s; }
//! #             Poll::Ready(Ok(n))
//! #         }).await
//! #     }
//! # }
//! # impl embedded_io_async::Write for Pipe {
//! #     async fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
//! #         self.1.borrow_mut().extend(buf); Ok(buf.len())
//! #     }
//! #     async fn flush(&mut self) -> Result<(), Infallible> { Ok(()) }
//! # }
//! # fn block_on<F: Future>(f: F) -> F::Output {
//! #     let mut f = std::pin::pin!(f);
//! #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
//! #     loop { if let Poll::Ready(out) = f.as_mut().poll(&mut cx) { return out; } }
//! # }
//! # let client_io = Pipe::default();
//! # let server_io = Pipe(client_io.1.clone(), client_io.0.clone());
//! # use rand::SeedableRng;
//! # let rng = rand::rngs::StdRng::from_os_rng();
//! # let server_rng = rand::rngs::StdRng::from_os_rng();
//! // `client_io`: a connected transport; `rng`: an unpredictable rand_core RNG.
//! let client = async {
//!     let (mut rx, mut tx) = ([0u8; 1024], [0u8; 256]);
//!     let request = ClientRequest::new("relay.example.com", "/v1/device?id=42")
//!         .with_subprotocols(&["tether.v1"])
//!         .with_authorization("Bearer device-token");
//!     let (mut ws, subprotocol) =
//!         WebSocket::connect(client_io, &mut rx, &mut tx, rng, Config::client(), request).await?;
//!     assert_eq!(subprotocol, Some("tether.v1"));
//!
//!     ws.send_text("temperature=21.5").await?;
//!     match ws.receive().await? {
//!         Message::Text(reply) => assert_eq!(reply, "temperature=21.5"),
//!         other => panic!("unexpected {other:?}"),
//!     }
//!     ws.close(CloseCode::NORMAL, "done").await
//! };
//! // The peer: an echo server, using the server role of the same engine.
//! let server = async {
//!     let (mut rx, mut tx) = ([0u8; 1024], [0u8; 1024]);
//!     let (mut ws, _) =
//!         WebSocket::accept(server_io, &mut rx, &mut tx, server_rng, Config::server(), &["tether.v1"])
//!             .await?;
//!     let mut echo = [0u8; 64];
//!     let len = match ws.receive().await? {
//!         Message::Text(text) => { echo[..text.len()].copy_from_slice(text.as_bytes()); text.len() }
//!         _ => 0,
//!     };
//!     ws.send_text(core::str::from_utf8(&echo[..len]).unwrap()).await?;
//!     // The client's close: `receive` answers it and reports it.
//!     assert!(matches!(ws.receive().await?, Message::Close(Some(c)) if c.code == CloseCode::NORMAL));
//!     Ok::<(), tether_core::ws::Error>(())
//! };
//! let (client, server) = block_on(futures_util::future::join(client, server));
//! client?;
//! server?;
//! # Ok::<(), tether_core::ws::Error>(())
//! ```
#![no_std]

#[cfg(test)]
extern crate std;

// Must come first: the logging macros are used by every module below.
#[macro_use]
mod fmt;

pub mod backoff;
pub mod board;
pub mod client;
pub mod connector;
pub mod flash;
pub mod outbox;
pub mod provisioning;
pub mod session;
pub mod time;
pub mod url;
pub mod ws;
