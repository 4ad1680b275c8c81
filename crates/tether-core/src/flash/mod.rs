//! NOR flash: the outbox that survives a reboot, and the flash to test it
//! on.
//!
//! ```text
//!   Client ──publish──► FlashOutbox ──sequential-storage queue──► NorFlash
//!                        (RAM: one entry        (wear levelling,     (esp-storage,
//!                         buffer, counters)      power-cut repair)    RP2040, RamFlash)
//! ```
//!
//! - `FlashOutbox` (feature `flash`): an [`Outbox`](crate::outbox::Outbox)
//!   in a region of NOR flash, through `sequential-storage`'s queue: every
//!   published message is written before `publish` returns, pages are
//!   erased in turn (wear levelling), and a write cut by a power failure is
//!   repaired at the next start. After a reboot it reports the boot id and
//!   numbers of what it still holds, so the client resumes that boot and
//!   the server stores every message exactly once.
//! - `Blocking` (feature `flash`): the async `embedded-storage-async`
//!   traits over a blocking `embedded-storage` flash driver (`esp-storage`).
//! - [`RamFlash`]: NOR flash semantics in RAM (erase to `0xFF`, writes only
//!   clear bits, aligned access), with a simulated power cut after a given
//!   number of bytes: for host tests and for gateways without flash.

mod ram;

pub use ram::{FlashFault, RamFlash};

#[cfg(feature = "flash")]
mod blocking;
#[cfg(feature = "flash")]
mod outbox;

#[cfg(feature = "flash")]
pub use blocking::Blocking;
#[cfg(feature = "flash")]
pub use outbox::{FlashOutbox, entry_buffer_len};
