//! The mirror engine: OpenShift mirror policies → registries.conf, rendered as the Machine Config
//! Operator renders them, edited in place with ownership markers, validated as containers/image
//! loads it. Pure: text and data in, text and data out; the CLI and the daemon do the I/O.

pub mod classify;
pub mod containers;
pub mod document;
pub mod engine;
pub mod incremental;
pub mod merge;
pub mod model;
pub mod policy;
#[doc(hidden)]
pub mod reference;
pub mod render;
pub mod scope;

pub use engine::{apply, verify, ApplyOptions, ApplyOutcome, VerifyReport};
pub use policy::PolicySet;

/// Which OpenShift release's rendering to reproduce (registries-spec §9, §11).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Style {
    /// OpenShift ≥ 4.16: per-mirror `pull-from-mirror`, IDMS/ITMS/ICSP merged, regex validation.
    #[default]
    Current,
    /// OpenShift 4.11–4.12: registry-level `mirror-by-digest-only = true`, ICSP only.
    Legacy,
}

impl std::str::FromStr for Style {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "current" => Ok(Style::Current),
            "legacy" => Ok(Style::Legacy),
            other => Err(format!(
                "unknown style {other:?}: expected current or legacy"
            )),
        }
    }
}

/// Everything that can go wrong in the mirror engine. Each variant names the file, object or entry
/// and field, so the one-line `error: …` tells the administrator where to look.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// A policy file could not be read as policies.
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
    /// A policy failed MCO's validation (message is MCO's own text).
    #[error("{location}: {message}")]
    Validation {
        /// `file:line: Kind/name: field path`.
        location: String,
        /// MCO's error message.
        message: String,
    },
    /// MCO's renderer itself failed (e.g. the wildcard nested-scope internal error).
    #[error("could not render registries.conf: {0}")]
    Render(String),
    /// The existing registries.conf cannot be loaded by containers/image.
    #[error("{0} (the existing file is not valid for containers/image; nothing was changed)")]
    InvalidBase(containers::LoadError),
    /// The rendered registries.conf would be rejected by containers/image.
    #[error(
        "{0} (the rendered result would be rejected by containers/image; nothing was changed)"
    )]
    InvalidResult(containers::LoadError),
    /// The document cannot be edited in place (inline arrays, a newer marker, …).
    #[error("{file}: {what}: {message}")]
    NotEditable {
        /// The registries.conf path.
        file: String,
        /// Entry or key.
        what: String,
        /// Why.
        message: String,
    },
}

impl MirrorError {
    /// A validation error located at a policy entry's field.
    pub(crate) fn policy(e: &policy::MirrorEntry, field: &str, message: String) -> MirrorError {
        MirrorError::Validation {
            location: format!("{}: {}.{field}", e.origin, e.path),
            message,
        }
    }
}
