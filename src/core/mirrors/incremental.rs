//! Incremental re-rendering for the daemon: after a full [`super::engine::apply`], keep what it
//! computed (merged buckets, the administrator's entries, the agent's appended entries with their
//! text) so that a change of a few sources re-merges and re-renders only the scopes it can affect
//! and splices their tables into the kept text, instead of parsing 2,000 sources and a 1 MB file
//! again.
//!
//! The result must be exactly what a full apply of the same inputs to the kept text produces (bytes,
//! drain verdict, summary, warnings); `tests/properties.rs` checks that on random inputs. Whenever
//! a change reaches something this module does not reproduce — an administrator's own entry, the
//! `Image` object, a validation or load error, an unusual document shape — [`Prepared::update`]
//! returns `None` and the caller takes the full path.
//!
//! Why the restriction is exact: MCO's render decides an entry's mirrors and flags from its own
//! buckets, the insecure/blocked lists and, for an entry without mirrors, the enclosing scope whose
//! bucket comes first. So a change of the buckets of sources `S` can only change entries whose scope
//! is in `S` or nested in one of them (the *affected* scopes `A`); rendering `A` together with the
//! buckets and base entries of their enclosing scopes gives the same entries for `A` as the whole
//! render. New entries are appended in the order MCO creates them (digest sources sorted, tag
//! sources sorted, blocked list, insecure list), and the agent writes each as a self-contained
//! marked table, so the file is the unchanged text before and after that block plus one chunk per
//! entry.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use super::classify::{classify, Classification, ConfView};
use super::containers::{self, LoadedConf, LoadedRegistry};
use super::document::{marker_line, table_text};
use super::engine::{apply_inner, ApplyOptions, ApplyOutcome, Internals, ManagedSummary};
use super::merge::{self, MergedMirrorSets, MirrorBucket};
use super::model::Registry;
use super::policy::{PolicySet, RegistrySources};
use super::render::{render_entries, RenderInput};
use super::scope::enclosing_scopes;
use super::MirrorError;
use super::Style;

/// Where MCO's render creates an entry that is not in the administrator's file: the first step
/// that asks for its scope. Sorting by this key gives the order of the appended tables.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum OrderKey {
    Digest(String),
    Tag(String),
    Blocked(usize),
    Insecure(usize),
}

/// One table the agent appended (its text is in [`Prepared::text`], see [`Prepared::order`]).
#[derive(Debug, Clone)]
struct Appended {
    entry: Registry,
    /// containers/image's duplicate key of the entry (after its normalisation).
    dup: String,
}

/// The result of an incremental update: what [`super::engine::ApplyOutcome`] reports, for the
/// main file in in-place mode.
#[derive(Debug, Clone)]
pub struct Update {
    /// The new registries.conf text (shared with the state: 1 MB files are not copied).
    pub output: Arc<String>,
    /// `output` differs from the kept text.
    pub changed: bool,
    /// MCO's drain verdict for the change.
    pub classification: Classification,
    /// Non-fatal findings (the same a full apply reports).
    pub warnings: Vec<String>,
    /// What is managed now.
    pub summary: ManagedSummary,
    /// The search-registries drop-in contents (unchanged: the `Image` object did not change).
    pub search_dropin: Option<String>,
}

/// The engine's state after a full apply whose output is on disk, ready for incremental updates.
#[derive(Debug, Clone)]
pub struct Prepared {
    opts: ApplyOptions,
    image: Option<RegistrySources>,
    /// The policy files the state was computed from, each parsed on its own, in order.
    files: Vec<Arc<PolicySet>>,
    insecure: Vec<String>,
    blocked: Vec<String>,
    digest: HashMap<String, MirrorBucket>,
    tag: HashMap<String, MirrorBucket>,
    base: Vec<Registry>,
    base_first: HashMap<String, usize>,
    /// Scopes of administrator entries the render changed, in file order.
    base_changed: Vec<String>,
    /// Mirrors the render added to administrator entries.
    base_mirrors_added: usize,
    /// The agent's appended entries.
    appended: HashMap<OrderKey, Appended>,
    /// Their keys in file order (sorted), and the length of each one's table in the text: a
    /// change copies the unchanged runs of the old text around the tables it replaces (a few
    /// large copies, not 2,000 small ones from all over the heap).
    order: Vec<OrderKey>,
    lens: Vec<usize>,
    /// Mirrors of all appended entries (kept, not summed over every entry on each change).
    appended_mirrors: usize,
    /// Enclosing scope → scopes of entries (administrator's and appended) properly nested in it.
    nested: HashMap<String, HashSet<String>>,
    /// Entries per source over all policy files: a changed file's sources that no other file
    /// mentions need no scan of the other files.
    source_count: HashMap<String, usize>,
    /// containers/image duplicate keys (normalised location, or prefix) → number of entries.
    keys: HashMap<String, usize>,
    /// Where the appended block starts in the text.
    head_len: usize,
    text: Arc<String>,
    /// The text before the last change, while the caller may still hold it: once it is alone
    /// here again, the next change is built in its buffer (no new 1 MB allocation to fault in).
    spare: Option<Arc<String>>,
    base_warnings: Vec<String>,
    search_dropin: Option<String>,
    /// The drain verdict about `unqualified-search-registries` (as decoded vs as containers/image
    /// normalises it): unsafe on every apply when they differ, as in the full path.
    search_verdict: Option<Classification>,
}

/// Run a full [`super::engine::apply`] and keep its state for incremental updates when the
/// shape allows (`None` otherwise: the next change takes the full path again).
///
/// `files` are the policy files parsed one by one (what later updates are compared with) and
/// `policies` the same joined in order with [`PolicySet::append`].
pub fn apply_and_prepare(
    file: &str,
    text: &str,
    policies: &PolicySet,
    files: Vec<Arc<PolicySet>>,
    opts: &ApplyOptions,
) -> Result<(ApplyOutcome, Option<Prepared>), MirrorError> {
    let (out, internals) = apply_inner(file, text, policies, opts)?;
    let prepared = Prepared::prime(
        policies,
        files,
        opts,
        &out.output,
        &out.warnings,
        out.search_dropin.clone(),
        internals,
    );
    Ok((out, prepared))
}

/// The buckets after a change: the new ones for the changed sources, the kept ones otherwise.
struct Overlay<'a> {
    changed: &'a HashSet<String>,
    new: &'a HashMap<String, MirrorBucket>,
    old: &'a HashMap<String, MirrorBucket>,
}

impl<'a> Overlay<'a> {
    fn get(&self, scope: &str) -> Option<&'a MirrorBucket> {
        if self.changed.contains(scope) {
            self.new.get(scope)
        } else {
            self.old.get(scope)
        }
    }

    /// The buckets of `scopes`, sorted by source as [`merge::merge`] returns them.
    fn pick(&self, scopes: &HashSet<String>) -> Vec<MirrorBucket> {
        let mut v: Vec<MirrorBucket> = scopes.iter().filter_map(|s| self.get(s).cloned()).collect();
        v.sort_by(|a, b| a.source.cmp(&b.source));
        v
    }
}

/// containers/image's duplicate key of a post-processed entry.
fn dup_key(r: &Registry) -> String {
    if r.location.is_empty() {
        r.prefix.clone()
    } else {
        r.location.clone()
    }
}

/// Post-process `entries` as containers/image would (normalisation and per-entry checks); `None`
/// when one is rejected (the full path then reports it with its exact message).
fn post_processed(entries: &[Registry]) -> Option<Vec<Registry>> {
    let mut conf = LoadedConf {
        registries: entries
            .iter()
            .map(|r| LoadedRegistry {
                registry: r.clone(),
                line: None,
                file: String::new(),
            })
            .collect(),
        ..LoadedConf::default()
    };
    containers::post_process(&mut conf).ok()?;
    Some(conf.registries.into_iter().map(|l| l.registry).collect())
}

fn order_key_with(
    scope: &str,
    in_digest: bool,
    in_tag: bool,
    blocked: &[String],
    insecure: &[String],
) -> Option<OrderKey> {
    if in_digest {
        Some(OrderKey::Digest(scope.to_string()))
    } else if in_tag {
        Some(OrderKey::Tag(scope.to_string()))
    } else if let Some(i) = blocked.iter().position(|b| b == scope) {
        Some(OrderKey::Blocked(i))
    } else {
        insecure
            .iter()
            .position(|b| b == scope)
            .map(OrderKey::Insecure)
    }
}

fn index_nested(nested: &mut HashMap<String, HashSet<String>>, scope: &str) {
    for c in enclosing_scopes(scope).skip(1) {
        nested
            .entry(c.into_owned())
            .or_default()
            .insert(scope.to_string());
    }
}

fn unindex_nested(nested: &mut HashMap<String, HashSet<String>>, scope: &str) {
    for c in enclosing_scopes(scope).skip(1) {
        if let Some(v) = nested.get_mut(c.as_ref()) {
            v.remove(scope);
            if v.is_empty() {
                nested.remove(c.as_ref());
            }
        }
    }
}

impl Prepared {
    /// Keep the state of a full apply (`internals` from it) whose `output` is now the file's text.
    /// `None` when the shape is one the incremental path does not reproduce: drop-in mode, the
    /// legacy style, no policies, administrator content inside managed tables, or a document whose
    /// appended block is not the plain concatenation of the agent's tables.
    pub(crate) fn prime(
        policies: &PolicySet,
        files: Vec<Arc<PolicySet>>,
        opts: &ApplyOptions,
        output: &str,
        warnings: &[String],
        search_dropin: Option<String>,
        internals: Internals,
    ) -> Option<Prepared> {
        if opts.dropin || opts.style != Style::Current || !internals.simple || policies.is_noop() {
            return None;
        }
        let Internals {
            base_entries: base,
            sets,
            blocked,
            insecure,
            search_verdict,
            ..
        } = internals;
        let mut base_first = HashMap::with_capacity(base.len());
        for (i, r) in base.iter().enumerate() {
            base_first.entry(r.scope().to_string()).or_insert(i);
        }
        // The whole model once more, to know which administrator entries changed and the entries
        // appended (cheap next to the parsing the full path did).
        let rendered = render_entries(
            base.clone(),
            &RenderInput {
                sets: &sets,
                insecure: &insecure,
                blocked: &blocked,
                style: opts.style,
            },
        )
        .ok()?;
        let mut base_changed = Vec::new();
        let mut base_mirrors_added = 0;
        for (b, r) in base.iter().zip(&rendered) {
            if b != r {
                base_changed.push(r.scope().trim_end_matches('/').to_string());
                base_mirrors_added += r.mirrors.len() - b.mirrors.len();
            }
        }
        let bucket_map = |v: Vec<MirrorBucket>| -> HashMap<String, MirrorBucket> {
            v.into_iter().map(|b| (b.source.clone(), b)).collect()
        };
        let (digest, tag) = (bucket_map(sets.digest), bucket_map(sets.tag));
        let normalised = post_processed(&rendered)?;
        let mut keys: HashMap<String, usize> = HashMap::new();
        for r in &normalised {
            *keys.entry(dup_key(r)).or_default() += 1;
        }
        let marker = marker_line();
        let mut order = Vec::with_capacity(rendered.len().saturating_sub(base.len()));
        let mut lens = Vec::with_capacity(order.capacity());
        let mut block = String::new();
        let mut appended = HashMap::with_capacity(order.capacity());
        for (r, n) in rendered[base.len()..].iter().zip(&normalised[base.len()..]) {
            let key = order_key_with(
                r.scope(),
                digest.contains_key(r.scope()),
                tag.contains_key(r.scope()),
                &blocked,
                &insecure,
            )?;
            let text = table_text(r, &marker);
            block.push_str(&text);
            lens.push(text.len());
            order.push(key.clone());
            appended.insert(
                key,
                Appended {
                    entry: r.clone(),
                    dup: dup_key(n),
                },
            );
        }
        // The render appends in key order; anything else is a shape this module does not know.
        if order.is_empty() || order.windows(2).any(|w| w[0] >= w[1]) {
            return None;
        }
        let head_len = output.find(&block)?;
        if output[..head_len].trim().is_empty() {
            return None;
        }
        let appended_mirrors = appended.values().map(|a| a.entry.mirrors.len()).sum();
        let mut nested = HashMap::new();
        for r in &rendered {
            index_nested(&mut nested, r.scope());
        }
        let base_warnings = warnings.get(policies.warnings.len()..)?.to_vec();
        let mut source_count: HashMap<String, usize> = HashMap::new();
        for e in &policies.entries {
            *source_count.entry(e.source.clone()).or_default() += 1;
        }
        Some(Prepared {
            opts: opts.clone(),
            image: policies.image.clone(),
            files,
            insecure,
            blocked,
            digest,
            tag,
            base,
            base_first,
            base_changed,
            base_mirrors_added,
            appended,
            order,
            lens,
            appended_mirrors,
            nested,
            source_count,
            keys,
            head_len,
            text: Arc::new(output.to_string()),
            spare: None,
            base_warnings,
            search_dropin,
            search_verdict,
        })
    }

    /// The registries.conf text this state describes (what the last apply wrote).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The same text, shared.
    pub fn shared_text(&self) -> Arc<String> {
        Arc::clone(&self.text)
    }

    /// Scopes of the entries the agent added or changed, as [`ApplyOutcome::managed_scopes`]
    /// lists them (computed on demand: only drop-ins that could hide them need it).
    pub fn managed_scopes(&self) -> Vec<String> {
        let mut scopes = self.base_changed.clone();
        scopes.extend(self.order.iter().map(|k| {
            self.appended[k]
                .entry
                .scope()
                .trim_end_matches('/')
                .to_string()
        }));
        scopes
    }

    /// Render the new policy files (`files`, each parsed on its own, in order) onto the kept text,
    /// touching only the scopes whose sources changed, and move this state to the result. `None`
    /// — with the state untouched — when the full path must run (see the module documentation).
    pub fn update(&mut self, files: &[Arc<PolicySet>], opts: &ApplyOptions) -> Option<Update> {
        if opts.dropin != self.opts.dropin
            || opts.style != self.opts.style
            || opts.payload_repo != self.opts.payload_repo
        {
            return None;
        }
        let mut images = files.iter().filter(|f| f.image_origin.is_some());
        let image = images.next().and_then(|f| f.image.clone());
        if images.next().is_some() || image != self.image {
            return None;
        }
        let lists_nil = image
            .as_ref()
            .map(|i| i.insecure.is_none() && i.blocked.is_none())
            .unwrap_or(true);
        if lists_nil && files.iter().all(|f| f.entries.is_empty()) {
            return None;
        }
        let warnings: Vec<String> = files.iter().flat_map(|f| f.warnings.clone()).collect();

        // Files that differ (the common prefix and suffix are unchanged) and their sources.
        let same = |a: &Arc<PolicySet>, b: &Arc<PolicySet>| Arc::ptr_eq(a, b) || a == b;
        let old = &self.files;
        let prefix = old
            .iter()
            .zip(files)
            .take_while(|(a, b)| same(a, b))
            .count();
        let suffix = old[prefix..]
            .iter()
            .rev()
            .zip(files[prefix..].iter().rev())
            .take_while(|(a, b)| same(a, b))
            .count();
        let old_changed = &old[prefix..old.len() - suffix];
        let new_changed = &files[prefix..files.len() - suffix];
        let count = |sets: &'_ [Arc<PolicySet>]| {
            let mut m: HashMap<String, usize> = HashMap::new();
            for e in sets.iter().flat_map(|f| f.entries.iter()) {
                *m.entry(e.source.clone()).or_default() += 1;
            }
            m
        };
        let (in_old_changed, in_new_changed) = (count(old_changed), count(new_changed));
        let changed_sources: HashSet<String> = in_old_changed
            .keys()
            .chain(in_new_changed.keys())
            .cloned()
            .collect();
        // Do unchanged files have entries for these sources too? Then they take part in the
        // merge and the validation, in file order, and the whole list is scanned for them.
        let elsewhere = changed_sources.iter().any(|s| {
            self.source_count.get(s).copied().unwrap_or(0)
                > in_old_changed.get(s).copied().unwrap_or(0)
        });
        if changed_sources.is_empty() {
            self.files = files.to_vec();
            return Some(self.outcome(warnings, Arc::clone(&self.text), false, None));
        }
        // Validation restricted to the changed sources: every other entry is the same as in the
        // last (valid) set, and MCO's cross-entry check is per source. Any error: full path.
        let subset = PolicySet {
            entries: if elsewhere {
                files
                    .iter()
                    .flat_map(|f| f.entries.iter())
                    .filter(|e| changed_sources.contains(e.source.as_str()))
                    .cloned()
                    .collect()
            } else {
                new_changed
                    .iter()
                    .flat_map(|f| f.entries.iter())
                    .cloned()
                    .collect()
            },
            ..PolicySet::default()
        };
        merge::validate(&subset, opts.style).ok()?;
        let merged = merge::merge(&subset);
        let mut new_digest: HashMap<String, MirrorBucket> = merged
            .digest
            .into_iter()
            .map(|b| (b.source.clone(), b))
            .collect();
        let mut new_tag: HashMap<String, MirrorBucket> = merged
            .tag
            .into_iter()
            .map(|b| (b.source.clone(), b))
            .collect();
        // The buckets after the change, without copying the kept maps.
        let digest_now = Overlay {
            changed: &changed_sources,
            new: &new_digest,
            old: &self.digest,
        };
        let tag_now = Overlay {
            changed: &changed_sources,
            new: &new_tag,
            old: &self.tag,
        };
        let new_key = |scope: &str| -> Option<OrderKey> {
            order_key_with(
                scope,
                digest_now.get(scope).is_some(),
                tag_now.get(scope).is_some(),
                &self.blocked,
                &self.insecure,
            )
        };

        // Affected scopes: the changed sources and every entry nested in one.
        let mut affected: Vec<&str> = Vec::new();
        let mut seen: HashSet<&str> = HashSet::new();
        for s in &changed_sources {
            if seen.insert(s) {
                affected.push(s.as_str());
            }
            for n in self.nested.get(s).into_iter().flatten() {
                if seen.insert(n.as_str()) {
                    affected.push(n.as_str());
                }
            }
        }
        if affected.iter().any(|a| self.base_first.contains_key(*a)) {
            return None;
        }
        // The sub-problem: the affected scopes' buckets, plus the buckets and administrator
        // entries of every enclosing scope that has a bucket (propagation parents).
        let mut relevant: HashSet<String> = affected.iter().map(|a| a.to_string()).collect();
        for a in &affected {
            for c in enclosing_scopes(a).skip(1) {
                if digest_now.get(&c).is_some() || tag_now.get(&c).is_some() {
                    relevant.insert(c.into_owned());
                }
            }
        }
        let mut base_sub: Vec<(usize, Registry)> = relevant
            .iter()
            .filter_map(|s| self.base_first.get(s).map(|&i| (i, self.base[i].clone())))
            .collect();
        base_sub.sort_by_key(|(i, _)| *i);
        let sub_sets = MergedMirrorSets {
            digest: digest_now.pick(&relevant),
            tag: tag_now.pick(&relevant),
        };
        let sub = render_entries(
            base_sub.into_iter().map(|(_, r)| r).collect(),
            &RenderInput {
                sets: &sub_sets,
                insecure: &self.insecure,
                blocked: &self.blocked,
                style: opts.style,
            },
        )
        .ok()?;
        let mut sub_by_scope: HashMap<&str, &Registry> = HashMap::new();
        for r in &sub {
            sub_by_scope.entry(r.scope()).or_insert(r);
        }

        // Old and new entries of the affected scopes.
        let mut old_keys: Vec<OrderKey> = Vec::new();
        // (New entries with the text of their tables.)
        let mut incoming: BTreeMap<OrderKey, (Appended, String)> = BTreeMap::new();
        let marker = marker_line();
        for a in &affected {
            if let Some(k) = self.appended_key(a) {
                old_keys.push(k);
            }
            if let Some(r) = sub_by_scope.get(a) {
                let replaced = incoming.insert(
                    new_key(a)?,
                    (
                        Appended {
                            entry: (*r).clone(),
                            dup: String::new(),
                        },
                        table_text(r, &marker),
                    ),
                );
                if replaced.is_some() {
                    return None;
                }
            }
        }
        old_keys.sort();
        let old_entries: Vec<Registry> = old_keys
            .iter()
            .map(|k| self.appended[k].entry.clone())
            .collect();
        let new_models: Vec<Registry> = incoming.values().map(|a| a.0.entry.clone()).collect();
        // containers/image would load the new entries (per-entry checks) and no two entries
        // share a key (the full path reports either with its exact message).
        let new_pp = post_processed(&new_models)?;
        for (a, n) in incoming.values_mut().zip(&new_pp) {
            a.0.dup = dup_key(n);
        }
        let mut delta: HashMap<String, isize> = HashMap::new();
        for k in &old_keys {
            *delta.entry(self.appended[k].dup.clone()).or_default() -= 1;
        }
        for a in incoming.values() {
            *delta.entry(a.0.dup.clone()).or_default() += 1;
        }
        for (k, d) in &delta {
            let now = *self.keys.get(k).unwrap_or(&0) as isize + d;
            if now < 0 || (*d > 0 && now > 1) {
                return None;
            }
        }
        // A new entry never takes the place of an unaffected one, and something stays managed.
        if incoming
            .keys()
            .any(|k| self.appended.contains_key(k) && old_keys.binary_search(k).is_err())
            || self.appended.len() - old_keys.len() + incoming.len() == 0
        {
            return None;
        }
        // Where the old tables are in the text (every old key is in `order`: it came from
        // `appended`) and where the new ones go.
        let mut starts = Vec::with_capacity(self.lens.len() + 1);
        let mut at = self.head_len;
        for l in &self.lens {
            starts.push(at);
            at += l;
        }
        starts.push(at);
        let removed: Vec<usize> = old_keys
            .iter()
            .map(|k| self.order.binary_search(k).ok())
            .collect::<Option<_>>()?;
        let inserted: Vec<usize> = incoming
            .keys()
            .map(|k| self.order.binary_search(k).unwrap_or_else(|i| i))
            .collect();
        let old_table = |i: usize| &self.text[starts[i]..starts[i + 1]];
        // The text changes only when the affected tables do.
        let changed = old_keys.len() != incoming.len()
            || old_keys
                .iter()
                .zip(&removed)
                .zip(incoming.iter())
                .any(|((ok, &i), (nk, n))| ok != nk || old_table(i) != n.1);
        let classification = classify(
            &ConfView {
                search: &[],
                registries: &old_entries,
            },
            &ConfView {
                search: &[],
                registries: &new_models,
            },
        );

        // Everything checked: move the state forward (nothing below can fail).
        for s in &changed_sources {
            let total = self.source_count.get(s).copied().unwrap_or(0)
                - in_old_changed.get(s).copied().unwrap_or(0)
                + in_new_changed.get(s).copied().unwrap_or(0);
            if total == 0 {
                self.source_count.remove(s);
            } else {
                self.source_count.insert(s.clone(), total);
            }
        }
        for s in &changed_sources {
            match new_digest.remove(s) {
                Some(b) => self.digest.insert(s.clone(), b),
                None => self.digest.remove(s),
            };
            match new_tag.remove(s) {
                Some(b) => self.tag.insert(s.clone(), b),
                None => self.tag.remove(s),
            };
        }
        for r in &old_entries {
            unindex_nested(&mut self.nested, r.scope());
        }
        for r in &new_models {
            index_nested(&mut self.nested, r.scope());
        }
        for (k, d) in delta {
            let n = self.keys.entry(k.clone()).or_default();
            *n = (*n as isize + d) as usize;
            if *n == 0 {
                self.keys.remove(&k);
            }
        }
        for k in &old_keys {
            if let Some(a) = self.appended.remove(k) {
                self.appended_mirrors -= a.entry.mirrors.len();
            }
        }
        self.appended_mirrors += incoming
            .values()
            .map(|a| a.0.entry.mirrors.len())
            .sum::<usize>();
        self.files = files.to_vec();
        if !changed {
            // The same keys and tables: only the models (equal in all the text shows) change.
            self.appended
                .extend(incoming.into_iter().map(|(k, (a, _))| (k, a)));
            return Some(self.outcome(
                warnings,
                Arc::clone(&self.text),
                false,
                Some(classification),
            ));
        }
        // The new text, order and lengths in one pass over the old order: runs of unchanged
        // tables are copied from the old text as they are.
        let mut output = match self.spare.take().map(Arc::try_unwrap) {
            Some(Ok(mut buf)) => {
                buf.clear();
                buf
            }
            _ => String::new(),
        };
        output.reserve(self.text.len() + 4096);
        let n = self.order.len();
        let old_order = std::mem::take(&mut self.order);
        let old_lens = std::mem::take(&mut self.lens);
        let mut order = Vec::with_capacity(n + incoming.len());
        let mut lens = Vec::with_capacity(n + incoming.len());
        let old = Arc::clone(&self.text);
        // Bytes of the old text up to `to` that are not in `output` yet.
        let flush_to = |output: &mut String, to: usize, copied: &mut usize| {
            output.push_str(&old[*copied..to]);
            *copied = to;
        };
        let mut copied = 0;
        let mut rem = removed.iter().peekable();
        let mut ins = inserted.iter().zip(incoming).peekable();
        let mut kept = old_order.into_iter().zip(old_lens);
        for i in 0..=n {
            // New tables go before the old table at their position.
            while let Some((_, (k, (a, table)))) = ins.next_if(|(&at, _)| at == i) {
                flush_to(&mut output, starts[i], &mut copied);
                output.push_str(&table);
                lens.push(table.len());
                order.push(k.clone());
                self.appended.insert(k, a);
            }
            let Some((key, len)) = kept.next() else {
                break;
            };
            if rem.next_if(|&&r| r == i).is_some() {
                flush_to(&mut output, starts[i], &mut copied);
                copied = starts[i + 1];
            } else {
                order.push(key);
                lens.push(len);
            }
        }
        flush_to(&mut output, old.len(), &mut copied);
        drop(old);
        self.order = order;
        self.lens = lens;
        self.spare = Some(std::mem::replace(&mut self.text, Arc::new(output)));
        let output = Arc::clone(&self.text);
        Some(self.outcome(warnings, output, changed, Some(classification)))
    }

    /// The key of the appended entry for `scope` (derived from the kept buckets), if there is one.
    fn appended_key(&self, scope: &str) -> Option<OrderKey> {
        let key = order_key_with(
            scope,
            self.digest.contains_key(scope),
            self.tag.contains_key(scope),
            &self.blocked,
            &self.insecure,
        )?;
        (self.appended.get(&key)?.entry.scope() == scope).then_some(key)
    }

    fn outcome(
        &self,
        mut warnings: Vec<String>,
        output: Arc<String>,
        changed: bool,
        classification: Option<Classification>,
    ) -> Update {
        warnings.extend(self.base_warnings.iter().cloned());
        let summary = ManagedSummary {
            sources: self.digest.len() + self.tag.len(),
            entries_added: self.appended.len(),
            entries_changed: self.base_changed.len(),
            mirrors: self.base_mirrors_added + self.appended_mirrors,
        };
        Update {
            output,
            changed,
            classification: self.search_verdict.clone().unwrap_or_else(|| {
                classification
                    .unwrap_or_else(|| classify(&ConfView::default(), &ConfView::default()))
            }),
            warnings,
            summary,
            search_dropin: self.search_dropin.clone(),
        }
    }
}
