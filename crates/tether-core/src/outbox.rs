//! Store-and-forward: where published messages wait until the server
//! acknowledged them.
//!
//! [`Outbox`] is the storage interface the client uses; [`RamOutbox`] keeps
//! the messages in RAM, and `flash::FlashOutbox` (feature `flash`) keeps them
//! in NOR flash so they survive a reboot.
//!
//! ```text
//!  publish() ──► [ seq 4 | seq 5 | seq 6 | seq 7 ] ──► sent, waiting for Ack
//!                  oldest                 newest
//!  Ack(5)    ──► ack_through(5) frees 4 and 5; 6 and 7 are resent after a reconnect
//! ```
//!
//! Entries are `(seq, time, channel, payload)` of one boot id, pushed with
//! strictly increasing sequence numbers, read back in order
//! ([`Outbox::read_after`]), and freed cumulatively with
//! [`Outbox::ack_through`]. When the outbox is full, [`FullPolicy`] decides:
//! refuse the new message, or drop the oldest ones and count the drops.
//!
//! The trait is `async` because storage can be slow (a flash sector erase
//! takes tens of milliseconds): the client calls it outside any lock that
//! other tasks or interrupts wait on. [`RamOutbox`] also has the same
//! operations as plain blocking methods:
//!
//! ```
//! use tether_core::outbox::{Entry, FullPolicy, PushError, RamOutbox};
//!
//! // 96 bytes: each entry costs 13 bytes of header plus channel and payload.
//! let mut outbox = RamOutbox::<96>::new();
//! for seq in 1..=3 {
//!     outbox.push(Entry::new(seq, "temp", b"{\"c\":21.5}"), FullPolicy::Reject)?;
//! }
//! assert_eq!(outbox.used_bytes(), 3 * 27);
//! // Full: reject hands the decision back to the caller...
//! let fourth = Entry::new(4, "temp", b"{\"c\":21.6}");
//! assert_eq!(outbox.push(fourth, FullPolicy::Reject), Err(PushError::Full));
//! // ...or drop the oldest and count it.
//! assert_eq!(outbox.push(fourth, FullPolicy::DropOldest), Ok(1));
//! assert_eq!(outbox.dropped(), 1);
//!
//! // The server acknowledged everything up to 3.
//! assert_eq!(outbox.ack_through(3), 2);
//! let oldest = outbox.oldest().unwrap();
//! assert_eq!((oldest.seq, oldest.channel, oldest.payload), (4, "temp", &b"{\"c\":21.6}"[..]));
//! # Ok::<(), PushError>(())
//! ```

use core::fmt;

use crate::time::Instant;

/// When a message was published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Timestamp {
    /// Unix time in milliseconds: the session knew the server's clock.
    Unix(u64),
    /// This boot's local clock: published before the first `Welcome`
    /// told the session the server's time. The session converts it to
    /// [`Timestamp::Unix`] when it sends the message (right if that is
    /// within 24.8 days: an [`Instant`] is a wrapping 32-bit tick).
    /// Meaningless after a reboot, so a persistent outbox must not keep
    /// such entries across boots (or must convert them first).
    Boot(Instant),
}

impl Timestamp {
    /// Largest value a [`RamOutbox`] stores (46 bits of milliseconds, about
    /// 2 200 years); larger values are stored as this.
    pub const MAX_MILLIS: u64 = (1 << 46) - 1;

    /// The 6-byte form a [`RamOutbox`] stores: a 2-bit tag (0 none,
    /// 1 Unix, 2 boot) and 46 bits of milliseconds.
    const fn encode(time: Option<Self>) -> [u8; 6] {
        let (tag, millis) = match time {
            None => (0u64, 0),
            Some(Self::Unix(millis)) => (1, millis),
            Some(Self::Boot(instant)) => (2, instant.as_millis() as u64),
        };
        let millis = if millis > Self::MAX_MILLIS {
            Self::MAX_MILLIS
        } else {
            millis
        };
        let b = ((tag << 46) | millis).to_le_bytes();
        [b[0], b[1], b[2], b[3], b[4], b[5]]
    }

    fn decode(bytes: [u8; 6]) -> Option<Self> {
        let [a, b, c, d, e, f] = bytes;
        let value = u64::from_le_bytes([a, b, c, d, e, f, 0, 0]);
        let millis = value & Self::MAX_MILLIS;
        match value >> 46 {
            1 => Some(Self::Unix(millis)),
            2 => Some(Self::Boot(Instant::from_millis(millis))),
            _ => None,
        }
    }
}

/// One stored message, borrowed from the caller or from the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Entry<'a> {
    /// Sequence number, unique and increasing within one boot.
    pub seq: u32,
    /// When it was published, if known.
    pub time: Option<Timestamp>,
    /// Channel name (at most [`Entry::MAX_CHANNEL_LEN`] bytes).
    pub channel: &'a str,
    /// Encoded payload (at most [`Entry::MAX_PAYLOAD_LEN`] bytes).
    pub payload: &'a [u8],
}

impl<'a> Entry<'a> {
    /// Bytes of bookkeeping per entry in a [`RamOutbox`]: seq (4),
    /// timestamp (6), channel length (1), payload length (2).
    pub const HEADER_LEN: usize = 13;
    /// Longest channel name.
    pub const MAX_CHANNEL_LEN: usize = u8::MAX as usize;
    /// Longest payload.
    pub const MAX_PAYLOAD_LEN: usize = u16::MAX as usize;

    /// An entry without timestamp.
    #[must_use]
    pub const fn new(seq: u32, channel: &'a str, payload: &'a [u8]) -> Self {
        Self {
            seq,
            time: None,
            channel,
            payload,
        }
    }

    /// The same entry, published at `time`.
    #[must_use]
    pub const fn with_time(mut self, time: Timestamp) -> Self {
        self.time = Some(time);
        self
    }

    /// Bytes the entry occupies in a [`RamOutbox`].
    #[must_use]
    pub const fn encoded_len(&self) -> usize {
        Self::HEADER_LEN + self.channel.len() + self.payload.len()
    }
}

/// What to do when a new message does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum FullPolicy {
    /// Refuse the new message with [`PushError::Full`]; the caller still
    /// holds it and decides (retry later, aggregate, discard).
    #[default]
    Reject,
    /// Drop the oldest messages until the new one fits, and count them in
    /// [`Outbox::dropped`]. Fresh data wins over stale data.
    DropOldest,
}

/// Why a message was not stored. The message was only borrowed, so the
/// caller still has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum PushError {
    /// Not enough free space (policy [`FullPolicy::Reject`]).
    Full,
    /// The entry is larger than the whole outbox, or than
    /// [`Entry::MAX_PAYLOAD_LEN`]; it can never be stored.
    TooLarge,
    /// The channel name is longer than [`Entry::MAX_CHANNEL_LEN`].
    ChannelTooLong,
    /// The sequence number is not above the newest stored one.
    OutOfOrder,
    /// The storage failed; the message may or may not be stored.
    Storage(StorageError),
}

impl fmt::Display for PushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Full => "outbox full",
            Self::TooLarge => "message larger than the outbox",
            Self::ChannelTooLong => "channel name too long",
            Self::OutOfOrder => "sequence number not increasing",
            Self::Storage(_) => "outbox storage failed",
        })
    }
}

impl core::error::Error for PushError {}

impl From<StorageError> for PushError {
    fn from(e: StorageError) -> Self {
        Self::Storage(e)
    }
}

/// Why persistent storage failed. Messages stay where they are: an entry
/// that could not be freed is resent (and de-duplicated by the server), an
/// entry that could not be read is tried again after the next reconnect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum StorageError {
    /// The storage device (the flash driver) reported an error.
    Device,
    /// The stored data does not make sense and could not be repaired.
    Corrupt,
    /// The storage region is unusable (not whole erase sectors, too small).
    Region,
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Device => "storage device error",
            Self::Corrupt => "stored data corrupt",
            Self::Region => "storage region unusable",
        })
    }
}

impl core::error::Error for StorageError {}

/// What a persistent outbox found at start: messages of an earlier boot
/// that the server may not have stored yet. The client resumes that boot
/// (same boot id, numbering after `last_seq`) instead of drawing a new one,
/// so the server recognises resent messages as the ones it may already have
/// and stores each exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Restored {
    /// The boot id the stored messages were published under.
    pub boot_id: u64,
    /// Sequence number of the oldest stored message.
    pub first_seq: u32,
    /// Sequence number of the newest stored message.
    pub last_seq: u32,
}

/// Storage for messages that wait for the server's acknowledgement.
///
/// Implementations keep entries in push order, refuse sequence numbers that
/// do not increase, and never allocate. The provided [`Outbox::push`] applies
/// a [`FullPolicy`] on top of [`Outbox::try_push`] and [`Outbox::drop_oldest`].
///
/// A persistent implementation also remembers the boot id its entries were
/// published under ([`Outbox::start_boot`]) and reports what it holds from
/// before a reboot with [`Outbox::restored`]; entries restored with a
/// [`Timestamp::Boot`] time read back without a time (the old boot's clock
/// means nothing now).
///
/// The client only calls it from async code outside any blocking lock, so an
/// implementation may take its time (erase flash, wait for DMA).
///
/// # Example implementation
///
/// A tiny outbox holding one message at a time (a flash-backed one would
/// write a record to a sector instead of copying into an array):
///
/// ```
/// use tether_core::outbox::{Entry, FullPolicy, Outbox, PushError, StorageError};
///
/// #[derive(Default)]
/// struct OneSlot {
///     stored: Option<(u32, [u8; 8], usize, [u8; 32], usize)>,
///     newest: u32,
///     dropped: u32,
/// }
///
/// impl Outbox for OneSlot {
///     fn start_boot(&mut self, _boot_id: u64) {
///         self.newest = 0;
///     }
///     async fn try_push(&mut self, entry: Entry<'_>) -> Result<(), PushError> {
///         if entry.seq <= self.newest {
///             return Err(PushError::OutOfOrder);
///         }
///         if entry.channel.len() > 8 || entry.payload.len() > 32 {
///             return Err(PushError::TooLarge);
///         }
///         if self.stored.is_some() {
///             return Err(PushError::Full);
///         }
///         let (mut channel, mut payload) = ([0; 8], [0; 32]);
///         channel[..entry.channel.len()].copy_from_slice(entry.channel.as_bytes());
///         payload[..entry.payload.len()].copy_from_slice(entry.payload);
///         self.stored = Some((entry.seq, channel, entry.channel.len(), payload, entry.payload.len()));
///         self.newest = entry.seq;
///         Ok(())
///     }
///     async fn drop_oldest(&mut self) -> Result<bool, StorageError> {
///         let had = self.stored.take().is_some();
///         self.dropped += u32::from(had);
///         Ok(had)
///     }
///     async fn ack_through(&mut self, seq: u32) -> Result<usize, StorageError> {
///         Ok(match self.stored {
///             Some((stored, ..)) if stored <= seq => { self.stored = None; 1 }
///             _ => 0,
///         })
///     }
///     async fn read_after(&mut self, seq: u32) -> Result<Option<Entry<'_>>, StorageError> {
///         let Some((stored, channel, channel_len, payload, payload_len)) = self.stored.as_ref() else {
///             return Ok(None);
///         };
///         let channel = core::str::from_utf8(&channel[..*channel_len]).map_err(|_| StorageError::Corrupt)?;
///         Ok((*stored > seq).then(|| Entry::new(*stored, channel, &payload[..*payload_len])))
///     }
///     fn len(&self) -> usize { usize::from(self.stored.is_some()) }
///     fn used_bytes(&self) -> usize {
///         self.stored.as_ref().map_or(0, |s| Entry::HEADER_LEN + s.2 + s.4)
///     }
///     fn capacity_bytes(&self) -> usize { Entry::HEADER_LEN + 8 + 32 }
///     fn dropped(&self) -> u32 { self.dropped }
/// }
///
/// embassy_futures::block_on(async {
///     let mut outbox = OneSlot::default();
///     outbox.push(Entry::new(1, "a", b"1"), FullPolicy::Reject).await.unwrap();
///     let second = Entry::new(2, "a", b"2");
///     assert_eq!(outbox.push(second, FullPolicy::Reject).await, Err(PushError::Full));
///     assert_eq!(outbox.push(second, FullPolicy::DropOldest).await, Ok(1));
///     assert_eq!(outbox.read_after(0).await.unwrap().map(|e| e.seq), Some(2));
/// });
/// ```
#[allow(async_fn_in_trait)] // Like embedded-io-async: no `Send` bound, firmware is single-core.
pub trait Outbox {
    /// Entries of an earlier boot found in persistent storage at start, if
    /// any. The default (RAM outboxes): `None`.
    fn restored(&self) -> Option<Restored> {
        None
    }

    /// Entries pushed from now on belong to boot `boot_id` and are numbered
    /// from 1 again. The client calls it, with the outbox empty, when it
    /// draws a boot id: at start (unless it resumes the [`Outbox::restored`]
    /// boot) and when a boot ran out of sequence numbers.
    fn start_boot(&mut self, boot_id: u64);

    /// Stores `entry` after the newest one if it fits; never evicts.
    ///
    /// # Errors
    /// [`PushError::Full`] if there is not enough free space right now, the
    /// other variants if the entry can never be stored or storage failed.
    async fn try_push(&mut self, entry: Entry<'_>) -> Result<(), PushError>;

    /// Removes the oldest entry without it being acknowledged and counts it
    /// in [`Outbox::dropped`]. Returns `false` if the outbox was empty.
    ///
    /// # Errors
    /// The storage failed.
    async fn drop_oldest(&mut self) -> Result<bool, StorageError>;

    /// Frees every entry with a sequence number up to and including `seq`
    /// (a cumulative acknowledgement). Returns how many were freed.
    ///
    /// # Errors
    /// The storage failed; entries not freed are resent later, and the
    /// server drops them as duplicates.
    async fn ack_through(&mut self, seq: u32) -> Result<usize, StorageError>;

    /// The oldest entry whose sequence number is above `seq`: the next one
    /// to (re)send after `seq`. It may borrow a read buffer of the outbox.
    ///
    /// # Errors
    /// The storage failed.
    async fn read_after(&mut self, seq: u32) -> Result<Option<Entry<'_>>, StorageError>;

    /// Number of stored entries.
    fn len(&self) -> usize;

    /// Bytes in use, bookkeeping included.
    fn used_bytes(&self) -> usize;

    /// Total bytes available.
    fn capacity_bytes(&self) -> usize;

    /// Entries dropped unacknowledged since creation (saturating).
    fn dropped(&self) -> u32;

    /// Whether no entry is stored.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stores `entry`, applying `policy` when it does not fit. Returns how
    /// many old entries were dropped to make room.
    ///
    /// # Errors
    /// [`PushError::Full`] under [`FullPolicy::Reject`]; the other variants
    /// whatever the policy, and then nothing was dropped.
    async fn push(&mut self, entry: Entry<'_>, policy: FullPolicy) -> Result<usize, PushError> {
        if entry.channel.len() > Entry::MAX_CHANNEL_LEN {
            return Err(PushError::ChannelTooLong);
        }
        if entry.encoded_len() > self.capacity_bytes() {
            return Err(PushError::TooLarge);
        }
        let mut dropped = 0;
        loop {
            match self.try_push(entry).await {
                Ok(()) => return Ok(dropped),
                Err(PushError::Full)
                    if policy == FullPolicy::DropOldest && self.drop_oldest().await? =>
                {
                    dropped += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// An [`Outbox`] in RAM with a capacity of `N` bytes, fixed at compile time.
///
/// Entries are stored back to back (7 header bytes, channel, payload), so
/// small readings cost little. The live entries always form one contiguous
/// run, so every entry reads back as plain slices; when the room left at the
/// end of the array is too small for a new entry, the run is first moved to
/// the front (one `copy_within` of at most `N` bytes). The whole capacity is
/// therefore usable, as in a ring buffer, without entries ever wrapping.
#[derive(Clone)]
pub struct RamOutbox<const N: usize> {
    buffer: [u8; N],
    /// Start of the oldest entry.
    head: usize,
    /// End of the newest entry.
    tail: usize,
    len: usize,
    newest: Option<u32>,
    dropped: u32,
}

impl<const N: usize> Default for RamOutbox<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Debug for RamOutbox<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RamOutbox")
            .field("capacity_bytes", &N)
            .field("used_bytes", &self.used_bytes())
            .field("len", &self.len)
            .field("newest", &self.newest)
            .field("dropped", &self.dropped)
            .finish()
    }
}

impl<const N: usize> RamOutbox<N> {
    /// An empty outbox.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            buffer: [0; N],
            head: 0,
            tail: 0,
            len: 0,
            newest: None,
            dropped: 0,
        }
    }

    /// The entries, oldest first.
    #[must_use]
    pub fn iter(&self) -> Entries<'_> {
        Entries {
            bytes: self.buffer.get(self.head..self.tail).unwrap_or(&[]),
        }
    }

    /// The entry starting at `offset` and its encoded length.
    fn entry_at(&self, offset: usize) -> Option<(Entry<'_>, usize)> {
        decode_entry(self.buffer.get(offset..self.tail)?)
    }

    /// Removes the oldest entry.
    fn remove_oldest(&mut self) -> bool {
        self.remove_oldest_through(u32::MAX)
    }

    /// Removes the oldest entry if it is numbered at most `seq` (one
    /// decode per entry).
    fn remove_oldest_through(&mut self, seq: u32) -> bool {
        let Some((oldest, length)) = self.entry_at(self.head) else {
            return false;
        };
        if oldest.seq > seq {
            return false;
        }
        self.head += length;
        self.len -= 1;
        if self.len == 0 {
            self.head = 0;
            self.tail = 0;
        }
        true
    }
}

impl<const N: usize> RamOutbox<N> {
    /// Stores `entry` after the newest one if it fits; never evicts.
    ///
    /// # Errors
    /// See [`Outbox::try_push`].
    pub fn try_push(&mut self, entry: Entry<'_>) -> Result<(), PushError> {
        if entry.channel.len() > Entry::MAX_CHANNEL_LEN {
            return Err(PushError::ChannelTooLong);
        }
        let (Ok(channel_len), Ok(payload_len)) = (
            u8::try_from(entry.channel.len()),
            u16::try_from(entry.payload.len()),
        ) else {
            return Err(PushError::TooLarge);
        };
        // In the order of `Outbox::push`'s checks.
        let needed = entry.encoded_len();
        if needed > N {
            return Err(PushError::TooLarge);
        }
        if self.newest.is_some_and(|newest| entry.seq <= newest) {
            return Err(PushError::OutOfOrder);
        }
        if needed > N - self.used_bytes() {
            return Err(PushError::Full);
        }
        if needed > N - self.tail {
            self.buffer.copy_within(self.head..self.tail, 0);
            self.tail -= self.head;
            self.head = 0;
        }
        let end = self.tail + needed;
        let Some(slot) = self.buffer.get_mut(self.tail..end) else {
            return Err(PushError::Full);
        };
        encode_into(slot, &entry, channel_len, payload_len);
        self.tail = end;
        self.len += 1;
        self.newest = Some(entry.seq);
        Ok(())
    }

    /// Stores `entry`, applying `policy` when it does not fit; see
    /// [`Outbox::push`].
    ///
    /// # Errors
    /// See [`Outbox::push`].
    pub fn push(&mut self, entry: Entry<'_>, policy: FullPolicy) -> Result<usize, PushError> {
        let mut dropped = 0;
        loop {
            match self.try_push(entry) {
                Ok(()) => return Ok(dropped),
                Err(PushError::Full) if policy == FullPolicy::DropOldest && self.drop_oldest() => {
                    dropped += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Removes the oldest entry unacknowledged and counts it; `false` if
    /// the outbox was empty.
    pub fn drop_oldest(&mut self) -> bool {
        let removed = self.remove_oldest();
        if removed {
            self.dropped = self.dropped.saturating_add(1);
        }
        removed
    }

    /// Frees every entry up to and including `seq`; returns how many.
    pub fn ack_through(&mut self, seq: u32) -> usize {
        let mut freed = 0;
        while self.remove_oldest_through(seq) {
            freed += 1;
        }
        freed
    }

    /// Forgets the newest sequence number, so numbering may start again at 1
    /// (a new boot id).
    pub fn start_boot(&mut self, _boot_id: u64) {
        self.newest = None;
    }

    /// The oldest entry numbered above `seq`.
    #[must_use]
    pub fn first_after(&self, seq: u32) -> Option<Entry<'_>> {
        self.iter().find(|e| e.seq > seq)
    }

    /// The oldest entry.
    #[must_use]
    pub fn oldest(&self) -> Option<Entry<'_>> {
        self.entry_at(self.head).map(|(entry, _)| entry)
    }

    /// Number of stored entries.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether no entry is stored.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes in use, bookkeeping included.
    #[must_use]
    pub const fn used_bytes(&self) -> usize {
        self.tail - self.head
    }

    /// Entries dropped unacknowledged (saturating).
    #[must_use]
    pub const fn dropped(&self) -> u32 {
        self.dropped
    }
}

impl<const N: usize> Outbox for RamOutbox<N> {
    fn start_boot(&mut self, boot_id: u64) {
        RamOutbox::start_boot(self, boot_id);
    }

    async fn try_push(&mut self, entry: Entry<'_>) -> Result<(), PushError> {
        RamOutbox::try_push(self, entry)
    }

    /// Synchronous, and `try_push` makes the default's checks itself.
    async fn push(&mut self, entry: Entry<'_>, policy: FullPolicy) -> Result<usize, PushError> {
        RamOutbox::push(self, entry, policy)
    }

    async fn drop_oldest(&mut self) -> Result<bool, StorageError> {
        Ok(RamOutbox::drop_oldest(self))
    }

    async fn ack_through(&mut self, seq: u32) -> Result<usize, StorageError> {
        Ok(RamOutbox::ack_through(self, seq))
    }

    async fn read_after(&mut self, seq: u32) -> Result<Option<Entry<'_>>, StorageError> {
        Ok(self.first_after(seq))
    }

    fn len(&self) -> usize {
        self.len
    }

    fn used_bytes(&self) -> usize {
        RamOutbox::used_bytes(self)
    }

    fn capacity_bytes(&self) -> usize {
        N
    }

    fn dropped(&self) -> u32 {
        self.dropped
    }
}

/// Writes `entry` into `slot` (exactly [`Entry::encoded_len`] bytes): the
/// 13-byte header, the channel, the payload. The lengths are checked by the
/// caller.
pub(crate) fn encode_into(slot: &mut [u8], entry: &Entry<'_>, channel_len: u8, payload_len: u16) {
    let (header, rest) = slot.split_at_mut(Entry::HEADER_LEN.min(slot.len()));
    let (channel, payload) = rest.split_at_mut(entry.channel.len().min(rest.len()));
    if let Some(h) = header.get_mut(..Entry::HEADER_LEN) {
        h[..4].copy_from_slice(&entry.seq.to_le_bytes());
        h[4..10].copy_from_slice(&Timestamp::encode(entry.time));
        h[10] = channel_len;
        h[11..].copy_from_slice(&payload_len.to_le_bytes());
    }
    if let (Some(c), Some(p)) = (
        channel.get_mut(..entry.channel.len()),
        payload.get_mut(..entry.payload.len()),
    ) {
        c.copy_from_slice(entry.channel.as_bytes());
        p.copy_from_slice(entry.payload);
    }
}

/// Decodes the entry at the start of `bytes`, with its encoded length.
pub(crate) fn decode_entry(bytes: &[u8]) -> Option<(Entry<'_>, usize)> {
    let header = bytes.get(..Entry::HEADER_LEN)?;
    let seq = u32::from_le_bytes(header.get(..4)?.try_into().ok()?);
    let time = Timestamp::decode(header.get(4..10)?.try_into().ok()?);
    let channel_len = usize::from(*header.get(10)?);
    let payload_len = usize::from(u16::from_le_bytes(header.get(11..13)?.try_into().ok()?));
    let channel_end = Entry::HEADER_LEN + channel_len;
    let end = channel_end + payload_len;
    let channel = core::str::from_utf8(bytes.get(Entry::HEADER_LEN..channel_end)?).ok()?;
    let payload = bytes.get(channel_end..end)?;
    let mut entry = Entry::new(seq, channel, payload);
    entry.time = time;
    Some((entry, end))
}

/// Iterator over the entries of a [`RamOutbox`], oldest first.
#[derive(Debug, Clone)]
pub struct Entries<'a> {
    bytes: &'a [u8],
}

impl<'a> Iterator for Entries<'a> {
    type Item = Entry<'a>;

    fn next(&mut self) -> Option<Entry<'a>> {
        let (entry, length) = decode_entry(self.bytes)?;
        self.bytes = self.bytes.get(length..).unwrap_or(&[]);
        Some(entry)
    }
}

#[cfg(test)]
mod tests {
    extern crate alloc;
    extern crate std;

    use alloc::collections::VecDeque;
    use alloc::string::String;
    use alloc::vec::Vec;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn compacts_instead_of_wrapping() {
        // 3 entries of 16 bytes in 48: after acking two, a fourth and fifth
        // only fit once the live run moves to the front.
        let mut outbox = RamOutbox::<48>::new();
        for seq in 1..=3 {
            outbox.try_push(Entry::new(seq, "c", b"xy")).unwrap();
        }
        assert_eq!(outbox.used_bytes(), 48);
        assert_eq!(
            outbox.try_push(Entry::new(4, "c", b"xy")),
            Err(PushError::Full)
        );
        assert_eq!(outbox.ack_through(2), 2);
        outbox.try_push(Entry::new(4, "c", b"xy")).unwrap();
        outbox.try_push(Entry::new(5, "c", b"xy")).unwrap();
        let seqs: Vec<u32> = outbox.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [3, 4, 5]);
        assert_eq!(outbox.first_after(3).map(|e| e.seq), Some(4));
        assert_eq!(outbox.first_after(5), None);
    }

    #[test]
    fn timestamps_round_trip_in_six_bytes() {
        let mut outbox = RamOutbox::<128>::new();
        let times = [
            None,
            Some(Timestamp::Unix(1_764_000_000_123)),
            Some(Timestamp::Boot(Instant::from_millis(42))),
            Some(Timestamp::Unix(0)),
            Some(Timestamp::Unix(Timestamp::MAX_MILLIS)),
        ];
        for (seq, time) in (1..).zip(times) {
            let mut entry = Entry::new(seq, "c", b"1");
            entry.time = time;
            outbox.try_push(entry).unwrap();
        }
        let stored: Vec<Option<Timestamp>> = outbox.iter().map(|e| e.time).collect();
        assert_eq!(stored, times);
        // Beyond 46 bits: saturates instead of corrupting the tag.
        outbox
            .try_push(Entry::new(9, "c", b"").with_time(Timestamp::Unix(u64::MAX)))
            .unwrap();
        assert_eq!(
            outbox.first_after(8).unwrap().time,
            Some(Timestamp::Unix(Timestamp::MAX_MILLIS))
        );
    }

    #[test]
    fn rejects_what_can_never_fit() {
        let mut outbox = RamOutbox::<16>::new();
        assert_eq!(
            outbox.push(Entry::new(1, "c", &[0; 9]), FullPolicy::DropOldest),
            Err(PushError::TooLarge)
        );
        let long = core::str::from_utf8(&[b'a'; 256]).unwrap();
        let mut big = RamOutbox::<1024>::new();
        assert_eq!(
            big.try_push(Entry::new(1, long, b"")),
            Err(PushError::ChannelTooLong)
        );
        let mut huge = RamOutbox::<70_000>::new();
        assert_eq!(
            huge.try_push(Entry::new(1, "c", &[0; 65_536])),
            Err(PushError::TooLarge)
        );
        huge.try_push(Entry::new(1, "c", &[0; 65_535])).unwrap();
        assert_eq!(huge.oldest().unwrap().payload.len(), 65_535);
    }

    #[test]
    fn too_large_is_reported_before_out_of_order() {
        // The order of `Outbox::push`'s checks, which `RamOutbox` answers
        // with its own `push`.
        let mut outbox = RamOutbox::<64>::new();
        outbox.try_push(Entry::new(5, "c", b"")).unwrap();
        let big = Entry::new(4, "c", &[0; 64]);
        assert_eq!(outbox.try_push(big), Err(PushError::TooLarge));
        assert_eq!(
            RamOutbox::push(&mut outbox, big, FullPolicy::DropOldest),
            Err(PushError::TooLarge)
        );
        assert_eq!(outbox.len(), 1);
    }

    #[test]
    fn refuses_non_increasing_sequence_numbers() {
        let mut outbox = RamOutbox::<64>::new();
        outbox.try_push(Entry::new(5, "c", b"")).unwrap();
        assert_eq!(
            outbox.try_push(Entry::new(5, "c", b"")),
            Err(PushError::OutOfOrder)
        );
        assert_eq!(
            outbox.try_push(Entry::new(4, "c", b"")),
            Err(PushError::OutOfOrder)
        );
        // Even once everything is acknowledged...
        outbox.ack_through(5);
        assert_eq!(
            outbox.try_push(Entry::new(3, "c", b"")),
            Err(PushError::OutOfOrder)
        );
        // ...until the numbering restarts (a new boot id).
        outbox.start_boot(2);
        outbox.try_push(Entry::new(1, "c", b"")).unwrap();
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push {
            channel: usize,
            payload: usize,
            policy: FullPolicy,
        },
        AckThrough(u32),
        DropOldest,
    }

    fn op_strategy() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0usize..12, 0usize..40, prop_oneof![Just(FullPolicy::Reject), Just(FullPolicy::DropOldest)])
                .prop_map(|(channel, payload, policy)| Op::Push { channel, payload, policy }),
            2 => (0u32..8).prop_map(Op::AckThrough),
            1 => Just(Op::DropOldest),
        ]
    }

    /// The model: a queue of owned entries and a byte budget.
    #[derive(Default)]
    struct Model {
        entries: VecDeque<(u32, String, Vec<u8>)>,
        dropped: u32,
    }

    impl Model {
        fn bytes(&self) -> usize {
            self.entries
                .iter()
                .map(|(_, c, p)| Entry::HEADER_LEN + c.len() + p.len())
                .sum()
        }
    }

    const CAPACITY: usize = 128;

    proptest! {
        #[test]
        fn ram_outbox_matches_a_queue_model(ops in proptest::collection::vec(op_strategy(), 1..200)) {
            let mut outbox = RamOutbox::<CAPACITY>::new();
            let mut model = Model::default();
            let mut next_seq = 1u32;
            for op in ops {
                match op {
                    Op::Push { channel, payload, policy } => {
                        let channel: String = (0..channel).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
                        let payload: Vec<u8> = (0..payload).map(|i| (next_seq as usize + i) as u8).collect();
                        let entry = Entry::new(next_seq, &channel, &payload);
                        let needed = entry.encoded_len();
                        let result = outbox.push(entry, policy);
                        let expected = if needed > CAPACITY {
                            Err(PushError::TooLarge)
                        } else if model.bytes() + needed > CAPACITY && policy == FullPolicy::Reject {
                            Err(PushError::Full)
                        } else {
                            let mut dropped = 0;
                            while model.bytes() + needed > CAPACITY {
                                model.entries.pop_front();
                                model.dropped += 1;
                                dropped += 1;
                            }
                            model.entries.push_back((next_seq, channel.clone(), payload.clone()));
                            Ok(dropped)
                        };
                        prop_assert_eq!(result, expected);
                        next_seq += 1;
                    }
                    Op::AckThrough(back) => {
                        let seq = next_seq.saturating_sub(back);
                        let before = model.entries.len();
                        model.entries.retain(|(s, _, _)| *s > seq);
                        prop_assert_eq!(outbox.ack_through(seq), before - model.entries.len());
                    }
                    Op::DropOldest => {
                        let had = model.entries.pop_front().is_some();
                        model.dropped += u32::from(had);
                        prop_assert_eq!(outbox.drop_oldest(), had);
                    }
                }
                prop_assert_eq!(outbox.len(), model.entries.len());
                prop_assert_eq!(outbox.is_empty(), model.entries.is_empty());
                prop_assert_eq!(outbox.used_bytes(), model.bytes());
                prop_assert_eq!(outbox.dropped(), model.dropped);
                let stored: Vec<(u32, String, Vec<u8>)> = outbox
                    .iter()
                    .map(|e| (e.seq, String::from(e.channel), e.payload.to_vec()))
                    .collect();
                prop_assert_eq!(&stored, &Vec::from(model.entries.clone()));
                // Resend order: walking first_after visits every entry in order.
                let mut walked = Vec::new();
                let mut cursor = 0;
                while let Some(e) = outbox.first_after(cursor) {
                    walked.push(e.seq);
                    cursor = e.seq;
                }
                let model_seqs: Vec<u32> = model.entries.iter().map(|(s, _, _)| *s).collect();
                prop_assert_eq!(walked, model_seqs);
            }
        }
    }
}
