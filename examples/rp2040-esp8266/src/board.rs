//! The tether-core `Board` of a Pico with an ESP-01: the ESP8266 (ESP-AT
//! over UART0, reset pin on GP2) is the connector; the RP2040 brings the
//! clock (embassy-time), the random source (its ring oscillator) and the
//! outbox (RAM).

use embassy_rp::clocks::RoscRng;
use embassy_rp::gpio::Output;
use embassy_rp::uart::BufferedUart;
use tether_core::board::{Board, Parts};
use tether_core::outbox::RamOutbox;
use tether_core::time::{Clock, Instant};
use tether_esp8266::Esp8266;

/// Bytes of RAM for readings the relay has not acknowledged yet (about
/// 40 of them: a few minutes without the network at one every 10 s).
pub const OUTBOX: usize = 2048;

/// The modem as the driver sees it: ESP-AT on a buffered UART, timed by
/// embassy-time, reset through a GPIO.
pub type Modem = Esp8266<'static, BufferedUart, EmbassyClock, Output<'static>>;

/// Everything the tether client needs from this board.
pub struct PicoBoard {
    modem: Modem,
}

impl PicoBoard {
    pub fn new(modem: Modem) -> Self {
        Self { modem }
    }
}

impl Board for PicoBoard {
    type Connector = Modem;
    type Clock = EmbassyClock;
    type Rng = RoscRng;
    type Outbox = RamOutbox<OUTBOX>;

    fn into_parts(self) -> Parts<Modem, EmbassyClock, RoscRng, RamOutbox<OUTBOX>> {
        Parts {
            connector: self.modem,
            clock: EmbassyClock,
            rng: RoscRng,
            outbox: RamOutbox::new(),
        }
    }
}

/// tether-core time from embassy-time (the RP2040's 1 MHz timer).
#[derive(Debug, Clone, Copy)]
pub struct EmbassyClock;

impl Clock for EmbassyClock {
    fn now(&self) -> Instant {
        Instant::from_millis(embassy_time::Instant::now().as_millis())
    }

    async fn sleep_until(&self, deadline: Instant) {
        // The 32-bit deadline back to embassy's 64-bit time: the wait from now.
        let wait = deadline - self.now();
        embassy_time::Timer::after_millis(u64::from(wait.as_millis())).await;
    }
}
