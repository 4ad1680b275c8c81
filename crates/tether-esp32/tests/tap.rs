//! The device path for real, on the host: tether-esp32's `TcpConnector`
//! and `TlsConnector`, SNTP and DNS, compiled for x86_64, over embassy-net
//! on a Linux TAP device, inside a network namespace this test creates,
//! talking to a real tether-server (TLS, certificate from a test CA) on the
//! TAP's host side.
//!
//! ```text
//!  netns (unshare --net)
//!  ┌─────────────────────────────────────────────────────────────────────┐
//!  │ embassy-net 10.77.0.2 ── tap0 ── 10.77.0.1: tether-server (wss),   │
//!  │   Client + Runner          (frames      DNS (tether-core responder),│
//!  │   TlsConnector<TcpConnector> cut here     SNTP, receiver (rustls)  │
//!  │                              for link loss)                        │
//!  └─────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! Publish, a command and its answer, a server restart and a link loss,
//! with every reading stored exactly once. Skipped, with a message on the
//! test's stderr (not captured), only where the kernel refuses a network
//! namespace or TUN.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod support;

use support::netns::{self, ip};

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Context;
use std::time::Duration;

use embassy_net::{Ipv4Cidr, StackResources, StaticConfigV4};
use embassy_net_driver::{Capabilities, Driver, HardwareAddress, LinkState};
use embassy_net_tuntap::TunTapDevice;
use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use serde_json::{Value, json};
use support::*;
use tether_core::client::{self, ClientConfig, CommandResult, Resources};
use tether_core::outbox::RamOutbox;
use tether_esp32::tls::{MAX_RECORD, PinnedCa, TlsConnector};
use tether_esp32::{EspBoard, TcpConfig, TcpConnector};
use tether_proto::{Command as DeviceCommand, CommandStatus};
use tokio_rustls::rustls;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const HOST: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const DEVICE: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const RELAY: &str = "relay.test";
const WAIT: Duration = Duration::from_secs(30);

#[test]
fn device_path_over_tap() {
    netns::in_network_namespace("device_path_over_tap", inside);
}

fn inside() {
    ip("link set lo up");
    let tap = netns::tap("tap0");
    ip("addr add 10.77.0.1/24 dev tap0");
    ip("link set tap0 up");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    if let Err(error) = local.block_on(&runtime, scenario(tap)) {
        panic!("{error}");
    }
}

/// A driver that drops every frame, both ways, while `cut` is set: the
/// radio link gone, as when a device walks out of Wi-Fi range.
struct Cuttable {
    inner: TunTapDevice,
    cut: Arc<AtomicBool>,
}

enum Tx<T> {
    Real(T),
    Lost,
}

impl<T: embassy_net_driver::TxToken> embassy_net_driver::TxToken for Tx<T> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        match self {
            Tx::Real(token) => token.consume(len, f),
            Tx::Lost => f(&mut vec![0; len]),
        }
    }
}

impl Driver for Cuttable {
    type RxToken<'a>
        = <TunTapDevice as Driver>::RxToken<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = Tx<<TunTapDevice as Driver>::TxToken<'a>>
    where
        Self: 'a;

    fn receive(&mut self, cx: &mut Context<'_>) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        if self.cut.load(Ordering::Relaxed) {
            while let Some((rx, _)) = self.inner.receive(cx) {
                embassy_net_driver::RxToken::consume(rx, |_| ());
            }
            // Look again soon: the link may come back while nothing arrives.
            cx.waker().wake_by_ref();
            return None;
        }
        self.inner.receive(cx).map(|(rx, tx)| (rx, Tx::Real(tx)))
    }

    fn transmit(&mut self, cx: &mut Context<'_>) -> Option<Self::TxToken<'_>> {
        if self.cut.load(Ordering::Relaxed) {
            return Some(Tx::Lost);
        }
        self.inner.transmit(cx).map(Tx::Real)
    }

    fn link_state(&mut self, cx: &mut Context<'_>) -> LinkState {
        self.inner.link_state(cx)
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn hardware_address(&self) -> HardwareAddress {
        self.inner.hardware_address()
    }
}

/// The relay's DNS: tether-core's captive-portal responder, answering every
/// name with the host side of the TAP.
async fn dns_server() -> std::io::Result<()> {
    let socket = tokio::net::UdpSocket::bind((HOST, 53)).await?;
    let mut query = [0u8; 512];
    let mut reply = [0u8; 512];
    loop {
        let (n, from) = socket.recv_from(&mut query).await?;
        if let Ok(answer) =
            tether_core::provisioning::dns::respond(&query[..n], HOST.octets(), 5, &mut reply)
        {
            socket.send_to(&reply[..answer.len], from).await?;
        }
    }
}

/// An SNTP server answering with this machine's clock (RFC 4330, mode 4).
async fn sntp_server() -> std::io::Result<()> {
    const NTP_TO_UNIX: u64 = 2_208_988_800;
    let socket = tokio::net::UdpSocket::bind((HOST, 123)).await?;
    let mut request = [0u8; 128];
    loop {
        let (n, from) = socket.recv_from(&mut request).await?;
        if n < 48 {
            continue;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let seconds = u32::try_from(now.as_secs() + NTP_TO_UNIX).unwrap_or(0);
        let fraction =
            u32::try_from((u64::from(now.subsec_nanos()) << 32) / 1_000_000_000).unwrap_or(0);
        let mut reply = [0u8; 48];
        reply[0] = 0x24; // LI 0, version 4, mode 4 (server)
        reply[1] = 1; // stratum 1
        reply[2] = 6;
        reply[3] = 0xEC;
        reply[12..16].copy_from_slice(b"LOCL");
        for at in [16, 32, 40] {
            reply[at..at + 4].copy_from_slice(&seconds.to_be_bytes());
            reply[at + 4..at + 8].copy_from_slice(&fraction.to_be_bytes());
        }
        // Origin timestamp: the client's transmit timestamp.
        reply[24..32].copy_from_slice(&request[40..48]);
        socket.send_to(&reply, from).await?;
    }
}

/// A receiver over `wss://`, trusting the test CA.
struct Receiver {
    ws: tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
}

impl Receiver {
    async fn connect(addr: SocketAddr, ca: &[u8], key: &str) -> Result<Receiver, BoxError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls::pki_types::CertificateDer::from(ca.to_vec()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(rustls::pki_types::ServerName::try_from(RELAY)?, tcp)
            .await?;
        let mut request =
            format!("wss://{RELAY}:{}/v1/receiver", addr.port()).into_client_request()?;
        request.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {key}"))?,
        );
        let (ws, _) = tokio_tungstenite::client_async(request, tls).await?;
        Ok(Receiver { ws })
    }

    async fn send(&mut self, value: &Value) -> Result<(), BoxError> {
        self.ws
            .send(Message::Text(value.to_string().into()))
            .await?;
        Ok(())
    }

    async fn recv(&mut self) -> Result<Value, BoxError> {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await?
                .ok_or("receiver closed")??;
            if let Message::Text(text) = message {
                return Ok(serde_json::from_str(&text)?);
            }
        }
    }

    /// Every stored event of `channel`, replayed from the start, until
    /// `count` arrived.
    async fn history(&mut self, channel: &str, count: usize) -> Result<Vec<Value>, BoxError> {
        self.send(&json!({"v": 1, "subscribe": {"channel": channel, "from": 0}}))
            .await?;
        let mut events = Vec::new();
        while events.len() < count {
            let message = self.recv().await?;
            if let Some(event) = message.get("event") {
                events.push(event.clone());
            }
        }
        Ok(events)
    }
}

type Board = EspBoard<TlsConnector<TcpConnector, StdRng>, StdRng, RamOutbox<8192>>;

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) -> Result<(), BoxError> {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done() {
        if tokio::time::Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Ok(())
}

async fn scenario(tap: TunTapDevice) -> Result<(), BoxError> {
    // The host side: DNS, SNTP, the relay with a certificate for relay.test.
    tokio::spawn(dns_server());
    tokio::spawn(sntp_server());
    let ca = TestCa::new("tether tap test CA")?;
    let (chain, key) = ca.server_now(&[RELAY])?;
    let dir = tempfile::tempdir()?;
    let server = start_server(
        dir.path(),
        SocketAddr::from((HOST, 0)),
        Some((&chain, &key)),
    )
    .await?;
    let addr = server.local_addr();
    let receiver_key = server
        .first_start_key()
        .ok_or("no first-start key")?
        .to_owned();
    let token = add_device(&server.database_path(), "tap-device")?;

    // The device: embassy-net on the TAP, static address, DNS at the host.
    let cut = Arc::new(AtomicBool::new(false));
    let driver = Cuttable {
        inner: tap,
        cut: Arc::clone(&cut),
    };
    let mut dns_servers = heapless::Vec::new();
    dns_servers.push(HOST).map_err(|_| "dns list")?;
    let net_config = embassy_net::Config::ipv4_static(StaticConfigV4 {
        address: Ipv4Cidr::new(DEVICE, 24),
        gateway: Some(HOST),
        dns_servers,
    });
    let resources: &'static mut StackResources<6> = Box::leak(Box::new(StackResources::new()));
    let (stack, mut net_runner) = embassy_net::new(
        driver,
        net_config,
        resources,
        StdRng::from_os_rng().next_u64(),
    );
    tokio::task::spawn_local(async move { net_runner.run().await });
    stack.wait_config_up().await;

    // Time first: certificates are checked against it.
    let unix = tether_esp32::sntp::synchronize(
        stack,
        "10.77.0.1",
        123,
        embassy_time::Duration::from_secs(5),
    )
    .await
    .map_err(|e| format!("sntp: {e}"))?;
    assert!(
        unix.abs_diff(unix_now()) <= 2,
        "SNTP time {unix} vs {}",
        unix_now()
    );

    let url: &'static str =
        Box::leak(format!("wss://{RELAY}:{}/v1/device", addr.port()).into_boxed_str());
    let authorization: &'static str = Box::leak(format!("Bearer {token}").into_boxed_str());
    let config = ClientConfig::new(url, "tap-device", "tap-1").with_authorization(authorization);
    let (rx, tx) = (
        Box::leak(Box::new([0u8; 4096])),
        Box::leak(Box::new([0u8; 2048])),
    );
    let tcp = TcpConnector::new(
        stack,
        rx,
        tx,
        TcpConfig::default().with_close_timeout(embassy_time::Duration::from_millis(500)),
    );
    let connector = TlsConnector::new(
        tcp,
        PinnedCa(Box::leak(ca.der.clone().into_boxed_slice())),
        StdRng::from_os_rng(),
        Box::leak(vec![0u8; MAX_RECORD].into_boxed_slice()),
        Box::leak(Box::new([0u8; 2048])),
    );
    let board = Board::new(connector, StdRng::from_os_rng(), RamOutbox::new());
    let resources: &'static mut Resources<
        Board,
        embassy_sync::blocking_mutex::raw::NoopRawMutex,
        256,
        2048,
        1024,
        1024,
    > = Box::leak(Box::new(Resources::new()));
    let (client, mut runner) = client::new(board, config, resources)?;
    let led = Arc::new(AtomicBool::new(false));
    let led_in_handler = Arc::clone(&led);
    tokio::task::spawn_local(async move {
        let handler = move |command: &DeviceCommand<'_>, result: &mut CommandResult<'_>| {
            if command.channel != "led" {
                return CommandStatus::Unsupported;
            }
            let on = !led_in_handler.load(Ordering::Relaxed);
            led_in_handler.store(on, Ordering::Relaxed);
            match result.set(&on) {
                Ok(()) => CommandStatus::Ok,
                Err(_) => CommandStatus::Failed,
            }
        };
        runner.run(handler).await
    });

    let published = std::cell::Cell::new(0u32);
    let publish = async |count: u32| -> Result<(), BoxError> {
        for _ in 0..count {
            published.set(published.get() + 1);
            client.publish("temperature", &published.get()).await?;
        }
        Ok(())
    };

    // 1. Publish over wss:// through embassy-net.
    publish(5).await?;
    wait_for("5 acknowledgements", || {
        client.stats().session.acknowledged >= 5
    })
    .await?;
    println!("tap: connected over wss:// via embassy-net; 5 readings acknowledged");

    // 2. A command from a receiver toggles the LED; the answer comes back.
    let mut receiver = Receiver::connect(addr, &ca.der, &receiver_key).await?;
    receiver
        .send(&json!({"v": 1, "send_command": {"request_id": 1, "device": "tap-device", "channel": "led", "payload": null}}))
        .await?;
    let answer = loop {
        let message = receiver.recv().await?;
        if message.get("command_result").is_some() {
            break message;
        }
    };
    assert_eq!(answer["command_result"]["status"], "ok", "{answer}");
    assert_eq!(answer["command_result"]["result"], json!(true), "{answer}");
    assert!(led.load(Ordering::Relaxed));
    drop(receiver);
    println!("tap: command answered, LED on");

    // 3. Server restart: readings taken while it is away arrive afterwards.
    server.shutdown().await;
    publish(5).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let server = start_server(dir.path(), addr, Some((&chain, &key))).await?;
    wait_for("acknowledgements after the restart", || {
        client.stats().session.acknowledged >= 10
    })
    .await?;
    let connections = client.stats().session.connections;
    assert!(connections >= 2, "reconnected: {connections}");
    println!(
        "tap: server restarted, device reconnected ({connections} connections), 10 acknowledged"
    );

    // 4. Link loss: frames dropped both ways long enough for the session's
    // pong timeout; readings taken meanwhile arrive once the link is back.
    cut.store(true, Ordering::Relaxed);
    publish(5).await?;
    let failures = client.stats().session.link_failures;
    wait_for("the session to notice the link loss", || {
        client.stats().session.link_failures > failures
    })
    .await?;
    cut.store(false, Ordering::Relaxed);
    client.retry_now();
    wait_for("acknowledgements after the link came back", || {
        client.stats().session.acknowledged >= 15
    })
    .await?;
    println!("tap: link cut and restored, 15 acknowledged");

    // Every reading stored exactly once, in order.
    let mut receiver = Receiver::connect(addr, &ca.der, &receiver_key).await?;
    let events = receiver.history("temperature", 15).await?;
    let values: Vec<u64> = events
        .iter()
        .filter_map(|e| e["payload"].as_u64())
        .collect();
    assert_eq!(values, (1..=15).collect::<Vec<u64>>(), "{events:?}");
    println!("tap: all 15 readings stored exactly once");
    server.shutdown().await;
    Ok(())
}
