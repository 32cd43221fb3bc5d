//! Scope arithmetic shared by validation, rendering and the effective-config loader.
//!
//! A *scope* is what a `[[registry]]` entry applies to: its `prefix`, or its `location` when the prefix
//! is empty. OpenShift (runtime-utils `ScopeIsNestedInsideScope`, `IsValidRegistriesConfScope`) decides
//! nesting with plain string rules; we copy them exactly, quirks included, because the rendered file has
//! to match what the Machine Config Operator writes.

/// True when `sub` is the same as, or nested inside, `sup` (runtime-utils `ScopeIsNestedInsideScope`).
///
/// Rules: equal strings; `sub` starts with `sup` followed by `/`; or `sup` is a wildcard `*.domain` and
/// the host part of `sub` ends with `.domain`. The host part is the text before the first `:` (which
/// must then contain no `/`), or without a `:`, the text before the first `/`.
pub fn is_nested(sub: &str, sup: &str) -> bool {
    if sub == sup {
        return true;
    }
    if let Some(rest) = sub.strip_prefix(sup) {
        if rest.starts_with('/') {
            return true;
        }
    }
    if let Some(domain) = sup.strip_prefix('*') {
        if domain.starts_with('.') {
            if let Some(host) = host_part(sub) {
                return host.ends_with(domain);
            }
        }
    }
    false
}

/// The host part of a scope as runtime-utils computes it for wildcard matching, or `None` when the
/// text before the first `:` contains a `/` (such a scope can never be inside a wildcard).
pub fn host_part(scope: &str) -> Option<&str> {
    match scope.find(':') {
        Some(colon) => {
            let host = &scope[..colon];
            if host.contains('/') {
                None
            } else {
                Some(host)
            }
        }
        None => Some(scope.split('/').next().unwrap_or(scope)),
    }
}

/// Every scope `sup` for which `is_nested(scope, sup)` holds, the scope itself included.
///
/// Used to replace the quadratic "for every entry, for every scope" loops of the reference algorithm
/// with hash lookups: the candidates are the scope, its `/`-prefixes and `*`-suffixes of its host.
pub fn enclosing_scopes(scope: &str) -> impl Iterator<Item = std::borrow::Cow<'_, str>> + '_ {
    use std::borrow::Cow;
    let slash_prefixes = scope
        .match_indices('/')
        .map(move |(i, _)| Cow::Borrowed(&scope[..i]));
    let wildcards = host_part(scope).into_iter().flat_map(|host| {
        host.match_indices('.')
            .map(move |(i, _)| Cow::Owned(format!("*{}", &host[i..])))
    });
    std::iter::once(Cow::Borrowed(scope))
        .chain(slash_prefixes)
        .chain(wildcards)
}

/// runtime-utils `IsValidRegistriesConfScope`: `""` is invalid; a scope without `*` is valid without
/// further checks; a scope with `*` is valid only as `*.` followed by text free of `/ @ : *`.
pub fn is_valid_registries_conf_scope(scope: &str) -> bool {
    if scope.is_empty() {
        return false;
    }
    if !scope.contains('*') {
        return true;
    }
    match scope.strip_prefix("*.") {
        Some(rest) => !rest.contains(['/', '@', ':', '*']),
        None => false,
    }
}

/// True for a wildcard scope (`*.example.com`).
pub fn is_wildcard(scope: &str) -> bool {
    scope.starts_with("*.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_table_from_runtime_utils() {
        // (sub, super, expected) — the rules of ScopeIsNestedInsideScope.
        let cases = [
            ("example.com", "example.com", true),
            ("example.com/ns", "example.com", true),
            ("example.com", "example.com/ns", false),
            ("example.com.evil", "example.com", false),
            ("example.com:443", "example.com", false),
            ("quay.io:443", "quay.io", false),
            ("example.com", "*.example.com", false),
            ("a.example.com", "*.example.com", true),
            ("*.a.example.com", "*.example.com", true),
            ("x.example.com:443/p", "*.example.com", true),
            ("x.example.com/p:tag", "*.example.com", false),
            ("x.example.com/ns/repo", "*.example.com", true),
            ("aexample.com", "*.example.com", false),
            ("example.com/", "example.com", true),
            ("example.com", "example.com/", false),
        ];
        for (sub, sup, want) in cases {
            assert_eq!(is_nested(sub, sup), want, "is_nested({sub:?}, {sup:?})");
        }
    }

    #[test]
    fn enclosing_scopes_agrees_with_is_nested() {
        let scopes = [
            "a.b.example.com:5000/ns/repo",
            "*.b.example.com",
            "example.com/ns/",
            "x/y:z/w",
            "host.",
            "",
        ];
        let supers = [
            "*.example.com",
            "*.com",
            "*.b.example.com",
            "a.b.example.com:5000",
            "a.b.example.com:5000/ns",
            "example.com",
            "example.com/ns",
            "x",
            "x/y:z",
            "*.",
            "host.",
            "",
            "*",
        ];
        for s in scopes {
            let enc: Vec<String> = enclosing_scopes(s).map(|c| c.into_owned()).collect();
            for sup in supers {
                assert_eq!(
                    enc.iter().any(|e| e == sup),
                    is_nested(s, sup),
                    "{s:?} in {sup:?}"
                );
            }
        }
    }

    #[test]
    fn valid_scopes() {
        assert!(!is_valid_registries_conf_scope(""));
        assert!(is_valid_registries_conf_scope("example.com/ns:tag@x"));
        assert!(is_valid_registries_conf_scope("*.example.com"));
        assert!(!is_valid_registries_conf_scope("*.example.com/ns"));
        assert!(!is_valid_registries_conf_scope("*.example.com:5000"));
        assert!(!is_valid_registries_conf_scope("*example.com"));
        assert!(!is_valid_registries_conf_scope("a.*.com"));
        assert!(!is_valid_registries_conf_scope("*.a.*"));
    }
}
