//! A plain data model of the parts of registries.conf the mirror engine reads and edits.
//!
//! The engine runs MCO's edit algorithm on this model (fast, easy to compare with the reference
//! implementation) and only then maps the differences back onto the administrator's TOML document.

/// One `[[registry]]` entry (containers-registries.conf(5)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    /// `prefix`; empty when absent.
    pub prefix: String,
    /// `location`; empty when absent.
    pub location: String,
    /// `insecure`.
    pub insecure: bool,
    /// `blocked`.
    pub blocked: bool,
    /// `mirror-by-digest-only`.
    pub mirror_by_digest_only: bool,
    /// `[[registry.mirror]]` in order.
    pub mirrors: Vec<Mirror>,
}

impl Registry {
    /// runtime-utils `registryScope`: the prefix, else the location.
    pub fn scope(&self) -> &str {
        if self.prefix.is_empty() {
            &self.location
        } else {
            &self.prefix
        }
    }

    /// A new entry for `scope` as MCO creates it: wildcard scopes go in `prefix`, others in `location`.
    pub fn for_scope(scope: &str) -> Registry {
        if scope.starts_with("*.") {
            Registry {
                prefix: scope.to_string(),
                ..Registry::default()
            }
        } else {
            Registry {
                location: scope.to_string(),
                ..Registry::default()
            }
        }
    }
}

/// One `[[registry.mirror]]` endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mirror {
    /// `location`.
    pub location: String,
    /// `insecure`.
    pub insecure: bool,
    /// `pull-from-mirror`; empty when absent.
    pub pull_from_mirror: String,
}

/// `pull-from-mirror` value for digest mirrors (ICSP, IDMS).
pub const DIGEST_ONLY: &str = "digest-only";
/// `pull-from-mirror` value for tag mirrors (ITMS).
pub const TAG_ONLY: &str = "tag-only";
