//! Property tests of the mirror engine: idempotence, reversibility, history independence, "output
//! always loads", and the differential test of the indexed renderer against the literal spec.

use proptest::prelude::*;
use rhel_node_agent::core::mirrors::engine::{apply, ApplyOptions};
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
