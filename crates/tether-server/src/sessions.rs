//! The connected devices of this server node, for commands and for closing
//! a session when the same device connects again.
//!
//! Each session registers a bounded command queue and gets a [`Fence`]. A
//! newer session of the same device fences the older one: the fence is a
//! flag with a `Notify`, not a message in a queue, so it cannot be lost when the
//! old session's queue is full or the old session is stuck writing.
//!
//! Commands are bounded three ways: each tenant has at most
//! `max_commands_per_tenant` waiting for their answers (more get
//! `rate_limited`), each device's queue holds [`COMMAND_QUEUE`] of them,
//! and one deadline covers queueing and answer (`command_timeout`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tether_proto::ErrorCode;
use tokio::sync::{Notify, oneshot};

pub use crate::broker::CommandReply;
use crate::broker::{DeviceCommand, LocalDevices};
use crate::limits::{KeyedCounter, KeyedGuard};
use crate::store::{BoxFuture, TenantId};

/// Commands queued for one device connection.
pub(crate) const COMMAND_QUEUE: usize = 64;

/// A command for a device connection to send; the answer goes to `reply`:
/// the device's, or why the session refused the command (`too_large`: its
/// message would be longer than the device's `Hello.max_downlink_len`;
/// `invalid_field`: the device's result breaks the payload rule).
#[derive(Debug)]
pub(crate) struct CommandRequest {
    pub(crate) channel: String,
    pub(crate) payload: String,
    pub(crate) reply: oneshot::Sender<Result<CommandReply, ErrorCode>>,
}

/// The receiving end of a device connection's command queue: a stream, so
/// that its waiter is allocated once, not each time the session waits.
pub(crate) type CommandQueue = flume::r#async::RecvStream<'static, CommandRequest>;

/// Tells a session it must end, and why (set once, never lost). One small
/// allocation per connection: a code and a [`Notify`] (a `watch` channel
/// would hold eight of them).
#[derive(Debug, Clone)]
pub(crate) struct Fence(Arc<FenceState>);

#[derive(Debug, Default)]
struct FenceState {
    /// The reason's code; 0 while the session is not fenced.
    code: AtomicU16,
    notify: Notify,
}

impl FenceState {
    fn fence(&self, code: ErrorCode) {
        self.code.store(code.0.max(1), Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    fn code(&self) -> Option<ErrorCode> {
        match self.code.load(Ordering::SeqCst) {
            0 => None,
            code => Some(ErrorCode(code)),
        }
    }
}

impl Fence {
    /// Resolves (with the reason) once the session is fenced; never if it
    /// is not.
    pub(crate) async fn fenced(&self) -> ErrorCode {
        loop {
            // Registered before the code is read: a fence set after the
            // read wakes this waiter (`Notify::notify_waiters`).
            let notified = self.0.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(code) = self.0.code() {
                return code;
            }
            notified.await;
        }
    }
}

#[derive(Debug)]
struct Session {
    id: u64,
    /// A flume queue: its buffer is allocated when a command comes, so an
    /// idle device's queue is one small allocation.
    commands: flume::Sender<CommandRequest>,
    fence: Arc<FenceState>,
    /// The session's fencing token in the store, once it has one.
    store_fence: Option<u64>,
    /// The newest token another node announced for the device before this
    /// session knew its own.
    announced: u64,
}

impl Session {
    fn replace(&self) {
        self.fence.fence(ErrorCode::SESSION_REPLACED);
    }
}

/// Connected devices by id.
#[derive(Debug)]
pub struct DeviceSessions {
    sessions: Mutex<HashMap<String, Session>>,
    commands_in_flight: KeyedCounter<TenantId>,
    max_commands_per_tenant: usize,
}

impl Default for DeviceSessions {
    fn default() -> Self {
        DeviceSessions::new(crate::Limits::default().max_commands_per_tenant)
    }
}

impl DeviceSessions {
    /// No devices; each tenant may have `max_commands_per_tenant` commands
    /// waiting for their answers.
    pub fn new(max_commands_per_tenant: usize) -> Self {
        DeviceSessions {
            sessions: Mutex::new(HashMap::new()),
            commands_in_flight: KeyedCounter::default(),
            max_commands_per_tenant,
        }
    }

    /// Registers a session: its commands arrive on the returned receiver,
    /// and the [`Fence`] resolves when a newer session of the device
    /// registers. An older session of the device is fenced now.
    pub(crate) fn register(&self, device_id: &str, id: u64) -> (CommandQueue, Fence) {
        let (commands, queue) = flume::bounded(COMMAND_QUEUE);
        let fence = Arc::new(FenceState::default());
        let fenced = Fence(Arc::clone(&fence));
        let old = match self.sessions.lock() {
            Ok(mut sessions) => sessions.insert(
                device_id.to_owned(),
                Session {
                    id,
                    commands,
                    fence,
                    store_fence: None,
                    announced: 0,
                },
            ),
            Err(_) => None,
        };
        if let Some(old) = old {
            old.replace();
        }
        (queue.into_stream(), fenced)
    }

    /// Records the store's fencing token of session `id` (after
    /// `open_session`); fences it at once if another node announced a
    /// newer one meanwhile.
    pub(crate) fn opened(&self, device_id: &str, id: u64, store_fence: u64) {
        if let Ok(mut sessions) = self.sessions.lock()
            && let Some(session) = sessions.get_mut(device_id)
            && session.id == id
        {
            session.store_fence = Some(store_fence);
            if session.announced > store_fence {
                session.replace();
            }
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

    /// Counts a command of `tenant` sent to another node as waiting for its
    /// answer (until the guard drops), or `None` when the tenant has its
    /// maximum waiting.
    pub(crate) fn reserve_command(&self, tenant: TenantId) -> Option<KeyedGuard<TenantId>> {
        self.commands_in_flight
            .try_acquire(tenant, Some(self.max_commands_per_tenant))
    }

    /// Commands of `tenant` waiting for their answers now.
    pub fn commands_in_flight(&self, tenant: TenantId) -> usize {
        self.commands_in_flight.count(&tenant)
    }

    /// Sends a command of `tenant` and waits up to `timeout` (queueing
    /// included) for the answer: `rate_limited` when the tenant has its
    /// maximum waiting, `device_offline`, or `command_timeout`.
    pub(crate) async fn send_command(
        &self,
        tenant: TenantId,
        device_id: &str,
        channel: String,
        payload: String,
        timeout: Duration,
    ) -> Result<CommandReply, ErrorCode> {
        let deadline = tokio::time::Instant::now() + timeout;
        let _in_flight = self
            .commands_in_flight
            .try_acquire(tenant, Some(self.max_commands_per_tenant))
            .ok_or(ErrorCode::RATE_LIMITED)?;
        let commands = self
            .sessions
            .lock()
            .ok()
            .and_then(|sessions| sessions.get(device_id).map(|s| s.commands.clone()))
            .ok_or(ErrorCode::DEVICE_OFFLINE)?;
        let (reply, answer) = oneshot::channel();
        let request = CommandRequest {
            channel,
            payload,
            reply,
        };
        match tokio::time::timeout_at(deadline, commands.send_async(request)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(ErrorCode::DEVICE_OFFLINE),
            // The device's queue stayed full: it is not taking commands.
            Err(_) => return Err(ErrorCode::COMMAND_TIMEOUT),
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(reply)) => reply,
            // The connection ended before the device answered.
            Ok(Err(_)) => Err(ErrorCode::DEVICE_OFFLINE),
            Err(_) => Err(ErrorCode::COMMAND_TIMEOUT),
        }
    }
}

impl LocalDevices for DeviceSessions {
    fn fence_older(&self, device_id: &str, fence: u64) {
        let Ok(mut sessions) = self.sessions.lock() else {
            return;
        };
        if let Some(session) = sessions.get_mut(device_id) {
            match session.store_fence {
                Some(own) if own < fence => session.replace(),
                Some(_) => {}
                None => session.announced = session.announced.max(fence),
            }
        }
    }

    fn command(&self, command: DeviceCommand) -> BoxFuture<'_, Result<CommandReply, ErrorCode>> {
        Box::pin(async move {
            self.send_command(
                command.tenant_id,
                &command.device_id,
                command.channel,
                command.payload,
                command.timeout,
            )
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_newer_session_fences_the_older_even_with_a_full_queue() {
        let sessions = DeviceSessions::new(1000);
        let (_old_queue, old_fence) = sessions.register("d", 1);
        // Fill the old session's queue: nobody reads it.
        let mut waiting = Vec::new();
        for _ in 0..COMMAND_QUEUE {
            let (reply, answer) = oneshot::channel();
            let commands = sessions
                .sessions
                .lock()
                .ok()
                .and_then(|s| s.get("d").map(|s| s.commands.clone()));
            if let Some(commands) = commands {
                assert!(
                    commands
                        .try_send(CommandRequest {
                            channel: "c".into(),
                            payload: "1".into(),
                            reply,
                        })
                        .is_ok()
                );
            }
            waiting.push(answer);
        }
        let (_new_queue, new_fence) = sessions.register("d", 2);
        let fenced = tokio::time::timeout(Duration::from_millis(100), old_fence.fenced()).await;
        assert_eq!(fenced.ok(), Some(ErrorCode::SESSION_REPLACED));
        // The old session's exit does not take the device offline.
        assert!(!sessions.unregister("d", 1));
        assert!(sessions.is_online("d"));
        // The newer one is not fenced.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), new_fence.fenced())
                .await
                .is_err()
        );
        assert!(sessions.unregister("d", 2));
        assert!(!sessions.is_online("d"));
    }

    #[tokio::test]
    async fn a_session_waiting_on_its_fence_is_woken() {
        let sessions = DeviceSessions::new(1000);
        let (_queue, fence) = sessions.register("d", 1);
        let waiting = tokio::spawn(async move { fence.fenced().await });
        // The waiter is parked on the fence before the newer session comes.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        let (_new_queue, _new_fence) = sessions.register("d", 2);
        let fenced = tokio::time::timeout(Duration::from_secs(2), waiting).await;
        assert_eq!(
            fenced.ok().and_then(Result::ok),
            Some(ErrorCode::SESSION_REPLACED)
        );
    }

    #[tokio::test]
    async fn another_nodes_newer_session_fences_the_local_one() {
        let sessions = DeviceSessions::new(10);
        let (_queue, fence) = sessions.register("d", 1);
        sessions.opened("d", 1, 7);
        // An older or equal token elsewhere changes nothing.
        sessions.fence_older("d", 6);
        sessions.fence_older("d", 7);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), fence.fenced())
                .await
                .is_err()
        );
        sessions.fence_older("d", 8);
        let fenced = tokio::time::timeout(Duration::from_millis(100), fence.fenced()).await;
        assert_eq!(fenced.ok(), Some(ErrorCode::SESSION_REPLACED));
        // A notice that overtakes the local session's own token.
        let (_queue, early) = sessions.register("e", 2);
        sessions.fence_older("e", 5);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), early.fenced())
                .await
                .is_err()
        );
        sessions.opened("e", 2, 4);
        let fenced = tokio::time::timeout(Duration::from_millis(100), early.fenced()).await;
        assert_eq!(fenced.ok(), Some(ErrorCode::SESSION_REPLACED));
    }

    #[tokio::test]
    async fn queueing_times_out_and_tenants_are_bounded() {
        let sessions = std::sync::Arc::new(DeviceSessions::new(COMMAND_QUEUE + 1));
        let (_queue, _fence) = sessions.register("d", 1);
        // Nobody reads the queue: the first COMMAND_QUEUE commands are
        // queued, the next one waits for room; all time out.
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..=COMMAND_QUEUE {
            let sessions = std::sync::Arc::clone(&sessions);
            tasks.spawn(async move {
                sessions
                    .send_command(7, "d", "c".into(), "1".into(), Duration::from_millis(300))
                    .await
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(sessions.commands_in_flight(7), COMMAND_QUEUE + 1);
        // The tenant is at its limit; another tenant is not.
        assert_eq!(
            sessions
                .send_command(7, "d", "c".into(), "1".into(), Duration::from_millis(300))
                .await,
            Err(ErrorCode::RATE_LIMITED)
        );
        assert_eq!(
            sessions
                .send_command(8, "x", "c".into(), "1".into(), Duration::from_millis(300))
                .await,
            Err(ErrorCode::DEVICE_OFFLINE)
        );
        while let Some(result) = tasks.join_next().await {
            assert_eq!(result.ok(), Some(Err(ErrorCode::COMMAND_TIMEOUT)));
        }
        assert_eq!(sessions.commands_in_flight(7), 0);
    }
}
