//! Upgrades serialized across nodes with Kubernetes Leases: `max_unavailable` slots, Leases
//! `rhel-node-agent-slot-<i>` in `kubernetes.lease_namespace`, held by `<node>/<upgrade-id>` from the
//! start of pre-cordon to the end of post-upgrade, renewed every 30 s. Every write carries the
//! Lease's `resourceVersion` (optimistic concurrency: two nodes racing for a slot cannot both win).
//! A holder with the same identity resumes after a restart or reboot; a slot whose holder stopped
//! renewing for `lease_duration` can be taken by another node. `max_unavailable` comes from the
//! ConfigMap `<lease_namespace>/upgrade` (`maxUnavailable`) when present, so all nodes agree.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};

use super::kube::{api_err, Cluster, KubeError};

/// How many Leases past the effective `max_unavailable` the agent still looks at when renewing,
/// releasing or checking slots: the value may have been lowered while a slot was held.
pub const SLOT_MARGIN: u32 = 4;

/// How often the slot of an open upgrade is renewed: every 30 s. The environment variable
/// `RNA_TEST_LEASE_RENEW` (a duration such as `1s`) shortens it for the integration tests only —
/// it is deliberately not a configuration key (docs/development.md).
pub fn renew_interval() -> Duration {
    std::env::var("RNA_TEST_LEASE_RENEW")
        .ok()
        .and_then(|v| crate::config::parse_duration(&v).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(Duration::from_secs(30))
}

/// The Lease name of slot `i`.
pub fn slot_name(i: u32) -> String {
    format!("rhel-node-agent-slot-{i}")
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

/// Whether a Lease's holder stopped renewing (renew time + duration in the past).
pub fn expired(spec: &LeaseSpec, at: k8s_openapi::jiff::Timestamp) -> bool {
    let Some(renew) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let secs = spec.lease_duration_seconds.unwrap_or(0).max(0) as i64;
    match renew
        .0
        .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(secs))
    {
        Ok(until) => until < at,
        Err(_) => false,
    }
}

/// What a try for a slot found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotTry {
    /// This identity holds slot `i` (taken now, or resumed).
    Held(u32),
    /// Every slot is held by someone else (their identities).
    Busy(Vec<String>),
}

impl Cluster {
    fn leases(&self, ns: &str) -> Api<Lease> {
        Api::namespaced(self.client(), ns)
    }

    /// `maxUnavailable` of the ConfigMap `<ns>/upgrade` when present, else `fallback`.
    pub async fn max_unavailable(&self, ns: &str, fallback: u32) -> Result<u32, KubeError> {
        let cm = Api::<ConfigMap>::namespaced(self.client(), ns)
            .get_opt("upgrade")
            .await
            .map_err(api_err(format!("get configmap {ns}/upgrade")))?;
        Ok(cm
            .and_then(|c| c.data)
            .and_then(|d| d.get("maxUnavailable").cloned())
            .and_then(|v| v.trim().parse::<u32>().ok())
            .filter(|n| *n > 0)
            .unwrap_or(fallback))
    }

    /// How many slot Leases exist at most: the effective `max_unavailable` (the ConfigMap's, which
    /// `try_slot` uses, or `local` when it is absent — whichever is larger) plus [`SLOT_MARGIN`].
    /// Renewal, release and the "any slot held" check must cover every slot `try_slot` can take.
    pub async fn slot_range(&self, ns: &str, local: u32) -> Result<u32, KubeError> {
        let effective = self.max_unavailable(ns, local).await?;
        Ok(effective.max(local).max(1) + SLOT_MARGIN)
    }

    /// Try once to hold a slot for `identity`.
    pub async fn try_slot(
        &self,
        ns: &str,
        identity: &str,
        slots: u32,
        duration: Duration,
    ) -> Result<SlotTry, KubeError> {
        let api = self.leases(ns);
        let secs = duration.as_secs().min(i32::MAX as u64) as i32;
        let mut holders = Vec::new();
        // Resume a slot this identity already holds (after a restart or the upgrade's reboot),
        // also one above `slots` taken before the ConfigMap was lowered.
        for i in 0..slots.max(1) + SLOT_MARGIN {
            let name = slot_name(i);
            if let Some(l) = api
                .get_opt(&name)
                .await
                .map_err(api_err(format!("get lease {ns}/{name}")))?
            {
                if l.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(identity) {
                    self.renew(ns, identity, i, duration).await?;
                    return Ok(SlotTry::Held(i));
                }
            }
        }
        for i in 0..slots {
            let name = slot_name(i);
            let current = api
                .get_opt(&name)
                .await
                .map_err(api_err(format!("get lease {ns}/{name}")))?;
            let spec = LeaseSpec {
                holder_identity: Some(identity.to_string()),
                lease_duration_seconds: Some(secs),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                ..LeaseSpec::default()
            };
            let result = match current {
                None => {
                    let l = Lease {
                        metadata: ObjectMeta {
                            name: Some(name.clone()),
                            namespace: Some(ns.to_string()),
                            ..ObjectMeta::default()
                        },
                        spec: Some(spec),
                    };
                    api.create(&PostParams::default(), &l).await.map(|_| ())
                }
                Some(mut l) => {
                    let free = match l.spec.as_ref() {
                        None => true,
                        Some(s) => {
                            s.holder_identity.as_deref().unwrap_or("").is_empty()
                                || expired(s, k8s_openapi::jiff::Timestamp::now())
                        }
                    };
                    if !free {
                        holders.push(
                            l.spec
                                .as_ref()
                                .and_then(|s| s.holder_identity.clone())
                                .unwrap_or_default(),
                        );
                        continue;
                    }
                    let transitions = l
                        .spec
                        .as_ref()
                        .and_then(|s| s.lease_transitions)
                        .unwrap_or(0);
                    l.spec = Some(LeaseSpec {
                        lease_transitions: Some(transitions + 1),
                        ..spec
                    });
                    // replace() sends the resourceVersion we read: a concurrent taker gets 409.
                    api.replace(&name, &PostParams::default(), &l)
                        .await
                        .map(|_| ())
                }
            };
            match result {
                Ok(()) => return Ok(SlotTry::Held(i)),
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(api_err(format!("take lease {ns}/{name}"))(e)),
            }
        }
        Ok(SlotTry::Busy(holders))
    }

    /// Renew slot `i` for `identity`. Fails (refused) if someone else holds it now.
    pub async fn renew(
        &self,
        ns: &str,
        identity: &str,
        i: u32,
        duration: Duration,
    ) -> Result<(), KubeError> {
        let api = self.leases(ns);
        let name = slot_name(i);
        for _ in 0..5 {
            let mut l = api
                .get(&name)
                .await
                .map_err(api_err(format!("get lease {ns}/{name}")))?;
            let spec = l.spec.get_or_insert_with(LeaseSpec::default);
            if spec.holder_identity.as_deref() != Some(identity) {
                return Err(KubeError::Refused(format!(
                    "lease {ns}/{name} is held by {}, not {identity}",
                    spec.holder_identity.as_deref().unwrap_or("nobody")
                )));
            }
            spec.renew_time = Some(now());
            spec.lease_duration_seconds = Some(duration.as_secs().min(i32::MAX as u64) as i32);
            match api.replace(&name, &PostParams::default(), &l).await {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(api_err(format!("renew lease {ns}/{name}"))(e)),
            }
        }
        Err(KubeError::Api {
            what: format!("renew lease {ns}/{name}"),
            code: 409,
            message: "the Lease kept changing (5 conflicts)".into(),
        })
    }

    /// The slots `identity_prefix` (`<node>/`) holds: `(slot, identity)`, looking at every slot
    /// of [`Cluster::slot_range`] (`local` is `kubernetes.max_unavailable`).
    pub async fn held_slots(
        &self,
        ns: &str,
        identity_prefix: &str,
        local: u32,
    ) -> Result<Vec<(u32, String)>, KubeError> {
        let api = self.leases(ns);
        let mut out = Vec::new();
        for i in 0..self.slot_range(ns, local).await? {
            let name = slot_name(i);
            if let Some(l) = api
                .get_opt(&name)
                .await
                .map_err(api_err(format!("get lease {ns}/{name}")))?
            {
                if let Some(h) = l.spec.as_ref().and_then(|s| s.holder_identity.clone()) {
                    if h.starts_with(identity_prefix) {
                        out.push((i, h));
                    }
                }
            }
        }
        Ok(out)
    }

    /// True when any node holds a slot that has not expired, looking at every slot of
    /// [`Cluster::slot_range`] (`local` is `kubernetes.max_unavailable`).
    pub async fn any_slot_held(&self, ns: &str, local: u32) -> Result<bool, KubeError> {
        let api = self.leases(ns);
        let now = k8s_openapi::jiff::Timestamp::now();
        for i in 0..self.slot_range(ns, local).await? {
            let name = slot_name(i);
            if let Some(l) = api
                .get_opt(&name)
                .await
                .map_err(api_err(format!("get lease {ns}/{name}")))?
            {
                if let Some(s) = l.spec.as_ref() {
                    if !s.holder_identity.as_deref().unwrap_or("").is_empty() && !expired(s, now) {
                        return Ok(true);
                    }
                }
            }
        }
        Ok(false)
    }

    /// Give slot `i` back (clear its holder), if `identity` still holds it.
    pub async fn release(&self, ns: &str, identity: &str, i: u32) -> Result<bool, KubeError> {
        let api = self.leases(ns);
        let name = slot_name(i);
        for _ in 0..5 {
            let Some(mut l) = api
                .get_opt(&name)
                .await
                .map_err(api_err(format!("get lease {ns}/{name}")))?
            else {
                return Ok(false);
            };
            let spec = l.spec.get_or_insert_with(LeaseSpec::default);
            if spec.holder_identity.as_deref() != Some(identity) {
                return Ok(false);
            }
            spec.holder_identity = None;
            spec.renew_time = None;
            spec.acquire_time = None;
            match api.replace(&name, &PostParams::default(), &l).await {
                Ok(_) => return Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(api_err(format!("release lease {ns}/{name}"))(e)),
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_follows_renew_time_and_duration() {
        let t = k8s_openapi::jiff::Timestamp::from_second(1_000_000).unwrap();
        let spec = |renew: i64, d: i32| LeaseSpec {
            renew_time: Some(MicroTime(
                k8s_openapi::jiff::Timestamp::from_second(renew).unwrap(),
            )),
            lease_duration_seconds: Some(d),
            ..LeaseSpec::default()
        };
        assert!(!expired(&spec(999_990, 30), t));
        assert!(expired(&spec(999_960, 30), t));
        assert!(expired(&LeaseSpec::default(), t));
    }
}
