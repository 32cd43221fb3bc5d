//! The phase journal: the open upgrade record and recent closed ones, with every phase attempt and
//! step, and the transitions between them. The runtime persists the journal before and after
//! each step, so what was running when the machine or the daemon went down is known afterwards.

use serde::{Deserialize, Serialize};

use super::{Builtin, Phase};

/// The journal's schema version. Readers accept this and every older version (see [`migrate`]);
/// a newer one is refused rather than overwritten.
pub const JOURNAL_SCHEMA: u32 = 1;

/// How many closed records are kept for `upgrade status`.
pub const CLOSED_KEPT: usize = 10;

/// The output tail kept per hook in the journal.
pub const OUTPUT_TAIL_BYTES: usize = 64 * 1024;

/// Errors of the journal's state machine and schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    /// The journal was written by a newer agent.
    #[error("schema {found} is newer than this agent understands ({JOURNAL_SCHEMA}); refusing to overwrite it (upgrade the agent, or move the file away)")]
    TooNew {
        /// The schema found.
        found: u32,
    },
    /// The journal is not valid.
    #[error("{0}")]
    Invalid(String),
}

/// State of a phase, of one attempt at it, or of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    /// Not run yet.
    Pending,
    /// Running now.
    Running,
    /// Finished successfully (for steps: done).
    Succeeded,
    /// Finished with a failure.
    Failed,
    /// A step that did not apply (with a reason).
    Skipped,
    /// Was running when the daemon or the machine went down.
    Interrupted,
}

impl RunState {
    /// The word shown to people.
    pub fn word(self) -> &'static str {
        match self {
            RunState::Pending => "pending",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Skipped => "skipped",
            RunState::Interrupted => "interrupted",
        }
    }
}

/// What kind of step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepKind {
    /// An executable from `hooks.d/<phase>.d/`.
    Hook,
    /// One of the agent's built-ins.
    Builtin,
}

/// How a running hook can be found again after a daemon restart, to stop what is left of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerHandle {
    /// The transient systemd unit (systemd runner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The process group (process-group runner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pgid: Option<i32>,
    /// The group leader's start time (clock ticks since boot), to tell a reused pid apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ticks: Option<u64>,
}

/// One step of an attempt: a hook or a built-in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Hook file name, or built-in name.
    pub name: String,
    /// Hook or built-in.
    pub kind: StepKind,
    /// Running, succeeded (done), failed, skipped or interrupted.
    pub state: RunState,
    /// Why it was skipped or failed, or what it did.
    #[serde(default)]
    pub message: String,
    /// When it started.
    pub started_at: String,
    /// When it finished.
    #[serde(default)]
    pub finished_at: Option<String>,
    /// The hook's path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Exit status of a hook that exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Signal that ended a hook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// The hook hit its timeout.
    #[serde(default)]
    pub timed_out: bool,
    /// Bytes of output the hook wrote.
    #[serde(default)]
    pub output_bytes: u64,
    /// The last [`OUTPUT_TAIL_BYTES`] of its output.
    #[serde(default)]
    pub output_tail: String,
    /// Where it runs (while running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<RunnerHandle>,
}

impl Step {
    /// A step that starts now.
    pub fn started(name: &str, kind: StepKind, now: &str) -> Step {
        Step {
            name: name.to_string(),
            kind,
            state: RunState::Running,
            message: String::new(),
            started_at: now.to_string(),
            finished_at: None,
            path: None,
            exit_code: None,
            signal: None,
            timed_out: false,
            output_bytes: 0,
            output_tail: String::new(),
            runner: None,
        }
    }
}

/// One attempt at a phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1-based.
    pub number: u32,
    /// Running, succeeded, failed or interrupted.
    pub state: RunState,
    /// When it started.
    pub started_at: String,
    /// When it finished.
    #[serde(default)]
    pub finished_at: Option<String>,
    /// The boot it ran in.
    pub boot_id: String,
    /// The daemon that ran it.
    #[serde(default)]
    pub daemon_pid: u32,
    /// Started with `--ignore-order`.
    #[serde(default)]
    pub ignore_order: bool,
    /// The machine rebooted since the previous phase of this record finished.
    #[serde(default)]
    pub reboot_detected: bool,
    /// Why it failed or was interrupted.
    #[serde(default)]
    pub message: String,
    /// Its steps, in order.
    #[serde(default)]
    pub steps: Vec<Step>,
}

/// A phase within a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseRecord {
    /// Which phase.
    pub phase: Phase,
    /// Pending until its first attempt; then the state of its last attempt.
    pub state: RunState,
    /// Every attempt, oldest first.
    #[serde(default)]
    pub attempts: Vec<Attempt>,
}

/// A boot seen during an upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootMark {
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot_id: String,
    /// When the agent first saw it in this record.
    pub first_seen: String,
    /// The phase that saw it first.
    pub phase: Phase,
}

/// One upgrade of this node: from pre-cordon to post-upgrade (or a deliberate reset).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeRecord {
    /// `--upgrade-id`, or derived from the target version and the time.
    pub id: String,
    /// `--target-version` (empty when never given).
    #[serde(default)]
    pub target_version: String,
    /// When it was opened.
    pub opened_at: String,
    /// When it was closed.
    #[serde(default)]
    pub closed_at: Option<String>,
    /// `post-upgrade` or `reset`.
    #[serde(default)]
    pub closed_by: Option<String>,
    /// Boots seen, in order (more than one = the machine rebooted during the upgrade).
    #[serde(default)]
    pub boots: Vec<BootMark>,
    /// The four phases, in order.
    pub phases: Vec<PhaseRecord>,
}

impl UpgradeRecord {
    fn new(id: String, target: String, now: &str) -> UpgradeRecord {
        UpgradeRecord {
            id,
            target_version: target,
            opened_at: now.to_string(),
            closed_at: None,
            closed_by: None,
            boots: Vec::new(),
            phases: Phase::ALL
                .iter()
                .map(|&phase| PhaseRecord {
                    phase,
                    state: RunState::Pending,
                    attempts: Vec::new(),
                })
                .collect(),
        }
    }

    /// The record of `phase`.
    pub fn phase(&self, phase: Phase) -> &PhaseRecord {
        &self.phases[phase.index()]
    }

    fn phase_mut(&mut self, phase: Phase) -> &mut PhaseRecord {
        &mut self.phases[phase.index()]
    }

    /// The boot of the attempt that finished last, in any phase.
    fn last_boot(&self) -> Option<&str> {
        self.phases
            .iter()
            .flat_map(|p| p.attempts.iter())
            .filter(|a| a.state != RunState::Running)
            .max_by(|a, b| {
                a.finished_at
                    .as_deref()
                    .unwrap_or(&a.started_at)
                    .cmp(b.finished_at.as_deref().unwrap_or(&b.started_at))
            })
            .map(|a| a.boot_id.as_str())
    }

    /// The attempt running now, if any.
    pub fn running(&self) -> Option<(Phase, &Attempt)> {
        self.phases.iter().find_map(|p| {
            p.attempts
                .last()
                .filter(|a| a.state == RunState::Running)
                .map(|a| (p.phase, a))
        })
    }
}

/// The whole journal file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseJournal {
    /// [`JOURNAL_SCHEMA`].
    pub schema: u32,
    /// The upgrade in progress.
    #[serde(default)]
    pub open: Option<UpgradeRecord>,
    /// Recently closed upgrades, oldest first (at most [`CLOSED_KEPT`]).
    #[serde(default)]
    pub closed: Vec<UpgradeRecord>,
}

impl Default for PhaseJournal {
    fn default() -> Self {
        PhaseJournal {
            schema: JOURNAL_SCHEMA,
            open: None,
            closed: Vec::new(),
        }
    }
}

/// Bring a journal of any older schema to [`JOURNAL_SCHEMA`], step by step, and parse it. Each
/// future schema change adds one arm that rewrites the previous version's JSON; the file on disk
/// is rewritten in the new schema at the next transition.
pub fn migrate(mut value: serde_json::Value) -> Result<PhaseJournal, JournalError> {
    let found = value
        .get("schema")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| JournalError::Invalid("no \"schema\" number".into()))?
        as u32;
    if found > JOURNAL_SCHEMA {
        return Err(JournalError::TooNew { found });
    }
    if found == 0 {
        return Err(JournalError::Invalid("schema 0 does not exist".into()));
    }
    // Schema 1 is the first released format: no older version to rewrite yet.
    value["schema"] = JOURNAL_SCHEMA.into();
    serde_json::from_value(value).map_err(|e| JournalError::Invalid(e.to_string()))
}

/// A request to run a phase (the `phase run` flags).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trigger {
    /// The phase.
    pub phase: Option<Phase>,
    /// `--upgrade-id`.
    #[serde(default)]
    pub upgrade_id: Option<String>,
    /// `--target-version`.
    #[serde(default)]
    pub target_version: Option<String>,
    /// `--ignore-order`.
    #[serde(default)]
    pub ignore_order: bool,
}

/// Facts about "now" that the runtime supplies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Now {
    /// RFC 3339 UTC.
    pub time: String,
    /// The current boot id.
    pub boot_id: String,
    /// The daemon's pid.
    pub pid: u32,
}

/// What a trigger means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A new attempt was recorded as running: run the phase's steps.
    Start {
        /// The record.
        id: String,
        /// The attempt number.
        attempt: u32,
        /// The record was opened by this trigger.
        opened: bool,
        /// The boot changed since the record's last finished phase.
        reboot_detected: bool,
    },
    /// The phase already succeeded in this record: nothing to do (exit 0).
    AlreadyDone {
        /// The record.
        id: String,
    },
    /// Refused by the ordering rules (exit 3).
    Refused(String),
    /// Invalid flags (exit 2).
    Invalid(String),
}

fn check_token(what: &str, v: &str) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.len() <= 100
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {v:?}: use 1 to 100 characters from A-Z a-z 0-9 . _ - +"
        ))
    }
}

/// The id of a record opened without `--upgrade-id`: the target version (or `upgrade`) and the time.
fn derive_id(target: &str, now: &str) -> String {
    let stamp: String = now.chars().filter(|c| *c != '-' && *c != ':').collect();
    format!(
        "{}-{stamp}",
        if target.is_empty() { "upgrade" } else { target }
    )
}

impl PhaseJournal {
    /// Decide what `t` means and, when a phase is to run, record its new attempt as running.
    pub fn begin(&mut self, t: &Trigger, now: &Now) -> Decision {
        let Some(phase) = t.phase else {
            return Decision::Invalid("no phase given".into());
        };
        for (what, v) in [
            ("--upgrade-id", &t.upgrade_id),
            ("--target-version", &t.target_version),
        ] {
            if let Some(v) = v {
                if let Err(e) = check_token(what, v) {
                    return Decision::Invalid(e);
                }
            }
        }
        if let Some(r) = &self.open {
            if let Some((p, a)) = r.running() {
                return Decision::Refused(format!(
                    "phase {p} of upgrade {} is running (attempt {}, since {})",
                    r.id, a.number, a.started_at
                ));
            }
        }
        let mut opened = false;
        match &mut self.open {
            Some(r) => {
                if let Some(id) = &t.upgrade_id {
                    if *id != r.id {
                        return Decision::Refused(format!(
                            "upgrade {} is open (target {}); it must finish (post-upgrade) or be closed with `rhel-node-agent upgrade reset` before upgrade {id}",
                            r.id, shown(&r.target_version)
                        ));
                    }
                }
                if let Some(tv) = &t.target_version {
                    if !r.target_version.is_empty() && *tv != r.target_version {
                        return Decision::Refused(format!(
                            "upgrade {} is open for target {}, not {tv}; finish it or close it with `rhel-node-agent upgrade reset`",
                            r.id, r.target_version
                        ));
                    }
                }
            }
            None => {
                if let Some(id) = &t.upgrade_id {
                    if let Some(c) = self.closed.iter().rev().find(|c| c.id == *id) {
                        if c.phase(phase).state == RunState::Succeeded {
                            return Decision::AlreadyDone { id: id.clone() };
                        }
                        return Decision::Refused(format!(
                            "upgrade {id} was closed ({} at {}); open a new one with pre-cordon",
                            c.closed_by.as_deref().unwrap_or("closed"),
                            c.closed_at.as_deref().unwrap_or("?")
                        ));
                    }
                }
                if phase != Phase::PreCordon && !t.ignore_order {
                    return Decision::Refused(format!(
                        "no upgrade is open: {phase} needs pre-cordon to have succeeded first (or --ignore-order)"
                    ));
                }
                let target = t.target_version.clone().unwrap_or_default();
                let id = t
                    .upgrade_id
                    .clone()
                    .unwrap_or_else(|| derive_id(&target, &now.time));
                self.open = Some(UpgradeRecord::new(id, target, &now.time));
                opened = true;
            }
        }
        let Some(r) = self.open.as_mut() else {
            return Decision::Invalid("no open record".into());
        };
        if r.target_version.is_empty() {
            if let Some(tv) = &t.target_version {
                r.target_version = tv.clone();
            }
        }
        if r.phase(phase).state == RunState::Succeeded {
            return Decision::AlreadyDone { id: r.id.clone() };
        }
        if let Some(pre) = phase.predecessor() {
            let pre_state = r.phase(pre).state;
            if pre_state != RunState::Succeeded && !t.ignore_order {
                return Decision::Refused(format!(
                    "{phase} needs {pre} to have succeeded first in upgrade {} ({pre} is {}); run it, or pass --ignore-order",
                    r.id,
                    pre_state.word()
                ));
            }
        }
        let reboot_detected = r.last_boot().is_some_and(|b| b != now.boot_id);
        if !r.boots.iter().any(|b| b.boot_id == now.boot_id) {
            r.boots.push(BootMark {
                boot_id: now.boot_id.clone(),
                first_seen: now.time.clone(),
                phase,
            });
        }
        let pr = r.phase_mut(phase);
        let number = pr.attempts.len() as u32 + 1;
        pr.attempts.push(Attempt {
            number,
            state: RunState::Running,
            started_at: now.time.clone(),
            finished_at: None,
            boot_id: now.boot_id.clone(),
            daemon_pid: now.pid,
            ignore_order: t.ignore_order,
            reboot_detected,
            message: String::new(),
            steps: Vec::new(),
        });
        pr.state = RunState::Running;
        Decision::Start {
            id: r.id.clone(),
            attempt: number,
            opened,
            reboot_detected,
        }
    }

    fn attempt_mut(&mut self, phase: Phase) -> Option<&mut Attempt> {
        self.open
            .as_mut()?
            .phase_mut(phase)
            .attempts
            .last_mut()
            .filter(|a| a.state == RunState::Running)
    }

    /// Record a step as started; returns its index in the attempt.
    pub fn step_started(&mut self, phase: Phase, step: Step) -> Option<usize> {
        let a = self.attempt_mut(phase)?;
        a.steps.push(step);
        Some(a.steps.len() - 1)
    }

    /// Update a step (its runner handle while running, its outcome when finished).
    pub fn step_update(&mut self, phase: Phase, index: usize, f: impl FnOnce(&mut Step)) {
        if let Some(s) = self.attempt_mut(phase).and_then(|a| a.steps.get_mut(index)) {
            f(s);
        }
    }

    /// Record a step that did not run, with the reason (a skipped built-in or hook file).
    pub fn step_skipped(&mut self, phase: Phase, name: &str, kind: StepKind, why: &str, now: &str) {
        let mut s = Step::started(name, kind, now);
        s.state = RunState::Skipped;
        s.message = why.to_string();
        s.finished_at = Some(now.to_string());
        self.step_started(phase, s);
    }

    /// Finish the running attempt of `phase`. A successful post-upgrade closes the record.
    pub fn finish(&mut self, phase: Phase, ok: bool, message: &str, now: &str) {
        let Some(r) = self.open.as_mut() else { return };
        let pr = r.phase_mut(phase);
        if let Some(a) = pr
            .attempts
            .last_mut()
            .filter(|a| a.state == RunState::Running)
        {
            a.state = if ok {
                RunState::Succeeded
            } else {
                RunState::Failed
            };
            a.finished_at = Some(now.to_string());
            a.message = message.to_string();
            pr.state = a.state;
        }
        if ok && phase == Phase::PostUpgrade {
            self.close("post-upgrade", now);
        }
    }

    fn close(&mut self, by: &str, now: &str) -> Option<String> {
        let mut r = self.open.take()?;
        r.closed_at = Some(now.to_string());
        r.closed_by = Some(by.to_string());
        let id = r.id.clone();
        self.closed.push(r);
        let excess = self.closed.len().saturating_sub(CLOSED_KEPT);
        self.closed.drain(..excess);
        Some(id)
    }

    /// `upgrade reset`: close the open record deliberately. Refused while a phase runs.
    pub fn reset(&mut self, now: &str) -> Result<Option<String>, String> {
        if let Some(r) = &self.open {
            if let Some((p, _)) = r.running() {
                return Err(format!(
                    "phase {p} of upgrade {} is running; wait for it to finish",
                    r.id
                ));
            }
        }
        Ok(self.close("reset", now))
    }

    /// True from the start of pre-upgrade until the record closes (post-upgrade succeeded, or a
    /// reset): while `upgrade.firewalld_state` applies instead of `firewalld.state`.
    pub fn upgrade_window(&self) -> bool {
        self.open
            .as_ref()
            .is_some_and(|r| r.phase(Phase::PreUpgrade).state != RunState::Pending)
    }

    /// At daemon start: whatever the journal says is running is not (the daemon that ran it is
    /// gone). Mark those attempts and steps interrupted, and return the steps with the runner
    /// handles the runtime may act on to stop what is left of them.
    ///
    /// A process-group handle (pgid, leader start time) only means something in the boot that
    /// recorded it: after a reboot that pid may lead an unrelated group, so such handles are
    /// dropped from steps of an attempt that ran in another boot. A transient unit's name stays: it
    /// stops only that unit, and after a reboot the unit is simply gone.
    pub fn recover(&mut self, now: &Now) -> Vec<(Phase, Step)> {
        let mut found = Vec::new();
        let Some(r) = self.open.as_mut() else {
            return found;
        };
        for pr in &mut r.phases {
            let Some(a) = pr
                .attempts
                .last_mut()
                .filter(|a| a.state == RunState::Running)
            else {
                continue;
            };
            let why = if a.boot_id != now.boot_id {
                "the machine rebooted while the phase was running"
            } else {
                "the daemon stopped while the phase was running"
            };
            let same_boot = a.boot_id == now.boot_id;
            for s in &mut a.steps {
                if s.state == RunState::Running {
                    let mut left = s.clone();
                    if !same_boot {
                        left.runner = left
                            .runner
                            .take()
                            .map(|h| RunnerHandle {
                                unit: h.unit,
                                pgid: None,
                                start_ticks: None,
                            })
                            .filter(|h| h.unit.is_some());
                    }
                    found.push((pr.phase, left));
                    s.state = RunState::Interrupted;
                    s.message = why.to_string();
                    s.finished_at = Some(now.time.clone());
                    s.runner = None;
                }
            }
            a.state = RunState::Interrupted;
            a.message = why.to_string();
            a.finished_at = Some(now.time.clone());
            pr.state = RunState::Interrupted;
        }
        found
    }
}

fn shown(v: &str) -> &str {
    if v.is_empty() {
        "not given"
    } else {
        v
    }
}

/// The names of the built-in steps, for readers of the journal.
pub fn builtin_step(b: Builtin, now: &str) -> Step {
    Step::started(b.name(), StepKind::Builtin, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now(t: &str, boot: &str) -> Now {
        Now {
            time: t.into(),
            boot_id: boot.into(),
            pid: 42,
        }
    }

    fn trig(phase: Phase) -> Trigger {
        Trigger {
            phase: Some(phase),
            ..Trigger::default()
        }
    }

    fn run_ok(j: &mut PhaseJournal, t: &Trigger, n: &Now) -> Decision {
        let d = j.begin(t, n);
        if let Decision::Start { .. } = d {
            j.finish(t.phase.unwrap(), true, "", &n.time);
        }
        d
    }

    #[test]
    fn full_upgrade_opens_joins_detects_the_reboot_and_closes() {
        let mut j = PhaseJournal::default();
        let a = now("2026-11-22T05:00:00Z", "boot-a");
        let t = Trigger {
            phase: Some(Phase::PreCordon),
            target_version: Some("4.14.3".into()),
            ..Trigger::default()
        };
        let d = run_ok(&mut j, &t, &a);
        assert_eq!(
            d,
            Decision::Start {
                id: "4.14.3-20261122T050000Z".into(),
                attempt: 1,
                opened: true,
                reboot_detected: false
            }
        );
        assert!(matches!(
            run_ok(&mut j, &trig(Phase::PreUpgrade), &a),
            Decision::Start { opened: false, .. }
        ));
        let b = now("2026-11-22T05:20:00Z", "boot-b");
        assert!(matches!(
            run_ok(&mut j, &trig(Phase::PreUncordon), &b),
            Decision::Start {
                reboot_detected: true,
                ..
            }
        ));
        let r = j.open.as_ref().unwrap();
        assert_eq!(r.boots.len(), 2);
        assert_eq!(r.boots[1].phase, Phase::PreUncordon);
        run_ok(&mut j, &trig(Phase::PostUpgrade), &b);
        assert!(j.open.is_none());
        assert_eq!(j.closed.len(), 1);
        assert_eq!(j.closed[0].closed_by.as_deref(), Some("post-upgrade"));
    }

    #[test]
    fn out_of_order_is_refused_unless_ignored() {
        let mut j = PhaseJournal::default();
        let n = now("2026-11-22T05:00:00Z", "b");
        assert!(matches!(
            j.begin(&trig(Phase::PreUpgrade), &n),
            Decision::Refused(m) if m.contains("no upgrade is open")
        ));
        run_ok(&mut j, &trig(Phase::PreCordon), &n);
        assert!(matches!(
            j.begin(&trig(Phase::PreUncordon), &n),
            Decision::Refused(m) if m.contains("needs pre-upgrade") && m.contains("pending")
        ));
        let t = Trigger {
            phase: Some(Phase::PreUncordon),
            ignore_order: true,
            ..Trigger::default()
        };
        assert!(matches!(j.begin(&t, &n), Decision::Start { .. }));
        assert!(j.open.as_ref().unwrap().phase(Phase::PreUncordon).attempts[0].ignore_order);
    }

    #[test]
    fn succeeded_phase_is_already_done_and_failed_one_is_retried() {
        let mut j = PhaseJournal::default();
        let n = now("2026-11-22T05:00:00Z", "b");
        run_ok(&mut j, &trig(Phase::PreCordon), &n);
        assert!(matches!(
            j.begin(&trig(Phase::PreCordon), &n),
            Decision::AlreadyDone { .. }
        ));
        assert!(matches!(
            j.begin(&trig(Phase::PreUpgrade), &n),
            Decision::Start { attempt: 1, .. }
        ));
        j.finish(Phase::PreUpgrade, false, "hook 10-x exited 1", &n.time);
        assert_eq!(
            j.open.as_ref().unwrap().phase(Phase::PreUpgrade).state,
            RunState::Failed
        );
        assert!(matches!(
            j.begin(&trig(Phase::PreUncordon), &n),
            Decision::Refused(m) if m.contains("failed")
        ));
        assert!(matches!(
            j.begin(&trig(Phase::PreUpgrade), &n),
            Decision::Start { attempt: 2, .. }
        ));
    }

    #[test]
    fn a_running_phase_refuses_other_triggers_and_reset() {
        let mut j = PhaseJournal::default();
        let n = now("2026-11-22T05:00:00Z", "b");
        j.begin(&trig(Phase::PreCordon), &n);
        assert!(matches!(
            j.begin(&trig(Phase::PreUpgrade), &n),
            Decision::Refused(m) if m.contains("is running")
        ));
        assert!(j.reset(&n.time).is_err());
    }

    #[test]
    fn ids_and_targets_must_match_the_open_record() {
        let mut j = PhaseJournal::default();
        let n = now("2026-11-22T05:00:00Z", "b");
        let t = Trigger {
            phase: Some(Phase::PreCordon),
            upgrade_id: Some("u1".into()),
            target_version: Some("4.14.3".into()),
            ..Trigger::default()
        };
        run_ok(&mut j, &t, &n);
        let other_id = Trigger {
            upgrade_id: Some("u2".into()),
            ..t.clone()
        };
        assert!(
            matches!(j.begin(&other_id, &n), Decision::Refused(m) if m.contains("upgrade reset"))
        );
        let other_target = Trigger {
            upgrade_id: None,
            target_version: Some("4.15.0".into()),
            ..t.clone()
        };
        assert!(matches!(j.begin(&other_target, &n), Decision::Refused(m) if m.contains("4.15.0")));
        // The same target without an id joins (a re-run of the play).
        let rerun = Trigger {
            upgrade_id: None,
            ..t.clone()
        };
        assert_eq!(
            j.begin(&rerun, &n),
            Decision::AlreadyDone { id: "u1".into() }
        );
        let bad = Trigger {
            upgrade_id: Some("a b".into()),
            ..t
        };
        assert!(matches!(j.begin(&bad, &n), Decision::Invalid(_)));
    }

    #[test]
    fn reset_closes_and_a_closed_id_is_remembered() {
        let mut j = PhaseJournal::default();
        let n = now("2026-11-22T05:00:00Z", "b");
        let t = Trigger {
            phase: Some(Phase::PreCordon),
            upgrade_id: Some("u1".into()),
            ..Trigger::default()
        };
        run_ok(&mut j, &t, &n);
        assert_eq!(j.reset(&n.time), Ok(Some("u1".into())));
        assert_eq!(j.reset(&n.time), Ok(None));
        assert_eq!(j.begin(&t, &n), Decision::AlreadyDone { id: "u1".into() });
        let t2 = Trigger {
            phase: Some(Phase::PreUpgrade),
            ..t
        };
        assert!(matches!(j.begin(&t2, &n), Decision::Refused(m) if m.contains("was closed")));
    }

    #[test]
    fn recover_marks_running_work_interrupted_and_returns_handles() {
        let mut j = PhaseJournal::default();
        let n = now("2026-11-22T05:00:00Z", "b");
        j.begin(&trig(Phase::PreCordon), &n);
        let mut s = Step::started("10-x", StepKind::Hook, &n.time);
        s.runner = Some(RunnerHandle {
            pgid: Some(1234),
            start_ticks: Some(99),
            unit: None,
        });
        j.step_started(Phase::PreCordon, s);
        let later = now("2026-11-22T05:05:00Z", "b");
        let found = j.recover(&later);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].1.runner.as_ref().unwrap().pgid, Some(1234));
        let pr = j.open.as_ref().unwrap().phase(Phase::PreCordon);
        assert_eq!(pr.state, RunState::Interrupted);
        assert!(pr.attempts[0].message.contains("daemon stopped"));
        assert_eq!(pr.attempts[0].steps[0].state, RunState::Interrupted);
        // An interrupted phase can be re-run.
        assert!(matches!(
            j.begin(&trig(Phase::PreCordon), &later),
            Decision::Start { attempt: 2, .. }
        ));
        let rebooted = now("2026-11-22T05:09:00Z", "c");
        j.recover(&rebooted);
        assert!(j.open.as_ref().unwrap().phase(Phase::PreCordon).attempts[1]
            .message
            .contains("rebooted"));
    }

    /// A hook's process group recorded in an earlier boot: after the reboot that pid may lead an
    /// unrelated group, so recover must not hand it out (a unit name is still handed out).
    #[test]
    fn recover_drops_process_groups_of_an_earlier_boot_and_keeps_units() {
        let start = |j: &mut PhaseJournal, phase: Phase, n: &Now, handle: RunnerHandle| {
            j.begin(
                &Trigger {
                    phase: Some(phase),
                    ignore_order: true,
                    ..Trigger::default()
                },
                n,
            );
            let mut s = Step::started("10-x", StepKind::Hook, &n.time);
            s.runner = Some(handle);
            j.step_started(phase, s);
        };
        let pg = RunnerHandle {
            pgid: Some(1234),
            start_ticks: Some(99),
            unit: None,
        };
        let before = now("2026-11-22T05:00:00Z", "boot-a");
        let after = now("2026-11-22T05:09:00Z", "boot-b");

        let mut j = PhaseJournal::default();
        start(&mut j, Phase::PreCordon, &before, pg.clone());
        let found = j.recover(&after);
        assert_eq!(found.len(), 1, "the step is still reported as interrupted");
        assert_eq!(found[0].1.name, "10-x");
        assert_eq!(found[0].1.runner, None, "no process group of boot-a");
        let step = &j.open.as_ref().unwrap().phase(Phase::PreCordon).attempts[0].steps[0];
        assert_eq!(step.state, RunState::Interrupted);
        assert!(step.message.contains("rebooted"), "{}", step.message);

        // The same handle in the current boot is handed out whole.
        let mut j = PhaseJournal::default();
        start(&mut j, Phase::PreCordon, &before, pg.clone());
        let found = j.recover(&now("2026-11-22T05:01:00Z", "boot-a"));
        assert_eq!(found[0].1.runner.as_ref(), Some(&pg));

        // A transient unit is stopped by name, whatever the boot: it is kept, the pgid is not.
        let mut j = PhaseJournal::default();
        start(
            &mut j,
            Phase::PreUpgrade,
            &before,
            RunnerHandle {
                unit: Some("rna-hook-pre-upgrade-10-x-1a.service".into()),
                pgid: Some(1234),
                start_ticks: Some(99),
            },
        );
        let found = j.recover(&after);
        assert_eq!(
            found[0].1.runner,
            Some(RunnerHandle {
                unit: Some("rna-hook-pre-upgrade-10-x-1a.service".into()),
                pgid: None,
                start_ticks: None,
            })
        );
    }

    #[test]
    fn schema_is_checked_and_migrated() {
        let j = PhaseJournal::default();
        let v = serde_json::to_value(&j).unwrap();
        assert_eq!(migrate(v.clone()).unwrap(), j);
        let mut newer = v.clone();
        newer["schema"] = 99.into();
        assert_eq!(migrate(newer), Err(JournalError::TooNew { found: 99 }));
        assert!(migrate(serde_json::json!({"open": null})).is_err());
    }

    #[test]
    fn closed_history_is_bounded() {
        let mut j = PhaseJournal::default();
        for i in 0..(CLOSED_KEPT + 3) {
            let n = now(&format!("2026-11-22T05:{i:02}:00Z"), "b");
            run_ok(&mut j, &trig(Phase::PreCordon), &n);
            j.reset(&n.time).unwrap();
        }
        assert_eq!(j.closed.len(), CLOSED_KEPT);
        assert!(j.closed[0].opened_at.ends_with("05:03:00Z"));
    }
}
