//! The captive portal on the chip's own access point: a DHCP server for
//! the phone (edge-dhcp), tether-core's DNS responder (every name → the
//! access point) and tether-core's portal pages over embassy-net sockets,
//! sharing one [`ConfigStore`].
//!
//! ```text
//!  phone joins SoftAP "tether-XXXX"
//!    │ DHCP DISCOVER/REQUEST ──► dhcp::serve   (edge-dhcp: 192.168.4.50.. , DNS = AP)
//!    │ DNS A connectivitycheck… ► dns::serve    (tether-core dns::respond → AP address)
//!    │ GET /generate_204 ───────► http::serve ×2 (tether-core Portal: 302 → form)
//!    │ POST /save ──────────────► Portal::handle ─► ConfigStore::save ─► saved() fires
//!    ▼
//!  the firmware's provisioning state machine takes it from there
//! ```
//!
//! Nothing here touches esp-hal: the access point is whatever embassy-net
//! stack it is given (esp-radio's `Interface::access_point()` on a chip, a
//! TAP device in `tests/portal.rs`).

mod dhcp;
mod dns;
mod http;

use core::cell::{Cell, RefCell};
use core::net::Ipv4Addr;

use embassy_net::Stack;
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embassy_sync::signal::Signal;
use tether_core::provisioning::http::Limits;
use tether_core::provisioning::portal::{
    ConnectionStatus, MAX_LISTED_NETWORKS, Network, PairingGuard, Portal, PortalConfig,
};
use tether_core::provisioning::store::ConfigStore;

pub use http::{RESPONSE_LEN, SOCKET_LEN};

/// One scanned network, owned (a scan result outlives the scan).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedNetwork {
    /// Network name.
    pub ssid: heapless::String<32>,
    /// Signal strength in dBm.
    pub rssi: i8,
    /// Whether a passphrase is needed.
    pub secured: bool,
}

/// Buffers of a running portal: two HTTP workers (phones open several
/// connections at once), the DNS and DHCP sockets. About 40 KiB; put it in
/// a `static` (`StaticCell`) and hand it to [`CaptivePortal::run`].
#[derive(Debug)]
pub struct PortalBuffers {
    http: [http::WorkerBuffers; 2],
    dns: dns::DnsBuffers,
    dhcp: dhcp::DhcpBuffers,
}

impl Default for PortalBuffers {
    fn default() -> Self {
        Self::new()
    }
}

impl PortalBuffers {
    /// Zeroed buffers.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            http: [http::WorkerBuffers::new(), http::WorkerBuffers::new()],
            dns: dns::DnsBuffers::new(),
            dhcp: dhcp::DhcpBuffers::new(),
        }
    }
}

/// The captive portal: see the [module documentation](self).
///
/// Single-executor firmware: the shared state lives in `Cell`/`RefCell`,
/// and every method takes `&self`, so the firmware can update the status
/// and the scan results while [`run`](Self::run) serves.
pub struct CaptivePortal<'a, S> {
    stack: Stack<'a>,
    address: Ipv4Addr,
    portal: Portal<'a>,
    limits: Limits,
    store: RefCell<S>,
    status: Cell<ConnectionStatus>,
    networks: RefCell<heapless::Vec<ScannedNetwork, MAX_LISTED_NETWORKS>>,
    pairing: RefCell<PairingGuard>,
    saves: Cell<u32>,
    saved: Signal<NoopRawMutex, ()>,
}

impl<S> core::fmt::Debug for CaptivePortal<'_, S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CaptivePortal")
            .field("address", &self.address)
            .field("status", &self.status.get())
            .field("saves", &self.saves.get())
            .finish_non_exhaustive()
    }
}

impl<'a, S: ConfigStore> CaptivePortal<'a, S> {
    /// A portal served on `stack` (the access point's interface, with the
    /// static address `address`), with the pages of `config` (whose `host`
    /// should be `address` written out), saving into `store`.
    pub fn new(stack: Stack<'a>, address: Ipv4Addr, config: PortalConfig<'a>, store: S) -> Self {
        Self {
            stack,
            address,
            portal: Portal::new(config),
            limits: Limits::default(),
            store: RefCell::new(store),
            status: Cell::new(ConnectionStatus::WaitingForSettings),
            networks: RefCell::new(heapless::Vec::new()),
            pairing: RefCell::new(PairingGuard::new()),
            saves: Cell::new(0),
            saved: Signal::new(),
        }
    }

    /// Sets what the status page shows (fed from the provisioning state
    /// machine).
    pub fn set_status(&self, status: ConnectionStatus) {
        self.status.set(status);
    }

    /// Replaces the networks the form offers (from a Wi-Fi scan; strongest
    /// first, at most [`MAX_LISTED_NETWORKS`] are kept).
    pub fn set_networks(&self, networks: impl IntoIterator<Item = ScannedNetwork>) {
        let mut list = self.networks.borrow_mut();
        list.clear();
        for network in networks {
            if list.push(network).is_err() {
                break;
            }
        }
    }

    /// Runs `f` with the store.
    pub fn with_store<T>(&self, f: impl FnOnce(&mut S) -> T) -> T {
        f(&mut self.store.borrow_mut())
    }

    /// How many records the portal saved.
    pub fn saves(&self) -> u32 {
        self.saves.get()
    }

    /// Waits until the portal saves a record.
    pub async fn saved(&self) {
        self.saved.wait().await;
    }

    /// Serves DHCP, DNS and HTTP until dropped (never returns).
    pub async fn run(&self, buffers: &mut PortalBuffers) -> ! {
        info!("portal: serving on {}", self.address);
        let [first, second] = &mut buffers.http;
        use embassy_futures::select::{Either4, select4};
        match select4(
            dhcp::serve(self.stack, self.address, &mut buffers.dhcp),
            dns::serve(self.stack, self.address, &mut buffers.dns),
            http::serve(self, first),
            http::serve(self, second),
        )
        .await
        {
            Either4::First(never)
            | Either4::Second(never)
            | Either4::Third(never)
            | Either4::Fourth(never) => never,
        }
    }

    /// Answers one parsed HTTP request into `out`; the HTTP workers call
    /// this.
    fn answer(
        &self,
        request: &tether_core::provisioning::http::Request<'_>,
        out: &mut [u8],
    ) -> Result<
        tether_core::provisioning::portal::Handled,
        tether_core::provisioning::portal::PortalError,
    > {
        let now_ms = embassy_time::Instant::now().as_millis();
        let networks = self.networks.borrow();
        let mut listed: heapless::Vec<Network<'_>, MAX_LISTED_NETWORKS> = heapless::Vec::new();
        for network in networks.iter() {
            let _ = listed.push(Network {
                ssid: network.ssid.as_str(),
                rssi: network.rssi,
                secured: network.secured,
            });
        }
        let locked = self.pairing.borrow().is_locked(now_ms);
        let view = tether_core::provisioning::portal::PortalView::new(&listed, self.status.get())
            .with_pairing_locked(locked);
        let handled = self
            .portal
            .handle(request, &view, &mut *self.store.borrow_mut(), out)?;
        self.pairing.borrow_mut().observe(now_ms, &handled);
        if handled.saved {
            self.saves.set(self.saves.get().saturating_add(1));
            self.saved.signal(());
            info!("portal: settings saved");
        }
        Ok(handled)
    }
}
