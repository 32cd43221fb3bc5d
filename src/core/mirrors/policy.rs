//! The OpenShift objects the mirror engine reads: ImageContentSourcePolicy, ImageDigestMirrorSet,
//! ImageTagMirrorSet and the cluster `Image` config, parsed from YAML or JSON text.
//!
//! Parsing is pure (text in, objects out) so the same code serves the CLI, the daemon's policy
//! directory watcher and, later, objects read from the API server. Every object keeps where it came
//! from (file, line, kind/name) so an error can point an administrator at the exact place to fix.

use std::fmt;

use serde::Deserialize;
use serde_saphyr::Spanned;

/// Largest policy file accepted; OpenShift objects are limited to ~1.5 MiB by etcd, so anything far
/// larger is a mistake or an attack, and is refused before parsing.
pub const MAX_POLICY_BYTES: usize = 16 * 1024 * 1024;

/// Where an object (or one of its fields) was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The file the object came from, as given by the user (or `<stdin>`/`<api>`).
    pub file: String,
    /// 1-based line of the object in that file (0 = unknown).
    pub line: u64,
    /// `Kind/name` of the object, e.g. `ImageDigestMirrorSet/vendor`.
    pub object: String,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: {}", self.file, self.line, self.object)
        } else {
            write!(f, "{}: {}", self.file, self.object)
        }
    }
}

/// `mirrorSourcePolicy` of an IDMS/ITMS entry; ICSP entries are always `AllowContactingSource`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourcePolicy {
    /// The source is tried last, after the mirrors (the default).
    AllowContactingSource,
    /// The source is never contacted: rendered as `blocked = true` on the source entry.
    NeverContactSource,
}

/// Which OpenShift kind an entry came from; decides its group (digest or tag) and validation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MirrorKind {
    /// `ImageDigestMirrorSet` (config.openshift.io/v1).
    Idms,
    /// `ImageContentSourcePolicy` (operator.openshift.io/v1alpha1).
    Icsp,
    /// `ImageTagMirrorSet` (config.openshift.io/v1).
    Itms,
}

impl MirrorKind {
    /// The Kubernetes kind name.
    pub fn kind_name(self) -> &'static str {
        match self {
            MirrorKind::Idms => "ImageDigestMirrorSet",
            MirrorKind::Icsp => "ImageContentSourcePolicy",
            MirrorKind::Itms => "ImageTagMirrorSet",
        }
    }
    /// The field holding the entries, for error messages.
    pub fn field_name(self) -> &'static str {
        match self {
            MirrorKind::Idms => "spec.imageDigestMirrors",
            MirrorKind::Icsp => "spec.repositoryDigestMirrors",
            MirrorKind::Itms => "spec.imageTagMirrors",
        }
    }
}

/// One `{source, mirrors, mirrorSourcePolicy}` entry of a mirror object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorEntry {
    /// The kind of the object this entry belongs to.
    pub kind: MirrorKind,
    /// The repository or registry being mirrored, exactly as written (no normalisation).
    pub source: String,
    /// Mirrors in the order written, duplicates kept (ICSP allows them; the merge relies on them).
    pub mirrors: Vec<String>,
    /// `mirrorSourcePolicy` as written: `None` for absent or `""` (ICSP has no such field).
    pub source_policy: Option<String>,
    /// Where the entry is: object origin plus `spec.<field>[i]` path.
    pub origin: Origin,
    /// Field path within the object, e.g. `spec.imageDigestMirrors[2]`.
    pub path: String,
}

/// `spec.registrySources` of the cluster `Image` object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistrySources {
    /// `insecureRegistries`: scopes rendered with `insecure = true`.
    pub insecure: Option<Vec<String>>,
    /// `blockedRegistries`: scopes rendered with `blocked = true`.
    pub blocked: Option<Vec<String>>,
    /// `allowedRegistries`: policy.json only; never rendered into registries.conf.
    pub allowed: Option<Vec<String>>,
    /// `containerRuntimeSearchRegistries`: the search-registries drop-in.
    pub search: Option<Vec<String>>,
}

/// Everything the mirror engine renders from, gathered from all policy inputs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicySet {
    /// All mirror entries in input order (files in argument/lexical order, documents in file order).
    pub entries: Vec<MirrorEntry>,
    /// The `Image/cluster` registry sources, when such an object was given.
    pub image: Option<RegistrySources>,
    /// Where `Image/cluster` came from.
    pub image_origin: Option<Origin>,
    /// Objects by `Kind/name`, in input order, for reporting (`mirrors check`, status).
    pub objects: Vec<Origin>,
    /// Non-fatal findings (an `Image` not named `cluster`, …).
    pub warnings: Vec<String>,
}

impl PolicySet {
    /// True when no mirror object and no insecure/blocked list is present: MCO then leaves
    /// registries.conf alone (spec §1.8), and so does the agent (it removes only what it manages).
    pub fn is_noop(&self) -> bool {
        let lists_nil = self
            .image
            .as_ref()
            .map(|i| i.insecure.is_none() && i.blocked.is_none())
            .unwrap_or(true);
        self.entries.is_empty() && lists_nil
    }

    /// Objects of each mirror kind present, for `--style legacy` checks.
    pub fn objects_of(&self, kind: MirrorKind) -> impl Iterator<Item = &Origin> {
        self.objects.iter().filter(move |o| {
            o.object.starts_with(kind.kind_name())
                && o.object[kind.kind_name().len()..].starts_with('/')
        })
    }
}

/// Errors found while reading policy text. Each names the file, line and object.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    /// The text is not valid UTF-8 (binary garbage, a wrong file).
    #[error("{file}: not valid UTF-8 text (byte {offset})")]
    NotUtf8 { file: String, offset: usize },
    /// The file is larger than [`MAX_POLICY_BYTES`].
    #[error("{file}: {size} bytes is larger than the {max} bytes a policy file may have")]
    TooLarge {
        file: String,
        size: usize,
        max: usize,
    },
    /// YAML/JSON syntax error or a field of the wrong type.
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
    /// A document without `kind`, or a kind the engine does not know.
    #[error("{origin}: {message}")]
    Object { origin: Origin, message: String },
    /// Two `Image` objects named `cluster`.
    #[error("{second}: a second Image/cluster object (the first is at {first})")]
    DuplicateImage { first: Origin, second: Origin },
}

#[derive(Deserialize)]
struct RawObject {
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    kind: Option<String>,
    metadata: Option<RawMeta>,
    spec: Option<RawSpec>,
    items: Option<Vec<Spanned<RawObject>>>,
}

#[derive(Deserialize, Default)]
struct RawMeta {
    name: Option<String>,
}

#[derive(Deserialize, Default)]
struct RawSpec {
    #[serde(rename = "repositoryDigestMirrors")]
    repository_digest_mirrors: Option<Vec<Spanned<RawMirrorEntry>>>,
    #[serde(rename = "imageDigestMirrors")]
    image_digest_mirrors: Option<Vec<Spanned<RawMirrorEntry>>>,
    #[serde(rename = "imageTagMirrors")]
    image_tag_mirrors: Option<Vec<Spanned<RawMirrorEntry>>>,
    #[serde(rename = "registrySources")]
    registry_sources: Option<RawRegistrySources>,
}

#[derive(Deserialize)]
struct RawMirrorEntry {
    source: Option<String>,
    mirrors: Option<Vec<String>>,
    #[serde(rename = "mirrorSourcePolicy")]
    mirror_source_policy: Option<String>,
}

#[derive(Deserialize, Default)]
struct RawRegistrySources {
    #[serde(rename = "insecureRegistries")]
    insecure_registries: Option<Vec<String>>,
    #[serde(rename = "blockedRegistries")]
    blocked_registries: Option<Vec<String>>,
    #[serde(rename = "allowedRegistries")]
    allowed_registries: Option<Vec<String>>,
    #[serde(rename = "containerRuntimeSearchRegistries")]
    container_runtime_search_registries: Option<Vec<String>>,
}

impl PolicySet {
    /// Add the objects of a set parsed on its own from a later file, exactly as if that file's
    /// text had been added here with [`PolicySet::add_text`] (which gives the same error for a
    /// second `Image/cluster`). Lets the daemon re-parse only the files that changed.
    pub fn append(&mut self, other: &PolicySet) -> Result<(), PolicyError> {
        if let (Some(first), Some(second)) = (&self.image_origin, &other.image_origin) {
            return Err(PolicyError::DuplicateImage {
                first: first.clone(),
                second: second.clone(),
            });
        }
        self.entries.extend(other.entries.iter().cloned());
        self.objects.extend(other.objects.iter().cloned());
        self.warnings.extend(other.warnings.iter().cloned());
        if other.image_origin.is_some() {
            self.image = other.image.clone();
            self.image_origin = other.image_origin.clone();
        }
        Ok(())
    }

    /// Parse one file's bytes (YAML or JSON, one or more documents, `kind: List` accepted) and add
    /// its objects to the set. `file` is only used in messages.
    pub fn add_text(&mut self, file: &str, bytes: &[u8]) -> Result<(), PolicyError> {
        if bytes.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::TooLarge {
                file: file.to_string(),
                size: bytes.len(),
                max: MAX_POLICY_BYTES,
            });
        }
        let text = std::str::from_utf8(bytes).map_err(|e| PolicyError::NotUtf8 {
            file: file.to_string(),
            offset: e.valid_up_to(),
        })?;
        if text.contains('\0') {
            let offset = text.find('\0').unwrap_or(0);
            return Err(PolicyError::NotUtf8 {
                file: file.to_string(),
                offset,
            });
        }
        let options = serde_saphyr::options! {
            budget: serde_saphyr::budget! {
                max_anchors: 1000,
                max_depth: 64,
            },
        };
        let docs: Vec<Spanned<RawObject>> = serde_saphyr::from_multiple_with_options(text, options)
            .map_err(|e| PolicyError::Syntax {
                file: file.to_string(),
                message: one_line(&e.to_string()),
            })?;
        for doc in docs {
            let line = doc.defined.line();
            self.add_object(file, line, doc.value, false)?;
        }
        Ok(())
    }

    fn add_object(
        &mut self,
        file: &str,
        line: u64,
        raw: RawObject,
        in_list: bool,
    ) -> Result<(), PolicyError> {
        let kind = raw.kind.clone().unwrap_or_default();
        let name = raw
            .metadata
            .as_ref()
            .and_then(|m| m.name.clone())
            .unwrap_or_default();
        let origin = Origin {
            file: file.to_string(),
            line,
            object: format!(
                "{}/{}",
                if kind.is_empty() { "<no kind>" } else { &kind },
                name
            ),
        };
        let api = raw.api_version.clone().unwrap_or_default();
        let check_api = |want: &str| -> Result<(), PolicyError> {
            if api.is_empty() || api == want {
                Ok(())
            } else {
                Err(PolicyError::Object {
                    origin: origin.clone(),
                    message: format!("apiVersion: {api:?} is not {want:?}"),
                })
            }
        };
        let mirror_kind = match kind.as_str() {
            "List" if !in_list => {
                for item in raw.items.unwrap_or_default() {
                    let line = item.defined.line();
                    self.add_object(file, line, item.value, true)?;
                }
                return Ok(());
            }
            "ImageContentSourcePolicy" => {
                check_api("operator.openshift.io/v1alpha1")?;
                MirrorKind::Icsp
            }
            "ImageDigestMirrorSet" => {
                check_api("config.openshift.io/v1")?;
                MirrorKind::Idms
            }
            "ImageTagMirrorSet" => {
                check_api("config.openshift.io/v1")?;
                MirrorKind::Itms
            }
            "Image" => {
                check_api("config.openshift.io/v1")?;
                if name != "cluster" {
                    self.warnings.push(format!("{origin}: ignored: only the Image object named \"cluster\" is used"));
                    return Ok(());
                }
                if let Some(first) = &self.image_origin {
                    return Err(PolicyError::DuplicateImage { first: first.clone(), second: origin });
                }
                let rs = raw.spec.and_then(|s| s.registry_sources).unwrap_or_default();
                self.image = Some(RegistrySources {
                    insecure: rs.insecure_registries,
                    blocked: rs.blocked_registries,
                    allowed: rs.allowed_registries,
                    search: rs.container_runtime_search_registries,
                });
                self.image_origin = Some(origin.clone());
                self.objects.push(origin);
                return Ok(());
            }
            "" => {
                return Err(PolicyError::Object { origin, message: "kind: missing; expected ImageContentSourcePolicy, ImageDigestMirrorSet, ImageTagMirrorSet, Image or List".into() })
            }
            other => {
                return Err(PolicyError::Object {
                    origin,
                    message: format!("kind: {other:?} is not one of ImageContentSourcePolicy, ImageDigestMirrorSet, ImageTagMirrorSet, Image, List"),
                })
            }
        };
        let spec = raw.spec.unwrap_or_default();
        let list = match mirror_kind {
            MirrorKind::Icsp => spec.repository_digest_mirrors,
            MirrorKind::Idms => spec.image_digest_mirrors,
            MirrorKind::Itms => spec.image_tag_mirrors,
        };
        for (i, e) in list.unwrap_or_default().into_iter().enumerate() {
            let entry_line = e.defined.line();
            let raw = e.value;
            let source_policy = if mirror_kind == MirrorKind::Icsp {
                None
            } else {
                raw.mirror_source_policy.filter(|p| !p.is_empty())
            };
            self.entries.push(MirrorEntry {
                kind: mirror_kind,
                source: raw.source.unwrap_or_default(),
                mirrors: raw.mirrors.unwrap_or_default(),
                source_policy,
                origin: Origin {
                    line: if entry_line > 0 { entry_line } else { line },
                    ..origin.clone()
                },
                path: format!("{}[{i}]", mirror_kind.field_name()),
            });
        }
        self.objects.push(origin);
        Ok(())
    }
}

/// Collapse a multi-line parser message (serde-saphyr renders snippets) into one line.
fn one_line(s: &str) -> String {
    let joined = s
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    joined
        .strip_prefix("error: ")
        .unwrap_or(&joined)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_kinds_and_lists() {
        let text = r#"
apiVersion: operator.openshift.io/v1alpha1
kind: ImageContentSourcePolicy
metadata: {name: ubi8repo}
spec:
  repositoryDigestMirrors:
  - mirrors: [example.io/example/ubi-minimal, example.com/example/ubi-minimal]
    source: registry.access.redhat.com/ubi8/ubi-minimal
---
apiVersion: v1
kind: List
items:
- apiVersion: config.openshift.io/v1
  kind: ImageTagMirrorSet
  metadata: {name: t}
  spec:
    imageTagMirrors:
    - source: a.com/x
      mirrors: [m.com/x]
      mirrorSourcePolicy: NeverContactSource
- apiVersion: config.openshift.io/v1
  kind: Image
  metadata: {name: cluster}
  spec:
    registrySources:
      insecureRegistries: [insecure.com]
      containerRuntimeSearchRegistries: [s.com]
"#;
        let mut set = PolicySet::default();
        set.add_text("p.yaml", text.as_bytes()).unwrap();
        assert_eq!(set.entries.len(), 2);
        assert_eq!(set.entries[0].kind, MirrorKind::Icsp);
        assert_eq!(set.entries[0].mirrors.len(), 2);
        assert_eq!(
            set.entries[1].source_policy.as_deref(),
            Some("NeverContactSource")
        );
        assert_eq!(
            set.image.as_ref().unwrap().insecure.as_deref(),
            Some(&["insecure.com".to_string()][..])
        );
        assert_eq!(set.objects.len(), 3);
        assert!(
            set.entries[1].origin.line > 10,
            "{:?}",
            set.entries[1].origin
        );
    }

    #[test]
    fn json_is_accepted() {
        let text = r#"{"apiVersion":"config.openshift.io/v1","kind":"ImageDigestMirrorSet","metadata":{"name":"j"},"spec":{"imageDigestMirrors":[{"source":"a.com","mirrors":["b.com"]}]}}"#;
        let mut set = PolicySet::default();
        set.add_text("p.json", text.as_bytes()).unwrap();
        assert_eq!(set.entries[0].source, "a.com");
    }

    #[test]
    fn errors_name_the_file_and_object() {
        let mut set = PolicySet::default();
        let err = set
            .add_text("x.yaml", b"kind: Pod\nmetadata: {name: p}\n")
            .unwrap_err();
        assert!(
            err.to_string().contains("x.yaml:1: Pod/p: kind: \"Pod\""),
            "{err}"
        );
        let err = set.add_text("y.yaml", b"kind: [\n").unwrap_err();
        assert!(err.to_string().starts_with("y.yaml: "), "{err}");
        let err = set.add_text("z.yaml", &[0xff, 0xfe, 0x00]).unwrap_err();
        assert!(matches!(err, PolicyError::NotUtf8 { .. }));
    }

    #[test]
    fn image_not_cluster_is_ignored_and_two_clusters_fail() {
        let mut set = PolicySet::default();
        set.add_text(
            "a.yaml",
            b"apiVersion: config.openshift.io/v1\nkind: Image\nmetadata: {name: other}\n",
        )
        .unwrap();
        assert_eq!(set.warnings.len(), 1);
        assert!(set.image.is_none());
        set.add_text("b.yaml", b"kind: Image\nmetadata: {name: cluster}\n")
            .unwrap();
        let err = set
            .add_text("c.yaml", b"kind: Image\nmetadata: {name: cluster}\n")
            .unwrap_err();
        assert!(matches!(err, PolicyError::DuplicateImage { .. }));
    }
}
