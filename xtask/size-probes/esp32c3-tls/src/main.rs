//! TLS size probe for `cargo xtask firmware`: the Wi-Fi + TCP baseline
//! (`../esp32c3-wifi-tcp`) plus one TLS handshake to the relay with a
//! pinned CA, then a counter written over TLS every second. Built twice:
//! `--features embedded-tls` (tether-esp32's `TlsConnector`, SNTP for the
//! validity check) and `--features mbedtls` (mbedtls-rs, prebuilt Mbed TLS
//! with the ESP32-C3's SHA and RSA/bignum accelerators). What each adds
//! over the baseline is the cost of that TLS stack.
#![no_std]
#![no_main]

#[cfg(all(feature = "embedded-tls", feature = "mbedtls"))]
compile_error!("pick one TLS stack: `embedded-tls` or `mbedtls`");
#[cfg(not(any(feature = "embedded-tls", feature = "mbedtls")))]
compile_error!("pick a TLS stack: `--features embedded-tls` or `--features mbedtls`");

extern crate alloc;

use embassy_executor::Spawner;
use embassy_net::{Runner as NetRunner, StackResources};
use embassy_time::{Duration, Timer};
use embedded_io_async::Write;
use esp_backtrace as _;
use esp_hal::clock::CpuClock;
use esp_hal::rng::{Rng, Trng, TrngSource};
use esp_hal::timer::timg::TimerGroup;
use esp_println::println;
use esp_radio::wifi::sta::StationConfig;
use esp_radio::wifi::{AuthenticationMethodConfig, Config, Interface, WifiController};
use static_cell::StaticCell;

esp_bootloader_esp_idf::esp_app_desc!();

const SSID: &str = match option_env!("SSID") {
    Some(ssid) => ssid,
    None => "tether",
};
const PASSWORD: &str = match option_env!("PASSWORD") {
    Some(password) => password,
    None => "tether-password",
};
const HOST: &str = "relay.example.com";
/// Stands in for the relay's CA certificate (the bytes do not change the
/// code size).
static CA: &[u8] = &[0x30; 420];
const SOCKET_BUFFER: usize = 2048;

#[esp_rtos::main]
async fn main(spawner: Spawner) -> ! {
    let peripherals = esp_hal::init(esp_hal::Config::default().with_cpu_clock(CpuClock::max()));
    esp_alloc::heap_allocator!(size: 72 * 1024);
    let timg0 = TimerGroup::new(peripherals.TIMG0);
    esp_rtos::start(timg0.timer0, peripherals.FROM_CPU_INTR0);
    static TRNG_SOURCE: StaticCell<TrngSource<'static>> = StaticCell::new();
    TRNG_SOURCE.init(TrngSource::new(peripherals.RNG, peripherals.ADC1));

    let rng = Rng::new();
    let mut controller =
        WifiController::new(peripherals.WIFI, Default::default()).expect("WiFi controller");
    let station = Config::Station(
        StationConfig::default()
            .with_ssid(SSID.try_into().expect("SSID too long"))
            .with_authentication(AuthenticationMethodConfig::Wpa2Personal(
                PASSWORD.try_into().expect("password too long"),
            )),
    );
    controller.set_config(&station).expect("WiFi config");
    static RESOURCES: StaticCell<StackResources<5>> = StaticCell::new();
    let seed = (u64::from(rng.random()) << 32) | u64::from(rng.random());
    let (stack, net_runner) = embassy_net::new(
        Interface::station(),
        embassy_net::Config::dhcpv4(Default::default()),
        RESOURCES.init(StackResources::new()),
        seed,
    );
    spawner.spawn(wifi_task(controller).expect("wifi task"));
    spawner.spawn(net_task(net_runner).expect("net task"));
    static SOCKET_RX: StaticCell<[u8; SOCKET_BUFFER]> = StaticCell::new();
    static SOCKET_TX: StaticCell<[u8; SOCKET_BUFFER]> = StaticCell::new();
    let rx = SOCKET_RX.init([0; SOCKET_BUFFER]);
    let tx = SOCKET_TX.init([0; SOCKET_BUFFER]);
    stack.wait_config_up().await;
    let trng = Trng::try_new().expect("TRNG source enabled");

    #[cfg(feature = "embedded-tls")]
    {
        use tether_core::connector::{Connector, Endpoint, Security};
        use tether_esp32::tls::{MAX_RECORD, PinnedCa, TlsConnector};
        use tether_esp32::{TcpConfig, TcpConnector};
        while tether_esp32::sntp::synchronize(stack, "pool.ntp.org", 123, Duration::from_secs(5))
            .await
            .is_err()
        {}
        static RECORDS: StaticCell<([u8; MAX_RECORD], [u8; 1024])> = StaticCell::new();
        let (read_record, write_record) = RECORDS.init(([0; MAX_RECORD], [0; 1024]));
        let tcp = TcpConnector::new(stack, rx, tx, TcpConfig::default());
        let mut connector = TlsConnector::new(tcp, PinnedCa(CA), trng, read_record, write_record);
        loop {
            if let Ok(mut connection) = connector
                .connect(Endpoint::new(HOST, 443, Security::Tls))
                .await
            {
                counter(&mut connection).await;
            }
            Timer::after(Duration::from_secs(5)).await;
        }
    }

    #[cfg(feature = "mbedtls")]
    {
        use embassy_net::tcp::TcpSocket;
        use mbedtls_rs::{Certificate, ClientSessionConfig, Session, SessionConfig, Tls, X509};
        static TRNG: StaticCell<Trng> = StaticCell::new();
        let tls = Tls::new(TRNG.init(trng)).expect("one TLS instance");
        let ca = Certificate::new(X509::DER(CA)).expect("CA");
        let mut config = ClientSessionConfig::new();
        config.ca_chain = Some(ca);
        config.server_name = Some(c"relay.example.com");
        let config = SessionConfig::Client(config);
        loop {
            let Ok(addresses) = stack
                .dns_query(HOST, embassy_net::dns::DnsQueryType::A)
                .await
            else {
                continue;
            };
            let Some(address) = addresses.first().copied() else {
                continue;
            };
            let mut socket = TcpSocket::new(stack, &mut rx[..], &mut tx[..]);
            if socket.connect((address, 443)).await.is_ok()
                && let Ok(mut session) = Session::new(tls.reference(), &mut socket, &config)
                && session.connect().await.is_ok()
            {
                counter(&mut session).await;
            }
            Timer::after(Duration::from_secs(5)).await;
        }
    }
}

async fn counter<W: Write>(connection: &mut W) {
    let mut counter = 0u32;
    loop {
        counter = counter.wrapping_add(1);
        if connection.write_all(&counter.to_le_bytes()).await.is_err() {
            return;
        }
        println!("counter {counter}");
        Timer::after(Duration::from_secs(1)).await;
    }
}

#[embassy_executor::task]
async fn wifi_task(mut controller: WifiController<'static>) {
    loop {
        match controller.connect_async().await {
            Ok(_) => {
                let _ = controller.wait_for_disconnect_async().await;
            }
            Err(e) => println!("WiFi connect failed: {e:?}"),
        }
        Timer::after(Duration::from_secs(5)).await;
    }
}

#[embassy_executor::task]
async fn net_task(mut runner: NetRunner<'static, Interface>) {
    runner.run().await
}
