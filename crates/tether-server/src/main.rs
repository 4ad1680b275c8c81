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
    if cli.demo && config.tls.is_some() {
        eprintln!("error: --demo runs its devices over plain ws://; start it without TLS");
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
            Ok(()) => println!(
                "demo: {} simulated devices publishing on channel {:?}",
                tether_server::demo::DEMO_DEVICES,
                tether_server::demo::DEMO_CHANNEL
            ),
            Err(error) => {
                eprintln!("error: demo devices: {error}");
                server.shutdown().await;
                return std::process::ExitCode::FAILURE;
            }
        }
    }
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
