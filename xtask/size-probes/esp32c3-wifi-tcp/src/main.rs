//! Size baseline for `cargo xtask firmware`: the same esp-hal, esp-radio
//! and embassy-net stack as `examples/esp32c3-minimal`, with the same heap
//! and socket buffers, but no tether: it resolves the relay, opens one TCP
//! socket and writes a counter every second. What the minimal firmware
//! takes beyond this is what tether adds.
#![no_std]
#![no_main]

use embassy_executor::Spawner;
use embassy_net::dns::DnsQueryType;
use embassy_net::tcp::TcpSocket;
use embassy_net::{Runner as NetRunner, StackResources};
use embassy_time::{Duration, Timer};
use embedded_io_async::Write;
use esp_backtrace as _;
use esp_hal::clock::CpuClock;
use esp_hal::rng::Rng;
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
const HOST: &str = match option_env!("RELAY_HOST") {
    Some(host) => host,
    None => "relay.local",
};
const SOCKET_BUFFER: usize = 2048;

#[esp_rtos::main]
async fn main(spawner: Spawner) -> ! {
    let peripherals = esp_hal::init(esp_hal::Config::default().with_cpu_clock(CpuClock::max()));
    esp_alloc::heap_allocator!(size: 72 * 1024);
    let timg0 = TimerGroup::new(peripherals.TIMG0);
    esp_rtos::start(timg0.timer0, peripherals.FROM_CPU_INTR0);

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
    static RESOURCES: StaticCell<StackResources<4>> = StaticCell::new();
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
    loop {
        let Ok(addresses) = stack.dns_query(HOST, DnsQueryType::A).await else {
            Timer::after(Duration::from_secs(5)).await;
            continue;
        };
        let Some(address) = addresses.first().copied() else {
            continue;
        };
        let mut socket = TcpSocket::new(stack, &mut rx[..], &mut tx[..]);
        socket.set_timeout(Some(Duration::from_secs(30)));
        if socket.connect((address, 8080)).await.is_ok() {
            let mut counter = 0u32;
            loop {
                counter = counter.wrapping_add(1);
                if socket.write_all(&counter.to_le_bytes()).await.is_err() {
                    break;
                }
                println!("counter {counter}");
                Timer::after(Duration::from_secs(1)).await;
            }
        }
        Timer::after(Duration::from_secs(5)).await;
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
