//! Provisioning: getting a device onto Wi-Fi and pointed at its server.
//!
//! Two ways, both built from the sans-IO parts below:
//!
//! ```text
//!  factory                         end customer (phone)            browser + USB
//!  `tether-provision` ──flash──┐   joins AP "tether-XXXX"          (Web Serial)
//!                              │        │ DNS: every name → AP       │
//!                              ▼        ▼                            ▼
//!                    ┌──────────────┐ ┌──────────┐ ┌─────────────┐ ┌──────────┐
//!                    │ record+store │◀│  portal  │◀│ http / form │ │  improv  │
//!                    └──────┬───────┘ └──────────┘ └─────────────┘ └────┬─────┘
//!                           │ load / corrupt?                          │ credentials
//!                           ▼                                          ▼
//!                    ┌───────────────────────────────────────────────────────┐
//!                    │ state: unconfigured → portal → trying → connected     │
//!                    │        (failure count, portal timeout, reset button)  │
//!                    └───────────────────────────────────────────────────────┘
//! ```
//!
//! - [`record`]: the [`ProvisioningRecord`](record::ProvisioningRecord), its
//!   field rules and its binary encoding with CRC-32.
//! - [`store`]: the [`ConfigStore`](store::ConfigStore) trait, a RAM store
//!   and a NOR-flash store (`embedded-storage`).
//! - [`dns`]: the captive-portal DNS responder.
//! - [`http`]: the incremental, bounded HTTP/1.1 request parser.
//! - [`form`]: the `application/x-www-form-urlencoded` decoder.
//! - [`portal`]: the portal's pages and request handling.
//! - [`state`]: the provisioning state machine, on caller-supplied time.
//! - [`improv`]: the Improv Wi-Fi serial protocol.
//!
//! None of them touches a socket, a clock or the heap: the backend
//! (`tether-host` on a PC, an esp-hal/embassy task on a chip) moves bytes
//! and passes the time in.

pub mod dns;
pub mod form;
pub mod http;
pub mod improv;
pub mod portal;
pub mod record;
pub mod state;
pub mod store;
