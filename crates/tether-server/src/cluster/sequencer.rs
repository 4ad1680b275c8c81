//! Puts one channel's events back in offset order on a node before they
//! reach the local live queue.
//!
//! On a node of a cluster, a channel's events arrive from this node's own
//! writer and, through NATS, from the other nodes' writers: each source is
//! in offset order, the mix is not. A receiver that sees a gap reads the
//! missing offsets from the database (and skips what it already sent), so
//! delivery is gap-free anyway; the sequencer only saves those reads for
//! the common case, where the missing events are a moment behind on
//! another source. It holds an event that comes after a gap for at most
//! [`REORDER_WAIT`], then lets it through and leaves the gap to the
//! receivers. Sans-IO: time is an argument.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::store::StoredEvent;

/// How long an event after a gap waits for the gap to fill.
pub(crate) const REORDER_WAIT: Duration = Duration::from_millis(40);

/// One channel's order on this node.
#[derive(Debug, Default)]
pub(crate) struct Sequencer {
    /// The highest offset let through (`None`: nothing yet).
    last: Option<u64>,
    /// Events after a gap, by offset.
    held: BTreeMap<u64, Arc<StoredEvent>>,
    /// When the oldest held event arrived.
    held_since: Option<Instant>,
}

impl Sequencer {
    /// Takes an event; returns what may go to the live queue now, in
    /// order (late duplicates are dropped).
    pub(crate) fn push(&mut self, event: Arc<StoredEvent>, now: Instant) -> Vec<Arc<StoredEvent>> {
        let offset = event.offset;
        let mut out = Vec::new();
        match self.last {
            Some(last) if offset <= last => {}
            Some(last) if offset > last + 1 => {
                self.held.insert(offset, event);
                self.held_since.get_or_insert(now);
            }
            _ => {
                self.last = Some(offset);
                out.push(event);
                self.release_contiguous(&mut out);
            }
        }
        out
    }

    /// Lets everything through that waited [`REORDER_WAIT`] or more.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<Arc<StoredEvent>> {
        match self.held_since {
            Some(since) if now.duration_since(since) >= REORDER_WAIT => self.flush(),
            _ => Vec::new(),
        }
    }

    /// Lets everything held through (a resynchronisation: receivers read
    /// the gaps from the database).
    pub(crate) fn flush(&mut self) -> Vec<Arc<StoredEvent>> {
        let held = core::mem::take(&mut self.held);
        self.held_since = None;
        if let Some((&offset, _)) = held.last_key_value() {
            self.last = Some(self.last.map_or(offset, |last| last.max(offset)));
        }
        held.into_values().collect()
    }

    /// Whether events wait.
    pub(crate) fn is_holding(&self) -> bool {
        !self.held.is_empty()
    }

    fn release_contiguous(&mut self, out: &mut Vec<Arc<StoredEvent>>) {
        while let Some(last) = self.last
            && let Some(event) = self.held.remove(&(last + 1))
        {
            self.last = Some(last + 1);
            out.push(event);
        }
        if self.held.is_empty() {
            self.held_since = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(offset: u64) -> Arc<StoredEvent> {
        Arc::new(StoredEvent::new(
            1,
            "c".into(),
            offset,
            "d".into(),
            None,
            0,
            "1".into(),
        ))
    }

    fn offsets(events: &[Arc<StoredEvent>]) -> Vec<u64> {
        events.iter().map(|e| e.offset).collect()
    }

    #[test]
    fn interleaved_sources_come_out_in_order() {
        let start = Instant::now();
        let mut sequencer = Sequencer::default();
        assert_eq!(offsets(&sequencer.push(event(4), start)), [4]);
        // Node B's 7 overtakes node A's 5 and 6.
        assert!(sequencer.push(event(7), start).is_empty());
        assert!(sequencer.is_holding());
        assert_eq!(offsets(&sequencer.push(event(5), start)), [5]);
        assert_eq!(offsets(&sequencer.push(event(6), start)), [6, 7]);
        assert!(!sequencer.is_holding());
        // A late copy is dropped.
        assert!(sequencer.push(event(6), start).is_empty());
    }

    #[test]
    fn a_gap_that_does_not_fill_is_let_through_after_the_wait() {
        let start = Instant::now();
        let mut sequencer = Sequencer::default();
        sequencer.push(event(1), start);
        assert!(sequencer.push(event(3), start).is_empty());
        assert!(sequencer.push(event(4), start).is_empty());
        assert!(sequencer.expire(start + REORDER_WAIT / 2).is_empty());
        assert_eq!(offsets(&sequencer.expire(start + REORDER_WAIT)), [3, 4]);
        // 2 arrives after all: too late, the receivers read it.
        assert!(sequencer.push(event(2), start + REORDER_WAIT).is_empty());
        assert_eq!(offsets(&sequencer.push(event(5), start)), [5]);
    }
}
