//! The two facts of an X.509 certificate the connector reports on when a
//! handshake is refused: its validity window and its DNS names. Parsed with
//! the `der` crate (the one embedded-tls uses), bounded, without allocation;
//! anything malformed is an error, never a panic.

use der::{AnyRef, Decode, Reader, SliceReader, Tag, Tagged};

/// Why a certificate could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Malformed;

/// The validity window, in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Validity {
    /// `notBefore`.
    pub not_before: u64,
    /// `notAfter`.
    pub not_after: u64,
}

/// What [`parse`] reads out of a DER certificate.
#[derive(Debug, Clone, Copy)]
pub struct CertificateFacts<'a> {
    /// The validity window.
    pub validity: Validity,
    /// The content of the subjectAltName extension (a SEQUENCE of
    /// GeneralName), if present.
    subject_alt_names: Option<&'a [u8]>,
}

const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1D, 0x11]; // 2.5.29.17
const EXTENSIONS: u8 = 0xA3; // [3] EXPLICIT, constructed
const VERSION: u8 = 0xA0; // [0] EXPLICIT, constructed
const DNS_NAME: u8 = 0x82; // [2] IMPLICIT IA5String

fn any<'a>(reader: &mut SliceReader<'a>) -> Result<AnyRef<'a>, Malformed> {
    AnyRef::decode(reader).map_err(|_| Malformed)
}

fn sequence<'a>(any: AnyRef<'a>) -> Result<SliceReader<'a>, Malformed> {
    if any.tag() != Tag::Sequence {
        return Err(Malformed);
    }
    SliceReader::new(any.value()).map_err(|_| Malformed)
}

fn time(any: AnyRef<'_>) -> Result<u64, Malformed> {
    let duration = match any.tag() {
        Tag::UtcTime => der::asn1::UtcTime::try_from(any)
            .map_err(|_| Malformed)?
            .to_unix_duration(),
        Tag::GeneralizedTime => der::asn1::GeneralizedTime::try_from(any)
            .map_err(|_| Malformed)?
            .to_unix_duration(),
        _ => return Err(Malformed),
    };
    Ok(duration.as_secs())
}

/// Reads the validity window and the subjectAltName of a DER certificate.
///
/// # Errors
/// [`Malformed`] for anything that is not a well-formed X.509 certificate
/// up to its extensions.
pub fn parse(der: &[u8]) -> Result<CertificateFacts<'_>, Malformed> {
    let mut outer = SliceReader::new(der).map_err(|_| Malformed)?;
    let mut certificate = sequence(any(&mut outer)?)?;
    let mut tbs = sequence(any(&mut certificate)?)?;
    if tbs.peek_byte() == Some(VERSION) {
        any(&mut tbs)?;
    }
    let _serial = any(&mut tbs)?;
    let _signature = any(&mut tbs)?;
    let _issuer = any(&mut tbs)?;
    let mut validity = sequence(any(&mut tbs)?)?;
    let validity = Validity {
        not_before: time(any(&mut validity)?)?,
        not_after: time(any(&mut validity)?)?,
    };
    let _subject = any(&mut tbs)?;
    let _public_key = any(&mut tbs)?;
    let mut subject_alt_names = None;
    while !tbs.is_finished() {
        let is_extensions = tbs.peek_byte() == Some(EXTENSIONS);
        let field = any(&mut tbs)?;
        if !is_extensions {
            continue; // issuerUniqueID / subjectUniqueID
        }
        let mut wrapper = SliceReader::new(field.value()).map_err(|_| Malformed)?;
        let mut extensions = sequence(any(&mut wrapper)?)?;
        while !extensions.is_finished() {
            let mut extension = sequence(any(&mut extensions)?)?;
            let id = any(&mut extension)?;
            if id.tag() != Tag::ObjectIdentifier {
                return Err(Malformed);
            }
            let mut value = any(&mut extension)?;
            if value.tag() == Tag::Boolean {
                value = any(&mut extension)?; // `critical`
            }
            if value.tag() != Tag::OctetString {
                return Err(Malformed);
            }
            if id.value() == SUBJECT_ALT_NAME {
                let mut names = SliceReader::new(value.value()).map_err(|_| Malformed)?;
                let names = any(&mut names)?;
                if names.tag() != Tag::Sequence {
                    return Err(Malformed);
                }
                subject_alt_names = Some(names.value());
            }
        }
    }
    Ok(CertificateFacts {
        validity,
        subject_alt_names,
    })
}

impl CertificateFacts<'_> {
    /// Whether a DNS name of the certificate (subjectAltName dNSName,
    /// `*.` wildcards in the leftmost label) matches `host`. A certificate
    /// without subjectAltName matches nothing (RFC 9525 6.3 drops the
    /// common-name fallback).
    ///
    /// # Errors
    /// [`Malformed`] if the name list is not well-formed.
    pub fn matches_host(&self, host: &str) -> Result<bool, Malformed> {
        let Some(names) = self.subject_alt_names else {
            return Ok(false);
        };
        let mut reader = SliceReader::new(names).map_err(|_| Malformed)?;
        while !reader.is_finished() {
            let is_dns = reader.peek_byte() == Some(DNS_NAME);
            let name = any(&mut reader)?;
            if is_dns && name_matches(name.value(), host.as_bytes()) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// RFC 6125 6.4: case-insensitive, a `*` only as the whole leftmost label,
/// matching exactly one label.
fn name_matches(pattern: &[u8], host: &[u8]) -> bool {
    if let Some(suffix) = pattern.strip_prefix(b"*.") {
        let Some(dot) = host.iter().position(|&b| b == b'.') else {
            return false;
        };
        let (first, rest) = host.split_at(dot);
        return !first.is_empty()
            && rest
                .get(1..)
                .is_some_and(|r| r.eq_ignore_ascii_case(suffix));
    }
    pattern.eq_ignore_ascii_case(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_one_label() {
        assert!(name_matches(b"relay.example.com", b"Relay.Example.com"));
        assert!(name_matches(b"*.example.com", b"relay.example.com"));
        assert!(!name_matches(b"*.example.com", b"a.relay.example.com"));
        assert!(!name_matches(b"*.example.com", b"example.com"));
        assert!(!name_matches(b"*.example.com", b".example.com"));
        assert!(!name_matches(b"relay.example.com", b"relay.example.org"));
    }

    /// A P-256 certificate for `relay.example.com` and `*.relay.example.com`
    /// (openssl), valid 30 days: the fuzz seed.
    const CERTIFICATE: &[u8] =
        include_bytes!("../../../../fuzz/seeds/esp32_certificate/p256-san.der");

    #[test]
    fn reads_validity_and_names() {
        let facts = parse(CERTIFICATE).unwrap();
        assert_eq!(
            facts.validity.not_after - facts.validity.not_before,
            30 * 86_400
        );
        assert!(facts.matches_host("relay.example.com").unwrap());
        assert!(facts.matches_host("api.relay.example.com").unwrap());
        assert!(!facts.matches_host("relay.example.org").unwrap());
    }

    proptest::proptest! {
        /// Any change to a real certificate, and any prefix of it, gives a
        /// result or `Malformed`, never a panic.
        #[test]
        fn mutated_certificates_never_panic(
            at in 0..CERTIFICATE.len(),
            byte in proptest::num::u8::ANY,
            cut in 0..=CERTIFICATE.len(),
        ) {
            let mut bytes = CERTIFICATE.to_vec();
            bytes[at] = byte;
            bytes.truncate(cut);
            if let Ok(facts) = parse(&bytes) {
                let _ = facts.matches_host("relay.example.com");
            }
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            if let Ok(facts) = parse(&bytes) {
                let _ = facts.matches_host("relay.example.com");
            }
        }
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        assert_eq!(parse(&[]).err(), Some(Malformed));
        assert_eq!(parse(&[0x30, 0x82, 0xFF]).err(), Some(Malformed));
        assert_eq!(parse(&[0x30, 0x00]).err(), Some(Malformed));
        // Every prefix of a nested structure.
        let nested = [0x30, 0x06, 0x30, 0x04, 0x02, 0x01, 0x01, 0x05];
        for end in 0..nested.len() {
            assert!(parse(&nested[..end]).is_err());
        }
    }
}
