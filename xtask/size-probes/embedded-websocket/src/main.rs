//! Minimal embedded-websocket client, for measuring code size.
#![no_std]
#![no_main]

use core::ptr::{read_volatile, write_volatile};

use embedded_websocket::framer::{Framer, FramerError, ReadResult, Stream};
use embedded_websocket::{
    WebSocketClient, WebSocketCloseStatusCode, WebSocketOptions, WebSocketSendMessageType,
};

const FIFO_DATA: usize = 0x6000_0000;
const FIFO_LEVEL: usize = 0x6000_0004;
const TRNG: usize = 0x6000_0008;
const CONSOLE: usize = 0x6000_000C;

struct Fifo;

impl Stream<()> for Fifo {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ()> {
        let level = unsafe { read_volatile(FIFO_LEVEL as *const u32) } as usize;
        let n = level.min(buf.len());
        for byte in &mut buf[..n] {
            *byte = unsafe { read_volatile(FIFO_DATA as *const u8) };
        }
        Ok(n)
    }

    fn write_all(&mut self, buf: &[u8]) -> Result<(), ()> {
        for byte in buf {
            unsafe { write_volatile(FIFO_DATA as *mut u8, *byte) };
        }
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
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dst);
        Ok(())
    }
}

fn console(bytes: &[u8]) {
    for byte in bytes {
        unsafe { write_volatile(CONSOLE as *mut u8, *byte) };
    }
}

fn client() -> Result<(), FramerError<()>> {
    let mut read_buf = [0u8; 1024];
    let mut write_buf = [0u8; 512];
    let mut frame_buf = [0u8; 1024];
    let mut read_cursor = 0;
    let mut ws = WebSocketClient::new_client(Trng);
    let mut framer = Framer::new(&mut read_buf, &mut read_cursor, &mut write_buf, &mut ws);
    let options = WebSocketOptions {
        path: "/v1/device?id=1",
        host: "relay.example.com",
        origin: "",
        sub_protocols: None,
        additional_headers: Some(&["Authorization: Bearer token"]),
    };
    framer.connect(&mut Fifo, &options)?;
    framer.write(&mut Fifo, WebSocketSendMessageType::Text, true, b"hello")?;
    framer.write(&mut Fifo, WebSocketSendMessageType::Binary, true, &[1, 2, 3, 4])?;
    loop {
        match framer.read(&mut Fifo, &mut frame_buf)? {
            ReadResult::Text("bye") => break,
            ReadResult::Text(text) => console(text.as_bytes()),
            ReadResult::Binary(data) => console(data),
            ReadResult::Closed => return Ok(()),
            ReadResult::Pong(_) => {}
        }
    }
    framer.close(&mut Fifo, WebSocketCloseStatusCode::NormalClosure, Some("bye"))?;
    // Wait for the server's close frame.
    while !matches!(framer.read(&mut Fifo, &mut frame_buf)?, ReadResult::Closed) {}
    Ok(())
}

#[unsafe(no_mangle)]
pub extern "C" fn _start() -> ! {
    let ok = client().is_ok();
    console(if ok { b"ok" } else { b"err" });
    loop {}
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}
