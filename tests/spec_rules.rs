//! Spec-derived tests of the mirror engine (docs/registries-spec.md).
//!
//! Every expectation below was computed by hand from the spec and the upstream Go code
//! (runtime-utils `registries.go`/`topo.go`, MCO `helpers.go`, containers/image
//! `sysregistriesv2`), independently of the Rust renderer. Results are compared semantically
//! (spec §12): entries by scope, mirrors in order with their flags, not bytes.

use std::collections::BTreeMap;

use rhel_node_agent::core::mirrors::containers;
use rhel_node_agent::core::mirrors::engine::{apply, ApplyOptions, ApplyOutcome};
use rhel_node_agent::core::mirrors::merge;
use rhel_node_agent::core::mirrors::{PolicySet, Style};

// ---------------------------------------------------------------------------------------------
// Policy builders (YAML text, as the agent reads it)
// ---------------------------------------------------------------------------------------------

fn list(items: &[&str]) -> String {
    format!(
        "[{}]",
        items
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// A mirror entry without a policy.
fn e(source: &str, mirrors: &[&str]) -> String {
    format!("  - source: {source:?}\n    mirrors: {}\n", list(mirrors))
}

/// A mirror entry with `mirrorSourcePolicy: NeverContactSource`.
fn en(source: &str, mirrors: &[&str]) -> String {
    ep(source, mirrors, "NeverContactSource")
}

/// A mirror entry with an explicit policy.
fn ep(source: &str, mirrors: &[&str], policy: &str) -> String {
    format!(
        "  - source: {source:?}\n    mirrors: {}\n    mirrorSourcePolicy: {policy}\n",
        list(mirrors)
    )
}

fn obj(api: &str, kind: &str, field: &str, name: &str, entries: &[String]) -> String {
    format!(
        "apiVersion: {api}\nkind: {kind}\nmetadata:\n  name: {name}\nspec:\n  {field}:\n{}",
        entries.concat()
    )
}

fn idms(name: &str, entries: &[String]) -> String {
    obj(
        "config.openshift.io/v1",
        "ImageDigestMirrorSet",
        "imageDigestMirrors",
        name,
        entries,
    )
}

fn itms(name: &str, entries: &[String]) -> String {
    obj(
        "config.openshift.io/v1",
        "ImageTagMirrorSet",
        "imageTagMirrors",
        name,
        entries,
    )
}

fn icsp(name: &str, entries: &[String]) -> String {
    obj(
        "operator.openshift.io/v1alpha1",
        "ImageContentSourcePolicy",
        "repositoryDigestMirrors",
        name,
        entries,
    )
}

fn image(insecure: Option<&[&str]>, blocked: Option<&[&str]>, search: Option<&[&str]>) -> String {
    let mut s = String::from(
        "apiVersion: config.openshift.io/v1\nkind: Image\nmetadata:\n  name: cluster\nspec:\n  registrySources:\n",
    );
    if let Some(l) = insecure {
        s.push_str(&format!("    insecureRegistries: {}\n", list(l)));
    }
    if let Some(l) = blocked {
        s.push_str(&format!("    blockedRegistries: {}\n", list(l)));
    }
    if let Some(l) = search {
        s.push_str(&format!(
            "    containerRuntimeSearchRegistries: {}\n",
            list(l)
        ));
    }
    if insecure.is_none() && blocked.is_none() && search.is_none() {
        s.push_str("    allowedRegistries: [\"quay.io\"]\n");
    }
    s
}

fn set(docs: &[String]) -> PolicySet {
    let mut set = PolicySet::default();
    if !docs.is_empty() {
        set.add_text("p.yaml", docs.join("---\n").as_bytes())
            .expect("policy text parses");
    }
    set
}

const TEMPLATE: &str =
    "unqualified-search-registries = ['registry.access.redhat.com', 'docker.io']\n";

fn opts(style: Style) -> ApplyOptions {
    ApplyOptions {
        style,
        ..ApplyOptions::default()
    }
}

fn run_style(base: &str, docs: &[String], style: Style) -> ApplyOutcome {
    match apply("registries.conf", base, &set(docs), &opts(style)) {
        Ok(o) => o,
        Err(e) => panic!("apply failed: {e}"),
    }
}

fn run(base: &str, docs: &[String]) -> ApplyOutcome {
    run_style(base, docs, Style::Current)
}

fn err_style(base: &str, docs: &[String], style: Style) -> String {
    match apply("registries.conf", base, &set(docs), &opts(style)) {
        Ok(o) => panic!("expected an error, got output:\n{}", o.output),
        Err(e) => e.to_string(),
    }
}

fn err(base: &str, docs: &[String]) -> String {
    err_style(base, docs, Style::Current)
}

#[track_caller]
fn assert_err(base: &str, docs: &[String], want: &str) {
    let got = err(base, docs);
    assert!(
        got.contains(want),
        "error {got:?} does not contain {want:?}"
    );
}

#[track_caller]
fn assert_err_style(base: &str, docs: &[String], style: Style, want: &str) {
    let got = err_style(base, docs, style);
    assert!(
        got.contains(want),
        "error {got:?} does not contain {want:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Semantic model of the result (spec §12)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
struct M {
    loc: String,
    insecure: bool,
    pfm: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct R {
    prefix: String,
    location: String,
    insecure: bool,
    blocked: bool,
    mbdo: bool,
    mirrors: Vec<M>,
}

/// A `[[registry]]` written with `location` only (how MCO creates non-wildcard entries).
fn loc(s: &str) -> R {
    R {
        prefix: String::new(),
        location: s.into(),
        insecure: false,
        blocked: false,
        mbdo: false,
        mirrors: vec![],
    }
}

/// A `[[registry]]` written with `prefix` only (how MCO creates wildcard entries).
fn pre(s: &str) -> R {
    R {
        prefix: s.into(),
        ..loc("")
    }
}

impl R {
    fn with_prefix(mut self, p: &str) -> R {
        self.prefix = p.into();
        self
    }
    fn blocked(mut self) -> R {
        self.blocked = true;
        self
    }
    fn insecure(mut self) -> R {
        self.insecure = true;
        self
    }
    fn mbdo(mut self) -> R {
        self.mbdo = true;
        self
    }
    fn m(mut self, l: &str, pfm: &str, insecure: bool) -> R {
        self.mirrors.push(M {
            loc: l.into(),
            insecure,
            pfm: pfm.into(),
        });
        self
    }
    /// Digest-only mirrors.
    fn d(mut self, ls: &[&str]) -> R {
        for l in ls {
            self = self.m(l, "digest-only", false);
        }
        self
    }
    /// Tag-only mirrors.
    fn t(mut self, ls: &[&str]) -> R {
        for l in ls {
            self = self.m(l, "tag-only", false);
        }
        self
    }
    /// Plain mirrors (no pull-from-mirror).
    fn plain(mut self, ls: &[&str]) -> R {
        for l in ls {
            self = self.m(l, "", false);
        }
        self
    }
    fn scope(&self) -> &str {
        if self.prefix.is_empty() {
            &self.location
        } else {
            &self.prefix
        }
    }
}

/// The entries of `text` in file order, raw (as MCO decodes them), after checking that
/// containers/image accepts the file.
fn regs(text: &str) -> Vec<R> {
    if let Err(e) = containers::load("out", text) {
        panic!("output is rejected by containers/image: {e}\n{text}");
    }
    let conf = containers::decode("out", text).expect("decodes");
    conf.registries
        .into_iter()
        .map(|lr| {
            let r = lr.registry;
            R {
                prefix: r.prefix,
                location: r.location,
                insecure: r.insecure,
                blocked: r.blocked,
                mbdo: r.mirror_by_digest_only,
                mirrors: r
                    .mirrors
                    .into_iter()
                    .map(|m| M {
                        loc: m.location,
                        insecure: m.insecure,
                        pfm: m.pull_from_mirror,
                    })
                    .collect(),
            }
        })
        .collect()
}

fn by_scope(rs: Vec<R>) -> BTreeMap<String, R> {
    let mut map = BTreeMap::new();
    for r in rs {
        let s = r.scope().to_string();
        assert!(map.insert(s.clone(), r).is_none(), "duplicate scope {s:?}");
    }
    map
}

/// Entries compared by scope (spec §12).
#[track_caller]
fn assert_regs(text: &str, want: Vec<R>) {
    let got = by_scope(regs(text));
    let want = by_scope(want);
    if got != want {
        panic!("entries differ\n--- want\n{want:#?}\n--- got\n{got:#?}\n--- output\n{text}");
    }
}

/// Entries compared in file order (spec §4.7 creation order).
#[track_caller]
fn assert_regs_ordered(text: &str, want: Vec<R>) {
    let got = regs(text);
    if got != want {
        panic!("entries differ\n--- want\n{want:#?}\n--- got\n{got:#?}\n--- output\n{text}");
    }
}

fn search_of(text: &str) -> Option<Vec<String>> {
    containers::decode("out", text)
        .expect("decodes")
        .unqualified_search_registries
}

fn tmpl_search() -> Option<Vec<String>> {
    Some(vec![
        "registry.access.redhat.com".to_string(),
        "docker.io".to_string(),
    ])
}

fn mm(source: &str, lists: &[&[&str]]) -> Vec<String> {
    let owned: Vec<Vec<String>> = lists
        .iter()
        .map(|l| l.iter().map(|s| s.to_string()).collect())
        .collect();
    merge::merged_mirrors(source, owned.iter().map(|v| v.as_slice()))
}

fn v(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

// =============================================================================================
// §2 Validation
// =============================================================================================

#[test]
fn s2_insecure_checked_before_blocked_before_entries() {
    let bad_idms = idms("x", &[e("Bad.com/UP", &["m.io"])]);
    assert_err(
        TEMPLATE,
        &[
            bad_idms.clone(),
            image(Some(&["ok.com", "*.bad.com/x"]), Some(&[""]), None),
        ],
        "invalid entry for insecure registries \"*.bad.com/x\"",
    );
    assert_err(
        TEMPLATE,
        &[
            bad_idms.clone(),
            image(Some(&["ok.com"]), Some(&["*.b.com", "a.*.com"]), None),
        ],
        "invalid entry for blocked registries \"a.*.com\"",
    );
    assert_err(
        TEMPLATE,
        &[
            bad_idms,
            image(Some(&["*.i.com"]), Some(&["*.b.com"]), None),
        ],
        "invalid format for source \"Bad.com/UP\"",
    );
}

#[test]
fn s2_registries_conf_scope_validity() {
    for bad in [
        "",
        "*.a.com:443",
        "*a.com",
        "*.*.a.com",
        "*.a.com@x",
        "*.a.com/ns",
        "*",
    ] {
        assert_err(
            TEMPLATE,
            &[image(Some(&[bad]), None, None)],
            &format!("invalid entry for insecure registries {bad:?}"),
        );
        assert_err(
            TEMPLATE,
            &[image(None, Some(&[bad]), None)],
            &format!("invalid entry for blocked registries {bad:?}"),
        );
    }
    // No `*` ⇒ valid without any further syntax check (uppercase, odd paths).
    let out = run(
        TEMPLATE,
        &[image(Some(&["Registry.Example.COM/Ns_x"]), None, None)],
    );
    assert_regs(
        &out.output,
        vec![loc("Registry.Example.COM/Ns_x").insecure()],
    );
}

#[test]
fn s2_idms_then_icsp_then_itms_regardless_of_input_order() {
    let bad_itms = itms("t", &[e("a.com/UP", &["t.io"])]);
    let bad_icsp = icsp("c", &[e("b.com/x:tag", &["c.io"])]);
    let bad_idms = idms("d", &[e("c.com", &["*.m.com"])]);
    assert_err(
        TEMPLATE,
        &[bad_itms.clone(), bad_icsp.clone(), bad_idms],
        "invalid format for mirror \"*.m.com\"",
    );
    assert_err(
        TEMPLATE,
        &[bad_itms.clone(), bad_icsp],
        "invalid format for source \"b.com/x:tag\"",
    );
    assert_err(
        TEMPLATE,
        &[bad_itms],
        "invalid format for source \"a.com/UP\"",
    );
}

#[test]
fn s2_first_error_wins_in_input_order() {
    // Within an object: entries in order, mirrors in order.
    let first = idms(
        "one",
        &[
            e("ok.com", &["ok.io"]),
            e("s.com", &["ok.io", "BAD_1.io", "bad 2"]),
        ],
    );
    let second = idms("two", &[e("also bad/", &["m.io"])]);
    assert_err(
        TEMPLATE,
        &[first.clone(), second.clone()],
        "invalid format for mirror \"BAD_1.io\"",
    );
    assert_err(
        TEMPLATE,
        &[second, first],
        "invalid format for source \"also bad/\"",
    );
    // Across files: the order they were given in, not their names.
    let mut ps = PolicySet::default();
    ps.add_text("z.yaml", idms("z", &[e("z.com/UP", &["m.io"])]).as_bytes())
        .unwrap();
    ps.add_text("a.yaml", idms("a", &[e("a.com/UP", &["m.io"])]).as_bytes())
        .unwrap();
    let msg = apply("registries.conf", TEMPLATE, &ps, &ApplyOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("invalid format for source \"z.com/UP\""),
        "{msg}"
    );
}

#[test]
fn s2_entries_ignored_by_merge_are_still_validated() {
    // No mirrors at all: ignored by §3.2 but the source is still checked.
    assert_err(
        TEMPLATE,
        &[idms("x", &[e("a.com/UP", &[])])],
        "invalid format for source \"a.com/UP\"",
    );
    // Only the source as mirror: ignored, but the other mirror string is still checked.
    assert_err(
        TEMPLATE,
        &[icsp("x", &[e("s.io", &["s.io", "BAD MIRROR"])])],
        "invalid format for mirror \"BAD MIRROR\"",
    );
    // The policy of an ignored entry still takes part in the conflict check.
    assert_err(
        TEMPLATE,
        &[
            idms("a", &[en("a.com", &[])]),
            idms("b", &[e("a.com", &["m.io"])]),
        ],
        "conflicting mirrorSourcePolicy is set for the same source \"a.com\" in imagedigestmirrorsets, imagetagmirrorsets, or imagecontentsourcepolicies",
    );
}

#[test]
fn s2_conflicting_policy_across_kinds() {
    let conflict = |s: &str| {
        format!("conflicting mirrorSourcePolicy is set for the same source {s:?} in imagedigestmirrorsets, imagetagmirrorsets, or imagecontentsourcepolicies")
    };
    assert_err(
        TEMPLATE,
        &[
            itms("t", &[e("a.com/x", &["t.io/x"])]),
            idms("d", &[en("a.com/x", &["m.io/x"])]),
        ],
        &conflict("a.com/x"),
    );
    // MCO helpers_test case: ICSP listed first, its malformed mirror is not reported because
    // IDMS entries are checked first and the conflict is found before the ICSP's mirrors.
    assert_err(
        TEMPLATE,
        &[
            icsp("c", &[e("insecure.com/ns-i1", &["other.com/ns-o1  "])]),
            idms(
                "d",
                &[
                    en(
                        "insecure.com/ns-i1",
                        &["blocked.com/ns-b1", "other.com/ns-o1"],
                    ),
                    e(
                        "blocked.com/ns-b/ns2-b",
                        &["other.com/ns-o2", "insecure.com/ns-i2"],
                    ),
                    e(
                        "other.com/ns-o3",
                        &[
                            "insecure.com/ns-i2",
                            "blocked.com/ns-b/ns3-b",
                            "foo.insecure-example.com/bar",
                        ],
                    ),
                ],
            ),
        ],
        &conflict("insecure.com/ns-i1"),
    );
    // Explicit AllowContactingSource equals ICSP's implicit policy; NeverContactSource on both
    // IDMS and ITMS agrees.
    let out = run(
        TEMPLATE,
        &[
            idms(
                "d",
                &[
                    ep("a.com/x", &["m.io/x"], "AllowContactingSource"),
                    en("b.com/y", &["d.io/y"]),
                ],
            ),
            icsp("c", &[e("a.com/x", &["n.io/x"])]),
            itms("t", &[en("b.com/y", &["t.io/y"])]),
        ],
    );
    assert_regs(
        &out.output,
        vec![
            // single-mirror sets m.io/x and n.io/x → ascending
            loc("a.com/x").d(&["m.io/x", "n.io/x"]),
            loc("b.com/y").blocked().d(&["d.io/y"]).t(&["t.io/y"]),
        ],
    );
}

#[test]
fn s2_never_contact_source_with_self_mirror() {
    let msg = "cannot set mirrorSourcePolicy: NeverContactSource if the source \"a.com/x\" is one of the mirrors";
    assert_err(
        TEMPLATE,
        &[idms("d", &[en("a.com/x", &["m.io/x", "a.com/x"])])],
        msg,
    );
    assert_err(TEMPLATE, &[itms("t", &[en("a.com/x", &["a.com/x"])])], msg);
    // Mirrors are checked in order: format, then self-mirror, mirror by mirror.
    assert_err(
        TEMPLATE,
        &[idms("d", &[en("a.com/x", &["a.com/x", "BAD!"])])],
        msg,
    );
    assert_err(
        TEMPLATE,
        &[idms("d", &[en("a.com/x", &["BAD!", "a.com/x"])])],
        "invalid format for mirror \"BAD!\"",
    );
    // With AllowContactingSource the source may be listed; here it sorts last and is dropped.
    let out = run(
        TEMPLATE,
        &[idms("d", &[e("a.com/x", &["m.io/x", "a.com/x"])])],
    );
    assert_regs(&out.output, vec![loc("a.com/x").d(&["m.io/x"])]);
}

#[test]
fn s2_wildcard_sources_accepted_wildcard_mirrors_and_bad_strings_rejected() {
    let out = run(
        TEMPLATE,
        &[
            idms("d", &[e("*.a.com", &["m.io"])]),
            itms("t", &[e("*.b.com", &["t.io"])]),
        ],
    );
    assert_regs(
        &out.output,
        vec![pre("*.a.com").d(&["m.io"]), pre("*.b.com").t(&["t.io"])],
    );
    for (entry, want) in [
        (
            e("a.com", &["*.m.io"]),
            "invalid format for mirror \"*.m.io\"",
        ),
        (
            e("*.a.com/ns", &["m.io"]),
            "invalid format for source \"*.a.com/ns\"",
        ),
        (
            e("*.a.com:5000", &["m.io"]),
            "invalid format for source \"*.a.com:5000\"",
        ),
        (
            e("a.com/ns ", &["m.io"]),
            "invalid format for source \"a.com/ns \"",
        ),
        (
            e("a.com/ns", &["m.io/ns "]),
            "invalid format for mirror \"m.io/ns \"",
        ),
        (e("", &["m.io"]), "invalid format for source \"\""),
        (e("a.com", &[""]), "invalid format for mirror \"\""),
        (
            e("a.com/ns@sha256:abc", &["m.io"]),
            "invalid format for source \"a.com/ns@sha256:abc\"",
        ),
        (
            e("https://a.com", &["m.io"]),
            "invalid format for source \"https://a.com\"",
        ),
    ] {
        assert_err(TEMPLATE, &[idms("d", std::slice::from_ref(&entry))], want);
        assert_err(TEMPLATE, &[icsp("c", std::slice::from_ref(&entry))], want);
        assert_err(TEMPLATE, &[itms("t", &[entry])], want);
    }
}

#[test]
fn s2_source_and_mirror_regexes() {
    for ok in [
        "a.com",
        "localhost",
        "localhost:5000",
        "a.com:5000/ns/r",
        "A.COM/ns",
        "a-b.c-d.com/n--s",
        "a.com/n__s/x_y.z-w",
        "a.com/nsr",
        "1.2.3.4:80/a",
    ] {
        assert!(merge::is_valid_source(ok), "source {ok:?} should be valid");
        assert!(merge::is_valid_mirror(ok), "mirror {ok:?} should be valid");
    }
    for ok in ["*.a.com", "*.com", "*.A-B.com"] {
        assert!(merge::is_valid_source(ok), "source {ok:?} should be valid");
        assert!(
            !merge::is_valid_mirror(ok),
            "mirror {ok:?} should be invalid"
        );
    }
    for bad in [
        "",
        "*",
        "*.",
        "*.a.com:5000",
        "*.a.com/ns",
        "a.com/NS",
        "a.com/ns/",
        "a.com/",
        "a.com/ns:tag",
        "a.com/ns@sha256:abc",
        "http://a.com",
        "a_b.com",
        "-a.com",
        "a-.com",
        "a.com/_ns",
        "a.com/ns_",
        "a.com/n___s",
        "a.com/n._s",
        "a.com:",
        "a.com:port",
        "a.com/ns ",
        " a.com",
        "a.com//ns",
        "[::1]:5000/a",
    ] {
        assert!(
            !merge::is_valid_source(bad),
            "source {bad:?} should be invalid"
        );
        assert!(
            !merge::is_valid_mirror(bad),
            "mirror {bad:?} should be invalid"
        );
    }
}

// =============================================================================================
// §3 Merging
// =============================================================================================

#[test]
fn s3_buckets_by_exact_source_and_merges_idms_with_icsp() {
    let out = run(
        TEMPLATE,
        &[
            idms(
                "d",
                &[
                    e("docker.io/busybox", &["m.io/b1"]),
                    e("docker.io/library/busybox", &["m.io/b2"]),
                    e("s.io/r", &["b.io/r", "c.io/r"]),
                ],
            ),
            icsp("c", &[e("s.io/r", &["a.io/r", "b.io/r"])]),
        ],
    );
    assert_regs(
        &out.output,
        vec![
            loc("docker.io/busybox").d(&["m.io/b1"]),
            loc("docker.io/library/busybox").d(&["m.io/b2"]),
            // (B,C) + (A,B) ⇒ A,B,C
            loc("s.io/r").d(&["a.io/r", "b.io/r", "c.io/r"]),
        ],
    );
}

#[test]
fn s3_entries_without_a_real_mirror_are_ignored_with_their_policy() {
    let out = run(
        TEMPLATE,
        &[
            idms("d", &[en("a.com/x", &[])]),
            icsp("c", &[e("b.com/y", &["b.com/y", "b.com/y"])]),
            itms("t", &[en("c.com", &[])]),
        ],
    );
    assert_regs(&out.output, vec![]);
    assert_eq!(search_of(&out.output), tmpl_search());
}

#[test]
fn s3_never_contact_source_blocks_the_bucket() {
    let out = run(
        TEMPLATE,
        &[
            idms(
                "d",
                &[en("a.com/x", &["m1.io/x"]), en("a.com/x", &["m2.io/x"])],
            ),
            itms("t", &[en("c.com", &["t.io"])]),
            idms("e", &[e("b.com", &["m.io"])]),
        ],
    );
    assert_regs(
        &out.output,
        vec![
            loc("a.com/x").blocked().d(&["m1.io/x", "m2.io/x"]),
            loc("b.com").d(&["m.io"]),
            loc("c.com").blocked().t(&["t.io"]),
        ],
    );
}

#[test]
fn s3_topo_examples_from_the_spec() {
    assert_eq!(
        mm("s.io", &[&["b.io", "c.io"], &["a.io", "b.io"]]),
        v(&["a.io", "b.io", "c.io"])
    );
    assert_eq!(
        mm("src", &[&["z1", "y2"], &["y2", "x3"]]),
        v(&["z1", "y2", "x3"])
    );
    assert_eq!(
        mm("src", &[&["m3"], &["m1"], &["m2"]]),
        v(&["m1", "m2", "m3"])
    );
    // vendor (r1,r2) + admin (lm2,r2,r1): cycle r1⇄r2, lm2 first, then the cycle breaker.
    assert_eq!(
        mm("src", &[&["r1", "r2"], &["lm2", "r2", "r1"]]),
        v(&["lm2", "r1", "r2"])
    );
}

#[test]
fn s3_topo_is_fifo_batches_not_global_minimum() {
    // Queue [a, c]; emitting a frees b, appended after c. A global-min order would be a, b, c.
    assert_eq!(mm("s", &[&["a", "b"], &["c"]]), v(&["a", "c", "b"]));
    // One node freeing several successors: the batch is sorted.
    assert_eq!(
        mm("s", &[&["r", "z"], &["r", "y"], &["r", "x"]]),
        v(&["r", "x", "y", "z"])
    );
    // Deeper: roots [a, d]; a frees c (after d); d frees b (after c).
    // edges a→c, c→s, d→b, b→s: a, d, c, b.
    assert_eq!(
        mm("s", &[&["a", "c"], &["d", "b"]]),
        v(&["a", "d", "c", "b"])
    );
    // Same through apply.
    let out = run(
        TEMPLATE,
        &[idms(
            "d",
            &[
                e("s.io/r", &["a.io/r", "c.io/r"]),
                e("s.io/r", &["d.io/r", "b.io/r"]),
            ],
        )],
    );
    assert_regs(
        &out.output,
        vec![loc("s.io/r").d(&["a.io/r", "d.io/r", "c.io/r", "b.io/r"])],
    );
}

#[test]
fn s3_topo_cycles_use_global_sorted_order_including_the_source() {
    // m1⇄m2, source sorts first: the breaker emits the source first; it is not last, so it stays.
    assert_eq!(
        mm("a.src", &[&["m2", "m1"], &["m1", "m2"]]),
        v(&["a.src", "m1", "m2"])
    );
    // Source sorts last: m1 breaks the cycle, m2, source last → dropped.
    assert_eq!(
        mm("z.src", &[&["m2", "m1"], &["m1", "m2"]]),
        v(&["m1", "m2"])
    );
    // 3-cycle a→b→c→a (b,c,a)+(a,b): a breaks, b freed, then c and s in one sorted batch.
    assert_eq!(
        mm("s", &[&["b", "c", "a"], &["a", "b"]]),
        v(&["a", "b", "c"])
    );
    // p emitted, then the breaker skips used p and takes s (sorted before x, y).
    assert_eq!(
        mm("s", &[&["x", "y"], &["y", "x"], &["p"]]),
        v(&["p", "s", "x", "y"])
    );
    // An already-emitted node (a) losing its last predecessor later is not re-queued.
    assert_eq!(
        mm("s", &[&["b", "a"], &["a", "b"], &["c", "a"]]),
        v(&["c", "a", "b"])
    );
    // Duplicates within one list: m1→m2→m1 cycle, nodes unique.
    assert_eq!(
        mm("src.io", &[&["m1.io", "m2.io", "m1.io"]]),
        v(&["m1.io", "m2.io"])
    );
}

#[test]
fn s3_cycles_through_apply() {
    let out = run(
        TEMPLATE,
        &[idms(
            "d",
            &[
                e("a.com/src", &["m2.io", "m1.io"]),
                e("a.com/src", &["m1.io", "m2.io"]),
                e("s.io", &["x.io", "y.io"]),
                e("s.io", &["y.io", "x.io"]),
                e("s.io", &["p.io"]),
            ],
        )],
    );
    assert_regs(
        &out.output,
        vec![
            loc("a.com/src").d(&["a.com/src", "m1.io", "m2.io"]),
            loc("s.io").d(&["p.io", "s.io", "x.io", "y.io"]),
        ],
    );
}

#[test]
fn s3_consecutive_duplicate_is_a_self_loop() {
    assert_eq!(mm("a.src", &[&["m1", "m1"]]), v(&["a.src", "m1"]));
    assert_eq!(mm("z.src", &[&["m1", "m1"]]), v(&["m1"]));
    let out = run(
        TEMPLATE,
        &[icsp(
            "c",
            &[
                e("a.com/src", &["m1.io", "m1.io"]),
                e("z.com/src", &["m1.io", "m1.io"]),
            ],
        )],
    );
    assert_regs(
        &out.output,
        vec![
            loc("a.com/src").d(&["a.com/src", "m1.io"]),
            loc("z.com/src").d(&["m1.io"]),
        ],
    );
}

#[test]
fn s3_source_listed_as_mirror_is_kept_unless_last() {
    assert_eq!(mm("src", &[&["m1", "src", "m2"]]), v(&["m1", "src", "m2"]));
    assert_eq!(mm("src", &[&["m1", "src"]]), v(&["m1"]));
    let out = run(
        TEMPLATE,
        &[idms(
            "d",
            &[
                e("s.io/r", &["m1.io/r", "s.io/r", "m2.io/r"]),
                e("t.io/r", &["m1.io/r", "t.io/r"]),
            ],
        )],
    );
    assert_regs(
        &out.output,
        vec![
            loc("s.io/r").d(&["m1.io/r", "s.io/r", "m2.io/r"]),
            loc("t.io/r").d(&["m1.io/r"]),
        ],
    );
}

#[test]
fn s3_sources_sorted_bytewise_digest_group_before_tag_group() {
    let out = run(
        TEMPLATE,
        &[
            itms("t", &[e("0.com/x", &["t0.io"])]),
            idms(
                "d",
                &[
                    e("b.com/x", &["mb.io"]),
                    e("a.com:5000", &["m5.io"]),
                    e("a.com/y", &["my.io"]),
                    e("a.com/x", &["ma.io"]),
                    e("A.com/x", &["mA.io"]),
                    e("a.com-b.io", &["mab.io"]),
                    e("a.com", &["m.io"]),
                ],
            ),
        ],
    );
    assert_regs_ordered(
        &out.output,
        vec![
            loc("A.com/x").d(&["mA.io"]),
            loc("a.com").d(&["m.io"]),
            loc("a.com-b.io").d(&["mab.io"]),
            loc("a.com/x").d(&["ma.io"]),
            loc("a.com/y").d(&["my.io"]),
            loc("a.com:5000").d(&["m5.io"]),
            loc("b.com/x").d(&["mb.io"]),
            loc("0.com/x").t(&["t0.io"]),
        ],
    );
}

#[test]
fn s3_same_source_in_idms_and_itms_digest_then_tag() {
    let out = run(
        TEMPLATE,
        &[
            itms("t", &[e("a.com/x", &["t1.io/x"]), e("b.com", &["m.io"])]),
            idms("d", &[e("a.com/x", &["d1.io/x", "d2.io/x"])]),
            icsp("c", &[e("b.com", &["m.io"])]),
        ],
    );
    assert_regs(
        &out.output,
        vec![
            loc("a.com/x").d(&["d1.io/x", "d2.io/x"]).t(&["t1.io/x"]),
            // Same mirror in both groups: two mirror tables, never de-duplicated.
            loc("b.com").d(&["m.io"]).t(&["m.io"]),
        ],
    );
}

// =============================================================================================
// §4 Editing
// =============================================================================================

#[test]
fn s4_find_is_exact_string_equality() {
    // `example.com/` ≠ `example.com`: a new entry is appended. The base entry is nested in the
    // new one (`example.com` + `/`) and has no mirrors, so propagation gives it `m.io` + `/`.
    let base = format!("{TEMPLATE}\n[[registry]]\nlocation = \"example.com/\"\n");
    let out = run(&base, &[idms("d", &[e("example.com", &["m.io"])])]);
    assert_regs_ordered(
        &out.output,
        vec![
            loc("example.com/").d(&["m.io/"]),
            loc("example.com").d(&["m.io"]),
        ],
    );
}

#[test]
fn s4_find_uses_prefix_when_set() {
    let base = format!(
        "{TEMPLATE}\n[[registry]]\nprefix = \"a.com/ns\"\nlocation = \"internal.a.com/ns\"\n\n[[registry]]\nprefix = \"other.io/p\"\nlocation = \"b.com/p\"\n"
    );
    let out = run(
        &base,
        &[idms(
            "d",
            &[e("a.com/ns", &["m.io/ns"]), e("b.com/p", &["m.io/p"])],
        )],
    );
    assert_regs_ordered(
        &out.output,
        vec![
            loc("internal.a.com/ns")
                .with_prefix("a.com/ns")
                .d(&["m.io/ns"]),
            loc("b.com/p").with_prefix("other.io/p"),
            loc("b.com/p").d(&["m.io/p"]),
        ],
    );
}

#[test]
fn s4_new_wildcard_entries_use_prefix() {
    let out = run(
        TEMPLATE,
        &[
            idms("d", &[e("*.a.com", &["m.io"])]),
            image(Some(&["*.i.com"]), Some(&["*.b.com"]), None),
        ],
    );
    assert_regs_ordered(
        &out.output,
        vec![
            pre("*.a.com").d(&["m.io"]),
            pre("*.b.com").blocked(),
            pre("*.i.com").insecure(),
        ],
    );
}

#[test]
fn s4_creation_order_digest_tag_blocked_insecure() {
    let base = format!("{TEMPLATE}\n[[registry]]\nlocation = \"base.io\"\n");
    let out = run(
        &base,
        &[
            image(
                Some(&["x.com", "z.com", "w.com"]),
                Some(&["z.com", "a.com", "y.com"]),
                None,
            ),
            itms("t", &[e("c.com", &["tc.io"]), e("a.com", &["ta.io"])]),
            idms("d", &[e("b.com", &["mb.io"]), e("a.com", &["ma.io"])]),
        ],
    );
    assert_regs_ordered(
        &out.output,
        vec![
            loc("base.io"),
            loc("a.com").blocked().d(&["ma.io"]).t(&["ta.io"]),
            loc("b.com").d(&["mb.io"]),
            loc("c.com").t(&["tc.io"]),
            loc("z.com").insecure().blocked(),
            loc("y.com").blocked(),
            loc("x.com").insecure(),
            loc("w.com").insecure(),
        ],
    );
}

#[test]
fn s4_insecure_marks_nested_entries_and_nested_mirrors_of_all_entries() {
    let base = format!(
        "{TEMPLATE}
[[registry]]
location = \"src.io/app\"
[[registry.mirror]]
location = \"mirror.corp/app\"
[[registry.mirror]]
location = \"mirror.corp:5000/app\"

[[registry]]
location = \"mirror.corp/team\"

[[registry]]
location = \"b.corp.net:443/p\"

[[registry]]
location = \"corp.net/x\"
"
    );
    let out = run(
        &base,
        &[
            idms(
                "d",
                &[
                    e(
                        "src2.io",
                        &["mirror.corp/x", "mirror.corp:5000/y", "other.io/x"],
                    ),
                    e("src3.io", &["a.corp.net/z"]),
                ],
            ),
            image(Some(&["mirror.corp", "*.corp.net"]), None, None),
        ],
    );
    assert_regs_ordered(
        &out.output,
        vec![
            loc("src.io/app")
                .m("mirror.corp/app", "", true)
                .m("mirror.corp:5000/app", "", false),
            loc("mirror.corp/team").insecure(),
            loc("b.corp.net:443/p").insecure(),
            loc("corp.net/x"),
            loc("src2.io")
                .m("mirror.corp/x", "digest-only", true)
                .d(&["mirror.corp:5000/y", "other.io/x"]),
            loc("src3.io").m("a.corp.net/z", "digest-only", true),
            loc("mirror.corp").insecure(),
            pre("*.corp.net").insecure(),
        ],
    );
}

#[test]
fn s4_blocked_marks_nested_entries_never_mirrors() {
    let base = format!(
        "{TEMPLATE}
[[registry]]
location = \"mirror.corp/team\"

[[registry]]
location = \"x.b.com/ns\"

[[registry]]
prefix = \"*.y.b.com\"

[[registry]]
location = \"b.com\"
"
    );
    let out = run(
        &base,
        &[
            idms("d", &[e("src.io", &["mirror.corp/x"])]),
            image(None, Some(&["mirror.corp", "*.b.com"]), None),
        ],
    );
    assert_regs_ordered(
        &out.output,
        vec![
            loc("mirror.corp/team").blocked(),
            loc("x.b.com/ns").blocked(),
            pre("*.y.b.com").blocked(),
            loc("b.com"),
            loc("src.io").d(&["mirror.corp/x"]),
            loc("mirror.corp").blocked(),
            pre("*.b.com").blocked(),
        ],
    );
}

#[test]
fn s4_nested_propagation_first_bucket_wins() {
    let out = run(
        TEMPLATE,
        &[
            idms(
                "d",
                &[e("a.com/ns", &["n.com/ns"]), e("a.com", &["m.com/a"])],
            ),
            image(None, Some(&["a.com/ns/x"]), None),
        ],
    );
    assert_regs(
        &out.output,
        vec![
            loc("a.com").d(&["m.com/a"]),
            loc("a.com/ns").d(&["n.com/ns"]),
            loc("a.com/ns/x").blocked().d(&["m.com/a/ns/x"]),
        ],
    );
}

#[test]
fn s4_propagation_copies_mirror_fields_without_recomputing() {
    let out = run(
        TEMPLATE,
        &[
            idms("d", &[e("a.com", &["d.io/a"])]),
            itms("t", &[e("a.com", &["t.io/a"])]),
            image(Some(&["t.io", "d.io/a/ns"]), Some(&["a.com/ns"]), None),
        ],
    );
    assert_regs_ordered(
        &out.output,
        vec![
            loc("a.com").d(&["d.io/a"]).m("t.io/a", "tag-only", true),
            // Copied from a.com's list as it was after the insecure pass: d.io/a/ns stays
            // secure although it lies inside the insecure scope d.io/a/ns.
            loc("a.com/ns")
                .blocked()
                .d(&["d.io/a/ns"])
                .m("t.io/a/ns", "tag-only", true),
            loc("t.io").insecure(),
            loc("d.io/a/ns").insecure(),
        ],
    );
}

#[test]
fn s4_propagation_skips_base_entries_that_have_mirrors() {
    let base = format!(
        "{TEMPLATE}
[[registry]]
location = \"a.com/keep\"
[[registry.mirror]]
location = \"own.io/keep\"

[[registry]]
location = \"a.com/empty\"
insecure = true

[[registry]]
prefix = \"a.com/p\"
location = \"internal.io/p\"

[[registry]]
location = \"a.comx/other\"
"
    );
    let out = run(&base, &[idms("d", &[e("a.com", &["m.io/a"])])]);
    assert_regs_ordered(
        &out.output,
        vec![
            loc("a.com/keep").plain(&["own.io/keep"]),
            loc("a.com/empty").insecure().d(&["m.io/a/empty"]),
            loc("internal.io/p").with_prefix("a.com/p").d(&["m.io/a/p"]),
            loc("a.comx/other"),
            loc("a.com").d(&["m.io/a"]),
        ],
    );
}

#[test]
fn s4_wildcard_source_with_nested_mirrorless_entry_is_an_internal_error() {
    let msg = "internal error: mirrorsAdjustedForNestedScope for a wildcard scope \"*.a.com\"";
    let wild = idms("d", &[e("*.a.com", &["m.io"])]);
    assert_err(
        TEMPLATE,
        &[wild.clone(), image(None, Some(&["x.a.com"]), None)],
        msg,
    );
    assert_err(
        TEMPLATE,
        &[wild.clone(), image(Some(&["*.b.a.com"]), None, None)],
        msg,
    );
    let base = format!("{TEMPLATE}\n[[registry]]\nlocation = \"y.a.com/ns\"\n");
    assert_err(&base, std::slice::from_ref(&wild), msg);
    // Nested entries that already have mirrors, and non-nested scopes, are fine.
    let out = run(
        TEMPLATE,
        &[
            wild,
            idms("e", &[e("x.a.com", &["n.io"])]),
            image(None, Some(&["a.com"]), None),
        ],
    );
    assert_regs(
        &out.output,
        vec![
            pre("*.a.com").d(&["m.io"]),
            loc("x.a.com").d(&["n.io"]),
            loc("a.com").blocked(),
        ],
    );
}

#[test]
fn s4_nothing_removed_or_reset_in_base_entries() {
    let base = format!(
        "# admin comment\n{TEMPLATE}
[[registry]]
# the admin's own entry
location = \"a.com/x\"
insecure = true
[[registry.mirror]]
location = \"m.io/x\"
[[registry.mirror]]
location = \"own.io/x\"
insecure = true

[[registry]]
location = \"keep.io\"
blocked = true
"
    );
    let out = run(
        &base,
        &[
            idms("d", &[en("a.com/x", &["m.io/x", "n.io/x"])]),
            image(Some(&[]), Some(&[]), None),
        ],
    );
    assert_regs_ordered(
        &out.output,
        vec![
            loc("a.com/x")
                .insecure()
                .blocked()
                .plain(&["m.io/x"])
                .m("own.io/x", "", true)
                .d(&["m.io/x", "n.io/x"]),
            loc("keep.io").blocked(),
        ],
    );
    assert!(out.output.contains("# admin comment"));
    assert!(out.output.contains("# the admin's own entry"));
    assert_eq!(search_of(&out.output), tmpl_search());
}

#[test]
fn s4_nesting_rules_port_and_wildcard() {
    let base = format!(
        "{TEMPLATE}
[[registry]]
location = \"quay.io:443/x\"

[[registry]]
location = \"quay.io/x\"

[[registry]]
location = \"example.com\"

[[registry]]
location = \"a.example.com\"

[[registry]]
location = \"x.example.com:443/p\"
"
    );
    let out = run(
        &base,
        &[
            idms("d", &[e("src.io", &["quay.io:443/m", "quay.io/m"])]),
            image(
                Some(&["quay.io", "*.a.example.com"]),
                Some(&["*.example.com"]),
                None,
            ),
        ],
    );
    assert_regs_ordered(
        &out.output,
        vec![
            loc("quay.io:443/x"),
            loc("quay.io/x").insecure(),
            loc("example.com"),
            loc("a.example.com").blocked(),
            loc("x.example.com:443/p").blocked(),
            loc("src.io")
                .d(&["quay.io:443/m"])
                .m("quay.io/m", "digest-only", true),
            pre("*.example.com").blocked(),
            loc("quay.io").insecure(),
            pre("*.a.example.com").insecure().blocked(),
        ],
    );
}

// =============================================================================================
// §1.5 payload filter, §1.8 no-op, §7 search drop-in
// =============================================================================================

#[test]
fn s1_8_no_objects_and_nil_lists_leave_the_file_alone() {
    let base = "# mine\nunqualified-search-registries = [\"a.io\"]  # kept\n\n[[registry]]\nlocation = \"x.io\"\n";
    let out = run(base, &[]);
    assert!(!out.changed);
    assert_eq!(out.output, base);
    // Image/cluster with only allowedRegistries: still a no-op for registries.conf.
    let out = run(base, &[image(None, None, None)]);
    assert!(!out.changed);
    assert_eq!(out.output, base);
    assert!(out.search_dropin.is_none());
    // Empty (non-nil) lists are not a no-op, but nothing is added either.
    let out = run(base, &[image(Some(&[]), Some(&[]), None)]);
    assert_regs(&out.output, vec![loc("x.io")]);
    assert_eq!(search_of(&out.output), Some(v(&["a.io"])));
}

#[test]
fn s1_5_blocked_payload_registry_filter() {
    let payload = "quay.io/openshift-release-dev/ocp-release@sha256:0000000000000000000000000000000000000000000000000000000000000000";
    let o = ApplyOptions {
        payload_repo: Some(payload.to_string()),
        ..ApplyOptions::default()
    };
    // No mirror for the payload: quay.io is dropped from the blocked list; others stay.
    let ps = set(&[image(None, Some(&["quay.io", "b.io"]), None)]);
    let out = apply("registries.conf", TEMPLATE, &ps, &o).unwrap();
    assert_regs(&out.output, vec![loc("b.io").blocked()]);
    // With an unblocked digest mirror for the payload repository, quay.io stays blocked.
    let ps = set(&[
        image(None, Some(&["quay.io"]), None),
        idms(
            "d",
            &[e(
                "quay.io/openshift-release-dev/ocp-release",
                &["m.io/ocp"],
            )],
        ),
    ]);
    let out = apply("registries.conf", TEMPLATE, &ps, &o).unwrap();
    assert_regs(
        &out.output,
        vec![
            loc("quay.io/openshift-release-dev/ocp-release")
                .blocked()
                .d(&["m.io/ocp"]),
            loc("quay.io").blocked(),
        ],
    );
    // Without payload information, the list is used as given.
    let ps = set(&[image(None, Some(&["quay.io"]), None)]);
    let out = apply("registries.conf", TEMPLATE, &ps, &ApplyOptions::default()).unwrap();
    assert_regs(&out.output, vec![loc("quay.io").blocked()]);
}

#[test]
fn s7_search_registries_go_to_a_dropin_only() {
    let out = run(TEMPLATE, &[image(None, None, Some(&["a.io", "b.io:5000"]))]);
    assert!(!out.changed, "registries.conf must not change");
    assert_eq!(out.output, TEMPLATE);
    let dropin = out.search_dropin.expect("search drop-in");
    let conf = containers::load_dropin("01-image-searchRegistries.conf", &dropin).unwrap();
    assert_eq!(
        conf.unqualified_search_registries,
        Some(v(&["a.io", "b.io:5000"]))
    );
    assert!(conf.registries.is_empty());
    // Together with mirrors: the main file keeps its own search list.
    let out = run(
        TEMPLATE,
        &[
            image(None, None, Some(&["a.io"])),
            idms("d", &[e("s.io", &["m.io"])]),
        ],
    );
    assert_eq!(search_of(&out.output), tmpl_search());
    assert_regs(&out.output, vec![loc("s.io").d(&["m.io"])]);
    assert!(out.search_dropin.is_some());
    // No search list: no drop-in.
    let out = run(TEMPLATE, &[idms("d", &[e("s.io", &["m.io"])])]);
    assert!(out.search_dropin.is_none());
}

#[test]
fn s7_s8_invalid_search_registry_is_rejected() {
    assert_err(
        TEMPLATE,
        &[image(None, None, Some(&["a.io/ns"]))],
        "Invalid unqualified-search-registries entry \"a.io/ns\"",
    );
}

// =============================================================================================
// §8 containers/image rejections
// =============================================================================================

#[test]
fn s8_result_rejections() {
    let base =
        format!("{TEMPLATE}\n[[registry]]\nlocation = \"a.com\"\nmirror-by-digest-only = true\n");
    assert_err(
        &base,
        &[idms("d", &[e("a.com", &["m.io"])])],
        "cannot set mirror usage mirror-by-digest-only for the registry (\"a.com\") and pull-from-mirror for per-mirror (\"m.io\") at the same time",
    );
    let base = format!("{TEMPLATE}\n[[registry]]\nlocation = \"a.com\"\n");
    assert_err(
        &base,
        &[image(Some(&["a.com/"]), None, None)],
        "registry 'a.com' is defined multiple times with conflicting 'insecure' setting",
    );
    assert_err(
        &base,
        &[image(None, Some(&["a.com/"]), None)],
        "registry 'a.com' is defined multiple times with conflicting 'blocked' setting",
    );
    assert_err(
        TEMPLATE,
        &[image(Some(&["http://a.com"]), None, None)],
        "invalid location 'http://a.com': URI schemes are not supported",
    );
}

#[test]
fn s8_base_rejections() {
    let p = [idms("d", &[e("s.io", &["m.io"])])];
    for (extra, want) in [
        (
            "[[registry]]\nlocation = \"https://a.com\"\n",
            "invalid location 'https://a.com': URI schemes are not supported",
        ),
        (
            "[[registry]]\nprefix = \"*.a.com/ns\"\nlocation = \"x.io\"\n",
            "Wildcarded prefix should be in the format: *.example.com. Current prefix \"*.a.com/ns\" is incorrectly formatted",
        ),
        (
            "[[registry]]\ninsecure = true\n",
            "invalid condition: both location and prefix are unset",
        ),
        (
            "[[registry]]\nprefix = \"a.com\"\n",
            "invalid condition: location is unset and prefix is not in the format: *.example.com",
        ),
        (
            "[[registry]]\nlocation = \"a.com\"\n[[registry.mirror]]\n",
            "invalid condition: mirror location is unset",
        ),
        (
            "[[registry]]\nlocation = \"a.com\"\n[[registry.mirror]]\nlocation = \"m.io\"\npull-from-mirror = \"sometimes\"\n",
            "unsupported pull-from-mirror value \"sometimes\" for mirror \"m.io\"",
        ),
        (
            "[[registry]]\nlocation = \"a.com\"\npull-from-mirror = \"all\"\n",
            "pull-from-mirror must not be set for a non-mirror registry \"a.com\"",
        ),
        (
            "[[registry]]\nlocation = \"a.com\"\ninsecure = true\n[[registry]]\nlocation = \"a.com/\"\n",
            "registry 'a.com' is defined multiple times with conflicting 'insecure' setting",
        ),
        (
            "[registries.search]\nregistries = ['quay.io']\n",
            "mixing sysregistry v1/v2 is not supported",
        ),
    ] {
        let base = format!("{TEMPLATE}{extra}");
        assert_err(&base, &p, want);
    }
    let base = format!("short-name-mode = \"prompt\"\n{TEMPLATE}");
    assert_err(&base, &p, "invalid short-name mode: \"prompt\"");
}

#[test]
fn s8_empty_v1_list_still_counts_as_v1() {
    let text =
        "unqualified-search-registries = ['docker.io']\n[registries.search]\nregistries = []\n";
    let le = containers::load("registries.conf", text).expect_err("mixing v1/v2");
    assert!(
        le.to_string()
            .contains("mixing sysregistry v1/v2 is not supported"),
        "{le}"
    );
    // containers/image `hasSetField`: an explicit `registries = []` decodes to a non-nil slice,
    // so the v1 config is "set" and mixing with v2 keys is rejected.
    let base = format!("{TEMPLATE}\n[registries.search]\nregistries = []\n");
    assert_err(
        &base,
        &[idms("d", &[e("s.io", &["m.io"])])],
        "mixing sysregistry v1/v2 is not supported",
    );
}

#[test]
fn s8_pure_v1_base() {
    let base = "# v1 file\n[registries.search]\nregistries = ['registry.access.redhat.com', 'docker.io']\n\n[registries.insecure]\nregistries = ['i.io']\n";
    // No policies: left alone.
    let out = run(base, &[]);
    assert_eq!(out.output, base);
    // Adding v2 entries to it would produce a file containers/image rejects.
    assert_err(
        base,
        &[idms("d", &[e("s.io", &["m.io"])])],
        "mixing sysregistry v1/v2 is not supported",
    );
}

// =============================================================================================
// §10 classification
// =============================================================================================

#[test]
fn s10_classification() {
    let safe = |base: &str, docs: &[String]| run(base, docs).classification.safe;
    // IDMS/ICSP additions: drain-free, even NeverContactSource on a new entry (only its mirrors
    // are checked).
    assert!(safe(TEMPLATE, &[idms("d", &[e("s.io", &["m.io"])])]));
    assert!(safe(TEMPLATE, &[icsp("c", &[e("s.io", &["m.io"])])]));
    assert!(safe(TEMPLATE, &[idms("d", &[en("s.io", &["m.io"])])]));
    // ITMS, blocked, insecure: drain.
    assert!(!safe(TEMPLATE, &[itms("t", &[e("s.io", &["m.io"])])]));
    assert!(!safe(TEMPLATE, &[image(None, Some(&["b.io"]), None)]));
    assert!(!safe(TEMPLATE, &[image(Some(&["i.io"]), None, None)]));
    // Digest mirrors added to an existing entry: safe; blocking it: not.
    let base = format!("{TEMPLATE}\n[[registry]]\nlocation = \"s.io\"\n");
    assert!(safe(&base, &[idms("d", &[e("s.io", &["m.io"])])]));
    assert!(!safe(&base, &[idms("d", &[en("s.io", &["m.io"])])]));
    // Adding a second IDMS source to an already rendered file: safe.
    let one = run(TEMPLATE, &[idms("d", &[e("s.io", &["m.io"])])]).output;
    assert!(safe(
        &one,
        &[idms("d", &[e("s.io", &["m.io"]), e("t.io", &["n.io"])])]
    ));
    // Removing a policy removes its entry: drain.
    assert!(!safe(&one, &[]));
    // Removing a mirror from an entry that stays: drain.
    let two = run(TEMPLATE, &[idms("d", &[e("s.io", &["m.io", "n.io"])])]).output;
    assert!(!safe(&two, &[idms("d", &[e("s.io", &["m.io"])])]));
}

// =============================================================================================
// §11 legacy style
// =============================================================================================

#[test]
fn s11_legacy_rendering() {
    let out = run_style(
        TEMPLATE,
        &[
            icsp(
                "c",
                &[
                    e("a.com/x", &["m1.io/x", "m2.io/x"]),
                    e("b.com", &["m.io/b"]),
                ],
            ),
            image(Some(&["m1.io"]), Some(&["b.com/ns"]), None),
        ],
        Style::Legacy,
    );
    assert_regs_ordered(
        &out.output,
        vec![
            loc("a.com/x")
                .mbdo()
                .m("m1.io/x", "", true)
                .plain(&["m2.io/x"]),
            loc("b.com").mbdo().plain(&["m.io/b"]),
            // propagation copies mirror-by-digest-only
            loc("b.com/ns").blocked().mbdo().plain(&["m.io/b/ns"]),
            loc("m1.io").insecure(),
        ],
    );
}

#[test]
fn s11_legacy_rejects_idms_and_itms_naming_the_object() {
    let got = err_style(
        TEMPLATE,
        &[idms("my-idms", &[e("s.io", &["m.io"])])],
        Style::Legacy,
    );
    assert!(got.contains("ImageDigestMirrorSet/my-idms"), "{got}");
    let got = err_style(
        TEMPLATE,
        &[itms("my-itms", &[e("s.io", &["m.io"])])],
        Style::Legacy,
    );
    assert!(got.contains("ImageTagMirrorSet/my-itms"), "{got}");
}

#[test]
fn s11_legacy_validation_messages_and_order() {
    let l = Style::Legacy;
    let empty_src = "invalid empty entry for source configuration";
    let empty_mir = "invalid empty entry for mirror configuration";
    let wild =
        |s: &str| format!("wildcard entries are not supported with mirror configuration {s:?}");
    assert_err_style(TEMPLATE, &[icsp("c", &[e("", &["m.io"])])], l, empty_src);
    assert_err_style(TEMPLATE, &[icsp("c", &[e("a.com", &[""])])], l, empty_mir);
    assert_err_style(
        TEMPLATE,
        &[icsp("c", &[e("*.a.com", &["m.io"])])],
        l,
        &wild("*.a.com"),
    );
    assert_err_style(
        TEMPLATE,
        &[icsp("c", &[e("a.com", &["m*.io"])])],
        l,
        &wild("m*.io"),
    );
    // Source before mirrors, mirrors in order, entries in order.
    assert_err_style(TEMPLATE, &[icsp("c", &[e("", &["*"])])], l, empty_src);
    assert_err_style(
        TEMPLATE,
        &[icsp("c", &[e("*.a.com", &[""])])],
        l,
        &wild("*.a.com"),
    );
    assert_err_style(
        TEMPLATE,
        &[icsp("c", &[e("a.com", &["", "*"])])],
        l,
        empty_mir,
    );
    assert_err_style(
        TEMPLATE,
        &[icsp("c", &[e("a.com", &["*x", ""])])],
        l,
        &wild("*x"),
    );
    assert_err_style(
        TEMPLATE,
        &[
            icsp("c", &[e("a.com", &["m.io"]), e("b.com", &["*y"])]),
            icsp("d", &[e("", &["m.io"])]),
        ],
        l,
        &wild("*y"),
    );
    // Insecure, then blocked, then ICSP — same messages as §2.1–2.2.
    assert_err_style(
        TEMPLATE,
        &[
            icsp("c", &[e("", &["m.io"])]),
            image(Some(&[""]), Some(&["*.a.com/x"]), None),
        ],
        l,
        "invalid entry for insecure registries \"\"",
    );
    assert_err_style(
        TEMPLATE,
        &[
            icsp("c", &[e("", &["m.io"])]),
            image(Some(&["i.io"]), Some(&["*.a.com/x"]), None),
        ],
        l,
        "invalid entry for blocked registries \"*.a.com/x\"",
    );
    // No regex check in legacy: uppercase paths pass there, not in the current style.
    let docs = [icsp("c", &[e("a.com/UPPER", &["m.io/UP"])])];
    let out = run_style(TEMPLATE, &docs, l);
    assert_regs(
        &out.output,
        vec![loc("a.com/UPPER").mbdo().plain(&["m.io/UP"])],
    );
    assert_err(TEMPLATE, &docs, "invalid format for source \"a.com/UPPER\"");
}

// =============================================================================================
// Seed example (ubi8repo)
// =============================================================================================

fn ubi8repo() -> String {
    "apiVersion: operator.openshift.io/v1alpha1
kind: ImageContentSourcePolicy
metadata:
  name: ubi8repo
spec:
  repositoryDigestMirrors:
  - mirrors:
    - example.io/example/ubi-minimal
    - example.com/example/ubi-minimal
    source: registry.access.redhat.com/ubi8/ubi-minimal
  - mirrors:
    - mirror.example.com/redhat
    source: registry.redhat.io/openshift4
  - mirrors:
    - mirror.example.com
    source: registry.redhat.io
  - mirrors:
    - mirror.example.net/image
    source: registry.example.com/example/myimage
  - mirrors:
    - mirror.example.net
    source: registry.example.com/example
  - mirrors:
    - mirror.example.net/registry-example-com
    source: registry.example.com
"
    .to_string()
}

#[test]
fn seed_ubi8repo_legacy_matches_documented_node_file() {
    let out = run_style(TEMPLATE, &[ubi8repo()], Style::Legacy);
    assert_eq!(search_of(&out.output), tmpl_search());
    // Documented order: sources sorted byte-wise.
    assert_regs_ordered(
        &out.output,
        vec![
            loc("registry.access.redhat.com/ubi8/ubi-minimal")
                .mbdo()
                .plain(&[
                    "example.io/example/ubi-minimal",
                    "example.com/example/ubi-minimal",
                ]),
            loc("registry.example.com")
                .mbdo()
                .plain(&["mirror.example.net/registry-example-com"]),
            loc("registry.example.com/example")
                .mbdo()
                .plain(&["mirror.example.net"]),
            loc("registry.example.com/example/myimage")
                .mbdo()
                .plain(&["mirror.example.net/image"]),
            loc("registry.redhat.io")
                .mbdo()
                .plain(&["mirror.example.com"]),
            loc("registry.redhat.io/openshift4")
                .mbdo()
                .plain(&["mirror.example.com/redhat"]),
        ],
    );
}

#[test]
fn seed_ubi8repo_current_style() {
    let out = run(TEMPLATE, &[ubi8repo()]);
    assert_regs_ordered(
        &out.output,
        vec![
            loc("registry.access.redhat.com/ubi8/ubi-minimal").d(&[
                "example.io/example/ubi-minimal",
                "example.com/example/ubi-minimal",
            ]),
            loc("registry.example.com").d(&["mirror.example.net/registry-example-com"]),
            loc("registry.example.com/example").d(&["mirror.example.net"]),
            loc("registry.example.com/example/myimage").d(&["mirror.example.net/image"]),
            loc("registry.redhat.io").d(&["mirror.example.com"]),
            loc("registry.redhat.io/openshift4").d(&["mirror.example.com/redhat"]),
        ],
    );
    assert!(out.classification.safe);
}

// =============================================================================================
// Idempotence and reversibility
// =============================================================================================

const BASE_COMMENTED: &str = "# Registries configuration (admin)
unqualified-search-registries = ['registry.access.redhat.com', 'docker.io'] # trailing comment

# end of file
";

const BASE_RICH: &str = r#"# top comment
unqualified-search-registries = ["registry.access.redhat.com", "docker.io"]
short-name-mode = "enforcing"
some-unknown-key = "kept"   # unknown to containers/image

[[registry]]
# entry comment
location = "a.com/x"
custom-key = 1
[[registry.mirror]]
location = "own.io/x"   # own mirror

# wildcard entry
[[registry]]
prefix = "*.w.io"

[[registry]]
location = "a.com/x/sub"

[aliases]
"fedora" = "registry.fedoraproject.org/fedora"
"ubi8" = "registry.access.redhat.com/ubi8"
"#;

const BASE_V1_TABLES: &str = "# v1 tables without lists are ignored by containers/image
unqualified-search-registries = ['registry.access.redhat.com', 'docker.io']

[registries.search]
# registries = ['docker.io']

[[registry]]
location = \"legacy.io\"
";

fn policy_sets() -> Vec<Vec<String>> {
    vec![
        vec![
            idms(
                "d",
                &[
                    e("a.com/x", &["m1.io/x", "m2.io/x"]),
                    e("*.q.io", &["mq.io"]),
                ],
            ),
            itms("t", &[e("a.com/x", &["t.io/x"])]),
            icsp("c", &[e("b.com", &["m.io/b"])]),
        ],
        vec![
            idms("d", &[en("a.com/x", &["m.io/x"]), e("a.com", &["m.io/a"])]),
            image(
                Some(&["m.io", "*.w.io"]),
                Some(&["a.com/x/sub", "a.com/blk", "*.b.io"]),
                Some(&["s.io"]),
            ),
        ],
        vec![image(Some(&["legacy.io"]), None, None)],
    ]
}

#[test]
fn idempotent_and_reversible_on_several_bases() {
    let crlf = BASE_RICH.replace('\n', "\r\n");
    for base in [
        TEMPLATE,
        BASE_COMMENTED,
        BASE_RICH,
        BASE_V1_TABLES,
        crlf.as_str(),
    ] {
        for docs in policy_sets() {
            let first = run(base, &docs);
            assert!(first.changed, "policies change the file:\n{base}");
            // Every comment line of the administrator's file survives.
            for line in base.lines().map(str::trim).filter(|l| l.starts_with('#')) {
                assert!(
                    first.output.contains(line),
                    "comment {line:?} lost:\n{}",
                    first.output
                );
            }
            assert_eq!(search_of(&first.output), search_of(base));
            // Idempotence.
            let second = run(&first.output, &docs);
            assert!(
                !second.changed,
                "second apply changed:\n{}\n---\n{}",
                first.output, second.output
            );
            assert_eq!(second.output, first.output);
            // Same result whatever the previous managed state was.
            let other = run(base, &policy_sets()[2]);
            let again = run(&other.output, &docs);
            assert_eq!(
                by_scope_or_list(&again.output),
                by_scope_or_list(&first.output)
            );
            // Reversibility.
            let back = run(&first.output, &[]);
            assert_eq!(back.output, base, "not reversible:\n{}", first.output);
        }
    }
}

fn by_scope_or_list(text: &str) -> Vec<R> {
    regs(text)
}

#[test]
fn rich_base_semantics() {
    let out = run(BASE_RICH, &policy_sets()[1]);
    // Digest buckets: a.com, a.com/x (blocked). Blocked pre-pass: a.com/x/sub exists, a.com/blk
    // and *.b.io new. Insecure m.io (new) marks mirrors m.io/…; *.w.io exists. Propagation from
    // a.com: a.com/blk gets m.io/a/blk (a.com/x has mirrors); a.com/x/sub got a.com's mirrors
    // first (first qualifying bucket), so a.com/x's pass skips it.
    assert_regs_ordered(
        &out.output,
        vec![
            loc("a.com/x")
                .blocked()
                .plain(&["own.io/x"])
                .m("m.io/x", "digest-only", true),
            pre("*.w.io").insecure(),
            loc("a.com/x/sub")
                .blocked()
                .m("m.io/a/x/sub", "digest-only", true),
            loc("a.com").m("m.io/a", "digest-only", true),
            loc("a.com/blk")
                .blocked()
                .m("m.io/a/blk", "digest-only", true),
            pre("*.b.io").blocked(),
            loc("m.io").insecure(),
        ],
    );
    let conf = containers::load("out", &out.output).unwrap();
    assert_eq!(conf.short_name_mode, "enforcing");
    assert_eq!(conf.aliases.as_ref().map(|a| a.len()), Some(2));
    assert!(out.output.contains("some-unknown-key = \"kept\""));
    assert!(out.output.contains("custom-key = 1"));
}

// =============================================================================================
// Further edge cases
// =============================================================================================

#[test]
fn s4_duplicate_base_entries_find_takes_the_first() {
    let base = format!(
        "{TEMPLATE}\n[[registry]]\nlocation = \"a.com\"\n\n[[registry]]\nlocation = \"a.com\"\n"
    );
    let out = run(
        &base,
        &[
            idms("d", &[e("a.com", &["m.io"])]),
            image(Some(&["a.com"]), None, None),
        ],
    );
    // Mirrors go to the first; the second is not "nested" for propagation (same scope) but is
    // for the insecure pass (equal scopes nest).
    assert_regs_ordered(
        &out.output,
        vec![
            loc("a.com").insecure().d(&["m.io"]),
            loc("a.com").insecure(),
        ],
    );
}

#[test]
fn s4_tag_only_sub_source_does_not_receive_parent_digest_mirrors() {
    // a.com/ns has (tag) mirrors after step 2, so the digest bucket a.com skips it.
    let out = run(
        TEMPLATE,
        &[
            idms("d", &[e("a.com", &["d.io/a"])]),
            itms("t", &[e("a.com/ns", &["t.io/ns"])]),
        ],
    );
    assert_regs(
        &out.output,
        vec![loc("a.com").d(&["d.io/a"]), loc("a.com/ns").t(&["t.io/ns"])],
    );
    let out = run(
        TEMPLATE,
        &[
            itms("t", &[e("a.com", &["t.io/a"])]),
            idms("d", &[e("a.com/ns", &["d.io/ns"])]),
        ],
    );
    assert_regs_ordered(
        &out.output,
        vec![loc("a.com/ns").d(&["d.io/ns"]), loc("a.com").t(&["t.io/a"])],
    );
}

#[test]
fn s4_insecure_sub_scope_receives_parent_mirrors() {
    let out = run(
        TEMPLATE,
        &[
            idms("d", &[e("a.com", &["m.io/a", "n.io/a"])]),
            image(Some(&["a.com/ns"]), None, None),
        ],
    );
    assert_regs_ordered(
        &out.output,
        vec![
            loc("a.com").d(&["m.io/a", "n.io/a"]),
            loc("a.com/ns").insecure().d(&["m.io/a/ns", "n.io/a/ns"]),
        ],
    );
}

#[test]
fn s3_icsp_duplicate_mirrors_through_apply() {
    let out = run(
        TEMPLATE,
        &[icsp("c", &[e("src.io", &["m1.io", "m2.io", "m1.io"])])],
    );
    assert_regs(&out.output, vec![loc("src.io").d(&["m1.io", "m2.io"])]);
}

#[test]
fn s2_conflict_check_uses_the_exact_source_string() {
    let out = run(
        TEMPLATE,
        &[
            idms("d", &[en("docker.io/busybox", &["m.io/b"])]),
            itms("t", &[e("docker.io/library/busybox", &["t.io/b"])]),
        ],
    );
    assert_regs(
        &out.output,
        vec![
            loc("docker.io/busybox").blocked().d(&["m.io/b"]),
            loc("docker.io/library/busybox").t(&["t.io/b"]),
        ],
    );
}

#[test]
fn s11_legacy_on_existing_base_entry() {
    let base = format!(
        "{TEMPLATE}\n[[registry]]\nlocation = \"a.com\"\n[[registry.mirror]]\nlocation = \"own.io\"\n"
    );
    let out = run_style(&base, &[icsp("c", &[e("a.com", &["m.io"])])], Style::Legacy);
    assert_regs(
        &out.output,
        vec![loc("a.com").mbdo().plain(&["own.io", "m.io"])],
    );
    // A base mirror with pull-from-mirror cannot be combined with the registry-level flag.
    let base = format!(
        "{TEMPLATE}\n[[registry]]\nlocation = \"a.com\"\n[[registry.mirror]]\nlocation = \"own.io\"\npull-from-mirror = \"all\"\n"
    );
    assert_err_style(
        &base,
        &[icsp("c", &[e("a.com", &["m.io"])])],
        Style::Legacy,
        "cannot set mirror usage mirror-by-digest-only for the registry (\"a.com\") and pull-from-mirror for per-mirror (\"own.io\") at the same time",
    );
}

#[test]
fn s1_5_payload_filter_counts_only_usable_digest_mirrors() {
    let payload = "quay.io/openshift-release-dev/ocp-release@sha256:1111111111111111111111111111111111111111111111111111111111111111";
    let o = ApplyOptions {
        payload_repo: Some(payload.to_string()),
        ..ApplyOptions::default()
    };
    let repo = "quay.io/openshift-release-dev/ocp-release";
    // Tag mirrors do not count (the payload is pulled by digest; ITMS is not consulted).
    let ps = set(&[
        image(None, Some(&["quay.io"]), None),
        itms("t", &[e(repo, &["t.io/ocp"])]),
    ]);
    let out = apply("registries.conf", TEMPLATE, &ps, &o).unwrap();
    assert_regs(&out.output, vec![loc(repo).t(&["t.io/ocp"])]);
    // A digest mirror that is itself blocked does not count either.
    let ps = set(&[
        image(None, Some(&["quay.io", "m.io"]), None),
        idms("d", &[e(repo, &["m.io/ocp"])]),
    ]);
    let out = apply("registries.conf", TEMPLATE, &ps, &o).unwrap();
    assert_regs(
        &out.output,
        vec![loc(repo).d(&["m.io/ocp"]), loc("m.io").blocked()],
    );
    // A registry-wide mirror reaches the payload through the propagated sub-scope mirrors.
    let ps = set(&[
        image(None, Some(&["quay.io/openshift-release-dev"]), None),
        idms("d", &[e("quay.io", &["m.io"])]),
    ]);
    let out = apply("registries.conf", TEMPLATE, &ps, &o).unwrap();
    assert_regs(
        &out.output,
        vec![
            loc("quay.io").d(&["m.io"]),
            loc("quay.io/openshift-release-dev")
                .blocked()
                .d(&["m.io/openshift-release-dev"]),
        ],
    );
}

#[test]
fn s3_entry_without_mirrors_key_is_ignored() {
    let doc = "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: d\nspec:\n  imageDigestMirrors:\n  - source: a.com/x\n    mirrorSourcePolicy: NeverContactSource\n  - source: b.com/y\n    mirrors: [m.io/y]\n".to_string();
    let out = run(TEMPLATE, &[doc]);
    assert_regs(&out.output, vec![loc("b.com/y").d(&["m.io/y"])]);
}
