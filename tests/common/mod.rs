//! Shared test harness: the daemon under `--root` in a temp dir, with a real control socket.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_rhel-node-agent");

/// The binary under test: `RNA_AGENT_BIN` when set (the package stage runs tests against the
/// packaged release binaries, e.g. the RHEL 8 build with rustls), else the one cargo built.
pub fn bin() -> PathBuf {
    std::env::var_os("RNA_AGENT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(BIN))
}

/// The administrator's registries.conf every daemon test starts from.
pub const BASE: &str =
    "# admin\nunqualified-search-registries = [\"registry.access.redhat.com\"]\n";

/// A daemon under `--root` in a temp dir, killed on drop.
pub struct Daemon {
    pub child: Child,
    pub root: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Daemon {
    pub fn start(extra_config: &str) -> Daemon {
        Daemon::start_with(extra_config, None)
    }

    pub fn start_with(extra_config: &str, notify_socket: Option<&Path>) -> Daemon {
        Daemon::start_env(extra_config, notify_socket, &[])
    }

    pub fn start_env(
        extra_config: &str,
        notify_socket: Option<&Path>,
        env: &[(&str, &str)],
    ) -> Daemon {
        Daemon::start_prepared(extra_config, notify_socket, env, |_| {})
    }

    /// Start with `prepare` writing extra files into the root first.
    pub fn start_prepared(
        extra_config: &str,
        notify_socket: Option<&Path>,
        env: &[(&str, &str)],
        prepare: impl FnOnce(&Path),
    ) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        for d in [
            "etc/containers/registries.conf.d",
            "etc/rhel-node-agent/mirrors.d",
            "etc/rhel-node-agent/config.d",
        ] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::write(root.join("etc/containers/registries.conf"), BASE).unwrap();
        fs::write(
            root.join("etc/rhel-node-agent/config.d/50-test.toml"),
            extra_config,
        )
        .unwrap();
        prepare(&root);
        let child = spawn(&root, dir.path(), notify_socket, env);
        let d = Daemon { child, root, dir };
        d.wait_ready();
        d
    }

    /// Wait until the control socket answers and the first reconcile is done.
    pub fn wait_ready(&self) {
        self.wait_for(
            || self.root.join("run/rhel-node-agent/control.sock").exists(),
            "the control socket",
        );
        // The socket answers from the start ("pending"); wait for the first reconcile.
        self.wait_for(
            || self.status()["mirrors"]["state"] != "pending",
            "the first reconcile",
        );
    }

    /// Kill the daemon with SIGKILL (no clean-up at all) and start a new one on the same root.
    pub fn kill9_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_file(self.root.join("run/rhel-node-agent/control.sock"));
        self.child = spawn(&self.root, self.dir.path(), None, &[]);
        self.wait_ready();
    }

    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin())
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .output()
            .unwrap()
    }

    pub fn status(&self) -> serde_json::Value {
        let out = self.cli(&["status", "-o", "json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn conf(&self) -> String {
        fs::read_to_string(self.root.join("etc/containers/registries.conf")).unwrap()
    }

    pub fn policy(&self, name: &str) -> PathBuf {
        self.root.join("etc/rhel-node-agent/mirrors.d").join(name)
    }

    pub fn wait_for(&self, mut cond: impl FnMut() -> bool, what: &str) {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if cond() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let log =
            fs::read_to_string(self.root.parent().unwrap().join("daemon.log")).unwrap_or_default();
        let status = self.cli(&["status", "-o", "json"]);
        panic!(
            "timed out waiting for {what}\nstatus: {}\nlog:\n{log}",
            String::from_utf8_lossy(&status.stdout)
        );
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp-write");
    fs::write(&tmp, text).unwrap();
    fs::rename(&tmp, path).unwrap();
}

/// Start `rhel-node-agent --root ROOT daemon`, appending its log to `DIR/daemon.log`.
fn spawn(root: &Path, dir: &Path, notify_socket: Option<&Path>, env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(bin());
    if let Some(n) = notify_socket {
        cmd.env("NOTIFY_SOCKET", n);
    }
    cmd.envs(env.iter().copied());
    cmd.args(["--root"])
        .arg(root)
        .args(["daemon", "--debounce", "50ms", "-v"])
        .stdout(Stdio::null())
        .stderr(
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("daemon.log"))
                .unwrap(),
        )
        .spawn()
        .unwrap()
}
