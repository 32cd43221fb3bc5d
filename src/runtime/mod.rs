//! The daemon: watchers, the reconcile loop, the control socket and systemd integration.
//!
//! Events only say "something changed": the loop re-reads the configuration, the policies and
//! registries.conf, and lets [`crate::adapters::registries::apply_mirrors`] decide (an unchanged
//! state costs a fingerprint check). A periodic resync covers missed events.

pub mod cluster;
pub mod firewall;
pub mod metrics;
pub mod phases;
pub mod sdnotify;
pub mod socket;
pub mod status;
pub mod watch;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::adapters::fs as afs;
use crate::adapters::policy_scan::SeenChanges;
use crate::adapters::registries::{self, ApplyReport, ApplyRequest};
use crate::adapters::systemd;
use crate::config::{self, MirrorMode, Settings};
use status::DaemonStatus;

/// Why the daemon could not start (once running, it reports problems instead of exiting).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The configuration is invalid at start-up.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// Another daemon holds the pid-file lock.
    #[error("{0}: another rhel-node-agent daemon is running")]
    AlreadyRunning(String),
    /// A file or socket could not be set up.
    #[error("{path}: {source}")]
    Io {
        /// What failed.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The file lock failed.
    #[error(transparent)]
    Fs(#[from] afs::FsError),
}

/// Where the daemon reads from and how.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// `--root`.
    pub root: PathBuf,
    /// `--config-dir`.
    pub extra_config: Option<PathBuf>,
    /// `--socket` (overrides `api.socket`).
    pub socket: Option<PathBuf>,
    /// Debounce of file events.
    pub debounce: Duration,
    /// `--system-bus`: the D-Bus address used as the system bus.
    pub system_bus: Option<String>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DaemonError + '_ {
    move |source| DaemonError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The paths whose changes trigger a reconcile.
fn watched_paths(s: &Settings, extra: Option<&Path>) -> Vec<PathBuf> {
    if s.kubernetes.watch_cluster_policies && !s.kubernetes.kubeconfig.is_empty() {
        // Watched from the start, so the first generated file is seen (and no parent directory
        // full of the agent's own state is watched instead).
        let _ = fs::create_dir_all(crate::adapters::cluster_policies::dir(&s.state_dir));
    }
    let mut v: Vec<PathBuf> = s.mirrors.policy_dirs.clone();
    if !s.kubernetes.kubeconfig.is_empty() {
        // What the cluster says about the Node ("OpenShift node"): `auto` settings follow it.
        let _ = fs::create_dir_all(s.cluster_facts_dir());
        v.push(s.cluster_facts_dir());
    }
    if let Some(dir) = s.mirrors.registries_conf.parent() {
        v.push(dir.to_path_buf());
    }
    if let Ok(real) = fs::canonicalize(&s.mirrors.registries_conf) {
        if let Some(dir) = real.parent() {
            v.push(dir.to_path_buf());
        }
    }
    v.push(s.mirrors.dropin_dir.clone());
    v.push(config::under_root(&s.root, config::VENDOR_DIR));
    v.push(config::under_root(&s.root, config::ADMIN_DIR));
    if let Some(e) = extra {
        v.push(e.to_path_buf());
    }
    v
}

/// The longest a reconcile may take before the watchdog stops vouching for the daemon (file
/// work is milliseconds; each unit reload has a 90 s timeout).
const RECONCILE_BOUND: Duration = Duration::from_secs(300);

/// The longest a burst of file events may postpone a reconcile (and with it signal handling).
const DEBOUNCE_LIMIT: Duration = Duration::from_secs(2);

/// What the watchdog task looks at.
struct Health {
    /// Last time the main loop went round.
    tick: Instant,
    /// When the running reconcile started, if one is running.
    busy_since: Option<Instant>,
}

/// The policy file an error message starts with (`/etc/…/x.yaml:12: …`), for the `RNA_POLICY`
/// journal field; empty when the error is not about a policy file.
fn policy_of(error: &str) -> &str {
    let path = error.split(':').next().unwrap_or("");
    if path.ends_with(".yaml") || path.ends_with(".yml") || path.ends_with(".json") {
        path
    } else {
        ""
    }
}

/// Loop state that outlives one reconcile.
#[derive(Default)]
struct ReloadState {
    /// A change is on disk but the units have not been reloaded yet (the bus was unreachable, or
    /// the reload was deferred until after READY=1).
    pending: bool,
    /// The files the last written change touched, with their previous contents: what a rollback
    /// restores (also when the reload runs in a later reconcile).
    last_changes: Vec<registries::FileChange>,
    /// Do not talk to D-Bus in this reconcile: set for the first one, so READY=1 never waits on
    /// the bus; the reload then runs right after READY=1.
    defer_reload: bool,
    /// Digest of the inputs whose change left a unit inactive, and that report: not applied again
    /// until they change.
    quarantined: Option<(String, String)>,
    /// The mirror engine's state from the last apply: a change of one policy file is then
    /// re-rendered incrementally instead of re-parsing every policy and the whole file.
    mirror_cache: std::sync::Arc<std::sync::Mutex<registries::MirrorCache>>,
}

/// The configured policy directories that exist (a missing one contributes no policies).
fn existing_policy_dirs(s: &Settings) -> Vec<PathBuf> {
    s.mirrors
        .policy_dirs
        .iter()
        .filter(|p| p.exists())
        .cloned()
        .collect()
}

/// Digest of the policy files and mirror settings (what decides the rendered result).
fn inputs_digest(s: &Settings) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    // Only what decides the rendered files: editing e.g. `backups` must not lift a quarantine.
    let m = &s.mirrors;
    let key = format!(
        "{:?}|{:?}|{}|{}|{}|{}|{:?}",
        m.mode,
        m.style,
        m.payload_repo,
        m.registries_conf.display(),
        m.dropin_dir.display(),
        m.dropin_name,
        m.policy_dirs
    );
    h.update(key.as_bytes());
    let dirs = existing_policy_dirs(s);
    for (p, b) in registries::read_policy_files(&dirs).unwrap_or_default() {
        h.update(p.as_os_str().as_encoded_bytes());
        h.update((b.len() as u64).to_le_bytes());
        h.update(&b);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Reload the configured units (CRI-O) after a change, as the machine-config-daemon does. If a
/// unit is no longer active afterwards, put the previous files back, reload again and report.
async fn reload_after_change(
    s: &Settings,
    state: &mut ReloadState,
    metrics: &metrics::Metrics,
) -> Result<(), String> {
    let conn = match systemd::connect(s.system_bus.as_deref()).await {
        Ok(c) => c,
        Err(e) => {
            state.pending = true;
            return Err(format!("{e}; the new registries configuration is written but {} not reloaded yet (retried)", s.mirrors.reload_units.join(", ")));
        }
    };
    let mut broken = Vec::new();
    for unit in &s.mirrors.reload_units {
        match systemd::reload_if_active(&conn, unit, Duration::from_secs(90)).await {
            Ok(r) => {
                tracing::info!(rna_component = "mirrors", rna_unit = %r.unit, outcome = %r.outcome, active_state = %r.active_state, "unit reload");
                metrics.reloaded(&r.unit, r.outcome.split(' ').next().unwrap_or("unknown"));
                if r.left_inactive() {
                    broken.push(format!(
                        "{} ({}, now {})",
                        r.unit, r.outcome, r.active_state
                    ));
                }
            }
            Err(e) => {
                state.pending = true;
                metrics.reloaded(unit, "error");
                return Err(e.to_string());
            }
        }
    }
    state.pending = false;
    if broken.is_empty() {
        state.last_changes.clear();
        return Ok(());
    }
    // Roll back, under the lock the CLI uses: the previous contents of every file the last change
    // touched — unless someone changed the file since we wrote it (then it is left alone).
    let target = afs::resolve_target(&s.mirrors.registries_conf)
        .unwrap_or_else(|_| s.mirrors.registries_conf.clone());
    let lock = afs::lock(&afs::lock_path_for(&s.state_dir, &target), true);
    let mut skipped = Vec::new();
    for c in &state.last_changes {
        let current = afs::read_optional(&c.path)
            .ok()
            .flatten()
            .map(|b| String::from_utf8_lossy(&b).to_string());
        if current.as_deref() != c.new.as_deref().map(String::as_str) {
            skipped.push(c.path.display().to_string());
            continue;
        }
        let ropts = afs::ReplaceOptions {
            backup_dir: Some(s.state_dir.join("backup")),
            keep_backups: s.mirrors.backups,
        };
        let restored = match &c.old {
            Some(old) => afs::atomic_replace(&c.path, old.as_bytes(), &ropts).map(|_| ()),
            None => std::fs::remove_file(&c.path).map_err(|source| afs::FsError::Io {
                path: c.path.display().to_string(),
                op: "remove",
                source,
            }),
        };
        if let Err(e) = restored {
            return Err(format!(
                "{} not active after the reload, and restoring {} failed: {e}",
                broken.join(", "),
                c.path.display()
            ));
        }
    }
    drop(lock);
    state.last_changes.clear();
    // The bad configuration stopped the unit: start it again on the restored one.
    for unit in &s.mirrors.reload_units {
        match systemd::reload_if_active(&conn, unit, Duration::from_secs(90)).await {
            Ok(r) if r.active_state != "active" && r.active_state != "reloading" => {
                match systemd::start_unit(&conn, unit, Duration::from_secs(90)).await {
                    Ok(result) => {
                        tracing::info!(rna_component = "mirrors", rna_unit = unit, result = %result, "unit started after the rollback")
                    }
                    Err(e) => {
                        tracing::warn!(rna_component = "mirrors", rna_unit = unit, error = %e, "start after the rollback failed")
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(rna_component = "mirrors", rna_unit = unit, error = %e, "reload after the rollback failed")
            }
        }
    }
    if !skipped.is_empty() {
        tracing::warn!(rna_component = "mirrors", files = %skipped.join(", "), "changed since the agent wrote them; not rolled back");
    }
    let reason = format!(
        "{} not active after reloading for the new registries configuration; the previous files were restored and the unit started again. The policies are not applied again until they change",
        broken.join(", ")
    );
    state.quarantined = Some((inputs_digest(s), reason.clone()));
    Err(reason)
}

/// The differences verify mode found (`scope: what`), for the `MirrorsDrift` Event; empty when
/// there are none, outside verify mode, or when the reconcile failed (reported otherwise).
fn drift_of(result: &Result<ApplyReport, String>) -> Vec<String> {
    result
        .as_ref()
        .ok()
        .and_then(|r| r.verify.as_ref())
        .map(|v| {
            v.differences
                .iter()
                .map(|d| format!("{}: {}", d.scope, d.message))
                .collect()
        })
        .unwrap_or_default()
}

/// One reconcile of the mirror component, run off the async thread (file I/O and parsing).
async fn reconcile(
    s: &Settings,
    state: &mut ReloadState,
    metrics: &metrics::Metrics,
    release_held: bool,
) -> Result<ApplyReport, String> {
    let started = Instant::now();
    let result = reconcile_inner(s, state, metrics, release_held).await;
    let outcome = match &result {
        Ok(r)
            if r.verify
                .as_ref()
                .map(|v| !v.differences.is_empty())
                .unwrap_or(false) =>
        {
            "drift"
        }
        Ok(r) if r.held => "held",
        Ok(r) if r.changed() => "changed",
        Ok(_) => "unchanged",
        Err(_) => "error",
    };
    metrics.reconciled("mirrors", outcome);
    metrics
        .reconcile_seconds
        .observe(started.elapsed().as_secs_f64());
    if let Ok(r) = &result {
        metrics.mirror_drift.set(
            r.verify
                .as_ref()
                .map(|v| v.differences.len() as i64)
                .unwrap_or(0),
        );
    }
    result
}

async fn reconcile_inner(
    s: &Settings,
    state: &mut ReloadState,
    metrics: &metrics::Metrics,
    release_held: bool,
) -> Result<ApplyReport, String> {
    if let Some((digest, reason)) = &state.quarantined {
        if *digest == inputs_digest(s) {
            return Err(reason.clone());
        }
        state.quarantined = None;
    }
    let policies = existing_policy_dirs(s);
    let req = ApplyRequest {
        registries_conf: s.mirrors.registries_conf.clone(),
        dropin_dir: s.mirrors.dropin_dir.clone(),
        policies,
        mode: registries::resolve_mode(s, None),
        style: s.mirrors.style,
        dry_run: false,
        skip_daemon_check: true,
        // During an upgrade the node is drained: what was held for a drain is applied now.
        hold_unsafe: s.mirrors.on_drain_required == "hold" && !release_held,
    };
    let settings = s.clone();
    let cache = state.mirror_cache.clone();
    let joined = tokio::task::spawn_blocking(move || {
        let mut cache = cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        registries::apply_mirrors_cached(&settings, &req, Some(&mut cache))
    })
    .await;
    let mut result = match joined {
        Ok(r) => r.map_err(|e| e.message),
        Err(e) => Err(format!("reconcile task failed: {e}")),
    };
    let wrote =
        matches!(&result, Ok(r) if r.changed() && !r.held && !r.dry_run && r.verify.is_none());
    if let Ok(r) = &result {
        // Kept only to roll back a reload that stops a unit (cleared once the reload is done; not
        // kept at all without units, so the engine can reuse the old text's buffer).
        if wrote && !s.mirrors.reload_units.is_empty() {
            state.last_changes = r.changes.clone();
        }
    }
    // A reload still owed for an earlier write is attempted even when this apply failed (a bad
    // policy must not keep CRI-O on an old configuration).
    if !wrote
        && state.pending
        && result.is_err()
        && !state.defer_reload
        && !s.mirrors.reload_units.is_empty()
    {
        if let Err(e) = reload_after_change(s, state, metrics).await {
            tracing::error!(rna_component = "mirrors", error = %e, "pending unit reload failed");
        }
    }
    if result.is_ok() {
        let needs_reload = wrote || state.pending;
        if needs_reload && !s.mirrors.reload_units.is_empty() {
            if state.defer_reload {
                state.pending = true;
            } else if let Err(e) = reload_after_change(s, state, metrics).await {
                result = Err(e);
            }
        }
    }
    match &result {
        Ok(r) if r.held => tracing::warn!(
            rna_component = "mirrors",
            reason = r
                .classification
                .as_ref()
                .map(|c| c.reason.as_str())
                .unwrap_or(""),
            "mirror change needs a drain; held until the next upgrade"
        ),
        Ok(r) if r.changed() => tracing::info!(
            rna_component = "mirrors",
            files = r.changes.len(),
            incremental = r.incremental,
            "mirror policies applied"
        ),
        Ok(r) => tracing::debug!(
            rna_component = "mirrors",
            cached = r.cached,
            "mirror policies unchanged"
        ),
        Err(e) => {
            tracing::error!(rna_component = "mirrors", rna_policy = %policy_of(e), error = %e, "mirror reconcile failed")
        }
    }
    result
}

fn report_json(r: &Result<ApplyReport, String>) -> serde_json::Value {
    match r {
        Ok(r) => json!({
            "schema": 1, "ok": true, "changed": r.changed(), "held": r.held, "cached": r.cached,
            "files": r.changes.iter().map(|c| c.path.display().to_string()).collect::<Vec<_>>(),
            "classification": r.classification, "summary": r.summary, "warnings": r.warnings,
            "differences": r.verify.as_ref().map(|v| v.differences.clone()),
        }),
        Err(e) => json!({"schema": 1, "ok": false, "error": e}),
    }
}

/// Write the pid file the CLI reads: pid, then every file this daemon manages.
fn write_pid_file(lock: &afs::FileLock, s: &Settings) -> Result<(), DaemonError> {
    let mut lines = vec![std::process::id().to_string()];
    if registries::resolve_mode(s, None) != MirrorMode::Verify {
        let target = afs::resolve_target(&s.mirrors.registries_conf)
            .unwrap_or_else(|_| s.mirrors.registries_conf.clone());
        lines.push(target.display().to_string());
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&lock.path)
        .map_err(io_err(&lock.path))?;
    f.write_all(format!("{}\n", lines.join("\n")).as_bytes())
        .map_err(io_err(&lock.path))?;
    Ok(())
}

/// Make newly loaded settings visible outside the loop: the pid file's list of managed files (the
/// CLI's ownership check) and the socket's read group.
fn adopt(
    s: &Settings,
    pid_lock: &afs::FileLock,
    read_group: &Mutex<String>,
    shared: &Mutex<Settings>,
) {
    *shared.lock().unwrap_or_else(|p| p.into_inner()) = s.clone();
    if let Err(e) = write_pid_file(pid_lock, s) {
        tracing::warn!(rna_component = "daemon", error = %e, "cannot update the pid file");
    }
    *read_group.lock().unwrap_or_else(|p| p.into_inner()) = s.api.read_group.clone();
}

/// Run the daemon until SIGTERM/SIGINT.
pub fn run(opts: DaemonOptions) -> Result<(), DaemonError> {
    let load = |opts: &DaemonOptions| -> Result<Settings, config::ConfigError> {
        let mut s = Settings::load(&opts.root, opts.extra_config.as_deref())?;
        s.confine(opts.system_bus.as_deref());
        Ok(s)
    };
    let mut settings = load(&opts)?;
    let socket_path = opts
        .socket
        .clone()
        .unwrap_or_else(|| settings.api.socket.clone());
    let pid_path = registries::daemon_pid_path(&settings);
    let pid_lock = match afs::lock(&pid_path, false) {
        Ok(l) => l,
        Err(afs::FsError::Locked { path }) => return Err(DaemonError::AlreadyRunning(path)),
        Err(e) => return Err(e.into()),
    };
    write_pid_file(&pid_lock, &settings)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(2)
        .build()
        .map_err(io_err(Path::new("tokio runtime")))?;
    let result = rt.block_on(async {
        let root_label = if opts.root == Path::new("/") { String::new() } else { opts.root.display().to_string() };
        let status = Arc::new(Mutex::new(DaemonStatus::new(&root_label)));
        let (changed_tx, mut changed_rx) = mpsc::channel::<()>(1);
        let (reconcile_tx, mut reconcile_rx) = mpsc::channel::<socket::ReconcileRequest>(8);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

        let listener = socket::bind(&socket_path).map_err(io_err(&socket_path))?;
        let read_group = Arc::new(Mutex::new(settings.api.read_group.clone()));
        let shared = Arc::new(Mutex::new(settings.clone()));
        let phase_svc = phases::PhaseService::start(shared.clone(), reconcile_tx.clone(), status.clone()).await;
        let api = socket::Api { status: status.clone(), reconcile: reconcile_tx, read_group: read_group.clone(), phases: phase_svc.clone() };
        let mut stop_for_server = stop_rx.clone();
        let server = tokio::spawn(socket::serve(listener, api, async move {
            let _ = stop_for_server.wait_for(|s| *s).await;
        }));

        let metrics = Arc::new(metrics::Metrics::new());
        let firewall_svc = firewall::FirewallService::new(shared.clone(), phase_svc.clone(), status.clone(), metrics.clone());
        phase_svc.set_firewall(&firewall_svc);
        let firewall_task = tokio::spawn(firewall_svc.clone().watch());
        let cluster_svc = cluster::ClusterService::new(shared.clone(), status.clone(), phase_svc.clone());
        phase_svc.set_cluster(&cluster_svc);
        let cluster_task = tokio::spawn(cluster_svc.clone().run());
        let policies_task = tokio::spawn(cluster::feed_cluster_policies(cluster_svc.clone()));
        let metrics_server = if settings.api.metrics_listen.is_empty() {
            None
        } else {
            let addr = settings.api.metrics_listen.clone();
            let listener = tokio::net::TcpListener::bind(&addr).await.map_err(io_err(Path::new(&addr)))?;
            tracing::info!(rna_component = "daemon", listen = %addr, "serving metrics");
            let mut stop = stop_rx.clone();
            Some(tokio::spawn(metrics::serve(listener, metrics.clone(), async move {
                let _ = stop.wait_for(|s| *s).await;
            })))
        };
        let rewatch_tx = changed_tx.clone();
        let mut watches = watch::Watches::new(changed_tx).map_err(|e| DaemonError::Io {
            path: "inotify".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        watches.ensure(&watched_paths(&settings, opts.extra_config.as_deref()));

        let mut sighup = signal(SignalKind::hangup()).map_err(io_err(Path::new("SIGHUP")))?;
        let mut sigterm = signal(SignalKind::terminate()).map_err(io_err(Path::new("SIGTERM")))?;
        let mut sigint = signal(SignalKind::interrupt()).map_err(io_err(Path::new("SIGINT")))?;
        let mut resync = tokio::time::interval(settings.mirrors.resync_interval.max(Duration::from_secs(1)));
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        resync.tick().await;
        // Watchdog: a task pings while the main loop is healthy — idle and ticking, or inside a
        // reconcile that is within its bound (a slow CRI-O reload or a D-Bus outage is reported,
        // not a reason to be killed). A loop stuck without yielding stops the pings.
        let wd = sdnotify::watchdog_interval();
        let health = Arc::new(Mutex::new(Health { tick: Instant::now(), busy_since: None }));
        let mut heartbeat = tokio::time::interval(wd.map(|d| d / 4).unwrap_or(Duration::from_secs(3600)));
        if let Some(wd) = wd {
            let h = health.clone();
            let m = metrics.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(wd / 2);
                loop {
                    every.tick().await;
                    let healthy = {
                        let h = h.lock().unwrap_or_else(|p| p.into_inner());
                        match h.busy_since {
                            Some(t) => t.elapsed() < RECONCILE_BOUND,
                            None => h.tick.elapsed() < wd,
                        }
                    };
                    if healthy {
                        sdnotify::watchdog();
                        m.watchdog_pings.inc();
                    } else {
                        tracing::error!(rna_component = "daemon", "main loop unhealthy; withholding WATCHDOG=1");
                    }
                }
            });
        }

        // First reconcile, then READY=1 whether it worked or not (it never waits on the network).
        // The main loop reports what the watches see before each reconcile (`note` below).
        let mut reload_state = ReloadState {
            defer_reload: true,
            mirror_cache: std::sync::Arc::new(std::sync::Mutex::new(
                registries::MirrorCache::with_watches(),
            )),
            ..ReloadState::default()
        };
        health.lock().unwrap_or_else(|p| p.into_inner()).busy_since = Some(Instant::now());
        let first = reconcile(&settings, &mut reload_state, &metrics, false).await;
        reload_state.defer_reload = false;
        let line = {
            let mut st = status.lock().unwrap_or_else(|p| p.into_inner());
            st.record(&first);
            st.status_line()
        };
        cluster_svc.mirrors_drift(drift_of(&first));
        sdnotify::ready(&line);
        tracing::info!(rna_component = "daemon", socket = %socket_path.display(), status = %line, "rhel-node-agent daemon ready");
        if reload_state.pending {
            // The start-up change is written; reload the units now that READY=1 is sent.
            let result = reconcile(&settings, &mut reload_state, &metrics, false).await;
            let line = {
                let mut st = status.lock().unwrap_or_else(|p| p.into_inner());
                st.record(&result);
                st.status_line()
            };
            sdnotify::status(&line);
        }
        {
            let mut h = health.lock().unwrap_or_else(|p| p.into_inner());
            h.busy_since = None;
            h.tick = Instant::now();
        }

        loop {
            let mut reply: Option<socket::ReconcileRequest> = None;
            let mut release_held = false;
            // Only a reconcile caused by file events may trust them to name every change.
            let mut file_event = false;
            tokio::select! {
                _ = sigterm.recv() => break,
                _ = sigint.recv() => break,
                _ = sighup.recv() => {
                    sdnotify::reloading();
                    match load(&opts) {
                        Ok(s) => {
                            settings = s;
                            status.lock().unwrap_or_else(|p| p.into_inner()).config_error = None;
                            adopt(&settings, &pid_lock, &read_group, &shared);
                            firewall_svc.wake.notify_one();
                            cluster_svc.wake.notify_one();
                            cluster_svc.policies_wake.notify_one();
                            tracing::info!(rna_component = "config", "configuration reloaded");
                        }
                        Err(e) => {
                            tracing::error!(rna_component = "config", error = %e, "configuration reload failed; keeping the previous settings");
                            status.lock().unwrap_or_else(|p| p.into_inner()).config_error = Some(e.to_string());
                        }
                    }
                    watches.ensure(&watched_paths(&settings, opts.extra_config.as_deref()));
                    // The reconcile below runs with the new settings; READY=1 ends the reload for
                    // systemd (the unit is "reloading" until then).
                    let line = status.lock().unwrap_or_else(|p| p.into_inner()).status_line();
                    sdnotify::ready(&line);
                }
                Some(()) = changed_rx.recv() => {
                    file_event = true;
                    // Debounce: wait until the files have been quiet for `debounce`, so a burst
                    // of writes ends in one reconcile.
                    // A never-quiet writer is cut off after DEBOUNCE_LIMIT so signals, the socket
                    // and the watchdog heartbeat are served.
                    let started = Instant::now();
                    loop {
                        tokio::time::sleep(opts.debounce).await;
                        health.lock().unwrap_or_else(|p| p.into_inner()).tick = Instant::now();
                        let mut more = false;
                        while changed_rx.try_recv().is_ok() {
                            more = true;
                        }
                        if !more || started.elapsed() >= DEBOUNCE_LIMIT {
                            break;
                        }
                    }
                    // Configuration fragments are among the watched files: re-read them too.
                    match load(&opts) {
                        Ok(s) => {
                            settings = s;
                            status.lock().unwrap_or_else(|p| p.into_inner()).config_error = None;
                            adopt(&settings, &pid_lock, &read_group, &shared);
                            firewall_svc.wake.notify_one();
                            cluster_svc.wake.notify_one();
                            cluster_svc.policies_wake.notify_one();
                        }
                        Err(e) => status.lock().unwrap_or_else(|p| p.into_inner()).config_error = Some(e.to_string()),
                    }
                }
                Some(req) = reconcile_rx.recv() => {
                    release_held = req.release_held;
                    reply = Some(req);
                }
                _ = resync.tick() => {}
                _ = heartbeat.tick() => {
                    health.lock().unwrap_or_else(|p| p.into_inner()).tick = Instant::now();
                    continue;
                }
            }
            health.lock().unwrap_or_else(|p| p.into_inner()).busy_since = Some(Instant::now());
            let mut seen = watches.take_seen();
            if !file_event {
                seen.merge(SeenChanges::everything());
            }
            reload_state
                .mirror_cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .note(seen);
            let result = reconcile(&settings, &mut reload_state, &metrics, release_held).await;
            {
                let mut h = health.lock().unwrap_or_else(|p| p.into_inner());
                h.busy_since = None;
                h.tick = Instant::now();
            }
            // New watches (a directory created or replaced) before the status says we are done.
            if watches.ensure(&watched_paths(&settings, opts.extra_config.as_deref())) {
                let _ = rewatch_tx.try_send(());
            }
            let line = {
                let mut st = status.lock().unwrap_or_else(|p| p.into_inner());
                st.record(&result);
                st.status_line()
            };
            sdnotify::status(&line);
            cluster_svc.mirrors_drift(drift_of(&result));
            if let Some(req) = reply {
                let _ = req.reply.send(report_json(&result));
            }
        }
        sdnotify::stopping();
        tracing::info!(rna_component = "daemon", "rhel-node-agent daemon stopping");
        phase_svc.shutdown().await;
        firewall_task.abort();
        cluster_task.abort();
        policies_task.abort();
        // The loop is gone (it would write True again): the condition says Unknown now.
        let _ = cluster_task.await;
        let _ = policies_task.await;
        cluster_svc.stopped().await;
        let _ = stop_tx.send(true);
        let _ = server.await;
        if let Some(m) = metrics_server {
            let _ = m.await;
        }
        let _ = fs::remove_file(&socket_path);
        Ok::<(), DaemonError>(())
    });
    let _ = fs::remove_file(&pid_path);
    drop(pid_lock);
    result
}
