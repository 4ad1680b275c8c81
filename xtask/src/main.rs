//! Project automation, in the `cargo xtask` convention.
//!
//! `cargo xtask test` is the one command that checks everything: it installs
//! what a fresh Debian machine lacks, then runs formatting, lints, the whole
//! test suite, the no_std cross builds and the fuzz smoke runs. CI (`.ci/run`)
//! calls exactly this.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

mod attribution;
mod bench_report;
mod firmware;
mod fuzz;
mod setup;
mod size;

/// Bare-metal targets every no_std crate must build for: the ESP32-C3
/// (RISC-V, no atomics beyond load/store, no FPU) and a Cortex-M0+.
pub(crate) const NO_STD_TARGETS: &[&str] = &["riscv32imc-unknown-none-elf", "thumbv6m-none-eabi"];

/// Further targets the firmware examples build for: the ESP32-C6
/// (RISC-V with atomics).
pub(crate) const FIRMWARE_TARGETS: &[&str] = &["riscv32imac-unknown-none-elf"];

/// Crates that must stay `#![no_std]` and build for [`NO_STD_TARGETS`] with
/// no default features.
pub(crate) const NO_STD_CRATES: &[&str] = &[
    "tether-proto",
    "tether-core",
    "tether-esp32",
    "tether-esp8266",
];

/// Optional features of no_std crates that must build for
/// [`NO_STD_TARGETS`] too: (crate, features).
const NO_STD_FEATURES: &[(&str, &str)] = &[
    ("tether-core", "flash"),
    ("tether-esp32", "tls,portal,tls-p384"),
];

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  test              everything CI runs: setup, fmt, clippy, tests, no_std builds, fuzz smoke
  setup             install what a fresh machine lacks (rustup targets, cargo tools, Debian packages)
  no-std            build the no_std crates for the bare-metal targets
  fuzz [SECONDS]    replay the committed corpora, then fuzz each target for SECONDS (default 20)
  size [--attribute [PROBE..]]
                    code size of a minimal WebSocket client (riscv32imc): tether vs embedded-websocket;
                    --attribute: every byte of .text by crate, source file and function (line tables)
  firmware [--attribute] [NAME..]
                    build the firmware examples (those whose image name contains a NAME, and
                    their baselines), save their images (espflash), print flash and RAM;
                    --attribute: their flash over the baseline by crate and symbol (llvm-nm)
  bench-report      Markdown tables from the last `cargo bench --bench frame_throughput` run
  load [ARGS]       load-test the relay server on loopback (release build), with
                    Mosquitto side by side with --peer mosquitto; workloads:
                    --workload customer|fanout|ingest|overload|smoke, then
                    --devices N --rate R[,R...] --tenants T --receivers-per-tenant M
                    --seconds S --server-arg FLAG ... (`cargo xtask load --help`)
  storm [ARGS]      reconnect storm: the fleet cut at once by a server restart,
                    with and without the SDK's jitter (--devices N)
  series [ARGS]     time series queries on a large database (release build):
                    --events N (default 10000000) --devices D --data-dir DIR
                    --browser (also the dashboard in headless Chromium)
  faults [ARGS]     the fault proof (fleet behind a fault proxy, kill -9 loop) for longer:
                    --minutes N (default 10) --seed S (default random)
  cluster [ARGS]    the cluster proof (3 nodes on PostgreSQL + NATS behind HAProxy; kill -9,
                    drain, NATS outage) for longer: --minutes N (default 10)
";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("setup") => setup::run(),
        Some("no-std") => no_std_builds(),
        Some("size") => size::run(&args[1..]),
        Some("firmware") => firmware::run(&args[1..]),
        Some("bench-report") => bench_report::run(),
        Some("fuzz") => {
            let seconds = match args.get(1).map(|s| s.parse::<u64>()) {
                None => Ok(fuzz::DEFAULT_SECONDS),
                Some(Ok(s)) => Ok(s),
                Some(Err(e)) => Err(format!("fuzz: SECONDS must be a whole number: {e}")),
            };
            seconds.and_then(fuzz::run)
        }
        Some("load") => load(&args[1..]),
        Some("series") => series(&args[1..]),
        Some("faults") => faults(&args[1..]),
        Some("cluster") => cluster(&args[1..]),
        Some("-h" | "--help" | "help") | None => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown command `{other}`\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The whole check, in the order that fails fastest.
fn test() -> Result<(), String> {
    let started = Instant::now();
    setup::run()?;
    step("format", cargo(&["fmt", "--all", "--check"]))?;
    step(
        "clippy",
        cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    step("no_std builds", no_std_builds())?;
    step("firmware examples", firmware::run(&[]))?;
    step("tests", cargo(&["test", "--workspace", "--all-targets"]))?;
    step("doc tests", cargo(&["test", "--workspace", "--doc"]))?;
    step("fuzz smoke", fuzz::run(fuzz::DEFAULT_SECONDS))?;
    println!("xtask: all checks passed in {:.0?}", started.elapsed());
    Ok(())
}

fn no_std_builds() -> Result<(), String> {
    for target in NO_STD_TARGETS {
        for krate in NO_STD_CRATES {
            cargo(&[
                "build",
                "--package",
                krate,
                "--no-default-features",
                "--target",
                target,
            ])?;
        }
        for (krate, features) in NO_STD_FEATURES {
            cargo(&[
                "build",
                "--package",
                krate,
                "--no-default-features",
                "--features",
                features,
                "--target",
                target,
            ])?;
        }
    }
    Ok(())
}

/// `cargo xtask load`: builds the release server and the load generator
/// (`crates/tether-load`) and runs the generator against server processes
/// on loopback.
fn load(args: &[String]) -> Result<(), String> {
    let generator = build_load_generator()?;
    let server = target_dir().join("release").join("tether-server");
    run(Command::new(generator)
        .arg("--server")
        .arg(server)
        .args(args)
        .current_dir(workspace_root()))
}

/// Builds `tether-server` and `tether-load` in release; returns the
/// generator's path.
fn build_load_generator() -> Result<PathBuf, String> {
    cargo(&[
        "build",
        "--release",
        "-p",
        "tether-server",
        "--bin",
        "tether-server",
        "-p",
        "tether-load",
        "--bin",
        "tether-load",
    ])?;
    Ok(target_dir().join("release").join("tether-load"))
}

/// `cargo xtask series`: fills a database with readings in bulk and times
/// series queries on it (`crates/tether-server/examples/series_cost.rs`).
fn series(args: &[String]) -> Result<(), String> {
    cargo(&[
        "build",
        "--release",
        "-p",
        "tether-server",
        "--example",
        "series_cost",
    ])?;
    run(Command::new(
        target_dir()
            .join("release")
            .join("examples")
            .join("series_cost"),
    )
    .args(args)
    .current_dir(workspace_root()))
}

/// `cargo xtask faults`: the fault test of the test command
/// (`crates/tether-server/tests/faults.rs`), run for longer.
fn faults(args: &[String]) -> Result<(), String> {
    let mut minutes = 10u64;
    let mut seed = None;
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let value = rest
            .next()
            .ok_or_else(|| format!("faults: {flag} needs a value"))?;
        match flag.as_str() {
            "--minutes" => {
                minutes = value
                    .parse()
                    .map_err(|e| format!("faults: --minutes {value}: {e}"))?;
            }
            "--seed" => {
                value
                    .parse::<u64>()
                    .map_err(|e| format!("faults: --seed {value}: {e}"))?;
                seed = Some(value.clone());
            }
            other => return Err(format!("faults: unknown flag {other}\n\n{USAGE}")),
        }
    }
    let mut command = Command::new(cargo_bin());
    command
        .args([
            "test",
            "-p",
            "tether-server",
            "--test",
            "faults",
            "--",
            "--nocapture",
        ])
        .env("TETHER_FAULT_SECONDS", (minutes * 60).to_string())
        .current_dir(workspace_root());
    if let Some(seed) = seed {
        command.env("TETHER_FAULT_SEED", seed);
    }
    run(&mut command)
}

/// `cargo xtask cluster`: the cluster proof of the test command
/// (`crates/tether-server/tests/cluster_fleet.rs`), run for longer.
fn cluster(args: &[String]) -> Result<(), String> {
    let minutes = match args {
        [] => 10u64,
        [flag, value] if flag == "--minutes" => value
            .parse()
            .map_err(|e| format!("cluster: --minutes {value}: {e}"))?,
        _ => return Err(format!("cluster: unknown arguments {args:?}\n\n{USAGE}")),
    };
    run(Command::new(cargo_bin())
        .args([
            "test",
            "-p",
            "tether-server",
            "--test",
            "cluster_fleet",
            "--",
            "--nocapture",
        ])
        .env("TETHER_CLUSTER_SECONDS", (minutes * 60).to_string())
        .current_dir(workspace_root()))
}

/// Where cargo puts build output: `CARGO_TARGET_DIR` if set, else
/// `<workspace>/target`.
pub(crate) fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn step(name: &str, result: Result<(), String>) -> Result<(), String> {
    match result {
        Ok(()) => {
            println!("xtask: {name}: ok");
            Ok(())
        }
        Err(e) => Err(format!("{name} failed: {e}")),
    }
}

/// Runs `cargo` with the workspace root as the working directory.
pub(crate) fn cargo(args: &[&str]) -> Result<(), String> {
    run(Command::new(cargo_bin())
        .args(args)
        .current_dir(workspace_root()))
}

pub(crate) fn cargo_bin() -> String {
    env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// Runs a command to completion, echoing it first, and turns a non-zero exit
/// into an error that names the command.
pub(crate) fn run(command: &mut Command) -> Result<(), String> {
    let shown = format!("{command:?}");
    println!("xtask: $ {shown}");
    let status = command
        .status()
        .map_err(|e| format!("could not start {shown}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} exited with {status}"))
    }
}

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}
