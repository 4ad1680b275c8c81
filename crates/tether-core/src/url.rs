//! `ws://` and `wss://` server URLs: the one place a device splits a URL
//! into what the [`Connector`](crate::connector::Connector) needs (host,
//! port, TLS) and what the WebSocket handshake needs (host, path).
//!
//! ```
//! use tether_core::connector::Security;
//! use tether_core::url::ServerUrl;
//!
//! let url = ServerUrl::parse("wss://relay.example.com/v1/device?fleet=a")?;
//! assert_eq!(url.endpoint.host, "relay.example.com");
//! assert_eq!(url.endpoint.port, 443);
//! assert_eq!(url.endpoint.security, Security::Tls);
//! assert_eq!(url.path, "/v1/device?fleet=a");
//!
//! let local = ServerUrl::parse("ws://192.168.1.10:8080")?;
//! assert_eq!((local.endpoint.port, local.path), (8080, "/"));
//! # Ok::<(), tether_core::url::UrlError>(())
//! ```

use core::fmt;

use crate::connector::{Endpoint, Security};

/// A parsed `ws://` or `wss://` URL, borrowing from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ServerUrl<'a> {
    /// Host (without brackets for IPv6 literals), port (default 80 or 443)
    /// and security (`wss` is TLS).
    pub endpoint: Endpoint<'a>,
    /// Path and query, starting with `/` (`/` when the URL has none).
    pub path: &'a str,
    /// The `Host` header value: the host as written (brackets kept), with
    /// the port if the URL named one.
    pub authority: &'a str,
}

/// Why a URL was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum UrlError {
    /// Not `ws://` or `wss://`.
    UnsupportedScheme,
    /// No host between `//` and the path.
    MissingHost,
    /// The host has characters a host name or address cannot have.
    InvalidHost,
    /// The port is not a number from 1 to 65535.
    InvalidPort,
    /// `user:password@` is not supported (credentials go in `Hello`).
    UserInfo,
    /// WebSocket URLs must not have a `#fragment` (RFC 6455 3).
    Fragment,
    /// A `?query` must follow a path starting with `/` (`ws://host/?q`).
    InvalidPath,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::UnsupportedScheme => "URL scheme must be ws:// or wss://",
            Self::MissingHost => "URL has no host",
            Self::InvalidHost => "URL host is not a valid host name or address",
            Self::InvalidPort => "URL port must be a number from 1 to 65535",
            Self::UserInfo => "URL must not contain user information",
            Self::Fragment => "WebSocket URL must not contain a fragment",
            Self::InvalidPath => "URL query must follow a path starting with /",
        })
    }
}

impl core::error::Error for UrlError {}

impl<'a> ServerUrl<'a> {
    /// Parses `url`.
    ///
    /// # Errors
    /// See [`UrlError`].
    pub fn parse(url: &'a str) -> Result<Self, UrlError> {
        let (security, default_port, rest) =
            if let Some(rest) = strip_prefix_ignore_case(url, "ws://") {
                (Security::Plain, 80, rest)
            } else if let Some(rest) = strip_prefix_ignore_case(url, "wss://") {
                (Security::Tls, 443, rest)
            } else {
                return Err(UrlError::UnsupportedScheme);
            };
        // Byte searches throughout: every delimiter is ASCII, and `char`
        // patterns would link a UTF-8 decoder and a searcher per pattern
        // into the device (code size, see docs/performance.md).
        if has_byte(rest, b'#') {
            return Err(UrlError::Fragment);
        }
        let authority_end = rest
            .bytes()
            .position(|b| b == b'/' || b == b'?')
            .unwrap_or(rest.len());
        let (authority, path) = rest.split_at_checked(authority_end).unwrap_or((rest, ""));
        let path = if path.is_empty() { "/" } else { path };
        if !path.starts_with('/') {
            // Only "?query" without a path: RFC 6455 asks for "/" first; we
            // refuse instead of rewriting into a buffer we do not have.
            return Err(UrlError::InvalidPath);
        }
        if has_byte(authority, b'@') {
            return Err(UrlError::UserInfo);
        }
        let (host, port) = split_host_port(authority)?;
        if host.is_empty() {
            return Err(UrlError::MissingHost);
        }
        let valid = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':');
        if !host.bytes().all(valid) {
            return Err(UrlError::InvalidHost);
        }
        Ok(Self {
            endpoint: Endpoint::new(host, port.unwrap_or(default_port), security),
            path,
            authority,
        })
    }
}

/// Whether `text` holds `byte` (ASCII). A plain loop: `<[u8]>::contains`
/// links `core`'s word-at-a-time `memchr` (354 B on the ESP32-C3) for
/// strings of a few dozen bytes, read once.
fn has_byte(text: &str, byte: u8) -> bool {
    text.bytes().any(|b| b == byte)
}

/// `text` split around the first `byte` (ASCII), which is left out.
fn split_once_byte(text: &str, byte: u8) -> Option<(&str, &str)> {
    let at = text.bytes().position(|b| b == byte)?;
    let (before, from) = text.split_at_checked(at)?;
    Some((before, from.get(1..)?))
}

/// Splits `host[:port]` or `[v6]:port`; the host comes back without brackets.
fn split_host_port(authority: &str) -> Result<(&str, Option<u16>), UrlError> {
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let Some((host, after)) = split_once_byte(bracketed, b']') else {
            return Err(UrlError::InvalidHost);
        };
        if host.is_empty() || !has_byte(host, b':') {
            return Err(UrlError::InvalidHost);
        }
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(UrlError::InvalidHost),
            },
        }
    } else {
        match split_once_byte(authority, b':') {
            Some((host, port)) => {
                if has_byte(port, b':') {
                    // An unbracketed IPv6 literal.
                    return Err(UrlError::InvalidHost);
                }
                (host, Some(port))
            }
            None => (authority, None),
        }
    };
    match port {
        None => Ok((host, None)),
        Some(digits) => parse_port(digits).map(|port| (host, Some(port))),
    }
}

/// A port: 1 to 65535 in decimal digits only (no sign, no spaces).
fn parse_port(digits: &str) -> Result<u16, UrlError> {
    if digits.is_empty() {
        return Err(UrlError::InvalidPort);
    }
    let mut port: u16 = 0;
    for byte in digits.bytes() {
        let digit = match byte {
            b'0'..=b'9' => u16::from(byte - b'0'),
            _ => return Err(UrlError::InvalidPort),
        };
        port = port
            .checked_mul(10)
            .and_then(|port| port.checked_add(digit))
            .ok_or(UrlError::InvalidPort)?;
    }
    if port == 0 {
        return Err(UrlError::InvalidPort);
    }
    Ok(port)
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        text.get(prefix.len()..)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    extern crate alloc;
    extern crate std;

    use alloc::format;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn accepts_the_usual_shapes() {
        let url = ServerUrl::parse("WS://Example.com:8080/a/b?c=d").unwrap();
        assert_eq!(
            url.endpoint,
            Endpoint::new("Example.com", 8080, Security::Plain)
        );
        assert_eq!((url.path, url.authority), ("/a/b?c=d", "Example.com:8080"));
        let url = ServerUrl::parse("wss://[::1]:9000/x").unwrap();
        assert_eq!(url.endpoint, Endpoint::new("::1", 9000, Security::Tls));
        assert_eq!(url.authority, "[::1]:9000");
        let url = ServerUrl::parse("wss://[fe80::1]").unwrap();
        assert_eq!((url.endpoint.port, url.path), (443, "/"));
        let url = ServerUrl::parse("ws://h/?q").unwrap();
        assert_eq!((url.endpoint.host, url.path), ("h", "/?q"));
    }

    #[test]
    fn refuses_with_a_typed_error() {
        let cases = [
            ("http://example.com", UrlError::UnsupportedScheme),
            ("ws:/example.com", UrlError::UnsupportedScheme),
            ("", UrlError::UnsupportedScheme),
            ("ws://", UrlError::MissingHost),
            ("ws:///path", UrlError::MissingHost),
            ("ws://:80", UrlError::MissingHost),
            ("ws://host:0", UrlError::InvalidPort),
            ("ws://host:65536", UrlError::InvalidPort),
            ("ws://host:", UrlError::InvalidPort),
            ("ws://host:+80", UrlError::InvalidPort),
            ("ws://user:pw@host", UrlError::UserInfo),
            ("ws://host/#top", UrlError::Fragment),
            ("ws://ho st", UrlError::InvalidHost),
            ("ws://::1", UrlError::InvalidHost),
            ("ws://[::1", UrlError::InvalidHost),
            ("ws://[]", UrlError::InvalidHost),
            ("ws://[::1]x", UrlError::InvalidHost),
            ("ws://hø", UrlError::InvalidHost),
            ("ws://h?q", UrlError::InvalidPath),
        ];
        for (url, error) in cases {
            assert_eq!(ServerUrl::parse(url), Err(error), "{url}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(url in ".*") {
            let _ = ServerUrl::parse(&url);
        }

        #[test]
        fn round_trips_generated_urls(
            tls in any::<bool>(),
            host in "[a-z][a-z0-9-]{0,20}(\\.[a-z0-9]{1,10}){0,3}",
            port in proptest::option::of(1u16..),
            path in proptest::option::of("/[a-zA-Z0-9/._~-]{0,30}(\\?[a-z=&]{0,10})?"),
        ) {
            let scheme = if tls { "wss" } else { "ws" };
            let port_text = port.map(|p| format!(":{p}")).unwrap_or_default();
            let path_text = path.clone().unwrap_or_default();
            let text = format!("{scheme}://{host}{port_text}{path_text}");
            let url = ServerUrl::parse(&text).unwrap();
            prop_assert_eq!(url.endpoint.host, host.as_str());
            prop_assert_eq!(url.endpoint.port, port.unwrap_or(if tls { 443 } else { 80 }));
            prop_assert_eq!(url.endpoint.security, if tls { Security::Tls } else { Security::Plain });
            prop_assert_eq!(url.path, path.as_deref().unwrap_or("/"));
        }

        /// The hand-written port parser accepts exactly what core's
        /// `u16` parser accepts from decimal digits, except 0.
        #[test]
        fn port_parsing_matches_core(digits in "[0-9]{0,7}|[0-9+ -]{0,6}|.{0,4}") {
            let expected = if digits.bytes().all(|b| b.is_ascii_digit()) {
                match digits.parse::<u16>() {
                    Ok(0) | Err(_) => Err(UrlError::InvalidPort),
                    Ok(port) => Ok(port),
                }
            } else {
                Err(UrlError::InvalidPort)
            };
            prop_assert_eq!(parse_port(&digits), expected);
        }
    }
}
