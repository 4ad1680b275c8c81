//! A lean WebSocket client over tether-core's sans-IO engine: the opening
//! handshake ([`ClientHandshake`]), frames parsed in place by an
//! [`Assembler`] in one receive buffer, outgoing frames encoded
//! ([`Frame::encode`], a fresh masking key each) into one transmit buffer
//! and written with one `write_all`. No task, channel or buffer of a
//! general-purpose WebSocket stack per connection: thousands of these are
//! cheap enough that the generator is not what a run measures.

use std::io;
use std::net::{IpAddr, SocketAddr};

use rand::RngCore;
use rand::rngs::SmallRng;
use tether_core::ws::{
    Assembler, ClientHandshake, ClientRequest, Config, Frame, Message, OpCode, Status,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Connects from `source` (any loopback address: each simulated device has
/// its own, like real devices behind their own routers) to `server`.
pub async fn tcp_connect(source: IpAddr, server: SocketAddr) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The loopback source address of device `index` (127.1.x.y) or of a
/// receiver (127.2.x.y).
pub fn source_address(receiver: bool, index: usize) -> IpAddr {
    let second = if receiver { 2 } else { 1 };
    let index = u32::try_from(index).unwrap_or(0);
    IpAddr::from([
        127,
        second,
        u8::try_from(index / 250 % 256).unwrap_or(0),
        u8::try_from(index % 250 + 1).unwrap_or(1),
    ])
}

/// One client connection.
#[derive(Debug)]
pub struct WsClient {
    stream: TcpStream,
    rx: Vec<u8>,
    assembler: Assembler,
    tx: Vec<u8>,
    rng: SmallRng,
}

impl WsClient {
    /// The opening handshake on `stream`; `rx_len` bounds the largest
    /// message that can be received (and how much one read takes).
    pub async fn connect(
        mut stream: TcpStream,
        host: &str,
        path: &str,
        authorization: &str,
        rx_len: usize,
        mut rng: SmallRng,
    ) -> io::Result<Self> {
        let mut rx = vec![0u8; rx_len.max(1024)];
        let handshake = ClientHandshake::new(
            ClientRequest::new(host, path).with_authorization(authorization),
            &mut rng,
        );
        let len = handshake.encode(&mut rx).map_err(other)?;
        stream.write_all(&rx[..len]).await?;
        let mut filled = 0;
        loop {
            let read = stream.read(&mut rx[filled..]).await?;
            if read == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed during the handshake",
                ));
            }
            filled += read;
            match handshake.parse_response(&rx[..filled]).map_err(other)? {
                Status::Partial => {}
                Status::Complete(response) => {
                    let header_len = response.header_len;
                    rx.copy_within(header_len..filled, 0);
                    let mut assembler = Assembler::new(Config::client());
                    assembler.filled(filled - header_len);
                    return Ok(WsClient {
                        stream,
                        rx,
                        assembler,
                        tx: Vec::with_capacity(256),
                        rng,
                    });
                }
            }
        }
    }

    /// Queues one frame (sent by [`flush`](Self::flush)).
    pub fn queue(&mut self, opcode: OpCode, payload: &[u8]) -> io::Result<()> {
        let frame = Frame::new(opcode, payload);
        let start = self.tx.len();
        self.tx.resize(start + frame.encoded_len(true), 0);
        let key = self.rng.next_u32().to_ne_bytes();
        let written = frame
            .encode(Some(key), &mut self.tx[start..])
            .map_err(other)?;
        self.tx.truncate(start + written);
        Ok(())
    }

    /// Whether frames wait to be flushed.
    pub fn has_queued(&self) -> bool {
        !self.tx.is_empty()
    }

    /// Writes every queued frame. Not cancel-safe: call it outside
    /// `select!`.
    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.tx.is_empty() {
            self.stream.write_all(&self.tx).await?;
            self.tx.clear();
        }
        Ok(())
    }

    /// Reads what the socket has (cancel-safe); `Ok(0)` when it closed.
    pub async fn fill(&mut self) -> io::Result<usize> {
        let space = self.assembler.space(&mut self.rx);
        if space.is_empty() {
            return Err(other("receive buffer full"));
        }
        let read = self.stream.read(space).await?;
        self.assembler.filled(read);
        Ok(read)
    }

    /// The next complete message in what was read, if any.
    pub fn next_message(&mut self) -> io::Result<Option<Message<'_>>> {
        match self.assembler.poll(&mut self.rx).map_err(other)? {
            Status::Partial => Ok(None),
            Status::Complete(_) => Ok(self.assembler.message(&self.rx)),
        }
    }
}

fn other(error: impl core::fmt::Display) -> io::Error {
    io::Error::other(error.to_string())
}
