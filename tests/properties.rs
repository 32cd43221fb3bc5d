//! Property tests of the mirror engine: idempotence, reversibility, history independence, "output
//! always loads", and the differential test of the indexed renderer against the literal spec.

use std::sync::Arc;

use proptest::prelude::*;
use rhel_node_agent::core::mirrors::engine::{apply, ApplyOptions};
use rhel_node_agent::core::mirrors::incremental::{apply_and_prepare, Prepared};
use rhel_node_agent::core::mirrors::merge;
use rhel_node_agent::core::mirrors::model::{Mirror, Registry};
use rhel_node_agent::core::mirrors::render::{render_entries, RenderInput};
use rhel_node_agent::core::mirrors::{containers, reference, PolicySet, Style};

const HOSTS: &[&str] = &["a.com", "b.com", "a.com:5000", "x.a.com", "m.net", "r.io"];
const PATHS: &[&str] = &["", "/ns", "/ns/r", "/r", "/ns/r/x"];

fn scope() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => (prop::sample::select(HOSTS), prop::sample::select(PATHS)).prop_map(|(h, p)| format!("{h}{p}")),
        1 => prop::sample::select(&["*.a.com", "*.com"][..]).prop_map(str::to_string),
    ]
}

fn plain_scope() -> impl Strategy<Value = String> {
    (prop::sample::select(HOSTS), prop::sample::select(PATHS)).prop_map(|(h, p)| format!("{h}{p}"))
}

#[derive(Debug, Clone)]
struct Entry {
    kind: &'static str,
    source: String,
    mirrors: Vec<String>,
    never: bool,
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        prop::sample::select(
            &[
                "ImageContentSourcePolicy",
                "ImageDigestMirrorSet",
                "ImageTagMirrorSet",
            ][..],
        ),
        scope(),
        prop::collection::vec(plain_scope(), 0..4),
        any::<bool>(),
    )
        .prop_map(|(kind, source, mirrors, never)| Entry {
            kind,
            source,
            mirrors,
            never,
        })
}

#[derive(Debug, Clone)]
struct Inputs {
    entries: Vec<Entry>,
    insecure: Option<Vec<String>>,
    blocked: Option<Vec<String>>,
}

fn inputs() -> impl Strategy<Value = Inputs> {
    (
        prop::collection::vec(entry(), 0..6),
        prop::option::of(prop::collection::vec(scope(), 0..3)),
        prop::option::of(prop::collection::vec(scope(), 0..3)),
    )
        .prop_map(|(entries, insecure, blocked)| Inputs {
            entries,
            insecure,
            blocked,
        })
}

fn yaml_list(items: &[String]) -> String {
    format!(
        "[{}]",
        items
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The policies as YAML documents, one object per entry (so the policy is consistent per source
/// only when the generator made it so; inconsistent ones are rejected by validation and skipped).
fn policy_yaml(i: &Inputs) -> String {
    let mut docs = Vec::new();
    for (n, e) in i.entries.iter().enumerate() {
        let (api, field) = match e.kind {
            "ImageContentSourcePolicy" => {
                ("operator.openshift.io/v1alpha1", "repositoryDigestMirrors")
            }
            "ImageDigestMirrorSet" => ("config.openshift.io/v1", "imageDigestMirrors"),
            _ => ("config.openshift.io/v1", "imageTagMirrors"),
        };
        let policy = if e.never && e.kind != "ImageContentSourcePolicy" {
            "\n    mirrorSourcePolicy: NeverContactSource"
        } else {
            ""
        };
        docs.push(format!(
            "apiVersion: {api}\nkind: {}\nmetadata: {{name: p{n}}}\nspec:\n  {field}:\n  - source: {:?}\n    mirrors: {}{policy}\n",
            e.kind,
            e.source,
            yaml_list(&e.mirrors)
        ));
    }
    if i.insecure.is_some() || i.blocked.is_some() {
        let mut rs = String::new();
        if let Some(l) = &i.insecure {
            rs.push_str(&format!("      insecureRegistries: {}\n", yaml_list(l)));
        }
        if let Some(l) = &i.blocked {
            rs.push_str(&format!("      blockedRegistries: {}\n", yaml_list(l)));
        }
        docs.push(format!("apiVersion: config.openshift.io/v1\nkind: Image\nmetadata: {{name: cluster}}\nspec:\n  registrySources:\n{rs}"));
    }
    docs.join("---\n")
}

fn policies(i: &Inputs) -> PolicySet {
    let mut set = PolicySet::default();
    set.add_text("p.yaml", policy_yaml(i).as_bytes())
        .expect("generated YAML parses");
    set
}

/// A base registries.conf with comments, unknown keys, aliases and admin entries.
fn base_file() -> impl Strategy<Value = String> {
    prop::collection::vec((plain_scope(), prop::collection::vec(plain_scope(), 0..2), any::<bool>(), any::<bool>()), 0..4).prop_map(|entries| {
        let mut s = String::from("# administrator's registries.conf\nunqualified-search-registries = [\"registry.access.redhat.com\", \"docker.io\"]\nshort-name-mode = \"enforcing\"\n\n");
        for (k, (loc, mirrors, flag, comment)) in entries.iter().enumerate() {
            if *comment {
                s.push_str(&format!("# entry {k}: keep this comment\n"));
            }
            s.push_str(&format!("[[registry]]\nlocation = {loc:?}  # trailing comment\n"));
            if *flag {
                s.push_str("insecure = false\nx-admin-note = \"unknown key kept\"\n");
            }
            for m in mirrors {
                s.push_str(&format!("\n[[registry.mirror]]\nlocation = {m:?}\n"));
            }
            s.push('\n');
        }
        s.push_str("[aliases]\nubi = \"registry.access.redhat.com/ubi8\"\n# end of file\n");
        s
    }).prop_flat_map(|s| (Just(s), any::<bool>())).prop_map(|(s, crlf)| if crlf { s.replace('\n', "\r\n") } else { s })
}

fn opts() -> ApplyOptions {
    ApplyOptions::default()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    /// Applying the same inputs to the agent's own output changes nothing, byte for byte.
    #[test]
    fn idempotent(base in base_file(), i in inputs()) {
        let set = policies(&i);
        let Ok(first) = apply("r.conf", &base, &set, &opts()) else { return Ok(()) };
        let second = apply("r.conf", &first.output, &set, &opts()).expect("re-apply of own output succeeds");
        prop_assert!(!second.changed, "second apply changed the file:\n{}\n---\n{}", first.output, second.output);
        prop_assert_eq!(&second.output, &first.output);
    }

    /// Removing every policy restores the administrator's file byte for byte.
    #[test]
    fn reversible(base in base_file(), i in inputs()) {
        let set = policies(&i);
        let Ok(first) = apply("r.conf", &base, &set, &opts()) else { return Ok(()) };
        let removed = apply("r.conf", &first.output, &PolicySet::default(), &opts()).expect("removal succeeds");
        prop_assert_eq!(&removed.output, &base);
    }

    /// The result depends on the administrator's file and the current policies only, never on
    /// what was applied before.
    #[test]
    fn history_independent(base in base_file(), a in inputs(), b in inputs()) {
        let (sa, sb) = (policies(&a), policies(&b));
        let Ok(first) = apply("r.conf", &base, &sa, &opts()) else { return Ok(()) };
        let direct = apply("r.conf", &base, &sb, &opts());
        let via = apply("r.conf", &first.output, &sb, &opts());
        match (direct, via) {
            (Ok(d), Ok(v)) => prop_assert_eq!(d.output, v.output),
            (Err(d), Err(v)) => prop_assert_eq!(d.to_string(), v.to_string()),
            (d, v) => prop_assert!(false, "outcomes differ: {:?} vs {:?}", d.map(|o| o.output), v.map(|o| o.output)),
        }
    }

    /// Whatever the engine returns loads in containers/image, in both styles.
    #[test]
    fn output_always_loads(base in base_file(), i in inputs(), legacy in any::<bool>()) {
        let set = policies(&i);
        let o = ApplyOptions { style: if legacy { Style::Legacy } else { Style::Current }, ..ApplyOptions::default() };
        if let Ok(out) = apply("r.conf", &base, &set, &o) {
            prop_assert!(containers::load("out", &out.output).is_ok());
            // The engine validates its model instead of re-parsing: the text must decode to it.
            let decoded: Vec<Registry> = containers::decode("out", &out.output).expect("decodes").registries.into_iter().map(|r| r.registry).collect();
            prop_assert_eq!(decoded, out.entries);
        }
    }
}

fn model_entry() -> impl Strategy<Value = Registry> {
    (
        scope(),
        prop::collection::vec(plain_scope(), 0..3),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(s, ms, ins, blk)| {
            let mut r = Registry::for_scope(&s);
            r.insecure = ins && s.len() % 2 == 0;
            r.blocked = blk && s.len() % 3 == 0;
            r.mirrors = ms
                .into_iter()
                .map(|m| Mirror {
                    location: m,
                    ..Mirror::default()
                })
                .collect();
            r
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    /// The indexed renderer equals the literal transcription of registries-spec §4 on every input,
    /// errors included.
    #[test]
    fn indexed_render_equals_literal_spec(base in prop::collection::vec(model_entry(), 0..6), i in inputs(), legacy in any::<bool>()) {
        let set = policies(&i);
        let sets = merge::merge(&set);
        let insecure = i.insecure.clone().unwrap_or_default();
        let blocked = i.blocked.clone().unwrap_or_default();
        let style = if legacy { Style::Legacy } else { Style::Current };
        let input = RenderInput { sets: &sets, insecure: &insecure, blocked: &blocked, style };
        let fast = render_entries(base.clone(), &input).map_err(|e| e.to_string());
        let slow = reference::render_entries(base, &input).map_err(|e| e.to_string());
        prop_assert_eq!(fast, slow);
    }
}

/// Policy files as the daemon reads them: one YAML file per group of entries, the `Image` object
/// (when the inputs have lists) in a file of its own, each parsed on its own; and joined in order.
fn policy_files(groups: &[Inputs], image: &Inputs) -> (PolicySet, Vec<Arc<PolicySet>>) {
    let mut files = Vec::new();
    for (n, g) in groups.iter().enumerate() {
        let only_entries = Inputs {
            entries: g.entries.clone(),
            insecure: None,
            blocked: None,
        };
        let text = policy_yaml(&only_entries).replace("name: p", &format!("name: f{n}p"));
        let mut set = PolicySet::default();
        set.add_text(&format!("{n:02}.yaml"), text.as_bytes())
            .expect("generated YAML parses");
        files.push(Arc::new(set));
    }
    let lists = Inputs {
        entries: vec![],
        insecure: image.insecure.clone(),
        blocked: image.blocked.clone(),
    };
    let mut set = PolicySet::default();
    set.add_text("99-image.yaml", policy_yaml(&lists).as_bytes())
        .expect("generated YAML parses");
    files.push(Arc::new(set));
    let mut all = PolicySet::default();
    for f in &files {
        all.append(f).expect("one Image at most");
    }
    (all, files)
}

/// Compare an incremental update with the full apply of the same inputs to the same text.
fn same_as_full(
    prepared: &Prepared,
    (set, files): &(PolicySet, Vec<Arc<PolicySet>>),
) -> Result<Option<Prepared>, TestCaseError> {
    let full = apply("r.conf", prepared.text(), set, &opts());
    let mut next = prepared.clone();
    let Some(upd) = next.update(files, &opts()) else {
        // Declining leaves the state as it was.
        prop_assert_eq!(next.text(), prepared.text());
        return Ok(None);
    };
    let full = match full {
        Ok(f) => f,
        Err(e) => {
            return Err(TestCaseError::fail(format!(
                "incremental update succeeded where the full apply fails: {e}"
            )))
        }
    };
    prop_assert_eq!(upd.output.as_str(), full.output.as_str());
    prop_assert_eq!(upd.changed, full.changed);
    prop_assert_eq!(&upd.classification, &full.classification);
    prop_assert_eq!(&upd.warnings, &full.warnings);
    prop_assert_eq!(&upd.summary, &full.summary);
    prop_assert_eq!(&next.managed_scopes(), &full.managed_scopes);
    prop_assert_eq!(&upd.search_dropin, &full.search_dropin);
    prop_assert_eq!(next.text(), full.output.as_str());
    Ok(Some(next))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, .. ProptestConfig::default() })]

    /// The daemon's incremental path (re-render only the scopes whose sources changed, splice
    /// their tables into the kept text) gives exactly what the full apply gives, over two
    /// successive changes of one policy file (and sometimes of the `Image` lists), or declines.
    #[test]
    fn incremental_update_equals_full_apply(
        base in base_file(),
        groups in prop::collection::vec(inputs(), 1..4),
        image in inputs(),
        change1 in (0usize..4, inputs(), any::<bool>()),
        change2 in (0usize..4, inputs()),
    ) {
        let (before, files) = policy_files(&groups, &image);
        let Ok((_, Some(prepared))) = apply_and_prepare("r.conf", &base, &before, files, &opts()) else { return Ok(()) };
        // The kept state describes the full apply's output exactly.
        let again = apply("r.conf", prepared.text(), &before, &opts()).expect("re-apply");
        prop_assert!(!again.changed);

        let mut g1 = groups.clone();
        let k = change1.0 % g1.len();
        g1[k] = change1.1.clone();
        let image1 = if change1.2 { change1.1.clone() } else { image.clone() };
        let after1 = policy_files(&g1, &image1);
        let Some(next) = same_as_full(&prepared, &after1)? else { return Ok(()) };

        let mut g2 = g1.clone();
        let k = change2.0 % g2.len();
        g2[k] = change2.1.clone();
        let after2 = policy_files(&g2, &image1);
        same_as_full(&next, &after2)?;
    }
}

/// The realistic shape takes the incremental path: 2,000 sources in 100 files over a commented
/// 200-entry base, one file's 20 sources get new mirrors (then a source is added and one removed).
#[test]
fn incremental_update_is_used_for_a_file_of_twenty_sources() {
    let mut base = String::from("# site\nunqualified-search-registries = [\"docker.io\"]\n\n");
    for i in 0..200 {
        base.push_str(&format!(
            "# entry {i}\n[[registry]]\nlocation = \"site{i}.example.org/team{}\"\n\n",
            i % 7
        ));
    }
    let file = |f: usize, variant: usize, extra: bool| -> String {
        let mut s = format!("apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata: {{name: f{f}}}\nspec:\n  imageDigestMirrors:\n");
        let n = if extra { 21 } else { 20 };
        for i in 0..n {
            let src = format!("registry{}.example.com/ns{f}/repo{i}", i % 5);
            s.push_str(&format!(
                "  - source: {src}\n    mirrors: [m0.example.net/v{variant}/r{f}-{i}, m1.example.net/r{f}-{i}]\n"
            ));
        }
        s
    };
    let build = |changed: Option<(usize, usize, bool)>| {
        let mut all = PolicySet::default();
        let mut files = Vec::new();
        for f in 0..100 {
            let text = match changed {
                Some((cf, v, extra)) if cf == f => file(f, v, extra),
                _ => file(f, 0, false),
            };
            let mut set = PolicySet::default();
            set.add_text(&format!("{f:03}.yaml"), text.as_bytes())
                .expect("parses");
            all.append(&set).expect("joins");
            files.push(Arc::new(set));
        }
        (all, files)
    };
    let (all, files) = build(None);
    let (out, prepared) = apply_and_prepare("r.conf", &base, &all, files, &opts()).expect("apply");
    let mut state = prepared.expect("the shape is prepared for incremental updates");
    assert_eq!(state.text(), out.output);
    for change in [(42, 1, false), (42, 1, true), (7, 2, false), (42, 0, false)] {
        let (set, files) = build(Some(change));
        let full = apply("r.conf", state.text(), &set, &opts()).expect("full apply");
        let upd = state
            .update(&files, &opts())
            .expect("incremental path taken");
        assert_eq!(upd.output.as_str(), full.output, "change {change:?}");
        assert!(upd.changed && full.changed);
        assert_eq!(upd.classification, full.classification);
        assert_eq!(upd.summary, full.summary);
        assert_eq!(upd.warnings, full.warnings);
        assert_eq!(state.managed_scopes(), full.managed_scopes);
        assert_eq!(state.text(), full.output);
    }
}

/// The daemon's cached apply on disk: the first apply takes the full path, a change of one
/// policy file the incremental one, and the file is byte for byte what a fresh full apply of the
/// same inputs writes; an edit behind the agent's back, or a dry run, never uses a stale state.
#[test]
fn cached_apply_on_disk_matches_a_fresh_full_apply() {
    use rhel_node_agent::adapters::registries::{
        apply_mirrors, apply_mirrors_cached, ApplyRequest, MirrorCache,
    };
    use rhel_node_agent::config::{MirrorMode, Settings};
    use std::fs;

    let policy = |f: usize, variant: usize| -> String {
        let mut s = format!("apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata: {{name: f{f}}}\nspec:\n  imageDigestMirrors:\n");
        for i in 0..5 {
            s.push_str(&format!(
                "  - source: registry{f}.example.com/ns/repo{i}\n    mirrors: [m.example.net/v{variant}/r{f}-{i}]\n"
            ));
        }
        s
    };
    let base = "# site file\n[[registry]]\nlocation = \"site.example.org\"\n\n[aliases]\nubi = \"registry.access.redhat.com/ubi8\"\n";
    let setup = |variants: &[usize]| {
        let root = tempfile::tempdir().expect("tempdir");
        let s = Settings::defaults(root.path());
        fs::create_dir_all(s.mirrors.registries_conf.parent().unwrap()).unwrap();
        fs::write(&s.mirrors.registries_conf, base).unwrap();
        let dir = root.path().join("policies");
        fs::create_dir_all(&dir).unwrap();
        for (f, v) in variants.iter().enumerate() {
            fs::write(dir.join(format!("{f:02}.yaml")), policy(f, *v)).unwrap();
        }
        let req = ApplyRequest {
            registries_conf: s.mirrors.registries_conf.clone(),
            dropin_dir: root.path().join("etc/containers/registries.conf.d"),
            policies: vec![dir],
            mode: MirrorMode::InPlace,
            style: Style::Current,
            dry_run: false,
            skip_daemon_check: true,
            hold_unsafe: false,
        };
        (root, s, req)
    };
    let fresh = |variants: &[usize], admin_tail: &str| -> String {
        let (_root, s, req) = setup(variants);
        let mut text = fs::read_to_string(&s.mirrors.registries_conf).unwrap();
        text.push_str(admin_tail);
        fs::write(&s.mirrors.registries_conf, text).unwrap();
        apply_mirrors(&s, &req).expect("fresh apply");
        fs::read_to_string(&s.mirrors.registries_conf).unwrap()
    };

    let (root, s, req) = setup(&[0, 0, 0, 0]);
    let dir = root.path().join("policies");
    let conf = s.mirrors.registries_conf.clone();
    let mut cache = MirrorCache::new();
    let r = apply_mirrors_cached(&s, &req, Some(&mut cache)).expect("first apply");
    assert!(r.changed() && !r.incremental);
    assert_eq!(fs::read_to_string(&conf).unwrap(), fresh(&[0, 0, 0, 0], ""));

    fs::write(dir.join("02.yaml"), policy(2, 1)).unwrap();
    let r = apply_mirrors_cached(&s, &req, Some(&mut cache)).expect("change");
    assert!(
        r.changed() && r.incremental,
        "one changed file takes the incremental path"
    );
    assert_eq!(fs::read_to_string(&conf).unwrap(), fresh(&[0, 0, 1, 0], ""));
    let r = apply_mirrors_cached(&s, &req, Some(&mut cache)).expect("unchanged");
    assert!(!r.changed() && r.incremental);

    // A dry run computes the change but keeps the state of the file on disk.
    fs::write(dir.join("00.yaml"), policy(0, 3)).unwrap();
    let dry = ApplyRequest {
        dry_run: true,
        ..req.clone()
    };
    let r = apply_mirrors_cached(&s, &dry, Some(&mut cache)).expect("dry run");
    assert!(r.changed());
    assert_eq!(fs::read_to_string(&conf).unwrap(), fresh(&[0, 0, 1, 0], ""));
    let r = apply_mirrors_cached(&s, &req, Some(&mut cache)).expect("after the dry run");
    assert!(r.changed() && r.incremental);
    assert_eq!(fs::read_to_string(&conf).unwrap(), fresh(&[3, 0, 1, 0], ""));

    // The administrator edits the file: the kept state no longer describes it, full path.
    let mut text = fs::read_to_string(&conf).unwrap();
    text.push_str("# added by hand\n");
    fs::write(&conf, text).unwrap();
    fs::write(dir.join("01.yaml"), policy(1, 2)).unwrap();
    let r = apply_mirrors_cached(&s, &req, Some(&mut cache)).expect("after a hand edit");
    assert!(r.changed() && !r.incremental);
    assert_eq!(
        fs::read_to_string(&conf).unwrap(),
        fresh(&[3, 2, 1, 0], "# added by hand\n")
    );
    // A policy file that no longer parses: the full path's exact error, nothing written.
    let before = fs::read_to_string(&conf).unwrap();
    fs::write(dir.join("03.yaml"), "kind: [").unwrap();
    let err = apply_mirrors_cached(&s, &req, Some(&mut cache)).expect_err("bad policy");
    assert!(err.to_string().contains("03.yaml"), "{err}");
    assert_eq!(fs::read_to_string(&conf).unwrap(), before);
}
