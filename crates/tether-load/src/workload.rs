//! What a run offers: the fleet, its rate, who watches which channels, and
//! the phases every connection follows.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// A workload, the same for every peer.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Device connections.
    pub devices: usize,
    /// Messages per second per device; 0: as fast as the in-flight window
    /// allows.
    pub rate: f64,
    /// Tenants (customers); the devices are split evenly among them.
    pub tenants: usize,
    /// Receivers per tenant, each watching every device of its tenant.
    pub receivers_per_tenant: usize,
    /// Each device publishes on a channel of its own (`d<index>`), which
    /// its receivers subscribe to one by one; otherwise every device of a
    /// tenant publishes on the tenant's channel `load`.
    pub per_device_channels: bool,
    /// How long the devices offer messages.
    pub seconds: f64,
    /// Unacknowledged messages one device may have outstanding (the tether
    /// server may ask for fewer in `Welcome.max_in_flight`).
    pub window: usize,
    /// Messages a device queues while its window is full; a tick that
    /// finds the queue full is refused (counted, like the SDK's outbox).
    pub outbox: usize,
    /// How long to wait after the window for outstanding acks and
    /// deliveries.
    pub drain: Duration,
    /// Opening handshakes in progress at once while the fleet connects.
    pub connect_concurrency: usize,
    /// The server restarts inside the window and the fleet reconnects
    /// (tether only; see [`crate::storm`]).
    pub storm: Option<crate::storm::Storm>,
}

impl Workload {
    /// Receiver connections in all.
    pub fn receivers(&self) -> usize {
        self.tenants * self.receivers_per_tenant
    }

    /// The tenant of a device (contiguous blocks).
    pub fn tenant_of(&self, device: usize) -> usize {
        device * self.tenants / self.devices.max(1)
    }

    /// The devices of a tenant.
    pub fn devices_of(&self, tenant: usize) -> Range<usize> {
        let start = (0..self.devices)
            .find(|&d| self.tenant_of(d) >= tenant)
            .unwrap_or(self.devices);
        let end = (start..self.devices)
            .find(|&d| self.tenant_of(d) > tenant)
            .unwrap_or(self.devices);
        start..end
    }

    /// The tenant a receiver watches.
    pub fn tenant_of_receiver(&self, receiver: usize) -> usize {
        receiver / self.receivers_per_tenant.max(1)
    }

    /// The channel a device publishes on (within its tenant).
    pub fn channel(&self, device: usize) -> String {
        if self.per_device_channels {
            format!("d{device}")
        } else {
            "load".to_owned()
        }
    }

    /// The channels a receiver subscribes to.
    pub fn channels_of_receiver(&self, receiver: usize) -> Vec<String> {
        let tenant = self.tenant_of_receiver(receiver);
        if self.per_device_channels {
            self.devices_of(tenant).map(|d| self.channel(d)).collect()
        } else {
            vec!["load".to_owned()]
        }
    }

    /// The MQTT topic of a tether channel of a tenant.
    pub fn topic(&self, tenant: usize, channel: &str) -> String {
        format!("t{tenant}/{channel}")
    }
}

/// Where a run is; every connection watches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Connecting and waiting.
    Connect,
    /// Devices offer messages.
    Run,
    /// No new messages: queued ones are sent, acks and deliveries awaited.
    Drain,
    /// Everything stops.
    Stop,
}

/// What every connection task shares.
#[derive(Debug)]
pub struct Shared {
    /// The workload.
    pub workload: Workload,
    /// The clock every timestamp counts from (one process: one clock).
    pub base: Instant,
    /// The phase.
    pub phase: watch::Receiver<Phase>,
    /// Devices that finished their opening handshake (and session start).
    pub connected: AtomicUsize,
    /// Receivers subscribed to all their channels.
    pub receivers_ready: AtomicUsize,
    /// Devices with nothing queued or unacknowledged after the window.
    pub drained: AtomicUsize,
    /// Messages acknowledged so far.
    pub acked: AtomicU64,
    /// Distinct (receiver, message) deliveries so far.
    pub delivered: AtomicU64,
    /// Connection attempts that failed (TCP, handshake or session start).
    pub failed_attempts: AtomicU64,
}

impl Shared {
    /// Shared state for a run.
    pub fn new(workload: Workload, phase: watch::Receiver<Phase>) -> Self {
        Shared {
            workload,
            base: Instant::now(),
            phase,
            connected: AtomicUsize::new(0),
            receivers_ready: AtomicUsize::new(0),
            drained: AtomicUsize::new(0),
            acked: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            failed_attempts: AtomicU64::new(0),
        }
    }

    /// Microseconds since [`Shared::base`].
    pub fn micros(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// The message body every device sends (JSON, the same bytes to both
/// peers): when it was offered, by which device, its sequence number.
pub fn payload(offered_micros: u64, device: usize, seq: u32) -> String {
    format!("{{\"t\":{offered_micros},\"d\":{device},\"s\":{seq}}}")
}

/// Finds a [`payload`] in `text` (a bare payload, or a receiver event frame
/// that carries one): `(offered_micros, device, seq)`.
pub fn parse_payload(text: &[u8]) -> Option<(u64, usize, u32)> {
    const START: &[u8] = b"{\"t\":";
    let at = text.windows(START.len()).position(|w| w == START)?;
    let mut rest = text.get(at + START.len()..)?;
    let t = number(&mut rest)?;
    rest = rest.strip_prefix(b",\"d\":")?;
    let d = number(&mut rest)?;
    rest = rest.strip_prefix(b",\"s\":")?;
    let s = number(&mut rest)?;
    Some((t, usize::try_from(d).ok()?, u32::try_from(s).ok()?))
}

fn number(rest: &mut &[u8]) -> Option<u64> {
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let (head, tail) = rest.split_at(digits);
    *rest = tail;
    core::str::from_utf8(head).ok()?.parse().ok()
}

/// A growable bit set of sequence numbers (1, 2, …) per device.
#[derive(Debug, Default, Clone)]
pub struct SeqSet {
    words: Vec<u64>,
}

impl SeqSet {
    /// Inserts `seq`; `false` if it was there already.
    pub fn insert(&mut self, seq: u32) -> bool {
        let index = seq as usize / 64;
        if self.words.len() <= index {
            self.words.resize(index + 1, 0);
        }
        let bit = 1u64 << (seq % 64);
        let word = &mut self.words[index];
        let new = *word & bit == 0;
        *word |= bit;
        new
    }

    /// Whether `seq` is in the set.
    pub fn contains(&self, seq: u32) -> bool {
        self.words
            .get(seq as usize / 64)
            .is_some_and(|word| word & (1u64 << (seq % 64)) != 0)
    }

    /// Every member, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().enumerate().flat_map(|(index, word)| {
            (0..64u32)
                .filter(move |bit| word & (1u64 << bit) != 0)
                .map(move |bit| index as u32 * 64 + bit)
        })
    }

    /// Members.
    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether it has no members.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse_bare_and_inside_events() {
        let body = payload(123_456, 42, 7);
        assert_eq!(parse_payload(body.as_bytes()), Some((123_456, 42, 7)));
        let event = format!(
            r#"{{"v":1,"event":{{"channel":"d42","offset":3,"device":"load-00042","device_time_ms":null,"server_time_ms":5,"payload":{body}}}}}"#
        );
        assert_eq!(parse_payload(event.as_bytes()), Some((123_456, 42, 7)));
        assert_eq!(parse_payload(br#"{"v":1,"subscribed":{}}"#), None);
    }

    #[test]
    fn tenants_split_the_fleet() {
        let workload = Workload {
            devices: 10,
            rate: 1.0,
            tenants: 3,
            receivers_per_tenant: 2,
            per_device_channels: true,
            seconds: 1.0,
            window: 32,
            outbox: 8,
            drain: Duration::from_secs(1),
            connect_concurrency: 1,
            storm: None,
        };
        let all: Vec<usize> = (0..3).flat_map(|t| workload.devices_of(t)).collect();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(workload.receivers(), 6);
        assert_eq!(workload.tenant_of_receiver(5), 2);
        assert_eq!(
            workload.channels_of_receiver(5).len(),
            workload.devices_of(2).len()
        );
    }

    #[test]
    fn seq_sets_count_once() {
        let mut set = SeqSet::default();
        assert!(set.insert(1));
        assert!(!set.insert(1));
        assert!(set.insert(200));
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![1, 200]);
        assert_eq!(set.len(), 2);
        assert!(set.contains(200) && !set.contains(2));
    }
}
