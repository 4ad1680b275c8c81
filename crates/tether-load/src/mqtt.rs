//! The Mosquitto peer: Debian's `mosquitto` with persistence on, devices
//! publishing with QoS 1 and receivers subscribed with QoS 1 (persistent
//! sessions), over the MQTT 3.1.1 codec of `rumqttc`.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Packet, PubAck, Publish, Subscribe, SubscribeFilter,
};
use rumqttc::mqttbytes::{Error as MqttError, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::driver::{
    Acked, DeviceLink, DeviceReport, NoReconnect, ReceiverLink, ReceiverReport, connect_with_retry,
    run_device, run_receiver,
};
use crate::workload::Shared;
use crate::ws_client::{source_address, tcp_connect};

/// Largest packet either side accepts.
const MAX_PACKET: usize = 64 * 1024;

/// A running `mosquitto`; killed when dropped.
#[derive(Debug)]
pub struct Mosquitto {
    child: Child,
    addr: SocketAddr,
}

impl Mosquitto {
    /// Starts `mosquitto` on a free loopback port with persistence in
    /// `data_dir`, and waits until it accepts connections. Settings are
    /// the defaults except: persistence on, anonymous clients allowed, no
    /// connection limit, `TCP_NODELAY` (as tether-server sets), logging off.
    pub fn start(binary: &str, data_dir: &Path) -> Result<Self, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|e| format!("free port: {e}"))?
            .port();
        let config = data_dir.join("mosquitto.conf");
        let persistence = data_dir.join("persistence");
        std::fs::create_dir_all(&persistence).map_err(|e| e.to_string())?;
        std::fs::write(
            &config,
            format!(
                "listener {port} 127.0.0.1\n\
                 allow_anonymous true\n\
                 persistence true\n\
                 persistence_location {}/\n\
                 max_connections -1\n\
                 set_tcp_nodelay true\n\
                 log_dest none\n",
                persistence.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "start {binary}: {e} (install it with `cargo xtask setup`: Debian's mosquitto)"
                )
            })?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut mosquitto = Mosquitto { child, addr };
        loop {
            if std::net::TcpStream::connect(addr).is_ok() {
                return Ok(mosquitto);
            }
            if let Ok(Some(status)) = mosquitto.child.try_wait() {
                return Err(format!("mosquitto exited: {status}"));
            }
            if Instant::now() > deadline {
                return Err("mosquitto did not listen within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One MQTT connection: a read buffer, a write buffer.
struct Link {
    stream: TcpStream,
    read: BytesMut,
    write: BytesMut,
}

impl Link {
    async fn connect(
        server: SocketAddr,
        source: std::net::IpAddr,
        client_id: String,
        clean_session: bool,
    ) -> io::Result<Link> {
        let stream = tcp_connect(source, server).await?;
        let mut link = Link {
            stream,
            read: BytesMut::with_capacity(1024),
            write: BytesMut::with_capacity(256),
        };
        let mut connect = Connect::new(client_id);
        connect.keep_alive = 0;
        connect.clean_session = clean_session;
        link.queue(&Packet::Connect(connect))?;
        link.flush().await?;
        match link.next_packet().await? {
            Packet::ConnAck(ConnAck {
                code: ConnectReturnCode::Success,
                ..
            }) => Ok(link),
            other => Err(io::Error::other(format!("expected CONNACK, got {other:?}"))),
        }
    }

    fn queue(&mut self, packet: &Packet) -> io::Result<()> {
        packet
            .write(&mut self.write, MAX_PACKET)
            .map(drop)
            .map_err(|e| io::Error::other(e.to_string()))
    }

    async fn flush(&mut self) -> io::Result<()> {
        if !self.write.is_empty() {
            self.stream.write_all(&self.write).await?;
            self.write.clear();
        }
        Ok(())
    }

    async fn fill(&mut self) -> io::Result<usize> {
        if self.read.capacity() - self.read.len() < 4096 {
            self.read.reserve(16 * 1024);
        }
        self.stream.read_buf(&mut self.read).await
    }

    /// The next packet in what was read, if complete.
    fn parse(&mut self) -> io::Result<Option<Packet>> {
        match Packet::read(&mut self.read, MAX_PACKET) {
            Ok(packet) => Ok(Some(packet)),
            Err(MqttError::InsufficientBytes(_)) => Ok(None),
            Err(error) => Err(io::Error::other(error.to_string())),
        }
    }

    async fn next_packet(&mut self) -> io::Result<Packet> {
        loop {
            if let Some(packet) = self.parse()? {
                return Ok(packet);
            }
            if self.fill().await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed by the broker",
                ));
            }
        }
    }
}

/// The packet id of the `seq`th message (1..=65535, wrapping).
fn packet_id(seq: u32) -> u16 {
    u16::try_from((seq.saturating_sub(1)) % 65_535 + 1).unwrap_or(1)
}

struct MqttDevice {
    link: Link,
    topic: String,
    /// `seq` of the messages in flight by packet id.
    in_flight: std::collections::HashMap<u16, u32>,
}

impl DeviceLink for MqttDevice {
    fn queue_publish(&mut self, seq: u32, payload: &[u8]) -> io::Result<()> {
        let mut publish = Publish::new(self.topic.as_str(), QoS::AtLeastOnce, payload.to_vec());
        publish.pkid = packet_id(seq);
        self.in_flight.insert(publish.pkid, seq);
        self.link.queue(&Packet::Publish(publish))
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.link.flush().await
    }

    async fn fill(&mut self) -> io::Result<usize> {
        self.link.fill().await
    }

    fn take_acks(&mut self, acks: &mut Vec<Acked>) -> io::Result<()> {
        while let Some(packet) = self.link.parse()? {
            if let Packet::PubAck(PubAck { pkid }) = packet
                && let Some(seq) = self.in_flight.remove(&pkid)
            {
                acks.push(Acked::One(seq));
            }
        }
        Ok(())
    }
}

/// One simulated device against Mosquitto.
pub async fn device(
    shared: Arc<Shared>,
    server: SocketAddr,
    index: usize,
    permits: Arc<Semaphore>,
) -> DeviceReport {
    let mut rng = SmallRng::from_os_rng();
    let mut report = DeviceReport::default();
    let workload = &shared.workload;
    let topic = workload.topic(workload.tenant_of(index), &workload.channel(index));
    let client_id = format!("load-{index:05}");
    let connected = connect_with_retry(
        &shared,
        &permits,
        &mut rng,
        &mut report.failed_attempts,
        || {
            Link::connect(
                server,
                source_address(false, index),
                client_id.clone(),
                true,
            )
        },
    )
    .await;
    let Some(link) = connected else {
        return report;
    };
    let device = MqttDevice {
        link,
        topic,
        in_flight: std::collections::HashMap::new(),
    };
    let window = shared.workload.window;
    run_device(
        Arc::clone(&shared),
        index,
        device,
        window,
        rng,
        report,
        None::<NoReconnect>,
    )
    .await
}

struct MqttReceiver {
    link: Link,
}

impl ReceiverLink for MqttReceiver {
    async fn flush(&mut self) -> io::Result<()> {
        self.link.flush().await
    }

    async fn fill(&mut self) -> io::Result<usize> {
        self.link.fill().await
    }

    fn take_messages(&mut self, deliver: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        while let Some(packet) = self.link.parse()? {
            if let Packet::Publish(publish) = packet {
                deliver(&publish.payload);
                if publish.qos != QoS::AtMostOnce {
                    self.link
                        .queue(&Packet::PubAck(PubAck::new(publish.pkid)))?;
                }
            }
        }
        Ok(())
    }
}

/// One receiver: a persistent session subscribed with QoS 1 to the topics
/// of its tenant's channels.
pub async fn receiver(shared: Arc<Shared>, server: SocketAddr, index: usize) -> ReceiverReport {
    match subscribe(&shared, server, index).await {
        Ok(link) => run_receiver(shared, MqttReceiver { link }).await,
        Err(error) => ReceiverReport {
            error: Some(format!("subscribing: {error}")),
            ..ReceiverReport::default()
        },
    }
}

async fn subscribe(shared: &Shared, server: SocketAddr, index: usize) -> io::Result<Link> {
    let workload = &shared.workload;
    let run: u32 = rand::random();
    let mut link = Link::connect(
        server,
        source_address(true, index),
        format!("receiver-{index}-{run:08x}"),
        false,
    )
    .await?;
    let tenant = workload.tenant_of_receiver(index);
    let filters = workload
        .channels_of_receiver(index)
        .iter()
        .map(|channel| SubscribeFilter::new(workload.topic(tenant, channel), QoS::AtLeastOnce))
        .collect::<Vec<_>>();
    let mut subscribe = Subscribe::new_many(filters);
    subscribe.pkid = 1;
    link.queue(&Packet::Subscribe(subscribe))?;
    link.flush().await?;
    match link.next_packet().await? {
        Packet::SubAck(_) => Ok(link),
        other => Err(io::Error::other(format!("expected SUBACK, got {other:?}"))),
    }
}
