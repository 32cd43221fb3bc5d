//! Draining the node as `oc adm drain` should: list its pods; leave DaemonSet-managed and mirror
//! (static) pods; refuse — naming them, before evicting anything — pods without a controller and
//! pods with emptyDir data unless `kubernetes.drain.force` / `delete_emptydir_data`; evict the rest
//! concurrently (bounded) through the Eviction subresource; on 429 (a PodDisruptionBudget blocks)
//! back off with jitter and retry; wait for each pod to be gone; and at the overall timeout fail
//! with the pods still there and the budgets blocking them (optionally deleting them, grace period
//! honoured, when `escalate_after_timeout` is set).
//!
//! The Eviction body is sent by hand: kube-rs 5 puts `deleteOptions` under a field name the server
//! ignores, and the group version depends on the server (`policy/v1` from Kubernetes 1.21, else
//! `policy/v1beta1`), found through discovery.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams};
use serde::Serialize;
use serde_json::json;

use super::kube::{api_err, local_err, Cluster, KubeError};

/// Drain settings (`[kubernetes.drain]`, plus a dry run).
#[derive(Debug, Clone)]
pub struct DrainOptions {
    /// Overall timeout.
    pub timeout: Duration,
    /// Concurrent evictions.
    pub concurrency: usize,
    /// Evict pods without a controller.
    pub force: bool,
    /// Evict pods with emptyDir volumes.
    pub delete_emptydir_data: bool,
    /// After the timeout, delete what eviction could not move.
    pub escalate_after_timeout: bool,
    /// List only.
    pub dry_run: bool,
}

/// What the drain did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DrainReport {
    /// Pods evicted and gone (`namespace/name`).
    pub evicted: Vec<String>,
    /// Pods left on the node on purpose, with why (DaemonSet, mirror pod, finished).
    pub left: Vec<String>,
    /// Pods deleted after the timeout (escalation), and gone.
    pub deleted: Vec<String>,
    /// Pods a dry run would evict.
    pub would_evict: Vec<String>,
}

/// How a pod is treated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodClass {
    /// Evict it.
    Evict,
    /// Leave it (why).
    Leave(&'static str),
    /// Refuse the drain because of it (why), unless configured.
    Refuse(&'static str),
}

/// Classify one pod as `oc adm drain --ignore-daemonsets` does.
pub fn classify(p: &Pod, force: bool, delete_emptydir_data: bool) -> PodClass {
    let annotations = p.metadata.annotations.clone().unwrap_or_default();
    if annotations.contains_key("kubernetes.io/config.mirror") {
        return PodClass::Leave("mirror (static) pod");
    }
    let phase = p
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("");
    if p.metadata.deletion_timestamp.is_some() {
        return PodClass::Evict;
    }
    let controller = p
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    if controller.is_some_and(|c| c.kind == "DaemonSet") {
        return PodClass::Leave("managed by a DaemonSet");
    }
    if phase == "Succeeded" || phase == "Failed" {
        return PodClass::Evict;
    }
    if controller.is_none() && !force {
        return PodClass::Refuse("not managed by a controller (kubernetes.drain.force = true evicts it; it will not come back)");
    }
    let empty_dir = p
        .spec
        .as_ref()
        .map(|s| s.volumes.iter().flatten().any(|v| v.empty_dir.is_some()))
        .unwrap_or(false);
    if empty_dir && !delete_emptydir_data {
        return PodClass::Refuse("uses emptyDir data, lost on eviction (kubernetes.drain.delete_emptydir_data = true evicts it)");
    }
    PodClass::Evict
}

fn name_of(p: &Pod) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or(""),
        p.metadata.name.as_deref().unwrap_or("")
    )
}

/// Whether a label selector (`metav1.LabelSelector` as JSON) selects a pod with `labels`:
/// every `matchLabels` pair and every `matchExpressions` requirement (`In`, `NotIn`, `Exists`,
/// `DoesNotExist`) must hold. A missing selector selects nothing; an empty one selects every pod
/// when `empty_selects_all` (PodDisruptionBudget `policy/v1`), nothing otherwise (`policy/v1beta1`).
/// An unknown operator selects nothing (the server rejects one anyway).
pub fn selector_matches(
    selector: &serde_json::Value,
    labels: &BTreeMap<String, String>,
    empty_selects_all: bool,
) -> bool {
    let Some(sel) = selector.as_object() else {
        return false;
    };
    let match_labels = sel.get("matchLabels").and_then(|v| v.as_object());
    let exprs = sel.get("matchExpressions").and_then(|v| v.as_array());
    if match_labels.is_none_or(|m| m.is_empty()) && exprs.is_none_or(|e| e.is_empty()) {
        return empty_selects_all;
    }
    let labels_ok = match_labels
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str());
    let exprs_ok = exprs.into_iter().flatten().all(|e| {
        let key = e["key"].as_str().unwrap_or("");
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str())
            .collect();
        let have = labels.get(key).map(String::as_str);
        match e["operator"].as_str().unwrap_or("") {
            "In" => have.is_some_and(|h| values.contains(&h)),
            "NotIn" => have.is_none_or(|h| !values.contains(&h)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

/// How long, past the longest grace period, an escalated drain waits for the deleted pods to go.
const ESCALATION_MARGIN: Duration = Duration::from_secs(30);

/// `d` ± 25 %.
fn jitter(d: Duration) -> Duration {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    d.mul_f64(0.75 + (n % 500) as f64 / 1000.0)
}

/// How an eviction attempt ended.
enum Evicted {
    Accepted,
    Gone,
    Blocked(String),
}

impl Cluster {
    /// The Eviction group version the server serves.
    async fn eviction_version(&self) -> Result<&'static str, KubeError> {
        let req = http::Request::get("/apis/policy")
            .body(Vec::new())
            .map_err(|e| local_err("discovery", e))?;
        let v: serde_json::Value = self
            .client()
            .request(req)
            .await
            .map_err(api_err("discover the policy API group"))?;
        let serves_v1 = v["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|x| x["version"] == "v1");
        Ok(if serves_v1 {
            "policy/v1"
        } else {
            "policy/v1beta1"
        })
    }

    async fn evict(&self, p: &Pod, version: &str) -> Result<Evicted, KubeError> {
        let ns = p.metadata.namespace.as_deref().unwrap_or("default");
        let name = p.metadata.name.as_deref().unwrap_or("");
        let body = json!({"apiVersion": version, "kind": "Eviction",
                          "metadata": {"name": name, "namespace": ns}});
        let req = http::Request::post(format!("/api/v1/namespaces/{ns}/pods/{name}/eviction"))
            .header("Content-Type", "application/json")
            .body(serde_json::to_vec(&body).unwrap_or_default())
            .map_err(|e| local_err(format!("evict {ns}/{name}"), e))?;
        match self.client().request_text(req).await {
            Ok(_) => Ok(Evicted::Accepted),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(Evicted::Gone),
            // 429: a PodDisruptionBudget does not allow it now. (Some servers answer 500 when
            // several budgets match; that is retried too and reported.)
            Err(kube::Error::Api(s)) if s.code == 429 || s.code == 500 => {
                Ok(Evicted::Blocked(s.message))
            }
            Err(e) => Err(api_err(format!("evict {ns}/{name}"))(e)),
        }
    }

    async fn gone(&self, p: &Pod) -> Result<bool, KubeError> {
        let ns = p.metadata.namespace.as_deref().unwrap_or("default");
        let name = p.metadata.name.as_deref().unwrap_or("");
        match Api::<Pod>::namespaced(self.client(), ns)
            .get_opt(name)
            .await
        {
            Ok(None) => Ok(true),
            Ok(Some(now)) => Ok(now.metadata.uid != p.metadata.uid),
            Err(e) => Err(api_err(format!("get pod {ns}/{name}"))(e)),
        }
    }

    /// The PodDisruptionBudgets in the pod's namespace whose selector matches it (names only, for
    /// messages; full label-selector semantics, [`selector_matches`]), read through
    /// `group_version` — the one discovery found (PodDisruptionBudget and Eviction move to
    /// policy/v1 together, in 1.21).
    async fn budgets_for(&self, p: &Pod, group_version: &str) -> Result<Vec<String>, KubeError> {
        let ns = p.metadata.namespace.as_deref().unwrap_or("default");
        let labels: BTreeMap<String, String> = p.metadata.labels.clone().unwrap_or_default();
        let version = group_version.trim_start_matches("policy/");
        let what = format!("list poddisruptionbudgets in {ns}");
        let req = http::Request::get(format!(
            "/apis/policy/{version}/namespaces/{ns}/poddisruptionbudgets"
        ))
        .body(Vec::new())
        .map_err(|e| local_err(what.clone(), e))?;
        let v = self
            .client()
            .request::<serde_json::Value>(req)
            .await
            .map_err(api_err(what))?;
        let mut out = Vec::new();
        for pdb in v["items"].as_array().into_iter().flatten() {
            if selector_matches(&pdb["spec"]["selector"], &labels, version == "v1") {
                out.push(format!(
                    "{ns}/{}",
                    pdb["metadata"]["name"].as_str().unwrap_or("?")
                ));
            }
        }
        Ok(out)
    }

    /// Delete the pods eviction could not move (escalation after the timeout; each pod's grace
    /// period honoured, its uid as a precondition so a replacement of the same name is never hit)
    /// and wait — bounded by the longest grace period plus [`ESCALATION_MARGIN`] — until they are
    /// gone. Returns the pods gone, and the failures (`pod: why`) for those that are not.
    async fn escalate(&self, blocked: &[(Pod, String)]) -> (Vec<String>, Vec<String>) {
        let mut gone = Vec::new();
        let mut failed = Vec::new();
        let mut deleting = Vec::new();
        let mut grace = 0i64;
        for (p, _) in blocked {
            let ns = p.metadata.namespace.as_deref().unwrap_or("default");
            let name = p.metadata.name.as_deref().unwrap_or("");
            let params = DeleteParams {
                preconditions: p.metadata.uid.clone().map(|uid| kube::api::Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match Api::<Pod>::namespaced(self.client(), ns)
                .delete(name, &params)
                .await
            {
                Ok(_) => {
                    grace = grace.max(
                        p.spec
                            .as_ref()
                            .and_then(|s| s.termination_grace_period_seconds)
                            .unwrap_or(30),
                    );
                    deleting.push(p);
                }
                // Gone already, or replaced by a new pod of the same name (uid precondition).
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => gone.push(name_of(p)),
                Err(e) => failed.push(format!(
                    "{}: delete failed: {}",
                    name_of(p),
                    api_err(format!("delete pod {ns}/{name}"))(e)
                )),
            }
        }
        let deadline =
            Instant::now() + Duration::from_secs(grace.max(0) as u64) + ESCALATION_MARGIN;
        while !deleting.is_empty() {
            let mut left = Vec::new();
            for p in deleting {
                // A failed check is retried at the next poll.
                if let Ok(true) = self.gone(p).await {
                    gone.push(name_of(p));
                } else {
                    left.push(p);
                }
            }
            deleting = left;
            if deleting.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                for p in &deleting {
                    failed.push(format!(
                        "{}: deleted, but still terminating after {} s",
                        name_of(p),
                        (Duration::from_secs(grace.max(0) as u64) + ESCALATION_MARGIN).as_secs()
                    ));
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        (gone, failed)
    }

    /// Drain this node.
    pub async fn drain(&self, o: &DrainOptions) -> Result<DrainReport, KubeError> {
        let pods = Api::<Pod>::all(self.client())
            .list(&ListParams::default().fields(&format!("spec.nodeName={}", self.node)))
            .await
            .map_err(api_err(format!("list pods on node {}", self.node)))?
            .items;
        let mut report = DrainReport::default();
        let mut refused = Vec::new();
        let mut evict = Vec::new();
        for p in pods {
            match classify(&p, o.force, o.delete_emptydir_data) {
                PodClass::Evict => evict.push(p),
                PodClass::Leave(why) => report.left.push(format!("{} ({why})", name_of(&p))),
                PodClass::Refuse(why) => refused.push(format!("{}: {why}", name_of(&p))),
            }
        }
        if !refused.is_empty() {
            return Err(KubeError::Refused(format!(
                "drain of node {} refused, nothing was evicted: {}",
                self.node,
                refused.join("; ")
            )));
        }
        if o.dry_run {
            report.would_evict = evict.iter().map(name_of).collect();
            return Ok(report);
        }
        let version = self.eviction_version().await?;
        let deadline = Instant::now() + o.timeout;
        let results: Vec<(Pod, Result<(), String>)> = futures_util::stream::iter(evict)
            .map(|p| async move {
                let r = self.evict_and_wait(&p, version, deadline).await;
                (p, r)
            })
            .buffer_unordered(o.concurrency.max(1))
            .collect()
            .await;
        let mut blocked = Vec::new();
        for (p, r) in results {
            match r {
                Ok(()) => report.evicted.push(name_of(&p)),
                Err(why) => blocked.push((p, why)),
            }
        }
        if blocked.is_empty() {
            return Ok(report);
        }
        if o.escalate_after_timeout {
            let (gone, failed) = self.escalate(&blocked).await;
            report.deleted = gone;
            if failed.is_empty() {
                tracing::warn!(rna_component = "cluster", pods = %report.deleted.join(", "), "drain timed out; pods deleted (kubernetes.drain.escalate_after_timeout)");
                return Ok(report);
            }
            tracing::error!(rna_component = "cluster", deleted = %report.deleted.join(", "), failed = %failed.join("; "), "drain timed out and escalation failed");
            return Err(KubeError::Api {
                what: format!(
                    "drain of node {} timed out after {} s; deleting the pods left failed",
                    self.node,
                    o.timeout.as_secs()
                ),
                code: 0,
                message: format!(
                    "{}{}",
                    failed.join("; "),
                    if report.deleted.is_empty() {
                        String::new()
                    } else {
                        format!(" (deleted and gone: {})", report.deleted.join(", "))
                    }
                ),
            });
        }
        let mut parts = Vec::new();
        for (p, why) in &blocked {
            parts.push(match self.budgets_for(p, version).await {
                Ok(budgets) if budgets.is_empty() => format!("{} ({why})", name_of(p)),
                Ok(budgets) => format!(
                    "{} (blocked by PodDisruptionBudget {}: {why})",
                    name_of(p),
                    budgets.join(", ")
                ),
                Err(e) => format!(
                    "{} ({why}; the PodDisruptionBudgets could not be listed: {e})",
                    name_of(p)
                ),
            });
        }
        Err(KubeError::Api {
            what: format!(
                "drain of node {} timed out after {} s",
                self.node,
                o.timeout.as_secs()
            ),
            code: 0,
            message: format!("still on the node: {}", parts.join("; ")),
        })
    }

    /// Evict one pod (retrying while a budget blocks it) and wait until it is gone.
    async fn evict_and_wait(
        &self,
        p: &Pod,
        version: &str,
        deadline: Instant,
    ) -> Result<(), String> {
        let mut backoff = Duration::from_secs(1);
        let mut last = String::from("waiting");
        loop {
            if Instant::now() >= deadline {
                return Err(last);
            }
            match self.evict(p, version).await {
                Ok(Evicted::Gone) => return Ok(()),
                Ok(Evicted::Accepted) => break,
                Ok(Evicted::Blocked(m)) => {
                    last = m;
                    let wait =
                        jitter(backoff).min(deadline.saturating_duration_since(Instant::now()));
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    last = e.to_string();
                    tokio::time::sleep(jitter(backoff)).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        last = "evicted; waiting for it to terminate".into();
        loop {
            // A failed check is retried at the next poll.
            if let Ok(true) = self.gone(p).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(last);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn classification_follows_oc_adm_drain() {
        let owned = |kind: &str| {
            json!({"metadata": {"name": "p", "namespace": "n", "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": kind, "name": "o", "uid": "u", "controller": true}]}})
        };
        assert_eq!(
            classify(&pod(owned("ReplicaSet")), false, false),
            PodClass::Evict
        );
        assert!(matches!(
            classify(&pod(owned("DaemonSet")), false, false),
            PodClass::Leave(_)
        ));
        let bare = json!({"metadata": {"name": "p", "namespace": "n"}});
        assert!(matches!(
            classify(&pod(bare.clone()), false, false),
            PodClass::Refuse(_)
        ));
        assert_eq!(classify(&pod(bare), true, false), PodClass::Evict);
        let mirror = json!({"metadata": {"name": "p", "namespace": "n",
            "annotations": {"kubernetes.io/config.mirror": "x"}}});
        assert!(matches!(
            classify(&pod(mirror), false, false),
            PodClass::Leave(_)
        ));
        let mut ed = owned("ReplicaSet");
        ed["spec"] = json!({"containers": [], "volumes": [{"name": "v", "emptyDir": {}}]});
        assert!(matches!(
            classify(&pod(ed.clone()), false, false),
            PodClass::Refuse(_)
        ));
        assert_eq!(classify(&pod(ed), false, true), PodClass::Evict);
    }

    #[test]
    fn budget_selectors_follow_label_selector_semantics() {
        let labels: BTreeMap<String, String> = [("app", "web"), ("tier", "front")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let m = |sel: serde_json::Value| selector_matches(&sel, &labels, true);
        assert!(m(json!({"matchLabels": {"app": "web"}})));
        assert!(!m(json!({"matchLabels": {"app": "web", "tier": "back"}})));
        let expr = |op: &str, values: serde_json::Value| json!({"matchExpressions": [{"key": "tier", "operator": op, "values": values}]});
        assert!(m(expr("In", json!(["front", "back"]))));
        assert!(!m(expr("In", json!(["back"]))));
        assert!(m(expr("NotIn", json!(["back"]))));
        assert!(!m(expr("NotIn", json!(["front"]))));
        assert!(m(expr("Exists", json!(null))));
        assert!(!m(expr("DoesNotExist", json!(null))));
        assert!(
            !m(expr("Gt", json!(["1"]))),
            "unknown operators select nothing"
        );
        // A key the pod lacks: NotIn and DoesNotExist hold, In and Exists do not.
        let other = |op: &str| {
            m(json!({"matchExpressions": [{"key": "zone", "operator": op, "values": ["a"]}]}))
        };
        assert!(other("NotIn") && other("DoesNotExist"));
        assert!(!other("In") && !other("Exists"));
        // matchLabels and matchExpressions must both hold.
        assert!(!m(json!({"matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["back"]}]})));
        assert!(m(json!({"matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "Exists"}]})));
        // Empty selector: every pod in policy/v1, none in policy/v1beta1; missing: none.
        assert!(selector_matches(&json!({}), &labels, true));
        assert!(!selector_matches(&json!({}), &labels, false));
        assert!(!selector_matches(&serde_json::Value::Null, &labels, true));
    }
}
