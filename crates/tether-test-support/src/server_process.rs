//! A real `tether-server` process on a loopback port, for tests that kill
//! it (SIGKILL) and start it again on the same data directory.

use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running `tether-server`; killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    first_start_key: Option<String>,
}

impl ServerProcess {
    /// Starts `binary` on an ephemeral loopback port with its database in
    /// `data_dir` and `args` added, and waits until it listens (it prints
    /// `listening on <addr>`, the receiver key on a first start, then
    /// `dashboard: …`). Blocks while the server starts.
    pub fn start(binary: &Path, data_dir: &Path, args: &[&str]) -> io::Result<Self> {
        Self::start_on(binary, data_dir, "127.0.0.1:0", args)
    }

    /// [`start`](Self::start) on `listen` (a node behind a load balancer
    /// comes back on the same port after a restart).
    pub fn start_on(
        binary: &Path,
        data_dir: &Path,
        listen: &str,
        args: &[&str],
    ) -> io::Result<Self> {
        let mut child = Command::new(binary)
            .args(["--listen", listen, "--log", "warn"])
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let mut addr = None;
        let mut first_start_key = None;
        for line in lines.by_ref() {
            let line = line?;
            if let Some(rest) = line.strip_prefix("listening on ") {
                addr = rest.trim().parse().ok();
            }
            if let Some(position) = line.find("tk_") {
                first_start_key = line.get(position..).map(|key| key.trim().to_owned());
            }
            if line.starts_with("dashboard:") {
                break;
            }
        }
        // Keep reading so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other(
                "tether-server printed no `listening on` line",
            ));
        };
        Ok(Self {
            child,
            addr,
            first_start_key,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its process id (for memory and CPU readings in `/proc`).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The receiver key printed on the first start of a data directory.
    pub fn first_start_key(&self) -> Option<&str> {
        self.first_start_key.as_deref()
    }

    /// Kills the process with SIGKILL (no chance to flush anything) and
    /// waits for it.
    pub fn kill(mut self) -> io::Result<()> {
        self.child.kill()?;
        self.child.wait().map(drop)
    }
}

impl ServerProcess {
    /// Sends SIGTERM (the server drains: it tells its clients to reconnect
    /// elsewhere and exits once they left) and waits up to `limit` for it
    /// to exit; its exit status, or an error if it is still running (it is
    /// then killed).
    pub fn terminate(mut self, limit: std::time::Duration) -> io::Result<std::process::ExitStatus> {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()?;
        if !status.success() {
            return Err(io::Error::other("kill -TERM failed"));
        }
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if std::time::Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "tether-server still runs {limit:?} after SIGTERM"
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
