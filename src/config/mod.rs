//! Configuration: TOML fragments → merged input → validated settings (CONFIG.md).
//!
//! Fragments come from the vendor directory, then the admin directory (a file with the same basename
//! in the admin directory replaces the vendor one; a symlink to `/dev/null` masks it), then any
//! extra `--config-dir`; files apply in lexical order of basename and later keys win. Every key is
//! optional in a fragment; the defaults live in one place ([`Settings::default`]). An unknown key or
//! a bad value is an error naming the file, line and key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Vendor defaults shipped by the package.
pub const VENDOR_DIR: &str = "/usr/lib/rhel-node-agent/config.d";
/// Administrator fragments.
pub const ADMIN_DIR: &str = "/etc/rhel-node-agent/config.d";
/// The state directory (`StateDirectory=`).
pub const STATE_DIR: &str = "/var/lib/rhel-node-agent";
/// The runtime directory (`RuntimeDirectory=`).
pub const RUNTIME_DIR: &str = "/run/rhel-node-agent";

/// Configuration errors; each names the file, line and key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A fragment could not be read.
    #[error("{file}: {source}")]
    Read {
        /// The fragment path.
        file: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A fragment is not valid TOML, has an unknown key or a value of the wrong type.
    #[error("{file}:{line}: {message}")]
    Parse {
        /// The fragment path.
        file: String,
        /// 1-based line (0 when unknown).
        line: usize,
        /// What is wrong, naming the key.
        message: String,
    },
    /// A value has the right type but a wrong meaning (unknown mode, bad duration, …).
    #[error("{file}: {key}: {message}")]
    Invalid {
        /// The fragment that set the value.
        file: String,
        /// Dotted key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

macro_rules! fragment {
    ($name:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        // Sections whose features arrive later are already schema-checked (unknown keys and wrong
        // types are errors) and value-checked in `check_values`; their fields are read there.
        #[allow(dead_code)]
        #[derive(Debug, Clone, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct $name { $( $field: Option<$ty>, )* }
    };
}

fragment!(NodeFrag { name: String });
fragment!(MirrorsFrag {
    mode: String, style: String, policy_dirs: Vec<String>, registries_conf: String, dropin_dir: String,
    dropin_name: String, payload_repo: String, reload_units: Vec<String>, on_drain_required: String,
    resync_interval: String, backups: u32,
});
fragment!(ApiFrag {
    socket: String,
    read_group: String,
    metrics_listen: String
});
fragment!(HooksFrag { timeout: String, timeouts: BTreeMap<String, String> });
fragment!(UpgradeFrag {
    builtin_cordon_drain: bool,
    firewalld_state: String,
    reconcile_mirrors_at: String
});
fragment!(ZoneFrag { name: String, ports: Vec<String>, services: Vec<String>, sources: Vec<String>, interfaces: Vec<String> });
fragment!(FirewalldFrag {
    state: String, mask: bool, prune: bool, allow_on_openshift: bool, default_zone: String, zone: Vec<ZoneFrag>,
});
fragment!(DrainFrag {
    timeout: String,
    concurrency: u32,
    force: bool,
    delete_emptydir_data: bool,
    escalate_after_timeout: bool
});
fragment!(KubernetesFrag {
    kubeconfig: String,
    annotation_prefix: String,
    heartbeat: String,
    watch_cluster_policies: bool,
    pause_machine_health_checks: bool,
    lease_namespace: String,
    lease_duration: String,
    max_unavailable: u32,
    drain: DrainFrag,
});
fragment!(Fragment {
    node: NodeFrag,
    mirrors: MirrorsFrag,
    api: ApiFrag,
    hooks: HooksFrag,
    upgrade: UpgradeFrag,
    firewalld: FirewalldFrag,
    kubernetes: KubernetesFrag,
});

/// `mirrors.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MirrorMode {
    /// `verify` on an OpenShift node, `in-place` elsewhere.
    Auto,
    /// Edit registries.conf itself.
    InPlace,
    /// Own one file in the drop-in directory.
    DropIn,
    /// Never write; report differences.
    Verify,
}

impl std::str::FromStr for MirrorMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(MirrorMode::Auto),
            "in-place" => Ok(MirrorMode::InPlace),
            "drop-in" => Ok(MirrorMode::DropIn),
            "verify" => Ok(MirrorMode::Verify),
            o => Err(format!(
                "{o:?} is not one of auto, in-place, drop-in, verify"
            )),
        }
    }
}

/// `[mirrors]` settings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MirrorSettings {
    /// How registries.conf is owned.
    pub mode: MirrorMode,
    /// Which OpenShift rendering to reproduce.
    pub style: crate::core::mirrors::Style,
    /// Policy directories.
    pub policy_dirs: Vec<PathBuf>,
    /// The main registries.conf.
    pub registries_conf: PathBuf,
    /// The containers drop-in directory.
    pub dropin_dir: PathBuf,
    /// The drop-in file the agent owns in drop-in mode.
    pub dropin_name: String,
    /// Release payload repository for the blocked-list filter.
    pub payload_repo: String,
    /// Units reloaded after a change.
    pub reload_units: Vec<String>,
    /// `hold` or `apply`.
    pub on_drain_required: String,
    /// Periodic resync.
    #[serde(with = "duration_text")]
    pub resync_interval: Duration,
    /// Backups kept.
    pub backups: u32,
}

/// `[api]` settings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ApiSettings {
    /// The control socket.
    pub socket: PathBuf,
    /// Members of this group may read status; empty = nobody but root and the daemon's uid.
    pub read_group: String,
    /// Prometheus listener (`host:port`); empty = none.
    pub metrics_listen: String,
}

/// `[hooks]` settings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HookSettings {
    /// Per-hook timeout.
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    /// Overrides keyed `<phase>` or `<phase>/<hook>`.
    #[serde(serialize_with = "duration_map")]
    pub timeouts: BTreeMap<String, Duration>,
    /// Vendor hook directory root (`/usr/lib/rhel-node-agent/hooks.d`).
    pub vendor_dir: PathBuf,
    /// Administrator hook directory root (`/etc/rhel-node-agent/hooks.d`).
    pub admin_dir: PathBuf,
}

/// `[upgrade]` settings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UpgradeSettings {
    /// Cordon + drain at the end of pre-cordon, uncordon at the end of pre-uncordon.
    pub builtin_cordon_drain: bool,
    /// firewalld's state from pre-upgrade until post-upgrade (`unchanged` = leave it).
    pub firewalld_state: String,
    /// The phase that reconciles the mirror policies (`None` = never).
    pub reconcile_mirrors_at: Option<crate::core::phases::Phase>,
}

/// `[firewalld]` settings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FirewalldSettings {
    /// auto | unmanaged | disabled | enabled.
    pub state: String,
    /// Mask the unit when disabled.
    pub mask: bool,
    /// Remove settings found in a declared zone that are not declared.
    pub prune: bool,
    /// Allow `enabled` on an OpenShift node.
    pub allow_on_openshift: bool,
    /// The default zone to set (empty: leave it).
    pub default_zone: String,
    /// `[[firewalld.zone]]`, validated.
    pub zones: Vec<crate::core::firewall::ZoneDecl>,
}

/// `[kubernetes]` settings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KubernetesSettings {
    /// Empty = offline.
    pub kubeconfig: String,
    /// Prefix of the agent's Node annotations.
    pub annotation_prefix: String,
    /// Longest time between two writes of the node condition (when nothing changed).
    #[serde(with = "duration_text")]
    pub heartbeat: Duration,
    /// Lease namespace.
    pub lease_namespace: String,
    /// Lease duration.
    #[serde(with = "duration_text")]
    pub lease_duration: Duration,
    /// Upgrade slots (the ConfigMap wins when present).
    pub max_unavailable: u32,
    /// Pause OpenShift's MachineHealthChecks while a node holds a slot.
    pub pause_machine_health_checks: bool,
    /// Also take ICSP/IDMS/ITMS/Image objects from the API (a generated policy file).
    pub watch_cluster_policies: bool,
    /// `[kubernetes.drain]`.
    pub drain: DrainSettings,
}

/// `[kubernetes.drain]` settings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DrainSettings {
    /// Overall drain timeout.
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    /// Concurrent evictions.
    pub concurrency: u32,
    /// Evict pods without a controller.
    pub force: bool,
    /// Evict pods with emptyDir volumes.
    pub delete_emptydir_data: bool,
    /// After the timeout, delete what eviction could not move.
    pub escalate_after_timeout: bool,
}

/// The validated settings the agent runs with.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Settings {
    /// `--root`: every default path is taken under it.
    pub root: PathBuf,
    /// `[node] name` (empty = lower-cased `uname -n`).
    pub node_name: String,
    /// `[mirrors]`.
    pub mirrors: MirrorSettings,
    /// `[api]`.
    pub api: ApiSettings,
    /// `[hooks]`.
    pub hooks: HookSettings,
    /// `[upgrade]`.
    pub upgrade: UpgradeSettings,
    /// `[firewalld]`.
    pub firewalld: FirewalldSettings,
    /// `[kubernetes]`.
    pub kubernetes: KubernetesSettings,
    /// State directory (backups, locks, journal).
    pub state_dir: PathBuf,
    /// Runtime directory (control socket, daemon pid file).
    pub runtime_dir: PathBuf,
    /// Which file set each dotted key, for `config show`.
    pub origins: BTreeMap<String, String>,
    /// `--system-bus`: the D-Bus address used as the system bus (`None`: the real one).
    pub system_bus: Option<String>,
}

fn duration_map<S: serde::Serializer>(
    m: &BTreeMap<String, Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut out = s.serialize_map(Some(m.len()))?;
    for (k, v) in m {
        out.serialize_entry(k, &format!("{}s", v.as_secs()))?;
    }
    out.end()
}

mod duration_text {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}s", d.as_secs()))
    }
}

/// `[[firewalld.zone]]` → validated declarations; an error names the key (`firewalld.zone[1].ports[0]`).
fn zone_decls(
    zones: &[ZoneFrag],
) -> Result<Vec<crate::core::firewall::ZoneDecl>, (String, String)> {
    use crate::core::firewall::{check_interface, check_name, check_source, ZoneDecl};
    let mut out: Vec<ZoneDecl> = Vec::new();
    for (i, z) in zones.iter().enumerate() {
        let key = |f: &str| format!("firewalld.zone[{i}].{f}");
        let name = z.name.clone().ok_or_else(|| {
            (
                key("name"),
                "every [[firewalld.zone]] needs a name".to_string(),
            )
        })?;
        check_name("zone", &name, 64).map_err(|e| (key("name"), e))?;
        if out.iter().any(|o| o.name == name) {
            return Err((key("name"), format!("zone {name:?} is declared twice")));
        }
        let mut d = ZoneDecl {
            name,
            ..ZoneDecl::default()
        };
        for (j, p) in z.ports.iter().flatten().enumerate() {
            d.ports.push(
                p.parse()
                    .map_err(|e| (format!("{}[{j}]", key("ports")), e))?,
            );
        }
        for (j, v) in z.services.iter().flatten().enumerate() {
            check_name("service", v, 64).map_err(|e| (format!("{}[{j}]", key("services")), e))?;
            d.services.push(v.clone());
        }
        for (j, v) in z.sources.iter().flatten().enumerate() {
            check_source(v).map_err(|e| (format!("{}[{j}]", key("sources")), e))?;
            d.sources.push(v.clone());
        }
        for (j, v) in z.interfaces.iter().flatten().enumerate() {
            check_interface(v).map_err(|e| (format!("{}[{j}]", key("interfaces")), e))?;
            d.interfaces.push(v.clone());
        }
        // A source or interface is bound to one zone: declared in two, the agent would move it
        // back and forth.
        for (field, mine) in [("sources", &d.sources), ("interfaces", &d.interfaces)] {
            for (j, v) in mine.iter().enumerate() {
                let other = out.iter().find(|o| {
                    if field == "sources" {
                        o.sources.contains(v)
                    } else {
                        o.interfaces.contains(v)
                    }
                });
                if let Some(o) = other {
                    return Err((
                        format!("{}[{j}]", key(field)),
                        format!("{v:?} is also declared in zone {:?} (it can be bound to one zone only)", o.name),
                    ));
                }
            }
        }
        out.push(d);
    }
    Ok(out)
}

fn invalid_at(file: &str, key: &str, message: String) -> ConfigError {
    ConfigError::Invalid {
        file: file.to_string(),
        key: key.to_string(),
        message,
    }
}

/// `kubernetes.lease_duration` must cover this many renewal intervals (30 s each): 90 s at least.
pub const LEASE_RENEWALS: u32 = 3;

/// Parse `"30s"`, `"10m"`, `"1h30m"`, `"500ms"`, `"2d"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "{text:?} is not a duration like \"30s\", \"10m\" or \"1h\""
            ));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{text:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(86400)),
            _ => {
                return Err(format!(
                    "{text:?} is not a duration like \"30s\", \"10m\" or \"1h\" (unit {unit:?})"
                ))
            }
        };
        total = total.saturating_add(d);
    }
    Ok(total)
}

/// Take `path` (absolute) under `root`.
pub fn under_root(root: &Path, path: impl AsRef<Path>) -> PathBuf {
    let p = path.as_ref();
    if root == Path::new("/") || root.as_os_str().is_empty() {
        return p.to_path_buf();
    }
    root.join(p.strip_prefix("/").unwrap_or(p))
}

/// The fragment files in effect, in application order.
pub fn fragment_files(root: &Path, extra: Option<&Path>) -> Result<Vec<PathBuf>, ConfigError> {
    let mut by_name: BTreeMap<String, PathBuf> = BTreeMap::new();
    for dir in [under_root(root, VENDOR_DIR), under_root(root, ADMIN_DIR)] {
        collect_dir(&dir, &mut by_name)?;
    }
    let mut files: Vec<PathBuf> = by_name
        .into_values()
        .filter(|p| {
            std::fs::read_link(p)
                .map(|t| t != Path::new("/dev/null"))
                .unwrap_or(true)
        })
        .collect();
    if let Some(extra) = extra {
        let mut more = BTreeMap::new();
        collect_dir(extra, &mut more)?;
        files.extend(more.into_values());
    }
    Ok(files)
}

fn collect_dir(dir: &Path, out: &mut BTreeMap<String, PathBuf>) -> Result<(), ConfigError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(ConfigError::Read {
                file: dir.display().to_string(),
                source: e,
            })
        }
    };
    for e in entries {
        let e = e.map_err(|source| ConfigError::Read {
            file: dir.display().to_string(),
            source,
        })?;
        let name = e.file_name().to_string_lossy().to_string();
        if name.ends_with(".toml") && !name.starts_with('.') {
            out.insert(name, e.path());
        }
    }
    Ok(())
}

fn parse_fragment(file: &str, text: &str) -> Result<Fragment, ConfigError> {
    toml_edit::de::from_str::<Fragment>(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
            .unwrap_or(0);
        ConfigError::Parse {
            file: file.to_string(),
            line,
            message: e.message().trim().replace('\n', " "),
        }
    })
}

/// Value checks for keys whose features are not wired yet, so a bad value is reported now and not
/// when the feature ships.
fn check_values(file: &str, f: &Fragment) -> Result<(), ConfigError> {
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        file: file.to_string(),
        key: key.to_string(),
        message,
    };
    let dur = |key: &str, v: &Option<String>| -> Result<(), ConfigError> {
        match v {
            Some(v) => parse_duration(v).map(|_| ()).map_err(|e| invalid(key, e)),
            None => Ok(()),
        }
    };
    let one_of = |key: &str, v: &Option<String>, allowed: &[&str]| -> Result<(), ConfigError> {
        match v {
            Some(v) if !allowed.contains(&v.as_str()) => Err(invalid(
                key,
                format!("{v:?} is not one of {}", allowed.join(", ")),
            )),
            _ => Ok(()),
        }
    };
    if let Some(h) = &f.hooks {
        dur("hooks.timeout", &h.timeout)?;
        for (k, v) in h.timeouts.iter().flatten() {
            let key = format!("hooks.timeouts.{k}");
            let (phase, hook) = k.split_once('/').unwrap_or((k.as_str(), ""));
            if phase.parse::<crate::core::phases::Phase>().is_err()
                || hook.contains('/')
                || (k.contains('/') && hook.is_empty())
            {
                return Err(invalid(
                    &key,
                    format!("{k:?} is not \"<phase>\" or \"<phase>/<hook file name>\" (phases: pre-cordon, pre-upgrade, pre-uncordon, post-upgrade)"),
                ));
            }
            dur(&key, &Some(v.clone()))?;
        }
    }
    if let Some(u) = &f.upgrade {
        one_of(
            "upgrade.firewalld_state",
            &u.firewalld_state,
            &["disabled", "enabled", "unchanged"],
        )?;
        one_of(
            "upgrade.reconcile_mirrors_at",
            &u.reconcile_mirrors_at,
            &[
                "pre-cordon",
                "pre-upgrade",
                "pre-uncordon",
                "post-upgrade",
                "never",
            ],
        )?;
    }
    if let Some(fw) = &f.firewalld {
        one_of(
            "firewalld.state",
            &fw.state,
            &["auto", "unmanaged", "disabled", "enabled"],
        )?;
    }
    if let Some(k) = &f.kubernetes {
        dur("kubernetes.heartbeat", &k.heartbeat)?;
        dur("kubernetes.lease_duration", &k.lease_duration)?;
        if let Some(d) = &k.drain {
            dur("kubernetes.drain.timeout", &d.timeout)?;
        }
    }
    Ok(())
}

/// The built-in defaults of every key (CONFIG.md), as TOML: the base of `config show`.
pub const DEFAULTS_TOML: &str = r#"
[node]
name = ""
[mirrors]
mode = "auto"
style = "current"
policy_dirs = ["/etc/rhel-node-agent/mirrors.d"]
registries_conf = "/etc/containers/registries.conf"
dropin_dir = "/etc/containers/registries.conf.d"
dropin_name = "99-rhel-node-agent.conf"
payload_repo = ""
reload_units = ["crio.service"]
on_drain_required = "hold"
resync_interval = "10m"
backups = 5
[api]
socket = "/run/rhel-node-agent/control.sock"
read_group = ""
metrics_listen = ""
[hooks]
timeout = "10m"
timeouts = {}
[upgrade]
builtin_cordon_drain = false
firewalld_state = "disabled"
reconcile_mirrors_at = "pre-uncordon"
[firewalld]
state = "auto"
mask = false
prune = false
allow_on_openshift = false
default_zone = ""
zone = []
[kubernetes]
kubeconfig = ""
annotation_prefix = "rhel-node-agent.io"
heartbeat = "60s"
watch_cluster_policies = false
pause_machine_health_checks = false
lease_namespace = "rhel-node-agent"
lease_duration = "30m"
max_unavailable = 1
[kubernetes.drain]
timeout = "1h"
concurrency = 10
force = false
delete_emptydir_data = false
escalate_after_timeout = false
"#;

/// One effective setting: dotted key, value (TOML), and the file that set it (`default` when none).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EffectiveSetting {
    /// Dotted key, e.g. `mirrors.backups`.
    pub key: String,
    /// The value as TOML.
    pub value: String,
    /// The fragment that set it, or `default`.
    pub origin: String,
}

fn flatten(
    prefix: &str,
    table: &toml_edit::Table,
    origin: &str,
    out: &mut BTreeMap<String, (String, String)>,
) {
    for (k, item) in table.iter() {
        let key = if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        };
        match item {
            // `hooks.timeouts` is a map (phase/hook -> duration): shown whole, like a value.
            toml_edit::Item::Table(t) if key != "hooks.timeouts" => flatten(&key, t, origin, out),
            toml_edit::Item::Value(v) => {
                out.insert(
                    key,
                    (v.clone().decorated("", "").to_string(), origin.to_string()),
                );
            }
            other => {
                let text = match other {
                    toml_edit::Item::Table(t) => t.clone().into_inline_table().to_string(),
                    toml_edit::Item::ArrayOfTables(a) => a.clone().into_array().to_string(),
                    _ => String::new(),
                };
                out.insert(key, (text.trim().to_string(), origin.to_string()));
            }
        }
    }
}

/// Every setting with its effective value and where it came from (defaults, then each fragment in
/// application order). Fragments are validated first, so a bad one is an error here too.
pub fn effective_settings(
    root: &Path,
    extra: Option<&Path>,
) -> Result<Vec<EffectiveSetting>, ConfigError> {
    Settings::load(root, extra)?;
    let mut map: BTreeMap<String, (String, String)> = BTreeMap::new();
    let defaults: toml_edit::DocumentMut =
        DEFAULTS_TOML
            .parse()
            .map_err(|e: toml_edit::TomlError| ConfigError::Parse {
                file: "<defaults>".into(),
                line: 0,
                message: e.to_string(),
            })?;
    flatten("", defaults.as_table(), "default", &mut map);
    for f in fragment_files(root, extra)? {
        let name = f.display().to_string();
        let text = std::fs::read_to_string(&f).map_err(|source| ConfigError::Read {
            file: name.clone(),
            source,
        })?;
        let doc: toml_edit::DocumentMut =
            text.parse()
                .map_err(|e: toml_edit::TomlError| ConfigError::Parse {
                    file: name.clone(),
                    line: 0,
                    message: e.to_string(),
                })?;
        flatten("", doc.as_table(), &name, &mut map);
    }
    Ok(map
        .into_iter()
        .map(|(key, (value, origin))| EffectiveSetting { key, value, origin })
        .collect())
}

/// Parse and value-check one fragment's text (what `config check` does per file).
pub fn check_fragment(file: &str, text: &str) -> Result<(), ConfigError> {
    let frag = parse_fragment(file, text)?;
    check_values(file, &frag)?;
    Settings::from_fragments(Path::new("/"), &[(file.to_string(), frag)]).map(|_| ())
}

impl Settings {
    /// Load and validate the settings for `root` (and an optional extra fragment directory).
    pub fn load(root: &Path, extra: Option<&Path>) -> Result<Settings, ConfigError> {
        let files = fragment_files(root, extra)?;
        let mut fragments = Vec::new();
        for f in files {
            let name = f.display().to_string();
            let text = std::fs::read_to_string(&f).map_err(|source| ConfigError::Read {
                file: name.clone(),
                source,
            })?;
            let frag = parse_fragment(&name, &text)?;
            check_values(&name, &frag)?;
            fragments.push((name.clone(), frag));
        }
        Settings::from_fragments(root, &fragments)
    }

    /// Merge parsed fragments (in order) over the defaults and validate.
    fn from_fragments(
        root: &Path,
        fragments: &[(String, Fragment)],
    ) -> Result<Settings, ConfigError> {
        let mut s = Settings::defaults(root);
        let mut origin = |key: &str, file: &str| {
            s.origins.insert(key.to_string(), file.to_string());
        };
        let mut m = MirrorsFrag::default();
        let mut node = NodeFrag::default();
        let mut api = ApiFrag::default();
        let mut hooks = HooksFrag::default();
        let mut timeouts: BTreeMap<String, (String, String)> = BTreeMap::new();
        let mut up = UpgradeFrag::default();
        let mut fw = FirewalldFrag::default();
        let mut kube = KubernetesFrag::default();
        for (file, f) in fragments {
            if let Some(h) = &f.hooks {
                if let Some(v) = &h.timeout {
                    hooks.timeout = Some(v.clone());
                    origin("hooks.timeout", file);
                }
                for (k, v) in h.timeouts.iter().flatten() {
                    timeouts.insert(k.clone(), (v.clone(), file.clone()));
                    origin("hooks.timeouts", file);
                }
            }
            if let Some(x) = &f.upgrade {
                macro_rules! take {
                    ($($k:ident),*) => { $( if let Some(v) = &x.$k { up.$k = Some(v.clone()); origin(concat!("upgrade.", stringify!($k)), file); } )* };
                }
                take!(builtin_cordon_drain, firewalld_state, reconcile_mirrors_at);
            }
            if let Some(x) = &f.firewalld {
                macro_rules! take {
                    ($($k:ident),*) => { $( if let Some(v) = &x.$k { fw.$k = Some(v.clone()); origin(concat!("firewalld.", stringify!($k)), file); } )* };
                }
                take!(state, mask, prune, allow_on_openshift, default_zone, zone);
            }
            if let Some(x) = &f.kubernetes {
                macro_rules! take {
                    ($($k:ident),*) => { $( if let Some(v) = &x.$k { kube.$k = Some(v.clone()); origin(concat!("kubernetes.", stringify!($k)), file); } )* };
                }
                take!(
                    kubeconfig,
                    annotation_prefix,
                    heartbeat,
                    lease_namespace,
                    lease_duration,
                    max_unavailable,
                    pause_machine_health_checks,
                    watch_cluster_policies
                );
                if let Some(d) = &x.drain {
                    let kd = kube.drain.get_or_insert_with(DrainFrag::default);
                    macro_rules! take_drain {
                        ($($k:ident),*) => { $( if let Some(v) = &d.$k { kd.$k = Some(v.clone()); origin(concat!("kubernetes.drain.", stringify!($k)), file); } )* };
                    }
                    take_drain!(
                        timeout,
                        concurrency,
                        force,
                        delete_emptydir_data,
                        escalate_after_timeout
                    );
                }
            }
            if let Some(a) = &f.api {
                for (key, val, slot) in [
                    ("api.socket", &a.socket, &mut api.socket),
                    ("api.read_group", &a.read_group, &mut api.read_group),
                    (
                        "api.metrics_listen",
                        &a.metrics_listen,
                        &mut api.metrics_listen,
                    ),
                ] {
                    if let Some(v) = val {
                        *slot = Some(v.clone());
                        origin(key, file);
                    }
                }
            }
            if let Some(n) = &f.node {
                if let Some(v) = &n.name {
                    node.name = Some(v.clone());
                    origin("node.name", file);
                }
            }
            if let Some(x) = &f.mirrors {
                macro_rules! take {
                    ($($k:ident),*) => { $( if let Some(v) = &x.$k { m.$k = Some(v.clone()); origin(concat!("mirrors.", stringify!($k)), file); } )* };
                }
                take!(
                    mode,
                    style,
                    policy_dirs,
                    registries_conf,
                    dropin_dir,
                    dropin_name,
                    payload_repo,
                    reload_units,
                    on_drain_required,
                    resync_interval,
                    backups
                );
            }
        }
        let origins = s.origins.clone();
        let file_of = |key: &str| {
            origins
                .get(key)
                .cloned()
                .unwrap_or_else(|| "<defaults>".into())
        };
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            file: file_of(key),
            key: key.to_string(),
            message,
        };
        if let Some(n) = node.name {
            s.node_name = n;
        }
        if let Some(v) = api.socket {
            s.api.socket = under_root(root, v);
        }
        if let Some(v) = api.read_group {
            s.api.read_group = v;
        }
        if let Some(v) = api.metrics_listen {
            if !v.is_empty() && v.parse::<std::net::SocketAddr>().is_err() {
                return Err(invalid(
                    "api.metrics_listen",
                    format!("{v:?} is not host:port (e.g. \"127.0.0.1:9858\")"),
                ));
            }
            s.api.metrics_listen = v;
        }
        if let Some(v) = hooks.timeout {
            s.hooks.timeout = parse_duration(&v).map_err(|e| invalid("hooks.timeout", e))?;
        }
        for (k, (v, file)) in timeouts {
            let d = parse_duration(&v).map_err(|message| ConfigError::Invalid {
                file,
                key: format!("hooks.timeouts.{k}"),
                message,
            })?;
            s.hooks.timeouts.insert(k, d);
        }
        if let Some(v) = up.builtin_cordon_drain {
            s.upgrade.builtin_cordon_drain = v;
        }
        if let Some(v) = up.firewalld_state {
            s.upgrade.firewalld_state = v;
        }
        if let Some(v) = up.reconcile_mirrors_at {
            s.upgrade.reconcile_mirrors_at = match v.as_str() {
                "never" => None,
                p => Some(
                    p.parse()
                        .map_err(|e| invalid("upgrade.reconcile_mirrors_at", e))?,
                ),
            };
        }
        if let Some(v) = fw.state {
            s.firewalld.state = v;
        }
        if let Some(v) = fw.mask {
            s.firewalld.mask = v;
        }
        if let Some(v) = fw.prune {
            s.firewalld.prune = v;
        }
        if let Some(v) = fw.allow_on_openshift {
            s.firewalld.allow_on_openshift = v;
        }
        if let Some(v) = fw.default_zone {
            if !v.is_empty() {
                crate::core::firewall::check_name("zone", &v, 64)
                    .map_err(|e| invalid("firewalld.default_zone", e))?;
            }
            s.firewalld.default_zone = v;
        }
        if let Some(zones) = fw.zone {
            s.firewalld.zones = zone_decls(&zones)
                .map_err(|(k, e)| invalid_at(&file_of("firewalld.zone"), &k, e))?;
        }
        let k = &mut s.kubernetes;
        if let Some(v) = kube.annotation_prefix {
            if v.is_empty()
                || v.len() > 253
                || !v
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            {
                return Err(invalid(
                    "kubernetes.annotation_prefix",
                    format!("{v:?} is not a DNS subdomain (e.g. \"rhel-node-agent.io\")"),
                ));
            }
            k.annotation_prefix = v;
        }
        if let Some(v) = kube.heartbeat {
            k.heartbeat = parse_duration(&v).map_err(|e| invalid("kubernetes.heartbeat", e))?;
        }
        if let Some(v) = kube.lease_namespace {
            k.lease_namespace = v;
        }
        if let Some(v) = kube.lease_duration {
            k.lease_duration =
                parse_duration(&v).map_err(|e| invalid("kubernetes.lease_duration", e))?;
            // A Lease renewed every 30 s must survive a missed renewal or two (a slow API server,
            // a restart): shorter, another node could take the slot of an upgrade in progress.
            let renew = crate::adapters::lease::renew_interval();
            let floor = renew * LEASE_RENEWALS;
            if k.lease_duration < floor {
                return Err(invalid(
                    "kubernetes.lease_duration",
                    format!(
                        "{v:?} is too short: the slot Lease is renewed every {} s, so it must last at least {} s ({LEASE_RENEWALS} renewals); the default is \"30m\"",
                        renew.as_secs_f64(),
                        floor.as_secs_f64()
                    ),
                ));
            }
        }
        if let Some(v) = kube.max_unavailable {
            if v == 0 {
                return Err(invalid(
                    "kubernetes.max_unavailable",
                    "must be at least 1".into(),
                ));
            }
            k.max_unavailable = v;
        }
        if let Some(v) = kube.pause_machine_health_checks {
            k.pause_machine_health_checks = v;
        }
        if let Some(v) = kube.watch_cluster_policies {
            k.watch_cluster_policies = v;
        }
        if let Some(d) = kube.drain {
            if let Some(v) = d.timeout {
                k.drain.timeout =
                    parse_duration(&v).map_err(|e| invalid("kubernetes.drain.timeout", e))?;
            }
            if let Some(v) = d.concurrency {
                if v == 0 {
                    return Err(invalid(
                        "kubernetes.drain.concurrency",
                        "must be at least 1".into(),
                    ));
                }
                k.drain.concurrency = v;
            }
            if let Some(v) = d.force {
                k.drain.force = v;
            }
            if let Some(v) = d.delete_emptydir_data {
                k.drain.delete_emptydir_data = v;
            }
            if let Some(v) = d.escalate_after_timeout {
                k.drain.escalate_after_timeout = v;
            }
        }
        if let Some(v) = kube.kubeconfig {
            s.kubernetes.kubeconfig = if v.is_empty() {
                v
            } else {
                under_root(root, v).display().to_string()
            };
        }
        let ms = &mut s.mirrors;
        if let Some(v) = m.mode {
            ms.mode = v.parse().map_err(|e| invalid("mirrors.mode", e))?;
        }
        if let Some(v) = m.style {
            ms.style = v.parse().map_err(|e| invalid("mirrors.style", e))?;
        }
        if let Some(v) = m.policy_dirs {
            ms.policy_dirs = v.iter().map(|p| under_root(root, p)).collect();
        }
        if let Some(v) = m.registries_conf {
            ms.registries_conf = under_root(root, v);
        }
        if let Some(v) = m.dropin_dir {
            ms.dropin_dir = under_root(root, v);
        }
        if let Some(v) = m.dropin_name {
            if v.contains('/') || !v.ends_with(".conf") {
                return Err(invalid(
                    "mirrors.dropin_name",
                    format!("{v:?} must be a file name ending in .conf"),
                ));
            }
            ms.dropin_name = v;
        }
        if let Some(v) = m.payload_repo {
            ms.payload_repo = v;
        }
        if let Some(v) = m.reload_units {
            ms.reload_units = v;
        }
        if let Some(v) = m.on_drain_required {
            if v != "hold" && v != "apply" {
                return Err(invalid(
                    "mirrors.on_drain_required",
                    format!("{v:?} is not one of hold, apply"),
                ));
            }
            ms.on_drain_required = v;
        }
        if let Some(v) = m.resync_interval {
            ms.resync_interval =
                parse_duration(&v).map_err(|e| invalid("mirrors.resync_interval", e))?;
        }
        if let Some(v) = m.backups {
            ms.backups = v;
        }
        if s.kubernetes.watch_cluster_policies && !s.kubernetes.kubeconfig.is_empty() {
            // The policies the agent takes from the cluster, next to the file policies.
            let d = crate::adapters::cluster_policies::dir(&s.state_dir);
            if !s.mirrors.policy_dirs.contains(&d) {
                s.mirrors.policy_dirs.push(d);
            }
        }
        Ok(s)
    }

    /// The built-in defaults (CONFIG.md), with paths under `root`.
    pub fn defaults(root: &Path) -> Settings {
        Settings {
            root: root.to_path_buf(),
            node_name: String::new(),
            mirrors: MirrorSettings {
                mode: MirrorMode::Auto,
                style: crate::core::mirrors::Style::Current,
                policy_dirs: vec![under_root(root, "/etc/rhel-node-agent/mirrors.d")],
                registries_conf: under_root(root, "/etc/containers/registries.conf"),
                dropin_dir: under_root(root, "/etc/containers/registries.conf.d"),
                dropin_name: "99-rhel-node-agent.conf".into(),
                payload_repo: String::new(),
                reload_units: vec!["crio.service".into()],
                on_drain_required: "hold".into(),
                resync_interval: Duration::from_secs(600),
                backups: 5,
            },
            api: ApiSettings {
                socket: under_root(root, "/run/rhel-node-agent/control.sock"),
                read_group: String::new(),
                metrics_listen: String::new(),
            },
            hooks: HookSettings {
                timeout: Duration::from_secs(600),
                timeouts: BTreeMap::new(),
                vendor_dir: under_root(root, "/usr/lib/rhel-node-agent/hooks.d"),
                admin_dir: under_root(root, "/etc/rhel-node-agent/hooks.d"),
            },
            upgrade: UpgradeSettings {
                builtin_cordon_drain: false,
                firewalld_state: "disabled".into(),
                reconcile_mirrors_at: Some(crate::core::phases::Phase::PreUncordon),
            },
            firewalld: FirewalldSettings {
                state: "auto".into(),
                mask: false,
                prune: false,
                allow_on_openshift: false,
                default_zone: String::new(),
                zones: Vec::new(),
            },
            kubernetes: KubernetesSettings {
                kubeconfig: String::new(),
                annotation_prefix: "rhel-node-agent.io".into(),
                heartbeat: Duration::from_secs(60),
                lease_namespace: "rhel-node-agent".into(),
                lease_duration: Duration::from_secs(1800),
                max_unavailable: 1,
                pause_machine_health_checks: false,
                watch_cluster_policies: false,
                drain: DrainSettings {
                    timeout: Duration::from_secs(3600),
                    concurrency: 10,
                    force: false,
                    delete_emptydir_data: false,
                    escalate_after_timeout: false,
                },
            },
            state_dir: under_root(root, STATE_DIR),
            runtime_dir: under_root(root, RUNTIME_DIR),
            origins: BTreeMap::new(),
            system_bus: None,
        }
    }

    /// Apply the `--root` rule of CLI.md: under a root the agent never touches the host, so no
    /// units are reloaded unless a bus was given explicitly (`--system-bus`, tests with a private
    /// bus or an nspawn container).
    pub fn confine(&mut self, system_bus: Option<&str>) {
        self.system_bus = system_bus.map(str::to_string);
        if self.root != Path::new("/") && system_bus.is_none() {
            self.mirrors.reload_units.clear();
        }
    }

    /// True on an OpenShift node as CONFIG.md defines it: the MCD's current config exists, or,
    /// with a cluster configured, the daemon has seen the Node carry MCO's `currentConfig`
    /// annotation (recorded by [`Settings::record_cluster_openshift`], so the CLI agrees with it).
    pub fn is_openshift_node(&self) -> bool {
        under_root(&self.root, "/etc/machine-config-daemon/currentconfig").exists()
            || (!self.kubernetes.kubeconfig.is_empty() && self.cluster_openshift_marker().exists())
    }

    /// The directory of facts learned from the cluster (watched by the daemon: a change there
    /// re-evaluates `auto` settings).
    pub fn cluster_facts_dir(&self) -> PathBuf {
        self.state_dir.join("cluster-facts")
    }

    /// Present while the Node carries MCO's `currentConfig` annotation.
    pub fn cluster_openshift_marker(&self) -> PathBuf {
        self.cluster_facts_dir().join("openshift-node")
    }

    /// Record what the cluster says about the Node's MCO annotation; true when that changed.
    pub fn record_cluster_openshift(&self, annotated: bool) -> std::io::Result<bool> {
        let marker = self.cluster_openshift_marker();
        if marker.exists() == annotated {
            return Ok(false);
        }
        if annotated {
            std::fs::create_dir_all(self.cluster_facts_dir())?;
            std::fs::write(
                &marker,
                "the Node carries machineconfiguration.openshift.io/currentConfig\n",
            )?;
        } else {
            std::fs::remove_file(&marker)?;
        }
        Ok(true)
    }

    /// `mirrors.mode` with `auto` resolved.
    pub fn effective_mirror_mode(&self) -> MirrorMode {
        match self.mirrors.mode {
            MirrorMode::Auto if self.is_openshift_node() => MirrorMode::Verify,
            MirrorMode::Auto => MirrorMode::InPlace,
            m => m,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("10 minutes").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn unknown_keys_and_bad_values_name_file_line_and_key() {
        let e = parse_fragment(
            "/etc/x/10-a.toml",
            "[mirrors]\nmode = \"in-place\"\nbackup = 3\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("/etc/x/10-a.toml:3:"), "{e}");
        assert!(e.contains("backup"), "{e}");
        let f = parse_fragment("a.toml", "[mirrors]\nmode = \"sideways\"\n").unwrap();
        let e = Settings::from_fragments(Path::new("/"), &[("a.toml".into(), f)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("a.toml: mirrors.mode:"), "{e}");
    }

    #[test]
    fn admin_fragment_replaces_vendor_one_and_dev_null_masks() {
        let root = tempfile::tempdir().unwrap();
        let vendor = under_root(root.path(), VENDOR_DIR);
        let admin = under_root(root.path(), ADMIN_DIR);
        std::fs::create_dir_all(&vendor).unwrap();
        std::fs::create_dir_all(&admin).unwrap();
        std::fs::write(vendor.join("10-defaults.toml"), "[mirrors]\nbackups = 3\n").unwrap();
        std::fs::write(
            vendor.join("20-style.toml"),
            "[mirrors]\nstyle = \"legacy\"\n",
        )
        .unwrap();
        std::fs::write(vendor.join("30-broken.toml"), "[mirrors]\nbogus = 1\n").unwrap();
        // Same basename in /etc replaces the vendor file; a /dev/null symlink masks one.
        std::fs::write(admin.join("10-defaults.toml"), "[mirrors]\nbackups = 8\n").unwrap();
        std::os::unix::fs::symlink("/dev/null", admin.join("30-broken.toml")).unwrap();
        let s = Settings::load(root.path(), None).unwrap();
        assert_eq!(s.mirrors.backups, 8);
        assert_eq!(s.mirrors.style, crate::core::mirrors::Style::Legacy);
        assert!(
            s.origins["mirrors.backups"].ends_with("etc/rhel-node-agent/config.d/10-defaults.toml")
        );
        let shown = effective_settings(root.path(), None).unwrap();
        let get = |k: &str| shown.iter().find(|e| e.key == k).unwrap().clone();
        assert_eq!(get("mirrors.backups").value, "8");
        assert_eq!(get("kubernetes.drain.concurrency").origin, "default");
        // Unmasked, the broken fragment is an error naming file, line and key.
        std::fs::remove_file(admin.join("30-broken.toml")).unwrap();
        let e = Settings::load(root.path(), None).unwrap_err().to_string();
        assert!(
            e.contains("30-broken.toml:2:") && e.contains("bogus"),
            "{e}"
        );
    }

    #[test]
    fn a_slot_lease_outlives_several_renewals() {
        let e = check_fragment("f.toml", "[kubernetes]\nlease_duration = \"45s\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("kubernetes.lease_duration") && e.contains("renewed every 30 s"),
            "{e}"
        );
        check_fragment("f.toml", "[kubernetes]\nlease_duration = \"90s\"\n").unwrap();
    }

    #[test]
    fn every_section_is_checked() {
        for (text, key) in [
            ("[hooks]\ntimeout = \"ten minutes\"\n", "hooks.timeout"),
            (
                "[hooks.timeouts]\n\"pre-upgrade\" = \"x\"\n",
                "hooks.timeouts.pre-upgrade",
            ),
            (
                "[upgrade]\nfirewalld_state = \"off\"\n",
                "upgrade.firewalld_state",
            ),
            ("[firewalld]\nstate = \"on\"\n", "firewalld.state"),
            (
                "[kubernetes]\nheartbeat = \"soon\"\n",
                "kubernetes.heartbeat",
            ),
            (
                "[kubernetes.drain]\ntimeout = \"1 hour\"\n",
                "kubernetes.drain.timeout",
            ),
            (
                "[api]\nmetrics_listen = \"nine-eight-five-eight\"\n",
                "api.metrics_listen",
            ),
        ] {
            let e = check_fragment("f.toml", text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
        for (text, word) in [
            ("[node]\nnam = \"x\"\n", "nam"),
            ("[kubernetes.drain]\nforce = \"yes\"\n", "boolean"),
        ] {
            let e = check_fragment("f.toml", text).unwrap_err().to_string();
            assert!(e.starts_with("f.toml:") && e.contains(word), "{text}: {e}");
        }
    }

    #[test]
    fn the_cluster_half_of_openshift_node_counts_only_with_a_cluster() {
        let root = tempfile::tempdir().unwrap();
        let mut s = Settings::from_fragments(root.path(), &[]).unwrap();
        assert!(!s.is_openshift_node());
        s.kubernetes.kubeconfig = "/etc/rhel-node-agent/kubeconfig".into();
        assert!(s.record_cluster_openshift(true).unwrap(), "a change");
        assert!(!s.record_cluster_openshift(true).unwrap(), "no change");
        assert!(s.is_openshift_node());
        assert_eq!(s.effective_mirror_mode(), MirrorMode::Verify);
        let mut offline = s.clone();
        offline.kubernetes.kubeconfig.clear();
        assert!(
            !offline.is_openshift_node(),
            "a stale record without a cluster"
        );
        assert!(s.record_cluster_openshift(false).unwrap());
        assert!(!s.is_openshift_node());
        assert_eq!(s.effective_mirror_mode(), MirrorMode::InPlace);
    }

    #[test]
    fn zone_declarations_are_checked_as_firewalld_would() {
        let zone = |name: &str, field: &str, v: &str| {
            format!("[[firewalld.zone]]\nname = \"{name}\"\n{field} = [\"{v}\"]\n")
        };
        for (text, key, word) in [
            (
                zone("public", "interfaces", "eth*"),
                "firewalld.zone[0].interfaces[0]",
                "not an interface name",
            ),
            (
                zone("a", "interfaces", "eth1") + &zone("b", "interfaces", "eth1"),
                "firewalld.zone[1].interfaces[0]",
                "also declared in zone \"a\"",
            ),
            (
                zone("a", "sources", "10.0.0.0/8") + &zone("b", "sources", "10.0.0.0/8"),
                "firewalld.zone[1].sources[0]",
                "also declared in zone \"a\"",
            ),
        ] {
            let e = check_fragment("f.toml", &text).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(word), "{text}: {e}");
        }
        let ok = zone("a", "interfaces", "eth1") + &zone("b", "interfaces", "eth2");
        assert!(check_fragment("f.toml", &ok).is_ok());
    }

    #[test]
    fn later_fragments_win_and_root_prefixes_paths() {
        let a = parse_fragment(
            "a",
            "[mirrors]\nbackups = 2\nregistries_conf = \"/etc/r.conf\"\n",
        )
        .unwrap();
        let b = parse_fragment("b", "[mirrors]\nbackups = 7\n").unwrap();
        let s =
            Settings::from_fragments(Path::new("/tmp/root"), &[("a".into(), a), ("b".into(), b)])
                .unwrap();
        assert_eq!(s.mirrors.backups, 7);
        assert_eq!(s.origins["mirrors.backups"], "b");
        assert_eq!(
            s.mirrors.registries_conf,
            PathBuf::from("/tmp/root/etc/r.conf")
        );
        assert_eq!(s.mirrors.reload_units, vec!["crio.service".to_string()]);
        let mut confined = s.clone();
        confined.confine(None);
        assert!(
            confined.mirrors.reload_units.is_empty(),
            "--root without --system-bus reloads nothing"
        );
        let mut with_bus = s.clone();
        with_bus.confine(Some("unix:path=/tmp/bus"));
        assert_eq!(with_bus.mirrors.reload_units.len(), 1);
    }
}
