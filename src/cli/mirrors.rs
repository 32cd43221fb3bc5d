//! `rhel-node-agent mirrors …`: render, apply, effective, check, rollback.

use std::fs;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

use super::{CliError, Exit, Global, OutputFormat};
use crate::adapters::fs::{self as afs, FsError, ReplaceOptions};
use crate::config::{MirrorMode, Settings};
use crate::core::mirrors::containers::{self, EffectiveConf, LoadedConf};
use crate::core::mirrors::engine::{self, ApplyOptions, ApplyOutcome, SEARCH_DROPIN_NAME};
use crate::core::mirrors::policy::{PolicySet, MAX_POLICY_BYTES};
use crate::core::mirrors::{document, MirrorError, Style};

/// Largest registries.conf (or drop-in) the agent reads.
pub const MAX_CONF_BYTES: u64 = 16 * 1024 * 1024;

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

/// Read a text file the agent is asked to parse, refusing non-regular, huge or non-UTF-8 files.
pub fn read_text(path: &Path, max: u64) -> Result<String, CliError> {
    let meta =
        fs::metadata(path).map_err(|e| CliError::invalid(format!("{}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(CliError::invalid(format!(
            "{}: not a regular file",
            path.display()
        )));
    }
    if meta.len() > max {
        return Err(CliError::invalid(format!(
            "{}: {} bytes is larger than the {max} bytes accepted",
            path.display(),
            meta.len()
        )));
    }
    let bytes =
        fs::read(path).map_err(|e| CliError::invalid(format!("{}: {e}", path.display())))?;
    String::from_utf8(bytes).map_err(|e| {
        CliError::invalid(format!(
            "{}: not valid UTF-8 text (byte {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}

/// The policy files named by `paths` (directories expanded in lexical order), with their bytes.
pub fn read_policy_files(paths: &[PathBuf]) -> Result<Vec<(PathBuf, Vec<u8>)>, CliError> {
    let mut out = Vec::new();
    for p in paths {
        let meta =
            fs::metadata(p).map_err(|e| CliError::invalid(format!("{}: {e}", p.display())))?;
        let files: Vec<PathBuf> = if meta.is_dir() {
            let mut v: Vec<PathBuf> = fs::read_dir(p)
                .map_err(|e| CliError::invalid(format!("{}: {e}", p.display())))?
                .flatten()
                .map(|e| e.path())
                .filter(|f| {
                    let n = f
                        .file_name()
                        .map(|n| n.to_string_lossy().to_string())
                        .unwrap_or_default();
                    !n.starts_with('.')
                        && (n.ends_with(".yaml") || n.ends_with(".yml") || n.ends_with(".json"))
                })
                .collect();
            v.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
            v
        } else {
            vec![p.clone()]
        };
        for f in files {
            let meta =
                fs::metadata(&f).map_err(|e| CliError::invalid(format!("{}: {e}", f.display())))?;
            if !meta.is_file() {
                return Err(CliError::invalid(format!(
                    "{}: not a regular file",
                    f.display()
                )));
            }
            if meta.len() > MAX_POLICY_BYTES as u64 {
                return Err(CliError::invalid(format!(
                    "{}: {} bytes is larger than the {MAX_POLICY_BYTES} bytes a policy file may have",
                    f.display(),
                    meta.len()
                )));
            }
            let bytes =
                fs::read(&f).map_err(|e| CliError::invalid(format!("{}: {e}", f.display())))?;
            out.push((f, bytes));
        }
    }
    Ok(out)
}

/// Parse policy files read by [`read_policy_files`], in order.
pub fn parse_policies(files: &[(PathBuf, Vec<u8>)]) -> Result<PolicySet, CliError> {
    let mut set = PolicySet::default();
    for (f, bytes) in files {
        set.add_text(&f.display().to_string(), bytes)
            .map_err(CliError::invalid)?;
    }
    Ok(set)
}

/// Read policies from files and directories, in the order given (directories in lexical order).
pub fn load_policies(paths: &[PathBuf]) -> Result<PolicySet, CliError> {
    parse_policies(&read_policy_files(paths)?)
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

fn payload(s: &Settings) -> Option<String> {
    Some(s.mirrors.payload_repo.clone()).filter(|p| !p.is_empty())
}

/// The daemon's pid file: while the daemon runs it holds a lock on it and lists the files it manages.
pub fn daemon_pid_path(s: &Settings) -> PathBuf {
    s.runtime_dir.join("daemon.pid")
}

/// Refuse (exit 3) when a running daemon manages `target`.
fn refuse_if_daemon_manages(s: &Settings, target: &Path, force: bool) -> Result<(), CliError> {
    let pid_file = daemon_pid_path(s);
    if force || !afs::is_locked(&pid_file) {
        return Ok(());
    }
    let managed = fs::read_to_string(&pid_file).unwrap_or_default();
    let target_s = target.display().to_string();
    if managed.lines().skip(1).any(|l| l.trim() == target_s) {
        return Err(CliError::refused(format!(
            "{target_s}: managed by the running rhel-node-agent daemon (pid {}); use `rhel-node-agent reconcile`, or --force-offline",
            managed.lines().next().unwrap_or("?").trim()
        )));
    }
    Ok(())
}

fn unified_diff(name: &str, old: &str, new: &str) -> String {
    let name = name.trim_start_matches('/');
    // A deadline keeps the diff of a wholesale rewrite fast (the result is then coarser, still correct).
    similar::TextDiff::configure()
        .timeout(std::time::Duration::from_millis(500))
        .diff_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{name}"), &format!("b/{name}"))
        .to_string()
}

/// Load the drop-ins of `dir` (`*.conf`, lexical order, no recursion), skipping `skip` (a file the
/// caller is about to replace).
fn load_dropins(
    dir: &Path,
    replace: &[(String, Option<String>)],
) -> Result<Vec<LoadedConf>, CliError> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(e) => e
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.ends_with(".conf"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
        Err(e) => return Err(CliError::failed(format!("{}: {e}", dir.display()))),
    };
    for (n, _) in replace {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    names.sort();
    let mut out = Vec::new();
    for n in names {
        let path = dir.join(&n);
        let label = path.display().to_string();
        let text = match replace.iter().find(|(r, _)| *r == n) {
            Some((_, Some(t))) => t.clone(),
            Some((_, None)) => continue,
            None => {
                if !path.is_file() {
                    continue;
                }
                read_text(&path, MAX_CONF_BYTES)?
            }
        };
        out.push(containers::load_dropin(&label, &text).map_err(CliError::invalid)?);
    }
    Ok(out)
}

fn effective_of(
    main_path: &Path,
    main_text: &str,
    dropin_dir: &Path,
    replace: &[(String, Option<String>)],
) -> Result<EffectiveConf, CliError> {
    let main =
        containers::load(&main_path.display().to_string(), main_text).map_err(CliError::invalid)?;
    let dropins = load_dropins(dropin_dir, replace)?;
    Ok(containers::merge_effective(main, dropins))
}

fn shadow_warnings(main_text: &str, eff_dropins: &[LoadedConf], own: &str) -> Vec<String> {
    let Ok(doc) = main_text.parse::<toml_edit::DocumentMut>() else {
        return vec![];
    };
    shadow_warnings_for(&document::managed_scopes(&doc), eff_dropins, own)
}

/// Drop-ins (other than the agent's own) whose entries replace entries the agent manages.
fn shadow_warnings_for(managed: &[String], eff_dropins: &[LoadedConf], own: &str) -> Vec<String> {
    let mut out = Vec::new();
    for d in eff_dropins {
        if d.file.ends_with(&format!("/{own}")) {
            continue;
        }
        for r in &d.registries {
            if managed.contains(&r.registry.prefix) {
                out.push(format!(
                    "{}: [[registry]] {:?} replaces the entry the agent manages in the main file; its mirrors and flags are hidden",
                    d.file, r.registry.prefix
                ));
            }
        }
    }
    out
}

fn apply(a: &ApplyArgs, g: &Global, s: &Settings) -> Result<Exit, CliError> {
    let path = a
        .registries_conf
        .clone()
        .unwrap_or_else(|| s.mirrors.registries_conf.clone());
    let dropin_dir = a
        .dropin_dir
        .clone()
        .unwrap_or_else(|| s.mirrors.dropin_dir.clone());
    let mode = match a.mode {
        Some(ModeArg::Auto) | None => match (a.mode, s.mirrors.mode) {
            (None, m) if m != MirrorMode::Auto => m,
            _ => Settings {
                mirrors: crate::config::MirrorSettings {
                    mode: MirrorMode::Auto,
                    ..s.mirrors.clone()
                },
                ..s.clone()
            }
            .effective_mirror_mode(),
        },
        Some(ModeArg::InPlace) => MirrorMode::InPlace,
        Some(ModeArg::DropIn) => MirrorMode::DropIn,
        Some(ModeArg::Verify) => MirrorMode::Verify,
    };
    let style = a.style.map(Style::from).unwrap_or(s.mirrors.style);
    let policy_files = read_policy_files(&a.policies)?;
    let opts = ApplyOptions {
        style,
        payload_repo: payload(s),
        dropin: mode == MirrorMode::DropIn,
    };
    let file = path.display().to_string();
    let text = read_text(&path, MAX_CONF_BYTES)?;

    if mode == MirrorMode::Verify {
        let policies = parse_policies(&policy_files)?;
        let eff = effective_of(&path, &text, &dropin_dir, &[])?;
        for (f, p) in &eff.duplicates {
            eprintln!("warning: {f}: prefix {p:?} is defined more than once");
        }
        let report = engine::verify(&eff, &policies, &opts).map_err(engine_error)?;
        if g.format() == OutputFormat::Json {
            println!(
                "{}",
                json!({"schema": 1, "mode": "verify", "checked": report.checked, "differences": report.differences})
            );
        } else {
            for d in &report.differences {
                println!("{}: {}", d.scope, d.message);
            }
            println!(
                "verify: {} scope(s) checked, {} difference(s)",
                report.checked,
                report.differences.len()
            );
        }
        return Ok(if report.differences.is_empty() {
            Exit::Ok
        } else {
            Exit::Failed
        });
    }

    if policy_files.is_empty() && !a.dry_run {
        eprintln!(
            "note: no --policies given: removing everything rhel-node-agent manages in {file}"
        );
    }
    let target = afs::resolve_target(&path).map_err(fs_error)?;
    let writing = !a.dry_run;
    if writing {
        refuse_if_daemon_manages(s, &target, a.force_offline)?;
    }
    let _lock = if writing {
        Some(afs::lock(&afs::lock_path_for(&s.state_dir, &target), true).map_err(fs_error)?)
    } else {
        None
    };
    // Re-read under the lock: another writer may have finished just before we got it.
    let text = if writing {
        read_text(&path, MAX_CONF_BYTES)?
    } else {
        text
    };
    // Nothing changed since the last successful apply (same file bytes, same policy bytes, same
    // options, same drop-ins): report it without parsing anything. A lost state file only costs
    // the full path below.
    let state_file = s.state_dir.join("mirrors").join(
        afs::lock_path_for(&s.state_dir, &target)
            .with_extension("json")
            .file_name()
            .unwrap_or_default(),
    );
    let current_fp = fingerprint(
        &text,
        &policy_files,
        mode,
        &opts,
        &dropin_dir,
        &s.mirrors.dropin_name,
    );
    if writing {
        if let Some(last) = read_last_apply(&state_file) {
            if last.get("fingerprint").and_then(|f| f.as_str()) == Some(current_fp.as_str()) {
                print_unchanged(g, &file, mode, &last);
                return Ok(Exit::Ok);
            }
        }
    }
    let policies = parse_policies(&policy_files)?;
    let out = engine::apply(&file, &text, &policies, &opts).map_err(engine_error)?;
    let mut warnings = out.warnings.clone();

    // What the drop-in directory will hold after this apply.
    let own_dropin_path = dropin_dir.join(&s.mirrors.dropin_name);
    let old_own = afs::read_optional(&own_dropin_path)
        .map_err(fs_error)?
        .map(|b| String::from_utf8_lossy(&b).to_string());
    let new_own = if mode == MirrorMode::DropIn {
        out.dropin.clone()
    } else {
        None
    };
    let search_path = dropin_dir.join(SEARCH_DROPIN_NAME);
    let old_search = afs::read_optional(&search_path)
        .map_err(fs_error)?
        .map(|b| String::from_utf8_lossy(&b).to_string());
    let search_is_ours = old_search
        .as_deref()
        .map(|t| t.starts_with("# Managed by rhel-node-agent"))
        .unwrap_or(true);
    let new_search = match &out.search_dropin {
        Some(t) => Some(t.clone()),
        None if search_is_ours => None,
        None => old_search.clone(),
    };
    let own_is_ours = old_own
        .as_deref()
        .map(|t| t.starts_with("# Managed by rhel-node-agent"))
        .unwrap_or(true);
    if !own_is_ours && mode == MirrorMode::DropIn {
        return Err(CliError::refused(format!(
            "{}: exists and was not written by rhel-node-agent; refusing to replace it",
            own_dropin_path.display()
        )));
    }
    let own_name = s.mirrors.dropin_name.clone();
    let mut replace = vec![(SEARCH_DROPIN_NAME.to_string(), new_search.clone())];
    if own_is_ours {
        replace.push((own_name.clone(), new_own.clone()));
    }
    // Every drop-in the node will have after the change must load (the main file was validated
    // by the engine).
    let new_dropins = load_dropins(&dropin_dir, &replace)?;
    warnings.extend(shadow_warnings_for(
        &out.managed_scopes,
        &new_dropins,
        &own_name,
    ));

    let dropin_changed = own_is_ours && old_own != new_own;
    let search_changed = old_search != new_search;
    let extra = [
        (
            own_dropin_path.clone(),
            old_own.clone(),
            new_own.clone(),
            dropin_changed,
        ),
        (
            search_path.clone(),
            old_search.clone(),
            new_search.clone(),
            search_changed,
        ),
    ];
    if a.dry_run {
        print_apply(g, &out, &file, &text, mode, true, &warnings, &extra);
        return Ok(Exit::Ok);
    }
    let backup_dir = s.state_dir.join("backup");
    let ropts = ReplaceOptions {
        backup_dir: Some(backup_dir.clone()),
        keep_backups: s.mirrors.backups,
    };
    if out.changed {
        afs::atomic_replace(&path, out.output.as_bytes(), &ropts).map_err(fs_error)?;
    }
    for (p, new, changed) in [
        (&own_dropin_path, &new_own, dropin_changed),
        (&search_path, &new_search, search_changed),
    ] {
        if !changed {
            continue;
        }
        match new {
            Some(t) => {
                fs::create_dir_all(&dropin_dir)
                    .map_err(|e| CliError::failed(format!("{}: {e}", dropin_dir.display())))?;
                afs::atomic_replace(p, t.as_bytes(), &ropts).map_err(fs_error)?;
            }
            None => {
                if p.exists() {
                    fs::remove_file(p)
                        .map_err(|e| CliError::failed(format!("{}: remove: {e}", p.display())))?;
                    afs::fsync_dir(&dropin_dir).map_err(fs_error)?;
                }
            }
        }
    }
    print_apply(g, &out, &file, &text, mode, false, &warnings, &extra);
    // Record the fingerprint of the state this apply left behind (its own output as the input).
    let after = fingerprint(
        &out.output,
        &policy_files,
        mode,
        &opts,
        &dropin_dir,
        &s.mirrors.dropin_name,
    );
    let record =
        json!({"schema": 1, "fingerprint": after, "summary": out.summary, "warnings": warnings});
    if let Some(dir) = state_file.parent() {
        let _ = fs::create_dir_all(dir);
    }
    if let Err(e) = afs::atomic_replace(
        &state_file,
        record.to_string().as_bytes(),
        &ReplaceOptions::default(),
    ) {
        tracing::warn!(error = %e, "could not record the last apply; the next one takes the full path");
    }
    Ok(Exit::Ok)
}

fn read_last_apply(path: &Path) -> Option<serde_json::Value> {
    let bytes = fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A digest of everything an apply depends on: agent version, options, the registries.conf bytes,
/// every policy file (name and bytes, in order) and every drop-in (name and bytes).
fn fingerprint(
    text: &str,
    policies: &[(PathBuf, Vec<u8>)],
    mode: MirrorMode,
    opts: &ApplyOptions,
    dropin_dir: &Path,
    dropin_name: &str,
) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut field = |b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    field(env!("CARGO_PKG_VERSION").as_bytes());
    field(
        format!(
            "{mode:?}/{:?}/{:?}/{dropin_name}",
            opts.style, opts.payload_repo
        )
        .as_bytes(),
    );
    field(text.as_bytes());
    for (p, b) in policies {
        field(p.as_os_str().as_encoded_bytes());
        field(b);
    }
    field(dropin_dir.as_os_str().as_encoded_bytes());
    let mut names: Vec<PathBuf> = fs::read_dir(dropin_dir)
        .map(|e| e.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    names.sort();
    for p in names {
        field(p.as_os_str().as_encoded_bytes());
        field(&fs::read(&p).unwrap_or_default());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn print_unchanged(g: &Global, file: &str, mode: MirrorMode, last: &serde_json::Value) {
    let summary = last
        .get("summary")
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    let warnings: Vec<String> = last
        .get("warnings")
        .and_then(|w| serde_json::from_value(w.clone()).ok())
        .unwrap_or_default();
    if g.format() == OutputFormat::Json {
        println!(
            "{}",
            json!({"schema": 1, "file": file, "mode": mode, "dry_run": false, "changed": false, "summary": summary, "warnings": warnings, "cached": true})
        );
        return;
    }
    warn_all(&warnings);
    let n = |k: &str| summary.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
    println!(
        "{file}: unchanged ({} sources, {} entries added, {} entries changed, {} mirrors managed)",
        n("sources"),
        n("entries_added"),
        n("entries_changed"),
        n("mirrors")
    );
}

#[allow(clippy::too_many_arguments)]
fn print_apply(
    g: &Global,
    out: &ApplyOutcome,
    file: &str,
    old: &str,
    mode: MirrorMode,
    dry_run: bool,
    warnings: &[String],
    extra: &[(PathBuf, Option<String>, Option<String>, bool)],
) {
    // Diffs are only for --dry-run: a unified diff of a large rewrite is expensive.
    let any_changed = out.changed || extra.iter().any(|(_, _, _, c)| *c);
    let mut diff = if out.changed && dry_run {
        unified_diff(file, old, &out.output)
    } else {
        String::new()
    };
    for (p, o, n, changed) in extra {
        if *changed && dry_run {
            diff.push_str(&unified_diff(
                &p.display().to_string(),
                o.as_deref().unwrap_or(""),
                n.as_deref().unwrap_or(""),
            ));
        }
    }
    if g.format() == OutputFormat::Json {
        println!(
            "{}",
            json!({
                "schema": 1, "file": file, "mode": mode, "dry_run": dry_run, "changed": any_changed,
                "classification": out.classification, "summary": out.summary, "warnings": warnings,
                "diff": if dry_run { Some(diff) } else { None },
            })
        );
        return;
    }
    warn_all(warnings);
    if dry_run {
        print!("{diff}");
    }
    let verb = match (dry_run, any_changed) {
        (_, false) => "unchanged",
        (true, true) => "would change",
        (false, true) => "updated",
    };
    println!(
        "{file}: {verb} ({} sources, {} entries added, {} entries changed, {} mirrors managed)",
        out.summary.sources,
        out.summary.entries_added,
        out.summary.entries_changed,
        out.summary.mirrors
    );
    if out.changed {
        println!(
            "change: {} — {}",
            if out.classification.safe {
                "safe (CRI-O reload only)"
            } else {
                "needs a drain"
            },
            out.classification.reason
        );
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
    let eff = effective_of(&path, &text, &dropin_dir, &[])?;
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
    warnings.extend(shadow_warnings(&text, &dropins, &s.mirrors.dropin_name));
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
    refuse_if_daemon_manages(s, &target, a.force_offline)?;
    let _lock = afs::lock(&afs::lock_path_for(&s.state_dir, &target), true).map_err(fs_error)?;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
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
