//! The provisioning record: what a device needs to get online and reach its
//! server, validated field by field, with a versioned binary encoding that
//! ends in a CRC-32.
//!
//! ```text
//!  offset  size  field
//!  0       4     magic "TTHR"
//!  4       1     format version (1)
//!  5       1     flags: bit 0 Wi-Fi present, bit 1 pairing code present
//!  6       2     body length, little endian
//!  8       n     body: length-prefixed (u8) strings in this order:
//!                ssid, passphrase (only with Wi-Fi), server url,
//!                device id, token, pairing code (only with the flag)
//!  8+n     4     CRC-32/ISO-HDLC of bytes 0..8+n, little endian
//! ```
//!
//! Every field is checked when it is built ([`Ssid::new`], [`ServerUrl::new`],
//! ...) and again when a record is decoded, so a [`ProvisioningRecord`] in
//! memory is always valid.

use core::fmt;

use heapless::String;

/// Longest SSID, in bytes (IEEE 802.11).
pub const SSID_MAX_LEN: usize = 32;
/// Shortest WPA2/WPA3 passphrase, in characters.
pub const PASSPHRASE_MIN_LEN: usize = 8;
/// Longest WPA2/WPA3 passphrase, in characters.
pub const PASSPHRASE_MAX_LEN: usize = 63;
/// Longest server URL, in bytes.
pub const SERVER_URL_MAX_LEN: usize = 128;
/// Longest device id, in bytes.
pub const DEVICE_ID_MAX_LEN: usize = 64;
/// Longest device token, in bytes.
pub const TOKEN_MAX_LEN: usize = 96;
/// Longest pairing code, in bytes.
pub const PAIRING_CODE_MAX_LEN: usize = 16;

/// The magic bytes every encoded record starts with.
pub const MAGIC: [u8; 4] = *b"TTHR";
/// The binary format version this code writes and reads.
pub const FORMAT_VERSION: u8 = 1;
const HEADER_LEN: usize = 8;
const CRC_LEN: usize = 4;
const FLAG_WIFI: u8 = 0b01;
const FLAG_PAIRING: u8 = 0b10;

/// The largest possible encoded record, in bytes: size buffers with this.
pub const RECORD_MAX_LEN: usize = HEADER_LEN
    + 6
    + SSID_MAX_LEN
    + PASSPHRASE_MAX_LEN
    + SERVER_URL_MAX_LEN
    + DEVICE_ID_MAX_LEN
    + TOKEN_MAX_LEN
    + PAIRING_CODE_MAX_LEN
    + CRC_LEN;

const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// Which field of the record a [`FieldError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Field {
    /// The Wi-Fi network name.
    Ssid,
    /// The Wi-Fi passphrase.
    Passphrase,
    /// The relay server URL.
    ServerUrl,
    /// The device id.
    DeviceId,
    /// The device token.
    Token,
    /// The pairing code.
    PairingCode,
}

/// A field value that breaks a rule; `Display` gives a sentence fit to show
/// an end customer next to the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum FieldError {
    /// The SSID is empty.
    SsidEmpty,
    /// The SSID is longer than [`SSID_MAX_LEN`] bytes.
    SsidTooLong,
    /// The SSID contains a control character.
    SsidCharacter,
    /// The passphrase has fewer than [`PASSPHRASE_MIN_LEN`] characters.
    PassphraseTooShort,
    /// The passphrase has more than [`PASSPHRASE_MAX_LEN`] characters.
    PassphraseTooLong,
    /// The passphrase has a character outside printable ASCII.
    PassphraseCharacter,
    /// The server URL does not start with `ws://` or `wss://`.
    ServerUrlScheme,
    /// The server URL has no host, or a host with characters a host cannot have.
    ServerUrlHost,
    /// The server URL port is not a number from 1 to 65535.
    ServerUrlPort,
    /// The server URL is longer than [`SERVER_URL_MAX_LEN`] bytes.
    ServerUrlTooLong,
    /// The server URL contains a space, control character or non-ASCII byte.
    ServerUrlCharacter,
    /// The device id is empty.
    DeviceIdEmpty,
    /// The device id is longer than [`DEVICE_ID_MAX_LEN`] bytes.
    DeviceIdTooLong,
    /// The device id has a character other than `A-Z a-z 0-9 . _ -`.
    DeviceIdCharacter,
    /// The token is empty.
    TokenEmpty,
    /// The token is longer than [`TOKEN_MAX_LEN`] bytes.
    TokenTooLong,
    /// The token has a character outside visible ASCII.
    TokenCharacter,
    /// The pairing code is empty.
    PairingCodeEmpty,
    /// The pairing code is longer than [`PAIRING_CODE_MAX_LEN`] bytes.
    PairingCodeTooLong,
    /// The pairing code has a character other than `A-Z a-z 0-9 -`.
    PairingCodeCharacter,
}

impl FieldError {
    /// The field this error is about.
    pub const fn field(self) -> Field {
        match self {
            Self::SsidEmpty | Self::SsidTooLong | Self::SsidCharacter => Field::Ssid,
            Self::PassphraseTooShort | Self::PassphraseTooLong | Self::PassphraseCharacter => {
                Field::Passphrase
            }
            Self::ServerUrlScheme
            | Self::ServerUrlHost
            | Self::ServerUrlPort
            | Self::ServerUrlTooLong
            | Self::ServerUrlCharacter => Field::ServerUrl,
            Self::DeviceIdEmpty | Self::DeviceIdTooLong | Self::DeviceIdCharacter => {
                Field::DeviceId
            }
            Self::TokenEmpty | Self::TokenTooLong | Self::TokenCharacter => Field::Token,
            Self::PairingCodeEmpty | Self::PairingCodeTooLong | Self::PairingCodeCharacter => {
                Field::PairingCode
            }
        }
    }

    /// The sentence `Display` prints.
    pub const fn message(self) -> &'static str {
        match self {
            Self::SsidEmpty => "Choose a network or type its name.",
            Self::SsidTooLong => "A network name has at most 32 bytes.",
            Self::SsidCharacter => "The network name contains a control character.",
            Self::PassphraseTooShort => {
                "The password must have at least 8 characters (leave it empty for an open network)."
            }
            Self::PassphraseTooLong => "The password must have at most 63 characters.",
            Self::PassphraseCharacter => {
                "The password may only contain printable ASCII characters."
            }
            Self::ServerUrlScheme => "The server address must start with ws:// or wss://.",
            Self::ServerUrlHost => "The server address has no valid host name.",
            Self::ServerUrlPort => "The server port must be a number from 1 to 65535.",
            Self::ServerUrlTooLong => "The server address has at most 128 characters.",
            Self::ServerUrlCharacter => {
                "The server address contains a space or a character not allowed in a URL."
            }
            Self::DeviceIdEmpty => "The device id is missing.",
            Self::DeviceIdTooLong => "The device id has at most 64 characters.",
            Self::DeviceIdCharacter => {
                "The device id may only contain letters, digits, '.', '_' and '-'."
            }
            Self::TokenEmpty => "The device token is missing.",
            Self::TokenTooLong => "The device token has at most 96 characters.",
            Self::TokenCharacter => "The device token may only contain visible ASCII characters.",
            Self::PairingCodeEmpty => "Type the pairing code printed on the device label.",
            Self::PairingCodeTooLong => "The pairing code has at most 16 characters.",
            Self::PairingCodeCharacter => {
                "The pairing code may only contain letters, digits and '-'."
            }
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl core::error::Error for FieldError {}

/// Why bytes are not a valid encoded record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than the header and body length announce.
    Truncated,
    /// The bytes do not start with [`MAGIC`]: there is no record here (blank
    /// flash reads as `0xFF`).
    NoRecord,
    /// A format version this code cannot read.
    UnsupportedVersion(u8),
    /// Flag bits this version does not define are set.
    UnknownFlags,
    /// The body length disagrees with the fields it holds.
    BadLength,
    /// The CRC-32 does not match: the record is corrupted.
    Checksum,
    /// A field decoded but breaks its rule.
    Field(FieldError),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("record is truncated"),
            Self::NoRecord => f.write_str("no record (magic bytes absent)"),
            Self::UnsupportedVersion(v) => write!(f, "unsupported record version {v}"),
            Self::UnknownFlags => f.write_str("record has unknown flag bits"),
            Self::BadLength => f.write_str("record body length is inconsistent"),
            Self::Checksum => f.write_str("record CRC-32 mismatch (corrupted)"),
            Self::Field(e) => write!(f, "record field invalid: {e}"),
        }
    }
}

impl core::error::Error for DecodeError {}

/// The output buffer is too small for the encoded record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BufferTooSmall {
    /// Bytes the encoding needs.
    pub needed: usize,
}

impl fmt::Display for BufferTooSmall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "buffer too small: {} bytes needed", self.needed)
    }
}

impl core::error::Error for BufferTooSmall {}

fn bounded<const N: usize>(value: &str) -> Option<String<N>> {
    String::try_from(value).ok()
}

/// A Wi-Fi network name: 1 to 32 bytes, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ssid(String<SSID_MAX_LEN>);

impl Ssid {
    /// Checks and copies `value`.
    pub fn new(value: &str) -> Result<Self, FieldError> {
        if value.is_empty() {
            return Err(FieldError::SsidEmpty);
        }
        if value.chars().any(char::is_control) {
            return Err(FieldError::SsidCharacter);
        }
        bounded(value).map(Self).ok_or(FieldError::SsidTooLong)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A WPA2/WPA3 passphrase: 8 to 63 printable ASCII characters, or empty
/// for an open network.
#[derive(Clone, PartialEq, Eq)]
pub struct Passphrase(String<PASSPHRASE_MAX_LEN>);

impl Passphrase {
    /// Checks and copies `value`; an empty string means an open network.
    pub fn new(value: &str) -> Result<Self, FieldError> {
        if !value.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
            return Err(FieldError::PassphraseCharacter);
        }
        if !value.is_empty() && value.len() < PASSPHRASE_MIN_LEN {
            return Err(FieldError::PassphraseTooShort);
        }
        bounded(value)
            .map(Self)
            .ok_or(FieldError::PassphraseTooLong)
    }

    /// The passphrase for an open network.
    pub const fn open() -> Self {
        Self(String::new())
    }

    /// Whether this is an open network (no passphrase).
    pub fn is_open(&self) -> bool {
        self.0.is_empty()
    }

    /// The passphrase.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Secrets stay out of logs.
        f.write_str(if self.is_open() {
            "Passphrase(open)"
        } else {
            "Passphrase(..)"
        })
    }
}

/// A validated relay server URL: `ws://` or `wss://`, a host (name, IPv4 or
/// bracketed IPv6), an optional port and an optional path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    text: String<SERVER_URL_MAX_LEN>,
    secure: bool,
    host_start: u8,
    host_end: u8,
    port: u16,
}

impl ServerUrl {
    /// Parses and checks `value`.
    pub fn new(value: &str) -> Result<Self, FieldError> {
        if value.len() > SERVER_URL_MAX_LEN {
            return Err(FieldError::ServerUrlTooLong);
        }
        if !value.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(FieldError::ServerUrlCharacter);
        }
        let lower_starts = |prefix: &str| {
            value
                .get(..prefix.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
        };
        let (secure, rest_start) = if lower_starts("wss://") {
            (true, 6)
        } else if lower_starts("ws://") {
            (false, 5)
        } else {
            return Err(FieldError::ServerUrlScheme);
        };
        let rest = value.get(rest_start..).unwrap_or("");
        let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        if value.contains('#') {
            // RFC 6455 3: WebSocket URIs have no fragment.
            return Err(FieldError::ServerUrlCharacter);
        }
        let authority = rest.get(..authority_len).unwrap_or("");
        if authority.contains('@') {
            // Credentials in the URL are not supported: the token carries them.
            return Err(FieldError::ServerUrlHost);
        }
        let (host, port_text) = if let Some(inner) = authority.strip_prefix('[') {
            let close = inner.find(']').ok_or(FieldError::ServerUrlHost)?;
            let host = inner.get(..close).unwrap_or("");
            if host.is_empty()
                || !host
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
            {
                return Err(FieldError::ServerUrlHost);
            }
            let after = inner.get(close + 1..).unwrap_or("");
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(FieldError::ServerUrlHost),
            };
            // Keep the brackets out of `host()`.
            (host, port)
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if !valid_host(host) {
            return Err(FieldError::ServerUrlHost);
        }
        let port = match port_text {
            None => {
                if secure {
                    443
                } else {
                    80
                }
            }
            Some(p) => parse_port(p).ok_or(FieldError::ServerUrlPort)?,
        };
        let host_offset = host.as_ptr() as usize - value.as_ptr() as usize;
        let host_start = u8::try_from(host_offset).map_err(|_| FieldError::ServerUrlTooLong)?;
        let host_end =
            u8::try_from(host_offset + host.len()).map_err(|_| FieldError::ServerUrlTooLong)?;
        let text = bounded(value).ok_or(FieldError::ServerUrlTooLong)?;
        Ok(Self {
            text,
            secure,
            host_start,
            host_end,
            port,
        })
    }

    /// The whole URL as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// `true` for `wss://` (TLS).
    pub const fn is_secure(&self) -> bool {
        self.secure
    }

    /// The host, without brackets for IPv6.
    pub fn host(&self) -> &str {
        self.text
            .get(usize::from(self.host_start)..usize::from(self.host_end))
            .unwrap_or("")
    }

    /// The port, explicit or the scheme's default (80 or 443).
    pub const fn port(&self) -> u16 {
        self.port
    }

    /// The path and query, `/` when the URL has none.
    pub fn path(&self) -> &str {
        let after_host = self.text.get(usize::from(self.host_end)..).unwrap_or("");
        match after_host.find(['/', '?']) {
            Some(i) => after_host.get(i..).unwrap_or("/"),
            None => "/",
        }
    }
}

fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b':')
        && !host.starts_with(['.', '-'])
        && !host.contains("..")
}

fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u16>().ok().filter(|p| *p != 0)
}

/// The device id the server knows this device by: 1 to 64 characters from
/// `A-Z a-z 0-9 . _ -`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceId(String<DEVICE_ID_MAX_LEN>);

impl DeviceId {
    /// Checks and copies `value`.
    pub fn new(value: &str) -> Result<Self, FieldError> {
        if value.is_empty() {
            return Err(FieldError::DeviceIdEmpty);
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(FieldError::DeviceIdCharacter);
        }
        bounded(value).map(Self).ok_or(FieldError::DeviceIdTooLong)
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The device's secret token (from `tether-server device add`): 1 to 96
/// visible ASCII characters.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String<TOKEN_MAX_LEN>);

impl Token {
    /// Checks and copies `value`.
    pub fn new(value: &str) -> Result<Self, FieldError> {
        if value.is_empty() {
            return Err(FieldError::TokenEmpty);
        }
        if !value.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(FieldError::TokenCharacter);
        }
        bounded(value).map(Self).ok_or(FieldError::TokenTooLong)
    }

    /// The token.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(..)")
    }
}

/// The code printed on the device label that the portal asks for, so a
/// neighbour cannot take over the set-up: 1 to 16 characters from
/// `A-Z a-z 0-9 -`, compared without regard to ASCII case.
#[derive(Clone, PartialEq, Eq)]
pub struct PairingCode(String<PAIRING_CODE_MAX_LEN>);

impl PairingCode {
    /// Checks and copies `value`.
    pub fn new(value: &str) -> Result<Self, FieldError> {
        if value.is_empty() {
            return Err(FieldError::PairingCodeEmpty);
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(FieldError::PairingCodeCharacter);
        }
        bounded(value)
            .map(Self)
            .ok_or(FieldError::PairingCodeTooLong)
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `typed` is this code, ignoring ASCII case, in time that does
    /// not depend on where the first difference is.
    pub fn matches(&self, typed: &str) -> bool {
        let a = self.0.as_bytes();
        let b = typed.as_bytes();
        let mut difference = u8::from(a.len() != b.len());
        for (x, y) in a.iter().zip(b.iter()) {
            difference |= x.to_ascii_lowercase() ^ y.to_ascii_lowercase();
        }
        difference == 0
    }
}

impl fmt::Debug for PairingCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PairingCode(..)")
    }
}

/// Network name and passphrase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WifiCredentials {
    /// The network name.
    pub ssid: Ssid,
    /// The passphrase, [`Passphrase::open`] for an open network.
    pub passphrase: Passphrase,
}

/// Everything a device needs to get online and reach its server.
///
/// ```
/// use tether_core::provisioning::record::{ProvisioningRecord, RECORD_MAX_LEN};
///
/// let record = ProvisioningRecord::new("wss://relay.example.com/device", "sensor-7", "s3cr3t")?
///     .with_wifi("Home", "correct horse")?
///     .with_pairing_code("K7-42")?;
/// let mut buffer = [0u8; RECORD_MAX_LEN];
/// let n = record.encode(&mut buffer)?;
/// assert_eq!(ProvisioningRecord::decode(&buffer[..n])?, record);
/// # Ok::<(), Box<dyn core::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisioningRecord {
    /// Wi-Fi credentials; `None` for a factory record without Wi-Fi (the
    /// customer adds it through the portal).
    pub wifi: Option<WifiCredentials>,
    /// The relay server.
    pub server_url: ServerUrl,
    /// The device id.
    pub device_id: DeviceId,
    /// The device token.
    pub token: Token,
    /// The pairing code the portal asks for, if any.
    pub pairing_code: Option<PairingCode>,
}

impl ProvisioningRecord {
    /// A record without Wi-Fi and pairing code.
    pub fn new(server_url: &str, device_id: &str, token: &str) -> Result<Self, FieldError> {
        Ok(Self {
            wifi: None,
            server_url: ServerUrl::new(server_url)?,
            device_id: DeviceId::new(device_id)?,
            token: Token::new(token)?,
            pairing_code: None,
        })
    }

    /// Sets the Wi-Fi credentials (empty `passphrase` for an open network).
    pub fn with_wifi(mut self, ssid: &str, passphrase: &str) -> Result<Self, FieldError> {
        self.wifi = Some(WifiCredentials {
            ssid: Ssid::new(ssid)?,
            passphrase: Passphrase::new(passphrase)?,
        });
        Ok(self)
    }

    /// Sets the pairing code.
    pub fn with_pairing_code(mut self, code: &str) -> Result<Self, FieldError> {
        self.pairing_code = Some(PairingCode::new(code)?);
        Ok(self)
    }

    /// Bytes [`encode`](Self::encode) writes for this record.
    pub fn encoded_len(&self) -> usize {
        let wifi = self.wifi.as_ref().map_or(0, |w| {
            2 + w.ssid.as_str().len() + w.passphrase.as_str().len()
        });
        let pairing = self
            .pairing_code
            .as_ref()
            .map_or(0, |p| 1 + p.as_str().len());
        HEADER_LEN
            + wifi
            + 3
            + self.server_url.as_str().len()
            + self.device_id.as_str().len()
            + self.token.as_str().len()
            + pairing
            + CRC_LEN
    }

    /// Writes the binary record into `out`; returns the bytes written.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let needed = self.encoded_len();
        let out = out.get_mut(..needed).ok_or(BufferTooSmall { needed })?;
        let mut flags = 0;
        if self.wifi.is_some() {
            flags |= FLAG_WIFI;
        }
        if self.pairing_code.is_some() {
            flags |= FLAG_PAIRING;
        }
        let body_len = needed - HEADER_LEN - CRC_LEN;
        // Every field is bounded, so the body fits in a u16 (RECORD_MAX_LEN).
        let body_len = u16::try_from(body_len).map_err(|_| BufferTooSmall { needed })?;
        let mut w = Cursor { buf: out, pos: 0 };
        w.put(&MAGIC);
        w.put(&[FORMAT_VERSION, flags]);
        w.put(&body_len.to_le_bytes());
        if let Some(wifi) = &self.wifi {
            w.put_str(wifi.ssid.as_str());
            w.put_str(wifi.passphrase.as_str());
        }
        w.put_str(self.server_url.as_str());
        w.put_str(self.device_id.as_str());
        w.put_str(self.token.as_str());
        if let Some(code) = &self.pairing_code {
            w.put_str(code.as_str());
        }
        let end = w.pos;
        let crc = CRC32.checksum(w.buf.get(..end).unwrap_or(&[]));
        w.put(&crc.to_le_bytes());
        Ok(w.pos)
    }

    /// Reads a record from the start of `bytes` (trailing bytes, such as the
    /// rest of a flash sector, are ignored).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Self::decode_with_len(bytes).map(|(record, _)| record)
    }

    /// Like [`decode`](Self::decode), also returning the bytes the record used.
    pub fn decode_with_len(bytes: &[u8]) -> Result<(Self, usize), DecodeError> {
        let header = bytes.get(..HEADER_LEN).ok_or(DecodeError::Truncated)?;
        if header.get(..4) != Some(&MAGIC[..]) {
            return Err(DecodeError::NoRecord);
        }
        let version = header.get(4).copied().unwrap_or(0);
        if version != FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let flags = header.get(5).copied().unwrap_or(0);
        if flags & !(FLAG_WIFI | FLAG_PAIRING) != 0 {
            return Err(DecodeError::UnknownFlags);
        }
        let body_len = usize::from(u16::from_le_bytes([
            header.get(6).copied().unwrap_or(0),
            header.get(7).copied().unwrap_or(0),
        ]));
        if body_len > RECORD_MAX_LEN {
            return Err(DecodeError::BadLength);
        }
        let end = HEADER_LEN + body_len;
        let total = end + CRC_LEN;
        let covered = bytes.get(..end).ok_or(DecodeError::Truncated)?;
        let stored = bytes.get(end..total).ok_or(DecodeError::Truncated)?;
        let stored = u32::from_le_bytes([
            stored.first().copied().unwrap_or(0),
            stored.get(1).copied().unwrap_or(0),
            stored.get(2).copied().unwrap_or(0),
            stored.get(3).copied().unwrap_or(0),
        ]);
        if CRC32.checksum(covered) != stored {
            return Err(DecodeError::Checksum);
        }
        let mut r = Reader {
            buf: covered.get(HEADER_LEN..).unwrap_or(&[]),
        };
        let wifi = if flags & FLAG_WIFI != 0 {
            let ssid = Ssid::new(r.take_str()?).map_err(DecodeError::Field)?;
            let passphrase = Passphrase::new(r.take_str()?).map_err(DecodeError::Field)?;
            Some(WifiCredentials { ssid, passphrase })
        } else {
            None
        };
        let server_url = ServerUrl::new(r.take_str()?).map_err(DecodeError::Field)?;
        let device_id = DeviceId::new(r.take_str()?).map_err(DecodeError::Field)?;
        let token = Token::new(r.take_str()?).map_err(DecodeError::Field)?;
        let pairing_code = if flags & FLAG_PAIRING != 0 {
            Some(PairingCode::new(r.take_str()?).map_err(DecodeError::Field)?)
        } else {
            None
        };
        if !r.buf.is_empty() {
            return Err(DecodeError::BadLength);
        }
        Ok((
            Self {
                wifi,
                server_url,
                device_id,
                token,
                pairing_code,
            },
            total,
        ))
    }
}

/// Writer over a buffer already checked to be large enough.
struct Cursor<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let end = self.pos + bytes.len();
        if let Some(dst) = self.buf.get_mut(self.pos..end) {
            dst.copy_from_slice(bytes);
        }
        self.pos = end;
    }

    fn put_str(&mut self, text: &str) {
        // Field types cap every string well below 256 bytes.
        self.put(&[u8::try_from(text.len()).unwrap_or(u8::MAX)]);
        self.put(text.as_bytes());
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take_str(&mut self) -> Result<&'a str, DecodeError> {
        let (&len, rest) = self.buf.split_first().ok_or(DecodeError::BadLength)?;
        let len = usize::from(len);
        if rest.len() < len {
            return Err(DecodeError::BadLength);
        }
        let (text, rest) = rest.split_at(len);
        self.buf = rest;
        // A string that is not UTF-8 breaks the field's character rule.
        core::str::from_utf8(text).map_err(|_| DecodeError::BadLength)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn full() -> ProvisioningRecord {
        ProvisioningRecord::new("wss://relay.example.com:8443/device", "sensor-7", "tok_123")
            .and_then(|r| r.with_wifi("Home", "correct horse"))
            .and_then(|r| r.with_pairing_code("K7-42"))
            .unwrap()
    }

    #[test]
    fn round_trip_full_and_minimal() {
        let mut buf = [0u8; RECORD_MAX_LEN];
        for record in [
            full(),
            ProvisioningRecord::new("ws://10.0.0.2", "d", "t").unwrap(),
        ] {
            let n = record.encode(&mut buf).unwrap();
            assert_eq!(n, record.encoded_len());
            assert_eq!(
                ProvisioningRecord::decode_with_len(&buf[..n]).unwrap(),
                (record, n)
            );
        }
    }

    #[test]
    fn every_corrupted_byte_is_detected() {
        let mut buf = [0u8; RECORD_MAX_LEN];
        let n = full().encode(&mut buf).unwrap();
        for i in 0..n {
            for bit in 0..8 {
                let mut copy = buf;
                copy[i] ^= 1 << bit;
                assert!(
                    ProvisioningRecord::decode(&copy[..n]).is_err(),
                    "flip of bit {bit} in byte {i} went unnoticed"
                );
            }
        }
        let mut copy = buf;
        copy[20] ^= 0x55;
        assert_eq!(
            ProvisioningRecord::decode(&copy[..n]),
            Err(DecodeError::Checksum)
        );
    }

    #[test]
    fn blank_flash_is_no_record_and_short_input_is_truncated() {
        assert_eq!(
            ProvisioningRecord::decode(&[0xff; 64]),
            Err(DecodeError::NoRecord)
        );
        assert_eq!(
            ProvisioningRecord::decode(b"TTHR"),
            Err(DecodeError::Truncated)
        );
        let mut buf = [0u8; RECORD_MAX_LEN];
        let n = full().encode(&mut buf).unwrap();
        assert_eq!(
            ProvisioningRecord::decode(&buf[..n - 1]),
            Err(DecodeError::Truncated)
        );
        buf[4] = 2;
        assert_eq!(
            ProvisioningRecord::decode(&buf[..n]),
            Err(DecodeError::UnsupportedVersion(2))
        );
    }

    #[test]
    fn small_buffer_is_refused() {
        let record = full();
        let mut buf = [0u8; 10];
        assert_eq!(
            record.encode(&mut buf),
            Err(BufferTooSmall {
                needed: record.encoded_len()
            })
        );
    }

    #[test]
    fn field_rules() {
        assert_eq!(Ssid::new(""), Err(FieldError::SsidEmpty));
        assert_eq!(Ssid::new(&"x".repeat(32)).unwrap().as_str().len(), 32);
        assert_eq!(Ssid::new(&"x".repeat(33)), Err(FieldError::SsidTooLong));
        // 11 two-byte characters = 22 bytes fit; 17 = 34 bytes do not.
        assert!(Ssid::new(&"é".repeat(16)).is_ok());
        assert_eq!(Ssid::new(&"é".repeat(17)), Err(FieldError::SsidTooLong));
        assert_eq!(
            Passphrase::new("short"),
            Err(FieldError::PassphraseTooShort)
        );
        assert!(Passphrase::new("").unwrap().is_open());
        assert!(Passphrase::new("12345678").is_ok());
        assert!(Passphrase::new(&"p".repeat(63)).is_ok());
        assert_eq!(
            Passphrase::new(&"p".repeat(64)),
            Err(FieldError::PassphraseTooLong)
        );
        assert_eq!(
            Passphrase::new("pässwort1"),
            Err(FieldError::PassphraseCharacter)
        );
        assert_eq!(DeviceId::new("a b"), Err(FieldError::DeviceIdCharacter));
        assert_eq!(Token::new(""), Err(FieldError::TokenEmpty));
        let code = PairingCode::new("K7-42").unwrap();
        assert!(code.matches("k7-42"));
        assert!(!code.matches("K7-43"));
        assert!(!code.matches("K7-4"));
        assert_eq!(FieldError::SsidTooLong.field(), Field::Ssid);
        assert_eq!(FieldError::ServerUrlPort.field(), Field::ServerUrl);
    }

    #[test]
    fn server_urls() {
        let url = ServerUrl::new("wss://relay.example.com:8443/device?x=1").unwrap();
        assert!(url.is_secure());
        assert_eq!(url.host(), "relay.example.com");
        assert_eq!(url.port(), 8443);
        assert_eq!(url.path(), "/device?x=1");
        let url = ServerUrl::new("ws://192.168.1.5").unwrap();
        assert!(!url.is_secure());
        assert_eq!(
            (url.host(), url.port(), url.path()),
            ("192.168.1.5", 80, "/")
        );
        let url = ServerUrl::new("WSS://[fe80::1]:9000/x").unwrap();
        assert_eq!(
            (url.host(), url.port(), url.path()),
            ("fe80::1", 9000, "/x")
        );
        assert_eq!(ServerUrl::new("wss://[::1]").unwrap().port(), 443);
        for (bad, error) in [
            ("http://example.com", FieldError::ServerUrlScheme),
            ("example.com", FieldError::ServerUrlScheme),
            ("ws://", FieldError::ServerUrlHost),
            ("ws:///path", FieldError::ServerUrlHost),
            ("ws://user@host", FieldError::ServerUrlHost),
            ("ws://ho_st", FieldError::ServerUrlHost),
            ("ws://host:0", FieldError::ServerUrlPort),
            ("ws://host:65536", FieldError::ServerUrlPort),
            ("ws://host:", FieldError::ServerUrlPort),
            ("ws://host:8a", FieldError::ServerUrlPort),
            ("ws://ho st", FieldError::ServerUrlCharacter),
            ("ws://host/#frag", FieldError::ServerUrlCharacter),
            ("ws://[zz]", FieldError::ServerUrlHost),
        ] {
            assert_eq!(ServerUrl::new(bad), Err(error), "{bad}");
        }
        let long = ["ws://", &"a".repeat(130)].concat();
        assert_eq!(ServerUrl::new(&long), Err(FieldError::ServerUrlTooLong));
    }

    fn arb_record() -> impl Strategy<Value = ProvisioningRecord> {
        (
            proptest::option::of(("[ -~]{1,32}", proptest::option::of("[!-~]{8,63}"))),
            "[a-z0-9]{1,20}(\\.[a-z]{2,5})?",
            proptest::option::of(1u16..),
            "(/[a-z0-9]{0,10}){0,3}",
            "[A-Za-z0-9._-]{1,64}",
            "[!-~]{1,96}",
            proptest::option::of("[A-Za-z0-9-]{1,16}"),
            any::<bool>(),
        )
            .prop_map(|(wifi, host, port, path, id, token, code, secure)| {
                let scheme = if secure { "wss" } else { "ws" };
                let url = match port {
                    Some(p) => alloc::format!("{scheme}://{host}:{p}{path}"),
                    None => alloc::format!("{scheme}://{host}{path}"),
                };
                let mut record = ProvisioningRecord::new(&url, &id, &token).unwrap();
                if let Some((ssid, pass)) = wifi {
                    record = record
                        .with_wifi(&ssid, pass.as_deref().unwrap_or(""))
                        .unwrap();
                }
                if let Some(code) = code {
                    record = record.with_pairing_code(&code).unwrap();
                }
                record
            })
    }

    extern crate alloc;

    proptest! {
        #[test]
        fn prop_round_trip(record in arb_record()) {
            let mut buf = [0u8; RECORD_MAX_LEN];
            let n = record.encode(&mut buf).unwrap();
            prop_assert!(n <= RECORD_MAX_LEN);
            prop_assert_eq!(ProvisioningRecord::decode(&buf[..n]).unwrap(), record);
        }

        #[test]
        fn prop_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = ProvisioningRecord::decode(&bytes);
        }

        #[test]
        fn prop_header_with_random_body(body in proptest::collection::vec(any::<u8>(), 0..300), flags in 0u8..4) {
            // A valid header and CRC around random fields: decode must either
            // succeed with a record that re-encodes identically, or fail cleanly.
            let mut bytes = alloc::vec::Vec::new();
            bytes.extend_from_slice(&MAGIC);
            bytes.extend_from_slice(&[FORMAT_VERSION, flags]);
            bytes.extend_from_slice(&u16::try_from(body.len()).unwrap().to_le_bytes());
            bytes.extend_from_slice(&body);
            let crc = CRC32.checksum(&bytes);
            bytes.extend_from_slice(&crc.to_le_bytes());
            if let Ok(record) = ProvisioningRecord::decode(&bytes) {
                let mut buf = [0u8; RECORD_MAX_LEN];
                let n = record.encode(&mut buf).unwrap();
                prop_assert_eq!(&buf[..n], &bytes[..]);
            }
        }
    }
}
