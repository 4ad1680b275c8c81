//! Who may hold a connection: every limit on open connections in one place.
//!
//! ```text
//!  TCP accept ──per IP (max_connections_per_ip)──▶ HTTP
//!     /v1/device, /v1/receiver with a key: authenticate, then
//!         max_connections and per tenant (max_connections_per_tenant) ──▶ WebSocket
//!     /v1/receiver without a key: its own small budget
//!         (max_unauthenticated_connections) until its `auth` message, then
//!         max_connections and per tenant like the others
//! ```
//!
//! Nothing unauthenticated ever takes a place an authenticated connection
//! needs: a crowd of keyless upgrades fills only its own budget.

use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Limits;
use crate::limits::{KeyedCounter, KeyedGuard};
use crate::store::TenantId;

/// The connection limits and what is open under them.
#[derive(Debug)]
pub(crate) struct Admission {
    max_connections: usize,
    max_per_ip: Option<usize>,
    max_per_tenant: Option<usize>,
    connections: Arc<Semaphore>,
    unauthenticated: Arc<Semaphore>,
    per_ip: KeyedCounter<IpAddr>,
    per_tenant: KeyedCounter<TenantId>,
}

/// Which limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `max_connections`.
    Server,
    /// `max_connections_per_tenant`.
    Tenant,
}

impl Refusal {
    /// The `kind` label of `tether_rejected_total`.
    pub(crate) fn metric(self) -> &'static str {
        match self {
            Refusal::Server => "max_connections",
            Refusal::Tenant => "max_connections_per_tenant",
        }
    }
}

/// An authenticated WebSocket connection's place; freed on drop.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    _server: OwnedSemaphorePermit,
    _tenant: KeyedGuard<TenantId>,
}

impl Admission {
    pub(crate) fn new(limits: &Limits) -> Self {
        Admission {
            max_connections: limits.max_connections,
            max_per_ip: limits.max_connections_per_ip,
            max_per_tenant: limits.max_connections_per_tenant,
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            unauthenticated: Arc::new(Semaphore::new(limits.max_unauthenticated_connections)),
            per_ip: KeyedCounter::default(),
            per_tenant: KeyedCounter::default(),
        }
    }

    /// A TCP connection from `ip`, or `None` when that address has its
    /// maximum open.
    pub(crate) fn tcp(&self, ip: IpAddr) -> Option<KeyedGuard<IpAddr>> {
        self.per_ip.try_acquire(ip, self.max_per_ip)
    }

    /// A place for a WebSocket that has not authenticated yet.
    pub(crate) fn unauthenticated(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.unauthenticated).try_acquire_owned().ok()
    }

    /// A place for an authenticated WebSocket of `tenant`.
    pub(crate) fn connection(&self, tenant: TenantId) -> Result<ConnectionSlot, Refusal> {
        let tenant = self
            .per_tenant
            .try_acquire(tenant, self.max_per_tenant)
            .ok_or(Refusal::Tenant)?;
        let server = Arc::clone(&self.connections)
            .try_acquire_owned()
            .map_err(|_| Refusal::Server)?;
        Ok(ConnectionSlot {
            _server: server,
            _tenant: tenant,
        })
    }

    /// Open authenticated WebSocket connections.
    pub(crate) fn open(&self) -> usize {
        self.max_connections
            .saturating_sub(self.connections.available_permits())
    }
}
