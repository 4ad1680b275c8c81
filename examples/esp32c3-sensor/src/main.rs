//! tether sensor firmware for the ESP32-C3 (and, with `--features esp32c6`,
//! the ESP32-C6).
//!
//! ```text
//!  boot ─► record in flash (0xe000)? ── tether-core provisioning state machine
//!    │ yes, with Wi-Fi                          │ no / corrupt / 3 failed joins
//!    ▼                                          ▼
//!  station: join Wi-Fi ─► SNTP ─► wss://    set-up: SoftAP "tether-XXXX" + DHCP + DNS
//!  relay (pinned CA) ─► temperature every     + portal pages, and Improv Wi-Fi on the
//!  5 s, LED toggled by the `led` command      USB port; saved → restart; 5 min without
//!                                             a save (and a record) → restart and retry
//!  BOOT held 5 s (either mode): erase the record, restart
//! ```
//!
//! `docs/esp32.md` shows wiring, flashing, the three ways to provision and
//! the serial log of each step.
#![no_std]
#![no_main]

mod flash;
mod setup;

use core::cell::RefCell;
use core::fmt::Write as _;

use embassy_executor::Spawner;
use embassy_net::{Runner as NetRunner, StackResources};
use embassy_time::{Duration, Timer, with_timeout};
use esp_backtrace as _;
use esp_hal::clock::CpuClock;
use esp_hal::gpio::{Input, InputConfig, Level, Output, OutputConfig, Pull};
use esp_hal::rng::{Rng, Trng, TrngSource};
use esp_hal::timer::timg::TimerGroup;
use esp_hal::tsens::TemperatureSensor;
use esp_println::println;
use esp_radio::wifi::sta::StationConfig;
use esp_radio::wifi::{AuthenticationMethodConfig, Config, Interface, WifiController};
use esp_storage::FlashStorage;
use static_cell::ConstStaticCell;
use static_cell::StaticCell;
use tether_core::client::{self, ClientConfig, CommandResult, DEFAULT_PAYLOAD_CAPACITY, Resources};
use tether_core::flash::{Blocking, FlashOutbox, entry_buffer_len};
use tether_core::provisioning::record::ProvisioningRecord;
use tether_core::provisioning::state::{Action, Failure, Provisioning, ProvisioningConfig};
use tether_core::provisioning::store::{ConfigStore, NorFlashStore, StoreError};
use tether_esp32::tls::{MAX_RECORD, PinnedCa, TlsConnector};
use tether_esp32::{EspBoard, TcpConfig, TcpConnector};

use crate::flash::SharedFlash;
use tether_proto::{Command, CommandStatus};

esp_bootloader_esp_idf::esp_app_desc!();

/// Where `tether-provision --esp32-partition` puts the record (the
/// `tether` data partition, two 4 KiB slots).
const RECORD_OFFSET: u32 = 0xe000;
/// The `outbox` partition (`partitions.csv`): readings not yet
/// acknowledged survive a power cut here.
const OUTBOX: core::ops::Range<u32> = 0x10000..0x20000;
/// The outbox's read buffer: one entry of the largest payload.
const ENTRY: usize = entry_buffer_len(DEFAULT_PAYLOAD_CAPACITY);
/// The relay's CA certificate (DER), from `TETHER_CA_DER` at build time.
static CA: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ca.der"));
const NTP_SERVER: &str = match option_env!("NTP_SERVER") {
    Some(server) => server,
    None => "pool.ntp.org",
};

type Store = NorFlashStore<SharedFlash>;
/// The tether board: TLS over embassy-net TCP (TRNG key shares), the
/// hardware RNG, the outbox in flash.
type Board =
    EspBoard<TlsConnector<TcpConnector, Trng>, Rng, FlashOutbox<Blocking<SharedFlash>, ENTRY>>;

/// The record store, shared by the set-up mode and the BOOT button task
/// (everything runs on one executor).
#[derive(Clone, Copy)]
pub struct SharedStore(&'static RefCell<Store>);

impl ConfigStore for SharedStore {
    fn load(&mut self) -> Result<Option<ProvisioningRecord>, StoreError> {
        self.0.borrow_mut().load()
    }

    fn save(&mut self, record: &ProvisioningRecord) -> Result<(), StoreError> {
        self.0.borrow_mut().save(record)
    }

    fn erase(&mut self) -> Result<(), StoreError> {
        self.0.borrow_mut().erase()
    }
}

/// Milliseconds since boot: the provisioning state machine's clock.
pub fn now_ms() -> u64 {
    embassy_time::Instant::now().as_millis()
}

#[esp_rtos::main]
async fn main(spawner: Spawner) -> ! {
    let peripherals = esp_hal::init(esp_hal::Config::default().with_cpu_clock(CpuClock::max()));
    // The Wi-Fi driver allocates; the tether SDK does not.
    esp_alloc::heap_allocator!(size: 72 * 1024);
    let timg0 = TimerGroup::new(peripherals.TIMG0);
    esp_rtos::start(timg0.timer0, peripherals.FROM_CPU_INTR0);
    // Cryptographically secure random numbers for TLS key shares.
    static TRNG_SOURCE: StaticCell<TrngSource<'static>> = StaticCell::new();
    TRNG_SOURCE.init(TrngSource::new(peripherals.RNG, peripherals.ADC1));

    // 1. The provisioning record, and what the state machine makes of it.
    static FLASH: StaticCell<
        embassy_sync::blocking_mutex::CriticalSectionMutex<RefCell<FlashStorage<'static>>>,
    > = StaticCell::new();
    let flash = SharedFlash(
        FLASH.init(embassy_sync::blocking_mutex::Mutex::new(RefCell::new(
            FlashStorage::new(peripherals.FLASH),
        ))),
    );
    static STORE: StaticCell<RefCell<Store>> = StaticCell::new();
    let store = SharedStore(STORE.init(RefCell::new(NorFlashStore::new(flash, RECORD_OFFSET))));
    let loaded = { store }.load();
    match &loaded {
        Ok(Some(record)) => println!(
            "record: device {} → {}",
            record.device_id.as_str(),
            record.server_url.as_str()
        ),
        Ok(None) => println!("record: none at {RECORD_OFFSET:#x}"),
        Err(e) => println!("record: unreadable: {e}"),
    }
    let record = loaded.as_ref().ok().and_then(Option::as_ref).cloned();
    let config = ProvisioningConfig::default();
    let mut machine = Provisioning::new(config);
    machine.boot(now_ms(), loaded);
    let boot_button = Input::new(
        peripherals.GPIO9,
        InputConfig::default().with_pull(Pull::Up),
    );
    spawner.spawn(reset_task(boot_button, store).expect("reset task"));

    let controller =
        WifiController::new(peripherals.WIFI, Default::default()).expect("Wi-Fi controller");
    let setup = setup::Setup {
        spawner,
        store,
        usb: peripherals.USB_DEVICE,
        config,
    };
    let (mut controller, record) = match (machine.poll_action(), record) {
        (Some(Action::Connect), Some(record)) => (controller, record),
        (action, record) => {
            println!("provisioning: {action:?}: opening set-up");
            setup.run(controller, record).await
        }
    };

    // 2. Station: join with the saved credentials, as the machine says.
    let Some(wifi) = record.wifi.as_ref() else {
        setup.run(controller, Some(record)).await
    };
    let station = Config::Station(
        StationConfig::default()
            .with_ssid(
                wifi.ssid
                    .as_str()
                    .try_into()
                    .expect("SSID checked by the record"),
            )
            .with_authentication(AuthenticationMethodConfig::Wpa2Personal(
                wifi.passphrase
                    .as_str()
                    .try_into()
                    .expect("passphrase checked by the record"),
            )),
    );
    controller.set_config(&station).expect("Wi-Fi config");
    let rng = Rng::new();
    static RESOURCES: StaticCell<StackResources<5>> = StaticCell::new();
    let seed = (u64::from(rng.random()) << 32) | u64::from(rng.random());
    let (stack, net_runner) = embassy_net::new(
        Interface::station(),
        embassy_net::Config::dhcpv4(Default::default()),
        RESOURCES.init(StackResources::new()),
        seed,
    );
    spawner.spawn(net_task(net_runner).expect("net task"));
    loop {
        let attempt = with_timeout(
            Duration::from_millis(config.attempt_timeout_ms),
            controller.connect_async(),
        )
        .await;
        match attempt {
            Ok(Ok(_)) => {
                println!("Wi-Fi joined {}", wifi.ssid.as_str());
                machine.wifi_joined(now_ms());
                break;
            }
            Ok(Err(e)) => println!("Wi-Fi join failed: {e:?}"),
            Err(_) => println!("Wi-Fi join timed out"),
        }
        machine.attempt_failed(now_ms(), Failure::Wifi);
        while let Some(action) = machine.poll_action() {
            if let Action::OpenPortal(reason) = action {
                println!("provisioning: {reason:?}: opening set-up");
                setup.run(controller, Some(record)).await
            }
        }
        Timer::after(Duration::from_millis(config.retry_delay_ms)).await;
    }
    spawner.spawn(wifi_task(controller).expect("wifi task"));
    stack.wait_config_up().await;
    println!("network up: {:?}", stack.config_v4());

    // 3. The time, for the certificate check (retried until it answers).
    while let Err(e) =
        tether_esp32::sntp::synchronize(stack, NTP_SERVER, 123, Duration::from_secs(5)).await
    {
        println!("SNTP: {e}; retrying");
        Timer::after(Duration::from_secs(5)).await;
    }

    // 4. The tether client: readings queue in flash until acknowledged.
    static RECORD: StaticCell<ProvisioningRecord> = StaticCell::new();
    static AUTHORIZATION: StaticCell<heapless::String<96>> = StaticCell::new();
    static SOCKET: StaticCell<([u8; 2048], [u8; 1024])> = StaticCell::new();
    static RECORDS: StaticCell<([u8; MAX_RECORD], [u8; 1024])> = StaticCell::new();
    static TETHER: ConstStaticCell<Resources<Board>> = ConstStaticCell::new(Resources::new());
    let record = &*RECORD.init(record);
    let authorization = AUTHORIZATION.init(heapless::String::new());
    let _ = write!(authorization, "Bearer {}", record.token.as_str());
    let config = ClientConfig::new(
        record.server_url.as_str(),
        record.device_id.as_str(),
        env!("CARGO_PKG_VERSION"),
    )
    .with_authorization(authorization);
    let outbox = FlashOutbox::mount(Blocking::new(flash), OUTBOX)
        .await
        .expect("the outbox partition at 0x10000 (flash partitions.csv)");
    let (socket_rx, socket_tx) = SOCKET.init(([0; 2048], [0; 1024]));
    let (read_record, write_record) = RECORDS.init(([0; MAX_RECORD], [0; 1024]));
    let tcp = TcpConnector::new(stack, socket_rx, socket_tx, TcpConfig::default());
    let trng = Trng::try_new().expect("TRNG source enabled above");
    let connector = TlsConnector::new(tcp, PinnedCa(CA), trng, read_record, write_record);
    let board = Board::new(connector, rng, outbox);
    let (client, mut runner) = client::new(board, config, TETHER.take()).expect("valid settings");

    // 5. The LED, toggled by the `led` command; the answer is its new state.
    let mut led = Output::new(peripherals.GPIO8, Level::Low, OutputConfig::default());
    let on_command = move |command: &Command<'_>, result: &mut CommandResult<'_>| {
        println!("command {} on {}", command.id, command.channel);
        if command.channel != "led" {
            return CommandStatus::Unsupported;
        }
        led.toggle();
        match result.set(&led.is_set_high()) {
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
            match client.publish("temperature", &centi_celsius).await {
                Ok(seq) => println!(
                    "temperature {centi_celsius} stored as seq {seq}, {:?}",
                    client.state()
                ),
                Err(e) => println!("temperature not stored: {e}"),
            }
        }
    };
    let embassy_futures::select::Either::First(stopped) =
        embassy_futures::select::select(runner.run(on_command), publish).await;
    // A revoked token, an unknown device or a refused certificate: only new
    // settings help. BOOT held 5 s erases the record.
    println!(
        "the relay refused this device ({}): hold BOOT 5 s to set it up again",
        stopped.0
    );
    loop {
        Timer::after(Duration::from_secs(60)).await;
    }
}

/// A 5-second press on BOOT (GPIO9, low when pressed) erases the
/// provisioning record and restarts, in either mode.
#[embassy_executor::task]
async fn reset_task(mut button: Input<'static>, mut store: SharedStore) {
    loop {
        button.wait_for_low().await;
        let held = with_timeout(Duration::from_secs(5), button.wait_for_high()).await;
        if held.is_err() {
            println!("BOOT held for 5 s: erasing the provisioning record");
            match store.erase() {
                Ok(()) => esp_hal::system::software_reset(),
                Err(e) => println!("erase failed: {e}"),
            }
        }
    }
}

/// Rejoins after the access point drops the device; the tether session
/// reconnects on its own once the link is back.
#[embassy_executor::task]
async fn wifi_task(mut controller: WifiController<'static>) {
    loop {
        let _ = controller.wait_for_disconnect_async().await;
        println!("Wi-Fi disconnected");
        loop {
            match controller.connect_async().await {
                Ok(_) => {
                    println!("Wi-Fi connected");
                    break;
                }
                Err(e) => println!("Wi-Fi connect failed: {e:?}"),
            }
            Timer::after(Duration::from_secs(5)).await;
        }
    }
}

#[embassy_executor::task(pool_size = 2)]
pub async fn net_task(mut runner: NetRunner<'static, Interface>) {
    runner.run().await
}
