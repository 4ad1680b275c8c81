//! The firmware examples: release builds with warnings denied, flashable
//! images made offline by `espflash save-image` (Espressif chips), and the
//! flash and RAM each one takes next to a baseline without tether on the
//! same stack: a plain Wi-Fi + TCP firmware on esp-hal
//! (`xtask/size-probes/esp32c3-wifi-tcp`), and for the Raspberry Pi Pico the
//! same peripherals with no tether (`rp2040-baseline` of
//! `examples/rp2040-esp8266`).
//!
//! `cargo xtask firmware` runs this alone; `cargo xtask test` runs it as a
//! step. Images land in `<target>/firmware/images/`.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::{cargo_bin, target_dir, workspace_root};

/// One firmware build.
struct Firmware {
    label: &'static str,
    /// File name of the saved image, without `.bin`.
    image: &'static str,
    dir: &'static str,
    bin: &'static str,
    /// The chip: `espflash save-image --chip` takes it, except `rp2040`
    /// (flashed as an ELF by probe-rs or as UF2: no image is made).
    chip: &'static str,
    /// The row of the `image` this one is compared with.
    baseline: &'static str,
    target: &'static str,
    args: &'static [&'static str],
}

const FIRMWARE: &[Firmware] = &[
    Firmware {
        label: "baseline: Wi-Fi + TCP, no tether",
        image: "baseline-wifi-tcp-esp32c3",
        dir: "xtask/size-probes/esp32c3-wifi-tcp",
        bin: "size-probe-esp32c3-wifi-tcp",
        chip: "esp32c3",
        baseline: "baseline-wifi-tcp-esp32c3",
        target: "riscv32imc-unknown-none-elf",
        args: &[],
    },
    Firmware {
        label: "esp32c3-minimal (ws://)",
        image: "esp32c3-minimal",
        dir: "examples/esp32c3-minimal",
        bin: "esp32c3-minimal",
        chip: "esp32c3",
        baseline: "baseline-wifi-tcp-esp32c3",
        target: "riscv32imc-unknown-none-elf",
        args: &[],
    },
    Firmware {
        label: "baseline + TLS: embedded-tls",
        image: "tls-embedded-tls-esp32c3",
        dir: "xtask/size-probes/esp32c3-tls",
        bin: "size-probe-esp32c3-tls",
        chip: "esp32c3",
        baseline: "baseline-wifi-tcp-esp32c3",
        target: "riscv32imc-unknown-none-elf",
        args: &["--features", "embedded-tls"],
    },
    Firmware {
        label: "baseline + TLS: mbedtls-rs",
        image: "tls-mbedtls-esp32c3",
        dir: "xtask/size-probes/esp32c3-tls",
        bin: "size-probe-esp32c3-tls",
        chip: "esp32c3",
        baseline: "baseline-wifi-tcp-esp32c3",
        target: "riscv32imc-unknown-none-elf",
        args: &["--features", "mbedtls"],
    },
    Firmware {
        label: "esp32c3-sensor (wss://, set-up)",
        image: "esp32c3-sensor",
        dir: "examples/esp32c3-sensor",
        bin: "esp32c3-sensor",
        chip: "esp32c3",
        baseline: "baseline-wifi-tcp-esp32c3",
        target: "riscv32imc-unknown-none-elf",
        args: &[],
    },
    Firmware {
        label: "esp32c3-sensor on ESP32-C6",
        image: "esp32c6-sensor",
        dir: "examples/esp32c3-sensor",
        bin: "esp32c3-sensor",
        chip: "esp32c6",
        baseline: "baseline-wifi-tcp-esp32c3",
        target: "riscv32imac-unknown-none-elf",
        args: &["--no-default-features", "--features", "esp32c6"],
    },
    Firmware {
        label: "baseline: Pico UART + ADC, no tether",
        image: "rp2040-baseline",
        dir: "examples/rp2040-esp8266",
        bin: "rp2040-baseline",
        chip: "rp2040",
        baseline: "rp2040-baseline",
        target: "thumbv6m-none-eabi",
        args: &["--bin", "rp2040-baseline"],
    },
    Firmware {
        label: "rp2040-esp8266 (Pico + ESP-01)",
        image: "rp2040-esp8266",
        dir: "examples/rp2040-esp8266",
        bin: "rp2040-esp8266",
        chip: "rp2040",
        baseline: "rp2040-baseline",
        target: "thumbv6m-none-eabi",
        args: &["--bin", "rp2040-esp8266"],
    },
];

#[derive(Debug, Default, Clone, Copy)]
struct Footprint {
    /// Bytes of the flashable application image.
    image: u64,
    /// Code and constants in flash (`.text`, `.rodata` and friends).
    flash_sections: u64,
    /// Static RAM: initialised and zeroed data plus code copied to RAM,
    /// without the heap array the Wi-Fi driver allocates from.
    static_ram: u64,
}

/// Builds every firmware, or with `only`, those whose image name contains
/// one of the words (and their baselines).
///
/// With `--attribute` first, also prints where each firmware's flash goes
/// next to its baseline: code and constant symbols summed by crate
/// (`llvm-nm`, see [`crate::attribution`]), and the largest symbols it has
/// that the baseline lacks.
pub(crate) fn run(only: &[String]) -> Result<(), String> {
    let attribute = only.first().is_some_and(|a| a == "--attribute");
    let only = if attribute { &only[1..] } else { only };
    let root = workspace_root();
    let target_dir = target_dir().join("firmware");
    let images = target_dir.join("images");
    fs::create_dir_all(&images).map_err(|e| format!("{}: {e}", images.display()))?;
    let wanted = |image: &str| only.is_empty() || only.iter().any(|w| image.contains(w.as_str()));
    let selected = FIRMWARE.iter().filter(|f| {
        wanted(f.image)
            || FIRMWARE
                .iter()
                .any(|o| o.baseline == f.image && wanted(o.image))
    });
    let mut rows = Vec::new();
    for firmware in selected {
        crate::run(
            Command::new(cargo_bin())
                .args(["build", "--release", "--target", firmware.target])
                .args(firmware.args)
                .arg("--target-dir")
                .arg(&target_dir)
                .current_dir(root.join(firmware.dir)),
        )?;
        let elf = target_dir
            .join(firmware.target)
            .join("release")
            .join(firmware.bin);
        let mut footprint = sections(&elf)?;
        if firmware.chip != "rp2040" {
            let image = images.join(format!("{}.bin", firmware.image));
            crate::run(
                Command::new(crate::setup::tool_path("espflash"))
                    .args(["save-image", "--chip", firmware.chip])
                    .arg(&elf)
                    .arg(&image),
            )?;
            footprint.image = fs::metadata(&image)
                .map_err(|e| format!("{}: {e}", image.display()))?
                .len();
        }
        rows.push((firmware, footprint));
    }
    print_table(&rows);
    if attribute {
        for (firmware, _) in &rows {
            if firmware.baseline == firmware.image {
                continue;
            }
            let elf_of = |f: &Firmware| target_dir.join(f.target).join("release").join(f.bin);
            let Some((baseline, _)) = rows.iter().find(|(b, _)| b.image == firmware.baseline)
            else {
                continue;
            };
            crate::attribution::print_difference(
                firmware.label,
                &elf_of(firmware),
                baseline.label,
                &elf_of(baseline),
            )?;
        }
    }
    Ok(())
}

fn print_table(rows: &[(&Firmware, Footprint)]) {
    println!();
    println!("firmware images (espflash save-image), release, opt-level = \"s\", fat LTO");
    println!(
        "{:<36} {:<8} {:>9} {:>9} {:>11} {:>12} {:>12}",
        "firmware", "chip", "image", "flash", "static RAM", "+flash/base", "+RAM/base"
    );
    for (firmware, f) in rows {
        let baseline = rows
            .iter()
            .find(|(b, _)| b.image == firmware.baseline)
            .map_or(*f, |(_, b)| *b);
        println!(
            "{:<36} {:<8} {:>9} {:>9} {:>11} {:>12} {:>12}",
            firmware.label,
            firmware.chip,
            f.image,
            f.flash_sections,
            f.static_ram,
            i128::from(f.flash_sections) - i128::from(baseline.flash_sections),
            i128::from(f.static_ram) - i128::from(baseline.static_ram),
        );
    }
    println!(
        "(bytes; flash = code and constants; static RAM = .data + .bss + RAM code, heap array excluded; \
         the C6 row compares with the C3 baseline, the Pico rows with the Pico baseline, \
         which has no image: 0)"
    );
}

/// Sums the allocated sections of a 32-bit little-endian ELF file by where
/// they live, and takes the heap array (`esp_alloc::heap_allocator!`'s
/// `HEAP` static) out of the static RAM.
fn sections(path: &Path) -> Result<Footprint, String> {
    const SHF_WRITE: u64 = 0x1;
    const SHF_ALLOC: u64 = 0x2;
    const SHT_SYMTAB: u64 = 2;
    const SHT_NOBITS: u64 = 8;
    let elf = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let bad = || format!("{}: not a 32-bit little-endian ELF file", path.display());
    if elf.get(..6) != Some(b"\x7fELF\x01\x01".as_slice()) {
        return Err(bad());
    }
    let u16_at = |at: usize| -> Option<usize> {
        Some(usize::from(u16::from_le_bytes(
            elf.get(at..at + 2)?.try_into().ok()?,
        )))
    };
    let u32_at = |at: usize| -> Option<u64> {
        Some(u64::from(u32::from_le_bytes(
            elf.get(at..at + 4)?.try_into().ok()?,
        )))
    };
    let to_usize = |v: u64| usize::try_from(v).ok();
    let shoff = u32_at(0x20).and_then(to_usize).ok_or_else(bad)?;
    let shentsize = u16_at(0x2E).ok_or_else(bad)?;
    let shnum = u16_at(0x30).ok_or_else(bad)?;
    let shstrndx = u16_at(0x32).ok_or_else(bad)?;
    /// Elf32_Shdr fields.
    struct Section {
        name: u64,
        kind: u64,
        flags: u64,
        offset: u64,
        size: u64,
        link: u64,
    }
    let section = |index: usize| -> Option<Section> {
        let at = shoff.checked_add(index.checked_mul(shentsize)?)?;
        Some(Section {
            name: u32_at(at)?,
            kind: u32_at(at + 4)?,
            flags: u32_at(at + 8)?,
            offset: u32_at(at + 16)?,
            size: u32_at(at + 20)?,
            link: u32_at(at + 24)?,
        })
    };
    let string = |table: u64, offset: u64| -> Option<String> {
        let start = to_usize(table.checked_add(offset)?)?;
        let bytes: Vec<u8> = elf
            .get(start..)?
            .iter()
            .take_while(|&&b| b != 0)
            .copied()
            .collect();
        Some(String::from_utf8_lossy(&bytes).into_owned())
    };
    let names = section(shstrndx).ok_or_else(bad)?.offset;
    let mut footprint = Footprint::default();
    let mut heap = 0u64;
    for index in 0..shnum {
        let s = section(index).ok_or_else(bad)?;
        let name = string(names, s.name).ok_or_else(bad)?;
        if s.kind == SHT_SYMTAB {
            // Elf32_Sym: name, value, size, info, other, shndx (16 bytes).
            let strtab = section(to_usize(s.link).ok_or_else(bad)?)
                .ok_or_else(bad)?
                .offset;
            for at in (0..s.size / 16).map(|i| s.offset + i * 16) {
                let at = to_usize(at).ok_or_else(bad)?;
                let symbol = string(strtab, u32_at(at).ok_or_else(bad)?).ok_or_else(bad)?;
                if symbol.contains("4HEAP17h") {
                    heap += u32_at(at + 8).ok_or_else(bad)?;
                }
            }
            continue;
        }
        if s.flags & SHF_ALLOC == 0 || name.contains("dummy") || name == ".stack" {
            continue; // not loaded, address-space reservations, the stack
        }
        let in_ram = s.flags & SHF_WRITE != 0
            || s.kind == SHT_NOBITS
            || name.starts_with(".rwtext")
            || name.starts_with(".trap")
            || name.starts_with(".iram");
        if in_ram {
            footprint.static_ram += s.size;
        } else {
            footprint.flash_sections += s.size;
        }
    }
    footprint.static_ram = footprint.static_ram.saturating_sub(heap);
    Ok(footprint)
}
