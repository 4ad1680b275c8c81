//! Shared set-up for the portal tests: a real portal on loopback.
#![allow(dead_code, unreachable_pub)]

use tether_core::provisioning::store::ConfigStore;
use tether_host::portal::{PortalHandle, PortalServer, PortalSettings, ScannedNetwork};
use tokio::runtime::Runtime;

pub const PAIRING_CODE: &str = "K7-42";

pub fn networks() -> Vec<ScannedNetwork> {
    [
        ("Home", -45, true),
        ("Caf\u{e9} <Guest> & \"Friends\"", -70, false),
        ("Neighbour", -88, true),
    ]
    .into_iter()
    .map(|(ssid, rssi, secured)| ScannedNetwork {
        ssid: ssid.to_owned(),
        rssi,
        secured,
    })
    .collect()
}

/// A runtime with the portal's tasks on loopback (ephemeral ports).
pub fn start<S: ConfigStore + Send + 'static>(store: S) -> (Runtime, PortalHandle<S>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let settings = PortalSettings::new(
        "127.0.0.1:0".parse().expect("address"),
        "127.0.0.1:0".parse().expect("address"),
    )
    .with_dns_answer([192, 168, 4, 1])
    .with_device_name("tether-4F2A")
    .with_pairing_code(PAIRING_CODE)
    .with_default_server_url("wss://relay.example.com/device")
    .with_networks(networks());
    let handle = runtime
        .block_on(PortalServer::start(settings, store))
        .expect("portal starts");
    (runtime, handle)
}

/// The form a customer submits, with one field replaced.
pub fn form_with(field: &str, value: &str) -> Vec<(String, String)> {
    let mut form: Vec<(String, String)> = [
        ("ssid", "Home"),
        ("other_ssid", ""),
        ("passphrase", "correct horse battery"),
        ("pairing_code", PAIRING_CODE),
        ("server_url", "wss://relay.example.com/device"),
        ("device_id", "sensor-7"),
        ("token", "tok_3f9a"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for pair in &mut form {
        if pair.0 == field {
            pair.1 = value.to_owned();
        }
    }
    form
}
