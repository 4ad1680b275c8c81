//! The ESP-AT response parser and engine: no panic on any bytes, the same
//! events whether the input comes whole or byte by byte, and the engine's
//! receive buffer never overflows. Also the ESP-AT PKI image reader.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_core::time::{Duration, Instant};
use tether_esp8266::engine::{Engine, Kind};
use tether_esp8266::parse::{Event, Parser};

fn events(chunks: &mut dyn Iterator<Item = &[u8]>) -> Vec<(u8, Vec<u8>)> {
    let mut parser = Parser::<256>::new();
    let mut out: Vec<(u8, Vec<u8>)> = Vec::new();
    for mut input in chunks {
        while !input.is_empty() {
            let (used, event) = parser.parse(input);
            input = &input[used..];
            match event {
                Some(Event::Data(bytes)) => match out.last_mut() {
                    Some((0, data)) => data.extend_from_slice(bytes),
                    _ => out.push((0, bytes.to_vec())),
                },
                Some(event) => out.push((1, format!("{event:?}").into_bytes())),
                None => {}
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let whole = events(&mut core::iter::once(data));
    let singles = events(&mut data.chunks(1));
    assert_eq!(whole, singles);

    let mut recv = [0u8; 32];
    let mut engine = Engine::new(&mut recv);
    engine.initialised();
    let _ = engine.command_line().push_str("AT+CIPRECVDATA=0,32\r\n");
    engine.start(Instant::ZERO, Kind::Receive { link: 0 }, Duration::from_secs(1));
    engine.transmitted(Instant::ZERO, 21);
    engine.feed(Instant::ZERO, data, &mut |_| {});
    assert!(engine.received(0).len() <= 32);

    if let Ok(items) = tether_esp8266::pki::items(data) {
        for item in items {
            if let Ok(item) = item {
                assert!(item.data.len() <= data.len());
            }
        }
    }
});
