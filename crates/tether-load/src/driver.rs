//! The device and receiver loops, the same for every peer: a peer brings
//! only its wire format ([`DeviceLink`], [`ReceiverLink`]).
//!
//! A device offers a message on every tick of its rate (at a random phase)
//! while the run lasts, whether or not its window has room: a tick that
//! finds its outbox full is counted as refused, never skipped. Messages go
//! out while fewer than the window are unacknowledged; each keeps the time
//! it was offered, so publish→ack and publish→receiver latencies include
//! the time it waited in the outbox.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::Rng;
use rand::rngs::SmallRng;
use tokio::sync::Semaphore;

use crate::workload::{Phase, SeqSet, Shared, parse_payload, payload};

/// What an acknowledgement covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acked {
    /// Every message up to this sequence number (tether's cumulative ack).
    UpTo(u32),
    /// This one message (MQTT's PUBACK).
    One(u32),
}

/// A device's connection to a peer.
pub trait DeviceLink: Send {
    /// Queues a message (written by [`flush`](Self::flush)).
    fn queue_publish(&mut self, seq: u32, payload: &[u8]) -> io::Result<()>;
    /// Writes what is queued (not cancel-safe).
    fn flush(&mut self) -> impl Future<Output = io::Result<()>> + Send;
    /// Reads what arrived (cancel-safe); `Ok(0)`: closed.
    fn fill(&mut self) -> impl Future<Output = io::Result<usize>> + Send;
    /// Decodes what was read: acknowledgements into `acks`; answers pings.
    fn take_acks(&mut self, acks: &mut Vec<Acked>) -> io::Result<()>;
}

/// A receiver's connection to a peer, subscribed.
pub trait ReceiverLink: Send {
    /// Writes what is queued (acks, pongs; not cancel-safe).
    fn flush(&mut self) -> impl Future<Output = io::Result<()>> + Send;
    /// Reads what arrived (cancel-safe); `Ok(0)`: closed.
    fn fill(&mut self) -> impl Future<Output = io::Result<usize>> + Send;
    /// Hands each delivered message body to `deliver`, queues what the
    /// protocol answers.
    fn take_messages(&mut self, deliver: &mut dyn FnMut(&[u8])) -> io::Result<()>;
}

/// What one device did.
#[derive(Debug, Default)]
pub struct DeviceReport {
    /// Ticks while the run lasted.
    pub offered: u64,
    /// Ticks that found the outbox full.
    pub refused: u64,
    /// Messages written to the connection.
    pub sent: u64,
    /// Acknowledged messages.
    pub acked: SeqSet,
    /// Offered → acknowledged, in microseconds.
    pub ack_latencies: Vec<u32>,
    /// Connection attempts that failed before one succeeded.
    pub failed_attempts: u64,
    /// When it connected again after losing its link (a storm run),
    /// microseconds since the run's base.
    pub reconnected_at: Vec<u64>,
    /// When it connected, microseconds since the run's base.
    pub connected_at: Option<u64>,
    /// Why the connection ended early, if it did.
    pub error: Option<String>,
}

/// What one receiver saw.
#[derive(Debug, Default)]
pub struct ReceiverReport {
    /// Messages per device index.
    pub seen: Vec<SeqSet>,
    /// Messages delivered more than once.
    pub duplicates: u64,
    /// Offered → delivered, in microseconds.
    pub latencies: Vec<u32>,
    /// Why the connection ended early, if it did.
    pub error: Option<String>,
}

/// Connects (retrying every 100-200 ms until the run stops) with at most
/// `permits` handshakes in progress at once.
pub async fn connect_with_retry<L, F, Fut>(
    shared: &Shared,
    permits: &Semaphore,
    rng: &mut SmallRng,
    failed: &mut u64,
    mut connect: F,
) -> Option<L>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = io::Result<L>>,
{
    loop {
        if *shared.phase.borrow() == Phase::Stop {
            return None;
        }
        let attempt = {
            let _permit = permits.acquire().await.ok()?;
            connect().await
        };
        match attempt {
            Ok(link) => return Some(link),
            Err(_) => {
                *failed += 1;
                shared.failed_attempts.fetch_add(1, Ordering::Relaxed);
                let pause = rng.random_range(100..200);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        }
    }
}

/// Connects a device again after its link was lost (the storm workload).
pub trait Reconnect<L>: Send {
    /// A new link, and the stored watermark the server reported
    /// (`Welcome.last_stored_seq`): every message up to it is stored.
    fn reconnect(&mut self) -> impl Future<Output = io::Result<(L, u32)>> + Send;
}

/// A device that does not reconnect (its run ends with its link).
#[derive(Debug)]
pub struct NoReconnect;

impl<L: Send> Reconnect<L> for NoReconnect {
    async fn reconnect(&mut self) -> io::Result<(L, u32)> {
        Err(io::Error::other("this peer's devices do not reconnect"))
    }
}

/// What a device has queued and outstanding; it outlives a link.
#[derive(Debug)]
struct Flight {
    ticker: Option<tokio::time::Interval>,
    /// Offered, not yet sent: when each was offered.
    outbox: VecDeque<u64>,
    /// Sent on a link that was lost and not stored: sent again first,
    /// with the same sequence numbers.
    resend: VecDeque<(u32, u64)>,
    in_flight: VecDeque<(u32, u64)>,
    next_seq: u32,
    drained: bool,
}

impl Flight {
    /// The link was replaced: what the server stored (up to
    /// `last_stored_seq`) counts as acknowledged, the rest goes again.
    fn resume(
        &mut self,
        last_stored_seq: u32,
        now: u64,
        shared: &Shared,
        report: &mut DeviceReport,
    ) {
        let mut count = 0;
        while let Some((seq, offered)) = self.in_flight.pop_front() {
            if seq <= last_stored_seq {
                report.acked.insert(seq);
                report.ack_latencies.push(latency(now, offered));
                count += 1;
            } else {
                self.resend.push_back((seq, offered));
            }
        }
        shared.acked.fetch_add(count, Ordering::Relaxed);
    }
}

/// Runs one device on a connected link until the run stops; with a
/// [`Reconnect`] (the storm workload) a lost link is connected again
/// after the SDK's backoff, and what was not stored is sent again.
pub async fn run_device<L: DeviceLink, R: Reconnect<L>>(
    shared: Arc<Shared>,
    index: usize,
    mut link: L,
    window: usize,
    mut rng: SmallRng,
    mut report: DeviceReport,
    mut reconnect: Option<R>,
) -> DeviceReport {
    report.connected_at = Some(shared.micros());
    shared.connected.fetch_add(1, Ordering::Relaxed);
    let mut flight = Flight {
        ticker: None,
        outbox: VecDeque::new(),
        resend: VecDeque::new(),
        in_flight: VecDeque::new(),
        next_seq: 1,
        drained: false,
    };
    let mut backoff = crate::storm::backoff(&shared);
    loop {
        let Err(error) = device_loop(
            &shared,
            index,
            &mut link,
            &mut flight,
            window,
            &mut rng,
            &mut report,
        )
        .await
        else {
            break;
        };
        let again = match (reconnect.as_mut(), backoff.as_mut()) {
            (Some(reconnect), Some(backoff)) => {
                crate::storm::reconnect(&shared, backoff, reconnect, &mut rng, &mut report).await
            }
            _ => None,
        };
        match again {
            Some((new_link, last_stored_seq)) => {
                link = new_link;
                flight.resume(last_stored_seq, shared.micros(), &shared, &mut report);
            }
            None => {
                if *shared.phase.borrow() != Phase::Stop {
                    report.error = Some(error.to_string());
                }
                break;
            }
        }
    }
    report
}

async fn device_loop<L: DeviceLink>(
    shared: &Shared,
    index: usize,
    link: &mut L,
    flight: &mut Flight,
    window: usize,
    rng: &mut SmallRng,
    report: &mut DeviceReport,
) -> io::Result<()> {
    let workload = &shared.workload;
    let mut phase_rx = shared.phase.clone();
    let mut phase = *phase_rx.borrow_and_update();
    let as_fast = workload.rate <= 0.0;
    let period = Duration::from_secs_f64(if as_fast { 1.0 } else { 1.0 / workload.rate });
    let Flight {
        ticker,
        outbox,
        resend,
        in_flight,
        next_seq,
        drained,
    } = flight;
    let mut acks = Vec::new();
    let window = window.max(1);
    loop {
        if phase == Phase::Stop {
            return Ok(());
        }
        if phase == Phase::Run && ticker.is_none() && !as_fast {
            // A random phase, so devices do not publish in lockstep;
            // missed ticks are made up (offered is rate × time).
            let offset = period.mul_f64(rng.random::<f64>());
            let mut interval =
                tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            *ticker = Some(interval);
        }
        if phase == Phase::Run && as_fast {
            while outbox.len() + in_flight.len() < window {
                report.offered += 1;
                outbox.push_back(shared.micros());
            }
        }
        while in_flight.len() < window {
            let (seq, offered) = match resend.pop_front() {
                Some(again) => again,
                None => {
                    let Some(offered) = outbox.pop_front() else {
                        break;
                    };
                    let seq = *next_seq;
                    *next_seq += 1;
                    (seq, offered)
                }
            };
            link.queue_publish(seq, payload(offered, index, seq).as_bytes())?;
            in_flight.push_back((seq, offered));
            report.sent += 1;
        }
        link.flush().await?;
        if phase == Phase::Drain
            && !*drained
            && outbox.is_empty()
            && resend.is_empty()
            && in_flight.is_empty()
        {
            *drained = true;
            shared.drained.fetch_add(1, Ordering::Relaxed);
        }
        let ticking = phase == Phase::Run && ticker.is_some();
        tokio::select! {
            _ = async {
                match ticker.as_mut() {
                    Some(ticker) => ticker.tick().await,
                    None => std::future::pending().await,
                }
            }, if ticking => {
                report.offered += 1;
                if outbox.len() >= workload.outbox {
                    report.refused += 1;
                } else {
                    outbox.push_back(shared.micros());
                }
            }
            changed = phase_rx.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                phase = *phase_rx.borrow_and_update();
            }
            read = link.fill() => {
                if read? == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed"));
                }
                acks.clear();
                link.take_acks(&mut acks)?;
                let now = shared.micros();
                for ack in &acks {
                    let mut count = 0;
                    match *ack {
                        Acked::UpTo(seq) => {
                            while in_flight.front().is_some_and(|(s, _)| *s <= seq) {
                                if let Some((s, offered)) = in_flight.pop_front() {
                                    report.acked.insert(s);
                                    report.ack_latencies.push(latency(now, offered));
                                    count += 1;
                                }
                            }
                        }
                        Acked::One(seq) => {
                            if let Some(position) = in_flight.iter().position(|(s, _)| *s == seq)
                                && let Some((s, offered)) = in_flight.remove(position)
                            {
                                report.acked.insert(s);
                                report.ack_latencies.push(latency(now, offered));
                                count += 1;
                            }
                        }
                    }
                    shared.acked.fetch_add(count, Ordering::Relaxed);
                }
            }
        }
    }
}

fn latency(now: u64, offered: u64) -> u32 {
    u32::try_from(now.saturating_sub(offered)).unwrap_or(u32::MAX)
}

/// Runs one receiver on a subscribed link until the run stops.
pub async fn run_receiver<L: ReceiverLink>(shared: Arc<Shared>, mut link: L) -> ReceiverReport {
    let mut report = ReceiverReport {
        seen: vec![SeqSet::default(); shared.workload.devices],
        ..ReceiverReport::default()
    };
    shared.receivers_ready.fetch_add(1, Ordering::Relaxed);
    if let Err(error) = receiver_loop(&shared, &mut link, &mut report).await {
        report.error = Some(error.to_string());
    }
    report
}

async fn receiver_loop<L: ReceiverLink>(
    shared: &Shared,
    link: &mut L,
    report: &mut ReceiverReport,
) -> io::Result<()> {
    let mut phase_rx = shared.phase.clone();
    loop {
        link.flush().await?;
        tokio::select! {
            changed = phase_rx.changed() => {
                if changed.is_err() || *phase_rx.borrow_and_update() == Phase::Stop {
                    return Ok(());
                }
            }
            read = link.fill() => {
                if read? == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed"));
                }
                let now = shared.micros();
                let mut fresh = 0;
                link.take_messages(&mut |body| {
                    if let Some((offered, device, seq)) = parse_payload(body)
                        && let Some(seen) = report.seen.get_mut(device)
                    {
                        if seen.insert(seq) {
                            fresh += 1;
                            report.latencies.push(latency(now, offered));
                        } else {
                            report.duplicates += 1;
                        }
                    }
                })?;
                shared.delivered.fetch_add(fresh, Ordering::Relaxed);
            }
        }
    }
}
