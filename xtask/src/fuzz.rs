//! Fuzz smoke runs: every target in `fuzz/fuzz_targets/` first replays its
//! committed seeds in `fuzz/seeds/<target>/`, then fuzzes for a bounded time.
//! A crash fails the run; libFuzzer leaves the reproducer in
//! `fuzz/artifacts/<target>/`.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::{cargo_bin, setup::output, workspace_root};

pub(crate) const DEFAULT_SECONDS: u64 = 20;

pub(crate) fn run(seconds: u64) -> Result<(), String> {
    let root = workspace_root();
    let fuzz_dir = root.join("fuzz");
    let targets = targets(&fuzz_dir.join("fuzz_targets"))?;
    if targets.is_empty() {
        return Err("no fuzz targets in fuzz/fuzz_targets".to_owned());
    }
    // cargo-fuzz needs nightly-only compiler flags. Use a nightly toolchain
    // when the machine has one; otherwise let stable accept them.
    let nightly = output("rustup", &["run", "nightly", "rustc", "--version"]).is_some();
    for target in &targets {
        let seeds = fuzz_dir.join("seeds").join(target);
        // New inputs go to a scratch corpus so the committed seeds stay as
        // they are; the seeds directory is read as a second corpus.
        let scratch = root.join("target").join("fuzz-corpus").join(target);
        fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
        fs::create_dir_all(&seeds).map_err(|e| format!("{}: {e}", seeds.display()))?;
        let mut command = Command::new(if nightly {
            "rustup".to_owned()
        } else {
            cargo_bin()
        });
        if nightly {
            command.args(["run", "nightly", "cargo"]);
        } else {
            command.env("RUSTC_BOOTSTRAP", "1");
        }
        command
            .current_dir(&fuzz_dir)
            .args(["fuzz", "run", "--sanitizer", "none", target])
            .arg(&scratch)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg("-print_final_stats=1");
        crate::run(&mut command)?;
    }
    println!(
        "xtask: fuzzed {} targets for {seconds} s each",
        targets.len()
    );
    Ok(())
}

fn targets(dir: &Path) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.extension().is_some_and(|ext| ext == "rs")
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
            names.push(stem.to_owned());
        }
    }
    names.sort();
    Ok(names)
}
