//! registries.conf on disk: reading policies and files safely, running the mirror engine, and
//! writing the results durably (main file, the agent's drop-in, the search-registries drop-in),
//! under the lock the CLI and the daemon share. The CLI prints what [`apply_mirrors`] reports; the
//! daemon calls the same function, so both behave identically.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;

use crate::adapters::fs::{self as afs, FsError, ReplaceOptions};
use crate::adapters::policy_scan::{scan, CachedFile, KeptIndex, Scan, ScannedInput, SeenChanges};
use crate::config::{MirrorMode, Settings};
use crate::core::mirrors::classify::Classification;
use crate::core::mirrors::containers::{self, EffectiveConf, LoadedConf};
use crate::core::mirrors::engine::{
    self, ApplyOptions, ManagedSummary, VerifyReport, SEARCH_DROPIN_NAME,
};
use crate::core::mirrors::incremental::{self, Prepared};
use crate::core::mirrors::policy::PolicySet;
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
    /// Contents before (`None`: did not exist). Shared: the daemon keeps it for a rollback and
    /// its cache keeps the same text, so a 1 MB file is not copied.
    pub old: Option<Arc<String>>,
    /// Contents after (`None`: removed).
    pub new: Option<Arc<String>>,
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
    /// Computed incrementally from the daemon's kept state (only the changed policy files were
    /// parsed, only the affected scopes re-rendered).
    pub incremental: bool,
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
                    c.old.as_deref().map(String::as_str).unwrap_or(""),
                    c.new.as_deref().map(String::as_str).unwrap_or(""),
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

/// What the daemon keeps between reconciles so that a change of one policy file re-parses that
/// file only and re-renders only the scopes it touches ([`incremental`]). Valid only while the
/// main file still holds exactly the text the last apply left; anything else takes the full path.
#[derive(Debug, Default)]
pub struct MirrorCache {
    state: Option<CacheState>,
    /// What the daemon's watches saw change since the kept files were scanned (`None`: not
    /// known, every file is `stat`ed).
    seen: Option<SeenChanges>,
    /// The owner reports every change with [`MirrorCache::note`] ([`MirrorCache::with_watches`]).
    watched: bool,
}

#[derive(Debug)]
struct CacheState {
    /// Target, mode and options the state was computed for.
    key: String,
    /// Each policy file's bytes, the set parsed from that file alone, and its stamp.
    files: Vec<CachedFile>,
    /// The `--policies` paths the files came from (directory identities and file counts).
    inputs: Vec<ScannedInput>,
    prepared: Prepared,
    /// `files` come from this apply's scan (what the watches report from now on is relative to
    /// it), not from an earlier one.
    scanned_now: bool,
}

impl MirrorCache {
    /// An empty cache: the first reconcile takes the full path and fills it.
    pub fn new() -> MirrorCache {
        MirrorCache::default()
    }

    /// A cache whose owner watches the policy directories and reports what its watches see with
    /// [`MirrorCache::note`] before each apply: then a policy file the watches did not name is
    /// not even `stat`ed (in a directory whose entries did not change). Files reached through a
    /// symbolic link, and directories that are links, are always looked at.
    pub fn with_watches() -> MirrorCache {
        MirrorCache {
            watched: true,
            ..MirrorCache::default()
        }
    }

    /// Tell the cache what the file watches saw since the last apply. Without this (or after
    /// [`SeenChanges::everything`]) the next apply `stat`s every policy file; with it, only the
    /// files named here are looked at in directories whose entries did not change.
    pub fn note(&mut self, seen: SeenChanges) {
        if let Some(s) = &mut self.seen {
            s.merge(seen);
            if s.everything {
                self.seen = None;
            }
        }
    }
}

fn cache_key(target: &Path, mode: MirrorMode, opts: &ApplyOptions, s: &Settings) -> String {
    format!(
        "{}|{mode:?}|{:?}|{:?}|{}",
        target.display(),
        opts.style,
        opts.payload_repo,
        s.mirrors.dropin_name
    )
}

/// Parse each policy file on its own (what the cache keeps and compares). `reuse` supplies the
/// sets of files whose path and bytes are unchanged, so only changed files are parsed. Any
/// error: `None` (the full path then reports it with its exact message).
fn parse_per_file(scan: &Scan, reuse: &[CachedFile]) -> Option<Vec<Arc<PolicySet>>> {
    let mut lookup = KeptIndex::new(reuse);
    let mut out = Vec::with_capacity(scan.files.len());
    for (i, ((p, bytes), stamp)) in scan.files.iter().zip(&scan.stamps).enumerate() {
        out.push(match lookup.find(i, p) {
            // Same stamp: the bytes were taken from the cache, no need to compare them.
            Some(f) if f.stamp.still(stamp) || f.bytes == *bytes => Arc::clone(&f.set),
            _ => {
                let mut set = PolicySet::default();
                set.add_text(&p.display().to_string(), bytes).ok()?;
                Arc::new(set)
            }
        });
    }
    Some(out)
}

/// The per-file sets joined in order: the set [`parse_policies`] gives for the same files.
fn join(sets: &[Arc<PolicySet>]) -> Option<PolicySet> {
    let mut all = PolicySet::default();
    for set in sets {
        all.append(set).ok()?;
    }
    Some(all)
}

/// The rendered result the rest of an apply works from, from the full or the incremental path.
struct Rendered {
    output: Arc<String>,
    changed: bool,
    dropin: Option<String>,
    search_dropin: Option<String>,
    classification: Classification,
    warnings: Vec<String>,
    summary: ManagedSummary,
    /// `None`: ask the kept incremental state (computed only when a drop-in could hide them).
    managed_scopes: Option<Vec<String>>,
}

/// Apply (or verify, or dry-run) mirror policies on disk. The one implementation behind
/// `mirrors apply` and the daemon's reconcile.
pub fn apply_mirrors(s: &Settings, req: &ApplyRequest) -> Result<ApplyReport, RegistriesError> {
    apply_mirrors_cached(s, req, None)
}

/// [`apply_mirrors`] with the daemon's [`MirrorCache`]: the same result, computed incrementally
/// when only a few sources changed since the last apply this process made.
pub fn apply_mirrors_cached(
    s: &Settings,
    req: &ApplyRequest,
    mut cache: Option<&mut MirrorCache>,
) -> Result<ApplyReport, RegistriesError> {
    let path = &req.registries_conf;
    let dropin_dir = &req.dropin_dir;
    let mode = req.mode;
    // Files whose stamp is unchanged since the last apply this process made are not read again,
    // and files the daemon's watches saw no change of are not even looked at.
    let seen = cache.as_deref_mut().and_then(|c| c.seen.take());
    let (kept_files, kept_inputs) = cache
        .as_deref()
        .and_then(|c| c.state.as_ref())
        .map(|st| (st.files.as_slice(), st.inputs.as_slice()))
        .unwrap_or((&[], &[]));
    let mut scanned = scan(&req.policies, kept_files, kept_inputs, seen.as_ref())?;
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
        incremental: false,
    };

    if mode == MirrorMode::Verify {
        let text = read_text(path, MAX_CONF_BYTES)?;
        let policies = parse_policies(&scanned.files)?;
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
    // The kept state usually describes the file as it is: then it is compared, not read into a
    // new 1 MB buffer — on a second thread, while the changed policy files are parsed (each is
    // about a fifth of a 20-source change).
    let key = cache_key(&target, mode, &opts, s);
    let kept_text = cache
        .as_deref()
        .and_then(|c| c.state.as_ref())
        .filter(|st| st.key == key)
        .map(|st| st.prepared.shared_text());
    let mut parsed: Option<Option<Vec<Arc<PolicySet>>>> = None;
    let known_text = kept_text.filter(|t| {
        let same = || afs::file_equals(path, t.as_bytes()).unwrap_or(false);
        std::thread::scope(
            |sc| match std::thread::Builder::new().spawn_scoped(sc, same) {
                Ok(compare) => {
                    parsed = Some(parse_per_file(&scanned, kept_files));
                    compare.join().unwrap_or(false)
                }
                Err(_) => same(),
            },
        )
    });
    let text: Arc<String> = match known_text {
        Some(t) => t,
        None => Arc::new(read_text(path, MAX_CONF_BYTES)?),
    };
    // Nothing changed since the last successful apply (same file bytes, same policy bytes, same
    // options, same drop-ins): report it without parsing anything. A lost state file only costs
    // the full path below.
    let state_file = state_file_for(s, &target);
    let kept = cache
        .as_deref_mut()
        .and_then(|c| c.state.take())
        .filter(|st| st.key == key && Arc::ptr_eq(&st.prepared.shared_text(), &text));
    if writing && kept.is_none() {
        let current = fingerprint(
            &text,
            &scanned.files,
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
    let mut next_state: Option<CacheState> = None;
    // The state describing the text on disk when nothing is written: the update below moves the
    // cached state forward, so a dry run keeps a copy of it. A held change keeps none (copying the
    // state on every reconcile would cost more than the full path a held change takes anyway).
    let mut unchanged_state: Option<CacheState> = None;
    let mut incremental = false;
    let mut out: Option<Rendered> = None;
    if let Some(mut st) = kept {
        let sets = parsed
            .take()
            .unwrap_or_else(|| parse_per_file(&scanned, &st.files));
        if let Some(sets) = sets {
            let before = req.dry_run.then(|| st.prepared.clone());
            if let Some(upd) = st.prepared.update(&sets, &opts) {
                incremental = true;
                report.incremental = true;
                out = Some(Rendered {
                    output: upd.output,
                    changed: upd.changed,
                    dropin: None,
                    search_dropin: upd.search_dropin,
                    classification: upd.classification,
                    warnings: upd.warnings,
                    summary: upd.summary,
                    managed_scopes: None,
                });
                unchanged_state = before.map(|prepared| CacheState {
                    key: key.clone(),
                    files: st.files.clone(),
                    inputs: st.inputs.clone(),
                    prepared,
                    scanned_now: false,
                });
                // (The scan is not needed again on this path: it moves into the cache.)
                let (files, inputs) = std::mem::take(&mut scanned).keep(sets);
                next_state = Some(CacheState {
                    key: key.clone(),
                    files,
                    inputs,
                    prepared: st.prepared,
                    scanned_now: true,
                });
            }
        }
    }
    let out = match out {
        Some(o) => o,
        None => {
            // (The sets parsed above reuse the kept files' sets; a file's set depends on its bytes
            // only, not on registries.conf.)
            let per_file = cache
                .is_some()
                .then(|| {
                    parsed
                        .take()
                        .unwrap_or_else(|| parse_per_file(&scanned, &[]))
                })
                .flatten()
                .and_then(|sets| join(&sets).map(|all| (all, sets)));
            let (o, prepared, sets) = match per_file {
                Some((policies, sets)) => {
                    let (o, prepared) = incremental::apply_and_prepare(
                        &file,
                        &text,
                        &policies,
                        sets.clone(),
                        &opts,
                    )
                    .map_err(engine_error)?;
                    (o, prepared, sets)
                }
                None => {
                    let policies = parse_policies(&scanned.files)?;
                    let o = engine::apply(&file, &text, &policies, &opts).map_err(engine_error)?;
                    (o, None, vec![])
                }
            };
            next_state = prepared.map(|prepared| {
                let (files, inputs) = scanned.clone().keep(sets);
                CacheState {
                    key: key.clone(),
                    files,
                    inputs,
                    prepared,
                    scanned_now: true,
                }
            });
            Rendered {
                output: Arc::new(o.output),
                changed: o.changed,
                dropin: o.dropin,
                search_dropin: o.search_dropin,
                classification: o.classification,
                warnings: o.warnings,
                summary: o.summary,
                managed_scopes: Some(o.managed_scopes),
            }
        }
    };
    if !out.changed {
        unchanged_state = next_state.take();
    }
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
    let own_suffix = format!("/{own_name}");
    if new_dropins
        .iter()
        .any(|d| !d.file.ends_with(&own_suffix) && !d.registries.is_empty())
    {
        let scopes = match &out.managed_scopes {
            Some(v) => v.clone(),
            None => next_state
                .as_ref()
                .or(unchanged_state.as_ref())
                .map(|st| st.prepared.managed_scopes())
                .unwrap_or_default(),
        };
        warnings.extend(shadow_warnings_for(&scopes, &new_dropins, &own_name));
    }

    if out.changed {
        report.changes.push(FileChange {
            path: path.clone(),
            old: Some(Arc::clone(&text)),
            new: Some(Arc::clone(&out.output)),
        });
    }
    if own_is_ours && old_own != new_own {
        report.changes.push(FileChange {
            path: own_dropin_path.clone(),
            old: old_own.map(Arc::new),
            new: new_own.map(Arc::new),
        });
    }
    if old_search != new_search {
        report.changes.push(FileChange {
            path: search_path,
            old: old_search.map(Arc::new),
            new: new_search.map(Arc::new),
        });
    }
    report.classification = Some(out.classification.clone());
    report.summary = Some(out.summary.clone());
    report.warnings = warnings;
    let put_back = |cache: Option<&mut MirrorCache>, st: Option<CacheState>| {
        if let Some(c) = cache {
            // What the watches report from now on is relative to the files kept here; kept
            // files from an earlier scan still owe what was reported since that scan.
            c.seen = match &st {
                _ if !c.watched => None,
                Some(st) if st.scanned_now => Some(SeenChanges::default()),
                Some(_) => seen.clone(),
                None => None,
            };
            c.state = st;
        }
    };
    if req.dry_run {
        put_back(cache, unchanged_state);
        return Ok(report);
    }
    if req.hold_unsafe && report.changed() && !out.classification.safe {
        report.held = true;
        put_back(cache, unchanged_state);
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
    put_back(
        cache,
        if out.changed {
            next_state
        } else {
            unchanged_state
        },
    );
    if incremental {
        // The fingerprint record describes an earlier state; it only ever matches identical
        // inputs, so it stays valid and is not rewritten here (that would cost a second fsync).
        return Ok(report);
    }
    // Record the fingerprint of the state this apply left behind (its own output as the input).
    let after = fingerprint(
        &out.output,
        &scanned.files,
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
    scan(paths, &[], &[], None).map(|scan| {
        scan.files
            .into_iter()
            .map(|(p, b)| (p, b.to_vec()))
            .collect()
    })
}

/// Parse policy files read by [`read_policy_files`], in order.
pub fn parse_policies<B: AsRef<[u8]>>(
    files: &[(PathBuf, B)],
) -> Result<PolicySet, RegistriesError> {
    let mut set = PolicySet::default();
    for (f, bytes) in files {
        set.add_text(&f.display().to_string(), bytes.as_ref())
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
pub fn fingerprint<B: AsRef<[u8]>>(
    text: &str,
    policies: &[(PathBuf, B)],
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
        field(b.as_ref());
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
