//! Prometheus metrics (`GET /metrics`, text exposition format).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::store::TransactionStats;

/// A label set with one label, `kind` (e.g. `device`, `receiver`,
/// `unauthenticated`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// The label's value.
    pub kind: String,
}

fn kind(kind: &str) -> KindLabel {
    KindLabel { kind: kind.into() }
}

/// A label set with one label, `outcome` (e.g. `ok`, `wrong_password`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// The label's value.
    pub outcome: String,
}

/// Every metric the server exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    connections: Family<KindLabel, Gauge>,
    tcp_connections: Gauge,
    live_channels: Gauge,
    auth_failures: Family<KindLabel, Counter>,
    rejected: Family<KindLabel, Counter>,
    sign_ins: Family<OutcomeLabel, Counter>,
    messages_in: Counter,
    duplicates: Counter,
    messages_out: Counter,
    catch_ups: Counter,
    store_transaction: Histogram,
    store_batch: Histogram,
    fanout_lag: Histogram,
    nats_events: Family<KindLabel, Counter>,
    nats_resyncs: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Fresh metrics, registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tether");
        let connections = Family::<KindLabel, Gauge>::default();
        registry.register(
            "connections",
            "Open WebSocket connections by kind",
            connections.clone(),
        );
        let tcp_connections = Gauge::default();
        registry.register(
            "tcp_connections",
            "Open TCP connections (HTTP and WebSocket), limited per address by max_connections_per_ip",
            tcp_connections.clone(),
        );
        let live_channels = Gauge::default();
        registry.register(
            "live_channels",
            "Channels with live subscribers (one bounded live queue each)",
            live_channels.clone(),
        );
        let auth_failures = Family::<KindLabel, Counter>::default();
        registry.register(
            "auth_failures",
            "Refused credentials by endpoint kind",
            auth_failures.clone(),
        );
        let rejected = Family::<KindLabel, Counter>::default();
        registry.register(
            "rejected",
            "Connections closed or refused, and requests refused, by a limit or a protocol error, by reason",
            rejected.clone(),
        );
        let sign_ins = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "sign_ins",
            "Password sign-in attempts by outcome (ok, wrong_password, rate_limited_account, rate_limited_address)",
            sign_ins.clone(),
        );
        let messages_in = Counter::default();
        registry.register(
            "messages_stored",
            "Published records stored",
            messages_in.clone(),
        );
        let duplicates = Counter::default();
        registry.register(
            "messages_duplicate",
            "Published records already stored (re-sent after a reconnect)",
            duplicates.clone(),
        );
        let messages_out = Counter::default();
        registry.register(
            "messages_delivered",
            "Events sent to receivers",
            messages_out.clone(),
        );
        let catch_ups = Counter::default();
        registry.register(
            "receiver_catch_ups",
            "Times a receiver fell behind its live queue and caught up from the store",
            catch_ups.clone(),
        );
        let store_transaction = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "store_transaction_seconds",
            "Duration of store write transactions (store latency)",
            store_transaction.clone(),
        );
        let store_batch = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        registry.register(
            "store_batch_operations",
            "Operations per store write transaction",
            store_batch.clone(),
        );
        let fanout_lag = Histogram::new(exponential_buckets(0.0001, 2.0, 18));
        registry.register(
            "fanout_lag_seconds",
            "Time from storing an event to handing it to a receiver connection",
            fanout_lag.clone(),
        );
        let nats_events = Family::<KindLabel, Counter>::default();
        registry.register(
            "nats_events",
            "Events of a cluster node over NATS: published, dropped (NATS down or the outbox full; receivers catch up from the database), received from other nodes",
            nats_events.clone(),
        );
        let nats_resyncs = Counter::default();
        registry.register(
            "nats_resyncs",
            "Times this node's receivers were made to catch up from the database after a NATS loss",
            nats_resyncs.clone(),
        );
        Metrics {
            registry,
            connections,
            tcp_connections,
            live_channels,
            auth_failures,
            rejected,
            sign_ins,
            messages_in,
            duplicates,
            messages_out,
            catch_ups,
            store_transaction,
            store_batch,
            fanout_lag,
            nats_events,
            nats_resyncs,
        }
    }

    /// Brings the NATS counters up to `stats` (a cluster node's broker
    /// counts; they only grow).
    pub fn nats(&self, stats: crate::cluster::NatsStats) {
        let raise = |counter: &Counter, to: u64| {
            counter.inc_by(to.saturating_sub(counter.get()));
        };
        for (name, value) in [
            ("published", stats.published),
            ("dropped", stats.dropped),
            ("received", stats.received),
        ] {
            raise(&self.nats_events.get_or_create(&kind(name)), value);
        }
        raise(&self.nats_resyncs, stats.resyncs);
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }

    /// A connection of `kind` opened; the guard counts it closed on drop.
    pub fn connection(&self, kind_name: &str) -> ConnectionGuard {
        let gauge = self.connections.get_or_create(&kind(kind_name)).clone();
        gauge.inc();
        ConnectionGuard { gauge }
    }

    /// A TCP connection opened; the guard counts it closed on drop.
    pub fn tcp_connection(&self) -> ConnectionGuard {
        self.tcp_connections.inc();
        ConnectionGuard {
            gauge: self.tcp_connections.clone(),
        }
    }

    /// Sets the number of channels with live subscribers.
    pub fn live_channels(&self, channels: usize) {
        self.live_channels
            .set(i64::try_from(channels).unwrap_or(i64::MAX));
    }

    /// Open connections of `kind`.
    pub fn open_connections(&self, kind_name: &str) -> i64 {
        self.connections.get_or_create(&kind(kind_name)).get()
    }

    /// A refused credential.
    pub fn auth_failure(&self, kind_name: &str) {
        self.auth_failures.get_or_create(&kind(kind_name)).inc();
    }

    /// A connection closed or refused for `reason`.
    pub fn rejected(&self, reason: &str) {
        self.rejected.get_or_create(&kind(reason)).inc();
    }

    /// A password sign-in attempt and how it ended.
    pub fn sign_in(&self, outcome: &str) {
        self.sign_ins
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// An event sent to a receiver, `lag` after it was stored.
    pub fn delivered(&self, lag: Duration) {
        self.messages_out.inc();
        self.fanout_lag.observe(lag.as_secs_f64());
    }

    /// A receiver caught up from the store.
    pub fn catch_up(&self) {
        self.catch_ups.inc();
    }

    /// A store transaction: its size and duration, and (once committed)
    /// the records it stored or found stored already. Counted here, at
    /// commit, whatever becomes of the connections that sent them.
    pub fn transaction(&self, stats: &TransactionStats) {
        self.store_transaction.observe(stats.duration.as_secs_f64());
        self.store_batch.observe(stats.operations as f64);
        if stats.committed {
            self.messages_in.inc_by(stats.stored);
            self.duplicates.inc_by(stats.duplicates);
        }
    }
}

/// Decrements a connection gauge when dropped.
#[derive(Debug)]
pub struct ConnectionGuard {
    gauge: Gauge,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}
