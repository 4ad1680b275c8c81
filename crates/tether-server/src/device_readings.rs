//! What a device says about its readings and itself, besides the readings:
//! `describe_channel`, `describe_command` and `status` (the device endpoint
//! hands them here). Each is checked fully (the decoders check only
//! lengths) and stored; receivers read descriptions over HTTP
//! (`readings_api`). A stored description is also announced on
//! `AppState::descriptions`, for the receiver message `description`, which
//! no endpoint sends yet (`docs/protocol.md` section 2).
//!
//! Limits per session, so a device cannot fill the database with them:
//! [`MAX_DESCRIPTIONS`] channel descriptions and [`MAX_COMMANDS`] commands
//! (more close the session with `too_large`, 4008); each of these messages
//! also takes a token of the device's publish rate limit.

use std::sync::Arc;

use tether_proto::{DescribeChannel, DescribeCommand, ErrorCode, Fields, Status};

use crate::store::{DeclaredCommand, DeviceIdentity, TenantId};
use crate::{AppState, now_ms};

/// Channel descriptions one session may send.
pub(crate) const MAX_DESCRIPTIONS: usize = 64;
/// Commands one session may declare.
pub(crate) const MAX_COMMANDS: usize = 32;

/// A device described a channel: what receivers that asked are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DescriptionUpdate {
    pub(crate) tenant_id: TenantId,
    pub(crate) channel: String,
    pub(crate) device: String,
    /// The canonical JSON array.
    pub(crate) fields: String,
}

/// Why a session ends over a description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) code: ErrorCode,
    pub(crate) reason: &'static str,
}

/// What one device session has described so far.
#[derive(Debug, Default)]
pub(crate) struct Described {
    channels: usize,
    commands: Vec<DeclaredCommand>,
}

impl Described {
    /// `describe_channel`: checks the field list, stores its canonical
    /// text, tells receivers.
    pub(crate) async fn channel(
        &mut self,
        state: &AppState,
        identity: &DeviceIdentity,
        describe: &DescribeChannel<'_>,
    ) -> Result<(), Refused> {
        self.channels += 1;
        if self.channels > MAX_DESCRIPTIONS {
            return Err(Refused {
                code: ErrorCode::TOO_LARGE,
                reason: "too many channel descriptions in one session",
            });
        }
        let fields = describe.fields.parse().map_err(|_| Refused {
            code: ErrorCode::INVALID_FIELD,
            reason: "describe_channel: fields break the rules of docs/protocol.md",
        })?;
        let fields = Fields::new(&fields).to_json_string();
        if let Err(error) = state
            .store
            .describe_channel(
                identity.tenant_id,
                &identity.device_id,
                describe.channel,
                &fields,
                now_ms(),
            )
            .await
        {
            // A description is not a record: the session goes on without it.
            tracing::warn!(%error, device = %identity.device_id, "cannot store a description");
            return Ok(());
        }
        let _ = state.descriptions.send(Arc::new(DescriptionUpdate {
            tenant_id: identity.tenant_id,
            channel: describe.channel.to_owned(),
            device: identity.device_id.clone(),
            fields,
        }));
        Ok(())
    }

    /// `describe_command`: the session's commands so far replace the
    /// device's earlier ones.
    pub(crate) async fn command(
        &mut self,
        state: &AppState,
        identity: &DeviceIdentity,
        describe: &DescribeCommand<'_>,
    ) -> Result<(), Refused> {
        if self.commands.len() >= MAX_COMMANDS {
            return Err(Refused {
                code: ErrorCode::TOO_LARGE,
                reason: "too many commands in one session",
            });
        }
        let example = match (describe.example.check_json(), describe.example.as_str()) {
            (Ok(()), Some(text)) => text.to_owned(),
            _ => {
                return Err(Refused {
                    code: ErrorCode::INVALID_FIELD,
                    reason: "describe_command: example is not one JSON value",
                });
            }
        };
        let command = DeclaredCommand {
            channel: describe.channel.to_owned(),
            label: describe.label.to_owned(),
            example,
        };
        match self
            .commands
            .iter_mut()
            .find(|known| known.channel == command.channel)
        {
            Some(known) => *known = command,
            None => self.commands.push(command),
        }
        if let Err(error) = state
            .store
            .set_commands(&identity.device_id, self.commands.clone())
            .await
        {
            tracing::warn!(%error, device = %identity.device_id, "cannot store declared commands");
        }
        Ok(())
    }

    /// `status`: the signal strength, if it says one.
    pub(crate) async fn status(state: &AppState, identity: &DeviceIdentity, status: &Status) {
        let Some(rssi_dbm) = status.rssi_dbm else {
            return;
        };
        if let Err(error) = state
            .store
            .set_rssi(&identity.device_id, rssi_dbm, now_ms())
            .await
        {
            tracing::warn!(%error, device = %identity.device_id, "cannot store the signal strength");
        }
    }
}
