//! TLS termination: devices connect with `wss://`; replacing the
//! certificate files switches the served certificate without a restart.

// Tests are std code; the no_std import lints do not apply.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::Message;

fn certificate() -> Result<(String, String, CertificateDer<'static>), BoxError> {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    Ok((
        certified.cert.pem(),
        certified.signing_key.serialize_pem(),
        certified.cert.der().clone(),
    ))
}

/// Opens a `wss://` device session trusting only `trusted`.
async fn wss_hello(
    addr: std::net::SocketAddr,
    trusted: &CertificateDer<'static>,
    token: &str,
) -> Result<(), BoxError> {
    let mut roots = RootCertStore::empty();
    roots.add(trusted.clone())?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let mut request = format!("wss://localhost:{}/v1/device", addr.port()).into_client_request()?;
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}"))?,
    );
    let (mut ws, _) = tokio_tungstenite::client_async(request, tls).await?;
    let hello = tether_proto::DeviceToServer::Hello(tether_proto::Hello {
        device_id: "secure",
        firmware_version: "1",
        boot_id: 1,
        last_acked_seq: 0,
        max_downlink_len: None,
    });
    ws.send(Message::Binary(hello.encode_to_vec()?.into()))
        .await?;
    let reply = tokio::time::timeout(WAIT, ws.next())
        .await?
        .ok_or("ended")??;
    match tether_proto::ServerToDevice::decode(&reply.into_data())? {
        tether_proto::ServerToDevice::Welcome(_) => Ok(()),
        other => Err(format!("expected Welcome, got {other:?}").into()),
    }
}

#[tokio::test]
async fn wss_with_certificate_reload() -> TestResult {
    let dir = tempfile::tempdir()?;
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    let (cert, key, first_der) = certificate()?;
    std::fs::write(&cert_path, cert)?;
    std::fs::write(&key_path, key)?;
    let t = TestServer::start_with(|config| {
        config.with_tls(Some(tether_server::TlsFiles {
            cert: cert_path.clone(),
            key: key_path.clone(),
        }))
    })
    .await?;
    assert!(t.server.base_url().starts_with("https://"));
    let token = t.add_device("default", "secure")?;
    wss_hello(t.addr, &first_der, &token).await?;

    // Renew: new files; within the reload interval the new one is served.
    let (cert, key, second_der) = certificate()?;
    std::fs::write(&key_path, key)?;
    std::fs::write(&cert_path, cert)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(12);
    loop {
        match wss_hello(t.addr, &second_der, &token).await {
            Ok(()) => break,
            Err(error) if std::time::Instant::now() < deadline => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(error) => return Err(format!("new certificate never served: {error}").into()),
        }
    }
    // The old certificate is no longer served.
    assert!(wss_hello(t.addr, &first_der, &token).await.is_err());
    // Plain HTTP on the TLS port is refused by the TLS handshake.
    assert!(http(t.addr, "GET", "/healthz", None, None).await.is_err());
    t.server.shutdown().await;
    Ok(())
}
