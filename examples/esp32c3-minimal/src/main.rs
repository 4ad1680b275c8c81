//! Minimal tether firmware for the ESP32-C3: joins WiFi, connects to a
//! tether relay over embassy-net and publishes a counter every second; the
//! `led` command is acknowledged.
//!
//! ```text
//! SSID=... PASSWORD=... TETHER_URL=ws://192.168.1.10:8080/v1/device \
//!     DEVICE_ID=kitchen-1 TETHER_AUTHORIZATION="Bearer td_..." \
//!     cargo run --release
//! ```
//!
//! The tether SDK itself allocates nothing: the client, its outbox and its
//! buffers are statics. Only the WiFi driver uses the heap.
#![no_std]
#![no_main]

use embassy_executor::Spawner;
use embassy_net::{Runner as NetRunner, StackResources};
use embassy_time::{Duration, Timer};
use esp_backtrace as _;
use esp_hal::clock::CpuClock;
use esp_hal::rng::Rng;
use esp_hal::timer::timg::TimerGroup;
use esp_println::println;
use esp_radio::wifi::sta::StationConfig;
use esp_radio::wifi::{AuthenticationMethodConfig, Config, Interface, WifiController};
use static_cell::{ConstStaticCell, StaticCell};
use tether_core::client::{self, ClientConfig, CommandResult, Resources};
use tether_core::outbox::RamOutbox;
use tether_esp32::{EspBoard, TcpConfig, TcpConnector};
use tether_proto::{Command, CommandStatus};

/// The tether board: tether-esp32's embassy-net connector (DNS, TCP on the
/// buffers below, FIN-then-RST close), the hardware RNG, a RAM outbox.
type Board = EspBoard<TcpConnector, Rng, RamOutbox<4096>>;

/// Socket buffer sizes: one WebSocket frame of a few hundred bytes fits
/// many times over.
const SOCKET_BUFFER: usize = 2048;

esp_bootloader_esp_idf::esp_app_desc!();

const SSID: &str = match option_env!("SSID") {
    Some(ssid) => ssid,
    None => "tether",
};
const PASSWORD: &str = match option_env!("PASSWORD") {
    Some(password) => password,
    None => "tether-password",
};
const URL: &str = match option_env!("TETHER_URL") {
    Some(url) => url,
    None => "ws://192.168.1.10:8080/v1/device",
};
const DEVICE_ID: &str = match option_env!("DEVICE_ID") {
    Some(id) => id,
    None => "esp32c3-minimal",
};
/// The upgrade's `Authorization` header, e.g. `Bearer td_…` (the token
/// `tether-server device add` printed for `DEVICE_ID`).
const AUTHORIZATION: Option<&str> = option_env!("TETHER_AUTHORIZATION");

#[esp_rtos::main]
async fn main(spawner: Spawner) -> ! {
    let peripherals = esp_hal::init(esp_hal::Config::default().with_cpu_clock(CpuClock::max()));
    // The WiFi driver allocates; the tether SDK does not.
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

    // The tether client: statics, sizes fixed at compile time.
    static SOCKET_RX: StaticCell<[u8; SOCKET_BUFFER]> = StaticCell::new();
    static SOCKET_TX: StaticCell<[u8; SOCKET_BUFFER]> = StaticCell::new();
    // Built in place at compile time (no 7 KB copy through the stack).
    static TETHER: ConstStaticCell<Resources<Board>> = ConstStaticCell::new(Resources::new());
    let connector = TcpConnector::new(
        stack,
        SOCKET_RX.init([0; SOCKET_BUFFER]),
        SOCKET_TX.init([0; SOCKET_BUFFER]),
        TcpConfig::default(),
    );
    let board = Board::new(connector, rng, RamOutbox::new());
    let mut config = ClientConfig::new(URL, DEVICE_ID, env!("CARGO_PKG_VERSION"));
    if let Some(authorization) = AUTHORIZATION {
        config = config.with_authorization(authorization);
    }
    // (A static message: formatting the error would link `Debug` code
    // for it, larger than anything this firmware needs.)
    let Ok((client, mut runner)) = client::new(board, config, TETHER.take()) else {
        panic!("invalid tether config");
    };

    stack.wait_config_up().await;
    // The address alone: `{:?}` of the whole configuration would link
    // `Debug` code the baseline firmware does not have.
    if let Some(network) = stack.config_v4() {
        println!("network up: {}", network.address);
    }

    // Answers `led` with the state it would switch to, as the JSON result.
    let on_command = |command: &Command<'_>, result: &mut CommandResult<'_>| {
        println!("command {} on {}", command.id, command.channel);
        match command.channel {
            "led" => match result.set(&(command.payload.as_str() == Some("true"))) {
                Ok(()) => CommandStatus::Ok,
                Err(_) => CommandStatus::Failed,
            },
            _ => CommandStatus::Unsupported,
        }
    };
    let publish_counter = async {
        for counter in 1u32.. {
            match client.publish("counter", &counter).await {
                Ok(seq) => println!(
                    "counter {counter} stored as seq {seq}, link up: {}",
                    client.state().is_link_up()
                ),
                Err(e) => println!("counter {counter} not stored: {e}"),
            }
            Timer::after(Duration::from_secs(1)).await;
        }
    };
    if let embassy_futures::select::Either::First(stopped) =
        embassy_futures::select::select(runner.run(on_command), publish_counter).await
    {
        // A revoked token or an unknown device: only new settings help.
        println!("the server refused this device: {}", stopped.0);
    }
    loop {
        Timer::after(Duration::from_secs(60)).await;
    }
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
async fn net_task(mut runner: NetRunner<'static, Interface>) {
    runner.run().await
}
