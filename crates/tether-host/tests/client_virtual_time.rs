//! The device client against a scripted relay peer (tokio-tungstenite), over
//! in-memory streams, on tokio's paused (virtual) clock: deterministic runs
//! of keepalive timeouts and backoffs that would take minutes in real time.

extern crate alloc;

mod support;

use alloc::collections::VecDeque;
use core::time::Duration;
use std::io;

use embedded_io_async::{ErrorType, Read, Write};
use rand_core::SeedableRng;
use rand_xorshift::XorShiftRng;
use serde::Serialize;
use support::{Behaviour, Relay, Shared, UNIX_AT_START};
use tether_core::board::Parts;
use tether_core::client::{
    self, Client, ClientConfig, CommandHandler, CommandResult, NeedsProvisioning, NoCommands,
    Resources,
};
use tether_core::connector::{Connector, Endpoint};
use tether_core::outbox::{FullPolicy, RamOutbox};
use tether_core::session::{ConnectionState, LinkError, PublishError, SessionConfig};
use tether_host::clock::TokioClock;
use tether_proto::{Command, CommandStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

type TestBoard = Parts<PeerConnector, TokioClock, XorShiftRng, RamOutbox<2048>>;
type TestClient = Client<TestBoard>;

/// Opens in-memory streams to the scripted peer. Can refuse connections and
/// cut the byte stream after a budget (a link dying mid-frame).
struct PeerConnector {
    relay: Shared,
    refusals: usize,
    write_budgets: VecDeque<Option<usize>>,
    /// Every pong frame is written short (2 bytes), and the rest only after
    /// this long: a congested TCP send buffer in the middle of a frame.
    stall_pongs: Option<Duration>,
}

impl PeerConnector {
    fn new(relay: &Shared) -> Self {
        Self {
            relay: relay.clone(),
            refusals: 0,
            write_budgets: VecDeque::new(),
            stall_pongs: None,
        }
    }
}

struct PeerStream {
    inner: DuplexStream,
    budget: Option<usize>,
    stall_pongs: Option<Duration>,
    /// Writes wait until then (the send buffer is full).
    stalled_until: Option<tokio::time::Instant>,
}

impl ErrorType for PeerStream {
    type Error = io::Error;
}

impl Read for PeerStream {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).await
    }
}

impl Write for PeerStream {
    async fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(until) = self.stalled_until {
            // Cancelling this write leaves the stall in place.
            tokio::time::sleep_until(until).await;
            self.stalled_until = None;
        }
        // 0x8a: FIN + pong opcode, the first byte of a pong frame.
        if let (Some(stall), Some(0x8a)) = (self.stall_pongs, buf.first()) {
            self.stalled_until = Some(tokio::time::Instant::now() + stall);
            return self.inner.write(&buf[..2]).await;
        }
        let allowed = match self.budget {
            Some(0) => return Err(io::ErrorKind::BrokenPipe.into()),
            Some(budget) => budget.min(buf.len()),
            None => buf.len(),
        };
        let n = self.inner.write(&buf[..allowed]).await?;
        if let Some(budget) = &mut self.budget {
            *budget -= n;
        }
        Ok(n)
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().await
    }
}

impl Connector for PeerConnector {
    type Connection<'a> = PeerStream;
    type Error = io::Error;

    async fn connect(&mut self, _endpoint: Endpoint<'_>) -> io::Result<PeerStream> {
        if self.refusals > 0 {
            self.refusals -= 1;
            return Err(io::ErrorKind::ConnectionRefused.into());
        }
        let (client, server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(support::serve(server, self.relay.clone()));
        Ok(PeerStream {
            inner: client,
            budget: self.write_budgets.pop_front().flatten(),
            stall_pongs: self.stall_pongs,
            stalled_until: None,
        })
    }
}

/// Answers `led` commands with the LED's new state as the result, refuses
/// the rest.
struct Led {
    seen: Vec<(u32, String)>,
}

impl CommandHandler for Led {
    fn handle(&mut self, command: &Command<'_>, result: &mut CommandResult<'_>) -> CommandStatus {
        #[derive(Serialize)]
        struct State {
            on: bool,
        }
        self.seen.push((
            command.id,
            command.payload.as_str().unwrap_or("").to_owned(),
        ));
        if command.channel == "led" {
            let on = command.payload.as_str() == Some("true");
            result.set(&State { on }).unwrap();
            CommandStatus::Ok
        } else {
            CommandStatus::Unsupported
        }
    }
}

fn config() -> ClientConfig<'static> {
    ClientConfig::new("ws://relay.test/device", "dev-1", "1.0.0")
}

/// Runs `scenario` next to the client's runner.
async fn with_client(
    config: ClientConfig<'static>,
    connector: PeerConnector,
    scenario: impl AsyncFnOnce(&TestClient),
) -> Vec<(u32, String)> {
    let board = Parts {
        connector,
        clock: TokioClock::new(),
        rng: XorShiftRng::seed_from_u64(1),
        outbox: RamOutbox::new(),
    };
    let mut resources: Resources<TestBoard> = Resources::new();
    let (client, mut runner) = client::new(board, config, &mut resources).unwrap();
    let mut handler = Led { seen: Vec::new() };
    let led =
        |command: &Command<'_>, result: &mut CommandResult<'_>| handler.handle(command, result);
    tokio::select! {
        stopped = runner.run(led) => panic!("runner stopped: {stopped:?}"),
        () = scenario(client) => {}
    }
    handler.seen
}

/// Waits (on virtual time, up to 10 minutes) until `condition` holds.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..60_000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[derive(Serialize)]
struct Reading<'a> {
    counter: u32,
    label: &'a str,
}

fn records(relay: &Shared, boot_id: u64) -> Vec<u32> {
    relay.lock().unwrap().boots[&boot_id]
        .records
        .iter()
        .map(|r| r.0)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn normal_flow_publishes_typed_readings_and_gets_acks() {
    let relay = Relay::shared([]);
    let connector = PeerConnector::new(&relay);
    with_client(config(), connector, async |client| {
        for counter in 1..=3 {
            let seq = client
                .publish(
                    "sensors/temp",
                    &Reading {
                        counter,
                        label: "kitchen",
                    },
                )
                .await
                .unwrap();
            assert_eq!(seq, counter);
        }
        eventually("3 acks", || {
            client.stats().outbox_len == 0 && client.stats().session.acknowledged == 3
        })
        .await;
        assert_eq!(client.state(), ConnectionState::Connected);
        assert_eq!(client.last_error(), None);
        let relay = relay.lock().unwrap();
        assert_eq!(relay.hellos, [("dev-1".to_owned(), client.boot_id(), 0)]);
        let boot = &relay.boots[&client.boot_id()];
        assert_eq!(
            boot.records[0],
            (
                1,
                "sensors/temp".to_owned(),
                r#"{"counter":1,"label":"kitchen"}"#.to_owned()
            )
        );
        assert_eq!(boot.records.len(), 3);
        assert_eq!(relay.duplicates, 0);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn drop_after_publish_before_ack_resends_only_what_is_missing() {
    let relay = Relay::shared([Behaviour {
        drop_after_publishes: Some(2),
        ..Behaviour::default()
    }]);
    let connector = PeerConnector::new(&relay);
    with_client(config(), connector, async |client| {
        // Queued while offline, sent in one burst after Welcome.
        for counter in 1..=5 {
            client.publish("c", &counter).await.unwrap();
        }
        eventually("all stored", || client.stats().outbox_len == 0).await;
        assert_eq!(records(&relay, client.boot_id()), [1, 2, 3, 4, 5]);
        let relay = relay.lock().unwrap();
        assert_eq!(relay.connections, 2);
        assert_eq!(relay.gaps, 0);
        // The second Hello: 1 was acknowledged, 2 was stored but its Ack
        // never came; Welcome said 2, so only 3..5 were resent.
        assert_eq!(relay.hellos[1].2, 1);
        assert_eq!(relay.duplicates, 0);
        assert_eq!(client.last_error(), Some(LinkError::EndOfStream));
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn link_dying_mid_frame_loses_nothing() {
    let relay = Relay::shared([]);
    let mut connector = PeerConnector::new(&relay);
    // Upgrade request (~150 bytes) and Hello go through, the publishes of
    // ~130 bytes each are cut partway.
    connector.write_budgets.push_back(Some(400));
    let long = "x".repeat(100);
    with_client(config(), connector, async |client| {
        for counter in 1..=4u32 {
            client
                .publish(
                    "c",
                    &Reading {
                        counter,
                        label: &long,
                    },
                )
                .await
                .unwrap();
        }
        eventually("all stored", || client.stats().outbox_len == 0).await;
        assert_eq!(records(&relay, client.boot_id()), [1, 2, 3, 4]);
        assert_eq!(relay.lock().unwrap().connections, 2);
        assert_eq!(client.last_error(), Some(LinkError::Io));
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn server_that_never_acks_fills_window_then_outbox_reject() {
    let relay = Relay::shared([Behaviour {
        never_ack: true,
        max_in_flight: 4,
        ..Behaviour::default()
    }]);
    let connector = PeerConnector::new(&relay);
    with_client(config(), connector, async |client| {
        eventually("connected", || client.state() == ConnectionState::Connected).await;
        let mut accepted = 0;
        let error = loop {
            match client
                .publish("c", &"0123456789012345678901234567890123456789")
                .await
            {
                Ok(_) => accepted += 1,
                Err(e) => break e,
            }
        };
        assert_eq!(error, PublishError::Full);
        // 2048 bytes of outbox, 56 bytes per entry.
        assert_eq!(accepted, 2048 / 56);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            relay.lock().unwrap().deliveries,
            4,
            "only the server's window goes out"
        );
        assert_eq!(client.stats().dropped, 0);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn server_that_never_acks_with_drop_oldest_counts_drops() {
    let relay = Relay::shared([Behaviour {
        never_ack: true,
        ..Behaviour::default()
    }]);
    let connector = PeerConnector::new(&relay);
    let config =
        config().with_session(SessionConfig::new().with_full_policy(FullPolicy::DropOldest));
    with_client(config, connector, async |client| {
        eventually("connected", || client.state() == ConnectionState::Connected).await;
        for _ in 0..100 {
            client
                .publish("c", &"0123456789012345678901234567890123456789")
                .await
                .unwrap();
        }
        let stats = client.stats();
        assert_eq!(stats.dropped, 100 - 36);
        assert_eq!(stats.outbox_len, 36);
        assert!(stats.outbox_bytes <= stats.outbox_capacity);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn unanswered_pings_mean_a_dead_link() {
    let relay = Relay::shared([Behaviour {
        stop_reading: true,
        ..Behaviour::default()
    }]);
    let connector = PeerConnector::new(&relay);
    with_client(config(), connector, async |client| {
        let start = tokio::time::Instant::now();
        eventually("connected", || client.state() == ConnectionState::Connected).await;
        eventually("second connection", || {
            relay.lock().unwrap().connections == 2
        })
        .await;
        assert_eq!(client.last_error(), Some(LinkError::PongTimeout));
        // Keepalive after 20 s of silence less its jitter (up to 25 % by
        // default, so 15 to 20 s), pong timeout 10 s, backoff <= 1 s.
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_secs(25) && elapsed <= Duration::from_secs(32),
            "{elapsed:?}"
        );
        eventually("connected again", || {
            client.state() == ConnectionState::Connected
        })
        .await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn pings_keep_a_quiet_link_up() {
    let relay = Relay::shared([]);
    let connector = PeerConnector::new(&relay);
    with_client(config(), connector, async |client| {
        eventually("connected", || client.state() == ConnectionState::Connected).await;
        tokio::time::sleep(Duration::from_secs(300)).await;
        assert_eq!(client.state(), ConnectionState::Connected);
        assert_eq!(relay.lock().unwrap().connections, 1);
        assert_eq!(client.stats().session.link_failures, 0);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn server_close_code_is_reported_and_the_client_reconnects() {
    let relay = Relay::shared([Behaviour {
        close_with: Some(4013),
        ..Behaviour::default()
    }]);
    let connector = PeerConnector::new(&relay);
    with_client(config(), connector, async |client| {
        client.publish("c", &1).await.unwrap();
        eventually("second connection", || {
            relay.lock().unwrap().connections == 2
        })
        .await;
        assert_eq!(client.last_error(), Some(LinkError::Closed { code: 4013 }));
        eventually("stored", || client.stats().outbox_len == 0).await;
        assert_eq!(records(&relay, client.boot_id()), [1]);
    })
    .await;
}

/// 4005 (unauthorized: token revoked, device moved) will not change by
/// retrying: the runner stops and says the device needs provisioning, and
/// runs again once told to retry.
#[tokio::test(start_paused = true)]
async fn revoked_device_stops_in_needs_provisioning_instead_of_retrying() {
    let relay = Relay::shared([Behaviour {
        close_with: Some(4005),
        ..Behaviour::default()
    }]);
    let board = Parts {
        connector: PeerConnector::new(&relay),
        clock: TokioClock::new(),
        rng: XorShiftRng::seed_from_u64(1),
        outbox: RamOutbox::new(),
    };
    let mut resources: Resources<TestBoard> = Resources::new();
    let (client, mut runner) = client::new(board, config(), &mut resources).unwrap();
    client.publish("c", &1).await.unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(600), runner.run(NoCommands))
        .await
        .expect("the runner returns");
    let reason = LinkError::Closed { code: 4005 };
    assert_eq!(stopped, NeedsProvisioning(reason));
    assert!(reason.is_permanent());
    assert_eq!(client.state(), ConnectionState::NeedsProvisioning(reason));
    // No retry storm: one connection in ten virtual minutes.
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(relay.lock().unwrap().connections, 1);
    // New settings (here: the relay lets it in again): retry, and the
    // message still in the outbox goes out.
    client.retry_now();
    tokio::select! {
        stopped = runner.run(NoCommands) => panic!("runner stopped: {stopped:?}"),
        () = eventually("stored", || client.stats().outbox_len == 0) => {}
    }
    assert_eq!(records(&relay, client.boot_id()), [1]);
}

#[tokio::test(start_paused = true)]
async fn malformed_server_message_drops_the_link_and_loses_nothing() {
    let relay = Relay::shared([Behaviour {
        send_garbage: true,
        never_ack: true,
        ..Behaviour::default()
    }]);
    let connector = PeerConnector::new(&relay);
    with_client(config(), connector, async |client| {
        for counter in 1..=3 {
            client.publish("c", &counter).await.unwrap();
        }
        eventually("all stored and acked", || client.stats().outbox_len == 0).await;
        assert_eq!(records(&relay, client.boot_id()), [1, 2, 3]);
        assert_eq!(client.last_error(), Some(LinkError::Malformed));
        assert!(relay.lock().unwrap().connections >= 2);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn commands_reach_the_application_and_are_acknowledged() {
    let relay = Relay::shared([Behaviour {
        command: Some((7, "led", "true")),
        ..Behaviour::default()
    }]);
    let connector = PeerConnector::new(&relay);
    let seen = with_client(config(), connector, async |_client| {
        eventually("command ack", || {
            !relay.lock().unwrap().command_acks.is_empty()
        })
        .await;
        let acks = relay.lock().unwrap().command_acks.clone();
        assert_eq!(acks, [(7, CommandStatus::Ok, r#"{"on":true}"#.to_owned())]);
    })
    .await;
    assert_eq!(seen, [(7, "true".to_owned())]);
}

#[tokio::test(start_paused = true)]
async fn refused_connections_back_off_then_connect() {
    let relay = Relay::shared([]);
    let mut connector = PeerConnector::new(&relay);
    connector.refusals = 3;
    with_client(config(), connector, async |client| {
        client.publish("c", &1).await.unwrap();
        eventually("stored", || client.stats().outbox_len == 0).await;
        assert_eq!(client.stats().session.link_failures, 3);
        assert_eq!(client.last_error(), Some(LinkError::ConnectFailed));
        assert!(matches!(client.state(), ConnectionState::Connected));
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn any_mix_of_link_failures_stores_every_message_once_in_order() {
    for seed in 0..12u64 {
        // A deterministic mix of misbehaving connections.
        let behaviours = (0..6).map(|i| {
            let pick = (seed.wrapping_mul(31).wrapping_add(i * 7)) % 5;
            match pick {
                0 => Behaviour {
                    drop_after_publishes: Some(1 + (i as usize % 3)),
                    ..Behaviour::default()
                },
                1 => Behaviour {
                    send_garbage: true,
                    ..Behaviour::default()
                },
                2 => Behaviour {
                    never_ack: true,
                    drop_after_publishes: Some(3),
                    ..Behaviour::default()
                },
                3 => Behaviour {
                    close_with: Some(1001),
                    ..Behaviour::default()
                },
                _ => Behaviour {
                    max_in_flight: 2,
                    drop_after_publishes: Some(4),
                    ..Behaviour::default()
                },
            }
        });
        let relay = Relay::shared(behaviours);
        let mut connector = PeerConnector::new(&relay);
        connector.refusals = (seed % 3) as usize;
        connector
            .write_budgets
            .extend([None, Some(300 + seed as usize * 17)]);
        with_client(config(), connector, async |client| {
            for counter in 1..=30u32 {
                client
                    .publish(["a", "b/c", "d.e"][counter as usize % 3], &counter)
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            eventually("all stored", || client.stats().outbox_len == 0).await;
            let relay = relay.lock().unwrap();
            let boot = &relay.boots[&client.boot_id()];
            let seqs: Vec<u32> = boot.records.iter().map(|r| r.0).collect();
            assert_eq!(seqs, (1..=30).collect::<Vec<_>>(), "seed {seed}");
            // Payload k went out with seq k: in order per channel too.
            for (seq, _, payload) in &boot.records {
                assert_eq!(payload, &seq.to_string());
            }
            assert_eq!(relay.gaps, 0);
            assert!(relay.deliveries >= 30);
        })
        .await;
    }
}

/// Regression: a timer that falls due while the client is answering a
/// server ping must not cut the pong short. Here the pong's write stalls for
/// 8 s after its first 2 bytes, and the keepalive timer (20 s after
/// `Welcome`) falls due inside that stall. Before the fix the runner raced
/// the WebSocket's `receive` (which wrote the pong) against the timer: the
/// timer cancelled the pong mid-frame, the keepalive ping followed the
/// partial pong, the relay's WebSocket parser read garbage, and the link
/// died. Now only the read is raced and the pong is written in full.
#[tokio::test(start_paused = true)]
async fn a_timer_never_cuts_a_pong_short() {
    let relay = Relay::shared([Behaviour {
        ping_after: Some((Duration::from_secs(15), b"are you there")),
        ..Behaviour::default()
    }]);
    let mut connector = PeerConnector::new(&relay);
    connector.stall_pongs = Some(Duration::from_secs(8));
    with_client(config(), connector, async |client| {
        eventually("connected", || client.state() == ConnectionState::Connected).await;
        eventually("the pong", || !relay.lock().unwrap().pongs.is_empty()).await;
        // The stall ended 23 s after Welcome, past the 20 s keepalive
        // deadline that used to cancel the pong.
        client.publish("c", &1).await.unwrap();
        eventually("stored", || client.stats().outbox_len == 0).await;
        tokio::time::sleep(Duration::from_secs(120)).await;
        let relay = relay.lock().unwrap();
        assert_eq!(relay.pongs[0], b"are you there");
        assert_eq!(relay.connections, 1, "the link never broke");
        assert_eq!(client.stats().session.link_failures, 0);
        assert_eq!(client.last_error(), None);
        assert_eq!(client.state(), ConnectionState::Connected);
    })
    .await;
}

/// Publishes carry Unix time: stamped at publish time once `Welcome` told
/// the server's clock, and converted at send time for messages published
/// offline before it.
#[tokio::test(start_paused = true)]
async fn publishes_carry_unix_time_even_when_published_offline() {
    let relay = Relay::shared([]);
    let mut connector = PeerConnector::new(&relay);
    // Offline for a while after boot: the first two attempts are refused.
    connector.refusals = 2;
    with_client(config(), connector, async |client| {
        let start = tokio::time::Instant::now();
        let millis = || start.elapsed().as_millis() as u64;
        client.publish("c", &1).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        client.publish("c", &2).await.unwrap();
        assert_ne!(client.state(), ConnectionState::Connected);
        eventually("connected", || client.state() == ConnectionState::Connected).await;
        let connected_at = millis();
        assert!(connected_at > 500, "{connected_at}");
        tokio::time::sleep(Duration::from_millis(1_234)).await;
        let third = millis();
        client.publish("c", &3).await.unwrap();
        eventually("stored", || client.stats().outbox_len == 0).await;
        let relay = relay.lock().unwrap();
        assert_eq!(
            relay.boots[&client.boot_id()].times,
            [
                Some(UNIX_AT_START),
                Some(UNIX_AT_START + 500),
                Some(UNIX_AT_START + third)
            ]
        );
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn commands_without_a_result_are_acknowledged_with_null() {
    let relay = Relay::shared([Behaviour {
        command: Some((8, "fan", "1")),
        ..Behaviour::default()
    }]);
    let connector = PeerConnector::new(&relay);
    let seen = with_client(config(), connector, async |_client| {
        eventually("command ack", || {
            !relay.lock().unwrap().command_acks.is_empty()
        })
        .await;
        let acks = relay.lock().unwrap().command_acks.clone();
        assert_eq!(acks, [(8, CommandStatus::Unsupported, "null".to_owned())]);
    })
    .await;
    assert_eq!(seen, [(8, "1".to_owned())]);
}
