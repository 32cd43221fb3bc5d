//! The cluster side of the daemon: the node condition and annotations that tell `oc get nodes` /
//! `oc describe node` how this RHEL worker stands. Facts are gathered locally every few seconds
//! (no API traffic); the Node is written only when something changed, and the condition's heartbeat
//! at most once per `kubernetes.heartbeat` — so an idle node costs one write a minute. Without a
//! kubeconfig the agent is offline and says so; a missing Node or an unreachable API server is
//! reported and retried with backoff and jitter, never fatal.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use super::phases::PhaseService;
use super::status::DaemonStatus;
use crate::adapters::kube::{local_err, Cluster, KubeError, NodeReport};
use crate::config::Settings;

/// How often local facts are compared with what was last written.
const TICK: Duration = Duration::from_secs(5);

/// How often the agent checks that a cordon it made was not lifted by someone else.
const OWNERSHIP_CHECK: Duration = Duration::from_secs(30);

/// How long a graceful stop waits for the API server to take the `Unknown` condition: an
/// unreachable server must not hold up the stop (systemd's stop timeout is longer).
const STOP_REPORT: Duration = Duration::from_secs(5);

/// The component.
pub struct ClusterService {
    settings: Arc<Mutex<Settings>>,
    status: Arc<Mutex<DaemonStatus>>,
    phases: Arc<PhaseService>,
    /// The connection, when configured and connected (shared with the phase built-ins).
    pub cluster: tokio::sync::Mutex<Option<(String, Cluster)>>,
    /// Wakes the loop early (settings changed, a phase transition).
    pub wake: tokio::sync::Notify,
    /// Events waiting to be posted: (warning, reason, message). Bounded: an unreachable API
    /// server does not make the daemon grow.
    events: Mutex<std::collections::VecDeque<(bool, String, String)>>,
    /// No upgrade is open, the slots were already checked for leftovers, and no
    /// MachineHealthCheck pause of the agent's waits for another node's slot.
    idle_checked: Mutex<bool>,
    /// The mirror differences last announced with a `MirrorsDrift` Event (empty: none).
    last_drift: Mutex<Vec<String>>,
    /// Wakes the cluster-policies feed (settings changed).
    pub policies_wake: tokio::sync::Notify,
}

/// Events kept while the API server is away.
const EVENTS_KEPT: usize = 50;

/// The report for the current local facts.
pub fn facts(st: &DaemonStatus, phases: &PhaseService) -> NodeReport {
    let (upgrade_id, phase_line, failed, open) = phases.node_facts();
    let mirrors_error = st.mirrors.state == "error";
    let fw_error = st.firewalld_detail.last_error.is_some();
    let mut problems = Vec::new();
    if mirrors_error {
        problems.push(format!(
            "mirrors: {}",
            st.mirrors.last_error.as_deref().unwrap_or("error")
        ));
    }
    if fw_error {
        problems.push(format!(
            "firewalld: {}",
            st.firewalld_detail.last_error.as_deref().unwrap_or("error")
        ));
    }
    if let Some(e) = &st.config_error {
        problems.push(format!("configuration: {e}"));
    }
    let (state, reason) = if failed {
        ("Degraded", "PhaseFailed")
    } else if !problems.is_empty() {
        (
            "Degraded",
            if mirrors_error {
                "MirrorsError"
            } else if fw_error {
                "FirewalldError"
            } else {
                "ConfigurationError"
            },
        )
    } else if open {
        ("Working", "UpgradeInProgress")
    } else {
        ("Done", "AgentReady")
    };
    let message = if problems.is_empty() {
        format!(
            "mirrors: {}; firewalld: {}; phase: {}",
            st.mirrors.state, st.firewalld, st.phase
        )
    } else {
        problems.join("; ")
    };
    let mirrors_hash = st
        .mirrors
        .summary
        .as_ref()
        .and_then(|s| serde_json::to_vec(s).ok())
        .map(|b| {
            Sha256::digest(&b)
                .iter()
                .take(8)
                .map(|x| format!("{x:02x}"))
                .collect::<String>()
        })
        .unwrap_or_default();
    NodeReport {
        status: if state == "Degraded" { "False" } else { "True" }.into(),
        reason: reason.into(),
        message: message.clone(),
        annotations: vec![
            ("state".into(), state.into()),
            ("phase".into(), phase_line),
            ("upgrade-id".into(), upgrade_id.unwrap_or_default()),
            (
                "reason".into(),
                if state == "Done" {
                    String::new()
                } else {
                    message
                },
            ),
            ("mirrors-hash".into(), mirrors_hash),
            ("firewalld".into(), st.firewalld.clone()),
        ],
    }
}

impl ClusterService {
    /// A new component; start it with [`ClusterService::run`].
    pub fn new(
        settings: Arc<Mutex<Settings>>,
        status: Arc<Mutex<DaemonStatus>>,
        phases: Arc<PhaseService>,
    ) -> Arc<ClusterService> {
        Arc::new(ClusterService {
            settings,
            status,
            phases,
            cluster: tokio::sync::Mutex::new(None),
            wake: tokio::sync::Notify::new(),
            events: Mutex::new(std::collections::VecDeque::new()),
            idle_checked: Mutex::new(false),
            last_drift: Mutex::new(Vec::new()),
            policies_wake: tokio::sync::Notify::new(),
        })
    }

    /// Queue an Event for the Node (posted by the loop; dropped offline).
    pub fn event(&self, warning: bool, reason: &str, message: &str) {
        let offline = self
            .settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .kubernetes
            .kubeconfig
            .is_empty();
        if offline {
            return;
        }
        let mut q = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() == EVENTS_KEPT {
            q.pop_front();
        }
        q.push_back((warning, reason.to_string(), message.to_string()));
        drop(q);
        self.wake.notify_one();
    }

    /// The upgrade record changed (a phase started or ended, a reset): look at the slots again at
    /// the next slot check even when idle. An upgrade can open and close between two checks;
    /// without this, a MachineHealthCheck pause its post-upgrade had to leave would never be
    /// looked at again.
    pub fn recheck_slots(&self) {
        *self.idle_checked.lock().unwrap_or_else(|p| p.into_inner()) = false;
    }

    /// Announce mirror drift (verify mode: the effective registries configuration differs from the
    /// policies) with a `MirrorsDrift` warning Event — once when it appears or its differences
    /// change, not on every resync, so an idle drifted node does not flood the Events.
    pub fn mirrors_drift(&self, differences: Vec<String>) {
        let mut last = self.last_drift.lock().unwrap_or_else(|p| p.into_inner());
        if *last == differences {
            return;
        }
        *last = differences;
        if last.is_empty() {
            return;
        }
        let message = format!(
            "registries configuration differs from the mirror policies ({} difference(s)): {}",
            last.len(),
            last.join("; ")
        );
        drop(last);
        self.event(true, "MirrorsDrift", &message);
    }

    /// Set the `cluster` line of the status.
    pub fn set_status(&self, line: &str) {
        let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
        if st.cluster != line {
            st.cluster = line.to_string();
        }
    }

    /// Read the Node's MCO annotation (the cluster half of "OpenShift node") and record it; the
    /// daemon watches the record, so `auto` settings (firewalld.state, mirrors.mode) re-evaluate.
    async fn learn_openshift(&self, c: &Cluster) -> Result<(), KubeError> {
        let annotated = c.openshift_annotated().await?;
        let s = self
            .settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match s.record_cluster_openshift(annotated) {
            Ok(false) => {}
            Ok(true) => {
                tracing::info!(rna_component = "cluster", node = %c.node, openshift = annotated, annotation = crate::adapters::kube::MCO_CURRENT_CONFIG, "the Node's MCO annotation changed: \"auto\" settings re-evaluated")
            }
            Err(e) => {
                tracing::warn!(rna_component = "cluster", error = %e, path = %s.cluster_openshift_marker().display(), "cannot record whether the Node carries MCO's annotation")
            }
        }
        Ok(())
    }

    /// The connected cluster for the current settings (connecting when needed); `Ok(None)`
    /// offline.
    pub async fn client(&self) -> Result<Option<Cluster>, KubeError> {
        let s = self
            .settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut guard = self.cluster.lock().await;
        if s.kubernetes.kubeconfig.is_empty() {
            *guard = None;
            return Ok(None);
        }
        let node = super::phases::node_name(&s);
        // The kubeconfig's content is part of the key: a rotated token (or any other edit) is
        // picked up at the next round, without a restart.
        let fingerprint = std::fs::read(&s.kubernetes.kubeconfig)
            .map(|b| {
                Sha256::digest(&b)
                    .iter()
                    .take(16)
                    .map(|x| format!("{x:02x}"))
                    .collect::<String>()
            })
            .unwrap_or_default();
        let key = format!(
            "{}|{fingerprint}|{node}|{}",
            s.kubernetes.kubeconfig, s.kubernetes.annotation_prefix
        );
        if let Some((k, c)) = guard.as_ref() {
            if *k == key {
                return Ok(Some(c.clone()));
            }
        }
        let c = Cluster::connect(&s, &node).await?;
        *guard = c.clone().map(|c| (key, c));
        Ok(c)
    }

    /// Drop the connection after the server refused its credentials (401): the next round
    /// connects again from the kubeconfig (a token file rotated in place is read again).
    pub async fn forget_client(&self) {
        *self.cluster.lock().await = None;
    }

    /// The daemon is stopping gracefully: the condition becomes `Unknown` (reason
    /// `AgentStopped`), so the Node does not keep a `True` that nothing stands behind any more.
    /// Bounded by [`STOP_REPORT`]; offline or unreachable, it is only logged. Call it after the
    /// loop was stopped, so no round writes `True` again.
    pub async fn stopped(&self) {
        let write = async {
            let Some(c) = self.client().await? else {
                return Ok(false);
            };
            let report = NodeReport {
                status: "Unknown".into(),
                reason: "AgentStopped".into(),
                message:
                    "rhel-node-agent stopped; nothing reports this node's state until it runs again"
                        .into(),
                annotations: Vec::new(),
            };
            c.report(&report, false).await.map(|()| true)
        };
        match tokio::time::timeout(STOP_REPORT, write).await {
            Ok(Ok(true)) => {
                tracing::info!(
                    rna_component = "cluster",
                    reason = "AgentStopped",
                    "node condition set to unknown"
                )
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::warn!(rna_component = "cluster", error = %e, "could not set the node condition to unknown on stop")
            }
            Err(_) => {
                tracing::warn!(rna_component = "cluster", timeout_s = STOP_REPORT.as_secs(), "could not set the node condition to unknown on stop: the api server did not answer in time")
            }
        }
    }

    /// Write the Node when the facts changed or the heartbeat is due; keep the ownership of a
    /// cordon honest. Runs until the daemon stops.
    pub async fn run(self: Arc<Self>) {
        let mut last: Option<(NodeReport, Instant)> = None;
        let mut checks = Checks {
            ownership: Instant::now() - OWNERSHIP_CHECK,
            slots: None,
        };
        let mut backoff = Duration::from_secs(1);
        let renew = crate::adapters::lease::renew_interval();
        loop {
            let heartbeat = self
                .settings
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .kubernetes
                .heartbeat;
            let wait = match self.once(&mut last, &mut checks, heartbeat, renew).await {
                Ok(()) => {
                    backoff = Duration::from_secs(1);
                    TICK.min(heartbeat).min(renew)
                }
                Err(e) => {
                    let line = match &e {
                        KubeError::NoNode(n) => format!("node {n} not found in the cluster"),
                        other if other.code() == 401 => format!(
                            "unauthorized: {other} (the kubeconfig's credentials were refused; it is read again at the next try)"
                        ),
                        other => format!("unreachable: {other}"),
                    };
                    if e.code() == 401 {
                        self.forget_client().await;
                    }
                    tracing::warn!(rna_component = "cluster", error = %e, retry_in_s = backoff.as_secs(), "cluster report failed");
                    self.set_status(&line);
                    let w = jitter(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                    w
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    async fn once(
        &self,
        last: &mut Option<(NodeReport, Instant)>,
        checks: &mut Checks,
        heartbeat: Duration,
        renew: Duration,
    ) -> Result<(), KubeError> {
        let Some(c) = self.client().await? else {
            self.set_status("not configured (offline: no kubernetes.kubeconfig)");
            *last = None;
            return Ok(());
        };
        let report = {
            let st = self.status.lock().unwrap_or_else(|p| p.into_inner());
            facts(&st, &self.phases)
        };
        let annotations_changed =
            last.as_ref().map(|(r, _)| &r.annotations) != Some(&report.annotations);
        let condition_changed = last
            .as_ref()
            .map(|(r, _)| (&r.status, &r.reason, &r.message))
            != Some((&report.status, &report.reason, &report.message));
        let due = last.as_ref().is_none_or(|(_, t)| t.elapsed() >= heartbeat);
        if annotations_changed || condition_changed || due {
            c.report(&report, annotations_changed).await?;
            tracing::debug!(rna_component = "cluster", node = %c.node, annotations = annotations_changed, "node status written");
            self.learn_openshift(&c).await?;
            *last = Some((report, Instant::now()));
        }
        loop {
            let next = self
                .events
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop_front();
            let Some((warning, reason, message)) = next else {
                break;
            };
            if let Err(e) = c.event(warning, &reason, &message).await {
                // Keep it for the next round.
                self.events
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_front((warning, reason, message));
                return Err(e);
            }
        }
        if checks.slots.is_none_or(|t| t.elapsed() >= renew) {
            checks.slots = Some(Instant::now());
            self.keep_slot(&c).await?;
        }
        if checks.ownership.elapsed() >= OWNERSHIP_CHECK {
            checks.ownership = Instant::now();
            if c.forget_foreign_uncordon().await? {
                tracing::info!(rna_component = "cluster", node = %c.node, "someone else uncordoned the node; the agent's cordon record is cleared");
            }
        }
        let st = self
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .cluster
            .clone();
        if !st.starts_with("waiting for an upgrade slot") && !st.contains("holding") {
            self.set_status(&format!("connected (node {})", c.node));
        }
        Ok(())
    }

    /// Renew the slot of the open upgrade (every [`renew_interval`](crate::adapters::lease::renew_interval);
    /// a restart or reboot resumes it), and give back any slot this node holds when no upgrade is
    /// open (after post-upgrade or a reset). Every slot `try_slot` can take is looked at (the
    /// ConfigMap's `maxUnavailable` may exceed the local one).
    async fn keep_slot(&self, c: &Cluster) -> Result<(), KubeError> {
        let s = self
            .settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let k = &s.kubernetes;
        let (open_id, _, _, open) = self.phases.node_facts();
        // Idle API traffic: with no upgrade open, look for a slot to give back only once (after
        // start, or after the upgrade closed); then not again until an upgrade opens — unless a
        // MachineHealthCheck pause of the agent's waits for another node's slot (whose holder
        // may have died): then again every round, until the pause is gone.
        if !open && *self.idle_checked.lock().unwrap_or_else(|p| p.into_inner()) {
            return Ok(());
        }
        let held = c
            .held_slots(
                &k.lease_namespace,
                &format!("{}/", c.node),
                k.max_unavailable,
            )
            .await?;
        let mine = open_id.map(|id| format!("{}/{id}", c.node));
        for (i, identity) in held {
            if Some(&identity) == mine.as_ref() {
                c.renew(&k.lease_namespace, &identity, i, k.lease_duration)
                    .await?;
                self.set_status(&format!(
                    "connected (node {}), holding {}",
                    c.node,
                    crate::adapters::lease::slot_name(i)
                ));
            } else if c.release(&k.lease_namespace, &identity, i).await? {
                tracing::info!(rna_component = "cluster", lease = %crate::adapters::lease::slot_name(i), holder = %identity, "upgrade slot released (no open upgrade holds it)");
                self.set_status(&format!("connected (node {})", c.node));
            }
        }
        let mut settled = !open;
        if !open && k.pause_machine_health_checks {
            let (waiting, m) = unpause_when_idle(c, k).await?;
            tracing::debug!(rna_component = "cluster", result = %m, "machinehealthcheck pauses checked");
            settled = !waiting;
        }
        *self.idle_checked.lock().unwrap_or_else(|p| p.into_inner()) = settled;
        Ok(())
    }
}

/// When the periodic checks of [`ClusterService::run`] last ran.
struct Checks {
    /// A cordon the agent made still stands.
    ownership: Instant,
    /// The slots (renewal, leftovers, MachineHealthCheck pauses); `None` before the first.
    slots: Option<Instant>,
}

/// Keep the generated cluster-policies file current while `kubernetes.watch_cluster_policies` is
/// on (one watch per kind; re-established every few minutes and after errors, with backoff).
pub async fn feed_cluster_policies(svc: Arc<ClusterService>) {
    use crate::adapters::cluster_policies as cp;
    let mut backoff = Duration::from_secs(1);
    loop {
        let s = svc
            .settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if !s.kubernetes.watch_cluster_policies {
            let _ = std::fs::remove_file(cp::dir(&s.state_dir).join(cp::FILE));
            svc.policies_wake.notified().await;
            continue;
        }
        let round = async {
            let Some(c) = svc.client().await? else {
                return Ok(());
            };
            let mut changes = cp::changes(&c).await?;
            let list = cp::list_all(&c).await?;
            if cp::store(&s.state_dir, &list).map_err(|e| local_err("store cluster policies", e))? {
                tracing::info!(
                    rna_component = "cluster",
                    objects = list["items"].as_array().map(|a| a.len()).unwrap_or(0),
                    "mirror policies from the cluster updated"
                );
            }
            let window = tokio::time::sleep(Duration::from_secs(280));
            tokio::pin!(window);
            loop {
                tokio::select! {
                    ev = changes.next() => {
                        if ev.is_none() { break; }
                        let list = cp::list_all(&c).await?;
                        if cp::store(&s.state_dir, &list).map_err(|e| local_err("store cluster policies", e))? {
                            tracing::info!(rna_component = "cluster", objects = list["items"].as_array().map(|a| a.len()).unwrap_or(0), "mirror policies from the cluster updated");
                        }
                    }
                    _ = &mut window => break,
                    _ = svc.policies_wake.notified() => break,
                }
            }
            Ok::<(), KubeError>(())
        };
        match round.await {
            Ok(()) => backoff = Duration::from_secs(1),
            Err(e) => {
                tracing::warn!(rna_component = "cluster", error = %e, "watching mirror policies in the cluster failed; retrying");
                tokio::time::sleep(jitter(backoff)).await;
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
        }
        if s.kubernetes.kubeconfig.is_empty() {
            svc.policies_wake.notified().await;
        }
    }
}

/// Remove the agent's MachineHealthCheck pauses when no node holds an upgrade slot any more;
/// otherwise leave them for the last node to finish. Returns whether pauses of the agent's stay
/// (a slot is still held: look again later — its holder may die instead of finishing), and what
/// was done.
pub async fn unpause_when_idle(
    c: &Cluster,
    k: &crate::config::KubernetesSettings,
) -> Result<(bool, String), KubeError> {
    if c.agent_paused_mhcs().await?.is_empty() {
        return Ok((false, "no MachineHealthCheck paused by the agent".into()));
    }
    if c.any_slot_held(&k.lease_namespace, k.max_unavailable)
        .await?
    {
        return Ok((
            true,
            "MachineHealthChecks stay paused: another node holds an upgrade slot".into(),
        ));
    }
    let names = c.unpause_mhcs().await?;
    if !names.is_empty() {
        tracing::info!(rna_component = "cluster", machinehealthchecks = %names.join(", "), "machinehealthcheck pauses removed: no node holds an upgrade slot");
    }
    Ok((
        false,
        if names.is_empty() {
            "no MachineHealthCheck paused by the agent".into()
        } else {
            format!("unpaused MachineHealthCheck(s) {}", names.join(", "))
        },
    ))
}

/// `d` ± 20 %, so nodes that lost the API server at the same moment do not retry in step.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let f = 0.8 + (nanos % 400) as f64 / 1000.0;
    d.mul_f64(f)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_node_name_is_the_lower_cased_host_name() {
        let root = tempfile::tempdir().unwrap();
        let mut s = crate::config::Settings::defaults(root.path());
        assert!(s.node_name.is_empty());
        let out = std::process::Command::new("uname")
            .arg("-n")
            .output()
            .unwrap();
        let uname = String::from_utf8(out.stdout).unwrap().trim().to_lowercase();
        assert!(!uname.is_empty());
        assert_eq!(super::super::phases::node_name(&s), uname);
        s.node_name = "Worker-1.Example".into();
        assert_eq!(
            super::super::phases::node_name(&s),
            "Worker-1.Example",
            "[node] name is used as written"
        );
    }
}
