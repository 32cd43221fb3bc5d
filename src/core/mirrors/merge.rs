//! Validation of mirror policies and the merge into one ordered mirror list per source
//! (registries-spec §2 and §3; runtime-utils `mergedMirrorSets`, `topo.go`; MCO
//! `validateRegistriesConfScopes`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::OnceLock;

use regex::Regex;

use super::policy::{MirrorEntry, MirrorKind, PolicySet, SourcePolicy};
use super::scope::is_valid_registries_conf_scope;
use super::{MirrorError, Style};

/// One source with its merged mirrors, ready to be rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorBucket {
    /// The source exactly as written in the policies.
    pub source: String,
    /// Mirrors in topological order (may contain the source itself, see spec §3.4).
    pub mirrors: Vec<String>,
    /// Some kept entry had `NeverContactSource`.
    pub blocked: bool,
}

/// The result of merging: digest buckets (IDMS + ICSP) and tag buckets (ITMS), each sorted by source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergedMirrorSets {
    /// Rendered with `pull-from-mirror = "digest-only"` (or registry-level digest-only in legacy style).
    pub digest: Vec<MirrorBucket>,
    /// Rendered with `pull-from-mirror = "tag-only"`.
    pub tag: Vec<MirrorBucket>,
}

/// The exact patterns of the IDMS/ITMS CRDs (`+kubebuilder:validation:Pattern`) that MCO also
/// uses for ICSP entries: a docker reference without tag or digest, or for sources `*.domain`.
const HOST_COMPONENT: &str = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
const PATH_COMPONENT: &str = r"[a-z0-9]+(?:(?:(?:[._]|__|[-]*)[a-z0-9]+)+)?";

fn mirror_pattern() -> String {
    format!(
        r"(?:{HOST_COMPONENT}(?:(?:\.{HOST_COMPONENT})+)?(?::[0-9]+)?)(?:(?:/{PATH_COMPONENT})+)?"
    )
}

fn source_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        let wildcard = format!(r"\*(?:\.{HOST_COMPONENT})+");
        Regex::new(&format!(r"^(?:{wildcard}|{})$", mirror_pattern()))
            .expect("source regex compiles")
    })
}

fn mirror_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(&format!(r"^(?:{})$", mirror_pattern())).expect("mirror regex compiles")
    })
}

/// True when `source` is a valid IDMS/ITMS/ICSP source (MCO ≥ 4.16).
pub fn is_valid_source(source: &str) -> bool {
    source_regex().is_match(source)
}

/// True when `mirror` is a valid mirror location (MCO ≥ 4.16).
pub fn is_valid_mirror(mirror: &str) -> bool {
    mirror_regex().is_match(mirror)
}

fn parse_source_policy(e: &MirrorEntry) -> Result<SourcePolicy, MirrorError> {
    match e.source_policy.as_deref() {
        None | Some("") | Some("AllowContactingSource") => Ok(SourcePolicy::AllowContactingSource),
        Some("NeverContactSource") => Ok(SourcePolicy::NeverContactSource),
        Some(other) => Err(MirrorError::policy(
            e,
            "mirrorSourcePolicy",
            format!("unsupported mirrorSourcePolicy {other:?}: must be NeverContactSource or AllowContactingSource"),
        )),
    }
}

/// Entries in MCO's validation order: all IDMS, then all ICSP, then all ITMS, each in input order.
fn validation_order(set: &PolicySet) -> impl Iterator<Item = &MirrorEntry> {
    [MirrorKind::Idms, MirrorKind::Icsp, MirrorKind::Itms]
        .into_iter()
        .flat_map(move |k| set.entries.iter().filter(move |e| e.kind == k))
}

/// Validate the policies as MCO does before rendering (spec §2, or §11 for the legacy style).
/// The first failure wins, in MCO's order.
pub fn validate(set: &PolicySet, style: Style) -> Result<(), MirrorError> {
    let image_origin = set.image_origin.as_ref();
    if let Some(img) = &set.image {
        for (list, what, field) in [
            (
                &img.insecure,
                "insecure",
                "spec.registrySources.insecureRegistries",
            ),
            (
                &img.blocked,
                "blocked",
                "spec.registrySources.blockedRegistries",
            ),
        ] {
            for (i, scope) in list.iter().flatten().enumerate() {
                if !is_valid_registries_conf_scope(scope) {
                    return Err(MirrorError::Validation {
                        location: format!(
                            "{}: {field}[{i}]",
                            image_origin.map(|o| o.to_string()).unwrap_or_default()
                        ),
                        message: format!("invalid entry for {what} registries {scope:?}"),
                    });
                }
            }
        }
    }
    match style {
        Style::Current => validate_current(set),
        Style::Legacy => validate_legacy(set),
    }
}

fn validate_current(set: &PolicySet) -> Result<(), MirrorError> {
    let mut policies: HashMap<&str, SourcePolicy> = HashMap::new();
    for e in validation_order(set) {
        if !is_valid_source(&e.source) {
            return Err(MirrorError::policy(
                e,
                "source",
                format!("invalid format for source {:?}", e.source),
            ));
        }
        let policy = parse_source_policy(e)?;
        match policies.get(e.source.as_str()) {
            Some(seen) if *seen != policy => {
                return Err(MirrorError::policy(
                    e,
                    "mirrorSourcePolicy",
                    format!(
                        "conflicting mirrorSourcePolicy is set for the same source {:?} in imagedigestmirrorsets, imagetagmirrorsets, or imagecontentsourcepolicies",
                        e.source
                    ),
                ))
            }
            Some(_) => {}
            None => {
                policies.insert(&e.source, policy);
            }
        }
        for (j, m) in e.mirrors.iter().enumerate() {
            if !is_valid_mirror(m) {
                return Err(MirrorError::policy(
                    e,
                    &format!("mirrors[{j}]"),
                    format!("invalid format for mirror {m:?}"),
                ));
            }
            if policy == SourcePolicy::NeverContactSource && *m == e.source {
                return Err(MirrorError::policy(
                    e,
                    &format!("mirrors[{j}]"),
                    format!("cannot set mirrorSourcePolicy: NeverContactSource if the source {:?} is one of the mirrors", e.source),
                ));
            }
        }
    }
    Ok(())
}

fn validate_legacy(set: &PolicySet) -> Result<(), MirrorError> {
    if let Some(e) = set.entries.iter().find(|e| e.kind != MirrorKind::Icsp) {
        return Err(MirrorError::Validation {
            location: e.origin.to_string(),
            message: format!("{} is not supported with --style legacy (OpenShift 4.11–4.12 renders ImageContentSourcePolicy only)", e.kind.kind_name()),
        });
    }
    for kind in [MirrorKind::Idms, MirrorKind::Itms] {
        if let Some(o) = set.objects_of(kind).next() {
            return Err(MirrorError::Validation {
                location: o.to_string(),
                message: format!("{} is not supported with --style legacy (OpenShift 4.11–4.12 renders ImageContentSourcePolicy only)", kind.kind_name()),
            });
        }
    }
    for e in &set.entries {
        if e.source.is_empty() {
            return Err(MirrorError::policy(
                e,
                "source",
                "invalid empty entry for source configuration".into(),
            ));
        }
        if e.source.contains('*') {
            return Err(MirrorError::policy(
                e,
                "source",
                format!(
                    "wildcard entries are not supported with mirror configuration {:?}",
                    e.source
                ),
            ));
        }
        for (j, m) in e.mirrors.iter().enumerate() {
            if m.is_empty() {
                return Err(MirrorError::policy(
                    e,
                    &format!("mirrors[{j}]"),
                    "invalid empty entry for mirror configuration".into(),
                ));
            }
            if m.contains('*') {
                return Err(MirrorError::policy(
                    e,
                    &format!("mirrors[{j}]"),
                    format!("wildcard entries are not supported with mirror configuration {m:?}"),
                ));
            }
        }
    }
    Ok(())
}

/// runtime-utils `mirrorsContainsARealMirror`: some mirror differs from the source.
fn contains_a_real_mirror(e: &MirrorEntry) -> bool {
    e.mirrors.iter().any(|m| *m != e.source)
}

/// Merge validated entries into per-source buckets with topologically ordered mirrors (spec §3).
pub fn merge(set: &PolicySet) -> MergedMirrorSets {
    let group = |digest: bool| -> Vec<MirrorBucket> {
        let mut buckets: BTreeMap<&str, (Vec<&MirrorEntry>, bool)> = BTreeMap::new();
        for e in &set.entries {
            let is_digest = e.kind != MirrorKind::Itms;
            if is_digest != digest || !contains_a_real_mirror(e) {
                continue;
            }
            let b = buckets.entry(e.source.as_str()).or_default();
            b.0.push(e);
            if e.source_policy.as_deref() == Some("NeverContactSource") {
                b.1 = true;
            }
        }
        buckets
            .into_iter()
            .map(|(source, (entries, blocked))| MirrorBucket {
                source: source.to_string(),
                mirrors: merged_mirrors(source, entries.iter().map(|e| e.mirrors.as_slice())),
                blocked,
            })
            .collect()
    };
    MergedMirrorSets {
        digest: group(true),
        tag: group(false),
    }
}

/// runtime-utils `mergedMirrors`: build the precedence graph of every entry's mirror list (plus
/// last-mirror → source when the entry does not list the source) and sort it topologically
/// (Kahn, FIFO, ascending batches, deterministic cycle breaking). Spec §3.4.
pub fn merged_mirrors<'a>(
    source: &str,
    lists: impl IntoIterator<Item = &'a [String]>,
) -> Vec<String> {
    let mut graph = Graph::default();
    for list in lists {
        for pair in list.windows(2) {
            graph.add_edge(&pair[0], &pair[1]);
        }
        for m in list {
            graph.add_node(m);
        }
        if let Some(last) = list.last() {
            if !list.iter().any(|m| m == source) {
                graph.add_edge(last, source);
            }
        }
    }
    let mut sorted = graph.sorted();
    if sorted.last().map(|s| s == source).unwrap_or(false) {
        sorted.pop();
    }
    sorted
}

#[derive(Default)]
struct Graph<'a> {
    /// node -> set of successors
    succ: BTreeMap<&'a str, BTreeSet<&'a str>>,
    /// node -> set of predecessors
    pred: BTreeMap<&'a str, BTreeSet<&'a str>>,
}

impl<'a> Graph<'a> {
    fn add_node(&mut self, n: &'a str) {
        self.succ.entry(n).or_default();
        self.pred.entry(n).or_default();
    }
    fn add_edge(&mut self, from: &'a str, to: &'a str) {
        self.add_node(from);
        self.add_node(to);
        self.succ.entry(from).or_default().insert(to);
        self.pred.entry(to).or_default().insert(from);
    }

    fn sorted(&self) -> Vec<String> {
        let mut remaining_preds: BTreeMap<&str, usize> =
            self.pred.iter().map(|(n, p)| (*n, p.len())).collect();
        let mut emitted: BTreeSet<&str> = BTreeSet::new();
        let mut out = Vec::with_capacity(self.succ.len());
        let mut queue: std::collections::VecDeque<&str> = remaining_preds
            .iter()
            .filter(|(_, c)| **c == 0)
            .map(|(n, _)| *n)
            .collect();
        let mut queued: BTreeSet<&str> = queue.iter().copied().collect();
        while out.len() < self.succ.len() {
            let node = match queue.pop_front() {
                Some(n) => n,
                None => {
                    // Cycle: take the smallest node not yet emitted.
                    match self.succ.keys().find(|n| !emitted.contains(**n)) {
                        Some(n) => n,
                        None => break,
                    }
                }
            };
            if !emitted.insert(node) {
                continue;
            }
            out.push(node.to_string());
            let mut batch: Vec<&str> = Vec::new();
            for s in self.succ.get(node).into_iter().flatten() {
                if let Some(c) = remaining_preds.get_mut(s) {
                    if *c > 0 {
                        *c -= 1;
                        if *c == 0 && !emitted.contains(s) && !queued.contains(s) {
                            batch.push(s);
                        }
                    }
                }
            }
            batch.sort_unstable();
            for s in batch {
                queued.insert(s);
                queue.push_back(s);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    fn mm(source: &str, lists: &[&[&str]]) -> Vec<String> {
        let owned: Vec<Vec<String>> = lists.iter().map(|l| v(l)).collect();
        merged_mirrors(source, owned.iter().map(|l| l.as_slice()))
    }

    #[test]
    fn spec_examples() {
        assert_eq!(mm("src", &[&["B", "C"], &["A", "B"]]), v(&["A", "B", "C"]));
        assert_eq!(
            mm("src", &[&["z1", "y2"], &["y2", "x3"]]),
            v(&["z1", "y2", "x3"])
        );
        assert_eq!(mm("src", &[&["c"], &["a"], &["b"]]), v(&["a", "b", "c"]));
        assert_eq!(
            mm("src", &[&["r1", "r2"], &["lm2", "r2", "r1"]]),
            v(&["lm2", "r1", "r2"])
        );
    }

    #[test]
    fn source_listed_as_mirror_is_kept_unless_last() {
        assert_eq!(mm("s", &[&["m1", "s"]]), v(&["m1"]));
        assert_eq!(mm("s", &[&["s", "m1"]]), v(&["s", "m1"]));
    }

    #[test]
    fn self_loop_from_duplicate_is_broken_by_sort_order() {
        // [m1, m1] adds m1->m1 and m1->source: with a source sorting before m1 the cycle breaker emits it first.
        assert_eq!(mm("a-source", &[&["m1", "m1"]]), v(&["a-source", "m1"]));
        assert_eq!(mm("z-source", &[&["m1", "m1"]]), v(&["m1"]));
    }

    #[test]
    fn regexes() {
        for ok in [
            "registry.redhat.io",
            "a.com/ns/repo",
            "localhost:5000/a_b/c__d/e-f/g--h",
            "*.example.com",
            "1.2.3.4:5000",
        ] {
            assert!(is_valid_source(ok), "{ok}");
        }
        for bad in [
            "",
            "A.com/Repo",
            "*.a.com/ns",
            "a.com/",
            "a.com:port",
            " a.com",
            "a.com ",
            "http://a.com",
            "a.com/x:tag",
            "a.com@sha256:abc",
            "*a.com",
        ] {
            assert!(!is_valid_source(bad), "{bad}");
        }
        assert!(!is_valid_mirror("*.a.com"));
        assert!(is_valid_mirror("mirror.example.net/image"));
    }
}
