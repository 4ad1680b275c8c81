//! `cargo bench --bench tls_handshake`: one `wss://` connection set-up
//! (TCP connect, TLS 1.3 handshake, certificate chain, name and validity
//! checks against a pinned CA, ECDSA P-256) by tether-esp32's TLS
//! connector (embedded-tls, pure Rust, what the firmware runs) next to
//! rustls (ring, what tether-host runs), both against the same
//! tokio-rustls server on loopback. x86_64 numbers: they rank the two
//! stacks' computation, not a chip's wall-clock time (see docs/esp32.md).
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tether_core::connector::{Connector, Endpoint, Security};
use tether_esp32::WallClock;
use tether_esp32::tls::{MAX_RECORD, PinnedCa, TlsConnector};
use tether_host::connector::TokioConnector;
use tokio::io::AsyncReadExt;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName,
};

struct Pki {
    ca: CertificateDer<'static>,
    server: rustls::ServerConfig,
}

fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("leaf");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone(), ca.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("server config");
    Pki {
        ca: ca.der().clone(),
        server,
    }
}

fn handshake(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let pki = pki();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(pki.server));
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    runtime.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(stream).await {
                    let mut byte = [0u8; 1];
                    let _ = tls.read(&mut byte).await;
                }
            });
        }
    });
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    WallClock::set(now).expect("time");

    let mut group = c.benchmark_group("tls_handshake");
    group.sample_size(30);
    // The connector holds 'static buffers (statics in a firmware).
    let mut embedded = TlsConnector::new(
        TokioConnector::new(),
        PinnedCa(Box::leak(pki.ca.to_vec().into_boxed_slice())),
        StdRng::seed_from_u64(7),
        Box::leak(vec![0u8; MAX_RECORD].into_boxed_slice()),
        Box::leak(vec![0u8; 2048].into_boxed_slice()),
    );
    group.bench_function("embedded-tls (tether-esp32)", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let connection = embedded
                    .connect(Endpoint::new("localhost", port, Security::Tls))
                    .await
                    .expect("handshake");
                assert!(connection.is_tls());
            });
        });
    });
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.clone()).expect("root");
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("TLS 1.3")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    group.bench_function("rustls (ring)", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .expect("tcp");
                let name = ServerName::try_from("localhost").expect("name");
                connector.connect(name, tcp).await.expect("handshake");
            });
        });
    });
    group.finish();
}

criterion_group!(benches, handshake);
criterion_main!(benches);
