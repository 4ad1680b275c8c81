//! Installs what a fresh Debian machine with rustup lacks. Every step checks
//! first, so a second run is quick and needs no network.

use std::process::{Command, Stdio};

use crate::{FIRMWARE_TARGETS, NO_STD_TARGETS, cargo_bin, target_dir};

/// Debian packages the test suite needs (browsers for the end-to-end tests,
/// database servers, ...). Each later feature adds its own here.
const DEBIAN_PACKAGES: &[&str] = &[
    // Headless browser for the portal (tether-host) and dashboard
    // (tether-server) browser tests, through `crates/tether-browser-test`.
    // (fantoccini is built without a TLS back end: no OpenSSL needed.)
    "chromium",
    "chromium-driver",
    // The peer of `cargo xtask load --peer mosquitto` (MQTT broker, run as
    // its own process with a generated configuration).
    "mosquitto",
    // `perf`, for the server profiles in docs/performance.md.
    "linux-perf",
    // `valgrind --tool=dhat`, for the server's memory profiles in
    // docs/performance.md.
    "valgrind",
    // tether-server's allocator (tikv-jemalloc-sys builds jemalloc with
    // its configure script and make).
    "make",
    // espflash (firmware images) links libudev through its serial-port crate.
    "libudev-dev",
    "pkg-config",
    // The TAP test of tether-esp32: `unshare --net` and `ip`.
    "util-linux",
    "iproute2",
    // The cluster tests (`crates/tether-cluster-test`): a real PostgreSQL
    // (the shared store), nats-server (the cross-node broker) and HAProxy
    // (the load balancer in front of the nodes), each started by the tests
    // on loopback ports in temporary directories. `setpriv` (util-linux)
    // runs PostgreSQL as the `postgres` user when the tests run as root.
    "postgresql",
    "nats-server",
    "haproxy",
    // `llvm-dwarfdump` and `llvm-nm` for `cargo xtask size --attribute` and
    // `cargo xtask firmware --attribute` (where the code bytes go).
    "llvm",
];

/// Cargo subcommands the test suite needs, with the crate that provides them.
const CARGO_TOOLS: &[(&str, &str)] = &[("fuzz", "cargo-fuzz")];

/// Standalone tools, checked with `--version`, with the crate that provides
/// them (`espflash save-image` makes the firmware images offline).
const TOOLS: &[(&str, &str)] = &[("espflash", "espflash")];

/// The Autobahn|Testsuite runner (Python 3, PyPI), pinned; the conformance
/// test (`crates/tether-test-support/tests/autobahn.rs`) reads the same
/// version and finds it at `<target>/autobahn-venv/bin/kosoku`.
const KOSOKU: (&str, &str) = ("kosoku", "0.1.0");

pub(crate) fn run() -> Result<(), String> {
    rustup_targets()?;
    // Debian packages first: espflash needs libudev to build.
    debian_packages(DEBIAN_PACKAGES)?;
    cargo_tools()?;
    tools()?;
    python_tools()
}

/// Where a tool `cargo install` put is: on `PATH`, or else in
/// `$CARGO_HOME/bin` (`~/.cargo/bin`), which a fresh shell may not have on
/// its `PATH` yet.
pub(crate) fn tool_path(tool: &str) -> std::path::PathBuf {
    let on_path = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if on_path {
        return tool.into();
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| std::path::Path::new(&home).join(".cargo"))
        });
    match cargo_home {
        Some(home) => home.join("bin").join(tool),
        None => tool.into(),
    }
}

fn tools() -> Result<(), String> {
    for (tool, krate) in TOOLS {
        let present = Command::new(tool_path(tool))
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !present {
            crate::run(Command::new(cargo_bin()).args(["install", "--locked", krate]))?;
        }
    }
    Ok(())
}

fn rustup_targets() -> Result<(), String> {
    let installed = output("rustup", &["target", "list", "--installed"]).unwrap_or_default();
    let missing: Vec<&str> = NO_STD_TARGETS
        .iter()
        .chain(FIRMWARE_TARGETS)
        .copied()
        .filter(|t| !installed.lines().any(|line| line.trim() == *t))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    crate::run(
        Command::new("rustup")
            .args(["target", "add"])
            .args(&missing),
    )
}

fn cargo_tools() -> Result<(), String> {
    for (subcommand, krate) in CARGO_TOOLS {
        let present = Command::new(cargo_bin())
            .args([subcommand, "--help"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !present {
            crate::run(Command::new(cargo_bin()).args(["install", "--locked", krate]))?;
        }
    }
    Ok(())
}

/// Installs kosoku into a virtual environment under the target directory
/// (Debian's `python3-venv` first if `python3` cannot make one). Skipped
/// when the pinned version is already there.
fn python_tools() -> Result<(), String> {
    let venv = target_dir().join("autobahn-venv");
    let python = venv.join("bin").join("python3");
    let (package, version) = KOSOKU;
    let installed = python.to_str().and_then(|python| {
        output(
            python,
            &[
                "-c",
                &format!("import importlib.metadata as m; print(m.version('{package}'))"),
            ],
        )
    });
    if installed.as_deref().map(str::trim) == Some(version) {
        return Ok(());
    }
    // Debian's python3 has the `venv` module but not the `ensurepip` a
    // virtual environment needs: that comes with `python3-venv`.
    if output("python3", &["-c", "import ensurepip, venv"]).is_none() {
        debian_packages(&["python3", "python3-venv"])?;
    }
    crate::run(
        Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv),
    )?;
    crate::run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg(format!("{package}=={version}")),
    )
}

/// Installs the Debian packages that are not installed yet, with one
/// `apt-get update` first when anything is missing.
pub(crate) fn debian_packages(packages: &[&str]) -> Result<(), String> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            output("dpkg-query", &["-W", "-f=${Status}", p])
                .is_none_or(|status| !status.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let sudo = output("id", &["-u"]).is_none_or(|uid| uid.trim() != "0");
    let apt = |args: &[&str]| {
        let mut command = if sudo {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        } else {
            Command::new("apt-get")
        };
        command.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        crate::run(&mut command)
    };
    apt(&["update", "-q"])?;
    let mut install = vec!["install", "-y", "-q", "--no-install-recommends"];
    install.extend(missing);
    apt(&install)
}

/// Standard output of a command that succeeded, or `None`.
pub(crate) fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
