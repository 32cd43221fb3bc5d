//! registries.conf on disk: reading policies and files safely, running the mirror engine, and
//! writing the results durably (main file, the agent's drop-in, the search-registries drop-in),
//! under the lock the CLI and the daemon share. The CLI prints what [`apply_mirrors`] reports; the
//! daemon calls the same function, so both behave identically.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::adapters::fs::{self as afs, FsError, ReplaceOptions};
use crate::config::{MirrorMode, Settings};
use crate::core::mirrors::classify::Classification;
use crate::core::mirrors::containers::{self, EffectiveConf, LoadedConf};
use crate::core::mirrors::engine::{
    self, ApplyOptions, ManagedSummary, VerifyReport, SEARCH_DROPIN_NAME,
};
use crate::core::mirrors::policy::{PolicySet, MAX_POLICY_BYTES};
use crate::core::mirrors::{document, MirrorError, Style};

/// Largest registries.conf (or drop-in) the agent reads.
pub const MAX_CONF_BYTES: u64 = 16 * 1024 * 1024;

/// How a [`RegistriesError`] maps to the CLI's exit codes (CLI.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Invalid input: nothing was changed (exit 2).
    Invalid,
    /// An operation failed (exit 1).
    Failed,
    /// Refused by an ownership rule (exit 3).
    Refused,
}

/// An error of the registries adapter: a one-line message naming file, object and field.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct RegistriesError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// The message.
    pub message: String,
}

impl RegistriesError {
    /// Invalid input.
    pub fn invalid(e: impl std::fmt::Display) -> Self {
        RegistriesError {
            kind: ErrorKind::Invalid,
            message: e.to_string(),
        }
    }
    /// A failed operation.
    pub fn failed(e: impl std::fmt::Display) -> Self {
        RegistriesError {
            kind: ErrorKind::Failed,
            message: e.to_string(),
        }
    }
    /// A refusal.
    pub fn refused(e: impl std::fmt::Display) -> Self {
        RegistriesError {
            kind: ErrorKind::Refused,
            message: e.to_string(),
        }
    }
}

fn engine_error(e: MirrorError) -> RegistriesError {
    RegistriesError::invalid(e)
}

fn fs_error(e: FsError) -> RegistriesError {
    RegistriesError::failed(e)
}

/// What to apply, with every default already resolved.
#[derive(Debug, Clone)]
pub struct ApplyRequest {
    /// The main registries.conf.
    pub registries_conf: PathBuf,
    /// The containers drop-in directory.
    pub dropin_dir: PathBuf,
    /// Policy files and directories, in order.
    pub policies: Vec<PathBuf>,
    /// `in-place`, `drop-in` or `verify` (not `auto`: resolve it first).
    pub mode: MirrorMode,
    /// Rendering style.
    pub style: Style,
    /// Compute and report, write nothing.
    pub dry_run: bool,
    /// Skip the running-daemon ownership check (the daemon itself, or `--force-offline`).
    pub skip_daemon_check: bool,
    /// Write nothing when the change needs a drain (`mirrors.on_drain_required = "hold"`): the
    /// report says `held`.
    pub hold_unsafe: bool,
}

/// One file an apply changes (or would change), with old and new contents.
#[derive(Debug, Clone)]
pub struct FileChange {
    /// The file.
    pub path: PathBuf,
    /// Contents before (`None`: did not exist).
    pub old: Option<String>,
    /// Contents after (`None`: removed).
    pub new: Option<String>,
}

/// What an apply did (or would do).
#[derive(Debug, Clone)]
pub struct ApplyReport {
    /// The main registries.conf, as given.
    pub file: String,
    /// The mode used.
    pub mode: MirrorMode,
    /// Nothing was written because of `dry_run`.
    pub dry_run: bool,
    /// Answered from the fingerprint of the last apply: nothing changed, nothing was parsed.
    pub cached: bool,
    /// Files changed (or that would change), main file first.
    pub changes: Vec<FileChange>,
    /// MCO's drain verdict (absent for cached and verify results).
    pub classification: Option<Classification>,
    /// What the agent manages now.
    pub summary: Option<ManagedSummary>,
    /// Non-fatal findings.
    pub warnings: Vec<String>,
    /// The comparison, in verify mode.
    pub verify: Option<VerifyReport>,
    /// The change needs a drain and was held back (nothing written).
    pub held: bool,
}

impl ApplyReport {
    /// True when some file changed (or would change).
    pub fn changed(&self) -> bool {
        !self.changes.is_empty()
    }
    /// A unified diff of every change.
    pub fn diff(&self) -> String {
        self.changes
            .iter()
            .map(|c| {
                unified_diff(
                    &c.path.display().to_string(),
                    c.old.as_deref().unwrap_or(""),
                    c.new.as_deref().unwrap_or(""),
                )
            })
            .collect()
    }
}

/// `mirrors.mode` resolved for this node (`auto` → `verify` on OpenShift, else `in-place`).
pub fn resolve_mode(s: &Settings, requested: Option<MirrorMode>) -> MirrorMode {
    match requested.unwrap_or(s.mirrors.mode) {
        MirrorMode::Auto if s.is_openshift_node() => MirrorMode::Verify,
        MirrorMode::Auto => MirrorMode::InPlace,
        m => m,
    }
}

fn state_file_for(s: &Settings, target: &Path) -> PathBuf {
    s.state_dir.join("mirrors").join(
        afs::lock_path_for(&s.state_dir, target)
            .with_extension("json")
            .file_name()
            .unwrap_or_default(),
    )
}

/// Apply (or verify, or dry-run) mirror policies on disk. The one implementation behind
/// `mirrors apply` and the daemon's reconcile.
pub fn apply_mirrors(s: &Settings, req: &ApplyRequest) -> Result<ApplyReport, RegistriesError> {
    let path = &req.registries_conf;
    let dropin_dir = &req.dropin_dir;
    let mode = req.mode;
    let policy_files = read_policy_files(&req.policies)?;
    let opts = ApplyOptions {
        style: req.style,
        payload_repo: payload(s),
        dropin: mode == MirrorMode::DropIn,
    };
    let file = path.display().to_string();
    let mut report = ApplyReport {
        file: file.clone(),
        mode,
        dry_run: req.dry_run,
        cached: false,
        changes: vec![],
        classification: None,
        summary: None,
        warnings: vec![],
        verify: None,
        held: false,
    };

    if mode == MirrorMode::Verify {
        let text = read_text(path, MAX_CONF_BYTES)?;
        let policies = parse_policies(&policy_files)?;
        let eff = effective_of(path, &text, dropin_dir, &[])?;
        report.warnings.extend(policies.warnings.iter().cloned());
        for (f, p) in &eff.duplicates {
            report
                .warnings
                .push(format!("{f}: prefix {p:?} is defined more than once"));
        }
        report.verify = Some(engine::verify(&eff, &policies, &opts).map_err(engine_error)?);
        return Ok(report);
    }
    if mode == MirrorMode::Auto {
        return Err(RegistriesError::invalid(
            "internal: mirrors mode must be resolved before apply",
        ));
    }

    let target = afs::resolve_target(path).map_err(fs_error)?;
    let writing = !req.dry_run;
    if writing && !req.skip_daemon_check {
        refuse_if_daemon_manages(s, &target)?;
    }
    let _lock = if writing {
        Some(afs::lock(&afs::lock_path_for(&s.state_dir, &target), true).map_err(fs_error)?)
    } else {
        None
    };
    // Read under the lock: another writer may have finished just before we got it.
    let text = read_text(path, MAX_CONF_BYTES)?;
    // Nothing changed since the last successful apply (same file bytes, same policy bytes, same
    // options, same drop-ins): report it without parsing anything. A lost state file only costs
    // the full path below.
    let state_file = state_file_for(s, &target);
    if writing {
        let current = fingerprint(
            &text,
            &policy_files,
            mode,
            &opts,
            dropin_dir,
            &s.mirrors.dropin_name,
        );
        if let Some(last) = read_last_apply(&state_file) {
            if last.get("fingerprint").and_then(|f| f.as_str()) == Some(current.as_str()) {
                report.cached = true;
                report.summary = last
                    .get("summary")
                    .and_then(|v| serde_json::from_value(v.clone()).ok());
                report.warnings = last
                    .get("warnings")
                    .and_then(|w| serde_json::from_value(w.clone()).ok())
                    .unwrap_or_default();
                return Ok(report);
            }
        }
    }
    let policies = parse_policies(&policy_files)?;
    let out = engine::apply(&file, &text, &policies, &opts).map_err(engine_error)?;
    let mut warnings = out.warnings.clone();

    // What the drop-in directory will hold after this apply.
    let own_dropin_path = dropin_dir.join(&s.mirrors.dropin_name);
    let read_string = |p: &Path| -> Result<Option<String>, RegistriesError> {
        Ok(afs::read_optional(p)
            .map_err(fs_error)?
            .map(|b| String::from_utf8_lossy(&b).to_string()))
    };
    let is_ours = |t: &Option<String>| {
        t.as_deref()
            .map(|t| t.starts_with("# Managed by rhel-node-agent"))
            .unwrap_or(true)
    };
    let old_own = read_string(&own_dropin_path)?;
    let new_own = if mode == MirrorMode::DropIn {
        out.dropin.clone()
    } else {
        None
    };
    let search_path = dropin_dir.join(SEARCH_DROPIN_NAME);
    let old_search = read_string(&search_path)?;
    let new_search = match &out.search_dropin {
        Some(t) => Some(t.clone()),
        None if is_ours(&old_search) => None,
        None => old_search.clone(),
    };
    if out.search_dropin.is_some() && !is_ours(&old_search) && old_search != new_search {
        return Err(RegistriesError::refused(format!(
            "{}: exists and was not written by rhel-node-agent; refusing to replace it with containerRuntimeSearchRegistries",
            search_path.display()
        )));
    }
    let own_is_ours = is_ours(&old_own);
    if !own_is_ours && mode == MirrorMode::DropIn {
        return Err(RegistriesError::refused(format!(
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
    let new_dropins = load_dropins(dropin_dir, &replace)?;
    warnings.extend(shadow_warnings_for(
        &out.managed_scopes,
        &new_dropins,
        &own_name,
    ));

    if out.changed {
        report.changes.push(FileChange {
            path: path.clone(),
            old: Some(text.clone()),
            new: Some(out.output.clone()),
        });
    }
    if own_is_ours && old_own != new_own {
        report.changes.push(FileChange {
            path: own_dropin_path.clone(),
            old: old_own,
            new: new_own,
        });
    }
    if old_search != new_search {
        report.changes.push(FileChange {
            path: search_path,
            old: old_search,
            new: new_search,
        });
    }
    report.classification = Some(out.classification.clone());
    report.summary = Some(out.summary.clone());
    report.warnings = warnings;
    if req.dry_run {
        return Ok(report);
    }
    if req.hold_unsafe && report.changed() && !out.classification.safe {
        report.held = true;
        return Ok(report);
    }
    let ropts = ReplaceOptions {
        backup_dir: Some(s.state_dir.join("backup")),
        keep_backups: s.mirrors.backups,
    };
    // In drop-in mode the drop-in goes first: a crash between the two writes then leaves the
    // mirrors in place twice (harmless), never nowhere.
    let mut order: Vec<&FileChange> = report.changes.iter().collect();
    if mode == MirrorMode::DropIn {
        order.sort_by_key(|c| c.path == *path);
    }
    for c in order {
        match &c.new {
            Some(t) => {
                if let Some(dir) = c.path.parent() {
                    fs::create_dir_all(dir)
                        .map_err(|e| RegistriesError::failed(format!("{}: {e}", dir.display())))?;
                }
                afs::atomic_replace(&c.path, t.as_bytes(), &ropts).map_err(fs_error)?;
            }
            None => {
                if c.path.exists() {
                    fs::remove_file(&c.path).map_err(|e| {
                        RegistriesError::failed(format!("{}: remove: {e}", c.path.display()))
                    })?;
                    afs::fsync_dir(dropin_dir).map_err(fs_error)?;
                }
            }
        }
    }
    // Record the fingerprint of the state this apply left behind (its own output as the input).
    let after = fingerprint(
        &out.output,
        &policy_files,
        mode,
        &opts,
        dropin_dir,
        &s.mirrors.dropin_name,
    );
    let record = json!({"schema": 1, "fingerprint": after, "summary": out.summary, "warnings": report.warnings});
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
    Ok(report)
}

/// A missing file is invalid input (exit 2); a file that exists but cannot be read (permissions,
/// I/O errors) is a failure (exit 1).
fn io_read_error(path: &Path, e: std::io::Error) -> RegistriesError {
    let msg = format!("{}: {e}", path.display());
    if e.kind() == std::io::ErrorKind::NotFound {
        RegistriesError::invalid(msg)
    } else {
        RegistriesError::failed(msg)
    }
}

/// Read a text file the agent is asked to parse, refusing non-regular, huge or non-UTF-8 files.
pub fn read_text(path: &Path, max: u64) -> Result<String, RegistriesError> {
    let meta = fs::metadata(path).map_err(|e| io_read_error(path, e))?;
    if !meta.is_file() {
        return Err(RegistriesError::invalid(format!(
            "{}: not a regular file",
            path.display()
        )));
    }
    if meta.len() > max {
        return Err(RegistriesError::invalid(format!(
            "{}: {} bytes is larger than the {max} bytes accepted",
            path.display(),
            meta.len()
        )));
    }
    let bytes = fs::read(path).map_err(|e| io_read_error(path, e))?;
    String::from_utf8(bytes).map_err(|e| {
        RegistriesError::invalid(format!(
            "{}: not valid UTF-8 text (byte {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}

/// The policy files named by `paths` (directories expanded in lexical order), with their bytes.
pub fn read_policy_files(paths: &[PathBuf]) -> Result<Vec<(PathBuf, Vec<u8>)>, RegistriesError> {
    let mut out = Vec::new();
    for p in paths {
        let meta = fs::metadata(p)
            .map_err(|e| RegistriesError::invalid(format!("{}: {e}", p.display())))?;
        let files: Vec<PathBuf> = if meta.is_dir() {
            let mut v: Vec<PathBuf> = fs::read_dir(p)
                .map_err(|e| RegistriesError::invalid(format!("{}: {e}", p.display())))?
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
            let meta = fs::metadata(&f)
                .map_err(|e| RegistriesError::invalid(format!("{}: {e}", f.display())))?;
            if !meta.is_file() {
                return Err(RegistriesError::invalid(format!(
                    "{}: not a regular file",
                    f.display()
                )));
            }
            if meta.len() > MAX_POLICY_BYTES as u64 {
                return Err(RegistriesError::invalid(format!(
                    "{}: {} bytes is larger than the {MAX_POLICY_BYTES} bytes a policy file may have",
                    f.display(),
                    meta.len()
                )));
            }
            let bytes = fs::read(&f)
                .map_err(|e| RegistriesError::invalid(format!("{}: {e}", f.display())))?;
            out.push((f, bytes));
        }
    }
    Ok(out)
}

/// Parse policy files read by [`read_policy_files`], in order.
pub fn parse_policies(files: &[(PathBuf, Vec<u8>)]) -> Result<PolicySet, RegistriesError> {
    let mut set = PolicySet::default();
    for (f, bytes) in files {
        set.add_text(&f.display().to_string(), bytes)
            .map_err(RegistriesError::invalid)?;
    }
    Ok(set)
}

/// Read policies from files and directories, in the order given (directories in lexical order).
pub fn load_policies(paths: &[PathBuf]) -> Result<PolicySet, RegistriesError> {
    parse_policies(&read_policy_files(paths)?)
}

pub fn payload(s: &Settings) -> Option<String> {
    Some(s.mirrors.payload_repo.clone()).filter(|p| !p.is_empty())
}

/// The daemon's pid file: while the daemon runs it holds a lock on it and lists the files it manages.
pub fn daemon_pid_path(s: &Settings) -> PathBuf {
    s.runtime_dir.join("daemon.pid")
}

/// Refuse (exit 3) when a running daemon manages `target`.
pub fn refuse_if_daemon_manages(s: &Settings, target: &Path) -> Result<(), RegistriesError> {
    let pid_file = daemon_pid_path(s);
    if !afs::is_locked(&pid_file) {
        return Ok(());
    }
    let managed = fs::read_to_string(&pid_file).unwrap_or_default();
    let target_s = target.display().to_string();
    if managed.lines().skip(1).any(|l| l.trim() == target_s) {
        return Err(RegistriesError::refused(format!(
            "{target_s}: managed by the running rhel-node-agent daemon (pid {}); use `rhel-node-agent reconcile`, or --force-offline",
            managed.lines().next().unwrap_or("?").trim()
        )));
    }
    Ok(())
}

pub fn unified_diff(name: &str, old: &str, new: &str) -> String {
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
pub fn load_dropins(
    dir: &Path,
    replace: &[(String, Option<String>)],
) -> Result<Vec<LoadedConf>, RegistriesError> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(e) => e
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.ends_with(".conf"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
        Err(e) => return Err(RegistriesError::failed(format!("{}: {e}", dir.display()))),
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
        out.push(containers::load_dropin(&label, &text).map_err(RegistriesError::invalid)?);
    }
    Ok(out)
}

pub fn effective_of(
    main_path: &Path,
    main_text: &str,
    dropin_dir: &Path,
    replace: &[(String, Option<String>)],
) -> Result<EffectiveConf, RegistriesError> {
    let main = containers::load(&main_path.display().to_string(), main_text)
        .map_err(RegistriesError::invalid)?;
    let dropins = load_dropins(dropin_dir, replace)?;
    Ok(containers::merge_effective(main, dropins))
}

pub fn shadow_warnings(main_text: &str, eff_dropins: &[LoadedConf], own: &str) -> Vec<String> {
    let Ok(doc) = main_text.parse::<toml_edit::DocumentMut>() else {
        return vec![];
    };
    shadow_warnings_for(&document::managed_scopes(&doc), eff_dropins, own)
}

/// Drop-ins (other than the agent's own) whose entries replace entries the agent manages.
pub fn shadow_warnings_for(
    managed: &[String],
    eff_dropins: &[LoadedConf],
    own: &str,
) -> Vec<String> {
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

pub fn read_last_apply(path: &Path) -> Option<serde_json::Value> {
    let bytes = fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A digest of everything an apply depends on: agent version, options, the registries.conf bytes,
/// every policy file (name and bytes, in order) and every drop-in (name and bytes).
pub fn fingerprint(
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
