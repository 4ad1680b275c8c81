//! Test harness for tether (not published; a dev-dependency only):
//!
//! - [`autobahn`]: tether-core's WebSocket engine, client and server role,
//!   as echo peers for the Autobahn|Testsuite cases (run by kosoku), and the
//!   verdicts read back.
//! - [`fault_proxy`]: a seeded TCP proxy that cuts, stalls, slows and
//!   blackholes connections between devices and a server, for the fault
//!   tests and the load generator.
//! - [`server_process`]: a real `tether-server` process to kill and restart.
//!
//! ```text
//!  devices ──TCP──▶ FaultProxy (127.0.0.1:port) ──TCP──▶ tether-server
//!                    cut (RST) mid-frame, stall, 1-byte writes,
//!                    latency, refuse, blackhole outage
//! ```

// Test support is std code; the no_std import lints do not apply.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

pub mod autobahn;
pub mod fault_proxy;
pub mod server_process;
