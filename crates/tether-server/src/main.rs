//! `tether-server`: run the relay server, or administer its database.

// A server is std by nature: the workspace's `std_instead_of_core/alloc`
// lints keep the no_std crates honest and do not apply here.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]
// axum handlers return `Response` as their error; boxing it buys nothing.
#![allow(clippy::result_large_err)]

use clap::Parser;
use tether_server::cli::{Cli, run_admin};
use tether_server::{Config, Server};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.settings, cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&config.log).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    if let Some(command) = cli.command {
        return match run_admin(command, &config) {
            Ok(text) => {
                println!("{text}");
                std::process::ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("error: {error}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    if cli.demo {
        eprintln!(
            "error: --demo needs tether-host's simulated devices, which this build does not have yet"
        );
        return std::process::ExitCode::from(2);
    }
    let server = match Server::start(config).await {
        Ok(server) => server,
        Err(error) => {
            eprintln!("error: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Some(key) = server.first_start_key() {
        println!("receiver key for tenant \"default\" (shown once, read+command): {key}");
    }
    println!("listening on {}", server.local_addr());
    println!("dashboard: {}/", server.base_url());
    wait_for_signal().await;
    server.shutdown().await;
    std::process::ExitCode::SUCCESS
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
