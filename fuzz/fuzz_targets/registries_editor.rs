//! Arbitrary text as the administrator's registries.conf, with a fixed policy set: apply must fail
//! cleanly or produce a file that loads, is idempotent, and reverts to the input byte for byte.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rhel_node_agent::core::mirrors::engine::{apply, ApplyOptions};
use rhel_node_agent::core::mirrors::{containers, PolicySet};

const POLICIES: &str = r#"
apiVersion: config.openshift.io/v1
kind: ImageDigestMirrorSet
metadata: {name: d}
spec:
  imageDigestMirrors:
  - source: a.com/ns
    mirrors: [m1.net/ns, m2.net/x]
  - source: b.com
    mirrors: [m3.net]
    mirrorSourcePolicy: NeverContactSource
---
apiVersion: config.openshift.io/v1
kind: ImageTagMirrorSet
metadata: {name: t}
spec:
  imageTagMirrors:
  - source: a.com/ns/tools
    mirrors: [m1.net/tools]
---
apiVersion: config.openshift.io/v1
kind: Image
metadata: {name: cluster}
spec:
  registrySources:
    insecureRegistries: [m1.net]
    blockedRegistries: [c.com/private]
"#;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // Already-managed input is covered too: markers in the input are parsed like any file.
    let mut set = PolicySet::default();
    set.add_text("p.yaml", POLICIES.as_bytes()).expect("fixed policies parse");
    let opts = ApplyOptions::default();
    let Ok(first) = apply("r.conf", text, &set, &opts) else { return };
    assert!(containers::load("out", &first.output).is_ok(), "output must load");
    let again = apply("r.conf", &first.output, &set, &opts).expect("re-apply succeeds");
    assert_eq!(again.output, first.output, "apply is idempotent");
    let removed = apply("r.conf", &first.output, &PolicySet::default(), &opts).expect("removal succeeds");
    let base = apply("r.conf", text, &PolicySet::default(), &opts).expect("stripping the input succeeds");
    // Byte-exact, except that a file mixing CRLF and LF line endings is normalised to LF, and a
    // missing final newline is added once the agent has written the file (both documented).
    let mixed = text.contains("\r\n") && text.matches('\n').count() != text.matches("\r\n").count();
    let norm = |s: &str| {
        let s = if mixed { s.replace("\r\n", "\n") } else { s.to_string() };
        if text.ends_with('\n') {
            s
        } else {
            s.trim_end_matches(['\n', '\r']).to_string()
        }
    };
    assert_eq!(norm(&removed.output), norm(&base.output), "removal restores the administrator's file");
});
