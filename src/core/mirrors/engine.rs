//! The mirror engine's entry points: apply (in place or as a drop-in) and verify.

use toml_edit::DocumentMut;

use super::classify::{classify, Classification, ConfView};
use super::containers::{self, EffectiveConf};
use super::document;
use super::merge::{self, MergedMirrorSets};
use super::model::Registry;
use super::policy::PolicySet;
use super::render::{render_entries, RenderInput};
use super::scope::is_nested;
use super::{MirrorError, Style};

/// Name of the search-registries drop-in MCO writes (registries-spec §7).
pub const SEARCH_DROPIN_NAME: &str = "01-image-searchRegistries.conf";

/// How to render.
#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    /// OpenShift release behaviour to reproduce.
    pub style: Style,
    /// Release payload repository for MCO's blocked-list filter (spec §1.5); `None` = no filter.
    pub payload_repo: Option<String>,
    /// Drop-in mode: render the changed entries into a separate file instead of the main file.
    pub dropin: bool,
}

/// Counts of what the agent manages after an apply, for reports and `STATUS=`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ManagedSummary {
    /// Sources with mirrors (digest and tag buckets).
    pub sources: usize,
    /// Registry entries the agent created.
    pub entries_added: usize,
    /// Administrator entries the agent changed (flags or mirrors).
    pub entries_changed: usize,
    /// Mirrors the agent wrote (including propagated ones).
    pub mirrors: usize,
}

/// The result of [`apply`]: new file contents plus everything the caller needs to report.
#[derive(Debug, Clone)]
pub struct ApplyOutcome {
    /// The new registries.conf text (in drop-in mode: the main file without managed content).
    pub output: String,
    /// `output` differs from the input text.
    pub changed: bool,
    /// The drop-in file contents in drop-in mode (`None` when no entry is managed).
    pub dropin: Option<String>,
    /// The search-registries drop-in contents, when `containerRuntimeSearchRegistries` is set.
    pub search_dropin: Option<String>,
    /// MCO's drain/no-drain verdict for the change of the effective entries.
    pub classification: Classification,
    /// Non-fatal findings: admin keys in managed tables, ignored policies, filtered blocked scopes.
    pub warnings: Vec<String>,
    /// What is managed now.
    pub summary: ManagedSummary,
    /// The entries after rendering (model), for verify-style comparisons.
    pub entries: Vec<Registry>,
    /// Scopes (as containers/image keys them) of the entries the agent added or changed: a drop-in
    /// with the same prefix would hide them.
    pub managed_scopes: Vec<String>,
}

/// Header written at the top of the drop-in the agent owns.
pub const DROPIN_HEADER: &str = "# Managed by rhel-node-agent (mirrors.mode = \"drop-in\"): this whole file is rewritten.\n# Entries here replace the entries with the same prefix in registries.conf.\n";

/// toml_edit writes `\n`; a file written with CRLF line endings throughout keeps them. (A file that
/// mixes both is normalised to `\n` when the agent writes it.)
fn line_ending_restore(original: &str, out: String) -> String {
    let lf = original.matches('\n').count();
    let crlf = original.matches("\r\n").count();
    if crlf > 0 && crlf == lf && !out.contains('\r') {
        out.replace('\n', "\r\n")
    } else {
        out
    }
}

/// Strip the payload repository down to its name (no tag, no digest).
fn repo_name(reference: &str) -> &str {
    let no_digest = reference.split('@').next().unwrap_or(reference);
    match no_digest.rfind(':') {
        Some(i) if !no_digest[i..].contains('/') => &no_digest[..i],
        _ => no_digest,
    }
}

/// MCO's `getValidBlockedAndAllowedRegistries` (registries-spec §1.5) for registries.conf.
fn filter_blocked(
    policies: &PolicySet,
    sets: &MergedMirrorSets,
    payload: Option<&str>,
    warnings: &mut Vec<String>,
) -> Vec<String> {
    let image = policies.image.as_ref();
    let blocked: Vec<String> = image.and_then(|i| i.blocked.clone()).unwrap_or_default();
    let Some(payload) = payload.filter(|p| !p.is_empty()) else {
        return blocked;
    };
    let payload = repo_name(payload);
    let insecure: Vec<String> = image.and_then(|i| i.insecure.clone()).unwrap_or_default();
    let digest_only = MergedMirrorSets {
        digest: sets.digest.clone(),
        tag: vec![],
    };
    let mut out = Vec::new();
    for scope in &blocked {
        if !is_nested(payload, scope) {
            out.push(scope.clone());
            continue;
        }
        let input = RenderInput {
            sets: &digest_only,
            insecure: &insecure,
            blocked: &blocked,
            style: Style::Current,
        };
        let usable = render_entries(vec![], &input)
            .ok()
            .map(|entries| {
                let eff = EffectiveConf {
                    registries: entries
                        .into_iter()
                        .map(|mut r| {
                            if r.prefix.is_empty() {
                                r.prefix = r.location.clone();
                            }
                            containers::LoadedRegistry {
                                registry: r,
                                line: None,
                                file: String::new(),
                            }
                        })
                        .collect(),
                    ..EffectiveConf::default()
                };
                match eff.find(payload) {
                    Some(lr) => lr
                        .registry
                        .mirrors
                        .iter()
                        .filter(|m| m.pull_from_mirror != super::model::TAG_ONLY)
                        .any(|m| {
                            let pulled = format!(
                                "{}{}",
                                m.location,
                                &payload[lr.registry.prefix.len().min(payload.len())..]
                            );
                            !blocked.iter().any(|b| is_nested(&pulled, b))
                        }),
                    None => false,
                }
            })
            .unwrap_or(false);
        if usable {
            warnings.push(format!("{scope:?} matches the payload repository, but will add it to the list of blocked registries as there are mirror rules configured for it"));
            out.push(scope.clone());
        } else {
            warnings.push(format!(
                "error adding [{scope:?}] to blocked registries, cannot block the repository being used by the payload; it is left out"
            ));
        }
    }
    out
}

/// Render `policies` into the registries.conf `text` (file name `file`, for messages).
///
/// The agent's earlier changes are removed first (by their markers), then MCO's algorithm runs on
/// the administrator's own file, and the result is validated as containers/image would load it.
/// Nothing is written here; the caller writes `output` only when `changed`.
pub fn apply(
    file: &str,
    text: &str,
    policies: &PolicySet,
    opts: &ApplyOptions,
) -> Result<ApplyOutcome, MirrorError> {
    apply_inner(file, text, policies, opts).map(|(out, _)| out)
}

/// What [`apply`] computed on the way that [`super::incremental::Prepared`] keeps for the next
/// change instead of recomputing it.
#[derive(Debug, Clone)]
pub(crate) struct Internals {
    /// The administrator's entries (the document without managed content), raw as decoded.
    pub base_entries: Vec<Registry>,
    /// The merged buckets.
    pub sets: MergedMirrorSets,
    /// `blockedRegistries` after the payload filter.
    pub blocked: Vec<String>,
    /// `insecureRegistries`.
    pub insecure: Vec<String>,
    /// No administrator content inside managed tables, no v1 base, no CRLF, no payload filter at
    /// work: the shapes the incremental path reproduces exactly.
    pub simple: bool,
    /// The drain verdict on `unqualified-search-registries` alone, when it is unsafe.
    pub search_verdict: Option<Classification>,
}

pub(crate) fn apply_inner(
    file: &str,
    text: &str,
    policies: &PolicySet,
    opts: &ApplyOptions,
) -> Result<(ApplyOutcome, Internals), MirrorError> {
    // Syntax and types first, as MCO decodes the base before validating the policies. The decoded
    // input is also the "before" side of the drain classification.
    let old = containers::decode(file, text).map_err(MirrorError::InvalidBase)?;
    let mut doc: DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        MirrorError::InvalidBase(containers::LoadError {
            file: file.into(),
            line: None,
            what: "TOML syntax error".into(),
            message: e.message().to_string(),
        })
    })?;
    let strip = document::strip_managed(&mut doc, file)?;
    let base_raw = if strip.is_empty() {
        old.clone()
    } else {
        let base_text = line_ending_restore(text, doc.to_string());
        containers::decode(file, &base_text).map_err(MirrorError::InvalidBase)?
    };
    // MCO edits the raw decoded values; containers/image validates the post-processed ones.
    let mut base_conf = base_raw.clone();
    containers::post_process(&mut base_conf).map_err(MirrorError::InvalidBase)?;
    let mut warnings: Vec<String> = policies.warnings.clone();
    if !strip.admin_comments.is_empty() {
        warnings.push(format!(
            "{} comment line(s) written inside tables the agent manages were moved to the end of {file}",
            strip.admin_comments.len()
        ));
    }
    for (key, line) in &base_conf.unknown_keys {
        warnings.push(format!(
            "{file}{}: {key}: unknown key, ignored by containers/image",
            line.map(|l| format!(":{l}")).unwrap_or_default()
        ));
    }
    merge::validate(policies, opts.style)?;
    let sets = merge::merge(policies);
    let blocked = filter_blocked(policies, &sets, opts.payload_repo.as_deref(), &mut warnings);
    let insecure: Vec<String> = policies
        .image
        .as_ref()
        .and_then(|i| i.insecure.clone())
        .unwrap_or_default();
    let base_entries: Vec<Registry> = base_raw
        .registries
        .iter()
        .map(|r| r.registry.clone())
        .collect();
    let rendered = if policies.is_noop() {
        base_entries.clone()
    } else {
        let input = RenderInput {
            sets: &sets,
            insecure: &insecure,
            blocked: &blocked,
            style: opts.style,
        };
        render_entries(base_entries.clone(), &input).map_err(|e| locate(e, policies))?
    };
    let summary = summarize(&sets, &base_entries, &rendered);

    let (output, dropin) = if opts.dropin {
        let changed: Vec<Registry> = rendered
            .iter()
            .enumerate()
            .filter(|(i, r)| base_entries.get(*i) != Some(*r))
            .map(|(_, r)| r.clone())
            .collect();
        let dropin = if changed.is_empty() {
            None
        } else {
            Some(document::render_dropin(&changed, DROPIN_HEADER))
        };
        if !strip.admin_keys.is_empty() {
            warnings.push(
                "keys added by hand inside formerly managed tables were kept as unmanaged entries"
                    .into(),
            );
            document::keep_orphaned_admin_keys(&mut doc, &strip.admin_keys);
            for k in strip.admin_keys.iter().filter(|k| k.mirror.is_some()) {
                warnings.push(format!(
                    "registry {:?}: key {:?} added by hand inside managed mirror {:?} was dropped with that mirror",
                    k.scope,
                    k.key,
                    k.mirror.as_deref().unwrap_or("")
                ));
            }
        }
        warnings.extend(document::keep_admin_mirrors(
            &mut doc,
            strip.admin_mirrors.clone(),
        ));
        let out = if strip.is_empty() {
            text.to_string()
        } else {
            line_ending_restore(text, doc.to_string())
        };
        (out, dropin)
    } else {
        // The agent's new tables are written as text unless administrator content has to be put
        // back into them (the stand-in is then never needed: see document::apply_changes).
        let as_text = strip.admin_keys.is_empty()
            && strip.admin_mirrors.is_empty()
            && strip.agent_values.is_empty()
            && !document::has_placeholder(text);
        document::apply_changes(&mut doc, file, &base_entries, &rendered, as_text)?;
        warnings.extend(document::replaced_agent_values(&doc, &strip.agent_values));
        warnings.extend(document::keep_admin_mirrors(
            &mut doc,
            strip.admin_mirrors.clone(),
        ));
        let lost = document::reattach_admin_keys(&mut doc, strip.admin_keys.clone());
        for k in &strip.admin_keys {
            if !lost
                .iter()
                .any(|l| l.scope == k.scope && l.key == k.key && l.mirror == k.mirror)
            {
                warnings.push(format!(
                    "registry {:?}: key {:?} was added by hand inside a managed table; kept",
                    k.scope, k.key
                ));
            }
        }
        for k in lost.iter().filter(|k| k.mirror.is_some()) {
            warnings.push(format!(
                "registry {:?}: key {:?} added by hand inside managed mirror {:?} was dropped with that mirror",
                k.scope,
                k.key,
                k.mirror.as_deref().unwrap_or("")
            ));
        }
        for kept in document::keep_orphaned_admin_keys(&mut doc, &lost) {
            warnings.push(format!(
                "{kept}: added by hand inside a managed table that is no longer managed; kept as an unmanaged entry"
            ));
        }
        let unchanged = strip.is_empty()
            && rendered == base_entries
            && lost.is_empty()
            && strip.admin_mirrors.is_empty();
        let out = if unchanged {
            text.to_string()
        } else if as_text {
            let new = rendered.get(base_entries.len()..).unwrap_or(&[]);
            line_ending_restore(text, document::serialize_with_new_entries(&mut doc, new))
        } else {
            line_ending_restore(text, doc.to_string())
        };
        (out, None)
    };

    // Never produce a file containers/image would reject. The main file is the validated base
    // plus the rendered entries (the property tests prove the written text decodes to exactly
    // this model), so the model is validated instead of parsing the text a third time.
    let mut new_main = base_conf.clone();
    new_main.registries = if opts.dropin {
        base_raw.registries.clone()
    } else {
        rendered
            .iter()
            .enumerate()
            .map(|(i, r)| containers::LoadedRegistry {
                registry: r.clone(),
                line: base_raw.registries.get(i).and_then(|b| b.line),
                file: file.to_string(),
            })
            .collect()
    };
    if !strip.admin_keys.is_empty() || !strip.admin_mirrors.is_empty() || base_raw.was_v1 {
        // Rare shapes (kept admin tables, v1 files): validate the real text.
        new_main = containers::load(file, &output).map_err(MirrorError::InvalidResult)?;
    } else {
        containers::post_process(&mut new_main).map_err(MirrorError::InvalidResult)?;
    }
    if let Some(d) = &dropin {
        containers::load_dropin("drop-in", d).map_err(MirrorError::InvalidResult)?;
    }
    let search_dropin = policies
        .image
        .as_ref()
        .and_then(|i| i.search.as_ref())
        .map(|list| render_search_dropin(list));
    if let Some(s) = &search_dropin {
        containers::load_dropin(SEARCH_DROPIN_NAME, s).map_err(MirrorError::InvalidResult)?;
    }
    let old_view: Vec<Registry> = old.registries.into_iter().map(|r| r.registry).collect();
    let old_search = old.unqualified_search_registries.unwrap_or_default();
    let new_search = new_main
        .unqualified_search_registries
        .clone()
        .unwrap_or_default();
    let classification = classify(
        &ConfView {
            search: &old_search,
            registries: &old_view,
        },
        &ConfView {
            search: &new_search,
            registries: &rendered,
        },
    );
    let managed_scopes = rendered
        .iter()
        .enumerate()
        .filter(|(i, r)| base_entries.get(*i) != Some(*r))
        .map(|(_, r)| r.scope().trim_end_matches('/').to_string())
        .collect();
    let simple = strip.admin_keys.is_empty()
        && strip.agent_values.is_empty()
        && strip.admin_mirrors.is_empty()
        && strip.admin_comments.is_empty()
        && !base_raw.was_v1
        && !text.contains('\r')
        && (opts.payload_repo.as_deref().unwrap_or("").is_empty()
            || policies
                .image
                .as_ref()
                .and_then(|i| i.blocked.as_ref())
                .is_none());
    let search_verdict = Some(classify(
        &ConfView {
            search: &old_search,
            registries: &[],
        },
        &ConfView {
            search: &new_search,
            registries: &[],
        },
    ))
    .filter(|c| !c.safe);
    let internals = Internals {
        base_entries,
        sets,
        blocked,
        insecure,
        simple,
        search_verdict,
    };
    Ok((
        ApplyOutcome {
            managed_scopes,
            changed: output != text,
            output,
            dropin,
            search_dropin,
            classification,
            warnings,
            summary,
            entries: rendered,
        },
        internals,
    ))
}

fn summarize(sets: &MergedMirrorSets, base: &[Registry], rendered: &[Registry]) -> ManagedSummary {
    let mut s = ManagedSummary {
        sources: sets.digest.len() + sets.tag.len(),
        ..ManagedSummary::default()
    };
    for (i, r) in rendered.iter().enumerate() {
        match base.get(i) {
            Some(b) => {
                if b != r {
                    s.entries_changed += 1;
                    s.mirrors += r.mirrors.len() - b.mirrors.len();
                }
            }
            None => {
                s.entries_added += 1;
                s.mirrors += r.mirrors.len();
            }
        }
    }
    s
}

/// Point a renderer error at the policy entry it is about (MCO's message names only the scope).
fn locate(e: MirrorError, policies: &PolicySet) -> MirrorError {
    if let MirrorError::Render(msg) = &e {
        let entry = policies
            .entries
            .iter()
            .find(|en| msg.ends_with(&format!("{:?}", en.source)));
        if let Some(en) = entry {
            return MirrorError::Validation {
                location: format!("{}: {}.source", en.origin, en.path),
                message: format!(
                    "{msg} (a registries.conf entry nested in this wildcard source has no mirrors of its own, e.g. a blocked or insecure scope)"
                ),
            };
        }
    }
    e
}

/// The search-registries drop-in (MCO `updateSearchRegistriesConfig`).
pub fn render_search_dropin(list: &[String]) -> String {
    let mut doc = DocumentMut::new();
    let mut arr = toml_edit::Array::new();
    for s in list {
        arr.push(s.as_str());
    }
    doc.insert("unqualified-search-registries", toml_edit::value(arr));
    format!("# Managed by rhel-node-agent from Image/cluster spec.registrySources.containerRuntimeSearchRegistries.\n{doc}")
}

/// One difference found by [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Difference {
    /// The scope (prefix) of the entry.
    pub scope: String,
    /// What differs, in words.
    pub message: String,
}

/// The result of [`verify`].
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VerifyReport {
    /// Scopes the policies produce.
    pub checked: usize,
    /// Every difference between the effective configuration and the policies.
    pub differences: Vec<Difference>,
}

fn describe_mirrors(ms: &[super::model::Mirror]) -> String {
    let parts: Vec<String> = ms
        .iter()
        .map(|m| {
            let mut s = m.location.clone();
            let mut flags = Vec::new();
            if !m.pull_from_mirror.is_empty() {
                flags.push(m.pull_from_mirror.clone());
            }
            if m.insecure {
                flags.push("insecure".into());
            }
            if !flags.is_empty() {
                s.push_str(&format!(" ({})", flags.join(", ")));
            }
            s
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// Compare the effective configuration (main file + drop-ins, as containers/image loads it) with
/// what the policies require, as MCO would render them onto its template: for every scope the
/// policies produce, the effective entry must have exactly those mirrors, in order, and flags.
pub fn verify(
    effective: &EffectiveConf,
    policies: &PolicySet,
    opts: &ApplyOptions,
) -> Result<VerifyReport, MirrorError> {
    merge::validate(policies, opts.style)?;
    let sets = merge::merge(policies);
    let mut warnings = Vec::new();
    let blocked = filter_blocked(policies, &sets, opts.payload_repo.as_deref(), &mut warnings);
    let insecure: Vec<String> = policies
        .image
        .as_ref()
        .and_then(|i| i.insecure.clone())
        .unwrap_or_default();
    let desired = if policies.is_noop() {
        vec![]
    } else {
        render_entries(
            vec![],
            &RenderInput {
                sets: &sets,
                insecure: &insecure,
                blocked: &blocked,
                style: opts.style,
            },
        )
        .map_err(|e| locate(e, policies))?
    };
    let mut report = VerifyReport {
        checked: desired.len(),
        differences: vec![],
    };
    for want in &desired {
        let scope = want.scope().trim_end_matches('/').to_string();
        let mut diff = |message: String| {
            report.differences.push(Difference {
                scope: scope.clone(),
                message,
            })
        };
        let Some(have) = effective
            .registries
            .iter()
            .find(|r| r.registry.prefix == scope)
        else {
            diff(format!(
                "missing: want an entry with mirrors {}",
                describe_mirrors(&want.mirrors)
            ));
            continue;
        };
        let h = &have.registry;
        let want_mirrors: Vec<super::model::Mirror> = want
            .mirrors
            .iter()
            .map(|m| super::model::Mirror {
                location: m.location.trim_end_matches('/').to_string(),
                ..m.clone()
            })
            .collect();
        if h.mirrors != want_mirrors {
            diff(format!(
                "mirrors: want {}, have {} (from {})",
                describe_mirrors(&want_mirrors),
                describe_mirrors(&h.mirrors),
                have.file
            ));
        }
        for (key, w, g) in [
            ("insecure", want.insecure, h.insecure),
            ("blocked", want.blocked, h.blocked),
            (
                "mirror-by-digest-only",
                want.mirror_by_digest_only,
                h.mirror_by_digest_only,
            ),
        ] {
            if w != g {
                diff(format!("{key}: want {w}, have {g} (from {})", have.file));
            }
        }
    }
    if let Some(search) = policies.image.as_ref().and_then(|i| i.search.as_ref()) {
        let have = effective
            .unqualified_search_registries
            .as_ref()
            .map(|(l, _)| l.clone())
            .unwrap_or_default();
        if &have != search {
            report.differences.push(Difference {
                scope: "unqualified-search-registries".into(),
                message: format!("want {search:?}, have {have:?}"),
            });
        }
    }
    Ok(report)
}
