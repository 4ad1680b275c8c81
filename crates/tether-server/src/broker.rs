//! Fan-out behind a small trait: the store hands committed events to a
//! [`Broker`]; each receiver subscription reads them from a bounded live
//! queue.
//!
//! [`InProcessBroker`] keeps one bounded ring per channel with subscribers
//! (freed with its last subscriber; at most `max_channels_per_tenant` per
//! tenant), holding only what a subscriber has still to read: memory is
//! bounded by the ring, never by the slowest receiver. A receiver
//! that falls more than a ring behind gets [`Received::Lagged`] and catches
//! up from the store (see `receiver_endpoint`), so nothing is lost.
//!
//! Channel descriptions devices send go through the broker too
//! ([`Broker::publish_description`]): a receiver that asked for them hears
//! of a new one whichever node its device is on.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tether_proto::{CommandStatus, ErrorCode};
use tokio::sync::{Notify, broadcast};

use crate::store::{BoxFuture, StoredEvent, TenantId};

/// A device described a channel of its tenant (see `device_readings`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelDescribed {
    /// The device's tenant.
    pub tenant_id: TenantId,
    /// The described channel.
    pub channel: String,
    /// The device.
    pub device: String,
    /// The field descriptions, the canonical JSON array.
    pub fields: String,
}

/// Descriptions a broker keeps for receivers that lag, at most (one that
/// lags reads the store again).
const DESCRIPTIONS: usize = 256;

/// A device's answer to a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandReply {
    /// What the device did.
    pub status: CommandStatus,
    /// Its result, JSON text (`null` for none).
    pub result: String,
}

/// A command for a device, as one node hands it to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCommand {
    /// The tenant of the receiver key that sends it (checked to be the
    /// device's).
    pub tenant_id: TenantId,
    /// The device.
    pub device_id: String,
    /// The command's channel.
    pub channel: String,
    /// Its payload, JSON text.
    pub payload: String,
    /// How long queueing and answer may take together.
    pub timeout: Duration,
}

/// The device sessions of this node, as a multi-node broker reaches them:
/// another node's newer session fences a local one, and another node's
/// receivers command a device connected here. (The server's
/// `DeviceSessions` implements it.)
pub trait LocalDevices: Send + Sync + 'static {
    /// A session of `device_id` with fencing token `fence` opened on
    /// another node: a local session of the device with an older token
    /// closes with `session_replaced`.
    fn fence_older(&self, device_id: &str, fence: u64);
    /// Sends a command to a device connected to this node and waits for
    /// its answer (`device_offline` if it is not connected here).
    fn command(&self, command: DeviceCommand) -> BoxFuture<'_, Result<CommandReply, ErrorCode>>;
}

/// What a subscription yields next.
#[derive(Debug, Clone)]
pub enum Received {
    /// The next live event.
    Event(Arc<StoredEvent>),
    /// The subscriber fell behind and this many events were skipped; read
    /// them from the store.
    Lagged(u64),
    /// The broker is gone.
    Closed,
}

/// What [`Subscription::recv_many`] yields next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batch {
    /// At least one event was appended.
    Events,
    /// The subscriber fell behind and this many events were skipped; read
    /// them from the store.
    Lagged(u64),
    /// The broker is gone.
    Closed,
}

/// One channel's live events for one subscriber.
pub trait Subscription: Send {
    /// The next event (in offset order, possibly with skips reported as
    /// [`Received::Lagged`]).
    fn recv(&mut self) -> BoxFuture<'_, Received>;

    /// The next events, as many as are there (at least one, at most
    /// `max`), appended to `events` in offset order: one wake-up and one
    /// look at the queue for a burst, not one per event. A skip is
    /// reported on its own, before the events after it.
    fn recv_many<'a>(
        &'a mut self,
        events: &'a mut Vec<Arc<StoredEvent>>,
        _max: usize,
    ) -> BoxFuture<'a, Batch> {
        Box::pin(async move {
            match self.recv().await {
                Received::Event(event) => {
                    events.push(event);
                    Batch::Events
                }
                Received::Lagged(skipped) => Batch::Lagged(skipped),
                Received::Closed => Batch::Closed,
            }
        })
    }
}

/// Why a subscription was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The tenant has `max_channels_per_tenant` channels with live
    /// subscribers already; this one would be one more.
    TooManyChannels,
}

impl core::fmt::Display for SubscribeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SubscribeError::TooManyChannels => {
                f.write_str("the tenant has its maximum of channels with live subscribers")
            }
        }
    }
}

impl std::error::Error for SubscribeError {}

/// Fan-out of committed events to subscribers, and what crosses between
/// server nodes: session fencing and commands. The in-process broker has
/// one node, so the cross-node methods keep their defaults; the NATS
/// broker (`cluster::NatsBroker`) implements them.
pub trait Broker: Send + Sync + 'static {
    /// Publishes committed events (in offset order per channel).
    fn publish(&self, events: Vec<Arc<StoredEvent>>);
    /// Subscribes to a tenant's channel: every event published from now on.
    /// Dropping the subscription unsubscribes.
    fn subscribe(
        &self,
        tenant_id: TenantId,
        channel: &str,
    ) -> Result<Box<dyn Subscription>, SubscribeError>;
    /// Channels with live subscribers now (each holds a live queue).
    fn live_channels(&self) -> usize;
    /// A device session opened on this node with fencing token `fence`:
    /// other nodes close their older sessions of the device, and commands
    /// for it come here.
    fn session_opened(&self, _tenant_id: TenantId, _device_id: &str, _fence: u64) {}
    /// The session of `device_id` with token `fence` on this node ended.
    fn session_closed(&self, _device_id: &str, _fence: u64) {}
    /// Sends a command to a device connected to **another** node and waits
    /// for its answer: `device_offline` when no node has the device.
    fn remote_command(
        &self,
        _command: DeviceCommand,
    ) -> BoxFuture<'_, Result<CommandReply, ErrorCode>> {
        Box::pin(core::future::ready(Err(ErrorCode::DEVICE_OFFLINE)))
    }
    /// What crossed NATS (`None`: a single node).
    fn cluster_stats(&self) -> Option<crate::cluster::NatsStats> {
        None
    }
    /// A device on this node described a channel (the description is
    /// stored): tells the receivers of every node that asked.
    fn publish_description(&self, description: Arc<ChannelDescribed>);
    /// Descriptions published from now on, on any node.
    fn descriptions(&self) -> broadcast::Receiver<Arc<ChannelDescribed>>;
    /// Changes when descriptions published on another node may have been
    /// missed (a cluster node reconnected to NATS): a receiver's
    /// descriptions are read from the store again. `None`: none can be
    /// missed (one node).
    fn description_resyncs(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}

type ChannelKey = (TenantId, String);

/// The in-process broker: a bounded ring per channel with subscribers. The
/// ring is created by the channel's first subscriber and freed when its
/// last subscriber goes, so memory follows what is subscribed now, and each
/// tenant has at most `max_channels_per_tenant` rings.
///
/// A ring holds only events some subscriber has still to read (each event
/// counts the readers it waits for), at most `capacity` of them, or the
/// events of one [`Broker::publish`] on the channel if they are more (one
/// commit: the store's batch is bounded, and those events are in memory
/// anyway): it grows
/// as a burst needs and shrinks back, so ten thousand quiet channels cost a
/// few dozen bytes each, not `capacity` preallocated slots (a
/// `tokio::sync::broadcast` of 1024 slots is about 40 KiB per channel,
/// 400 MB for 10,000 device channels). A subscriber more than `capacity`
/// events behind is told how many it missed ([`Received::Lagged`]).
#[derive(Debug)]
pub struct InProcessBroker {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    capacity: usize,
    max_channels_per_tenant: usize,
    channels: Mutex<Channels>,
    descriptions: broadcast::Sender<Arc<ChannelDescribed>>,
}

/// Rings by tenant, then channel name (looked up by `&str`, without
/// allocating a key per event).
#[derive(Debug, Default)]
struct Channels {
    rings: HashMap<TenantId, HashMap<String, Arc<Ring>>>,
}

impl Channels {
    fn get(&self, tenant_id: TenantId, channel: &str) -> Option<&Arc<Ring>> {
        self.rings.get(&tenant_id)?.get(channel)
    }

    fn count(&self) -> usize {
        self.rings.values().map(HashMap::len).sum()
    }
}

/// One channel's live events.
#[derive(Debug, Default)]
struct Ring {
    state: Mutex<RingState>,
    /// Woken on every publish.
    published: Notify,
}

#[derive(Debug, Default)]
struct RingState {
    /// Position (in the channel's publish order) of `events[0]`.
    head: u64,
    /// Events with the readers each still waits for.
    events: VecDeque<(Arc<StoredEvent>, usize)>,
    subscribers: usize,
}

impl RingState {
    /// Position after the newest event.
    fn tail(&self) -> u64 {
        self.head + self.events.len() as u64
    }

    /// Drops the events nobody has left to read, and memory a burst left.
    fn trim(&mut self) {
        while self
            .events
            .front()
            .is_some_and(|(_, readers)| *readers == 0)
        {
            self.events.pop_front();
            self.head += 1;
        }
        if self.events.capacity() > 64 && self.events.len() < self.events.capacity() / 4 {
            self.events.shrink_to(self.events.len() * 2);
        }
    }

    /// One reader less for the events from `cursor` on.
    fn forget_reader(&mut self, cursor: u64) {
        let skip = usize::try_from(cursor.saturating_sub(self.head)).unwrap_or(usize::MAX);
        for (_, readers) in self.events.iter_mut().skip(skip) {
            *readers = readers.saturating_sub(1);
        }
        self.trim();
    }
}

impl Channels {
    /// Frees the ring of `key` if nobody listens to it any more.
    fn release_if_unused(&mut self, key: &ChannelKey) {
        let Some(tenant) = self.rings.get_mut(&key.0) else {
            return;
        };
        let unused = tenant.get(&key.1).is_some_and(|ring| {
            ring.state
                .lock()
                .map_or(true, |state| state.subscribers == 0)
        });
        if unused {
            tenant.remove(&key.1);
            if tenant.is_empty() {
                self.rings.remove(&key.0);
            }
        }
    }
}

impl InProcessBroker {
    /// A broker whose live queues hold `capacity` events per channel, with
    /// at most `max_channels_per_tenant` subscribed channels per tenant.
    pub fn new(capacity: usize, max_channels_per_tenant: usize) -> Self {
        InProcessBroker {
            shared: Arc::new(Shared {
                capacity: capacity.max(1),
                max_channels_per_tenant,
                channels: Mutex::new(Channels::default()),
                descriptions: broadcast::channel(DESCRIPTIONS).0,
            }),
        }
    }
}

impl Broker for InProcessBroker {
    fn publish_description(&self, description: Arc<ChannelDescribed>) {
        // No receiver asking is not an error.
        let _ = self.shared.descriptions.send(description);
    }

    fn descriptions(&self) -> broadcast::Receiver<Arc<ChannelDescribed>> {
        self.shared.descriptions.subscribe()
    }

    fn publish(&self, events: Vec<Arc<StoredEvent>>) {
        let Ok(channels) = self.shared.channels.lock() else {
            return;
        };
        // A run of events on one channel (a commit's burst on a busy
        // channel) wakes its subscribers once, after the last of them.
        let mut pending: Option<&Arc<Ring>> = None;
        // Events of the run so far: a run longer than the ring is kept
        // whole, else a commit bigger than the ring (the writer's batch
        // grows under load) would make every subscriber of the channel lag
        // and read it back from the store, each on its own.
        let mut run = 0;
        for event in events {
            let Some(ring) = channels.get(event.tenant_id, &event.channel) else {
                continue;
            };
            match pending {
                Some(previous) if Arc::ptr_eq(previous, ring) => run += 1,
                _ => {
                    if let Some(previous) = pending {
                        previous.published.notify_waiters();
                    }
                    run = 1;
                }
            }
            pending = Some(ring);
            if let Ok(mut state) = ring.state.lock() {
                let readers = state.subscribers;
                state.events.push_back((event, readers));
                let keep = self.shared.capacity.max(run);
                while state.events.len() > keep {
                    // The oldest goes unread by those behind: they lag.
                    state.events.pop_front();
                    state.head += 1;
                }
            }
        }
        if let Some(ring) = pending {
            ring.published.notify_waiters();
        }
    }

    fn subscribe(
        &self,
        tenant_id: TenantId,
        channel: &str,
    ) -> Result<Box<dyn Subscription>, SubscribeError> {
        let key = (tenant_id, channel.to_owned());
        let Ok(mut channels) = self.shared.channels.lock() else {
            // A poisoned map: a subscription that reports `Closed`.
            return Ok(Box::new(RingSubscription {
                ring: None,
                cursor: 0,
                shared: Arc::clone(&self.shared),
                key,
            }));
        };
        let ring = if let Some(ring) = channels.get(tenant_id, channel) {
            Arc::clone(ring)
        } else {
            let tenant = channels.rings.entry(tenant_id).or_default();
            if tenant.len() >= self.shared.max_channels_per_tenant {
                if tenant.is_empty() {
                    channels.rings.remove(&tenant_id);
                }
                return Err(SubscribeError::TooManyChannels);
            }
            let ring = Arc::new(Ring::default());
            tenant.insert(key.1.clone(), Arc::clone(&ring));
            ring
        };
        // Counted under the map lock: a concurrent release of the last
        // subscriber either came before (and a new ring was made) or sees
        // this one.
        let cursor = match ring.state.lock() {
            Ok(mut state) => {
                state.subscribers += 1;
                state.tail()
            }
            Err(_) => 0,
        };
        drop(channels);
        Ok(Box::new(RingSubscription {
            ring: Some(ring),
            cursor,
            shared: Arc::clone(&self.shared),
            key,
        }))
    }

    fn live_channels(&self) -> usize {
        self.shared
            .channels
            .lock()
            .map_or(0, |channels| channels.count())
    }
}

struct RingSubscription {
    /// `None` only for a subscription that reports `Closed`.
    ring: Option<Arc<Ring>>,
    /// Position of the next event to read.
    cursor: u64,
    shared: Arc<Shared>,
    key: ChannelKey,
}

impl RingSubscription {
    fn try_next(&mut self, ring: &Ring) -> Option<Received> {
        let Ok(mut state) = ring.state.lock() else {
            return Some(Received::Closed);
        };
        if self.cursor < state.head {
            let skipped = state.head - self.cursor;
            self.cursor = state.head;
            return Some(Received::Lagged(skipped));
        }
        let index = usize::try_from(self.cursor - state.head).ok()?;
        let (event, readers) = state.events.get_mut(index)?;
        let event = Arc::clone(event);
        *readers = readers.saturating_sub(1);
        self.cursor += 1;
        state.trim();
        Some(Received::Event(event))
    }

    /// Appends up to `max` events to `events` under one lock; `None` if
    /// there is nothing to read yet.
    fn try_next_many(
        &mut self,
        ring: &Ring,
        events: &mut Vec<Arc<StoredEvent>>,
        max: usize,
    ) -> Option<Batch> {
        let Ok(mut state) = ring.state.lock() else {
            return Some(Batch::Closed);
        };
        if self.cursor < state.head {
            let skipped = state.head - self.cursor;
            self.cursor = state.head;
            return Some(Batch::Lagged(skipped));
        }
        let index = usize::try_from(self.cursor - state.head).ok()?;
        let before = events.len();
        for (event, readers) in state.events.iter_mut().skip(index).take(max.max(1)) {
            events.push(Arc::clone(event));
            *readers = readers.saturating_sub(1);
        }
        let taken = events.len() - before;
        if taken == 0 {
            return None;
        }
        self.cursor += taken as u64;
        state.trim();
        Some(Batch::Events)
    }
}

impl Subscription for RingSubscription {
    fn recv(&mut self) -> BoxFuture<'_, Received> {
        Box::pin(async move {
            let Some(ring) = self.ring.clone() else {
                return Received::Closed;
            };
            loop {
                // Registered before looking, so a publish in between wakes it.
                let published = ring.published.notified();
                if let Some(received) = self.try_next(&ring) {
                    return received;
                }
                published.await;
            }
        })
    }

    fn recv_many<'a>(
        &'a mut self,
        events: &'a mut Vec<Arc<StoredEvent>>,
        max: usize,
    ) -> BoxFuture<'a, Batch> {
        Box::pin(async move {
            let Some(ring) = self.ring.clone() else {
                return Batch::Closed;
            };
            loop {
                // Registered before looking, so a publish in between wakes it.
                let published = ring.published.notified();
                if let Some(batch) = self.try_next_many(&ring, events, max) {
                    return batch;
                }
                published.await;
            }
        })
    }
}

impl Drop for RingSubscription {
    fn drop(&mut self) {
        // Leave the ring first (its unread events stop waiting for this
        // reader), then free it if this was its last subscriber (under the
        // map lock, so a concurrent subscribe either came before, and keeps
        // it, or creates a new one after).
        let Some(ring) = self.ring.take() else {
            return;
        };
        if let Ok(mut channels) = self.shared.channels.lock() {
            if let Ok(mut state) = ring.state.lock() {
                state.subscribers = state.subscribers.saturating_sub(1);
                state.forget_reader(self.cursor);
            }
            channels.release_if_unused(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(tenant_id: TenantId, channel: &str, offset: u64) -> Arc<StoredEvent> {
        Arc::new(StoredEvent::new(
            tenant_id,
            channel.into(),
            offset,
            "d".into(),
            None,
            0,
            "1".into(),
        ))
    }

    #[tokio::test]
    async fn delivers_per_tenant_channel_and_reports_lag() -> Result<(), SubscribeError> {
        let broker = InProcessBroker::new(2, 10);
        let mut a = broker.subscribe(1, "temp")?;
        let mut b = broker.subscribe(2, "temp")?;
        broker.publish(vec![
            event(1, "temp", 1),
            event(2, "temp", 7),
            event(1, "x", 1),
        ]);
        assert!(matches!(a.recv().await, Received::Event(e) if e.offset == 1));
        assert!(matches!(b.recv().await, Received::Event(e) if e.offset == 7));
        // Four commits of one event each into a ring of two.
        for offset in 2..=5 {
            broker.publish(vec![event(1, "temp", offset)]);
        }
        assert!(matches!(a.recv().await, Received::Lagged(2)));
        assert!(matches!(a.recv().await, Received::Event(e) if e.offset == 4));
        Ok(())
    }

    #[tokio::test]
    async fn recv_many_takes_what_is_queued_in_order_and_reports_lag_first()
    -> Result<(), SubscribeError> {
        let broker = InProcessBroker::new(4, 10);
        let mut a = broker.subscribe(1, "temp")?;
        let mut events = Vec::new();
        broker.publish((1..=3).map(|offset| event(1, "temp", offset)).collect());
        assert_eq!(a.recv_many(&mut events, 2).await, Batch::Events);
        assert_eq!(events.iter().map(|e| e.offset).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(a.recv_many(&mut events, 64).await, Batch::Events);
        assert_eq!(
            events.iter().map(|e| e.offset).collect::<Vec<_>>(),
            [1, 2, 3],
            "appended after what was there"
        );
        assert_eq!(held(&broker, 1, "temp"), 0, "all read");
        // Six more commits into a ring of four: two skipped, reported
        // before the four that are left.
        events.clear();
        for offset in 4..=9 {
            broker.publish(vec![event(1, "temp", offset)]);
        }
        assert_eq!(a.recv_many(&mut events, 64).await, Batch::Lagged(2));
        assert!(events.is_empty());
        assert_eq!(a.recv_many(&mut events, 64).await, Batch::Events);
        assert_eq!(
            events.iter().map(|e| e.offset).collect::<Vec<_>>(),
            [6, 7, 8, 9]
        );
        // A waiting subscriber is woken by a publish, once for the run.
        let waiting = tokio::spawn(async move {
            let mut events = Vec::new();
            let batch = a.recv_many(&mut events, 64).await;
            (batch, events.iter().map(|e| e.offset).collect::<Vec<_>>())
        });
        tokio::task::yield_now().await;
        broker.publish(vec![event(1, "temp", 10), event(1, "temp", 11)]);
        let (batch, offsets) = waiting.await.expect("the reader finished");
        assert_eq!(batch, Batch::Events);
        assert_eq!(offsets, [10, 11]);
        Ok(())
    }

    #[tokio::test]
    async fn one_commit_bigger_than_the_ring_is_kept_whole() -> Result<(), SubscribeError> {
        let broker = InProcessBroker::new(4, 10);
        let mut a = broker.subscribe(1, "temp")?;
        let mut other = broker.subscribe(1, "other")?;
        // One commit of ten events on the channel (interleaved with one on
        // another channel, which ends the run): the run of nine after it is
        // kept whole, the event before was pushed out by it.
        let mut commit: Vec<_> = (1..=10).map(|offset| event(1, "temp", offset)).collect();
        commit.insert(1, event(1, "other", 1));
        broker.publish(commit);
        assert_eq!(held(&broker, 1, "temp"), 9);
        let mut events = Vec::new();
        assert_eq!(a.recv_many(&mut events, 64).await, Batch::Lagged(1));
        assert_eq!(a.recv_many(&mut events, 64).await, Batch::Events);
        assert_eq!(
            events.iter().map(|e| e.offset).collect::<Vec<_>>(),
            (2..=10).collect::<Vec<_>>()
        );
        assert!(matches!(other.recv().await, Received::Event(e) if e.offset == 1));
        // The next commit is back within the ring's capacity.
        broker.publish((11..=16).map(|offset| event(1, "temp", offset)).collect());
        assert_eq!(held(&broker, 1, "temp"), 6);
        broker.publish(vec![event(1, "temp", 17)]);
        assert_eq!(held(&broker, 1, "temp"), 4);
        events.clear();
        assert_eq!(a.recv_many(&mut events, 64).await, Batch::Lagged(3));
        assert_eq!(a.recv_many(&mut events, 64).await, Batch::Events);
        assert_eq!(
            events.iter().map(|e| e.offset).collect::<Vec<_>>(),
            [14, 15, 16, 17]
        );
        Ok(())
    }

    /// Events the ring of `channel` holds now.
    fn held(broker: &InProcessBroker, tenant_id: TenantId, channel: &str) -> usize {
        let channels = broker.shared.channels.lock().expect("not poisoned");
        channels.get(tenant_id, channel).map_or(0, |ring| {
            ring.state.lock().expect("not poisoned").events.len()
        })
    }

    #[tokio::test]
    async fn a_ring_holds_only_what_a_subscriber_has_still_to_read() -> Result<(), SubscribeError> {
        let broker = InProcessBroker::new(1024, 10);
        let mut fast = broker.subscribe(1, "temp")?;
        let slow = broker.subscribe(1, "temp")?;
        broker.publish((1..=100).map(|offset| event(1, "temp", offset)).collect());
        assert_eq!(held(&broker, 1, "temp"), 100);
        for offset in 1..=100 {
            assert!(matches!(fast.recv().await, Received::Event(e) if e.offset == offset));
        }
        assert_eq!(
            held(&broker, 1, "temp"),
            100,
            "the slow one has read nothing"
        );
        // The slow subscriber leaves: nobody waits for those events now.
        drop(slow);
        assert_eq!(held(&broker, 1, "temp"), 0);
        // A late subscriber starts at the tail and keeps nothing older.
        let mut late = broker.subscribe(1, "temp")?;
        broker.publish(vec![event(1, "temp", 101)]);
        assert!(matches!(late.recv().await, Received::Event(e) if e.offset == 101));
        assert_eq!(held(&broker, 1, "temp"), 1, "fast has not read 101 yet");
        assert!(matches!(fast.recv().await, Received::Event(e) if e.offset == 101));
        assert_eq!(held(&broker, 1, "temp"), 0);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiting_subscriber_is_woken_by_each_publish() -> Result<(), SubscribeError> {
        let broker = Arc::new(InProcessBroker::new(8, 10));
        let mut subscribers = (0..4)
            .map(|_| broker.subscribe(3, "c"))
            .collect::<Result<Vec<_>, _>>()?;
        let readers = subscribers
            .drain(..)
            .map(|mut subscription| {
                tokio::spawn(async move {
                    let mut next = 1;
                    while next <= 1000 {
                        match subscription.recv().await {
                            Received::Event(event) => {
                                assert_eq!(event.offset, next);
                                next += 1;
                            }
                            // Catching up from the store is the endpoint's
                            // job; here the skipped offsets are counted.
                            Received::Lagged(skipped) => next += skipped,
                            Received::Closed => panic!("the broker is alive"),
                        }
                    }
                    next
                })
            })
            .collect::<Vec<_>>();
        for offset in 1..=1000 {
            broker.publish(vec![event(3, "c", offset)]);
            if offset % 7 == 0 {
                tokio::task::yield_now().await;
            }
        }
        for reader in readers {
            assert_eq!(reader.await.expect("reader finished"), 1001);
        }
        Ok(())
    }

    #[tokio::test]
    async fn rings_are_freed_with_their_last_subscriber_and_capped_per_tenant()
    -> Result<(), SubscribeError> {
        let broker = InProcessBroker::new(4, 2);
        let a = broker.subscribe(1, "a")?;
        let a_again = broker.subscribe(1, "a")?;
        let b = broker.subscribe(1, "b")?;
        assert_eq!(broker.live_channels(), 2);
        // A third channel of tenant 1 is refused; subscribing to one it
        // has, or another tenant's, is not.
        assert_eq!(
            broker.subscribe(1, "c").err(),
            Some(SubscribeError::TooManyChannels)
        );
        let more_a = broker.subscribe(1, "a")?;
        let other = broker.subscribe(2, "c")?;
        assert_eq!(broker.live_channels(), 3);
        drop((a, a_again));
        assert_eq!(broker.live_channels(), 3, "\"a\" still has a subscriber");
        drop(more_a);
        assert_eq!(broker.live_channels(), 2);
        let c = broker.subscribe(1, "c")?;
        drop((b, c, other));
        assert_eq!(broker.live_channels(), 0);
        // Churn on new names leaves nothing behind.
        for index in 0..1000 {
            drop(broker.subscribe(1, &format!("churn/{index}"))?);
        }
        assert_eq!(broker.live_channels(), 0);
        let mut late = broker.subscribe(1, "a")?;
        broker.publish(vec![event(1, "a", 1)]);
        assert!(matches!(late.recv().await, Received::Event(e) if e.offset == 1));
        Ok(())
    }
}
