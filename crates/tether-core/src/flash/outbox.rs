//! [`FlashOutbox`]: the outbox in NOR flash, through `sequential-storage`.

use core::fmt;
use core::ops::Range;

use embedded_storage_async::nor_flash::MultiwriteNorFlash;
use sequential_storage::cache::{Cache, Uncached};
use sequential_storage::queue::{QueueConfig, QueueStorage};

use crate::outbox::{
    Entry, Outbox, PushError, Restored, StorageError, Timestamp, decode_entry, encode_into,
};

/// Bytes in front of every stored entry: the boot id it was published
/// under.
const BOOT_ID_LEN: usize = 8;

/// The read buffer a [`FlashOutbox`] needs for payloads of up to `payload`
/// bytes on channels of up to `tether_proto::MAX_CHANNEL_LEN` bytes.
#[must_use]
pub const fn entry_buffer_len(payload: usize) -> usize {
    BOOT_ID_LEN + Entry::HEADER_LEN + tether_proto::MAX_CHANNEL_LEN + payload
}

type NoCache = Cache<Uncached, Uncached, Uncached>;

/// An [`Outbox`] in a region of NOR flash: published messages survive a
/// reboot or a power cut.
///
/// The region (`range`, whole erase sectors, at least two) holds a
/// `sequential-storage` queue: entries are appended, freed entries are
/// marked, and a sector is erased only once nothing in it is live, in
/// turn, which spreads the wear over the whole region. Every item carries a
/// CRC, so a write or erase cut by a power failure is detected and repaired
/// at the next start; a message whose write was cut was never reported
/// stored, and no stored message is lost.
///
/// Each entry is stored as the boot id it was published under, then the
/// [`RamOutbox`](crate::outbox::RamOutbox) layout (13-byte header, channel,
/// payload). After a reboot, [`FlashOutbox::mount`] finds the entries left
/// and reports them ([`Outbox::restored`]): the client resumes their boot
/// id and numbering, so the server recognises what it already stored. Their
/// boot-relative times ([`Timestamp::Boot`]) belonged to the old boot's
/// clock and read back as unknown.
///
/// `ENTRY` is the RAM buffer entries are read into: at least
/// [`entry_buffer_len`] of the client's payload capacity, and at least the
/// largest entry ever stored in the region. No other RAM is used; every
/// operation reads the flash (no cache), so keep the region to a few dozen
/// sectors.
///
/// `F` is an async `embedded-storage-async` flash that can write a word
/// twice ([`MultiwriteNorFlash`]: ESP32, RP2040 and most NOR parts); wrap a
/// blocking driver (`esp-storage`) in [`Blocking`](super::Blocking).
///
/// ```
/// use tether_core::flash::{FlashOutbox, RamFlash};
/// use tether_core::outbox::{Entry, FullPolicy, Outbox};
///
/// # embassy_futures::block_on(async {
/// let mut flash = RamFlash::<{ 4 * 4096 }>::new();
/// let mut outbox = FlashOutbox::<_, 512>::mount(&mut flash, 0..4 * 4096).await?;
/// assert_eq!(outbox.restored(), None);
/// outbox.start_boot(0x0123_4567_89ab_cdef);
/// for seq in 1..=3 {
///     outbox.push(Entry::new(seq, "temp", b"21.5"), FullPolicy::Reject).await?;
/// }
/// outbox.ack_through(1).await?;
/// drop(outbox);
///
/// // Power cycle: what was not acknowledged is still there, under its boot.
/// let mut outbox = FlashOutbox::<_, 512>::mount(&mut flash, 0..4 * 4096).await?;
/// let restored = outbox.restored().unwrap();
/// assert_eq!((restored.boot_id, restored.first_seq, restored.last_seq), (0x0123_4567_89ab_cdef, 2, 3));
/// let next = outbox.read_after(1).await?.unwrap();
/// assert_eq!((next.seq, next.channel, next.payload), (2, "temp", &b"21.5"[..]));
/// # Ok::<(), tether_core::outbox::PushError>(())
/// # }).unwrap();
/// ```
pub struct FlashOutbox<F: MultiwriteNorFlash, const ENTRY: usize = 512> {
    queue: QueueStorage<F, NoCache>,
    buffer: [u8; ENTRY],
    boot_id: u64,
    newest: Option<u32>,
    len: usize,
    used: usize,
    capacity: usize,
    dropped: u32,
    restored: Option<Restored>,
}

impl<F: MultiwriteNorFlash, const ENTRY: usize> fmt::Debug for FlashOutbox<F, ENTRY> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlashOutbox")
            .field("range", &self.queue.flash_range())
            .field("boot_id", &self.boot_id)
            .field("newest", &self.newest)
            .field("len", &self.len)
            .field("used", &self.used)
            .field("dropped", &self.dropped)
            .field("restored", &self.restored)
            .finish_non_exhaustive()
    }
}

/// What a stored item holds.
fn decode_item(bytes: &[u8]) -> Option<(u64, Entry<'_>)> {
    let (boot, rest) = bytes.split_at_checked(BOOT_ID_LEN)?;
    let boot = u64::from_le_bytes(boot.try_into().ok()?);
    let (entry, len) = decode_entry(rest)?;
    (len == rest.len()).then_some((boot, entry))
}

fn storage_error<E>(error: sequential_storage::Error<E>) -> StorageError {
    match error {
        sequential_storage::Error::Storage { .. } => StorageError::Device,
        _ => StorageError::Corrupt,
    }
}

impl<F: MultiwriteNorFlash, const ENTRY: usize> FlashOutbox<F, ENTRY> {
    /// Opens the outbox in `range` of `flash` (whole erase sectors, at
    /// least two), repairing what a power cut interrupted, and counts what
    /// it holds. Blank flash is an empty outbox.
    ///
    /// # Errors
    /// [`StorageError::Region`] if `range` is not whole sectors; the flash
    /// failed or holds data it cannot repair.
    pub async fn mount(flash: F, range: Range<u32>) -> Result<Self, StorageError> {
        let erase = u32::try_from(F::ERASE_SIZE).map_err(|_| StorageError::Region)?;
        let sectors = (range.end.saturating_sub(range.start)) / erase.max(1);
        if sectors < 2 {
            return Err(StorageError::Region);
        }
        let config = QueueConfig::try_new(range.clone()).map_err(|_| StorageError::Region)?;
        let word = F::WRITE_SIZE.max(F::READ_SIZE);
        let capacity =
            usize::try_from(sectors).unwrap_or(usize::MAX) * F::ERASE_SIZE.saturating_sub(2 * word);
        let mut outbox = Self {
            queue: QueueStorage::new(flash, config, Cache::new_uncached()),
            buffer: [0; ENTRY],
            boot_id: 0,
            newest: None,
            len: 0,
            used: 0,
            capacity,
            dropped: 0,
            restored: None,
        };
        outbox.scan().await?;
        Ok(outbox)
    }

    /// Gives the flash back.
    pub fn into_inner(self) -> F {
        self.queue.destroy().0
    }

    /// Bytes an item of `data` bytes takes in flash.
    fn item_size(data: usize) -> usize {
        let word = F::WRITE_SIZE.max(F::READ_SIZE).max(1);
        usize::try_from(QueueStorage::<F, NoCache>::item_overhead_size()).unwrap_or(0)
            + data.next_multiple_of(word)
    }

    /// Counts the stored entries, drops the ones in front that belong to
    /// another boot than the newest (they could never be sent), and notes
    /// what is restored.
    async fn scan(&mut self) -> Result<(), StorageError> {
        // The newest entry's boot id is the boot to resume.
        let mut newest_boot = None;
        {
            let mut items = self.queue.iter().await.map_err(storage_error)?;
            while let Some(item) = items.next(&mut self.buffer).await.map_err(storage_error)? {
                if let Some((boot, _)) = decode_item(&item) {
                    newest_boot = Some(boot);
                }
            }
        }
        let Some(boot_id) = newest_boot else {
            // Nothing readable: whatever is there goes.
            while self.drop_front().await? {}
            return Ok(());
        };
        self.boot_id = boot_id;
        let (mut first, mut last) = (None, None);
        let mut items = self.queue.iter().await.map_err(storage_error)?;
        while let Some(item) = items.next(&mut self.buffer).await.map_err(storage_error)? {
            let size = Self::item_size(item.len());
            match decode_item(&item) {
                Some((boot, entry)) if boot == boot_id => {
                    first = first.or(Some(entry.seq));
                    last = Some(entry.seq);
                    self.len += 1;
                    self.used += size;
                }
                _ if first.is_none() => {
                    item.pop().await.map_err(storage_error)?;
                    self.dropped = self.dropped.saturating_add(1);
                }
                // Unsendable, behind sendable ones: skipped when read,
                // freed by the acknowledgements around it.
                _ => {
                    self.len += 1;
                    self.used += size;
                }
            }
        }
        if let (Some(first_seq), Some(last_seq)) = (first, last) {
            self.newest = Some(last_seq);
            self.restored = Some(Restored {
                boot_id,
                first_seq,
                last_seq,
            });
            info!(
                "outbox: {} messages of boot {} restored from flash ({} to {})",
                self.len, boot_id, first_seq, last_seq
            );
        }
        Ok(())
    }

    /// Pops the oldest item, readable or not.
    async fn drop_front(&mut self) -> Result<bool, StorageError> {
        let mut items = self.queue.iter().await.map_err(storage_error)?;
        match items.next(&mut self.buffer).await {
            Ok(Some(item)) => {
                let size = Self::item_size(item.len());
                item.pop().await.map_err(storage_error)?;
                self.len = self.len.saturating_sub(1);
                self.used = self.used.saturating_sub(size);
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(e) => Err(storage_error(e)),
        }
    }
}

/// Whether the item in `bytes` goes with an acknowledgement through `seq`
/// of boot `boot_id`: numbered at most `seq`, or unreadable, or of another
/// boot (never sendable).
fn freed_by(bytes: &[u8], boot_id: u64, seq: u32) -> bool {
    match decode_item(bytes) {
        Some((boot, entry)) => boot != boot_id || entry.seq <= seq,
        None => true,
    }
}

impl<F: MultiwriteNorFlash, const ENTRY: usize> Outbox for FlashOutbox<F, ENTRY> {
    fn restored(&self) -> Option<Restored> {
        self.restored
    }

    fn start_boot(&mut self, boot_id: u64) {
        self.boot_id = boot_id;
        self.newest = None;
        self.restored = None;
    }

    async fn try_push(&mut self, entry: Entry<'_>) -> Result<(), PushError> {
        if entry.channel.len() > Entry::MAX_CHANNEL_LEN {
            return Err(PushError::ChannelTooLong);
        }
        let (Ok(channel_len), Ok(payload_len)) = (
            u8::try_from(entry.channel.len()),
            u16::try_from(entry.payload.len()),
        ) else {
            return Err(PushError::TooLarge);
        };
        if self.newest.is_some_and(|newest| entry.seq <= newest) {
            return Err(PushError::OutOfOrder);
        }
        let len = BOOT_ID_LEN + entry.encoded_len();
        let Some((boot, rest)) = self
            .buffer
            .get_mut(..len)
            .and_then(|item| item.split_at_mut_checked(BOOT_ID_LEN))
        else {
            return Err(PushError::TooLarge);
        };
        boot.copy_from_slice(&self.boot_id.to_le_bytes());
        encode_into(rest, &entry, channel_len, payload_len);
        let item = self.buffer.get(..len).unwrap_or_default();
        match self.queue.push(item, false).await {
            Ok(()) => {
                self.len += 1;
                self.used += Self::item_size(len);
                self.newest = Some(entry.seq);
                Ok(())
            }
            Err(sequential_storage::Error::FullStorage) => Err(PushError::Full),
            Err(sequential_storage::Error::ItemTooBig) => Err(PushError::TooLarge),
            Err(e) => Err(PushError::Storage(storage_error(e))),
        }
    }

    async fn drop_oldest(&mut self) -> Result<bool, StorageError> {
        let dropped = self.drop_front().await?;
        if dropped {
            self.dropped = self.dropped.saturating_add(1);
        }
        Ok(dropped)
    }

    async fn ack_through(&mut self, seq: u32) -> Result<usize, StorageError> {
        let mut freed = 0;
        let boot_id = self.boot_id;
        let mut items = self.queue.iter().await.map_err(storage_error)?;
        while let Some(item) = items.next(&mut self.buffer).await.map_err(storage_error)? {
            if !freed_by(&item, boot_id, seq) {
                break;
            }
            let size = Self::item_size(item.len());
            item.pop().await.map_err(storage_error)?;
            self.len = self.len.saturating_sub(1);
            self.used = self.used.saturating_sub(size);
            freed += 1;
        }
        Ok(freed)
    }

    async fn read_after(&mut self, seq: u32) -> Result<Option<Entry<'_>>, StorageError> {
        let mut found = None;
        {
            let mut items = self.queue.iter().await.map_err(storage_error)?;
            while let Some(item) = items.next(&mut self.buffer).await.map_err(storage_error)? {
                if let Some((boot, entry)) = decode_item(&item)
                    && boot == self.boot_id
                    && entry.seq > seq
                {
                    found = Some(item.len());
                    break;
                }
            }
        }
        let Some(len) = found else {
            return Ok(None);
        };
        let restored_through = self.restored.map_or(0, |r| r.last_seq);
        let (_, mut entry) = self
            .buffer
            .get(..len)
            .and_then(decode_item)
            .ok_or(StorageError::Corrupt)?;
        if entry.seq <= restored_through && matches!(entry.time, Some(Timestamp::Boot(_))) {
            // The old boot's clock: meaningless now.
            entry.time = None;
        }
        Ok(Some(entry))
    }

    fn len(&self) -> usize {
        self.len
    }

    fn used_bytes(&self) -> usize {
        self.used
    }

    fn capacity_bytes(&self) -> usize {
        self.capacity
    }

    fn dropped(&self) -> u32 {
        self.dropped
    }
}
