//! `cargo xtask size`: code size of a minimal WebSocket client on the
//! ESP32-C3's target, tether next to embedded-websocket.
//!
//! Builds the standalone probe crates in `xtask/size-probes/` for
//! `riscv32imc-unknown-none-elf` with their release profile (`opt-level =
//! "s"`, fat LTO), then reads the section sizes straight from each ELF file.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::{cargo_bin, workspace_root};

const TARGET: &str = "riscv32imc-unknown-none-elf";

/// (label, probe directory, binary name)
const PROBES: &[(&str, &str, &str)] = &[
    (
        "tether device client",
        "tether-client",
        "size-probe-tether-client",
    ),
    ("tether", "tether", "size-probe-tether"),
    (
        "embedded-websocket",
        "embedded-websocket",
        "size-probe-embedded-websocket",
    ),
];

#[derive(Debug, Default)]
struct Sizes {
    text: u64,
    rodata: u64,
    data: u64,
    bss: u64,
}

/// `cargo xtask size [--attribute [PROBE..]]`. With `--attribute`, the
/// probes (those whose directory name contains a PROBE, or all) are built
/// again with line tables, in a directory of their own, and every byte of
/// their `.text` is attributed to crate, source file and function (see
/// [`crate::attribution`]).
pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let attribute = args.first().is_some_and(|a| a == "--attribute");
    let only = if attribute { &args[1..] } else { args };
    if let Some(unknown) = only.iter().find(|a| a.starts_with('-')) {
        return Err(format!("size: unknown option {unknown}"));
    }
    let root = workspace_root();
    // The probes are separate workspaces: give them their own directory
    // under the build's target directory (`CARGO_TARGET_DIR` if set).
    let target_dir = crate::target_dir().join(if attribute {
        "size-probes-lines"
    } else {
        "size-probes"
    });
    let mut rows = Vec::new();
    let wanted = |dir: &str| only.is_empty() || only.iter().any(|w| dir.contains(w.as_str()));
    for (label, dir, bin) in PROBES.iter().filter(|(_, dir, _)| wanted(dir)) {
        let manifest = root
            .join("xtask")
            .join("size-probes")
            .join(dir)
            .join("Cargo.toml");
        crate::run(
            Command::new(cargo_bin())
                .arg("build")
                .arg("--release")
                .arg("--target")
                .arg(TARGET)
                .arg("--manifest-path")
                .arg(&manifest)
                .arg("--target-dir")
                .arg(&target_dir)
                // Line tables change no code: the `.text` sizes printed
                // below are the same as without.
                .env(
                    "CARGO_PROFILE_RELEASE_DEBUG",
                    if attribute {
                        "line-tables-only"
                    } else {
                        "false"
                    },
                ),
        )?;
        let elf = target_dir.join(TARGET).join("release").join(bin);
        let sizes = sizes(&elf)?;
        if attribute {
            crate::attribution::print(label, sizes.text, &crate::attribution::line_table(&elf)?);
        }
        rows.push((*label, sizes));
    }
    println!();
    println!("minimal clients, {TARGET}, opt-level = \"s\", fat LTO");
    println!(
        "{:<22} {:>8} {:>8} {:>12}",
        "client", ".text", ".rodata", "static RAM"
    );
    for (label, s) in &rows {
        println!(
            "{:<22} {:>8} {:>8} {:>12}",
            label,
            s.text,
            s.rodata,
            s.data + s.bss
        );
    }
    println!("(bytes; static RAM = .data + .bss, small-data sections included)");
    Ok(())
}

/// Section sizes of a 32-bit little-endian ELF file, summed by kind.
fn sizes(path: &Path) -> Result<Sizes, String> {
    let elf = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let bad = || format!("{}: not a 32-bit little-endian ELF file", path.display());
    if elf.get(..6) != Some(b"\x7fELF\x01\x01".as_slice()) {
        return Err(bad());
    }
    let u16_at = |at: usize| -> Option<u64> {
        Some(u64::from(u16::from_le_bytes(
            elf.get(at..at + 2)?.try_into().ok()?,
        )))
    };
    let u32_at = |at: usize| -> Option<u64> {
        Some(u64::from(u32::from_le_bytes(
            elf.get(at..at + 4)?.try_into().ok()?,
        )))
    };
    let header = || -> Option<(usize, usize, usize, usize)> {
        Some((
            usize::try_from(u32_at(0x20)?).ok()?,
            usize::try_from(u16_at(0x2E)?).ok()?,
            usize::try_from(u16_at(0x30)?).ok()?,
            usize::try_from(u16_at(0x32)?).ok()?,
        ))
    };
    let (shoff, shentsize, shnum, shstrndx) = header().ok_or_else(bad)?;
    let section = |index: usize| -> Option<(u64, u64, u64)> {
        let at = shoff + index * shentsize;
        // (name offset, file offset, size)
        Some((u32_at(at)?, u32_at(at + 16)?, u32_at(at + 20)?))
    };
    let (_, strtab, _) = section(shstrndx).ok_or_else(bad)?;
    let mut sizes = Sizes::default();
    for index in 0..shnum {
        let (name, _, size) = section(index).ok_or_else(bad)?;
        let start = usize::try_from(strtab + name).map_err(|_| bad())?;
        let name: Vec<u8> = elf
            .get(start..)
            .ok_or_else(bad)?
            .iter()
            .take_while(|&&b| b != 0)
            .copied()
            .collect();
        let name = String::from_utf8_lossy(&name);
        let kind = |prefix: &str| name == prefix || name.starts_with(&format!("{prefix}."));
        if kind(".text") {
            sizes.text += size;
        } else if kind(".rodata") || kind(".srodata") {
            sizes.rodata += size;
        } else if kind(".data") || kind(".sdata") {
            sizes.data += size;
        } else if kind(".bss") || kind(".sbss") {
            sizes.bss += size;
        }
    }
    Ok(sizes)
}
