//! [`NatsBroker`]: the [`Broker`] of a cluster node, over NATS core
//! (at-most-once; no JetStream, see the [module docs](super)).
//!
//! ```text
//!  this node's writer ──publish──▶ sequencer ──▶ local live queue ──▶ receivers here
//!        │                            ▲
//!        └──▶ outbox ──▶ NATS  tether.ev.<tenant>.<hex channel>  (one subscription per
//!                              ▲                                 channel subscribed here)
//!              other nodes ────┘
//!  session opened ──▶ tether.sessions        every node: fence older local sessions
//!  command ────────▶ tether.cmd.<hex device> the node holding the device answers
//!  reconnected / dropped events ──▶ tether.resync: every node's receivers catch up
//!                                   (events and descriptions, from the database)
//! ```
//!
//! Nothing here is the truth: the database is. A receiver that misses a
//! NATS message (NATS down, this node reconnecting, a slow consumer, the
//! outbox full) sees a gap in the offsets of the next event and reads it
//! from the database; when a channel goes quiet after such a loss, the
//! resynchronisation on reconnect (or on another node's `tether.resync`)
//! makes every subscription read from the database up to its end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tether_proto::{CommandStatus, ErrorCode};
use tokio::sync::{mpsc, watch};

use super::sequencer::Sequencer;
use crate::broker::{
    Broker, ChannelDescribed, CommandReply, DeviceCommand, InProcessBroker, Inbox, LocalDevices,
    SubscribeError, Subscription, SubscriptionId,
};
use crate::store::{BoxFuture, StoredEvent, TenantId};

/// Events waiting for NATS; more are dropped (and announced by a
/// resynchronisation once NATS takes them again).
const OUTBOX: usize = 16_384;
/// How often held events are checked against the reorder wait.
const SEQUENCER_TICK: Duration = Duration::from_millis(10);
/// The longest pause between reconnection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_millis(500);

const SESSIONS_SUBJECT: &str = "tether.sessions";
const RESYNC_SUBJECT: &str = "tether.resync";
/// Channel descriptions devices sent (best effort: a receiver that
/// subscribes reads the stored ones first, and again after every
/// resynchronisation).
const DESCRIPTIONS_SUBJECT: &str = "tether.descriptions";

fn event_subject(tenant_id: TenantId, channel: &str) -> String {
    format!("tether.ev.{tenant_id}.{}", hex::encode(channel))
}

fn command_subject(device_id: &str) -> String {
    format!("tether.cmd.{}", hex::encode(device_id))
}

/// The servers of `urls`: one `nats://host:port`, or several separated
/// by commas (the servers of one NATS cluster; the client connects to
/// one and moves to another when it goes away).
pub fn server_addrs(urls: &str) -> Result<Vec<async_nats::ServerAddr>, async_nats::ConnectError> {
    let addrs: Vec<async_nats::ServerAddr> = urls
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(str::parse)
        .collect::<Result<_, std::io::Error>>()
        .map_err(|error| {
            async_nats::ConnectError::with_source(async_nats::ConnectErrorKind::ServerParse, error)
        })?;
    if addrs.is_empty() {
        return Err(async_nats::ConnectErrorKind::ServerParse.into());
    }
    Ok(addrs)
}

/// An event as it crosses nodes.
#[derive(Serialize, Deserialize)]
struct WireEvent<'a> {
    node: &'a str,
    tenant: TenantId,
    channel: &'a str,
    offset: u64,
    device: &'a str,
    device_time_ms: Option<u64>,
    server_time_ms: u64,
    #[serde(borrow)]
    payload: &'a RawValue,
}

#[derive(Serialize, Deserialize)]
struct SessionNotice<'a> {
    node: &'a str,
    device: &'a str,
    fence: u64,
}

#[derive(Serialize, Deserialize)]
struct DescriptionNotice<'a> {
    node: &'a str,
    description: ChannelDescribed,
}

#[derive(Serialize, Deserialize)]
struct ResyncNotice<'a> {
    node: &'a str,
}

#[derive(Serialize, Deserialize)]
struct WireCommand<'a> {
    tenant: TenantId,
    device: &'a str,
    channel: &'a str,
    #[serde(borrow)]
    payload: &'a RawValue,
    timeout_ms: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum WireReply<'a> {
    Answer {
        status: CommandStatus,
        #[serde(borrow)]
        result: &'a RawValue,
    },
    Error(ErrorCode),
}

/// Counters of what crossed NATS (for metrics and tests).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NatsStats {
    /// Events handed to NATS.
    pub published: u64,
    /// Events not handed to NATS (the outbox was full or NATS refused).
    pub dropped: u64,
    /// Events from other nodes.
    pub received: u64,
    /// Resynchronisations of this node's subscriptions.
    pub resyncs: u64,
}

/// The NATS broker of one node.
pub struct NatsBroker {
    shared: Arc<Shared>,
}

impl core::fmt::Debug for NatsBroker {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NatsBroker")
            .field("node", &self.shared.node)
            .finish_non_exhaustive()
    }
}

struct Shared {
    node: String,
    client: async_nats::Client,
    local: InProcessBroker,
    devices: Arc<dyn LocalDevices>,
    outbox: mpsc::Sender<Arc<StoredEvent>>,
    channels: Mutex<HashMap<(TenantId, String), Interest>>,
    /// Command subscriptions of this node's device sessions: device →
    /// (fencing token, forwarding task).
    commands: Mutex<HashMap<String, (u64, tokio::task::JoinHandle<()>)>>,
    /// Some event of this node did not reach NATS: announce a
    /// resynchronisation once NATS takes events again.
    owe_resync: AtomicBool,
    /// Bumped with every resynchronisation: receivers read the stored
    /// descriptions again (those of other nodes may have been missed).
    description_resyncs: watch::Sender<u64>,
    stats: Mutex<NatsStats>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// A channel subscribed on this node.
struct Interest {
    subscribers: usize,
    sequencer: Sequencer,
    /// Forwards the channel's NATS messages.
    task: tokio::task::JoinHandle<()>,
}

impl NatsBroker {
    /// Connects to `urls` (one server or a comma-separated list of the
    /// servers of a NATS cluster, see [`server_addrs`]) as node `node`
    /// (retrying in the background while NATS is unreachable: the node
    /// stores and serves its own receivers meanwhile; when its server goes
    /// away the client moves to another of the list). `devices` are this
    /// node's device sessions.
    pub async fn connect(
        urls: &str,
        node: &str,
        live_queue: usize,
        max_channels_per_tenant: usize,
        devices: Arc<dyn LocalDevices>,
    ) -> Result<NatsBroker, async_nats::ConnectError> {
        let (events, mut connection_events) = mpsc::unbounded_channel();
        let client = async_nats::ConnectOptions::new()
            .name(node)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis(50)
                    .saturating_mul(u32::try_from(attempts).unwrap_or(u32::MAX))
                    .min(MAX_RECONNECT_DELAY)
            })
            .event_callback(move |event| {
                let events = events.clone();
                async move {
                    let _ = events.send(event);
                }
            })
            .connect(server_addrs(urls)?)
            .await?;
        let (outbox, outgoing) = mpsc::channel(OUTBOX);
        let shared = Arc::new(Shared {
            node: node.to_owned(),
            client,
            local: InProcessBroker::new(live_queue, max_channels_per_tenant),
            devices,
            outbox,
            channels: Mutex::new(HashMap::new()),
            commands: Mutex::new(HashMap::new()),
            owe_resync: AtomicBool::new(false),
            description_resyncs: watch::Sender::new(0),
            stats: Mutex::new(NatsStats::default()),
            tasks: Mutex::new(Vec::new()),
        });
        // The cluster's notices are subscribed before the node serves
        // anyone, and the subscriptions reach the NATS server (bounded by
        // NOTICES_READY while NATS is away): a description another node
        // sends just after this one started is heard, not lost.
        let subscribed = Notices::subscribe(&shared.client).await;
        let _ = tokio::time::timeout(NOTICES_READY, shared.client.flush()).await;
        let mut tasks = vec![
            tokio::spawn(publisher(Arc::clone(&shared), outgoing)),
            tokio::spawn(sequencer_ticks(Arc::downgrade(&shared))),
            tokio::spawn(notices(Arc::clone(&shared), subscribed)),
        ];
        let connection = Arc::clone(&shared);
        tasks.push(tokio::spawn(async move {
            while let Some(event) = connection_events.recv().await {
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!(node = %connection.node, "NATS connected; receivers catch up");
                        connection.resync_local();
                        connection.announce_resync().await;
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!(node = %connection.node, "NATS disconnected; storing and serving this node's receivers meanwhile");
                    }
                    async_nats::Event::SlowConsumer(_) => {
                        tracing::warn!("NATS dropped messages for this node (slow consumer); receivers catch up");
                        connection.resync_local();
                    }
                    other => tracing::debug!(event = %other, "NATS"),
                }
            }
        }));
        if let Ok(mut held) = shared.tasks.lock() {
            held.extend(tasks);
        }
        Ok(NatsBroker { shared })
    }

    /// What crossed NATS so far.
    pub fn stats(&self) -> NatsStats {
        self.shared
            .stats
            .lock()
            .map_or_else(|_| NatsStats::default(), |s| *s)
    }
}

impl Drop for NatsBroker {
    fn drop(&mut self) {
        if let Ok(mut tasks) = self.shared.tasks.lock() {
            for task in tasks.drain(..) {
                task.abort();
            }
        }
        if let Ok(mut channels) = self.shared.channels.lock() {
            for (_, interest) in channels.drain() {
                interest.task.abort();
            }
        }
        if let Ok(mut commands) = self.shared.commands.lock() {
            for (_, (_, task)) in commands.drain() {
                task.abort();
            }
        }
    }
}

impl Shared {
    fn count(&self, change: impl FnOnce(&mut NatsStats)) {
        if let Ok(mut stats) = self.stats.lock() {
            change(&mut stats);
        }
    }

    /// Puts an event (this node's or another's) in order into the local
    /// live queue, if anyone here subscribes to its channel.
    fn deliver(&self, event: Arc<StoredEvent>) {
        let ready = self.sequence(event);
        if !ready.is_empty() {
            self.local.publish(ready);
        }
    }

    /// The events that `event` makes ready to deliver in order, if anyone
    /// here subscribes to its channel.
    fn sequence(&self, event: Arc<StoredEvent>) -> Vec<Arc<StoredEvent>> {
        match self.channels.lock() {
            Ok(mut channels) => match channels.get_mut(&(event.tenant_id, event.channel.clone())) {
                Some(interest) => interest.sequencer.push(event, Instant::now()),
                None => Vec::new(),
            },
            Err(_) => Vec::new(),
        }
    }

    /// Every subscription here reads from the database up to its end, and
    /// every receiver of descriptions reads the stored ones again (NATS
    /// core does not keep the description notices sent while this node,
    /// or the one that sent them, was away).
    fn resync_local(&self) {
        self.description_resyncs
            .send_modify(|epoch| *epoch = epoch.wrapping_add(1));
        if let Ok(mut channels) = self.channels.lock() {
            let held: Vec<Arc<StoredEvent>> = channels
                .values_mut()
                .flat_map(|interest| interest.sequencer.flush())
                .collect();
            if !held.is_empty() {
                self.local.publish(held);
            }
            for (tenant_id, channel) in channels.keys() {
                self.local.resync(*tenant_id, channel);
            }
        }
        self.count(|stats| stats.resyncs += 1);
    }

    /// An event of this node did not reach NATS.
    fn dropped(&self) {
        self.owe_resync.store(true, Ordering::Relaxed);
        self.count(|stats| stats.dropped += 1);
    }

    /// Tells every node to resynchronise (this node may have failed to
    /// hand them events).
    async fn announce_resync(&self) {
        if let Ok(notice) = serde_json::to_vec(&ResyncNotice { node: &self.node }) {
            let _ = self.client.publish(RESYNC_SUBJECT, notice.into()).await;
        }
    }
}

/// Hands this node's committed events to NATS, in order.
async fn publisher(shared: Arc<Shared>, mut outgoing: mpsc::Receiver<Arc<StoredEvent>>) {
    while let Some(event) = outgoing.recv().await {
        let Ok(payload) = RawValue::from_string(event.payload.clone()) else {
            continue;
        };
        let wire = WireEvent {
            node: &shared.node,
            tenant: event.tenant_id,
            channel: &event.channel,
            offset: event.offset,
            device: &event.device,
            device_time_ms: event.device_time_ms,
            server_time_ms: event.server_time_ms,
            payload: &payload,
        };
        let Ok(bytes) = serde_json::to_vec(&wire) else {
            continue;
        };
        let subject = event_subject(event.tenant_id, &event.channel);
        match shared.client.publish(subject, Bytes::from(bytes)).await {
            Ok(()) => shared.count(|stats| stats.published += 1),
            Err(error) => {
                tracing::debug!(%error, "NATS refused an event; receivers elsewhere will catch up");
                shared.dropped();
            }
        }
        // Events were lost on the way (the outbox was full, NATS refused
        // one): once the outbox is drained, every node catches up.
        if outgoing.is_empty() && shared.owe_resync.swap(false, Ordering::Relaxed) {
            shared.announce_resync().await;
        }
    }
}

/// Lets held events through once they waited long enough.
async fn sequencer_ticks(shared: std::sync::Weak<Shared>) {
    let mut tick = tokio::time::interval(SEQUENCER_TICK);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let now = Instant::now();
        let ready: Vec<Arc<StoredEvent>> = match shared.channels.lock() {
            Ok(mut channels) => channels
                .values_mut()
                .filter(|interest| interest.sequencer.is_holding())
                .flat_map(|interest| interest.sequencer.expire(now))
                .collect(),
            Err(_) => Vec::new(),
        };
        if !ready.is_empty() {
            shared.local.publish(ready);
        }
    }
}

/// How long a starting node waits for its notice subscriptions to reach
/// NATS (it starts anyway when NATS is away, and hears them once it is
/// back).
const NOTICES_READY: Duration = Duration::from_secs(2);

/// The subscriptions of the cluster's notices.
struct Notices {
    sessions: async_nats::Subscriber,
    resyncs: async_nats::Subscriber,
    descriptions: async_nats::Subscriber,
}

impl Notices {
    async fn subscribe(client: &async_nats::Client) -> Option<Notices> {
        let sessions = client.subscribe(SESSIONS_SUBJECT).await;
        let resyncs = client.subscribe(RESYNC_SUBJECT).await;
        let descriptions = client.subscribe(DESCRIPTIONS_SUBJECT).await;
        match (sessions, resyncs, descriptions) {
            (Ok(sessions), Ok(resyncs), Ok(descriptions)) => Some(Notices {
                sessions,
                resyncs,
                descriptions,
            }),
            _ => None,
        }
    }
}

/// Session and resynchronisation notices from every node.
async fn notices(shared: Arc<Shared>, subscribed: Option<Notices>) {
    let Some(Notices {
        mut sessions,
        mut resyncs,
        mut descriptions,
    }) = subscribed
    else {
        tracing::error!("cannot subscribe to the cluster's notices");
        return;
    };
    loop {
        tokio::select! {
            Some(message) = sessions.next() => {
                if let Ok(notice) = serde_json::from_slice::<SessionNotice<'_>>(&message.payload)
                    && notice.node != shared.node
                {
                    shared.devices.fence_older(notice.device, notice.fence);
                }
            }
            Some(message) = resyncs.next() => {
                if let Ok(notice) = serde_json::from_slice::<ResyncNotice<'_>>(&message.payload)
                    && notice.node != shared.node
                {
                    tracing::info!(from = notice.node, "another node may have missed NATS; receivers catch up");
                    shared.resync_local();
                }
            }
            Some(message) = descriptions.next() => {
                if let Ok(notice) = serde_json::from_slice::<DescriptionNotice<'_>>(&message.payload)
                    && notice.node != shared.node
                {
                    shared.local.publish_description(Arc::new(notice.description));
                }
            }
            else => return,
        }
    }
}

/// Forwards one channel's events from the other nodes.
async fn channel_events(
    shared: std::sync::Weak<Shared>,
    client: async_nats::Client,
    key: (TenantId, String),
) {
    let subject = event_subject(key.0, &key.1);
    let mut subscriber = match client.subscribe(subject.clone()).await {
        Ok(subscriber) => subscriber,
        Err(error) => {
            tracing::warn!(%error, subject, "cannot subscribe; receivers read from the database");
            return;
        }
    };
    // Events other nodes committed while the subscription was being made
    // reach the channel's receivers through the database.
    if let Some(shared) = shared.upgrade()
        && let Ok(channels) = shared.channels.lock()
        && channels.contains_key(&key)
    {
        shared.local.resync(key.0, &key.1);
    }
    while let Some(message) = subscriber.next().await {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let Ok(wire) = serde_json::from_slice::<WireEvent<'_>>(&message.payload) else {
            continue;
        };
        if wire.node == shared.node {
            continue;
        }
        shared.count(|stats| stats.received += 1);
        shared.deliver(Arc::new(StoredEvent::new(
            wire.tenant,
            wire.channel.to_owned(),
            wire.offset,
            wire.device.to_owned(),
            wire.device_time_ms,
            wire.server_time_ms,
            wire.payload.get().to_owned(),
        )));
    }
}

/// Answers commands for a device connected to this node.
async fn device_commands(
    shared: std::sync::Weak<Shared>,
    client: async_nats::Client,
    device_id: String,
) {
    let mut subscriber = match client.subscribe(command_subject(&device_id)).await {
        Ok(subscriber) => subscriber,
        Err(error) => {
            tracing::warn!(%error, device = %device_id, "cannot take commands from other nodes");
            return;
        }
    };
    while let Some(message) = subscriber.next().await {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let Some(reply_to) = message.reply.clone() else {
            continue;
        };
        let Ok(wire) = serde_json::from_slice::<WireCommand<'_>>(&message.payload) else {
            continue;
        };
        let command = DeviceCommand {
            tenant_id: wire.tenant,
            device_id: wire.device.to_owned(),
            channel: wire.channel.to_owned(),
            payload: wire.payload.get().to_owned(),
            timeout: Duration::from_millis(wire.timeout_ms),
        };
        tokio::spawn(async move {
            let answer = shared.devices.command(command).await;
            let bytes = match &answer {
                // Not here (any more): another node may still answer; the
                // requester times out or hears "no responders".
                Err(ErrorCode::DEVICE_OFFLINE) => return,
                Err(code) => serde_json::to_vec(&WireReply::Error(*code)),
                Ok(reply) => match RawValue::from_string(reply.result.clone()) {
                    Ok(result) => serde_json::to_vec(&WireReply::Answer {
                        status: reply.status,
                        result: &result,
                    }),
                    Err(_) => serde_json::to_vec(&WireReply::Error(ErrorCode::INTERNAL)),
                },
            };
            if let Ok(bytes) = bytes {
                let _ = shared.client.publish(reply_to, bytes.into()).await;
            }
        });
    }
}

impl Broker for NatsBroker {
    fn publish_description(&self, description: Arc<ChannelDescribed>) {
        self.shared
            .local
            .publish_description(Arc::clone(&description));
        let notice = DescriptionNotice {
            node: &self.shared.node,
            description: ChannelDescribed::clone(&description),
        };
        let Ok(bytes) = serde_json::to_vec(&notice) else {
            return;
        };
        let client = self.shared.client.clone();
        tokio::spawn(async move {
            if let Err(error) = client.publish(DESCRIPTIONS_SUBJECT, bytes.into()).await {
                tracing::warn!(%error, "cannot tell the other nodes of a description");
            }
        });
    }

    fn descriptions(&self) -> tokio::sync::broadcast::Receiver<Arc<ChannelDescribed>> {
        self.shared.local.descriptions()
    }

    fn description_resyncs(&self) -> Option<watch::Receiver<u64>> {
        Some(self.shared.description_resyncs.subscribe())
    }

    fn publish(&self, events: Vec<Arc<StoredEvent>>) {
        // The commit's events reach the local live queue as one publish.
        let mut ready = Vec::new();
        for event in events {
            if self.shared.outbox.try_send(Arc::clone(&event)).is_err() {
                self.shared.dropped();
            }
            ready.extend(self.shared.sequence(event));
        }
        if !ready.is_empty() {
            self.shared.local.publish(ready);
        }
    }

    fn subscribe(
        &self,
        tenant_id: TenantId,
        channel: &str,
        inbox: &Arc<Inbox>,
    ) -> Result<Box<dyn Subscription>, SubscribeError> {
        let key = (tenant_id, channel.to_owned());
        let inner = {
            let mut channels = self
                .shared
                .channels
                .lock()
                .map_err(|_| SubscribeError::TooManyChannels)?;
            let inner = self.shared.local.subscribe(tenant_id, channel, inbox)?;
            let interest = channels.entry(key.clone()).or_insert_with(|| Interest {
                subscribers: 0,
                sequencer: Sequencer::default(),
                task: tokio::spawn(channel_events(
                    Arc::downgrade(&self.shared),
                    self.shared.client.clone(),
                    key.clone(),
                )),
            });
            interest.subscribers += 1;
            inner
        };
        Ok(Box::new(NatsSubscription {
            inner,
            shared: Arc::clone(&self.shared),
            key,
        }))
    }

    fn live_channels(&self) -> usize {
        self.shared.local.live_channels()
    }

    fn cluster_stats(&self) -> Option<NatsStats> {
        Some(self.stats())
    }

    fn session_opened(&self, _tenant_id: TenantId, device_id: &str, fence: u64) {
        // Other nodes fence their older sessions of the device.
        if let Ok(notice) = serde_json::to_vec(&SessionNotice {
            node: &self.shared.node,
            device: device_id,
            fence,
        }) {
            let client = self.shared.client.clone();
            tokio::spawn(async move {
                let _ = client.publish(SESSIONS_SUBJECT, notice.into()).await;
            });
        }
        // Commands for it now come here.
        let task = tokio::spawn(device_commands(
            Arc::downgrade(&self.shared),
            self.shared.client.clone(),
            device_id.to_owned(),
        ));
        if let Ok(mut commands) = self.shared.commands.lock()
            && let Some((_, old)) = commands.insert(device_id.to_owned(), (fence, task))
        {
            old.abort();
        }
    }

    fn session_closed(&self, device_id: &str, fence: u64) {
        if let Ok(mut commands) = self.shared.commands.lock()
            && commands
                .get(device_id)
                .is_some_and(|(current, _)| *current == fence)
            && let Some((_, task)) = commands.remove(device_id)
        {
            task.abort();
        }
    }

    fn remote_command(
        &self,
        command: DeviceCommand,
    ) -> BoxFuture<'_, Result<CommandReply, ErrorCode>> {
        Box::pin(async move {
            let payload = RawValue::from_string(command.payload.clone())
                .map_err(|_| ErrorCode::INVALID_FIELD)?;
            let wire = WireCommand {
                tenant: command.tenant_id,
                device: &command.device_id,
                channel: &command.channel,
                payload: &payload,
                timeout_ms: u64::try_from(command.timeout.as_millis()).unwrap_or(u64::MAX),
            };
            let bytes = serde_json::to_vec(&wire).map_err(|_| ErrorCode::INTERNAL)?;
            let request = async_nats::Request::new()
                .payload(bytes.into())
                .timeout(Some(command.timeout));
            let answer = self
                .shared
                .client
                .send_request(command_subject(&command.device_id), request)
                .await;
            let message = match answer {
                Ok(message) => message,
                Err(error) => {
                    return Err(match error.kind() {
                        async_nats::client::RequestErrorKind::NoResponders => {
                            ErrorCode::DEVICE_OFFLINE
                        }
                        async_nats::client::RequestErrorKind::TimedOut => {
                            ErrorCode::COMMAND_TIMEOUT
                        }
                        _ => ErrorCode::INTERNAL,
                    });
                }
            };
            match serde_json::from_slice::<WireReply<'_>>(&message.payload) {
                Ok(WireReply::Answer { status, result }) => Ok(CommandReply {
                    status,
                    result: result.get().to_owned(),
                }),
                Ok(WireReply::Error(code)) => Err(code),
                Err(_) => Err(ErrorCode::INTERNAL),
            }
        })
    }
}

/// A receiver's subscription on a cluster node: the local live queue
/// (a resynchronisation reaches it as an [`Item::Lagged`](crate::broker::Item)),
/// and the channel's interest in NATS.
struct NatsSubscription {
    inner: Box<dyn Subscription>,
    shared: Arc<Shared>,
    key: (TenantId, String),
}

impl Subscription for NatsSubscription {
    fn id(&self) -> SubscriptionId {
        self.inner.id()
    }
}

impl Drop for NatsSubscription {
    fn drop(&mut self) {
        if let Ok(mut channels) = self.shared.channels.lock()
            && let Some(interest) = channels.get_mut(&self.key)
        {
            interest.subscribers = interest.subscribers.saturating_sub(1);
            if interest.subscribers == 0
                && let Some(interest) = channels.remove(&self.key)
            {
                interest.task.abort();
            }
        }
    }
}
