//! A [`ConfigStore`] in a file: the host's stand-in for a flash partition,
//! holding exactly the bytes `tether-provision` writes.

use std::fs;
use std::io::ErrorKind;
use std::path::PathBuf;

use tether_core::provisioning::record::{DecodeError, ProvisioningRecord, RECORD_MAX_LEN};
use tether_core::provisioning::store::{ConfigStore, FlashFault, StoreError};

/// A record kept in one file (or an ESP32 partition image).
#[derive(Debug, Clone)]
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    /// A store at `path`; the file need not exist yet.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }
}

fn io_error(e: &std::io::Error) -> StoreError {
    log::warn!("file store: {e}");
    StoreError::Flash(FlashFault::Other)
}

impl ConfigStore for FileStore {
    fn load(&mut self) -> Result<Option<ProvisioningRecord>, StoreError> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&e)),
        };
        match ProvisioningRecord::decode(&bytes) {
            Ok(record) => Ok(Some(record)),
            Err(DecodeError::NoRecord) => Ok(None),
            Err(e) => Err(StoreError::Corrupt(e)),
        }
    }

    fn save(&mut self, record: &ProvisioningRecord) -> Result<(), StoreError> {
        let mut bytes = [0u8; RECORD_MAX_LEN];
        let n = record
            .encode(&mut bytes)
            .map_err(|_| StoreError::RegionTooSmall)?;
        let data = bytes.get(..n).ok_or(StoreError::RegionTooSmall)?;
        // Write a sibling file and rename it over the old one, so a crash
        // leaves either the old or the new record.
        let temporary = self.path.with_extension("tmp");
        fs::write(&temporary, data).map_err(|e| io_error(&e))?;
        fs::rename(&temporary, &self.path).map_err(|e| io_error(&e))
    }

    fn erase(&mut self) -> Result<(), StoreError> {
        match fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(&e)),
        }
    }
}
