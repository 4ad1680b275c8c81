//! Runs a test inside a fresh network namespace: the test re-executes
//! itself under `unshare --net` (the tests run as root here and on CI), so
//! TAP devices, bridges and servers it creates are its own and reach
//! nothing outside. Where the kernel refuses a namespace or TUN, the test
//! says so on stderr past libtest's capture (so the CI log shows it) and
//! passes as skipped.
#![allow(dead_code, unreachable_pub)]

use std::io::Write as _;
use std::process::Command;

const INSIDE: &str = "TETHER_ESP32_NETNS";
const SKIP: i32 = 77;

/// Writes past libtest's output capture, so the CI log shows it.
pub fn announce(message: &str) {
    let _ = writeln!(std::io::stderr(), "{message}");
}

/// Runs `body` in a new network namespace; `test` is the test's name.
pub fn in_network_namespace(test: &str, body: fn()) {
    if std::env::var(INSIDE).as_deref() == Ok(test) {
        return body();
    }
    let exe = std::env::current_exe().expect("test executable");
    let output = Command::new("unshare")
        .args(["--net", "--"])
        .arg(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(INSIDE, test)
        .output()
        .expect("run unshare (util-linux)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.code() == Some(SKIP) {
        announce(&format!("SKIPPED {test}: {}", stderr.trim()));
        return;
    }
    if !output.status.success() {
        if stderr.contains("unshare failed") && stderr.contains("Operation not permitted") {
            announce(&format!(
                "SKIPPED {test}: the kernel refuses a network namespace here: {}",
                stderr.trim()
            ));
            return;
        }
        panic!(
            "{test} failed inside its network namespace ({}):\n{stdout}\n{stderr}",
            output.status
        );
    }
    print!("{stdout}");
}

/// `ip ARGS`, which must succeed.
pub fn ip(args: &str) {
    let status = Command::new("ip")
        .args(args.split_whitespace())
        .status()
        .expect("run ip (iproute2)");
    assert!(status.success(), "ip {args}: {status}");
}

/// Opens (creating) TAP device `name`, or skips the test if the kernel
/// refuses TUN/TAP.
pub fn tap(name: &str) -> embassy_net_tuntap::TunTapDevice {
    match embassy_net_tuntap::TunTapDevice::new(name) {
        Ok(tap) => tap,
        Err(error) => {
            eprintln!("the kernel refuses TUN/TAP (/dev/net/tun): {error}");
            std::process::exit(SKIP);
        }
    }
}
