//! MCO's `EditRegistriesConfig` (registries-spec §4) on the plain model, with indexed lookups.
//!
//! The literal algorithm loops over every entry for every scope (quadratic for nested-scope
//! propagation); here every "is X nested in some Y" question is answered by enumerating the scopes
//! that enclose X and looking them up in a hash map. [`super::reference`] keeps the literal version,
//! and a differential property test proves both give the same result.

use std::collections::{HashMap, HashSet};

use super::merge::MergedMirrorSets;
use super::model::{Mirror, Registry, DIGEST_ONLY, TAG_ONLY};
use super::scope::{enclosing_scopes, is_wildcard};
use super::{MirrorError, Style};

/// The inputs of one render besides the base entries.
#[derive(Debug, Clone)]
pub struct RenderInput<'a> {
    /// Merged mirror buckets.
    pub sets: &'a MergedMirrorSets,
    /// `insecureRegistries` in list order.
    pub insecure: &'a [String],
    /// `blockedRegistries` in list order (after the payload filter).
    pub blocked: &'a [String],
    /// Rendering style.
    pub style: Style,
}

struct Entries {
    list: Vec<Registry>,
    first_by_scope: HashMap<String, usize>,
}

impl Entries {
    fn new(base: Vec<Registry>) -> Entries {
        let mut first_by_scope = HashMap::with_capacity(base.len());
        for (i, r) in base.iter().enumerate() {
            first_by_scope.entry(r.scope().to_string()).or_insert(i);
        }
        Entries {
            list: base,
            first_by_scope,
        }
    }

    /// runtime-utils `getRegistryEntry`: the first entry with this scope, appended when missing.
    fn find(&mut self, scope: &str) -> usize {
        if let Some(&i) = self.first_by_scope.get(scope) {
            return i;
        }
        self.list.push(Registry::for_scope(scope));
        let i = self.list.len() - 1;
        self.first_by_scope.insert(scope.to_string(), i);
        i
    }
}

/// Apply the policies to `base` exactly as MCO edits its template: returns the new entry list.
/// Base entries keep their positions; new entries are appended; nothing is removed.
pub fn render_entries(
    base: Vec<Registry>,
    input: &RenderInput<'_>,
) -> Result<Vec<Registry>, MirrorError> {
    let mut entries = Entries::new(base);
    let legacy = input.style == Style::Legacy;
    // Steps 1-2: mirrors per bucket.
    for (buckets, usage) in [
        (&input.sets.digest, DIGEST_ONLY),
        (&input.sets.tag, TAG_ONLY),
    ] {
        for b in buckets {
            let i = entries.find(&b.source);
            let e = &mut entries.list[i];
            if b.blocked {
                e.blocked = true;
            }
            if legacy {
                e.mirror_by_digest_only = true;
            }
            e.mirrors.extend(b.mirrors.iter().map(|m| Mirror {
                location: m.clone(),
                insecure: false,
                pull_from_mirror: if legacy {
                    String::new()
                } else {
                    usage.to_string()
                },
            }));
        }
    }
    // Step 3: pre-create blocked scopes.
    for s in input.blocked {
        entries.find(s);
    }
    // Step 4: insecure scopes, then every entry and mirror nested in one.
    if !input.insecure.is_empty() {
        for s in input.insecure {
            entries.find(s);
        }
        let set: HashSet<&str> = input.insecure.iter().map(String::as_str).collect();
        let inside = |x: &str| enclosing_scopes(x).any(|c| set.contains(c.as_ref()));
        for e in &mut entries.list {
            if !e.insecure && inside(e.scope()) {
                e.insecure = true;
            }
            for m in &mut e.mirrors {
                if !m.insecure && inside(&m.location) {
                    m.insecure = true;
                }
            }
        }
    }
    // Step 5: blocked scopes and every entry nested in one (mirrors are never blocked).
    if !input.blocked.is_empty() {
        let set: HashSet<&str> = input.blocked.iter().map(String::as_str).collect();
        for e in &mut entries.list {
            if !e.blocked && enclosing_scopes(e.scope()).any(|c| set.contains(c.as_ref())) {
                e.blocked = true;
            }
        }
    }
    // Step 6: nested-scope mirror propagation; the first qualifying bucket (in step order) wins.
    let mut bucket_order: HashMap<&str, usize> = HashMap::new();
    for (k, b) in input
        .sets
        .digest
        .iter()
        .chain(input.sets.tag.iter())
        .enumerate()
    {
        bucket_order.entry(b.source.as_str()).or_insert(k);
    }
    if bucket_order.is_empty() {
        return Ok(entries.list);
    }
    let ordered_sources: Vec<&str> = input
        .sets
        .digest
        .iter()
        .chain(input.sets.tag.iter())
        .map(|b| b.source.as_str())
        .collect();
    let mut assignments: Vec<(usize, usize)> = Vec::new(); // (entry, bucket index)
    let mut wildcard_error: Option<usize> = None;
    for (i, e) in entries.list.iter().enumerate() {
        if !e.mirrors.is_empty() {
            continue;
        }
        let scope = e.scope();
        let best = enclosing_scopes(scope)
            .filter(|c| c.as_ref() != scope)
            .filter_map(|c| bucket_order.get(c.as_ref()).copied())
            .min();
        if let Some(k) = best {
            if is_wildcard(ordered_sources[k]) {
                wildcard_error = Some(wildcard_error.map_or(k, |w| w.min(k)));
            } else {
                assignments.push((i, k));
            }
        }
    }
    if let Some(k) = wildcard_error {
        return Err(MirrorError::Render(format!(
            "internal error: mirrorsAdjustedForNestedScope for a wildcard scope {:?}",
            ordered_sources[k]
        )));
    }
    for (i, k) in assignments {
        let parent_scope = ordered_sources[k];
        let p = entries.first_by_scope[parent_scope];
        let parent_mirrors = entries.list[p].mirrors.clone();
        let parent_mbdo = entries.list[p].mirror_by_digest_only;
        let e = &mut entries.list[i];
        let suffix = e.scope()[parent_scope.len()..].to_string();
        e.mirrors = parent_mirrors
            .into_iter()
            .map(|m| Mirror {
                location: format!("{}{}", m.location, suffix),
                ..m
            })
            .collect();
        if legacy && parent_mbdo {
            e.mirror_by_digest_only = true;
        }
    }
    Ok(entries.list)
}
