//! A seeded TCP fault proxy on loopback.
//!
//! Clients connect to [`FaultProxy::addr`]; each connection is forwarded to
//! the current upstream ([`FaultProxy::set_upstream`], so a restarted server
//! may come back on another port) with one [`Fault`] drawn from a seeded
//! random generator:
//!
//! | fault | what the peers see |
//! |---|---|
//! | [`Fault::Cut`] | after `after` bytes in one direction, the rest of that chunk is withheld and both sides get a TCP reset (mid-frame, almost always) |
//! | [`Fault::Stall`] | after `after` bytes, nothing moves either way and no FIN comes; after `hold`, a reset |
//! | [`Fault::Trickle`] | every byte in its own write (and so its own segment) |
//! | [`Fault::Latency`] | every chunk delayed |
//! | [`Fault::None`] | plain forwarding |
//!
//! and, for all connections at once:
//!
//! - [`FaultProxy::set_refusing`]: the listening socket is closed, so
//!   connects are refused (`ECONNREFUSED`), until it is reopened on the same
//!   port;
//! - [`FaultProxy::set_blackhole`]: an outage: nothing is forwarded on any
//!   connection, old or new, and nothing is closed, until it ends;
//! - an upstream that refuses (a server being restarted) resets the client.
//!
//! The same seed draws the same sequence of faults for the same sequence of
//! accepted connections; the test that uses the proxy prints its seed.
//!
//! ```no_run
//! # async fn example() -> std::io::Result<()> {
//! use tether_test_support::fault_proxy::{FaultConfig, FaultProxy};
//! let upstream = "127.0.0.1:9000".parse().unwrap();
//! let proxy = FaultProxy::start(upstream, 42, FaultConfig::default()).await?;
//! println!("devices dial {}", proxy.addr());
//! proxy.set_blackhole(true); // an outage begins
//! # Ok(()) }
//! ```

use core::time::Duration;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Which way bytes flow through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client (device) to the upstream (server).
    ToUpstream,
    /// From the upstream to the client.
    ToClient,
}

/// What happens to one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Plain forwarding.
    None,
    /// After `after` bytes in `direction`, both sides are reset (RST).
    Cut {
        /// The direction whose byte count triggers the cut.
        direction: Direction,
        /// Bytes forwarded in that direction before the cut.
        after: u64,
    },
    /// After `after` bytes in `direction`, nothing is forwarded either way,
    /// without FIN; after `hold`, both sides are reset.
    Stall {
        /// The direction whose byte count triggers the stall.
        direction: Direction,
        /// Bytes forwarded in that direction before the stall.
        after: u64,
        /// How long the connection hangs before the reset.
        hold: Duration,
    },
    /// Every byte is written on its own.
    Trickle,
    /// Every chunk is delayed this long.
    Latency(Duration),
}

/// Relative weights of the faults drawn per connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultMix {
    /// [`Fault::None`].
    pub clean: u32,
    /// [`Fault::Cut`].
    pub cut: u32,
    /// [`Fault::Stall`].
    pub stall: u32,
    /// [`Fault::Trickle`].
    pub trickle: u32,
    /// [`Fault::Latency`].
    pub latency: u32,
}

impl FaultMix {
    /// Only clean connections.
    pub const CLEAN: Self = Self {
        clean: 1,
        cut: 0,
        stall: 0,
        trickle: 0,
        latency: 0,
    };
}

/// How faults are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultConfig {
    /// The mix of faults.
    pub mix: FaultMix,
    /// Cuts and stalls happen after a number of bytes drawn from
    /// `0..=fault_within_bytes`.
    pub fault_within_bytes: u64,
    /// Stalled connections hang this long before the reset.
    pub stall_hold: Duration,
    /// Delayed connections get a delay drawn from this range (inclusive).
    pub latency: (Duration, Duration),
}

impl Default for FaultConfig {
    /// Two clean connections in five; cuts, stalls, 1-byte writes and
    /// latency (1–50 ms) share the rest; faults strike within the first
    /// 4 KiB; stalls hang 5 s.
    fn default() -> Self {
        Self {
            mix: FaultMix {
                clean: 4,
                cut: 2,
                stall: 1,
                trickle: 1,
                latency: 2,
            },
            fault_within_bytes: 4096,
            stall_hold: Duration::from_secs(5),
            latency: (Duration::from_millis(1), Duration::from_millis(50)),
        }
    }
}

impl FaultConfig {
    /// Plain forwarding for every new connection.
    pub fn clean() -> Self {
        Self {
            mix: FaultMix::CLEAN,
            ..Self::default()
        }
    }

    fn draw(&self, rng: &mut StdRng) -> Fault {
        let m = self.mix;
        let total = [m.clean, m.cut, m.stall, m.trickle, m.latency]
            .iter()
            .fold(0u32, |sum, w| sum.saturating_add(*w));
        if total == 0 {
            return Fault::None;
        }
        let mut pick = rng.random_range(0..total);
        let direction = if rng.random::<bool>() {
            Direction::ToUpstream
        } else {
            Direction::ToClient
        };
        let after = rng.random_range(0..=self.fault_within_bytes);
        let (low, high) = (self.latency.0, self.latency.1.max(self.latency.0));
        let latency = rng.random_range(low..=high);
        for (weight, fault) in [
            (m.clean, Fault::None),
            (m.cut, Fault::Cut { direction, after }),
            (
                m.stall,
                Fault::Stall {
                    direction,
                    after,
                    hold: self.stall_hold,
                },
            ),
            (m.trickle, Fault::Trickle),
            (m.latency, Fault::Latency(latency)),
        ] {
            if pick < weight {
                return fault;
            }
            pick -= weight;
        }
        Fault::None
    }
}

/// What the proxy has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections accepted.
    pub connections: u64,
    /// Connections reset because the upstream refused them.
    pub upstream_refused: u64,
    /// Connections cut with a reset.
    pub cut: u64,
    /// Connections stalled, then reset.
    pub stalled: u64,
    /// Connections forwarded one byte per write.
    pub trickled: u64,
    /// Connections forwarded with latency.
    pub delayed: u64,
    /// Times the listening socket was closed to refuse connects.
    pub refusals: u64,
    /// Outages (blackholes) started.
    pub blackholes: u64,
    /// Bytes forwarded to the upstream.
    pub bytes_to_upstream: u64,
    /// Bytes forwarded to clients.
    pub bytes_to_client: u64,
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    upstream_refused: AtomicU64,
    cut: AtomicU64,
    stalled: AtomicU64,
    trickled: AtomicU64,
    delayed: AtomicU64,
    refusals: AtomicU64,
    blackholes: AtomicU64,
    bytes_to_upstream: AtomicU64,
    bytes_to_client: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

#[derive(Debug)]
struct Shared {
    upstream: Mutex<SocketAddr>,
    config: Mutex<FaultConfig>,
    rng: Mutex<StdRng>,
    blackhole: watch::Sender<bool>,
    refusing: watch::Sender<bool>,
    counters: Counters,
}

impl Shared {
    fn draw(&self) -> Fault {
        let config = *self.config.lock().unwrap_or_else(PoisonError::into_inner);
        let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        config.draw(&mut rng)
    }

    fn upstream(&self) -> SocketAddr {
        *self.upstream.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The proxy: a listening socket on loopback and a task per connection.
/// Dropping it stops accepting; connections already open run on until
/// their peers close them.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl FaultProxy {
    /// Listens on an ephemeral loopback port and forwards to `upstream`,
    /// drawing faults from `config` with a generator seeded by `seed`.
    pub async fn start(upstream: SocketAddr, seed: u64, config: FaultConfig) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream: Mutex::new(upstream),
            config: Mutex::new(config),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            blackhole: watch::Sender::new(false),
            refusing: watch::Sender::new(false),
            counters: Counters::default(),
        });
        // Subscribed before the task runs, so no change is missed.
        let refusing = shared.refusing.subscribe();
        let accept = tokio::spawn(accept_loop(listener, addr, Arc::clone(&shared), refusing));
        Ok(Self {
            addr,
            shared,
            accept,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Forwards new connections to `upstream` from now on.
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *self
            .shared
            .upstream
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = upstream;
    }

    /// Draws the faults of new connections from `config` from now on.
    pub fn set_config(&self, config: FaultConfig) {
        *self
            .shared
            .config
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = config;
    }

    /// Closes (`true`) or reopens (`false`) the listening socket: while
    /// closed, connects to [`addr`](Self::addr) are refused.
    pub fn set_refusing(&self, refusing: bool) {
        if refusing && !*self.shared.refusing.borrow() {
            bump(&self.shared.counters.refusals, 1);
        }
        self.shared.refusing.send_replace(refusing);
    }

    /// Starts (`true`) or ends (`false`) an outage: while it lasts nothing
    /// is forwarded on any connection and nothing is closed.
    pub fn set_blackhole(&self, blackhole: bool) {
        if blackhole && !*self.shared.blackhole.borrow() {
            bump(&self.shared.counters.blackholes, 1);
        }
        self.shared.blackhole.send_replace(blackhole);
    }

    /// Counters so far.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.shared.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ProxyStats {
            connections: get(&c.connections),
            upstream_refused: get(&c.upstream_refused),
            cut: get(&c.cut),
            stalled: get(&c.stalled),
            trickled: get(&c.trickled),
            delayed: get(&c.delayed),
            refusals: get(&c.refusals),
            blackholes: get(&c.blackholes),
            bytes_to_upstream: get(&c.bytes_to_upstream),
            bytes_to_client: get(&c.bytes_to_client),
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    addr: SocketAddr,
    shared: Arc<Shared>,
    mut refusing: watch::Receiver<bool>,
) {
    let mut listener = Some(listener);
    loop {
        let refuse = *refusing.borrow_and_update();
        if refuse {
            // Closing the socket makes the kernel refuse connects to the port.
            listener = None;
        } else if listener.is_none() {
            listener = rebind(addr).await;
        }
        match listener.as_ref() {
            Some(open) => {
                tokio::select! {
                    accepted = open.accept() => {
                        if let Ok((client, _)) = accepted {
                            bump(&shared.counters.connections, 1);
                            tokio::spawn(handle(client, Arc::clone(&shared)));
                        }
                    }
                    changed = refusing.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                }
            }
            None => {
                if refusing.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Reopens the listening socket on its old port (tokio sets SO_REUSEADDR).
async fn rebind(addr: SocketAddr) -> Option<TcpListener> {
    for _ in 0..50 {
        if let Ok(listener) = TcpListener::bind(addr).await {
            return Some(listener);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// The state of one proxied connection, shared by its two pumps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Open,
    Stalled,
    Reset,
}

async fn handle(client: TcpStream, shared: Arc<Shared>) {
    let fault = shared.draw();
    let mut blackhole = shared.blackhole.subscribe();
    // An outage holds new connections too.
    let _ = blackhole.wait_for(|on| !*on).await;
    let server = match TcpStream::connect(shared.upstream()).await {
        Ok(server) => server,
        Err(_) => {
            bump(&shared.counters.upstream_refused, 1);
            reset(&client);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    match fault {
        Fault::None | Fault::Cut { .. } | Fault::Stall { .. } => {}
        Fault::Trickle => bump(&shared.counters.trickled, 1),
        Fault::Latency(_) => bump(&shared.counters.delayed, 1),
    }
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let link = watch::Sender::new(Link::Open);
    tokio::join!(
        pump(
            &mut client_read,
            &mut server_write,
            Direction::ToUpstream,
            fault,
            &link,
            &shared,
        ),
        pump(
            &mut server_read,
            &mut client_write,
            Direction::ToClient,
            fault,
            &link,
            &shared,
        ),
    );
    let state = *link.borrow();
    match (state, fault) {
        (Link::Open, _) => return,
        (Link::Stalled, Fault::Stall { hold, .. }) => {
            bump(&shared.counters.stalled, 1);
            tokio::time::sleep(hold).await;
        }
        _ => bump(&shared.counters.cut, 1),
    }
    // A reset, not a FIN: zero linger, and the write halves are forgotten
    // rather than shut down.
    reset(client_read.as_ref());
    reset(server_read.as_ref());
    client_write.forget();
    server_write.forget();
}

/// Makes closing `stream` send RST instead of FIN.
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

/// Forwards one direction until end of stream, an error, or the link being
/// stalled or reset (by this pump's fault or by the other pump).
async fn pump(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    direction: Direction,
    fault: Fault,
    link: &watch::Sender<Link>,
    shared: &Shared,
) {
    let mut state = link.subscribe();
    let mut blackhole = shared.blackhole.subscribe();
    let bytes = match direction {
        Direction::ToUpstream => &shared.counters.bytes_to_upstream,
        Direction::ToClient => &shared.counters.bytes_to_client,
    };
    let mut buf = vec![0u8; 16 * 1024];
    let mut forwarded = 0u64;
    loop {
        let read = tokio::select! {
            read = from.read(&mut buf) => read,
            _ = state.wait_for(|s| *s != Link::Open) => return,
        };
        let n = match read {
            Ok(0) => {
                // End of stream passes through as a FIN.
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
            Err(_) => {
                link.send_replace(Link::Reset);
                return;
            }
        };
        // An outage holds every byte until it ends.
        tokio::select! {
            _ = blackhole.wait_for(|on| !*on) => {}
            _ = state.wait_for(|s| *s != Link::Open) => return,
        }
        let chunk = buf.get(..n).unwrap_or_default();
        // A cut or stall in this direction strikes inside this chunk.
        let strike = match fault {
            Fault::Cut {
                direction: d,
                after,
            } if d == direction => Some((after, Link::Reset)),
            Fault::Stall {
                direction: d,
                after,
                ..
            } if d == direction => Some((after, Link::Stalled)),
            _ => None,
        }
        .filter(|(after, _)| forwarded.saturating_add(n as u64) > *after);
        let (chunk, then) = match strike {
            Some((after, then)) => {
                let keep = usize::try_from(after.saturating_sub(forwarded)).unwrap_or(n);
                (chunk.get(..keep).unwrap_or_default(), Some(then))
            }
            None => (chunk, None),
        };
        let written = tokio::select! {
            written = write(to, chunk, fault) => written,
            _ = state.wait_for(|s| *s != Link::Open) => return,
        };
        if written.is_err() {
            link.send_replace(Link::Reset);
            return;
        }
        forwarded = forwarded.saturating_add(chunk.len() as u64);
        bump(bytes, chunk.len() as u64);
        if let Some(then) = then {
            link.send_replace(then);
            return;
        }
    }
}

async fn write(to: &mut OwnedWriteHalf, chunk: &[u8], fault: Fault) -> io::Result<()> {
    match fault {
        Fault::Trickle => {
            for byte in chunk {
                to.write_all(core::slice::from_ref(byte)).await?;
            }
            Ok(())
        }
        Fault::Latency(delay) => {
            tokio::time::sleep(delay).await;
            to.write_all(chunk).await
        }
        _ => to.write_all(chunk).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that echoes everything until end of stream.
    async fn echo_upstream() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    fn only(mix: FaultMix) -> FaultConfig {
        FaultConfig {
            mix,
            fault_within_bytes: 100,
            stall_hold: Duration::from_secs(1),
            latency: (Duration::from_millis(20), Duration::from_millis(20)),
        }
    }

    const NONE: FaultMix = FaultMix {
        clean: 0,
        cut: 0,
        stall: 0,
        trickle: 0,
        latency: 0,
    };

    async fn echo_through(proxy: &FaultProxy, payload: &[u8]) -> io::Result<Vec<u8>> {
        let mut stream = TcpStream::connect(proxy.addr()).await?;
        stream.write_all(payload).await?;
        stream.shutdown().await?;
        let mut back = Vec::new();
        stream.read_to_end(&mut back).await?;
        Ok(back)
    }

    #[test]
    fn the_seed_fixes_the_faults() {
        let config = FaultConfig::default();
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..50).map(|_| config.draw(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let faults = draw(7);
        assert!(faults.contains(&Fault::None));
        assert!(faults.contains(&Fault::Trickle));
        assert!(faults.iter().any(|f| matches!(f, Fault::Cut { .. })));
        assert!(faults.iter().any(|f| matches!(f, Fault::Stall { .. })));
        assert!(faults.iter().any(|f| matches!(f, Fault::Latency(_))));
    }

    #[tokio::test]
    async fn clean_trickle_and_latency_deliver_every_byte() {
        let upstream = echo_upstream().await;
        let payload: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        for mix in [
            FaultMix::CLEAN,
            FaultMix { trickle: 1, ..NONE },
            FaultMix { latency: 1, ..NONE },
        ] {
            let proxy = FaultProxy::start(upstream, 1, only(mix)).await.unwrap();
            let started = std::time::Instant::now();
            assert_eq!(echo_through(&proxy, &payload).await.unwrap(), payload);
            if mix.latency > 0 {
                // 20 ms each way at least.
                assert!(started.elapsed() >= Duration::from_millis(40));
            }
            let stats = proxy.stats();
            assert_eq!(stats.bytes_to_upstream, 3000);
            assert_eq!(stats.bytes_to_client, 3000);
            assert_eq!(stats.trickled, u64::from(mix.trickle));
            assert_eq!(stats.delayed, u64::from(mix.latency));
        }
    }

    #[tokio::test]
    async fn a_cut_resets_both_sides_mid_stream() {
        let upstream = echo_upstream().await;
        let proxy = FaultProxy::start(upstream, 3, only(FaultMix { cut: 1, ..NONE }))
            .await
            .unwrap();
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        stream.write_all(&[7u8; 1000]).await.unwrap();
        let mut back = Vec::new();
        let error = stream.read_to_end(&mut back).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionReset);
        assert!(back.len() <= 100, "forwarded {} bytes", back.len());
        assert_eq!(proxy.stats().cut, 1);
    }

    #[tokio::test]
    async fn a_stall_hangs_without_fin_then_resets() {
        let upstream = echo_upstream().await;
        let proxy = FaultProxy::start(upstream, 4, only(FaultMix { stall: 1, ..NONE }))
            .await
            .unwrap();
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        stream.write_all(&[7u8; 1000]).await.unwrap();
        let mut back = Vec::new();
        // Whatever came before the stall, then silence: no FIN.
        let silent =
            tokio::time::timeout(Duration::from_millis(150), stream.read_to_end(&mut back)).await;
        assert!(silent.is_err(), "the stalled link ended early");
        let error = stream.read_to_end(&mut back).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(proxy.stats().stalled, 1);
    }

    #[tokio::test]
    async fn refusing_closes_the_port_and_reopens_it() {
        let upstream = echo_upstream().await;
        let proxy = FaultProxy::start(upstream, 5, FaultConfig::clean())
            .await
            .unwrap();
        proxy.set_refusing(true);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let refused = TcpStream::connect(proxy.addr()).await.unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
        proxy.set_refusing(false);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(echo_through(&proxy, b"back").await.unwrap(), b"back");
        assert_eq!(proxy.stats().refusals, 1);
    }

    #[tokio::test]
    async fn a_blackhole_holds_bytes_until_it_ends() {
        let upstream = echo_upstream().await;
        let proxy = FaultProxy::start(upstream, 6, FaultConfig::clean())
            .await
            .unwrap();
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        stream.write_all(b"one").await.unwrap();
        let mut three = [0u8; 3];
        stream.read_exact(&mut three).await.unwrap();
        proxy.set_blackhole(true);
        stream.write_all(b"two").await.unwrap();
        let held = tokio::time::timeout(Duration::from_millis(150), stream.read_exact(&mut three));
        assert!(held.await.is_err(), "bytes crossed during the outage");
        proxy.set_blackhole(false);
        stream.read_exact(&mut three).await.unwrap();
        assert_eq!(&three, b"two");
        assert_eq!(proxy.stats().blackholes, 1);
    }

    #[tokio::test]
    async fn a_refusing_upstream_resets_the_client() {
        let gone = {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap()
        };
        let proxy = FaultProxy::start(gone, 7, FaultConfig::clean())
            .await
            .unwrap();
        assert!(echo_through(&proxy, b"x").await.is_err());
        assert_eq!(proxy.stats().upstream_refused, 1);
        proxy.set_upstream(echo_upstream().await);
        assert_eq!(echo_through(&proxy, b"y").await.unwrap(), b"y");
    }
}
