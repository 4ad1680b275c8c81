//! What a device says about its readings and itself, besides the readings:
//! `describe_channel`, `describe_command` and `status` (the device endpoint
//! hands them here). Each is checked fully (the decoders check only
//! lengths) and stored. Receivers read descriptions over HTTP
//! (`readings_api`) or, when their `subscribe` asks (`"describe":true`),
//! as `description` messages ([`forward_descriptions`]): the stored ones
//! after `subscribed`, then each new one (published through the broker,
//! so across nodes too: `Broker::publish_description`) as the device
//! sends it.
//!
//! Limits per session, so a device cannot fill the database with them:
//! [`MAX_DESCRIPTIONS`] channel descriptions and [`MAX_COMMANDS`] commands
//! (more close the session with `too_large`, 4008); each of these messages
//! also takes a token of the device's publish rate limit.

use std::sync::Arc;

use axum::extract::ws::Message;
use tether_proto::{
    DescribeChannel, DescribeCommand, Description, ErrorCode, Fields, ServerToReceiver, Status,
};
use tokio::sync::{broadcast, mpsc};

use crate::broker::ChannelDescribed;
use crate::store::{DeclaredCommand, DeviceIdentity, TenantId};
use crate::{AppState, now_ms};

/// Channel descriptions one session may send.
pub(crate) const MAX_DESCRIPTIONS: usize = 64;
/// Commands one session may declare.
pub(crate) const MAX_COMMANDS: usize = 32;

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
        state.broker.publish_description(Arc::new(ChannelDescribed {
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

/// The `description` frame of one device's description of `channel`.
fn description_frame(channel: &str, device: &str, fields: &str) -> Option<Message> {
    let frame = ServerToReceiver::Description(Description {
        channel,
        device,
        fields: Fields::from_json(fields.as_bytes()),
    })
    .to_json()
    .ok()?;
    Some(Message::Text(frame.into()))
}

/// Sends a receiver the stored descriptions of `channel` (of `tenant_id`),
/// then every new one from `updates` (joined before the store was read, so
/// none is missed; one that arrives twice replaces itself), until the
/// receiver is gone. Missed notices (`Lagged`, or a cluster node's
/// reconnection to NATS: [`Broker::description_resyncs`]) are made up
/// from the store.
///
/// [`Broker::description_resyncs`]: crate::broker::Broker::description_resyncs
pub(crate) async fn forward_descriptions(
    state: Arc<AppState>,
    tenant_id: TenantId,
    channel: String,
    mut updates: broadcast::Receiver<Arc<ChannelDescribed>>,
    outbox: mpsc::Sender<Message>,
) {
    // Joined before the store is read, as `updates`.
    let mut resyncs = state.broker.description_resyncs();
    let mut from_store = true;
    loop {
        if from_store {
            from_store = false;
            let stored = match state.store.channel_descriptions(tenant_id, &channel).await {
                Ok(stored) => stored,
                Err(error) => {
                    tracing::warn!(%error, channel, "cannot read descriptions");
                    Vec::new()
                }
            };
            for description in stored {
                let frame = description_frame(&channel, &description.device, &description.fields);
                if let Some(frame) = frame
                    && outbox.send(frame).await.is_err()
                {
                    return;
                }
            }
        }
        let update = tokio::select! {
            update = updates.recv() => update,
            () = resynced(&mut resyncs) => {
                from_store = true;
                continue;
            }
        };
        match update {
            Ok(update) if update.tenant_id == tenant_id && update.channel == channel => {
                let frame = description_frame(&channel, &update.device, &update.fields);
                if let Some(frame) = frame
                    && outbox.send(frame).await.is_err()
                {
                    return;
                }
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => from_store = true,
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// The next change of `resyncs`; never, without one (or once its sender
/// is gone).
async fn resynced(resyncs: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    if let Some(receiver) = resyncs
        && receiver.changed().await.is_ok()
    {
        return;
    }
    std::future::pending::<()>().await;
}
