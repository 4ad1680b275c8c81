//! One flash driver for two users: the provisioning record (tether-core's
//! two-slot `NorFlashStore`) and the outbox (tether-core's `FlashOutbox`),
//! each in its own partition (`partitions.csv`). Every flash call
//! completes before it returns, so the lock is held only inside one call.

use core::cell::RefCell;

use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;

use embedded_storage::nor_flash::{ErrorType, MultiwriteNorFlash, NorFlash, ReadNorFlash};
use esp_storage::{FlashStorage, FlashStorageError};

/// The chip's flash, shared.
#[derive(Clone, Copy)]
pub struct SharedFlash(pub &'static Mutex<CriticalSectionRawMutex, RefCell<FlashStorage<'static>>>);

impl ErrorType for SharedFlash {
    type Error = FlashStorageError;
}

impl ReadNorFlash for SharedFlash {
    const READ_SIZE: usize = <FlashStorage<'static> as ReadNorFlash>::READ_SIZE;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.0.lock(|flash| flash.borrow_mut().read(offset, bytes))
    }

    fn capacity(&self) -> usize {
        self.0.lock(|flash| flash.borrow().capacity())
    }
}

impl NorFlash for SharedFlash {
    const WRITE_SIZE: usize = <FlashStorage<'static> as NorFlash>::WRITE_SIZE;
    const ERASE_SIZE: usize = <FlashStorage<'static> as NorFlash>::ERASE_SIZE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.0.lock(|flash| flash.borrow_mut().erase(from, to))
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.0.lock(|flash| flash.borrow_mut().write(offset, bytes))
    }
}

// esp-storage's driver may write a word twice (it is `MultiwriteNorFlash`);
// so may this view of it.
impl MultiwriteNorFlash for SharedFlash {}
