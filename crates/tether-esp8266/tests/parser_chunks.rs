//! Property tests of the ESP-AT parser and engine: recorded sessions split
//! at arbitrary points give the same events as in one piece, and arbitrary
//! bytes never panic or break the engine's bounds.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use proptest::prelude::*;
use tether_core::time::{Duration, Instant};
use tether_esp8266::engine::{Engine, Kind};
use tether_esp8266::parse::{Event, Parser};

/// Sessions as an ESP8266 with ESP-AT 2.2 prints them (echo on after a
/// reset, passive receive, a TLS-sized payload with CR LF and `OK` in it).
const SESSIONS: &[&[u8]] = &[
    b"\r\nready\r\nAT\r\r\n\r\nOK\r\nATE0\r\r\n\r\nOK\r\n\r\nOK\r\n\r\nOK\r\nWIFI CONNECTED\r\nWIFI GOT IP\r\n\r\nOK\r\n",
    b"0,CONNECT\r\n\r\nOK\r\n\r\nOK\r\n\r\n>\r\nRecv 16 bytes\r\n\r\nSEND OK\r\n+IPD,0,12\r\n+CIPRECVDATA:12,\"10.0.0.2\",443,\r\nOK\r\n\x00\xff>\r\n\r\nOK\r\n",
    b"+CWJAP:2\r\n\r\nERROR\r\nbusy p...\r\nbusy p...\r\nERR CODE:0x010b0000\r\n\r\nERROR\r\n+CIPRECVLEN:0,,,,\r\n\r\nOK\r\n0,CLOSED\r\n",
    b"+CWLAP:(3,\"Home\",-45,\"aa:bb:cc:dd:ee:ff\",6,-1,-1,4,4,7,0)\r\n+CWLAP:(0,\"Caf\\,e\",-80,\"aa:bb:cc:dd:ee:00\",1,-1,-1,0,0,7,0)\r\n\r\nOK\r\n+CIPSNTPTIME:Mon Dec 12 02:33:32 2016\r\nOK\r\n",
    b"\r\nOK\r\n\r\n>\r\nRecv 3 bytes\r\n\r\nSEND FAIL\r\nWIFI DISCONNECT\r\n1,CLOSED\r\n\x10\xe0 ets Jan  8 2013,rst cause:2\r\n\r\nready\r\n+IPD,2,5:hello\r\n",
];

/// The events of `chunks`, data joined, printable.
fn events(chunks: &[&[u8]]) -> Vec<String> {
    let mut parser = Parser::<256>::new();
    let mut out: Vec<String> = Vec::new();
    for chunk in chunks {
        let mut input = *chunk;
        while !input.is_empty() {
            let (used, event) = parser.parse(input);
            input = &input[used..];
            match event {
                Some(Event::Data(bytes)) => match out.last_mut() {
                    Some(last) if last.starts_with("data:") => last.push_str(&format!("{bytes:?}")),
                    _ => out.push(format!("data:{bytes:?}")),
                },
                Some(event) => out.push(format!("{event:?}")),
                None => {}
            }
            if used == 0 {
                break;
            }
        }
    }
    // Data split across chunks prints as several slices: compare bytes.
    out.iter()
        .map(|e| {
            if e.starts_with("data:") {
                e.replace("][", ", ")
            } else {
                e.clone()
            }
        })
        .collect()
}

fn split_at_points<'a>(bytes: &'a [u8], points: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = points.iter().map(|p| p % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut chunks = Vec::new();
    let mut start = 0;
    for cut in cuts {
        chunks.push(&bytes[start..cut]);
        start = cut;
    }
    chunks.push(&bytes[start..]);
    chunks
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_split_of_a_recorded_session_gives_the_same_events(
        session in 0..SESSIONS.len(),
        points in proptest::collection::vec(any::<usize>(), 0..40),
    ) {
        let bytes = SESSIONS[session];
        let whole = events(&[bytes]);
        let split = events(&split_at_points(bytes, &points));
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_parser_or_the_engine(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        points in proptest::collection::vec(any::<usize>(), 0..16),
        kind in 0u8..4,
    ) {
        let _ = events(&split_at_points(&bytes, &points));
        let mut recv = [0u8; 64];
        let mut engine = Engine::new(&mut recv);
        engine.initialised();
        engine.command_line().push_str("AT+CIPRECVDATA=0,64\r\n").unwrap();
        let kind = match kind {
            0 => Kind::Plain,
            1 => Kind::Join,
            2 => Kind::Send { link: 0, len: 10 },
            _ => Kind::Receive { link: 0 },
        };
        engine.start(Instant::ZERO, kind, Duration::from_secs(1));
        engine.transmitted(Instant::ZERO, 22);
        for chunk in split_at_points(&bytes, &points) {
            engine.feed(Instant::ZERO, chunk, &mut |line| assert!(line.len() <= 256));
            prop_assert!(engine.received(0).len() <= 64);
        }
        engine.handle_timeout(Instant::ZERO + Duration::from_secs(2));
        prop_assert!(!engine.is_busy());
    }
}
