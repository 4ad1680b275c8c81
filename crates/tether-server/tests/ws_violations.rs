//! RFC 6455 violations, written byte by byte on a real socket to both
//! WebSocket endpoints: each is answered with its close code (1002 protocol
//! error, 1007 invalid data), counted in `tether_rejected_total` and logged
//! at info with the peer's address, instead of the connection just
//! dropping.

// Tests are std code; the no_std import lints do not apply.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use common::*;
use tether_proto::{DeviceToServer, Hello, ServerToDevice};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A frame from a client: masked unless `unmasked`.
fn frame(first: u8, payload: &[u8], unmasked: bool) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![first];
    let mask_bit = if unmasked { 0 } else { 0x80 };
    match payload.len() {
        len @ 0..=125 => out.push(mask_bit | len as u8),
        len => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
    }
    if unmasked {
        out.extend_from_slice(payload);
    } else {
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    }
    out
}

/// Each violation: its name, the bytes, the close code it earns.
fn violations() -> Vec<(&'static str, Vec<u8>, u16)> {
    vec![
        ("unmasked frame", frame(0x81, b"hi", true), 1002),
        ("fragmented ping", frame(0x09, b"x", false), 1002),
        ("ping of 126 bytes", frame(0x89, &[7; 126], false), 1002),
        ("RSV1 set", frame(0xc1, b"hi", false), 1002),
        ("RSV3 set", frame(0x92, b"hi", false), 1002),
        ("reserved data opcode", frame(0x83, b"hi", false), 1002),
        ("reserved control opcode", frame(0x8b, b"", false), 1002),
        (
            "continuation without start",
            frame(0x80, b"hi", false),
            1002,
        ),
        (
            "text that is not UTF-8",
            frame(0x81, &[0x68, 0xff, 0xfe], false),
            1007,
        ),
        (
            "close code 999",
            frame(0x88, &999u16.to_be_bytes(), false),
            1002,
        ),
        (
            "close with a 1-byte payload",
            frame(0x88, &[3], false),
            1002,
        ),
    ]
}

/// Opens a WebSocket on `path` by hand; returns the stream after the 101.
async fn upgrade(
    addr: SocketAddr,
    path: &str,
    bearer: Option<&str>,
) -> Result<TcpStream, BoxError> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    if let Some(bearer) = bearer {
        request.push_str(&format!("Authorization: Bearer {bearer}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        if stream.read(&mut byte).await? == 0 {
            return Err("closed during the handshake".into());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8(head)?;
    if !head.starts_with("HTTP/1.1 101") {
        return Err(format!("no upgrade: {head}").into());
    }
    Ok(stream)
}

/// One frame from the server (unmasked): opcode and payload.
async fn read_frame(stream: &mut TcpStream) -> Result<(u8, Vec<u8>), BoxError> {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).await?;
    let len = match head[1] & 0x7f {
        126 => {
            let mut ext = [0u8; 2];
            stream.read_exact(&mut ext).await?;
            usize::from(u16::from_be_bytes(ext))
        }
        127 => {
            let mut ext = [0u8; 8];
            stream.read_exact(&mut ext).await?;
            usize::try_from(u64::from_be_bytes(ext))?
        }
        len => usize::from(len),
    };
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await?;
    Ok((head[0] & 0x0f, payload))
}

/// Reads frames up to the close frame; its code.
async fn close_code_raw(stream: &mut TcpStream) -> Result<u16, BoxError> {
    loop {
        let (opcode, payload) = tokio::time::timeout(WAIT, read_frame(stream))
            .await
            .map_err(|_| "no close frame in time")?
            .map_err(|e| format!("connection ended without a close frame: {e}"))?;
        if opcode == 0x8 {
            let code = payload.get(..2).ok_or("close frame without a code")?;
            return Ok(u16::from_be_bytes([code[0], code[1]]));
        }
    }
}

async fn metric(addr: SocketAddr, kind: &str) -> Result<u64, BoxError> {
    let (_, text) = http_raw(addr, "GET", "/metrics", None, None).await?;
    let prefix = format!("tether_rejected_total{{kind=\"{kind}\"}} ");
    Ok(text
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(Ok(0), str::parse)?)
}

/// A device connection past `Hello` (or before it, `hello: false`).
async fn device(addr: SocketAddr, token: &str, hello: bool) -> Result<TcpStream, BoxError> {
    let mut stream = upgrade(addr, "/v1/device", Some(token)).await?;
    if hello {
        let hello = DeviceToServer::Hello(Hello {
            device_id: "d",
            firmware_version: "1",
            boot_id: 1,
            last_acked_seq: 0,
            max_downlink_len: None,
        })
        .encode_to_vec()?;
        stream.write_all(&frame(0x82, &hello, false)).await?;
        let (opcode, payload) = read_frame(&mut stream).await?;
        assert_eq!(opcode, 0x2);
        assert!(matches!(
            ServerToDevice::decode(&payload)?,
            ServerToDevice::Welcome(_)
        ));
    }
    Ok(stream)
}

#[tokio::test]
async fn every_violation_gets_its_close_code_on_both_endpoints() -> TestResult {
    let t = TestServer::start().await?;
    let token = t.add_device("default", "d")?;
    let mut counted = (0, 0);
    for (name, bytes, expected) in violations() {
        for endpoint in [
            "device before Hello",
            "device",
            "receiver",
            "receiver before auth",
        ] {
            let mut stream = match endpoint {
                "device before Hello" => device(t.addr, &token, false).await?,
                "device" => device(t.addr, &token, true).await?,
                "receiver" => upgrade(t.addr, "/v1/receiver", Some(&t.key)).await?,
                _ => upgrade(t.addr, "/v1/receiver", None).await?,
            };
            stream.write_all(&bytes).await?;
            let code = close_code_raw(&mut stream)
                .await
                .map_err(|e| format!("{name} on {endpoint}: {e}"))?;
            assert_eq!(code, expected, "{name} on {endpoint}");
            if expected == 1007 {
                counted.1 += 1;
            } else {
                counted.0 += 1;
            }
        }
    }
    // Counted by kind (the close-code-999 case is answered by tungstenite
    // itself and counted by the server as it sees it).
    assert_eq!(metric(t.addr, "websocket_protocol_error").await?, counted.0);
    assert_eq!(metric(t.addr, "websocket_invalid_utf8").await?, counted.1);

    // A client that follows the rules still works.
    let mut receiver = Receiver::connect(t.addr, &t.key).await?;
    receiver.subscribe("t", None).await?;
    t.server.shutdown().await;
    Ok(())
}

/// The real binary logs each violation at info, with the peer's address.
#[tokio::test]
async fn violations_are_logged_with_the_peer() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_tether-server"))
        .args(["--listen", "127.0.0.1:0", "--log", "info"])
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (mut addr, mut key) = (None, None);
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line?;
        if let Some(rest) = line.strip_prefix("listening on ") {
            addr = Some(rest.trim().parse::<SocketAddr>()?);
        }
        if let Some(position) = line.find("tk_") {
            key = Some(line[position..].trim().to_owned());
        }
        if addr.is_some() && key.is_some() {
            break;
        }
    }
    let (addr, key) = (addr.ok_or("no address")?, key.ok_or("no key")?);
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut stream = upgrade(addr, "/v1/receiver", Some(&key)).await?;
    let local = stream.local_addr()?;
    stream.write_all(&frame(0xc1, b"hi", false)).await?;
    assert_eq!(close_code_raw(&mut stream).await?, 1002);
    let deadline = std::time::Instant::now() + WAIT;
    let mut found = None;
    while found.is_none() && std::time::Instant::now() < deadline {
        if let Ok(line) = lines_rx.recv_timeout(std::time::Duration::from_millis(100))
            && line.contains("WebSocket protocol violation")
        {
            found = Some(line);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let line = found.ok_or("no log line")?;
    // Plain text when stderr is not a terminal (a pipe, journald).
    assert!(
        !line.contains('\u{1b}'),
        "ANSI escapes in a log file: {line:?}"
    );
    assert!(line.contains(" INFO "), "{line}");
    assert!(line.contains(&local.to_string()), "{line}");
    assert!(line.contains("code=1002"), "{line}");
    Ok(())
}
