//! A tether device on Linux whose Wi-Fi link is an ESP8266 running
//! Espressif's ESP-AT firmware on a USB-serial port: the same no_std
//! `tether-core` session and `tether-esp8266` driver a microcontroller
//! runs, on a PC, a Raspberry Pi or any Linux board.
//!
//! ```text
//!  stdin lines ──publish──► tether-core Client ─► Runner ─► tether-esp8266 ─► /dev/ttyUSB0
//!  stdout ◄── JSON events (state, acks, commands)                 │ AT commands, 115200 8N1
//!                                                       ESP8266 (ESP-AT 2.2) ──Wi-Fi──► relay
//! ```
//!
//! Each line read on standard input is published on `--channel` (as JSON
//! if it parses, else as a JSON string); at the end of the input the
//! gateway waits until every message is acknowledged and exits. It
//! answers the commands `echo` (the payload back) and `uptime` (the
//! host's, in seconds); anything else is `unsupported`. What happens is
//! printed on standard output, one JSON object a line:
//!
//! ```text
//! {"event":"state","state":"connected"}
//! {"event":"queued","seq":1}
//! {"event":"acknowledged","total":1}
//! {"event":"command","channel":"echo","payload":{"x":1},"status":"ok"}
//! {"event":"drained"}
//! ```
//!
//! Logs (`RUST_LOG=debug` shows every AT exchange's outcome) go to
//! standard error.
//!
//! ```text
//! esp8266-linux-gateway --port /dev/ttyUSB0 --baud 115200 \
//!     --url wss://relay.example.com/v1/device --device-id gw-1 \
//!     --ssid Home            # TETHER_DEVICE_TOKEN and TETHER_WIFI_PASSPHRASE from the environment
//! ```

use core::time::Duration as StdDuration;
use std::io::Write as _;
use std::process::ExitCode;

use anyhow::{Context as _, anyhow, bail};
use clap::Parser;
use embassy_sync::blocking_mutex::raw::{NoopRawMutex, RawMutex};
use embedded_io_adapters::tokio_1::FromTokio;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};
use tether_core::board::{Board, Parts};
use tether_core::client::{
    self, Client, ClientConfig, CommandResult, DEFAULT_PAYLOAD_CAPACITY, NeedsProvisioning,
    Resources,
};
use tether_core::outbox::RamOutbox;
use tether_core::session::{ConnectionState, SessionConfig};
use tether_core::time::Duration;
use tether_esp8266::{Config, Esp8266, ModemBuffers, TlsVerification};
use tether_host::clock::TokioClock;
use tether_proto::{Command, CommandStatus};
use tokio::io::AsyncBufReadExt as _;
use tokio_serial::SerialPortBuilderExt as _;

/// Messages waiting for acknowledgement are kept in this many bytes of RAM.
const OUTBOX_BYTES: usize = 16 * 1024;

/// Command-line settings. Secrets can come from the environment instead.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The serial port the ESP8266 is on.
    #[arg(long, default_value = "/dev/ttyUSB0")]
    port: String,
    /// Its baud rate (ESP-AT's default is 115200; `AT+UART_DEF` changes it).
    #[arg(long, default_value_t = 115_200)]
    baud: u32,
    /// The relay's device endpoint, `ws://` or `wss://` (TLS in the modem).
    #[arg(long, env = "TETHER_URL")]
    url: String,
    /// This device's id, as registered on the relay.
    #[arg(long, env = "TETHER_DEVICE_ID")]
    device_id: String,
    /// The device token the relay issued.
    #[arg(long, env = "TETHER_DEVICE_TOKEN", hide_env_values = true)]
    token: String,
    /// The Wi-Fi network to join (default: whatever the modem saved).
    #[arg(long, env = "TETHER_WIFI_SSID", requires = "passphrase")]
    ssid: Option<String>,
    /// Its passphrase.
    #[arg(long, env = "TETHER_WIFI_PASSPHRASE", hide_env_values = true)]
    passphrase: Option<String>,
    /// Skip the server check on `wss://` (bench use only): by default the
    /// modem verifies the relay against the CA flashed into it.
    #[arg(long)]
    insecure_tls: bool,
    /// The channel stdin lines are published on.
    #[arg(long, default_value = "gateway/lines")]
    channel: String,
    /// Longest wait for the last acknowledgements at the end of the input.
    #[arg(long, default_value_t = 60)]
    drain_timeout_secs: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("esp8266-linux-gateway: cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("esp8266-linux-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> anyhow::Result<()> {
    let serial = tokio_serial::new(&args.port, args.baud)
        .data_bits(tokio_serial::DataBits::Eight)
        .parity(tokio_serial::Parity::None)
        .stop_bits(tokio_serial::StopBits::One)
        .flow_control(tokio_serial::FlowControl::None)
        .open_native_async()
        .with_context(|| format!("cannot open {}", args.port))?;
    let clock = TokioClock::new();

    let mut modem_config = Config::new();
    if let (Some(ssid), Some(passphrase)) = (&args.ssid, &args.passphrase) {
        modem_config = modem_config.with_wifi(ssid, passphrase);
    }
    if args.insecure_tls {
        modem_config = modem_config.with_tls(TlsVerification::Insecure);
    }
    let mut modem_buffers = ModemBuffers::<256, 1024, 1024>::new();
    let modem = Esp8266::new(
        FromTokio::new(serial),
        clock,
        modem_config,
        &mut modem_buffers,
    );
    // The ESP8266 is the connector; the PC brings the clock, the random
    // source and the outbox.
    let board = Parts {
        connector: modem,
        clock,
        rng: StdRng::from_os_rng(),
        outbox: RamOutbox::<OUTBOX_BYTES>::new(),
    };

    let authorization = format!("Bearer {}", args.token);
    // A TLS handshake in the modem takes seconds.
    let session = SessionConfig::new().with_connect_timeout(Duration::from_secs(40));
    let config = ClientConfig::new(&args.url, &args.device_id, env!("CARGO_PKG_VERSION"))
        .with_authorization(&authorization)
        .with_session(session);
    let mut resources: Resources<_, NoopRawMutex, DEFAULT_PAYLOAD_CAPACITY, 2048, 1024, 1024> =
        Resources::new();
    let (client, mut runner) =
        client::new(board, config, &mut resources).map_err(|e| anyhow!("invalid settings: {e}"))?;

    tokio::select! {
        NeedsProvisioning(reason) = runner.run(handle_command) => {
            bail!("the relay refused this device for good ({reason:?}): check the token and device id")
        }
        () = report(client) => unreachable!("reporting never ends"),
        result = publish_input(client, args) => result,
    }
}

/// Publishes every line of standard input, then waits for the last
/// acknowledgement.
async fn publish_input<B: Board, M: RawMutex, const PAYLOAD: usize>(
    client: &Client<B, M, PAYLOAD>,
    args: &Args,
) -> anyhow::Result<()> {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await.context("reading stdin")? {
        if line.trim().is_empty() {
            continue;
        }
        let value = serde_json::from_str::<Value>(&line).unwrap_or(Value::String(line));
        match client.publish(&args.channel, &value).await {
            Ok(seq) => event(&json!({"event": "queued", "seq": seq})),
            Err(e) => event(&json!({"event": "refused", "error": format!("{e:?}")})),
        }
    }
    let deadline = tokio::time::Instant::now() + StdDuration::from_secs(args.drain_timeout_secs);
    while client.stats().outbox_len > 0 {
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "{} messages still unacknowledged after {} s",
                client.stats().outbox_len,
                args.drain_timeout_secs
            );
        }
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    event(&json!({"event": "drained"}));
    Ok(())
}

/// Prints state changes, acknowledgements and link errors as they happen.
async fn report<B: Board, M: RawMutex, const PAYLOAD: usize>(client: &Client<B, M, PAYLOAD>) {
    let mut state = None;
    let mut acknowledged = 0;
    let mut failures = 0;
    loop {
        let now = state_name(client.state());
        if state != Some(now) {
            state = Some(now);
            event(&json!({"event": "state", "state": now}));
        }
        let stats = client.stats().session;
        if stats.acknowledged != acknowledged {
            acknowledged = stats.acknowledged;
            event(&json!({"event": "acknowledged", "total": acknowledged}));
        }
        if stats.link_failures != failures {
            failures = stats.link_failures;
            let error = client.last_error().map(|e| format!("{e:?}"));
            event(&json!({"event": "link_failed", "error": error, "failures": failures}));
        }
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
}

fn state_name(state: ConnectionState) -> &'static str {
    match state {
        ConnectionState::Connecting => "connecting",
        ConnectionState::Handshaking => "handshaking",
        ConnectionState::Connected => "connected",
        ConnectionState::BackingOff { .. } => "backing_off",
        ConnectionState::GaveUp(_) => "gave_up",
        ConnectionState::NeedsProvisioning(_) => "needs_provisioning",
        _ => "unknown",
    }
}

/// `echo` answers its payload, `uptime` the host's uptime in seconds.
fn handle_command(command: &Command<'_>, result: &mut CommandResult<'_>) -> CommandStatus {
    let payload: Value = serde_json::from_slice(command.payload.as_bytes()).unwrap_or(Value::Null);
    let status = match command.channel {
        "echo" => set(result, &payload),
        "uptime" => match host_uptime() {
            Some(seconds) => set(result, &json!({ "seconds": seconds })),
            None => CommandStatus::Failed,
        },
        _ => CommandStatus::Unsupported,
    };
    event(&json!({
        "event": "command",
        "channel": command.channel,
        "payload": payload,
        "status": format!("{status:?}").to_lowercase(),
    }));
    status
}

fn set(result: &mut CommandResult<'_>, value: &Value) -> CommandStatus {
    match result.set(value) {
        Ok(()) => CommandStatus::Ok,
        Err(_) => CommandStatus::Failed,
    }
}

fn host_uptime() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    let seconds: f64 = text.split_whitespace().next()?.parse().ok()?;
    // Whole seconds; `as` saturates, and uptimes are far below u64::MAX.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Some(seconds as u64)
}

/// One event line on stdout. A closed stdout (the reader went away) is not
/// worth dying for: the session goes on.
fn event(value: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}
