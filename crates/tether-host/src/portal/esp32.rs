//! The ESP32 flash layout for factory records (see `docs/provisioning.md`).

use tether_core::provisioning::record::{BufferTooSmall, ProvisioningRecord};

/// Flash offset of the `tether` data partition in
/// `docs/esp32-partitions.csv`: `espflash write-bin 0xe000 record.img`.
pub const ESP32_PARTITION_OFFSET: u32 = 0xe000;
/// Size of the `tether` partition: one 4 KiB erase sector.
pub const ESP32_PARTITION_SIZE: usize = 0x1000;

/// The whole partition image: the record followed by `0xFF` (erased
/// flash) up to [`ESP32_PARTITION_SIZE`], the layout
/// `tether_core::provisioning::store::NorFlashStore` reads.
pub fn esp32_partition_image(record: &ProvisioningRecord) -> Result<Vec<u8>, BufferTooSmall> {
    let mut image = vec![0xff; ESP32_PARTITION_SIZE];
    record.encode(&mut image)?;
    Ok(image)
}
