//! `cargo xtask bench-report`: turns the criterion results of the
//! `frame_throughput` bench into the Markdown tables of
//! `docs/performance.md`, headed by the machine they were measured on.
//!
//! For each benchmark it reports the **median** of criterion's samples (time
//! per iteration of each sample) with the interquartile range as its spread:
//! the fastest sample would flatter every library by whatever luck it had,
//! the mean drags in every preemption. The CPU is read from `/proc/cpuinfo`
//! and the load average during the run from the file the bench writes
//! (`<target>/criterion/frame_throughput-load.txt`).

use std::fs;
use std::path::Path;

use crate::target_dir;

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
    let root = target_dir().join("criterion");
    println!("{}\n", machine());
    match fs::read_to_string(root.join("frame_throughput-load.txt")) {
        Ok(load) => println!(
            "Load average (1, 5, 15 min) during the run: {}.\n",
            load.lines().map(str::trim).collect::<Vec<_>>().join("; ")
        ),
        Err(_) => println!("Load average during the run: not recorded.\n"),
    }
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
                cells.push(match spread(&path)? {
                    Some(s) => format!(
                        "{} ns<br>({}–{})<br>{:.0} MB/s<br>{}",
                        ns(s.median),
                        ns(s.low),
                        ns(s.high),
                        size as f64 / s.median * 1e3,
                        frames_per_second(s.median)
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

/// Frames per second at `ns` per frame, in M or k.
fn frames_per_second(ns: f64) -> String {
    let per_second = 1e9 / ns;
    if per_second >= 1e6 {
        format!("{:.1} M frames/s", per_second / 1e6)
    } else {
        format!("{:.0} k frames/s", per_second / 1e3)
    }
}

/// Three significant digits at most, no trailing noise.
fn ns(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// The machine line: CPU model, logical CPUs and SIMD extensions, from
/// `/proc/cpuinfo`.
fn machine() -> String {
    let Ok(cpuinfo) = fs::read_to_string("/proc/cpuinfo") else {
        return "Machine: unknown (no /proc/cpuinfo).".to_owned();
    };
    let field = |name: &str| {
        cpuinfo.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == name).then(|| value.trim().to_owned())
        })
    };
    let logical = cpuinfo
        .lines()
        .filter(|line| line.starts_with("processor"))
        .count();
    let model = field("model name").unwrap_or_else(|| "unknown CPU".to_owned());
    let family_model = match (field("cpu family"), field("model"), field("stepping")) {
        (Some(f), Some(m), Some(s)) => format!(" (family {f}, model {m}, stepping {s})"),
        _ => String::new(),
    };
    let simd: Vec<String> = field("flags")
        .unwrap_or_default()
        .split_whitespace()
        .filter(|flag| {
            [
                "sse2", "avx", "avx2", "avx512f", "avx512bw", "neon", "asimd",
            ]
            .contains(flag)
        })
        .map(str::to_owned)
        .collect();
    format!(
        "Machine: {logical} logical CPUs of `{model}`{family_model}; SIMD: {}.",
        if simd.is_empty() {
            "none listed".to_owned()
        } else {
            simd.join(", ")
        }
    )
}

/// Median and interquartile range of a benchmark's samples.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Spread {
    low: f64,
    median: f64,
    high: f64,
}

/// Nanoseconds per iteration of criterion's samples (`sample.json`:
/// `{"sampling_mode":..,"iters":[..],"times":[..]}`): median and quartiles,
/// or `None` when the benchmark has not been run.
fn spread(path: &Path) -> Result<Option<Spread>, String> {
    let Ok(text) = fs::read_to_string(path) else {
        return Ok(None);
    };
    let iters =
        numbers(&text, "\"iters\"").ok_or_else(|| format!("{}: no iters", path.display()))?;
    let times =
        numbers(&text, "\"times\"").ok_or_else(|| format!("{}: no times", path.display()))?;
    let mut per_iter: Vec<f64> = iters
        .iter()
        .zip(&times)
        .filter(|(i, _)| **i > 0.0)
        .map(|(i, t)| t / i)
        .collect();
    per_iter.sort_by(f64::total_cmp);
    Ok(quartiles(&per_iter))
}

/// Quartiles of sorted values, by linear interpolation between the nearest
/// ranks.
fn quartiles(sorted: &[f64]) -> Option<Spread> {
    let at = |q: f64| {
        let position = q * (sorted.len().checked_sub(1)? as f64);
        let below = sorted.get(position.floor() as usize)?;
        let above = sorted.get(position.ceil() as usize)?;
        Some(below + (above - below) * position.fract())
    };
    Some(Spread {
        low: at(0.25)?,
        median: at(0.5)?,
        high: at(0.75)?,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quartiles_interpolate() {
        assert_eq!(quartiles(&[]), None);
        assert_eq!(
            quartiles(&[5.0]),
            Some(Spread {
                low: 5.0,
                median: 5.0,
                high: 5.0
            })
        );
        assert_eq!(
            quartiles(&[1.0, 2.0, 3.0, 4.0, 5.0]),
            Some(Spread {
                low: 2.0,
                median: 3.0,
                high: 4.0
            })
        );
        assert_eq!(
            quartiles(&[1.0, 2.0, 3.0, 4.0]),
            Some(Spread {
                low: 1.75,
                median: 2.5,
                high: 3.25
            })
        );
    }

    #[test]
    fn samples_are_per_iteration() {
        let json = r#"{"sampling_mode":"Linear","iters":[1.0,2.0,3.0],"times":[10.0,40.0,90.0]}"#;
        let dir = std::env::temp_dir().join(format!("xtask-bench-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sample.json");
        fs::write(&path, json).unwrap();
        let measured = spread(&path).unwrap().unwrap();
        fs::remove_dir_all(&dir).unwrap();
        // 10, 20, 30 ns per iteration.
        assert_eq!(measured.median, 20.0);
        assert_eq!((measured.low, measured.high), (15.0, 25.0));
        assert_eq!(spread(Path::new("/nonexistent/sample.json")), Ok(None));
    }

    #[test]
    fn frame_rates_keep_their_digits() {
        assert_eq!(frames_per_second(25.0), "40.0 M frames/s");
        assert_eq!(frames_per_second(32_978.0), "30 k frames/s");
        assert_eq!(
            (ns(5541.2), ns(25.04), ns(3.734)),
            ("5541".into(), "25.0".into(), "3.73".into())
        );
    }

    #[test]
    fn machine_names_a_cpu() {
        assert!(machine().starts_with("Machine: "));
    }
}
