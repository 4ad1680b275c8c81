//! Test helper for tether's cluster tests and load runs: starts **real**
//! servers from the Debian packages on loopback ports, each in a temporary
//! directory, and stops them when dropped. Not published.
//!
//! ```text
//!  test ──▶ Postgres   initdb + postgres  (postgresql)     127.0.0.1:<free port>
//!       ──▶ Nats       nats-server        (nats-server)    127.0.0.1:<free port>
//!                      (or a routed cluster of them: Nats::start_cluster)
//!       ──▶ Haproxy    haproxy -db        (haproxy)        127.0.0.1:<free port> → nodes
//!       ──▶ Supervised any other process (tether-server nodes)
//! ```
//!
//! `cargo xtask setup` installs the packages. Without them the start
//! functions return an error that says so: a test that needs them must
//! **fail**, never skip.
//!
//! # Running as root
//!
//! PostgreSQL refuses to run as root, and CI runs as root. When the
//! process is root, [`Postgres::start`] gives the data directory to the
//! `postgres` system user (made by the Debian package) and runs `initdb`
//! and `postgres` as that user through `setpriv`; otherwise it runs them as
//! the current user.
//!
//! # Nothing left behind
//!
//! Every process runs under a small `sh` watchdog whose standard input is
//! a pipe from this process: when this process ends in any way (a failed
//! test, `kill -9`), the pipe closes and the watchdog stops the server.
//!
//! # Example
//!
//! ```no_run
//! # fn main() -> Result<(), tether_cluster_test::Error> {
//! let postgres = tether_cluster_test::Postgres::start()?;
//! let url = postgres.create_database("suite_1")?;
//! assert!(url.starts_with("postgres://"));
//! let nats = tether_cluster_test::Nats::start()?;
//! assert!(nats.url().starts_with("nats://127.0.0.1:"));
//! # Ok(()) }
//! ```

#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// What went wrong starting or stopping a service.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// A free TCP port on 127.0.0.1 (bound and released: another process could
/// take it in between, which on a test machine practically never happens).
pub fn free_port() -> Result<u16, Error> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until `127.0.0.1:port` accepts connections.
pub fn wait_for_port(port: u16, limit: Duration) -> Result<(), Error> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + limit;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("nothing listens on {addr} after {limit:?}").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A program from a Debian package, or an error naming the package.
fn program(name: &str, package: &str, candidates: &[PathBuf]) -> Result<PathBuf, Error> {
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .ok_or_else(|| {
            format!(
                "{name} not found (Debian package `{package}`; `cargo xtask setup` installs it)"
            )
            .into()
        })
}

fn in_path(name: &str) -> Vec<PathBuf> {
    std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .collect()
        })
        .unwrap_or_default()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// Quotes a word for `sh`.
fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// A process under a watchdog (see the crate docs). Its output goes to a
/// log file.
#[derive(Debug)]
pub struct Supervised {
    watchdog: Option<Child>,
    stdin: Option<ChildStdin>,
    /// The supervised process's id.
    pid: u32,
    log: PathBuf,
}

impl Supervised {
    /// Starts `command` (program and arguments), as `user` if given (via
    /// `setpriv`, when root), with its standard output and error appended
    /// to `log`, and `env` added to its environment.
    pub fn spawn(
        command: &[String],
        user: Option<&str>,
        env: &[(String, String)],
        log: &Path,
    ) -> Result<Supervised, Error> {
        Self::spawn_removing(command, user, env, log, None)
    }

    /// [`spawn`](Self::spawn), and once the process has stopped the
    /// watchdog removes `remove_after` (a temporary directory that a
    /// `static` server would otherwise leave behind).
    pub fn spawn_removing(
        command: &[String],
        user: Option<&str>,
        env: &[(String, String)],
        log: &Path,
        remove_after: Option<&Path>,
    ) -> Result<Supervised, Error> {
        let mut words: Vec<String> = Vec::new();
        if let Some(user) = user {
            words.extend(
                [
                    "setpriv",
                    &format!("--reuid={user}"),
                    &format!("--regid={user}"),
                    "--init-groups",
                    "--",
                ]
                .iter()
                .map(|w| (*w).to_owned()),
            );
        }
        words.extend(command.iter().cloned());
        let line: Vec<String> = words.iter().map(|w| quote(w)).collect();
        // The program runs in the background with its pid printed; the
        // watchdog waits for its stdin to close (this process ended or
        // dropped the handle), then stops the program and waits for it.
        let mut script = format!(
            "{} >>{} 2>&1 </dev/null & pid=$!\necho $pid\nread _ignored\nkill -TERM $pid 2>/dev/null\nwait $pid 2>/dev/null",
            line.join(" "),
            quote(&log.to_string_lossy())
        );
        if let Some(dir) = remove_after {
            script.push_str(&format!("\nrm -rf {}", quote(&dir.to_string_lossy())));
        }
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(script)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = watchdog.stdin.take();
        let stdout = watchdog.stdout.take().ok_or("no stdout")?;
        let mut first = String::new();
        BufReader::new(stdout).read_line(&mut first)?;
        let pid: u32 = first
            .trim()
            .parse()
            .map_err(|_| format!("the watchdog printed {first:?}, not a pid"))?;
        Ok(Supervised {
            watchdog: Some(watchdog),
            stdin,
            pid,
            log: log.to_owned(),
        })
    }

    /// The supervised process's id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Sends a signal (`"KILL"`, `"TERM"`, `"INT"` …) to the process.
    pub fn signal(&self, signal: &str) -> Result<(), Error> {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .status()?;
        if !status.success() {
            return Err(format!("kill -{signal} {} failed", self.pid).into());
        }
        Ok(())
    }

    /// Whether the process still runs.
    pub fn is_running(&self) -> bool {
        Command::new("kill")
            .arg("-0")
            .arg(self.pid.to_string())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
            && !std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
                .is_ok_and(|stat| stat.split_whitespace().nth(2) == Some("Z"))
    }

    /// Waits up to `limit` for the process to end on its own (after a
    /// signal, say); `true` if it did.
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(watchdog) = &mut self.watchdog
                && matches!(watchdog.try_wait(), Ok(Some(_)))
            {
                return true;
            }
            if !self.is_running() {
                // The watchdog reaps it once it reads its stdin's end.
                self.release();
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Kills the process at once (`kill -9`): no shutdown, as in a crash.
    pub fn kill_hard(&mut self) -> Result<(), Error> {
        self.signal("KILL")?;
        if !self.wait_exit(Duration::from_secs(10)) {
            return Err(format!("process {} survived kill -9", self.pid).into());
        }
        Ok(())
    }

    /// Stops the process (SIGTERM through the watchdog) and waits.
    pub fn stop(&mut self) {
        self.release();
    }

    fn release(&mut self) {
        // Closing stdin tells the watchdog to stop the process.
        drop(self.stdin.take());
        if let Some(mut watchdog) = self.watchdog.take() {
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                match watchdog.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = self.signal("KILL");
                        let _ = watchdog.kill();
                        let _ = watchdog.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }

    /// The last `lines` lines of its log (for failure messages).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.release();
    }
}

/// A PostgreSQL server of its own, in a temporary directory, on a free
/// loopback port, with user `tether` (trust authentication on loopback).
#[derive(Debug)]
pub struct Postgres {
    process: Option<Supervised>,
    port: u16,
    bin: PathBuf,
    data: PathBuf,
    user: Option<String>,
    /// The watchdog removes `dir` once the server stopped (for a server
    /// kept in a `static`, never dropped); otherwise `dir` goes on drop.
    remove_with_process: bool,
    // Last: removed after the server stopped.
    dir: tempfile::TempDir,
}

/// The directory of the newest PostgreSQL installed from Debian packages.
fn postgres_bin() -> Result<PathBuf, Error> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|entry| {
                    let version = entry.file_name().to_str()?.parse().ok()?;
                    Some((version, entry.path().join("bin")))
                })
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    let bin = versions.pop().map(|(_, bin)| bin);
    let candidates: Vec<PathBuf> = bin
        .iter()
        .map(|bin| bin.join("postgres"))
        .chain(in_path("postgres"))
        .collect();
    let postgres = program("postgres", "postgresql", &candidates)?;
    Ok(postgres.parent().map(Path::to_owned).unwrap_or_default())
}

impl Postgres {
    /// Initializes a database cluster and starts its server (`fsync` on:
    /// a commit is on disk when it returns, as in production).
    pub fn start() -> Result<Postgres, Error> {
        Self::init(true)
    }

    /// [`start`](Self::start), for a test that owns the server and stops
    /// and resumes it ([`stop`](Self::stop)); it must be dropped (its
    /// directory goes then).
    pub fn start_restartable() -> Result<Postgres, Error> {
        Self::init(false)
    }

    fn init(remove_with_process: bool) -> Result<Postgres, Error> {
        let bin = postgres_bin()?;
        let dir = tempfile::Builder::new().prefix("tether-pg-").tempdir()?;
        let data = dir.path().join("data");
        let user = is_root().then(|| "postgres".to_owned());
        if let Some(user) = &user {
            let status = Command::new("chown")
                .arg(format!("{user}:"))
                .arg(dir.path())
                .status()?;
            if !status.success() {
                return Err(format!(
                    "cannot give {} to user {user} (made by the `postgresql` package)",
                    dir.path().display()
                )
                .into());
            }
        }
        let log = dir.path().join("initdb.log");
        let mut initdb = vec![
            bin.join("initdb").to_string_lossy().into_owned(),
            "-D".into(),
            data.to_string_lossy().into_owned(),
            "-U".into(),
            "tether".into(),
            "--auth=trust".into(),
            "-E".into(),
            "UTF8".into(),
            "--locale=C".into(),
            "--no-sync".into(),
        ];
        let mut command = match &user {
            Some(user) => {
                let mut command = Command::new("setpriv");
                command.args([
                    format!("--reuid={user}"),
                    format!("--regid={user}"),
                    "--init-groups".into(),
                    "--".into(),
                ]);
                command.args(&initdb);
                command
            }
            None => {
                let mut command = Command::new(initdb.remove(0));
                command.args(&initdb);
                command
            }
        };
        let output = command.current_dir(dir.path()).output()?;
        if !output.status.success() {
            return Err(format!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
            .into());
        }
        let _ = std::fs::write(&log, &output.stdout);
        let port = free_port()?;
        let mut postgres = Postgres {
            process: None,
            port,
            bin,
            data,
            user,
            remove_with_process,
            dir,
        };
        postgres.run()?;
        Ok(postgres)
    }

    fn run(&mut self) -> Result<(), Error> {
        let socket_dir = self.dir.path().to_string_lossy().into_owned();
        let command = vec![
            self.bin.join("postgres").to_string_lossy().into_owned(),
            "-D".into(),
            self.data.to_string_lossy().into_owned(),
            "-p".into(),
            self.port.to_string(),
            "-c".into(),
            "listen_addresses=127.0.0.1".into(),
            "-c".into(),
            format!("unix_socket_directories={socket_dir}"),
            "-c".into(),
            "max_connections=300".into(),
            "-c".into(),
            "shared_buffers=128MB".into(),
        ];
        let log = self.dir.path().join("postgres.log");
        let process = Supervised::spawn_removing(
            &command,
            self.user.as_deref(),
            &[],
            &log,
            self.remove_with_process.then(|| self.dir.path()),
        )?;
        self.process = Some(process);
        self.wait_ready()
    }

    fn wait_ready(&self) -> Result<(), Error> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "tether",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success());
            if ready {
                return Ok(());
            }
            if self.process.as_ref().is_some_and(|p| !p.is_running()) || Instant::now() > deadline {
                let tail = self
                    .process
                    .as_ref()
                    .map(|p| p.log_tail(20))
                    .unwrap_or_default();
                return Err(format!("PostgreSQL did not start:\n{tail}").into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server as a crash would (immediate shutdown, SIGQUIT:
    /// connections drop, transactions in flight roll back, what committed
    /// is recovered from the WAL on [`resume`](Self::resume)). Only for a
    /// server from [`start_restartable`](Self::start_restartable).
    pub fn stop(&mut self) -> Result<(), Error> {
        if self.remove_with_process {
            return Err("Postgres::stop needs Postgres::start_restartable".into());
        }
        if let Some(mut process) = self.process.take() {
            process.signal("QUIT")?;
            if !process.wait_exit(Duration::from_secs(30)) {
                return Err("PostgreSQL did not stop".into());
            }
        }
        Ok(())
    }

    /// Starts the server again after [`stop`](Self::stop), on the same
    /// port and data.
    pub fn resume(&mut self) -> Result<(), Error> {
        if self.process.is_some() {
            return Ok(());
        }
        self.run()
    }

    /// The URL of `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://tether@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates an empty database and returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String, Error> {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""))?;
        Ok(self.url(name))
    }

    /// Runs SQL with `psql` on `database`; returns what it printed
    /// (unaligned, tuples only).
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, Error> {
        let output = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "tether",
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-c",
                sql,
            ])
            .output()?;
        if !output.status.success() {
            return Err(format!("psql: {}", String::from_utf8_lossy(&output.stderr)).into());
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut process) = self.process.take() {
            // Data removed with the process: nothing to keep, so no
            // shutdown checkpoint (SIGQUIT, immediate shutdown; writing
            // the checkpoint took seconds of every test binary's end on a
            // loaded machine). Data kept: SIGINT, the fast shutdown.
            let signal = if self.remove_with_process {
                "QUIT"
            } else {
                "INT"
            };
            let _ = process.signal(signal);
            process.wait_exit(Duration::from_secs(10));
        }
    }
}

/// A `nats-server` on a free loopback port (no JetStream), which can be
/// stopped and started again on the same port.
#[derive(Debug)]
pub struct Nats {
    process: Option<Supervised>,
    port: u16,
    /// In a NATS cluster: this server's route port and its peers' route
    /// ports.
    cluster: Option<(u16, Vec<u16>)>,
    /// Its monitoring port (`-m`: `/connz` lists the clients).
    monitor: u16,
    program: PathBuf,
    dir: tempfile::TempDir,
}

impl Nats {
    /// Starts a server.
    pub fn start() -> Result<Nats, Error> {
        let mut nats = Nats::new(None)?;
        nats.resume()?;
        Ok(nats)
    }

    /// Starts a NATS cluster of `size` servers on loopback, routed to each
    /// other (`--cluster`, `--routes`); a client given several of their
    /// URLs moves to another when its server goes away.
    pub fn start_cluster(size: usize) -> Result<Vec<Nats>, Error> {
        let routes: Vec<u16> = (0..size).map(|_| free_port()).collect::<Result<_, _>>()?;
        let mut servers = Vec::new();
        for &route in &routes {
            let peers = routes.iter().copied().filter(|&p| p != route).collect();
            servers.push(Nats::new(Some((route, peers)))?);
        }
        for server in &mut servers {
            server.resume()?;
        }
        // Messages cross servers only once the routes are up.
        let expected = format!("\"num_routes\": {}", size.saturating_sub(1));
        let deadline = Instant::now() + Duration::from_secs(20);
        for server in &servers {
            while !server.monitor("/routez")?.contains(&expected) {
                if Instant::now() > deadline {
                    return Err("the NATS servers did not route to each other".into());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(servers)
    }

    fn new(cluster: Option<(u16, Vec<u16>)>) -> Result<Nats, Error> {
        let candidates: Vec<PathBuf> = [PathBuf::from("/usr/sbin/nats-server")]
            .into_iter()
            .chain(in_path("nats-server"))
            .collect();
        Ok(Nats {
            process: None,
            port: free_port()?,
            cluster,
            monitor: free_port()?,
            program: program("nats-server", "nats-server", &candidates)?,
            dir: tempfile::Builder::new().prefix("tether-nats-").tempdir()?,
        })
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Whether a client that connected with `name` (async-nats
    /// `ConnectOptions::name`) is connected to this server (its `/connz`).
    pub fn has_client(&self, name: &str) -> Result<bool, Error> {
        Ok(self
            .monitor("/connz")?
            .contains(&format!("\"name\": \"{name}\"")))
    }

    /// A page of its monitoring endpoint (`/connz`, `/routez`, …).
    fn monitor(&self, path: &str) -> Result<String, Error> {
        wait_for_port(self.monitor, Duration::from_secs(20))?;
        let mut stream = TcpStream::connect(("127.0.0.1", self.monitor))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())?;
        let mut body = String::new();
        std::io::Read::read_to_string(&mut stream, &mut body)?;
        Ok(body)
    }

    /// Stops the server at once (SIGKILL: clients see the connection drop).
    pub fn stop(&mut self) -> Result<(), Error> {
        if let Some(mut process) = self.process.take() {
            process.kill_hard()?;
        }
        Ok(())
    }

    /// Starts the server again on the same port.
    pub fn resume(&mut self) -> Result<(), Error> {
        let command = vec![
            self.program.to_string_lossy().into_owned(),
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.port.to_string(),
            "-m".into(),
            self.monitor.to_string(),
        ];
        let mut command = command;
        if let Some((route, peers)) = &self.cluster {
            let routes: Vec<String> = peers
                .iter()
                .map(|peer| format!("nats://127.0.0.1:{peer}"))
                .collect();
            command.extend([
                "--cluster_name".into(),
                "tether".into(),
                "--cluster".into(),
                format!("nats://127.0.0.1:{route}"),
                "--routes".into(),
                routes.join(","),
                // Clients use the servers they were given and no others
                // (a node given one server is off NATS while it is down).
                "--no_advertise=true".into(),
            ]);
        }
        let log = self.dir.path().join("nats.log");
        self.process = Some(Supervised::spawn(&command, None, &[], &log)?);
        wait_for_port(self.port, Duration::from_secs(20))
    }
}

/// HAProxy in front of server nodes: one loopback port, round robin over
/// the nodes, a node that fails its health check (`GET /healthz`) or
/// refuses connections taken out.
#[derive(Debug)]
pub struct Haproxy {
    process: Supervised,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    /// Starts HAProxy on a free port in front of `127.0.0.1:<port>` for
    /// each of `backends`.
    pub fn start(backends: &[u16]) -> Result<Haproxy, Error> {
        let candidates: Vec<PathBuf> = [PathBuf::from("/usr/sbin/haproxy")]
            .into_iter()
            .chain(in_path("haproxy"))
            .collect();
        let program = program("haproxy", "haproxy", &candidates)?;
        let dir = tempfile::Builder::new()
            .prefix("tether-haproxy-")
            .tempdir()?;
        let port = free_port()?;
        // `maxconn` takes two descriptors per connection: 4000 stays within
        // a typical `ulimit -n` of 10-20 thousand (HAProxy refuses to start
        // when it cannot raise its limit that far).
        let mut config = format!(
            "global\n    maxconn 4000\n\
             defaults\n    mode http\n    timeout connect 2s\n    timeout client 120s\n\
             \x20   timeout server 120s\n    timeout tunnel 1h\n    option redispatch\n    retries 3\n\
             frontend tether\n    bind 127.0.0.1:{port}\n    default_backend nodes\n\
             backend nodes\n    balance roundrobin\n    option httpchk GET /healthz\n\
             \x20   default-server inter 500ms fall 2 rise 2\n"
        );
        for (index, backend) in backends.iter().enumerate() {
            config.push_str(&format!(
                "    server node{index} 127.0.0.1:{backend} check\n"
            ));
        }
        let path = dir.path().join("haproxy.cfg");
        std::fs::File::create(&path)?.write_all(config.as_bytes())?;
        let command = vec![
            program.to_string_lossy().into_owned(),
            "-db".into(),
            "-f".into(),
            path.to_string_lossy().into_owned(),
        ];
        let process = Supervised::spawn(&command, None, &[], &dir.path().join("haproxy.log"))?;
        wait_for_port(port, Duration::from_secs(20))?;
        Ok(Haproxy {
            process,
            port,
            _dir: dir,
        })
    }

    /// The port devices and receivers connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its process.
    pub fn process(&self) -> &Supervised {
        &self.process
    }
}
