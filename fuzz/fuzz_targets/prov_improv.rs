//! Improv serial: a stream of bytes fed to the service packet by packet
//! never panics and always makes progress.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_core::provisioning::improv::{DeviceInfo, ImprovService, Packet, Status};
use tether_core::provisioning::portal::Network;

fuzz_target!(|data: &[u8]| {
    let _ = Packet::parse(data);
    let info = DeviceInfo { firmware_name: "tether", firmware_version: "0", chip: "ESP32", device_name: "d" };
    let networks = [Network { ssid: "Home", rssi: -50, secured: true }];
    let mut service = ImprovService::new();
    let mut out = [0u8; 1024];
    let mut rest = data;
    while !rest.is_empty() {
        match service.receive(rest, &info, &networks, &mut out) {
            Ok(Status::Complete(reply)) => {
                assert!(reply.consumed > 0 && reply.consumed <= rest.len());
                assert!(reply.len <= out.len());
                rest = &rest[reply.consumed..];
            }
            Ok(Status::Partial) | Err(_) => break,
        }
    }
});
