//! Improv Wi-Fi over serial (<https://www.improv-wifi.com/serial/>), the
//! open protocol ESPHome and ESP Web Tools use: a browser with Web Serial
//! sends Wi-Fi credentials over the USB cable.
//!
//! ```text
//!  byte  0..6   "IMPROV"
//!        6      version (1)
//!        7      type: 1 current state, 2 error state, 3 RPC command, 4 RPC result
//!        8      data length
//!        9..    data
//!        9+len  checksum: sum of every byte before it, mod 256
//! ```
//!
//! RPC command data is `command, length, payload`; RPC result data is
//! `command, length, then length-prefixed strings`. The serial line also
//! carries log output, so [`Packet::parse`] skips any bytes before the next
//! `IMPROV` header.
//!
//! [`ImprovService`] is the device side: it turns commands into reply
//! packets in a caller buffer and reports new credentials as an
//! [`ImprovEvent`]; the backend saves them and later calls
//! [`ImprovService::provisioned`] or [`ImprovService::connect_failed`].
//!
//! ```
//! use tether_core::provisioning::improv::{ImprovEvent, ImprovService, DeviceInfo, Packet, Status, PacketType};
//!
//! // The specification's example: SSID "MyWirelessAP", password "mysecurepassword".
//! let rpc = b"\x01\x1e\x0cMyWirelessAP\x10mysecurepassword";
//! let mut packet = [0u8; 64];
//! let n = Packet { kind: PacketType::RpcCommand, data: rpc }.emit(&mut packet)?;
//!
//! let info = DeviceInfo { firmware_name: "tether", firmware_version: "0.1.0", chip: "ESP32-C3", device_name: "tether-4F2A" };
//! let mut service = ImprovService::new();
//! let mut out = [0u8; 256];
//! let reply = service.receive(&packet[..n], &info, &[], &mut out)?;
//! let Status::Complete(reply) = reply else { panic!() };
//! let Some(ImprovEvent::Credentials(wifi)) = reply.event else { panic!() };
//! assert_eq!((wifi.ssid.as_str(), wifi.passphrase.as_str()), ("MyWirelessAP", "mysecurepassword"));
//! # Ok::<(), tether_core::provisioning::improv::ImprovError>(())
//! ```

use core::fmt;

use super::portal::Network;
use super::record::{Passphrase, Ssid, WifiCredentials};

/// The header every packet starts with.
pub const HEADER: [u8; 6] = *b"IMPROV";
/// The protocol version this code speaks.
pub const VERSION: u8 = 1;
/// Bytes around the data: header, version, type, length, checksum.
pub const OVERHEAD: usize = 10;
/// The largest packet (255 data bytes).
pub const MAX_PACKET_LEN: usize = OVERHEAD + 255;

/// Parse progress, as in [`http::Status`](super::http::Status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status<T> {
    /// A valid prefix; read more bytes.
    Partial,
    /// A whole packet.
    Complete(T),
}

/// Packet types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PacketType {
    /// Device to client: one byte, [`ImprovState`].
    CurrentState,
    /// Device to client: one byte, [`ErrorCode`].
    ErrorState,
    /// Client to device: a [`Command`].
    RpcCommand,
    /// Device to client: a list of strings answering a command.
    RpcResult,
}

impl PacketType {
    /// The wire value.
    pub const fn value(self) -> u8 {
        match self {
            Self::CurrentState => 0x01,
            Self::ErrorState => 0x02,
            Self::RpcCommand => 0x03,
            Self::RpcResult => 0x04,
        }
    }

    /// The type for a wire value.
    pub const fn from_value(value: u8) -> Option<Self> {
        match value {
            0x01 => Some(Self::CurrentState),
            0x02 => Some(Self::ErrorState),
            0x03 => Some(Self::RpcCommand),
            0x04 => Some(Self::RpcResult),
            _ => None,
        }
    }
}

/// Provisioning state reported to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ImprovState {
    /// `0x02`: ready to accept credentials.
    Ready,
    /// `0x03`: credentials received, connecting.
    Provisioning,
    /// `0x04`: connected.
    Provisioned,
}

impl ImprovState {
    /// The wire value.
    pub const fn value(self) -> u8 {
        match self {
            Self::Ready => 0x02,
            Self::Provisioning => 0x03,
            Self::Provisioned => 0x04,
        }
    }
}

/// Error state codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ErrorCode {
    /// `0x00`: no error.
    None,
    /// `0x01`: RPC packet malformed.
    InvalidRpc,
    /// `0x02`: unknown command.
    UnknownRpc,
    /// `0x03`: credentials received, connecting failed.
    UnableToConnect,
    /// `0xFF`: anything else.
    Unknown,
}

impl ErrorCode {
    /// The wire value.
    pub const fn value(self) -> u8 {
        match self {
            Self::None => 0x00,
            Self::InvalidRpc => 0x01,
            Self::UnknownRpc => 0x02,
            Self::UnableToConnect => 0x03,
            Self::Unknown => 0xff,
        }
    }
}

/// Command ids.
pub mod command {
    /// Send Wi-Fi settings.
    pub const WIFI_SETTINGS: u8 = 0x01;
    /// Request current state.
    pub const GET_CURRENT_STATE: u8 = 0x02;
    /// Request device information.
    pub const GET_DEVICE_INFO: u8 = 0x03;
    /// Request scanned Wi-Fi networks.
    pub const GET_WIFI_NETWORKS: u8 = 0x04;
}

/// Why bytes are not a usable packet or command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ImprovError {
    /// A version other than [`VERSION`].
    UnsupportedVersion(u8),
    /// A packet type other than 1 to 4.
    UnknownPacketType(u8),
    /// The checksum does not match.
    Checksum,
    /// An RPC command whose inner lengths disagree, or whose SSID or
    /// password breaks the Wi-Fi rules.
    InvalidRpc,
    /// An RPC command id this device does not know.
    UnknownCommand(u8),
    /// The output buffer is too small.
    BufferTooSmall,
}

impl ImprovError {
    /// The error state to report to the client, if any.
    pub const fn code(self) -> Option<ErrorCode> {
        match self {
            Self::InvalidRpc | Self::Checksum => Some(ErrorCode::InvalidRpc),
            Self::UnknownCommand(_) => Some(ErrorCode::UnknownRpc),
            Self::UnsupportedVersion(_) | Self::UnknownPacketType(_) => Some(ErrorCode::Unknown),
            Self::BufferTooSmall => None,
        }
    }
}

impl fmt::Display for ImprovError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnsupportedVersion(v) => write!(f, "unsupported Improv version {v}"),
            Self::UnknownPacketType(t) => write!(f, "unknown Improv packet type {t}"),
            Self::Checksum => f.write_str("Improv checksum mismatch"),
            Self::InvalidRpc => f.write_str("malformed Improv RPC command"),
            Self::UnknownCommand(c) => write!(f, "unknown Improv command {c}"),
            Self::BufferTooSmall => f.write_str("output buffer too small"),
        }
    }
}

impl core::error::Error for ImprovError {}

fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |sum, b| sum.wrapping_add(*b))
}

/// Offset of the first `IMPROV` header in `bytes`, or of a trailing
/// partial header, or `bytes.len()` when there is neither: everything
/// before it is log noise the caller may drop.
pub fn sync(bytes: &[u8]) -> usize {
    (0..bytes.len())
        .find(|&i| {
            let rest = bytes.get(i..).unwrap_or(&[]);
            let n = rest.len().min(HEADER.len());
            rest.get(..n) == HEADER.get(..n)
        })
        .unwrap_or(bytes.len())
}

/// One packet, borrowing its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    /// The type.
    pub kind: PacketType,
    /// The data between length and checksum.
    pub data: &'a [u8],
}

impl<'a> Packet<'a> {
    /// Parses the packet at the *start* of `bytes` (call [`sync`] first
    /// to skip noise). `Complete` carries the bytes used.
    pub fn parse(bytes: &'a [u8]) -> Result<Status<(Self, usize)>, ImprovError> {
        if bytes.len() < 9 {
            return Ok(Status::Partial);
        }
        let version = bytes.get(6).copied().unwrap_or(0);
        if version != VERSION {
            return Err(ImprovError::UnsupportedVersion(version));
        }
        let kind_value = bytes.get(7).copied().unwrap_or(0);
        let kind =
            PacketType::from_value(kind_value).ok_or(ImprovError::UnknownPacketType(kind_value))?;
        let len = usize::from(bytes.get(8).copied().unwrap_or(0));
        let end = 9 + len;
        let (Some(body), Some(&sum)) = (bytes.get(..end), bytes.get(end)) else {
            return Ok(Status::Partial);
        };
        if checksum(body) != sum {
            return Err(ImprovError::Checksum);
        }
        let data = body.get(9..).unwrap_or(&[]);
        Ok(Status::Complete((Self { kind, data }, end + 1)))
    }

    /// Writes the packet into `out`; returns its length.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, ImprovError> {
        let len = u8::try_from(self.data.len()).map_err(|_| ImprovError::InvalidRpc)?;
        let total = OVERHEAD + self.data.len();
        let out = out.get_mut(..total).ok_or(ImprovError::BufferTooSmall)?;
        let (head, rest) = out.split_at_mut(9);
        head.get_mut(..6)
            .ok_or(ImprovError::BufferTooSmall)?
            .copy_from_slice(&HEADER);
        head[6..9].copy_from_slice(&[VERSION, self.kind.value(), len]);
        let (data, sum) = rest.split_at_mut(self.data.len());
        data.copy_from_slice(self.data);
        let mut total_sum = checksum(head);
        total_sum = total_sum.wrapping_add(checksum(data));
        if let Some(slot) = sum.first_mut() {
            *slot = total_sum;
        }
        Ok(total)
    }
}

/// A parsed RPC command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// Connect to this network.
    WifiSettings {
        /// Raw SSID bytes.
        ssid: &'a [u8],
        /// Raw password bytes.
        password: &'a [u8],
    },
    /// Report the current state.
    GetCurrentState,
    /// Report firmware and device information.
    GetDeviceInfo,
    /// Report scanned networks.
    GetWifiNetworks,
}

impl<'a> Command<'a> {
    /// Parses RPC command data (`command, length, payload`).
    pub fn parse(data: &'a [u8]) -> Result<Self, ImprovError> {
        let (&id, rest) = data.split_first().ok_or(ImprovError::InvalidRpc)?;
        let (&len, payload) = rest.split_first().ok_or(ImprovError::InvalidRpc)?;
        if usize::from(len) != payload.len() {
            return Err(ImprovError::InvalidRpc);
        }
        match id {
            command::WIFI_SETTINGS => {
                let (ssid, rest) = take(payload)?;
                let (password, rest) = take(rest)?;
                if !rest.is_empty() {
                    return Err(ImprovError::InvalidRpc);
                }
                Ok(Self::WifiSettings { ssid, password })
            }
            command::GET_CURRENT_STATE => Ok(Self::GetCurrentState),
            command::GET_DEVICE_INFO => Ok(Self::GetDeviceInfo),
            command::GET_WIFI_NETWORKS => Ok(Self::GetWifiNetworks),
            other => Err(ImprovError::UnknownCommand(other)),
        }
    }

    /// The command id.
    pub const fn id(&self) -> u8 {
        match self {
            Self::WifiSettings { .. } => command::WIFI_SETTINGS,
            Self::GetCurrentState => command::GET_CURRENT_STATE,
            Self::GetDeviceInfo => command::GET_DEVICE_INFO,
            Self::GetWifiNetworks => command::GET_WIFI_NETWORKS,
        }
    }
}

fn take(bytes: &[u8]) -> Result<(&[u8], &[u8]), ImprovError> {
    let (&len, rest) = bytes.split_first().ok_or(ImprovError::InvalidRpc)?;
    let len = usize::from(len);
    if rest.len() < len {
        return Err(ImprovError::InvalidRpc);
    }
    Ok(rest.split_at(len))
}

/// Writes an RPC result packet answering `command` with `strings`.
pub fn emit_rpc_result(
    command: u8,
    strings: &[&str],
    out: &mut [u8],
) -> Result<usize, ImprovError> {
    let mut data = [0u8; 255];
    let mut len = 2usize;
    for s in strings {
        let n = u8::try_from(s.len()).map_err(|_| ImprovError::BufferTooSmall)?;
        let end = len + 1 + s.len();
        let dst = data.get_mut(len..end).ok_or(ImprovError::BufferTooSmall)?;
        let (first, tail) = dst.split_at_mut(1);
        first[0] = n;
        tail.copy_from_slice(s.as_bytes());
        len = end;
    }
    data[0] = command;
    data[1] = u8::try_from(len - 2).map_err(|_| ImprovError::BufferTooSmall)?;
    let data = data.get(..len).ok_or(ImprovError::BufferTooSmall)?;
    Packet {
        kind: PacketType::RpcResult,
        data,
    }
    .emit(out)
}

/// The strings of an RPC result's data (after command and length).
pub fn rpc_result_strings(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = data.get(2..).unwrap_or(&[]);
    core::iter::from_fn(move || {
        let (s, tail) = take(rest).ok()?;
        rest = tail;
        Some(s)
    })
}

/// What the device answers to "Request device information".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceInfo<'a> {
    /// Firmware name.
    pub firmware_name: &'a str,
    /// Firmware version.
    pub firmware_version: &'a str,
    /// Chip, e.g. `ESP32-C3`.
    pub chip: &'a str,
    /// Device name.
    pub device_name: &'a str,
}

/// What a received packet means for the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImprovEvent {
    /// New Wi-Fi credentials: save them, try them, then report with
    /// [`ImprovService::provisioned`] or [`ImprovService::connect_failed`].
    Credentials(WifiCredentials),
}

/// The replies to one packet, written to the caller's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Input bytes consumed (noise plus the packet).
    pub consumed: usize,
    /// Output bytes written (zero or more packets back to back).
    pub len: usize,
    /// What the device must do.
    pub event: Option<ImprovEvent>,
}

/// The device side of Improv serial.
#[derive(Debug, Clone)]
pub struct ImprovService {
    state: ImprovState,
}

impl Default for ImprovService {
    fn default() -> Self {
        Self::new()
    }
}

struct Out<'o> {
    buf: &'o mut [u8],
    len: usize,
}

impl Out<'_> {
    fn packet(&mut self, kind: PacketType, data: &[u8]) -> Result<(), ImprovError> {
        let rest = self
            .buf
            .get_mut(self.len..)
            .ok_or(ImprovError::BufferTooSmall)?;
        self.len += Packet { kind, data }.emit(rest)?;
        Ok(())
    }

    fn result(&mut self, command: u8, strings: &[&str]) -> Result<(), ImprovError> {
        let rest = self
            .buf
            .get_mut(self.len..)
            .ok_or(ImprovError::BufferTooSmall)?;
        self.len += emit_rpc_result(command, strings, rest)?;
        Ok(())
    }
}

impl ImprovService {
    /// A service in [`ImprovState::Ready`].
    pub const fn new() -> Self {
        Self {
            state: ImprovState::Ready,
        }
    }

    /// The current state.
    pub const fn state(&self) -> ImprovState {
        self.state
    }

    /// Handles the first packet in `input` (noise before it is skipped).
    /// `Partial` means: keep the bytes from [`sync`] on and read more.
    /// A malformed packet is consumed and answered with an error state.
    pub fn receive(
        &mut self,
        input: &[u8],
        info: &DeviceInfo<'_>,
        networks: &[Network<'_>],
        out: &mut [u8],
    ) -> Result<Status<Reply>, ImprovError> {
        let start = sync(input);
        let bytes = input.get(start..).unwrap_or(&[]);
        let mut o = Out { buf: out, len: 0 };
        let (packet, used) = match Packet::parse(bytes) {
            Ok(Status::Partial) => return Ok(Status::Partial),
            Ok(Status::Complete(p)) => p,
            Err(e) => {
                warn!("improv: bad packet: {:?}", e);
                // Drop the header so the next call looks for a new one.
                let consumed = start + HEADER.len().min(bytes.len());
                if let Some(code) = e.code() {
                    o.packet(PacketType::ErrorState, &[code.value()])?;
                }
                return Ok(Status::Complete(Reply {
                    consumed,
                    len: o.len,
                    event: None,
                }));
            }
        };
        let consumed = start + used;
        if packet.kind != PacketType::RpcCommand {
            // Our own packet types echoed back: ignore.
            return Ok(Status::Complete(Reply {
                consumed,
                len: 0,
                event: None,
            }));
        }
        let command = match Command::parse(packet.data) {
            Ok(c) => c,
            Err(e) => {
                let code = e.code().unwrap_or(ErrorCode::Unknown);
                o.packet(PacketType::ErrorState, &[code.value()])?;
                return Ok(Status::Complete(Reply {
                    consumed,
                    len: o.len,
                    event: None,
                }));
            }
        };
        debug!("improv: command {}", command.id());
        o.packet(PacketType::ErrorState, &[ErrorCode::None.value()])?;
        let mut event = None;
        match command {
            Command::WifiSettings { ssid, password } => {
                let credentials = core::str::from_utf8(ssid)
                    .ok()
                    .and_then(|s| Ssid::new(s).ok())
                    .zip(
                        core::str::from_utf8(password)
                            .ok()
                            .and_then(|p| Passphrase::new(p).ok()),
                    );
                match credentials {
                    Some((ssid, passphrase)) => {
                        self.state = ImprovState::Provisioning;
                        o.packet(PacketType::CurrentState, &[self.state.value()])?;
                        event = Some(ImprovEvent::Credentials(WifiCredentials {
                            ssid,
                            passphrase,
                        }));
                    }
                    None => o.packet(PacketType::ErrorState, &[ErrorCode::InvalidRpc.value()])?,
                }
            }
            Command::GetCurrentState => {
                o.packet(PacketType::CurrentState, &[self.state.value()])?;
            }
            Command::GetDeviceInfo => o.result(
                command::GET_DEVICE_INFO,
                &[
                    info.firmware_name,
                    info.firmware_version,
                    info.chip,
                    info.device_name,
                ],
            )?,
            Command::GetWifiNetworks => {
                for net in networks {
                    let mut rssi = heapless::String::<8>::new();
                    // An i8 always fits in 8 bytes.
                    let _ = fmt::Write::write_fmt(&mut rssi, format_args!("{}", net.rssi));
                    let auth = if net.secured { "YES" } else { "NO" };
                    o.result(command::GET_WIFI_NETWORKS, &[net.ssid, &rssi, auth])?;
                }
                o.result(command::GET_WIFI_NETWORKS, &[])?;
            }
        }
        Ok(Status::Complete(Reply {
            consumed,
            len: o.len,
            event,
        }))
    }

    /// The credentials worked: report `Provisioned` and the URL the
    /// browser should open (empty for none).
    pub fn provisioned(
        &mut self,
        redirect_url: &str,
        out: &mut [u8],
    ) -> Result<usize, ImprovError> {
        self.state = ImprovState::Provisioned;
        let mut o = Out { buf: out, len: 0 };
        o.packet(PacketType::CurrentState, &[self.state.value()])?;
        if redirect_url.is_empty() {
            o.result(command::WIFI_SETTINGS, &[])?;
        } else {
            o.result(command::WIFI_SETTINGS, &[redirect_url])?;
        }
        Ok(o.len)
    }

    /// The credentials did not work: report "unable to connect" and go
    /// back to `Ready`.
    pub fn connect_failed(&mut self, out: &mut [u8]) -> Result<usize, ImprovError> {
        self.state = ImprovState::Ready;
        let mut o = Out { buf: out, len: 0 };
        o.packet(
            PacketType::ErrorState,
            &[ErrorCode::UnableToConnect.value()],
        )?;
        o.packet(PacketType::CurrentState, &[self.state.value()])?;
        Ok(o.len)
    }
}

#[cfg(test)]
mod tests {
    extern crate alloc;

    use alloc::vec::Vec;

    use proptest::prelude::*;

    use super::*;

    const INFO: DeviceInfo<'static> = DeviceInfo {
        firmware_name: "ESPHome",
        firmware_version: "2021.11.0",
        chip: "ESP32-C3",
        device_name: "Temperature Monitor",
    };

    fn wrap(kind: u8, data: &[u8]) -> Vec<u8> {
        let mut p = Vec::from(&b"IMPROV"[..]);
        p.extend_from_slice(&[1, kind, data.len() as u8]);
        p.extend_from_slice(data);
        let sum = p.iter().fold(0u8, |s, b| s.wrapping_add(*b));
        p.push(sum);
        p
    }

    /// Splits a reply buffer into packets.
    fn packets(mut bytes: &[u8]) -> Vec<(PacketType, Vec<u8>)> {
        let mut all = Vec::new();
        while !bytes.is_empty() {
            let Ok(Status::Complete((p, n))) = Packet::parse(bytes) else {
                panic!("{bytes:?}")
            };
            all.push((p.kind, p.data.to_vec()));
            bytes = &bytes[n..];
        }
        all
    }

    /// Feeds `input`; returns the reply and the packets written.
    fn send(
        service: &mut ImprovService,
        input: &[u8],
        nets: &[Network<'_>],
    ) -> (Reply, Vec<(PacketType, Vec<u8>)>) {
        let mut out = [0u8; 1024];
        let Ok(Status::Complete(reply)) = service.receive(input, &INFO, nets, &mut out) else {
            panic!()
        };
        let written = packets(&out[..reply.len]);
        (reply, written)
    }

    #[test]
    fn spec_example_wifi_settings() {
        // From the specification: 01 1E 0C {MyWirelessAP} 10 {mysecurepassword}
        let mut rpc = alloc::vec![0x01, 0x1e, 0x0c];
        rpc.extend_from_slice(b"MyWirelessAP");
        rpc.push(0x10);
        rpc.extend_from_slice(b"mysecurepassword");
        assert_eq!(rpc.len(), 2 + 0x1e);
        let packet = wrap(0x03, &rpc);
        // Our emitter produces the same bytes.
        let mut emitted = [0u8; 64];
        let n = Packet {
            kind: PacketType::RpcCommand,
            data: &rpc,
        }
        .emit(&mut emitted)
        .unwrap();
        assert_eq!(&emitted[..n], &packet[..]);

        let mut service = ImprovService::new();
        // With log noise in front, as on a real serial line.
        let mut input = Vec::from(&b"I (123) boot: ok\r\nIMPRO"[..]);
        input.extend_from_slice(&packet);
        let (reply, written) = send(&mut service, &input, &[]);
        assert_eq!(reply.consumed, input.len());
        let Some(ImprovEvent::Credentials(wifi)) = reply.event else {
            panic!()
        };
        assert_eq!(wifi.ssid.as_str(), "MyWirelessAP");
        assert_eq!(wifi.passphrase.as_str(), "mysecurepassword");
        assert_eq!(
            written,
            [
                (PacketType::ErrorState, alloc::vec![0]),
                (PacketType::CurrentState, alloc::vec![3])
            ]
        );
        assert_eq!(service.state(), ImprovState::Provisioning);

        let mut out = [0u8; 128];
        let n = service
            .provisioned("https://relay.example.com/d/7", &mut out)
            .unwrap();
        let replies = packets(&out[..n]);
        assert_eq!(replies[0], (PacketType::CurrentState, alloc::vec![4]));
        assert_eq!(replies[1].0, PacketType::RpcResult);
        let strings: Vec<&[u8]> = rpc_result_strings(&replies[1].1).collect();
        assert_eq!(strings, [&b"https://relay.example.com/d/7"[..]]);
        assert_eq!(replies[1].1[0], command::WIFI_SETTINGS);
    }

    #[test]
    fn spec_example_device_info_and_scan() {
        let mut service = ImprovService::new();
        let (_, replies) = send(&mut service, &wrap(3, &[0x03, 0x00]), &[]);
        assert_eq!(replies[0], (PacketType::ErrorState, alloc::vec![0]));
        let data = &replies[1].1;
        assert_eq!(data[0], 0x03);
        assert_eq!(usize::from(data[1]), data.len() - 2);
        let strings: Vec<&[u8]> = rpc_result_strings(data).collect();
        assert_eq!(
            strings,
            [
                &b"ESPHome"[..],
                b"2021.11.0",
                b"ESP32-C3",
                b"Temperature Monitor"
            ]
        );

        let nets = [
            Network {
                ssid: "MyWirelessNetwork",
                rssi: -60,
                secured: true,
            },
            Network {
                ssid: "Guest",
                rssi: -85,
                secured: false,
            },
        ];
        let (_, replies) = send(&mut service, &wrap(3, &[0x04, 0x00]), &nets);
        assert_eq!(replies.len(), 4, "error state, two networks, end marker");
        let first: Vec<&[u8]> = rpc_result_strings(&replies[1].1).collect();
        assert_eq!(first, [&b"MyWirelessNetwork"[..], b"-60", b"YES"]);
        let second: Vec<&[u8]> = rpc_result_strings(&replies[2].1).collect();
        assert_eq!(second, [&b"Guest"[..], b"-85", b"NO"]);
        assert_eq!(replies[3].1, [0x04, 0x00]);
    }

    #[test]
    fn current_state_and_failures() {
        let mut service = ImprovService::new();
        let (_, replies) = send(&mut service, &wrap(3, &[0x02, 0x00]), &[]);
        assert_eq!(replies[1], (PacketType::CurrentState, alloc::vec![2]));
        let mut out = [0u8; 64];
        let n = service.connect_failed(&mut out).unwrap();
        assert_eq!(
            packets(&out[..n]),
            [
                (PacketType::ErrorState, alloc::vec![3]),
                (PacketType::CurrentState, alloc::vec![2])
            ]
        );
        // Unknown command, broken lengths, short password, bad checksum.
        for (input, code) in [
            (wrap(3, &[0x09, 0x00]), 0x02),
            (wrap(3, &[0x01, 0x05, 0x09, b'a']), 0x01),
            (wrap(3, &[0x01, 0x05, 0x01, b'a', 0x02, b'p', b'w']), 0x01),
        ] {
            let (_, replies) = send(&mut service, &input, &[]);
            assert_eq!(
                replies.last().unwrap(),
                &(PacketType::ErrorState, alloc::vec![code])
            );
        }
        let mut bad = wrap(3, &[0x02, 0x00]);
        *bad.last_mut().unwrap() ^= 1;
        let (reply, replies) = send(&mut service, &bad, &[]);
        assert_eq!(reply.consumed, 6);
        assert_eq!(replies, [(PacketType::ErrorState, alloc::vec![1])]);
        assert_eq!(Packet::parse(&bad), Err(ImprovError::Checksum));
        // Partial input waits.
        let good = wrap(3, &[0x02, 0x00]);
        let mut out = [0u8; 64];
        for cut in 0..good.len() {
            assert_eq!(
                service.receive(&good[..cut], &INFO, &[], &mut out),
                Ok(Status::Partial)
            );
        }
        assert_eq!(sync(b"noise"), 5);
        assert_eq!(sync(b"noiseIMP"), 5);
    }

    proptest! {
        #[test]
        fn prop_codec_round_trip(kind in 1u8..=4, data in proptest::collection::vec(any::<u8>(), 0..=255)) {
            let kind = PacketType::from_value(kind).unwrap();
            let mut out = [0u8; MAX_PACKET_LEN];
            let n = Packet { kind, data: &data }.emit(&mut out).unwrap();
            prop_assert_eq!(&out[..n], &wrap(kind.value(), &data)[..]);
            let Ok(Status::Complete((p, used))) = Packet::parse(&out[..n]) else { panic!() };
            prop_assert_eq!((p.kind, p.data, used), (kind, &data[..], n));
        }

        #[test]
        fn prop_wifi_command_round_trip(ssid in "[ -~]{1,32}", pass in "([!-~]{8,63})?") {
            let mut rpc = alloc::vec![0x01, (2 + ssid.len() + pass.len()) as u8, ssid.len() as u8];
            rpc.extend_from_slice(ssid.as_bytes());
            rpc.push(pass.len() as u8);
            rpc.extend_from_slice(pass.as_bytes());
            prop_assert_eq!(
                Command::parse(&rpc),
                Ok(Command::WifiSettings { ssid: ssid.as_bytes(), password: pass.as_bytes() })
            );
        }

        #[test]
        fn prop_receive_never_panics(input in proptest::collection::vec(any::<u8>(), 0..300), cap in 0usize..600) {
            let mut service = ImprovService::new();
            let mut out = alloc::vec![0u8; cap];
            if let Ok(Status::Complete(reply)) = service.receive(&input, &INFO, &[], &mut out) {
                prop_assert!(reply.consumed <= input.len());
                prop_assert!(reply.len <= cap);
            }
        }
    }
}
