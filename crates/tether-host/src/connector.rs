//! [`TokioConnector`]: the tether-core [`Connector`] over tokio TCP, with
//! TLS by tokio-rustls.

use alloc::sync::Arc;
use core::fmt;
use std::io;

use embedded_io_async::{ErrorType, Read, Write};
use tether_core::connector::{Connector, Endpoint, Security};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// Opens TCP connections with tokio (the system resolver does DNS) and
/// wraps them in TLS for [`Security::Tls`].
///
/// By default TLS trusts the Mozilla root certificates (`webpki-roots`);
/// [`TokioConnector::with_tls_config`] takes any rustls client config, for
/// private roots or client certificates.
#[derive(Clone)]
pub struct TokioConnector {
    tls: Arc<ClientConfig>,
}

impl fmt::Debug for TokioConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokioConnector").finish_non_exhaustive()
    }
}

impl Default for TokioConnector {
    fn default() -> Self {
        Self::new()
    }
}

impl TokioConnector {
    /// A connector whose TLS trusts the Mozilla root certificates.
    #[must_use]
    pub fn new() -> Self {
        let roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let config = ClientConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map(|builder| builder.with_root_certificates(roots).with_no_client_auth());
        match config {
            Ok(config) => Self::with_tls_config(Arc::new(config)),
            // The ring provider supports the default versions; keep a
            // working plain connector even if that ever changed.
            Err(_) => Self::with_tls_config(Arc::new(
                ClientConfig::builder()
                    .with_root_certificates(RootCertStore::empty())
                    .with_no_client_auth(),
            )),
        }
    }

    /// A connector using `config` for TLS.
    #[must_use]
    pub fn with_tls_config(config: Arc<ClientConfig>) -> Self {
        Self { tls: config }
    }
}

impl Connector for TokioConnector {
    type Connection<'a> = TokioConnection;
    type Error = io::Error;

    async fn connect(&mut self, endpoint: Endpoint<'_>) -> io::Result<TokioConnection> {
        let stream = TcpStream::connect((endpoint.host, endpoint.port)).await?;
        stream.set_nodelay(true)?;
        match endpoint.security {
            Security::Plain => Ok(TokioConnection(Stream::Plain(stream))),
            Security::Tls => {
                let name = ServerName::try_from(endpoint.host.to_owned())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                let tls = TlsConnector::from(Arc::clone(&self.tls))
                    .connect(name, stream)
                    .await?;
                Ok(TokioConnection(Stream::Tls(Box::new(tls))))
            }
            _ => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "transport security not supported by TokioConnector",
            )),
        }
    }
}

/// An open connection of a [`TokioConnector`]: `embedded-io-async` over a
/// tokio stream.
#[derive(Debug)]
pub struct TokioConnection(Stream);

#[derive(Debug)]
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl TokioConnection {
    /// Whether the connection is encrypted.
    #[must_use]
    pub fn is_tls(&self) -> bool {
        matches!(self.0, Stream::Tls(_))
    }
}

impl ErrorType for TokioConnection {
    type Error = io::Error;
}

impl Read for TokioConnection {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.0 {
            Stream::Plain(stream) => stream.read(buf).await,
            Stream::Tls(stream) => stream.read(buf).await,
        }
    }
}

impl Write for TokioConnection {
    async fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.0 {
            Stream::Plain(stream) => stream.write(buf).await,
            Stream::Tls(stream) => stream.write(buf).await,
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        match &mut self.0 {
            Stream::Plain(stream) => stream.flush().await,
            Stream::Tls(stream) => stream.flush().await,
        }
    }
}
