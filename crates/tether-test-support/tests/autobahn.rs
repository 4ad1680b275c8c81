//! RFC 6455 conformance of tether-core's WebSocket engine: the
//! Autobahn|Testsuite cases (all but the permessage-deflate cases 12.* and
//! 13.*), run by kosoku against tether-core as a server and as a client over
//! real loopback sockets. Every case must be OK, NON-STRICT or
//! INFORMATIONAL; the summary is printed whether the test passes or not.
//!
//! kosoku is installed by `cargo xtask setup`; without it these tests fail
//! and say so.

// Tests are std code; the no_std import lints do not apply.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tether_test_support::autobahn::{Kosoku, Summary, run_client_cases, serve_echo};
use tokio::net::TcpListener;

/// The suite has 301 cases without 12.* and 13.*; fewer means kosoku ran
/// something else than the suite.
const EXPECTED_CASES: usize = 301;
/// Cases the server role runs at once.
const PARALLELISM: u32 = 2;
/// No single case takes this long, even the 16 MiB ones in a debug build.
const CASE_TIMEOUT: Duration = Duration::from_secs(120);
/// The whole server-role run takes about 12 s; a hung run fails instead of
/// holding up the test command.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

fn target_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).to_owned()
}

fn report_dir(role: &str) -> PathBuf {
    let dir = target_dir().join("autobahn-reports").join(role);
    // A stale report must not stand in for this run's.
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Prints past the test harness's capture, so the summary is in the log of
/// a passing run too.
fn print_summary(summary: &Summary, started: Instant, outdir: &Path) {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "{summary}");
    let _ = writeln!(
        err,
        "  ({:.1} s; report: {})",
        started.elapsed().as_secs_f64(),
        outdir.join("index.html").display()
    );
}

fn check(summary: &Summary, kosoku_passed: bool) {
    let failures = summary.failures();
    assert!(
        failures.is_empty(),
        "{} role: {} cases failed: {failures:?}",
        summary.role,
        failures.len()
    );
    assert!(
        kosoku_passed,
        "{} role: kosoku reported a failure",
        summary.role
    );
    assert_eq!(
        summary.verdicts.len(),
        EXPECTED_CASES,
        "{} role: not the whole suite ran",
        summary.role
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_role_passes_autobahn() {
    let kosoku = Kosoku::find(&target_dir()).unwrap();
    let started = Instant::now();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(serve_echo(listener));
    let outdir = report_dir("server");
    let passed = tokio::time::timeout(
        RUN_TIMEOUT,
        kosoku.fuzzing_client(addr, &outdir, PARALLELISM),
    )
    .await
    .expect("kosoku runs the suite within RUN_TIMEOUT")
    .unwrap();
    server.abort();
    let summary = Summary::read("server", &outdir).unwrap();
    print_summary(&summary, started, &outdir);
    check(&summary, passed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_role_passes_autobahn() {
    let kosoku = Kosoku::find(&target_dir()).unwrap();
    let started = Instant::now();
    let outdir = report_dir("client");
    let (mut child, addr) = kosoku.fuzzing_server(&outdir).await.unwrap();
    let cases = run_client_cases(addr, CASE_TIMEOUT).await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("kosoku finishes its report within 60 s of the last case")
        .unwrap();
    let summary = Summary::read("client", &outdir).unwrap();
    print_summary(&summary, started, &outdir);
    assert_eq!(cases as usize, summary.verdicts.len());
    check(&summary, status.success());
}
