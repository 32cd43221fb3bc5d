//! Bad-input catalogue for `mirrors apply` (issue 2, "Bad input"): malformed or hostile policies,
//! invalid base files, hostile file types and a read-only or full filesystem. Every case must end
//! with the documented exit code, one `error: …` line naming the file (and the object and field
//! where there is one), a byte-identical registries.conf, no `.rna-tmp.` leftovers and no drop-in.
//!
//! Each case runs the real binary in its own temporary directory with `--root <tmp>/root` and
//! `--dropin-dir <tmp>/d`, so nothing on the host is touched.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_rhel-node-agent");

/// A valid administrator registries.conf, with comments everywhere.
const BASE: &str = r#"# /etc/containers/registries.conf — maintained by the administrator
# Do not remove the comments below; auditors read them.
unqualified-search-registries = ["registry.access.redhat.com", "docker.io"]  # search order
short-name-mode = "enforcing"

# Internal Quay, with the administrator's own mirror.
[[registry]]
prefix = "quay.io"
location = "quay.io"

[[registry.mirror]]
location = "mirror.internal.example/quay" # trailing comment

# Short names.
[aliases]
"ubi8" = "registry.access.redhat.com/ubi8"
"#;

/// A valid policy, used where the bad input is the base file or the filesystem.
const GOOD_IDMS: &str = r#"apiVersion: config.openshift.io/v1
kind: ImageDigestMirrorSet
metadata:
  name: good
spec:
  imageDigestMirrors:
  - source: registry.example.com/ns
    mirrors:
    - m1.example.net/ns
    - m2.example.net/ns
"#;

/// Most single-case runs take a few milliseconds; hostile inputs must still fail fast.
const CASE_TIME_LIMIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------------------------------

/// One temporary directory: `registries.conf`, policy files, `d/` (drop-ins) and `root/`.
struct Fx {
    dir: tempfile::TempDir,
}

/// What a path in the fixture holds, for before/after comparisons (never follows links or reads
/// FIFOs).
#[derive(Debug, PartialEq, Eq)]
enum Node {
    Dir,
    File(Vec<u8>),
    Link(PathBuf),
    Other(String),
}

impl Fx {
    fn new() -> Fx {
        Fx::with_base(BASE.as_bytes())
    }

    fn with_base(base: &[u8]) -> Fx {
        let fx = Fx {
            dir: tempfile::Builder::new()
                .prefix("rna-bad-input.")
                .tempdir()
                .expect("temp dir"),
        };
        fx.write("registries.conf", base);
        fx
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn conf(&self) -> PathBuf {
        self.path("registries.conf")
    }

    fn write(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).expect("mkdir");
        }
        fs::write(&p, bytes).expect("write fixture file");
        p
    }

    /// `rhel-node-agent --root <tmp>/root mirrors apply --dropin-dir <tmp>/d` (no target yet).
    fn apply_cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--root")
            .arg(self.path("root"))
            .arg("mirrors")
            .arg("apply")
            .arg("--dropin-dir")
            .arg(self.path("d"));
        c.env_remove("RUST_LOG");
        c
    }

    /// Apply to `registries.conf` with `--policies` for every path in `policies`, then `extra`.
    fn apply(&self, policies: &[PathBuf], extra: &[&str]) -> (Output, Duration) {
        let mut c = self.apply_cmd();
        c.arg("--registries-conf").arg(self.conf());
        for p in policies {
            c.arg("--policies").arg(p);
        }
        c.args(extra);
        run(c)
    }

    /// Everything in the fixture except the agent's `root/` (state, locks, backups).
    fn snapshot(&self) -> BTreeMap<PathBuf, Node> {
        let mut out = BTreeMap::new();
        walk(self.dir.path(), self.dir.path(), &mut out);
        out
    }
}

fn walk(top: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Node>) {
    for e in fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        let rel = p.strip_prefix(top).unwrap().to_path_buf();
        if rel == Path::new("root") {
            continue;
        }
        let meta = fs::symlink_metadata(&p).expect("lstat");
        let ft = meta.file_type();
        if ft.is_symlink() {
            out.insert(rel, Node::Link(fs::read_link(&p).unwrap()));
        } else if ft.is_dir() {
            out.insert(rel, Node::Dir);
            walk(top, &p, out);
        } else if ft.is_file() {
            out.insert(rel, Node::File(fs::read(&p).unwrap()));
        } else {
            out.insert(rel, Node::Other(format!("{ft:?}")));
        }
    }
}

/// Every path under `dir` (recursively) whose name contains `.rna-tmp.`.
fn temp_leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let p = e.path();
        if e.file_name().to_string_lossy().contains(".rna-tmp.") {
            found.push(p.clone());
        }
        if fs::symlink_metadata(&p)
            .map(|m| m.file_type().is_dir())
            .unwrap_or(false)
        {
            found.extend(temp_leftovers(&p));
        }
    }
    found
}

fn run(mut c: Command) -> (Output, Duration) {
    let t = Instant::now();
    let out = c.output().expect("run rhel-node-agent");
    (out, t.elapsed())
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Check the exit code and the single `error: ` line (it must contain every needle).
fn assert_error(out: &Output, elapsed: Duration, code: i32, needles: &[&str]) {
    let stderr = stderr_of(out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit code\n--- stderr:\n{stderr}\n--- stdout:\n{stdout}"
    );
    assert!(
        !stderr.contains("panicked"),
        "the agent panicked:\n{stderr}"
    );
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "expected exactly one `error: ` line on stderr, got:\n{stderr}"
    );
    for n in needles {
        assert!(
            errors[0].contains(n),
            "the error line does not contain {n:?}:\n{}",
            errors[0]
        );
    }
    assert!(
        elapsed < CASE_TIME_LIMIT,
        "took {elapsed:?} (limit {CASE_TIME_LIMIT:?})"
    );
}

/// The full bad-input contract: code, message, nothing changed, nothing left behind.
fn assert_rejected(
    fx: &Fx,
    before: &BTreeMap<PathBuf, Node>,
    out: &Output,
    elapsed: Duration,
    code: i32,
    needles: &[&str],
) {
    assert_error(out, elapsed, code, needles);
    let after = fx.snapshot();
    assert_eq!(
        before.get(Path::new("registries.conf")),
        after.get(Path::new("registries.conf")),
        "registries.conf changed"
    );
    let leftovers = temp_leftovers(fx.dir.path());
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    let added: Vec<_> = after.keys().filter(|k| !before.contains_key(*k)).collect();
    let removed: Vec<_> = before.keys().filter(|k| !after.contains_key(*k)).collect();
    assert!(
        added.is_empty() && removed.is_empty(),
        "files appeared {added:?} / disappeared {removed:?} (drop-ins, temp files, …)"
    );
    for (k, v) in before {
        assert_eq!(Some(v), after.get(k), "{} changed", k.display());
    }
}

/// Write the policy files, apply them in order (plus `extra` arguments) and check the contract.
fn policy_case(files: &[(&str, &[u8])], extra: &[&str], code: i32, needles: &[&str]) {
    let fx = Fx::new();
    let paths: Vec<PathBuf> = files.iter().map(|(n, b)| fx.write(n, b)).collect();
    let before = fx.snapshot();
    let (out, elapsed) = fx.apply(&paths, extra);
    assert_rejected(&fx, &before, &out, elapsed, code, needles);
}

/// A bad base registries.conf with a valid policy: refused with the base file named.
fn base_case(base: &[u8], needles: &[&str]) {
    let fx = Fx::with_base(base);
    let p = fx.write("good.yaml", GOOD_IDMS.as_bytes());
    let before = fx.snapshot();
    let (out, elapsed) = fx.apply(&[p], &[]);
    let mut all = vec!["registries.conf"];
    all.extend_from_slice(needles);
    assert_rejected(&fx, &before, &out, elapsed, 2, &all);
}

/// `name: [file => content, …] [args …] => exit code, [needles…];` — one `#[test]` per line.
/// Contents may be `&str`, byte-string literals or `Vec<u8>`; files are passed to `--policies` in
/// the order listed.
macro_rules! policy_cases {
    ($(
        $name:ident: [$($file:expr => $content:expr),* $(,)?]
        $(args [$($arg:expr),* $(,)?])?
        => $code:expr, [$($needle:expr),* $(,)?];
    )*) => {
        $(
            #[test]
            fn $name() {
                policy_case(
                    &[$(($file, AsRef::<[u8]>::as_ref(&$content))),*],
                    &[$($($arg),*)?],
                    $code,
                    &[$($needle),*],
                );
            }
        )*
    };
}

/// `name: base content => [needles…];` — the base file is bad, the policy is good.
macro_rules! base_cases {
    ($($name:ident: $base:expr => [$($needle:expr),* $(,)?];)*) => {
        $(
            #[test]
            fn $name() {
                base_case(AsRef::<[u8]>::as_ref(&$base), &[$($needle),*]);
            }
        )*
    };
}

/// An IDMS named `x` with one entry.
fn idms(source: &str, mirrors: &[&str], policy: Option<&str>) -> String {
    let mut s = format!(
        "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: x\nspec:\n  imageDigestMirrors:\n  - source: {source:?}\n    mirrors: {mirrors:?}\n"
    );
    if let Some(p) = policy {
        s.push_str(&format!("    mirrorSourcePolicy: {p}\n"));
    }
    s
}

/// An ITMS named `t` with one entry.
fn itms(source: &str, mirrors: &[&str], policy: Option<&str>) -> String {
    idms(source, mirrors, policy)
        .replace("ImageDigestMirrorSet", "ImageTagMirrorSet")
        .replace("name: x", "name: t")
        .replace("imageDigestMirrors", "imageTagMirrors")
}

/// An ICSP named `c` with one entry.
fn icsp(source: &str, mirrors: &[&str]) -> String {
    format!(
        "apiVersion: operator.openshift.io/v1alpha1\nkind: ImageContentSourcePolicy\nmetadata:\n  name: c\nspec:\n  repositoryDigestMirrors:\n  - source: {source:?}\n    mirrors: {mirrors:?}\n"
    )
}

/// The `Image` object named `cluster` with the given insecure/blocked lists.
fn image_cluster(insecure: &[&str], blocked: &[&str]) -> String {
    format!(
        "apiVersion: config.openshift.io/v1\nkind: Image\nmetadata:\n  name: cluster\nspec:\n  registrySources:\n    insecureRegistries: {insecure:?}\n    blockedRegistries: {blocked:?}\n"
    )
}

/// The classic "billion laughs" alias bomb (9^9 ≈ 387 million nodes when expanded).
const BILLION_LAUGHS: &str = r#"apiVersion: config.openshift.io/v1
kind: ImageDigestMirrorSet
metadata: {name: lol}
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
spec:
  imageDigestMirrors:
  - source: a.com
    mirrors: *i
"#;

fn deep_yaml_block() -> String {
    // 1,000 levels of block mappings under spec.
    let mut s = String::from(
        "apiVersion: config.openshift.io/v1\nkind: Image\nmetadata: {name: cluster}\nspec:\n",
    );
    for i in 1..1000 {
        s.push_str(&" ".repeat(i * 2));
        s.push_str("a:\n");
    }
    s
}

fn deep_yaml_flow() -> String {
    format!(
        "kind: Image\nmetadata: {{name: cluster}}\nspec: {}\n",
        "{a: ".repeat(50_000)
    )
}

fn deep_json() -> String {
    format!(
        "{{\"kind\": \"ImageDigestMirrorSet\", \"spec\": {}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    )
}

/// Bytes that look like the start of an ELF binary, then a gzip header, then noise.
fn binary_garbage() -> Vec<u8> {
    let mut v = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    v.extend_from_slice(&[0x1f, 0x8b, 0x08, 0x00, 0xde, 0xad, 0xbe, 0xef]);
    let mut x: u32 = 0x1234_5678;
    for _ in 0..4096 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        v.push((x >> 16) as u8);
    }
    v
}

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

// ---------------------------------------------------------------------------------------------
// Policy inputs
// ---------------------------------------------------------------------------------------------

policy_cases! {
    // --- syntax ------------------------------------------------------------------------------
    broken_yaml: ["p.yaml" => "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nspec: [unclosed\n  imageDigestMirrors: {\n"]
        => 2, ["p.yaml"];
    yaml_tab_indentation: ["p.yaml" => "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata: {name: x}\nspec:\n\timageDigestMirrors: []\n"]
        => 2, ["p.yaml", "line 5"];
    json_syntax_error: ["p.json" => r#"{"apiVersion": "config.openshift.io/v1", "kind": "ImageDigestMirrorSet", "spec": {"imageDigestMirrors": [}"#]
        => 2, ["p.json"];
    wrong_field_type_mirrors_scalar: ["p.yaml" => "kind: ImageDigestMirrorSet\nmetadata: {name: x}\nspec:\n  imageDigestMirrors:\n  - source: a.com\n    mirrors: m.com\n"]
        => 2, ["p.yaml", "line 6"];
    second_document_broken: ["p.yaml" => format!("{}---\nkind: ImageDigestMirrorSet\nspec: {{imageDigestMirrors: [\n", GOOD_IDMS)]
        => 2, ["p.yaml"];

    // --- hostile bytes -----------------------------------------------------------------------
    binary_garbage_policy: ["p.yaml" => binary_garbage()] => 2, ["p.yaml", "UTF-8"];
    non_utf8_policy: ["p.yaml" => b"apiVersion: config.openshift.io/v1\nkind: Image\nmetadata: {name: caf\xe9}\n"]
        => 2, ["p.yaml", "not valid UTF-8"];
    nul_byte_policy: ["p.yaml" => b"apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\x00\nmetadata: {name: x}\n"]
        => 2, ["p.yaml"];
    billion_laughs_alias_bomb: ["p.yaml" => BILLION_LAUGHS] => 2, ["p.yaml"];
    deeply_nested_yaml_block: ["p.yaml" => deep_yaml_block()] => 2, ["p.yaml"];
    deeply_nested_yaml_flow: ["p.yaml" => deep_yaml_flow()] => 2, ["p.yaml"];
    deeply_nested_json: ["p.json" => deep_json()] => 2, ["p.json"];

    // --- objects -----------------------------------------------------------------------------
    wrong_kind_pod: ["p.yaml" => "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: {containers: []}\n"]
        => 2, ["p.yaml", "Pod/web", "kind"];
    pod_inside_list: ["p.yaml" => "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: web}\n"]
        => 2, ["p.yaml:4", "Pod/web"];
    missing_kind: ["p.yaml" => "apiVersion: config.openshift.io/v1\nmetadata: {name: nokind}\nspec:\n  imageDigestMirrors: []\n"]
        => 2, ["p.yaml", "nokind", "kind"];
    wrong_api_version_idms: ["p.yaml" => idms("a.com", &["m.com"], None).replace("config.openshift.io/v1", "operator.openshift.io/v1alpha1")]
        => 2, ["p.yaml", "ImageDigestMirrorSet/x", "apiVersion"];
    wrong_api_version_icsp: ["p.yaml" => icsp("a.com", &["m.com"]).replace("operator.openshift.io/v1alpha1", "config.openshift.io/v1")]
        => 2, ["p.yaml", "ImageContentSourcePolicy/c", "apiVersion"];
    two_image_cluster_objects: [
        "a.yaml" => image_cluster(&["ok.example.com"], &[]),
        "b.yaml" => image_cluster(&[], &["bad.example.com"]),
    ] => 2, ["b.yaml", "Image/cluster", "a.yaml"];

    // --- sources and mirrors (MCO's validation, spec §2) -------------------------------------
    empty_source: ["p.yaml" => idms("", &["m.com"], None)]
        => 2, ["p.yaml", "ImageDigestMirrorSet/x", "spec.imageDigestMirrors[0].source", r#"invalid format for source """#];
    empty_mirror: ["p.yaml" => idms("a.com", &["m.com", ""], None)]
        => 2, ["p.yaml", "ImageDigestMirrorSet/x", "spec.imageDigestMirrors[0].mirrors[1]", r#"invalid format for mirror """#];
    trailing_space_in_source: ["p.yaml" => idms("a.com ", &["m.com"], None)]
        => 2, ["p.yaml", "spec.imageDigestMirrors[0].source", r#"invalid format for source "a.com ""#];
    wildcard_mirror: ["p.yaml" => idms("a.com", &["*.m.com"], None)]
        => 2, ["p.yaml", "spec.imageDigestMirrors[0].mirrors[0]", r#"invalid format for mirror "*.m.com""#];
    wildcard_source_with_path: ["p.yaml" => idms("*.a.com/ns", &["m.com/ns"], None)]
        => 2, ["p.yaml", "spec.imageDigestMirrors[0].source", r#"invalid format for source "*.a.com/ns""#];
    uppercase_path_in_source: ["p.yaml" => idms("a.com/Repo", &["m.com/repo"], None)]
        => 2, ["p.yaml", "spec.imageDigestMirrors[0].source", r#"invalid format for source "a.com/Repo""#];
    source_with_tag: ["p.yaml" => idms("a.com/ns/repo:latest", &["m.com/ns/repo"], None)]
        => 2, ["p.yaml", "spec.imageDigestMirrors[0].source", r#"invalid format for source "a.com/ns/repo:latest""#];
    source_with_digest: ["p.yaml" => idms(&format!("a.com/ns/repo@{DIGEST}"), &["m.com/ns/repo"], None)]
        => 2, ["p.yaml", "spec.imageDigestMirrors[0].source", "invalid format for source \"a.com/ns/repo@sha256:"];
    http_scheme_in_mirror: ["p.yaml" => idms("a.com/ns", &["http://m.com/ns"], None)]
        => 2, ["p.yaml", "spec.imageDigestMirrors[0].mirrors[0]", r#"invalid format for mirror "http://m.com/ns""#];
    https_scheme_in_icsp_source: ["p.yaml" => icsp("https://a.com/ns", &["m.com/ns"])]
        => 2, ["p.yaml", "ImageContentSourcePolicy/c", "spec.repositoryDigestMirrors[0].source", r#"invalid format for source "https://a.com/ns""#];
    toml_injection_in_source: ["p.yaml" => idms("a.com\n[[registry]]\nlocation = \"evil.example\"", &["m.com"], None)]
        => 2, ["p.yaml", "spec.imageDigestMirrors[0].source", "invalid format for source"];
    homoglyph_source: ["p.yaml" => idms("ex\u{0430}mple.com/ns", &["m.com/ns"], None)]
        => 2, ["p.yaml", "spec.imageDigestMirrors[0].source", "invalid format for source"];
    never_contact_source_is_own_mirror: ["p.yaml" => idms("a.com/ns", &["m.com/ns", "a.com/ns"], Some("NeverContactSource"))]
        => 2, ["p.yaml", "ImageDigestMirrorSet/x", "spec.imageDigestMirrors[0]",
               r#"cannot set mirrorSourcePolicy: NeverContactSource if the source "a.com/ns" is one of the mirrors"#];
    conflicting_source_policy_idms_itms: [
        "idms.yaml" => idms("a.com/ns", &["m.com/ns"], Some("NeverContactSource")),
        "itms.yaml" => itms("a.com/ns", &["t.com/ns"], Some("AllowContactingSource")),
    ] => 2, ["itms.yaml", "ImageTagMirrorSet/t", "spec.imageTagMirrors[0]",
             r#"conflicting mirrorSourcePolicy is set for the same source "a.com/ns""#];
    bad_mirror_source_policy_value: ["p.yaml" => idms("a.com/ns", &["m.com/ns"], Some("Sometimes"))]
        => 2, ["p.yaml", "ImageDigestMirrorSet/x", "spec.imageDigestMirrors[0].mirrorSourcePolicy", "Sometimes"];

    // --- Image/cluster scopes ----------------------------------------------------------------
    invalid_insecure_scope: ["p.yaml" => image_cluster(&["ok.example.com", "*a.com"], &[])]
        => 2, ["p.yaml", "Image/cluster", "spec.registrySources.insecureRegistries[1]",
               r#"invalid entry for insecure registries "*a.com""#];
    invalid_blocked_scope_empty: ["p.yaml" => image_cluster(&[], &[""])]
        => 2, ["p.yaml", "Image/cluster", "spec.registrySources.blockedRegistries[0]",
               r#"invalid entry for blocked registries """#];
    invalid_blocked_scope_wildcard_path: ["p.yaml" => image_cluster(&[], &["*.a.com/x"])]
        => 2, ["p.yaml", "Image/cluster", "spec.registrySources.blockedRegistries[0]",
               r#"invalid entry for blocked registries "*.a.com/x""#];
    wildcard_nested_scope_internal_error: [
        "idms.yaml" => idms("*.example.com", &["m.example.net"], None),
        "image.yaml" => image_cluster(&[], &["foo.example.com"]),
    ] => 2, [r#"internal error: mirrorsAdjustedForNestedScope for a wildcard scope "*.example.com""#,
             "idms.yaml", "ImageDigestMirrorSet/x"];

    // --- --style legacy (OpenShift 4.11–4.12) -------------------------------------------------
    idms_with_legacy_style: ["p.yaml" => idms("a.com/ns", &["m.com/ns"], None)] args ["--style", "legacy"]
        => 2, ["p.yaml", "ImageDigestMirrorSet/x", "legacy"];
    itms_with_legacy_style: ["p.yaml" => itms("a.com/ns", &["m.com/ns"], None)] args ["--style", "legacy"]
        => 2, ["p.yaml", "ImageTagMirrorSet/t", "legacy"];
    legacy_icsp_wildcard_source: ["p.yaml" => icsp("*.a.com", &["m.com"])] args ["--style", "legacy"]
        => 2, ["p.yaml", "ImageContentSourcePolicy/c", "spec.repositoryDigestMirrors[0].source",
               r#"wildcard entries are not supported with mirror configuration "*.a.com""#];

    // --- the same rejection in every mode and output format ----------------------------------
    bad_input_dry_run: ["p.yaml" => idms("a.com ", &["m.com"], None)] args ["--dry-run"]
        => 2, ["p.yaml", "invalid format for source"];
    bad_input_json_output: ["p.yaml" => idms("a.com ", &["m.com"], None)] args ["-o", "json"]
        => 2, ["p.yaml", "invalid format for source"];
    bad_input_drop_in_mode: ["p.yaml" => idms("a.com ", &["m.com"], None)] args ["--mode", "drop-in"]
        => 2, ["p.yaml", "invalid format for source"];
    bad_input_verify_mode: ["p.yaml" => idms("a.com ", &["m.com"], None)] args ["--mode", "verify"]
        => 2, ["p.yaml", "invalid format for source"];

    // --- paths that are not policy files -----------------------------------------------------
    missing_policy_file: [] args ["--policies", "/nonexistent/rna-no-such-policy.yaml"]
        => 2, ["/nonexistent/rna-no-such-policy.yaml"];
    dev_zero_as_policy: [] args ["--policies", "/dev/zero"] => 2, ["/dev/zero", "not a regular file"];
}

#[test]
fn billion_laughs_fails_fast() {
    let fx = Fx::new();
    let p = fx.write("p.yaml", BILLION_LAUGHS.as_bytes());
    let (out, elapsed) = fx.apply(&[p], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(
        elapsed < Duration::from_secs(5),
        "alias bomb took {elapsed:?}"
    );
}

/// A policy file over the 16 MiB limit (sparse, so it costs nothing to make).
#[test]
fn huge_policy_file() {
    let fx = Fx::new();
    let p = fx.path("huge.yaml");
    let f = fs::File::create(&p).unwrap();
    f.set_len(16 * 1024 * 1024 + 1).unwrap();
    drop(f);
    let before = fx.snapshot();
    let (out, elapsed) = fx.apply(&[p], &[]);
    assert_rejected(
        &fx,
        &before,
        &out,
        elapsed,
        2,
        &["huge.yaml", "larger than"],
    );
}

/// A FIFO must be refused without opening it (opening would block forever: no writer).
#[test]
fn fifo_as_policy() {
    let fx = Fx::new();
    let p = fx.path("pipe.yaml");
    nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let before = fx.snapshot();
    let (out, elapsed) = fx.apply(&[p], &[]);
    assert_rejected(
        &fx,
        &before,
        &out,
        elapsed,
        2,
        &["pipe.yaml", "not a regular file"],
    );
}

/// A FIFO inside a policy directory (it has a policy-like name, so it is picked up).
#[test]
fn fifo_inside_policy_directory() {
    let fx = Fx::new();
    fx.write("pol/00-good.yaml", GOOD_IDMS.as_bytes());
    nix::unistd::mkfifo(
        &fx.path("pol/10-pipe.yaml"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .expect("mkfifo");
    let before = fx.snapshot();
    let (out, elapsed) = fx.apply(&[fx.path("pol")], &[]);
    assert_rejected(
        &fx,
        &before,
        &out,
        elapsed,
        2,
        &["10-pipe.yaml", "not a regular file"],
    );
}

/// In a directory, the first bad file (lexical order) is named, after good ones were read.
#[test]
fn bad_file_in_policy_directory() {
    let fx = Fx::new();
    fx.write("pol/00-good.yaml", GOOD_IDMS.as_bytes());
    fx.write(
        "pol/20-bad.yaml",
        idms("a.com/Upper", &["m.com"], None).as_bytes(),
    );
    fx.write(
        "pol/30-also-bad.yaml",
        idms("", &["m.com"], None).as_bytes(),
    );
    let before = fx.snapshot();
    let (out, elapsed) = fx.apply(&[fx.path("pol")], &[]);
    assert_rejected(
        &fx,
        &before,
        &out,
        elapsed,
        2,
        &["20-bad.yaml", r#"invalid format for source "a.com/Upper""#],
    );
}

// ---------------------------------------------------------------------------------------------
// Bad base files (valid policies): the administrator's file is already broken
// ---------------------------------------------------------------------------------------------

base_cases! {
    base_mirror_by_digest_only_with_pull_from_mirror:
        "# admin\n[[registry]]\nlocation = \"quay.io\"\nmirror-by-digest-only = true\n\n[[registry.mirror]]\nlocation = \"m.example.net\"\npull-from-mirror = \"digest-only\"\n"
        => ["quay.io", "cannot set mirror usage mirror-by-digest-only"];
    base_http_location:
        "# admin\n[[registry]]\nlocation = \"http://quay.io\"\n"
        => ["http://quay.io", "URI schemes are not supported"];
    base_broken_toml:
        "# admin\n[[registry]\nlocation = \"quay.io\"\n"
        => ["TOML"];
    base_non_utf8:
        b"# admin caf\xe9\n[[registry]]\nlocation = \"quay.io\"\n"
        => ["UTF-8"];
    base_nul_byte:
        b"# admin\n[[registry]]\nlocation = \"quay\x00.io\"\n"
        => [];
    base_v1_mixed_with_v2_from_policies:
        "# v1 file\n[registries.search]\nregistries = [\"docker.io\"]\n\n[registries.insecure]\nregistries = []\n"
        => ["mixing sysregistry v1/v2 is not supported"];
    base_inline_registry_array:
        "# admin\nregistry = [{location = \"quay.io\"}, {location = \"docker.io\"}]\n"
        => ["registry", "inline array"];
    base_duplicate_conflicting_insecure:
        "# admin\n[[registry]]\nlocation = \"quay.io\"\ninsecure = true\n\n[[registry]]\nlocation = \"quay.io\"\ninsecure = false\n"
        => ["quay.io", "conflicting 'insecure' setting"];
    base_bad_short_name_mode:
        "# admin\nshort-name-mode = \"sometimes\"\n"
        => ["invalid short-name mode"];
}

/// A base over the 16 MiB limit (sparse).
#[test]
fn base_too_large() {
    let fx = Fx::new();
    fs::File::create(fx.conf())
        .unwrap()
        .set_len(16 * 1024 * 1024 + 1)
        .unwrap();
    let p = fx.write("good.yaml", GOOD_IDMS.as_bytes());
    let before = fx.snapshot();
    let (out, elapsed) = fx.apply(&[p], &[]);
    assert_rejected(
        &fx,
        &before,
        &out,
        elapsed,
        2,
        &["registries.conf", "larger than"],
    );
}

/// The target is a directory.
#[test]
fn target_is_a_directory() {
    let fx = Fx::new();
    fs::create_dir(fx.path("dir.conf")).unwrap();
    fx.write("dir.conf/keep", b"keep");
    let p = fx.write("good.yaml", GOOD_IDMS.as_bytes());
    let before = fx.snapshot();
    let mut c = fx.apply_cmd();
    c.arg("--registries-conf")
        .arg(fx.path("dir.conf"))
        .arg("--policies")
        .arg(&p);
    let (out, elapsed) = run(c);
    assert_rejected(
        &fx,
        &before,
        &out,
        elapsed,
        2,
        &["dir.conf", "not a regular file"],
    );
}

/// An administrator's drop-in in v1 format: containers/image would reject the node's configuration.
#[test]
fn invalid_existing_dropin() {
    let fx = Fx::new();
    fx.write(
        "d/50-admin.conf",
        b"# admin drop-in\n[registries.search]\nregistries = [\"docker.io\"]\n",
    );
    let p = fx.write("good.yaml", GOOD_IDMS.as_bytes());
    let before = fx.snapshot();
    let (out, elapsed) = fx.apply(&[p], &[]);
    assert_rejected(
        &fx,
        &before,
        &out,
        elapsed,
        2,
        &[
            "50-admin.conf",
            "registry must be in v2 format but is in v1",
        ],
    );
}

/// Drop-in mode where the drop-in file exists and is someone else's: refused (3).
#[test]
fn foreign_dropin_is_refused() {
    let fx = Fx::new();
    fx.write(
        "d/99-rhel-node-agent.conf",
        b"# written by hand\n[[registry]]\nlocation = \"quay.io\"\n",
    );
    let p = fx.write("good.yaml", GOOD_IDMS.as_bytes());
    let before = fx.snapshot();
    let (out, elapsed) = fx.apply(&[p], &["--mode", "drop-in"]);
    assert_rejected(
        &fx,
        &before,
        &out,
        elapsed,
        3,
        &["99-rhel-node-agent.conf", "not written by rhel-node-agent"],
    );
}

// ---------------------------------------------------------------------------------------------
// Filesystem: symlinked target (positive), read-only and full filesystems
// ---------------------------------------------------------------------------------------------

/// A symlinked registries.conf: the link's target is replaced, the link itself stays.
#[test]
fn symlinked_target_is_followed() {
    let fx = Fx::new();
    fs::create_dir(fx.path("etc")).unwrap();
    fs::rename(fx.conf(), fx.path("etc/real.conf")).unwrap();
    std::os::unix::fs::symlink("etc/real.conf", fx.conf()).unwrap();
    let p = fx.write("good.yaml", GOOD_IDMS.as_bytes());
    let (out, _) = fx.apply(&[p], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let meta = fs::symlink_metadata(fx.conf()).unwrap();
    assert!(meta.file_type().is_symlink(), "the symlink was replaced");
    assert_eq!(
        fs::read_link(fx.conf()).unwrap(),
        PathBuf::from("etc/real.conf")
    );
    let new = fs::read_to_string(fx.path("etc/real.conf")).unwrap();
    assert_ne!(new, BASE, "the link's target was not updated");
    assert!(new.contains("m1.example.net/ns") && new.contains("m2.example.net/ns"));
    for line in BASE.lines().filter(|l| l.trim_start().starts_with('#')) {
        assert!(new.contains(line), "comment lost: {line}");
    }
    assert!(temp_leftovers(fx.dir.path()).is_empty());
}

/// Is `unshare --mount` with a tmpfs mount possible here (root, no seccomp ban)?
fn can_mount_tmpfs() -> bool {
    let probe = tempfile::tempdir().unwrap();
    Command::new("unshare")
        .arg("--mount")
        .arg("sh")
        .arg("-c")
        .arg("mount -t tmpfs -o size=64k tmpfs \"$1\"")
        .arg("sh")
        .arg(probe.path())
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Run apply in a private mount namespace against a registries.conf on a tiny tmpfs that is then
/// made read-only (`ro`) or filled up (`full`). Returns (exit code, stderr, file after, listing).
fn apply_on_tmpfs(fx: &Fx, how: &str) -> Option<(i32, String, Vec<u8>, String)> {
    if !can_mount_tmpfs() {
        eprintln!(
            "SKIPPED: cannot mount a tmpfs in a private mount namespace (needs root and unshare)"
        );
        return None;
    }
    let mnt = fx.path("mnt");
    fs::create_dir(&mnt).unwrap();
    let p = fx.write("good.yaml", GOOD_IDMS.as_bytes());
    let script = r#"
set -e
mnt="$1"; bin="$2"; root="$3"; pol="$4"; dropin="$5"; out="$6"; how="$7"; base="$8"
mount -t tmpfs -o size=64k,mode=0755 tmpfs "$mnt"
cp "$base" "$mnt/registries.conf"
if [ "$how" = ro ]; then mount -o remount,ro "$mnt"; fi
if [ "$how" = full ]; then dd if=/dev/zero of="$mnt/fill" bs=4096 2>/dev/null || true; fi
set +e
"$bin" --root "$root" mirrors apply --registries-conf "$mnt/registries.conf" \
    --policies "$pol" --dropin-dir "$dropin" 2>"$out/stderr" >/dev/null
echo $? >"$out/rc"
cp "$mnt/registries.conf" "$out/after.conf"
ls -a "$mnt" >"$out/listing"
"#;
    let outdir = fx.path("out");
    fs::create_dir(&outdir).unwrap();
    let status = Command::new("unshare")
        .arg("--mount")
        .arg("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(&mnt)
        .arg(BIN)
        .arg(fx.path("root"))
        .arg(&p)
        .arg(fx.path("d"))
        .arg(&outdir)
        .arg(how)
        .arg(fx.conf())
        .status()
        .expect("unshare");
    assert!(status.success(), "namespace script failed");
    let rc: i32 = fs::read_to_string(outdir.join("rc"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    Some((
        rc,
        fs::read_to_string(outdir.join("stderr")).unwrap(),
        fs::read(outdir.join("after.conf")).unwrap(),
        fs::read_to_string(outdir.join("listing")).unwrap(),
    ))
}

fn check_tmpfs_failure(how: &str, needle: &str) {
    let fx = Fx::new();
    let Some((rc, stderr, after, listing)) = apply_on_tmpfs(&fx, how) else {
        return;
    };
    assert_eq!(rc, 1, "exit code; stderr:\n{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "one error line expected:\n{stderr}");
    assert!(errors[0].contains("registries.conf"), "{}", errors[0]);
    assert!(errors[0].contains(needle), "{}", errors[0]);
    assert_eq!(after, BASE.as_bytes(), "registries.conf changed");
    assert!(
        !listing.contains(".rna-tmp."),
        "temporary file left:\n{listing}"
    );
    assert!(!fx.path("d").exists(), "a drop-in directory was created");
}

#[test]
fn read_only_filesystem() {
    check_tmpfs_failure("ro", "Read-only file system");
}

#[test]
fn full_filesystem() {
    check_tmpfs_failure("full", "No space left on device");
}
