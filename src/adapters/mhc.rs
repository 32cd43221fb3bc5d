//! Pausing OpenShift's MachineHealthChecks while RHEL workers upgrade (the documents' "pause the
//! MachineHealthCheck before updating" step), when `kubernetes.pause_machine_health_checks` is on:
//! while this node holds an upgrade slot, every MachineHealthCheck in `openshift-machine-api`
//! carries `cluster.x-k8s.io/paused: ""`, so the rebooting worker is not remediated. The agent marks
//! the pauses it adds and removes only those, and only when no node holds a slot any more. A pause
//! someone else set is left alone.

use serde_json::{json, Value};

use super::kube::{api_err, local_err, Cluster, KubeError};

/// The namespace of the MachineHealthChecks.
pub const NAMESPACE: &str = "openshift-machine-api";
/// The pause annotation the machine-api controllers honour.
pub const PAUSED: &str = "cluster.x-k8s.io/paused";

const PATH: &str =
    "/apis/machine.openshift.io/v1beta1/namespaces/openshift-machine-api/machinehealthchecks";

impl Cluster {
    fn marker(&self) -> String {
        self.key("paused-mhc")
    }

    /// The MachineHealthChecks (an empty list when the API is not served: not OpenShift).
    async fn mhcs(&self) -> Result<Vec<Value>, KubeError> {
        let req = http::Request::get(PATH)
            .body(Vec::new())
            .map_err(|e| local_err("list machinehealthchecks", e))?;
        match self.client().request::<Value>(req).await {
            Ok(v) => Ok(v["items"].as_array().cloned().unwrap_or_default()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(Vec::new()),
            Err(e) => Err(api_err("list machinehealthchecks")(e)),
        }
    }

    async fn patch_mhc(&self, name: &str, annotations: Value) -> Result<(), KubeError> {
        let body = json!({"metadata": {"annotations": annotations}});
        let req = http::Request::patch(format!("{PATH}/{name}"))
            .header("Content-Type", "application/merge-patch+json")
            .body(serde_json::to_vec(&body).unwrap_or_default())
            .map_err(|e| local_err("patch machinehealthcheck", e))?;
        self.client()
            .request_text(req)
            .await
            .map(|_| ())
            .map_err(api_err("patch machinehealthcheck"))
    }

    /// Pause every MachineHealthCheck that is not paused yet, marking the pause as the agent's.
    /// Returns the names paused now.
    pub async fn pause_mhcs(&self, holder: &str) -> Result<Vec<String>, KubeError> {
        let mut paused = Vec::new();
        for m in self.mhcs().await? {
            let name = m["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let a = &m["metadata"]["annotations"];
            if a.get(PAUSED).is_some() {
                continue;
            }
            self.patch_mhc(&name, json!({PAUSED: "", self.marker(): holder}))
                .await?;
            paused.push(name);
        }
        Ok(paused)
    }

    /// The MachineHealthChecks carrying a pause the agent added (any node's): while there are
    /// some, an idle agent keeps checking whether the last slot went, so a holder that died
    /// does not leave them paused for good.
    pub async fn agent_paused_mhcs(&self) -> Result<Vec<String>, KubeError> {
        Ok(self
            .mhcs()
            .await?
            .iter()
            .filter(|m| m["metadata"]["annotations"].get(self.marker()).is_some())
            .map(|m| {
                m["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect())
    }

    /// Remove the pauses the agent added (never someone else's). The caller checks that no node
    /// holds a slot. Returns the names unpaused.
    pub async fn unpause_mhcs(&self) -> Result<Vec<String>, KubeError> {
        let mut unpaused = Vec::new();
        for m in self.mhcs().await? {
            let name = m["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if m["metadata"]["annotations"].get(self.marker()).is_none() {
                continue;
            }
            self.patch_mhc(&name, json!({PAUSED: null, self.marker(): null}))
                .await?;
            unpaused.push(name);
        }
        Ok(unpaused)
    }
}
