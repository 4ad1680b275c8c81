//! Minimal tether firmware for the ESP32-C3: joins WiFi, connects to a
//! tether relay and publishes a counter every second.
//!
//! ```text
//! SSID=... PASSWORD=... TETHER_URL=ws://192.168.1.10:8080/device \
//!     cargo run --release
//! ```
#![no_std]
#![no_main]

mod board;

use embassy_executor::Spawner;
use embassy_net::{Runner, StackResources};
use embassy_time::{Duration, Timer};
use esp_backtrace as _;
use esp_hal::clock::CpuClock;
use esp_hal::rng::Rng;
use esp_hal::timer::timg::TimerGroup;
use esp_println::println;
use esp_radio::wifi::sta::StationConfig;
use esp_radio::wifi::{AuthenticationMethodConfig, Config, Interface, WifiController};
use static_cell::StaticCell;
use tether_core::outbox::RamOutbox;
use tether_core::session::{Session, SessionConfig};
use tether_core::time::Clock;

use crate::board::{EmbassyClock, EmbassyConnector};

esp_bootloader_esp_idf::esp_app_desc!();

const SSID: &str = match option_env!("SSID") {
    Some(ssid) => ssid,
    None => "tether",
};
const PASSWORD: &str = match option_env!("PASSWORD") {
    Some(password) => password,
    None => "tether-password",
};

#[esp_rtos::main]
async fn main(spawner: Spawner) -> ! {
    let peripherals = esp_hal::init(esp_hal::Config::default().with_cpu_clock(CpuClock::max()));
    // The WiFi driver allocates; the tether SDK itself does not.
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
    let seed = u64::from(rng.random()) << 32 | u64::from(rng.random());
    let (stack, runner) = embassy_net::new(
        Interface::station(),
        embassy_net::Config::dhcpv4(Default::default()),
        RESOURCES.init(StackResources::new()),
        seed,
    );
    spawner.spawn(wifi_task(controller).expect("wifi task"));
    spawner.spawn(net_task(runner).expect("net task"));
    stack.wait_config_up().await;
    println!("network up: {:?}", stack.config_v4());

    let _connector = EmbassyConnector::new(stack);
    let clock = EmbassyClock;
    let mut session = Session::new(
        SessionConfig::default(),
        RamOutbox::<4096>::new(),
        rng,
        clock.now(),
    )
    .expect("valid session config");
    let mut counter = 0u32;
    loop {
        counter = counter.wrapping_add(1);
        let mut payload = [0u8; 10];
        let len = format_u32(counter, &mut payload);
        match session.publish("counter", &payload[..len]) {
            Ok(seq) => println!("queued counter {counter} as seq {seq}"),
            Err(e) => println!("publish failed: {e}"),
        }
        Timer::after(Duration::from_secs(1)).await;
    }
}

/// Writes `value` in decimal; returns the length.
fn format_u32(mut value: u32, out: &mut [u8; 10]) -> usize {
    let mut digits = [0u8; 10];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (value % 10) as u8;
        len += 1;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    for i in 0..len {
        out[i] = digits[len - 1 - i];
    }
    len
}

#[embassy_executor::task]
async fn wifi_task(mut controller: WifiController<'static>) {
    loop {
        match controller.connect_async().await {
            Ok(_) => {
                println!("WiFi connected");
                let _ = controller.wait_for_disconnect_async().await;
                println!("WiFi disconnected");
            }
            Err(e) => println!("WiFi connect failed: {e:?}"),
        }
        Timer::after(Duration::from_secs(5)).await;
    }
}

#[embassy_executor::task]
async fn net_task(mut runner: Runner<'static, Interface>) {
    runner.run().await
}
