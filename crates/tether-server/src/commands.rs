//! A receiver key's command to a device, the same for the HTTP API and the
//! receiver WebSocket: what the key may do, whether the device is the
//! key's tenant's, then [`DeviceSessions::send_command`](crate::DeviceSessions)
//! (bounded per tenant, one deadline for queueing and answer).

use tether_proto::ErrorCode;

use crate::broker::DeviceCommand;
use crate::store::KeyIdentity;
use crate::{AppState, CommandReply};

/// Sends a command for a receiver key: checks what the key may do, that
/// the device is the key's tenant's, and that it is online.
pub(crate) async fn command(
    state: &AppState,
    identity: &KeyIdentity,
    device: &str,
    channel: String,
    payload: String,
) -> Result<CommandReply, (ErrorCode, &'static str)> {
    if !identity.can_command {
        return Err((ErrorCode::FORBIDDEN, "this key is read-only"));
    }
    if !identity.channels.allows(&channel) {
        return Err((ErrorCode::FORBIDDEN, "this key may not use that channel"));
    }
    match state.store.device_tenant(device).await {
        Ok(Some(tenant)) if tenant == identity.tenant_id => {}
        // Another tenant's device looks exactly like a missing one.
        Ok(_) => return Err((ErrorCode::UNKNOWN_DEVICE, "no such device")),
        Err(_) => return Err((ErrorCode::INTERNAL, "store unavailable")),
    }
    let timeout = state.config.limits.command_timeout;
    let answer = if state.devices.is_online(device) {
        state
            .devices
            .send_command(identity.tenant_id, device, channel, payload, timeout)
            .await
    } else {
        // Not connected here: another node may have it. The tenant's
        // commands waiting here count against its limit, as local ones do.
        let Some(_in_flight) = state.devices.reserve_command(identity.tenant_id) else {
            state.metrics.rejected("commands_per_tenant");
            return Err((
                ErrorCode::RATE_LIMITED,
                "too many commands of this tenant are waiting for their answers",
            ));
        };
        state
            .broker
            .remote_command(DeviceCommand {
                tenant_id: identity.tenant_id,
                device_id: device.to_owned(),
                channel,
                payload,
                timeout,
            })
            .await
    };
    answer.map_err(|code| {
        let message = match code {
            ErrorCode::COMMAND_TIMEOUT => "the device did not answer in time",
            ErrorCode::RATE_LIMITED => {
                state.metrics.rejected("commands_per_tenant");
                "too many commands of this tenant are waiting for their answers"
            }
            ErrorCode::TOO_LARGE => {
                "the command is longer than the device can receive (its Hello.max_downlink_len); it was not sent"
            }
            ErrorCode::INVALID_FIELD => "the device's result is not valid JSON",
            ErrorCode::DEVICE_OFFLINE => "the device is offline",
            _ => "the command could not be sent",
        };
        (code, message)
    })
}
