//! `firewall status` and `firewall apply [--dry-run]`: firewalld's declared state against what
//! systemd and firewalld report, over D-Bus (the system bus, or `--system-bus`), without the daemon.
//! During an upgrade window (pre-upgrade until the record closes) the declared state is
//! `upgrade.firewalld_state`, read from the upgrade journal, as the daemon does.

use clap::Subcommand;
use serde_json::json;

use super::{CliError, Exit, Global, OutputFormat};
use crate::adapters::firewalld::{self, FirewallError, FirewallReport};
use crate::adapters::systemd;
use crate::config::Settings;
use crate::core::firewall::{self, Change, Desired, Layer};

/// `firewall` subcommands.
#[derive(Debug, Subcommand)]
pub enum FirewallCommand {
    /// Declared vs observed: the unit, and per declared zone the runtime and permanent settings.
    Status,
    /// Bring firewalld to the declared state now.
    Apply {
        /// Show what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

fn desired(s: &Settings) -> Desired {
    if crate::runtime::firewall::confined(s) {
        return Desired::Unmanaged {
            why: "under --root without --system-bus the agent never touches the host's firewalld"
                .into(),
        };
    }
    let path = crate::runtime::phases::journal_path(&s.state_dir);
    let window = crate::runtime::phases::load_journal(&path)
        .map(|j| j.upgrade_window())
        .unwrap_or(false);
    firewall::desired(&crate::runtime::firewall::inputs(s, window))
}

fn describe(d: &Desired) -> String {
    match d {
        Desired::Unmanaged { why } => format!("unmanaged ({why})"),
        Desired::Refused { why } => format!("refused: {why}"),
        Desired::Disabled { mask: true } => "stopped, disabled and masked".into(),
        Desired::Disabled { mask: false } => "stopped and disabled".into(),
        Desired::Enabled {
            default_zone,
            zones,
            prune,
        } => format!(
            "running and enabled; default zone {}; {} declared zone(s){}",
            default_zone.as_deref().unwrap_or("left as it is"),
            zones.len(),
            if *prune {
                "; undeclared settings are removed"
            } else {
                ""
            }
        ),
    }
}

fn exit_for(e: &FirewallError) -> CliError {
    if e.is_declaration() {
        CliError::invalid(e)
    } else {
        CliError::failed(e)
    }
}

/// The declared items `report` found missing in `zone` (one layer).
fn missing(report: &FirewallReport, layer: Layer, zone: &str) -> Vec<String> {
    report
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::Add {
                layer: l,
                zone: z,
                item,
                ..
            } if *l == layer && z == zone => Some(item.to_string()),
            _ => None,
        })
        .collect()
}

/// Declared vs observed per declared zone, for `-o json`: what the zone must hold, what each layer
/// holds (`null`: firewalld has no such zone, or was not running), and what each layer misses.
fn zones_json(d: &Desired, report: &FirewallReport) -> serde_json::Value {
    let Desired::Enabled { zones, .. } = d else {
        return json!([]);
    };
    let observed = |layer: Layer, name: &str| {
        report.observed.as_ref().and_then(|o| {
            let side = match layer {
                Layer::Runtime => &o.runtime,
                Layer::Permanent => &o.permanent,
            };
            side.get(name).cloned().flatten()
        })
    };
    zones
        .iter()
        .map(|z| {
            json!({
                "name": z.name,
                "declared": z,
                "runtime": observed(Layer::Runtime, &z.name),
                "permanent": observed(Layer::Permanent, &z.name),
                "missing": {
                    "runtime": missing(report, Layer::Runtime, &z.name),
                    "permanent": missing(report, Layer::Permanent, &z.name),
                },
            })
        })
        .collect()
}

/// Run `firewall …`.
pub fn run(cmd: &FirewallCommand, g: &Global) -> Result<Exit, CliError> {
    let mut s = g.settings()?;
    s.confine(g.system_bus.as_deref());
    let d = desired(&s);
    let dry_run = match cmd {
        FirewallCommand::Status => true,
        FirewallCommand::Apply { dry_run } => *dry_run,
    };
    if let Desired::Refused { why } = &d {
        return Err(CliError::refused(why));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::failed)?;
    let report = rt.block_on(async {
        if matches!(d, Desired::Unmanaged { .. }) {
            return Ok(FirewallReport {
                desired: Some(d.clone()),
                ..FirewallReport::default()
            });
        }
        let conn = systemd::connect(s.system_bus.as_deref())
            .await
            .map_err(CliError::failed)?;
        let mut r = firewalld::reconcile(&conn, &d, dry_run)
            .await
            .map_err(|e| exit_for(&e))?;
        if matches!(cmd, FirewallCommand::Status) && r.observed.is_none() {
            // firewalld is not running (e.g. disabled): still show what it would have.
            if let Desired::Enabled { zones, .. } = &d {
                r.observed = firewalld::status(&conn, zones)
                    .await
                    .map_err(|e| exit_for(&e))?
                    .1;
            }
        }
        Ok::<_, CliError>(r)
    })?;
    if g.format() == OutputFormat::Json {
        println!(
            "{}",
            json!({"schema": 1, "in_sync": !report.changed(), "desired": d,
                   "zones": zones_json(&d, &report), "report": report})
        );
        return Ok(Exit::Ok);
    }
    println!("firewalld: {}", describe(&d));
    if let (Some(b), Some(a)) = (&report.unit_before, &report.unit_after) {
        if matches!(cmd, FirewallCommand::Apply { dry_run: false }) && b != a {
            println!("  firewalld.service: {} → {}", b.short(), a.short());
        } else {
            println!("  firewalld.service: {}", b.short());
        }
    }
    for n in &report.notes {
        println!("  note: {n}");
    }
    if let (Desired::Enabled { zones, .. }, Some(obs)) = (&d, &report.observed) {
        println!("  default zone: {}", obs.default_zone);
        for z in zones {
            for (layer, side) in [
                (Layer::Runtime, &obs.runtime),
                (Layer::Permanent, &obs.permanent),
            ] {
                let missing = missing(&report, layer, &z.name);
                let name = if layer == Layer::Runtime {
                    "runtime"
                } else {
                    "permanent"
                };
                match side.get(&z.name) {
                    Some(Some(_)) if missing.is_empty() => {
                        println!("  zone {} ({name}): as declared", z.name)
                    }
                    Some(Some(_)) => {
                        println!("  zone {} ({name}): missing {}", z.name, missing.join(", "))
                    }
                    _ => println!("  zone {} ({name}): firewalld has no such zone", z.name),
                }
            }
        }
        for u in &report.undeclared {
            println!("  undeclared: {u}");
        }
    }
    let verb = if dry_run { "would" } else { "did" };
    let actions = report.actions();
    match (cmd, actions.is_empty()) {
        (_, true) => println!("in sync: nothing to change"),
        (FirewallCommand::Status, false) => {
            println!("not in sync: `rhel-node-agent firewall apply` {verb}:");
            for a in &actions {
                println!("  - {a}");
            }
        }
        (FirewallCommand::Apply { .. }, false) => {
            println!("{} change(s) ({verb}):", actions.len());
            for a in &actions {
                println!("  - {a}");
            }
            if !dry_run {
                println!("{} D-Bus call(s) changed something", report.mutations);
            }
        }
    }
    Ok(Exit::Ok)
}
