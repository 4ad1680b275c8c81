//! tether sensor firmware for the ESP32-C3 (and, with `--features esp32c6`,
//! the ESP32-C6): boot → provisioning record from flash → Wi-Fi → SNTP →
//! `wss://` relay with a pinned CA → the chip's temperature every 5 s →
//! the LED toggled on the `led` command. A long press (5 s) on the BOOT
//! button erases the record.
//!
//! ```text
//! tether-provision ... --esp32-image record.bin   # factory record (docs/esp32.md)
//! espflash write-bin 0xe000 record.bin
//! TETHER_CA_DER=relay-ca.der cargo run --release
//! ```
#![no_std]
#![no_main]

use core::fmt::Write as _;

use embassy_executor::Spawner;
use embassy_net::{Runner as NetRunner, StackResources};
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embassy_time::{Duration, Timer};
use esp_backtrace as _;
use esp_hal::clock::CpuClock;
use esp_hal::gpio::{Input, InputConfig, Level, Output, OutputConfig, Pull};
use esp_hal::rng::Rng;
use esp_hal::timer::timg::TimerGroup;
use esp_hal::tsens::TemperatureSensor;
use esp_println::println;
use esp_radio::wifi::sta::StationConfig;
use esp_radio::wifi::{AuthenticationMethodConfig, Config, Interface, WifiController};
use esp_storage::FlashStorage;
use static_cell::StaticCell;
use tether_core::client::{Buffers, Client, ClientConfig, CommandResult, Runner};
use tether_core::outbox::RamOutbox;
use tether_core::provisioning::store::{ConfigStore, NorFlashStore};
use tether_esp32::tls::{MAX_RECORD, PinnedCa, TlsConnector};
use tether_esp32::{EmbassyClock, TcpConfig, TcpConnector};
use tether_proto::{Command, CommandStatus};

esp_bootloader_esp_idf::esp_app_desc!();

/// Where `tether-provision --esp32-image` puts the record (the `tether`
/// data partition, one 4 KiB sector).
const RECORD_OFFSET: u32 = 0xe000;
/// The relay's CA certificate (DER), from `TETHER_CA_DER` at build time.
static CA: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ca.der"));
const NTP_SERVER: &str = match option_env!("NTP_SERVER") {
    Some(server) => server,
    None => "pool.ntp.org",
};

type SensorClient = Client<NoopRawMutex, RamOutbox<8192>, Rng, EmbassyClock>;

#[esp_rtos::main]
async fn main(spawner: Spawner) -> ! {
    let peripherals = esp_hal::init(esp_hal::Config::default().with_cpu_clock(CpuClock::max()));
    // The Wi-Fi driver allocates; the tether SDK does not.
    esp_alloc::heap_allocator!(size: 72 * 1024);
    let timg0 = TimerGroup::new(peripherals.TIMG0);
    esp_rtos::start(timg0.timer0, peripherals.FROM_CPU_INTR0);

    // 1. The provisioning record.
    let mut store = NorFlashStore::new(FlashStorage::new(peripherals.FLASH), RECORD_OFFSET);
    let record = match store.load() {
        Ok(Some(record)) => record,
        Ok(None) => halt("no provisioning record at 0xe000: flash one (docs/esp32.md)").await,
        Err(e) => {
            println!("provisioning record unreadable: {e}");
            halt("erase it with a long press on BOOT, then provision again").await
        }
    };
    static RECORD: StaticCell<tether_core::provisioning::record::ProvisioningRecord> =
        StaticCell::new();
    let record = &*RECORD.init(record);
    println!(
        "record: device {} → {}",
        record.device_id.as_str(),
        record.server_url.as_str()
    );
    let boot_button = Input::new(
        peripherals.GPIO9,
        InputConfig::default().with_pull(Pull::Up),
    );
    spawner.spawn(reset_task(boot_button, store).expect("reset task"));
    let Some(wifi) = record.wifi.as_ref() else {
        halt("the record has no Wi-Fi credentials").await
    };

    // 2. Wi-Fi and the network stack.
    let rng = Rng::new();
    let mut controller =
        WifiController::new(peripherals.WIFI, Default::default()).expect("Wi-Fi controller");
    let station = Config::Station(
        StationConfig::default()
            .with_ssid(wifi.ssid.as_str().try_into().expect("SSID checked by the record"))
            .with_authentication(AuthenticationMethodConfig::Wpa2Personal(
                wifi.passphrase
                    .as_str()
                    .try_into()
                    .expect("passphrase checked by the record"),
            )),
    );
    controller.set_config(&station).expect("Wi-Fi config");
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
    stack.wait_config_up().await;
    println!("network up: {:?}", stack.config_v4());

    // 3. The time, for the certificate check (retried until it answers).
    while let Err(e) =
        tether_esp32::sntp::synchronize(stack, NTP_SERVER, 123, Duration::from_secs(5)).await
    {
        println!("SNTP: {e}; retrying");
        Timer::after(Duration::from_secs(5)).await;
    }

    // 4. The tether client.
    static CLIENT: StaticCell<SensorClient> = StaticCell::new();
    static SOCKET: StaticCell<([u8; 2048], [u8; 1024])> = StaticCell::new();
    static RECORDS: StaticCell<([u8; MAX_RECORD], [u8; 1024])> = StaticCell::new();
    static BUFFERS: StaticCell<Buffers<1024, 512, 512>> = StaticCell::new();
    static AUTHORIZATION: StaticCell<heapless::String<96>> = StaticCell::new();
    let authorization = AUTHORIZATION.init(heapless::String::new());
    let _ = write!(authorization, "Bearer {}", record.token.as_str());
    let config = ClientConfig::new(
        record.server_url.as_str(),
        record.device_id.as_str(),
        env!("CARGO_PKG_VERSION"),
    )
    .with_authorization(authorization);
    let client: &'static SensorClient = CLIENT
        .init(Client::new(&config, RamOutbox::new(), rng, EmbassyClock).expect("valid settings"));
    let (socket_rx, socket_tx) = SOCKET.init(([0; 2048], [0; 1024]));
    let (read_record, write_record) = RECORDS.init(([0; MAX_RECORD], [0; 1024]));
    let tcp = TcpConnector::new(stack, socket_rx, socket_tx, TcpConfig::default());
    let connector = TlsConnector::new(tcp, PinnedCa(CA), Rng::new(), read_record, write_record);
    let mut runner = Runner::new(
        client,
        config,
        connector,
        EmbassyClock,
        Rng::new(),
        BUFFERS.init(Buffers::new()),
    )
    .expect("valid buffers");

    // 5. The LED, toggled by the `led` command; the answer is its new state.
    let mut led = Output::new(peripherals.GPIO8, Level::Low, OutputConfig::default());
    let mut on_command = move |command: &Command<'_>, result: &mut CommandResult<'_>| {
        println!("command {} on {}", command.id, command.channel);
        if command.channel != "led" {
            return CommandStatus::Unsupported;
        }
        led.toggle();
        let on = led.is_set_high();
        match result.set(&on) {
            Ok(()) => CommandStatus::Ok,
            Err(_) => CommandStatus::Failed,
        }
    };

    // 6. The temperature every 5 s, in hundredths of a degree.
    let sensor = TemperatureSensor::new(peripherals.TSENS, Default::default()).expect("tsens");
    let publish = async {
        loop {
            Timer::after(Duration::from_secs(5)).await;
            let centi_celsius = (sensor.get_temperature().to_celsius() * 100.0) as i32;
            match client.publish("temperature", &centi_celsius) {
                Ok(seq) => println!("temperature {centi_celsius} as seq {seq}, {:?}", client.state()),
                Err(e) => println!("temperature not queued: {e}"),
            }
        }
    };
    embassy_futures::join::join(runner.run(&mut on_command), publish).await;
    unreachable!("the runner and the publisher never return")
}

/// Logs why the firmware cannot go on and waits for a reset (a long press
/// on BOOT erases the record in the meantime).
async fn halt(why: &str) -> ! {
    loop {
        println!("{why}");
        Timer::after(Duration::from_secs(10)).await;
    }
}

/// A 5-second press on BOOT (GPIO9, low when pressed) erases the
/// provisioning record and restarts.
#[embassy_executor::task]
async fn reset_task(mut button: Input<'static>, mut store: NorFlashStore<FlashStorage<'static>>) {
    loop {
        button.wait_for_low().await;
        let held = embassy_time::with_timeout(Duration::from_secs(5), button.wait_for_high()).await;
        if held.is_err() {
            println!("BOOT held for 5 s: erasing the provisioning record");
            match store.erase() {
                Ok(()) => esp_hal::system::software_reset(),
                Err(e) => println!("erase failed: {e}"),
            }
        }
    }
}

#[embassy_executor::task]
async fn wifi_task(mut controller: WifiController<'static>) {
    loop {
        match controller.connect_async().await {
            Ok(_) => {
                println!("Wi-Fi connected");
                let _ = controller.wait_for_disconnect_async().await;
                println!("Wi-Fi disconnected");
            }
            Err(e) => println!("Wi-Fi connect failed: {e:?}"),
        }
        Timer::after(Duration::from_secs(5)).await;
    }
}

#[embassy_executor::task]
async fn net_task(mut runner: NetRunner<'static, Interface>) {
    runner.run().await
}
