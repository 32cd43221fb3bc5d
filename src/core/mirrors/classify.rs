//! MCO's safe-change classification (registries-spec §10; MCD `isSafeContainerRegistryConfChanges`):
//! decides whether a registries.conf change can be applied with a CRI-O reload alone, or needs the
//! node drained first. The agent reports the same verdict, with the reason.

use std::collections::HashMap;

use super::model::{Registry, DIGEST_ONLY};

/// The verdict for one change of registries.conf.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Classification {
    /// True when a CRI-O reload is enough (no drain).
    pub safe: bool,
    /// Why it is not safe (MCO's log line), or why it is.
    pub reason: String,
}

/// The parts of a registries.conf the classification looks at (as MCO decodes it: raw values).
#[derive(Debug, Clone, Default)]
pub struct ConfView<'a> {
    /// `unqualified-search-registries`.
    pub search: &'a [String],
    /// `[[registry]]` entries in file order.
    pub registries: &'a [Registry],
}

fn by_scope(regs: &[Registry]) -> HashMap<&str, &Registry> {
    // Like MCO's map: a later duplicate overwrites an earlier one.
    regs.iter().map(|r| (r.scope(), r)).collect()
}

fn all_digest_only(r: &Registry) -> bool {
    if r.mirrors.is_empty() {
        return r.mirror_by_digest_only;
    }
    r.mirrors.iter().all(|m| m.pull_from_mirror == DIGEST_ONLY)
}

/// Classify the change from `old` to `new` exactly as the machine-config-daemon does.
pub fn classify(old: &ConfView<'_>, new: &ConfView<'_>) -> Classification {
    let unsafe_because = |reason: String| Classification {
        safe: false,
        reason,
    };
    if old.search.len() > new.search.len() || old.search.iter().zip(new.search).any(|(a, b)| a != b)
    {
        return unsafe_because(
            "unqualified-search-registries changed other than by appending".into(),
        );
    }
    let old_map = by_scope(old.registries);
    let new_map = by_scope(new.registries);
    let mut old_scopes: Vec<&&str> = old_map.keys().collect();
    old_scopes.sort();
    for scope in old_scopes {
        if !new_map.contains_key(*scope) {
            return unsafe_because(format!("registry {scope} has been removed"));
        }
    }
    let mut new_scopes: Vec<(&&str, &&Registry)> = new_map.iter().collect();
    new_scopes.sort_by_key(|(s, _)| **s);
    for (scope, new_reg) in new_scopes {
        match old_map.get(*scope) {
            Some(old_reg) if old_reg != new_reg => {
                if old_reg.prefix != new_reg.prefix {
                    return unsafe_because(format!(
                        "prefix value for registry {scope} has changed from {} to {}",
                        old_reg.prefix, new_reg.prefix
                    ));
                }
                if old_reg.location != new_reg.location {
                    return unsafe_because(format!(
                        "location value for registry {scope} has changed from {} to {}",
                        old_reg.location, new_reg.location
                    ));
                }
                if old_reg.blocked != new_reg.blocked {
                    return unsafe_because(format!(
                        "blocked value for registry {scope} has changed from {} to {}",
                        old_reg.blocked, new_reg.blocked
                    ));
                }
                if old_reg.insecure != new_reg.insecure {
                    return unsafe_because(format!(
                        "insecure value for registry {scope} has changed from {} to {}",
                        old_reg.insecure, new_reg.insecure
                    ));
                }
                for m in &old_reg.mirrors {
                    if !new_reg.mirrors.iter().any(|n| n.location == m.location) {
                        return unsafe_because(format!(
                            "mirror {} has been removed in registry {scope}",
                            m.location
                        ));
                    }
                }
                for m in &new_reg.mirrors {
                    match old_reg.mirrors.iter().find(|o| o.location == m.location) {
                        Some(o) => {
                            if m.pull_from_mirror != o.pull_from_mirror
                                && m.pull_from_mirror != DIGEST_ONLY
                            {
                                return unsafe_because(format!(
                                    "pull-from-mirror value for mirror {} has changed from {} to {}",
                                    m.location, o.pull_from_mirror, m.pull_from_mirror
                                ));
                            }
                        }
                        None => {
                            if m.pull_from_mirror != DIGEST_ONLY && !new_reg.mirror_by_digest_only {
                                return unsafe_because(format!(
                                    "mirror {} has been added in registry {scope} that has pull-from-mirror set to {}",
                                    m.location, m.pull_from_mirror
                                ));
                            }
                        }
                    }
                }
            }
            Some(_) => {}
            None => {
                if !all_digest_only(new_reg) {
                    return unsafe_because(format!("registry {scope} has been added with mirror does not set pull-from-mirror=digest-only"));
                }
            }
        }
    }
    Classification {
        safe: true,
        reason: "changes made are safe to skip drain (CRI-O reload only)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::mirrors::model::{Mirror, TAG_ONLY};

    fn reg(loc: &str, mirrors: &[(&str, &str)]) -> Registry {
        Registry {
            location: loc.into(),
            mirrors: mirrors
                .iter()
                .map(|(l, p)| Mirror {
                    location: l.to_string(),
                    insecure: false,
                    pull_from_mirror: p.to_string(),
                })
                .collect(),
            ..Registry::default()
        }
    }

    #[test]
    fn digest_additions_are_safe_tag_blocked_and_removals_are_not() {
        let empty: Vec<Registry> = vec![];
        let idms = vec![reg("a.com", &[("m.com", DIGEST_ONLY)])];
        let itms = vec![reg("a.com", &[("m.com", TAG_ONLY)])];
        let v = |r: &'static [Registry]| ConfView {
            search: &[],
            registries: r,
        };
        let leak = |x: Vec<Registry>| -> &'static [Registry] { Box::leak(x.into_boxed_slice()) };
        assert!(classify(&v(leak(empty.clone())), &v(leak(idms.clone()))).safe);
        assert!(!classify(&v(leak(empty.clone())), &v(leak(itms))).safe);
        assert!(!classify(&v(leak(idms.clone())), &v(leak(empty.clone()))).safe);
        let mut blocked = idms.clone();
        blocked[0].blocked = true;
        assert!(!classify(&v(leak(idms.clone())), &v(leak(blocked))).safe);
        let plain_new = vec![reg("b.com", &[])];
        assert!(!classify(&v(leak(empty)), &v(leak(plain_new))).safe);
    }
}
