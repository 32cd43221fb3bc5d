//! The upgrade phase state machine and the records of the phase journal.
//!
//! An upgrade of a RHEL worker (openshift-ansible, `serial: 1`) calls four hook points:
//! pre-cordon → (cordon, drain) → pre-upgrade → (packages, machine config, reboot) → pre-uncordon →
//! (uncordon) → post-upgrade. Each call becomes `rhel-node-agent phase run <phase>`; this module
//! decides what such a trigger means against the durable [`PhaseJournal`] (open or join an
//! [`UpgradeRecord`], refuse an out-of-order phase, answer "already done", retry a failed one) and
//! records every step. It is pure: the runtime supplies the clock and the boot id and persists the
//! journal after each transition.

mod journal;
mod time;

pub use journal::*;
pub use time::rfc3339;

use serde::{Deserialize, Serialize};

/// One of the four hook phases, named after the openshift-ansible hook points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Before `oc adm cordon` (`openshift_node_pre_cordon_hook`).
    PreCordon,
    /// After the drain, before the package upgrade (`openshift_node_pre_upgrade_hook`).
    PreUpgrade,
    /// After the upgrade and reboot, before `oc adm uncordon` (`openshift_node_pre_uncordon_hook`).
    PreUncordon,
    /// After the uncordon (`openshift_node_post_upgrade_hook`); closes the record.
    PostUpgrade,
}

impl Phase {
    /// All phases in their prerequisite order.
    pub const ALL: [Phase; 4] = [
        Phase::PreCordon,
        Phase::PreUpgrade,
        Phase::PreUncordon,
        Phase::PostUpgrade,
    ];

    /// The name used on the command line, in directories and in the journal.
    pub fn name(self) -> &'static str {
        match self {
            Phase::PreCordon => "pre-cordon",
            Phase::PreUpgrade => "pre-upgrade",
            Phase::PreUncordon => "pre-uncordon",
            Phase::PostUpgrade => "post-upgrade",
        }
    }

    /// Position in the prerequisite order (0-based).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The phase that must have succeeded before this one (none for pre-cordon).
    pub fn predecessor(self) -> Option<Phase> {
        self.index().checked_sub(1).map(|i| Phase::ALL[i])
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Phase {
    type Err = String;
    fn from_str(s: &str) -> Result<Phase, String> {
        Phase::ALL
            .into_iter()
            .find(|p| p.name() == s || p.name().replace('-', "_") == s)
            .ok_or_else(|| {
                format!(
                    "{s:?} is not a phase (pre-cordon, pre-upgrade, pre-uncordon, post-upgrade)"
                )
            })
    }
}

/// What the configuration says the phases do besides running hooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltinPlan {
    /// `upgrade.firewalld_state` is not `unchanged`: apply it at the start of pre-upgrade.
    pub firewalld_during_upgrade: Option<String>,
    /// `upgrade.reconcile_mirrors_at` (`None` = never).
    pub reconcile_mirrors_at: Option<Phase>,
    /// `upgrade.builtin_cordon_drain`.
    pub cordon_drain: bool,
}

/// A built-in step of a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Builtin {
    /// Take one of the cluster's upgrade slots (a Lease), waiting for one (start of pre-cordon).
    AcquireSlot,
    /// Give the slot back (end of post-upgrade).
    ReleaseSlot,
    /// Put firewalld into `upgrade.firewalld_state` (start of pre-upgrade).
    FirewalldUpgradeState,
    /// Cordon the node (after the pre-cordon hooks).
    Cordon,
    /// Drain the node (after the cordon).
    Drain,
    /// Reconcile the mirror policies, releasing changes held because they need a drain.
    ReconcileMirrors,
    /// Uncordon the node (after the pre-uncordon hooks).
    Uncordon,
}

impl Builtin {
    /// The step name in the journal and in progress output.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::AcquireSlot => "acquire-upgrade-slot",
            Builtin::ReleaseSlot => "release-upgrade-slot",
            Builtin::FirewalldUpgradeState => "firewalld-upgrade-state",
            Builtin::Cordon => "cordon",
            Builtin::Drain => "drain",
            Builtin::ReconcileMirrors => "reconcile-mirrors",
            Builtin::Uncordon => "uncordon",
        }
    }
}

/// One planned step of a phase, in execution order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlannedStep {
    /// A built-in.
    Builtin(Builtin),
    /// All the hooks of the phase, in lexical order (a failure stops the rest).
    Hooks,
}

/// The order of a phase's steps: hooks first, built-ins after them, except two that must hold
/// before anything else runs: the upgrade slot at the start of pre-cordon (serialization across
/// nodes) and the firewalld step of pre-upgrade (the documented step). A mirror reconcile sits
/// after the drain and before the uncordon, so a change that needs a drain lands while the node is
/// empty; the slot is given back last.
pub fn plan(phase: Phase, b: &BuiltinPlan) -> Vec<PlannedStep> {
    let mut steps = Vec::new();
    if phase == Phase::PreCordon {
        steps.push(PlannedStep::Builtin(Builtin::AcquireSlot));
    }
    if phase == Phase::PreUpgrade && b.firewalld_during_upgrade.is_some() {
        steps.push(PlannedStep::Builtin(Builtin::FirewalldUpgradeState));
    }
    steps.push(PlannedStep::Hooks);
    if phase == Phase::PreCordon && b.cordon_drain {
        steps.push(PlannedStep::Builtin(Builtin::Cordon));
        steps.push(PlannedStep::Builtin(Builtin::Drain));
    }
    if Some(phase) == b.reconcile_mirrors_at {
        steps.push(PlannedStep::Builtin(Builtin::ReconcileMirrors));
    }
    if phase == Phase::PreUncordon && b.cordon_drain {
        steps.push(PlannedStep::Builtin(Builtin::Uncordon));
    }
    if phase == Phase::PostUpgrade {
        steps.push(PlannedStep::Builtin(Builtin::ReleaseSlot));
    }
    steps
}

/// Hook timeout for `hook` of `phase`: `hooks.timeouts."<phase>/<hook>"`, else
/// `hooks.timeouts."<phase>"`, else `hooks.timeout`.
pub fn hook_timeout(
    phase: Phase,
    hook: &str,
    default: std::time::Duration,
    overrides: &std::collections::BTreeMap<String, std::time::Duration>,
) -> std::time::Duration {
    overrides
        .get(&format!("{}/{hook}", phase.name()))
        .or_else(|| overrides.get(phase.name()))
        .copied()
        .unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builtins(fw: bool, at: Phase, cd: bool) -> BuiltinPlan {
        BuiltinPlan {
            firewalld_during_upgrade: fw.then(|| "disabled".to_string()),
            reconcile_mirrors_at: Some(at),
            cordon_drain: cd,
        }
    }

    #[test]
    fn phase_names_round_trip_and_order() {
        for p in Phase::ALL {
            assert_eq!(p.name().parse::<Phase>().unwrap(), p);
        }
        assert_eq!("pre_upgrade".parse::<Phase>().unwrap(), Phase::PreUpgrade);
        assert!("upgrade".parse::<Phase>().is_err());
        assert_eq!(Phase::PreCordon.predecessor(), None);
        assert_eq!(Phase::PostUpgrade.predecessor(), Some(Phase::PreUncordon));
    }

    #[test]
    fn plan_puts_firewalld_first_and_builtins_after_hooks() {
        use self::Builtin::{AcquireSlot, Cordon, Drain, FirewalldUpgradeState, ReleaseSlot};
        use self::Builtin::{ReconcileMirrors, Uncordon};
        use PlannedStep::{Builtin, Hooks};
        let b = builtins(true, Phase::PreUncordon, true);
        assert_eq!(
            plan(Phase::PreCordon, &b),
            vec![Builtin(AcquireSlot), Hooks, Builtin(Cordon), Builtin(Drain)]
        );
        assert_eq!(
            plan(Phase::PreUpgrade, &b),
            vec![Builtin(FirewalldUpgradeState), Hooks]
        );
        assert_eq!(
            plan(Phase::PreUncordon, &b),
            vec![Hooks, Builtin(ReconcileMirrors), Builtin(Uncordon)]
        );
        assert_eq!(
            plan(Phase::PostUpgrade, &b),
            vec![Hooks, Builtin(ReleaseSlot)]
        );
        let b = builtins(false, Phase::PreCordon, true);
        assert_eq!(
            plan(Phase::PreCordon, &b),
            vec![
                Builtin(AcquireSlot),
                Hooks,
                Builtin(Cordon),
                Builtin(Drain),
                Builtin(ReconcileMirrors)
            ]
        );
        assert_eq!(plan(Phase::PreUpgrade, &b), vec![Hooks]);
    }

    #[test]
    fn most_specific_timeout_wins() {
        use std::time::Duration;
        let mut o = std::collections::BTreeMap::new();
        o.insert("pre-upgrade".to_string(), Duration::from_secs(30));
        o.insert("pre-upgrade/10-db".to_string(), Duration::from_secs(3600));
        let d = Duration::from_secs(600);
        assert_eq!(
            hook_timeout(Phase::PreUpgrade, "10-db", d, &o),
            Duration::from_secs(3600)
        );
        assert_eq!(
            hook_timeout(Phase::PreUpgrade, "20-x", d, &o),
            Duration::from_secs(30)
        );
        assert_eq!(hook_timeout(Phase::PostUpgrade, "10-db", d, &o), d);
    }
}
