//! The captive portal's request handling: parsed [`Request`] in, whole HTTP
//! response out, written into a caller buffer. No sockets, no allocation.
//!
//! | request                                 | response                                   |
//! |-----------------------------------------|--------------------------------------------|
//! | `GET /` on the portal host              | 200, the set-up form (scanned networks)     |
//! | `POST /save`, valid, right pairing code | record saved, 303 to `/status`              |
//! | `POST /save`, anything wrong            | 400/403/422, the form again with messages, nothing saved |
//! | `GET /status`                           | 200, connection progress (refreshes itself) |
//! | OS connectivity probes ([`PROBE_PATHS`]), any other host or path | 302 to `http://<portal host>/` |
//!
//! The pages are plain HTML with a few lines of CSS and no JavaScript; the
//! form page stays under 10 KB with [`MAX_LISTED_NETWORKS`] networks.

mod html;

use core::fmt;

pub use html::Escaped;
use html::{Location, Page};

use super::form::{Form, FormError, decode_into};
use super::http::{HttpError, Method, Request, ResponseTooLarge};
use super::record::{
    DEVICE_ID_MAX_LEN, DeviceId, FieldError, PAIRING_CODE_MAX_LEN, PASSPHRASE_MAX_LEN, PairingCode,
    Passphrase, ProvisioningRecord, SERVER_URL_MAX_LEN, SSID_MAX_LEN, ServerUrl, Ssid,
    TOKEN_MAX_LEN, Token, WifiCredentials,
};
use super::store::{ConfigStore, StoreError};

/// Paths operating systems fetch to detect a captive portal. Each gets a
/// redirect to the portal, which makes the phone open its sign-in sheet.
pub const PROBE_PATHS: &[&str] = &[
    "/generate_204",              // Android, Chrome
    "/gen_204",                   // Android
    "/hotspot-detect.html",       // Apple iOS/macOS
    "/library/test/success.html", // Apple, older iOS
    "/ncsi.txt",                  // Windows (NCSI)
    "/connecttest.txt",           // Windows 10/11
    "/redirect",                  // Windows
    "/canonical.html",            // Ubuntu/GNOME (connectivity-check.ubuntu.com)
    "/success.txt",               // Firefox (detectportal.firefox.com)
    "/check_network_status.txt",  // NetworkManager (Fedora)
    "/kindle-wifi/wifistub.html", // Kindle
    "/mobile/status.php",         // Android (some vendors)
    "/fwlink",                    // Windows
    "/chat",                      // Windows 10 store
];

/// Scanned networks shown in the form at most (strongest first is the
/// caller's job); keeps the page under 10 KB.
pub const MAX_LISTED_NETWORKS: usize = 16;

/// One scanned Wi-Fi network, as the backend reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network<'a> {
    /// The network name (untrusted: HTML-escaped when shown).
    pub ssid: &'a str,
    /// Signal strength in dBm.
    pub rssi: i8,
    /// Whether the network asks for a passphrase.
    pub secured: bool,
}

/// Connection progress shown by the status page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ConnectionStatus {
    /// Nothing has been saved yet.
    WaitingForSettings,
    /// Joining the saved network.
    JoiningWifi,
    /// Joining the network failed (wrong password or out of range).
    WifiFailed,
    /// On the network, dialling the server.
    ReachingServer,
    /// On the network but the server does not answer or refuses the token.
    ServerFailed,
    /// On the network and connected to the server: done.
    Connected,
}

impl ConnectionStatus {
    const fn sentence(self) -> &'static str {
        match self {
            Self::WaitingForSettings => "Waiting for Wi-Fi settings.",
            Self::JoiningWifi => "Settings saved. Joining the Wi-Fi network\u{2026}",
            Self::WifiFailed => {
                "Could not join the Wi-Fi network. Check the password and try again."
            }
            Self::ReachingServer => "Joined the Wi-Fi network. Reaching the server\u{2026}",
            Self::ServerFailed => {
                "Joined the Wi-Fi network, but the server could not be reached. Check the server address."
            }
            Self::Connected => "Done: the device joined the Wi-Fi network and reached the server.",
        }
    }

    const fn settled(self) -> bool {
        matches!(
            self,
            Self::Connected | Self::WifiFailed | Self::ServerFailed
        )
    }
}

/// What the backend knows at the time of a request.
#[derive(Debug, Clone, Copy)]
pub struct PortalView<'a> {
    /// Networks from the last scan.
    pub networks: &'a [Network<'a>],
    /// Connection progress.
    pub status: ConnectionStatus,
    /// Too many wrong pairing codes lately ([`PairingGuard::is_locked`]):
    /// refuse submissions with 429 without looking at them.
    pub pairing_locked: bool,
}

impl<'a> PortalView<'a> {
    /// A view with `networks` and `status`, pairing not locked.
    pub const fn new(networks: &'a [Network<'a>], status: ConnectionStatus) -> Self {
        Self {
            networks,
            status,
            pairing_locked: false,
        }
    }

    /// Sets [`pairing_locked`](Self::pairing_locked).
    #[must_use]
    pub const fn with_pairing_locked(mut self, locked: bool) -> Self {
        self.pairing_locked = locked;
        self
    }
}

/// Slows down guessing of the pairing code: after
/// [`MAX_FAILURES`](Self::MAX_FAILURES) wrong codes in a row, submissions
/// are refused for a minute, doubling with every further wrong code (up
/// to 16 minutes). Sans-IO: the backend keeps one per portal, passes the
/// time in, and feeds it every [`Handled`].
///
/// ```
/// use tether_core::provisioning::portal::PairingGuard;
///
/// let mut guard = PairingGuard::new();
/// for _ in 0..PairingGuard::MAX_FAILURES {
///     guard.pairing_rejected(1_000);
/// }
/// assert!(guard.is_locked(1_000));
/// assert!(!guard.is_locked(61_000));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PairingGuard {
    failures: u8,
    locked_until: u64,
}

impl PairingGuard {
    /// Wrong codes in a row before the first lock.
    pub const MAX_FAILURES: u8 = 5;
    const FIRST_LOCK_MS: u64 = 60_000;

    /// No failures yet.
    pub const fn new() -> Self {
        Self {
            failures: 0,
            locked_until: 0,
        }
    }

    /// Whether submissions are refused at `now_ms`.
    pub const fn is_locked(&self, now_ms: u64) -> bool {
        now_ms < self.locked_until
    }

    /// Counts one wrong pairing code.
    pub fn pairing_rejected(&mut self, now_ms: u64) {
        self.failures = self.failures.saturating_add(1);
        if let Some(extra) = self.failures.checked_sub(Self::MAX_FAILURES) {
            let lock = Self::FIRST_LOCK_MS << u32::from(extra.min(4));
            self.locked_until = now_ms.saturating_add(lock);
            warn!("portal: pairing locked for {} ms", lock);
        }
    }

    /// Feeds the outcome of one request.
    pub fn observe(&mut self, now_ms: u64, handled: &Handled) {
        if handled.pairing_rejected {
            self.pairing_rejected(now_ms);
        } else if handled.saved {
            *self = Self::new();
        }
    }
}

/// Portal settings.
#[derive(Debug, Clone, Copy)]
pub struct PortalConfig<'a> {
    /// Host (and port, if not 80) the portal is reached at, e.g.
    /// `192.168.4.1`: redirects point here and requests for any other host
    /// are redirected.
    pub host: &'a str,
    /// The name shown in the page title, e.g. `tether-4F2A`.
    pub device_name: &'a str,
    /// A pairing code from the device itself (e.g. derived from its MAC
    /// and printed on the label); when `None`, the stored record's code is
    /// used, and when neither exists no code is asked for.
    pub pairing_code: Option<&'a str>,
    /// The server URL offered when no record is stored.
    pub default_server_url: &'a str,
}

impl<'a> PortalConfig<'a> {
    /// A portal at `host`.
    pub const fn new(host: &'a str) -> Self {
        Self {
            host,
            device_name: "tether",
            pairing_code: None,
            default_server_url: "",
        }
    }

    /// Sets [`device_name`](Self::device_name).
    #[must_use]
    pub const fn with_device_name(mut self, name: &'a str) -> Self {
        self.device_name = name;
        self
    }

    /// Sets [`pairing_code`](Self::pairing_code).
    #[must_use]
    pub const fn with_pairing_code(mut self, code: &'a str) -> Self {
        self.pairing_code = Some(code);
        self
    }

    /// Sets [`default_server_url`](Self::default_server_url).
    #[must_use]
    pub const fn with_default_server_url(mut self, url: &'a str) -> Self {
        self.default_server_url = url;
        self
    }
}

/// What handling a request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handled {
    /// Bytes of response written to the output buffer.
    pub len: usize,
    /// The response status code.
    pub status: u16,
    /// Whether a new record was saved (the state machine should now try it).
    pub saved: bool,
    /// Whether a wrong pairing code was submitted (feed [`PairingGuard`]).
    pub pairing_rejected: bool,
}

/// Why a response could not be produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum PortalError {
    /// The output buffer is too small for the response.
    ResponseTooLarge,
}

impl From<ResponseTooLarge> for PortalError {
    fn from(_: ResponseTooLarge) -> Self {
        Self::ResponseTooLarge
    }
}

impl fmt::Display for PortalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("portal response does not fit the output buffer")
    }
}

impl core::error::Error for PortalError {}

/// The captive portal.
///
/// ```
/// use tether_core::provisioning::http::{parse_request, Limits, Status};
/// use tether_core::provisioning::portal::{ConnectionStatus, Network, Portal, PortalConfig, PortalView};
/// use tether_core::provisioning::store::{ConfigStore, MemoryStore};
///
/// let portal = Portal::new(PortalConfig::new("192.168.4.1").with_default_server_url("wss://relay.example.com"));
/// let mut store = MemoryStore::new();
/// let networks = [Network { ssid: "Home", rssi: -50, secured: true }];
/// let view = PortalView::new(&networks, ConnectionStatus::WaitingForSettings);
/// let mut out = [0u8; 12 * 1024];
///
/// let get = b"GET / HTTP/1.1\r\nHost: 192.168.4.1\r\n\r\n";
/// let Ok(Status::Complete(request)) = parse_request(get, &Limits::default()) else { panic!() };
/// let handled = portal.handle(&request, &view, &mut store, &mut out)?;
/// assert_eq!(handled.status, 200);
///
/// let body = "ssid=Home&passphrase=correct+horse&server_url=wss%3A%2F%2Frelay.example.com\
///             &device_id=dev-1&token=t0k3n";
/// let post = format!("POST /save HTTP/1.1\r\nHost: 192.168.4.1\r\n\
///     Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}", body.len());
/// let Ok(Status::Complete(request)) = parse_request(post.as_bytes(), &Limits::default()) else { panic!() };
/// let handled = portal.handle(&request, &view, &mut store, &mut out)?;
/// assert!(handled.saved);
/// assert_eq!(store.load()?.unwrap().wifi.unwrap().ssid.as_str(), "Home");
/// # Ok::<(), Box<dyn core::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Portal<'a> {
    config: PortalConfig<'a>,
}

/// A field of the form with what went wrong with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Problem {
    Field(FieldError),
    PairingMismatch,
    Form(FormError),
}

impl Problem {
    const fn message(self) -> &'static str {
        match self {
            Self::Field(e) => e.message(),
            Self::PairingMismatch => {
                "The pairing code does not match the one printed on the device label."
            }
            Self::Form(FormError::BadPercentEncoding) => {
                "This value has a broken percent-encoding (a % not followed by two hex digits)."
            }
            Self::Form(FormError::NotUtf8) => "This value is not valid text (UTF-8).",
            Self::Form(FormError::TooLong) => "This value is too long.",
        }
    }
}

/// Per-field problems plus a page-wide message, and the sticky values to
/// show again.
#[derive(Debug, Default)]
struct FormState<'v> {
    banner: Option<&'static str>,
    ssid: Option<Problem>,
    passphrase: Option<Problem>,
    server_url: Option<Problem>,
    device_id: Option<Problem>,
    token: Option<Problem>,
    pairing_code: Option<Problem>,
    ssid_value: &'v str,
    server_url_value: &'v str,
    device_id_value: &'v str,
}

impl FormState<'_> {
    fn has_problem(&self) -> bool {
        self.banner.is_some()
            || [
                self.ssid,
                self.passphrase,
                self.server_url,
                self.device_id,
                self.token,
                self.pairing_code,
            ]
            .iter()
            .any(Option::is_some)
    }
}

impl<'a> Portal<'a> {
    /// A portal with `config`.
    pub const fn new(config: PortalConfig<'a>) -> Self {
        Self { config }
    }

    /// The settings.
    pub const fn config(&self) -> &PortalConfig<'a> {
        &self.config
    }

    /// Answers one request.
    pub fn handle<S: ConfigStore>(
        &self,
        request: &Request<'_>,
        view: &PortalView<'_>,
        store: &mut S,
        out: &mut [u8],
    ) -> Result<Handled, PortalError> {
        let head_only = request.method == Method::Head;
        let on_portal_host = request
            .host
            .is_some_and(|h| h.eq_ignore_ascii_case(self.config.host));
        debug!(
            "portal: {:?} {} host={:?}",
            request.method, request.path, request.host
        );
        match (request.method, request.path) {
            (Method::Get | Method::Head, "/") if on_portal_host => {
                let stored = load_quietly(store);
                let mut state = FormState::default();
                if let Some(record) = &stored {
                    state.server_url_value = record.server_url.as_str();
                    state.device_id_value = record.device_id.as_str();
                    if let Some(wifi) = &record.wifi {
                        state.ssid_value = wifi.ssid.as_str();
                    }
                } else {
                    state.server_url_value = self.config.default_server_url;
                }
                let page = Page::Form {
                    view,
                    state: &state,
                    need_pairing: self.pairing_code(stored.as_ref()).is_some(),
                    have_token: stored.is_some(),
                };
                self.emit(out, 200, None, &page, head_only)
            }
            (Method::Get | Method::Head, "/status") if on_portal_host => self.emit(
                out,
                200,
                None,
                &Page::Status {
                    status: view.status,
                },
                head_only,
            ),
            (Method::Post, "/save") => self.save(request, view, store, out),
            (Method::Post, _) => self.error_page(out, 404, "There is nothing to submit here."),
            (Method::Get | Method::Head, path) => {
                if PROBE_PATHS.contains(&path) {
                    debug!("portal: captive-portal probe {}", path);
                }
                self.redirect(out, 302, "/", head_only)
            }
        }
    }

    /// The response for a request the parser refused (oversize, malformed,
    /// wrong method): an HTML page with the reason and the matching status,
    /// so the browser shows a clear message and the portal keeps serving.
    pub fn reject(&self, error: HttpError, out: &mut [u8]) -> Result<Handled, PortalError> {
        warn!("portal: request refused: {:?}", error);
        self.error_page(out, error.status_code(), error.message())
    }

    fn pairing_code<'r>(&self, stored: Option<&'r ProvisioningRecord>) -> Option<&'r str>
    where
        'a: 'r,
    {
        self.config.pairing_code.or_else(|| {
            stored
                .and_then(|r| r.pairing_code.as_ref())
                .map(PairingCode::as_str)
        })
    }

    fn save<S: ConfigStore>(
        &self,
        request: &Request<'_>,
        view: &PortalView<'_>,
        store: &mut S,
        out: &mut [u8],
    ) -> Result<Handled, PortalError> {
        let stored = load_quietly(store);
        let need_pairing = self.pairing_code(stored.as_ref()).is_some();
        let have_token = stored.is_some();
        let mut state = FormState::default();
        if need_pairing && view.pairing_locked {
            state.banner = Some(
                "Too many wrong pairing codes. Wait a few minutes, then try again. Nothing was saved.",
            );
            let page = Page::Form {
                view,
                state: &state,
                need_pairing,
                have_token,
            };
            return self.emit(out, 429, None, &page, false);
        }
        // Buffers one byte larger than each limit, so "too long" is told
        // apart from "fits".
        let mut ssid_buf = [0u8; SSID_MAX_LEN * 4 + 1];
        let mut other_buf = [0u8; SSID_MAX_LEN * 4 + 1];
        let mut pass_buf = [0u8; PASSPHRASE_MAX_LEN + 1];
        let mut url_buf = [0u8; SERVER_URL_MAX_LEN + 1];
        let mut id_buf = [0u8; DEVICE_ID_MAX_LEN + 1];
        let mut token_buf = [0u8; TOKEN_MAX_LEN + 1];
        let mut code_buf = [0u8; PAIRING_CODE_MAX_LEN + 1];

        let form = Form::new(request.body);
        let mut raw = [None; 7];
        if !request.is_form() {
            state.banner = Some("The form must be sent as application/x-www-form-urlencoded.");
        } else {
            // One pass: finds the fields and checks the whole body decodes.
            match form.lookup([
                "ssid",
                "other_ssid",
                "passphrase",
                "server_url",
                "device_id",
                "token",
                "pairing_code",
            ]) {
                Ok(found) => raw = found,
                Err(e) => state.banner = Some(form_banner(e)),
            }
        }
        let [
            raw_ssid,
            raw_other,
            raw_pass,
            raw_url,
            raw_id,
            raw_token,
            raw_code,
        ] = raw;
        let (chosen, p1) = field(raw_ssid, &mut ssid_buf, FieldError::SsidTooLong);
        let (typed, p2) = field(raw_other, &mut other_buf, FieldError::SsidTooLong);
        let (pass, p3) = field(raw_pass, &mut pass_buf, FieldError::PassphraseTooLong);
        let (url, p4) = field(raw_url, &mut url_buf, FieldError::ServerUrlTooLong);
        let (id, p5) = field(raw_id, &mut id_buf, FieldError::DeviceIdTooLong);
        let (token, p6) = field(raw_token, &mut token_buf, FieldError::TokenTooLong);
        let (code, p7) = field(raw_code, &mut code_buf, FieldError::PairingCodeTooLong);

        // A value that does not decode at all is a broken form, not a
        // broken field: say so at the top, as for the rest of the body.
        if let Some(Problem::Form(e)) = [p1, p2, p3, p4, p5, p6, p7]
            .into_iter()
            .flatten()
            .find(|p| matches!(p, Problem::Form(_)))
        {
            state.banner = Some(form_banner(e));
        }
        let has_banner = state.banner.is_some();

        // A typed name wins over a picked one.
        let ssid_text = match typed.map(str::trim) {
            Some(t) if !t.is_empty() => t,
            _ => chosen.unwrap_or(""),
        };
        state.ssid_value = ssid_text;
        state.server_url_value = url.map(str::trim).unwrap_or("");
        state.device_id_value = id.map(str::trim).unwrap_or("");

        state.ssid = p1
            .or(p2)
            .or_else(|| Ssid::new(ssid_text).err().map(Problem::Field));
        state.passphrase = p3.or_else(|| {
            Passphrase::new(pass.unwrap_or(""))
                .err()
                .map(Problem::Field)
        });
        state.server_url = p4.or_else(|| {
            ServerUrl::new(state.server_url_value)
                .err()
                .map(Problem::Field)
        });
        state.device_id = p5.or_else(|| {
            DeviceId::new(state.device_id_value)
                .err()
                .map(Problem::Field)
        });
        let token_text = token.map(str::trim).unwrap_or("");
        state.token = p6.or_else(|| {
            if token_text.is_empty() && have_token {
                None // keep the stored token
            } else {
                Token::new(token_text).err().map(Problem::Field)
            }
        });
        let expected = self.pairing_code(stored.as_ref());
        state.pairing_code = p7.or_else(|| match expected {
            None => None,
            Some(expected) => {
                let typed = code.map(str::trim).unwrap_or("");
                if typed.is_empty() {
                    Some(Problem::Field(FieldError::PairingCodeEmpty))
                } else if PairingCode::new(expected).is_ok_and(|c| c.matches(typed)) {
                    None
                } else {
                    Some(Problem::PairingMismatch)
                }
            }
        });

        if has_banner || state.has_problem() {
            let status = if has_banner {
                400
            } else if state.pairing_code.is_some() {
                403
            } else {
                422
            };
            info!("portal: form refused ({}), nothing saved", status);
            if state.banner.is_none() {
                state.banner = Some("Please correct the fields marked below. Nothing was saved.");
            }
            let page = Page::Form {
                view,
                state: &state,
                need_pairing,
                have_token,
            };
            let mut handled = self.emit(out, status, None, &page, false)?;
            handled.pairing_rejected = matches!(state.pairing_code, Some(Problem::PairingMismatch));
            return Ok(handled);
        }

        let record = build_record(&state, pass.unwrap_or(""), token_text, stored.as_ref());
        let Some(record) = record else {
            return self.error_page(out, 500, "The settings could not be assembled.");
        };
        match store.save(&record) {
            Ok(()) => {
                info!("portal: settings saved");
                let mut handled = self.redirect(out, 303, "/status", false)?;
                handled.saved = true;
                Ok(handled)
            }
            Err(e) => {
                error!("portal: saving failed: {:?}", e);
                self.error_page(
                    out,
                    500,
                    "The device could not store the settings. Please try again.",
                )
            }
        }
    }

    fn error_page(
        &self,
        out: &mut [u8],
        status: u16,
        message: &str,
    ) -> Result<Handled, PortalError> {
        self.emit(out, status, None, &Page::Error { message }, false)
    }

    fn redirect(
        &self,
        out: &mut [u8],
        status: u16,
        path: &str,
        head_only: bool,
    ) -> Result<Handled, PortalError> {
        let location = Location {
            host: self.config.host,
            path,
        };
        self.emit(
            out,
            status,
            Some(location),
            &Page::Error {
                message: "Redirecting to the set-up page.",
            },
            head_only,
        )
    }
}

fn load_quietly<S: ConfigStore>(store: &mut S) -> Option<ProvisioningRecord> {
    match store.load() {
        Ok(record) => record,
        Err(StoreError::Corrupt(_)) => None,
        Err(e) => {
            warn!("portal: store unreadable: {:?}", e);
            None
        }
    }
}

fn build_record(
    state: &FormState<'_>,
    passphrase: &str,
    token: &str,
    stored: Option<&ProvisioningRecord>,
) -> Option<ProvisioningRecord> {
    let token = if token.is_empty() {
        stored?.token.clone()
    } else {
        Token::new(token).ok()?
    };
    Some(ProvisioningRecord {
        wifi: Some(WifiCredentials {
            ssid: Ssid::new(state.ssid_value).ok()?,
            passphrase: Passphrase::new(passphrase).ok()?,
        }),
        server_url: ServerUrl::new(state.server_url_value).ok()?,
        device_id: DeviceId::new(state.device_id_value).ok()?,
        token,
        pairing_code: stored.and_then(|r| r.pairing_code.clone()),
    })
}

fn form_banner(error: FormError) -> &'static str {
    match error {
        FormError::BadPercentEncoding => {
            "The form data has a broken percent-encoding (a % not followed by two hex digits). Nothing was saved."
        }
        FormError::NotUtf8 => "The form data is not valid text (UTF-8). Nothing was saved.",
        FormError::TooLong => "The form data is too long. Nothing was saved.",
    }
}

/// One decoded form value (`None` when absent), or what is wrong with it.
fn field<'o>(
    raw: Option<&[u8]>,
    buf: &'o mut [u8],
    too_long: FieldError,
) -> (Option<&'o str>, Option<Problem>) {
    let Some(raw) = raw else {
        return (None, None);
    };
    match decode_into(raw, buf) {
        Ok(value) => (Some(value), None),
        Err(FormError::TooLong) => (None, Some(Problem::Field(too_long))),
        Err(e) => (None, Some(Problem::Form(e))),
    }
}

#[cfg(test)]
mod tests {
    extern crate alloc;

    use alloc::format;
    use alloc::string::String;

    use super::super::http::{Limits, Status, parse_request};
    use super::super::store::MemoryStore;
    use super::*;

    const HOST: &str = "192.168.4.1";

    fn portal() -> Portal<'static> {
        Portal::new(
            PortalConfig::new(HOST)
                .with_device_name("tether-4F2A")
                .with_pairing_code("K7-42")
                .with_default_server_url("wss://relay.example.com"),
        )
    }

    fn networks() -> [Network<'static>; 3] {
        [
            Network {
                ssid: "Home",
                rssi: -48,
                secured: true,
            },
            Network {
                ssid: "<script>alert(1)</script>",
                rssi: -80,
                secured: false,
            },
            Network {
                ssid: "Caf\u{e9} & \"Bar\"",
                rssi: -90,
                secured: true,
            },
        ]
    }

    fn run(raw: &[u8], store: &mut MemoryStore) -> (Handled, String) {
        let nets = networks();
        let view = PortalView::new(&nets, ConnectionStatus::WaitingForSettings);
        let mut out = [0u8; 16 * 1024];
        let handled = match parse_request(raw, &Limits::default()) {
            Ok(Status::Complete(r)) => portal().handle(&r, &view, store, &mut out),
            Ok(Status::Partial) => panic!("partial"),
            Err(e) => portal().reject(e, &mut out),
        }
        .unwrap();
        (
            handled,
            String::from_utf8(out[..handled.len].to_vec()).unwrap(),
        )
    }

    fn post(body: &str) -> String {
        format!(
            "POST /save HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    const GOOD: &str = "ssid=Home&other_ssid=&passphrase=correct+horse&pairing_code=k7-42\
                        &server_url=wss%3A%2F%2Frelay.example.com%2Fdevice&device_id=dev-1&token=t0k";

    #[test]
    fn form_page_lists_networks_escaped_and_is_small() {
        let mut store = MemoryStore::new();
        let (h, page) = run(b"GET / HTTP/1.1\r\nHost: 192.168.4.1\r\n\r\n", &mut store);
        assert_eq!(h.status, 200);
        assert!(page.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(page.contains("value=\"Home\""));
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!page.contains("<script>"));
        assert!(page.contains("Caf\u{e9} &amp; &quot;Bar&quot;"));
        assert!(page.contains("name=pairing_code"));
        assert!(page.contains("value=\"wss://relay.example.com\""));
        let body_len = page.split("\r\n\r\n").nth(1).unwrap().len();
        assert!(page.contains(&format!("Content-Length: {body_len}\r\n")));
        assert!(!page.contains("<script"), "no JavaScript");
    }

    #[test]
    fn page_stays_under_10_kb_with_a_full_scan() {
        let names: alloc::vec::Vec<String> = (0..40)
            .map(|i| format!("Neighbour network number {i:02} wxyz"))
            .collect();
        let nets: alloc::vec::Vec<Network<'_>> = names
            .iter()
            .map(|s| Network {
                ssid: s,
                rssi: -60,
                secured: true,
            })
            .collect();
        assert_eq!(nets[0].ssid.len(), 32);
        let view = PortalView::new(&nets, ConnectionStatus::WaitingForSettings);
        let raw = b"GET / HTTP/1.1\r\nHost: 192.168.4.1\r\n\r\n";
        let Ok(Status::Complete(r)) = parse_request(raw, &Limits::default()) else {
            panic!()
        };
        let mut out = [0u8; 16 * 1024];
        let h = portal()
            .handle(&r, &view, &mut MemoryStore::new(), &mut out)
            .unwrap();
        assert!(h.len < 10 * 1024, "portal page is {} bytes", h.len);
        // And the error-laden version of the form too.
        let mut store = MemoryStore::new();
        let (h, _) = run(
            post("ssid=&passphrase=short&server_url=http%3A%2F%2Fx&device_id=%20&token=")
                .as_bytes(),
            &mut store,
        );
        assert!(h.len < 10 * 1024);
    }

    #[test]
    fn valid_post_saves_and_redirects() {
        let mut store = MemoryStore::new();
        let (h, page) = run(post(GOOD).as_bytes(), &mut store);
        assert_eq!((h.status, h.saved), (303, true));
        assert!(page.contains("Location: http://192.168.4.1/status\r\n"));
        let record = store.load().unwrap().unwrap();
        let wifi = record.wifi.unwrap();
        assert_eq!(
            (wifi.ssid.as_str(), wifi.passphrase.as_str()),
            ("Home", "correct horse")
        );
        assert_eq!(record.server_url.as_str(), "wss://relay.example.com/device");
        assert_eq!(record.device_id.as_str(), "dev-1");
        assert_eq!(record.token.as_str(), "t0k");
    }

    #[test]
    fn typed_network_name_wins_and_stored_token_is_kept() {
        let mut store = MemoryStore::new();
        let factory = ProvisioningRecord::new("ws://10.0.0.1:8080", "dev-9", "factory-token")
            .and_then(|r| r.with_pairing_code("ZZ-99"))
            .unwrap();
        store.save(&factory).unwrap();
        // The config's pairing code (K7-42) takes precedence over the stored one.
        let body = "ssid=Home&other_ssid=Hidden+Net&passphrase=&pairing_code=K7-42\
                    &server_url=ws%3A%2F%2F10.0.0.1%3A8080&device_id=dev-9&token=";
        let (h, _) = run(post(body).as_bytes(), &mut store);
        assert!(h.saved);
        let record = store.load().unwrap().unwrap();
        let wifi = record.wifi.unwrap();
        assert_eq!(wifi.ssid.as_str(), "Hidden Net");
        assert!(wifi.passphrase.is_open());
        assert_eq!(record.token.as_str(), "factory-token");
        assert_eq!(record.pairing_code.unwrap().as_str(), "ZZ-99");
    }

    #[test]
    fn every_bad_input_gets_a_message_and_saves_nothing() {
        let cases: [(String, u16, &str, &str); 8] = [
            (
                post(&GOOD.replace("ssid=Home", &format!("ssid={}", "x".repeat(33)))),
                422,
                "err-ssid",
                "at most 32 bytes",
            ),
            (
                post(&GOOD.replace("ssid=Home", "ssid=")),
                422,
                "err-ssid",
                "Choose a network",
            ),
            (
                post(&GOOD.replace("correct+horse", "short")),
                422,
                "err-passphrase",
                "at least 8 characters",
            ),
            (
                post(&GOOD.replace("wss%3A%2F%2F", "http%3A%2F%2F")),
                422,
                "err-server_url",
                "ws:// or wss://",
            ),
            (
                post(&GOOD.replace("k7-42", "k7-43")),
                403,
                "err-pairing_code",
                "does not match",
            ),
            (
                post(&GOOD.replace("&pairing_code=k7-42", "")),
                403,
                "err-pairing_code",
                "pairing code printed",
            ),
            (
                post(&GOOD.replace("correct+horse", "bad%zzpercent")),
                400,
                "banner",
                "broken percent-encoding",
            ),
            (
                format!("POST /save HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5000\r\n\r\n"),
                413,
                "banner",
                "too large",
            ),
        ];
        let mut store = MemoryStore::new();
        for (raw, status, id, text) in cases {
            let (h, page) = run(raw.as_bytes(), &mut store);
            assert_eq!(h.status, status, "{raw}");
            assert!(!h.saved);
            assert!(page.contains(&format!("id={id}")), "{id} missing in {page}");
            assert!(page.contains(text), "{text:?} missing in {page}");
            assert_eq!(store.load(), Ok(None), "nothing saved");
            assert_eq!(store.saves(), 0);
        }
        // Sticky values come back escaped; secrets never do.
        let (_, page) = run(
            post(&GOOD.replace("k7-42", "nope").replace("dev-1", "d%22x")).as_bytes(),
            &mut store,
        );
        assert!(page.contains("value=\"Home\" checked"));
        assert!(!page.contains("correct horse"));
        assert!(page.contains("err-device_id"));
        // The portal keeps serving.
        let (h, _) = run(post(GOOD).as_bytes(), &mut store);
        assert!(h.saved);
    }

    #[test]
    fn wrong_pairing_codes_lock_the_form_for_a_while() {
        let nets = networks();
        let mut store = MemoryStore::new();
        let mut guard = PairingGuard::new();
        let mut out = [0u8; 16 * 1024];
        let mut submit =
            |body: &str, now: u64, guard: &mut PairingGuard, store: &mut MemoryStore| {
                let raw = post(body);
                let Ok(Status::Complete(r)) = parse_request(raw.as_bytes(), &Limits::default())
                else {
                    panic!()
                };
                let view = PortalView::new(&nets, ConnectionStatus::WaitingForSettings)
                    .with_pairing_locked(guard.is_locked(now));
                let h = portal().handle(&r, &view, store, &mut out).unwrap();
                guard.observe(now, &h);
                (h, String::from_utf8(out[..h.len].to_vec()).unwrap())
            };
        let wrong = GOOD.replace("k7-42", "guess");
        for i in 0..PairingGuard::MAX_FAILURES {
            let (h, _) = submit(&wrong, u64::from(i), &mut guard, &mut store);
            assert_eq!((h.status, h.pairing_rejected), (403, true));
        }
        // Locked: even the right code is refused, and nothing is looked at.
        let (h, page) = submit(GOOD, 10, &mut guard, &mut store);
        assert_eq!((h.status, h.saved), (429, false));
        assert!(page.contains("Too many wrong pairing codes"));
        assert_eq!(store.saves(), 0);
        // A minute later the right code works and resets the count.
        let (h, _) = submit(GOOD, 61_000, &mut guard, &mut store);
        assert!(h.saved);
        assert_eq!(guard, PairingGuard::new());
        // Locks grow: the second lock after the first lasts two minutes.
        let mut guard = PairingGuard::new();
        for _ in 0..=PairingGuard::MAX_FAILURES {
            guard.pairing_rejected(0);
        }
        assert!(guard.is_locked(119_999));
        assert!(!guard.is_locked(120_000));
    }

    #[test]
    fn probes_and_foreign_hosts_redirect_to_the_portal() {
        let mut store = MemoryStore::new();
        for path in PROBE_PATHS {
            let raw = format!("GET {path} HTTP/1.1\r\nHost: connectivitycheck.gstatic.com\r\n\r\n");
            let (h, page) = run(raw.as_bytes(), &mut store);
            assert_eq!(h.status, 302, "{path}");
            assert!(page.contains("Location: http://192.168.4.1/\r\n"));
        }
        let (h, _) = run(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", &mut store);
        assert_eq!(h.status, 302);
        let (h, _) = run(
            b"GET /favicon.ico HTTP/1.1\r\nHost: 192.168.4.1\r\n\r\n",
            &mut store,
        );
        assert_eq!(h.status, 302);
        let (h, page) = run(b"HEAD / HTTP/1.1\r\nHost: 192.168.4.1\r\n\r\n", &mut store);
        assert_eq!(h.status, 200);
        assert!(page.ends_with("\r\n\r\n"));
        let (h, page) = run(b"PUT / HTTP/1.1\r\nHost: 192.168.4.1\r\n\r\n", &mut store);
        assert_eq!(h.status, 405);
        assert!(page.contains("Allow: GET, HEAD, POST\r\n"));
        assert!(page.contains("Only GET and POST"));
    }

    #[test]
    fn status_page_follows_the_connection() {
        let nets = networks();
        let raw = b"GET /status HTTP/1.1\r\nHost: 192.168.4.1\r\n\r\n";
        let Ok(Status::Complete(r)) = parse_request(raw, &Limits::default()) else {
            panic!()
        };
        let mut out = [0u8; 4096];
        for (status, text, refresh) in [
            (ConnectionStatus::JoiningWifi, "Joining the Wi-Fi", true),
            (ConnectionStatus::WifiFailed, "Check the password", false),
            (ConnectionStatus::Connected, "reached the server", false),
        ] {
            let view = PortalView::new(&nets, status);
            let h = portal()
                .handle(&r, &view, &mut MemoryStore::new(), &mut out)
                .unwrap();
            let page = core::str::from_utf8(&out[..h.len]).unwrap();
            assert!(page.contains(text));
            assert_eq!(page.contains("http-equiv=refresh"), refresh);
        }
    }

    #[test]
    fn small_output_buffer_is_an_error_not_a_panic() {
        let raw = b"GET / HTTP/1.1\r\nHost: 192.168.4.1\r\n\r\n";
        let Ok(Status::Complete(r)) = parse_request(raw, &Limits::default()) else {
            panic!()
        };
        let nets = networks();
        let view = PortalView::new(&nets, ConnectionStatus::WaitingForSettings);
        for size in [0, 10, 100, 1000] {
            let mut out = alloc::vec![0u8; size];
            assert_eq!(
                portal().handle(&r, &view, &mut MemoryStore::new(), &mut out),
                Err(PortalError::ResponseTooLarge)
            );
        }
    }

    #[test]
    fn escaping() {
        assert_eq!(
            format!("{}", Escaped("a<b>&\"c'")),
            "a&lt;b&gt;&amp;&quot;c&#39;"
        );
        assert_eq!(format!("{}", Escaped("plain \u{e9}")), "plain \u{e9}");
    }
}
