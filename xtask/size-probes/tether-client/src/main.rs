//! The minimal tether device client, for measuring code size: the whole
//! client of `tether_core::client` (handshake with reply validation,
//! framing, session, postcard, JSON payloads) over a memory-mapped FIFO,
//! publishing a counter and answering commands.
#![no_std]
#![no_main]

use core::future::{Future, poll_fn};
use core::pin::pin;
use core::ptr::{read_volatile, write_volatile};
use core::task::{Context, Poll, Waker};

use tether_core::board::Parts;
use tether_core::client::{self, ClientConfig, CommandResult, NoCommands, Resources};
use tether_core::connector::{Connector, Endpoint};
use tether_core::outbox::RamOutbox;
use tether_core::time::{Clock, Duration, Instant};
use tether_proto::{Command, CommandStatus};

const FIFO_DATA: usize = 0x6000_0000;
const FIFO_LEVEL: usize = 0x6000_0004;
const TRNG: usize = 0x6000_0008;
const TIMER_MS: usize = 0x6000_0010;

struct Fifo;

impl embedded_io_async::ErrorType for Fifo {
    type Error = core::convert::Infallible;
}

impl embedded_io_async::Read for Fifo {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let level = unsafe { read_volatile(FIFO_LEVEL as *const u32) } as usize;
        let n = level.min(buf.len());
        for byte in &mut buf[..n] {
            *byte = unsafe { read_volatile(FIFO_DATA as *const u8) };
        }
        Ok(n)
    }
}

impl embedded_io_async::Write for Fifo {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        for byte in buf {
            unsafe { write_volatile(FIFO_DATA as *mut u8, *byte) };
        }
        Ok(buf.len())
    }

    async fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

struct FifoConnector;

impl Connector for FifoConnector {
    type Connection<'a> = Fifo;
    type Error = ();

    async fn connect(&mut self, _endpoint: Endpoint<'_>) -> Result<Fifo, ()> {
        Ok(Fifo)
    }
}

struct Trng;

impl rand_core::RngCore for Trng {
    fn next_u32(&mut self) -> u32 {
        unsafe { read_volatile(TRNG as *const u32) }
    }
    fn next_u64(&mut self) -> u64 {
        rand_core::impls::next_u64_via_u32(self)
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        rand_core::impls::fill_bytes_via_next(self, dst)
    }
}

struct TimerClock;

impl Clock for TimerClock {
    fn now(&self) -> Instant {
        Instant::from_millis(u64::from(unsafe { read_volatile(TIMER_MS as *const u32) }))
    }

    async fn sleep_until(&self, deadline: Instant) {
        poll_fn(|_| {
            if self.now() >= deadline {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

type Board = Parts<FifoConnector, TimerClock, Trng, RamOutbox<1024>>;

async fn device(resources: &mut Resources<Board>) {
    let board = Parts {
        connector: FifoConnector,
        clock: TimerClock,
        rng: Trng,
        outbox: RamOutbox::new(),
    };
    let config = ClientConfig::new("ws://relay.example.com/v1/device", "probe-1", "1.0.0")
        .with_authorization("Bearer token");
    let Ok((client, mut runner)) = client::new(board, config, resources) else {
        return;
    };
    let led = |command: &Command<'_>, result: &mut CommandResult<'_>| match command.channel {
        "led" => match result.set(&(command.payload.as_str() == Some("true"))) {
            Ok(()) => CommandStatus::Ok,
            Err(_) => CommandStatus::Failed,
        },
        _ => CommandStatus::Unsupported,
    };
    let publish = async {
        for counter in 0u32.. {
            let _ = client.publish("counter", &counter).await;
            client.sleep(Duration::from_secs(1)).await;
        }
    };
    let _ = (NoCommands, embassy_futures::select::select(runner.run(led), publish).await);
}

fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn _start() -> ! {
    let mut resources = Resources::new();
    block_on(device(&mut resources));
    loop {}
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}
