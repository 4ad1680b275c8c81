//! A simulated ESP8266 running ESP-AT 2.2, for tests: it speaks the AT
//! command set over a byte stream (an in-memory pipe or a pseudo-terminal)
//! the way the ESP-AT User Guide (release v2.2.0.0_esp8266) documents it,
//! and its links are real loopback sockets.
//!
//! ```text
//!  driver under test ──serial bytes──► Simulator task ──► TCP links: tokio TcpStream
//!     (tether-esp8266)   ◄──chunks of         │            SSL links: tokio-rustls, trusting the
//!                          random size (seeded)            CA flashed in its `client_ca` image
//!                                             ├──► SoftAP: a TcpListener (AT+CIPSERVER) and
//!                                             │    UDP sockets (AT+CIPSTART "UDP") on loopback
//!  test ──SimHandle──► faults on demand: busy storms, SEND FAIL, CLOSED, link cut mid-frame,
//!                      WIFI DISCONNECT, reset (`ready`), silence, hang until the reset pin
//! ```
//!
//! Faithful where the driver depends on it:
//! - passive receive mode: data waits in a per-link window of 5760 bytes
//!   (TCP backpressure beyond), `+IPD,<id>,<len>` is reported once and not
//!   again until the host read, `CLOSED` only after the data was read;
//! - SSL links (TLS 1.2, as the ESP8266's mbedTLS) report encrypted
//!   lengths in `+IPD` and `AT+CIPRECVLEN?` (the TLS records waiting, 29
//!   bytes per record more than the data), `AT+CIPRECVDATA` hands out the
//!   decrypted data and refuses (`ERROR`) once none is left;
//! - `busy p...` to every command line that arrives while a slow command
//!   (`AT+CWJAP`, `AT+CIPSTART`, `AT+CWLAP`, `AT+RST`) runs;
//! - `ERR CODE:0x...` before `ERROR` once `AT+SYSLOG=1`;
//! - a reset forgets every volatile setting (echo back on, `AT+CIPMUX=0`,
//!   active receive, `AT+CIPDINFO=0`) and every link, prints boot noise and
//!   `ready`, and rejoins the saved network on its own;
//! - `AT+CIPSSLSIZE` is refused as ESP-AT 2.x refuses it (a NONOS-AT command).
#![allow(
    clippy::std_instead_of_core,
    clippy::std_instead_of_alloc,
    reason = "test support on std"
)]

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The socket receive window of an ESP8266 in passive mode.
pub const WINDOW: usize = 5760;

/// A network the simulated radio can see.
#[derive(Debug, Clone)]
pub struct Network {
    /// Its name.
    pub ssid: String,
    /// Its passphrase ("" for an open network).
    pub password: String,
    /// Signal strength, dBm.
    pub rssi: i8,
}

/// Settings of a simulated modem.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seeds the chunking of the output and the delays.
    pub seed: u64,
    /// Networks in range.
    pub networks: Vec<Network>,
    /// Host names the modem's DNS knows (everything resolves to loopback
    /// here); IP literals and `localhost` always resolve.
    pub hosts: Vec<String>,
    /// The `client_ca` partition image (ESP-AT PKI format).
    pub client_ca: Option<Vec<u8>>,
    /// Largest chunk of output written at once (1: byte by byte).
    pub max_chunk: usize,
    /// How long `AT+CWJAP` takes.
    pub join_delay: Duration,
    /// The SNTP time it reports once configured (seconds since the epoch).
    pub sntp_time: u64,
    /// A pause before each piece of output (an answer, a report) is
    /// written, as a busy modem or a loaded machine makes: a driver that
    /// takes part of what the modem says for all of it meets the rest
    /// later, every time instead of once in a while.
    pub output_gap: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            networks: Vec::new(),
            hosts: Vec::new(),
            client_ca: None,
            max_chunk: 64,
            join_delay: Duration::from_millis(150),
            sntp_time: 1_764_000_000,
            output_gap: Duration::ZERO,
        }
    }
}

impl SimConfig {
    /// Default settings with `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            ..Self::default()
        }
    }

    /// Adds a network in range.
    #[must_use]
    pub fn with_network(mut self, ssid: &str, password: &str, rssi: i8) -> Self {
        self.networks.push(Network {
            ssid: ssid.to_owned(),
            password: password.to_owned(),
            rssi,
        });
        self
    }

    /// Adds a host name its DNS resolves (to 127.0.0.1).
    #[must_use]
    pub fn with_host(mut self, host: &str) -> Self {
        self.hosts.push(host.to_owned());
        self
    }

    /// Flashes a `client_ca` image.
    #[must_use]
    pub fn with_client_ca(mut self, image: Vec<u8>) -> Self {
        self.client_ca = Some(image);
        self
    }

    /// Sets [`max_chunk`](Self::max_chunk).
    #[must_use]
    pub fn with_max_chunk(mut self, bytes: usize) -> Self {
        self.max_chunk = bytes.max(1);
        self
    }

    /// Sets [`output_gap`](Self::output_gap).
    #[must_use]
    pub fn with_output_gap(mut self, gap: Duration) -> Self {
        self.output_gap = gap;
        self
    }
}

/// A fault to inject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The next `n` command lines are answered `busy p...`.
    BusyStorm(u32),
    /// The next `AT+CIPSEND` takes its data and answers `SEND FAIL`.
    SendFail,
    /// The peer of `link` closes it.
    CloseLink(u8),
    /// The next `AT+CIPSEND` on the link delivers only its first `n`
    /// bytes, answers `SEND OK`, then the connection drops.
    CutNextSend(usize),
    /// The access point drops the station (`WIFI DISCONNECT`, every link
    /// `CLOSED`); it rejoins on its own after a second.
    WifiDisconnect,
    /// The modem restarts by itself (`ready`).
    Reset,
    /// The modem ignores everything for this long.
    Silent(Duration),
    /// The modem ignores everything until its reset pin is pulsed.
    Hang,
    /// The next `n` command lines never reach the modem (a loose or noisy
    /// RX wire): no answer, no echo, no `busy p...`; what follows is
    /// heard again.
    LoseLines(u32),
    /// The modem's next piece of output (and so everything behind it)
    /// comes this much later: the pause of
    /// [`output_gap`](SimConfig::output_gap), once. A stall longer than
    /// the driver's command timeout makes a late answer.
    Stall(Duration),
    /// The reset pin was pulsed.
    HardwareReset,
    /// A network appears or disappears.
    SetNetworkPresent(String, bool),
    /// A network's access point stays in the scan but stops answering
    /// (`false`) or answers again (`true`): a join times out
    /// (`+CWJAP:1`).
    SetNetworkAnswering(String, bool),
}

/// What the simulator observed, for assertions.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Every command line received (`AT+NAME` part only, no parameters).
    pub commands: Vec<String>,
    /// `ready` printed.
    pub resets: u32,
    /// `busy p...` printed.
    pub busy: u32,
    /// `SEND FAIL` printed.
    pub send_failures: u32,
    /// Bytes the host sent through `AT+CIPSEND`.
    pub bytes_sent: usize,
    /// Bytes the host read through `AT+CIPRECVDATA`.
    pub bytes_received: usize,
    /// The SoftAP's listeners: modem port → loopback address.
    pub ap_addrs: HashMap<u16, SocketAddr>,
    /// SSL links opened, with the name verified (None: no verification).
    pub ssl_links: Vec<Option<String>>,
    /// Joins attempted (SSID).
    pub joins: Vec<String>,
    /// The length of every `+IPD` notice (SSL links: encrypted lengths).
    pub ipd_lengths: Vec<usize>,
    /// `AT+CIPRECVDATA` on an SSL link with no data left, refused.
    pub ssl_reads_refused: u32,
}

/// The test's side of a running simulator.
#[derive(Debug, Clone)]
pub struct SimHandle {
    control: mpsc::UnboundedSender<Internal>,
    observed: Arc<Mutex<Observed>>,
}

impl SimHandle {
    /// Injects `fault`. It takes effect soon, in no fixed order with
    /// bytes the driver is sending; [`apply`](Self::apply) waits for it.
    pub fn inject(&self, fault: Fault) {
        let _ = self.control.send(Internal::Fault(fault));
    }

    /// Injects `fault` and returns once the modem has taken it in: every
    /// byte the driver sends afterwards meets the fault.
    pub async fn apply(&self, fault: Fault) {
        let (done, applied) = tokio::sync::oneshot::channel();
        if self.control.send(Internal::Applied(fault, done)).is_ok() {
            let _ = applied.await;
        }
    }

    /// A copy of what was observed so far.
    #[must_use]
    pub fn observed(&self) -> Observed {
        lock(&self.observed).clone()
    }

    /// The loopback address behind the SoftAP's `port`, once it listens.
    pub async fn ap_addr(&self, port: u16) -> Option<SocketAddr> {
        for _ in 0..500 {
            if let Some(addr) = lock(&self.observed).ap_addrs.get(&port) {
                return Some(*addr);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }

    /// A reset pin for the driver (`embedded_hal::digital::OutputPin`
    /// implementors wrap this): a falling then rising edge resets.
    #[must_use]
    pub fn reset_line(&self) -> ResetLine {
        ResetLine {
            control: self.control.clone(),
            low: false,
        }
    }
}

/// The modem's `RST` input.
#[derive(Debug, Clone)]
pub struct ResetLine {
    control: mpsc::UnboundedSender<Internal>,
    low: bool,
}

impl ResetLine {
    /// Drives the line: low holds the modem in reset, the rising edge
    /// restarts it.
    pub fn set(&mut self, high: bool) {
        if high && self.low {
            let _ = self.control.send(Internal::Fault(Fault::HardwareReset));
        }
        self.low = !high;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts a simulated modem on `serial` (the modem's end of the UART) in
/// the current tokio runtime.
pub fn spawn<IO>(config: SimConfig, serial: IO) -> SimHandle
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (control, internal) = mpsc::unbounded_channel();
    let observed = Arc::new(Mutex::new(Observed::default()));
    let (reader, writer) = tokio::io::split(serial);
    let (out_tx, out_rx) = mpsc::unbounded_channel::<Piece>();
    let rng = StdRng::seed_from_u64(config.seed);
    tokio::spawn(write_chunks(
        writer,
        out_rx,
        config.max_chunk,
        config.output_gap,
        config.seed ^ 0x5eed,
    ));
    let modem = Modem {
        config,
        rng,
        out: out_tx,
        internal: control.clone(),
        observed: Arc::clone(&observed),
        settings: Settings::default(),
        station: Station::default(),
        saved: None,
        ap: None,
        links: Default::default(),
        generation: 0,
        server: None,
        server_max: 5,
        ssl: Default::default(),
        sntp: false,
        input: Vec::new(),
        sending: None,
        processing: false,
        busy_storm: 0,
        send_fail_next: false,
        cut_next: None,
        silent_until: None,
        hung: false,
        absent: Vec::new(),
        mute: Vec::new(),
        lose_lines: 0,
        stall_next: None,
    };
    tokio::spawn(modem.run(reader, internal));
    SimHandle { control, observed }
}

/// A piece of the modem's output and the extra pause before it
/// ([`Fault::Stall`]).
#[derive(Debug)]
struct Piece {
    stall: Option<Duration>,
    bytes: Vec<u8>,
}

/// Writes the modem's output in chunks of random size, so the driver sees
/// lines, `+IPD` notices and payloads split anywhere, each piece of output
/// after `gap` (and its own stall).
async fn write_chunks<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut out: mpsc::UnboundedReceiver<Piece>,
    max_chunk: usize,
    gap: Duration,
    seed: u64,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    while let Some(Piece { stall, bytes }) = out.recv().await {
        let pause = gap + stall.unwrap_or_default();
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        let mut rest = bytes.as_slice();
        while !rest.is_empty() {
            let n = rng.random_range(1..=max_chunk.max(1)).min(rest.len());
            let (chunk, tail) = rest.split_at(n);
            if writer.write_all(chunk).await.is_err() || writer.flush().await.is_err() {
                return;
            }
            rest = tail;
            if rng.random_bool(0.3) {
                tokio::task::yield_now().await;
            }
        }
    }
}

#[derive(Debug)]
enum Internal {
    Fault(Fault),
    /// A fault and who waits for it to take effect.
    Applied(Fault, tokio::sync::oneshot::Sender<()>),
    Data {
        id: u8,
        generation: u64,
        bytes: Vec<u8>,
        /// SSL links: the TLS record bytes they were decrypted from.
        wire: Option<usize>,
    },
    Datagram {
        id: u8,
        generation: u64,
        bytes: Vec<u8>,
        from: SocketAddr,
    },
    RemoteClosed {
        id: u8,
        generation: u64,
    },
    Accepted(TcpStream, SocketAddr),
    Connected {
        id: u8,
        result: Result<Stream, String>,
        ssl: Option<Option<String>>,
    },
    JoinDone {
        result: Result<(String, String), u8>,
    },
    ScanDone(Vec<u8>),
    ResetDone,
    Rejoin,
}

enum Stream {
    Tcp(TcpStream),
    Tls(
        Box<tokio_rustls::client::TlsStream<Counted>>,
        Arc<AtomicUsize>,
    ),
    Udp(UdpSocket),
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Tcp(_) => "Tcp",
            Self::Tls(..) => "Tls",
            Self::Udp(_) => "Udp",
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    echo: bool,
    syslog: bool,
    mux: bool,
    passive: bool,
    dinfo: bool,
    mode: u8,
    /// `AT+CIPRECONNINTV` (passthrough mode's reconnect interval, in
    /// 100 ms; the driver uses it only to tag its resynchronisation).
    reconnect_interval: u16,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            echo: true,
            syslog: false,
            mux: false,
            passive: false,
            dinfo: false,
            mode: 1,
            reconnect_interval: 1,
        }
    }
}

#[derive(Debug, Default)]
struct Station {
    connected: bool,
}

#[derive(Debug, Clone, Default)]
struct SslConf {
    auth: u8,
    common_name: Option<String>,
    sni: Option<String>,
}

enum WriteOp {
    Bytes(Vec<u8>),
    To(Vec<u8>, SocketAddr),
    Shutdown,
}

struct Link {
    generation: u64,
    udp: bool,
    tls: bool,
    writer: mpsc::UnboundedSender<WriteOp>,
    buffer: VecDeque<u8>,
    /// SSL links: the TLS records behind `buffer`, oldest first.
    records: VecDeque<Record>,
    datagrams: VecDeque<(Vec<u8>, SocketAddr)>,
    window: Arc<Semaphore>,
    ipd_reported: bool,
    remote_closed: bool,
    tasks: Vec<JoinHandle<()>>,
}

/// Data of an SSL link as it came off the wire: `plain` bytes of it are
/// still unread, decrypted from `wire` bytes of TLS records.
#[derive(Debug, Clone, Copy)]
struct Record {
    plain: usize,
    wire: usize,
    /// The host read part of it (mbedTLS holds the rest, decrypted).
    opened: bool,
}

impl Link {
    /// Bytes of data buffered (what `AT+CIPRECVDATA` can hand out).
    fn buffered(&self) -> usize {
        if self.udp {
            self.datagrams.iter().map(|(d, _)| d.len()).sum()
        } else {
            self.buffer.len()
        }
    }

    /// The length `+IPD` and `AT+CIPRECVLEN?` report. ESP-AT counts an SSL
    /// link's bytes as they wait in its socket, encrypted: 29 bytes more
    /// per TLS 1.2 AES-GCM record than the data (esp-at issues #589, #655,
    /// #729); the rest of a record the host already opened counts as data.
    fn reported(&self) -> usize {
        if self.records.is_empty() {
            return self.buffered();
        }
        self.records
            .iter()
            .map(|r| {
                if r.opened {
                    r.plain
                } else {
                    r.wire.max(r.plain)
                }
            })
            .sum()
    }

    /// Takes up to `len` bytes of data off the front.
    fn take(&mut self, len: usize) -> Vec<u8> {
        let n = len.min(self.buffer.len());
        let data: Vec<u8> = self.buffer.drain(..n).collect();
        self.window.add_permits(n);
        let mut left = n;
        while left > 0 {
            let Some(front) = self.records.front_mut() else {
                break;
            };
            if left >= front.plain {
                left -= front.plain;
                self.records.pop_front();
            } else {
                front.plain -= left;
                front.opened = true;
                left = 0;
            }
        }
        data
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

struct SendState {
    id: u8,
    len: usize,
    remote: Option<SocketAddr>,
    data: Vec<u8>,
}

struct Modem {
    config: SimConfig,
    rng: StdRng,
    out: mpsc::UnboundedSender<Piece>,
    internal: mpsc::UnboundedSender<Internal>,
    observed: Arc<Mutex<Observed>>,
    settings: Settings,
    station: Station,
    saved: Option<(String, String)>,
    ap: Option<String>,
    links: [Option<Link>; 5],
    generation: u64,
    server: Option<JoinHandle<()>>,
    server_max: usize,
    ssl: [SslConf; 5],
    sntp: bool,
    input: Vec<u8>,
    sending: Option<SendState>,
    processing: bool,
    busy_storm: u32,
    send_fail_next: bool,
    cut_next: Option<usize>,
    silent_until: Option<tokio::time::Instant>,
    hung: bool,
    absent: Vec<String>,
    /// Networks in range whose access point does not answer a join.
    mute: Vec<String>,
    /// Command lines still to lose ([`Fault::LoseLines`]).
    lose_lines: u32,
    /// The pause before the next piece of output ([`Fault::Stall`]).
    stall_next: Option<Duration>,
}

impl Modem {
    async fn run<R: AsyncRead + Unpin>(
        mut self,
        mut serial: R,
        mut internal: mpsc::UnboundedReceiver<Internal>,
    ) {
        // Power-on: boot noise and `ready`.
        self.emit(b"\x00\xe0\x10 ets Jan  8 2013,rst cause:1, boot mode:(3,6)\r\n\r\nready\r\n");
        lock(&self.observed).resets += 1;
        let mut buf = [0u8; 512];
        loop {
            tokio::select! {
                read = serial.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        let bytes = buf.get(..n).unwrap_or_default().to_vec();
                        self.input_bytes(&bytes);
                    }
                },
                event = internal.recv() => match event {
                    Some(event) => self.internal_event(event),
                    None => return,
                },
            }
        }
    }

    fn silent(&mut self) -> bool {
        if self.hung {
            return true;
        }
        match self.silent_until {
            Some(until) if tokio::time::Instant::now() < until => true,
            Some(_) => {
                self.silent_until = None;
                false
            }
            None => false,
        }
    }

    fn emit(&mut self, bytes: &[u8]) {
        if self.silent() {
            return;
        }
        let _ = self.out.send(Piece {
            stall: self.stall_next.take(),
            bytes: bytes.to_vec(),
        });
    }

    fn ok(&mut self) {
        self.emit(b"\r\nOK\r\n");
    }

    fn error(&mut self, subcategory: u8) {
        if self.settings.syslog {
            let code = 0x0100_0000u32 | (u32::from(subcategory) << 16);
            self.emit(format!("ERR CODE:0x{code:08x}\r\n").as_bytes());
        }
        self.emit(b"\r\nERROR\r\n");
    }

    fn observe(&self, f: impl FnOnce(&mut Observed)) {
        f(&mut lock(&self.observed));
    }

    fn input_bytes(&mut self, mut bytes: &[u8]) {
        if self.silent() {
            return; // A hung modem hears nothing.
        }
        while !bytes.is_empty() {
            if let Some(send) = &mut self.sending {
                let n = (send.len - send.data.len()).min(bytes.len());
                send.data
                    .extend_from_slice(bytes.get(..n).unwrap_or_default());
                bytes = bytes.get(n..).unwrap_or_default();
                if send.data.len() == send.len
                    && let Some(send) = self.sending.take()
                {
                    self.finish_send(send);
                }
                continue;
            }
            let Some(position) = bytes.iter().position(|&b| b == b'\n') else {
                self.input.extend_from_slice(bytes);
                if self.input.len() > 4096 {
                    self.input.clear();
                }
                return;
            };
            self.input
                .extend_from_slice(bytes.get(..=position).unwrap_or_default());
            bytes = bytes.get(position + 1..).unwrap_or_default();
            let line = std::mem::take(&mut self.input);
            self.command_line(&line);
        }
    }

    fn command_line(&mut self, raw: &[u8]) {
        if self.lose_lines > 0 {
            self.lose_lines -= 1;
            return;
        }
        if self.settings.echo {
            self.emit(raw);
        }
        let Some(line) = raw.strip_suffix(b"\r\n") else {
            self.error(0x02); // ESP_AT_SUB_NO_TERMINATOR
            return;
        };
        if line.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(line).into_owned();
        let name = text.split(['=', '?']).next().unwrap_or("").to_owned();
        self.observe(|o| o.commands.push(name.clone()));
        if self.processing || self.busy_storm > 0 {
            self.busy_storm = self.busy_storm.saturating_sub(1);
            self.observe(|o| o.busy += 1);
            self.emit(b"busy p...\r\n");
            return;
        }
        if !text.starts_with("AT") {
            self.error(0x03);
            return;
        }
        let (head, params) = match text.split_once('=') {
            Some((head, params)) => (head, Some(params)),
            None => (text.as_str(), None),
        };
        let query = head.ends_with('?');
        let head = head.trim_end_matches('?');
        let params = params.map(split_params);
        self.execute(head, query, params);
    }

    #[allow(clippy::too_many_lines, reason = "one arm per AT command")]
    fn execute(&mut self, head: &str, query: bool, params: Option<Vec<Param>>) {
        let p = params.unwrap_or_default();
        match (head, query) {
            ("AT", false) => self.ok(),
            ("ATE0", false) => {
                self.settings.echo = false;
                self.ok();
            }
            ("ATE1", false) => {
                self.settings.echo = true;
                self.ok();
            }
            ("AT+GMR", false) => {
                self.emit(b"AT version:2.2.1.0(simulated)\r\nSDK version:v3.4-22-g967752e2\r\nBin version:2.2.1(WROOM-02)\r\n");
                self.ok();
            }
            ("AT+RST", false) => {
                self.ok();
                self.processing = true;
                let internal = self.internal.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let _ = internal.send(Internal::ResetDone);
                });
            }
            ("AT+SYSLOG", false) => match int(&p, 0) {
                Some(v @ 0..=1) => {
                    self.settings.syslog = v == 1;
                    self.ok();
                }
                _ => self.error(0x07),
            },
            ("AT+CIPMUX", false) => match int(&p, 0) {
                Some(v @ 0..=1) => {
                    if self.links.iter().any(Option::is_some) || self.server.is_some() {
                        self.error(0x0c);
                    } else {
                        self.settings.mux = v == 1;
                        self.ok();
                    }
                }
                _ => self.error(0x07),
            },
            ("AT+CIPRECVMODE", false) => match int(&p, 0) {
                Some(v @ 0..=1) => {
                    self.settings.passive = v == 1;
                    self.ok();
                }
                _ => self.error(0x07),
            },
            ("AT+CIPDINFO", false) => match int(&p, 0) {
                Some(v @ 0..=1) => {
                    self.settings.dinfo = v == 1;
                    self.ok();
                }
                _ => self.error(0x07),
            },
            ("AT+CWMODE", true) => {
                let mode = self.settings.mode;
                self.emit(format!("+CWMODE:{mode}\r\n").as_bytes());
                self.ok();
            }
            ("AT+CWMODE", false) => match int(&p, 0) {
                Some(v @ 0..=3) => {
                    self.settings.mode = u8::try_from(v).unwrap_or(1);
                    if v & 2 == 0 {
                        self.stop_ap();
                    }
                    if v & 1 == 0 && self.station.connected {
                        self.station.connected = false;
                        self.emit(b"WIFI DISCONNECT\r\n");
                    }
                    self.ok();
                }
                _ => self.error(0x07),
            },
            ("AT+CWJAP", false) => {
                let (Some(ssid), Some(password)) = (string(&p, 0), string(&p, 1)) else {
                    self.error(0x06);
                    return;
                };
                if self.settings.mode & 1 == 0 {
                    self.error(0x0c);
                    return;
                }
                self.observe(|o| o.joins.push(ssid.clone()));
                if self.station.connected {
                    self.station.connected = false;
                    self.emit(b"WIFI DISCONNECT\r\n");
                }
                self.processing = true;
                let network = self.visible(&ssid).cloned();
                let mute = self.mute.contains(&ssid);
                let delay = self.config.join_delay;
                let internal = self.internal.clone();
                tokio::spawn(async move {
                    let result = match network {
                        None => {
                            tokio::time::sleep(delay * 3).await;
                            Err(3)
                        }
                        Some(_) if mute => {
                            // The station gives up on an access point
                            // that does not answer its authentication.
                            tokio::time::sleep(delay * 4).await;
                            Err(1)
                        }
                        Some(n) if n.password != password => {
                            tokio::time::sleep(delay * 2).await;
                            Err(2)
                        }
                        Some(_) => {
                            tokio::time::sleep(delay).await;
                            Ok((ssid, password))
                        }
                    };
                    let _ = internal.send(Internal::JoinDone { result });
                });
            }
            ("AT+CWQAP", false) => {
                if self.station.connected {
                    self.station.connected = false;
                    self.emit(b"WIFI DISCONNECT\r\n");
                }
                self.ok();
            }
            ("AT+CWLAP", false) => {
                self.processing = true;
                let mut lines = Vec::new();
                let networks: Vec<Network> = self
                    .config
                    .networks
                    .iter()
                    .filter(|n| !self.absent.contains(&n.ssid))
                    .cloned()
                    .collect();
                for n in networks {
                    let ecn = if n.password.is_empty() { 0 } else { 3 };
                    let ssid = escape(&n.ssid);
                    lines.extend_from_slice(
                        format!(
                            "+CWLAP:({ecn},\"{ssid}\",{},\"18:fe:34:00:00:01\",6,-1,-1,4,4,7,0)\r\n",
                            n.rssi
                        )
                        .as_bytes(),
                    );
                }
                let internal = self.internal.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let _ = internal.send(Internal::ScanDone(lines));
                });
            }
            ("AT+CWSAP", false) => {
                if self.settings.mode & 2 == 0 {
                    self.error(0x0c);
                    return;
                }
                match (string(&p, 0), string(&p, 1), int(&p, 2), int(&p, 3)) {
                    (Some(ssid), Some(password), Some(_), Some(ecn))
                        if (ecn == 0 || password.len() >= 8) && !ssid.is_empty() =>
                    {
                        self.ap = Some(ssid);
                        self.ok();
                    }
                    _ => self.error(0x07),
                }
            }
            ("AT+CIPAP", true) => {
                self.emit(b"+CIPAP:ip:\"192.168.4.1\"\r\n+CIPAP:gateway:\"192.168.4.1\"\r\n+CIPAP:netmask:\"255.255.255.0\"\r\n");
                self.ok();
            }
            ("AT+CIPSERVERMAXCONN", false) => match int(&p, 0) {
                Some(v @ 1..=5) if self.server.is_none() => {
                    self.server_max = usize::try_from(v).unwrap_or(5);
                    self.ok();
                }
                _ => self.error(0x07),
            },
            ("AT+CIPSERVER", false) => self.cipserver(&p),
            ("AT+CIPSTART", false) => self.cipstart(&p),
            ("AT+CIPCLOSE", false) => match int(&p, 0) {
                Some(5) => {
                    for id in 0..5u8 {
                        self.close(id, true);
                    }
                    self.ok();
                }
                Some(id @ 0..=4) => {
                    let id = u8::try_from(id).unwrap_or(0);
                    if self.links.get(usize::from(id)).is_some_and(Option::is_some) {
                        self.close(id, true);
                        self.ok();
                    } else {
                        self.error(0x0a);
                    }
                }
                _ => self.error(0x07),
            },
            ("AT+CIPSEND", false) => self.cipsend(&p),
            ("AT+CIPRECVDATA", false) => self.ciprecvdata(&p),
            ("AT+CIPRECVLEN", true) => {
                let lengths: Vec<String> = self
                    .links
                    .iter()
                    .map(|l| {
                        l.as_ref()
                            .map_or_else(|| "-1".to_owned(), |l| l.reported().to_string())
                    })
                    .collect();
                self.emit(format!("+CIPRECVLEN:{}\r\n", lengths.join(",")).as_bytes());
                self.ok();
            }
            ("AT+CIPSSLCCONF", false) => match (int(&p, 0), int(&p, 1)) {
                (Some(id @ 0..=4), Some(auth @ 0..=3)) => {
                    if auth >= 2 && self.config.client_ca.is_none() {
                        self.emit(b"NO CA FOUND\r\n");
                    }
                    if let Some(conf) = self.ssl.get_mut(usize::try_from(id).unwrap_or(0)) {
                        conf.auth = u8::try_from(auth).unwrap_or(0);
                    }
                    self.ok();
                }
                _ => self.error(0x07),
            },
            ("AT+CIPSSLCCN", false) => match (int(&p, 0), string(&p, 1)) {
                (Some(id @ 0..=4), Some(name)) if name.len() <= 64 => {
                    if let Some(conf) = self.ssl.get_mut(usize::try_from(id).unwrap_or(0)) {
                        conf.common_name = Some(name);
                    }
                    self.ok();
                }
                _ => self.error(0x07),
            },
            ("AT+CIPSSLCSNI", false) => match (int(&p, 0), string(&p, 1)) {
                (Some(id @ 0..=4), Some(name)) if name.len() <= 64 => {
                    if let Some(conf) = self.ssl.get_mut(usize::try_from(id).unwrap_or(0)) {
                        conf.sni = Some(name);
                    }
                    self.ok();
                }
                _ => self.error(0x07),
            },
            ("AT+CIPRECONNINTV", true) => {
                let interval = self.settings.reconnect_interval;
                self.emit(format!("+CIPRECONNINTV:{interval}\r\n").as_bytes());
                self.ok();
            }
            ("AT+CIPRECONNINTV", false) => match int(&p, 0).map(u16::try_from) {
                Some(Ok(v @ 1..=36000)) => {
                    self.settings.reconnect_interval = v;
                    self.ok();
                }
                _ => self.error(0x07),
            },
            ("AT+CIPSNTPCFG", false) => match int(&p, 0) {
                Some(v @ 0..=1) => {
                    self.sntp = v == 1;
                    self.ok();
                }
                _ => self.error(0x07),
            },
            ("AT+CIPSNTPTIME", true) => {
                let secs = if self.sntp && self.station.connected {
                    self.config.sntp_time
                } else {
                    0
                };
                let text = asctime(secs);
                self.emit(format!("+CIPSNTPTIME:{text}\r\n").as_bytes());
                self.ok();
            }
            // ESP-AT 2.x has no AT+CIPSSLSIZE (a NONOS-AT command).
            _ => self.error(0x09),
        }
    }

    fn visible(&self, ssid: &str) -> Option<&Network> {
        self.config
            .networks
            .iter()
            .find(|n| n.ssid == ssid && !self.absent.contains(&n.ssid))
    }

    fn free_link(&self) -> Option<u8> {
        (0..5u8).find(|id| {
            self.links
                .get(usize::from(*id))
                .is_some_and(Option::is_none)
        })
    }

    fn cipserver(&mut self, p: &[Param]) {
        match int(p, 0) {
            Some(1) => {
                if !self.settings.mux || self.server.is_some() {
                    self.error(0x0c);
                    return;
                }
                let port = u16::try_from(int(p, 1).unwrap_or(333)).unwrap_or(333);
                let listener = match std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .and_then(TcpListener::from_std)
                {
                    Ok(listener) => listener,
                    Err(_) => {
                        self.error(0x0a);
                        return;
                    }
                };
                if let Ok(addr) = listener.local_addr() {
                    self.observe(|o| {
                        o.ap_addrs.insert(port, addr);
                    });
                }
                let internal = self.internal.clone();
                self.server = Some(tokio::spawn(async move {
                    while let Ok((stream, peer)) = listener.accept().await {
                        if internal.send(Internal::Accepted(stream, peer)).is_err() {
                            return;
                        }
                    }
                }));
                self.ok();
            }
            Some(0) => {
                if let Some(server) = self.server.take() {
                    server.abort();
                }
                if int(p, 1) == Some(1) {
                    for id in 0..5u8 {
                        if self
                            .links
                            .get(usize::from(id))
                            .is_some_and(|l| l.as_ref().is_some_and(|l| !l.udp))
                        {
                            self.close(id, true);
                        }
                    }
                }
                self.observe(|o| o.ap_addrs.retain(|port, _| *port == 53 || *port == 0));
                self.ok();
            }
            _ => self.error(0x07),
        }
    }

    fn cipstart(&mut self, p: &[Param]) {
        if !self.settings.mux {
            // The driver always uses multiple connections; single mode is
            // not simulated.
            self.error(0x0c);
            return;
        }
        let (Some(id), Some(kind), Some(host), Some(port)) =
            (int(p, 0), string(p, 1), string(p, 2), int(p, 3))
        else {
            self.error(0x06);
            return;
        };
        let Ok(id) = u8::try_from(id) else {
            self.error(0x07);
            return;
        };
        if id > 4 {
            self.error(0x07);
            return;
        }
        if self.links.get(usize::from(id)).is_some_and(Option::is_some) {
            self.emit(b"ALREADY CONNECTED\r\n");
            self.error(0x0a);
            return;
        }
        let internal = self.internal.clone();
        match kind.as_str() {
            "UDP" => {
                let local_port = int(p, 4).unwrap_or(0);
                let socket = std::net::UdpSocket::bind("127.0.0.1:0")
                    .and_then(|s| s.set_nonblocking(true).map(|()| s))
                    .and_then(UdpSocket::from_std);
                match socket {
                    Ok(socket) => {
                        if let Ok(addr) = socket.local_addr() {
                            let port = u16::try_from(local_port).unwrap_or(0);
                            self.observe(|o| {
                                o.ap_addrs.insert(port, addr);
                            });
                        }
                        self.install(id, Stream::Udp(socket));
                        self.emit(format!("{id},CONNECT\r\n").as_bytes());
                        self.ok();
                    }
                    Err(_) => self.error(0x0a),
                }
            }
            "TCP" | "SSL" => {
                if !self.station.connected && self.settings.mode & 1 == 1 {
                    self.error(0x0a);
                    return;
                }
                let resolved = match host.parse::<IpAddr>() {
                    Ok(ip) => Some(ip),
                    Err(_) if host == "localhost" || self.config.hosts.contains(&host) => {
                        Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
                    }
                    Err(_) => None,
                };
                let Some(ip) = resolved else {
                    self.emit(b"DNS Fail\r\n");
                    self.error(0x0a);
                    return;
                };
                let Ok(port) = u16::try_from(port) else {
                    self.error(0x07);
                    return;
                };
                let tls = if kind == "SSL" {
                    match self.tls_config(id, &host) {
                        Ok(tls) => Some(tls),
                        Err(()) => {
                            self.error(0x0a);
                            return;
                        }
                    }
                } else {
                    None
                };
                self.processing = true;
                tokio::spawn(async move {
                    let addr = SocketAddr::new(ip, port);
                    let connected = tokio::time::timeout(Duration::from_secs(5), async {
                        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
                        let _ = tcp.set_nodelay(true);
                        match tls {
                            None => Ok((Stream::Tcp(tcp), None)),
                            Some((config, name, verified)) => {
                                let wire = Arc::new(AtomicUsize::new(0));
                                let counted = Counted {
                                    inner: tcp,
                                    read: Arc::clone(&wire),
                                };
                                let stream = TlsConnector::from(config)
                                    .connect(name, counted)
                                    .await
                                    .map_err(|e| e.to_string())?;
                                Ok((Stream::Tls(Box::new(stream), wire), Some(verified)))
                            }
                        }
                    })
                    .await
                    .unwrap_or_else(|_| Err("timed out".to_owned()));
                    let (result, ssl) = match connected {
                        Ok((stream, ssl)) => (Ok(stream), ssl),
                        Err(e) => (Err(e), None),
                    };
                    let _ = internal.send(Internal::Connected { id, result, ssl });
                });
            }
            _ => self.error(0x07),
        }
    }

    /// The rustls client of link `id`, per `AT+CIPSSLCCONF`/`CCN`/`CSNI`.
    fn tls_config(
        &mut self,
        id: u8,
        host: &str,
    ) -> Result<(Arc<ClientConfig>, ServerName<'static>, Option<String>), ()> {
        let conf = self.ssl.get(usize::from(id)).cloned().unwrap_or_default();
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        // ESP8266_RTOS_SDK's mbedTLS 2.16 speaks TLS 1.2 only.
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&tokio_rustls::rustls::version::TLS12])
            .map_err(|_| ())?;
        let sni = conf.sni.clone().unwrap_or_else(|| host.to_owned());
        let name = ServerName::try_from(sni).map_err(|_| ())?;
        if conf.auth < 2 {
            let config = builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnything(provider)))
                .with_no_client_auth();
            return Ok((Arc::new(config), name, None));
        }
        let image = self.config.client_ca.clone().ok_or(())?;
        let mut roots = RootCertStore::empty();
        for item in tether_esp8266::pki::items(&image).map_err(|_| ())? {
            let item = item.map_err(|_| ())?;
            if item.kind == tether_esp8266::pki::ItemKind::Ca {
                for der in CertificateDer::pem_slice_iter(item.data) {
                    roots.add(der.map_err(|_| ())?).map_err(|_| ())?;
                }
            }
        }
        // mbedTLS checks the name against AT+CIPSSLCCN when one is set.
        let expected = conf.common_name.clone();
        let name = match &expected {
            Some(cn) => ServerName::try_from(cn.clone()).map_err(|_| ())?,
            None => name,
        };
        let config = builder.with_root_certificates(roots).with_no_client_auth();
        let verified = expected.or_else(|| Some(String::from("(chain only)")));
        Ok((Arc::new(config), name, verified))
    }

    fn install(&mut self, id: u8, stream: Stream) {
        self.generation += 1;
        let generation = self.generation;
        let (writer_tx, mut writer_rx) = mpsc::unbounded_channel::<WriteOp>();
        let window = Arc::new(Semaphore::new(WINDOW));
        let internal = self.internal.clone();
        let mut tasks = Vec::new();
        let udp = matches!(stream, Stream::Udp(_));
        let tls = matches!(stream, Stream::Tls(..));
        match stream {
            Stream::Udp(socket) => {
                let socket = Arc::new(socket);
                let reader = Arc::clone(&socket);
                tasks.push(tokio::spawn(async move {
                    let mut buf = vec![0u8; 2048];
                    while let Ok((n, from)) = reader.recv_from(&mut buf).await {
                        let bytes = buf.get(..n).unwrap_or_default().to_vec();
                        if internal
                            .send(Internal::Datagram {
                                id,
                                generation,
                                bytes,
                                from,
                            })
                            .is_err()
                        {
                            return;
                        }
                    }
                }));
                tasks.push(tokio::spawn(async move {
                    while let Some(op) = writer_rx.recv().await {
                        if let WriteOp::To(bytes, to) = op {
                            let _ = socket.send_to(&bytes, to).await;
                        }
                    }
                }));
            }
            Stream::Tcp(tcp) => {
                let (read, write) = tcp.into_split();
                let link = ReaderLink {
                    id,
                    generation,
                    window: Arc::clone(&window),
                    wire: None,
                };
                tasks.push(spawn_reader(read, link, internal));
                tasks.push(spawn_writer(write, writer_rx));
            }
            Stream::Tls(tls, wire) => {
                // The handshake's bytes are not data.
                wire.store(0, Ordering::SeqCst);
                let (read, write) = tokio::io::split(*tls);
                let link = ReaderLink {
                    id,
                    generation,
                    window: Arc::clone(&window),
                    wire: Some(wire),
                };
                tasks.push(spawn_reader(read, link, internal));
                tasks.push(spawn_writer(write, writer_rx));
            }
        }
        if let Some(slot) = self.links.get_mut(usize::from(id)) {
            *slot = Some(Link {
                generation,
                udp,
                tls,
                writer: writer_tx,
                buffer: VecDeque::new(),
                records: VecDeque::new(),
                datagrams: VecDeque::new(),
                window,
                ipd_reported: false,
                remote_closed: false,
                tasks,
            });
        }
    }

    fn close(&mut self, id: u8, report: bool) {
        if let Some(link) = self.links.get_mut(usize::from(id)).and_then(Option::take) {
            let _ = link.writer.send(WriteOp::Shutdown);
            // Let the writer shut down before the tasks go.
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                drop(link);
            });
            if report {
                self.emit(format!("{id},CLOSED\r\n").as_bytes());
            }
        }
    }

    fn cipsend(&mut self, p: &[Param]) {
        let (Some(id), Some(len)) = (int(p, 0), int(p, 1)) else {
            self.error(0x06);
            return;
        };
        let (Ok(id), Ok(len)) = (u8::try_from(id), usize::try_from(len)) else {
            self.error(0x07);
            return;
        };
        if len == 0 || len > 2048 {
            self.error(0x07);
            return;
        }
        let remote = match (string(p, 2), int(p, 3)) {
            (Some(host), Some(port)) => match (host.parse::<IpAddr>(), u16::try_from(port)) {
                (Ok(ip), Ok(port)) => Some(SocketAddr::new(ip, port)),
                _ => {
                    self.error(0x07);
                    return;
                }
            },
            _ => None,
        };
        let open = self
            .links
            .get(usize::from(id))
            .and_then(Option::as_ref)
            .is_some_and(|l| !l.remote_closed);
        if !open {
            self.emit(b"link is not valid\r\n");
            self.error(0x0a);
            return;
        }
        self.emit(b"\r\nOK\r\n\r\n>");
        self.sending = Some(SendState {
            id,
            len,
            remote,
            data: Vec::with_capacity(len),
        });
    }

    fn finish_send(&mut self, send: SendState) {
        let len = send.len;
        self.emit(format!("\r\nRecv {len} bytes\r\n").as_bytes());
        self.observe(|o| o.bytes_sent += len);
        if std::mem::take(&mut self.send_fail_next) {
            self.observe(|o| o.send_failures += 1);
            self.emit(b"\r\nSEND FAIL\r\n");
            return;
        }
        let Some(link) = self
            .links
            .get(usize::from(send.id))
            .and_then(Option::as_ref)
        else {
            self.emit(b"\r\nSEND FAIL\r\n");
            return;
        };
        let cut = self.cut_next.take();
        let op = match (link.udp, send.remote) {
            (true, Some(to)) => WriteOp::To(send.data, to),
            (true, None) => WriteOp::Shutdown,
            (false, _) => {
                let mut data = send.data;
                if let Some(keep) = cut {
                    data.truncate(keep);
                }
                WriteOp::Bytes(data)
            }
        };
        let writer = link.writer.clone();
        let generation = link.generation;
        let _ = writer.send(op);
        self.emit(b"\r\nSEND OK\r\n");
        if cut.is_some() {
            // The connection dies right after the partial frame.
            let _ = writer.send(WriteOp::Shutdown);
            let internal = self.internal.clone();
            let id = send.id;
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let _ = internal.send(Internal::RemoteClosed { id, generation });
            });
        }
    }

    fn ciprecvdata(&mut self, p: &[Param]) {
        let (Some(id), Some(len)) = (int(p, 0), int(p, 1)) else {
            self.error(0x06);
            return;
        };
        if !self.settings.passive {
            self.error(0x0c);
            return;
        }
        let (Ok(id), Ok(len)) = (u8::try_from(id), usize::try_from(len)) else {
            self.error(0x07);
            return;
        };
        let dinfo = self.settings.dinfo;
        let Some(link) = self.links.get_mut(usize::from(id)).and_then(Option::as_mut) else {
            self.error(0x0a);
            return;
        };
        let (data, from) = if link.udp {
            match link.datagrams.pop_front() {
                Some((mut data, from)) => {
                    data.truncate(len);
                    (data, Some(from))
                }
                None => (Vec::new(), None),
            }
        } else if link.tls && link.buffer.is_empty() {
            // ESP-AT refuses to read an SSL link with no data left, even
            // when the encrypted length it reported promised more.
            link.ipd_reported = false;
            self.observe(|o| o.ssl_reads_refused += 1);
            self.error(0x0a);
            return;
        } else {
            (link.take(len), None)
        };
        link.ipd_reported = false;
        let empty_and_closed = link.remote_closed && link.buffered() == 0;
        let mut answer = format!("+CIPRECVDATA:{},", data.len()).into_bytes();
        if dinfo {
            let from = from.unwrap_or_else(|| SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
            answer.extend_from_slice(format!("\"{}\",{},", from.ip(), from.port()).as_bytes());
        }
        answer.extend_from_slice(&data);
        answer.extend_from_slice(b"\r\nOK\r\n");
        let n = data.len();
        self.observe(|o| o.bytes_received += n);
        self.emit(&answer);
        if empty_and_closed {
            self.close(id, true);
        }
    }

    fn report_ipd(&mut self, id: u8) {
        let passive = self.settings.passive;
        let Some(link) = self.links.get_mut(usize::from(id)).and_then(Option::as_mut) else {
            return;
        };
        if passive {
            if !link.ipd_reported && link.buffered() > 0 {
                link.ipd_reported = true;
                let len = link.reported();
                self.observe(|o| o.ipd_lengths.push(len));
                self.emit(format!("+IPD,{id},{len}\r\n").as_bytes());
            }
        } else {
            // Active mode (a reset modem before the host set it up again):
            // push everything out at once.
            let data = link.take(usize::MAX);
            if !data.is_empty() {
                let mut out = format!("+IPD,{id},{}:", data.len()).into_bytes();
                out.extend_from_slice(&data);
                self.emit(&out);
            }
        }
    }

    fn internal_event(&mut self, event: Internal) {
        match event {
            Internal::Fault(fault) => self.fault(fault),
            Internal::Applied(fault, done) => {
                self.fault(fault);
                let _ = done.send(());
            }
            Internal::Data {
                id,
                generation,
                bytes,
                wire,
            } => {
                if let Some(link) = self.current_link(id, generation) {
                    if let Some(wire) = wire {
                        link.records.push_back(Record {
                            plain: bytes.len(),
                            wire,
                            opened: false,
                        });
                    }
                    link.buffer.extend(bytes);
                    self.report_ipd(id);
                }
            }
            Internal::Datagram {
                id,
                generation,
                bytes,
                from,
            } => {
                if let Some(link) = self.current_link(id, generation) {
                    if link.buffered() + bytes.len() <= WINDOW {
                        link.datagrams.push_back((bytes, from));
                    }
                    self.report_ipd(id);
                }
            }
            Internal::RemoteClosed { id, generation } => {
                if let Some(link) = self.current_link(id, generation) {
                    link.remote_closed = true;
                    if link.buffered() == 0 {
                        self.close(id, true);
                    }
                }
            }
            Internal::Accepted(stream, _peer) => {
                let active = self.links.iter().flatten().filter(|l| !l.udp).count();
                match self.free_link() {
                    Some(id) if active < self.server_max => {
                        let _ = stream.set_nodelay(true);
                        self.install(id, Stream::Tcp(stream));
                        self.emit(format!("{id},CONNECT\r\n").as_bytes());
                    }
                    _ => drop(stream),
                }
            }
            Internal::Connected { id, result, ssl } => {
                self.processing = false;
                match result {
                    Ok(stream) => {
                        if let Some(verified) = ssl {
                            self.observe(|o| o.ssl_links.push(verified));
                        }
                        self.install(id, stream);
                        self.emit(format!("{id},CONNECT\r\n").as_bytes());
                        self.ok();
                    }
                    Err(reason) => {
                        log::debug!("sim: CIPSTART failed: {reason}");
                        self.error(0x0a);
                        self.emit(format!("{id},CLOSED\r\n").as_bytes());
                    }
                }
            }
            Internal::JoinDone { result } => {
                self.processing = false;
                match result {
                    Ok(credentials) => {
                        self.station.connected = true;
                        self.saved = Some(credentials);
                        self.emit(b"WIFI CONNECTED\r\nWIFI GOT IP\r\n");
                        self.ok();
                    }
                    Err(code) => {
                        self.emit(format!("+CWJAP:{code}\r\n").as_bytes());
                        self.error(0x0a);
                    }
                }
            }
            Internal::ScanDone(lines) => {
                self.processing = false;
                self.emit(&lines);
                self.ok();
            }
            Internal::ResetDone => self.restart(),
            Internal::Rejoin => {
                let saved = self.saved.clone();
                if !self.station.connected
                    && self.settings.mode & 1 == 1
                    && let Some((ssid, password)) = saved
                    && self.visible(&ssid).is_some_and(|n| n.password == password)
                {
                    self.station.connected = true;
                    self.emit(b"WIFI CONNECTED\r\nWIFI GOT IP\r\n");
                }
            }
        }
    }

    fn current_link(&mut self, id: u8, generation: u64) -> Option<&mut Link> {
        self.links
            .get_mut(usize::from(id))
            .and_then(Option::as_mut)
            .filter(|l| l.generation == generation)
    }

    fn stop_ap(&mut self) {
        self.ap = None;
    }

    fn restart(&mut self) {
        for slot in &mut self.links {
            if let Some(link) = slot.take() {
                let _ = link.writer.send(WriteOp::Shutdown);
            }
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
        self.observe(|o| o.ap_addrs.clear());
        let mode = self.settings.mode;
        self.settings = Settings {
            mode,
            ..Settings::default()
        };
        self.ssl = Default::default();
        self.sending = None;
        self.input.clear();
        self.processing = false;
        self.busy_storm = 0;
        self.station.connected = false;
        self.ap = None;
        self.sntp = false;
        self.observe(|o| o.resets += 1);
        let noise: Vec<u8> = (0..40).map(|_| self.rng.random::<u8>()).collect();
        self.emit(&noise);
        self.emit(b"\r\n ets Jan  8 2013,rst cause:2, boot mode:(3,6)\r\n\r\nready\r\n");
        let internal = self.internal.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let _ = internal.send(Internal::Rejoin);
        });
    }

    fn fault(&mut self, fault: Fault) {
        log::debug!("sim: fault {fault:?}");
        match fault {
            Fault::BusyStorm(n) => self.busy_storm = n,
            Fault::SendFail => self.send_fail_next = true,
            Fault::CutNextSend(n) => self.cut_next = Some(n),
            Fault::CloseLink(id) => {
                if let Some(link) = self.links.get_mut(usize::from(id)).and_then(Option::as_mut) {
                    let _ = link.writer.send(WriteOp::Shutdown);
                    link.remote_closed = true;
                    if link.buffered() == 0 {
                        self.close(id, true);
                    }
                }
            }
            Fault::WifiDisconnect => {
                if self.station.connected {
                    self.station.connected = false;
                    self.emit(b"WIFI DISCONNECT\r\n");
                    for id in 0..5u8 {
                        let client = self
                            .links
                            .get(usize::from(id))
                            .and_then(Option::as_ref)
                            .is_some_and(|l| !l.udp);
                        if client {
                            self.close(id, true);
                        }
                    }
                    let internal = self.internal.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        let _ = internal.send(Internal::Rejoin);
                    });
                }
            }
            Fault::Reset => self.restart(),
            Fault::Silent(duration) => {
                self.silent_until = Some(tokio::time::Instant::now() + duration);
            }
            Fault::Hang => self.hung = true,
            Fault::HardwareReset => {
                self.hung = false;
                self.silent_until = None;
                self.restart();
            }
            Fault::SetNetworkPresent(ssid, present) => {
                self.absent.retain(|s| *s != ssid);
                if !present {
                    self.absent.push(ssid);
                }
            }
            Fault::LoseLines(n) => self.lose_lines = n,
            Fault::Stall(pause) => self.stall_next = Some(pause),
            Fault::SetNetworkAnswering(ssid, answering) => {
                self.mute.retain(|s| *s != ssid);
                if !answering {
                    self.mute.push(ssid);
                }
            }
        }
    }
}

/// Where a link's reader delivers.
struct ReaderLink {
    id: u8,
    generation: u64,
    /// Room left in the modem's receive window.
    window: Arc<Semaphore>,
    /// SSL links: TLS bytes read off the socket, not yet attributed.
    wire: Option<Arc<AtomicUsize>>,
}

fn spawn_reader<R: AsyncRead + Unpin + Send + 'static>(
    mut read: R,
    link: ReaderLink,
    internal: mpsc::UnboundedSender<Internal>,
) -> JoinHandle<()> {
    let ReaderLink {
        id,
        generation,
        window,
        wire,
    } = link;
    tokio::spawn(async move {
        let mut buf = vec![0u8; 1460];
        loop {
            // TCP flow control: read only what the window has room for.
            let Ok(permit) = window.acquire().await else {
                return;
            };
            permit.forget();
            let room = 1 + window.available_permits().min(1459);
            let Ok(extra) = window
                .acquire_many(u32::try_from(room - 1).unwrap_or(0))
                .await
            else {
                return;
            };
            extra.forget();
            let slot = buf.get_mut(..room).unwrap_or_default();
            match read.read(slot).await {
                Ok(0) | Err(_) => {
                    let _ = internal.send(Internal::RemoteClosed { id, generation });
                    return;
                }
                Ok(n) => {
                    window.add_permits(room - n);
                    let bytes = buf.get(..n).unwrap_or_default().to_vec();
                    let wire = wire.as_ref().map(|w| w.swap(0, Ordering::SeqCst));
                    if internal
                        .send(Internal::Data {
                            id,
                            generation,
                            bytes,
                            wire,
                        })
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    })
}

/// A TCP stream that counts the bytes read through it (an SSL link's TLS
/// records, for the lengths ESP-AT reports).
struct Counted {
    inner: TcpStream,
    read: Arc<AtomicUsize>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        self.read.fetch_add(n, Ordering::SeqCst);
        result
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn spawn_writer<W: AsyncWrite + Unpin + Send + 'static>(
    mut write: W,
    mut ops: mpsc::UnboundedReceiver<WriteOp>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(op) = ops.recv().await {
            match op {
                WriteOp::Bytes(bytes) | WriteOp::To(bytes, _) => {
                    if write.write_all(&bytes).await.is_err() {
                        return;
                    }
                    let _ = write.flush().await;
                }
                WriteOp::Shutdown => {
                    let _ = write.shutdown().await;
                    return;
                }
            }
        }
    })
}

/// Accepts any certificate: `AT+CIPSSLCCONF` auth mode 0.
#[derive(Debug)]
struct AcceptAnything(Arc<tokio_rustls::rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, tokio_rustls::rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        tokio_rustls::rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        tokio_rustls::rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// One AT parameter: a number or a (unescaped) string.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Param {
    Int(i64),
    Str(String),
    Empty,
}

fn split_params(text: &str) -> Vec<Param> {
    let mut params = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut was_quoted = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => {
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            }
            '"' => {
                quoted = !quoted;
                was_quoted = true;
            }
            ',' if !quoted => {
                params.push(param(&current, was_quoted));
                current.clear();
                was_quoted = false;
            }
            _ => current.push(c),
        }
    }
    params.push(param(&current, was_quoted));
    params
}

fn param(text: &str, quoted: bool) -> Param {
    if quoted {
        return Param::Str(text.to_owned());
    }
    if text.is_empty() {
        return Param::Empty;
    }
    text.parse()
        .map_or_else(|_| Param::Str(text.to_owned()), Param::Int)
}

fn int(params: &[Param], index: usize) -> Option<i64> {
    match params.get(index)? {
        Param::Int(v) => Some(*v),
        _ => None,
    }
}

fn string(params: &[Param], index: usize) -> Option<String> {
    match params.get(index)? {
        Param::Str(s) => Some(s.clone()),
        _ => None,
    }
}

fn escape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if matches!(c, '"' | ',' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// C `asctime` of `secs` since the epoch (UTC).
fn asctime(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let weekday = DAYS
        .get(usize::try_from(days % 7).unwrap_or(0))
        .unwrap_or(&"Thu");
    // H. Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let month_name = MONTHS
        .get(usize::try_from(month - 1).unwrap_or(0))
        .unwrap_or(&"Jan");
    format!(
        "{weekday} {month_name} {day:2} {:02}:{:02}:{:02} {year}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_and_asctime() {
        assert_eq!(
            split_params("0,\"TCP\",\"a\\,b\",80,,1"),
            [
                Param::Int(0),
                Param::Str("TCP".into()),
                Param::Str("a,b".into()),
                Param::Int(80),
                Param::Empty,
                Param::Int(1)
            ]
        );
        assert_eq!(asctime(0), "Thu Jan  1 00:00:00 1970");
        assert_eq!(asctime(1_481_510_012), "Mon Dec 12 02:33:32 2016");
    }
}
