//! `tether-load`: see the library docs (`cargo xtask load` runs it).

use std::process::ExitCode;

use clap::Parser;
use tether_load::Args;

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tether-load: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(tether_load::run(&args)) {
        Ok(outcomes) => {
            if args.check && !outcomes.iter().flatten().all(tether_load::Outcome::clean) {
                eprintln!("tether-load: a peer lost or duplicated acknowledged messages");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("tether-load: {error}");
            ExitCode::FAILURE
        }
    }
}
