//! Test clients over real loopback sockets: a device speaking tether-proto
//! binary (or JSON) frames with tokio-tungstenite, a receiver speaking the
//! JSON protocol, and a minimal HTTP/1.1 client.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::std_instead_of_core,
    clippy::std_instead_of_alloc
)]

pub mod accounts;
pub mod faulty_store;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tether_proto::{
    CommandAck, CommandStatus, DeviceToServer, Hello, Payload, Publish, ServerToDevice,
};
use tether_server::store::Admin;
use tether_server::{Config, Limits, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub const WAIT: Duration = Duration::from_secs(10);

/// A server on an ephemeral loopback port with its database in a
/// temporary directory.
pub struct TestServer {
    pub server: Server,
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    /// Receiver key of tenant `default` (read+command).
    pub key: String,
}

pub fn test_limits() -> Limits {
    Limits {
        handshake_timeout: Duration::from_secs(5),
        publish_rate: 10_000,
        publish_burst: 10_000,
        ..Limits::default()
    }
}

/// A configuration change: the test limits, changed by `change`.
pub fn limits(change: impl FnOnce(&mut Limits)) -> impl FnOnce(Config) -> Config {
    move |config| {
        let mut limits = test_limits();
        change(&mut limits);
        config.with_limits(limits)
    }
}

/// The HTTP status of a refused WebSocket upgrade.
pub fn http_status(error: &tokio_tungstenite::tungstenite::Error) -> Option<u16> {
    match error {
        tokio_tungstenite::tungstenite::Error::Http(response) => Some(response.status().as_u16()),
        _ => None,
    }
}

/// The value of one line of `/metrics` (`name` with its labels), or ""
/// if the server has not exported it yet.
pub async fn metric(t: &TestServer, name: &str) -> Result<String, BoxError> {
    let (_, text) = http_raw(t.addr, "GET", "/metrics", None, None).await?;
    Ok(text
        .lines()
        .find_map(|line| line.strip_prefix(name).map(|rest| rest.trim().to_owned()))
        .unwrap_or_default())
}

/// Polls `/metrics` until `name` has `value` (fails after [`WAIT`]).
pub async fn wait_metric(t: &TestServer, name: &str, value: &str) -> TestResult {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = metric(t, name).await?;
        if now == value {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("{name} is {now:?}, expected {value}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl TestServer {
    pub async fn start() -> Result<TestServer, BoxError> {
        Self::start_with(|config| config).await
    }

    pub async fn start_with(
        configure: impl FnOnce(Config) -> Config,
    ) -> Result<TestServer, BoxError> {
        Self::start_with_store_layer(configure, Box::new(|store| store)).await
    }

    /// A server whose endpoints use the real store wrapped by `layer`.
    pub async fn start_with_store_layer(
        configure: impl FnOnce(Config) -> Config,
        layer: tether_server::StoreLayer,
    ) -> Result<TestServer, BoxError> {
        let dir = tempfile::tempdir()?;
        let config =
            Config::new(dir.path().to_owned(), "127.0.0.1:0".parse()?).with_limits(test_limits());
        let server = Server::start_with_store_layer(configure(config), layer).await?;
        let key = server
            .first_start_key()
            .ok_or("no first-start key")?
            .to_owned();
        let addr = server.local_addr();
        Ok(TestServer {
            server,
            dir,
            addr,
            key,
        })
    }

    pub fn admin(&self) -> Result<Admin, BoxError> {
        Ok(Admin::open(&self.server.database_path())?)
    }

    /// Registers a device in tenant `tenant` and returns its token.
    pub fn add_device(&self, tenant: &str, id: &str) -> Result<String, BoxError> {
        let admin = self.admin()?;
        let tenant = admin.tenant_id(tenant)?;
        Ok(admin.add_device(Some(tenant), Some(id), false)?.token)
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }
}

/// What the server sent a device, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Downlink {
    Welcome {
        last_stored_seq: u32,
        max_in_flight: u16,
    },
    Ack(u32),
    Command {
        id: u32,
        channel: String,
        payload: String,
    },
}

pub struct Device {
    pub ws: Ws,
    pub json: bool,
}

pub async fn connect_device(
    addr: SocketAddr,
    token: &str,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut request = format!("ws://{addr}/v1/device").into_client_request()?;
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|e| tokio_tungstenite::tungstenite::Error::HttpFormat(e.into()))?,
    );
    let (ws, _) = tokio_tungstenite::connect_async(request).await?;
    Ok(ws)
}

impl Device {
    pub async fn connect(addr: SocketAddr, token: &str) -> Result<Device, BoxError> {
        Ok(Device {
            ws: connect_device(addr, token).await?,
            json: false,
        })
    }

    pub async fn send(&mut self, message: &DeviceToServer<'_>) -> Result<(), BoxError> {
        let frame = if self.json {
            Message::Text(message.to_json()?.into())
        } else {
            Message::Binary(message.encode_to_vec()?.into())
        };
        self.ws.send(frame).await?;
        Ok(())
    }

    pub async fn hello(&mut self, device_id: &str, boot_id: u64) -> Result<(u32, u16), BoxError> {
        self.hello_with_limit(device_id, boot_id, None).await
    }

    /// `hello` stating `Hello.max_downlink_len` (`None`: as a device older
    /// than the field).
    pub async fn hello_with_limit(
        &mut self,
        device_id: &str,
        boot_id: u64,
        max_downlink_len: Option<u32>,
    ) -> Result<(u32, u16), BoxError> {
        self.send(&DeviceToServer::Hello(Hello {
            device_id,
            firmware_version: "1.0.0",
            boot_id,
            last_acked_seq: 0,
            max_downlink_len,
        }))
        .await?;
        match self.recv().await? {
            Downlink::Welcome {
                last_stored_seq,
                max_in_flight,
            } => Ok((last_stored_seq, max_in_flight)),
            other => Err(format!("expected Welcome, got {other:?}").into()),
        }
    }

    pub async fn publish(
        &mut self,
        seq: u32,
        channel: &str,
        payload: &str,
    ) -> Result<(), BoxError> {
        self.send(&DeviceToServer::Publish(Publish {
            seq,
            channel,
            time_ms: Some(1_700_000_000_000),
            payload: Payload::from_json_str(payload),
        }))
        .await
    }

    pub async fn command_ack(&mut self, id: u32, result: &str) -> Result<(), BoxError> {
        self.send(&DeviceToServer::CommandAck(CommandAck {
            id,
            status: CommandStatus::Ok,
            result: Payload::from_json_str(result),
        }))
        .await
    }

    /// The next protocol message (pings are answered by tungstenite).
    pub async fn recv(&mut self) -> Result<Downlink, BoxError> {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .map_err(|_| "timed out waiting for the server")?
                .ok_or("connection ended")??;
            let decoded = match &message {
                Message::Binary(bytes) => ServerToDevice::decode(bytes)?,
                Message::Text(text) => ServerToDevice::from_json(text)?,
                Message::Close(frame) => return Err(format!("closed: {frame:?}").into()),
                _ => continue,
            };
            return Ok(match decoded {
                ServerToDevice::Welcome(w) => Downlink::Welcome {
                    last_stored_seq: w.last_stored_seq,
                    max_in_flight: w.max_in_flight,
                },
                ServerToDevice::Ack(a) => Downlink::Ack(a.seq),
                ServerToDevice::Command(c) => Downlink::Command {
                    id: c.id,
                    channel: c.channel.to_owned(),
                    payload: c.payload.as_str().unwrap_or("").to_owned(),
                },
            });
        }
    }

    /// Reads until the cumulative ack reaches `seq`.
    pub async fn wait_ack(&mut self, seq: u32) -> Result<(), BoxError> {
        loop {
            match self.recv().await? {
                Downlink::Ack(acked) if acked >= seq => return Ok(()),
                Downlink::Ack(_) => {}
                other => return Err(format!("expected Ack, got {other:?}").into()),
            }
        }
    }
}

/// A TCP connection to `server` from the loopback address `local`
/// (127.0.0.0/8 is all this host's), with a receive buffer of
/// `receive_buffer` bytes if given (a client that stops reading then
/// fills up sooner).
pub async fn tcp_from(
    local: std::net::Ipv4Addr,
    server: SocketAddr,
    receive_buffer: Option<u32>,
) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    if let Some(size) = receive_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    socket.bind(SocketAddr::from((local, 0)))?;
    socket.connect(server).await
}

/// A WebSocket to `path` over `stream`, with `Authorization: Bearer
/// <secret>`.
pub async fn ws_over(
    stream: TcpStream,
    server: SocketAddr,
    path: &str,
    secret: &str,
) -> Result<Ws, BoxError> {
    let mut request = format!("ws://{server}{path}").into_client_request()?;
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {secret}"))?,
    );
    let (ws, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)).await?;
    Ok(ws)
}

/// Waits for the close frame (skipping other messages) and returns its code
/// and reason.
pub async fn close_frame(ws: &mut Ws) -> Result<(u16, String), BoxError> {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .map_err(|_| "timed out waiting for a close frame")?;
        match message {
            Some(Ok(Message::Close(Some(frame)))) => {
                return Ok((u16::from(frame.code), frame.reason.to_string()));
            }
            Some(Ok(Message::Close(None))) => return Err("close without a code".into()),
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(format!("socket error before close: {error}").into()),
            None => return Err("ended without a close frame".into()),
        }
    }
}

/// Waits for the close frame (skipping other messages) and returns its code.
pub async fn close_code(ws: &mut Ws) -> Result<u16, BoxError> {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .map_err(|_| "timed out waiting for a close frame")?;
        match message {
            Some(Ok(Message::Close(Some(frame)))) => return Ok(u16::from(frame.code)),
            Some(Ok(Message::Close(None))) => return Err("close without a code".into()),
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(format!("socket error before close: {error}").into()),
            None => return Err("ended without a close frame".into()),
        }
    }
}

pub struct Receiver {
    pub ws: Ws,
}

impl Receiver {
    /// Connects with the key in the `Authorization` header.
    pub async fn connect(addr: SocketAddr, key: &str) -> Result<Receiver, BoxError> {
        let mut request = format!("ws://{addr}/v1/receiver").into_client_request()?;
        request.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {key}"))?,
        );
        // No Nagle: a request written right after another is not held
        // back waiting for the server's delayed ack.
        let (ws, _) = tokio_tungstenite::connect_async_with_config(request, None, true).await?;
        Ok(Receiver { ws })
    }

    /// Connects the browser way: key in a subprotocol.
    pub async fn connect_subprotocol(addr: SocketAddr, key: &str) -> Result<Receiver, BoxError> {
        let mut request = format!("ws://{addr}/v1/receiver").into_client_request()?;
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_str(&format!("tether.v1, tether-key.{key}"))?,
        );
        let (ws, response) = tokio_tungstenite::connect_async(request).await?;
        let chosen = response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if chosen != "tether.v1" {
            return Err(format!("server chose subprotocol {chosen:?}").into());
        }
        Ok(Receiver { ws })
    }

    /// Connects without credentials and authenticates with a first message.
    pub async fn connect_first_message(addr: SocketAddr, key: &str) -> Result<Receiver, BoxError> {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/receiver")).await?;
        let mut receiver = Receiver { ws };
        receiver
            .send_json(&serde_json::json!({"v": 1, "auth": {"key": key}}))
            .await?;
        Ok(receiver)
    }

    pub async fn send_json(&mut self, value: &Value) -> Result<(), BoxError> {
        self.ws
            .send(Message::Text(value.to_string().into()))
            .await?;
        Ok(())
    }

    pub async fn subscribe(&mut self, channel: &str, from: Option<u64>) -> Result<Value, BoxError> {
        self.send_json(
            &serde_json::json!({"v": 1, "subscribe": {"channel": channel, "from": from}}),
        )
        .await?;
        let answer = self.recv().await?;
        if answer.get("subscribed").is_none() {
            return Err(format!("expected subscribed, got {answer}").into());
        }
        Ok(answer["subscribed"].clone())
    }

    /// The next JSON message.
    pub async fn recv(&mut self) -> Result<Value, BoxError> {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .map_err(|_| "timed out waiting for the server")?
                .ok_or("connection ended")??;
            match message {
                Message::Text(text) => return Ok(serde_json::from_str(&text)?),
                Message::Close(frame) => return Err(format!("closed: {frame:?}").into()),
                _ => {}
            }
        }
    }

    /// The next `n` events' offsets (fails on anything else).
    pub async fn events(&mut self, n: usize) -> Result<Vec<Value>, BoxError> {
        let mut events = Vec::with_capacity(n);
        while events.len() < n {
            let message = self.recv().await?;
            match message.get("event") {
                Some(event) => events.push(event.clone()),
                None => return Err(format!("expected event, got {message}").into()),
            }
        }
        Ok(events)
    }
}

pub fn offsets(events: &[Value]) -> Vec<u64> {
    events.iter().filter_map(|e| e["offset"].as_u64()).collect()
}

/// A minimal HTTP/1.1 request; returns status and parsed JSON body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> Result<(u16, Value), BoxError> {
    let (status, body) = http_raw(addr, method, path, key, body).await?;
    let json = if body.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&body)?
    };
    Ok((status, json))
}

/// A minimal HTTP/1.1 request; returns status and body text.
pub async fn http_raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> Result<(u16, String), BoxError> {
    let body_text = body.map(Value::to_string);
    http_text(addr, method, path, key, body_text.as_deref()).await
}

/// A minimal HTTP/1.1 request with a JSON body given as text (which need
/// not be valid JSON); returns status and body text.
pub async fn http_text(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&str>,
) -> Result<(u16, String), BoxError> {
    let mut stream = TcpStream::connect(addr).await?;
    let body_text = body.unwrap_or_default();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(key) = key {
        request.push_str(&format!("Authorization: Bearer {key}\r\n"));
    }
    if body.is_some() {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body_text.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body_text);
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response)).await??;
    let text = String::from_utf8(response)?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no header end")?;
    let status: u16 = head.split_whitespace().nth(1).ok_or("no status")?.parse()?;
    Ok((status, body.to_owned()))
}

/// A plain HTTP agent that hands 4xx and 5xx answers back as answers.
pub fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// `GET path` with the key, through a real HTTP client (it reads chunked,
/// streamed answers), in a blocking thread: status, headers, body.
pub async fn http_get(
    addr: SocketAddr,
    path: &str,
    key: &str,
) -> Result<(u16, ureq::http::HeaderMap, String), BoxError> {
    let url = format!("http://{addr}{path}");
    let key = key.to_owned();
    tokio::task::spawn_blocking(move || -> Result<_, BoxError> {
        let response = http_agent()
            .get(&url)
            .header("Authorization", &format!("Bearer {key}"))
            .call()?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().read_to_string()?;
        Ok((status, headers, body))
    })
    .await?
}
