//! Upgrade phases against the real daemon under `--root`, with real hook processes (the
//! process-group runner): the record's state machine through the CLI (exit codes, joining,
//! retries, the reboot, reset), the hook contract (order, override, skip and refusal rules,
//! environment, stdin, timeouts that leave no process behind, bounded output), and durability
//! (kill -9 of the daemon mid-hook, a client that goes away, a trigger before the daemon is up).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::*;

const ITMS: &str = "apiVersion: config.openshift.io/v1\nkind: ImageTagMirrorSet\nmetadata: {name: t}\nspec:\n  imageTagMirrors:\n  - source: quay.io/tools\n    mirrors: [mirror.local/tools]\n";

fn hook_dir(d: &Daemon, phase: &str) -> PathBuf {
    let p = d
        .root
        .join("etc/rhel-node-agent/hooks.d")
        .join(format!("{phase}.d"));
    fs::create_dir_all(&p).unwrap();
    p
}

fn vendor_hook_dir(d: &Daemon, phase: &str) -> PathBuf {
    let p = d
        .root
        .join("usr/lib/rhel-node-agent/hooks.d")
        .join(format!("{phase}.d"));
    fs::create_dir_all(&p).unwrap();
    p
}

/// Write an executable shell hook.
fn hook(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// A file in the test's temp dir (outside the root), for hooks to write to.
fn scratch(d: &Daemon, name: &str) -> PathBuf {
    d.dir.path().join(name)
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_default()
}

fn phase(d: &Daemon, args: &[&str]) -> Output {
    let mut a = vec!["phase", "run"];
    a.extend_from_slice(args);
    d.cli(&a)
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn upgrade(d: &Daemon) -> Value {
    let o = d.cli(&["upgrade", "status", "-o", "json"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn phase_rec<'a>(record: &'a Value, name: &str) -> &'a Value {
    record["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["phase"] == name)
        .unwrap()
}

/// The step of an attempt named `name`.
fn hook_step<'a>(attempt: &'a Value, name: &str) -> &'a Value {
    attempt["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {attempt}"))
}

fn set_boot(d: &Daemon, id: &str) {
    let p = d.root.join("proc/sys/kernel/random");
    fs::create_dir_all(&p).unwrap();
    fs::write(p.join("boot_id"), format!("{id}\n")).unwrap();
}

fn pid_alive(pid: i32) -> bool {
    // A zombie is dead for our purposes (its parent has not reaped it yet).
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

fn wait_until(mut cond: impl FnMut() -> bool, secs: u64, what: &str) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn the_record_opens_joins_refuses_retries_sees_the_reboot_and_closes() {
    let d = Daemon::start("");
    let log = scratch(&d, "hooks.log");
    for p in ["pre-cordon", "pre-upgrade", "pre-uncordon", "post-upgrade"] {
        hook(
            &hook_dir(&d, p),
            "10-log",
            &format!(
                "echo \"$RNA_PHASE $RNA_UPGRADE_ID $RNA_TARGET_VERSION $RNA_ATTEMPT\" >> {}",
                log.display()
            ),
        );
    }
    set_boot(&d, "boot-a");

    // Nothing is open: a later phase is refused (exit 3), and nothing runs.
    let o = phase(&d, &["pre-upgrade"]);
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(text(&o).contains("no upgrade is open"), "{}", text(&o));
    assert_eq!(read(&log), "");

    // pre-cordon opens a record; the id is derived from the target and the time.
    let o = phase(&d, &["pre-cordon", "--target-version", "4.14.3"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let st = upgrade(&d);
    let id = st["open"]["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("4.14.3-2"), "{id}");

    // Re-running it (a re-run of the play) is "already done" and runs nothing.
    let o = phase(&d, &["pre-cordon", "--target-version", "4.14.3"]);
    assert_eq!(code(&o), 0);
    assert!(text(&o).contains("already done"), "{}", text(&o));
    assert_eq!(read(&log).lines().count(), 1);

    // Out of order inside the record: refused unless --ignore-order.
    let o = phase(&d, &["pre-uncordon"]);
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(text(&o).contains("needs pre-upgrade"), "{}", text(&o));
    // Another target while the record is open: refused.
    let o = phase(&d, &["pre-upgrade", "--target-version", "4.15.0"]);
    assert_eq!(code(&o), 3, "{}", text(&o));
    // A bad id: invalid input (exit 2).
    let o = phase(&d, &["pre-upgrade", "--upgrade-id", "no spaces"]);
    assert_eq!(code(&o), 2, "{}", text(&o));

    // A failing pre-upgrade hook fails the phase (exit 1); a retry is attempt 2 of the same record.
    let fail_flag = scratch(&d, "fail");
    fs::write(&fail_flag, "").unwrap();
    hook(
        &hook_dir(&d, "pre-upgrade"),
        "20-gate",
        &format!(
            "if test -e {}; then\n  echo 'gate: the database backup is not done'\n  echo 'gate: refusing the upgrade' >&2\n  exit 7\nfi",
            fail_flag.display()
        ),
    );
    let o = phase(&d, &["pre-upgrade"]);
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(text(&o).contains("20-gate failed: exit 7"), "{}", text(&o));
    status_shows_timestamps_and_the_failed_hooks_tail(&d);
    fs::remove_file(&fail_flag).unwrap();
    let o = phase(&d, &["pre-upgrade"]);
    assert_eq!(code(&o), 0, "{}", text(&o));

    // The reboot: a new boot id between pre-upgrade and pre-uncordon is recognised.
    set_boot(&d, "boot-b");
    let o = phase(&d, &["pre-uncordon"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(text(&o).contains("rebooted"), "{}", text(&o));
    let rec = upgrade(&d)["open"].clone();
    assert_eq!(rec["boots"].as_array().unwrap().len(), 2);
    assert_eq!(
        phase_rec(&rec, "pre-uncordon")["attempts"][0]["reboot_detected"],
        true
    );
    let human = d.cli(&["upgrade", "status"]);
    assert!(
        text(&human).contains("the node rebooted during this upgrade"),
        "{}",
        text(&human)
    );

    // post-upgrade closes the record.
    let o = phase(&d, &["post-upgrade"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let st = upgrade(&d);
    assert!(st["open"].is_null(), "{st}");
    let closed = st["closed"].as_array().unwrap().last().unwrap();
    assert_eq!(closed["id"], id.as_str());
    assert_eq!(closed["closed_by"], "post-upgrade");
    let pu = phase_rec(closed, "pre-upgrade");
    assert_eq!(pu["attempts"].as_array().unwrap().len(), 2);
    assert_eq!(
        read(&log)
            .lines()
            .map(|l| l.split(' ').next().unwrap())
            .collect::<Vec<_>>(),
        [
            "pre-cordon",
            "pre-upgrade",
            "pre-upgrade",
            "pre-uncordon",
            "post-upgrade"
        ]
    );
    for l in read(&log).lines() {
        assert!(l.contains(&format!("{id} 4.14.3")), "{l}");
    }
    assert!(read(&log).contains("pre-upgrade") && read(&log).contains(" 2\n"));

    // An explicit id of a closed record is remembered: already done.
    let o = phase(&d, &["post-upgrade", "--upgrade-id", &id]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(text(&o).contains("already done"));
}

/// True for `YYYY-MM-DDTHH:MM:SSZ` (the journal's RFC 3339 UTC timestamps).
fn is_rfc3339_utc(v: &Value) -> bool {
    let Some(t) = v.as_str() else { return false };
    let b = t.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// After pre-cordon succeeded and pre-upgrade failed in hook 20-gate: `upgrade status` shows each
/// phase's timestamps and the failed hook's output tail, as JSON and for people.
fn status_shows_timestamps_and_the_failed_hooks_tail(d: &Daemon) {
    let rec = upgrade(d)["open"].clone();
    let times = |phase: &str| {
        let p = phase_rec(&rec, phase);
        let a = p["attempts"].as_array().unwrap().last().unwrap().clone();
        assert!(is_rfc3339_utc(&a["started_at"]), "{phase}: {a}");
        assert!(is_rfc3339_utc(&a["finished_at"]), "{phase}: {a}");
        assert!(a["started_at"].as_str() <= a["finished_at"].as_str(), "{a}");
        (
            p["state"].as_str().unwrap().to_string(),
            a["started_at"].as_str().unwrap().to_string(),
            a["finished_at"].as_str().unwrap().to_string(),
            a,
        )
    };
    let (pc_state, pc_start, pc_end, _) = times("pre-cordon");
    assert_eq!(pc_state, "succeeded");
    let (pu_state, pu_start, pu_end, attempt) = times("pre-upgrade");
    assert_eq!(pu_state, "failed");
    assert!(pc_end <= pu_start);
    for later in ["pre-uncordon", "post-upgrade"] {
        let p = phase_rec(&rec, later);
        assert_eq!(p["state"], "pending");
        assert!(p["attempts"].as_array().unwrap().is_empty(), "{p}");
    }
    let gate = hook_step(&attempt, "20-gate");
    assert_eq!(gate["state"], "failed", "{gate}");
    assert_eq!(gate["exit_code"], 7, "{gate}");
    assert!(is_rfc3339_utc(&gate["started_at"]), "{gate}");
    assert!(is_rfc3339_utc(&gate["finished_at"]), "{gate}");
    assert_eq!(
        gate["output_tail"],
        "gate: the database backup is not done\ngate: refusing the upgrade\n"
    );
    let human = text(&d.cli(&["upgrade", "status"]));
    for line in [
        format!("  pre-cordon    succeeded — attempt 1 {pc_start} → {pc_end}"),
        format!("  pre-upgrade   failed — attempt 1 {pu_start} → {pu_end}"),
        "  pre-uncordon  pending".to_string(),
        "  post-upgrade  pending".to_string(),
        "        | gate: the database backup is not done".to_string(),
        "        | gate: refusing the upgrade".to_string(),
    ] {
        assert!(
            human.lines().any(|l| l == line),
            "{line:?} missing from:\n{human}"
        );
    }
    assert!(
        human.contains("hook 20-gate: failed (exit 7 after"),
        "{human}"
    );
}

#[test]
fn reset_closes_an_abandoned_record_and_ignore_order_opens_one() {
    let d = Daemon::start("");
    let o = phase(&d, &["pre-cordon", "--upgrade-id", "u1"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    // A different id while u1 is open is refused.
    let o = phase(&d, &["pre-cordon", "--upgrade-id", "u2"]);
    assert_eq!(code(&o), 3, "{}", text(&o));
    let o = d.cli(&["upgrade", "reset"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(text(&o).contains("upgrade u1 closed"), "{}", text(&o));
    let o = d.cli(&["upgrade", "reset"]);
    assert!(text(&o).contains("nothing to reset"), "{}", text(&o));
    // With --ignore-order a later phase opens a record by itself.
    let o = phase(
        &d,
        &["pre-uncordon", "--ignore-order", "--upgrade-id", "u3"],
    );
    assert_eq!(code(&o), 0, "{}", text(&o));
    let rec = upgrade(&d)["open"].clone();
    assert_eq!(rec["id"], "u3");
    assert_eq!(phase_rec(&rec, "pre-cordon")["state"], "pending");
    assert_eq!(
        phase_rec(&rec, "pre-uncordon")["attempts"][0]["ignore_order"],
        true
    );
}

#[test]
fn hooks_run_in_lexical_order_with_override_skip_and_mask_rules() {
    let d = Daemon::start("");
    let log = scratch(&d, "order.log");
    let admin = hook_dir(&d, "pre-cordon");
    let vendor = vendor_hook_dir(&d, "pre-cordon");
    let rec = |name: &str, who: &str| format!("echo {name}-{who} >> {}", log.display());
    hook(&vendor, "10-vendor-only", &rec("10", "vendor"));
    hook(&vendor, "20-overridden", &rec("20", "vendor"));
    hook(&admin, "20-overridden", &rec("20", "admin"));
    hook(&vendor, "30-masked", &rec("30", "vendor"));
    std::os::unix::fs::symlink("/dev/null", admin.join("30-masked")).unwrap();
    hook(&admin, "05-first", &rec("05", "admin"));
    hook(&admin, "9-lexical", &rec("9", "admin"));
    for skipped in [
        "40-x~",
        "40-x.rpmnew",
        "40-x.rpmsave",
        "40-x.disabled",
        ".40-hidden",
    ] {
        hook(&admin, skipped, &rec("skipped", skipped));
    }
    let noexec = admin.join("50-not-executable");
    fs::write(&noexec, format!("#!/bin/sh\n{}\n", rec("50", "noexec"))).unwrap();
    fs::set_permissions(&noexec, fs::Permissions::from_mode(0o644)).unwrap();
    fs::create_dir(admin.join("60-a-directory")).unwrap();

    let o = phase(&d, &["pre-cordon"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(
        read(&log).lines().collect::<Vec<_>>(),
        ["05-admin", "10-vendor", "20-admin", "9-admin"],
        "byte-wise lexical order, admin overrides vendor, /dev/null masks"
    );
    let out = text(&o);
    for why in [
        "name ends in ~",
        "name ends in .rpmnew",
        "name ends in .rpmsave",
        "name ends in .disabled",
        "hidden file",
        "not executable",
        "not a regular file",
        "masked",
    ] {
        assert!(out.contains(why), "{why} missing from:\n{out}");
    }
    let up = upgrade(&d);
    let steps = &phase_rec(&up["open"], "pre-cordon")["attempts"][0]["steps"];
    let skipped = steps
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["state"] == "skipped")
        .count();
    // The eight files, and the upgrade-slot built-in (no cluster configured).
    assert_eq!(skipped, 9, "{steps}");
}

#[test]
fn unsafe_hook_files_are_refused_and_fail_the_phase_before_any_hook_runs() {
    let d = Daemon::start("");
    let log = scratch(&d, "ran.log");
    let dir = hook_dir(&d, "pre-cordon");
    hook(&dir, "10-fine", &format!("echo ran >> {}", log.display()));
    let gw = hook(
        &dir,
        "20-writable",
        &format!("echo bad >> {}", log.display()),
    );
    // Writable by the group; by others (also with the group's bits clear, and without read).
    for (mode, shown) in [(0o775, "0775"), (0o757, "0757"), (0o703, "0703")] {
        fs::set_permissions(&gw, fs::Permissions::from_mode(mode)).unwrap();
        let o = phase(&d, &["pre-cordon"]);
        assert_eq!(code(&o), 1, "{shown}: {}", text(&o));
        assert!(
            text(&o).contains(&format!(
                "20-writable (writable by group or others (mode {shown}))"
            )),
            "{}",
            text(&o)
        );
        assert_eq!(read(&log), "", "no hook runs when one is refused ({shown})");
        let pc = phase_rec(&upgrade(&d)["open"], "pre-cordon").clone();
        assert_eq!(pc["state"], "failed");
        let step = hook_step(
            pc["attempts"].as_array().unwrap().last().unwrap(),
            "20-writable",
        );
        assert_eq!(step["state"], "failed", "{step}");
        assert_eq!(
            step["message"],
            format!("refused: writable by group or others (mode {shown})")
        );
    }

    fs::set_permissions(&gw, fs::Permissions::from_mode(0o755)).unwrap();
    fs::remove_file(&gw).unwrap();
    if nix::unistd::geteuid().is_root() {
        let other = hook(&dir, "30-someone-elses", "true");
        std::os::unix::fs::chown(&other, Some(65534), Some(65534)).unwrap();
        let o = phase(&d, &["pre-cordon"]);
        assert_eq!(code(&o), 1, "{}", text(&o));
        assert!(
            text(&o).contains("owned by uid 65534, not root"),
            "{}",
            text(&o)
        );
        fs::remove_file(&other).unwrap();
    }
    let o = phase(&d, &["pre-cordon"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(read(&log), "ran\n");
}

#[test]
fn hooks_get_the_documented_environment_and_stdin_context() {
    let d = Daemon::start("[node]\nname = \"worker-7\"\n");
    let env_out = scratch(&d, "env.txt");
    let stdin_out = scratch(&d, "stdin.json");
    let stdin2_out = scratch(&d, "stdin2.json");
    set_boot(&d, "boot-of-the-stdin-test");
    let dump = hook(
        &hook_dir(&d, "pre-cordon"),
        "10-dump",
        &format!("env > {}\ncat > {}", env_out.display(), stdin_out.display()),
    );
    hook(
        &hook_dir(&d, "pre-cordon"),
        "20-dump",
        &format!("cat > {}", stdin2_out.display()),
    );
    let o = phase(
        &d,
        &[
            "pre-cordon",
            "--upgrade-id",
            "u-env",
            "--target-version",
            "4.14.3",
        ],
    );
    assert_eq!(code(&o), 0, "{}", text(&o));
    let env = read(&env_out);
    for kv in [
        "RNA_PHASE=pre-cordon",
        "RNA_NODE=worker-7",
        "RNA_UPGRADE_ID=u-env",
        "RNA_TARGET_VERSION=4.14.3",
        "RNA_ATTEMPT=1",
        "RNA_HOOK=10-dump",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ] {
        assert!(env.lines().any(|l| l == kv), "{kv} missing:\n{env}");
    }
    // A clean environment: nothing of the test's (or the daemon's) own leaks in.
    assert!(!env.contains("CARGO"), "{env}");
    let ctx: Value = serde_json::from_str(&read(&stdin_out)).unwrap();
    // Every field docs/hooks.md documents is there with its documented type, and nothing else.
    let documented = documented_stdin_fields();
    let mut keys: Vec<&str> = ctx
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    keys.sort();
    let mut names: Vec<&str> = documented.iter().map(|(n, _)| n.as_str()).collect();
    names.sort();
    assert_eq!(keys, names, "stdin fields vs docs/hooks.md");
    for (name, ty) in &documented {
        assert!(
            has_type(&ctx[name.as_str()], ty),
            "{name} is not {ty}: {ctx}"
        );
    }
    // And the values.
    assert_eq!(ctx["schema"], 1);
    assert_eq!(ctx["agent_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(ctx["phase"], "pre-cordon");
    assert_eq!(ctx["node"], "worker-7");
    assert_eq!(ctx["upgrade_id"], "u-env");
    assert_eq!(ctx["target_version"], "4.14.3");
    assert_eq!(ctx["attempt"], 1);
    assert_eq!(ctx["hook"], "10-dump");
    assert_eq!(ctx["hook_path"], dump.display().to_string());
    assert_eq!(ctx["timeout_seconds"], 600);
    assert_eq!(ctx["boot_id"], "boot-of-the-stdin-test");
    assert_eq!(ctx["reboot_detected"], false);
    assert_eq!(
        ctx["boot_ids"],
        serde_json::json!(["boot-of-the-stdin-test"])
    );
    let rec = upgrade(&d)["open"].clone();
    assert_eq!(ctx["opened_at"], rec["opened_at"]);
    assert!(is_rfc3339_utc(&ctx["opened_at"]), "{}", ctx["opened_at"]);
    assert_eq!(
        ctx["phases"],
        serde_json::json!({"pre-cordon": "running", "pre-upgrade": "pending",
                           "pre-uncordon": "pending", "post-upgrade": "pending"})
    );
    assert_eq!(ctx["earlier_hooks"], serde_json::json!([]));
    assert_eq!(ctx["root"], d.root.display().to_string());
    // The second hook is told about the first.
    let ctx2: Value = serde_json::from_str(&read(&stdin2_out)).unwrap();
    assert_eq!(ctx2["hook"], "20-dump");
    assert_eq!(
        ctx2["earlier_hooks"],
        serde_json::json!([{"name": "10-dump", "state": "succeeded"}])
    );
}

/// The stdin fields of docs/hooks.md's table, with their documented types.
fn documented_stdin_fields() -> Vec<(String, String)> {
    let doc = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/hooks.md")).unwrap();
    let mut lines = doc.lines().skip_while(|l| !l.starts_with("- **stdin**"));
    let mut fields = Vec::new();
    for l in lines.by_ref().skip(1) {
        let l = l.trim();
        if l.is_empty() {
            continue;
        }
        if !l.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = l.split('|').map(str::trim).collect();
        if !cells[1].starts_with('`') {
            continue; // the header and the separator
        }
        let names: Vec<&str> = cells[1].split('`').skip(1).step_by(2).collect();
        for n in names {
            fields.push((n.to_string(), cells[2].to_string()));
        }
    }
    assert!(
        fields.len() > 10,
        "no stdin table in docs/hooks.md: {fields:?}"
    );
    fields
}

/// Does `v` have the type the docs give (`number`, `string`, …)?
fn has_type(v: &Value, ty: &str) -> bool {
    match ty {
        "number" => v.is_u64(),
        "string" => v.is_string(),
        "bool" => v.is_boolean(),
        "object" => v.is_object(),
        "array of strings" => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
        "array of `{name, state}`" => v.as_array().is_some_and(|a| {
            a.iter().all(|e| {
                e.as_object().is_some_and(|o| {
                    o.len() == 2 && o["name"].is_string() && o["state"].is_string()
                })
            })
        }),
        other => panic!("docs/hooks.md gives a type this test does not know: {other:?}"),
    }
}

/// The pids a hook wrote to `file` (its own, a child's and a grandchild's).
fn pids_in(file: &Path) -> Vec<i32> {
    read(file)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// A hook body that starts a child and a grandchild (all `sleep`), records their pids, and
/// waits. It first re-executes itself with `RNA_TEST_MARK=<mark>` in its environment, so that it
/// and every process it starts (the foreground `sleep`s too) carry the mark: [`marked`] finds
/// them all, recorded or not.
fn tree_hook(pids: &Path, mark: &str) -> String {
    format!(
        "[ \"$RNA_TEST_MARK\" = {mark} ] || exec env RNA_TEST_MARK={mark} \"$0\"\nsh -c 'sleep 1000 & echo $! >> {p}; sleep 1000' &\necho $! >> {p}\necho $$ >> {p}\nsleep 1000",
        p = pids.display()
    )
}

/// A running `phase run pre-cordon` (with `extra` arguments) whose `10-slow` hook is the marked
/// process tree of [`tree_hook`], once the tree has started: its pid file, its mark and the client
/// (output piped when `capture`, else discarded).
fn start_tree_hook(d: &Daemon, extra: &[&str], capture: bool) -> (PathBuf, String, Child) {
    let pids = scratch(d, "pids");
    let mark = unique_mark(d);
    hook(
        &hook_dir(d, "pre-cordon"),
        "10-slow",
        &tree_hook(&pids, &mark),
    );
    let out = || {
        if capture {
            Stdio::piped()
        } else {
            Stdio::null()
        }
    };
    let client = Command::new(BIN)
        .arg("--root")
        .arg(&d.root)
        .args(["phase", "run", "pre-cordon"])
        .args(extra)
        .stdout(out())
        .stderr(out())
        .spawn()
        .unwrap();
    wait_until(|| pids_in(&pids).len() == 3, 10, "the hook tree to start");
    (pids, mark, client)
}

/// A mark no other test's processes carry.
fn unique_mark(d: &Daemon) -> String {
    format!(
        "rna-{}-{}",
        std::process::id(),
        d.dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches('.')
    )
}

/// Every live process whose environment holds `RNA_TEST_MARK=<mark>` (a zombie's environment
/// is gone: it does not count).
fn marked(mark: &str) -> Vec<i32> {
    let want = format!("RNA_TEST_MARK={mark}");
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(env) = fs::read(e.path().join("environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|kv| kv == want.as_bytes()) {
            found.push(pid);
        }
    }
    found
}

#[test]
fn a_timeout_kills_the_whole_process_tree() {
    let d = Daemon::start("[hooks.timeouts]\n\"pre-cordon/10-slow\" = \"2s\"\n");
    let t = Instant::now();
    let (pids, mark, client) = start_tree_hook(&d, &[], true);
    // While it runs the scan sees the whole tree: the hook, its child, the child's two sleeps,
    // and the hook's own foreground sleep.
    let p = pids_in(&pids);
    wait_until(|| marked(&mark).len() == 5, 5, "five marked processes");
    let running = marked(&mark);
    assert!(
        p.iter().all(|x| running.contains(x)),
        "{p:?} vs {running:?}"
    );
    let o = client.wait_with_output().unwrap();
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(text(&o).contains("timed out after 2 s"), "{}", text(&o));
    assert!(t.elapsed() < Duration::from_secs(20));
    // Zero leftover processes: none of the tree, recorded or not.
    wait_until(|| marked(&mark).is_empty(), 10, "no marked process left");
    assert!(p.iter().all(|&x| !pid_alive(x)), "{p:?}");
    let up = upgrade(&d);
    let step = hook_step(
        &phase_rec(&up["open"], "pre-cordon")["attempts"][0],
        "10-slow",
    );
    assert_eq!(step["timed_out"], true, "{step}");
}

#[test]
fn processes_left_behind_by_a_finished_hook_are_ended_and_setsid_is_the_documented_limit() {
    let d = Daemon::start("");
    let pids = scratch(&d, "pids");
    let escaped = scratch(&d, "escaped");
    hook(
        &hook_dir(&d, "pre-cordon"),
        "10-leaves-things",
        &format!(
            "sleep 1000 &\necho $! >> {p}\nsetsid sh -c 'echo $$ > {e}; exec sleep 1000' < /dev/null > /dev/null 2>&1 &\nsleep 0.3\nexit 0",
            p = pids.display(),
            e = escaped.display()
        ),
    );
    let o = phase(&d, &["pre-cordon"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let p = pids_in(&pids);
    assert_eq!(p.len(), 1);
    wait_until(|| !pid_alive(p[0]), 10, "the background child to be ended");
    // A process that left the group with setsid escapes the process-group runner (documented in
    // docs/hooks.md; the systemd runner ends it with the hook's cgroup).
    wait_until(|| !read(&escaped).is_empty(), 5, "the escaped pid");
    let e: i32 = read(&escaped).trim().parse().unwrap();
    assert!(pid_alive(e), "setsid escapes the process group");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(e),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Peak resident set size of a process, in KiB.
fn vm_hwm_kib(pid: u32) -> u64 {
    read(Path::new(&format!("/proc/{pid}/status")))
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_hook_printing_500_mb_keeps_the_daemon_bounded() {
    let d = Daemon::start("");
    hook(
        &hook_dir(&d, "pre-cordon"),
        "10-loud",
        "yes 'all work and no play makes jack a dull boy, all work and no play' | head -c 500000000\necho the-end",
    );
    let o = phase(&d, &["pre-cordon", "-o", "json"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let hwm = vm_hwm_kib(d.child.id());
    assert!(hwm < 64 * 1024, "daemon peak RSS {hwm} KiB");
    // The client got about 1 MiB of lines and a note, not 500 MB.
    assert!(o.stdout.len() < 4 * 1024 * 1024, "{}", o.stdout.len());
    assert!(text(&o).contains("the rest is not forwarded"));
    let up = upgrade(&d);
    let step = hook_step(
        &phase_rec(&up["open"], "pre-cordon")["attempts"][0],
        "10-loud",
    );
    assert_eq!(
        step["output_bytes"],
        500_000_000u64 + "the-end\n".len() as u64
    );
    let tail = step["output_tail"].as_str().unwrap();
    assert!(
        tail.len() <= 64 * 1024 && tail.ends_with("the-end\n"),
        "{}",
        tail.len()
    );
}

#[test]
fn kill_9_of_the_daemon_mid_hook_marks_the_phase_interrupted_and_ends_the_hook() {
    let mut d = Daemon::start("");
    let (_pids, mark, mut client) = start_tree_hook(&d, &["--upgrade-id", "u9"], false);
    let dir = hook_dir(&d, "pre-cordon");
    let running = upgrade(&d);
    assert_eq!(running["running"]["phase"], "pre-cordon", "{running}");
    d.kill9_and_restart();
    // The client lost its daemon: the phase's outcome is unknown to it, so it fails.
    let st = client.wait().unwrap();
    assert_eq!(st.code(), Some(1));
    wait_until(
        || marked(&mark).is_empty(),
        10,
        "the interrupted hook's processes to be gone",
    );
    let rec = upgrade(&d)["open"].clone();
    let pc = phase_rec(&rec, "pre-cordon");
    assert_eq!(pc["state"], "interrupted", "{rec}");
    assert!(pc["attempts"][0]["message"]
        .as_str()
        .unwrap()
        .contains("daemon stopped"));
    assert_eq!(
        hook_step(&pc["attempts"][0], "10-slow")["state"],
        "interrupted"
    );
    // It can be run again.
    fs::remove_file(dir.join("10-slow")).unwrap();
    hook(&dir, "10-quick", "true");
    let o = phase(&d, &["pre-cordon"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let pc = phase_rec(&upgrade(&d)["open"], "pre-cordon").clone();
    assert_eq!(pc["attempts"].as_array().unwrap().len(), 2);
    assert_eq!(pc["state"], "succeeded");
}

#[test]
fn a_phase_survives_its_client_and_a_second_trigger_attaches() {
    let d = Daemon::start("");
    let gate = scratch(&d, "gate");
    let runs = scratch(&d, "runs");
    hook(
        &hook_dir(&d, "pre-cordon"),
        "10-waits",
        &format!(
            "echo run >> {r}\necho waiting\nwhile [ ! -e {g} ]; do sleep 0.05; done\necho released",
            r = runs.display(),
            g = gate.display()
        ),
    );
    let spawn_client = || {
        Command::new(BIN)
            .arg("--root")
            .arg(&d.root)
            .args(["phase", "run", "pre-cordon"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut first = spawn_client();
    wait_until(|| !read(&runs).is_empty(), 10, "the hook to start");
    // An SSH drop: the client dies; the phase goes on.
    first.kill().unwrap();
    first.wait().unwrap();
    // The play is re-run: the same trigger attaches to the running phase (and replays its progress).
    let second = spawn_client();
    std::thread::sleep(Duration::from_millis(300));
    fs::write(&gate, "").unwrap();
    let out = second.wait_with_output().unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(
        all.contains("10-waits | waiting") && all.contains("10-waits | released"),
        "{all}"
    );
    assert_eq!(read(&runs), "run\n", "the hook ran once");
    assert_eq!(
        phase_rec(&upgrade(&d)["open"], "pre-cordon")["state"],
        "succeeded"
    );
}

#[test]
fn a_trigger_waits_for_the_daemon_to_come_up() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("etc/containers")).unwrap();
    fs::write(root.join("etc/containers/registries.conf"), BASE).unwrap();
    // No daemon and no waiting: exit 4.
    let o = Command::new(BIN)
        .arg("--root")
        .arg(&root)
        .args(["phase", "run", "pre-cordon", "--wait-daemon", "0"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 4, "{}", text(&o));
    // The trigger that arrives right after the reboot, before the daemon is up.
    let client = Command::new(BIN)
        .arg("--root")
        .arg(&root)
        .args(["phase", "run", "pre-cordon", "--wait-daemon", "30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let mut daemon = Command::new(BIN)
        .arg("--root")
        .arg(&root)
        .arg("daemon")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = client.wait_with_output().unwrap();
    let _ = daemon.kill();
    let _ = daemon.wait();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("waiting up to 30 s for the daemon"), "{all}");
}

#[test]
fn builtins_are_reported_and_the_held_mirror_change_lands_at_pre_uncordon() {
    let d = Daemon::start("[upgrade]\nbuiltin_cordon_drain = true\n");
    write_atomically(
        &d.root.join("etc/rhel-node-agent/mirrors.d/10-itms.yaml"),
        ITMS,
    );
    d.wait_for(
        || d.status()["mirrors"]["state"] == "held",
        "the change to be held",
    );
    assert_eq!(d.conf(), BASE);
    let o = phase(&d, &["pre-cordon"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("builtin cordon: skipped: no cluster configured"),
        "{out}"
    );
    assert!(
        out.contains("builtin drain: skipped: no cluster configured"),
        "{out}"
    );
    let o = phase(&d, &["pre-upgrade"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(
        text(&o).contains("builtin firewalld-upgrade-state: skipped: upgrade.firewalld_state = disabled, but under --root"),
        "{}",
        text(&o)
    );
    assert_eq!(d.conf(), BASE, "still held until pre-uncordon");
    let o = phase(&d, &["pre-uncordon"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(
        text(&o).contains("builtin reconcile-mirrors: done: mirror policies applied"),
        "{}",
        text(&o)
    );
    assert!(d.conf().contains("mirror.local/tools"));
    assert!(text(&o).contains("builtin uncordon: skipped: no cluster configured"));
    let steps = phase_rec(&upgrade(&d)["open"], "pre-uncordon")["attempts"][0]["steps"].clone();
    let names: Vec<&str> = steps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["reconcile-mirrors", "uncordon"],
        "hooks first, then built-ins"
    );
}

#[test]
fn the_journal_of_a_newer_agent_is_refused_not_overwritten() {
    let mut d = Daemon::start("");
    let path = d.root.join("var/lib/rhel-node-agent/upgrade/journal.json");
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let newer = "{\"schema\": 99, \"open\": null, \"closed\": []}\n";
    fs::write(&path, newer).unwrap();
    d.kill9_and_restart();
    let o = phase(&d, &["pre-cordon"]);
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(text(&o).contains("schema 99 is newer"), "{}", text(&o));
    assert_eq!(read(&path), newer);
    assert!(d.status()["phase"]
        .as_str()
        .unwrap()
        .contains("journal unusable"));
}

#[test]
fn stopping_the_daemon_mid_hook_ends_the_hook_and_records_the_interruption() {
    let d = Daemon::start("");
    let (_pids, mark, client) = start_tree_hook(&d, &[], false);
    d.signal(nix::sys::signal::Signal::SIGTERM);
    let out = client.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    wait_until(
        || marked(&mark).is_empty(),
        10,
        "the hook's tree to be gone",
    );
    // The journal on disk says what happened (the daemon is gone: read it offline).
    let o = d.cli(&["upgrade", "status", "-o", "json"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let st: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(st["offline"], true);
    let pc = phase_rec(&st["open"], "pre-cordon");
    assert_eq!(pc["state"], "interrupted", "{st}");
    assert_eq!(
        hook_step(&pc["attempts"][0], "10-slow")["state"],
        "interrupted"
    );
}

/// A daemon under `--root` in a private mount namespace of its own (`unshare --mount`), so its
/// hooks can mount over its state directory without touching the host's mounts. `None` (and a
/// note) where that is not possible (not root, or no unshare).
fn daemon_in_private_mount_namespace() -> Option<Daemon> {
    let probe = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("SKIPPED: cannot make a private mount namespace (needs root and unshare)");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    for d in ["etc/containers", "etc/rhel-node-agent/config.d"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::write(root.join("etc/containers/registries.conf"), BASE).unwrap();
    let log = fs::File::create(dir.path().join("daemon.log")).unwrap();
    let child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--"])
        .arg(bin())
        .arg("--root")
        .arg(&root)
        .args(["daemon", "--debounce", "50ms", "-v"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let d = Daemon { child, root, dir };
    d.wait_ready();
    Some(d)
}

#[test]
fn a_step_whose_start_cannot_be_recorded_does_not_run_and_failed_writes_are_reported() {
    let Some(d) = daemon_in_private_mount_namespace() else {
        return;
    };
    let journal_dir = d.root.join("var/lib/rhel-node-agent/upgrade");
    let journal = journal_dir.join("journal.json");
    let lock_flag = scratch(&d, "lock");
    let ran = scratch(&d, "ran");
    let dir = hook_dir(&d, "pre-cordon");
    // 10-lock makes the journal's directory read-only (in the daemon's mount namespace) while
    // it runs: its own result and the start of 20-after can then not be written. (The remount
    // is refused while the daemon has a file open for writing there: try again.)
    hook(
        &dir,
        "10-lock",
        &format!(
            "if [ -e {flag} ]; then\n  mount --bind {j} {j} || exit 9\n  for i in $(seq 100); do mount -o remount,bind,ro {j} 2>/dev/null && break; sleep 0.05; done\n  touch {j}/probe 2>/dev/null && exit 9\n  echo locked\nfi",
            flag = lock_flag.display(),
            j = journal_dir.display()
        ),
    );
    hook(&dir, "20-after", &format!("echo ran >> {}", ran.display()));
    fs::write(&lock_flag, "").unwrap();

    let o = phase(&d, &["pre-cordon", "--upgrade-id", "u-ro", "-o", "json"]);
    let out = text(&o);
    assert_eq!(code(&o), 1, "{out}");
    let events: Vec<Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "output" && e["hook"] == "10-lock" && e["line"] == "locked"),
        "{out}"
    );
    let result = events.last().unwrap();
    assert_eq!(result["event"], "result", "{out}");
    assert_eq!(result["outcome"], "failed", "{out}");
    let message = result["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!(
            "20-after was not started: its start could not be recorded in the upgrade journal {}: ",
            journal.display()
        )),
        "{message}"
    );
    assert!(message.contains("Read-only file system"), "{message}");
    let not_written = format!(
        "the result of 10-lock could not be written to the upgrade journal {}",
        journal.display()
    );
    assert!(message.contains(&not_written), "{message}");
    let write_errors = result["journal_write_errors"].as_array().unwrap();
    assert!(
        write_errors
            .iter()
            .any(|e| e.as_str().unwrap().starts_with(&not_written)),
        "{result}"
    );
    assert!(
        write_errors.iter().any(|e| e
            .as_str()
            .unwrap()
            .starts_with("the phase's result could not be written")),
        "{result}"
    );
    assert_eq!(read(&ran), "", "20-after must not run");

    // The daemon knows what happened; the file still says 10-lock is running and knows nothing
    // of 20-after (so a restart would show the phase interrupted, never a hook as not run).
    let pc = phase_rec(&upgrade(&d)["open"], "pre-cordon").clone();
    assert_eq!(pc["state"], "failed", "{pc}");
    assert_eq!(
        hook_step(&pc["attempts"][0], "10-lock")["state"],
        "succeeded"
    );
    let after = hook_step(&pc["attempts"][0], "20-after");
    assert_eq!(after["state"], "failed", "{after}");
    let on_disk: Value = serde_json::from_str(&read(&journal)).unwrap();
    let disk_pc = phase_rec(&on_disk["open"], "pre-cordon");
    assert_eq!(disk_pc["state"], "running", "{on_disk}");
    let disk_hooks: Vec<&Value> = disk_pc["attempts"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "hook")
        .collect();
    assert_eq!(
        disk_hooks.iter().map(|s| &s["name"]).collect::<Vec<_>>(),
        ["10-lock"],
        "{on_disk}"
    );
    assert_eq!(disk_hooks[0]["state"], "running");

    // Writable again: the retry runs both hooks, and the file catches up with attempt 1 too.
    fs::remove_file(&lock_flag).unwrap();
    let um = Command::new("nsenter")
        .arg("--target")
        .arg(d.child.id().to_string())
        .args(["--mount", "umount"])
        .arg(&journal_dir)
        .status()
        .unwrap();
    assert!(um.success());
    let o = phase(&d, &["pre-cordon"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(read(&ran), "ran\n");
    let on_disk: Value = serde_json::from_str(&read(&journal)).unwrap();
    let disk_pc = phase_rec(&on_disk["open"], "pre-cordon");
    assert_eq!(disk_pc["state"], "succeeded");
    assert_eq!(disk_pc["attempts"][0]["state"], "failed");
    assert!(
        disk_pc["attempts"][0]["message"]
            .as_str()
            .unwrap()
            .contains("20-after was not started"),
        "{on_disk}"
    );
}
