//! The ESP-AT response parser: bytes from the modem in, one [`Event`] at a
//! time out. Sans-IO, no allocation, and the input may be split anywhere.
//!
//! ```text
//!  serial bytes ──► Parser::parse(&input) ──► (consumed, Some(Event))
//!                     │ line buffer (LINE bytes)       OK / ERROR / SEND OK / SEND FAIL
//!                     │ binary countdown               busy p... / ERR CODE:0x..
//!                     ▼                                ready / WIFI ... / <id>,CONNECT|CLOSED
//!               "+CIPRECVDATA:5," then 5 raw bytes     +IPD,<id>,<len>  (passive notice)
//!               "+IPD,0,5:" then 5 raw bytes           RecvData{..} then Data(&[u8])..
//! ```
//!
//! ESP-AT frames almost everything as `\r\n`-terminated text lines, with
//! two exceptions the parser must know about, because they carry binary
//! payloads that may contain `\r\n`, `OK` or anything else:
//!
//! - `+CIPRECVDATA:<actual_len>,[<"remote IP">,<remote port>,]<data>`, the
//!   answer to `AT+CIPRECVDATA` in passive receive mode, and
//! - `+IPD,<link ID>,<len>[,<"remote IP">,<remote port>]:<data>` in active
//!   receive mode (which this driver never enables, but a modem that reset
//!   itself starts in it, so its data must be skipped, not misparsed).
//!
//! Once such a header is complete the parser counts the payload bytes down
//! and hands them out as [`Event::Data`] slices of the input (no copy).
//! The `>` prompt of `AT+CIPSEND` comes without a line end and is reported
//! as soon as it starts a line.
//!
//! A line longer than the line buffer is skipped up to its end and
//! reported as [`Event::LineTooLong`]; the parser never panics and never
//! needs more memory than its line buffer.
//!
//! ```
//! use tether_esp8266::parse::{Event, Parser};
//!
//! let mut parser = Parser::<128>::new();
//! parser.set_remote_info(false);
//! let mut input: &[u8] = b"+IPD,0,5\r\n+CIPRECVDATA:5,a\r\nOK\r\nOK\r\n";
//! let mut events = Vec::new();
//! loop {
//!     let (used, event) = parser.parse(input);
//!     input = &input[used..];
//!     match event {
//!         Some(Event::Data(bytes)) => events.push(format!("data {:?}", bytes)),
//!         Some(event) => events.push(format!("{event:?}")),
//!         None if input.is_empty() => break,
//!         None => {}
//!     }
//! }
//! assert_eq!(events, [
//!     "Ipd { link: 0, len: 5 }",
//!     "RecvData { len: 5, remote: None }",
//!     "data [97, 13, 10, 79, 75]", // the payload is "a\r\nOK"
//!     "Ok",
//! ]);
//! ```

use core::fmt;

/// Most links ESP-AT multiplexes (`<link ID>` 0 to 4).
pub const MAX_LINKS: usize = 5;

/// The remote end of a datagram or connection, as ESP-AT reports it with
/// `AT+CIPDINFO=1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Remote {
    /// IPv4 address.
    pub ip: [u8; 4],
    /// Port.
    pub port: u16,
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.ip;
        write!(f, "{a}.{b}.{c}.{d}:{}", self.port)
    }
}

/// One thing the modem said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Event<'a> {
    /// `OK`: the command finished.
    Ok,
    /// `ERROR`: the command failed.
    Error,
    /// `ERR CODE:0x<code>` (with `AT+SYSLOG=1`), just before `ERROR`.
    ErrCode(u32),
    /// `busy p...` or `busy s...`: the modem is still processing and
    /// dropped the command just sent.
    Busy,
    /// `SEND OK`: the data of `AT+CIPSEND` went to the modem's TCP/IP stack.
    SendOk,
    /// `SEND FAIL`: it did not.
    SendFail,
    /// `Recv <n> bytes`: the modem took `n` bytes of `AT+CIPSEND` data.
    Received(u32),
    /// The `>` prompt: the modem waits for `AT+CIPSEND` data.
    Prompt,
    /// `ready`: the firmware (re)started.
    Ready,
    /// `WIFI CONNECTED`.
    WifiConnected,
    /// `WIFI GOT IP`.
    WifiGotIp,
    /// `WIFI DISCONNECT`.
    WifiDisconnect,
    /// `<link ID>,CONNECT` (or `CONNECT` in single-connection mode).
    Connect(u8),
    /// `<link ID>,CLOSED` (or `CLOSED`).
    Closed(u8),
    /// `+IPD,<link ID>,<len>` in passive receive mode: `len` bytes wait in
    /// the modem for `AT+CIPRECVDATA`.
    Ipd {
        /// The link.
        link: u8,
        /// Bytes buffered in the modem for it.
        len: u32,
    },
    /// The header of an `AT+CIPRECVDATA` answer: `len` bytes of
    /// [`Event::Data`] follow.
    RecvData {
        /// Bytes that follow.
        len: u32,
        /// The sender, with `AT+CIPDINFO=1`.
        remote: Option<Remote>,
    },
    /// An active-mode `+IPD` header: `len` bytes of [`Event::Data`] follow.
    IpdData {
        /// The link.
        link: u8,
        /// Bytes that follow.
        len: u32,
        /// The sender, with `AT+CIPDINFO=1`.
        remote: Option<Remote>,
    },
    /// Payload bytes of the last [`Event::RecvData`] or [`Event::IpdData`].
    Data(&'a [u8]),
    /// Any other `+<name>:...` line (the information of a command's answer:
    /// `+CWJAP:2`, `+CIPRECVLEN:...`, `+CWLAP:(...)`, ...).
    Info(&'a [u8]),
    /// The echo of a command (`ATE1`, the firmware's default after a reset).
    Echo(&'a [u8]),
    /// A line this parser has no meaning for (boot messages, `ALREADY
    /// CONNECTED`, ...).
    Other(&'a [u8]),
    /// A line longer than the line buffer; it was skipped.
    LineTooLong,
}

/// The incremental parser. `LINE` bounds the longest text line kept
/// (256 is plenty for every answer this driver uses).
#[derive(Clone)]
pub struct Parser<const LINE: usize = 256> {
    line: [u8; LINE],
    len: usize,
    /// The line is longer than the buffer: skip to its end.
    overflow: bool,
    /// The last event borrowed the line buffer: clear it on the next call.
    consumed_line: bool,
    /// Payload bytes still to hand out as [`Event::Data`].
    data_remaining: u32,
    /// `AT+CIPDINFO=1`: `+CIPRECVDATA` carries the sender.
    remote_info: bool,
}

impl<const LINE: usize> fmt::Debug for Parser<LINE> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Parser")
            .field("buffered", &self.len)
            .field("data_remaining", &self.data_remaining)
            .field("remote_info", &self.remote_info)
            .finish()
    }
}

impl<const LINE: usize> Default for Parser<LINE> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const LINE: usize> Parser<LINE> {
    /// A parser at the start of a line, expecting `AT+CIPDINFO=1` answers.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            line: [0; LINE],
            len: 0,
            overflow: false,
            consumed_line: false,
            data_remaining: 0,
            remote_info: true,
        }
    }

    /// Whether `+CIPRECVDATA` answers carry the sender (`AT+CIPDINFO=1`,
    /// which the driver sets; a modem that reset forgets it).
    pub fn set_remote_info(&mut self, on: bool) {
        self.remote_info = on;
    }

    /// Forgets everything buffered (after a hardware reset).
    pub fn reset(&mut self) {
        self.len = 0;
        self.overflow = false;
        self.consumed_line = false;
        self.data_remaining = 0;
    }

    /// Payload bytes still expected.
    #[must_use]
    pub const fn data_remaining(&self) -> u32 {
        self.data_remaining
    }

    /// Parses from the start of `input`: returns how many bytes were used
    /// and the event they completed, if any. Call again with the rest; a
    /// `None` with every byte used means "need more input", never an error.
    pub fn parse<'a>(&'a mut self, input: &'a [u8]) -> (usize, Option<Event<'a>>) {
        if self.consumed_line {
            self.consumed_line = false;
            self.len = 0;
        }
        if self.data_remaining > 0 {
            let wanted = usize::try_from(self.data_remaining).unwrap_or(usize::MAX);
            let n = wanted.min(input.len());
            if n == 0 {
                return (0, None);
            }
            // n <= data_remaining, so the subtraction cannot underflow.
            self.data_remaining = self
                .data_remaining
                .saturating_sub(u32::try_from(n).unwrap_or(u32::MAX));
            return (n, input.get(..n).map(Event::Data));
        }
        for (index, &byte) in input.iter().enumerate() {
            let used = index.saturating_add(1);
            if byte == b'\n' {
                if self.overflow {
                    self.overflow = false;
                    self.len = 0;
                    return (used, Some(Event::LineTooLong));
                }
                let mut end = self.len;
                if end > 0 && self.line.get(end - 1) == Some(&b'\r') {
                    end -= 1;
                }
                if end == 0 {
                    self.len = 0;
                    continue;
                }
                self.consumed_line = true;
                let line = self.line.get(..end).unwrap_or_default();
                return (used, Some(classify(line)));
            }
            if self.overflow {
                continue;
            }
            if self.len == 0 && byte == b'>' {
                return (used, Some(Event::Prompt));
            }
            if self.len == 0 && byte == b'\r' {
                // A bare line end; nothing to keep.
                continue;
            }
            match self.line.get_mut(self.len) {
                Some(slot) => {
                    *slot = byte;
                    self.len += 1;
                }
                None => {
                    self.overflow = true;
                    continue;
                }
            }
            if byte == b',' || byte == b':' {
                let line = self.line.get(..self.len).unwrap_or_default();
                if let Some(header) = binary_header(line, self.remote_info) {
                    self.len = 0;
                    self.data_remaining = header.len();
                    return (used, Some(header.event()));
                }
            }
        }
        (input.len(), None)
    }
}

/// The header of a binary payload, complete.
enum Header {
    RecvData {
        len: u32,
        remote: Option<Remote>,
    },
    Ipd {
        link: u8,
        len: u32,
        remote: Option<Remote>,
    },
}

impl Header {
    fn len(&self) -> u32 {
        match self {
            Self::RecvData { len, .. } | Self::Ipd { len, .. } => *len,
        }
    }

    fn event(self) -> Event<'static> {
        match self {
            Self::RecvData { len, remote } => Event::RecvData { len, remote },
            Self::Ipd { link, len, remote } => Event::IpdData { link, len, remote },
        }
    }
}

/// Checks whether `line` (ending in `,` or `:`) is a complete binary
/// payload header.
fn binary_header(line: &[u8], remote_info: bool) -> Option<Header> {
    if let Some(rest) = line.strip_prefix(b"+CIPRECVDATA:") {
        // `<len>,` or `<len>,"<ip>",<port>,`; the last byte is the `,`.
        let rest = rest.strip_suffix(b",")?;
        let mut fields = Fields::new(rest);
        let len = parse_u32(fields.next()?)?;
        let remote = if remote_info {
            let ip = fields.next()?;
            let port = fields.next()?;
            Some(parse_remote(ip, port)?)
        } else {
            None
        };
        if fields.next().is_some() {
            return None;
        }
        return Some(Header::RecvData { len, remote });
    }
    if let Some(rest) = line.strip_prefix(b"+IPD,") {
        // Active mode: `<id>,<len>[,"<ip>",<port>]:`.
        let rest = rest.strip_suffix(b":")?;
        if has_open_quote(rest) {
            return None; // A `:` inside an IPv6 literal.
        }
        let mut fields = Fields::new(rest);
        let first = parse_u32(fields.next()?)?;
        let (link, len) = match fields.next() {
            Some(second) if !second.starts_with(b"\"") => (first, parse_u32(second)?),
            _ => (0, first),
        };
        let link = u8::try_from(link).ok()?;
        // Whatever follows is the sender; it is informative only.
        let remote = match (fields.next(), fields.next()) {
            (Some(ip), Some(port)) => parse_remote(ip, port),
            _ => None,
        };
        return Some(Header::Ipd { link, len, remote });
    }
    None
}

fn has_open_quote(bytes: &[u8]) -> bool {
    bytes.iter().filter(|&&b| b == b'"').count() % 2 == 1
}

/// Comma-separated fields, commas inside double quotes kept.
pub(crate) struct Fields<'a> {
    rest: Option<&'a [u8]>,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: Some(bytes) }
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest?;
        let mut quoted = false;
        let mut escaped = false;
        for (index, &byte) in rest.iter().enumerate() {
            match byte {
                _ if escaped => escaped = false,
                b'\\' if quoted => escaped = true,
                b'"' => quoted = !quoted,
                b',' if !quoted => {
                    self.rest = rest.get(index.saturating_add(1)..);
                    return rest.get(..index);
                }
                _ => {}
            }
        }
        self.rest = None;
        Some(rest)
    }
}

/// A decimal number without sign, or `None`.
pub(crate) fn parse_u32(bytes: &[u8]) -> Option<u32> {
    if bytes.is_empty() || bytes.len() > 10 {
        return None;
    }
    let mut value: u32 = 0;
    for &byte in bytes {
        let digit = byte.checked_sub(b'0').filter(|d| *d <= 9)?;
        value = value.checked_mul(10)?.checked_add(u32::from(digit))?;
    }
    Some(value)
}

/// A decimal number with an optional `-`.
pub(crate) fn parse_i32(bytes: &[u8]) -> Option<i32> {
    match bytes.strip_prefix(b"-") {
        Some(digits) => i32::try_from(parse_u32(digits)?)
            .ok()
            .and_then(i32::checked_neg),
        None => i32::try_from(parse_u32(bytes)?).ok(),
    }
}

/// The contents of a double-quoted field, without unescaping.
pub(crate) fn unquote(bytes: &[u8]) -> Option<&[u8]> {
    bytes.strip_prefix(b"\"")?.strip_suffix(b"\"")
}

/// `"a.b.c.d"` and a port.
pub(crate) fn parse_remote(ip: &[u8], port: &[u8]) -> Option<Remote> {
    Some(Remote {
        ip: parse_ipv4(unquote(ip)?)?,
        port: u16::try_from(parse_u32(port)?).ok()?,
    })
}

/// A dotted IPv4 address.
pub(crate) fn parse_ipv4(text: &[u8]) -> Option<[u8; 4]> {
    let mut ip = [0u8; 4];
    let mut parts = text.split(|&b| b == b'.');
    for slot in &mut ip {
        let part = parts.next()?;
        if part.len() > 3 {
            return None;
        }
        *slot = u8::try_from(parse_u32(part)?).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(ip)
}

fn classify(line: &[u8]) -> Event<'_> {
    match line {
        b"OK" => return Event::Ok,
        b"ERROR" => return Event::Error,
        b"SEND OK" => return Event::SendOk,
        b"SEND FAIL" => return Event::SendFail,
        b"ready" => return Event::Ready,
        b"WIFI CONNECTED" => return Event::WifiConnected,
        b"WIFI GOT IP" => return Event::WifiGotIp,
        b"WIFI DISCONNECT" => return Event::WifiDisconnect,
        b"CONNECT" => return Event::Connect(0),
        b"CLOSED" => return Event::Closed(0),
        _ => {}
    }
    if line.starts_with(b"busy ") {
        return Event::Busy;
    }
    if let Some(hex) = line.strip_prefix(b"ERR CODE:0x") {
        return match parse_hex(hex) {
            Some(code) => Event::ErrCode(code),
            None => Event::Other(line),
        };
    }
    if let Some(rest) = line.strip_prefix(b"Recv ")
        && let Some(count) = rest.strip_suffix(b" bytes")
        && let Some(count) = parse_u32(count)
    {
        return Event::Received(count);
    }
    if let Some(rest) = line.strip_prefix(b"+IPD,") {
        let mut fields = Fields::new(rest);
        let parsed = match (fields.next(), fields.next(), fields.next()) {
            (Some(link), Some(len), None) => parse_u32(link)
                .and_then(|link| u8::try_from(link).ok())
                .zip(parse_u32(len)),
            (Some(len), None, None) => parse_u32(len).map(|len| (0, len)),
            _ => None,
        };
        return match parsed {
            Some((link, len)) => Event::Ipd { link, len },
            None => Event::Other(line),
        };
    }
    if line.starts_with(b"+") {
        return Event::Info(line);
    }
    if line.starts_with(b"AT") {
        return Event::Echo(line);
    }
    if let Some((link, what)) = split_link(line) {
        match what {
            b"CONNECT" => return Event::Connect(link),
            b"CLOSED" => return Event::Closed(link),
            _ => {}
        }
    }
    Event::Other(line)
}

/// `<digit>,<rest>` with a link id below [`MAX_LINKS`].
fn split_link(line: &[u8]) -> Option<(u8, &[u8])> {
    let (&digit, rest) = line.split_first()?;
    let link = digit
        .checked_sub(b'0')
        .filter(|d| usize::from(*d) < MAX_LINKS)?;
    Some((link, rest.strip_prefix(b",")?))
}

fn parse_hex(bytes: &[u8]) -> Option<u32> {
    if bytes.is_empty() || bytes.len() > 8 {
        return None;
    }
    let mut value: u32 = 0;
    for &byte in bytes {
        let digit = match byte {
            b'0'..=b'9' => byte - b'0',
            b'a'..=b'f' => byte - b'a' + 10,
            b'A'..=b'F' => byte - b'A' + 10,
            _ => return None,
        };
        value = value.checked_mul(16)?.checked_add(u32::from(digit))?;
    }
    Some(value)
}

#[cfg(test)]
#[allow(clippy::std_instead_of_alloc, reason = "tests run on std")]
mod tests {
    extern crate std;

    use std::vec::Vec;
    use std::{format, string::String};

    use super::*;

    /// Everything `input` yields, data joined, in a printable form.
    fn events(parser: &mut Parser<64>, chunks: &[&[u8]]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for chunk in chunks {
            let mut input = *chunk;
            loop {
                let (used, event) = parser.parse(input);
                input = input.get(used..).unwrap_or_default();
                match event {
                    Some(Event::Data(bytes)) => {
                        let text = String::from_utf8_lossy(bytes).into_owned();
                        match out.last_mut() {
                            Some(last) if last.starts_with("data:") => last.push_str(&text),
                            _ => out.push(format!("data:{text}")),
                        }
                    }
                    Some(event) => out.push(format!("{event:?}")),
                    None => {
                        if input.is_empty() {
                            break;
                        }
                    }
                }
                if used == 0 && input.is_empty() {
                    break;
                }
            }
        }
        out
    }

    #[test]
    fn final_results_and_reports() {
        let mut parser = Parser::<64>::new();
        let got = events(
            &mut parser,
            &[b"\r\nOK\r\nERROR\r\nERR CODE:0x01090000\r\n\r\nbusy p...\r\nSEND OK\r\nSEND FAIL\r\nready\r\nWIFI CONNECTED\r\nWIFI GOT IP\r\nWIFI DISCONNECT\r\n0,CONNECT\r\n4,CLOSED\r\n+IPD,3,1460\r\nRecv 12 bytes\r\n+CWJAP:2\r\nAT+CWJAP=\"x\"\r\nALREADY CONNECTED\r\n"],
        );
        assert_eq!(
            got,
            [
                "Ok",
                "Error",
                "ErrCode(17367040)",
                "Busy",
                "SendOk",
                "SendFail",
                "Ready",
                "WifiConnected",
                "WifiGotIp",
                "WifiDisconnect",
                "Connect(0)",
                "Closed(4)",
                "Ipd { link: 3, len: 1460 }",
                "Received(12)",
                "Info([43, 67, 87, 74, 65, 80, 58, 50])",
                "Echo([65, 84, 43, 67, 87, 74, 65, 80, 61, 34, 120, 34])",
                "Other([65, 76, 82, 69, 65, 68, 89, 32, 67, 79, 78, 78, 69, 67, 84, 69, 68])",
            ]
        );
    }

    #[test]
    fn recv_data_with_sender_and_binary_payload() {
        let mut parser = Parser::<64>::new();
        let got = events(
            &mut parser,
            &[b"+CIPRECVDATA:6,\"192.168.4.2\",5353,\r\nOK\r\n\r\nOK\r\n"],
        );
        assert_eq!(
            got,
            [
                "RecvData { len: 6, remote: Some(Remote { ip: [192, 168, 4, 2], port: 5353 }) }",
                "data:\r\nOK\r\n",
                "Ok"
            ]
        );
        parser.set_remote_info(false);
        let got = events(&mut parser, &[b"+CIPRECVDATA:3,\"a,\r\nOK\r\n"]);
        assert_eq!(
            got,
            ["RecvData { len: 3, remote: None }", "data:\"a,", "Ok"]
        );
    }

    #[test]
    fn prompt_and_active_ipd() {
        let mut parser = Parser::<64>::new();
        let got = events(
            &mut parser,
            &[b"OK\r\n\r\n>", b"+IPD,1,4,\"10.0.0.1\",80:ab\r\n+IPD,2:xy"],
        );
        assert_eq!(
            got,
            [
                "Ok",
                "Prompt",
                "IpdData { link: 1, len: 4, remote: Some(Remote { ip: [10, 0, 0, 1], port: 80 }) }",
                "data:ab\r\n",
                "IpdData { link: 0, len: 2, remote: None }",
                "data:xy"
            ]
        );
    }

    #[test]
    fn long_lines_are_skipped_not_fatal() {
        let mut parser = Parser::<64>::new();
        let long = [b'x'; 200];
        let got = events(&mut parser, &[&long, b"\r\nOK\r\n"]);
        assert_eq!(got, ["LineTooLong", "Ok"]);
    }

    #[test]
    fn byte_by_byte_equals_whole() {
        let session: &[u8] = b"AT+CIPSEND=0,4\r\r\n\r\nOK\r\n\r\n>\r\nRecv 4 bytes\r\n\r\nSEND OK\r\n+IPD,0,7\r\n+CIPRECVDATA:7,\"1.2.3.4\",80,OK\r\n>\r\r\nOK\r\n0,CLOSED\r\n";
        let whole = events(&mut Parser::<64>::new(), &[session]);
        let singles: Vec<&[u8]> = session.chunks(1).collect();
        let split = events(&mut Parser::<64>::new(), &singles);
        assert_eq!(whole, split);
        assert!(
            whole.contains(&String::from("data:OK\r\n>\r\r")),
            "{whole:?}"
        );
    }

    #[test]
    fn numbers_never_overflow() {
        assert_eq!(parse_u32(b"4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32(b"4294967296"), None);
        assert_eq!(parse_u32(b""), None);
        assert_eq!(parse_i32(b"-45"), Some(-45));
        assert_eq!(parse_ipv4(b"256.0.0.1"), None);
        assert_eq!(parse_ipv4(b"1.2.3.4.5"), None);
        assert_eq!(parse_hex(b"FFFFFFFF"), Some(u32::MAX));
        assert_eq!(parse_hex(b"1FFFFFFFF"), None);
    }
}
