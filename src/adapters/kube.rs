//! The Kubernetes API: the agent's Node (condition, annotations) and cordon / uncordon with
//! ownership. Typed core/v1 through kube-rs; the client never retries on its own (kube-rs's default
//! retry layer turns a 429 from a PodDisruptionBudget into minutes of silence), the agent decides.
//!
//! Every write is a patch that names only the agent's own fields: a merge patch for annotations
//! (other writers' annotations are untouched), a strategic merge patch for the condition (merged
//! by `type`, other conditions untouched), and `spec.unschedulable` guarded by the Node's
//! `resourceVersion` so a concurrent cordon by someone else is never overwritten blindly.

use std::path::Path;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::config::Settings;

/// The agent's node condition type.
pub const CONDITION: &str = "RHELNodeAgentReady";

/// The annotation the Machine Config Daemon keeps on every Node it manages: with a cluster
/// configured, its presence makes this an OpenShift node (CONFIG.md).
pub const MCO_CURRENT_CONFIG: &str = "machineconfiguration.openshift.io/currentConfig";

/// Kubernetes adapter errors.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The kubeconfig could not be used.
    #[error("kubernetes.kubeconfig {path}: {message}")]
    Config {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// An API call failed.
    #[error("{what}: {message}")]
    Api {
        /// What was being done.
        what: String,
        /// HTTP status (0 when the server was not reached).
        code: u16,
        /// The server's or the client's message.
        message: String,
    },
    /// The Node object does not exist.
    #[error("node {0} does not exist in the cluster")]
    NoNode(String),
    /// Refused by an ownership rule (exit 3).
    #[error("{0}")]
    Refused(String),
}

impl KubeError {
    /// The HTTP status, when the server answered.
    pub fn code(&self) -> u16 {
        match self {
            KubeError::Api { code, .. } => *code,
            _ => 0,
        }
    }
}

/// Map a kube-rs error to [`KubeError::Api`] for `what`: the server's status code and message when
/// it answered, code 0 and the client's error otherwise. The one mapping every adapter uses.
pub(crate) fn api_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> KubeError {
    let what = what.into();
    move |e| match e {
        kube::Error::Api(s) => KubeError::Api {
            what,
            code: s.code,
            message: s.message,
        },
        other => KubeError::Api {
            what,
            code: 0,
            message: other.to_string(),
        },
    }
}

/// A failure before any request was sent (building a request, storing a result): code 0.
pub(crate) fn local_err(what: impl Into<String>, e: impl std::fmt::Display) -> KubeError {
    KubeError::Api {
        what: what.into(),
        code: 0,
        message: e.to_string(),
    }
}

/// What the agent reports on its Node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeReport {
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// CamelCase reason.
    pub reason: String,
    /// Human message.
    pub message: String,
    /// Annotation values keyed by suffix (`state`, `phase`, …); an empty value removes the key.
    pub annotations: Vec<(String, String)>,
}

/// A connection to the cluster for this node.
#[derive(Clone)]
pub struct Cluster {
    client: kube::Client,
    /// The Node name.
    pub node: String,
    /// `kubernetes.annotation_prefix`.
    pub prefix: String,
}

/// What a cordon or uncordon did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CordonOutcome {
    /// The agent changed `spec.unschedulable`.
    Changed(String),
    /// Nothing to do (with why).
    Unchanged(String),
}

impl CordonOutcome {
    /// The message.
    pub fn message(&self) -> &str {
        match self {
            CordonOutcome::Changed(m) | CordonOutcome::Unchanged(m) => m,
        }
    }
}

impl Cluster {
    /// Connect with `kubernetes.kubeconfig` (never `$KUBECONFIG` or `$HOME`: under systemd neither
    /// is the administrator's). `None` when no kubeconfig is configured (offline mode).
    pub async fn connect(s: &Settings, node: &str) -> Result<Option<Cluster>, KubeError> {
        if s.kubernetes.kubeconfig.is_empty() {
            return Ok(None);
        }
        let path = Path::new(&s.kubernetes.kubeconfig);
        let cfg_err = |message: String| KubeError::Config {
            path: path.display().to_string(),
            message,
        };
        let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| cfg_err(e.to_string()))?;
        let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .map_err(|e| cfg_err(e.to_string()))?;
        // The agent backs off and retries itself; the default layer would hide a 429 for minutes.
        config.default_retry = false;
        config.read_timeout = Some(std::time::Duration::from_secs(30));
        let client = kube::Client::try_from(config).map_err(|e| cfg_err(e.to_string()))?;
        Ok(Some(Cluster {
            client,
            node: node.to_string(),
            prefix: s.kubernetes.annotation_prefix.clone(),
        }))
    }

    /// The client (for the drain and other callers in this adapter).
    pub(crate) fn client(&self) -> kube::Client {
        self.client.clone()
    }

    fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    /// The annotation key for `suffix`.
    pub fn key(&self, suffix: &str) -> String {
        format!("{}/{suffix}", self.prefix)
    }

    /// The Node, or [`KubeError::NoNode`].
    pub async fn node(&self) -> Result<Node, KubeError> {
        match self.nodes().get_opt(&self.node).await {
            Ok(Some(n)) => Ok(n),
            Ok(None) => Err(KubeError::NoNode(self.node.clone())),
            Err(e) => Err(api_err(format!("get node {}", self.node))(e)),
        }
    }

    /// Whether the Node carries [`MCO_CURRENT_CONFIG`]: the cluster half of "OpenShift node".
    pub async fn openshift_annotated(&self) -> Result<bool, KubeError> {
        let n = self.node().await?;
        Ok(n.metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(MCO_CURRENT_CONFIG)))
    }

    /// Write the condition (strategic merge by type on the status subresource; the transition time
    /// moves only when the status does) and, when `annotations` is true, the annotations (merge
    /// patch of the agent's keys only).
    pub async fn report(&self, r: &NodeReport, annotations: bool) -> Result<(), KubeError> {
        let node = self.node().await?;
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        );
        let previous = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == CONDITION));
        let transition = match previous {
            Some(p) if p.status == r.status => {
                p.last_transition_time.clone().unwrap_or(now.clone())
            }
            _ => now.clone(),
        };
        let status = json!({"status": {"conditions": [{
            "type": CONDITION, "status": r.status, "reason": r.reason, "message": r.message,
            "lastHeartbeatTime": now, "lastTransitionTime": transition,
        }]}});
        self.nodes()
            .patch_status(
                &self.node,
                &PatchParams::default(),
                &Patch::Strategic(&status),
            )
            .await
            .map_err(api_err(format!("patch node {} status", self.node)))?;
        if annotations {
            let mut a = serde_json::Map::new();
            for (k, v) in &r.annotations {
                a.insert(
                    self.key(k),
                    if v.is_empty() {
                        serde_json::Value::Null
                    } else {
                        json!(v)
                    },
                );
            }
            self.nodes()
                .patch(
                    &self.node,
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"metadata": {"annotations": a}})),
                )
                .await
                .map_err(api_err(format!("patch node {} annotations", self.node)))?;
        }
        Ok(())
    }

    /// Record an Event on this Node (namespace `default`, as the kubelet's node events), so
    /// `oc describe node` shows the agent's phase transitions and drift.
    pub async fn event(&self, warning: bool, reason: &str, message: &str) -> Result<(), KubeError> {
        use k8s_openapi::api::core::v1::Event;
        let node = self.node().await?;
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        );
        let ev: Event = serde_json::from_value(json!({
            "metadata": {"generateName": format!("{}.rhel-node-agent.", self.node), "namespace": "default"},
            "involvedObject": {"kind": "Node", "name": self.node, "uid": node.metadata.uid, "apiVersion": "v1"},
            "reason": reason, "message": message, "type": if warning { "Warning" } else { "Normal" },
            "source": {"component": "rhel-node-agent", "host": self.node},
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }))
        .map_err(|e| local_err("build event", e))?;
        Api::<Event>::namespaced(self.client.clone(), "default")
            .create(&Default::default(), &ev)
            .await
            .map(|_| ())
            .map_err(api_err(format!(
                "create event {reason} for node {}",
                self.node
            )))
    }

    /// Cordon for `upgrade_id`, recording that the agent did it. A node someone else cordoned is
    /// left as it is (and will not be uncordoned by the agent).
    pub async fn cordon(&self, upgrade_id: &str) -> Result<CordonOutcome, KubeError> {
        let owner = self.key("cordoned-by");
        for _ in 0..5 {
            let node = self.node().await?;
            let cordoned = is_cordoned(&node);
            let ours = annotation(&node, &owner);
            if cordoned {
                return Ok(CordonOutcome::Unchanged(match ours {
                    Some(id) => format!("already cordoned by the agent (upgrade {id})"),
                    None => "already cordoned by someone else; the agent does not take it over and will not uncordon it".into(),
                }));
            }
            let patch = json!({
                "metadata": {"resourceVersion": node.metadata.resource_version, "annotations": {owner.clone(): upgrade_id}},
                "spec": {"unschedulable": true},
            });
            match self
                .nodes()
                .patch(&self.node, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    return Ok(CordonOutcome::Changed(format!(
                        "cordoned node {} (upgrade {upgrade_id})",
                        self.node
                    )))
                }
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(api_err(format!("cordon node {}", self.node))(e)),
            }
        }
        Err(KubeError::Api {
            what: format!("cordon node {}", self.node),
            code: 409,
            message: "the Node kept changing (5 conflicts)".into(),
        })
    }

    /// Uncordon, but only a cordon the agent made, unless `override_admin`.
    pub async fn uncordon(&self, override_admin: bool) -> Result<CordonOutcome, KubeError> {
        let owner = self.key("cordoned-by");
        for _ in 0..5 {
            let node = self.node().await?;
            let cordoned = is_cordoned(&node);
            let ours = annotation(&node, &owner);
            if !cordoned {
                if ours.is_some() {
                    self.clear_owner(&node).await?;
                }
                return Ok(CordonOutcome::Unchanged(format!(
                    "node {} is not cordoned",
                    self.node
                )));
            }
            if ours.is_none() && !override_admin {
                return Err(KubeError::Refused(format!(
                    "node {} was cordoned by someone else, not by the agent; it stays cordoned (--override-admin-cordon uncordons it anyway)",
                    self.node
                )));
            }
            let patch = json!({
                "metadata": {"resourceVersion": node.metadata.resource_version, "annotations": {owner.clone(): null}},
                "spec": {"unschedulable": null},
            });
            match self
                .nodes()
                .patch(&self.node, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    return Ok(CordonOutcome::Changed(format!(
                        "uncordoned node {}{}",
                        self.node,
                        if ours.is_none() {
                            " (an administrator's cordon, overridden)"
                        } else {
                            ""
                        }
                    )))
                }
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(api_err(format!("uncordon node {}", self.node))(e)),
            }
        }
        Err(KubeError::Api {
            what: format!("uncordon node {}", self.node),
            code: 409,
            message: "the Node kept changing (5 conflicts)".into(),
        })
    }

    /// Someone else uncordoned a node the agent cordoned (Ansible's `oc adm uncordon`): the
    /// ownership record goes. Returns true when it removed it.
    pub async fn forget_foreign_uncordon(&self) -> Result<bool, KubeError> {
        let node = self.node().await?;
        let cordoned = is_cordoned(&node);
        if !cordoned && annotation(&node, &self.key("cordoned-by")).is_some() {
            self.clear_owner(&node).await?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn clear_owner(&self, node: &Node) -> Result<(), KubeError> {
        let patch = json!({"metadata": {
            "resourceVersion": node.metadata.resource_version,
            "annotations": {self.key("cordoned-by"): null}}});
        self.nodes()
            .patch(&self.node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(api_err(format!("patch node {} annotations", self.node)))
    }
}

/// `spec.unschedulable`.
fn is_cordoned(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

/// An annotation's value.
pub fn annotation(node: &Node, key: &str) -> Option<String> {
    node.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .cloned()
}
