//! The portal's DNS responder over real UDP, queried by a real resolver
//! (hickory-resolver) and by raw datagrams.

mod common;

use core::net::{IpAddr, Ipv4Addr};
use core::time::Duration;
use std::net::UdpSocket;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::{Resolver, TokioResolver};
use tether_core::provisioning::store::MemoryStore;

const AP: Ipv4Addr = Ipv4Addr::new(192, 168, 4, 1);

fn resolver(port: u16) -> TokioResolver {
    let mut connection = ConnectionConfig::udp();
    connection.port = port;
    let server = NameServerConfig::new(IpAddr::V4(Ipv4Addr::LOCALHOST), true, vec![connection]);
    let mut options = ResolverOpts::default();
    options.cache_size = 0;
    options.attempts = 1;
    options.timeout = Duration::from_secs(3);
    let mut builder = Resolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![server]),
        TokioRuntimeProvider::default(),
    );
    *builder.options_mut() = options;
    builder.build().expect("resolver")
}

#[test]
fn every_name_resolves_to_the_access_point() {
    let (runtime, handle) = common::start(MemoryStore::new());
    let resolver = resolver(handle.dns_addr().port());
    runtime.block_on(async {
        for name in [
            "connectivitycheck.gstatic.com.",
            "captive.apple.com.",
            "www.msftconnecttest.com.",
            "detectportal.firefox.com.",
            "example.org.",
        ] {
            let answer = resolver.ipv4_lookup(name).await.expect(name);
            let addresses: Vec<Ipv4Addr> = answer
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::A(a) => Some(a.0),
                    _ => None,
                })
                .collect();
            assert_eq!(addresses, [AP], "{name}");
        }
        // A lookup of both families gets the IPv4 address only.
        let ips: Vec<IpAddr> = resolver
            .lookup_ip("neverssl.com.")
            .await
            .expect("lookup_ip")
            .iter()
            .collect();
        assert_eq!(ips, [IpAddr::V4(AP)]);
        // AAAA: an empty answer (NODATA), which the resolver reports as
        // "no records".
        let aaaa = resolver.lookup("example.org.", RecordType::AAAA).await;
        assert!(aaaa.is_err(), "{aaaa:?}");
    });
}

#[test]
fn malformed_datagrams_get_formerr_or_silence_and_the_responder_keeps_going() {
    let (_runtime, handle) = common::start(MemoryStore::new());
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut reply = [0u8; 512];
    // Two questions: FORMERR with the same id.
    socket
        .send_to(
            &[0xab, 0xcd, 1, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1],
            handle.dns_addr(),
        )
        .expect("send");
    let (n, _) = socket.recv_from(&mut reply).expect("FORMERR reply");
    assert_eq!(n, 12);
    assert_eq!(&reply[..2], &[0xab, 0xcd]);
    assert_eq!(reply[3] & 0x0f, 1, "FORMERR");
    // Too short to be DNS: no reply.
    socket.send_to(&[1, 2, 3], handle.dns_addr()).expect("send");
    assert!(socket.recv_from(&mut reply).is_err(), "no reply to garbage");
    // Still answering.
    let mut query = vec![0x00, 0x07, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    query.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
    socket.send_to(&query, handle.dns_addr()).expect("send");
    let (n, _) = socket.recv_from(&mut reply).expect("answer");
    assert_eq!(&reply[n - 4..n], &AP.octets());
}
