//! `daemon`, `status`, `reconcile` and `config show|check`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::{CliError, Exit, Global, OutputFormat};
use crate::config::Settings;
use crate::runtime::{self, DaemonOptions};

/// Arguments of `daemon`.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Debounce of file events, e.g. "200ms".
    #[arg(long, default_value = "200ms", value_name = "DURATION")]
    pub debounce: String,
}

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective settings and the file each key came from.
    Show,
    /// Validate the configuration fragments without starting anything.
    Check,
}

/// Run the daemon in the foreground.
pub fn daemon(a: &DaemonArgs, g: &Global) -> Result<Exit, CliError> {
    let debounce = crate::config::parse_duration(&a.debounce)
        .map_err(|e| CliError::invalid(format!("--debounce: {e}")))?;
    let opts = DaemonOptions {
        root: g.root(),
        extra_config: g.config_dir.clone(),
        socket: g.socket.clone(),
        debounce,
        system_bus: g.system_bus.clone(),
    };
    match runtime::run(opts) {
        Ok(()) => Ok(Exit::Ok),
        Err(e @ runtime::DaemonError::Config(_)) => Err(CliError::invalid(e)),
        Err(e @ runtime::DaemonError::AlreadyRunning(_)) => Err(CliError::refused(e)),
        Err(e) => Err(CliError::failed(e)),
    }
}

/// The control socket: `--socket`, else `api.socket`. A broken configuration must not stop an
/// administrator from asking the daemon what is wrong, so it falls back to the default path.
pub fn socket_path(g: &Global) -> PathBuf {
    match &g.socket {
        Some(p) => p.clone(),
        None => match g.settings() {
            Ok(s) => s.api.socket,
            Err(e) => {
                eprintln!("warning: {}: using the default control socket", e.message);
                Settings::defaults(&g.root()).api.socket
            }
        },
    }
}

/// One HTTP/1.1 request over the control socket; returns (status code, JSON body).
pub fn request(
    socket: &PathBuf,
    method: &str,
    path: &str,
    timeout: Duration,
) -> Result<(u16, Value), CliError> {
    let unreachable = |e: std::io::Error| CliError {
        exit: Exit::Unreachable,
        message: format!("{}: the daemon could not be reached: {e}", socket.display()),
    };
    let mut stream = UnixStream::connect(socket).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(unreachable)?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(unreachable)?;
    let req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).map_err(unreachable)?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).map_err(unreachable)?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| CliError::failed("malformed reply from the daemon"))?;
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| json!({"error": body}));
    Ok((code, v))
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// Map an error reply: 403 → refused (exit 3), anything else → failed.
pub fn refused_or_failed(code: u16, v: &Value) -> CliError {
    let msg = v
        .get("error")
        .and_then(|e| e.as_str())
        .unwrap_or("request failed")
        .to_string();
    if code == 403 {
        CliError::refused(msg)
    } else {
        CliError::failed(msg)
    }
}

/// `status`: the daemon's view of the node.
pub fn status(g: &Global) -> Result<Exit, CliError> {
    let sock = socket_path(g);
    let (code, v) = request(&sock, "GET", "/v1/status", Duration::from_secs(10))?;
    if code != 200 {
        return Err(refused_or_failed(code, &v));
    }
    if g.format() == OutputFormat::Json {
        println!("{v}");
        return Ok(Exit::Ok);
    }
    let m = &v["mirrors"];
    println!(
        "rhel-node-agent {} (pid {})",
        v["version"].as_str().unwrap_or("?"),
        v["pid"]
    );
    println!(
        "  mirrors:   {} (mode {})",
        m["state"].as_str().unwrap_or("?"),
        m["mode"].as_str().unwrap_or("?")
    );
    if let Some(s) = m.get("summary").filter(|s| !s.is_null()) {
        println!(
            "             {} sources, {} mirrors managed",
            s["sources"], s["mirrors"]
        );
    }
    println!(
        "             {} reconciles, {} changes",
        m["reconciles"], m["changes"]
    );
    for key in ["last_error", "held_reason"] {
        if let Some(e) = m[key].as_str() {
            println!("             {}: {e}", key.replace('_', " "));
        }
    }
    for d in m["differences"].as_array().into_iter().flatten() {
        println!("             drift: {}", d.as_str().unwrap_or(""));
    }
    for w in m["warnings"].as_array().into_iter().flatten() {
        println!("             warning: {}", w.as_str().unwrap_or(""));
    }
    println!("  firewalld: {}", v["firewalld"].as_str().unwrap_or("?"));
    let f = &v["firewalld_detail"];
    if f["drifts"].as_u64().unwrap_or(0) > 0 {
        println!(
            "             {} drift(s) restored; last: {}",
            f["drifts"],
            f["last_drift"][1].as_str().unwrap_or("?")
        );
    }
    if let Some(e) = f["last_error"].as_str() {
        println!("             error: {e}");
    }
    for u in f["undeclared"].as_array().into_iter().flatten() {
        println!("             undeclared: {}", u.as_str().unwrap_or(""));
    }
    println!("  phase:     {}", v["phase"].as_str().unwrap_or("?"));
    println!("  cluster:   {}", v["cluster"].as_str().unwrap_or("?"));
    if let Some(e) = v["config_error"].as_str() {
        println!("  config:    {e} (running with the previous settings)");
    }
    Ok(Exit::Ok)
}

/// `reconcile`: ask the daemon to reconcile now and wait for the outcome.
pub fn reconcile(g: &Global) -> Result<Exit, CliError> {
    let sock = socket_path(g);
    let started = Instant::now();
    let (code, v) = request(&sock, "POST", "/v1/reconcile", Duration::from_secs(300))?;
    if code != 200 {
        return Err(refused_or_failed(code, &v));
    }
    if g.format() == OutputFormat::Json {
        println!("{v}");
    } else if v["ok"].as_bool() == Some(true) {
        let what = if v["held"].as_bool() == Some(true) {
            "change held (needs a drain)"
        } else if v["changed"].as_bool() == Some(true) {
            "applied"
        } else {
            "unchanged"
        };
        println!("reconcile: {what} ({} ms)", started.elapsed().as_millis());
    }
    if v["ok"].as_bool() == Some(true) {
        Ok(Exit::Ok)
    } else {
        Err(CliError::failed(
            v["error"].as_str().unwrap_or("reconcile failed"),
        ))
    }
}

/// `config show` / `config check`.
pub fn config(cmd: &ConfigCommand, g: &Global) -> Result<Exit, CliError> {
    let s: Settings = g.settings()?;
    match cmd {
        ConfigCommand::Check => {
            let files = crate::config::fragment_files(&g.root(), g.config_dir.as_deref())
                .map_err(CliError::invalid)?;
            if g.format() == OutputFormat::Json {
                println!("{}", json!({"schema": 1, "ok": true, "files": files}));
            } else {
                println!("configuration ok ({} fragment(s))", files.len());
            }
        }
        ConfigCommand::Show => {
            let shown = crate::config::effective_settings(&g.root(), g.config_dir.as_deref())
                .map_err(CliError::invalid)?;
            if g.format() == OutputFormat::Json {
                println!("{}", json!({"schema": 1, "settings": shown, "resolved": s}));
            } else {
                let width = shown
                    .iter()
                    .map(|e| e.key.len() + e.value.len())
                    .max()
                    .unwrap_or(0)
                    + 3;
                for e in &shown {
                    let kv = format!("{} = {}", e.key, e.value);
                    println!("{kv:<width$} # {}", e.origin);
                }
            }
        }
    }
    Ok(Exit::Ok)
}
