//! The same no_std client over real loopback TCP (`TokioConnector`, real
//! time) against the tokio-tungstenite relay peer.

mod support;

use core::time::Duration;

use support::{Behaviour, Relay};
use tether_core::backoff::BackoffConfig;
use tether_core::client::{self, ClientConfig, NoCommands, Resources};
use tether_core::session::{ConnectionState, LinkError, SessionConfig};
use tether_host::board::TokioBoard;
use tokio::net::TcpListener;

#[tokio::test]
async fn publishes_over_real_tcp_and_resumes_after_a_drop() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let relay = Relay::shared([Behaviour {
        drop_after_publishes: Some(3),
        ..Behaviour::default()
    }]);
    let accept_relay = relay.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(support::serve(stream, accept_relay.clone()));
        }
    });

    let url = format!("ws://127.0.0.1:{port}/device");
    let config = ClientConfig::new(&url, "bench-01", "0.1.0").with_session(
        SessionConfig::new().with_backoff(
            BackoffConfig::new()
                .with_base(tether_core::time::Duration::from_millis(50))
                .with_cap(tether_core::time::Duration::from_millis(200)),
        ),
    );
    let mut resources: Resources<TokioBoard> = Resources::new();
    let (client, mut runner) = client::new(TokioBoard::new(), config, &mut resources).unwrap();

    let scenario = async {
        for counter in 1..=10u32 {
            client.publish("bench/counter", &counter).await.unwrap();
        }
        for _ in 0..500 {
            if client.stats().outbox_len == 0 && client.state() == ConnectionState::Connected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::select! {
        stopped = runner.run(NoCommands) => panic!("runner stopped: {stopped:?}"),
        () = scenario => {}
    }

    assert_eq!(client.stats().outbox_len, 0, "{:?}", client.stats());
    let relay = relay.lock().unwrap();
    let boot = &relay.boots[&client.boot_id()];
    let seqs: Vec<u32> = boot.records.iter().map(|r| r.0).collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
    assert_eq!(relay.connections, 2);
    assert_eq!(client.last_error(), Some(LinkError::EndOfStream));
}
