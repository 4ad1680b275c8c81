//! The client's HTTP response head scan: status line and header lines, on
//! bytes, in one pass, with no header array.
//!
//! It accepts, refuses and measures exactly what `httparse::Response::parse`
//! does with its default configuration (the server role keeps httparse for
//! requests); it exists because it is a few hundred bytes of code on the
//! device against httparse's 1.7 KB. The tests below and the fuzz target
//! `ws_handshake_response` hold it to httparse on arbitrary and on mutated
//! responses: the same `Partial`, the same length, the same error kind, the
//! same version, status code and headers.

use crate::ws::Status;

/// Why a response head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeadError {
    /// More header lines than the caller allows.
    TooManyHeaders,
    /// Anything else: not HTTP/1.x, a bad status line, a byte a header
    /// name or value may not hold, a lone CR.
    Malformed,
}

/// A complete status line and header block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    /// The minor version: `0` for HTTP/1.0, `1` for HTTP/1.1.
    pub(crate) version: u8,
    /// The three-digit status code.
    pub(crate) code: u16,
    /// Bytes of the head, the empty line included.
    pub(crate) len: usize,
}

/// Bytes of a `token` (RFC 9110 5.6.2): header names. A `match` on
/// ranges, not `<[u8]>::contains` on the fifteen symbols, which linked
/// `core`'s word-at-a-time `memchr` (182 B against some 60 on the
/// ESP32-C3).
pub(super) fn is_token_byte(b: u8) -> bool {
    matches!(
        b,
        b'0'..=b'9'
            | b'A'..=b'Z'
            | b'^'..=b'z'
            | b'!'
            | b'#'..=b'\''
            | b'*'
            | b'+'
            | b'-'
            | b'.'
            | b'|'
            | b'~'
    )
}

/// Bytes of a reason phrase or header value other than spaces: visible
/// ASCII and obs-text.
fn is_text_byte(b: u8) -> bool {
    (0x21..0x7F).contains(&b) || b >= 0x80
}

/// Scans the response head at the start of `buf`, calling `header(name,
/// value)` for each header line in order (the value without the spaces
/// around it). `Partial` means `buf` is a prefix of a head that may still
/// be valid; more than `max_headers` header lines is
/// [`HeadError::TooManyHeaders`].
///
/// The end of `buf` reads as a NUL byte, which no place in a head allows:
/// the scan fails on it like on any bad byte, and a failure after the end
/// was read is `Partial` (one check at the exit instead of an end-of-input
/// branch after every byte: 0.3 KB less on the ESP32-C3).
#[inline(never)]
pub(crate) fn parse_response<'b>(
    buf: &'b [u8],
    max_headers: usize,
    header: &mut dyn FnMut(&'b [u8], &'b [u8]),
) -> Result<Status<Head>, HeadError> {
    let mut cursor = Cursor { buf, at: 0 };
    match scan(&mut cursor, max_headers, header) {
        Ok(head) => Ok(Status::Complete(head)),
        Err(HeadError::Malformed) if cursor.at > buf.len() => Ok(Status::Partial),
        Err(e) => Err(e),
    }
}

/// The bytes of a head and the position after the last one read.
struct Cursor<'b> {
    buf: &'b [u8],
    at: usize,
}

impl Cursor<'_> {
    /// The next byte; NUL past the end of the buffer (read once: the scan
    /// fails on it, so `at` stays at most `buf.len() + 1`). Out of line:
    /// one call per byte class is smaller than the load inlined.
    #[inline(never)]
    fn next(&mut self) -> u8 {
        let b = self.buf.get(self.at).copied().unwrap_or(0);
        self.at = self.at.wrapping_add(1);
        b
    }

    /// The LF after a CR.
    fn lf(&mut self) -> Result<(), HeadError> {
        if self.next() == b'\n' {
            Ok(())
        } else {
            Err(HeadError::Malformed)
        }
    }

    /// The end of a line whose last byte read is `b`: CRLF or a bare LF.
    fn line_end(&mut self, b: u8) -> Result<(), HeadError> {
        match b {
            b'\r' => self.lf(),
            b'\n' => Ok(()),
            _ => Err(HeadError::Malformed),
        }
    }
}

/// [`parse_response`] without the end of the buffer: `Malformed` may be
/// the NUL read past it.
fn scan<'b>(
    c: &mut Cursor<'b>,
    max_headers: usize,
    header: &mut dyn FnMut(&'b [u8], &'b [u8]),
) -> Result<Head, HeadError> {
    // Empty lines before the status line are skipped.
    let mut b = c.next();
    while b == b'\r' || b == b'\n' {
        if b == b'\r' {
            c.lf()?;
        }
        b = c.next();
    }
    // `HTTP/1.0` or `HTTP/1.1`, a space, three digits.
    for want in *b"HTTP/1." {
        if b != want {
            return Err(HeadError::Malformed);
        }
        b = c.next();
    }
    let version = b.wrapping_sub(b'0');
    if version > 1 || c.next() != b' ' {
        return Err(HeadError::Malformed);
    }
    let mut code = 0u16;
    for _ in 0..3 {
        let digit = c.next().wrapping_sub(b'0');
        if digit > 9 {
            return Err(HeadError::Malformed);
        }
        // Three digits: at most 999.
        code = code * 10 + u16::from(digit);
    }
    // An optional reason phrase after a space, then the line's end.
    b = c.next();
    if b == b' ' {
        b = c.next();
        while b == b'\t' || b == b' ' || is_text_byte(b) {
            b = c.next();
        }
    }
    c.line_end(b)?;
    // Header lines up to the empty line.
    let mut count = 0;
    loop {
        let start = c.at;
        b = c.next();
        if b == b'\r' || b == b'\n' {
            c.line_end(b)?;
            break;
        }
        while is_token_byte(b) {
            b = c.next();
        }
        let name_end = c.at.saturating_sub(1);
        if b != b':' || name_end == start {
            return Err(HeadError::Malformed);
        }
        b = c.next();
        while b == b' ' || b == b'\t' {
            b = c.next();
        }
        let value_start = c.at.saturating_sub(1);
        let mut value_end = value_start;
        while b == b'\t' || b == b' ' || is_text_byte(b) {
            if b != b' ' && b != b'\t' {
                value_end = c.at;
            }
            b = c.next();
        }
        c.line_end(b)?;
        if count == max_headers {
            return Err(HeadError::TooManyHeaders);
        }
        count += 1;
        let name = c.buf.get(start..name_end).unwrap_or_default();
        let value = c.buf.get(value_start..value_end).unwrap_or_default();
        header(name, value);
    }
    Ok(Head {
        version,
        code,
        len: c.at,
    })
}

#[cfg(test)]
#[allow(clippy::std_instead_of_alloc, clippy::std_instead_of_core)]
mod tests {
    extern crate std;

    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    use super::*;

    const MAX: usize = 4;

    /// A parser's verdict and, when complete, the (name, value) pairs.
    type Verdict = (Result<Status<Head>, HeadError>, Vec<(Vec<u8>, Vec<u8>)>);

    /// What httparse (the oracle) makes of `buf`, in this module's terms.
    fn oracle(buf: &[u8]) -> Verdict {
        let mut headers = [httparse::EMPTY_HEADER; MAX];
        let mut response = httparse::Response::new(&mut headers);
        let result = match response.parse(buf) {
            Ok(httparse::Status::Partial) => Ok(Status::Partial),
            Ok(httparse::Status::Complete(len)) => Ok(Status::Complete(Head {
                version: response.version.unwrap_or(9),
                code: response.code.unwrap_or(0),
                len,
            })),
            Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooManyHeaders),
            Err(_) => Err(HeadError::Malformed),
        };
        let headers = match result {
            Ok(Status::Complete(_)) => response
                .headers
                .iter()
                .map(|h| (h.name.as_bytes().to_vec(), h.value.to_vec()))
                .collect(),
            _ => Vec::new(),
        };
        (result, headers)
    }

    fn ours(buf: &[u8]) -> Verdict {
        let mut headers = Vec::new();
        let result = parse_response(buf, MAX, &mut |name, value| {
            headers.push((name.to_vec(), value.to_vec()));
        });
        if !matches!(result, Ok(Status::Complete(_))) {
            headers.clear();
        }
        (result, headers)
    }

    fn same_as_httparse(buf: &[u8]) {
        assert_eq!(ours(buf), oracle(buf), "on \"{}\"", buf.escape_ascii());
    }

    #[test]
    fn token_bytes_are_rfc_9110s() {
        for b in 0..=u8::MAX {
            let rfc = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            assert_eq!(is_token_byte(b), rfc, "byte {b:#04x}");
        }
    }

    #[test]
    fn agrees_with_httparse_on_examples() {
        for example in [
            &b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"[..],
            b"\r\n\nHTTP/1.0 200\nA:\n\n",
            b"HTTP/1.1 101 \r\nA: \t x \t\r\nB:y\r\n\r\nrest",
            b"HTTP/1.1 101\r\n\r\n",
            b"HTTP/1.1 101 ok\x80\xff\r\nX: \x80v\r\n\r\n",
            b"HTTP/1.2 101\r\n\r\n",
            b"HTTP/1.1 10\r\n\r\n",
            b"HTTP/1.1 1011\r\n\r\n",
            b"HTTP/1.1  101\r\n\r\n",
            b"HTTP/1.1 101 x\ry",
            b"HTTP/1.1 101\r\nA : b\r\n\r\n",
            b"HTTP/1.1 101\r\n: b\r\n\r\n",
            b"HTTP/1.1 101\r\n A: b\r\n\r\n",
            b"HTTP/1.1 101\r\nA: b\x7f\r\n\r\n",
            b"HTTP/1.1 101\r\nA: b\r\n c\r\n\r\n",
            b"HTTP/1.1 101\r\nA:1\r\nB:2\r\nC:3\r\nD:4\r\n\r\n",
            b"HTTP/1.1 101\r\nA:1\r\nB:2\r\nC:3\r\nD:4\r\nE:5\r\n\r\n",
            b"HTTP/1.1 101\r\nA:1\r\nB:2\r\nC:3\r\nD:4\r\nE:5",
            b"\r\r",
            b"",
            b"H",
            b"HTTP/1.",
            b"HTTX",
        ] {
            same_as_httparse(example);
            for cut in 0..example.len() {
                same_as_httparse(&example[..cut]);
            }
        }
    }

    /// A byte that is often meaningful to the grammar.
    fn grammar_byte() -> BoxedStrategy<u8> {
        prop_oneof![
            Just(b'\r'),
            Just(b'\n'),
            Just(b' '),
            Just(b'\t'),
            Just(b':'),
            Just(0x7F),
            Just(0x00),
            Just(0x80),
            Just(0xFF),
            Just(b'a'),
            Just(b'1'),
            any::<u8>(),
        ]
        .boxed()
    }

    /// Responses built from plausible pieces, then cut and mutated.
    fn response() -> impl Strategy<Value = Vec<u8>> {
        let line_end = prop_oneof![Just(&b"\r\n"[..]), Just(&b"\n"[..]), Just(&b"\r"[..])];
        let text = proptest::collection::vec(grammar_byte(), 0..8);
        let header = (
            prop_oneof![
                Just(b"Upgrade".to_vec()),
                Just(b"sec-websocket-accept".to_vec()),
                proptest::collection::vec(grammar_byte(), 0..6)
            ],
            prop_oneof![Just(&b":"[..]), Just(&b": "[..]), Just(&b" :"[..])],
            text.clone(),
            line_end.clone(),
        );
        (
            proptest::collection::vec(line_end.clone(), 0..2),
            prop_oneof![
                Just(b"HTTP/1.1 ".to_vec()),
                Just(b"HTTP/1.0 ".to_vec()),
                proptest::collection::vec(grammar_byte(), 0..9)
            ],
            proptest::collection::vec(grammar_byte(), 0..5),
            text,
            line_end.clone(),
            proptest::collection::vec(header, 0..7),
            line_end,
            proptest::collection::vec(any::<u8>(), 0..4),
            any::<prop::sample::Index>(),
            proptest::collection::vec((any::<prop::sample::Index>(), grammar_byte()), 0..3),
        )
            .prop_map(
                |(empty, version, code, reason, end, headers, last, rest, cut, flips)| {
                    let mut out = Vec::new();
                    for line in empty {
                        out.extend_from_slice(line);
                    }
                    out.extend(version);
                    out.extend(code);
                    out.push(b' ');
                    out.extend(reason);
                    out.extend_from_slice(end);
                    for (name, colon, value, end) in headers {
                        out.extend(name);
                        out.extend_from_slice(colon);
                        out.extend(value);
                        out.extend_from_slice(end);
                    }
                    out.extend_from_slice(last);
                    out.extend(rest);
                    if !out.is_empty() {
                        for (at, byte) in flips {
                            let at = at.index(out.len());
                            out[at] = byte;
                        }
                        let len = cut.index(out.len() + 1);
                        out.truncate(len.max(out.len() / 2));
                    }
                    out
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn agrees_with_httparse_on_built_responses(buf in response()) {
            same_as_httparse(&buf);
        }

        #[test]
        fn agrees_with_httparse_on_arbitrary_bytes(
            buf in proptest::collection::vec(grammar_byte(), 0..64)
        ) {
            same_as_httparse(&buf);
        }

        #[test]
        fn agrees_with_httparse_after_a_valid_status_line(
            buf in proptest::collection::vec(grammar_byte(), 0..64)
        ) {
            let mut full = b"HTTP/1.1 101 Switching Protocols\r\n".to_vec();
            full.extend(buf);
            same_as_httparse(&full);
        }
    }
}
