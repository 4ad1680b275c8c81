//! The payload rule (`Payload::check`) accepts exactly what serde_json
//! accepts as one `serde_json::Value` (with its default recursion limit and
//! correctly rounded numbers), minus surrounding whitespace: the server
//! refuses at publish what a strict reader could not read later.
//!
//! The fuzz target `payload_rule` runs the same comparison on arbitrary
//! bytes.

#![allow(clippy::std_instead_of_alloc, clippy::std_instead_of_core)]

use proptest::prelude::*;
use tether_proto::{MAX_PAYLOAD_DEPTH, Payload, PayloadError};

/// What serde_json says: one value, and no whitespace around it.
fn serde_json_accepts(bytes: &[u8]) -> bool {
    let surrounded = |byte: Option<&u8>| matches!(byte, Some(b' ' | b'\t' | b'\n' | b'\r'));
    serde_json::from_slice::<serde_json::Value>(bytes).is_ok()
        && !surrounded(bytes.first())
        && !surrounded(bytes.last())
}

fn agree(bytes: &[u8]) -> Result<(), TestCaseError> {
    let ours = Payload(bytes).check();
    prop_assert_eq!(
        ours.is_ok(),
        serde_json_accepts(bytes),
        "{:?}: ours {:?}",
        String::from_utf8_lossy(bytes),
        ours
    );
    Ok(())
}

/// Pieces JSON is made of, and pieces that break it.
const TOKENS: &[&str] = &[
    "[",
    "]",
    "{",
    "}",
    ",",
    ":",
    "\"",
    "\\",
    "\\u",
    "d800",
    "dc00",
    "DBFF",
    "DFFF",
    "0041",
    "\\n",
    "\\x",
    "0",
    "1",
    "9",
    "-",
    "+",
    ".",
    "e",
    "E",
    "308",
    "309",
    "400",
    "1.8",
    "17976931348623158",
    "true",
    "false",
    "null",
    "nul",
    " ",
    "\t",
    "\n",
    "\u{1}",
    "é",
    "\u{1F600}",
    "a",
    "\"a\":",
];

fn token_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..40).prop_map(|tokens| tokens.concat())
}

/// Structured JSON values (as text) of bounded size.
fn json_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:e}")),
        "[a-z\u{e9}\u{1F600} ]{0,8}".prop_map(|s| format!("{s:?}")),
        (
            "-?[1-9][0-9]{0,20}",
            "(\\.[0-9]{1,20})?",
            "([eE][+-]?[0-9]{1,4})?"
        )
            .prop_map(|(int, frac, exp)| format!("{int}{frac}{exp}")),
        "\\\\u[dD][89abAB][0-9a-f]{2}(\\\\u[dD][c-fC-F][0-9a-f]{2})?"
            .prop_map(|escape| format!("\"{escape}\"")),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6)
                .prop_map(|items| format!("[{}]", items.join(","))),
            prop::collection::vec(("[a-z]{0,4}", inner), 0..6).prop_map(|members| {
                let members: Vec<String> = members
                    .into_iter()
                    .map(|(name, value)| format!("\"{name}\" : {value}"))
                    .collect();
                format!("{{{}}}", members.join(", "))
            }),
        ]
    })
}

/// A JSON value with one byte inserted, removed or replaced.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    (
        json_value(),
        any::<prop::sample::Index>(),
        0u8..3,
        prop::sample::select(b"[]{},:\"\\ -.e0123456789tfnu".as_slice()),
    )
        .prop_map(|(text, index, operation, byte)| {
            let mut bytes = text.into_bytes();
            let at = index.index(bytes.len() + 1);
            match operation {
                0 => bytes.insert(at, byte),
                1 if at < bytes.len() => {
                    bytes.remove(at);
                }
                _ if at < bytes.len() => bytes[at] = byte,
                _ => bytes.push(byte),
            }
            bytes
        })
}

/// Numbers around the double range's edge and beyond.
fn edge_number() -> impl Strategy<Value = String> {
    (
        "-?(0|1|17976931348623157|17976931348623158|179769313486231580793728971405|2|9{1,30})",
        "(\\.[0-9]{0,6}[1-9])?",
        prop_oneof![
            Just(String::new()),
            (-420i32..420).prop_map(|e| format!("e{e}"))
        ],
    )
        .prop_map(|(int, frac, exp)| format!("{int}{frac}{exp}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn structured_values_agree(text in json_value()) {
        agree(text.as_bytes())?;
    }

    #[test]
    fn mutated_values_agree(bytes in mutated()) {
        agree(&bytes)?;
    }

    #[test]
    fn token_soup_agrees(text in token_soup()) {
        agree(text.as_bytes())?;
    }

    #[test]
    fn numbers_at_the_edge_agree(text in edge_number()) {
        agree(text.as_bytes())?;
    }

    #[test]
    fn arbitrary_bytes_agree(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        agree(&bytes)?;
    }
}

#[test]
fn nesting_limit_is_serde_jsons() {
    for depth in [
        1,
        MAX_PAYLOAD_DEPTH - 1,
        MAX_PAYLOAD_DEPTH,
        MAX_PAYLOAD_DEPTH + 1,
        129,
        2000,
    ] {
        for (open, close, inner) in [
            ("[", "]", "1"),
            ("{\"k\":", "}", "1"),
            ("[{\"k\":", "}]", ""),
        ] {
            let text = format!("{}{inner}{}", open.repeat(depth), close.repeat(depth));
            let ours = Payload::from_json_str(&text).check();
            assert_eq!(
                ours.is_ok(),
                serde_json_accepts(text.as_bytes()),
                "depth {depth} {open}"
            );
        }
    }
    let limit = format!(
        "{}{}",
        "[".repeat(MAX_PAYLOAD_DEPTH + 1),
        "]".repeat(MAX_PAYLOAD_DEPTH + 1)
    );
    assert_eq!(
        Payload::from_json_str(&limit).check(),
        Err(PayloadError::TooDeep)
    );
}

#[test]
fn the_reported_inputs_are_refused() {
    // The three payloads of the review that were stored and then broke
    // every history page holding them.
    let deep = format!("{}{}", "[".repeat(129), "]".repeat(129));
    assert_eq!(
        Payload::from_json_str(&deep).check(),
        Err(PayloadError::TooDeep)
    );
    assert_eq!(
        Payload::from_json_str(r#""\ud800""#).check(),
        Err(PayloadError::UnpairedSurrogate)
    );
    assert_eq!(
        Payload::from_json_str("1e400").check(),
        Err(PayloadError::NumberOutOfRange)
    );
    for text in [deep.as_str(), r#""\ud800""#, "1e400"] {
        assert!(!serde_json_accepts(text.as_bytes()), "{text}");
    }
}
