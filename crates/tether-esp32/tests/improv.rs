//! Improv Wi-Fi over a serial byte stream: the browser side (written from
//! the specification's byte layout) talks to `ImprovSerial` through a tokio
//! duplex pipe, with log lines interleaved as on the real USB-Serial-JTAG
//! port, and in pieces of every size.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use embedded_io_adapters::tokio_1::FromTokio;
use tether_core::provisioning::improv::DeviceInfo;
use tether_core::provisioning::portal::Network;
use tether_esp32::improv::{ImprovSerial, ImprovSerialError};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// A packet as the specification lays it out: "IMPROV", version 1, type,
/// length, data, checksum (sum of all previous bytes).
fn packet(kind: u8, data: &[u8]) -> Vec<u8> {
    let mut bytes = b"IMPROV".to_vec();
    bytes.extend([1, kind, u8::try_from(data.len()).unwrap()]);
    bytes.extend(data);
    let sum = bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b));
    bytes.push(sum);
    bytes
}

fn rpc(command: u8, payload: &[u8]) -> Vec<u8> {
    let mut data = vec![command, u8::try_from(payload.len()).unwrap()];
    data.extend(payload);
    packet(3, &data)
}

/// Reads packets from the device until one of `kind` arrives; returns its
/// data.
async fn expect(port: &mut DuplexStream, buffer: &mut Vec<u8>, kind: u8) -> Vec<u8> {
    loop {
        while let Some(start) = buffer.windows(6).position(|w| w == b"IMPROV") {
            if buffer.len() < start + 10 {
                break;
            }
            let len = usize::from(buffer[start + 8]);
            if buffer.len() < start + 10 + len {
                break;
            }
            let whole: Vec<u8> = buffer.drain(..start + 10 + len).skip(start).collect();
            let sum = whole[..whole.len() - 1]
                .iter()
                .fold(0u8, |a, b| a.wrapping_add(*b));
            assert_eq!(sum, whole[whole.len() - 1], "checksum of {whole:?}");
            if whole[7] == kind {
                return whole[9..9 + len].to_vec();
            }
        }
        let mut chunk = [0u8; 256];
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), port.read(&mut chunk))
            .await
            .expect("a reply in time")
            .expect("read");
        assert!(n > 0, "device closed the port");
        buffer.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn improv_over_a_serial_stream() {
    let (device_end, mut browser) = tokio::io::duplex(64);
    let info = DeviceInfo {
        firmware_name: "tether-sensor",
        firmware_version: "0.1.0",
        chip: "ESP32-C3",
        device_name: "tether-4F2A",
    };
    let device = tokio::spawn(async move {
        let networks = [Network {
            ssid: "Home-Net",
            rssi: -51,
            secured: true,
        }];
        let mut improv = ImprovSerial::new(FromTokio::new(device_end), info);
        let credentials = improv
            .next_credentials(&networks)
            .await
            .expect("credentials");
        improv
            .provisioned("https://relay.example.com/devices/kitchen-1")
            .await
            .expect("reply");
        // The port closing ends the next wait with a typed error.
        let closed = improv.next_credentials(&networks).await;
        (
            credentials,
            matches!(closed, Err(ImprovSerialError::Closed)),
        )
    });

    let mut received = Vec::new();
    // Log noise first, then "get device info" (command 3), byte by byte.
    browser
        .write_all(b"I (312) boot: ESP-IDF style log line\r\nIMPRO")
        .await
        .unwrap();
    for byte in rpc(3, &[]) {
        browser.write_all(&[byte]).await.unwrap();
    }
    let result = expect(&mut browser, &mut received, 4).await;
    assert_eq!(result[0], 3);
    let strings = &result[2..];
    assert!(
        strings.windows(13).any(|w| w == b"tether-sensor"),
        "{strings:?}"
    );
    assert!(strings.windows(8).any(|w| w == b"ESP32-C3"), "{strings:?}");

    // "Get current state" (2): ready (2).
    browser.write_all(&rpc(2, &[])).await.unwrap();
    assert_eq!(expect(&mut browser, &mut received, 1).await, vec![2]);

    // A packet with a wrong checksum: error state "invalid packet" (1).
    let mut broken = rpc(2, &[]);
    *broken.last_mut().unwrap() ^= 0xFF;
    browser.write_all(&broken).await.unwrap();
    assert_eq!(expect(&mut browser, &mut received, 2).await, vec![1]);

    // "Request scanned networks" (4): one result per network, then an empty one.
    browser.write_all(&rpc(4, &[])).await.unwrap();
    let network = expect(&mut browser, &mut received, 4).await;
    assert!(network.windows(8).any(|w| w == b"Home-Net"), "{network:?}");
    assert_eq!(expect(&mut browser, &mut received, 4).await, vec![4, 0]);

    // "Send Wi-Fi settings" (1): the specification's example.
    let mut settings = vec![12];
    settings.extend(b"MyWirelessAP");
    settings.push(16);
    settings.extend(b"mysecurepassword");
    browser.write_all(&rpc(1, &settings)).await.unwrap();
    // Provisioning (3), then provisioned (4) with the redirect URL.
    assert_eq!(expect(&mut browser, &mut received, 1).await, vec![3]);
    assert_eq!(expect(&mut browser, &mut received, 1).await, vec![4]);
    let done = expect(&mut browser, &mut received, 4).await;
    assert_eq!(done[0], 1);
    assert!(
        done.windows(17).any(|w| w == b"https://relay.exa"),
        "{done:?}"
    );
    drop(browser);

    let (credentials, closed) = device.await.unwrap();
    assert_eq!(credentials.ssid.as_str(), "MyWirelessAP");
    assert_eq!(credentials.passphrase.as_str(), "mysecurepassword");
    assert!(closed);
}
