//! The HTTP/1.1 subset the portal speaks: an incremental request parser
//! (request line and headers by [`httparse`], body by `Content-Length`)
//! bounded by [`Limits`], and a response head writer over a caller buffer.
//!
//! Needing more bytes is [`Status::Partial`], not an error: the caller
//! appends what the next read brings and parses again from the start, so a
//! request split across any number of reads works.
//!
//! ```
//! use tether_core::provisioning::http::{parse_request, Limits, Method, Status};
//!
//! let limits = Limits::default();
//! let bytes = b"POST /save HTTP/1.1\r\nHost: 192.168.4.1\r\nContent-Length: 6\r\n\r\nssid=x";
//! assert!(matches!(parse_request(&bytes[..20], &limits), Ok(Status::Partial)));
//! let Ok(Status::Complete(request)) = parse_request(bytes, &limits) else { panic!() };
//! assert_eq!((request.method, request.path, request.body), (Method::Post, "/save", &b"ssid=x"[..]));
//! assert_eq!(request.len, bytes.len());
//! ```

use core::fmt;

/// Header lines the parser accepts; more is [`HttpError::HeadersTooLarge`].
pub const MAX_HEADERS: usize = 32;

/// Size bounds for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest request line plus headers, in bytes.
    pub max_head_len: usize,
    /// Longest body, in bytes.
    pub max_body_len: usize,
}

impl Default for Limits {
    /// 2 KiB of head (phones send about 600 bytes) and 1 KiB of body (the
    /// portal form is under 500 bytes when every field is full).
    fn default() -> Self {
        Self {
            max_head_len: 2048,
            max_body_len: 1024,
        }
    }
}

impl Limits {
    /// Sets [`max_head_len`](Self::max_head_len).
    #[must_use]
    pub const fn with_max_head_len(mut self, bytes: usize) -> Self {
        self.max_head_len = bytes;
        self
    }

    /// Sets [`max_body_len`](Self::max_body_len).
    #[must_use]
    pub const fn with_max_body_len(mut self, bytes: usize) -> Self {
        self.max_body_len = bytes;
        self
    }

    /// The receive buffer a connection needs to hold the largest request.
    pub const fn buffer_len(&self) -> usize {
        self.max_head_len.saturating_add(self.max_body_len)
    }
}

/// Parse progress: need more bytes, or a whole request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status<T> {
    /// The bytes so far are a valid prefix; read more and parse again.
    Partial,
    /// A whole request.
    Complete(T),
}

/// The request methods the portal knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Method {
    /// `GET`.
    Get,
    /// `HEAD`: a `GET` without the body in the response.
    Head,
    /// `POST`.
    Post,
}

/// A parsed request borrowing the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// The method.
    pub method: Method,
    /// The path without the query, e.g. `/save`.
    pub path: &'a str,
    /// The query after `?`, if any.
    pub query: Option<&'a str>,
    /// The `Host` header.
    pub host: Option<&'a str>,
    /// The `Content-Type` header.
    pub content_type: Option<&'a str>,
    /// The body (`Content-Length` bytes).
    pub body: &'a [u8],
    /// Bytes of the buffer this request used (head and body).
    pub len: usize,
}

impl Request<'_> {
    /// Whether the body is declared `application/x-www-form-urlencoded`.
    pub fn is_form(&self) -> bool {
        self.content_type.is_some_and(|t| {
            let essence = t.split(';').next().unwrap_or("").trim();
            essence.eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
    }
}

/// Why a request is refused; each maps to a response status
/// ([`status_code`](Self::status_code)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum HttpError {
    /// Malformed request line, header or `Content-Length` (400).
    BadRequest,
    /// A method other than `GET`, `HEAD` and `POST` (405).
    MethodNotAllowed,
    /// A `POST` without `Content-Length` (411).
    LengthRequired,
    /// A body longer than [`Limits::max_body_len`] (413).
    PayloadTooLarge,
    /// Request line and headers longer than [`Limits::max_head_len`], or
    /// more than [`MAX_HEADERS`] headers (431).
    HeadersTooLarge,
    /// `Transfer-Encoding` (chunked bodies are not supported) (501).
    TransferEncodingUnsupported,
    /// An HTTP version other than 1.0 and 1.1 (505).
    VersionNotSupported,
}

impl HttpError {
    /// The response status code.
    pub const fn status_code(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::MethodNotAllowed => 405,
            Self::LengthRequired => 411,
            Self::PayloadTooLarge => 413,
            Self::HeadersTooLarge => 431,
            Self::TransferEncodingUnsupported => 501,
            Self::VersionNotSupported => 505,
        }
    }

    /// A sentence for the error page.
    pub const fn message(self) -> &'static str {
        match self {
            Self::BadRequest => "The request was malformed.",
            Self::MethodNotAllowed => "Only GET and POST are supported here.",
            Self::LengthRequired => "The form was sent without a Content-Length.",
            Self::PayloadTooLarge => "The submitted form is too large.",
            Self::HeadersTooLarge => "The request headers are too large.",
            Self::TransferEncodingUnsupported => "Chunked uploads are not supported.",
            Self::VersionNotSupported => "Only HTTP/1.0 and HTTP/1.1 are supported.",
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status_code(), self.message())
    }
}

impl core::error::Error for HttpError {}

/// Parses one request from the start of `buf`.
pub fn parse_request<'a>(buf: &'a [u8], limits: &Limits) -> Result<Status<Request<'a>>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > limits.max_head_len {
                return Err(HttpError::HeadersTooLarge);
            }
            // httparse accepts a method of any length while partial; refuse
            // an unknown one as soon as it is complete.
            if let Some(method) = parsed.method {
                method_of(method)?;
            }
            return Ok(Status::Partial);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeadersTooLarge),
        Err(httparse::Error::Version) => return Err(HttpError::VersionNotSupported),
        Err(_) => return Err(HttpError::BadRequest),
    };
    if head_len > limits.max_head_len {
        return Err(HttpError::HeadersTooLarge);
    }
    let method = method_of(parsed.method.unwrap_or(""))?;
    let target = parsed.path.unwrap_or("");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let mut host = None;
    let mut content_type = None;
    let mut content_length: Option<usize> = None;
    for header in parsed.headers.iter() {
        let value = || core::str::from_utf8(header.value).map_err(|_| HttpError::BadRequest);
        if header.name.eq_ignore_ascii_case("host") {
            host = Some(value()?.trim());
        } else if header.name.eq_ignore_ascii_case("content-type") {
            content_type = Some(value()?.trim());
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::TransferEncodingUnsupported);
        } else if header.name.eq_ignore_ascii_case("content-length") {
            let text = value()?.trim();
            if text.is_empty() || text.len() > 9 || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HttpError::BadRequest);
            }
            let n = text.parse::<usize>().map_err(|_| HttpError::BadRequest)?;
            if content_length.is_some_and(|old| old != n) {
                // Conflicting lengths are a request-smuggling signal.
                return Err(HttpError::BadRequest);
            }
            content_length = Some(n);
        }
    }
    let body_len = match (method, content_length) {
        (Method::Post, None) => return Err(HttpError::LengthRequired),
        (_, n) => n.unwrap_or(0),
    };
    if body_len > limits.max_body_len {
        return Err(HttpError::PayloadTooLarge);
    }
    let end = head_len + body_len;
    let Some(body) = buf.get(head_len..end) else {
        return Ok(Status::Partial);
    };
    Ok(Status::Complete(Request {
        method,
        path,
        query,
        host,
        content_type,
        body,
        len: end,
    }))
}

fn method_of(method: &str) -> Result<Method, HttpError> {
    match method {
        "GET" => Ok(Method::Get),
        "HEAD" => Ok(Method::Head),
        "POST" => Ok(Method::Post),
        _ => Err(HttpError::MethodNotAllowed),
    }
}

/// The reason phrase for the status codes the portal sends.
pub const fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        302 => "Found",
        303 => "See Other",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// The output buffer filled up; the response was not written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ResponseTooLarge;

impl fmt::Display for ResponseTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("response does not fit the output buffer")
    }
}

impl core::error::Error for ResponseTooLarge {}

/// `core::fmt::Write` into a byte slice; remembers overflow instead of
/// panicking.
#[derive(Debug)]
pub struct SliceWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
    overflowed: bool,
}

impl<'a> SliceWriter<'a> {
    /// Writes from the start of `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self {
            buf,
            len: 0,
            overflowed: false,
        }
    }

    /// Bytes written so far, or the error if anything did not fit.
    pub fn finish(self) -> Result<usize, ResponseTooLarge> {
        if self.overflowed {
            Err(ResponseTooLarge)
        } else {
            Ok(self.len)
        }
    }

    /// Appends raw bytes.
    pub fn put(&mut self, bytes: &[u8]) {
        let end = self.len.saturating_add(bytes.len());
        match self.buf.get_mut(self.len..end) {
            Some(dst) if !self.overflowed => {
                dst.copy_from_slice(bytes);
                self.len = end;
            }
            _ => self.overflowed = true,
        }
    }
}

impl fmt::Write for SliceWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.put(s.as_bytes());
        if self.overflowed {
            Err(fmt::Error)
        } else {
            Ok(())
        }
    }
}

/// A `core::fmt::Write` that only counts bytes: render once to learn the
/// `Content-Length`, then again into the buffer.
#[derive(Debug, Default)]
pub struct CountingWriter(pub usize);

impl fmt::Write for CountingWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0 = self.0.saturating_add(s.len());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate alloc;

    use proptest::prelude::*;

    use super::*;

    const FORM: &[u8] = b"POST /save?x=1 HTTP/1.1\r\nHost: 192.168.4.1\r\n\
Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 13\r\n\r\nssid=a&pass=b";

    fn complete(buf: &[u8]) -> Request<'_> {
        match parse_request(buf, &Limits::default()) {
            Ok(Status::Complete(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_a_form_post() {
        let r = complete(FORM);
        assert_eq!(r.method, Method::Post);
        assert_eq!((r.path, r.query), ("/save", Some("x=1")));
        assert_eq!(r.host, Some("192.168.4.1"));
        assert!(r.is_form());
        assert_eq!(r.body, b"ssid=a&pass=b");
        assert_eq!(r.len, FORM.len());
    }

    #[test]
    fn every_split_point_is_partial_then_complete() {
        for cut in 0..FORM.len() {
            assert_eq!(
                parse_request(&FORM[..cut], &Limits::default()),
                Ok(Status::Partial),
                "cut at {cut}"
            );
        }
        // Pipelined bytes after the request are left for the next parse.
        let mut two = alloc::vec::Vec::from(FORM);
        two.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(complete(&two).len, FORM.len());
    }

    #[test]
    fn errors_map_to_status_codes() {
        let limits = Limits::default().with_max_head_len(64).with_max_body_len(8);
        let cases: [(&[u8], HttpError); 9] = [
            (b"DELETE / HTTP/1.1\r\n\r\n", HttpError::MethodNotAllowed),
            (b"BREW /", HttpError::MethodNotAllowed),
            (b"POST /save HTTP/1.1\r\n\r\n", HttpError::LengthRequired),
            (
                b"POST /save HTTP/1.1\r\nContent-Length: 9\r\n\r\n",
                HttpError::PayloadTooLarge,
            ),
            (
                b"POST /save HTTP/1.1\r\nContent-Length: x\r\n\r\n",
                HttpError::BadRequest,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                HttpError::BadRequest,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                HttpError::TransferEncodingUnsupported,
            ),
            (b"GET / HTTP/2.0\r\n\r\n", HttpError::VersionNotSupported),
            (b"GET /\x01 HTTP/1.1\r\n\r\n", HttpError::BadRequest),
        ];
        for (bytes, error) in cases {
            assert_eq!(parse_request(bytes, &limits), Err(error), "{bytes:?}");
        }
        let long = [&b"GET / HTTP/1.1\r\nX: "[..], &[b'a'; 100]].concat();
        assert_eq!(
            parse_request(&long, &limits),
            Err(HttpError::HeadersTooLarge)
        );
        let mut many = alloc::string::String::from("GET / HTTP/1.1\r\n");
        for i in 0..=MAX_HEADERS {
            many.push_str(&alloc::format!("H{i}: v\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(
            parse_request(many.as_bytes(), &Limits::default()),
            Err(HttpError::HeadersTooLarge)
        );
        assert_eq!(HttpError::PayloadTooLarge.status_code(), 413);
        assert_eq!(reason(431), "Request Header Fields Too Large");
    }

    #[test]
    fn slice_writer_reports_overflow() {
        use core::fmt::Write;
        let mut buf = [0u8; 4];
        let mut w = SliceWriter::new(&mut buf);
        assert!(write!(w, "abcde").is_err());
        assert_eq!(w.finish(), Err(ResponseTooLarge));
        let mut w = SliceWriter::new(&mut buf);
        assert!(write!(w, "ab").is_ok());
        assert_eq!(w.finish(), Ok(2));
    }

    proptest! {
        #[test]
        fn prop_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_request(&bytes, &Limits::default());
        }

        #[test]
        fn prop_any_split_of_a_valid_request(
            path in "/[a-z0-9_./-]{0,40}",
            body in "[a-z0-9=&%+]{0,200}",
            cut in 0usize..400,
        ) {
            let request = alloc::format!(
                "POST {path} HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let bytes = request.as_bytes();
            let cut = cut.min(bytes.len());
            if cut < bytes.len() {
                prop_assert_eq!(parse_request(&bytes[..cut], &Limits::default()), Ok(Status::Partial));
            }
            let r = complete(bytes);
            prop_assert_eq!(r.path, path.as_str());
            prop_assert_eq!(r.body, body.as_bytes());
        }
    }
}
