//! AT command lines, written into a fixed buffer: numbers, and strings
//! double-quoted with ESP-AT's escapes (`\"`, `\,`, `\\`).
//!
//! ```
//! use tether_esp8266::command::CommandLine;
//!
//! let mut line = CommandLine::<64>::new();
//! line.push_str("AT+CWJAP=")?;
//! line.push_quoted("Caf\u{e9}, \"Guest\"")?;
//! line.push_str(",")?;
//! line.push_quoted("pass\\word")?;
//! line.finish()?;
//! assert_eq!(line.as_bytes(), "AT+CWJAP=\"Caf\u{e9}\\, \\\"Guest\\\"\",\"pass\\\\word\"\r\n".as_bytes());
//! # Ok::<(), tether_esp8266::command::TooLong>(())
//! ```

use core::fmt;

/// A command does not fit the command buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TooLong;

impl fmt::Display for TooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AT command too long for the command buffer")
    }
}

impl core::error::Error for TooLong {}

/// One command line being written; `CAP` bytes at most, `\r\n` included.
#[derive(Clone)]
pub struct CommandLine<const CAP: usize = 256> {
    bytes: [u8; CAP],
    len: usize,
}

impl<const CAP: usize> fmt::Debug for CommandLine<CAP> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Passwords go through here: show only the command name.
        let shown = self
            .as_bytes()
            .split(|&b| b == b'=' || b == b'\r')
            .next()
            .unwrap_or_default();
        f.debug_struct("CommandLine")
            .field("command", &core::str::from_utf8(shown).unwrap_or("?"))
            .field("len", &self.len)
            .finish()
    }
}

impl<const CAP: usize> Default for CommandLine<CAP> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const CAP: usize> CommandLine<CAP> {
    /// An empty line.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            bytes: [0; CAP],
            len: 0,
        }
    }

    /// Starts over.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// The bytes written so far.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }

    fn push_byte(&mut self, byte: u8) -> Result<(), TooLong> {
        let slot = self.bytes.get_mut(self.len).ok_or(TooLong)?;
        *slot = byte;
        self.len += 1;
        Ok(())
    }

    /// Appends `text` as it is.
    ///
    /// # Errors
    /// [`TooLong`] if it does not fit (the line is then incomplete: clear it).
    pub fn push_str(&mut self, text: &str) -> Result<(), TooLong> {
        text.bytes().try_for_each(|b| self.push_byte(b))
    }

    /// Appends `value` in decimal.
    ///
    /// # Errors
    /// [`TooLong`] if it does not fit.
    pub fn push_u32(&mut self, value: u32) -> Result<(), TooLong> {
        let mut digits = [0u8; 10];
        let mut n = value;
        let mut count = 0;
        loop {
            if let Some(slot) = digits.get_mut(count) {
                // n % 10 < 10: the cast cannot truncate.
                *slot = b'0' + (n % 10) as u8;
            }
            count += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for index in (0..count).rev() {
            self.push_byte(digits.get(index).copied().unwrap_or(b'0'))?;
        }
        Ok(())
    }

    /// Appends `text` in double quotes, escaping `"`, `,` and `\` with a
    /// backslash as ESP-AT asks.
    ///
    /// # Errors
    /// [`TooLong`] if it does not fit.
    pub fn push_quoted(&mut self, text: &str) -> Result<(), TooLong> {
        self.push_byte(b'"')?;
        for byte in text.bytes() {
            if matches!(byte, b'"' | b',' | b'\\') {
                self.push_byte(b'\\')?;
            }
            self.push_byte(byte)?;
        }
        self.push_byte(b'"')
    }

    /// Ends the line with `\r\n`.
    ///
    /// # Errors
    /// [`TooLong`] if it does not fit.
    pub fn finish(&mut self) -> Result<(), TooLong> {
        self.push_byte(b'\r')?;
        self.push_byte(b'\n')
    }
}

impl<const CAP: usize> fmt::Write for CommandLine<CAP> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push_str(s).map_err(|_| fmt::Error)
    }
}

/// Removes ESP-AT's backslash escapes from a quoted field (as `AT+CWLAP`
/// prints SSIDs), into `out`; returns the bytes written.
pub(crate) fn unescape_into(field: &[u8], out: &mut [u8]) -> Option<usize> {
    let mut len = 0usize;
    let mut escaped = false;
    for &byte in field {
        if !escaped && byte == b'\\' {
            escaped = true;
            continue;
        }
        escaped = false;
        *out.get_mut(len)? = byte;
        len += 1;
    }
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_overflow() {
        let mut line = CommandLine::<16>::new();
        line.push_u32(0).unwrap();
        line.push_str(",").unwrap();
        line.push_u32(u32::MAX).unwrap();
        assert_eq!(line.as_bytes(), b"0,4294967295");
        assert_eq!(line.push_str("toolong"), Err(TooLong));
    }

    #[test]
    fn unescape_round_trip() {
        let mut line = CommandLine::<64>::new();
        line.push_quoted("a\"b,c\\d").unwrap();
        let quoted = line.as_bytes();
        let inner = quoted.get(1..quoted.len() - 1).unwrap();
        let mut out = [0u8; 16];
        let n = unescape_into(inner, &mut out).unwrap();
        assert_eq!(&out[..n], b"a\"b,c\\d");
    }
}
