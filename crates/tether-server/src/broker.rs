//! Fan-out behind a small trait: the store hands committed events to a
//! [`Broker`]; each receiver connection reads those of all its
//! subscriptions from one bounded [`Inbox`].
//!
//! ```text
//!  writer thread: COMMIT ─▶ publish(events) ─▶ per channel: its subscribers
//!                                                └▶ each connection's Inbox: the commit's
//!                                                   share under one lock, one wake-up
//!  receiver connection: one delivery task ◀── Inbox (every subscription's events, in order)
//! ```
//!
//! [`InProcessBroker`] lists the subscribers of each channel with any
//! (freed with its last subscriber; at most `max_channels_per_tenant` per
//! tenant). An event is encoded once and shared (`Arc`) by every inbox
//! that holds it; a subscription holds at most a live queue of events in
//! its inbox: memory is bounded per subscription, never by the slowest
//! receiver. A subscription that falls more than a live queue behind gets
//! [`Item::Lagged`] and catches up from the store (see
//! `receiver_endpoint`), so nothing is lost.
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

/// Identifies one subscription within its [`Inbox`].
pub type SubscriptionId = u64;

/// What a receiver connection's [`Inbox`] holds, in the order it happened.
#[derive(Debug, Clone)]
pub enum Item {
    /// The next live event of a subscription.
    Event(SubscriptionId, Arc<StoredEvent>),
    /// The subscription fell behind (its live events were dropped from the
    /// moment it was more than a live queue behind) or the cluster asks
    /// for a resynchronisation: read the channel from the store to its
    /// end, after [`Inbox::resume`].
    Lagged(SubscriptionId),
}

/// A receiver connection's live events, every subscription's in one queue:
/// one task and one wake-up per commit deliver them all, however many
/// channels the connection subscribes to (a task per subscription cost
/// about 1.3 KiB and a wake-up per channel per commit).
///
/// The broker appends what a commit brings for each subscription under one
/// lock and wakes the reader once. A subscription holds at most the
/// broker's live queue of events, or one commit's if they are more and
/// nothing was waiting before it (a commit's run on a channel stays whole,
/// so a burst does not make every subscriber read it back from the store);
/// past that its events are dropped until the reader took the
/// [`Item::Lagged`] that says so and called [`Inbox::resume`].
#[derive(Debug, Default)]
pub struct Inbox {
    state: Mutex<InboxState>,
    ready: Notify,
}

#[derive(Debug, Default)]
struct InboxState {
    items: VecDeque<Item>,
    subscriptions: HashMap<SubscriptionId, Queued>,
    next_id: SubscriptionId,
}

/// One subscription's share of the queue.
#[derive(Debug, Default)]
struct Queued {
    /// Its items in the queue now.
    queued: usize,
    /// The publish whose events it takes now, and what it had queued
    /// before that publish.
    publish: u64,
    before: usize,
    /// Dropping its events until the reader resumes it.
    lagged: bool,
}

impl Inbox {
    /// An empty inbox, for one receiver connection.
    pub fn new() -> Arc<Inbox> {
        Arc::new(Inbox::default())
    }

    /// Waits until something is queued, then moves up to `max` items (at
    /// least one) into `items`, in order.
    pub async fn recv_many(&self, items: &mut Vec<Item>, max: usize) {
        loop {
            // A publish in between leaves a permit: no wake-up is lost.
            if self.try_recv_many(items, max) {
                return;
            }
            self.ready.notified().await;
        }
    }

    /// Moves up to `max` queued items into `items`; `false` if none was.
    pub fn try_recv_many(&self, items: &mut Vec<Item>, max: usize) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        let state = &mut *state;
        let take = state.items.len().min(max.max(1));
        if take == 0 {
            return false;
        }
        for item in state.items.drain(..take) {
            let id = match &item {
                Item::Event(id, _) | Item::Lagged(id) => *id,
            };
            if let Some(queued) = state.subscriptions.get_mut(&id) {
                queued.queued = queued.queued.saturating_sub(1);
            }
            items.push(item);
        }
        if state.items.capacity() > 1024 && state.items.len() < state.items.capacity() / 4 {
            state.items.shrink_to(state.items.len() * 2);
        }
        true
    }

    /// After an [`Item::Lagged`] of `id`: its live events queue again from
    /// now on. Read the store only after this (whatever was dropped was
    /// committed before).
    pub fn resume(&self, id: SubscriptionId) {
        if let Ok(mut state) = self.state.lock()
            && let Some(queued) = state.subscriptions.get_mut(&id)
        {
            queued.lagged = false;
        }
    }

    /// A new subscription's place (the broker adds it to its channel
    /// after this, so nothing arrives for an unknown id).
    fn open(&self) -> Option<SubscriptionId> {
        let mut state = self.state.lock().ok()?;
        state.next_id += 1;
        let id = state.next_id;
        state.subscriptions.insert(id, Queued::default());
        Some(id)
    }

    /// The subscription is gone: its queued items go, nothing more comes.
    fn close(&self, id: SubscriptionId) {
        if let Ok(mut state) = self.state.lock()
            && state.subscriptions.remove(&id).is_some()
        {
            state.items.retain(|item| match item {
                Item::Event(of, _) | Item::Lagged(of) => *of != id,
            });
        }
    }

    /// Queues one publish's `events` for the subscriptions they name (in
    /// order), at most `capacity` per subscription unless it had nothing
    /// queued before this publish; `true` if anything was queued.
    fn push(&self, publish: u64, capacity: usize, events: &mut Vec<Delivery>) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        let state = &mut *state;
        let mut queued_any = false;
        for (id, event) in events.drain(..) {
            let Some(queued) = state.subscriptions.get_mut(&id) else {
                // Unsubscribed meanwhile.
                continue;
            };
            if queued.lagged {
                continue;
            }
            if queued.publish != publish {
                queued.publish = publish;
                queued.before = queued.queued;
            }
            if queued.before > 0 && queued.queued >= capacity {
                // More than a live queue behind: the reader reads the
                // store from where it is (this and what follows).
                queued.lagged = true;
                queued.queued += 1;
                state.items.push_back(Item::Lagged(id));
            } else {
                queued.queued += 1;
                state.items.push_back(Item::Event(id, event));
            }
            queued_any = true;
        }
        queued_any
    }

    /// Tells subscription `id` to read from the store to the channel's end
    /// (the cluster's resynchronisation).
    fn lag(&self, id: SubscriptionId) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        let Some(queued) = state.subscriptions.get_mut(&id) else {
            return false;
        };
        queued.queued += 1;
        state.items.push_back(Item::Lagged(id));
        true
    }

    /// Wakes the reader.
    fn wake(&self) {
        self.ready.notify_one();
    }
}

/// A subscription of a channel into an [`Inbox`]: dropping it
/// unsubscribes.
pub trait Subscription: Send {
    /// Its id in the inbox ([`Item`]s name it).
    fn id(&self) -> SubscriptionId;
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
    /// Subscribes to a tenant's channel: every event published from now on
    /// goes into `inbox` (one per receiver connection), named by the
    /// subscription's id. Dropping the subscription unsubscribes.
    fn subscribe(
        &self,
        tenant_id: TenantId,
        channel: &str,
        inbox: &Arc<Inbox>,
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

/// One event for one subscription of an inbox.
type Delivery = (SubscriptionId, Arc<StoredEvent>);

/// The in-process broker: each channel with subscribers lists their
/// inboxes (the list is created by the channel's first subscriber and freed
/// with its last, so memory follows what is subscribed now, and each tenant
/// has at most `max_channels_per_tenant` of them). A commit's events go to
/// each subscribed connection's [`Inbox`] under one lock per connection,
/// and each connection is woken once, whatever the number of its
/// subscriptions or of the commit's events: the `Arc` of an event (one
/// JSON encoding) is shared by every subscriber. A subscriber more than
/// `capacity` events behind is told with [`Item::Lagged`].
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

/// Subscribers by tenant, then channel name (looked up by `&str`, without
/// allocating a key per event), and how many publishes there were.
#[derive(Debug, Default)]
struct Channels {
    subscribers: HashMap<TenantId, HashMap<String, Vec<Subscriber>>>,
    publishes: u64,
}

/// One subscription, as its channel lists it.
#[derive(Debug, Clone)]
struct Subscriber {
    inbox: Arc<Inbox>,
    id: SubscriptionId,
}

impl Channels {
    fn get(&self, tenant_id: TenantId, channel: &str) -> Option<&Vec<Subscriber>> {
        self.subscribers.get(&tenant_id)?.get(channel)
    }

    fn count(&self) -> usize {
        self.subscribers.values().map(HashMap::len).sum()
    }
}

impl InProcessBroker {
    /// A broker whose live queues hold `capacity` events per subscription,
    /// with at most `max_channels_per_tenant` subscribed channels per
    /// tenant.
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

    /// Tells every subscription of a channel to read it from the store to
    /// its end (the cluster's resynchronisation).
    pub(crate) fn resync(&self, tenant_id: TenantId, channel: &str) {
        let Ok(channels) = self.shared.channels.lock() else {
            return;
        };
        for subscriber in channels.get(tenant_id, channel).into_iter().flatten() {
            if subscriber.inbox.lag(subscriber.id) {
                subscriber.inbox.wake();
            }
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
        // Under the map lock throughout: publishes reach every inbox in
        // the order they were made.
        let Ok(mut channels) = self.shared.channels.lock() else {
            return;
        };
        channels.publishes += 1;
        let publish = channels.publishes;
        // Each inbox's share of the commit, gathered first so that each
        // inbox is locked and woken once.
        let mut shares: Vec<(Arc<Inbox>, Vec<Delivery>)> = Vec::new();
        let mut index: HashMap<*const Inbox, usize> = HashMap::default();
        // The subscribers of the previous event (a commit's events on a
        // channel often come in runs).
        let mut previous: Option<(TenantId, &str, &Vec<Subscriber>)> = None;
        for event in &events {
            let subscribers = match previous {
                Some((tenant_id, channel, subscribers))
                    if tenant_id == event.tenant_id && channel == event.channel =>
                {
                    subscribers
                }
                _ => match channels.get(event.tenant_id, &event.channel) {
                    Some(subscribers) => {
                        previous = Some((event.tenant_id, &event.channel, subscribers));
                        subscribers
                    }
                    None => continue,
                },
            };
            for subscriber in subscribers {
                let at = *index
                    .entry(Arc::as_ptr(&subscriber.inbox))
                    .or_insert_with(|| {
                        shares.push((Arc::clone(&subscriber.inbox), Vec::new()));
                        shares.len() - 1
                    });
                if let Some((_, share)) = shares.get_mut(at) {
                    share.push((subscriber.id, Arc::clone(event)));
                }
            }
        }
        for (inbox, mut share) in shares {
            if inbox.push(publish, self.shared.capacity, &mut share) {
                inbox.wake();
            }
        }
    }

    fn subscribe(
        &self,
        tenant_id: TenantId,
        channel: &str,
        inbox: &Arc<Inbox>,
    ) -> Result<Box<dyn Subscription>, SubscribeError> {
        let key = (tenant_id, channel.to_owned());
        // Opened in the inbox before the channel lists it, so nothing
        // arrives for an id the inbox does not know; a poisoned lock makes
        // a subscription that never hears anything.
        let id = inbox.open().unwrap_or(0);
        let mut subscription = InboxSubscription {
            inbox: Arc::clone(inbox),
            id,
            shared: Arc::clone(&self.shared),
            key,
            listed: false,
        };
        let Ok(mut channels) = self.shared.channels.lock() else {
            return Ok(Box::new(subscription));
        };
        let tenant = channels.subscribers.entry(tenant_id).or_default();
        if !tenant.contains_key(channel) && tenant.len() >= self.shared.max_channels_per_tenant {
            if tenant.is_empty() {
                channels.subscribers.remove(&tenant_id);
            }
            drop(channels);
            return Err(SubscribeError::TooManyChannels);
        }
        tenant
            .entry(subscription.key.1.clone())
            .or_default()
            .push(Subscriber {
                inbox: Arc::clone(inbox),
                id,
            });
        subscription.listed = true;
        Ok(Box::new(subscription))
    }

    fn live_channels(&self) -> usize {
        self.shared
            .channels
            .lock()
            .map_or(0, |channels| channels.count())
    }
}

struct InboxSubscription {
    inbox: Arc<Inbox>,
    id: SubscriptionId,
    shared: Arc<Shared>,
    key: ChannelKey,
    /// Its channel lists it.
    listed: bool,
}

impl Subscription for InboxSubscription {
    fn id(&self) -> SubscriptionId {
        self.id
    }
}

impl Drop for InboxSubscription {
    fn drop(&mut self) {
        // Off the channel's list first (under the map lock, so no publish
        // is half done), then out of the inbox with what it had queued.
        if self.listed
            && let Ok(mut channels) = self.shared.channels.lock()
            && let Some(tenant) = channels.subscribers.get_mut(&self.key.0)
        {
            if let Some(subscribers) = tenant.get_mut(&self.key.1) {
                subscribers.retain(|subscriber| {
                    !(subscriber.id == self.id && Arc::ptr_eq(&subscriber.inbox, &self.inbox))
                });
                if subscribers.is_empty() {
                    tenant.remove(&self.key.1);
                }
            }
            if tenant.is_empty() {
                channels.subscribers.remove(&self.key.0);
            }
        }
        self.inbox.close(self.id);
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

    /// What is queued now, as (subscription, offset or `None` for a lag).
    fn take(inbox: &Inbox) -> Vec<(SubscriptionId, Option<u64>)> {
        let mut items = Vec::new();
        while inbox.try_recv_many(&mut items, 1000) {}
        items
            .into_iter()
            .map(|item| match item {
                Item::Event(id, event) => (id, Some(event.offset)),
                Item::Lagged(id) => (id, None),
            })
            .collect()
    }

    #[test]
    fn delivers_per_tenant_channel_and_reports_lag() -> Result<(), SubscribeError> {
        let broker = InProcessBroker::new(2, 10);
        let (a_inbox, b_inbox) = (Inbox::new(), Inbox::new());
        let a = broker.subscribe(1, "temp", &a_inbox)?;
        let b = broker.subscribe(2, "temp", &b_inbox)?;
        broker.publish(vec![
            event(1, "temp", 1),
            event(2, "temp", 7),
            event(1, "x", 1),
        ]);
        assert_eq!(take(&a_inbox), [(a.id(), Some(1))]);
        assert_eq!(take(&b_inbox), [(b.id(), Some(7))]);
        // Four commits of one event each, nothing read: two fit, the third
        // finds the subscription a live queue behind.
        for offset in 2..=5 {
            broker.publish(vec![event(1, "temp", offset)]);
        }
        assert_eq!(
            take(&a_inbox),
            [(a.id(), Some(2)), (a.id(), Some(3)), (a.id(), None)]
        );
        // Dropped until the reader resumes, then queued again.
        broker.publish(vec![event(1, "temp", 6)]);
        assert!(take(&a_inbox).is_empty());
        a_inbox.resume(a.id());
        broker.publish(vec![event(1, "temp", 7)]);
        assert_eq!(take(&a_inbox), [(a.id(), Some(7))]);
        assert!(take(&b_inbox).is_empty());
        Ok(())
    }

    #[test]
    fn one_commit_bigger_than_the_queue_is_kept_whole() -> Result<(), SubscribeError> {
        let broker = InProcessBroker::new(4, 10);
        let inbox = Inbox::new();
        let temp = broker.subscribe(1, "temp", &inbox)?;
        let other = broker.subscribe(1, "other", &inbox)?;
        // One commit of ten events on the channel, one on another channel
        // in between: all of it is queued, in order, for both
        // subscriptions of the connection's one inbox.
        let mut commit: Vec<_> = (1..=10).map(|offset| event(1, "temp", offset)).collect();
        commit.insert(1, event(1, "other", 1));
        broker.publish(commit);
        let mut expected = vec![(temp.id(), Some(1)), (other.id(), Some(1))];
        expected.extend((2..=10).map(|offset| (temp.id(), Some(offset))));
        assert_eq!(take(&inbox), expected);
        // Read: the next commit is kept whole too. Unread, a commit after
        // it finds the subscription more than its queue behind.
        broker.publish((11..=16).map(|offset| event(1, "temp", offset)).collect());
        broker.publish(vec![event(1, "temp", 17), event(1, "other", 2)]);
        let mut expected: Vec<_> = (11..=16).map(|offset| (temp.id(), Some(offset))).collect();
        expected.extend([(temp.id(), None), (other.id(), Some(2))]);
        assert_eq!(take(&inbox), expected);
        Ok(())
    }

    #[tokio::test]
    async fn recv_many_takes_what_is_queued_in_order_and_waits_for_a_publish()
    -> Result<(), SubscribeError> {
        let broker = Arc::new(InProcessBroker::new(16, 10));
        let inbox = Inbox::new();
        let a = broker.subscribe(1, "temp", &inbox)?;
        broker.publish((1..=3).map(|offset| event(1, "temp", offset)).collect());
        let mut items = Vec::new();
        inbox.recv_many(&mut items, 2).await;
        assert_eq!(items.len(), 2);
        inbox.recv_many(&mut items, 64).await;
        let offsets: Vec<_> = items
            .iter()
            .map(|item| match item {
                Item::Event(id, event) => (*id, event.offset),
                Item::Lagged(id) => (*id, 0),
            })
            .collect();
        assert_eq!(offsets, [(a.id(), 1), (a.id(), 2), (a.id(), 3)]);
        // A waiting reader is woken by a publish, once for the commit.
        let reader = {
            let inbox = Arc::clone(&inbox);
            tokio::spawn(async move {
                let mut items = Vec::new();
                inbox.recv_many(&mut items, 64).await;
                items.len()
            })
        };
        tokio::task::yield_now().await;
        broker.publish(vec![event(1, "temp", 4), event(1, "temp", 5)]);
        assert_eq!(reader.await.expect("the reader finished"), 2);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiting_reader_is_woken_by_each_publish() -> Result<(), SubscribeError> {
        let broker = Arc::new(InProcessBroker::new(2000, 10));
        let readers = (0..4)
            .map(|_| {
                let inbox = Inbox::new();
                let subscription = broker.subscribe(3, "c", &inbox)?;
                Ok(tokio::spawn(async move {
                    let mut next = 1;
                    let mut items = Vec::new();
                    while next <= 1000 {
                        inbox.recv_many(&mut items, 64).await;
                        for item in items.drain(..) {
                            match item {
                                Item::Event(id, event) => {
                                    assert_eq!(id, subscription.id());
                                    assert_eq!(event.offset, next);
                                    next += 1;
                                }
                                Item::Lagged(_) => panic!("the queue holds them all"),
                            }
                        }
                    }
                    next
                }))
            })
            .collect::<Result<Vec<_>, SubscribeError>>()?;
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

    #[test]
    fn unsubscribing_takes_its_queued_events_and_resync_lags_every_subscriber()
    -> Result<(), SubscribeError> {
        let broker = InProcessBroker::new(16, 10);
        let inbox = Inbox::new();
        let other_inbox = Inbox::new();
        let a = broker.subscribe(1, "a", &inbox)?;
        let b = broker.subscribe(1, "b", &inbox)?;
        let other = broker.subscribe(1, "a", &other_inbox)?;
        broker.publish(vec![event(1, "a", 1), event(1, "b", 1)]);
        drop(a);
        assert_eq!(take(&inbox), [(b.id(), Some(1))]);
        broker.publish(vec![event(1, "a", 2)]);
        assert!(take(&inbox).is_empty(), "no longer subscribed");
        assert_eq!(
            take(&other_inbox),
            [(other.id(), Some(1)), (other.id(), Some(2))]
        );
        broker.resync(1, "a");
        broker.resync(1, "b");
        assert_eq!(take(&other_inbox), [(other.id(), None)]);
        assert_eq!(take(&inbox), [(b.id(), None)]);
        // A resynchronisation does not stop the live events.
        broker.publish(vec![event(1, "b", 2)]);
        assert_eq!(take(&inbox), [(b.id(), Some(2))]);
        Ok(())
    }

    #[test]
    fn channels_are_freed_with_their_last_subscriber_and_capped_per_tenant()
    -> Result<(), SubscribeError> {
        let broker = InProcessBroker::new(4, 2);
        let inbox = Inbox::new();
        let a = broker.subscribe(1, "a", &inbox)?;
        let a_again = broker.subscribe(1, "a", &inbox)?;
        let b = broker.subscribe(1, "b", &inbox)?;
        assert_eq!(broker.live_channels(), 2);
        // A third channel of tenant 1 is refused; subscribing to one it
        // has, or another tenant's, is not.
        assert_eq!(
            broker.subscribe(1, "c", &inbox).err(),
            Some(SubscribeError::TooManyChannels)
        );
        let more_a = broker.subscribe(1, "a", &inbox)?;
        let other = broker.subscribe(2, "c", &inbox)?;
        assert_eq!(broker.live_channels(), 3);
        drop((a, a_again));
        assert_eq!(broker.live_channels(), 3, "\"a\" still has a subscriber");
        drop(more_a);
        assert_eq!(broker.live_channels(), 2);
        let c = broker.subscribe(1, "c", &inbox)?;
        drop((b, c, other));
        assert_eq!(broker.live_channels(), 0);
        // Churn on new names leaves nothing behind, in the broker or the
        // inbox.
        for index in 0..1000 {
            drop(broker.subscribe(1, &format!("churn/{index}"), &inbox)?);
        }
        assert_eq!(broker.live_channels(), 0);
        assert!(
            inbox
                .state
                .lock()
                .expect("not poisoned")
                .subscriptions
                .is_empty()
        );
        let late = broker.subscribe(1, "a", &inbox)?;
        broker.publish(vec![event(1, "a", 1)]);
        assert_eq!(take(&inbox), [(late.id(), Some(1))]);
        Ok(())
    }
}
