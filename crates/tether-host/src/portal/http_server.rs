//! The HTTP server task: one task per connection, one request per
//! connection (`Connection: close`), reads bounded by the portal's limits
//! and a read timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tether_core::provisioning::http::{self, Limits, Status};
use tether_core::provisioning::portal::{Network, Portal, PortalConfig, PortalView};
use tether_core::provisioning::store::ConfigStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{PortalSettings, ScannedNetwork, Shared, lock};

/// Response buffer: the largest page is under 10 KB.
const RESPONSE_LEN: usize = 16 * 1024;

/// Owned copies of what [`PortalConfig`] borrows.
#[derive(Debug)]
pub(super) struct Site {
    host: String,
    device_name: String,
    pairing_code: Option<String>,
    default_server_url: String,
    networks: Vec<ScannedNetwork>,
    limits: Limits,
    read_timeout: Duration,
}

impl Site {
    pub(super) fn new(settings: &PortalSettings, addr: SocketAddr) -> Self {
        // Redirects must point at the address the browser can reach.
        let host = if addr.port() == 80 {
            addr.ip().to_string()
        } else {
            addr.to_string()
        };
        Self {
            host,
            device_name: settings.device_name.clone(),
            pairing_code: settings.pairing_code.clone(),
            default_server_url: settings.default_server_url.clone(),
            networks: settings.networks.clone(),
            limits: settings.limits,
            read_timeout: settings.read_timeout,
        }
    }

    fn portal(&self) -> Portal<'_> {
        let mut config = PortalConfig::new(&self.host)
            .with_device_name(&self.device_name)
            .with_default_server_url(&self.default_server_url);
        if let Some(code) = &self.pairing_code {
            config = config.with_pairing_code(code);
        }
        Portal::new(config)
    }
}

pub(super) async fn serve<S>(listener: TcpListener, site: Arc<Site>, shared: Arc<Shared<S>>)
where
    S: ConfigStore + Send + 'static,
{
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let site = Arc::clone(&site);
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, &site, &shared).await {
                        log::debug!("portal: connection from {peer} ended: {e}");
                    }
                });
            }
            Err(e) => {
                log::warn!("portal: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// What to do once the request bytes are in.
enum Outcome {
    Request(usize),
    Refused(http::HttpError),
    Closed,
}

async fn connection<S: ConfigStore>(
    mut stream: TcpStream,
    site: &Site,
    shared: &Shared<S>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; site.limits.buffer_len()];
    let mut filled = 0usize;
    // Read until the parser has a whole request (it may come in any number
    // of pieces), the limits are exceeded, or the peer goes quiet.
    let outcome = loop {
        let parsed = http::parse_request(buf.get(..filled).unwrap_or(&[]), &site.limits);
        match parsed {
            Ok(Status::Complete(request)) => break Outcome::Request(request.len),
            Err(e) => break Outcome::Refused(e),
            Ok(Status::Partial) => {}
        }
        let Some(space) = buf.get_mut(filled..).filter(|s| !s.is_empty()) else {
            // Limits guarantee a complete request fits; a full buffer
            // means the head never ended.
            break Outcome::Refused(http::HttpError::HeadersTooLarge);
        };
        match tokio::time::timeout(site.read_timeout, stream.read(space)).await {
            Ok(Ok(0)) | Err(_) => break Outcome::Closed,
            Ok(Ok(n)) => filled += n,
            Ok(Err(e)) => return Err(e),
        }
    };
    let mut out = vec![0u8; RESPONSE_LEN];
    let portal = site.portal();
    let handled = match outcome {
        Outcome::Closed => return Ok(()),
        Outcome::Refused(error) => portal.reject(error, &mut out),
        Outcome::Request(len) => {
            let bytes = buf.get(..len).unwrap_or(&[]);
            match http::parse_request(bytes, &site.limits) {
                Ok(Status::Complete(request)) => {
                    let networks: Vec<Network<'_>> = site
                        .networks
                        .iter()
                        .map(|n| Network {
                            ssid: &n.ssid,
                            rssi: n.rssi,
                            secured: n.secured,
                        })
                        .collect();
                    let status = *lock(&shared.status);
                    let now_ms = shared.now_ms();
                    let locked = lock(&shared.pairing).is_locked(now_ms);
                    let view = PortalView::new(&networks, status).with_pairing_locked(locked);
                    let mut store = lock(&shared.store);
                    let result = portal.handle(&request, &view, &mut *store, &mut out);
                    if let Ok(handled) = &result {
                        lock(&shared.pairing).observe(now_ms, handled);
                        if handled.saved {
                            *lock(&shared.saves) += 1;
                        }
                    }
                    result
                }
                Ok(Status::Partial) | Err(_) => {
                    portal.reject(http::HttpError::BadRequest, &mut out)
                }
            }
        }
    };
    let handled = handled.map_err(|e| std::io::Error::other(e.to_string()))?;
    log::info!("portal: answered {}", handled.status);
    stream
        .write_all(out.get(..handled.len).unwrap_or(&[]))
        .await?;
    stream.shutdown().await?;
    // Read what the client is still sending (an oversize body, say) for a
    // moment, so closing does not reset the connection before the client
    // has read the response.
    let mut sink = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    let mut drained = 0usize;
    while drained < 1 << 20 {
        match tokio::time::timeout_at(deadline, stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => break,
        }
    }
    Ok(())
}
