//! The TLS connector on the host, against a real tether-server with a
//! certificate from a test CA (rcgen): a good certificate connects and the
//! device's readings are acknowledged; an expired certificate, a
//! certificate for another name, one from an unknown CA and one not yet
//! valid are refused with a typed, permanent error; and nothing is tried
//! before the wall clock is set.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod support;

use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use support::*;
use tether_core::client::{self, ClientConfig, NoCommands, Resources};
use tether_core::connector::{Connector, Endpoint, Security};
use tether_core::outbox::RamOutbox;
use tether_esp32::tls::{CertificateError, MAX_RECORD, PinnedCa, TlsConnector, TlsError};
use tether_esp32::{EspBoard, WallClock};
use tether_host::connector::TokioConnector;

type Board = EspBoard<TlsConnector<TokioConnector, StdRng>, StdRng, RamOutbox<2048>>;

/// A TLS connector trusting `ca`, with its own (leaked, as a firmware's
/// statics) record buffers.
fn connector(ca: &TestCa) -> TlsConnector<TokioConnector, StdRng> {
    TlsConnector::new(
        TokioConnector::new(),
        PinnedCa(Box::leak(ca.der.clone().into_boxed_slice())),
        StdRng::from_os_rng(),
        Box::leak(vec![0u8; MAX_RECORD].into_boxed_slice()),
        Box::leak(vec![0u8; 2048].into_boxed_slice()),
    )
}

/// Connects through the TLS connector to a server presenting `chain`.
async fn refusal(
    ca: &TestCa,
    chain: (String, String),
) -> Result<Option<CertificateError>, BoxError> {
    let dir = tempfile::tempdir()?;
    let server = start_server(
        dir.path(),
        "127.0.0.1:0".parse()?,
        Some((&chain.0, &chain.1)),
    )
    .await?;
    let port = server.local_addr().port();
    let mut connector = connector(ca);
    let result = connector
        .connect(Endpoint::new("localhost", port, Security::Tls))
        .await;
    let refused = match result {
        Ok(_) => None,
        Err(error) => {
            assert!(error.is_permanent(), "{error}");
            Some(
                error
                    .certificate_error()
                    .ok_or_else(|| format!("not a certificate error: {error}"))?,
            )
        }
    };
    server.shutdown().await;
    Ok(refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_connector_against_tether_server() -> Result<(), BoxError> {
    let ca = TestCa::new("tether test CA")?;
    let now = unix_now();

    // Without the time, no handshake is even tried.
    WallClock::clear();
    let dir = tempfile::tempdir()?;
    let good = ca.server_now(&["localhost"])?;
    let server = start_server(dir.path(), "127.0.0.1:0".parse()?, Some((&good.0, &good.1))).await?;
    let port = server.local_addr().port();
    {
        let mut connector = connector(&ca);
        let error = connector
            .connect(Endpoint::new("localhost", port, Security::Tls))
            .await
            .err()
            .ok_or("connected without a wall clock")?;
        assert!(matches!(error, TlsError::TimeUnknown), "{error}");
        assert!(!error.is_permanent());
    }
    WallClock::set(now)?;

    // The good certificate: a real device session, readings acknowledged.
    let token = add_device(&server.database_path(), "tls-device")?;
    let authorization = format!("Bearer {token}");
    let url = format!("wss://localhost:{port}/v1/device");
    let config = ClientConfig::new(&url, "tls-device", "test").with_authorization(&authorization);
    let board = Board::new(connector(&ca), StdRng::from_os_rng(), RamOutbox::new());
    let mut resources = Resources::<Board>::new();
    let (client, mut runner) = client::new(board, config, &mut resources)?;
    for reading in 0..3u32 {
        client.publish("temperature", &reading).await?;
    }
    let acknowledged = async {
        while client.stats().session.acknowledged < 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let run = runner.run(NoCommands);
    tokio::select! {
        () = acknowledged => {}
        stopped = run => return Err(format!("the runner stopped: {stopped:?}").into()),
        () = tokio::time::sleep(Duration::from_secs(20)) => {
            return Err(format!("readings not acknowledged over wss://: {:?}", client.last_error()).into());
        }
    }
    drop(runner);
    server.shutdown().await;

    // Refusals, each with its reason.
    let expired = ca.server(&["localhost"], now - 2 * 86_400, now - 86_400)?;
    assert_eq!(
        refusal(&ca, expired).await?,
        Some(CertificateError::Expired)
    );
    let early = ca.server(&["localhost"], now + 86_400, now + 2 * 86_400)?;
    assert_eq!(
        refusal(&ca, early).await?,
        Some(CertificateError::NotYetValid)
    );
    let wrong_name = ca.server_now(&["relay.example.com"])?;
    assert_eq!(
        refusal(&ca, wrong_name).await?,
        Some(CertificateError::WrongName)
    );
    let stranger = TestCa::new("someone else's CA")?;
    let unknown = stranger.server_now(&["localhost"])?;
    assert_eq!(
        refusal(&ca, unknown).await?,
        Some(CertificateError::UnknownIssuer)
    );
    // And the good certificate once more through the bare connector.
    assert_eq!(refusal(&ca, ca.server_now(&["localhost"])?).await?, None);
    Ok(())
}
