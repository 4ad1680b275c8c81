//! Golden vectors: every hex and JSON example in `docs/protocol.md` decodes
//! and re-encodes exactly, so the specification cannot drift from the code.
//!
//! The document's fenced blocks are tagged ```` ```json <direction> ```` or
//! ```` ```hex <direction> ````, optionally followed by `error=<DecodeError>`
//! for an example that must be rejected. A valid hex block is the binary form
//! of the valid JSON block of the same direction just before it.

#![allow(clippy::std_instead_of_alloc)] // a std test program

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use tether_proto::{DeviceToServer, ReceiverToServer, ServerToDevice, ServerToReceiver};

struct Block {
    line: usize,
    lang: String,
    direction: String,
    error: Option<String>,
    body: String,
}

fn blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (index, line) in markdown.lines().enumerate() {
        if let Some(info) = line.strip_prefix("```") {
            match open.take() {
                Some(block) => blocks.push(block),
                None => {
                    let (head, error) = match info.split_once(" error=") {
                        Some((head, error)) => (head, Some(error.trim().to_owned())),
                        None => (info, None),
                    };
                    let mut words = head.split_whitespace();
                    open = Some(Block {
                        line: index + 1,
                        lang: words.next().unwrap_or("").to_owned(),
                        direction: words.next().unwrap_or("").to_owned(),
                        error,
                        body: String::new(),
                    });
                }
            }
        } else if let Some(block) = open.as_mut() {
            block.body.push_str(line);
            block.body.push('\n');
        }
    }
    assert!(open.is_none(), "unclosed code block");
    blocks
}

fn parse_hex(body: &str, line: usize) -> Vec<u8> {
    body.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(str::split_whitespace)
        .map(|pair| {
            assert_eq!(pair.len(), 2, "line {line}: `{pair}` is not a hex byte");
            u8::from_str_radix(pair, 16).unwrap_or_else(|e| panic!("line {line}: `{pair}`: {e}"))
        })
        .collect()
}

/// What one direction's checks report: the kinds seen in valid JSON and in
/// valid hex examples.
#[derive(Default)]
struct Seen {
    json: BTreeSet<String>,
    hex: BTreeSet<String>,
}

fn kind_of(json: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(json).expect("valid JSON");
    let object = value.as_object().expect("an object");
    object
        .keys()
        .find(|k| *k != "v")
        .expect("a message kind")
        .clone()
}

/// Checks one block against one message type; `last_json` is the text of
/// the last valid JSON example of the direction.
macro_rules! check_block {
    ($ty:ident, $block:expr, $last_json:expr, $seen:expr) => {{
        let block: &Block = $block;
        let line = block.line;
        match (block.lang.as_str(), &block.error) {
            ("json", None) => {
                let text = block.body.trim();
                let message = $ty::from_json(text)
                    .unwrap_or_else(|e| panic!("line {line}: does not decode: {e}"));
                let encoded = message.to_json().expect("re-encodes");
                assert_eq!(encoded, text, "line {line}: re-encodes differently");
                *$last_json = Some(text.to_owned());
                $seen.json.insert(kind_of(text));
            }
            ("json", Some(error)) => {
                let result = $ty::from_json(block.body.trim());
                assert_eq!(
                    result.map_err(|e| format!("{e:?}")),
                    Err(error.clone()),
                    "line {line}"
                );
            }
            ("hex", None) => {
                let bytes = parse_hex(&block.body, line);
                let message = $ty::decode(&bytes)
                    .unwrap_or_else(|e| panic!("line {line}: does not decode: {e}"));
                let json = $last_json
                    .as_deref()
                    .unwrap_or_else(|| panic!("line {line}: no JSON example before"));
                let expected = $ty::from_json(json).expect("checked above");
                assert_eq!(
                    message, expected,
                    "line {line}: differs from the JSON example"
                );
                assert_eq!(
                    expected.encode_to_vec().expect("encodes"),
                    bytes,
                    "line {line}: encoder output differs"
                );
                $seen.hex.insert(kind_of(json));
            }
            ("hex", Some(error)) => {
                let bytes = parse_hex(&block.body, line);
                assert_eq!(
                    $ty::decode(&bytes).map_err(|e| format!("{e:?}")),
                    Err(error.clone()),
                    "line {line}"
                );
            }
            _ => unreachable!(),
        }
    }};
}

#[test]
fn every_example_in_protocol_md_is_exact() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/protocol.md");
    let markdown = std::fs::read_to_string(&path).expect("docs/protocol.md is readable");
    let mut last_json: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    let mut checked = 0;
    for block in blocks(&markdown) {
        if block.lang != "json" && block.lang != "hex" {
            continue;
        }
        let last = last_json.entry(block.direction.clone()).or_default();
        let seen = seen.entry(block.direction.clone()).or_default();
        match block.direction.as_str() {
            "device-to-server" => check_block!(DeviceToServer, &block, last, seen),
            "server-to-device" => check_block!(ServerToDevice, &block, last, seen),
            "receiver-to-server" => check_block!(ReceiverToServer, &block, last, seen),
            "server-to-receiver" => check_block!(ServerToReceiver, &block, last, seen),
            other => panic!("line {}: unknown direction `{other}`", block.line),
        }
        checked += 1;
    }

    // The document shows every message: in JSON always, in hex for the
    // device protocol.
    let kinds = |list: &[&str]| {
        list.iter()
            .map(|s| (*s).to_owned())
            .collect::<BTreeSet<_>>()
    };
    let device_to_server = kinds(&[
        "hello",
        "publish",
        "command_ack",
        "describe_channel",
        "describe_command",
        "status",
    ]);
    let server_to_device = kinds(&["welcome", "ack", "command"]);
    let expectations = [
        (
            "device-to-server",
            device_to_server.clone(),
            device_to_server,
        ),
        (
            "server-to-device",
            server_to_device.clone(),
            server_to_device,
        ),
        (
            "receiver-to-server",
            kinds(&["subscribe", "unsubscribe", "send_command", "ping"]),
            BTreeSet::new(),
        ),
        (
            "server-to-receiver",
            kinds(&[
                "subscribed",
                "event",
                "command_result",
                "error",
                "pong",
                "description",
            ]),
            BTreeSet::new(),
        ),
    ];
    for (direction, json, hex) in expectations {
        let seen = seen.get(direction).expect("direction has examples");
        assert_eq!(seen.json, json, "{direction}: JSON examples");
        assert_eq!(seen.hex, hex, "{direction}: hex examples");
    }
    println!("checked {checked} examples in docs/protocol.md");
    assert!(checked >= 30);
}
