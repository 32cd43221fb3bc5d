//! firewalld's desired state and the difference to what is observed: which unit actions bring
//! `firewalld.service` to the declared state, which zone changes bring the declared ports, services,
//! sources and interfaces into both the runtime and the permanent configuration, and what else was
//! found (drift that is reported, and removed only with `prune`).
//!
//! The OpenShift documents make `systemctl disable --now firewalld.service` a step of every RHEL
//! worker upgrade and warn that enabling it again loses OpenShift's access to the worker's logs, so
//! the default (`auto`) is `disabled` on an OpenShift node and `unmanaged` elsewhere. Pure: the
//! adapters observe and act.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

/// A port or port range with its protocol, as firewalld writes it (`80/tcp`, `8000-8100/udp`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Port {
    /// `80` or `8000-8100`.
    pub port: String,
    /// `tcp`, `udp`, `sctp` or `dccp`.
    pub proto: String,
}

impl std::fmt::Display for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.port, self.proto)
    }
}

impl std::str::FromStr for Port {
    type Err = String;
    fn from_str(s: &str) -> Result<Port, String> {
        let (port, proto) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not PORT/PROTOCOL (e.g. \"10250/tcp\")"))?;
        if !["tcp", "udp", "sctp", "dccp"].contains(&proto) {
            return Err(format!(
                "{s:?}: protocol {proto:?} is not one of tcp, udp, sctp, dccp"
            ));
        }
        let num = |p: &str| -> Result<u32, String> {
            p.parse::<u32>()
                .ok()
                .filter(|n| (1..=65535).contains(n))
                .ok_or_else(|| format!("{s:?}: {p:?} is not a port number (1-65535)"))
        };
        match port.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(format!("{s:?}: the range starts after it ends"));
                }
            }
            None => {
                num(port)?;
            }
        }
        Ok(Port {
            port: port.to_string(),
            proto: proto.to_string(),
        })
    }
}

/// What the agent guarantees in one zone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ZoneDecl {
    /// Zone name.
    pub name: String,
    /// Ports.
    pub ports: Vec<Port>,
    /// Services (firewalld service names).
    pub services: Vec<String>,
    /// Sources (addresses, networks, MACs, `ipset:NAME`).
    pub sources: Vec<String>,
    /// Interfaces bound to the zone.
    pub interfaces: Vec<String>,
}

/// Check a service, zone or interface name: firewalld's own rules are stricter in places, and what
/// it rejects comes back as an error naming the key.
pub fn check_name(what: &str, v: &str, max: usize) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.len() <= max
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '+' | ':' | '@'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{v:?} is not a valid {what} name (1-{max} characters from A-Z a-z 0-9 _ - . + : @)"
        ))
    }
}

/// Check an interface name as firewalld and the kernel do: 1-15 characters, none of them
/// whitespace, `/`, `!` or `*` (firewalld's `checkInterface` rejects those).
pub fn check_interface(v: &str) -> Result<(), String> {
    let bad = v.is_empty()
        || v.len() > 15
        || v.chars()
            .any(|c| c.is_whitespace() || matches!(c, '/' | '!' | '*'));
    if bad {
        Err(format!(
            "{v:?} is not an interface name (1-15 characters; no spaces, '/', '!' or '*')"
        ))
    } else {
        Ok(())
    }
}

/// Check a source: an IPv4/IPv6 address or network, a MAC address, or `ipset:NAME`.
pub fn check_source(v: &str) -> Result<(), String> {
    if let Some(set) = v.strip_prefix("ipset:") {
        return check_name("ipset", set, 64);
    }
    let is_mac = v.len() == 17
        && v.split(':').count() == 6
        && v.split(':')
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    if is_mac {
        return Ok(());
    }
    let (addr, prefix) = match v.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (v, None),
    };
    let max = match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => 32,
        Ok(std::net::IpAddr::V6(_)) => 128,
        Err(_) => {
            return Err(format!(
            "{v:?} is not an address, a network (e.g. \"10.0.0.0/8\"), a MAC address or ipset:NAME"
        ))
        }
    };
    if let Some(p) = prefix {
        if !p.parse::<u32>().is_ok_and(|n| n <= max) {
            return Err(format!("{v:?}: prefix length {p:?} is not 0-{max}"));
        }
    }
    Ok(())
}

/// The state the agent keeps firewalld in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Desired {
    /// Leave firewalld alone.
    Unmanaged {
        /// Why (e.g. `firewalld.state = auto on a node that is not OpenShift`).
        why: String,
    },
    /// Stopped and disabled (and masked when `mask`).
    Disabled {
        /// Also mask the unit.
        mask: bool,
    },
    /// Running, enabled, with these zone settings.
    Enabled {
        /// The default zone to set (`None`: leave it).
        default_zone: Option<String>,
        /// Zones and what they must contain.
        zones: Vec<ZoneDecl>,
        /// Remove what is found in a declared zone but not declared.
        prune: bool,
    },
    /// Declared, but not allowed here (enabled on an OpenShift node without
    /// `allow_on_openshift`): reported, nothing is done.
    Refused {
        /// Why.
        why: String,
    },
}

/// The inputs of [`desired`]: the `[firewalld]` settings and facts about the node.
#[derive(Debug, Clone, Default)]
pub struct FirewallInputs {
    /// `firewalld.state`.
    pub state: String,
    /// `firewalld.mask`.
    pub mask: bool,
    /// `firewalld.prune`.
    pub prune: bool,
    /// `firewalld.allow_on_openshift`.
    pub allow_on_openshift: bool,
    /// `firewalld.default_zone` (empty: leave it).
    pub default_zone: String,
    /// `[[firewalld.zone]]`.
    pub zones: Vec<ZoneDecl>,
    /// The node is an OpenShift node.
    pub openshift: bool,
    /// `upgrade.firewalld_state` while an upgrade is between pre-upgrade and the end of
    /// post-upgrade (`None` otherwise, or when it is `unchanged`).
    pub upgrade_state: Option<String>,
}

/// The documented consequence of enabling firewalld on an OpenShift RHEL worker.
pub const OPENSHIFT_CAVEAT: &str = "the OpenShift documentation warns that with firewalld enabled on a RHEL worker, OpenShift loses access to that worker's logs";

/// What the agent keeps firewalld in now: during an upgrade window `upgrade.firewalld_state`,
/// otherwise the steady state of `firewalld.state`.
pub fn desired(i: &FirewallInputs) -> Desired {
    let enabled = || Desired::Enabled {
        default_zone: (!i.default_zone.is_empty()).then(|| i.default_zone.clone()),
        zones: i.zones.clone(),
        prune: i.prune,
    };
    let state = match &i.upgrade_state {
        Some(s) => s.as_str(),
        None => i.state.as_str(),
    };
    match state {
        "disabled" => Desired::Disabled { mask: i.mask },
        "enabled" if i.openshift && !i.allow_on_openshift => Desired::Refused {
            why: format!(
                "firewalld enabled on an OpenShift node needs firewalld.allow_on_openshift = true ({OPENSHIFT_CAVEAT})"
            ),
        },
        "enabled" => enabled(),
        "auto" if i.openshift => Desired::Disabled { mask: i.mask },
        "auto" => Desired::Unmanaged {
            why: "firewalld.state = auto on a node that is not OpenShift".into(),
        },
        _ => Desired::Unmanaged {
            why: "firewalld.state = unmanaged".into(),
        },
    }
}

/// `firewalld.service` as systemd sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UnitObserved {
    /// `LoadState` (`loaded`, `not-found`, `masked`).
    pub load_state: String,
    /// `ActiveState`.
    pub active_state: String,
    /// `UnitFileState` (`enabled`, `disabled`, `masked`, …).
    pub unit_file_state: String,
}

impl UnitObserved {
    /// `enabled/active`, for logs and status.
    pub fn short(&self) -> String {
        if self.load_state == "not-found" {
            return "not installed".into();
        }
        format!("{}/{}", self.unit_file_state, self.active_state)
    }
    fn running(&self) -> bool {
        matches!(
            self.active_state.as_str(),
            "active" | "activating" | "reloading"
        )
    }
}

/// One systemd action on the unit, in execution order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnitAction {
    /// `UnmaskUnitFiles`.
    Unmask,
    /// `EnableUnitFiles`.
    Enable,
    /// `StartUnit`, waiting for the job.
    Start,
    /// `StopUnit`, waiting for the job.
    Stop,
    /// `DisableUnitFiles`.
    Disable,
    /// `MaskUnitFiles`.
    Mask,
    /// `Reload` (after unit file changes).
    ReloadDaemon,
}

impl UnitAction {
    /// The word used in logs and output.
    pub fn name(self) -> &'static str {
        match self {
            UnitAction::Unmask => "unmask",
            UnitAction::Enable => "enable",
            UnitAction::Start => "start",
            UnitAction::Stop => "stop",
            UnitAction::Disable => "disable",
            UnitAction::Mask => "mask",
            UnitAction::ReloadDaemon => "daemon-reload",
        }
    }
}

/// The unit actions that bring `obs` to `enabled` (running + enabled, unmasked) or to stopped +
/// disabled (+ masked when `mask`). Empty when it already is. A unit that is not installed needs
/// nothing to be disabled, and cannot be enabled (the caller reports it).
pub fn unit_plan(obs: &UnitObserved, enabled: bool, mask: bool) -> Vec<UnitAction> {
    let mut v = Vec::new();
    let masked = obs.unit_file_state.starts_with("masked") || obs.load_state == "masked";
    if enabled {
        if masked {
            v.push(UnitAction::Unmask);
        }
        if !obs.unit_file_state.starts_with("enabled") {
            v.push(UnitAction::Enable);
        }
        if !v.is_empty() {
            v.push(UnitAction::ReloadDaemon);
        }
        if !obs.running() || masked {
            v.push(UnitAction::Start);
        }
    } else {
        if obs.load_state == "not-found" {
            return v;
        }
        if obs.running() {
            v.push(UnitAction::Stop);
        }
        if obs.unit_file_state.starts_with("enabled") {
            v.push(UnitAction::Disable);
        }
        if mask && !masked {
            v.push(UnitAction::Mask);
        }
        if v.iter()
            .any(|a| matches!(a, UnitAction::Disable | UnitAction::Mask))
        {
            v.push(UnitAction::ReloadDaemon);
        }
    }
    v
}

/// The actions that take back `done` (unit actions that went through, in order) when what followed
/// them failed: stop what was started, undo unit file changes newest first, reload systemd, start
/// what was stopped. Empty when nothing was done.
pub fn unit_undo(done: &[UnitAction]) -> Vec<UnitAction> {
    use UnitAction::*;
    let files: Vec<UnitAction> = done
        .iter()
        .rev()
        .filter_map(|a| match a {
            Enable => Some(Disable),
            Disable => Some(Enable),
            Unmask => Some(Mask),
            Mask => Some(Unmask),
            Start | Stop | ReloadDaemon => None,
        })
        .collect();
    let mut v = Vec::new();
    if done.contains(&Start) {
        v.push(Stop);
    }
    let reload = !files.is_empty();
    v.extend(files);
    if reload {
        v.push(ReloadDaemon);
    }
    if done.contains(&Stop) {
        v.push(Start);
    }
    v
}

/// What firewalld has in one zone (one configuration layer).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ZoneObserved {
    /// Ports.
    pub ports: BTreeSet<Port>,
    /// Services.
    pub services: BTreeSet<String>,
    /// Sources.
    pub sources: BTreeSet<String>,
    /// Interfaces.
    pub interfaces: BTreeSet<String>,
}

impl ZoneObserved {
    /// `ports [8080/tcp]; services [ssh]; sources []; interfaces [eth1]`, for logs and status.
    pub fn describe(&self) -> String {
        fn list<T: std::fmt::Display>(v: impl Iterator<Item = T>) -> String {
            v.map(|x| x.to_string()).collect::<Vec<_>>().join(" ")
        }
        format!(
            "ports [{}]; services [{}]; sources [{}]; interfaces [{}]",
            list(self.ports.iter()),
            list(self.services.iter()),
            list(self.sources.iter()),
            list(self.interfaces.iter())
        )
    }
}

/// What `obs` holds in the parts of firewalld's configuration `changes` touch (the default zone,
/// and each changed zone per layer), one line each: the `before` and `after` of a drift.
pub fn describe_changed(changes: &[Change], obs: &FirewalldObserved) -> Vec<String> {
    let mut seen: Vec<(Option<Layer>, &str)> = Vec::new();
    for c in changes {
        let k = match c {
            Change::SetDefaultZone { .. } => (None, ""),
            Change::Add { layer, zone, .. } | Change::Remove { layer, zone, .. } => {
                (Some(*layer), zone.as_str())
            }
        };
        if !seen.contains(&k) {
            seen.push(k);
        }
    }
    seen.into_iter()
        .map(|(layer, zone)| {
            let Some(layer) = layer else {
                return format!("default zone {}", obs.default_zone);
            };
            let (side, name) = match layer {
                Layer::Runtime => (&obs.runtime, "runtime"),
                Layer::Permanent => (&obs.permanent, "permanent"),
            };
            match side.get(zone) {
                Some(Some(z)) => format!("zone {zone} ({name}): {}", z.describe()),
                _ => format!("zone {zone} ({name}): no such zone"),
            }
        })
        .collect()
}

/// What firewalld has, in the zones the agent declares.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FirewalldObserved {
    /// The default zone.
    pub default_zone: String,
    /// Runtime configuration per declared zone (`None`: firewalld does not know the zone).
    pub runtime: BTreeMap<String, Option<ZoneObserved>>,
    /// Permanent configuration per declared zone.
    pub permanent: BTreeMap<String, Option<ZoneObserved>>,
}

/// Runtime or permanent configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layer {
    /// The running firewall.
    Runtime,
    /// What firewalld loads at start and reload.
    Permanent,
}

/// One kind of zone setting.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "kebab-case")]
pub enum Item {
    /// A port.
    Port(Port),
    /// A service.
    Service(String),
    /// A source.
    Source(String),
    /// An interface.
    Interface(String),
}

impl std::fmt::Display for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Item::Port(p) => write!(f, "port {p}"),
            Item::Service(s) => write!(f, "service {s}"),
            Item::Source(s) => write!(f, "source {s}"),
            Item::Interface(s) => write!(f, "interface {s}"),
        }
    }
}

/// One change to firewalld's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Change {
    /// Set the default zone (runtime and permanent).
    SetDefaultZone {
        /// The zone.
        zone: String,
    },
    /// Add an item to a zone.
    Add {
        /// Which configuration.
        layer: Layer,
        /// The zone.
        zone: String,
        /// What.
        item: Item,
        /// The configuration key that declared it (for errors): `firewalld.zone[0].ports[1]`.
        key: String,
    },
    /// Remove an undeclared item (`prune`).
    Remove {
        /// Which configuration.
        layer: Layer,
        /// The zone.
        zone: String,
        /// What.
        item: Item,
    },
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let l = |l: &Layer| match l {
            Layer::Runtime => "runtime",
            Layer::Permanent => "permanent",
        };
        match self {
            Change::SetDefaultZone { zone } => write!(f, "set the default zone to {zone}"),
            Change::Add {
                layer, zone, item, ..
            } => write!(f, "add {item} to zone {zone} ({})", l(layer)),
            Change::Remove { layer, zone, item } => {
                write!(f, "remove {item} from zone {zone} ({})", l(layer))
            }
        }
    }
}

/// The zone changes and the undeclared findings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ZonePlan {
    /// Changes to make, in order.
    pub changes: Vec<Change>,
    /// Undeclared settings found in declared zones (left alone unless `prune`).
    pub undeclared: Vec<String>,
    /// Declared zones firewalld does not have (a configuration error: `INVALID_ZONE`).
    pub missing_zones: Vec<String>,
}

fn declared_items(z: &ZoneDecl, index: usize) -> Vec<(Item, String)> {
    let key = |field: &str, i: usize| format!("firewalld.zone[{index}].{field}[{i}]");
    let mut v = Vec::new();
    v.extend(
        z.ports
            .iter()
            .enumerate()
            .map(|(i, p)| (Item::Port(p.clone()), key("ports", i))),
    );
    v.extend(
        z.services
            .iter()
            .enumerate()
            .map(|(i, s)| (Item::Service(s.clone()), key("services", i))),
    );
    v.extend(
        z.sources
            .iter()
            .enumerate()
            .map(|(i, s)| (Item::Source(s.clone()), key("sources", i))),
    );
    v.extend(
        z.interfaces
            .iter()
            .enumerate()
            .map(|(i, s)| (Item::Interface(s.clone()), key("interfaces", i))),
    );
    v
}

fn observed_items(z: &ZoneObserved) -> BTreeSet<Item> {
    let mut s = BTreeSet::new();
    s.extend(z.ports.iter().cloned().map(Item::Port));
    s.extend(z.services.iter().cloned().map(Item::Service));
    s.extend(z.sources.iter().cloned().map(Item::Source));
    s.extend(z.interfaces.iter().cloned().map(Item::Interface));
    s
}

/// What to change so every declared zone holds what is declared, in both layers.
pub fn zone_plan(
    default_zone: Option<&str>,
    zones: &[ZoneDecl],
    prune: bool,
    obs: &FirewalldObserved,
) -> ZonePlan {
    let mut plan = ZonePlan::default();
    if let Some(z) = default_zone {
        if obs.default_zone != z {
            plan.changes.push(Change::SetDefaultZone {
                zone: z.to_string(),
            });
        }
    }
    for (index, z) in zones.iter().enumerate() {
        let declared = declared_items(z, index);
        let wanted: BTreeSet<&Item> = declared.iter().map(|(i, _)| i).collect();
        for layer in [Layer::Runtime, Layer::Permanent] {
            let side = match layer {
                Layer::Runtime => &obs.runtime,
                Layer::Permanent => &obs.permanent,
            };
            let Some(Some(have)) = side.get(&z.name) else {
                if !plan.missing_zones.contains(&z.name) {
                    plan.missing_zones.push(z.name.clone());
                }
                continue;
            };
            let have = observed_items(have);
            for (item, key) in &declared {
                if !have.contains(item) {
                    plan.changes.push(Change::Add {
                        layer,
                        zone: z.name.clone(),
                        item: item.clone(),
                        key: key.clone(),
                    });
                }
            }
            for item in have.iter().filter(|i| !wanted.contains(i)) {
                let l = if layer == Layer::Runtime {
                    "runtime"
                } else {
                    "permanent"
                };
                plan.undeclared
                    .push(format!("zone {}: {item} is not declared ({l})", z.name));
                if prune {
                    plan.changes.push(Change::Remove {
                        layer,
                        zone: z.name.clone(),
                        item: item.clone(),
                    });
                }
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(s: &str) -> Port {
        s.parse().unwrap()
    }

    #[test]
    fn ports_parse_and_reject() {
        assert_eq!(port("10250/tcp").to_string(), "10250/tcp");
        assert_eq!(port("30000-32767/udp").port, "30000-32767");
        for bad in [
            "10250",
            "0/tcp",
            "70000/tcp",
            "80/icmp",
            "90-80/tcp",
            "x/tcp",
        ] {
            assert!(bad.parse::<Port>().is_err(), "{bad}");
        }
    }

    #[test]
    fn sources_and_names() {
        for ok in [
            "10.0.0.0/8",
            "192.168.1.5",
            "fd00::/64",
            "aa:bb:cc:dd:ee:ff",
            "ipset:allowed",
        ] {
            assert!(check_source(ok).is_ok(), "{ok}");
        }
        for bad in ["10.0.0.0/33", "host.example", "", "ipset:"] {
            assert!(check_source(bad).is_err(), "{bad}");
        }
        assert!(check_name("service", "https", 64).is_ok());
        assert!(check_name("service", "has space", 64).is_err());
    }

    fn inputs(state: &str, openshift: bool) -> FirewallInputs {
        FirewallInputs {
            state: state.into(),
            openshift,
            ..FirewallInputs::default()
        }
    }

    #[test]
    fn auto_follows_openshift_and_the_upgrade_window_wins() {
        assert_eq!(
            desired(&inputs("auto", true)),
            Desired::Disabled { mask: false }
        );
        assert!(matches!(
            desired(&inputs("auto", false)),
            Desired::Unmanaged { .. }
        ));
        assert!(matches!(
            desired(&inputs("enabled", true)),
            Desired::Refused { why } if why.contains("allow_on_openshift")
        ));
        let mut i = inputs("enabled", true);
        i.allow_on_openshift = true;
        assert!(matches!(desired(&i), Desired::Enabled { .. }));
        i.upgrade_state = Some("disabled".into());
        assert_eq!(desired(&i), Desired::Disabled { mask: false });
        let mut u = inputs("unmanaged", false);
        u.upgrade_state = Some("disabled".into());
        assert_eq!(desired(&u), Desired::Disabled { mask: false });
    }

    fn unit(file: &str, active: &str) -> UnitObserved {
        UnitObserved {
            load_state: "loaded".into(),
            active_state: active.into(),
            unit_file_state: file.into(),
        }
    }

    #[test]
    fn unit_plans() {
        use UnitAction::*;
        assert_eq!(
            unit_plan(&unit("enabled", "active"), false, false),
            vec![Stop, Disable, ReloadDaemon]
        );
        assert_eq!(
            unit_plan(&unit("enabled", "inactive"), false, true),
            vec![Disable, Mask, ReloadDaemon]
        );
        assert!(unit_plan(&unit("disabled", "inactive"), false, false).is_empty());
        assert_eq!(
            unit_plan(&unit("masked", "inactive"), true, false),
            vec![Unmask, Enable, ReloadDaemon, Start]
        );
        assert_eq!(
            unit_plan(&unit("enabled", "failed"), true, false),
            vec![Start]
        );
        assert!(unit_plan(&unit("enabled", "active"), true, false).is_empty());
        let missing = UnitObserved {
            load_state: "not-found".into(),
            ..UnitObserved::default()
        };
        assert!(unit_plan(&missing, false, true).is_empty());
    }

    #[test]
    fn unit_undo_puts_the_unit_back() {
        use UnitAction::*;
        // Masked and stopped, brought up: put back to masked and stopped.
        assert_eq!(
            unit_undo(&[Unmask, Enable, ReloadDaemon, Start]),
            vec![Stop, Disable, Mask, ReloadDaemon]
        );
        // Only part went through (the start failed): undo what did.
        assert_eq!(
            unit_undo(&[Unmask, Enable, ReloadDaemon]),
            vec![Disable, Mask, ReloadDaemon]
        );
        assert_eq!(unit_undo(&[Start]), vec![Stop]);
        assert_eq!(
            unit_undo(&[Stop, Disable, ReloadDaemon]),
            vec![Enable, ReloadDaemon, Start]
        );
        assert!(unit_undo(&[]).is_empty());
    }

    #[test]
    fn interface_names() {
        for ok in ["eth0", "ens3.100", "br-ex", "veth+"] {
            assert!(check_interface(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a/b", "eth 0", "eth!", "eth*", "abcdefghijklmnop"] {
            assert!(check_interface(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn drift_is_described_by_the_zone_settings_it_touched() {
        let mut before = ZoneObserved::default();
        before.services.insert("ssh".into());
        let mut after = before.clone();
        after.ports.insert(port("8080/tcp"));
        let obs = |z: &ZoneObserved| FirewalldObserved {
            default_zone: "public".into(),
            runtime: [("public".to_string(), Some(z.clone()))].into(),
            permanent: [("public".to_string(), Some(before.clone()))].into(),
        };
        let changes = vec![Change::Add {
            layer: Layer::Runtime,
            zone: "public".into(),
            item: Item::Port(port("8080/tcp")),
            key: "firewalld.zone[0].ports[0]".into(),
        }];
        assert_eq!(
            describe_changed(&changes, &obs(&before)),
            ["zone public (runtime): ports []; services [ssh]; sources []; interfaces []"]
        );
        assert_eq!(
            describe_changed(&changes, &obs(&after)),
            ["zone public (runtime): ports [8080/tcp]; services [ssh]; sources []; interfaces []"]
        );
        let dz = [Change::SetDefaultZone {
            zone: "internal".into(),
        }];
        assert_eq!(
            describe_changed(&dz, &obs(&before)),
            ["default zone public"]
        );
    }

    #[test]
    fn zone_plan_adds_to_both_layers_and_reports_or_prunes_the_rest() {
        let decl = vec![ZoneDecl {
            name: "public".into(),
            ports: vec![port("10250/tcp")],
            services: vec!["ssh".into()],
            ..ZoneDecl::default()
        }];
        let mut have = ZoneObserved::default();
        have.services.insert("ssh".into());
        have.services.insert("dhcpv6-client".into());
        let obs = FirewalldObserved {
            default_zone: "public".into(),
            runtime: [("public".to_string(), Some(have.clone()))].into(),
            permanent: [("public".to_string(), Some(have))].into(),
        };
        let p = zone_plan(Some("public"), &decl, false, &obs);
        assert_eq!(p.changes.len(), 2);
        assert!(
            matches!(&p.changes[0], Change::Add { layer: Layer::Runtime, key, .. } if key == "firewalld.zone[0].ports[0]")
        );
        assert_eq!(p.undeclared.len(), 2);
        let p = zone_plan(Some("internal"), &decl, true, &obs);
        assert_eq!(p.changes.len(), 5, "{:?}", p.changes);
        assert!(matches!(&p.changes[0], Change::SetDefaultZone { zone } if zone == "internal"));
        let none = FirewalldObserved {
            runtime: [("public".to_string(), None)].into(),
            ..FirewalldObserved::default()
        };
        assert_eq!(
            zone_plan(None, &decl, false, &none).missing_zones,
            ["public"]
        );
    }
}
