//! `tether-server`: run the relay server, or administer its database.

// A server is std by nature: the workspace's `std_instead_of_core/alloc`
// lints keep the no_std crates honest and do not apply here.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]
// axum handlers return `Response` as their error; boxing it buys nothing.
#![allow(clippy::result_large_err)]

use std::io::Write as _;

use clap::Parser;
use tether_server::cli::{Cli, run_admin};
use tether_server::{Config, Server};
use tracing_subscriber::EnvFilter;

/// jemalloc, not the system's malloc: with thousands of idle connections
/// glibc's arenas keep more of what each connection's handshake freed
/// (docs/performance.md, "Memory": 0.5–1 KiB more per idle connection).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read once at start-up (`_RJEM_MALLOC_CONF` in the
/// environment overrides them): one arena for the whole process (a server
/// of two worker threads gains nothing from more, and each arena keeps
/// its own free memory) and freed pages returned to the kernel at once.
#[cfg(not(target_env = "msvc"))]
#[allow(unsafe_code, non_upper_case_globals)] // a symbol jemalloc reads; no code runs
#[unsafe(export_name = "_rjem_malloc_conf")]
static malloc_conf: &[u8; 44] = b"narenas:1,dirty_decay_ms:0,muzzy_decay_ms:0\0";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.settings, cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            complain(format_args!("error: {error}"));
            return std::process::ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&config.log).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        // Colours only on a terminal: journald and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Some(command) = cli.command {
        return match run_admin(command, &config).await {
            // Printing is this command's whole purpose: a closed stdout
            // is a clean failure, not a panic.
            Ok(text) => match writeln!(std::io::stdout().lock(), "{text}")
                .and_then(|()| std::io::stdout().lock().flush())
            {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(error) => {
                    complain(format_args!("error: cannot print the result: {error}"));
                    std::process::ExitCode::FAILURE
                }
            },
            Err(error) => {
                complain(format_args!("error: {error}"));
                std::process::ExitCode::FAILURE
            }
        };
    }
    if cli.demo && config.database_url.is_some() {
        complain(format_args!(
            "error: --demo provisions its devices in the SQLite file; start it without --database"
        ));
        return std::process::ExitCode::from(2);
    }
    if cli.demo && config.tls.is_some() {
        complain(format_args!(
            "error: --demo runs its devices over plain ws://; start it without TLS"
        ));
        return std::process::ExitCode::from(2);
    }
    // Handle SIGTERM and Ctrl-C from before the "listening on" line, so a
    // supervisor that stops the server as soon as it printed it gets a
    // graceful shutdown, not the default action (killed).
    let signals = Signals::install();
    let server = match Server::start(config).await {
        Ok(server) => server,
        Err(error) => {
            complain(format_args!("error: {error}"));
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Some(key) = server.first_start_key() {
        say(format_args!(
            "receiver key for tenant \"default\" (shown once, read+command): {key}"
        ));
    }
    say(format_args!("listening on {}", server.local_addr()));
    say(format_args!("dashboard: {}/", server.base_url()));
    if cli.demo {
        let mut addr = server.local_addr();
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let started = tether_server::demo::provision(
            &server.database_path(),
            tether_server::demo::DEMO_DEVICES,
        )
        .map_err(|error| error.to_string())
        .and_then(|devices| {
            tether_server::demo::spawn(format!("ws://{addr}/v1/device"), devices)
                .map_err(|error| error.to_string())
        });
        match started {
            Ok(()) => say(format_args!(
                "demo: {} simulated devices publishing on channel {:?}",
                tether_server::demo::DEMO_DEVICES,
                tether_server::demo::DEMO_CHANNEL
            )),
            Err(error) => {
                complain(format_args!("error: demo devices: {error}"));
                server.shutdown().await;
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    match signals.wait().await {
        Signal::Terminate => server.drain().await,
        Signal::Interrupt => server.shutdown().await,
    }
    std::process::ExitCode::SUCCESS
}

/// How the server was asked to stop.
enum Signal {
    /// SIGTERM (systemd, a container runtime, an orchestrator): drain, so
    /// clients move to other nodes.
    Terminate,
    /// Ctrl-C: stop now.
    Interrupt,
}

/// Prints a line for the operator while the server runs. `println!` would
/// panic when stdout is closed (a supervisor or a pipe that stopped
/// reading); the server must keep serving, so a failed write is only logged.
fn say(line: core::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout
        .write_fmt(line)
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush())
    {
        tracing::warn!(%error, "cannot write to stdout; a line for the operator was lost");
    }
}

/// Prints an error for the operator on stderr, never panicking (`eprintln!`
/// panics when stderr is closed).
fn complain(line: core::fmt::Arguments<'_>) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr
        .write_fmt(line)
        .and_then(|()| stderr.write_all(b"\n"));
}

/// SIGTERM and SIGINT (Ctrl-C), handled from the moment they are installed.
struct Signals {
    #[cfg(unix)]
    unix: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Signals {
                unix: signal(SignalKind::terminate())
                    .and_then(|terminate| Ok((terminate, signal(SignalKind::interrupt())?)))
                    .ok(),
            }
        }
        #[cfg(not(unix))]
        {
            Signals {}
        }
    }

    /// The first signal: SIGTERM drains, SIGINT stops at once.
    async fn wait(self) -> Signal {
        #[cfg(unix)]
        if let Some((mut terminate, mut interrupt)) = self.unix {
            return tokio::select! {
                _ = terminate.recv() => Signal::Terminate,
                _ = interrupt.recv() => Signal::Interrupt,
            };
        }
        let _ = tokio::signal::ctrl_c().await;
        Signal::Interrupt
    }
}
