//! [`Blocking`]: a blocking `embedded-storage` flash as an async
//! `embedded-storage-async` one.

use embedded_storage::nor_flash as blocking;
use embedded_storage_async::nor_flash as nonblocking;

/// Wraps a blocking NOR flash driver (such as `esp-storage`'s
/// `FlashStorage`) so async code (the [`FlashOutbox`](super::FlashOutbox))
/// can use it. Every call completes in one poll: the flash stalls the CPU
/// while it works, as it does anyway on chips that execute from the same
/// flash.
#[derive(Debug, Default)]
pub struct Blocking<F>(pub F);

impl<F> Blocking<F> {
    /// Wraps `flash`.
    pub const fn new(flash: F) -> Self {
        Self(flash)
    }

    /// Gives the driver back.
    pub fn into_inner(self) -> F {
        self.0
    }
}

impl<F: blocking::ErrorType> blocking::ErrorType for Blocking<F> {
    type Error = F::Error;
}

impl<F: blocking::ReadNorFlash> nonblocking::ReadNorFlash for Blocking<F> {
    const READ_SIZE: usize = F::READ_SIZE;

    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.0.read(offset, bytes)
    }

    fn capacity(&self) -> usize {
        self.0.capacity()
    }
}

impl<F: blocking::NorFlash> nonblocking::NorFlash for Blocking<F> {
    const WRITE_SIZE: usize = F::WRITE_SIZE;
    const ERASE_SIZE: usize = F::ERASE_SIZE;

    async fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.0.erase(from, to)
    }

    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.0.write(offset, bytes)
    }
}

impl<F: blocking::MultiwriteNorFlash> nonblocking::MultiwriteNorFlash for Blocking<F> {}
