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
//!   application: client.publish("temp", &reading) / state() / stats()
//!        |
//!   +----v---------------------------------------------------------+
//!   | client::{Client, Runner}  connect, Hello/Welcome, publish,    |
//!   |                           acks, commands, reconnect           |
//!   | session::Session (sans-IO) seq numbers, resend, keepalive     |
//!   | outbox::RamOutbox<N>  backoff::Backoff  url::ServerUrl        |
//!   | connector::Connector (board: TCP/TLS)   time::Clock (board)   |
//!   +----v---------------------------------------------------------+
//!        |  send(Message) / receive() -> Message / close(code, reason)
//!   +----v---------------------------------------------------------+
//!   | ws::WebSocket<T, R>   async adapter: pings -> pongs, close    |
//!   |                       handshake, caller-owned rx/tx buffers   |
//!   +--------------------------------------------------------------+
//!   | ws (sans-IO)  ClientHandshake / Request   HTTP upgrade        |
//!   |               Frame / FrameHeader         parse, emit, mask   |
//!   |               Fragments / Assembler       fragment, reassemble|
//!   |               CloseFrame / CloseCode      RFC 6455 7.4        |
//!   +----^---------------------------------------------------------+
//!        |  embedded_io_async::{Read, Write}
//!   TCP (embassy-net TcpSocket, or TLS on top, or tokio on a PC)
//! ```
//!
//! # A complete client exchange
//!
//! The client connects, sends a text message, reads the echo and closes.
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
