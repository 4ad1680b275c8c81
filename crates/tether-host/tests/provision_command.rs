//! `tether-provision` writes records the core decodes; a corrupted record
//! is detected and the state machine falls back to the portal, which then
//! repairs the file.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use tether_core::flash::RamFlash;
use tether_core::provisioning::record::{DecodeError, ProvisioningRecord};
use tether_core::provisioning::state::{
    Action, PortalReason, Provisioning, ProvisioningConfig, State,
};
use tether_core::provisioning::store::{ConfigStore, NorFlashStore, StoreError};
use tether_host::portal::{ESP32_PARTITION_OFFSET, ESP32_PARTITION_SIZE, FileStore};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tether-provision-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

fn provision(args: &[&str], out: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tether-provision"))
        .args(args)
        .arg("--out")
        .arg(out)
        .env_remove("TETHER_DEVICE_TOKEN")
        .env_remove("TETHER_SERVER_URL")
        .env_remove("TETHER_WIFI_PASSPHRASE")
        .output()
        .expect("run tether-provision")
}

const ARGS: &[&str] = &[
    "--server-url",
    "wss://relay.example.com/device",
    "--device-id",
    "sensor-7",
    "--token",
    "tok_3f9a",
    "--ssid",
    "Factory Wi-Fi",
    "--passphrase",
    "factory-pass",
    "--pairing-code",
    "K7-42",
];

#[test]
fn record_round_trips_through_the_command_and_the_core() {
    let out = scratch("record.bin");
    let result = provision(ARGS, &out);
    assert!(result.status.success(), "{result:?}");
    let bytes = std::fs::read(&out).expect("record written");
    let record = ProvisioningRecord::decode(&bytes).expect("decodes");
    assert_eq!(bytes.len(), record.encoded_len());
    let expected =
        ProvisioningRecord::new("wss://relay.example.com/device", "sensor-7", "tok_3f9a")
            .and_then(|r| r.with_wifi("Factory Wi-Fi", "factory-pass"))
            .and_then(|r| r.with_pairing_code("K7-42"))
            .expect("valid");
    assert_eq!(record, expected);
    assert_eq!(FileStore::new(&out).load(), Ok(Some(expected)));
}

#[test]
fn esp32_partition_image_holds_the_record_where_the_firmware_store_finds_it() {
    let out = scratch("record.img");
    let result = provision(&[ARGS, &["--esp32-partition"]].concat(), &out);
    assert!(result.status.success(), "{result:?}");
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        stdout.contains(&format!("espflash write-bin {ESP32_PARTITION_OFFSET:#x}")),
        "{stdout}"
    );
    let image = std::fs::read(&out).expect("image");
    assert_eq!(image.len(), ESP32_PARTITION_SIZE);
    let (record, used) = ProvisioningRecord::decode_with_len(&image).expect("decodes");
    assert_eq!(record.device_id.as_str(), "sensor-7");
    assert!(
        image[used..].iter().all(|b| *b == 0xff),
        "rest is erased flash"
    );
    // The firmware's store, over a flash with the image at the partition
    // offset (as `espflash write-bin` puts it), finds the record.
    const FLASH: usize = 0x10000;
    let mut flash = Box::new(RamFlash::<FLASH>::new());
    let offset = usize::try_from(ESP32_PARTITION_OFFSET).unwrap();
    assert!(offset + NorFlashStore::<RamFlash<FLASH>>::region_len() <= FLASH);
    assert_eq!(
        NorFlashStore::<RamFlash<FLASH>>::region_len(),
        ESP32_PARTITION_SIZE
    );
    flash.as_bytes_mut()[offset..offset + image.len()].copy_from_slice(&image);
    let mut store = NorFlashStore::new(&mut *flash, ESP32_PARTITION_OFFSET);
    assert_eq!(store.load(), Ok(Some(record.clone())));
    // A token rotation on the device keeps it findable, in the other slot.
    let rotated = ProvisioningRecord::new(
        record.server_url.as_str(),
        record.device_id.as_str(),
        "rotated-token",
    )
    .expect("valid");
    store.save(&rotated).expect("saved");
    assert_eq!(store.load(), Ok(Some(rotated)));
}

#[test]
fn bad_arguments_are_refused_with_the_rule() {
    let out = scratch("bad.bin");
    for (args, message) in [
        (
            &[
                "--server-url",
                "http://x",
                "--device-id",
                "d",
                "--token",
                "t",
            ][..],
            "ws:// or wss://",
        ),
        (
            &[
                "--server-url",
                "ws://x",
                "--device-id",
                "d",
                "--token",
                "t",
                "--ssid",
                "s",
                "--passphrase",
                "short",
            ][..],
            "at least 8 characters",
        ),
        (
            &[
                "--server-url",
                "ws://x",
                "--device-id",
                "d",
                "--token",
                "t",
                "--ssid",
                &"s".repeat(33),
            ][..],
            "at most 32 bytes",
        ),
    ] {
        let result = provision(args, &out);
        assert!(!result.status.success());
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(stderr.contains(message), "{stderr}");
    }
}

#[test]
fn corrupted_record_falls_back_to_the_portal_which_repairs_it() {
    let out = scratch("corrupt.bin");
    assert!(provision(ARGS, &out).status.success());
    let mut bytes = std::fs::read(&out).expect("record");
    bytes[20] ^= 0x04;
    std::fs::write(&out, &bytes).expect("corrupt it");

    let mut store = FileStore::new(&out);
    let loaded = store.load();
    assert_eq!(loaded, Err(StoreError::Corrupt(DecodeError::Checksum)));
    let mut machine = Provisioning::new(ProvisioningConfig::default());
    machine.boot(0, loaded);
    assert_eq!(machine.state(), State::Portal);
    assert_eq!(
        machine.poll_action(),
        Some(Action::OpenPortal(PortalReason::CorruptRecord))
    );

    // The portal serves from the same file and a submission repairs it.
    let (_runtime, handle) = common::start(FileStore::new(&out));
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .new_agent();
    let form = common::form_with("ssid", "Home");
    let response = agent
        .post(format!("http://{}/save", handle.http_addr()))
        .send_form(form.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .expect("POST");
    assert_eq!(response.status().as_u16(), 303);
    let repaired = FileStore::new(&out)
        .load()
        .expect("valid again")
        .expect("record");
    assert_eq!(repaired.wifi.expect("wifi").ssid.as_str(), "Home");
    machine.credentials_saved(1_000);
    assert_eq!(machine.state(), State::Trying);
}

fn provision_label(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tether-provision"))
        .args(args)
        .env_remove("TETHER_DEVICE_TOKEN")
        .env_remove("TETHER_SERVER_URL")
        .env_remove("TETHER_WIFI_PASSPHRASE")
        .output()
        .expect("run tether-provision")
}

/// The label: an SVG whose QR code opens the dashboard's claim page with
/// the code filled in, with the code and the device id in text; alone, or
/// with the record in the same run.
#[test]
fn the_label_carries_the_claim_url_as_a_qr_code_and_the_code_in_text() {
    let label = scratch("sensor-7-label.svg");
    let result = provision_label(&[
        "--server-url",
        "wss://relay.example.com/v1/device",
        "--device-id",
        "sensor-7",
        "--claim-code",
        "7M2K-9QXD-4HBT",
        "--label",
        label.to_str().expect("utf-8 path"),
    ]);
    assert!(result.status.success(), "{result:?}");
    let stdout = String::from_utf8_lossy(&result.stdout);
    let url = "https://relay.example.com/claim#code=7M2K-9QXD-4HBT";
    assert!(stdout.contains(url), "{stdout}");
    let svg = std::fs::read_to_string(&label).expect("label written");
    assert!(svg.contains(">7M2K-9QXD-4HBT</text>") && svg.contains(">sensor-7</text>"));
    let (qr, _) = tether_host::label::qr_path(url).expect("a QR code");
    assert!(svg.contains(&format!("d=\"{qr}\"")), "the QR code of {url}");

    // With the record, and another dashboard address.
    let out = scratch("sensor-8.img");
    let result = provision(
        &[
            "--server-url",
            "wss://relay.example.com/v1/device",
            "--device-id",
            "sensor-8",
            "--token",
            "tok_3f9a",
            "--claim-code",
            "AAAA-BBBB-CCCC",
            "--dashboard-url",
            "https://dash.example.com",
            "--label",
            label.to_str().expect("utf-8 path"),
        ],
        &out,
    );
    assert!(result.status.success(), "{result:?}");
    assert!(ProvisioningRecord::decode(&std::fs::read(&out).expect("record")).is_ok());
    let (qr, _) = tether_host::label::qr_path("https://dash.example.com/claim#code=AAAA-BBBB-CCCC")
        .expect("a QR code");
    assert!(
        std::fs::read_to_string(&label)
            .expect("label")
            .contains(&qr)
    );

    // Refused, with the rule: a label needs its code; a record its token;
    // one of the two is needed.
    for (args, needle) in [
        (
            vec![
                "--server-url",
                "wss://r.example/v1/device",
                "--device-id",
                "d",
                "--label",
                "x.svg",
            ],
            "--claim-code",
        ),
        (
            vec![
                "--server-url",
                "wss://r.example/v1/device",
                "--device-id",
                "d",
                "--out",
                "x.img",
            ],
            "--token",
        ),
        (
            vec![
                "--server-url",
                "wss://r.example/v1/device",
                "--device-id",
                "d",
            ],
            "--out",
        ),
        (
            vec![
                "--server-url",
                "https://r.example",
                "--device-id",
                "d",
                "--claim-code",
                "AAAA-BBBB-CCCC",
                "--label",
                "x.svg",
            ],
            "ws:// or wss://",
        ),
    ] {
        let result = provision_label(&args);
        assert!(!result.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}
