//! Provisioning on the simulated ESP8266's own access point: tether-core's
//! captive portal and DNS responder served through the modem's SoftAP (a
//! loopback listener and UDP socket), driven by a real HTTP client (ureq,
//! and raw requests carrying the portal's `Host`) and a real resolver
//! (hickory); a wrong passphrase sends the customer back to the form, the
//! right one gets the device online.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod common;

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::*;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};
use tether_core::provisioning::portal::{Portal, PortalConfig};
use tether_core::provisioning::record::ProvisioningRecord;
use tether_core::provisioning::state::{Provisioning, ProvisioningConfig};
use tether_core::provisioning::store::{ConfigStore, MemoryStore};
use tether_core::time::Duration as CoreDuration;
use tether_esp8266::portal::{AccessPoint, PortalBuffers, provision};
use tether_esp8266::{Config, Esp8266, ModemBuffers};
use tether_esp8266_sim::{Fault, SimConfig};
use tether_host::clock::TokioClock;

const PAIRING: &str = "K7-42";

fn resolver(port: u16) -> TokioResolver {
    let mut connection = ConnectionConfig::udp();
    connection.port = port;
    let server = NameServerConfig::new(IpAddr::V4(Ipv4Addr::LOCALHOST), true, vec![connection]);
    let mut options = ResolverOpts::default();
    options.cache_size = 0;
    options.attempts = 2;
    options.timeout = Duration::from_secs(5);
    let mut builder = Resolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![server]),
        TokioRuntimeProvider::default(),
    );
    *builder.options_mut() = options;
    builder.build().expect("resolver")
}

/// One request with the portal's `Host`, as a phone on the AP sends it.
///
/// Like a phone, it tries again when the answer is not HTTP: ESP-AT gives
/// the id of a connection that just closed to the next one at once, so the
/// rest of a response the portal was sending to a phone that hung up (the
/// connectivity probe does, after the headers) can reach the next
/// connection first; the driver notices (`Error::LinkReused`) and closes
/// that connection, and the phone asks again.
async fn raw(addr: SocketAddr, request: String) -> String {
    let mut response = String::new();
    for _ in 0..3 {
        response = raw_once(addr, request.clone()).await;
        if response.starts_with("HTTP/1.1 ") {
            break;
        }
        eprintln!("not an HTTP response, asking again: {response:?}");
    }
    response
}

async fn raw_once(addr: SocketAddr, request: String) -> String {
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        stream.write_all(request.as_bytes()).expect("write");
        let mut response = Vec::new();
        if let Err(e) = stream.read_to_end(&mut response) {
            eprintln!("read error after {} bytes: {e}", response.len());
        }
        String::from_utf8_lossy(&response).into_owned()
    })
    .await
    .expect("join")
}

fn form(passphrase: &str, server: &str) -> String {
    let body: String = [
        ("ssid", SSID),
        ("other_ssid", ""),
        ("passphrase", passphrase),
        ("pairing_code", PAIRING),
        ("server_url", server),
        ("device_id", "esp-01"),
        ("token", "td_token"),
    ]
    .iter()
    .map(|(k, v)| {
        format!(
            "{k}={}",
            v.replace(' ', "+").replace(':', "%3A").replace('/', "%2F")
        )
    })
    .collect::<Vec<_>>()
    .join("&");
    format!(
        "POST /save HTTP/1.1\r\nHost: 192.168.4.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_is_served_through_the_soft_ap() {
    let _limit = time_limit(
        "the_portal_is_served_through_the_soft_ap",
        Duration::from_secs(120),
    );
    // The relay the device must reach (a plain TCP listener is enough to
    // count as "reached").
    let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_url = format!(
        "ws://127.0.0.1:{}/v1/device",
        relay.local_addr().unwrap().port()
    );
    tokio::spawn(async move { while relay.accept().await.is_ok() {} });

    let (serial, sim) = modem(SimConfig::new(31).with_max_chunk(16));
    let mut modem_buffers = ModemBuffers::<256, 1024, 1024>::new();
    let mut esp = Esp8266::new(
        serial,
        TokioClock::new(),
        Config::new().with_command_timeout(CoreDuration::from_secs(3)),
        &mut modem_buffers,
    );
    let mut store = MemoryStore::new();
    let portal = Portal::new(
        PortalConfig::new("192.168.4.1")
            .with_device_name("tether-4F2A")
            .with_pairing_code(PAIRING)
            .with_default_server_url("wss://relay.example.com/v1/device"),
    );
    let mut machine = Provisioning::new(ProvisioningConfig::default().with_portal_linger_ms(500));
    let mut buffers = Box::new(PortalBuffers::<2048, 12288>::new());
    let device = provision(
        &mut esp,
        &mut store,
        &portal,
        &mut machine,
        AccessPoint::open("tether-4F2A"),
        &mut buffers,
    );
    let phone = async {
        let http = sim.ap_addr(80).await.expect("the SoftAP serves HTTP");
        let dns = sim.ap_addr(53).await.expect("the SoftAP answers DNS");

        // Every name resolves to the access point.
        let answer = resolver(dns.port())
            .ipv4_lookup("connectivitycheck.gstatic.com.")
            .await
            .expect("lookup");
        let addresses: Vec<Ipv4Addr> = answer
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect();
        assert_eq!(addresses, [Ipv4Addr::new(192, 168, 4, 1)]);

        // The phone's connectivity probe is sent to the portal.
        let probe = tokio::task::spawn_blocking(move || {
            let agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .timeout_global(Some(Duration::from_secs(20)))
                .build()
                .new_agent();
            let response = agent
                .get(format!("http://{http}/generate_204"))
                .call()
                .expect("GET");
            (
                response.status().as_u16(),
                response
                    .headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
            )
        })
        .await
        .expect("join");
        assert_eq!(probe, (302, Some("http://192.168.4.1/".to_owned())));

        // The form lists the scanned networks.
        let page = raw(
            http,
            "GET / HTTP/1.1\r\nHost: 192.168.4.1\r\nConnection: close\r\n\r\n".into(),
        )
        .await;
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert!(
            page.contains("Home") && page.contains("Neighbour"),
            "{page}"
        );

        // A wrong passphrase: saved, tried, and the status page says so.
        let saved = raw(http, form("wrong passphrase", &relay_url)).await;
        assert!(saved.starts_with("HTTP/1.1 303"), "{saved}");
        let mut failed = false;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let status = raw(
                http,
                "GET /status HTTP/1.1\r\nHost: 192.168.4.1\r\nConnection: close\r\n\r\n".into(),
            )
            .await;
            if status.contains("Could not join") {
                failed = true;
                break;
            }
        }
        assert!(failed, "the status page reports the failed join");

        // The right one.
        let saved = raw(http, form(PASSPHRASE, &relay_url)).await;
        assert!(saved.starts_with("HTTP/1.1 303"), "{saved}");
    };
    let Ok((record, ())) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(device, phone)
    })
    .await
    else {
        let commands = sim.observed().commands;
        panic!(
            "provisioning did not finish: {:?}",
            &commands[commands.len().saturating_sub(40)..]
        );
    };
    let record: ProvisioningRecord = record.expect("provisioned");
    let wifi = record.wifi.as_ref().expect("credentials");
    assert_eq!(
        (wifi.ssid.as_str(), wifi.passphrase.as_str()),
        (SSID, PASSPHRASE)
    );
    assert_eq!(record.device_id.as_str(), "esp-01");
    assert!(esp.wifi_state().got_ip);
    let observed = sim.observed();
    assert!(observed.commands.iter().any(|c| c == "AT+CWSAP"));
    assert!(
        observed.ap_addrs.is_empty() || !observed.ap_addrs.contains_key(&80),
        "the portal closed"
    );
    assert_eq!(observed.joins, ["Home", "Home"]);
    assert_eq!(store.load().unwrap().unwrap().device_id.as_str(), "esp-01");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_credentials_fall_back_to_the_portal_which_times_out_into_a_retry() {
    let _limit = time_limit(
        "saved_credentials_fall_back_to_the_portal_which_times_out_into_a_retry",
        Duration::from_secs(120),
    );
    let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_url = format!(
        "ws://127.0.0.1:{}/v1/device",
        relay.local_addr().unwrap().port()
    );
    tokio::spawn(async move { while relay.accept().await.is_ok() {} });

    let (serial, sim) = modem(SimConfig::new(32));
    // The router is off when the device boots.
    sim.inject(Fault::SetNetworkPresent(SSID.into(), false));
    let mut modem_buffers = ModemBuffers::<256, 1024, 1024>::new();
    let mut esp = Esp8266::new(
        serial,
        TokioClock::new(),
        Config::new().with_command_timeout(CoreDuration::from_secs(3)),
        &mut modem_buffers,
    );
    let mut store = MemoryStore::new();
    let mut record = ProvisioningRecord::new(&relay_url, "esp-02", "td_token").unwrap();
    record.wifi = Some(tether_core::provisioning::record::WifiCredentials {
        ssid: tether_core::provisioning::record::Ssid::new(SSID).unwrap(),
        passphrase: tether_core::provisioning::record::Passphrase::new(PASSPHRASE).unwrap(),
    });
    store.save(&record).unwrap();
    let portal = Portal::new(PortalConfig::new("192.168.4.1"));
    let mut machine = Provisioning::new(
        ProvisioningConfig::default()
            .with_max_failures(2)
            .with_retry_delay_ms(200)
            .with_portal_timeout_ms(1_500),
    );
    let mut buffers = Box::new(PortalBuffers::<2048, 12288>::new());
    let device = provision(
        &mut esp,
        &mut store,
        &portal,
        &mut machine,
        AccessPoint::open("tether-4F2A"),
        &mut buffers,
    );
    let router = async {
        // Two failed attempts open the portal; it times out into a retry.
        assert!(sim.ap_addr(80).await.is_some(), "the portal opened");
        tokio::time::sleep(Duration::from_millis(500)).await;
        sim.inject(Fault::SetNetworkPresent(SSID.into(), true));
    };
    let (record, ()) = tokio::time::timeout(Duration::from_secs(120), async {
        tokio::join!(device, router)
    })
    .await
    .expect("finished in time");
    assert_eq!(record.expect("online").device_id.as_str(), "esp-02");
    let joins = sim.observed().joins;
    assert!(
        joins.len() >= 3,
        "two failures, then success after the portal timed out: {joins:?}"
    );
}
