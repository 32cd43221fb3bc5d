//! firewalld over D-Bus: our own `#[proxy]` traits for its runtime (`org.fedoraproject.FirewallD1`,
//! `.zone`) and permanent (`.config`, `.config.zone`) APIs — no `firewall-cmd` subprocesses — and
//! [`reconcile`], which brings `firewalld.service` (through systemd) and the declared zones to the
//! desired state, counting every mutating call so an idempotent re-apply can be seen to make none.
//!
//! Method names and signatures are firewalld's (0.8 on RHEL 8, 1.x on RHEL 9 and Debian 12);
//! errors come back as `org.fedoraproject.FirewallD1.Exception` with the code as the message's
//! prefix (`INVALID_ZONE: nosuchzone`), which is mapped to the configuration key that caused it.

use std::time::{Duration, Instant};

use serde::Serialize;
use zbus::proxy;
use zbus_systemd::systemd1::{ManagerProxy, UnitProxy};

use crate::adapters::systemd;
use crate::core::firewall::{
    self, Change, Desired, FirewalldObserved, Item, Layer, Port, UnitAction, UnitObserved,
    ZoneDecl, ZoneObserved,
};

/// firewalld's bus name.
pub const BUS_NAME: &str = "org.fedoraproject.FirewallD1";
/// The unit.
pub const UNIT: &str = "firewalld.service";

#[proxy(
    interface = "org.fedoraproject.FirewallD1",
    default_service = "org.fedoraproject.FirewallD1",
    default_path = "/org/fedoraproject/FirewallD1"
)]
trait FirewallD1 {
    #[zbus(name = "getDefaultZone")]
    fn get_default_zone(&self) -> zbus::Result<String>;
    #[zbus(name = "setDefaultZone")]
    fn set_default_zone(&self, zone: &str) -> zbus::Result<()>;
    #[zbus(name = "listServices")]
    fn list_services(&self) -> zbus::Result<Vec<String>>;
    #[zbus(signal, name = "Reloaded")]
    fn reloaded(&self) -> zbus::Result<()>;
    #[zbus(property, name = "state")]
    fn state(&self) -> zbus::Result<String>;
}

#[proxy(
    interface = "org.fedoraproject.FirewallD1.zone",
    default_service = "org.fedoraproject.FirewallD1",
    default_path = "/org/fedoraproject/FirewallD1"
)]
trait Zone {
    #[zbus(name = "getPorts")]
    fn get_ports(&self, zone: &str) -> zbus::Result<Vec<Vec<String>>>;
    #[zbus(name = "addPort")]
    fn add_port(&self, zone: &str, port: &str, proto: &str, timeout: i32) -> zbus::Result<String>;
    #[zbus(name = "removePort")]
    fn remove_port(&self, zone: &str, port: &str, proto: &str) -> zbus::Result<String>;
    #[zbus(name = "getServices")]
    fn get_services(&self, zone: &str) -> zbus::Result<Vec<String>>;
    #[zbus(name = "addService")]
    fn add_service(&self, zone: &str, service: &str, timeout: i32) -> zbus::Result<String>;
    #[zbus(name = "removeService")]
    fn remove_service(&self, zone: &str, service: &str) -> zbus::Result<String>;
    #[zbus(name = "getSources")]
    fn get_sources(&self, zone: &str) -> zbus::Result<Vec<String>>;
    #[zbus(name = "addSource")]
    fn add_source(&self, zone: &str, source: &str) -> zbus::Result<String>;
    #[zbus(name = "changeZoneOfSource")]
    fn change_zone_of_source(&self, zone: &str, source: &str) -> zbus::Result<String>;
    #[zbus(name = "removeSource")]
    fn remove_source(&self, zone: &str, source: &str) -> zbus::Result<String>;
    #[zbus(name = "getInterfaces")]
    fn get_interfaces(&self, zone: &str) -> zbus::Result<Vec<String>>;
    #[zbus(name = "addInterface")]
    fn add_interface(&self, zone: &str, interface: &str) -> zbus::Result<String>;
    #[zbus(name = "changeZoneOfInterface")]
    fn change_zone_of_interface(&self, zone: &str, interface: &str) -> zbus::Result<String>;
    #[zbus(name = "removeInterface")]
    fn remove_interface(&self, zone: &str, interface: &str) -> zbus::Result<String>;
}

#[proxy(
    interface = "org.fedoraproject.FirewallD1.config",
    default_service = "org.fedoraproject.FirewallD1",
    default_path = "/org/fedoraproject/FirewallD1/config"
)]
trait Config {
    #[zbus(name = "getZoneByName")]
    fn get_zone_by_name(&self, name: &str) -> zbus::Result<zbus::OwnedObjectPath>;
    #[zbus(name = "getZoneOfInterface")]
    fn get_zone_of_interface(&self, interface: &str) -> zbus::Result<String>;
    #[zbus(name = "getZoneOfSource")]
    fn get_zone_of_source(&self, source: &str) -> zbus::Result<String>;
    #[zbus(name = "getServiceNames")]
    fn get_service_names(&self) -> zbus::Result<Vec<String>>;
}

#[proxy(
    interface = "org.fedoraproject.FirewallD1.config.zone",
    default_service = "org.fedoraproject.FirewallD1"
)]
trait ConfigZone {
    #[zbus(name = "getPorts")]
    fn get_ports(&self) -> zbus::Result<Vec<(String, String)>>;
    #[zbus(name = "addPort")]
    fn add_port(&self, port: &str, proto: &str) -> zbus::Result<()>;
    #[zbus(name = "removePort")]
    fn remove_port(&self, port: &str, proto: &str) -> zbus::Result<()>;
    #[zbus(name = "getServices")]
    fn get_services(&self) -> zbus::Result<Vec<String>>;
    #[zbus(name = "addService")]
    fn add_service(&self, service: &str) -> zbus::Result<()>;
    #[zbus(name = "removeService")]
    fn remove_service(&self, service: &str) -> zbus::Result<()>;
    #[zbus(name = "getSources")]
    fn get_sources(&self) -> zbus::Result<Vec<String>>;
    #[zbus(name = "addSource")]
    fn add_source(&self, source: &str) -> zbus::Result<()>;
    #[zbus(name = "removeSource")]
    fn remove_source(&self, source: &str) -> zbus::Result<()>;
    #[zbus(name = "getInterfaces")]
    fn get_interfaces(&self) -> zbus::Result<Vec<String>>;
    #[zbus(name = "addInterface")]
    fn add_interface(&self, interface: &str) -> zbus::Result<()>;
    #[zbus(name = "removeInterface")]
    fn remove_interface(&self, interface: &str) -> zbus::Result<()>;
}

/// firewalld adapter errors; each names what was being done and, where there is one, the
/// configuration key that caused it.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// firewalld rejected a call (`INVALID_ZONE`, `INVALID_PORT`, `NotAuthorizedException`, …).
    #[error("{}firewalld: {code}: {message}", if .key.is_empty() { String::new() } else { format!("{}: ", .key) })]
    Firewalld {
        /// The configuration key (empty when none applies).
        key: String,
        /// firewalld's error code (`INVALID_ZONE`, …) or D-Bus error name.
        code: String,
        /// The rest of the message.
        message: String,
    },
    /// The unit could not be brought to its state.
    #[error("{0}")]
    Systemd(#[from] systemd::SystemdError),
    /// firewalld did not appear on the bus after being started.
    #[error("firewalld did not come up on the bus within {0:?}")]
    NotUp(Duration),
    /// firewalld.service is not installed but must run.
    #[error("firewalld.state = enabled, but firewalld.service is not installed")]
    NotInstalled,
    /// Another D-Bus failure.
    #[error("{what}: {source}")]
    Bus {
        /// What was being done.
        what: String,
        /// The error.
        source: zbus::Error,
    },
}

/// Map a zbus error from firewalld to [`FirewallError::Firewalld`] with `key`.
fn fw_err(key: &str, e: zbus::Error) -> FirewallError {
    if let zbus::Error::MethodError(name, msg, _) = &e {
        let msg = msg.clone().unwrap_or_default();
        let (code, message) = match msg.split_once(':') {
            Some((c, m))
                if !c.is_empty() && c.chars().all(|ch| ch.is_ascii_uppercase() || ch == '_') =>
            {
                (c.to_string(), m.trim().to_string())
            }
            _ => (
                name.as_str()
                    .rsplit('.')
                    .next()
                    .unwrap_or(name.as_str())
                    .to_string(),
                msg,
            ),
        };
        return FirewallError::Firewalld {
            key: key.to_string(),
            code,
            message,
        };
    }
    FirewallError::Bus {
        what: if key.is_empty() {
            "firewalld".into()
        } else {
            key.to_string()
        },
        source: e,
    }
}

fn code_of(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(_, Some(m), _) => m.split(':').next().unwrap_or("").to_string(),
        _ => String::new(),
    }
}

/// What one reconcile found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FirewallReport {
    /// The state aimed at.
    pub desired: Option<Desired>,
    /// The unit before and after (when systemd is on the bus).
    pub unit_before: Option<UnitObserved>,
    /// The unit after the actions.
    pub unit_after: Option<UnitObserved>,
    /// Unit actions taken (or, in a dry run, to take).
    pub unit_actions: Vec<UnitAction>,
    /// Zone changes made (or to make).
    pub changes: Vec<Change>,
    /// Undeclared settings found in declared zones.
    pub undeclared: Vec<String>,
    /// Declared vs observed per zone (runtime and permanent), for `firewall status`.
    pub observed: Option<FirewalldObserved>,
    /// Mutating D-Bus calls made (0 for an idempotent re-apply).
    pub mutations: u32,
    /// Notes (e.g. systemd not on this bus).
    pub notes: Vec<String>,
    /// Dry run: nothing was changed.
    pub dry_run: bool,
}

impl FirewallReport {
    /// The unit actions and zone changes, one line each, for logs and output.
    pub fn actions(&self) -> Vec<String> {
        self.unit_actions
            .iter()
            .map(|a| a.name().to_string())
            .chain(self.changes.iter().map(|c| c.to_string()))
            .collect()
    }

    /// Something had to be changed (or would be, in a dry run).
    pub fn changed(&self) -> bool {
        !self.unit_actions.is_empty() || !self.changes.is_empty()
    }
}

async fn has_owner(conn: &zbus::Connection, name: &'static str) -> bool {
    let Ok(dbus) = zbus::fdo::DBusProxy::new(conn).await else {
        return false;
    };
    let Ok(n) = zbus::names::BusName::try_from(name) else {
        return false;
    };
    dbus.name_has_owner(n).await.unwrap_or(false)
}

/// `firewalld.service` as systemd sees it (`LoadUnit` works for units that are not loaded).
pub async fn observe_unit(conn: &zbus::Connection) -> Result<UnitObserved, FirewallError> {
    let bus = |what: &str| {
        let what = format!("{UNIT}: {what}");
        move |source| FirewallError::Bus { what, source }
    };
    let manager = ManagerProxy::new(conn).await.map_err(bus("Manager"))?;
    let path = manager
        .load_unit(UNIT.to_string())
        .await
        .map_err(bus("LoadUnit"))?;
    let u = UnitProxy::builder(conn)
        .path(path)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .map_err(bus("Unit"))?;
    Ok(UnitObserved {
        load_state: u.load_state().await.map_err(bus("LoadState"))?,
        active_state: u.active_state().await.map_err(bus("ActiveState"))?,
        unit_file_state: u.unit_file_state().await.unwrap_or_default(),
    })
}

/// Run unit actions in order, waiting for each job.
async fn run_unit_actions(
    conn: &zbus::Connection,
    actions: &[UnitAction],
    mutations: &mut u32,
) -> Result<(), FirewallError> {
    let bus = |what: &'static str| {
        move |source| {
            FirewallError::Systemd(systemd::SystemdError::Call {
                unit: UNIT.into(),
                what,
                source,
            })
        }
    };
    let manager = ManagerProxy::new(conn).await.map_err(bus("Manager"))?;
    let files = || vec![UNIT.to_string()];
    let job_timeout = Duration::from_secs(90);
    for a in actions {
        *mutations += 1;
        match a {
            UnitAction::Unmask => {
                manager
                    .unmask_unit_files(files(), false)
                    .await
                    .map_err(bus("UnmaskUnitFiles"))?;
            }
            UnitAction::Enable => {
                manager
                    .enable_unit_files(files(), false, true)
                    .await
                    .map_err(bus("EnableUnitFiles"))?;
            }
            UnitAction::Disable => {
                manager
                    .disable_unit_files(files(), false)
                    .await
                    .map_err(bus("DisableUnitFiles"))?;
            }
            UnitAction::Mask => {
                manager
                    .mask_unit_files(files(), false, true)
                    .await
                    .map_err(bus("MaskUnitFiles"))?;
            }
            UnitAction::ReloadDaemon => manager.reload().await.map_err(bus("Reload"))?,
            UnitAction::Start | UnitAction::Stop => {
                let (r, what) = if *a == UnitAction::Start {
                    (
                        systemd::start_unit(conn, UNIT, job_timeout).await?,
                        "StartUnit",
                    )
                } else {
                    (
                        systemd::stop_unit(conn, UNIT, job_timeout).await?,
                        "StopUnit",
                    )
                };
                if r != "done" {
                    return Err(systemd::SystemdError::Job {
                        unit: UNIT.into(),
                        what,
                        result: r,
                    }
                    .into());
                }
            }
        }
    }
    Ok(())
}

/// Wait until firewalld owns its name and says `RUNNING`.
pub async fn wait_running(conn: &zbus::Connection, limit: Duration) -> Result<(), FirewallError> {
    let started = Instant::now();
    loop {
        if has_owner(conn, BUS_NAME).await {
            let state = async {
                FirewallD1Proxy::builder(conn)
                    .cache_properties(zbus::proxy::CacheProperties::No)
                    .build()
                    .await?
                    .state()
                    .await
            };
            if state.await.is_ok_and(|s| s == "RUNNING") {
                return Ok(());
            }
        }
        if started.elapsed() >= limit {
            return Err(FirewallError::NotUp(limit));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ports_of(v: Vec<Vec<String>>) -> std::collections::BTreeSet<Port> {
    v.into_iter()
        .filter_map(|p| match p.as_slice() {
            [port, proto, ..] => Some(Port {
                port: port.clone(),
                proto: proto.clone(),
            }),
            _ => None,
        })
        .collect()
}

/// Read the declared zones' settings, runtime and permanent, and the default zone.
pub async fn observe(
    conn: &zbus::Connection,
    zones: &[ZoneDecl],
) -> Result<FirewalldObserved, FirewallError> {
    let fw = FirewallD1Proxy::new(conn)
        .await
        .map_err(|e| fw_err("", e))?;
    let zp = ZoneProxy::new(conn).await.map_err(|e| fw_err("", e))?;
    let cfg = ConfigProxy::new(conn).await.map_err(|e| fw_err("", e))?;
    let mut obs = FirewalldObserved {
        default_zone: fw.get_default_zone().await.map_err(|e| fw_err("", e))?,
        ..FirewalldObserved::default()
    };
    for z in zones {
        let n = z.name.as_str();
        let runtime = match zp.get_ports(n).await {
            Ok(ports) => {
                let e = |e| fw_err("", e);
                Some(ZoneObserved {
                    ports: ports_of(ports),
                    services: zp.get_services(n).await.map_err(e)?.into_iter().collect(),
                    sources: zp.get_sources(n).await.map_err(e)?.into_iter().collect(),
                    interfaces: zp.get_interfaces(n).await.map_err(e)?.into_iter().collect(),
                })
            }
            Err(e) if code_of(&e) == "INVALID_ZONE" => None,
            Err(e) => return Err(fw_err("", e)),
        };
        obs.runtime.insert(z.name.clone(), runtime);
        let permanent = match cfg.get_zone_by_name(n).await {
            Ok(path) => {
                let e = |e| fw_err("", e);
                let cz = ConfigZoneProxy::builder(conn)
                    .path(path)
                    .build()
                    .await
                    .map_err(e)?;
                Some(ZoneObserved {
                    ports: cz
                        .get_ports()
                        .await
                        .map_err(e)?
                        .into_iter()
                        .map(|(port, proto)| Port { port, proto })
                        .collect(),
                    services: cz.get_services().await.map_err(e)?.into_iter().collect(),
                    sources: cz.get_sources().await.map_err(e)?.into_iter().collect(),
                    interfaces: cz.get_interfaces().await.map_err(e)?.into_iter().collect(),
                })
            }
            Err(e) if code_of(&e) == "INVALID_ZONE" => None,
            Err(e) => return Err(fw_err("", e)),
        };
        obs.permanent.insert(z.name.clone(), permanent);
    }
    Ok(obs)
}

/// Make one zone change. The permanent configuration is looked up by zone name each time (its
/// object path changes after a reload).
async fn apply_change(
    conn: &zbus::Connection,
    c: &Change,
    mutations: &mut u32,
) -> Result<(), FirewallError> {
    let key = match c {
        Change::Add { key, .. } => key.clone(),
        Change::SetDefaultZone { .. } => "firewalld.default_zone".into(),
        Change::Remove { zone, .. } => format!("firewalld.prune (zone {zone})"),
    };
    let e = |err| fw_err(&key, err);
    match c {
        Change::SetDefaultZone { zone } => {
            *mutations += 1;
            FirewallD1Proxy::new(conn)
                .await
                .map_err(e)?
                .set_default_zone(zone)
                .await
                .map_err(e)?;
        }
        Change::Add {
            layer: Layer::Runtime,
            zone,
            item,
            ..
        } => {
            let zp = ZoneProxy::new(conn).await.map_err(e)?;
            *mutations += 1;
            let r = match item {
                Item::Port(p) => zp.add_port(zone, &p.port, &p.proto, 0).await,
                Item::Service(s) => zp.add_service(zone, s, 0).await,
                Item::Source(s) => zp.add_source(zone, s).await,
                Item::Interface(i) => zp.add_interface(zone, i).await,
            };
            match r {
                Ok(_) => {}
                // Bound to another zone: move it (what the declaration means).
                Err(err) if code_of(&err) == "ZONE_CONFLICT" => {
                    *mutations += 1;
                    match item {
                        Item::Source(s) => zp.change_zone_of_source(zone, s).await.map_err(e)?,
                        Item::Interface(i) => {
                            zp.change_zone_of_interface(zone, i).await.map_err(e)?
                        }
                        _ => return Err(e(err)),
                    };
                }
                Err(err) if code_of(&err) == "ALREADY_ENABLED" => {}
                Err(err) => return Err(e(err)),
            }
        }
        Change::Remove {
            layer: Layer::Runtime,
            zone,
            item,
        } => {
            let zp = ZoneProxy::new(conn).await.map_err(e)?;
            *mutations += 1;
            let r = match item {
                Item::Port(p) => zp.remove_port(zone, &p.port, &p.proto).await,
                Item::Service(s) => zp.remove_service(zone, s).await,
                Item::Source(s) => zp.remove_source(zone, s).await,
                Item::Interface(i) => zp.remove_interface(zone, i).await,
            };
            match r {
                Ok(_) => {}
                Err(err) if code_of(&err) == "NOT_ENABLED" => {}
                Err(err) => return Err(e(err)),
            }
        }
        Change::Add {
            layer: Layer::Permanent,
            zone,
            item,
            ..
        } => {
            let cfg = ConfigProxy::new(conn).await.map_err(e)?;
            // A permanent binding elsewhere would be a ZONE_CONFLICT: take it out of that zone first.
            let other = match item {
                Item::Interface(i) => cfg.get_zone_of_interface(i).await.ok(),
                Item::Source(s) => cfg.get_zone_of_source(s).await.ok(),
                _ => None,
            };
            if let Some(other) = other.filter(|o| !o.is_empty() && o != zone) {
                let oz = config_zone(conn, &cfg, &other, &key).await?;
                *mutations += 1;
                match item {
                    Item::Interface(i) => oz.remove_interface(i).await.map_err(e)?,
                    Item::Source(s) => oz.remove_source(s).await.map_err(e)?,
                    _ => {}
                }
            }
            let cz = config_zone(conn, &cfg, zone, &key).await?;
            *mutations += 1;
            let r = match item {
                Item::Port(p) => cz.add_port(&p.port, &p.proto).await,
                Item::Service(s) => cz.add_service(s).await,
                Item::Source(s) => cz.add_source(s).await,
                Item::Interface(i) => cz.add_interface(i).await,
            };
            match r {
                Ok(()) => {}
                Err(err) if code_of(&err) == "ALREADY_ENABLED" => {}
                Err(err) => return Err(e(err)),
            }
        }
        Change::Remove {
            layer: Layer::Permanent,
            zone,
            item,
        } => {
            let cfg = ConfigProxy::new(conn).await.map_err(e)?;
            let cz = config_zone(conn, &cfg, zone, &key).await?;
            *mutations += 1;
            let r = match item {
                Item::Port(p) => cz.remove_port(&p.port, &p.proto).await,
                Item::Service(s) => cz.remove_service(s).await,
                Item::Source(s) => cz.remove_source(s).await,
                Item::Interface(i) => cz.remove_interface(i).await,
            };
            match r {
                Ok(()) => {}
                Err(err) if code_of(&err) == "NOT_ENABLED" => {}
                Err(err) => return Err(e(err)),
            }
        }
    }
    Ok(())
}

async fn config_zone<'a>(
    conn: &'a zbus::Connection,
    cfg: &ConfigProxy<'_>,
    zone: &str,
    key: &str,
) -> Result<ConfigZoneProxy<'a>, FirewallError> {
    let path = cfg
        .get_zone_by_name(zone)
        .await
        .map_err(|e| fw_err(key, e))?;
    ConfigZoneProxy::builder(conn)
        .path(path)
        .build()
        .await
        .map_err(|e| fw_err(key, e))
}

/// Check what only firewalld can tell, before anything changes: declared zones exist, declared
/// services are known. A bad declaration never half-applies.
async fn validate(
    conn: &zbus::Connection,
    zones: &[ZoneDecl],
    obs: &FirewalldObserved,
) -> Result<(), FirewallError> {
    for (i, z) in zones.iter().enumerate() {
        let missing = matches!(obs.runtime.get(&z.name), Some(None))
            || matches!(obs.permanent.get(&z.name), Some(None));
        if missing {
            return Err(FirewallError::Firewalld {
                key: format!("firewalld.zone[{i}].name"),
                code: "INVALID_ZONE".into(),
                message: format!("firewalld has no zone {:?}", z.name),
            });
        }
    }
    if zones.iter().all(|z| z.services.is_empty()) {
        return Ok(());
    }
    let runtime = FirewallD1Proxy::new(conn)
        .await
        .map_err(|e| fw_err("", e))?
        .list_services()
        .await
        .map_err(|e| fw_err("", e))?;
    let permanent = ConfigProxy::new(conn)
        .await
        .map_err(|e| fw_err("", e))?
        .get_service_names()
        .await
        .map_err(|e| fw_err("", e))?;
    for (i, z) in zones.iter().enumerate() {
        for (j, s) in z.services.iter().enumerate() {
            if !runtime.contains(s) || !permanent.contains(s) {
                return Err(FirewallError::Firewalld {
                    key: format!("firewalld.zone[{i}].services[{j}]"),
                    code: "INVALID_SERVICE".into(),
                    message: format!("firewalld has no service {s:?}"),
                });
            }
        }
    }
    Ok(())
}

/// Bring firewalld to `desired`: the unit through systemd (when systemd is on the bus), then,
/// for `enabled`, the declared zones in both layers. `dry_run` observes and plans only.
pub async fn reconcile(
    conn: &zbus::Connection,
    desired: &Desired,
    dry_run: bool,
) -> Result<FirewallReport, FirewallError> {
    let mut r = FirewallReport {
        desired: Some(desired.clone()),
        dry_run,
        ..FirewallReport::default()
    };
    let (enabled, mask) = match desired {
        Desired::Unmanaged { .. } | Desired::Refused { .. } => return Ok(r),
        Desired::Disabled { mask } => (false, *mask),
        Desired::Enabled { .. } => (true, false),
    };
    if has_owner(conn, "org.freedesktop.systemd1").await {
        let before = observe_unit(conn).await?;
        if enabled && before.load_state == "not-found" {
            return Err(FirewallError::NotInstalled);
        }
        r.unit_actions = firewall::unit_plan(&before, enabled, mask);
        r.unit_before = Some(before.clone());
        if !dry_run && !r.unit_actions.is_empty() {
            run_unit_actions(conn, &r.unit_actions, &mut r.mutations).await?;
            r.unit_after = Some(observe_unit(conn).await?);
        } else {
            r.unit_after = Some(before);
        }
    } else {
        r.notes.push(
            "systemd is not on this bus: firewalld.service is not managed, only firewalld itself"
                .into(),
        );
    }
    let Desired::Enabled {
        default_zone,
        zones,
        prune,
    } = desired
    else {
        return Ok(r);
    };
    if dry_run && !r.unit_actions.is_empty() && !has_owner(conn, BUS_NAME).await {
        r.notes
            .push("firewalld is not running: zone changes are planned once it is".into());
        return Ok(r);
    }
    wait_running(conn, Duration::from_secs(60)).await?;
    let obs = observe(conn, zones).await?;
    validate(conn, zones, &obs).await?;
    let plan = firewall::zone_plan(default_zone.as_deref(), zones, *prune, &obs);
    r.undeclared = plan.undeclared;
    r.changes = plan.changes;
    r.observed = Some(obs);
    if !dry_run {
        for c in &r.changes {
            apply_change(conn, c, &mut r.mutations).await?;
        }
    }
    Ok(r)
}

/// Observe only: the unit, and for the declared zones what firewalld has (when it runs).
pub async fn status(
    conn: &zbus::Connection,
    zones: &[ZoneDecl],
) -> Result<(Option<UnitObserved>, Option<FirewalldObserved>), FirewallError> {
    let unit = if has_owner(conn, "org.freedesktop.systemd1").await {
        Some(observe_unit(conn).await?)
    } else {
        None
    };
    let fw = if has_owner(conn, BUS_NAME).await {
        Some(observe(conn, zones).await?)
    } else {
        None
    };
    Ok((unit, fw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firewalld_exceptions_map_to_code_and_key() {
        let e = zbus::Error::MethodError(
            zbus::names::OwnedErrorName::try_from("org.fedoraproject.FirewallD1.Exception")
                .unwrap(),
            Some("INVALID_PORT: 70000".into()),
            zbus::message::Message::method_call("/", "x")
                .build(&())
                .unwrap(),
        );
        let m = fw_err("firewalld.zone[0].ports[1]", e).to_string();
        assert_eq!(
            m,
            "firewalld.zone[0].ports[1]: firewalld: INVALID_PORT: 70000"
        );
        let e = zbus::Error::MethodError(
            zbus::names::OwnedErrorName::try_from(
                "org.fedoraproject.FirewallD1.NotAuthorizedException",
            )
            .unwrap(),
            Some("Not Authorized(uid): org.fedoraproject.FirewallD1.info".into()),
            zbus::message::Message::method_call("/", "x")
                .build(&())
                .unwrap(),
        );
        assert!(fw_err("", e)
            .to_string()
            .starts_with("firewalld: NotAuthorizedException: Not Authorized"));
    }
}
