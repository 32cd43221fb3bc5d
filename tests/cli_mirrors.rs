//! CLI behaviour of `mirrors …` beyond the engine: modes, admin keys, rollback, the daemon
//! ownership rule, JSON output, the search drop-in and shadowing warnings.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;

const BASE: &str = "# admin file\nunqualified-search-registries = [\"registry.access.redhat.com\"]\n\n[[registry]]\nlocation = \"quay.io/ns\" # kept\n";
const IDMS: &str = "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata: {name: d}\nspec:\n  imageDigestMirrors:\n  - source: quay.io/ns\n    mirrors: [mirror.local/ns]\n  - source: registry.redhat.io\n    mirrors: [mirror.local/rh]\n";
const IMAGE: &str = "apiVersion: config.openshift.io/v1\nkind: Image\nmetadata: {name: cluster}\nspec:\n  registrySources:\n    containerRuntimeSearchRegistries: [mirror.local]\n";

struct Env {
    _dir: tempfile::TempDir,
    root: PathBuf,
    conf: PathBuf,
    dropins: PathBuf,
    policies: PathBuf,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let conf = dir.path().join("registries.conf");
    let dropins = dir.path().join("registries.conf.d");
    let policies = dir.path().join("policies");
    fs::create_dir_all(&dropins).unwrap();
    fs::create_dir_all(&policies).unwrap();
    fs::write(&conf, BASE).unwrap();
    fs::write(policies.join("10-idms.yaml"), IDMS).unwrap();
    Env {
        _dir: dir,
        root,
        conf,
        dropins,
        policies,
    }
}

fn rna(e: &Env, args: &[&str]) -> Output {
    let mut c = Command::cargo_bin("rhel-node-agent").unwrap();
    c.arg("--root").arg(&e.root);
    c.args(args);
    c.output().unwrap()
}

fn apply(e: &Env, extra: &[&str]) -> Output {
    let mut args = vec![
        "mirrors",
        "apply",
        "--registries-conf",
        e.conf.to_str().unwrap(),
        "--dropin-dir",
        e.dropins.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    rna(e, &args)
}

/// Apply the test policies, then replace the managed `registry.redhat.io` location line with
/// `replacement` by hand, as an administrator would.
fn apply_then_edit(e: &Env, replacement: &str) {
    assert!(apply(e, &["--policies", s(&e.policies)]).status.success());
    let text = fs::read_to_string(&e.conf).unwrap();
    let edited = text.replacen("location = \"registry.redhat.io\"\n", replacement, 1);
    assert_ne!(edited, text);
    fs::write(&e.conf, &edited).unwrap();
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn drop_in_mode_owns_one_file_and_leaves_the_main_file_alone() {
    let e = env();
    let out = apply(&e, &["--mode", "drop-in", "--policies", s(&e.policies)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read_to_string(&e.conf).unwrap(), BASE);
    let own = fs::read_to_string(e.dropins.join("99-rhel-node-agent.conf")).unwrap();
    assert!(own.starts_with("# Managed by rhel-node-agent"));
    assert!(own.contains("mirror.local/ns") && own.contains("mirror.local/rh"));
    // The effective configuration equals the in-place one.
    let eff_dropin = rna(
        &e,
        &[
            "mirrors",
            "effective",
            "--registries-conf",
            s(&e.conf),
            "--dropin-dir",
            s(&e.dropins),
            "-o",
            "json",
        ],
    );
    let e2 = env();
    assert!(
        apply(&e2, &["--mode", "in-place", "--policies", s(&e2.policies)])
            .status
            .success()
    );
    let eff_inplace = rna(
        &e2,
        &[
            "mirrors",
            "effective",
            "--registries-conf",
            s(&e2.conf),
            "--dropin-dir",
            s(&e2.dropins),
            "-o",
            "json",
        ],
    );
    let strip_files = |o: &Output| {
        let mut v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        for r in v["registry"].as_array_mut().unwrap() {
            r.as_object_mut().unwrap().remove("file");
        }
        v
    };
    assert_eq!(strip_files(&eff_dropin), strip_files(&eff_inplace));
    // Removing the policies removes the drop-in.
    assert!(apply(&e, &["--mode", "drop-in"]).status.success());
    assert!(!e.dropins.join("99-rhel-node-agent.conf").exists());
}

#[test]
fn verify_mode_lists_differences_and_exits_1() {
    let e = env();
    let out = apply(&e, &["--mode", "verify", "--policies", s(&e.policies)]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("quay.io/ns: mirrors: want [mirror.local/ns (digest-only)], have []"),
        "{stdout}"
    );
    assert!(stdout.contains("registry.redhat.io: missing"), "{stdout}");
    assert_eq!(
        fs::read_to_string(&e.conf).unwrap(),
        BASE,
        "verify never writes"
    );
    assert!(
        apply(&e, &["--mode", "in-place", "--policies", s(&e.policies)])
            .status
            .success()
    );
    let out = apply(&e, &["--mode", "verify", "--policies", s(&e.policies)]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn auto_mode_verifies_on_an_openshift_node() {
    let e = env();
    let mcd = e.root.join("etc/machine-config-daemon");
    fs::create_dir_all(&mcd).unwrap();
    fs::write(mcd.join("currentconfig"), "{}").unwrap();
    let out = apply(&e, &["--policies", s(&e.policies)]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(fs::read_to_string(&e.conf).unwrap(), BASE);
}

#[test]
fn admin_keys_in_managed_tables_are_kept_and_reported() {
    let e = env();
    apply_then_edit(
        &e,
        "location = \"registry.redhat.io\"\nproxy = \"http://proxy.local:3128\"\n",
    );
    let out = apply(&e, &["--policies", s(&e.policies)]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("key \"proxy\" was added by hand inside a managed table; kept"));
    assert!(fs::read_to_string(&e.conf)
        .unwrap()
        .contains("proxy = \"http://proxy.local:3128\""));
    // Policies gone: the table stays, unmanaged, with the administrator's key.
    let out = apply(&e, &[]);
    assert!(out.status.success());
    let after = fs::read_to_string(&e.conf).unwrap();
    assert!(
        after.contains("proxy = \"http://proxy.local:3128\""),
        "{after}"
    );
    assert!(!after.contains("rhel-node-agent:managed"), "{after}");
}

#[test]
fn rollback_restores_previous_versions() {
    let e = env();
    assert!(apply(&e, &["--policies", s(&e.policies)]).status.success());
    let applied = fs::read_to_string(&e.conf).unwrap();
    assert!(apply(&e, &[]).status.success());
    assert_eq!(fs::read_to_string(&e.conf).unwrap(), BASE);
    let out = rna(
        &e,
        &["mirrors", "rollback", "--registries-conf", s(&e.conf)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read_to_string(&e.conf).unwrap(), applied);
    let out = rna(
        &e,
        &[
            "mirrors",
            "rollback",
            "--registries-conf",
            s(&e.conf),
            "--to",
            "99",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn apply_refuses_a_file_the_running_daemon_manages() {
    let e = env();
    let run = e.root.join("run/rhel-node-agent");
    fs::create_dir_all(&run).unwrap();
    let pid = run.join("daemon.pid");
    fs::write(
        &pid,
        format!("4242\n{}\n", fs::canonicalize(&e.conf).unwrap().display()),
    )
    .unwrap();
    // Stand in for the daemon: hold the lock on its pid file.
    let held = rhel_node_agent::adapters::fs::lock(&pid, false).unwrap();
    let out = apply(&e, &["--policies", s(&e.policies)]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("managed by the running rhel-node-agent daemon (pid 4242)"));
    assert_eq!(fs::read_to_string(&e.conf).unwrap(), BASE);
    assert!(
        apply(&e, &["--policies", s(&e.policies), "--dry-run"])
            .status
            .success(),
        "dry-run writes nothing and is allowed"
    );
    assert!(
        apply(&e, &["--policies", s(&e.policies), "--force-offline"])
            .status
            .success()
    );
    drop(held);
    assert!(apply(&e, &[]).status.success(), "no daemon: allowed");
}

#[test]
fn search_dropin_is_written_and_removed_and_render_warns_without_a_dir() {
    let e = env();
    fs::write(e.policies.join("20-image.yaml"), IMAGE).unwrap();
    assert!(apply(&e, &["--policies", s(&e.policies)]).status.success());
    let search = fs::read_to_string(e.dropins.join("01-image-searchRegistries.conf")).unwrap();
    assert!(search.contains("unqualified-search-registries = [\"mirror.local\"]"));
    assert!(apply(&e, &[]).status.success());
    assert!(!e.dropins.join("01-image-searchRegistries.conf").exists());
    let out = rna(
        &e,
        &[
            "mirrors",
            "render",
            "--base",
            s(&e.conf),
            "--policies",
            s(&e.policies),
        ],
    );
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no --dropin-dir was given"));
}

#[test]
fn shadowing_dropins_are_reported() {
    let e = env();
    assert!(apply(&e, &["--policies", s(&e.policies)]).status.success());
    fs::write(
        e.dropins.join("50-site.conf"),
        "[[registry]]\nlocation = \"quay.io/ns\"\n",
    )
    .unwrap();
    let out = rna(
        &e,
        &[
            "mirrors",
            "check",
            "--registries-conf",
            s(&e.conf),
            "--dropin-dir",
            s(&e.dropins),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains(
        "50-site.conf: [[registry]] \"quay.io/ns\" replaces the entry the agent manages"
    ));
    let out = apply(&e, &["--policies", s(&e.policies)]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("replaces the entry the agent manages"));
}

#[test]
fn json_output_and_dry_run() {
    let e = env();
    let out = apply(
        &e,
        &["--policies", s(&e.policies), "--dry-run", "-o", "json"],
    );
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema"], 1);
    assert_eq!(v["changed"], true);
    assert_eq!(v["classification"]["safe"], true);
    assert!(v["diff"]
        .as_str()
        .unwrap()
        .contains("+location = \"mirror.local/rh\""));
    assert_eq!(fs::read_to_string(&e.conf).unwrap(), BASE);
}

#[test]
fn demo_runs_unprivileged_in_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::cargo_bin("rhel-node-agent")
        .unwrap()
        .args(["demo", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("updated (9 sources"), "{stdout}");
    assert!(stdout.contains("unchanged"), "{stdout}");
    // Part two: an upgrade through the daemon, with the example hooks and a simulated reboot.
    assert!(stdout.contains("post-upgrade succeeded"), "{stdout}");
    assert!(
        stdout.contains("the node rebooted during this upgrade"),
        "{stdout}"
    );
    assert!(
        fs::read_to_string(dir.path().join("etc/containers/registries.conf"))
            .unwrap()
            .contains("rhel-node-agent:managed v1")
    );
}

#[test]
fn comments_written_inside_managed_tables_survive() {
    let e = env();
    apply_then_edit(
        &e,
        "# why: the vendor mirror is ours\nlocation = \"registry.redhat.io\" # see ticket 42\n",
    );
    let out = apply(&e, &[]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("2 comment line(s)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = fs::read_to_string(&e.conf).unwrap();
    assert!(
        after.contains("# why: the vendor mirror is ours\n# see ticket 42\n"),
        "{after}"
    );
    assert!(after.starts_with(BASE), "{after}");
    // Stable from then on.
    let again = apply(&e, &[]);
    assert!(again.status.success());
    assert_eq!(fs::read_to_string(&e.conf).unwrap(), after);
}

#[test]
fn admin_mirrors_inside_managed_entries_are_kept() {
    let e = env();
    assert!(apply(&e, &["--policies", s(&e.policies)]).status.success());
    let mut text = fs::read_to_string(&e.conf).unwrap();
    text.push_str("\n[[registry.mirror]]\nlocation = \"admin-mirror.example.org/rh\" # mine\n");
    fs::write(&e.conf, &text).unwrap();
    let out = apply(&e, &["--policies", s(&e.policies)]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(
        "mirror \"admin-mirror.example.org/rh\" added by hand inside a managed entry; kept"
    ));
    let after = fs::read_to_string(&e.conf).unwrap();
    assert!(
        after.contains("location = \"admin-mirror.example.org/rh\" # mine"),
        "{after}"
    );
    assert!(containers_load_ok(&after));
    // Policies gone: the administrator's mirror stays, in an unmanaged entry.
    assert!(apply(&e, &[]).status.success());
    let gone = fs::read_to_string(&e.conf).unwrap();
    assert!(
        gone.contains("admin-mirror.example.org/rh") && !gone.contains("rhel-node-agent:managed"),
        "{gone}"
    );
}

fn containers_load_ok(text: &str) -> bool {
    rhel_node_agent::core::mirrors::containers::load("r.conf", text).is_ok()
}

#[test]
fn an_administrators_search_dropin_is_never_replaced() {
    let e = env();
    let mine = "# the site's own search list\nunqualified-search-registries = [\"registry.example.org\"]\n";
    fs::write(e.dropins.join("01-image-searchRegistries.conf"), mine).unwrap();
    fs::write(e.policies.join("20-image.yaml"), IMAGE).unwrap();
    let out = apply(&e, &["--policies", s(&e.policies)]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fs::read_to_string(e.dropins.join("01-image-searchRegistries.conf")).unwrap(),
        mine
    );
    assert_eq!(fs::read_to_string(&e.conf).unwrap(), BASE);
    fs::remove_file(e.policies.join("20-image.yaml")).unwrap();
    assert!(apply(&e, &["--policies", s(&e.policies)]).status.success());
    assert!(apply(&e, &[]).status.success());
    assert_eq!(
        fs::read_to_string(e.dropins.join("01-image-searchRegistries.conf")).unwrap(),
        mine,
        "not ours: never deleted"
    );
}

#[test]
fn backups_of_files_with_the_same_name_stay_apart() {
    let e = env();
    let other_dir = e.conf.parent().unwrap().join("other");
    fs::create_dir_all(&other_dir).unwrap();
    let other = other_dir.join("registries.conf");
    fs::write(&other, "# file B\n").unwrap();
    assert!(apply(&e, &["--policies", s(&e.policies)]).status.success());
    let out = rna(
        &e,
        &[
            "mirrors",
            "apply",
            "--registries-conf",
            s(&other),
            "--dropin-dir",
            s(&e.dropins),
            "--policies",
            s(&e.policies),
        ],
    );
    assert!(out.status.success());
    let out = rna(
        &e,
        &["mirrors", "rollback", "--registries-conf", s(&e.conf)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fs::read_to_string(&e.conf).unwrap(),
        BASE,
        "A's own previous version, not B's"
    );
}

#[test]
fn version_names_the_commit_and_the_build_target() {
    let out = Command::cargo_bin("rhel-node-agent")
        .unwrap()
        .arg("--version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.starts_with(&format!(
            "rhel-node-agent {} (commit ",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    assert!(
        text.contains(", target x86_64-") || text.contains(", target aarch64-"),
        "{text}"
    );
    assert!(text.trim_end().ends_with(", tls openssl)"), "{text}");
}
