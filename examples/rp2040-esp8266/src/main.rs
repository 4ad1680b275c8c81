//! tether firmware for a Raspberry Pi Pico whose Wi-Fi is an ESP-01: an
//! ESP8266 running Espressif's ESP-AT firmware on UART0. Every 10 s it
//! publishes the RP2040's own temperature (its internal sensor, through
//! the ADC) on `pico/temperature`; the `led` command switches the Pico's
//! LED (`true`, `false`, anything else toggles) and answers its new state.
//!
//! ```text
//!  Pico                      ESP-01 (3.3 V!)
//!  GP0 (UART0 TX) ────────► RXD
//!  GP1 (UART0 RX) ◄──────── TXD
//!  GP2 ───────────────────► RST      (the driver resets a hung modem)
//!  GND ──────────────────── GND      VCC, CH_PD ── 3.3 V regulator
//! ```
//!
//! ```text
//! SSID=... PASSPHRASE=... TETHER_URL=ws://192.168.1.10:8080/v1/device \
//!     DEVICE_ID=pico-1 TETHER_AUTHORIZATION="Bearer td_..." \
//!     cargo run --release
//! ```
//!
//! (`docs/esp8266.md` has the wiring, flashing the AT firmware and the CA
//! for `wss://`.) Nothing allocates: the client, its outbox, the modem's
//! and the UART's buffers are statics.
#![no_std]
#![no_main]

mod board;

use defmt::{info, warn};
use embassy_executor::Spawner;
use embassy_futures::select::{Either, select};
use embassy_rp::adc::{self, Adc, Channel};
use embassy_rp::bind_interrupts;
use embassy_rp::gpio::{Level, Output};
use embassy_rp::peripherals::UART0;
use embassy_rp::uart::{self, BufferedInterruptHandler, BufferedUart};
use embassy_time::Timer;
use static_cell::ConstStaticCell;
use tether_core::client::{self, ClientConfig, CommandResult, Resources};
use tether_core::session::SessionConfig;
use tether_core::time::Duration;
use tether_esp8266::{Config, Esp8266, ModemBuffers};
use tether_proto::{Command, CommandStatus};
use {defmt_rtt as _, panic_probe as _};

use crate::board::{EmbassyClock, PicoBoard};

bind_interrupts!(struct Irqs {
    UART0_IRQ => BufferedInterruptHandler<UART0>;
    ADC_IRQ_FIFO => adc::InterruptHandler;
});

const SSID: &str = match option_env!("SSID") {
    Some(ssid) => ssid,
    None => "tether",
};
const PASSPHRASE: &str = match option_env!("PASSPHRASE") {
    Some(passphrase) => passphrase,
    None => "tether-password",
};
/// `wss://` makes the ESP8266 do TLS, against the CA flashed into it.
const URL: &str = match option_env!("TETHER_URL") {
    Some(url) => url,
    None => "ws://192.168.1.10:8080/v1/device",
};
const DEVICE_ID: &str = match option_env!("DEVICE_ID") {
    Some(id) => id,
    None => "pico-1",
};
/// The upgrade's `Authorization` header, e.g. `Bearer td_…` (the token
/// `tether-server device add` printed for `DEVICE_ID`).
const AUTHORIZATION: Option<&str> = option_env!("TETHER_AUTHORIZATION");

/// A reading of the RP2040's temperature sensor.
#[derive(serde::Serialize)]
struct Reading {
    /// Thousandths of a degree Celsius (about ±2 °C: the sensor is not
    /// calibrated).
    millicelsius: i32,
    /// The raw 12-bit ADC sample.
    raw: u16,
}

/// The `led` command's answer.
#[derive(serde::Serialize)]
struct Led {
    on: bool,
}

#[embassy_executor::main]
async fn main(_spawner: Spawner) {
    let p = embassy_rp::init(Default::default());

    // The ESP-01 on UART0 at ESP-AT's 115200 8N1. The receive ring holds
    // what the modem says while the driver is busy elsewhere.
    static UART_TX: ConstStaticCell<[u8; 256]> = ConstStaticCell::new([0; 256]);
    static UART_RX: ConstStaticCell<[u8; 2048]> = ConstStaticCell::new([0; 2048]);
    let mut uart_config = uart::Config::default();
    uart_config.baudrate = 115_200;
    let serial = BufferedUart::new(
        p.UART0,
        p.PIN_0,
        p.PIN_1,
        Irqs,
        UART_TX.take(),
        UART_RX.take(),
        uart_config,
    );
    let reset = Output::new(p.PIN_2, Level::High);
    static MODEM: ConstStaticCell<ModemBuffers<256, 1024, 1024>> =
        ConstStaticCell::new(ModemBuffers::new());
    let modem = Esp8266::new(
        serial,
        EmbassyClock,
        Config::new().with_wifi(SSID, PASSPHRASE),
        MODEM.take(),
    )
    .with_reset_pin(reset);

    // The tether client: built in place, sizes fixed at compile time.
    static TETHER: ConstStaticCell<Resources<PicoBoard>> = ConstStaticCell::new(Resources::new());
    // A TLS handshake in the ESP8266 takes seconds.
    let session = SessionConfig::new().with_connect_timeout(Duration::from_secs(40));
    let mut config =
        ClientConfig::new(URL, DEVICE_ID, env!("CARGO_PKG_VERSION")).with_session(session);
    if let Some(authorization) = AUTHORIZATION {
        config = config.with_authorization(authorization);
    }
    let (client, mut runner) = match client::new(PicoBoard::new(modem), config, TETHER.take()) {
        Ok(made) => made,
        Err(e) => defmt::panic!("invalid tether settings: {}", e),
    };

    let mut led = Output::new(p.PIN_25, Level::Low);
    let on_command = |command: &Command<'_>, result: &mut CommandResult<'_>| {
        info!("command {} on {}", command.id, command.channel);
        match command.channel {
            "led" => {
                let on = match command.payload.as_str() {
                    Some("true") => true,
                    Some("false") => false,
                    _ => !led.is_set_high(),
                };
                led.set_level(if on { Level::High } else { Level::Low });
                match result.set(&Led { on }) {
                    Ok(()) => CommandStatus::Ok,
                    Err(_) => CommandStatus::Failed,
                }
            }
            _ => CommandStatus::Unsupported,
        }
    };

    let mut adc = Adc::new(p.ADC, Irqs, adc::Config::default());
    let mut sensor = Channel::new_temp_sensor(p.ADC_TEMP_SENSOR);
    let publish = async {
        loop {
            match adc.read(&mut sensor).await {
                Ok(raw) => {
                    let reading = Reading {
                        millicelsius: millicelsius(raw),
                        raw,
                    };
                    match client.publish("pico/temperature", &reading).await {
                        Ok(seq) => info!(
                            "{} m°C stored as seq {}, {}",
                            reading.millicelsius,
                            seq,
                            client.state()
                        ),
                        Err(e) => warn!("reading not stored: {}", e),
                    }
                }
                Err(_) => warn!("ADC conversion failed"),
            }
            Timer::after_secs(10).await;
        }
    };

    match select(runner.run(on_command), publish).await {
        // A revoked token or an unknown device: only new settings help.
        Either::First(stopped) => warn!("the relay refused this device: {}", stopped.0),
        Either::Second(never) => never,
    }
    loop {
        Timer::after_secs(60).await;
    }
}

/// The RP2040 datasheet's conversion (section 4.9.5): 27 °C at 0.706 V,
/// -1.721 mV per degree, with a 3.3 V reference. Integer arithmetic (no
/// floating point on a Cortex-M0+).
fn millicelsius(raw: u16) -> i32 {
    // 3.3 V / 4096 = 805.664 µV per step, exactly 103125 / 128 (and
    // 4095 × 103125 fits an i32, where 4095 × 3300000 would not).
    let microvolts = i32::from(raw) * 103_125 / 128;
    // 1.721 mV per degree: µV × 1000 / 1721 = m°C, kept within i32.
    27_000 - (microvolts - 706_000) * 100 / 1721 * 10
}
