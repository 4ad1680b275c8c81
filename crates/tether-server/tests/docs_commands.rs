//! Every command line in `docs/` and in the READMEs that runs a tether
//! binary is run here, in document order, so the docs cannot drift from
//! the programs. (The protocol's examples are checked by
//! `crates/tether-proto/tests/protocol_doc.rs`.)
//!
//! # What counts as a command line
//!
//! - every line of a fenced block tagged `sh`, `bash`, `shell` or
//!   `console` (also when the fence is indented, as in lists), with `\`
//!   continuations joined and `#` comments removed;
//! - the `ExecStart=` line of a fenced `ini` block (a systemd unit);
//! - an inline code span that starts with `tether-server `,
//!   `tether-provision ` or `cargo run `.
//!
//! A line is split at `&&`, `||`, `|` and `;` into commands. A command runs
//! a tether binary when its program (after `VAR=value` assignments and a
//! `sudo -u USER` prefix) is `tether-server` or `tether-provision` (or a
//! path ending in them), or when it is
//! `cargo run [--release] -p tether-… [--bin B] -- ARGS`, which runs binary
//! `B` (default: the package's name) with `ARGS`, built by this test's
//! build. `export VAR=value` lines set the environment of the document's
//! later commands. (A `cargo run` without `-p` is run in a firmware
//! example's directory, where it builds and flashes a board: not run.)
//!
//! # What is not run, by rule
//!
//! Any other command must have its program in [`EXCLUDED`], each with the
//! reason (hardware, root or a remote host, the network, or cargo's own
//! build and test commands, which `cargo xtask test` runs itself); a
//! program that is in neither list fails the test, so a new kind of
//! command line needs a decision here. `CHANGELOG.md` is history, not
//! docs, and is not read.
//!
//! # How a tether command runs
//!
//! Each document gets a fresh temporary directory as its working
//! directory and `HOME`, a clean environment (`PATH` and the document's
//! exports) and `TETHER_LISTEN=127.0.0.1:0`. Absolute paths in arguments
//! are rooted in the temporary directory (`/var/lib/tether` becomes
//! `<tmp>/var/lib/tether`), and `--listen`'s port becomes 0, so nothing
//! touches the machine or a port someone else uses. An administration
//! command (`tenant`, `device`, `key`) or `--help` must exit with status
//! 0. A command that starts the server must print its `listening on`
//! line, answer `GET /healthz` with 200 (and with `--demo`, start its
//! devices), then stop cleanly on SIGTERM.

// Tests are std code; the no_std import lints do not apply.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Programs of command lines the test does not run, and why.
const EXCLUDED: &[(&str, &str)] = &[
    (
        "cargo",
        "builds, tests and benchmarks: `cargo xtask test` runs them itself \
         (`cargo run -p tether-…` lines are run)",
    ),
    ("espflash", "writes a device's flash: needs a board on USB"),
    (
        "esp8266-linux-gateway",
        "needs an ESP8266 on a serial port: \
         examples/esp8266-linux-gateway/tests/pty.rs runs the line of \
         docs/esp8266.md against the modem simulator on a pseudo-terminal",
    ),
    (
        "size",
        "binutils, reads a firmware ELF's sections (`cargo xtask firmware`, \
         a step of `cargo xtask test`, prints the same figures)",
    ),
    (
        "rustup",
        "installs toolchains and targets (`cargo xtask setup` does)",
    ),
    ("scp", "copies to a remote host"),
    ("useradd", "changes the host's users (root)"),
    ("groupadd", "changes the host's groups (root)"),
    ("usermod", "changes the host's users (root)"),
    ("install", "creates system directories (root)"),
    ("chgrp", "changes system files (root)"),
    ("chmod", "changes system files (root)"),
    ("apt-get", "installs Debian packages (root, network)"),
    (
        "certbot",
        "asks Let's Encrypt for a certificate (network, port 80)",
    ),
    ("systemctl", "drives systemd (root)"),
    ("journalctl", "reads the systemd journal of a deployed host"),
    ("grep", "filters another command's output"),
    ("curl", "reaches the deployed host over the internet"),
    (
        "npm",
        "downloads the dashboard's vendored library (network)",
    ),
    ("cd", "changes directory for the commands after it"),
];

/// The tether binaries and how to find them.
const BINARIES: &[&str] = &["tether-server", "tether-provision"];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// The documents: `docs/**/*.md` and every `README.md` outside build
/// output.
fn documents() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>, in_docs: bool) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut entries: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        entries.sort();
        for path in entries {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_dir() {
                if !matches!(
                    name,
                    "target" | "node_modules" | ".git" | "artifacts" | "corpus"
                ) && !name.starts_with('.')
                {
                    walk(&path, out, in_docs || name == "docs");
                }
            } else if name == "README.md" || (in_docs && name.ends_with(".md")) {
                out.push(path);
            }
        }
    }
    let root = workspace_root();
    let mut out = Vec::new();
    walk(&root, &mut out, false);
    out
}

/// A command line and where it is.
#[derive(Debug, Clone)]
struct Line {
    number: usize,
    text: String,
}

/// The command lines of a Markdown document (module docs).
fn command_lines(markdown: &str) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut fence: Option<String> = None;
    let mut pending: Option<Line> = None;
    for (index, raw) in markdown.lines().enumerate() {
        let number = index + 1;
        let trimmed = raw.trim_start();
        if let Some(info) = trimmed.strip_prefix("```") {
            fence = match fence {
                Some(_) => None,
                None => Some(info.trim().to_owned()),
            };
            continue;
        }
        match fence.as_deref() {
            Some("sh" | "bash" | "shell" | "console") => {
                let text = strip_comment(trimmed);
                let (text, continued) = match text.trim_end().strip_suffix('\\') {
                    Some(head) => (head.to_owned(), true),
                    None => (text.trim_end().to_owned(), false),
                };
                let line = match pending.take() {
                    Some(mut line) => {
                        line.text.push(' ');
                        line.text.push_str(text.trim());
                        line
                    }
                    None => Line {
                        number,
                        text: text.trim().to_owned(),
                    },
                };
                if continued {
                    pending = Some(line);
                } else if !line.text.is_empty() {
                    lines.push(line);
                }
            }
            Some("ini") => {
                if let Some(command) = trimmed.strip_prefix("ExecStart=") {
                    lines.push(Line {
                        number,
                        text: command.trim().to_owned(),
                    });
                }
            }
            Some(_) => {}
            None => {
                for span in raw.split('`').skip(1).step_by(2) {
                    let is_command = ["tether-server ", "tether-provision ", "cargo run "]
                        .iter()
                        .any(|start| span.starts_with(start));
                    if is_command {
                        lines.push(Line {
                            number,
                            text: span.trim().to_owned(),
                        });
                    }
                }
            }
        }
    }
    lines
}

/// The line up to an unquoted `#` that starts a word.
fn strip_comment(line: &str) -> String {
    let (mut single, mut double) = (false, false);
    let mut previous = ' ';
    for (index, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && previous.is_whitespace() => {
                return line[..index].to_owned();
            }
            _ => {}
        }
        previous = c;
    }
    line.to_owned()
}

/// A word of a command, or an operator between commands.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Operator,
}

/// Splits a command line like a POSIX shell does for simple commands:
/// quotes, backslashes, and the operators `&&` `||` `|` `;`. Expansions
/// (`$`, backticks) are refused: a tether command line must not need them.
fn tokenize(line: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err("unterminated '".into()),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => w.push(chars.next().ok_or("unterminated \"")?),
                        Some('$' | '`') => return Err("expansion in a command line".into()),
                        Some(c) => w.push(c),
                        None => return Err("unterminated \"".into()),
                    }
                }
            }
            '\\' => word
                .get_or_insert_with(String::new)
                .push(chars.next().ok_or("trailing \\")?),
            '$' | '`' => return Err("expansion in a command line".into()),
            '&' | '|' | ';' => {
                if let Some(w) = word.take() {
                    tokens.push(Token::Word(w));
                }
                if matches!((c, chars.peek()), ('&', Some('&')) | ('|', Some('|'))) {
                    chars.next();
                } else if c == '&' {
                    return Err("background `&` in a command line".into());
                }
                tokens.push(Token::Operator);
            }
            c if c.is_whitespace() => {
                if let Some(w) = word.take() {
                    tokens.push(Token::Word(w));
                }
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    if let Some(w) = word.take() {
        tokens.push(Token::Word(w));
    }
    Ok(tokens)
}

/// What a command is.
#[derive(Debug)]
enum Kind {
    /// `export VAR=value …`.
    Export(Vec<(String, String)>),
    /// Runs a tether binary.
    Tether(Invocation),
    /// Not run: the rule.
    Excluded(&'static str),
}

#[derive(Debug)]
struct Invocation {
    env: Vec<(String, String)>,
    binary: &'static str,
    args: Vec<String>,
}

fn assignment(word: &str) -> Option<(String, String)> {
    let (name, value) = word.split_once('=')?;
    let valid = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    valid.then(|| (name.to_owned(), value.to_owned()))
}

fn classify(words: &[String]) -> Result<Kind, String> {
    let mut words = words;
    if words.first().map(String::as_str) == Some("export") {
        return words[1..]
            .iter()
            .map(|word| assignment(word).ok_or_else(|| format!("export of {word:?}")))
            .collect::<Result<_, _>>()
            .map(Kind::Export);
    }
    let mut env = Vec::new();
    while let Some(pair) = words.first().and_then(|word| assignment(word)) {
        env.push(pair);
        words = &words[1..];
    }
    if words.first().map(String::as_str) == Some("sudo") {
        words = match words.get(1).map(String::as_str) {
            Some("-u") if words.len() > 3 => &words[3..],
            Some(option) if option.starts_with('-') => {
                return Err("sudo other than `sudo [-u USER] COMMAND`".into());
            }
            _ => &words[1..],
        };
    }
    let program = words.first().ok_or("an empty command")?;
    let name = Path::new(program)
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or(program);
    if let Some(binary) = BINARIES.iter().find(|binary| **binary == name) {
        return Ok(Kind::Tether(Invocation {
            env,
            binary,
            args: words[1..].to_vec(),
        }));
    }
    if name == "cargo" && words.get(1).map(String::as_str) == Some("run") {
        if !words.iter().any(|word| word == "-p" || word == "--package") {
            // Run in a firmware example's directory: its cargo runner is
            // espflash.
            return Ok(Kind::Excluded(
                "`cargo run` of a firmware example flashes it (runner espflash): needs a board",
            ));
        }
        return cargo_run(env, &words[2..]).map(Kind::Tether);
    }
    EXCLUDED
        .iter()
        .find(|(excluded, _)| *excluded == name)
        .map(|(_, why)| Kind::Excluded(why))
        .ok_or_else(|| {
            format!("`{name}` is neither a tether binary nor excluded by a rule in EXCLUDED")
        })
}

/// `cargo run [--release] -p PACKAGE [--bin BINARY] -- ARGS` (a `cargo run`
/// without `-p` runs a firmware example, see [`classify`]).
fn cargo_run(env: Vec<(String, String)>, words: &[String]) -> Result<Invocation, String> {
    let (mut package, mut bin) = (None, None);
    let mut rest = words.iter();
    while let Some(word) = rest.next() {
        match word.as_str() {
            "--release" => {}
            "-p" | "--package" => package = rest.next().cloned(),
            "--bin" => bin = rest.next().cloned(),
            "--" => break,
            other => {
                return Err(format!(
                    "`cargo run` option {other:?} is not understood here"
                ));
            }
        }
    }
    let package = package.ok_or("`cargo run` without `-p tether-…`")?;
    let bin = bin.unwrap_or_else(|| package.clone());
    let binary = BINARIES
        .iter()
        .find(|binary| **binary == bin)
        .ok_or_else(|| format!("`cargo run` of {bin:?}: not a tether binary"))?;
    let owner = match *binary {
        "tether-server" => "tether-server",
        _ => "tether-host",
    };
    if package != owner {
        return Err(format!("binary {bin} is in package {owner}, not {package}"));
    }
    Ok(Invocation {
        env,
        binary,
        args: rest.cloned().collect(),
    })
}

/// Builds `tether-provision` (package tether-host) into the target
/// directory and profile this test was built in, and returns both
/// binaries' paths.
fn binaries() -> Result<BTreeMap<&'static str, PathBuf>, BoxError> {
    let server = PathBuf::from(env!("CARGO_BIN_EXE_tether-server"));
    let profile_dir = server.parent().ok_or("binary directory")?;
    let target_dir = profile_dir.parent().ok_or("target directory")?;
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => return Err("profile directory".into()),
    };
    let mut build = Command::new(env!("CARGO"));
    // Not what cargo set for this test (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`
    // …): build scripts that watch such a variable would rebuild, and the
    // next `cargo test` would rebuild them back.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_for_tests = [
            "CARGO_MANIFEST_",
            "CARGO_PKG_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
            || matches!(
                &*name,
                "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
                    | "OUT_DIR"
            );
        if set_for_tests {
            build.env_remove(&*name);
        }
    }
    let status = build
        .args([
            "build",
            "--quiet",
            "-p",
            "tether-host",
            "--bin",
            "tether-provision",
        ])
        .arg("--profile")
        .arg(profile)
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(workspace_root())
        .status()?;
    if !status.success() {
        return Err("cannot build tether-provision".into());
    }
    let mut map = BTreeMap::new();
    map.insert("tether-server", server.clone());
    map.insert("tether-provision", profile_dir.join("tether-provision"));
    Ok(map)
}

/// Runs one document's commands in order.
struct Runner {
    root: tempfile::TempDir,
    binaries: BTreeMap<&'static str, PathBuf>,
    exports: Vec<(String, String)>,
}

impl Runner {
    fn command(&self, invocation: &Invocation) -> Command {
        let mut command = Command::new(&self.binaries[invocation.binary]);
        let root = self.root.path();
        let mut args = invocation.args.iter().peekable();
        while let Some(arg) = args.next() {
            if arg == "--listen"
                && let Some(address) = args.next()
            {
                let host = address
                    .rsplit_once(':')
                    .map_or("127.0.0.1", |(host, _)| host);
                command.arg(arg).arg(format!("{host}:0"));
            } else if let Some(absolute) = arg.strip_prefix('/') {
                command.arg(root.join(absolute));
            } else {
                command.arg(arg);
            }
        }
        command
            .current_dir(root)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", root)
            .env("TETHER_LISTEN", "127.0.0.1:0")
            .envs(self.exports.iter().cloned())
            .envs(invocation.env.iter().cloned());
        command
    }

    fn run(&mut self, invocation: &Invocation) -> Result<String, BoxError> {
        let is_server = invocation.binary == "tether-server"
            && !invocation.args.iter().any(|arg| {
                matches!(
                    arg.as_str(),
                    "tenant"
                        | "device"
                        | "key"
                        | "invite"
                        | "help"
                        | "--help"
                        | "-h"
                        | "--version"
                        | "-V"
                )
            });
        if is_server {
            return self.run_server(invocation);
        }
        let mut child = self
            .command(invocation)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err("did not finish within 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut out = String::new();
        let mut err = String::new();
        if let Some(mut stdout) = child.stdout.take() {
            stdout.read_to_string(&mut out)?;
        }
        if let Some(mut stderr) = child.stderr.take() {
            stderr.read_to_string(&mut err)?;
        }
        if !status.success() {
            return Err(format!("exit status {status}\nstdout: {out}\nstderr: {err}").into());
        }
        Ok(out)
    }

    fn run_server(&mut self, invocation: &Invocation) -> Result<String, BoxError> {
        let demo = invocation.args.iter().any(|arg| arg == "--demo");
        let mut child = self
            .command(invocation)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (lines_tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let result = (|| -> Result<String, BoxError> {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut seen = Vec::new();
            let mut addr = None;
            let mut demo_started = !demo;
            while addr.is_none() || !demo_started {
                let left = deadline.saturating_duration_since(Instant::now());
                let line = lines
                    .recv_timeout(left)
                    .map_err(|_| format!("no `listening on` line; printed: {seen:?}"))?;
                if let Some(rest) = line.strip_prefix("listening on ") {
                    addr = Some(rest.trim().parse::<SocketAddr>()?);
                }
                demo_started |= line.starts_with("demo:");
                seen.push(line);
            }
            let addr = addr.ok_or("no address")?;
            let status = http_status(addr, "/healthz")?;
            if status != 200 {
                return Err(format!("GET /healthz answered {status}").into());
            }
            Ok(seen.join("\n"))
        })();
        let stopped = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        let exit = loop {
            if let Some(status) = child.try_wait()? {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = result?;
        stopped?;
        match exit {
            Some(status) if status.success() => Ok(out),
            Some(status) => Err(format!("stopped with {status}").into()),
            None => Err("did not stop within 20 s of SIGTERM".into()),
        }
    }
}

fn http_status(addr: SocketAddr, path: &str) -> Result<u16, BoxError> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response
        .split_whitespace()
        .nth(1)
        .ok_or("no status line")?
        .parse()?)
}

#[test]
fn every_command_line_in_the_docs_runs() -> Result<(), BoxError> {
    let binaries = binaries()?;
    let root = workspace_root();
    let mut ran = 0;
    let mut excluded = 0;
    let mut failures = Vec::new();
    for document in documents() {
        let markdown = std::fs::read_to_string(&document)?;
        let name = document
            .strip_prefix(&root)
            .unwrap_or(&document)
            .display()
            .to_string();
        let mut runner = Runner {
            root: tempfile::tempdir()?,
            binaries: binaries.clone(),
            exports: Vec::new(),
        };
        for line in command_lines(&markdown) {
            let place = format!("{name}:{}: `{}`", line.number, line.text);
            let tokens = match tokenize(&line.text) {
                Ok(tokens) => tokens,
                Err(error) => {
                    failures.push(format!("{place}: {error}"));
                    continue;
                }
            };
            let commands: Vec<Vec<String>> = tokens
                .split(|token| *token == Token::Operator)
                .map(|words| {
                    words
                        .iter()
                        .filter_map(|token| match token {
                            Token::Word(word) => Some(word.clone()),
                            Token::Operator => None,
                        })
                        .collect()
                })
                .collect();
            let kinds: Result<Vec<Kind>, String> =
                commands.iter().map(|words| classify(words)).collect();
            let kinds = match kinds {
                Ok(kinds) => kinds,
                Err(error) => {
                    failures.push(format!("{place}: {error}"));
                    continue;
                }
            };
            let tethers = kinds
                .iter()
                .filter(|k| matches!(k, Kind::Tether(_)))
                .count();
            if tethers > 0 && kinds.len() > 1 {
                failures.push(format!(
                    "{place}: a tether command joined with others; give it its own line"
                ));
                continue;
            }
            for kind in kinds {
                match kind {
                    Kind::Export(pairs) => runner.exports.extend(pairs),
                    Kind::Excluded(why) => {
                        excluded += 1;
                        println!("not run: {place}: {why}");
                    }
                    Kind::Tether(invocation) => match runner.run(&invocation) {
                        Ok(_) => {
                            ran += 1;
                            println!("ran:     {place}");
                        }
                        Err(error) => failures.push(format!("{place}: {error}")),
                    },
                }
            }
        }
    }
    println!("{ran} tether command lines ran, {excluded} lines not run by rule");
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
    // The docs have tether commands; finding none means the parser broke.
    assert!(ran >= 10, "only {ran} tether command lines found");
    Ok(())
}

#[test]
fn the_parser_reads_what_the_docs_write() {
    let markdown = "\
text `tether-server --help` and `tether-server` alone\n\
\n\
   ```sh\n\
   export TOKEN=abc   # a comment\n\
   cargo run -p tether-host --bin tether-provision -- \\\n\
       --server-url wss://x/v1/device \\\n\
       --out a.img\n\
   sudo -u tether tether-server --data-dir /var/lib/tether tenant add 'acme co'\n\
   groupadd -f g && usermod -aG g tether\n\
   ```\n\
```ini\n\
ExecStart=/usr/local/bin/tether-server --data-dir /var/lib/tether\n\
```\n";
    let lines: Vec<String> = command_lines(markdown)
        .into_iter()
        .map(|l| l.text)
        .collect();
    assert_eq!(
        lines,
        [
            "tether-server --help",
            "export TOKEN=abc",
            "cargo run -p tether-host --bin tether-provision -- --server-url wss://x/v1/device --out a.img",
            "sudo -u tether tether-server --data-dir /var/lib/tether tenant add 'acme co'",
            "groupadd -f g && usermod -aG g tether",
            "/usr/local/bin/tether-server --data-dir /var/lib/tether",
        ]
    );
    let words = |line: &str| -> Vec<String> {
        tokenize(line)
            .unwrap()
            .into_iter()
            .filter_map(|t| match t {
                Token::Word(w) => Some(w),
                Token::Operator => None,
            })
            .collect()
    };
    let Kind::Tether(invocation) = classify(&words(&lines[2])).unwrap() else {
        panic!("cargo run of tether-provision");
    };
    assert_eq!(invocation.binary, "tether-provision");
    assert_eq!(
        invocation.args,
        ["--server-url", "wss://x/v1/device", "--out", "a.img"]
    );
    let Kind::Tether(invocation) = classify(&words(&lines[3])).unwrap() else {
        panic!("sudo -u tether tether-server");
    };
    assert_eq!(invocation.args.last().map(String::as_str), Some("acme co"));
    assert!(matches!(
        classify(&words("espflash write-bin 0xe000 a.img")),
        Ok(Kind::Excluded(_))
    ));
    assert!(
        classify(&words("rm -rf /")).is_err(),
        "unknown programs need a rule"
    );
    assert!(tokenize("tether-server $HOME").is_err());
    assert!(
        classify(&words(
            "cargo run -p tether-server --bin tether-provision -- x"
        ))
        .is_err()
    );
}
