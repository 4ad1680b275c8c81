//! The size baseline of `docs/performance.md`: the same Pico and ESP-01
//! wiring, executor, logging and peripherals as the firmware (buffered
//! UART0 at 115200, reset pin, temperature sensor, LED), with no tether
//! and no ESP-AT driver: it sends `AT` every 10 s with a reading and logs
//! how many bytes came back. The firmware's flash and RAM minus this
//! baseline's are what tether-core, tether-esp8266 and their buffers cost.
#![no_std]
#![no_main]

use defmt::{info, warn};
use embassy_executor::Spawner;
use embassy_futures::select::{Either, select};
use embassy_rp::adc::{self, Adc, Channel};
use embassy_rp::bind_interrupts;
use embassy_rp::gpio::{Level, Output};
use embassy_rp::peripherals::UART0;
use embassy_rp::uart::{self, BufferedInterruptHandler, BufferedUart};
use embassy_time::Timer;
use embedded_io_async::{Read, Write};
use static_cell::ConstStaticCell;
use {defmt_rtt as _, panic_probe as _};

bind_interrupts!(struct Irqs {
    UART0_IRQ => BufferedInterruptHandler<UART0>;
    ADC_IRQ_FIFO => adc::InterruptHandler;
});

#[embassy_executor::main]
async fn main(_spawner: Spawner) {
    let p = embassy_rp::init(Default::default());
    static UART_TX: ConstStaticCell<[u8; 256]> = ConstStaticCell::new([0; 256]);
    static UART_RX: ConstStaticCell<[u8; 2048]> = ConstStaticCell::new([0; 2048]);
    let mut uart_config = uart::Config::default();
    uart_config.baudrate = 115_200;
    let mut serial = BufferedUart::new(
        p.UART0,
        p.PIN_0,
        p.PIN_1,
        Irqs,
        UART_TX.take(),
        UART_RX.take(),
        uart_config,
    );
    let _reset = Output::new(p.PIN_2, Level::High);
    let mut led = Output::new(p.PIN_25, Level::Low);
    let mut adc = Adc::new(p.ADC, Irqs, adc::Config::default());
    let mut sensor = Channel::new_temp_sensor(p.ADC_TEMP_SENSOR);
    let mut buf = [0u8; 256];
    loop {
        match adc.read(&mut sensor).await {
            Ok(raw) => info!("temperature sample {}", raw),
            Err(_) => warn!("ADC conversion failed"),
        }
        if serial.write_all(b"AT\r\n").await.is_err() {
            warn!("UART write failed");
        }
        led.toggle();
        match select(serial.read(&mut buf), Timer::after_secs(10)).await {
            Either::First(Ok(n)) => info!("{} bytes from the modem", n),
            Either::First(Err(_)) => warn!("UART read failed"),
            Either::Second(()) => {}
        }
    }
}
