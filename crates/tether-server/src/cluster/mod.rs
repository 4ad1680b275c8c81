//! Running several server nodes as one: the store on PostgreSQL
//! ([`PgStore`](crate::store::PgStore)) and the broker on NATS
//! ([`NatsBroker`]).
//!
//! ```text
//!                 load balancer (HAProxy, …)
//!            ┌──────────────┼──────────────┐
//!          node A         node B         node C      tether-server --database postgres://…
//!            │  \            │            /  │                     --nats nats://…
//!            │   └──── NATS (events, sessions, commands) ───┘
//!            └──────────── PostgreSQL (the truth) ──────────┘
//! ```
//!
//! What crosses nodes, and how it stays correct:
//!
//! - **Events.** Each node stores through its own writer; the database
//!   orders each channel's offsets across nodes (a locked counter row).
//!   Committed events go to this node's receivers at once and to the other
//!   nodes over NATS core, where a per-channel [sequencer](sequencer) puts
//!   the sources back in offset order. NATS core is at-most-once: a
//!   receiver that misses an event notices the gap in the offsets and
//!   reads it from the database, and every reconnection to NATS makes the
//!   node's receivers catch up from the database. **JetStream is not
//!   used**: it would be a second durable log of what PostgreSQL already
//!   holds in order, with its own storage and replication to run, and the
//!   receivers' resume-by-offset already makes a lossy live path safe.
//! - **Descriptions.** A device's channel description is stored, then
//!   sent to the other nodes over NATS core; what a node misses while it
//!   (or the sender) is away from NATS, its receivers read from the
//!   database at every reconnection, as events.
//! - **Sessions.** A device that reconnects to another node gets a newer
//!   fencing token from the database; the node announces it on
//!   `tether.sessions` and the old node closes its session
//!   (`session_replaced`). Should the notice be late or lost, the
//!   database refuses the old session's appends anyway (the token is
//!   checked in the append transaction).
//! - **Commands.** The node that holds a device's session answers
//!   requests on `tether.cmd.<device>`; a receiver on another node sends
//!   its command there (NATS request/reply). No responder: `device_offline`.
//! - **Revocations.** New connections are authenticated against the
//!   database, so a revoked key or device token is refused at once; every
//!   node reads the database's revocation log every
//!   [`REVOCATION_POLL`](crate::REVOCATION_POLL) and closes the matching
//!   connections, within [`REVOCATION_BOUND`](crate::REVOCATION_BOUND)
//!   of the commit. Not over NATS: it holds while NATS is down.
//! - **Presence.** `devices.online` is set by the session's node and
//!   cleared only with that session's token; a node that restarts clears
//!   its own devices (`session_node`).

mod nats;
pub(crate) mod sequencer;

pub use nats::{NatsBroker, NatsStats, server_addrs};
