//! Secrets: device tokens, receiver keys, sign-in sessions, invitation
//! links and claim codes.
//!
//! Tokens and keys are 256 random bits, written `td_<64 hex>` (device),
//! `tk_<64 hex>` (receiver key), `ts_<64 hex>` (a sign-in session, the
//! session cookie's value) and `ti_<64 hex>` (an invitation link). The database keeps only a non-secret lookup
//! prefix (the first 16 hex digits) and the SHA-256 of the whole string;
//! a presented secret is hashed and compared to the stored hash in constant
//! time. SHA-256 (not a slow password hash) is right for 256-bit random
//! secrets: nobody can guess them, so there is nothing to stretch.
//!
//! Claim codes are printed on device labels and typed by people: 12
//! characters of Crockford's base 32, shown as `XXXX-XXXX-XXXX` (60
//! bits); case, spaces and dashes are ignored when they are entered.

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix of device tokens.
pub const DEVICE_TOKEN_PREFIX: &str = "td_";
/// Prefix of receiver keys.
pub const RECEIVER_KEY_PREFIX: &str = "tk_";
/// Prefix of sign-in session tokens (the session cookie).
pub const SESSION_TOKEN_PREFIX: &str = "ts_";
/// Prefix of invitation tokens (in invitation links).
pub const INVITATION_TOKEN_PREFIX: &str = "ti_";
/// Hex digits of a secret after its prefix.
const SECRET_HEX_LEN: usize = 64;
/// Hex digits of the lookup part.
const LOOKUP_HEX_LEN: usize = 16;
/// Alphabet of claim codes: Crockford's base 32 (no I, L, O, U; an entered
/// O reads as 0, I and L as 1).
const CLAIM_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const CLAIM_LEN: usize = 12;

/// A fresh secret: `prefix` then 64 hex digits of 256 random bits.
pub fn generate_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// The stored, non-secret lookup part of a well-formed secret with this
/// prefix, or `None` if `secret` is not one.
pub fn lookup_part<'a>(secret: &'a str, prefix: &str) -> Option<&'a str> {
    let hex = secret.strip_prefix(prefix)?;
    if hex.len() != SECRET_HEX_LEN || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    hex.get(..LOOKUP_HEX_LEN)
}

/// SHA-256 of a secret.
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Whether `secret` hashes to `stored_hash`, compared in constant time.
pub fn verify_secret(secret: &str, stored_hash: &[u8]) -> bool {
    hash_secret(secret).ct_eq(stored_hash).into()
}

/// A fresh claim code, `XXXX-XXXX-XXXX`.
pub fn generate_claim_code() -> String {
    let mut bytes = [0u8; CLAIM_LEN];
    rand::rng().fill_bytes(&mut bytes);
    let mut code = String::with_capacity(CLAIM_LEN + 2);
    for (index, byte) in bytes.iter().enumerate() {
        if index > 0 && index % 4 == 0 {
            code.push('-');
        }
        code.push(char::from(CLAIM_ALPHABET[usize::from(byte & 31)]));
    }
    code
}

/// A claim code as entered, normalized (upper case, no spaces or dashes),
/// or `None` if it cannot be one.
pub fn normalize_claim_code(code: &str) -> Option<String> {
    let normalized: String = code
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            other => other,
        })
        .collect();
    (normalized.len() == CLAIM_LEN && normalized.bytes().all(|b| CLAIM_ALPHABET.contains(&b)))
        .then_some(normalized)
}

/// The token a request carries in `Authorization: Bearer <token>`.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_round_trip() {
        let token = generate_secret(DEVICE_TOKEN_PREFIX);
        assert_eq!(token.len(), 3 + 64);
        let lookup = lookup_part(&token, DEVICE_TOKEN_PREFIX);
        assert_eq!(lookup, token.get(3..19));
        assert!(verify_secret(&token, &hash_secret(&token)));
        let other = generate_secret(DEVICE_TOKEN_PREFIX);
        assert_ne!(token, other);
        assert!(!verify_secret(&other, &hash_secret(&token)));
        assert!(!verify_secret(&token, &[0u8; 5]));
    }

    #[test]
    fn malformed_secrets_have_no_lookup() {
        let token = generate_secret(RECEIVER_KEY_PREFIX);
        assert_eq!(lookup_part(&token, DEVICE_TOKEN_PREFIX), None);
        assert_eq!(lookup_part("tk_abc", RECEIVER_KEY_PREFIX), None);
        assert_eq!(lookup_part(&format!("{token}0"), RECEIVER_KEY_PREFIX), None);
        let bad = format!("tk_{}", "g".repeat(64));
        assert_eq!(lookup_part(&bad, RECEIVER_KEY_PREFIX), None);
        assert_eq!(lookup_part("", RECEIVER_KEY_PREFIX), None);
    }

    #[test]
    fn claim_codes_normalize() {
        let code = generate_claim_code();
        assert_eq!(code.len(), 14);
        let normalized = normalize_claim_code(&code).expect("generated codes are valid");
        assert_eq!(normalized, code.replace('-', ""));
        assert_eq!(
            normalize_claim_code(&code.to_ascii_lowercase().replace('-', " ")),
            Some(normalized)
        );
        assert_eq!(normalize_claim_code("ABCD-EFGH-JKMU"), None);
        assert_eq!(normalize_claim_code("ABCD"), None);
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_handled_without_panic(text in ".{0,80}") {
            let _ = lookup_part(&text, DEVICE_TOKEN_PREFIX);
            let _ = normalize_claim_code(&text);
            proptest::prop_assert!(verify_secret(&text, &hash_secret(&text)));
            let other = format!("{text}x");
            proptest::prop_assert!(!verify_secret(&other, &hash_secret(&text)));
        }

        #[test]
        fn lookup_accepts_exactly_well_formed_secrets(hex in "[0-9a-f]{60,68}") {
            let secret = format!("{RECEIVER_KEY_PREFIX}{hex}");
            let lookup = lookup_part(&secret, RECEIVER_KEY_PREFIX);
            proptest::prop_assert_eq!(lookup.is_some(), hex.len() == 64);
            if let Some(lookup) = lookup {
                proptest::prop_assert_eq!(lookup, &hex[..16]);
            }
        }

        #[test]
        fn claim_codes_survive_how_people_type_them(
            code in "[0-9A-HJKMNP-TV-Z]{12}",
            lower in proptest::bool::ANY,
            separator in "[ -]?",
        ) {
            let mut typed = String::new();
            for (index, c) in code.chars().enumerate() {
                if index > 0 && index % 4 == 0 {
                    typed.push_str(&separator);
                }
                typed.push(if lower { c.to_ascii_lowercase() } else { c });
            }
            proptest::prop_assert_eq!(normalize_claim_code(&typed), Some(code));
        }
    }

    #[test]
    fn bearer_header() {
        let mut headers = axum::http::HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert("authorization", "Bearer td_x".parse().expect("header"));
        assert_eq!(bearer(&headers), Some("td_x"));
        headers.insert("authorization", "Basic abc".parse().expect("header"));
        assert_eq!(bearer(&headers), None);
    }
}
