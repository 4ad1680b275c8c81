//! The tether peer: a `tether-server` process with its devices and keys
//! registered in a fresh data directory, devices speaking the binary
//! device protocol and receivers the JSON receiver protocol over
//! [`WsClient`], and the database read back after the run.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use tether_core::ws::{Message, OpCode};
use tether_proto::{
    DeviceToServer, Hello, Payload, Publish, ReceiverToServer, ServerToDevice, Subscribe,
};
use tether_server::store::{AdminStore, ChannelFilter};
use tether_test_support::server_process::ServerProcess;
use tokio::sync::Semaphore;

use crate::driver::{
    Acked, DeviceLink, DeviceReport, ReceiverLink, ReceiverReport, Reconnect, connect_with_retry,
    run_device, run_receiver,
};
use crate::workload::{SeqSet, Shared, Workload, parse_payload};
use crate::ws_client::{WsClient, source_address, tcp_connect};

/// A registered fleet: device ids and tokens, a receiver key per tenant.
#[derive(Debug)]
pub struct Fleet {
    /// `(id, token)` per device index.
    pub devices: Vec<(String, String)>,
    /// A receiver key per tenant.
    pub keys: Vec<String>,
}

/// Registers the workload's tenants, devices and keys (in a server's
/// SQLite file or its PostgreSQL database).
pub async fn register(admin: &dyn AdminStore, workload: &Workload) -> Result<Fleet, String> {
    let mut devices = Vec::with_capacity(workload.devices);
    let mut keys = Vec::with_capacity(workload.tenants);
    for tenant in 0..workload.tenants {
        let id = admin
            .add_tenant(&format!("load-{tenant}"))
            .await
            .map_err(|e| format!("add tenant: {e}"))?;
        keys.push(
            admin
                .add_key(id, &ChannelFilter::ALL, false, None)
                .await
                .map_err(|e| format!("add key: {e}"))?
                .key,
        );
        let ids: Vec<String> = workload
            .devices_of(tenant)
            .map(|d| format!("load-{d:05}"))
            .collect();
        for device in admin
            .add_devices(id, &ids)
            .await
            .map_err(|e| format!("add devices: {e}"))?
        {
            devices.push((device.device_id, device.token));
        }
    }
    Ok(Fleet { devices, keys })
}

/// A running tether-server.
#[derive(Debug)]
pub enum Server {
    /// Its own process (what runs measure).
    Process(ServerProcess),
    /// Inside the generator (for the test command: the accounting is the
    /// same, memory and CPU are the generator's too).
    InProcess(tether_server::Server),
}

impl Server {
    /// Starts `binary` on the data directory with `args`.
    pub fn process(binary: &Path, data_dir: &Path, args: &[String]) -> Result<Server, String> {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ServerProcess::start(binary, data_dir, &args)
            .map(Server::Process)
            .map_err(|e| format!("start tether-server: {e}"))
    }

    /// Starts the server in this process, configured by the same flags.
    pub async fn in_process(data_dir: &Path, args: &[String]) -> Result<Server, String> {
        use clap::Parser;
        let mut argv: Vec<std::ffi::OsString> = vec![
            "tether-server".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            data_dir.into(),
        ];
        argv.extend(args.iter().map(Into::into));
        let cli = tether_server::cli::Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        let config = tether_server::Config::load(cli.settings, cli.config.as_deref())
            .map_err(|e| e.to_string())?;
        tether_server::Server::start(config)
            .await
            .map(Server::InProcess)
            .map_err(|e| format!("start tether-server: {e}"))
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        match self {
            Server::Process(process) => process.addr(),
            Server::InProcess(server) => server.local_addr(),
        }
    }

    /// The process whose memory and CPU are read.
    pub fn id(&self) -> u32 {
        match self {
            Server::Process(process) => process.id(),
            Server::InProcess(_) => std::process::id(),
        }
    }

    /// Stops it gracefully (SIGTERM: every device is closed with 1001)
    /// and starts the same binary on the same address and data directory
    /// (the storm workload); only a server process can.
    pub async fn restart(
        self,
        binary: &Path,
        data_dir: &Path,
        args: &[String],
    ) -> Result<Server, String> {
        let Server::Process(process) = self else {
            return Err("a storm needs the server as its own process, not in-process".into());
        };
        let (binary, data_dir, args) = (binary.to_owned(), data_dir.to_owned(), args.to_vec());
        tokio::task::spawn_blocking(move || {
            let addr = process.addr().to_string();
            process
                .terminate(std::time::Duration::from_secs(30))
                .map_err(|e| format!("stop tether-server: {e}"))?;
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            ServerProcess::start_on(&binary, &data_dir, &addr, &args)
                .map(Server::Process)
                .map_err(|e| format!("restart tether-server: {e}"))
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Stops it: a process is killed (SIGKILL: whatever was acknowledged
    /// was committed, so the database must hold it), an in-process server
    /// shut down.
    pub async fn stop(self) -> Result<(), String> {
        match self {
            Server::Process(process) => process.kill().map_err(|e| e.to_string()),
            Server::InProcess(server) => {
                server.shutdown().await;
                Ok(())
            }
        }
    }
}

struct TetherDevice {
    client: WsClient,
    channel: String,
    pongs: Vec<Vec<u8>>,
    frame: Vec<u8>,
}

impl DeviceLink for TetherDevice {
    fn queue_publish(&mut self, seq: u32, payload: &[u8]) -> io::Result<()> {
        let text = core::str::from_utf8(payload).map_err(io::Error::other)?;
        let publish = DeviceToServer::Publish(Publish {
            seq,
            channel: &self.channel,
            time_ms: None,
            payload: Payload::from_json_str(text),
        });
        self.frame.resize(publish.encoded_len(), 0);
        let len = publish
            .encode(&mut self.frame)
            .map_err(|e| io::Error::other(format!("{e:?}")))?
            .len();
        self.client.queue(OpCode::Binary, &self.frame[..len])
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.client.flush().await
    }

    async fn fill(&mut self) -> io::Result<usize> {
        self.client.fill().await
    }

    fn take_acks(&mut self, acks: &mut Vec<Acked>) -> io::Result<()> {
        while let Some(message) = self.client.next_message()? {
            match message {
                Message::Binary(bytes) => match ServerToDevice::decode(bytes) {
                    Ok(ServerToDevice::Ack(ack)) => acks.push(Acked::UpTo(ack.seq)),
                    Ok(_) => {}
                    Err(error) => return Err(io::Error::other(format!("{error:?}"))),
                },
                Message::Ping(data) => self.pongs.push(data.to_vec()),
                Message::Close(frame) => {
                    return Err(io::Error::other(format!("closed by the server: {frame:?}")));
                }
                Message::Text(_) | Message::Pong(_) => {}
            }
        }
        for pong in self.pongs.drain(..) {
            self.client.queue(OpCode::Pong, &pong)?;
        }
        Ok(())
    }
}

async fn connect_device(
    server: SocketAddr,
    index: usize,
    id: &str,
    token: &str,
    channel: &str,
    seed: u64,
    boot_id: u64,
) -> io::Result<(TetherDevice, usize, u32)> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let rng = &mut rng;
    let stream = tcp_connect(source_address(false, index), server).await?;
    let mut client = WsClient::connect(
        stream,
        &server.to_string(),
        "/v1/device",
        &format!("Bearer {token}"),
        2048,
        SmallRng::from_rng(rng),
    )
    .await?;
    let hello = DeviceToServer::Hello(Hello {
        device_id: id,
        firmware_version: "load",
        boot_id,
        last_acked_seq: 0,
        max_downlink_len: None,
    });
    let bytes = hello
        .encode_to_vec()
        .map_err(|e| io::Error::other(format!("{e:?}")))?;
    client.queue(OpCode::Binary, &bytes)?;
    client.flush().await?;
    loop {
        if client.fill().await? == 0 {
            return Err(io::Error::other("closed before Welcome"));
        }
        let mut window = None;
        while let Some(message) = client.next_message()? {
            match message {
                Message::Binary(bytes) => match ServerToDevice::decode(bytes) {
                    Ok(ServerToDevice::Welcome(welcome)) => {
                        window =
                            Some((usize::from(welcome.max_in_flight), welcome.last_stored_seq));
                    }
                    _ => return Err(io::Error::other("expected Welcome")),
                },
                Message::Close(frame) => {
                    return Err(io::Error::other(format!("closed: {frame:?}")));
                }
                _ => {}
            }
        }
        if let Some((window, last_stored_seq)) = window {
            let device = TetherDevice {
                client,
                channel: channel.to_owned(),
                pongs: Vec::new(),
                frame: Vec::with_capacity(128),
            };
            return Ok((device, window, last_stored_seq));
        }
    }
}

/// One simulated device against tether-server, from connecting to the end
/// of the run.
pub async fn device(
    shared: Arc<Shared>,
    server: SocketAddr,
    index: usize,
    id: String,
    token: String,
    permits: Arc<Semaphore>,
) -> DeviceReport {
    let mut rng = SmallRng::from_os_rng();
    let mut report = DeviceReport::default();
    let channel = shared.workload.channel(index);
    let boot_id = rand::random();
    let connected = connect_with_retry(
        &shared,
        &permits,
        &mut rng,
        &mut report.failed_attempts,
        || {
            connect_device(
                server,
                index,
                &id,
                &token,
                &channel,
                rand::random(),
                boot_id,
            )
        },
    )
    .await;
    let Some((link, window, _)) = connected else {
        return report;
    };
    let window = window.min(shared.workload.window);
    let reconnect = DeviceReconnect {
        server,
        index,
        id,
        token,
        channel,
        boot_id,
    };
    run_device(shared, index, link, window, rng, report, Some(reconnect)).await
}

/// How a device connects again (same boot: the server's watermark says
/// what it stored).
struct DeviceReconnect {
    server: SocketAddr,
    index: usize,
    id: String,
    token: String,
    channel: String,
    boot_id: u64,
}

impl Reconnect<TetherDevice> for DeviceReconnect {
    async fn reconnect(&mut self) -> io::Result<(TetherDevice, u32)> {
        let (link, _, last_stored_seq) = connect_device(
            self.server,
            self.index,
            &self.id,
            &self.token,
            &self.channel,
            rand::random(),
            self.boot_id,
        )
        .await?;
        Ok((link, last_stored_seq))
    }
}

struct TetherReceiver {
    client: WsClient,
    pongs: Vec<Vec<u8>>,
}

impl ReceiverLink for TetherReceiver {
    async fn flush(&mut self) -> io::Result<()> {
        self.client.flush().await
    }

    async fn fill(&mut self) -> io::Result<usize> {
        self.client.fill().await
    }

    fn take_messages(&mut self, deliver: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        while let Some(message) = self.client.next_message()? {
            match message {
                Message::Text(text) => deliver(text.as_bytes()),
                Message::Ping(data) => self.pongs.push(data.to_vec()),
                Message::Close(frame) => {
                    return Err(io::Error::other(format!("closed by the server: {frame:?}")));
                }
                Message::Binary(_) | Message::Pong(_) => {}
            }
        }
        for pong in self.pongs.drain(..) {
            self.client.queue(OpCode::Pong, &pong)?;
        }
        Ok(())
    }
}

/// One receiver: connects with its tenant's key, subscribes to its
/// channels (live only), waits for every `subscribed`, then counts what
/// arrives until the run stops.
pub async fn receiver(
    shared: Arc<Shared>,
    server: SocketAddr,
    index: usize,
    key: String,
) -> ReceiverReport {
    match subscribe(&shared, server, index, &key).await {
        Ok(link) => run_receiver(shared, link).await,
        Err(error) => ReceiverReport {
            error: Some(format!("subscribing: {error}")),
            ..ReceiverReport::default()
        },
    }
}

async fn subscribe(
    shared: &Shared,
    server: SocketAddr,
    index: usize,
    key: &str,
) -> io::Result<TetherReceiver> {
    let stream = tcp_connect(source_address(true, index), server).await?;
    let mut client = WsClient::connect(
        stream,
        &server.to_string(),
        "/v1/receiver",
        &format!("Bearer {key}"),
        256 * 1024,
        SmallRng::from_os_rng(),
    )
    .await?;
    let channels = shared.workload.channels_of_receiver(index);
    for channel in &channels {
        let subscribe = ReceiverToServer::Subscribe(Subscribe {
            channel,
            from: None,
            request_id: None,
        })
        .to_json()
        .map_err(|e| io::Error::other(format!("{e:?}")))?;
        client.queue(OpCode::Text, subscribe.as_bytes())?;
    }
    client.flush().await?;
    let mut subscribed = 0;
    while subscribed < channels.len() {
        if client.fill().await? == 0 {
            return Err(io::Error::other("closed while subscribing"));
        }
        while let Some(message) = client.next_message()? {
            if let Message::Text(text) = message {
                if text.contains("\"subscribed\"") {
                    subscribed += 1;
                } else if text.contains("\"error\"") {
                    return Err(io::Error::other(text.to_owned()));
                }
            }
        }
    }
    Ok(TetherReceiver {
        client,
        pongs: Vec::new(),
    })
}

/// What the database holds after the run.
#[derive(Debug, Default)]
pub struct Stored {
    /// Records per device index.
    pub records: Vec<SeqSet>,
    /// Rows in all.
    pub rows: u64,
    /// Rows that repeat a `(device, seq)` stored before.
    pub duplicates: u64,
}

impl Stored {
    /// Nothing stored yet, for `devices` devices.
    pub fn new(devices: usize) -> Stored {
        Stored {
            records: vec![SeqSet::default(); devices],
            ..Stored::default()
        }
    }

    /// Counts one stored record (its payload).
    pub fn add(&mut self, payload: &[u8]) {
        self.rows += 1;
        if let Some((_, device, seq)) = parse_payload(payload)
            && let Some(set) = self.records.get_mut(device)
            && !set.insert(seq)
        {
            self.duplicates += 1;
        }
    }

    /// Acknowledged records (per device index) that are not stored.
    pub fn missing(&self, devices: &[DeviceReport]) -> u64 {
        devices
            .iter()
            .zip(&self.records)
            .map(|(report, stored)| {
                report
                    .acked
                    .iter()
                    .filter(|seq| !stored.contains(*seq))
                    .count() as u64
            })
            .sum()
    }
}

/// Reads every stored record back (after the server stopped).
pub fn read_database(path: &PathBuf, devices: usize) -> Result<Stored, String> {
    let conn = rusqlite::Connection::open(path).map_err(|e| e.to_string())?;
    let mut statement = conn
        .prepare("SELECT payload FROM messages")
        .map_err(|e| e.to_string())?;
    let mut rows = statement.query([]).map_err(|e| e.to_string())?;
    let mut stored = Stored::new(devices);
    while let Some(row) = rows.next().map_err(|e| e.to_string())? {
        let payload: String = row.get(0).map_err(|e| e.to_string())?;
        stored.add(payload.as_bytes());
    }
    Ok(stored)
}
