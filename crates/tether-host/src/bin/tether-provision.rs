//! `tether-provision`: writes a device's factory provisioning record, and
//! prints its label (a QR code that opens the dashboard's claim page with
//! the claim code filled in, and the code and device id in text).
//!
//! ```text
//! tether-provision --server-url wss://relay.example.com/v1/device \
//!     --device-id sensor-7 --token "$TOKEN" --pairing-code K7-42 \
//!     [--ssid Home --passphrase 'correct horse'] \
//!     --out sensor-7.img --esp32-partition \
//!     [--claim-code 7M2K-9QXD-4HBT --label sensor-7-label.svg]
//! espflash write-bin 0xe000 sensor-7.img
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use clap::Parser;
use tether_core::provisioning::record::{ProvisioningRecord, RECORD_MAX_LEN};
use tether_host::label;
use tether_host::portal::{ESP32_PARTITION_OFFSET, esp32_partition_image};

/// Write a tether provisioning record (server, device identity, optional
/// Wi-Fi and pairing code) for flashing at the factory, and/or print the
/// device's label (QR code to claim it, SVG).
#[derive(Debug, Parser)]
#[command(name = "tether-provision", version)]
struct Arguments {
    /// Relay server URL (ws:// or wss://).
    #[arg(long, env = "TETHER_SERVER_URL")]
    server_url: String,
    /// Device id, as registered with `tether-server device add`.
    #[arg(long)]
    device_id: String,
    /// Device token from `tether-server device add` (or TETHER_DEVICE_TOKEN,
    /// which keeps it out of the shell history). Needed with --out.
    #[arg(long, env = "TETHER_DEVICE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Wi-Fi network name (omit to let the customer choose it in the portal).
    #[arg(long)]
    ssid: Option<String>,
    /// Wi-Fi passphrase, 8 to 63 characters (omit for an open network).
    #[arg(
        long,
        requires = "ssid",
        hide_env_values = true,
        env = "TETHER_WIFI_PASSPHRASE"
    )]
    passphrase: Option<String>,
    /// Pairing code printed on the device label; the portal asks for it.
    #[arg(long)]
    pairing_code: Option<String>,
    /// Output file of the record.
    #[arg(long, required_unless_present = "label")]
    out: Option<PathBuf>,
    /// Write a whole ESP32 `tether` partition image (record padded with
    /// 0xFF to 8 KiB, both slots) for `espflash write-bin 0xe000 FILE`.
    #[arg(long, requires = "out")]
    esp32_partition: bool,
    /// Claim code from `tether-server device add --claimable`, printed on
    /// the label and in its QR code.
    #[arg(long, requires = "label")]
    claim_code: Option<String>,
    /// Write the device's label here (SVG): a QR code that opens the
    /// dashboard's claim page with the code filled in, the claim code and
    /// the device id in text.
    #[arg(long, requires = "claim_code")]
    label: Option<PathBuf>,
    /// The dashboard's address for the QR code (default: the server URL's
    /// host, `wss://` as `https://`).
    #[arg(long, requires = "label")]
    dashboard_url: Option<String>,
}

fn run(arguments: Arguments) -> anyhow::Result<()> {
    if let (Some(label), Some(code)) = (&arguments.label, &arguments.claim_code) {
        write_label(&arguments, label, code)?;
    }
    let Some(out) = &arguments.out else {
        return Ok(());
    };
    let token = arguments
        .token
        .as_deref()
        .ok_or_else(|| anyhow!("--out needs --token (or TETHER_DEVICE_TOKEN)"))?;
    let field = |e| anyhow!("{e}");
    let mut record = ProvisioningRecord::new(&arguments.server_url, &arguments.device_id, token)
        .map_err(field)?;
    if let Some(ssid) = &arguments.ssid {
        record = record
            .with_wifi(ssid, arguments.passphrase.as_deref().unwrap_or(""))
            .map_err(field)?;
    }
    if let Some(code) = &arguments.pairing_code {
        record = record.with_pairing_code(code).map_err(field)?;
    }
    let bytes = if arguments.esp32_partition {
        esp32_partition_image(&record).map_err(|e| anyhow!("{e}"))?
    } else {
        let mut buffer = [0u8; RECORD_MAX_LEN];
        let n = record.encode(&mut buffer).map_err(|e| anyhow!("{e}"))?;
        buffer.get(..n).unwrap_or(&[]).to_vec()
    };
    std::fs::write(out, &bytes).with_context(|| format!("writing {}", out.display()))?;
    println!(
        "wrote {} ({} bytes, record {} bytes, device {})",
        out.display(),
        bytes.len(),
        record.encoded_len(),
        record.device_id.as_str()
    );
    if arguments.esp32_partition {
        println!(
            "flash it with: espflash write-bin {ESP32_PARTITION_OFFSET:#x} {}",
            out.display()
        );
    }
    Ok(())
}

/// Writes the device's label (SVG) and says what its QR code opens.
fn write_label(arguments: &Arguments, path: &PathBuf, claim_code: &str) -> anyhow::Result<()> {
    let dashboard = match &arguments.dashboard_url {
        Some(url) => url.clone(),
        None => label::dashboard_url(&arguments.server_url)?,
    };
    let url = label::claim_url(&dashboard, claim_code)?;
    let svg = label::label_svg(&arguments.device_id, claim_code, &url)?;
    std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))?;
    println!(
        "wrote label {} (device {}, claim code {claim_code}); its QR code opens {url}",
        path.display(),
        arguments.device_id
    );
    Ok(())
}

fn main() -> ExitCode {
    match run(Arguments::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tether-provision: {e:#}");
            ExitCode::FAILURE
        }
    }
}
