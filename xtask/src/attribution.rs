//! Where the bytes of a firmware's code go: `cargo xtask size --attribute`
//! and `cargo xtask firmware --attribute`.
//!
//! Symbol sizes alone say little about code that LLVM inlined into one
//! large async state machine, so the line-table view attributes every byte
//! of `.text` to the source line the DWARF line table gives for it (the
//! innermost inlined function), and sums the bytes by crate, by source file
//! and by the out-of-line function that holds them. It needs an ELF built
//! with `debug = "line-tables-only"` (the code is the same as without) and
//! reads it with `llvm-dwarfdump --debug-line` and `llvm-nm` (Debian's
//! `llvm` package, installed by `cargo xtask setup`).
//!
//! The symbol view (`llvm-nm` alone, no debug info needed) sums the sizes
//! of code and constant symbols by the crate their name starts with; the
//! firmware attribution compares two images that way.

// A host tool: the no_std import lints do not apply.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// One out-of-line function or constant: address, size, name.
struct Symbol {
    address: u64,
    size: u64,
    name: String,
    code: bool,
}

/// Byte counts of one ELF file's `.text`, by three keys.
#[derive(Default)]
pub(crate) struct Attribution {
    pub(crate) by_crate: BTreeMap<String, u64>,
    pub(crate) by_file: BTreeMap<String, u64>,
    /// Out-of-line function → (its size, its bytes by crate).
    pub(crate) by_symbol: BTreeMap<String, (u64, BTreeMap<String, u64>)>,
    pub(crate) total: u64,
}

fn llvm(tool: &str, args: &[&str], elf: &Path) -> Result<String, String> {
    let out = Command::new(tool)
        .args(args)
        .arg(elf)
        .output()
        .map_err(|e| {
            format!("{tool}: {e} (install Debian's `llvm` package: `cargo xtask setup`)")
        })?;
    if !out.status.success() {
        return Err(format!(
            "{tool} {}: {}",
            elf.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Rust's legacy symbol mangling, made readable, without the hash.
fn demangle(name: &str) -> String {
    let mut name = name.to_owned();
    if let Some(at) = name.rfind("::h")
        && name.len() - at == 19
    {
        name.truncate(at);
    }
    for (from, to) in [
        ("$LT$", "<"),
        ("$GT$", ">"),
        ("$C$", ","),
        ("$RF$", "&"),
        ("$BP$", "*"),
        ("$u20$", " "),
        ("$u27$", "'"),
        ("$u5b$", "["),
        ("$u5d$", "]"),
        ("$u7b$", "{"),
        ("$u7d$", "}"),
        ("$u3b$", ";"),
        ("..", "::"),
    ] {
        name = name.replace(from, to);
    }
    name.strip_prefix('_')
        .filter(|n| n.starts_with('<'))
        .map_or(name.clone(), str::to_owned)
}

/// The crate a (demangled) symbol name belongs to: its first path segment,
/// or for `<A as B>::f` the crate of `A`.
fn symbol_crate(name: &str) -> String {
    let name = name.trim_start_matches(['<', '&', '*']);
    let name = name.strip_prefix("mut ").unwrap_or(name);
    match name.split_once("::") {
        Some((krate, _)) if !krate.contains([' ', '<', '.']) => krate.replace('-', "_"),
        _ if name.starts_with(".L") || name.starts_with(".Lanon") => "(unnamed constants)".into(),
        _ => "(other)".into(),
    }
}

/// The crate a source path belongs to.
fn path_crate(path: &str) -> String {
    if let Some(rest) = path.split("/library/").nth(1) {
        return rest.split('/').next().unwrap_or("std").to_owned();
    }
    if let Some(rest) = path.split("/registry/src/").nth(1) {
        let dir = rest.split('/').nth(1).unwrap_or("");
        // `name-1.2.3`: drop the version.
        let name = match dir.rfind('-') {
            Some(at) if dir[at + 1..].starts_with(|c: char| c.is_ascii_digit()) => &dir[..at],
            _ => dir,
        };
        return name.replace('-', "_");
    }
    if let Some(rest) = path.split("/crates/").nth(1) {
        return rest.split('/').next().unwrap_or("").replace('-', "_");
    }
    if path.contains("/size-probes/") || path.contains("/examples/") {
        return "(the probe or example)".into();
    }
    "(other)".into()
}

/// A source path made short: relative to its crate.
fn short_path(path: &str) -> String {
    for marker in ["/crates/", "/library/", "/registry/src/"] {
        if let Some(rest) = path.split(marker).nth(1) {
            let rest = if marker == "/registry/src/" {
                rest.split_once('/').map_or(rest, |(_, r)| r)
            } else {
                rest
            };
            return rest.to_owned();
        }
    }
    path.to_owned()
}

fn symbols(elf: &Path) -> Result<Vec<Symbol>, String> {
    let listing = llvm("llvm-nm", &["-S", "-C"], elf)?;
    let mut symbols = Vec::new();
    for line in listing.lines() {
        let mut fields = line.split_whitespace();
        let (Some(address), Some(size), Some(kind), Some(name)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let (Ok(address), Ok(size)) = (
            u64::from_str_radix(address, 16),
            u64::from_str_radix(size, 16),
        ) else {
            continue;
        };
        let kind = kind.to_ascii_lowercase();
        if (kind != "t" && kind != "r") || size == 0 {
            continue;
        }
        symbols.push(Symbol {
            address,
            size,
            name: demangle(name),
            code: kind == "t",
        });
    }
    symbols.sort_by_key(|s| s.address);
    Ok(symbols)
}

/// Prints the code and constant bytes of `elf` by crate (from the symbol
/// table alone) next to those of `baseline`, and the largest symbols of
/// `elf` the baseline does not have.
pub(crate) fn print_difference(
    label: &str,
    elf: &Path,
    baseline_label: &str,
    baseline: &Path,
) -> Result<(), String> {
    let by_crate = |symbols: &[Symbol]| {
        let mut by_crate: BTreeMap<String, i128> = BTreeMap::new();
        for symbol in symbols {
            *by_crate.entry(symbol_crate(&symbol.name)).or_default() += i128::from(symbol.size);
        }
        by_crate
    };
    let (ours, theirs) = (symbols(elf)?, symbols(baseline)?);
    let mut difference = by_crate(&ours);
    let attributed: i128 = difference.values().sum();
    for (krate, bytes) in by_crate(&theirs) {
        *difference.entry(krate).or_default() -= bytes;
    }
    let attributed = attributed - theirs.iter().map(|s| i128::from(s.size)).sum::<i128>();
    println!();
    println!("{label} over {baseline_label}: {attributed:+} B in named symbols, by crate:");
    let mut rows: Vec<(String, i128)> = difference.into_iter().filter(|(_, b)| *b != 0).collect();
    rows.sort_by_key(|(_, b)| std::cmp::Reverse(b.abs()));
    for (krate, bytes) in rows {
        println!("    {bytes:>+8}  {krate}");
    }
    let known: std::collections::BTreeSet<&str> = theirs.iter().map(|s| s.name.as_str()).collect();
    let mut new: Vec<&Symbol> = ours
        .iter()
        .filter(|s| !known.contains(s.name.as_str()))
        .collect();
    new.sort_by_key(|s| std::cmp::Reverse(s.size));
    println!("  the 25 largest symbols the baseline does not have:");
    for symbol in new.iter().take(25) {
        let mut name = symbol.name.clone();
        if name.len() > 110 {
            name.truncate(110);
            name.push('…');
        }
        println!("    {:>7}  {name}", symbol.size);
    }
    Ok(())
}

/// The line-table attribution of `elf` (built with line tables).
pub(crate) fn line_table(elf: &Path) -> Result<Attribution, String> {
    let functions: Vec<Symbol> = symbols(elf)?.into_iter().filter(|s| s.code).collect();
    // Relative directories of a line table are relative to its compile
    // unit's directory: DW_AT_comp_dir, found by the table's offset.
    let mut comp_dirs: BTreeMap<u64, String> = BTreeMap::new();
    let mut stmt_list = None;
    for line in llvm("llvm-dwarfdump", &["--debug-info"], elf)?.lines() {
        let line = line.trim();
        if let Some(offset) = line.strip_prefix("DW_AT_stmt_list") {
            stmt_list = u64::from_str_radix(
                offset
                    .trim()
                    .trim_matches(['(', ')'])
                    .trim_start_matches("0x"),
                16,
            )
            .ok();
        } else if let Some(dir) = line.strip_prefix("DW_AT_comp_dir")
            && let (Some(offset), Some(dir)) = (stmt_list.take(), quoted(dir))
        {
            comp_dirs.insert(offset, dir);
        }
    }
    let dump = llvm("llvm-dwarfdump", &["--debug-line"], elf)?;
    let mut attribution = Attribution::default();
    let mut comp_dir = String::new();
    let mut directories: BTreeMap<u64, String> = BTreeMap::new();
    let mut files: BTreeMap<u64, String> = BTreeMap::new();
    let mut pending_file: Option<u64> = None;
    // (address, file index) of the previous row of the current sequence.
    let mut previous: Option<(u64, u64)> = None;
    let index_of = |line: &str| -> Option<u64> {
        line.split_once('[')?
            .1
            .split_once(']')?
            .0
            .trim()
            .parse()
            .ok()
    };
    for line in dump.lines() {
        let line = line.trim();
        if let Some(offset) = line.strip_prefix("debug_line[") {
            comp_dir = u64::from_str_radix(
                offset.trim_end_matches([']', ':']).trim_start_matches("0x"),
                16,
            )
            .ok()
            .and_then(|offset| comp_dirs.get(&offset).cloned())
            .unwrap_or_default();
            directories.clear();
            directories.insert(0, comp_dir.clone());
            files.clear();
            previous = None;
        } else if line.starts_with("include_directories[") {
            if let (Some(index), Some(dir)) = (index_of(line), quoted(line)) {
                let dir = if dir.starts_with('/') {
                    dir
                } else {
                    format!("{comp_dir}/{dir}")
                };
                directories.insert(index, dir);
            }
        } else if line.starts_with("file_names[") {
            pending_file = index_of(line);
        } else if let Some(name) = line.strip_prefix("name:") {
            if let (Some(index), Some(name)) = (pending_file, quoted(name)) {
                files.insert(index, name);
            }
        } else if let Some(dir) = line.strip_prefix("dir_index:") {
            if let (Some(index), Ok(dir)) = (pending_file.take(), dir.trim().parse::<u64>())
                && let (Some(name), Some(dir)) = (files.get(&index), directories.get(&dir))
                && !name.starts_with('/')
            {
                files.insert(index, format!("{dir}/{name}"));
            }
        } else if line.starts_with("0x") {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(address), Some(file)) = (fields.first(), fields.get(3)) else {
                continue;
            };
            let (Ok(address), Ok(file)) = (
                u64::from_str_radix(address.trim_start_matches("0x"), 16),
                file.parse::<u64>(),
            ) else {
                continue;
            };
            if let Some((start, file)) = previous
                && address > start
            {
                let bytes = address - start;
                let path = files.get(&file).map_or("(unknown)", String::as_str);
                let krate = path_crate(path);
                *attribution.by_crate.entry(krate.clone()).or_default() += bytes;
                *attribution.by_file.entry(short_path(path)).or_default() += bytes;
                attribution.total += bytes;
                let at = functions.partition_point(|f| f.address <= start);
                if let Some(function) = at.checked_sub(1).and_then(|i| functions.get(i))
                    && start < function.address + function.size
                {
                    let entry = attribution
                        .by_symbol
                        .entry(function.name.clone())
                        .or_insert((function.size, BTreeMap::new()));
                    *entry.1.entry(krate).or_default() += bytes;
                }
            }
            previous = if line.contains("end_sequence") {
                None
            } else {
                Some((address, file))
            };
        }
    }
    Ok(attribution)
}

/// The text between the first and the last double quote of `line`.
fn quoted(line: &str) -> Option<String> {
    Some(line.split_once('"')?.1.rsplit_once('"')?.0.to_owned())
}

/// The `limit` largest entries of `map`, largest first.
pub(crate) fn largest<V: Copy, K: Clone>(
    map: &BTreeMap<K, V>,
    key: impl Fn(&V) -> u64,
    limit: usize,
) -> Vec<(K, V)> {
    let mut entries: Vec<(K, V)> = map.iter().map(|(k, v)| (k.clone(), *v)).collect();
    entries.sort_by_key(|(_, v)| std::cmp::Reverse(key(v)));
    entries.truncate(limit);
    entries
}

/// Prints the line-table attribution of one probe.
pub(crate) fn print(label: &str, text: u64, a: &Attribution) {
    println!();
    println!(
        "{label}: {text} B of .text, {} B attributed by the line table",
        a.total
    );
    println!("  by crate (the innermost inlined function's source):");
    for (krate, bytes) in largest(&a.by_crate, |b| *b, usize::MAX) {
        println!("    {bytes:>7}  {krate}");
    }
    println!("  by source file (the 30 largest):");
    for (file, bytes) in largest(&a.by_file, |b| *b, 30) {
        println!("    {bytes:>7}  {file}");
    }
    println!("  by out-of-line function (the 20 largest; bytes by crate inside):");
    let sized: BTreeMap<String, u64> = a
        .by_symbol
        .iter()
        .map(|(name, (size, _))| (name.clone(), *size))
        .collect();
    for (name, size) in largest(&sized, |s| *s, 20) {
        let inside = a
            .by_symbol
            .get(&name)
            .map(|(_, c)| largest(c, |b| *b, 4))
            .unwrap_or_default()
            .iter()
            .map(|(k, b)| format!("{k} {b}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut name = name;
        if name.len() > 100 {
            name.truncate(100);
            name.push('…');
        }
        println!("    {size:>7}  {name}");
        println!("             ({inside})");
    }
}
