//! Provisioning on the ESP8266's own access point: tether-core's captive
//! portal, DNS responder and provisioning state machine, unchanged, served
//! through the modem.
//!
//! ```text
//!  phone ──Wi-Fi──► ESP8266 SoftAP "tether-XXXX" (AT+CWMODE=3, AT+CWSAP)
//!                     ├─ TCP :80  AT+CIPSERVER=1,80   (links 0..=2) ─► http::parse_request ─► Portal::handle
//!                     └─ UDP :53  AT+CIPSTART=4,"UDP" (link 4)       ─► dns::respond (every name → the AP)
//!  Provisioning (state machine): OpenPortal / Connect (AT+CWJAP, then AT+CIPSTART to the server on
//!  link 3) / ClosePortal / EraseRecord, with its retry, fallback and portal timeout.
//! ```
//!
//! [`provision`] runs until the device is on the network with a record
//! that reached its server, and returns that record; the caller then
//! starts the tether client with it.

use embedded_hal::digital::OutputPin;
use embedded_io_async::{Read, Write};
use heapless::Vec;
use tether_core::connector::Connector;
use tether_core::provisioning::dns;
use tether_core::provisioning::http::{self, Limits, Status};
use tether_core::provisioning::portal::{Network, PairingGuard, Portal, PortalView};
use tether_core::provisioning::record::ProvisioningRecord;
use tether_core::provisioning::state::{Action, Failure, Provisioning};
use tether_core::provisioning::store::ConfigStore;
use tether_core::time::{Clock, Duration, Instant};
use tether_core::url::ServerUrl;

use crate::engine::Kind;
use crate::error::Error;
use crate::modem::{Esp8266, ScannedNetwork};
use crate::parse::Remote;

/// Links the HTTP server may use (`AT+CIPSERVERMAXCONN=3`).
const HTTP_LINKS: usize = 3;
/// The highest link the "can we reach the server" check may use.
const CHECK_LINK: u8 = 3;
/// The DNS responder's UDP link.
const DNS_LINK: u8 = 4;

/// The access point's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessPoint<'a> {
    /// Its name, e.g. `tether-4F2A`.
    pub ssid: &'a str,
    /// Its WPA2 passphrase (8 to 64 characters), or "" for an open network
    /// (the usual captive-portal set-up; the pairing code protects it).
    pub passphrase: &'a str,
    /// Wi-Fi channel (1 to 13).
    pub channel: u8,
    /// The access point's address, which every DNS answer carries
    /// (ESP-AT's default is 192.168.4.1).
    pub address: [u8; 4],
}

impl<'a> AccessPoint<'a> {
    /// An open access point named `ssid` on channel 6 at 192.168.4.1.
    #[must_use]
    pub const fn open(ssid: &'a str) -> Self {
        Self {
            ssid,
            passphrase: "",
            channel: 6,
            address: [192, 168, 4, 1],
        }
    }
}

/// The portal's buffers: one request buffer per HTTP link (`REQUEST`
/// bytes, the portal's [`Limits`] must fit) and one response (`RESPONSE`
/// bytes; the form page stays under 10 KB).
#[derive(Debug)]
pub struct PortalBuffers<const REQUEST: usize = 2048, const RESPONSE: usize = 12288> {
    requests: [[u8; REQUEST]; HTTP_LINKS],
    lengths: [usize; HTTP_LINKS],
    response: [u8; RESPONSE],
}

impl<const REQUEST: usize, const RESPONSE: usize> Default for PortalBuffers<REQUEST, RESPONSE> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const REQUEST: usize, const RESPONSE: usize> PortalBuffers<REQUEST, RESPONSE> {
    /// Zeroed buffers.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            requests: [[0; REQUEST]; HTTP_LINKS],
            lengths: [0; HTTP_LINKS],
            response: [0; RESPONSE],
        }
    }
}

/// Runs provisioning to the end: boots the state machine from `store`,
/// opens the access point and portal when it says so, tries credentials,
/// and returns the record once the device joined its network and reached
/// its server (after the portal's linger time, if it was open).
///
/// # Errors
/// Modem failures that recovery could not fix ([`Error::Unresponsive`],
/// [`Error::Serial`]); Wi-Fi and server failures are the state machine's
/// business and never end it.
pub async fn provision<S, K, P, St, const REQUEST: usize, const RESPONSE: usize>(
    modem: &mut Esp8266<'_, S, K, P>,
    store: &mut St,
    portal: &Portal<'_>,
    machine: &mut Provisioning,
    access_point: AccessPoint<'_>,
    buffers: &mut PortalBuffers<REQUEST, RESPONSE>,
) -> Result<ProvisioningRecord, Error>
where
    S: Read + Write,
    K: Clock,
    P: OutputPin,
    St: ConfigStore,
{
    let limits = Limits::default()
        .with_max_head_len(REQUEST.min(1024))
        .with_max_body_len(REQUEST.saturating_sub(1024).max(256));
    let origin = modem.clock.now();
    let now_ms = |modem: &Esp8266<'_, S, K, P>| {
        u64::from(
            modem
                .clock
                .now()
                .saturating_duration_since(origin)
                .as_millis(),
        )
    };
    let mut networks: Vec<
        ScannedNetwork,
        { tether_core::provisioning::portal::MAX_LISTED_NETWORKS },
    > = Vec::new();
    let mut guard = PairingGuard::new();
    let loaded = store.load();
    machine.boot(now_ms(modem), loaded);
    loop {
        while let Some(action) = machine.poll_action() {
            let now = now_ms(modem);
            match action {
                Action::OpenPortal(reason) => {
                    info!("portal: opening ({:?})", reason);
                    if let Err(e) = modem.scan(&mut networks).await {
                        warn!("portal: scan failed: {:?}", e);
                    }
                    buffers.lengths = [0; HTTP_LINKS];
                    open_access_point(modem, &access_point).await?;
                }
                Action::ClosePortal => {
                    info!("portal: closing");
                    close_access_point(modem).await?;
                }
                Action::Connect => {
                    let record = match store.load() {
                        Ok(Some(record)) => record,
                        _ => {
                            machine.attempt_failed(now, Failure::Wifi);
                            continue;
                        }
                    };
                    match attempt(modem, &record).await {
                        Ok(()) => {
                            let now = now_ms(modem);
                            machine.wifi_joined(now);
                            machine.server_reached(now);
                        }
                        Err(Failure::Wifi) => machine.attempt_failed(now_ms(modem), Failure::Wifi),
                        Err(Failure::Server) => {
                            machine.wifi_joined(now_ms(modem));
                            machine.attempt_failed(now_ms(modem), Failure::Server);
                        }
                    }
                }
                Action::Disconnect => {
                    let _ = modem.command("AT+CWQAP").await;
                }
                Action::EraseRecord => {
                    if let Err(e) = store.erase() {
                        warn!("portal: erase failed: {:?}", e);
                    }
                }
                _ => {}
            }
        }
        if machine.state() == tether_core::provisioning::state::State::Connected
            && !machine.portal_open()
            && let Ok(Some(record)) = store.load()
        {
            return Ok(record);
        }
        // Serve until the machine's next deadline (at most a second).
        let wake = machine
            .poll_at()
            .map_or(Duration::from_secs(1), |at| {
                Duration::from_millis(at.saturating_sub(now_ms(modem)))
            })
            .min(Duration::from_secs(1));
        let deadline = modem.clock.now() + wake;
        if machine.portal_open() {
            let view_networks: Vec<
                Network<'_>,
                { tether_core::provisioning::portal::MAX_LISTED_NETWORKS },
            > = networks
                .iter()
                .map(|n| Network {
                    ssid: n.ssid.as_str(),
                    rssi: n.rssi,
                    secured: n.secured,
                })
                .collect();
            let saved = serve_until(
                modem,
                store,
                portal,
                machine,
                &mut guard,
                &view_networks,
                &access_point,
                &limits,
                buffers,
                deadline,
                origin,
            )
            .await?;
            if saved {
                machine.credentials_saved(now_ms(modem));
            }
        } else {
            while modem.clock.now() < deadline {
                if !modem.wait_report_until(deadline).await? {
                    break;
                }
            }
        }
        machine.poll(now_ms(modem));
    }
}

/// Joins the record's network and opens (then closes) a connection to its
/// server.
async fn attempt<S, K, P>(
    modem: &mut Esp8266<'_, S, K, P>,
    record: &ProvisioningRecord,
) -> Result<(), Failure>
where
    S: Read + Write,
    K: Clock,
    P: OutputPin,
{
    let Some(wifi) = &record.wifi else {
        return Err(Failure::Wifi);
    };
    if let Err(e) = modem
        .join(wifi.ssid.as_str(), wifi.passphrase.as_str())
        .await
    {
        warn!("portal: joining failed: {:?}", e);
        return Err(Failure::Wifi);
    }
    let Ok(url) = ServerUrl::parse(record.server_url.as_str()) else {
        return Err(Failure::Server);
    };
    let saved_link = modem.config.link;
    // The HTTP server hands out the lowest free ids: check from the top.
    modem.config.link = (0..=CHECK_LINK)
        .rev()
        .find(|id| modem.engine.link(*id).is_some_and(|l| !l.open))
        .unwrap_or(CHECK_LINK);
    let result = match modem.connect(url.endpoint).await {
        Ok(link) => link.close().await.map_err(|_| Failure::Server),
        Err(e) => {
            warn!("portal: the server is out of reach: {:?}", e);
            Err(Failure::Server)
        }
    };
    modem.config.link = saved_link;
    result
}

async fn open_access_point<S, K, P>(
    modem: &mut Esp8266<'_, S, K, P>,
    access_point: &AccessPoint<'_>,
) -> Result<(), Error>
where
    S: Read + Write,
    K: Clock,
    P: OutputPin,
{
    modem.ensure_ready().await?;
    modem.access_point = true;
    modem.command("AT+CWMODE=3").await?;
    let timeout = modem.config.command_timeout;
    let open = access_point.passphrase.is_empty();
    modem
        .execute(
            Kind::Plain,
            timeout,
            |l| {
                l.push_str("AT+CWSAP=")?;
                l.push_quoted(access_point.ssid)?;
                l.push_str(",")?;
                l.push_quoted(access_point.passphrase)?;
                l.push_str(",")?;
                l.push_u32(u32::from(access_point.channel))?;
                l.push_str(if open { ",0" } else { ",3" })
            },
            &mut |_| {},
        )
        .await?;
    // A server left over from an earlier portal, or none: both fine.
    let _ = modem.command("AT+CIPSERVER=0,1").await;
    modem.command("AT+CIPSERVERMAXCONN=3").await?;
    modem.command("AT+CIPSERVER=1,80").await?;
    let _ = modem.close_link(DNS_LINK).await;
    modem
        .command("AT+CIPSTART=4,\"UDP\",\"0.0.0.0\",53,53,2")
        .await?;
    Ok(())
}

async fn close_access_point<S, K, P>(modem: &mut Esp8266<'_, S, K, P>) -> Result<(), Error>
where
    S: Read + Write,
    K: Clock,
    P: OutputPin,
{
    let _ = modem.command("AT+CIPSERVER=0,1").await;
    let _ = modem.close_link(DNS_LINK).await;
    modem.access_point = false;
    modem.command("AT+CWMODE=1").await
}

/// Serves HTTP and DNS until `deadline`; returns whether a record was saved.
#[allow(clippy::too_many_arguments, reason = "the portal's whole context")]
async fn serve_until<S, K, P, St, const REQUEST: usize, const RESPONSE: usize>(
    modem: &mut Esp8266<'_, S, K, P>,
    store: &mut St,
    portal: &Portal<'_>,
    machine: &Provisioning,
    guard: &mut PairingGuard,
    networks: &[Network<'_>],
    access_point: &AccessPoint<'_>,
    limits: &Limits,
    buffers: &mut PortalBuffers<REQUEST, RESPONSE>,
    deadline: Instant,
    origin: Instant,
) -> Result<bool, Error>
where
    S: Read + Write,
    K: Clock,
    P: OutputPin,
    St: ConfigStore,
{
    let mut saved = false;
    loop {
        let mut worked = false;
        // DNS first: one datagram per AT+CIPRECVDATA.
        if modem.engine.link(DNS_LINK).is_some_and(|l| l.pending > 0) {
            worked = true;
            modem.receive(DNS_LINK, 512).await?;
            let remote = modem.engine.received_from();
            let query = modem.engine.received(DNS_LINK);
            let mut reply = [0u8; 512];
            let answer = dns::respond(query, access_point.address, 60, &mut reply);
            modem.engine.consume_all();
            if let (Ok(answer), Some(remote)) = (answer, remote) {
                send_bytes(
                    modem,
                    DNS_LINK,
                    reply.get(..answer.len).unwrap_or_default(),
                    Some(remote),
                    None,
                )
                .await?;
            }
        }
        for index in 0..HTTP_LINKS {
            let link = u8::try_from(index).unwrap_or(0);
            let Some(state) = modem.engine.link(link) else {
                continue;
            };
            if !state.open && state.pending == 0 {
                if let Some(length) = buffers.lengths.get_mut(index) {
                    *length = 0;
                }
                continue;
            }
            if state.pending == 0 {
                continue;
            }
            // The connection this request belongs to: ESP-AT gives a closed
            // id to the next connection at once.
            let generation = state.generation;
            worked = true;
            let filled = buffers.lengths.get(index).copied().unwrap_or(0);
            let room = REQUEST.saturating_sub(filled);
            modem.receive(link, room.max(1)).await?;
            let received = modem.engine.received(link);
            let n = received.len().min(room);
            if let Some(request) = buffers.requests.get_mut(index)
                && let (Some(dst), Some(src)) =
                    (request.get_mut(filled..filled + n), received.get(..n))
            {
                dst.copy_from_slice(src);
            }
            modem.engine.consume_all();
            let filled = filled + n;
            if let Some(length) = buffers.lengths.get_mut(index) {
                *length = filled;
            }
            let request = buffers
                .requests
                .get(index)
                .and_then(|r| r.get(..filled))
                .unwrap_or_default();
            let now_ms = u64::from(
                modem
                    .clock
                    .now()
                    .saturating_duration_since(origin)
                    .as_millis(),
            );
            let handled = match http::parse_request(request, limits) {
                Ok(Status::Partial) if filled < REQUEST => continue,
                Ok(Status::Partial) => {
                    portal.reject(http::HttpError::HeadersTooLarge, &mut buffers.response)
                }
                Err(error) => portal.reject(error, &mut buffers.response),
                Ok(Status::Complete(request)) => {
                    let view = PortalView::new(networks, machine.connection_status())
                        .with_pairing_locked(guard.is_locked(now_ms));
                    let result = portal.handle(&request, &view, store, &mut buffers.response);
                    if let Ok(handled) = &result {
                        guard.observe(now_ms, handled);
                        saved |= handled.saved;
                    }
                    result
                }
            };
            if let Some(length) = buffers.lengths.get_mut(index) {
                *length = 0;
            }
            match handled {
                Ok(handled) => {
                    debug!("portal: answered {} on link {}", handled.status, link);
                    let response = buffers.response.get(..handled.len).unwrap_or_default();
                    match send_bytes(modem, link, response, None, Some(generation)).await {
                        Ok(()) | Err(Error::LinkClosed | Error::SendFailed) => {}
                        Err(Error::LinkReused) => {
                            // Part of this response reached the next phone's
                            // connection: close that one too; it will retry.
                            warn!("portal: link {} reused mid-response", link);
                            modem.close_link(link).await?;
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => warn!("portal: no response: {:?}", e),
            }
            // Close it, unless the phone did already (and a new connection
            // may have the id by now).
            modem.drain_reports().await?;
            if modem
                .engine
                .link(link)
                .is_some_and(|l| l.open && l.generation == generation)
            {
                modem.close_link(link).await?;
            }
        }
        if saved {
            return Ok(true);
        }
        if !worked && !modem.wait_report_until(deadline).await? {
            return Ok(false);
        }
        if modem.clock.now() >= deadline {
            return Ok(false);
        }
    }
}

/// Sends `bytes` on `link` in `AT+CIPSEND`-sized pieces; for a TCP link,
/// only while it is still the connection `generation` (the phone may hang
/// up half-way, and its id go to the next connection).
async fn send_bytes<S, K, P>(
    modem: &mut Esp8266<'_, S, K, P>,
    link: u8,
    mut bytes: &[u8],
    remote: Option<Remote>,
    generation: Option<u16>,
) -> Result<(), Error>
where
    S: Read + Write,
    K: Clock,
    P: OutputPin,
{
    while !bytes.is_empty() {
        modem.settle().await?;
        if let Some(generation) = generation {
            modem.drain_reports().await?;
            let same = modem
                .engine
                .link(link)
                .is_some_and(|l| l.open && l.generation == generation);
            if !same {
                debug!("portal: link {} closed mid-response", link);
                return Err(Error::LinkClosed);
            }
        }
        let n = bytes.len().min(modem.send.len());
        if let (Some(dst), Some(src)) = (modem.send.get_mut(..n), bytes.get(..n)) {
            dst.copy_from_slice(src);
        }
        modem.send_len = n;
        modem.send_gathered(link, remote).await?;
        bytes = bytes.get(n..).unwrap_or_default();
    }
    Ok(())
}
