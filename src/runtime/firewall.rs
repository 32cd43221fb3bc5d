//! The firewalld component of the daemon: keeps `firewalld.service` and the declared zones in the
//! desired state (the steady `firewalld.state`, or `upgrade.firewalld_state` while an upgrade is
//! between pre-upgrade and the end of post-upgrade), and restores it when someone changes it.
//!
//! Drift is seen through signals — systemd's `PropertiesChanged` on the unit and `UnitFilesChanged`
//! on the manager (an `enable` without `--now` changes no unit property), and every firewalld signal
//! (`Reloaded`, zone and configuration changes) plus `NameOwnerChanged` of its bus name — and a
//! periodic verification covers missed ones. Each signal only says "look again": the component
//! re-observes, plans and acts, so a burst of signals costs one reconcile.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::Notify;

use super::metrics::Metrics;
use super::phases::PhaseService;
use super::status::{now, DaemonStatus};
use crate::adapters::firewalld::{self, FirewallReport};
use crate::adapters::systemd;
use crate::config::Settings;
use crate::core::firewall::{self, Desired, FirewallInputs};

/// How often the state is verified without a signal.
pub const VERIFY_INTERVAL: Duration = Duration::from_secs(60);

/// How long a burst of signals is collected before one reconcile.
const SIGNAL_DEBOUNCE: Duration = Duration::from_millis(100);

/// What `status` shows about firewalld.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FirewallStatus {
    /// The desired state.
    pub desired: Option<Desired>,
    /// `enabled/active`, … as last observed.
    pub unit: Option<String>,
    /// Drifts restored since start.
    pub drifts: u64,
    /// The last drift: when, and what was restored.
    pub last_drift: Option<(u64, String)>,
    /// Settings found in declared zones that are not declared.
    pub undeclared: Vec<String>,
    /// Last reconcile time.
    pub last_reconcile: Option<u64>,
    /// Last error.
    pub last_error: Option<String>,
}

/// The component.
pub struct FirewallService {
    settings: Arc<Mutex<Settings>>,
    phases: Arc<PhaseService>,
    status: Arc<Mutex<DaemonStatus>>,
    metrics: Arc<Metrics>,
    /// One reconcile at a time (the watcher, the pre-upgrade built-in, `firewall apply` via the
    /// socket would otherwise race on the same unit).
    lock: tokio::sync::Mutex<Option<Desired>>,
    /// A desired state firewalld rejected as a declaration (no such zone, service, ipset): not
    /// retried on signals or the periodic verification (starting firewalld to validate it and
    /// putting it back would echo as signals, forever); retried when the watcher is woken (the
    /// configuration reloaded or changed, the upgrade window opened or closed).
    held: Mutex<Option<Desired>>,
    /// Wakes the watcher: the desired state may have changed (settings, upgrade window).
    pub wake: Notify,
}

/// The inputs of [`firewall::desired`] from the settings and the upgrade window.
pub fn inputs(s: &Settings, upgrade_window: bool) -> FirewallInputs {
    let f = &s.firewalld;
    FirewallInputs {
        state: f.state.clone(),
        mask: f.mask,
        prune: f.prune,
        allow_on_openshift: f.allow_on_openshift,
        default_zone: f.default_zone.clone(),
        zones: f.zones.clone(),
        openshift: s.is_openshift_node(),
        upgrade_state: (upgrade_window && s.upgrade.firewalld_state != "unchanged")
            .then(|| s.upgrade.firewalld_state.clone()),
    }
}

/// Under `--root` without `--system-bus` the agent never touches the host's firewalld.
pub fn confined(s: &Settings) -> bool {
    s.root != std::path::Path::new("/") && s.system_bus.is_none()
}

/// A one-word summary for `STATUS=` and `status`.
fn summary(d: &Desired, unit: Option<&str>, err: Option<&str>) -> String {
    let base = match d {
        Desired::Unmanaged { .. } => return "unmanaged".into(),
        Desired::Refused { .. } => return "refused (see status)".into(),
        Desired::Disabled { mask: true } => "masked",
        Desired::Disabled { mask: false } => "disabled",
        Desired::Enabled { .. } => "enabled",
    };
    match (err, unit) {
        (Some(_), _) => format!("{base}: error (see status)"),
        (None, Some(u)) => format!("{base} ({u})"),
        (None, None) => base.to_string(),
    }
}

impl FirewallService {
    /// A new component (the watcher is started with [`FirewallService::watch`]).
    pub fn new(
        settings: Arc<Mutex<Settings>>,
        phases: Arc<PhaseService>,
        status: Arc<Mutex<DaemonStatus>>,
        metrics: Arc<Metrics>,
    ) -> Arc<FirewallService> {
        Arc::new(FirewallService {
            settings,
            phases,
            status,
            metrics,
            lock: tokio::sync::Mutex::new(None),
            held: Mutex::new(None),
            wake: Notify::new(),
        })
    }

    fn settings(&self) -> Settings {
        self.settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// What firewalld should be now.
    pub fn desired(&self) -> Desired {
        let s = self.settings();
        if confined(&s) {
            return Desired::Unmanaged {
                why: "under --root the agent never touches the host's firewalld".into(),
            };
        }
        firewall::desired(&inputs(&s, self.phases.upgrade_window()))
    }

    fn publish(&self, f: impl FnOnce(&mut FirewallStatus)) {
        let line = {
            let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut st.firewalld_detail);
            let d = st
                .firewalld_detail
                .desired
                .clone()
                .unwrap_or(Desired::Unmanaged { why: String::new() });
            let word = summary(
                &d,
                st.firewalld_detail.unit.as_deref(),
                st.firewalld_detail.last_error.as_deref(),
            );
            if st.firewalld == word {
                return;
            }
            st.firewalld = word;
            st.status_line()
        };
        super::sdnotify::status(&line);
    }

    /// Observe, plan and act once. `trigger` says why (for the log). A change needed while the
    /// desired state is the one last applied is drift: counted, logged with before and after.
    pub async fn reconcile(&self, trigger: &str) -> Result<FirewallReport, String> {
        let mut last = self.lock.lock().await;
        let desired = self.desired();
        let s = self.settings();
        let started = Instant::now();
        if matches!(desired, Desired::Enabled { .. })
            && s.is_openshift_node()
            && last.as_ref() != Some(&desired)
        {
            tracing::warn!(rna_component = "firewalld", "keeping firewalld enabled on an OpenShift node (firewalld.allow_on_openshift = true): {}", firewall::OPENSHIFT_CAVEAT);
        }
        let result = match &desired {
            Desired::Unmanaged { .. } => Ok(FirewallReport {
                desired: Some(desired.clone()),
                ..FirewallReport::default()
            }),
            Desired::Refused { why } => {
                if last.as_ref() != Some(&desired) {
                    tracing::error!(
                        rna_component = "firewalld",
                        "firewalld left as it is: {why}"
                    );
                }
                Err(why.clone())
            }
            _ => match systemd::connect(s.system_bus.as_deref()).await {
                Ok(conn) => firewalld::reconcile(&conn, &desired, false)
                    .await
                    .map_err(|e| {
                        if e.is_declaration() {
                            *self.held.lock().unwrap_or_else(|p| p.into_inner()) =
                                Some(desired.clone());
                        }
                        e.to_string()
                    }),
                Err(e) => Err(e.to_string()),
            },
        };
        if result.is_ok() {
            *self.held.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        self.metrics
            .reconcile_seconds
            .observe(started.elapsed().as_secs_f64());
        let drift = matches!(&result, Ok(r) if r.changed()) && last.as_ref() == Some(&desired);
        let outcome = match &result {
            Ok(_) if drift => "drift",
            Ok(r) if r.changed() => "changed",
            Ok(_) => "unchanged",
            Err(_) => "error",
        };
        self.metrics.reconciled("firewalld", outcome);
        match &result {
            Ok(r) => {
                let (before, after) = (r.before(), r.after());
                let what = r.actions();
                if drift {
                    self.metrics.firewalld_drifts.inc();
                    tracing::warn!(rna_component = "firewalld", trigger, before = %before, after = %after, restored = %what.join("; "), "firewalld drift restored");
                    if let Some(c) = self.phases.cluster() {
                        c.event(true, "FirewalldDrift", &format!("firewalld changed behind the agent's back and was restored: {before} → {after}: {}", what.join("; ")));
                    }
                } else if r.changed() {
                    tracing::info!(rna_component = "firewalld", trigger, before = %before, after = %after, actions = %what.join("; "), "firewalld brought to its declared state");
                } else {
                    tracing::debug!(
                        rna_component = "firewalld",
                        trigger,
                        "firewalld as declared"
                    );
                }
                for u in &r.undeclared {
                    tracing::info!(rna_component = "firewalld", finding = %u, "undeclared firewalld setting left alone (prune = false)");
                }
                *last = Some(desired.clone());
                let (unit, undeclared) = (
                    r.unit_after.as_ref().map(|u| u.short()),
                    r.undeclared.clone(),
                );
                self.publish(|f| {
                    f.desired = Some(desired.clone());
                    if unit.is_some() {
                        f.unit = unit;
                    }
                    f.undeclared = undeclared;
                    f.last_reconcile = Some(now());
                    f.last_error = None;
                    if drift {
                        f.drifts += 1;
                        f.last_drift =
                            Some((now(), format!("{before} → {after}: {}", what.join("; "))));
                    }
                });
            }
            Err(e) => {
                if matches!(desired, Desired::Refused { .. }) {
                    *last = Some(desired.clone());
                } else {
                    tracing::error!(rna_component = "firewalld", trigger, error = %e, "firewalld reconcile failed");
                    *last = None;
                }
                let e = e.clone();
                self.publish(|f| {
                    f.desired = Some(desired.clone());
                    f.last_reconcile = Some(now());
                    f.last_error = Some(e);
                });
            }
        }
        result
    }

    /// The watcher: reconcile at start, on every relevant signal, when woken (settings or the
    /// upgrade window changed) and periodically. Reconnects with backoff when the bus goes away.
    pub async fn watch(self: Arc<Self>) {
        let mut backoff = Duration::from_secs(1);
        loop {
            let s = self.settings();
            if confined(&s) || matches!(self.desired(), Desired::Unmanaged { .. }) {
                let _ = self.reconcile("start").await;
                // Nothing to watch until the settings or the upgrade window change.
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(VERIFY_INTERVAL) => {}
                }
                continue;
            }
            let conn = match systemd::connect(s.system_bus.as_deref()).await {
                Ok(c) => c,
                Err(e) => {
                    self.publish(|f| f.last_error = Some(e.to_string()));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                    continue;
                }
            };
            let mut events = match signals(&conn).await {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(rna_component = "firewalld", error = %e, "cannot watch firewalld and systemd signals; verifying periodically");
                    futures_util::stream::pending().boxed()
                }
            };
            backoff = Duration::from_secs(1);
            let _ = self.reconcile("start").await;
            let mut verify = tokio::time::interval(VERIFY_INTERVAL);
            verify.tick().await;
            loop {
                let trigger = tokio::select! {
                    ev = events.next() => match ev {
                        Some(what) => {
                            // Collect the burst (our own changes echo back too).
                            let deadline = tokio::time::sleep(SIGNAL_DEBOUNCE);
                            tokio::pin!(deadline);
                            loop {
                                tokio::select! {
                                    _ = &mut deadline => break,
                                    more = events.next() => if more.is_none() { break },
                                }
                            }
                            what
                        }
                        None => break,
                    },
                    _ = self.wake.notified() => {
                        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = None;
                        "desired state changed".to_string()
                    }
                    _ = verify.tick() => "periodic verification".to_string(),
                };
                let held = self.held.lock().unwrap_or_else(|p| p.into_inner()).clone();
                if held.is_some() && held == Some(self.desired()) {
                    tracing::debug!(rna_component = "firewalld", trigger, "declaration rejected by firewalld: not retried until the configuration changes");
                    continue;
                }
                let _ = self.reconcile(&trigger).await;
                if matches!(self.desired(), Desired::Unmanaged { .. }) {
                    break;
                }
            }
        }
    }
}

/// Every signal that may mean firewalld's state changed, as a stream of descriptions.
async fn signals(
    conn: &zbus::Connection,
) -> zbus::Result<futures_util::stream::BoxStream<'static, String>> {
    use zbus::message::Type;
    use zbus::MatchRule;
    let mut streams = Vec::new();
    let add = |rule: MatchRule<'static>, what: &'static str| {
        let conn = conn.clone();
        async move {
            let s =
                zbus::MessageStream::for_match_rule(rule, &conn, std::num::NonZeroUsize::new(64))
                    .await?;
            Ok::<_, zbus::Error>(s.map(move |m| {
                let member = m
                    .ok()
                    .and_then(|m| m.header().member().map(|x| x.to_string()))
                    .unwrap_or_default();
                format!("{what} {member}")
            }))
        }
    };
    // systemd: the unit's properties and the manager's unit files (needs Subscribe()).
    let systemd_present = {
        let dbus = zbus::fdo::DBusProxy::new(conn).await?;
        dbus.name_has_owner("org.freedesktop.systemd1".try_into()?)
            .await
            .unwrap_or(false)
    };
    if systemd_present {
        let manager = zbus_systemd::systemd1::ManagerProxy::new(conn).await?;
        systemd::subscribe(&manager).await?;
        let path = manager.load_unit(firewalld::UNIT.to_string()).await?;
        streams.push(
            add(
                MatchRule::builder()
                    .msg_type(Type::Signal)
                    .interface("org.freedesktop.DBus.Properties")
                    .member("PropertiesChanged")
                    .path(path.into_inner())
                    .build()?,
                "systemd: firewalld.service",
            )
            .await?
            .boxed(),
        );
        streams.push(
            add(
                MatchRule::builder()
                    .msg_type(Type::Signal)
                    .interface("org.freedesktop.systemd1.Manager")
                    .member("UnitFilesChanged")
                    .build()?,
                "systemd:",
            )
            .await?
            .boxed(),
        );
    }
    // firewalld: Reloaded, zone and configuration changes, and its name coming and going.
    streams.push(
        add(
            MatchRule::builder()
                .msg_type(Type::Signal)
                .path_namespace("/org/fedoraproject/FirewallD1")
                .build()?,
            "firewalld:",
        )
        .await?
        .boxed(),
    );
    streams.push(
        add(
            MatchRule::builder()
                .msg_type(Type::Signal)
                .sender("org.freedesktop.DBus")
                .interface("org.freedesktop.DBus")
                .member("NameOwnerChanged")
                .arg(0, firewalld::BUS_NAME)
                .build()?,
            "bus:",
        )
        .await?
        .boxed(),
    );
    Ok(futures_util::stream::select_all(streams).boxed())
}
