//! The errors of the driver: small `Copy` enums, one per concern.

use core::fmt;

/// Why joining a Wi-Fi network failed: `+CWJAP:<error code>` before
/// `ERROR` (ESP-AT Wi-Fi AT commands, `AT+CWJAP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum JoinError {
    /// Code 1: the access point did not answer in time.
    Timeout,
    /// Code 2: wrong password.
    WrongPassword,
    /// Code 3: no access point with that name in range.
    NoAccessPoint,
    /// Code 4: the connection failed.
    Failed,
    /// Another code, or `ERROR` without a code.
    Other(u8),
}

impl JoinError {
    /// The error for a `+CWJAP:` code.
    #[must_use]
    pub const fn from_code(code: u8) -> Self {
        match code {
            1 => Self::Timeout,
            2 => Self::WrongPassword,
            3 => Self::NoAccessPoint,
            4 => Self::Failed,
            other => Self::Other(other),
        }
    }

    /// The `+CWJAP:` code.
    #[must_use]
    pub const fn code(self) -> u8 {
        match self {
            Self::Timeout => 1,
            Self::WrongPassword => 2,
            Self::NoAccessPoint => 3,
            Self::Failed => 4,
            Self::Other(code) => code,
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.write_str("the access point did not answer in time"),
            Self::WrongPassword => f.write_str("wrong Wi-Fi password"),
            Self::NoAccessPoint => f.write_str("no access point with that name in range"),
            Self::Failed => f.write_str("joining the Wi-Fi network failed"),
            Self::Other(code) => write!(f, "joining the Wi-Fi network failed (code {code})"),
        }
    }
}

impl core::error::Error for JoinError {}

/// Why a modem operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Error {
    /// No final answer before the deadline: the modem went silent. The
    /// next operation probes it and resets it if it still does not answer.
    Timeout,
    /// The modem kept answering `busy p...` until the deadline.
    Busy,
    /// `ERROR`, with the `ERR CODE:0x...` that preceded it if any.
    Command {
        /// The 32-bit ESP-AT error code (`AT+SYSLOG=1`).
        code: Option<u32>,
    },
    /// Joining the Wi-Fi network failed.
    Join(JoinError),
    /// The station is not connected to a Wi-Fi network (no credentials to
    /// join with, or `WIFI DISCONNECT`).
    WifiDown,
    /// `SEND FAIL`: data may not have reached the network; the link is
    /// unusable.
    SendFailed,
    /// The link is closed (`<link>,CLOSED`, or `ERROR` to `AT+CIPSEND`).
    LinkClosed,
    /// The link's id went to a new connection (`<link>,CONNECT` of an
    /// accepted one) before the modem took this `AT+CIPSEND`: the bytes went
    /// to that connection. ESP-AT gives a closed id to the next connection at
    /// once, so a server whose client hangs up mid-response can meet this.
    LinkReused,
    /// The modem restarted (`ready`) in the middle of the operation; every
    /// link is gone.
    ModemReset,
    /// The modem answered neither a probe nor a reset.
    Unresponsive,
    /// The serial port failed or ended.
    Serial,
    /// A command (host name, SSID, ...) does not fit the command buffer.
    TooLong,
    /// An argument ESP-AT cannot carry (a host name with quotes, say).
    InvalidArgument,
    /// The modem answered something this driver cannot read.
    Protocol,
}

impl Error {
    /// The error code's subcategory (`0x01090000` → `0x09`, "command not
    /// supported"), if the modem gave a code.
    #[must_use]
    pub const fn subcategory(&self) -> Option<u8> {
        match self {
            // Bits 23..16; the mask keeps it in a byte.
            Self::Command { code: Some(code) } => Some(((*code >> 16) & 0xff) as u8),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.write_str("the modem did not answer in time"),
            Self::Busy => f.write_str("the modem stayed busy"),
            Self::Command { code: Some(code) } => {
                write!(f, "the modem answered ERROR (code 0x{code:08x})")
            }
            Self::Command { code: None } => f.write_str("the modem answered ERROR"),
            Self::Join(e) => write!(f, "{e}"),
            Self::WifiDown => f.write_str("not connected to a Wi-Fi network"),
            Self::SendFailed => f.write_str("the modem could not send (SEND FAIL)"),
            Self::LinkClosed => f.write_str("the connection is closed"),
            Self::LinkReused => f.write_str("the connection's id went to a new connection"),
            Self::ModemReset => f.write_str("the modem restarted"),
            Self::Unresponsive => f.write_str("the modem answers neither a probe nor a reset"),
            Self::Serial => f.write_str("the serial port failed"),
            Self::TooLong => f.write_str("the command does not fit the command buffer"),
            Self::InvalidArgument => f.write_str("an argument ESP-AT cannot carry"),
            Self::Protocol => f.write_str("an answer the driver cannot read"),
        }
    }
}

impl core::error::Error for Error {}

impl From<crate::command::TooLong> for Error {
    fn from(_: crate::command::TooLong) -> Self {
        Self::TooLong
    }
}

impl embedded_io::Error for Error {
    fn kind(&self) -> embedded_io::ErrorKind {
        use embedded_io::ErrorKind;
        match self {
            Self::Timeout => ErrorKind::TimedOut,
            Self::LinkClosed | Self::LinkReused | Self::ModemReset => ErrorKind::ConnectionReset,
            Self::Join(_) | Self::WifiDown => ErrorKind::NotConnected,
            Self::Command { .. } => ErrorKind::ConnectionRefused,
            Self::SendFailed => ErrorKind::BrokenPipe,
            Self::TooLong | Self::InvalidArgument => ErrorKind::InvalidInput,
            Self::Protocol => ErrorKind::InvalidData,
            _ => ErrorKind::Other,
        }
    }
}
