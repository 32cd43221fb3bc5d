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
    /// Pods deleted after the timeout (escalation).
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
    /// messages), read through `group_version` — the one discovery found (PodDisruptionBudget and
    /// Eviction move to policy/v1 together, in 1.21). Errors give an empty list.
    async fn budgets_for(&self, p: &Pod, group_version: &str) -> Vec<String> {
        let ns = p.metadata.namespace.as_deref().unwrap_or("default");
        let labels: BTreeMap<String, String> = p.metadata.labels.clone().unwrap_or_default();
        let version = group_version.trim_start_matches("policy/");
        let Ok(req) = http::Request::get(format!(
            "/apis/policy/{version}/namespaces/{ns}/poddisruptionbudgets"
        ))
        .body(Vec::new()) else {
            return Vec::new();
        };
        let Ok(v) = self.client().request::<serde_json::Value>(req).await else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for pdb in v["items"].as_array().into_iter().flatten() {
            let sel = pdb["spec"]["selector"]["matchLabels"].as_object();
            let matches = sel.is_some_and(|m| {
                m.iter()
                    .all(|(k, val)| labels.get(k).map(String::as_str) == val.as_str())
            });
            if matches {
                out.push(format!(
                    "{ns}/{}",
                    pdb["metadata"]["name"].as_str().unwrap_or("?")
                ));
            }
        }
        out
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
            for (p, _) in &blocked {
                let ns = p.metadata.namespace.as_deref().unwrap_or("default");
                let name = p.metadata.name.as_deref().unwrap_or("");
                let _ = Api::<Pod>::namespaced(self.client(), ns)
                    .delete(name, &DeleteParams::default())
                    .await;
                report.deleted.push(name_of(p));
            }
            tracing::warn!(rna_component = "cluster", pods = %report.deleted.join(", "), "drain timed out; pods deleted (kubernetes.drain.escalate_after_timeout)");
            return Ok(report);
        }
        let mut parts = Vec::new();
        for (p, why) in &blocked {
            let budgets = self.budgets_for(p, version).await;
            parts.push(if budgets.is_empty() {
                format!("{} ({why})", name_of(p))
            } else {
                format!(
                    "{} (blocked by PodDisruptionBudget {}: {why})",
                    name_of(p),
                    budgets.join(", ")
                )
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
}
