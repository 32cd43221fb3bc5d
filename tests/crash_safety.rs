//! Crash test for `mirrors apply` (issue 2): SIGKILL the apply at random points 200 times; the
//! registries.conf must always be byte-for-byte either the old or the new content (so it always
//! loads), and a later successful apply must leave no `.rna-tmp.` file behind.
//!
//! Two generated policy sets A and B (same sources, every tenth entry with different mirrors) are
//! applied alternately, so every iteration has a known (old, new) pair. The kill delay is drawn
//! from the duration of a timed, successful switch: a third of the kills anywhere in
//! `0..duration`, the rest near the end, where the temporary file is written and renamed.
//!
//! Environment: `RNA_CRASH_SEED` (repeat a run), `RNA_CRASH_KILLS` (default 200),
//! `RNA_CRASH_SOURCES` (default 150).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const BIN: &str = env!("CARGO_BIN_EXE_rhel-node-agent");

const BASE: &str = r#"# /etc/containers/registries.conf — maintained by the administrator
unqualified-search-registries = ["registry.access.redhat.com", "docker.io"]

# Internal Quay with the administrator's own mirror.
[[registry]]
location = "quay.io"

[[registry.mirror]]
location = "mirror.internal.example/quay" # keep

[aliases]
"ubi8" = "registry.access.redhat.com/ubi8"
"#;

/// A small linear congruential generator (Knuth's MMIX constants): no extra dependency.
struct Lcg(u64);

impl Lcg {
    fn next_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 11
    }
    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        self.next_u64() as f64 / (1u64 << 53) as f64
    }
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `n` IDMS entries × 3 mirrors; entries `i % 10 == 0` get mirrors tagged `tag`, the rest are shared.
fn policy_set(n: usize, tag: &str) -> String {
    let mut s = String::from(
        "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata:\n  name: crash\nspec:\n  imageDigestMirrors:\n",
    );
    for i in 0..n {
        let t = if i % 10 == 0 { tag } else { "shared" };
        s.push_str(&format!(
            "  - source: src{i}.example.com/ns{i}\n    mirrors:\n"
        ));
        for j in 0..3 {
            s.push_str(&format!("    - m{j}.{t}-mirror.example.net/ns{i}\n"));
        }
    }
    s
}

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn conf(&self) -> PathBuf {
        self.path("etc/registries.conf")
    }
    fn apply_cmd(&self, policies: &Path) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--root")
            .arg(self.path("root"))
            .arg("mirrors")
            .arg("apply")
            .arg("--registries-conf")
            .arg(self.conf())
            .arg("--policies")
            .arg(policies)
            .arg("--dropin-dir")
            .arg(self.path("d"))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    }
    /// A complete apply; returns how long it took.
    fn apply_ok(&self, policies: &Path) -> Duration {
        let t = Instant::now();
        let out = self.apply_cmd(policies).output().expect("run apply");
        let took = t.elapsed();
        assert!(
            out.status.success(),
            "apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        took
    }
    /// Names of `.rna-tmp.` files next to the target.
    fn temps(&self) -> BTreeSet<String> {
        fs::read_dir(self.path("etc"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.contains(".rna-tmp."))
            .collect()
    }
}

/// `mirrors check` of a file with an empty drop-in directory must pass (the file loads).
fn check_loads(s: &Setup, file: &Path) {
    let out = Command::new(BIN)
        .arg("--root")
        .arg(s.path("root"))
        .arg("mirrors")
        .arg("check")
        .arg("--registries-conf")
        .arg(file)
        .arg("--dropin-dir")
        .arg(s.path("empty-dropins"))
        .output()
        .expect("run check");
    assert!(
        out.status.success(),
        "mirrors check failed on {}: {}{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn all_temps_under(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if e.file_name().to_string_lossy().contains(".rna-tmp.") {
            v.push(p.clone());
        }
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            v.extend(all_temps_under(&p));
        }
    }
    v
}

#[test]
fn kill_9_during_apply_leaves_old_or_new_file() {
    let started = Instant::now();
    let kills_wanted = env_num("RNA_CRASH_KILLS", 200);
    let sources = env_num("RNA_CRASH_SOURCES", 150) as usize;
    let seed = env_num(
        "RNA_CRASH_SEED",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    eprintln!("crash test: seed {seed} (set RNA_CRASH_SEED={seed} to repeat), {sources} sources × 3 mirrors");
    let mut rng = Lcg(seed);

    let s = Setup {
        dir: tempfile::Builder::new()
            .prefix("rna-crash.")
            .tempdir()
            .unwrap(),
    };
    fs::create_dir_all(s.path("etc")).unwrap();
    fs::create_dir_all(s.path("empty-dropins")).unwrap();
    fs::write(s.conf(), BASE).unwrap();
    let sets = [s.path("a.yaml"), s.path("b.yaml")];
    fs::write(&sets[0], policy_set(sources, "a")).unwrap();
    fs::write(&sets[1], policy_set(sources, "b")).unwrap();

    // Calibrate: A, B, A, B, A. The rendering must not depend on history, so each set has one
    // content; the switch durations give the kill window.
    s.apply_ok(&sets[0]);
    let content_a = fs::read(s.conf()).unwrap();
    let mut content_b = Vec::new();
    let mut switch = Vec::new();
    for i in 1..=4 {
        switch.push(s.apply_ok(&sets[i % 2]));
        let now = fs::read(s.conf()).unwrap();
        match i {
            1 => content_b = now,
            3 => assert_eq!(
                now, content_b,
                "applying B after A again gives another content"
            ),
            _ => assert_eq!(
                now, content_a,
                "applying A after B does not give A's content"
            ),
        }
    }
    assert_ne!(content_a, content_b);
    for (name, c) in [("a.conf", &content_a), ("b.conf", &content_b)] {
        let p = s.path(name);
        fs::write(&p, c).unwrap();
        std::str::from_utf8(c)
            .unwrap()
            .parse::<toml_edit::DocumentMut>()
            .expect("valid TOML");
        check_loads(&s, &p);
    }
    switch.sort();
    let d = switch[switch.len() / 2];
    eprintln!(
        "crash test: one switch A↔B takes {d:?} (median of {:?}); file {} / {} bytes",
        switch,
        content_a.len(),
        content_b.len()
    );

    let mut killed = 0u64;
    let mut completed = 0u64;
    let (mut before_write, mut mid_write, mut after_rename) = (0u64, 0u64, 0u64);
    let mut iterations = 0u64;
    let mut late = 1.0f64;
    while killed < kills_wanted {
        iterations += 1;
        assert!(
            iterations < kills_wanted * 4,
            "too many apply runs finished before the kill; the calibration is off"
        );
        let old = fs::read(s.conf()).unwrap();
        let (target, new) = if old == content_a {
            (&sets[1], &content_b)
        } else {
            assert_eq!(old, content_b, "the file is neither A nor B");
            (&sets[0], &content_a)
        };
        let temps_before = s.temps();
        // A third anywhere in 0..d; two thirds in 0.7·d..d scaled by `late`, which adapts so that
        // these kills land around the end of the run, where the file is written and renamed.
        let frac = if rng.next_u64() % 3 == 0 {
            rng.unit()
        } else {
            late * (0.7 + rng.unit() * 0.3)
        };
        let delay = d.mul_f64(frac);
        let mut child = s.apply_cmd(target).spawn().expect("spawn apply");
        std::thread::sleep(delay);
        let finished_first = child.try_wait().expect("try_wait").is_some();
        if !finished_first {
            // SIGKILL (std's Child::kill sends SIGKILL on Unix).
            child.kill().expect("kill -9");
        }
        let status = child.wait().expect("wait");
        let now = fs::read(s.conf()).unwrap();
        assert!(
            now == old || now == *new,
            "iteration {iterations}: after a kill at {delay:?} the file is neither the old nor the new content ({} bytes)",
            now.len()
        );
        if finished_first || status.success() {
            assert!(
                status.success(),
                "apply failed without being killed: {status:?}"
            );
            assert_eq!(now, *new, "a completed apply did not write the new content");
            completed += 1;
            late = (late * 0.97).max(0.3);
            continue;
        }
        killed += 1;
        let new_temps: Vec<String> = s.temps().difference(&temps_before).cloned().collect();
        if now == *new {
            after_rename += 1;
        } else if !new_temps.is_empty() {
            mid_write += 1;
        } else {
            before_write += 1;
            if frac > 0.6 {
                late = (late * 1.01).min(3.0);
            }
        }
    }

    // A later successful apply removes the temporary files killed applies left behind.
    let leftover_before = s.temps().len();
    let old = fs::read(s.conf()).unwrap();
    let target = if old == content_a { &sets[1] } else { &sets[0] };
    s.apply_ok(target);
    let final_content = fs::read(s.conf()).unwrap();
    assert!(final_content == content_a || final_content == content_b);
    assert_ne!(final_content, old);
    check_loads(&s, &s.conf());
    let left = all_temps_under(s.dir.path());
    assert!(
        left.is_empty(),
        "temporary files left after a successful apply: {left:?}"
    );

    eprintln!(
        "crash test: {killed} kills in {iterations} runs ({completed} finished before the kill): \
         {before_write} before the temporary file existed, {mid_write} mid-write (temporary file \
         present, not renamed), {after_rename} after the rename; {leftover_before} temporary \
         file(s) were left before the final apply; final late-window scale {late:.2}; {:?} in all",
        started.elapsed()
    );
}
