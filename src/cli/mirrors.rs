//! `rhel-node-agent mirrors …`: render, apply, effective, check, rollback.

use std::fs;
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

use super::{CliError, Exit, Global, OutputFormat};
use crate::adapters::fs::{self as afs, FsError, ReplaceOptions};
use crate::adapters::registries::{
    self as reg, apply_mirrors, load_policies, payload, read_text, refuse_if_daemon_manages,
    ApplyReport, ApplyRequest, ErrorKind, RegistriesError, MAX_CONF_BYTES,
};
use crate::config::{MirrorMode, Settings};
use crate::core::mirrors::containers::{self, EffectiveConf};
use crate::core::mirrors::engine::{self, ApplyOptions, SEARCH_DROPIN_NAME};
use crate::core::mirrors::{MirrorError, Style};

impl From<RegistriesError> for CliError {
    fn from(e: RegistriesError) -> CliError {
        match e.kind {
            ErrorKind::Invalid => CliError::invalid(e.message),
            ErrorKind::Failed => CliError::failed(e.message),
            ErrorKind::Refused => CliError::refused(e.message),
        }
    }
}

/// `mirrors` subcommands.
#[derive(Debug, Subcommand)]
pub enum MirrorsCommand {
    /// Print the registries.conf that results from BASE and the policies; writes nothing else
    /// (except the search-registries drop-in into --dropin-dir, when the policies produce one).
    Render(RenderArgs),
    /// Edit registries.conf (or the drop-in) so it carries the policies; with no --policies, remove
    /// everything the agent manages.
    Apply(ApplyArgs),
    /// Print the configuration containers/image would load (main file + drop-ins, merged).
    Effective(EffectiveArgs),
    /// Validate like containers/image, report shadowed managed entries and drift; exit 1 on problems.
    Check(CheckArgs),
    /// Restore a previous version of registries.conf from the backups.
    Rollback(RollbackArgs),
}

/// `--style`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StyleArg {
    /// OpenShift ≥ 4.16.
    Current,
    /// OpenShift 4.11–4.12 (ICSP only, registry-level mirror-by-digest-only).
    Legacy,
}

impl From<StyleArg> for Style {
    fn from(s: StyleArg) -> Style {
        match s {
            StyleArg::Current => Style::Current,
            StyleArg::Legacy => Style::Legacy,
        }
    }
}

/// `--mode`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModeArg {
    /// `verify` on an OpenShift node, `in-place` elsewhere.
    Auto,
    /// Edit the main file.
    InPlace,
    /// Own one file in the drop-in directory.
    DropIn,
    /// Never write; report differences (exit 1 when there are any).
    Verify,
}

/// Arguments of `mirrors render`.
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// The base registries.conf.
    #[arg(long, value_name = "FILE")]
    pub base: PathBuf,
    /// Policy file or directory (repeatable).
    #[arg(long = "policies", value_name = "PATH")]
    pub policies: Vec<PathBuf>,
    /// Rendering style.
    #[arg(long, value_enum)]
    pub style: Option<StyleArg>,
    /// Where to write the search-registries drop-in, when one is produced.
    #[arg(long, value_name = "DIR")]
    pub dropin_dir: Option<PathBuf>,
}

/// Arguments of `mirrors apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The registries.conf to edit (default: `mirrors.registries_conf`).
    #[arg(long, value_name = "FILE")]
    pub registries_conf: Option<PathBuf>,
    /// Policy file or directory (repeatable). None: remove everything the agent manages.
    #[arg(long = "policies", value_name = "PATH")]
    pub policies: Vec<PathBuf>,
    /// Ownership mode (default: `mirrors.mode`).
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// The containers drop-in directory (default: `mirrors.dropin_dir`).
    #[arg(long, value_name = "DIR")]
    pub dropin_dir: Option<PathBuf>,
    /// Rendering style (default: `mirrors.style`).
    #[arg(long, value_enum)]
    pub style: Option<StyleArg>,
    /// Print a unified diff and the change classification; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Write even though a running daemon manages this file.
    #[arg(long)]
    pub force_offline: bool,
}

/// Arguments of `mirrors effective`.
#[derive(Debug, Args)]
pub struct EffectiveArgs {
    /// The main registries.conf (default: `mirrors.registries_conf`).
    #[arg(long, value_name = "FILE")]
    pub registries_conf: Option<PathBuf>,
    /// The drop-in directory (default: `mirrors.dropin_dir`).
    #[arg(long, value_name = "DIR")]
    pub dropin_dir: Option<PathBuf>,
}

/// Arguments of `mirrors check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The main registries.conf (default: `mirrors.registries_conf`).
    #[arg(long, value_name = "FILE")]
    pub registries_conf: Option<PathBuf>,
    /// The drop-in directory (default: `mirrors.dropin_dir`).
    #[arg(long, value_name = "DIR")]
    pub dropin_dir: Option<PathBuf>,
    /// Policies to check the effective configuration against (repeatable).
    #[arg(long = "policies", value_name = "PATH")]
    pub policies: Vec<PathBuf>,
    /// Rendering style (default: `mirrors.style`).
    #[arg(long, value_enum)]
    pub style: Option<StyleArg>,
}

/// Arguments of `mirrors rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Which backup: 1 = the newest (default), 2 = the one before, …
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub to: usize,
    /// The registries.conf to restore (default: `mirrors.registries_conf`).
    #[arg(long, value_name = "FILE")]
    pub registries_conf: Option<PathBuf>,
    /// Restore even though a running daemon manages this file.
    #[arg(long)]
    pub force_offline: bool,
}

/// Run a `mirrors` subcommand.
pub fn run(cmd: &MirrorsCommand, g: &Global) -> Result<Exit, CliError> {
    let settings = g.settings()?;
    match cmd {
        MirrorsCommand::Render(a) => render(a, g, &settings),
        MirrorsCommand::Apply(a) => apply(a, g, &settings),
        MirrorsCommand::Effective(a) => effective_cmd(a, g, &settings),
        MirrorsCommand::Check(a) => check(a, g, &settings),
        MirrorsCommand::Rollback(a) => rollback(a, g, &settings),
    }
}

fn engine_error(e: MirrorError) -> CliError {
    CliError::invalid(e)
}

fn fs_error(e: FsError) -> CliError {
    CliError::failed(e)
}

fn warn_all(warnings: &[String]) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
}

fn render(a: &RenderArgs, g: &Global, s: &Settings) -> Result<Exit, CliError> {
    let base = a.base.display().to_string();
    let text = read_text(&a.base, MAX_CONF_BYTES)?;
    let policies = load_policies(&a.policies)?;
    let opts = ApplyOptions {
        style: a.style.map(Style::from).unwrap_or(s.mirrors.style),
        payload_repo: payload(s),
        dropin: false,
    };
    let out = engine::apply(&base, &text, &policies, &opts).map_err(engine_error)?;
    warn_all(&out.warnings);
    if let Some(search) = &out.search_dropin {
        match &a.dropin_dir {
            Some(dir) => {
                fs::create_dir_all(dir).map_err(|e| CliError::failed(format!("{}: {e}", dir.display())))?;
                afs::atomic_replace(&dir.join(SEARCH_DROPIN_NAME), search.as_bytes(), &ReplaceOptions::default()).map_err(fs_error)?;
            }
            None => eprintln!("warning: the policies set containerRuntimeSearchRegistries but no --dropin-dir was given: the search-registries drop-in was not written"),
        }
    }
    if g.format() == OutputFormat::Json {
        println!(
            "{}",
            json!({"schema": 1, "registries_conf": out.output, "search_dropin": out.search_dropin, "classification": out.classification, "warnings": out.warnings, "summary": out.summary})
        );
    } else {
        print!("{}", out.output);
    }
    Ok(Exit::Ok)
}

fn apply(a: &ApplyArgs, g: &Global, s: &Settings) -> Result<Exit, CliError> {
    let requested = a.mode.map(|m| match m {
        ModeArg::Auto => MirrorMode::Auto,
        ModeArg::InPlace => MirrorMode::InPlace,
        ModeArg::DropIn => MirrorMode::DropIn,
        ModeArg::Verify => MirrorMode::Verify,
    });
    let req = ApplyRequest {
        registries_conf: a
            .registries_conf
            .clone()
            .unwrap_or_else(|| s.mirrors.registries_conf.clone()),
        dropin_dir: a
            .dropin_dir
            .clone()
            .unwrap_or_else(|| s.mirrors.dropin_dir.clone()),
        policies: a.policies.clone(),
        mode: reg::resolve_mode(s, requested),
        style: a.style.map(Style::from).unwrap_or(s.mirrors.style),
        dry_run: a.dry_run,
        skip_daemon_check: a.force_offline,
        hold_unsafe: false,
    };
    if req.policies.is_empty() && !req.dry_run && req.mode != MirrorMode::Verify {
        eprintln!(
            "note: no --policies given: removing everything rhel-node-agent manages in {}",
            req.registries_conf.display()
        );
    }
    let report = apply_mirrors(s, &req)?;
    print_report(g, &report);
    let differences = report
        .verify
        .as_ref()
        .map(|v| v.differences.len())
        .unwrap_or(0);
    Ok(if differences > 0 {
        Exit::Failed
    } else {
        Exit::Ok
    })
}

fn print_report(g: &Global, r: &ApplyReport) {
    if g.format() == OutputFormat::Json {
        let mut v = json!({
            "schema": 1, "file": r.file, "mode": r.mode, "dry_run": r.dry_run, "changed": r.changed(),
            "cached": r.cached, "classification": r.classification, "summary": r.summary,
            "warnings": r.warnings, "files": r.changes.iter().map(|c| c.path.display().to_string()).collect::<Vec<_>>(),
        });
        if r.dry_run {
            v["diff"] = json!(r.diff());
        }
        if let Some(vr) = &r.verify {
            v["checked"] = json!(vr.checked);
            v["differences"] = json!(vr.differences);
        }
        println!("{v}");
        return;
    }
    warn_all(&r.warnings);
    if let Some(vr) = &r.verify {
        for d in &vr.differences {
            println!("{}: {}", d.scope, d.message);
        }
        println!(
            "verify: {} scope(s) checked, {} difference(s)",
            vr.checked,
            vr.differences.len()
        );
        return;
    }
    if r.dry_run {
        print!("{}", r.diff());
    }
    let verb = match (r.dry_run, r.changed()) {
        (_, false) => "unchanged",
        (true, true) => "would change",
        (false, true) => "updated",
    };
    let n = r.summary.clone().unwrap_or_default();
    println!(
        "{}: {verb} ({} sources, {} entries added, {} entries changed, {} mirrors managed)",
        r.file, n.sources, n.entries_added, n.entries_changed, n.mirrors
    );
    if r.changed() {
        if let Some(c) = &r.classification {
            println!(
                "change: {} — {}",
                if c.safe {
                    "safe (CRI-O reload only)"
                } else {
                    "needs a drain"
                },
                c.reason
            );
        }
    }
}

fn effective_cmd(a: &EffectiveArgs, g: &Global, s: &Settings) -> Result<Exit, CliError> {
    let path = a
        .registries_conf
        .clone()
        .unwrap_or_else(|| s.mirrors.registries_conf.clone());
    let dropin_dir = a
        .dropin_dir
        .clone()
        .unwrap_or_else(|| s.mirrors.dropin_dir.clone());
    let text = read_text(&path, MAX_CONF_BYTES)?;
    let eff = reg::effective_of(&path, &text, &dropin_dir, &[])?;
    for (f, p) in &eff.duplicates {
        eprintln!(
            "warning: {f}: prefix {p:?} is defined more than once ({} one applies)",
            if eff.had_dropins {
                "the last"
            } else {
                "the first"
            }
        );
    }
    if g.format() == OutputFormat::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&effective_json(&eff)).unwrap_or_default()
        );
    } else {
        print!("{}", effective_toml(&eff));
    }
    Ok(Exit::Ok)
}

fn effective_json(eff: &EffectiveConf) -> serde_json::Value {
    json!({
        "schema": 1,
        "unqualified-search-registries": eff.unqualified_search_registries.as_ref().map(|(l, _)| l),
        "credential-helpers": eff.credential_helpers,
        "short-name-mode": eff.short_name_mode,
        "additional-layer-store-auth-helper": eff.additional_layer_store_auth_helper,
        "registry": eff.registries.iter().map(|r| json!({
            "prefix": r.registry.prefix, "location": r.registry.location, "insecure": r.registry.insecure,
            "blocked": r.registry.blocked, "mirror-by-digest-only": r.registry.mirror_by_digest_only, "file": r.file,
            "mirror": r.registry.mirrors.iter().map(|m| json!({"location": m.location, "insecure": m.insecure, "pull-from-mirror": m.pull_from_mirror})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "aliases": eff.aliases,
    })
}

/// The effective configuration as TOML, every default written out.
pub fn effective_toml(eff: &EffectiveConf) -> String {
    use toml_edit::{value, Array, ArrayOfTables, DocumentMut, Item, Table};
    let mut doc = DocumentMut::new();
    let arr = |l: &[String]| {
        let mut a = Array::new();
        for s in l {
            a.push(s.as_str());
        }
        value(a)
    };
    doc.insert(
        "unqualified-search-registries",
        arr(eff
            .unqualified_search_registries
            .as_ref()
            .map(|(l, _)| l.as_slice())
            .unwrap_or(&[])),
    );
    doc.insert(
        "credential-helpers",
        arr(eff.credential_helpers.as_deref().unwrap_or(&[])),
    );
    doc.insert("short-name-mode", value(eff.short_name_mode.clone()));
    doc.insert(
        "additional-layer-store-auth-helper",
        value(eff.additional_layer_store_auth_helper.clone()),
    );
    let mut aot = ArrayOfTables::new();
    for r in &eff.registries {
        let reg = &r.registry;
        let mut t = Table::new();
        t.decor_mut().set_prefix(format!("\n# from {}\n", r.file));
        t.insert("prefix", value(reg.prefix.clone()));
        t.insert("location", value(reg.location.clone()));
        t.insert("insecure", value(reg.insecure));
        t.insert("blocked", value(reg.blocked));
        t.insert("mirror-by-digest-only", value(reg.mirror_by_digest_only));
        if !reg.mirrors.is_empty() {
            let mut ms = ArrayOfTables::new();
            for m in &reg.mirrors {
                let mut mt = Table::new();
                mt.insert("location", value(m.location.clone()));
                mt.insert("insecure", value(m.insecure));
                mt.insert("pull-from-mirror", value(m.pull_from_mirror.clone()));
                ms.push(mt);
            }
            t.insert("mirror", Item::ArrayOfTables(ms));
        }
        aot.push(t);
    }
    if !aot.is_empty() {
        doc.insert("registry", Item::ArrayOfTables(aot));
    }
    let mut aliases = Table::new();
    for (k, v) in &eff.aliases {
        aliases.insert(k, value(v.clone()));
    }
    doc.insert("aliases", Item::Table(aliases));
    doc.to_string()
}

fn check(a: &CheckArgs, g: &Global, s: &Settings) -> Result<Exit, CliError> {
    let path = a
        .registries_conf
        .clone()
        .unwrap_or_else(|| s.mirrors.registries_conf.clone());
    let dropin_dir = a
        .dropin_dir
        .clone()
        .unwrap_or_else(|| s.mirrors.dropin_dir.clone());
    let file = path.display().to_string();
    let mut problems: Vec<String> = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
    let text = read_text(&path, MAX_CONF_BYTES)?;
    let main = match containers::load(&file, &text) {
        Ok(m) => Some(m),
        Err(e) => {
            problems.push(e.to_string());
            None
        }
    };
    let mut dropins = Vec::new();
    let mut names: Vec<PathBuf> = fs::read_dir(&dropin_dir)
        .map(|e| {
            e.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().map(|x| x == "conf").unwrap_or(false))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    for p in names {
        if !p.is_file() {
            continue;
        }
        match read_text(&p, MAX_CONF_BYTES)
            .map_err(|e| e.message)
            .and_then(|t| {
                containers::load_dropin(&p.display().to_string(), &t).map_err(|e| e.to_string())
            }) {
            Ok(d) => dropins.push(d),
            Err(e) => problems.push(e),
        }
    }
    if let Some(m) = &main {
        for (k, line) in &m.unknown_keys {
            warnings.push(format!(
                "{file}{}: {k}: unknown key, ignored by containers/image",
                line.map(|l| format!(":{l}")).unwrap_or_default()
            ));
        }
    }
    warnings.extend(reg::shadow_warnings(
        &text,
        &dropins,
        &s.mirrors.dropin_name,
    ));
    problems.extend(
        warnings
            .iter()
            .filter(|w| w.contains("replaces the entry the agent manages"))
            .cloned(),
    );
    let mut differences = Vec::new();
    if let Some(main) = main {
        let eff = containers::merge_effective(main, dropins);
        for (f, p) in &eff.duplicates {
            warnings.push(format!("{f}: prefix {p:?} is defined more than once"));
        }
        if !a.policies.is_empty() {
            let policies = load_policies(&a.policies)?;
            let opts = ApplyOptions {
                style: a.style.map(Style::from).unwrap_or(s.mirrors.style),
                payload_repo: payload(s),
                dropin: false,
            };
            let report = engine::verify(&eff, &policies, &opts).map_err(engine_error)?;
            differences = report.differences;
        }
    }
    for d in &differences {
        problems.push(format!("drift: {}: {}", d.scope, d.message));
    }
    if g.format() == OutputFormat::Json {
        println!(
            "{}",
            json!({"schema": 1, "ok": problems.is_empty(), "problems": problems, "warnings": warnings})
        );
    } else {
        warn_all(&warnings);
        for p in &problems {
            println!("problem: {p}");
        }
        println!(
            "{file}: {}",
            if problems.is_empty() {
                "ok".to_string()
            } else {
                format!("{} problem(s)", problems.len())
            }
        );
    }
    Ok(if problems.is_empty() {
        Exit::Ok
    } else {
        Exit::Failed
    })
}

fn rollback(a: &RollbackArgs, g: &Global, s: &Settings) -> Result<Exit, CliError> {
    let path = a
        .registries_conf
        .clone()
        .unwrap_or_else(|| s.mirrors.registries_conf.clone());
    let target = afs::resolve_target(&path).map_err(fs_error)?;
    if !a.force_offline {
        refuse_if_daemon_manages(s, &target)?;
    }
    let _lock = afs::lock(&afs::lock_path_for(&s.state_dir, &target), true).map_err(fs_error)?;
    let name = afs::backup_key(&target);
    let backup_dir = s.state_dir.join("backup");
    let backups = afs::list_backups(&backup_dir, &name).map_err(fs_error)?;
    if a.to == 0 || a.to > backups.len() {
        return Err(CliError::invalid(format!(
            "no backup number {} of {name} in {} ({} available)",
            a.to,
            backup_dir.display(),
            backups.len()
        )));
    }
    let chosen = &backups[a.to - 1];
    let text = read_text(chosen, MAX_CONF_BYTES)?;
    containers::load(&chosen.display().to_string(), &text).map_err(|e| {
        CliError::invalid(format!(
            "{e} (refusing to restore a backup containers/image would reject)"
        ))
    })?;
    let ropts = ReplaceOptions {
        backup_dir: Some(backup_dir),
        keep_backups: s.mirrors.backups.max(1),
    };
    afs::atomic_replace(&path, text.as_bytes(), &ropts).map_err(fs_error)?;
    if g.format() == OutputFormat::Json {
        println!(
            "{}",
            json!({"schema": 1, "file": path, "restored_from": chosen})
        );
    } else {
        println!("{}: restored from {}", path.display(), chosen.display());
    }
    Ok(Exit::Ok)
}
