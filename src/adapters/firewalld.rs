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
    #[zbus(name = "getZones")]
    fn get_zones(&self) -> zbus::Result<Vec<String>>;
    #[zbus(name = "getZoneOfInterface")]
    fn get_zone_of_interface(&self, interface: &str) -> zbus::Result<String>;
    #[zbus(name = "getZoneOfSource")]
    fn get_zone_of_source(&self, source: &str) -> zbus::Result<String>;
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
    interface = "org.fedoraproject.FirewallD1.ipset",
    default_service = "org.fedoraproject.FirewallD1",
    default_path = "/org/fedoraproject/FirewallD1"
)]
trait IpSet {
    #[zbus(name = "getIPSets")]
    fn get_ipsets(&self) -> zbus::Result<Vec<String>>;
    /// `(version, short, description, type, options, entries)`.
    #[zbus(name = "getIPSetSettings")]
    #[allow(clippy::type_complexity)]
    fn get_ipset_settings(
        &self,
        ipset: &str,
    ) -> zbus::Result<(
        String,
        String,
        String,
        String,
        std::collections::HashMap<String, String>,
        Vec<String>,
    )>;
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
    #[zbus(name = "getZoneNames")]
    fn get_zone_names(&self) -> zbus::Result<Vec<String>>;
    #[zbus(name = "getIPSetNames")]
    fn get_ipset_names(&self) -> zbus::Result<Vec<String>>;
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

impl FirewallError {
    /// The declaration is at fault (firewalld has no such zone, service or ipset, or rejects a
    /// value as invalid), not firewalld or systemd: exit 2, and nothing to retry until the
    /// configuration (or firewalld's own) changes.
    pub fn is_declaration(&self) -> bool {
        matches!(self, FirewallError::Firewalld { code, key, .. }
            if code.starts_with("INVALID_") && key.starts_with("firewalld."))
    }
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
    /// The declared zones as observed after the changes (only when something was changed).
    pub observed_after: Option<FirewalldObserved>,
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

    fn describe(&self, unit: Option<&UnitObserved>, zones: Option<&FirewalldObserved>) -> String {
        let mut parts = Vec::new();
        if let Some(u) = unit.filter(|_| !self.unit_actions.is_empty()) {
            parts.push(format!("{UNIT} {}", u.short()));
        }
        if let Some(obs) = zones {
            parts.extend(firewall::describe_changed(&self.changes, obs));
        }
        parts.join(" | ")
    }

    /// What was found in what had to be changed: the unit (when it was), the default zone and
    /// each changed zone's settings per layer (` | ` between them). The `before` of a drift.
    pub fn before(&self) -> String {
        self.describe(self.unit_before.as_ref(), self.observed.as_ref())
    }

    /// The same parts as [`FirewallReport::before`], observed again after the changes: the
    /// `after` of a drift (empty parts in a dry run, where nothing changed).
    pub fn after(&self) -> String {
        self.describe(self.unit_after.as_ref(), self.observed_after.as_ref())
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

/// Run unit actions in order, waiting for each job; `done` receives each action that went
/// through (so a failure later can put the unit back).
async fn run_unit_actions(
    conn: &zbus::Connection,
    actions: &[UnitAction],
    mutations: &mut u32,
    done: &mut Vec<UnitAction>,
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
        done.push(*a);
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
            match state.await {
                Ok(s) if s == "RUNNING" => return Ok(()),
                // Up, but it will never answer this caller: say why now rather than time out.
                Err(zbus::Error::MethodError(name, msg, m))
                    if matches!(
                        name.as_str().rsplit('.').next(),
                        Some("NotAuthorizedException" | "AccessDenied")
                    ) =>
                {
                    return Err(fw_err("", zbus::Error::MethodError(name, msg, m)));
                }
                _ => {}
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

/// The call that takes back one change this reconcile made, recorded as it is made so a failure
/// part-way can be undone in reverse order.
#[derive(Debug, Clone)]
enum Undo {
    /// Set the default zone back.
    DefaultZone(String),
    /// Add (`add`) or remove an item in the runtime configuration of `zone`.
    Runtime { zone: String, item: Item, add: bool },
    /// Bind a source or interface (moved at runtime) back to `zone`.
    RuntimeRebind { zone: String, item: Item },
    /// Add (`add`) or remove an item in the permanent configuration of `zone`.
    Permanent { zone: String, item: Item, add: bool },
}

impl std::fmt::Display for Undo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Undo::DefaultZone(z) => write!(f, "set the default zone back to {z}"),
            Undo::Runtime { zone, item, add } => {
                let verb = if *add { "add back" } else { "remove" };
                write!(f, "{verb} {item} in zone {zone} (runtime)")
            }
            Undo::RuntimeRebind { zone, item } => write!(f, "bind {item} to zone {zone} again"),
            Undo::Permanent { zone, item, add } => {
                let verb = if *add { "add back" } else { "remove" };
                write!(f, "{verb} {item} in zone {zone} (permanent)")
            }
        }
    }
}

/// The configuration key a change comes from, for its errors.
fn key_of(c: &Change) -> String {
    match c {
        Change::Add { key, .. } => key.clone(),
        Change::SetDefaultZone { .. } => "firewalld.default_zone".into(),
        Change::Remove { zone, .. } => format!("firewalld.prune (zone {zone})"),
    }
}

/// One runtime add or remove (`ALREADY_ENABLED` / `NOT_ENABLED` are success: nothing to do).
/// Returns whether firewalld changed something.
async fn runtime_item(
    zp: &ZoneProxy<'_>,
    zone: &str,
    item: &Item,
    add: bool,
) -> zbus::Result<bool> {
    let r = match (item, add) {
        (Item::Port(p), true) => zp.add_port(zone, &p.port, &p.proto, 0).await,
        (Item::Service(s), true) => zp.add_service(zone, s, 0).await,
        (Item::Source(s), true) => zp.add_source(zone, s).await,
        (Item::Interface(i), true) => zp.add_interface(zone, i).await,
        (Item::Port(p), false) => zp.remove_port(zone, &p.port, &p.proto).await,
        (Item::Service(s), false) => zp.remove_service(zone, s).await,
        (Item::Source(s), false) => zp.remove_source(zone, s).await,
        (Item::Interface(i), false) => zp.remove_interface(zone, i).await,
    };
    match r {
        Ok(_) => Ok(true),
        Err(e) if add && code_of(&e) == "ALREADY_ENABLED" => Ok(false),
        Err(e) if !add && code_of(&e) == "NOT_ENABLED" => Ok(false),
        Err(e) => Err(e),
    }
}

/// One permanent add or remove, like [`runtime_item`].
async fn permanent_item(cz: &ConfigZoneProxy<'_>, item: &Item, add: bool) -> zbus::Result<bool> {
    let r = match (item, add) {
        (Item::Port(p), true) => cz.add_port(&p.port, &p.proto).await,
        (Item::Service(s), true) => cz.add_service(s).await,
        (Item::Source(s), true) => cz.add_source(s).await,
        (Item::Interface(i), true) => cz.add_interface(i).await,
        (Item::Port(p), false) => cz.remove_port(&p.port, &p.proto).await,
        (Item::Service(s), false) => cz.remove_service(s).await,
        (Item::Source(s), false) => cz.remove_source(s).await,
        (Item::Interface(i), false) => cz.remove_interface(i).await,
    };
    match r {
        Ok(()) => Ok(true),
        Err(e) if add && code_of(&e) == "ALREADY_ENABLED" => Ok(false),
        Err(e) if !add && code_of(&e) == "NOT_ENABLED" => Ok(false),
        Err(e) => Err(e),
    }
}

/// Make one zone change, pushing onto `undo` what takes back each call that changed something.
/// The permanent configuration is looked up by zone name each time (its object path changes after
/// a reload). `default_before` is the default zone as observed (to undo a change of it).
async fn apply_change(
    conn: &zbus::Connection,
    c: &Change,
    default_before: &str,
    mutations: &mut u32,
    undo: &mut Vec<Undo>,
) -> Result<(), FirewallError> {
    let key = key_of(c);
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
            undo.push(Undo::DefaultZone(default_before.to_string()));
        }
        Change::Add {
            layer: Layer::Runtime,
            zone,
            item,
            ..
        } => {
            let zp = ZoneProxy::new(conn).await.map_err(e)?;
            *mutations += 1;
            match runtime_item(&zp, zone, item, true).await {
                Ok(true) => undo.push(Undo::Runtime {
                    zone: zone.clone(),
                    item: item.clone(),
                    add: false,
                }),
                Ok(false) => {}
                // Bound to another zone: move it (what the declaration means).
                Err(err) if code_of(&err) == "ZONE_CONFLICT" => {
                    let other = match item {
                        Item::Source(s) => zp.get_zone_of_source(s).await.map_err(e)?,
                        Item::Interface(i) => zp.get_zone_of_interface(i).await.map_err(e)?,
                        _ => return Err(e(err)),
                    };
                    *mutations += 1;
                    match item {
                        Item::Source(s) => zp.change_zone_of_source(zone, s).await.map_err(e)?,
                        Item::Interface(i) => {
                            zp.change_zone_of_interface(zone, i).await.map_err(e)?
                        }
                        _ => unreachable!("only sources and interfaces are bound to a zone"),
                    };
                    undo.push(if other.is_empty() {
                        Undo::Runtime {
                            zone: zone.clone(),
                            item: item.clone(),
                            add: false,
                        }
                    } else {
                        Undo::RuntimeRebind {
                            zone: other,
                            item: item.clone(),
                        }
                    });
                }
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
            if runtime_item(&zp, zone, item, false).await.map_err(e)? {
                undo.push(Undo::Runtime {
                    zone: zone.clone(),
                    item: item.clone(),
                    add: true,
                });
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
                if permanent_item(&oz, item, false).await.map_err(e)? {
                    undo.push(Undo::Permanent {
                        zone: other,
                        item: item.clone(),
                        add: true,
                    });
                }
            }
            let cz = config_zone(conn, &cfg, zone, &key).await?;
            *mutations += 1;
            if permanent_item(&cz, item, true).await.map_err(e)? {
                undo.push(Undo::Permanent {
                    zone: zone.clone(),
                    item: item.clone(),
                    add: false,
                });
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
            if permanent_item(&cz, item, false).await.map_err(e)? {
                undo.push(Undo::Permanent {
                    zone: zone.clone(),
                    item: item.clone(),
                    add: true,
                });
            }
        }
    }
    Ok(())
}

/// Make one undo call.
async fn undo_one(
    conn: &zbus::Connection,
    u: &Undo,
    mutations: &mut u32,
) -> Result<(), FirewallError> {
    let e = |err| fw_err("", err);
    *mutations += 1;
    match u {
        Undo::DefaultZone(z) => FirewallD1Proxy::new(conn)
            .await
            .map_err(e)?
            .set_default_zone(z)
            .await
            .map_err(e)?,
        Undo::Runtime { zone, item, add } => {
            let zp = ZoneProxy::new(conn).await.map_err(e)?;
            runtime_item(&zp, zone, item, *add).await.map_err(e)?;
        }
        Undo::RuntimeRebind { zone, item } => {
            let zp = ZoneProxy::new(conn).await.map_err(e)?;
            match item {
                Item::Source(s) => zp.change_zone_of_source(zone, s).await.map_err(e)?,
                Item::Interface(i) => zp.change_zone_of_interface(zone, i).await.map_err(e)?,
                _ => return Ok(()),
            };
        }
        Undo::Permanent { zone, item, add } => {
            let cfg = ConfigProxy::new(conn).await.map_err(e)?;
            let cz = config_zone(conn, &cfg, zone, "").await?;
            permanent_item(&cz, item, *add).await.map_err(e)?;
        }
    }
    Ok(())
}

/// Take back, newest first, what this reconcile changed in the zones. Every step is tried; the
/// ones that fail are logged and returned (the caller reports the original error).
async fn undo_zones(conn: &zbus::Connection, undo: Vec<Undo>, mutations: &mut u32) -> Vec<String> {
    let mut failed = Vec::new();
    for u in undo.into_iter().rev() {
        if let Err(err) = undo_one(conn, &u, mutations).await {
            tracing::error!(rna_component = "firewalld", step = %u, error = %err, "cannot undo a firewalld change");
            failed.push(format!("{u}: {err}"));
        }
    }
    failed
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

/// The ipset types firewalld accepts as a zone source (firewalld's `SOURCE_IPSET_TYPES`).
const SOURCE_IPSET_TYPES: [&str; 7] = [
    "hash:ip",
    "hash:ip,port",
    "hash:ip,mark",
    "hash:net",
    "hash:net,port",
    "hash:net,iface",
    "hash:mac",
];

fn invalid(key: String, code: &str, message: String) -> FirewallError {
    FirewallError::Firewalld {
        key,
        code: code.into(),
        message,
    }
}

/// Check what only firewalld can tell, before anything changes, in both the runtime and the
/// permanent configuration: the default zone and every declared zone exist, declared services are
/// known, and every `ipset:NAME` source names an ipset of a type usable as a source. Ports,
/// protocols, addresses and interface names were checked when the configuration was loaded. A bad
/// declaration never half-applies.
async fn validate(
    conn: &zbus::Connection,
    default_zone: Option<&str>,
    zones: &[ZoneDecl],
    obs: &FirewalldObserved,
) -> Result<(), FirewallError> {
    let e = |e| fw_err("", e);
    if let Some(dz) = default_zone.filter(|dz| *dz != obs.default_zone) {
        let runtime = ZoneProxy::new(conn).await.map_err(e)?.get_zones().await;
        let permanent = ConfigProxy::new(conn)
            .await
            .map_err(e)?
            .get_zone_names()
            .await;
        let (runtime, permanent) = (runtime.map_err(e)?, permanent.map_err(e)?);
        if !runtime.iter().any(|z| z == dz) || !permanent.iter().any(|z| z == dz) {
            return Err(invalid(
                "firewalld.default_zone".into(),
                "INVALID_ZONE",
                format!("firewalld has no zone {dz:?}"),
            ));
        }
    }
    for (i, z) in zones.iter().enumerate() {
        let missing = matches!(obs.runtime.get(&z.name), Some(None))
            || matches!(obs.permanent.get(&z.name), Some(None));
        if missing {
            return Err(invalid(
                format!("firewalld.zone[{i}].name"),
                "INVALID_ZONE",
                format!("firewalld has no zone {:?}", z.name),
            ));
        }
    }
    if zones.iter().any(|z| !z.services.is_empty()) {
        let fw = FirewallD1Proxy::new(conn).await.map_err(e)?;
        let runtime = fw.list_services().await.map_err(e)?;
        let permanent = ConfigProxy::new(conn)
            .await
            .map_err(e)?
            .get_service_names()
            .await
            .map_err(e)?;
        for (i, z) in zones.iter().enumerate() {
            for (j, s) in z.services.iter().enumerate() {
                if !runtime.contains(s) || !permanent.contains(s) {
                    return Err(invalid(
                        format!("firewalld.zone[{i}].services[{j}]"),
                        "INVALID_SERVICE",
                        format!("firewalld has no service {s:?}"),
                    ));
                }
            }
        }
    }
    let ipsets = |z: &ZoneDecl| -> Vec<(usize, String)> {
        z.sources
            .iter()
            .enumerate()
            .filter_map(|(j, s)| s.strip_prefix("ipset:").map(|n| (j, n.to_string())))
            .collect()
    };
    if zones.iter().any(|z| !ipsets(z).is_empty()) {
        let ip = IpSetProxy::new(conn).await.map_err(e)?;
        let runtime = ip.get_ipsets().await.map_err(e)?;
        let permanent = ConfigProxy::new(conn)
            .await
            .map_err(e)?
            .get_ipset_names()
            .await
            .map_err(e)?;
        for (i, z) in zones.iter().enumerate() {
            for (j, name) in ipsets(z) {
                let key = format!("firewalld.zone[{i}].sources[{j}]");
                if !runtime.contains(&name) || !permanent.contains(&name) {
                    return Err(invalid(
                        key,
                        "INVALID_IPSET",
                        format!("firewalld has no ipset {name:?}"),
                    ));
                }
                let (_, _, _, kind, _, _) = ip
                    .get_ipset_settings(&name)
                    .await
                    .map_err(|err| fw_err(&key, err))?;
                if !SOURCE_IPSET_TYPES.contains(&kind.as_str()) {
                    return Err(invalid(
                        key,
                        "INVALID_IPSET",
                        format!("ipset {name:?} has type {kind:?}, which firewalld does not accept as a source"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Put the unit back after `done` (the actions this reconcile ran) when what followed failed; a
/// failure to do so is logged (the caller reports the original error).
async fn put_unit_back(conn: &zbus::Connection, done: &[UnitAction], mutations: &mut u32) {
    let undo = firewall::unit_undo(done);
    if undo.is_empty() {
        return;
    }
    let mut again = Vec::new();
    if let Err(err) = run_unit_actions(conn, &undo, mutations, &mut again).await {
        tracing::error!(rna_component = "firewalld", error = %err, "cannot put firewalld.service back as it was");
    } else {
        let steps: Vec<&str> = undo.iter().map(|a| a.name()).collect();
        tracing::info!(rna_component = "firewalld", steps = %steps.join("; "), "firewalld.service put back as it was");
    }
}

/// Validate, then change the zones; a failure part-way undoes what this call changed (newest
/// first, both layers) and returns the original error.
async fn apply_zones(
    conn: &zbus::Connection,
    default_zone: Option<&str>,
    zones: &[ZoneDecl],
    prune: bool,
    dry_run: bool,
    r: &mut FirewallReport,
) -> Result<(), FirewallError> {
    wait_running(conn, Duration::from_secs(60)).await?;
    let obs = observe(conn, zones).await?;
    validate(conn, default_zone, zones, &obs).await?;
    let plan = firewall::zone_plan(default_zone, zones, prune, &obs);
    r.undeclared = plan.undeclared;
    r.changes = plan.changes;
    let default_before = obs.default_zone.clone();
    r.observed = Some(obs);
    if dry_run || r.changes.is_empty() {
        return Ok(());
    }
    let mut undo = Vec::new();
    for c in &r.changes {
        if let Err(err) = apply_change(conn, c, &default_before, &mut r.mutations, &mut undo).await
        {
            let failed = undo_zones(conn, undo, &mut r.mutations).await;
            if failed.is_empty() {
                tracing::warn!(rna_component = "firewalld", error = %err, "firewalld rejected a change; what this reconcile had changed is undone");
            }
            return Err(err);
        }
    }
    // For the drift's `after`; the changes are made, so a failed read is no failure of them.
    r.observed_after = observe(conn, zones).await.ok();
    Ok(())
}

/// Bring firewalld to `desired`: the unit through systemd (when systemd is on the bus), then,
/// for `enabled`, the declared zones in both layers. `dry_run` observes and plans only.
///
/// Nothing is changed before the declaration has been validated against firewalld. When firewalld
/// must be started first (it was stopped or masked), it is validated as soon as it runs, and on a
/// failure the unit is put back as it was found. A firewalld error while the zones are changed
/// undoes the zone changes already made, and the unit's.
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
        r.unit_after = Some(before);
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
        if !dry_run && !r.unit_actions.is_empty() {
            let mut done = Vec::new();
            run_unit_actions(conn, &r.unit_actions, &mut r.mutations, &mut done).await?;
            r.unit_after = Some(observe_unit(conn).await?);
        }
        return Ok(r);
    };
    let default_zone = default_zone.as_deref();
    let up = has_owner(conn, BUS_NAME).await;
    if !up && !r.unit_actions.is_empty() && dry_run {
        r.notes
            .push("firewalld is not running: zone changes are planned once it is".into());
        return Ok(r);
    }
    if up && !dry_run && !r.unit_actions.is_empty() {
        // Running: validate before the unit is touched at all.
        apply_zones(conn, default_zone, zones, *prune, true, &mut r).await?;
    }
    let mut done = Vec::new();
    if !dry_run && !r.unit_actions.is_empty() {
        let ran = run_unit_actions(conn, &r.unit_actions, &mut r.mutations, &mut done).await;
        if let Err(err) = ran {
            put_unit_back(conn, &done, &mut r.mutations).await;
            return Err(err);
        }
    }
    // Validated above when firewalld was already up; otherwise now that it is (and the plan is
    // made again either way: starting firewalld may have changed what it has).
    if let Err(err) = apply_zones(conn, default_zone, zones, *prune, dry_run, &mut r).await {
        put_unit_back(conn, &done, &mut r.mutations).await;
        return Err(err);
    }
    if !done.is_empty() {
        r.unit_after = Some(observe_unit(conn).await?);
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
        let not_authorized = || {
            zbus::Error::MethodError(
                zbus::names::OwnedErrorName::try_from(
                    "org.fedoraproject.FirewallD1.NotAuthorizedException",
                )
                .unwrap(),
                // firewalld's own text: "Not Authorized({method}): {action_id}".
                Some("Not Authorized(uid): org.fedoraproject.FirewallD1.config".into()),
                zbus::message::Message::method_call("/", "x")
                    .build(&())
                    .unwrap(),
            )
        };
        // Raised by the call that adds a declared port: the key is named. The message's prefix
        // is not an upper-case code, so the code is the D-Bus error's name.
        let e = fw_err("firewalld.zone[0].ports[0]", not_authorized());
        assert_eq!(
            e.to_string(),
            "firewalld.zone[0].ports[0]: firewalld: NotAuthorizedException: Not Authorized(uid): org.fedoraproject.FirewallD1.config"
        );
        assert!(!e.is_declaration(), "not the declaration's fault: exit 1");
        // Raised by a read no key caused: none is shown.
        assert_eq!(
            fw_err("", not_authorized()).to_string(),
            "firewalld: NotAuthorizedException: Not Authorized(uid): org.fedoraproject.FirewallD1.config"
        );
        // firewalld's generic exception (an OSError while writing the permanent configuration).
        let e = zbus::Error::MethodError(
            zbus::names::OwnedErrorName::try_from("org.fedoraproject.FirewallD1.Exception")
                .unwrap(),
            Some("[Errno 30] Read-only file system: '/etc/firewalld/zones/public.xml'".into()),
            zbus::message::Message::method_call("/", "x")
                .build(&())
                .unwrap(),
        );
        assert_eq!(
            fw_err("firewalld.zone[0].ports[1]", e).to_string(),
            "firewalld.zone[0].ports[1]: firewalld: Exception: [Errno 30] Read-only file system: '/etc/firewalld/zones/public.xml'"
        );
    }
}
