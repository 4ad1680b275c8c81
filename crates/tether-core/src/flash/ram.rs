//! [`RamFlash`]: NOR flash in RAM, with power cuts on demand.

use core::fmt;

use embedded_storage::nor_flash::{
    ErrorType, MultiwriteNorFlash, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// Why a [`RamFlash`] operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum FlashFault {
    /// Offset or length not aligned to the read, write or erase size.
    NotAligned,
    /// Offset or length outside the flash.
    OutOfBounds,
    /// The power failed during or before this operation (see
    /// [`RamFlash::cut_power_after`]).
    PowerLost,
}

impl fmt::Display for FlashFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotAligned => "flash access not aligned",
            Self::OutOfBounds => "flash access out of bounds",
            Self::PowerLost => "power lost",
        })
    }
}

impl core::error::Error for FlashFault {}

impl NorFlashError for FlashFault {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            Self::NotAligned => NorFlashErrorKind::NotAligned,
            Self::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            Self::PowerLost => NorFlashErrorKind::Other,
        }
    }
}

/// `SIZE` bytes of NOR flash in RAM, shaped like an ESP32's: reads and
/// writes in 4-byte words, 4 KiB erase sectors. Erasing sets `0xFF`;
/// writing can only clear bits (a second write of a word ANDs into it, as
/// on real parts, which is what [`MultiwriteNorFlash`] promises).
///
/// [`RamFlash::cut_power_after`] simulates a power failure: after that many
/// more bytes written or erased, the operation in progress stops half done
/// (a torn word, a partly erased sector) and every later operation fails
/// with [`FlashFault::PowerLost`] until [`RamFlash::power_on`], which is
/// the next boot.
///
/// ```
/// use embedded_storage::nor_flash::{NorFlash, ReadNorFlash};
/// use tether_core::flash::{FlashFault, RamFlash};
///
/// let mut flash = RamFlash::<8192>::new();
/// flash.write(0, &[0x0f; 8])?;
/// flash.write(0, &[0xf1; 4])?; // ANDs: 0x01
/// let mut read = [0; 8];
/// flash.read(0, &mut read)?;
/// assert_eq!(read, [0x01, 0x01, 0x01, 0x01, 0x0f, 0x0f, 0x0f, 0x0f]);
///
/// flash.cut_power_after(2);
/// assert_eq!(flash.write(8, &[0; 4]), Err(FlashFault::PowerLost));
/// assert_eq!(flash.read(0, &mut read), Err(FlashFault::PowerLost));
/// flash.power_on();
/// flash.read(8, &mut read[..4])?;
/// assert_eq!(read[..2], [0, 0]); // the first two bytes made it
/// assert_ne!(read[..4], [0, 0, 0, 0]);
/// # Ok::<(), FlashFault>(())
/// ```
#[derive(Clone)]
pub struct RamFlash<const SIZE: usize> {
    cells: [u8; SIZE],
    /// Bytes that may still be written or erased before the power fails.
    budget: Option<usize>,
    powered: bool,
    bytes_written: u64,
    bytes_erased: u64,
}

impl<const SIZE: usize> fmt::Debug for RamFlash<SIZE> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RamFlash")
            .field("size", &SIZE)
            .field("budget", &self.budget)
            .field("powered", &self.powered)
            .field("bytes_written", &self.bytes_written)
            .field("bytes_erased", &self.bytes_erased)
            .finish_non_exhaustive()
    }
}

impl<const SIZE: usize> Default for RamFlash<SIZE> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const SIZE: usize> RamFlash<SIZE> {
    /// Erased flash (all `0xFF`), powered.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            cells: [0xff; SIZE],
            budget: None,
            powered: true,
            bytes_written: 0,
            bytes_erased: 0,
        }
    }

    /// The power fails after `bytes` more bytes written or erased: the
    /// operation that crosses the limit is left half done.
    pub fn cut_power_after(&mut self, bytes: usize) {
        self.budget = Some(bytes);
    }

    /// Power comes back (the next boot): operations work again, with no
    /// cut planned.
    pub fn power_on(&mut self) {
        self.powered = true;
        self.budget = None;
    }

    /// Whether the power is on.
    #[must_use]
    pub const fn is_powered(&self) -> bool {
        self.powered
    }

    /// Bytes written since creation (a wear and cost measure).
    #[must_use]
    pub const fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Bytes erased since creation.
    #[must_use]
    pub const fn bytes_erased(&self) -> u64 {
        self.bytes_erased
    }

    /// The raw contents.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8] {
        &self.cells
    }

    /// The raw contents, to corrupt in tests.
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        &mut self.cells
    }

    /// Takes `len` bytes of the power budget: how many may be done before
    /// the cut (`len` if no cut comes).
    fn spend(&mut self, len: usize) -> usize {
        match &mut self.budget {
            None => len,
            Some(left) => {
                let done = len.min(*left);
                *left -= done;
                if done < len {
                    self.powered = false;
                }
                done
            }
        }
    }

    fn range(
        &self,
        offset: u32,
        len: usize,
        align: usize,
    ) -> Result<core::ops::Range<usize>, FlashFault> {
        if !self.powered {
            return Err(FlashFault::PowerLost);
        }
        let start = usize::try_from(offset).map_err(|_| FlashFault::OutOfBounds)?;
        let end = start.checked_add(len).ok_or(FlashFault::OutOfBounds)?;
        if end > SIZE {
            return Err(FlashFault::OutOfBounds);
        }
        if !start.is_multiple_of(align) || !len.is_multiple_of(align) {
            return Err(FlashFault::NotAligned);
        }
        Ok(start..end)
    }
}

impl<const SIZE: usize> ErrorType for RamFlash<SIZE> {
    type Error = FlashFault;
}

impl<const SIZE: usize> ReadNorFlash for RamFlash<SIZE> {
    const READ_SIZE: usize = 4;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashFault> {
        let range = self.range(offset, bytes.len(), Self::READ_SIZE)?;
        bytes.copy_from_slice(self.cells.get(range).ok_or(FlashFault::OutOfBounds)?);
        Ok(())
    }

    fn capacity(&self) -> usize {
        SIZE
    }
}

impl<const SIZE: usize> NorFlash for RamFlash<SIZE> {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = 4096;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashFault> {
        let len = usize::try_from(to.checked_sub(from).ok_or(FlashFault::OutOfBounds)?)
            .map_err(|_| FlashFault::OutOfBounds)?;
        let range = self.range(from, len, Self::ERASE_SIZE)?;
        let done = self.spend(len);
        let cells = self.cells.get_mut(range).ok_or(FlashFault::OutOfBounds)?;
        let (erased, rest) = cells.split_at_mut(done);
        erased.fill(0xff);
        self.bytes_erased += done as u64;
        if let Some(torn) = rest.first_mut() {
            // Erasing sets bits: a cell caught in the middle has some of
            // them.
            *torn |= 0x5a;
            return Err(FlashFault::PowerLost);
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashFault> {
        let range = self.range(offset, bytes.len(), Self::WRITE_SIZE)?;
        let done = self.spend(bytes.len());
        let cells = self.cells.get_mut(range).ok_or(FlashFault::OutOfBounds)?;
        for (cell, byte) in cells.iter_mut().zip(bytes).take(done) {
            *cell &= *byte;
        }
        self.bytes_written += done as u64;
        if let (Some(cell), Some(byte)) = (cells.get_mut(done), bytes.get(done)) {
            // Programming clears bits: a cell caught in the middle has
            // only some of them cleared.
            *cell &= *byte | 0x0f;
            return Err(FlashFault::PowerLost);
        }
        Ok(())
    }
}

impl<const SIZE: usize> MultiwriteNorFlash for RamFlash<SIZE> {}

#[cfg(feature = "flash")]
mod nonblocking {
    use embedded_storage_async::nor_flash::{MultiwriteNorFlash, NorFlash, ReadNorFlash};

    use super::{FlashFault, RamFlash};

    impl<const SIZE: usize> ReadNorFlash for RamFlash<SIZE> {
        const READ_SIZE: usize = 4;

        async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashFault> {
            embedded_storage::nor_flash::ReadNorFlash::read(self, offset, bytes)
        }

        fn capacity(&self) -> usize {
            SIZE
        }
    }

    impl<const SIZE: usize> NorFlash for RamFlash<SIZE> {
        const WRITE_SIZE: usize = 4;
        const ERASE_SIZE: usize = 4096;

        async fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashFault> {
            embedded_storage::nor_flash::NorFlash::erase(self, from, to)
        }

        async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashFault> {
            embedded_storage::nor_flash::NorFlash::write(self, offset, bytes)
        }
    }

    impl<const SIZE: usize> MultiwriteNorFlash for RamFlash<SIZE> {}
}
