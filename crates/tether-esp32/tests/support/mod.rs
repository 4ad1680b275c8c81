//! Shared by the host tests: a test PKI made with rcgen, a tether-server
//! with `--tls-cert`/`--tls-key` (through its library `Config`), a device
//! token, and a receiver that reads what devices published.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::std_instead_of_core,
    clippy::std_instead_of_alloc
)]

pub mod netns;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use tether_server::store::Admin;
use tether_server::{Config, Limits, Server, TlsFiles};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A certificate authority for the tests.
pub struct TestCa {
    pub der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> Result<TestCa, BoxError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let mut dn = DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, name);
        params.distinguished_name = dn;
        let key = KeyPair::generate()?;
        let certificate = params.self_signed(&key)?;
        Ok(TestCa {
            der: certificate.der().to_vec(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A server certificate for `names`, valid from `not_before` to
    /// `not_after` (Unix seconds), signed by this CA: (chain PEM, key PEM).
    pub fn server(
        &self,
        names: &[&str],
        not_before: u64,
        not_after: u64,
    ) -> Result<(String, String), BoxError> {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
        params.not_before = to_time(not_before)?;
        params.not_after = to_time(not_after)?;
        let key = KeyPair::generate()?;
        let certificate = params.signed_by(&key, &self.issuer)?;
        Ok((certificate.pem(), key.serialize_pem()))
    }

    /// A server certificate valid from a day ago for a year.
    pub fn server_now(&self, names: &[&str]) -> Result<(String, String), BoxError> {
        let now = unix_now();
        self.server(names, now - 86_400, now + 365 * 86_400)
    }
}

fn to_time(unix: u64) -> Result<time::OffsetDateTime, BoxError> {
    Ok(time::OffsetDateTime::from_unix_timestamp(i64::try_from(
        unix,
    )?)?)
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn limits() -> Limits {
    Limits {
        handshake_timeout: Duration::from_secs(5),
        publish_rate: 10_000,
        publish_burst: 10_000,
        ..Limits::default()
    }
}

/// A tether-server whose database lives in `dir`, listening on `bind`,
/// with TLS from the given PEM strings (written to `dir`).
pub async fn start_server(
    dir: &Path,
    bind: SocketAddr,
    tls: Option<(&str, &str)>,
) -> Result<Server, BoxError> {
    let mut config = Config::new(dir.to_owned(), bind).with_limits(limits());
    if let Some((cert, key)) = tls {
        let cert_path = dir.join("cert.pem");
        let key_path = dir.join("key.pem");
        std::fs::write(&cert_path, cert)?;
        std::fs::write(&key_path, key)?;
        config = config.with_tls(Some(TlsFiles {
            cert: cert_path,
            key: key_path,
        }));
    }
    Ok(Server::start(config).await?)
}

/// Registers device `id` in tenant `default`; returns its token.
pub fn add_device(database: &Path, id: &str) -> Result<String, BoxError> {
    let admin = Admin::open(database)?;
    let tenant = admin.tenant_id("default")?;
    Ok(admin.add_device(Some(tenant), Some(id), false)?.token)
}
