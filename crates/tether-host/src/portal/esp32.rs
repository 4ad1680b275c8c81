//! The ESP32 flash layout for factory records (see `docs/provisioning.md`).

use tether_core::provisioning::record::{BufferTooSmall, ProvisioningRecord};

/// Flash offset of the `tether` data partition in
/// `docs/esp32-partitions.csv`: `espflash write-bin 0xe000 record.img`.
pub const ESP32_PARTITION_OFFSET: u32 = 0xe000;
/// Size of the `tether` partition: two 4 KiB erase sectors, the two slots
/// of `tether_core::provisioning::store::NorFlashStore` (a power cut during
/// a save leaves the other slot's record in force).
pub const ESP32_PARTITION_SIZE: usize = 0x2000;

/// The whole partition image: the record followed by `0xFF` (erased
/// flash) up to [`ESP32_PARTITION_SIZE`]. `NorFlashStore` reads a bare
/// record at the start of its region as the first slot's, sequence 0; the
/// erased second slot takes the first save on the device.
pub fn esp32_partition_image(record: &ProvisioningRecord) -> Result<Vec<u8>, BufferTooSmall> {
    let mut image = vec![0xff; ESP32_PARTITION_SIZE];
    record.encode(&mut image)?;
    Ok(image)
}
