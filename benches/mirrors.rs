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
use rhel_node_agent::adapters::policy_scan::SeenChanges;
use rhel_node_agent::adapters::registries::{apply_mirrors_cached, ApplyRequest, MirrorCache};
use rhel_node_agent::config::{MirrorMode, Settings};
use rhel_node_agent::core::mirrors::engine::{apply, ApplyOptions};
use rhel_node_agent::core::mirrors::PolicySet;
use rhel_node_agent::core::mirrors::Style;

/// `n` sources × 3 mirrors, mixed ICSP (40 %), IDMS (40 %, some NeverContactSource) and ITMS (20 %),
/// spread over 50 registries so nested scopes and shared hosts occur as on real clusters.
pub fn policies_yaml(n: usize, variant: usize) -> String {
    policies_range(0..n, variant, 0..20, "bench")
}

/// Sources `range` as in [`policies_yaml`]; those in `changed` get mirrors of `variant`.
fn policies_range(
    range: std::ops::Range<usize>,
    variant: usize,
    changed: std::ops::Range<usize>,
    name: &str,
) -> String {
    let mut icsp = format!("apiVersion: operator.openshift.io/v1alpha1\nkind: ImageContentSourcePolicy\nmetadata: {{name: {name}-icsp}}\nspec:\n  repositoryDigestMirrors:\n");
    let mut idms = format!("apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata: {{name: {name}-idms}}\nspec:\n  imageDigestMirrors:\n");
    let mut itms = format!("apiVersion: config.openshift.io/v1\nkind: ImageTagMirrorSet\nmetadata: {{name: {name}-itms}}\nspec:\n  imageTagMirrors:\n");
    for i in range {
        let source = format!("registry{}.example.com/ns{}/repo{i}", i % 50, i / 50);
        let v = if changed.contains(&i) { variant } else { 0 };
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
    // `cargo bench --bench mirrors -- daemon`: only the daemon's path (for profiling it).
    let only_daemon = args.iter().skip(1).any(|a| a == "daemon");
    if args.iter().any(|a| a == "--bench")
        || args.len() == 1
        || only_daemon
        || args.iter().any(|a| a.starts_with("mirrors"))
    {
        if !only_daemon {
            run();
        }
        daemon_path();
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

/// The daemon's path: the same 2,000 sources as 100 policy files of 20, applied with the
/// daemon's cache (kept state from the previous apply) and the agent's durable write, one file's
/// 20 sources changing each run.
fn daemon_path() {
    let base = base_conf(200);
    let root = tempfile::tempdir().expect("tempdir");
    let settings = Settings::defaults(root.path());
    let conf = settings.mirrors.registries_conf.clone();
    fs::create_dir_all(conf.parent().expect("dir")).expect("mkdir");
    fs::write(&conf, &base).expect("write base");
    let pdir = root.path().join("policies");
    fs::create_dir_all(&pdir).expect("mkdir");
    let file_of = |f: usize, variant: usize| {
        policies_range(
            f * 20..(f + 1) * 20,
            variant,
            f * 20..(f + 1) * 20,
            &format!("f{f}"),
        )
    };
    for f in 0..100 {
        fs::write(pdir.join(format!("{f:03}.yaml")), file_of(f, 0)).expect("write policy");
    }
    let req = ApplyRequest {
        registries_conf: conf.clone(),
        dropin_dir: root.path().join("etc/containers/registries.conf.d"),
        policies: vec![pdir.clone()],
        mode: MirrorMode::InPlace,
        style: Style::Current,
        dry_run: false,
        skip_daemon_check: true,
        hold_unsafe: false,
    };
    // A daemon's policy files are old: files changed in the last two seconds are always read
    // again (their timestamps could still change unseen), which is not the case measured here.
    std::thread::sleep(Duration::from_millis(2500));
    let mut cache = MirrorCache::with_watches();
    apply_mirrors_cached(&settings, &req, Some(&mut cache)).expect("first apply");
    let mut variant = 0;
    let mut incremental_runs = 0;
    // Each run is timed next to a bare write of the bytes it wrote, so both see the same disk
    // (fsync times on this shared machine vary by 2x within a minute); the ratio reported is the
    // median of the per-run ratios.
    let daemon_runs = 61;
    let mut applies = Vec::with_capacity(daemon_runs);
    let mut bares = Vec::with_capacity(daemon_runs);
    let mut ratios = Vec::with_capacity(daemon_runs);
    let mut written = Vec::new();
    for run in 0..=daemon_runs {
        variant += 1;
        fs::write(pdir.join("042.yaml"), file_of(42, variant)).expect("write policy");
        // What the daemon's watches report for that write (its inotify events).
        let mut seen = SeenChanges::default();
        seen.contents(&pdir.join("042.yaml"));
        cache.note(seen);
        let t = Instant::now();
        let r = apply_mirrors_cached(&settings, &req, Some(&mut cache)).expect("apply");
        let took = t.elapsed();
        assert!(r.changed());
        incremental_runs += usize::from(r.incremental);
        written = fs::read(&conf).expect("read back");
        let t = Instant::now();
        bare_write(&conf.with_file_name("bare.conf"), &written);
        let bare_took = t.elapsed();
        if run > 0 {
            applies.push(took);
            bares.push(bare_took);
            ratios.push(took.as_secs_f64() / bare_took.as_secs_f64());
        }
    }
    let daemon_change = median(applies);
    let bare_daemon = median(bares);
    ratios.sort_by(|a, b| a.total_cmp(b));
    let daemon_ratio = ratios[ratios.len() / 2];
    let daemon_ratio_p75 = ratios[ratios.len() * 3 / 4];

    println!("daemon path: 100 policy files x 20 sources, one file changed per run");
    println!(
        "  apply with the daemon's cache, durable write           : {} ({incremental_runs}/{} runs incremental)",
        ms(daemon_change),
        daemon_runs + 1
    );
    println!(
        "  bare write+fsync+rename+fsync dir of the same {} bytes : {}",
        written.len(),
        ms(bare_daemon),
    );
    println!(
        "  apply / bare write, median of {} paired runs            : {daemon_ratio:.2}x (p75 {daemon_ratio_p75:.2}x)",
        ratios.len()
    );
}
