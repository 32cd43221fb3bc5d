//! The configuration files the package ships (packaging/config/): the vendor defaults must be
//! exactly the built-in defaults (so removing or masking the file changes nothing), and the site
//! template must be all comments whose examples are valid once uncommented.

use std::fs;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_rhel-node-agent");
const VENDOR: &str = include_str!("../packaging/config/10-defaults.toml");
const SITE: &str = include_str!("../packaging/config/50-site.toml");

fn config_show(root: &Path) -> serde_json::Value {
    let o = Command::new(BIN)
        .args(["--root"])
        .arg(root)
        .args(["config", "show", "-o", "json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn vendor_defaults_set_every_key_to_its_built_in_default() {
    let d = tempfile::tempdir().unwrap();
    let bare = config_show(d.path());
    let vendor_dir = d.path().join("usr/lib/rhel-node-agent/config.d");
    fs::create_dir_all(&vendor_dir).unwrap();
    fs::write(vendor_dir.join("10-defaults.toml"), VENDOR).unwrap();
    let shipped = config_show(d.path());
    let settings = |v: &serde_json::Value| -> Vec<(String, String, String)> {
        v["settings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["key"].as_str().unwrap().to_string(),
                    e["value"].as_str().unwrap().to_string(),
                    e["origin"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let (a, b) = (settings(&bare), settings(&shipped));
    assert_eq!(a.len(), b.len(), "same keys");
    for ((ka, va, oa), (kb, vb, ob)) in a.iter().zip(&b) {
        assert_eq!(ka, kb);
        assert_eq!(va, vb, "{ka}: the vendor file changes the default");
        assert_eq!(oa, "default");
        assert!(
            ob.ends_with("usr/lib/rhel-node-agent/config.d/10-defaults.toml"),
            "{kb} is not set by the vendor file (origin {ob}): every key belongs in it"
        );
    }
    let strip = |mut v: serde_json::Value| {
        v["resolved"].as_object_mut().unwrap().remove("origins");
        v["resolved"].clone()
    };
    assert_eq!(strip(bare), strip(shipped), "resolved settings differ");
}

#[test]
fn the_site_template_is_all_comments_and_its_examples_are_valid() {
    for (n, line) in SITE.lines().enumerate() {
        assert!(
            line.is_empty() || line.starts_with('#'),
            "50-site.toml line {}: not a comment: {line}",
            n + 1
        );
    }
    let uncommented: String = SITE
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| l.starts_with('[') || l.contains(" = "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(uncommented.contains("[kubernetes]"), "{uncommented}");
    let d = tempfile::tempdir().unwrap();
    let admin = d.path().join("etc/rhel-node-agent/config.d");
    fs::create_dir_all(&admin).unwrap();
    fs::write(admin.join("50-site.toml"), &uncommented).unwrap();
    let o = Command::new(BIN)
        .arg("--root")
        .arg(d.path())
        .args(["config", "check"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "the uncommented examples do not validate:\n{uncommented}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
