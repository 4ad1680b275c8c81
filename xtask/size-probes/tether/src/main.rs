//! Minimal tether WebSocket client, for measuring code size.
#![no_std]
#![no_main]

use core::future::Future;
use core::pin::pin;
use core::ptr::{read_volatile, write_volatile};
use core::task::{Context, Poll, Waker};

use tether_core::ws::{ClientRequest, CloseCode, Config, Error, Message, WebSocket};

const FIFO_DATA: usize = 0x6000_0000;
const FIFO_LEVEL: usize = 0x6000_0004;
const TRNG: usize = 0x6000_0008;
const CONSOLE: usize = 0x6000_000C;

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

fn console(bytes: &[u8]) {
    for byte in bytes {
        unsafe { write_volatile(CONSOLE as *mut u8, *byte) };
    }
}

async fn client() -> Result<(), Error> {
    let mut rx = [0u8; 1024];
    let mut tx = [0u8; 512];
    let request = ClientRequest::new("relay.example.com", "/v1/device?id=1")
        .with_authorization("Bearer token");
    let (mut ws, _) =
        WebSocket::connect(Fifo, &mut rx, &mut tx, Trng, Config::client(), request).await?;
    ws.send_text("hello").await?;
    ws.send_binary(&[1, 2, 3, 4]).await?;
    loop {
        match ws.receive().await? {
            Message::Text("bye") => break,
            Message::Text(text) => console(text.as_bytes()),
            Message::Binary(data) => console(data),
            Message::Close(_) => return Ok(()),
            _ => {}
        }
    }
    ws.close(CloseCode::NORMAL, "bye").await
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
    let ok = block_on(client()).is_ok();
    console(if ok { b"ok" } else { b"err" });
    loop {}
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}
