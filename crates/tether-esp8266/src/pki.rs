//! The PKI partition format of ESP-AT (`tools/AtPKI.py` in the esp-at
//! repository): how the CA certificate the modem verifies servers against
//! is laid out in its `client_ca` flash partition.
//!
//! ```text
//!  header (little endian)                     items, each 4-byte aligned
//!  ┌──────────┬───────────┬──────────────┐   ┌──────┬────┬──────────┬─────────┬─────────┐
//!  │ 0xF1F1   │ count u16 │ length u32   │   │ type │ id │ len u16  │ raw PEM │ 0xFF pad│
//!  └──────────┴───────────┴──────────────┘   └──────┴────┴──────────┴─────────┴─────────┘
//!                                              type: 1 CA, 2 certificate, 3 key
//! ```
//!
//! [`encode_ca`] writes the image to flash with `esptool.py write_flash
//! <client_ca offset> client_ca.bin` (see `docs/esp8266.md`); [`items`]
//! reads one back (the simulator does, to learn which CA it trusts).
//!
//! ```
//! use tether_esp8266::pki::{encode_ca, items, ItemKind};
//!
//! let pem = b"-----BEGIN CERTIFICATE-----\nMIIB...\n-----END CERTIFICATE-----\n";
//! let mut image = [0xffu8; 256];
//! let len = encode_ca(pem, &mut image)?;
//! let item = items(&image[..len])?.next().unwrap()?;
//! assert_eq!((item.kind, item.id, item.data), (ItemKind::Ca, 0, &pem[..]));
//! # Ok::<(), tether_esp8266::pki::PkiError>(())
//! ```

use core::fmt;

/// The header's magic number.
pub const MAGIC: u16 = 0xF1F1;

/// Size of the `client_ca` partition of the ESP-AT 2.2 ESP8266 builds with
/// 2 MB of flash or more (`module_esp8266_default`, at `0xFC000`); the 1 MB
/// build (`module_esp8266_1mb`, at `0x1C000`) has 4 KiB.
pub const CLIENT_CA_PARTITION_LEN: usize = 8 * 1024;

/// What an item holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ItemKind {
    /// A CA certificate (PEM).
    Ca,
    /// A certificate (PEM).
    Certificate,
    /// A private key (PEM).
    Key,
}

/// One item of a PKI image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item<'a> {
    /// What it is.
    pub kind: ItemKind,
    /// Its id (matches certificates to keys).
    pub id: u8,
    /// The raw content (PEM text).
    pub data: &'a [u8],
}

/// A PKI image that cannot be written or read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum PkiError {
    /// The output buffer is too small.
    BufferTooSmall,
    /// The content is longer than an item can hold (65535 bytes).
    ItemTooLarge,
    /// Not a PKI image (wrong magic number).
    BadMagic,
    /// The image ends before its header or an item says it should.
    Truncated,
    /// An item of an unknown type.
    UnknownKind(u8),
}

impl fmt::Display for PkiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BufferTooSmall => f.write_str("buffer too small for the PKI image"),
            Self::ItemTooLarge => f.write_str("PKI item larger than 65535 bytes"),
            Self::BadMagic => f.write_str("not an ESP-AT PKI image (bad magic number)"),
            Self::Truncated => f.write_str("PKI image truncated"),
            Self::UnknownKind(kind) => write!(f, "unknown PKI item type {kind}"),
        }
    }
}

impl core::error::Error for PkiError {}

const HEADER_LEN: usize = 8;
const ITEM_HEADER_LEN: usize = 4;

fn padded(len: usize) -> Option<usize> {
    len.checked_add(3).map(|l| l & !3)
}

/// Writes the image of one CA certificate (`AtPKI.py generate_bin -b
/// client_ca.bin ca ca.pem`) into `out`; returns its length.
///
/// # Errors
/// [`PkiError::BufferTooSmall`], [`PkiError::ItemTooLarge`].
pub fn encode_ca(pem: &[u8], out: &mut [u8]) -> Result<usize, PkiError> {
    let content_len = u16::try_from(pem.len()).map_err(|_| PkiError::ItemTooLarge)?;
    let item_len = padded(pem.len())
        .and_then(|p| p.checked_add(ITEM_HEADER_LEN))
        .ok_or(PkiError::ItemTooLarge)?;
    let total = item_len
        .checked_add(HEADER_LEN)
        .ok_or(PkiError::ItemTooLarge)?;
    let image = out.get_mut(..total).ok_or(PkiError::BufferTooSmall)?;
    image.fill(0xff);
    let length = u32::try_from(item_len).map_err(|_| PkiError::ItemTooLarge)?;
    let mut header = [0u8; HEADER_LEN + ITEM_HEADER_LEN];
    header[..2].copy_from_slice(&MAGIC.to_le_bytes());
    header[2..4].copy_from_slice(&1u16.to_le_bytes());
    header[4..8].copy_from_slice(&length.to_le_bytes());
    header[8] = 0x01; // CA
    header[9] = 0; // id
    header[10..12].copy_from_slice(&content_len.to_le_bytes());
    image
        .get_mut(..header.len())
        .ok_or(PkiError::BufferTooSmall)?
        .copy_from_slice(&header);
    image
        .get_mut(header.len()..header.len().saturating_add(pem.len()))
        .ok_or(PkiError::BufferTooSmall)?
        .copy_from_slice(pem);
    Ok(total)
}

/// The items of a PKI image (trailing erased flash is ignored).
///
/// # Errors
/// [`PkiError::BadMagic`] or [`PkiError::Truncated`] for the header; each
/// item can still fail on its own.
pub fn items(image: &[u8]) -> Result<Items<'_>, PkiError> {
    let header: &[u8; HEADER_LEN] = image
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(PkiError::Truncated)?;
    if u16::from_le_bytes([header[0], header[1]]) != MAGIC {
        return Err(PkiError::BadMagic);
    }
    let count = u16::from_le_bytes([header[2], header[3]]);
    let length = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let length = usize::try_from(length).map_err(|_| PkiError::Truncated)?;
    let end = HEADER_LEN.checked_add(length).ok_or(PkiError::Truncated)?;
    let body = image.get(HEADER_LEN..end).ok_or(PkiError::Truncated)?;
    Ok(Items {
        rest: body,
        remaining: count,
    })
}

/// Iterator over the items of a PKI image.
#[derive(Debug, Clone)]
pub struct Items<'a> {
    rest: &'a [u8],
    remaining: u16,
}

impl<'a> Iterator for Items<'a> {
    type Item = Result<Item<'a>, PkiError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let result = self.parse_one();
        if result.is_err() {
            self.remaining = 0;
        }
        Some(result)
    }
}

impl<'a> Items<'a> {
    fn parse_one(&mut self) -> Result<Item<'a>, PkiError> {
        let header: &[u8; ITEM_HEADER_LEN] = self
            .rest
            .get(..ITEM_HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(PkiError::Truncated)?;
        let kind = match header[0] {
            1 => ItemKind::Ca,
            2 => ItemKind::Certificate,
            3 => ItemKind::Key,
            other => return Err(PkiError::UnknownKind(other)),
        };
        let id = header[1];
        let len = usize::from(u16::from_le_bytes([header[2], header[3]]));
        let data = self
            .rest
            .get(ITEM_HEADER_LEN..ITEM_HEADER_LEN.saturating_add(len))
            .ok_or(PkiError::Truncated)?;
        let next = padded(len)
            .and_then(|p| p.checked_add(ITEM_HEADER_LEN))
            .ok_or(PkiError::Truncated)?;
        self.rest = self.rest.get(next..).unwrap_or_default();
        Ok(Item { kind, id, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_atpki() {
        // AtPKI.py for a 5-byte "ca.pem" containing "hello": magic, count 1,
        // length 12, type 1, id 0, len 5, data, 3 bytes of 0xFF padding.
        let mut out = [0u8; 32];
        let len = encode_ca(b"hello", &mut out).unwrap();
        assert_eq!(
            &out[..len],
            &[
                0xf1, 0xf1, 1, 0, 12, 0, 0, 0, 1, 0, 5, 0, b'h', b'e', b'l', b'l', b'o', 0xff,
                0xff, 0xff
            ]
        );
    }

    #[test]
    fn bad_images_are_errors() {
        assert_eq!(items(b"\xf1").err(), Some(PkiError::Truncated));
        assert_eq!(items(&[0; 8]).err(), Some(PkiError::BadMagic));
        let image = [0xf1, 0xf1, 1, 0, 8, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            items(&image).unwrap().next(),
            Some(Err(PkiError::UnknownKind(9)))
        );
        let image = [0xf1, 0xf1, 1, 0, 4, 0, 0, 0, 1, 0, 200, 0];
        assert_eq!(
            items(&image).unwrap().next(),
            Some(Err(PkiError::Truncated))
        );
        let mut small = [0u8; 10];
        assert_eq!(
            encode_ca(b"hello", &mut small),
            Err(PkiError::BufferTooSmall)
        );
    }
}
