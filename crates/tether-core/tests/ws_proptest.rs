//! Property tests of the sans-IO engine: frame and message round trips for
//! any payload, any fragmentation and any split of the byte stream, and no
//! panics on arbitrary input.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)] // host-side test code

use proptest::prelude::*;
use tether_core::ws::{
    Assembler, ClientHandshake, ClientRequest, CloseCode, CloseFrame, Config, Fragments, Frame,
    FrameHeader, Key, Message, OpCode, Request, Status,
};

fn opcode() -> impl Strategy<Value = OpCode> {
    prop_oneof![
        Just(OpCode::Continuation),
        Just(OpCode::Text),
        Just(OpCode::Binary),
        Just(OpCode::Close),
        Just(OpCode::Ping),
        Just(OpCode::Pong),
    ]
}

/// Payload lengths that cover all three length encodings.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..300),
        1 => (65_530usize..65_545).prop_map(|n| (0..n).map(|i| (i % 253) as u8).collect()),
    ]
}

/// Splits `bytes` at the given (sorted, clamped) cut points.
fn split<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    let mut pieces = Vec::new();
    let mut start = 0;
    for cut in cuts {
        pieces.push(&bytes[start..cut]);
        start = cut;
    }
    pieces.push(&bytes[start..]);
    pieces
}

#[derive(Debug, Clone, PartialEq)]
enum Owned {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
}

impl Owned {
    fn from(message: Message<'_>) -> Self {
        match message {
            Message::Text(t) => Self::Text(t.to_owned()),
            Message::Binary(b) => Self::Binary(b.to_vec()),
            Message::Ping(b) => Self::Ping(b.to_vec()),
            Message::Pong(b) => Self::Pong(b.to_vec()),
            Message::Close(c) => Self::Close(c.map(|c| (c.code.as_u16(), c.reason.to_owned()))),
        }
    }
}

fn message() -> impl Strategy<Value = Owned> {
    prop_oneof![
        "\\PC{0,40}".prop_map(Owned::Text),
        proptest::collection::vec(any::<u8>(), 0..200).prop_map(Owned::Binary),
        proptest::collection::vec(any::<u8>(), 0..=125).prop_map(Owned::Ping),
        proptest::collection::vec(any::<u8>(), 0..=125).prop_map(Owned::Pong),
        (
            prop_oneof![1000u16..=1003, 1007u16..=1014, 3000u16..=4999],
            "[a-z ]{0,40}"
        )
            .prop_map(|(c, r)| Owned::Close(Some((c, r)))),
        Just(Owned::Close(None)),
    ]
}

/// Encodes `messages` as a client would (masked), fragmenting data messages
/// at `fragment_size` and putting a ping between the first two fragments.
fn encode_stream(
    messages: &[Owned],
    fragment_size: usize,
    masks: &mut impl Iterator<Item = [u8; 4]>,
) -> Vec<u8> {
    let mut wire = Vec::new();
    let push = |frame: Frame<'_>, wire: &mut Vec<u8>, mask: [u8; 4]| {
        let mut out = vec![0u8; frame.encoded_len(true)];
        let n = frame.encode(Some(mask), &mut out).unwrap();
        assert_eq!(n, out.len());
        wire.extend_from_slice(&out);
    };
    for m in messages {
        let mut close = [0u8; 125];
        let (opcode, payload): (OpCode, &[u8]) = match m {
            Owned::Text(t) => (OpCode::Text, t.as_bytes()),
            Owned::Binary(b) => (OpCode::Binary, b),
            Owned::Ping(b) => (OpCode::Ping, b),
            Owned::Pong(b) => (OpCode::Pong, b),
            Owned::Close(None) => (OpCode::Close, &[]),
            Owned::Close(Some((code, reason))) => {
                let n = CloseFrame {
                    code: CloseCode::new(*code),
                    reason,
                }
                .encode(&mut close)
                .unwrap();
                (OpCode::Close, &close[..n])
            }
        };
        if opcode.is_control() {
            push(
                Frame::new(opcode, payload),
                &mut wire,
                masks.next().unwrap(),
            );
        } else {
            for (i, frame) in Fragments::new(opcode, payload, fragment_size).enumerate() {
                push(frame, &mut wire, masks.next().unwrap());
                if i == 0 && !frame.fin {
                    push(
                        Frame::new(OpCode::Ping, b"mid"),
                        &mut wire,
                        masks.next().unwrap(),
                    );
                }
            }
        }
    }
    wire
}

/// Feeds `pieces` to a server-side assembler and collects every message.
fn receive_all(
    pieces: &[&[u8]],
    capacity: usize,
) -> Result<Vec<Owned>, tether_core::ws::ProtocolError> {
    let mut buf = vec![0u8; capacity];
    let mut assembler = Assembler::new(Config::server());
    let mut out = Vec::new();
    for piece in pieces {
        let mut piece = *piece;
        loop {
            while let Status::Complete(_) = assembler.poll(&mut buf)? {
                out.push(Owned::from(assembler.message(&buf).unwrap()));
            }
            if piece.is_empty() {
                break;
            }
            let space = assembler.space(&mut buf);
            assert!(!space.is_empty(), "assembler ran out of space");
            let n = space.len().min(piece.len());
            space[..n].copy_from_slice(&piece[..n]);
            assembler.filled(n);
            piece = &piece[n..];
        }
    }
    Ok(out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn frames_round_trip(
        opcode in opcode(),
        fin in any::<bool>(),
        rsv in 0u8..8,
        mask in proptest::option::of(any::<[u8; 4]>()),
        payload in payload(),
    ) {
        let control = opcode.is_control();
        let payload = if control { &payload[..payload.len().min(125)] } else { &payload[..] };
        let frame = Frame { fin: fin || control, rsv, opcode, payload };
        let mut wire = vec![0u8; frame.encoded_len(mask.is_some())];
        let n = frame.encode(mask, &mut wire).unwrap();
        prop_assert_eq!(n, wire.len());

        let config = if mask.is_some() { Config::server() } else { Config::client() }
            .with_reserved_bits(0b111);
        // Every prefix is Partial and leaves the bytes alone.
        for cut in [0, 1, 2, n / 2, n.saturating_sub(1)] {
            if cut < n {
                let mut prefix = wire[..cut].to_vec();
                prop_assert_eq!(Frame::decode(&mut prefix, &config), Ok(Status::Partial));
                prop_assert_eq!(&prefix[..], &wire[..cut]);
            }
        }
        let mut decoded_wire = wire.clone();
        let Ok(Status::Complete((decoded, used))) = Frame::decode(&mut decoded_wire, &config) else {
            return Err(TestCaseError::fail("frame did not decode"));
        };
        prop_assert_eq!(used, n);
        prop_assert_eq!(decoded, frame);
        let Ok(Status::Complete((header, header_len))) = FrameHeader::parse(&wire) else {
            return Err(TestCaseError::fail("header did not parse"));
        };
        prop_assert_eq!(header.mask, mask);
        prop_assert_eq!(header_len + payload.len(), n);
    }

    #[test]
    fn messages_survive_any_fragmentation_and_any_split(
        messages in proptest::collection::vec(message(), 1..8),
        fragment_size in 1usize..64,
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
        seed in any::<u32>(),
    ) {
        let mut masks = (0u32..).map(|i| (seed ^ i.wrapping_mul(0x9E37_79B9)).to_ne_bytes());
        let wire = encode_stream(&messages, fragment_size, &mut masks);
        let received = receive_all(&split(&wire, &cuts), 1024).unwrap();
        // Each fragmented message was preceded by the ping sent mid-way.
        let expected: Vec<Owned> = messages
            .iter()
            .flat_map(|m| {
                let len = match m {
                    Owned::Text(t) => t.len(),
                    Owned::Binary(b) => b.len(),
                    _ => 0,
                };
                let fragmented = matches!(m, Owned::Text(_) | Owned::Binary(_)) && len > fragment_size;
                let ping = fragmented.then(|| Owned::Ping(b"mid".to_vec()));
                ping.into_iter().chain(std::iter::once(m.clone()))
            })
            .collect();
        prop_assert_eq!(received, expected);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
        capacity in 0usize..300,
    ) {
        // Whole and split input agree (up to the first error).
        let whole = receive_all(&[&bytes[..]], capacity.max(bytes.len()));
        let pieces = receive_all(&split(&bytes, &cuts), capacity.max(bytes.len()));
        prop_assert_eq!(whole, pieces);
        let mut copy = bytes.clone();
        let _ = Frame::decode(&mut copy, &Config::client());
        let _ = Request::parse(&bytes);
        let handshake = ClientHandshake::with_key(ClientRequest::new("h", "/"), Key::from_nonce([1; 16]));
        let _ = handshake.parse_response(&bytes);
    }

    #[test]
    fn handshake_response_parses_the_same_however_split(cut in 0usize..400, key in any::<[u8; 16]>()) {
        let key = Key::from_nonce(key);
        let handshake = ClientHandshake::with_key(ClientRequest::new("h", "/"), key);
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            std::str::from_utf8(&key.accept()).unwrap()
        );
        let cut = cut % (response.len() + 1);
        let expected = if cut == response.len() { "complete" } else { "partial" };
        let got = match handshake.parse_response(&response.as_bytes()[..cut]) {
            Ok(Status::Partial) => "partial",
            Ok(Status::Complete(r)) if r.header_len == response.len() => "complete",
            other => return Err(TestCaseError::fail(format!("{other:?}"))),
        };
        prop_assert_eq!(got, expected);
    }
}
