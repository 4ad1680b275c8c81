//! `--demo`: a handful of simulated devices, each running tether-core's
//! device client (the same no_std code as the firmware) through
//! tether-host's tokio connector, publishing readings to the server so data
//! flows at once. They describe their readings (temperature in °C from
//! hundredths, humidity in %, a counter) and their `led` command, report a
//! made-up signal strength, and answer `led` commands.

use core::time::Duration;
use std::path::Path;

use serde::Serialize;
use tether_core::client::{self, ClientConfig, CommandResult, Resources};
use tether_host::board::TokioBoard;
use tether_proto::{
    Command, CommandStatus, DescribeChannel, DescribeCommand, FieldDescription, Fields,
};

use crate::store::{Admin, StoreError};

/// How many demo devices run.
pub const DEMO_DEVICES: usize = 5;
/// The channel they publish on.
pub const DEMO_CHANNEL: &str = "demo/readings";

/// What the members of a [`Reading`] mean, told the server once per
/// session: dashboards draw temperature in °C, humidity in %.
pub const READINGS: DescribeChannel<'static> = DescribeChannel::new(
    DEMO_CHANNEL,
    Fields::new(&[
        FieldDescription::new("centi_celsius")
            .with_label("Temperature")
            .with_unit("°C")
            .with_scale(0.01)
            .with_decimals(2),
        FieldDescription::new("humidity")
            .with_label("Humidity")
            .with_unit("%")
            .with_decimals(0)
            .with_range(0.0, 100.0),
        FieldDescription::new("counter").with_label("Counter"),
    ]),
);

/// The command a demo device takes.
pub const LED: DescribeCommand<'static> = DescribeCommand::new("led")
    .with_label("LED on or off")
    .with_example("{\"on\":true}");

/// What a demo device publishes every second.
#[derive(Debug, Serialize)]
struct Reading {
    counter: u32,
    /// Hundredths of a degree Celsius (integers, as on a chip without FPU).
    centi_celsius: i32,
    /// Relative humidity, percent.
    humidity: u8,
    led: bool,
}

/// Registers `demo-1` … `demo-N` in tenant `default` (creating it if
/// needed), or gives existing ones fresh tokens, and returns `(id, token)`.
pub fn provision(database: &Path, count: usize) -> Result<Vec<(String, String)>, StoreError> {
    let admin = Admin::open(database)?;
    let tenant = match admin.tenant_id("default") {
        Ok(tenant) => tenant,
        Err(StoreError::NotFound) => admin.add_tenant("default")?,
        Err(error) => return Err(error),
    };
    (1..=count)
        .map(|number| {
            let id = format!("demo-{number}");
            match admin.add_device(Some(tenant), Some(&id), false) {
                Ok(device) => Ok((id, device.token)),
                Err(StoreError::AlreadyExists) => {
                    let token = admin.rotate_token(&id)?;
                    Ok((id, token))
                }
                Err(error) => Err(error),
            }
        })
        .collect()
}

/// Runs the devices on their own thread (the client is single-threaded,
/// like on a chip), dialing `url` (e.g. `ws://127.0.0.1:8080/v1/device`).
pub fn spawn(url: String, devices: Vec<(String, String)>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("tether-demo".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    tracing::error!(%error, "demo devices cannot start");
                    return;
                }
            };
            let local = tokio::task::LocalSet::new();
            local.block_on(&runtime, async move {
                for (number, (id, token)) in devices.into_iter().enumerate() {
                    let url = url.clone();
                    tokio::task::spawn_local(async move {
                        if let Err(error) = device(number, &url, &id, &token).await {
                            tracing::error!(device = %id, %error, "demo device stopped");
                        }
                    });
                }
                core::future::pending::<()>().await;
            });
        })
        .map(|_| ())
}

async fn device(number: usize, url: &str, id: &str, token: &str) -> Result<(), String> {
    let authorization = format!("Bearer {token}");
    let config = ClientConfig::new(url, id, "demo-1.0.0")
        .with_authorization(&authorization)
        .with_descriptions(&[READINGS])
        .with_commands(&[LED]);
    let mut resources: Resources<TokioBoard> = Resources::new();
    let (client, mut runner) = client::new(TokioBoard::new(), config, &mut resources)
        .map_err(|error| error.to_string())?;
    let led = core::cell::Cell::new(false);
    let seed = u32::try_from(number).unwrap_or(0);
    let publish = async {
        // Devices of a real fleet do not boot in the same millisecond.
        tokio::time::sleep(Duration::from_millis(u64::from(seed) * 150)).await;
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for counter in 1u32.. {
            ticker.tick().await;
            // A made-up WiFi signal, as a board backend would report it.
            let rssi = -52
                - i16::try_from(seed % 6).unwrap_or(0) * 6
                - i16::try_from(counter % 5).unwrap_or(0);
            client.set_rssi(rssi);
            let wave =
                i32::try_from((counter.wrapping_mul(7).wrapping_add(seed * 13)) % 120).unwrap_or(0);
            let reading = Reading {
                counter,
                centi_celsius: 2_000 + i32::try_from(seed).unwrap_or(0) * 150 + (wave - 60) * 3,
                humidity: u8::try_from(40 + (counter + seed * 5) % 20).unwrap_or(50),
                led: led.get(),
            };
            // A full outbox (server away) drops the oldest, never blocks.
            let _ = client.publish(DEMO_CHANNEL, &reading).await;
        }
    };
    let handler = |command: &Command<'_>, _result: &mut CommandResult<'_>| -> CommandStatus {
        if command.channel != "led" {
            return CommandStatus::Unsupported;
        }
        match command.payload.as_str() {
            Some("true") | Some("{\"on\":true}") => {
                led.set(true);
                CommandStatus::Ok
            }
            Some("false") | Some("{\"on\":false}") => {
                led.set(false);
                CommandStatus::Ok
            }
            _ => CommandStatus::Rejected,
        }
    };
    tokio::select! {
        stopped = runner.run(handler) => {
            return Err(format!("the server refused the device: {}", stopped.0));
        }
        () = publish => {}
    }
    Ok(())
}
