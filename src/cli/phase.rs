//! `phase run` and `upgrade status|reset`: the client side of the upgrade phases. The daemon runs
//! the phase; this command asks for it, streams the progress, and exits with the phase's outcome
//! (0 succeeded or already done, 1 failed, 2 invalid, 3 refused, 4 daemon unreachable) so the
//! calling Ansible task fails and the play stops where the documents say it should.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::{CliError, Exit, Global, OutputFormat};
use crate::core::phases::{Phase, Trigger};

/// `phase` subcommands.
#[derive(Debug, Subcommand)]
pub enum PhaseCommand {
    /// Ask the daemon to run one upgrade phase (its hooks and built-ins) and wait for the outcome.
    Run(RunArgs),
}

/// Arguments of `phase run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// pre-cordon, pre-upgrade, pre-uncordon or post-upgrade.
    #[arg(value_parser = parse_phase)]
    pub phase: Phase,
    /// The upgrade this phase belongs to (default: the open one; pre-cordon derives one).
    #[arg(long, value_name = "ID")]
    pub upgrade_id: Option<String>,
    /// The version being upgraded to (recorded; a different one than the open record's is refused).
    #[arg(long, value_name = "V")]
    pub target_version: Option<String>,
    /// Run even if the previous phase has not succeeded.
    #[arg(long)]
    pub ignore_order: bool,
    /// How long to wait for the daemon to come up (e.g. right after the reboot), in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub wait_daemon: u64,
}

fn parse_phase(s: &str) -> Result<Phase, String> {
    s.parse()
}

/// `upgrade` subcommands.
#[derive(Debug, Subcommand)]
pub enum UpgradeCommand {
    /// Show the open upgrade record (and recent closed ones): phases, attempts, boots, hooks.
    Status,
    /// Close an abandoned upgrade record deliberately.
    Reset,
}

/// Connect to the control socket, retrying until `wait` has passed (the daemon may be starting).
fn connect(socket: &Path, wait: Duration) -> Result<UnixStream, CliError> {
    let started = Instant::now();
    let mut told = false;
    loop {
        match UnixStream::connect(socket) {
            Ok(s) => return Ok(s),
            Err(e) if started.elapsed() >= wait => {
                return Err(CliError {
                    exit: Exit::Unreachable,
                    message: format!(
                        "{}: the daemon could not be reached{}: {e}",
                        socket.display(),
                        if wait.is_zero() {
                            String::new()
                        } else {
                            format!(" within {} s", wait.as_secs())
                        }
                    ),
                });
            }
            Err(e) => {
                if !told {
                    eprintln!(
                        "waiting up to {} s for the daemon at {} ({e})",
                        wait.as_secs(),
                        socket.display()
                    );
                    told = true;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

/// POST `body` to `path` and call `on_line` for each JSON line of the (streamed) reply. Returns
/// the HTTP status.
fn stream(
    stream: UnixStream,
    path: &str,
    body: &Value,
    mut on_line: impl FnMut(Value),
) -> Result<u16, CliError> {
    let lost = |e: std::io::Error| CliError::failed(format!("connection to the daemon lost: {e}"));
    let body = body.to_string();
    let mut w = stream.try_clone().map_err(lost)?;
    write!(
        w,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(lost)?;
    let mut r = BufReader::new(stream);
    let mut status_line = String::new();
    r.read_line(&mut status_line).map_err(lost)?;
    let code: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut chunked = false;
    let mut length: Option<usize> = None;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).map_err(lost)? == 0 || h == "\r\n" {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().ok();
        }
    }
    let mut pending = Vec::new();
    let mut deliver = |data: &[u8], pending: &mut Vec<u8>| {
        pending.extend_from_slice(data);
        while let Some(i) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=i).collect();
            if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                on_line(v);
            }
        }
    };
    if chunked {
        loop {
            let mut size = String::new();
            if r.read_line(&mut size).map_err(lost)? == 0 {
                break;
            }
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            let mut chunk = vec![0u8; n + 2];
            r.read_exact(&mut chunk).map_err(lost)?;
            deliver(&chunk[..n], &mut pending);
        }
    } else {
        let mut rest = Vec::new();
        match length {
            Some(n) => {
                rest.resize(n, 0);
                r.read_exact(&mut rest).map_err(lost)?;
            }
            None => {
                r.read_to_end(&mut rest).map_err(lost)?;
            }
        }
        deliver(&rest, &mut pending);
    }
    if !pending.is_empty() {
        pending.push(b'\n');
        deliver(&[], &mut pending);
    }
    Ok(code)
}

fn socket_of(g: &Global) -> PathBuf {
    super::daemon::socket_path(g)
}

/// `phase run`.
pub fn run(cmd: &PhaseCommand, g: &Global) -> Result<Exit, CliError> {
    let PhaseCommand::Run(a) = cmd;
    let socket = socket_of(g);
    let conn = connect(&socket, Duration::from_secs(a.wait_daemon))?;
    let trigger = Trigger {
        phase: Some(a.phase),
        upgrade_id: a.upgrade_id.clone(),
        target_version: a.target_version.clone(),
        ignore_order: a.ignore_order,
    };
    let json_out = g.format() == OutputFormat::Json;
    let mut result: Option<Value> = None;
    let code = stream(conn, "/v1/phases/run", &json!(trigger), |v| {
        if json_out {
            println!("{v}");
        } else {
            print_event(&v);
        }
        let _ = std::io::stdout().flush();
        if v["event"] == "result" {
            result = Some(v);
        }
    })?;
    if code == 403 {
        return Err(CliError::refused(
            "the daemon refused: running phases needs root (or the daemon's uid)",
        ));
    }
    let Some(r) = result else {
        return Err(CliError::failed(format!(
            "the connection to the daemon ended before {} finished (HTTP {code}); `rhel-node-agent upgrade status` shows its state, and running the same command again attaches to it",
            a.phase
        )));
    };
    let message = r["message"].as_str().unwrap_or("").to_string();
    match r["exit"].as_u64() {
        Some(0) => Ok(Exit::Ok),
        Some(2) => Err(CliError::invalid(message)),
        Some(3) => Err(CliError::refused(message)),
        _ => Err(CliError::failed(message)),
    }
}

fn print_event(v: &Value) {
    let phase = v["phase"].as_str().unwrap_or("");
    match v["event"].as_str().unwrap_or("") {
        "started" => println!(
            "{phase}: upgrade {}, attempt {}{}{}",
            v["upgrade_id"].as_str().unwrap_or("?"),
            v["attempt"],
            if v["opened"] == true {
                " (new upgrade record)"
            } else {
                ""
            },
            if v["reboot_detected"] == true {
                format!(
                    "; the node rebooted since the last phase (boot {})",
                    v["boot_id"].as_str().unwrap_or("?")
                )
            } else {
                String::new()
            }
        ),
        "step" => {
            let kind = v["kind"].as_str().unwrap_or("");
            let state = v["state"].as_str().unwrap_or("");
            let word = match state {
                "succeeded" => "done",
                o => o,
            };
            let msg = v["message"].as_str().unwrap_or("");
            if msg.is_empty() {
                println!(
                    "{phase}: {kind} {}: {word}",
                    v["name"].as_str().unwrap_or("")
                );
            } else {
                println!(
                    "{phase}: {kind} {}: {word}: {msg}",
                    v["name"].as_str().unwrap_or("")
                );
            }
        }
        "output" => println!(
            "  {} | {}",
            v["hook"].as_str().unwrap_or(""),
            v["line"].as_str().unwrap_or("")
        ),
        "lagged" => println!(
            "  … {} progress event(s) dropped (slow reader)",
            v["dropped"]
        ),
        "result" => {
            let outcome = v["outcome"].as_str().unwrap_or("?");
            match outcome {
                "succeeded" | "already-done" => {
                    println!("{phase}: {}", v["message"].as_str().unwrap_or(outcome))
                }
                // Failures go to stderr as `error: …` from the exit path.
                _ => {}
            }
        }
        _ => {}
    }
}

/// `upgrade status|reset`.
pub fn upgrade(cmd: &UpgradeCommand, g: &Global) -> Result<Exit, CliError> {
    let socket = socket_of(g);
    match cmd {
        UpgradeCommand::Status => {
            let v = match super::daemon::request(
                &socket,
                "GET",
                "/v1/upgrade",
                Duration::from_secs(10),
            ) {
                Ok((200, v)) => v,
                Ok((code, v)) => return Err(super::daemon::refused_or_failed(code, &v)),
                Err(e) if e.exit == Exit::Unreachable => offline_status(g, &e.message)?,
                Err(e) => return Err(e),
            };
            if g.format() == OutputFormat::Json {
                println!("{v}");
            } else {
                print_status(&v);
            }
            Ok(Exit::Ok)
        }
        UpgradeCommand::Reset => {
            let (code, v) = match super::daemon::request(
                &socket,
                "POST",
                "/v1/upgrade/reset",
                Duration::from_secs(30),
            ) {
                Ok(r) => r,
                Err(e) if e.exit == Exit::Unreachable => offline_reset(g)?,
                Err(e) => return Err(e),
            };
            if code == 409 {
                return Err(CliError::refused(v["error"].as_str().unwrap_or("refused")));
            }
            if code != 200 {
                return Err(super::daemon::refused_or_failed(code, &v));
            }
            if g.format() == OutputFormat::Json {
                println!("{v}");
            } else {
                match v["closed"].as_str() {
                    Some(id) => println!("upgrade {id} closed (reset)"),
                    None => println!("no upgrade is open; nothing to reset"),
                }
            }
            Ok(Exit::Ok)
        }
    }
}

/// The journal read from disk when the daemon is not running (read-only).
fn offline_status(g: &Global, why: &str) -> Result<Value, CliError> {
    let s = g.settings()?;
    let path = crate::runtime::phases::journal_path(&s.state_dir);
    let j = crate::runtime::phases::load_journal(&path).map_err(CliError::failed)?;
    eprintln!("warning: {why}; showing {} as last written", path.display());
    Ok(
        json!({"schema": 1, "offline": true, "boot_id": crate::runtime::phases::boot_id(&s.root),
              "running": null, "open": j.open, "closed": j.closed, "journal_error": null}),
    )
}

/// `upgrade reset` with no daemon running: edit the journal directly.
fn offline_reset(g: &Global) -> Result<(u16, Value), CliError> {
    let s = g.settings()?;
    if crate::adapters::fs::is_locked(&crate::adapters::registries::daemon_pid_path(&s)) {
        return Err(CliError {
            exit: Exit::Unreachable,
            message: "a daemon is running but its control socket cannot be reached".into(),
        });
    }
    let path = crate::runtime::phases::journal_path(&s.state_dir);
    let mut j = crate::runtime::phases::load_journal(&path).map_err(CliError::failed)?;
    // No daemon runs: whatever the journal says is running was interrupted.
    let now = crate::core::phases::Now {
        time: crate::core::phases::rfc3339(std::time::SystemTime::now()),
        boot_id: crate::runtime::phases::boot_id(&s.root),
        pid: std::process::id(),
    };
    j.recover(&now);
    let closed = j.reset(&now.time).map_err(CliError::refused)?;
    crate::runtime::phases::save_journal(&path, &j).map_err(CliError::failed)?;
    Ok((200, json!({"schema": 1, "ok": true, "closed": closed})))
}

fn tail_lines(s: &str, n: usize) -> Vec<&str> {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

fn print_record(r: &Value, current_boot: &str) {
    println!(
        "upgrade {} (target {}), opened {}{}",
        r["id"].as_str().unwrap_or("?"),
        r["target_version"]
            .as_str()
            .filter(|t| !t.is_empty())
            .unwrap_or("not given"),
        r["opened_at"].as_str().unwrap_or("?"),
        match r["closed_at"].as_str() {
            Some(t) => format!(", closed {t} by {}", r["closed_by"].as_str().unwrap_or("?")),
            None => String::new(),
        }
    );
    let boots: Vec<String> = r["boots"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            let id = b["boot_id"].as_str().unwrap_or("?");
            format!(
                "{}{} (first seen at {})",
                &id[..id.len().min(8)],
                if id == current_boot { ", current" } else { "" },
                b["phase"].as_str().unwrap_or("?")
            )
        })
        .collect();
    if boots.len() > 1 {
        println!(
            "  boots: {} — the node rebooted during this upgrade",
            boots.join(" → ")
        );
    } else if let Some(b) = boots.first() {
        println!("  boot:  {b}");
    }
    for p in r["phases"].as_array().into_iter().flatten() {
        let attempts = p["attempts"].as_array().cloned().unwrap_or_default();
        let last = attempts.last();
        let when = last
            .map(|a| {
                format!(
                    " — attempt {} {}{}{}",
                    a["number"],
                    a["started_at"].as_str().unwrap_or(""),
                    a["finished_at"]
                        .as_str()
                        .map(|f| format!(" → {f}"))
                        .unwrap_or_default(),
                    if a["reboot_detected"] == true {
                        " (after a reboot)"
                    } else {
                        ""
                    }
                )
            })
            .unwrap_or_default();
        println!(
            "  {:<13} {}{when}",
            p["phase"].as_str().unwrap_or("?"),
            p["state"].as_str().unwrap_or("?")
        );
        let Some(a) = last else { continue };
        if let Some(m) = a["message"].as_str().filter(|m| !m.is_empty()) {
            println!("      {m}");
        }
        for st in a["steps"].as_array().into_iter().flatten() {
            let state = match st["state"].as_str().unwrap_or("?") {
                "succeeded" => "done",
                o => o,
            };
            println!(
                "      {} {}: {state}{}",
                st["kind"].as_str().unwrap_or(""),
                st["name"].as_str().unwrap_or(""),
                st["message"]
                    .as_str()
                    .filter(|m| !m.is_empty())
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default()
            );
            if st["state"] == "failed" || st["state"] == "interrupted" {
                for l in tail_lines(st["output_tail"].as_str().unwrap_or(""), 10) {
                    println!("        | {l}");
                }
            }
        }
    }
}

fn print_status(v: &Value) {
    if let Some(e) = v["journal_error"].as_str() {
        println!("journal: {e}");
    }
    let boot = v["boot_id"].as_str().unwrap_or("");
    if let Some(r) = v["running"].as_object() {
        println!(
            "running: {} of upgrade {}",
            r["phase"].as_str().unwrap_or("?"),
            r["upgrade_id"].as_str().unwrap_or("?")
        );
    }
    match v["open"].as_object() {
        Some(_) => print_record(&v["open"], boot),
        None => println!("no upgrade is open"),
    }
    if let Some(last) = v["closed"].as_array().and_then(|c| c.last()) {
        println!("last closed:");
        print_record(last, boot);
    }
}
