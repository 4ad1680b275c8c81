//! Interop over real TCP on 127.0.0.1: the tether client against a
//! tokio-tungstenite echo server, and a tokio-tungstenite client against the
//! tether server role. Text, binary, fragmented, 1 MiB, ping/pong, close
//! codes.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)] // host-side test code
#![allow(clippy::result_large_err)] // tungstenite's handshake callback signature

use embedded_io_adapters::tokio_1::FromTokio;
use futures_util::{SinkExt, StreamExt};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tether_core::ws::{ClientRequest, CloseCode, CloseFrame, Config, Message, WebSocket};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::protocol::CloseFrame as TCloseFrame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::Frame as TFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{
    CloseCode as TCloseCode, Data, OpCode as TOpCode,
};
use tokio_tungstenite::tungstenite::{Bytes, Message as TMessage};

const MIB: usize = 1024 * 1024;

fn big_payload() -> Vec<u8> {
    (0..MIB).map(|i| (i * 131 % 251) as u8).collect()
}

/// A tokio-tungstenite echo server for one connection. It echoes text and
/// binary; on the text "ping me" it pings with "srv" and reports the pong
/// payload back as text; on "close me" it closes with 1001. It reports the
/// close frame it received, if any.
async fn tungstenite_echo_server() -> (u16, oneshot::Receiver<Option<(u16, String)>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (report, reported) = oneshot::channel();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let config = WebSocketConfig::default()
            .max_message_size(Some(4 * MIB))
            .max_frame_size(Some(4 * MIB));
        let callback = |request: &tokio_tungstenite::tungstenite::handshake::server::Request,
                        mut response: tokio_tungstenite::tungstenite::handshake::server::Response| {
            assert_eq!(request.uri().path(), "/echo");
            assert_eq!(request.headers()["authorization"], "Bearer interop");
            response.headers_mut().insert("Sec-WebSocket-Protocol", "tether.v1".parse().unwrap());
            Ok(response)
        };
        let mut ws =
            tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config))
                .await
                .unwrap();
        let mut close = None;
        while let Some(message) = ws.next().await {
            match message.unwrap() {
                TMessage::Text(t) if t.as_str() == "ping me" => {
                    ws.send(TMessage::Ping(Bytes::from_static(b"srv")))
                        .await
                        .unwrap();
                }
                TMessage::Text(t) if t.as_str() == "close me" => {
                    ws.close(Some(TCloseFrame {
                        code: TCloseCode::Away,
                        reason: "going away".into(),
                    }))
                    .await
                    .unwrap();
                }
                TMessage::Pong(p) => {
                    let text = format!("pong: {}", String::from_utf8_lossy(&p));
                    ws.send(TMessage::text(text)).await.unwrap();
                }
                m @ (TMessage::Text(_) | TMessage::Binary(_)) => ws.send(m).await.unwrap(),
                TMessage::Close(frame) => {
                    close = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                }
                _ => {}
            }
        }
        let _ = report.send(close);
    });
    (port, reported)
}

async fn tether_client<'b>(
    port: u16,
    rx: &'b mut [u8],
    tx: &'b mut [u8],
) -> WebSocket<'b, FromTokio<TcpStream>, StdRng> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let host = format!("127.0.0.1:{port}");
    let request = ClientRequest::new(&host, "/echo")
        .with_subprotocols(&["tether.v1"])
        .with_authorization("Bearer interop");
    let (ws, subprotocol) = WebSocket::connect(
        FromTokio::new(stream),
        rx,
        tx,
        StdRng::from_os_rng(),
        Config::client().with_fragment_size(1000),
        request,
    )
    .await
    .unwrap();
    assert_eq!(subprotocol, Some("tether.v1"));
    ws
}

#[tokio::test]
async fn tether_client_against_tungstenite_server() {
    let (port, reported) = tungstenite_echo_server().await;
    let (mut rx, mut tx) = (vec![0u8; MIB + 1024], vec![0u8; 4096]);
    let mut ws = tether_client(port, &mut rx, &mut tx).await;

    ws.send_text("hello tungstenite ✓").await.unwrap();
    assert_eq!(
        ws.receive().await.unwrap(),
        Message::Text("hello tungstenite ✓")
    );
    ws.send_binary(&[0, 1, 2, 255]).await.unwrap();
    assert_eq!(
        ws.receive().await.unwrap(),
        Message::Binary(&[0, 1, 2, 255])
    );
    // 10 KB of text in 1000-byte fragments.
    let long = "tether ".repeat(1500);
    ws.send_text(&long).await.unwrap();
    assert_eq!(ws.receive().await.unwrap(), Message::Text(long.as_str()));
    let big = big_payload();
    ws.send_binary(&big).await.unwrap();
    assert_eq!(ws.receive().await.unwrap(), Message::Binary(&big[..]));
    // Our ping, tungstenite's pong.
    ws.send(Message::Ping(b"cli")).await.unwrap();
    assert_eq!(ws.receive().await.unwrap(), Message::Pong(b"cli"));
    // Tungstenite's ping, answered by receive; the server reports our pong.
    ws.send_text("ping me").await.unwrap();
    assert_eq!(ws.receive().await.unwrap(), Message::Ping(b"srv"));
    assert_eq!(ws.receive().await.unwrap(), Message::Text("pong: srv"));
    // Close with an application code; tungstenite echoes it.
    ws.close(CloseCode::new(4000), "custom").await.unwrap();
    assert!(ws.is_closed());
    assert_eq!(reported.await.unwrap(), Some((4000, "custom".to_owned())));
}

#[tokio::test]
async fn tungstenite_server_initiates_close() {
    let (port, reported) = tungstenite_echo_server().await;
    let (mut rx, mut tx) = (vec![0u8; 4096], vec![0u8; 4096]);
    let mut ws = tether_client(port, &mut rx, &mut tx).await;
    ws.send_text("close me").await.unwrap();
    assert_eq!(
        ws.receive().await.unwrap(),
        Message::Close(Some(CloseFrame {
            code: CloseCode::GOING_AWAY,
            reason: "going away"
        }))
    );
    assert!(ws.is_closed());
    // The server received our answer: its own code echoed back.
    assert_eq!(reported.await.unwrap(), Some((1001, String::new())));
}

#[tokio::test]
async fn tungstenite_client_against_tether_server() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (report, reported) = oneshot::channel();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (mut rx, mut tx) = (vec![0u8; MIB + 1024], vec![0u8; 2048]);
        let (mut ws, chosen) = WebSocket::accept(
            FromTokio::new(stream),
            &mut rx,
            &mut tx,
            StdRng::from_os_rng(),
            Config::server().with_fragment_size(700),
            &["tether.v1"],
        )
        .await
        .unwrap();
        assert_eq!(chosen, Some("tether.v1"));
        let mut scratch = Vec::new();
        loop {
            let (text, data) = match ws.receive().await.unwrap() {
                Message::Text(t) => (true, t.as_bytes()),
                Message::Binary(b) => (false, b),
                Message::Close(frame) => {
                    let _ = report.send(frame.map(|f| (f.code.as_u16(), f.reason.to_owned())));
                    return;
                }
                _ => continue,
            };
            scratch.clear();
            scratch.extend_from_slice(data);
            if text {
                ws.send_text(std::str::from_utf8(&scratch).unwrap())
                    .await
                    .unwrap();
            } else {
                ws.send_binary(&scratch).await.unwrap();
            }
        }
    });

    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://127.0.0.1:{port}/"
        ))
        .unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "tether.v1".parse().unwrap());
    let config = WebSocketConfig::default()
        .max_message_size(Some(4 * MIB))
        .max_frame_size(Some(4 * MIB));
    let (mut ws, response) =
        tokio_tungstenite::connect_async_with_config(request, Some(config), false)
            .await
            .unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "tether.v1");

    ws.send(TMessage::text("hello tether")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        TMessage::text("hello tether")
    );
    ws.send(TMessage::binary(vec![9u8; 300])).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        TMessage::binary(vec![9u8; 300])
    );
    // Fragmented by the client, with raw frames; echoed in 700-byte
    // fragments by tether, reassembled by tungstenite.
    let part = "fragment ".repeat(100);
    ws.send(TMessage::Frame(TFrame::message(
        part.clone(),
        TOpCode::Data(Data::Text),
        false,
    )))
    .await
    .unwrap();
    ws.send(TMessage::Frame(TFrame::message(
        part.clone(),
        TOpCode::Data(Data::Continue),
        false,
    )))
    .await
    .unwrap();
    ws.send(TMessage::Frame(TFrame::message(
        "end",
        TOpCode::Data(Data::Continue),
        true,
    )))
    .await
    .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        TMessage::text(format!("{part}{part}end"))
    );
    let big = big_payload();
    ws.send(TMessage::binary(big.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), TMessage::binary(big));
    // Tungstenite pings; tether answers inside receive.
    ws.send(TMessage::Ping(Bytes::from_static(b"hi")))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        TMessage::Pong(Bytes::from_static(b"hi"))
    );
    // Close: tether reports the code and echoes it.
    ws.send(TMessage::Close(Some(TCloseFrame {
        code: TCloseCode::Normal,
        reason: "done".into(),
    })))
    .await
    .unwrap();
    match ws.next().await {
        Some(Ok(TMessage::Close(Some(frame)))) => assert_eq!(frame.code, TCloseCode::Normal),
        other => panic!("expected the close echo, got {other:?}"),
    }
    assert_eq!(reported.await.unwrap(), Some((1000, "done".to_owned())));
}
