//! systemd readiness protocol (`sd_notify(3)`), written here so that a send never blocks: the main
//! loop must not hang because the receiver is slow (a full datagram queue drops a `STATUS=` update
//! instead). Every call is a no-op outside systemd (`NOTIFY_SOCKET` unset), so the daemon runs the
//! same way in tests and the demo.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

fn notify_addr() -> Option<SocketAddr> {
    let raw = std::env::var_os("NOTIFY_SOCKET")?;
    let raw = raw.to_string_lossy();
    match raw.strip_prefix('@') {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name.as_bytes()).ok(),
        None => SocketAddr::from_pathname(raw.as_ref()).ok(),
    }
}

/// Send one notification message (`KEY=value` lines).
fn send(msg: &str) {
    let Some(addr) = notify_addr() else { return };
    let result = UnixDatagram::unbound().and_then(|s| {
        s.set_nonblocking(true)?;
        s.send_to_addr(msg.as_bytes(), &addr)
    });
    match result {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            tracing::debug!("sd_notify queue full; notification dropped")
        }
        Err(e) => tracing::warn!(error = %e, "sd_notify failed"),
    }
}

fn one_line(status: &str) -> String {
    status.replace('\n', " ")
}

/// `READY=1` with a status line.
pub fn ready(status: &str) {
    send(&format!("READY=1\nSTATUS={}", one_line(status)));
}

/// `STATUS=…`.
pub fn status(status: &str) {
    send(&format!("STATUS={}", one_line(status)));
}

/// `RELOADING=1` with `MONOTONIC_USEC=`, which systemd ≥ 253 requires.
pub fn reloading() {
    let usec = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
        .unwrap_or(0);
    send(&format!(
        "RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS=reloading the configuration"
    ));
}

/// `STOPPING=1`.
pub fn stopping() {
    send("STOPPING=1\nSTATUS=stopping");
}

/// `WATCHDOG=1`.
pub fn watchdog() {
    send("WATCHDOG=1");
}

/// The watchdog interval systemd asked for (`WATCHDOG_USEC`, for this process per `WATCHDOG_PID`).
pub fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}
