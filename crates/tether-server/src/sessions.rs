//! The connected devices of this server node, for commands and for closing
//! a session when the same device connects again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tether_proto::{CommandStatus, ErrorCode};
use tokio::sync::{mpsc, oneshot};

/// A device's answer to a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandReply {
    /// What the device did.
    pub status: CommandStatus,
    /// Its result, JSON text (`null` for none).
    pub result: String,
}

/// What other tasks ask of a device connection.
#[derive(Debug)]
pub(crate) enum DeviceControl {
    /// Send a command; answer on `reply` (the device's answer, or why the
    /// session refused the command: `too_large` for a message longer than
    /// the device's `Hello.max_downlink_len`).
    Command {
        channel: String,
        payload: String,
        reply: oneshot::Sender<Result<CommandReply, ErrorCode>>,
    },
    /// Close the connection with this error.
    Close(ErrorCode),
}

#[derive(Debug)]
struct Session {
    id: u64,
    control: mpsc::Sender<DeviceControl>,
}

/// Connected devices by id.
#[derive(Debug, Default)]
pub struct DeviceSessions {
    sessions: Mutex<HashMap<String, Session>>,
}

impl DeviceSessions {
    /// Registers a session; an older session of the same device is told to
    /// close with `session_replaced`.
    pub(crate) fn register(&self, device_id: &str, id: u64, control: mpsc::Sender<DeviceControl>) {
        let old = match self.sessions.lock() {
            Ok(mut sessions) => sessions.insert(device_id.to_owned(), Session { id, control }),
            Err(_) => None,
        };
        if let Some(old) = old {
            let _ = old
                .control
                .try_send(DeviceControl::Close(ErrorCode::SESSION_REPLACED));
        }
    }

    /// Removes the session if it is still the registered one; `true` if it
    /// was (the device is now offline).
    pub(crate) fn unregister(&self, device_id: &str, id: u64) -> bool {
        match self.sessions.lock() {
            Ok(mut sessions) => {
                if sessions
                    .get(device_id)
                    .is_some_and(|session| session.id == id)
                {
                    sessions.remove(device_id);
                    true
                } else {
                    false
                }
            }
            Err(_) => false,
        }
    }

    /// Whether the device is connected to this node.
    pub fn is_online(&self, device_id: &str) -> bool {
        self.sessions
            .lock()
            .is_ok_and(|sessions| sessions.contains_key(device_id))
    }

    /// Sends a command and waits up to `timeout` for the answer.
    pub(crate) async fn send_command(
        &self,
        device_id: &str,
        channel: String,
        payload: String,
        timeout: Duration,
    ) -> Result<CommandReply, ErrorCode> {
        let control = self
            .sessions
            .lock()
            .ok()
            .and_then(|sessions| sessions.get(device_id).map(|s| s.control.clone()))
            .ok_or(ErrorCode::DEVICE_OFFLINE)?;
        let (reply, answer) = oneshot::channel();
        control
            .send(DeviceControl::Command {
                channel,
                payload,
                reply,
            })
            .await
            .map_err(|_| ErrorCode::DEVICE_OFFLINE)?;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(reply)) => reply,
            // The connection ended before the device answered.
            Ok(Err(_)) => Err(ErrorCode::DEVICE_OFFLINE),
            Err(_) => Err(ErrorCode::COMMAND_TIMEOUT),
        }
    }
}
