//! Fan-out behind a small trait: the store hands committed events to a
//! [`Broker`]; each receiver subscription reads them from a bounded live
//! queue.
//!
//! [`InProcessBroker`] keeps one `tokio::sync::broadcast` ring per channel:
//! memory is bounded by the ring, never by the slowest receiver. A receiver
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

/// Fan-out of committed events to subscribers (in-process now; a
/// multi-node broker implements the same two methods).
pub trait Broker: Send + Sync + 'static {
    /// Publishes committed events (in offset order per channel).
    fn publish(&self, events: Vec<Arc<StoredEvent>>);
    /// Subscribes to a tenant's channel: every event published from now on.
    fn subscribe(&self, tenant_id: TenantId, channel: &str) -> Box<dyn Subscription>;
}

type ChannelKey = (TenantId, String);

/// The in-process broker: a bounded broadcast ring per channel.
#[derive(Debug)]
pub struct InProcessBroker {
    capacity: usize,
    channels: Mutex<HashMap<ChannelKey, broadcast::Sender<Arc<StoredEvent>>>>,
}

impl InProcessBroker {
    /// A broker whose live queues hold `capacity` events per channel.
    pub fn new(capacity: usize) -> Self {
        InProcessBroker {
            capacity: capacity.max(1),
            channels: Mutex::new(HashMap::new()),
        }
    }
}

impl Broker for InProcessBroker {
    fn publish(&self, events: Vec<Arc<StoredEvent>>) {
        let Ok(mut channels) = self.channels.lock() else {
            return;
        };
        for event in events {
            let key = (event.tenant_id, event.channel.clone());
            if let Some(sender) = channels.get(&key)
                && sender.send(event).is_err()
            {
                // Nobody listens any more.
                channels.remove(&key);
            }
        }
    }

    fn subscribe(&self, tenant_id: TenantId, channel: &str) -> Box<dyn Subscription> {
        let receiver = match self.channels.lock() {
            Ok(mut channels) => channels
                .entry((tenant_id, channel.to_owned()))
                .or_insert_with(|| broadcast::channel(self.capacity).0)
                .subscribe(),
            Err(_) => broadcast::channel(1).1,
        };
        Box::new(BroadcastSubscription { receiver })
    }
}

struct BroadcastSubscription {
    receiver: broadcast::Receiver<Arc<StoredEvent>>,
}

impl Subscription for BroadcastSubscription {
    fn recv(&mut self) -> BoxFuture<'_, Received> {
        Box::pin(async move {
            match self.receiver.recv().await {
                Ok(event) => Received::Event(event),
                Err(broadcast::error::RecvError::Lagged(skipped)) => Received::Lagged(skipped),
                Err(broadcast::error::RecvError::Closed) => Received::Closed,
            }
        })
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
    async fn delivers_per_tenant_channel_and_reports_lag() {
        let broker = InProcessBroker::new(2);
        let mut a = broker.subscribe(1, "temp");
        let mut b = broker.subscribe(2, "temp");
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
    }
}
