//! The captive-portal DNS responder (RFC 1035): every `A` question gets the
//! access point's address, so whatever name a phone looks up (its
//! connectivity check first) leads to the portal.
//!
//! | query                                   | answer                              |
//! |-----------------------------------------|-------------------------------------|
//! | standard query, one question, `A`/`ANY`, class `IN` | `NOERROR`, one `A` record: the AP address |
//! | standard query, other type (`AAAA`, ...) | `NOERROR`, no answers (NODATA)     |
//! | opcode other than QUERY                 | `NOTIMP`                            |
//! | no question, several questions, broken name, truncated | `FORMERR` (header only)  |
//! | shorter than a header, or a response (`QR` set) | dropped ([`DnsError`])     |
//!
//! ```
//! use tether_core::provisioning::dns::{respond, Rcode};
//!
//! // ID 0x1234, RD, one question: connectivitycheck.gstatic.com A IN
//! let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
//! for label in ["connectivitycheck", "gstatic", "com"] {
//!     query.push(label.len() as u8);
//!     query.extend_from_slice(label.as_bytes());
//! }
//! query.extend_from_slice(&[0, 0, 1, 0, 1]);
//! let mut out = [0u8; 512];
//! let reply = respond(&query, [192, 168, 4, 1], 60, &mut out)?;
//! assert_eq!(reply.rcode, Rcode::NoError);
//! assert_eq!(&out[reply.len - 4..reply.len], &[192, 168, 4, 1]);
//! # Ok::<(), tether_core::provisioning::dns::DnsError>(())
//! ```

use core::fmt;

/// Length of the fixed DNS header.
pub const HEADER_LEN: usize = 12;
/// Longest encoded name (RFC 1035 2.3.4).
pub const MAX_NAME_LEN: usize = 255;
/// Record type `A`.
pub const TYPE_A: u16 = 1;
/// Record type `AAAA`.
pub const TYPE_AAAA: u16 = 28;
/// Query type `ANY` (`*`).
pub const TYPE_ANY: u16 = 255;
/// Class `IN`.
pub const CLASS_IN: u16 = 1;

/// Why a datagram gets no reply at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum DnsError {
    /// Shorter than a DNS header: nothing to reply to.
    Truncated,
    /// The `QR` bit is set: a response, never answered (no loops).
    NotAQuery,
    /// The caller's buffer cannot hold the reply.
    BufferTooSmall,
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Truncated => "datagram shorter than a DNS header",
            Self::NotAQuery => "datagram is a DNS response, not a query",
            Self::BufferTooSmall => "reply does not fit the output buffer",
        })
    }
}

impl core::error::Error for DnsError {}

/// Response codes this responder sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Rcode {
    /// 0: answered (possibly with no records).
    NoError,
    /// 1: the query could not be parsed.
    FormatError,
    /// 4: an opcode other than QUERY.
    NotImplemented,
}

impl Rcode {
    /// The 4-bit wire value.
    pub const fn value(self) -> u8 {
        match self {
            Self::NoError => 0,
            Self::FormatError => 1,
            Self::NotImplemented => 4,
        }
    }
}

/// Why a query is malformed (sent back as `FORMERR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum QueryError {
    /// `QDCOUNT` is not 1.
    QuestionCount,
    /// The name runs past the end, uses a compression pointer or a reserved
    /// label type, or is longer than 255 bytes.
    BadName,
    /// The question ends before its type and class.
    Truncated,
}

/// A checked view of a standard query with one question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query<'a> {
    /// Transaction id.
    pub id: u16,
    /// Recursion desired (copied to the reply).
    pub recursion_desired: bool,
    /// The question name in wire form (length-prefixed labels, ending in 0).
    pub name: &'a [u8],
    /// Question type.
    pub qtype: u16,
    /// Question class.
    pub qclass: u16,
    /// The whole question section (name, type, class) as received.
    pub question: &'a [u8],
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]))
}

impl<'a> Query<'a> {
    /// Parses the header and the one question. Answer, authority and
    /// additional sections (an EDNS `OPT` record, say) are ignored.
    pub fn parse(datagram: &'a [u8]) -> Result<Self, QueryError> {
        let id = be16(datagram, 0).ok_or(QueryError::Truncated)?;
        let flags = be16(datagram, 2).ok_or(QueryError::Truncated)?;
        if be16(datagram, 4) != Some(1) {
            return Err(QueryError::QuestionCount);
        }
        let rest = datagram.get(HEADER_LEN..).ok_or(QueryError::Truncated)?;
        let name_len = name_len(rest)?;
        let name = rest.get(..name_len).ok_or(QueryError::BadName)?;
        let qtype = be16(rest, name_len).ok_or(QueryError::Truncated)?;
        let qclass = be16(rest, name_len + 2).ok_or(QueryError::Truncated)?;
        let question = rest.get(..name_len + 4).ok_or(QueryError::Truncated)?;
        Ok(Self {
            id,
            recursion_desired: flags & 0x0100 != 0,
            name,
            qtype,
            qclass,
            question,
        })
    }

    /// The name's labels, e.g. `["connectivitycheck", "gstatic", "com"]`.
    pub fn labels(&self) -> Labels<'a> {
        Labels { rest: self.name }
    }
}

/// Iterator over the labels of a wire-form name.
#[derive(Debug, Clone)]
pub struct Labels<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Labels<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let (&len, rest) = self.rest.split_first()?;
        let len = usize::from(len);
        if len == 0 || rest.len() < len {
            self.rest = &[];
            return None;
        }
        let (label, rest) = rest.split_at(len);
        self.rest = rest;
        Some(label)
    }
}

/// Length of the uncompressed name at the start of `bytes`, with its final
/// zero byte. Queries never need compression pointers in the question.
fn name_len(bytes: &[u8]) -> Result<usize, QueryError> {
    let mut at = 0usize;
    loop {
        let len = usize::from(*bytes.get(at).ok_or(QueryError::BadName)?);
        if len & 0xc0 != 0 {
            return Err(QueryError::BadName);
        }
        at += 1 + len;
        if at > MAX_NAME_LEN {
            return Err(QueryError::BadName);
        }
        if len == 0 {
            return Ok(at);
        }
    }
}

/// What [`respond`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// Bytes written to the output buffer.
    pub len: usize,
    /// The response code sent.
    pub rcode: Rcode,
    /// Answer records (0 or 1).
    pub answers: u16,
}

/// Writes the reply to `datagram` into `out`: see the module table.
/// `ttl` is the answer's time to live in seconds (keep it short so phones
/// forget the fake answers once they leave the portal).
pub fn respond(
    datagram: &[u8],
    address: [u8; 4],
    ttl: u32,
    out: &mut [u8],
) -> Result<Reply, DnsError> {
    let header = datagram.get(..HEADER_LEN).ok_or(DnsError::Truncated)?;
    let id = be16(header, 0).ok_or(DnsError::Truncated)?;
    let flags = be16(header, 2).ok_or(DnsError::Truncated)?;
    if flags & 0x8000 != 0 {
        return Err(DnsError::NotAQuery);
    }
    let opcode = (flags >> 11) & 0x0f;
    let rd = flags & 0x0100;
    let error_reply = |rcode: Rcode, out: &mut [u8]| -> Result<Reply, DnsError> {
        let reply_flags = 0x8000 | (opcode << 11) | rd | u16::from(rcode.value());
        let mut w = Writer { out, len: 0 };
        w.u16(id)?;
        w.u16(reply_flags)?;
        w.put(&[0; 8])?;
        Ok(Reply {
            len: w.len,
            rcode,
            answers: 0,
        })
    };
    if opcode != 0 {
        return error_reply(Rcode::NotImplemented, out);
    }
    let query = match Query::parse(datagram) {
        Ok(query) => query,
        Err(e) => {
            debug!("dns: FORMERR for query {}: {:?}", id, e);
            return error_reply(Rcode::FormatError, out);
        }
    };
    let answer = query.qclass == CLASS_IN && matches!(query.qtype, TYPE_A | TYPE_ANY);
    let answers = u16::from(answer);
    // QR, AA, copied RD; RA clear (we do not recurse).
    let reply_flags = 0x8000 | 0x0400 | rd;
    let mut w = Writer { out, len: 0 };
    w.u16(id)?;
    w.u16(reply_flags)?;
    w.u16(1)?;
    w.u16(answers)?;
    w.u16(0)?;
    w.u16(0)?;
    w.put(query.question)?;
    if answer {
        // Name: pointer to the question name at offset 12.
        w.u16(0xc000 | HEADER_LEN as u16)?;
        w.u16(TYPE_A)?;
        w.u16(CLASS_IN)?;
        w.put(&ttl.to_be_bytes())?;
        w.u16(4)?;
        w.put(&address)?;
    }
    trace!("dns: query {} type {} answered={}", id, query.qtype, answer);
    Ok(Reply {
        len: w.len,
        rcode: Rcode::NoError,
        answers,
    })
}

struct Writer<'a> {
    out: &'a mut [u8],
    len: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), DnsError> {
        let end = self.len + bytes.len();
        self.out
            .get_mut(self.len..end)
            .ok_or(DnsError::BufferTooSmall)?
            .copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    fn u16(&mut self, value: u16) -> Result<(), DnsError> {
        self.put(&value.to_be_bytes())
    }
}

#[cfg(test)]
mod tests {
    extern crate alloc;

    use alloc::vec::Vec;

    use proptest::prelude::*;

    use super::*;

    const AP: [u8; 4] = [192, 168, 4, 1];

    fn query(id: u16, flags: u16, labels: &[&[u8]], qtype: u16, qclass: u16) -> Vec<u8> {
        let mut q = Vec::new();
        q.extend_from_slice(&id.to_be_bytes());
        q.extend_from_slice(&flags.to_be_bytes());
        q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        for label in labels {
            q.push(label.len() as u8);
            q.extend_from_slice(label);
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&qclass.to_be_bytes());
        q
    }

    #[test]
    fn answers_a_with_the_ap_address() {
        let q = query(
            0xbeef,
            0x0100,
            &[b"captive", b"apple", b"com"],
            TYPE_A,
            CLASS_IN,
        );
        let mut out = [0u8; 512];
        let reply = respond(&q, AP, 60, &mut out).unwrap();
        assert_eq!(reply.rcode, Rcode::NoError);
        assert_eq!(reply.answers, 1);
        let r = &out[..reply.len];
        assert_eq!(&r[..2], &[0xbe, 0xef]);
        assert_eq!(be16(r, 2), Some(0x8500)); // QR AA RD, NOERROR
        assert_eq!(&r[4..12], &[0, 1, 0, 1, 0, 0, 0, 0]);
        assert_eq!(&r[12..q.len()], &q[12..]);
        let answer = &r[q.len()..];
        assert_eq!(
            answer,
            &[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 168, 4, 1]
        );
        let parsed = Query::parse(&q).unwrap();
        let labels: Vec<&[u8]> = parsed.labels().collect();
        assert_eq!(labels, [&b"captive"[..], b"apple", b"com"]);
    }

    #[test]
    fn aaaa_gets_nodata_and_other_opcodes_notimp() {
        let mut out = [0u8; 512];
        let q = query(1, 0x0100, &[b"example", b"com"], TYPE_AAAA, CLASS_IN);
        let reply = respond(&q, AP, 60, &mut out).unwrap();
        assert_eq!(
            (reply.rcode, reply.answers, reply.len),
            (Rcode::NoError, 0, q.len())
        );
        let q = query(2, 0x2000, &[b"x"], TYPE_A, CLASS_IN); // opcode 4 NOTIFY
        let reply = respond(&q, AP, 60, &mut out).unwrap();
        assert_eq!(
            (reply.rcode, reply.len),
            (Rcode::NotImplemented, HEADER_LEN)
        );
        assert_eq!(out[3] & 0x0f, 4);
    }

    #[test]
    fn malformed_queries_get_formerr_or_nothing() {
        let mut out = [0u8; 512];
        let good = query(7, 0, &[b"a"], TYPE_A, CLASS_IN);
        for bad in [
            good[..good.len() - 1].to_vec(),                   // truncated class
            good[..14].to_vec(),                               // name runs off the end
            [&good[..4], &[0, 2], &good[6..]].concat(),        // two questions
            [&good[..4], &[0, 0], &good[6..]].concat(),        // no question
            [&good[..12], &[0xc0, 0x0c, 0, 1, 0, 1]].concat(), // pointer
            [&good[..12], &[0x41, b'a', 0, 0, 1, 0, 1]].concat(), // reserved label type
        ] {
            let reply = respond(&bad, AP, 60, &mut out).unwrap();
            assert_eq!(reply.rcode, Rcode::FormatError, "{bad:?}");
            assert_eq!(reply.len, HEADER_LEN);
            assert_eq!(&out[..2], &[0, 7]);
        }
        let long_name: Vec<&[u8]> = core::iter::repeat_n(&[b'a'; 63][..], 4).collect();
        let q = query(7, 0, &long_name, TYPE_A, CLASS_IN);
        assert_eq!(
            respond(&q, AP, 60, &mut out).unwrap().rcode,
            Rcode::FormatError
        );
        assert_eq!(
            respond(&good[..11], AP, 60, &mut out),
            Err(DnsError::Truncated)
        );
        let response = query(7, 0x8000, &[b"a"], TYPE_A, CLASS_IN);
        assert_eq!(
            respond(&response, AP, 60, &mut out),
            Err(DnsError::NotAQuery)
        );
        assert_eq!(
            respond(&good, AP, 60, &mut out[..good.len()]),
            Err(DnsError::BufferTooSmall)
        );
    }

    #[test]
    fn edns_additional_record_is_ignored() {
        let mut q = query(9, 0x0100, &[b"neverssl", b"com"], TYPE_A, CLASS_IN);
        q[11] = 1; // ARCOUNT
        q.extend_from_slice(&[0, 0, 41, 4, 208, 0, 0, 0, 0, 0, 0]);
        let mut out = [0u8; 512];
        let reply = respond(&q, AP, 60, &mut out).unwrap();
        assert_eq!((reply.rcode, reply.answers), (Rcode::NoError, 1));
        assert_eq!(out[11], 0, "no additional records in the reply");
    }

    proptest! {
        #[test]
        fn prop_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600), cap in 0usize..600) {
            let mut out = alloc::vec![0u8; cap];
            if let Ok(reply) = respond(&bytes, AP, 60, &mut out) {
                prop_assert!(reply.len <= cap);
                prop_assert_eq!(&out[..2], &bytes[..2]);
            }
        }

        #[test]
        fn prop_parse_matches_builder(
            labels in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..63), 0..4),
            qtype in any::<u16>(),
            id in any::<u16>(),
        ) {
            let refs: Vec<&[u8]> = labels.iter().map(Vec::as_slice).collect();
            let q = query(id, 0x0100, &refs, qtype, CLASS_IN);
            let parsed = Query::parse(&q).unwrap();
            prop_assert_eq!(parsed.id, id);
            prop_assert_eq!(parsed.qtype, qtype);
            prop_assert_eq!(parsed.labels().collect::<Vec<_>>(), refs);
            let mut out = [0u8; 512];
            let reply = respond(&q, AP, 30, &mut out).unwrap();
            let answered = qtype == TYPE_A || qtype == TYPE_ANY;
            prop_assert_eq!(reply.answers, u16::from(answered));
            if answered {
                prop_assert_eq!(&out[reply.len - 4..reply.len], &AP);
            }
        }
    }
}
