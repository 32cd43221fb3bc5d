//! Mirror engine benchmarks (no test harness: run with `cargo bench --bench mirrors`).
//!
//! In-process timings of the parts the issue names (render, apply, no-op re-apply, a 20-source
//! change against a bare write+fsync+rename of the same bytes, growth 2,000 → 20,000 sources), each
//! the median of repeated runs measured in the same process. `--write-fixtures DIR` writes the
//! generated inputs for the whole-process measurements of `scripts/bench-mirrors` (hyperfine).

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use rhel_node_agent::adapters::fs::{atomic_replace, ReplaceOptions};
use rhel_node_agent::core::mirrors::engine::{apply, ApplyOptions};
use rhel_node_agent::core::mirrors::PolicySet;

/// `n` sources × 3 mirrors, mixed ICSP (40 %), IDMS (40 %, some NeverContactSource) and ITMS (20 %),
/// spread over 50 registries so nested scopes and shared hosts occur as on real clusters.
pub fn policies_yaml(n: usize, variant: usize) -> String {
    let mut icsp = String::from("apiVersion: operator.openshift.io/v1alpha1\nkind: ImageContentSourcePolicy\nmetadata: {name: bench-icsp}\nspec:\n  repositoryDigestMirrors:\n");
    let mut idms = String::from("apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata: {name: bench-idms}\nspec:\n  imageDigestMirrors:\n");
    let mut itms = String::from("apiVersion: config.openshift.io/v1\nkind: ImageTagMirrorSet\nmetadata: {name: bench-itms}\nspec:\n  imageTagMirrors:\n");
    for i in 0..n {
        let source = format!("registry{}.example.com/ns{}/repo{i}", i % 50, i / 50);
        let v = if i < 20 { variant } else { 0 };
        let mirrors: Vec<String> = (0..3)
            .map(|k| format!("mirror{k}.example.net/v{v}/ns{}/repo{i}", i / 50))
            .collect();
        let entry = format!(
            "  - source: {source}\n    mirrors: [{}]\n",
            mirrors.join(", ")
        );
        match i % 5 {
            0 | 1 => icsp.push_str(&entry),
            2 | 3 => {
                idms.push_str(&entry);
                if i % 10 == 3 {
                    idms.push_str("    mirrorSourcePolicy: NeverContactSource\n");
                }
            }
            _ => itms.push_str(&entry),
        }
    }
    format!("{icsp}---\n{idms}---\n{itms}")
}

/// A 200-entry administrator's file with comments, flags and mirrors.
pub fn base_conf(entries: usize) -> String {
    let mut s = String::from("# site registries.conf\nunqualified-search-registries = [\"registry.access.redhat.com\", \"docker.io\"]\n\n");
    for i in 0..entries {
        s.push_str(&format!("# entry {i}: owned by the platform team\n[[registry]]\nlocation = \"site{i}.example.org/team{}\"\n", i % 7));
        if i % 3 == 0 {
            s.push_str("insecure = true # plain HTTP inside the DC\n");
        }
        if i % 4 == 0 {
            s.push_str(&format!(
                "\n[[registry.mirror]]\nlocation = \"cache{i}.example.org\"\n"
            ));
        }
        s.push('\n');
    }
    s
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<F: FnMut()>(runs: usize, mut f: F) -> Duration {
    f();
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

fn parse(text: &str) -> PolicySet {
    let mut set = PolicySet::default();
    set.add_text("bench.yaml", text.as_bytes())
        .expect("generated policies parse");
    set
}

fn bare_write(path: &Path, bytes: &[u8]) {
    let dir = path.parent().expect("dir");
    let tmp = dir.join(".bare.tmp");
    let mut f = fs::File::create(&tmp).expect("create");
    f.write_all(bytes).expect("write");
    f.sync_all().expect("fsync");
    fs::rename(&tmp, path).expect("rename");
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .expect("fsync dir");
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--write-fixtures") {
        let dir = Path::new(&args[i + 1]);
        fs::create_dir_all(dir.join("policies-2000")).expect("mkdir");
        fs::create_dir_all(dir.join("policies-2000b")).expect("mkdir");
        fs::create_dir_all(dir.join("policies-20000")).expect("mkdir");
        fs::write(dir.join("policies-2000/p.yaml"), policies_yaml(2000, 0)).expect("write");
        fs::write(dir.join("policies-2000b/p.yaml"), policies_yaml(2000, 1)).expect("write");
        fs::write(dir.join("policies-20000/p.yaml"), policies_yaml(20000, 0)).expect("write");
        fs::write(dir.join("base.conf"), base_conf(200)).expect("write");
        println!("fixtures written to {}", dir.display());
        return;
    }
    if args.iter().any(|a| a == "--bench")
        || args.len() == 1
        || args.iter().any(|a| a.starts_with("mirrors"))
    {
        run();
    }
}

fn run() {
    let base = base_conf(200);
    let p2k = policies_yaml(2000, 0);
    let p2k_b = policies_yaml(2000, 1);
    let p20k = policies_yaml(20000, 0);
    let opts = ApplyOptions::default();
    let runs = 15;

    let render_2k = time(runs, || {
        let set = parse(&p2k);
        apply("registries.conf", &base, &set, &opts).expect("apply");
    });
    let render_20k = time(5, || {
        let set = parse(&p20k);
        apply("registries.conf", &base, &set, &opts).expect("apply");
    });
    let set = parse(&p2k);
    let rendered = apply("registries.conf", &base, &set, &opts)
        .expect("apply")
        .output;
    let noop = time(runs, || {
        let set = parse(&p2k);
        let out = apply("registries.conf", &rendered, &set, &opts).expect("apply");
        assert!(!out.changed);
    });

    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("registries.conf");
    let set_b = parse(&p2k_b);
    let changed = apply("registries.conf", &rendered, &set_b, &opts)
        .expect("apply")
        .output;
    let mut flip = false;
    let change_apply = time(runs, || {
        // Alternate between the two versions so every run writes a 20-source change.
        let (from, to_set) = if flip {
            (&changed, &set)
        } else {
            (&rendered, &set_b)
        };
        flip = !flip;
        let out = apply("registries.conf", from, to_set, &opts).expect("apply");
        atomic_replace(&target, out.output.as_bytes(), &ReplaceOptions::default()).expect("write");
    });
    let bare = time(runs, || bare_write(&target, changed.as_bytes()));
    let backups = dir.path().join("backup");
    let ropts = ReplaceOptions {
        backup_dir: Some(backups),
        keep_backups: 5,
    };
    let durable = time(runs, || {
        atomic_replace(&target, changed.as_bytes(), &ropts).expect("write");
    });

    println!("mirror engine, in-process medians ({runs} runs; 20k: 5 runs)");
    println!(
        "  render 2,000 sources x 3 mirrors into a 200-entry base : {}",
        ms(render_2k)
    );
    println!("  render 20,000 sources                                   : {} ({:.1}x the 2,000-source time)", ms(render_20k), render_20k.as_secs_f64() / render_2k.as_secs_f64());
    println!(
        "  re-apply unchanged (2,000 sources, no write)            : {}",
        ms(noop)
    );
    println!(
        "  apply a 20-source change incl. atomic write             : {}",
        ms(change_apply)
    );
    println!(
        "  bare write+fsync+rename+fsync dir of the same bytes     : {} (apply = {:.2}x)",
        ms(bare),
        change_apply.as_secs_f64() / bare.as_secs_f64()
    );
    println!(
        "  the agent's durable replace (mode/owner/label, backup)  : {} ({:.2}x the bare write)",
        ms(durable),
        durable.as_secs_f64() / bare.as_secs_f64()
    );
}
