//! `TokioConnector` over real loopback sockets, plain and TLS.

extern crate alloc;

use alloc::sync::Arc;
use std::io;

use embedded_io_async::{Read, Write};
use tether_core::connector::{Connector, Endpoint, Security};
use tether_host::connector::TokioConnector;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Uses the connector only through the tether-core trait, as the session does.
async fn round_trip<C: Connector>(
    connector: &mut C,
    endpoint: Endpoint<'_>,
    message: &[u8],
) -> Result<Vec<u8>, String> {
    let mut connection = connector
        .connect(endpoint)
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    connection
        .write_all(message)
        .await
        .map_err(|e| format!("write: {e:?}"))?;
    connection
        .flush()
        .await
        .map_err(|e| format!("flush: {e:?}"))?;
    let mut reply = vec![0; message.len()];
    connection
        .read_exact(&mut reply)
        .await
        .map_err(|e| format!("read: {e:?}"))?;
    Ok(reply)
}

/// An upper-casing echo peer on loopback for one connection.
async fn echo_upper<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut stream: S) {
    let mut buf = [0u8; 64];
    let Ok(n) = stream.read(&mut buf).await else {
        return;
    };
    buf[..n].make_ascii_uppercase();
    let _ = stream.write_all(&buf[..n]).await;
    let _ = stream.flush().await;
}

#[tokio::test]
async fn plain_tcp_round_trip() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        echo_upper(stream).await;
    });
    let mut connector = TokioConnector::new();
    let reply = round_trip(
        &mut connector,
        Endpoint::new("127.0.0.1", port, Security::Plain),
        b"hello",
    )
    .await
    .unwrap();
    assert_eq!(reply, b"HELLO");
    server.await.unwrap();
}

#[tokio::test]
async fn refused_connection_is_an_error() {
    // Bind, learn a free port, close it: nothing listens there now.
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut connector = TokioConnector::new();
    let error = connector
        .connect(Endpoint::new("127.0.0.1", port, Security::Plain))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
}

struct TlsPeer {
    acceptor: TlsAcceptor,
    certificate: CertificateDer<'static>,
}

fn tls_peer() -> TlsPeer {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let certificate = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certificate.clone()], key)
        .unwrap();
    TlsPeer {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        certificate,
    }
}

#[tokio::test]
async fn tls_round_trip_with_a_private_root() {
    let peer = tls_peer();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = peer.acceptor.clone();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let stream = acceptor.accept(stream).await.unwrap();
        echo_upper(stream).await;
    });

    let mut roots = RootCertStore::empty();
    roots.add(peer.certificate).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut connector = TokioConnector::with_tls_config(Arc::new(client));
    let endpoint = Endpoint::new("127.0.0.1", port, Security::Tls);
    let connection = connector.connect(endpoint).await.unwrap();
    assert!(connection.is_tls());
    drop(connection);
    server.await.unwrap();

    // A second connection through the trait, with data.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = peer.acceptor.clone();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let stream = acceptor.accept(stream).await.unwrap();
        echo_upper(stream).await;
    });
    let reply = round_trip(
        &mut connector,
        Endpoint::new("127.0.0.1", port, Security::Tls),
        b"secret",
    )
    .await
    .unwrap();
    assert_eq!(reply, b"SECRET");
    server.await.unwrap();
}

#[tokio::test]
async fn tls_refuses_an_untrusted_certificate() {
    let peer = tls_peer();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        // The client aborts the handshake.
        assert!(peer.acceptor.accept(stream).await.is_err());
    });
    // Default roots: the self-signed certificate is not trusted.
    let mut connector = TokioConnector::new();
    let error = connector
        .connect(Endpoint::new("127.0.0.1", port, Security::Tls))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
    server.await.unwrap();
}
