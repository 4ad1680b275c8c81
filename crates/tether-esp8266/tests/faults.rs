//! Every modem failure the simulator can inject ends in a typed error, and
//! the driver recovers from it: join failures, `SEND FAIL`, busy storms, a
//! link closed mid-frame, a silent modem (probe), one that stops answering
//! (`AT+RST`), a hung one (reset pin; unresponsive without one); plus TLS
//! verification against the flashed CA, scans and SNTP.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use embedded_io_async::{Read, Write};
use tether_core::connector::{Connector, Endpoint, Security};
use tether_core::time::Duration as CoreDuration;
use tether_esp8266::{Config, Error, Esp8266, JoinError, ModemBuffers, TlsVerification};
use tether_esp8266_sim::{Fault, SimConfig};
use tether_host::clock::TokioClock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Short timeouts, so faults end quickly, but long enough that a loaded
/// 2-core CI machine stalling the test for a second does not fake one.
fn quick() -> Config<'static> {
    Config::new()
        .with_wifi(SSID, PASSPHRASE)
        .with_command_timeout(CoreDuration::from_secs(2))
}

/// A TCP echo server on loopback; returns its port.
async fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

async fn echo_round_trip<P: embedded_hal::digital::OutputPin>(
    connector: &mut Esp8266<'_, Serial, TokioClock, P>,
    endpoint: Endpoint<'_>,
    message: &[u8],
) -> Result<Vec<u8>, Error> {
    let mut link = connector.connect(endpoint).await?;
    echo_on(&mut link, message).await
}

/// Writes `message` on `link` and reads as many bytes back.
async fn echo_on<L: Read + Write<Error = Error>>(
    link: &mut L,
    message: &[u8],
) -> Result<Vec<u8>, Error> {
    link.write_all(message).await?;
    link.flush().await?;
    let mut got = Vec::new();
    let mut buf = [0u8; 300];
    while got.len() < message.len() {
        let n = link.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    Ok(got)
}

#[tokio::test]
async fn join_failures_are_typed_and_a_good_join_works() {
    let _limit = time_limit(
        "join_failures_are_typed_and_a_good_join_works",
        Duration::from_secs(60),
    );
    let (serial, sim) = modem(SimConfig::new(11));
    let mut buffers = ModemBuffers::<64, 256, 256>::new();
    // No credentials in the config; joins end in well under 2 s here.
    let config = Config::new().with_join_timeout(CoreDuration::from_secs(2));
    let mut modem = Esp8266::new(serial, TokioClock::new(), config, &mut buffers);
    assert_eq!(
        modem.join(SSID, "not the password").await,
        Err(Error::Join(JoinError::WrongPassword))
    );
    assert_eq!(
        modem.join("Elsewhere", "whatever1").await,
        Err(Error::Join(JoinError::NoAccessPoint))
    );
    assert!(!modem.wifi_state().got_ip);
    modem.join(SSID, PASSPHRASE).await.unwrap();
    assert!(modem.wifi_state().got_ip);
    // The access point stays in range but stops answering: a timeout.
    sim.apply(Fault::SetNetworkAnswering(SSID.into(), false))
        .await;
    assert_eq!(
        modem.join(SSID, PASSPHRASE).await,
        Err(Error::Join(JoinError::Timeout))
    );
    assert!(!modem.wifi_state().got_ip);
    sim.apply(Fault::SetNetworkAnswering(SSID.into(), true))
        .await;
    modem.join(SSID, PASSPHRASE).await.unwrap();
    assert!(modem.wifi_state().got_ip);
    // The access point vanishes: joining it again says so.
    sim.apply(Fault::SetNetworkPresent(SSID.into(), false))
        .await;
    assert_eq!(
        modem.join(SSID, PASSPHRASE).await,
        Err(Error::Join(JoinError::NoAccessPoint))
    );
    // A connector without credentials cannot bring the station up.
    let endpoint = Endpoint::new("127.0.0.1", 9, Security::Plain);
    assert_eq!(modem.connect(endpoint).await.err(), Some(Error::WifiDown));
}

#[tokio::test]
async fn send_fail_is_typed_and_the_next_connection_works() {
    let _limit = time_limit(
        "send_fail_is_typed_and_the_next_connection_works",
        Duration::from_secs(60),
    );
    let port = echo_server().await;
    let (serial, sim) = modem(SimConfig::new(12).with_max_chunk(3));
    let mut buffers = ModemBuffers::<64, 256, 256>::new();
    let mut modem = Esp8266::new(serial, TokioClock::new(), quick(), &mut buffers);
    let endpoint = Endpoint::new("127.0.0.1", port, Security::Plain);
    let big: Vec<u8> = (0..1500u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(
        echo_round_trip(&mut modem, endpoint, &big).await.unwrap(),
        big
    );

    sim.apply(Fault::SendFail).await;
    let mut link = modem.connect(endpoint).await.unwrap();
    link.write_all(b"lost").await.unwrap();
    assert_eq!(link.flush().await, Err(Error::SendFailed));
    drop(link);
    assert_eq!(
        echo_round_trip(&mut modem, endpoint, b"again")
            .await
            .unwrap(),
        b"again"
    );
    assert_eq!(sim.observed().send_failures, 1);
    // A TCP link reports the data's own length (SSL links do not: see the
    // TLS test).
    assert_eq!(sim.observed().ipd_lengths.last(), Some(&b"again".len()));
    assert_eq!(sim.observed().ssl_reads_refused, 0);
}

/// The runner's close hook (`Connector::close`) sends `AT+CIPCLOSE` at
/// once: the server sees the end of the connection now, not when the next
/// one opens; and the next connect does not close it again.
#[tokio::test]
async fn a_closed_connection_ends_in_the_modem_at_once() {
    let _limit = time_limit(
        "a_closed_connection_ends_in_the_modem_at_once",
        Duration::from_secs(60),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (ended_tx, mut ended) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let ended_tx = ended_tx.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 256];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = ended_tx.send(());
            });
        }
    });
    let (serial, sim) = modem(SimConfig::new(22));
    let mut buffers = ModemBuffers::<64, 256, 256>::new();
    let mut modem = Esp8266::new(serial, TokioClock::new(), quick(), &mut buffers);
    let endpoint = Endpoint::new("127.0.0.1", port, Security::Plain);

    let mut link = modem.connect(endpoint).await.unwrap();
    assert_eq!(echo_on(&mut link, b"ping").await.unwrap(), b"ping");
    <Esp8266<'_, Serial, TokioClock> as Connector>::close(link).await;
    tokio::time::timeout(Duration::from_secs(5), ended.recv())
        .await
        .expect("the server saw the connection end at once");
    let closes = |sim: &tether_esp8266_sim::SimHandle| {
        let observed = sim.observed();
        observed
            .commands
            .iter()
            .filter(|c| *c == "AT+CIPCLOSE")
            .count()
    };
    assert_eq!(closes(&sim), 1);

    // The next connection needs no clean-up; a merely dropped one does.
    let link = modem.connect(endpoint).await.unwrap();
    assert_eq!(closes(&sim), 1);
    drop(link);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), ended.recv())
            .await
            .is_err(),
        "a dropped link stays open in the modem"
    );
    let mut link = modem.connect(endpoint).await.unwrap();
    assert_eq!(closes(&sim), 2, "closed before the id was used again");
    assert_eq!(echo_on(&mut link, b"again").await.unwrap(), b"again");
}

#[tokio::test]
async fn busy_storms_are_retried_then_typed() {
    let _limit = time_limit(
        "busy_storms_are_retried_then_typed",
        Duration::from_secs(60),
    );
    let (serial, sim) = modem(SimConfig::new(13));
    let mut buffers = ModemBuffers::<64, 256, 256>::new();
    let mut modem = Esp8266::new(serial, TokioClock::new(), quick(), &mut buffers);
    modem.ensure_ready().await.unwrap();
    sim.apply(Fault::BusyStorm(4)).await;
    modem.command("AT").await.unwrap();
    assert!(modem.stats().busy >= 4, "{:?}", modem.stats());

    sim.apply(Fault::BusyStorm(10_000)).await;
    assert_eq!(modem.command("AT").await, Err(Error::Busy));
    sim.apply(Fault::BusyStorm(0)).await;
    modem.command("AT").await.unwrap();
}

#[tokio::test]
async fn a_link_closed_mid_frame_ends_the_stream_and_writes_fail() {
    let _limit = time_limit(
        "a_link_closed_mid_frame_ends_the_stream_and_writes_fail",
        Duration::from_secs(60),
    );
    // A server that sends half a message and hangs up.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        stream
            .write_all(b"\x82\x7e\x01\x00half a fra")
            .await
            .unwrap();
        stream.shutdown().await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    });
    let (serial, _sim) = modem(SimConfig::new(14).with_max_chunk(2));
    let mut buffers = ModemBuffers::<64, 256, 256>::new();
    let mut modem = Esp8266::new(serial, TokioClock::new(), quick(), &mut buffers);
    let mut link = modem
        .connect(Endpoint::new("127.0.0.1", port, Security::Plain))
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        let n = link.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(
        got, b"\x82\x7e\x01\x00half a fra",
        "every byte before CLOSED"
    );
    assert_eq!(link.read(&mut buf).await, Ok(0));
    link.write_all(b"x").await.err().map_or_else(
        || panic!("a write to a closed link must fail"),
        |e| assert_eq!(e, Error::LinkClosed),
    );
}

#[tokio::test]
async fn a_silent_modem_times_out_and_is_probed_back() {
    let _limit = time_limit(
        "a_silent_modem_times_out_and_is_probed_back",
        Duration::from_secs(60),
    );
    let (serial, sim) = modem(SimConfig::new(15));
    let mut buffers = ModemBuffers::<64, 256, 256>::new();
    let mut modem = Esp8266::new(serial, TokioClock::new(), quick(), &mut buffers);
    modem.ensure_ready().await.unwrap();
    // Silent past the command's 2 s and the first 1 s probe's start, not
    // past the second probe's.
    sim.apply(Fault::Silent(Duration::from_millis(2500))).await;
    assert_eq!(modem.command("AT").await, Err(Error::Timeout));
    modem.ensure_ready().await.unwrap();
    modem.command("AT").await.unwrap();
    assert!(
        modem.stats().timeouts >= 2,
        "the command and the first probe: {:?}",
        modem.stats()
    );
    assert_eq!(sim.observed().resets, 1, "probed back, not reset");
}

/// The modem printed `ready` at power-on before it read the driver's
/// first probe (the simulator boots before it reads anything, as a modem
/// powered up with its host does, and as a `ready` left in a serial
/// port's buffer looks). The probe still takes its own `OK`, so every
/// later command takes its own answer too: the first query after set-up
/// sees its information line, not the `OK` of the set-up's last command.
#[tokio::test]
async fn the_power_on_ready_does_not_shift_the_answers() {
    let _limit = time_limit(
        "the_power_on_ready_does_not_shift_the_answers",
        Duration::from_secs(60),
    );
    let (serial, sim) = modem(SimConfig::new(23));
    let mut buffers = ModemBuffers::<64, 256, 256>::new();
    let mut modem = Esp8266::new(serial, TokioClock::new(), quick(), &mut buffers);
    modem.ensure_ready().await.unwrap();
    let mut mode = None;
    modem
        .query("AT+CWMODE?", &mut |line| {
            if let Some(value) = line.strip_prefix(b"+CWMODE:") {
                mode = Some(value.to_vec());
            }
        })
        .await
        .unwrap();
    assert_eq!(mode.as_deref(), Some(&b"1"[..]), "the answer to AT+CWMODE?");
    let observed = sim.observed();
    assert_eq!(
        observed.commands.iter().filter(|c| *c == "AT").count(),
        1,
        "one probe: {:?}",
        observed.commands
    );
    assert_eq!(modem.stats().resets, 1, "the power-on ready, seen once");
    assert_eq!(modem.stats().timeouts, 0, "no command waited in vain");
}

/// The modem stalls for longer than a command's timeout (2 s here), and
/// answers the command once it timed out. The driver resynchronises
/// before its next command (a tagged `AT+CIPRECONNINTV` set and query),
/// so the late `+CWMODE:1`/`OK` is dropped instead of being taken for the
/// next command's answer (which would leave every later answer one
/// command late), and the link works as before. No reset is needed.
#[tokio::test]
async fn a_late_answer_after_a_timeout_does_not_shift_the_answers() {
    let _limit = time_limit(
        "a_late_answer_after_a_timeout_does_not_shift_the_answers",
        Duration::from_secs(60),
    );
    let port = echo_server().await;
    let (serial, sim) = modem(SimConfig::new(24).with_max_chunk(5));
    let mut buffers = ModemBuffers::<64, 256, 256>::new();
    let mut modem = Esp8266::new(serial, TokioClock::new(), quick(), &mut buffers);
    let endpoint = Endpoint::new("127.0.0.1", port, Security::Plain);
    assert_eq!(
        echo_round_trip(&mut modem, endpoint, b"before")
            .await
            .unwrap(),
        b"before"
    );
    sim.apply(Fault::Stall(Duration::from_millis(2600))).await;
    let mut lines = Vec::new();
    let late = modem
        .query("AT+CWMODE?", &mut |line| lines.push(line.to_vec()))
        .await;
    assert_eq!(late, Err(Error::Timeout), "{lines:?}");
    // Each command takes its own answer from here on.
    let mut recvlen = Vec::new();
    let result = modem
        .query("AT+CIPRECVLEN?", &mut |line| {
            recvlen.push(String::from_utf8_lossy(line).into_owned());
        })
        .await;
    assert_eq!(result, Ok(()));
    assert!(
        recvlen.len() == 1 && recvlen[0].starts_with("+CIPRECVLEN:"),
        "the answer to AT+CIPRECVLEN?, not the late one: {recvlen:?}"
    );
    assert!(
        matches!(
            modem.command("AT+CWMODE=9").await,
            Err(Error::Command { .. })
        ),
        "a refused command is refused, not answered by an OK left over"
    );
    let mut mode = Vec::new();
    modem
        .query("AT+CWMODE?", &mut |line| {
            mode.push(String::from_utf8_lossy(line).into_owned());
        })
        .await
        .unwrap();
    assert_eq!(mode, ["+CWMODE:1"]);
    assert_eq!(
        echo_round_trip(&mut modem, endpoint, b"after the stall")
            .await
            .unwrap(),
        b"after the stall"
    );
    let stats = modem.stats();
    assert_eq!(stats.timeouts, 1, "only the stalled command: {stats:?}");
    let observed = sim.observed();
    assert_eq!(observed.resets, 1, "resynchronised, not reset");
    assert!(
        observed.commands.iter().any(|c| c == "AT+CIPRECONNINTV"),
        "{:?}",
        observed.commands
    );
}

/// The modem stops answering (its RX line loses the command and every
/// probe) and no reset pin is wired: `AT+RST` brings it back, and the
/// driver sets it up again.
#[tokio::test]
async fn a_modem_that_stops_answering_is_reset_by_at_rst() {
    let _limit = time_limit(
        "a_modem_that_stops_answering_is_reset_by_at_rst",
        Duration::from_secs(60),
    );
    let port = echo_server().await;
    let (serial, sim) = modem(SimConfig::new(19));
    let mut buffers = ModemBuffers::<64, 256, 256>::new();
    let mut modem = Esp8266::new(serial, TokioClock::new(), quick(), &mut buffers);
    modem.ensure_ready().await.unwrap();
    // The command and the three probes are lost (after a timeout each
    // probe is two lines, the tagged set and query); the eighth line is
    // heard.
    sim.apply(Fault::LoseLines(7)).await;
    assert_eq!(modem.command("AT").await, Err(Error::Timeout));
    modem.ensure_ready().await.unwrap();
    let observed = sim.observed();
    assert_eq!(observed.resets, 2, "power-on and AT+RST");
    assert_eq!(
        observed.commands.iter().filter(|c| *c == "AT+RST").count(),
        1,
        "{:?}",
        observed.commands
    );
    // Set up again after the reset: passive receive mode, and a working link.
    let after_reset = observed
        .commands
        .iter()
        .rposition(|c| c == "AT+RST")
        .unwrap();
    assert!(
        observed.commands[after_reset..]
            .iter()
            .any(|c| c == "AT+CIPRECVMODE"),
        "{:?}",
        observed.commands
    );
    let endpoint = Endpoint::new("127.0.0.1", port, Security::Plain);
    assert_eq!(
        echo_round_trip(&mut modem, endpoint, b"after the reset")
            .await
            .unwrap(),
        b"after the reset"
    );
}

#[tokio::test]
async fn a_hung_modem_without_reset_pin_is_reported_unresponsive() {
    let _limit = time_limit(
        "a_hung_modem_without_reset_pin_is_reported_unresponsive",
        Duration::from_secs(60),
    );
    let (serial, sim) = modem(SimConfig::new(16));
    let mut buffers = ModemBuffers::<64, 256, 256>::new();
    let mut modem = Esp8266::new(serial, TokioClock::new(), quick(), &mut buffers);
    modem.ensure_ready().await.unwrap();
    sim.apply(Fault::Hang).await;
    assert_eq!(modem.command("AT").await, Err(Error::Timeout));
    assert_eq!(modem.ensure_ready().await, Err(Error::Unresponsive));
}

/// The simulator's reset line as an embedded-hal pin.
struct Pin(tether_esp8266_sim::ResetLine);

impl embedded_hal::digital::ErrorType for Pin {
    type Error = core::convert::Infallible;
}

impl embedded_hal::digital::OutputPin for Pin {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        self.0.set(false);
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Self::Error> {
        self.0.set(true);
        Ok(())
    }
}

#[tokio::test]
async fn a_hung_modem_comes_back_through_its_reset_pin() {
    let _limit = time_limit(
        "a_hung_modem_comes_back_through_its_reset_pin",
        Duration::from_secs(60),
    );
    let port = echo_server().await;
    let (serial, sim) = modem(SimConfig::new(17));
    let mut buffers = ModemBuffers::<64, 256, 256>::new();
    let mut modem = Esp8266::new(serial, TokioClock::new(), quick(), &mut buffers)
        .with_reset_pin(Pin(sim.reset_line()));
    let endpoint = Endpoint::new("127.0.0.1", port, Security::Plain);
    assert_eq!(
        echo_round_trip(&mut modem, endpoint, b"one").await.unwrap(),
        b"one"
    );
    sim.apply(Fault::Hang).await;
    let mut link = modem.connect(endpoint).await.err();
    if link.is_none() {
        // The connect may have raced the hang; the next command cannot.
        link = modem.command("AT").await.err();
    }
    assert_eq!(link, Some(Error::Timeout));
    // The next connection probes, pulses the pin, sets the modem up again,
    // rejoins and connects.
    assert_eq!(
        echo_round_trip(&mut modem, endpoint, b"two").await.unwrap(),
        b"two"
    );
    assert!(sim.observed().resets >= 2);
}

#[tokio::test]
async fn scan_and_sntp_time() {
    let _limit = time_limit("scan_and_sntp_time", Duration::from_secs(60));
    let (serial, _sim) = modem(SimConfig::new(18));
    let mut buffers = ModemBuffers::<64, 256, 256>::new();
    let mut modem = Esp8266::new(serial, TokioClock::new(), quick(), &mut buffers);
    let mut networks = heapless::Vec::<tether_esp8266::ScannedNetwork, 4>::new();
    modem.scan(&mut networks).await.unwrap();
    let names: Vec<&str> = networks.iter().map(|n| n.ssid.as_str()).collect();
    assert_eq!(names, [SSID, "Neighbour"], "strongest first");
    modem.configure_sntp("pool.ntp.org").await.unwrap();
    assert_eq!(
        modem.sntp_time().await.unwrap(),
        None,
        "not on a network yet"
    );
    modem.join(SSID, PASSPHRASE).await.unwrap();
    assert_eq!(modem.sntp_time().await.unwrap(), Some(1_764_000_000));
    assert_eq!(
        modem.configure_sntp("bad\"name").await,
        Err(Error::InvalidArgument)
    );
}

/// A CA, and a server certificate for `relay.test` signed by it.
fn certificates() -> (
    String,
    rcgen::Certificate,
    rcgen::KeyPair,
    rcgen::Issuer<'static, rcgen::KeyPair>,
) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let ca_pem = ca.pem();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server = rcgen::CertificateParams::new(vec!["relay.test".to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    (ca_pem, server, server_key, issuer)
}

/// A TLS echo server presenting `cert`; returns its port.
async fn tls_echo_server(cert: &rcgen::Certificate, key: &rcgen::KeyPair) -> u16 {
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                while let Ok(n) = tls.read(&mut buf).await {
                    if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn tls_in_the_modem_verifies_against_the_flashed_ca() {
    let _limit = time_limit(
        "tls_in_the_modem_verifies_against_the_flashed_ca",
        Duration::from_secs(60),
    );
    let (ca_pem, server_cert, server_key, _issuer) = certificates();
    let port = tls_echo_server(&server_cert, &server_key).await;
    let mut image = vec![0xffu8; tether_esp8266::pki::CLIENT_CA_PARTITION_LEN];
    let len = tether_esp8266::pki::encode_ca(ca_pem.as_bytes(), &mut image).unwrap();
    image.truncate(len);
    let endpoint = Endpoint::new("relay.test", port, Security::Tls);

    // The right CA: verified, and the name checked.
    let (serial, sim) = modem(
        SimConfig::new(19)
            .with_host("relay.test")
            .with_client_ca(image),
    );
    let mut buffers = ModemBuffers::<64, 512, 512>::new();
    let mut modem = Esp8266::new(
        serial,
        TokioClock::new(),
        quick().with_ssl_buffer_size(4096),
        &mut buffers,
    );
    {
        let mut link = modem.connect(endpoint).await.unwrap();
        assert_eq!(echo_on(&mut link, b"secret").await.unwrap(), b"secret");
        // ESP-AT reports an SSL link's encrypted length: the 6 bytes came
        // as more, and the driver got to the end of the data anyway.
        let lengths = sim.observed().ipd_lengths;
        assert!(
            !lengths.is_empty() && lengths.iter().all(|&n| n > b"secret".len()),
            "{lengths:?}"
        );
        // Reading what the length still promises is refused (nothing is
        // left); the read waits for more, and a cancelled read loses nothing.
        let mut buf = [0u8; 64];
        for _ in 0..20 {
            let read = tokio::time::timeout(Duration::from_millis(200), link.read(&mut buf));
            assert!(read.await.is_err(), "no data, so no read");
            if sim.observed().ssl_reads_refused > 0 {
                break;
            }
        }
        assert_eq!(sim.observed().ssl_reads_refused, 1);
        let long: Vec<u8> = (0..3000u32).map(|i| (i % 253) as u8).collect();
        assert_eq!(echo_on(&mut link, &long).await.unwrap(), long);
    }
    assert_eq!(sim.observed().ssl_links, [Some("relay.test".to_owned())]);
    assert!(
        sim.observed().commands.iter().any(|c| c == "AT+CIPSSLSIZE"),
        "asked, refused by ESP-AT 2.2, and ignored"
    );

    // Another CA flashed: the handshake fails, and the error is typed.
    let (other_ca, ..) = certificates();
    let mut other = vec![0xffu8; 4096];
    let len = tether_esp8266::pki::encode_ca(other_ca.as_bytes(), &mut other).unwrap();
    other.truncate(len);
    let (serial, _sim) = common::modem(
        SimConfig::new(20)
            .with_host("relay.test")
            .with_client_ca(other),
    );
    let mut buffers = ModemBuffers::<64, 512, 512>::new();
    let mut modem = Esp8266::new(serial, TokioClock::new(), quick(), &mut buffers);
    let refused = tokio::time::timeout(Duration::from_secs(30), modem.connect(endpoint))
        .await
        .expect("a refused handshake ends")
        .err();
    assert!(
        matches!(refused, Some(Error::Command { .. })),
        "{refused:?}"
    );

    // Without verification it connects (bench use only).
    let (serial, _sim) = common::modem(SimConfig::new(21).with_host("relay.test"));
    let mut buffers = ModemBuffers::<64, 512, 512>::new();
    let mut modem = Esp8266::new(
        serial,
        TokioClock::new(),
        quick().with_tls(TlsVerification::Insecure),
        &mut buffers,
    );
    assert_eq!(
        echo_round_trip(&mut modem, endpoint, b"open")
            .await
            .unwrap(),
        b"open"
    );
}
