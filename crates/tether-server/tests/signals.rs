//! SIGTERM is a graceful shutdown from the first line the server prints: a
//! supervisor (or a test) that stops it as soon as it answered used to kill
//! it outright, because the handler was installed only after the startup
//! lines (and, with `--demo`, after provisioning the demo devices).

// Tests are std code; the no_std import lints do not apply.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn sigterm_right_after_the_first_line_is_a_clean_stop() -> Result<(), Box<dyn std::error::Error>> {
    for demo in [false, true] {
        let dir = tempfile::tempdir()?;
        let mut command = Command::new(env!("CARGO_BIN_EXE_tether-server"));
        command
            .args(["--listen", "127.0.0.1:0", "--log", "warn"])
            .arg("--data-dir")
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if demo {
            command.arg("--demo");
        }
        let mut child = command.spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        // The first line (the first-start key), printed right after the
        // server started.
        let first = lines.next().ok_or("no output")??;
        assert!(first.contains("tk_"), "{first}");
        let signalled = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        assert!(signalled.success());
        std::thread::spawn(move || for _ in lines {});
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err("no exit within 20 s of SIGTERM".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(status.success(), "demo {demo}: {status}");
    }
    Ok(())
}
