//! Entries sent straight to journald's native socket, for hook output: each line is logged under
//! the hook's own name (`SYSLOG_IDENTIFIER`, so `journalctl -t 10-drain-db` finds it) and, for a hook
//! run as a transient unit, attached to that unit (`OBJECT_SYSTEMD_UNIT`, which `journalctl -u`
//! matches for entries from uid 0). The daemon's own logs go through tracing-journald.

use std::os::unix::net::UnixDatagram;
use std::path::Path;

/// journald's native protocol socket.
const SOCKET: &str = "/run/systemd/journal/socket";

/// A connection to journald, when the daemon runs under it (`JOURNAL_STREAM` is set).
pub struct Journald {
    sock: UnixDatagram,
}

impl Journald {
    /// Connect when running under systemd's journal; `None` otherwise (logs go to stderr).
    pub fn connect() -> Option<Journald> {
        std::env::var_os("JOURNAL_STREAM")?;
        if !Path::new(SOCKET).exists() {
            return None;
        }
        let sock = UnixDatagram::unbound().ok()?;
        sock.connect(SOCKET).ok()?;
        Some(Journald { sock })
    }

    /// Send one entry. Field names must be upper case; values may hold any bytes (newlines are
    /// sent in the protocol's length-prefixed form). Errors are ignored: a full journal must not
    /// fail a hook.
    pub fn send(&self, fields: &[(&str, &str)]) {
        let mut buf = Vec::with_capacity(256);
        for (k, v) in fields {
            buf.extend_from_slice(k.as_bytes());
            if v.contains('\n') {
                buf.push(b'\n');
                buf.extend_from_slice(&(v.len() as u64).to_le_bytes());
                buf.extend_from_slice(v.as_bytes());
                buf.push(b'\n');
            } else {
                buf.push(b'=');
                buf.extend_from_slice(v.as_bytes());
                buf.push(b'\n');
            }
        }
        let _ = self.sock.send(&buf);
    }
}
