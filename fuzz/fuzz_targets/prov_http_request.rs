//! The portal's HTTP request parser, then the portal itself on whatever
//! parses: no panic, bounded output, nothing saved from a refused form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_core::provisioning::http::{Limits, Status, parse_request};
use tether_core::provisioning::portal::{ConnectionStatus, Network, Portal, PortalConfig, PortalView};
use tether_core::provisioning::store::MemoryStore;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let portal = Portal::new(PortalConfig::new("192.168.4.1").with_pairing_code("K7-42"));
    let networks = [Network { ssid: "Home", rssi: -50, secured: true }];
    let view = PortalView::new(&networks, ConnectionStatus::WaitingForSettings)
        .with_pairing_locked(data.first() == Some(&b'P') && data.len() % 2 == 0);
    let mut out = [0u8; 12 * 1024];
    match parse_request(data, &limits) {
        Ok(Status::Complete(request)) => {
            assert!(request.len <= data.len());
            let mut store = MemoryStore::new();
            if let Ok(handled) = portal.handle(&request, &view, &mut store, &mut out) {
                assert!(handled.len <= out.len());
                assert_eq!(handled.saved, store.saves() == 1);
            }
        }
        Ok(Status::Partial) => assert!(data.len() <= limits.buffer_len()),
        Err(error) => {
            let handled = portal.reject(error, &mut out).expect("error pages fit");
            assert_eq!(handled.status, error.status_code());
        }
    }
});
