//! The reconnect storm's short run for the test command (`cargo xtask
//! load --workload storm` is the long one): a few hundred devices, the
//! server process stopped with SIGTERM a quarter into the window and
//! started again on the same address and data, with the SDK's jittered
//! backoff and without. Every device comes back, and the accounting is
//! clean: what was acknowledged is stored, once, nothing is lost.
//!
//! The server is the workspace's `tether-server` binary, built by the
//! same `cargo test --workspace --all-targets` (`cargo xtask test`), found
//! beside this test's executable.

use std::path::PathBuf;

use clap::Parser;
use tether_load::Args;

/// `target/<profile>/tether-server`, beside `target/<profile>/deps/<test>`.
fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test runs from target/<profile>/deps");
    let binary = profile.join("tether-server");
    assert!(
        binary.exists(),
        "no {}: build it first (`cargo build -p tether-server`; \
         `cargo test --workspace` does)",
        binary.display()
    );
    binary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_comes_back_after_a_restart_and_loses_nothing() {
    let server = server_binary();
    let args = Args::parse_from([
        "tether-load",
        "--workload",
        "storm",
        "--devices",
        "300",
        "--tenants",
        "3",
        "--seconds",
        "6",
        "--drain",
        "20",
        "--server",
        server.to_str().expect("a UTF-8 path"),
    ]);
    let outcomes = tether_load::run(&args).await.expect("the run completes");
    // One workload with the SDK's jitter, one without.
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    for columns in &outcomes {
        let [tether] = columns.as_slice() else {
            panic!("tether alone, got {}", columns.len());
        };
        let storm = tether.storm.expect("the storm's figures");
        assert!(storm.away_seconds > 0.0, "{storm:?}");
        assert_eq!(storm.reconnected, 300, "every device came back: {storm:?}");
        // Every record offered is acknowledged; those in flight at the
        // stop are sent again, so `sent` may be a few more.
        assert!(
            tether.acked > 0 && tether.acked == tether.offered,
            "{tether:?}"
        );
        assert!(tether.sent >= tether.acked, "{tether:?}");
        assert_eq!(tether.lost_in_store, Some(0), "{tether:?}");
        assert_eq!(tether.stored_duplicates, Some(0), "{tether:?}");
        assert!(
            tether.stored.is_some_and(|stored| stored >= tether.acked),
            "{tether:?}"
        );
        assert!(tether.clean(), "{tether:?}");
    }
}
