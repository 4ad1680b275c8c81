//! Downlink commands: what the application answers, and the bounded JSON
//! result that goes back in the `CommandAck`.

use core::fmt;

use serde::Serialize;
use tether_proto::{Command, CommandStatus};

#[cfg(doc)]
use crate::session::MAX_COMMAND_RESULT_LEN;

/// What the application does with a downlink command. The runner calls it
/// as the command arrives and sends the returned status back in a
/// `CommandAck`, with the JSON result the handler put in `result` (`null`
/// if it put none); keep it short (queue long work elsewhere and answer
/// `Ok`).
///
/// Closures `|command: &Command<'_>, result: &mut CommandResult<'_>| status`
/// are handlers.
pub trait CommandHandler {
    /// Handles `command`; may [`set`](CommandResult::set) a result.
    fn handle(&mut self, command: &Command<'_>, result: &mut CommandResult<'_>) -> CommandStatus;
}

impl<F> CommandHandler for F
where
    F: FnMut(&Command<'_>, &mut CommandResult<'_>) -> CommandStatus,
{
    fn handle(&mut self, command: &Command<'_>, result: &mut CommandResult<'_>) -> CommandStatus {
        self(command, result)
    }
}

/// A [`CommandHandler`] for devices that take no commands: answers
/// [`CommandStatus::Unsupported`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCommands;

impl CommandHandler for NoCommands {
    fn handle(&mut self, _command: &Command<'_>, _result: &mut CommandResult<'_>) -> CommandStatus {
        CommandStatus::Unsupported
    }
}

/// The JSON result of one command, in a bounded buffer the runner provides
/// ([`MAX_COMMAND_RESULT_LEN`] bytes): no allocation.
#[derive(Debug)]
pub struct CommandResult<'b> {
    buffer: &'b mut [u8],
    len: usize,
}

impl<'b> CommandResult<'b> {
    /// An empty result writing into `buffer`.
    #[must_use]
    pub fn new(buffer: &'b mut [u8]) -> Self {
        Self { buffer, len: 0 }
    }

    /// Serializes `value` as JSON (serde-json-core) as the result,
    /// replacing any earlier one.
    ///
    /// # Errors
    /// [`ResultTooLarge`] if it does not fit (or does not serialize); the
    /// result is then empty (`null`).
    pub fn set<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ResultTooLarge> {
        self.len = 0;
        self.len = serde_json_core::to_slice(value, self.buffer).map_err(|_| ResultTooLarge)?;
        Ok(())
    }

    /// Removes the result (`null` goes back).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// The JSON set, if any.
    #[must_use]
    pub fn json(&self) -> Option<&[u8]> {
        self.buffer.get(..self.len).filter(|json| !json.is_empty())
    }

    /// The longest JSON that fits.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.buffer.len()
    }
}

/// A command result does not fit its buffer (at most
/// [`MAX_COMMAND_RESULT_LEN`] bytes of JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ResultTooLarge;

impl fmt::Display for ResultTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("command result too large")
    }
}

impl core::error::Error for ResultTooLarge {}

#[cfg(test)]
mod tests {
    extern crate std;

    use tether_proto::{CommandAck, DeviceToServer, Payload};

    use super::*;
    use crate::client::message_buffer_len;
    use crate::session::MAX_COMMAND_RESULT_LEN;

    #[test]
    fn command_results_are_bounded_json() {
        #[derive(Serialize)]
        struct Led<'a> {
            on: bool,
            name: &'a str,
        }
        let mut buffer = [0u8; MAX_COMMAND_RESULT_LEN];
        let mut result = CommandResult::new(&mut buffer);
        assert_eq!(result.json(), None);
        result
            .set(&Led {
                on: true,
                name: "kitchen",
            })
            .unwrap();
        assert_eq!(result.json(), Some(&br#"{"on":true,"name":"kitchen"}"#[..]));
        let long = "x".repeat(MAX_COMMAND_RESULT_LEN);
        assert_eq!(
            result.set(&Led {
                on: false,
                name: &long
            }),
            Err(ResultTooLarge)
        );
        assert_eq!(result.json(), None, "a failed set leaves no half result");
        result.set(&[1, 2, 3]).unwrap();
        result.clear();
        assert_eq!(result.json(), None);
        assert_eq!(result.capacity(), MAX_COMMAND_RESULT_LEN);
        // The largest CommandAck fits the smallest message buffer.
        let max = [b'1'; MAX_COMMAND_RESULT_LEN];
        let ack = DeviceToServer::CommandAck(CommandAck {
            id: u32::MAX,
            status: CommandStatus::Unsupported,
            result: Payload(&max),
        });
        let mut out = [0u8; message_buffer_len(0)];
        assert!(ack.encode(&mut out).is_ok());
    }
}
