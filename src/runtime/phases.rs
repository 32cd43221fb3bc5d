//! Running upgrade phases inside the daemon: the durable journal on disk, one phase at a time,
//! progress streamed to every attached client, hooks and built-ins in the order of
//! [`crate::core::phases::plan`].
//!
//! A phase runs in its own task: a client that goes away (an SSH drop during `phase run`) does not
//! stop it, and a repeated trigger attaches to it. Every transition is written to the journal
//! before and after it happens, so a phase that was running when the daemon or the machine went
//! down is found at the next start and shown as interrupted.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::adapters::fs as afs;
use crate::adapters::hooks::{self, Found, HookEvent, HookSpec, Runner};
use crate::adapters::journald::Journald;
use crate::adapters::systemd;
use crate::config::Settings;
use crate::core::phases::{
    self, rfc3339, Builtin, BuiltinPlan, Decision, Now, Phase, PhaseJournal, PlannedStep, RunState,
    Step, StepKind, Trigger,
};

/// Version of the JSON context hooks read on stdin (docs/hooks.md).
pub const CONTEXT_SCHEMA: u32 = 1;

/// Progress events (steps) kept for clients that attach to a running phase.
const REPLAY_EVENTS: usize = 400;

/// Output lines kept for clients that attach to a running phase (the most recent ones).
const REPLAY_OUTPUT: usize = 100;

/// A request to the main loop to reconcile the mirrors (the socket's `reconcile`, and the
/// `reconcile-mirrors` built-in, which also releases changes held because they need a drain).
pub struct ReconcileRequest {
    /// Where the outcome goes.
    pub reply: oneshot::Sender<Value>,
    /// Apply changes that need a drain now (the node is drained).
    pub release_held: bool,
}

/// The journal file under the state directory.
pub fn journal_path(state_dir: &Path) -> PathBuf {
    state_dir.join("upgrade").join("journal.json")
}

/// Read the journal (a missing file is an empty journal).
pub fn load_journal(path: &Path) -> Result<PhaseJournal, String> {
    match afs::read_optional(path) {
        Ok(None) => Ok(PhaseJournal::default()),
        Ok(Some(bytes)) => {
            let v: Value = serde_json::from_slice(&bytes)
                .map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
            phases::migrate(v).map_err(|e| format!("{}: {e}", path.display()))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Write the journal atomically and durably.
pub fn save_journal(path: &Path, j: &PhaseJournal) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let mut text = serde_json::to_vec_pretty(j).map_err(|e| e.to_string())?;
    text.push(b'\n');
    afs::atomic_replace(path, &text, &afs::ReplaceOptions::default())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The current boot id (`/proc/sys/kernel/random/boot_id`; under `--root`, the root's copy when
/// it has one, so tests can simulate a reboot).
pub fn boot_id(root: &Path) -> String {
    let own = crate::config::under_root(root, "/proc/sys/kernel/random/boot_id");
    std::fs::read_to_string(&own)
        .or_else(|_| std::fs::read_to_string("/proc/sys/kernel/random/boot_id"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// The node name: `node.name`, else the lower-cased host name (what openshift-ansible uses).
pub fn node_name(s: &Settings) -> String {
    if !s.node_name.is_empty() {
        return s.node_name.clone();
    }
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .map(|h| h.to_lowercase())
        .unwrap_or_default()
}

/// A phase that is running, with the clients' view of it.
pub struct RunningPhase {
    /// Which phase.
    pub phase: Phase,
    /// Which record.
    pub id: String,
    log: Mutex<VecDeque<(u64, Value)>>,
    output: Mutex<VecDeque<(u64, Value)>>,
    seq: Mutex<u64>,
    tx: broadcast::Sender<(u64, Value)>,
    done: watch::Sender<Option<Value>>,
}

impl RunningPhase {
    fn new(phase: Phase, id: &str) -> Arc<RunningPhase> {
        Arc::new(RunningPhase {
            phase,
            id: id.to_string(),
            log: Mutex::new(VecDeque::new()),
            output: Mutex::new(VecDeque::new()),
            seq: Mutex::new(0),
            tx: broadcast::channel(1024).0,
            done: watch::channel(None).0,
        })
    }

    /// Send an event to attached clients, and keep it for clients that attach later (every step
    /// event up to [`REPLAY_EVENTS`]; of the output, the last [`REPLAY_OUTPUT`] lines).
    fn emit(&self, event: Value, is_output: bool) {
        let mut seq = self.seq.lock().unwrap_or_else(|p| p.into_inner());
        *seq += 1;
        let (kept, cap) = if is_output {
            (&self.output, REPLAY_OUTPUT)
        } else {
            (&self.log, REPLAY_EVENTS)
        };
        let mut kept = kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() == cap {
            kept.pop_front();
        }
        kept.push_back((*seq, event.clone()));
        let _ = self.tx.send((*seq, event));
    }

    /// What a newly attached client is shown first: the kept events in their original order.
    fn replay(&self) -> Vec<(u64, Value)> {
        let mut all: Vec<(u64, Value)> = self
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .chain(self.output.lock().unwrap_or_else(|p| p.into_inner()).iter())
            .cloned()
            .collect();
        all.sort_by_key(|(seq, _)| *seq);
        all
    }
}

/// The phase side of the daemon.
pub struct PhaseService {
    path: PathBuf,
    journal: Mutex<PhaseJournal>,
    /// Why the journal cannot be used (e.g. written by a newer agent): phases are refused.
    broken: Mutex<Option<String>>,
    running: Mutex<Option<Arc<RunningPhase>>>,
    settings: Arc<Mutex<Settings>>,
    reconcile: mpsc::Sender<ReconcileRequest>,
    /// The task running the current phase.
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The firewall component (set once it exists; it also holds this service).
    firewall: std::sync::OnceLock<std::sync::Weak<super::firewall::FirewallService>>,
    /// The cluster component (set once it exists).
    cluster: std::sync::OnceLock<std::sync::Weak<super::cluster::ClusterService>>,
    /// The upgrade window as last published, to wake the firewall component when it changes.
    window: Mutex<bool>,
    /// The daemon status whose `phase` line this service keeps current (and sends as `STATUS=`).
    status: Arc<Mutex<super::status::DaemonStatus>>,
}

fn now_facts(root: &Path) -> Now {
    Now {
        time: rfc3339(SystemTime::now()),
        boot_id: boot_id(root),
        pid: std::process::id(),
    }
}

impl PhaseService {
    /// Load the journal, mark what was running as interrupted, stop what is left of its hooks.
    pub async fn start(
        settings: Arc<Mutex<Settings>>,
        reconcile: mpsc::Sender<ReconcileRequest>,
        status: Arc<Mutex<super::status::DaemonStatus>>,
    ) -> Arc<PhaseService> {
        let s = settings.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let path = journal_path(&s.state_dir);
        let (journal, broken) = match load_journal(&path) {
            Ok(j) => (j, None),
            Err(e) => {
                tracing::error!(rna_component = "phases", error = %e, "upgrade journal unusable; phases are refused until it is fixed");
                (PhaseJournal::default(), Some(e))
            }
        };
        let svc = Arc::new(PhaseService {
            path,
            journal: Mutex::new(journal),
            broken: Mutex::new(broken),
            running: Mutex::new(None),
            settings,
            reconcile,
            task: Mutex::new(None),
            firewall: std::sync::OnceLock::new(),
            cluster: std::sync::OnceLock::new(),
            window: Mutex::new(false),
            status,
        });
        svc.recover(&s).await;
        svc.refresh_summary();
        svc
    }

    async fn recover(&self, s: &Settings) {
        if self.broken().is_some() {
            return;
        }
        let now = now_facts(&s.root);
        let found = self.with_journal(|j| j.recover(&now));
        if found.is_empty() {
            return;
        }
        let conn = if found
            .iter()
            .any(|(_, st)| st.runner.as_ref().is_some_and(|r| r.unit.is_some()))
        {
            systemd::connect(s.system_bus.as_deref()).await.ok()
        } else {
            None
        };
        for (phase, step) in found {
            let what = match &step.runner {
                Some(h) => hooks::stop_leftover(h, conn.as_ref()).await,
                None => "nothing to stop".into(),
            };
            tracing::warn!(rna_component = "phases", rna_phase = %phase, step = %step.name, cleanup = %what, "phase step was interrupted");
        }
        let _ = self.persist();
    }

    fn broken(&self) -> Option<String> {
        self.broken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn with_journal<T>(&self, f: impl FnOnce(&mut PhaseJournal) -> T) -> T {
        let mut j = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut j)
    }

    /// Write the journal. Neither a phase nor a step starts unless its start was written; a
    /// failed write after a step is logged and reported in the phase's result (the next write
    /// retries, as it writes the whole journal).
    fn persist(&self) -> Result<(), String> {
        let j = self
            .journal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let r = save_journal(&self.path, &j);
        if let Err(e) = &r {
            tracing::error!(rna_component = "phases", error = %e, "cannot write the upgrade journal");
        }
        self.refresh_summary();
        r
    }

    /// The daemon is stopping: a running phase ends as interrupted, and what is left of its hook
    /// (a transient unit or a process group) is stopped, so nothing runs unrecorded.
    pub async fn shutdown(&self) {
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(task) = task else { return };
        if task.is_finished() {
            return;
        }
        task.abort();
        let _ = task.await;
        let s = self.settings();
        self.recover(&s).await;
        *self.running.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Connect the firewall component (woken when the upgrade window opens or closes).
    pub fn set_firewall(&self, fw: &Arc<super::firewall::FirewallService>) {
        let _ = self.firewall.set(Arc::downgrade(fw));
        *self.window.lock().unwrap_or_else(|p| p.into_inner()) = self.upgrade_window();
    }

    /// Connect the cluster component (used by the cordon, drain and uncordon built-ins).
    pub fn set_cluster(&self, c: &Arc<super::cluster::ClusterService>) {
        let _ = self.cluster.set(Arc::downgrade(c));
    }

    /// The cluster component, when running.
    pub fn cluster(&self) -> Option<Arc<super::cluster::ClusterService>> {
        self.cluster.get().and_then(|w| w.upgrade())
    }

    /// For the Node's annotations: the open record's id, a phase line, whether the last phase
    /// failed (or was interrupted), and whether an upgrade is open.
    pub fn node_facts(&self) -> (Option<String>, String, bool, bool) {
        let j = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        let Some(r) = &j.open else {
            return (None, "idle".into(), false, false);
        };
        if let Some((p, _)) = r.running() {
            return (Some(r.id.clone()), format!("{p} running"), false, true);
        }
        match r.phases.iter().rev().find(|p| p.state != RunState::Pending) {
            Some(p) => (
                Some(r.id.clone()),
                format!("{} {}", p.phase, p.state.word()),
                matches!(p.state, RunState::Failed | RunState::Interrupted),
                true,
            ),
            None => (Some(r.id.clone()), "open".into(), false, true),
        }
    }

    fn firewall(&self) -> Option<Arc<super::firewall::FirewallService>> {
        self.firewall.get().and_then(|w| w.upgrade())
    }

    /// True from the start of pre-upgrade until the record closes (post-upgrade succeeded, or a
    /// reset): the time `upgrade.firewalld_state` applies instead of `firewalld.state`.
    pub fn upgrade_window(&self) -> bool {
        self.journal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .upgrade_window()
    }

    fn refresh_summary(&self) {
        let window = self.upgrade_window();
        let changed = {
            let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::replace(&mut *w, window) != window
        };
        if changed {
            if let Some(fw) = self.firewall() {
                fw.wake.notify_one();
            }
        }
        if let Some(c) = self.cluster() {
            c.recheck_slots();
            c.wake.notify_one();
        }
        let line = match self.broken() {
            Some(e) => format!("journal unusable: {e}"),
            None => {
                let j = self.journal.lock().unwrap_or_else(|p| p.into_inner());
                summary(&j)
            }
        };
        let status_line = {
            let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
            if st.phase == line {
                return;
            }
            st.phase = line;
            st.status_line()
        };
        super::sdnotify::status(&status_line);
    }

    /// The journal and what is running, for `upgrade status`.
    pub fn status_json(&self) -> Value {
        let j = self
            .journal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let running = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|r| json!({"phase": r.phase, "upgrade_id": r.id}));
        json!({
            "schema": 1,
            "boot_id": boot_id(&self.settings().root),
            "journal_error": self.broken(),
            "running": running,
            "open": j.open,
            "closed": j.closed,
        })
    }

    fn settings(&self) -> Settings {
        self.settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// `upgrade reset`: close the open record. `Err((refused, message))`.
    pub fn reset(&self) -> Result<Option<String>, String> {
        if let Some(e) = self.broken() {
            return Err(format!("the upgrade journal is unusable: {e}"));
        }
        if let Some(r) = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            return Err(format!(
                "phase {} of upgrade {} is running; wait for it to finish",
                r.phase, r.id
            ));
        }
        let now = rfc3339(SystemTime::now());
        let closed = self.with_journal(|j| j.reset(&now))?;
        if let Some(id) = &closed {
            tracing::warn!(rna_component = "phases", upgrade_id = %id, "upgrade record closed by reset");
            self.persist()?;
        }
        Ok(closed)
    }

    /// Handle a trigger: attach to the running phase, start a new one, or answer at once. The
    /// returned receiver yields progress events and ends with a `result` event.
    pub fn trigger(self: &Arc<Self>, t: Trigger) -> mpsc::Receiver<Value> {
        let (tx, rx) = mpsc::channel(256);
        let phase = t.phase;
        let answer = |tx: &mpsc::Sender<Value>, v: Value| {
            let _ = tx.try_send(v);
        };
        if let Some(e) = self.broken() {
            answer(
                &tx,
                result_event(
                    phase,
                    "",
                    "failed",
                    1,
                    &format!("the upgrade journal is unusable: {e}"),
                ),
            );
            return rx;
        }
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = running.as_ref() {
            let same = Some(r.phase) == phase && t.upgrade_id.as_ref().is_none_or(|i| *i == r.id);
            if same {
                attach(r.clone(), tx);
            } else {
                answer(
                    &tx,
                    result_event(
                        phase,
                        &r.id,
                        "refused",
                        3,
                        &format!("phase {} of upgrade {} is running", r.phase, r.id),
                    ),
                );
            }
            return rx;
        }
        let s = self.settings();
        let now = now_facts(&s.root);
        let decision = self.with_journal(|j| j.begin(&t, &now));
        let (id, attempt, opened, reboot) = match decision {
            Decision::Start {
                id,
                attempt,
                opened,
                reboot_detected,
            } => (id, attempt, opened, reboot_detected),
            Decision::AlreadyDone { id } => {
                let p = phase.map(|p| p.name()).unwrap_or("?");
                answer(
                    &tx,
                    result_event(
                        phase,
                        &id,
                        "already-done",
                        0,
                        &format!("{p} already done in upgrade {id}"),
                    ),
                );
                return rx;
            }
            Decision::Refused(m) => {
                answer(&tx, result_event(phase, "", "refused", 3, &m));
                return rx;
            }
            Decision::Invalid(m) => {
                answer(&tx, result_event(phase, "", "invalid", 2, &m));
                return rx;
            }
        };
        let Some(phase) = phase else { return rx };
        if let Err(e) = self.persist() {
            // Not recorded, not run: put the journal back as it is on disk.
            if let Ok(j) = load_journal(&self.path) {
                *self.journal.lock().unwrap_or_else(|p| p.into_inner()) = j;
            }
            answer(
                &tx,
                result_event(
                    Some(phase),
                    &id,
                    "failed",
                    1,
                    &format!("the phase was not started: cannot record it: {e}"),
                ),
            );
            return rx;
        }
        let run = RunningPhase::new(phase, &id);
        *running = Some(run.clone());
        drop(running);
        run.emit(
            json!({"event": "started", "phase": phase, "upgrade_id": id, "attempt": attempt,
                   "opened": opened, "boot_id": now.boot_id, "reboot_detected": reboot,
                   "node": node_name(&s)}),
            false,
        );
        tracing::info!(rna_component = "phases", rna_phase = %phase, upgrade_id = %id, attempt, reboot_detected = reboot, "phase started");
        if let Some(c) = self.cluster() {
            c.event(
                false,
                "PhaseStarted",
                &format!("{phase} of upgrade {id} started (attempt {attempt})"),
            );
        }
        attach(run.clone(), tx);
        let svc = self.clone();
        let task = tokio::spawn(async move {
            let ctx = PhaseCtx {
                svc: svc.clone(),
                run: run.clone(),
                s,
                phase,
                id: id.clone(),
                attempt,
                now,
                reboot,
                write_errors: Mutex::new(Vec::new()),
            };
            let (ok, mut message) = match ctx.execute().await {
                Ok(m) => (true, m),
                Err(m) => (false, m),
            };
            let mut write_errors = ctx.take_write_errors();
            if !write_errors.is_empty() {
                message.push_str(&format!("; {}", write_errors.join("; ")));
            }
            let time = rfc3339(SystemTime::now());
            svc.with_journal(|j| j.finish(phase, ok, &message, &time));
            if let Err(e) = svc.persist() {
                let note = format!(
                    "the phase's result could not be written to the upgrade journal {}: {e}",
                    svc.path.display()
                );
                tracing::error!(rna_component = "phases", rna_phase = %phase, upgrade_id = %id, journal = %svc.path.display(), error = %e, "phase result not recorded");
                message.push_str(&format!("; {note}"));
                write_errors.push(note);
            }
            if ok {
                tracing::info!(rna_component = "phases", rna_phase = %phase, upgrade_id = %id, attempt, "phase succeeded");
            } else {
                tracing::error!(rna_component = "phases", rna_phase = %phase, upgrade_id = %id, attempt, error = %message, "phase failed");
            }
            if let Some(c) = svc.cluster() {
                if ok {
                    c.event(
                        false,
                        "PhaseSucceeded",
                        &format!("{phase} of upgrade {id} succeeded"),
                    );
                } else {
                    c.event(
                        true,
                        "PhaseFailed",
                        &format!("{phase} of upgrade {id} failed: {message}"),
                    );
                }
            }
            let mut result = result_event(
                Some(phase),
                &id,
                if ok { "succeeded" } else { "failed" },
                if ok { 0 } else { 1 },
                &message,
            );
            if !write_errors.is_empty() {
                result["journal_write_errors"] = json!(write_errors);
            }
            *svc.running.lock().unwrap_or_else(|p| p.into_inner()) = None;
            run.emit(result.clone(), false);
            let _ = run.done.send(Some(result));
        });
        *self.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        rx
    }
}

/// Stream a running phase's events to one client: the replay log, then live events, until the
/// result. The client may go away at any time; the phase does not notice.
fn attach(run: Arc<RunningPhase>, tx: mpsc::Sender<Value>) {
    let mut live = run.tx.subscribe();
    let replay = run.replay();
    let mut done = run.done.subscribe();
    tokio::spawn(async move {
        let mut last = 0;
        for (seq, v) in replay {
            last = seq;
            let end = v["event"] == "result";
            if tx.send(v).await.is_err() || end {
                return;
            }
        }
        loop {
            tokio::select! {
                ev = live.recv() => match ev {
                    Ok((seq, v)) if seq > last => {
                        last = seq;
                        let end = v["event"] == "result";
                        if tx.send(v).await.is_err() || end {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let _ = tx.send(json!({"event": "lagged", "dropped": n})).await;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                changed = done.changed() => {
                    let result = done.borrow().clone();
                    if changed.is_err() && result.is_none() {
                        // The phase task is gone without a result (the daemon is stopping).
                        return;
                    }
                    if let Some(r) = result {
                        // Drain what is still queued, then the result (once).
                        while let Ok((seq, v)) = live.try_recv() {
                            if seq > last {
                                last = seq;
                                if v["event"] == "result" {
                                    let _ = tx.send(v).await;
                                    return;
                                }
                                let _ = tx.send(v).await;
                            }
                        }
                        let _ = tx.send(r).await;
                        return;
                    }
                }
            }
        }
    });
}

fn result_event(phase: Option<Phase>, id: &str, outcome: &str, exit: u8, message: &str) -> Value {
    json!({"event": "result", "phase": phase, "upgrade_id": id, "outcome": outcome,
           "exit": exit, "message": message})
}

/// One line about the journal for `status` and `STATUS=`.
fn summary(j: &PhaseJournal) -> String {
    let Some(r) = &j.open else {
        return match j.closed.last() {
            Some(c) => format!(
                "idle (last upgrade {} closed by {} at {})",
                c.id,
                c.closed_by.as_deref().unwrap_or("?"),
                c.closed_at.as_deref().unwrap_or("?")
            ),
            None => "idle".into(),
        };
    };
    if let Some((p, a)) = r.running() {
        return format!("upgrade {}: {p} running (attempt {})", r.id, a.number);
    }
    let last = r.phases.iter().rev().find(|p| p.state != RunState::Pending);
    match last {
        Some(p) => format!("upgrade {}: {} {}", r.id, p.phase, p.state.word()),
        None => format!("upgrade {} open", r.id),
    }
}

/// What the configuration says the built-ins do.
fn builtin_plan(s: &Settings) -> BuiltinPlan {
    BuiltinPlan {
        firewalld_during_upgrade: (s.upgrade.firewalld_state != "unchanged")
            .then(|| s.upgrade.firewalld_state.clone()),
        reconcile_mirrors_at: s.upgrade.reconcile_mirrors_at,
        cordon_drain: s.upgrade.builtin_cordon_drain,
    }
}

/// True when the agent may use the system bus (CLI.md: never under `--root` without
/// `--system-bus`).
fn bus_allowed(s: &Settings) -> bool {
    s.root == Path::new("/") || s.system_bus.is_some()
}

/// Everything one running phase needs.
struct PhaseCtx {
    svc: Arc<PhaseService>,
    run: Arc<RunningPhase>,
    s: Settings,
    phase: Phase,
    id: String,
    attempt: u32,
    now: Now,
    reboot: bool,
    /// Journal writes that failed after a step had run (or while a hook ran): the phase's
    /// result reports them, so an on-disk record that is behind never goes unnoticed.
    write_errors: Mutex<Vec<String>>,
}

/// How a built-in ended.
enum BuiltinOutcome {
    Done(String),
    Skipped(String),
    Failed(String),
}

impl PhaseCtx {
    fn emit_step(&self, step: &Step) {
        self.run.emit(
            json!({"event": "step", "phase": self.phase, "name": step.name, "kind": step.kind,
                   "state": step.state, "message": step.message, "exit_code": step.exit_code}),
            false,
        );
    }

    fn time() -> String {
        rfc3339(SystemTime::now())
    }

    /// Record a step as started and write it to disk before it runs; its index. A step whose
    /// "running" record is not on disk must not run (after a crash nobody would know it ran, nor
    /// what to stop): it is recorded as failed (in memory) and the error fails the phase.
    fn start_step(&self, st: &Step) -> Result<Option<usize>, String> {
        let idx = self
            .svc
            .with_journal(|j| j.step_started(self.phase, st.clone()));
        if let Err(e) = self.svc.persist() {
            let why = format!(
                "{} was not started: its start could not be recorded in the upgrade journal {}: {e}",
                st.name,
                self.svc.path.display()
            );
            tracing::error!(rna_component = "phases", rna_phase = %self.phase, step = %st.name, journal = %self.svc.path.display(), error = %e, "step not started: journal not written");
            let mut failed = st.clone();
            failed.state = RunState::Failed;
            failed.message = why.clone();
            failed.finished_at = Some(Self::time());
            if let Some(i) = idx {
                let f = failed.clone();
                self.svc
                    .with_journal(|j| j.step_update(self.phase, i, |x| *x = f));
            }
            self.emit_step(&failed);
            return Err(why);
        }
        self.emit_step(st);
        Ok(idx)
    }

    /// Record how step `idx` ended (written after it ran) and tell the clients. A failed write
    /// is logged and kept for the phase's result.
    fn end_step(&self, idx: Option<usize>, st: &Step) {
        if let Some(i) = idx {
            let st = st.clone();
            self.svc
                .with_journal(|j| j.step_update(self.phase, i, |x| *x = st));
        }
        if let Err(e) = self.svc.persist() {
            self.write_failed(&format!("the result of {}", st.name), &e);
        }
        self.emit_step(st);
    }

    /// Note a journal write that failed after something had already happened.
    fn write_failed(&self, what: &str, e: &str) {
        note_write_error(&self.write_errors, &self.svc.path, self.phase, what, e);
    }

    fn take_write_errors(&self) -> Vec<String> {
        std::mem::take(&mut *self.write_errors.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Run the planned steps; Ok(summary) or Err(why the phase failed).
    async fn execute(&self) -> Result<String, String> {
        let mut done = Vec::new();
        for step in phases::plan(self.phase, &builtin_plan(&self.s)) {
            match step {
                PlannedStep::Hooks => {
                    let n = self.run_hooks().await?;
                    done.push(format!("{n} hook(s)"));
                }
                PlannedStep::Builtin(b) => {
                    let mut st = phases::builtin_step(b, &Self::time());
                    let idx = self.start_step(&st)?;
                    let outcome = self.builtin(b).await;
                    let (state, msg) = match &outcome {
                        BuiltinOutcome::Done(m) => (RunState::Succeeded, m.clone()),
                        BuiltinOutcome::Skipped(m) => (RunState::Skipped, m.clone()),
                        BuiltinOutcome::Failed(m) => (RunState::Failed, m.clone()),
                    };
                    st.state = state;
                    st.message = msg.clone();
                    st.finished_at = Some(Self::time());
                    self.end_step(idx, &st);
                    let level_msg = format!("{}: {}", b.name(), msg);
                    match outcome {
                        BuiltinOutcome::Failed(_) => return Err(level_msg),
                        BuiltinOutcome::Skipped(_) => {
                            tracing::info!(rna_component = "phases", rna_phase = %self.phase, step = b.name(), reason = %msg, "built-in skipped")
                        }
                        BuiltinOutcome::Done(_) => {
                            tracing::info!(rna_component = "phases", rna_phase = %self.phase, step = b.name(), result = %msg, "built-in done");
                            done.push(b.name().to_string());
                        }
                    }
                }
            }
        }
        Ok(format!("{} succeeded ({})", self.phase, done.join(", ")))
    }

    /// Find and run the phase's hooks, in order; the first failure stops the rest.
    async fn run_hooks(&self) -> Result<usize, String> {
        let s = &self.s;
        let own_uid = nix::unistd::geteuid().as_raw();
        let found = hooks::discover(self.phase, &s.hooks.vendor_dir, &s.hooks.admin_dir, own_uid)
            .map_err(|e| format!("hooks: {e}"))?;
        let mut refused = Vec::new();
        for f in &found {
            match f {
                Found::Skip { name, path, reason } => {
                    tracing::info!(rna_component = "hooks", rna_phase = %self.phase, rna_hook = %name, path = %path.display(), reason = %reason, "hook skipped");
                    let t = Self::time();
                    self.svc.with_journal(|j| {
                        j.step_skipped(self.phase, name, StepKind::Hook, reason, &t)
                    });
                    let mut st = Step::started(name, StepKind::Hook, &t);
                    st.state = RunState::Skipped;
                    st.message = reason.clone();
                    self.emit_step(&st);
                }
                Found::Refuse { name, path, reason } => {
                    tracing::error!(rna_component = "hooks", rna_phase = %self.phase, rna_hook = %name, path = %path.display(), reason = %reason, "hook refused");
                    let t = Self::time();
                    let mut st = Step::started(name, StepKind::Hook, &t);
                    st.state = RunState::Failed;
                    st.message = format!("refused: {reason}");
                    st.path = Some(path.display().to_string());
                    st.finished_at = Some(t);
                    self.svc
                        .with_journal(|j| j.step_started(self.phase, st.clone()));
                    self.emit_step(&st);
                    refused.push(format!("{} ({reason})", path.display()));
                }
                Found::Run { .. } => {}
            }
        }
        if let Err(e) = self.svc.persist() {
            self.write_failed("the skipped and refused hook files", &e);
        }
        if !refused.is_empty() {
            return Err(format!(
                "hook file(s) refused, no hook was run: {}",
                refused.join("; ")
            ));
        }
        let runnable: Vec<(String, PathBuf)> = found
            .into_iter()
            .filter_map(|f| match f {
                Found::Run { name, path } => Some((name, path)),
                _ => None,
            })
            .collect();
        if runnable.is_empty() {
            return Ok(0);
        }
        let runner = if bus_allowed(s)
            && (s.system_bus.is_some() || Path::new("/run/systemd/system").exists())
        {
            match systemd::connect(s.system_bus.as_deref()).await {
                Ok(c) => Runner::Systemd(c),
                Err(e) => {
                    return Err(format!(
                        "hooks run as transient systemd units, and systemd cannot be reached: {e}"
                    ))
                }
            }
        } else {
            Runner::ProcessGroup
        };
        let journald = Journald::connect();
        let mut earlier: Vec<Value> = Vec::new();
        for (name, path) in &runnable {
            self.run_hook(&runner, journald.as_ref(), name, path, &earlier)
                .await?;
            earlier.push(json!({"name": name, "state": "succeeded"}));
        }
        Ok(runnable.len())
    }

    async fn run_hook(
        &self,
        runner: &Runner,
        journald: Option<&Journald>,
        name: &str,
        path: &Path,
        earlier: &[Value],
    ) -> Result<(), String> {
        let s = &self.s;
        let timeout = phases::hook_timeout(self.phase, name, s.hooks.timeout, &s.hooks.timeouts);
        let record = self.svc.with_journal(|j| j.open.clone());
        let node = node_name(s);
        let target = record
            .as_ref()
            .map(|r| r.target_version.clone())
            .unwrap_or_default();
        let context = json!({
            "schema": CONTEXT_SCHEMA,
            "agent_version": env!("CARGO_PKG_VERSION"),
            "phase": self.phase,
            "node": node,
            "upgrade_id": self.id,
            "target_version": target,
            "attempt": self.attempt,
            "hook": name,
            "hook_path": path.display().to_string(),
            "timeout_seconds": timeout.as_secs(),
            "boot_id": self.now.boot_id,
            "reboot_detected": self.reboot,
            "boot_ids": record.as_ref().map(|r| r.boots.iter().map(|b| b.boot_id.clone()).collect::<Vec<_>>()).unwrap_or_default(),
            "opened_at": record.as_ref().map(|r| r.opened_at.clone()),
            "phases": record.as_ref().map(|r| r.phases.iter().map(|p| (p.phase.name().to_string(), json!(p.state))).collect::<serde_json::Map<_, _>>()),
            "earlier_hooks": earlier,
            "root": s.root.display().to_string(),
        });
        let nonce = format!(
            "{}{:x}",
            self.attempt,
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.subsec_nanos() ^ d.as_secs() as u32)
                .unwrap_or(0)
        );
        let unit = hooks::unit_name(self.phase, name, &nonce);
        let spec = HookSpec {
            name: name.to_string(),
            path: path.to_path_buf(),
            env: vec![
                (
                    "PATH".into(),
                    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                ),
                ("LANG".into(), "C.UTF-8".into()),
                ("RNA_PHASE".into(), self.phase.name().into()),
                ("RNA_NODE".into(), node),
                ("RNA_UPGRADE_ID".into(), self.id.clone()),
                ("RNA_TARGET_VERSION".into(), target),
                ("RNA_ATTEMPT".into(), self.attempt.to_string()),
                ("RNA_HOOK".into(), name.into()),
            ],
            stdin: serde_json::to_vec(&context).unwrap_or_default(),
            timeout,
            unit: unit.clone(),
        };
        let mut st = Step::started(name, StepKind::Hook, &Self::time());
        st.path = Some(path.display().to_string());
        let idx = self.start_step(&st)?;
        tracing::info!(rna_component = "hooks", rna_phase = %self.phase, rna_hook = %name, runner = runner.name(), timeout_s = timeout.as_secs(), "hook started");
        let phase = self.phase;
        let id = self.id.clone();
        let svc = self.svc.clone();
        let run = self.run.clone();
        let systemd_unit = matches!(runner, Runner::Systemd(_)).then(|| unit.clone());
        let hook_name = name.to_string();
        let write_errors = &self.write_errors;
        let mut on_event = move |e: HookEvent| match e {
            HookEvent::Started(handle) => {
                if let Some(i) = idx {
                    svc.with_journal(|j| j.step_update(phase, i, |x| x.runner = Some(handle)));
                    if let Err(e) = svc.persist() {
                        let what = format!("where hook {hook_name} runs");
                        note_write_error(write_errors, &svc.path, phase, &what, &e);
                    }
                }
            }
            HookEvent::Line(line) => {
                match journald {
                    Some(jd) => {
                        let mut fields = vec![
                            ("MESSAGE", line.as_str()),
                            ("PRIORITY", "6"),
                            ("SYSLOG_IDENTIFIER", hook_name.as_str()),
                            ("RNA_PHASE", phase.name()),
                            ("RNA_UPGRADE_ID", id.as_str()),
                            ("RNA_HOOK", hook_name.as_str()),
                        ];
                        if let Some(u) = &systemd_unit {
                            fields.push(("OBJECT_SYSTEMD_UNIT", u.as_str()));
                        }
                        jd.send(&fields);
                    }
                    None => {
                        tracing::info!(rna_component = "hooks", rna_phase = %phase, rna_hook = %hook_name, "{line}")
                    }
                }
                run.emit(
                    json!({"event": "output", "hook": hook_name, "line": line}),
                    true,
                );
            }
            HookEvent::Suppressed => {
                let note = format!(
                    "output over {} MiB: the rest is not forwarded; its last 64 KiB are kept in the upgrade record",
                    hooks::FORWARD_BUDGET / (1024 * 1024)
                );
                tracing::warn!(rna_component = "hooks", rna_phase = %phase, rna_hook = %hook_name, "{note}");
                run.emit(json!({"event": "output", "hook": hook_name, "line": format!("[rhel-node-agent: {note}]")}), true);
            }
        };
        let outcome = hooks::run(runner, &spec, &mut on_event).await;
        let desc = outcome.describe(timeout);
        st.state = if outcome.ok() {
            RunState::Succeeded
        } else {
            RunState::Failed
        };
        st.message = desc.clone();
        st.exit_code = outcome.exit_code;
        st.signal = outcome.signal;
        st.timed_out = outcome.timed_out;
        st.output_bytes = outcome.output_bytes;
        st.output_tail = outcome.tail.clone();
        st.finished_at = Some(Self::time());
        st.runner = None;
        self.end_step(idx, &st);
        if outcome.ok() {
            tracing::info!(rna_component = "hooks", rna_phase = %self.phase, rna_hook = %name, result = %desc, "hook succeeded");
            Ok(())
        } else {
            tracing::error!(rna_component = "hooks", rna_phase = %self.phase, rna_hook = %name, result = %desc, "hook failed");
            Err(format!("hook {name} failed: {desc}"))
        }
    }

    async fn builtin(&self, b: Builtin) -> BuiltinOutcome {
        match b {
            Builtin::FirewalldUpgradeState => self.firewalld().await,
            Builtin::Cordon
            | Builtin::Drain
            | Builtin::Uncordon
            | Builtin::AcquireSlot
            | Builtin::ReleaseSlot => self.cluster_step(b).await,
            Builtin::ReconcileMirrors => {
                let (reply, rx) = oneshot::channel();
                let req = ReconcileRequest {
                    reply,
                    release_held: true,
                };
                if self.svc.reconcile.send(req).await.is_err() {
                    return BuiltinOutcome::Failed("the daemon is stopping".into());
                }
                match rx.await {
                    Ok(v) => mirrors_outcome(&v),
                    Err(_) => BuiltinOutcome::Failed("the daemon is stopping".into()),
                }
            }
        }
    }

    /// Cordon, drain or uncordon through the cluster component; offline: skipped.
    async fn cluster_step(&self, b: Builtin) -> BuiltinOutcome {
        let Some(svc) = self.svc.cluster() else {
            return BuiltinOutcome::Skipped("no cluster configured".into());
        };
        let c = match svc.client().await {
            Ok(Some(c)) => c,
            Ok(None) => return BuiltinOutcome::Skipped("no cluster configured".into()),
            Err(e) => return BuiltinOutcome::Failed(e.to_string()),
        };
        use crate::adapters::kube::{CordonOutcome, KubeError};
        let identity = format!("{}/{}", c.node, self.id);
        let k = &self.s.kubernetes;
        match b {
            Builtin::AcquireSlot => return self.acquire_slot(&svc, &c, &identity).await,
            Builtin::ReleaseSlot => {
                // Every slot try_slot can take (the ConfigMap's maxUnavailable), not the local one.
                return match c
                    .held_slots(&k.lease_namespace, &identity, k.max_unavailable)
                    .await
                {
                    Ok(held) => {
                        let mut freed = Vec::new();
                        for (i, h) in held.iter().filter(|(_, h)| *h == identity) {
                            match c.release(&k.lease_namespace, h, *i).await {
                                Ok(true) => freed.push(crate::adapters::lease::slot_name(*i)),
                                Ok(false) => {}
                                Err(e) => return BuiltinOutcome::Failed(e.to_string()),
                            }
                        }
                        let mut msg = if freed.is_empty() {
                            format!("no upgrade slot held by {identity}")
                        } else {
                            format!("released {}", freed.join(", "))
                        };
                        if k.pause_machine_health_checks {
                            match super::cluster::unpause_when_idle(&c, k).await {
                                Ok((_, m)) => msg.push_str(&format!("; {m}")),
                                Err(e) => return BuiltinOutcome::Failed(format!("{msg}; {e}")),
                            }
                        }
                        BuiltinOutcome::Done(msg)
                    }
                    Err(e) => BuiltinOutcome::Failed(e.to_string()),
                };
            }
            _ => {}
        }
        let r = match b {
            Builtin::Cordon => c.cordon(&self.id).await,
            Builtin::Uncordon => match c.uncordon(false).await {
                Err(KubeError::Refused(m)) => return BuiltinOutcome::Skipped(m),
                r => r,
            },
            _ => {
                let d = &self.s.kubernetes.drain;
                let opts = crate::adapters::drain::DrainOptions {
                    timeout: d.timeout,
                    concurrency: d.concurrency as usize,
                    force: d.force,
                    delete_emptydir_data: d.delete_emptydir_data,
                    escalate_after_timeout: d.escalate_after_timeout,
                    dry_run: false,
                };
                return match c.drain(&opts).await {
                    Ok(r) => BuiltinOutcome::Done(format!(
                        "{} pod(s) evicted{}{}",
                        r.evicted.len(),
                        if r.left.is_empty() {
                            String::new()
                        } else {
                            format!(", {} left (DaemonSet or mirror pods)", r.left.len())
                        },
                        if r.deleted.is_empty() {
                            String::new()
                        } else {
                            format!(", {} deleted after the timeout", r.deleted.len())
                        }
                    )),
                    Err(e) => BuiltinOutcome::Failed(e.to_string()),
                };
            }
        };
        match r {
            Ok(CordonOutcome::Changed(m)) => BuiltinOutcome::Done(m),
            Ok(CordonOutcome::Unchanged(m)) => BuiltinOutcome::Done(m),
            Err(e) => BuiltinOutcome::Failed(e.to_string()),
        }
    }

    /// Wait for one of the cluster's upgrade slots; the phase keeps running (and says so) while
    /// every slot is held by another node.
    async fn acquire_slot(
        &self,
        svc: &super::cluster::ClusterService,
        c: &crate::adapters::kube::Cluster,
        identity: &str,
    ) -> BuiltinOutcome {
        use crate::adapters::lease::{slot_name, SlotTry};
        let k = &self.s.kubernetes;
        // Replaced after a 401: a token rotated while the phase waits is picked up.
        let mut c = c.clone();
        let mut said = String::new();
        let mut backoff = std::time::Duration::from_secs(1);
        let mut forbidden_since: Option<std::time::Instant> = None;
        let mut tell = |msg: String| {
            if msg != said {
                let mut st = Step::started(
                    Builtin::AcquireSlot.name(),
                    StepKind::Builtin,
                    &Self::time(),
                );
                st.message = msg.clone();
                self.emit_step(&st);
                tracing::info!(rna_component = "cluster", "{msg}");
                svc.set_status(&msg);
                said = msg;
            }
        };
        loop {
            let tried = match c
                .max_unavailable(&k.lease_namespace, k.max_unavailable)
                .await
            {
                Ok(slots) => c
                    .try_slot(&k.lease_namespace, identity, slots, k.lease_duration)
                    .await
                    .map(|t| (slots, t)),
                Err(e) => Err(e),
            };
            match tried {
                Ok((slots, SlotTry::Held(i))) => {
                    svc.set_status(&format!(
                        "connected (node {}), holding {}",
                        c.node,
                        slot_name(i)
                    ));
                    let mut msg = format!(
                        "holding upgrade slot {} of {slots} as {identity}",
                        slot_name(i)
                    );
                    if k.pause_machine_health_checks {
                        match c.pause_mhcs(identity).await {
                            Ok(p) if p.is_empty() => {
                                msg.push_str("; MachineHealthChecks already paused (or none)")
                            }
                            Ok(p) => msg.push_str(&format!(
                                "; paused MachineHealthCheck(s) {}",
                                p.join(", ")
                            )),
                            Err(e) => {
                                return BuiltinOutcome::Failed(format!(
                                    "{msg}, but pausing the MachineHealthChecks failed: {e}"
                                ))
                            }
                        }
                    }
                    return BuiltinOutcome::Done(msg);
                }
                Ok((slots, SlotTry::Busy(holders))) => {
                    forbidden_since = None;
                    tell(format!(
                        "waiting for an upgrade slot ({slots} in all, held by {})",
                        holders.join(", ")
                    ));
                    backoff = std::time::Duration::from_secs(2);
                }
                // A configuration problem — unless it lasts only moments (a restarted API server
                // answers 403 until its authorizer has caught up): fail after a minute of it.
                Err(e)
                    if (e.code() == 403 || e.code() == 401)
                        && forbidden_since
                            .get_or_insert_with(std::time::Instant::now)
                            .elapsed()
                            >= std::time::Duration::from_secs(60) =>
                {
                    return BuiltinOutcome::Failed(format!("{e} (is deploy/rbac.yaml applied?)"))
                }
                // Without its slot the node must not go on: wait through API outages.
                Err(e) => {
                    tell(format!(
                        "waiting for the API server to take an upgrade slot: {e}"
                    ));
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
                    if e.code() == 401 {
                        svc.forget_client().await;
                        if let Ok(Some(fresh)) = svc.client().await {
                            c = fresh;
                        }
                    }
                }
            }
            tokio::time::sleep(backoff).await;
        }
    }

    /// The pre-upgrade firewalld step: the upgrade window is open (this attempt is recorded), so
    /// the firewall component's desired state is now `upgrade.firewalld_state`; reconcile it now.
    async fn firewalld(&self) -> BuiltinOutcome {
        let s = &self.s;
        let key = "upgrade.firewalld_state";
        let want = &s.upgrade.firewalld_state;
        if super::firewall::confined(s) {
            return BuiltinOutcome::Skipped(format!(
                "{key} = {want}, but under --root the agent never touches the host's firewalld"
            ));
        }
        let Some(fw) = self.svc.firewall() else {
            return BuiltinOutcome::Failed("the firewall component is not running".into());
        };
        match fw.reconcile("pre-upgrade").await {
            Ok(r) => {
                let unit = r.unit_after.as_ref().map(|u| u.short()).unwrap_or_default();
                if r.unit_actions.is_empty() {
                    BuiltinOutcome::Done(format!(
                        "{key} = {want}: firewalld.service already {unit}"
                    ))
                } else {
                    let before = r
                        .unit_before
                        .as_ref()
                        .map(|u| u.short())
                        .unwrap_or_default();
                    BuiltinOutcome::Done(format!(
                        "{key} = {want}: firewalld.service {before} → {unit}"
                    ))
                }
            }
            Err(e) => BuiltinOutcome::Failed(format!("{key} = {want}: {e}")),
        }
    }
}

/// Log a journal write that failed after something had happened, and keep it for the phase's
/// result.
fn note_write_error(errors: &Mutex<Vec<String>>, path: &Path, phase: Phase, what: &str, e: &str) {
    tracing::error!(rna_component = "phases", rna_phase = %phase, journal = %path.display(), what, error = %e, "journal not written after a step");
    errors
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(format!(
            "{what} could not be written to the upgrade journal {}: {e}",
            path.display()
        ));
}

fn mirrors_outcome(v: &Value) -> BuiltinOutcome {
    if v["ok"].as_bool() != Some(true) {
        return BuiltinOutcome::Failed(v["error"].as_str().unwrap_or("reconcile failed").into());
    }
    if let Some(d) = v["differences"].as_array() {
        return BuiltinOutcome::Skipped(format!(
            "mirrors.mode is verify (another agent owns registries.conf); {} difference(s) reported",
            d.len()
        ));
    }
    if v["changed"].as_bool() == Some(true) {
        let files = v["files"].as_array().map(|f| f.len()).unwrap_or(0);
        BuiltinOutcome::Done(format!("mirror policies applied ({files} file(s) changed)"))
    } else {
        BuiltinOutcome::Done("mirror policies already applied".into())
    }
}
