//! RFC 6455 conformance: tether-core's WebSocket engine against the
//! Autobahn|Testsuite cases.
//!
//! The cases are run by [kosoku] (PyPI, pinned to [`KOSOKU_VERSION`]), a
//! maintained Python 3 runner that executes Autobahn's own case files (the
//! original `wstest` is Python 2 only). `cargo xtask setup` installs it into
//! a virtual environment under the target directory ([`kosoku_path`]).
//!
//! ```text
//!  server role:  kosoku --mode fuzzingclient ──ws──▶ serve_echo (tether-core, Role::Server)
//!  client role:  run_client_cases (tether-core, Role::Client) ──ws──▶ kosoku --mode fuzzingserver
//! ```
//!
//! Both peers are tether-core's [`WebSocket`] over tokio sockets through
//! `embedded-io-adapters`, echoing every text and binary message back. Pings
//! are answered and closes echoed by [`WebSocket::receive`] itself; the
//! harness only decides what happens to the TCP connection afterwards (the
//! server closes it first, the client waits for the server to, RFC 6455 7.1.1).
//!
//! kosoku writes Autobahn's report layout (`index.json` plus a JSON and HTML
//! file per case); [`Summary::read`] reads the verdicts back.
//!
//! [kosoku]: https://pypi.org/project/kosoku/

use core::time::Duration;
use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use embedded_io_adapters::tokio_1::FromTokio;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tether_core::ws::{ClientRequest, Config, Error, MAX_HEADER_LEN, Message, WebSocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The kosoku release `cargo xtask setup` installs.
pub const KOSOKU_VERSION: &str = "0.1.0";

/// Cases left out: 12.* and 13.* test permessage-deflate (RFC 7692), which
/// tether-core does not implement (it never offers or accepts it).
pub const EXCLUDED_CASES: &[&str] = &["12.*", "13.*"];

/// The agent name tether reports to the fuzzing server.
pub const AGENT: &str = "tether-core";

/// The largest message in the suite is 16 MiB (cases 9.1.6 and 9.2.6); the
/// receive buffer holds it and the header of the frame after it.
const RX_BYTES: usize = 16 * 1024 * 1024 + 64 * 1024;
/// Echoes go out in frames of up to 64 KiB.
const TX_BYTES: usize = 64 * 1024 + MAX_HEADER_LEN;
/// How long a client waits for the server to close TCP after the close
/// handshake (or after failing the connection).
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Where `cargo xtask setup` puts kosoku, given the cargo target directory.
pub fn kosoku_path(target_dir: &Path) -> PathBuf {
    target_dir.join("autobahn-venv").join("bin").join("kosoku")
}

/// Accepts connections on `listener` until the task is dropped, serving
/// each with an echoing tether-core server on its own task.
pub async fn serve_echo(listener: TcpListener) -> io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            if let Err(error) = echo_server_connection(stream).await {
                log_error("server", &error);
            }
        });
    }
}

async fn echo_server_connection(stream: TcpStream) -> Result<(), Error> {
    stream.set_nodelay(true).map_err(io_error)?;
    let (mut rx, mut tx) = buffers();
    let (mut ws, _) = WebSocket::accept(
        FromTokio::new(stream),
        &mut rx,
        &mut tx,
        StdRng::from_os_rng(),
        Config::server(),
        &[],
    )
    .await?;
    let result = echo(&mut ws).await;
    // The server closes the TCP connection first (RFC 6455 7.1.1), after the
    // close handshake or after failing the connection.
    let mut stream = ws.into_inner().into_inner();
    let _ = stream.shutdown().await;
    result
}

/// Drives every case of a fuzzing server at `addr` with an echoing
/// tether-core client, as Autobahn clients do: `/getCaseCount`, then
/// `/runCase?case=N` for each, then `/updateReports`. Returns the number of
/// cases run. A case's protocol errors are the case's business (the
/// verdicts say whether they were right); only failing to reach the server
/// is an error here.
pub async fn run_client_cases(addr: SocketAddr, case_timeout: Duration) -> Result<u32, String> {
    let count = {
        let mut text = String::new();
        client_session(addr, "/getCaseCount", Some(&mut text))
            .await
            .map_err(|e| format!("getCaseCount: {e}"))?;
        text.trim()
            .parse::<u32>()
            .map_err(|e| format!("getCaseCount answered {text:?}: {e}"))?
    };
    for case in 1..=count {
        let path = format!("/runCase?case={case}&agent={AGENT}");
        match tokio::time::timeout(case_timeout, client_session(addr, &path, None)).await {
            Ok(Ok(())) => {}
            Ok(Err(SessionError::Connect(e))) => return Err(format!("case {case}: {e}")),
            Ok(Err(SessionError::WebSocket(error))) => log_error("client", &error),
            Err(_) => return Err(format!("case {case}: no verdict after {case_timeout:?}")),
        }
    }
    // Some fuzzing servers answer `/updateReports` with a close handshake,
    // kosoku just upgrades and hangs up: only reaching it matters.
    match client_session(addr, &format!("/updateReports?agent={AGENT}"), None).await {
        Ok(()) | Err(SessionError::WebSocket(_)) => Ok(count),
        Err(SessionError::Connect(e)) => Err(format!("updateReports: {e}")),
    }
}

#[derive(Debug)]
enum SessionError {
    /// The TCP connection or the opening handshake failed.
    Connect(String),
    /// The WebSocket failed after the handshake (a case may want that).
    WebSocket(Error),
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(e) => f.write_str(e),
            Self::WebSocket(e) => write!(f, "{e}"),
        }
    }
}

/// One client connection to `path`: echoes until the close handshake (the
/// first text message goes to `first_text` instead, for `/getCaseCount`),
/// then waits for the server to close TCP.
async fn client_session(
    addr: SocketAddr,
    path: &str,
    first_text: Option<&mut String>,
) -> Result<(), SessionError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| SessionError::Connect(e.to_string()))?;
    stream
        .set_nodelay(true)
        .map_err(|e| SessionError::Connect(e.to_string()))?;
    let (mut rx, mut tx) = buffers();
    let host = addr.to_string();
    let (mut ws, _) = WebSocket::connect(
        FromTokio::new(stream),
        &mut rx,
        &mut tx,
        StdRng::from_os_rng(),
        Config::client(),
        ClientRequest::new(&host, path),
    )
    .await
    .map_err(|e| SessionError::Connect(format!("handshake: {e}")))?;
    let result = match first_text {
        Some(out) => loop {
            match ws.receive().await {
                Ok(Message::Text(text)) => out.push_str(text),
                Ok(Message::Close(_)) => break Ok(()),
                Ok(_) => {}
                Err(error) => break Err(error),
            }
        },
        None => echo(&mut ws).await,
    };
    // The client waits for the server to close TCP (RFC 6455 7.1.1).
    let mut stream = ws.into_inner().into_inner();
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Ok(1..) = stream.read(&mut sink).await {}
    })
    .await;
    result.map_err(SessionError::WebSocket)
}

/// Echoes text and binary messages until the peer's close has been answered
/// (`Ok`) or the connection failed (`Err`, after [`WebSocket::receive`]
/// sent the close code the failure calls for).
async fn echo<T>(ws: &mut WebSocket<'_, T, StdRng>) -> Result<(), Error>
where
    T: embedded_io_async::Read + embedded_io_async::Write,
{
    let mut scratch = Vec::new();
    loop {
        let text = match ws.receive().await? {
            Message::Text(text) => {
                scratch.clear();
                scratch.extend_from_slice(text.as_bytes());
                true
            }
            Message::Binary(data) => {
                scratch.clear();
                scratch.extend_from_slice(data);
                false
            }
            Message::Close(_) => return Ok(()),
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        if text {
            // Valid: it was a `&str` a moment ago.
            let text = core::str::from_utf8(&scratch).unwrap_or_default();
            ws.send(Message::Text(text)).await?;
        } else {
            ws.send(Message::Binary(&scratch)).await?;
        }
    }
}

fn buffers() -> (Vec<u8>, Vec<u8>) {
    // Zeroed allocations of this size are mapped lazily: a connection pays
    // only for the pages its messages touch.
    (vec![0u8; RX_BYTES], vec![0u8; TX_BYTES])
}

fn io_error(error: io::Error) -> Error {
    Error::Io(embedded_io::Error::kind(&error))
}

/// Errors a case provokes on purpose (protocol violations, abrupt closes)
/// are expected; they are shown only with `TETHER_AUTOBAHN_VERBOSE=1`.
fn log_error(role: &str, error: &Error) {
    if std::env::var_os("TETHER_AUTOBAHN_VERBOSE").is_some() {
        eprintln!("autobahn {role}: {error}");
    }
}

/// The kosoku command, installed by `cargo xtask setup`.
#[derive(Debug, Clone)]
pub struct Kosoku {
    program: PathBuf,
}

impl Kosoku {
    /// kosoku in the virtual environment under `target_dir`; an error that
    /// says how to install it when it is not there (a conformance test must
    /// fail, never skip).
    pub fn find(target_dir: &Path) -> Result<Self, String> {
        let program = kosoku_path(target_dir);
        if program.is_file() {
            Ok(Self { program })
        } else {
            Err(format!(
                "{} not found: run `cargo xtask setup` (it installs kosoku {KOSOKU_VERSION}, the \
                 Autobahn|Testsuite runner, from PyPI into a virtual environment there)",
                program.display()
            ))
        }
    }

    /// Runs the cases against the server at `addr` (tether's server role),
    /// `parallelism` at a time, writing the report to `outdir`. Returns
    /// whether kosoku counted every case as passed.
    pub async fn fuzzing_client(
        &self,
        addr: SocketAddr,
        outdir: &Path,
        parallelism: u32,
    ) -> Result<bool, String> {
        let mut command = self.command("fuzzingclient", &addr.to_string(), outdir);
        command.args(["--parallelism", &parallelism.to_string()]);
        let output = command
            .output()
            .await
            .map_err(|e| format!("cannot start {}: {e}", self.program.display()))?;
        Ok(output.status.success())
    }

    /// Starts a fuzzing server on an ephemeral loopback port for tether's
    /// client role, writing the report to `outdir` once a client has run
    /// every case. Returns the process and its address.
    pub async fn fuzzing_server(
        &self,
        outdir: &Path,
    ) -> Result<(tokio::process::Child, SocketAddr), String> {
        use tokio::io::AsyncBufReadExt;
        let mut child = self
            .command("fuzzingserver", "127.0.0.1:0", outdir)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.program.display()))?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let addr = loop {
            let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
                .await
                .map_err(|_| "kosoku did not say where it listens within 60 s")?
                .map_err(|e| e.to_string())?
                .ok_or("kosoku exited before listening")?;
            if let Some(rest) = line.split("ws://").nth(1) {
                break rest
                    .trim()
                    .parse::<SocketAddr>()
                    .map_err(|e| format!("kosoku listens on {rest:?}: {e}"))?;
            }
        };
        // Keep draining stderr so kosoku never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok((child, addr))
    }

    fn command(&self, mode: &str, address: &str, outdir: &Path) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(["--mode", mode, address, "--outdir"])
            .arg(outdir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true);
        for case in EXCLUDED_CASES {
            command.args(["--exclude", case]);
        }
        command
    }
}

/// One case's verdict, from kosoku's `index.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Case id, e.g. `5.19`.
    pub case: String,
    /// Verdict for the message exchange (`OK`, `NON-STRICT`,
    /// `INFORMATIONAL`, `FAILED`, `UNIMPLEMENTED`).
    pub behavior: String,
    /// Verdict for the closing handshake (`OK`, `INFORMATIONAL`, `FAILED`,
    /// `FAILED BY CLIENT`, `UNCLEAN`, `WRONG CODE`).
    pub behavior_close: String,
}

impl Verdict {
    /// Both verdicts are acceptable: `OK`, `NON-STRICT` or `INFORMATIONAL`.
    pub fn passed(&self) -> bool {
        let fine = |v: &str| matches!(v, "OK" | "NON-STRICT" | "INFORMATIONAL");
        fine(&self.behavior) && fine(&self.behavior_close)
    }
}

/// The verdicts of one run, in case order.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Which role of tether-core was tested, for the printout.
    pub role: &'static str,
    /// One verdict per case.
    pub verdicts: Vec<Verdict>,
}

impl Summary {
    /// Reads `index.json` from a kosoku report directory.
    pub fn read(role: &'static str, outdir: &Path) -> Result<Self, String> {
        let path = outdir.join("index.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let index: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let agents = index.as_object().ok_or("index.json is not an object")?;
        let mut verdicts = Vec::new();
        for cases in agents.values() {
            let cases = cases
                .as_object()
                .ok_or("an agent's cases are not an object")?;
            for (case, entry) in cases {
                let field = |name: &str| {
                    entry
                        .get(name)
                        .and_then(serde_json::Value::as_str)
                        .map(str::to_owned)
                        .ok_or_else(|| format!("case {case}: no {name}"))
                };
                verdicts.push(Verdict {
                    case: case.clone(),
                    behavior: field("behavior")?,
                    behavior_close: field("behaviorClose")?,
                });
            }
        }
        verdicts.sort_by_key(|v| case_key(&v.case));
        Ok(Self { role, verdicts })
    }

    /// The cases with a verdict other than `OK`, `NON-STRICT` or
    /// `INFORMATIONAL`.
    pub fn failures(&self) -> Vec<&Verdict> {
        self.verdicts.iter().filter(|v| !v.passed()).collect()
    }
}

/// `6.10.2` sorts after `6.9.1`.
fn case_key(case: &str) -> Vec<u32> {
    case.split('.')
        .map(|p| p.parse().unwrap_or(u32::MAX))
        .collect()
}

impl fmt::Display for Summary {
    /// Counts per verdict, then every case that was not plainly `OK`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for v in &self.verdicts {
            *counts.entry(&v.behavior).or_default() += 1;
        }
        let counts: Vec<String> = counts.iter().map(|(k, n)| format!("{k} {n}")).collect();
        writeln!(
            f,
            "autobahn ({} role, kosoku {KOSOKU_VERSION}, excluding {}): {} cases: {}",
            self.role,
            EXCLUDED_CASES.join(" "),
            self.verdicts.len(),
            counts.join(", "),
        )?;
        for v in &self.verdicts {
            if v.behavior != "OK" || v.behavior_close != "OK" {
                writeln!(
                    f,
                    "  {:<8} {} (close: {})",
                    v.case, v.behavior, v.behavior_close
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_reads_the_index_and_finds_failures() {
        let dir = std::env::temp_dir().join(format!("tether-autobahn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("index.json"),
            r#"{"tether-core": {
                "6.10.2": {"behavior": "OK", "behaviorClose": "OK"},
                "6.9.1": {"behavior": "NON-STRICT", "behaviorClose": "OK"},
                "7.1.5": {"behavior": "OK", "behaviorClose": "WRONG CODE"},
                "5.1": {"behavior": "FAILED", "behaviorClose": "OK"}
            }}"#,
        )
        .unwrap();
        let summary = Summary::read("server", &dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let cases: Vec<_> = summary.verdicts.iter().map(|v| v.case.as_str()).collect();
        assert_eq!(cases, ["5.1", "6.9.1", "6.10.2", "7.1.5"]);
        let failed: Vec<_> = summary.failures().iter().map(|v| v.case.as_str()).collect();
        assert_eq!(failed, ["5.1", "7.1.5"]);
        let shown = summary.to_string();
        assert!(
            shown.contains("4 cases: FAILED 1, NON-STRICT 1, OK 2"),
            "{shown}"
        );
        assert!(shown.contains("6.9.1    NON-STRICT (close: OK)"), "{shown}");
        assert!(!shown.contains("6.10.2"), "{shown}");
    }
}
