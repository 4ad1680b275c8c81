//! Differential property tests against tungstenite's frame layer
//! (`tungstenite::protocol::frame::{Frame, FrameHeader}`): frames encoded by
//! one decode identically in the other, in both directions, with the same
//! masks; and on arbitrary bytes, whatever tether's header parser accepts,
//! tungstenite reads the same way.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)] // host-side test code

use std::io::Cursor;

use proptest::prelude::*;
use tether_core::ws::{Config, Frame, FrameHeader, OpCode, ProtocolError, Status};
use tungstenite::protocol::frame::coding::{Control, Data, OpCode as TOpCode};
use tungstenite::protocol::frame::{Frame as TFrame, FrameHeader as THeader};

fn to_tungstenite(opcode: OpCode) -> TOpCode {
    match opcode {
        OpCode::Continuation => TOpCode::Data(Data::Continue),
        OpCode::Text => TOpCode::Data(Data::Text),
        OpCode::Binary => TOpCode::Data(Data::Binary),
        OpCode::Close => TOpCode::Control(Control::Close),
        OpCode::Ping => TOpCode::Control(Control::Ping),
        OpCode::Pong => TOpCode::Control(Control::Pong),
    }
}

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

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..300),
        1 => (65_530usize..65_545).prop_map(|n| (0..n).map(|i| (i * 7 % 251) as u8).collect()),
    ]
}

fn unmask(payload: &mut [u8], mask: Option<[u8; 4]>) {
    if let Some(key) = mask {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// tether encodes; tungstenite encodes the same frame byte for byte and
    /// reads tether's bytes back to the same header and payload.
    #[test]
    fn tether_to_tungstenite(
        opcode in opcode(),
        fin in any::<bool>(),
        rsv in 0u8..8,
        mask in proptest::option::of(any::<[u8; 4]>()),
        payload in payload(),
    ) {
        let control = opcode.is_control();
        let payload = if control { &payload[..payload.len().min(125)] } else { &payload[..] };
        let fin = fin || control;
        let frame = Frame { fin, rsv, opcode, payload };
        let mut ours = vec![0u8; frame.encoded_len(mask.is_some())];
        frame.encode(mask, &mut ours).unwrap();

        let header = THeader {
            is_final: fin,
            rsv1: rsv & 0b100 != 0,
            rsv2: rsv & 0b010 != 0,
            rsv3: rsv & 0b001 != 0,
            opcode: to_tungstenite(opcode),
            mask,
        };
        let mut theirs = Vec::new();
        TFrame::from_payload(header.clone(), payload.to_vec().into()).format(&mut theirs).unwrap();
        prop_assert_eq!(&ours, &theirs);

        let mut cursor = Cursor::new(&ours);
        let Some((parsed, len)) = THeader::parse(&mut cursor).unwrap() else {
            return Err(TestCaseError::fail("tungstenite needs more bytes"));
        };
        prop_assert_eq!(parsed, header);
        prop_assert_eq!(len, payload.len() as u64);
        let mut body = ours[cursor.position() as usize..].to_vec();
        unmask(&mut body, mask);
        prop_assert_eq!(&body[..], payload);
    }

    /// tungstenite encodes; tether decodes the same frame.
    #[test]
    fn tungstenite_to_tether(
        opcode in opcode(),
        fin in any::<bool>(),
        rsv in 0u8..8,
        mask in proptest::option::of(any::<[u8; 4]>()),
        payload in payload(),
    ) {
        let control = opcode.is_control();
        let payload = if control { &payload[..payload.len().min(125)] } else { &payload[..] };
        let fin = fin || control;
        let header = THeader {
            is_final: fin,
            rsv1: rsv & 0b100 != 0,
            rsv2: rsv & 0b010 != 0,
            rsv3: rsv & 0b001 != 0,
            opcode: to_tungstenite(opcode),
            mask,
        };
        let mut wire = Vec::new();
        TFrame::from_payload(header, payload.to_vec().into()).format(&mut wire).unwrap();
        let config = if mask.is_some() { Config::server() } else { Config::client() }
            .with_reserved_bits(0b111);
        let len = wire.len();
        let Ok(Status::Complete((frame, used))) = Frame::decode(&mut wire, &config) else {
            return Err(TestCaseError::fail("tether did not decode tungstenite's frame"));
        };
        prop_assert_eq!(used, len);
        prop_assert_eq!(frame, Frame { fin, rsv, opcode, payload });
    }

    /// On arbitrary bytes: whenever tether parses a header, tungstenite reads
    /// the same fields and length; whenever tether rejects a header that
    /// tungstenite's bare parser accepts, it is for a rule tungstenite checks
    /// later, in its codec (reserved opcodes, control-frame rules, lengths).
    #[test]
    fn header_parsers_agree_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
        let ours = FrameHeader::parse(&bytes);
        let theirs = THeader::parse(&mut Cursor::new(&bytes)).ok().flatten();
        match ours {
            Ok(Status::Complete((header, _))) => {
                let Some((t, len)) = theirs else {
                    return Err(TestCaseError::fail("tungstenite wanted more bytes"));
                };
                prop_assert_eq!(t.is_final, header.fin);
                prop_assert_eq!((t.rsv1, t.rsv2, t.rsv3), (header.rsv & 4 != 0, header.rsv & 2 != 0, header.rsv & 1 != 0));
                prop_assert_eq!(t.opcode, to_tungstenite(header.opcode));
                prop_assert_eq!(t.mask, header.mask);
                prop_assert_eq!(len, header.payload_len);
            }
            Ok(Status::Partial) => prop_assert!(theirs.is_none()),
            Err(e) => prop_assert!(matches!(
                e,
                ProtocolError::ReservedOpcode
                    | ProtocolError::FragmentedControlFrame
                    | ProtocolError::ControlFrameTooLong
                    | ProtocolError::NonMinimalLength
                    | ProtocolError::LengthOverflow
            )),
        }
    }
}
