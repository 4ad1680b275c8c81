//! The captive portal on the "chip", for real on the host: tether-esp32's
//! `CaptivePortal` (edge-dhcp DHCP server, tether-core DNS responder and
//! pages) on one embassy-net stack, and a "phone" on a second embassy-net
//! stack that gets its address by DHCP from it, resolves a connectivity
//! check name through it and walks through the set-up pages over TCP. The
//! two stacks sit on two TAP devices joined by a Linux bridge, inside a
//! network namespace the test creates.
//!
//! ```text
//!  netns:  [portal stack 192.168.4.1] ─ tap0 ─ br0 ─ tap1 ─ [phone stack, DHCP client]
//! ```
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod support;

use std::net::Ipv4Addr;
use std::time::Duration;

use embassy_net::tcp::TcpSocket;
use embassy_net::{Ipv4Cidr, Stack, StackResources, StaticConfigV4};
use embedded_io_async::Write as _;
use rand::{RngCore, SeedableRng};
use support::BoxError;
use support::netns::{self, ip};
use tether_core::provisioning::portal::PortalConfig;
use tether_core::provisioning::store::{ConfigStore, MemoryStore};
use tether_esp32::portal::{CaptivePortal, PortalBuffers, ScannedNetwork};

const AP: Ipv4Addr = Ipv4Addr::new(192, 168, 4, 1);
const WAIT: Duration = Duration::from_secs(20);

#[test]
fn captive_portal_over_tap() {
    netns::in_network_namespace("captive_portal_over_tap", inside);
}

fn inside() {
    let _ = env_logger::builder().is_test(true).try_init();
    ip("link set lo up");
    let mut ap_tap = netns::tap("tap0");
    let mut phone_tap = netns::tap("tap1");
    ap_tap.set_hardware_address([0x02, 0, 0, 0, 0, 0x01]);
    phone_tap.set_hardware_address([0x02, 0, 0, 0, 0, 0x02]);
    ip("link add br0 type bridge");
    ip("link set tap0 master br0");
    ip("link set tap1 master br0");
    ip("link set tap0 up");
    ip("link set tap1 up");
    ip("link set br0 up");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    if let Err(error) = local.block_on(&runtime, scenario(ap_tap, phone_tap)) {
        panic!("{error}");
    }
}

fn stack(driver: embassy_net_tuntap::TunTapDevice, config: embassy_net::Config) -> Stack<'static> {
    let resources: &'static mut StackResources<8> = Box::leak(Box::new(StackResources::new()));
    let seed = rand::rngs::StdRng::from_os_rng().next_u64();
    let (stack, mut runner) = embassy_net::new(driver, config, resources, seed);
    tokio::task::spawn_local(async move { runner.run().await });
    stack
}

/// One HTTP exchange from the phone: the whole response, read until the
/// portal closes.
async fn http(phone: Stack<'static>, request: &str) -> Result<String, BoxError> {
    let (mut rx, mut tx) = (vec![0u8; 16 * 1024], vec![0u8; 4096]);
    let mut socket = TcpSocket::new(phone, &mut rx, &mut tx);
    socket.set_timeout(Some(embassy_time::Duration::from_secs(10)));
    socket
        .connect((AP, 80))
        .await
        .map_err(|e| format!("connect to the portal: {e:?}"))?;
    socket
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e:?}"))?;
    let mut response = Vec::new();
    let mut chunk = [0u8; 2048];
    loop {
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => response.extend_from_slice(&chunk[..n]),
        }
    }
    // Close as a phone does (FIN), so the portal's worker is free at once.
    tether_esp32::tcp::close_socket(&mut socket, embassy_time::Duration::from_secs(1)).await;
    Ok(String::from_utf8(response)?)
}

async fn scenario(
    ap_tap: embassy_net_tuntap::TunTapDevice,
    phone_tap: embassy_net_tuntap::TunTapDevice,
) -> Result<(), BoxError> {
    // The device: access point address, the portal on it.
    let ap = stack(
        ap_tap,
        embassy_net::Config::ipv4_static(StaticConfigV4 {
            address: Ipv4Cidr::new(AP, 24),
            gateway: None,
            dns_servers: heapless::Vec::new(),
        }),
    );
    let config = PortalConfig::new("192.168.4.1")
        .with_device_name("tether-4F2A")
        .with_default_server_url("wss://relay.example.com/v1/device");
    let portal: &'static CaptivePortal<'static, MemoryStore> = Box::leak(Box::new(
        CaptivePortal::new(ap, AP, config, MemoryStore::new()),
    ));
    portal.set_networks([
        ScannedNetwork {
            ssid: "Home-Net".try_into().map_err(|_| "ssid")?,
            rssi: -48,
            secured: true,
        },
        ScannedNetwork {
            ssid: "<script>alert(1)</script>".try_into().map_err(|_| "ssid")?,
            rssi: -80,
            secured: false,
        },
    ]);
    let buffers: &'static mut PortalBuffers = Box::leak(Box::new(PortalBuffers::new()));
    tokio::task::spawn_local(async move { portal.run(buffers).await });

    // The phone: an address by DHCP from the portal.
    let phone = stack(phone_tap, embassy_net::Config::dhcpv4(Default::default()));
    tokio::time::timeout(WAIT, phone.wait_config_up())
        .await
        .map_err(|_| "the phone got no DHCP lease from the portal")?;
    let lease = phone.config_v4().ok_or("no IPv4 configuration")?;
    let octets = lease.address.address().octets();
    assert_eq!(&octets[..3], &[192, 168, 4], "{lease:?}");
    assert!((50..=200).contains(&octets[3]), "{lease:?}");
    assert_eq!(lease.gateway, Some(AP), "{lease:?}");
    assert_eq!(lease.dns_servers.as_slice(), &[AP], "{lease:?}");
    println!("portal: DHCP lease {} (router and DNS {AP})", lease.address);

    // Every name resolves to the access point.
    let answer = phone
        .dns_query(
            "connectivitycheck.gstatic.com",
            embassy_net::dns::DnsQueryType::A,
        )
        .await
        .map_err(|e| format!("DNS through the portal: {e:?}"))?;
    assert_eq!(answer.as_slice(), &[embassy_net::IpAddress::Ipv4(AP)]);
    println!("portal: DNS answers {AP} for every name");

    // The phone's connectivity probe is sent to the set-up page.
    let probe = http(
        phone,
        "GET /generate_204 HTTP/1.1\r\nHost: connectivitycheck.gstatic.com\r\n\r\n",
    )
    .await?;
    assert!(probe.starts_with("HTTP/1.1 302"), "{probe}");
    assert!(probe.contains("Location: http://192.168.4.1/"), "{probe}");

    // The form lists the scanned networks, escaped.
    let form = http(phone, "GET / HTTP/1.1\r\nHost: 192.168.4.1\r\n\r\n").await?;
    assert!(form.starts_with("HTTP/1.1 200"), "{form}");
    assert!(form.contains("Home-Net"), "{form}");
    assert!(form.contains("&lt;script&gt;"), "{form}");
    assert!(!form.contains("<script>alert"), "{form}");

    // Garbage gets an error page, and the portal keeps serving.
    let garbage = http(phone, "\x00\x01 nonsense\r\n\r\n").await?;
    assert!(garbage.starts_with("HTTP/1.1 4"), "{garbage}");

    // Submitting the form saves the record.
    let body = "ssid=Home-Net&passphrase=correct+horse&server_url=wss%3A%2F%2Frelay.example.com%2Fv1%2Fdevice\
                &device_id=kitchen-1&token=td_secret";
    let post = format!(
        "POST /save HTTP/1.1\r\nHost: 192.168.4.1\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let saved = http(phone, &post).await?;
    assert!(saved.starts_with("HTTP/1.1 303"), "{saved}");
    tokio::time::timeout(WAIT, portal.saved())
        .await
        .map_err(|_| "saved() never fired")?;
    assert_eq!(portal.saves(), 1);
    let record = portal
        .with_store(|store| store.load())?
        .ok_or("nothing stored")?;
    assert_eq!(record.device_id.as_str(), "kitchen-1");
    assert_eq!(record.wifi.ok_or("no Wi-Fi")?.ssid.as_str(), "Home-Net");
    println!("portal: form submitted over TCP, record saved");

    // The status page reflects what the firmware reports.
    portal.set_status(tether_core::provisioning::portal::ConnectionStatus::JoiningWifi);
    let status = http(phone, "GET /status HTTP/1.1\r\nHost: 192.168.4.1\r\n\r\n").await?;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    Ok(())
}
