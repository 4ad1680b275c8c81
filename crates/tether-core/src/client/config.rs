//! [`ClientConfig`]: what a device client connects to and says about
//! itself, and the buffer sizes that follow from it.

use core::fmt;

use tether_proto::{
    DescribeChannel, DescribeCommand, EncodeError, FieldError, MAX_CHANNEL_LEN, validate_device_id,
};

use crate::session::{MAX_COMMAND_RESULT_LEN, SessionConfig, SessionConfigError};
use crate::time::Duration;
use crate::url::{ServerUrl, UrlError};

/// Channel and command descriptions one client may announce, at most.
pub const MAX_ANNOUNCEMENTS: usize = 64;

/// Largest JSON payload [`Client::publish`](super::Client::publish) serializes by default.
pub const DEFAULT_PAYLOAD_CAPACITY: usize = 256;

/// Bytes of a `Publish` message around its payload, at most: version and
/// kind, seq, channel, time, payload length (postcard varints).
const PUBLISH_OVERHEAD: usize = 2 + 5 + 1 + MAX_CHANNEL_LEN + 1 + 10 + 3;

/// Bytes of the largest `Hello` (its last 5: `max_downlink_len`).
const HELLO_LEN: usize = 2 + 1 + tether_proto::MAX_DEVICE_ID_LEN + 1 + 32 + 10 + 5 + 5;

/// `Hello.max_downlink_len` for a receive buffer of `rx` bytes: the largest
/// message that fits in it after the largest WebSocket frame header, so the
/// server never sends a command the buffer cannot hold (1010 for the
/// default 1024).
#[must_use]
pub const fn max_downlink_len(rx: usize) -> u32 {
    let len = rx.saturating_sub(crate::ws::MAX_HEADER_LEN);
    if len > u32::MAX as usize {
        u32::MAX
    } else {
        len as u32
    }
}

/// Bytes of the largest `CommandAck`: version and kind, id, status, result
/// length and result.
const COMMAND_ACK_LEN: usize = 2 + 5 + 1 + 2 + MAX_COMMAND_RESULT_LEN;

/// The smallest message buffer a [`Runner`](super::Runner) needs for payloads of up to
/// `payload` bytes.
#[must_use]
pub const fn message_buffer_len(payload: usize) -> usize {
    let publish = PUBLISH_OVERHEAD + payload;
    let control = if COMMAND_ACK_LEN > HELLO_LEN {
        COMMAND_ACK_LEN
    } else {
        HELLO_LEN
    };
    if publish > control { publish } else { control }
}

/// Settings of a device client. Builder-lite: [`ClientConfig::new`] takes
/// what has no default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ClientConfig<'a> {
    pub(super) url: &'a str,
    pub(super) device_id: &'a str,
    pub(super) firmware_version: &'a str,
    pub(super) authorization: Option<&'a str>,
    pub(super) session: SessionConfig,
    pub(super) send_timeout: Duration,
    pub(super) descriptions: &'a [DescribeChannel<'a>],
    pub(super) commands: &'a [DescribeCommand<'a>],
    /// The description code, set by `with_descriptions` and
    /// `with_commands` only: a firmware that describes nothing never
    /// takes these function pointers, so the linker drops the encoders and
    /// checks (and their number formatting) from its image.
    pub(super) announcer: Option<Announcer>,
}

/// Validates, sizes and encodes a configuration's announcements.
#[derive(Clone, Copy)]
pub(super) struct Announcer {
    /// Checks every description and command.
    pub(super) validate: fn(&ClientConfig<'_>) -> Result<(), FieldError>,
    /// The longest announcement's encoding, bytes.
    pub(super) max_len: fn(&ClientConfig<'_>) -> usize,
    /// Encodes announcement `index`; `None` past the last.
    pub(super) encode: EncodeAnnouncement,
}

/// Encodes announcement `index` of a configuration into a buffer.
pub(super) type EncodeAnnouncement =
    for<'b> fn(&ClientConfig<'_>, u16, &'b mut [u8]) -> Option<Result<&'b [u8], EncodeError>>;

const ANNOUNCER: Announcer = Announcer {
    validate: validate_announcements,
    max_len: max_announcement_len,
    encode: super::encode::announcement,
};

fn validate_announcements(config: &ClientConfig<'_>) -> Result<(), FieldError> {
    for description in config.descriptions {
        description.validate()?;
    }
    for command in config.commands {
        command.validate()?;
    }
    Ok(())
}

fn max_announcement_len(config: &ClientConfig<'_>) -> usize {
    let descriptions = config.descriptions.iter().map(DescribeChannel::encoded_len);
    let commands = config.commands.iter().map(DescribeCommand::encoded_len);
    descriptions.chain(commands).max().unwrap_or(0)
}

/// Configurations are equal by their settings; the announcer follows from
/// them.
impl PartialEq for Announcer {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Announcer {}

impl fmt::Debug for Announcer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Announcer")
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for Announcer {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "Announcer");
    }
}

impl<'a> ClientConfig<'a> {
    /// Connect to `url` (`ws://` or `wss://`) as `device_id`, reporting
    /// `firmware_version`. Defaults: no `Authorization` header, the default
    /// [`SessionConfig`], 10 s to send a message.
    #[must_use]
    pub const fn new(url: &'a str, device_id: &'a str, firmware_version: &'a str) -> Self {
        Self {
            url,
            device_id,
            firmware_version,
            authorization: None,
            session: SessionConfig::new(),
            send_timeout: Duration::from_secs(10),
            descriptions: &[],
            commands: &[],
            announcer: None,
        }
    }

    /// What the device's channels' payload members mean (label, unit,
    /// scale, …), told the server after every `Welcome` so dashboards show
    /// readings in their units. Typically `const`s next to the reading
    /// types:
    ///
    /// ```
    /// use tether_core::client::ClientConfig;
    /// use tether_proto::{DescribeChannel, FieldDescription, Fields};
    ///
    /// const CLIMATE: DescribeChannel<'static> = DescribeChannel::new(
    ///     "kitchen/climate",
    ///     Fields::new(&[FieldDescription::new("centi_celsius")
    ///         .with_label("Temperature")
    ///         .with_unit("°C")
    ///         .with_scale(0.01)]),
    /// );
    /// let config = ClientConfig::new("wss://relay.example.com/v1/device", "kitchen-1", "1.0.0")
    ///     .with_descriptions(&[CLIMATE]);
    /// assert!(config.validate().is_ok());
    /// ```
    #[must_use]
    pub const fn with_descriptions(mut self, descriptions: &'a [DescribeChannel<'a>]) -> Self {
        self.descriptions = descriptions;
        self.announcer = Some(ANNOUNCER);
        self
    }

    /// The commands the device takes (channel, label, example payload),
    /// told the server after every `Welcome` so dashboards can offer them.
    #[must_use]
    pub const fn with_commands(mut self, commands: &'a [DescribeCommand<'a>]) -> Self {
        self.commands = commands;
        self.announcer = Some(ANNOUNCER);
        self
    }

    /// The channel descriptions.
    #[must_use]
    pub const fn descriptions(&self) -> &'a [DescribeChannel<'a>] {
        self.descriptions
    }

    /// The command descriptions.
    #[must_use]
    pub const fn commands(&self) -> &'a [DescribeCommand<'a>] {
        self.commands
    }

    /// Announcements after every `Welcome`: descriptions, then commands.
    pub(super) fn announcements(&self) -> u16 {
        u16::try_from(self.descriptions.len().saturating_add(self.commands.len()))
            .unwrap_or(u16::MAX)
    }

    /// The `Authorization` header of the WebSocket upgrade, e.g.
    /// `Bearer <device token>`.
    #[must_use]
    pub const fn with_authorization(mut self, value: &'a str) -> Self {
        self.authorization = Some(value);
        self
    }

    /// Session settings: backoff, keepalive, in-flight window, full policy.
    #[must_use]
    pub const fn with_session(mut self, session: SessionConfig) -> Self {
        self.session = session;
        self
    }

    /// Longest time one message may take to go out before the link counts
    /// as dead.
    #[must_use]
    pub const fn with_send_timeout(mut self, timeout: Duration) -> Self {
        self.send_timeout = timeout;
        self
    }

    /// The server URL.
    #[must_use]
    pub const fn url(&self) -> &'a str {
        self.url
    }

    /// The device id sent in `Hello`.
    #[must_use]
    pub const fn device_id(&self) -> &'a str {
        self.device_id
    }

    /// The firmware version sent in `Hello`.
    #[must_use]
    pub const fn firmware_version(&self) -> &'a str {
        self.firmware_version
    }

    /// Session settings.
    #[must_use]
    pub const fn session(&self) -> &SessionConfig {
        &self.session
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// The first rule the settings break.
    pub fn validate(&self) -> Result<ServerUrl<'a>, ClientConfigError> {
        let url = ServerUrl::parse(self.url).map_err(ClientConfigError::Url)?;
        validate_device_id(self.device_id).map_err(|_| ClientConfigError::DeviceId)?;
        tether_proto::validate_firmware_version(self.firmware_version)
            .map_err(|_| ClientConfigError::FirmwareVersion)?;
        self.session
            .validate()
            .map_err(ClientConfigError::Session)?;
        if self.send_timeout.as_millis() == 0 {
            return Err(ClientConfigError::ZeroSendTimeout);
        }
        if self.descriptions.len().saturating_add(self.commands.len()) > MAX_ANNOUNCEMENTS {
            return Err(ClientConfigError::TooManyDescriptions);
        }
        if let Some(announcer) = self.announcer {
            (announcer.validate)(self).map_err(ClientConfigError::Description)?;
        }
        Ok(url)
    }
}

/// A [`ClientConfig`] (or buffer) that cannot work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ClientConfigError {
    /// The URL is not a usable `ws://` or `wss://` URL.
    Url(UrlError),
    /// The device id breaks the protocol's rules (1 to 64 of `A-Z a-z 0-9 _ - . :`).
    DeviceId,
    /// The firmware version is not 1 to 32 printable ASCII characters
    /// without `"` and `\`.
    FirmwareVersion,
    /// The session settings are invalid.
    Session(SessionConfigError),
    /// The send timeout is zero.
    ZeroSendTimeout,
    /// The message buffer is smaller than [`message_buffer_len`] of the
    /// client's payload capacity.
    MessageBufferTooSmall,
    /// The receive or transmit buffer is too small for a WebSocket frame
    /// (at least 128 bytes each).
    FrameBufferTooSmall,
    /// A channel or command description breaks the protocol's rules.
    Description(FieldError),
    /// More than [`MAX_ANNOUNCEMENTS`] channel and command descriptions.
    TooManyDescriptions,
    /// A description does not fit the message buffer (make `MESSAGE`
    /// larger, or the description shorter).
    DescriptionTooLarge,
}

impl fmt::Display for ClientConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Url(e) => write!(f, "invalid server URL: {e}"),
            Self::DeviceId => f.write_str("invalid device id"),
            Self::FirmwareVersion => f.write_str("invalid firmware version"),
            Self::Session(e) => write!(f, "invalid session settings: {e}"),
            Self::ZeroSendTimeout => f.write_str("send timeout must not be zero"),
            Self::MessageBufferTooSmall => f.write_str("message buffer too small"),
            Self::FrameBufferTooSmall => f.write_str("frame buffers too small"),
            Self::Description(e) => write!(f, "invalid description: {e}"),
            Self::TooManyDescriptions => f.write_str("too many descriptions"),
            Self::DescriptionTooLarge => {
                f.write_str("a description does not fit the message buffer")
            }
        }
    }
}

impl core::error::Error for ClientConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_describing_configurations_reach_the_description_code() {
        use tether_proto::{FieldDescription, Fields};
        let plain = ClientConfig::new("ws://relay.example.com/v1/device", "d-1", "1.0.0");
        assert!(plain.announcer.is_none());
        assert_eq!(plain.announcements(), 0);
        const FIELDS: &[FieldDescription<'static>] = &[FieldDescription::new("c").with_scale(0.01)];
        let channel = [DescribeChannel::new("t", Fields::new(FIELDS))];
        let described = plain.with_descriptions(&channel);
        let announcer = described.announcer.expect("set by with_descriptions");
        assert_eq!((announcer.validate)(&described), Ok(()));
        let mut buf = [0; 128];
        let encoded = (announcer.encode)(&described, 0, &mut buf).expect("one announcement");
        let len = encoded.expect("encodes").len();
        assert_eq!(len, (announcer.max_len)(&described));
        assert!((announcer.encode)(&described, 1, &mut buf).is_none());
        // A number with too many fraction digits is refused.
        const THIRD: &[FieldDescription<'static>] =
            &[FieldDescription::new("c").with_scale(1.0 / 3.0)];
        let third = [DescribeChannel::new("t", Fields::new(THIRD))];
        let bad = plain.with_descriptions(&third);
        assert!(matches!(
            bad.validate(),
            Err(ClientConfigError::Description(_))
        ));
        assert!(plain.with_commands(&[]).announcer.is_some());
    }

    #[test]
    fn hello_states_what_the_receive_buffer_holds() {
        use tether_proto::{DeviceToServer, Hello};
        assert_eq!(
            max_downlink_len(1024),
            tether_proto::DEFAULT_MAX_DOWNLINK_LEN
        );
        assert_eq!(max_downlink_len(1536), 1522);
        // The smallest buffer a runner takes still states a valid limit.
        assert!(max_downlink_len(128) >= tether_proto::MIN_DOWNLINK_LEN);
        // The largest Hello fits the smallest message buffer.
        let id = "d".repeat(tether_proto::MAX_DEVICE_ID_LEN);
        let firmware = "f".repeat(tether_proto::MAX_FIRMWARE_VERSION_LEN);
        let largest = DeviceToServer::Hello(Hello {
            device_id: &id,
            firmware_version: &firmware,
            boot_id: u64::MAX,
            last_acked_seq: u32::MAX,
            max_downlink_len: Some(u32::MAX),
        });
        assert!(largest.encoded_len() <= HELLO_LEN);
        assert!(HELLO_LEN <= message_buffer_len(0));
    }

    #[test]
    fn config_validation() {
        let ok = ClientConfig::new("ws://relay.local:8080/device", "dev-1", "1.0.0");
        assert!(ok.validate().is_ok());
        let cases = [
            (
                ClientConfig::new("http://x", "dev-1", "1"),
                ClientConfigError::Url(UrlError::UnsupportedScheme),
            ),
            (
                ClientConfig::new("ws://x", "dev 1", "1"),
                ClientConfigError::DeviceId,
            ),
            (
                ClientConfig::new("ws://x", "", "1"),
                ClientConfigError::DeviceId,
            ),
            (
                ClientConfig::new("ws://x", "d", ""),
                ClientConfigError::FirmwareVersion,
            ),
            (
                ClientConfig::new("ws://x", "d", "1\\"),
                ClientConfigError::FirmwareVersion,
            ),
            (
                ClientConfig::new("ws://x", "d", "123456789012345678901234567890123"),
                ClientConfigError::FirmwareVersion,
            ),
            (
                ok.with_send_timeout(Duration::ZERO),
                ClientConfigError::ZeroSendTimeout,
            ),
            (
                ok.with_session(SessionConfig::new().with_max_in_flight(0)),
                ClientConfigError::Session(SessionConfigError::ZeroInFlight),
            ),
        ];
        for (config, error) in cases {
            assert_eq!(config.validate().err(), Some(error), "{config:?}");
        }
    }
}
