//! What the daemon knows about itself, shared between the main loop, the control socket and the
//! `STATUS=` line.

use std::time::SystemTime;

use serde::Serialize;

use crate::adapters::registries::ApplyReport;
use crate::config::MirrorMode;
use crate::core::mirrors::engine::ManagedSummary;

/// Seconds since the Unix epoch (for JSON).
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The mirror component's state.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MirrorStatus {
    /// Mode in effect (`auto` resolved).
    pub mode: Option<MirrorMode>,
    /// `ok`, `error`, `held` (a change needs a drain) or `drift` (verify found differences).
    pub state: String,
    /// What the agent manages.
    pub summary: Option<ManagedSummary>,
    /// When the last reconcile finished.
    pub last_reconcile: Option<u64>,
    /// When a file was last changed.
    pub last_change: Option<u64>,
    /// Reconciles since start, and how many changed files.
    pub reconciles: u64,
    /// Reconciles that changed a file.
    pub changes: u64,
    /// The last error, verbatim.
    pub last_error: Option<String>,
    /// Warnings of the last reconcile.
    pub warnings: Vec<String>,
    /// Why a change is held (needs a drain), when it is.
    pub held_reason: Option<String>,
    /// Differences found in verify mode.
    pub differences: Vec<String>,
}

/// Everything `rhel-node-agent status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct DaemonStatus {
    /// JSON schema version.
    pub schema: u32,
    /// Agent version.
    pub version: String,
    /// Daemon pid.
    pub pid: u32,
    /// Start time.
    pub started: u64,
    /// `--root`, when not `/`.
    pub root: String,
    /// The upgrade phase (the phases issue fills this in).
    pub phase: String,
    /// firewalld in one word (`disabled (disabled/inactive)`, `unmanaged`, …).
    pub firewalld: String,
    /// firewalld in detail: desired state, unit, drifts, undeclared settings, last error.
    pub firewalld_detail: super::firewall::FirewallStatus,
    /// Cluster connection (the Kubernetes issue fills this in).
    pub cluster: String,
    /// Mirror component.
    pub mirrors: MirrorStatus,
    /// Last configuration (re)load error, if the current settings are the previous good ones.
    pub config_error: Option<String>,
}

impl DaemonStatus {
    /// A fresh status.
    pub fn new(root: &str) -> DaemonStatus {
        DaemonStatus {
            schema: 1,
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            started: now(),
            root: root.to_string(),
            phase: "idle".into(),
            firewalld: "unmanaged".into(),
            firewalld_detail: Default::default(),
            cluster: "not configured".into(),
            mirrors: MirrorStatus {
                state: "pending".into(),
                ..MirrorStatus::default()
            },
            config_error: None,
        }
    }

    /// Record the outcome of one reconcile.
    pub fn record(&mut self, result: &Result<ApplyReport, String>) {
        let m = &mut self.mirrors;
        m.reconciles += 1;
        m.last_reconcile = Some(now());
        match result {
            Ok(r) => {
                m.mode = Some(r.mode);
                m.last_error = None;
                m.warnings = r.warnings.clone();
                if r.summary.is_some() {
                    m.summary = r.summary.clone();
                }
                m.held_reason = None;
                m.differences = vec![];
                if let Some(v) = &r.verify {
                    m.differences = v
                        .differences
                        .iter()
                        .map(|d| format!("{}: {}", d.scope, d.message))
                        .collect();
                    m.state = if m.differences.is_empty() {
                        "ok"
                    } else {
                        "drift"
                    }
                    .into();
                } else if r.held {
                    m.state = "held".into();
                    m.held_reason = r.classification.as_ref().map(|c| c.reason.clone());
                } else {
                    m.state = "ok".into();
                    if r.changed() {
                        m.changes += 1;
                        m.last_change = Some(now());
                    }
                }
            }
            Err(e) => {
                m.state = "error".into();
                m.last_error = Some(e.clone());
            }
        }
    }

    /// The one-line `STATUS=` text: `mirrors: 12 sources applied, firewalld: disabled, phase: idle`.
    pub fn status_line(&self) -> String {
        let m = &self.mirrors;
        let sources = m.summary.as_ref().map(|s| s.sources).unwrap_or(0);
        let mirrors = match m.state.as_str() {
            "ok" if m.mode == Some(MirrorMode::Verify) => format!("{sources} sources verified"),
            "ok" => format!("{sources} sources applied"),
            "drift" => format!("{} differences from the policies", m.differences.len()),
            "held" => "change held until the next upgrade (needs a drain)".into(),
            "error" => "error (see rhel-node-agent status)".into(),
            other => other.to_string(),
        };
        format!(
            "mirrors: {mirrors}, firewalld: {}, phase: {}",
            self.firewalld, self.phase
        )
    }
}
