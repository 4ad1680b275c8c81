//! Fan-out behind a small trait: the store hands committed events to a
//! [`Broker`]; each receiver subscription reads them from a bounded live
//! queue.
//!
//! [`InProcessBroker`] keeps one `tokio::sync::broadcast` ring per channel
//! with subscribers (freed with its last subscriber; at most
//! `max_channels_per_tenant` per tenant): memory is bounded by the ring,
//! never by the slowest receiver. A receiver
//! that falls more than a ring behind gets [`Received::Lagged`] and catches
//! up from the store (see `receiver_endpoint`), so nothing is lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::store::{BoxFuture, StoredEvent, TenantId};

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

/// One channel's live events for one subscriber.
pub trait Subscription: Send {
    /// The next event (in offset order, possibly with skips reported as
    /// [`Received::Lagged`]).
    fn recv(&mut self) -> BoxFuture<'_, Received>;
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

/// Fan-out of committed events to subscribers (in-process now; a
/// multi-node broker implements the same methods).
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
}

type ChannelKey = (TenantId, String);

/// The in-process broker: a bounded broadcast ring per channel with
/// subscribers. The ring is created by the channel's first subscriber and
/// freed when its last subscriber goes, so memory follows what is
/// subscribed now, and each tenant has at most `max_channels_per_tenant`
/// rings.
#[derive(Debug)]
pub struct InProcessBroker {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    capacity: usize,
    max_channels_per_tenant: usize,
    channels: Mutex<Channels>,
}

#[derive(Debug, Default)]
struct Channels {
    rings: HashMap<ChannelKey, broadcast::Sender<Arc<StoredEvent>>>,
    per_tenant: HashMap<TenantId, usize>,
}

impl Channels {
    /// Frees the ring of `key` if nobody listens to it any more.
    fn release_if_unused(&mut self, key: &ChannelKey) {
        if self
            .rings
            .get(key)
            .is_some_and(|sender| sender.receiver_count() == 0)
        {
            self.rings.remove(key);
            if let Some(count) = self.per_tenant.get_mut(&key.0) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.per_tenant.remove(&key.0);
                }
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
            }),
        }
    }
}

impl Broker for InProcessBroker {
    fn publish(&self, events: Vec<Arc<StoredEvent>>) {
        let Ok(mut channels) = self.shared.channels.lock() else {
            return;
        };
        for event in events {
            let key = (event.tenant_id, event.channel.clone());
            if let Some(sender) = channels.rings.get(&key)
                && sender.send(event).is_err()
            {
                channels.release_if_unused(&key);
            }
        }
    }

    fn subscribe(
        &self,
        tenant_id: TenantId,
        channel: &str,
    ) -> Result<Box<dyn Subscription>, SubscribeError> {
        let key = (tenant_id, channel.to_owned());
        let receiver = match self.shared.channels.lock() {
            Ok(mut channels) => {
                if let Some(sender) = channels.rings.get(&key) {
                    sender.subscribe()
                } else {
                    let count = channels.per_tenant.entry(tenant_id).or_insert(0);
                    if *count >= self.shared.max_channels_per_tenant {
                        if *count == 0 {
                            channels.per_tenant.remove(&tenant_id);
                        }
                        return Err(SubscribeError::TooManyChannels);
                    }
                    *count += 1;
                    let (sender, receiver) = broadcast::channel(self.shared.capacity);
                    channels.rings.insert(key.clone(), sender);
                    receiver
                }
            }
            // A poisoned map: a subscription that reports `Closed`.
            Err(_) => broadcast::channel(1).1,
        };
        Ok(Box::new(BroadcastSubscription {
            receiver: Some(receiver),
            shared: Arc::clone(&self.shared),
            key,
        }))
    }

    fn live_channels(&self) -> usize {
        self.shared
            .channels
            .lock()
            .map_or(0, |channels| channels.rings.len())
    }
}

struct BroadcastSubscription {
    /// Always `Some` until dropped.
    receiver: Option<broadcast::Receiver<Arc<StoredEvent>>>,
    shared: Arc<Shared>,
    key: ChannelKey,
}

impl Subscription for BroadcastSubscription {
    fn recv(&mut self) -> BoxFuture<'_, Received> {
        Box::pin(async move {
            let Some(receiver) = self.receiver.as_mut() else {
                return Received::Closed;
            };
            match receiver.recv().await {
                Ok(event) => Received::Event(event),
                Err(broadcast::error::RecvError::Lagged(skipped)) => Received::Lagged(skipped),
                Err(broadcast::error::RecvError::Closed) => Received::Closed,
            }
        })
    }
}

impl Drop for BroadcastSubscription {
    fn drop(&mut self) {
        // Unsubscribe first, then free the ring if this was its last
        // subscriber (under the lock, so a concurrent subscribe either
        // came before, and keeps it, or creates a new one after).
        drop(self.receiver.take());
        if let Ok(mut channels) = self.shared.channels.lock() {
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
        broker.publish((2..=5).map(|offset| event(1, "temp", offset)).collect());
        assert!(matches!(a.recv().await, Received::Lagged(2)));
        assert!(matches!(a.recv().await, Received::Event(e) if e.offset == 4));
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
