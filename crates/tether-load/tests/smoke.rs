//! The load generator's short run for the test command: a small fleet for
//! a few seconds against tether-server (in this process) and Mosquitto
//! (Debian's, installed by `cargo xtask setup`), side by side. It checks
//! the accounting, not speed: every acknowledged message is stored (read
//! back from the database) and delivered to every receiver that watches
//! its device, nothing twice, and every tick is offered.

use clap::Parser;
use tether_load::{Args, Outcome};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_fleet_loses_and_repeats_nothing_on_either_peer() {
    let args = Args::parse_from([
        "tether-load",
        "--workload",
        "smoke",
        "--peer",
        "mosquitto",
        "--server",
        "in-process",
        "--drain",
        "30",
    ]);
    let outcomes = tether_load::run(&args).await.expect("the run completes");
    let [columns] = outcomes.as_slice() else {
        panic!("one workload, got {}", outcomes.len());
    };
    let [tether, mosquitto] = columns.as_slice() else {
        panic!("two peers, got {}", columns.len());
    };
    for outcome in [tether, mosquitto] {
        check(outcome);
    }
    // What tether acknowledged is in its database, once.
    assert_eq!(tether.lost_in_store, Some(0));
    assert_eq!(tether.stored_duplicates, Some(0));
    assert!(tether.stored.is_some_and(|stored| stored >= tether.acked));
}

fn check(outcome: &Outcome) {
    let workload = &Args::parse_from(["tether-load", "--workload", "smoke"]).workloads()[0];
    // 200 devices × 5 msg/s × 3 s, give or take a tick per device.
    let ticks = (workload.devices as f64 * workload.rate * workload.seconds) as u64;
    assert!(
        outcome.offered.abs_diff(ticks) <= workload.devices as u64,
        "{}: offered {} of about {ticks}",
        outcome.peer,
        outcome.offered
    );
    assert_eq!(
        outcome.refused, 0,
        "{}: nothing is refused at 5 msg/s",
        outcome.peer
    );
    assert_eq!(
        outcome.acked, outcome.sent,
        "{}: everything sent is acked",
        outcome.peer
    );
    assert_eq!(outcome.sent, outcome.offered, "{}", outcome.peer);
    assert_eq!(
        outcome.errors, 0,
        "{}: {:?}",
        outcome.peer, outcome.first_error
    );
    assert_eq!(outcome.lost_in_delivery, 0, "{}", outcome.peer);
    assert_eq!(outcome.delivered_duplicates, 0, "{}", outcome.peer);
    assert_eq!(
        outcome.delivered, outcome.expected_deliveries,
        "{}",
        outcome.peer
    );
    assert_eq!(
        outcome.expected_deliveries,
        outcome.acked * workload.receivers_per_tenant as u64,
        "{}",
        outcome.peer
    );
    assert!(outcome.drained && outcome.clean(), "{outcome:?}");
    assert_eq!(outcome.delivery.samples as u64, outcome.delivered);
}
