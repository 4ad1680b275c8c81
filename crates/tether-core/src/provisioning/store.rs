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
//! [`NorFlashStore`] (two slots of NOR flash that survive a power cut
//! during a save, for firmware).

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

/// The magic of a slot written by [`NorFlashStore`] (a bare record starts
/// with the record's own magic, `TTHR`).
const SLOT_MAGIC: [u8; 4] = *b"TSLT";
/// Slot header: magic, sequence number, CRC-32 of sequence and record.
const SLOT_HEADER_LEN: usize = 12;
/// The largest slot content, rounded up to 512: room for it padded to any
/// read or write unit NOR flash drivers use.
const SLOT_BUFFER_LEN: usize = (SLOT_HEADER_LEN + RECORD_MAX_LEN).next_multiple_of(512);

const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// What one slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Erased flash.
    Blank,
    /// A record and its sequence number (0 for a bare record written by
    /// `tether-provision` or an older firmware).
    Record(u32),
    /// Anything else: a write or erase cut short, or damage.
    Damaged(DecodeError),
}

/// A [`ConfigStore`] in NOR flash that survives a power cut at any moment
/// (for the ESP32, the `tether` data partition of `docs/provisioning.md`,
/// driven by `esp-storage`).
///
/// The region starts at `offset` (aligned to the flash's erase size) and
/// holds two slots of one erase sector each (for records of up to
/// [`RECORD_MAX_LEN`] bytes; [`NorFlashStore::region_len`] in all). Each
/// slot is a 12-byte header (magic `TSLT`, a sequence number, a CRC-32 of
/// both the sequence number and the record) followed by the record:
///
/// ```text
///  offset            slot A                     offset + sector   slot B
///  ┌──────┬─────┬─────┬────────────┐            ┌──────┬─────┬─────┬────────────┐
///  │"TSLT"│ seq │ CRC │ record ... │            │"TSLT"│seq+1│ CRC │ record ... │
///  └──────┴─────┴─────┴────────────┘            └──────┴─────┴─────┴────────────┘
/// ```
///
/// [`load`](ConfigStore::load) takes the valid slot with the higher
/// sequence number; [`save`](ConfigStore::save) erases and writes the
/// *other* slot with the next number. A power cut during a save (a token
/// rotation, new Wi-Fi settings) therefore leaves the previous record
/// intact and in force: the half-written slot fails its CRC and is ignored.
/// [`erase`](ConfigStore::erase) erases the older slot first, then the one
/// in force, so a cut leaves either the record or nothing valid.
///
/// A bare record at the start of the region (what `tether-provision`
/// writes, and what the single-slot store of earlier versions wrote) counts
/// as slot A with sequence number 0: the first save after it goes to slot
/// B.
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

    /// Bytes of one slot: the largest slot content rounded up to whole
    /// erase sectors.
    #[must_use]
    pub fn slot_len() -> usize {
        let sector = F::ERASE_SIZE.max(1);
        (SLOT_HEADER_LEN + RECORD_MAX_LEN).div_ceil(sector) * sector
    }

    /// Bytes of the whole region: two slots (8 KiB on 4 KiB sectors).
    #[must_use]
    pub fn region_len() -> usize {
        2 * Self::slot_len()
    }

    fn fault(e: F::Error) -> StoreError {
        StoreError::Flash(e.kind().into())
    }

    fn slot_offset(&self, slot: usize) -> Result<u32, StoreError> {
        let len = u32::try_from(Self::slot_len() * slot).map_err(|_| StoreError::RegionTooSmall)?;
        self.offset
            .checked_add(len)
            .ok_or(StoreError::RegionTooSmall)
    }

    /// Reads slot `slot` (0 or 1) into `bytes` and says what it holds.
    fn read_slot<'b>(
        &mut self,
        slot: usize,
        bytes: &'b mut [u8; SLOT_BUFFER_LEN],
    ) -> Result<(Slot, &'b [u8]), StoreError> {
        // Read whole read units (esp-storage reads words).
        let len = (SLOT_HEADER_LEN + RECORD_MAX_LEN)
            .next_multiple_of(F::READ_SIZE.max(1))
            .min(Self::slot_len());
        let bytes = bytes.get_mut(..len).ok_or(StoreError::RegionTooSmall)?;
        let offset = self.slot_offset(slot)?;
        self.flash.read(offset, bytes).map_err(Self::fault)?;
        let bytes: &'b [u8] = bytes;
        if bytes.iter().all(|b| *b == 0xff) {
            return Ok((Slot::Blank, bytes));
        }
        let Some((header, record)) = bytes.split_at_checked(SLOT_HEADER_LEN) else {
            return Ok((Slot::Damaged(DecodeError::Truncated), bytes));
        };
        if header.get(..4) != Some(&SLOT_MAGIC[..]) {
            // A bare record (sequence 0) is only ever found in slot A.
            return Ok(match (slot, ProvisioningRecord::decode(bytes)) {
                (0, Ok(_)) => (Slot::Record(0), bytes),
                (_, Ok(_)) => (Slot::Damaged(DecodeError::NoRecord), bytes),
                (_, Err(e)) => (Slot::Damaged(e), bytes),
            });
        }
        let field = |range: core::ops::Range<usize>| -> Option<[u8; 4]> {
            header.get(range)?.try_into().ok()
        };
        let (Some(sequence), Some(crc)) = (field(4..8), field(8..12)) else {
            return Ok((Slot::Damaged(DecodeError::Truncated), bytes));
        };
        let record_len = match ProvisioningRecord::decode_with_len(record) {
            Ok((_, len)) => len,
            Err(e) => return Ok((Slot::Damaged(e), bytes)),
        };
        let record = record.get(..record_len).unwrap_or_default();
        let mut digest = CRC32.digest();
        digest.update(&sequence);
        digest.update(record);
        if digest.finalize() != u32::from_le_bytes(crc) {
            return Ok((Slot::Damaged(DecodeError::Checksum), bytes));
        }
        Ok((Slot::Record(u32::from_le_bytes(sequence)), record))
    }

    /// The sequence numbers of both slots (`None`: no valid record), and
    /// the first damage seen.
    fn survey(&mut self) -> Result<([Option<u32>; 2], Option<DecodeError>), StoreError> {
        let mut buffer = [0u8; SLOT_BUFFER_LEN];
        let mut sequences = [None; 2];
        let mut damage = None;
        for (slot, sequence) in sequences.iter_mut().enumerate() {
            match self.read_slot(slot, &mut buffer)?.0 {
                Slot::Blank => {}
                Slot::Record(n) => *sequence = Some(n),
                Slot::Damaged(e) => damage = damage.or(Some(e)),
            }
        }
        Ok((sequences, damage))
    }

    /// The slot in force: the valid one with the higher sequence number.
    fn current(sequences: [Option<u32>; 2]) -> Option<(usize, u32)> {
        match sequences {
            [Some(a), Some(b)] if b > a => Some((1, b)),
            [Some(a), _] => Some((0, a)),
            [None, Some(b)] => Some((1, b)),
            [None, None] => None,
        }
    }

    fn erase_slot(&mut self, slot: usize) -> Result<(), StoreError> {
        let start = self.slot_offset(slot)?;
        let end = self.slot_offset(slot + 1)?;
        self.flash.erase(start, end).map_err(Self::fault)
    }
}

impl<F: NorFlash> ConfigStore for NorFlashStore<F> {
    fn load(&mut self) -> Result<Option<ProvisioningRecord>, StoreError> {
        let (sequences, damage) = self.survey()?;
        match Self::current(sequences) {
            Some((slot, _)) => {
                let mut buffer = [0u8; SLOT_BUFFER_LEN];
                let (_, record) = self.read_slot(slot, &mut buffer)?;
                decode_stored(record)
            }
            None => match damage {
                // Something was written and none of it is valid: treat
                // the device as unconfigured, and say why.
                Some(e) => {
                    warn!("provisioning: stored record rejected: {:?}", e);
                    Err(StoreError::Corrupt(e))
                }
                None => Ok(None),
            },
        }
    }

    fn save(&mut self, record: &ProvisioningRecord) -> Result<(), StoreError> {
        let (sequences, _) = self.survey()?;
        let (target, sequence) = match Self::current(sequences) {
            Some((slot, n)) => (1 - slot, n.saturating_add(1)),
            None => (0, 1),
        };
        // Header, record, padding to a whole number of write units.
        let mut bytes = [0xff; SLOT_BUFFER_LEN];
        let (header, body) = bytes.split_at_mut(SLOT_HEADER_LEN);
        let n = record
            .encode(body)
            .map_err(|_| StoreError::RegionTooSmall)?;
        let mut digest = CRC32.digest();
        digest.update(&sequence.to_le_bytes());
        digest.update(body.get(..n).unwrap_or_default());
        header[..4].copy_from_slice(&SLOT_MAGIC);
        header[4..8].copy_from_slice(&sequence.to_le_bytes());
        header[8..].copy_from_slice(&digest.finalize().to_le_bytes());
        let padded = (SLOT_HEADER_LEN + n).next_multiple_of(F::WRITE_SIZE.max(1));
        let data = bytes.get(..padded).ok_or(StoreError::RegionTooSmall)?;
        self.erase_slot(target)?;
        let offset = self.slot_offset(target)?;
        self.flash.write(offset, data).map_err(Self::fault)?;
        info!(
            "provisioning: record saved in slot {} as {} ({} bytes)",
            target, sequence, n
        );
        Ok(())
    }

    fn erase(&mut self) -> Result<(), StoreError> {
        let (sequences, _) = self.survey()?;
        let last = Self::current(sequences).map_or(0, |(slot, _)| slot);
        self.erase_slot(1 - last)?;
        self.erase_slot(last)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use rand_core::{RngCore, SeedableRng};
    use rand_xorshift::XorShiftRng;

    use super::*;
    use crate::flash::RamFlash;

    type Flash = RamFlash<{ 4 * 4096 }>;

    fn record() -> ProvisioningRecord {
        ProvisioningRecord::new("wss://relay.example.com", "dev-1", "token")
            .and_then(|r| r.with_wifi("Home", "password1"))
            .unwrap()
    }

    /// The record after `n` token rotations.
    fn rotated(n: u32) -> ProvisioningRecord {
        ProvisioningRecord::new(
            "wss://relay.example.com",
            "dev-1",
            &std::format!("token-{n}"),
        )
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
    fn nor_flash_store_alternates_slots_and_keeps_the_newest() {
        assert_eq!(NorFlashStore::<Flash>::slot_len(), 4096);
        assert_eq!(NorFlashStore::<Flash>::region_len(), 8192);
        let mut store = NorFlashStore::new(Flash::new(), 4096);
        assert_eq!(store.load(), Ok(None));
        store.save(&record()).unwrap();
        assert_eq!(store.load(), Ok(Some(record())));
        for n in 1..=5 {
            store.save(&rotated(n)).unwrap();
            assert_eq!(store.load(), Ok(Some(rotated(n))));
        }
        let flash = store.into_inner();
        // Slot A (4096) holds saves 1, 3, 5 and slot B (8192) 2, 4, 6.
        assert_eq!(&flash.as_bytes()[4096..4100], b"TSLT");
        assert_eq!(&flash.as_bytes()[4100..4104], &5u32.to_le_bytes());
        assert_eq!(&flash.as_bytes()[8196..8200], &6u32.to_le_bytes());
        assert!(
            flash.as_bytes()[..4096].iter().all(|b| *b == 0xff),
            "outside the region"
        );
        assert!(
            flash.as_bytes()[12288..].iter().all(|b| *b == 0xff),
            "outside the region"
        );
        let mut store = NorFlashStore::new(flash, 4096);
        store.erase().unwrap();
        assert_eq!(store.load(), Ok(None));
    }

    #[test]
    fn nor_flash_store_reads_a_bare_record_and_rotates_away_from_it() {
        // What `tether-provision` writes and the single-slot store wrote:
        // the record itself at the start of the region.
        let mut flash = Flash::new();
        let mut image = [0xff; 512];
        let n = record().encode(&mut image).unwrap();
        embedded_storage::nor_flash::NorFlash::write(
            &mut flash,
            0,
            &image[..n.next_multiple_of(4)],
        )
        .unwrap();
        let mut store = NorFlashStore::new(flash, 0);
        assert_eq!(store.load(), Ok(Some(record())));
        store.save(&rotated(1)).unwrap();
        assert_eq!(store.load(), Ok(Some(rotated(1))));
        // The bare record is untouched in slot A until the next save.
        let flash = store.into_inner();
        assert_eq!(&flash.as_bytes()[..4], b"TTHR");
        assert_eq!(&flash.as_bytes()[4096..4100], b"TSLT");
    }

    #[test]
    fn nor_flash_store_reports_damage_and_refuses_bad_regions() {
        let mut store = NorFlashStore::new(Flash::new(), 0);
        store.save(&record()).unwrap();
        let mut flash = store.into_inner();
        flash.as_bytes_mut()[40] ^= 0x01;
        let mut store = NorFlashStore::new(flash, 0);
        assert!(matches!(store.load(), Err(StoreError::Corrupt(_))));
        // Damage in one slot with a good record in the other: the good one.
        store.save(&rotated(1)).unwrap();
        store.save(&rotated(2)).unwrap();
        let mut flash = store.into_inner();
        flash.as_bytes_mut()[4096 + 40] ^= 0x01; // slot B: rotation 2
        let mut store = NorFlashStore::new(flash, 0);
        assert_eq!(store.load(), Ok(Some(rotated(1))));

        let mut misaligned = NorFlashStore::new(Flash::new(), 100);
        assert_eq!(
            misaligned.save(&record()),
            Err(StoreError::Flash(FlashFault::NotAligned))
        );
        let mut outside = NorFlashStore::new(Flash::new(), 3 * 4096);
        assert_eq!(
            outside.save(&record()),
            Err(StoreError::Flash(FlashFault::OutOfBounds))
        );
    }

    /// Seeded power cuts during token rotations and factory resets: after
    /// every cut the store holds the last record saved, or the one being
    /// saved; a cut reset leaves the last record or none. Never a lost
    /// token. `TETHER_POWER_CUTS` sets how many cuts (default 2000).
    #[test]
    fn power_cuts_never_lose_the_record() {
        let cuts: u64 = std::env::var("TETHER_POWER_CUTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2_000);
        let mut torn = 0;
        for seed in 0..cuts {
            let mut rng = XorShiftRng::seed_from_u64(seed);
            let mut store = NorFlashStore::new(Flash::new(), 4096);
            store.save(&rotated(0)).unwrap();
            let mut committed = 0;
            for n in 1..=(1 + rng.next_u32() % 4) {
                store.save(&rotated(n)).unwrap();
                committed = n;
            }
            let mut flash = store.into_inner();
            // One erase sector plus one slot write, and a little beyond.
            let cut = usize::try_from(rng.next_u32() % 4_700).unwrap();
            flash.cut_power_after(cut);
            let erasing = rng.next_u32() % 8 == 0;
            let mut store = NorFlashStore::new(flash, 4096);
            let attempt = committed + 1;
            let result = if erasing {
                store.erase()
            } else {
                store.save(&rotated(attempt))
            };
            let mut flash = store.into_inner();
            flash.power_on();
            torn += usize::from(result.is_err());
            let mut store = NorFlashStore::new(flash, 4096);
            let loaded = store.load();
            match (erasing, result) {
                (false, Ok(())) => assert_eq!(loaded, Ok(Some(rotated(attempt))), "seed {seed}"),
                (false, Err(_)) => assert!(
                    loaded == Ok(Some(rotated(committed))) || loaded == Ok(Some(rotated(attempt))),
                    "seed {seed}, cut at {cut}: {loaded:?}"
                ),
                (true, Ok(())) => assert_eq!(loaded, Ok(None), "seed {seed}"),
                (true, Err(_)) => assert!(
                    matches!(loaded, Ok(None) | Err(StoreError::Corrupt(_)))
                        || loaded == Ok(Some(rotated(committed))),
                    "seed {seed}, cut at {cut}: {loaded:?}"
                ),
            }
            // And the store keeps working after the cut.
            store.save(&rotated(99)).unwrap();
            assert_eq!(store.load(), Ok(Some(rotated(99))), "seed {seed}");
        }
        assert!(
            torn > cuts as usize / 2,
            "only {torn} of {cuts} operations were cut"
        );
    }
}
