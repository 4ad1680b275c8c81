//! `wss://` for tether on a chip: TLS 1.3 by `embedded-tls` (pure Rust, no
//! allocation) over any plain [`Connector`], with the server's certificate
//! chain verified against one pinned CA, its name checked against the URL's
//! host and its validity checked against the [`WallClock`].
//!
//! ```text
//!  connect(wss://relay.example.com)
//!     │  WallClock::now()? ── None ──► TlsError::TimeUnknown (never unchecked)
//!     ▼
//!  inner.connect(Plain) ─► TCP ─► embedded-tls handshake (TLS 1.3, P-256,
//!     AES-128-GCM) ─► PinnedVerifier: validity of every certificate, chain
//!     up to the pinned CA (ECDSA P-256), subjectAltName = host
//!     ▼
//!  TlsStream::Tls (records in the caller's buffers)
//! ```
//!
//! A refused certificate comes back as a typed [`CertificateError`]
//! (expired, not yet valid, wrong name, unknown issuer), which
//! [`TlsError::is_permanent`] marks as permanent: retrying will not help,
//! the device needs new settings.
//!
//! Why `embedded-tls` and not `mbedtls-rs`: see `docs/esp32.md` (measured
//! flash, RAM and handshake cost of both).

pub mod certificate;

use embedded_io_async::{ErrorType, Read, Write};
use embedded_tls::pki::CertVerifier;
use embedded_tls::{
    Aes128GcmSha256, Certificate, CertificateRef, CertificateVerifyRef, CryptoProvider,
    TlsCipherSuite, TlsConfig, TlsConnection, TlsContext, TlsVerifier,
};
use rand_core::CryptoRng;
use tether_core::connector::{ConnectErrorKind, Connector, Endpoint, Security};

use crate::clock::WallClock;

/// The cipher suite: AES-128-GCM with SHA-256, the one every TLS 1.3
/// server must support (RFC 8446 9.1).
pub type CipherSuite = Aes128GcmSha256;

/// The largest TLS record a server may send (2^14 bytes of plaintext plus
/// the record overhead): the size of the read buffer that works with any
/// server.
pub const MAX_RECORD: usize = 16_640;

/// Largest certificate chain message the verifier keeps for the
/// CertificateVerify step.
const CERTIFICATE_CAPACITY: usize = 4096;

/// Why a server certificate was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum CertificateError {
    /// A certificate of the chain expired (`notAfter` is past).
    Expired,
    /// A certificate of the chain is not valid yet (`notBefore` is ahead;
    /// or the device's clock is wrong).
    NotYetValid,
    /// No subjectAltName of the server certificate matches the host.
    WrongName,
    /// The chain does not lead to the pinned CA (or a signature is bad).
    UnknownIssuer,
    /// The certificate could not be parsed, or uses an unsupported key.
    Malformed,
}

impl core::fmt::Display for CertificateError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Expired => "the server certificate expired",
            Self::NotYetValid => "the server certificate is not valid yet (check the clock)",
            Self::WrongName => "the server certificate is for another name",
            Self::UnknownIssuer => "the server certificate is not signed by the pinned CA",
            Self::Malformed => "the server certificate could not be read",
        })
    }
}

impl core::error::Error for CertificateError {}

/// Why a `wss://` connection could not be opened.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum TlsError<E> {
    /// Opening the transport failed (DNS, TCP).
    Transport(E),
    /// The wall clock is not set yet (SNTP has not answered): the
    /// certificate's validity cannot be checked, so no handshake is tried.
    TimeUnknown,
    /// The server certificate was refused.
    Certificate(CertificateError),
    /// The handshake failed for another reason (an alert from the server,
    /// an unsupported cipher suite or group, a closed connection).
    Handshake(embedded_tls::TlsError),
    /// `wss://` needs a DNS name to verify: the URL's host is an address.
    AddressHost,
}

impl<E> TlsError<E> {
    /// Whether retrying the same settings cannot succeed: a refused
    /// certificate or an address as host. A firmware goes back to
    /// provisioning (or raises an alarm) instead of retrying for ever.
    /// [`TlsError::TimeUnknown`] is transient: SNTP will answer.
    #[must_use]
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Certificate(_) | Self::AddressHost)
    }

    /// The certificate refusal, if that is what this is.
    #[must_use]
    pub fn certificate_error(&self) -> Option<CertificateError> {
        match self {
            Self::Certificate(e) => Some(*e),
            _ => None,
        }
    }
}

impl<E: core::fmt::Debug> core::fmt::Display for TlsError<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Transport(e) => write!(f, "transport: {e:?}"),
            Self::TimeUnknown => f.write_str("the wall clock is not set: SNTP has not answered"),
            Self::Certificate(e) => write!(f, "{e}"),
            Self::Handshake(e) => write!(f, "TLS handshake failed: {e:?}"),
            Self::AddressHost => f.write_str("wss:// needs a host name, not an address"),
        }
    }
}

impl<E: core::fmt::Debug> core::error::Error for TlsError<E> {}

/// The trusted root: one CA certificate in DER, usually a `static` in the
/// firmware (`include_bytes!`), the CA of your relay's certificate.
///
/// The connectors hold `'static` buffers and certificates: a firmware's are
/// statics, a test leaks them.
#[derive(Debug, Clone, Copy)]
pub struct PinnedCa<'c>(pub &'c [u8]);

/// Opens `ws://` through `inner` as it is and `wss://` through `inner`
/// plus TLS 1.3, verified against a [`PinnedCa`].
///
/// `read_record` must hold the largest record the server sends
/// ([`MAX_RECORD`] for a server that ignores the max_fragment_length
/// extension, as rustls does); `write_record` bounds the records the device
/// sends (at least a WebSocket frame plus 128 bytes).
pub struct TlsConnector<C, R> {
    inner: C,
    ca: PinnedCa<'static>,
    rng: R,
    read_record: &'static mut [u8],
    write_record: &'static mut [u8],
    last_certificate_error: Option<CertificateError>,
}

impl<C: core::fmt::Debug, R> core::fmt::Debug for TlsConnector<C, R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TlsConnector")
            .field("inner", &self.inner)
            .field("read_record", &self.read_record.len())
            .field("write_record", &self.write_record.len())
            .finish_non_exhaustive()
    }
}

impl<C: Connector, R: rand_core::RngCore + CryptoRng> TlsConnector<C, R> {
    /// TLS over `inner`, trusting `ca`, with key shares from `rng` and the
    /// records in the caller's buffers.
    pub fn new(
        inner: C,
        ca: PinnedCa<'static>,
        rng: R,
        read_record: &'static mut [u8],
        write_record: &'static mut [u8],
    ) -> Self {
        Self {
            inner,
            ca,
            rng,
            read_record,
            write_record,
            last_certificate_error: None,
        }
    }

    /// The plain connector inside.
    pub fn inner(&mut self) -> &mut C {
        &mut self.inner
    }
}

impl<C: Connector + 'static, R: rand_core::RngCore + CryptoRng + 'static> Connector
    for TlsConnector<C, R>
{
    type Connection<'a>
        = TlsStream<'a, C::Connection<'a>>
    where
        Self: 'a;
    type Error = TlsError<C::Error>;

    async fn connect(
        &mut self,
        endpoint: Endpoint<'_>,
    ) -> Result<Self::Connection<'_>, Self::Error> {
        let plain = Endpoint::new(endpoint.host, endpoint.port, Security::Plain);
        if endpoint.security == Security::Plain {
            let connection = self
                .inner
                .connect(plain)
                .await
                .map_err(TlsError::Transport)?;
            return Ok(TlsStream::Plain(connection));
        }
        if endpoint.host.parse::<core::net::IpAddr>().is_ok() {
            return Err(TlsError::AddressHost);
        }
        if WallClock::now().is_none() {
            warn!("tls: refusing to connect before the wall clock is set");
            return Err(TlsError::TimeUnknown);
        }
        let transport = self
            .inner
            .connect(plain)
            .await
            .map_err(TlsError::Transport)?;
        let mut tls = TlsConnection::new(transport, self.read_record, self.write_record);
        let config = TlsConfig::new().with_server_name(endpoint.host);
        let mut provider = Provider {
            rng: Rng06(&mut self.rng),
            verifier: PinnedVerifier::new(self.ca),
        };
        let opened = tls.open(TlsContext::new(&config, &mut provider)).await;
        self.last_certificate_error = provider.verifier.failure;
        match (opened, provider.verifier.failure) {
            (Ok(()), _) => {
                debug!("tls: connected to {}", endpoint.host);
                Ok(TlsStream::Tls(tls))
            }
            (Err(_), Some(refused)) => {
                warn!(
                    "tls: certificate of {} refused: {:?}",
                    endpoint.host, refused
                );
                Err(TlsError::Certificate(refused))
            }
            (Err(e), None) => {
                warn!("tls: handshake with {} failed: {:?}", endpoint.host, e);
                Err(TlsError::Handshake(e))
            }
        }
    }

    /// A refused certificate (or an address as `wss://` host) will be
    /// refused again: the client stops in `NeedsProvisioning`. A wall
    /// clock not yet set, DNS, TCP and handshake failures are transient.
    fn error_kind(error: &Self::Error) -> ConnectErrorKind {
        if error.is_permanent() {
            ConnectErrorKind::Certificate
        } else {
            ConnectErrorKind::Transient
        }
    }

    /// TLS close_notify (for `wss://`), then the transport's own close.
    async fn close(connection: Self::Connection<'_>) {
        let transport = connection.close().await;
        C::close(transport).await;
    }
}

/// An open connection of a [`TlsConnector`]: plain for `ws://`, TLS for
/// `wss://`.
#[allow(clippy::large_enum_variant)] // One lives at a time, in the runner's future.
pub enum TlsStream<'a, S: Read + Write> {
    /// `ws://`.
    Plain(S),
    /// `wss://`.
    Tls(TlsConnection<'a, S, CipherSuite>),
}

impl<S: Read + Write> core::fmt::Debug for TlsStream<'_, S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Plain(_) => "TlsStream::Plain",
            Self::Tls(_) => "TlsStream::Tls",
        })
    }
}

impl<'a, S: Read + Write + 'a> TlsStream<'a, S> {
    /// Whether the stream is encrypted.
    #[must_use]
    pub fn is_tls(&self) -> bool {
        matches!(self, Self::Tls(_))
    }

    /// Sends TLS close_notify (for `wss://`) and hands back the transport,
    /// to be closed in its turn (e.g. [`TcpConnection::close`](crate::tcp::TcpConnection::close)).
    pub async fn close(self) -> S {
        match self {
            Self::Plain(transport) => transport,
            Self::Tls(tls) => match tls.close().await {
                Ok(transport) | Err((transport, _)) => transport,
            },
        }
    }
}

/// An I/O error of a [`TlsStream`].
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum StreamError<E> {
    /// From the transport of a `ws://` stream.
    Transport(E),
    /// From TLS (which wraps its transport's errors by kind).
    Tls(embedded_tls::TlsError),
}

impl<E: core::fmt::Debug> core::fmt::Display for StreamError<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Transport(e) => write!(f, "transport: {e:?}"),
            Self::Tls(e) => write!(f, "TLS: {e:?}"),
        }
    }
}

impl<E: core::fmt::Debug> core::error::Error for StreamError<E> {}

impl<E: embedded_io_async::Error> embedded_io_async::Error for StreamError<E> {
    fn kind(&self) -> embedded_io_async::ErrorKind {
        match self {
            Self::Transport(e) => e.kind(),
            Self::Tls(e) => embedded_io_async::Error::kind(e),
        }
    }
}

impl<'a, S: Read + Write + 'a> ErrorType for TlsStream<'a, S> {
    type Error = StreamError<S::Error>;
}

impl<'a, S: Read + Write + 'a> Read for TlsStream<'a, S> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        match self {
            Self::Plain(s) => s.read(buf).await.map_err(StreamError::Transport),
            Self::Tls(s) => s.read(buf).await.map_err(StreamError::Tls),
        }
    }
}

impl<'a, S: Read + Write + 'a> Write for TlsStream<'a, S> {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        match self {
            Self::Plain(s) => s.write(buf).await.map_err(StreamError::Transport),
            Self::Tls(s) => s.write(buf).await.map_err(StreamError::Tls),
        }
    }

    async fn flush(&mut self) -> Result<(), Self::Error> {
        match self {
            Self::Plain(s) => s.flush().await.map_err(StreamError::Transport),
            Self::Tls(s) => s.flush().await.map_err(StreamError::Tls),
        }
    }
}

/// embedded-tls's chain and signature checks (ECDSA P-256 against the
/// pinned CA, CertificateVerify), preceded by our validity checks on every
/// certificate and followed, on failure, by a diagnosis that names the
/// reason.
struct PinnedVerifier<'c> {
    inner: CertVerifier<'c, CipherSuite, WallClock, CERTIFICATE_CAPACITY>,
    host: heapless::String<253>,
    failure: Option<CertificateError>,
}

impl<'c> PinnedVerifier<'c> {
    fn new(ca: PinnedCa<'c>) -> Self {
        Self {
            inner: CertVerifier::new(Certificate::X509(ca.0)),
            host: heapless::String::new(),
            failure: None,
        }
    }

    fn refuse(&mut self, error: CertificateError) -> embedded_tls::TlsError {
        self.failure = Some(error);
        embedded_tls::TlsError::InvalidCertificate
    }

    /// Checks the validity window of every certificate of the chain.
    fn check_validity(&self, chain: &CertificateRef<'_>) -> Result<(), CertificateError> {
        let now = WallClock::now().ok_or(CertificateError::NotYetValid)?;
        for entry in &chain.entries {
            let embedded_tls::CertificateEntryRef::X509(der) = entry else {
                return Err(CertificateError::Malformed);
            };
            let facts = certificate::parse(der).map_err(|_| CertificateError::Malformed)?;
            if now < facts.validity.not_before {
                return Err(CertificateError::NotYetValid);
            }
            if now > facts.validity.not_after {
                return Err(CertificateError::Expired);
            }
        }
        Ok(())
    }

    /// Names the reason embedded-tls refused a chain whose dates are fine.
    fn diagnose(&self, chain: &CertificateRef<'_>) -> CertificateError {
        let Some(embedded_tls::CertificateEntryRef::X509(leaf)) = chain.entries.first() else {
            return CertificateError::Malformed;
        };
        match certificate::parse(leaf).and_then(|facts| facts.matches_host(&self.host)) {
            Ok(true) => CertificateError::UnknownIssuer,
            Ok(false) => CertificateError::WrongName,
            Err(_) => CertificateError::Malformed,
        }
    }
}

impl TlsVerifier<CipherSuite> for PinnedVerifier<'_> {
    fn set_hostname_verification(&mut self, hostname: &str) -> Result<(), embedded_tls::TlsError> {
        self.host = heapless::String::try_from(hostname)
            .map_err(|_| embedded_tls::TlsError::InsufficientSpace)?;
        // embedded-tls keeps at most 64 bytes of host name.
        if hostname.len() > 64 {
            return Err(self.refuse(CertificateError::WrongName));
        }
        TlsVerifier::<CipherSuite>::set_hostname_verification(&mut self.inner, hostname)
    }

    fn verify_certificate(
        &mut self,
        transcript: &<CipherSuite as TlsCipherSuite>::Hash,
        chain: CertificateRef<'_>,
    ) -> Result<(), embedded_tls::TlsError> {
        if chain.entries.is_empty() {
            return Err(self.refuse(CertificateError::Malformed));
        }
        if let Err(e) = self.check_validity(&chain) {
            return Err(self.refuse(e));
        }
        let diagnosis = self.diagnose(&chain);
        match self.inner.verify_certificate(transcript, chain) {
            Ok(()) => Ok(()),
            Err(
                embedded_tls::TlsError::InvalidCertificate
                | embedded_tls::TlsError::InvalidSignature,
            ) => Err(self.refuse(diagnosis)),
            Err(
                embedded_tls::TlsError::InvalidSignatureScheme
                | embedded_tls::TlsError::DecodeError,
            ) => Err(self.refuse(CertificateError::Malformed)),
            Err(e) => Err(e),
        }
    }

    fn verify_signature(
        &mut self,
        verify: CertificateVerifyRef<'_>,
    ) -> Result<(), embedded_tls::TlsError> {
        match self.inner.verify_signature(verify) {
            Ok(()) => Ok(()),
            Err(embedded_tls::TlsError::InvalidSignature) => {
                // The server does not hold the certificate's key.
                Err(self.refuse(CertificateError::UnknownIssuer))
            }
            Err(e) => Err(e),
        }
    }
}

struct Provider<'v, 'c, R> {
    rng: Rng06<'v, R>,
    verifier: PinnedVerifier<'c>,
}

impl<R: rand_core::RngCore + CryptoRng> CryptoProvider for Provider<'_, '_, R> {
    type CipherSuite = CipherSuite;
    type Signature = [u8; 0];

    fn rng(&mut self) -> impl embedded_tls::CryptoRngCore {
        &mut self.rng
    }

    fn verifier(&mut self) -> Result<&mut impl TlsVerifier<CipherSuite>, embedded_tls::TlsError> {
        Ok(&mut self.verifier)
    }
}

/// embedded-tls speaks rand_core 0.6; tether (and esp-hal's `Rng`) speak
/// 0.9.
struct Rng06<'r, R>(&'r mut R);

impl<R: rand_core::RngCore> rand_core_06::RngCore for Rng06<'_, R> {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }

    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest);
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core_06::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

impl<R: CryptoRng> rand_core_06::CryptoRng for Rng06<'_, R> {}
