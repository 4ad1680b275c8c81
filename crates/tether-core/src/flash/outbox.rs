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

#[cfg(test)]
mod tests {
    extern crate alloc;
    extern crate std;

    use alloc::collections::BTreeMap;
    use alloc::vec::Vec;

    use embassy_futures::block_on;
    use rand_core::{RngCore, SeedableRng};
    use rand_xorshift::XorShiftRng;

    use super::*;
    use crate::flash::RamFlash;
    use crate::outbox::FullPolicy;
    use crate::session::{
        ConnectionState, LinkError, PublishError, Session, SessionConfig, Transmit,
    };
    use crate::time::Instant;

    type Flash = RamFlash<{ 4 * 4096 }>;
    const RANGE: Range<u32> = 4096..4 * 4096;

    #[test]
    fn round_trip_restore_and_boot_relative_times() {
        let mut flash = Flash::new();
        let mut outbox = block_on(FlashOutbox::<_, 128>::mount(&mut flash, RANGE)).unwrap();
        assert_eq!(outbox.restored(), None);
        outbox.start_boot(7);
        let boot_time = Timestamp::Boot(Instant::from_millis(5));
        let unix_time = Timestamp::Unix(1_764_000_000_000);
        block_on(async {
            outbox
                .push(
                    Entry::new(1, "a", b"1").with_time(boot_time),
                    FullPolicy::Reject,
                )
                .await
                .unwrap();
            outbox
                .push(
                    Entry::new(2, "b/c", b"22").with_time(unix_time),
                    FullPolicy::Reject,
                )
                .await
                .unwrap();
            assert_eq!(
                outbox.try_push(Entry::new(2, "a", b"")).await,
                Err(PushError::OutOfOrder)
            );
            // Within the boot, a boot-relative time is kept.
            assert_eq!(
                outbox.read_after(0).await.unwrap().unwrap().time,
                Some(boot_time)
            );
        });
        assert_eq!(outbox.len(), 2);
        let mut outbox = block_on(FlashOutbox::<_, 128>::mount(&mut flash, RANGE)).unwrap();
        assert_eq!(
            outbox.restored(),
            Some(Restored {
                boot_id: 7,
                first_seq: 1,
                last_seq: 2
            })
        );
        block_on(async {
            let first = outbox.read_after(0).await.unwrap().unwrap();
            assert_eq!(
                (first.seq, first.channel, first.payload),
                (1, "a", &b"1"[..])
            );
            assert_eq!(first.time, None, "the old boot's clock means nothing now");
            let second = outbox.read_after(1).await.unwrap().unwrap();
            assert_eq!((second.seq, second.time), (2, Some(unix_time)));
            assert!(outbox.read_after(2).await.unwrap().is_none());
            assert_eq!(outbox.ack_through(1).await, Ok(1));
            // Numbering continues after the restored entries.
            assert_eq!(
                outbox.try_push(Entry::new(2, "a", b"")).await,
                Err(PushError::OutOfOrder)
            );
            outbox.try_push(Entry::new(3, "a", b"3")).await.unwrap();
            assert_eq!(outbox.ack_through(3).await, Ok(2));
        });
        assert!(outbox.is_empty());
        assert_eq!(outbox.used_bytes(), 0);
        let outbox = block_on(FlashOutbox::<_, 128>::mount(&mut flash, RANGE)).unwrap();
        assert_eq!(outbox.restored(), None, "everything acknowledged");
        let flash = outbox.into_inner();
        assert!(
            flash.as_bytes()[..4096].iter().all(|b| *b == 0xff),
            "outside the region"
        );
    }

    #[test]
    fn fills_up_then_rejects_or_drops_the_oldest_and_refuses_bad_regions() {
        let mut flash = Flash::new();
        assert_eq!(
            block_on(FlashOutbox::<_, 128>::mount(&mut flash, 4096..8192)).err(),
            Some(StorageError::Region),
            "one sector"
        );
        assert_eq!(
            block_on(FlashOutbox::<_, 128>::mount(&mut flash, 100..8292)).err(),
            Some(StorageError::Region),
            "not sector-aligned"
        );
        let mut outbox =
            block_on(FlashOutbox::<_, 128>::mount(&mut flash, 4096..3 * 4096)).unwrap();
        outbox.start_boot(1);
        let payload = [b'7'; 80];
        block_on(async {
            assert_eq!(
                outbox.try_push(Entry::new(1, "c", &[0; 200])).await,
                Err(PushError::TooLarge)
            );
            let mut seq = 0;
            loop {
                seq += 1;
                match outbox
                    .push(Entry::new(seq, "c", &payload), FullPolicy::Reject)
                    .await
                {
                    Ok(0) => {}
                    Err(PushError::Full) => break,
                    other => panic!("{other:?}"),
                }
            }
            let stored = outbox.len();
            assert!(stored > 20, "{stored}");
            // Drop-oldest makes room by dropping from the front.
            let dropped = outbox
                .push(Entry::new(seq, "c", &payload), FullPolicy::DropOldest)
                .await
                .unwrap();
            assert!(dropped >= 1);
            assert_eq!(outbox.dropped(), u32::try_from(dropped).unwrap());
            assert_eq!(outbox.len(), stored + 1 - dropped);
            let oldest = outbox.read_after(0).await.unwrap().unwrap().seq;
            assert_eq!(oldest, u32::try_from(dropped).unwrap() + 1);
        });
    }

    /// The server side as tether-server behaves: stores by (boot id, seq),
    /// drops what it already stored, acknowledges cumulatively.
    #[derive(Default)]
    struct Server {
        stored_through: BTreeMap<u64, u32>,
        /// (boot id, seq, the payload's counter)
        records: Vec<(u64, u32, u32)>,
        boot: u64,
    }

    impl Server {
        fn hello(&mut self, boot_id: u64) -> u32 {
            self.boot = boot_id;
            *self.stored_through.entry(boot_id).or_default()
        }

        fn publish(&mut self, seq: u32, payload: &[u8]) {
            let stored = self.stored_through.entry(self.boot).or_default();
            if seq > *stored {
                *stored = seq;
                let counter = core::str::from_utf8(payload).unwrap().parse().unwrap();
                self.records.push((self.boot, seq, counter));
            }
        }

        fn acked(&self) -> u32 {
            self.stored_through.get(&self.boot).copied().unwrap_or(0)
        }
    }

    /// One boot of a device: the session and the flash outbox, driven the
    /// way the client drives them. Any storage error is the power failing:
    /// the boot is over.
    struct Device<'f> {
        session: Session<XorShiftRng>,
        outbox: FlashOutbox<&'f mut Flash, 128>,
    }

    struct PowerLost;

    impl<'f> Device<'f> {
        fn boot(flash: &'f mut Flash, seed: u64) -> Result<Self, PowerLost> {
            let mut outbox = block_on(FlashOutbox::mount(flash, RANGE)).map_err(|_| PowerLost)?;
            let rng = XorShiftRng::seed_from_u64(seed);
            let config = SessionConfig::new().with_max_in_flight(4);
            let session = match outbox.restored() {
                Some(restored) => Session::resume(config, rng, Instant::ZERO, restored),
                None => Session::new(config, rng, Instant::ZERO).inspect(|s| {
                    outbox.start_boot(s.boot_id());
                }),
            }
            .unwrap();
            Ok(Self { session, outbox })
        }

        fn publish(&mut self, counter: u32) -> Result<Result<u32, PublishError>, PowerLost> {
            let pending = self
                .session
                .begin_publish(Instant::ZERO, self.outbox.is_empty())
                .unwrap();
            let payload = std::format!("{counter}");
            let entry = Entry::new(pending.seq, "c", payload.as_bytes());
            match block_on(self.outbox.push(entry, FullPolicy::Reject)) {
                Ok(_) => {
                    self.session.on_stored(pending.seq);
                    Ok(Ok(pending.seq))
                }
                Err(PushError::Storage(_)) => Err(PowerLost),
                Err(e) => {
                    self.session.cancel_publish(pending.seq);
                    Ok(Err(e.into()))
                }
            }
        }

        /// Connects if needed and moves up to `budget` transmissions to the
        /// server, which stores them at once; acknowledges if `ack`.
        fn pump(&mut self, server: &mut Server, budget: usize, ack: bool) -> Result<(), PowerLost> {
            let now = Instant::ZERO;
            if self.session.state() != ConnectionState::Connected {
                self.session.retry_now(now);
                self.session.on_link_up(now);
            }
            for _ in 0..budget {
                let after = match self.session.poll_transmit(now) {
                    None => break,
                    Some(Transmit::Hello { boot_id, .. }) => {
                        let stored = server.hello(boot_id);
                        self.session.on_welcome(now, stored, 64, 0).unwrap();
                        continue;
                    }
                    Some(Transmit::Publish { after }) => after,
                    Some(_) => continue,
                };
                match block_on(self.outbox.read_after(after)) {
                    Ok(Some(entry)) => {
                        server.publish(entry.seq, entry.payload);
                        self.session.on_sent(entry.seq);
                    }
                    Ok(None) => self.session.on_nothing_after(after),
                    Err(_) => return Err(PowerLost),
                }
            }
            if ack && self.session.state() == ConnectionState::Connected {
                let acked = server.acked();
                if acked > self.session.acked_seq() {
                    self.session.on_ack(now, acked).unwrap();
                }
                if let Some(seq) = self.session.release_due() {
                    block_on(self.outbox.ack_through(seq)).map_err(|_| PowerLost)?;
                    self.session.on_released(seq);
                }
            }
            Ok(())
        }
    }

    /// Seeded power cuts at any byte of any flash write or erase, while a
    /// device publishes, sends, gets acknowledgements and frees its outbox,
    /// against a server that de-duplicates on (boot id, seq). After all of
    /// them, the network heals: every reading whose publish returned `Ok`
    /// is stored exactly once, and nothing is stored twice. A reading that
    /// was acknowledged is never resent under a new number.
    /// `TETHER_POWER_CUTS` sets how many cuts (default 2000).
    #[test]
    fn power_cuts_lose_and_duplicate_nothing() {
        let cuts: u64 = std::env::var("TETHER_POWER_CUTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2_000);
        let mut rng = XorShiftRng::seed_from_u64(0x7e7e);
        let mut flash = Flash::new();
        let mut server = Server::default();
        let mut published = Vec::new();
        let mut counter = 0u32;
        let mut boots = 0u64;
        let mut cut_short = 0u64;
        let mut full = 0u64;
        while cut_short < cuts {
            boots += 1;
            flash.power_on();
            // Half the cuts early in the boot (a few writes in), half
            // anywhere up to past a whole sector erase.
            let limit = if rng.next_u32() % 2 == 0 { 300 } else { 4_500 };
            flash.cut_power_after(usize::try_from(rng.next_u32() % limit).unwrap());
            let Ok(mut device) = Device::boot(&mut flash, boots) else {
                cut_short += 1;
                continue;
            };
            let alive = (|| {
                for _ in 0..(rng.next_u32() % 16) {
                    match rng.next_u32() % 4 {
                        0 | 1 => {
                            counter += 1;
                            match device.publish(counter)? {
                                Ok(_) => published.push(counter),
                                Err(_) => full += 1,
                            }
                        }
                        2 => {
                            let budget = usize::try_from(rng.next_u32() % 6).unwrap();
                            device.pump(&mut server, budget, rng.next_u32() % 4 != 0)?;
                        }
                        _ => device.session.on_link_lost(Instant::ZERO, LinkError::Io),
                    }
                }
                Ok::<(), PowerLost>(())
            })();
            // A boot the power did not cut ends with the battery pulled
            // between two flash operations.
            cut_short += u64::from(alive.is_err());
        }
        // The last boot: power stays on until everything is acknowledged.
        flash.power_on();
        let mut device = Device::boot(&mut flash, boots + 1).unwrap_or_else(|_| unreachable!());
        for _ in 0..10_000 {
            if device.outbox.is_empty() {
                break;
            }
            assert!(device.pump(&mut server, 64, true).is_ok());
        }
        assert!(device.outbox.is_empty(), "{:?}", device.outbox);
        assert!(full < published.len() as u64, "the outbox was mostly full");

        let mut stored: Vec<u32> = server.records.iter().map(|r| r.2).collect();
        stored.sort_unstable();
        let before = stored.len();
        stored.dedup();
        assert_eq!(before, stored.len(), "a reading was stored twice");
        // Readings whose write was cut may or may not have been stored;
        // every reading whose publish returned Ok was.
        let missing: Vec<u32> = published
            .iter()
            .filter(|c| stored.binary_search(c).is_err())
            .copied()
            .collect();
        assert!(missing.is_empty(), "lost {missing:?}");
        std::println!(
            "{boots} boots, {cut_short} cut by a power failure, {} readings published ({full} refused: full), {} stored",
            published.len(),
            stored.len()
        );
    }
}
