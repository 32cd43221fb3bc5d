//! A literal, unoptimised transcription of registries-spec §4 (runtime-utils `EditRegistriesConfig`).
//!
//! It exists only as the oracle for the differential property test of [`super::render`]: every loop
//! is the spec's loop, every lookup a linear scan. Do not use it for real work; it is quadratic.

use super::merge::MergedMirrorSets;
use super::model::{Mirror, Registry, DIGEST_ONLY, TAG_ONLY};
use super::render::RenderInput;
use super::scope::is_nested;
use super::{MirrorError, Style};

fn find(list: &mut Vec<Registry>, scope: &str) -> usize {
    if let Some(i) = list.iter().position(|r| r.scope() == scope) {
        return i;
    }
    list.push(Registry::for_scope(scope));
    list.len() - 1
}

/// The spec's steps 1–6, literally.
pub fn render_entries(
    mut list: Vec<Registry>,
    input: &RenderInput<'_>,
) -> Result<Vec<Registry>, MirrorError> {
    let legacy = input.style == Style::Legacy;
    let sets: &MergedMirrorSets = input.sets;
    for (buckets, usage) in [(&sets.digest, DIGEST_ONLY), (&sets.tag, TAG_ONLY)] {
        for b in buckets {
            let i = find(&mut list, &b.source);
            if b.blocked {
                list[i].blocked = true;
            }
            if legacy {
                list[i].mirror_by_digest_only = true;
            }
            for m in &b.mirrors {
                list[i].mirrors.push(Mirror {
                    location: m.clone(),
                    insecure: false,
                    pull_from_mirror: if legacy {
                        String::new()
                    } else {
                        usage.to_string()
                    },
                });
            }
        }
    }
    for s in input.blocked {
        find(&mut list, s);
    }
    for s in input.insecure {
        let i = find(&mut list, s);
        list[i].insecure = true;
        for e in list.iter_mut() {
            if is_nested(e.scope(), s) {
                e.insecure = true;
            }
            for m in e.mirrors.iter_mut() {
                if is_nested(&m.location, s) {
                    m.insecure = true;
                }
            }
        }
    }
    for s in input.blocked {
        let i = find(&mut list, s);
        list[i].blocked = true;
        for e in list.iter_mut() {
            if is_nested(e.scope(), s) {
                e.blocked = true;
            }
        }
    }
    for b in sets.digest.iter().chain(sets.tag.iter()) {
        let p = find(&mut list, &b.source);
        let parent_scope = list[p].scope().to_string();
        let parent_mirrors = list[p].mirrors.clone();
        let parent_mbdo = list[p].mirror_by_digest_only;
        #[allow(clippy::needless_range_loop)] // the spec's loop, kept literal on purpose
        for j in 0..list.len() {
            let e = &list[j];
            if e.scope() != parent_scope
                && is_nested(e.scope(), &parent_scope)
                && e.mirrors.is_empty()
            {
                if parent_scope.starts_with("*.") {
                    return Err(MirrorError::Render(format!(
                        "internal error: mirrorsAdjustedForNestedScope for a wildcard scope {parent_scope:?}"
                    )));
                }
                let suffix = e.scope()[parent_scope.len()..].to_string();
                let e = &mut list[j];
                e.mirrors = parent_mirrors
                    .iter()
                    .map(|m| Mirror {
                        location: format!("{}{}", m.location, suffix),
                        ..m.clone()
                    })
                    .collect();
                if legacy && parent_mbdo {
                    e.mirror_by_digest_only = true;
                }
            }
        }
    }
    Ok(list)
}
