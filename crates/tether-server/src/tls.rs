//! TLS termination with rustls; the certificate and key files are re-read
//! when they change (checked every few seconds), without a restart, so
//! certificate renewal (e.g. certbot) needs no downtime.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsFiles;

/// How often the files are checked for changes.
const RELOAD_CHECK: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub(crate) struct ReloadingTls {
    files: TlsFiles,
    current: Arc<RwLock<Loaded>>,
}

#[derive(Debug)]
struct Loaded {
    config: Arc<ServerConfig>,
    stamp: (Option<SystemTime>, Option<SystemTime>),
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path)
        .and_then(|meta| meta.modified())
        .ok()
}

fn load_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, String> {
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|error| format!("{}: {error}", files.cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("{}: {error}", files.cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate", files.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|error| format!("{}: {error}", files.key.display()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|error| error.to_string())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

impl ReloadingTls {
    pub(crate) fn load(files: TlsFiles) -> Result<ReloadingTls, String> {
        let stamp = (modified(&files.cert), modified(&files.key));
        let config = load_config(&files)?;
        Ok(ReloadingTls {
            files,
            current: Arc::new(RwLock::new(Loaded { config, stamp })),
        })
    }

    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        let config = match self.current.read() {
            Ok(loaded) => Arc::clone(&loaded.config),
            Err(poisoned) => Arc::clone(&poisoned.into_inner().config),
        };
        TlsAcceptor::from(config)
    }

    /// Re-reads the files if they changed; keeps the old certificate if the
    /// new files are not usable (yet).
    pub(crate) fn reload_if_changed(&self) {
        let stamp = (modified(&self.files.cert), modified(&self.files.key));
        let unchanged = self
            .current
            .read()
            .is_ok_and(|loaded| loaded.stamp == stamp);
        if unchanged {
            return;
        }
        match load_config(&self.files) {
            Ok(config) => {
                if let Ok(mut loaded) = self.current.write() {
                    *loaded = Loaded { config, stamp };
                }
                tracing::info!("TLS certificate reloaded");
            }
            Err(error) => {
                tracing::warn!(%error, "TLS files changed but cannot be loaded; keeping the old ones")
            }
        }
    }

    pub(crate) async fn watch(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                () = tokio::time::sleep(RELOAD_CHECK) => self.reload_if_changed(),
            }
        }
    }
}
