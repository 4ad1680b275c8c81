//! Role and limits of one endpoint.

/// Which end of the connection we are. Clients mask every frame they send and
/// reject masked frames; servers do the reverse (RFC 6455 5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Role {
    /// Dials out and masks what it sends.
    Client,
    /// Accepts connections and sends unmasked frames.
    Server,
}

/// Limits and behaviour of an endpoint, with builder-lite setters:
///
/// ```
/// use tether_core::ws::Config;
/// let config = Config::client()
///     .with_max_message_size(16 * 1024)
///     .with_fragment_size(1024);
/// assert_eq!(config.fragment_size(), 1024);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Config {
    role: Role,
    max_frame_size: usize,
    max_message_size: usize,
    fragment_size: usize,
    reserved_bits: u8,
}

impl Config {
    /// A client with no limits beyond the receive buffer, sending each
    /// message as one frame when the transmit buffer allows.
    pub const fn client() -> Self {
        Self::new(Role::Client)
    }

    /// A server with no limits beyond the receive buffer.
    pub const fn server() -> Self {
        Self::new(Role::Server)
    }

    /// An endpoint of the given role with default limits.
    pub const fn new(role: Role) -> Self {
        Self {
            role,
            max_frame_size: usize::MAX,
            max_message_size: usize::MAX,
            fragment_size: usize::MAX,
            reserved_bits: 0,
        }
    }

    /// Largest frame payload accepted; bigger frames fail with
    /// [`ProtocolError::FrameTooBig`](super::ProtocolError::FrameTooBig) (1009).
    #[must_use]
    pub const fn with_max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = bytes;
        self
    }

    /// Largest message accepted, summed over its fragments; bigger messages
    /// fail with [`ProtocolError::MessageTooBig`](super::ProtocolError::MessageTooBig) (1009).
    #[must_use]
    pub const fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Largest payload per frame when sending; longer messages are sent as
    /// several fragments. Zero is treated as one.
    #[must_use]
    pub const fn with_fragment_size(mut self, bytes: usize) -> Self {
        self.fragment_size = if bytes == 0 { 1 } else { bytes };
        self
    }

    /// RSV bits (a mask of `0b100` = RSV1, `0b010` = RSV2, `0b001` = RSV3)
    /// that a negotiated extension defines. Frames with any other RSV bit set
    /// are rejected. Default: none.
    #[must_use]
    pub const fn with_reserved_bits(mut self, bits: u8) -> Self {
        self.reserved_bits = bits & 0b111;
        self
    }

    pub(crate) const fn with_role(mut self, role: Role) -> Self {
        self.role = role;
        self
    }

    /// Our role.
    pub const fn role(&self) -> Role {
        self.role
    }

    /// See [`Config::with_max_frame_size`].
    pub const fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }

    /// See [`Config::with_max_message_size`].
    pub const fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// See [`Config::with_fragment_size`].
    pub const fn fragment_size(&self) -> usize {
        self.fragment_size
    }

    /// See [`Config::with_reserved_bits`].
    pub const fn reserved_bits(&self) -> u8 {
        self.reserved_bits
    }
}
