//! The gateway binary, unchanged, against a simulated ESP8266 on a
//! pseudo-terminal and the real tether-server on loopback: the simulator
//! holds the pty's master side, the gateway opens the slave (`/dev/pts/N`)
//! as it would open `/dev/ttyUSB0`, through termios. Lines on its stdin
//! are published and acknowledged, commands sent over HTTP come back with
//! their results, and at the end of the input it drains and exits.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

#[path = "../../../crates/tether-esp8266/tests/common/mod.rs"]
mod common;

use std::io;
use std::os::fd::{AsFd as _, OwnedFd};
use std::pin::Pin;
use std::process::Stdio;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use common::{PASSPHRASE, SSID, TestServer, time_limit};
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
use serde_json::{Value, json};
use tether_esp8266_sim::SimConfig;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::process::{Child, ChildStdout, Command};

/// The master side of a pseudo-terminal, for tokio.
struct PtyMaster(AsyncFd<OwnedFd>);

impl AsyncRead for PtyMaster {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| Ok(nix::unistd::read(fd.get_ref(), unfilled)?)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => {}
            }
        }
    }
}

impl AsyncWrite for PtyMaster {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            match guard.try_io(|fd| Ok(nix::unistd::write(fd.get_ref(), buf)?)) {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => {}
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A pseudo-terminal whose slave is in raw mode (as a UART is: no echo,
/// no line editing before the gateway even opens it). Returns the master,
/// the slave (kept open so the master never reads EIO) and its path.
fn pty() -> Result<(PtyMaster, OwnedFd, String), common::BoxError> {
    let pair = nix::pty::openpty(None, None)?;
    let mut termios = tcgetattr(pair.slave.as_fd())?;
    cfmakeraw(&mut termios);
    tcsetattr(pair.slave.as_fd(), SetArg::TCSANOW, &termios)?;
    let path = nix::unistd::ttyname(pair.slave.as_fd())?
        .to_string_lossy()
        .into_owned();
    fcntl(pair.master.as_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    // Deprecated because a `T: AsRawFd` need not own its descriptor; an
    // `OwnedFd` does, and stays registered exactly as long as it is open.
    #[allow(deprecated)]
    let master = AsyncFd::new(pair.master)?;
    Ok((PtyMaster(master), pair.slave, path))
}

/// The gateway's stdout, read an event at a time.
struct Events {
    lines: tokio::io::Lines<tokio::io::BufReader<ChildStdout>>,
    seen: Vec<Value>,
}

impl Events {
    /// Reads events until one matches `wanted`, for at most 30 s.
    async fn until(&mut self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        let found = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = self.lines.next_line().await.expect("gateway stdout") {
                let event: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not a JSON event: {line:?} ({e})"));
                self.seen.push(event.clone());
                if wanted(&event) {
                    return Some(event);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(event)) => event,
            Ok(None) => panic!("the gateway ended before {what}; events: {:?}", self.seen),
            Err(_) => panic!("no {what} within 30 s; events: {:?}", self.seen),
        }
    }
}

fn gateway(port: &str, server: &TestServer, token: &str) -> io::Result<Child> {
    Command::new(env!("CARGO_BIN_EXE_esp8266-linux-gateway"))
        .args(["--port", port, "--baud", "115200"])
        .args(["--url", &format!("ws://{}/v1/device", server.addr)])
        .args(["--device-id", "gw-1", "--channel", "gateway/lines"])
        .args(["--ssid", SSID])
        .env("TETHER_DEVICE_TOKEN", token)
        .env("TETHER_WIFI_PASSPHRASE", PASSPHRASE)
        .env("RUST_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_runs_a_session_through_a_modem_on_a_pty() -> Result<(), common::BoxError> {
    let _limit = time_limit(
        "the_gateway_runs_a_session_through_a_modem_on_a_pty",
        Duration::from_secs(120),
    );
    let mut server = TestServer::start().await?;
    let token = server.add_device("gw-1")?;
    let (master, _slave, path) = pty()?;
    let config = SimConfig::new(31)
        .with_network(SSID, PASSPHRASE, -50)
        .with_max_chunk(16);
    let sim = tether_esp8266_sim::spawn(config, master);

    let mut child = gateway(&path, &server, &token)?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut events = Events {
        lines: tokio::io::BufReader::new(stdout).lines(),
        seen: Vec::new(),
    };
    events
        .until("a connection", |e| e["state"] == "connected")
        .await;

    // Publish: JSON lines as JSON, anything else as a string.
    stdin
        .write_all(b"{\"temperature\":21.5}\nhello from the gateway\n42\n")
        .await?;
    stdin.flush().await?;
    events
        .until("three acknowledgements", |e| {
            e["event"] == "acknowledged" && e["total"] == 3
        })
        .await;
    assert_eq!(
        server.payloads("gateway/lines").await?,
        [
            json!({"temperature": 21.5}),
            json!("hello from the gateway"),
            json!(42)
        ]
    );

    // Commands and their results, through HTTP.
    let answer = server.command("gw-1", "echo", json!({"x": [1, 2]})).await?;
    assert_eq!(answer, json!({"status": "ok", "result": {"x": [1, 2]}}));
    events
        .until("the echo command", |e| e["channel"] == "echo")
        .await;
    let answer = server.command("gw-1", "uptime", json!(null)).await?;
    assert_eq!(answer["status"], "ok", "{answer}");
    assert!(answer["result"]["seconds"].is_u64(), "{answer}");
    let answer = server.command("gw-1", "reboot", json!(null)).await?;
    assert_eq!(answer["status"], "unsupported", "{answer}");

    // The end of the input: the last message is acknowledged, then it exits.
    stdin.write_all(b"\"last\"\n").await?;
    drop(stdin);
    events.until("the drain", |e| e["event"] == "drained").await;
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await??;
    assert!(status.success(), "{status}");
    assert_eq!(
        server.payloads("gateway/lines").await?.last(),
        Some(&json!("last"))
    );

    // It went through the modem, in passive receive mode.
    let observed = sim.observed();
    assert_eq!(observed.joins.first().map(String::as_str), Some(SSID));
    assert!(observed.commands.iter().any(|c| c == "AT+CIPRECVDATA"));
    assert!(observed.bytes_sent > 0 && observed.bytes_received > 0);
    server.stop().await;
    Ok(())
}
