//! Hook executables: finding them (`hooks.d/<phase>.d/`, vendor and admin, same-name override,
//! lexical order, skip and refusal rules) and running one with the contract of docs/hooks.md —
//! clean environment, JSON context on stdin, output captured (bounded tail, forwarded line by line),
//! a timeout that ends the whole process tree.
//!
//! Two runners. Under systemd a hook is a transient service (`StartTransientUnit`): it runs outside
//! the daemon's sandbox, in its own cgroup, so a timeout or the end of the hook stops every process
//! it started, even ones that double-forked or called `setsid`; `RuntimeMaxUSec` enforces the
//! timeout even if the daemon dies. Without systemd (demo, tests under `--root`) a hook is a child
//! in a new process group, killed as a group; a descendant that leaves the group (`setsid`) escapes
//! it — the documented limit of that runner.

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use zbus_systemd::systemd1::{ManagerProxy, ServiceProxy, UnitProxy};

use crate::core::phases::{Phase, RunnerHandle, OUTPUT_TAIL_BYTES};

/// Suffixes of files that are never run (editor backups, rpm leftovers, switched-off hooks).
pub const SKIPPED_SUFFIXES: [&str; 4] = ["~", ".rpmnew", ".rpmsave", ".disabled"];

/// Output forwarded to the journal and the client per hook; the rest is counted, and its tail kept.
pub const FORWARD_BUDGET: u64 = 1024 * 1024;

/// Longest output line forwarded (longer ones are cut, with a marker).
const LINE_MAX: usize = 4096;

/// How long a hook has to exit after SIGTERM before SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// How long to wait for the output pipe to close once the hook is gone.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// Hook adapter errors.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// A hook directory could not be read.
    #[error("{path}: {source}")]
    Dir {
        /// The directory.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// What discovery found for one file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Runs, in this order.
    Run {
        /// File name (`RNA_HOOK`).
        name: String,
        /// Full path.
        path: PathBuf,
    },
    /// Not run, and that is fine (not executable, a backup suffix, masked, …).
    Skip {
        /// File name.
        name: String,
        /// Full path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Must not be run, and fails the phase (unsafe owner or mode).
    Refuse {
        /// File name.
        name: String,
        /// Full path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The directory of `phase` under a hooks root (`…/hooks.d/pre-upgrade.d`).
pub fn phase_dir(root: &Path, phase: Phase) -> PathBuf {
    root.join(format!("{}.d", phase.name()))
}

fn list(dir: &Path, into: &mut BTreeMap<String, PathBuf>) -> Result<(), HookError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(HookError::Dir {
                path: dir.display().to_string(),
                source,
            })
        }
    };
    for e in entries {
        let e = e.map_err(|source| HookError::Dir {
            path: dir.display().to_string(),
            source,
        })?;
        if let Ok(name) = e.file_name().into_string() {
            into.insert(name, e.path());
        }
    }
    Ok(())
}

/// The hooks of `phase`: vendor directory, then the admin directory (a file of the same name
/// replaces the vendor one; a symlink to /dev/null masks it), in byte-wise lexical order of name.
/// `own_uid` is the daemon's uid, allowed to own hooks besides root.
pub fn discover(
    phase: Phase,
    vendor_root: &Path,
    admin_root: &Path,
    own_uid: u32,
) -> Result<Vec<Found>, HookError> {
    let mut files = BTreeMap::new();
    list(&phase_dir(vendor_root, phase), &mut files)?;
    list(&phase_dir(admin_root, phase), &mut files)?;
    Ok(files
        .into_iter()
        .map(|(name, path)| classify(name, path, own_uid))
        .collect())
}

/// Why a hook owned by `file_uid` must not run, or `None` when its owner may: root, or the uid
/// the daemon runs as (`own_uid`, a daemon not running as root can only run its own files). Anyone
/// else could change what the daemon runs as root. Apart from [`classify`] so both branches can be
/// tested whatever uid the tests run as.
pub fn owner_refusal(file_uid: u32, own_uid: u32) -> Option<String> {
    if file_uid == 0 || file_uid == own_uid {
        return None;
    }
    Some(format!(
        "owned by uid {file_uid}, not root{}",
        if own_uid != 0 {
            format!(" or the daemon's uid {own_uid}")
        } else {
            String::new()
        }
    ))
}

/// Why a hook with permission bits `mode` must not run, or `None`: a file writable by group or
/// others can be changed by users other than its owner.
pub fn mode_refusal(mode: u32) -> Option<String> {
    (mode & 0o022 != 0).then(|| format!("writable by group or others (mode {:04o})", mode & 0o7777))
}

fn classify(name: String, path: PathBuf, own_uid: u32) -> Found {
    let skip = |reason: &str| Found::Skip {
        name: name.clone(),
        path: path.clone(),
        reason: reason.to_string(),
    };
    if name.starts_with('.') {
        return skip("hidden file");
    }
    if let Some(s) = SKIPPED_SUFFIXES.iter().find(|s| name.ends_with(**s)) {
        return skip(&format!("name ends in {s}"));
    }
    if std::fs::read_link(&path).is_ok_and(|t| t == Path::new("/dev/null")) {
        return skip("masked (symlink to /dev/null)");
    }
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) => return skip(&format!("cannot be read: {e}")),
    };
    if !meta.is_file() {
        return skip("not a regular file");
    }
    if let Some(reason) = owner_refusal(meta.uid(), own_uid) {
        return Found::Refuse { name, path, reason };
    }
    let mode = meta.permissions().mode();
    if let Some(reason) = mode_refusal(mode) {
        return Found::Refuse { name, path, reason };
    }
    if mode & 0o111 == 0 {
        return skip("not executable");
    }
    Found::Run { name, path }
}

/// Everything needed to run one hook.
#[derive(Debug, Clone)]
pub struct HookSpec {
    /// File name (`RNA_HOOK`, journal identifier).
    pub name: String,
    /// The executable.
    pub path: PathBuf,
    /// The complete environment.
    pub env: Vec<(String, String)>,
    /// The JSON context written to stdin.
    pub stdin: Vec<u8>,
    /// Timeout.
    pub timeout: Duration,
    /// Name of the transient unit (systemd runner).
    pub unit: String,
}

/// Something a running hook did, for progress output and the journal.
#[derive(Debug, Clone)]
pub enum HookEvent {
    /// The hook started; how to find it again after a daemon restart.
    Started(RunnerHandle),
    /// One line of output (stdout and stderr, interleaved as written).
    Line(String),
    /// The forwarding budget is used up; the rest is only counted (and its tail kept).
    Suppressed,
}

/// How a hook ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookOutcome {
    /// Exit status, when it exited.
    pub exit_code: Option<i32>,
    /// The signal that ended it.
    pub signal: Option<i32>,
    /// It hit its timeout.
    pub timed_out: bool,
    /// It could not be started or watched.
    pub error: Option<String>,
    /// Total output bytes.
    pub output_bytes: u64,
    /// The last [`OUTPUT_TAIL_BYTES`] of output.
    pub tail: String,
    /// How long it ran.
    pub elapsed: Duration,
}

impl HookOutcome {
    /// Exit 0 within its time.
    pub fn ok(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out && self.error.is_none()
    }

    /// One line for people: `exit 0 in 1.2 s`, `timed out after 10m, killed`, ….
    pub fn describe(&self, timeout: Duration) -> String {
        let secs = format!("{:.1} s", self.elapsed.as_secs_f64());
        if let Some(e) = &self.error {
            return e.clone();
        }
        if self.timed_out {
            return format!(
                "timed out after {} s; the hook and every process it started were killed",
                timeout.as_secs()
            );
        }
        match (self.exit_code, self.signal) {
            (Some(c), _) => format!("exit {c} after {secs}"),
            (None, Some(s)) => format!(
                "killed by signal {s} ({}) after {secs}",
                Signal::try_from(s).map(|s| s.as_str()).unwrap_or("?")
            ),
            _ => format!("ended without a status after {secs}"),
        }
    }
}

/// The bounded record of a hook's output: a tail buffer and line splitting for forwarding.
struct Output<'a> {
    tail: VecDeque<u8>,
    line: Vec<u8>,
    total: u64,
    forwarded: u64,
    on_event: &'a mut (dyn FnMut(HookEvent) + Send),
}

impl<'a> Output<'a> {
    fn new(on_event: &'a mut (dyn FnMut(HookEvent) + Send)) -> Self {
        Output {
            tail: VecDeque::with_capacity(OUTPUT_TAIL_BYTES),
            line: Vec::new(),
            total: 0,
            forwarded: 0,
            on_event,
        }
    }

    fn push(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        let keep = data.len().min(OUTPUT_TAIL_BYTES);
        let over = (self.tail.len() + keep).saturating_sub(OUTPUT_TAIL_BYTES);
        self.tail.drain(..over);
        self.tail.extend(&data[data.len() - keep..]);
        if self.forwarded > FORWARD_BUDGET {
            return;
        }
        for &b in data {
            if b == b'\n' {
                self.flush_line();
                if self.forwarded > FORWARD_BUDGET {
                    (self.on_event)(HookEvent::Suppressed);
                    return;
                }
            } else if self.line.len() < LINE_MAX {
                self.line.push(b);
            } else if self.line.len() == LINE_MAX {
                self.line.extend_from_slice("…".as_bytes());
            }
        }
    }

    fn flush_line(&mut self) {
        let text = String::from_utf8_lossy(&self.line).into_owned();
        self.forwarded += text.len() as u64 + 1;
        self.line.clear();
        (self.on_event)(HookEvent::Line(text));
    }

    fn finish(mut self, outcome: &mut HookOutcome) {
        if !self.line.is_empty() && self.forwarded <= FORWARD_BUDGET {
            self.flush_line();
        }
        outcome.output_bytes = self.total;
        let (a, b) = self.tail.as_slices();
        let mut bytes = a.to_vec();
        bytes.extend_from_slice(b);
        // Start the tail on a character boundary.
        let mut s = String::from_utf8_lossy(&bytes).into_owned();
        if self.total as usize > OUTPUT_TAIL_BYTES {
            if let Some(i) = s.find('\n') {
                s.drain(..=i);
            }
        }
        outcome.tail = s;
    }
}

/// How hooks are run.
pub enum Runner {
    /// A child in its own process group (no systemd: demo, tests).
    ProcessGroup,
    /// A transient systemd service per hook.
    Systemd(zbus::Connection),
}

impl Runner {
    /// The runner's name in logs and status.
    pub fn name(&self) -> &'static str {
        match self {
            Runner::ProcessGroup => "process-group",
            Runner::Systemd(_) => "systemd",
        }
    }
}

/// Run one hook to its end. Never fails: problems are in the outcome.
pub async fn run(
    runner: &Runner,
    spec: &HookSpec,
    on_event: &mut (dyn FnMut(HookEvent) + Send),
) -> HookOutcome {
    let started = Instant::now();
    let mut outcome = match runner {
        Runner::ProcessGroup => run_process_group(spec, on_event).await,
        Runner::Systemd(conn) => run_transient(conn, spec, on_event).await,
    };
    outcome.elapsed = started.elapsed();
    outcome
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)
}

/// Start time (clock ticks since boot) of a process: field 22 of /proc/PID/stat.
pub fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

async fn run_process_group(
    spec: &HookSpec,
    on_event: &mut (dyn FnMut(HookEvent) + Send),
) -> HookOutcome {
    let mut outcome = HookOutcome::default();
    let (rd, wr) = match pipe() {
        Ok(p) => p,
        Err(e) => {
            outcome.error = Some(format!("cannot create a pipe: {e}"));
            return outcome;
        }
    };
    let wr2 = match wr.try_clone() {
        Ok(w) => w,
        Err(e) => {
            outcome.error = Some(format!("cannot create a pipe: {e}"));
            return outcome;
        }
    };
    let mut cmd = tokio::process::Command::new(&spec.path);
    cmd.env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir("/")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::from(wr))
        .stderr(std::process::Stdio::from(wr2))
        .process_group(0);
    // SAFETY: prctl is async-signal-safe; between fork and exec only it runs. If the daemon dies
    // (kill -9), the hook's leader is killed with it; the rest of its group is stopped by the next
    // daemon from the journal's runner handle.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let spawned = cmd.spawn();
    // Close our copies of the write end now, or the pipe never reaches EOF.
    drop(cmd);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            outcome.error = Some(format!("{}: cannot start: {e}", spec.path.display()));
            return outcome;
        }
    };
    let Some(pid) = child.id().map(|p| p as i32) else {
        outcome.error = Some("the hook exited before it could be watched".into());
        return outcome;
    };
    on_event(HookEvent::Started(RunnerHandle {
        unit: None,
        pgid: Some(pid),
        start_ticks: start_ticks(pid),
    }));
    if let Some(mut stdin) = child.stdin.take() {
        let data = spec.stdin.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            // A hook that does not read its stdin is fine: errors (EPIPE) are ignored.
            let _ = stdin.write_all(&data).await;
        });
    }
    let group = Pid::from_raw(pid);
    let mut reader = match tokio::net::unix::pipe::Receiver::from_owned_fd(rd) {
        Ok(r) => r,
        Err(e) => {
            let _ = killpg(group, Signal::SIGKILL);
            let _ = child.wait().await;
            outcome.error = Some(format!("cannot read the hook's output: {e}"));
            return outcome;
        }
    };
    let mut out = Output::new(on_event);
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = tokio::time::sleep(spec.timeout);
    tokio::pin!(deadline);
    let kill_at = tokio::time::sleep(Duration::MAX / 4);
    tokio::pin!(kill_at);
    let drain_until = tokio::time::sleep(Duration::MAX / 4);
    tokio::pin!(drain_until);
    let mut status = None;
    let mut eof = false;
    loop {
        if status.is_some() && eof {
            break;
        }
        tokio::select! {
            n = reader.read(&mut buf), if !eof => match n {
                Ok(0) | Err(_) => eof = true,
                Ok(n) => out.push(&buf[..n]),
            },
            st = child.wait(), if status.is_none() => {
                status = Some(st);
                // Whatever the hook left running in its group ends with it.
                let _ = killpg(group, Signal::SIGKILL);
                drain_until.as_mut().reset(tokio::time::Instant::now() + DRAIN_LIMIT);
            },
            _ = &mut deadline, if status.is_none() && !outcome.timed_out => {
                outcome.timed_out = true;
                let _ = killpg(group, Signal::SIGTERM);
                kill_at.as_mut().reset(tokio::time::Instant::now() + KILL_GRACE);
            },
            _ = &mut kill_at, if status.is_none() => {
                let _ = killpg(group, Signal::SIGKILL);
                kill_at.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(3600));
            },
            // A process that left the group may still hold the pipe open: stop waiting for it.
            _ = &mut drain_until, if status.is_some() => break,
        }
    }
    out.finish(&mut outcome);
    match status {
        Some(Ok(st)) => {
            outcome.exit_code = st.code();
            outcome.signal = st.signal();
        }
        Some(Err(e)) => outcome.error = Some(format!("waiting for the hook failed: {e}")),
        None => {}
    }
    outcome
}

/// A unit name for a hook: `rna-hook-<phase>-<name>-<nonce>.service`, characters outside
/// `[A-Za-z0-9_.-]` replaced by `_`.
pub fn unit_name(phase: Phase, hook: &str, nonce: &str) -> String {
    let clean: String = hook
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("rna-hook-{}-{clean}-{nonce}.service", phase.name())
}

fn variant<'a>(v: impl Into<zbus::Variant<'a>>) -> Result<zbus::OwnedVariant, String> {
    zbus::OwnedVariant::try_from(v.into()).map_err(|e| e.to_string())
}

fn transient_properties(
    spec: &HookSpec,
    stdin: OwnedFd,
    out: &OwnedFd,
) -> Result<Vec<(String, zbus::OwnedVariant)>, String> {
    let path = spec.path.display().to_string();
    let env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let fd = |f: OwnedFd| variant(zbus::Fd::from(f));
    let dup = |f: &OwnedFd| f.try_clone().map_err(|e| e.to_string());
    Ok(vec![
        (
            "Description".into(),
            variant(format!("rhel-node-agent hook {}", spec.name))?,
        ),
        (
            "ExecStart".into(),
            variant(vec![(path.clone(), vec![path], false)])?,
        ),
        ("Type".into(), variant("simple".to_string())?),
        // Keep the unit after the hook exits, so its result can be read; stopping it then ends
        // whatever the hook left behind in its cgroup.
        ("RemainAfterExit".into(), variant(true)?),
        (
            "RuntimeMaxUSec".into(),
            variant(spec.timeout.as_micros() as u64)?,
        ),
        (
            "TimeoutStopUSec".into(),
            variant(KILL_GRACE.as_micros() as u64)?,
        ),
        ("KillMode".into(), variant("control-group".to_string())?),
        ("SendSIGKILL".into(), variant(true)?),
        ("Environment".into(), variant(env)?),
        ("WorkingDirectory".into(), variant("/".to_string())?),
        ("SyslogIdentifier".into(), variant(spec.name.clone())?),
        ("StandardInputFileDescriptor".into(), fd(stdin)?),
        ("StandardOutputFileDescriptor".into(), fd(dup(out)?)?),
        ("StandardErrorFileDescriptor".into(), fd(dup(out)?)?),
    ])
}

async fn run_transient(
    conn: &zbus::Connection,
    spec: &HookSpec,
    on_event: &mut (dyn FnMut(HookEvent) + Send),
) -> HookOutcome {
    let mut outcome = HookOutcome::default();
    let unit = spec.unit.clone();
    let fail = |outcome: &mut HookOutcome, what: &str, e: &dyn std::fmt::Display| {
        outcome.error = Some(format!("{unit}: {what}: {e}"));
    };
    let (pipes, stdin_rd) = match (pipe(), pipe()) {
        (Ok(o), Ok((in_rd, in_wr))) => {
            // The context is small (well under a pipe's 64 KiB): write it before the start.
            let mut w = std::fs::File::from(in_wr);
            let _ = std::io::Write::write_all(&mut w, &spec.stdin);
            drop(w);
            (o, in_rd)
        }
        (Err(e), _) | (_, Err(e)) => {
            fail(&mut outcome, "pipe", &e);
            return outcome;
        }
    };
    let (rd, wr) = pipes;
    let props = match transient_properties(spec, stdin_rd, &wr) {
        Ok(p) => p,
        Err(e) => {
            fail(&mut outcome, "properties", &e);
            return outcome;
        }
    };
    let manager = match ManagerProxy::new(conn).await {
        Ok(m) => m,
        Err(e) => {
            fail(&mut outcome, "Manager proxy", &e);
            return outcome;
        }
    };
    // Wait for the start job before looking at the unit's state: until it has run, the unit
    // reads as "inactive", which would look like a hook that already ended.
    let started = async {
        crate::adapters::systemd::subscribe(&manager).await?;
        let mut removed = manager.receive_job_removed().await?;
        let job = manager
            .start_transient_unit(unit.clone(), "fail".into(), props, vec![])
            .await?;
        while let Some(signal) = removed.next().await {
            if let Ok(args) = signal.args() {
                if args.job.as_str() == job.as_str() {
                    return Ok(args.result.to_string());
                }
            }
        }
        Ok::<_, zbus::Error>("unknown".to_string())
    };
    let started = tokio::time::timeout(Duration::from_secs(60), started).await;
    drop(wr);
    match started {
        Ok(Ok(r)) if r == "done" => {}
        Ok(Ok(r)) => {
            fail(&mut outcome, "start job", &r);
            stop_unit(conn, &unit).await;
            return outcome;
        }
        Ok(Err(e)) => {
            fail(&mut outcome, "StartTransientUnit", &e);
            return outcome;
        }
        Err(_) => {
            fail(&mut outcome, "start job", &"no result within 60 s");
            stop_unit(conn, &unit).await;
            return outcome;
        }
    }
    on_event(HookEvent::Started(RunnerHandle {
        unit: Some(unit.clone()),
        pgid: None,
        start_ticks: None,
    }));
    let mut reader = match tokio::net::unix::pipe::Receiver::from_owned_fd(rd) {
        Ok(r) => r,
        Err(e) => {
            fail(&mut outcome, "output pipe", &e);
            stop_unit(conn, &unit).await;
            return outcome;
        }
    };
    let mut out = Output::new(on_event);
    let mut buf = vec![0u8; 64 * 1024];
    // systemd enforces the timeout (RuntimeMaxUSec); this is the backstop if it did not.
    let backstop = tokio::time::sleep(spec.timeout + KILL_GRACE + Duration::from_secs(10));
    tokio::pin!(backstop);
    let mut poll = tokio::time::interval(Duration::from_millis(100));
    let mut finished = false;
    let mut eof = false;
    let drain_until = tokio::time::sleep(Duration::MAX / 4);
    tokio::pin!(drain_until);
    loop {
        if finished && eof {
            break;
        }
        tokio::select! {
            n = reader.read(&mut buf), if !eof => match n {
                Ok(0) | Err(_) => eof = true,
                Ok(n) => out.push(&buf[..n]),
            },
            _ = poll.tick(), if !finished => {
                match main_exited(conn, &unit).await {
                    Ok(true) => {
                        finished = true;
                        read_result(conn, &unit, &mut outcome).await;
                        stop_unit(conn, &unit).await;
                        drain_until.as_mut().reset(tokio::time::Instant::now() + DRAIN_LIMIT);
                    }
                    Ok(false) => {}
                    Err(e) => {
                        finished = true;
                        outcome.error = Some(format!("{unit}: lost track of the unit: {e}"));
                        stop_unit(conn, &unit).await;
                        drain_until.as_mut().reset(tokio::time::Instant::now() + DRAIN_LIMIT);
                    }
                }
            },
            _ = &mut backstop, if !finished => {
                finished = true;
                outcome.timed_out = true;
                stop_unit(conn, &unit).await;
                drain_until.as_mut().reset(tokio::time::Instant::now() + DRAIN_LIMIT);
            },
            _ = &mut drain_until, if finished => break,
        }
    }
    out.finish(&mut outcome);
    outcome
}

/// True once the unit's main process has exited (`exited` with RemainAfterExit, or failed).
async fn main_exited(conn: &zbus::Connection, unit: &str) -> zbus::Result<bool> {
    let manager = ManagerProxy::new(conn).await?;
    let path = manager.get_unit(unit.to_string()).await?;
    let u = UnitProxy::new(conn, path).await?;
    let active = u.active_state().await?;
    let sub = u.sub_state().await?;
    Ok(active == "failed" || active == "inactive" || sub == "exited")
}

async fn read_result(conn: &zbus::Connection, unit: &str, outcome: &mut HookOutcome) {
    let read = async {
        let manager = ManagerProxy::new(conn).await?;
        let path = manager.get_unit(unit.to_string()).await?;
        let s = ServiceProxy::new(conn, path).await?;
        Ok::<_, zbus::Error>((
            s.exec_main_code().await?,
            s.exec_main_status().await?,
            s.result().await?,
        ))
    };
    match read.await {
        Ok((code, status, result)) => {
            // CLD_EXITED = 1; CLD_KILLED = 2, CLD_DUMPED = 3.
            if code == 1 {
                outcome.exit_code = Some(status);
            } else if code == 2 || code == 3 {
                outcome.signal = Some(status);
            }
            if result == "timeout" {
                outcome.timed_out = true;
            }
        }
        Err(e) => outcome.error = Some(format!("{unit}: cannot read the result: {e}")),
    }
}

/// Stop a hook's transient unit (ending every process in its cgroup) and forget it.
pub async fn stop_unit(conn: &zbus::Connection, unit: &str) {
    if let Err(e) = crate::adapters::systemd::stop_unit(conn, unit, KILL_GRACE * 3).await {
        tracing::warn!(rna_component = "hooks", unit, error = %e, "cannot stop the hook's unit");
    }
    if let Ok(manager) = ManagerProxy::new(conn).await {
        // Only a failed unit stays loaded after the stop; a missing one is fine.
        let _ = manager.reset_failed_unit(unit.to_string()).await;
    }
}

/// After a daemon restart: stop what is left of a hook the journal says was running. A process
/// group handle must come from the current boot (pids start over at a reboot):
/// [`crate::core::phases::PhaseJournal::recover`] hands out only those.
pub async fn stop_leftover(handle: &RunnerHandle, conn: Option<&zbus::Connection>) -> String {
    if let (Some(unit), Some(conn)) = (&handle.unit, conn) {
        stop_unit(conn, unit).await;
        return format!("stopped {unit}");
    }
    if let Some(pgid) = handle.pgid {
        // Only if the group leader is the process we started (or gone): never a reused pid.
        let leader = start_ticks(pgid);
        if leader.is_some() && leader != handle.start_ticks {
            return format!("process group {pgid} now belongs to another process; left alone");
        }
        return match killpg(Pid::from_raw(pgid), Signal::SIGKILL) {
            Ok(()) => format!("killed what was left of process group {pgid}"),
            Err(_) => format!("process group {pgid} was already gone"),
        };
    }
    "nothing to stop".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_keeps_a_bounded_tail_and_stops_forwarding() {
        let mut lines = 0u64;
        let mut suppressed = 0;
        let mut cb = |e: HookEvent| match e {
            HookEvent::Line(_) => lines += 1,
            HookEvent::Suppressed => suppressed += 1,
            HookEvent::Started(_) => {}
        };
        let mut out = Output::new(&mut cb);
        let line = [b'x'; 99];
        for i in 0..50_000u32 {
            out.push(&line);
            out.push(format!("{i}\n").as_bytes());
        }
        let mut o = HookOutcome::default();
        out.finish(&mut o);
        assert!(o.tail.len() <= OUTPUT_TAIL_BYTES);
        assert!(o.tail.ends_with("49999\n"));
        assert!(o.tail.starts_with('x'));
        assert!(o.output_bytes > 5_000_000);
        assert_eq!(suppressed, 1);
        // ~105-byte lines: about FORWARD_BUDGET / 105 of them were forwarded, then nothing.
        assert!((9_900..10_100).contains(&lines), "{lines}");
    }

    #[test]
    fn owners_other_than_root_and_the_daemon_are_refused() {
        // Root's own files, and a daemon's own files, run.
        assert_eq!(owner_refusal(0, 0), None);
        assert_eq!(owner_refusal(0, 990), None);
        assert_eq!(owner_refusal(990, 990), None);
        // Anyone else's are refused, naming who may own hooks.
        assert_eq!(
            owner_refusal(1000, 0).as_deref(),
            Some("owned by uid 1000, not root")
        );
        assert_eq!(
            owner_refusal(1000, 990).as_deref(),
            Some("owned by uid 1000, not root or the daemon's uid 990")
        );
    }

    #[test]
    fn group_or_other_writable_modes_are_refused() {
        for ok in [0o755, 0o700, 0o555, 0o4755, 0o100755] {
            assert_eq!(mode_refusal(ok), None, "{ok:o}");
        }
        for (mode, shown) in [
            (0o775, "0775"),
            (0o757, "0757"),
            (0o703, "0703"),
            (0o100722, "0722"),
        ] {
            assert_eq!(
                mode_refusal(mode),
                Some(format!("writable by group or others (mode {shown})"))
            );
        }
    }

    /// The owner exception through a real file: a file owned by a non-root uid runs when the
    /// daemon runs as that uid, and is refused when the daemon is root or another uid.
    #[test]
    fn a_file_of_the_daemons_own_uid_runs_and_anyone_elses_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("10-x");
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let owner = if me == 0 {
            std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
            65534
        } else {
            me
        };
        let run = Found::Run {
            name: "10-x".into(),
            path: path.clone(),
        };
        assert_eq!(classify("10-x".into(), path.clone(), owner), run);
        let refused = |own: u32| match classify("10-x".into(), path.clone(), own) {
            Found::Refuse { reason, .. } => reason,
            other => panic!("not refused: {other:?}"),
        };
        assert_eq!(refused(0), format!("owned by uid {owner}, not root"));
        assert_eq!(
            refused(owner + 1),
            format!(
                "owned by uid {owner}, not root or the daemon's uid {}",
                owner + 1
            )
        );
        // The daemon's own file is still refused when others may write it.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o757)).unwrap();
        assert_eq!(
            refused(owner),
            "writable by group or others (mode 0757)".to_string()
        );
    }

    #[test]
    fn unit_names_are_valid() {
        assert_eq!(
            unit_name(Phase::PreUpgrade, "10-drain db@x", "1a"),
            "rna-hook-pre-upgrade-10-drain_db_x-1a.service"
        );
    }
}
