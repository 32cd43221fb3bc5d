//! `rhel-node-agent demo`: the main job on an embedded example root, unprivileged, no cluster.
//!
//! It writes a demo root (an administrator's registries.conf with comments, OpenShift mirror
//! policies — the documented `ubi8repo` ICSP, an IDMS, an ITMS and the cluster Image object — and
//! example upgrade hooks) and runs the mirror engine on it exactly as on a node, under `--root`; then
//! it starts the daemon on that root and walks an upgrade through its four phases, with a simulated
//! reboot, so a newcomer sees what the agent does without root privileges.

use std::fs;
use std::path::{Path, PathBuf};

use clap::Args;

use super::mirrors::{self, ApplyArgs, EffectiveArgs, MirrorsCommand, ModeArg};
use super::phase::{self, PhaseCommand, RunArgs, UpgradeCommand};
use super::{CliError, Exit, Global};
use crate::core::phases::Phase;

/// The embedded demo root: (path under the root, contents, mode).
const FILES: &[(&str, &str, u32)] = &[
    (
        "etc/containers/registries.conf",
        include_str!("../../demo/etc/containers/registries.conf"),
        0o644,
    ),
    (
        "etc/rhel-node-agent/mirrors.d/10-icsp-ubi8repo.yaml",
        include_str!("../../demo/etc/rhel-node-agent/mirrors.d/10-icsp-ubi8repo.yaml"),
        0o644,
    ),
    (
        "etc/rhel-node-agent/mirrors.d/20-idms-release.yaml",
        include_str!("../../demo/etc/rhel-node-agent/mirrors.d/20-idms-release.yaml"),
        0o644,
    ),
    (
        "etc/rhel-node-agent/mirrors.d/30-itms-tools.yaml",
        include_str!("../../demo/etc/rhel-node-agent/mirrors.d/30-itms-tools.yaml"),
        0o644,
    ),
    (
        "etc/rhel-node-agent/mirrors.d/40-image-cluster.yaml",
        include_str!("../../demo/etc/rhel-node-agent/mirrors.d/40-image-cluster.yaml"),
        0o644,
    ),
    (
        "etc/rhel-node-agent/hooks.d/pre-cordon.d/10-check-space",
        include_str!("../../demo/etc/rhel-node-agent/hooks.d/pre-cordon.d/10-check-space"),
        0o755,
    ),
    (
        "etc/rhel-node-agent/hooks.d/pre-upgrade.d/20-quiesce-app",
        include_str!("../../demo/etc/rhel-node-agent/hooks.d/pre-upgrade.d/20-quiesce-app"),
        0o755,
    ),
    (
        "etc/rhel-node-agent/hooks.d/pre-upgrade.d/30-example.disabled",
        include_str!("../../demo/etc/rhel-node-agent/hooks.d/pre-upgrade.d/30-example.disabled"),
        0o755,
    ),
    (
        "etc/rhel-node-agent/hooks.d/pre-uncordon.d/10-verify-node",
        include_str!("../../demo/etc/rhel-node-agent/hooks.d/pre-uncordon.d/10-verify-node"),
        0o755,
    ),
    (
        "etc/rhel-node-agent/hooks.d/post-upgrade.d/10-report",
        include_str!("../../demo/etc/rhel-node-agent/hooks.d/post-upgrade.d/10-report"),
        0o755,
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
    use std::os::unix::fs::PermissionsExt;
    for (rel, text, mode) in FILES {
        let p = dir.join(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| CliError::failed(format!("{}: {e}", parent.display())))?;
        }
        fs::write(&p, text).map_err(|e| CliError::failed(format!("{}: {e}", p.display())))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(*mode))
            .map_err(|e| CliError::failed(format!("{}: {e}", p.display())))?;
    }
    fs::create_dir_all(dir.join("etc/containers/registries.conf.d"))
        .map_err(|e| CliError::failed(format!("{}: {e}", dir.display())))?;
    Ok(())
}

/// A new random boot id, as the kernel makes one at each boot.
fn new_boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| format!("{:x}", std::process::id()))
}

/// The daemon of the demo: `rhel-node-agent --root DIR daemon`, stopped with SIGTERM on drop.
struct DemoDaemon(std::process::Child);

impl Drop for DemoDaemon {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.0.wait();
    }
}

/// Part two: an upgrade of this "node", phase by phase, as the Ansible hooks would trigger it.
fn upgrade(dir: &Path, g: &Global) -> Result<(), CliError> {
    let boot = dir.join("proc/sys/kernel/random/boot_id");
    let write_boot = || -> Result<(), CliError> {
        fs::create_dir_all(boot.parent().unwrap_or(dir))
            .and_then(|_| fs::write(&boot, format!("{}\n", new_boot_id())))
            .map_err(|e| CliError::failed(format!("{}: {e}", boot.display())))
    };
    write_boot()?;
    let exe = std::env::current_exe()
        .map_err(|e| CliError::failed(format!("cannot find this program: {e}")))?;
    let log = dir.join("daemon.log");
    let daemon = std::process::Command::new(exe)
        .arg("--root")
        .arg(dir)
        .arg("daemon")
        .stdout(std::process::Stdio::null())
        .stderr(
            fs::File::create(&log)
                .map_err(|e| CliError::failed(format!("{}: {e}", log.display())))?,
        )
        .spawn()
        .map_err(|e| CliError::failed(format!("cannot start the daemon: {e}")))?;
    let _daemon = DemoDaemon(daemon);
    step(
        "5. an upgrade, phase by phase (the daemon runs the hooks in etc/rhel-node-agent/hooks.d)",
    );
    println!("daemon log: {}", log.display());
    for (phase, title) in [
        (
            Phase::PreCordon,
            "pre-cordon (then Ansible cordons and drains)",
        ),
        (
            Phase::PreUpgrade,
            "pre-upgrade (then packages, machine config, reboot)",
        ),
        (Phase::PreUncordon, "pre-uncordon (then Ansible uncordons)"),
        (Phase::PostUpgrade, "post-upgrade"),
    ] {
        if phase == Phase::PreUncordon {
            println!("-- reboot (simulated: a new boot id)");
            write_boot()?;
        }
        println!("-- {title}");
        phase::run(
            &PhaseCommand::Run(RunArgs {
                phase,
                upgrade_id: None,
                target_version: Some("4.14.3".into()),
                ignore_order: false,
                wait_daemon: 30,
            }),
            g,
        )?;
    }
    step("6. the upgrade record (upgrade status)");
    phase::upgrade(&UpgradeCommand::Status, g)?;
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
    upgrade(&dir, &root_global)?;
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
