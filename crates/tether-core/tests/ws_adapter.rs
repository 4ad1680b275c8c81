//! The async adapter end to end over an in-memory transport: a tether client
//! against a tether server, and each against hand-written peers that break
//! the protocol.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)] // host-side test code

mod support;

use futures_util::future::join;
use support::{block_on, pipe, rng};
use tether_core::ws::{
    ClientRequest, CloseCode, CloseFrame, Config, Error, Frame, HandshakeError, Message, OpCode,
    ProtocolError, Status, WebSocket,
};

/// Decodes every frame the client wrote (masked) from the server's end.
fn client_frames(bytes: &mut [u8]) -> Vec<(OpCode, bool, Vec<u8>)> {
    let mut frames = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let Ok(Status::Complete((frame, used))) = Frame::decode(rest, &Config::server()) else {
            panic!("client wrote a bad frame");
        };
        frames.push((frame.opcode, frame.fin, frame.payload.to_vec()));
        rest = &mut rest[used..];
    }
    frames
}

#[test]
fn client_and_server_exchange_every_kind_of_message() {
    for chunk in [1, 3, 64, 100_000] {
        let (client_io, server_io) = pipe(chunk);
        let big: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let client = async {
            let (mut rx, mut tx) = (vec![0u8; 128 * 1024], vec![0u8; 512]);
            let request = ClientRequest::new("localhost", "/v1?device=1")
                .with_subprotocols(&["tether.v2", "tether.v1"])
                .with_authorization("Bearer token");
            let (mut ws, chosen) = WebSocket::connect(
                client_io,
                &mut rx,
                &mut tx,
                rng(1),
                Config::client().with_fragment_size(7),
                request,
            )
            .await
            .expect("handshake");
            assert_eq!(chosen, Some("tether.v1"));

            ws.send_text("héllo, wörld: fragmented in 7-byte pieces")
                .await
                .unwrap();
            assert_eq!(
                ws.receive().await.unwrap(),
                Message::Text("héllo, wörld: fragmented in 7-byte pieces")
            );
            ws.send_binary(&big).await.unwrap();
            assert_eq!(ws.receive().await.unwrap(), Message::Binary(&big[..]));
            ws.send_binary(&[]).await.unwrap();
            assert_eq!(ws.receive().await.unwrap(), Message::Binary(&[]));
            ws.send(Message::Ping(b"are you there")).await.unwrap();
            assert_eq!(ws.receive().await.unwrap(), Message::Pong(b"are you there"));
            // The server pings us: receive answers by itself, then reports it.
            assert_eq!(ws.receive().await.unwrap(), Message::Ping(b"server ping"));
            assert_eq!(ws.receive().await.unwrap(), Message::Text("after ping"));
            ws.close(CloseCode::GOING_AWAY, "bye").await.unwrap();
            assert!(ws.is_closed());
            assert_eq!(ws.send_text("late").await, Err(Error::Closed));
            assert_eq!(ws.receive().await, Err(Error::Closed));
        };
        let server = async {
            let (mut rx, mut tx) = (vec![0u8; 128 * 1024], vec![0u8; 128 * 1024]);
            let (mut ws, chosen) = WebSocket::accept(
                server_io,
                &mut rx,
                &mut tx,
                rng(2),
                Config::server(),
                &["tether.v1"],
            )
            .await
            .expect("accept");
            assert_eq!(chosen, Some("tether.v1"));
            // Echo text and binary; pings are answered inside receive.
            for _ in 0..3 {
                let mut copy = Vec::new();
                let kind = match ws.receive().await.unwrap() {
                    Message::Text(t) => {
                        copy.extend_from_slice(t.as_bytes());
                        OpCode::Text
                    }
                    Message::Binary(b) => {
                        copy.extend_from_slice(b);
                        OpCode::Binary
                    }
                    other => panic!("unexpected {other:?}"),
                };
                match kind {
                    OpCode::Text => ws
                        .send_text(std::str::from_utf8(&copy).unwrap())
                        .await
                        .unwrap(),
                    _ => ws.send_binary(&copy).await.unwrap(),
                }
            }
            assert_eq!(ws.receive().await.unwrap(), Message::Ping(b"are you there"));
            ws.send(Message::Ping(b"server ping")).await.unwrap();
            assert_eq!(ws.receive().await.unwrap(), Message::Pong(b"server ping"));
            ws.send_text("after ping").await.unwrap();
            assert_eq!(
                ws.receive().await.unwrap(),
                Message::Close(Some(CloseFrame {
                    code: CloseCode::GOING_AWAY,
                    reason: "bye"
                }))
            );
            assert!(ws.is_closed());
        };
        block_on(join(client, server));
    }
}

#[test]
fn client_fragments_by_config_and_by_transmit_buffer() {
    let (client_io, server_io) = pipe(usize::MAX);
    let (mut rx, mut tx) = ([0u8; 256], [0u8; 14 + 10]);
    let peer = &server_io;
    block_on(async {
        // Pre-queue a valid 101 answer for the key the seeded RNG will draw.
        let mut probe = rng(9);
        let key = tether_core::ws::Key::generate(&mut probe);
        let accept = key.accept();
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            std::str::from_utf8(&accept).unwrap()
        );
        peer.inject(response.as_bytes());
        let (mut ws, _) = WebSocket::connect(
            client_io,
            &mut rx,
            &mut tx,
            rng(9),
            Config::client().with_fragment_size(4),
            ClientRequest::new("h", "/"),
        )
        .await
        .unwrap();
        ws.send_binary(b"0123456789").await.unwrap();
        // 10 bytes of payload room in tx, but fragment size 4 wins.
        let mut wire = peer.pending();
        let head = wire.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let frames = client_frames(&mut wire[head..]);
        assert_eq!(
            frames,
            vec![
                (OpCode::Binary, false, b"0123".to_vec()),
                (OpCode::Continuation, false, b"4567".to_vec()),
                (OpCode::Continuation, true, b"89".to_vec()),
            ]
        );
        // Control frames longer than 125 bytes cannot be sent.
        assert!(matches!(
            ws.send(Message::Ping(&[0; 126])).await,
            Err(Error::Encode(_))
        ));
    });
}

/// A server that answers the handshake properly, then writes `frames` raw.
fn client_against_raw_server(
    frames: &[u8],
    max_message: usize,
) -> (Result<Vec<u8>, Error>, Vec<u8>) {
    let (client_io, server_io) = pipe(5);
    let frames = frames.to_vec();
    let (mut rx, mut tx) = (vec![0u8; 4096], vec![0u8; 256]);
    let client = async {
        let (mut ws, _) = WebSocket::connect(
            client_io,
            &mut rx,
            &mut tx,
            rng(3),
            Config::client().with_max_message_size(max_message),
            ClientRequest::new("h", "/"),
        )
        .await
        .unwrap();
        let mut received = Vec::new();
        loop {
            match ws.receive().await {
                Ok(Message::Text(t)) => received.extend_from_slice(t.as_bytes()),
                Ok(Message::Binary(b)) => received.extend_from_slice(b),
                Ok(Message::Close(_)) => return Ok(received),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    };
    let server = async {
        // Read the request with a real server handshake, then go raw.
        let mut head = vec![0u8; 1024];
        let mut filled = 0;
        let mut io = server_io;
        loop {
            use embedded_io_async::{Read, Write};
            filled += io.read(&mut head[filled..]).await.unwrap();
            if let Ok(Status::Complete(request)) = tether_core::ws::Request::parse(&head[..filled])
            {
                let mut out = [0u8; 256];
                let n = request.encode_response(None, &mut out).unwrap();
                io.write_all(&out[..n]).await.unwrap();
                io.write_all(&frames).await.unwrap();
                io.shutdown();
                return io;
            }
        }
    };
    let (result, io) = block_on(join(client, server));
    let mut written = io.pending();
    let closes: Vec<u8> = client_frames(&mut written)
        .into_iter()
        .filter(|(op, _, _)| *op == OpCode::Close)
        .flat_map(|(_, _, payload)| payload)
        .collect();
    (result, closes)
}

#[test]
fn protocol_errors_close_with_the_right_code() {
    let cases: Vec<(Vec<u8>, ProtocolError, u16)> = vec![
        // Masked frame from a server.
        (
            vec![0x82, 0x81, 1, 2, 3, 4, 0],
            ProtocolError::MaskedFrame,
            1002,
        ),
        // Reserved opcode.
        (vec![0x83, 0x00], ProtocolError::ReservedOpcode, 1002),
        // RSV1 without an extension.
        (vec![0xC2, 0x00], ProtocolError::ReservedBitsSet, 1002),
        // Continuation with nothing to continue.
        (
            vec![0x80, 0x00],
            ProtocolError::UnexpectedContinuation,
            1002,
        ),
        // New message inside a fragmented one.
        (
            vec![0x01, 0x01, b'a', 0x81, 0x00],
            ProtocolError::ExpectedContinuation,
            1002,
        ),
        // Fragmented ping.
        (
            vec![0x09, 0x00],
            ProtocolError::FragmentedControlFrame,
            1002,
        ),
        // Invalid UTF-8, split across fragments.
        (
            vec![0x01, 0x01, 0xE2, 0x80, 0x01, 0x28],
            ProtocolError::InvalidUtf8,
            1007,
        ),
        // Text ending inside a code point.
        (
            vec![0x81, 0x02, 0xE2, 0x82],
            ProtocolError::InvalidUtf8,
            1007,
        ),
        // Over the configured message size (100), in one frame and in fragments.
        (
            vec![0x82, 126, 0x00, 200],
            ProtocolError::MessageTooBig,
            1009,
        ),
        (
            [vec![0x02, 60], vec![0; 60], vec![0x80, 60], vec![0; 60]].concat(),
            ProtocolError::MessageTooBig,
            1009,
        ),
        // Bigger than the receive buffer altogether.
        (
            vec![0x82, 127, 0, 0, 0, 1, 0, 0, 0, 0],
            ProtocolError::MessageTooBig,
            1009,
        ),
        // Close with a reserved code, and with a one-byte payload.
        (
            vec![0x88, 0x02, 0x03, 0xED],
            ProtocolError::InvalidCloseCode,
            1002,
        ),
        (
            vec![0x88, 0x01, 0x03],
            ProtocolError::InvalidClosePayload,
            1002,
        ),
    ];
    for (frames, error, code) in cases {
        let (result, closes) = client_against_raw_server(&frames, 100);
        assert_eq!(result, Err(Error::Protocol(error)), "{frames:x?}");
        assert_eq!(closes, code.to_be_bytes(), "{error:?}");
    }
}

#[test]
fn fragmented_message_with_interleaved_ping_is_reassembled() {
    let frames = [
        vec![0x01, 0x03],
        b"hel".to_vec(),
        vec![0x89, 0x02],
        b"hi".to_vec(),
        vec![0x00, 0x01],
        b"l".to_vec(),
        vec![0x80, 0x01],
        b"o".to_vec(),
        vec![0x88, 0x02, 0x03, 0xE8],
    ]
    .concat();
    let (result, closes) = client_against_raw_server(&frames, 100);
    assert_eq!(result, Ok(b"hello".to_vec()));
    // The client echoed the close code back.
    assert_eq!(closes, [0x03, 0xE8]);
}

#[test]
fn handshake_failures_are_reported() {
    for (response, expected) in [
        (
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_string(),
            Error::Handshake(HandshakeError::Status(404)),
        ),
        (
            format!("HTTP/1.1 101 OK\r\nX: {}\r\n\r\n", "y".repeat(600)),
            Error::Handshake(HandshakeError::HeaderTooLong),
        ),
        ("HTTP/1.1 101 OK\r\n".to_string(), Error::TransportClosed),
    ] {
        let (client_io, server_io) = pipe(usize::MAX);
        server_io.inject(response.as_bytes());
        server_io.shutdown();
        let (mut rx, mut tx) = ([0u8; 512], [0u8; 512]);
        let result = block_on(WebSocket::connect(
            client_io,
            &mut rx,
            &mut tx,
            rng(4),
            Config::client(),
            ClientRequest::new("h", "/"),
        ));
        assert_eq!(result.err(), Some(expected));
    }
}

#[test]
fn eof_before_close_is_reported() {
    let (result, _) = client_against_raw_server(&[0x81, 0x01, b'a'], 100);
    assert_eq!(result, Err(Error::TransportClosed));
}

/// Polls `future` once and drops it: what a `select` does to the branch
/// that loses.
fn poll_once_then_cancel<F: core::future::Future>(future: F) -> bool {
    let mut future = core::pin::pin!(future);
    let mut cx = core::task::Context::from_waker(core::task::Waker::noop());
    future.as_mut().poll(&mut cx).is_ready()
}

#[test]
fn read_message_is_cancel_safe_and_never_writes() {
    let (client_io, server_io) = pipe(1);
    let (mut rx, mut tx) = (vec![0u8; 256], vec![0u8; 256]);
    let mut ws = WebSocket::new(client_io, &mut rx, &mut tx, rng(4), Config::client());
    // Half a ping arrives; the read is cancelled while waiting for the rest.
    server_io.inject(&[0x89, 0x02, b'h']);
    assert!(!poll_once_then_cancel(ws.read_message()));
    server_io.inject(b"i");
    server_io.inject(&[0x81, 0x03, b'a', b'b', b'c']);
    // Nothing was lost, and the ping is returned unanswered.
    assert_eq!(block_on(ws.read_message()), Ok(Message::Ping(b"hi")));
    assert_eq!(block_on(ws.read_message()), Ok(Message::Text("abc")));
    assert!(server_io.pending().is_empty(), "read_message wrote");
    // A close is returned; its echo waits for `flush`.
    server_io.inject(&[0x88, 0x02, 0x03, 0xe8]);
    let Ok(Message::Close(Some(close))) = block_on(ws.read_message()) else {
        panic!("expected the close");
    };
    assert_eq!(close.code, CloseCode::NORMAL);
    assert!(ws.is_closed());
    assert!(server_io.pending().is_empty(), "read_message wrote");
    block_on(ws.flush()).unwrap();
    assert_eq!(
        client_frames(&mut server_io.pending()),
        [(OpCode::Close, true, vec![0x03, 0xe8])]
    );
    // Owed only once.
    block_on(ws.flush()).unwrap();
    assert_eq!(server_io.pending().len(), 8);
}

#[test]
fn read_message_owes_the_close_code_of_a_protocol_error() {
    let (client_io, server_io) = pipe(16);
    let (mut rx, mut tx) = (vec![0u8; 256], vec![0u8; 256]);
    let mut ws = WebSocket::new(client_io, &mut rx, &mut tx, rng(5), Config::client());
    // A text message that is not UTF-8.
    server_io.inject(&[0x81, 0x02, 0xc3, 0x28]);
    assert_eq!(
        block_on(ws.read_message()),
        Err(Error::Protocol(ProtocolError::InvalidUtf8))
    );
    assert!(server_io.pending().is_empty());
    block_on(ws.flush()).unwrap();
    assert_eq!(
        client_frames(&mut server_io.pending()),
        [(OpCode::Close, true, 1007u16.to_be_bytes().to_vec())]
    );
}

/// A transport that accepts `allow` bytes, then never accepts another: a
/// send buffer that fills in the middle of a frame.
struct Congested {
    inner: support::End,
    allow: usize,
}

impl embedded_io_async::ErrorType for Congested {
    type Error = core::convert::Infallible;
}

impl embedded_io_async::Read for Congested {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        self.inner.read(buf).await
    }
}

impl embedded_io_async::Write for Congested {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        if self.allow == 0 {
            return core::future::pending().await;
        }
        let n = buf.len().min(self.allow);
        self.allow -= n;
        self.inner.write(&buf[..n]).await
    }

    async fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

#[test]
fn a_send_cancelled_mid_frame_poisons_the_connection() {
    let (client_io, server_io) = pipe(16);
    let transport = Congested {
        inner: client_io,
        allow: 3,
    };
    let (mut rx, mut tx) = (vec![0u8; 256], vec![0u8; 256]);
    let mut ws = WebSocket::new(transport, &mut rx, &mut tx, rng(6), Config::client());
    assert!(!poll_once_then_cancel(ws.send_binary(b"reading")));
    assert_eq!(server_io.pending().len(), 3);
    // Nothing may follow the partial frame.
    assert!(ws.is_closed());
    assert_eq!(
        block_on(ws.send_binary(b"next")),
        Err(Error::WriteCancelled)
    );
    assert_eq!(block_on(ws.flush()), Err(Error::WriteCancelled));
    assert_eq!(block_on(ws.read_message()), Err(Error::WriteCancelled));
    assert_eq!(server_io.pending().len(), 3);
}

#[test]
fn a_pong_cancelled_mid_frame_in_receive_poisons_the_connection() {
    let (client_io, server_io) = pipe(16);
    let transport = Congested {
        inner: client_io,
        allow: 3,
    };
    let (mut rx, mut tx) = (vec![0u8; 256], vec![0u8; 256]);
    let mut ws = WebSocket::new(transport, &mut rx, &mut tx, rng(8), Config::client());
    server_io.inject(&[0x89, 0x04, b'p', b'i', b'n', b'g']);
    // `receive` reads the ping and is cancelled while writing the pong.
    assert!(!poll_once_then_cancel(ws.receive()));
    assert_eq!(server_io.pending().len(), 3);
    assert!(ws.is_closed());
    assert_eq!(block_on(ws.read_message()), Err(Error::WriteCancelled));
    assert_eq!(block_on(ws.send_text("after")), Err(Error::WriteCancelled));
    assert_eq!(server_io.pending().len(), 3);
}

#[test]
fn a_message_that_cannot_be_framed_does_not_poison_the_connection() {
    let (client_io, server_io) = pipe(16);
    let (mut rx, mut tx) = (vec![0u8; 256], vec![0u8; 256]);
    let mut ws = WebSocket::new(client_io, &mut rx, &mut tx, rng(7), Config::client());
    // Control frames carry at most 125 bytes: refused before any byte is written.
    assert!(matches!(
        block_on(ws.send(Message::Ping(&[0; 126]))),
        Err(Error::Encode(_))
    ));
    assert!(server_io.pending().is_empty());
    assert!(!ws.is_closed());
    block_on(ws.send_text("still fine")).unwrap();
    assert_eq!(
        client_frames(&mut server_io.pending()),
        [(OpCode::Text, true, b"still fine".to_vec())]
    );
}

#[test]
fn borrowed_transport_works_like_an_embassy_socket() {
    // embassy-net's `TcpSocket` is usually borrowed: `&mut T` is a transport too.
    let (mut client_io, mut server_io) = pipe(7);
    let client = async {
        let (mut rx, mut tx) = ([0u8; 512], [0u8; 256]);
        let (mut ws, _) = WebSocket::connect(
            &mut client_io,
            &mut rx,
            &mut tx,
            rng(5),
            Config::client(),
            ClientRequest::new("h", "/"),
        )
        .await
        .unwrap();
        ws.send_text("borrowed").await.unwrap();
        ws.close(CloseCode::NORMAL, "").await.unwrap();
    };
    let server = async {
        let (mut rx, mut tx) = ([0u8; 512], [0u8; 256]);
        let (mut ws, _) = WebSocket::accept(
            &mut server_io,
            &mut rx,
            &mut tx,
            rng(6),
            Config::server(),
            &[],
        )
        .await
        .unwrap();
        assert_eq!(ws.receive().await.unwrap(), Message::Text("borrowed"));
        assert!(matches!(
            ws.receive().await.unwrap(),
            Message::Close(Some(_))
        ));
    };
    block_on(join(client, server));
    // The sockets are still ours afterwards.
    assert!(client_io.pending().is_empty());
}
