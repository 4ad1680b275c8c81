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

use common::{TestServer, time_limit};
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

/// The command line `docs/esp8266.md` shows, so the docs cannot drift:
/// its environment and its arguments.
struct Documented {
    env: Vec<(String, String)>,
    args: Vec<String>,
}

impl Documented {
    fn read() -> Self {
        const DOCS: &str = include_str!("../../../docs/esp8266.md");
        let block = DOCS
            .split_once("<!-- gateway-command")
            .and_then(|(_, rest)| rest.split_once("```sh\n"))
            .and_then(|(_, rest)| rest.split_once("```"))
            .map(|(block, _)| block.replace("\\\n", " "))
            .expect("docs/esp8266.md shows the gateway's command line");
        let words = shell_words(&block);
        let program = words
            .iter()
            .position(|w| w == "esp8266-linux-gateway")
            .expect("the command runs esp8266-linux-gateway");
        let env = words[..program]
            .iter()
            .map(|w| {
                let (name, value) = w.split_once('=').expect("NAME=value before the program");
                (name.to_owned(), value.to_owned())
            })
            .collect();
        Self {
            env,
            args: words[program + 1..].to_vec(),
        }
    }

    fn arg(&self, flag: &str) -> &str {
        let at = self.args.iter().position(|a| a == flag);
        at.and_then(|i| self.args.get(i + 1))
            .unwrap_or_else(|| panic!("the documented command has no {flag}"))
    }

    fn env(&self, name: &str) -> &str {
        self.env
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("the documented command sets no {name}"))
    }

    /// Its arguments with `flag`'s value replaced.
    fn replace(&mut self, flag: &str, value: &str) {
        let at = self.args.iter().position(|a| a == flag);
        match at.and_then(|i| self.args.get_mut(i + 1)) {
            Some(slot) => value.clone_into(slot),
            None => panic!("the documented command has no {flag}"),
        }
    }
}

/// Splits a shell command line into words: blanks separate them, single
/// quotes keep them together (all the docs use).
fn shell_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut started = false;
    for c in text.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                started = true;
            }
            c if c.is_whitespace() && !quoted => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            c => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(word);
    }
    words
}

fn gateway(documented: &Documented, token: &str) -> io::Result<Child> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_esp8266-linux-gateway"));
    for (name, value) in &documented.env {
        command.env(name, value);
    }
    command
        .args(&documented.args)
        .env("TETHER_DEVICE_TOKEN", token)
        .env("RUST_LOG", "warn")
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
    let mut documented = Documented::read();
    let device = documented.arg("--device-id").to_owned();
    let ssid = documented.arg("--ssid").to_owned();
    let passphrase = documented.env("TETHER_WIFI_PASSPHRASE").to_owned();
    let mut server = TestServer::start().await?;
    let token = server.add_device(&device)?;
    let (master, _slave, path) = pty()?;
    // Each piece of the modem's output comes a moment after the last, as
    // on a loaded machine: an answer the driver took for another
    // command's (the power-on `ready` once made it so) would shift every
    // answer after it, and the session would stall here every time
    // rather than once in many runs.
    let config = SimConfig::new(31)
        .with_network(&ssid, &passphrase, -50)
        .with_max_chunk(16)
        .with_output_gap(Duration::from_millis(2));
    let sim = tether_esp8266_sim::spawn(config, master);

    // The documented command, on this machine's pty and relay.
    documented.replace("--port", &path);
    documented.replace("--url", &format!("ws://{}/v1/device", server.addr));
    let mut child = gateway(&documented, &token)?;
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
    let answer = server
        .command(&device, "echo", json!({"x": [1, 2]}))
        .await?;
    assert_eq!(answer, json!({"status": "ok", "result": {"x": [1, 2]}}));
    events
        .until("the echo command", |e| e["channel"] == "echo")
        .await;
    let answer = server.command(&device, "uptime", json!(null)).await?;
    assert_eq!(answer["status"], "ok", "{answer}");
    assert!(answer["result"]["seconds"].is_u64(), "{answer}");
    let answer = server.command(&device, "reboot", json!(null)).await?;
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
    assert_eq!(observed.joins.first(), Some(&ssid));
    assert!(observed.commands.iter().any(|c| c == "AT+CIPRECVDATA"));
    assert!(observed.bytes_sent > 0 && observed.bytes_received > 0);
    server.stop().await;
    Ok(())
}
