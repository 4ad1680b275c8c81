//! The real binary with its stdout closed (a supervisor or a pipe that
//! stopped reading): the server keeps serving instead of panicking on its
//! first print, and an admin command fails cleanly.

// Tests are std code; the no_std import lints do not apply.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const BINARY: &str = env!("CARGO_BIN_EXE_tether-server");

/// A pipe whose reading end is already closed: every write to the other end
/// fails with `BrokenPipe` (Rust ignores SIGPIPE).
fn closed_pipe() -> std::io::Result<std::io::PipeWriter> {
    let (reader, writer) = std::io::pipe()?;
    drop(reader);
    Ok(writer)
}

/// `GET /healthz` over a real socket; the status code.
fn healthz(addr: SocketAddr) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0))
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn server_keeps_serving_when_stdout_is_closed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut child = KillOnDrop(
        Command::new(BINARY)
            .args(["--log", "warn", "--listen"])
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(dir.path())
            .stdout(closed_pipe()?)
            .stderr(Stdio::null())
            .spawn()?,
    );
    // It prints the receiver key, the listening address and the dashboard
    // URL into the closed pipe before serving.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(exit) = child.0.try_wait()? {
            return Err(format!("the server exited with a closed stdout: {exit}").into());
        }
        match healthz(addr) {
            Ok(status) => break status,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(error) => return Err(error.into()),
        }
    };
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.0.try_wait()?.is_none(), "the server stopped");
    assert_eq!(healthz(addr)?, 200);
    Ok(())
}

#[test]
fn admin_command_with_closed_stdout_fails_cleanly() -> TestResult {
    let dir = tempfile::tempdir()?;
    let status = Command::new(BINARY)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["tenant", "add", "acme"])
        .stdout(closed_pipe()?)
        .stderr(Stdio::null())
        .status()?;
    // 1 (a failure it reports), not 101 (a panic).
    assert_eq!(status.code(), Some(1));
    Ok(())
}
