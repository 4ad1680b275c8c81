//! Where the [`ProvisioningRecord`] lives between boots.
//!
//! [`ConfigStore`] is blocking on purpose. The backends that matter are NOR
//! flash through [`embedded_storage::nor_flash::NorFlash`] (which `esp-storage`
//! implements for the ESP32 family, blocking), and on the ESP32 a flash erase
//! or write stalls the instruction cache of both cores anyway, so an `async`
//! signature would promise concurrency the hardware cannot give. The record is
//! under 400 bytes and written only when the device is provisioned, so the
//! call is short and rare; a blocking trait also keeps it callable from a
//! reset-button interrupt handler or a host command.
//!
//! Two implementations: [`MemoryStore`] (RAM, for tests and hosts) and
//! [`NorFlashStore`] (one erase sector of NOR flash, for firmware).

use core::fmt;

use embedded_storage::nor_flash::{NorFlash, NorFlashError, NorFlashErrorKind};

use super::record::{DecodeError, ProvisioningRecord, RECORD_MAX_LEN};

/// Why a [`ConfigStore`] call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum StoreError {
    /// A record is stored but does not decode (bad CRC, unknown version,
    /// broken field): treat the device as unconfigured.
    Corrupt(DecodeError),
    /// The storage region is smaller than the record.
    RegionTooSmall,
    /// The flash reported an error.
    Flash(FlashFault),
}

/// What went wrong in the flash driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum FlashFault {
    /// Offset or length not aligned to the flash's write or erase size.
    NotAligned,
    /// Offset or length outside the flash.
    OutOfBounds,
    /// Any other driver error.
    Other,
}

impl From<NorFlashErrorKind> for FlashFault {
    fn from(kind: NorFlashErrorKind) -> Self {
        match kind {
            NorFlashErrorKind::NotAligned => Self::NotAligned,
            NorFlashErrorKind::OutOfBounds => Self::OutOfBounds,
            _ => Self::Other,
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Corrupt(e) => write!(f, "stored record is corrupt: {e}"),
            Self::RegionTooSmall => f.write_str("storage region too small for the record"),
            Self::Flash(e) => write!(f, "flash error: {e:?}"),
        }
    }
}

impl core::error::Error for StoreError {}

/// Persistent storage for one [`ProvisioningRecord`].
pub trait ConfigStore {
    /// The stored record, `Ok(None)` when nothing was ever saved (or it was
    /// erased), `Err(StoreError::Corrupt(_))` when the bytes are damaged.
    fn load(&mut self) -> Result<Option<ProvisioningRecord>, StoreError>;
    /// Replaces the stored record.
    fn save(&mut self, record: &ProvisioningRecord) -> Result<(), StoreError>;
    /// Forgets the stored record (factory reset).
    fn erase(&mut self) -> Result<(), StoreError>;
}

fn decode_stored(bytes: &[u8]) -> Result<Option<ProvisioningRecord>, StoreError> {
    match ProvisioningRecord::decode(bytes) {
        Ok(record) => Ok(Some(record)),
        Err(DecodeError::NoRecord) => Ok(None),
        Err(e) => {
            warn!("provisioning: stored record rejected: {:?}", e);
            Err(StoreError::Corrupt(e))
        }
    }
}

/// A [`ConfigStore`] in RAM that keeps the *encoded* bytes, so loads go
/// through the same decoder and CRC check as flash.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    bytes: [u8; RECORD_MAX_LEN],
    saves: u32,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store (reads like blank flash).
    pub const fn new() -> Self {
        Self {
            bytes: [0xff; RECORD_MAX_LEN],
            saves: 0,
        }
    }

    /// The raw stored bytes, for inspection and for corrupting in tests.
    pub fn raw_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }

    /// How many times [`ConfigStore::save`] succeeded.
    pub const fn saves(&self) -> u32 {
        self.saves
    }
}

impl ConfigStore for MemoryStore {
    fn load(&mut self) -> Result<Option<ProvisioningRecord>, StoreError> {
        decode_stored(&self.bytes)
    }

    fn save(&mut self, record: &ProvisioningRecord) -> Result<(), StoreError> {
        let mut bytes = [0xff; RECORD_MAX_LEN];
        record
            .encode(&mut bytes)
            .map_err(|_| StoreError::RegionTooSmall)?;
        self.bytes = bytes;
        self.saves = self.saves.saturating_add(1);
        Ok(())
    }

    fn erase(&mut self) -> Result<(), StoreError> {
        self.bytes = [0xff; RECORD_MAX_LEN];
        Ok(())
    }
}

/// [`RECORD_MAX_LEN`] rounded up to 512: room for the record padded to any
/// read or write unit NOR flash drivers use.
const READ_BUFFER_LEN: usize = RECORD_MAX_LEN.next_multiple_of(512);

/// A [`ConfigStore`] in one region of NOR flash (for the ESP32, the `tether`
/// data partition of `docs/provisioning.md`, driven by `esp-storage`).
///
/// The region starts at `offset`, must be aligned to the flash's erase size
/// and is `ERASE_SIZE` rounded up to hold [`RECORD_MAX_LEN`] bytes. A save
/// erases the region and writes the record padded with `0xFF` to the write
/// size; a power cut in between leaves blank flash (no record) or a record
/// whose CRC fails, both of which send the device back to the portal.
#[derive(Debug)]
pub struct NorFlashStore<F> {
    flash: F,
    offset: u32,
}

impl<F: NorFlash> NorFlashStore<F> {
    /// A store at `offset` of `flash`.
    pub const fn new(flash: F, offset: u32) -> Self {
        Self { flash, offset }
    }

    /// Gives the flash back.
    pub fn into_inner(self) -> F {
        self.flash
    }

    fn region_len() -> usize {
        RECORD_MAX_LEN.div_ceil(F::ERASE_SIZE.max(1)) * F::ERASE_SIZE.max(1)
    }

    fn fault(e: F::Error) -> StoreError {
        StoreError::Flash(e.kind().into())
    }
}

impl<F: NorFlash> ConfigStore for NorFlashStore<F> {
    fn load(&mut self) -> Result<Option<ProvisioningRecord>, StoreError> {
        // Read whole read units (esp-storage reads words).
        let mut bytes = [0u8; READ_BUFFER_LEN];
        let len = RECORD_MAX_LEN
            .next_multiple_of(F::READ_SIZE.max(1))
            .min(Self::region_len());
        let bytes = bytes.get_mut(..len).ok_or(StoreError::RegionTooSmall)?;
        self.flash.read(self.offset, bytes).map_err(Self::fault)?;
        decode_stored(bytes)
    }

    fn save(&mut self, record: &ProvisioningRecord) -> Result<(), StoreError> {
        // Pad to a whole number of write units.
        let mut bytes = [0xff; READ_BUFFER_LEN];
        let n = record
            .encode(&mut bytes)
            .map_err(|_| StoreError::RegionTooSmall)?;
        let write_size = F::WRITE_SIZE.max(1);
        let padded = n.next_multiple_of(write_size);
        let data = bytes.get(..padded).ok_or(StoreError::RegionTooSmall)?;
        self.erase()?;
        self.flash.write(self.offset, data).map_err(Self::fault)?;
        info!("provisioning: record saved ({} bytes)", n);
        Ok(())
    }

    fn erase(&mut self) -> Result<(), StoreError> {
        let len = u32::try_from(Self::region_len()).map_err(|_| StoreError::RegionTooSmall)?;
        let end = self
            .offset
            .checked_add(len)
            .ok_or(StoreError::RegionTooSmall)?;
        self.flash.erase(self.offset, end).map_err(Self::fault)
    }
}

#[cfg(test)]
mod tests {
    use embedded_storage::nor_flash::{ErrorType, ReadNorFlash};

    use super::*;

    /// NOR flash semantics in RAM: erase sets 0xFF, write can only clear
    /// bits, alignment is enforced as on real parts.
    struct RamFlash {
        cells: [u8; 8192],
    }

    impl ErrorType for RamFlash {
        type Error = NorFlashErrorKind;
    }

    impl ReadNorFlash for RamFlash {
        const READ_SIZE: usize = 1;
        fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
            let start = offset as usize;
            let src = self
                .cells
                .get(start..start + bytes.len())
                .ok_or(NorFlashErrorKind::OutOfBounds)?;
            bytes.copy_from_slice(src);
            Ok(())
        }
        fn capacity(&self) -> usize {
            self.cells.len()
        }
    }

    impl NorFlash for RamFlash {
        const WRITE_SIZE: usize = 4;
        const ERASE_SIZE: usize = 4096;
        fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
            embedded_storage::nor_flash::check_erase(self, from, to)?;
            self.cells[from as usize..to as usize].fill(0xff);
            Ok(())
        }
        fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
            embedded_storage::nor_flash::check_write(self, offset, bytes.len())?;
            for (cell, b) in self.cells[offset as usize..].iter_mut().zip(bytes) {
                *cell &= *b;
            }
            Ok(())
        }
    }

    fn record() -> ProvisioningRecord {
        ProvisioningRecord::new("wss://relay.example.com", "dev-1", "token")
            .and_then(|r| r.with_wifi("Home", "password1"))
            .unwrap()
    }

    #[test]
    fn memory_store_round_trip_erase_and_corruption() {
        let mut store = MemoryStore::new();
        assert_eq!(store.load(), Ok(None));
        store.save(&record()).unwrap();
        assert_eq!(store.load(), Ok(Some(record())));
        store.raw_mut()[12] ^= 0x01;
        assert_eq!(
            store.load(),
            Err(StoreError::Corrupt(DecodeError::Checksum))
        );
        store.erase().unwrap();
        assert_eq!(store.load(), Ok(None));
    }

    #[test]
    fn nor_flash_store_round_trip_overwrite_and_bounds() {
        let mut store = NorFlashStore::new(RamFlash { cells: [0; 8192] }, 4096);
        // Never-erased flash full of zeros: no magic, no record.
        assert_eq!(store.load(), Ok(None));
        store.save(&record()).unwrap();
        assert_eq!(store.load(), Ok(Some(record())));
        // A second save must erase first, or the NOR AND would garble it.
        let other = ProvisioningRecord::new("ws://10.1.2.3:9000", "dev-2", "zzz").unwrap();
        store.save(&other).unwrap();
        assert_eq!(store.load(), Ok(Some(other)));
        store.erase().unwrap();
        assert_eq!(store.load(), Ok(None));
        let flash = store.into_inner();
        assert!(
            flash.cells[..4096].iter().all(|b| *b == 0),
            "outside region"
        );

        let mut misaligned = NorFlashStore::new(RamFlash { cells: [0; 8192] }, 100);
        assert_eq!(
            misaligned.save(&record()),
            Err(StoreError::Flash(FlashFault::NotAligned))
        );
        let mut outside = NorFlashStore::new(RamFlash { cells: [0; 8192] }, 8192);
        assert_eq!(
            outside.erase(),
            Err(StoreError::Flash(FlashFault::OutOfBounds))
        );
    }
}
