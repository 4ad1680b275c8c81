//! A whole tether session through the simulated ESP8266 against the real
//! tether-server: publish, acks, a downlink command and its result, the
//! link cut mid-frame, the modem resetting itself, the station losing
//! Wi-Fi, the peer closing, a server restart. Nothing acknowledged is
//! lost, nothing is stored twice, and the client reconnects with backoff
//! every time (while the server is down, the attempts the modem sees are
//! spaced by the growing backoff delays).
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod common;

use std::time::Duration;

use common::*;
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use rand_core::SeedableRng;
use rand_xorshift::XorShiftRng;
use serde_json::json;
use tether_core::backoff::{BackoffConfig, Jitter};
use tether_core::board::Parts;
use tether_core::client::{
    self, Client, ClientConfig, CommandResult, DEFAULT_PAYLOAD_CAPACITY, Resources,
};
use tether_core::outbox::RamOutbox;
use tether_core::session::{ConnectionState, SessionConfig};
use tether_core::time::Duration as CoreDuration;
use tether_esp8266::{Config, Esp8266, ModemBuffers};
use tether_esp8266_sim::{Fault, SimConfig};
use tether_host::clock::TokioClock;
use tether_proto::{Command, CommandStatus};

const CHANNEL: &str = "esp/counter";

/// The device: the simulated ESP8266 as the connector, tokio's clock.
type Board<'b> = Parts<Esp8266<'b, Serial, TokioClock>, TokioClock, XorShiftRng, RamOutbox<4096>>;

/// Publishes the next `n` numbers of `counter`.
async fn publish(
    client: &Client<Board<'_>, NoopRawMutex>,
    counter: &mut u32,
    n: u32,
) -> Result<(), BoxError> {
    for _ in 0..n {
        *counter += 1;
        client
            .publish(CHANNEL, counter)
            .await
            .map_err(|e| format!("{e:?}"))?;
    }
    Ok(())
}

#[derive(serde::Serialize)]
struct Led {
    on: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_session_survives_every_modem_and_server_failure() -> Result<(), BoxError> {
    let _limit = time_limit(
        "a_whole_session_survives_every_modem_and_server_failure",
        Duration::from_secs(180),
    );
    let mut server = TestServer::start().await?;
    let token = server.add_device("esp-01")?;
    let (serial, sim) = modem(SimConfig::new(7).with_max_chunk(5));
    let clock = TokioClock::new();
    let mut modem_buffers = ModemBuffers::<128, 512, 512>::new();
    let modem = Esp8266::new(
        serial,
        clock,
        Config::new()
            .with_wifi(SSID, PASSPHRASE)
            .with_command_timeout(CoreDuration::from_secs(2)),
        &mut modem_buffers,
    );
    let url = format!("ws://{}/v1/device", server.addr);
    let authorization = format!("Bearer {token}");
    let session = SessionConfig::new()
        .with_connect_timeout(CoreDuration::from_secs(10))
        .with_keepalive_interval(CoreDuration::from_secs(3))
        .with_pong_timeout(CoreDuration::from_secs(3))
        .with_backoff(
            BackoffConfig::new()
                .with_base(CoreDuration::from_millis(100))
                .with_cap(CoreDuration::from_millis(800))
                .with_healthy_after(CoreDuration::from_millis(500))
                // The plain exponential delays (100, 200, 400, 800 ms), so
                // the attempts while the server is down can be counted.
                .with_jitter(Jitter::None),
        );
    let config = ClientConfig::new(&url, "esp-01", "1.0.0")
        .with_authorization(&authorization)
        .with_session(session)
        .with_send_timeout(CoreDuration::from_secs(5));
    let board = Parts {
        connector: modem,
        clock,
        rng: XorShiftRng::seed_from_u64(1),
        outbox: RamOutbox::<4096>::new(),
    };
    let mut resources: Resources<
        Board<'_>,
        NoopRawMutex,
        DEFAULT_PAYLOAD_CAPACITY,
        1024,
        512,
        512,
    > = Resources::new();
    let (client, mut runner) = client::new(board, config, &mut resources)?;
    let handler = |command: &Command<'_>, result: &mut CommandResult<'_>| {
        if command.channel != "led" {
            return CommandStatus::Unsupported;
        }
        let on = command.payload.as_str() == Some("true");
        match result.set(&Led { on }) {
            Ok(()) => CommandStatus::Ok,
            Err(_) => CommandStatus::Failed,
        }
    };

    let settled = |client: &Client<Board<'_>, NoopRawMutex>| {
        client.stats().outbox_len == 0 && client.state() == ConnectionState::Connected
    };
    let mut counter = 0u32;
    let scenario = async {
        let wait = Duration::from_secs(30);

        // Publish and get acknowledged.
        publish(client, &mut counter, 5).await?;
        assert!(
            wait_for(wait, || settled(client)).await,
            "{:?}",
            client.stats()
        );

        // A downlink command and its result, through HTTP.
        let answer = server.command("esp-01", "led", json!(true)).await?;
        assert_eq!(answer, json!({"status": "ok", "result": {"on": true}}));

        // The link is cut in the middle of a frame: the modem said SEND OK,
        // the server saw half a frame, then CLOSED.
        sim.inject(Fault::CutNextSend(3));
        publish(client, &mut counter, 3).await?;
        assert!(
            wait_for(wait, || settled(client)).await,
            "after the cut: {:?}",
            client.stats()
        );
        let after_cut = client.stats().session.connections;
        assert!(after_cut >= 2, "reconnected after the cut");

        // The modem resets itself mid-session.
        sim.inject(Fault::Reset);
        publish(client, &mut counter, 3).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            wait_for(wait, || settled(client)).await,
            "after the reset: {:?}",
            client.stats()
        );

        // The access point drops the station.
        sim.inject(Fault::WifiDisconnect);
        publish(client, &mut counter, 2).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            wait_for(wait, || settled(client)).await,
            "after WIFI DISCONNECT: {:?}",
            client.stats()
        );

        // The server goes away while messages are published, and comes back.
        let starts = || {
            sim.observed()
                .commands
                .iter()
                .filter(|c| *c == "AT+CIPSTART")
                .count()
        };
        // A healthy link first (500 ms), so the backoff starts over.
        tokio::time::sleep(Duration::from_millis(700)).await;
        server.stop().await;
        let mut seen = starts();
        publish(client, &mut counter, 3).await?;
        // Refused at once on loopback, so only the backoff spaces the
        // attempts: 100, 200, 400, 800 ms apart (the counter restarted
        // after the healthy link), each plus its own exchange with the
        // modem. Without it, hundreds of attempts.
        let mut attempts = Vec::new();
        let down = tokio::time::Instant::now();
        while down.elapsed() < Duration::from_millis(2000) {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let now = starts();
            if now != seen {
                attempts.push((now - seen, down.elapsed()));
                seen = now;
            }
        }
        assert!(
            client.stats().outbox_len > 0,
            "nothing can be acknowledged while it is down"
        );
        let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1].1 - w[0].1).collect();
        assert!(
            attempts.len() >= 3 && attempts.iter().all(|(n, _)| *n == 1),
            "attempts while the server is down (how many, when): {attempts:?}"
        );
        assert!(
            gaps.iter().all(|g| *g >= Duration::from_millis(150))
                && gaps.windows(2).all(|w| w[1] > w[0]),
            "the delays between attempts grow from the base: {gaps:?}"
        );
        server.restart().await?;
        assert!(
            wait_for(wait, || settled(client)).await,
            "after the restart: {:?}",
            client.stats()
        );

        // The peer closes the link (CLOSED out of the blue).
        sim.inject(Fault::CloseLink(0));
        publish(client, &mut counter, 2).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            wait_for(wait, || settled(client)).await,
            "after CLOSED: {:?}",
            client.stats()
        );

        // A command after all that still works.
        let answer = server.command("esp-01", "led", json!(false)).await?;
        assert_eq!(answer, json!({"status": "ok", "result": {"on": false}}));
        Ok::<(), BoxError>(())
    };
    let outcome = tokio::time::timeout(Duration::from_secs(240), async {
        tokio::select! {
            stopped = runner.run(handler) => unreachable!("the runner stopped: {stopped:?}"),
            outcome = scenario => outcome,
        }
    })
    .await;
    drop(runner);
    outcome.map_err(|_| "the scenario took too long")??;

    // Nothing acknowledged lost, nothing stored twice, in order.
    let stored = server.payloads(CHANNEL).await?;
    let expected: Vec<serde_json::Value> = (1..=counter).map(|n| json!(n)).collect();
    assert_eq!(stored, expected);
    let stats = client.stats();
    assert_eq!(stats.session.acknowledged, counter);
    assert!(stats.session.connections >= 6, "{stats:?}");
    assert!(stats.session.link_failures >= 5, "{stats:?}");
    let observed = sim.observed();
    assert!(observed.resets >= 2, "power-on and the injected reset");
    assert_eq!(observed.joins.first().map(String::as_str), Some(SSID));
    assert!(
        observed.commands.iter().any(|c| c == "AT+CIPRECVDATA"),
        "passive receive mode"
    );
    assert!(
        observed.commands.iter().any(|c| c == "AT+CIPCLOSE"),
        "the runner closes finished links in the modem (Connector::close)"
    );
    server.stop().await;
    Ok(())
}
