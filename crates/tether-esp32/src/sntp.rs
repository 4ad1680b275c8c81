//! Wall-clock time from SNTP over embassy-net UDP (RFC 4330, by the
//! `sntpc` crate): what certificate validity checks need on a chip with no
//! battery-backed clock.
//!
//! ```text
//!  synchronize(stack, "pool.ntp.org", 123)
//!     DNS ─► UDP :123 ─► sntpc: request, check the answer (mode, stratum,
//!     origin timestamp, root distance) ─► WallClock::set(server seconds)
//! ```

use core::net::{IpAddr, SocketAddr};

use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::{IpAddress, IpEndpoint, Stack};
use embassy_time::{Duration, with_timeout};

use crate::clock::{WallClock, WallClockError};
use crate::tcp::ConnectError;

/// Why the time could not be set.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum SntpError {
    /// The server name did not resolve.
    Resolve(ConnectError),
    /// The UDP socket could not be bound.
    Bind,
    /// No valid answer within the timeout.
    Timeout,
    /// The server answered, but not validly (`sntpc`'s checks).
    Invalid(sntpc::Error),
    /// The server's time is implausible.
    Time(WallClockError),
}

impl core::fmt::Display for SntpError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Resolve(e) => write!(f, "SNTP server: {e}"),
            Self::Bind => f.write_str("SNTP: no UDP socket"),
            Self::Timeout => f.write_str("SNTP: no answer"),
            Self::Invalid(e) => write!(f, "SNTP: invalid answer: {e:?}"),
            Self::Time(e) => write!(f, "SNTP: {e}"),
        }
    }
}

impl core::error::Error for SntpError {}

/// The default NTP port.
pub const NTP_PORT: u16 = 123;

/// Asks `server` (a name or an IPv4 literal) for the time and sets the
/// [`WallClock`]; returns the Unix seconds it set.
///
/// # Errors
/// See [`SntpError`]; the wall clock is left as it was.
pub async fn synchronize(
    stack: Stack<'_>,
    server: &str,
    port: u16,
    timeout: Duration,
) -> Result<u64, SntpError> {
    let address = match server.parse::<core::net::Ipv4Addr>() {
        Ok(address) => IpAddress::Ipv4(address),
        Err(_) => *stack
            .dns_query(server, embassy_net::dns::DnsQueryType::A)
            .await
            .map_err(|e| SntpError::Resolve(ConnectError::Dns(e)))?
            .first()
            .ok_or(SntpError::Resolve(ConnectError::NoAddress))?,
    };
    let mut rx_meta = [PacketMetadata::EMPTY; 2];
    let mut tx_meta = [PacketMetadata::EMPTY; 2];
    let (mut rx, mut tx) = ([0u8; 128], [0u8; 128]);
    let mut socket = UdpSocket::new(stack, &mut rx_meta, &mut rx, &mut tx_meta, &mut tx);
    socket.bind(0).map_err(|_| SntpError::Bind)?;
    let server = SocketAddr::new(IpAddr::from(address), port);
    let context = sntpc::NtpContext::new(Timestamps::default());
    let answer = with_timeout(timeout, sntpc::get_time(server, &Socket(&socket), context))
        .await
        .map_err(|_| SntpError::Timeout)?
        .map_err(SntpError::Invalid)?;
    let seconds = answer.sec();
    WallClock::set(seconds).map_err(SntpError::Time)?;
    info!("sntp: wall clock set to {} (Unix seconds)", seconds);
    Ok(seconds)
}

/// `sntpc`'s socket trait over an embassy-net UDP socket.
struct Socket<'s, 'a>(&'s UdpSocket<'a>);

impl sntpc::NtpUdpSocket for Socket<'_, '_> {
    async fn send_to(&self, buf: &[u8], addr: SocketAddr) -> sntpc::Result<usize> {
        let IpAddr::V4(ip) = addr.ip() else {
            return Err(sntpc::Error::Network);
        };
        let endpoint = IpEndpoint::new(IpAddress::Ipv4(ip), addr.port());
        self.0
            .send_to(buf, endpoint)
            .await
            .map_err(|_| sntpc::Error::Network)?;
        Ok(buf.len())
    }

    async fn recv_from(&self, buf: &mut [u8]) -> sntpc::Result<(usize, SocketAddr)> {
        let (n, meta) = self
            .0
            .recv_from(buf)
            .await
            .map_err(|_| sntpc::Error::Network)?;
        let from = SocketAddr::new(IpAddr::from(meta.endpoint.addr), meta.endpoint.port);
        Ok((n, from))
    }
}

/// The request's transmit timestamp: the wall clock if set, else uptime
/// (SNTP only needs it echoed back, and for the round-trip estimate).
#[derive(Debug, Clone, Copy, Default)]
struct Timestamps {
    micros: u64,
}

impl sntpc::NtpTimestampGenerator for Timestamps {
    fn init(&mut self) {
        let uptime = embassy_time::Instant::now().as_micros();
        self.micros = match WallClock::now() {
            Some(seconds) => seconds
                .saturating_mul(1_000_000)
                .saturating_add(uptime % 1_000_000),
            None => uptime,
        };
    }

    fn timestamp_sec(&self) -> u64 {
        self.micros / 1_000_000
    }

    fn timestamp_subsec_micros(&self) -> u32 {
        u32::try_from(self.micros % 1_000_000).unwrap_or(0)
    }
}
