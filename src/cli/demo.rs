//! `rhel-node-agent demo`: the main job on an embedded example root, unprivileged, no cluster.
//!
//! It writes a demo root (an administrator's registries.conf with comments, and OpenShift mirror
//! policies: the documented `ubi8repo` ICSP, an IDMS, an ITMS and the cluster Image object) and runs
//! the mirror engine on it exactly as on a node, under `--root`, so a newcomer sees what the agent
//! does without root privileges.

use std::fs;
use std::path::{Path, PathBuf};

use clap::Args;

use super::mirrors::{self, ApplyArgs, EffectiveArgs, MirrorsCommand, ModeArg};
use super::{CliError, Exit, Global};

/// The embedded demo root: (path under the root, contents).
const FILES: &[(&str, &str)] = &[
    (
        "etc/containers/registries.conf",
        include_str!("../../demo/etc/containers/registries.conf"),
    ),
    (
        "etc/rhel-node-agent/mirrors.d/10-icsp-ubi8repo.yaml",
        include_str!("../../demo/etc/rhel-node-agent/mirrors.d/10-icsp-ubi8repo.yaml"),
    ),
    (
        "etc/rhel-node-agent/mirrors.d/20-idms-release.yaml",
        include_str!("../../demo/etc/rhel-node-agent/mirrors.d/20-idms-release.yaml"),
    ),
    (
        "etc/rhel-node-agent/mirrors.d/30-itms-tools.yaml",
        include_str!("../../demo/etc/rhel-node-agent/mirrors.d/30-itms-tools.yaml"),
    ),
    (
        "etc/rhel-node-agent/mirrors.d/40-image-cluster.yaml",
        include_str!("../../demo/etc/rhel-node-agent/mirrors.d/40-image-cluster.yaml"),
    ),
];

/// Arguments of `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where to create the demo root (default: a new directory under the system temp dir). An
    /// existing directory is reused, and its files are reset to the embedded ones.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

fn write_root(dir: &Path) -> Result<(), CliError> {
    for (rel, text) in FILES {
        let p = dir.join(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| CliError::failed(format!("{}: {e}", parent.display())))?;
        }
        fs::write(&p, text).map_err(|e| CliError::failed(format!("{}: {e}", p.display())))?;
    }
    fs::create_dir_all(dir.join("etc/containers/registries.conf.d"))
        .map_err(|e| CliError::failed(format!("{}: {e}", dir.display())))?;
    Ok(())
}

fn step(title: &str) {
    println!("\n== {title}");
}

/// Run the demo.
pub fn run(a: &DemoArgs, g: &Global) -> Result<Exit, CliError> {
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => tempfile::Builder::new()
            .prefix("rhel-node-agent-demo.")
            .tempdir()
            .map_err(|e| CliError::failed(format!("cannot create a demo directory: {e}")))?
            .keep(),
    };
    write_root(&dir)?;
    let root_global = Global {
        root: Some(dir.clone()),
        ..g.clone()
    };
    let policies = vec![dir.join("etc/rhel-node-agent/mirrors.d")];
    let apply = |dry_run: bool, policies: Vec<PathBuf>| ApplyArgs {
        registries_conf: None,
        policies,
        mode: Some(ModeArg::InPlace),
        dropin_dir: None,
        style: None,
        dry_run,
        force_offline: false,
    };
    println!("demo root: {}", dir.display());
    println!("policies:  {}", policies[0].display());
    step("1. what the policies would change (mirrors apply --dry-run)");
    mirrors::run(
        &MirrorsCommand::Apply(apply(true, policies.clone())),
        &root_global,
    )?;
    step("2. apply them (atomic write, backup kept under var/lib/rhel-node-agent/backup)");
    mirrors::run(
        &MirrorsCommand::Apply(apply(false, policies.clone())),
        &root_global,
    )?;
    step("3. apply again: idempotent, nothing is written");
    mirrors::run(
        &MirrorsCommand::Apply(apply(false, policies.clone())),
        &root_global,
    )?;
    step("4. what podman, skopeo and CRI-O now load (mirrors effective)");
    mirrors::run(
        &MirrorsCommand::Effective(EffectiveArgs {
            registries_conf: None,
            dropin_dir: None,
        }),
        &root_global,
    )?;
    println!(
        "\nThe edited file is {}.",
        dir.join("etc/containers/registries.conf").display()
    );
    println!(
        "Remove everything the agent manages with:\n  rhel-node-agent --root {} mirrors apply --mode in-place",
        dir.display()
    );
    Ok(Exit::Ok)
}
