//! `cargo xtask bench-report`: turns the criterion results of the
//! `frame_throughput` bench into the Markdown tables of
//! `docs/performance.md`.
//!
//! For each benchmark it reports the fastest of criterion's samples (time per
//! iteration of the best sample). On a machine shared with other jobs,
//! preemption inflates means and medians by whatever else runs at that
//! moment; the fastest sample is the estimate least disturbed by it.

use std::fs;
use std::path::Path;

use crate::workspace_root;

const SIZES: &[u64] = &[16, 125, 1024, 16 * 1024, 64 * 1024];

const GROUPS: &[(&str, &str, &[&str])] = &[
    (
        "Encode a masked client frame",
        "encode_masked",
        &[
            "tether",
            "embedded_websocket",
            "tungstenite_frame",
            "tungstenite_websocket",
            "memcpy",
        ],
    ),
    (
        "Decode a server frame",
        "decode_server",
        &[
            "tether",
            "tungstenite",
            "embedded_websocket",
            "tether_copy",
            "tungstenite_copy",
            "memcpy",
        ],
    ),
];

pub(crate) fn run() -> Result<(), String> {
    let root = workspace_root().join("target").join("criterion");
    for (title, group, functions) in GROUPS {
        println!("#### {title}\n");
        let header: Vec<String> = functions.iter().map(|f| format!("`{f}`")).collect();
        println!("| payload | {} |", header.join(" | "));
        println!("|---|{}", "---:|".repeat(functions.len()));
        for &size in SIZES {
            let mut cells = Vec::new();
            for function in *functions {
                let path = root
                    .join(group)
                    .join(function)
                    .join(size.to_string())
                    .join("new")
                    .join("sample.json");
                cells.push(match fastest_sample(&path)? {
                    Some(ns) => format!(
                        "{ns:.1} ns<br>{:.0} MB/s<br>{:.1} M frames/s",
                        size as f64 / ns * 1e3,
                        1e3 / ns
                    ),
                    None => "-".to_owned(),
                });
            }
            let label = if size < 1024 {
                format!("{size} B")
            } else {
                format!("{} KiB", size / 1024)
            };
            println!("| {label} | {} |", cells.join(" | "));
        }
        println!();
    }
    Ok(())
}

/// Nanoseconds per iteration of the fastest sample in a criterion
/// `sample.json` (`{"sampling_mode":..,"iters":[..],"times":[..]}`), or
/// `None` when the benchmark has not been run.
fn fastest_sample(path: &Path) -> Result<Option<f64>, String> {
    let Ok(text) = fs::read_to_string(path) else {
        return Ok(None);
    };
    let iters =
        numbers(&text, "\"iters\"").ok_or_else(|| format!("{}: no iters", path.display()))?;
    let times =
        numbers(&text, "\"times\"").ok_or_else(|| format!("{}: no times", path.display()))?;
    Ok(iters
        .iter()
        .zip(&times)
        .filter(|(i, _)| **i > 0.0)
        .map(|(i, t)| t / i)
        .reduce(f64::min))
}

/// The numbers of the JSON array that follows `key`.
fn numbers(text: &str, key: &str) -> Option<Vec<f64>> {
    let start = text.find(key)? + key.len();
    let rest = &text[start..];
    let open = rest.find('[')? + 1;
    let close = rest.find(']')?;
    rest.get(open..close)?
        .split(',')
        .map(|n| n.trim().parse::<f64>().ok())
        .collect()
}
