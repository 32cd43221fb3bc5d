//! The daemon under `--root`, unprivileged paths, real files and a real control socket: policy
//! changes are applied, bad input is reported and changes nothing, SIGHUP reloads the
//! configuration, SIGTERM stops it cleanly, and the CLI respects its ownership.

use std::fs;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;
const IDMS: &str = "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata: {name: d}\nspec:\n  imageDigestMirrors:\n  - source: quay.io/ns\n    mirrors: [mirror.local/ns]\n";
const ITMS: &str = "apiVersion: config.openshift.io/v1\nkind: ImageTagMirrorSet\nmetadata: {name: t}\nspec:\n  imageTagMirrors:\n  - source: quay.io/tools\n    mirrors: [mirror.local/tools]\n";

#[test]
fn daemon_applies_policy_changes_and_reports_errors() {
    let d = Daemon::start("[mirrors]\non_drain_required = \"apply\"\n");
    assert_eq!(d.status()["mirrors"]["state"], "ok");
    assert_eq!(d.conf(), BASE);

    write_atomically(&d.policy("10-idms.yaml"), IDMS);
    d.wait_for(
        || d.conf().contains("mirror.local/ns"),
        "the IDMS to be applied",
    );
    d.wait_for(
        || d.status()["mirrors"]["summary"]["sources"] == 1,
        "status to show one source",
    );

    // A bad policy: nothing changes, the error is visible, the daemon stays up.
    let before = d.conf();
    write_atomically(&d.policy("20-bad.yaml"), "kind: Pod\nmetadata: {name: p}\n");
    d.wait_for(
        || d.status()["mirrors"]["state"] == "error",
        "the error in status",
    );
    let st = d.status();
    assert!(
        st["mirrors"]["last_error"]
            .as_str()
            .unwrap()
            .contains("20-bad.yaml:1: Pod/p"),
        "{st}"
    );
    assert_eq!(d.conf(), before);
    let out = d.cli(&["reconcile"]);
    assert_eq!(out.status.code(), Some(1));

    // Fixed: applied again; removal of all policies restores the administrator's file.
    fs::remove_file(d.policy("20-bad.yaml")).unwrap();
    d.wait_for(|| d.status()["mirrors"]["state"] == "ok", "recovery");
    fs::remove_file(d.policy("10-idms.yaml")).unwrap();
    d.wait_for(|| d.conf() == BASE, "the administrator's file back");

    // The CLI may not write a file the daemon manages; a second daemon may not start.
    write_atomically(&d.policy("10-idms.yaml"), IDMS);
    d.wait_for(|| d.conf().contains("mirror.local/ns"), "the IDMS again");
    let out = d.cli(&["mirrors", "apply"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(d.conf().contains("mirror.local/ns"));
    let out = d.cli(&["daemon"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = d.cli(&["reconcile", "-o", "json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["changed"], false);
}

#[test]
fn changes_that_need_a_drain_are_held_by_default() {
    let d = Daemon::start("");
    write_atomically(&d.policy("10-itms.yaml"), ITMS);
    d.wait_for(
        || d.status()["mirrors"]["state"] == "held",
        "the change to be held",
    );
    assert_eq!(d.conf(), BASE, "a held change writes nothing");
    let st = d.status();
    assert!(
        st["mirrors"]["held_reason"]
            .as_str()
            .unwrap()
            .contains("registry quay.io/tools has been added"),
        "{st}"
    );
}

#[test]
fn sighup_reloads_configuration_and_sigterm_stops_cleanly() {
    let mut d = Daemon::start("[mirrors]\non_drain_required = \"hold\"\n");
    write_atomically(&d.policy("10-itms.yaml"), ITMS);
    d.wait_for(|| d.status()["mirrors"]["state"] == "held", "held");
    // Bad config + SIGHUP: keeps running on the previous settings and says so.
    fs::write(
        d.root.join("etc/rhel-node-agent/config.d/50-test.toml"),
        "[mirrors]\nbogus = 1\n",
    )
    .unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    d.wait_for(
        || {
            d.status()["config_error"]
                .as_str()
                .map(|e| e.contains("bogus"))
                .unwrap_or(false)
        },
        "the config error",
    );
    // Good config + SIGHUP: applied.
    fs::write(
        d.root.join("etc/rhel-node-agent/config.d/50-test.toml"),
        "[mirrors]\non_drain_required = \"apply\"\n",
    )
    .unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    d.wait_for(
        || d.conf().contains("mirror.local/tools"),
        "the held change applied after the reload",
    );
    assert!(d.status()["config_error"].is_null());
    d.signal(nix::sys::signal::Signal::SIGTERM);
    let status = d.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!d.root.join("run/rhel-node-agent/control.sock").exists());
    let out = d.cli(&["status"]);
    assert_eq!(out.status.code(), Some(4), "no daemon: unreachable");
}

#[test]
fn config_show_and_check() {
    let d = Daemon::start("[mirrors]\nbackups = 9\n");
    let out = d.cli(&["config", "show"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("mirrors.backups = 9 ") && l.ends_with("50-test.toml")),
        "{text}"
    );
    fs::write(
        d.root.join("etc/rhel-node-agent/config.d/60-bad.toml"),
        "[mirrors]\nmode = \"sideways\"\n",
    )
    .unwrap();
    let out = d.cli(&["config", "check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("60-bad.toml: mirrors.mode:"));
}

/// The user `nobody`, when the tests run as root (needed to run clients as another uid).
fn nobody() -> Option<nix::unistd::User> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to run clients as another uid");
        return None;
    }
    Some(
        nix::unistd::User::from_name("nobody")
            .unwrap()
            .expect("user nobody"),
    )
}

impl Daemon {
    /// Let other uids reach the socket through the temporary directories.
    fn open_to_others(&self) {
        use std::os::unix::fs::PermissionsExt;
        for p in [self.root.parent().unwrap(), &self.root] {
            fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    /// Run the CLI as `user` with primary group `gid`.
    fn cli_as(&self, user: &nix::unistd::User, gid: u32, args: &[&str]) -> std::process::Output {
        use std::os::unix::process::CommandExt;
        Command::new(BIN)
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .uid(user.uid.as_raw())
            .gid(gid)
            .output()
            .unwrap()
    }
}

#[test]
fn socket_authorization_by_peer_credentials() {
    let Some(nobody) = nobody() else { return };
    let group = nix::unistd::Group::from_gid(nobody.gid)
        .unwrap()
        .expect("nobody's group");
    let d = Daemon::start(&format!("[api]\nread_group = {:?}\n", group.name));
    d.open_to_others();
    // A member of read_group may read, not change.
    let out = d.cli_as(&nobody, nobody.gid.as_raw(), &["status", "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = d.cli_as(&nobody, nobody.gid.as_raw(), &["reconcile"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("may not trigger a reconcile"));
    // Root may change things.
    assert!(d.cli(&["reconcile"]).status.success());
}

#[test]
fn socket_refuses_everyone_else() {
    let Some(nobody) = nobody() else { return };
    let d = Daemon::start("");
    d.open_to_others();
    let out = d.cli_as(&nobody, nobody.gid.as_raw(), &["status"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("may not read the status"));
}

#[test]
fn sd_notify_ready_and_status_and_a_full_queue_never_blocks_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let d = Daemon::start_with("[mirrors]\non_drain_required = \"apply\"\n", Some(&path));
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).unwrap();
    let first = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(
        first.contains("READY=1")
            && first
                .contains("STATUS=mirrors: 0 sources applied, firewalld: unmanaged, phase: idle"),
        "{first}"
    );
    // Stop reading: the datagram queue fills up; the daemon must keep working.
    for i in 0..400 {
        write_atomically(
            &d.policy("10-idms.yaml"),
            &IDMS.replace("mirror.local/ns", &format!("mirror{i}.local/ns")),
        );
        if i % 20 == 0 {
            d.wait_for(
                || d.conf().contains(&format!("mirror{i}.local/ns")),
                "an apply",
            );
        }
    }
    d.wait_for(|| d.conf().contains("mirror399.local/ns"), "the last apply");
    let st = d.status();
    assert_eq!(st["mirrors"]["state"], "ok");
    // More STATUS= datagrams than the kernel queues (net.unix.max_dgram_qlen, 10 by default).
    assert!(st["mirrors"]["reconciles"].as_u64().unwrap() > 20, "{st}");
}

#[test]
fn watchdog_pings_while_the_loop_is_healthy_and_stop_when_it_is_frozen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let d = Daemon::start_env("", Some(&path), &[("WATCHDOG_USEC", "400000")]);
    let count_pings = |window: Duration| {
        let t = Instant::now();
        let mut n = 0;
        let mut buf = [0u8; 4096];
        while t.elapsed() < window {
            if let Ok(k) = sock.recv(&mut buf) {
                if String::from_utf8_lossy(&buf[..k]).contains("WATCHDOG=1") {
                    n += 1;
                }
            }
        }
        n
    };
    let healthy = count_pings(Duration::from_millis(1500));
    assert!(
        healthy >= 4,
        "expected a ping every 200 ms, got {healthy} in 1.5 s"
    );
    // Frozen (SIGSTOP): no pings, so systemd would restart it.
    d.signal(nix::sys::signal::Signal::SIGSTOP);
    let _ = count_pings(Duration::from_millis(300)); // drain what was queued before the stop
    let frozen = count_pings(Duration::from_millis(1000));
    d.signal(nix::sys::signal::Signal::SIGCONT);
    assert_eq!(frozen, 0);
}

#[test]
fn metrics_are_served_and_pass_promtool() {
    use std::io::{Read, Write};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = Daemon::start(&format!(
        "[api]\nmetrics_listen = \"127.0.0.1:{port}\"\n[mirrors]\non_drain_required = \"apply\"\n"
    ));
    write_atomically(&d.policy("10-idms.yaml"), IDMS);
    d.wait_for(
        || d.conf().contains("mirror.local/ns"),
        "the IDMS to be applied",
    );
    let fetch = || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    // The file is replaced before the reconcile that replaced it is counted: poll the counter.
    let changed = "rna_reconciles_total{component=\"mirrors\",outcome=\"changed\"} 1";
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let reply = fetch();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        let body = reply.split_once("\r\n\r\n").unwrap().1.to_string();
        if body.contains(changed) || Instant::now() > deadline {
            break body;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    for want in [
        "rna_reconciles_total{component=\"mirrors\",outcome=\"changed\"} 1",
        "rna_reconcile_duration_seconds_count",
        "rna_mirror_drift 0",
        "rna_build_info{version=\"",
    ] {
        assert!(body.contains(want), "missing {want:?} in\n{body}");
    }
    match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(body.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(_) => eprintln!("promtool not installed: lint skipped (scripts/test installs it)"),
    }
}

#[test]
fn a_policy_directory_removed_and_created_again_is_watched_again() {
    let d = Daemon::start("[mirrors]\non_drain_required = \"apply\"\n");
    let dir = d.root.join("etc/rhel-node-agent/mirrors.d");
    fs::remove_dir_all(&dir).unwrap();
    d.wait_for(
        || d.status()["mirrors"]["reconciles"].as_u64().unwrap_or(0) >= 2,
        "the removal to be noticed",
    );
    fs::create_dir_all(&dir).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    write_atomically(&d.policy("10-idms.yaml"), IDMS);
    d.wait_for(
        || d.conf().contains("mirror.local/ns"),
        "a policy in the new directory to be applied",
    );
}

/// The daemon looks only at the policy files its watches name (plus files reached through a
/// symbolic link): every kind of change a real inotify watch reports must still be applied — an
/// in-place rewrite, an editor's rename over the file, a new file, a removal — and a change of a
/// link's target is picked up by the next reconcile, and the result is what a full render gives.
#[test]
fn every_kind_of_policy_change_among_many_files_is_applied() {
    let d = Daemon::start("[mirrors]\non_drain_required = \"apply\"\n");
    let policy = |n: usize, variant: &str| {
        format!("apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata: {{name: p{n}}}\nspec:\n  imageDigestMirrors:\n  - source: quay.io/p{n}\n    mirrors: [mirror.local/{variant}/p{n}]\n")
    };
    for n in 0..30 {
        fs::write(d.policy(&format!("{n:02}.yaml")), policy(n, "v0")).unwrap();
    }
    d.wait_for(
        || d.status()["mirrors"]["summary"]["sources"] == 30,
        "30 policy files to be applied",
    );
    // In-place rewrites of one file (truncate + write: IN_MODIFY only), several in a row.
    for v in 1..=3 {
        fs::write(d.policy("07.yaml"), policy(7, &format!("v{v}"))).unwrap();
        d.wait_for(
            || d.conf().contains(&format!("mirror.local/v{v}/p7")),
            "an in-place rewrite to be applied",
        );
    }
    // An editor's save: a new file renamed over the old one.
    write_atomically(&d.policy("07.yaml"), &policy(7, "v4"));
    d.wait_for(
        || d.conf().contains("mirror.local/v4/p7"),
        "a rename over the file",
    );
    // A new file and a removed one.
    fs::write(d.policy("40.yaml"), policy(40, "v0")).unwrap();
    d.wait_for(|| d.conf().contains("mirror.local/v0/p40"), "a new file");
    fs::remove_file(d.policy("03.yaml")).unwrap();
    d.wait_for(|| !d.conf().contains("quay.io/p3\""), "a removed file");
    // A policy reached through a symbolic link: its target's directory is not watched, so an
    // in-place change of the target is seen at the next reconcile another change causes.
    let outside = d.root.join("elsewhere");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("linked.yaml"), policy(50, "v0")).unwrap();
    std::os::unix::fs::symlink(outside.join("linked.yaml"), d.policy("50.yaml")).unwrap();
    d.wait_for(
        || d.conf().contains("mirror.local/v0/p50"),
        "the linked file",
    );
    fs::write(outside.join("linked.yaml"), policy(50, "v1")).unwrap();
    fs::write(d.policy("08.yaml"), policy(8, "v1")).unwrap();
    d.wait_for(
        || d.conf().contains("mirror.local/v1/p8") && d.conf().contains("mirror.local/v1/p50"),
        "the other change and the link's target to be applied together",
    );
    // Every applied state is what a fresh full apply of the same files gives.
    let fresh = tempfile::tempdir().unwrap();
    let conf = fresh.path().join("registries.conf");
    fs::write(&conf, BASE).unwrap();
    let out = Command::new(bin())
        .args(["mirrors", "render", "--base"])
        .arg(&conf)
        .arg("--policies")
        .arg(d.policy(""))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(d.conf(), String::from_utf8(out.stdout).unwrap());
}
